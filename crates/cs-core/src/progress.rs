//! Progress of long work, reported to whoever draws it. Libraries never print.

use std::fmt;
use std::sync::Mutex;

use serde::Serialize;

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Database rows.
    Rows,
    /// Hosts.
    Hosts,
    /// Steps.
    Steps,
    /// Anything else.
    Items,
}

/// One progress report: `done` of `total` for a named task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressUpdate {
    /// The task (`dump cloud.vm_stats`, `refresh kvm3`).
    pub task: String,
    /// How much is done.
    pub done: u64,
    /// The estimated total, when known.
    pub total: Option<u64>,
    /// What `done` and `total` count.
    pub unit: Unit,
    /// A short note (`waiting for host Up`).
    pub message: Option<String>,
    /// Whether the task has ended.
    pub finished: bool,
}

impl ProgressUpdate {
    /// A running task's update.
    pub fn new(task: impl Into<String>, done: u64, total: Option<u64>, unit: Unit) -> Self {
        ProgressUpdate {
            task: task.into(),
            done,
            total,
            unit,
            message: None,
            finished: false,
        }
    }

    /// Adds a note.
    #[must_use]
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Marks the task as ended.
    #[must_use]
    pub fn finished(mut self) -> Self {
        self.finished = true;
        self
    }
}

/// A sink for progress. Examples implement it with progress bars; libraries call it.
///
/// # Contract
/// `update` is cheap and never blocks for long: libraries may call it for every chunk of work.
pub trait Progress: Send + Sync + fmt::Debug {
    /// Receives one update.
    fn update(&self, update: ProgressUpdate);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _update: ProgressUpdate) {}
}

/// Progress that records every update, for tests and for callers that summarise afterwards.
#[derive(Debug, Default)]
pub struct RecordingProgress {
    updates: Mutex<Vec<ProgressUpdate>>,
}

impl RecordingProgress {
    /// The updates received so far.
    pub fn updates(&self) -> Vec<ProgressUpdate> {
        self.updates
            .lock()
            .map(|u| u.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl Progress for RecordingProgress {
    fn update(&self, update: ProgressUpdate) {
        match self.updates.lock() {
            Ok(mut u) => u.push(update),
            Err(p) => p.into_inner().push(update),
        }
    }
}
