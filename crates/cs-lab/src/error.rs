//! The lab's error type.

/// Errors from starting or driving lab servers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A program the lab needs is not installed.
    #[error(
        "`{binary}` not found: install the Debian package `{package}` (scripts/install-deps does)"
    )]
    MissingBinary {
        /// The program.
        binary: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A server or tool failed to start.
    #[error("cannot start {what}: {detail}")]
    Start {
        /// What was being started.
        what: String,
        /// What it said (the end of its log).
        detail: String,
    },
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Something did not become ready in time.
    #[error("{what} timed out")]
    Timeout {
        /// What was awaited.
        what: String,
    },
    /// A database statement failed.
    #[error("database: {what}")]
    Database {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl LabError {
    /// An [`LabError::Io`] with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result alias for the lab.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
