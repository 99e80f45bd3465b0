//! The `agents` step: every KVM host's agent refreshed to the target (and back on rollback),
//! through cs-agent's fleet refresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cs_core::{CsVersion, NoProgress, Step, StepError, StepState, error_chain};

use super::ms::remove_leftovers;
use super::{UpgradeContext, connect, count_state, step_err};
use crate::config::AgentRefresh;
use crate::inventory::KvmHostTarget;

#[derive(Debug)]
pub(super) struct Agents;

impl Agents {
    fn targets(cx: &UpgradeContext) -> Vec<cs_agent::fleet::Target> {
        cx.record
            .hosts
            .iter()
            .map(|h| cs_agent::fleet::Target {
                user: h.user.clone().unwrap_or_else(|| cx.config.ssh.user.clone()),
                host: h.address.clone(),
                port: h.port,
                cluster: Some(h.cluster.clone()),
                root: h.root.as_ref().map(|r| r.to_string_lossy().into_owned()),
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
        let targets = Self::targets(cx);
        let by_label: BTreeMap<String, KvmHostTarget> = targets
            .iter()
            .zip(&cx.record.hosts)
            .map(|(t, h)| (t.label(), h.clone()))
            .collect();
        // The default refresh leaves the guests where they run: a KVM agent restart does not
        // touch them (libvirt keeps them; the agent re-attaches). Maintenance evacuates the
        // host first, by policy only.
        let maintenance = cx.config.policy.agent_refresh == AgentRefresh::Maintenance;
        // Under maintenance one host of a cluster at a time: CloudStack refuses a second one
        // while another of its cluster prepares ("There are other servers attempting
        // migrations for maintenance", ResourceManagerImpl.maintain). Clusters still move
        // side by side.
        let policy = &cx.config.policy;
        let batch = if maintenance {
            cs_agent::fleet::BatchSize::Count(1)
        } else {
            policy.batch_size
        };
        let options = cs_agent::fleet::FleetOptions::default()
            .batch(batch)
            .parallel(policy.parallelism)
            .max_fail_pct(
                (policy.max_fail_percent > 0).then_some(f64::from(policy.max_fail_percent)),
            )
            .cluster_max_fail_pct(policy.cluster_max_fail_percent.map(f64::from))
            .canary(policy.canary)
            .journal(Some(cx.run_dir.join(format!("agents-{tag}.jsonl"))));
        // One listing of all hypervisors per interval answers every host waiting to be Up
        // (instead of a `listHosts` per waiting host): fast while hosts are expected back,
        // slow for those late beyond three minutes.
        let status: Arc<dyn cs_core::HostStatus> = cs_agent::HostPoller::new(
            Arc::new(cx.client.clone()),
            Duration::from_millis(500),
            Duration::from_secs(10),
            Duration::from_secs(180),
        );
        let report = cs_agent::fleet::run_fleet(&targets, &options, cx.progress.as_ref(), |t| {
            let entry = by_label.get(&t.label()).cloned();
            let status = status.clone();
            async move {
                let Some(host) = entry else {
                    return Err(format!("{}: not in the run's host list", t.label()));
                };
                let node_cfg = host.node();
                let handle = connect(&cx.config, &node_cfg)
                    .await
                    .map_err(|e| error_chain(&e))?;
                let node = cs_agent::Node::new(handle.host.clone())
                    .rerooted(handle.root.clone())
                    .in_cluster(host.cluster.clone())
                    .with_key(host.name.clone());
                let repo: Arc<dyn cs_core::RepoSwitch> = Arc::new(cs_repo::RepoSwitcher {
                    layout: node_cfg.layout(),
                    rules: cx.config.repo_rules(),
                });
                let mut options = cs_agent::RefreshOptions::new(to);
                options.up_deadline = cx.config.policy.host_up_deadline;
                options.poll = Duration::from_millis(200);
                let deps = cs_agent::Deps {
                    status,
                    maintenance: maintenance
                        .then(|| Arc::new(cx.client.clone()) as Arc<dyn cs_core::HostMaintenance>),
                    repo: Some(repo),
                };
                let rcx = cs_agent::RefreshContext::new(node, options, deps);
                let journal = cx.run_dir.join(format!("agent-{tag}-{}.jsonl", host.name));
                cs_agent::refresh_host(&rcx, &journal, maintenance, &NoProgress)
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

/// A hypervisor's load as the maintenance capacity check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostLoad {
    pub(crate) name: String,
    pub(crate) cluster: String,
    /// Up and Enabled: a host VMs can migrate to.
    pub(crate) up_enabled: bool,
    /// Memory, MiB.
    pub(crate) total_mb: i64,
    /// Memory allocated to its VMs, MiB.
    pub(crate) allocated_mb: i64,
    /// Its running VMs whose root disk is on local storage (they cannot live-migrate).
    pub(crate) local_vms: Vec<String>,
}

/// What keeps maintenance from evacuating each host, before any host is touched: VMs on
/// local storage (CloudStack refuses maintenance while they run,
/// `host.maintenance.local.storage.strategy` Error), and a host whose allocated memory the rest
/// of its cluster (its Up and Enabled hosts, over-provisioning factor 1) cannot take. The check
/// is by memory sums, not a bin packing: a cluster it lets through can still leave a VM without
/// a place, which CloudStack then reports as ErrorInMaintenance.
pub(crate) fn maintenance_blockers(hosts: &[HostLoad]) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        if !h.local_vms.is_empty() {
            out.push(format!(
                "{} ({}): VM(s) on local storage cannot be migrated: {}",
                h.name,
                h.cluster,
                h.local_vms.join(", ")
            ));
        }
        let free: i64 = hosts
            .iter()
            .filter(|o| o.name != h.name && o.cluster == h.cluster && o.up_enabled)
            .map(|o| (o.total_mb - o.allocated_mb).max(0))
            .sum();
        if h.allocated_mb > free {
            out.push(format!(
                "{} ({}): its VMs hold {} MiB, the rest of the cluster has {} MiB free",
                h.name, h.cluster, h.allocated_mb, free
            ));
        }
    }
    out
}

/// The hosts' loads from the API: `listHosts`, and the running VMs with a root disk on local
/// storage (`listVolumes`, `listVirtualMachines`).
pub(crate) async fn host_loads(client: &cs_api::Client) -> Result<Vec<HostLoad>, cs_api::Error> {
    let (hosts, vms, volumes) = tokio::try_join!(
        client.list_hosts(&[("type", "Routing")]),
        client.list_virtual_machines(&[("listall", "true")]),
        client.list_volumes(&[("type", "ROOT"), ("listall", "true")]),
    )?;
    let local: Vec<&str> = volumes
        .iter()
        .filter(|v| v.storagetype.as_deref() == Some("local"))
        .filter_map(|v| v.virtualmachineid.as_deref())
        .collect();
    Ok(hosts
        .iter()
        .map(|h| HostLoad {
            name: h.name.clone().unwrap_or_else(|| h.id.clone()),
            cluster: h.clustername.clone().unwrap_or_default(),
            up_enabled: h.state.as_deref() == Some("Up")
                && h.resourcestate.as_deref() == Some("Enabled"),
            total_mb: h.memorytotal.unwrap_or(0) / (1024 * 1024),
            allocated_mb: h.memoryallocated.unwrap_or(0) / (1024 * 1024),
            local_vms: vms
                .iter()
                .filter(|v| {
                    v.hostid.as_deref() == Some(h.id.as_str())
                        && v.state.as_deref() == Some("Running")
                        && local.contains(&v.id.as_str())
                })
                .map(|v| v.name.clone().unwrap_or_else(|| v.id.clone()))
                .collect(),
        })
        .collect())
}

#[async_trait]
impl Step<UpgradeContext> for Agents {
    fn id(&self) -> &str {
        "agents"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let mut reported = Vec::new();
        for h in &cx.record.hosts {
            let state = cs_core::HostStatus::hypervisor(&cx.client, &h.name)
                .await
                .map_err(|e| StepError::with_source("ask the API for a host", e))?;
            reported.push(state.and_then(|s| s.version));
        }
        Ok(decide(&AgentsFacts {
            target: cx.record.target,
            reported,
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        if cx.config.policy.agent_refresh == AgentRefresh::Maintenance {
            let loads = host_loads(&cx.client)
                .await
                .map_err(|e| step_err("read the hosts' capacity", e))?;
            let blockers = maintenance_blockers(&loads);
            if !blockers.is_empty() {
                return Err(StepError::new(format!(
                    "maintenance cannot evacuate every host: {}",
                    blockers.join("; ")
                )));
            }
        }
        Self::clear_journals(cx, "rollback")?;
        Self::refresh_all(cx, cx.record.target, "upgrade").await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        Self::clear_journals(cx, "upgrade")?;
        Self::refresh_all(cx, cx.record.from, "rollback").await?;
        // The refresh pointed the repositories back; the bundle also takes away the backup
        // copies both rewrites left.
        for h in &cx.record.hosts {
            let path = cx.host_bundle_path(&h.name);
            if !path.exists() {
                continue;
            }
            let n = connect(&cx.config, &h.node())
                .await
                .map_err(|e| step_err(&format!("{}: connect", h.name), e))?;
            let roots = super::backup::repo_roots(&n);
            let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
            let bundle = cs_backup::ConfigBundle::load(&path)
                .map_err(|e| step_err(&format!("{}: load the repository bundle", n.name), e))?;
            cs_backup::restore_config(n.host.as_ref(), &bundle, &roots)
                .await
                .map_err(|e| step_err(&format!("{}: restore the repositories", n.name), e))?;
            remove_leftovers(&n, &bundle).await?;
        }
        Ok(())
    }
}

/// What the agents step's check heard from the API.
#[derive(Debug, Clone)]
struct AgentsFacts {
    /// The upgrade's target.
    target: CsVersion,
    /// The agent version each KVM host of the run reports (`None`: unknown to CloudStack, or
    /// no version reported).
    reported: Vec<Option<CsVersion>>,
}

/// The agents step's state: `Done` when every host's agent is at the target, `Partial` when
/// some are.
fn decide(f: &AgentsFacts) -> StepState {
    let at = f.reported.iter().filter(|v| **v == Some(f.target)).count();
    count_state(at, f.reported.len(), &format!("agent(s) at {}", f.target))
}

#[cfg(test)]
mod tests {
    use cs_core::{CsVersion, StepState};

    use super::{AgentsFacts, HostLoad, decide, maintenance_blockers};

    fn v(s: &str) -> Option<CsVersion> {
        Some(CsVersion::parse(s).expect("test versions parse"))
    }

    #[track_caller]
    fn check(reported: &[Option<CsVersion>], expected: StepState) {
        let facts = AgentsFacts {
            target: CsVersion::parse("4.20.0.0").expect("test versions parse"),
            reported: reported.to_vec(),
        };
        assert_eq!(decide(&facts), expected);
    }

    #[test]
    fn every_agent_at_the_target_is_done() {
        check(&[v("4.20.0.0"), v("4.20.0.0")], StepState::Done);
        check(&[], StepState::Done);
    }

    #[test]
    fn some_agents_at_the_target_is_partial() {
        let expected = StepState::Partial("1 of 3 agent(s) at 4.20.0.0".into());
        check(&[v("4.20.0.0"), v("4.19.0.0"), None], expected);
    }

    fn load(name: &str, cluster: &str, total: i64, allocated: i64) -> HostLoad {
        HostLoad {
            name: name.into(),
            cluster: cluster.into(),
            up_enabled: true,
            total_mb: total,
            allocated_mb: allocated,
            local_vms: Vec::new(),
        }
    }

    #[test]
    fn a_cluster_with_room_for_each_host_has_no_blocker() {
        let hosts = [
            load("kvm1", "c1", 4096, 2048),
            load("kvm2", "c1", 4096, 2048),
        ];
        assert!(maintenance_blockers(&hosts).is_empty());
    }

    #[test]
    fn a_host_the_rest_cannot_take_blocks_and_says_why() {
        let mut hosts = vec![
            load("kvm1", "c1", 4096, 3072),
            load("kvm2", "c1", 4096, 2048),
            load("kvm3", "c2", 4096, 1024),
        ];
        assert_eq!(
            maintenance_blockers(&hosts),
            [
                "kvm1 (c1): its VMs hold 3072 MiB, the rest of the cluster has 2048 MiB free",
                "kvm2 (c1): its VMs hold 2048 MiB, the rest of the cluster has 1024 MiB free",
                "kvm3 (c2): its VMs hold 1024 MiB, the rest of the cluster has 0 MiB free",
            ]
        );
        // A disabled host takes nothing.
        hosts[0].allocated_mb = 1024;
        hosts[1].up_enabled = false;
        assert_eq!(maintenance_blockers(&hosts).len(), 2);
    }

    #[test]
    fn vms_on_local_storage_block_their_host() {
        let mut hosts = vec![load("kvm1", "c1", 4096, 512), load("kvm2", "c1", 4096, 512)];
        hosts[1].local_vms = vec!["db-01".into()];
        assert_eq!(
            maintenance_blockers(&hosts),
            ["kvm2 (c1): VM(s) on local storage cannot be migrated: db-01"]
        );
    }

    #[test]
    fn no_agent_at_the_target_is_pending() {
        check(&[v("4.19.0.0"), None], StepState::Pending);
    }
}
