//! Probes a CloudStack API endpoint: the health table (`api.*` checks), a VM → host inventory
//! snapshot, or the diff of two snapshots.
//!
//! ```text
//! cargo run --example probe -- --endpoint https://ms1:8443/client/api --api-key K --secret-key S
//! CLOUDSTACK_ENDPOINT=… CLOUDSTACK_KEY=… CLOUDSTACK_SECRET=… cargo run --example probe -- --json
//! cargo run --example probe -- --wait 15m --expect-version 4.20.1.0
//! cargo run --example probe -- --inventory before.json
//! cargo run --example probe -- --diff before.json after.json
//! ```
//!
//! Exit codes follow `Report`: 0 all pass, 1 warnings, 2 failures, or the probe itself could
//! not run (unreachable endpoint, refused signature, malformed reply: one line on stderr).
#![allow(clippy::print_stderr)] // An example owns its terminal.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cs_api::{
    Client, ClientConfig, Credentials, HealthExpectations, HealthReport, Inventory, Phase,
    TlsConfig, ansible_inventory, diff, wait_healthy,
};
use cs_core::{CsVersion, Progress, ProgressUpdate, Report, Secret};

/// Probe a CloudStack API endpoint.
#[derive(Debug, Parser)]
#[command(version, about, after_help = common::cli::REPORT)]
struct Args {
    /// API endpoint, e.g. https://ms1.example.org:8443/client/api.
    #[arg(long, env = "CLOUDSTACK_ENDPOINT")]
    endpoint: Option<String>,
    /// API key.
    #[arg(long, env = "CLOUDSTACK_KEY")]
    api_key: Option<String>,
    /// Secret key (prefer the environment variable: arguments show up in `ps`).
    #[arg(long, env = "CLOUDSTACK_SECRET", hide_env_values = true)]
    secret_key: Option<String>,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
    /// Wait up to this long for a healthy cloud (`90s`, `15m`, `1h`).
    #[arg(long, value_parser = common::cli::duration)]
    wait: Option<Duration>,
    /// The version management servers, agents and system VMs must run.
    #[arg(long)]
    expect_version: Option<CsVersion>,
    /// Judge as pre-flight (problems are warnings) instead of post-flight.
    #[arg(long)]
    pre: bool,
    /// Save an inventory snapshot (VM → host) to this file.
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Compare two snapshots (no endpoint needed).
    #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"])]
    diff: Option<Vec<PathBuf>>,
    /// Print the hypervisors as an Ansible dynamic inventory.
    #[arg(long)]
    ansible: bool,
    /// Extra trusted CA certificates (PEM bundle).
    #[arg(long, value_name = "PEM")]
    ca_bundle: Option<PathBuf>,
    /// Do not verify TLS certificates at all. Insecure: for throwaway labs only.
    #[arg(long)]
    danger_accept_invalid_certs: bool,
    /// Timeout of each request (`30s`, `2m`).
    #[arg(long, value_parser = common::cli::duration, default_value = "30s")]
    timeout: Duration,
}

/// Progress on stderr, one line per update.
#[derive(Debug)]
struct Lines;

impl Progress for Lines {
    fn update(&self, u: ProgressUpdate) {
        let total = u.total.map(|t| format!("/{t}")).unwrap_or_default();
        eprintln!(
            "{}: {}{total} hosts Up{}",
            u.task,
            u.done,
            u.message.map(|m| format!(" — {m}")).unwrap_or_default()
        );
    }
}

/// Writes to stdout; a closed pipe (`probe --json | head`) is not an error worth a panic.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn fail(what: &str, e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("probe: {what}: {}", cs_core::error_chain(e));
    ExitCode::from(2)
}

fn print_report(report: &Report, json: bool, extra: serde_json::Value) {
    if json {
        let mut v = report.to_json();
        if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    } else {
        out(&table::report(report));
    }
}

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let json = args.output.json;
    if let Some(files) = &args.diff {
        let (before, after) = match (Inventory::load(&files[0]), Inventory::load(&files[1])) {
            (Ok(b), Ok(a)) => (b, a),
            (Err(e), _) | (_, Err(e)) => return fail("cannot read snapshot", &e),
        };
        let d = diff(&before, &after);
        let report = Report {
            findings: d.findings(),
            broken: Vec::new(),
        };
        print_report(&report, json, serde_json::json!({ "diff": d }));
        return ExitCode::from(report.exit_code());
    }
    let (Some(endpoint), Some(key), Some(secret)) =
        (&args.endpoint, &args.api_key, &args.secret_key)
    else {
        eprintln!(
            "probe: give --endpoint, --api-key and --secret-key (or CLOUDSTACK_ENDPOINT, CLOUDSTACK_KEY, CLOUDSTACK_SECRET)"
        );
        return ExitCode::from(2);
    };
    let config = ClientConfig::default().timeout(args.timeout).tls(
        TlsConfig::default()
            .ca_bundle(args.ca_bundle.clone())
            .danger_accept_invalid_certs(args.danger_accept_invalid_certs),
    );
    if args.danger_accept_invalid_certs {
        eprintln!("probe: WARNING: TLS certificate verification is OFF");
    }
    let client = match Client::new(
        endpoint,
        Credentials::api_key(key, Secret::new(secret.as_str())),
        config,
    ) {
        Ok(c) => c,
        Err(e) => return fail("bad configuration", &e),
    };
    if let Some(path) = &args.inventory {
        let inv = match Inventory::snapshot(&client).await {
            Ok(i) => i,
            Err(e) => return fail("cannot take the inventory", &e),
        };
        if let Err(e) = inv.save(path) {
            return fail("cannot save the inventory", &e);
        }
        if json {
            common::cli::print_json(&serde_json::json!({
                "inventory": path,
                "vms": inv.vms.len(),
                "hosts": inv.hosts.len(),
            }));
        } else if !args.verbosity.quiet {
            eprintln!(
                "probe: saved {} VMs on {} hosts to {}",
                inv.vms.len(),
                inv.hosts.len(),
                path.display()
            );
        }
        return ExitCode::SUCCESS;
    }
    if args.ansible {
        return match client.list_hosts(&[("type", "Routing")]).await {
            Ok(hosts) => {
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&ansible_inventory(&hosts)).unwrap_or_default()
                ));
                ExitCode::SUCCESS
            }
            Err(e) => fail("cannot list hosts", &e),
        };
    }
    let expect = HealthExpectations {
        phase: if args.pre { Phase::Pre } else { Phase::Post },
        version: args.expect_version,
    };
    let health = match args.wait {
        Some(deadline) => match wait_healthy(
            &client,
            &expect,
            deadline,
            if args.verbosity.quiet {
                &cs_core::NoProgress as &dyn Progress
            } else {
                &Lines
            },
        )
        .await
        {
            Ok(h) => h,
            Err(cs_api::Error::NotHealthy {
                report: Some(last),
                waited,
                ..
            }) => {
                eprintln!("probe: still not healthy after {}s", waited.as_secs());
                *last
            }
            Err(e) => return fail("cannot probe", &e),
        },
        None => match HealthReport::collect(&client).await {
            Ok(h) => h,
            Err(e) => return fail("cannot probe", &e),
        },
    };
    let report = health.report(&expect);
    if !json {
        out(&format!(
            "{}  CloudStack {}  {} management server(s), {} of {} hypervisors Up, {} system VM(s)\n\n",
            health.endpoint,
            health.cloudstack_version.as_deref().unwrap_or("?"),
            health.management_servers.len(),
            health.hosts_up(),
            health.hosts.len(),
            health.system_vms.len()
        ));
    }
    print_report(&report, json, serde_json::json!({ "health": health }));
    ExitCode::from(report.exit_code())
}
