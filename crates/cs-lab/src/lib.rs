//! A throwaway CloudStack cloud on 127.0.0.1 for tests, demos and benchmarks: a real MariaDB,
//! real sshd instances, simulated management servers and KVM hosts, and a CloudStack API
//! endpoint, all with temporary directories and free ports. It is as harsh as a real cloud
//! where an upgrade's safety is decided, and each simulated behaviour names the CloudStack code
//! it follows.
//!
//! Start a whole cloud with [`Lab::builder`] (blocking; from async code use `spawn_blocking`):
//!
//! ```no_run
//! let lab = cs_lab::Lab::builder()
//!     .management_servers(2) // mgmt1, mgmt2; mgmt1 migrates the schema
//!     .usage_servers(1)      // cloudstack-usage on mgmt1 only
//!     .kvm_hosts(4)          // kvm1..kvm4 ...
//!     .hosts_per_cluster(2)  // ... in clusters c1, c2
//!     .vms(6)                // tenants' VMs, Running, spread over the hosts
//!     .start()?;
//! let config = lab.write_config(&"4.19.0.0".parse()?)?; // an UpgradeConfig TOML
//! # let _ = config;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the cloud does, as CloudStack does it (see [`LabApi`] for the commands):
//! - **Maintenance moves VMs**: `prepareHostForMaintenance` live-migrates every VM to other Up
//!   and Enabled hosts of its cluster that have room ([`HostCapacity`]), or ends in
//!   `ErrorInMaintenance`; `cancelHostMaintenance` moves nothing back.
//! - **Templates are registered and downloaded**: `registerTemplate` checks what CloudStack
//!   checks and writes its rows; the secondary storage VM of each zone downloads the template
//!   ([`Timings::template_download`], [`LabApi::fail_template_downloads`]) while `listTemplates`
//!   reports the progress; `deleteTemplate` removes one (a failed download, say) as CloudStack
//!   does, refusing what it refuses; the upgrade makes an operator's `systemvm-kvm-X.Y.Z` the
//!   system VM template ([`LabBuilder::register_hop_templates`]).
//! - **System VMs and routers keep their template** until CloudStack restarts or recreates them
//!   (`stopSystemVm`/`startSystemVm`, `destroySystemVm`, `rebootRouter`,
//!   `upgradeRouterTemplate`, `restartNetwork cleanup=true`) or patches them (`patchSystemVm`);
//!   `listRouters` says `requiresupgrade` as the real server computes it.
//! - **Tenants act** while the API serves ([`Lab::start_tenants`], [`Lab::tenant`]), through the
//!   API, so events, usage events and `vm_instance` rows change as on a real cloud.
//! - **The database is the cloud**: a restored database is what the API answers for, while the
//!   guests keep running on the KVM hosts (`virsh list`); no management server Up, no API.
//! - **Nodes as they are**: usage servers on some management servers only, Debian or EL
//!   packaging on either node kind, hosts CloudStack knows but the configuration misses.
//! - **Faults**: [`MgmtFault`], [`KvmFault`], a database proxy that freezes connections
//!   ([`TcpProxy`]), and nodes whose sshd goes silent mid-command ([`SshServer::freeze`]).
//!
//! The parts work alone too: [`mariadb`] (one server per test binary, a database per test),
//! [`seed`], [`MgmtNode`], [`KvmHost`], [`LabApi`] (an endpoint without database or nodes,
//! answering always, for the API client's own tests), [`RepoServer`].
//!
//! `publish = false`: only dev-dependencies, examples and the root crate's tests use it.

mod api;
mod bastion;
mod error;
pub mod fuzz;
mod kvm;
mod lab;
mod mariadb;
mod mgmt;
mod node;
pub mod packages;
mod proxy;
mod repo_server;
mod seed;
mod sshd;
mod util;

pub use api::{
    CloudSpec, Fault, HostCapacity, LabApi, LabEvent, LabVm, RecordedRequest,
    TEMPLATE_DOWNLOAD_ERROR, Tenant, TenantActor, TenantChange, TenantOptions, Timings,
};
pub use bastion::BastionAccess;
pub use cs_core::DbUrl;
pub use error::{LabError, Result};
pub use kvm::{
    KvmFault, KvmHost, KvmHostOptions, LabRepoSwitch, LabStatus, PACKAGED_AGENT_PROPERTIES,
    StoreKind, start_kvm_hosts,
};
pub use lab::{Lab, LabBuilder};
pub use mariadb::{DbUrlExt, LabTls, MariaDb, MariaDbOptions, TestDb, mariadb, mariadb_tls};
pub use mgmt::{
    MANAGEMENT_UNIT, MGMT_PACKAGES, MgmtFault, MgmtNode, MgmtNodeBuilder, MgmtStartup, MsHostRow,
    USAGE_UNIT, migration_table,
};
pub use node::LabFamily;
pub use proxy::TcpProxy;
pub use repo_server::{REPO_APT_SUITES, REPO_PACKAGES, REPO_YUM_RELEASES, RepoServer};
pub use seed::{SeedOptions, SeedSummary, seed, version_history};
pub use sshd::{
    LabOperator, NO_SUDO_USER, NOPASSWD_USER, OPERATOR_USER, SshServer, SshServerBuilder, operator,
    operator_nopasswd, operator_without_sudo, sshd,
};
