//! End to end on one lab cloud (2 management servers and 3 KVM hosts at 4.18.0.0, target
//! 4.19.0.0), scenario after scenario so the lab starts once: a fault in the schema migration
//! rolls everything back automatically; the plan; the happy path, after which a second apply
//! changes nothing; `rollback` as its own command; a killed run resumed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cs_api::{Client, ClientConfig, Credentials, HealthExpectations, HealthReport};
use cs_core::{CsVersion, NoProgress, Severity, StepOutcome, error_chain};
use cs_lab::{Lab, MgmtFault};
use cs_upgrade::{Phase, UpgradeConfig, UpgradeErrorKind};

/// Tables left out of the before/after database comparison, each for a reason of its own.
const VOLATILE_TABLES: &[&str] = &[
    // One row per management server with its state (Up/Down), run id and heartbeat time:
    // stopping and starting the servers, which a rollback must do, rewrites them.
    "mshost",
];

/// Every file under the node's `etc` (CloudStack's configuration, `/etc/default`, the apt
/// sources), with its mode and bytes (a symlink as its target).
fn etc_files(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(root).expect("under root").display();
            if meta.is_dir() {
                walk(&path, root, out);
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel.to_string(), (mode, std::fs::read(&path).expect("read")));
            } else {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(
                    rel.to_string(),
                    (0, target.to_string_lossy().into_owned().into_bytes()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&root.join("etc"), root, &mut out);
    out
}

/// What must be the same after a rollback as before the upgrade.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    checksums: BTreeMap<String, String>,
    files: BTreeMap<String, BTreeMap<String, (u32, Vec<u8>)>>,
}

async fn snapshot(lab: &Lab) -> Snapshot {
    let checksums = tokio::task::block_in_place(|| lab.checksums(VOLATILE_TABLES))
        .unwrap_or_else(|e| panic!("checksums: {}", error_chain(&e)));
    let files = lab
        .management_servers()
        .iter()
        .map(|m| (m.name().to_string(), etc_files(m.root())))
        // On KVM hosts, the agent's configuration, keystore and repository files.
        .chain(lab.kvm_hosts().iter().map(|h| {
            let mut files = etc_files(&h.root());
            files.retain(|path, _| {
                path.starts_with("etc/cloudstack/agent/")
                    || path.starts_with("etc/apt/")
                    || path.starts_with("etc/yum.repos.d/")
            });
            (h.name().to_string(), files)
        }))
        .collect();
    Snapshot { checksums, files }
}

#[track_caller]
fn assert_same(before: &Snapshot, after: &Snapshot) {
    for (k, v) in &before.checksums {
        assert_eq!(after.checksums.get(k), Some(v), "table {k} differs");
    }
    let extra: Vec<&String> = after
        .checksums
        .keys()
        .filter(|k| !before.checksums.contains_key(*k))
        .collect();
    assert!(extra.is_empty(), "tables left behind: {extra:?}");
    for (node, files) in &before.files {
        let now = &after.files[node];
        for (path, v) in files {
            match now.get(path) {
                Some(n) if n == v => {}
                Some(n) => panic!(
                    "{node}: {path} differs (mode {:o} -> {:o}):\n{}\n---\n{}",
                    v.0,
                    n.0,
                    String::from_utf8_lossy(&v.1),
                    String::from_utf8_lossy(&n.1)
                ),
                None => panic!("{node}: {path} is gone"),
            }
        }
        let extra: Vec<&String> = now.keys().filter(|k| !files.contains_key(*k)).collect();
        assert!(extra.is_empty(), "{node}: files left behind: {extra:?}");
    }
}

fn client(lab: &Lab) -> Client {
    Client::new(
        &lab.api().endpoint(),
        Credentials::api_key(lab.api().api_key(), lab.api().secret_key().clone()),
        ClientConfig::default(),
    )
    .expect("client")
}

/// Packages at `v` on every node, and the API reporting everything Up at `v`.
async fn assert_everything_at(lab: &Lab, v: &CsVersion) {
    for m in lab.management_servers() {
        for p in cs_upgrade::MANAGEMENT_PACKAGES {
            assert_eq!(
                m.installed(p).as_deref(),
                Some(v.to_string().as_str()),
                "{}: {p}",
                m.name()
            );
        }
    }
    for h in lab.kvm_hosts() {
        assert_eq!(
            h.installed("cloudstack-agent").as_deref(),
            Some(v.to_string().as_str()),
            "{}",
            h.name()
        );
    }
    lab.sync();
    let report = HealthReport::collect(&client(lab)).await.expect("health");
    let expect = HealthExpectations {
        phase: cs_api::Phase::Post,
        version: Some(*v),
    };
    let problems = report.problems(&expect);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(report.hosts.len(), lab.kvm_hosts().len());
    assert_eq!(report.hosts_up(), lab.kvm_hosts().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_scenarios_on_one_lab() {
    let lab = tokio::task::spawn_blocking(|| Lab::builder().name("e2e").start())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let old = lab.initial_version();
    let target: CsVersion = "4.19.0.0".parse().unwrap();
    tokio::task::block_in_place(|| lab.prepare_upgrade(&target, false)).expect("prepare");
    let path = lab.write_config(&target).expect("config");
    let (config, _) = UpgradeConfig::load(&path).expect("config");

    preflight_passes(&config, Phase::Pre).await;
    plan_lists_schema_steps_and_hops(&config).await;
    failed_migration_rolls_back(&lab, &config, &old).await;
    let before = snapshot(&lab).await;
    happy_path_then_apply_is_a_no_op(&lab, &config, &target).await;
    preflight_passes(&config, Phase::Post).await;
    rollback_command_restores_the_old_version(&lab, &config, &old, &before).await;
    killed_run_resumes(&lab, &config, &path, &target).await;
}

/// Set in the environment of the child process [`killed_run_resumes`] starts: the config file
/// its `apply` uses.
const CHILD_CONFIG_VAR: &str = "CS_UPGRADE_E2E_CHILD_CONFIG";

/// The child's side of [`killed_run_resumes`]: an `apply` that the parent kills part-way.
/// Without the variable (an ordinary test run) it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_apply() {
    let Some(path) = std::env::var_os(CHILD_CONFIG_VAR) else {
        return;
    };
    let (config, _) = UpgradeConfig::load(Path::new(&path)).expect("config");
    // The parent kills this run; should it get to the end, the parent's checks say so.
    let _ = cs_upgrade::apply(&config, Arc::new(NoProgress)).await;
}

/// Whether the journal records that `step` started applying in the newest run.
fn journal_shows_start(journal: &Path, step: &str) -> bool {
    let Ok(entries) = cs_core::read_journal(journal) else {
        return false;
    };
    let last_run = entries.iter().map(|e| e.run).max().unwrap_or(0);
    entries.iter().any(|e| {
        e.run == last_run
            && matches!(&e.event, cs_core::JournalEvent::ApplyStart { step: s } if s == step)
    })
}

/// An `apply` in a child process killed once the migration started; `apply` again here
/// resumes and finishes, and the end state is the happy path's.
async fn killed_run_resumes(lab: &Lab, config: &UpgradeConfig, path: &Path, target: &CsVersion) {
    const KILL_AT: &str = "migrate@4.19.0.0";
    let journal = cs_upgrade::run_dir(config).join("journal.jsonl");
    let exe = std::env::current_exe().expect("the test binary");
    #[allow(clippy::disallowed_methods)] // the test kills a real child process
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "child_apply", "--test-threads=1", "--quiet"])
        .env(CHILD_CONFIG_VAR, path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the child run");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !journal_shows_start(&journal, KILL_AT) {
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!("the child run ended ({status}) before {KILL_AT} started");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{KILL_AT} did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill the child run");
    child.wait().expect("reap the child run");

    let report = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("resumed upgrade: {}\n{:?}", error_chain(&e), e.report));
    assert!(report.failed_step.is_none());
    // What the killed run finished is not done again.
    let skipped = report.ids_with(StepOutcome::Skipped);
    for id in ["backup", "quiesce", "repos@4.19.0.0", "packages@4.19.0.0"] {
        assert!(skipped.contains(&id), "{id} was redone: {report:#?}");
    }
    tokio::task::block_in_place(|| lab.wait_all_up(&target.to_string(), Duration::from_secs(30)))
        .expect("everything Up at the target");
    assert_everything_at(lab, target).await;
    let again = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("apply after the resume: {}", error_chain(&e)));
    assert!(again.ids_with(StepOutcome::Applied).is_empty());
}

/// Checks the lab leaves out: `repo.target.resolvable` reads the package index at the
/// repository's URL, which on lab nodes is the official `download.cloudstack.org` (tests talk
/// only to 127.0.0.1); `net.agent.reach` opens TCP connections to port 8250 of the management
/// servers, which the simulated ones only report (through a stand-in `ss`) without listening.
const LAB_SKIPS: &[&str] = &["repo.target.resolvable", "net.agent.reach"];

/// Pre-flight warns at most; post-flight after the upgrade passes (information aside).
async fn preflight_passes(config: &UpgradeConfig, phase: Phase) {
    let report = cs_upgrade::preflight(config, phase, LAB_SKIPS).await;
    let table = report.to_table();
    assert!(report.broken.is_empty(), "{phase:?}:\n{table}");
    let worst_allowed = match phase {
        Phase::Pre => Severity::Warn,
        _ => Severity::Info,
    };
    assert!(report.worst() <= worst_allowed, "{phase:?}:\n{table}");
    // Every part ran: a management server, the database, a KVM host and the API.
    for id in [
        "ms.java.compat",
        "db.version.sane",
        "agent.keystore",
        "api.hosts.up",
    ] {
        assert!(
            report.findings.iter().any(|f| f.id == id),
            "{phase:?}: no {id}:\n{table}"
        );
    }
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.id == "repo.target.resolvable" && f.severity == Severity::Skip)
            || phase == Phase::Post,
        "{table}"
    );
}

/// The dry run names the hop, its schema steps and every step of the run, and changes nothing.
async fn plan_lists_schema_steps_and_hops(config: &UpgradeConfig) {
    let plan = cs_upgrade::plan(config)
        .await
        .unwrap_or_else(|e| panic!("plan: {}", error_chain(&e)));
    let text = plan.to_text();
    assert_eq!(plan.record.hops, [config.target], "{text}");
    assert!(
        text.starts_with("upgrade 4.18.0.0 -> 4.19.0.0 in 1 hop(s)\n"),
        "{text}"
    );
    let (hop, steps) = &plan.schema_steps[0];
    assert_eq!(*hop, config.target);
    assert!(!steps.is_empty(), "{text}");
    assert!(
        text.contains(&format!("  hop to 4.19.0.0: {}", steps.join(", "))),
        "{text}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("Upgrade41810to41900 (4.18.1.0 -> 4.19.0.0)")),
        "{text}"
    );
    for id in [
        "backup",
        "quiesce",
        "repos@4.19.0.0",
        "packages@4.19.0.0",
        "migrate@4.19.0.0",
        "start@4.19.0.0",
        "agents",
        "postflight",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(id) && l.ends_with("would apply")),
            "{id}: {text}"
        );
    }
}

/// `rollback` after a finished upgrade puts everything back at the old version.
async fn rollback_command_restores_the_old_version(
    lab: &Lab,
    config: &UpgradeConfig,
    old: &CsVersion,
    before: &Snapshot,
) {
    let report = cs_upgrade::rollback(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("rollback: {}\n{:?}", error_chain(&e), e.report));
    let rolled_back = report.ids_with(StepOutcome::RolledBack);
    for id in ["agents", "migrate@4.19.0.0", "packages@4.19.0.0", "quiesce"] {
        assert!(
            rolled_back.contains(&id),
            "{id} not rolled back: {report:#?}"
        );
    }
    tokio::task::block_in_place(|| lab.wait_all_up(&old.to_string(), Duration::from_secs(30)))
        .expect("everything Up again");
    assert_everything_at(lab, old).await;
    // The comparison covers the KVM hosts' repository files too.
    for h in lab.kvm_hosts() {
        assert!(
            before.files[h.name()]
                .keys()
                .any(|k| k.ends_with("cloudstack.list") || k.ends_with("cloudstack.repo")),
            "{}",
            h.name()
        );
    }
    assert_same(before, &snapshot(lab).await);

    // Nothing is left to roll back.
    let again = cs_upgrade::rollback(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("second rollback: {}", error_chain(&e)));
    assert!(again.ids_with(StepOutcome::RolledBack).is_empty());
}

/// A fault in the schema migration: `apply` fails with the runner's report, everything is
/// rolled back automatically and the cloud is as it was.
async fn failed_migration_rolls_back(lab: &Lab, config: &UpgradeConfig, old: &CsVersion) {
    let before = snapshot(lab).await;
    let first = &lab.management_servers()[0];
    first.inject(MgmtFault::FailAtStep(1)).expect("inject");

    let err = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .expect_err("the migration fault must fail the upgrade");
    first.clear_faults().expect("clear");
    assert!(
        matches!(err.kind, UpgradeErrorKind::Run(_)),
        "{}",
        error_chain(&err)
    );
    let report = err.report.as_deref().expect("the runner's report");
    assert_eq!(
        report.failed_step.as_deref(),
        Some("migrate@4.19.0.0"),
        "{report:#?}"
    );
    let message = error_chain(&err);
    assert!(
        message.contains("the schema migration on mgmt1 failed")
            && message.contains("Unable to execute upgrade script"),
        "{message}"
    );
    let rolled_back = report.ids_with(StepOutcome::RolledBack);
    for id in [
        "migrate@4.19.0.0",
        "packages@4.19.0.0",
        "repos@4.19.0.0",
        "quiesce",
    ] {
        assert!(
            rolled_back.contains(&id),
            "{id} not rolled back: {:#?}",
            report.step(id)
        );
    }
    assert!(report.ids_with(StepOutcome::RollbackFailed).is_empty());

    tokio::task::block_in_place(|| lab.wait_all_up(&old.to_string(), Duration::from_secs(30)))
        .expect("everything Up again");
    assert_everything_at(lab, old).await;
    assert_same(&before, &snapshot(lab).await);

    // The logs say why: `diagnose` finds the failed upgrade script on the first server.
    let sources = cs_upgrade::log_sources(config)
        .await
        .unwrap_or_else(|e| panic!("log sources: {}", error_chain(&e)));
    assert_eq!(sources.len(), 5);
    let report = cs_upgrade::diagnose(&sources, cs_upgrade::DEFAULT_TAIL_BYTES).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.id == "diagnose.db.upgrade.failed" && f.subject.starts_with("mgmt1:")),
        "{}",
        report.to_table()
    );
}

/// The upgrade runs through; a second apply applies nothing.
async fn happy_path_then_apply_is_a_no_op(lab: &Lab, config: &UpgradeConfig, target: &CsVersion) {
    let report = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {}\n{:?}", error_chain(&e), e.report));
    assert!(report.failed_step.is_none());
    // The backup of the failed attempt predates the services' restart: a new one is taken.
    assert!(
        report.ids_with(StepOutcome::Applied).contains(&"backup"),
        "{report:#?}"
    );
    assert_everything_at(lab, target).await;

    let again = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("second apply: {}", error_chain(&e)));
    assert!(
        again.ids_with(StepOutcome::Applied).is_empty(),
        "{:?}",
        again.ids_with(StepOutcome::Applied)
    );
}
