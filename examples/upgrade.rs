//! The whole upgrade of an installation, journaled in `backup.dir/upgrade-<target>/`: the
//! pre-flight gate, back up, quiesce, switch repositories, upgrade packages, migrate the schema,
//! start, refresh the KVM agents in place, refresh system VMs and routers, post-flight.
//!
//! Until the first management server serves the new release (the point of no return), a failed
//! step rolls back everything applied. After it, tenants may have written to the database: a
//! failed step stops the run where it is and says what failed; fix it and `--resume`, or go
//! back with `--rollback --discard-changes-since TIME`, which restores the backup and loses what
//! the cloud wrote since (it says what first).
//!
//! ```text
//! upgrade --config upgrade.toml              # run (or resume) the upgrade; asks first
//! upgrade --config upgrade.toml --dry-run    # the plan: hops, hosts, step states, the gate
//! upgrade --config upgrade.toml --resume     # resume a run that was interrupted or stopped
//! upgrade --config upgrade.toml --rollback   # undo every applied step, newest first
//! upgrade --config upgrade.toml --rollback --discard-changes-since '2026-12-07 10:15:00'
//! upgrade --config upgrade.toml --skip ms.heap --skip node.resources   # or --skip ms.heap,node.resources
//! upgrade --config upgrade.toml --yes        # no question (scripts, no terminal)
//! ```
//!
//! A run, a resume and a rollback change the cloud: each says what it is about to do and asks
//! `[y/N]` on a terminal; without a terminal it refuses unless `--yes` is given. `--dry-run`
//! never asks.
//!
//! Exit codes: 0 done (or already done), 2 the upgrade (or rollback) failed or was refused (one
//! line, then the steps' outcomes), not confirmed, or the config cannot be used. Progress goes
//! to stderr (bars on a terminal, lines otherwise, none with `-q`); with `--json` stdout is one
//! JSON document (the plan, or the run's report); no secret is printed.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cs_core::RunReport;

/// Upgrade (or roll back) a CloudStack installation.
#[derive(Debug, Parser)]
#[command(
    group(clap::ArgGroup::new("mode").args(["dry_run", "resume", "rollback"])),
    after_help = common::cli::ACTION
)]
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
    /// With --rollback after the point of no return: accept losing what the cloud wrote since
    /// this time (UTC, `YYYY-MM-DD hh:mm:ss`; not later than the backup restored).
    #[arg(long, value_name = "TIME", requires = "rollback")]
    discard_changes_since: Option<String>,
    /// Pre-flight check ids the gate skips: repeatable, or comma-separated.
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    skip: Vec<String>,
    /// Go ahead without asking (a run, resume or rollback asks `[y/N]` on a terminal and
    /// refuses without one unless this is given).
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

/// What a run or a rollback is about to do, for the question before it.
fn announcement(config: &cs_upgrade::UpgradeConfig, args: &Args) -> String {
    let servers: Vec<&str> = config
        .management_servers
        .iter()
        .map(|m| m.address.as_str())
        .collect();
    if args.rollback {
        let discard = args
            .discard_changes_since
            .as_deref()
            .map(|t| {
                format!(
                    "\n  restoring the database backup discards what the cloud wrote since {t} UTC"
                )
            })
            .unwrap_or_default();
        format!(
            "upgrade: about to roll back every applied step of the upgrade to {}, newest first \
             (management servers {}){discard}",
            config.target,
            servers.join(", ")
        )
    } else {
        format!(
            "upgrade: about to upgrade the cloud to {}: back up database {} on {}, stop the \
             management servers {} (the downtime starts), switch repositories, upgrade packages, \
             migrate the schema, start them, refresh the KVM agents, system VMs and routers",
            config.target,
            config.database.cloud_schema,
            config.database.host,
            servers.join(", ")
        )
    }
}

/// The steps' outcomes, one a line.
fn outcomes(report: &RunReport) -> String {
    let mut t = table::new_table(&["STEP", "OUTCOME", "ERROR"]);
    for s in &report.steps {
        let error = s.error.as_deref().or(s.rollback_error.as_deref());
        t.add_row(vec![
            comfy_table::Cell::new(&s.id),
            table::verdict(&s.outcome.to_string()),
            comfy_table::Cell::new(error.unwrap_or_default()),
        ]);
    }
    format!("{}\n", table::indent(&table::render(&t), "  "))
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
            // A run stopped after the point of no return left its steps applied: that is what
            // --resume is for.
            JournalEvent::RunAborted { .. }
                if cs_upgrade::core::applied_steps(journal).is_ok_and(|a| !a.is_empty()) =>
            {
                None
            }
            JournalEvent::RunAborted { error } => Some(format!(
                "the last run stopped and rolled back ({error}); run without --resume to try again"
            )),
            _ => None,
        });
    ended.map(|why| format!("{why} (journal {})", journal.display()))
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let json = args.output.json;
    let config = match common::load("upgrade", &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let skip: Vec<&str> = args.skip.iter().map(String::as_str).collect();
    let options = cs_upgrade::ApplyOptions::skipping(&skip);
    if args.dry_run {
        return match cs_upgrade::plan_with(&config, &options).await {
            Ok(plan) if json => {
                common::cli::print_json(&serde_json::json!({
                    "from": plan.record.from,
                    "target": plan.record.target,
                    "run": plan.record,
                    "schema_steps": plan.schema_steps,
                    "steps": plan.plan.steps,
                    "would_apply": plan.plan.would_apply(),
                    "applied": plan.plan.applied,
                    "interrupted": plan.plan.interrupted,
                    "gate": plan.gate.as_ref().map(cs_core::Report::to_json),
                    "point_of_no_return": plan.point_of_no_return,
                    "sealed": plan.sealed,
                }));
                ExitCode::SUCCESS
            }
            Ok(plan) => {
                print!("{}", plan.to_text());
                ExitCode::SUCCESS
            }
            Err(e) => common::fail("upgrade", &e),
        };
    }
    if args.resume {
        let journal = cs_upgrade::run_dir(&config).join("journal.jsonl");
        if let Some(seal) = cs_upgrade::sealed(&config) {
            if json {
                common::cli::print_json(&serde_json::json!({ "already_done": seal }));
            } else {
                println!(
                    "upgrade: already done: reached {} at {} (nothing to resume)",
                    seal.target, seal.finished_at
                );
            }
            return ExitCode::SUCCESS;
        }
        if let Some(why) = nothing_to_resume(&journal) {
            eprintln!("upgrade: nothing to resume: {why}");
            return ExitCode::from(2);
        }
    }
    if !args.rollback
        && let Some(seal) = cs_upgrade::sealed(&config)
    {
        if json {
            common::cli::print_json(&serde_json::json!({ "already_done": seal }));
        } else {
            println!(
                "upgrade: already done: reached {} at {}; nothing changed",
                seal.target, seal.finished_at
            );
        }
        return ExitCode::SUCCESS;
    }
    if let Err(code) = common::confirm("upgrade", &announcement(&config, &args), args.yes) {
        return code;
    }
    let progress = args.verbosity.progress();
    let result = if args.rollback {
        let mut options = cs_upgrade::RollbackOptions::default();
        options.discard_changes_since = args.discard_changes_since.clone();
        cs_upgrade::rollback_with(&config, &options, progress).await
    } else {
        cs_upgrade::apply_with(&config, &options, progress).await
    };
    let action = if args.rollback { "rollback" } else { "upgrade" };
    match result {
        Ok(report) if json => {
            common::cli::print_json(&serde_json::json!({
                "action": action,
                "target": config.target,
                "ok": true,
                "report": report,
                "postflight": cs_upgrade::postflight_evidence(&cs_upgrade::run_dir(&config))
                    .filter(|_| !args.rollback)
                    .map(|e| e.summary),
            }));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", outcomes(&report));
            if !args.rollback
                && let Some(e) = cs_upgrade::postflight_evidence(&cs_upgrade::run_dir(&config))
            {
                println!("  postflight: {}", e.summary);
            }
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
            if json {
                common::cli::print_json(&serde_json::json!({
                    "action": action,
                    "target": config.target,
                    "ok": false,
                    "error": cs_core::error_chain(&e),
                    "report": e.report,
                }));
            } else if let Some(report) = &e.report {
                eprint!("{}", outcomes(report));
            }
            if let cs_upgrade::UpgradeErrorKind::Run(cs_core::RunError::Stopped { .. }) = &e.kind {
                let path = args.config.display();
                let since = cs_upgrade::reopened_at(&config)
                    .map(|t| format!(" since {t} UTC"))
                    .unwrap_or_default();
                eprintln!(
                    "upgrade: the cloud serves tenants at the new version{since}: nothing was rolled back.\n  \
                     forward: fix what failed, then `upgrade --config {path} --resume`\n  \
                     back:    `upgrade --config {path} --rollback` (it says what the restore would discard)"
                );
            }
            code
        }
    }
}
