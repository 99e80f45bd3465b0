//! Restore a backup: into scratch schemas, verified, then swapped in with one `RENAME TABLE`
//! (the replaced tables are kept in parking schemas), or the documented drop-and-reload.
//!
//! ```text
//! restore --from DIR --db URL [--threads N] [--replace] [--scratch-only] [--drop-parked] [--yes]
//! ```
//!
//! `--replace` is the destructive drop-and-reload: the live schemas are dropped and loaded
//! straight from the backup, with no parking. The URL can come from `CS_DB_URL`.
//!
//! A swap and `--replace` change the live schemas: each says which (and which other
//! connections use them now: a running CloudStack) and asks `[y/N]` on a terminal; without a
//! terminal it refuses unless `--yes` is given. `--scratch-only` never
//! asks. Exit codes: 0 restored, 2 failed, refused or not confirmed (one line on stderr).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use cs_backup::{
    Manifest, RestoreMode, RestoreOptions, Session, drop_parked, restore, sessions_using,
};

/// Restore CloudStack's databases from a backup.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::ACTION)]
struct Args {
    /// The backup directory.
    #[arg(long)]
    from: PathBuf,
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
    /// Parallel connections.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Drop the live schemas and reload them directly (destructive; no parking).
    #[arg(long, conflicts_with = "scratch_only")]
    replace: bool,
    /// Load and verify into scratch schemas only; leave the live schemas alone.
    #[arg(long)]
    scratch_only: bool,
    /// After a swap, drop the parking schemas with the replaced tables.
    #[arg(long)]
    drop_parked: bool,
    /// Go ahead without asking (a swap or `--replace` asks `[y/N]` on a terminal and refuses
    /// without one unless this is given).
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

/// The line on the connections that use the live schemas now (none: empty).
fn in_use(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = sessions
        .iter()
        .take(3)
        .map(|s| format!("{}@{} on `{}`", s.user, s.host, s.schema))
        .collect();
    let more = if sessions.len() > 3 { ", …" } else { "" };
    let count = match sessions.len() {
        1 => "1 other connection uses".to_string(),
        n => format!("{n} other connections use"),
    };
    format!(
        "\n  {count} them now ({}{more}): CloudStack looks to be running; stop its management \
         and usage servers first",
        shown.join(", ")
    )
}

/// What a swap or a drop-and-reload is about to do to the live schemas, for the question.
fn announcement(manifest: &Manifest, db: &cs_backup::DbUrl, args: &Args) -> String {
    let schemas: Vec<String> = manifest
        .schemas
        .iter()
        .map(|s| format!("`{}`", s.name))
        .collect();
    let on = format!("{}:{}", db.host, db.port);
    if args.replace {
        format!(
            "restore: about to DROP the live schemas {} on {on} and reload them from {}; no \
             copy of them is kept. CloudStack's management and usage servers must be stopped.",
            schemas.join(", "),
            args.from.display()
        )
    } else {
        format!(
            "restore: about to replace the tables of the live schemas {} on {on} with the \
             backup in {} (after it is loaded and verified; the replaced tables are parked). \
             CloudStack's management and usage servers must be stopped.",
            schemas.join(", "),
            args.from.display()
        )
    }
}

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let db = match common::database("restore", args.db.as_deref(), args.defaults_file.as_deref()) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let options = RestoreOptions::default()
        .threads(args.threads)
        .mode(if args.replace {
            RestoreMode::DropAndReload
        } else if args.scratch_only {
            RestoreMode::ScratchOnly
        } else {
            RestoreMode::Swap
        });
    if !args.scratch_only {
        let manifest = match Manifest::load(&args.from) {
            Ok(m) => m,
            Err(e) => return common::fail("restore", &e),
        };
        let names: Vec<String> = manifest.schemas.iter().map(|s| s.name.clone()).collect();
        let sessions = match sessions_using(&db, &names).await {
            Ok(s) => s,
            Err(e) => return common::fail("restore", &e),
        };
        let what = format!(
            "{}{}",
            announcement(&manifest, &db, &args),
            in_use(&sessions)
        );
        if let Err(code) = common::confirm("restore", &what, args.yes) {
            return code;
        }
    }
    let progress = args.verbosity.progress();
    let started = Instant::now();
    let report = match restore(&args.from, &db, &options, progress.as_ref()).await {
        Ok(r) => r,
        Err(e) => return common::fail("restore", &e),
    };
    if args.output.json {
        let dropped = args.drop_parked && !report.parked().is_empty();
        if dropped && let Err(e) = drop_parked(&db, &report).await {
            return common::fail("restore", &e);
        }
        common::cli::print_json(&serde_json::json!({
            "tables": report.tables,
            "rows": report.rows,
            "seconds": started.elapsed().as_secs_f64(),
            "schemas": report.schemas.iter().map(|s| serde_json::json!({
                "source": s.source,
                "target": s.target,
                "scratch": s.scratch,
                "parked": s.parked,
            })).collect::<Vec<_>>(),
            "parked_dropped": dropped,
        }));
        return ExitCode::SUCCESS;
    }
    #[allow(clippy::print_stdout)] // The example owns the terminal.
    {
        println!(
            "restored and verified {} tables, {} rows in {:.1?}",
            report.tables,
            report.rows,
            started.elapsed()
        );
        for s in &report.schemas {
            match (&s.scratch, &s.parked) {
                (Some(scratch), _) => println!("  {} loaded into {scratch}", s.source),
                (None, Some(parked)) => {
                    println!(
                        "  {} swapped in; replaced tables parked in {parked}",
                        s.target
                    )
                }
                (None, None) => println!("  {} reloaded", s.target),
            }
        }
    }
    if args.drop_parked && !report.parked().is_empty() {
        if let Err(e) = drop_parked(&db, &report).await {
            return common::fail("restore", &e);
        }
        #[allow(clippy::print_stdout)] // The example owns the terminal.
        {
            println!("  parking schemas dropped");
        }
    }
    ExitCode::SUCCESS
}
