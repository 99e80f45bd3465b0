//! Many hosts at once: a hosts file, clusters side by side in batches under a global cap, a
//! canary, failure budgets for the fleet and each cluster, a journal to resume from, a wave plan
//! for dry runs, and a per-host result table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cs_core::{Progress, ProgressUpdate, Unit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub use crate::schedule::{BatchSize, Canary};
use crate::schedule::{Limits, Scheduler};
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
#[non_exhaustive]
pub struct FleetOptions {
    /// Hosts of one cluster worked on at once (a count or a percentage of the cluster).
    pub batch: BatchSize,
    /// Hosts worked on at once across the fleet (the global cap).
    pub parallel: usize,
    /// Stop starting hosts once failed hosts exceed this percentage of all hosts; `None` stops
    /// on the first failure. Hosts already running finish.
    pub max_fail_pct: Option<f64>,
    /// Stop starting hosts of a cluster once its failed hosts exceed this percentage of the
    /// cluster; `None`: only the fleet's budget applies.
    pub cluster_max_fail_pct: Option<f64>,
    /// Which hosts go first, alone.
    pub canary: Canary,
    /// A JSON-lines journal: hosts it records as done are skipped, results are appended.
    pub journal: Option<PathBuf>,
}

cs_core::setters!(FleetOptions {
    batch: BatchSize,
    parallel: usize,
    max_fail_pct: Option<f64>,
    cluster_max_fail_pct: Option<f64>,
    canary: Canary,
    journal: Option<PathBuf>,
});

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            batch: BatchSize::Count(1),
            parallel: 8,
            max_fail_pct: None,
            cluster_max_fail_pct: None,
            canary: Canary::One,
            journal: None,
        }
    }
}

impl FleetOptions {
    fn limits(&self) -> Limits {
        Limits {
            batch: self.batch,
            cap: self.parallel,
            canary: self.canary,
            max_fail_pct: self.max_fail_pct,
            cluster_max_fail_pct: self.cluster_max_fail_pct,
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

/// The order a run would take if every host took as long as every other and none failed:
/// wave by wave, the hosts that start together, in hosts-file order (the canary alone first). Hosts the journal
/// records as done are left out. What `--dry-run` prints.
///
/// ```
/// use cs_agent::fleet::{BatchSize, FleetOptions, parse_hosts, plan_waves};
/// let t = parse_hosts("a cluster=x\nb cluster=y\nc cluster=x\nd cluster=y\ne cluster=x\n")?;
/// let waves = plan_waves(&t, &FleetOptions::default())?;
/// let names: Vec<Vec<&str>> = waves
///     .iter()
///     .map(|w| w.iter().map(|&i| t[i].host.as_str()).collect())
///     .collect();
/// assert_eq!(names, [vec!["a"], vec!["b", "c"], vec!["d", "e"]]);
/// # Ok::<(), cs_agent::Error>(())
/// ```
///
/// # Errors
/// [`Error::Journal`] when the journal cannot be read.
pub fn plan_waves(targets: &[Target], options: &FleetOptions) -> Result<Vec<Vec<usize>>> {
    let done = done_indices(targets, options)?;
    let mut sched = Scheduler::new(targets, &done, options.limits());
    let mut waves = Vec::new();
    loop {
        let mut wave = sched.next();
        wave.sort_unstable();
        if wave.is_empty() {
            return Ok(waves);
        }
        for &i in &wave {
            sched.finish(i, true);
        }
        waves.push(wave);
    }
}

/// [`plan_waves`]'s plan as text: one line a wave, its hosts grouped by cluster; `options`
/// says whether the first wave is the canary.
///
/// ```
/// use cs_agent::fleet::{FleetOptions, parse_hosts, plan_waves, waves_table};
/// let t = parse_hosts("a cluster=x\nb cluster=y\nc cluster=x\n")?;
/// let o = FleetOptions::default();
/// let text = waves_table(&t, &plan_waves(&t, &o)?, &o);
/// assert_eq!(text, "wave 1 (canary): x: root@a:22\nwave 2: x: root@c:22 | y: root@b:22\n");
/// # Ok::<(), cs_agent::Error>(())
/// ```
pub fn waves_table(targets: &[Target], waves: &[Vec<usize>], options: &FleetOptions) -> String {
    let mut out = String::new();
    for (n, wave) in waves.iter().enumerate() {
        let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for &i in wave {
            if let Some(t) = targets.get(i) {
                by.entry(t.cluster.as_deref().unwrap_or("-"))
                    .or_default()
                    .push(t.label());
            }
        }
        let groups: Vec<String> = by
            .iter()
            .map(|(c, hosts)| format!("{c}: {}", hosts.join(" ")))
            .collect();
        let canary = if n == 0 && options.canary == Canary::One {
            " (canary)"
        } else {
            ""
        };
        let _ = writeln!(out, "wave {}{canary}: {}", n + 1, groups.join(" | "));
    }
    out
}

fn done_indices(targets: &[Target], options: &FleetOptions) -> Result<BTreeSet<usize>> {
    let done = match &options.journal {
        Some(p) => read_done(p)?,
        None => BTreeSet::new(),
    };
    Ok(targets
        .iter()
        .enumerate()
        .filter(|(_, t)| done.contains(&t.label()))
        .map(|(i, _)| i)
        .collect())
}

/// Runs `work` on every target: the canary first, then the clusters side by side, each at most
/// its batch at once and the fleet at most `parallel` at once, a host starting as soon as a
/// slot frees. A failure over a budget stops new work at once; hosts already running finish.
/// `work` returns a one-line summary, or the error as one line (an unreachable host is an
/// error).
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
    let done = done_indices(targets, options)?;
    let total = targets.len() as u64;
    let mut results: BTreeMap<usize, HostResult> = BTreeMap::new();
    for &i in &done {
        let t = &targets[i];
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
    }
    let mut sched = Scheduler::new(targets, &done, options.limits());
    let mut finished = results.len() as u64;
    let mut running = futures::stream::FuturesUnordered::new();
    let mut journal_error = None;
    loop {
        if journal_error.is_none() {
            for i in sched.next() {
                let t = targets[i].clone();
                let fut = work(t.clone());
                running.push(async move {
                    let start = Instant::now();
                    let r = fut.await;
                    (i, t, r, start.elapsed())
                });
            }
        }
        let Some((i, t, r, elapsed)) = running.next().await else {
            break;
        };
        sched.finish(i, r.is_ok());
        let (outcome, detail) = match r {
            Ok(d) => (Outcome::Ok, d),
            Err(e) => (Outcome::Failed, e),
        };
        let hr = HostResult {
            host: t.label(),
            cluster: t.cluster.clone(),
            outcome,
            detail,
            elapsed,
        };
        if let Some(p) = &options.journal
            && journal_error.is_none()
        {
            // A journal that cannot be written stops new work; running hosts still finish.
            if let Err(e) = append(p, &hr) {
                journal_error = Some(e);
            }
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
    if let Some(e) = journal_error {
        return Err(e);
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
    Ok(FleetReport {
        hosts,
        stopped: sched.stopped(),
    })
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

    fn names(t: &[Target], waves: &[Vec<usize>]) -> Vec<String> {
        waves
            .iter()
            .map(|w| {
                w.iter()
                    .map(|&i| t[i].host.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    /// `n` hosts named `c<k>h<j>` in `clusters` clusters of sizes `sizes`.
    fn fleet(sizes: &[usize]) -> String {
        let mut s = String::new();
        for (k, n) in sizes.iter().enumerate() {
            for j in 0..*n {
                s.push_str(&format!("c{k}h{j} cluster=c{k}\n"));
            }
        }
        s
    }

    #[test]
    fn clusters_move_side_by_side_in_batches() {
        let t = targets(&fleet(&[3, 2]));
        let opts = FleetOptions {
            batch: BatchSize::Count(2),
            ..Default::default()
        };
        let w = plan_waves(&t, &opts).unwrap();
        assert_eq!(names(&t, &w), ["c0h0", "c0h1,c0h2,c1h0,c1h1"]);
        // Batch 1: the canary, then one host of each cluster at a time.
        let opts = FleetOptions::default();
        let w = plan_waves(&t, &opts).unwrap();
        assert_eq!(names(&t, &w), ["c0h0", "c0h1,c1h0", "c0h2,c1h1"]);
        // The same plan every time.
        assert_eq!(plan_waves(&t, &opts).unwrap(), w);
    }

    #[test]
    fn the_global_cap_serves_the_largest_cluster_first() {
        let t = targets(&fleet(&[2, 4, 4]));
        let opts = FleetOptions {
            parallel: 2,
            canary: Canary::None,
            ..Default::default()
        };
        let w = plan_waves(&t, &opts).unwrap();
        assert!(w.iter().all(|w| w.len() <= 2));
        // c1 and c2 (4 queued each) go first; c0 joins once they are down to 2.
        assert_eq!(
            names(&t, &w),
            [
                "c1h0,c2h0",
                "c1h1,c2h1",
                "c0h0,c1h2",
                "c0h1,c2h2",
                "c1h3,c2h3"
            ]
        );
        assert_eq!(w.len(), 10_usize.div_ceil(2));
    }

    #[test]
    fn a_percentage_batch_is_of_each_cluster() {
        let t = targets(&fleet(&[10, 4]));
        let opts = FleetOptions {
            batch: "30%".parse().unwrap(),
            parallel: 100,
            canary: Canary::None,
            ..Default::default()
        };
        let w = plan_waves(&t, &opts).unwrap();
        // 30% of 10 is 3; 30% of 4 rounds down to 1.
        assert_eq!(w[0].len(), 4);
        assert_eq!(w.len(), 4);
        assert!("0".parse::<BatchSize>().is_err());
        assert!("101%".parse::<BatchSize>().is_err());
        assert_eq!("7".parse::<BatchSize>().unwrap(), BatchSize::Count(7));
    }

    #[test]
    fn a_canary_per_cluster_goes_alone_in_its_cluster() {
        let t = targets(&fleet(&[3, 3]));
        let opts = FleetOptions {
            batch: BatchSize::Count(2),
            canary: Canary::PerCluster,
            ..Default::default()
        };
        let w = plan_waves(&t, &opts).unwrap();
        assert_eq!(names(&t, &w), ["c0h0,c1h0", "c0h1,c0h2,c1h1,c1h2"]);
    }

    /// Runs `spec` with each host taking `ms` milliseconds (a host named in `slow` five times
    /// as long); returns the report, the start order, and the most hosts seen running at once
    /// in all and per cluster.
    async fn run_timed(
        spec: &str,
        opts: FleetOptions,
        fail: &[&str],
        slow: &[&str],
        ms: u64,
    ) -> (FleetReport, Vec<String>, usize, BTreeMap<String, usize>) {
        let t = targets(spec);
        #[derive(Default)]
        struct Seen {
            order: Vec<String>,
            now: usize,
            max: usize,
            per: BTreeMap<String, (usize, usize)>,
        }
        let seen = Mutex::new(Seen::default());
        let r = run_fleet(&t, &opts, &NoProgress, |t| {
            let bad = fail.contains(&t.host.as_str());
            let wait = if slow.contains(&t.host.as_str()) {
                ms * 5
            } else {
                ms
            };
            let c = t.cluster.clone().unwrap_or_default();
            {
                let mut s = seen.lock().unwrap();
                s.order.push(t.host.clone());
                s.now += 1;
                s.max = s.max.max(s.now);
                let e = s.per.entry(c.clone()).or_default();
                e.0 += 1;
                e.1 = e.1.max(e.0);
            }
            let seen = &seen;
            async move {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let mut s = seen.lock().unwrap();
                s.now -= 1;
                if let Some(e) = s.per.get_mut(&c) {
                    e.0 -= 1;
                }
                if bad {
                    Err("boom".to_string())
                } else {
                    Ok("fine".to_string())
                }
            }
        })
        .await
        .unwrap();
        let s = seen.into_inner().unwrap();
        let per = s.per.into_iter().map(|(k, (_, m))| (k, m)).collect();
        (r, s.order, s.max, per)
    }

    #[tokio::test]
    async fn a_run_keeps_to_the_batches_and_the_cap() {
        let opts = FleetOptions {
            batch: BatchSize::Count(2),
            parallel: 5,
            ..Default::default()
        };
        let (r, order, max, per) = run_timed(&fleet(&[6, 6, 6]), opts, &[], &[], 5).await;
        assert!(r.all_ok());
        assert_eq!(order.len(), 18);
        assert_eq!(order[0], "c0h0");
        assert_eq!(max, 5);
        assert!(per.values().all(|&m| m == 2), "{per:?}");
    }

    #[tokio::test]
    async fn a_slot_is_refilled_without_waiting_for_the_wave() {
        // c0h1 is slow: c1's hosts go on meanwhile instead of waiting for it.
        let opts = FleetOptions {
            canary: Canary::None,
            ..Default::default()
        };
        let (r, order, _, _) = run_timed(&fleet(&[2, 4]), opts, &[], &["c0h0"], 10).await;
        assert!(r.all_ok());
        let pos = |h: &str| order.iter().position(|o| o == h).unwrap();
        assert!(pos("c1h3") < pos("c0h1"), "{order:?}");
    }

    #[tokio::test]
    async fn stops_on_the_first_failure_by_default() {
        let opts = FleetOptions {
            canary: Canary::None,
            ..Default::default()
        };
        let (r, _, _, _) = run_timed("a\nb\nc\nd\n", opts, &["b"], &[], 1).await;
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
    async fn running_hosts_finish_when_the_budget_stops_the_run() {
        // c0h1 fails fast while c1h0 (slow) runs: nothing new starts, c1h0 still finishes.
        let opts = FleetOptions {
            canary: Canary::None,
            ..Default::default()
        };
        let (r, order, _, _) = run_timed(&fleet(&[3, 2]), opts, &["c0h0"], &["c1h0"], 10).await;
        assert_eq!(order, ["c0h0", "c1h0"]);
        assert_eq!(r.hosts[0].outcome, Outcome::Failed);
        assert_eq!(r.hosts[3].outcome, Outcome::Ok);
        assert_eq!(r.hosts[1].outcome, Outcome::NotStarted);
        assert!(r.stopped.unwrap().contains("stop on first failure"));
    }

    #[tokio::test]
    async fn over_the_fleet_budget_nothing_starts_and_every_running_host_finishes() {
        // Batch 2 in three clusters: c0h0 and c0h1 fail fast while c1's and c2's first two
        // run long. The first failure (1 of 12) is within 10%: c0h2 takes its slot. The
        // second (2 of 12) is over: nothing else starts, the four long hosts and c0h2 finish.
        let opts = FleetOptions {
            batch: BatchSize::Count(2),
            max_fail_pct: Some(10.0),
            canary: Canary::None,
            ..Default::default()
        };
        let (r, order, _, _) = run_timed(
            &fleet(&[4, 4, 4]),
            opts,
            &["c0h0", "c0h1"],
            &["c1h0", "c1h1", "c2h0", "c2h1"],
            20,
        )
        .await;
        assert_eq!(
            order,
            // The most queued cluster first, ties in hosts-file order.
            ["c0h0", "c1h0", "c2h0", "c0h1", "c1h1", "c2h1", "c0h2"]
        );
        let outcome = |h: &str| {
            r.hosts
                .iter()
                .find(|x| x.host == format!("root@{h}:22"))
                .map(|x| x.outcome)
        };
        for h in ["c1h0", "c1h1", "c2h0", "c2h1", "c0h2"] {
            assert_eq!(outcome(h), Some(Outcome::Ok), "{h}");
        }
        for h in ["c0h3", "c1h2", "c1h3", "c2h2", "c2h3"] {
            assert_eq!(outcome(h), Some(Outcome::NotStarted), "{h}");
        }
        assert!(
            r.stopped
                .unwrap()
                .contains("2 of 12 hosts failed, over 10%")
        );
    }

    #[tokio::test]
    async fn a_failed_canary_stops_even_with_a_budget() {
        let opts = FleetOptions {
            max_fail_pct: Some(50.0),
            ..Default::default()
        };
        let (r, order, _, _) = run_timed("a\nb\nc\n", opts, &["a"], &[], 1).await;
        assert_eq!(order, ["a"]);
        assert_eq!(r.stopped.as_deref(), Some("the canary host failed"));
        assert_eq!(r.hosts[1].outcome, Outcome::NotStarted);
    }

    #[tokio::test]
    async fn a_failure_budget_lets_the_run_go_on() {
        let opts = FleetOptions {
            max_fail_pct: Some(30.0),
            ..Default::default()
        };
        let (r, _, _, _) = run_timed("a\nb\nc\nd\ne\nf\n", opts, &["b", "d"], &[], 1).await;
        // 2 of 6 = 33% > 30%: stops after d.
        let outcomes: Vec<Outcome> = r.hosts.iter().map(|h| h.outcome).collect();
        assert_eq!(
            outcomes[..4],
            [Outcome::Ok, Outcome::Failed, Outcome::Ok, Outcome::Failed]
        );
        assert_eq!(outcomes[4], Outcome::NotStarted);
        assert!(r.stopped.unwrap().contains("2 of 6 hosts failed, over 30%"));
    }

    #[tokio::test]
    async fn a_cluster_over_its_budget_stops_alone() {
        // Two failures in c0 (of 4: 50% > 25%) stop c0; c1 goes on to the end.
        let opts = FleetOptions {
            max_fail_pct: Some(50.0),
            cluster_max_fail_pct: Some(25.0),
            canary: Canary::None,
            ..Default::default()
        };
        let (r, _, _, _) = run_timed(&fleet(&[4, 4]), opts, &["c0h0", "c0h1"], &[], 1).await;
        let of = |c: &str| -> Vec<Outcome> {
            r.hosts
                .iter()
                .filter(|h| h.cluster.as_deref() == Some(c))
                .map(|h| h.outcome)
                .collect()
        };
        assert_eq!(
            of("c0"),
            [
                Outcome::Failed,
                Outcome::Failed,
                Outcome::NotStarted,
                Outcome::NotStarted
            ]
        );
        assert!(of("c1").iter().all(|o| *o == Outcome::Ok));
        let why = r.stopped.unwrap();
        assert!(
            why.contains("cluster c0 stopped: 2 of its 4 hosts failed"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_failed_cluster_canary_stops_its_cluster_only() {
        let opts = FleetOptions {
            max_fail_pct: Some(40.0),
            canary: Canary::PerCluster,
            ..Default::default()
        };
        let (r, order, _, _) = run_timed(&fleet(&[3, 3]), opts, &["c1h0"], &[], 1).await;
        assert!(!order.contains(&"c1h1".to_string()));
        assert_eq!(
            r.hosts.iter().filter(|h| h.outcome == Outcome::Ok).count(),
            3
        );
        assert!(
            r.stopped
                .unwrap()
                .contains("cluster c1 stopped: its canary")
        );
    }

    #[tokio::test]
    async fn the_journal_resumes_where_the_last_run_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FleetOptions {
            journal: Some(dir.path().join("fleet.jsonl")),
            ..Default::default()
        };
        let (r, _, _, _) = run_timed("a\nb\nc\n", opts.clone(), &["b"], &[], 1).await;
        assert_eq!(r.failed().count(), 1);
        let t = targets("a\nb\nc\n");
        assert_eq!(names(&t, &plan_waves(&t, &opts).unwrap()), ["b", "c"]);
        let (r, order, _, _) = run_timed("a\nb\nc\n", opts, &[], &[], 1).await;
        assert_eq!(order, ["b", "c"]);
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
