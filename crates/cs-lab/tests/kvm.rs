//! Lab KVM hosts over SSH: the guests libvirt runs (`virsh`), which survive agent restarts and
//! upgrades unless [`KvmFault::StopsVms`] is on, the agent package in both families, and the
//! node core's `systemctl`.

use std::time::Duration;

use cs_core::{Cmd, Host, HostExt, Output, SshHost, error_chain};
use cs_lab::{KvmFault, KvmHost, KvmHostOptions, LabFamily};

fn host(family: LabFamily) -> KvmHost {
    let mut options = KvmHostOptions::new("kvm1", "c1");
    options.family = family;
    tokio::task::block_in_place(|| KvmHost::start(&options))
        .unwrap_or_else(|e| panic!("start lab host: {}", error_chain(&e)))
}

async fn connect(host: &KvmHost) -> SshHost {
    host.connect()
        .await
        .unwrap_or_else(|e| panic!("ssh to {}: {}", host.name(), error_chain(&e)))
}

async fn run(host: &SshHost, argv: &[&str]) -> Output {
    host.run(
        &Cmd::new(argv[0])
            .args(argv[1..].iter().copied())
            .timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap_or_else(|e| panic!("{argv:?}: {}", error_chain(&e)))
}

async fn run_ok(host: &SshHost, argv: &[&str]) -> String {
    let out = run(host, argv).await;
    assert!(out.success(), "{argv:?}: {}", out.stderr_lossy());
    out.stdout_lossy()
}

async fn point_apt_at(ssh: &SshHost, host: &KvmHost, line: &str) {
    let list = host.root().join("etc/apt/sources.list.d/cloudstack.list");
    let text = format!("# CloudStack\ndeb https://download.cloudstack.org/ubuntu jammy {line}\n");
    ssh.write_atomic(&list, text.as_bytes(), None)
        .await
        .expect("rewrite cloudstack.list");
    run_ok(ssh, &["apt-get", "-q", "update"]).await;
}

const UPGRADE: &[&str] = &[
    "apt-get",
    "install",
    "-y",
    "cloudstack-common=4.19.1.0",
    "cloudstack-agent=4.19.1.0",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_survive_an_agent_restart_and_an_upgrade() {
    let host = host(LabFamily::Deb);
    for d in ["r-5-VM", "i-2-7-VM"] {
        host.start_domain(d).expect("start domain");
    }
    host.start_domain("i-2-7-VM")
        .expect("starting twice is no error");
    assert_eq!(host.domains(), ["i-2-7-VM", "r-5-VM"]);
    let ssh = connect(&host).await;
    assert_eq!(
        run_ok(&ssh, &["virsh", "list", "--name"]).await,
        "i-2-7-VM\nr-5-VM\n\n"
    );
    let table = run_ok(&ssh, &["virsh", "list", "--all"]).await;
    assert!(table.starts_with(" Id   Name"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["2", "i-2-7-VM", "running"]),
        "{table}"
    );
    assert_eq!(
        run_ok(&ssh, &["virsh", "domstate", "r-5-VM"]).await.trim(),
        "running"
    );

    run_ok(&ssh, &["systemctl", "restart", "cloudstack-agent"]).await;
    assert!(host.hypervisor().is_up());
    assert_eq!(host.domains(), ["i-2-7-VM", "r-5-VM"]);

    point_apt_at(&ssh, &host, "4.19").await;
    run_ok(&ssh, UPGRADE).await;
    assert_eq!(
        host.installed("cloudstack-agent").as_deref(),
        Some("4.19.1.0")
    );
    run_ok(&ssh, &["systemctl", "restart", "cloudstack-agent"]).await;
    assert_eq!(
        host.hypervisor().version.map(|v| v.to_string()).as_deref(),
        Some("4.19.1.0")
    );
    assert_eq!(host.domains(), ["i-2-7-VM", "r-5-VM"]);

    // Without libvirtd, virsh reaches nothing; the guests keep running all the same.
    run_ok(&ssh, &["systemctl", "stop", "libvirtd"]).await;
    let out = run(&ssh, &["virsh", "list", "--name"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("failed to connect to the hypervisor")
    );
    run_ok(&ssh, &["systemctl", "start", "libvirtd"]).await;
    assert_eq!(host.domains(), ["i-2-7-VM", "r-5-VM"]);

    host.destroy_domain("r-5-VM").expect("destroy");
    host.destroy_domain("r-5-VM")
        .expect("destroying twice is no error");
    let out = run(&ssh, &["virsh", "domstate", "r-5-VM"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr_lossy().contains("failed to get domain 'r-5-VM'"));
    assert_eq!(
        run_ok(&ssh, &["virsh", "list", "--name"]).await,
        "i-2-7-VM\n\n"
    );
    assert!(host.start_domain("../escape").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_stops_vms_takes_the_guests_down() {
    let host = host(LabFamily::Deb);
    host.inject(KvmFault::StopsVms).expect("inject");
    for d in ["i-2-7-VM", "i-3-8-VM"] {
        host.start_domain(d).expect("start domain");
    }
    let ssh = connect(&host).await;
    // A restart alone leaves them be.
    run_ok(&ssh, &["systemctl", "restart", "cloudstack-agent"]).await;
    assert_eq!(host.domains().len(), 2);
    point_apt_at(&ssh, &host, "4.19").await;
    run_ok(&ssh, UPGRADE).await;
    assert!(host.domains().is_empty(), "{:?}", host.domains());
    assert_eq!(run_ok(&ssh, &["virsh", "list", "--name"]).await, "\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpm_host_upgrades_the_agent_the_way_the_spec_does() {
    let host = host(LabFamily::Rpm);
    host.start_domain("i-2-7-VM").expect("start domain");
    let ssh = connect(&host).await;
    let out = run(&ssh, &["dpkg-query", "--version"]).await;
    assert_eq!(out.code, 127, "{out:?}");
    assert_eq!(
        run_ok(
            &ssh,
            &[
                "rpm",
                "-q",
                "--qf",
                "%{NAME} %{VERSION}-%{RELEASE}\\n",
                "cloudstack-agent"
            ]
        )
        .await,
        "cloudstack-agent 4.18.0.0-1\n"
    );
    assert_eq!(
        host.installed("cloudstack-agent").as_deref(),
        Some("4.18.0.0-1")
    );

    // dnf keeps its metadata per baseurl: pointing the repo file at 4.19 is enough.
    let repo = host.root().join("etc/yum.repos.d/cloudstack.repo");
    let text = ssh.read_to_string(&repo).await.expect("read repo");
    let text = text.replace("/4.18/", "/4.19/");
    ssh.write_atomic(&repo, text.as_bytes(), None)
        .await
        .expect("rewrite repo");
    let offered = run_ok(
        &ssh,
        &[
            "dnf",
            "-q",
            "repoquery",
            "--qf",
            "%{version}-%{release}\\n",
            "cloudstack-agent",
        ],
    )
    .await;
    assert_eq!(offered, "4.19.0.0-1\n4.19.1.0-1\n");

    run_ok(
        &ssh,
        &["dnf", "-q", "versionlock", "add", "cloudstack-agent"],
    )
    .await;
    let install = [
        "dnf",
        "-y",
        "install",
        "cloudstack-common-4.19.1.0-1",
        "cloudstack-agent-4.19.1.0-1",
    ];
    let out = run(&ssh, &install).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("filtered out by exclude filtering"),
        "{out:?}"
    );
    run_ok(
        &ssh,
        &["dnf", "-q", "versionlock", "delete", "cloudstack-agent"],
    )
    .await;
    run_ok(&ssh, &install).await;
    assert_eq!(
        host.installed("cloudstack-agent").as_deref(),
        Some("4.19.1.0-1")
    );
    // The old package's %preun stops the agent; %posttrans restarts libvirtd, whose guests
    // keep running.
    assert_eq!(host.service_state("cloudstack-agent"), "inactive");
    assert!(!host.hypervisor().is_up());
    let log = host.systemctl_log();
    assert!(
        log.contains(&"stop cloudstack-agent".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"restart libvirtd".to_string()), "{log:?}");
    assert_eq!(host.domains(), ["i-2-7-VM"]);
    run_ok(&ssh, &["systemctl", "start", "cloudstack-agent"]).await;
    assert!(host.hypervisor().is_up());

    // A unit no package installed does not exist.
    let out = run(&ssh, &["systemctl", "stop", "cloudstack-usage"]).await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("Unit cloudstack-usage.service not loaded."),
        "{out:?}"
    );
}
