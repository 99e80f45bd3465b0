//! The whole upgrade of an installation, journaled in `backup.dir/upgrade-<target>/`: back up,
//! quiesce, switch repositories, upgrade packages, migrate the schema, start, refresh the KVM
//! agents, post-flight. A failed step rolls back what was applied.
//!
//! ```text
//! upgrade --config upgrade.toml              # run (or resume) the upgrade
//! upgrade --config upgrade.toml --dry-run    # the plan: hops, schema steps, step states
//! upgrade --config upgrade.toml --resume     # resume a run that was interrupted (refused when
//!                                            # the last run finished or rolled back)
//! upgrade --config upgrade.toml --rollback   # undo every applied step, newest first
//! ```
//!
//! Exit codes: 0 done, 2 the upgrade (or rollback) failed (one line, then the steps' outcomes),
//! or the config cannot be used. Progress goes to stderr (bars on a terminal, lines otherwise);
//! no secret is printed.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use cs_core::RunReport;

/// Upgrade (or roll back) a CloudStack installation.
#[derive(Debug, Parser)]
#[command(group(clap::ArgGroup::new("mode").args(["dry_run", "resume", "rollback"])))]
struct Args {
    /// The upgrade configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Resume an interrupted run (a plain run resumes too; this one insists there is a journal).
    #[arg(long)]
    resume: bool,
    /// Roll back every step the journal records as applied.
    #[arg(long)]
    rollback: bool,
}

/// The steps' outcomes, one a line.
fn outcomes(report: &RunReport) -> String {
    report
        .steps
        .iter()
        .map(|s| {
            let error = s
                .error
                .as_deref()
                .or(s.rollback_error.as_deref())
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            format!("  {:<22} {:?}{error}\n", s.id, s.outcome)
        })
        .collect()
}

/// Why there is no interrupted run in `journal` to resume (`None`: there is one).
fn nothing_to_resume(journal: &std::path::Path) -> Option<String> {
    use cs_upgrade::core::JournalEvent;
    let entries = match cs_upgrade::core::read_journal(journal) {
        Ok(e) => e,
        Err(e) => return Some(format!("{}: {e}", journal.display())),
    };
    let Some(last) = entries.iter().map(|e| e.run).max() else {
        return Some(format!("no run recorded in {}", journal.display()));
    };
    let ended = entries
        .iter()
        .filter(|e| e.run == last)
        .find_map(|e| match &e.event {
            JournalEvent::RunFinished => Some("the last run finished".to_string()),
            JournalEvent::RunAborted { error } => Some(format!(
                "the last run stopped and rolled back ({error}); run without --resume to try again"
            )),
            _ => None,
        });
    ended.map(|why| format!("{why} (journal {})", journal.display()))
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
async fn main() -> ExitCode {
    common::init_tracing();
    let args = Args::parse();
    let config = match common::load("upgrade", &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.dry_run {
        return match cs_upgrade::plan(&config).await {
            Ok(plan) => {
                print!("{}", plan.to_text());
                ExitCode::SUCCESS
            }
            Err(e) => common::fail("upgrade", &e),
        };
    }
    if args.resume {
        let journal = cs_upgrade::run_dir(&config).join("journal.jsonl");
        if let Some(why) = nothing_to_resume(&journal) {
            eprintln!("upgrade: nothing to resume: {why}");
            return ExitCode::from(2);
        }
    }
    let progress = Arc::new(common::Bars::new());
    let result = if args.rollback {
        cs_upgrade::rollback(&config, progress).await
    } else {
        cs_upgrade::apply(&config, progress).await
    };
    match result {
        Ok(report) => {
            print!("{}", outcomes(&report));
            println!(
                "{} {}",
                if args.rollback {
                    "rolled back"
                } else {
                    "upgraded to"
                },
                if args.rollback {
                    "every applied step".to_string()
                } else {
                    config.target.to_string()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = common::fail("upgrade", &e);
            if let Some(report) = &e.report {
                eprint!("{}", outcomes(report));
            }
            code
        }
    }
}
