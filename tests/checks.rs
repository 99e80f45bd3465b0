//! The checks pre-flight runs besides the ones the other end-to-end tests lean on, each through
//! its failing path, on one lab cloud (2 management servers, 3 KVM hosts at 4.18.0.0, target
//! 4.19.0.0): `cluster.same.version`, `ms.deps`, `node.disk.free`, `net.mtu` and
//! `agent.config.drift` before the upgrade; the list of checks and unknown ids to skip; then,
//! after a real upgrade, `agent.properties.intact`, `db.backup.complete` and
//! `api.inventory.unchanged` against what the run kept.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cs_core::{Finding, NoProgress, Report, Severity, error_chain};
use cs_lab::{Lab, MgmtFault};
use cs_upgrade::{Phase, UpgradeConfig};

/// The findings of `id`.
fn of<'a>(report: &'a Report, id: &str) -> Vec<&'a Finding> {
    report.findings.iter().filter(|f| f.id == id).collect()
}

/// The findings of `id` at `severity` or worse.
fn at_least<'a>(report: &'a Report, id: &str, severity: Severity) -> Vec<&'a Finding> {
    of(report, id)
        .into_iter()
        .filter(|f| f.severity >= severity)
        .collect()
}

async fn preflight(config: &UpgradeConfig, phase: Phase) -> Report {
    let report = cs_upgrade::preflight(config, phase, &[]).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    report
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_fails_where_it_should() {
    let (lab, config, path) = common::lab_for_upgrade("checks").await;

    before_the_upgrade(&lab, &config).await;
    the_list_and_unknown_ids(&config, &path).await;

    cs_upgrade::apply(&config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {}", error_chain(&e)));
    lab.sync();
    after_the_upgrade(&lab, &config).await;
}

async fn before_the_upgrade(lab: &Lab, config: &UpgradeConfig) {
    let ok = preflight(config, Phase::Pre).await;
    let table = ok.to_table();
    for id in [
        "cluster.same.version",
        "ms.deps",
        "node.disk.free",
        "net.mtu",
        "agent.config.drift",
    ] {
        assert!(!of(&ok, id).is_empty(), "no {id}:\n{table}");
        assert!(
            at_least(&ok, id, Severity::Warn).is_empty(),
            "{id}:\n{table}"
        );
    }
    // Room is measured on every node and where the upgrade runs (the backup directory).
    let disk = of(&ok, "node.disk.free");
    for subject in ["mgmt1:", "mgmt2:", "kvm1:"] {
        assert!(
            disk.iter().any(|f| f.subject.starts_with(subject)),
            "{subject}:\n{table}"
        );
    }
    assert!(
        disk.iter()
            .any(|f| f.message.starts_with("backup directory")),
        "{table}"
    );
    // The post-only checks stay out of pre-flight.
    for id in [
        "agent.properties.intact",
        "db.backup.complete",
        "api.inventory.unchanged",
    ] {
        assert!(of(&ok, id).is_empty(), "{id} before the upgrade:\n{table}");
    }

    let mgmt2 = &lab.management_servers()[1];
    let installed = mgmt2.state_dir().join("installed");

    // ms.deps: MySQL's Python connector gone from mgmt2.
    let connector = installed.join("python3-mysql.connector");
    let kept = std::fs::read(&connector).expect("the lab installs the connector");
    std::fs::remove_file(&connector).expect("remove");
    let r = preflight(config, Phase::Pre).await;
    let fails = at_least(&r, "ms.deps", Severity::Fail);
    assert_eq!(fails.len(), 1, "{}", r.to_table());
    assert!(fails[0].subject.starts_with("mgmt2:"), "{fails:?}");
    assert!(
        fails[0].message.contains("python3-mysql.connector"),
        "{fails:?}"
    );
    std::fs::write(&connector, kept).expect("restore");

    // cluster.same.version: mgmt2's management package at another version.
    let package = installed.join("cloudstack-management");
    let kept = std::fs::read(&package).expect("installed");
    std::fs::write(&package, "4.18.1.0\n").expect("write");
    let r = preflight(config, Phase::Pre).await;
    let fails = at_least(&r, "cluster.same.version", Severity::Fail);
    assert_eq!(fails.len(), 1, "{}", r.to_table());
    assert!(
        fails[0].message.contains("2 versions")
            && fails[0]
                .message
                .contains("mgmt2: cloudstack-management 4.18.1.0"),
        "{fails:?}"
    );
    std::fs::write(&package, kept).expect("restore");

    // node.disk.free: mgmt1's filesystems full.
    let mgmt1 = &lab.management_servers()[0];
    mgmt1.inject(MgmtFault::DiskFull).expect("inject");
    let r = preflight(config, Phase::Pre).await;
    mgmt1.clear(MgmtFault::DiskFull).expect("clear");
    let fails = at_least(&r, "node.disk.free", Severity::Fail);
    assert!(!fails.is_empty(), "{}", r.to_table());
    assert!(
        fails.iter().all(|f| f.subject.starts_with("mgmt1:")),
        "{fails:?}"
    );
    assert!(
        fails.iter().any(|f| f
            .message
            .starts_with("package cache: 0 MiB free, 1.0 GiB needed")),
        "{fails:?}"
    );

    // net.mtu: one bridge of kvm2 at another MTU than the rest of its cluster.
    let kvm2 = &lab.kvm_hosts()[1];
    kvm2.set_mtu("cloudbr1", 9000).expect("mtu");
    let r = preflight(config, Phase::Pre).await;
    kvm2.set_mtu("cloudbr1", 1500).expect("mtu");
    let warns = at_least(&r, "net.mtu", Severity::Warn);
    assert_eq!(warns.len(), 1, "{}", r.to_table());
    assert!(
        warns[0].message.contains("cloudbr1 MTU differs")
            && warns[0].message.contains("9000 on kvm2"),
        "{warns:?}"
    );

    // agent.config.drift: a package's copy left beside agent.properties on kvm1.
    let kvm1 = &lab.kvm_hosts()[0];
    let leftover = kvm1
        .root()
        .join("etc/cloudstack/agent/agent.properties.dpkg-dist");
    std::fs::write(&leftover, "guid=\n").expect("write");
    let r = preflight(config, Phase::Pre).await;
    std::fs::remove_file(&leftover).expect("remove");
    let warns = at_least(&r, "agent.config.drift", Severity::Warn);
    assert_eq!(warns.len(), 1, "{}", r.to_table());
    assert!(warns[0].subject.starts_with("kvm1:"), "{warns:?}");
}

/// Runs the `preflight` example with `args`: exit code, stdout, stderr.
fn run_preflight(args: &[&str]) -> (Option<i32>, String, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let out = std::process::Command::new(common::example("preflight"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run preflight");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_list_and_unknown_ids(config: &UpgradeConfig, path: &Path) {
    let (code, list, _) = run_preflight(&["--list"]);
    assert_eq!(code, Some(0));
    for id in cs_upgrade::check_ids() {
        assert!(list.contains(&format!("| `{id}` |")), "{id} not listed");
    }
    assert_eq!(list, cs_upgrade::list_table());

    let config_path = path.display().to_string();
    let (code, out, err) = run_preflight(&["--config", &config_path, "--skip", "db.version.sain"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("db.version.sain (did you mean db.version.sane?)"),
        "{err}"
    );
    assert!(out.is_empty(), "no report with a bad id: {out}");

    // The same id in policy.skip_checks stops the upgrade before anything runs.
    let mut bad = config.clone();
    bad.policy.skip_checks = vec!["node.disk.fre".into()];
    let err = cs_upgrade::apply(&bad, Arc::new(NoProgress))
        .await
        .expect_err("an unknown id is refused");
    assert!(
        matches!(err.kind, cs_upgrade::UpgradeErrorKind::UnknownCheck(_)),
        "{}",
        error_chain(&err)
    );
    assert!(
        err.to_string()
            .contains("node.disk.fre (did you mean node.disk.free?)"),
        "{err}"
    );
}

async fn after_the_upgrade(lab: &Lab, config: &UpgradeConfig) {
    let ok = preflight(config, Phase::Post).await;
    let table = ok.to_table();
    for id in [
        "agent.properties.intact",
        "db.backup.complete",
        "api.inventory.unchanged",
        "cluster.same.version",
    ] {
        assert!(
            of(&ok, id).iter().any(|f| f.severity == Severity::Pass),
            "{id}:\n{table}"
        );
        assert!(
            at_least(&ok, id, Severity::Warn).is_empty(),
            "{id}:\n{table}"
        );
    }
    assert_eq!(
        of(&ok, "agent.properties.intact")
            .iter()
            .filter(|f| f.severity == Severity::Pass)
            .count(),
        lab.kvm_hosts().len(),
        "{table}"
    );

    // agent.properties.intact: kvm1's guid changed after the refresh.
    let props = lab.kvm_hosts()[0]
        .root()
        .join("etc/cloudstack/agent/agent.properties");
    let kept = std::fs::read_to_string(&props).expect("agent.properties");
    let changed: String = kept
        .lines()
        .map(|l| {
            if l.starts_with("guid=") {
                "guid=00000000-0000-0000-0000-000000000000".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(changed.trim(), kept.trim(), "agent.properties has a guid");
    std::fs::write(&props, format!("{changed}\n")).expect("write");
    let r = preflight(config, Phase::Post).await;
    std::fs::write(&props, &kept).expect("restore");
    let fails = at_least(&r, "agent.properties.intact", Severity::Fail);
    assert_eq!(fails.len(), 1, "{}", r.to_table());
    assert_eq!(fails[0].subject, "kvm1");
    assert!(fails[0].message.starts_with("guid changed"), "{fails:?}");

    // db.backup.complete: a file of the run's backup damaged.
    let backup = cs_upgrade::run_dir(config).join("db");
    let victim = files(&backup)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n != "manifest.json"))
        .expect("a backup file");
    let kept = std::fs::read(&victim).expect("read");
    let mut damaged = kept.clone();
    damaged.extend_from_slice(b"x");
    std::fs::write(&victim, &damaged).expect("damage");
    let r = preflight(config, Phase::Post).await;
    std::fs::write(&victim, &kept).expect("restore");
    let fails = at_least(&r, "db.backup.complete", Severity::Fail);
    assert_eq!(fails.len(), 1, "{}", r.to_table());
    assert!(
        fails[0]
            .remedy
            .as_deref()
            .is_some_and(|m| m.contains("take it again")),
        "{fails:?}"
    );

    // api.inventory.unchanged: a guest gone from its host, with nothing that explains it.
    let victim = lab
        .api()
        .vms()
        .into_iter()
        .find(|v| v.kind == "User" && v.state == "Running")
        .expect("a running VM");
    let host = victim.host.clone().expect("on a host");
    lab.kvm_hosts()
        .iter()
        .find(|h| h.name() == host)
        .expect("its host")
        .destroy_domain(&victim.instance_name)
        .expect("destroy the guest");
    lab.sync();
    let r = preflight(config, Phase::Post).await;
    let fails = at_least(&r, "api.inventory.unchanged", Severity::Fail);
    assert_eq!(fails.len(), 1, "{}", r.to_table());
    assert_eq!(fails[0].subject, victim.name);
    assert!(
        fails[0]
            .message
            .contains("nothing in CloudStack's events explains it")
    );
}
