//! Benchmark: what going through a bastion (ProxyJump) costs an `SshHost`, against the same
//! lab node reached directly in the same run: connecting, a small command's round trip, and
//! SFTP throughput both ways. Prints medians and the ratio jump / direct. As the reference for
//! what a bastion costs in any client (the data is encrypted twice on the client, and the
//! bastion decrypts and encrypts it once more), OpenSSH's `ssh` and `ssh -J` move the same
//! bytes (`cat > FILE`, `cat FILE`; each with its own connection).
//!
//! ```text
//! cargo run --release --example bench-jump [-- --runs 7 --commands 200 --mib 32 --json]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cs_core::{Cmd, Host, HostExt, LocalHost, SshHost, error_chain};
use cs_lab::SshServer;

/// Time SshHost direct and through a lab bastion.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::BENCH)]
struct Args {
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
    /// Runs of each measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Commands per round-trip run.
    #[arg(long, default_value_t = 100)]
    commands: usize,
    /// MiB written and read back per SFTP run.
    #[arg(long, default_value_t = 16)]
    mib: usize,
    #[command(flatten)]
    output: common::cli::Json,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn connect(target: &SshServer, bastion: Option<&SshServer>) -> Result<SshHost, String> {
    let mut b = target.host_builder();
    if let Some(j) = bastion {
        b = b.proxy_jump(j.host_builder());
    }
    b.connect().await.map_err(|e| error_chain(&e))
}

/// Medians of: connect, one small command, SFTP write + read of `mib` MiB.
async fn measure(
    args: &Args,
    target: &SshServer,
    bastion: Option<&SshServer>,
) -> Result<[Duration; 3], String> {
    let mut connects = Vec::new();
    let mut commands = Vec::new();
    let mut transfers = Vec::new();
    let data: Vec<u8> = (0..args.mib * 1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect();
    let file = target.root().join("bench-jump.bin");
    for _ in 0..args.runs {
        let started = Instant::now();
        let host = connect(target, bastion).await?;
        connects.push(started.elapsed());
        host.run_ok(&Cmd::new("true"))
            .await
            .map_err(|e| error_chain(&e))?;
        let started = Instant::now();
        for _ in 0..args.commands {
            host.run_ok(&Cmd::new("true"))
                .await
                .map_err(|e| error_chain(&e))?;
        }
        commands.push(started.elapsed() / u32::try_from(args.commands.max(1)).unwrap_or(1));
        let started = Instant::now();
        host.write_atomic(&file, &data, None)
            .await
            .map_err(|e| error_chain(&e))?;
        let back = host.read(&file).await.map_err(|e| error_chain(&e))?;
        transfers.push(started.elapsed());
        if back != data {
            return Err("SFTP read back other bytes than written".into());
        }
    }
    Ok([median(connects), median(commands), median(transfers)])
}

/// An ssh_config for OpenSSH naming the target directly (`target`) and through the bastion
/// (`target-jump`).
fn openssh_config(
    dir: &std::path::Path,
    target: &SshServer,
    bastion: &SshServer,
) -> std::io::Result<std::path::PathBuf> {
    let known = dir.join("known_hosts");
    std::fs::write(
        &known,
        std::fs::read_to_string(target.known_hosts())?
            + &std::fs::read_to_string(bastion.known_hosts())?,
    )?;
    let common = format!(
        "  HostName 127.0.0.1\n  User root\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  \
         IdentitiesOnly yes\n  BatchMode yes\n  KexAlgorithms ecdh-sha2-nistp256\n",
        known.display()
    );
    let text = format!(
        "Host bastion\n  Port {bp}\n  IdentityFile {bk}\n{common}\
         Host target\n  Port {tp}\n  IdentityFile {tk}\n{common}\
         Host target-jump\n  Port {tp}\n  IdentityFile {tk}\n  ProxyJump bastion\n{common}",
        bp = bastion.port(),
        bk = bastion.client_key().display(),
        tp = target.port(),
        tk = target.client_key().display(),
    );
    let path = dir.join("ssh_config");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Median of OpenSSH writing `mib` MiB to the target and reading them back.
async fn measure_openssh(
    args: &Args,
    config: &std::path::Path,
    alias: &str,
    file: &std::path::Path,
) -> Result<Duration, String> {
    let data: Vec<u8> = (0..args.mib * 1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect();
    let local = LocalHost::new();
    let ssh = |remote: String| {
        Cmd::new("ssh")
            .arg("-F")
            .arg(config.to_string_lossy())
            .arg(alias)
            .arg(remote)
            .timeout(Duration::from_secs(300))
    };
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        local
            .run_ok(&ssh(format!("cat > {}", file.display())).stdin(data.clone()))
            .await
            .map_err(|e| error_chain(&e))?;
        let out = local
            .run_ok(&ssh(format!("cat {}", file.display())))
            .await
            .map_err(|e| error_chain(&e))?;
        runs.push(started.elapsed());
        if out.stdout != data {
            return Err(format!("{alias}: read back other bytes than written"));
        }
    }
    Ok(median(runs))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let servers = SshServer::start().and_then(|t| Ok((t, SshServer::builder().bastion().start()?)));
    let (target, bastion) = match servers {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench-jump: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    let direct = measure(&args, &target, None).await;
    let jump = measure(&args, &target, Some(&bastion)).await;
    let (direct, jump) = match (direct, jump) {
        (Ok(d), Ok(j)) => (d, j),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bench-jump: {e}");
            return ExitCode::from(1);
        }
    };
    let openssh = match openssh_config(target.dir(), &target, &bastion) {
        Ok(config) => {
            let file = target.root().join("bench-jump-openssh.bin");
            let d = measure_openssh(&args, &config, "target", &file).await;
            let j = measure_openssh(&args, &config, "target-jump", &file).await;
            match (d, j) {
                (Ok(d), Ok(j)) => (d, j),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("bench-jump: OpenSSH: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Err(e) => {
            eprintln!("bench-jump: write the OpenSSH config: {e}");
            return ExitCode::from(2);
        }
    };
    let names = ["connect", "command round trip", "SFTP write+read"];
    let mib = args.mib as f64;
    if args.output.json {
        let rows: Vec<_> = names
            .iter()
            .zip(direct.iter().zip(jump.iter()))
            .map(|(n, (d, j))| {
                serde_json::json!({
                    "measure": n,
                    "direct_ms": d.as_secs_f64() * 1e3,
                    "jump_ms": j.as_secs_f64() * 1e3,
                    "ratio": j.as_secs_f64() / d.as_secs_f64().max(1e-9),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "runs": args.runs, "commands": args.commands, "mib": args.mib, "results": rows,
                "openssh_write_read": {
                    "direct_ms": openssh.0.as_secs_f64() * 1e3,
                    "jump_ms": openssh.1.as_secs_f64() * 1e3,
                    "ratio": openssh.1.as_secs_f64() / openssh.0.as_secs_f64().max(1e-9),
                },
            })
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "medians of {} runs ({} commands, {} MiB each way per run)",
        args.runs, args.commands, args.mib
    );
    println!(
        "{:<20} {:>12} {:>12} {:>8}",
        "", "direct", "via bastion", "ratio"
    );
    for (n, (d, j)) in names.iter().zip(direct.iter().zip(jump.iter())) {
        println!(
            "{n:<20} {:>10.2}ms {:>10.2}ms {:>7.2}x",
            d.as_secs_f64() * 1e3,
            j.as_secs_f64() * 1e3,
            j.as_secs_f64() / d.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "{:<20} {:>10.2}ms {:>10.2}ms {:>7.2}x",
        "OpenSSH cat (ref.)",
        openssh.0.as_secs_f64() * 1e3,
        openssh.1.as_secs_f64() * 1e3,
        openssh.1.as_secs_f64() / openssh.0.as_secs_f64().max(1e-9)
    );
    println!(
        "throughput: SshHost SFTP direct {:.1} MiB/s, via bastion {:.1} MiB/s; OpenSSH direct \
         {:.1} MiB/s, -J {:.1} MiB/s",
        2.0 * mib / direct[2].as_secs_f64().max(1e-9),
        2.0 * mib / jump[2].as_secs_f64().max(1e-9),
        2.0 * mib / openssh.0.as_secs_f64().max(1e-9),
        2.0 * mib / openssh.1.as_secs_f64().max(1e-9)
    );
    ExitCode::SUCCESS
}
