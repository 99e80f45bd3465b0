//! The crate's error type.

use std::path::PathBuf;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong while reading scripts or rehearsing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A package or archive is not what it should be.
    #[error("{what}: {detail}")]
    Package {
        /// The package or archive member.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A script the plan needs is not among the scripts read.
    #[error("script `META-INF/db/{name}` is missing from {source_name}")]
    MissingScript {
        /// The script name under `META-INF/db/`.
        name: String,
        /// Where the scripts were read from.
        source_name: String,
    },
    /// The rehearsal's database cannot be reached or set up.
    #[error("database {what} at {addr}: {source}")]
    Database {
        /// What was being done.
        what: String,
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A setting is not usable.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The setting.
        what: String,
        /// Why.
        detail: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn package(what: impl Into<String>, detail: impl ToString) -> Self {
        Error::Package {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
