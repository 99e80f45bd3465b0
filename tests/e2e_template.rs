//! The system template policy (`[policy.system_template]`) on a lab whose operator did not
//! register the target's system VM template: without the policy the gate refuses
//! (`systemvm.templates.ready`); with it the run registers the template through the API before
//! anything else, and a download that fails stops the run there, nothing else changed; once the
//! failed template is deleted and the download works, the run goes on, and the upgrade's own
//! migration makes the registered template the SYSTEM template the system VMs use.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use cs_core::{NoProgress, RunError, StepOutcome, error_chain};
use cs_lab::Lab;
use cs_upgrade::{UpgradeConfig, UpgradeErrorKind};

const URL: &str =
    "https://download.cloudstack.org/systemvm/4.19/systemvmtemplate-4.19.0-kvm.qcow2.bz2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_registers_the_system_template_first_and_the_upgrade_uses_it() {
    let target = common::target();
    let (lab, without, path) = common::lab_for_upgrade_with(
        Lab::builder()
            .name("e2e_template")
            .register_hop_templates(false),
    )
    .await;
    let name = "systemvm-kvm-4.19.0";
    let unchanged = |what: &str| {
        assert!(
            !cs_upgrade::run_dir(&without).join("db").exists(),
            "{what}: a backup was taken"
        );
        for m in lab.management_servers() {
            assert!(m.service_active(cs_upgrade::MANAGEMENT_UNIT), "{what}");
        }
    };

    // Not registered, and the run is not told to: the gate refuses.
    let err = cs_upgrade::apply(&without, Arc::new(NoProgress))
        .await
        .expect_err("the gate refuses");
    let message = error_chain(&err);
    assert!(
        matches!(err.kind, UpgradeErrorKind::Preflight(_))
            && message.contains("systemvm.templates.ready")
            && message.contains(&format!(
                "{name} (hypervisor KVM, in use) is not registered"
            )),
        "{message}"
    );
    unchanged("no template");

    // Told to: the gate lets it through, the dry run shows the step first.
    let text = std::fs::read_to_string(&path).expect("read");
    let with_policy = path.with_file_name("template.toml");
    std::fs::write(
        &with_policy,
        format!("{text}\n[policy.system_template]\nurl = \"{URL}\"\ndeadline = \"30s\"\n"),
    )
    .expect("write");
    std::fs::set_permissions(&with_policy, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (config, _) = UpgradeConfig::load(&with_policy).expect("config");
    let plan = cs_upgrade::plan(&config).await.expect("plan");
    let text = plan.to_text();
    assert!(text.contains("pre-flight gate: passes"), "{text}");
    assert_eq!(plan.plan.steps[0].id, "template", "{text}");

    // The download fails: the run stops at the template, before any other step.
    lab.api()
        .fail_template_downloads(Some("Failed to download template: HTTP 404 Not Found"));
    let err = cs_upgrade::apply(&config, Arc::new(NoProgress))
        .await
        .expect_err("the download fails");
    let message = error_chain(&err);
    assert!(
        matches!(&err.kind, UpgradeErrorKind::Run(RunError::StepFailed { step, .. }) if step == "template")
            && message.contains("HTTP 404 Not Found")
            && message.contains("deleteTemplate"),
        "{message}"
    );
    unchanged("failed download");
    let client = common::client(&lab);
    let registered = templates_named(&client, name).await;
    assert_eq!(registered.len(), 1, "one template: {registered:?}");
    assert_eq!(registered[0].1, "USER", "registered as the guide says");

    // The operator deletes the failed template and the download works again: the run
    // registers it anew, waits until it is Ready, and upgrades.
    lab.api().fail_template_downloads(None);
    client
        .call_async("deleteTemplate", &[("id", registered[0].0.as_str())])
        .await
        .unwrap_or_else(|e| panic!("delete the failed template: {}", error_chain(&e)));
    assert!(templates_named(&client, name).await.is_empty());
    let report = cs_upgrade::apply(&config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {}\n{:?}", error_chain(&e), e.report));
    let template_step = report
        .steps
        .iter()
        .find(|s| s.id == "template")
        .expect("the template step");
    assert_eq!(template_step.outcome, StepOutcome::Applied, "{report:?}");
    common::settle_at(&lab, &target).await;

    // The migration found it by name (no second one registered) and made it the SYSTEM
    // template the system VMs and routers are on.
    let used = templates_named(&client, name).await;
    assert_eq!(used.len(), 1, "one template: {used:?}");
    assert_eq!(used[0].1, "SYSTEM");
    assert_eq!(
        lab.api().config("router.template.kvm").as_deref(),
        Some(name)
    );
    let sysvms = client.list_system_vms(&[]).await.expect("list system VMs");
    assert!(!sysvms.is_empty());
    for v in &sysvms {
        assert_eq!(v.templatename.as_deref(), Some(name), "{v:?}");
    }
    for r in client
        .list_routers(&[("listall", "true")])
        .await
        .expect("list routers")
    {
        assert_eq!(r.templatename.as_deref(), Some(name), "{r:?}");
    }
}

/// The templates called `name` (id, type), each once whatever the zones it is in.
async fn templates_named(client: &cs_api::Client, name: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = client
        .list_templates(&[("templatefilter", "all"), ("name", name)])
        .await
        .unwrap_or_else(|e| panic!("list templates: {}", error_chain(&e)))
        .into_iter()
        .filter(|t| t.name.as_deref() == Some(name))
        .map(|t| (t.id, t.templatetype.unwrap_or_default()))
        .collect();
    out.sort();
    out.dedup();
    out
}
