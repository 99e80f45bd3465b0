//! The upgrade process killed at each stage: for every step, an `apply` in a child process is
//! killed (SIGKILL) once the journal shows that step started; `apply` here resumes, skips what
//! the killed run finished, and ends with everything at the target. `rollback` then returns the
//! lab to the old version for the next stage, and after the last one a second `apply` finds
//! nothing to do.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ONE_HOP_STEPS as STEPS;
use cs_core::{NoProgress, StepOutcome, error_chain};
use cs_lab::{Fault, Lab};
use cs_upgrade::UpgradeConfig;

/// Set in the environment of the child process [`killed_at`] starts: the config file its
/// `apply` uses.
const CHILD_CONFIG_VAR: &str = "CS_UPGRADE_E2E_CHILD_CONFIG";

/// The child's side of [`killed_at`]: an `apply` that the parent kills part-way. Without the
/// variable (an ordinary test run) it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_apply() {
    let Some(path) = std::env::var_os(CHILD_CONFIG_VAR) else {
        return;
    };
    let (config, _) = UpgradeConfig::load(Path::new(&path)).expect("config");
    // The parent kills this run; should it get to the end, it says how it ended.
    let outcome = match cs_upgrade::apply(&config, Arc::new(NoProgress)).await {
        Ok(r) => format!("finished: {r:?}"),
        Err(e) => format!("failed: {}\n{:?}", error_chain(&e), e.report),
    };
    std::fs::write(Path::new(&path).with_extension("child"), outcome).expect("write the outcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_each_stage_resumes() {
    let (lab, config, path) = common::lab_for_upgrade("e2e_resume").await;
    let target = common::target();
    let old = lab.initial_version();
    for (i, step) in STEPS.iter().enumerate() {
        if *step == "postflight" {
            // Post-flight's check does its whole work (health, inventory diff) and finds it
            // done: slow down the inventory it compares so the kill lands inside it (the
            // backup's inventory waits too).
            lab.api().inject(
                Some("listVirtualMachines"),
                u32::MAX,
                Fault::Delay(Duration::from_secs(2)),
            );
        }
        killed_at(&config, &path, step).await;
        lab.api().clear_faults();
        let report = cs_upgrade::apply(&config, Arc::new(NoProgress))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "resumed after a kill in {step}: {}\n{:?}",
                    error_chain(&e),
                    e.report
                )
            });
        assert!(report.failed_step.is_none(), "{report:#?}");
        // What the killed run finished is not done again.
        let skipped = report.ids_with(StepOutcome::Skipped);
        for done in &STEPS[..i] {
            assert!(
                skipped.contains(done),
                "killed in {step}: {done} was redone: {report:#?}"
            );
        }
        common::settle_at(&lab, &target).await;
        if i + 1 == STEPS.len() {
            let again = cs_upgrade::apply(&config, Arc::new(NoProgress))
                .await
                .unwrap_or_else(|e| panic!("apply after the resume: {}", error_chain(&e)));
            assert!(
                again.ids_with(StepOutcome::Applied).is_empty(),
                "{again:#?}"
            );
            break;
        }
        back_to(&lab, &config, &old).await;
    }
}

/// Rolls the finished upgrade back, for the next stage's kill.
async fn back_to(lab: &Lab, config: &UpgradeConfig, old: &cs_core::CsVersion) {
    common::rollback_discarding(config).await;
    common::settle_at(lab, old).await;
}

/// Whether the newest run in the journal is at `step`: it started applying it or, for the
/// last step (whose check finds the work done after a clean run), finished the one before.
fn journal_shows_start(journal: &Path, step: &str) -> bool {
    use cs_core::JournalEvent::{ApplyDone, ApplyStart};
    let Ok(entries) = cs_core::read_journal(journal) else {
        return false;
    };
    let last_run = entries.iter().map(|e| e.run).max().unwrap_or(0);
    let before = STEPS
        .iter()
        .position(|s| *s == step)
        .filter(|&i| i + 1 == STEPS.len())
        .map(|i| STEPS[i - 1]);
    entries
        .iter()
        .filter(|e| e.run == last_run)
        .any(|e| match &e.event {
            ApplyStart { step: s } => s == step,
            ApplyDone { step: s, .. } => Some(s.as_str()) == before,
            _ => false,
        })
}

/// Starts `apply` in a child process and kills it once `step` started.
async fn killed_at(config: &UpgradeConfig, path: &Path, step: &str) {
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
    let deadline = Instant::now() + Duration::from_secs(90);
    while !journal_shows_start(&journal, step) {
        if let Some(status) = child.try_wait().expect("poll the child") {
            let outcome = std::fs::read_to_string(path.with_extension("child")).unwrap_or_default();
            panic!("the child run ended ({status}) before {step} started: {outcome}");
        }
        assert!(
            Instant::now() < deadline,
            "{step} did not start within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("kill the child run");
    child.wait().expect("reap the child run");
}
