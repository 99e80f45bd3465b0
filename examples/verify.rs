//! Verify a backup: files against the manifest, or (`--deep`) a restore into scratch schemas
//! compared table by table with the manifest.
//!
//! ```text
//! verify DIR [--deep --db URL] [--threads N]
//! ```

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cs_backup::{RestoreOptions, verify, verify_deep};

/// Verify a backup.
#[derive(Debug, Parser)]
struct Args {
    /// The backup directory.
    dir: PathBuf,
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
}

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    common::init_tracing();
    let args = Args::parse();
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
            let options = RestoreOptions {
                threads: args.threads,
                ..RestoreOptions::default()
            };
            verify_deep(&args.dir, db, &options, &common::Bars::new()).await
        }
        _ => verify(&args.dir).await,
    };
    match result {
        Ok(m) => {
            #[allow(clippy::print_stdout)] // The example owns the terminal.
            {
                println!(
                    "{}: {} verified ({} engine, {} files, {} bytes, {} tables, {} rows, taken {})",
                    args.dir.display(),
                    if args.deep { "deeply" } else { "files" },
                    m.engine,
                    m.files.len(),
                    m.total_bytes(),
                    m.schemas.iter().map(|s| s.tables.len()).sum::<usize>(),
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
