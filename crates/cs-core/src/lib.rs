//! The vocabulary every cs-upgrade crate shares: where commands run ([`Host`]), where files live
//! ([`Layout`]), CloudStack versions ([`CsVersion`]), read-only checks and their [`Report`],
//! idempotent [`Step`]s, [`Secret`]s that never print, [`Progress`] for long work, and the traits
//! capability crates use to ask each other for things ([`HostStatus`], [`HostMaintenance`],
//! [`RepoSwitch`]).
//!
//! Start from a host and a layout:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use cs_core::{Host, HostExt, Layout, fake::FakeHost};
//! let layout = Layout::default();
//! let host = FakeHost::new("kvm1").with_file(layout.agent_properties(), "zone=1\n");
//! let text = host.read_to_string(&layout.agent_properties()).await.unwrap();
//! assert_eq!(text, "zone=1\n");
//! # });
//! ```
//!
//! Features: `ssh` adds `SshHost` (libssh2); `mysql` adds [`DbUrl::mysql_opts`] (the `mysql`
//! crate's options for a URL, TLS included); `conformance` adds the host conformance suite.

/// Chaining setters for an options struct that is `#[non_exhaustive]` (so that a new field is
/// not a breaking change): `setters!(Options { threads: usize, mode: Mode })` gives
/// `Options::default().threads(8).mode(Mode::X)`. For this workspace's crates; not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! setters {
    ($t:ty { $($field:ident: $ft:ty),* $(,)? }) => {
        impl $t {
            $(
                #[doc = concat!("Sets the `", stringify!($field), "` field.")]
                #[must_use]
                pub fn $field(mut self, $field: $ft) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

mod check;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "mysql")]
mod db_mysql;
mod db_url;
pub mod fake;
mod host;
mod layout;
mod local;
mod my_cnf;
mod net;
mod progress;
mod runner;
mod secret;
mod signatures;
#[cfg(feature = "ssh")]
mod ssh;
#[cfg(feature = "ssh")]
mod ssh_config;
#[cfg(feature = "ssh")]
mod ssh_jump;
#[cfg(feature = "ssh")]
mod ssh_keyfile;
mod status;
mod step;
mod version;

pub use check::{Check, CheckError, CheckFailure, Finding, Report, Severity, run_checks};
#[cfg(feature = "mysql")]
pub use db_mysql::{ER_ACCESS_DENIED, TLS_REQUIRED};
pub use db_url::{DbTls, DbUrl, DbUrlError, TlsMode};
pub use host::{
    BoxError, Cmd, DirEntry, FileKind, FileMeta, Host, HostError, HostExt, Output, SudoRefusal,
    reroot, shell_quote,
};
pub use layout::Layout;
pub use local::LocalHost;
pub use my_cnf::{CLIENT_GROUPS, ClientOptions, OptionFileError};
pub use net::Deadlines;
pub use progress::{NoProgress, Progress, ProgressUpdate, RecordingProgress, Unit};
pub use runner::{
    JournalEntry, JournalEvent, Plan, PlannedStep, RunError, RunKind, RunReport, Runner,
    StepOutcome, StepPhase, StepReport, applied_steps, plan_fingerprint, read_journal,
};
pub use secret::{Secret, SecretFileError};
pub use signatures::{LogKind, LogMatch, LogSignature, SIGNATURES, scan_log};
#[cfg(feature = "ssh")]
pub use ssh::{SshHost, SshHostBuilder, Sudo};
#[cfg(feature = "ssh")]
pub use ssh_config::{JumpSpec, SshConfig, SshConfigEntry, SshConfigError};
pub use status::{
    HostMaintenance, HostStatus, HypervisorState, RepoSwitch, RepoSwitchReport, StatePredicate,
};
pub use step::{Step, StepError, StepState};
pub use version::{CsVersion, FIRST_NEW_SCHEME_MAJOR, VersionError};

/// An error and its causes on one line, joined by `: ` (for reports and one-line CLI errors).
///
/// ```
/// let e = cs_core::StepError::with_source("backup failed", std::io::Error::other("disk full"));
/// assert_eq!(cs_core::error_chain(&e), "backup failed: disk full");
/// ```
///
/// The `mysql` crate's errors display as `MySqlError { ERROR 1045 (28000): ... }` (and
/// `DriverError { .. }`, `IoError { .. }`, ...), which reads like a Debug dump: the wrapper is
/// removed wherever it appears, leaving the server's or driver's own message.
///
/// ```
/// let e = std::io::Error::other("connect: MySqlError { ERROR 1045 (28000): Access denied }");
/// assert_eq!(cs_core::error_chain(&e), "connect: ERROR 1045 (28000): Access denied");
/// ```
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    unwrap_driver_errors(&out)
}

/// Removes the `mysql` crate's `KindError { ... }` wrappers from an error text.
fn unwrap_driver_errors(text: &str) -> String {
    const WRAPPERS: &[&str] = &[
        "MySqlError { ",
        "DriverError { ",
        "IoError { ",
        "CodecError { ",
        "UrlError { ",
        "TlsError { ",
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = WRAPPERS
            .iter()
            .filter_map(|w| rest.find(w).map(|at| (at, w.len())))
            .min_by_key(|&(at, _)| at);
        let Some((at, len)) = next else {
            out.push_str(rest);
            return out;
        };
        // The closing brace that balances the wrapper's opening one.
        let inner = &rest[at + len..];
        let mut depth = 0usize;
        let mut close = None;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    close = Some(i);
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let Some(close) = close else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str(&unwrap_driver_errors(inner[..close].trim_end()));
        rest = &inner[close + 1..];
    }
}
