//! The `backup` step: both databases (verified), every service node's configuration, the KVM
//! hosts' repository files and the inventory, taken while the cloud still runs; and the second
//! backup of the quiesced databases that `quiesce` takes.

use std::path::Path;

use async_trait::async_trait;
use cs_core::{Step, StepError, StepState};

use super::{NodeHandle, UpgradeContext, connect, step_err};

/// Backs up both schemas into `dir` (anything there first goes: never a backup without its
/// manifest) and verifies the result.
async fn dump_databases(cx: &UpgradeContext, dir: &Path) -> Result<(), StepError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| step_err("clear the partial backup", e))?;
    }
    let options = cs_backup::BackupOptions::default()
        .databases(vec![cx.db.cloud_schema.clone(), cx.db.usage_schema.clone()])
        .threads(cx.config.backup.threads)
        .compression(if cx.config.backup.compress {
            cs_backup::Compression::ZSTD
        } else {
            cs_backup::Compression::None
        })
        .snapshot_window(cx.config.backup.snapshot_window);
    // `backup.engine`: the parallel native dumper, or the stock client run here.
    let engine: Box<dyn cs_backup::Engine> = match cx.config.backup.engine.as_str() {
        "mysqldump" => Box::new(cs_backup::MysqldumpEngine::new(std::sync::Arc::new(
            cs_core::LocalHost::new(),
        ))),
        _ => Box::new(cs_backup::NativeEngine::new()),
    };
    cs_backup::backup(
        engine.as_ref(),
        &cx.db.url,
        dir,
        &options,
        cx.progress.as_ref(),
    )
    .await
    .map_err(|e| step_err("back up the databases", e))?;
    cs_backup::verify(dir)
        .await
        .map_err(|e| step_err("verify the backup", e))?;
    Ok(())
}

/// Replaces the backup taken while the cloud ran with one of the quiesced databases, so that a
/// rollback loses nothing written between the two (events, VM states, jobs). The new one is
/// complete and verified before the old one goes; a kill at any point leaves a verified backup
/// under one of the names, and the step's check sends a resumed run back here.
pub(super) async fn refresh_backup(cx: &UpgradeContext) -> Result<(), StepError> {
    let (dir, next, prev) = (
        cx.backup_dir(),
        cx.run_dir.join("db.next"),
        cx.run_dir.join("db.prev"),
    );
    dump_databases(cx, &next).await?;
    if prev.exists() {
        std::fs::remove_dir_all(&prev).map_err(|e| step_err("remove db.prev", e))?;
    }
    if dir.exists() {
        std::fs::rename(&dir, &prev).map_err(|e| step_err("set the running backup aside", e))?;
    }
    std::fs::rename(&next, &dir).map_err(|e| step_err("put the quiesced backup in place", e))?;
    // The marker holds the moment the backup describes: what a restore would go back to.
    std::fs::write(cx.quiesced_marker(), super::utc_now())
        .map_err(|e| step_err("mark the backup quiesced", e))?;
    if prev.exists() {
        std::fs::remove_dir_all(&prev).map_err(|e| step_err("remove db.prev", e))?;
    }
    Ok(())
}

/// Name prefix of the backup from before the first attempt, once a later attempt replaced it.
const SUPERSEDED: &str = "db.superseded-";

#[derive(Debug)]
pub(super) struct Backup;

#[async_trait]
impl Step<UpgradeContext> for Backup {
    fn id(&self) -> &str {
        "backup"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        let dir = cx.backup_dir();
        let db_ok = cs_backup::verify(&dir).await.is_ok();
        let bundles_ok = cx
            .service_nodes()
            .iter()
            .all(|n| cx.bundle_path(&n.name).exists())
            && cx
                .record
                .hosts
                .iter()
                .all(|h| cx.host_bundle_path(&h.name).exists());
        let inventory_ok = cx.inventory_path().exists();
        Ok(decide(&BackupFacts {
            db_ok,
            bundles_ok,
            inventory_ok,
            stale: cx.stale_marker().exists(),
            dir_exists: dir.exists(),
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let dir = cx.backup_dir();
        let stale = cx.stale_marker();
        if stale.exists() && dir.exists() {
            // The backup from before the first attempt is kept (the state the cloud was in
            // when the upgrade began); those of later attempts are not (each one's databases
            // went on running after its rollback, and the new backup supersedes them).
            let first_kept = std::fs::read_dir(&cx.run_dir)
                .map_err(|e| step_err("list the run directory", e))?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(SUPERSEDED));
            if first_kept {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| step_err("remove the superseded backup", e))?;
            } else {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                std::fs::rename(&dir, cx.run_dir.join(format!("{SUPERSEDED}{secs}")))
                    .map_err(|e| step_err("set the old backup aside", e))?;
            }
        }
        if cs_backup::verify(&dir).await.is_err() {
            dump_databases(cx, &dir).await?;
        }
        std::fs::create_dir_all(cx.run_dir.join("config"))
            .map_err(|e| step_err("create the config bundle directory", e))?;
        for n in cx.service_nodes() {
            let paths = config_roots(n);
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let bundle = cs_backup::bundle_config(n.host.as_ref(), &refs)
                .await
                .map_err(|e| step_err(&format!("{}: bundle the configuration", n.name), e))?;
            bundle
                .save(&cx.bundle_path(&n.name))
                .map_err(|e| step_err(&format!("{}: save the config bundle", n.name), e))?;
        }
        // The KVM hosts' repository files, which the agent refresh rewrites (agent.properties
        // and the keystore are cs-agent's to keep).
        for h in &cx.record.hosts {
            let n = connect(&cx.config, &h.node())
                .await
                .map_err(|e| step_err(&format!("{}: connect", h.name), e))?;
            let paths = repo_roots(&n);
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let bundle = cs_backup::bundle_config(n.host.as_ref(), &refs)
                .await
                .map_err(|e| step_err(&format!("{}: bundle the repositories", n.name), e))?;
            bundle
                .save(&cx.host_bundle_path(&n.name))
                .map_err(|e| step_err(&format!("{}: save the repository bundle", n.name), e))?;
        }
        let inventory = cs_api::Inventory::snapshot(&cx.client)
            .await
            .map_err(|e| step_err("take the inventory", e))?;
        inventory
            .save(&cx.inventory_path())
            .map_err(|e| step_err("save the inventory", e))?;
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(step_err("clear the stale-backup marker", e))
            }
            _ => Ok(()),
        }
    }

    async fn rollback(&self, _cx: &UpgradeContext) -> Result<(), StepError> {
        // The backup is kept: it is what later rollbacks restore from.
        Ok(())
    }
}

/// What the backup step's check found in the run directory.
#[derive(Debug, Clone, Copy)]
struct BackupFacts {
    /// The database backup verifies.
    db_ok: bool,
    /// Every service node has its config bundle and every KVM host its repository bundle.
    bundles_ok: bool,
    /// The inventory taken before is saved.
    inventory_ok: bool,
    /// A rollback restarted the services since the backup was taken.
    stale: bool,
    /// The backup directory exists (complete or not).
    dir_exists: bool,
}

/// The backup step's state: a stale backup is redone; otherwise `Done` when everything is
/// there, `Partial` when some of it is.
fn decide(f: &BackupFacts) -> StepState {
    if f.stale {
        return StepState::Partial("the backup predates a rollback: a new one is needed".into());
    }
    match (f.db_ok && f.bundles_ok && f.inventory_ok, f.dir_exists) {
        (true, _) => StepState::Done,
        (false, true) => StepState::Partial("the backup is incomplete".into()),
        (false, false) => StepState::Pending,
    }
}

/// The repository directories bundled from a KVM host (as its layout places them): the
/// roots its repository bundle is taken of and may be put back under.
pub(super) fn repo_roots(n: &NodeHandle) -> Vec<String> {
    REPO_DIRS
        .iter()
        .map(|p| n.path(p).to_string_lossy().into_owned())
        .collect()
}

/// CloudStack's configuration and the repository directories of a management or usage server
/// (as its layout places them): the roots its config bundle is taken of and may be put back
/// under.
pub(super) fn config_roots(n: &NodeHandle) -> Vec<String> {
    cs_backup::CLOUDSTACK_CONFIG_PATHS
        .iter()
        .chain(REPO_DIRS)
        .map(|p| n.path(p).to_string_lossy().into_owned())
        .collect()
}

const REPO_DIRS: &[&str] = &["/etc/apt/sources.list.d", "/etc/yum.repos.d"];

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::{BackupFacts, decide};

    /// A complete, current backup.
    const COMPLETE: BackupFacts = BackupFacts {
        db_ok: true,
        bundles_ok: true,
        inventory_ok: true,
        stale: false,
        dir_exists: true,
    };

    /// No backup at all.
    const NONE: BackupFacts = BackupFacts {
        db_ok: false,
        bundles_ok: false,
        inventory_ok: false,
        stale: false,
        dir_exists: false,
    };

    #[track_caller]
    fn check(facts: BackupFacts, expected: StepState) {
        assert_eq!(decide(&facts), expected);
    }

    fn incomplete() -> StepState {
        StepState::Partial("the backup is incomplete".into())
    }

    fn stale() -> StepState {
        StepState::Partial("the backup predates a rollback: a new one is needed".into())
    }

    #[test]
    fn a_complete_backup_is_done() {
        check(COMPLETE, StepState::Done);
    }

    #[test]
    fn nothing_taken_is_pending() {
        check(NONE, StepState::Pending);
    }

    #[test]
    fn a_missing_part_with_the_directory_there_is_incomplete() {
        check(
            BackupFacts {
                db_ok: false,
                ..COMPLETE
            },
            incomplete(),
        );
        check(
            BackupFacts {
                bundles_ok: false,
                ..COMPLETE
            },
            incomplete(),
        );
        check(
            BackupFacts {
                inventory_ok: false,
                ..COMPLETE
            },
            incomplete(),
        );
        check(
            BackupFacts {
                dir_exists: true,
                ..NONE
            },
            incomplete(),
        );
    }

    #[test]
    fn parts_without_the_directory_are_pending() {
        check(
            BackupFacts {
                bundles_ok: true,
                inventory_ok: true,
                ..NONE
            },
            StepState::Pending,
        );
    }

    #[test]
    fn a_backup_older_than_a_rollback_is_redone_however_complete() {
        check(
            BackupFacts {
                stale: true,
                ..COMPLETE
            },
            stale(),
        );
        check(
            BackupFacts {
                stale: true,
                ..NONE
            },
            stale(),
        );
    }
}
