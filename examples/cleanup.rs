//! Lists and removes what restores, rehearsals and repository rewrites leave behind: parking
//! schemas of swap restores (`<schema>__parked_<stamp>`), scratch schemas of scratch-only
//! restores and rehearsals (`<schema>__restore_<stamp>`), each a full copy of the database,
//! and the backup copies of repository files (`<file>.<stamp>.cs-upgrade.bak` in
//! `sources.list.d` and the other repository directories, which apt warns about on every
//! update).
//!
//! ```text
//! cleanup [--db URL] [--defaults-file F] [--root DIR] [--older-than 7d] [--remove [--yes]] [--json]
//! ```
//!
//! Without `--remove` it lists (with size and age); with it, it removes what it lists after
//! asking `[y/N]` on a terminal (without one it refuses unless `--yes` is given). Schemas are
//! looked at only with `--db` (or `CS_DB_URL`); the repository files of this machine (under
//! `--root`, default `/`) always: run it on each node. Only exact names this tool gives are
//! ever selected: the live `cloud` and `cloud_usage` schemas, and every other schema or file,
//! are never touched. Exit codes: 0 done, 2 failed, refused or not confirmed (one line on
//! stderr).

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use comfy_table::Cell;
use cs_backup::LeftoverSchema;
use cs_core::{Layout, LocalHost};
use cs_repo::BackupFile;

/// List and remove the schemas and files restores, rehearsals and repository rewrites leave.
#[derive(Debug, Parser)]
#[command(name = "cleanup", after_help = common::cli::ACTION)]
struct Args {
    /// Database URL, `mysql://user:pass@host:port[?ssl-mode=VERIFY_CA&ssl-ca=FILE]`: look for
    /// parking and scratch schemas there.
    #[arg(long, env = "CS_DB_URL", hide_env_values = true)]
    db: Option<String>,
    /// MySQL option file (`[client]` user, password, host, port, ssl-*) that gives what the URL
    /// leaves out, or the whole connection without one (schemas are then looked at too).
    #[arg(long, value_name = "PATH")]
    defaults_file: Option<PathBuf>,
    /// Look for repository backup copies under this root instead of `/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Only what is older than this (`7d`, `12h`, `30m`).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Remove what is listed (asks first).
    #[arg(long)]
    remove: bool,
    /// Go ahead without asking (`--remove` asks `[y/N]` on a terminal and refuses without one
    /// unless this is given).
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

/// Age as an operator reads it: `3d 4h`, `25m`, `10s`.
fn age(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, mins) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// The selected leftovers as tables (or a note that there are none).
fn tables(schemas: &[LeftoverSchema], files: &[BackupFile], now: SystemTime) -> String {
    let mut out = String::new();
    if schemas.is_empty() && files.is_empty() {
        return "nothing to clean up\n".to_string();
    }
    if !schemas.is_empty() {
        let mut t = table::new_table(&["KIND", "SCHEMA", "FOR", "TABLES", "SIZE", "AGE"]);
        for s in schemas {
            t.add_row(vec![
                Cell::new(s.kind.label()),
                Cell::new(&s.name),
                Cell::new(&s.live),
                Cell::new(s.tables),
                Cell::new(size(s.bytes)),
                Cell::new(age(s.age(now))),
            ]);
        }
        out.push_str(&table::render(&t));
        out.push('\n');
    }
    if !files.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut t = table::new_table(&["KIND", "FILE", "FOR", "SIZE", "AGE"]);
        for f in files {
            t.add_row(vec![
                Cell::new("repo-backup"),
                Cell::new(f.path.display()),
                Cell::new(f.original.file_name().map_or_else(
                    || f.original.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )),
                Cell::new(size(f.bytes)),
                Cell::new(age(f.age(now))),
            ]);
        }
        out.push_str(&table::render(&t));
        out.push('\n');
    }
    let total: u64 =
        schemas.iter().map(|s| s.bytes).sum::<u64>() + files.iter().map(|f| f.bytes).sum::<u64>();
    out.push_str(&format!(
        "{} schema(s), {} file(s), {}\n",
        schemas.len(),
        files.len(),
        size(total)
    ));
    out
}

#[allow(clippy::print_stdout)] // The example owns the terminal.
fn print(text: &str) {
    print!("{text}");
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    const NAME: &str = "cleanup";
    let url = match (&args.db, &args.defaults_file) {
        (None, None) => None,
        (raw, file) => match common::database(NAME, raw.as_deref(), file.as_deref()) {
            Ok(url) => Some(url),
            Err(code) => return code,
        },
    };
    if url.is_none() {
        #[allow(clippy::print_stderr)] // The example owns the terminal.
        {
            eprintln!("{NAME}: no --db (or CS_DB_URL) or --defaults-file: schemas not looked at");
        }
    }
    let now = SystemTime::now();
    let old_enough = |created: Duration| args.older_than.is_none_or(|min| created >= min);

    let mut schemas = match &url {
        Some(u) => match cs_backup::leftover_schemas(u).await {
            Ok(s) => s,
            Err(e) => return common::fail(NAME, &e),
        },
        None => Vec::new(),
    };
    schemas.retain(|s| old_enough(s.age(now)));
    let host = LocalHost::new();
    let layout = Layout::default().rerooted(&args.root);
    let mut files = match cs_repo::backup_files(&host, &layout).await {
        Ok(f) => f,
        Err(e) => return common::fail(NAME, &e),
    };
    files.retain(|f| old_enough(f.age(now)));

    let listing = || {
        let with_age = |v: serde_json::Value, d: Duration| {
            let mut v = v;
            v["age_seconds"] = d.as_secs().into();
            v
        };
        serde_json::json!({
            "schemas": schemas.iter().map(|s| with_age(serde_json::json!(s), s.age(now))).collect::<Vec<_>>(),
            "repo_files": files.iter().map(|f| with_age(serde_json::json!(f), f.age(now))).collect::<Vec<_>>(),
            "removed": false,
        })
    };
    let nothing = schemas.is_empty() && files.is_empty();
    if !args.remove || nothing {
        if args.output.json {
            print(&format!("{:#}\n", listing()));
        } else {
            print(&tables(&schemas, &files, now));
        }
        return ExitCode::SUCCESS;
    }

    let what = format!(
        "{}about to remove {} schema(s) and {} file(s) listed above",
        tables(&schemas, &files, now),
        schemas.len(),
        files.len()
    );
    if let Err(code) = common::confirm(NAME, &what, args.yes) {
        return code;
    }
    if let Some(u) = &url {
        let names: Vec<String> = schemas.iter().map(|s| s.name.clone()).collect();
        if let Err(e) = cs_backup::drop_leftover_schemas(u, &names).await {
            return common::fail(NAME, &e);
        }
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    if let Err(e) = cs_repo::remove_backup_files(&host, &paths).await {
        return common::fail(NAME, &e);
    }
    if args.output.json {
        let mut doc = listing();
        doc["removed"] = true.into();
        print(&format!("{doc:#}\n"));
    } else {
        print(&format!(
            "removed {} schema(s) and {} file(s)\n",
            schemas.len(),
            files.len()
        ));
    }
    ExitCode::SUCCESS
}
