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
    /// The host's IP address, when reported.
    #[serde(default)]
    pub address: Option<String>,
}

impl HypervisorState {
    /// Whether the host is `Up`.
    pub fn is_up(&self) -> bool {
        self.state == "Up"
    }

    /// Whether `key` names this host: its id, name or IP address (the [`HostStatus`] contract).
    pub fn matches(&self, key: &str) -> bool {
        self.id == key || self.name == key || self.address.as_deref() == Some(key)
    }
}

/// What a waiter for a hypervisor's state is satisfied by (see [`HostStatus::wait_for`]).
pub type StatePredicate<'a> = &'a (dyn Fn(Option<&HypervisorState>) -> bool + Send + Sync);

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

    /// Every hypervisor the management server knows, from one listing (paged by the
    /// implementation). `Ok(None)` when this implementation cannot list in bulk: ask
    /// [`HostStatus::hypervisor`] host by host. The default is `Ok(None)`.
    ///
    /// # Errors
    /// When the management server cannot be asked.
    async fn hypervisors(&self) -> Result<Option<Vec<HypervisorState>>, BoxError> {
        Ok(None)
    }

    /// Waits until `until` holds for the hypervisor `key` (given `None` when there is no such
    /// host), or `deadline` has passed; returns the state last seen either way. The default
    /// asks [`HostStatus::hypervisor`] every `poll`; a shared poller (cs-agent's
    /// `HostPoller`) answers every waiter from one listing per interval instead.
    ///
    /// # Errors
    /// When the management server cannot be asked.
    async fn wait_for(
        &self,
        key: &str,
        until: StatePredicate<'_>,
        deadline: std::time::Duration,
        poll: std::time::Duration,
    ) -> Result<Option<HypervisorState>, BoxError> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let h = self.hypervisor(key).await?;
            if until(h.as_ref()) || tokio::time::Instant::now() >= end {
                return Ok(h);
            }
            tokio::time::sleep(
                poll.min(end.saturating_duration_since(tokio::time::Instant::now())),
            )
            .await;
        }
    }
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
