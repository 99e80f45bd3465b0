//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

use cs_core::{BoxError, HostError};

/// One thing wrong with a backup: a file or a table and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// What it is about: a file relative to the backup directory (`2-cloud.event.00001.sql`),
    /// or a table (`cloud.event`).
    pub subject: String,
    /// What is wrong (`sha256 differs from the manifest`).
    pub message: String,
}

impl Problem {
    pub(crate) fn new(subject: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            subject: subject.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// Formats the first problem and how many more there are.
fn summary(problems: &[Problem]) -> String {
    match problems {
        [] => "no details".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

/// Errors from backup, verify, restore and config bundles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database server could not be reached or refused the login.
    #[error("cannot connect to the database at {addr} as `{user}`")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The user.
        user: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The database user lacks a privilege the operation needs.
    #[error("the database user `{user}` lacks a privilege needed to {what}")]
    Privilege {
        /// The user.
        user: String,
        /// What was being done (`create the scratch schema cloud__restore_20250101T120000`).
        what: String,
        /// The server's refusal.
        #[source]
        source: BoxError,
    },
    /// A database statement failed.
    #[error("database error while trying to {what}")]
    Database {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A local file operation failed (disk full, permission, missing directory).
    #[error("cannot {op} {}", path.display())]
    Io {
        /// The operation (`write`, `create`, `read`, …).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An operation on a [`cs_core::Host`] failed.
    #[error("{what} failed")]
    Host {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: HostError,
    },
    /// The dump program failed.
    #[error("`{program}` failed dumping {databases} (exit code {code}): {stderr}")]
    Dump {
        /// The program (`mariadb-dump`).
        program: String,
        /// The schemas, comma separated.
        databases: String,
        /// Its exit code.
        code: i32,
        /// The end of its standard error (never holds the password: it is in an option file).
        stderr: String,
    },
    /// The directory holds no manifest, so it is not a complete backup (it may be one that was
    /// interrupted).
    #[error("{} is not a complete backup: manifest.json is missing (the backup was interrupted or never finished)", dir.display())]
    Incomplete {
        /// The directory.
        dir: PathBuf,
    },
    /// The manifest cannot be read or makes no sense.
    #[error("bad manifest {}: {reason}", path.display())]
    BadManifest {
        /// The manifest's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Files or tables differ from the manifest.
    #[error("backup {} failed verification: {}", dir.display(), summary(problems))]
    Verify {
        /// The backup directory.
        dir: PathBuf,
        /// Everything found wrong.
        problems: Vec<Problem>,
    },
    /// The output directory exists and is not empty.
    #[error("{} already exists and is not empty; backups are never written over", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The options or the input make no sense.
    #[error("invalid input: {what}")]
    Invalid {
        /// What is wrong.
        what: String,
    },
    /// A dump file could not be parsed.
    #[error("cannot parse {file}: {reason}")]
    Parse {
        /// The file, relative to the backup directory.
        file: String,
        /// What is wrong, with the statement number.
        reason: String,
    },
    /// Schema objects (tables, routines, triggers, events, views) changed while the backup ran.
    #[error("schema objects changed during the backup ({what}); run it again in a quiet window")]
    Changed {
        /// What changed.
        what: String,
    },
    /// A restore failed; `live_untouched` says whether the live schemas are as they were.
    #[error("restore failed while trying to {stage}; {}", if *live_untouched { "the live schemas are untouched" } else { "the live schemas may be partly replaced: see the parking schemas" })]
    Restore {
        /// The stage that failed (`load into scratch schemas`, `swap tables`).
        stage: String,
        /// Whether the live schemas are unchanged.
        live_untouched: bool,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// A config bundle names something its restore must not do: a path outside the roots it
    /// is restored to, a setuid/setgid or world-writable mode, a link leaving the roots, or a
    /// write through a symbolic link. Nothing was written.
    #[error("config bundle entry `{path}` refused: {reason}; nothing was written")]
    UnsafeBundle {
        /// The entry's path, as the bundle names it.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot window (while `FLUSH TABLES WITH READ LOCK` holds every write of the
    /// cloud) ran over [`crate::BackupOptions::snapshot_window`]: the lock was released and
    /// the backup abandoned.
    #[error("the snapshot window ran over its {} s limit while the global read lock held the cloud's writes: {released}; the backup was abandoned", limit.as_secs_f32())]
    SnapshotWindow {
        /// The limit.
        limit: std::time::Duration,
        /// How the lock was released.
        released: String,
        /// What the backup was stuck in, when it ended with an error of its own.
        #[source]
        source: Option<Box<Error>>,
    },
    /// A manifest field names something a restore or verify must not use: a path leaving the
    /// backup directory or not listed (and hashed) in `files`, or a schema, table, charset or
    /// collation name outside its grammar. Refused before any file is read or statement run.
    #[error("manifest {} refused: `{field}` {reason}; nothing was read or run", path.display())]
    UnsafeManifest {
        /// The manifest's path.
        path: PathBuf,
        /// The field, as a JSON path (`schemas[0].tables[3].files[1]`).
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A statement of a dump file names a schema the restore does not load into (a live or a
    /// system schema); it was refused before it ran.
    #[error("{file}: statement {statement} (line {line}) refused: {reason}")]
    UnsafeStatement {
        /// The file, relative to the backup directory.
        file: String,
        /// 1-based statement number in the file.
        statement: u64,
        /// 1-based line where the statement starts.
        line: u64,
        /// What it names.
        reason: String,
    },
    /// The operation was cancelled (its future was dropped) or a worker thread died.
    #[error("{what} was interrupted")]
    Interrupted {
        /// What was interrupted.
        what: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn host(what: impl Into<String>, source: HostError) -> Self {
        Error::Host {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Error::Invalid { what: what.into() }
    }

    /// The problems of a [`Error::Verify`] (or of the verification a restore failed on);
    /// empty for other errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Verify { problems, .. } => problems,
            Error::Restore { source, .. } => source.problems(),
            _ => &[],
        }
    }

    /// Whether the error means the backup directory is incomplete (no manifest).
    pub fn is_incomplete(&self) -> bool {
        match self {
            Error::Incomplete { .. } => true,
            Error::Restore { source, .. } => source.is_incomplete(),
            _ => false,
        }
    }
}
