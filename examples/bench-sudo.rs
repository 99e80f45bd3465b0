//! Benchmark: what `sudo` costs per operation on an `SshHost`. On one lab sshd, the same
//! operations as root (exec channel, SFTP) and as the lab's operator account through `sudo`
//! with its password (`SshHostBuilder::sudo`), and as an account with a `NOPASSWD` rule
//! (`sudo -n`): a command (`true`), a 4 KiB `write_atomic`, its `read` and a `stat`. Prints
//! the median of each and the ratios to root, measured in the same run. Needs root (the
//! accounts are created as `cs_lab::operator` does).
//!
//! ```text
//! cargo run --release --example bench-sudo [-- --runs 50]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cs_core::{Cmd, Host, HostExt, SshHost};

/// Time root and sudo operations on a lab sshd.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::BENCH)]
struct Args {
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
    /// Operations of each kind per mode (the median is reported).
    #[arg(long, default_value_t = 50)]
    runs: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Medians of: command, write_atomic, read, stat.
async fn measure(host: &SshHost, dir: &Path, runs: usize) -> Result<[Duration; 4], String> {
    let err = |e: cs_core::HostError| cs_core::error_chain(&e);
    let data = vec![b'x'; 4096];
    let file = dir.join("bench-file");
    // One of each first: the session and SFTP channel are open before timing.
    host.run_ok(&Cmd::new("true")).await.map_err(err)?;
    host.write_atomic(&file, &data, Some(0o644))
        .await
        .map_err(err)?;
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _ in 0..runs {
        let t = Instant::now();
        host.run_ok(&Cmd::new("true")).await.map_err(err)?;
        times[0].push(t.elapsed());
        let t = Instant::now();
        host.write_atomic(&file, &data, Some(0o644))
            .await
            .map_err(err)?;
        times[1].push(t.elapsed());
        let t = Instant::now();
        let back = host.read(&file).await.map_err(err)?;
        times[2].push(t.elapsed());
        if back != data {
            return Err("read returned other bytes".into());
        }
        let t = Instant::now();
        host.stat(&file).await.map_err(err)?;
        times[3].push(t.elapsed());
    }
    let [a, b, c, d] = times;
    Ok([median(a), median(b), median(c), median(d)])
}

async fn run(args: &Args) -> Result<(), String> {
    let server = cs_lab::SshServer::start().map_err(|e| cs_core::error_chain(&e))?;
    let root = server
        .connect()
        .await
        .map_err(|e| cs_core::error_chain(&e))?;
    let sudo = server
        .sudo_host_builder()
        .map_err(|e| cs_core::error_chain(&e))?
        .connect()
        .await
        .map_err(|e| cs_core::error_chain(&e))?;
    let np = cs_lab::operator_nopasswd().map_err(|e| cs_core::error_chain(&e))?;
    let nopasswd = server
        .host_builder()
        .user(np.user())
        .sudo(cs_core::Sudo::without_password())
        .connect()
        .await
        .map_err(|e| cs_core::error_chain(&e))?;
    let dir = server.root().to_path_buf();
    let runs = args.runs.max(1);
    let base = measure(&root, &dir, runs).await?;
    let with = measure(&sudo, &dir, runs).await?;
    let np = measure(&nopasswd, &dir, runs).await?;
    println!("bench-sudo: {runs} runs each, medians (root = exec channel / SFTP as root)");
    println!(
        "{:<14} {:>12} {:>14} {:>8} {:>14} {:>8}",
        "operation", "root", "sudo password", "ratio", "sudo NOPASSWD", "ratio"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (i, name) in ["command", "write_atomic", "read", "stat"]
        .iter()
        .enumerate()
    {
        println!(
            "{name:<14} {:>9.2} ms {:>11.2} ms {:>7.1}x {:>11.2} ms {:>7.1}x",
            ms(base[i]),
            ms(with[i]),
            with[i].as_secs_f64() / base[i].as_secs_f64(),
            ms(np[i]),
            np[i].as_secs_f64() / base[i].as_secs_f64()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-sudo: {e}");
            ExitCode::FAILURE
        }
    }
}
