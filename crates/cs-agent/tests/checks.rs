//! The KVM host checks against lab hosts, plus the package commands as an operator would type
//! them (on a fake host).

use cs_agent::checks::{self, AgentReach, JarsConsistent, Mtu, PropertiesIntact, VersionMatch};
use cs_agent::{Node, packages};
use cs_core::fake::{self, FakeHost};
use cs_core::{Check, CsVersion, Severity, run_checks};
use cs_lab::{KvmHost, KvmHostOptions};

fn lab(name: &str, mtu: u32) -> (KvmHost, Node) {
    let mut o = KvmHostOptions::new(name, "c1");
    o.ssh = false;
    o.mtu = mtu;
    let h = KvmHost::start(&o).expect("lab host (keytool from default-jre-headless)");
    let n = Node::new(h.local_host())
        .rerooted(h.root())
        .in_cluster("c1")
        .with_key(name);
    (h, n)
}

#[tokio::test]
async fn a_healthy_lab_host_passes_the_host_checks() {
    let (_h, node) = lab("kvm1", 1500);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reach = AgentReach {
        port: Some(port),
        ..AgentReach::default()
    };
    let intact = PropertiesIntact {
        before: node.properties().await.unwrap(),
    };
    let version = VersionMatch {
        expected: CsVersion::parse("4.18.0.0").unwrap(),
        post: true,
        status: Some(_h.status()),
    };
    let mut list = checks::host_checks();
    list.retain(|c| !matches!(c.id(), "net.agent.reach" | "agent.cacerts"));
    let mut refs: Vec<&dyn Check<Node>> = list.iter().map(|c| c.as_ref()).collect();
    refs.push(&reach);
    refs.push(&intact);
    refs.push(&version);
    let report = run_checks(&refs, &node, &[]).await;
    assert!(report.broken.is_empty(), "{report}");
    assert!(report.worst() <= Severity::Info, "{report}");
    assert!(report.to_table().contains("127.0.0.1"), "{report}");
}

#[tokio::test]
async fn failures_are_reported_per_check() {
    let (h, node) = lab("kvm1", 1500);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let reach = AgentReach {
        port: Some(closed),
        attempts: 2,
        ..AgentReach::default()
    };
    let f = reach.run(&node).await.unwrap();
    assert_eq!(f[0].severity, Severity::Fail, "{f:?}");
    let version = VersionMatch {
        expected: CsVersion::parse("4.19.1.0").unwrap(),
        post: true,
        status: None,
    };
    let f = version.run(&node).await.unwrap();
    assert_eq!(f[0].severity, Severity::Fail);
    assert!(
        f[0].message.contains("cloudstack-agent is 4.18.0.0"),
        "{f:?}"
    );
    let lib = h.root().join("usr/share/cloudstack-agent/lib");
    std::fs::write(lib.join("cloud-agent-4.17.0.0.jar"), "").unwrap();
    let f = JarsConsistent.run(&node).await.unwrap();
    assert_eq!(f[0].severity, Severity::Fail);
    assert!(f[0].message.contains("4.17.0.0, 4.18.0.0"), "{f:?}");
}

#[tokio::test]
async fn mtu_must_match_across_a_cluster() {
    let (_a, n1) = lab("kvm1", 1500);
    let (_b, n2) = lab("kvm2", 9000);
    let f = Mtu.run(&[n1, n2]).await.unwrap();
    let warn: Vec<_> = f.iter().filter(|f| f.severity == Severity::Warn).collect();
    assert_eq!(warn.len(), 2, "{f:?}");
    assert!(
        warn[0].message.contains("1500 on kvm1; 9000 on kvm2"),
        "{f:?}"
    );
}

#[tokio::test]
async fn package_commands_read_like_an_operator_typed_them() {
    let host = FakeHost::new("kvm1")
        .on("dpkg-query", |_, _| {
            fake::ok("cloudstack-common\t4.18.0.0\tii \tinstall ok installed\ncloudstack-agent\t4.18.0.0\thi \thold ok installed\n")
        })
        .on("apt-get", |_, _| fake::ok(""))
        .on("apt-mark", |_, _| fake::ok(""))
        .on("apt-cache", |_, _| fake::ok(" cloudstack-agent | 4.19.1.0 | http://x jammy/4.19 amd64 Packages\n"));
    let fam = packages::detect_family(&host).await.unwrap();
    let st = packages::installed(&host, fam, packages::AGENT_PACKAGES)
        .await
        .unwrap();
    assert!(st[1].held && !st[0].held);
    let offered = packages::available(&host, fam, "cloudstack-agent")
        .await
        .unwrap();
    assert_eq!(offered, ["4.19.1.0"]);
    packages::unhold(&host, fam, packages::AGENT_PACKAGES)
        .await
        .unwrap();
    packages::install_exact(&host, fam, packages::AGENT_PACKAGES, "4.19.1.0")
        .await
        .unwrap();
    packages::hold(&host, fam, packages::AGENT_PACKAGES)
        .await
        .unwrap();
    assert_eq!(
        host.commands()[3..],
        [
            "apt-mark unhold cloudstack-common cloudstack-agent",
            "apt-get -q -y --allow-downgrades --allow-change-held-packages -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef install cloudstack-common=4.19.1.0 cloudstack-agent=4.19.1.0",
            "apt-mark hold cloudstack-common cloudstack-agent",
        ]
    );
}
