//! The fleet scheduler: which host starts next. Pure bookkeeping, no I/O and no clock, so the
//! same code drives a run ([`crate::fleet::run_fleet`]) and its dry-run plan
//! ([`crate::fleet::plan_waves`]).
//!
//! Clusters move side by side, each at most its batch at once (as CloudStack's own rolling
//! maintenance and Ansible's `serial` do per group), the whole fleet at most the global cap.
//! When the cap binds, the next host comes from the cluster with the most hosts still queued
//! (ties: the cluster listed first), which keeps the largest cluster, the one that decides the
//! wall time, busy.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::fleet::Target;

/// How many hosts of one cluster are refreshed at once: a count, or a percentage of the
/// cluster's hosts (rounded down, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BatchSpec", into = "BatchSpec")]
pub enum BatchSize {
    /// This many hosts.
    Count(usize),
    /// This percentage (1 to 100) of the cluster's hosts.
    Percent(u8),
}

impl BatchSize {
    /// The batch for a cluster of `hosts` hosts: at least one.
    ///
    /// ```
    /// use cs_agent::fleet::BatchSize;
    /// assert_eq!(BatchSize::Count(3).of(25), 3);
    /// assert_eq!(BatchSize::Percent(10).of(25), 2);
    /// assert_eq!(BatchSize::Percent(10).of(5), 1);
    /// ```
    pub fn of(self, hosts: usize) -> usize {
        match self {
            BatchSize::Count(n) => n.max(1),
            BatchSize::Percent(p) => (hosts * usize::from(p.min(100)) / 100).max(1),
        }
    }
}

impl Default for BatchSize {
    fn default() -> Self {
        BatchSize::Count(1)
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for BatchSize {
    type Err = Error;

    /// `3` or `25%`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Input(format!(
                "batch `{s}`: expected a host count (1 or more) or a percentage (1% to 100%)"
            ))
        };
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(BatchSize::Percent(p)),
                _ => Err(bad()),
            }
        } else {
            match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(BatchSize::Count(n)),
                _ => Err(bad()),
            }
        }
    }
}

/// How a batch size is written in a configuration file: `2` or `"25%"`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BatchSpec {
    Count(usize),
    Text(String),
}

impl TryFrom<BatchSpec> for BatchSize {
    type Error = Error;

    fn try_from(s: BatchSpec) -> Result<Self, Error> {
        match s {
            BatchSpec::Count(n) => n.to_string().parse(),
            BatchSpec::Text(t) => t.parse(),
        }
    }
}

impl From<BatchSize> for BatchSpec {
    fn from(b: BatchSize) -> Self {
        match b {
            BatchSize::Count(n) => BatchSpec::Count(n),
            BatchSize::Percent(_) => BatchSpec::Text(b.to_string()),
        }
    }
}

/// Which hosts go first, alone, before the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Canary {
    /// No canary.
    None,
    /// The first host (hosts-file order) alone before any other; the run stops if it fails.
    #[default]
    One,
    /// Each cluster's first host alone before the rest of its cluster; a cluster whose canary
    /// fails stops (the others go on, within the fleet's budget).
    PerCluster,
}

/// One cluster's queue and counters.
#[derive(Debug)]
struct Cluster {
    name: Option<String>,
    /// Hosts in the hosts file (done earlier included): what a percentage is of.
    size: usize,
    queue: VecDeque<usize>,
    running: usize,
    failed: usize,
    /// The cluster's canary has not succeeded yet (per-cluster canary only).
    canary_pending: bool,
    /// The cluster's canary is running.
    canary_running: bool,
    stopped: bool,
}

/// What the scheduler knows: queues, what runs, what failed, whether the run stopped.
#[derive(Debug)]
pub(crate) struct Scheduler {
    clusters: Vec<Cluster>,
    /// Each target's cluster (an index into `clusters`).
    cluster_of: Vec<usize>,
    batch: BatchSize,
    cap: usize,
    max_fail_pct: Option<f64>,
    cluster_max_fail_pct: Option<f64>,
    total: usize,
    failed: usize,
    running: usize,
    /// The fleet canary, while it has not run yet or runs.
    canary: Option<usize>,
    canary_running: bool,
    /// Why the run stopped starting hosts, when it did.
    stopped: Option<String>,
    /// Clusters stopped by their own budget or canary, with why.
    notes: Vec<String>,
}

/// The knobs the scheduler follows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) batch: BatchSize,
    pub(crate) cap: usize,
    pub(crate) canary: Canary,
    pub(crate) max_fail_pct: Option<f64>,
    pub(crate) cluster_max_fail_pct: Option<f64>,
}

impl Scheduler {
    /// A scheduler for `targets`, skipping the indices in `done`.
    pub(crate) fn new(targets: &[Target], done: &BTreeSet<usize>, limits: Limits) -> Self {
        let mut clusters: Vec<Cluster> = Vec::new();
        let mut cluster_of = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            let c = match clusters.iter().position(|c| c.name == t.cluster) {
                Some(c) => c,
                None => {
                    clusters.push(Cluster {
                        name: t.cluster.clone(),
                        size: 0,
                        queue: VecDeque::new(),
                        running: 0,
                        failed: 0,
                        canary_pending: limits.canary == Canary::PerCluster,
                        canary_running: false,
                        stopped: false,
                    });
                    clusters.len() - 1
                }
            };
            cluster_of.push(c);
            clusters[c].size += 1;
            if !done.contains(&i) {
                clusters[c].queue.push_back(i);
            }
        }
        let canary = (limits.canary == Canary::One)
            .then(|| (0..targets.len()).find(|i| !done.contains(i)))
            .flatten();
        Scheduler {
            clusters,
            cluster_of,
            batch: limits.batch,
            cap: limits.cap.max(1),
            max_fail_pct: limits.max_fail_pct,
            cluster_max_fail_pct: limits.cluster_max_fail_pct,
            total: targets.len(),
            failed: 0,
            running: 0,
            canary,
            canary_running: false,
            stopped: None,
            notes: Vec::new(),
        }
    }

    /// Why the run (or some of its clusters) stopped early, when it did.
    pub(crate) fn stopped(&self) -> Option<String> {
        let mut parts: Vec<String> = self.stopped.iter().cloned().collect();
        parts.extend(self.notes.iter().cloned());
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The hosts to start now (possibly none), marked as running.
    pub(crate) fn next(&mut self) -> Vec<usize> {
        if self.stopped.is_some() || self.canary_running {
            return Vec::new();
        }
        if let Some(i) = self.canary {
            let c = self.cluster_of[i];
            self.clusters[c].queue.retain(|&q| q != i);
            self.clusters[c].running += 1;
            self.running += 1;
            self.canary_running = true;
            return vec![i];
        }
        let mut out = Vec::new();
        while self.running < self.cap {
            let batch = self.batch;
            let pick = self
                .clusters
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    let limit = if c.canary_pending {
                        1
                    } else {
                        batch.of(c.size)
                    };
                    !c.stopped && !c.canary_running && !c.queue.is_empty() && c.running < limit
                })
                // Most queued first; `max_by_key` keeps the last of equals, so compare the
                // negated index to keep the first.
                .max_by_key(|(k, c)| (c.queue.len(), std::cmp::Reverse(*k)))
                .map(|(k, _)| k);
            let Some(k) = pick else { break };
            let c = &mut self.clusters[k];
            let Some(i) = c.queue.pop_front() else { break };
            if c.canary_pending {
                c.canary_running = true;
            }
            c.running += 1;
            self.running += 1;
            out.push(i);
        }
        out
    }

    /// Records that host `i` finished; `ok` is whether it succeeded.
    pub(crate) fn finish(&mut self, i: usize, ok: bool) {
        let k = self.cluster_of[i];
        self.running = self.running.saturating_sub(1);
        let was_fleet_canary = self.canary == Some(i);
        if was_fleet_canary {
            self.canary = None;
            self.canary_running = false;
        }
        let c = &mut self.clusters[k];
        c.running = c.running.saturating_sub(1);
        let was_cluster_canary = c.canary_running;
        if c.canary_running {
            c.canary_running = false;
            if ok {
                c.canary_pending = false;
            }
        }
        if ok {
            return;
        }
        self.failed += 1;
        c.failed += 1;
        let name = c.name.clone().unwrap_or_else(|| "-".into());
        if was_fleet_canary {
            self.stopped
                .get_or_insert_with(|| "the canary host failed".into());
            return;
        }
        if was_cluster_canary && !c.stopped {
            c.stopped = true;
            self.notes
                .push(format!("cluster {name} stopped: its canary host failed"));
        }
        if let Some(pct) = self.cluster_max_fail_pct
            && !c.stopped
            && c.failed as f64 * 100.0 / c.size.max(1) as f64 > pct
        {
            c.stopped = true;
            self.notes.push(format!(
                "cluster {name} stopped: {} of its {} hosts failed, over {pct}%",
                c.failed, c.size
            ));
        }
        let over = match self.max_fail_pct {
            None => true,
            Some(pct) => self.failed as f64 * 100.0 / self.total.max(1) as f64 > pct,
        };
        if over && self.stopped.is_none() {
            self.stopped = Some(match self.max_fail_pct {
                None => format!("{} host(s) failed (stop on first failure)", self.failed),
                Some(p) => format!("{} of {} hosts failed, over {p}%", self.failed, self.total),
            });
        }
    }
}
