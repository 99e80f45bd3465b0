//! The crate's error type.

use cs_core::{BoxError, CsVersion};

/// Errors from planning an upgrade, reading a live schema and watching a migration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database is at a newer version than the target: CloudStack cannot downgrade
    /// (`Database version <db> is higher than management software version <code>`).
    #[error("database version {db} is newer than the target {target}: CloudStack cannot downgrade")]
    DatabaseNewer {
        /// The database's version.
        db: CsVersion,
        /// The requested target.
        target: CsVersion,
    },
    /// The database could not be reached.
    #[error("cannot connect to database at {addr}")]
    Connect {
        /// `host:port` (never the password).
        addr: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A query failed.
    #[error("query failed: {what}")]
    Query {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The schema is not what CloudStack leaves (no `version` table, a version that does not
    /// parse).
    #[error("unexpected schema: {0}")]
    Schema(String),
    /// Reading the management server's log through a host failed.
    #[error("cannot read {path} on {host}")]
    Log {
        /// The host's name.
        host: String,
        /// The log file.
        path: String,
        /// The cause.
        #[source]
        source: Box<cs_core::HostError>,
    },
    /// A blocking database task panicked or was cancelled.
    #[error("database task did not finish")]
    Task(#[source] BoxError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
