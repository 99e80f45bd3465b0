//! Benchmark: an inventory snapshot of a lab cloud of 1,000 hosts and 20,000 VMs, against the
//! Python `cs` client fetching the same lists with the same page size, and a plain HTTP fetch
//! of the same pages (pre-signed URLs, bytes only: the limit).
//!
//! ```text
//! cargo run --release --example bench-inventory [-- --runs 5 --json]
//! ```
//!
//! Needs the Python `cs` client from `scripts/install-deps` (in `.cache/py-venv`, or
//! `$CS_PY_VENV`); `--skip-cs` leaves it out.
#![allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.

#[path = "common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use cs_api::{Client, ClientConfig, Credentials, Inventory, encode_value, sign};
use cs_core::{Cmd, Host, LocalHost, Secret};
use cs_lab::{CloudSpec, LabApi};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Time inventory snapshots against the lab.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::BENCH)]
struct Args {
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
    /// Runs of each variant (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Hypervisors (in clusters of 20).
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Running VMs.
    #[arg(long, default_value_t = 20_000)]
    vms: usize,
    /// Pages fetched at once by the concurrent variants.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Leave out the Python `cs` client.
    #[arg(long)]
    skip_cs: bool,
}

const PAGE_SIZE: usize = 500;

/// A list command, its extra parameters and its item count.
type ListSpec<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);

/// Pre-signed request paths for every page of the two lists.
fn signed_paths(lab: &LabApi, hosts: usize, vms: usize) -> Vec<String> {
    let mut out = Vec::new();
    let lists: [ListSpec<'_>; 2] = [
        ("listHosts", &[("type", "Routing")], hosts),
        ("listVirtualMachines", &[("listall", "true")], vms),
    ];
    let expires = {
        let at = std::time::SystemTime::now() + Duration::from_secs(3600);
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Civil date from Unix seconds (UTC), for `expires`.
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+0000",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    };
    for (command, extra, total) in lists {
        for page in 1..=total.div_ceil(PAGE_SIZE).max(1) {
            let page = page.to_string();
            let size = PAGE_SIZE.to_string();
            let mut p: Vec<(&str, &str)> = vec![("command", command)];
            p.extend_from_slice(extra);
            p.extend_from_slice(&[
                ("page", &page),
                ("pagesize", &size),
                ("response", "json"),
                ("apiKey", lab.api_key()),
                ("signatureVersion", "3"),
                ("expires", &expires),
            ]);
            let signature = sign(&p, lab.secret_key());
            let query: Vec<String> = p
                .iter()
                .map(|(k, v)| format!("{}={}", encode_value(k), encode_value(v)))
                .chain([format!("signature={}", encode_value(&signature))])
                .collect();
            out.push(format!("/client/api?{}", query.join("&")));
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Fetches `paths` over `workers` keep-alive connections with a minimal HTTP/1.1 client;
/// returns the bytes received.
async fn plain_fetch(addr: std::net::SocketAddr, paths: &[String], workers: usize) -> usize {
    let queue = Arc::new(Mutex::new(paths.iter().cloned().collect::<VecDeque<_>>()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut conn = BufReader::new(stream);
            let mut bytes = 0;
            loop {
                let Some(path) = queue.lock().expect("queue").pop_front() else {
                    break;
                };
                let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                conn.get_mut()
                    .write_all(req.as_bytes())
                    .await
                    .expect("write");
                let mut line = String::new();
                conn.read_line(&mut line).await.expect("status line");
                assert!(line.starts_with("HTTP/1.1 200"), "plain fetch got {line}");
                let mut length = 0usize;
                loop {
                    line.clear();
                    conn.read_line(&mut line).await.expect("header");
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().expect("content-length");
                    }
                }
                let mut body = vec![0u8; length];
                conn.read_exact(&mut body).await.expect("body");
                bytes += length;
            }
            bytes
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("worker");
    }
    total
}

const CS_SCRIPT: &str = r#"
import json, sys, time
from cs.client import CloudStack
endpoint, key, secret, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = CloudStack(endpoint=endpoint, key=key, secret=secret, timeout=120)
times = []
for _ in range(runs):
    t = time.perf_counter()
    hosts = c.listHosts(type="Routing", fetch_list=True)
    vms = c.listVirtualMachines(listall=True, fetch_list=True)
    times.append(time.perf_counter() - t)
    assert len(vms) > 0
print(json.dumps({"times": times, "hosts": len(hosts), "vms": len(vms)}))
"#;

fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("CS_PY_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/py-venv"),
        PathBuf::from,
    );
    let p = venv.join("bin/python");
    p.is_file().then_some(p)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Row {
    name: String,
    times: Vec<f64>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let lab = LabApi::start().expect("lab API starts");
    let clusters = args.hosts.div_ceil(20);
    lab.populate(&CloudSpec {
        version: "4.20.0.0".into(),
        management_servers: 2,
        clusters,
        hosts_per_cluster: 20,
        vms: args.vms,
    });
    lab.set_recording(false);
    let hosts = clusters * 20;
    let client = |concurrency: usize| {
        Client::new(
            &lab.endpoint(),
            Credentials::api_key(lab.api_key(), lab.secret_key().clone()),
            ClientConfig::default()
                .page_size(PAGE_SIZE as u32)
                .page_concurrency(concurrency)
                .timeout(Duration::from_secs(120)),
        )
        .expect("client")
    };
    let concurrent = client(args.concurrency);
    let sequential = client(1);
    let paths = signed_paths(&lab, hosts, args.vms);
    // Warm up connections and caches once.
    let inv = Inventory::snapshot(&concurrent).await.expect("snapshot");
    assert_eq!((inv.hosts.len(), inv.vms.len()), (hosts, args.vms));
    let bytes = plain_fetch(lab.addr(), &paths, args.concurrency).await;

    let mut rows: Vec<Row> = [
        format!("cs-api snapshot ({} pages at a time)", args.concurrency),
        format!("plain HTTP fetch ({} at a time)", args.concurrency),
        "cs-api snapshot (one page at a time)".into(),
        "plain HTTP fetch (one at a time)".into(),
    ]
    .into_iter()
    .map(|name| Row {
        name,
        times: Vec::new(),
    })
    .collect();
    for _ in 0..args.runs {
        let t = Instant::now();
        let inv = Inventory::snapshot(&concurrent).await.expect("snapshot");
        rows[0].times.push(t.elapsed().as_secs_f64());
        assert_eq!(inv.vms.len(), args.vms);
        let t = Instant::now();
        plain_fetch(lab.addr(), &paths, args.concurrency).await;
        rows[1].times.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let inv = Inventory::snapshot(&sequential).await.expect("snapshot");
        rows[2].times.push(t.elapsed().as_secs_f64());
        assert_eq!(inv.vms.len(), args.vms);
        let t = Instant::now();
        plain_fetch(lab.addr(), &paths, 1).await;
        rows[3].times.push(t.elapsed().as_secs_f64());
    }
    let mut cs_note = None;
    if !args.skip_cs {
        let Some(py) = python() else {
            eprintln!(
                "bench-inventory: the Python `cs` client is missing: run scripts/install-deps (or pass --skip-cs)"
            );
            return std::process::ExitCode::from(2);
        };
        let cmd = Cmd::new(py.to_string_lossy())
            .arg("-c")
            .arg(CS_SCRIPT)
            .arg(lab.endpoint())
            .arg(lab.api_key())
            .secret_arg(&Secret::new(lab.secret_key().expose()))
            .arg(args.runs.to_string())
            .timeout(Duration::from_secs(1800));
        let out = LocalHost::new().run(&cmd).await.expect("python runs");
        if !out.success() {
            eprintln!("bench-inventory: cs failed: {}", out.stderr_lossy());
            return std::process::ExitCode::from(2);
        }
        let v: serde_json::Value =
            serde_json::from_str(out.stdout_lossy().trim()).expect("cs output");
        assert_eq!(v["vms"], args.vms);
        let times: Vec<f64> = v["times"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        rows.push(Row {
            name: "python cs (one page at a time)".into(),
            times,
        });
        cs_note = Some(());
    }
    let med: Vec<f64> = rows.iter().map(|r| median(r.times.clone())).collect();
    let ratio_plain = med[0] / med[1];
    let ratio_plain_seq = med[2] / med[3];
    let ratio_cs = cs_note.map(|()| med[4] / med[0]);
    let ratio_cs_seq = cs_note.map(|()| med[4] / med[2]);
    if args.json {
        let v = serde_json::json!({
            "hosts": hosts, "vms": args.vms, "page_size": PAGE_SIZE, "runs": args.runs,
            "bytes_per_snapshot": bytes,
            "variants": rows.iter().zip(&med).map(|(r, m)| serde_json::json!({
                "name": r.name, "median_s": m, "times_s": r.times
            })).collect::<Vec<_>>(),
            "ratios": {
                "cs_over_cs_api": ratio_cs, "cs_over_cs_api_sequential": ratio_cs_seq,
                "cs_api_over_plain": ratio_plain, "cs_api_over_plain_sequential": ratio_plain_seq,
            },
            "targets": {"cs_over_cs_api": ">= 3", "cs_api_over_plain": "<= 1.5"},
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "bench-inventory: {hosts} hosts, {} VMs, pagesize {PAGE_SIZE}, {:.1} MB per snapshot, {} runs\n",
            args.vms,
            bytes as f64 / 1e6,
            args.runs
        );
        println!(
            "{:<42} {:>10} {:>10} {:>10}",
            "variant", "median", "min", "max"
        );
        for (r, m) in rows.iter().zip(&med) {
            let min = r.times.iter().copied().fold(f64::INFINITY, f64::min);
            let max = r.times.iter().copied().fold(0.0, f64::max);
            println!(
                "{:<42} {:>8.1}ms {:>8.1}ms {:>8.1}ms",
                r.name,
                m * 1e3,
                min * 1e3,
                max * 1e3
            );
        }
        println!();
        if let (Some(c), Some(cs)) = (ratio_cs, ratio_cs_seq) {
            println!("cs / cs-api:     {c:.1}x (target >= 3x); one page at a time: {cs:.1}x");
        }
        println!(
            "cs-api / plain:  {ratio_plain:.2}x (target <= 1.5x); one page at a time: {ratio_plain_seq:.2}x"
        );
    }
    std::process::ExitCode::SUCCESS
}
