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
        let report = match cs_api::HealthReport::collect(&cx.client).await {
            Ok(r) => r,
            Err(_) => return Ok(StepState::Pending),
        };
        let expect = cs_api::HealthExpectations {
            phase: cs_api::Phase::Post,
            version: Some(cx.record.target),
        };
        if !report.problems(&expect).is_empty() || !cx.inventory_path().exists() {
            return Ok(StepState::Pending);
        }
        Ok(if Self::diff(cx).await?.is_clean() {
            StepState::Done
        } else {
            StepState::Pending
        })
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
