//! Benchmark: agent facts from many lab KVM hosts, three ways, in one run; the rolling
//! refresh's scheduler and shared poller on lab hosts and on a thousand simulated ones; the
//! first operation of a fresh SSH session.
//!
//! ```text
//! cargo run --release --example bench-fleet -- --hosts 100 [--parallel 10] [--runs 3]
//! cargo run --release --example bench-fleet -- --mode refresh --hosts 200 --clusters 10 \
//!     --refresh-secs 2 [--batch 1] [--cap N] [--poll-ms 100]
//! cargo run --release --example bench-fleet -- --mode sim --hosts 1000 --clusters 40 \
//!     --refresh-secs 2 [--batch 1] [--cap N] [--poll-ms 50] [--runs 3]
//! cargo run --release --example bench-fleet -- --mode first-op --hosts 10 [--runs 3]
//! ```
//!
//! `--mode refresh` starts `--hosts` lab hosts in `--clusters` clusters whose agent comes back
//! Up `--refresh-secs` after its restart (the stand-ins sleep for it), refreshes them all with
//! `run_fleet` + `refresh_host` over SSH, every wait answered by one `HostPoller`, and prints
//! the wall time against the ideal `ceil(largest cluster / batch) x one host's refresh` plus
//! the canary (one host's refresh measured alone on three more lab hosts), with the status
//! requests made. `--mode sim` runs the same scheduler and poller over `--hosts` in-process
//! hosts (a simulated management server whose hosts come back `--refresh-secs` after their
//! refresh starts, listed 500 to a page): the scheduler's and poller's own overhead, where a
//! thousand real sshds do not fit on the machine. `--mode first-op` times the first and
//! second command of fresh SSH sessions with `TCP_NODELAY` off, on, and on with `TCP_QUICKACK`.
//!
//! Default mode (`facts`):
//!
//! Starts `--hosts` lab hosts (each its own sshd, stand-ins and a real keystore), then collects
//! the same facts (package versions, `agent.properties`, keystore files, Java major, jars):
//!
//! 1. with cs-agent over SSH (`collect_facts`, `--parallel` hosts at once);
//! 2. with `ansible all -m command` at `--forks` = `--parallel` (ansible-core from PyPI in a venv
//!    under `.cache/ansible-venv`, installed on first use with `python3 -m venv` + `pip`);
//! 3. with a sequential `ssh` loop.
//!
//! Prints the median of `--runs` runs of each, one host's time, and the ratios the issue sets
//! as targets: cs-agent ≥ 5× faster than Ansible, and within 1.3× of one host's time ×
//! ⌈hosts / parallel⌉. Not part of `cargo test`.
//!
//! The lab's sshds, shells and stand-ins share the machine's cores with the client, so a
//! parallel run is bounded by CPU as much as by round trips. The benchmark therefore also
//! prints the CPU one host's collection costs (this process, plus each lab sshd with every
//! process it reaped, from `/proc`), the floor that puts under the run on this machine's cores,
//! and how much CPU other processes took during each measurement (a shared machine stretches
//! both one host's time and the runs).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cs_agent::Node;
use cs_core::{Cmd, Host, LocalHost, NoProgress};
use cs_lab::KvmHost;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Agent facts: cs-agent against Ansible and an ssh loop.
    Facts,
    /// A rolling refresh of lab hosts with a simulated refresh time.
    Refresh,
    /// The scheduler and shared poller over in-process hosts.
    Sim,
    /// The first command of a fresh SSH session, TCP_NODELAY and TCP_QUICKACK off and on.
    FirstOp,
}

/// Fleet benchmarks against lab hosts.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::BENCH)]
struct Args {
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
    /// What to measure.
    #[arg(long, value_enum, default_value = "facts")]
    mode: Mode,
    /// Clusters the hosts are spread over (refresh, sim).
    #[arg(long, default_value_t = 10)]
    clusters: usize,
    /// Simulated time of one host's refresh, seconds (refresh, sim).
    #[arg(long, default_value_t = 2.0)]
    refresh_secs: f64,
    /// Hosts of a cluster at once: a count or a percentage (refresh, sim).
    #[arg(long, default_value = "1")]
    batch: cs_agent::fleet::BatchSize,
    /// Hosts at once across the fleet (refresh, sim; default: no cap).
    #[arg(long)]
    cap: Option<usize>,
    /// The shared poller's fast interval, milliseconds (refresh, sim).
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Lab hosts to start.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Hosts worked on at once (Ansible forks too).
    #[arg(long, default_value_t = 10)]
    parallel: usize,
    /// Runs of each method (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip Ansible.
    #[arg(long)]
    no_ansible: bool,
    /// Skip the sequential ssh loop.
    #[arg(long)]
    no_ssh_loop: bool,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The shell the Ansible and ssh loops run on each host: the same facts cs-agent reads.
fn facts_script(root: &str) -> String {
    format!(
        "dpkg-query -W -f='${{Package}} ${{Version}}\\n' cloudstack-agent cloudstack-common; \
         cat {root}/etc/cloudstack/agent/agent.properties; \
         ls -ln {root}/etc/cloudstack/agent {root}/usr/share/cloudstack-agent/lib; \
         head -c 64 {root}/etc/cloudstack/agent/cloud.jks | od -An -tx1 | head -n 1; \
         cat {root}/etc/cloudstack/agent/cloud.crt; java -version"
    )
}

/// CPU time in seconds, from `/proc` (`USER_HZ` ticks, 100 a second on Linux).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// This process, all threads (the SSH client side).
    client: f64,
    /// The lab's sshds with every process they reaped: session processes, shells, stand-ins.
    servers: f64,
    /// The whole machine (every core's non-idle time), to tell a run that shared the machine.
    machine: f64,
}

impl Cpu {
    /// What the machine ran besides this benchmark.
    fn others(&self) -> f64 {
        (self.machine - self.client - self.servers).max(0.0)
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            client: self.client - o.client,
            servers: self.servers - o.servers,
            machine: self.machine - o.machine,
        }
    }
}

/// Busy time of all cores (`/proc/stat`: everything but idle and iowait), in seconds.
fn machine_busy() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (ticks.iter().sum::<f64>() - idle) / 100.0
}

/// Fields 14..=17 of `/proc/PID/stat` (utime, stime, cutime, cstime), in seconds.
fn proc_times(pid: &str) -> Option<[f64; 4]> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i)?.parse::<f64>().ok().map(|t| t / 100.0);
    // `rest` starts at field 3 (state): utime is field 14.
    Some([tick(11)?, tick(12)?, tick(13)?, tick(14)?])
}

/// CPU used so far by this process and by the lab's sshds (including finished connections,
/// which sshd has reaped). Sampled outside the timed part of a run.
fn cpu_now(lab: &[KvmHost]) -> Cpu {
    let client = proc_times("self").map_or(0.0, |t| t[0] + t[1]);
    let servers = lab
        .iter()
        .filter_map(|h| std::fs::read_to_string(h.ssh()?.dir().join("sshd.pid")).ok())
        .filter_map(|pid| proc_times(pid.trim()))
        .map(|t| t.iter().sum::<f64>())
        .sum();
    Cpu {
        client,
        servers,
        machine: machine_busy(),
    }
}

/// CPU after the last connections of a run have closed and been reaped.
async fn cpu_settled(lab: &[KvmHost]) -> Cpu {
    tokio::time::sleep(Duration::from_millis(300)).await;
    cpu_now(lab)
}

async fn ours(lab: &[KvmHost], parallel: usize) -> Result<Duration, String> {
    let targets: Vec<_> = lab.iter().map(target).collect();
    let start = Instant::now();
    let results = cs_agent::fleet::for_each(&targets, parallel, &NoProgress, |t| async move {
        let h = lab
            .iter()
            .find(|h| h.ssh().map(|s| s.port()) == Some(t.port))
            .ok_or("no host")?;
        one(h).await
    })
    .await;
    let elapsed = start.elapsed();
    for (t, r, _) in results {
        r.map_err(|e| format!("{}: {e}", t.label()))?;
    }
    Ok(elapsed)
}

fn target(h: &KvmHost) -> cs_agent::fleet::Target {
    let line = h.hosts_line().unwrap_or_default();
    cs_agent::fleet::parse_hosts(&line)
        .ok()
        .and_then(|mut t| t.pop())
        .expect("lab hosts have sshd")
}

async fn one(h: &KvmHost) -> Result<(), String> {
    one_timed(h).await.map(drop)
}

/// Connects and collects one host's facts; returns (connect time, facts time).
async fn one_timed(h: &KvmHost) -> Result<(Duration, Duration), String> {
    let start = Instant::now();
    let ssh = h.connect().await.map_err(|e| cs_core::error_chain(&e))?;
    let connected = start.elapsed();
    let host: Arc<dyn Host> = Arc::new(ssh);
    let node = Node::new(host).rerooted(h.root());
    let f = cs_agent::collect_facts(&node)
        .await
        .map_err(|e| cs_core::error_chain(&e))?;
    if f.agent_version().is_none() || f.keystore.opens != Some(true) {
        return Err(format!("{}: unexpected facts", h.name()));
    }
    Ok((connected, start.elapsed() - connected))
}

async fn run_ok(cmd: Cmd) -> Result<cs_core::Output, String> {
    let shown = cmd.to_string();
    let out = LocalHost::new()
        .run(&cmd)
        .await
        .map_err(|e| format!("{shown}: {}", cs_core::error_chain(&e)))?;
    if out.success() {
        Ok(out)
    } else {
        let err = out.stderr_lossy();
        let so = out.stdout_lossy();
        Err(format!(
            "`{shown}` exited {}: {}{}",
            out.code,
            &err[err.len().saturating_sub(600)..],
            &so[so.len().saturating_sub(600)..]
        ))
    }
}

/// ansible-core in a venv under `.cache/ansible-venv` (installed from PyPI when missing).
async fn ansible_bin(cache: &Path) -> Result<PathBuf, String> {
    let venv = cache.join("ansible-venv");
    let bin = venv.join("bin/ansible");
    if !bin.exists() {
        run_ok(
            Cmd::new("python3")
                .args(["-m", "venv"])
                .arg(venv.to_string_lossy()),
        )
        .await?;
        run_ok(
            Cmd::new(venv.join("bin/pip").to_string_lossy())
                .args([
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "ansible-core",
                ])
                .timeout(Duration::from_secs(600)),
        )
        .await?;
    }
    Ok(bin)
}

fn inventory(lab: &[KvmHost]) -> String {
    let mut s = String::from("[kvm]\n");
    for h in lab {
        let Some(ssh) = h.ssh() else { continue };
        s.push_str(&format!(
            "{} ansible_host=127.0.0.1 ansible_port={} ansible_user=root \
             ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes' \
             cs_root={}\n",
            h.name(),
            ssh.port(),
            ssh.client_key().display(),
            ssh.known_hosts().display(),
            h.root().display()
        ));
    }
    s.push_str("[kvm:vars]\nansible_python_interpreter=/usr/bin/python3\n");
    s
}

async fn ansible(bin: &Path, inv: &Path, home: &Path, parallel: usize) -> Result<Duration, String> {
    let cmd = Cmd::new(bin.to_string_lossy())
        .arg("all")
        .arg("-i")
        .arg(inv.to_string_lossy())
        .arg("-f")
        .arg(parallel.to_string())
        .args(["-m", "command", "-a"])
        .arg(format!("sh -c \"{}\"", facts_script("{{ cs_root }}")))
        .env("ANSIBLE_HOME", home.to_string_lossy())
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp").to_string_lossy())
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_NOCOLOR", "1")
        .timeout(Duration::from_secs(1800));
    let start = Instant::now();
    let out = run_ok(cmd).await?;
    let elapsed = start.elapsed();
    let ok = out.stdout_lossy().matches("| CHANGED |").count();
    if ok == 0 {
        return Err("ansible reported no host as done".into());
    }
    Ok(elapsed)
}

async fn ssh_loop(lab: &[KvmHost]) -> Result<Duration, String> {
    let start = Instant::now();
    for h in lab {
        let Some(s) = h.ssh() else { continue };
        run_ok(
            Cmd::new("ssh")
                .arg("-i")
                .arg(s.client_key().to_string_lossy())
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", s.known_hosts().display()))
                .args([
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                    "-p",
                ])
                .arg(s.port().to_string())
                .arg("root@127.0.0.1")
                // ssh hands its command line to the remote shell as it is.
                .arg(facts_script(&h.root().to_string_lossy()))
                .timeout(Duration::from_secs(60)),
        )
        .await?;
    }
    Ok(start.elapsed())
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    match bench(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-fleet: {e}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
async fn bench(args: &Args) -> Result<(), String> {
    match args.mode {
        Mode::Facts => facts_bench(args).await,
        Mode::Refresh => fleet_bench::lab(args).await,
        Mode::Sim => fleet_bench::sim(args).await,
        Mode::FirstOp => fleet_bench::first_op(args).await,
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
async fn facts_bench(args: &Args) -> Result<(), String> {
    let t0 = Instant::now();
    let lab = cs_lab::start_kvm_hosts(args.hosts, 10, |_| {}).map_err(|e| e.to_string())?;
    eprintln!(
        "started {} lab hosts in {:.1}s",
        lab.len(),
        t0.elapsed().as_secs_f64()
    );
    let runs = args.runs.max(1);

    // One host's time: connect + facts, sequentially over a few hosts.
    let (mut singles, mut connects, mut facts) = (Vec::new(), Vec::new(), Vec::new());
    let before = cpu_settled(&lab).await;
    for h in lab.iter().take(runs.max(5)) {
        let (c, f) = one_timed(h).await?;
        singles.push(c + f);
        connects.push(c);
        facts.push(f);
    }
    let single_others = (cpu_settled(&lab).await - before).others();
    let single = median(singles);
    let (connect_m, facts_m) = (median(connects), median(facts));

    let mut ours_t = Vec::new();
    let mut cpu_t = Vec::new();
    for _ in 0..runs {
        let before = cpu_settled(&lab).await;
        ours_t.push(ours(&lab, args.parallel).await?);
        cpu_t.push(cpu_settled(&lab).await - before);
    }
    let ours_m = median(ours_t.clone());
    eprintln!(
        "cs-agent: {:.3} s (one host {:.3} s)",
        ours_m.as_secs_f64(),
        single.as_secs_f64()
    );

    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache");
    let ansible_m = if args.no_ansible {
        None
    } else {
        let bin = ansible_bin(&cache).await?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let inv = dir.path().join("inventory.ini");
        std::fs::write(&inv, inventory(&lab)).map_err(|e| e.to_string())?;
        let mut t = Vec::new();
        for _ in 0..runs {
            t.push(ansible(&bin, &inv, dir.path(), args.parallel).await?);
        }
        eprintln!("ansible: {t:?}");
        Some(median(t))
    };
    let ssh_m = if args.no_ssh_loop {
        None
    } else {
        let mut t = Vec::new();
        for _ in 0..runs {
            t.push(ssh_loop(&lab).await?);
        }
        Some(median(t))
    };

    let rounds = args.hosts.div_ceil(args.parallel.max(1)) as f64;
    let ideal = single.as_secs_f64() * rounds;
    println!(
        "hosts {}, parallel {}, runs {runs} (medians)",
        args.hosts, args.parallel
    );
    println!(
        "one host (connect + facts)     {:>8.3} s   (connect {:.3} s, facts {:.3} s; \
         other processes' CPU meanwhile {single_others:.2} core-s)",
        single.as_secs_f64(),
        connect_m.as_secs_f64(),
        facts_m.as_secs_f64()
    );
    println!(
        "cs-agent collect_facts         {:>8.3} s   runs: {}",
        ours_m.as_secs_f64(),
        ours_t
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  vs one host x ceil(hosts/parallel) = {ideal:.3} s: {:.2}x (target <= 1.3x)",
        ours_m.as_secs_f64() / ideal
    );
    // What the run costs in CPU, and the shortest time the machine's cores allow for it.
    let per_host = |f: fn(&Cpu) -> f64| {
        let mut v: Vec<f64> = cpu_t.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0) / args.hosts.max(1) as f64
    };
    let (client, servers) = (per_host(|c| c.client), per_host(|c| c.servers));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let floor = (client + servers) * args.hosts as f64 / cores as f64;
    println!(
        "  CPU per host {:.1} ms (client {:.1} ms, lab sshd side {:.1} ms); \
         {cores} cores => CPU floor {floor:.3} s = {:.2}x",
        (client + servers) * 1e3,
        client * 1e3,
        servers * 1e3,
        floor / ideal
    );
    // Other work on the machine stretches a run: show how much there was, run by run.
    println!(
        "  other processes' CPU during each run (core-seconds): {}",
        cpu_t
            .iter()
            .map(|c| format!("{:.2}", c.others()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(a) = ansible_m {
        println!(
            "ansible -m command (forks {})  {:>8.3} s   cs-agent is {:.1}x faster (target >= 5x)",
            args.parallel,
            a.as_secs_f64(),
            a.as_secs_f64() / ours_m.as_secs_f64()
        );
    }
    if let Some(s) = ssh_m {
        println!(
            "sequential ssh loop            {:>8.3} s   cs-agent is {:.1}x faster",
            s.as_secs_f64(),
            s.as_secs_f64() / ours_m.as_secs_f64()
        );
    }
    Ok(())
}

/// The rolling refresh's benchmarks: scheduler, shared poller, SSH session set-up.
#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
mod fleet_bench {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use async_trait::async_trait;
    use cs_agent::HostPoller;
    use cs_agent::fleet::{Canary, FleetOptions, Target};
    use cs_core::{BoxError, Cmd, CsVersion, Host, HostStatus, HypervisorState, NoProgress};
    use cs_lab::KvmHost;

    use super::{Args, cpu_settled, median, target};

    const TARGET: &str = "4.19.1.0";

    /// Counts what the refresh asks the (lab) management server: listings and point queries.
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn HostStatus>,
        listings: AtomicU64,
        points: AtomicU64,
    }

    #[async_trait]
    impl HostStatus for Counting {
        async fn hypervisor(&self, key: &str) -> Result<Option<HypervisorState>, BoxError> {
            self.points.fetch_add(1, Ordering::Relaxed);
            self.inner.hypervisor(key).await
        }

        async fn hypervisors(&self) -> Result<Option<Vec<HypervisorState>>, BoxError> {
            self.listings.fetch_add(1, Ordering::Relaxed);
            self.inner.hypervisors().await
        }
    }

    fn options(args: &Args, hosts: usize) -> FleetOptions {
        FleetOptions::default()
            .batch(args.batch)
            .parallel(args.cap.unwrap_or(hosts).max(1))
            .max_fail_pct(None)
            .cluster_max_fail_pct(None)
            .canary(Canary::One)
            .journal(None)
    }

    /// `ceil(largest cluster / batch)` rounds plus the canary's, in host refreshes.
    fn ideal_rounds(targets: &[Target], opts: &FleetOptions) -> usize {
        let mut sizes = std::collections::BTreeMap::new();
        for t in targets {
            *sizes.entry(t.cluster.clone()).or_insert(0usize) += 1;
        }
        let rounds = sizes
            .values()
            .map(|&n| n.div_ceil(opts.batch.of(n)))
            .max()
            .unwrap_or(0);
        rounds + usize::from(opts.canary != Canary::None)
    }

    async fn refresh_one(
        h: &KvmHost,
        status: Arc<dyn HostStatus>,
        repo: Arc<dyn cs_core::RepoSwitch>,
        journal: &std::path::Path,
        poll: Duration,
    ) -> Result<String, String> {
        let ssh = h.connect().await.map_err(|e| cs_core::error_chain(&e))?;
        let node = cs_agent::Node::new(Arc::new(ssh))
            .rerooted(h.root())
            .in_cluster(h.cluster());
        let mut o =
            cs_agent::RefreshOptions::new(CsVersion::parse(TARGET).map_err(|e| e.to_string())?);
        o.up_deadline = Duration::from_secs(300);
        o.poll = poll;
        let deps = cs_agent::Deps {
            status,
            maintenance: None,
            repo: Some(repo),
        };
        let cx = cs_agent::RefreshContext::new(node, o, deps);
        cs_agent::refresh_host(&cx, journal, false, &NoProgress)
            .await
            .map(|r| r.summary())
            .map_err(|e| cs_core::error_chain(&e))
    }

    /// A rolling refresh of lab hosts whose agents come back `--refresh-secs` after a restart.
    pub(super) async fn lab(args: &Args) -> Result<(), String> {
        let t0 = Instant::now();
        let per_cluster = args.hosts.div_ceil(args.clusters.max(1)).max(1);
        let delay = Duration::from_secs_f64(args.refresh_secs);
        let lab =
            cs_lab::start_kvm_hosts(args.hosts, per_cluster, |_| {}).map_err(|e| e.to_string())?;
        let solo = cs_lab::start_kvm_hosts(3, 3, |o| {
            o.name = format!("solo-{}", o.name);
            o.cluster = "solo".into();
        })
        .map_err(|e| e.to_string())?;
        for h in lab.iter().chain(&solo) {
            h.set_up_delay(Some(delay)).map_err(|e| e.to_string())?;
        }
        eprintln!(
            "started {} lab hosts in {:.1}s",
            lab.len() + solo.len(),
            t0.elapsed().as_secs_f64()
        );
        let fast = Duration::from_millis(args.poll_ms.unwrap_or(100));
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let repo: Arc<dyn cs_core::RepoSwitch> = cs_lab::LabRepoSwitch::of(lab.iter().chain(&solo));
        let counting = Arc::new(Counting {
            inner: cs_lab::LabStatus::of(lab.iter().chain(&solo)),
            listings: AtomicU64::new(0),
            points: AtomicU64::new(0),
        });
        let poller = HostPoller::new(
            counting.clone(),
            fast,
            Duration::from_secs(2),
            Duration::from_secs(60),
        );

        // One host alone, three times: the per-host time the ideal is made of.
        let mut singles = Vec::new();
        for h in &solo {
            let start = Instant::now();
            refresh_one(
                h,
                poller.clone(),
                repo.clone(),
                &dir.path().join(format!("{}.jsonl", h.name())),
                fast,
            )
            .await?;
            singles.push(start.elapsed());
        }
        let single = median(singles.clone());
        let (l0, p0) = (
            counting.listings.load(Ordering::Relaxed),
            counting.points.load(Ordering::Relaxed),
        );

        let targets: Vec<Target> = lab.iter().map(target).collect();
        let opts = options(args, targets.len());
        let lab_ref = &lab;
        let (poller_ref, repo_ref, dir_ref) = (&poller, &repo, dir.path());
        let cpu_before = cpu_settled(&lab).await;
        let start = Instant::now();
        let report = cs_agent::fleet::run_fleet(&targets, &opts, &NoProgress, |t| async move {
            let h = lab_ref
                .iter()
                .find(|h| h.ssh().map(|s| s.port()) == Some(t.port))
                .ok_or("no host")?;
            let journal = dir_ref.join(format!("{}.jsonl", h.name()));
            refresh_one(h, poller_ref.clone(), repo_ref.clone(), &journal, fast).await
        })
        .await
        .map_err(|e| e.to_string())?;
        let wall = start.elapsed();
        let cpu = cpu_settled(&lab).await - cpu_before;
        if !report.all_ok() {
            return Err(format!("the refresh failed:\n{}", report.to_table()));
        }
        let listings = counting.listings.load(Ordering::Relaxed) - l0;
        let points = counting.points.load(Ordering::Relaxed) - p0;
        let rounds = ideal_rounds(&targets, &opts);
        let ideal = single.as_secs_f64() * rounds as f64;
        println!(
            "lab refresh: hosts {}, clusters {}, batch {}, cap {}, simulated refresh {:.1} s, poll {} ms",
            targets.len(),
            args.clusters,
            opts.batch,
            opts.parallel,
            args.refresh_secs,
            fast.as_millis()
        );
        println!(
            "one host alone                 {:>8.3} s   runs: {}",
            single.as_secs_f64(),
            singles
                .iter()
                .map(|d| format!("{:.3}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "fleet                          {:>8.3} s   ideal {rounds} x one host = {ideal:.3} s: {:.3}x (target <= 1.2x)",
            wall.as_secs_f64(),
            wall.as_secs_f64() / ideal
        );
        // The lab's shells and stand-ins share the machine's cores with whatever else runs.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "CPU during the fleet run: this benchmark {:.1} core-s (client {:.1}, lab sshds and \
             stand-ins {:.1}), other processes {:.1} core-s; {cores} cores x {:.1} s = {:.1} core-s",
            cpu.client + cpu.servers,
            cpu.client,
            cpu.servers,
            cpu.others(),
            wall.as_secs_f64(),
            cores as f64 * wall.as_secs_f64()
        );
        println!(
            "status requests: {listings} listings ({:.2} per {} ms interval), {points} point queries \
             ({:.2} per host); one request per waiting host per interval would be ~{:.0}",
            listings as f64 / (wall.as_secs_f64() / fast.as_secs_f64()),
            fast.as_millis(),
            points as f64 / targets.len() as f64,
            targets.len() as f64 * args.refresh_secs / fast.as_secs_f64()
        );
        Ok(())
    }

    /// A simulated management server: hosts Up at 4.18 until their refresh, `Disconnected`
    /// while it runs, Up at the target once it is over; listed 500 to a page.
    #[derive(Debug)]
    struct SimCloud {
        names: Vec<String>,
        /// When each host is back Up at the target, once its refresh started.
        back_at: Mutex<Vec<Option<Instant>>>,
        listings: AtomicU64,
        pages: AtomicU64,
        points: AtomicU64,
    }

    impl SimCloud {
        fn states(&self) -> Vec<HypervisorState> {
            let now = Instant::now();
            let back = self.back_at.lock().map(|b| b.clone()).unwrap_or_default();
            let (old, new) = (
                CsVersion::parse("4.18.0.0").ok(),
                CsVersion::parse(TARGET).ok(),
            );
            self.names
                .iter()
                .zip(back)
                .map(|(n, b)| {
                    let (state, version) = match b {
                        None => ("Up", old),
                        Some(t) if now >= t => ("Up", new),
                        Some(_) => ("Disconnected", old),
                    };
                    HypervisorState {
                        id: format!("id-{n}"),
                        name: n.clone(),
                        state: state.into(),
                        resource_state: Some("Enabled".into()),
                        version,
                        address: None,
                    }
                })
                .collect()
        }
    }

    #[async_trait]
    impl HostStatus for SimCloud {
        async fn hypervisor(&self, key: &str) -> Result<Option<HypervisorState>, BoxError> {
            self.points.fetch_add(1, Ordering::Relaxed);
            Ok(self.states().into_iter().find(|h| h.matches(key)))
        }

        async fn hypervisors(&self) -> Result<Option<Vec<HypervisorState>>, BoxError> {
            self.listings.fetch_add(1, Ordering::Relaxed);
            self.pages
                .fetch_add(self.names.len().div_ceil(500) as u64, Ordering::Relaxed);
            Ok(Some(self.states()))
        }
    }

    /// The scheduler and the shared poller over in-process hosts.
    pub(super) async fn sim(args: &Args) -> Result<(), String> {
        let per_cluster = args.hosts.div_ceil(args.clusters.max(1)).max(1);
        let text: String = (0..args.hosts)
            .map(|i| format!("root@sim{i} cluster=c{}\n", i / per_cluster))
            .collect();
        let targets = cs_agent::fleet::parse_hosts(&text).map_err(|e| e.to_string())?;
        let opts = options(args, targets.len());
        let per_host = Duration::from_secs_f64(args.refresh_secs);
        let fast = Duration::from_millis(args.poll_ms.unwrap_or(50));
        let rounds = ideal_rounds(&targets, &opts);
        let ideal = per_host.as_secs_f64() * rounds as f64;
        let target_v = CsVersion::parse(TARGET).map_err(|e| e.to_string())?;
        let (mut walls, mut listings, mut pages, mut points) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            let cloud = Arc::new(SimCloud {
                names: targets.iter().map(|t| t.host.clone()).collect(),
                back_at: Mutex::new(vec![None; targets.len()]),
                listings: AtomicU64::new(0),
                pages: AtomicU64::new(0),
                points: AtomicU64::new(0),
            });
            let poller = HostPoller::new(
                cloud.clone(),
                fast,
                Duration::from_secs(2),
                Duration::from_secs(60),
            );
            let (cloud_ref, poller_ref) = (&cloud, &poller);
            let start = Instant::now();
            let report = cs_agent::fleet::run_fleet(&targets, &opts, &NoProgress, |t| async move {
                // Half the refresh on the host (install, restart), half waiting for the agent
                // to come back, as the lab's stand-ins do it.
                tokio::time::sleep(per_host / 2).await;
                let i = cloud_ref
                    .names
                    .iter()
                    .position(|n| *n == t.host)
                    .ok_or("no such host")?;
                if let Ok(mut b) = cloud_ref.back_at.lock() {
                    b[i] = Some(Instant::now() + per_host / 2);
                }
                let up = |h: Option<&HypervisorState>| {
                    h.is_some_and(|h| h.is_up() && h.version == Some(target_v))
                };
                let h = poller_ref
                    .wait_for(&t.host, &up, Duration::from_secs(60), fast)
                    .await
                    .map_err(|e| e.to_string())?;
                if up(h.as_ref()) {
                    Ok("up".to_string())
                } else {
                    Err("not up".to_string())
                }
            })
            .await
            .map_err(|e| e.to_string())?;
            let wall = start.elapsed();
            if !report.all_ok() {
                return Err(format!(
                    "the simulated refresh failed: {:?}",
                    report.stopped
                ));
            }
            walls.push(wall);
            listings.push(cloud.listings.load(Ordering::Relaxed));
            pages.push(cloud.pages.load(Ordering::Relaxed));
            points.push(cloud.points.load(Ordering::Relaxed));
        }
        let wall = median(walls.clone());
        let med = |mut v: Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let (l, p, q) = (med(listings), med(pages), med(points));
        println!(
            "simulated refresh: hosts {}, clusters {}, batch {}, cap {}, per host {:.1} s, poll {} ms, runs {} (medians)",
            targets.len(),
            args.clusters,
            opts.batch,
            opts.parallel,
            per_host.as_secs_f64(),
            fast.as_millis(),
            walls.len()
        );
        println!(
            "fleet {:.3} s   ideal {rounds} x {:.1} s = {ideal:.3} s: {:.4}x, overhead {:.2}% (target <= 5%)   runs: {}",
            wall.as_secs_f64(),
            per_host.as_secs_f64(),
            wall.as_secs_f64() / ideal,
            (wall.as_secs_f64() / ideal - 1.0) * 100.0,
            walls
                .iter()
                .map(|d| format!("{:.3}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let intervals = wall.as_secs_f64() / fast.as_secs_f64();
        println!(
            "status requests: {l} listings ({p} pages of 500) in {intervals:.0} intervals: {:.2} \
             listings per interval (target <= 1), {q} point queries; one request per waiting host \
             per interval would be ~{:.0}",
            l as f64 / intervals,
            targets.len() as f64 * per_host.as_secs_f64() / 2.0 / fast.as_secs_f64()
        );
        Ok(())
    }

    /// The first and second command of fresh SSH sessions: TCP_NODELAY off, on, and on with
    /// TCP_QUICKACK.
    pub(super) async fn first_op(args: &Args) -> Result<(), String> {
        let lab = cs_lab::start_kvm_hosts(args.hosts.clamp(1, 20), 10, |_| {})
            .map_err(|e| e.to_string())?;
        println!(
            "first-op: {} lab hosts x {} runs (medians)",
            lab.len(),
            args.runs.max(1)
        );
        // Nagle off on our side, then also every read acknowledged at once (sshd's Nagle stays
        // on until the first session starts).
        for (nodelay, quickack) in [(false, false), (true, false), (true, true)] {
            let (mut connect, mut first, mut second) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.runs.max(1) {
                for h in &lab {
                    let s = h.ssh().ok_or("lab host without sshd")?;
                    let t = Instant::now();
                    let ssh = s
                        .host_builder()
                        .tcp_nodelay(nodelay)
                        .tcp_quickack(quickack)
                        .connect()
                        .await
                        .map_err(|e| cs_core::error_chain(&e))?;
                    connect.push(t.elapsed());
                    for v in [&mut first, &mut second] {
                        let t = Instant::now();
                        let out = ssh
                            .run(&Cmd::new("true"))
                            .await
                            .map_err(|e| cs_core::error_chain(&e))?;
                        if !out.success() {
                            return Err("`true` failed".into());
                        }
                        v.push(t.elapsed());
                    }
                }
            }
            println!(
                "TCP_NODELAY {:<3} TCP_QUICKACK {:<3}  connect {:>7.1} ms   first command {:>6.1} ms   second {:>6.1} ms",
                if nodelay { "on" } else { "off" },
                if quickack { "on" } else { "off" },
                median(connect).as_secs_f64() * 1e3,
                median(first).as_secs_f64() * 1e3,
                median(second).as_secs_f64() * 1e3
            );
        }
        Ok(())
    }
}
