//! The lab cloud: 2 management servers and 3 KVM hosts at 4.18.0.0 start, and the API (through
//! the signed cs-api client) reports everything Up at that version within seconds; a host
//! CloudStack knows that the configuration misses is one pre-flight cannot reach.

use std::time::{Duration, Instant};

use cs_api::{Client, ClientConfig, Credentials, HealthExpectations, HealthReport, Phase};
use cs_core::error_chain;
use cs_lab::Lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_starts_with_everything_up() {
    // The shared MariaDB starts once per test binary; the lab's own start is what is timed.
    tokio::task::spawn_blocking(|| {
        cs_lab::mariadb();
    })
    .await
    .expect("join");
    let started = Instant::now();
    let lab = tokio::task::spawn_blocking(|| {
        Lab::builder()
            .name("lab_smoke")
            .unlisted_kvm_hosts(1)
            .start()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the lab took {took:?} to start"
    );

    let client = Client::new(
        &lab.api().endpoint(),
        Credentials::api_key(lab.api().api_key(), lab.api().secret_key().clone()),
        ClientConfig::default(),
    )
    .expect("client");
    let report = HealthReport::collect(&client).await.expect("health");
    assert_eq!(report.management_servers.len(), 2);
    assert_eq!(report.hosts.len(), 3);
    let expect = HealthExpectations {
        phase: Phase::Post,
        version: Some("4.18.0.0".parse().unwrap()),
    };
    let problems = report.problems(&expect);
    assert!(problems.is_empty(), "{problems:#?}");

    // The generated config parses and names every node.
    let path = lab
        .write_config(&"4.19.0.0".parse().unwrap())
        .expect("config");
    let (config, warnings) = cs_upgrade::UpgradeConfig::load(&path).expect("load config");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.management_servers.len(), 2);
    // kvm3 is CloudStack's, but the operator's config does not say how to reach it.
    assert_eq!(config.host_entries().len(), 2);
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains(lab.api().secret_key().expose())
    );

    // Pre-flight takes the hosts from CloudStack and tries kvm3 at the address CloudStack
    // lists for it, where nothing answers.
    let report = cs_upgrade::preflight(&config, cs_upgrade::Phase::Pre, &[]).await;
    let unreachable: Vec<&cs_core::Finding> = report
        .findings
        .iter()
        .filter(|f| f.id == cs_upgrade::NODE_REACHABLE && f.severity == cs_core::Severity::Fail)
        .collect();
    assert_eq!(unreachable.len(), 1, "{}", report.to_table());
    assert_eq!(unreachable[0].subject, "kvm3");
    assert!(
        unreachable[0]
            .message
            .contains("cannot be reached at 192.0."),
        "{}",
        unreachable[0].message
    );
}
