//! Lossless rewriting of apt one-line, deb822 and yum repository files so that CloudStack entries
//! point at a target release, and a thin IO layer over a `cs_core::Host`.
//!
//! This crate is being filled in; see `ARCHITECTURE.md` for what it will own.
