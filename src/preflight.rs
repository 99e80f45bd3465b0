//! Pre- and post-flight: every crate's read-only checks against the whole installation, run
//! concurrently into one [`Report`].
//!
//! * each management server: the `ms.*` checks ([`ms_checks`]) and, as a repository check,
//!   `repo.target.resolvable` before the upgrade (the target's repositories offer it) or
//!   `repo.target.configured` after it (every CloudStack entry points at the target line);
//! * the database: cs-schema's `db.*` and `systemvm.*` checks;
//! * the KVM hosts CloudStack lists, reconciled with the configuration (`hosts.known`,
//!   `hosts.excluded`), and on each: cs-agent's `agent.*`, `node.*` and `net.*` checks,
//!   `agent.version.match` against the API, and the same repository check as the management
//!   servers; a host that cannot be reached is a `node.reachable` failure naming it;
//! * with `policy.agent_refresh = "maintenance"`, `agents.maintenance.capacity`: every host's
//!   VMs fit in the rest of its cluster, none on local storage;
//! * the API: cs-api's `api.*` health checks.
//!
//! `cluster.quiesced` is not part of it: the cloud runs during pre- and post-flight, and the
//! upgrade itself checks that no management server is Up once it has stopped them.
//!
//! A node that cannot be reached, or a database or API that cannot be read, is a `Fail`
//! finding naming it; a check that cannot reach a verdict is recorded as broken (exit code 255).

use std::sync::Arc;

use cs_core::{Check, Finding, Host, HostExt, Report, Severity, error_chain, run_checks};
use futures::future::join_all;

use crate::config::{AgentRefresh, NodeConfig, UpgradeConfig};
use crate::inventory::{HOSTS_EXCLUDED, HOSTS_KNOWN, HostInventory, KvmHostTarget};
use crate::ms_checks::{MsContext, Phase, ms_checks};
use crate::node_checks::{self, AgentConfigDrift, Deps, DiskFree, SameVersion, SpaceNeed};
use crate::upgrade::{NodeHandle, api_client, connect};

/// The id of the finding for a node that cannot be reached.
pub const NODE_REACHABLE: &str = "node.reachable";
/// The id of the maintenance policy's capacity check.
pub const MAINTENANCE_CAPACITY: &str = "agents.maintenance.capacity";

/// The check id of the `[policy.rehearsal]` requirement: a passed rehearsal of the target's
/// migration recorded within the policy's window.
pub const REHEARSAL_RECENT: &str = "rehearsal.recent";

/// Every check id pre-flight (and the upgrade's gate) knows: the ids `policy.skip_checks` and
/// `--skip` may name.
pub fn check_ids() -> Vec<String> {
    let mut ids: Vec<String> = ms_checks().iter().map(|c| c.id().to_string()).collect();
    ids.extend(cs_schema::db_checks().iter().map(|c| c.id().to_string()));
    ids.extend(
        cs_agent::checks::host_checks()
            .iter()
            .map(|c| c.id().to_string()),
    );
    ids.extend(cs_api::HEALTH_CHECK_IDS.iter().map(|s| s.to_string()));
    ids.extend(
        [
            cs_repo::TARGET_RESOLVABLE,
            cs_repo::TARGET_CONFIGURED,
            cs_api::INVENTORY_CHECK_ID,
            "agent.version.match",
            NODE_REACHABLE,
            MAINTENANCE_CAPACITY,
            REHEARSAL_RECENT,
            HOSTS_KNOWN,
            HOSTS_EXCLUDED,
            "api.reachable",
            "db.reachable",
            cs_schema::ids::CLUSTER_QUIESCED,
            node_checks::CLUSTER_SAME_VERSION,
            node_checks::MS_DEPS,
            node_checks::NODE_DISK_FREE,
            node_checks::AGENT_CONFIG_DRIFT,
            PROPERTIES_INTACT,
            NET_MTU,
            cs_backup::BackupCompleteCheck::ID,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    ids.sort();
    ids.dedup();
    ids
}

/// The id of cs-agent's `PropertiesIntact`, run after the upgrade against the refresh's snapshot.
pub const PROPERTIES_INTACT: &str = "agent.properties.intact";
/// The id of cs-agent's `Mtu`, run across the KVM hosts of each cluster.
pub const NET_MTU: &str = "net.mtu";

/// Checks handled by the upgrade's own steps rather than by pre-flight.
const NOT_IN_PREFLIGHT: &[&str] = &[cs_schema::ids::CLUSTER_QUIESCED];

/// Runs every check of `phase` against the installation `config` describes, concurrently,
/// skipping the check ids in `skip` (and those in `policy.skip_checks`). Never fails: what
/// cannot be reached or read is in the report.
pub async fn preflight(config: &UpgradeConfig, phase: Phase, skip: &[&str]) -> Report {
    let mut skip: Vec<&str> = skip.to_vec();
    skip.extend(config.policy.skip_checks.iter().map(String::as_str));
    skip.extend(NOT_IN_PREFLIGHT);
    let skip = skip.as_slice();

    let db = db_context(config, phase).await;
    // The sizes `node.disk.free` needs; read once, and shared with the database checks.
    let state = match &db {
        Ok(cx) => cx.state().await.ok(),
        Err(_) => None,
    };
    let state = state.as_deref();
    let (management, database, hosts, api, local, after) = tokio::join!(
        management_servers(config, phase, state, skip),
        database(db.as_ref(), skip),
        kvm_hosts(config, phase, skip),
        api(config, phase, skip),
        local_disk(config, state, skip),
        after_the_upgrade(config, phase, skip)
    );
    let mut report = Report::default();
    if phase == Phase::Pre && !skip.contains(&REHEARSAL_RECENT) {
        report.merge(rehearsal_recent(config));
    }
    for part in [management, database, hosts, api, local, after] {
        report.merge(part);
    }
    for f in &mut report.findings {
        if NOT_IN_PREFLIGHT.contains(&f.id.as_str()) && f.severity == Severity::Skip {
            f.message = "checked by the upgrade once it has stopped the services".into();
        } else if skip.contains(&f.id.as_str()) && f.severity != Severity::Skip {
            // What a node-level failure found under a skipped id (an unreachable node) is kept
            // as the reason, but no longer counts.
            f.severity = Severity::Skip;
            f.message = format!("skipped; found: {}", f.message);
        }
    }
    report
}

/// `rehearsal.recent` (only with `[policy.rehearsal]`): the newest passed rehearsal of the
/// target recorded under the backup directory is no older than the policy allows.
fn rehearsal_recent(config: &UpgradeConfig) -> Report {
    let mut r = Report::default();
    let Some(policy) = &config.policy.rehearsal else {
        return r;
    };
    let target = config.target;
    let within = humantime::format_duration(policy.within);
    let remedy = format!(
        "rehearse the migration on a scratch copy (`rehearse --to {target} --backups {}`) and fix what it finds",
        config.backup.dir.display()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let subject = crate::rehearse::records_dir(&config.backup.dir)
        .display()
        .to_string();
    match crate::rehearse::last_passed(&config.backup.dir, &target) {
        Some(rec) if now.saturating_sub(rec.finished) <= policy.within.as_secs() => {
            r.push(Finding::pass(
                REHEARSAL_RECENT,
                subject,
                format!(
                    "the migration from {} to {target} was rehearsed and passed {} s ago (within {within})",
                    rec.db_version,
                    now.saturating_sub(rec.finished)
                ),
            ));
        }
        Some(rec) => r.push(
            Finding::new(
                REHEARSAL_RECENT,
                Severity::Fail,
                subject,
                format!(
                    "the last passed rehearsal of {target} is {} s old, older than {within}",
                    now.saturating_sub(rec.finished)
                ),
            )
            .with_remedy(remedy),
        ),
        None => r.push(
            Finding::new(
                REHEARSAL_RECENT,
                Severity::Fail,
                subject,
                format!("no passed rehearsal of the migration to {target} is recorded"),
            )
            .with_remedy(remedy),
        ),
    }
    r
}

pub(crate) fn unreachable(id: &str, subject: &str, message: String) -> Report {
    let mut r = Report::default();
    r.push(Finding::new(id, Severity::Fail, subject, message));
    r
}

/// The repository check of `phase` for a node: before the upgrade, that the target's
/// repositories offer it; after, that every CloudStack entry points at the target line.
fn repo_check(config: &UpgradeConfig, node: &NodeConfig, phase: Phase) -> Box<dyn Check<dyn Host>> {
    let target = config.target;
    match phase {
        Phase::Pre => {
            let mut c = cs_repo::TargetResolvable::new(target);
            c.layout = node.layout();
            c.rules = config.repo_rules();
            Box::new(c)
        }
        Phase::Post => {
            let mut c = cs_repo::TargetConfigured::new(target.line());
            c.layout = node.layout();
            c.rules = config.repo_rules();
            Box::new(c)
        }
    }
}

/// Every management server's checks, then `cluster.same.version` across those reached.
async fn management_servers(
    config: &UpgradeConfig,
    phase: Phase,
    state: Option<&cs_schema::SchemaState>,
    skip: &[&str],
) -> Report {
    let parts = join_all(
        config
            .management_servers
            .iter()
            .map(|n| management_server(config, n, phase, state, skip)),
    )
    .await;
    let mut report = Report::default();
    let mut reached = Vec::new();
    for (part, cx) in parts {
        report.merge(part);
        reached.extend(cx);
    }
    let same = SameVersion {
        target: config.target,
        phase,
    };
    let refs: [&dyn Check<[MsContext]>; 1] = [&same];
    if !reached.is_empty() {
        report.merge(run_checks(&refs, reached.as_slice(), skip).await);
    }
    report
}

/// Whether the database runs on `node` (its configured address is the node's).
fn db_on(config: &UpgradeConfig, node: &NodeConfig) -> bool {
    config.database.host == node.address
}

async fn management_server(
    config: &UpgradeConfig,
    node: &NodeConfig,
    phase: Phase,
    state: Option<&cs_schema::SchemaState>,
    skip: &[&str],
) -> (Report, Option<MsContext>) {
    let handle: NodeHandle = match connect(config, node).await {
        Ok(h) => h,
        Err(e) => {
            return (
                unreachable(NODE_REACHABLE, node.display_name(), error_chain(&e)),
                None,
            );
        }
    };
    let java_major = cs_schema::release_line(&config.target).map_or(
        if config.target.padded() >= [4, 20, 0, 0] {
            17
        } else {
            11
        },
        |l| l.java,
    );
    let cx = MsContext {
        host: handle.host.clone(),
        layout: handle.layout.clone(),
        target: config.target,
        java_major,
        phase,
    };
    let mut checks = ms_checks();
    checks.push(Box::new(Deps));
    let refs: Vec<&dyn Check<MsContext>> = checks.iter().map(AsRef::as_ref).collect();
    let repo = repo_check(config, node, phase);
    let mut needs = node_checks::package_needs(
        handle.host.as_ref(),
        &handle.root,
        "/usr/share/cloudstack-management",
    )
    .await;
    if db_on(config, node) {
        needs.push(datadir_need(&handle.root, state));
    }
    let disk = DiskFree { needs };
    let host_refs: [&dyn Check<dyn Host>; 2] = [repo.as_ref(), &disk];
    let (mut report, host) = tokio::join!(
        run_checks(&refs, &cx, skip),
        run_checks(&host_refs, handle.host.as_ref(), skip)
    );
    report.merge(host);
    (report, Some(cx))
}

/// MariaDB's data directory (the stock `datadir`; UNCONFIRMED for a server configured
/// otherwise) and the room the biggest table's copy needs there.
fn datadir_need(root: &std::path::Path, state: Option<&cs_schema::SchemaState>) -> SpaceNeed {
    let biggest = state
        .and_then(|s| s.table_sizes.iter().map(|t| t.bytes).max())
        .unwrap_or(0);
    SpaceNeed::new(
        "database data directory (the biggest table's copy)",
        root.join("var/lib/mysql"),
        biggest + node_checks::HEADROOM,
    )
}

/// `node.disk.free` where the upgrade runs: the backup directory holds both databases (their
/// size from `information_schema.TABLES`), and, with the database on this machine
/// (`127.0.0.1`/`localhost`), its data directory.
async fn local_disk(
    config: &UpgradeConfig,
    state: Option<&cs_schema::SchemaState>,
    skip: &[&str],
) -> Report {
    let total: u64 = state.map_or(0, |s| s.table_sizes.iter().map(|t| t.bytes).sum());
    let mut needs = vec![SpaceNeed::new(
        "backup directory (both databases)",
        config.backup.dir.clone(),
        total + node_checks::HEADROOM,
    )];
    if ["127.0.0.1", "localhost", "::1"].contains(&config.database.host.as_str()) {
        needs.push(datadir_need(std::path::Path::new("/"), state));
    }
    let disk = DiskFree { needs };
    let local = cs_core::LocalHost::new();
    let refs: [&dyn Check<dyn Host>; 1] = [&disk];
    run_checks(&refs, &local as &dyn Host, skip).await
}

/// The KVM hosts: CloudStack's list reconciled with the configuration, each host's checks, and
/// the maintenance capacity check when that policy is chosen.
async fn kvm_hosts(config: &UpgradeConfig, phase: Phase, skip: &[&str]) -> Report {
    let client = match api_client(config) {
        Ok(c) => c,
        Err(e) => return unreachable("api.reachable", &config.api.endpoint, error_chain(&e)),
    };
    let inventory = match HostInventory::collect(config, &client).await {
        Ok(i) => i,
        Err(e) => return unreachable("api.reachable", &config.api.endpoint, error_chain(&e)),
    };
    let mut report = Report::default();
    for f in inventory.findings() {
        if !skip.contains(&f.id.as_str()) {
            report.push(f);
        }
    }
    let hosts = join_all(
        inventory
            .hosts
            .iter()
            .map(|h| kvm_host(config, h, phase, skip)),
    )
    .await;
    let mut nodes = Vec::new();
    for (part, node) in hosts {
        report.merge(part);
        nodes.extend(node);
    }
    // `net.mtu` compares the hosts of each cluster with each other.
    if !nodes.is_empty() {
        let mtu = cs_agent::checks::Mtu;
        let refs: [&dyn Check<[cs_agent::Node]>; 1] = [&mtu];
        report.merge(run_checks(&refs, nodes.as_slice(), skip).await);
    }
    if phase == Phase::Pre
        && config.policy.agent_refresh == AgentRefresh::Maintenance
        && !skip.contains(&MAINTENANCE_CAPACITY)
    {
        report.merge(maintenance_capacity(&client).await);
    }
    report
}

async fn maintenance_capacity(client: &cs_api::Client) -> Report {
    let loads = match crate::upgrade::host_loads(client).await {
        Ok(l) => l,
        Err(e) => {
            return unreachable(MAINTENANCE_CAPACITY, "hosts", error_chain(&e));
        }
    };
    let mut r = Report::default();
    let blockers = crate::upgrade::maintenance_blockers(&loads);
    for b in &blockers {
        let subject = b.split(' ').next().unwrap_or("hosts").to_string();
        r.push(
            Finding::new(MAINTENANCE_CAPACITY, Severity::Fail, subject, b.clone())
                .with_remedy("free capacity in the cluster, stop the VMs on local storage, or refresh the agents in place (policy.agent_refresh = \"in-place\")"),
        );
    }
    if blockers.is_empty() {
        r.push(Finding::pass(
            MAINTENANCE_CAPACITY,
            "hosts",
            format!(
                "each of {} host(s) can be evacuated into the rest of its cluster",
                loads.len()
            ),
        ));
    }
    r
}

async fn kvm_host(
    config: &UpgradeConfig,
    host: &KvmHostTarget,
    phase: Phase,
    skip: &[&str],
) -> (Report, Option<cs_agent::Node>) {
    let node = host.node();
    let handle = match connect(config, &node).await {
        Ok(h) => h,
        Err(e) => {
            let r = unreachable(
                NODE_REACHABLE,
                &host.name,
                format!(
                    "CloudStack's KVM host {} ({}) cannot be reached at {}:{}: {} (give its address in a [[hosts]] entry, or exclude it)",
                    host.name,
                    host.cluster,
                    host.address,
                    host.port,
                    error_chain(&e)
                ),
            );
            return (r, None);
        }
    };
    let agent = cs_agent::Node::new(handle.host.clone())
        .rerooted(handle.root.clone())
        .in_cluster(host.cluster.clone())
        .with_key(host.name.clone());
    let mut checks = cs_agent::checks::host_checks();
    match api_client(config) {
        Ok(client) => {
            // Before the upgrade the agents run the old version: a mismatch with the target
            // is information; after it, a failure.
            checks.push(Box::new(cs_agent::checks::VersionMatch {
                expected: config.target,
                post: phase == Phase::Post,
                status: Some(Arc::new(client)),
            }));
        }
        Err(e) => {
            return (
                unreachable("api.reachable", &config.api.endpoint, error_chain(&e)),
                None,
            );
        }
    }
    checks.push(Box::new(AgentConfigDrift {
        target: config.target,
        phase,
    }));
    let mut report = Report::default();
    if phase == Phase::Post {
        match refresh_snapshot(&agent, config).await {
            Ok(Some(before)) => {
                checks.push(Box::new(cs_agent::checks::PropertiesIntact { before }))
            }
            Ok(None) => {
                if !skip.contains(&PROPERTIES_INTACT) {
                    report.push(Finding::new(
                        PROPERTIES_INTACT,
                        Severity::Info,
                        &host.name,
                        "no snapshot of the agent refresh on this host: nothing to compare with",
                    ));
                }
            }
            Err(e) => report.broken.push(cs_core::CheckFailure {
                id: PROPERTIES_INTACT.into(),
                error: format!("{}: {}", host.name, error_chain(&e)),
            }),
        }
    }
    let refs: Vec<&dyn Check<cs_agent::Node>> = checks.iter().map(AsRef::as_ref).collect();
    let repo = repo_check(config, &node, phase);
    let disk = DiskFree {
        needs: node_checks::package_needs(
            handle.host.as_ref(),
            &handle.root,
            "/usr/share/cloudstack-agent",
        )
        .await,
    };
    let host_refs: [&dyn Check<dyn Host>; 2] = [repo.as_ref(), &disk];
    let (agent_report, host_report) = tokio::join!(
        run_checks(&refs, &agent, skip),
        run_checks(&host_refs, handle.host.as_ref(), skip)
    );
    report.merge(agent_report);
    report.merge(host_report);
    (report, Some(agent))
}

/// `agent.properties` as the agent refresh kept it before the package upgrade
/// (`cs_agent::RefreshOptions::state_dir`, `snapshot/agent.properties`), when the refresh to
/// the target took one on this host (its `manifest.json` names the target).
async fn refresh_snapshot(
    agent: &cs_agent::Node,
    config: &UpgradeConfig,
) -> Result<Option<cs_agent::Properties>, cs_core::HostError> {
    let state = cs_agent::RefreshOptions::new(config.target).state_dir;
    let dir = agent.path(&state.to_string_lossy());
    let Some(manifest) = agent.host.read_opt(&dir.join("manifest.json")).await? else {
        return Ok(None);
    };
    let target = config.target.to_string();
    let for_target = serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .is_some_and(|m| m.get("target").and_then(|t| t.as_str()) == Some(target.as_str()));
    if !for_target {
        return Ok(None);
    }
    let Some(bytes) = agent
        .host
        .read_opt(&dir.join("snapshot").join("agent.properties"))
        .await?
    else {
        return Ok(None);
    };
    Ok(cs_agent::Properties::from_bytes(&bytes).ok())
}

/// The database checks' context (its schema state is read once and shared).
async fn db_context(
    config: &UpgradeConfig,
    phase: Phase,
) -> Result<cs_schema::DbContext, crate::ConfigError> {
    let url = config.database_url()?;
    let db = cs_schema::DbTarget::new(
        url,
        &config.database.cloud_schema,
        &config.database.usage_schema,
    );
    let registers = phase == Phase::Pre && config.policy.system_template.is_some();
    let mut cx = cs_schema::DbContext::new(db, config.target)
        // Before the upgrade, a run with the policy registers the template itself.
        .registers_systemvm_template(registers);
    // A target that registers its bundled template itself needs the file on the management
    // servers (`SystemVmTemplateRegistration`, apache/cloudstack #12077).
    if phase == Phase::Pre
        && !registers
        && cs_schema::auto_registers_systemvm_template(&config.target)
        && let Some(files) = bundled_systemvm_files(config).await
    {
        cx = cx.bundled_systemvm_files(files);
    }
    Ok(cx)
}

async fn database(cx: Result<&cs_schema::DbContext, &crate::ConfigError>, skip: &[&str]) -> Report {
    match cx {
        Ok(cx) => cs_schema::run_db_checks(cx, skip).await,
        Err(e) => unreachable("db.reachable", "database", error_chain(e)),
    }
}

/// The checks against what the upgrade run kept, after it: `db.backup.complete` (the backup a
/// rollback restores verifies) and `api.inventory.unchanged` (every VM that ran before still
/// runs on its host, or CloudStack's events explain why not: the proof of the `postflight`
/// step). Without a run directory, one information finding each.
async fn after_the_upgrade(config: &UpgradeConfig, phase: Phase, skip: &[&str]) -> Report {
    let mut report = Report::default();
    if phase != Phase::Post {
        return report;
    }
    let run_dir = crate::upgrade::run_dir(config);
    if !skip.contains(&cs_backup::BackupCompleteCheck::ID) {
        let dir = run_dir.join("db");
        if dir.exists() {
            match config.database_url() {
                Ok(url) => {
                    // The live routines are the target's now: only the backup's own
                    // completeness is checked.
                    let check =
                        cs_backup::BackupCompleteCheck::new(&dir, url).without_live_comparison();
                    let refs: [&dyn Check<()>; 1] = [&check];
                    report.merge(run_checks(&refs, &(), skip).await);
                }
                Err(e) => report.merge(unreachable("db.reachable", "database", error_chain(&e))),
            }
        } else {
            report.push(Finding::new(
                cs_backup::BackupCompleteCheck::ID,
                Severity::Info,
                dir.display().to_string(),
                "no backup of an upgrade run here: nothing to verify",
            ));
        }
    }
    if !skip.contains(&cs_api::INVENTORY_CHECK_ID) {
        report.merge(inventory_unchanged(config, &run_dir).await);
    }
    report
}

async fn inventory_unchanged(config: &UpgradeConfig, run_dir: &std::path::Path) -> Report {
    let id = cs_api::INVENTORY_CHECK_ID;
    let path = run_dir.join("inventory-before.json");
    if !path.exists() {
        let mut r = Report::default();
        r.push(Finding::new(
            id,
            Severity::Info,
            path.display().to_string(),
            "no inventory taken before an upgrade run: nothing to compare with",
        ));
        return r;
    }
    let broken = |e: String| Report {
        findings: Vec::new(),
        broken: vec![cs_core::CheckFailure {
            id: id.into(),
            error: e,
        }],
    };
    let before = match cs_api::Inventory::load(&path) {
        Ok(b) => b,
        Err(e) => return broken(format!("{}: {}", path.display(), error_chain(&e))),
    };
    let record: Option<crate::RunRecord> = std::fs::read(run_dir.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let client = match api_client(config) {
        Ok(c) => c,
        Err(e) => return unreachable("api.reachable", &config.api.endpoint, error_chain(&e)),
    };
    let now = match cs_api::Inventory::snapshot(&client).await {
        Ok(n) => n,
        Err(e) => return broken(format!("take the inventory: {}", error_chain(&e))),
    };
    let started = record.as_ref().map_or("", |r| r.started_at.as_str());
    let events = if started.is_empty() {
        Vec::new()
    } else {
        match client
            .list_events(&[("startdate", started), ("listall", "true")])
            .await
        {
            Ok(e) => e,
            Err(e) => return broken(format!("read the events: {}", error_chain(&e))),
        }
    };
    let refreshed: Vec<String> = record
        .as_ref()
        .map(|r| r.hosts.iter().map(|h| h.name.clone()).collect())
        .unwrap_or_default();
    let actions = cs_api::UpgradeActions {
        refreshed_hosts: &refreshed,
        maintenance: config.policy.agent_refresh == AgentRefresh::Maintenance,
    };
    let running = before.vms.iter().filter(|v| v.state == "Running").count();
    let proof = cs_api::attribute(&cs_api::diff(&before, &now), &events, &actions, running);
    Report {
        findings: proof.findings(),
        broken: Vec::new(),
    }
}

/// The names in the system VM template bundle directory (`cs_schema::SYSTEMVM_BUNDLE_DIR`,
/// beside the management server's `lib`) present on every management server; a missing
/// directory counts as empty. `None` when a server cannot be reached or read: the check then
/// says it did not look.
async fn bundled_systemvm_files(config: &UpgradeConfig) -> Option<Vec<String>> {
    let mut common: Option<Vec<String>> = None;
    for node in &config.management_servers {
        let handle = connect(config, node).await.ok()?;
        let dir = handle
            .layout
            .management_lib_dir
            .parent()?
            .join("templates/systemvm");
        let names: Vec<String> = match handle.host.list_dir(&dir).await {
            Ok(entries) => entries.into_iter().map(|e| e.name).collect(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(_) => return None,
        };
        common = Some(match common {
            None => names,
            Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
        });
    }
    common
}

async fn api(config: &UpgradeConfig, phase: Phase, skip: &[&str]) -> Report {
    let client = match api_client(config) {
        Ok(c) => c,
        Err(e) => return unreachable("api.reachable", &config.api.endpoint, error_chain(&e)),
    };
    let health = match cs_api::HealthReport::collect(&client).await {
        Ok(h) => h,
        Err(e) => return unreachable("api.reachable", &config.api.endpoint, error_chain(&e)),
    };
    let expect = cs_api::HealthExpectations {
        phase: match phase {
            Phase::Pre => cs_api::Phase::Pre,
            Phase::Post => cs_api::Phase::Post,
        },
        // Before the upgrade the cloud runs the old version, which the report shows as is.
        version: (phase == Phase::Post).then_some(config.target),
    };
    let checks = cs_api::health_checks(&expect);
    let refs: Vec<&dyn Check<cs_api::HealthReport>> = checks
        .iter()
        .map(|c| c as &dyn Check<cs_api::HealthReport>)
        .collect();
    run_checks(&refs, &health, skip).await
}

#[cfg(test)]
mod tests {
    /// `rehearsal.recent`: nothing without the policy; FAIL without a record, with a failed
    /// one only, or with one older than the window; PASS with a passed one within it.
    #[test]
    fn the_rehearsal_policy_needs_a_recent_passed_rehearsal() {
        use cs_core::Severity;
        let dir = tempfile::tempdir().unwrap();
        let example = include_str!("../examples/upgrade.toml");
        let base = example.replace(
            "dir = \"/var/backups/cloudstack\"",
            &format!("dir = {:?}", dir.path().display().to_string()),
        );
        let origin = dir.path().join("upgrade.toml");
        let config = crate::UpgradeConfig::parse(&base, &origin).unwrap();
        assert!(super::rehearsal_recent(&config).findings.is_empty());
        let with = base.replace(
            "[policy]\n",
            "[policy.rehearsal]\nwithin = \"7d\"\n\n[policy]\n",
        );
        let config = crate::UpgradeConfig::parse(&with, &origin).unwrap();
        assert_eq!(
            config.policy.rehearsal.as_ref().unwrap().within,
            std::time::Duration::from_secs(7 * 86400)
        );
        let verdict = |config: &crate::UpgradeConfig| {
            let r = super::rehearsal_recent(config);
            assert_eq!(r.findings.len(), 1);
            assert_eq!(r.findings[0].id, super::REHEARSAL_RECENT);
            r.findings[0].clone()
        };
        let f = verdict(&config);
        assert_eq!(f.severity, Severity::Fail);
        assert!(f.message.contains("no passed rehearsal"), "{}", f.message);
        assert!(f.remedy.as_deref().unwrap().contains("rehearse --to"));
        let records = crate::rehearse::records_dir(dir.path());
        std::fs::create_dir_all(&records).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let write = |name: &str, passed: bool, finished: u64, target: &str| {
            let r = crate::RehearsalRecord {
                target: target.into(),
                db_version: "4.18.0.0".into(),
                passed,
                finished,
                failed_at: None,
            };
            std::fs::write(records.join(name), serde_json::to_vec(&r).unwrap()).unwrap();
        };
        let target = config.target.to_string();
        write("a.json", false, now, &target);
        write("b.json", true, now - 8 * 86400, &target);
        write("c.json", true, now, "4.0.0.0");
        let f = verdict(&config);
        assert_eq!(f.severity, Severity::Fail);
        assert!(f.message.contains("older than 7days"), "{}", f.message);
        write("d.json", true, now - 3600, &target);
        let f = verdict(&config);
        assert_eq!(f.severity, Severity::Pass, "{}", f.message);
    }

    /// `docs/CHECKS.md` lists exactly the ids the gate knows, each once, in its first table.
    #[test]
    fn checks_doc_lists_every_check_id() {
        let doc = include_str!("../docs/CHECKS.md");
        let gate = doc
            .split("## Run by `preflight`")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/CHECKS.md has the `Run by preflight` section");
        let mut documented: Vec<String> = gate
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        let listed = documented.len();
        documented.sort();
        documented.dedup();
        assert_eq!(listed, documented.len(), "an id is listed twice");
        assert_eq!(documented, super::check_ids());
    }
}
