//! Lab KVM hosts over SSH: the agent package in both families and the node core's
//! `systemctl`.

use std::time::Duration;

use cs_core::{Cmd, Host, HostExt, Output, SshHost, error_chain};
use cs_lab::{KvmHost, KvmHostOptions, LabFamily};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpm_host_upgrades_the_agent_the_way_the_spec_does() {
    let host = host(LabFamily::Rpm);
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
    // The old package's %preun stops the agent; %posttrans restarts libvirtd.
    assert_eq!(host.service_state("cloudstack-agent"), "inactive");
    assert!(!host.hypervisor().is_up());
    let log = host.systemctl_log();
    assert!(
        log.contains(&"stop cloudstack-agent".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"restart libvirtd".to_string()), "{log:?}");
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
