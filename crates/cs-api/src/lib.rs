//! A signed CloudStack API client, health probes and the VM → host inventory proof.
//!
//! This crate is being filled in; see `ARCHITECTURE.md` for what it will own.
