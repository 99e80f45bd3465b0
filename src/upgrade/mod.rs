//! The upgrade itself: the stages of the procedure as [`cs_core::Step`]s over an
//! [`UpgradeContext`], run by the journaled [`Runner`] ([`plan`], [`apply`], [`rollback`]).
//!
//! A run keeps its state in `backup.dir/upgrade-<target>/`: the journal, `run.json` (the
//! version the run started from, fixed at the first run so a resumed run plans the same
//! steps), the database backup, one config bundle per node, the inventory taken before, and
//! per-hop markers. Every step's `check` reads state only and answers `Done` once the upgrade
//! has gone past it, so a finished run re-applied changes nothing and a killed run resumes.
//!
//! The database is backed up twice: by the `backup` step while the cloud still runs (a backup
//! that cannot be taken stops the upgrade before any downtime), and again by `quiesce` once
//! every management and usage server is stopped, replacing the first. A rollback restores the
//! second, so nothing written between the two is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cs_core::{
    CsVersion, Host, Layout, NoProgress, Progress, RunError, RunReport, Runner, SshHost, Step,
    StepError, StepState, error_chain,
};
use cs_schema::{DbTarget, MigrationWatch, WatchOutcome};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, NodeConfig, UpgradeConfig};

mod ms;

use ms::{
    install_all, installed_version, is_up_at, mshosts_up, remove_leftovers, repos_at, start_all,
    stop_all, switch_repos, systemctl, unit_active, unit_state, wait_mshosts,
};

/// The management server's unit and package.
pub const MANAGEMENT_UNIT: &str = "cloudstack-management";
/// The usage server's unit and package.
pub const USAGE_UNIT: &str = "cloudstack-usage";
/// The packages upgraded on management servers, all to the exact same version.
pub const MANAGEMENT_PACKAGES: &[&str] = &[MANAGEMENT_UNIT, "cloudstack-common", USAGE_UNIT];

/// What went wrong with an upgrade, in the caller's terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeErrorKind {
    /// The configuration cannot be used.
    #[error("configuration")]
    Config(#[source] ConfigError),
    /// A node could not be reached.
    #[error("cannot reach {node}")]
    Connect {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: cs_core::HostError,
    },
    /// The current state could not be read or planned from.
    #[error("cannot plan the upgrade: {0}")]
    Plan(String),
    /// The runner stopped: a step failed (what was applied was rolled back), or the journal
    /// is unusable.
    #[error("the upgrade run stopped")]
    Run(#[source] RunError),
}

/// An upgrade that failed, with the runner's report when steps ran (what was applied and
/// rolled back).
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct UpgradeError {
    /// What went wrong.
    #[source]
    pub kind: UpgradeErrorKind,
    /// What the run did before it stopped.
    pub report: Option<Box<RunReport>>,
}

impl UpgradeError {
    fn new(kind: UpgradeErrorKind) -> Self {
        UpgradeError { kind, report: None }
    }

    pub(crate) fn plan(message: impl Into<String>) -> Self {
        UpgradeError::new(UpgradeErrorKind::Plan(message.into()))
    }
}

impl From<RunError> for UpgradeError {
    fn from(e: RunError) -> Self {
        let report = e.report().cloned().map(Box::new);
        UpgradeError {
            kind: UpgradeErrorKind::Run(e),
            report,
        }
    }
}

impl From<ConfigError> for UpgradeError {
    fn from(e: ConfigError) -> Self {
        UpgradeError::new(UpgradeErrorKind::Config(e))
    }
}

/// A node to act on.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    /// Its name in reports.
    pub name: String,
    /// The connection.
    pub host: Arc<dyn Host>,
    /// Where CloudStack's files are on it.
    pub layout: Layout,
    /// The root its system paths are under (`/` on a real node).
    pub root: PathBuf,
}

impl NodeHandle {
    pub(crate) fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// What the first run recorded, so a resumed run plans the same steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The database version the run started from.
    pub from: CsVersion,
    /// The target.
    pub target: CsVersion,
    /// The version of each hop, in order (the last is the target).
    pub hops: Vec<CsVersion>,
}

/// Everything the upgrade steps act on, built from an [`UpgradeConfig`].
#[derive(Debug)]
pub struct UpgradeContext {
    /// The configuration.
    pub config: UpgradeConfig,
    /// Management servers, the first one migrates the schema.
    pub management: Vec<NodeHandle>,
    /// Usage servers.
    pub usage: Vec<NodeHandle>,
    /// The database.
    pub db: DbTarget,
    /// The API client.
    pub client: cs_api::Client,
    /// The run's directory.
    pub run_dir: PathBuf,
    /// What the run started from.
    pub record: RunRecord,
    /// Where long work reports progress.
    pub progress: Arc<dyn Progress>,
}

pub(crate) async fn connect(
    config: &UpgradeConfig,
    node: &NodeConfig,
) -> Result<NodeHandle, UpgradeError> {
    let mut b = SshHost::builder(format!("{}:{}", node.address, node.port))
        .user(node.user.clone().unwrap_or_else(|| config.ssh.user.clone()))
        .connect_timeout(config.ssh.connect_timeout)
        .name(node.display_name().to_string());
    b = match &config.ssh.identity {
        Some(k) => b.key_file(k.clone()),
        None => b.agent(),
    };
    if let Some(k) = &config.ssh.known_hosts {
        b = b.known_hosts(k.clone());
    }
    let host = b.connect().await.map_err(|source| {
        UpgradeError::new(UpgradeErrorKind::Connect {
            node: node.display_name().to_string(),
            source,
        })
    })?;
    Ok(NodeHandle {
        name: node.display_name().to_string(),
        host: Arc::new(host),
        layout: node.layout(),
        root: node.root.clone().unwrap_or_else(|| PathBuf::from("/")),
    })
}

/// The API client a config describes.
///
/// # Errors
/// [`UpgradeErrorKind::Config`] for unreadable keys, [`UpgradeErrorKind::Plan`] for a bad
/// endpoint.
pub fn api_client(config: &UpgradeConfig) -> Result<cs_api::Client, UpgradeError> {
    let key = config.api.api_key.resolve(config.path(), "api.api_key")?;
    let secret = config
        .api
        .secret_key
        .resolve(config.path(), "api.secret_key")?;
    let mut cc = cs_api::ClientConfig::default();
    cc.tls.danger_accept_invalid_certs = config.api.insecure_skip_tls_verify;
    cs_api::Client::new(
        &config.api.endpoint,
        cs_api::Credentials::api_key(key.expose(), secret),
        cc,
    )
    .map_err(|e| UpgradeError::plan(format!("api client: {}", error_chain(&e))))
}

/// The run directory of an upgrade to `target`.
pub fn run_dir(config: &UpgradeConfig) -> PathBuf {
    config.backup.dir.join(format!("upgrade-{}", config.target))
}

/// The hops from `from` to `target`: LTS stepping stones, or one jump with `direct`.
///
/// # Errors
/// [`UpgradeErrorKind::Plan`] when cs-schema knows no path.
pub fn hops(
    from: &CsVersion,
    target: &CsVersion,
    direct: bool,
) -> Result<Vec<CsVersion>, UpgradeError> {
    if from == target {
        return Ok(Vec::new());
    }
    if direct {
        cs_schema::path(from, target).map_err(|e| UpgradeError::plan(e.to_string()))?;
        return Ok(vec![*target]);
    }
    Ok(cs_schema::plan_hops(from, target)
        .map_err(|e| UpgradeError::plan(e.to_string()))?
        .into_iter()
        .map(|h| h.to)
        .collect())
}

impl UpgradeContext {
    /// Connects to every management and usage server, reads the database version and loads or
    /// writes the run record.
    ///
    /// # Errors
    /// [`UpgradeError`] for a bad config, an unreachable node or database, or no path.
    pub async fn build(
        config: &UpgradeConfig,
        progress: Arc<dyn Progress>,
    ) -> Result<UpgradeContext, UpgradeError> {
        let url = config.database_url()?;
        let db = DbTarget::new(
            url,
            &config.database.cloud_schema,
            &config.database.usage_schema,
        );
        let client = api_client(config)?;
        let mut management = Vec::new();
        for n in &config.management_servers {
            management.push(connect(config, n).await?);
        }
        let mut usage = Vec::new();
        for n in &config.usage_servers {
            match management.iter().find(|m| m.name == n.display_name()) {
                Some(m) => usage.push(m.clone()),
                None => usage.push(connect(config, n).await?),
            }
        }
        let run_dir = run_dir(config);
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| UpgradeError::plan(format!("create {}: {e}", run_dir.display())))?;
        let record_path = run_dir.join("run.json");
        let record = match std::fs::read(&record_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                UpgradeError::plan(format!("{} is unreadable: {e}", record_path.display()))
            })?,
            Err(_) => {
                let from = db_version(&db).await.map_err(UpgradeError::plan)?;
                let record = RunRecord {
                    from,
                    target: config.target,
                    hops: hops(&from, &config.target, config.policy.direct_path)?,
                };
                write_json(&record_path, &record).map_err(UpgradeError::plan)?;
                record
            }
        };
        Ok(UpgradeContext {
            config: config.clone(),
            management,
            usage,
            db,
            client,
            run_dir,
            record,
            progress,
        })
    }

    fn backup_dir(&self) -> PathBuf {
        self.run_dir.join("db")
    }

    /// The bundle of a KVM host's repository files.
    fn host_bundle_path(&self, host: &str) -> PathBuf {
        self.run_dir.join("config").join(format!("kvm-{host}.json"))
    }

    fn bundle_path(&self, node: &str) -> PathBuf {
        self.run_dir.join("config").join(format!("{node}.json"))
    }

    fn inventory_path(&self) -> PathBuf {
        self.run_dir.join("inventory-before.json")
    }

    /// Present once a rollback has restarted the services at the old version: from then on the
    /// database moves on, and the backup no longer describes it.
    fn stale_marker(&self) -> PathBuf {
        self.run_dir.join("backup.stale")
    }

    /// Present once the backup is of the quiesced databases (see [`refresh_backup`]).
    fn quiesced_marker(&self) -> PathBuf {
        self.run_dir.join("backup.quiesced")
    }

    fn marker(&self, hop: &CsVersion) -> PathBuf {
        self.run_dir.join(format!("migrate-{hop}.started"))
    }

    /// Management and usage servers, each once.
    fn service_nodes(&self) -> Vec<&NodeHandle> {
        let mut out: Vec<&NodeHandle> = self.management.iter().collect();
        for u in &self.usage {
            if !out.iter().any(|n| n.name == u.name) {
                out.push(u);
            }
        }
        out
    }

    /// Whether the upgrade has gone past hop `v`: the database or a package is newer.
    async fn passed(&self, v: &CsVersion) -> Result<bool, StepError> {
        if db_version(&self.db).await.map_err(StepError::new)? > *v {
            return Ok(true);
        }
        for n in self.service_nodes() {
            if installed_version(n).await? > Some(*v) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("write {}: {e}", path.display()))
}

async fn db_version(db: &DbTarget) -> Result<CsVersion, String> {
    let state = cs_schema::read_state(db)
        .await
        .map_err(|e| format!("read the database state: {}", error_chain(&e)))?;
    state
        .version
        .as_ref()
        .and_then(|t| t.current())
        .ok_or_else(|| "the database has no Complete version row".to_string())
}

fn step_err(what: &str, e: impl Into<cs_core::BoxError>) -> StepError {
    StepError::with_source(what.to_string(), e)
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

/// Backs up both schemas into `dir` (anything there first goes: never a backup without its
/// manifest) and verifies the result.
async fn dump_databases(cx: &UpgradeContext, dir: &Path) -> Result<(), StepError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| step_err("clear the partial backup", e))?;
    }
    let options = cs_backup::BackupOptions {
        databases: vec![cx.db.cloud_schema.clone(), cx.db.usage_schema.clone()],
        threads: cx.config.backup.threads,
        compression: if cx.config.backup.compress {
            cs_backup::Compression::ZSTD
        } else {
            cs_backup::Compression::None
        },
        ..cs_backup::BackupOptions::default()
    };
    let engine = cs_backup::NativeEngine::new();
    cs_backup::backup(&engine, &cx.db.url, dir, &options, cx.progress.as_ref())
        .await
        .map_err(|e| step_err("back up the databases", e))?;
    cs_backup::verify(dir)
        .await
        .map_err(|e| step_err("verify the backup", e))?;
    Ok(())
}

/// Replaces the backup taken while the cloud ran with one of the quiesced databases, so that a
/// rollback loses nothing written between the two (events, VM states, jobs). The new one is
/// complete and verified before the old one goes; a kill at any point leaves a verified backup
/// under one of the names, and the step's check sends a resumed run back here.
async fn refresh_backup(cx: &UpgradeContext) -> Result<(), StepError> {
    let (dir, next, prev) = (
        cx.backup_dir(),
        cx.run_dir.join("db.next"),
        cx.run_dir.join("db.prev"),
    );
    dump_databases(cx, &next).await?;
    if prev.exists() {
        std::fs::remove_dir_all(&prev).map_err(|e| step_err("remove db.prev", e))?;
    }
    if dir.exists() {
        std::fs::rename(&dir, &prev).map_err(|e| step_err("set the running backup aside", e))?;
    }
    std::fs::rename(&next, &dir).map_err(|e| step_err("put the quiesced backup in place", e))?;
    std::fs::write(cx.quiesced_marker(), b"")
        .map_err(|e| step_err("mark the backup quiesced", e))?;
    if prev.exists() {
        std::fs::remove_dir_all(&prev).map_err(|e| step_err("remove db.prev", e))?;
    }
    Ok(())
}

/// Name prefix of the backup from before the first attempt, once a later attempt replaced it.
const SUPERSEDED: &str = "db.superseded-";

#[derive(Debug)]
struct Backup;

#[async_trait]
impl Step<UpgradeContext> for Backup {
    fn id(&self) -> &str {
        "backup"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let dir = cx.backup_dir();
        let db_ok = cs_backup::verify(&dir).await.is_ok();
        let bundles_ok = cx
            .service_nodes()
            .iter()
            .all(|n| cx.bundle_path(&n.name).exists())
            && cx
                .config
                .hosts()
                .all(|(_, h)| cx.host_bundle_path(h.display_name()).exists());
        let inventory_ok = cx.inventory_path().exists();
        if cx.stale_marker().exists() {
            return Ok(StepState::Partial(
                "the backup predates a rollback: a new one is needed".into(),
            ));
        }
        Ok(match (db_ok && bundles_ok && inventory_ok, dir.exists()) {
            (true, _) => StepState::Done,
            (false, true) => StepState::Partial("the backup is incomplete".into()),
            (false, false) => StepState::Pending,
        })
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let dir = cx.backup_dir();
        let stale = cx.stale_marker();
        if stale.exists() && dir.exists() {
            // The backup from before the first attempt is kept (the state the cloud was in
            // when the upgrade began); those of later attempts are not (each one's databases
            // went on running after its rollback, and the new backup supersedes them).
            let first_kept = std::fs::read_dir(&cx.run_dir)
                .map_err(|e| step_err("list the run directory", e))?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(SUPERSEDED));
            if first_kept {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| step_err("remove the superseded backup", e))?;
            } else {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                std::fs::rename(&dir, cx.run_dir.join(format!("{SUPERSEDED}{secs}")))
                    .map_err(|e| step_err("set the old backup aside", e))?;
            }
        }
        if cs_backup::verify(&dir).await.is_err() {
            dump_databases(cx, &dir).await?;
        }
        std::fs::create_dir_all(cx.run_dir.join("config"))
            .map_err(|e| step_err("create the config bundle directory", e))?;
        for n in cx.service_nodes() {
            let paths: Vec<String> = cs_backup::CLOUDSTACK_CONFIG_PATHS
                .iter()
                .chain(["/etc/apt/sources.list.d", "/etc/yum.repos.d"].iter())
                .map(|p| n.path(p).to_string_lossy().into_owned())
                .collect();
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let bundle = cs_backup::bundle_config(n.host.as_ref(), &refs)
                .await
                .map_err(|e| step_err(&format!("{}: bundle the configuration", n.name), e))?;
            bundle
                .save(&cx.bundle_path(&n.name))
                .map_err(|e| step_err(&format!("{}: save the config bundle", n.name), e))?;
        }
        // The KVM hosts' repository files, which the agent refresh rewrites (agent.properties
        // and the keystore are cs-agent's to keep).
        for (_, h) in cx.config.hosts() {
            let n = connect(&cx.config, h)
                .await
                .map_err(|e| step_err(&format!("{}: connect", h.display_name()), e))?;
            let paths: Vec<String> = ["/etc/apt/sources.list.d", "/etc/yum.repos.d"]
                .iter()
                .map(|p| n.path(p).to_string_lossy().into_owned())
                .collect();
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let bundle = cs_backup::bundle_config(n.host.as_ref(), &refs)
                .await
                .map_err(|e| step_err(&format!("{}: bundle the repositories", n.name), e))?;
            bundle
                .save(&cx.host_bundle_path(&n.name))
                .map_err(|e| step_err(&format!("{}: save the repository bundle", n.name), e))?;
        }
        let inventory = cs_api::Inventory::snapshot(&cx.client)
            .await
            .map_err(|e| step_err("take the inventory", e))?;
        inventory
            .save(&cx.inventory_path())
            .map_err(|e| step_err("save the inventory", e))?;
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(step_err("clear the stale-backup marker", e))
            }
            _ => Ok(()),
        }
    }

    async fn rollback(&self, _cx: &UpgradeContext) -> Result<(), StepError> {
        // The backup is kept: it is what later rollbacks restore from.
        Ok(())
    }
}

#[derive(Debug)]
struct Quiesce {
    hop: CsVersion,
    /// Only the first hop's rollback restarts the services (a later hop's services stay
    /// stopped until the database is restored).
    first: bool,
    id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Quiesce {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if db_version(&cx.db).await.map_err(StepError::new)? >= self.hop
            || cx.marker(&self.hop).exists()
            || cx.passed(&self.hop).await?
        {
            // Past this hop, or its migration started (a resumed run must not stop the
            // management server in the middle of it).
            return Ok(StepState::Done);
        }
        for n in cx.service_nodes() {
            if installed_version(n).await? >= Some(self.hop) {
                // The packages of this hop went in after the services were stopped.
                return Ok(StepState::Done);
            }
        }
        let mut active = 0;
        for n in cx.service_nodes() {
            for unit in [MANAGEMENT_UNIT, USAGE_UNIT] {
                if unit_active(n, unit).await? {
                    active += 1;
                }
            }
        }
        let up = mshosts_up(cx).await?;
        let refreshed = !self.first || cx.quiesced_marker().exists();
        Ok(if active == 0 && up.is_empty() && refreshed {
            StepState::Done
        } else if active == 0 && up.is_empty() {
            StepState::Partial("stopped; the backup of the quiesced databases is missing".into())
        } else if active < cx.service_nodes().len() * 2 {
            StepState::Partial(format!("{active} service(s) still active"))
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        wait_mshosts(
            cx,
            "no management server Up",
            Duration::from_secs(60),
            |rows| rows.is_empty(),
        )
        .await?;
        if self.first {
            refresh_backup(cx).await?;
        }
        Ok(())
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        if !self.first {
            return Ok(());
        }
        // Put the configuration files back, then start everything at the old version.
        for n in cx.service_nodes() {
            let path = cx.bundle_path(&n.name);
            if path.exists() {
                let bundle = cs_backup::ConfigBundle::load(&path)
                    .map_err(|e| step_err(&format!("{}: load the config bundle", n.name), e))?;
                cs_backup::restore_config(n.host.as_ref(), &bundle)
                    .await
                    .map_err(|e| step_err(&format!("{}: restore the configuration", n.name), e))?;
                remove_leftovers(n, &bundle).await?;
            }
        }
        start_all(cx, &cx.record.from).await?;
        // The services run on the old version again: the database moves on from here, so a
        // later attempt must take a new backup, and a new quiesced one.
        std::fs::write(cx.stale_marker(), b"").map_err(|e| step_err("mark the backup stale", e))?;
        match std::fs::remove_file(cx.quiesced_marker()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(step_err("clear the quiesced-backup marker", e));
            }
            _ => {}
        }
        let expect = cs_api::HealthExpectations {
            phase: cs_api::Phase::Post,
            version: Some(cx.record.from),
        };
        cs_api::wait_healthy(
            &cx.client,
            &expect,
            cx.config.policy.host_up_deadline,
            cx.progress.as_ref(),
        )
        .await
        .map_err(|e| step_err("wait for the cloud to be healthy again", e))?;
        Ok(())
    }
}

/// A step done on `at` of `total` nodes: `Done` on all, `Pending` on none, `Partial` saying how
/// many otherwise.
fn count_state(at: usize, total: usize, what: &str) -> StepState {
    match at {
        a if a == total => StepState::Done,
        0 => StepState::Pending,
        a => StepState::Partial(format!("{a} of {total} {what}")),
    }
}

#[derive(Debug)]
struct Repos {
    hop: CsVersion,
    id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Repos {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if cx.passed(&self.hop).await? {
            return Ok(StepState::Done);
        }
        let at = repos_at(cx, &self.hop.line()).await?;
        Ok(count_state(
            at,
            cx.service_nodes().len(),
            "server(s) switched",
        ))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        switch_repos(cx, &self.hop.line()).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        switch_repos(cx, &cx.record.from.line()).await
    }
}

#[derive(Debug)]
struct Packages {
    hop: CsVersion,
    id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Packages {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if cx.passed(&self.hop).await? {
            return Ok(StepState::Done);
        }
        let nodes = cx.service_nodes();
        let mut at = 0;
        for n in &nodes {
            if installed_version(n).await? == Some(self.hop) {
                at += 1;
            }
        }
        Ok(count_state(at, nodes.len(), "server(s) upgraded"))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        install_all(cx, &self.hop).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        switch_repos(cx, &cx.record.from.line()).await?;
        install_all(cx, &cx.record.from).await
    }
}

#[derive(Debug)]
struct Migrate {
    hop: CsVersion,
    id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Migrate {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let state = cs_schema::read_state(&cx.db)
            .await
            .map_err(|e| step_err("read the version table", e))?;
        let table = state.version.as_ref();
        let current = table.and_then(|t| t.current());
        let incomplete = table.is_some_and(|t| t.incomplete().next().is_some());
        if current.is_some_and(|c| c >= self.hop) && !incomplete {
            return Ok(StepState::Done);
        }
        if incomplete
            || cx.marker(&self.hop).exists()
            || current.is_some_and(|c| c > cx.record.from)
        {
            return Ok(StepState::Partial(format!(
                "the migration to {} started (database at {})",
                self.hop,
                current.map_or("?".into(), |c| c.to_string())
            )));
        }
        Ok(StepState::Pending)
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let first = &cx.management[0];
        std::fs::write(cx.marker(&self.hop), b"")
            .map_err(|e| step_err("write the migration marker", e))?;
        let mut watch = MigrationWatch::new(cx.db.clone(), self.hop, first.host.clone());
        watch.log = first.layout.management_log();
        watch.poll = Duration::from_millis(200);
        watch.deadline = cx.config.policy.migration_deadline;
        if !unit_active(first, MANAGEMENT_UNIT).await? {
            // The watch must see the log from before the start: start it first, then start.
            let handle = {
                let watch = watch.clone();
                let progress = cx.progress.clone();
                tokio::spawn(async move { watch.run(progress.as_ref()).await })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            systemctl(first, "start", MANAGEMENT_UNIT).await?;
            let outcome = handle
                .await
                .map_err(|e| step_err("watch the migration", e))?
                .map_err(|e| step_err("watch the migration", e))?;
            return outcome_result(outcome, &first.name);
        }
        let outcome = watch
            .run(cx.progress.as_ref())
            .await
            .map_err(|e| step_err("watch the migration", e))?;
        outcome_result(outcome, &first.name)
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        let report = cs_backup::restore(
            &cx.backup_dir(),
            &cx.db.url,
            &cs_backup::RestoreOptions {
                threads: cx.config.backup.threads,
                ..cs_backup::RestoreOptions::default()
            },
            cx.progress.as_ref(),
        )
        .await
        .map_err(|e| step_err("restore the databases", e))?;
        cs_backup::drop_parked(&cx.db.url, &report)
            .await
            .map_err(|e| step_err("drop the replaced tables", e))?;
        let _ = std::fs::remove_file(cx.marker(&self.hop));
        Ok(())
    }
}

fn outcome_result(outcome: WatchOutcome, node: &str) -> Result<(), StepError> {
    match outcome {
        WatchOutcome::Complete { .. } => Ok(()),
        WatchOutcome::Failed { line, .. } => Err(StepError::new(format!(
            "the schema migration on {node} failed: {line}"
        ))),
        WatchOutcome::TimedOut { rows, .. } => Err(StepError::new(format!(
            "the schema migration on {node} did not finish in time ({} version row(s) written)",
            rows.len()
        ))),
        other => Err(StepError::new(format!(
            "the schema migration on {node}: {other:?}"
        ))),
    }
}

#[derive(Debug)]
struct StartOthers {
    hop: CsVersion,
    id: String,
}

#[async_trait]
impl Step<UpgradeContext> for StartOthers {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if cx.passed(&self.hop).await? {
            return Ok(StepState::Done);
        }
        let rows = mshosts_up(cx).await?;
        let up = cx
            .management
            .iter()
            .filter(|m| is_up_at(&rows, &m.name, &self.hop))
            .count();
        let mut usage = 0;
        for u in &cx.usage {
            if unit_active(u, USAGE_UNIT).await? {
                usage += 1;
            }
        }
        // With the first server Up at the hop, a later one started (running or failed) is this
        // step's doing.
        let mut started = 0;
        for m in cx.management.iter().skip(1) {
            if unit_state(m, MANAGEMENT_UNIT).await? != "inactive" {
                started += 1;
            }
        }
        Ok(if up == cx.management.len() && usage == cx.usage.len() {
            StepState::Done
        } else if up > 1 || (up > 0 && (started > 0 || usage > 0)) {
            // The first server comes Up with the migration; a usage server running before
            // that is the old version's.
            StepState::Partial(format!("{up} management server(s) Up"))
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        start_all(cx, &self.hop).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await
    }
}

#[derive(Debug)]
struct Agents;

impl Agents {
    fn targets(cx: &UpgradeContext) -> Vec<(cs_agent::fleet::Target, String)> {
        cx.config
            .hosts()
            .map(|(cluster, h)| {
                (
                    cs_agent::fleet::Target {
                        user: h.user.clone().unwrap_or_else(|| cx.config.ssh.user.clone()),
                        host: h.address.clone(),
                        port: h.port,
                        cluster: Some(cluster.to_string()),
                        root: h.root.as_ref().map(|r| r.to_string_lossy().into_owned()),
                    },
                    h.display_name().to_string(),
                )
            })
            .collect()
    }

    /// Removes the refresh journals of direction `tag` (`upgrade` or `rollback`): once the
    /// other direction starts, they describe work that is being undone, and a later refresh in
    /// their direction must not take its hosts for done.
    fn clear_journals(cx: &UpgradeContext, tag: &str) -> Result<(), StepError> {
        let fleet = format!("agents-{tag}.jsonl");
        let host = format!("agent-{tag}-");
        let entries =
            std::fs::read_dir(&cx.run_dir).map_err(|e| step_err("list the run directory", e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == fleet || (name.starts_with(&host) && name.ends_with(".jsonl")) {
                std::fs::remove_file(e.path())
                    .map_err(|err| step_err(&format!("remove {name}"), err))?;
            }
        }
        Ok(())
    }

    async fn refresh_all(cx: &UpgradeContext, to: CsVersion, tag: &str) -> Result<(), StepError> {
        let pairs = Self::targets(cx);
        let names: BTreeMap<String, (String, NodeConfig)> = cx
            .config
            .hosts()
            .map(|(c, h)| (h.display_name().to_string(), (c.to_string(), h.clone())))
            .collect();
        let by_label: BTreeMap<String, String> =
            pairs.iter().map(|(t, n)| (t.label(), n.clone())).collect();
        let targets: Vec<cs_agent::fleet::Target> = pairs.into_iter().map(|(t, _)| t).collect();
        let options = cs_agent::fleet::FleetOptions {
            parallel: cx.config.policy.batch_size,
            max_fail_pct: (cx.config.policy.max_fail_percent > 0)
                .then_some(f64::from(cx.config.policy.max_fail_percent)),
            canary: true,
            journal: Some(cx.run_dir.join(format!("agents-{tag}.jsonl"))),
        };
        let report = cs_agent::fleet::run_fleet(&targets, &options, cx.progress.as_ref(), |t| {
            let name = by_label.get(&t.label()).cloned().unwrap_or_default();
            let entry = names.get(&name).cloned();
            async move {
                let Some((cluster, node_cfg)) = entry else {
                    return Err(format!("{name}: not in the configuration"));
                };
                let handle = connect(&cx.config, &node_cfg)
                    .await
                    .map_err(|e| error_chain(&e))?;
                let node = cs_agent::Node::new(handle.host.clone())
                    .rerooted(handle.root.clone())
                    .in_cluster(cluster)
                    .with_key(name.clone());
                let repo: Arc<dyn cs_core::RepoSwitch> = Arc::new(cs_repo::RepoSwitcher {
                    layout: node_cfg.layout(),
                    rules: cx.config.repo_rules(),
                });
                let mut options = cs_agent::RefreshOptions::new(to);
                options.up_deadline = cx.config.policy.host_up_deadline;
                options.poll = Duration::from_millis(200);
                let deps = cs_agent::Deps {
                    status: Arc::new(cx.client.clone()),
                    maintenance: Some(Arc::new(cx.client.clone())),
                    repo: Some(repo),
                };
                let rcx = cs_agent::RefreshContext::new(node, options, deps);
                let journal = cx.run_dir.join(format!("agent-{tag}-{name}.jsonl"));
                cs_agent::refresh_host(&rcx, &journal, true, &NoProgress)
                    .await
                    .map(|r| r.summary())
                    .map_err(|e| error_chain(&e))
            }
        })
        .await
        .map_err(|e| step_err("refresh the agents", e))?;
        if report.all_ok() {
            Ok(())
        } else {
            Err(StepError::new(format!(
                "agent refresh failed:\n{}",
                report.to_table()
            )))
        }
    }
}

#[async_trait]
impl Step<UpgradeContext> for Agents {
    fn id(&self) -> &str {
        "agents"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let target = cx.record.target;
        let mut at = 0;
        let mut total = 0;
        for (_, h) in cx.config.hosts() {
            total += 1;
            let state = cs_core::HostStatus::hypervisor(&cx.client, h.display_name())
                .await
                .map_err(|e| StepError::with_source("ask the API for a host", e))?;
            if state.is_some_and(|s| s.version == Some(target)) {
                at += 1;
            }
        }
        Ok(count_state(at, total, &format!("agent(s) at {target}")))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        Self::clear_journals(cx, "rollback")?;
        Self::refresh_all(cx, cx.record.target, "upgrade").await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        Self::clear_journals(cx, "upgrade")?;
        Self::refresh_all(cx, cx.record.from, "rollback").await?;
        // The refresh pointed the repositories back; the bundle also takes away the backup
        // copies both rewrites left.
        for (_, h) in cx.config.hosts() {
            let path = cx.host_bundle_path(h.display_name());
            if !path.exists() {
                continue;
            }
            let n = connect(&cx.config, h)
                .await
                .map_err(|e| step_err(&format!("{}: connect", h.display_name()), e))?;
            let bundle = cs_backup::ConfigBundle::load(&path)
                .map_err(|e| step_err(&format!("{}: load the repository bundle", n.name), e))?;
            cs_backup::restore_config(n.host.as_ref(), &bundle)
                .await
                .map_err(|e| step_err(&format!("{}: restore the repositories", n.name), e))?;
            remove_leftovers(&n, &bundle).await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct PostFlight;

impl PostFlight {
    async fn diff(cx: &UpgradeContext) -> Result<cs_api::InventoryDiff, StepError> {
        let before = cs_api::Inventory::load(&cx.inventory_path())
            .map_err(|e| step_err("load the inventory taken before", e))?;
        let now = cs_api::Inventory::snapshot(&cx.client)
            .await
            .map_err(|e| step_err("take the inventory", e))?;
        Ok(cs_api::diff(&before, &now))
    }
}

#[async_trait]
impl Step<UpgradeContext> for PostFlight {
    fn id(&self) -> &str {
        "postflight"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let report = match cs_api::HealthReport::collect(&cx.client).await {
            Ok(r) => r,
            Err(_) => return Ok(StepState::Pending),
        };
        let expect = cs_api::HealthExpectations {
            phase: cs_api::Phase::Post,
            version: Some(cx.record.target),
        };
        if !report.problems(&expect).is_empty() || !cx.inventory_path().exists() {
            return Ok(StepState::Pending);
        }
        Ok(if Self::diff(cx).await?.is_clean() {
            StepState::Done
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let expect = cs_api::HealthExpectations {
            phase: cs_api::Phase::Post,
            version: Some(cx.record.target),
        };
        cs_api::wait_healthy(
            &cx.client,
            &expect,
            cx.config.policy.host_up_deadline,
            cx.progress.as_ref(),
        )
        .await
        .map_err(|e| step_err("post-flight health", e))?;
        let diff = Self::diff(cx).await?;
        if diff.is_clean() {
            Ok(())
        } else {
            let lines: Vec<String> = diff.findings().iter().map(|f| f.message.clone()).collect();
            Err(StepError::new(format!(
                "the inventory changed: {}",
                lines.join("; ")
            )))
        }
    }

    async fn rollback(&self, _cx: &UpgradeContext) -> Result<(), StepError> {
        Ok(())
    }
}

/// The steps of an upgrade along `record`'s hops, in order.
pub fn steps(record: &RunRecord) -> Vec<Box<dyn Step<UpgradeContext>>> {
    let mut out: Vec<Box<dyn Step<UpgradeContext>>> = vec![Box::new(Backup)];
    for (i, hop) in record.hops.iter().enumerate() {
        out.push(Box::new(Quiesce {
            hop: *hop,
            first: i == 0,
            id: if i == 0 {
                "quiesce".into()
            } else {
                format!("quiesce@{hop}")
            },
        }));
        out.push(Box::new(Repos {
            hop: *hop,
            id: format!("repos@{hop}"),
        }));
        out.push(Box::new(Packages {
            hop: *hop,
            id: format!("packages@{hop}"),
        }));
        out.push(Box::new(Migrate {
            hop: *hop,
            id: format!("migrate@{hop}"),
        }));
        out.push(Box::new(StartOthers {
            hop: *hop,
            id: format!("start@{hop}"),
        }));
    }
    if !record.hops.is_empty() {
        out.push(Box::new(Agents));
        out.push(Box::new(PostFlight));
    }
    out
}

fn runner(cx: &UpgradeContext) -> Runner<UpgradeContext> {
    Runner::new(cx.run_dir.join("journal.jsonl"), steps(&cx.record))
}

/// What [`plan`] found: the hops with their schema steps, and the runner's dry run.
#[derive(Debug, Clone)]
pub struct UpgradePlan {
    /// What the run starts from.
    pub record: RunRecord,
    /// The schema steps of each hop (`class (from -> to)`).
    pub schema_steps: Vec<(CsVersion, Vec<String>)>,
    /// Every step's state.
    pub plan: cs_core::Plan,
}

impl UpgradePlan {
    /// A text rendering for people.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "upgrade {} -> {} in {} hop(s)\n",
            self.record.from,
            self.record.target,
            self.record.hops.len()
        );
        for (hop, steps) in &self.schema_steps {
            s.push_str(&format!("  hop to {hop}: {}\n", steps.join(", ")));
        }
        for p in &self.plan.steps {
            let state = match (&p.state, &p.error) {
                (_, Some(e)) => format!("check failed: {e}"),
                (Some(StepState::Done), _) => "done".into(),
                (Some(StepState::Pending), _) => "would apply".into(),
                (Some(StepState::Partial(why)), _) => format!("would resume: {why}"),
                (Some(other), _) => format!("would apply ({other:?})"),
                (None, None) => "?".into(),
            };
            s.push_str(&format!("  {:<22} {state}\n", p.id));
        }
        s
    }
}

/// Dry run: what an upgrade would do, with the schema steps of each hop. Writes only the run
/// record.
///
/// # Errors
/// [`UpgradeError`] when the context cannot be built or the journal belongs to another plan.
pub async fn plan(config: &UpgradeConfig) -> Result<UpgradePlan, UpgradeError> {
    let cx = UpgradeContext::build(config, Arc::new(NoProgress)).await?;
    let mut schema_steps = Vec::new();
    let mut from = cx.record.from;
    for hop in &cx.record.hops {
        let steps = cs_schema::path(&from, hop).map_err(|e| UpgradeError::plan(e.to_string()))?;
        schema_steps.push((*hop, steps.iter().map(ToString::to_string).collect()));
        from = *hop;
    }
    let plan = runner(&cx).plan(&cx).await?;
    Ok(UpgradePlan {
        record: cx.record.clone(),
        schema_steps,
        plan,
    })
}

/// Runs the upgrade (resuming what the journal records); on a failed step the runner rolls
/// back what was applied, newest first, and the error carries its report.
///
/// # Errors
/// [`UpgradeError`] with the report when steps ran.
pub async fn apply(
    config: &UpgradeConfig,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    let cx = UpgradeContext::build(config, progress.clone()).await?;
    Ok(runner(&cx).run(&cx, progress.as_ref()).await?)
}

/// Rolls back every step the journal records as applied, newest first.
///
/// # Errors
/// [`UpgradeError`] with the report when some rollbacks failed.
pub async fn rollback(
    config: &UpgradeConfig,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    let cx = UpgradeContext::build(config, progress.clone()).await?;
    Ok(runner(&cx).rollback_all(&cx, progress.as_ref()).await?)
}
