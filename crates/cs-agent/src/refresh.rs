//! One host's refresh as idempotent steps: snapshot, maintenance, repository, package,
//! identity restore, keystore gate, restart, wait for Up, leave maintenance.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cs_core::{
    CsVersion, HostExt, HostMaintenance, HostStatus, HypervisorState, Progress, RepoSwitch,
    RunReport, Runner, Severity, Step, StepError, StepOutcome, StepState,
};
use serde::{Deserialize, Serialize};

use crate::checks::KeystoreCheck;
use crate::packages::{self, AGENT_PACKAGE, AGENT_PACKAGES, AGENT_SERVICE, Family, ServiceAction};
use crate::properties::{ChangeKind, IDENTITY_KEYS, Properties, is_secret_key};
use crate::{Error, Node, facts};

/// What the orchestrator wires in: cs-api answers status and maintenance, cs-repo switches
/// repositories.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Whether the host is Up and at which version.
    pub status: Arc<dyn HostStatus>,
    /// Maintenance mode; `None` leaves the host's resource state alone.
    pub maintenance: Option<Arc<dyn HostMaintenance>>,
    /// Points the host's repositories at a release line; `None` expects them to offer the
    /// target already (the index is still refreshed).
    pub repo: Option<Arc<dyn RepoSwitch>>,
}

/// How one host is refreshed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshOptions {
    /// The version to install.
    pub target: CsVersion,
    /// How long to wait for the host to be Up at the target after the restart.
    pub up_deadline: Duration,
    /// How often to ask while waiting.
    pub poll: Duration,
    /// Where the refresh keeps its snapshot on the host (under [`Node::root`]).
    pub state_dir: PathBuf,
}

cs_core::setters!(RefreshOptions {
    target: CsVersion,
    up_deadline: Duration,
    poll: Duration,
    state_dir: PathBuf,
});

impl RefreshOptions {
    /// Options for `target` with a 10-minute deadline, polling every 5 s.
    pub fn new(target: CsVersion) -> Self {
        RefreshOptions {
            target,
            up_deadline: Duration::from_secs(600),
            poll: Duration::from_secs(5),
            state_dir: PathBuf::from("/var/lib/cs-upgrade/agent-refresh"),
        }
    }
}

/// One identity key the refresh put back after the package changed it. Secret values are not
/// kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    /// The key.
    pub key: String,
    /// What the package had done to it.
    pub kind: ChangeKind,
    /// The value the package left (`***` for secret keys; `None` when it removed the key).
    pub package_value: Option<String>,
}

/// What the snapshot step records on the host beside the copied files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// The refresh's target.
    pub target: String,
    /// The package-manager family.
    pub family: Family,
    /// Installed `cloudstack-agent` before the refresh (package-version string).
    pub agent: Option<String>,
    /// Installed `cloudstack-common` before the refresh.
    pub common: Option<String>,
    /// Whether the packages were held.
    pub held: bool,
    /// The copied files and their modes.
    pub files: Vec<(String, u32)>,
}

/// The context the refresh steps run against.
#[derive(Debug)]
pub struct RefreshContext {
    /// The host.
    pub node: Node,
    /// The options.
    pub options: RefreshOptions,
    /// The collaborators.
    pub deps: Deps,
    restored: Mutex<Vec<Restored>>,
    removed_jars: Mutex<Vec<String>>,
    /// What a step just learnt from the host and the next step would ask again, kept for that
    /// one next use (see [`Answers`]).
    answers: Mutex<Answers>,
}

/// Answers one step passes to the next so the host is not asked the same thing twice in a row
/// (each is a command on the host, over SSH a channel and a process or two). Each is taken by
/// its one consumer, so a later question (a step's check after its apply) asks afresh, and
/// whatever could change the answer in between drops it.
#[derive(Debug, Default)]
struct Answers {
    /// The installed packages the snapshot read, for the install step's first check (nothing
    /// between them installs anything: the repository step only switches and refreshes the
    /// index).
    installed: Option<(Family, Vec<packages::PackageState>)>,
    /// The target version the repositories offer, as the repository step's check found it,
    /// for the install step's apply; dropped by every repository switch.
    offered: Option<(Family, CsVersion, String)>,
}

impl RefreshContext {
    /// A context for refreshing `node`.
    pub fn new(node: Node, options: RefreshOptions, deps: Deps) -> Self {
        RefreshContext {
            node,
            options,
            deps,
            restored: Mutex::new(Vec::new()),
            removed_jars: Mutex::new(Vec::new()),
            answers: Mutex::new(Answers::default()),
        }
    }

    /// The identity keys restored so far by this context.
    pub fn restored(&self) -> Vec<Restored> {
        self.restored
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The stale `cloud-*.jar` files removed so far by this context.
    pub fn removed_jars(&self) -> Vec<String> {
        self.removed_jars
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state_dir(&self) -> PathBuf {
        self.node.path(&self.options.state_dir.to_string_lossy())
    }

    fn manifest_path(&self) -> PathBuf {
        self.state_dir().join("manifest.json")
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.state_dir().join("snapshot")
    }

    fn marker_path(&self) -> PathBuf {
        self.state_dir().join("restarted")
    }

    async fn manifest(&self) -> Result<Option<SnapshotManifest>, StepError> {
        let bytes = self
            .node
            .host
            .read_opt(&self.manifest_path())
            .await
            .map_err(|e| step_err("read the snapshot manifest", e))?;
        match bytes {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| step_err("parse the snapshot manifest", e)),
        }
    }

    async fn require_manifest(&self) -> Result<SnapshotManifest, StepError> {
        self.manifest().await?.ok_or_else(|| {
            StepError::new("no snapshot of /etc/cloudstack/agent: run the snapshot step first")
        })
    }

    async fn snapshot_properties(&self) -> Result<Properties, StepError> {
        let path = self.snapshot_dir().join("agent.properties");
        let bytes = self
            .node
            .host
            .read(&path)
            .await
            .map_err(|e| step_err("read the snapshot of agent.properties", e))?;
        Properties::from_bytes(&bytes).map_err(|e| step_err("parse the snapshot", e))
    }

    async fn hypervisor(&self) -> Result<Option<HypervisorState>, StepError> {
        self.deps
            .status
            .hypervisor(&self.node.key)
            .await
            .map_err(|e| StepError::with_source("ask the management server for the host", e))
    }

    async fn up_at_target(&self) -> Result<bool, StepError> {
        Ok(self
            .hypervisor()
            .await?
            .is_some_and(|h| h.is_up() && h.version == Some(self.options.target)))
    }
}

fn step_err(what: &str, e: impl Into<cs_core::BoxError>) -> StepError {
    StepError::with_source(what.to_string(), e)
}

/// The refresh of one host, in order. With `maintenance`, the host enters maintenance after
/// the snapshot and leaves it at the end (`deps.maintenance` must be set).
pub fn refresh_steps(maintenance: bool) -> Vec<Box<dyn Step<RefreshContext>>> {
    let mut steps: Vec<Box<dyn Step<RefreshContext>>> = vec![Box::new(Snapshot)];
    if maintenance {
        steps.push(Box::new(EnterMaintenance));
    }
    steps.push(Box::new(SwitchRepo));
    steps.push(Box::new(Install));
    steps.push(Box::new(StaleJars));
    steps.push(Box::new(RestoreIdentity));
    steps.push(Box::new(KeystoreGate));
    steps.push(Box::new(Restart));
    steps.push(Box::new(WaitUp));
    if maintenance {
        steps.push(Box::new(LeaveMaintenance));
    }
    steps
}

/// What a successful refresh of one host did.
#[derive(Debug, Clone)]
pub struct RefreshReport {
    /// The runner's report, step by step.
    pub run: RunReport,
    /// Identity keys put back after the package changed them.
    pub restored: Vec<Restored>,
    /// Stale jars removed.
    pub removed_jars: Vec<String>,
}

impl RefreshReport {
    /// One line for a result table: steps applied, keys restored, jars removed.
    pub fn summary(&self) -> String {
        let applied = self.run.ids_with(StepOutcome::Applied).len();
        let mut s = format!("{applied} step(s) applied");
        if !self.restored.is_empty() {
            let keys: Vec<&str> = self.restored.iter().map(|r| r.key.as_str()).collect();
            s.push_str(&format!("; restored {}", keys.join(", ")));
        }
        if !self.removed_jars.is_empty() {
            s.push_str(&format!(
                "; removed {} stale jar(s)",
                self.removed_jars.len()
            ));
        }
        s
    }
}

/// Refreshes one host: runs [`refresh_steps`] with a journal at `journal` (resuming an earlier,
/// interrupted run of the same plan), rolling back on failure.
///
/// # Errors
/// [`Error::Refresh`] with the runner's report when a step fails or the journal is unusable.
pub async fn refresh_host(
    cx: &RefreshContext,
    journal: &std::path::Path,
    maintenance: bool,
    progress: &dyn Progress,
) -> crate::Result<RefreshReport> {
    let runner = Runner::new(journal, refresh_steps(maintenance));
    match runner.run(cx, progress).await {
        Ok(run) => Ok(RefreshReport {
            run,
            restored: cx.restored(),
            removed_jars: cx.removed_jars(),
        }),
        Err(e) => Err(Error::Refresh {
            host: cx.node.name().to_string(),
            source: Box::new(e),
        }),
    }
}

async fn installed(
    cx: &RefreshContext,
    family: Family,
) -> Result<Vec<packages::PackageState>, StepError> {
    if let Some((f, pkgs)) = cx.answers().installed.take()
        && f == family
    {
        return Ok(pkgs);
    }
    packages::installed(cx.node.host.as_ref(), family, AGENT_PACKAGES)
        .await
        .map_err(|e| step_err("query installed packages", e))
}

#[derive(Debug)]
struct Snapshot;

#[async_trait]
impl Step<RefreshContext> for Snapshot {
    fn id(&self) -> &str {
        "agent.snapshot"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        Ok(match cx.manifest().await? {
            Some(m) if m.target == cx.options.target.to_string() => StepState::Done,
            _ => StepState::Pending,
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let host = cx.node.host.as_ref();
        let (family, pkgs) = facts::agent_packages(host)
            .await
            .map_err(|e| step_err("query installed packages", e))?;
        let conf = &cx.node.layout.agent_conf_dir;
        let entries = host
            .list_dir(conf)
            .await
            .map_err(|e| step_err("list the agent configuration", e))?;
        let snap = cx.snapshot_dir();
        host.create_dir_all(&snap, 0o700)
            .await
            .map_err(|e| step_err("create the snapshot directory", e))?;
        let mut files = Vec::new();
        for e in entries
            .iter()
            .filter(|e| e.meta.kind == cs_core::FileKind::File)
        {
            let data = host
                .read(&conf.join(&e.name))
                .await
                .map_err(|err| step_err(&format!("read {}", e.name), err))?;
            host.write_atomic(&snap.join(&e.name), &data, Some(0o600))
                .await
                .map_err(|err| step_err(&format!("snapshot {}", e.name), err))?;
            files.push((e.name.clone(), e.meta.mode));
        }
        if !files.iter().any(|(n, _)| n == "agent.properties") {
            return Err(StepError::new(format!(
                "{} has no agent.properties: not a configured agent",
                conf.display()
            )));
        }
        let version = |name: &str| {
            pkgs.iter()
                .find(|p| p.name == name)
                .and_then(|p| p.installed.clone())
        };
        let manifest = SnapshotManifest {
            target: cx.options.target.to_string(),
            family,
            agent: version(AGENT_PACKAGE),
            common: version(packages::COMMON_PACKAGE),
            held: pkgs.iter().any(|p| p.held),
            files,
        };
        cx.answers().installed = Some((family, pkgs));
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| step_err("encode", e))?;
        // The manifest goes last: a snapshot without one is not taken for complete.
        host.write_atomic(&cx.manifest_path(), &json, Some(0o600))
            .await
            .map_err(|e| step_err("write the snapshot manifest", e))
    }

    async fn rollback(&self, cx: &RefreshContext) -> Result<(), StepError> {
        // The copied files stay (nothing is lost); without the manifest the next run takes a
        // fresh snapshot.
        match cx.node.host.remove_file(&cx.manifest_path()).await {
            Err(e) if !e.is_not_found() => Err(step_err("remove the snapshot manifest", e)),
            _ => Ok(()),
        }
    }
}

/// Whether both packages are installed at the target.
async fn at_target(cx: &RefreshContext) -> Result<bool, StepError> {
    let (_, pkgs) = facts::agent_packages(cx.node.host.as_ref())
        .await
        .map_err(|e| step_err("query installed packages", e))?;
    Ok(pkgs.iter().all(|p| p.version() == Some(cx.options.target)))
}

fn in_maintenance(h: &Option<HypervisorState>) -> bool {
    h.as_ref()
        .and_then(|h| h.resource_state.as_deref())
        .is_some_and(|s| s == "Maintenance")
}

fn maintenance(cx: &RefreshContext) -> Result<&Arc<dyn HostMaintenance>, StepError> {
    cx.deps
        .maintenance
        .as_ref()
        .ok_or_else(|| StepError::new("maintenance requested but no HostMaintenance wired in"))
}

#[derive(Debug)]
struct EnterMaintenance;

#[async_trait]
impl Step<RefreshContext> for EnterMaintenance {
    fn id(&self) -> &str {
        "agent.maintenance.enter"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        let h = cx.hypervisor().await?;
        // A host already Up at the target with the target installed needs no maintenance:
        // a second run of a finished refresh must not migrate its guests away again.
        let finished = h
            .as_ref()
            .is_some_and(|h| h.is_up() && h.version == Some(cx.options.target))
            && at_target(cx).await?;
        Ok(if in_maintenance(&h) || finished {
            StepState::Done
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        maintenance(cx)?
            .enter(&cx.node.key)
            .await
            .map_err(|e| StepError::with_source("put the host in maintenance", e))
    }

    async fn rollback(&self, cx: &RefreshContext) -> Result<(), StepError> {
        maintenance(cx)?
            .leave(&cx.node.key)
            .await
            .map_err(|e| StepError::with_source("take the host out of maintenance", e))
    }
}

#[derive(Debug)]
struct LeaveMaintenance;

#[async_trait]
impl Step<RefreshContext> for LeaveMaintenance {
    fn id(&self) -> &str {
        "agent.maintenance.leave"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        Ok(if in_maintenance(&cx.hypervisor().await?) {
            StepState::Pending
        } else {
            StepState::Done
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        EnterMaintenance.rollback(cx).await
    }

    async fn rollback(&self, _cx: &RefreshContext) -> Result<(), StepError> {
        // The last step: nothing after it can fail, and re-entering maintenance would only
        // migrate guests away again.
        Ok(())
    }
}

/// The package version the repositories offer for `version`. `pass_on`: a version found is
/// kept for the next call (the install step's), which takes it instead of asking.
async fn offered(
    cx: &RefreshContext,
    family: Family,
    version: &CsVersion,
    pass_on: bool,
) -> Result<Option<String>, StepError> {
    if let Some((f, v, found)) = cx.answers().offered.take()
        && f == family
        && v == *version
    {
        return Ok(Some(found));
    }
    let all = packages::available(cx.node.host.as_ref(), family, AGENT_PACKAGE)
        .await
        .map_err(|e| step_err("list available versions", e))?;
    let found = packages::pick_version(&all, version).map(str::to_string);
    if pass_on && let Some(found) = &found {
        cx.answers().offered = Some((family, *version, found.clone()));
    }
    Ok(found)
}

#[derive(Debug)]
struct SwitchRepo;

impl SwitchRepo {
    async fn switch(cx: &RefreshContext, family: Family, line: &str) -> Result<(), StepError> {
        cx.answers().offered = None;
        let host = cx.node.host.as_ref();
        if let Some(repo) = &cx.deps.repo {
            repo.switch(host, line).await.map_err(|e| {
                StepError::with_source(format!("point the repositories at {line}"), e)
            })?;
        }
        packages::refresh_index(host, family)
            .await
            .map_err(|e| step_err("refresh the package index", e))
    }
}

#[async_trait]
impl Step<RefreshContext> for SwitchRepo {
    fn id(&self) -> &str {
        "agent.repo"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        let m = cx.require_manifest().await?;
        Ok(
            match offered(cx, m.family, &cx.options.target, true).await? {
                Some(_) => StepState::Done,
                None => StepState::Pending,
            },
        )
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let m = cx.require_manifest().await?;
        Self::switch(cx, m.family, &cx.options.target.line()).await
    }

    async fn rollback(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let m = cx.require_manifest().await?;
        let Some(prev) = m.agent.as_deref().and_then(|v| CsVersion::parse(v).ok()) else {
            return Ok(());
        };
        Self::switch(cx, m.family, &prev.line()).await
    }
}

#[derive(Debug)]
struct Install;

#[async_trait]
impl Step<RefreshContext> for Install {
    fn id(&self) -> &str {
        "agent.install"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        let m = cx.require_manifest().await?;
        let pkgs = installed(cx, m.family).await?;
        let at: Vec<&str> = pkgs
            .iter()
            .filter(|p| p.version() == Some(cx.options.target))
            .map(|p| p.name.as_str())
            .collect();
        Ok(if at.len() == pkgs.len() {
            StepState::Done
        } else if at.is_empty() {
            StepState::Pending
        } else {
            StepState::Partial(format!("{} at {}", at.join(", "), cx.options.target))
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let m = cx.require_manifest().await?;
        let host = cx.node.host.as_ref();
        let version = offered(cx, m.family, &cx.options.target, false)
            .await?
            .ok_or_else(|| {
                StepError::new(format!(
                    "the repositories do not offer cloudstack-agent {}",
                    cx.options.target
                ))
            })?;
        if m.held {
            packages::unhold(host, m.family, AGENT_PACKAGES)
                .await
                .map_err(|e| step_err("release the hold on the packages", e))?;
        }
        packages::install_exact(host, m.family, AGENT_PACKAGES, &version)
            .await
            .map_err(|e| step_err("install the target packages", e))?;
        if m.held {
            packages::hold(host, m.family, AGENT_PACKAGES)
                .await
                .map_err(|e| step_err("hold the packages again", e))?;
        }
        Ok(())
    }

    async fn rollback(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let m = cx.require_manifest().await?;
        let host = cx.node.host.as_ref();
        if let Some(prev) = &m.agent {
            let pkgs = installed(cx, m.family).await?;
            if pkgs
                .iter()
                .any(|p| p.installed.as_deref() != Some(prev.as_str()))
            {
                // The previous version is only offered once the repositories point at its
                // line again (the repository step's own rollback comes later, a no-op then).
                if let Ok(v) = CsVersion::parse(prev) {
                    SwitchRepo::switch(cx, m.family, &v.line()).await?;
                }
                if m.held {
                    packages::unhold(host, m.family, AGENT_PACKAGES)
                        .await
                        .map_err(|e| step_err("release the hold on the packages", e))?;
                }
                packages::install_exact(host, m.family, AGENT_PACKAGES, prev)
                    .await
                    .map_err(|e| step_err("reinstall the previous packages", e))?;
                if m.held {
                    packages::hold(host, m.family, AGENT_PACKAGES)
                        .await
                        .map_err(|e| step_err("hold the packages again", e))?;
                }
            }
        }
        restore_snapshot(cx, &m).await?;
        let _ = host.remove_file(&cx.marker_path()).await;
        packages::service(host, ServiceAction::Restart, AGENT_SERVICE)
            .await
            .map_err(|e| step_err("restart the agent after the rollback", e))
    }
}

/// Puts every snapshot file back in the agent's configuration directory, with its mode.
async fn restore_snapshot(cx: &RefreshContext, m: &SnapshotManifest) -> Result<(), StepError> {
    let host = cx.node.host.as_ref();
    let conf = &cx.node.layout.agent_conf_dir;
    for (name, mode) in &m.files {
        let data = host
            .read(&cx.snapshot_dir().join(name))
            .await
            .map_err(|e| step_err(&format!("read the snapshot of {name}"), e))?;
        host.write_atomic(&conf.join(name), &data, Some(*mode))
            .await
            .map_err(|e| step_err(&format!("restore {name}"), e))?;
    }
    Ok(())
}

/// Removes `cloud-*.jar` of other versions than the target that the package left behind
/// (CHECKS.md `agent.jars.consistent`: two versions on the classpath break the agent).
#[derive(Debug)]
struct StaleJars;

impl StaleJars {
    async fn stale(cx: &RefreshContext) -> Result<Vec<String>, StepError> {
        let jars = packages::jar_versions(cx.node.host.as_ref(), &cx.node.layout)
            .await
            .map_err(|e| step_err("list the agent's jars", e))?;
        let target = cx.options.target;
        Ok(jars
            .by_version
            .iter()
            .filter(|(v, _)| CsVersion::parse(v).ok() != Some(target))
            .flat_map(|(_, names)| names.iter().cloned())
            .collect())
    }
}

#[async_trait]
impl Step<RefreshContext> for StaleJars {
    fn id(&self) -> &str {
        "agent.jars"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        Ok(if Self::stale(cx).await?.is_empty() {
            StepState::Done
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let dir = &cx.node.layout.agent_lib_dir;
        for name in Self::stale(cx).await? {
            tracing::info!(host = cx.node.name(), jar = %name, "removing a stale jar");
            cx.node
                .host
                .remove_file(&dir.join(&name))
                .await
                .map_err(|e| step_err(&format!("remove {name}"), e))?;
            if let Ok(mut r) = cx.removed_jars.lock() {
                r.push(name);
            }
        }
        Ok(())
    }

    async fn rollback(&self, _cx: &RefreshContext) -> Result<(), StepError> {
        // Reinstalling the previous package (the install step's rollback) brings its jars back.
        Ok(())
    }
}

#[derive(Debug)]
struct RestoreIdentity;

#[async_trait]
impl Step<RefreshContext> for RestoreIdentity {
    fn id(&self) -> &str {
        "agent.identity"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        let before = cx.snapshot_properties().await?;
        let now = cx
            .node
            .properties()
            .await
            .map_err(|e| step_err("read agent.properties", e))?;
        let changed: Vec<&str> = IDENTITY_KEYS
            .iter()
            .copied()
            .filter(|k| before.get(k) != now.get(k))
            .collect();
        Ok(if changed.is_empty() {
            StepState::Done
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let m = cx.require_manifest().await?;
        let before = cx.snapshot_properties().await?;
        let path = cx.node.layout.agent_properties();
        let mut now = match cx.node.properties().await {
            Ok(p) => p,
            // The package removed the file: start from the snapshot.
            Err(Error::Host { source, .. }) if source.is_not_found() => before.clone(),
            Err(e) => return Err(step_err("read agent.properties", e)),
        };
        let mut restored = Vec::new();
        for key in IDENTITY_KEYS {
            let (old, new) = (before.get(key), now.get(key));
            if old == new {
                continue;
            }
            let kind = match (old, new) {
                (Some(_), None) => ChangeKind::Removed,
                (None, Some(_)) => ChangeKind::Added,
                _ => ChangeKind::Changed,
            };
            let package_value = new.map(|v| {
                if is_secret_key(key) {
                    "***".to_string()
                } else {
                    v.to_string()
                }
            });
            match old {
                Some(v) => {
                    // A duplicate left by the package would still win over an edit of an
                    // earlier line: set() edits the last one.
                    now.set(key, v);
                }
                None => {
                    now.remove(key);
                }
            }
            tracing::info!(host = cx.node.name(), key, ?kind, "restored identity key");
            restored.push(Restored {
                key: (*key).to_string(),
                kind,
                package_value,
            });
        }
        let mode = m
            .files
            .iter()
            .find(|(n, _)| n == "agent.properties")
            .map_or(0o600, |(_, m)| *m);
        cx.node
            .host
            .write_atomic(&path, &now.to_bytes(), Some(mode))
            .await
            .map_err(|e| step_err("write agent.properties", e))?;
        if let Ok(mut r) = cx.restored.lock() {
            r.extend(restored);
        }
        Ok(())
    }

    async fn rollback(&self, _cx: &RefreshContext) -> Result<(), StepError> {
        // The install step's rollback restores the whole snapshot.
        Ok(())
    }
}

#[derive(Debug)]
struct KeystoreGate;

impl KeystoreGate {
    async fn failures(cx: &RefreshContext) -> Result<Vec<String>, StepError> {
        // Expiry is reported by pre-flight; the gate only stops a store that will not load.
        let check = KeystoreCheck {
            min_days: 0,
            ..KeystoreCheck::default()
        };
        let findings = check
            .findings(&cx.node)
            .await
            .map_err(|e| step_err("inspect the keystore", e))?;
        Ok(findings
            .into_iter()
            .filter(|f| f.severity == Severity::Fail)
            .map(|f| f.message)
            .collect())
    }
}

#[async_trait]
impl Step<RefreshContext> for KeystoreGate {
    fn id(&self) -> &str {
        "agent.keystore"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        Ok(if Self::failures(cx).await?.is_empty() {
            StepState::Done
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let f = Self::failures(cx).await?;
        if f.is_empty() {
            Ok(())
        } else {
            Err(StepError::new(format!(
                "keystore unusable: {}",
                f.join("; ")
            )))
        }
    }

    async fn rollback(&self, _cx: &RefreshContext) -> Result<(), StepError> {
        Ok(())
    }
}

#[derive(Debug)]
struct Restart;

#[async_trait]
impl Step<RefreshContext> for Restart {
    fn id(&self) -> &str {
        "agent.restart"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        let marker = cx
            .node
            .host
            .read_opt(&cx.marker_path())
            .await
            .map_err(|e| step_err("read the restart marker", e))?;
        let target = cx.options.target.to_string();
        if marker.as_deref() == Some(target.as_bytes()) {
            let st = packages::service_status(cx.node.host.as_ref(), AGENT_SERVICE)
                .await
                .map_err(|e| step_err("ask systemd", e))?;
            if st == "active" || st == "activating" {
                return Ok(StepState::Done);
            }
        }
        Ok(if cx.up_at_target().await? {
            StepState::Done
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let host = cx.node.host.as_ref();
        packages::service(host, ServiceAction::Restart, AGENT_SERVICE)
            .await
            .map_err(|e| step_err("restart cloudstack-agent", e))?;
        host.write_atomic(
            &cx.marker_path(),
            cx.options.target.to_string().as_bytes(),
            Some(0o600),
        )
        .await
        .map_err(|e| step_err("write the restart marker", e))
    }

    async fn rollback(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let _ = cx.node.host.remove_file(&cx.marker_path()).await;
        Ok(())
    }
}

#[derive(Debug)]
struct WaitUp;

#[async_trait]
impl Step<RefreshContext> for WaitUp {
    fn id(&self) -> &str {
        "agent.wait_up"
    }

    async fn check(&self, cx: &RefreshContext) -> Result<StepState, StepError> {
        Ok(if cx.up_at_target().await? {
            StepState::Done
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &RefreshContext) -> Result<(), StepError> {
        let target = cx.options.target;
        let up = move |h: Option<&HypervisorState>| {
            h.is_some_and(|h| h.is_up() && h.version == Some(target))
        };
        // Through the status's own wait: a shared poller answers every waiting host from one
        // listing per interval.
        let h = cx
            .deps
            .status
            .wait_for(&cx.node.key, &up, cx.options.up_deadline, cx.options.poll)
            .await
            .map_err(|e| StepError::with_source("ask the management server for the host", e))?;
        if up(h.as_ref()) {
            return Ok(());
        }
        let seen = h.map_or("unknown to the management server".to_string(), |h| {
            format!(
                "{} at {}",
                h.state,
                h.version.map_or("no version".into(), |v| v.to_string())
            )
        });
        Err(StepError::new(format!(
            "host not Up at {} within {:?} (last seen: {seen})",
            cx.options.target, cx.options.up_deadline
        )))
    }

    async fn rollback(&self, _cx: &RefreshContext) -> Result<(), StepError> {
        Ok(())
    }
}
