//! Back up CloudStack's databases in one consistent snapshot.
//!
//! ```text
//! backup --db mysql://user:pass@host:port --out DIR [--engine native|mysqldump] [--threads N]
//!        [--compress zstd|none] [--databases cloud,cloud_usage]
//! ```
//!
//! The URL can come from `CS_DB_URL` instead (keeps the password out of `ps`). Progress bars on
//! a terminal, plain lines otherwise (none with `-q`); one line and exit 2 on failure; the
//! password is never printed.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use cs_backup::{BackupOptions, Compression, Engine, MysqldumpEngine, NativeEngine, backup};
use cs_core::LocalHost;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EngineArg {
    Native,
    Mysqldump,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressArg {
    Zstd,
    None,
}

/// Back up CloudStack's databases.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::ACTION)]
struct Args {
    /// Database URL, `mysql://user:pass@host:port[?ssl-mode=VERIFY_CA&ssl-ca=FILE]`.
    #[arg(
        long,
        env = "CS_DB_URL",
        hide_env_values = true,
        required_unless_present = "defaults_file"
    )]
    db: Option<String>,
    /// MySQL option file (`[client]` user, password, host, port, ssl-*) that gives what the URL
    /// leaves out, or the whole connection without one; read instead of `~/.my.cnf`, which is
    /// read when the URL has no password. Still no password: asked on a terminal.
    #[arg(long, value_name = "PATH")]
    defaults_file: Option<PathBuf>,
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Dump engine.
    #[arg(long, value_enum, default_value = "native")]
    engine: EngineArg,
    /// Parallel connections (native engine).
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// File compression.
    #[arg(long, value_enum, default_value = "none")]
    compress: CompressArg,
    /// Schemas: repeatable, or comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "cloud,cloud_usage")]
    databases: Vec<String>,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let db = match common::database("backup", args.db.as_deref(), args.defaults_file.as_deref()) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let engine: Box<dyn Engine> = match args.engine {
        EngineArg::Native => Box::new(NativeEngine::new()),
        EngineArg::Mysqldump => Box::new(MysqldumpEngine::new(Arc::new(LocalHost::new()))),
    };
    let options = BackupOptions::default()
        .databases(args.databases.clone())
        .threads(args.threads)
        .compression(match args.compress {
            CompressArg::Zstd => Compression::ZSTD,
            CompressArg::None => Compression::None,
        });
    let progress = args.verbosity.progress();
    let started = Instant::now();
    match backup(engine.as_ref(), &db, &args.out, &options, progress.as_ref()).await {
        Ok(m) if args.output.json => {
            common::cli::print_json(&serde_json::json!({
                "dir": args.out,
                "databases": options.databases,
                "seconds": started.elapsed().as_secs_f64(),
                "engine": &m.engine,
                "tables": m.schemas.iter().map(|s| s.tables.len()).sum::<usize>(),
                "rows": m.total_rows(),
                "files": m.files.len(),
                "bytes": m.total_bytes(),
                "versions": m.schemas.iter()
                    .filter_map(|s| Some((s.name.clone(), serde_json::json!(s.cloudstack_version()?.to_string()))))
                    .collect::<serde_json::Map<_, _>>(),
                "notes": &m.notes,
            }));
            ExitCode::SUCCESS
        }
        Ok(m) => {
            #[allow(clippy::print_stdout)] // The example owns the terminal.
            {
                println!(
                    "backup of {} from {} complete in {:.1?}: {} tables, {} rows, {} files, {} bytes in {}",
                    options.databases.join(", "),
                    db,
                    started.elapsed(),
                    m.schemas.iter().map(|s| s.tables.len()).sum::<usize>(),
                    m.total_rows(),
                    m.files.len(),
                    m.total_bytes(),
                    args.out.display()
                );
                for s in &m.schemas {
                    if let Some(v) = s.cloudstack_version() {
                        println!("  {}: CloudStack schema version {v}", s.name);
                    }
                }
                for n in &m.notes {
                    println!("  note: {n}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => common::fail("backup", &e),
    }
}
