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

use cs_core::{Check, Finding, Host, Report, Severity, error_chain, run_checks};
use futures::future::join_all;

use crate::config::{AgentRefresh, NodeConfig, UpgradeConfig};
use crate::inventory::{HOSTS_EXCLUDED, HOSTS_KNOWN, HostInventory, KvmHostTarget};
use crate::ms_checks::{MsContext, Phase, ms_checks};
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
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    ids.sort();
    ids.dedup();
    ids
}

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

    let management = join_all(
        config
            .management_servers
            .iter()
            .map(|n| management_server(config, n, phase, skip)),
    );
    let (management, database, hosts, api) = tokio::join!(
        management,
        database(config, phase, skip),
        kvm_hosts(config, phase, skip),
        api(config, phase, skip)
    );
    let mut report = Report::default();
    if phase == Phase::Pre && !skip.contains(&REHEARSAL_RECENT) {
        report.merge(rehearsal_recent(config));
    }
    for part in management.into_iter().chain([database, hosts, api]) {
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

async fn management_server(
    config: &UpgradeConfig,
    node: &NodeConfig,
    phase: Phase,
    skip: &[&str],
) -> Report {
    let handle: NodeHandle = match connect(config, node).await {
        Ok(h) => h,
        Err(e) => {
            return unreachable(NODE_REACHABLE, node.display_name(), error_chain(&e));
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
    let checks = ms_checks();
    let refs: Vec<&dyn Check<MsContext>> = checks.iter().map(AsRef::as_ref).collect();
    let repo = repo_check(config, node, phase);
    let repo_refs: [&dyn Check<dyn Host>; 1] = [repo.as_ref()];
    let (mut report, repo) = tokio::join!(
        run_checks(&refs, &cx, skip),
        run_checks(&repo_refs, handle.host.as_ref(), skip)
    );
    report.merge(repo);
    report
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
    for part in hosts {
        report.merge(part);
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
) -> Report {
    let node = host.node();
    let handle = match connect(config, &node).await {
        Ok(h) => h,
        Err(e) => {
            return unreachable(
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
            return unreachable("api.reachable", &config.api.endpoint, error_chain(&e));
        }
    }
    let refs: Vec<&dyn Check<cs_agent::Node>> = checks.iter().map(AsRef::as_ref).collect();
    let repo = repo_check(config, &node, phase);
    let repo_refs: [&dyn Check<dyn Host>; 1] = [repo.as_ref()];
    let (mut report, repo) = tokio::join!(
        run_checks(&refs, &agent, skip),
        run_checks(&repo_refs, handle.host.as_ref(), skip)
    );
    report.merge(repo);
    report
}

async fn database(config: &UpgradeConfig, phase: Phase, skip: &[&str]) -> Report {
    let url = match config.database_url() {
        Ok(u) => u,
        Err(e) => return unreachable("db.reachable", "database", error_chain(&e)),
    };
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
    cs_schema::run_db_checks(&cx, skip).await
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
