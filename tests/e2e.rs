//! End to end on one lab cloud (2 management servers and 3 KVM hosts at 4.18.0.0, target
//! 4.19.0.0), scenario after scenario so the lab starts once: pre-flight; the plan; a fault in
//! the schema migration rolls everything back automatically; the happy path, after which a
//! second apply changes nothing and post-flight passes; `rollback` as its own command.
//! Faults at the other stages are in `e2e_faults.rs`, killed runs in `e2e_resume.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{StageFault, snapshot};
use cs_core::{CsVersion, NoProgress, Severity, StepOutcome, error_chain};
use cs_lab::{Lab, MgmtFault};
use cs_upgrade::{Phase, UpgradeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_scenarios_on_one_lab() {
    let (lab, config, path) = common::lab_for_upgrade("e2e").await;
    let old = lab.initial_version();
    let target = common::target();

    preflight_passes(&config, Phase::Pre).await;
    plan_lists_schema_steps_and_hops(&config).await;
    failed_migration_rolls_back(&lab, &config).await;
    let before = snapshot(&lab).await;
    happy_path_then_apply_is_a_no_op(&lab, &config, &target).await;
    preflight_passes(&config, Phase::Post).await;
    rollback_command_restores_the_old_version(&lab, &config, &old, &before).await;
    examples_on_the_lab(&lab, &path);
    hardening_report_and_fix(&lab, &config, &path).await;
}

/// An example binary as `cargo test` builds them, beside the test binaries' directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the target directory")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built (`cargo test` builds the examples; so does `cargo build --examples`)",
        path.display()
    );
    path
}

/// Runs an example; its exit code, stdout and stderr. Neither output may hold the lab's
/// database password or API secret.
fn run_example(lab: &Lab, name: &str, args: &[&str]) -> (i32, String, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binaries
    let out = std::process::Command::new(example(name))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the example");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    for secret in [
        lab.db_url().password.expose().to_string(),
        lab.api().secret_key().expose().to_string(),
    ] {
        assert!(
            !stdout.contains(&secret) && !stderr.contains(&secret),
            "{name} printed a secret"
        );
    }
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The operator's binaries against the lab (at the old version, after the rollback): the
/// dry run, a refused `--resume`, pre-flight as JSON, and `diagnose`.
fn examples_on_the_lab(lab: &Lab, path: &Path) {
    let config = path.to_str().expect("a UTF-8 path");
    let (code, out, err) = run_example(lab, "upgrade", &["--config", config, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("upgrade 4.18.0.0 -> 4.19.0.0"), "{out}");

    let (code, out, err) = run_example(lab, "upgrade", &["--config", config, "--resume"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("nothing to resume: the last run finished"),
        "{err}"
    );

    let (code, out, err) = run_example(lab, "preflight", &["--config", config, "--json"]);
    assert!(code <= 1, "exit {code}: {out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("pre-flight JSON");
    let findings = json["findings"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["id"] == "db.version.sane"),
        "{out}"
    );

    // The failed migration of the first scenario is still in the first server's log.
    let (code, out, err) = run_example(lab, "diagnose", &["--config", config]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("diagnose.db.upgrade.failed"), "{out}");
}

/// The hardening report on a stock lab has nothing above information; with secret files
/// opened up on one server and the integration port on, it warns about each, `harden` fixes
/// the modes (and only them), and the report says so.
async fn hardening_report_and_fix(lab: &Lab, config: &UpgradeConfig, path: &Path) {
    let report = cs_upgrade::hardening_report(config).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    assert!(report.worst() <= Severity::Info, "{}", report.to_table());
    for id in [
        cs_upgrade::SECRET_FILES_CHECK,
        cs_upgrade::FIREWALL_CHECK,
        "ms.heap",
    ] {
        assert!(
            report.findings.iter().any(|f| f.id == id),
            "no {id}:\n{}",
            report.to_table()
        );
    }

    let conf = lab.management_servers()[1]
        .root()
        .join("etc/cloudstack/management");
    let (props, key) = (conf.join("db.properties"), conf.join("key"));
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    let set_mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    let (props_was, key_was) = (mode(&props), mode(&key));
    set_mode(&props, 0o644);
    set_mode(&key, 0o666);
    lab.api().set_config("integration.api.port", "8096");

    let report = cs_upgrade::hardening_report(config).await;
    let warned = |subject: &dyn Fn(&str) -> bool| {
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warn && subject(&f.subject))
    };
    for file in ["/db.properties", "/key"] {
        assert!(
            warned(&|s| s.starts_with("mgmt2:") && s.ends_with(file)),
            "{file}:\n{}",
            report.to_table()
        );
    }
    assert!(
        !warned(&|s| s.starts_with("mgmt1:")),
        "{}",
        report.to_table()
    );
    assert!(
        warned(&|s| s.ends_with("integration.api.port")),
        "{}",
        report.to_table()
    );

    let config_path = path.to_str().expect("a UTF-8 path");
    let (code, out, err) = run_example(lab, "harden", &["--config", config_path, "--fix"]);
    // The integration port is reported, not changed: still a warning.
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("db.properties mode 0644 -> 0640") && out.contains("key mode 0666 -> 0640"),
        "{out}"
    );
    assert_eq!((mode(&props), mode(&key)), (0o640, 0o640));
    let report = cs_upgrade::hardening_report(config).await;
    let secret_warnings = report
        .findings
        .iter()
        .filter(|f| f.id == cs_upgrade::SECRET_FILES_CHECK && f.severity > Severity::Info)
        .count();
    assert_eq!(secret_warnings, 0, "{}", report.to_table());
    assert_eq!(
        cs_upgrade::harden(config).await.expect("harden again"),
        [],
        "a second fix changes nothing"
    );

    lab.api().set_config("integration.api.port", "0");
    set_mode(&props, props_was);
    set_mode(&key, key_was);
}

/// Pre-flight warns at most; post-flight after the upgrade passes (information aside).
async fn preflight_passes(config: &UpgradeConfig, phase: Phase) {
    let report = cs_upgrade::preflight(config, phase, &[]).await;
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
        "net.agent.reach",
        "api.hosts.up",
    ] {
        assert!(
            report.findings.iter().any(|f| f.id == id),
            "{phase:?}: no {id}:\n{table}"
        );
    }
    // The repositories: before, the lab's repository server offers the target to every node
    // (management servers and KVM hosts); after, every entry points at the target line.
    let repo_check = match phase {
        Phase::Pre => "repo.target.resolvable",
        _ => "repo.target.configured",
    };
    let passed = report
        .findings
        .iter()
        .filter(|f| f.id == repo_check && f.severity == Severity::Pass)
        .count();
    assert_eq!(passed, 5, "{phase:?}:\n{table}");
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
    for id in common::ONE_HOP_STEPS {
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
    before: &common::Snapshot,
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
    common::settle_at(lab, old).await;
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
    common::assert_same(before, &snapshot(lab).await);

    // Nothing is left to roll back.
    let again = cs_upgrade::rollback(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("second rollback: {}", error_chain(&e)));
    assert!(again.ids_with(StepOutcome::RolledBack).is_empty());
}

/// A fault in the schema migration: `apply` fails with the runner's report, everything is
/// rolled back automatically and the cloud is as it was; `diagnose` says why.
async fn failed_migration_rolls_back(lab: &Lab, config: &UpgradeConfig) {
    let report = common::fault_rolls_back(
        lab,
        config,
        StageFault {
            step: "migrate@4.19.0.0",
            says: &[
                "the schema migration on mgmt1 failed",
                "Unable to execute upgrade script",
            ],
            inject: Box::new(|lab| {
                lab.management_servers()[0]
                    .inject(MgmtFault::FailAtStep(1))
                    .expect("inject");
            }),
            clear: Box::new(|lab| lab.management_servers()[0].clear_faults().expect("clear")),
        },
    )
    .await;
    let rolled_back = report.ids_with(StepOutcome::RolledBack);
    for id in [
        "migrate@4.19.0.0",
        "packages@4.19.0.0",
        "repos@4.19.0.0",
        "quiesce",
    ] {
        assert!(rolled_back.contains(&id), "{id}: {:#?}", report.step(id));
    }

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
    common::assert_everything_at(lab, target).await;

    let again = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("second apply: {}", error_chain(&e)));
    assert!(
        again.ids_with(StepOutcome::Applied).is_empty(),
        "{:?}",
        again.ids_with(StepOutcome::Applied)
    );
}
