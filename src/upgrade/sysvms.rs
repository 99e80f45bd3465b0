//! The `sysvms` step: secondary storage VMs, console proxies and virtual routers brought onto the
//! target's code once the management servers run it. CloudStack does not do this by itself:
//! they keep the template they booted (`listRouters` says `requiresupgrade`) and their agent
//! keeps its version until they are patched, restarted or recreated.
//!
//! * `patch` (the default, 4.17 and later): `patchSystemVm` for SSVMs and CPVMs and
//!   `restartNetwork livepatch=true` for the networks of routers that need it: scripts and agent
//!   refreshed in place, no restart, tenants keep their network.
//! * `restart` (policy, and the only way before 4.17): as `cloudstack-sysvmadm` does it, SSVMs and
//!   CPVMs stopped and started (their root disk is rebuilt from the new template), routers
//!   rebooted onto it with `upgradeRouterTemplate`, the BACKUP of a redundant pair before its
//!   PRIMARY.
//!
//! It runs after the agents: on KVM a system VM started anew runs the agent code of its host's
//! `systemvm.iso` (apache/cloudstack#8406), so restarting it before its host's agent is upgraded
//! brings back the old version. At most `policy.parallelism` at once, zone by zone; each is
//! waited for until Running at the target; failures are reported per VM, and a resumed run only
//! does what is left.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState, error_chain};
use futures::stream::{self, StreamExt};

use super::{UpgradeContext, count_state, step_err};
use crate::config::SystemVmRefresh;

#[derive(Debug)]
pub(super) struct SystemVms;

/// One system VM or router as the step sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Appliance {
    id: String,
    name: String,
    zone: String,
    /// Running, and on the target's code (a system VM's agent at the target; a router not
    /// reporting `requiresupgrade`).
    current: bool,
    /// A router's guest network, and its redundant state.
    network: Option<String>,
    redundant_state: Option<String>,
    router: bool,
}

/// What the step's check found.
#[derive(Debug, Clone)]
struct SystemVmFacts {
    /// Each system VM and router: whether it is Running on the target's code.
    current: Vec<bool>,
}

/// `Done` when every system VM and router is Running on the target's code.
fn decide(f: &SystemVmFacts) -> StepState {
    let at = f.current.iter().filter(|c| **c).count();
    count_state(
        at,
        f.current.len(),
        "system VM(s) and router(s) on the target's code",
    )
}

/// Whether the target has live patching (`patchSystemVm`, `restartNetwork livepatch`: 4.17.0).
fn can_patch(target: &CsVersion) -> bool {
    *target >= CsVersion::new3(4, 17, 0)
}

fn version_is(reported: Option<&str>, target: &CsVersion) -> bool {
    reported
        .and_then(|v| CsVersion::parse(v).ok())
        .is_some_and(|v| v == *target)
}

/// Whether a router's reported version is the system VM release of `target`
/// (`major.minor.patch`, as the system VM template of a release is numbered).
fn router_at(reported: Option<&str>, target: &CsVersion) -> bool {
    let [a, b, c, _] = target.padded();
    reported
        .and_then(|v| CsVersion::parse(v).ok())
        .is_some_and(|v| {
            let [x, y, z, _] = v.padded();
            (x, y, z) == (a, b, c)
        })
}

async fn appliances(cx: &UpgradeContext, target: CsVersion) -> Result<Vec<Appliance>, StepError> {
    let (sysvms, routers) = tokio::try_join!(
        cx.client.list_system_vms(&[]),
        cx.client.list_routers(&[("listall", "true")]),
    )
    .map_err(|e| step_err("list the system VMs and routers", e))?;
    let mut out: Vec<Appliance> = sysvms
        .into_iter()
        .map(|v| Appliance {
            current: v.state.as_deref() == Some("Running")
                && v.agentstate.as_deref().is_none_or(|a| a == "Up")
                && version_is(v.version.as_deref(), &target),
            name: v.name.clone().unwrap_or_else(|| v.id.clone()),
            zone: v.zonename.clone().unwrap_or_default(),
            id: v.id,
            network: None,
            redundant_state: None,
            router: false,
        })
        .collect();
    out.extend(routers.into_iter().map(|r| Appliance {
        current: r.state.as_deref() == Some("Running")
            && r.requiresupgrade != Some(true)
            && router_at(r.version.as_deref(), &target),
        name: r.name.clone().unwrap_or_else(|| r.id.clone()),
        zone: r.zonename.clone().unwrap_or_default(),
        id: r.id,
        network: r.guestnetworkid,
        redundant_state: r.redundantstate,
        router: true,
    }));
    out.sort_by(|a, b| (&a.zone, a.router, &a.name).cmp(&(&b.zone, b.router, &b.name)));
    Ok(out)
}

/// One unit of work: a system VM, a network's routers (patched or rebooted together, BACKUP
/// first), or a lone router.
#[derive(Debug, Clone)]
enum Work {
    SystemVm(Appliance),
    Routers(Vec<Appliance>),
}

impl Work {
    fn name(&self) -> String {
        match self {
            Work::SystemVm(a) => a.name.clone(),
            Work::Routers(rs) => rs
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join("+"),
        }
    }
}

/// Groups what is not current into work: system VMs one by one, routers by network with the
/// BACKUP of a redundant pair first.
fn plan_work(all: &[Appliance]) -> Vec<Work> {
    let mut out = Vec::new();
    let mut seen_networks: Vec<&str> = Vec::new();
    for a in all.iter().filter(|a| !a.current) {
        if !a.router {
            out.push(Work::SystemVm(a.clone()));
            continue;
        }
        match a.network.as_deref() {
            Some(n) if seen_networks.contains(&n) => {}
            Some(n) => {
                seen_networks.push(n);
                let mut pair: Vec<Appliance> = all
                    .iter()
                    .filter(|r| r.router && r.network.as_deref() == Some(n) && !r.current)
                    .cloned()
                    .collect();
                pair.sort_by_key(|r| r.redundant_state.as_deref() == Some("PRIMARY"));
                out.push(Work::Routers(pair));
            }
            None => out.push(Work::Routers(vec![a.clone()])),
        }
    }
    out
}

/// Brings every system VM and router onto the code of `version` (the target going forward;
/// the old version when a rollback has started the old management servers again), as the
/// policy says (see the module docs).
pub(super) async fn refresh_to(cx: &UpgradeContext, version: CsVersion) -> Result<(), StepError> {
    let patch = cx.config.policy.system_vms == SystemVmRefresh::Patch && can_patch(&version);
    let work = plan_work(&appliances(cx, version).await?);
    let total = work.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<(String, Result<(), String>)> = stream::iter(work)
        .map(|w| {
            let done = &done;
            async move {
                let r = SystemVms::refresh(cx, version, &w, patch).await;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                cx.progress.update(
                    cs_core::ProgressUpdate::new(
                        "refresh system VMs and routers",
                        n,
                        Some(total),
                        cs_core::Unit::Hosts,
                    )
                    .message(format!(
                        "{}: {}",
                        w.name(),
                        if r.is_ok() { "done" } else { "failed" }
                    )),
                );
                (w.name(), r)
            }
        })
        .buffer_unordered(cx.config.policy.parallelism.max(1))
        .collect()
        .await;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(StepError::new(format!(
            "{} system VM(s)/router(s) not on {version}'s code ({}):\n{}",
            failed.len(),
            if patch { "live patch" } else { "restart" },
            failed.join("\n")
        )))
    }
}

impl SystemVms {
    async fn wait_current(
        cx: &UpgradeContext,
        version: CsVersion,
        names: &[String],
    ) -> Result<(), String> {
        let deadline = cx.config.policy.host_up_deadline;
        let start = Instant::now();
        loop {
            let all = appliances(cx, version).await.map_err(|e| error_chain(&e))?;
            let pending: Vec<&Appliance> = all
                .iter()
                .filter(|a| names.contains(&a.name) && !a.current)
                .collect();
            // A destroyed and recreated VM comes back under a new name: names no longer listed
            // are not waited for.
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                return Err(format!(
                    "not Running on the target's code after {deadline:?}: {}",
                    pending
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn job(
        cx: &UpgradeContext,
        command: &str,
        params: &[(&str, &str)],
    ) -> Result<(), String> {
        cx.client
            .call_async(command, params)
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }

    async fn refresh(
        cx: &UpgradeContext,
        version: CsVersion,
        work: &Work,
        patch: bool,
    ) -> Result<(), String> {
        match (work, patch) {
            (Work::SystemVm(v), true) => {
                Self::job(cx, "patchSystemVm", &[("id", &v.id)]).await?;
            }
            (Work::SystemVm(v), false) => {
                Self::job(cx, "stopSystemVm", &[("id", &v.id)]).await?;
                Self::job(cx, "startSystemVm", &[("id", &v.id)]).await?;
            }
            (Work::Routers(rs), true) => match rs[0].network.as_deref() {
                Some(network) => {
                    Self::job(
                        cx,
                        "restartNetwork",
                        &[("id", network), ("cleanup", "false"), ("livepatch", "true")],
                    )
                    .await?;
                }
                None => {
                    return Err("a router without a guest network cannot be live-patched".into());
                }
            },
            (Work::Routers(rs), false) => {
                // One side of a redundant pair at a time, BACKUP first.
                for r in rs {
                    let reply = cx
                        .client
                        .call("upgradeRouterTemplate", &[("id", &r.id)])
                        .await
                        .map_err(|e| error_chain(&e))?;
                    let jobs: Vec<String> = reply["asyncjobs"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|j| j["jobid"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    for j in jobs {
                        cx.client
                            .wait_job(&j, "rebootRouter", cx.config.policy.host_up_deadline)
                            .await
                            .map_err(|e| error_chain(&e))?;
                    }
                    Self::wait_current(cx, version, std::slice::from_ref(&r.name)).await?;
                }
            }
        }
        let names: Vec<String> = match work {
            Work::SystemVm(v) => vec![v.name.clone()],
            Work::Routers(rs) => rs.iter().map(|r| r.name.clone()).collect(),
        };
        Self::wait_current(cx, version, &names).await
    }
}

#[async_trait]
impl Step<UpgradeContext> for SystemVms {
    fn id(&self) -> &str {
        "sysvms"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let all = appliances(cx, cx.record.target).await?;
        Ok(decide(&SystemVmFacts {
            current: all.iter().map(|a| a.current).collect(),
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        refresh_to(cx, cx.record.target).await
    }

    async fn rollback(&self, _cx: &UpgradeContext) -> Result<(), StepError> {
        // Nothing to do yet: the management servers still run the target. Once the rollback
        // has started the old ones (`quiesce`), it brings these back onto the old code.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::*;

    fn a(name: &str, current: bool, router: Option<(&str, Option<&str>)>) -> Appliance {
        Appliance {
            id: format!("id-{name}"),
            name: name.into(),
            zone: "z1".into(),
            current,
            network: router.map(|(n, _)| n.to_string()),
            redundant_state: router.and_then(|(_, s)| s.map(str::to_string)),
            router: router.is_some(),
        }
    }

    #[track_caller]
    fn check(current: &[bool], expected: StepState) {
        assert_eq!(
            decide(&SystemVmFacts {
                current: current.to_vec()
            }),
            expected
        );
    }

    #[test]
    fn every_appliance_current_is_done_some_is_partial() {
        check(&[true, true], StepState::Done);
        check(&[], StepState::Done);
        check(
            &[true, false, false],
            StepState::Partial("1 of 3 system VM(s) and router(s) on the target's code".into()),
        );
        check(&[false], StepState::Pending);
    }

    #[test]
    fn work_takes_what_is_left_and_pairs_routers_backup_first() {
        let all = [
            a("s-1-VM", true, None),
            a("v-2-VM", false, None),
            a("r-3-VM", false, Some(("net1", Some("PRIMARY")))),
            a("r-4-VM", false, Some(("net1", Some("BACKUP")))),
            a("r-5-VM", true, Some(("net2", None))),
            a("r-6-VM", false, None),
        ];
        let names: Vec<String> = plan_work(&all).iter().map(Work::name).collect();
        assert_eq!(names, ["v-2-VM", "r-4-VM+r-3-VM", "r-6-VM"]);
    }

    #[test]
    fn routers_are_at_a_release_when_they_report_its_system_vm_version() {
        let v: CsVersion = "4.19.1.0".parse().unwrap();
        assert!(router_at(Some("4.19.1"), &v));
        assert!(!router_at(Some("4.19.0"), &v));
        assert!(!router_at(Some("UNKNOWN"), &v));
        assert!(!router_at(None, &v));
    }

    #[test]
    fn live_patching_exists_from_4_17() {
        assert!(!can_patch(&"4.16.1.0".parse().unwrap()));
        assert!(can_patch(&"4.17.0.0".parse().unwrap()));
        assert!(can_patch(&"24.0.0".parse().unwrap()));
    }
}
