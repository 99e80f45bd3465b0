//! The [`Runner`]: applies [`Step`]s in order, writes a journal so a killed run resumes, and on
//! failure rolls back what the journal says was applied, newest first.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use crate::{Progress, ProgressUpdate, Step, StepError, StepState, Unit, error_chain};

/// Progress task name of [`Runner::run`].
const RUN_TASK: &str = "steps";
/// Progress task name of rollbacks.
const ROLLBACK_TASK: &str = "rollback";

// ---------------------------------------------------------------------------------------------
// Journal entries
// ---------------------------------------------------------------------------------------------

/// One line of a runner journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// When it was written (RFC 3339, UTC).
    pub ts: String,
    /// The run that wrote it; the journal's first run is 1.
    pub run: u32,
    /// What happened.
    #[serde(flatten)]
    pub event: JournalEvent,
}

/// What a run does: apply the plan, or roll it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunKind {
    /// [`Runner::run`].
    Apply,
    /// [`Runner::rollback_all`].
    Rollback,
}

/// Where a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepPhase {
    /// `check` before `apply` could not read the state.
    Check,
    /// `apply` returned an error.
    Apply,
    /// `check` after `apply` erred or did not say `Done`.
    Verify,
}

impl fmt::Display for StepPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepPhase::Check => "check",
            StepPhase::Apply => "apply",
            StepPhase::Verify => "check after apply",
        })
    }
}

/// An event in a runner journal (the `event` field, `snake_case`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalEvent {
    /// A run started.
    RunStart {
        /// Applying or rolling back.
        kind: RunKind,
        /// The plan's fingerprint ([`plan_fingerprint`]).
        plan: String,
        /// The plan's step ids, in order.
        steps: Vec<String>,
    },
    /// A step's `check` returned (before `apply`, and again after it).
    Check {
        /// The step id.
        step: String,
        /// What `check` said.
        state: StepState,
    },
    /// `apply` is about to be called.
    ApplyStart {
        /// The step id.
        step: String,
    },
    /// `apply` returned and `check` says `Done`.
    ApplyDone {
        /// The step id.
        step: String,
        /// How long `apply` took, in milliseconds.
        ms: u64,
    },
    /// A step failed; the run rolls back next.
    StepFailed {
        /// The step id.
        step: String,
        /// Where it failed.
        phase: StepPhase,
        /// The error and its causes ([`error_chain`]).
        error: String,
    },
    /// `rollback` is about to be called.
    RollbackStart {
        /// The step id.
        step: String,
    },
    /// `rollback` returned.
    RollbackDone {
        /// The step id.
        step: String,
        /// How long `rollback` took, in milliseconds.
        ms: u64,
    },
    /// `check` said `Pending` before rollback: nothing to undo, `rollback` not called.
    RollbackSkipped {
        /// The step id.
        step: String,
    },
    /// `rollback` returned an error; the step is still applied.
    RollbackFailed {
        /// The step id.
        step: String,
        /// The error and its causes.
        error: String,
    },
    /// The run ended successfully (every step done, or everything rolled back).
    RunFinished,
    /// The run ended with an error (a failed step, or failed rollbacks).
    RunAborted {
        /// What went wrong.
        error: String,
    },
}

/// The fingerprint of a plan: FNV-1a (64 bit) over each step id's length (`u64`, little
/// endian) followed by its UTF-8 bytes, in order, printed as `fnv1a64:` and 16 hex digits.
///
/// Stable across releases, platforms and processes (no random keys). It detects a changed plan;
/// it is not a cryptographic hash.
///
/// ```
/// let a = cs_core::plan_fingerprint(["db.backup", "repo.switch"]);
/// let b = cs_core::plan_fingerprint(["repo.switch", "db.backup"]);
/// assert_ne!(a, b);
/// assert!(a.starts_with("fnv1a64:"));
/// ```
pub fn plan_fingerprint<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for id in ids {
        eat(&(id.len() as u64).to_le_bytes());
        eat(id.as_bytes());
    }
    format!("fnv1a64:{hash:016x}")
}

/// Reads and validates a runner journal. A missing file is an empty journal; an unterminated
/// last line (a run killed mid-write) is ignored.
///
/// # Errors
/// [`RunError::Journal`] when the file cannot be read, [`RunError::CorruptJournal`] when a line
/// is not an entry or entries are out of order.
pub fn read_journal(path: &Path) -> Result<Vec<JournalEntry>, RunError> {
    let entries = read_entries(path)?;
    History::build(path, &entries)?;
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// The steps a journal records as applied and not rolled back (of its last plan), oldest
/// first: empty for a missing journal, or one whose runs were all rolled back.
///
/// # Errors
/// As [`read_journal`].
pub fn applied_steps(path: &Path) -> Result<Vec<String>, RunError> {
    let entries = read_entries(path)?;
    Ok(History::build(path, &entries)?.applied)
}

// ---------------------------------------------------------------------------------------------
// Reports and errors
// ---------------------------------------------------------------------------------------------

/// What happened to one step in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepOutcome {
    /// The run did not get to it (or, in a rollback, the journal did not list it as applied).
    NotRun,
    /// `check` said `Done`; nothing to do.
    Skipped,
    /// Applied by this run.
    Applied,
    /// Failed in this run and left nothing to undo.
    Failed,
    /// Rolled back (by this run, after a failure or by `rollback_all`).
    RolledBack,
    /// Its rollback failed: it is still applied.
    RollbackFailed,
}

impl fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepOutcome::NotRun => "not run",
            StepOutcome::Skipped => "skipped",
            StepOutcome::Applied => "applied",
            StepOutcome::Failed => "failed",
            StepOutcome::RolledBack => "rolled back",
            StepOutcome::RollbackFailed => "rollback failed",
        })
    }
}

/// One step's part in a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step id.
    pub id: String,
    /// What happened to it.
    pub outcome: StepOutcome,
    /// Why it failed, when it did (with causes).
    pub error: Option<String>,
    /// Why its rollback failed, when it did (with causes).
    pub rollback_error: Option<String>,
    /// Time spent in `check`.
    pub check_time: Duration,
    /// Time spent in `apply`, when it was called.
    pub apply_time: Option<Duration>,
    /// Time spent in `rollback`, when it was called.
    pub rollback_time: Option<Duration>,
}

/// What a run of a [`Runner`] did, step by step. Returned on success and inside [`RunError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// The journal file.
    pub journal: PathBuf,
    /// The number of this run in the journal (0 when nothing was written).
    pub run: u32,
    /// What the run did.
    pub kind: RunKind,
    /// The plan's fingerprint.
    pub plan: String,
    /// Every step of the plan, in plan order.
    pub steps: Vec<StepReport>,
    /// The step that failed, when one did.
    pub failed_step: Option<String>,
    /// The steps on which `rollback` was called, in the order it was called (newest first).
    pub rollback_order: Vec<String>,
}

impl RunReport {
    /// The report of one step.
    pub fn step(&self, id: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The ids of the steps with `outcome`, in plan order.
    pub fn ids_with(&self, outcome: StepOutcome) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.outcome == outcome)
            .map(|s| s.id.as_str())
            .collect()
    }

    fn step_mut(&mut self, id: &str) -> Option<&mut StepReport> {
        self.steps.iter_mut().find(|s| s.id == id)
    }
}

impl fmt::Display for RunReport {
    /// One line per step: outcome, id, and the error when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
        for s in &self.steps {
            write!(f, "{:<15}  {:<width$}", s.outcome.to_string(), s.id)?;
            if let Some(e) = &s.error {
                write!(f, "  error: {e}")?;
            }
            if let Some(e) = &s.rollback_error {
                write!(f, "  rollback error: {e}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Errors of a [`Runner`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A step failed; the runner rolled back what the journal says was applied.
    #[error("step `{step}` failed during {phase}{}", rollback_note(report))]
    StepFailed {
        /// The step id.
        step: String,
        /// Where it failed.
        phase: StepPhase,
        /// The step's error.
        #[source]
        source: StepError,
        /// What the run did, rollbacks included.
        report: Box<RunReport>,
    },
    /// A step failed after the point of no return ([`Runner::with_point_of_no_return`]):
    /// nothing was rolled back; everything applied stays applied.
    #[error(
        "step `{step}` failed during {phase} after the point of no return `{point}`; nothing was rolled back"
    )]
    Stopped {
        /// The step id.
        step: String,
        /// Where it failed.
        phase: StepPhase,
        /// The point of no return.
        point: String,
        /// The step's error.
        #[source]
        source: StepError,
        /// What the run did.
        report: Box<RunReport>,
    },
    /// [`Runner::rollback_all`] could not roll back every step; the others were rolled back.
    #[error("rollback failed for {}", quoted(steps))]
    RollbackFailed {
        /// The steps whose rollback failed, newest first.
        steps: Vec<String>,
        /// What the rollback did.
        report: Box<RunReport>,
    },
    /// The journal records a half-done run of a different plan.
    #[error(
        "journal {} records an unfinished run of a different plan ({recorded}; this plan is \
         {current}): finish or roll back that run with its own plan",
        path.display()
    )]
    PlanChanged {
        /// The journal file.
        path: PathBuf,
        /// The fingerprint in the journal.
        recorded: String,
        /// The fingerprint of this runner's plan.
        current: String,
    },
    /// The journal could not be opened, read, locked or written.
    #[error("cannot {action} journal {}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What failed (`open`, `read`, `lock`, `write to`).
        action: &'static str,
        /// The IO error.
        #[source]
        source: io::Error,
        /// What the run had done when it stopped (none when it stopped before starting).
        report: Option<Box<RunReport>>,
    },
    /// Another runner holds the journal.
    #[error("journal {} is in use by another runner", path.display())]
    JournalLocked {
        /// The journal file.
        path: PathBuf,
    },
    /// A journal line is not a valid entry, or entries are out of order.
    #[error("journal {} is corrupt at line {line}: {reason}", path.display())]
    CorruptJournal {
        /// The journal file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Two steps of the plan have the same id.
    #[error("step id `{id}` appears more than once in the plan")]
    DuplicateStep {
        /// The id.
        id: String,
    },
}

impl RunError {
    /// The report of what the run did, when it got that far.
    pub fn report(&self) -> Option<&RunReport> {
        match self {
            RunError::StepFailed { report, .. }
            | RunError::Stopped { report, .. }
            | RunError::RollbackFailed { report, .. } => Some(report),
            RunError::Journal { report, .. } => report.as_deref(),
            _ => None,
        }
    }
}

fn rollback_note(report: &RunReport) -> String {
    let failed = report.ids_with(StepOutcome::RollbackFailed);
    if failed.is_empty() {
        String::new()
    } else {
        format!(", and rollback failed for {}", quoted(failed))
    }
}

fn quoted<S: AsRef<str>>(ids: impl IntoIterator<Item = S>) -> String {
    ids.into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Dry run
// ---------------------------------------------------------------------------------------------

/// What [`Runner::plan`] found: every step's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The plan's fingerprint.
    pub fingerprint: String,
    /// Every step, in order.
    pub steps: Vec<PlannedStep>,
    /// Steps the journal records as applied, newest first: what `rollback_all` would undo.
    pub applied: Vec<String>,
    /// The step a killed run was applying when it died, if the last run was killed there.
    pub interrupted: Option<String>,
}

impl Plan {
    /// The ids of the steps a run would apply, in order.
    pub fn would_apply(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.would_apply())
            .map(|s| s.id.as_str())
            .collect()
    }
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The step id.
    pub id: String,
    /// What `check` said, when it could tell.
    pub state: Option<StepState>,
    /// Why `check` could not tell.
    pub error: Option<String>,
}

impl PlannedStep {
    /// Whether a run would apply the step now (its check did not say `Done`). The checks of a
    /// dry run see the state before any step is applied, so a step whose state depends on an
    /// earlier one may be reported differently from what the run will find.
    pub fn would_apply(&self) -> bool {
        self.state != Some(StepState::Done)
    }
}

// ---------------------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------------------

/// Applies a plan of [`Step`]s against a context, with a journal.
///
/// For each step in order: `check`; `Done` is skipped; otherwise `apply`, then `check` again,
/// which must say `Done`. On a failure, every step the journal records as applied (by this run
/// or by an earlier, killed run of the same plan) is rolled back, newest first, and the run
/// returns [`RunError::StepFailed`] with the report. Running again with the same journal
/// resumes: done steps are skipped and an interrupted step is re-applied (`apply` is
/// idempotent).
///
/// # The journal
///
/// A JSON-lines file, one [`JournalEntry`] a line, each written and `fdatasync`ed
/// ([`File::sync_data`](std::fs::File::sync_data)) before the runner goes on. An entry is
/// `{"ts": "<RFC 3339 UTC>", "run": <n>, "event": "<kind>", ...}` where `run` numbers the runs of
/// the journal from 1 and the event kinds are those of [`JournalEvent`] in `snake_case`:
///
/// ```text
/// {"ts":"2026-05-01T10:00:00.1Z","run":1,"event":"run_start","kind":"apply","plan":"fnv1a64:…","steps":["a","b"]}
/// {"ts":"…","run":1,"event":"check","step":"a","state":{"state":"pending"}}
/// {"ts":"…","run":1,"event":"apply_start","step":"a"}
/// {"ts":"…","run":1,"event":"check","step":"a","state":{"state":"done"}}
/// {"ts":"…","run":1,"event":"apply_done","step":"a","ms":12}
/// {"ts":"…","run":1,"event":"step_failed","step":"b","phase":"apply","error":"…"}
/// {"ts":"…","run":1,"event":"rollback_skipped","step":"b"}
/// {"ts":"…","run":1,"event":"rollback_start","step":"a"}
/// {"ts":"…","run":1,"event":"rollback_done","step":"a","ms":3}
/// {"ts":"…","run":1,"event":"run_aborted","error":"…"}
/// ```
///
/// Only step ids, states and error texts are written; they are secret-free by project rule.
/// The journal is locked (`flock`) while a runner writes it, so two runners never share one.
///
/// A line without its final newline is what a run killed mid-write leaves: it is ignored (with a
/// `tracing` warning) and cut off before the next entry is appended. Any other line that does
/// not parse, or entries out of order, are [`RunError::CorruptJournal`] naming the file and line.
///
/// # The record of an upgrade
///
/// A journal is the record of one upgrade: every run of the same plan (the same ordered step ids,
/// see [`plan_fingerprint`]) adds to it. A step is *applied* from its `apply_start` until its
/// `rollback_done` (or `rollback_skipped`), whichever run wrote them, so a run that resumes a
/// killed one rolls back what the killed run applied when it fails.
///
/// `apply_start` is on disk before `apply` is called, so a step whose `apply` may have begun is
/// always in the record.
///
/// **Plan changes.** A run (or [`Runner::plan`]) whose plan differs from the one the journal
/// records is refused with [`RunError::PlanChanged`] unless the journal's last run finished
/// successfully, or no step of the recorded plan is still applied (nothing was applied, or
/// everything was rolled back). A run of a new plan starts a new record: steps of a plan that
/// finished successfully are then committed and not rolled back by the new plan's runs.
/// [`Runner::rollback_all`] needs the recorded plan whenever something is left to roll back.
///
/// **Journal failures.** When an entry cannot be written, the runner stops at once without
/// rolling back (what it would do could not be recorded) and returns [`RunError::Journal`] with
/// the report so far. Running again resumes; `rollback_all` undoes.
///
/// # Building a plan
///
/// Steps are boxed so plans can be built at run time; a step shared elsewhere goes in as
/// `Box::new(Arc::clone(&step))` (`Arc<S>` is a `Step` when `S` is).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cs_core::{NoProgress, Runner, Step, StepError, StepState};
///
/// #[derive(Debug)]
/// struct Touch(&'static str);
///
/// #[async_trait::async_trait]
/// impl Step<std::path::Path> for Touch {
///     fn id(&self) -> &str { self.0 }
///     async fn check(&self, dir: &std::path::Path) -> Result<StepState, StepError> {
///         Ok(if dir.join(self.0).exists() { StepState::Done } else { StepState::Pending })
///     }
///     async fn apply(&self, dir: &std::path::Path) -> Result<(), StepError> {
///         std::fs::write(dir.join(self.0), "").map_err(|e| StepError::with_source("touch", e))
///     }
///     async fn rollback(&self, dir: &std::path::Path) -> Result<(), StepError> {
///         let _ = std::fs::remove_file(dir.join(self.0));
///         Ok(())
///     }
/// }
///
/// let dir = std::env::temp_dir().join(format!("cs-runner-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let steps: Vec<Box<dyn Step<std::path::Path>>> = vec![Box::new(Touch("a")), Box::new(Touch("b"))];
/// let runner = Runner::new(dir.join("journal.jsonl"), steps);
/// let report = runner.run(&dir, &NoProgress).await.unwrap();
/// assert_eq!(report.ids_with(cs_core::StepOutcome::Applied), ["a", "b"]);
/// // A second run finds everything done.
/// let report = runner.run(&dir, &NoProgress).await.unwrap();
/// assert_eq!(report.ids_with(cs_core::StepOutcome::Skipped), ["a", "b"]);
/// std::fs::remove_dir_all(&dir).unwrap();
/// # });
/// ```
pub struct Runner<C: ?Sized> {
    journal: PathBuf,
    steps: Vec<Box<dyn Step<C>>>,
    fingerprint: String,
    point_of_no_return: Option<String>,
}

impl<C: ?Sized + Sync> fmt::Debug for Runner<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("journal", &self.journal)
            .field(
                "steps",
                &self.steps.iter().map(|s| s.id()).collect::<Vec<_>>(),
            )
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl<C: ?Sized + Sync> Runner<C> {
    /// A runner of `steps`, in order, journaling to `journal` (created when missing; its
    /// directory must exist).
    pub fn new(journal: impl Into<PathBuf>, steps: Vec<Box<dyn Step<C>>>) -> Self {
        let fingerprint = plan_fingerprint(steps.iter().map(|s| s.id()));
        Runner {
            journal: journal.into(),
            steps,
            fingerprint,
            point_of_no_return: None,
        }
    }

    /// Makes step `id` the point of no return: once the journal records it applied (in this
    /// run or an earlier one), a failure of a later step rolls nothing back — the run stops
    /// where it is with [`RunError::Stopped`], and the next [`Runner::run`] resumes forward.
    /// [`Runner::rollback_all`] still undoes everything when called; deciding whether to call
    /// it is the caller's. A failure of `id` itself still rolls back.
    #[must_use]
    pub fn with_point_of_no_return(mut self, id: impl Into<String>) -> Self {
        self.point_of_no_return = Some(id.into());
        self
    }

    /// Whether the journal records the point of no return as applied (and not rolled back).
    ///
    /// # Errors
    /// [`RunError::Journal`] or [`RunError::CorruptJournal`] when the journal cannot be read.
    pub async fn past_point_of_no_return(&self) -> Result<bool, RunError> {
        let Some(point) = self.point_of_no_return.clone() else {
            return Ok(false);
        };
        let path = self.journal.clone();
        let entries = tokio::task::spawn_blocking(move || read_entries(&path))
            .await
            .map_err(|e| RunError::Journal {
                path: self.journal.clone(),
                action: "read",
                source: io::Error::other(e.to_string()),
                report: None,
            })??;
        let history = History::build(&self.journal, &entries)?;
        Ok(history.plan.as_deref() == Some(self.fingerprint.as_str())
            && history.applied.contains(&point))
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        &self.journal
    }

    /// The plan's fingerprint ([`plan_fingerprint`] of the step ids).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The step ids, in order.
    pub fn step_ids(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.id())
    }

    /// Dry run: runs every step's `check` (nothing else) and says which steps a run would
    /// apply. Writes nothing, not even the journal.
    ///
    /// # Errors
    /// The errors of [`Runner::run`] that come before any step: [`RunError::DuplicateStep`],
    /// [`RunError::PlanChanged`], [`RunError::CorruptJournal`], [`RunError::Journal`]. A check
    /// that errs is reported in its [`PlannedStep`].
    pub async fn plan(&self, cx: &C) -> Result<Plan, RunError> {
        self.validate()?;
        let path = self.journal.clone();
        let entries = tokio::task::spawn_blocking(move || read_entries(&path))
            .await
            .map_err(|e| self.io_error("read", io::Error::other(e)))??;
        let history = History::build(&self.journal, &entries)?;
        self.refuse_plan_change(&history)?;
        let same_plan = history.plan.as_deref() == Some(self.fingerprint.as_str());
        let mut steps = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let (state, error) = match step.check(cx).await {
                Ok(state) => (Some(state), None),
                Err(e) => (None, Some(error_chain(&e))),
            };
            steps.push(PlannedStep {
                id: step.id().to_string(),
                state,
                error,
            });
        }
        Ok(Plan {
            fingerprint: self.fingerprint.clone(),
            steps,
            applied: if same_plan {
                history.applied.iter().rev().cloned().collect()
            } else {
                Vec::new()
            },
            interrupted: history.interrupted().map(str::to_string),
        })
    }

    /// Applies the plan, resuming what the journal records.
    ///
    /// # Errors
    /// * [`RunError::StepFailed`] when a step fails; what was applied has been rolled back
    ///   (see the report for rollbacks that failed).
    /// * [`RunError::PlanChanged`] when the journal records a half-done run of another plan.
    /// * [`RunError::Journal`], [`RunError::JournalLocked`], [`RunError::CorruptJournal`] for
    ///   journal trouble; a write failure mid-run stops without rolling back.
    /// * [`RunError::DuplicateStep`] when two steps share an id.
    pub async fn run(&self, cx: &C, progress: &dyn Progress) -> Result<RunReport, RunError> {
        self.validate()?;
        let (journal, history) = Journal::open(&self.journal).await?;
        self.refuse_plan_change(&history)?;
        let run = history.last_run + 1;
        // Steps applied by earlier runs of this plan, oldest first; a new plan starts afresh.
        let mut applied = if history.plan.as_deref() == Some(self.fingerprint.as_str()) {
            history.applied.clone()
        } else {
            Vec::new()
        };
        let mut s = self.begin(journal, run, RunKind::Apply).await?;
        tracing::info!(
            journal = %self.journal.display(),
            run,
            plan = %self.fingerprint,
            steps = self.steps.len(),
            resumed = !applied.is_empty(),
            "run started"
        );
        let total = self.steps.len() as u64;
        for (i, step) in self.steps.iter().enumerate() {
            let outcome = self
                .run_step(step.as_ref(), cx, &mut s, &mut applied, &history, progress)
                .await?;
            let done = i as u64 + 1;
            match outcome {
                Ok(()) => progress.update(
                    ProgressUpdate::new(RUN_TASK, done, Some(total), Unit::Steps)
                        .message(format!("{}: done", step.id())),
                ),
                Err((phase, error)) => {
                    return Err(self
                        .abort(cx, s, &applied, step.as_ref(), phase, error, progress)
                        .await);
                }
            }
        }
        s.log(JournalEvent::RunFinished).await?;
        progress.update(
            ProgressUpdate::new(RUN_TASK, total, Some(total), Unit::Steps)
                .message("all steps done")
                .finished(),
        );
        tracing::info!(journal = %self.journal.display(), run, "run finished");
        Ok(s.report)
    }

    /// Rolls back every step the journal records as applied, newest first (the orchestrator's
    /// `rollback` command). A step whose rollback fails stays applied and the older ones are
    /// still rolled back; calling this again retries what is left. With nothing to roll back it
    /// writes nothing and returns an empty report.
    ///
    /// # Errors
    /// * [`RunError::RollbackFailed`] when some rollbacks failed.
    /// * [`RunError::PlanChanged`] when the applied steps belong to another plan.
    /// * [`RunError::Journal`], [`RunError::JournalLocked`], [`RunError::CorruptJournal`] for
    ///   journal trouble.
    /// * [`RunError::DuplicateStep`] when two steps share an id.
    pub async fn rollback_all(
        &self,
        cx: &C,
        progress: &dyn Progress,
    ) -> Result<RunReport, RunError> {
        self.validate()?;
        let (journal, history) = Journal::open(&self.journal).await?;
        if history.applied.is_empty() {
            tracing::info!(journal = %self.journal.display(), "nothing to roll back");
            return Ok(self.skeleton(0, RunKind::Rollback));
        }
        if history.plan.as_deref() != Some(self.fingerprint.as_str()) {
            return Err(RunError::PlanChanged {
                path: self.journal.clone(),
                recorded: history.plan.clone().unwrap_or_default(),
                current: self.fingerprint.clone(),
            });
        }
        let run = history.last_run + 1;
        let mut s = self.begin(journal, run, RunKind::Rollback).await?;
        tracing::info!(
            journal = %self.journal.display(),
            run,
            steps = history.applied.len(),
            "rollback started"
        );
        let failed = self
            .roll_back(cx, &mut s, &history.applied, progress)
            .await?;
        if failed.is_empty() {
            s.log(JournalEvent::RunFinished).await?;
            tracing::info!(journal = %self.journal.display(), run, "rollback finished");
            Ok(s.report)
        } else {
            let error = format!("rollback failed for {}", quoted(&failed));
            s.log(JournalEvent::RunAborted { error }).await?;
            Err(RunError::RollbackFailed {
                steps: failed,
                report: Box::new(s.report),
            })
        }
    }

    /// One step of a run. The outer `Err` is a journal failure (stop now); the inner one a step
    /// failure (roll back).
    async fn run_step(
        &self,
        step: &dyn Step<C>,
        cx: &C,
        s: &mut Session,
        applied: &mut Vec<String>,
        history: &History,
        progress: &dyn Progress,
    ) -> Result<Result<(), (StepPhase, StepError)>, RunError> {
        let id = step.id();
        let (done, total) = s.position(id);
        progress.update(
            ProgressUpdate::new(RUN_TASK, done, Some(total), Unit::Steps)
                .message(format!("{id}: check")),
        );
        let t = Instant::now();
        let checked = step.check(cx).await;
        s.step(id).check_time += t.elapsed();
        let state = match checked {
            Ok(state) => state,
            Err(e) => return Ok(Err((StepPhase::Check, e))),
        };
        s.log(JournalEvent::Check {
            step: id.to_string(),
            state: state.clone(),
        })
        .await?;
        if state == StepState::Done {
            s.step(id).outcome = StepOutcome::Skipped;
            tracing::info!(step = id, "step already done, skipped");
            return Ok(Ok(()));
        }
        if history.interrupted() == Some(id) {
            tracing::info!(step = id, state = ?state, "re-applying a step an earlier run did not finish");
        } else {
            tracing::info!(step = id, state = ?state, "applying step");
        }
        s.log(JournalEvent::ApplyStart {
            step: id.to_string(),
        })
        .await?;
        applied.retain(|a| a != id);
        applied.push(id.to_string());
        progress.update(
            ProgressUpdate::new(RUN_TASK, done, Some(total), Unit::Steps)
                .message(format!("{id}: apply")),
        );
        let t = Instant::now();
        let result = step.apply(cx).await;
        let apply_time = t.elapsed();
        s.step(id).apply_time = Some(apply_time);
        if let Err(e) = result {
            return Ok(Err((StepPhase::Apply, e)));
        }
        let t = Instant::now();
        let checked = step.check(cx).await;
        s.step(id).check_time += t.elapsed();
        let state = match checked {
            Ok(state) => state,
            Err(e) => return Ok(Err((StepPhase::Verify, e))),
        };
        s.log(JournalEvent::Check {
            step: id.to_string(),
            state: state.clone(),
        })
        .await?;
        if state != StepState::Done {
            let message = format!("apply returned but check says {}", describe(&state));
            return Ok(Err((StepPhase::Verify, StepError::new(message))));
        }
        s.log(JournalEvent::ApplyDone {
            step: id.to_string(),
            ms: millis(apply_time),
        })
        .await?;
        s.step(id).outcome = StepOutcome::Applied;
        tracing::info!(step = id, ms = millis(apply_time), "step applied");
        Ok(Ok(()))
    }

    /// Records a step failure, rolls back, and builds the error.
    #[allow(clippy::too_many_arguments)] // One private call site; a struct would only rename them.
    async fn abort(
        &self,
        cx: &C,
        mut s: Session,
        applied: &[String],
        step: &dyn Step<C>,
        phase: StepPhase,
        error: StepError,
        progress: &dyn Progress,
    ) -> RunError {
        let id = step.id();
        let text = error_chain(&error);
        tracing::warn!(step = id, %phase, error = %text, "step failed, rolling back");
        {
            let r = s.step(id);
            r.outcome = StepOutcome::Failed;
            r.error = Some(text.clone());
        }
        s.report.failed_step = Some(id.to_string());
        if let Err(e) = s
            .log(JournalEvent::StepFailed {
                step: id.to_string(),
                phase,
                error: text.clone(),
            })
            .await
        {
            return e;
        }
        let past = self
            .point_of_no_return
            .as_deref()
            .filter(|p| *p != id && applied.iter().any(|a| a == p));
        if let Some(point) = past {
            let run_error = RunError::Stopped {
                step: id.to_string(),
                phase,
                point: point.to_string(),
                source: error,
                report: Box::new(s.report.clone()),
            };
            if let Err(e) = s
                .log(JournalEvent::RunAborted {
                    error: error_chain(&run_error),
                })
                .await
            {
                return e;
            }
            tracing::warn!(step = id, point, "run stopped after the point of no return");
            return run_error;
        }
        if let Err(e) = self.roll_back(cx, &mut s, applied, progress).await {
            return e;
        }
        // Failed rollbacks are in the report, which the error's message summarises.
        let run_error = RunError::StepFailed {
            step: id.to_string(),
            phase,
            source: error,
            report: Box::new(s.report.clone()),
        };
        if let Err(e) = s
            .log(JournalEvent::RunAborted {
                error: error_chain(&run_error),
            })
            .await
        {
            return e;
        }
        tracing::warn!(step = id, rolled_back = ?s.report.rollback_order, "run aborted");
        run_error
    }

    /// Rolls back `applied` (oldest first) newest first, and returns the steps whose rollback
    /// failed, newest first. `Err` only for journal failures.
    async fn roll_back(
        &self,
        cx: &C,
        s: &mut Session,
        applied: &[String],
        progress: &dyn Progress,
    ) -> Result<Vec<String>, RunError> {
        let total = applied.len() as u64;
        let mut failed = Vec::new();
        for (n, id) in applied.iter().rev().enumerate() {
            progress.update(
                ProgressUpdate::new(ROLLBACK_TASK, n as u64, Some(total), Unit::Steps)
                    .message(format!("{id}: rollback")),
            );
            let Some(step) = self.steps.iter().find(|st| st.id() == id) else {
                // Unreachable while fingerprints match; recorded rather than trusted.
                s.log(JournalEvent::RollbackFailed {
                    step: id.clone(),
                    error: "step is not in the plan".to_string(),
                })
                .await?;
                failed.push(id.clone());
                continue;
            };
            // Nothing to undo when the step says so (a step that failed before changing
            // anything); `rollback` would be a no-op by contract.
            let t = Instant::now();
            let state = step.check(cx).await;
            s.step(id).check_time += t.elapsed();
            if let Ok(StepState::Pending) = state {
                s.log(JournalEvent::RollbackSkipped { step: id.clone() })
                    .await?;
                let r = s.step(id);
                if r.outcome != StepOutcome::Failed {
                    r.outcome = StepOutcome::RolledBack;
                }
                tracing::info!(step = id, "nothing to roll back");
                continue;
            }
            s.log(JournalEvent::RollbackStart { step: id.clone() })
                .await?;
            s.report.rollback_order.push(id.clone());
            let t = Instant::now();
            let result = step.rollback(cx).await;
            let took = t.elapsed();
            s.step(id).rollback_time = Some(took);
            match result {
                Ok(()) => {
                    s.log(JournalEvent::RollbackDone {
                        step: id.clone(),
                        ms: millis(took),
                    })
                    .await?;
                    s.step(id).outcome = StepOutcome::RolledBack;
                    tracing::info!(step = id, ms = millis(took), "step rolled back");
                }
                Err(e) => {
                    let text = error_chain(&e);
                    tracing::error!(step = id, error = %text, "rollback failed, going on with older steps");
                    s.log(JournalEvent::RollbackFailed {
                        step: id.clone(),
                        error: text.clone(),
                    })
                    .await?;
                    let r = s.step(id);
                    r.outcome = StepOutcome::RollbackFailed;
                    r.rollback_error = Some(text);
                    failed.push(id.clone());
                }
            }
        }
        progress
            .update(ProgressUpdate::new(ROLLBACK_TASK, total, Some(total), Unit::Steps).finished());
        Ok(failed)
    }

    fn validate(&self) -> Result<(), RunError> {
        let mut seen = HashSet::new();
        for id in self.step_ids() {
            if !seen.insert(id) {
                return Err(RunError::DuplicateStep { id: id.to_string() });
            }
        }
        Ok(())
    }

    fn refuse_plan_change(&self, history: &History) -> Result<(), RunError> {
        match &history.plan {
            Some(recorded) if *recorded != self.fingerprint && !history.may_change_plan() => {
                Err(RunError::PlanChanged {
                    path: self.journal.clone(),
                    recorded: recorded.clone(),
                    current: self.fingerprint.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Opens a session for run `run` and journals its start.
    async fn begin(&self, journal: Journal, run: u32, kind: RunKind) -> Result<Session, RunError> {
        let mut s = Session {
            journal,
            report: self.skeleton(run, kind),
        };
        s.log(JournalEvent::RunStart {
            kind,
            plan: self.fingerprint.clone(),
            steps: self.step_ids().map(str::to_string).collect(),
        })
        .await?;
        Ok(s)
    }

    fn skeleton(&self, run: u32, kind: RunKind) -> RunReport {
        RunReport {
            journal: self.journal.clone(),
            run,
            kind,
            plan: self.fingerprint.clone(),
            steps: self
                .step_ids()
                .map(|id| StepReport {
                    id: id.to_string(),
                    outcome: StepOutcome::NotRun,
                    error: None,
                    rollback_error: None,
                    check_time: Duration::ZERO,
                    apply_time: None,
                    rollback_time: None,
                })
                .collect(),
            failed_step: None,
            rollback_order: Vec::new(),
        }
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> RunError {
        RunError::Journal {
            path: self.journal.clone(),
            action,
            source,
            report: None,
        }
    }
}

/// `Arc<S>` is a step when `S` is, so one step can sit in a plan and elsewhere.
#[async_trait]
impl<C, S> Step<C> for Arc<S>
where
    C: ?Sized + Sync,
    S: Step<C> + ?Sized,
{
    fn id(&self) -> &str {
        (**self).id()
    }

    async fn check(&self, cx: &C) -> Result<StepState, StepError> {
        (**self).check(cx).await
    }

    async fn apply(&self, cx: &C) -> Result<(), StepError> {
        (**self).apply(cx).await
    }

    async fn rollback(&self, cx: &C) -> Result<(), StepError> {
        (**self).rollback(cx).await
    }
}

fn describe(state: &StepState) -> String {
    match state {
        StepState::Pending => "pending".to_string(),
        StepState::Done => "done".to_string(),
        StepState::Partial(detail) => format!("partial ({detail})"),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_string())
}

// ---------------------------------------------------------------------------------------------
// Journal IO and history
// ---------------------------------------------------------------------------------------------

/// A run in progress: the open journal and the report so far.
struct Session {
    journal: Journal,
    report: RunReport,
}

impl Session {
    /// Appends an entry; a failure becomes [`RunError::Journal`] carrying the report so far.
    async fn log(&mut self, event: JournalEvent) -> Result<(), RunError> {
        self.journal
            .append(self.report.run, event)
            .await
            .map_err(|source| RunError::Journal {
                path: self.journal.path.clone(),
                action: "write to",
                source,
                report: Some(Box::new(self.report.clone())),
            })
    }

    fn step(&mut self, id: &str) -> &mut StepReport {
        self.report
            .step_mut(id)
            .expect("invariant: the report lists every step of the plan")
    }

    /// `(index, total)` of a step, for progress.
    fn position(&self, id: &str) -> (u64, u64) {
        let i = self
            .report
            .steps
            .iter()
            .position(|s| s.id == id)
            .unwrap_or(0);
        (i as u64, self.report.steps.len() as u64)
    }
}

/// The journal open for appending, locked.
struct Journal {
    path: PathBuf,
    file: tokio::fs::File,
}

impl Journal {
    /// Opens (creating) and locks the journal, cuts off a torn last line, and reads the history.
    async fn open(path: &Path) -> Result<(Journal, History), RunError> {
        let owned = path.to_owned();
        let (file, entries) = tokio::task::spawn_blocking(move || open_locked(&owned))
            .await
            .map_err(|e| RunError::Journal {
                path: path.to_owned(),
                action: "open",
                source: io::Error::other(e),
                report: None,
            })??;
        let history = History::build(path, &entries)?;
        Ok((
            Journal {
                path: path.to_owned(),
                file: tokio::fs::File::from_std(file),
            },
            history,
        ))
    }

    /// Appends one entry and waits until it is on disk.
    async fn append(&mut self, run: u32, event: JournalEvent) -> io::Result<()> {
        let entry = JournalEntry {
            ts: now_rfc3339(),
            run,
            event,
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line).await?;
        self.file.flush().await?;
        self.file.sync_data().await
    }
}

type NumberedEntries = Vec<(usize, JournalEntry)>;

/// How long [`open_locked`] waits for a journal lock before it says the journal is in use.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);
/// How often it tries meanwhile.
const LOCK_RETRY: Duration = Duration::from_millis(10);

fn open_locked(path: &Path) -> Result<(File, NumberedEntries), RunError> {
    let err = |action, source| RunError::Journal {
        path: path.to_owned(),
        action,
        source,
        report: None,
    };
    let existed = path.try_exists().map_err(|e| err("open", e))?;
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| err("open", e))?;
    // A process forked by another thread between our last unlock and exec holds a copy of
    // the descriptor, and with it the lock, for a moment: wait that out; a runner that really
    // holds the journal holds it far longer.
    let mut waited = Duration::ZERO;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if waited < LOCK_PATIENCE => {
                std::thread::sleep(LOCK_RETRY);
                waited += LOCK_RETRY;
            }
            Err(TryLockError::WouldBlock) => {
                return Err(RunError::JournalLocked {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(err("lock", e)),
        }
    }
    if !existed {
        // Make the new file's directory entry durable too.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("create", e))?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| err("read", e))?;
    let (entries, torn_at) = parse(path, &bytes)?;
    if let Some(cut) = torn_at {
        file.set_len(cut as u64)
            .and_then(|()| file.sync_data())
            .map_err(|e| err("repair", e))?;
    }
    Ok((file, entries))
}

fn read_entries(path: &Path) -> Result<NumberedEntries, RunError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RunError::Journal {
                path: path.to_owned(),
                action: "read",
                source,
                report: None,
            });
        }
    };
    Ok(parse(path, &bytes)?.0)
}

/// Parses journal bytes into numbered entries, and the offset of a torn (unterminated) last
/// line when there is one.
fn parse(path: &Path, bytes: &[u8]) -> Result<(NumberedEntries, Option<usize>), RunError> {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut line = 0;
    while start < bytes.len() {
        line += 1;
        let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') else {
            tracing::warn!(
                journal = %path.display(),
                line,
                bytes = bytes.len() - start,
                "ignoring the journal's unterminated last line (a run was killed while writing it)"
            );
            return Ok((entries, Some(start)));
        };
        let text = &bytes[start..start + len];
        start += len + 1;
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry = serde_json::from_slice(text).map_err(|e| RunError::CorruptJournal {
            path: path.to_owned(),
            line,
            reason: e.to_string(),
        })?;
        entries.push((line, entry));
    }
    Ok((entries, None))
}

/// What a journal says, as far as the next run cares.
#[derive(Debug, Default)]
struct History {
    /// The number of the last run (0 when none).
    last_run: u32,
    /// The plan of the current record (the last run's plan).
    plan: Option<String>,
    /// Steps of the current record applied and not rolled back, oldest first (by last apply).
    applied: Vec<String>,
    /// The last run.
    last: Option<LastRun>,
}

#[derive(Debug)]
struct LastRun {
    kind: RunKind,
    /// `Some(true)` finished, `Some(false)` aborted, `None` killed (or still running).
    ended: Option<bool>,
    /// A step whose `apply_start` has no `apply_done` or `step_failed` yet.
    open_apply: Option<String>,
}

impl History {
    fn build(path: &Path, entries: &[(usize, JournalEntry)]) -> Result<History, RunError> {
        let mut h = History::default();
        for (line, entry) in entries {
            let corrupt = |reason: String| RunError::CorruptJournal {
                path: path.to_owned(),
                line: *line,
                reason,
            };
            if let JournalEvent::RunStart { kind, plan, .. } = &entry.event {
                if entry.run <= h.last_run {
                    return Err(corrupt(format!(
                        "run {} starts after run {}",
                        entry.run, h.last_run
                    )));
                }
                if h.plan.as_deref() != Some(plan.as_str()) {
                    h.applied.clear();
                    h.plan = Some(plan.clone());
                }
                h.last_run = entry.run;
                h.last = Some(LastRun {
                    kind: *kind,
                    ended: None,
                    open_apply: None,
                });
                continue;
            }
            let Some(last) = h.last.as_mut() else {
                return Err(corrupt("entry before any run_start".to_string()));
            };
            if entry.run != h.last_run {
                return Err(corrupt(format!(
                    "entry of run {} inside run {}",
                    entry.run, h.last_run
                )));
            }
            if last.ended.is_some() {
                return Err(corrupt(format!("entry after run {} ended", h.last_run)));
            }
            match &entry.event {
                JournalEvent::ApplyStart { step } => {
                    h.applied.retain(|a| a != step);
                    h.applied.push(step.clone());
                    last.open_apply = Some(step.clone());
                }
                JournalEvent::ApplyDone { .. } | JournalEvent::StepFailed { .. } => {
                    last.open_apply = None;
                }
                JournalEvent::RollbackDone { step, .. }
                | JournalEvent::RollbackSkipped { step } => {
                    h.applied.retain(|a| a != step);
                }
                JournalEvent::RunFinished => last.ended = Some(true),
                JournalEvent::RunAborted { .. } => last.ended = Some(false),
                _ => {}
            }
        }
        Ok(h)
    }

    /// Whether a run of a different plan may start: the last run finished successfully, or no
    /// step of the recorded plan is still applied.
    fn may_change_plan(&self) -> bool {
        let finished = self
            .last
            .as_ref()
            .is_some_and(|l| l.kind == RunKind::Apply && l.ended == Some(true));
        finished || self.applied.is_empty()
    }

    /// The step the last run was applying when it was killed.
    fn interrupted(&self) -> Option<&str> {
        self.last
            .as_ref()
            .filter(|l| l.ended.is_none())
            .and_then(|l| l.open_apply.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::{NoProgress, RecordingProgress};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fault {
        /// `apply` errs without changing anything.
        ApplyErr,
        /// `apply` writes half the state and returns `Ok`.
        ApplyPartial,
        /// `apply` writes half the state and never returns (a kill, when the run is dropped).
        ApplyHang,
        /// `rollback` errs.
        RollbackErr,
    }

    /// Steps whose state is a file `<dir>/<id>` holding `done` or `partial`, recording every
    /// apply and rollback into a shared log.
    #[derive(Debug, Default)]
    struct Fixture {
        dir: Option<tempfile::TempDir>,
        calls: Arc<Mutex<Vec<String>>>,
        faults: Arc<Mutex<HashMap<String, Vec<Fault>>>>,
        hung: Arc<tokio::sync::Notify>,
    }

    #[derive(Debug)]
    struct FakeStep {
        id: String,
        dir: PathBuf,
        calls: Arc<Mutex<Vec<String>>>,
        faults: Arc<Mutex<HashMap<String, Vec<Fault>>>>,
        hung: Arc<tokio::sync::Notify>,
    }

    impl FakeStep {
        fn has(&self, fault: Fault) -> bool {
            self.faults
                .lock()
                .unwrap()
                .get(&self.id)
                .is_some_and(|f| f.contains(&fault))
        }
        fn file(&self) -> PathBuf {
            self.dir.join(&self.id)
        }
        fn record(&self, what: &str) {
            self.calls
                .lock()
                .unwrap()
                .push(format!("{what} {}", self.id));
        }
    }

    #[async_trait]
    impl Step<()> for FakeStep {
        fn id(&self) -> &str {
            &self.id
        }
        async fn check(&self, _: &()) -> Result<StepState, StepError> {
            match std::fs::read_to_string(self.file()) {
                Ok(s) if s == "done" => Ok(StepState::Done),
                Ok(s) => Ok(StepState::Partial(format!("state file says {s}"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StepState::Pending),
                Err(e) => Err(StepError::with_source("cannot read state", e)),
            }
        }
        async fn apply(&self, _: &()) -> Result<(), StepError> {
            self.record("apply");
            if self.has(Fault::ApplyErr) {
                return Err(StepError::with_source(
                    "injected failure",
                    io::Error::other("disk full"),
                ));
            }
            if self.has(Fault::ApplyPartial) || self.has(Fault::ApplyHang) {
                std::fs::write(self.file(), "partial").unwrap();
                if self.has(Fault::ApplyHang) {
                    self.hung.notify_one();
                    std::future::pending::<()>().await;
                }
                return Ok(());
            }
            std::fs::write(self.file(), "done").unwrap();
            Ok(())
        }
        async fn rollback(&self, _: &()) -> Result<(), StepError> {
            self.record("rollback");
            if self.has(Fault::RollbackErr) {
                return Err(StepError::new("injected rollback failure"));
            }
            let _ = std::fs::remove_file(self.file());
            Ok(())
        }
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: Some(tempfile::tempdir().unwrap()),
                ..Fixture::default()
            }
        }
        fn dir(&self) -> &Path {
            self.dir.as_ref().unwrap().path()
        }
        fn journal(&self) -> PathBuf {
            self.dir().join("journal.jsonl")
        }
        fn runner(&self, ids: &[&str]) -> Runner<()> {
            let steps = ids
                .iter()
                .map(|id| {
                    Box::new(FakeStep {
                        id: (*id).to_string(),
                        dir: self.dir().to_owned(),
                        calls: self.calls.clone(),
                        faults: self.faults.clone(),
                        hung: self.hung.clone(),
                    }) as Box<dyn Step<()>>
                })
                .collect();
            Runner::new(self.journal(), steps)
        }
        fn fault(&self, id: &str, fault: Fault) {
            self.faults
                .lock()
                .unwrap()
                .entry(id.to_string())
                .or_default()
                .push(fault);
        }
        fn clear_faults(&self) {
            self.faults.lock().unwrap().clear();
        }
        /// The calls since the last time this was asked.
        fn take_calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
        fn state(&self, id: &str) -> Option<String> {
            std::fs::read_to_string(self.dir().join(id)).ok()
        }
        /// The journal as `run event step` lines.
        fn story(&self) -> Vec<String> {
            read_journal(&self.journal())
                .unwrap()
                .iter()
                .map(|e| {
                    let (name, step) = match &e.event {
                        JournalEvent::RunStart { kind, .. } => (format!("start {kind:?}"), ""),
                        JournalEvent::Check { step, state } => {
                            (format!("check {}", describe(state)), step.as_str())
                        }
                        JournalEvent::ApplyStart { step } => ("apply_start".into(), step.as_str()),
                        JournalEvent::ApplyDone { step, .. } => {
                            ("apply_done".into(), step.as_str())
                        }
                        JournalEvent::StepFailed { step, .. } => ("failed".into(), step.as_str()),
                        JournalEvent::RollbackStart { step } => {
                            ("rollback_start".into(), step.as_str())
                        }
                        JournalEvent::RollbackDone { step, .. } => {
                            ("rollback_done".into(), step.as_str())
                        }
                        JournalEvent::RollbackSkipped { step } => {
                            ("rollback_skipped".into(), step.as_str())
                        }
                        JournalEvent::RollbackFailed { step, .. } => {
                            ("rollback_failed".into(), step.as_str())
                        }
                        JournalEvent::RunFinished => ("finished".into(), ""),
                        JournalEvent::RunAborted { .. } => ("aborted".into(), ""),
                    };
                    format!("{} {name} {step}", e.run).trim_end().to_string()
                })
                .collect()
        }
    }

    /// Runs until a hanging step blocks, then drops the run: what a kill leaves behind.
    async fn run_until_killed(fx: &Fixture, runner: &Runner<()>) {
        tokio::select! {
            r = runner.run(&(), &NoProgress) => panic!("the run should hang, it ended: {r:?}"),
            () = fx.hung.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => panic!("the run did not hang"),
        }
    }

    fn outcomes(report: &RunReport) -> Vec<(&str, StepOutcome)> {
        report
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.outcome))
            .collect()
    }

    #[tokio::test]
    async fn second_run_applies_nothing() {
        let fx = Fixture::new();
        let runner = fx.runner(&["a", "b", "c"]);
        let progress = RecordingProgress::default();
        let report = runner.run(&(), &progress).await.unwrap();
        assert_eq!(report.ids_with(StepOutcome::Applied), ["a", "b", "c"]);
        assert_eq!(fx.take_calls(), ["apply a", "apply b", "apply c"]);
        let last = progress.updates().pop().unwrap();
        assert!(last.finished && last.done == 3 && last.total == Some(3));
        assert_eq!(last.unit, Unit::Steps);

        let report = runner.run(&(), &NoProgress).await.unwrap();
        assert_eq!(report.run, 2);
        assert_eq!(report.ids_with(StepOutcome::Skipped), ["a", "b", "c"]);
        assert!(fx.take_calls().is_empty());
        let story = fx.story();
        assert_eq!(
            story[story.len() - 5..],
            [
                "2 start Apply",
                "2 check done a",
                "2 check done b",
                "2 check done c",
                "2 finished"
            ]
        );
    }

    #[tokio::test]
    async fn failure_at_step_k_rolls_back_earlier_steps_newest_first() {
        let fx = Fixture::new();
        fx.fault("c", Fault::ApplyErr);
        let runner = fx.runner(&["a", "b", "c", "d"]);
        let err = runner.run(&(), &NoProgress).await.unwrap_err();
        let RunError::StepFailed { step, phase, .. } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!((step.as_str(), *phase), ("c", StepPhase::Apply));
        assert_eq!(err.to_string(), "step `c` failed during apply");
        assert_eq!(
            fx.take_calls(),
            ["apply a", "apply b", "apply c", "rollback b", "rollback a"]
        );
        let report = err.report().unwrap();
        assert_eq!(report.rollback_order, ["b", "a"]);
        assert_eq!(report.failed_step.as_deref(), Some("c"));
        assert_eq!(
            outcomes(report),
            [
                ("a", StepOutcome::RolledBack),
                ("b", StepOutcome::RolledBack),
                ("c", StepOutcome::Failed),
                ("d", StepOutcome::NotRun)
            ]
        );
        assert_eq!(
            report.step("c").unwrap().error.as_deref(),
            Some("injected failure: disk full")
        );
        assert_eq!(fx.state("a"), None);
        assert_eq!(fx.state("b"), None);
        let story = fx.story();
        assert_eq!(
            story[story.len() - 8..],
            [
                "1 apply_start c",
                "1 failed c",
                "1 rollback_skipped c",
                "1 rollback_start b",
                "1 rollback_done b",
                "1 rollback_start a",
                "1 rollback_done a",
                "1 aborted"
            ]
        );
    }

    #[tokio::test]
    async fn a_failure_after_the_point_of_no_return_rolls_nothing_back() {
        let fx = Fixture::new();
        fx.fault("c", Fault::ApplyErr);
        let runner = fx
            .runner(&["a", "b", "c", "d"])
            .with_point_of_no_return("b");
        assert!(!runner.past_point_of_no_return().await.unwrap());
        let err = runner.run(&(), &NoProgress).await.unwrap_err();
        assert!(matches!(err, RunError::Stopped { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "step `c` failed during apply after the point of no return `b`; nothing was rolled back"
        );
        assert!(err.report().unwrap().rollback_order.is_empty());
        assert_eq!(fx.take_calls(), ["apply a", "apply b", "apply c"]);
        assert_eq!(fx.state("a").as_deref(), Some("done"));
        assert_eq!(fx.state("b").as_deref(), Some("done"));
        assert!(runner.past_point_of_no_return().await.unwrap());

        // The next run goes forward from where it stopped.
        fx.clear_faults();
        let report = runner.run(&(), &NoProgress).await.unwrap();
        assert_eq!(report.ids_with(StepOutcome::Skipped), ["a", "b"]);
        assert_eq!(report.ids_with(StepOutcome::Applied), ["c", "d"]);
        // Undoing it all is still possible, when the caller decides to.
        let report = runner.rollback_all(&(), &NoProgress).await.unwrap();
        assert_eq!(report.rollback_order, ["d", "c", "b", "a"]);
        assert!(!runner.past_point_of_no_return().await.unwrap());
    }

    #[tokio::test]
    async fn a_failure_of_the_point_of_no_return_itself_still_rolls_back() {
        let fx = Fixture::new();
        fx.fault("b", Fault::ApplyErr);
        let runner = fx.runner(&["a", "b", "c"]).with_point_of_no_return("b");
        let err = runner.run(&(), &NoProgress).await.unwrap_err();
        assert!(matches!(err, RunError::StepFailed { .. }), "{err:?}");
        assert_eq!(fx.take_calls(), ["apply a", "apply b", "rollback a"]);
    }

    #[tokio::test]
    async fn apply_that_does_not_reach_done_fails_and_is_undone() {
        let fx = Fixture::new();
        fx.fault("b", Fault::ApplyPartial);
        let runner = fx.runner(&["a", "b", "c"]);
        let err = runner.run(&(), &NoProgress).await.unwrap_err();
        let report = err.report().unwrap();
        assert_eq!(
            report.step("b").unwrap().error.as_deref(),
            Some("apply returned but check says partial (state file says partial)")
        );
        // The half-applied step is undone too, before the older one.
        assert_eq!(report.rollback_order, ["b", "a"]);
        assert_eq!(
            fx.take_calls(),
            ["apply a", "apply b", "rollback b", "rollback a"]
        );
        assert_eq!(fx.state("b"), None);
    }

    #[tokio::test]
    async fn rollback_failures_are_reported_and_older_steps_still_roll_back() {
        let fx = Fixture::new();
        fx.fault("d", Fault::ApplyErr);
        fx.fault("b", Fault::RollbackErr);
        let runner = fx.runner(&["a", "b", "c", "d"]);
        let err = runner.run(&(), &NoProgress).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "step `d` failed during apply, and rollback failed for `b`"
        );
        assert_eq!(
            fx.take_calls(),
            [
                "apply a",
                "apply b",
                "apply c",
                "apply d",
                "rollback c",
                "rollback b",
                "rollback a"
            ]
        );
        let report = err.report().unwrap();
        assert_eq!(report.rollback_order, ["c", "b", "a"]);
        assert_eq!(report.ids_with(StepOutcome::RollbackFailed), ["b"]);
        assert_eq!(
            report.step("b").unwrap().rollback_error.as_deref(),
            Some("injected rollback failure")
        );
        assert_eq!(report.ids_with(StepOutcome::RolledBack), ["a", "c"]);

        // The journal knows only `b` is left; an explicit rollback retries just that.
        let plan = runner.plan(&()).await.unwrap();
        assert_eq!(plan.applied, ["b"]);
        let err = runner.rollback_all(&(), &NoProgress).await.unwrap_err();
        assert!(matches!(&err, RunError::RollbackFailed { steps, .. } if steps == &["b"]));
        assert_eq!(fx.take_calls(), ["rollback b"]);
        fx.clear_faults();
        let report = runner.rollback_all(&(), &NoProgress).await.unwrap();
        assert_eq!(report.rollback_order, ["b"]);
        assert_eq!(fx.take_calls(), ["rollback b"]);
        assert!(runner.plan(&()).await.unwrap().applied.is_empty());
    }

    #[tokio::test]
    async fn a_resumed_run_rolls_back_what_the_killed_run_applied() {
        let fx = Fixture::new();
        fx.fault("c", Fault::ApplyHang);
        let runner = fx.runner(&["a", "b", "c", "d"]);
        run_until_killed(&fx, &runner).await;
        assert_eq!(fx.take_calls(), ["apply a", "apply b", "apply c"]);
        assert_eq!(
            runner.plan(&()).await.unwrap().interrupted.as_deref(),
            Some("c")
        );

        fx.clear_faults();
        fx.fault("d", Fault::ApplyErr);
        let err = runner.run(&(), &NoProgress).await.unwrap_err();
        assert_eq!(
            fx.take_calls(),
            [
                "apply c",
                "apply d",
                "rollback c",
                "rollback b",
                "rollback a"
            ]
        );
        let report = err.report().unwrap();
        assert_eq!(report.run, 2);
        assert_eq!(
            outcomes(report),
            [
                ("a", StepOutcome::RolledBack),
                ("b", StepOutcome::RolledBack),
                ("c", StepOutcome::RolledBack),
                ("d", StepOutcome::Failed)
            ]
        );
    }

    #[tokio::test]
    async fn plan_change_is_refused_while_a_run_is_half_done() {
        let fx = Fixture::new();
        fx.fault("b", Fault::ApplyHang);
        run_until_killed(&fx, &fx.runner(&["a", "b", "c"])).await;
        fx.clear_faults();

        let changed = fx.runner(&["a", "c"]);
        let err = changed.run(&(), &NoProgress).await.unwrap_err();
        let RunError::PlanChanged {
            path,
            recorded,
            current,
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(path, &fx.journal());
        assert_eq!(recorded, &plan_fingerprint(["a", "b", "c"]));
        assert_eq!(current, changed.fingerprint());
        assert!(matches!(
            changed.plan(&()).await,
            Err(RunError::PlanChanged { .. })
        ));
        assert!(matches!(
            changed.rollback_all(&(), &NoProgress).await,
            Err(RunError::PlanChanged { .. })
        ));
        fx.take_calls();

        // The old plan resumes; once it has finished, a new plan may start.
        let report = fx
            .runner(&["a", "b", "c"])
            .run(&(), &NoProgress)
            .await
            .unwrap();
        assert_eq!(
            outcomes(&report)[..2],
            [("a", StepOutcome::Skipped), ("b", StepOutcome::Applied)]
        );
        let next = fx.runner(&["a", "b", "c", "d"]);
        next.run(&(), &NoProgress).await.unwrap();
        assert_eq!(fx.take_calls(), ["apply b", "apply c", "apply d"]);
        // The new record holds only what the new plan applied.
        assert_eq!(next.plan(&()).await.unwrap().applied, ["d"]);
    }

    #[tokio::test]
    async fn plan_change_is_allowed_after_a_full_rollback() {
        let fx = Fixture::new();
        fx.fault("b", Fault::ApplyErr);
        fx.runner(&["a", "b"])
            .run(&(), &NoProgress)
            .await
            .unwrap_err();
        fx.clear_faults();
        fx.take_calls();
        let report = fx.runner(&["a", "x"]).run(&(), &NoProgress).await.unwrap();
        assert_eq!(report.ids_with(StepOutcome::Applied), ["a", "x"]);
    }

    #[tokio::test]
    async fn truncated_last_line_is_tolerated() {
        let fx = Fixture::new();
        fx.fault("b", Fault::ApplyHang);
        let runner = fx.runner(&["a", "b", "c"]);
        run_until_killed(&fx, &runner).await;
        fx.clear_faults();
        let before = std::fs::read_to_string(fx.journal()).unwrap();
        let torn = r#"{"ts":"2026-01-01T00:00:00Z","run":1,"event":"apply_d"#;
        std::fs::write(fx.journal(), format!("{before}{torn}")).unwrap();
        assert_eq!(
            read_journal(&fx.journal()).unwrap().len(),
            before.lines().count()
        );

        let report = runner.run(&(), &NoProgress).await.unwrap();
        assert_eq!(report.ids_with(StepOutcome::Applied), ["b", "c"]);
        let after = std::fs::read_to_string(fx.journal()).unwrap();
        assert!(after.starts_with(&before) && !after.contains(torn));
        assert!(after.ends_with('\n'));
    }

    #[tokio::test]
    async fn corrupt_line_is_a_typed_error_naming_file_and_line() {
        let fx = Fixture::new();
        let runner = fx.runner(&["a", "b"]);
        runner.run(&(), &NoProgress).await.unwrap();
        let text = std::fs::read_to_string(fx.journal()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "not json";
        std::fs::write(fx.journal(), lines.join("\n") + "\n").unwrap();
        let err = runner.run(&(), &NoProgress).await.unwrap_err();
        let RunError::CorruptJournal { path, line, .. } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!((path, *line), (&fx.journal(), 3));
        assert!(
            err.to_string()
                .contains("journal.jsonl is corrupt at line 3")
        );

        // Entries out of order are corrupt too.
        std::fs::write(fx.journal(), &text[text.find('\n').unwrap() + 1..]).unwrap();
        let err = read_journal(&fx.journal()).unwrap_err();
        assert!(
            matches!(err, RunError::CorruptJournal { line: 1, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn rollback_all_undoes_everything_newest_first() {
        let fx = Fixture::new();
        let runner = fx.runner(&["a", "b", "c"]);
        runner.run(&(), &NoProgress).await.unwrap();
        fx.take_calls();
        let progress = RecordingProgress::default();
        let report = runner.rollback_all(&(), &progress).await.unwrap();
        assert_eq!(report.kind, RunKind::Rollback);
        assert_eq!(report.rollback_order, ["c", "b", "a"]);
        assert_eq!(fx.take_calls(), ["rollback c", "rollback b", "rollback a"]);
        assert!(progress.updates().iter().all(|u| u.task == ROLLBACK_TASK));

        let again = runner.rollback_all(&(), &NoProgress).await.unwrap();
        assert_eq!(again.run, 0);
        assert!(fx.take_calls().is_empty());
        let report = runner.run(&(), &NoProgress).await.unwrap();
        assert_eq!(report.ids_with(StepOutcome::Applied), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn dry_run_reports_what_would_apply_and_writes_nothing() {
        let fx = Fixture::new();
        std::fs::write(fx.dir().join("a"), "done").unwrap();
        std::fs::write(fx.dir().join("b"), "half").unwrap();
        let plan = fx.runner(&["a", "b", "c"]).plan(&()).await.unwrap();
        assert_eq!(plan.would_apply(), ["b", "c"]);
        assert_eq!(
            plan.steps[1].state,
            Some(StepState::Partial("state file says half".into()))
        );
        assert!(fx.take_calls().is_empty());
        assert!(!fx.journal().exists());
    }

    #[test]
    fn fingerprint_is_stable_and_order_sensitive() {
        assert_eq!(plan_fingerprint([]), "fnv1a64:cbf29ce484222325");
        // Known answer, computed independently (a few lines of Python over the same bytes).
        assert_eq!(plan_fingerprint(["a", "b"]), "fnv1a64:41c80da72d0aec94");
        assert_ne!(plan_fingerprint(["a", "b"]), plan_fingerprint(["b", "a"]));
        assert_ne!(plan_fingerprint(["ab", "c"]), plan_fingerprint(["a", "bc"]));
    }

    #[tokio::test]
    async fn duplicate_step_ids_are_refused() {
        let fx = Fixture::new();
        let err = fx
            .runner(&["a", "b", "a"])
            .run(&(), &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(&err, RunError::DuplicateStep { id } if id == "a"));
        assert!(fx.take_calls().is_empty());
    }

    #[tokio::test]
    async fn a_journal_in_use_is_refused() {
        let fx = Fixture::new();
        let held = File::create(fx.journal()).unwrap();
        held.lock().unwrap();
        let err = fx.runner(&["a"]).run(&(), &NoProgress).await.unwrap_err();
        assert!(matches!(err, RunError::JournalLocked { .. }), "{err}");
        drop(held);
        fx.runner(&["a"]).run(&(), &NoProgress).await.unwrap();
    }

    #[test]
    fn runs_are_send() {
        fn is_send<T: Send>(_: &T) {}
        let runner = Runner::<()>::new("j", Vec::new());
        is_send(&runner.run(&(), &NoProgress));
        is_send(&runner.rollback_all(&(), &NoProgress));
        is_send(&runner.plan(&()));
    }

    #[test]
    fn journal_entries_are_flat_json() {
        let entry = JournalEntry {
            ts: "2026-01-01T00:00:00Z".into(),
            run: 2,
            event: JournalEvent::ApplyDone {
                step: "db.backup".into(),
                ms: 7,
            },
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            text,
            r#"{"ts":"2026-01-01T00:00:00Z","run":2,"event":"apply_done","step":"db.backup","ms":7}"#
        );
        assert_eq!(serde_json::from_str::<JournalEntry>(&text).unwrap(), entry);
        let ts = now_rfc3339();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
    }
}
