//! The lab cloud in its database, as CloudStack keeps it: `cluster`, `host`, `vm_instance`,
//! `nics`, `event` and `usage_event` rows written as the cloud changes, and the cloud read back
//! from the database, so a restored database is the cloud the API answers for (VMs created
//! after the backup are gone from it while their guests still run on the hypervisors).
//!
//! Writes are queued and sent in order right after each change; one that fails (a table
//! swapped out by a restore, the server away) stays queued and is sent again later, and the
//! cloud is not read back while writes are pending.

use std::collections::VecDeque;

use cs_core::DbUrl;
use mysql::prelude::Queryable;
use mysql::{Params, Value};

use super::state::{
    ADMIN_ACCOUNT, ADMIN_USER, Cloud, Event, GuestOs, ImageStore, LabHost, ROOT_DOMAIN, RouterInfo,
    StoreRef, Template, Vm, VmKind, db_now, offering, template_version,
};
use crate::mariadb::DbUrlExt;
use crate::{LabError, Result};

/// Attempts before a write that keeps failing is dropped (with a warning): a statement the
/// server refuses for good must not stall the lab.
const MAX_ATTEMPTS: u32 = 600;

#[derive(Debug)]
struct Write {
    sql: String,
    params: Vec<Value>,
    attempts: u32,
}

/// The writer side: owned by the cloud, behind its lock.
pub(crate) struct Persist {
    url: DbUrl,
    conn: Option<mysql::Conn>,
    queue: VecDeque<Write>,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist")
            .field("database", &self.url.database)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

fn db_err(what: &str) -> impl FnOnce(mysql::Error) -> LabError + '_ {
    move |e| LabError::Database {
        what: what.to_string(),
        source: Box::new(e),
    }
}

fn opt(v: Option<u64>) -> Value {
    v.map_or(Value::NULL, Value::from)
}

impl Persist {
    fn push(&mut self, sql: &str, params: Vec<Value>) {
        self.queue.push_back(Write {
            sql: sql.to_string(),
            params,
            attempts: 0,
        });
    }

    /// Whether writes are waiting to be sent.
    pub(crate) fn pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends the queued writes in order; stops at the first that fails (it stays queued).
    pub(crate) fn flush(&mut self) {
        while let Some(w) = self.queue.front_mut() {
            if self.conn.is_none() {
                match self.url.connect() {
                    Ok(c) => self.conn = Some(c),
                    Err(_) => return,
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.exec_drop(&w.sql, Params::Positional(w.params.clone())) {
                Ok(()) => {
                    self.queue.pop_front();
                }
                Err(e) => {
                    w.attempts += 1;
                    if w.attempts >= MAX_ATTEMPTS {
                        tracing::warn!(sql = %w.sql, error = %e, "lab database write dropped");
                        self.queue.pop_front();
                    }
                    self.conn = None;
                    return;
                }
            }
        }
    }

    /// `vm_instance` (and, for user VMs, a `nics` row) for a new VM with id `vm.db_id`.
    pub(crate) fn insert_vm(&mut self, vm: &Vm, zone_db: u64) {
        let mac = format!(
            "1e:00:{:02x}:{:02x}:{:02x}:{:02x}",
            (vm.db_id >> 24) & 255,
            (vm.db_id >> 16) & 255,
            (vm.db_id >> 8) & 255,
            vm.db_id & 255
        );
        let ip = format!(
            "10.{}.{}.{}",
            (vm.db_id >> 16) & 255,
            (vm.db_id >> 8) & 255,
            vm.db_id & 255
        );
        let account = if vm.kind == VmKind::User {
            ADMIN_ACCOUNT
        } else {
            1
        };
        self.push(
            "INSERT INTO `vm_instance` (`id`, `name`, `uuid`, `instance_name`, `state`, \
             `vm_template_id`, `guest_os_id`, `private_mac_address`, `private_ip_address`, \
             `pod_id`, `data_center_id`, `host_id`, `last_host_id`, `vnc_password`, \
             `ha_enabled`, `limit_cpu_use`, `update_count`, `update_time`, `created`, `type`, \
             `vm_type`, `account_id`, `domain_id`, `service_offering_id`, `hypervisor_type`, \
             `host_name`, `display_name`, `power_state`, `user_id`) \
             VALUES (?, ?, ?, ?, ?, ?, 15, ?, ?, 1, ?, NULL, NULL, 'labvnc', 0, 0, 0, \
             UTC_TIMESTAMP(), ?, ?, ?, ?, ?, ?, 'KVM', ?, ?, 'PowerOff', ?)",
            vec![
                vm.db_id.into(),
                vm.name.clone().into(),
                vm.id.clone().into(),
                vm.instance_name.clone().into(),
                vm.state.clone().into(),
                vm.template_id.into(),
                mac.clone().into(),
                ip.clone().into(),
                zone_db.into(),
                vm.created.clone().into(),
                vm.kind.db().into(),
                vm.kind.db().into(),
                account.into(),
                ROOT_DOMAIN.into(),
                vm.offering.db_id.into(),
                vm.name.clone().into(),
                vm.display_name.clone().into(),
                if vm.kind == VmKind::User {
                    ADMIN_USER
                } else {
                    1
                }
                .into(),
            ],
        );
        if vm.kind == VmKind::User {
            self.push(
                "INSERT INTO `nics` (`uuid`, `instance_id`, `mac_address`, `ip4_address`, \
                 `netmask`, `gateway`, `mode`, `state`, `strategy`, `reserver_name`, \
                 `network_id`, `device_id`, `default_nic`, `vm_type`, `created`) \
                 VALUES (UUID(), ?, ?, ?, '255.255.255.0', '10.0.0.1', 'Dhcp', 'Reserved', \
                 'Start', 'ExternalGuestNetworkGuru', 204, 0, 1, 'User', UTC_TIMESTAMP())",
                vec![vm.db_id.into(), mac.into(), ip.into()],
            );
        }
    }

    /// A VM's row as it is now (`VMInstanceDaoImpl.updateState` bumps `update_count`).
    pub(crate) fn update_vm(&mut self, vm: &Vm, host: Option<u64>, last_host: Option<u64>) {
        let power = if matches!(vm.state.as_str(), "Running" | "Migrating" | "Stopping") {
            "PowerOn"
        } else {
            "PowerOff"
        };
        self.push(
            "UPDATE `vm_instance` SET `name` = ?, `instance_name` = ?, `host_name` = ?, \
             `display_name` = ?, `state` = ?, `host_id` = ?, `last_host_id` = ?, \
             `vm_template_id` = ?, `power_state` = ?, `power_host` = ?, \
             `update_count` = `update_count` + 1, `update_time` = UTC_TIMESTAMP() \
             WHERE `id` = ? AND `removed` IS NULL",
            vec![
                vm.name.clone().into(),
                vm.instance_name.clone().into(),
                vm.name.clone().into(),
                vm.display_name.clone().into(),
                vm.state.clone().into(),
                opt(host),
                opt(last_host),
                vm.template_id.into(),
                power.into(),
                opt(host),
                vm.db_id.into(),
            ],
        );
    }

    /// An expunged VM: `removed` set, and its NICs released.
    pub(crate) fn remove_vm(&mut self, db_id: u64) {
        self.push(
            "UPDATE `vm_instance` SET `state` = 'Expunging', `host_id` = NULL, \
             `removed` = UTC_TIMESTAMP(), `update_count` = `update_count` + 1 WHERE `id` = ?",
            vec![db_id.into()],
        );
        self.push(
            "UPDATE `nics` SET `removed` = UTC_TIMESTAMP(), `state` = 'Deallocating' \
             WHERE `instance_id` = ? AND `removed` IS NULL",
            vec![db_id.into()],
        );
    }

    pub(crate) fn update_host(&mut self, h: &LabHost) {
        self.push(
            "UPDATE `host` SET `status` = ?, `resource_state` = ?, `version` = ?, \
             `update_count` = `update_count` + 1 WHERE `id` = ?",
            vec![
                h.state.clone().into(),
                h.resource_state.clone().into(),
                h.version.clone().into(),
                h.db_id.into(),
            ],
        );
    }

    pub(crate) fn insert_event(&mut self, e: &Event) {
        self.push(
            "INSERT INTO `event` (`uuid`, `type`, `state`, `description`, `user_id`, \
             `account_id`, `domain_id`, `resource_id`, `resource_type`, `created`, `level`, \
             `start_id`, `archived`, `display`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 1)",
            vec![
                e.id.clone().into(),
                e.kind.clone().into(),
                e.state.into(),
                e.description.clone().into(),
                ADMIN_USER.into(),
                ADMIN_ACCOUNT.into(),
                ROOT_DOMAIN.into(),
                opt(e.resource_id),
                e.resource_type.map_or(Value::NULL, Value::from),
                e.created.clone().into(),
                e.level.into(),
            ],
        );
    }

    /// A registered template's `vm_template` row (`TemplateAdapterBase.persistTemplate`:
    /// `VMTemplateVO`, state `Active`; `created` as `GenericDaoBase` sets it).
    pub(crate) fn insert_template(&mut self, t: &Template) {
        self.push(
            "INSERT INTO `vm_template` (`id`, `unique_name`, `name`, `uuid`, `public`, \
             `featured`, `type`, `hvm`, `bits`, `url`, `format`, `created`, `account_id`, \
             `checksum`, `display_text`, `enable_password`, `enable_sshkey`, `guest_os_id`, \
             `bootable`, `prepopulate`, `cross_zones`, `extractable`, `hypervisor_type`, \
             `sort_key`, `state`, `update_count`, `dynamically_scalable`, `direct_download`, \
             `deploy_as_is`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, \
             ?, ?, ?, 0, ?, 0, ?, 0, 0)",
            vec![
                t.db_id.into(),
                t.unique_name.clone().into(),
                t.name.clone().into(),
                t.id.clone().into(),
                u8::from(t.public).into(),
                u8::from(t.featured).into(),
                t.kind.clone().into(),
                u8::from(t.requires_hvm).into(),
                t.bits.into(),
                t.url.clone().map_or(Value::NULL, Value::from),
                t.format.clone().into(),
                t.created.clone().into(),
                t.account.into(),
                t.checksum.clone().map_or(Value::NULL, Value::from),
                t.display_text.clone().into(),
                u8::from(t.password_enabled).into(),
                u8::from(t.sshkey_enabled).into(),
                t.guest_os.into(),
                u8::from(t.cross_zones).into(),
                u8::from(t.extractable).into(),
                t.hypervisor.clone().into(),
                t.state.clone().into(),
                u8::from(t.dynamically_scalable).into(),
            ],
        );
    }

    /// A template's new `template_store_ref` row on an image store
    /// (`ObjectInDataStoreManagerImpl.create`).
    pub(crate) fn insert_store_ref(&mut self, template: u64, r: &StoreRef) {
        self.push(
            "INSERT INTO `template_store_ref` (`store_id`, `template_id`, `created`, \
             `last_updated`, `download_pct`, `size`, `store_role`, `physical_size`, \
             `download_state`, `error_str`, `install_path`, `state`, `destroyed`, `is_copy`, \
             `update_count`, `ref_cnt`) VALUES (?, ?, ?, UTC_TIMESTAMP(), ?, ?, 'Image', ?, ?, \
             ?, ?, ?, 0, 0, 0, 0)",
            vec![
                r.store.into(),
                template.into(),
                r.created.clone().into(),
                r.download_pct.into(),
                opt(r.size),
                r.physical_size.into(),
                r.download_state.clone().map_or(Value::NULL, Value::from),
                r.error.clone().map_or(Value::NULL, Value::from),
                r.install_path.clone().map_or(Value::NULL, Value::from),
                r.state.clone().into(),
            ],
        );
    }

    /// A download's progress in its `template_store_ref` row
    /// (`BaseImageStoreDriverImpl.createTemplateAsyncCallback` writes each `DownloadAnswer`;
    /// the state follows `ObjectInDataStoreStateMachine`), with the download job's id.
    pub(crate) fn update_store_ref(&mut self, template: u64, r: &StoreRef, job: Option<&str>) {
        self.push(
            "UPDATE `template_store_ref` SET `download_pct` = ?, `download_state` = ?, \
             `error_str` = ?, `install_path` = ?, `size` = ?, `physical_size` = ?, \
             `state` = ?, `job_id` = COALESCE(?, `job_id`), `last_updated` = UTC_TIMESTAMP(), \
             `update_count` = `update_count` + 1 \
             WHERE `template_id` = ? AND `store_id` = ? AND `store_role` = 'Image' \
             AND COALESCE(`destroyed`, 0) = 0",
            vec![
                r.download_pct.into(),
                r.download_state.clone().map_or(Value::NULL, Value::from),
                r.error.clone().map_or(Value::NULL, Value::from),
                r.install_path.clone().map_or(Value::NULL, Value::from),
                opt(r.size),
                r.physical_size.into(),
                r.state.clone().into(),
                job.map_or(Value::NULL, Value::from),
                template.into(),
                r.store.into(),
            ],
        );
    }

    /// A state transition of a template's copy on an image store
    /// (`TemplateDataStoreDaoImpl.updateState`: `state`, `updated`, `update_count`; `Destroyed`
    /// also sets `destroyed`, after which the row is history: no search of CloudStack's, nor the
    /// lab's reload, sees it).
    pub(crate) fn update_store_ref_state(&mut self, template: u64, store: u64, state: &str) {
        self.push(
            "UPDATE `template_store_ref` SET `state` = ?, \
             `destroyed` = IF(? = 'Destroyed', 1, `destroyed`), `updated` = UTC_TIMESTAMP(), \
             `update_count` = COALESCE(`update_count`, 0) + 1 \
             WHERE `template_id` = ? AND `store_id` = ? AND `store_role` = 'Image' \
             AND COALESCE(`destroyed`, 0) = 0",
            vec![state.into(), state.into(), template.into(), store.into()],
        );
    }

    /// A deleted template's `vm_template` row (`HypervisorTemplateAdapter.delete`:
    /// `setState(Inactive)`, `_tmpltDao.remove` sets `removed`, `update` writes the state).
    pub(crate) fn remove_template(&mut self, template: u64) {
        self.push(
            "UPDATE `vm_template` SET `state` = 'Inactive', `removed` = UTC_TIMESTAMP() \
             WHERE `id` = ? AND `removed` IS NULL",
            vec![template.into()],
        );
    }

    /// The usage event of a template deleted from a zone's image store
    /// (`HypervisorTemplateAdapter.delete`: `UsageEventUtils.publishUsageEvent(TEMPLATE.DELETE,
    /// account, zone, template id, null, …)`: no name, offering, size).
    pub(crate) fn insert_template_delete_usage_event(
        &mut self,
        account: u64,
        zone: u64,
        template: u64,
    ) {
        self.push(
            "INSERT INTO `usage_event` (`type`, `account_id`, `created`, `zone_id`, \
             `resource_id`, `resource_name`, `offering_id`, `template_id`, `size`, \
             `resource_type`, `processed`, `virtual_size`) VALUES ('TEMPLATE.DELETE', ?, \
             UTC_TIMESTAMP(), ?, ?, NULL, NULL, NULL, NULL, NULL, 0, NULL)",
            vec![account.into(), zone.into(), template.into()],
        );
    }

    /// `vm_template.size` once a download reports it.
    pub(crate) fn update_template_size(&mut self, template: u64, size: u64) {
        self.push(
            "UPDATE `vm_template` SET `size` = ? WHERE `id` = ?",
            vec![size.into(), template.into()],
        );
    }

    /// The usage event of a template that arrived on a zone's image store
    /// (`HypervisorTemplateAdapter.createTemplateAsyncCallBack`:
    /// `UsageEventUtils.publishUsageEvent(TEMPLATE.CREATE, account, zone, template id, name,
    /// null, null, physical size, size, …)`).
    pub(crate) fn insert_template_usage_event(
        &mut self,
        t: &Template,
        zone: u64,
        physical_size: u64,
        size: u64,
    ) {
        self.push(
            "INSERT INTO `usage_event` (`type`, `account_id`, `created`, `zone_id`, \
             `resource_id`, `resource_name`, `offering_id`, `template_id`, `size`, \
             `resource_type`, `processed`, `virtual_size`) VALUES ('TEMPLATE.CREATE', ?, \
             UTC_TIMESTAMP(), ?, ?, ?, NULL, NULL, ?, NULL, 0, ?)",
            vec![
                t.account.into(),
                zone.into(),
                t.db_id.into(),
                t.name.clone().into(),
                physical_size.into(),
                size.into(),
            ],
        );
    }

    pub(crate) fn insert_usage_event(
        &mut self,
        kind: &str,
        vm: u64,
        name: &str,
        offering: u64,
        zone: u64,
    ) {
        self.push(
            "INSERT INTO `usage_event` (`type`, `account_id`, `created`, `zone_id`, \
             `resource_id`, `resource_name`, `offering_id`, `template_id`, `resource_type`, \
             `processed`) VALUES (?, ?, UTC_TIMESTAMP(), ?, ?, ?, ?, ?, 'KVM', 0)",
            vec![
                kind.into(),
                ADMIN_ACCOUNT.into(),
                zone.into(),
                vm.into(),
                name.into(),
                offering.into(),
                super::state::USER_TEMPLATE.into(),
            ],
        );
    }
}

/// A `vm_instance` row as the reader sees it.
#[derive(Debug, Clone)]
pub(crate) struct VmRow {
    db_id: u64,
    uuid: String,
    name: String,
    instance_name: String,
    display_name: Option<String>,
    state: String,
    host: Option<u64>,
    last_host: Option<u64>,
    kind: String,
    template: Option<u64>,
    offering: u64,
    zone: u64,
}

/// A `template_store_ref` row as the reader sees it.
#[derive(Debug, Clone)]
pub(crate) struct StoreRefRow {
    template: u64,
    store_ref: StoreRef,
}

/// The templates, where they are, and the guest OS types, as the database has them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    /// Every template not removed, of any type and hypervisor (`stores` empty here).
    templates: Vec<Template>,
    store_refs: Vec<StoreRefRow>,
    /// `(id, name, data_center_id)` of the image stores.
    image_stores: Vec<(u64, String, Option<u64>)>,
    guest_os: Vec<GuestOs>,
    /// The highest `vm_template.id`, removed rows included.
    max_template_id: u64,
    /// `(uuid, id)` of the removed templates.
    removed: Vec<(String, u64)>,
}

/// The cloud as the database has it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    vms: Vec<VmRow>,
    hosts: Vec<(u64, String)>,
    configs: Vec<(String, String)>,
    /// `None` when a table of it could not be read (one a restore is swapping): the cloud
    /// keeps the templates it has.
    catalog: Option<Catalog>,
}

/// The reader side: its own connection, used without the cloud's lock.
pub(crate) struct Reader {
    url: DbUrl,
    conn: Option<mysql::Conn>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("database", &self.url.database)
            .finish_non_exhaustive()
    }
}

/// Settings the cloud reads from `configuration`.
const SETTINGS: &[&str] = &["minreq.sysvmtemplate.version", "router.template.kvm"];

impl Reader {
    fn conn(&mut self) -> Result<&mut mysql::Conn> {
        if self.conn.is_none() {
            self.conn = Some(self.url.connect()?);
        }
        self.conn.as_mut().ok_or_else(|| LabError::Start {
            what: "lab database".into(),
            detail: "no connection".into(),
        })
    }

    fn query<T: mysql::prelude::FromRow>(&mut self, sql: &str) -> Result<Vec<T>> {
        let r = self.conn()?.query(sql).map_err(db_err(sql));
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    /// Reads the cloud's rows.
    pub(crate) fn load(&mut self) -> Result<Snapshot> {
        let vms: Vec<mysql::Row> = self.query(
            "SELECT `id`, `uuid`, `name`, `instance_name`, `display_name`, `state`, `host_id`, \
             `last_host_id`, `type`, `vm_template_id`, `service_offering_id`, `data_center_id` \
             FROM `vm_instance` WHERE `removed` IS NULL ORDER BY `id`",
        )?;
        let vms = vms
            .into_iter()
            .map(|mut r| VmRow {
                db_id: r.take(0).unwrap_or(0),
                uuid: r.take::<Option<String>, _>(1).flatten().unwrap_or_default(),
                name: r.take(2).unwrap_or_default(),
                instance_name: r.take(3).unwrap_or_default(),
                display_name: r.take::<Option<String>, _>(4).flatten(),
                state: r.take(5).unwrap_or_default(),
                host: r.take::<Option<u64>, _>(6).flatten(),
                last_host: r.take::<Option<u64>, _>(7).flatten(),
                kind: r.take(8).unwrap_or_default(),
                template: r.take::<Option<u64>, _>(9).flatten(),
                offering: r.take(10).unwrap_or(2),
                zone: r.take(11).unwrap_or(1),
            })
            .collect();
        let hosts = self.query(
            "SELECT `id`, `resource_state` FROM `host` WHERE `type` = 'Routing' AND `removed` IS NULL",
        )?;
        let names: Vec<String> = SETTINGS.iter().map(|s| format!("'{s}'")).collect();
        let configs: Vec<(String, Option<String>)> = self.query(&format!(
            "SELECT `name`, `value` FROM `configuration` WHERE `name` IN ({})",
            names.join(", ")
        ))?;
        let catalog = self.load_catalog().ok();
        Ok(Snapshot {
            vms,
            hosts,
            configs: configs
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            catalog,
        })
    }

    /// Templates (every type: the upgrade's `SystemVmTemplateRegistration` may make an
    /// operator's `USER` template `SYSTEM`), their copies on the image stores, the image
    /// stores and the guest OS types.
    fn load_catalog(&mut self) -> Result<Catalog> {
        const DATE: &str = "'%Y-%m-%d %H:%i:%s'";
        let rows: Vec<mysql::Row> = self.query(&format!(
            "SELECT `id`, `uuid`, `name`, `display_text`, `type`, `hypervisor_type`, `format`, \
             `guest_os_id`, `account_id`, `public`, `featured`, `extractable`, \
             `enable_password`, `cross_zones`, `url`, `checksum`, `state`, `size`, \
             DATE_FORMAT(`created`, {DATE}), `unique_name`, `enable_sshkey`, \
             `dynamically_scalable`, `hvm`, `bits` \
             FROM `vm_template` WHERE `removed` IS NULL ORDER BY `id`"
        ))?;
        let flag = |r: &mut mysql::Row, i: usize| r.take::<Option<u8>, _>(i).flatten() == Some(1);
        let templates = rows
            .into_iter()
            .map(|mut r| {
                let db_id: u64 = r.take(0).unwrap_or(0);
                let name: String = r.take(2).unwrap_or_default();
                Template {
                    db_id,
                    id: r
                        .take::<Option<String>, _>(1)
                        .flatten()
                        .unwrap_or_else(|| format!("8b6f0c3e-0000-4000-8007-{db_id:012x}")),
                    display_text: r
                        .take::<Option<String>, _>(3)
                        .flatten()
                        .unwrap_or_else(|| name.clone()),
                    kind: r.take::<Option<String>, _>(4).flatten().unwrap_or_default(),
                    hypervisor: r.take::<Option<String>, _>(5).flatten().unwrap_or_default(),
                    format: r.take(6).unwrap_or_default(),
                    guest_os: r.take(7).unwrap_or(0),
                    account: r.take(8).unwrap_or(1),
                    public: flag(&mut r, 9),
                    featured: flag(&mut r, 10),
                    extractable: flag(&mut r, 11),
                    password_enabled: flag(&mut r, 12),
                    cross_zones: flag(&mut r, 13),
                    url: r.take::<Option<String>, _>(14).flatten(),
                    checksum: r.take::<Option<String>, _>(15).flatten(),
                    state: r
                        .take::<Option<String>, _>(16)
                        .flatten()
                        .unwrap_or_default(),
                    size: r.take::<Option<u64>, _>(17).flatten(),
                    created: r
                        .take::<Option<String>, _>(18)
                        .flatten()
                        .unwrap_or_default(),
                    unique_name: r.take(19).unwrap_or_default(),
                    sshkey_enabled: flag(&mut r, 20),
                    dynamically_scalable: flag(&mut r, 21),
                    requires_hvm: flag(&mut r, 22),
                    bits: r.take(23).unwrap_or(64),
                    version: template_version(&name),
                    name,
                    stores: Vec::new(),
                }
            })
            .collect();
        let rows: Vec<mysql::Row> = self.query(&format!(
            "SELECT `template_id`, `store_id`, DATE_FORMAT(`created`, {DATE}), \
             `download_state`, `download_pct`, `state`, `error_str`, `install_path`, `size`, \
             `physical_size` FROM `template_store_ref` WHERE `store_role` = 'Image' \
             AND COALESCE(`destroyed`, 0) = 0 AND `store_id` IS NOT NULL ORDER BY `id`"
        ))?;
        let store_refs = rows
            .into_iter()
            .map(|mut r| StoreRefRow {
                template: r.take(0).unwrap_or(0),
                store_ref: StoreRef {
                    store: r.take(1).unwrap_or(0),
                    created: r.take::<Option<String>, _>(2).flatten().unwrap_or_default(),
                    download_state: r.take::<Option<String>, _>(3).flatten(),
                    download_pct: r.take::<Option<u32>, _>(4).flatten().unwrap_or(0),
                    state: r.take(5).unwrap_or_default(),
                    error: r.take::<Option<String>, _>(6).flatten(),
                    install_path: r.take::<Option<String>, _>(7).flatten(),
                    size: r.take::<Option<u64>, _>(8).flatten(),
                    physical_size: r.take::<Option<u64>, _>(9).flatten().unwrap_or(0),
                },
            })
            .collect();
        let image_stores = self.query(
            "SELECT `id`, `name`, `data_center_id` FROM `image_store` \
             WHERE `removed` IS NULL AND `role` = 'Image' ORDER BY `id`",
        )?;
        let rows: Vec<mysql::Row> = self.query(
            "SELECT `g`.`id`, `g`.`uuid`, `g`.`display_name`, `c`.`uuid`, `c`.`name`, \
             `g`.`is_user_defined` FROM `guest_os` `g` \
             JOIN `guest_os_category` `c` ON `c`.`id` = `g`.`category_id` \
             WHERE `g`.`removed` IS NULL ORDER BY `g`.`id`",
        )?;
        let guest_os = rows
            .into_iter()
            .map(|mut r| GuestOs {
                db_id: r.take(0).unwrap_or(0),
                id: r.take::<Option<String>, _>(1).flatten().unwrap_or_default(),
                name: r.take(2).unwrap_or_default(),
                category_id: r.take::<Option<String>, _>(3).flatten().unwrap_or_default(),
                category_name: r.take(4).unwrap_or_default(),
                user_defined: r.take::<Option<u32>, _>(5).flatten() == Some(1),
            })
            .collect();
        let max: Vec<u64> = self.query("SELECT COALESCE(MAX(`id`), 0) FROM `vm_template`")?;
        let removed: Vec<(Option<String>, u64)> = self.query(
            "SELECT `uuid`, `id` FROM `vm_template` WHERE `removed` IS NOT NULL ORDER BY `id`",
        )?;
        Ok(Catalog {
            templates,
            store_refs,
            image_stores,
            guest_os,
            max_template_id: max.first().copied().unwrap_or(0),
            removed: removed
                .into_iter()
                .filter_map(|(uuid, id)| Some((uuid?, id)))
                .collect(),
        })
    }

    /// Events created at or after `since` (`yyyy-MM-dd HH:mm:ss`), newest last, at most 5,000.
    pub(crate) fn events(&mut self, since: Option<&str>) -> Result<Vec<Event>> {
        let since = since.unwrap_or("1970-01-01 00:00:00").replace('\'', "");
        let rows: Vec<mysql::Row> = self.query(&format!(
            "SELECT `uuid`, `type`, `state`, `level`, `description`, `resource_id`, \
             `resource_type`, DATE_FORMAT(`created`, '%Y-%m-%d %H:%i:%s') FROM `event` \
             WHERE `created` >= '{since}' ORDER BY `id` DESC LIMIT 5000"
        ))?;
        let mut out: Vec<Event> = rows
            .into_iter()
            .map(|mut r| Event {
                id: r.take::<Option<String>, _>(0).flatten().unwrap_or_default(),
                kind: r.take(1).unwrap_or_default(),
                state: static_state(&r.take::<String, _>(2).unwrap_or_default()),
                level: static_level(&r.take::<String, _>(3).unwrap_or_default()),
                description: r.take(4).unwrap_or_default(),
                resource_id: r.take::<Option<u64>, _>(5).flatten(),
                resource_type: r
                    .take::<Option<String>, _>(6)
                    .flatten()
                    .map(|t| static_resource(&t)),
                created: r.take(7).unwrap_or_default(),
            })
            .collect();
        out.reverse();
        Ok(out)
    }
}

fn static_state(s: &str) -> &'static str {
    match s {
        "Scheduled" => "Scheduled",
        "Started" => "Started",
        "Created" => "Created",
        _ => "Completed",
    }
}

fn static_level(s: &str) -> &'static str {
    match s {
        "ERROR" => "ERROR",
        "WARN" => "WARN",
        _ => "INFO",
    }
}

fn static_resource(s: &str) -> &'static str {
    match s {
        "Host" => "Host",
        "Template" => "Template",
        "DomainRouter" => "DomainRouter",
        "SystemVm" => "SystemVm",
        "Network" => "Network",
        _ => "VirtualMachine",
    }
}

/// Writes the cloud's shape into `cloud_schema` (replacing the fixture's clusters, hosts, VMs
/// and NICs), reads its system templates and settings back, and returns the writer and the
/// reader. Blocking.
pub(crate) fn attach(url: &DbUrl, cloud_schema: &str, c: &mut Cloud) -> Result<(Persist, Reader)> {
    let url = url.with_database(cloud_schema);
    let mut conn = url.connect()?;
    conn.query_drop(
        "DELETE FROM `nics`; DELETE FROM `vm_instance`; DELETE FROM `host`; DELETE FROM `cluster`",
    )
    .map_err(db_err("clear the fixture's clusters, hosts and VMs"))?;
    let zones: Vec<(u64, String)> = conn
        .query("SELECT `id`, `name` FROM `data_center` WHERE `removed` IS NULL ORDER BY `id`")
        .map_err(db_err("read the zones"))?;
    if zones.len() < c.zones.len() {
        return Err(LabError::Start {
            what: "lab database".into(),
            detail: format!(
                "the cloud has {} zone(s), the database {}",
                c.zones.len(),
                zones.len()
            ),
        });
    }
    for (z, (id, name)) in c.zones.iter_mut().zip(&zones) {
        z.db_id = *id;
        z.name.clone_from(name);
    }
    let mut p = Persist {
        url: url.clone(),
        conn: Some(conn),
        queue: VecDeque::new(),
    };
    for (i, cl) in c.clusters.iter_mut().enumerate() {
        cl.db_id = i as u64 + 1;
        p.push(
            "INSERT INTO `cluster` (`id`, `name`, `uuid`, `pod_id`, `data_center_id`, \
             `hypervisor_type`, `cluster_type`, `allocation_state`, `managed_state`, `created`) \
             VALUES (?, ?, ?, 1, ?, 'KVM', 'CloudManaged', 'Enabled', 'Managed', UTC_TIMESTAMP())",
            vec![
                cl.db_id.into(),
                cl.name.clone().into(),
                cl.id.clone().into(),
                zones[cl.zone].0.into(),
            ],
        );
    }
    for (i, h) in c.hosts.iter_mut().enumerate() {
        h.db_id = i as u64 + 1;
    }
    for h in &c.hosts {
        let cl = &c.clusters[h.cluster];
        p.push(
            "INSERT INTO `host` (`id`, `name`, `uuid`, `status`, `type`, `private_ip_address`, \
             `cluster_id`, `data_center_id`, `pod_id`, `cpu_sockets`, `cpus`, `speed`, \
             `hypervisor_type`, `ram`, `resource`, `version`, `dom0_memory`, `last_ping`, \
             `created`, `resource_state`) VALUES (?, ?, ?, ?, 'Routing', ?, ?, ?, 1, 2, ?, ?, \
             'KVM', ?, 'com.cloud.hypervisor.kvm.resource.LibvirtComputingResource', ?, 0, 0, \
             UTC_TIMESTAMP(), ?)",
            vec![
                h.db_id.into(),
                h.name.clone().into(),
                h.id.clone().into(),
                h.state.clone().into(),
                h.ip.clone().into(),
                cl.db_id.into(),
                zones[cl.zone].0.into(),
                h.capacity.cpus.into(),
                h.capacity.speed.into(),
                (h.capacity.memory_mb * 1024 * 1024).into(),
                h.version.clone().into(),
                h.resource_state.clone().into(),
            ],
        );
    }
    let first_free: Option<u64> = p
        .conn
        .as_mut()
        .map(|conn| conn.query_first("SELECT COALESCE(MAX(`id`), 0) + 1 FROM `vm_instance`"))
        .transpose()
        .map_err(db_err("read the next VM id"))?
        .flatten();
    let mut next = first_free.unwrap_or(1).max(1);
    for v in &mut c.vms {
        // Names of system VMs and routers carry their id.
        v.db_id = next;
        next += 1;
        if v.kind != VmKind::User {
            v.instance_name = format!("{}-{}-VM", v.kind.prefix(), v.db_id);
            v.name.clone_from(&v.instance_name);
            v.display_name.clone_from(&v.instance_name);
        } else {
            v.instance_name = format!("i-{ADMIN_ACCOUNT}-{}-VM", v.db_id);
        }
    }
    c.set_next_db_id(next);
    let zone_of = |z: usize| zones[z].0;
    let vms = c.vms.clone();
    for v in &vms {
        p.insert_vm(v, zone_of(v.zone));
        let host = v.host.map(|h| c.hosts[h].db_id);
        let last = v.last_host.map(|h| c.hosts[h].db_id);
        p.update_vm(v, host, last);
    }
    p.flush();
    if p.pending() {
        return Err(LabError::Start {
            what: "lab database".into(),
            detail: "writing the cloud's rows failed".into(),
        });
    }
    let mut reader = Reader {
        url: url.clone(),
        conn: None,
    };
    let snapshot = reader.load()?;
    c.apply(&snapshot);
    Ok((p, reader))
}

impl Cloud {
    /// Makes the cloud what the database says: VMs (added, changed, gone), hosts' resource
    /// states, templates with their copies on the image stores of the cloud's zones, guest OS
    /// types and the settings the cloud reads.
    pub(crate) fn apply(&mut self, s: &Snapshot) {
        self.apply_templates(s);
        for (k, v) in &s.configs {
            self.configs.insert(k.clone(), v.clone());
        }
        let host_of = |db: Option<u64>, hosts: &[LabHost]| {
            db.and_then(|d| hosts.iter().position(|h| h.db_id == d))
        };
        for (id, rs) in &s.hosts {
            if let Some(h) = self.hosts.iter_mut().find(|h| h.db_id == *id) {
                h.resource_state.clone_from(rs);
            }
        }
        self.vms
            .retain(|v| s.vms.iter().any(|r| r.db_id == v.db_id));
        for r in &s.vms {
            let Some(kind) = VmKind::from_db(&r.kind) else {
                continue;
            };
            let host = host_of(r.host, &self.hosts);
            let last = host_of(r.last_host, &self.hosts);
            let template = r.template.unwrap_or(0);
            if let Some(v) = self.vms.iter_mut().find(|v| v.db_id == r.db_id) {
                v.state.clone_from(&r.state);
                v.host = host;
                v.last_host = last;
                v.template_id = template;
                continue;
            }
            let zone = self
                .zones
                .iter()
                .position(|z| z.db_id == r.zone)
                .unwrap_or(0);
            let running = matches!(r.state.as_str(), "Running" | "Migrating" | "Stopping");
            let version = self.template(template).and_then(|t| t.version);
            let router = (kind == VmKind::DomainRouter).then(|| RouterInfo {
                network: 0,
                redundant_state: None,
                template_version: version
                    .filter(|_| running)
                    .map(|v| super::state::router_release(&v)),
            });
            let agent_version = (kind.is_system() && running)
                .then(|| host.map(|h| self.hosts[h].version.clone()))
                .flatten();
            self.vms.push(Vm {
                id: if r.uuid.is_empty() {
                    format!("8b6f0c3e-0000-4000-8005-{:012x}", r.db_id)
                } else {
                    r.uuid.clone()
                },
                db_id: r.db_id,
                name: r.name.clone(),
                display_name: r.display_name.clone().unwrap_or_else(|| r.name.clone()),
                instance_name: r.instance_name.clone(),
                kind,
                state: r.state.clone(),
                host,
                last_host: last,
                zone,
                offering: offering(r.offering),
                local_storage: false,
                template_id: template,
                booted_template: running.then_some(template),
                agent_version,
                router: router.filter(|_| !self.networks.is_empty()),
                created: db_now(),
            });
        }
        let max = s.vms.iter().map(|r| r.db_id).max().unwrap_or(0);
        self.set_next_db_id(max + 1);
    }

    /// The templates as the database has them, the lab's image stores (those of the zones the
    /// cloud has: the fixture's other zones have no hosts or secondary storage VM left) and
    /// the guest OS types.
    fn apply_templates(&mut self, s: &Snapshot) {
        let Some(s) = &s.catalog else {
            return;
        };
        let stores: Vec<ImageStore> = s
            .image_stores
            .iter()
            .filter_map(|(id, name, zone)| {
                let zone = self.zones.iter().position(|z| Some(z.db_id) == *zone)?;
                Some(ImageStore {
                    db_id: *id,
                    name: name.clone(),
                    zone,
                })
            })
            .collect();
        let mut templates = s.templates.clone();
        for t in &mut templates {
            t.stores = s
                .store_refs
                .iter()
                .filter(|r| {
                    r.template == t.db_id && stores.iter().any(|s| s.db_id == r.store_ref.store)
                })
                .map(|r| r.store_ref.clone())
                .collect();
        }
        self.image_stores = stores;
        self.templates = templates;
        self.removed_templates = s.removed.iter().cloned().collect();
        if !s.guest_os.is_empty() {
            self.guest_os.clone_from(&s.guest_os);
        }
        // `vm_template` ids are AUTO_INCREMENT: the next is the database's (no write is
        // pending when the cloud is read back).
        self.next_template_id = s.max_template_id + 1;
    }
}
