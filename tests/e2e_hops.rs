//! Skipping releases: a lab at 4.17.0.0 upgraded to 4.20.0.0 goes through the LTS stepping
//! stone 4.19.3.0, each hop its own pass of quiesce, repositories, packages, migration and
//! start, with one agent refresh and one system VM refresh to the target at the end; a
//! rollback, told to discard what the cloud wrote since its backup, then takes everything back
//! to 4.17.0.0 as it was.

mod common;

use std::sync::Arc;

use cs_core::{CsVersion, NoProgress, StepOutcome, error_chain};
use cs_lab::Lab;
use cs_upgrade::UpgradeConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hops_through_an_lts_and_back() {
    let target: CsVersion = "4.20.0.0".parse().expect("a version");
    let lab = tokio::task::spawn_blocking(|| {
        Lab::builder()
            .name("e2e_hops")
            .version("4.17.0.0")
            .offer("4.19", &["4.19.3.0"])
            .offer("4.20", &["4.20.0.0"])
            .start()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    // 4.20 runs on Java 17, which the operator installs beforehand (ms.java.compat says so).
    for m in lab.management_servers() {
        m.set_java_major(17).expect("java 17");
    }
    let hops = tokio::task::block_in_place(|| lab.prepare_upgrade(&target, false))
        .unwrap_or_else(|e| panic!("prepare: {}", error_chain(&e)));
    let lts: CsVersion = "4.19.3.0".parse().expect("a version");
    assert_eq!(hops, [lts, target]);
    let path = lab.write_config(&target).expect("config");
    let (config, _) = UpgradeConfig::load(&path).expect("config");
    let before = common::snapshot(&lab).await;

    let plan = cs_upgrade::plan(&config)
        .await
        .unwrap_or_else(|e| panic!("plan: {}", error_chain(&e)));
    assert_eq!(plan.record.hops, [lts, target], "{}", plan.to_text());

    let report = cs_upgrade::apply(&config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {}\n{:?}", error_chain(&e), e.report));
    let applied = report.ids_with(StepOutcome::Applied);
    for id in [
        "quiesce",
        "repos@4.19.3.0",
        "packages@4.19.3.0",
        "migrate@4.19.3.0",
        "start@4.19.3.0",
        "quiesce@4.20.0.0",
        "repos@4.20.0.0",
        "packages@4.20.0.0",
        "migrate@4.20.0.0",
        "start@4.20.0.0",
        "agents",
        "sysvms",
        "postflight",
    ] {
        assert!(applied.contains(&id), "{id} not applied: {report:#?}");
    }
    common::settle_at(&lab, &target).await;

    // Past the point of no return: the rollback says what it discards, and is told to.
    common::rollback_discarding(&config).await;
    common::settle_at(&lab, &lab.initial_version()).await;
    // Past the point of no return the rollback also puts the system VMs and routers back onto
    // the old code, after the restore, which writes its events; everything else is as it was.
    common::assert_same_except(&before, &common::snapshot(&lab).await, &["event"]);
}
