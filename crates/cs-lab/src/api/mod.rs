//! The lab's CloudStack API endpoint: verifies signatures as `ApiServer.verifyRequest` does,
//! answers from a configurable cloud, records requests and injects faults.

mod persist;
mod render;
mod server;
mod sim;
mod state;
mod tenant;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use cs_core::Secret;

use crate::{LabError, Result};
use server::{serve, step, tick};
use state::{Cloud, LabHost, Ms, Network, RouterInfo, VmKind};
pub(crate) use state::{GuestOs, Hypervisors};
pub use state::{HostCapacity, Timings};
pub use tenant::{Tenant, TenantActor, TenantChange, TenantOptions};

/// The error a secondary storage VM reports for a template whose URL answers 404
/// (`HttpTemplateDownloader`: `" HTTP Server returned 404 (expected 200 OK) "`, spaces
/// included), for [`LabApi::fail_template_downloads`].
pub const TEMPLATE_DOWNLOAD_ERROR: &str = sim::DEFAULT_DOWNLOAD_ERROR;

/// A fault the endpoint injects into matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer normally, after this delay.
    Delay(Duration),
    /// Answer with this HTTP status and a non-CloudStack body (as a proxy in front would).
    Status(u16),
    /// Answer with a CloudStack error envelope; HTTP status = `code`.
    ApiError {
        /// `errorcode` and HTTP status.
        code: u16,
        /// `errortext`.
        text: String,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Panic in the request handler (to test that handler panics fail the test).
    Panic,
}

#[derive(Debug, Clone)]
struct FaultRule {
    command: Option<String>,
    remaining: u32,
    fault: Fault,
}

/// One request as the endpoint received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The `command` parameter.
    pub command: Option<String>,
    /// Every parameter, decoded (the signature included).
    pub params: BTreeMap<String, String>,
    /// The HTTP status answered (0 when the connection was dropped).
    pub status: u16,
}

/// A VM as the lab's cloud has it (every kind: user VMs, system VMs, routers).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabVm {
    /// The API id.
    pub id: String,
    /// `vm_instance.id`.
    pub db_id: u64,
    /// Its name (`vm001`, `s-12-VM`).
    pub name: String,
    /// The libvirt domain's name (`i-2-12-VM`).
    pub instance_name: String,
    /// `vm_instance.type`: `User`, `SecondaryStorageVm`, `ConsoleProxy`, `DomainRouter`.
    pub kind: String,
    /// Its state.
    pub state: String,
    /// The host it is on.
    pub host: Option<String>,
    /// `last_host_id`'s host.
    pub last_host: Option<String>,
    /// The template its next CloudStack start boots (`vm_template_id`).
    pub template: Option<String>,
    /// The template of the root disk it runs on.
    pub booted_template: Option<String>,
    /// A system VM's agent version.
    pub agent_version: Option<String>,
}

/// An event as the lab's cloud wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabEvent {
    /// `VM.START`, `MAINT.PREPARE`, …
    pub kind: String,
    /// `Scheduled`, `Started`, `Created`, `Completed`.
    pub state: String,
    /// `INFO` or `ERROR`.
    pub level: String,
    /// The description.
    pub description: String,
    /// `yyyy-MM-dd HH:mm:ss`, UTC.
    pub created: String,
}

/// A bundle of settings to populate a cloud at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSpec {
    /// Version of management servers, agents and system VMs.
    pub version: String,
    /// Management servers.
    pub management_servers: usize,
    /// Clusters (in one zone).
    pub clusters: usize,
    /// Hypervisors per cluster.
    pub hosts_per_cluster: usize,
    /// Running VMs, spread round-robin over the hosts.
    pub vms: usize,
}

impl Default for CloudSpec {
    fn default() -> Self {
        CloudSpec {
            version: "4.20.0.0".into(),
            management_servers: 1,
            clusters: 2,
            hosts_per_cluster: 2,
            vms: 8,
        }
    }
}

struct Session {
    key: String,
}

struct Shared {
    cloud: RwLock<Cloud>,
    /// Reads the cloud back from its database, when one is attached.
    reader: Mutex<Option<persist::Reader>>,
    keys: Mutex<HashMap<String, String>>,
    users: Mutex<HashMap<String, String>>,
    sessions: Mutex<HashMap<String, Session>>,
    faults: Mutex<Vec<FaultRule>>,
    requests: Mutex<Vec<RecordedRequest>>,
    panics: Mutex<Vec<String>>,
    enforce_post: Mutex<bool>,
    clock_skew: Mutex<i64>,
    record: Mutex<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lab's API endpoint on 127.0.0.1, with its cloud state behind this handle.
///
/// Starts with one admin key pair ([`LabApi::api_key`], [`LabApi::secret_key`]) and an empty
/// cloud at version 4.20.0.0; add servers, hosts and VMs with the methods below, or
/// [`LabApi::populate`]. Dropping it stops the server; a panic in a request handler is
/// answered with HTTP 500, recorded, and re-raised when the handle is dropped (or read with
/// [`LabApi::take_panics`]), so it fails the test.
///
/// ```
/// let lab = cs_lab::LabApi::start().unwrap();
/// lab.populate(&cs_lab::CloudSpec::default());
/// assert!(lab.endpoint().starts_with("http://127.0.0.1:"));
/// ```
pub struct LabApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    api_key: String,
    secret: Secret,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for LabApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabApi")
            .field("endpoint", &self.endpoint())
            .finish_non_exhaustive()
    }
}

impl LabApi {
    /// Starts the endpoint on a free port of 127.0.0.1, served by a thread of its own.
    ///
    /// # Errors
    /// [`LabError::Io`] when no port can be bound or the runtime cannot start.
    pub fn start() -> Result<LabApi> {
        let api_key = format!("lab-key-{}", crate::util::token(24));
        let secret = Secret::new(crate::util::token(40));
        let shared = Arc::new(Shared {
            cloud: RwLock::new(Cloud::new()),
            reader: Mutex::new(None),
            keys: Mutex::new(HashMap::from([(
                api_key.clone(),
                secret.expose().to_string(),
            )])),
            users: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            panics: Mutex::new(Vec::new()),
            enforce_post: Mutex::new(false),
            clock_skew: Mutex::new(0),
            record: Mutex::new(true),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| LabError::io("bind the lab API endpoint", e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| LabError::io("configure the lab API socket", e))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| LabError::io("lab API address", e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lab-api")
            .enable_all()
            .build()
            .map_err(|e| LabError::io("start the lab API runtime", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("lab-api".into())
            .spawn(move || {
                rt.spawn(tick(s.clone()));
                rt.block_on(serve(std_listener, s, rx));
            })
            .map_err(|e| LabError::io("spawn the lab API thread", e))?;
        Ok(LabApi {
            shared,
            addr,
            api_key,
            secret,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>/client/api`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/client/api", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API key.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The admin secret key.
    pub fn secret_key(&self) -> &Secret {
        &self.secret
    }

    /// Adds another key pair.
    pub fn add_key_pair(&self, api_key: &str, secret: &str) {
        lock(&self.shared.keys).insert(api_key.into(), secret.into());
    }

    /// Adds a user for `login`.
    pub fn add_user(&self, username: &str, password: &str) {
        lock(&self.shared.users).insert(username.into(), password.into());
    }

    fn cloud(&self) -> std::sync::RwLockWriteGuard<'_, Cloud> {
        self.shared
            .cloud
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Fills the cloud: management servers `ms1…`, clusters `cluster1…` of hosts `kvm0001…`,
    /// one SSVM and one CPVM, and Running VMs `vm00001…` spread over the hosts.
    pub fn populate(&self, spec: &CloudSpec) {
        let mut c = self.cloud();
        c.version = spec.version.clone();
        for i in 0..spec.management_servers {
            let id = c.new_id();
            c.ms.push(Ms {
                id,
                name: format!("ms{}", i + 1),
                state: "Up".into(),
                version: spec.version.clone(),
            });
        }
        let mut n = c.hosts.len();
        for ci in 0..spec.clusters {
            let cl = c.cluster_index("zone1", &format!("cluster{}", ci + 1));
            for _ in 0..spec.hosts_per_cluster {
                n += 1;
                let id = c.new_id();
                c.hosts.push(LabHost {
                    id,
                    db_id: n as u64,
                    name: format!("kvm{n:04}"),
                    state: "Up".into(),
                    resource_state: "Enabled".into(),
                    version: spec.version.clone(),
                    ip: format!("192.0.{}.{}", 2 + n / 250, n % 250 + 1),
                    cluster: cl,
                    capacity: HostCapacity::default(),
                });
            }
        }
        let zone = c.zone_index("zone1");
        let template = c.current_system_template().map_or(0, |t| t.db_id);
        for kind in [VmKind::SecondaryStorageVm, VmKind::ConsoleProxy] {
            if !c.vms.iter().any(|v| v.kind == kind) {
                let vm = c.create_vm(kind, zone, None, template, None);
                let host = (!c.hosts.is_empty()).then_some(0);
                c.place_running(vm, host);
            }
        }
        let hosts = c.hosts.len();
        c.vms.reserve(spec.vms);
        for i in 0..spec.vms {
            let number = c.vms.iter().filter(|v| v.kind == VmKind::User).count() + 1;
            let vm = c.create_vm(
                VmKind::User,
                zone,
                Some(&format!("vm{number:05}")),
                state::USER_TEMPLATE,
                None,
            );
            c.place_running(vm, (hosts > 0).then_some(i % hosts.max(1)));
        }
    }

    /// Adds what a zone runs besides tenants' VMs: one SSVM and one CPVM, `networks` isolated
    /// guest networks with a router each, and `redundant` ones with a PRIMARY and a BACKUP
    /// router on different hosts; all Running on the newest system VM template, spread over
    /// the hosts.
    pub fn populate_appliances(&self, networks: usize, redundant: usize) {
        let mut c = self.cloud();
        let zone = c.zone_index("zone1");
        let template = c.current_system_template().map_or(0, |t| t.db_id);
        let hosts = c.hosts.len();
        let mut next = 0usize;
        let mut place = |c: &mut Cloud, vm: usize| {
            let h = (hosts > 0).then(|| next % hosts);
            next += 1;
            c.place_running(vm, h);
        };
        for kind in [VmKind::SecondaryStorageVm, VmKind::ConsoleProxy] {
            let vm = c.create_vm(kind, zone, None, template, None);
            place(&mut c, vm);
        }
        for i in 0..networks + redundant {
            let is_redundant = i >= networks;
            let id = c.new_id();
            c.networks.push(Network {
                id,
                name: format!("guestnet-{}", i + 1),
                zone,
                redundant: is_redundant,
            });
            let n = c.networks.len() - 1;
            let states: &[Option<&'static str>] = if is_redundant {
                &[Some("PRIMARY"), Some("BACKUP")]
            } else {
                &[None]
            };
            for state in states {
                let router = RouterInfo {
                    network: n,
                    redundant_state: *state,
                    template_version: None,
                };
                let vm = c.create_vm(VmKind::DomainRouter, zone, None, template, Some(router));
                place(&mut c, vm);
            }
        }
    }

    /// Sets the version `listCapabilities` reports while no management server is known.
    pub fn set_version(&self, version: &str) {
        self.cloud().version = version.into();
    }

    /// Adds a management server; returns its id.
    pub fn add_management_server(&self, name: &str, state: &str, version: &str) -> String {
        let mut c = self.cloud();
        let id = c.new_id();
        c.ms.push(Ms {
            id: id.clone(),
            name: name.into(),
            state: state.into(),
            version: version.into(),
        });
        id
    }

    /// Sets a management server's state and version (by name or id).
    pub fn set_management_server(&self, key: &str, state: &str, version: &str) {
        let mut c = self.cloud();
        if let Some(m) = c.ms.iter_mut().find(|m| m.name == key || m.id == key) {
            m.state = state.into();
            m.version = version.into();
        }
    }

    /// Adds a hypervisor to `cluster` (created in `zone1` when new) with the default
    /// [`HostCapacity`]; returns its id.
    pub fn add_host(&self, cluster: &str, name: &str, version: &str) -> String {
        let mut c = self.cloud();
        let cl = c.cluster_index("zone1", cluster);
        let id = c.new_id();
        let n = c.hosts.len() + 1;
        c.hosts.push(LabHost {
            id: id.clone(),
            db_id: n as u64,
            name: name.into(),
            state: "Up".into(),
            resource_state: "Enabled".into(),
            version: version.into(),
            ip: format!("192.0.{}.{}", 2 + n / 250, n % 250 + 1),
            cluster: cl,
            capacity: HostCapacity::default(),
        });
        id
    }

    /// Sets what a hypervisor offers to VMs (by name, id or IP).
    pub fn set_host_capacity(&self, key: &str, capacity: HostCapacity) {
        let mut c = self.cloud();
        if let Some(i) = c.host_index(key) {
            c.hosts[i].capacity = capacity;
        }
    }

    /// Sets a host's connection state (`Up`, `Disconnected`, …), by name, id or IP.
    pub fn set_host_state(&self, key: &str, state: &str) {
        self.update_host(key, |h| h.state = state.into());
    }

    /// Sets a host's resource state (`Enabled`, `Maintenance`, …).
    pub fn set_host_resource_state(&self, key: &str, state: &str) {
        self.update_host(key, |h| h.resource_state = state.into());
    }

    /// Sets the agent version a host reports.
    pub fn set_host_version(&self, key: &str, version: &str) {
        self.update_host(key, |h| h.version = version.into());
    }

    fn update_host(&self, key: &str, change: impl FnOnce(&mut LabHost)) {
        let mut c = self.cloud();
        if let Some(i) = c.host_index(key) {
            let before = c.hosts[i].clone();
            change(&mut c.hosts[i]);
            let after = c.hosts[i].clone();
            if (&before.state, &before.resource_state, &before.version)
                != (&after.state, &after.resource_state, &after.version)
            {
                c.touch();
                c.save_host_row(i);
            }
        }
    }

    /// Adds a user VM on `host` (none when stopped), in the state given, without going
    /// through a job; returns its id.
    pub fn add_vm(&self, name: &str, state: &str, host: Option<&str>) -> String {
        let mut c = self.cloud();
        let zone = c.zone_index("zone1");
        let h = host.and_then(|h| c.host_index(h));
        let vm = c.create_vm(VmKind::User, zone, Some(name), state::USER_TEMPLATE, None);
        c.place_running(vm, h);
        if state != "Running" {
            c.set_vm_state(vm, state, h);
        }
        c.vms[vm].id.clone()
    }

    /// Puts a user VM's root disk on its host's local storage: it cannot live-migrate, and
    /// maintenance of its host is refused while it runs.
    pub fn set_local_storage(&self, key: &str, local: bool) {
        let mut c = self.cloud();
        if let Some(i) = c.vm_index(key) {
            c.vms[i].local_storage = local;
        }
    }

    /// Sets a VM's state and host (by name or id), without going through a job.
    pub fn set_vm(&self, key: &str, state: &str, host: Option<&str>) {
        let mut c = self.cloud();
        let h = host.and_then(|h| c.host_index(h));
        if let Some(i) = c.vm_index(key) {
            c.set_vm_state(i, state, h);
        }
    }

    /// Sets the state of every VM on `host` (by name or id).
    pub fn set_vms_on_host(&self, host: &str, state: &str) {
        let mut c = self.cloud();
        let Some(h) = c.host_index(host) else {
            return;
        };
        let on: Vec<usize> = (0..c.vms.len())
            .filter(|&v| c.vms[v].host == Some(h) && c.vms[v].kind == VmKind::User)
            .collect();
        for v in on {
            c.set_vm_state(v, state, Some(h));
        }
    }

    /// Removes a VM (by name or id), as an expunge would.
    pub fn remove_vm(&self, key: &str) {
        let mut c = self.cloud();
        if let Some(i) = c.vm_index(key) {
            c.expunge_now(i);
        }
    }

    /// Sets a system VM's state and agent version (`secondarystoragevm` or `consoleproxy`);
    /// adds it when no system VM has that name.
    pub fn set_system_vm(
        &self,
        name: &str,
        kind: &str,
        state: &str,
        _agent_state: &str,
        version: &str,
    ) {
        let mut c = self.cloud();
        let kind = if kind == "consoleproxy" {
            VmKind::ConsoleProxy
        } else {
            VmKind::SecondaryStorageVm
        };
        let vm = match c.vms.iter().position(|v| v.name == name) {
            Some(i) => i,
            None => {
                let zone = c.zone_index("zone1");
                let template = c.current_system_template().map_or(0, |t| t.db_id);
                let i = c.create_vm(kind, zone, None, template, None);
                c.vms[i].name = name.into();
                c.vms[i].display_name = name.into();
                let host = (!c.hosts.is_empty()).then_some(0);
                c.place_running(i, host);
                i
            }
        };
        c.vms[vm].agent_version = Some(version.into());
        let host = c.vms[vm].host;
        c.set_vm_state(vm, state, host);
    }

    /// Adds an isolated guest network (redundant: its routers come as a PRIMARY and BACKUP
    /// pair); returns its id.
    pub fn add_network(&self, name: &str, redundant: bool) -> String {
        let mut c = self.cloud();
        let zone = c.zone_index("zone1");
        let id = c.new_id();
        c.networks.push(Network {
            id: id.clone(),
            name: name.into(),
            zone,
            redundant,
        });
        id
    }

    /// Adds a Running virtual router of network `network` (by name; created when new) that
    /// booted a system VM template of release `version` (`4.19.0`) and reports it; its
    /// `requiresupgrade` follows `minreq.sysvmtemplate.version` as CloudStack computes it.
    /// Returns its id.
    pub fn add_router(&self, network: &str, version: &str) -> String {
        let exists = self.cloud().networks.iter().any(|n| n.name == network);
        if !exists {
            self.add_network(network, false);
        }
        let mut c = self.cloud();
        let n = c
            .networks
            .iter()
            .position(|x| x.name == network)
            .unwrap_or(0);
        let zone = c.networks[n].zone;
        let name = format!("systemvm-kvm-{version}");
        let db_id = 2_000 + c.templates.len() as u64;
        let t = c
            .templates
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.db_id)
            .unwrap_or_else(|| {
                let i = c.add_template(db_id, &name);
                c.templates[i].db_id
            });
        let state = if c.networks[n].redundant {
            let have = c
                .vms
                .iter()
                .filter(|v| v.router.as_ref().is_some_and(|r| r.network == n))
                .count();
            Some(if have == 0 { "PRIMARY" } else { "BACKUP" })
        } else {
            None
        };
        let vm = c.create_vm(
            VmKind::DomainRouter,
            zone,
            None,
            t,
            Some(RouterInfo {
                network: n,
                redundant_state: state,
                template_version: None,
            }),
        );
        let host = (!c.hosts.is_empty()).then_some(0);
        c.place_running(vm, host);
        c.vms[vm].id.clone()
    }

    /// Registers a system VM template (`systemvm-kvm-4.20.0`) as the upgrade's
    /// `SystemVmTemplateRegistration` does, points every system VM and router at it
    /// (`vm_template_id`, what their next CloudStack start boots) and sets
    /// `minreq.sysvmtemplate.version`. Running ones keep the template they booted.
    pub fn register_system_template(&self, version: &str) {
        let mut c = self.cloud();
        let name = format!("systemvm-kvm-{version}");
        let db_id = 2_000 + c.templates.len() as u64;
        let t = match c.templates.iter().find(|t| t.name == name) {
            Some(t) => t.db_id,
            None => {
                let i = c.add_template(db_id, &name);
                c.templates[i].db_id
            }
        };
        c.configs
            .insert("minreq.sysvmtemplate.version".into(), version.into());
        c.configs.insert("router.template.kvm".into(), name);
        for v in 0..c.vms.len() {
            if c.vms[v].kind != VmKind::User {
                c.vms[v].template_id = t;
                c.save_vm_row(v);
            }
        }
        c.touch();
    }

    /// The system VM template the cloud runs on: its `vm_template` id and name, as the lab's
    /// database has it registered (`minreq.sysvmtemplate.version` and `router.template.kvm`
    /// follow).
    pub(crate) fn use_system_template(&self, db_id: u64, name: &str) {
        let mut c = self.cloud();
        let i = c.add_template(db_id, name);
        if let Some(v) = c.templates[i].version {
            let [a, b, p, _] = v.padded();
            c.configs.insert(
                "minreq.sysvmtemplate.version".into(),
                format!("{a}.{b}.{p}"),
            );
        }
        c.configs.insert("router.template.kvm".into(), name.into());
    }

    /// Sets a global setting (listed by `listConfigurations`).
    pub fn set_config(&self, name: &str, value: &str) {
        self.cloud().configs.insert(name.into(), value.into());
    }

    /// A global setting's value.
    pub fn config(&self, name: &str) -> Option<String> {
        self.cloud().configs.get(name).cloned()
    }

    /// How long the simulated operations take (see [`Timings`]).
    pub fn set_timings(&self, timings: Timings) {
        self.cloud().timings = timings;
    }

    /// How many `queryAsyncJobResult` polls a new job answers "pending" at least, however soon
    /// its work ends.
    pub fn set_job_polls(&self, polls: u32) {
        self.cloud().job_polls = polls;
    }

    /// Makes the secondary storage VMs' template downloads fail while set: a download in
    /// progress, or one about to start, ends at its next progress report in `DOWNLOAD_ERROR`
    /// with `error_str` = `error` (what `listTemplates` then says as `status`, with `isready`
    /// false); `None` lets downloads succeed again (one that failed stays failed).
    /// [`TEMPLATE_DOWNLOAD_ERROR`] is what CloudStack says for a URL that answers 404.
    pub fn fail_template_downloads(&self, error: Option<&str>) {
        self.cloud().fail_template_downloads = error.map(str::to_string);
    }

    /// Makes the next async job fail with `errortext` when its work would end.
    pub fn fail_next_job(&self, errortext: &str) {
        self.cloud().fail_next_job = Some(errortext.into());
    }

    /// Makes every job acting on VM `name` (a router that will not reboot, a VM that will not
    /// start) fail with `errortext` when its work would end; `None` clears it.
    pub fn fail_jobs_for(&self, name: &str, errortext: Option<&str>) {
        let mut c = self.cloud();
        match errortext {
            Some(t) => c.fail_vm_jobs.insert(name.into(), t.into()),
            None => c.fail_vm_jobs.remove(name),
        };
    }

    /// Answer only while some management server is Up: with none, the endpoint answers 503
    /// as the load balancer in front of the management servers would, and no job advances
    /// (the [`crate::Lab`] turns this on; a bare endpoint answers always).
    pub fn require_management_server(&self, on: bool) {
        self.cloud().gate = on;
    }

    /// Whether the endpoint serves the API now.
    pub fn is_serving(&self) -> bool {
        self.cloud().serving()
    }

    /// Every VM the cloud knows, of every kind, as it is now.
    pub fn vms(&self) -> Vec<LabVm> {
        let c = self.cloud();
        c.vms.iter().map(|v| c.lab_vm(v)).collect()
    }

    /// A VM by name or id.
    pub fn vm(&self, key: &str) -> Option<LabVm> {
        let c = self.cloud();
        c.vm_index(key).map(|i| c.lab_vm(&c.vms[i]))
    }

    /// A host's resource state (`Enabled`, `PrepareForMaintenance`, `Maintenance`, …).
    pub fn host_resource_state(&self, key: &str) -> Option<String> {
        let c = self.cloud();
        c.host_index(key).map(|i| c.hosts[i].resource_state.clone())
    }

    /// The events written so far, oldest first.
    pub fn events(&self) -> Vec<LabEvent> {
        self.cloud()
            .events
            .iter()
            .map(|e| LabEvent {
                kind: e.kind.clone(),
                state: e.state.to_string(),
                level: e.level.to_string(),
                description: e.description.clone(),
                created: e.created.clone(),
            })
            .collect()
    }

    /// Keeps the cloud in database `cloud_schema` on `url`'s server from now on (see the
    /// module docs of the lab's persistence): writes its clusters, hosts and VMs there
    /// (replacing the fixture's), reads system templates and settings back, and reads the
    /// cloud back whenever the database changes under it. Blocking.
    pub(crate) fn attach_database(&self, url: &cs_core::DbUrl, cloud_schema: &str) -> Result<()> {
        let mut c = self.cloud();
        let (writer, reader) = persist::attach(url, cloud_schema, &mut c)?;
        c.persist = Some(writer);
        *lock(&self.shared.reader) = Some(reader);
        Ok(())
    }

    /// Lets the cloud start, stop and move guests on the lab's hypervisors, starting the
    /// domain of every VM that runs now.
    pub(crate) fn attach_hypervisors(&self, hv: std::sync::Arc<dyn Hypervisors>) {
        let mut c = self.cloud();
        for v in &c.vms {
            if v.holds_capacity()
                && let Some(h) = v.host
            {
                hv.start(&c.hosts[h].name, &v.instance_name);
            }
        }
        c.hypervisors = Some(hv);
    }

    /// A tenant using this endpoint with the admin key (scripted changes, recorded).
    pub fn tenant(&self) -> Tenant {
        Tenant::new(self.endpoint(), self.api_key.clone(), self.secret.clone())
    }

    /// Starts a [`TenantActor`] that keeps changing the cloud through this endpoint.
    ///
    /// # Errors
    /// When its thread cannot start.
    pub fn start_tenants(&self, options: TenantOptions) -> Result<TenantActor> {
        TenantActor::start(self.tenant(), options)
    }

    /// Runs what is due and reads the database back now (the endpoint does so every 20 ms
    /// and 200 ms on its own).
    pub fn settle(&self) {
        step(&self.shared, true);
    }

    /// Requires POST, signature version 3 and `expires` at most 15 minutes ahead
    /// (`enforce.post.requests.and.timestamps`). The lab rejects every GET with 405; the real
    /// server does so for commands that are not plain reads.
    pub fn enforce_post(&self, on: bool) {
        *lock(&self.shared.enforce_post) = on;
    }

    /// Moves the server's clock (positive: ahead of this machine's), to test `expires`.
    pub fn set_clock_skew(&self, seconds: i64) {
        *lock(&self.shared.clock_skew) = seconds;
    }

    /// Injects `fault` into the next `times` requests for `command` (any command when `None`).
    pub fn inject(&self, command: Option<&str>, times: u32, fault: Fault) {
        lock(&self.shared.faults).push(FaultRule {
            command: command.map(str::to_string),
            remaining: times,
            fault,
        });
    }

    /// Removes all pending faults.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Whether requests are recorded (on by default; turn off for benchmarks).
    pub fn set_recording(&self, on: bool) {
        *lock(&self.shared.record) = on;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Panics caught in request handlers since the last call; taking them keeps `Drop` from
    /// re-raising them.
    pub fn take_panics(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.shared.panics))
    }
}

impl Drop for LabApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let panics = self.take_panics();
        if !panics.is_empty() && !std::thread::panicking() {
            panic!("the lab API endpoint panicked: {}", panics.join("; "));
        }
    }
}
