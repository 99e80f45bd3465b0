//! The `quiesce` step of each hop: every management and usage server stopped (and, on the first
//! hop, the databases backed up again); its rollback puts the configuration back and starts the
//! old version.

use std::time::Duration;

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};

use super::backup::refresh_backup;
use super::ms::{
    installed_version, mshosts_up, remove_leftovers, start_all, stop_all, unit_active, wait_mshosts,
};
use super::{MANAGEMENT_UNIT, USAGE_UNIT, UpgradeContext, db_version, step_err};

#[derive(Debug)]
pub(super) struct Quiesce {
    pub(super) hop: CsVersion,
    /// Only the first hop's rollback restarts the services (a later hop's services stay
    /// stopped until the database is restored).
    pub(super) first: bool,
    pub(super) id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Quiesce {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if db_version(&cx.db).await.map_err(StepError::new)? >= self.hop
            || cx.marker(&self.hop).exists()
            || cx.passed(&self.hop).await?
        {
            // Past this hop, or its migration started (a resumed run must not stop the
            // management server in the middle of it).
            return Ok(StepState::Done);
        }
        for n in cx.service_nodes() {
            if installed_version(n).await? >= Some(self.hop) {
                // The packages of this hop went in after the services were stopped.
                return Ok(StepState::Done);
            }
        }
        let mut active = 0;
        for n in cx.service_nodes() {
            for unit in [MANAGEMENT_UNIT, USAGE_UNIT] {
                if unit_active(n, unit).await? {
                    active += 1;
                }
            }
        }
        let up = mshosts_up(cx).await?;
        let refreshed = !self.first || cx.quiesced_marker().exists();
        Ok(if active == 0 && up.is_empty() && refreshed {
            StepState::Done
        } else if active == 0 && up.is_empty() {
            StepState::Partial("stopped; the backup of the quiesced databases is missing".into())
        } else if active < cx.service_nodes().len() * 2 {
            StepState::Partial(format!("{active} service(s) still active"))
        } else {
            StepState::Pending
        })
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
                let bundle = cs_backup::ConfigBundle::load(&path)
                    .map_err(|e| step_err(&format!("{}: load the config bundle", n.name), e))?;
                cs_backup::restore_config(n.host.as_ref(), &bundle)
                    .await
                    .map_err(|e| step_err(&format!("{}: restore the configuration", n.name), e))?;
                remove_leftovers(n, &bundle).await?;
            }
        }
        start_all(cx, &cx.record.from).await?;
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
