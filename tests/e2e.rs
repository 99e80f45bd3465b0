//! End to end on one lab cloud (2 management servers and 3 KVM hosts at 4.18.0.0, target
//! 4.19.0.0), scenario after scenario so the lab starts once: pre-flight; the plan; a fault in
//! the schema migration rolls everything back automatically; the happy path, after which a
//! second apply changes nothing and post-flight passes; `rollback` as its own command.
//! Faults at the other stages are in `e2e_faults.rs`, killed runs in `e2e_resume.rs`.

mod common;

use std::sync::Arc;

use common::{StageFault, snapshot};
use cs_core::{CsVersion, NoProgress, Severity, StepOutcome, error_chain};
use cs_lab::{Lab, MgmtFault};
use cs_upgrade::{Phase, UpgradeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_scenarios_on_one_lab() {
    let (lab, config, _) = common::lab_for_upgrade("e2e").await;
    let old = lab.initial_version();
    let target = common::target();

    preflight_passes(&config, Phase::Pre).await;
    plan_lists_schema_steps_and_hops(&config).await;
    failed_migration_rolls_back(&lab, &config).await;
    let before = snapshot(&lab).await;
    happy_path_then_apply_is_a_no_op(&lab, &config, &target).await;
    preflight_passes(&config, Phase::Post).await;
    rollback_command_restores_the_old_version(&lab, &config, &old, &before).await;
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
