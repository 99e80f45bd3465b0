//! A whole lab cloud as CloudStack behaves where an upgrade depends on it, through the
//! project's API client, the lab's database and its nodes: maintenance live-migrates VMs (the
//! rows and the guests move, the events are written); tenants change the cloud through the API
//! (listed, and in the `event` table); after the management servers are upgraded, routers say
//! `requiresupgrade` until `upgradeRouterTemplate`, system VMs keep their old agent, and a
//! destroyed SSVM comes back on the new template; with no management server up, there is no API.

use std::time::{Duration, Instant};

use cs_api::{Client, ClientConfig, Credentials};
use cs_core::{Cmd, CsVersion, HostExt, HostMaintenance, error_chain};
use cs_lab::{DbUrlExt, Lab, MgmtStartup, TenantOptions};
use mysql::prelude::Queryable;

fn client(lab: &Lab) -> Client {
    Client::new(
        &lab.api().endpoint(),
        Credentials::api_key(lab.api().api_key(), lab.api().secret_key().clone()),
        ClientConfig::default(),
    )
    .expect("client")
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(name, host_id, last_host_id, state)` of the user VMs, from the database.
fn vm_rows(lab: &Lab) -> Vec<(String, Option<u64>, Option<u64>, String)> {
    let mut conn = lab.db_url().connect().expect("connect");
    conn.query(format!(
        "SELECT `name`, `host_id`, `last_host_id`, `state` FROM `{}`.`vm_instance` \
         WHERE `type` = 'User' AND `removed` IS NULL ORDER BY `id`",
        lab.cloud_schema()
    ))
    .expect("vm rows")
}

fn host_id(lab: &Lab, name: &str) -> u64 {
    let mut conn = lab.db_url().connect().expect("connect");
    conn.exec_first(
        format!(
            "SELECT `id` FROM `{}`.`host` WHERE `name` = ?",
            lab.cloud_schema()
        ),
        (name,),
    )
    .expect("host id")
    .expect("the host has a row")
}

/// Upgrades the packages of every management server to `v` the way an operator does (the
/// repository line, the index, an exact install of what is installed), then starts them: the
/// first migrates the schema.
async fn upgrade_management_servers(lab: &Lab, v: &CsVersion) {
    for m in lab.management_servers() {
        for unit in [cs_lab::USAGE_UNIT, cs_lab::MANAGEMENT_UNIT] {
            if m.installed(unit).is_some() {
                tokio::task::block_in_place(|| m.systemctl("stop", unit)).expect("stop");
            }
        }
    }
    for m in lab.management_servers() {
        let list = m.root().join("etc/apt/sources.list.d/cloudstack.list");
        let text = std::fs::read_to_string(&list).expect("repo file");
        std::fs::write(&list, text.replace(" 4.18\n", &format!(" {}\n", v.line())))
            .expect("write the repo file");
        let host = m.local_host();
        host.run_ok(&Cmd::new("apt-get").arg("update"))
            .await
            .expect("apt-get update");
        let mut install = Cmd::new("apt-get").arg("install").arg("-y");
        for p in cs_lab::MGMT_PACKAGES {
            if m.installed(p).is_some() {
                install = install.arg(format!("{p}={v}"));
            }
        }
        host.run_ok(&install).await.expect("apt-get install");
    }
    for m in lab.management_servers() {
        tokio::task::block_in_place(|| m.systemctl("start", cs_lab::MANAGEMENT_UNIT))
            .expect("start");
        let startup = m
            .wait_settled(Duration::from_secs(60))
            .await
            .expect("settled");
        assert_eq!(startup, MgmtStartup::Up(v.to_string()), "{}", m.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_cloud_behaves_as_cloudstack_does() {
    let target: CsVersion = "4.19.0.0".parse().expect("version");
    let lab = tokio::task::spawn_blocking(|| {
        Lab::builder()
            .name("lab_cloud")
            .kvm_hosts(4)
            .hosts_per_cluster(2)
            .vms(6)
            .start()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let c = client(&lab);

    // The database is the cloud: every VM's row says where it runs, and its guest runs there.
    for v in lab.api().vms().iter().filter(|v| v.state == "Running") {
        let host = v.host.as_deref().expect("placed");
        let node = lab
            .kvm_hosts()
            .iter()
            .find(|h| h.name() == host)
            .expect("node");
        assert!(node.domains().contains(&v.instance_name), "{v:?}");
    }
    // The usage server runs on the first management server only.
    assert!(lab.management_servers()[0].has_usage());
    assert!(!lab.management_servers()[1].has_usage());

    // 1. Maintenance of kvm1 live-migrates its VMs to kvm2, the other host of its cluster.
    let (kvm1, kvm2) = (host_id(&lab, "kvm1"), host_id(&lab, "kvm2"));
    let leaving: Vec<String> = vm_rows(&lab)
        .into_iter()
        .filter(|r| r.1 == Some(kvm1))
        .map(|r| r.0)
        .collect();
    assert!(!leaving.is_empty());
    c.enter("kvm1").await.expect("maintenance");
    lab.sync();
    for (name, host, last, state) in vm_rows(&lab) {
        if leaving.contains(&name) {
            assert_eq!(
                (host, last, state.as_str()),
                (Some(kvm2), Some(kvm1), "Running"),
                "{name}"
            );
        }
    }
    assert!(
        lab.kvm_hosts()[0].domains().is_empty(),
        "guests left on kvm1"
    );
    let mut conn = lab.db_url().connect().expect("connect");
    let maint: Vec<String> = conn
        .query(format!(
            "SELECT `state` FROM `{}`.`event` WHERE `type` = 'MAINT.PREPARE' ORDER BY `id`",
            lab.cloud_schema()
        ))
        .expect("events");
    assert_eq!(maint, ["Scheduled", "Started", "Completed"]);
    c.leave("kvm1").await.expect("cancel");
    assert!(
        lab.kvm_hosts()[0].domains().is_empty(),
        "nothing moves back"
    );

    // 2. Tenants: their changes are listed and in the event table.
    let mut options = TenantOptions::default();
    options.interval = Duration::from_millis(50);
    options.own_vms_only = true;
    let actor = lab.start_tenants(options).expect("tenants");
    wait_for("tenant changes", 30, || {
        actor.changes().iter().filter(|c| c.ok).count() >= 4
    })
    .await;
    let changes = actor.stop();
    let listed = c
        .list_virtual_machines(&[("listall", "true")])
        .await
        .expect("list");
    for ch in changes.iter().filter(|c| c.ok) {
        let in_db: Option<u64> = conn
            .exec_first(
                format!(
                    "SELECT COUNT(*) FROM `{}`.`event` WHERE `description` LIKE ?",
                    lab.cloud_schema()
                ),
                (format!("%{}%", ch.vm_id),),
            )
            .expect("count");
        assert!(in_db.unwrap_or(0) > 0, "{ch:?} wrote no event");
        let destroyed = changes
            .iter()
            .any(|d| d.vm == ch.vm && d.action == "destroy" && d.ok);
        if ch.action == "deploy" && !destroyed {
            assert!(listed.iter().any(|v| v.id == ch.vm_id), "{ch:?} not listed");
        }
    }

    // 3. The management servers upgraded: routers and system VMs are not.
    tokio::task::block_in_place(|| lab.prepare_upgrade(&target, false)).expect("prepare");
    upgrade_management_servers(&lab, &target).await;
    let routers_upgraded = |c: &Client| {
        let c = c.clone();
        async move { c.list_routers(&[]).await.expect("routers") }
    };
    wait_for("the new template in the cloud", 10, || {
        lab.api()
            .config("minreq.sysvmtemplate.version")
            .is_some_and(|v| v == "4.19.0")
    })
    .await;
    let routers = routers_upgraded(&c).await;
    assert!(!routers.is_empty());
    for r in &routers {
        assert_eq!(
            (r.version.as_deref(), r.requiresupgrade),
            (Some("4.18.0"), Some(true)),
            "{r:?}"
        );
    }
    for s in c.list_system_vms(&[]).await.expect("system VMs") {
        assert_eq!(
            s.templatename.as_deref(),
            Some("systemvm-kvm-4.19.0"),
            "{s:?}"
        );
        assert_eq!(s.version.as_deref(), Some("4.18.0.0"), "{s:?}");
    }
    let zone = c.list_zones(&[]).await.expect("zones")[0].id.clone();
    let jobs = c
        .call("upgradeRouterTemplate", &[("zoneid", &zone)])
        .await
        .expect("upgradeRouterTemplate");
    for j in jobs["asyncjobs"].as_array().expect("jobs") {
        c.wait_job(
            j["jobid"].as_str().expect("jobid"),
            "rebootRouter",
            Duration::from_secs(30),
        )
        .await
        .expect("router reboot");
    }
    for r in routers_upgraded(&c).await {
        assert_eq!(
            (r.version.as_deref(), r.requiresupgrade),
            (Some("4.19.0"), Some(false)),
            "{r:?}"
        );
    }

    // 4. A destroyed SSVM comes back under a new name, on the new template.
    let ssvm = c
        .list_system_vms(&[("systemvmtype", "secondarystoragevm")])
        .await
        .expect("ssvm")
        .remove(0);
    c.call_async("destroySystemVm", &[("id", &ssvm.id)])
        .await
        .expect("destroy");
    wait_for("a new SSVM", 30, || {
        lab.api()
            .vms()
            .iter()
            .any(|v| v.kind == "SecondaryStorageVm" && v.state == "Running" && v.id != ssvm.id)
    })
    .await;
    let new = lab
        .api()
        .vms()
        .into_iter()
        .find(|v| v.kind == "SecondaryStorageVm")
        .expect("ssvm");
    assert_ne!(Some(new.name.as_str()), ssvm.name.as_deref());
    assert_eq!(new.booted_template.as_deref(), Some("systemvm-kvm-4.19.0"));
    // Its agent comes from its host's systemvm.iso, still 4.18 there.
    assert_eq!(new.agent_version.as_deref(), Some("4.18.0.0"));

    // 5. No management server Up, no API.
    for m in lab.management_servers() {
        tokio::task::block_in_place(|| m.systemctl("stop", cs_lab::MANAGEMENT_UNIT)).expect("stop");
    }
    wait_for("the API to go", 10, || !lab.api().is_serving()).await;
    let e = c.list_zones(&[]).await.expect_err("no server");
    assert!(format!("{e:?}").contains("503"), "{e:?}");
}

/// The first row of a query on the cloud database (`{c}` is its schema).
/// The id of the "Debian GNU/Linux 11 (64-bit)" OS type, as `listOsTypes` gives it.
async fn debian_11(c: &Client) -> String {
    c.call(
        "listOsTypes",
        &[("description", "Debian GNU/Linux 11 (64-bit)")],
    )
    .await
    .expect("listOsTypes")["ostype"][0]["id"]
        .as_str()
        .expect("Debian 11")
        .to_string()
}

fn db_value<T: mysql::prelude::FromRow>(lab: &Lab, sql: &str) -> Option<T> {
    let mut conn = lab.db_url().connect().expect("connect");
    conn.query_first(sql.replace("{c}", lab.cloud_schema()))
        .expect("query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_registered_system_vm_template_is_what_the_upgrade_uses() {
    let target: CsVersion = "4.19.0.0".parse().expect("version");
    let lab = tokio::task::spawn_blocking(|| {
        Lab::builder()
            .name("lab_tmpl")
            .management_servers(1)
            .kvm_hosts(2)
            .hosts_per_cluster(2)
            .vms(2)
            .register_hop_templates(false)
            .start()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let c = client(&lab);
    let name = "systemvm-kvm-4.19.0";
    let count = |sql: &str| db_value::<u64>(&lab, sql).unwrap_or(0);

    // Nothing registered ahead: not at start, not by prepare_upgrade.
    let registered = format!(
        "SELECT COUNT(*) FROM `{{c}}`.`vm_template` WHERE `name` = '{name}' AND `removed` IS NULL"
    );
    assert_eq!(count(&registered), 0);
    tokio::task::block_in_place(|| lab.prepare_upgrade(&target, false)).expect("prepare");
    assert_eq!(count(&registered), 0);

    // The operator registers it as the upgrade guide says.
    let os = debian_11(&c).await;
    let url = "https://download.cloudstack.org/systemvm/4.19/systemvmtemplate-4.19.0-kvm.qcow2.bz2";
    let params = [
        ("name", name),
        ("displaytext", name),
        ("url", url),
        ("zoneids", "-1"),
        ("hypervisor", "KVM"),
        ("format", "QCOW2"),
        ("ostypeid", os.as_str()),
        ("isextractable", "false"),
        ("passwordenabled", "false"),
        ("ispublic", "false"),
        ("isfeatured", "false"),
        ("isrouting", "false"),
    ];
    let reply = c
        .call("registerTemplate", &params)
        .await
        .expect("registered");
    let uuid = reply["template"][0]["id"].as_str().expect("id").to_string();
    let row: (u64, String, String, String, u8, u64, String, String) = {
        let mut conn = lab.db_url().connect().expect("connect");
        conn.exec_first(
            format!(
                "SELECT `id`, `type`, `state`, `unique_name`, `cross_zones`, `guest_os_id`, \
                 `hypervisor_type`, `format` FROM `{}`.`vm_template` WHERE `uuid` = ?",
                lab.cloud_schema()
            ),
            (&uuid,),
        )
        .expect("query")
        .expect("a vm_template row")
    };
    let (id, kind, state, unique, cross, guest_os, hv, format) = row;
    assert_eq!(
        (
            kind.as_str(),
            state.as_str(),
            cross,
            guest_os,
            hv.as_str(),
            format.as_str()
        ),
        ("USER", "Active", 1, 311, "KVM", "QCOW2")
    );
    assert!(unique.starts_with(&format!("{id}-2-")), "{unique}");
    let flags: Option<(u8, u8, u8, u8, u64, String, String)> = db_value(
        &lab,
        &format!(
            "SELECT `public`, `featured`, `extractable`, `enable_password`, `account_id`, \
             `url`, `display_text` FROM `{{c}}`.`vm_template` WHERE `id` = {id}"
        ),
    );
    assert_eq!(
        flags,
        Some((0, 0, 0, 0, 2, url.to_string(), name.to_string()))
    );
    let event = format!(
        "SELECT COUNT(*) FROM `{{c}}`.`event` WHERE `type` = 'TEMPLATE.CREATE' \
         AND `state` = 'Completed' AND `description` = \
         'Successfully completed creating template. Id: {id} name: {name}'"
    );
    assert_eq!(count(&event), 1);

    // The secondary storage VM downloads it to the lab zone's image store.
    wait_for("the template Ready", 20, || {
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`template_store_ref` WHERE `template_id` = {id} \
             AND `state` = 'Ready' AND `download_state` = 'DOWNLOADED' AND `download_pct` = 100 \
             AND `error_str` IS NULL AND `install_path` LIKE 'template/tmpl/2/{id}/%.qcow2'"
        )) == 1
    })
    .await;
    lab.sync();
    let listed = c
        .call(
            "listTemplates",
            &[("templatefilter", "self"), ("id", &uuid)],
        )
        .await
        .expect("listTemplates");
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["template"][0]["status"], "Download Complete");
    assert_eq!(listed["template"][0]["isready"], true);
    assert_eq!(
        db_value::<u64>(
            &lab,
            &format!("SELECT `size` FROM `{{c}}`.`vm_template` WHERE `id` = {id}")
        ),
        Some(5_368_709_120)
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`usage_event` WHERE `type` = 'TEMPLATE.CREATE' \
             AND `resource_id` = {id}"
        )),
        1
    );
    // Not used before the upgrade.
    assert_ne!(
        lab.api().config("router.template.kvm").as_deref(),
        Some(name)
    );

    // The upgrade's SystemVmTemplateRegistration finds it by name and makes it the system VM
    // template.
    upgrade_management_servers(&lab, &target).await;
    wait_for("router.template.kvm naming it", 10, || {
        lab.api().config("router.template.kvm").as_deref() == Some(name)
    })
    .await;
    assert_eq!(
        db_value::<String>(
            &lab,
            &format!("SELECT `type` FROM `{{c}}`.`vm_template` WHERE `id` = {id}")
        )
        .as_deref(),
        Some("SYSTEM")
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`vm_instance` WHERE `type` <> 'User' \
             AND `removed` IS NULL AND `vm_template_id` <> {id}"
        )),
        0,
        "every system VM and router points at it"
    );
    assert_eq!(count(&registered), 1, "the upgrade registered no other");
    wait_for("the cloud to read it back", 10, || {
        lab.api()
            .vms()
            .iter()
            .filter(|v| v.kind != "User")
            .all(|v| v.template.as_deref() == Some(name))
    })
    .await;
    let listed = c
        .call("listTemplates", &[("templatefilter", "all"), ("id", &uuid)])
        .await
        .expect("listTemplates");
    assert_eq!(listed["template"][0]["templatetype"], "SYSTEM", "{listed}");
    for s in c.list_system_vms(&[]).await.expect("system VMs") {
        assert_eq!(s.templatename.as_deref(), Some(name), "{s:?}");
    }
    // Its name is now reserved.
    let e = c
        .call("registerTemplate", &params)
        .await
        .expect_err("reserved");
    assert!(
        format!("{e:?}").contains("Cannot use reserved names for templates"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_template_leaves_the_rows_cloudstack_leaves() {
    let lab = tokio::task::spawn_blocking(|| {
        Lab::builder()
            .name("lab_tmpl_del")
            .management_servers(1)
            .kvm_hosts(2)
            .hosts_per_cluster(2)
            .vms(1)
            .start()
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let c = client(&lab);
    let count = |sql: &str| db_value::<u64>(&lab, sql).unwrap_or(0);
    let zone = c.list_zones(&[]).await.expect("zones")[0].id.clone();
    let os = debian_11(&c).await;
    let name = "debian-12-genericcloud";
    let url = "https://cloud.example.org/images/debian-12-genericcloud-amd64.qcow2";
    let params = [
        ("name", name),
        ("displaytext", name),
        ("url", url),
        ("zoneid", zone.as_str()),
        ("hypervisor", "KVM"),
        ("format", "QCOW2"),
        ("ostypeid", os.as_str()),
        ("ispublic", "false"),
        ("isfeatured", "false"),
    ];

    // The download fails (the URL answers 404).
    lab.api()
        .fail_template_downloads(Some(cs_lab::TEMPLATE_DOWNLOAD_ERROR));
    let reply = c
        .call("registerTemplate", &params)
        .await
        .expect("registered");
    let uuid = reply["template"][0]["id"].as_str().expect("id").to_string();
    let id: u64 = db_value(
        &lab,
        &format!("SELECT `id` FROM `{{c}}`.`vm_template` WHERE `uuid` = '{uuid}'"),
    )
    .expect("a vm_template row");
    wait_for("the download to fail", 10, || {
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`template_store_ref` WHERE `template_id` = {id} \
             AND `download_state` = 'DOWNLOAD_ERROR' AND `state` = 'Allocated'"
        )) == 1
    })
    .await;
    lab.api().fail_template_downloads(None);

    // The operator deletes it.
    let done = c
        .call_async("deleteTemplate", &[("id", &uuid)])
        .await
        .expect("deleted");
    assert_eq!(
        done.jobresult.as_ref().map(|r| r["success"].clone()),
        Some(serde_json::json!(true)),
        "{done:?}"
    );
    // template_store_ref: Destroyed and destroyed, the download's answer kept.
    let store_ref: Option<(String, u8, String, Option<String>)> = db_value(
        &lab,
        &format!(
            "SELECT `state`, `destroyed`, `download_state`, `error_str` \
             FROM `{{c}}`.`template_store_ref` WHERE `template_id` = {id}"
        ),
    );
    assert_eq!(
        store_ref,
        Some((
            "Destroyed".into(),
            1,
            "DOWNLOAD_ERROR".into(),
            Some(cs_lab::TEMPLATE_DOWNLOAD_ERROR.into())
        ))
    );
    // vm_template: Inactive and removed.
    let template: Option<(String, u8)> = db_value(
        &lab,
        &format!(
            "SELECT `state`, `removed` IS NOT NULL FROM `{{c}}`.`vm_template` WHERE `id` = {id}"
        ),
    );
    assert_eq!(template, Some(("Inactive".into(), 1)));
    // One TEMPLATE.DELETE usage event for the image store's zone (no name, no size); no
    // TEMPLATE.CREATE one, the template never arrived.
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`usage_event` `u` JOIN `{{c}}`.`template_store_ref` `r` \
             ON `r`.`template_id` = `u`.`resource_id` JOIN `{{c}}`.`image_store` `s` \
             ON `s`.`id` = `r`.`store_id` AND `s`.`data_center_id` = `u`.`zone_id` \
             WHERE `u`.`type` = 'TEMPLATE.DELETE' AND `u`.`resource_id` = {id} \
             AND `u`.`account_id` = 2 AND `u`.`resource_name` IS NULL AND `u`.`size` IS NULL"
        )),
        1
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`usage_event` WHERE `type` LIKE 'TEMPLATE.%' \
             AND `resource_id` = {id}"
        )),
        1
    );
    // The action event: Scheduled, Started, Completed.
    let events: Vec<(String, String, String)> = {
        let mut conn = lab.db_url().connect().expect("connect");
        conn.query(format!(
            "SELECT `state`, `level`, `description` FROM `{}`.`event` \
             WHERE `type` = 'TEMPLATE.DELETE' AND `resource_id` = {id} \
             AND `resource_type` = 'Template' ORDER BY `id`",
            lab.cloud_schema()
        ))
        .expect("events")
    };
    assert_eq!(
        events,
        vec![
            (
                "Scheduled".into(),
                "INFO".into(),
                format!("Deleting template {uuid}")
            ),
            (
                "Started".into(),
                "INFO".into(),
                format!("deleting template. Template Id: {uuid}")
            ),
            (
                "Completed".into(),
                "INFO".into(),
                format!("Successfully completed deleting template. Template Id: {uuid}")
            ),
        ]
    );

    // Read back from the database (past the 200 ms reload), it does not come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.sync();
    let listed = c
        .call(
            "listTemplates",
            &[("templatefilter", "self"), ("name", name)],
        )
        .await
        .expect("listTemplates");
    assert!(listed.get("template").is_none(), "{listed}");

    // Registered again under the same name, it downloads.
    let reply = c
        .call("registerTemplate", &params)
        .await
        .expect("registered again");
    let again = reply["template"][0]["id"].as_str().expect("id").to_string();
    assert_ne!(again, uuid);
    wait_for("the new template Ready", 20, || {
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`template_store_ref` `r` JOIN `{{c}}`.`vm_template` `t` \
             ON `t`.`id` = `r`.`template_id` WHERE `t`.`uuid` = '{again}' \
             AND `t`.`removed` IS NULL AND `r`.`state` = 'Ready' \
             AND `r`.`download_state` = 'DOWNLOADED'"
        )) == 1
    })
    .await;
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM `{{c}}`.`vm_template` WHERE `name` = '{name}' \
             AND `removed` IS NULL"
        )),
        1
    );
}
