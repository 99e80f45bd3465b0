//! The `postflight` step: the cloud healthy at the target, with the inventory it had before.

use async_trait::async_trait;
use cs_core::{Step, StepError, StepState};

use super::{UpgradeContext, step_err};

#[derive(Debug)]
pub(super) struct PostFlight;

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
        let expect = cs_api::HealthExpectations {
            phase: cs_api::Phase::Post,
            version: Some(cx.record.target),
        };
        let healthy = match cs_api::HealthReport::collect(&cx.client).await {
            Ok(report) => report.problems(&expect).is_empty(),
            Err(_) => false,
        };
        let inventory_saved = healthy && cx.inventory_path().exists();
        // The inventory is only taken again (a round of API calls) when the rest holds.
        let unchanged = inventory_saved && Self::diff(cx).await?.is_clean();
        Ok(decide(&PostFlightFacts {
            healthy,
            inventory_saved,
            unchanged,
        }))
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

/// What the post-flight check found. A fact is only looked at when the ones before it hold;
/// it is `false` otherwise.
#[derive(Debug, Clone, Copy)]
struct PostFlightFacts {
    /// The health report could be taken and shows no problem at the target.
    healthy: bool,
    /// The inventory taken before the upgrade is saved.
    inventory_saved: bool,
    /// The inventory now is the one taken before.
    unchanged: bool,
}

/// The post-flight step's state: `Done` when the cloud is healthy at the target with the
/// inventory it had; `Pending` otherwise (it has nothing to be partial about).
fn decide(f: &PostFlightFacts) -> StepState {
    if f.healthy && f.inventory_saved && f.unchanged {
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
    fn check(healthy: bool, inventory_saved: bool, unchanged: bool, expected: StepState) {
        let facts = PostFlightFacts {
            healthy,
            inventory_saved,
            unchanged,
        };
        assert_eq!(decide(&facts), expected);
    }

    #[test]
    fn healthy_with_the_same_inventory_is_done() {
        check(true, true, true, StepState::Done);
    }

    #[test]
    fn anything_short_of_that_is_pending() {
        check(false, false, false, StepState::Pending);
        check(true, false, false, StepState::Pending);
        check(true, true, false, StepState::Pending);
    }
}
