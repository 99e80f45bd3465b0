//! Traits through which capability crates ask for what another crate knows; the orchestrator
//! wires the implementations in (cs-api answers [`HostStatus`] and [`HostMaintenance`], cs-repo
//! answers [`RepoSwitch`]).

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{BoxError, CsVersion, Host};

/// A hypervisor as the management server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HypervisorState {
    /// CloudStack's host id (a UUID).
    pub id: String,
    /// The host's name in CloudStack.
    pub name: String,
    /// Connection state (`Up`, `Disconnected`, `Connecting`, `Alert`, …).
    pub state: String,
    /// Resource state (`Enabled`, `Maintenance`, `PrepareForMaintenance`, …), when reported.
    pub resource_state: Option<String>,
    /// The agent version the host reports, when it parses.
    pub version: Option<CsVersion>,
}

impl HypervisorState {
    /// Whether the host is `Up`.
    pub fn is_up(&self) -> bool {
        self.state == "Up"
    }
}

/// "Is this hypervisor Up, and which version does it report?" (implemented by cs-api).
///
/// # Contract
/// `key` matches a host's CloudStack id, name or IP address. `Ok(None)` means no such host.
#[async_trait]
pub trait HostStatus: Send + Sync + fmt::Debug {
    /// The hypervisor's current state.
    ///
    /// # Errors
    /// When the management server cannot be asked (unreachable, refused).
    async fn hypervisor(&self, key: &str) -> Result<Option<HypervisorState>, BoxError>;
}

/// Maintenance mode of a hypervisor (implemented by cs-api).
///
/// # Contract
/// Both calls return once CloudStack reports the new resource state, or fail.
#[async_trait]
pub trait HostMaintenance: Send + Sync + fmt::Debug {
    /// Puts the host in maintenance (`prepareHostForMaintenance`), migrating its VMs away.
    ///
    /// # Errors
    /// When CloudStack refuses or the job fails.
    async fn enter(&self, key: &str) -> Result<(), BoxError>;

    /// Takes the host out of maintenance (`cancelHostMaintenance`).
    ///
    /// # Errors
    /// When CloudStack refuses or the job fails.
    async fn leave(&self, key: &str) -> Result<(), BoxError>;
}

/// What a [`RepoSwitch`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSwitchReport {
    /// Files that were rewritten.
    pub changed_files: Vec<PathBuf>,
    /// One line per change (`cloudstack.list:1 4.18 -> 4.19`).
    pub changes: Vec<String>,
}

/// Points a host's CloudStack package repositories at a release line (implemented with
/// cs-repo by the orchestrator).
///
/// # Contract
/// Idempotent; switching to `a` then back to the original line restores the files byte for byte.
#[async_trait]
pub trait RepoSwitch: Send + Sync + fmt::Debug {
    /// Rewrites the host's repository files to `line` (`4.19`, `24.0`).
    ///
    /// # Errors
    /// When no CloudStack repository is found, a file is ambiguous, or writing fails.
    async fn switch(&self, host: &dyn Host, line: &str) -> Result<RepoSwitchReport, BoxError>;
}
