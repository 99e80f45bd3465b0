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
    /// Also restore into scratch schemas and compare checksums (needs --db).
    #[arg(long, requires = "db")]
    deep: bool,
    /// Database URL for --deep, `mysql://user:pass@host:port[?ssl-mode=VERIFY_CA&ssl-ca=FILE]`.
    #[arg(long, env = "CS_DB_URL", hide_env_values = true)]
    db: Option<String>,
    /// Parallel connections for --deep.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_tracing();
    let args = Args::parse();
    let db = match args.db.as_deref().map(|raw| common::db_url("verify", raw)) {
        Some(Err(code)) => return code,
        Some(Ok(db)) => Some(db),
        None => None,
    };
    let result = match (&db, args.deep) {
        (Some(db), true) => {
            let options = RestoreOptions::default().threads(args.threads);
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
