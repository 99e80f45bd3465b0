//! The `migrate@<hop>` step: the first management server started at the hop, its schema
//! migration watched to the end; its rollback restores the backup.

use std::time::Duration;

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};
use cs_schema::{MigrationWatch, WatchOutcome};

use super::ms::{stop_all, systemctl, unit_active};
use super::{MANAGEMENT_UNIT, UpgradeContext, step_err};

#[derive(Debug)]
pub(super) struct Migrate {
    pub(super) hop: CsVersion,
    pub(super) id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Migrate {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let state = cs_schema::read_state(&cx.db)
            .await
            .map_err(|e| step_err("read the version table", e))?;
        let table = state.version.as_ref();
        Ok(decide(&MigrateFacts {
            hop: self.hop,
            from: cx.record.from,
            current: table.and_then(|t| t.current()),
            incomplete: table.is_some_and(|t| t.incomplete().next().is_some()),
            marker: cx.marker(&self.hop).exists(),
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let first = &cx.management[0];
        std::fs::write(cx.marker(&self.hop), b"")
            .map_err(|e| step_err("write the migration marker", e))?;
        let mut watch = MigrationWatch::new(cx.db.clone(), self.hop, first.host.clone());
        watch.log = first.layout.management_log();
        watch.poll = Duration::from_millis(200);
        watch.deadline = cx.config.policy.migration_deadline;
        let outcome = if unit_active(first, MANAGEMENT_UNIT).await? {
            watch
                .run(cx.progress.as_ref())
                .await
                .map_err(|e| step_err("watch the migration", e))?
        } else {
            // The watch must see the log from before the start: start it first, then start.
            let handle = {
                let watch = watch.clone();
                let progress = cx.progress.clone();
                tokio::spawn(async move { watch.run(progress.as_ref()).await })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            systemctl(
                first,
                cs_agent::packages::ServiceAction::Start,
                MANAGEMENT_UNIT,
            )
            .await?;
            handle
                .await
                .map_err(|e| step_err("watch the migration", e))?
                .map_err(|e| step_err("watch the migration", e))?
        };
        outcome_result(outcome, &first.name)?;
        if cx.record.hops.first() == Some(&self.hop) {
            // The point of no return: the first management server serves the new release.
            std::fs::write(cx.reopened_marker(), super::utc_now())
                .map_err(|e| step_err("record when the cloud reopened", e))?;
        }
        Ok(())
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        let report = cs_backup::restore(
            &cx.backup_dir(),
            &cx.db.url,
            &cs_backup::RestoreOptions::default().threads(cx.config.backup.threads),
            cx.progress.as_ref(),
        )
        .await
        .map_err(|e| step_err("restore the databases", e))?;
        cs_backup::drop_parked(&cx.db.url, &report)
            .await
            .map_err(|e| step_err("drop the replaced tables", e))?;
        for marker in [cx.marker(&self.hop), cx.reopened_marker()] {
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(step_err(&format!("remove {}", marker.display()), e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn outcome_result(outcome: WatchOutcome, node: &str) -> Result<(), StepError> {
    match outcome {
        WatchOutcome::Complete { .. } => Ok(()),
        WatchOutcome::Failed { line, .. } => Err(StepError::new(format!(
            "the schema migration on {node} failed: {line}"
        ))),
        WatchOutcome::TimedOut { rows, .. } => Err(StepError::new(format!(
            "the schema migration on {node} did not finish in time ({} version row(s) written)",
            rows.len()
        ))),
        other => Err(StepError::new(format!(
            "the schema migration on {node}: {other:?}"
        ))),
    }
}

/// What the migrate step's check found in the version table and the run directory.
#[derive(Debug, Clone, Copy)]
struct MigrateFacts {
    /// The hop this step migrates to.
    hop: CsVersion,
    /// The version the run started from.
    from: CsVersion,
    /// The database's version: its newest `Complete` row.
    current: Option<CsVersion>,
    /// Whether a version row is not `Complete`.
    incomplete: bool,
    /// Whether the hop's migration marker is there (the migration was started).
    marker: bool,
}

/// The migrate step's state: `Done` at or past the hop with every row complete; `Partial` when a
/// migration began (an incomplete row, the marker, or a database past the run's start);
/// `Pending` otherwise.
fn decide(f: &MigrateFacts) -> StepState {
    if f.current.is_some_and(|c| c >= f.hop) && !f.incomplete {
        return StepState::Done;
    }
    if f.incomplete || f.marker || f.current.is_some_and(|c| c > f.from) {
        return StepState::Partial(format!(
            "the migration to {} started (database at {})",
            f.hop,
            f.current.map_or("?".into(), |c| c.to_string())
        ));
    }
    StepState::Pending
}

#[cfg(test)]
mod tests {
    use cs_core::{CsVersion, StepState};
    use cs_schema::WatchOutcome;

    use super::{MigrateFacts, decide, outcome_result};

    fn v(s: &str) -> CsVersion {
        CsVersion::parse(s).expect("test versions parse")
    }

    /// The first hop, 4.17 to 4.19, not begun.
    fn before() -> MigrateFacts {
        MigrateFacts {
            hop: v("4.19.0.0"),
            from: v("4.17.0.0"),
            current: Some(v("4.17.0.0")),
            incomplete: false,
            marker: false,
        }
    }

    #[track_caller]
    fn check(facts: MigrateFacts, expected: StepState) {
        assert_eq!(decide(&facts), expected);
    }

    fn started(detail: &str) -> StepState {
        StepState::Partial(format!(
            "the migration to 4.19.0.0 started (database at {detail})"
        ))
    }

    #[test]
    fn at_or_past_the_hop_with_every_row_complete_is_done() {
        let at = Some(v("4.19.0.0"));
        check(
            MigrateFacts {
                current: at,
                ..before()
            },
            StepState::Done,
        );
        check(
            MigrateFacts {
                current: at,
                marker: true,
                ..before()
            },
            StepState::Done,
        );
        check(
            MigrateFacts {
                current: Some(v("4.20.0.0")),
                ..before()
            },
            StepState::Done,
        );
    }

    #[test]
    fn an_incomplete_row_is_a_migration_under_way() {
        check(
            MigrateFacts {
                incomplete: true,
                ..before()
            },
            started("4.17.0.0"),
        );
        check(
            MigrateFacts {
                current: Some(v("4.19.0.0")),
                incomplete: true,
                ..before()
            },
            started("4.19.0.0"),
        );
    }

    #[test]
    fn the_marker_alone_is_a_migration_under_way() {
        check(
            MigrateFacts {
                marker: true,
                ..before()
            },
            started("4.17.0.0"),
        );
    }

    #[test]
    fn a_database_past_the_start_but_short_of_the_hop_is_partial() {
        // A later hop before its migration: the earlier hop's moved the database past `from`.
        check(
            MigrateFacts {
                hop: v("4.20.0.0"),
                current: Some(v("4.19.0.0")),
                ..before()
            },
            StepState::Partial("the migration to 4.20.0.0 started (database at 4.19.0.0)".into()),
        );
    }

    #[test]
    fn no_complete_row_says_so() {
        check(
            MigrateFacts {
                current: None,
                incomplete: true,
                ..before()
            },
            started("?"),
        );
    }

    #[test]
    fn nothing_begun_is_pending() {
        check(before(), StepState::Pending);
        check(
            MigrateFacts {
                current: None,
                ..before()
            },
            StepState::Pending,
        );
    }

    #[track_caller]
    fn outcome(o: WatchOutcome, expected: Result<(), &str>) {
        assert_eq!(
            outcome_result(o, "ms1").map_err(|e| e.to_string()),
            expected.map_err(str::to_string)
        );
    }

    #[test]
    fn only_a_complete_migration_succeeds() {
        outcome(
            WatchOutcome::Complete {
                version: v("4.19.0.0"),
                rows: Vec::new(),
            },
            Ok(()),
        );
        outcome(
            WatchOutcome::Failed {
                line: "ERROR DatabaseUpgradeChecker".into(),
                rows: Vec::new(),
            },
            Err("the schema migration on ms1 failed: ERROR DatabaseUpgradeChecker"),
        );
        outcome(
            WatchOutcome::TimedOut {
                rows: Vec::new(),
                last_error: None,
            },
            Err("the schema migration on ms1 did not finish in time (0 version row(s) written)"),
        );
    }
}
