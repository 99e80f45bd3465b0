//! The `repos@<hop>` step: every service node's CloudStack repositories at the hop's line.

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};

use super::ms::{repos_at, switch_repos};
use super::{UpgradeContext, count_state};

#[derive(Debug)]
pub(super) struct Repos {
    pub(super) hop: CsVersion,
    pub(super) id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Repos {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if cx.passed(&self.hop).await? {
            return Ok(StepState::Done);
        }
        let at = repos_at(cx, &self.hop.line()).await?;
        Ok(count_state(
            at,
            cx.service_nodes().len(),
            "server(s) switched",
        ))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        switch_repos(cx, &self.hop.line()).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        switch_repos(cx, &cx.record.from.line()).await
    }
}
