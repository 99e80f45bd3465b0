//! Idempotent, reversible steps. The [`Runner`](crate::Runner) that applies them lives in
//! `runner.rs`.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a step's `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
#[non_exhaustive]
pub enum StepState {
    /// Nothing of the step is applied.
    Pending,
    /// The step is fully applied.
    Done,
    /// Part of the step is applied (say which part); `apply` must finish it.
    Partial(String),
}

/// A step failed, or could not tell its state.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// What went wrong, in the caller's terms.
    pub message: String,
    /// The cause.
    #[source]
    pub source: Option<crate::BoxError>,
}

impl StepError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a cause.
    pub fn with_source(message: impl Into<String>, source: impl Into<crate::BoxError>) -> Self {
        StepError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl From<crate::HostError> for StepError {
    fn from(e: crate::HostError) -> Self {
        StepError::with_source("host operation failed", e)
    }
}

/// One idempotent, reversible unit of work over a context `C` (a host, a database, the whole
/// upgrade).
///
/// # Contract
/// * `check` reads state only; it never changes anything.
/// * `apply` brings `check` to [`StepState::Done`]; it is safe to repeat after a partial
///   failure or a crash.
/// * `rollback` undoes `apply`, and is a no-op when `check` says [`StepState::Pending`].
#[async_trait]
pub trait Step<C: ?Sized + Sync>: Send + Sync + fmt::Debug {
    /// Stable id, recorded in journals and reports (`backup.databases`).
    fn id(&self) -> &str;

    /// Reads the state.
    ///
    /// # Errors
    /// [`StepError`] when the state cannot be read.
    async fn check(&self, cx: &C) -> Result<StepState, StepError>;

    /// Applies the step.
    ///
    /// # Errors
    /// [`StepError`] when the step fails; it may be partly applied.
    async fn apply(&self, cx: &C) -> Result<(), StepError>;

    /// Undoes the step.
    ///
    /// # Errors
    /// [`StepError`] when the undo fails.
    async fn rollback(&self, cx: &C) -> Result<(), StepError>;
}
