//! A whole lab cloud: management servers ([`MgmtNode`]) and KVM hosts ([`KvmHost`]) in
//! clusters on one seeded database pair, with the lab API endpoint ([`LabApi`]) kept in step
//! with the nodes by a background thread, and an `UpgradeConfig` TOML file describing it.
//!
//! ```no_run
//! let lab = cs_lab::Lab::builder().management_servers(2).kvm_hosts(3).start()?;
//! let config = lab.write_config(&"4.19.0.0".parse()?)?;
//! lab.prepare_upgrade(&"4.19.0.0".parse()?, false)?;
//! # let _ = config;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cs_core::{CsVersion, DbUrl};
use mysql::prelude::Queryable;

use crate::api::Hypervisors;
use crate::mariadb::DbUrlExt;
use crate::{
    HostCapacity, KvmHost, LabApi, LabError, LabFamily, MgmtNode, MgmtStartup, RepoServer, Result,
    SeedOptions, TenantActor, TenantOptions, TestDb, Timings, mariadb, seed, start_kvm_hosts,
};

/// How often the background thread copies the nodes' state into the API endpoint.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// How a [`Lab`] starts; see [`Lab::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LabBuilder {
    name: String,
    management_servers: usize,
    kvm_hosts: usize,
    per_cluster: usize,
    version: String,
    vms: usize,
    offers: BTreeMap<String, BTreeSet<String>>,
    step_delay: Duration,
    usage_servers: usize,
    management_family: LabFamily,
    kvm_family: LabFamily,
    capacity: HostCapacity,
    networks: usize,
    redundant_networks: usize,
    unlisted: usize,
    timings: Timings,
    register_hop_templates: bool,
}

impl LabBuilder {
    /// A name for the lab's database (`cs_t_<name>_<pid>`; default `lab`). Labs of one
    /// process need different names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Number of management servers `mgmt1…` (default 2).
    pub fn management_servers(mut self, n: usize) -> Self {
        self.management_servers = n.max(1);
        self
    }

    /// How many of the management servers (the first ones) also run the usage server (default
    /// 1); the others have no `cloudstack-usage` package or unit, as on real clouds that run
    /// it on some servers only.
    pub fn usage_servers(mut self, n: usize) -> Self {
        self.usage_servers = n;
        self
    }

    /// The package family of the management servers (default Debian).
    pub fn management_family(mut self, family: LabFamily) -> Self {
        self.management_family = family;
        self
    }

    /// The package family of the KVM hosts (default Debian).
    pub fn kvm_family(mut self, family: LabFamily) -> Self {
        self.kvm_family = family;
        self
    }

    /// What every KVM host offers to VMs (default: [`HostCapacity::default`]); maintenance
    /// migrates VMs only where they fit.
    pub fn host_capacity(mut self, capacity: HostCapacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Isolated guest networks, each with one virtual router (default 1).
    pub fn networks(mut self, n: usize) -> Self {
        self.networks = n;
        self
    }

    /// Isolated guest networks with a redundant router pair (PRIMARY and BACKUP; default 0).
    pub fn redundant_networks(mut self, n: usize) -> Self {
        self.redundant_networks = n;
        self
    }

    /// How many of the KVM hosts (the last ones) CloudStack knows but [`Lab::write_config`]
    /// leaves out, as when an operator's inventory misses a host (default 0).
    pub fn unlisted_kvm_hosts(mut self, n: usize) -> Self {
        self.unlisted = n;
        self
    }

    /// How long the simulated management server's operations take (default
    /// [`Timings::default`]).
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Whether [`Lab::prepare_upgrade`] registers each hop's system VM template in the
    /// database ahead of the upgrade, as an operator following the upgrade guide does
    /// (default `true`). With `false` nothing is registered ahead: the lab starts without the
    /// fixture's system VM templates of releases after the installed one (the fixture has
    /// 4.19.0's), and the template must be registered through the API (`registerTemplate`),
    /// or the upgrade registers the one its package bundles.
    pub fn register_hop_templates(mut self, register: bool) -> Self {
        self.register_hop_templates = register;
        self
    }

    /// Number of KVM hosts `kvm1…` (default 3).
    pub fn kvm_hosts(mut self, n: usize) -> Self {
        self.kvm_hosts = n;
        self
    }

    /// Hosts per cluster `c1`, `c2`, … (default 2).
    pub fn hosts_per_cluster(mut self, n: usize) -> Self {
        self.per_cluster = n.max(1);
        self
    }

    /// The version everything is at (default `4.18.0.0`).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Running guest VMs, spread round-robin over the hosts (default 6).
    pub fn vms(mut self, n: usize) -> Self {
        self.vms = n;
        self
    }

    /// Versions the repositories of every node offer on release line `line`, besides the
    /// installed one (default: `4.19` offers `4.19.0.0`).
    pub fn offer(mut self, line: &str, versions: &[&str]) -> Self {
        self.offers
            .entry(line.to_string())
            .or_default()
            .extend(versions.iter().map(|v| v.to_string()));
        self
    }

    /// The pause of each schema-migration step on the management servers (default 50 ms).
    pub fn step_delay(mut self, delay: Duration) -> Self {
        self.step_delay = delay;
        self
    }

    /// Seeds the database, starts the management servers (running, Up), the KVM hosts
    /// (agents Up) and the API endpoint, and waits until the endpoint reports everything Up.
    /// Blocking: from async code call it inside `spawn_blocking` or `block_in_place`.
    ///
    /// # Errors
    /// What starting a server, seeding or the first sync returns; [`LabError::Timeout`] when
    /// the API does not report everything Up within 30 s.
    pub fn start(self) -> Result<Lab> {
        Lab::start(self)
    }
}

/// The lab's package repository ([`RepoServer`]), served by a thread of its own: the lab is
/// synchronous and may be dropped inside or outside a tokio runtime.
struct RepoThread {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RepoThread {
    fn start(versions: Vec<String>) -> Result<RepoThread> {
        let failed = |detail: String| LabError::Start {
            what: "lab repository".into(),
            detail,
        };
        let (url_tx, url_rx) = std::sync::mpsc::channel::<std::result::Result<String, String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = io(
            "spawn the lab repository thread",
            std::thread::Builder::new()
                .name("lab-repo".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = url_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
                        match RepoServer::start(&refs).await {
                            Ok(server) => {
                                let _ = url_tx.send(Ok(server.url()));
                                // Serves until the lab goes (or drops the sender).
                                let _ = stopped.await;
                            }
                            Err(e) => {
                                let _ = url_tx.send(Err(e.to_string()));
                            }
                        }
                    });
                }),
        )?;
        let url = url_rx
            .recv()
            .map_err(|_| failed("the repository thread ended".into()))?
            .map_err(failed)?;
        Ok(RepoThread {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for RepoThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lab management servers' agent port: they all live on 127.0.0.1, so one listener that
/// accepts and closes connections stands for their 8250 (the KVM hosts' `agent.properties`
/// names its port).
struct AgentPort {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentPort {
    fn start() -> Result<AgentPort> {
        let listener = io(
            "listen for agents",
            std::net::TcpListener::bind("127.0.0.1:0"),
        )?;
        let port = io("agent listener address", listener.local_addr())?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            io(
                "spawn the agent listener",
                std::thread::Builder::new()
                    .name("lab-agent-port".into())
                    .spawn(move || {
                        for conn in listener.incoming() {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            drop(conn);
                        }
                    }),
            )?
        };
        Ok(AgentPort {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AgentPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running lab cloud (see the module docs). Everything stops, and the lab's databases and
/// directories go, when it is dropped.
pub struct Lab {
    // Field order: the sync thread stops first, then the nodes, then the endpoint and database.
    sync: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    unlisted: usize,
    mgmt: Vec<Arc<MgmtNode>>,
    kvm: Vec<Arc<KvmHost>>,
    api: Arc<LabApi>,
    repo: RepoThread,
    agent_port: AgentPort,
    db: TestDb<'static>,
    usage: String,
    version: CsVersion,
    register_hop_templates: bool,
    dir: tempfile::TempDir,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("database", &self.db.name())
            .field("management_servers", &self.mgmt.len())
            .field("kvm_hosts", &self.kvm.len())
            .field("api", &self.api.endpoint())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn io<T>(what: impl Into<String>, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| LabError::io(what, e))
}

fn write_private(path: &Path, data: &str) -> Result<()> {
    io(
        format!("write {}", path.display()),
        std::fs::write(path, data),
    )?;
    io(
        format!("chmod {}", path.display()),
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)),
    )
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

impl Lab {
    /// Options: 2 management servers, 3 KVM hosts (2 per cluster), 6 VMs, all at 4.18.0.0,
    /// 4.19.0.0 offered.
    pub fn builder() -> LabBuilder {
        LabBuilder {
            name: "lab".into(),
            management_servers: 2,
            kvm_hosts: 3,
            per_cluster: 2,
            version: "4.18.0.0".into(),
            vms: 6,
            offers: BTreeMap::from([(
                "4.19".to_string(),
                BTreeSet::from(["4.19.0.0".to_string()]),
            )]),
            step_delay: Duration::from_millis(50),
            usage_servers: 1,
            management_family: LabFamily::Deb,
            kvm_family: LabFamily::Deb,
            capacity: HostCapacity::default(),
            networks: 1,
            redundant_networks: 0,
            unlisted: 0,
            timings: Timings::default(),
            register_hop_templates: true,
        }
    }

    fn start(b: LabBuilder) -> Result<Lab> {
        let version = CsVersion::parse(&b.version).map_err(|e| LabError::Start {
            what: "lab".into(),
            detail: e.to_string(),
        })?;
        let dir = io(
            "create the lab directory",
            tempfile::Builder::new().prefix("cs-lab-").tempdir(),
        )?;
        let mut db = mariadb().database(&b.name)?;
        let usage = db.extra("usage")?;
        let url = mariadb().root();
        seed(&url, &SeedOptions::new(version, db.name(), &usage))?;
        let template = crate::seed::install_system_template(&url, db.name(), &version)?;
        if !b.register_hop_templates {
            crate::seed::remove_later_system_templates(&url, db.name(), &version)?;
        }

        let mut offers = b.offers.clone();
        offers
            .entry(version.line())
            .or_default()
            .insert(b.version.clone());
        let repo = RepoThread::start(offers.values().flatten().cloned().collect())?;
        let agent_port = AgentPort::start()?;

        // Management servers and KVM hosts start in parallel (key generation and each
        // management server's first start take most of the time).
        let (mgmt, kvm) = std::thread::scope(|scope| {
            let mgmt: Vec<_> = (0..b.management_servers)
                .map(|i| {
                    let (url, offers, db_name, usage) = (&url, &offers, db.name(), &usage);
                    let repo_url = repo.url.as_str();
                    let (version, delay) = (&b.version, b.step_delay);
                    let (has_usage, family) = (i < b.usage_servers, b.management_family);
                    scope.spawn(move || {
                        let mut builder = MgmtNode::builder(format!("mgmt{}", i + 1))
                            .db(url, db_name, usage)
                            .repo_base(repo_url)
                            .installed(version)
                            .step_delay(delay)
                            .usage(has_usage)
                            .family(family)
                            .running(true);
                        for (line, versions) in offers {
                            let v: Vec<&str> = versions.iter().map(String::as_str).collect();
                            builder = builder.offer(line, &v);
                        }
                        builder.start().map(Arc::new)
                    })
                })
                .collect();
            let kvm = start_kvm_hosts(b.kvm_hosts, b.per_cluster, |o| {
                o.installed = b.version.clone();
                o.family = b.kvm_family;
                o.repo_base.clone_from(&repo.url);
                o.agent_port = agent_port.port;
                for (line, versions) in &offers {
                    let entry = o.repo.entry(line.clone()).or_default();
                    for v in versions {
                        if !entry.contains(v) {
                            entry.push(v.clone());
                        }
                    }
                }
            });
            let panicked = || LabError::Start {
                what: "lab management servers".into(),
                detail: "a start-up thread panicked".into(),
            };
            let mgmt = mgmt
                .into_iter()
                .map(|h| h.join().map_err(|_| panicked())?)
                .collect::<Result<Vec<Arc<MgmtNode>>>>();
            (mgmt, kvm)
        });
        let mgmt = mgmt?;
        let kvm: Vec<Arc<KvmHost>> = kvm?.into_iter().map(Arc::new).collect();

        // The cloud as CloudStack's database has it: the management servers, the hosts in
        // their clusters, one SSVM and one CPVM, the routers of the guest networks and the
        // tenants' VMs, all Running where they were placed.
        let api = Arc::new(LabApi::start()?);
        api.set_timings(b.timings);
        for m in &mgmt {
            api.add_management_server(m.name(), "Up", &b.version);
        }
        for h in &kvm {
            api.add_host(h.cluster(), h.name(), &b.version);
            api.set_host_capacity(h.name(), b.capacity);
        }
        api.use_system_template(
            template,
            &cs_schema::systemvm_template_name(&version, cs_schema::Hypervisor::Kvm),
        );
        api.populate_appliances(b.networks, b.redundant_networks);
        if !kvm.is_empty() {
            for i in 0..b.vms {
                let host = kvm[i % kvm.len()].name();
                api.add_vm(&format!("vm{:03}", i + 1), "Running", Some(host));
            }
        }
        api.attach_database(&url, db.name())?;
        api.attach_hypervisors(Arc::new(KvmHypervisors::of(&kvm)));
        api.require_management_server(true);
        sync(&api, &mgmt, &kvm);

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, api, mgmt, kvm) = (stop.clone(), api.clone(), mgmt.clone(), kvm.clone());
            io(
                "spawn the lab sync thread",
                std::thread::Builder::new()
                    .name("lab-sync".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            sync(&api, &mgmt, &kvm);
                            std::thread::sleep(SYNC_EVERY);
                        }
                    }),
            )?
        };
        let lab = Lab {
            unlisted: b.unlisted.min(kvm.len()),
            sync: Some((stop, thread)),
            mgmt,
            kvm,
            api,
            repo,
            agent_port,
            db,
            usage,
            version,
            register_hop_templates: b.register_hop_templates,
            dir,
        };
        lab.wait_all_up(&b.version, Duration::from_secs(30))?;
        Ok(lab)
    }

    /// Waits until every management server and every KVM host is Up at `version`.
    ///
    /// # Errors
    /// [`LabError::Timeout`] naming what is not Up.
    pub fn wait_all_up(&self, version: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for m in &self.mgmt {
                if m.startup() != MgmtStartup::Up(version.to_string()) {
                    missing.push(format!("{} ({:?})", m.name(), m.startup()));
                }
            }
            for h in &self.kvm {
                let st = h.hypervisor();
                if !st.is_up() || st.version.map(|v| v.to_string()).as_deref() != Some(version) {
                    missing.push(format!("{} ({} {:?})", h.name(), st.state, st.version));
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("lab nodes Up at {version}; not yet: {}", missing.join(", ")),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The management servers, in order (`mgmt1` first: it migrates the schema).
    pub fn management_servers(&self) -> &[Arc<MgmtNode>] {
        &self.mgmt
    }

    /// The KVM hosts, in order.
    pub fn kvm_hosts(&self) -> &[Arc<KvmHost>] {
        &self.kvm
    }

    /// The base URL of the lab's package repository, which every node's repository file
    /// names and the configuration lists as a mirror.
    pub fn repo_url(&self) -> &str {
        &self.repo.url
    }

    /// The port the management servers' agent listener answers on (`port=` in the KVM hosts'
    /// `agent.properties`).
    pub fn agent_port(&self) -> u16 {
        self.agent_port.port
    }

    /// The API endpoint.
    pub fn api(&self) -> &LabApi {
        &self.api
    }

    /// The database server URL (root, every privilege).
    pub fn db_url(&self) -> DbUrl {
        mariadb().root()
    }

    /// The `cloud` schema's name.
    pub fn cloud_schema(&self) -> &str {
        self.db.name()
    }

    /// The `cloud_usage` schema's name.
    pub fn usage_schema(&self) -> &str {
        &self.usage
    }

    /// The version the lab was seeded and installed at.
    pub fn initial_version(&self) -> CsVersion {
        self.version
    }

    /// The lab's directory (configs, secrets, backups).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Copies the nodes' state into the API endpoint now (the background thread does so every
    /// 100 ms), and lets the endpoint run what is due and read the database back.
    pub fn sync(&self) {
        sync(&self.api, &self.mgmt, &self.kvm);
        self.api.settle();
    }

    /// The KVM hosts [`Lab::write_config`] lists (all but the unlisted ones).
    pub fn listed_kvm_hosts(&self) -> &[Arc<KvmHost>] {
        &self.kvm[..self.kvm.len() - self.unlisted]
    }

    /// A tenant using the cloud's API (scripted changes, recorded).
    pub fn tenant(&self) -> crate::Tenant {
        self.api.tenant()
    }

    /// Starts tenants that keep changing the cloud through its API while it serves; they stop
    /// when the returned actor is dropped.
    ///
    /// # Errors
    /// When the actor's thread cannot start.
    pub fn start_tenants(&self, options: TenantOptions) -> Result<TenantActor> {
        self.api.start_tenants(options)
    }

    /// Prepares what the management servers run when they start at a new version: the schema
    /// steps of each hop from the installed version to `target` (LTS hops from
    /// `cs_schema::plan_hops`, or one jump with `direct`), the repositories offering each
    /// hop's version, and each hop's system VM template registered ahead, as an operator does
    /// (unless [`LabBuilder::register_hop_templates`] is `false`). Returns the hops' versions,
    /// in order.
    ///
    /// # Errors
    /// [`LabError::Start`] when cs-schema has no path; what preparing a node returns.
    pub fn prepare_upgrade(&self, target: &CsVersion, direct: bool) -> Result<Vec<CsVersion>> {
        let from = self.mgmt[0].installed_version().unwrap_or(self.version);
        let no_path = |e: cs_schema::Error| LabError::Start {
            what: format!("upgrade path {from} -> {target}"),
            detail: e.to_string(),
        };
        let hops: Vec<(CsVersion, CsVersion, Vec<cs_schema::PathStep>)> = if direct {
            vec![(
                from,
                *target,
                cs_schema::path(&from, target).map_err(no_path)?,
            )]
        } else {
            cs_schema::plan_hops(&from, target)
                .map_err(no_path)?
                .into_iter()
                .map(|h| (h.from, h.to, h.steps))
                .collect()
        };
        // The operator registers each hop's system VM template first, as the upgrade guide
        // asks (the cs-schema check `systemvm.templates.ready` stops an upgrade without it).
        if self.register_hop_templates {
            for (_, to, _) in &hops {
                crate::seed::register_system_template(&self.db_url(), self.db.name(), to)?;
            }
        }
        let mut offers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        offers
            .entry(from.line())
            .or_default()
            .insert(from.to_string());
        for (_, to, _) in &hops {
            offers.entry(to.line()).or_default().insert(to.to_string());
        }
        for m in &self.mgmt {
            for (hop_from, hop_to, steps) in &hops {
                let steps: Vec<(String, CsVersion)> = steps
                    .iter()
                    .filter(|s| !s.noop)
                    .map(|s| (s.class.clone(), s.to))
                    .collect();
                m.prepare_migration(hop_from, hop_to, &steps)?;
            }
            for (line, versions) in &offers {
                let v: Vec<&str> = versions.iter().map(String::as_str).collect();
                m.offer(line, &v)?;
            }
        }
        Ok(hops.into_iter().map(|(_, to, _)| to).collect())
    }

    /// Writes an `UpgradeConfig` TOML file for the lab with target `target` (mode 0600, in
    /// [`Lab::dir`]), its secrets in files of their own (mode 0600), short deadlines, backups
    /// under `dir/backups`, and one SSH key and known_hosts file for every node. Returns the
    /// file's path.
    ///
    /// # Errors
    /// IO errors.
    pub fn write_config(&self, target: &CsVersion) -> Result<PathBuf> {
        self.write_config_with(target, None)
    }

    /// Like [`Lab::write_config`], but every node is reached as the lab's operator account
    /// ([`crate::operator`], not root) with `sudo = true` and the sudo password in a secret
    /// file of its own (mode 0600); the file is named `upgrade-TARGET-operator.toml`.
    ///
    /// # Errors
    /// What [`crate::operator`] returns; IO errors.
    pub fn write_operator_config(&self, target: &CsVersion) -> Result<PathBuf> {
        self.write_config_with(target, Some(crate::operator()?))
    }

    fn write_config_with(
        &self,
        target: &CsVersion,
        operator: Option<&crate::LabOperator>,
    ) -> Result<PathBuf> {
        let d = self.dir.path();
        let secrets = d.join("secrets");
        io(
            "create the secrets directory",
            std::fs::create_dir_all(&secrets),
        )?;
        io(
            "chmod the secrets directory",
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)),
        )?;
        let url = self.db_url();
        write_private(&secrets.join("db-password"), url.password.expose())?;
        write_private(&secrets.join("api-key"), self.api.api_key())?;
        write_private(&secrets.join("api-secret"), self.api.secret_key().expose())?;

        // One client key for every node, and one known_hosts file.
        let first = self.mgmt[0].ssh();
        let key = first.client_key();
        let public = io(
            "read the lab client key",
            std::fs::read_to_string(key.with_extension("pub")),
        )?;
        let mut known = String::new();
        let servers = self
            .mgmt
            .iter()
            .map(|m| m.ssh())
            .chain(self.kvm.iter().filter_map(|h| h.ssh()));
        for s in servers {
            if !std::ptr::eq(s, first) {
                s.authorize_key(&public)?;
            }
            known.push_str(&io(
                "read known_hosts",
                std::fs::read_to_string(s.known_hosts()),
            )?);
            if !known.ends_with('\n') {
                known.push('\n');
            }
        }
        let known_hosts = d.join("known_hosts");
        write_private(&known_hosts, &known)?;
        let backups = d.join("backups");
        io(
            "create the backup directory",
            std::fs::create_dir_all(&backups),
        )?;

        let mut t = String::new();
        let _ = writeln!(
            t,
            "# cs-lab: generated for {}\ntarget = \"{target}\"\n",
            self.db.name()
        );
        let _ = writeln!(
            t,
            "[database]\nhost = \"127.0.0.1\"\nport = {}\nuser = {}\npassword = {{ file = {} }}\n\
             cloud_schema = {}\nusage_schema = {}\n",
            url.port,
            toml_str(&url.user),
            path_str(&secrets.join("db-password")),
            toml_str(self.db.name()),
            toml_str(&self.usage),
        );
        let _ = writeln!(
            t,
            "[backup]\ndir = {}\nengine = \"native\"\nthreads = 2\ncompress = false\n",
            path_str(&backups)
        );
        let _ = writeln!(
            t,
            "[api]\nendpoint = {}\napi_key = {{ file = {} }}\nsecret_key = {{ file = {} }}\n",
            toml_str(&self.api.endpoint()),
            path_str(&secrets.join("api-key")),
            path_str(&secrets.join("api-secret")),
        );
        let _ = write!(
            t,
            "[ssh]\nuser = {}\nidentity = {}\nknown_hosts = {}\nconnect_timeout = \"10s\"\n",
            toml_str(operator.map_or("root", |o| o.user())),
            path_str(&key),
            path_str(&known_hosts)
        );
        if let Some(o) = operator {
            let file = secrets.join("sudo-password");
            write_private(&file, o.password().expose())?;
            let _ = write!(
                t,
                "sudo = true\nsudo_password = {{ file = {} }}\n",
                path_str(&file)
            );
        }
        t.push('\n');
        for m in &self.mgmt {
            let _ = writeln!(
                t,
                "[[management_servers]]\naddress = \"127.0.0.1\"\nport = {}\nname = {}\nroot = {}\n",
                m.ssh().port(),
                toml_str(m.name()),
                path_str(m.root())
            );
        }
        for m in self.mgmt.iter().filter(|m| m.has_usage()) {
            let _ = writeln!(
                t,
                "[[usage_servers]]\naddress = \"127.0.0.1\"\nport = {}\nname = {}\nroot = {}\n",
                m.ssh().port(),
                toml_str(m.name()),
                path_str(m.root())
            );
        }
        // CloudStack lists the KVM hosts (and their clusters); the entries say how to reach
        // each listed one, as an operator's would for hosts behind NAT or a bastion.
        for h in self.listed_kvm_hosts() {
            let port = h.ssh().map_or(22, |s| s.port());
            let _ = writeln!(
                t,
                "[[hosts]]\nname = {}\naddress = \"127.0.0.1\"\nport = {port}\nroot = {}\n",
                toml_str(h.name()),
                path_str(&h.root())
            );
        }
        let _ = writeln!(
            t,
            "[repositories]\nmirrors = [{}]\n",
            toml_str(&self.repo.url)
        );
        t.push_str(
            "[policy]\nbatch_size = 2\nparallelism = 8\nmax_fail_percent = 0\n\
             migration_deadline = \"60s\"\nhost_up_deadline = \"60s\"\ndirect_path = false\n\
             skip_checks = []\n",
        );
        let suffix = if operator.is_some() { "-operator" } else { "" };
        let path = d.join(format!("upgrade-{target}{suffix}.toml"));
        write_private(&path, &t)?;
        Ok(path)
    }

    /// `CHECKSUM TABLE` of every base table of both schemas except `exclude` (table names),
    /// keyed `schema.table`. Blocking.
    ///
    /// # Errors
    /// [`LabError::Database`].
    pub fn checksums(&self, exclude: &[&str]) -> Result<BTreeMap<String, String>> {
        let db_err = |what: &str| {
            let what = what.to_string();
            move |e: mysql::Error| LabError::Database {
                what,
                source: Box::new(e),
            }
        };
        let mut conn = self.db_url().connect()?;
        let mut out = BTreeMap::new();
        for schema in [self.db.name(), self.usage.as_str()] {
            let tables: Vec<String> = conn
                .exec(
                    "SELECT TABLE_NAME FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                    (schema,),
                )
                .map_err(db_err("list tables"))?;
            for t in tables.iter().filter(|t| !exclude.contains(&t.as_str())) {
                let row: Option<(String, Option<String>)> = conn
                    .query_first(format!("CHECKSUM TABLE `{schema}`.`{t}`"))
                    .map_err(db_err("checksum a table"))?;
                let sum = row.and_then(|(_, s)| s).unwrap_or_default();
                out.insert(format!("{schema}.{t}"), sum);
            }
        }
        Ok(out)
    }
}

/// Copies what the nodes say into the endpoint: each management server's state and version
/// (its `mshost` row), each host's agent state and version (what the agent reports when it
/// connects). System VMs, routers and guests are the endpoint's own: nothing here upgrades
/// them.
fn sync(api: &LabApi, mgmt: &[Arc<MgmtNode>], kvm: &[Arc<KvmHost>]) {
    for m in mgmt {
        let installed = m.installed(crate::MANAGEMENT_UNIT).unwrap_or_default();
        let (state, version) = match m.startup() {
            MgmtStartup::Up(v) => ("Up", v),
            MgmtStartup::Starting => ("Starting", installed),
            _ => ("Down", installed),
        };
        api.set_management_server(m.name(), state, &version);
    }
    for h in kvm {
        let st = h.hypervisor();
        api.set_host_state(h.name(), &st.state);
        if let Some(v) = st.version {
            api.set_host_version(h.name(), &v.to_string());
        }
    }
}

/// The lab's KVM hosts as the hypervisors the endpoint places guests on.
#[derive(Debug)]
struct KvmHypervisors {
    hosts: BTreeMap<String, Arc<KvmHost>>,
}

impl KvmHypervisors {
    fn of(kvm: &[Arc<KvmHost>]) -> KvmHypervisors {
        KvmHypervisors {
            hosts: kvm
                .iter()
                .map(|h| (h.name().to_string(), h.clone()))
                .collect(),
        }
    }
}

impl Hypervisors for KvmHypervisors {
    fn start(&self, host: &str, instance: &str) {
        if let Some(h) = self.hosts.get(host)
            && let Err(e) = h.start_domain(instance)
        {
            tracing::warn!(host, instance, error = %e, "lab: start a domain");
        }
    }

    fn stop(&self, host: &str, instance: &str) {
        if let Some(h) = self.hosts.get(host)
            && let Err(e) = h.destroy_domain(instance)
        {
            tracing::warn!(host, instance, error = %e, "lab: destroy a domain");
        }
    }

    fn running(&self, host: &str) -> Option<Vec<String>> {
        self.hosts.get(host).map(|h| h.domains())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.sync.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        // Stop the services first, so nothing writes to the database while it is dropped.
        for m in &self.mgmt {
            let _ = m.systemctl("stop", crate::USAGE_UNIT);
            let _ = m.systemctl("stop", crate::MANAGEMENT_UNIT);
        }
    }
}
