//! A fault at each stage before the point of no return (the schema migration's is in `e2e.rs`),
//! one after the other on one lab cloud: each `apply` fails at that stage with a message that
//! says why, the runner rolls back every step it applied, and afterwards the databases have the
//! checksums they had, configuration and repository files are byte-identical, packages are at
//! the old version and every management server and host is Up. Faults after it, which stop the
//! run without restoring anything, are in `e2e_after.rs`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{StageFault, fault_rolls_back};
use cs_core::{NoProgress, StepOutcome};
use cs_lab::{Fault, Lab, MgmtFault};
use cs_upgrade::UpgradeConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_at_each_stage_rolls_back() {
    let (lab, config, _) = common::lab_for_upgrade("e2e_faults").await;

    // Backup: the API refuses the inventory the backup step records (a key without the right
    // role). Nothing has changed yet: there is nothing to roll back.
    let report = fault_rolls_back(
        &lab,
        &config,
        StageFault {
            step: "backup",
            says: &["take the inventory", "listVirtualMachines"],
            inject: Box::new(|lab| {
                lab.api().inject(
                    Some("listVirtualMachines"),
                    u32::MAX,
                    Fault::ApiError {
                        code: 432,
                        text: "The given command 'listVirtualMachines' either does not exist, \
                               is not available for user, or not available from ip address"
                            .into(),
                    },
                );
            }),
            clear: Box::new(|lab| lab.api().clear_faults()),
        },
    )
    .await;
    assert!(
        report.rollback_order.iter().all(|s| s == "backup"),
        "{report:#?}"
    );

    // Quiesce: the second management server's stop job fails; the first one, already stopped,
    // starts again at the old version.
    let report = fault_rolls_back(
        &lab,
        &config,
        StageFault {
            step: "quiesce",
            says: &[
                "mgmt2: systemctl stop cloudstack-management",
                "control process exited",
            ],
            inject: Box::new(|lab| mgmt(lab, 1).inject(MgmtFault::StopFails).expect("inject")),
            clear: Box::new(|lab| mgmt(lab, 1).clear_faults().expect("clear")),
        },
    )
    .await;
    assert_rolled_back(&report, &["quiesce"]);

    // Repositories: the second server's repository file is a symbolic link, which cs-repo
    // refuses to replace; the first server's file, already rewritten, is put back.
    let link = lab.management_servers()[1]
        .root()
        .join("etc/apt/sources.list.d/cloudstack.list");
    let aside = lab.management_servers()[1]
        .state_dir()
        .join("cloudstack.list");
    let report = fault_rolls_back(
        &lab,
        &config,
        StageFault {
            step: "repos@4.19.0.0",
            says: &["mgmt2: switch repositories to 4.19", "symbolic link"],
            inject: Box::new(|_| symlink_aside(&link, &aside)),
            clear: Box::new(|_| {}),
        },
    )
    .await;
    unsymlink(&link, &aside);
    assert_rolled_back(&report, &["repos@4.19.0.0", "quiesce"]);

    // Packages: the install fails on the second server after the first one was upgraded; the
    // first one gets the old packages back.
    let report = fault_rolls_back(
        &lab,
        &config,
        StageFault {
            step: "packages@4.19.0.0",
            says: &["mgmt2: install 4.19.0.0", "dpkg returned an error code (1)"],
            inject: Box::new(|lab| {
                mgmt(lab, 1)
                    .inject(MgmtFault::InstallFails)
                    .expect("inject")
            }),
            clear: Box::new(|lab| mgmt(lab, 1).clear_faults().expect("clear")),
        },
    )
    .await;
    assert_rolled_back(&report, &["packages@4.19.0.0", "repos@4.19.0.0", "quiesce"]);
    assert_eq!(
        mgmt(&lab, 0).installed("cloudstack-management").as_deref(),
        Some("4.18.0.0")
    );

    writes_before_the_quiesce_survive_a_rollback(&lab, &config).await;
}

/// A management server writes an event after the `backup` step dumped the databases and before
/// `quiesce` stopped it; the migration then fails. The rollback restores the backup taken once
/// everything was stopped, so the event is still there.
async fn writes_before_the_quiesce_survive_a_rollback(lab: &Lab, config: &UpgradeConfig) {
    // The backup step's last act, the inventory, waits: the window for the write.
    lab.api().inject(
        Some("listVirtualMachines"),
        u32::MAX,
        Fault::Delay(Duration::from_secs(2)),
    );
    mgmt(lab, 0)
        .inject(MgmtFault::FailAtStep(1))
        .expect("inject");
    let run = {
        let config = config.clone();
        tokio::spawn(async move { cs_upgrade::apply(&config, Arc::new(NoProgress)).await })
    };
    let manifest = cs_upgrade::run_dir(config).join("db/manifest.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    // A manifest from an earlier scenario is older than this run.
    let fresh = || {
        std::fs::metadata(&manifest)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < started.elapsed()))
    };
    while !fresh() {
        assert!(Instant::now() < deadline, "no new backup within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let description = format!("written between backup and quiesce {}", std::process::id());
    let insert = format!(
        "INSERT INTO `{}`.`event` (`type`, `description`, `user_id`, `account_id`, `domain_id`, \
         `created`, `level`) VALUES ('VM.START', '{description}', 2, 2, 1, UTC_TIMESTAMP(), 'INFO')",
        lab.cloud_schema()
    );
    let count = format!(
        "SELECT COUNT(*) FROM `{}`.`event` WHERE `description` = '{description}'",
        lab.cloud_schema()
    );
    let rows = tokio::task::block_in_place(|| {
        use cs_lab::DbUrlExt;
        use mysql::prelude::Queryable;
        let mut conn = lab.db_url().connect().expect("connect");
        conn.query_drop(&insert).expect("insert the event");
        conn.query_first::<u64, _>(&count).expect("count")
    });
    assert_eq!(rows, Some(1));

    let err = run
        .await
        .expect("join")
        .expect_err("the migration fault fails the run");
    lab.api().clear_faults();
    mgmt(lab, 0).clear_faults().expect("clear");
    assert_eq!(
        err.report.as_ref().and_then(|r| r.failed_step.as_deref()),
        Some("migrate@4.19.0.0"),
        "{}",
        cs_core::error_chain(&err)
    );
    common::settle_at(lab, &lab.initial_version()).await;
    let rows = tokio::task::block_in_place(|| {
        use cs_lab::DbUrlExt;
        use mysql::prelude::Queryable;
        let mut conn = lab.db_url().connect().expect("connect");
        conn.query_first::<u64, _>(&count).expect("count")
    });
    assert_eq!(
        rows,
        Some(1),
        "the event written before the quiesce was lost"
    );
}

fn mgmt(lab: &Lab, i: usize) -> &cs_lab::MgmtNode {
    &lab.management_servers()[i]
}

#[track_caller]
fn assert_rolled_back(report: &cs_core::RunReport, steps: &[&str]) {
    let rolled_back = report.ids_with(StepOutcome::RolledBack);
    for id in steps {
        assert!(
            rolled_back.contains(id),
            "{id} not rolled back: {report:#?}"
        );
    }
}

/// Moves the file at `link` to `aside` and puts a symbolic link to it in its place.
fn symlink_aside(link: &PathBuf, aside: &PathBuf) {
    std::fs::rename(link, aside).expect("move the repository file aside");
    std::os::unix::fs::symlink(aside, link).expect("symlink");
}

/// Undoes [`symlink_aside`].
fn unsymlink(link: &PathBuf, aside: &PathBuf) {
    std::fs::remove_file(link).expect("remove the link");
    std::fs::rename(aside, link).expect("move the repository file back");
}
