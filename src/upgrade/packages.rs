//! The `packages@<hop>` step: the management packages at exactly the hop's version on every
//! service node.

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};

use super::ms::{install_all, installed_version, stop_all, switch_repos};
use super::{UpgradeContext, count_state};

#[derive(Debug)]
pub(super) struct Packages {
    pub(super) hop: CsVersion,
    pub(super) id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Packages {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if cx.passed(&self.hop).await? {
            return Ok(StepState::Done);
        }
        let nodes = cx.service_nodes();
        let mut at = 0;
        for n in &nodes {
            if installed_version(n).await? == Some(self.hop) {
                at += 1;
            }
        }
        Ok(count_state(at, nodes.len(), "server(s) upgraded"))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        install_all(cx, &self.hop).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        switch_repos(cx, &cx.record.from.line()).await?;
        install_all(cx, &cx.record.from).await
    }
}
