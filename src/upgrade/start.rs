//! The `start@<hop>` step: the other management servers Up at the hop, and the usage servers
//! running.

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};

use super::ms::{is_up_at, mshosts_up, start_all, stop_all, unit_active, unit_state};
use super::{MANAGEMENT_UNIT, USAGE_UNIT, UpgradeContext};

#[derive(Debug)]
pub(super) struct StartOthers {
    pub(super) hop: CsVersion,
    pub(super) id: String,
}

#[async_trait]
impl Step<UpgradeContext> for StartOthers {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if cx.passed(&self.hop).await? {
            return Ok(StepState::Done);
        }
        let rows = mshosts_up(cx).await?;
        let up = cx
            .management
            .iter()
            .filter(|m| is_up_at(&rows, &m.name, &self.hop))
            .count();
        let mut usage = 0;
        for u in &cx.usage {
            if unit_active(u, USAGE_UNIT).await? {
                usage += 1;
            }
        }
        // With the first server Up at the hop, a later one started (running or failed) is this
        // step's doing.
        let mut started = 0;
        for m in cx.management.iter().skip(1) {
            if unit_state(m, MANAGEMENT_UNIT).await? != "inactive" {
                started += 1;
            }
        }
        Ok(if up == cx.management.len() && usage == cx.usage.len() {
            StepState::Done
        } else if up > 1 || (up > 0 && (started > 0 || usage > 0)) {
            // The first server comes Up with the migration; a usage server running before
            // that is the old version's.
            StepState::Partial(format!("{up} management server(s) Up"))
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        start_all(cx, &self.hop).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await
    }
}
