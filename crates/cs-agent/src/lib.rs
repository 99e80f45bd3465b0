//! KVM agent refresh: `agent.properties`, keystores, packages and services on hypervisors, one
//! host or a whole fleet.
//!
//! This crate is being filled in; see `ARCHITECTURE.md` for what it will own.
