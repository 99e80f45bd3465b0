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
        Ok(decide(&ReposFacts {
            switched: repos_at(cx, &self.hop.line()).await?,
            servers: cx.service_nodes().len(),
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        switch_repos(cx, &self.hop.line()).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        switch_repos(cx, &cx.record.from.line()).await
    }
}

/// What the repos step's check found on a hop the run is not yet past.
#[derive(Debug, Clone, Copy)]
struct ReposFacts {
    /// Service nodes whose CloudStack repositories are all at the hop's line.
    switched: usize,
    /// Service nodes.
    servers: usize,
}

/// The repos step's state: `Done` when every server is switched, `Partial` when some are.
fn decide(f: &ReposFacts) -> StepState {
    count_state(f.switched, f.servers, "server(s) switched")
}

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::{ReposFacts, decide};

    #[track_caller]
    fn check(switched: usize, servers: usize, expected: StepState) {
        assert_eq!(decide(&ReposFacts { switched, servers }), expected);
    }

    #[test]
    fn every_server_switched_is_done() {
        check(2, 2, StepState::Done);
    }

    #[test]
    fn some_servers_switched_is_partial() {
        check(1, 2, StepState::Partial("1 of 2 server(s) switched".into()));
    }

    #[test]
    fn no_server_switched_is_pending() {
        check(0, 2, StepState::Pending);
    }
}
