//! The maintenance policy (`agent_refresh = "maintenance"`) on a lab of two clusters of two KVM
//! hosts: the capacity check stops the upgrade before any change while a host's VMs would not
//! fit in the rest of its cluster; with room, each host is evacuated by CloudStack's maintenance
//! before its agent is refreshed, the VMs live-migrate, and the post-flight proof expects the
//! moves the policy caused and says so.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use cs_core::{NoProgress, StepOutcome, error_chain};
use cs_lab::{HostCapacity, Lab};
use cs_upgrade::{UpgradeConfig, UpgradeErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_policy_checks_capacity_then_evacuates_each_host() {
    let target = common::target();
    let (lab, _, path) = common::lab_for_upgrade_with(
        Lab::builder()
            .name("e2e_maintenance")
            .kvm_hosts(4)
            .hosts_per_cluster(2)
            .vms(6),
    )
    .await;
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace("[policy]\n", "[policy]\nagent_refresh = \"maintenance\"\n"),
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (config, _) = UpgradeConfig::load(&path).expect("config");
    let before = lab.api().vms();

    // kvm2 cannot take kvm1's VMs: the gate refuses before anything changes.
    let small = HostCapacity {
        cpus: 32,
        speed: 2400,
        memory_mb: 1024,
    };
    lab.api().set_host_capacity("kvm2", small);
    let err = cs_upgrade::apply(&config, Arc::new(NoProgress))
        .await
        .expect_err("the capacity check refuses");
    let message = error_chain(&err);
    assert!(
        matches!(err.kind, UpgradeErrorKind::Preflight(_))
            && message.contains(&format!("{} kvm1", cs_upgrade::MAINTENANCE_CAPACITY))
            && message.contains("the rest of the cluster has"),
        "{message}"
    );
    assert!(!cs_upgrade::run_dir(&config).join("db").exists());
    lab.api().set_host_capacity("kvm2", HostCapacity::default());

    // With room: every host evacuated, refreshed, and enabled again.
    let report = cs_upgrade::apply(&config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {}\n{:?}", error_chain(&e), e.report));
    assert!(report.ids_with(StepOutcome::Applied).contains(&"agents"));
    common::settle_at(&lab, &target).await;
    let maint: Vec<String> = lab
        .api()
        .events()
        .into_iter()
        .filter(|e| e.kind == "MAINT.PREPARE" && e.state == "Completed")
        .map(|e| e.description)
        .collect();
    assert_eq!(maint.len(), 4, "{maint:?}");
    for h in lab.kvm_hosts() {
        assert_eq!(
            lab.api().host_resource_state(h.name()).as_deref(),
            Some("Enabled")
        );
    }
    // VMs moved, within their clusters, and the proof says the policy moved them.
    let now = lab.api().vms();
    let moved: Vec<&str> = before
        .iter()
        .filter(|b| b.kind == "User")
        .filter(|b| now.iter().any(|n| n.id == b.id && n.host != b.host))
        .map(|b| b.name.as_str())
        .collect();
    assert!(!moved.is_empty(), "maintenance moved no VM");
    let evidence =
        cs_upgrade::postflight_evidence(&cs_upgrade::run_dir(&config)).expect("evidence");
    assert!(evidence.verified, "{:#?}", evidence.proof);
    for name in &moved {
        let a = evidence
            .proof
            .explained
            .iter()
            .find(|a| a.name == *name)
            .unwrap_or_else(|| panic!("{name} is not in the proof: {:#?}", evidence.proof));
        assert!(
            a.cause
                .as_deref()
                .is_some_and(|c| c.contains("maintenance of kvm")),
            "{a:?}"
        );
    }
}
