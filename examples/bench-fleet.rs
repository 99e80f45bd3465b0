//! Benchmark: agent facts from many lab KVM hosts, three ways, in one run.
//!
//! ```text
//! cargo run --release --example bench-fleet -- --hosts 100 [--parallel 10] [--runs 3]
//! ```
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
//! as targets: cs-agent ≥ 5× faster than Ansible, and within 2× of one host's time ×
//! ⌈hosts / parallel⌉. Not part of `cargo test`.
//!
//! The lab's sshds, shells and stand-ins share the machine's cores with the client, so a
//! parallel run is bounded by CPU as much as by round trips. The benchmark therefore also
//! prints the CPU one host's collection costs (this process, plus each lab sshd with every
//! process it reaped, from `/proc`), the floor that puts under the run on this machine's cores,
//! and how much CPU other processes took during each measurement (a shared machine stretches
//! both one host's time and the runs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cs_agent::Node;
use cs_core::{Cmd, Host, LocalHost, NoProgress};
use cs_lab::KvmHost;

/// Agent-facts benchmark against lab hosts.
#[derive(Debug, Parser)]
struct Args {
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
    let args = Args::parse();
    match bench(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-fleet: {e}");
            ExitCode::from(1)
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
async fn bench(args: &Args) -> Result<(), String> {
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
        "  vs one host x ceil(hosts/parallel) = {ideal:.3} s: {:.2}x (target <= 2x)",
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
