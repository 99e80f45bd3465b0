//! The hardening report of an installation's management servers: `-Xmx` against the node's
//! memory, the modes of the files that hold secrets (`db.properties`, `key`, keystores), and
//! whether the API ports and the unauthenticated integration port 8096 are exposed. With
//! `--fix`, tightens the modes of the secret files first (nothing else is changed) and reports
//! afterwards.
//!
//! ```text
//! harden --config upgrade.toml [--fix] [--json]
//! ```
//!
//! Exit codes follow the report: 0 all good, 1 warnings, 2 failures, 255 a check could not
//! reach a verdict. A config that cannot be read prints one line and exits 2.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Report (and fix) what the hardening advice covers.
#[derive(Debug, Parser)]
struct Args {
    /// The upgrade configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Tighten the modes of the secret files before reporting.
    #[arg(long)]
    fix: bool,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stdout)] // An example owns its terminal.
#[tokio::main]
async fn main() -> ExitCode {
    common::init_tracing();
    let args = Args::parse();
    let config = match common::load("harden", &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.fix {
        match cs_upgrade::harden(&config).await {
            Ok(fixes) if !args.json => {
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
            Ok(_) => {}
            Err(e) => return common::fail("harden", &e),
        }
    }
    let report = cs_upgrade::hardening_report(&config).await;
    if args.json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", table::report(&report));
    }
    ExitCode::from(report.exit_code())
}
