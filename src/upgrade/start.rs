//! The `start@<hop>` step: the other management servers Up at the hop, and the usage servers
//! running.

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};

use super::ms::{
    installed_units, is_up_at, mshosts_up, start_all, stop_all, unit_active, unit_state,
};
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
        let (mut usage, mut usage_active) = (0, 0);
        for u in &cx.usage {
            if !installed_units(u).await?.contains(&USAGE_UNIT) {
                continue;
            }
            usage += 1;
            if unit_active(u, USAGE_UNIT).await? {
                usage_active += 1;
            }
        }
        let mut others_started = 0;
        for m in cx.management.iter().skip(1) {
            if unit_state(m, MANAGEMENT_UNIT).await? != "inactive" {
                others_started += 1;
            }
        }
        Ok(decide(&StartFacts {
            management: cx.management.len(),
            up,
            usage,
            usage_active,
            others_started,
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        start_all(cx, &self.hop).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await
    }
}

/// What the start step's check found on a hop the run is not yet past.
#[derive(Debug, Clone, Copy)]
struct StartFacts {
    /// Management servers configured.
    management: usize,
    /// Management servers Up at the hop.
    up: usize,
    /// Usage servers configured where the usage server is installed.
    usage: usize,
    /// Usage servers whose unit is active.
    usage_active: usize,
    /// Management servers after the first whose unit is not `inactive` (running or failed).
    others_started: usize,
}

/// The start step's state: `Done` with every server Up at the hop and every usage server
/// running; `Partial` once the step has visibly begun; `Pending` otherwise.
fn decide(f: &StartFacts) -> StepState {
    if f.up == f.management && f.usage_active == f.usage {
        StepState::Done
    } else if f.up > 1 || (f.up > 0 && (f.others_started > 0 || f.usage_active > 0)) {
        // The first server comes Up with the migration; a usage server running before that
        // is the old version's. With the first server Up at the hop, a later one started
        // (running or failed) is this step's doing.
        StepState::Partial(format!("{} management server(s) Up", f.up))
    } else {
        StepState::Pending
    }
}

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::{StartFacts, decide};

    /// Three management servers and one usage server, all running at the hop.
    const ALL: StartFacts = StartFacts {
        management: 3,
        up: 3,
        usage: 1,
        usage_active: 1,
        others_started: 2,
    };

    /// Only the first server Up, as the migration leaves it.
    const FIRST_ONLY: StartFacts = StartFacts {
        management: 3,
        up: 1,
        usage: 1,
        usage_active: 0,
        others_started: 0,
    };

    #[track_caller]
    fn check(facts: StartFacts, expected: StepState) {
        assert_eq!(decide(&facts), expected);
    }

    fn up(n: usize) -> StepState {
        StepState::Partial(format!("{n} management server(s) Up"))
    }

    #[test]
    fn every_server_up_and_usage_running_is_done() {
        check(ALL, StepState::Done);
        check(
            StartFacts {
                management: 1,
                up: 1,
                usage: 0,
                usage_active: 0,
                others_started: 0,
            },
            StepState::Done,
        );
    }

    #[test]
    fn the_first_server_alone_is_the_migration_s_doing() {
        check(FIRST_ONLY, StepState::Pending);
    }

    #[test]
    fn a_usage_server_before_the_first_is_up_is_the_old_version() {
        check(
            StartFacts {
                up: 0,
                usage_active: 1,
                ..FIRST_ONLY
            },
            StepState::Pending,
        );
        check(
            StartFacts {
                up: 0,
                ..FIRST_ONLY
            },
            StepState::Pending,
        );
    }

    #[test]
    fn a_second_server_up_is_partial() {
        check(
            StartFacts {
                up: 2,
                ..FIRST_ONLY
            },
            up(2),
        );
        check(
            StartFacts {
                usage_active: 0,
                ..ALL
            },
            up(3),
        );
    }

    #[test]
    fn another_server_started_or_usage_running_beside_the_first_is_partial() {
        check(
            StartFacts {
                others_started: 1,
                ..FIRST_ONLY
            },
            up(1),
        );
        check(
            StartFacts {
                usage_active: 1,
                ..FIRST_ONLY
            },
            up(1),
        );
    }
}
