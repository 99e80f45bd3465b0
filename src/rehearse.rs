//! Rehearses the target's schema migration on a scratch copy restored from a verified backup
//! (issue #23): the scripts come from the target's `cloudstack-management` package in the
//! configured repository (or a package file, or a directory), the path from cs-schema, the
//! copy from cs-backup's restore into scratch schemas, the run and the report from
//! cs-rehearse. The live schemas are only read: their fingerprint is taken before and after.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cs_core::{CsVersion, DbUrl, Progress};
use cs_rehearse::{Plan, PlanStep, Report, SchemaMap, Scripts, Session};
use serde::{Deserialize, Serialize};

/// Where the scripts come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ScriptSource {
    /// The configured repository: a node's repository file text and its format; the
    /// `cloudstack-management` package at the target is located in its index, downloaded
    /// and checked against the index's size and SHA-256.
    Repository {
        /// The repository file's text.
        text: String,
        /// Its format.
        format: cs_repo::Format,
        /// Mirrors the repository rules accept besides CloudStack's own.
        mirrors: Vec<String>,
    },
    /// A package file (`.deb` or `.rpm`) the operator fetched (air-gapped sites).
    Package(PathBuf),
    /// A directory with the `META-INF/db/` scripts.
    SqlDir(PathBuf),
}

/// How to rehearse.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RehearseOptions {
    /// The version the upgrade goes to.
    pub target: CsVersion,
    /// Where the scripts come from.
    pub source: ScriptSource,
    /// The database server holding the live schemas.
    pub db: DbUrl,
    /// The live `cloud` schema's name.
    pub cloud_schema: String,
    /// The live `cloud_usage` schema's name.
    pub usage_schema: String,
    /// Another server to restore the scratch copy on (default: the live one).
    pub scratch_db: Option<DbUrl>,
    /// The directory of backups: the newest verified one is restored; when there is none, a
    /// backup is taken into it first.
    pub backup_dir: PathBuf,
    /// The session of the management server (from `db.properties`).
    pub session: Session,
    /// The management server's own database account (`db.cloud.username` / password of
    /// `db.properties`): the statements run as it, given `ALL PRIVILEGES` on the scratch
    /// schemas for the rehearsal and revoked after; it logs in on the scratch copy's server
    /// (its URL's host and port are replaced by that server's). Default: the account of `db` /
    /// `scratch_db`.
    pub script_user: Option<DbUrl>,
    /// Keep the scratch schemas after the rehearsal (for a look at them).
    pub keep_scratch: bool,
    /// Statements at least this slow are reported.
    pub slow: Duration,
    /// The longest one statement may run.
    pub statement_timeout: Duration,
    /// The largest package downloaded.
    pub max_package_bytes: u64,
    /// Limit for each repository request and for the download.
    pub fetch_timeout: Duration,
}

impl RehearseOptions {
    /// Options with the defaults: CloudStack's packaged session, 1 s slow threshold, 6 h per
    /// statement, packages up to 2 GiB, 10 min to download.
    pub fn new(
        target: CsVersion,
        source: ScriptSource,
        db: DbUrl,
        backup_dir: impl Into<PathBuf>,
    ) -> Self {
        RehearseOptions {
            target,
            source,
            db,
            cloud_schema: "cloud".into(),
            usage_schema: "cloud_usage".into(),
            scratch_db: None,
            backup_dir: backup_dir.into(),
            session: Session::packaged(),
            script_user: None,
            keep_scratch: false,
            slow: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(6 * 3600),
            max_package_bytes: cs_rehearse::package::MAX_PACKAGE_BYTES,
            fetch_timeout: Duration::from_secs(600),
        }
    }
}

/// A rehearsal's result.
#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
    /// The version the live database is at.
    pub db_version: String,
    /// What was run.
    pub plan: Plan,
    /// The run's report.
    pub report: Report,
    /// The backup restored.
    pub backup: PathBuf,
    /// Whether the backup was taken for this rehearsal.
    pub backup_taken: bool,
    /// The scratch schemas (dropped unless kept).
    pub scratch: Vec<String>,
    /// Whether the scratch schemas were kept.
    pub kept: bool,
    /// Whether the live schemas' fingerprint is the same after the rehearsal as before.
    pub live_unchanged: bool,
    /// The package the scripts came from: URL (credentials masked) and SHA-256, when
    /// downloaded.
    pub package: Option<(String, String)>,
    /// Where the record of this rehearsal was written.
    pub record: PathBuf,
}

/// What the gate reads back: one finished rehearsal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RehearsalRecord {
    /// The target version rehearsed.
    pub target: String,
    /// The database version it started from.
    pub db_version: String,
    /// Whether it passed.
    pub passed: bool,
    /// When it finished (seconds since the Unix epoch).
    pub finished: u64,
    /// The first failure's `file#statement`, if any.
    pub failed_at: Option<String>,
}

/// Why a rehearsal could not run (a failing statement is not this: it is in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RehearseError {
    /// The live database's version or the path could not be read.
    #[error("cannot plan the rehearsal: {0}")]
    Schema(#[from] cs_schema::Error),
    /// The package could not be located or downloaded.
    #[error("cannot get the target's package: {0}")]
    Repo(#[from] cs_repo::Error),
    /// The scripts could not be read or run.
    #[error("rehearsal: {0}")]
    Rehearse(#[from] cs_rehearse::Error),
    /// The backup could not be taken, verified or restored.
    #[error("scratch copy: {0}")]
    Backup(#[from] cs_backup::Error),
    /// Something else (a directory, the record).
    #[error("{what}: {detail}")]
    Other {
        /// What was being done.
        what: String,
        /// Why it failed.
        detail: String,
    },
}

fn other(what: &str, detail: impl ToString) -> RehearseError {
    RehearseError::Other {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> cs_rehearse::Result<T> + Send + 'static,
) -> Result<T, RehearseError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| other("rehearsal task", e))?
        .map_err(RehearseError::from)
}

/// The plan for a database at `db` going to `target`: cs-schema's path, procedures first from
/// 4.19.2, views last from 4.19.0 (see [`cs_rehearse::plan`]).
///
/// # Errors
/// [`RehearseError::Schema`] when cs-schema has no path.
pub fn plan_for(db: &CsVersion, target: &CsVersion) -> Result<Plan, RehearseError> {
    let steps = cs_schema::path(db, target)?;
    let at_least = |v: &str| v.parse::<CsVersion>().is_ok_and(|v| *target >= v);
    Ok(Plan {
        target: target.to_string(),
        procedures_first: at_least("4.19.2.0"),
        steps: steps
            .into_iter()
            .map(|s| PlanStep {
                class: s.class,
                from: s.from.to_string(),
                to: s.to.to_string(),
                prepare: s.prepare_sql,
                cleanup: s.cleanup_sql,
                java_data_migration: s.java_data_migration,
            })
            .collect(),
        views_last: at_least("4.19.0.0"),
    })
}

/// The newest backup under `dir` (by its manifest's `finished`) of both `schemas` that
/// verifies, if any.
async fn newest_verified(dir: &Path, schemas: &[String]) -> Option<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if let Ok(m) = cs_backup::Manifest::load(&p)
            && schemas
                .iter()
                .all(|s| m.schemas.iter().any(|e| &e.name == s))
        {
            found.push((m.finished.clone(), p));
        }
    }
    found.sort();
    for (_, p) in found.into_iter().rev() {
        if cs_backup::verify(&p).await.is_ok() {
            return Some(p);
        }
    }
    None
}

async fn scripts(
    options: &RehearseOptions,
) -> Result<(Scripts, Option<(String, String)>), RehearseError> {
    match &options.source {
        ScriptSource::SqlDir(d) => {
            let d = d.clone();
            Ok((blocking(move || Scripts::from_dir(&d)).await?, None))
        }
        ScriptSource::Package(p) => {
            let p = p.clone();
            Ok((
                blocking(move || Scripts::from_package_file(&p)).await?,
                None,
            ))
        }
        ScriptSource::Repository {
            text,
            format,
            mirrors,
        } => {
            let mut lo = cs_repo::LocateOptions::default();
            for m in mirrors {
                lo.rules = lo.rules.with_mirror(m)?;
            }
            lo.timeout = options.fetch_timeout.min(Duration::from_secs(60));
            let loc = cs_repo::locate_package(
                text,
                *format,
                &options.target,
                "cloudstack-management",
                &lo,
            )
            .await?;
            let body =
                cs_repo::download_package(&loc, options.max_package_bytes, options.fetch_timeout)
                    .await?;
            // Credentials in a mirror URL stay out of the report and the errors.
            let source = loc.shown_url();
            let s = blocking(move || Scripts::from_package(&source, &body)).await?;
            Ok((s, Some((loc.shown_url(), loc.sha256))))
        }
    }
}

/// Rehearses the upgrade to [`RehearseOptions::target`]: reads the live database's version,
/// plans the path, gets the scripts, fingerprints the live schemas, restores the newest
/// verified backup (taking one when there is none) into scratch schemas on one connection,
/// runs the plan there, drops the scratch schemas (unless kept), fingerprints the live
/// schemas again and records the outcome under `<backup_dir>/rehearsals/` for the gate.
///
/// # Errors
/// [`RehearseError`] when the rehearsal cannot run at all; a failing statement is the
/// report's [`Report::failure`] (and `passed: false`), not an error.
pub async fn rehearse(
    options: &RehearseOptions,
    progress: Arc<dyn Progress>,
) -> Result<Rehearsal, RehearseError> {
    let live = cs_schema::DbTarget::new(
        options.db.clone(),
        &options.cloud_schema,
        &options.usage_schema,
    );
    let state = cs_schema::read_state(&live).await?;
    let db_version = state
        .version
        .as_ref()
        .and_then(|v| v.current())
        .ok_or_else(|| other("live database", "no Complete row in the version table"))?;
    let plan = plan_for(&db_version, &options.target)?;
    let (scripts, package) = scripts(options).await?;
    for name in plan.scripts() {
        scripts.get(name)?;
    }
    let schemas = [options.cloud_schema.clone(), options.usage_schema.clone()];
    let before = {
        let (db, s) = (options.db.clone(), schemas.clone());
        blocking(move || cs_rehearse::fingerprint(&db, &[&s[0], &s[1]])).await?
    };
    std::fs::create_dir_all(&options.backup_dir)
        .map_err(|e| other("create the backup directory", e))?;
    let (backup, taken) = match newest_verified(&options.backup_dir, &schemas).await {
        Some(p) => (p, false),
        None => {
            let dir = options.backup_dir.join(format!("rehearsal-{}", unix_now()));
            let bo = cs_backup::BackupOptions::default()
                .databases(schemas.to_vec())
                .threads(1);
            cs_backup::backup(
                &cs_backup::NativeEngine::new(),
                &options.db,
                &dir,
                &bo,
                progress.as_ref(),
            )
            .await?;
            (dir, true)
        }
    };
    let scratch_db = options.scratch_db.clone().unwrap_or(options.db.clone());
    let ro = cs_backup::RestoreOptions::default()
        .threads(1)
        .mode(cs_backup::RestoreMode::ScratchOnly);
    let restored = cs_backup::restore(&backup, &scratch_db, &ro, progress.as_ref()).await?;
    let scratch_of = |name: &str| {
        restored
            .schemas
            .iter()
            .find(|s| s.source == name)
            .and_then(|s| s.scratch.clone())
    };
    let scratch: Vec<String> = restored
        .schemas
        .iter()
        .filter_map(|s| s.scratch.clone())
        .collect();
    let (Some(cloud), Some(usage)) = (
        scratch_of(&options.cloud_schema),
        scratch_of(&options.usage_schema),
    ) else {
        let _ = drop_scratch(&scratch_db, &scratch).await;
        return Err(other(
            "scratch copy",
            format!(
                "the backup {} does not hold both {} and {}",
                backup.display(),
                options.cloud_schema,
                options.usage_schema
            ),
        ));
    };
    let map = SchemaMap { cloud, usage };
    let ro = cs_rehearse::Options::default()
        .session(options.session.clone())
        .slow(options.slow)
        .statement_timeout(options.statement_timeout);
    let granted = match &options.script_user {
        Some(user) => {
            let (admin, user, names) = (scratch_db.clone(), user.clone(), scratch.clone());
            match blocking(move || cs_rehearse::grant_scratch(&admin, &user, &names)).await {
                Ok(account) => Some(account),
                Err(e) => {
                    let _ = drop_scratch(&scratch_db, &scratch).await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let script_db = match &options.script_user {
        // The script user logs in where the scratch copy is.
        Some(user) => {
            let mut u = user.clone();
            u.host = scratch_db.host.clone();
            u.port = scratch_db.port;
            u
        }
        None => scratch_db.clone(),
    };
    let run = {
        let (db, map, plan, scripts) = (script_db, map, plan.clone(), scripts);
        blocking(move || cs_rehearse::rehearse(&db, &map, &plan, &scripts, &ro)).await
    };
    if let Some(account) = granted {
        let (admin, names) = (scratch_db.clone(), scratch.clone());
        blocking(move || cs_rehearse::revoke_scratch(&admin, &account, &names)).await?;
    }
    if !options.keep_scratch {
        drop_scratch(&scratch_db, &scratch).await?;
    }
    let report = run?;
    let after = {
        let (db, s) = (options.db.clone(), schemas.clone());
        blocking(move || cs_rehearse::fingerprint(&db, &[&s[0], &s[1]])).await?
    };
    let record = write_record(
        &options.backup_dir,
        &RehearsalRecord {
            target: options.target.to_string(),
            db_version: db_version.to_string(),
            passed: report.passed,
            finished: unix_now(),
            failed_at: report.failure.as_ref().map(|f| f.at.clone()),
        },
    )?;
    Ok(Rehearsal {
        db_version: db_version.to_string(),
        plan,
        report,
        backup,
        backup_taken: taken,
        scratch,
        kept: options.keep_scratch,
        live_unchanged: before == after,
        package,
        record,
    })
}

async fn drop_scratch(db: &DbUrl, names: &[String]) -> Result<(), RehearseError> {
    let (db, names) = (db.clone(), names.to_vec());
    blocking(move || cs_rehearse::drop_scratch(&db, &names)).await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The directory rehearsal records are kept in, under the backup directory.
pub fn records_dir(backup_dir: &Path) -> PathBuf {
    backup_dir.join("rehearsals")
}

fn write_record(backup_dir: &Path, r: &RehearsalRecord) -> Result<PathBuf, RehearseError> {
    let dir = records_dir(backup_dir);
    std::fs::create_dir_all(&dir).map_err(|e| other("create the rehearsal records", e))?;
    let path = dir.join(format!("{}-{}.json", r.finished, r.target));
    let tmp = dir.join(format!(".{}-{}.json.tmp", r.finished, r.target));
    let body = serde_json::to_vec_pretty(r).map_err(|e| other("rehearsal record", e))?;
    std::fs::write(&tmp, body).map_err(|e| other("write the rehearsal record", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| other("write the rehearsal record", e))?;
    Ok(path)
}

/// The newest passed rehearsal of `target` recorded under `backup_dir`, if any.
pub fn last_passed(backup_dir: &Path, target: &CsVersion) -> Option<RehearsalRecord> {
    let entries = std::fs::read_dir(records_dir(backup_dir)).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<RehearsalRecord>(&b).ok())
        .filter(|r| r.passed && r.target == target.to_string())
        .max_by_key(|r| r.finished)
}

/// [`rehearse`] for the installation `config` describes: the target, database, schemas and
/// backup directory from it; the scripts from the target's package in the repository the first
/// management server is configured with (its repository files read over SSH, the entries
/// `[repositories]` accepts); the session from that server's `db.properties` (CloudStack's
/// packaged session when it cannot be read).
///
/// # Errors
/// [`RehearseError::Other`] when the management server cannot be reached or has no
/// CloudStack repository entry; what [`rehearse`] returns.
pub async fn rehearse_configured(
    config: &crate::UpgradeConfig,
    keep_scratch: bool,
    progress: Arc<dyn Progress>,
) -> Result<Rehearsal, RehearseError> {
    let node = config
        .management_servers
        .first()
        .ok_or_else(|| other("configuration", "no management server is configured"))?;
    let handle = crate::upgrade::connect(config, node)
        .await
        .map_err(|e| other("reach the management server", cs_core::error_chain(&e)))?;
    let rules = config.repo_rules();
    let files = cs_repo::discover(handle.host.as_ref(), &handle.layout).await?;
    let mut source = None;
    for path in files {
        let Some(format) = cs_repo::Format::from_path(&path) else {
            continue;
        };
        let Ok(bytes) = handle.host.read(&path).await else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let cloudstack = cs_repo::scan(&text, format, &rules)
            .map(|entries| entries.iter().any(|e| e.enabled))
            .unwrap_or(false);
        if cloudstack {
            source = Some(ScriptSource::Repository {
                text,
                format,
                mirrors: config.repositories.mirrors.clone(),
            });
            break;
        }
    }
    let source = source.ok_or_else(|| {
        other(
            &format!("repositories of {}", handle.name),
            "no enabled CloudStack repository entry",
        )
    })?;
    let db = config
        .database_url()
        .map_err(|e| other("database", cs_core::error_chain(&e)))?;
    let mut options = RehearseOptions::new(config.target, source, db, &config.backup.dir);
    options.cloud_schema = config.database.cloud_schema.clone();
    options.usage_schema = config.database.usage_schema.clone();
    options.keep_scratch = keep_scratch;
    let props = handle.layout.management_conf_dir.join("db.properties");
    if let Ok(bytes) = handle.host.read(&props).await {
        options.session = Session::from_db_properties(&String::from_utf8_lossy(&bytes))?;
    }
    rehearse(&options, progress).await
}
