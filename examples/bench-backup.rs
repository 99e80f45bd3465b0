//! Backup and restore benchmark against a private lab MariaDB.
//!
//! ```text
//! cargo run --release --example bench-backup -- [--rows N] [--dump-threads N]
//!     [--restore-threads N] [--runs K] [--warmup K] [--buffer-pool SIZE] [--json]
//!     [--skip mariadb-dump,mydumper,outfile|all]
//! ```
//!
//! Seeds `cloud` + `cloud_usage` (about `--rows` rows across `event`, `vm_stats`,
//! `usage_event`, `cloud_usage` and friends; 5 million ≈ 1 GB), then measures, as medians of
//! `--runs` runs: `mariadb-dump` with the engine's flags, `mydumper` with equal threads,
//! `SELECT … INTO OUTFILE` per table on equal threads (the server's raw export rate), the native
//! dump; and for restore `mariadb < dump.sql`, `myloader`, the native restore (scratch load,
//! verification of every checksum, swap) and `LOAD DATA INFILE` per table (the server's raw
//! import rate, into the emptied tables with all their keys). Prints a table and the ratios,
//! or `--json`. The native dump runs in a child process so that its peak RSS (VmHWM) is its
//! own.
//!
//! Every timed run starts from the same state: the previous run's output (files, restored
//! schemas, loaded rows) is removed and the server left to finish its background work
//! (purge, page flushing, statistics) before the clock starts, for every method alike. The
//! clock then covers the dump or the restore only.
//!
//! Each method also runs `--warmup` times, untimed, before its measured runs. The first run
//! of a method pays for state that later runs find ready, and that depends on what ran before
//! it rather than on the method: rows not yet in the buffer pool, and memory the machine has
//! not handed to the page cache yet (on a VM whose host takes freed memory back, the first
//! dump after a while spent twice the kernel time of the next ones writing the same files).
//! With a buffer pool that holds the data, every measured dump reads from memory; a smaller
//! `--buffer-pool` makes every dump read part of the data from disk, which measures the disk
//! as much as the dumper.
//!
//! The data comes from `cs_lab::seed` (CloudStack 4.18 schema subset, real procedures,
//! version rows up to 4.19.1.0, `--rows` generated rows in the big tables).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use cs_backup::{
    BackupOptions, MYSQLDUMP_FLAGS, NativeEngine, RestoreMode, RestoreOptions, backup, drop_parked,
    restore,
};
use cs_core::{DbUrl, NoProgress};
use cs_lab::{MariaDb, MariaDbOptions};

/// Backup/restore benchmark.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::BENCH)]
struct Args {
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
    /// Approximate rows to seed across the big tables.
    #[arg(long, default_value_t = 5_000_000)]
    rows: u64,
    /// Threads of every dump that has them: mydumper, INTO OUTFILE and the native dump (the
    /// engine's default). A dump keeps both the server and the client busy, and more
    /// connections than cores overlap the two.
    #[arg(long, default_value_t = 4)]
    dump_threads: usize,
    /// Threads of every restore that has them: myloader, LOAD DATA and the native restore. A
    /// restore is bound by the server's CPU, so one connection per core is fastest (measured:
    /// on 2 cores, 4 connections take 10% longer than 2).
    #[arg(long, default_value_t = 2)]
    restore_threads: usize,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Untimed runs of each method before its measured ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// InnoDB buffer pool of the lab server. The default holds the default data set (about
    /// 1.4 GiB with its indexes), as on a database server sized the way MariaDB advises.
    #[arg(long, default_value = "2G")]
    buffer_pool: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Baselines to leave out while iterating, comma-separated: `mariadb-dump` (and with it
    /// `mariadb < dump`), `mydumper` (and `myloader`), `outfile` (and `LOAD DATA INFILE`), or
    /// `all`. The native dump and restore always run.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Internal: run one native dump in this process and print its time and peak RSS.
    #[arg(long, hide = true)]
    child_dump: Option<PathBuf>,
}

const DBS: [&str; 2] = ["cloud", "cloud_usage"];

fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    if let Some(dir) = &args.child_dump {
        return child_dump(dir, args.dump_threads);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)] // The example owns the terminal.
            {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The native dump in a child process: the URL comes in `CS_DB_URL`.
fn child_dump(dir: &Path, threads: usize) -> ExitCode {
    let url: DbUrl = match std::env::var("CS_DB_URL").map(|u| u.parse()) {
        Ok(Ok(u)) => u,
        _ => return ExitCode::from(2),
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let options = BackupOptions::default()
        .databases(DBS.iter().map(|s| s.to_string()).collect())
        .threads(threads);
    let started = Instant::now();
    let result = rt.block_on(backup(
        &NativeEngine::new(),
        &url,
        dir,
        &options,
        &NoProgress,
    ));
    let secs = started.elapsed().as_secs_f64();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    #[allow(clippy::print_stdout, clippy::print_stderr)] // The child reports to its parent.
    match result {
        Ok(m) => {
            println!(
                "{}",
                serde_json::json!({"secs": secs, "rss_kib": hwm, "bytes": m.total_bytes(), "rows": m.total_rows()})
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("native dump failed: {}", cs_core::error_chain(&e));
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::disallowed_methods)] // The benchmark runs the tools it compares against.
fn tool(program: &str) -> Command {
    Command::new(program)
}

fn sh(cmd: &mut Command, what: &str) -> Result<String, BoxError> {
    let out = cmd.stderr(Stdio::piped()).stdout(Stdio::piped()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Lab {
    server: MariaDb,
    url: DbUrl,
    cnf: PathBuf,
    outfile_dir: PathBuf,
    work: tempfile::TempDir,
}

impl Lab {
    fn sql(&self, sql: &str) -> Result<String, BoxError> {
        sh(
            tool("mariadb")
                .arg(format!("--defaults-extra-file={}", self.cnf.display()))
                .args(["--batch", "--skip-column-names", "-e", sql]),
            "mariadb",
        )
    }

    /// Waits until the machine is idle: the kernel has written back the files of earlier runs
    /// (`sync`), InnoDB has written its dirty pages out and its purge has caught up, and the
    /// server process used under 3% of a CPU for a second (statistics recomputed, dropped
    /// tables gone). Without this a measurement pays for the background work the previous one
    /// left behind (a restore right after another restore's million-row load, or the
    /// write-back of a dump file that was never synced), which depends on the order of the
    /// measurements, not on the method. Gives up after 10 minutes.
    ///
    /// InnoDB writes dirty pages at `innodb_io_capacity` (200 pages a second by default): the
    /// pages of a load would still be going out minutes later, during the next measurement.
    /// While waiting, the flushing rate is raised and its target set to no dirty pages; the
    /// server's own settings are back before the clock starts.
    fn quiesce(&self) -> Result<(), BoxError> {
        sh(&mut tool("sync"), "sync")?;
        let saved = self.sql(
            "SELECT @@GLOBAL.innodb_io_capacity, @@GLOBAL.innodb_io_capacity_max, \
             @@GLOBAL.innodb_max_dirty_pages_pct",
        )?;
        let saved: Vec<&str> = saved.split_whitespace().collect();
        let [capacity, capacity_max, dirty_pct] = saved[..] else {
            return Err(format!("unexpected InnoDB settings {saved:?}").into());
        };
        self.sql(
            "SET GLOBAL innodb_io_capacity_max = 100000; SET GLOBAL innodb_io_capacity = 100000; \
             SET GLOBAL innodb_max_dirty_pages_pct = 0",
        )?;
        let idle = self.wait_idle();
        self.sql(&format!(
            "SET GLOBAL innodb_max_dirty_pages_pct = {dirty_pct}; \
             SET GLOBAL innodb_io_capacity = {capacity}; \
             SET GLOBAL innodb_io_capacity_max = {capacity_max}"
        ))?;
        idle
    }

    fn wait_idle(&self) -> Result<(), BoxError> {
        let pid: u32 = std::fs::read_to_string(self.server.dir().join("mysqld.pid"))?
            .trim()
            .parse()?;
        let ticks = || -> Result<u64, BoxError> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            // Fields after the `(comm)`: state is the 1st, utime the 12th, stime the 13th.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            Ok(f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0))
        };
        let status = |name: &str| -> Result<u64, BoxError> {
            Ok(self
                .sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"))?
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0))
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(600) {
            let history = status("Innodb_history_list_length")?;
            let dirty = status("Innodb_buffer_pool_pages_dirty")?;
            let before = ticks()?;
            std::thread::sleep(Duration::from_secs(1));
            // Clock ticks are 1/100 s: 3 ticks in a second is 3% of a CPU.
            if history == 0 && dirty <= 16 && ticks()? - before < 3 {
                return Ok(());
            }
        }
        Ok(())
    }

    fn drop_dbs(&self) -> Result<(), BoxError> {
        self.sql("DROP DATABASE IF EXISTS cloud; DROP DATABASE IF EXISTS cloud_usage;")?;
        Ok(())
    }

    fn tables(&self) -> Result<Vec<(String, String, u64)>, BoxError> {
        Ok(self
            .sql(
                "SELECT TABLE_SCHEMA, TABLE_NAME, DATA_LENGTH FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA IN ('cloud','cloud_usage') AND TABLE_TYPE='BASE TABLE' \
                 ORDER BY DATA_LENGTH DESC",
            )?
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 3).then(|| (f[0].into(), f[1].into(), f[2].parse().unwrap_or(0)))
            })
            .collect())
    }

    fn count(&self) -> Result<u64, BoxError> {
        let mut n = 0;
        for (s, t, _) in self.tables()? {
            n += self
                .sql(&format!("SELECT COUNT(*) FROM `{s}`.`{t}`"))?
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        Ok(n)
    }

    /// Runs `f(schema, table)` over every table on `threads` threads, biggest first.
    fn per_table(
        &self,
        threads: usize,
        f: impl Fn(&str, &str) -> Result<(), BoxError> + Sync,
    ) -> Result<(), BoxError> {
        let queue = std::sync::Mutex::new(self.tables()?);
        let errors = std::sync::Mutex::new(Vec::<String>::new());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let next = {
                            let mut q = queue.lock().unwrap();
                            if q.is_empty() {
                                None
                            } else {
                                Some(q.remove(0))
                            }
                        };
                        let Some((schema, table, _)) = next else {
                            break;
                        };
                        if let Err(e) = f(&schema, &table) {
                            errors.lock().unwrap().push(e.to_string());
                        }
                    }
                });
            }
        });
        match errors.into_inner().unwrap().into_iter().next() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Seeds CloudStack-shaped schemas with `cs_lab::seed`: the 4.18 schema subset, the real
/// procedures, the version history up to 4.19.1.0, and about `rows` generated rows in the big
/// tables.
fn seed(lab: &Lab, rows: u64) -> Result<(), BoxError> {
    let mut opts = cs_lab::SeedOptions::new("4.19.1.0".parse()?, "cloud", "cloud_usage");
    opts.scale = rows;
    cs_lab::seed(&lab.url, &opts)?;
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
struct Measure {
    name: &'static str,
    kind: &'static str,
    median_secs: f64,
    runs: Vec<f64>,
    bytes: u64,
    note: String,
}

/// Times `runs` runs of `f` after `warmup` untimed ones; before each, untimed, `prep`
/// (removing the previous run's output) and [`Lab::quiesce`], so that every method starts
/// from the same idle server.
fn time(
    lab: &Lab,
    (warmup, runs): (usize, usize),
    mut prep: impl FnMut() -> Result<(), BoxError>,
    mut f: impl FnMut() -> Result<(), BoxError>,
) -> Result<Vec<f64>, BoxError> {
    let mut v = Vec::new();
    for i in 0..warmup + runs {
        prep()?;
        lab.quiesce()?;
        let t = Instant::now();
        f()?;
        if i >= warmup {
            v.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(v)
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().map(|m| {
                if m.is_dir() {
                    dir_size(&e.path())
                } else {
                    m.len()
                }
            });
            n += m.unwrap_or(0);
        }
    }
    n
}

fn fresh(p: &Path) -> Result<(), BoxError> {
    if p.exists() {
        std::fs::remove_dir_all(p)?;
    }
    std::fs::create_dir_all(p)?;
    Ok(())
}

fn run(args: &Args) -> Result<(), BoxError> {
    let work = tempfile::Builder::new()
        .prefix("cs-bench-")
        .tempdir_in("/tmp")?;
    let outfile_dir = work.path().join("outfile");
    std::fs::create_dir_all(&outfile_dir)?;
    let server = MariaDb::start_with(&MariaDbOptions {
        server_args: vec![
            format!("--secure-file-priv={}", outfile_dir.display()),
            format!("--innodb-buffer-pool-size={}", args.buffer_pool),
            "--innodb-log-file-size=512M".into(),
        ],
        ..MariaDbOptions::default()
    })?;
    let url = server.root();
    let cnf = work.path().join("client.cnf");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let text = format!(
            "[client]\nuser={u}\npassword=\"{p}\"\nhost=127.0.0.1\nport={port}\n\
             [mydumper]\nuser={u}\npassword={p}\nhost=127.0.0.1\nport={port}\n\
             [myloader]\nuser={u}\npassword={p}\nhost=127.0.0.1\nport={port}\n",
            u = url.user,
            p = url.password.expose(),
            port = url.port
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&cnf)?
            .write_all(text.as_bytes())?;
    }
    let lab = Lab {
        server,
        url,
        cnf,
        outfile_dir,
        work,
    };
    let say = |s: String| {
        if !args.json {
            #[allow(clippy::print_stderr)] // Progress of the benchmark itself.
            {
                eprintln!("{s}");
            }
        }
    };
    say(format!(
        "lab MariaDB {} on 127.0.0.1:{}, seeding ~{} rows…",
        lab.server.version(),
        lab.server.port(),
        args.rows
    ));
    let t = Instant::now();
    seed(&lab, args.rows)?;
    let rows = lab.count()?;
    let data: u64 = lab.tables()?.iter().map(|t| t.2).sum();
    say(format!(
        "seeded {rows} rows, {} MiB of InnoDB data in {:.0?}",
        data >> 20,
        t.elapsed()
    ));
    let threads = args.dump_threads;
    let skip = |name: &str| args.skip.iter().any(|s| s == name || s == "all");
    let dbs: Vec<String> = DBS.iter().map(|s| s.to_string()).collect();
    let mut results: Vec<Measure> = Vec::new();
    let cnf_arg = format!("--defaults-extra-file={}", lab.cnf.display());
    let w = lab.work.path().to_path_buf();

    // --- Dumps.
    let dump_file = w.join("dump.sql");
    if !skip("mariadb-dump") {
        say("dump: mariadb-dump…".into());
        let runs = time(
            &lab,
            (args.warmup, args.runs),
            || {
                let _ = std::fs::remove_file(&dump_file);
                Ok(())
            },
            || {
                sh(
                    tool("mariadb-dump")
                        .arg(&cnf_arg)
                        .args(MYSQLDUMP_FLAGS)
                        .arg(format!("--result-file={}", dump_file.display()))
                        .arg("--databases")
                        .args(&dbs),
                    "mariadb-dump",
                )
                .map(|_| ())
            },
        )?;
        results.push(Measure {
            name: "mariadb-dump",
            kind: "dump",
            median_secs: median(runs.clone()),
            runs,
            bytes: std::fs::metadata(&dump_file)?.len(),
            note: "single thread, same flags as the mysqldump engine".into(),
        });
    }

    let myd = w.join("mydumper");
    if !skip("mydumper") {
        say("dump: mydumper…".into());
        let runs = time(
            &lab,
            (args.warmup, args.runs),
            || fresh(&myd),
            || {
                sh(
                    tool("mydumper")
                        .arg(format!("--defaults-file={}", lab.cnf.display()))
                        .args(["--regex", "^(cloud|cloud_usage)\\."])
                        .args(["-G", "-E", "-R", "--trx-consistency-only", "-r", "500000"])
                        .arg(format!("--threads={threads}"))
                        .arg(format!("--outputdir={}", myd.display())),
                    "mydumper",
                )
                .map(|_| ())
            },
        )?;
        results.push(Measure {
            name: "mydumper",
            kind: "dump",
            median_secs: median(runs.clone()),
            runs,
            bytes: dir_size(&myd),
            note: format!("{threads} threads, 500k-row chunks"),
        });
    }

    if !skip("outfile") {
        say("dump: SELECT … INTO OUTFILE…".into());
        let runs = time(
            &lab,
            (args.warmup, args.runs),
            || fresh(&lab.outfile_dir),
            || {
                lab.per_table(threads, |s, t| {
                    let f = lab.outfile_dir.join(format!("{s}.{t}.txt"));
                    lab.sql(&format!(
                        "SELECT * FROM `{s}`.`{t}` INTO OUTFILE '{}' CHARACTER SET utf8mb4",
                        f.display()
                    ))
                    .map(|_| ())
                })
            },
        )?;
        results.push(Measure {
            name: "INTO OUTFILE",
            kind: "dump",
            median_secs: median(runs.clone()),
            runs,
            bytes: dir_size(&lab.outfile_dir),
            note: format!("per table on {threads} threads: the server's raw export rate"),
        });
    }

    say("dump: native…".into());
    let native_dir = w.join("native");
    let mut rss = Vec::new();
    let mut native_bytes = 0;
    let runs = time(
        &lab,
        (args.warmup, args.runs),
        || {
            if native_dir.exists() {
                std::fs::remove_dir_all(&native_dir)?;
            }
            Ok(())
        },
        || {
            let out = sh(
                tool(&std::env::current_exe()?.to_string_lossy())
                    .arg("--child-dump")
                    .arg(&native_dir)
                    .arg(format!("--dump-threads={threads}"))
                    .env("CS_DB_URL", lab.url.expose()),
                "native dump",
            )?;
            let v: serde_json::Value = serde_json::from_str(out.trim())?;
            rss.push(v["rss_kib"].as_u64().unwrap_or(0));
            native_bytes = v["bytes"].as_u64().unwrap_or(0);
            Ok(())
        },
    )?;
    let peak_rss_mib = rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    results.push(Measure {
        name: "native dump",
        kind: "dump",
        median_secs: median(runs.clone()),
        runs,
        bytes: native_bytes,
        note: format!("{threads} connections, one snapshot; peak RSS {peak_rss_mib:.1} MiB"),
    });

    // --- Restores (each into an empty server state).
    let threads = args.restore_threads;
    let check_rows = |what: &str| -> Result<(), BoxError> {
        let n = lab.count()?;
        if n != rows {
            return Err(format!("{what} restored {n} rows, expected {rows}").into());
        }
        Ok(())
    };
    if !skip("mariadb-dump") {
        say("restore: mariadb < dump.sql…".into());
        let runs = time(
            &lab,
            (args.warmup, args.runs),
            || lab.drop_dbs(),
            || {
                sh(
                    tool("mariadb")
                        .arg(&cnf_arg)
                        .arg("--max-allowed-packet=1G")
                        .stdin(std::fs::File::open(&dump_file)?),
                    "mariadb < dump.sql",
                )
                .map(|_| ())
            },
        )?;
        check_rows("mariadb")?;
        results.push(Measure {
            name: "mariadb < dump",
            kind: "restore",
            median_secs: median(runs.clone()),
            runs,
            bytes: std::fs::metadata(&dump_file)?.len(),
            note: "single thread".into(),
        });
    }

    if !skip("mydumper") {
        say("restore: myloader…".into());
        let runs = time(
            &lab,
            (args.warmup, args.runs),
            || lab.drop_dbs(),
            || {
                sh(
                    tool("myloader")
                        .arg(format!("--defaults-file={}", lab.cnf.display()))
                        .arg(format!("--directory={}", myd.display()))
                        .arg(format!("--threads={threads}"))
                        .arg("--overwrite-tables"),
                    "myloader",
                )
                .map(|_| ())
            },
        )?;
        check_rows("myloader")?;
        results.push(Measure {
            name: "myloader",
            kind: "restore",
            median_secs: median(runs.clone()),
            runs,
            bytes: dir_size(&myd),
            note: format!("{threads} threads"),
        });
    }

    say("restore: native…".into());
    let rt = tokio::runtime::Runtime::new()?;
    let options = RestoreOptions::default()
        .threads(threads)
        .mode(RestoreMode::Swap);
    let runs = time(
        &lab,
        (args.warmup, args.runs),
        || lab.drop_dbs(),
        || {
            let report = rt.block_on(restore(&native_dir, &lab.url, &options, &NoProgress))?;
            rt.block_on(drop_parked(&lab.url, &report))?;
            Ok(())
        },
    )?;
    check_rows("native restore")?;
    results.push(Measure {
        name: "native restore",
        kind: "restore",
        median_secs: median(runs.clone()),
        runs,
        bytes: native_bytes,
        note: format!("{threads} connections: scratch load, every checksum verified, swap"),
    });

    if !skip("outfile") {
        say("restore: LOAD DATA INFILE…".into());
        let runs = time(
            &lab,
            (args.warmup, args.runs),
            || {
                lab.per_table(threads, |s, t| {
                    lab.sql(&format!("TRUNCATE TABLE `{s}`.`{t}`")).map(|_| ())
                })
            },
            || {
                lab.per_table(threads, |s, t| {
                    let f = lab.outfile_dir.join(format!("{s}.{t}.txt"));
                    lab.sql(&format!(
                        "SET foreign_key_checks = 0, unique_checks = 0; \
                         LOAD DATA INFILE '{}' INTO TABLE `{s}`.`{t}` CHARACTER SET utf8mb4",
                        f.display()
                    ))
                    .map(|_| ())
                })
            },
        )?;
        check_rows("LOAD DATA")?;
        results.push(Measure {
            name: "LOAD DATA INFILE",
            kind: "restore",
            median_secs: median(runs.clone()),
            runs,
            bytes: dir_size(&lab.outfile_dir),
            note: format!(
                "per table on {threads} threads into empty tables: the server's raw import rate"
            ),
        });
    }

    let get = |n: &str| {
        results
            .iter()
            .find(|m| m.name == n)
            .map_or(f64::NAN, |m| m.median_secs)
    };
    let mut ratios = BTreeMap::new();
    ratios.insert(
        "mysqldump / native dump (target >= 2)",
        get("mariadb-dump") / get("native dump"),
    );
    ratios.insert(
        "native dump / INTO OUTFILE (target <= 1.5)",
        get("native dump") / get("INTO OUTFILE"),
    );
    ratios.insert(
        "mydumper / native dump",
        get("mydumper") / get("native dump"),
    );
    ratios.insert(
        "mariadb < dump / native restore (target >= 3)",
        get("mariadb < dump") / get("native restore"),
    );
    ratios.insert(
        "myloader / native restore (target >= 1)",
        get("myloader") / get("native restore"),
    );
    ratios.insert(
        "native restore / LOAD DATA",
        get("native restore") / get("LOAD DATA INFILE"),
    );
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    #[allow(clippy::print_stdout)] // The benchmark's report.
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rows": rows,
                "innodb_data_bytes": data,
                "dump_threads": args.dump_threads,
                "restore_threads": args.restore_threads,
                "runs": args.runs,
                "warmup_runs": args.warmup,
                "cpus": cpus,
                "server": lab.server.version(),
                "buffer_pool": args.buffer_pool,
                "results": results,
                "ratios": ratios,
                "native_dump_peak_rss_mib": peak_rss_mib,
            }))?
        );
    } else {
        println!(
            "\n{rows} rows, {} MiB InnoDB data, {} dump / {} restore threads, {} runs each (median) after {} untimed, {cpus} CPUs, {} buffer pool, MariaDB {}\n",
            data >> 20,
            args.dump_threads,
            args.restore_threads,
            args.runs,
            args.warmup,
            args.buffer_pool,
            lab.server.version()
        );
        println!(
            "{:<8} {:<18} {:>9} {:>10} {:>12}  note",
            "kind", "method", "median s", "MiB", "rows/s"
        );
        for m in &results {
            println!(
                "{:<8} {:<18} {:>9.2} {:>10.1} {:>12.0}  {}",
                m.kind,
                m.name,
                m.median_secs,
                m.bytes as f64 / 1048576.0,
                rows as f64 / m.median_secs,
                m.note
            );
        }
        println!();
        for (k, v) in &ratios {
            println!("{k:<48} {v:>6.2}");
        }
        println!("native dump peak RSS: {peak_rss_mib:.1} MiB (target < 100)");
    }
    Ok(())
}
