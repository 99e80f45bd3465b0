//! The `quiesce` step of each hop: every management and usage server stopped (and, on the first
//! hop, the databases backed up again); its rollback puts the configuration back and starts the
//! old version.

use std::time::Duration;

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};

use super::backup::refresh_backup;
use super::ms::{
    installed_units, installed_version, mshosts_up, remove_leftovers, start_all, stop_all,
    unit_active, wait_mshosts,
};
use super::{UpgradeContext, db_version, step_err};

#[derive(Debug)]
pub(super) struct Quiesce {
    pub(super) hop: CsVersion,
    /// Only the first hop's rollback restarts the services (a later hop's services stay
    /// stopped until the database is restored).
    pub(super) first: bool,
    pub(super) id: String,
}

impl Quiesce {
    /// Whether the run is past this step of the hop. Looks no further than the first yes:
    /// the database version, the migration marker, a later hop, then each node's packages.
    async fn gone_past(&self, cx: &UpgradeContext) -> Result<bool, StepError> {
        if db_version(&cx.db).await.map_err(StepError::new)? >= self.hop
            || cx.marker(&self.hop).exists()
            || cx.passed(&self.hop).await?
        {
            // Past this hop, or its migration started (a resumed run must not stop the
            // management server in the middle of it).
            return Ok(true);
        }
        for n in cx.service_nodes() {
            if installed_version(n).await? >= Some(self.hop) {
                // The packages of this hop went in after the services were stopped.
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl Step<UpgradeContext> for Quiesce {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if self.gone_past(cx).await? {
            return Ok(StepState::Done);
        }
        let (mut active, mut units) = (0, 0);
        for n in cx.service_nodes() {
            for unit in installed_units(n).await? {
                units += 1;
                if unit_active(n, unit).await? {
                    active += 1;
                }
            }
        }
        let up = mshosts_up(cx).await?.len();
        Ok(decide(&QuiesceFacts {
            active,
            units,
            up,
            first: self.first,
            quiesced: cx.quiesced_marker().exists(),
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        wait_mshosts(
            cx,
            "no management server Up",
            Duration::from_secs(60),
            |rows| rows.is_empty(),
        )
        .await?;
        if self.first {
            refresh_backup(cx).await?;
        }
        Ok(())
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        if !self.first {
            return Ok(());
        }
        // Put the configuration files back, then start everything at the old version.
        for n in cx.service_nodes() {
            let path = cx.bundle_path(&n.name);
            if path.exists() {
                let roots = super::backup::config_roots(n);
                let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
                let bundle = cs_backup::ConfigBundle::load(&path)
                    .map_err(|e| step_err(&format!("{}: load the config bundle", n.name), e))?;
                cs_backup::restore_config(n.host.as_ref(), &bundle, &roots)
                    .await
                    .map_err(|e| step_err(&format!("{}: restore the configuration", n.name), e))?;
                remove_leftovers(n, &bundle).await?;
            }
        }
        start_all(cx, &cx.record.from).await?;
        // System VMs and routers the run moved onto the target's code go back onto the old
        // one, now that the old management servers run again.
        super::sysvms::refresh_to(cx, cx.record.from).await?;
        // The services run on the old version again: the database moves on from here, so a
        // later attempt must take a new backup, and a new quiesced one.
        std::fs::write(cx.stale_marker(), b"").map_err(|e| step_err("mark the backup stale", e))?;
        match std::fs::remove_file(cx.quiesced_marker()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(step_err("clear the quiesced-backup marker", e));
            }
            _ => {}
        }
        let expect = cs_api::HealthExpectations {
            phase: cs_api::Phase::Post,
            version: Some(cx.record.from),
        };
        cs_api::wait_healthy(
            &cx.client,
            &expect,
            cx.config.policy.host_up_deadline,
            cx.progress.as_ref(),
        )
        .await
        .map_err(|e| step_err("wait for the cloud to be healthy again", e))?;
        Ok(())
    }
}

/// What the quiesce step's check found on a hop the run is not yet past.
#[derive(Debug, Clone, Copy)]
struct QuiesceFacts {
    /// Management and usage units active, over every service node.
    active: usize,
    /// Units looked at: those installed on the service nodes.
    units: usize,
    /// `mshost` rows in state `Up`.
    up: usize,
    /// Whether this is the first hop (the one whose quiesce backs the databases up again).
    first: bool,
    /// Whether the backup of the quiesced databases is in place.
    quiesced: bool,
}

/// The quiesce step's state: `Done` once nothing runs (and, on the first hop, the quiesced
/// backup is taken); `Partial` when some services are stopped; `Pending` when all run.
fn decide(f: &QuiesceFacts) -> StepState {
    let stopped = f.active == 0 && f.up == 0;
    let refreshed = !f.first || f.quiesced;
    if stopped && refreshed {
        StepState::Done
    } else if stopped {
        StepState::Partial("stopped; the backup of the quiesced databases is missing".into())
    } else if f.active < f.units {
        StepState::Partial(format!("{} service(s) still active", f.active))
    } else {
        StepState::Pending
    }
}

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::{QuiesceFacts, decide};

    /// Two service nodes, everything running, first hop, no quiesced backup.
    const RUNNING: QuiesceFacts = QuiesceFacts {
        active: 4,
        units: 4,
        up: 2,
        first: true,
        quiesced: false,
    };

    /// Everything stopped on the first hop, the quiesced backup taken.
    const STOPPED: QuiesceFacts = QuiesceFacts {
        active: 0,
        units: 4,
        up: 0,
        first: true,
        quiesced: true,
    };

    #[track_caller]
    fn check(facts: QuiesceFacts, expected: StepState) {
        assert_eq!(decide(&facts), expected);
    }

    fn still_active(n: usize) -> StepState {
        StepState::Partial(format!("{n} service(s) still active"))
    }

    #[test]
    fn everything_stopped_and_backed_up_is_done() {
        check(STOPPED, StepState::Done);
    }

    #[test]
    fn a_later_hop_needs_no_quiesced_backup() {
        check(
            QuiesceFacts {
                first: false,
                quiesced: false,
                ..STOPPED
            },
            StepState::Done,
        );
    }

    #[test]
    fn stopped_on_the_first_hop_without_the_quiesced_backup_is_partial() {
        check(
            QuiesceFacts {
                quiesced: false,
                ..STOPPED
            },
            StepState::Partial("stopped; the backup of the quiesced databases is missing".into()),
        );
    }

    #[test]
    fn some_services_stopped_is_partial() {
        check(
            QuiesceFacts {
                active: 1,
                ..RUNNING
            },
            still_active(1),
        );
        check(
            QuiesceFacts {
                active: 3,
                up: 0,
                ..RUNNING
            },
            still_active(3),
        );
    }

    #[test]
    fn units_stopped_with_a_server_still_up_is_partial() {
        check(QuiesceFacts { up: 1, ..STOPPED }, still_active(0));
    }

    #[test]
    fn everything_running_is_pending() {
        check(RUNNING, StepState::Pending);
        check(
            QuiesceFacts {
                quiesced: true,
                ..RUNNING
            },
            StepState::Pending,
        );
    }
}
