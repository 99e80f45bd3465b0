//! Pre-flight (or, with `--post`, post-flight) of an installation: every read-only check of
//! every crate against the management servers, the database, the KVM hosts and the API.
//!
//! ```text
//! preflight --config upgrade.toml [--post] [--json] [--skip ID,...]
//! preflight --list [--json]
//! ```
//!
//! Exit codes follow the report (`--help` lists them): 0 all passed, 1 warnings, 2 failures
//! or an error, 255 a check broke; checks broken by the same error are one line. A
//! config that cannot be read, or a check id to skip that no check has (`--skip` or
//! `policy.skip_checks`; the message names the nearest known id), prints one line and exits 2.
//! `--list` prints every check: id, severity, what it reads and the real failure it prevents
//! (the table of docs/CHECKS.md). No secret is ever printed.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cs_upgrade::Phase;

/// Run the pre-flight (or post-flight) checks of an upgrade.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::REPORT)]
struct Args {
    /// The upgrade configuration (TOML).
    #[arg(long, required_unless_present = "list")]
    config: Option<PathBuf>,
    /// Print every check (id, severity, what it reads, what it prevents) and exit.
    #[arg(long)]
    list: bool,
    /// Post-flight: expect the target release everywhere.
    #[arg(long)]
    post: bool,
    #[command(flatten)]
    output: common::cli::Json,
    /// Check ids to skip: repeatable, or comma-separated (`--skip ms.heap,node.resources`).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    skip: Vec<String>,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    if args.list {
        let text = if args.output.json {
            let list: Vec<serde_json::Value> = cs_upgrade::CATALOG
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id,
                        "severity": c.severity,
                        "reads": c.reads,
                        "verifies": c.verifies,
                        "crate": c.krate,
                        "prevents": c.prevents,
                    })
                })
                .collect();
            format!("{:#}\n", serde_json::Value::Array(list))
        } else {
            cs_upgrade::list_table()
        };
        // A reader that stops early (`| head`) is not an error.
        let mut out = std::io::stdout().lock();
        return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("preflight: write the list: {e}");
                ExitCode::from(2)
            }
            _ => ExitCode::SUCCESS,
        };
    }
    let Some(path) = args.config.as_ref() else {
        eprintln!("preflight: --config is required");
        return ExitCode::from(2);
    };
    let config = match common::load("preflight", path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let all: Vec<&String> = args.skip.iter().chain(&config.policy.skip_checks).collect();
    if let Err(e) = cs_upgrade::check_skips(&all) {
        eprintln!("preflight: {e}");
        return ExitCode::from(2);
    }
    let phase = if args.post { Phase::Post } else { Phase::Pre };
    let skip: Vec<&str> = args.skip.iter().map(String::as_str).collect();
    let report = cs_upgrade::preflight(&config, phase, &skip).await;
    if args.output.json {
        common::cli::print_json(&report.to_json());
    } else {
        print!("{}", table::report(&report));
    }
    ExitCode::from(report.exit_code())
}
