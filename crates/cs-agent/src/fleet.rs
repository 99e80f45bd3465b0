//! Many hosts at once: a hosts file, bounded concurrency, cluster batches with a canary, a
//! failure budget, a journal to resume from, and a per-host result table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cs_core::{Progress, ProgressUpdate, Unit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One host of a hosts file: `user@host[:port] [cluster=NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The SSH user (`root` when the line has none).
    pub user: String,
    /// The address or name.
    pub host: String,
    /// The SSH port.
    pub port: u16,
    /// The cluster, when given.
    pub cluster: Option<String>,
    /// Where the host's files are, when not at `/` (`root=DIR`: a lab host, a non-standard
    /// install).
    pub root: Option<String>,
}

impl Target {
    /// `host:port`, for connecting.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `user@host:port`: the name in tables and journals.
    pub fn label(&self) -> String {
        format!("{}@{}", self.user, self.addr())
    }
}

/// Parses a hosts file: one `user@host[:port] [cluster=NAME] [root=DIR]` a line; blank lines
/// and `#` comments are skipped.
///
/// ```
/// let t = cs_agent::fleet::parse_hosts("# kvm\nroot@10.0.0.5:2222 cluster=c1\nkvm2\n")?;
/// assert_eq!(t[0].addr(), "10.0.0.5:2222");
/// assert_eq!(t[0].cluster.as_deref(), Some("c1"));
/// assert_eq!(t[1].label(), "root@kvm2:22");
/// # Ok::<(), cs_agent::Error>(())
/// ```
///
/// # Errors
/// [`Error::Input`] naming the line for a bad port, an unknown attribute, or a duplicate host.
pub fn parse_hosts(text: &str) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| Error::Input(format!("hosts file line {}: {why}", i + 1));
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let (user, hostport) = first.split_once('@').unwrap_or(("root", first));
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else if hostport.matches(':').count() == 1 {
            let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
            (h, Some(p))
        } else {
            (hostport, None)
        };
        let port = match port {
            None => 22,
            Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
        };
        if user.is_empty() || host.is_empty() {
            return Err(bad("expected user@host[:port]"));
        }
        let (mut cluster, mut root) = (None, None);
        for w in words {
            match w.split_once('=') {
                Some(("cluster", c)) if !c.is_empty() => cluster = Some(c.to_string()),
                Some(("root", r)) if r.starts_with('/') => root = Some(r.to_string()),
                _ => return Err(bad(&format!("unknown attribute `{w}`"))),
            }
        }
        let t = Target {
            user: user.to_string(),
            host: host.to_string(),
            port,
            cluster,
            root,
        };
        if !seen.insert(t.label()) {
            return Err(bad(&format!("{} is listed twice", t.label())));
        }
        out.push(t);
    }
    Ok(out)
}

/// How a fleet run goes.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Hosts worked on at once (a batch's size).
    pub parallel: usize,
    /// Stop once failed hosts exceed this percentage of all hosts; `None` stops on the first
    /// failure.
    pub max_fail_pct: Option<f64>,
    /// Run the first host alone before any other, and stop if it fails.
    pub canary: bool,
    /// A JSON-lines journal: hosts it records as done are skipped, results are appended.
    pub journal: Option<PathBuf>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            parallel: 5,
            max_fail_pct: None,
            canary: true,
            journal: None,
        }
    }
}

/// What happened to one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Done by this run.
    Ok,
    /// Failed (an unreachable host included).
    Failed,
    /// Done by an earlier run (per the journal).
    AlreadyDone,
    /// Not started: the run stopped first.
    NotStarted,
}

/// One host's line in the result table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    /// `user@host:port`.
    pub host: String,
    /// The cluster.
    pub cluster: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// A one-line summary or the error with its causes (never a secret).
    pub detail: String,
    /// Time spent on the host.
    #[serde(with = "millis")]
    pub elapsed: Duration,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The result of a fleet run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetReport {
    /// One entry per host, in hosts-file order.
    pub hosts: Vec<HostResult>,
    /// Why the run stopped early, when it did.
    pub stopped: Option<String>,
}

impl FleetReport {
    /// Hosts that failed.
    pub fn failed(&self) -> impl Iterator<Item = &HostResult> {
        self.hosts.iter().filter(|h| h.outcome == Outcome::Failed)
    }

    /// Whether every host is done (now or earlier).
    pub fn all_ok(&self) -> bool {
        self.hosts
            .iter()
            .all(|h| matches!(h.outcome, Outcome::Ok | Outcome::AlreadyDone))
    }

    /// A plain-text table, one host a row, and a summary line.
    pub fn to_table(&self) -> String {
        let w = self
            .hosts
            .iter()
            .map(|h| h.host.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let wc = self
            .hosts
            .iter()
            .map(|h| h.cluster.as_deref().unwrap_or("-").len())
            .max()
            .unwrap_or(7)
            .max(7);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<w$}  {:<wc$}  {:<12}  {:>8}  DETAIL",
            "HOST", "CLUSTER", "RESULT", "TIME"
        );
        for h in &self.hosts {
            let r = match h.outcome {
                Outcome::Ok => "ok",
                Outcome::Failed => "FAILED",
                Outcome::AlreadyDone => "already done",
                Outcome::NotStarted => "not started",
            };
            let _ = writeln!(
                out,
                "{:<w$}  {:<wc$}  {:<12}  {:>7.1}s  {}",
                h.host,
                h.cluster.as_deref().unwrap_or("-"),
                r,
                h.elapsed.as_secs_f64(),
                h.detail
            );
        }
        let count = |o| self.hosts.iter().filter(|h| h.outcome == o).count();
        let _ = writeln!(
            out,
            "{} ok, {} failed, {} already done, {} not started",
            count(Outcome::Ok),
            count(Outcome::Failed),
            count(Outcome::AlreadyDone),
            count(Outcome::NotStarted)
        );
        if let Some(s) = &self.stopped {
            let _ = writeln!(out, "stopped: {s}");
        }
        out
    }
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    host: String,
    outcome: Outcome,
    detail: String,
}

fn read_done(path: &Path) -> Result<BTreeSet<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => {
            return Err(Error::Journal {
                path: path.to_path_buf(),
                what: "read".into(),
                source: Some(Box::new(e)),
            });
        }
    };
    let mut done = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A torn last line (killed mid-write) is ignored.
        if let Ok(j) = serde_json::from_str::<JournalLine>(line) {
            match j.outcome {
                Outcome::Ok | Outcome::AlreadyDone => done.insert(j.host),
                _ => done.remove(&j.host),
            };
        }
    }
    Ok(done)
}

fn append(path: &Path, r: &HostResult) -> Result<()> {
    let err = |what: &str, e: std::io::Error| Error::Journal {
        path: path.to_path_buf(),
        what: what.into(),
        source: Some(Box::new(e)),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| err("open", e))?;
    let mut line = serde_json::to_string(&JournalLine {
        host: r.host.clone(),
        outcome: r.outcome,
        detail: r.detail.clone(),
    })
    .unwrap_or_default();
    line.push('\n');
    f.write_all(line.as_bytes()).map_err(|e| err("write", e))?;
    f.sync_data().map_err(|e| err("sync", e))
}

/// Runs `work` on every target: the canary first, then cluster by cluster in batches of
/// `parallel`, checking the failure budget after each batch. `work` returns a one-line summary,
/// or the error as one line (an unreachable host is an error).
///
/// # Errors
/// [`Error::Journal`] when the journal cannot be read or written; host failures are in the
/// report, not errors.
pub async fn run_fleet<F, Fut>(
    targets: &[Target],
    options: &FleetOptions,
    progress: &dyn Progress,
    work: F,
) -> Result<FleetReport>
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = std::result::Result<String, String>>,
{
    let done = match &options.journal {
        Some(p) => read_done(p)?,
        None => BTreeSet::new(),
    };
    let total = targets.len() as u64;
    let mut results: BTreeMap<usize, HostResult> = BTreeMap::new();
    let mut pending: Vec<usize> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if done.contains(&t.label()) {
            results.insert(
                i,
                HostResult {
                    host: t.label(),
                    cluster: t.cluster.clone(),
                    outcome: Outcome::AlreadyDone,
                    detail: "done by an earlier run".into(),
                    elapsed: Duration::ZERO,
                },
            );
        } else {
            pending.push(i);
        }
    }
    // Batches: the canary alone, then each cluster (in order of first appearance) in chunks.
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut rest = pending.as_slice();
    if options.canary
        && let Some((first, tail)) = pending.split_first()
    {
        batches.push(vec![*first]);
        rest = tail;
    }
    // Cluster order is the order of first appearance, the canary's cluster first.
    let mut clusters: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for &i in &pending {
        let c = targets[i].cluster.clone();
        if !clusters.iter().any(|(k, _)| *k == c) {
            clusters.push((c, Vec::new()));
        }
    }
    for &i in rest {
        let c = targets[i].cluster.clone();
        if let Some((_, v)) = clusters.iter_mut().find(|(k, _)| *k == c) {
            v.push(i);
        }
    }
    let parallel = options.parallel.max(1);
    for (_, hosts) in clusters {
        batches.extend(hosts.chunks(parallel).map(<[usize]>::to_vec));
    }
    let mut failed = 0usize;
    let mut stopped = None;
    let mut finished = results.len() as u64;
    let canary_index = options.canary.then(|| pending.first().copied()).flatten();
    for batch in batches {
        let runs = batch.iter().map(|&i| {
            let t = targets[i].clone();
            let fut = work(t.clone());
            async move {
                let start = Instant::now();
                let r = fut.await;
                (i, t, r, start.elapsed())
            }
        });
        let outcomes = futures::future::join_all(runs).await;
        for (i, t, r, elapsed) in outcomes {
            let (outcome, detail) = match r {
                Ok(d) => (Outcome::Ok, d),
                Err(e) => {
                    failed += 1;
                    (Outcome::Failed, e)
                }
            };
            let hr = HostResult {
                host: t.label(),
                cluster: t.cluster.clone(),
                outcome,
                detail,
                elapsed,
            };
            if let Some(p) = &options.journal {
                append(p, &hr)?;
            }
            finished += 1;
            progress.update(
                ProgressUpdate::new("fleet", finished, Some(total), Unit::Hosts).message(format!(
                    "{} {}",
                    hr.host,
                    if outcome == Outcome::Ok {
                        "ok"
                    } else {
                        "failed"
                    }
                )),
            );
            results.insert(i, hr);
        }
        let canary_failed = canary_index.is_some_and(|c| {
            batch == [c]
                && results
                    .get(&c)
                    .is_some_and(|r| r.outcome == Outcome::Failed)
        });
        if canary_failed {
            stopped = Some("the canary host failed".to_string());
            break;
        }
        let over = match options.max_fail_pct {
            None => failed > 0,
            Some(pct) => failed as f64 * 100.0 / total.max(1) as f64 > pct,
        };
        if over {
            stopped = Some(match options.max_fail_pct {
                None => format!("{failed} host(s) failed (stop on first failure)"),
                Some(p) => format!("{failed} of {total} hosts failed, over {p}%"),
            });
            break;
        }
    }
    let hosts = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            results.remove(&i).unwrap_or(HostResult {
                host: t.label(),
                cluster: t.cluster.clone(),
                outcome: Outcome::NotStarted,
                detail: String::new(),
                elapsed: Duration::ZERO,
            })
        })
        .collect();
    progress.update(ProgressUpdate::new("fleet", finished, Some(total), Unit::Hosts).finished());
    Ok(FleetReport { hosts, stopped })
}

/// Runs `work` on every target with at most `parallel` at once, in no particular order, and
/// returns the results in target order (for read-only work such as [`crate::collect_facts`]).
pub async fn for_each<T, F, Fut>(
    targets: &[Target],
    parallel: usize,
    progress: &dyn Progress,
    work: F,
) -> Vec<(Target, T, Duration)>
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = T>,
{
    let total = targets.len() as u64;
    let mut done = 0u64;
    let mut out: Vec<Option<(Target, T, Duration)>> = (0..targets.len()).map(|_| None).collect();
    let mut stream = futures::stream::iter(targets.iter().cloned().enumerate().map(|(i, t)| {
        let fut = work(t.clone());
        async move {
            let start = Instant::now();
            let r = fut.await;
            (i, t, r, start.elapsed())
        }
    }))
    .buffer_unordered(parallel.max(1));
    while let Some((i, t, r, el)) = stream.next().await {
        done += 1;
        progress.update(
            ProgressUpdate::new("hosts", done, Some(total), Unit::Hosts).message(t.label()),
        );
        out[i] = Some((t, r, el));
    }
    progress.update(ProgressUpdate::new("hosts", done, Some(total), Unit::Hosts).finished());
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cs_core::NoProgress;
    use std::sync::Mutex;

    fn targets(spec: &str) -> Vec<Target> {
        parse_hosts(spec).unwrap()
    }

    #[test]
    fn hosts_file_lines() {
        let t = targets("admin@[::1]:2200 cluster=a\n10.0.0.1\n");
        assert_eq!(t[0].user, "admin");
        assert_eq!(t[0].addr(), "[::1]:2200");
        assert_eq!(t[1].port, 22);
        assert!(
            parse_hosts("h:x")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        assert!(parse_hosts("h zone=1").is_err());
        assert!(
            parse_hosts("h\nroot@h:22")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    async fn run(spec: &str, opts: FleetOptions, fail: &[&str]) -> (FleetReport, Vec<Vec<String>>) {
        let t = targets(spec);
        let order = Mutex::new(Vec::new());
        let fail: Vec<String> = fail.iter().map(|s| s.to_string()).collect();
        let r = run_fleet(&t, &opts, &NoProgress, |t| {
            order.lock().unwrap().push(t.host.clone());
            let bad = fail.contains(&t.host);
            async move {
                if bad {
                    Err("boom".to_string())
                } else {
                    Ok("fine".to_string())
                }
            }
        })
        .await
        .unwrap();
        let o = order.into_inner().unwrap();
        (r, vec![o])
    }

    #[tokio::test]
    async fn canary_then_clusters_in_batches() {
        let opts = FleetOptions {
            parallel: 2,
            ..Default::default()
        };
        let (r, order) = run(
            "a cluster=x\nb cluster=y\nc cluster=x\nd cluster=y\ne cluster=x\n",
            opts,
            &[],
        )
        .await;
        assert!(r.all_ok());
        assert_eq!(order[0], ["a", "c", "e", "b", "d"]);
    }

    #[tokio::test]
    async fn stops_on_the_first_failure_by_default() {
        let opts = FleetOptions {
            parallel: 1,
            ..Default::default()
        };
        let (r, _) = run("a\nb\nc\nd\n", opts, &["b"]).await;
        let outcomes: Vec<Outcome> = r.hosts.iter().map(|h| h.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Ok,
                Outcome::Failed,
                Outcome::NotStarted,
                Outcome::NotStarted
            ]
        );
        assert!(r.to_table().contains("stopped: 1 host(s) failed"));
    }

    #[tokio::test]
    async fn a_failed_canary_stops_even_with_a_budget() {
        let opts = FleetOptions {
            max_fail_pct: Some(50.0),
            ..Default::default()
        };
        let (r, _) = run("a\nb\nc\n", opts, &["a"]).await;
        assert_eq!(r.stopped.as_deref(), Some("the canary host failed"));
        assert_eq!(r.hosts[1].outcome, Outcome::NotStarted);
    }

    #[tokio::test]
    async fn a_failure_budget_lets_the_run_go_on() {
        let opts = FleetOptions {
            parallel: 1,
            max_fail_pct: Some(30.0),
            ..Default::default()
        };
        let (r, _) = run("a\nb\nc\nd\ne\nf\n", opts, &["b", "d"]).await;
        // 2 of 6 = 33% > 30%: stops after d.
        let outcomes: Vec<Outcome> = r.hosts.iter().map(|h| h.outcome).collect();
        assert_eq!(
            outcomes[..4],
            [Outcome::Ok, Outcome::Failed, Outcome::Ok, Outcome::Failed]
        );
        assert_eq!(outcomes[4], Outcome::NotStarted);
    }

    #[tokio::test]
    async fn the_journal_resumes_where_the_last_run_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FleetOptions {
            parallel: 1,
            journal: Some(dir.path().join("fleet.jsonl")),
            ..Default::default()
        };
        let (r, _) = run("a\nb\nc\n", opts.clone(), &["b"]).await;
        assert_eq!(r.failed().count(), 1);
        let (r, order) = run("a\nb\nc\n", opts, &[]).await;
        assert_eq!(order[0], ["b", "c"]);
        assert_eq!(r.hosts[0].outcome, Outcome::AlreadyDone);
        assert!(r.all_ok());
    }

    #[tokio::test]
    async fn for_each_keeps_target_order() {
        let t = targets("a\nb\nc\n");
        let r = for_each(&t, 2, &NoProgress, |t| async move { t.host.len() }).await;
        let hosts: Vec<&str> = r.iter().map(|(t, _, _)| t.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
    }
}
