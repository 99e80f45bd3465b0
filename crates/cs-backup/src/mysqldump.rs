//! The `mysqldump` / `mariadb-dump` engine, run through a [`Host`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use cs_core::{Cmd, DbUrl, Host, HostError, HostExt, Progress, ProgressUpdate, Unit};

use crate::backup::{Counters, DumpJob, Dumped, Engine, path_str, schema_entry, with_progress};
use crate::checksum::RowSum;
use crate::db::{self, Catalog, TableKind};
use crate::manifest::{FileEntry, Layout, SchemaFiles, TableEntry};
use crate::native::compression_name;
use crate::sql::backquoted;
use crate::sql::{Splitter, for_each_row, insert_head, use_target};
use crate::{Compression, Error, Result};

/// The flags every dump of the [`MysqldumpEngine`] runs with (besides the option file, the
/// output and `--databases`), for tools that compare against it.
pub const MYSQLDUMP_FLAGS: &[&str] = &[
    "--single-transaction",
    "--quick",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--max-allowed-packet=1G",
];

/// The `mysqldump` engine: runs `mariadb-dump` (or `mysqldump`) on a [`Host`] — this machine
/// or the database server over SSH — with `--single-transaction --quick --routines --triggers
/// --events --hex-blob`, one invocation for all schemas (`--databases`), and
/// `--set-gtid-purged=OFF` when MySQL's client dumps a MySQL server with GTIDs on, and
/// a `--net-buffer-length` that fits where the server's `max_allowed_packet` is below the
/// program's default (so that its `INSERT`s load back into that server). The output is one
/// file, `dump.sql` (or `dump.sql.zst`), in the backup directory on that host.
///
/// The password goes in a `0600` option file in a private `mktemp -d` directory (never in the
/// backup directory), passed with `--defaults-file` (the only option file the program then reads:
/// with `--defaults-extra-file`, the `~/.my.cnf` of the account running it would be read after
/// it, as MariaDB's and MySQL's clients order them, and its `[client]` user and password would
/// replace the URL's) and removed afterwards, also when
/// the backup fails or is cancelled (its future dropped, which also kills the dump program on
/// a local host); it is never in the command line. Per-table row counts and checksums are computed
/// by parsing the dump file (read from the host in pieces), so they describe exactly the rows in
/// the file.
#[derive(Debug, Clone)]
pub struct MysqldumpEngine {
    host: Arc<dyn Host>,
    program: Option<String>,
    url: Option<DbUrl>,
}

impl MysqldumpEngine {
    /// An engine running on `host`; the program is `mariadb-dump` when the host has it, else
    /// `mysqldump`.
    pub fn new(host: Arc<dyn Host>) -> Self {
        MysqldumpEngine {
            host,
            program: None,
            url: None,
        }
    }

    /// Uses this program instead of looking for one.
    #[must_use]
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// How the host reaches the database, when it differs from the URL given to
    /// [`backup`](crate::backup) (for example `127.0.0.1` on the database server itself).
    #[must_use]
    pub fn url_on_host(mut self, url: DbUrl) -> Self {
        self.url = Some(url);
        self
    }

    /// Whether `program --help` lists `flag`.
    async fn knows(&self, program: &str, flag: &str) -> bool {
        match self.host.run(&Cmd::new(program).arg("--help")).await {
            Ok(out) => out.success() && out.stdout_lossy().contains(flag),
            Err(_) => false,
        }
    }

    async fn detect(&self) -> Result<(String, bool)> {
        let candidates: Vec<String> = match &self.program {
            Some(p) => vec![p.clone()],
            None => vec!["mariadb-dump".into(), "mysqldump".into()],
        };
        let mut last = None;
        for p in candidates {
            match self.host.run(&Cmd::new(&p).arg("--version")).await {
                Ok(out) if out.success() => {
                    let mariadb = out.stdout_lossy().contains("MariaDB");
                    return Ok((p, mariadb));
                }
                Ok(out) => {
                    last = Some(Error::host(
                        format!("run `{p} --version`"),
                        HostError::Failed {
                            host: self.host.name().to_string(),
                            cmd: format!("{p} --version"),
                            code: out.code,
                            stderr: out.stderr_lossy(),
                        },
                    ))
                }
                Err(e) => last = Some(Error::host(format!("run `{p} --version`"), e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("no dump program")))
    }
}

/// The flag that makes mariadb-dump (10.11+) write system-versioned tables with their history
/// (and `system_versioning_insert_history` around their rows). Passed when a schema has such a
/// table and the program knows the flag.
pub(crate) const DUMP_HISTORY: &str = "--dump-history";

/// A private (`0700`) directory on the host for the option file, made by `mktemp -d`, removed
/// with everything in it by [`OptionDir::remove`] or, when the dump is dropped half-way (the
/// backup was cancelled or failed), by a task the drop starts on the current runtime.
struct OptionDir {
    host: Arc<dyn Host>,
    dir: PathBuf,
    armed: bool,
}

impl OptionDir {
    async fn create(host: Arc<dyn Host>) -> Result<OptionDir> {
        let out = host
            .run_ok(&Cmd::new("mktemp").args(["-d", "-t", "cs-backup-cnf.XXXXXXXXXX"]))
            .await
            .map_err(|e| Error::host("create a private directory for the option file", e))?;
        let dir = PathBuf::from(out.stdout_lossy().trim());
        let ours = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("cs-backup-cnf."));
        if !dir.is_absolute() || !ours {
            return Err(Error::invalid(format!(
                "mktemp -d on {} printed {:?}, not a directory",
                host.name(),
                dir
            )));
        }
        Ok(OptionDir {
            host,
            dir,
            armed: true,
        })
    }

    /// The removal command: the directory and everything in it (the option file, a
    /// temporary file of an interrupted write).
    fn remove_cmd(&self) -> Cmd {
        Cmd::new("rm")
            .args(["-rf", "--"])
            .arg(self.dir.to_string_lossy().into_owned())
    }

    async fn remove(mut self) {
        self.armed = false;
        remove_now(self.host.as_ref(), &self.dir, self.remove_cmd()).await;
    }
}

/// Removes the option file and its directory, logging (never returning) a failure.
async fn remove_now(host: &dyn Host, dir: &Path, rm: Cmd) {
    if let Err(e) = host.run_ok(&rm).await {
        tracing::warn!(dir = %dir.display(), error = %cs_core::error_chain(&e), "could not remove the option file's directory");
    }
}

impl Drop for OptionDir {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let host = self.host.clone();
        let dir = self.dir.clone();
        let rm = self.remove_cmd();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { remove_now(host.as_ref(), &dir, rm).await });
            }
            Err(_) => {
                tracing::warn!(dir = %dir.display(), "no runtime to remove the option file's directory");
            }
        }
    }
}

/// The option file holding the credentials and the TLS settings (values quoted, `\` and `"`
/// escaped), in the dump client's dialect.
///
/// TLS follows [`DbUrl::tls`]. MySQL's client (`mariadb_client` false) takes `ssl-mode` as
/// it is. MariaDB's has no `ssl-mode` (`mariadb-dump --help` lists `--ssl`,
/// `--ssl-verify-server-cert`, `--ssl-ca`, `--ssl-cert`, `--ssl-key`): `PREFERRED` and `REQUIRED` become `ssl`
/// without verification, `VERIFY_CA` and `VERIFY_IDENTITY` become `ssl` with
/// `ssl-verify-server-cert`, which checks the name as well as the chain (MariaDB cannot
/// check the chain alone, so `VERIFY_CA` is the stricter check there, never a weaker one).
/// `ssl-ca`, `ssl-cert` and `ssl-key` are the same in both. `DISABLED` (the default) adds
/// nothing. The paths name files on the host where the dump program runs.
pub(crate) fn option_file(url: &DbUrl, mariadb_client: bool) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!(
        "[client]\nuser={}\npassword={}\nhost={}\nport={}\nprotocol=TCP\n",
        q(&url.user),
        q(url.password.expose()),
        q(&url.host),
        url.port
    );
    let tls = &url.tls;
    if tls.enabled() {
        if mariadb_client {
            out.push_str("ssl\n");
            if tls.mode.verifies_ca() {
                out.push_str("ssl-verify-server-cert\n");
            } else {
                out.push_str("skip-ssl-verify-server-cert\n");
            }
        } else {
            out.push_str(&format!("ssl-mode={}\n", tls.mode));
        }
        for (name, p) in tls.files() {
            out.push_str(&format!("{name}={}\n", q(&p.to_string_lossy())));
        }
    }
    out
}

/// The dump program's default `net_buffer_length`, the size up to which it joins rows into
/// one `INSERT` (`1024*1024-1025` rounded to its 1 KiB blocks; `mysqldump.c`'s option table,
/// `mariadb-dump --help --verbose` prints 1046528).
const DEFAULT_NET_BUFFER: u64 = 1_046_528;

/// The `--net-buffer-length` a dump of a server with this `max_allowed_packet` needs, if
/// the default is too big: the dump program joins rows into `INSERT`s of up to that length,
/// and a statement longer than the server's packet limit cannot be loaded back into it (by
/// the stock client or the own restore: `ERROR 1153`). 2 KiB stay free for the command byte
/// and the statement's head; the program's minimum is 4096.
pub(crate) fn net_buffer_for(max_allowed_packet: u64) -> Option<u64> {
    let fits = max_allowed_packet.saturating_sub(2048) / 1024 * 1024;
    (fits < DEFAULT_NET_BUFFER).then_some(fits.max(4096))
}

/// The dump command (the option file must be the first argument); `net_buffer` from
/// [`net_buffer_for`].
pub(crate) fn dump_command(
    program: &str,
    cnf: &str,
    result: &str,
    databases: &[String],
    gtid_off: bool,
    history: bool,
    net_buffer: Option<u64>,
) -> Cmd {
    let mut cmd = Cmd::new(program)
        .arg(format!("--defaults-file={cnf}"))
        .args(MYSQLDUMP_FLAGS.iter().copied());
    if gtid_off {
        cmd = cmd.arg("--set-gtid-purged=OFF");
    }
    if let Some(n) = net_buffer {
        cmd = cmd.arg(format!("--net-buffer-length={n}"));
    }
    if history {
        cmd = cmd.arg(DUMP_HISTORY);
    }
    cmd.arg(format!("--result-file={result}"))
        .arg("--databases")
        .args(databases.iter().cloned())
}

/// The progress task of the running dump (bytes written to the dump file).
pub(crate) const DUMP_TASK: &str = "mysqldump bytes";

/// The bytes of the dump file's end searched to tell which table the dump is at: more than
/// one `INSERT` (at most `--net-buffer-length` long, 1 MiB by default) so that one starts in
/// it. Only the matching lines' heads leave the host (`grep` and `cut` run there).
const TAIL: u64 = 2 << 20;

/// Runs on the dump's host: the heads of the lines of the file's end that name a schema or a
/// table (`$1` the size to search, `$2` the file).
const POSITION_SCRIPT: &str = "tail -c \"$1\" \"$2\" | grep -a -E \
    '^(-- Current Database: |-- Dumping data for table |-- Table structure for table |INSERT INTO )' \
    | cut -c1-300 | tail -n 50";

/// `SELECT` of the summed `data_length` of `schemas`' tables.
fn estimate_sql(schemas: &[String]) -> String {
    let list: Vec<String> = schemas.iter().map(|s| crate::sql::literal(s)).collect();
    format!(
        "SELECT COALESCE(SUM(data_length), 0) FROM information_schema.tables \
         WHERE table_schema IN ({}) AND table_type = 'BASE TABLE'",
        list.join(", ")
    )
}

/// Where a dump is, from the end of its file: the schema (`-- Current Database: `…``) and
/// the table (`-- Dumping data for table `…``, `-- Table structure for table `…`` or
/// `INSERT INTO `…``) named last, as mysqldump's comments (on by default; `dump_table` and
/// `print_comment` in client/mysqldump.c) and its extended inserts announce them. `None`
/// where the end names none.
pub(crate) fn dump_position(tail: &[u8]) -> (Option<String>, Option<String>) {
    const DB: &str = "-- Current Database: ";
    const TABLE: [&str; 3] = [
        "-- Dumping data for table ",
        "-- Table structure for table ",
        "INSERT INTO ",
    ];
    let tail = String::from_utf8_lossy(tail);
    let mut db = None;
    let mut table = None;
    for line in tail.lines() {
        let name = |rest: &str| backquoted(rest).map(|(n, _)| n);
        if let Some(rest) = line.strip_prefix(DB) {
            db = name(rest).or(db);
            table = None;
        } else if let Some(rest) = TABLE.iter().find_map(|p| line.strip_prefix(p)) {
            table = name(rest).or(table);
        }
    }
    (db, table)
}

impl MysqldumpEngine {
    /// Reports the dump file's size every 200 ms (as the native engine's counters), with the
    /// table the dump is at as the message (also kept in `at`, for the closing update); never
    /// returns (dropped when the dump ends). A failed look is skipped: the progress is a view,
    /// the dump's own result decides.
    async fn watch_dump(
        &self,
        file: &Path,
        first_schema: Option<String>,
        estimate: Option<u64>,
        progress: &dyn Progress,
        at: &std::sync::Mutex<Option<String>>,
    ) {
        let Ok(path) = path_str(file) else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `--databases` dumps in the order given (`dump_databases` in client/mysqldump.c):
        // the first until the file names another.
        let (mut last_size, mut db, mut table) = (None, first_schema, None);
        loop {
            tick.tick().await;
            let Ok(meta) = self.host.stat(file).await else {
                continue;
            };
            // Where the dump is: looked up when the file grew.
            if last_size != Some(meta.size) {
                last_size = Some(meta.size);
                let look =
                    Cmd::new("sh").args(["-c", POSITION_SCRIPT, "sh", &TAIL.to_string(), path]);
                if let Ok(out) = self.host.run(&look).await {
                    let (d, t) = dump_position(&out.stdout);
                    if d.is_some() {
                        db = d;
                        table = None;
                    }
                    table = t.or(table);
                }
            }
            let mut u = ProgressUpdate::new(
                DUMP_TASK,
                meta.size,
                estimate.map(|e| e.max(meta.size)),
                Unit::Bytes,
            );
            let message = match (&db, &table) {
                (Some(d), Some(t)) => Some(format!("{d}.{t}")),
                (None, Some(t)) => Some(t.clone()),
                (Some(d), None) => Some(d.clone()),
                (None, None) => None,
            };
            if let Some(m) = &message {
                u = u.message(m.clone());
            }
            *at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = message;
            progress.update(u);
        }
    }
}

#[async_trait]
impl Engine for MysqldumpEngine {
    fn name(&self) -> &str {
        "mysqldump"
    }

    fn host(&self) -> &dyn Host {
        self.host.as_ref()
    }

    async fn dump(&self, job: &DumpJob<'_>) -> Result<Dumped> {
        let (program, mariadb_client) = self.detect().await?;
        let host_url = self.url.clone().unwrap_or_else(|| job.url.clone());
        let dbs = job.options.databases.clone();

        // GTID, the packet limit and the CloudStack version rows, read before the dump.
        let (gtid_on, net_buffer, versions, estimate) = {
            let url = job.url.clone();
            let catalogs = job.catalogs.clone();
            let mysql_server = job.server.vendor == "mysql";
            let schemas = dbs.clone();
            crate::backup::blocking(move || {
                let mut db = db::connect_short(&url)?;
                let gtid = mysql_server
                    && db
                        .one("read gtid_mode", "SELECT @@GLOBAL.gtid_mode")
                        .ok()
                        .flatten()
                        .is_some_and(|v| v.eq_ignore_ascii_case("ON"));
                let packet = db
                    .one("read max_allowed_packet", "SELECT @@max_allowed_packet")?
                    .and_then(|v| v.parse::<u64>().ok());
                let mut versions = Vec::new();
                for (s, c) in &catalogs {
                    versions.push(db::version_row(&mut db, s, c)?);
                }
                // The progress total: the tables' data length, an estimate of the dump's
                // size (text runs larger than InnoDB's pages for numbers, smaller for sparse
                // pages); one cheap read of information_schema, none if it fails.
                let estimate = db
                    .one("estimate the dump's size", &estimate_sql(&schemas))
                    .ok()
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|n| *n > 0);
                Ok((gtid, packet.and_then(net_buffer_for), versions, estimate))
            })
            .await?
        };

        // The option file lives in a private directory of its own, outside the backup, and
        // the guard removes it on every way out: success, error, or the future dropped.
        let private = OptionDir::create(self.host.clone()).await?;
        let cnf = private.dir.join("client.cnf");
        let result = job.dir.join("dump.sql");
        let write = |p: PathBuf, data: Vec<u8>| async move {
            self.host
                .write_atomic(&p, &data, Some(0o600))
                .await
                .map_err(|e| Error::host(format!("write {}", p.display()), e))
        };
        write(
            cnf.clone(),
            option_file(&host_url, mariadb_client).into_bytes(),
        )
        .await?;
        // Created 0600 first: the dump program truncates it and keeps the mode.
        write(result.clone(), Vec::new()).await?;
        let versioned = job
            .catalogs
            .iter()
            .flat_map(|(_, c)| &c.tables)
            .any(|t| t.kind == TableKind::Versioned);
        // Without the flag a dump holds only the current rows of such a table, and the
        // checksums (which cover the history) could not match: the backup then fails.
        let history = versioned && self.knows(&program, DUMP_HISTORY).await;
        let cmd = dump_command(
            &program,
            path_str(&cnf)?,
            path_str(&result)?,
            &dbs,
            gtid_on && !mariadb_client,
            history,
            net_buffer,
        );
        tracing::debug!(cmd = %cmd, host = self.host.name(), "running the dump");
        // Dropping this future (a cancelled backup) drops the running command, which kills the
        // dump program (`LocalHost` spawns with `kill_on_drop`; cs-core's host.rs).
        let at = std::sync::Mutex::new(None);
        let out = {
            let run = self.host.run(&cmd);
            let watch = self.watch_dump(&result, dbs.first().cloned(), estimate, job.progress, &at);
            tokio::pin!(run, watch);
            // Both polled together: the watch never ends, the dump does.
            tokio::select! {
                out = &mut run => out,
                () = &mut watch => unreachable!("the dump watch loops until dropped"),
            }
        };
        if let Ok(meta) = self.host.stat(&result).await {
            let mut u = ProgressUpdate::new(
                DUMP_TASK,
                meta.size,
                estimate.map(|e| e.max(meta.size)),
                Unit::Bytes,
            )
            .finished();
            if let Some(m) = at
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                u = u.message(m);
            }
            job.progress.update(u);
        }
        private.remove().await;
        let out = out.map_err(|e| Error::host(format!("run {program}"), e))?;
        if !out.success() {
            let stderr = out.stderr_lossy();
            let tail: String = stderr
                .trim()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(Error::Dump {
                program,
                databases: dbs.join(", "),
                code: out.code,
                stderr: tail,
            });
        }

        // Checksums from the file itself.
        let counters = Arc::new(Counters::default());
        let size = self
            .host
            .stat(&result)
            .await
            .map_err(|e| Error::host(format!("stat {}", result.display()), e))?
            .size;
        let sums = {
            let reader = HostReader {
                host: self.host.clone(),
                path: path_str(&result)?.to_string(),
                offset: 0,
                buf: Vec::new(),
                pos: 0,
                eof: false,
                runtime: tokio::runtime::Handle::current(),
            };
            let catalogs = job.catalogs.clone();
            let c = counters.clone();
            with_progress(
                "checksum dump",
                (None, Some(size)),
                counters,
                job.progress,
                move || parse_dump(reader, &catalogs, &c),
            )
            .await?
        };

        let file = match job.options.compression {
            Compression::None => "dump.sql".to_string(),
            Compression::Zstd { level } => {
                let zst = job.dir.join("dump.sql.zst");
                self.host
                    .run_ok(
                        &Cmd::new("zstd")
                            .args(["-q", "--rm", "-f"])
                            .arg(format!("-{}", level.clamp(1, 19)))
                            .arg(path_str(&result)?)
                            .arg("-o")
                            .arg(path_str(&zst)?),
                    )
                    .await
                    .map_err(|e| Error::host("compress the dump", e))?;
                let _ = self
                    .host
                    .run(&Cmd::new("chmod").arg("600").arg(path_str(&zst)?))
                    .await;
                "dump.sql.zst".to_string()
            }
        };
        let path = job.dir.join(&file);
        let size = self
            .host
            .stat(&path)
            .await
            .map_err(|e| Error::host(format!("stat {}", path.display()), e))?
            .size;
        let sha = crate::verify::sha256_on(self.host.as_ref(), std::slice::from_ref(&path))
            .await?
            .remove(&path)
            .ok_or_else(|| {
                Error::invalid(format!("sha256sum gave no hash for {}", path.display()))
            })?;

        let mut schemas = Vec::new();
        for (i, (name, cat)) in job.catalogs.iter().enumerate() {
            let tables = cat
                .tables
                .iter()
                .map(|t| {
                    let s = sums
                        .get(&(name.clone(), t.name.clone()))
                        .copied()
                        .unwrap_or_default();
                    TableEntry {
                        name: t.name.clone(),
                        rows: s.rows(),
                        checksum: s.hex(),
                        files: Vec::new(),
                    }
                })
                .collect();
            schemas.push(schema_entry(
                name,
                cat,
                tables,
                versions[i].clone(),
                SchemaFiles::default(),
            ));
        }
        let mut flags: Vec<&str> = MYSQLDUMP_FLAGS.to_vec();
        if gtid_on && !mariadb_client {
            flags.push("--set-gtid-purged=OFF");
        }
        if history {
            flags.push(DUMP_HISTORY);
        }
        Ok(Dumped {
            schemas,
            files: vec![FileEntry {
                path: file,
                size,
                sha256: sha,
            }],
            layout: Layout::SingleFile,
            options: serde_json::json!({
                "program": program,
                "host": self.host.name(),
                "flags": flags,
                "compression": compression_name(job.options.compression),
                "databases": dbs,
            }),
            binlog: None,
            notes: Vec::new(),
        })
    }
}

/// Reads a file on a host in pieces of 8 MiB with `dd`, from a blocking thread.
struct HostReader {
    host: Arc<dyn Host>,
    path: String,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    runtime: tokio::runtime::Handle,
}

const PIECE: u64 = 8 << 20;

impl Read for HostReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.eof {
                return Ok(0);
            }
            let cmd = Cmd::new("dd")
                .arg(format!("if={}", self.path))
                .arg("iflag=skip_bytes,count_bytes")
                .arg(format!("skip={}", self.offset))
                .arg(format!("count={PIECE}"))
                .arg("bs=1M")
                .arg("status=none");
            let output = self
                .runtime
                .block_on(self.host.run_ok(&cmd))
                .map_err(std::io::Error::other)?;
            self.buf = output.stdout;
            self.pos = 0;
            self.offset += self.buf.len() as u64;
            if (self.buf.len() as u64) < PIECE {
                self.eof = true;
            }
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Row counts and checksums per `(schema, table)` of a dump, over the stored columns.
pub(crate) fn parse_dump(
    reader: impl Read,
    catalogs: &[(String, Catalog)],
    counters: &Counters,
) -> Result<BTreeMap<(String, String), RowSum>> {
    let mut split = Splitter::new(std::io::BufReader::with_capacity(1 << 20, reader));
    let mut current: Option<usize> = None;
    let mut sums: BTreeMap<(String, String), RowSum> = BTreeMap::new();
    let mut sequences: BTreeMap<String, SequenceDef> = BTreeMap::new();
    let mut n = 0u64;
    let file = "dump.sql";
    while let Some(stmt) = split
        .next_statement()
        .map_err(|e| Error::io("read", Path::new(file), e))?
    {
        n += 1;
        counters
            .bytes
            .fetch_add(stmt.text.len() as u64 + 2, Ordering::Relaxed);
        if let Some(db) = use_target(&stmt.text) {
            current = catalogs.iter().position(|(name, _)| *name == db);
            continue;
        }
        let parse_err = |reason: String| Error::Parse {
            file: file.to_string(),
            reason: format!("statement {n} (line {}): {reason}", stmt.line),
        };
        if let Some(def) = SequenceDef::parse(&stmt.text) {
            sequences.insert(def.name.clone(), def);
            continue;
        }
        if let Some((name, next)) = setval(&stmt.text) {
            let (Some(si), Some(def)) = (current, sequences.get(&name)) else {
                return Err(parse_err(format!(
                    "SETVAL of `{name}` before its CREATE SEQUENCE"
                )));
            };
            let (schema, cat) = &catalogs[si];
            let table = cat
                .table(&name)
                .ok_or_else(|| parse_err(format!("unknown sequence `{name}`")))?;
            let values = def.row(next);
            let row: Vec<Option<&[u8]>> = table
                .stored()
                .map(|c| {
                    values
                        .iter()
                        .find(|(n, _)| *n == c.name)
                        .map(|(_, v)| Some(v.as_bytes()))
                        .ok_or_else(|| parse_err(format!("sequence column `{}`", c.name)))
                })
                .collect::<Result<_>>()?;
            // A sequence has one row: the last SETVAL is its state.
            let sum = sums.entry((schema.clone(), name)).or_default();
            *sum = RowSum::default();
            sum.add(row);
            continue;
        }
        let Some(head) = insert_head(&stmt.text) else {
            continue;
        };
        let Some(si) = current else {
            return Err(parse_err("an INSERT before any USE".into()));
        };
        let (schema, cat) = &catalogs[si];
        let table = cat
            .table(&head.table)
            .ok_or_else(|| parse_err(format!("unknown table `{}`", head.table)))?;
        let positions: Vec<usize> = match &head.columns {
            Some(cols) => table
                .stored()
                .map(|c| {
                    cols.iter()
                        .position(|x| *x == c.name)
                        .ok_or_else(|| parse_err(format!("column `{}` missing", c.name)))
                })
                .collect::<Result<_>>()?,
            None => table
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.generated)
                .map(|(i, _)| i)
                .collect(),
        };
        let width = head.columns.as_ref().map_or(table.columns.len(), Vec::len);
        let sum = sums
            .entry((schema.clone(), table.name.clone()))
            .or_default();
        let mut bad_width = None;
        let rows = for_each_row(&stmt.text, &head, |vals| {
            if vals.len() != width {
                bad_width = Some(vals.len());
                return;
            }
            sum.add(positions.iter().map(|&p| vals[p]));
        })
        .map_err(parse_err)?;
        if let Some(w) = bad_width {
            return Err(parse_err(format!(
                "a row of `{}` has {w} values, expected {width}",
                table.name
            )));
        }
        counters.rows.fetch_add(rows, Ordering::Relaxed);
    }
    Ok(sums)
}

/// A `CREATE SEQUENCE` statement as mariadb-dump writes it (the server's `SHOW CREATE
/// SEQUENCE`: `` CREATE SEQUENCE `s` start with 1 minvalue 1 maxvalue 9223372036854775806
/// increment by 1 cache 1000 nocycle ENGINE=InnoDB ``; MariaDB's `sql/sql_sequence.cc`,
/// `sequence_definition::print`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SequenceDef {
    name: String,
    start: String,
    min: String,
    max: String,
    increment: String,
    cache: String,
    cycle: bool,
}

impl SequenceDef {
    fn parse(stmt: &[u8]) -> Option<SequenceDef> {
        let text = std::str::from_utf8(stmt).ok()?.trim();
        let rest = text.strip_prefix("CREATE SEQUENCE ")?;
        let (name, rest) = backquoted(rest)?;
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        let after = |key: &[&str]| -> Option<String> {
            let at = words.windows(key.len()).position(|w| w == key)?;
            words.get(at + key.len()).map(|v| v.to_string())
        };
        Some(SequenceDef {
            name,
            start: after(&["start", "with"])?,
            min: after(&["minvalue"])?,
            max: after(&["maxvalue"])?,
            increment: after(&["increment", "by"])?,
            cache: if words.contains(&"nocache") {
                "0".into()
            } else {
                after(&["cache"])?
            },
            cycle: words.contains(&"cycle"),
        })
    }

    /// The sequence's row after `SETVAL(…, next, 0)` on a fresh sequence, by column name, as
    /// the server prints it; the cycle count starts at 0 (mariadb-dump does not keep it).
    fn row(&self, next: String) -> [(&'static str, String); 8] {
        [
            ("next_not_cached_value", next),
            ("minimum_value", self.min.clone()),
            ("maximum_value", self.max.clone()),
            ("start_value", self.start.clone()),
            ("increment", self.increment.clone()),
            ("cache_size", self.cache.clone()),
            ("cycle_option", if self.cycle { "1" } else { "0" }.into()),
            ("cycle_count", "0".into()),
        ]
    }
}

/// `DO SETVAL(`s`, 110, 0)` (or `SELECT SETVAL(…)`, as older mariadb-dump writes it): the
/// sequence and its next value.
fn setval(stmt: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(stmt).ok()?.trim();
    let rest = text
        .strip_prefix("DO SETVAL(")
        .or_else(|| text.strip_prefix("SELECT SETVAL("))?;
    let (name, rest) = backquoted(rest)?;
    let value = rest
        .trim_start()
        .strip_prefix(',')?
        .split(',')
        .next()?
        .trim();
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        .then(|| (name, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cs_core::Secret;

    #[test]
    fn the_option_file_carries_tls_in_the_clients_dialect() {
        let url: DbUrl =
            "mysql://cloud:pw@db1/cloud?ssl-mode=VERIFY_CA&ssl-ca=/etc/ca.pem&ssl-cert=/c.pem&ssl-key=/k.pem"
                .parse()
                .unwrap();
        let maria = option_file(&url, true);
        for line in [
            "\nssl\n",
            "\nssl-verify-server-cert\n",
            "\nssl-ca=\"/etc/ca.pem\"\n",
            "\nssl-cert=\"/c.pem\"\n",
            "\nssl-key=\"/k.pem\"\n",
        ] {
            assert!(maria.contains(line), "{line:?} in {maria}");
        }
        assert!(!maria.contains("ssl-mode"), "{maria}");
        let mysql = option_file(&url, false);
        assert!(mysql.contains("\nssl-mode=VERIFY_CA\n"), "{mysql}");
        assert!(!mysql.contains("verify-server-cert"), "{mysql}");
        let required: DbUrl = "mysql://cloud:pw@db1?ssl-mode=required".parse().unwrap();
        assert!(option_file(&required, true).contains("\nskip-ssl-verify-server-cert\n"));
        let plain = DbUrl::new("db1", 3306, "cloud", Secret::new("pw"));
        assert!(!option_file(&plain, true).contains("ssl"));
    }

    #[test]
    fn statements_fit_the_servers_packet_limit() {
        // MariaDB's default 16 MiB and 1 MiB: the dump program's default fits.
        assert_eq!(net_buffer_for(16 * 1024 * 1024), None);
        assert_eq!(net_buffer_for(1024 * 1024), None);
        assert_eq!(net_buffer_for(1024 * 1024 - 1), Some(1_045_504));
        assert_eq!(net_buffer_for(96 * 1024), Some(94 * 1024));
        // Below the program's minimum: its minimum.
        assert_eq!(net_buffer_for(1024), Some(4096));
    }

    #[test]
    fn the_password_is_in_the_option_file_never_in_argv() {
        let url = DbUrl::new("db1", 3306, "cloud", Secret::new("pa\"ss\\word"));
        let cnf = option_file(&url, true);
        assert!(cnf.contains("password=\"pa\\\"ss\\\\word\""), "{cnf}");
        let cmd = dump_command(
            "mariadb-dump",
            "/b/.cnf",
            "/b/dump.sql",
            &["cloud".into(), "cloud_usage".into()],
            false,
            false,
            None,
        );
        let argv: Vec<&str> = cmd.argv().collect();
        assert_eq!(argv[0], "--defaults-file=/b/.cnf");
        for flag in [
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
        ] {
            assert!(argv.contains(&flag), "{flag}");
        }
        assert_eq!(
            &argv[argv.len() - 3..],
            ["--databases", "cloud", "cloud_usage"]
        );
        assert!(!argv.iter().any(|a| a.contains("pa\"ss")));
        assert!(!argv.contains(&"--set-gtid-purged=OFF"));
        assert!(!argv.contains(&DUMP_HISTORY));
        assert!(!argv.iter().any(|a| a.starts_with("--net-buffer-length")));
        let gtid = dump_command(
            "mysqldump",
            "/c",
            "/r",
            &["cloud".into()],
            true,
            true,
            Some(4096),
        );
        assert!(gtid.argv().any(|a| a == "--set-gtid-purged=OFF"));
        assert!(gtid.argv().any(|a| a == DUMP_HISTORY));
        assert!(gtid.argv().any(|a| a == "--net-buffer-length=4096"));
    }

    #[test]
    fn sequences_are_read_from_their_create_and_setval() {
        let def = SequenceDef::parse(
            b"CREATE SEQUENCE `s``1` start with -5 minvalue -10 maxvalue 1000 increment by -1 nocache cycle ENGINE=InnoDB",
        )
        .unwrap();
        assert_eq!(def.name, "s`1");
        assert_eq!(
            (
                &def.start[..],
                &def.min[..],
                &def.max[..],
                &def.increment[..],
                &def.cache[..]
            ),
            ("-5", "-10", "1000", "-1", "0")
        );
        assert!(def.cycle);
        let plain = SequenceDef::parse(
            b"CREATE SEQUENCE `s` start with 1 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB",
        )
        .unwrap();
        assert!(!plain.cycle);
        assert_eq!(plain.cache, "1000");
        assert_eq!(plain.row("1001".into())[0].1, "1001");
        assert!(SequenceDef::parse(b"CREATE TABLE `t` (a int)").is_none());
        assert_eq!(
            setval(b"DO SETVAL(`s``1`, -6, 0)"),
            Some(("s`1".to_string(), "-6".to_string()))
        );
        assert_eq!(
            setval(b"SELECT SETVAL(`s`, 110, 0)"),
            Some(("s".to_string(), "110".to_string()))
        );
        assert_eq!(setval(b"DO SLEEP(1)"), None);
    }

    #[test]
    fn the_dump_position_is_the_last_schema_and_table_named() {
        let tail = b"INSERT INTO `a` VALUES (1);\n--\n-- Current Database: `cloud`\n--\n\n\
            -- Table structure for table `host`\n--\nCREATE TABLE `host` (\n\
            -- Dumping data for table `vm``x`\n--\nINSERT INTO";
        assert_eq!(
            dump_position(tail),
            (Some("cloud".to_string()), Some("vm`x".to_string()))
        );
        // A new schema forgets the previous schema's table.
        let tail = b"-- Dumping data for table `a`\n-- Current Database: `cloud_usage`\n";
        assert_eq!(dump_position(tail), (Some("cloud_usage".to_string()), None));
        // The cut first line of a tail names nothing.
        assert_eq!(
            dump_position(b"ping data for table `a`\nINSERT"),
            (None, None)
        );
    }
}
