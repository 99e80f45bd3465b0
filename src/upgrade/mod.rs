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
//!
//! This module holds what the steps share: the context, the run record, the errors, the step
//! list and the entry points. Each step has its own module, in the order a run takes them
//! (`backup`, `quiesce`, `repos`, `packages`, `migrate`, `start`, `agents`, `postflight`);
//! its `check` gathers facts into a small struct and hands them to a pure `decide`, which the
//! module's tests take through a table. The management-server operations several steps use
//! (units, packages, `mshost` rows, repositories) are in `ms`.

mod agents;
mod backup;
mod migrate;
mod ms;
mod packages;
mod postflight;
mod quiesce;
mod repos;
mod start;
mod sysvms;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cs_core::{
    CsVersion, Host, Layout, NoProgress, Progress, RunError, RunReport, Runner, SshHost, Step,
    StepError, StepState, error_chain,
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

pub(crate) use agents::{host_loads, maintenance_blockers};
pub use postflight::{PostFlightEvidence, evidence as postflight_evidence};

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
        .chain(report.broken.iter().map(|b| format!("{b:?}")))
        .collect();
    format!("{} failure(s): {}", fails.len(), fails.join("; "))
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
        out.push(Box::new(SystemVms));
        out.push(Box::new(PostFlight));
    }
    out
}

/// The journal file in a run directory.
const JOURNAL: &str = "journal.jsonl";
/// Written when a run finished: the upgrade is done and is not run again.
const SEAL: &str = "sealed.json";

/// The step after which the cloud serves tenants again: the first hop's migration ends with
/// the first management server serving the API at the new version.
pub fn point_of_no_return(record: &RunRecord) -> Option<String> {
    record.hops.first().map(|h| format!("migrate@{h}"))
}

fn runner(cx: &UpgradeContext) -> Runner<UpgradeContext> {
    let r = Runner::new(cx.run_dir.join(JOURNAL), steps(&cx.record));
    match point_of_no_return(&cx.record) {
        Some(p) => r.with_point_of_no_return(p),
        None => r,
    }
}

/// When the cloud reopened at the new version in the run to `config.target` (`YYYY-MM-DD
/// hh:mm:ss` UTC): the point of no return, once passed.
pub fn reopened_at(config: &UpgradeConfig) -> Option<String> {
    std::fs::read_to_string(run_dir(config).join("reopened"))
        .ok()
        .map(|t| t.trim().to_string())
}

/// A finished upgrade, as its seal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The target it reached.
    pub target: CsVersion,
    /// When it finished (UTC).
    pub finished_at: String,
}

/// The seal of a finished upgrade to `config.target`, when there is one: running the upgrade
/// again does nothing, whatever the cloud did since.
pub fn sealed(config: &UpgradeConfig) -> Option<Seal> {
    std::fs::read(run_dir(config).join(SEAL))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// What [`plan`] found: the hops with their schema steps, the pre-flight gate, and the
/// runner's dry run.
#[derive(Debug, Clone)]
pub struct UpgradePlan {
    /// What the run starts from.
    pub record: RunRecord,
    /// The schema steps of each hop (`class (from -> to)`).
    pub schema_steps: Vec<(CsVersion, Vec<String>)>,
    /// Every step's state.
    pub plan: cs_core::Plan,
    /// The pre-flight gate's report, when the run has not started (it runs before the first
    /// step that changes anything).
    pub gate: Option<cs_core::Report>,
    /// The step after which a failure no longer rolls back.
    pub point_of_no_return: Option<String>,
    /// The seal, when the upgrade is done.
    pub sealed: Option<Seal>,
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
        if let Some(seal) = &self.sealed {
            s.push_str(&format!(
                "  already done: reached {} at {}\n",
                seal.target, seal.finished_at
            ));
        }
        for (hop, steps) in &self.schema_steps {
            s.push_str(&format!("  hop to {hop}: {}\n", steps.join(", ")));
        }
        s.push_str(&format!(
            "  KVM hosts: {}\n",
            self.record
                .hosts
                .iter()
                .map(|h| format!("{} ({})", h.name, h.cluster))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for p in &self.plan.steps {
            let state = match (&p.state, &p.error) {
                (_, Some(e)) => format!("check failed: {e}"),
                (Some(StepState::Done), _) => "done".into(),
                (Some(StepState::Pending), _) => "would apply".into(),
                (Some(StepState::Partial(why)), _) => format!("would resume: {why}"),
                (Some(other), _) => format!("would apply ({other:?})"),
                (None, None) => "?".into(),
            };
            let point = if self.point_of_no_return.as_deref() == Some(p.id.as_str()) {
                "   <- point of no return: the cloud serves tenants again"
            } else {
                ""
            };
            s.push_str(&format!("  {:<22} {state}{point}\n", p.id));
        }
        if let Some(gate) = &self.gate {
            let fails = gate
                .findings
                .iter()
                .filter(|f| f.severity == cs_core::Severity::Fail)
                .count();
            s.push_str(&format!(
                "pre-flight gate: {}\n",
                if fails == 0 && gate.broken.is_empty() {
                    "passes".to_string()
                } else {
                    format!("would refuse: {}", describe_failures(gate))
                }
            ));
        }
        s
    }
}

/// What a run may be told besides its configuration.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Check ids the pre-flight gate skips, besides `policy.skip_checks`.
    pub skip_checks: Vec<String>,
}

impl ApplyOptions {
    /// Options skipping these check ids in the gate.
    pub fn skipping(ids: &[&str]) -> Self {
        ApplyOptions {
            skip_checks: ids.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What a rollback may be told.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RollbackOptions {
    /// After the point of no return: the time (`YYYY-MM-DD hh:mm:ss` UTC, or RFC 3339) since
    /// which the operator accepts to lose what the cloud wrote. It must not be later than the
    /// backup the rollback restores.
    pub discard_changes_since: Option<String>,
}

/// The skip list: `policy.skip_checks` and `extra`, every id one some check has.
fn skips(config: &UpgradeConfig, extra: &[String]) -> Result<Vec<String>, UpgradeError> {
    let known = crate::preflight::check_ids();
    let all: Vec<String> = config
        .policy
        .skip_checks
        .iter()
        .chain(extra)
        .cloned()
        .collect();
    let unknown: Vec<String> = all
        .iter()
        .filter(|id| !known.iter().any(|k| k == *id))
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(all)
    } else {
        Err(UpgradeError::new(UpgradeErrorKind::UnknownCheck(unknown)))
    }
}

/// The pre-flight report the gate decides on.
async fn gate_report(config: &UpgradeConfig, skip: &[String]) -> cs_core::Report {
    let refs: Vec<&str> = skip.iter().map(String::as_str).collect();
    crate::preflight::preflight(config, crate::ms_checks::Phase::Pre, &refs).await
}

fn gate_passes(report: &cs_core::Report) -> bool {
    report.broken.is_empty()
        && !report
            .findings
            .iter()
            .any(|f| f.severity == cs_core::Severity::Fail)
}

/// Dry run: what an upgrade would do — the hops and their schema steps, the KVM hosts, every
/// step's state, the point of no return, and (before the run starts) the pre-flight gate's
/// findings. Changes nothing.
///
/// # Errors
/// [`UpgradeError`] when the context cannot be built, a skip id is unknown, or the journal
/// belongs to another plan.
pub async fn plan(config: &UpgradeConfig) -> Result<UpgradePlan, UpgradeError> {
    plan_with(config, &ApplyOptions::default()).await
}

/// [`plan`] with the options a run would get.
///
/// # Errors
/// As [`plan`].
pub async fn plan_with(
    config: &UpgradeConfig,
    options: &ApplyOptions,
) -> Result<UpgradePlan, UpgradeError> {
    let skip = skips(config, &options.skip_checks)?;
    let cx = UpgradeContext::build(config, Arc::new(NoProgress)).await?;
    let mut schema_steps = Vec::new();
    let mut from = cx.record.from;
    for hop in &cx.record.hops {
        let steps = cs_schema::path(&from, hop).map_err(|e| UpgradeError::plan(e.to_string()))?;
        schema_steps.push((*hop, steps.iter().map(ToString::to_string).collect()));
        from = *hop;
    }
    let runner = runner(&cx);
    let plan = runner.plan(&cx).await?;
    let started = !cs_core::applied_steps(runner.journal_path())?.is_empty();
    let sealed = sealed(config);
    let gate = if started || sealed.is_some() {
        None
    } else {
        Some(gate_report(config, &skip).await)
    };
    Ok(UpgradePlan {
        point_of_no_return: point_of_no_return(&cx.record),
        record: cx.record.clone(),
        schema_steps,
        plan,
        gate,
        sealed,
    })
}

/// Runs the upgrade with default options (see [`apply_with`]).
///
/// # Errors
/// As [`apply_with`].
pub async fn apply(
    config: &UpgradeConfig,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    apply_with(config, &ApplyOptions::default(), progress).await
}

/// Runs the upgrade, resuming what the journal records:
/// * a finished (sealed) upgrade is not run again: every step is reported skipped;
/// * before the first step, the pre-flight gate runs and refuses on any failure;
/// * before the point of no return, a failed step rolls back what was applied, newest first;
///   after it, a failed step stops the run where it is (nothing is restored) and the error
///   says what failed; `apply` again resumes forward, [`rollback_with`] goes back.
///
/// # Errors
/// [`UpgradeErrorKind::Preflight`], [`UpgradeErrorKind::UnknownCheck`], and
/// [`UpgradeErrorKind::Run`] with the report when steps ran.
pub async fn apply_with(
    config: &UpgradeConfig,
    options: &ApplyOptions,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    let skip = skips(config, &options.skip_checks)?;
    let cx = UpgradeContext::build(config, progress.clone()).await?;
    let runner = runner(&cx);
    if sealed(config).is_some() {
        tracing::info!(target = %config.target, "the upgrade is already done");
        return Ok(skipped_report(&runner));
    }
    let record_path = cx.run_dir.join("run.json");
    if cs_core::applied_steps(runner.journal_path())?.is_empty() {
        let report = gate_report(config, &skip).await;
        if !gate_passes(&report) {
            return Err(UpgradeError::new(UpgradeErrorKind::Preflight(Box::new(
                report,
            ))));
        }
        write_json(&record_path, &cx.record).map_err(UpgradeError::plan)?;
    } else if !record_path.exists() {
        write_json(&record_path, &cx.record).map_err(UpgradeError::plan)?;
    }
    let report = runner.run(&cx, progress.as_ref()).await?;
    let seal = Seal {
        target: cx.record.target,
        finished_at: utc_now(),
    };
    write_json(&cx.run_dir.join(SEAL), &seal).map_err(UpgradeError::plan)?;
    Ok(report)
}

/// The report of a run that found everything done.
fn skipped_report(runner: &Runner<UpgradeContext>) -> RunReport {
    RunReport {
        journal: runner.journal_path().to_path_buf(),
        run: 0,
        kind: cs_core::RunKind::Apply,
        plan: runner.fingerprint().to_string(),
        steps: runner
            .step_ids()
            .map(|id| cs_core::StepReport {
                id: id.to_string(),
                outcome: cs_core::StepOutcome::Skipped,
                error: None,
                rollback_error: None,
                check_time: std::time::Duration::ZERO,
                apply_time: None,
                rollback_time: None,
            })
            .collect(),
        failed_step: None,
        rollback_order: Vec::new(),
    }
}

/// `YYYY-MM-DD hh:mm:ss` from that or an RFC 3339 time in UTC.
fn normalize_time(t: &str) -> Option<String> {
    let t = t.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix("+00:00"))
        .unwrap_or(t);
    let t = t.replacen('T', " ", 1);
    let ok = t.len() == 19
        && t.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    ok.then_some(t)
}

/// What restoring the backup would discard, when the run is past its point of no return:
/// `(time of the backup, what the cloud wrote since)`.
///
/// # Errors
/// [`UpgradeError`] when the context or the database cannot be read.
pub async fn loss_report(
    config: &UpgradeConfig,
) -> Result<Option<(String, cs_schema::ChangesSince)>, UpgradeError> {
    let cx = UpgradeContext::build(config, Arc::new(NoProgress)).await?;
    let runner = runner(&cx);
    if !runner.past_point_of_no_return().await? {
        return Ok(None);
    }
    let since = std::fs::read_to_string(cx.quiesced_marker())
        .ok()
        .and_then(|t| normalize_time(&t))
        .unwrap_or_else(|| cx.record.started_at.clone());
    let loss = cs_schema::changes_since(&cx.db, &since)
        .await
        .map_err(|e| {
            UpgradeError::plan(format!(
                "read what changed since {since}: {}",
                error_chain(&e)
            ))
        })?;
    Ok(Some((since, loss)))
}

/// Rolls back every step the journal records as applied, newest first, with default options
/// (see [`rollback_with`]).
///
/// # Errors
/// As [`rollback_with`].
pub async fn rollback(
    config: &UpgradeConfig,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    rollback_with(config, &RollbackOptions::default(), progress).await
}

/// Rolls back every step the journal records as applied, newest first. Past the point of no
/// return the cloud has served tenants since the backup, so restoring it discards what they
/// did: without [`RollbackOptions::discard_changes_since`] (at or before the backup's time) it
/// refuses, with what would be lost.
///
/// # Errors
/// [`UpgradeErrorKind::PointOfNoReturn`] with the loss; [`UpgradeError`] with the report when
/// some rollbacks failed.
pub async fn rollback_with(
    config: &UpgradeConfig,
    options: &RollbackOptions,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    if let Some((since, loss)) = loss_report(config).await? {
        let accepted = options
            .discard_changes_since
            .as_deref()
            .and_then(normalize_time)
            .is_some_and(|given| given <= since);
        if !accepted {
            return Err(UpgradeError::new(UpgradeErrorKind::PointOfNoReturn {
                since,
                loss: Box::new(loss),
            }));
        }
        tracing::warn!(since = %since, discarded = %loss_summary(&loss), "rolling back past the point of no return");
    }
    let cx = UpgradeContext::build(config, progress.clone()).await?;
    let report = runner(&cx).rollback_all(&cx, progress.as_ref()).await?;
    match std::fs::remove_file(cx.run_dir.join(SEAL)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(UpgradeError::plan(format!("remove the seal: {e}")))
        }
        _ => Ok(report),
    }
}

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
    fn times_are_taken_as_cloudstack_writes_them_or_in_rfc_3339() {
        use super::normalize_time;
        for t in [
            "2026-12-07 10:15:00",
            "2026-12-07T10:15:00Z",
            "2026-12-07T10:15:00+00:00",
        ] {
            assert_eq!(
                normalize_time(t).as_deref(),
                Some("2026-12-07 10:15:00"),
                "{t}"
            );
        }
        for t in ["2026-12-07", "yesterday", "2026-12-07T10:15:00+02:00", ""] {
            assert_eq!(normalize_time(t), None, "{t}");
        }
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
