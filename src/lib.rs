#![doc = include_str!("../README.md")]

mod config;
mod diagnose;
mod hardening;
mod ms_checks;
mod preflight;
mod upgrade;

pub use config::{
    ApiConfig, BackupConfig, ClusterConfig, ConfigError, DatabaseConfig, NodeConfig, Policy,
    RepoConfig, SecretSource, SshConfig, UpgradeConfig,
};
pub use diagnose::{DEFAULT_TAIL_BYTES, LogSource, diagnose, log_sources};
pub use hardening::{FIREWALL_CHECK, ModeFix, SECRET_FILES_CHECK, harden, hardening_report};
pub use ms_checks::{MsContext, Phase, ms_checks};
pub use preflight::{NODE_REACHABLE, preflight};
pub use upgrade::{
    MANAGEMENT_PACKAGES, MANAGEMENT_UNIT, NodeHandle, RunRecord, USAGE_UNIT, UpgradeContext,
    UpgradeError, UpgradeErrorKind, UpgradePlan, api_client, apply, hops, plan, rollback, run_dir,
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
