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
        let current = table.and_then(|t| t.current());
        let incomplete = table.is_some_and(|t| t.incomplete().next().is_some());
        if current.is_some_and(|c| c >= self.hop) && !incomplete {
            return Ok(StepState::Done);
        }
        if incomplete
            || cx.marker(&self.hop).exists()
            || current.is_some_and(|c| c > cx.record.from)
        {
            return Ok(StepState::Partial(format!(
                "the migration to {} started (database at {})",
                self.hop,
                current.map_or("?".into(), |c| c.to_string())
            )));
        }
        Ok(StepState::Pending)
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let first = &cx.management[0];
        std::fs::write(cx.marker(&self.hop), b"")
            .map_err(|e| step_err("write the migration marker", e))?;
        let mut watch = MigrationWatch::new(cx.db.clone(), self.hop, first.host.clone());
        watch.log = first.layout.management_log();
        watch.poll = Duration::from_millis(200);
        watch.deadline = cx.config.policy.migration_deadline;
        if !unit_active(first, MANAGEMENT_UNIT).await? {
            // The watch must see the log from before the start: start it first, then start.
            let handle = {
                let watch = watch.clone();
                let progress = cx.progress.clone();
                tokio::spawn(async move { watch.run(progress.as_ref()).await })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            systemctl(first, "start", MANAGEMENT_UNIT).await?;
            let outcome = handle
                .await
                .map_err(|e| step_err("watch the migration", e))?
                .map_err(|e| step_err("watch the migration", e))?;
            return outcome_result(outcome, &first.name);
        }
        let outcome = watch
            .run(cx.progress.as_ref())
            .await
            .map_err(|e| step_err("watch the migration", e))?;
        outcome_result(outcome, &first.name)
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        let report = cs_backup::restore(
            &cx.backup_dir(),
            &cx.db.url,
            &cs_backup::RestoreOptions {
                threads: cx.config.backup.threads,
                ..cs_backup::RestoreOptions::default()
            },
            cx.progress.as_ref(),
        )
        .await
        .map_err(|e| step_err("restore the databases", e))?;
        cs_backup::drop_parked(&cx.db.url, &report)
            .await
            .map_err(|e| step_err("drop the replaced tables", e))?;
        let _ = std::fs::remove_file(cx.marker(&self.hop));
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
