//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// A boxed error source.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from talking to a CloudStack API endpoint and from the probes built on it.
///
/// No variant carries a signed URL, an API secret, a password or a session key: messages name
/// the endpoint (scheme, host, port and path only) and the command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is unusable (bad endpoint URL, unreadable CA bundle, …).
    #[error("invalid client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The cause, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The endpoint could not be reached, or the connection broke before a reply.
    #[error("cannot reach CloudStack API at {endpoint} (command {command})")]
    Connect {
        /// The endpoint, without query.
        endpoint: String,
        /// The command being sent.
        command: String,
        /// The transport error (its URL stripped).
        #[source]
        source: BoxError,
    },
    /// The endpoint did not answer within the request timeout.
    #[error("CloudStack API at {endpoint} did not answer {command} within {after:?}")]
    Timeout {
        /// The endpoint, without query.
        endpoint: String,
        /// The command being sent.
        command: String,
        /// The request timeout.
        after: Duration,
    },
    /// The server refused the credentials or the request signature (HTTP 401).
    #[error(
        "CloudStack API at {endpoint} refused the signature or key for {command} ({errortext}); \
         check the API key and secret key, that they belong to an enabled user, and the clock \
         of this machine (signed requests carry `expires`; a clock ahead or behind the \
         server's makes them expire)"
    )]
    Unauthorized {
        /// The endpoint, without query.
        endpoint: String,
        /// The command being sent.
        command: String,
        /// The server's error text.
        errortext: String,
    },
    /// The server answered with a CloudStack error envelope.
    #[error("CloudStack API error {errorcode} for {command}: {errortext}")]
    Api {
        /// The command being sent.
        command: String,
        /// The HTTP status of the reply.
        http_status: u16,
        /// `errorcode` of the envelope (`ApiErrorCode`, e.g. 431 parameter error).
        errorcode: u16,
        /// `cserrorcode` of the envelope (exception class code, e.g. 4350), when present.
        cserrorcode: Option<u32>,
        /// `errortext` of the envelope.
        errortext: String,
    },
    /// The server answered with an HTTP error and no CloudStack envelope.
    #[error("HTTP {status} from {endpoint} for {command}: {detail}")]
    Http {
        /// The endpoint, without query.
        endpoint: String,
        /// The command being sent.
        command: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, or the reason phrase.
        detail: String,
    },
    /// The reply is not the JSON CloudStack sends.
    #[error("malformed reply from {endpoint} for {command}: {detail}")]
    Malformed {
        /// The endpoint, without query.
        endpoint: String,
        /// The command being sent.
        command: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An asynchronous job ended in failure.
    #[error("async job {jobid} ({command}) failed with code {errorcode}: {errortext}")]
    JobFailed {
        /// The job id.
        jobid: String,
        /// The command that started the job.
        command: String,
        /// The job's `jobresultcode` or `errorcode`.
        errorcode: u16,
        /// The job's error text.
        errortext: String,
    },
    /// An asynchronous job did not finish before its deadline.
    #[error("async job {jobid} ({command}) still pending after {waited:?}")]
    JobTimeout {
        /// The job id.
        jobid: String,
        /// The command that started the job.
        command: String,
        /// How long it was polled.
        waited: Duration,
    },
    /// The cloud did not become healthy before the deadline.
    #[error("cloud not healthy after {waited:?}: {reason}")]
    NotHealthy {
        /// How long it was polled.
        waited: Duration,
        /// The failing findings, on one line.
        reason: String,
        /// The last report collected, when one was.
        report: Option<Box<crate::HealthReport>>,
    },
    /// A host named by the caller is not known to CloudStack.
    #[error("no host `{key}` in CloudStack")]
    NoSuchHost {
        /// The id, name or address asked for.
        key: String,
    },
    /// Reading or writing a snapshot file failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`read`, `write`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot file is not valid JSON of the expected shape.
    #[error("{path} is not an inventory snapshot")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether retrying the same idempotent read may succeed (a broken connection or a 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Http { status, .. } => *status >= 500,
            Error::Api { http_status, .. } => (500..=530).contains(http_status),
            _ => false,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
