//! Rehearses CloudStack's schema migration on a scratch copy, days before the maintenance
//! window.
//!
//! The target release's management-server package carries the SQL its upgrade runs
//! (`META-INF/db/schema-*.sql`, `-cleanup.sql`, `views/`, `procedures/`, inside its jars):
//! [`Scripts`] reads them out of a `.deb`, an `.rpm` or a directory. [`split()`] cuts them into
//! statements exactly as CloudStack's `ScriptRunner` does; [`SchemaMap`] points their `cloud` /
//! `cloud_usage` names at scratch schemas; [`rehearse`] runs a [`Plan`] (the caller builds it
//! from `cs_schema::path`) on one connection shaped like the management server's, and returns
//! a [`Report`]: every statement's outcome, the slow ones, and the first failure with its
//! `file#statement`, text, server error and known cause and remedy.
//!
//! Restoring the scratch copy and dropping it are the caller's (cs-backup's restore); this
//! crate never names a live schema except in [`fingerprint`], which only reads.

mod error;
mod exec;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod package;
pub mod plan;
mod report;
mod rewrite;
mod split;

pub use error::{BoxError, Error, Result};
pub use exec::{
    Options, PACKAGED_SQL_MODE, Session, drop_scratch, fingerprint, grant_scratch, rehearse,
    revoke_scratch,
};
pub use package::{Scripts, sha256_hex};
pub use plan::{Plan, PlanStep};
pub use report::{Failure, KNOWN_CAUSES, KnownCause, Outcome, Phase, Report, known_cause};
pub use rewrite::SchemaMap;
pub use split::{Split, Statement, split};
