//! CloudStack's schema-upgrade graph, the path a target release will run, release facts and the
//! database checks.
//!
//! This crate is being filled in; see `ARCHITECTURE.md` for what it will own.
