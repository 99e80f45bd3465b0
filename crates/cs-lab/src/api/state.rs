//! The lab cloud's state — what CloudStack keeps in its database: zones, clusters, hosts, VMs
//! of every kind (user VMs, system VMs, virtual routers), networks, templates with their copies
//! on the zones' image stores, guest OS types, global settings, events and async jobs.
//!
//! What changes the state (jobs, migrations, tenants' and operators' commands) is in
//! [`super::sim`]; the answers to the read-only API commands are in [`super::render`]; keeping
//! it in the database is [`super::persist`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cs_core::CsVersion;
use serde_json::{Value, json};

use super::persist::Persist;
use super::sim::{Action, HaWork};

/// A JSON reply: HTTP status and body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

/// The envelope key of a command (`listHosts` → `listhostsresponse`).
pub(crate) fn response_key(command: &str) -> String {
    format!("{}response", command.to_lowercase())
}

/// An error reply in CloudStack's shape; HTTP status = error code.
pub(crate) fn error_reply(
    command: Option<&str>,
    code: u16,
    cs_code: Option<u32>,
    text: &str,
) -> Reply {
    let key = match command {
        Some(c) if code != 432 && is_known(c) => response_key(c),
        _ => "errorresponse".to_string(),
    };
    let mut inner = json!({"uuidList": [], "errorcode": code, "errortext": text});
    if let Some(cs) = cs_code {
        inner["cserrorcode"] = json!(cs);
    }
    Reply::json(code, &json!({ key: inner }))
}

/// `ApiErrorCode.PARAM_ERROR` (431) with `cserrorcode` 4350, as parameter checks answer.
pub(crate) fn param_error(command: &str, text: &str) -> Reply {
    error_reply(Some(command), 431, Some(4350), text)
}

/// Commands the lab answers.
pub(crate) const COMMANDS: [&str; 40] = [
    "listCapabilities",
    "listManagementServers",
    "listHosts",
    "listSystemVms",
    "listRouters",
    "listVirtualMachines",
    "listNetworks",
    "listZones",
    "listClusters",
    "listConfigurations",
    "listEvents",
    "listTemplates",
    "listOsTypes",
    "registerTemplate",
    "deleteTemplate",
    "listVolumes",
    "updateConfiguration",
    "prepareHostForMaintenance",
    "cancelHostMaintenance",
    "deployVirtualMachine",
    "startVirtualMachine",
    "stopVirtualMachine",
    "rebootVirtualMachine",
    "destroyVirtualMachine",
    "migrateVirtualMachine",
    "startSystemVm",
    "stopSystemVm",
    "rebootSystemVm",
    "destroySystemVm",
    "patchSystemVm",
    "rebootRouter",
    "startRouter",
    "stopRouter",
    "upgradeRouterTemplate",
    "restartNetwork",
    "queryAsyncJobResult",
    "listAsyncJobs",
    "login",
    "logout",
    "listAccounts",
];

pub(crate) fn is_known(command: &str) -> bool {
    COMMANDS.contains(&command)
}

/// The admin account every lab object belongs to (the fixture's `admin`, account 2, domain 1,
/// user 2).
pub(crate) const ADMIN_ACCOUNT: u64 = 2;
pub(crate) const ROOT_DOMAIN: u64 = 1;
pub(crate) const ADMIN_USER: u64 = 2;

/// A service offering the lab knows by database id. The lab's subset of the schema has no
/// `service_offering` table, so the stock offerings CloudStack creates at install are here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offering {
    pub(crate) db_id: u64,
    pub(crate) name: &'static str,
    pub(crate) cpus: u32,
    pub(crate) speed: u32,
    pub(crate) memory_mb: u64,
}

/// CloudStack's stock offerings (`ConfigurationServerImpl.createServiceOfferings` and the
/// system offerings of the console proxy, secondary storage VM and router managers).
pub(crate) const OFFERINGS: &[Offering] = &[
    Offering {
        db_id: 1,
        name: "Small Instance",
        cpus: 1,
        speed: 500,
        memory_mb: 512,
    },
    Offering {
        db_id: 2,
        name: "Medium Instance",
        cpus: 2,
        speed: 1000,
        memory_mb: 2048,
    },
    Offering {
        db_id: 9,
        name: "System Offering For Secondary Storage VM",
        cpus: 1,
        speed: 500,
        memory_mb: 512,
    },
    Offering {
        db_id: 10,
        name: "System Offering For Console Proxy",
        cpus: 1,
        speed: 500,
        memory_mb: 1024,
    },
    Offering {
        db_id: 11,
        name: "System Offering For Software Router",
        cpus: 1,
        speed: 500,
        memory_mb: 256,
    },
];

pub(crate) fn offering(db_id: u64) -> Offering {
    OFFERINGS
        .iter()
        .copied()
        .find(|o| o.db_id == db_id)
        .unwrap_or(OFFERINGS[1])
}

/// The user template every lab user VM runs (the fixture's template 201).
pub(crate) const USER_TEMPLATE: u64 = 201;

#[derive(Debug, Clone)]
pub(crate) struct Zone {
    pub(crate) id: String,
    pub(crate) db_id: u64,
    pub(crate) name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub(crate) id: String,
    pub(crate) db_id: u64,
    pub(crate) name: String,
    pub(crate) zone: usize,
    pub(crate) pod_id: String,
    pub(crate) pod_name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Ms {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) version: String,
}

/// What a hypervisor offers to VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCapacity {
    /// CPU cores.
    pub cpus: u32,
    /// MHz per core.
    pub speed: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
}

impl Default for HostCapacity {
    /// 32 cores of 2.4 GHz and 256 GiB: room for every VM a small lab places.
    fn default() -> Self {
        HostCapacity {
            cpus: 32,
            speed: 2400,
            memory_mb: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LabHost {
    pub(crate) id: String,
    pub(crate) db_id: u64,
    pub(crate) name: String,
    /// Connection state (`status`): Up, Disconnected, …
    pub(crate) state: String,
    pub(crate) resource_state: String,
    /// The agent version.
    pub(crate) version: String,
    pub(crate) ip: String,
    pub(crate) cluster: usize,
    pub(crate) capacity: HostCapacity,
}

impl LabHost {
    pub(crate) fn is_up_and_enabled(&self) -> bool {
        self.state == "Up" && self.resource_state == "Enabled"
    }
}

/// What kind of VM: `vm_instance.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VmKind {
    User,
    SecondaryStorageVm,
    ConsoleProxy,
    DomainRouter,
}

impl VmKind {
    pub(crate) fn db(self) -> &'static str {
        match self {
            VmKind::User => "User",
            VmKind::SecondaryStorageVm => "SecondaryStorageVm",
            VmKind::ConsoleProxy => "ConsoleProxy",
            VmKind::DomainRouter => "DomainRouter",
        }
    }

    pub(crate) fn from_db(s: &str) -> Option<VmKind> {
        Some(match s {
            "User" => VmKind::User,
            "SecondaryStorageVm" => VmKind::SecondaryStorageVm,
            "ConsoleProxy" => VmKind::ConsoleProxy,
            "DomainRouter" => VmKind::DomainRouter,
            _ => return None,
        })
    }

    /// `systemvmtype` of `listSystemVms`.
    pub(crate) fn api(self) -> &'static str {
        match self {
            VmKind::SecondaryStorageVm => "secondarystoragevm",
            VmKind::ConsoleProxy => "consoleproxy",
            VmKind::DomainRouter => "domainrouter",
            VmKind::User => "user",
        }
    }

    /// The host type of a system VM's agent (`listHosts type=`).
    pub(crate) fn host_type(self) -> Option<&'static str> {
        match self {
            VmKind::SecondaryStorageVm => Some("SecondaryStorageVM"),
            VmKind::ConsoleProxy => Some("ConsoleProxy"),
            _ => None,
        }
    }

    /// The name prefix (`VirtualMachineName.getSystemVmName`: `s-12-VM`, `v-13-VM`,
    /// `r-14-VM`).
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            VmKind::SecondaryStorageVm => "s",
            VmKind::ConsoleProxy => "v",
            VmKind::DomainRouter => "r",
            VmKind::User => "i",
        }
    }

    pub(crate) fn is_system(self) -> bool {
        matches!(self, VmKind::SecondaryStorageVm | VmKind::ConsoleProxy)
    }

    pub(crate) fn offering(self) -> u64 {
        match self {
            VmKind::User => 2,
            VmKind::SecondaryStorageVm => 9,
            VmKind::ConsoleProxy => 10,
            VmKind::DomainRouter => 11,
        }
    }
}

/// A virtual router's own facts (`domain_router`).
#[derive(Debug, Clone)]
pub(crate) struct RouterInfo {
    pub(crate) network: usize,
    /// `redundant_state`: PRIMARY or BACKUP for a redundant pair.
    pub(crate) redundant_state: Option<&'static str>,
    /// `template_version`, as the router reports it when it starts (`Cloudstack Release
    /// 4.18.0 ...`); `None` until it first reports.
    pub(crate) template_version: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Vm {
    /// `uuid`, the API id.
    pub(crate) id: String,
    /// `vm_instance.id`.
    pub(crate) db_id: u64,
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) instance_name: String,
    pub(crate) kind: VmKind,
    pub(crate) state: String,
    pub(crate) host: Option<usize>,
    pub(crate) last_host: Option<usize>,
    pub(crate) zone: usize,
    pub(crate) offering: Offering,
    /// Its root disk is on the host's local storage (it cannot live-migrate).
    pub(crate) local_storage: bool,
    /// `vm_template_id`: what the next CloudStack start boots.
    pub(crate) template_id: u64,
    /// The template of the root disk it runs on now (system VMs and routers keep theirs until
    /// CloudStack stops and starts them).
    pub(crate) booted_template: Option<u64>,
    /// A system VM's agent version (`listSystemVms.version`).
    pub(crate) agent_version: Option<String>,
    pub(crate) router: Option<RouterInfo>,
    pub(crate) created: String,
}

impl Vm {
    /// Whether its resources count against its host (`CapacityManager`: Starting, Running,
    /// Migrating and Stopping VMs hold their host's capacity).
    pub(crate) fn holds_capacity(&self) -> bool {
        matches!(
            self.state.as_str(),
            "Starting" | "Running" | "Migrating" | "Stopping"
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) zone: usize,
    pub(crate) redundant: bool,
}

/// A `vm_template` row and its copies on the image stores (`template_store_ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) db_id: u64,
    /// `uuid`, the API id.
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) display_text: String,
    /// `type`: `USER`, `SYSTEM`, `ROUTING`, `BUILTIN`, `PERHOST`, …
    pub(crate) kind: String,
    /// `hypervisor_type` (`KVM`, `XenServer`, …).
    pub(crate) hypervisor: String,
    /// `format` (`QCOW2`, `VHD`, …).
    pub(crate) format: String,
    /// `guest_os_id`.
    pub(crate) guest_os: u64,
    /// `account_id`: 1 (system) for the templates CloudStack installs, the caller's otherwise.
    pub(crate) account: u64,
    /// `unique_name` (`routing-<id>` for system VM templates).
    pub(crate) unique_name: String,
    pub(crate) public: bool,
    pub(crate) featured: bool,
    pub(crate) extractable: bool,
    pub(crate) password_enabled: bool,
    pub(crate) sshkey_enabled: bool,
    pub(crate) dynamically_scalable: bool,
    /// `hvm`.
    pub(crate) requires_hvm: bool,
    pub(crate) bits: u32,
    pub(crate) cross_zones: bool,
    pub(crate) url: Option<String>,
    pub(crate) checksum: Option<String>,
    /// `state` of the template itself (`Active`, `Inactive`, `NotUploaded`, …).
    pub(crate) state: String,
    /// `size` (virtual), set when a download completes.
    pub(crate) size: Option<u64>,
    /// `created`, `yyyy-MM-dd HH:mm:ss` UTC.
    pub(crate) created: String,
    /// The release of a system VM template (`systemvm-kvm-4.19.0` → 4.19.0).
    pub(crate) version: Option<CsVersion>,
    /// Its `template_store_ref` rows on image stores (role `Image`, not destroyed).
    pub(crate) stores: Vec<StoreRef>,
}

impl Template {
    pub(crate) fn is_system(&self) -> bool {
        self.kind == "SYSTEM"
    }
}

/// A `template_store_ref` row: a template's copy on one image store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreRef {
    /// `store_id` (`image_store.id`).
    pub(crate) store: u64,
    pub(crate) created: String,
    /// `download_state`: NULL until the secondary storage VM first answers, then
    /// `DOWNLOAD_IN_PROGRESS`, `DOWNLOADED`, `DOWNLOAD_ERROR`, …
    pub(crate) download_state: Option<String>,
    pub(crate) download_pct: u32,
    /// `state` (`ObjectInDataStoreStateMachine.State`): `Allocated`, `Creating2`, `Ready`, …
    pub(crate) state: String,
    /// `error_str`.
    pub(crate) error: Option<String>,
    pub(crate) install_path: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) physical_size: u64,
}

impl StoreRef {
    /// A copy that is there (`DOWNLOADED`, `Ready`), as the templates CloudStack installs have.
    pub(crate) fn ready(store: u64, template: u64, account: u64, created: &str) -> StoreRef {
        StoreRef {
            store,
            created: created.to_string(),
            download_state: Some("DOWNLOADED".into()),
            download_pct: 100,
            state: "Ready".into(),
            error: None,
            install_path: Some(format!(
                "template/tmpl/{account}/{template}/{template}.qcow2"
            )),
            size: Some(SYSTEM_TEMPLATE_SIZE),
            physical_size: SYSTEM_TEMPLATE_PHYSICAL_SIZE,
        }
    }
}

/// The virtual and physical size of a downloaded template (those of the KVM system VM
/// templates in the lab's fixture: 5 GiB, 535 MiB on disk).
pub(crate) const SYSTEM_TEMPLATE_SIZE: u64 = 5_368_709_120;
pub(crate) const SYSTEM_TEMPLATE_PHYSICAL_SIZE: u64 = 561_242_112;

/// An image store (`image_store`, role `Image`) of one of the cloud's zones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageStore {
    pub(crate) db_id: u64,
    pub(crate) name: String,
    pub(crate) zone: usize,
}

/// A guest OS type (`guest_os` and its `guest_os_category`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestOs {
    pub(crate) db_id: u64,
    pub(crate) id: String,
    /// `display_name`.
    pub(crate) name: String,
    pub(crate) category_id: String,
    pub(crate) category_name: String,
    pub(crate) user_defined: bool,
}

/// The release of a system VM template name (`systemvm-kvm-4.19.0` → 4.19.0).
pub(crate) fn template_version(name: &str) -> Option<CsVersion> {
    let v = name.strip_prefix("systemvm-")?.split_once('-')?.1;
    CsVersion::parse(v).ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) state: &'static str,
    pub(crate) level: &'static str,
    pub(crate) description: String,
    pub(crate) resource_id: Option<u64>,
    pub(crate) resource_type: Option<&'static str>,
    /// `yyyy-MM-dd HH:mm:ss`, UTC.
    pub(crate) created: String,
}

/// What a job ended with.
#[derive(Debug, Clone)]
pub(crate) enum JobOutcome {
    Success(Value),
    Failure { code: u16, text: String },
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) cmd: String,
    pub(crate) instance_type: &'static str,
    pub(crate) instance_id: Option<String>,
    pub(crate) polls_left: u32,
    pub(crate) outcome: Option<JobOutcome>,
    pub(crate) created: String,
    /// A failure injected for this job, delivered when its work would end.
    pub(crate) injected: Option<String>,
    /// The action event the job completes (see `Cloud::vm_job`).
    pub(crate) event: Option<JobEvent>,
}

/// The action event a job ends with: its type, what it did, and the resource.
#[derive(Debug, Clone)]
pub(crate) struct JobEvent {
    pub(crate) kind: String,
    pub(crate) what: String,
    pub(crate) resource: Option<(u64, &'static str)>,
}

/// How long the lab's simulated operations take, and the intervals of CloudStack's background
/// tasks, scaled down from CloudStack's defaults so tests run in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// A VM start (Starting → Running).
    pub start: Duration,
    /// A VM stop (Stopping → Stopped).
    pub stop: Duration,
    /// One live migration (Migrating → Running on the destination).
    pub migrate: Duration,
    /// A hypervisor reboot of a VM.
    pub reboot: Duration,
    /// Expunging a VM.
    pub destroy: Duration,
    /// A live patch of a system VM or router.
    pub patch: Duration,
    /// `secstorage.capacityscan.interval` / `consoleproxy.capacityscan.interval` (30 s in
    /// CloudStack): how soon a destroyed system VM is recreated.
    pub capacity_scan: Duration,
    /// `ping.interval` (60 s): how often `AgentManagerImpl.MonitorTask` checks hosts preparing
    /// for maintenance.
    pub ping_interval: Duration,
    /// `migrate.retry.interval` (120 s) between HA migration attempts.
    pub migrate_retry: Duration,
    /// `max.retries` (5): HA migration attempts before giving up.
    pub max_retries: u32,
    /// How long the secondary storage VM takes to download a registered template to an image
    /// store, from the registration (or from when a secondary storage VM runs in the zone) to
    /// `DOWNLOADED`, through progress reports of 0, 25, 50, 75 and 100 % (minutes to hours in
    /// CloudStack, depending on the image and the network).
    pub template_download: Duration,
    /// How long the secondary storage VM takes to delete a template's copy from one image
    /// store (`DeleteCommand`; `deleteTemplate` waits for each copy in turn).
    pub template_delete: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            start: Duration::from_millis(150),
            stop: Duration::from_millis(100),
            migrate: Duration::from_millis(200),
            reboot: Duration::from_millis(150),
            destroy: Duration::from_millis(100),
            patch: Duration::from_millis(150),
            capacity_scan: Duration::from_millis(300),
            ping_interval: Duration::from_millis(150),
            migrate_retry: Duration::from_millis(100),
            max_retries: 5,
            template_download: Duration::from_millis(600),
            template_delete: Duration::from_millis(100),
        }
    }
}

/// The guests libvirt runs on the lab's hypervisors: where the simulated management server
/// starts, stops and moves domains, and what the simulated power-state sync reads.
pub(crate) trait Hypervisors: Send + Sync + std::fmt::Debug {
    /// Starts (defines and runs) domain `instance` on host `host`.
    fn start(&self, host: &str, instance: &str);
    /// Destroys domain `instance` on host `host`.
    fn stop(&self, host: &str, instance: &str);
    /// The running domains of `host`; `None` for a host the lab has no node for.
    fn running(&self, host: &str) -> Option<Vec<String>>;
}

/// The whole cloud.
#[derive(Debug, Default)]
pub(crate) struct Cloud {
    next_id: u64,
    next_db_id: u64,
    next_event: u64,
    /// What `listCapabilities` says while no management server is known.
    pub(crate) version: String,
    pub(crate) zones: Vec<Zone>,
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) ms: Vec<Ms>,
    pub(crate) hosts: Vec<LabHost>,
    pub(crate) vms: Vec<Vm>,
    pub(crate) networks: Vec<Network>,
    pub(crate) templates: Vec<Template>,
    /// The image stores of the cloud's zones.
    pub(crate) image_stores: Vec<ImageStore>,
    /// The guest OS types (`listOsTypes`).
    pub(crate) guest_os: Vec<GuestOs>,
    /// The uuids of removed templates (`vm_template.removed` set) and their ids:
    /// `ParamProcessWorker` still translates them (`findByUuidIncludingRemoved`), the
    /// commands then find nothing.
    pub(crate) removed_templates: HashMap<String, u64>,
    /// The next `vm_template.id` a registration gets.
    pub(crate) next_template_id: u64,
    /// While set, template downloads end in `DOWNLOAD_ERROR` with this text.
    pub(crate) fail_template_downloads: Option<String>,
    pub(crate) configs: BTreeMap<String, String>,
    pub(crate) events: Vec<Event>,
    pub(crate) jobs: HashMap<String, Job>,
    pub(crate) job_polls: u32,
    pub(crate) fail_next_job: Option<String>,
    /// Jobs acting on these VMs (by name) fail with the text.
    pub(crate) fail_vm_jobs: HashMap<String, String>,
    pub(crate) timings: Timings,
    pub(crate) timeline: BTreeMap<(Instant, u64), Action>,
    pub(crate) timeline_seq: u64,
    pub(crate) ha_work: Vec<HaWork>,
    /// Answer only while a management server is Up (the lab turns this on).
    pub(crate) gate: bool,
    pub(crate) persist: Option<Persist>,
    pub(crate) hypervisors: Option<Arc<dyn Hypervisors>>,
    /// Bumped by every change made here, so a reload from the database started before a
    /// change does not undo it.
    pub(crate) generation: u64,
}

/// Parameters of one request.
pub(crate) type Params = HashMap<String, String>;

/// `yyyy-MM-dd HH:mm:ss` now, UTC (the database's `datetime` columns).
pub(crate) fn db_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    now.format(&fmt).unwrap_or_default()
}

/// A `datetime` column value as the API prints dates (`2025-10-30T11:00:00+0000`).
pub(crate) fn api_date(db: &str) -> String {
    format!("{}+0000", db.replacen(' ', "T", 1))
}

/// `CloudStackVersion.trimRouterVersion`: the third word of `Cloudstack Release 4.19.0 ...`
/// when it looks like a version, else `0`.
pub(crate) fn trim_router_version(reported: &str) -> String {
    match reported.split(' ').nth(2) {
        Some(v) if CsVersion::parse(v).is_ok() => v.to_string(),
        _ => "0".to_string(),
    }
}

/// What a router reports as its release after booting a template of version `v`.
pub(crate) fn router_release(v: &CsVersion) -> String {
    let [a, b, c, _] = v.padded();
    format!("Cloudstack Release {a}.{b}.{c} Mon Jan 12 10:00:00 UTC 2026")
}

/// `CloudStackVersion.compare(a, b) < 0`, where an unparsable side counts as lowest.
pub(super) fn version_below(a: &str, b: &str) -> bool {
    match (CsVersion::parse(a), CsVersion::parse(b)) {
        (Ok(a), Ok(b)) => a < b,
        (Err(_), Ok(_)) => true,
        _ => false,
    }
}

impl Cloud {
    pub(crate) fn new() -> Cloud {
        let mut c = Cloud {
            version: "4.20.0.0".into(),
            job_polls: 1,
            next_db_id: 100,
            ..Cloud::default()
        };
        c.configs.insert("integration.api.port".into(), "0".into());
        c.configs.insert("default.page.size".into(), "500".into());
        c.configs.insert(
            "enforce.post.requests.and.timestamps".into(),
            "false".into(),
        );
        c.configs
            .insert("minreq.sysvmtemplate.version".into(), "4.20.0".into());
        c.configs
            .insert("router.template.kvm".into(), "systemvm-kvm-4.20.0".into());
        c.add_template(1_020, "systemvm-kvm-4.20.0");
        c.guest_os = crate::seed::fixture_guest_os();
        c.next_template_id = 205;
        c
    }

    pub(crate) fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("8b6f0c3e-0000-4000-8000-{:012x}", self.next_id)
    }

    /// The next `vm_instance.id`.
    pub(crate) fn new_db_id(&mut self) -> u64 {
        self.next_db_id += 1;
        self.next_db_id
    }

    /// Makes [`Cloud::new_db_id`] hand out `next` or higher.
    pub(crate) fn set_next_db_id(&mut self, next: u64) {
        self.next_db_id = self.next_db_id.max(next.saturating_sub(1));
    }

    pub(crate) fn new_event_id(&mut self) -> String {
        self.next_event += 1;
        format!("8b6f0c3e-0000-4000-8003-{:012x}", self.next_event)
    }

    /// A KVM system VM template as the upgrade's `SystemVmTemplateRegistration` leaves it
    /// (`SYSTEM`, owned by the system account, guest OS 15, cross-zone, Ready on every image
    /// store), unless one with id `db_id` is known.
    pub(crate) fn add_template(&mut self, db_id: u64, name: &str) -> usize {
        if let Some(i) = self.templates.iter().position(|t| t.db_id == db_id) {
            return i;
        }
        let id = self.new_id();
        let created = db_now();
        let stores = self
            .image_stores
            .iter()
            .map(|s| StoreRef::ready(s.db_id, db_id, 1, &created))
            .collect();
        self.templates.push(Template {
            db_id,
            id,
            name: name.to_string(),
            display_text: name.to_string(),
            kind: "SYSTEM".into(),
            hypervisor: "KVM".into(),
            format: "QCOW2".into(),
            guest_os: 15,
            account: 1,
            unique_name: format!("routing-{db_id}"),
            public: false,
            featured: false,
            extractable: false,
            password_enabled: false,
            sshkey_enabled: false,
            dynamically_scalable: false,
            requires_hvm: false,
            bits: 64,
            cross_zones: true,
            url: None,
            checksum: None,
            state: "Active".into(),
            size: Some(SYSTEM_TEMPLATE_SIZE),
            created,
            version: template_version(name),
            stores,
        });
        self.next_template_id = self.next_template_id.max(db_id + 1);
        self.templates.len() - 1
    }

    /// The system VM template a new system VM or router gets: the `SYSTEM` KVM template that
    /// `router.template.kvm` names (what `SystemVmTemplateRegistration` sets at an upgrade, and
    /// what `VirtualNetworkApplianceManagerImpl` looks routers' templates up by, among
    /// `SYSTEM` templates: `VMTemplateDaoImpl.findRoutingTemplate`), else the newest `SYSTEM`
    /// one. A template registered ahead of an upgrade is not used before the upgrade makes it
    /// `SYSTEM` and names it: an operator's registration is a `USER` template until then.
    pub(crate) fn current_system_template(&self) -> Option<&Template> {
        let named = self.configs.get("router.template.kvm");
        let system = || {
            self.templates
                .iter()
                .filter(|t| t.is_system() && t.hypervisor == "KVM")
        };
        system()
            .filter(|t| Some(&t.name) == named)
            .max_by_key(|t| t.db_id)
            .or_else(|| {
                system()
                    .filter(|t| t.version.is_some())
                    .max_by_key(|t| (t.version, t.db_id))
            })
    }

    pub(crate) fn template(&self, db_id: u64) -> Option<&Template> {
        self.templates.iter().find(|t| t.db_id == db_id)
    }

    pub(crate) fn zone_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.zones.iter().position(|z| z.name == name) {
            return i;
        }
        let id = self.new_id();
        let db_id = self.zones.len() as u64 + 1;
        self.zones.push(Zone {
            id,
            db_id,
            name: name.to_string(),
        });
        let zone = self.zones.len() - 1;
        // Its secondary storage, where the system VM templates are, as on a zone CloudStack
        // set up.
        let store = self.image_stores.iter().map(|s| s.db_id).max().unwrap_or(0) + 1;
        self.image_stores.push(ImageStore {
            db_id: store,
            name: format!("nfs-sec-{name}"),
            zone,
        });
        for t in self.templates.iter_mut().filter(|t| t.is_system()) {
            let r = StoreRef::ready(store, t.db_id, t.account, &t.created);
            t.stores.push(r);
        }
        zone
    }

    pub(crate) fn cluster_index(&mut self, zone: &str, cluster: &str) -> usize {
        let z = self.zone_index(zone);
        if let Some(i) = self
            .clusters
            .iter()
            .position(|c| c.name == cluster && c.zone == z)
        {
            return i;
        }
        let id = self.new_id();
        let pod_id = format!("8b6f0c3e-0000-4000-8001-{z:012x}");
        self.clusters.push(Cluster {
            id,
            db_id: self.clusters.len() as u64 + 1,
            name: cluster.to_string(),
            zone: z,
            pod_id,
            pod_name: "pod1".into(),
        });
        self.clusters.len() - 1
    }

    pub(crate) fn host_index(&self, key: &str) -> Option<usize> {
        self.hosts
            .iter()
            .position(|h| h.id == key || h.name == key || h.ip == key)
    }

    pub(crate) fn vm_index(&self, key: &str) -> Option<usize> {
        self.vms.iter().position(|v| v.id == key || v.name == key)
    }

    /// The version of the management server that answers: the first one Up.
    pub(crate) fn answering_version(&self) -> String {
        self.ms
            .iter()
            .find(|m| m.state == "Up")
            .map_or_else(|| self.version.clone(), |m| m.version.clone())
    }

    /// Whether a management server serves the API (always, unless the gate is on).
    pub(crate) fn serving(&self) -> bool {
        !self.gate || self.ms.iter().any(|m| m.state == "Up")
    }

    /// Memory (MiB) and CPU (MHz) the VMs placed on host `h` hold.
    pub(crate) fn used(&self, h: usize) -> (u64, u64) {
        self.vms
            .iter()
            .filter(|v| v.host == Some(h) && v.holds_capacity())
            .fold((0, 0), |(m, c), v| {
                (
                    m + v.offering.memory_mb,
                    c + u64::from(v.offering.cpus) * u64::from(v.offering.speed),
                )
            })
    }

    /// `CapacityManager.checkIfHostHasCapacity` with the default over-provisioning factors of 1
    /// (`cpu.overprovisioning.factor`, `mem.overprovisioning.factor`).
    pub(crate) fn has_capacity(&self, h: usize, o: &Offering) -> bool {
        let cap = self.hosts[h].capacity;
        let (mem, cpu) = self.used(h);
        mem + o.memory_mb <= cap.memory_mb
            && cpu + u64::from(o.cpus) * u64::from(o.speed)
                <= u64::from(cap.cpus) * u64::from(cap.speed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_versions_trim_as_cloudstack_does() {
        assert_eq!(
            trim_router_version("Cloudstack Release 4.19.0 Mon Jan 12 10:00:00 UTC 2026"),
            "4.19.0"
        );
        assert_eq!(trim_router_version("garbage"), "0");
        assert_eq!(
            trim_router_version(&router_release(&"4.18.1.0".parse().unwrap())),
            "4.18.1"
        );
        assert!(version_below("4.18.0", "4.19.0"));
        assert!(!version_below("4.19.0", "4.19.0"));
        assert!(version_below("0", "4.19.0"));
    }

    #[test]
    fn system_template_names_carry_their_release() {
        assert_eq!(
            template_version("systemvm-kvm-4.19.0"),
            Some("4.19.0".parse().unwrap())
        );
        assert_eq!(template_version("ubuntu"), None);
    }
}
