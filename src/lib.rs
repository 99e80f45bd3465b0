#![doc = include_str!("../README.md")]

mod catalog;
mod config;
mod diagnose;
mod hardening;
mod inventory;
mod ms_checks;
mod node_checks;
mod preflight;
mod rehearse;
mod upgrade;

pub use catalog::{CATALOG, CheckInfo, UnknownCheckIds, check_skips, list_table, nearest_check_id};
pub use config::{
    AgentRefresh, ApiConfig, BackupConfig, ClusterConfig, ConfigError, DatabaseConfig, HostConfig,
    NodeConfig, Policy, RehearsalPolicy, RepoConfig, SecretSource, SshConfig, SystemTemplatePolicy,
    SystemVmRefresh, UpgradeConfig,
};
pub use diagnose::{DEFAULT_TAIL_BYTES, LogSource, diagnose, log_sources};
pub use hardening::{FIREWALL_CHECK, ModeFix, SECRET_FILES_CHECK, harden, hardening_report};
pub use inventory::{
    HOSTS_EXCLUDED, HOSTS_KNOWN, HostInventory, KvmHostTarget, kvm_hosts, reach_as_configured,
    reconcile,
};
pub use ms_checks::{MsContext, Phase, ms_checks};
pub use node_checks::{
    AGENT_CONFIG_DRIFT, AgentConfigDrift, CLUSTER_SAME_VERSION, DEB_PYTHON_CONNECTOR, Deps,
    DiskFree, EL_PYTHON_WHEEL_DIR, HEADROOM, MS_DEPS, NODE_DISK_FREE, PACKAGE_CACHE_NEED,
    PACKAGE_DIR_NEED, SYSTEM_JDBC_JAR, SameVersion, SpaceNeed,
};
pub use preflight::{
    MAINTENANCE_CAPACITY, NET_MTU, NODE_REACHABLE, PROPERTIES_INTACT, REHEARSAL_RECENT, check_ids,
    preflight,
};
pub use rehearse::{
    Rehearsal, RehearsalRecord, RehearseError, RehearseOptions, ScriptSource, last_passed,
    plan_for, records_dir, rehearse, rehearse_configured,
};
pub use upgrade::{
    ApplyOptions, MANAGEMENT_PACKAGES, MANAGEMENT_UNIT, NodeHandle, PostFlightEvidence,
    RollbackOptions, RunRecord, Seal, USAGE_UNIT, UpgradeContext, UpgradeError, UpgradeErrorKind,
    UpgradePlan, api_client, apply, apply_with, hops, loss_report, plan, plan_with,
    point_of_no_return, postflight_evidence, reopened_at, rollback, rollback_with, run_dir, sealed,
    steps,
};

/// Vocabulary and shared traits: hosts, layouts, versions, checks, steps.
pub use cs_core as core;

/// Consistent, verified database backup and restore.
pub use cs_backup as backup;

/// The upgrade graph, release facts and database checks.
pub use cs_schema as schema;

/// Lossless repository-file rewriting.
pub use cs_repo as repo;

/// KVM agent refreshes.
pub use cs_agent as agent;

/// The signed CloudStack API client and health probes.
pub use cs_api as api;
