//! The backup driver: options, the [`Engine`] trait, and [`backup`], which checks the
//! output directory, runs an engine, records grants and writes the manifest last.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cs_core::{DbUrl, Host, HostExt, Progress, ProgressUpdate, Unit};
use sha2::Digest;

use crate::db::{self, Catalog};
use crate::manifest::{
    CHECKSUM_ALGORITHM, FORMAT_VERSION, FileEntry, Layout, MANIFEST_FILE, Manifest, SchemaEntry,
    ServerInfo, now_rfc3339,
};
use crate::sql::{ident, literal};
use crate::{Error, Result};

/// Compression of dump files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Plain SQL (`*.sql`).
    #[default]
    None,
    /// zstd (`*.sql.zst`; restore with `zstdcat … | mysql`).
    Zstd {
        /// Level, 1 (fast) to 19 (small); 3 is zstd's default.
        level: i32,
    },
}

impl Compression {
    /// zstd at its default level 3.
    pub const ZSTD: Compression = Compression::Zstd { level: 3 };

    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Compression::None => ".sql",
            Compression::Zstd { .. } => ".sql.zst",
        }
    }
}

/// What to back up and how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupOptions {
    /// Schemas, dumped in one consistent snapshot. Default `cloud`, `cloud_usage`.
    pub databases: Vec<String>,
    /// Parallel connections for the native engine (the `mysqldump` engine uses one). Default 4.
    pub threads: usize,
    /// File compression. Default none.
    pub compression: Compression,
    /// The native engine splits tables with a single integer primary key into parts of about
    /// this many rows, dumped in parallel. Default 500 000.
    pub chunk_rows: u64,
    /// Upper size of one multi-row `INSERT` in bytes (a single bigger row still makes one
    /// statement). Default 1 MiB; the native engine makes it smaller where the server's
    /// `max_allowed_packet` is, so that every statement loads back.
    pub statement_bytes: usize,
    /// Accounts whose `CREATE USER` and grants are recorded in `grants/users.sql` (every host of
    /// each user name). Default `cloud`. Unreadable grants become a manifest note, not an error.
    pub grant_users: Vec<String>,
    /// The longest the native engine may hold the global read lock (`FLUSH TABLES WITH READ
    /// LOCK`, which stops every write of the cloud) to open its snapshot. Past it, a watchdog
    /// kills the lock's connection from a second one and the backup fails; should the server
    /// be out of reach, it ends that session itself a second later (`wait_timeout`,
    /// `lock_wait_timeout`). Default 30 s.
    pub snapshot_window: std::time::Duration,
}

cs_core::setters!(BackupOptions {
    databases: Vec<String>,
    threads: usize,
    compression: Compression,
    chunk_rows: u64,
    statement_bytes: usize,
    grant_users: Vec<String>,
    snapshot_window: std::time::Duration,
});

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            databases: vec!["cloud".into(), "cloud_usage".into()],
            threads: 4,
            compression: Compression::None,
            chunk_rows: 500_000,
            statement_bytes: 1 << 20,
            grant_users: vec!["cloud".into()],
            snapshot_window: std::time::Duration::from_secs(30),
        }
    }
}

/// What an engine is asked to dump. Built by [`backup`]; engines read it.
#[derive(Debug)]
pub struct DumpJob<'a> {
    pub(crate) url: &'a DbUrl,
    pub(crate) dir: &'a Path,
    pub(crate) options: &'a BackupOptions,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) catalogs: Vec<(String, Catalog)>,
    pub(crate) server: ServerInfo,
}

impl DumpJob<'_> {
    /// The database to dump.
    pub fn url(&self) -> &DbUrl {
        self.url
    }

    /// The output directory (on the engine's host), created and empty.
    pub fn dir(&self) -> &Path {
        self.dir
    }

    /// The options.
    pub fn options(&self) -> &BackupOptions {
        self.options
    }
}

/// What an engine produced: schema entries with per-table rows and checksums, and files.
/// Only this crate's engines can build one.
#[derive(Debug)]
pub struct Dumped {
    pub(crate) schemas: Vec<SchemaEntry>,
    pub(crate) files: Vec<FileEntry>,
    pub(crate) layout: Layout,
    pub(crate) options: serde_json::Value,
    pub(crate) binlog: Option<String>,
    pub(crate) notes: Vec<String>,
}

/// A way to dump schemas: [`NativeEngine`](crate::NativeEngine) (parallel, on the `mysql`
/// protocol) or [`MysqldumpEngine`](crate::MysqldumpEngine) (`mariadb-dump`/`mysqldump` on a
/// [`Host`]).
///
/// # Contract
/// * `dump` writes every file under [`DumpJob::dir`] on [`Engine::host`], mode `0600`, and
///   returns each with its size and SHA-256; it never writes `manifest.json`.
/// * All schemas come from one consistent snapshot.
/// * Row counts and checksums in the result are those of the rows in the files.
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// The engine's name, recorded in the manifest (`native`, `mysqldump`).
    fn name(&self) -> &str;

    /// The host the output directory lives on.
    fn host(&self) -> &dyn Host;

    /// Dumps the job's schemas into its directory.
    ///
    /// # Errors
    /// Database, file and host errors; [`Error::Dump`] when a dump program fails.
    async fn dump(&self, job: &DumpJob<'_>) -> Result<Dumped>;
}

/// Backs up `options.databases` from `url` into `dir` (which must not exist or be empty) on the
/// engine's host, and returns the manifest it wrote last.
///
/// A directory without `manifest.json` is never a backup: if this fails or is interrupted, the
/// files it wrote stay behind without a manifest and [`verify`](crate::verify) calls them
/// incomplete.
///
/// # Errors
/// [`Error::NotEmpty`] for a used directory, [`Error::Invalid`] for bad options or a missing
/// schema, [`Error::Connect`]/[`Error::Privilege`]/[`Error::Database`] from the server,
/// [`Error::Io`] naming the path for file errors (a full disk), [`Error::Changed`] when
/// schema objects changed while the backup ran, and the engine's errors.
///
/// # Examples
///
/// A native backup of `cloud` and `cloud_usage` (the default databases) with four connections
/// sharing one snapshot (`no_run`: it needs a server; `tests/roundtrip.rs` runs the same code
/// against a real MariaDB):
///
/// ```no_run
/// use cs_backup::{BackupOptions, DbUrl, NativeEngine, NoProgress, backup};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = DbUrl::parse("mysql://root:secret@127.0.0.1:3306")?;
/// let dir = std::path::Path::new("/var/backups/cloudstack/before-4.19");
/// let options = BackupOptions::default();
/// let manifest = backup(&NativeEngine::new(), &url, dir, &options, &NoProgress).await?;
/// for schema in &manifest.schemas {
///     let rows: u64 = schema.tables.iter().map(|t| t.rows).sum();
///     println!("{}: {} tables, {rows} rows", schema.name, schema.tables.len());
/// }
/// # Ok(()) }
/// ```
pub async fn backup(
    engine: &dyn Engine,
    url: &DbUrl,
    dir: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<Manifest> {
    if options.databases.is_empty() {
        return Err(Error::invalid("no databases to back up"));
    }
    for d in &options.databases {
        if d.is_empty() || d.len() > 64 {
            return Err(Error::invalid(format!("bad schema name `{d}`")));
        }
    }
    if options.threads == 0 {
        return Err(Error::invalid("threads must be at least 1"));
    }
    let started = now_rfc3339();
    let host = engine.host();
    if host
        .exists(dir)
        .await
        .map_err(|e| Error::host(format!("look at {}", dir.display()), e))?
    {
        let entries = host
            .list_dir(dir)
            .await
            .map_err(|e| Error::host(format!("list {}", dir.display()), e))?;
        if !entries.is_empty() {
            return Err(Error::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
    }
    host.create_dir_all(dir, 0o700)
        .await
        .map_err(|e| Error::host(format!("create {}", dir.display()), e))?;
    // `create_dir_all` leaves an existing (empty) directory's mode alone: tighten it.
    let _ = host
        .run(&cs_core::Cmd::new("chmod").arg("700").arg(path_str(dir)?))
        .await;

    let (server, catalogs) = {
        let url = url.clone();
        let dbs = options.databases.clone();
        blocking(move || {
            let mut db = db::connect_short(&url)?;
            let server = db.server()?;
            let mut cats = Vec::new();
            for d in dbs {
                let c = db::catalog(&mut db, &d)?;
                cats.push((d, c));
            }
            Ok((server, cats))
        })
        .await?
    };
    let before: Vec<String> = catalogs.iter().map(|(_, c)| c.shape()).collect();
    let job = DumpJob {
        url,
        dir,
        options,
        progress,
        catalogs,
        server: server.clone(),
    };
    let mut dumped = engine.dump(&job).await?;

    let (after, grants) = {
        let url = url.clone();
        let dbs = options.databases.clone();
        let users = options.grant_users.clone();
        blocking(move || {
            let mut db = db::connect_short(&url)?;
            let mut shapes = Vec::new();
            for d in &dbs {
                shapes.push(db::catalog(&mut db, d)?.shape());
            }
            let grants = read_grants(&mut db, &users, &dbs);
            let hidden = hidden_objects(&mut db, &url.user, &dbs);
            Ok((shapes, (grants, hidden)))
        })
        .await?
    };
    let (grants, hidden) = grants;
    if let Some(i) = (0..before.len()).find(|&i| before[i] != after[i]) {
        return Err(Error::Changed {
            what: format!("schema `{}`", options.databases[i]),
        });
    }

    let mut notes = std::mem::take(&mut dumped.notes);
    notes.extend(hidden);
    let mut grants_file = None;
    match grants {
        Ok(Some(sql)) => {
            let gdir = dir.join("grants");
            host.create_dir_all(&gdir, 0o700)
                .await
                .map_err(|e| Error::host(format!("create {}", gdir.display()), e))?;
            let path = gdir.join("users.sql");
            host.write_atomic(&path, sql.as_bytes(), Some(0o600))
                .await
                .map_err(|e| Error::host(format!("write {}", path.display()), e))?;
            dumped.files.push(FileEntry {
                path: "grants/users.sql".into(),
                size: sql.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(sql.as_bytes())),
            });
            grants_file = Some("grants/users.sql".to_string());
        }
        Ok(None) => notes.push(format!(
            "no accounts named {} were found; no grants recorded",
            options.grant_users.join(", ")
        )),
        Err(e) => notes.push(format!("grants not recorded: {}", cs_core::error_chain(&e))),
    }

    let manifest = Manifest {
        format: FORMAT_VERSION,
        tool: format!("cs-backup {}", env!("CARGO_PKG_VERSION")),
        engine: engine.name().to_string(),
        options: dumped.options,
        started,
        finished: now_rfc3339(),
        server: ServerInfo {
            binlog: dumped.binlog,
            ..server
        },
        layout: dumped.layout,
        checksum: CHECKSUM_ALGORITHM.to_string(),
        schemas: dumped.schemas,
        files: dumped.files,
        grants_file,
        notes,
    };
    let path = dir.join(MANIFEST_FILE);
    host.write_atomic(&path, manifest.to_json().as_bytes(), Some(0o600))
        .await
        .map_err(|e| match e {
            cs_core::HostError::Io { source, .. } => Error::io("write", &path, source),
            other => Error::host(format!("write {}", path.display()), other),
        })?;
    progress.update(
        ProgressUpdate::new("backup", manifest.total_rows(), None, Unit::Rows)
            .message(format!(
                "{} files, {} bytes",
                manifest.files.len(),
                manifest.total_bytes()
            ))
            .finished(),
    );
    Ok(manifest)
}

/// Notes for the kinds of objects MariaDB hides from this account in a schema, so that a
/// backup may lack them without any error: triggers without `TRIGGER`, events without `EVENT`
/// (`information_schema` lists only what the account may see). Privileges are read from
/// `information_schema`'s `USER_PRIVILEGES` and `SCHEMA_PRIVILEGES` (grants to the account
/// and its enabled roles; a schema grant given as a pattern such as `cloud%` matches as the
/// server matches it, with `LIKE`). A failure to read them is a note too.
fn hidden_objects(db: &mut db::Db, user: &str, dbs: &[String]) -> Vec<String> {
    const GRANTEES: &str = "GRANTEE IN (CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \
         '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), ''''), \
         (SELECT CONCAT('''', ROLE_NAME, '''') FROM information_schema.ENABLED_ROLES))";
    let mut notes = Vec::new();
    for d in dbs {
        let sql = format!(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE {GRANTEES} \
             UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
             WHERE {GRANTEES} AND {} LIKE TABLE_SCHEMA",
            literal(d)
        );
        let held = match db.strings("read the account's privileges", &sql) {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|r| r.into_iter().next())
                .collect::<Vec<_>>(),
            Err(e) => {
                notes.push(format!(
                    "privileges of `{user}` not checked: {}",
                    cs_core::error_chain(&e)
                ));
                return notes;
            }
        };
        for (privilege, objects) in [("TRIGGER", "triggers"), ("EVENT", "events")] {
            if !held.iter().any(|p| p.eq_ignore_ascii_case(privilege)) {
                notes.push(format!(
                    "user `{user}` lacks {privilege} on `{d}`: the server hides its {objects} \
                     from it, so any there are missing from this backup (docs/ACCESS.md)"
                ));
            }
        }
    }
    notes
}

/// `CREATE USER` and `GRANT` statements for every account of the given user names, or `None`
/// when there is none.
fn read_grants(db: &mut db::Db, users: &[String], dbs: &[String]) -> Result<Option<String>> {
    if users.is_empty() {
        return Ok(None);
    }
    let list = users
        .iter()
        .map(|u| literal(u))
        .collect::<Vec<_>>()
        .join(",");
    let accounts = db.strings(
        "list accounts in mysql.user",
        &format!("SELECT User, Host FROM mysql.user WHERE User IN ({list}) ORDER BY User, Host"),
    )?;
    if accounts.is_empty() {
        return Ok(None);
    }
    let mut out = format!(
        "-- Accounts and grants recorded by cs-backup for schemas {}.\n\
         -- Not part of the data restore: apply by hand when the accounts are missing.\n",
        dbs.join(", ")
    );
    for a in accounts {
        let account = format!("{}@{}", literal(&a[0]), literal(&a[1]));
        if let Some(create) = db.one(
            &format!("read SHOW CREATE USER {account}"),
            &format!("SHOW CREATE USER {account}"),
        )? {
            let create = create.replacen("CREATE USER", "CREATE USER IF NOT EXISTS", 1);
            out.push_str(&create);
            out.push_str(";\n");
        }
        for g in db.strings(
            &format!("read SHOW GRANTS FOR {account}"),
            &format!("SHOW GRANTS FOR {account}"),
        )? {
            out.push_str(&g[0]);
            out.push_str(";\n");
        }
    }
    Ok(Some(out))
}

/// Runs blocking database work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Interrupted {
            what: format!("a database task ({e})"),
        })?
}

/// Counters shared with worker threads, reported to a [`Progress`] by the async side.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rows: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Set when the caller went away or a worker failed: everyone stops.
    pub(crate) stop: AtomicBool,
}

impl Counters {
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Stops the workers when dropped (the caller's future was dropped, or it finished).
pub(crate) struct StopOnDrop(pub(crate) Arc<Counters>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` on a blocking thread while reporting `counters` to `progress` every 200 ms.
pub(crate) async fn with_progress<T: Send + 'static>(
    task: &str,
    totals: (Option<u64>, Option<u64>),
    counters: Arc<Counters>,
    progress: &dyn Progress,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let _stop = StopOnDrop(counters.clone());
    let mut handle = tokio::task::spawn_blocking(work);
    let report = |finished: bool| {
        let rows = counters.rows.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let mut r = ProgressUpdate::new(format!("{task} rows"), rows, totals.0, Unit::Rows);
        let mut b = ProgressUpdate::new(format!("{task} bytes"), bytes, totals.1, Unit::Bytes);
        if finished {
            r = r.finished();
            b = b.finished();
        }
        progress.update(r);
        progress.update(b);
    };
    let result = loop {
        tokio::select! {
            r = &mut handle => break r,
            () = tokio::time::sleep(Duration::from_millis(200)) => report(false),
        }
    };
    report(true);
    result.map_err(|e| Error::Interrupted {
        what: format!("{task} ({e})"),
    })?
}

pub(crate) fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::invalid(format!("path {} is not UTF-8", p.display())))
}

/// A schema entry from a catalog, with the tables' rows and checksums filled in by the engine.
pub(crate) fn schema_entry(
    name: &str,
    cat: &Catalog,
    tables: Vec<crate::manifest::TableEntry>,
    version: Option<std::collections::BTreeMap<String, Option<String>>>,
    files: crate::manifest::SchemaFiles,
) -> SchemaEntry {
    SchemaEntry {
        name: name.to_string(),
        charset: cat.charset.clone(),
        collation: cat.collation.clone(),
        cloudstack_version: version,
        tables,
        views: cat.views.clone(),
        routines: cat.routines.clone(),
        triggers: cat.triggers.clone(),
        events: cat.events.clone(),
        files,
    }
}

/// `USE` for a schema.
pub(crate) fn use_stmt(schema: &str) -> String {
    format!("USE {};\n", ident(schema))
}
