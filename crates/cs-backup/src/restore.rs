//! Restore: load into scratch schemas, verify against the manifest, swap the tables in with
//! one `RENAME TABLE`, park the replaced ones.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cs_core::{DbUrl, Progress};

use crate::backup::{Counters, blocking, with_progress};
use crate::checksum::{Algorithm, RowSum};
use crate::db::ValueKind;
use crate::db::{self, Catalog, Db, Definition};
use crate::files::open_reader;
use crate::manifest::{Layout, Manifest, SchemaEntry, stamp};
use crate::sql::{
    InsertHead, Splitter, for_each_row, ident, insert_head, literal, rows_to_bulk, rows_to_tsv,
};
use crate::wire;
use crate::{Error, Problem, Result};

/// How a restore treats the live schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RestoreMode {
    /// Load into scratch schemas (`<schema>__restore_<ts>`), verify, then swap every table in
    /// with one `RENAME TABLE` statement; the replaced tables go to a parking schema
    /// (`<schema>__parked_<ts>`, with the replaced views', triggers', routines' and events'
    /// definitions in its `cs_parked_objects` table) until [`drop_parked`] removes it. Views,
    /// triggers, routines and events are replaced right after the rename (they cannot move
    /// between schemas). A failure before the rename leaves the live schemas untouched.
    #[default]
    Swap,
    /// Load into scratch schemas and verify; leave them there (named in the report) and the
    /// live schemas alone.
    ScratchOnly,
    /// The documented drop-and-reload: `DROP DATABASE` the live schemas and load the backup
    /// straight into them, then verify. Destructive: a failure leaves them partly loaded.
    DropAndReload,
}

/// How to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Connections loading in parallel (per-table backups only). Default 4.
    pub threads: usize,
    /// What happens to the live schemas. Default [`RestoreMode::Swap`].
    pub mode: RestoreMode,
    /// Restore a schema under another name (`cloud` → `cloud_copy`); others keep theirs.
    pub rename: BTreeMap<String, String>,
}

cs_core::setters!(RestoreOptions {
    threads: usize,
    mode: RestoreMode,
    rename: BTreeMap<String, String>,
});

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            threads: 4,
            mode: RestoreMode::Swap,
            rename: BTreeMap::new(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// One entry per schema of the backup.
    pub schemas: Vec<RestoredSchema>,
    /// Tables restored and verified.
    pub tables: usize,
    /// Rows restored and verified.
    pub rows: u64,
}

impl RestoreReport {
    /// The parking schemas holding the replaced tables (drop them with [`drop_parked`]).
    pub fn parked(&self) -> Vec<&str> {
        self.schemas
            .iter()
            .filter_map(|s| s.parked.as_deref())
            .collect()
    }
}

/// One restored schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredSchema {
    /// The schema's name in the backup.
    pub source: String,
    /// The live schema it was restored to.
    pub target: String,
    /// The scratch schema it was loaded into: gone after a swap, kept by
    /// [`RestoreMode::ScratchOnly`], `None` for drop-and-reload.
    pub scratch: Option<String>,
    /// The parking schema with the replaced tables (swap only).
    pub parked: Option<String>,
}

/// Restores a local backup (see [`RestoreMode`] for what happens to the live schemas).
///
/// First checks the files against the manifest; then loads (per-table backups on
/// [`RestoreOptions::threads`] connections, single-file ones on one), verifies every table's
/// row count and checksum and the object inventory against the manifest, and only then touches
/// the live schemas.
///
/// # Errors
/// [`Error::Incomplete`]/[`Error::Verify`] for a bad backup (nothing touched), and
/// [`Error::Restore`] naming the stage that failed and whether the live schemas are untouched;
/// its source is the cause ([`Error::Privilege`] for a missing privilege, [`Error::Verify`]
/// for data that differs from the manifest).
///
/// # Examples
///
/// Restores a backup over the live schemas: loaded into scratch schemas and verified first,
/// then swapped in with one `RENAME TABLE`; the replaced tables are dropped once the caller is
/// satisfied (`no_run`: it needs a server; `tests/roundtrip.rs` runs the same code against a
/// real MariaDB):
///
/// ```no_run
/// use cs_backup::{DbUrl, NoProgress, RestoreOptions, drop_parked, restore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = DbUrl::parse("mysql://root:secret@127.0.0.1:3306")?;
/// let dir = std::path::Path::new("/var/backups/cloudstack/before-4.19");
/// let report = restore(dir, &url, &RestoreOptions::default(), &NoProgress).await?;
/// println!("{} tables, {} rows restored and verified", report.tables, report.rows);
/// for parked in report.parked() {
///     println!("replaced tables kept in {parked}");
/// }
/// drop_parked(&url, &report).await?;
/// # Ok(()) }
/// ```
pub async fn restore(
    dir: &Path,
    url: &DbUrl,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    if options.threads == 0 {
        return Err(Error::invalid("threads must be at least 1"));
    }
    let manifest = crate::verify::verify(dir).await?;
    let algorithm = Algorithm::from_name(&manifest.checksum).ok_or_else(|| {
        Error::invalid(format!(
            "unknown checksum algorithm `{}` in the manifest",
            manifest.checksum
        ))
    })?;
    let counters = Arc::new(Counters::default());
    let total_bytes = manifest
        .files
        .iter()
        .filter(|f| !f.path.ends_with(".zst"))
        .map(|f| f.size)
        .sum::<u64>();
    let job = Job {
        deferred: Mutex::new(Vec::new()),
        referenced: std::sync::OnceLock::new(),
        no_local_infile: std::sync::atomic::AtomicBool::new(false),
        algorithm,
        dir: dir.to_path_buf(),
        url: url.clone(),
        options: options.clone(),
        manifest,
        counters: counters.clone(),
        stamp: stamp(),
        confine: std::sync::OnceLock::new(),
    };
    let total_rows = job.manifest.total_rows();
    with_progress(
        "restore",
        (Some(total_rows), (total_bytes > 0).then_some(total_bytes)),
        counters,
        progress,
        move || job.run(),
    )
    .await
}

/// Drops the parking schemas of a swap restore, once the restored data is trusted.
///
/// # Errors
/// Database errors.
pub async fn drop_parked(url: &DbUrl, report: &RestoreReport) -> Result<()> {
    let names: Vec<String> = report.parked().into_iter().map(String::from).collect();
    drop_schemas(url, &names).await
}

/// Another connection whose default schema is one a restore would replace, as
/// `information_schema.PROCESSLIST` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The connection id (`KILL` takes it).
    pub id: u64,
    /// The account's user name.
    pub user: String,
    /// Where it connects from (`host:port`).
    pub host: String,
    /// Its default schema.
    pub schema: String,
}

/// The other connections whose default schema is one of `schemas`: a running management or
/// usage server holds several on `cloud` and `cloud_usage` (its connection pool), so a caller
/// can warn or refuse before a swap or a drop-and-reload. Without the `PROCESS` privilege the
/// server lists only the connecting account's own sessions (MariaDB's `fill_schema_processlist`
/// in `sql/sql_show.cc`), so an empty answer then proves less.
///
/// # Errors
/// [`Error::Connect`] and database errors.
pub async fn sessions_using(url: &DbUrl, schemas: &[String]) -> Result<Vec<Session>> {
    if schemas.is_empty() {
        return Ok(Vec::new());
    }
    let url = url.clone();
    let list = schemas
        .iter()
        .map(|s| literal(s))
        .collect::<Vec<_>>()
        .join(", ");
    blocking(move || {
        let mut db = db::connect_short(&url)?;
        let rows = db.rows(
            "list the sessions on the schemas",
            &format!(
                "SELECT ID, USER, HOST, DB FROM information_schema.PROCESSLIST \
                 WHERE DB IN ({list}) AND ID <> CONNECTION_ID() ORDER BY ID"
            ),
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                Session {
                    id: text(0).parse().unwrap_or(0),
                    user: text(1),
                    host: text(2),
                    schema: text(3),
                }
            })
            .collect())
    })
    .await
}

pub(crate) async fn drop_schemas(url: &DbUrl, names: &[String]) -> Result<()> {
    let url = url.clone();
    let names = names.to_vec();
    blocking(move || {
        let mut db = db::connect(&url)?;
        for n in names {
            db.exec(
                &format!("drop schema `{n}`"),
                &format!("DROP DATABASE IF EXISTS {}", ident(&n)),
            )?;
        }
        Ok(())
    })
    .await
}

/// A name of at most 64 characters: `<base><tag><stamp>`, shortening `base` (with a hash
/// to keep names apart) when needed.
fn derived_name(base: &str, tag: &str, stamp: &str) -> String {
    let full = format!("{base}{tag}{stamp}");
    if full.chars().count() <= 64 {
        return full;
    }
    use sha2::Digest;
    let h = hex::encode(&sha2::Sha256::digest(base.as_bytes())[..3]);
    let keep = 64 - tag.len() - stamp.len() - h.len() - 1;
    let short: String = base.chars().take(keep).collect();
    format!("{short}_{h}{tag}{stamp}")
}

/// Secondary keys left out of `CREATE TABLE` while loading: `(schema, table, ADD clauses)`.
type Deferred = Mutex<Vec<(String, String, Vec<String>)>>;

/// `(table, first column)` pairs that foreign keys reference.
type Referenced = BTreeSet<(String, String)>;

struct Job {
    /// Secondary keys to add once the rows are in (building them by sorting is faster).
    deferred: Deferred,
    /// `(table, first column)` of every key a foreign key of the backup references: those
    /// keys must exist when the referencing table is created, so they are never deferred.
    referenced: std::sync::OnceLock<Referenced>,
    /// Set when the server refuses `LOAD DATA LOCAL`: data files then run as statements.
    no_local_infile: std::sync::atomic::AtomicBool,
    /// The manifest's checksum algorithm, which the restored rows are checked with.
    algorithm: Algorithm,
    dir: PathBuf,
    url: DbUrl,
    options: RestoreOptions,
    manifest: Manifest,
    counters: Arc<Counters>,
    stamp: String,
    /// The schemas statements may name, set once the targets are known.
    confine: std::sync::OnceLock<Confine>,
}

/// The schemas the statements of a restore may name: it loads into `allowed`; `forbidden`
/// holds every other schema of the server and the system schemas. Names are lower-cased, so
/// that a name differing only in case is refused too.
#[derive(Debug, Default)]
pub(crate) struct Confine {
    allowed: BTreeSet<String>,
    forbidden: BTreeSet<String>,
}

impl Confine {
    /// `allowed` plus every schema on the server (and the system ones) as forbidden.
    fn new(db: &mut Db, allowed: impl IntoIterator<Item = String>) -> Result<Confine> {
        let allowed: BTreeSet<String> = allowed.into_iter().map(|s| s.to_lowercase()).collect();
        let mut forbidden: BTreeSet<String> =
            ["mysql", "information_schema", "performance_schema", "sys"]
                .into_iter()
                .map(String::from)
                .collect();
        for row in db.strings(
            "list the schemas",
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA",
        )? {
            if let Some(name) = row.into_iter().next() {
                forbidden.insert(name.to_lowercase());
            }
        }
        forbidden.retain(|s| !allowed.contains(s));
        Ok(Confine { allowed, forbidden })
    }

    /// Refuses a statement that names a schema other than those loaded into: after `USE`,
    /// `DATABASE` or `SCHEMA`, any schema not loaded into; as a qualifier (`` `cloud`.`t` ``),
    /// a schema of the server that is not loaded into (see [`crate::sql::schema_names`]).
    fn check(&self, stmt: &str) -> std::result::Result<(), String> {
        let names = crate::sql::schema_names(stmt.as_bytes());
        for d in &names.databases {
            if !self.allowed.contains(&d.to_lowercase()) {
                return Err(format!(
                    "it names schema `{d}`, which this restore does not load into"
                ));
            }
        }
        for q in &names.qualifiers {
            if self.forbidden.contains(&q.to_lowercase()) {
                return Err(format!(
                    "it names schema `{q}`, which this restore must not touch (only {} are loaded)",
                    self.allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Where one schema goes.
#[derive(Debug, Clone)]
struct Target {
    entry: SchemaEntry,
    live: String,
    /// Where the data is loaded: the scratch schema, or the live one for drop-and-reload.
    load: String,
    parked: String,
}

fn fail(stage: &str, live_untouched: bool) -> impl FnOnce(Error) -> Error + '_ {
    move |e| Error::Restore {
        stage: stage.to_string(),
        live_untouched,
        source: Box::new(e),
    }
}

impl Job {
    /// The schemas to load into, park in and replace, named with `stamp`.
    fn targets(&self, stamp: &str) -> Vec<Target> {
        let reload = self.options.mode == RestoreMode::DropAndReload;
        self.manifest
            .schemas
            .iter()
            .map(|s| {
                let live = self
                    .options
                    .rename
                    .get(&s.name)
                    .cloned()
                    .unwrap_or_else(|| s.name.clone());
                Target {
                    entry: s.clone(),
                    load: if reload {
                        live.clone()
                    } else {
                        derived_name(&live, "__restore_", stamp)
                    },
                    parked: derived_name(&live, "__parked_", stamp),
                    live,
                }
            })
            .collect()
    }

    /// Targets whose scratch and parking schemas do not exist yet: a restore started in the
    /// same second as another (whose schemas are still there) takes the stamp with the next
    /// free `_<n>` suffix instead of loading into, parking in or dropping the other's.
    fn free_targets(&self, db: &mut Db) -> Result<Vec<Target>> {
        if self.options.mode == RestoreMode::DropAndReload {
            return Ok(self.targets(&self.stamp));
        }
        for n in 1..=99 {
            let stamp = if n == 1 {
                self.stamp.clone()
            } else {
                format!("{}_{n}", self.stamp)
            };
            let targets = self.targets(&stamp);
            let mut taken = false;
            for t in &targets {
                taken |= db.schema_exists(&t.load)? || db.schema_exists(&t.parked)?;
            }
            if !taken {
                return Ok(targets);
            }
        }
        Err(Error::invalid(format!(
            "99 restores' schemas named with stamp {} already exist; drop the old ones first",
            self.stamp
        )))
    }

    fn run(self) -> Result<RestoreReport> {
        let reload = self.options.mode == RestoreMode::DropAndReload;
        // Named before connecting, for the system-schema refusal; named for good below.
        let targets = self.targets(&self.stamp);
        if let Some(t) = targets
            .iter()
            .find(|t| crate::manifest::is_system_schema(&t.live))
        {
            return Err(fail("choose the target schemas", true)(Error::invalid(
                format!(
                    "`{}` is a system schema; a backup is never restored into it",
                    t.live
                ),
            )));
        }
        let mut db = db::connect(&self.url).map_err(fail("connect", true))?;
        let targets = self
            .free_targets(&mut db)
            .map_err(fail("choose the scratch schemas' names", true))?;
        let confine = Confine::new(&mut db, targets.iter().map(|t| t.load.clone()))
            .map_err(fail("connect", true))?;
        let _ = self.confine.set(confine);

        if reload {
            for t in &targets {
                db.exec(
                    &format!("drop schema `{}`", t.live),
                    &format!("DROP DATABASE IF EXISTS {}", ident(&t.live)),
                )
                .map_err(fail("drop the live schemas", false))?;
            }
        }
        let stage = "create the scratch schemas";
        for (i, t) in targets.iter().enumerate() {
            let r = db.exec(
                &format!("create schema `{}`", t.load),
                &create_database(&t.load, &t.entry),
            );
            if let Err(e) = r {
                if !reload {
                    // Only the schemas this restore made: one that already existed (made by
                    // another restore since the names were chosen) is not ours to drop.
                    self.cleanup(&mut db, &targets[..i]);
                }
                return Err(fail(stage, !reload)(e));
            }
        }

        let t0 = std::time::Instant::now();
        let loaded = self.load(&targets).and_then(|sums| {
            tracing::debug!(secs = t0.elapsed().as_secs_f64(), "loaded");
            let t1 = std::time::Instant::now();
            let r = self.check(&targets, sums);
            tracing::debug!(secs = t1.elapsed().as_secs_f64(), "verified");
            r
        });
        if let Err(e) = loaded {
            if reload {
                return Err(fail("load and verify the live schemas", false)(e));
            }
            self.cleanup(&mut db, &targets);
            let stage = if e.problems().is_empty() {
                "load into the scratch schemas"
            } else {
                "verify the restored data"
            };
            return Err(fail(stage, true)(e));
        }

        let mut report = RestoreReport {
            schemas: Vec::new(),
            tables: targets.iter().map(|t| t.entry.tables.len()).sum(),
            rows: self.manifest.total_rows(),
        };
        match self.options.mode {
            RestoreMode::Swap => {
                swap(&mut db, &targets)?;
                for t in &targets {
                    report.schemas.push(RestoredSchema {
                        source: t.entry.name.clone(),
                        target: t.live.clone(),
                        scratch: None,
                        parked: Some(t.parked.clone()),
                    });
                }
            }
            RestoreMode::ScratchOnly => {
                for t in &targets {
                    report.schemas.push(RestoredSchema {
                        source: t.entry.name.clone(),
                        target: t.live.clone(),
                        scratch: Some(t.load.clone()),
                        parked: None,
                    });
                }
            }
            RestoreMode::DropAndReload => {
                for t in &targets {
                    report.schemas.push(RestoredSchema {
                        source: t.entry.name.clone(),
                        target: t.live.clone(),
                        scratch: None,
                        parked: None,
                    });
                }
            }
        }
        Ok(report)
    }

    /// The schemas statements may name (nothing before [`Job::run`] set them).
    fn confine(&self) -> &Confine {
        self.confine.get_or_init(Confine::default)
    }

    /// Drops the scratch schemas after a failure (best effort).
    fn cleanup(&self, db: &mut Db, targets: &[Target]) {
        for t in targets {
            if let Err(e) = db.exec(
                "drop a scratch schema",
                &format!("DROP DATABASE IF EXISTS {}", ident(&t.load)),
            ) {
                tracing::warn!(schema = %t.load, error = %cs_core::error_chain(&e), "could not drop scratch schema");
            }
        }
    }

    fn map(&self, targets: &[Target]) -> BTreeMap<String, String> {
        targets
            .iter()
            .map(|t| (t.entry.name.clone(), t.load.clone()))
            .collect()
    }

    /// Loads the backup into the load schemas. For per-table backups, also checksums every
    /// table as soon as its rows are in (see [`Job::pipeline`]) and returns the sums, keyed
    /// `schema.table` by backup names; `None` leaves the checksums to [`Job::check`].
    fn load(&self, targets: &[Target]) -> Result<Option<BTreeMap<String, RowSum>>> {
        let map = self.map(targets);
        match self.manifest.layout {
            Layout::SingleFile => {
                // Statements of backup files go over the streaming client where the server
                // allows it: it does not ask for multi-statement support, so one call is one
                // statement.
                let mut db = db::connect_streaming(&self.url)?;
                for f in self
                    .manifest
                    .files
                    .iter()
                    .filter(|f| f.path.starts_with("dump"))
                {
                    run_file(
                        &mut db,
                        &self.dir,
                        &f.path,
                        &map,
                        self.confine(),
                        &self.counters,
                        None,
                    )?;
                }
                Ok(None)
            }
            Layout::PerTable => {
                let ddl: Vec<(String, Option<LoadTarget>)> = targets
                    .iter()
                    .flat_map(|t| &t.entry.tables)
                    .filter_map(|table| table.files.first().map(|f| (f.clone(), None)))
                    .collect();
                let mut referenced = Referenced::new();
                let mut sequences = Vec::new();
                for (f, _) in &ddl {
                    let path = self.dir.join(f);
                    let mut text = String::new();
                    open_reader(&path)?
                        .read_to_string(&mut text)
                        .map_err(|e| Error::io("read", &path, e))?;
                    fk_references(&text, &mut referenced);
                    if text.contains("\nCREATE SEQUENCE ") {
                        sequences.push(f.clone());
                    }
                }
                let _ = self.referenced.set(referenced);
                let t = std::time::Instant::now();
                // Sequences first: a table's default may call `NEXTVAL` of one, and a table
                // is only created once the sequences it names exist.
                let ddl: Vec<(String, Option<LoadTarget>)> = ddl
                    .into_iter()
                    .filter(|(f, _)| !sequences.contains(f))
                    .collect();
                self.parallel(sequences.into_iter().map(|f| (f, None)).collect(), &map)?;
                self.parallel(ddl, &map)?;
                tracing::debug!(secs = t.elapsed().as_secs_f64(), "tables created");
                let mut db = db::connect_streaming(&self.url)?;
                let mut cats: BTreeMap<String, Catalog> = BTreeMap::new();
                for t in targets {
                    let cat = db::catalog(&mut db, &t.load)?;
                    analyze_empty(&mut db, &t.load, &cat);
                    cats.insert(t.load.clone(), cat);
                }
                let t = std::time::Instant::now();
                let sums = self.pipeline(targets, &cats, &map)?;
                tracing::debug!(
                    secs = t.elapsed().as_secs_f64(),
                    "rows loaded, keys added, checksums taken"
                );
                for t in targets {
                    if let Some(v) = &t.entry.files.views {
                        run_file(
                            &mut db,
                            &self.dir,
                            v,
                            &map,
                            self.confine(),
                            &self.counters,
                            None,
                        )?;
                    }
                }
                for t in targets {
                    if let Some(r) = &t.entry.files.routines {
                        run_file(
                            &mut db,
                            &self.dir,
                            r,
                            &map,
                            self.confine(),
                            &self.counters,
                            None,
                        )?;
                    }
                }
                Ok(Some(sums))
            }
        }
    }

    /// Loads every table's data files, then adds its deferred keys and checksums it, all as
    /// tasks of one queue on [`RestoreOptions::threads`] connections: a table's keys and
    /// checksums start the moment its last part is in, while other tables still load, so no
    /// connection idles at a stage boundary. Tables load heaviest first (data plus keys to
    /// build), so that the long single-statement key builds do not end up last.
    ///
    /// The parts of one table load one after the other on one connection, in file order,
    /// which is key order: every row then goes to the right end of the primary key, where
    /// InnoDB fills pages completely. Parts loaded in parallel, or out of order, insert in
    /// the middle of the key, split pages half-full and (on MariaDB 10.6+, where the first
    /// load into an empty table locks it for a bulk insert) wait for each other; a part took
    /// three to four times as long that way.
    fn pipeline(
        &self,
        targets: &[Target],
        cats: &BTreeMap<String, Catalog>,
        map: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, RowSum>> {
        let mut deferred: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (schema, table, keys) in
            std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()))
        {
            deferred.entry((schema, table)).or_default().extend(keys);
        }
        let size = |p: &String| self.manifest.file(p).map_or(0, |f| f.size);
        let mut tables = Vec::new();
        let mut order = Vec::new();
        for t in targets {
            for te in &t.entry.tables {
                let Some(table) = cats.get(&t.load).and_then(|c| c.table(&te.name)) else {
                    // Reported as missing by the check.
                    continue;
                };
                let files: Vec<&String> = te.files.iter().skip(1).collect();
                let keys = deferred
                    .remove(&(t.load.clone(), te.name.clone()))
                    .unwrap_or_default();
                let bytes: u64 = files.iter().map(|f| size(f)).sum();
                let weight = bytes.saturating_mul(2 + keys.len() as u64);
                order.push((weight, tables.len(), files));
                tables.push(TableTask {
                    schema: t.load.clone(),
                    key: format!("{}.{}", t.entry.name, te.name),
                    table: table.clone(),
                    rows: te.rows,
                    keys,
                });
            }
        }
        // Keys of tables the manifest does not list (there should be none) still get built.
        let orphans: Vec<(String, String, Vec<String>)> = deferred
            .into_iter()
            .map(|((schema, table), keys)| (schema, table, keys))
            .collect();
        order.sort_by_key(|(weight, i, _)| (std::cmp::Reverse(*weight), *i));
        let mut queue = VecDeque::new();
        for (_, i, files) in order {
            if files.is_empty() {
                queue.extend(table_done(i, &tables[i]));
                continue;
            }
            let files: Vec<String> = files.into_iter().cloned().collect();
            queue.push_back(Task::Load { files, table: i });
        }
        queue.extend(orphans.into_iter().map(|(schema, table, keys)| Task::Keys {
            schema,
            table,
            keys,
        }));

        let tables = Mutex::new(tables);
        let sums: Mutex<BTreeMap<String, RowSum>> = Mutex::new(BTreeMap::new());
        let threads = self.options.threads;
        run_queue(
            &self.url,
            threads,
            queue,
            Some(&self.counters.stop),
            |db, task| match task {
                Task::Load { files, table } => {
                    let target = {
                        let tables = lock(&tables);
                        LoadTarget {
                            schema: tables[table].schema.clone(),
                            table: tables[table].table.clone(),
                        }
                    };
                    for file in &files {
                        let t = std::time::Instant::now();
                        self.load_file(db, file, Some(&target), map)?;
                        tracing::debug!(secs = t.elapsed().as_secs_f64(), file, "loaded");
                    }
                    let done = lock(&tables)[table].clone();
                    let mut next = table_done(table, &done);
                    // Split big tables so that their checksums spread over the connections.
                    if let Some(Task::Sum { .. }) = next.last() {
                        next.pop();
                        for filter in
                            checksum_parts(db, &done.schema, &done.table, done.rows, threads)?
                        {
                            next.push(Task::Sum { table, filter });
                        }
                    }
                    Ok(next)
                }
                Task::Keys {
                    schema,
                    table,
                    keys,
                } => {
                    let t = std::time::Instant::now();
                    let sql = format!(
                        "ALTER TABLE {}.{} {}",
                        ident(&schema),
                        ident(&table),
                        keys.join(", ")
                    );
                    db.exec(&format!("add the keys of `{table}`"), &sql)?;
                    tracing::debug!(secs = t.elapsed().as_secs_f64(), table, "keys added");
                    Ok(Vec::new())
                }
                Task::Sum { table, filter } => {
                    let (schema, key, def) = {
                        let tables = lock(&tables);
                        let t = &tables[table];
                        (t.schema.clone(), t.key.clone(), t.table.clone())
                    };
                    let t = std::time::Instant::now();
                    let sum =
                        db::table_checksum(db, &schema, &def, filter.as_deref(), self.algorithm)?;
                    tracing::debug!(secs = t.elapsed().as_secs_f64(), key, "checksummed");
                    lock(&sums)
                        .entry(key)
                        .or_insert_with(|| RowSum::new(self.algorithm))
                        .merge(&sum);
                    Ok(Vec::new())
                }
            },
        )?;
        if self.counters.stopped() {
            return Err(Error::Interrupted {
                what: "the restore".into(),
            });
        }
        Ok(sums.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    fn parallel(
        &self,
        files: Vec<(String, Option<LoadTarget>)>,
        map: &BTreeMap<String, String>,
    ) -> Result<()> {
        on_connections(
            &self.url,
            self.options.threads,
            files,
            Some(&self.counters.stop),
            |db, (f, target)| self.load_file(db, &f, target.as_ref(), map),
        )?;
        if self.counters.stopped() {
            return Err(Error::Interrupted {
                what: "the restore".into(),
            });
        }
        Ok(())
    }

    /// Runs one file: a data file with a target as a bulk insert where the connection can
    /// (MariaDB), else through `LOAD DATA LOCAL` while the server allows it; anything else
    /// statement by statement (deferring the secondary keys of the tables that DDL files
    /// create).
    fn load_file(
        &self,
        db: &mut Db,
        file: &str,
        target: Option<&LoadTarget>,
        map: &BTreeMap<String, String>,
    ) -> Result<()> {
        if let Some(t) = target
            && load_bulk(db, &self.dir, file, t, &self.counters)?
        {
            return Ok(());
        }
        if let Some(t) = target
            && !self.no_local_infile.load(Ordering::Relaxed)
        {
            if load_data(db, &self.dir, file, t, &self.counters)? {
                return Ok(());
            }
            // Only a refusal of `LOCAL` switches the remaining files to statements.
            self.no_local_infile.store(true, Ordering::Relaxed);
        }
        let referenced = self.referenced.get_or_init(Referenced::new);
        let defer = target.is_none().then_some((&self.deferred, referenced));
        run_file(
            db,
            &self.dir,
            file,
            map,
            self.confine(),
            &self.counters,
            defer,
        )
    }

    /// Compares the loaded schemas with the manifest: tables (rows and checksums, computed on
    /// parallel connections unless `sums` already has them) and the object inventory.
    fn check(&self, targets: &[Target], sums: Option<BTreeMap<String, RowSum>>) -> Result<()> {
        let mut db = db::connect(&self.url)?;
        let mut problems = Vec::new();
        let mut work: Vec<(String, db::Table, Option<String>, String, u64)> = Vec::new();
        let mut expected: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for t in targets {
            let cat = db::catalog(&mut db, &t.load)?;
            inventory_problems(&t.entry, &cat, &mut problems);
            for te in &t.entry.tables {
                let key = format!("{}.{}", t.entry.name, te.name);
                let Some(table) = cat.table(&te.name) else {
                    problems.push(Problem::new(&key, "missing after the restore"));
                    continue;
                };
                expected.insert(key.clone(), (te.rows, te.checksum.clone()));
                if sums.is_some() {
                    continue;
                }
                let filters =
                    checksum_parts(&mut db, &t.load, table, te.rows, self.options.threads)?;
                let share = te.rows / filters.len() as u64;
                for f in filters {
                    work.push((t.load.clone(), table.clone(), f, key.clone(), share));
                }
            }
        }
        drop(db);
        work.sort_by_key(|w| std::cmp::Reverse(w.4));
        let sums: Mutex<BTreeMap<String, RowSum>> = Mutex::new(sums.unwrap_or_default());
        on_connections(
            &self.url,
            self.options.threads,
            work,
            None,
            |db, (schema, table, filter, key, _)| {
                let sum =
                    db::table_checksum(db, &schema, &table, filter.as_deref(), self.algorithm)?;
                lock(&sums)
                    .entry(key)
                    .or_insert_with(|| RowSum::new(self.algorithm))
                    .merge(&sum);
                Ok(())
            },
        )?;
        let sums = sums.into_inner().unwrap_or_else(|p| p.into_inner());
        for (key, (rows, checksum)) in expected {
            let got = sums
                .get(&key)
                .copied()
                .unwrap_or(RowSum::new(self.algorithm));
            if got.rows() != rows {
                problems.push(Problem::new(
                    &key,
                    format!("{} rows restored, the manifest says {rows}", got.rows()),
                ));
            } else if got.hex() != checksum {
                problems.push(Problem::new(
                    &key,
                    "checksum of the restored rows differs from the manifest",
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Verify {
                dir: self.dir.clone(),
                problems,
            })
        }
    }
}

/// `WHERE` clauses splitting a big table with an integer key into about `threads * 2` ranges
/// for checksumming in parallel; `[None]` for the whole table.
fn checksum_parts(
    db: &mut Db,
    schema: &str,
    table: &db::Table,
    rows: u64,
    threads: usize,
) -> Result<Vec<Option<String>>> {
    let Some(key) = table.int_key() else {
        return Ok(vec![None]);
    };
    if rows < 200_000 || threads < 2 {
        return Ok(vec![None]);
    }
    let k = ident(&key.name);
    let r = db.rows(
        "find the key range of a table",
        &format!(
            "SELECT MIN({k}), MAX({k}) FROM {}.{}",
            ident(schema),
            ident(&table.name)
        ),
    )?;
    let parse = |i: usize| {
        r.first()
            .and_then(|row| row[i].as_deref())
            .and_then(|v| v.parse::<i128>().ok())
    };
    let (Some(lo), Some(hi)) = (parse(0), parse(1)) else {
        return Ok(vec![None]);
    };
    let n = (threads * 2) as i128;
    let step = ((hi - lo + 1) / n).max(1);
    let mut out = Vec::new();
    let mut a: Option<i128> = None;
    for i in 1..n {
        let b = lo + i * step;
        if b > hi {
            break;
        }
        out.push(Some(match a {
            None => format!("{k} < {b}"),
            Some(a) => format!("{k} >= {a} AND {k} < {b}"),
        }));
        a = Some(b);
    }
    out.push(a.map(|a| format!("{k} >= {a}")));
    Ok(out)
}

fn inventory_problems(entry: &SchemaEntry, cat: &Catalog, problems: &mut Vec<Problem>) {
    let mut compare = |what: &str, want: BTreeSet<String>, got: BTreeSet<String>| {
        for m in want.difference(&got) {
            problems.push(Problem::new(
                format!("{}.{m}", entry.name),
                format!("{what} missing after the restore"),
            ));
        }
        for x in got.difference(&want) {
            problems.push(Problem::new(
                format!("{}.{x}", entry.name),
                format!("{what} not in the manifest"),
            ));
        }
    };
    compare(
        "table",
        entry.tables.iter().map(|t| t.name.clone()).collect(),
        cat.tables.iter().map(|t| t.name.clone()).collect(),
    );
    compare(
        "view",
        entry.views.iter().cloned().collect(),
        cat.views.iter().cloned().collect(),
    );
    compare(
        "routine",
        entry
            .routines
            .iter()
            .map(|r| format!("{} {}", r.kind, r.name))
            .collect(),
        cat.routines
            .iter()
            .map(|r| format!("{} {}", r.kind, r.name))
            .collect(),
    );
    compare(
        "trigger",
        entry.triggers.iter().map(|t| t.name.clone()).collect(),
        cat.triggers.iter().map(|t| t.name.clone()).collect(),
    );
    compare(
        "event",
        entry.events.iter().cloned().collect(),
        cat.events.iter().cloned().collect(),
    );
}

/// The restore's own readings of a dump statement, for [`crate::fuzz::dump_reader`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_statement(stmt: &[u8]) {
    let _ = names_schema(stmt);
    let Ok(text) = std::str::from_utf8(stmt) else {
        return;
    };
    let map = BTreeMap::from([("cloud".to_string(), "cloud__restore_1".to_string())]);
    let _ = sequences_in(text, &map);
    let referenced: Referenced = [("t".to_string(), "id".to_string())].into();
    let _ = split_keys(text, &referenced);
}

/// Whether a statement names schemas (`USE`, `CREATE DATABASE`, `ALTER DATABASE`), so that
/// backup names must be mapped to load names.
fn names_schema(stmt: &[u8]) -> bool {
    let head = &stmt[..stmt.len().min(200)];
    let upper = String::from_utf8_lossy(head).to_ascii_uppercase();
    let upper = upper.trim_start();
    upper.starts_with("USE ")
        || upper.starts_with("USE`")
        || upper.contains("CREATE DATABASE")
        || upper.contains("ALTER DATABASE")
        || upper.contains("DROP DATABASE")
}

/// A `CREATE TABLE` whose column defaults call `NEXTVAL` of sequences of the backup's schemas
/// (the server shows them qualified: `` nextval(`cloud`.`s`) ``), calling those of the schemas
/// it loads into instead: the server only creates the table once the sequence exists, and the
/// restored one is in the scratch schema. [`swap`] points them back at the live names.
fn sequences_in(text: &str, map: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (from, to) in map {
        out = out.replace(
            &format!("nextval({}.", ident(from)),
            &format!("nextval({}.", ident(to)),
        );
    }
    out
}

/// Points column defaults that call `NEXTVAL` of a scratch schema's sequence, in tables just
/// renamed into `live`, at the live schema's sequence of the same name (see [`sequences_in`]).
fn sequence_defaults_to_live(db: &mut Db, load: &str, live: &str) -> Result<()> {
    let what = format!("point sequence defaults of `{live}` at its own sequences");
    let rows = db.strings(
        &what,
        &format!(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_DEFAULT FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = {} AND COLUMN_DEFAULT LIKE {}",
            literal(live),
            literal(&format!(
                "%nextval({}.%",
                ident(load).replace('%', "\\%").replace('_', "\\_")
            ))
        ),
    )?;
    for r in rows {
        let default = r[2].replace(
            &format!("nextval({}.", ident(load)),
            &format!("nextval({}.", ident(live)),
        );
        db.exec(
            &what,
            &format!(
                "ALTER TABLE {}.{} ALTER COLUMN {} SET DEFAULT {default}",
                ident(live),
                ident(&r[0]),
                ident(&r[1])
            ),
        )?;
    }
    Ok(())
}

/// Whether a statement is mariadb-dump's `LOCK TABLES … WRITE` or `UNLOCK TABLES` around a
/// table's rows. The restore skips them: nobody else uses the scratch schemas, and a locked
/// session cannot read tables it did not lock, such as the sequence a column's default calls
/// `NEXTVAL` of (MariaDB refuses the `INSERT` with error 1100).
fn is_table_lock(stmt: &[u8]) -> bool {
    let head = &stmt[..stmt.len().min(16)];
    let upper = String::from_utf8_lossy(head).to_ascii_uppercase();
    let upper = upper.trim_start();
    upper.starts_with("LOCK TABLES ") || upper.starts_with("UNLOCK TABLES")
}

/// Counts the rows of an `INSERT` (approximately: `),(` inside strings count too; only for
/// progress).
fn approx_rows(stmt: &[u8]) -> u64 {
    if stmt.len() < 6 || !stmt[..6].eq_ignore_ascii_case(b"INSERT") {
        return 0;
    }
    1 + stmt.windows(3).filter(|w| w == b"),(").count() as u64
}

/// The session every restored file starts in, as the stock client would start a dump file:
/// UTF-8, UTC, zero kept as a value in `AUTO_INCREMENT` columns, and no per-row foreign-key
/// or uniqueness lookups (the data was consistent when it was dumped).
const LOAD_SESSION: &str = "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO', foreign_key_checks = 0, unique_checks = 0";

/// Starts loading rows into `table`: [`LOAD_SESSION`], and for a system-versioned table
/// `system_versioning_insert_history` (MariaDB 10.11+), so that its rows keep their
/// `row_start` and `row_end`.
fn load_session(db: &mut Db, table: &db::Table) -> Result<()> {
    db.exec("reset the session", LOAD_SESSION)?;
    if table.kind == db::TableKind::Versioned {
        db.exec(
            "allow loading the history of a system-versioned table",
            "SET @@session.system_versioning_insert_history = 1",
        )?;
    }
    Ok(())
}

/// Runs every statement of a dump file on one connection, mapping schema names.
pub(crate) fn run_file(
    db: &mut Db,
    dir: &Path,
    rel: &str,
    map: &BTreeMap<String, String>,
    confine: &Confine,
    counters: &Counters,
    defer: Option<(&Deferred, &Referenced)>,
) -> Result<()> {
    let path = dir.join(rel);
    let mut current: Option<String> = None;
    let reader = open_reader(&path)?;
    let mut split = Splitter::new(reader);
    let mut n = 0u64;
    // Each file runs in a fresh session state as the stock client would start it.
    db.exec("reset the session", LOAD_SESSION)?;
    while let Some(stmt) = split
        .next_statement()
        .map_err(|e| Error::io("read", &path, e))?
    {
        n += 1;
        if counters.stopped() {
            return Err(Error::Interrupted {
                what: "the restore".into(),
            });
        }
        let mut text = String::from_utf8(stmt.text).map_err(|_| Error::Parse {
            file: rel.to_string(),
            reason: format!("statement {n} (line {}) is not UTF-8", stmt.line),
        })?;
        if text.starts_with("CREATE TABLE") && text.contains("nextval(`") {
            text = sequences_in(&text, map);
        }
        if names_schema(text.as_bytes()) {
            for (from, to) in map {
                text = text.replace(&ident(from), &ident(to));
            }
            if let Some(db) = crate::sql::use_target(text.as_bytes()) {
                current = Some(db);
            }
        }
        // Names of the backup's schemas that qualify others (a view of one schema on a table
        // of another) go to their load schemas too, like the `USE` above.
        let quals = crate::sql::schema_names(text.as_bytes()).qualifiers;
        for (from, to) in map {
            if from != to && quals.iter().any(|q| q == from) {
                text = text.replace(&format!("{}.", ident(from)), &format!("{}.", ident(to)));
            }
        }
        confine
            .check(&text)
            .map_err(|reason| Error::UnsafeStatement {
                file: rel.to_string(),
                statement: n,
                line: stmt.line,
                reason,
            })?;
        if let (Some((defer, referenced)), Some(db)) = (defer, &current)
            && let Some((create, table, keys)) = split_keys(&text, referenced)
        {
            text = create;
            if let Ok(mut d) = defer.lock() {
                d.push((db.clone(), table, keys));
            }
        }
        if is_table_lock(text.as_bytes()) {
            continue;
        }
        let rows = approx_rows(text.as_bytes());
        db.exec(
            &format!("run statement {n} (line {}) of {rel}", stmt.line),
            &text,
        )?;
        counters.rows.fetch_add(rows, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// The classes a server sorts a table's keys into: within one, keys stay in the order they
/// were created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KeyClass {
    /// `PRIMARY KEY`, `UNIQUE KEY`.
    Unique,
    /// `KEY`, `SPATIAL KEY`.
    Plain,
    /// `FULLTEXT KEY`.
    FullText,
}

impl KeyClass {
    /// The class of a key line of `SHOW CREATE TABLE`; `None` for other lines.
    fn of(line: &str) -> Option<KeyClass> {
        if line.starts_with("PRIMARY KEY ") || line.starts_with("UNIQUE KEY `") {
            Some(KeyClass::Unique)
        } else if line.starts_with("KEY `") || line.starts_with("SPATIAL KEY `") {
            Some(KeyClass::Plain)
        } else if line.starts_with("FULLTEXT KEY `") {
            Some(KeyClass::FullText)
        } else {
            None
        }
    }
}

/// Splits the secondary keys out of a `SHOW CREATE TABLE` statement: returns the statement
/// without them, the table, and `ADD [UNIQUE] KEY …` clauses. Plain and unique keys are split
/// out (an index built by sorting once the rows are in costs a fraction of one maintained row
/// by row, and a unique key then needs no random reads while loading); a key stays when its
/// first column starts a foreign key of the table or is referenced by one (in `referenced`:
/// InnoDB needs those keys when the constraint is created), or is the `AUTO_INCREMENT`
/// column (which must be indexed), as do full-text and spatial keys; and so does every key
/// before a staying key of its [`KeyClass`], so that the restored table lists its keys in the
/// backup's order. `None` when there is nothing to split or the statement is not a plain
/// `CREATE TABLE`.
fn split_keys(stmt: &str, referenced: &Referenced) -> Option<(String, String, Vec<String>)> {
    let head = stmt.lines().next()?;
    let rest = head.strip_prefix("CREATE TABLE `")?;
    let table = rest.strip_suffix("` (")?.replace("``", "`");
    let lines: Vec<&str> = stmt.lines().collect();
    let first_col = |l: &str| -> Option<String> {
        let open = l.find("(`")?;
        let rest = &l[open + 2..];
        Some(rest[..rest.find('`')?].to_string())
    };
    let fk_first: Vec<String> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("CONSTRAINT") && l.contains("FOREIGN KEY (`"))
        .filter_map(|l| {
            let at = l.find("FOREIGN KEY (")?;
            first_col(&l[at..])
        })
        .collect();
    let auto_increment: Option<String> = lines.iter().find_map(|l| {
        let t = l.trim_start().strip_prefix('`')?;
        let name = &t[..t.find('`')?];
        t.contains(" AUTO_INCREMENT").then(|| name.to_string())
    });
    // Which lines could be added after the rows, and the class of every key line.
    let mut deferrable = vec![false; lines.len()];
    let mut class: Vec<Option<KeyClass>> = vec![None; lines.len()];
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        class[i] = KeyClass::of(t);
        let kind = t.starts_with("KEY `") || t.starts_with("UNIQUE KEY `");
        deferrable[i] = kind
            && i > 0
            && i + 1 < lines.len()
            // A unique key on a BLOB/TEXT prefix-less column is a hash key, which the server
            // orders by its own rule: left in place.
            && !t.contains(" USING HASH")
            && first_col(t).is_some_and(|c| {
                !fk_first.contains(&c)
                    && auto_increment.as_ref() != Some(&c)
                    && !referenced.contains(&(table.clone(), c))
            });
    }
    // The restored definition must list the keys in the order of the backup. The server
    // keeps its keys sorted by class (unique before plain before full-text) and, within a
    // class, in the order they were created, with keys added by `ALTER TABLE` after those
    // already there (MariaDB's `sql/sql_table.cc`, `sort_keys` in
    // `mysql_prepare_create_table`). So a key is added after the rows only when no key of
    // its class that stays in `CREATE TABLE` comes after it: per class, a suffix.
    let mut kept_after: BTreeSet<KeyClass> = BTreeSet::new();
    for i in (0..lines.len()).rev() {
        let Some(c) = class[i] else { continue };
        if deferrable[i] && !kept_after.contains(&c) {
            continue;
        }
        deferrable[i] = false;
        kept_after.insert(c);
    }
    let mut keep: Vec<String> = Vec::new();
    let mut keys = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if deferrable[i] {
            let t = l.trim_start();
            keys.push(format!("ADD {}", t.trim_end().trim_end_matches(',')));
        } else {
            keep.push((*l).to_string());
        }
    }
    if keys.is_empty() {
        return None;
    }
    // The line before the closing `)` must not end with a comma any more.
    let close = keep.iter().rposition(|l| l.starts_with(')'))?;
    if close > 0 {
        let prev = &mut keep[close - 1];
        if prev.ends_with(',') {
            prev.pop();
        }
    }
    Some((keep.join("\n"), table, keys))
}

/// Adds the `(table, first column)` that each foreign key in `SHOW CREATE TABLE` text
/// references (`REFERENCES [`schema`.]`table` (`column`, …)`).
fn fk_references(text: &str, out: &mut Referenced) {
    let ident = |s: &str| -> Option<(String, usize)> {
        crate::sql::backquoted(s).map(|(name, rest)| (name, s.len() - rest.len()))
    };
    for line in text.lines() {
        let Some(at) = line.find(" REFERENCES `") else {
            continue;
        };
        if !line.contains("FOREIGN KEY") {
            continue;
        }
        let rest = &line[at + " REFERENCES ".len()..];
        let Some((mut table, mut used)) = ident(rest) else {
            continue;
        };
        if rest[used..].starts_with('.')
            && let Some((t, u)) = ident(&rest[used + 1..])
        {
            table = t;
            used += 1 + u;
        }
        if let Some((column, _)) = rest[used..].trim_start().strip_prefix('(').and_then(ident) {
            out.insert((table, column));
        }
    }
}

/// Records statistics for freshly created, still empty tables. InnoDB keeps recomputing the
/// statistics of a table that has none in the background while rows stream in, which on
/// MariaDB 10.11 costs about as much server CPU as the load itself; `ANALYZE TABLE` on an empty
/// table is instant and stops that. Failures only cost speed, so they are logged, not returned.
fn analyze_empty(db: &mut Db, schema: &str, cat: &Catalog) {
    for chunk in cat.tables.chunks(100) {
        let list = chunk
            .iter()
            .map(|t| format!("{}.{}", ident(schema), ident(&t.name)))
            .collect::<Vec<_>>()
            .join(", ");
        if let Err(e) = db.exec("analyze the empty tables", &format!("ANALYZE TABLE {list}")) {
            tracing::debug!(schema, error = %cs_core::error_chain(&e), "ANALYZE TABLE failed");
        }
    }
}

/// The table a data file loads into.
#[derive(Debug, Clone)]
struct LoadTarget {
    schema: String,
    table: db::Table,
}

/// Loads a native data file with `COM_STMT_BULK_EXECUTE` (MariaDB): its `INSERT` rows go to
/// the server as the bytes to store, in a few large commands of one transaction, so the
/// server neither parses SQL nor scans `LOAD DATA` text byte by byte (a tenth of a restore's
/// server CPU). Returns `Ok(false)`, with nothing loaded, when the connection cannot (the
/// streaming client is not in use, the server lacks bulk commands, or a statement holds more
/// than the server takes in one command); the caller then uses [`load_data`].
fn load_bulk(
    db: &mut Db,
    dir: &Path,
    rel: &str,
    target: &LoadTarget,
    counters: &Counters,
) -> Result<bool> {
    let path = dir.join(rel);
    let stored: Vec<&db::Column> = target.table.stored().collect();
    if stored.is_empty() {
        return Ok(false);
    }
    let names: Vec<String> = stored.iter().map(|c| c.name.clone()).collect();
    let hex: Vec<bool> = stored
        .iter()
        .map(|c| c.kind() == ValueKind::Binary)
        .collect();
    // As in `load_data`: values go as bytes into tables that store UTF-8 (and into binary
    // columns); other character sets, and types that take bytes as their packed form, need
    // the text from the connection's utf8mb4.
    let utf8_only = target.table.bytes_load_ok();
    let types: Vec<u8> = hex
        .iter()
        .map(|&h| {
            if h || utf8_only {
                wire::PARAM_BYTES
            } else {
                wire::PARAM_TEXT
            }
        })
        .collect();
    let sql = format!(
        "INSERT INTO {}.{} ({}) VALUES ({})",
        ident(&target.schema),
        ident(&target.table.name),
        names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(","),
        vec!["?"; names.len()].join(",")
    );
    load_session(db, &target.table)?;
    let Some(mut bulk) = db.bulk_insert(&format!("load {rel}"), &sql, &types)? else {
        return Ok(false);
    };
    let mut fits = true;
    each_insert(&path, rel, &names, counters, |body, head, perr| {
        let added = bulk.add(|out| {
            let before = out.len();
            if let Some(rows) = rows_to_bulk(body, head, &hex, out) {
                return Ok((rows, out.len() - before));
            }
            let mut bad = false;
            let rows = for_each_row(body, head, |vals| {
                bad |= vals.len() != hex.len();
                for v in vals {
                    wire::bulk_value(out, *v);
                }
            })
            .map_err(&perr)?;
            if bad {
                return Err(perr("a row has the wrong number of values".into()));
            }
            Ok((rows, out.len() - before))
        })?;
        match added {
            Some((rows, bytes)) => Ok(Some((rows, bytes as u64))),
            None => {
                fits = false;
                Ok(None)
            }
        }
    })?;
    if !fits {
        tracing::debug!(file = rel, "a statement is too big for one bulk command");
        bulk.rollback()?;
        return Ok(false);
    }
    bulk.commit()?;
    Ok(true)
}

/// Loads a native data file with `LOAD DATA LOCAL INFILE`, converting its `INSERT` rows to
/// tab-separated text on the way (binary columns stay hex and go through `UNHEX`). Returns
/// `Ok(false)` when the server does not allow `LOCAL` (the caller then runs the statements).
fn load_data(
    db: &mut Db,
    dir: &Path,
    rel: &str,
    target: &LoadTarget,
    counters: &Arc<Counters>,
) -> Result<bool> {
    let path = dir.join(rel);
    let stored: Vec<&db::Column> = target.table.stored().collect();
    let names: Vec<String> = stored.iter().map(|c| c.name.clone()).collect();
    let hex: Vec<bool> = stored
        .iter()
        .map(|c| c.kind() == ValueKind::Binary)
        .collect();
    let mut cols = Vec::new();
    let mut sets = Vec::new();
    for (i, c) in stored.iter().enumerate() {
        if hex[i] {
            cols.push(format!("@v{i}"));
            sets.push(format!("{} = UNHEX(@v{i})", ident(&c.name)));
        } else {
            cols.push(ident(&c.name));
        }
    }
    // The text is UTF-8 (the dump connection's utf8mb4). Into columns that store UTF-8 it can
    // go as bytes: the server then only checks them instead of converting every value from
    // utf8mb4, which is about a tenth of the load's CPU. Other character sets need the
    // conversion.
    let utf8_only = target.table.bytes_load_ok();
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'cs-backup' INTO TABLE {}.{} CHARACTER SET {} \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({}){}",
        ident(&target.schema),
        ident(&target.table.name),
        if utf8_only { "binary" } else { "utf8mb4" },
        cols.join(","),
        if sets.is_empty() {
            String::new()
        } else {
            format!(" SET {}", sets.join(", "))
        }
    );
    load_session(db, &target.table)?;
    let counters = counters.clone();
    let rel_owned = rel.to_string();
    let loaded = db.load_local(&format!("load {rel}"), &sql, move |w| {
        stream_tsv(&path, &rel_owned, &names, &hex, &counters, w)
    })?;
    if !loaded {
        tracing::info!("the server refuses LOAD DATA LOCAL; loading with INSERT statements");
    }
    Ok(loaded)
}

/// Writes the rows of a native data file as `LOAD DATA` text.
fn stream_tsv(
    path: &Path,
    rel: &str,
    names: &[String],
    hex: &[bool],
    counters: &Counters,
    w: &mut dyn std::io::Write,
) -> Result<()> {
    let mut line: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut out: Vec<u8> = Vec::with_capacity(1 << 21);
    each_insert(path, rel, names, counters, |body, head, perr| {
        out.clear();
        let rows = match rows_to_tsv(body, head, hex, &mut out) {
            Some(rows) => rows,
            None => {
                let mut bad = false;
                let rows = for_each_row(body, head, |vals| {
                    if vals.len() != names.len() {
                        bad = true;
                        return;
                    }
                    line.clear();
                    for (i, v) in vals.iter().enumerate() {
                        if i > 0 {
                            line.push(b'\t');
                        }
                        match v {
                            None => line.extend_from_slice(b"\\N"),
                            Some(b) if hex[i] => {
                                line.extend_from_slice(hex::encode_upper(b).as_bytes())
                            }
                            Some(b) => push_tsv(&mut line, b),
                        }
                    }
                    line.push(b'\n');
                    out.extend_from_slice(&line);
                })
                .map_err(&perr)?;
                if bad {
                    return Err(perr("a row has the wrong number of values".into()));
                }
                rows
            }
        };
        w.write_all(&out).map_err(|e| Error::io("send", path, e))?;
        Ok(Some((rows, out.len() as u64)))
    })
}

/// Calls `f` with every `INSERT` of a native data file (its text without the `;`, its parsed
/// head, and a maker of errors that name the statement) after checking its column list
/// against `names`. `f` returns the rows and bytes it sent, which count towards progress, or
/// `None` to stop early.
fn each_insert(
    path: &Path,
    rel: &str,
    names: &[String],
    counters: &Counters,
    mut f: impl FnMut(&[u8], &InsertHead, &dyn Fn(String) -> Error) -> Result<Option<(u64, u64)>>,
) -> Result<()> {
    // Native data files hold one statement per line (newlines in values are escaped), so
    // lines are statements: no need for the general splitter here.
    let mut reader = open_reader(path)?;
    let mut text: Vec<u8> = Vec::with_capacity(1 << 21);
    let mut n = 0u64;
    loop {
        text.clear();
        if reader
            .read_until(b'\n', &mut text)
            .map_err(|e| Error::io("read", path, e))?
            == 0
        {
            return Ok(());
        }
        n += 1;
        if !text.starts_with(b"INSERT") {
            continue;
        }
        let body = text.trim_ascii_end();
        let body = body.strip_suffix(b";").unwrap_or(body);
        let Some(head) = insert_head(body) else {
            return Err(Error::Parse {
                file: rel.to_string(),
                reason: format!("line {n} is not an INSERT"),
            });
        };
        let perr = |reason: String| Error::Parse {
            file: rel.to_string(),
            reason: format!("statement {n} (line {n}): {reason}"),
        };
        if head.columns.as_deref() != Some(names) {
            return Err(perr("the column list differs from the table's".into()));
        }
        let Some((rows, bytes)) = f(body, &head, &perr)? else {
            return Ok(());
        };
        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        counters.rows.fetch_add(rows, Ordering::Relaxed);
        if counters.stopped() {
            return Err(Error::Interrupted {
                what: "the restore".into(),
            });
        }
    }
}

/// A value escaped for `LOAD DATA` (`\`, tab, newline, carriage return, NUL).
fn push_tsv(out: &mut Vec<u8>, b: &[u8]) {
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

/// The definitions of a schema's views, triggers, routines and events.
struct Objects {
    views: Vec<(String, Definition)>,
    triggers: Vec<(String, Definition)>,
    routines: Vec<(String, String, Definition)>,
    events: Vec<(String, Definition)>,
}

fn objects(db: &mut Db, schema: &str, cat: &Catalog) -> Result<Objects> {
    db.exec("switch schema", &format!("USE {}", ident(schema)))?;
    let mut o = Objects {
        views: Vec::new(),
        triggers: Vec::new(),
        routines: Vec::new(),
        events: Vec::new(),
    };
    for v in &cat.views {
        o.views
            .push((v.clone(), db::show_create(db, schema, "VIEW", v)?));
    }
    for t in &cat.triggers {
        o.triggers.push((
            t.name.clone(),
            db::show_create(db, schema, "TRIGGER", &t.name)?,
        ));
    }
    for r in &cat.routines {
        o.routines.push((
            r.kind.clone(),
            r.name.clone(),
            db::show_create(db, schema, &r.kind, &r.name)?,
        ));
    }
    for e in &cat.events {
        o.events
            .push((e.clone(), db::show_create(db, schema, "EVENT", e)?));
    }
    Ok(o)
}

fn create_with(db: &mut Db, what: &str, def: &Definition, sql: &str) -> Result<()> {
    db.exec(
        what,
        &format!(
            "SET SESSION sql_mode = {}, character_set_client = {}, collation_connection = {}",
            literal(&def.sql_mode),
            literal(&def.charset_client),
            literal(&def.collation_connection)
        ),
    )?;
    if let Some(tz) = &def.time_zone {
        db.exec(what, &format!("SET time_zone = {}", literal(tz)))?;
    }
    let r = db.exec(what, sql);
    db.exec(
        "reset the session",
        "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
    )?;
    r
}

/// `CREATE DATABASE` for `name` with the backup schema's charset and collation, every name
/// quoted (the manifest's names were checked against their grammars when it was read).
fn create_database(name: &str, entry: &SchemaEntry) -> String {
    format!(
        "CREATE DATABASE {} DEFAULT CHARACTER SET {} COLLATE {}",
        ident(name),
        ident(&entry.charset),
        ident(&entry.collation)
    )
}

/// Swaps the verified scratch schemas in: parks the live tables and object definitions,
/// renames every table in one statement, recreates views, triggers, routines and events.
fn swap(db: &mut Db, targets: &[Target]) -> Result<()> {
    let before = "prepare the swap";
    let mut plans = Vec::new();
    for t in targets {
        if !db.schema_exists(&t.live).map_err(fail(before, true))? {
            db.exec(
                "create the live schema",
                &create_database(&t.live, &t.entry),
            )
            .map_err(fail(before, true))?;
        }
        db.exec(
            "create the parking schema",
            &create_database(&t.parked, &t.entry),
        )
        .map_err(fail(before, true))?;
        let live_cat = db::catalog(db, &t.live).map_err(fail(before, true))?;
        let scratch_cat = db::catalog(db, &t.load).map_err(fail(before, true))?;
        let live_objs = objects(db, &t.live, &live_cat).map_err(fail(before, true))?;
        let scratch_objs = objects(db, &t.load, &scratch_cat).map_err(fail(before, true))?;
        park_objects(db, &t.parked, &live_objs).map_err(fail(before, true))?;
        plans.push((live_cat, scratch_cat, live_objs, scratch_objs));
    }

    // From here on the live schemas change.
    let stage = "swap the tables in";
    let mut renames = Vec::new();
    for (t, (live_cat, scratch_cat, live_objs, scratch_objs)) in targets.iter().zip(&plans) {
        // Views and triggers cannot move between schemas: drop them on both sides (they are
        // recreated from the definitions read above once the tables are in place).
        for (schema, objs, side) in [
            (&t.live, live_objs, "live"),
            (&t.load, scratch_objs, "scratch"),
        ] {
            for (kind, names) in [("TRIGGER", &objs.triggers), ("VIEW", &objs.views)] {
                for (name, _) in names {
                    db.exec(
                        &format!("drop a {side} {}", kind.to_lowercase()),
                        &format!("DROP {kind} IF EXISTS {}.{}", ident(schema), ident(name)),
                    )
                    .map_err(fail(stage, false))?;
                }
            }
        }
        for table in &live_cat.tables {
            renames.push(format!(
                "{}.{} TO {}.{}",
                ident(&t.live),
                ident(&table.name),
                ident(&t.parked),
                ident(&table.name)
            ));
        }
        for table in &scratch_cat.tables {
            renames.push(format!(
                "{}.{} TO {}.{}",
                ident(&t.load),
                ident(&table.name),
                ident(&t.live),
                ident(&table.name)
            ));
        }
    }
    if !renames.is_empty() {
        db.exec(
            "swap the tables with one RENAME TABLE",
            &format!("RENAME TABLE {}", renames.join(", ")),
        )
        .map_err(fail(stage, false))?;
    }
    for t in targets {
        sequence_defaults_to_live(db, &t.load, &t.live).map_err(fail(stage, false))?;
    }

    let stage = "recreate views, triggers, routines and events";
    let renamed: Vec<(String, String)> = targets
        .iter()
        .map(|t| {
            (
                format!("{}.", ident(&t.load)),
                format!("{}.", ident(&t.live)),
            )
        })
        .collect();
    for (t, (_, _, live_objs, scratch_objs)) in targets.iter().zip(&plans) {
        db.exec("switch schema", &format!("USE {}", ident(&t.live)))
            .map_err(fail(stage, false))?;
        // Views may use each other: create them in rounds until none is left.
        let mut pending: Vec<&(String, Definition)> = scratch_objs.views.iter().collect();
        while !pending.is_empty() {
            let mut failed = Vec::new();
            let mut last_err = None;
            for v in &pending {
                let mut sql = v.1.sql.clone();
                for (from, to) in &renamed {
                    sql = sql.replace(from, to);
                }
                if let Err(e) = create_with(db, "create a view", &v.1, &sql) {
                    failed.push(*v);
                    last_err = Some(e);
                }
            }
            if failed.len() == pending.len()
                && let Some(e) = last_err
            {
                return Err(fail(stage, false)(e));
            }
            pending = failed;
        }
        for (_, def) in &scratch_objs.triggers {
            create_with(db, "create a trigger", def, &def.sql).map_err(fail(stage, false))?;
        }
        for (kind, name, _) in &live_objs.routines {
            db.exec(
                "drop a live routine",
                &format!("DROP {kind} IF EXISTS {}", ident(name)),
            )
            .map_err(fail(stage, false))?;
        }
        for (_, _, def) in &scratch_objs.routines {
            create_with(db, "create a routine", def, &def.sql).map_err(fail(stage, false))?;
        }
        for (name, _) in &live_objs.events {
            db.exec(
                "drop a live event",
                &format!("DROP EVENT IF EXISTS {}", ident(name)),
            )
            .map_err(fail(stage, false))?;
        }
        for (_, def) in &scratch_objs.events {
            create_with(db, "create an event", def, &def.sql).map_err(fail(stage, false))?;
        }
        db.exec(
            "drop the emptied scratch schema",
            &format!("DROP DATABASE IF EXISTS {}", ident(&t.load)),
        )
        .map_err(fail(stage, false))?;
    }
    Ok(())
}

/// Keeps the replaced objects' definitions in `<parked>.cs_parked_objects`.
fn park_objects(db: &mut Db, parked: &str, o: &Objects) -> Result<()> {
    let table = format!("{}.`cs_parked_objects`", ident(parked));
    db.exec(
        "create the parked objects table",
        &format!(
            "CREATE TABLE {table} (kind VARCHAR(16) NOT NULL, name VARCHAR(64) NOT NULL, \
             definition LONGTEXT NOT NULL, sql_mode TEXT NOT NULL, \
             character_set_client VARCHAR(64) NOT NULL, collation_connection VARCHAR(64) NOT NULL) \
             DEFAULT CHARSET = utf8mb4"
        ),
    )?;
    let mut rows: Vec<(&str, &str, &Definition)> = Vec::new();
    rows.extend(o.views.iter().map(|(n, d)| ("VIEW", n.as_str(), d)));
    rows.extend(o.triggers.iter().map(|(n, d)| ("TRIGGER", n.as_str(), d)));
    rows.extend(
        o.routines
            .iter()
            .map(|(k, n, d)| (k.as_str(), n.as_str(), d)),
    );
    rows.extend(o.events.iter().map(|(n, d)| ("EVENT", n.as_str(), d)));
    for (kind, name, d) in rows {
        db.exec(
            "park an object definition",
            &format!(
                "INSERT INTO {table} VALUES ({}, {}, {}, {}, {}, {})",
                literal(kind),
                literal(name),
                literal(&d.sql),
                literal(&d.sql_mode),
                literal(&d.charset_client),
                literal(&d.collation_connection)
            ),
        )?;
    }
    Ok(())
}

/// A table of a per-table restore, as the pipeline tracks it.
#[derive(Debug, Clone)]
struct TableTask {
    /// The schema it loads into.
    schema: String,
    /// `schema.table` with the backup's schema name (how the manifest is compared).
    key: String,
    table: db::Table,
    /// Rows the manifest expects (to decide whether to split the checksum).
    rows: u64,
    /// Deferred `ADD KEY` clauses.
    keys: Vec<String>,
}

/// A unit of work of the restore pipeline.
#[derive(Debug)]
enum Task {
    /// Load data files, one after the other, into table `table` (an index into the
    /// pipeline's tables).
    Load { files: Vec<String>, table: usize },
    /// Add deferred secondary keys.
    Keys {
        schema: String,
        table: String,
        keys: Vec<String>,
    },
    /// Checksum the rows of table `table` that match `filter` (all rows when `None`).
    Sum {
        table: usize,
        filter: Option<String>,
    },
}

/// What follows once every data file of a table is in: its keys (first: a key build is one
/// long statement, best started early), then its checksum (the caller may split it).
fn table_done(index: usize, t: &TableTask) -> Vec<Task> {
    let mut next = Vec::new();
    if !t.keys.is_empty() {
        let table = t.table.name.clone();
        next.push(Task::Keys {
            schema: t.schema.clone(),
            table,
            keys: t.keys.clone(),
        });
    }
    next.push(Task::Sum {
        table: index,
        filter: None,
    });
    next
}

/// Locks a mutex, taking over the data of a panicked holder (the panic itself is reported
/// by the thread scope).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `work` on every item with `threads` workers, each on a connection of its own, taking
/// items from a shared queue. A worker that fails stops, and the first error is returned once
/// all workers are done; the others carry on. With `stop`, a set flag stops every worker before
/// its next item, and a failure sets it.
fn on_connections<T: Send>(
    url: &DbUrl,
    threads: usize,
    items: Vec<T>,
    stop: Option<&AtomicBool>,
    work: impl Fn(&mut Db, T) -> Result<()> + Sync,
) -> Result<()> {
    run_queue(url, threads, items.into(), stop, |db, item| {
        work(db, item).map(|()| Vec::new())
    })
}

/// [`on_connections`] where an item may add follow-up items: `work` returns them, and they go
/// to the front of the queue in the order given. A worker that finds the queue empty waits
/// while others still run (they may add items).
fn run_queue<T: Send>(
    url: &DbUrl,
    threads: usize,
    items: VecDeque<T>,
    stop: Option<&AtomicBool>,
    work: impl Fn(&mut Db, T) -> Result<Vec<T>> + Sync,
) -> Result<()> {
    struct Queue<T> {
        items: VecDeque<T>,
        running: usize,
    }
    let queue = Mutex::new(Queue { items, running: 0 });
    let changed = std::sync::Condvar::new();
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let stopped = || stop.is_some_and(|f| f.load(Ordering::Relaxed));
    let fail = |e: Error| {
        if let Some(stop) = stop {
            stop.store(true, Ordering::Relaxed);
        }
        lock(&first_error).get_or_insert(e);
    };
    // Takes the next item, waiting while the queue is empty but others may still add to it.
    let next = || -> Option<T> {
        let mut q = lock(&queue);
        loop {
            if stopped() {
                return None;
            }
            if let Some(item) = q.items.pop_front() {
                q.running += 1;
                return Some(item);
            }
            if q.running == 0 {
                return None;
            }
            // The timeout only bounds how late a stop from outside is noticed.
            q = changed
                .wait_timeout(q, std::time::Duration::from_millis(200))
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    };
    let finish = |more: Vec<T>| {
        let mut q = lock(&queue);
        q.running -= 1;
        for item in more.into_iter().rev() {
            q.items.push_front(item);
        }
        drop(q);
        changed.notify_all();
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut db = match db::connect_streaming(url) {
                    Ok(db) => db,
                    Err(e) => return fail(e),
                };
                while let Some(item) = next() {
                    // A panicking item must still count as finished, or the others would wait
                    // for its follow-ups forever.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        work(&mut db, item)
                    }))
                    .unwrap_or_else(|_| {
                        Err(Error::Interrupted {
                            what: "a database worker (it panicked)".into(),
                        })
                    });
                    match result {
                        Ok(more) => finish(more),
                        Err(e) => {
                            // Stop first, so that no waiting worker takes another item.
                            fail(e);
                            finish(Vec::new());
                            return;
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_in_64_characters() {
        let s = "20250101t120000";
        assert_eq!(
            derived_name("cloud", "__restore_", s),
            "cloud__restore_20250101t120000"
        );
        let long = "cs_t_some_rather_long_test_name_here_1234567_usage";
        let a = derived_name(long, "__restore_", s);
        assert!(a.chars().count() <= 64, "{a}");
        assert_ne!(a, derived_name(&format!("{long}x"), "__restore_", s));
    }

    #[test]
    fn schema_statements_are_recognised() {
        assert!(names_schema(b"USE `cloud`"));
        assert!(names_schema(
            b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `cloud` /*!40100 DEFAULT CHARACTER SET utf8mb4 */"
        ));
        assert!(names_schema(
            b"/*!50106 ALTER DATABASE `cloud` CHARACTER SET latin1 COLLATE latin1_swedish_ci */"
        ));
        assert!(!names_schema(b"INSERT INTO `t` VALUES ('USE `cloud`')"));
        assert!(is_table_lock(b"LOCK TABLES `t` WRITE"));
        assert!(is_table_lock(b"UNLOCK TABLES"));
        assert!(!is_table_lock(b"INSERT INTO `LOCK TABLES` VALUES (1)"));
        assert_eq!(approx_rows(b"INSERT INTO t VALUES (1),(2),(3)"), 3);
    }

    #[test]
    fn secondary_keys_are_deferred_but_not_those_constraints_need() {
        let none = Referenced::new();
        let create = "CREATE TABLE `ev` (
  `id` int(11) NOT NULL,
  `pid` int(11) DEFAULT NULL,
  `c` datetime DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `u` (`c`),
  KEY `pid` (`pid`),
  KEY `i_c` (`c`,`id`),
  CONSTRAINT `fk` FOREIGN KEY (`pid`) REFERENCES `p` (`id`)
) ENGINE=InnoDB";
        let (stmt, table, keys) = split_keys(create, &none).unwrap();
        assert_eq!(table, "ev");
        assert_eq!(
            keys,
            ["ADD UNIQUE KEY `u` (`c`)", "ADD KEY `i_c` (`c`,`id`)"]
        );
        assert!(stmt.contains("KEY `pid` (`pid`),\n  CONSTRAINT"), "{stmt}");
        // Another table's foreign key references `ev`.`c`: its keys stay.
        let referenced = Referenced::from([("ev".to_string(), "c".to_string())]);
        assert!(split_keys(create, &referenced).is_none());
        let last = "CREATE TABLE `t` (\n  `a` int,\n  PRIMARY KEY (`a`),\n  KEY `k` (`a`)\n) ENGINE=InnoDB";
        let (stmt, _, keys) = split_keys(last, &none).unwrap();
        assert_eq!(
            stmt,
            "CREATE TABLE `t` (\n  `a` int,\n  PRIMARY KEY (`a`)\n) ENGINE=InnoDB"
        );
        assert_eq!(keys, ["ADD KEY `k` (`a`)"]);
        // The AUTO_INCREMENT column must stay indexed.
        let auto = "CREATE TABLE `t` (\n  `a` int NOT NULL AUTO_INCREMENT,\n  `b` int,\n  UNIQUE KEY `ua` (`a`),\n  KEY `kb` (`b`)\n) ENGINE=InnoDB AUTO_INCREMENT=5";
        let (stmt, _, keys) = split_keys(auto, &none).unwrap();
        assert!(stmt.contains("UNIQUE KEY `ua` (`a`)\n)"), "{stmt}");
        assert_eq!(keys, ["ADD KEY `kb` (`b`)"]);
        assert!(split_keys("CREATE TABLE `t` (\n  `a` int\n)", &none).is_none());
        // A plain key before one a foreign key needs stays too (else the restored table
        // would list it after); unique keys sort apart from plain ones and are still added
        // later, as are the plain keys after the last staying one.
        let order = "CREATE TABLE `o` (\n  `id` int NOT NULL,\n  `a` int,\n  `p` int,\n  `b` int,\n  \
            PRIMARY KEY (`id`),\n  UNIQUE KEY `ub` (`b`),\n  KEY `ka` (`a`),\n  KEY `kp` (`p`),\n  \
            KEY `kb` (`b`),\n  CONSTRAINT `f` FOREIGN KEY (`p`) REFERENCES `x` (`id`)\n) ENGINE=InnoDB";
        let (stmt, _, keys) = split_keys(order, &none).unwrap();
        assert_eq!(keys, ["ADD UNIQUE KEY `ub` (`b`)", "ADD KEY `kb` (`b`)"]);
        assert!(
            stmt.contains("KEY `ka` (`a`),\n  KEY `kp` (`p`),\n  CONSTRAINT"),
            "{stmt}"
        );
        assert!(split_keys("DROP TABLE IF EXISTS `t`", &none).is_none());
    }

    #[test]
    fn sequence_defaults_call_the_loaded_schemas_sequences() {
        let map = BTreeMap::from([("cloud".to_string(), "cloud__restore_1".to_string())]);
        let create = "CREATE TABLE `t` (\n  `id` bigint(20) NOT NULL DEFAULT nextval(`cloud`.`s`),\n  \
            `o` bigint(20) DEFAULT nextval(`other`.`s`)\n) ENGINE=InnoDB";
        assert_eq!(
            sequences_in(create, &map),
            create.replace("nextval(`cloud`.", "nextval(`cloud__restore_1`.")
        );
        assert!(sequences_in(create, &map).contains("nextval(`other`.`s`)"));
    }

    #[test]
    fn foreign_key_targets_are_found() {
        let mut refs = Referenced::new();
        fk_references(
            "CREATE TABLE `c` (
  `pid` int(11) DEFAULT NULL,
  `u` varchar(40) DEFAULT NULL,
  KEY `pid` (`pid`),
  CONSTRAINT `fk_1` FOREIGN KEY (`pid`) REFERENCES `p` (`id`) ON DELETE CASCADE,
  CONSTRAINT `fk_2` FOREIGN KEY (`u`, `pid`) REFERENCES `other`.`odd``name` (`uuid`, `id`)
) ENGINE=InnoDB",
            &mut refs,
        );
        assert_eq!(
            refs,
            Referenced::from([
                ("odd`name".to_string(), "uuid".to_string()),
                ("p".to_string(), "id".to_string()),
            ])
        );
    }

    /// The same native data file through a bulk insert and through `LOAD DATA LOCAL`, into
    /// a table with UTF-8, latin1 and binary columns: both store the same rows.
    #[test]
    fn bulk_and_load_data_store_the_same_rows() {
        let server = cs_lab::mariadb();
        let test = server.database("restore_paths").unwrap();
        let schema = test.name().to_string();
        let mut db = db::connect_streaming(&test.url()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut file = String::new();
        for part in 0..3 {
            file.push_str("INSERT INTO `t` (`id`,`s`,`l`,`b`,`n`) VALUES ");
            let rows: Vec<String> = (0..200)
                .map(|i| {
                    let id = part * 200 + i;
                    format!(
                        "({id},'caf\u{e9} \\'{id}\\'\\t\\n{}','na\u{ef}ve \u{ff}',0x00FF{:04X},{})",
                        "x".repeat(id % 300),
                        id,
                        if id % 7 == 0 {
                            "NULL".to_string()
                        } else {
                            format!("{id}.5")
                        }
                    )
                })
                .collect();
            file.push_str(&rows.join(","));
            file.push_str(";\n");
        }
        std::fs::write(dir.path().join("t.sql"), file).unwrap();
        let counters = Arc::new(Counters::default());
        let mut sums = Vec::new();
        for (name, bulk) in [("by_bulk", true), ("by_load", false)] {
            db.exec(
                "create",
                &format!(
                    "CREATE TABLE {}.{name} (id INT PRIMARY KEY, \
                     s VARCHAR(400) CHARACTER SET utf8mb4, l VARCHAR(40) CHARACTER SET latin1, \
                     b VARBINARY(10), n DECIMAL(10,1))",
                    ident(&schema)
                ),
            )
            .unwrap();
            let mut table = db::catalog(&mut db, &schema)
                .unwrap()
                .table(name)
                .unwrap()
                .clone();
            // The file names table `t`; only the column list has to match.
            let target = LoadTarget {
                schema: schema.clone(),
                table: table.clone(),
            };
            let loaded = if bulk {
                load_bulk(&mut db, dir.path(), "t.sql", &target, &counters).unwrap()
            } else {
                load_data(&mut db, dir.path(), "t.sql", &target, &counters).unwrap()
            };
            assert!(loaded, "{name}");
            table.name = name.to_string();
            sums.push(
                db::table_checksum(&mut db, &schema, &table, None, Algorithm::CURRENT).unwrap(),
            );
        }
        assert_eq!(sums[0], sums[1]);
        assert_eq!(sums[0].rows(), 600);
        let latin1 = db
            .one(
                "read",
                &format!("SELECT HEX(l) FROM {}.by_bulk WHERE id = 5", ident(&schema)),
            )
            .unwrap();
        assert_eq!(
            latin1.as_deref(),
            Some("6E61EF766520FF"),
            "stored as latin1"
        );
    }
}
