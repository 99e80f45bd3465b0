//! The native engine: N connections sharing one snapshot, tables and chunks dumped in
//! parallel, rows streamed to per-table SQL files with checksums computed on the way.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cs_core::{DbUrl, Host, LocalHost};

use crate::backup::{Counters, DumpJob, Dumped, Engine, schema_entry, use_stmt, with_progress};
use crate::checksum::RowSum;
use crate::db::{self, Catalog, Db, Table, TableKind, ValueKind};
use crate::files::{DumpFile, Unsynced, name_part, sync_dir};
use crate::manifest::{FileEntry, Layout, SchemaFiles, TableEntry};
use crate::sql::{ident, literal, push_hex, push_string};
use crate::{BackupOptions, Compression, Error, Result};

/// The native engine: dumps over the `mysql` protocol with [`BackupOptions::threads`]
/// connections that share one consistent snapshot, into per-table SQL files on this machine.
///
/// # Snapshot
/// A control connection takes `FLUSH TABLES WITH READ LOCK`, every worker connection then opens
/// `START TRANSACTION WITH CONSISTENT SNAPSHOT`, the binary log position is read, and the lock is
/// released: writes pause only for the time it takes to open the transactions. That window is
/// bounded by [`BackupOptions::snapshot_window`] (FTWRL queued behind a long statement counts):
/// past it a watchdog kills the control connection from a second one and the backup fails with
/// [`Error::SnapshotWindow`]; the control session's `wait_timeout` and `lock_wait_timeout` end
/// it on the server's side a second later should the server be out of reach. Without the `RELOAD` privilege the engine falls back to one
/// connection (one snapshot, no lock) and notes it in the manifest. The snapshot is consistent
/// for transactional tables (InnoDB, as CloudStack uses).
///
/// # Files
/// Per schema, in name order so that `cat *.sql | mysql` restores:
/// `1-<schema>.sql` (`CREATE DATABASE`), `1s-<schema>.<sequence>.sql` (`CREATE SEQUENCE` and
/// its state as a full-row `INSERT`), `2-<schema>.<table>.00000.sql` (`DROP TABLE`,
/// `CREATE TABLE`), `2-<schema>.<table>.00001.sql`… (rows as multi-row `INSERT`s with a column
/// list, one statement per line, binary columns in hex; a system-versioned table's rows with
/// its history and their `row_start`/`row_end`), `3-<schema>.views.sql` and
/// `4-<schema>.routines.sql` (triggers, procedures, functions, events, with `DELIMITER ;;`).
/// Every file starts with its own `SET NAMES utf8mb4`, `TIME_ZONE='+00:00'`, `SQL_MODE`,
/// `FOREIGN_KEY_CHECKS=0` and `USE`, so each also loads on its own.
#[derive(Debug, Default)]
pub struct NativeEngine {
    host: LocalHost,
}

impl NativeEngine {
    /// The native engine, writing to this machine's filesystem.
    pub fn new() -> Self {
        NativeEngine::default()
    }
}

/// What every native file starts with.
pub(crate) const HEADER: &str = "-- cs-backup native dump\n\
SET NAMES utf8mb4;\n\
SET TIME_ZONE = '+00:00';\n\
SET SQL_MODE = 'NO_AUTO_VALUE_ON_ZERO';\n\
SET FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0;\n";

#[async_trait]
impl Engine for NativeEngine {
    fn name(&self) -> &str {
        "native"
    }

    fn host(&self) -> &dyn Host {
        &self.host
    }

    async fn dump(&self, job: &DumpJob<'_>) -> Result<Dumped> {
        let counters = Arc::new(Counters::default());
        let est_rows: u64 = job
            .catalogs
            .iter()
            .flat_map(|(_, c)| &c.tables)
            .map(|t| t.est_rows)
            .sum();
        let est_bytes: u64 = job
            .catalogs
            .iter()
            .flat_map(|(_, c)| &c.tables)
            .map(|t| t.est_bytes)
            .sum();
        let plan = Plan {
            url: job.url.clone(),
            dir: job.dir.to_path_buf(),
            options: job.options.clone(),
            catalogs: job.catalogs.clone(),
            counters: counters.clone(),
        };
        with_progress(
            "dump",
            (Some(est_rows), Some(est_bytes)),
            counters,
            job.progress,
            move || plan.run(),
        )
        .await
    }
}

struct Plan {
    url: DbUrl,
    dir: PathBuf,
    options: BackupOptions,
    catalogs: Vec<(String, Catalog)>,
    counters: Arc<Counters>,
}

/// One part of one table to dump.
#[derive(Debug, Clone)]
struct Part {
    schema: usize,
    table: usize,
    part: u32,
    filter: Option<String>,
    /// The server's estimate of the part's size (its share of the table's `DATA_LENGTH`).
    est_bytes: u64,
}

struct PartDone {
    schema: usize,
    table: usize,
    part: u32,
    file: FileEntry,
    sum: RowSum,
}

fn start_snapshot(db: &mut Db) -> Result<()> {
    db.exec(
        "start a consistent snapshot",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    )?;
    db.exec(
        "start a consistent snapshot",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    )
}

/// The snapshot window, with the global read lock held on `ctl`: every worker opens its
/// snapshot, the binary log position is read, the lock is released. Returns the position.
fn hold_window(ctl: &mut Db, workers: &mut [Db]) -> Result<Option<String>> {
    for w in workers.iter_mut() {
        start_snapshot(w)?;
    }
    let binlog = ctl
        .strings("read the binary log position", "SHOW MASTER STATUS")
        .ok()
        .and_then(|rows| {
            rows.into_iter()
                .next()
                .filter(|r| r.len() >= 2)
                .map(|r| format!("{}:{}", r[0], r[1]))
        });
    ctl.exec("release the global read lock", "UNLOCK TABLES")?;
    Ok(binlog)
}

/// Kills the connection holding the global read lock when the snapshot window overruns, so
/// that the cloud's writes do not wait on a backup stuck on a silent connection or on
/// `FLUSH TABLES WITH READ LOCK` queued behind a long statement.
struct Watchdog {
    shared: Arc<(Mutex<DogState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct DogState {
    done: bool,
    /// How the lock was released, once the watchdog fired.
    fired: Option<String>,
}

impl Watchdog {
    fn start(url: &DbUrl, id: u32, window: Duration) -> Result<Watchdog> {
        let shared = Arc::new((Mutex::new(DogState::default()), Condvar::new()));
        let (url, for_dog) = (url.clone(), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("snapshot-watchdog".into())
            .spawn(move || {
                let (state, changed) = &*for_dog;
                let deadline = Instant::now() + window;
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                while !st.done {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = changed
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if st.done {
                    return;
                }
                drop(st);
                let released = kill(&url, id, window);
                tracing::warn!(id, released, "snapshot window overran");
                state.lock().unwrap_or_else(|e| e.into_inner()).fired = Some(released);
            })
            .map_err(|e| Error::Interrupted {
                what: format!("starting the snapshot watchdog ({e})"),
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Ends the watch: `Some(how the lock was released)` when it had fired.
    fn stop(mut self) -> Option<String> {
        let (state, changed) = &*self.shared;
        state.lock().unwrap_or_else(|e| e.into_inner()).done = true;
        changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        state.lock().unwrap_or_else(|e| e.into_inner()).fired.take()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (state, changed) = &*self.shared;
        state.lock().unwrap_or_else(|e| e.into_inner()).done = true;
        changed.notify_all();
    }
}

/// `KILL <id>` from a fresh connection (bounded by the URL's deadlines); says what happened.
fn kill(url: &DbUrl, id: u32, window: Duration) -> String {
    let backstop = window.as_secs() + 1;
    let killed = db::connect_short(url).and_then(|mut db| {
        db.exec(
            "kill the connection holding the global read lock",
            &format!("KILL {id}"),
        )
    });
    match killed {
        Ok(()) => format!(
            "the lock's connection (id {id}) was killed from a second connection, so the \
             cloud's writes go on"
        ),
        Err(e) => format!(
            "a second connection could not kill the lock's connection (id {id}): {}; the \
             server ends that session by itself within {backstop} s of the lock being taken \
             (wait_timeout, lock_wait_timeout)",
            cs_core::error_chain(&e)
        ),
    }
}

impl Plan {
    fn run(mut self) -> Result<Dumped> {
        let threads = self.options.threads.max(1);
        let mut notes = Vec::new();
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            workers.push(db::connect_streaming(&self.url)?);
        }
        // Every statement must load back into this server (by the stock client too): none
        // longer than its packet limit, less 1 KiB for the command byte and headers.
        let packet: Option<usize> = workers[0]
            .one("read max_allowed_packet", "SELECT @@max_allowed_packet")?
            .and_then(|v| v.parse().ok());
        if let Some(p) = packet {
            self.options.statement_bytes = self
                .options
                .statement_bytes
                .min(p.saturating_sub(1024).max(1024));
        }
        let window = self.options.snapshot_window.max(Duration::from_millis(100));
        // FTWRL may wait the whole window for running statements; the watchdog, not a read
        // timeout, ends that wait.
        let mut ctl = db::connect_with_reply(&self.url, window + self.url.deadlines.reply)?;
        // Should neither the watchdog nor this process reach the server any more, the server
        // ends the lock's session a second after the window: FTWRL waiting for running
        // statements gives up (`lock_wait_timeout`), a session holding the lock and hearing
        // nothing is closed (`wait_timeout`), which releases the lock.
        let backstop = window.as_secs() + 1;
        ctl.exec(
            "bound how long the global read lock may be held",
            &format!("SET SESSION lock_wait_timeout = {backstop}, wait_timeout = {backstop}"),
        )?;
        let mut binlog = None;
        let dog = Watchdog::start(&self.url, ctl.connection_id(), window)?;
        let snapshot = match ctl.exec("take the global read lock", "FLUSH TABLES WITH READ LOCK") {
            Ok(()) => {
                let held = hold_window(&mut ctl, &mut workers);
                match (held, dog.stop()) {
                    (Ok(b), None) => binlog = b,
                    (held, Some(released)) => {
                        return Err(Error::SnapshotWindow {
                            limit: window,
                            released,
                            source: held.err().map(Box::new),
                        });
                    }
                    (Err(e), None) => return Err(e),
                }
                "flush-tables-with-read-lock + consistent-snapshot"
            }
            Err(e) => {
                if let Some(released) = dog.stop() {
                    return Err(Error::SnapshotWindow {
                        limit: window,
                        released,
                        source: Some(Box::new(e)),
                    });
                }
                let Error::Privilege { .. } = e else {
                    return Err(e);
                };
                workers.truncate(1);
                start_snapshot(&mut workers[0])?;
                notes.push(format!(
                    "user `{}` lacks RELOAD: dumped on one connection (one snapshot) instead of {threads}",
                    self.url.user
                ));
                "single-connection consistent-snapshot"
            }
        };
        drop(ctl);

        let suffix = self.options.compression.suffix();
        let mut files: Vec<FileEntry> = Vec::new();
        let mut schema_files = Vec::new();
        let mut versions = Vec::new();
        let mut ddl_files: BTreeMap<(usize, usize), String> = BTreeMap::new();
        let mut parts: Vec<Part> = Vec::new();
        let mut seq_sums: BTreeMap<(usize, usize), RowSum> = BTreeMap::new();
        {
            let meta = &mut workers[0];
            for (si, (schema, cat)) in self.catalogs.iter().enumerate() {
                versions.push(db::version_row(meta, schema, cat)?);
                let mut sf = SchemaFiles::default();
                let rel = format!("1-{}{suffix}", name_part(schema));
                let mut f = self.create(&rel)?;
                f.write(HEADER.as_bytes())?;
                f.write(
                    format!(
                        "CREATE DATABASE IF NOT EXISTS {} DEFAULT CHARACTER SET {} COLLATE {};\n",
                        ident(schema),
                        cat.charset,
                        cat.collation
                    )
                    .as_bytes(),
                )?;
                files.push(f.finish()?);
                sf.schema = Some(rel);

                for (ti, table) in cat.tables.iter().enumerate() {
                    if table.kind == TableKind::Sequence {
                        let (rel, sum) = self.dump_sequence(meta, schema, table)?;
                        files.push(rel.0);
                        ddl_files.insert((si, ti), rel.1);
                        seq_sums.insert((si, ti), sum);
                        continue;
                    }
                    let create = show_create_table(meta, schema, &table.name)?;
                    let rel = format!(
                        "2-{}.{}.00000{suffix}",
                        name_part(schema),
                        name_part(&table.name)
                    );
                    let mut f = self.create(&rel)?;
                    f.write(HEADER.as_bytes())?;
                    f.write(use_stmt(schema).as_bytes())?;
                    f.write(
                        format!("DROP TABLE IF EXISTS {};\n{create};\n", ident(&table.name))
                            .as_bytes(),
                    )?;
                    files.push(f.finish()?);
                    ddl_files.insert((si, ti), rel);
                    if table.stored().next().is_some() {
                        parts.extend(self.split(meta, si, ti, schema, table)?);
                    }
                }

                meta.exec("switch schema", &format!("USE {}", ident(schema)))?;
                if !cat.views.is_empty() {
                    let rel = format!("3-{}.views{suffix}", name_part(schema));
                    let text = views_sql(meta, schema, cat)?;
                    let mut f = self.create(&rel)?;
                    f.write(text.as_bytes())?;
                    files.push(f.finish()?);
                    sf.views = Some(rel);
                }
                if !(cat.routines.is_empty() && cat.triggers.is_empty() && cat.events.is_empty()) {
                    let rel = format!("4-{}.routines{suffix}", name_part(schema));
                    let text = routines_sql(meta, schema, cat)?;
                    let mut f = self.create(&rel)?;
                    f.write(text.as_bytes())?;
                    files.push(f.finish()?);
                    sf.routines = Some(rel);
                }
                schema_files.push(sf);
            }
        }

        // Biggest parts first (by bytes, not rows: rows differ in size from table to table),
        // so the last ones to finish are small.
        parts.sort_by_key(|p| std::cmp::Reverse(p.est_bytes));
        let queue = Mutex::new(VecDeque::from(parts));
        let done: Mutex<Vec<PartDone>> = Mutex::new(Vec::new());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        // Finished parts are flushed to disk by one thread of their own, so that a worker
        // goes on reading rows instead of waiting for the disk; all flushes are done before
        // the directory is synced and the manifest can be written. The bound keeps the number
        // of files open while they wait small (a worker waits when the disk falls behind).
        let (to_sync, syncs) = std::sync::mpsc::sync_channel::<Unsynced>(32);
        std::thread::scope(|scope| {
            let syncer = scope.spawn(move || {
                let mut first = None;
                for file in syncs {
                    if let Err(e) = file.sync() {
                        first.get_or_insert(e);
                    }
                }
                first
            });
            for mut conn in workers.drain(..) {
                let (queue, done, first_error) = (&queue, &done, &first_error);
                let to_sync = to_sync.clone();
                let this = &self;
                scope.spawn(move || {
                    loop {
                        if this.counters.stopped() {
                            break;
                        }
                        let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                        let Some(part) = next else { break };
                        match this.dump_part(&mut conn, &part, &to_sync) {
                            Ok(d) => {
                                if let Ok(mut v) = done.lock() {
                                    v.push(d);
                                }
                            }
                            Err(e) => {
                                this.counters.stop.store(true, Ordering::Relaxed);
                                if let Ok(mut slot) = first_error.lock() {
                                    slot.get_or_insert(e);
                                }
                                break;
                            }
                        }
                    }
                    // Ends the snapshot transaction.
                    let _ = conn.exec("end the snapshot", "ROLLBACK");
                });
            }
            drop(to_sync);
            if let Some(e) = syncer.join().unwrap_or_else(|_| {
                Some(Error::Interrupted {
                    what: "flushing the dump files (its thread panicked)".into(),
                })
            }) && let Ok(mut slot) = first_error.lock()
            {
                slot.get_or_insert(e);
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        if self.counters.stopped() && !queue.lock().map(|q| q.is_empty()).unwrap_or(false) {
            return Err(Error::Interrupted {
                what: "the native dump".into(),
            });
        }
        let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        done.sort_by_key(|d| (d.schema, d.table, d.part));

        let mut schemas = Vec::new();
        for (si, (schema, cat)) in self.catalogs.iter().enumerate() {
            let mut tables = Vec::new();
            for (ti, table) in cat.tables.iter().enumerate() {
                let mut sum = seq_sums.remove(&(si, ti)).unwrap_or_default();
                let mut tfiles = vec![ddl_files[&(si, ti)].clone()];
                for d in done.iter().filter(|d| d.schema == si && d.table == ti) {
                    sum.merge(&d.sum);
                    tfiles.push(d.file.path.clone());
                }
                tables.push(TableEntry {
                    name: table.name.clone(),
                    rows: sum.rows(),
                    checksum: sum.hex(),
                    files: tfiles,
                });
            }
            schemas.push(schema_entry(
                schema,
                cat,
                tables,
                versions[si].clone(),
                schema_files[si].clone(),
            ));
        }
        files.extend(done.into_iter().map(|d| d.file));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        sync_dir(&self.dir)?;
        let options = serde_json::json!({
            "threads": self.options.threads,
            "compression": compression_name(self.options.compression),
            "chunk_rows": self.options.chunk_rows,
            "statement_bytes": self.options.statement_bytes,
            "snapshot": snapshot,
            "databases": self.options.databases,
        });
        Ok(Dumped {
            schemas,
            files,
            layout: Layout::PerTable,
            options,
            binlog,
            notes,
        })
    }

    fn create(&self, rel: &str) -> Result<DumpFile> {
        DumpFile::create(&self.dir, rel, self.options.compression)
    }

    /// Splits a table into parts by ranges of its integer primary key.
    fn split(
        &self,
        db: &mut Db,
        si: usize,
        ti: usize,
        schema: &str,
        table: &Table,
    ) -> Result<Vec<Part>> {
        let whole = vec![Part {
            schema: si,
            table: ti,
            part: 1,
            filter: None,
            est_bytes: table.est_bytes,
        }];
        let Some(key) = table.int_key() else {
            return Ok(whole);
        };
        let n = table.est_rows.div_ceil(self.options.chunk_rows.max(1));
        if n <= 1 {
            return Ok(whole);
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
        let (Some(lo), Some(hi)) = (
            r.first()
                .and_then(|r| r[0].as_deref())
                .and_then(|v| v.parse::<i128>().ok()),
            r.first()
                .and_then(|r| r[1].as_deref())
                .and_then(|v| v.parse::<i128>().ok()),
        ) else {
            return Ok(whole);
        };
        let n = n.min(10_000) as i128;
        let step = ((hi - lo + 1) / n).max(1);
        let mut bounds: Vec<i128> = (1..n).map(|i| lo + i * step).filter(|b| *b <= hi).collect();
        bounds.dedup();
        if bounds.is_empty() {
            return Ok(whole);
        }
        let est = table.est_bytes / (bounds.len() as u64 + 1);
        let mut parts = Vec::new();
        for i in 0..=bounds.len() {
            let filter = match (i.checked_sub(1).map(|j| bounds[j]), bounds.get(i)) {
                (None, Some(b)) => format!("{k} < {b}"),
                (Some(a), Some(b)) => format!("{k} >= {a} AND {k} < {b}"),
                (Some(a), None) => format!("{k} >= {a}"),
                (None, None) => unreachable!("bounds is not empty"),
            };
            parts.push(Part {
                schema: si,
                table: ti,
                part: i as u32 + 1,
                filter: Some(filter),
                est_bytes: est,
            });
        }
        Ok(parts)
    }

    fn dump_part(
        &self,
        db: &mut Db,
        part: &Part,
        to_sync: &std::sync::mpsc::SyncSender<Unsynced>,
    ) -> Result<PartDone> {
        let (schema, cat) = &self.catalogs[part.schema];
        let table = &cat.tables[part.table];
        let rel = format!(
            "2-{}.{}.{:05}{}",
            name_part(schema),
            name_part(&table.name),
            part.part,
            self.options.compression.suffix()
        );
        let mut f = self.create(&rel)?;
        f.write(HEADER.as_bytes())?;
        if table.kind == TableKind::Versioned {
            f.write(INSERT_HISTORY.as_bytes())?;
        }
        f.write(use_stmt(schema).as_bytes())?;
        let kinds: Vec<ValueKind> = table.stored().map(|c| c.kind()).collect();
        let prefix = format!(
            "INSERT INTO {} ({}) VALUES ",
            ident(&table.name),
            table.select_list()
        );
        let what = format!("read rows of `{schema}`.`{}`", table.name);
        let limit = self.options.statement_bytes.max(1024);
        let mut sum = RowSum::default();
        let mut buf: Vec<u8> = Vec::with_capacity(limit + 64 * 1024);
        let mut pending_rows = 0u64;
        let mut bytes_reported = 0u64;
        db.select_rows(&what, schema, table, part.filter.as_deref(), |row| {
            let start = buf.len();
            buf.extend_from_slice(if start == 0 { prefix.as_bytes() } else { b"," });
            push_row(&mut buf, &kinds, &row);
            row.add_to(&mut sum);
            pending_rows += 1;
            if buf.len() > limit && start > 0 {
                // The row does not fit: the statement ends before it, and it starts the next.
                let row_text = buf.split_off(start + 1);
                buf.truncate(start);
                buf.extend_from_slice(b";\n");
                f.write(&buf)?;
                buf.clear();
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(&row_text);
            }
            if buf.len() >= limit {
                buf.extend_from_slice(b";\n");
                f.write(&buf)?;
                buf.clear();
            }
            if pending_rows >= 1024 {
                self.counters
                    .rows
                    .fetch_add(pending_rows, Ordering::Relaxed);
                pending_rows = 0;
                self.counters
                    .bytes
                    .fetch_add(f.written - bytes_reported, Ordering::Relaxed);
                bytes_reported = f.written;
                if self.counters.stopped() {
                    return Err(Error::Interrupted {
                        what: "the native dump".into(),
                    });
                }
            }
            Ok(())
        })?;
        if !buf.is_empty() {
            buf.extend_from_slice(b";\n");
            f.write(&buf)?;
        }
        self.counters
            .rows
            .fetch_add(pending_rows, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(f.written - bytes_reported, Ordering::Relaxed);
        let (file, unsynced) = f.finish_unsynced()?;
        if let Err(unsent) = to_sync.send(unsynced) {
            // The flushing thread is gone only if it panicked; flush here instead.
            unsent.0.sync()?;
        }
        Ok(PartDone {
            schema: part.schema,
            table: part.table,
            part: part.part,
            file,
            sum,
        })
    }
}

impl Plan {
    /// Writes a sequence's file, `1s-<schema>.<sequence>`: `CREATE SEQUENCE` as the server
    /// shows it, then its one row (the state: next value not cached, bounds, increment, cache,
    /// cycle option and count) as a full-row `INSERT`, which MariaDB takes as setting the
    /// sequence's state (`sql/ha_sequence.cc`, `ha_sequence::write_row`). Its file names sort
    /// before every table's, so that tables whose defaults call `NEXTVAL` of it can be created.
    /// Returns the file entry, its relative path and the row's checksum.
    fn dump_sequence(
        &self,
        db: &mut Db,
        schema: &str,
        table: &Table,
    ) -> Result<((FileEntry, String), RowSum)> {
        let rel = format!(
            "1s-{}.{}{}",
            name_part(schema),
            name_part(&table.name),
            self.options.compression.suffix()
        );
        let create = db::show_create(db, schema, "SEQUENCE", &table.name)?;
        let kinds: Vec<ValueKind> = table.stored().map(|c| c.kind()).collect();
        let mut buf = format!(
            "DROP TABLE IF EXISTS {0};\n{1};\nINSERT INTO {0} ({2}) VALUES ",
            ident(&table.name),
            create.sql,
            table.select_list()
        )
        .into_bytes();
        let mut sum = RowSum::default();
        let mut rows = 0;
        let what = format!("read the state of sequence `{schema}`.`{}`", table.name);
        db.select_rows(&what, schema, table, None, |row| {
            rows += 1;
            push_row(&mut buf, &kinds, &row);
            row.add_to(&mut sum);
            Ok(())
        })?;
        if rows != 1 {
            return Err(Error::Database {
                what,
                source: format!("a sequence has one row, this one {rows}").into(),
            });
        }
        buf.extend_from_slice(b";\n");
        let mut f = self.create(&rel)?;
        f.write(HEADER.as_bytes())?;
        f.write(use_stmt(schema).as_bytes())?;
        f.write(&buf)?;
        Ok(((f.finish()?, rel.clone()), sum))
    }
}

/// What a system-versioned table's data files set before their rows: rows then keep their
/// `row_start` and `row_end` instead of getting the time of the load (MariaDB 10.11+, as
/// mariadb-dump `--dump-history` writes it; older servers ignore the comment and refuse the
/// history's columns).
pub(crate) const INSERT_HISTORY: &str =
    "/*M!101100 SET @@session.system_versioning_insert_history = 1 */;\n";

/// Appends one row of values as `(v1,v2,…)`: numbers as the server printed them, binary values
/// in hex, others as quoted strings, `NULL`.
fn push_row(buf: &mut Vec<u8>, kinds: &[ValueKind], row: &db::RowRef<'_>) {
    buf.push(b'(');
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        match row.get(i) {
            Some(b) => match kind {
                ValueKind::Number => buf.extend_from_slice(b),
                ValueKind::Binary => push_hex(buf, b),
                ValueKind::Text => push_string(buf, b),
            },
            None => buf.extend_from_slice(b"NULL"),
        }
    }
    buf.push(b')');
}

pub(crate) fn compression_name(c: Compression) -> String {
    match c {
        Compression::None => "none".into(),
        Compression::Zstd { level } => format!("zstd-{level}"),
    }
}

fn show_create_table(db: &mut Db, schema: &str, table: &str) -> Result<String> {
    let rows = db.strings(
        &format!("read the definition of `{schema}`.`{table}`"),
        &format!("SHOW CREATE TABLE {}.{}", ident(schema), ident(table)),
    )?;
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().nth(1))
        .ok_or_else(|| Error::Database {
            what: format!("read the definition of `{schema}`.`{table}`"),
            source: "SHOW CREATE TABLE returned nothing".into(),
        })
}

/// Session settings a definition was created under, as statements ending in `delim`.
fn session_for(def: &db::Definition, delim: &str) -> String {
    let mut s = format!(
        "SET SESSION SQL_MODE = {}{delim}\nSET character_set_client = {}{delim}\nSET collation_connection = {}{delim}\n",
        literal(&def.sql_mode),
        def.charset_client,
        def.collation_connection
    );
    if let Some(tz) = &def.time_zone {
        s.push_str(&format!("SET TIME_ZONE = {}{delim}\n", literal(tz)));
    }
    s
}

const RESET_SESSION: &str = "SET SESSION SQL_MODE = 'NO_AUTO_VALUE_ON_ZERO';\nSET NAMES utf8mb4;\nSET TIME_ZONE = '+00:00';\n";

/// Views in dependency order (a view whose definition names another view comes after it).
fn views_sql(db: &mut Db, schema: &str, cat: &Catalog) -> Result<String> {
    let mut defs = Vec::new();
    for v in &cat.views {
        defs.push((v.clone(), db::show_create(db, schema, "VIEW", v)?));
    }
    let mut out = String::from(HEADER);
    out.push_str(&use_stmt(schema));
    let mut remaining = defs;
    while !remaining.is_empty() {
        let names: Vec<String> = remaining.iter().map(|(n, _)| n.clone()).collect();
        let ready = remaining
            .iter()
            .position(|(n, d)| !names.iter().any(|o| o != n && d.sql.contains(&ident(o))))
            .unwrap_or(0);
        let (name, def) = remaining.remove(ready);
        out.push_str(&session_for(&def, ";"));
        out.push_str(&format!(
            "DROP TABLE IF EXISTS {0};\nDROP VIEW IF EXISTS {0};\n{1};\n",
            ident(&name),
            def.sql
        ));
    }
    out.push_str(RESET_SESSION);
    Ok(out)
}

/// Triggers, procedures, functions and events, with `DELIMITER ;;`.
fn routines_sql(db: &mut Db, schema: &str, cat: &Catalog) -> Result<String> {
    let mut out = String::from(HEADER);
    out.push_str(&use_stmt(schema));
    out.push_str("DELIMITER ;;\n");
    for t in &cat.triggers {
        let def = db::show_create(db, schema, "TRIGGER", &t.name)?;
        out.push_str(&session_for(&def, ";;"));
        out.push_str(&format!(
            "DROP TRIGGER IF EXISTS {};;\n{};;\n",
            ident(&t.name),
            def.sql
        ));
    }
    for r in &cat.routines {
        let def = db::show_create(db, schema, &r.kind, &r.name)?;
        out.push_str(&session_for(&def, ";;"));
        out.push_str(&format!(
            "DROP {} IF EXISTS {};;\n{};;\n",
            r.kind,
            ident(&r.name),
            def.sql
        ));
    }
    for e in &cat.events {
        let def = db::show_create(db, schema, "EVENT", e)?;
        out.push_str(&session_for(&def, ";;"));
        out.push_str(&format!(
            "DROP EVENT IF EXISTS {};;\n{};;\n",
            ident(e),
            def.sql
        ));
    }
    out.push_str("DELIMITER ;\n");
    out.push_str(RESET_SESSION);
    Ok(out)
}
