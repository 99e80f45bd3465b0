//! The lab cloud: 2 management servers and 3 KVM hosts at 4.18.0.0 start, and the API (through
//! the signed cs-api client) reports everything Up at that version within seconds; a host
//! CloudStack knows that the configuration misses is one pre-flight cannot reach. On the same
//! MariaDB: `plan --db` always gives the report for a database it can reach.

mod common;

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

/// `plan --db` always gives the report for a database it can reach: a target older than the
/// database, and a version table with rows but none `Complete`, are `db.version.sane` FAILs
/// with their remedy, not an error without findings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reports_a_version_table_without_a_complete_row_as_a_finding() {
    use mysql::prelude::Queryable;
    let (url, cloud, usage, db) = tokio::task::spawn_blocking(|| {
        let server = cs_lab::mariadb();
        let mut db = server.database("plan_no_complete").expect("database");
        let usage = db.extra("usage").expect("usage schema");
        cs_lab::seed(
            &server.root(),
            &cs_lab::SeedOptions::new("4.18.0.0".parse().unwrap(), db.name(), &usage),
        )
        .expect("seed");
        (server.cloud().expose(), db.name().to_string(), usage, db)
    })
    .await
    .expect("join");
    let plan = |args: &[&str]| {
        #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
        let out = std::process::Command::new(common::example("plan"))
            .args(args)
            .args([
                "--db",
                &url,
                "--cloud-schema",
                &cloud,
                "--usage-schema",
                &usage,
            ])
            .env_remove("RUST_LOG")
            .output()
            .expect("run plan");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let sane_fails = |j: &serde_json::Value, contains: &str| {
        let sane: Vec<&serde_json::Value> = j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["id"] == "db.version.sane" && f["severity"] == "fail")
            .collect();
        assert!(!sane.is_empty(), "{j:#}");
        assert!(sane.iter().all(|f| f["remedy"].is_string()), "{j:#}");
        assert!(
            sane.iter()
                .any(|f| f["message"].as_str().unwrap().contains(contains)),
            "{j:#}"
        );
    };

    // A target older than the database.
    let (code, stdout, stderr) = plan(&["--to", "4.17.0.0", "--json"]);
    assert_eq!(code, Some(2), "{stderr}{stdout}");
    assert!(
        stderr.is_empty(),
        "an error instead of the report: {stderr}"
    );
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    sane_fails(&j, "cannot downgrade");

    // Rows, none Complete.
    let mut conn = cs_lab::DbUrlExt::connect(&db.url()).expect("connect");
    conn.query_drop("UPDATE version SET step = 'Upgrade'")
        .expect("update");
    for json in [true, false] {
        let mut args = vec!["--to", "4.19.0.0"];
        if json {
            args.push("--json");
        }
        let (code, stdout, stderr) = plan(&args);
        assert_eq!(code, Some(2), "{stderr}{stdout}");
        assert!(
            stderr.is_empty(),
            "an error instead of the report: {stderr}"
        );
        assert!(!stdout.contains(&url));
        if !json {
            assert!(stdout.contains("db.version.sane"), "{stdout}");
            continue;
        }
        let j: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
        sane_fails(&j, "`Complete`");
        assert_eq!(j["steps"], serde_json::json!([]));
        assert_eq!(j["exit_code"], 2);
    }
}
