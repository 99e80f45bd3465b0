//! The crate's error type.

use std::path::PathBuf;

use cs_core::{BoxError, HostError};

/// Errors from cs-agent.
///
/// Messages never carry the keystore passphrase or any other secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host operation (command, file read or write) failed.
    #[error("{what}")]
    Host {
        /// What was being done (`read agent.properties`, `install cloudstack-agent`).
        what: String,
        /// The cause.
        #[source]
        source: HostError,
    },
    /// `agent.properties` text is not valid Java properties syntax.
    #[error("line {line}: {reason}")]
    Syntax {
        /// The 1-based line where the logical line starts.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A key's value does not parse as the type the agent reads it as.
    #[error("`{key}` is not a valid {expected}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The expected type (`integer`, `boolean`).
        expected: &'static str,
    },
    /// A command printed something this crate cannot understand.
    #[error("{host}: unexpected output from `{what}`: {detail}")]
    Unexpected {
        /// Host name.
        host: String,
        /// The command or file.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// Neither `dpkg-query` nor `rpm` is on the host.
    #[error("{host}: no supported package manager (dpkg or rpm) found")]
    NoPackageManager {
        /// Host name.
        host: String,
    },
    /// A package command exited non-zero.
    #[error("{host}: `{cmd}` failed with exit code {code}: {stderr}")]
    Package {
        /// Host name.
        host: String,
        /// The command (as `Cmd` prints it).
        cmd: String,
        /// Exit code.
        code: i32,
        /// The end of its standard error.
        stderr: String,
    },
    /// A file the refresh needs is missing or unusable.
    #[error("{host}: {}: {reason}", path.display())]
    File {
        /// Host name.
        host: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A collaborator the orchestrator wired in (host status, maintenance, repository switch)
    /// failed.
    #[error("{what}")]
    Collaborator {
        /// What was asked.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A journal could not be read or written.
    #[error("journal {}: {what}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// A host's refresh failed; the runner rolled back what it had applied. The run report
    /// is inside the source ([`cs_core::RunError::report`]).
    #[error("{host}: refresh failed")]
    Refresh {
        /// Host name.
        host: String,
        /// The runner's error, with its report.
        #[source]
        source: Box<cs_core::RunError>,
    },
    /// Input given by the caller is invalid (a hosts file line, an option).
    #[error("{0}")]
    Input(String),
}

impl Error {
    pub(crate) fn host(what: impl Into<String>, source: HostError) -> Self {
        Error::Host {
            what: what.into(),
            source,
        }
    }
}

/// Result alias for cs-agent.
pub type Result<T, E = Error> = std::result::Result<T, E>;
