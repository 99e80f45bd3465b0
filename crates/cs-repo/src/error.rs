//! The crate's error type.

use std::path::PathBuf;

use cs_core::{BoxError, HostError};

/// Errors from parsing, rewriting, reading and writing repository files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a well-formed repository file of its format.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A CloudStack entry whose release token cannot be found, or that holds two different ones.
    #[error("line {line}: cannot tell which CloudStack release this entry uses: {reason}")]
    NoRelease {
        /// 1-based line number of the entry.
        line: usize,
        /// Why (no token that looks like a release line, or several different ones).
        reason: String,
    },
    /// Enabled CloudStack entries of one file point at different releases.
    #[error(
        "two different CloudStack releases in one file: {first} (line {first_line}) and {second} (line {second_line})"
    )]
    Ambiguous {
        /// The first release met.
        first: String,
        /// Its line.
        first_line: usize,
        /// The other release.
        second: String,
        /// Its line.
        second_line: usize,
    },
    /// The requested target is not a release line.
    #[error("`{target}` is not a CloudStack release line (expected e.g. 4.20 or 24.0)")]
    InvalidTarget {
        /// The target as given.
        target: String,
    },
    /// A mirror pattern that cannot match any URL.
    #[error("invalid mirror pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path given for removal that is not a backup copy's (`<name>.<stamp>.cs-upgrade.bak`).
    #[error("{}: not a backup copy of a repository file (`<name>.<YYYYMMDDTHHMMSSZ>.cs-upgrade.bak`); not removing it", path.display())]
    NotBackup {
        /// The path.
        path: PathBuf,
    },
    /// A file name that is not a repository file (`.list`, `.sources`, `.repo`).
    #[error("{}: not a repository file (expected sources.list, *.list, *.sources or *.repo)", path.display())]
    UnknownFormat {
        /// The path.
        path: PathBuf,
    },
    /// A file is not UTF-8 text.
    #[error("{}: line {line}: not UTF-8 text", path.display())]
    NotText {
        /// The path.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
    },
    /// An error about the contents of one file.
    #[error("{}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: Box<Error>,
    },
    /// A file changed on the host between planning and applying.
    #[error("{}: changed since it was read; plan again", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A repository file is a symbolic link, which an atomic rename would replace.
    #[error("{}: is a symbolic link; rewrite the file it points to instead", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// No CloudStack repository entry was found on a host.
    #[error("{host}: no CloudStack repository entry found in {searched}")]
    NothingFound {
        /// The host.
        host: String,
        /// Where it looked.
        searched: String,
    },
    /// A host operation failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// No configured repository offers the package at the version.
    #[error("no configured repository offers {package} {version} (looked in: {looked})")]
    PackageNotOffered {
        /// The package.
        package: String,
        /// The version.
        version: String,
        /// The indexes read (passwords masked).
        looked: String,
    },
    /// A downloaded package does not match its index entry.
    #[error("{url}: {detail}")]
    Integrity {
        /// The package URL (password masked).
        url: String,
        /// What differs.
        detail: String,
    },
    /// A repository index could not be fetched or read.
    #[error("cannot fetch {url}")]
    Fetch {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The 1-based line the error is about, when it is about one (looking through
    /// [`Error::InFile`]).
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Syntax { line, .. }
            | Error::NoRelease { line, .. }
            | Error::NotText { line, .. } => Some(*line),
            Error::Ambiguous { second_line, .. } => Some(*second_line),
            Error::InFile { source, .. } => source.line(),
            _ => None,
        }
    }

    pub(crate) fn in_file(path: impl Into<PathBuf>, source: Error) -> Error {
        Error::InFile {
            path: path.into(),
            source: Box::new(source),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
