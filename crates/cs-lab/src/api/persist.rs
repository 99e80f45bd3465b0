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
    ADMIN_ACCOUNT, ADMIN_USER, Cloud, Event, LabHost, ROOT_DOMAIN, RouterInfo, Vm, VmKind, db_now,
    offering,
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

/// The cloud as the database has it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    vms: Vec<VmRow>,
    hosts: Vec<(u64, String)>,
    configs: Vec<(String, String)>,
    templates: Vec<(u64, String)>,
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
        let templates = self.query(
            "SELECT `id`, `name` FROM `vm_template` WHERE `type` = 'SYSTEM' \
             AND `hypervisor_type` = 'KVM' AND `removed` IS NULL ORDER BY `id`",
        )?;
        Ok(Snapshot {
            vms,
            hosts,
            configs: configs
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            templates,
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
    /// states, system templates and the settings the cloud reads.
    pub(crate) fn apply(&mut self, s: &Snapshot) {
        for (id, name) in &s.templates {
            self.add_template(*id, name);
        }
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
}
