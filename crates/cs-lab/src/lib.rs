//! A throwaway, CloudStack-shaped lab on 127.0.0.1 for tests, demos and benchmarks: a real
//! MariaDB and real sshd instances with temporary directories and free ports.
//!
//! `publish = false`: only dev-dependencies, examples and the root crate's tests use it.

mod api;
mod error;
mod kvm;
mod lab;
mod mariadb;
mod mgmt;
mod node;
mod proxy;
mod repo_server;
mod seed;
mod sshd;
mod util;

pub use api::{CloudSpec, Fault, LabApi, RecordedRequest};
pub use cs_core::DbUrl;
pub use error::{LabError, Result};
pub use kvm::{
    KvmFault, KvmHost, KvmHostOptions, LabRepoSwitch, LabStatus, PACKAGED_AGENT_PROPERTIES,
    StoreKind, start_kvm_hosts,
};
pub use lab::{Lab, LabBuilder};
pub use mariadb::{DbUrlExt, MariaDb, MariaDbOptions, TestDb, mariadb};
pub use mgmt::{
    MANAGEMENT_UNIT, MGMT_PACKAGES, MgmtFault, MgmtNode, MgmtNodeBuilder, MgmtStartup, MsHostRow,
    USAGE_UNIT, migration_table,
};
pub use node::LabFamily;
pub use proxy::TcpProxy;
pub use repo_server::{REPO_APT_SUITES, REPO_PACKAGES, REPO_YUM_RELEASES, RepoServer};
pub use seed::{SeedOptions, SeedSummary, seed, version_history};
pub use sshd::{SshServer, SshServerBuilder, sshd};
