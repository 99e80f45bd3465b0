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
    out
}
