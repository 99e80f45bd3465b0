//! Agent facts from many KVM hosts over SSH: package versions, identity keys of
//! `agent.properties` (the passphrase masked), keystore state, Java, jars.
//!
//! ```text
//! agent-facts --hosts FILE [--identity KEY] [--known-hosts FILE] [--parallel N] [--json]
//! ```
//!
//! FILE has one `user@host[:port] [cluster=NAME] [root=DIR]` a line. `--json` prints one JSON
//! document: `{"hosts": [...], "failed": N}`, each host its facts (with `elapsed_ms`) or
//! `{"host", "error"}`. Exits 1 when a host failed, 2 on an error.

#[path = "agent_common/mod.rs"]
mod agent_common;
#[path = "common/mod.rs"]
mod common;
#[path = "ssh_common/mod.rs"]
mod ssh_common;
#[path = "common/table.rs"]
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Collect KVM agent facts from many hosts.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::FLEET)]
struct Args {
    /// Hosts file: `user@host[:port] [cluster=NAME]` a line.
    #[arg(long)]
    hosts: PathBuf,
    /// SSH private key (default: the SSH agent).
    #[arg(long)]
    identity: Option<PathBuf>,
    /// known_hosts file for strict host-key checking (default: ~/.ssh/known_hosts).
    #[arg(long)]
    known_hosts: Option<PathBuf>,
    #[command(flatten)]
    sudo: common::SudoArgs,
    /// Passphrase, bastions, ssh config.
    #[command(flatten)]
    ssh: ssh_common::SshOptions,
    /// Hosts worked on at once.
    #[arg(long, default_value_t = 10)]
    parallel: usize,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let json = args.output.json;
    let targets = match agent_common::read_hosts(&args.hosts) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("agent-facts: {e}");
            return ExitCode::from(2);
        }
    };
    let sudo = match args.sudo.sudo() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agent-facts: {e}");
            return ExitCode::from(2);
        }
    };
    let ssh = agent_common::Ssh {
        identity: args.identity.clone(),
        known_hosts: args.known_hosts.clone(),
        sudo,
        options: args.ssh.clone(),
    };
    let progress = args.verbosity.progress();
    let results = cs_agent::fleet::for_each(&targets, args.parallel, progress.as_ref(), |t| {
        let ssh = &ssh;
        async move {
            let node = ssh.node(&t).await?;
            cs_agent::collect_facts(&node)
                .await
                .map_err(|e| cs_core::error_chain(&e))
        }
    })
    .await;
    let mut failed = 0;
    let mut docs = Vec::new();
    let mut rows = table::new_table(&[
        "HOST", "CLUSTER", "AGENT", "COMMON", "JAVA", "KEYSTORE", "CRT DAYS", "STATUS",
    ]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for (t, r, elapsed) in results {
        match r {
            Ok(f) => {
                if json {
                    let mut v = serde_json::to_value(&f).unwrap_or_default();
                    v["elapsed_ms"] = (elapsed.as_millis() as u64).into();
                    docs.push(v);
                    continue;
                }
                let ver = |i: usize| {
                    f.packages
                        .get(i)
                        .and_then(|p| p.installed.clone())
                        .unwrap_or_else(|| "-".into())
                };
                let ks = match (f.keystore.passphrase_present, f.keystore.opens) {
                    (false, _) => "no pass",
                    (true, Some(true)) => "opens",
                    (true, Some(false)) => "BAD PASS",
                    (true, None) => "no store",
                };
                let days = f
                    .keystore
                    .cert
                    .as_ref()
                    .map_or("-".into(), |c| c.days_left(now).to_string());
                let mut status = Vec::new();
                if f.jars.is_mixed() {
                    status.push(format!("mixed jars {}", f.jars.versions().join(",")));
                }
                for d in &f.duplicates {
                    status.push(format!("{} set {}x", d.key, d.lines.len()));
                }
                rows.add_row(vec![
                    comfy_table::Cell::new(t.label()),
                    comfy_table::Cell::new(t.cluster.as_deref().unwrap_or("-")),
                    comfy_table::Cell::new(ver(1)),
                    comfy_table::Cell::new(ver(0)),
                    comfy_table::Cell::new(f.java_major.map_or("-".into(), |j| j.to_string())),
                    table::verdict(ks),
                    comfy_table::Cell::new(days),
                    if status.is_empty() {
                        table::verdict("ok")
                    } else {
                        comfy_table::Cell::new(status.join("; "))
                    },
                ]);
            }
            Err(e) => {
                failed += 1;
                if json {
                    docs.push(serde_json::json!({"host": t.label(), "error": e}));
                } else {
                    let mut row = vec![comfy_table::Cell::new(t.label())];
                    row.extend((0..6).map(|_| comfy_table::Cell::new("-")));
                    row.push(table::bad(&format!("FAILED: {e}")));
                    rows.add_row(row);
                }
            }
        }
    }
    if json {
        common::cli::print_json(&serde_json::json!({ "hosts": docs, "failed": failed }));
    } else {
        println!("{}", table::render(&rows));
    }
    if failed > 0 {
        eprintln!("agent-facts: {failed} host(s) failed");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
