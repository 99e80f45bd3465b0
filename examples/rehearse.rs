//! Rehearse the target's schema migration on a scratch copy of the database, days before the
//! maintenance window.
//!
//! ```text
//! rehearse --config FILE [--keep-scratch] [--json]
//! rehearse --db URL --to VERSION --backups DIR
//!          (--repo-file PATH [--mirror URL]... | --package FILE | --sql-dir DIR)
//!          [--cloud cloud] [--usage cloud_usage] [--scratch-db URL] [--script-user URL]
//!          [--db-properties PATH] [--keep-scratch] [--slow 1s] [--json]
//! ```
//!
//! With `--config`, everything comes from the upgrade's configuration: the target, the
//! database, the backup directory, and the package from the repository the first management
//! server is configured with (with its `db.properties` session). Otherwise:
//! the newest verified backup under `--backups` is restored into scratch schemas (one is taken
//! first when there is none), the target's scripts are run there as the management server runs
//! them, and the scratch copy is dropped. URLs can come from `CS_DB_URL`, `CS_SCRATCH_DB_URL`
//! and `CS_SCRIPT_DB_URL`
//! instead (keeps passwords out of `ps`); they are never printed. Exit 0 when the rehearsal
//! passed, 1 when a statement failed, 2 when it could not run.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cs_core::CsVersion;
use cs_upgrade::{RehearseOptions, ScriptSource, rehearse};

/// Rehearse the schema migration on a scratch copy.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::REHEARSE)]
struct Args {
    /// The upgrade's configuration file (instead of the options below).
    #[arg(long, conflicts_with_all = ["db", "target", "backups", "repo_file", "package", "sql_dir"])]
    config: Option<PathBuf>,
    /// Database URL of the live server, `mysql://user:pass@host:port[?ssl-mode=VERIFY_CA&ssl-ca=FILE]`.
    #[arg(long, env = "CS_DB_URL", hide_env_values = true)]
    db: Option<String>,
    /// MySQL option file (`[client]` user, password, host, port, ssl-*) that gives what the URL
    /// leaves out, or the whole connection without one; read instead of `~/.my.cnf`, which is
    /// read when the URL has no password. Still no password: asked on a terminal.
    #[arg(long, value_name = "PATH")]
    defaults_file: Option<PathBuf>,
    /// The version the upgrade goes to.
    #[arg(long = "to")]
    target: Option<String>,
    /// The backup directory (the newest verified backup there is restored).
    #[arg(long)]
    backups: Option<PathBuf>,
    /// A node's repository file (`.list`, `.sources`, `.repo`): the target's package is
    /// downloaded from the repository it names.
    #[arg(long, conflicts_with_all = ["package", "sql_dir"])]
    repo_file: Option<PathBuf>,
    /// Mirrors to accept as CloudStack repositories besides the official one: repeatable, or
    /// comma-separated.
    #[arg(long, value_delimiter = ',')]
    mirror: Vec<String>,
    /// The target's `cloudstack-management` package file (`.deb` or `.rpm`).
    #[arg(long, conflicts_with = "sql_dir")]
    package: Option<PathBuf>,
    /// A directory with the target's `META-INF/db/` scripts.
    #[arg(long)]
    sql_dir: Option<PathBuf>,
    /// The live `cloud` schema.
    #[arg(long, default_value = "cloud")]
    cloud: String,
    /// The live `cloud_usage` schema.
    #[arg(long, default_value = "cloud_usage")]
    usage: String,
    /// Another server to restore the scratch copy on.
    #[arg(long, env = "CS_SCRATCH_DB_URL", hide_env_values = true)]
    scratch_db: Option<String>,
    /// The management server's own database account, `mysql://cloud:pass@host:port`: the
    /// statements run as it (granted on the scratch copy for the rehearsal only).
    #[arg(long, env = "CS_SCRIPT_DB_URL", hide_env_values = true)]
    script_user: Option<String>,
    /// The management server's `db.properties` (its session variables); default: as packaged.
    #[arg(long)]
    db_properties: Option<PathBuf>,
    /// Keep the scratch schemas afterwards.
    #[arg(long)]
    keep_scratch: bool,
    /// Report statements that take at least this long (`1s`, `500ms`, `2m`; plain seconds too).
    #[arg(long, value_parser = common::cli::duration, default_value = "1s")]
    slow: Duration,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

fn usage(msg: &str) -> ExitCode {
    #[allow(clippy::print_stderr)] // The example owns the terminal.
    {
        eprintln!("rehearse: {msg}");
    }
    ExitCode::from(2)
}

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let progress: Arc<dyn cs_core::Progress> = if args.output.json {
        Arc::new(cs_core::NoProgress)
    } else {
        args.verbosity.progress()
    };
    if let Some(path) = &args.config {
        let config = match common::load("rehearse", path) {
            Ok(c) => c,
            Err(code) => return code,
        };
        return match cs_upgrade::rehearse_configured(&config, args.keep_scratch, progress).await {
            Ok(r) => show(&args, &r),
            Err(e) => common::fail("rehearse", &e),
        };
    }
    let (Some(raw_db), Some(raw_target), Some(backups)) = (&args.db, &args.target, &args.backups)
    else {
        return usage("give --config FILE, or --db (or CS_DB_URL), --to and --backups");
    };
    let db = match common::database("rehearse", Some(raw_db), args.defaults_file.as_deref()) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let scratch = match args
        .scratch_db
        .as_deref()
        .map(|raw| common::db_url("rehearse", raw))
    {
        Some(Err(code)) => return code,
        Some(Ok(u)) => Some(u),
        None => None,
    };
    let script_user = match args
        .script_user
        .as_deref()
        .map(|raw| common::db_url("rehearse", raw))
    {
        Some(Err(code)) => return code,
        Some(Ok(u)) => Some(u),
        None => None,
    };
    let target: CsVersion = match raw_target.parse() {
        Ok(v) => v,
        Err(e) => return common::fail("rehearse", &e),
    };
    let source = match (&args.repo_file, &args.package, &args.sql_dir) {
        (Some(f), None, None) => {
            let Some(format) = cs_repo::Format::from_path(f) else {
                return usage(&format!(
                    "{}: not a .list, .sources or .repo file",
                    f.display()
                ));
            };
            let text = match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) => return common::fail("rehearse", &e),
            };
            ScriptSource::Repository {
                text,
                format,
                mirrors: args.mirror.clone(),
            }
        }
        (None, Some(p), None) => ScriptSource::Package(p.clone()),
        (None, None, Some(d)) => ScriptSource::SqlDir(d.clone()),
        _ => return usage("give one of --repo-file, --package or --sql-dir"),
    };
    let mut options = RehearseOptions::new(target, source, db, backups);
    options.cloud_schema = args.cloud.clone();
    options.usage_schema = args.usage.clone();
    options.scratch_db = scratch;
    options.script_user = script_user;
    options.keep_scratch = args.keep_scratch;
    options.slow = args.slow;
    if let Some(p) = &args.db_properties {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => return common::fail("rehearse", &e),
        };
        options.session = match cs_rehearse::Session::from_db_properties(&text) {
            Ok(s) => s,
            Err(e) => return common::fail("rehearse", &e),
        };
    }
    match rehearse(&options, progress).await {
        Ok(r) => show(&args, &r),
        Err(e) => common::fail("rehearse", &e),
    }
}

/// Prints the rehearsal (text or JSON) and returns the exit code of its outcome.
fn show(args: &Args, r: &cs_upgrade::Rehearsal) -> ExitCode {
    #[allow(clippy::print_stdout)] // The example owns the terminal.
    {
        if args.output.json {
            match serde_json::to_string_pretty(&r) {
                Ok(s) => println!("{s}"),
                Err(e) => return common::fail("rehearse", &e),
            }
        } else {
            print!("{}", r.report);
            println!(
                "  database at {}; backup {}{}; scratch copy {}; live schemas {}",
                r.db_version,
                r.backup.display(),
                if r.backup_taken { " (taken now)" } else { "" },
                if r.kept {
                    format!("kept: {}", r.scratch.join(", "))
                } else {
                    "dropped".to_string()
                },
                if r.live_unchanged {
                    "unchanged"
                } else {
                    "CHANGED during the rehearsal (by something else: it only reads them)"
                }
            );
        }
    }
    if r.report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
