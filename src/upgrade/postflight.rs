//! The `postflight` step: the cloud healthy at the target, and the VM → host proof with causes
//! (see `cs_api::attribute`): every VM still on the host it ran on before the upgrade, or a
//! change something other than the upgrade explains (tenants, HA, the chosen maintenance
//! policy), each with the event that explains it. The health report, the proof and its
//! findings are written to `postflight.json` in the run directory; the step is done once that
//! evidence says verified, and fails (after the point of no return: stops the run, restores
//! nothing) on any change nothing explains.

use async_trait::async_trait;
use cs_core::{Finding, Step, StepError, StepState};
use serde::{Deserialize, Serialize};

use super::{UpgradeContext, step_err, write_json};
use crate::config::AgentRefresh;

#[derive(Debug)]
pub(super) struct PostFlight;

/// What post-flight proved, as written to `postflight.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostFlightEvidence {
    /// The target.
    pub target: String,
    /// When the proof was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// Whether nothing is unexplained.
    pub verified: bool,
    /// One line: `verified, 312 VMs on their hosts, 4 changes explained`.
    pub summary: String,
    /// The health report at the target.
    pub health: cs_api::HealthReport,
    /// The proof.
    pub proof: cs_api::Proof,
    /// Its findings.
    pub findings: Vec<Finding>,
}

impl PostFlight {
    async fn prove(cx: &UpgradeContext) -> Result<PostFlightEvidence, StepError> {
        let expect = cs_api::HealthExpectations {
            phase: cs_api::Phase::Post,
            version: Some(cx.record.target),
        };
        let health = cs_api::wait_healthy(
            &cx.client,
            &expect,
            cx.config.policy.host_up_deadline,
            cx.progress.as_ref(),
        )
        .await
        .map_err(|e| step_err("post-flight health", e))?;
        let before = cs_api::Inventory::load(&cx.inventory_path())
            .map_err(|e| step_err("load the inventory taken before", e))?;
        let now = cs_api::Inventory::snapshot(&cx.client)
            .await
            .map_err(|e| step_err("take the inventory", e))?;
        // What happened since the run began, from CloudStack's own events.
        let events = cx
            .client
            .list_events(&[("startdate", &cx.record.started_at), ("listall", "true")])
            .await
            .map_err(|e| step_err("read the events since the run began", e))?;
        let refreshed: Vec<String> = cx.record.hosts.iter().map(|h| h.name.clone()).collect();
        let actions = cs_api::UpgradeActions {
            refreshed_hosts: &refreshed,
            maintenance: cx.config.policy.agent_refresh == AgentRefresh::Maintenance,
        };
        let running = before.vms.iter().filter(|v| v.state == "Running").count();
        let proof = cs_api::attribute(&cs_api::diff(&before, &now), &events, &actions, running);
        let verified = proof.is_verified();
        let summary = if verified {
            format!(
                "verified, {} VM(s) on their hosts, {} change(s) explained",
                proof.unchanged,
                proof.explained.len()
            )
        } else {
            format!(
                "{} change(s) nothing explains, {} VM(s) on their hosts",
                proof.unexplained.len(),
                proof.unchanged
            )
        };
        Ok(PostFlightEvidence {
            target: cx.record.target.to_string(),
            taken_at: super::utc_now(),
            verified,
            summary,
            findings: proof.findings(),
            health,
            proof,
        })
    }
}

/// The evidence of a run's post-flight, when it was written.
pub fn evidence(run_dir: &std::path::Path) -> Option<PostFlightEvidence> {
    std::fs::read(run_dir.join(EVIDENCE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The evidence file in the run directory.
pub(super) const EVIDENCE: &str = "postflight.json";

#[async_trait]
impl Step<UpgradeContext> for PostFlight {
    fn id(&self) -> &str {
        "postflight"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        Ok(decide(&PostFlightFacts {
            verified: evidence(&cx.run_dir).is_some_and(|e| e.verified),
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let evidence = Self::prove(cx).await?;
        write_json(&cx.run_dir.join(EVIDENCE), &evidence).map_err(StepError::new)?;
        tracing::info!(summary = %evidence.summary, "post-flight");
        if evidence.verified {
            return Ok(());
        }
        let lines: Vec<String> = evidence
            .proof
            .unexplained
            .iter()
            .map(|a| format!("{} {}", a.name, a.change))
            .collect();
        Err(StepError::new(format!(
            "post-flight: {}: {} (evidence in {})",
            evidence.summary,
            lines.join("; "),
            cx.run_dir.join(EVIDENCE).display()
        )))
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        // The evidence belongs to the run that is undone.
        match std::fs::remove_file(cx.run_dir.join(EVIDENCE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(step_err("remove the post-flight evidence", e))
            }
            _ => Ok(()),
        }
    }
}

/// What the post-flight check found.
#[derive(Debug, Clone, Copy)]
struct PostFlightFacts {
    /// This run's evidence is written and says verified.
    verified: bool,
}

/// The post-flight step's state: `Done` once its evidence says verified. It is never taken
/// for done otherwise: the proof is what the step is for, and it is shown as applied, with its
/// evidence, not skipped.
fn decide(f: &PostFlightFacts) -> StepState {
    if f.verified {
        StepState::Done
    } else {
        StepState::Pending
    }
}

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::{PostFlightFacts, decide};

    #[track_caller]
    fn check(verified: bool, expected: StepState) {
        assert_eq!(decide(&PostFlightFacts { verified }), expected);
    }

    #[test]
    fn verified_evidence_is_done() {
        check(true, StepState::Done);
    }

    #[test]
    fn anything_short_of_that_is_pending() {
        check(false, StepState::Pending);
    }
}
