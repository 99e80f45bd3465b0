//! The lab's simulated management server against the CloudStack behaviour it follows, through
//! the project's own API client: maintenance that live-migrates VMs (or ends in
//! ErrorInMaintenance), system VMs and routers that keep their template until CloudStack
//! restarts them, tenants that keep changing the cloud, and an API that is only there while a
//! management server runs. The endpoint here is a bare one (no database, no nodes); the same
//! behaviours with the database and the hypervisors are in `lab_cloud.rs`.

use std::time::{Duration, Instant};

use cs_api::{Client, ClientConfig, Credentials, Error, JobPolicy, RetryPolicy};
use cs_core::{HostMaintenance, HostStatus};
use cs_lab::{CloudSpec, HostCapacity, LabApi, TenantOptions};

fn client(lab: &LabApi) -> Client {
    let config = ClientConfig {
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            retries: 0,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        job: JobPolicy {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(50),
            deadline: Duration::from_secs(10),
        },
        ..ClientConfig::default()
    };
    Client::new(
        &lab.endpoint(),
        Credentials::api_key(lab.api_key(), lab.secret_key().clone()),
        config,
    )
    .expect("client")
}

/// 2 clusters of 2 hosts (`kvm0001`, `kvm0002` in `cluster1`), 8 VMs, an SSVM and a CPVM, at
/// 4.20.0.0.
fn cloud() -> LabApi {
    let lab = LabApi::start().expect("lab API");
    lab.populate(&CloudSpec::default());
    lab
}

fn on_host(lab: &LabApi, host: &str) -> Vec<String> {
    lab.vms()
        .into_iter()
        .filter(|v| v.host.as_deref() == Some(host))
        .map(|v| v.name)
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job(
    c: &Client,
    command: &str,
    params: &[(&str, &str)],
) -> Result<serde_json::Value, Error> {
    c.call_async(command, params)
        .await
        .map(|j| j.jobresult.unwrap_or_default())
}

#[tokio::test]
async fn maintenance_live_migrates_every_vm_to_the_rest_of_the_cluster() {
    let lab = cloud();
    let c = client(&lab);
    let leaving = on_host(&lab, "kvm0001");
    assert!(leaving.len() >= 2, "{leaving:?}");
    let staying = on_host(&lab, "kvm0002");

    c.enter("kvm0001").await.expect("maintenance");
    let h = c.hypervisor("kvm0001").await.unwrap().unwrap();
    assert_eq!(h.resource_state.as_deref(), Some("Maintenance"));
    assert!(on_host(&lab, "kvm0001").is_empty(), "{:?}", lab.vms());
    for name in &leaving {
        let vm = lab.vm(name).unwrap();
        assert_eq!(vm.state, "Running", "{vm:?}");
        // Same cluster only (migrate.vm.across.clusters is false).
        assert_eq!(vm.host.as_deref(), Some("kvm0002"), "{vm:?}");
        assert_eq!(vm.last_host.as_deref(), Some("kvm0001"), "{vm:?}");
    }
    for name in &staying {
        assert_eq!(lab.vm(name).unwrap().host.as_deref(), Some("kvm0002"));
    }
    let maint: Vec<String> = lab
        .events()
        .into_iter()
        .filter(|e| e.kind == "MAINT.PREPARE")
        .map(|e| e.state)
        .collect();
    assert_eq!(maint, ["Scheduled", "Started", "Completed"]);

    // Cancelling enables the host; nothing moves back.
    c.leave("kvm0001").await.expect("cancel");
    assert_eq!(
        lab.host_resource_state("kvm0001").as_deref(),
        Some("Enabled")
    );
    assert!(on_host(&lab, "kvm0001").is_empty());
    let listed = c
        .list_hosts(&[("type", "Routing"), ("name", "kvm0002")])
        .await
        .unwrap();
    assert_eq!(listed[0].resourcestate.as_deref(), Some("Enabled"));
}

#[tokio::test]
async fn maintenance_without_room_for_the_vms_ends_in_error_in_maintenance() {
    let lab = cloud();
    // The other host of the cluster has no memory to spare.
    lab.set_host_capacity(
        "kvm0002",
        HostCapacity {
            cpus: 32,
            speed: 2400,
            memory_mb: 512,
        },
    );
    let c = client(&lab);
    let before = on_host(&lab, "kvm0001");
    let e = c.enter("kvm0001").await.expect_err("no room");
    assert!(format!("{e:?}").contains("ErrorInMaintenance"), "{e:?}");
    assert_eq!(
        lab.host_resource_state("kvm0001").as_deref(),
        Some("ErrorInMaintenance")
    );
    assert_eq!(
        on_host(&lab, "kvm0001"),
        before,
        "VMs that could not move stay"
    );
    // ErrorInMaintenance can be cancelled.
    c.leave("kvm0001").await.expect("cancel");
}

#[tokio::test]
async fn a_single_host_cluster_cannot_be_prepared_for_maintenance() {
    let lab = cloud();
    lab.add_host("solo", "kvm-solo", "4.20.0.0");
    lab.add_vm("lonely", "Running", Some("kvm-solo"));
    let c = client(&lab);
    let host = c.find_host("kvm-solo").await.unwrap().unwrap();
    let e = job(&c, "prepareHostForMaintenance", &[("id", &host.id)])
        .await
        .expect_err("no other host");
    match e {
        Error::JobFailed { errortext, .. } => {
            assert!(
                errortext.starts_with("Unable to prepare for maintenance host "),
                "{errortext}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The monitor finds the VM still running with nothing pending.
    wait_for("ErrorInMaintenance", || {
        lab.host_resource_state("kvm-solo").as_deref() == Some("ErrorInMaintenance")
    })
    .await;
    assert_eq!(lab.vm("lonely").unwrap().host.as_deref(), Some("kvm-solo"));
}

#[tokio::test]
async fn a_vm_on_local_storage_blocks_maintenance() {
    let lab = cloud();
    let local = on_host(&lab, "kvm0003").remove(0);
    lab.set_local_storage(&local, true);
    let c = client(&lab);
    let host = c.find_host("kvm0003").await.unwrap().unwrap();
    let e = job(&c, "prepareHostForMaintenance", &[("id", &host.id)])
        .await
        .expect_err("local storage");
    assert!(
        format!("{e:?}").contains("There are active VMs using the host's local storage pool"),
        "{e:?}"
    );
    assert_eq!(
        lab.host_resource_state("kvm0003").as_deref(),
        Some("Enabled")
    );
}

#[tokio::test]
async fn routers_need_an_upgrade_after_a_new_template_until_rebooted_onto_it() {
    let lab = cloud();
    let router = lab.add_router("net1", "4.20.0");
    let c = client(&lab);
    let r = &c.list_routers(&[("id", &router)]).await.unwrap()[0];
    assert_eq!(
        (r.version.as_deref(), r.requiresupgrade),
        (Some("4.20.0"), Some(false))
    );

    // The upgrade registers 4.21.0: the router still runs 4.20.0 and says so.
    lab.register_system_template("4.21.0");
    let r = &c.list_routers(&[("id", &router)]).await.unwrap()[0];
    assert_eq!(
        (r.version.as_deref(), r.requiresupgrade),
        (Some("4.20.0"), Some(true))
    );
    let vm = lab.vm(&router).unwrap();
    assert_eq!(vm.template.as_deref(), Some("systemvm-kvm-4.21.0"));
    assert_eq!(vm.booted_template.as_deref(), Some("systemvm-kvm-4.20.0"));

    // A router whose reboot fails to start it again is left Stopped, still on the old
    // template (the stop half of the reboot happened).
    lab.fail_jobs_for(&vm.name, Some("Unable to start router: no capacity"));
    let zone = c.list_zones(&[]).await.unwrap()[0].id.clone();
    let jobs = c
        .call("upgradeRouterTemplate", &[("zoneid", &zone)])
        .await
        .unwrap();
    let jobid = jobs["asyncjobs"][0]["jobid"].as_str().unwrap().to_string();
    let e = c
        .wait_job(&jobid, "rebootRouter", Duration::from_secs(10))
        .await
        .expect_err("injected");
    assert!(format!("{e:?}").contains("no capacity"), "{e:?}");
    let r = &c.list_routers(&[("id", &router)]).await.unwrap()[0];
    assert_eq!(r.state.as_deref(), Some("Stopped"));
    assert_eq!(r.requiresupgrade, Some(true));
    let e = job(&c, "rebootRouter", &[("id", &router)])
        .await
        .expect_err("a stopped router cannot reboot");
    assert!(
        format!("{e:?}").contains("Unable to reboot domR, it is not in right state Stopped"),
        "{e:?}"
    );

    // Started through CloudStack, it boots the new template.
    lab.fail_jobs_for(&vm.name, None);
    job(&c, "startRouter", &[("id", &router)])
        .await
        .expect("start");
    let r = &c.list_routers(&[("id", &router)]).await.unwrap()[0];
    assert_eq!(
        (r.version.as_deref(), r.requiresupgrade),
        (Some("4.21.0"), Some(false))
    );
    // Up to date now: nothing to upgrade.
    let jobs = c
        .call("upgradeRouterTemplate", &[("id", &router)])
        .await
        .unwrap();
    assert_eq!(jobs["count"], 0, "{jobs}");
}

#[tokio::test]
async fn system_vms_keep_their_template_until_cloudstack_stops_and_starts_them() {
    let lab = cloud();
    let c = client(&lab);
    lab.register_system_template("4.21.0");
    let vms = c.list_system_vms(&[]).await.unwrap();
    assert_eq!(vms.len(), 2);
    for v in &vms {
        // The template name is already the new one; the agent still the old.
        assert_eq!(v.templatename.as_deref(), Some("systemvm-kvm-4.21.0"));
        assert_eq!(v.version.as_deref(), Some("4.20.0.0"));
    }
    let ssvm = vms
        .iter()
        .find(|v| v.systemvmtype.as_deref() == Some("secondarystoragevm"))
        .unwrap();
    let cpvm = vms
        .iter()
        .find(|v| v.systemvmtype.as_deref() == Some("consoleproxy"))
        .unwrap();

    // A hypervisor reboot keeps the root disk.
    job(&c, "rebootSystemVm", &[("id", &ssvm.id)])
        .await
        .unwrap();
    let vm = lab.vm(&ssvm.id).unwrap();
    assert_eq!(vm.booted_template.as_deref(), Some("systemvm-kvm-4.20.0"));
    // A CloudStack stop and start recreates it from the new template.
    job(&c, "stopSystemVm", &[("id", &ssvm.id)]).await.unwrap();
    assert_eq!(lab.vm(&ssvm.id).unwrap().state, "Stopped");
    job(&c, "startSystemVm", &[("id", &ssvm.id)]).await.unwrap();
    let vm = lab.vm(&ssvm.id).unwrap();
    assert_eq!(vm.state, "Running");
    assert_eq!(vm.booted_template.as_deref(), Some("systemvm-kvm-4.21.0"));

    // A destroyed CPVM comes back, under a new name, on the new template.
    job(&c, "destroySystemVm", &[("id", &cpvm.id)])
        .await
        .unwrap();
    let old = cpvm.name.clone().unwrap();
    wait_for("a new CPVM Running", || {
        lab.vms().iter().any(|v| {
            v.kind == "ConsoleProxy" && v.state == "Running" && Some(&v.name) != Some(&old)
        })
    })
    .await;
    let new = lab
        .vms()
        .into_iter()
        .find(|v| v.kind == "ConsoleProxy")
        .unwrap();
    assert!(new.name.starts_with("v-") && new.name != old, "{new:?}");
    assert_eq!(new.booted_template.as_deref(), Some("systemvm-kvm-4.21.0"));
}

#[tokio::test]
async fn live_patching_refreshes_a_system_vm_agent_without_a_restart() {
    let lab = cloud();
    lab.set_management_server("ms1", "Up", "4.21.0.0");
    let c = client(&lab);
    let ssvm = c
        .list_system_vms(&[("systemvmtype", "secondarystoragevm")])
        .await
        .unwrap()
        .remove(0);
    job(&c, "patchSystemVm", &[("id", &ssvm.id)]).await.unwrap();
    let after = &c.list_system_vms(&[("id", &ssvm.id)]).await.unwrap()[0];
    assert_eq!(after.version.as_deref(), Some("4.21.0.0"));
    assert_eq!(
        lab.vm(&ssvm.id).unwrap().booted_template,
        lab.vm(&ssvm.id).unwrap().template,
        "no new template was booted"
    );
    // Routers are not system VMs for this command.
    let router = lab.add_router("net1", "4.20.0");
    let e = c
        .call("patchSystemVm", &[("id", &router)])
        .await
        .expect_err("routers are patched through restartNetwork");
    assert!(
        format!("{e:?}").contains("can be used to patch CPVM / SSVM only"),
        "{e:?}"
    );
}

#[tokio::test]
async fn tenants_keep_changing_the_cloud_through_the_api() {
    let lab = cloud();
    let mut options = TenantOptions::default();
    options.interval = Duration::from_millis(30);
    let actor = lab.start_tenants(options).expect("tenants");
    let deadline = Instant::now() + Duration::from_secs(20);
    while actor.changes().iter().filter(|c| c.ok).count() < 6 {
        assert!(Instant::now() < deadline, "{:?}", actor.changes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let changes = actor.stop();
    let c = client(&lab);
    let listed = c.list_virtual_machines(&[]).await.unwrap();
    for change in changes.iter().filter(|c| c.ok && c.action == "deploy") {
        assert!(
            listed
                .iter()
                .any(|v| v.name.as_deref() == Some(change.vm.as_str()))
                || changes
                    .iter()
                    .any(|d| d.action == "destroy" && d.vm == change.vm),
            "{change:?} not listed"
        );
    }
    let kinds: Vec<String> = lab.events().into_iter().map(|e| e.kind).collect();
    for change in changes.iter().filter(|c| c.ok) {
        let kind = match change.action.as_str() {
            "deploy" => "VM.CREATE",
            "start" => "VM.START",
            "stop" => "VM.STOP",
            _ => "VM.DESTROY",
        };
        assert!(kinds.iter().any(|k| k == kind), "{change:?}: {kinds:?}");
    }
}

#[tokio::test]
async fn without_a_management_server_up_there_is_no_api() {
    let lab = cloud();
    lab.require_management_server(true);
    let c = client(&lab);
    c.list_zones(&[]).await.expect("served");
    lab.set_management_server("ms1", "Down", "4.20.0.0");
    let e = c.list_zones(&[]).await.expect_err("no server");
    assert!(format!("{e:?}").contains("503"), "{e:?}");
    assert!(!lab.is_serving());
    lab.set_management_server("ms1", "Up", "4.21.0.0");
    let caps = c.list_capabilities().await.expect("served again");
    assert_eq!(caps.cloudstackversion.as_deref(), Some("4.21.0.0"));
}
