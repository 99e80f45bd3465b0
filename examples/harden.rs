//! The hardening report of an installation's management servers: `-Xmx` against the node's
//! memory, the modes of the files that hold secrets (`db.properties`, `key`, keystores), and
//! whether the API ports and the unauthenticated integration port 8096 are exposed. With
//! `--fix`, tightens the modes of the secret files first (nothing else is changed) and reports
//! afterwards.
//!
//! ```text
//! harden --config upgrade.toml [--fix [--yes]] [--json]
//! ```
//!
//! `--fix` changes files on the management servers: it says so and asks `[y/N]` on a terminal;
//! without one it refuses (exit 2, nothing changed) unless `--yes` is given.
//!
//! Exit codes follow the report: 0 all good, 1 warnings, 2 failures or an error, 255 a check
//! could not reach a verdict. A config that cannot be read prints one line and exits 2.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Report (and fix) what the hardening advice covers.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::REPORT)]
struct Args {
    /// The upgrade configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Tighten the modes of the secret files before reporting (asks first).
    #[arg(long)]
    fix: bool,
    /// With --fix: go ahead without asking (needed without a terminal).
    #[arg(long, short = 'y', requires = "fix")]
    yes: bool,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

#[allow(clippy::print_stdout)] // An example owns its terminal.
#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let config = match common::load("harden", &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut fixed = None;
    if args.fix {
        let servers: Vec<&str> = config
            .management_servers
            .iter()
            .map(|m| m.address.as_str())
            .collect();
        let what = format!(
            "harden: about to tighten the modes of the secret files (db.properties, key, \
             keystores) that others can read or write on the management servers {}",
            servers.join(", ")
        );
        if let Err(code) = common::confirm("harden", &what, args.yes) {
            return code;
        }
        match cs_upgrade::harden(&config).await {
            Ok(fixes) => {
                if !args.output.json {
                    for f in &fixes {
                        println!(
                            "fixed {}:{} mode {:04o} -> {:04o}",
                            f.node,
                            f.path.display(),
                            f.from,
                            f.to
                        );
                    }
                    if fixes.is_empty() {
                        println!("no file mode to fix");
                    }
                }
                fixed = Some(fixes);
            }
            Err(e) => return common::fail("harden", &e),
        }
    }
    let report = cs_upgrade::hardening_report(&config).await;
    if args.output.json {
        let mut doc = report.to_json();
        if let (Some(obj), Some(fixes)) = (doc.as_object_mut(), fixed) {
            obj.insert(
                "fixed".into(),
                serde_json::to_value(fixes).unwrap_or_default(),
            );
        }
        common::cli::print_json(&doc);
    } else {
        print!("{}", table::report(&report));
    }
    ExitCode::from(report.exit_code())
}
