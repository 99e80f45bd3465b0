//! The lab's simulated management server against the CloudStack behaviour it follows, through
//! the project's own API client: maintenance that live-migrates VMs (or ends in
//! ErrorInMaintenance), system VMs and routers that keep their template until CloudStack
//! restarts them, tenants that keep changing the cloud, and an API that is only there while a
//! management server runs. The endpoint here is a bare one (no database, no nodes); the same
//! behaviours with the database and the hypervisors are in `lab_cloud.rs`.

use std::time::{Duration, Instant};

use cs_api::{Client, ClientConfig, Credentials, Error, JobPolicy, RetryPolicy};
use cs_core::{HostMaintenance, HostStatus};
use cs_lab::{CloudSpec, HostCapacity, LabApi, TenantOptions, Timings};

fn client(lab: &LabApi) -> Client {
    let config = ClientConfig::default()
        .timeout(Duration::from_secs(5))
        .retry(
            RetryPolicy::default()
                .retries(0)
                .initial_backoff(Duration::from_millis(10))
                .max_backoff(Duration::from_millis(50)),
        )
        .job(
            JobPolicy::default()
                .initial_interval(Duration::from_millis(20))
                .max_interval(Duration::from_millis(50))
                .deadline(Duration::from_secs(10)),
        );
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

// ------------------------------------------------------------------------------ templates

const SYSVM_URL: &str =
    "https://download.cloudstack.org/systemvm/4.21/systemvmtemplate-4.21.0-x86_64-kvm.qcow2.bz2";

/// The id of guest OS type `name` (`listOsTypes description=`).
async fn os_type(c: &Client, name: &str) -> String {
    let v = c
        .call("listOsTypes", &[("description", name)])
        .await
        .expect("listOsTypes");
    v["ostype"]
        .as_array()
        .and_then(|l| l.iter().find(|o| o["description"] == name))
        .and_then(|o| o["id"].as_str())
        .unwrap_or_else(|| panic!("no OS type {name}: {v}"))
        .to_string()
}

/// `registerTemplate`'s parameters for a system VM template as the upgrade guide has them.
fn registration<'a>(
    name: &'a str,
    zone: &'a str,
    os: &'a str,
    url: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("displaytext", name),
        ("url", url),
        ("zoneid", zone),
        ("hypervisor", "KVM"),
        ("format", "QCOW2"),
        ("ostypeid", os),
        ("isextractable", "false"),
        ("passwordenabled", "false"),
        ("ispublic", "false"),
        ("isfeatured", "false"),
        ("isrouting", "false"),
    ]
}

/// `(errorcode, cserrorcode, errortext)` of a refused call.
fn refusal(e: Error) -> (u16, Option<u32>, String) {
    match e {
        Error::Api {
            errorcode,
            cserrorcode,
            errortext,
            ..
        } => (errorcode, cserrorcode, errortext),
        other => panic!("not an API error: {other:?}"),
    }
}

/// `registerTemplate` with `base` less `key`, or with `key` set to `value`; it must be refused.
async fn refused(
    c: &Client,
    base: &[(&str, &str)],
    key: &str,
    value: Option<&str>,
) -> (u16, Option<u32>, String) {
    let mut p: Vec<(&str, &str)> = base.iter().copied().filter(|(k, _)| *k != key).collect();
    if let Some(v) = value {
        p.push((key, v));
    }
    refusal(c.call("registerTemplate", &p).await.expect_err("refused"))
}

/// The entries `listTemplates templatefilter=all id=<id>` gives.
async fn listed(c: &Client, id: &str) -> Vec<serde_json::Value> {
    let v = c
        .call("listTemplates", &[("templatefilter", "all"), ("id", id)])
        .await
        .expect("listTemplates");
    v["template"].as_array().cloned().unwrap_or_default()
}

/// Polls the template until every zone's copy is Ready (or `status` says an error), and
/// returns the statuses seen.
async fn watch_download(
    c: &Client,
    id: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let entries = listed(c, id).await;
        assert!(!entries.is_empty(), "template {id} not listed");
        let status = entries[0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        if entries.iter().all(&until) {
            return seen;
        }
        assert!(Instant::now() < deadline, "timed out; statuses {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn register_template_refuses_what_cloudstack_refuses() {
    let lab = cloud();
    let c = client(&lab);
    let zone = c.list_zones(&[]).await.unwrap()[0].id.clone();
    let os = os_type(&c, "Debian GNU/Linux 11 (64-bit)").await;
    let name = "systemvm-kvm-4.21.0";
    let base = registration(name, &zone, &os, SYSVM_URL);
    let without = |key: &'static str| refused(&c, &base, key, None);
    let with = |key: &'static str, value: &'static str| refused(&c, &base, key, Some(value));

    // ParamProcessWorker: a required parameter missing.
    assert_eq!(
        without("name").await,
        (
            431,
            Some(4350),
            "Unable to execute API command registertemplate due to missing parameter name".into()
        )
    );
    // An OS type that does not exist.
    let unknown = "0d6f5b5e-1111-4222-8333-444455556666";
    assert_eq!(
        with("ostypeid", unknown).await,
        (
            431,
            Some(9999),
            format!(
                "Unable to execute API command registertemplate due to invalid value. Invalid \
                 parameter ostypeid value={unknown} due to incorrect long value format, or entity \
                 does not exist or due to incorrect parameter annotation for the field in api cmd \
                 class."
            )
        )
    );
    // RegisterTemplateCmd.validateParameters.
    assert_eq!(
        without("ostypeid").await,
        (431, Some(9999), "Please provide a guest OS type".into())
    );
    assert_eq!(
        without("zoneid").await,
        (
            431,
            Some(9999),
            "Either zoneid or zoneids is required. Both cannot be null.".into()
        )
    );
    // TemplateAdapterBase.prepare and UriUtils.validateUrl.
    let ftp =
        "ftp://download.cloudstack.org/systemvm/4.21/systemvmtemplate-4.21.0-x86_64-kvm.qcow2.bz2";
    assert_eq!(
        with("url", ftp).await,
        (
            431,
            Some(9999),
            format!("Unsupported scheme for url: {ftp}")
        )
    );
    assert_eq!(
        with("url", "file:///srv/systemvm.qcow2").await,
        (
            431,
            Some(4350),
            "File:// type urls are currently unsupported".into()
        )
    );
    assert_eq!(
        with("url", "http://127.0.0.1/systemvm.qcow2").await.2,
        "Illegal host specified in url"
    );
    assert_eq!(
        with("url", "https://images.example.org/systemvm.vhd")
            .await
            .2,
        "Please specify a valid URL. URL:/systemvm.vhd is an invalid for the format qcow2"
    );
    let (code, _, text) = with("format", "QCOW3").await;
    assert_eq!(code, 431);
    assert!(
        text.starts_with("Image format: QCOW3 is incorrect. Supported formats are [QCOW2, RAW,"),
        "{text}"
    );
    let (code, cs, text) = with("hypervisor", "kvm2").await;
    assert_eq!((code, cs), (431, Some(4350)));
    assert!(
        text.starts_with(
            "Hypervisor Type: kvm2 is invalid. Supported Hypervisor types are [XenServer, KVM,"
        ),
        "{text}"
    );
    // The name of a SYSTEM template is reserved.
    assert_eq!(
        with("name", "systemvm-kvm-4.20.0").await,
        (
            431,
            Some(9999),
            "Cannot use reserved names for templates".into()
        )
    );

    // Nothing was registered, no event written.
    let v = c
        .call("listTemplates", &[("templatefilter", "self")])
        .await
        .unwrap();
    assert!(v.get("template").is_none(), "{v}");
    assert!(
        !lab.events().iter().any(|e| e.kind == "TEMPLATE.CREATE"),
        "{:?}",
        lab.events()
    );
}

#[tokio::test]
async fn a_registered_template_downloads_and_is_listed_as_cloudstack_lists_it() {
    let lab = cloud();
    let c = client(&lab);
    let zone = c.list_zones(&[]).await.unwrap()[0].id.clone();
    let os = os_type(&c, "Debian GNU/Linux 11 (64-bit)").await;
    let name = "systemvm-kvm-4.21.0";
    let mut p = registration(name, &zone, &os, SYSVM_URL);
    // Cross-zone: every zone.
    p.retain(|(k, _)| *k != "zoneid");
    p.push(("zoneids", "-1"));
    let reply = c.call("registerTemplate", &p).await.expect("registered");
    assert_eq!(reply["count"], 1, "{reply}");
    let t = &reply["template"][0];
    let id = t["id"].as_str().expect("id").to_string();
    assert_eq!(t["name"], name);
    assert_eq!(t["displaytext"], name);
    assert_eq!(t["templatetype"], "USER", "{t}");
    assert_eq!(t["hypervisor"], "KVM");
    assert_eq!(t["format"], "QCOW2");
    assert_eq!(t["ostypeid"], os.as_str());
    assert_eq!(t["ostypename"], "Debian GNU/Linux 11 (64-bit)");
    assert_eq!(t["zoneid"], zone.as_str());
    assert_eq!(t["crossZones"], true);
    assert_eq!(t["account"], "admin");
    assert_eq!(t["isready"], false);
    assert_eq!(t["ispublic"], false);
    assert_eq!(t["isfeatured"], false);
    assert_eq!(t["isextractable"], false);
    assert_eq!(t["passwordenabled"], false);
    assert_eq!(t["url"], SYSVM_URL);
    // No DownloadAnswer yet: getTemplateStatus falls back to the template's state.
    assert_eq!(t["status"], "Active", "{t}");
    assert!(t.get("size").is_none(), "{t}");

    let seen = watch_download(&c, &id, |e| e["isready"] == true).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("Download Complete"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.ends_with("% Downloaded")),
        "no progress seen: {seen:?}"
    );
    assert!(seen.iter().any(|s| s == "Installing Template"), "{seen:?}");
    let entries = listed(&c, &id).await;
    assert_eq!(entries.len(), 1, "one entry per zone: {entries:?}");
    assert_eq!(entries[0]["size"], 5_368_709_120_u64);
    assert_eq!(entries[0]["templatetype"], "USER");

    // Listed for its owner and with `all`, not as featured; the SYSTEM template shows its type.
    let featured = c
        .call(
            "listTemplates",
            &[("templatefilter", "featured"), ("name", name)],
        )
        .await
        .unwrap();
    assert!(featured.get("template").is_none(), "{featured}");
    let mine = c
        .call(
            "listTemplates",
            &[("templatefilter", "self"), ("keyword", "4.21")],
        )
        .await
        .unwrap();
    assert_eq!(mine["count"], 1, "{mine}");
    let system = c
        .call(
            "listTemplates",
            &[("templatefilter", "all"), ("name", "systemvm-kvm-4.20.0")],
        )
        .await
        .unwrap();
    assert_eq!(system["template"][0]["templatetype"], "SYSTEM", "{system}");
    assert_eq!(system["template"][0]["status"], "Download Complete");

    let events: Vec<_> = lab
        .events()
        .into_iter()
        .filter(|e| e.kind == "TEMPLATE.CREATE")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].state.as_str(), events[0].level.as_str()),
        ("Completed", "INFO")
    );
    assert!(
        events[0]
            .description
            .starts_with("Successfully completed creating template. Id: ")
            && events[0].description.ends_with(&format!(" name: {name}")),
        "{events:?}"
    );

    // Registered ahead of an upgrade, it is not used for new system VMs: a recreated CPVM
    // comes back on the template `router.template.kvm` names.
    let cpvm = c
        .list_system_vms(&[("systemvmtype", "consoleproxy")])
        .await
        .unwrap()
        .remove(0);
    job(&c, "destroySystemVm", &[("id", &cpvm.id)])
        .await
        .unwrap();
    wait_for("a new CPVM Running", || {
        lab.vms()
            .iter()
            .any(|v| v.kind == "ConsoleProxy" && v.state == "Running" && v.id != cpvm.id)
    })
    .await;
    let new = lab
        .vms()
        .into_iter()
        .find(|v| v.kind == "ConsoleProxy")
        .unwrap();
    assert_eq!(new.booted_template.as_deref(), Some("systemvm-kvm-4.20.0"));
}

#[tokio::test]
async fn a_failing_download_ends_with_its_error_as_the_status() {
    let lab = cloud();
    let c = client(&lab);
    let zone = c.list_zones(&[]).await.unwrap()[0].id.clone();
    let os = os_type(&c, "Debian GNU/Linux 11 (64-bit)").await;
    let error = " HTTP Server returned 404 (expected 200 OK) ";
    assert_eq!(cs_lab::TEMPLATE_DOWNLOAD_ERROR, error);
    lab.fail_template_downloads(Some("Failed to download: lab says no"));
    let p = registration("systemvm-kvm-4.21.0", &zone, &os, SYSVM_URL);
    let reply = c.call("registerTemplate", &p).await.expect("registered");
    let id = reply["template"][0]["id"].as_str().unwrap().to_string();
    let seen = watch_download(&c, &id, |e| {
        e["status"] == "Failed to download: lab says no"
    })
    .await;
    assert!(!seen.iter().any(|s| s == "Download Complete"), "{seen:?}");
    lab.fail_template_downloads(None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = &listed(&c, &id).await[0];
    assert_eq!(e["isready"], false, "{e}");
    assert_eq!(
        e["status"], "Failed to download: lab says no",
        "failed stays failed"
    );
    assert_eq!(
        e["downloaddetails"][0]["downloadState"], "DOWNLOAD_ERROR",
        "{e}"
    );
}

#[tokio::test]
async fn downloads_wait_for_a_running_secondary_storage_vm() {
    let lab = cloud();
    let c = client(&lab);
    let zone = c.list_zones(&[]).await.unwrap()[0].id.clone();
    let os = os_type(&c, "Debian GNU/Linux 11 (64-bit)").await;
    let ssvm = c
        .list_system_vms(&[("systemvmtype", "secondarystoragevm")])
        .await
        .unwrap()
        .remove(0);
    job(&c, "stopSystemVm", &[("id", &ssvm.id)]).await.unwrap();
    let p = registration(
        "debian-12-cloud",
        &zone,
        &os,
        "https://cloud.example.org/debian-12.qcow2",
    );
    let reply = c.call("registerTemplate", &p).await.expect("registered");
    let id = reply["template"][0]["id"].as_str().unwrap().to_string();
    // Three times the download's length: nothing moves.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let e = &listed(&c, &id).await[0];
    assert_eq!(
        (e["status"].as_str(), e["isready"].as_bool()),
        (Some("Active"), Some(false)),
        "{e}"
    );
    assert_eq!(e["downloaddetails"][0]["downloadPercent"], "0", "{e}");
    job(&c, "startSystemVm", &[("id", &ssvm.id)]).await.unwrap();
    let seen = watch_download(&c, &id, |e| e["isready"] == true).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("Download Complete"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn list_templates_needs_a_template_filter_and_os_types_are_listed() {
    let lab = cloud();
    let c = client(&lab);
    let (code, cs, text) = refusal(c.call("listTemplates", &[]).await.expect_err("refused"));
    assert_eq!(
        (code, cs, text.as_str()),
        (
            431,
            Some(4350),
            "Unable to execute API command listtemplates due to missing parameter templatefilter"
        )
    );
    let (code, _, text) = refusal(
        c.call("listTemplates", &[("templatefilter", "All")])
            .await
            .expect_err("refused"),
    );
    assert_eq!(code, 431);
    assert_eq!(
        text,
        "No enum constant com.cloud.template.VirtualMachineTemplate.TemplateFilter.All"
    );

    let debian = c
        .call("listOsTypes", &[("keyword", "Debian GNU/Linux 1")])
        .await
        .unwrap();
    let names: Vec<&str> = debian["ostype"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["description"].as_str())
        .collect();
    assert!(names.contains(&"Debian GNU/Linux 11 (64-bit)"), "{names:?}");
    assert!(names.contains(&"Debian GNU/Linux 10 (64-bit)"), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "ordered by display name");
    let one = &debian["ostype"][0];
    assert_eq!(one["oscategoryname"], "Debian", "{one}");
    let by_id = c
        .call("listOsTypes", &[("id", one["id"].as_str().unwrap())])
        .await
        .unwrap();
    assert_eq!(by_id["count"], 1);
    let (code, cs, _) = refusal(
        c.call(
            "listOsTypes",
            &[("id", "0d6f5b5e-1111-4222-8333-444455556666")],
        )
        .await
        .expect_err("refused"),
    );
    assert_eq!((code, cs), (431, Some(9999)));
}

/// `(errorcode, errortext)` of a failed job.
fn job_failure(e: Error) -> (u16, String) {
    match e {
        Error::JobFailed {
            errorcode,
            errortext,
            ..
        } => (errorcode, errortext),
        other => panic!("not a failed job: {other:?}"),
    }
}

/// `(state, level, description)` of the `TEMPLATE.DELETE` events, oldest first.
fn delete_events(lab: &LabApi) -> Vec<(String, String, String)> {
    lab.events()
        .into_iter()
        .filter(|e| e.kind == "TEMPLATE.DELETE")
        .map(|e| (e.state, e.level, e.description))
        .collect()
}

#[tokio::test]
async fn a_failed_download_is_deleted_and_its_name_registered_again() {
    let lab = cloud();
    let c = client(&lab);
    let zone = c.list_zones(&[]).await.unwrap()[0].id.clone();
    let os = os_type(&c, "Debian GNU/Linux 11 (64-bit)").await;
    let name = "systemvm-kvm-4.21.0";
    lab.fail_template_downloads(Some(cs_lab::TEMPLATE_DOWNLOAD_ERROR));
    let p = registration(name, &zone, &os, SYSVM_URL);
    let reply = c.call("registerTemplate", &p).await.expect("registered");
    let id = reply["template"][0]["id"].as_str().unwrap().to_string();
    watch_download(&c, &id, |e| e["status"] == cs_lab::TEMPLATE_DOWNLOAD_ERROR).await;
    lab.fail_template_downloads(None);

    // The job takes the secondary storage VM's time, then answers success.
    let started = Instant::now();
    let result = job(&c, "deleteTemplate", &[("id", &id)])
        .await
        .expect("deleted");
    assert_eq!(result["success"], true, "{result}");
    assert!(
        started.elapsed() >= Timings::default().template_delete,
        "deleted in {:?}",
        started.elapsed()
    );
    // Gone from listTemplates: its id still translates (removed templates do), nothing listed.
    assert!(listed(&c, &id).await.is_empty());
    let mine = c
        .call(
            "listTemplates",
            &[("templatefilter", "self"), ("name", name)],
        )
        .await
        .unwrap();
    assert!(mine.get("template").is_none(), "{mine}");
    assert_eq!(
        delete_events(&lab),
        vec![
            (
                "Scheduled".into(),
                "INFO".into(),
                format!("Deleting template {id}")
            ),
            (
                "Started".into(),
                "INFO".into(),
                format!("deleting template. Template Id: {id}")
            ),
            (
                "Completed".into(),
                "INFO".into(),
                format!("Successfully completed deleting template. Template Id: {id}")
            ),
        ]
    );
    // Deleting it again: the job finds no template (`findById` skips removed ones).
    let (code, text) = job_failure(
        job(&c, "deleteTemplate", &[("id", &id)])
            .await
            .expect_err("already deleted"),
    );
    assert_eq!(code, 431);
    assert!(
        text.starts_with("unable to find template with id "),
        "{text}"
    );

    // The name is free: registered again, it downloads to Ready.
    let reply = c
        .call("registerTemplate", &p)
        .await
        .expect("registered again");
    let again = reply["template"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(again, id);
    let seen = watch_download(&c, &again, |e| e["isready"] == true).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("Download Complete"),
        "{seen:?}"
    );
    let listed_by_name = c
        .call(
            "listTemplates",
            &[("templatefilter", "self"), ("name", name)],
        )
        .await
        .unwrap();
    assert_eq!(listed_by_name["count"], 1, "{listed_by_name}");
    assert_eq!(listed_by_name["template"][0]["id"], again.as_str());
}

#[tokio::test]
async fn delete_template_refuses_what_cloudstack_refuses() {
    let lab = cloud();
    let c = client(&lab);
    // ParamProcessWorker, before any job.
    let (code, cs, text) = refusal(c.call("deleteTemplate", &[]).await.expect_err("refused"));
    assert_eq!(
        (code, cs, text.as_str()),
        (
            431,
            Some(4350),
            "Unable to execute API command deletetemplate due to missing parameter id"
        )
    );
    let unknown = "0d6f5b5e-1111-4222-8333-444455556666";
    let (code, cs, text) = refusal(
        c.call("deleteTemplate", &[("id", unknown)])
            .await
            .expect_err("refused"),
    );
    assert_eq!((code, cs), (431, Some(9999)));
    assert_eq!(
        text,
        format!(
            "Unable to execute API command deletetemplate due to invalid value. Invalid parameter \
             id value={unknown} due to incorrect long value format, or entity does not exist or \
             due to incorrect parameter annotation for the field in api cmd class."
        )
    );
    assert!(delete_events(&lab).is_empty(), "no job, no event");

    // The SYSTEM template the system VMs run: in use, then (forced) SYSTEM.
    let system = c
        .call(
            "listTemplates",
            &[("templatefilter", "all"), ("name", "systemvm-kvm-4.20.0")],
        )
        .await
        .unwrap();
    let sys_id = system["template"][0]["id"].as_str().unwrap().to_string();
    let (code, text) = job_failure(
        job(&c, "deleteTemplate", &[("id", &sys_id)])
            .await
            .expect_err("in use"),
    );
    assert_eq!(code, 431);
    assert!(
        text.starts_with(
            "Unable to delete template with id: 1020 because VM instances: [VM instance {"
        ) && text.ends_with("}] are using it."),
        "{text}"
    );
    for v in lab.vms().iter().filter(|v| v.kind != "User") {
        assert!(
            text.contains(&format!("\"instanceName\":\"{}\"", v.instance_name)),
            "{text}"
        );
    }
    let (code, text) = job_failure(
        job(&c, "deleteTemplate", &[("id", &sys_id), ("forced", "true")])
            .await
            .expect_err("system"),
    );
    assert_eq!(
        (code, text.as_str()),
        (
            431,
            "Could not delete template as it is a SYSTEM template and isSystem is set to false."
        )
    );
    // Before 4.20 (no `issystem`): the DomR template.
    lab.set_management_server("ms1", "Up", "4.19.0.0");
    let (code, text) = job_failure(
        job(
            &c,
            "deleteTemplate",
            &[("id", &sys_id), ("forced", "true"), ("issystem", "true")],
        )
        .await
        .expect_err("system"),
    );
    assert_eq!(
        (code, text.as_str()),
        (431, "The DomR template cannot be deleted.")
    );
    lab.set_management_server("ms1", "Up", "4.20.0.0");
    assert_eq!(listed(&c, &sys_id).await.len(), 1, "still there");

    // A download in progress is not stopped: the delete is refused and the download goes on.
    let zone = c.list_zones(&[]).await.unwrap()[0].id.clone();
    let os = os_type(&c, "Debian GNU/Linux 11 (64-bit)").await;
    let p = registration("systemvm-kvm-4.21.0", &zone, &os, SYSVM_URL);
    let reply = c.call("registerTemplate", &p).await.expect("registered");
    let id = reply["template"][0]["id"].as_str().unwrap().to_string();
    watch_download(&c, &id, |e| {
        e["status"]
            .as_str()
            .is_some_and(|s| s.ends_with("% Downloaded"))
    })
    .await;
    let (code, text) = job_failure(
        job(&c, "deleteTemplate", &[("id", &id)])
            .await
            .expect_err("downloading"),
    );
    assert_eq!(
        (code, text.as_str()),
        (
            530,
            "Please specify a template that is not currently being downloaded."
        )
    );
    let seen = watch_download(&c, &id, |e| e["isready"] == true).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("Download Complete"),
        "{seen:?}"
    );

    // Each refused job ended its action event in an error.
    let events = delete_events(&lab);
    let errors: Vec<_> = events.iter().filter(|e| e.0 == "Completed").collect();
    assert_eq!(errors.len(), 4, "{events:?}");
    assert!(
        errors.iter().all(|e| e.1 == "ERROR"
            && e.2
                .starts_with("Error while deleting template. Template Id: ")),
        "{events:?}"
    );
}
