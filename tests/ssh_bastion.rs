//! The orchestrator's `[ssh]` as operators have it (issue 21): every node of a lab reached
//! through a bastion that only forwards, with a passphrase-protected key whose passphrase is
//! in a secret file; a dead bastion fails the connection in bounded time, naming it.

use std::time::{Duration, Instant};

use cs_core::{Cmd, CsVersion, HostExt, error_chain};
use cs_lab::Lab;
use cs_upgrade::UpgradeConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_reached_through_the_bastion_with_a_locked_key() {
    let lab = tokio::task::spawn_blocking(|| {
        Lab::builder()
            .name("bastion")
            .management_servers(1)
            .kvm_hosts(1)
            .start()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let target: CsVersion = "4.19.0.0".parse().expect("version");
    let path = lab.write_config(&target).expect("config");
    let access = lab
        .bastion_access(&path)
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let (config, _) = UpgradeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.ssh.identity.as_deref(), Some(access.key.as_path()));
    assert!(config.ssh.proxy_jump.is_some());

    let sources = cs_upgrade::log_sources(&config)
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    // The management server's log, its usage log (no usage servers listed), the KVM host's.
    assert_eq!(sources.len(), 3);
    for s in &sources {
        let out = s
            .host
            .run_ok(&Cmd::new("sh").arg("-c").arg("echo ok"))
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        assert_eq!(out.stdout_lossy().trim(), "ok");
    }
    let log = std::fs::read_to_string(access.bastion.log()).expect("bastion log");
    let mut ports: Vec<u16> = lab
        .management_servers()
        .iter()
        .map(|m| m.ssh().port())
        .collect();
    ports.extend(
        lab.kvm_hosts()
            .iter()
            .filter_map(|h| h.ssh())
            .map(|s| s.port()),
    );
    for port in ports {
        assert!(
            log.contains(&format!("target 127.0.0.1 port {port}")),
            "no forward to {port} in the bastion's log"
        );
    }

    // The bastion stops answering: connecting fails within the connect timeout, naming it.
    let mut quick = config.clone();
    quick.ssh.connect_timeout = Duration::from_secs(2);
    access.bastion.freeze().expect("freeze");
    let started = Instant::now();
    let err = cs_upgrade::log_sources(&quick)
        .await
        .expect_err("frozen bastion");
    let took = started.elapsed();
    access.bastion.thaw().expect("thaw");
    let text = error_chain(&err);
    assert!(
        text.contains(&format!("bastion root@127.0.0.1:{}", access.bastion.port())),
        "{text}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}: {text}");
}
