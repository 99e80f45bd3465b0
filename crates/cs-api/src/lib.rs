//! A signed CloudStack API client, health probes and the VM → host inventory proof.
//!
//! * [`Client`]: signs every request exactly as `ApiServer.verifyRequest` checks it
//!   (signature version 3 with `expires`, or the legacy form), or logs in with a password;
//!   retries idempotent reads, pages list calls, polls async jobs, and maps error envelopes to
//!   [`Error`]. Typed, tolerant responses ([`HostResponse`], …) for the commands the probes
//!   use; [`Client::call`] for any other.
//! * [`HealthReport`] and [`wait_healthy`]: management servers, hypervisors, system VMs and
//!   routers, judged by the `api.*` checks; `Client` answers cs-core's [`cs_core::HostStatus`]
//!   and [`cs_core::HostMaintenance`].
//! * [`Inventory`] and [`diff`]: the VM → host snapshot taken before an upgrade and compared
//!   after it (`api.inventory.unchanged`); [`ansible_inventory`] exports the hypervisors.
//!
//! Signing is a pure function:
//!
//! ```
//! use cs_api::Secret;
//! let params = [("command", "listZones"), ("apiKey", "KEY"), ("response", "json")];
//! assert_eq!(cs_api::canonical_string(&params), "apikey=key&command=listzones&response=json");
//! let signature = cs_api::sign(&params, &Secret::new("SECRET"));
//! assert_eq!(signature.len(), 28); // base64 of a 20-byte HMAC-SHA1
//! ```
//!
//! Secrets stay secret: the secret key, password and session key are [`cs_core::Secret`]s,
//! signed URLs are never logged, and transport errors are stripped of their URL.
//!
//! The [`cs_core`] types this crate's API takes or returns are re-exported here ([`Secret`],
//! [`Progress`], [`NoProgress`], [`CsVersion`], [`Finding`], [`Report`], …), so a program that
//! only talks to CloudStack needs no dependency on `cs-core` of its own.

mod client;
mod envelope;
mod error;
mod health;
mod inventory;
mod proof;
mod sign;
mod types;

pub use client::{
    Client, ClientConfig, Credentials, HttpMethod, JobPolicy, Params, RetryPolicy, SignatureMode,
    TlsConfig, is_idempotent,
};
pub use cs_core::{
    BoxError, Check, CsVersion, Finding, HostMaintenance, HostStatus, HypervisorState, NoProgress,
    Progress, ProgressUpdate, Report, Secret, Severity, Unit,
};
pub use error::{Error, Result};
pub use health::{
    HEALTH_CHECK_IDS, HealthCheck, HealthExpectations, HealthReport, Phase, health_checks,
    wait_healthy,
};
pub use inventory::{
    HostChange, INVENTORY_CHECK_ID, Inventory, InventoryDiff, InventoryHost, InventoryUnchanged,
    InventoryVm, VmChange, VmMove, ansible_inventory, diff,
};
pub use proof::{Attributed, Proof, UpgradeActions, attribute};
pub use sign::{canonical_string, encode_value, sign};
pub use types::{
    AsyncJobResponse, CapabilitiesResponse, ClusterResponse, ConfigurationResponse, EventResponse,
    HostResponse, JobStatus, ManagementServerResponse, NetworkResponse, OsTypeResponse,
    RouterResponse, SystemVmResponse, TemplateResponse, VirtualMachineResponse, VolumeResponse,
    ZoneResponse,
};
