//! The `agents` step: every KVM host's agent refreshed to the target (and back on rollback),
//! through cs-agent's fleet refresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cs_core::{CsVersion, NoProgress, Step, StepError, StepState, error_chain};

use super::ms::remove_leftovers;
use super::{UpgradeContext, connect, count_state, step_err};
use crate::config::NodeConfig;

#[derive(Debug)]
pub(super) struct Agents;

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
        let mut reported = Vec::new();
        for (_, h) in cx.config.hosts() {
            let state = cs_core::HostStatus::hypervisor(&cx.client, h.display_name())
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

/// What the agents step's check heard from the API.
#[derive(Debug, Clone)]
struct AgentsFacts {
    /// The upgrade's target.
    target: CsVersion,
    /// The agent version each configured KVM host reports (`None`: unknown to CloudStack, or
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

    use super::{AgentsFacts, decide};

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

    #[test]
    fn no_agent_at_the_target_is_pending() {
        check(&[v("4.19.0.0"), None], StepState::Pending);
    }
}
