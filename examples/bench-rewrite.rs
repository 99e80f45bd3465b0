//! Benchmark: `cs_repo::rewrite` on apt files of 2,000 and 16,000 CloudStack entries, printing
//! the time per entry at each size and their ratio (1.0 when the rewrite is linear in the
//! number of entries, 8.0 when it is quadratic).
//!
//! ```text
//! cargo run --release --example bench-rewrite [-- --runs 7 --small 2000 --large 16000]
//! ```
#![allow(clippy::print_stdout)] // An example owns its terminal.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use cs_repo::{Format, Rules, rewrite};

/// Time repository rewrites of two sizes.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::BENCH)]
struct Args {
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
    /// Runs at each size (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Entries of the small file.
    #[arg(long, default_value_t = 2000)]
    small: usize,
    /// Entries of the large file.
    #[arg(long, default_value_t = 16_000)]
    large: usize,
}

/// An apt file of `n` CloudStack entries on release line 4.19, with comments and other
/// entries between them as real files have.
fn apt_file(n: usize) -> String {
    let mut s = String::with_capacity(n * 120);
    for i in 0..n {
        s.push_str("# mirror ");
        s.push_str(&i.to_string());
        s.push('\n');
        s.push_str(
            "deb [arch=amd64] https://download.cloudstack.org/ubuntu noble 4.19 # CloudStack\n",
        );
        if i % 4 == 0 {
            s.push_str("deb http://archive.ubuntu.com/ubuntu noble main universe\n");
        }
    }
    s
}

/// The median time of `runs` rewrites of `text` to 4.20.
fn median_time(text: &str, runs: usize) -> Duration {
    let rules = Rules::default();
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            let out = rewrite(text, Format::AptList, "4.20", &rules).expect("the rewrite works");
            let took = t.elapsed();
            assert!(!out.is_noop(), "the benchmark file has entries to change");
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let mut per_entry = Vec::new();
    for n in [args.small, args.large] {
        let text = apt_file(n);
        let t = median_time(&text, args.runs);
        let each = t.as_secs_f64() / n.max(1) as f64;
        println!(
            "{n:>6} entries: median {:>9.3} ms, {:>8.3} µs per entry",
            t.as_secs_f64() * 1e3,
            each * 1e6
        );
        per_entry.push(each);
    }
    println!(
        "per-entry ratio {}/{}: {:.2} (1.0 linear, {:.1} quadratic)",
        args.large,
        args.small,
        per_entry[1] / per_entry[0],
        args.large as f64 / args.small.max(1) as f64
    );
}
