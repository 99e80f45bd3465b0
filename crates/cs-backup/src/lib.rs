//! Consistent, verified backup and restore of the `cloud` and `cloud_usage` databases, and
//! config-file bundles of CloudStack nodes.
//!
//! This crate is being filled in; see `ARCHITECTURE.md` for what it will own.
