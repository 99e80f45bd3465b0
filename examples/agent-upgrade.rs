//! Refresh the KVM agent on many hosts: canary first, cluster batches, stop on failure (or a
//! failure budget), a per-host result table, resumable through journals.
//!
//! ```text
//! agent-upgrade --hosts FILE --to VERSION [--batch N|PCT%] [--parallel N] [--max-fail PCT]
//!               [--cluster-max-fail PCT] [--canary one|per-cluster|none] [--dry-run]
//!               [--identity KEY] [--known-hosts FILE] [--journal-dir DIR]
//! agent-upgrade --lab N --to 4.19.1.0 [--fault kvm3=install-fails]   # on lab hosts
//! ```
//!
//! Clusters (the hosts file's `cluster=`) are refreshed side by side, each `--batch` hosts at
//! once, the fleet at most `--parallel` at once. `--dry-run` prints the waves (which hosts
//! start together, in a deterministic order), then what each host would do.
//!
//! Whether a host is Up again comes from the management server in a real upgrade (cs-api's
//! `HostStatus`, wired in by the orchestrator). This example, outside the lab, judges it from
//! the host itself: `cloudstack-agent` active and installed at the version.
//!
//! A run (not `--dry-run`, not `--lab`) upgrades packages and restarts agents: it says which
//! hosts and asks `[y/N]` on a terminal; without one it refuses (exit 2, no host contacted, no
//! journal written) unless `--yes` is given. `--json` prints one JSON document (the waves and
//! what each host would do, or the fleet report). Exits 1 when any host failed, 2 on an error.

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
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use cs_agent::fleet::{self, FleetOptions};
use cs_agent::{Deps, RefreshContext, RefreshOptions, refresh_host, refresh_steps};
use cs_core::{BoxError, CsVersion, Host, HostStatus, HypervisorState, Runner};

/// Refresh KVM agents across a fleet.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::FLEET)]
struct Args {
    /// Hosts file: `user@host[:port] [cluster=NAME] [root=DIR]` a line.
    #[arg(long, required_unless_present = "lab")]
    hosts: Option<PathBuf>,
    /// Start this many lab hosts and upgrade them instead (a demo; needs sshd and keytool).
    #[arg(long)]
    lab: Option<usize>,
    /// Lab faults, `NAME=FAULT` (install-fails, never-up, overwrite-identity, drop-passphrase,
    /// mixed-jars); repeatable, or comma-separated.
    #[arg(long, value_delimiter = ',')]
    fault: Vec<String>,
    /// The version to install (`4.19.1.0`).
    #[arg(long)]
    to: String,
    /// Hosts of one cluster refreshed at once: a count or a percentage of the cluster (`25%`).
    #[arg(long, default_value = "1")]
    batch: fleet::BatchSize,
    /// Hosts refreshed at once across all clusters (the global cap).
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Go on until more than this percentage of hosts failed (default: stop on the first).
    #[arg(long)]
    max_fail: Option<f64>,
    /// Stop a cluster once more than this percentage of its hosts failed.
    #[arg(long)]
    cluster_max_fail: Option<f64>,
    /// The canary: `one` host first, `per-cluster` (each cluster's first host), or `none`.
    #[arg(long, default_value = "one", value_parser = parse_canary)]
    canary: fleet::Canary,
    /// Show what each host would do, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// SSH private key (default: the SSH agent).
    #[arg(long)]
    identity: Option<PathBuf>,
    /// known_hosts file (default: ~/.ssh/known_hosts).
    #[arg(long)]
    known_hosts: Option<PathBuf>,
    #[command(flatten)]
    sudo: common::SudoArgs,
    /// Passphrase, bastions, ssh config.
    #[command(flatten)]
    ssh: ssh_common::SshOptions,
    /// Where the fleet and per-host journals go (resume by running again with the same dir).
    #[arg(long, default_value = "agent-upgrade-journal")]
    journal_dir: PathBuf,
    /// How long to wait for each host to be Up at the target after its restart (`10m`,
    /// `90s`; plain seconds too).
    #[arg(long, value_parser = common::cli::duration, default_value = "10m")]
    up_deadline: Duration,
    /// Go ahead without asking (a run asks `[y/N]` on a terminal and refuses without one unless
    /// this is given; `--dry-run` and `--lab` never ask).
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

/// Outside the lab: Up when the agent's unit is active, at the installed package's version.
#[derive(Debug, Default)]
struct FromHost {
    hosts: std::sync::Mutex<std::collections::BTreeMap<String, Arc<dyn Host>>>,
}

#[async_trait]
impl HostStatus for FromHost {
    async fn hypervisor(&self, key: &str) -> Result<Option<HypervisorState>, BoxError> {
        let host = self.hosts.lock().map_err(|_| "lock")?.get(key).cloned();
        let Some(host) = host else { return Ok(None) };
        let active = cs_agent::packages::service_status(host.as_ref(), "cloudstack-agent").await?;
        let (_, pkgs) = cs_agent::agent_packages(host.as_ref()).await?;
        let version = pkgs
            .iter()
            .find(|p| p.name == "cloudstack-agent")
            .and_then(|p| p.version());
        Ok(Some(HypervisorState {
            id: key.to_string(),
            name: key.to_string(),
            state: if active == "active" {
                "Up"
            } else {
                "Disconnected"
            }
            .into(),
            resource_state: None,
            version,
            address: None,
        }))
    }
}

fn parse_canary(s: &str) -> Result<fleet::Canary, String> {
    match s {
        "one" => Ok(fleet::Canary::One),
        "per-cluster" => Ok(fleet::Canary::PerCluster),
        "none" => Ok(fleet::Canary::None),
        _ => Err("expected one, per-cluster or none".into()),
    }
}

fn fault(name: &str) -> Option<cs_lab::KvmFault> {
    use cs_lab::KvmFault::*;
    Some(match name {
        "install-fails" => InstallFails,
        "never-up" => NeverUp,
        "overwrite-identity" => OverwriteIdentity,
        "drop-passphrase" => DropPassphrase,
        "mixed-jars" => MixedJars,
        _ => return None,
    })
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let json = args.output.json;
    let Ok(target) = CsVersion::parse(&args.to) else {
        eprintln!(
            "agent-upgrade: --to {} is not a CloudStack version",
            args.to
        );
        return ExitCode::from(2);
    };
    // Lab mode: start hosts, and answer status / maintenance / repository from the lab.
    let mut lab = Vec::new();
    let sudo = match args.sudo.sudo() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agent-upgrade: {e}");
            return ExitCode::from(2);
        }
    };
    let ssh = agent_common::Ssh {
        identity: args.identity.clone(),
        known_hosts: args.known_hosts.clone(),
        sudo,
        options: args.ssh.clone(),
    };
    let from_host = Arc::new(FromHost::default());
    let status: Arc<dyn HostStatus>;
    let maintenance: Option<Arc<dyn cs_core::HostMaintenance>>;
    let repo: Option<Arc<dyn cs_core::RepoSwitch>>;
    let targets = if let Some(n) = args.lab {
        lab = match cs_lab::start_kvm_hosts(n, 3, |_| {}) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("agent-upgrade: lab: {e}");
                return ExitCode::from(2);
            }
        };
        for f in &args.fault {
            let (name, what) = f.split_once('=').unwrap_or((f, ""));
            match (lab.iter().find(|h| h.name() == name), fault(what)) {
                (Some(h), Some(k)) => {
                    let _ = h.inject(k);
                }
                _ => {
                    eprintln!("agent-upgrade: bad --fault {f}");
                    return ExitCode::from(2);
                }
            }
        }
        // Each lab sshd has its own client key and known_hosts: `connect` picks them.
        let st = cs_lab::LabStatus::of(&lab);
        // Every host waiting to be Up is answered from one listing per interval.
        status = cs_agent::HostPoller::new(
            st.clone(),
            Duration::from_millis(200),
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        maintenance = Some(st);
        repo = Some(cs_lab::LabRepoSwitch::of(&lab));
        let text: String = lab
            .iter()
            .filter_map(|h| h.hosts_line())
            .map(|l| l + "\n")
            .collect();
        fleet::parse_hosts(&text).unwrap_or_default()
    } else {
        status = from_host.clone();
        maintenance = None;
        repo = None;
        match agent_common::read_hosts(args.hosts.as_deref().unwrap_or(std::path::Path::new("-"))) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("agent-upgrade: {e}");
                return ExitCode::from(2);
            }
        }
    };
    if !args.dry_run && args.lab.is_none() {
        let names: Vec<String> = targets.iter().map(|t| t.label()).collect();
        let what = format!(
            "agent-upgrade: about to upgrade cloudstack-agent to {target} and restart it on {} \
             host(s): {}",
            names.len(),
            names.join(", ")
        );
        if let Err(code) = common::confirm("agent-upgrade", &what, args.yes) {
            return code;
        }
    }
    if let Err(e) = std::fs::create_dir_all(&args.journal_dir) {
        eprintln!("agent-upgrade: {}: {e}", args.journal_dir.display());
        return ExitCode::from(2);
    }
    let lab = &lab;
    let connect = |t: fleet::Target| {
        let ssh = ssh.clone();
        async move {
            if let Some(h) = lab
                .iter()
                .find(|h| h.ssh().map(|s| s.port()) == Some(t.port))
            {
                // Lab hosts go by their own names, which the lab's status and repository
                // switch answer to; each sshd has its own client key and known_hosts.
                let host = h.connect().await.map_err(|e| cs_core::error_chain(&e))?;
                return Ok(cs_agent::Node::new(Arc::new(host))
                    .rerooted(h.root())
                    .in_cluster(h.cluster()));
            }
            ssh.node(&t).await
        }
    };
    let make_cx = |node: cs_agent::Node| {
        if let Ok(mut m) = from_host.hosts.lock() {
            m.insert(node.key.clone(), node.host.clone());
        }
        let mut o = RefreshOptions::new(target);
        o.up_deadline = args.up_deadline;
        o.poll = Duration::from_secs(if args.lab.is_some() { 1 } else { 5 });
        let deps = Deps {
            status: status.clone(),
            maintenance: maintenance.clone(),
            repo: repo.clone(),
        };
        RefreshContext::new(node, o, deps)
    };
    let with_maintenance = maintenance.is_some();
    let journal = |t: &fleet::Target| {
        args.journal_dir.join(format!(
            "{}_{}.jsonl",
            t.host.replace([':', '/'], "_"),
            t.port
        ))
    };

    let opts = FleetOptions::default()
        .batch(args.batch)
        .parallel(args.parallel)
        .max_fail_pct(args.max_fail)
        .cluster_max_fail_pct(args.cluster_max_fail)
        .canary(args.canary)
        .journal(Some(args.journal_dir.join("fleet.jsonl")));
    if args.dry_run {
        let waves = match fleet::plan_waves(&targets, &opts) {
            Ok(waves) => waves,
            Err(e) => {
                eprintln!("agent-upgrade: {}", cs_core::error_chain(&e));
                return ExitCode::from(2);
            }
        };
        if !json {
            print!("{}", table::waves(&targets, &waves, &opts));
        }
        let results = fleet::for_each(&targets, args.parallel, &cs_core::NoProgress, |t| {
            let (connect, make_cx, journal) = (&connect, &make_cx, &journal);
            async move {
                let node = connect(t.clone()).await?;
                let cx = make_cx(node);
                let runner = Runner::new(journal(&t), refresh_steps(with_maintenance));
                let plan = runner
                    .plan(&cx)
                    .await
                    .map_err(|e| cs_core::error_chain(&e))?;
                Ok::<_, String>(plan.would_apply().join(" -> "))
            }
        })
        .await;
        let mut failed = false;
        let mut hosts = Vec::new();
        let mut rows = table::new_table(&["HOST", "PLAN"]);
        for (t, r, _) in results {
            let would = match r {
                Ok(steps) if json => {
                    hosts.push(serde_json::json!({ "host": t.label(), "would_apply": steps }));
                    continue;
                }
                Ok(steps) if steps.is_empty() => comfy_table::Cell::new("nothing to do"),
                Ok(steps) => comfy_table::Cell::new(format!("would apply: {steps}")),
                Err(e) => {
                    failed = true;
                    if json {
                        hosts.push(serde_json::json!({ "host": t.label(), "error": e }));
                        continue;
                    }
                    table::bad(&format!("FAILED: {e}"))
                }
            };
            rows.add_row(vec![comfy_table::Cell::new(t.label()), would]);
        }
        if json {
            let waves: Vec<Vec<String>> = waves
                .iter()
                .map(|w| w.iter().map(|&i| targets[i].label()).collect())
                .collect();
            common::cli::print_json(&serde_json::json!({ "waves": waves, "hosts": hosts }));
        } else {
            println!("\n{}", table::render(&rows));
        }
        return if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }

    let progress = args.verbosity.progress();
    let report = fleet::run_fleet(&targets, &opts, progress.as_ref(), |t| {
        let (connect, make_cx, journal) = (&connect, &make_cx, &journal);
        async move {
            let node = connect(t.clone()).await?;
            let cx = make_cx(node);
            refresh_host(&cx, &journal(&t), with_maintenance, &cs_core::NoProgress)
                .await
                .map(|r| r.summary())
                .map_err(|e| cs_core::error_chain(&e))
        }
    })
    .await;
    match report {
        Ok(r) => {
            if json {
                common::cli::print_json(&serde_json::to_value(&r).unwrap_or_default());
            } else {
                print!("{}", table::fleet(&r));
            }
            if r.all_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("agent-upgrade: {}", cs_core::error_chain(&e));
            ExitCode::from(2)
        }
    }
}
