//! Reads the logs of every management server, usage server and KVM host of an installation and
//! explains the known failure lines it finds (cause, remedy, the lines themselves).
//!
//! ```text
//! diagnose --config upgrade.toml [--json]
//! ```
//!
//! Exit codes follow the report: 0 nothing found, 1 warnings, 2 failures or an error, 255 a
//! log could not be read. A config that cannot be read or a node that cannot be reached prints one line and
//! exits 2.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Explain the known failures in CloudStack's logs.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::REPORT)]
struct Args {
    /// The upgrade configuration (TOML).
    #[arg(long)]
    config: PathBuf,
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
    let config = match common::load("diagnose", &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let sources = match cs_upgrade::log_sources(&config).await {
        Ok(s) => s,
        Err(e) => return common::fail("diagnose", &e),
    };
    let report = cs_upgrade::diagnose(&sources, cs_upgrade::DEFAULT_TAIL_BYTES).await;
    if args.output.json {
        common::cli::print_json(&report.to_json());
    } else {
        print!("{}", table::report(&report));
    }
    ExitCode::from(report.exit_code())
}
