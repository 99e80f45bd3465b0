//! Pre-flight (or, with `--post`, post-flight) of an installation: every read-only check of
//! every crate against the management servers, the database, the KVM hosts and the API.
//!
//! ```text
//! preflight --config upgrade.toml [--post] [--json] [--skip ID,...]
//! ```
//!
//! Exit codes follow the report: 0 all passed, 1 warnings, 2 failures, 255 a check broke. A
//! config that cannot be read prints one line and exits 2. No secret is ever printed.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cs_upgrade::Phase;

/// Run the pre-flight (or post-flight) checks of an upgrade.
#[derive(Debug, Parser)]
struct Args {
    /// The upgrade configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Post-flight: expect the target release everywhere.
    #[arg(long)]
    post: bool,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Check ids to skip, comma-separated.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

#[allow(clippy::print_stdout)] // An example owns its terminal.
#[tokio::main]
async fn main() -> ExitCode {
    common::init_tracing();
    let args = Args::parse();
    let config = match common::load("preflight", &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let phase = if args.post { Phase::Post } else { Phase::Pre };
    let skip: Vec<&str> = args.skip.iter().map(String::as_str).collect();
    let report = cs_upgrade::preflight(&config, phase, &skip).await;
    if args.json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    ExitCode::from(report.exit_code())
}
