//! The upgrade itself: the stages of the procedure as [`cs_core::Step`]s over an
//! [`UpgradeContext`], run by the journaled [`Runner`](cs_core::Runner) ([`plan`], [`apply`],
//! [`rollback`]).
//!
//! A run keeps its state in `backup.dir/upgrade-<target>/`: the journal, `run.json` (the
//! version the run started from, its hops and KVM hosts, fixed once a step is applied so a
//! resumed run plans the same steps), the database backup, one config bundle per node, the
//! inventory taken before, per-hop markers, `reopened` (when the cloud served again),
//! `postflight.json` (the proof) and `sealed.json` (a finished run). Every step's `check` reads
//! state only, so a killed run resumes; a finished run is sealed and not run again.
//!
//! The database is backed up twice: by the `backup` step while the cloud still runs (a backup
//! that cannot be taken stops the upgrade before any downtime), and again by `quiesce` once
//! every management and usage server is stopped, replacing the first. Before the point of no
//! return (the end of the first hop's `migrate`) a failure restores that second backup, so
//! nothing is lost; after it the cloud has served tenants, and nothing is restored unless the
//! operator accepts what that discards.
//!
//! This module holds what the steps share: the context, the run record, the errors and the step
//! list; the entry points (plan, apply, rollback, the seal) are in `run`. Each step has its own
//! module, in the order a run takes them (`template` with `[policy.system_template]`, `backup`, `quiesce`, `repos`, `packages`, `migrate`,
//! `start`, `agents`, `sysvms`, `postflight`); its `check` gathers facts into a small struct and hands
//! them to a pure `decide`, which the module's tests take through a table. The
//! management-server operations several steps use (units, packages, `mshost` rows,
//! repositories) are in `ms`.

mod agents;
mod backup;
mod migrate;
mod ms;
mod packages;
mod postflight;
mod quiesce;
mod repos;
mod run;
mod start;
mod sysvms;
mod template;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cs_core::{
    CsVersion, Host, Layout, Progress, RunError, RunReport, SshHost, Step, StepError, StepState,
    error_chain,
};
use cs_schema::DbTarget;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, NodeConfig, UpgradeConfig};
use crate::inventory::{HostInventory, KvmHostTarget};

use agents::Agents;
use backup::Backup;
use migrate::Migrate;
use ms::installed_version;
use packages::Packages;
use postflight::PostFlight;
use quiesce::Quiesce;
use repos::Repos;
use start::StartOthers;
use sysvms::SystemVms;
use template::Template;

pub(crate) use agents::{host_loads, maintenance_blockers};
pub use postflight::{PostFlightEvidence, evidence as postflight_evidence};
pub use run::{
    ApplyOptions, RollbackOptions, Seal, UpgradePlan, apply, apply_with, loss_report, plan,
    plan_with, point_of_no_return, reopened_at, rollback, rollback_with, sealed,
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
    /// The runner stopped: a step failed (before the point of no return what was applied was
    /// rolled back; after it nothing was), or the journal is unusable.
    #[error("the upgrade run stopped")]
    Run(#[source] RunError),
    /// Pre-flight found failures; nothing was changed.
    #[error("pre-flight found {}; nothing was changed (skip a check by id with `policy.skip_checks` or --skip)", describe_failures(.0))]
    Preflight(Box<cs_core::Report>),
    /// Check ids to skip that no check has.
    #[error("no check has the id(s) {}", .0.join(", "))]
    UnknownCheck(Vec<String>),
    /// A rollback after the point of no return, without the explicit flag that accepts its
    /// cost, or with a time later than the backup it restores.
    #[error("the cloud has served tenants since {since}: a rollback restores the backup of {since} and discards {}; to accept that, roll back with --discard-changes-since '{since}'", loss_summary(.loss))]
    PointOfNoReturn {
        /// The time of the backup a rollback restores (UTC).
        since: String,
        /// What the restore would discard.
        loss: Box<cs_schema::ChangesSince>,
    },
}

fn describe_failures(report: &cs_core::Report) -> String {
    let fails: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == cs_core::Severity::Fail)
        .map(|f| format!("{} {}: {}", f.id, f.subject, f.message))
        .chain(broken_once(report))
        .collect();
    format!("{} failure(s): {}", fails.len(), fails.join("; "))
}

/// The checks that broke, each distinct error once with the checks it broke (an unreachable
/// database breaks every database check on the same error).
fn broken_once(report: &cs_core::Report) -> Vec<String> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for b in &report.broken {
        match groups.iter_mut().find(|(e, _)| *e == b.error) {
            Some((_, ids)) => ids.push(&b.id),
            None => groups.push((&b.error, vec![&b.id])),
        }
    }
    groups
        .into_iter()
        .map(|(error, ids)| match ids.len() {
            1 => format!("{} broke: {error}", ids[0]),
            n => format!("{n} checks ({}) broke: {error}", ids.join(", ")),
        })
        .collect()
}

/// One line of what a restore would discard.
fn loss_summary(loss: &cs_schema::ChangesSince) -> String {
    if loss.is_empty() {
        return "nothing written since".into();
    }
    let mut parts: Vec<String> = loss
        .tables
        .iter()
        .map(|t| {
            format!(
                "{}: {} new and {} changed row(s)",
                t.table, t.created, t.changed
            )
        })
        .collect();
    if !loss.new_vms.is_empty() {
        let vms: Vec<String> = loss
            .new_vms
            .iter()
            .map(|v| {
                format!(
                    "{} ({}{})",
                    v.name,
                    v.state,
                    v.host
                        .as_deref()
                        .map(|h| format!(" on {h}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        parts.push(format!(
            "{} VM(s) created since, which the restored database would not know while they may still run on their hypervisors: {}",
            vms.len(),
            vms.join(", ")
        ));
    }
    parts.join("; ")
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
    /// The KVM hosts whose agents the run refreshes, as CloudStack listed them when it began.
    #[serde(default)]
    pub hosts: Vec<KvmHostTarget>,
    /// When the run began (`YYYY-MM-DD hh:mm:ss` UTC): the events since then explain what
    /// tenants did during it.
    #[serde(default)]
    pub started_at: String,
    /// Whether the run registers the target's system VM template first
    /// (`[policy.system_template]` when it began).
    #[serde(default)]
    pub registers_template: bool,
}

/// `YYYY-MM-DD hh:mm:ss`, UTC: how CloudStack writes times, and takes them in `startdate`.
pub(crate) fn utc_now() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
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
    // An IPv6 address goes in brackets, or its last group would be read as the port.
    let addr = if node.address.contains(':') {
        format!("[{}]:{}", node.address.trim_matches(['[', ']']), node.port)
    } else {
        format!("{}:{}", node.address, node.port)
    };
    let ssh = &config.ssh;
    let ssh_config = ssh.config_path();
    // With an ssh config, what this file leaves at its defaults (port 22, user root) is the
    // ssh config's to say.
    let addr = match (&ssh_config, node.port) {
        (Some(_), 22) if !node.address.contains(':') => node.address.clone(),
        _ => addr,
    };
    let user = node.user.clone().unwrap_or_else(|| ssh.user.clone());
    let mut b = SshHost::builder(addr);
    if ssh_config.is_none() || user != "root" {
        b = b.user(user);
    }
    if let Some(path) = ssh_config {
        b = b.ssh_config(path);
    }
    let passphrase = match &ssh.identity_passphrase {
        Some(src) => Some(src.resolve(config.path(), "ssh.identity_passphrase")?),
        None => None,
    };
    if let Some(p) = &passphrase {
        b = b.identity_passphrase(p.clone());
    }
    for hop in ssh
        .jumps()
        .map_err(|reason| crate::config::ConfigError::Invalid {
            path: config.path().to_path_buf(),
            key: "ssh.proxy_jump".into(),
            reason,
        })?
    {
        b = b.proxy_jump_via(hop);
    }
    let mut b = b
        .connect_timeout(config.ssh.connect_timeout)
        .deadlines(cs_core::Deadlines {
            reply: config.ssh.reply_timeout,
            ..cs_core::Deadlines::default()
        })
        .command_timeout(config.ssh.command_timeout)
        .name(node.display_name().to_string());
    b = match (&config.ssh.identity, passphrase) {
        (Some(k), Some(p)) => b.key_file_with_passphrase(k.clone(), p),
        (Some(k), None) => b.key_file(k.clone()),
        // The ssh config's identity files, or the agent (the builder's default).
        (None, _) if config.ssh.config.is_some() => b,
        (None, _) => b.agent(),
    };
    if let Some(k) = &config.ssh.known_hosts {
        b = b.known_hosts(k.clone());
    }
    if let Some(sudo) = config
        .sudo()
        .map_err(|e| UpgradeError::new(UpgradeErrorKind::Config(e)))?
    {
        b = b.sudo(sudo);
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
        // Once a step is applied the record is fixed, so a resumed run plans the same steps
        // on the same hosts; before that it describes the cloud as it is now.
        let started = !cs_core::applied_steps(&run_dir.join(JOURNAL))?.is_empty();
        let record = match std::fs::read(&record_path) {
            Ok(bytes) if started => {
                let mut r: RunRecord = serde_json::from_slice(&bytes).map_err(|e| {
                    UpgradeError::plan(format!("{} is unreadable: {e}", record_path.display()))
                })?;
                r.hosts = crate::inventory::reach_as_configured(&r.hosts, &config.host_entries());
                r
            }
            _ => {
                let from = db_version(&db).await.map_err(UpgradeError::plan)?;
                let inventory = HostInventory::collect(config, &client).await.map_err(|e| {
                    UpgradeError::plan(format!("list the KVM hosts: {}", error_chain(&e)))
                })?;
                RunRecord {
                    from,
                    target: config.target,
                    hops: hops(&from, &config.target, config.policy.direct_path)?,
                    hosts: inventory.hosts,
                    started_at: utc_now(),
                    registers_template: config.policy.system_template.is_some(),
                }
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

    /// Present once the backup is of the quiesced databases (see [`backup::refresh_backup`]);
    /// it holds the time that backup describes.
    fn quiesced_marker(&self) -> PathBuf {
        self.run_dir.join("backup.quiesced")
    }

    /// Written when the first hop's migration ends: the moment the cloud reopened at the new
    /// version (the point of no return).
    fn reopened_marker(&self) -> PathBuf {
        self.run_dir.join("reopened")
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

/// A step done on `at` of `total` nodes: `Done` on all, `Pending` on none, `Partial` saying how
/// many otherwise.
fn count_state(at: usize, total: usize, what: &str) -> StepState {
    match at {
        a if a == total => StepState::Done,
        0 => StepState::Pending,
        a => StepState::Partial(format!("{a} of {total} {what}")),
    }
}

/// The steps of an upgrade along `record`'s hops, in order.
pub fn steps(record: &RunRecord) -> Vec<Box<dyn Step<UpgradeContext>>> {
    let mut out: Vec<Box<dyn Step<UpgradeContext>>> = Vec::new();
    if record.registers_template && !record.hops.is_empty() {
        out.push(Box::new(Template));
    }
    out.push(Box::new(Backup));
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
        out.push(Box::new(SystemVms));
        out.push(Box::new(PostFlight));
    }
    out
}

/// The journal file in a run directory.
const JOURNAL: &str = "journal.jsonl";

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::count_state;

    #[track_caller]
    fn check(at: usize, total: usize, expected: StepState) {
        assert_eq!(count_state(at, total, "server(s) switched"), expected);
    }

    #[test]
    fn done_on_every_node_is_done() {
        check(3, 3, StepState::Done);
        check(0, 0, StepState::Done);
    }

    #[test]
    fn done_on_no_node_is_pending() {
        check(0, 3, StepState::Pending);
    }

    #[test]
    fn done_on_some_nodes_says_how_many() {
        check(1, 3, StepState::Partial("1 of 3 server(s) switched".into()));
        check(2, 3, StepState::Partial("2 of 3 server(s) switched".into()));
    }
}
