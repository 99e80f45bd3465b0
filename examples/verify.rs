//! Verify a backup: files against the manifest, or (`--deep`) a restore into scratch schemas
//! compared table by table with the manifest.
//!
//! ```text
//! verify --from DIR [--deep --db URL] [--threads N] [--json]
//! ```
//!
//! `DIR` alone (without `--from`) is still accepted. Exit codes: 0 verified, 2 not (the first
//! problem on one line, the others as `also:` lines) or an error.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cs_backup::{RestoreOptions, verify, verify_deep};

/// Verify a backup.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::ACTION)]
struct Args {
    /// The backup directory.
    #[arg(long, value_name = "DIR", required_unless_present = "dir")]
    from: Option<PathBuf>,
    /// The backup directory (the older spelling of --from).
    #[arg(value_name = "DIR", hide = true, conflicts_with = "from")]
    dir: Option<PathBuf>,
    /// Also restore into scratch schemas and compare checksums (needs --db or --defaults-file).
    #[arg(long)]
    deep: bool,
    /// Database URL for --deep, `mysql://user:pass@host:port[?ssl-mode=VERIFY_CA&ssl-ca=FILE]`.
    #[arg(long, env = "CS_DB_URL", hide_env_values = true)]
    db: Option<String>,
    /// MySQL option file (`[client]` user, password, host, port, ssl-*) that gives what the URL
    /// leaves out, or the whole connection without one; read instead of `~/.my.cnf`, which is
    /// read when the URL has no password. Still no password: asked on a terminal.
    #[arg(long, value_name = "PATH")]
    defaults_file: Option<PathBuf>,
    /// Parallel connections for --deep.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let Some(dir) = args.from.clone().or_else(|| args.dir.clone()) else {
        return common::fail("verify", &std::io::Error::other("give --from DIR"));
    };
    let db = if args.deep {
        match common::database("verify", args.db.as_deref(), args.defaults_file.as_deref()) {
            Err(code) => return code,
            Ok(db) => Some(db),
        }
    } else {
        None
    };
    let result = match (&db, args.deep) {
        (Some(db), true) => {
            let options = RestoreOptions::default().threads(args.threads);
            let progress = args.verbosity.progress();
            verify_deep(&dir, db, &options, progress.as_ref()).await
        }
        _ => verify(&dir).await,
    };
    match result {
        Ok(m) => {
            let tables = m.schemas.iter().map(|s| s.tables.len()).sum::<usize>();
            if args.output.json {
                common::cli::print_json(&serde_json::json!({
                    "dir": dir,
                    "verified": if args.deep { "deep" } else { "files" },
                    "engine": &m.engine,
                    "files": m.files.len(),
                    "bytes": m.total_bytes(),
                    "tables": tables,
                    "rows": m.total_rows(),
                    "finished": &m.finished,
                }));
                return ExitCode::SUCCESS;
            }
            #[allow(clippy::print_stdout)] // The example owns the terminal.
            {
                println!(
                    "{}: {} verified ({} engine, {} files, {} bytes, {tables} tables, {} rows, taken {})",
                    dir.display(),
                    if args.deep { "deeply" } else { "files" },
                    m.engine,
                    m.files.len(),
                    m.total_bytes(),
                    m.total_rows(),
                    m.finished
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in e.problems().iter().skip(1) {
                #[allow(clippy::print_stderr)] // The example owns the terminal.
                {
                    eprintln!("  also: {p}");
                }
            }
            common::fail("verify", &e)
        }
    }
}
