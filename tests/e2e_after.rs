//! Faults after the point of no return, one after the other on one lab cloud with tenants at
//! work the whole time: a management server that will not start at the new version, an agent
//! that never comes back, a router that will not take the new code, and a VM post-flight finds
//! lost. Each stops the run where it is: nothing is rolled back, the database is not touched
//! (what the tenants wrote since the cloud reopened is still there), and the error says what
//! failed; once the fault is gone the run resumes forward. At the end a rollback is refused
//! until told to discard what the cloud wrote since the backup, with what that is.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cs_core::{NoProgress, RunError, error_chain};
use cs_lab::{DbUrlExt, KvmFault, Lab, MgmtFault, TenantChange};
use cs_upgrade::{UpgradeConfig, UpgradeErrorKind};
use mysql::prelude::Queryable;

/// Runs `apply`, which must stop at `step` after the point of no return, with `says` in its
/// message; returns the message.
async fn stops_at(config: &UpgradeConfig, step: &str, says: &[&str]) -> String {
    let err = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .expect_err("the fault stops the run");
    let message = error_chain(&err);
    assert!(
        matches!(err.kind, UpgradeErrorKind::Run(RunError::Stopped { .. })),
        "not a stop after the point of no return: {message}"
    );
    let report = err.report.as_ref().expect("report");
    assert_eq!(report.failed_step.as_deref(), Some(step), "{message}");
    assert!(
        report.rollback_order.is_empty(),
        "nothing is rolled back: {report:#?}"
    );
    for s in says {
        assert!(message.contains(s), "`{s}` not in: {message}");
    }
    message
}

/// The database is still the new release's, and every change the tenants made since `cutoff`
/// is in it: the VMs they deployed have rows, the others have events.
fn nothing_taken_back(lab: &Lab, changes: &[TenantChange], cutoff: &str) {
    let mut conn = lab.db_url().connect().expect("connect");
    let schema = lab.cloud_schema();
    let version: Option<String> = conn
        .query_first(format!(
            "SELECT `version` FROM `{schema}`.`version` WHERE `step` = 'Complete' ORDER BY `id` DESC LIMIT 1"
        ))
        .expect("version");
    assert_eq!(
        version.as_deref(),
        Some(common::target().to_string().as_str())
    );
    let since: Vec<&TenantChange> = changes
        .iter()
        .filter(|c| c.ok && c.at.as_str() >= cutoff)
        .collect();
    for c in &since {
        let rows: Option<u64> = if c.action == "deploy" {
            conn.exec_first(
                format!("SELECT COUNT(*) FROM `{schema}`.`vm_instance` WHERE `uuid` = ?"),
                (&c.vm_id,),
            )
        } else {
            conn.exec_first(
                format!("SELECT COUNT(*) FROM `{schema}`.`event` WHERE `description` LIKE ?"),
                (format!("%{}%", c.vm_id),),
            )
        }
        .expect("count");
        assert!(rows.unwrap_or(0) > 0, "{c:?} was taken back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_after_the_point_of_no_return_stop_without_restoring() {
    let (lab, config, _) = common::lab_for_upgrade("e2e_after").await;
    let target = common::target();
    let mut options = cs_lab::TenantOptions::default();
    options.interval = Duration::from_millis(300);
    options.own_vms_only = true;
    let tenants = lab.start_tenants(options).expect("tenants");
    let mgmt2 = &lab.management_servers()[1];
    let kvm3 = &lab.kvm_hosts()[2];

    // 1. The second management server does not start at the new version.
    mgmt2
        .inject(MgmtFault::StartFailsAt(target))
        .expect("inject");
    stops_at(
        &config,
        "start@4.19.0.0",
        &[
            "mgmt2: cloudstack-management failed to start at 4.19.0.0",
            "Unable to initialize the database encryptors",
        ],
    )
    .await;
    let reopened = cs_upgrade_now();
    // The cloud serves on: the tenants keep working against mgmt1 at the new version.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nothing_taken_back(&lab, &tenants.changes(), &reopened);
    mgmt2.clear_faults().expect("clear");

    // 2. An agent that never comes back.
    kvm3.inject(KvmFault::NeverUp).expect("inject");
    stops_at(&config, "agents", &["agent refresh failed", "kvm3"]).await;
    nothing_taken_back(&lab, &tenants.changes(), &reopened);
    kvm3.clear(KvmFault::NeverUp).expect("clear");

    // 3. A router that will not take the new code.
    let router = lab
        .api()
        .vms()
        .into_iter()
        .find(|v| v.kind == "DomainRouter")
        .expect("a router");
    lab.api().fail_jobs_for(
        &router.name,
        Some("Unable to copy the scripts: no space left on device"),
    );
    stops_at(
        &config,
        "sysvms",
        &["not on 4.19.0.0's code", "no space left on device"],
    )
    .await;
    nothing_taken_back(&lab, &tenants.changes(), &reopened);
    lab.api().fail_jobs_for(&router.name, None);

    // 4. Post-flight finds a guest gone from a refreshed host, and nothing that explains it.
    let victim = lab
        .api()
        .vms()
        .into_iter()
        .find(|v| v.kind == "User" && v.name.starts_with("vm") && v.state == "Running")
        .expect("a running VM of the lab's own");
    let host = victim.host.clone().expect("on a host");
    lab.kvm_hosts()
        .iter()
        .find(|h| h.name() == host)
        .expect("its host")
        .destroy_domain(&victim.instance_name)
        .expect("destroy the guest");
    let message = stops_at(&config, "postflight", &[&victim.name, "nothing explains"]).await;
    assert!(
        message.contains("a host whose agent the upgrade refreshed"),
        "{message}"
    );
    let evidence = cs_upgrade::postflight_evidence(&cs_upgrade::run_dir(&config))
        .expect("the evidence is written");
    assert!(!evidence.verified);
    let changes = tenants.stop();
    nothing_taken_back(&lab, &changes, &reopened);

    // Going back: refused without the flag, with what it would discard; with it, restored.
    let err = cs_upgrade::rollback(&config, Arc::new(NoProgress))
        .await
        .expect_err("refused");
    let message = error_chain(&err);
    let UpgradeErrorKind::PointOfNoReturn { since, loss } = &err.kind else {
        panic!("refused for another reason: {message}");
    };
    for c in changes
        .iter()
        .filter(|c| c.ok && c.action == "deploy" && c.at.as_str() > since.as_str())
    {
        let destroyed = changes
            .iter()
            .any(|d| d.ok && d.action == "destroy" && d.vm == c.vm);
        assert!(
            destroyed || loss.new_vms.iter().any(|v| v.name == c.vm),
            "{} is not in the loss: {message}",
            c.vm
        );
    }
    assert!(message.contains("--discard-changes-since"), "{message}");
    let mut later = cs_upgrade::RollbackOptions::default();
    later.discard_changes_since = Some("2099-01-01 00:00:00".into());
    let err = cs_upgrade::rollback_with(&config, &later, Arc::new(NoProgress))
        .await
        .expect_err("a time after the backup does not cover what the restore discards");
    assert!(matches!(err.kind, UpgradeErrorKind::PointOfNoReturn { .. }));
    later.discard_changes_since = Some("yesterday".into());
    let err = cs_upgrade::rollback_with(&config, &later, Arc::new(NoProgress))
        .await
        .expect_err("not a time");
    assert!(
        error_chain(&err).contains("`yesterday` is not a time"),
        "{}",
        error_chain(&err)
    );
    common::rollback_discarding(&config).await;
    common::settle_at(&lab, &lab.initial_version()).await;
}

/// Now, as the upgrade writes times (`YYYY-MM-DD hh:mm:ss` UTC).
fn cs_upgrade_now() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .expect("format")
}
