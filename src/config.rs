//! `UpgradeConfig`: what to upgrade, where it lives and how carefully, read from TOML.
//!
//! Secrets never need to be written in the file: each one comes from an environment variable
//! (`password_env`) or a file of its own (`password_file`, mode 0600 or stricter). An inline
//! value is accepted for throwaway labs and reported as a warning, as is a config file that other
//! users can read. See `examples/upgrade.toml` for a commented example.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cs_core::{CsVersion, DbUrl, Finding, Layout, Secret, Severity};
use serde::Deserialize;

/// Errors from reading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (line and column).
        message: String,
    },
    /// A value is present but unusable.
    #[error("config {}: `{key}`: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key (`database.password_env`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where a secret comes from. Exactly one of the three may be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the secret (trailing newline removed); must not be readable by others.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The secret itself (reported as a warning: prefer `env` or `file`).
    #[serde(default)]
    pub value: Option<Secret>,
}

impl SecretSource {
    fn is_set(&self) -> bool {
        self.env.is_some() || self.file.is_some() || self.value.is_some()
    }

    /// Reads the secret.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `key` when none or several sources are set, the variable
    /// is unset, or the file is missing, readable by group or others, not a regular file or
    /// owned by someone else (see [`Secret::from_file`]).
    pub fn resolve(&self, config: &Path, key: &str) -> Result<Secret, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: config.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let set = [
            self.env.is_some(),
            self.file.is_some(),
            self.value.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(invalid(format!(
                "set exactly one of `env`, `file` or `value` ({set} set)"
            )));
        }
        if let Some(var) = &self.env {
            return std::env::var(var)
                .map(Secret::new)
                .map_err(|_| invalid(format!("environment variable `{var}` is not set")));
        }
        if let Some(file) = &self.file {
            return Secret::from_file(file).map_err(|e| invalid(e.to_string()));
        }
        Ok(self.value.clone().unwrap_or_default())
    }
}

/// The CloudStack database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Host name or address of the database server.
    pub host: String,
    /// Port.
    #[serde(default = "default_db_port")]
    pub port: u16,
    /// User (CloudStack's is `cloud`; a backup needs privileges to read routines and events).
    pub user: String,
    /// The password. May be left out when `defaults_file` holds it.
    #[serde(default)]
    pub password: SecretSource,
    /// A MySQL/MariaDB option file (`~/.my.cnf` style) whose client groups give the password
    /// and the `ssl-*` settings this section leaves unset ([`cs_core::ClientOptions`]). With a
    /// password it must be private (mode 0600, the running user's or root's).
    #[serde(default)]
    pub defaults_file: Option<PathBuf>,
    /// The main schema.
    #[serde(default = "default_cloud")]
    pub cloud_schema: String,
    /// The usage schema.
    #[serde(default = "default_cloud_usage")]
    pub usage_schema: String,
    /// How long the server may stay silent: a short statement or a stream of rows fails after
    /// this long without a byte; a long statement is checked from a second connection. Also
    /// the `TCP_USER_TIMEOUT` (see [`cs_core::Deadlines`]).
    #[serde(default = "default_reply_timeout", with = "humantime_serde_compat")]
    pub reply_timeout: Duration,
    /// TLS, as MySQL's `--ssl-mode` (`DISABLED`, `PREFERRED`, `REQUIRED`, `VERIFY_CA`,
    /// `VERIFY_IDENTITY`; `ssl-mode` also accepted). Unset: `VERIFY_CA` when `ssl_ca` is set,
    /// else `DISABLED`.
    #[serde(default, alias = "ssl-mode")]
    pub ssl_mode: Option<String>,
    /// The CA file (PEM) that signs the server's certificate (`ssl-ca`).
    #[serde(default, alias = "ssl-ca")]
    pub ssl_ca: Option<PathBuf>,
    /// A client certificate (PEM) for servers that ask for one (`ssl-cert`).
    #[serde(default, alias = "ssl-cert")]
    pub ssl_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM; `ssl-key`).
    #[serde(default, alias = "ssl-key")]
    pub ssl_key: Option<PathBuf>,
}

impl DatabaseConfig {
    /// The TLS settings ([`cs_core::DbTls::new`]'s rules).
    ///
    /// # Errors
    /// The key at fault (`database.ssl_mode` for a value that is not a mode) and the reason.
    pub fn tls(&self) -> Result<cs_core::DbTls, (&'static str, String)> {
        let mode = self
            .ssl_mode
            .as_deref()
            .map(str::parse::<cs_core::TlsMode>)
            .transpose()
            .map_err(|e| ("database.ssl_mode", e))?;
        cs_core::DbTls::new(
            mode,
            self.ssl_ca.clone(),
            self.ssl_cert.clone(),
            self.ssl_key.clone(),
        )
        .map_err(|e| ("database.ssl_*", e))
    }
}

fn default_reply_timeout() -> Duration {
    cs_core::Deadlines::default().reply
}

fn default_db_port() -> u16 {
    3306
}
fn default_cloud() -> String {
    "cloud".into()
}
fn default_cloud_usage() -> String {
    "cloud_usage".into()
}

/// Where and how to back up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Directory under which each run's backup directory is created.
    pub dir: PathBuf,
    /// `native` (parallel, default) or `mysqldump`.
    #[serde(default = "default_engine")]
    pub engine: String,
    /// Parallel connections of the native engine.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Compress dump files with zstd.
    #[serde(default)]
    pub compress: bool,
    /// The longest the native engine may hold the global read lock that stops the cloud's
    /// writes (see [`cs_backup::BackupOptions::snapshot_window`]).
    #[serde(default = "default_snapshot_window", with = "humantime_serde_compat")]
    pub snapshot_window: Duration,
}

fn default_snapshot_window() -> Duration {
    cs_backup::BackupOptions::default().snapshot_window
}

fn default_engine() -> String {
    "native".into()
}
fn default_threads() -> usize {
    4
}

/// The CloudStack API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Endpoint, e.g. `http://10.0.0.10:8080/client/api`.
    pub endpoint: String,
    /// API key (not secret by itself, but kept out of logs all the same).
    pub api_key: SecretSource,
    /// Secret key.
    pub secret_key: SecretSource,
    /// Accept any TLS certificate. Dangerous; for labs only.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
}

/// How to reach nodes over SSH; each node may override the user and port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// Login user.
    #[serde(default = "default_user")]
    pub user: String,
    /// Private key file; without it the SSH agent is used.
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// known_hosts file for strict host-key checking.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Connect timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// How long a node may send nothing, answers to keepalives included, before its command
    /// fails naming it (see [`cs_core::SshHostBuilder::deadlines`]).
    #[serde(default = "default_reply_timeout", with = "humantime_serde_compat")]
    pub reply_timeout: Duration,
    /// The deadline of a command that sets none of its own.
    #[serde(default = "default_command_timeout", with = "humantime_serde_compat")]
    pub command_timeout: Duration,
    /// Run every command and file operation as root through `sudo`, for a login `user` that
    /// is not root (see [`cs_core::SshHostBuilder::sudo`]).
    #[serde(default)]
    pub sudo: bool,
    /// sudo's password, when the sudoers rule asks for one (`env` or `file`, as every secret
    /// here); without it sudo runs with `-n` and needs a `NOPASSWD` rule. Needs `sudo = true`.
    #[serde(default)]
    pub sudo_password: Option<SecretSource>,
    /// Bastions every node is reached through (OpenSSH's `ProxyJump`): `[user@]host[:port]`,
    /// comma-separated for a chain, first hop first. A bastion inherits the identity, its
    /// passphrase, known_hosts and timeouts; its user is the one given, else `user`.
    #[serde(default)]
    pub proxy_jump: Option<String>,
    /// The passphrase of `identity` (and of identity files the ssh config names).
    #[serde(default)]
    pub identity_passphrase: Option<SecretSource>,
    /// An OpenSSH client configuration (`~/.ssh/config`; a leading `~/` is the running user's
    /// home) whose `Host`, `HostName`, `User`, `Port`, `IdentityFile` and `ProxyJump` entries
    /// apply to each node's address. Off unless set: a run does what its own file says, not
    /// what a user's personal file happens to hold. What this file sets wins: a node's
    /// `port` other than 22, a `user` other than `root` (the default), `identity`,
    /// `proxy_jump`.
    #[serde(default)]
    pub config: Option<PathBuf>,
}

impl SshConfig {
    /// The bastions of `proxy_jump`, first hop first.
    ///
    /// # Errors
    /// A message naming the bad hop (checked when the file is loaded).
    pub fn jumps(&self) -> Result<Vec<cs_core::JumpSpec>, String> {
        self.proxy_jump
            .as_deref()
            .map_or_else(|| Ok(Vec::new()), cs_core::JumpSpec::parse_list)
    }

    /// `config` with a leading `~/` expanded.
    pub fn config_path(&self) -> Option<PathBuf> {
        let p = self.config.as_ref()?;
        match (p.strip_prefix("~").ok(), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) => Some(PathBuf::from(home).join(rest)),
            _ => Some(p.clone()),
        }
    }
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(3600)
}

fn default_user() -> String {
    "root".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            user: default_user(),
            identity: None,
            known_hosts: None,
            connect_timeout: default_connect_timeout(),
            reply_timeout: default_reply_timeout(),
            command_timeout: default_command_timeout(),
            sudo: false,
            sudo_password: None,
            proxy_jump: None,
            identity_passphrase: None,
            config: None,
        }
    }
}

/// One node (management server, usage server or KVM host).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Address (name or IP) to SSH to.
    pub address: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Login user (default: `ssh.user`).
    #[serde(default)]
    pub user: Option<String>,
    /// Name for reports and, for KVM hosts, the host's name in CloudStack (default: address).
    #[serde(default)]
    pub name: Option<String>,
    /// Root under which CloudStack's paths live (`/` on a real node; a directory on a lab node).
    #[serde(default)]
    pub root: Option<PathBuf>,
}

fn default_ssh_port() -> u16 {
    22
}

impl NodeConfig {
    /// The name used in reports.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.address)
    }

    /// The node's layout: CloudStack's defaults, re-rooted when `root` is set.
    pub fn layout(&self) -> Layout {
        match &self.root {
            Some(r) if r != Path::new("/") => Layout::default().rerooted(r),
            _ => Layout::default(),
        }
    }
}

/// Which repository entries are CloudStack's, beside the official `download.cloudstack.org`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Mirror prefixes (`https://mirror.example.com/cloudstack`): entries under them are
    /// switched to the target release like the official ones.
    #[serde(default)]
    pub mirrors: Vec<String>,
}

/// How to reach one KVM host CloudStack knows (by its name in CloudStack), or that the upgrade
/// leaves it alone. The hosts to refresh and their clusters come from the API
/// (`listHosts type=Routing hypervisor=KVM`); an entry here only says how to reach one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The host's name in CloudStack.
    pub name: String,
    /// Address to SSH to (default: the host's IP address as CloudStack lists it).
    #[serde(default)]
    pub address: Option<String>,
    /// SSH port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// Login user (default: `ssh.user`).
    #[serde(default)]
    pub user: Option<String>,
    /// Root under which CloudStack's paths live (a directory on a lab node).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Leave the host alone: its agent is not refreshed (pre-flight warns about it).
    #[serde(default)]
    pub exclude: bool,
}

/// The older form of host entries: KVM hosts grouped by cluster. Still read, as addresses for
/// the hosts named; the clusters themselves come from CloudStack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name (ignored: CloudStack's is used).
    pub name: String,
    /// Its hosts.
    pub hosts: Vec<NodeConfig>,
}

/// How KVM agents are refreshed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AgentRefresh {
    /// Upgrade the package and restart the agent with the guests left running (libvirt keeps
    /// them; the agent re-attaches).
    #[default]
    InPlace,
    /// Put each host in maintenance first (CloudStack live-migrates its VMs away), refresh,
    /// then cancel maintenance. A capacity check runs before any host is touched.
    Maintenance,
}

/// How system VMs and virtual routers get the target's code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SystemVmRefresh {
    /// Live-patch them (`patchSystemVm`, `restartNetwork livepatch=true`; 4.17 and later):
    /// no restart, tenants keep their network. Targets before 4.17 are restarted instead.
    #[default]
    Patch,
    /// Restart them onto the new template, as `cloudstack-sysvmadm` does: SSVMs and CPVMs
    /// stopped and started, routers rebooted (`upgradeRouterTemplate`), a redundant pair one
    /// side at a time.
    Restart,
}

/// How carefully to go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Hosts refreshed at once within a cluster: a count (`2`) or a percentage of the
    /// cluster's hosts (`"25%"`, rounded down, at least one). Clusters move side by side.
    #[serde(default)]
    pub batch_size: cs_agent::fleet::BatchSize,
    /// Hosts refreshed at once across all clusters, and system VMs and routers refreshed at
    /// once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Stop the refresh when more than this percentage of hosts failed (0: on the first).
    #[serde(default)]
    pub max_fail_percent: u8,
    /// Stop refreshing a cluster when more than this percentage of its hosts failed (the
    /// other clusters go on within `max_fail_percent`); unset: only the fleet's budget.
    #[serde(default)]
    pub cluster_max_fail_percent: Option<u8>,
    /// Which hosts are refreshed first, alone: `one` (default: the first host; the run
    /// stops if it fails), `per_cluster` (each cluster's first host before the rest of its
    /// cluster) or `none`.
    #[serde(default)]
    pub canary: cs_agent::fleet::Canary,
    /// How long the first management server may take to migrate the schema.
    #[serde(
        default = "default_migration_deadline",
        with = "humantime_serde_compat"
    )]
    pub migration_deadline: Duration,
    /// How long a host may take to come back Up.
    #[serde(default = "default_host_deadline", with = "humantime_serde_compat")]
    pub host_up_deadline: Duration,
    /// Jump straight to the target instead of stepping through LTS releases.
    #[serde(default)]
    pub direct_path: bool,
    /// Check ids to skip in pre-flight (an unknown id is an error).
    #[serde(default)]
    pub skip_checks: Vec<String>,
    /// How KVM agents are refreshed (default in place).
    #[serde(default)]
    pub agent_refresh: AgentRefresh,
    /// How system VMs and routers get the target's code (default: live patch).
    #[serde(default)]
    pub system_vms: SystemVmRefresh,
    /// Register the target's KVM system VM template before anything changes (off unless
    /// given).
    #[serde(default)]
    pub system_template: Option<SystemTemplatePolicy>,
    /// Require a passed rehearsal of the migration (`rehearse`) before the upgrade (off unless
    /// given).
    #[serde(default)]
    pub rehearsal: Option<RehearsalPolicy>,
}

/// `[policy.rehearsal]`: the upgrade's gate requires a rehearsal of the target's schema
/// migration on a scratch copy (`cs_upgrade::rehearse`) that passed within `within`, as
/// recorded under the backup directory (finding `rehearsal.recent`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RehearsalPolicy {
    /// How old the passed rehearsal may be (`7d`).
    #[serde(with = "humantime_serde_compat")]
    pub within: Duration,
}

/// `[policy.system_template]`: register the target's KVM system VM template through the API
/// before the upgrade changes anything, and wait until it is Ready in every zone, as the
/// upgrade guide asks ("Do not proceed until this is successful"). It is registered as the
/// guide says (name `systemvm-kvm-X.Y.Z`, QCOW2, not public, not featured, not extractable, no
/// password, all zones); the upgrade itself finds it by name and makes it the SYSTEM template.
/// Without it, 4.16 and later register the template their package carries, when it carries
/// one; the pre-flight check `systemvm.templates.ready` says which case applies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemTemplatePolicy {
    /// Where CloudStack's secondary storage VMs download it from (http or https): the
    /// release's `systemvmtemplate-….qcow2.bz2` on download.cloudstack.org or a mirror.
    pub url: String,
    /// Its checksum as `registerTemplate` takes it (`{SHA-512}…`, or MD5 hex); optional.
    #[serde(default)]
    pub checksum: Option<String>,
    /// The OS type to register it with; by default the newest "Debian GNU/Linux N (64-bit)"
    /// the cloud offers, as the guide says.
    #[serde(default)]
    pub os_type: Option<String>,
    /// How long the download may take until it is Ready in every zone.
    #[serde(default = "default_template_deadline", with = "humantime_serde_compat")]
    pub deadline: Duration,
}

fn default_template_deadline() -> Duration {
    Duration::from_secs(60 * 60)
}

fn default_parallelism() -> usize {
    8
}
fn default_migration_deadline() -> Duration {
    Duration::from_secs(60 * 60)
}
fn default_host_deadline() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            batch_size: cs_agent::fleet::BatchSize::default(),
            parallelism: default_parallelism(),
            max_fail_percent: 0,
            cluster_max_fail_percent: None,
            canary: cs_agent::fleet::Canary::default(),
            migration_deadline: default_migration_deadline(),
            host_up_deadline: default_host_deadline(),
            direct_path: false,
            skip_checks: Vec::new(),
            agent_refresh: AgentRefresh::default(),
            system_vms: SystemVmRefresh::default(),
            system_template: None,
            rehearsal: None,
        }
    }
}

mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a duration like 90s or 15m: {e}"))
        })
    }
}

/// The whole configuration of one upgrade.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// The release to upgrade to (`4.19.0.0`, `24.0.0`).
    pub target: CsVersion,
    /// The database.
    pub database: DatabaseConfig,
    /// The backup.
    pub backup: BackupConfig,
    /// The API.
    pub api: ApiConfig,
    /// SSH defaults.
    #[serde(default)]
    pub ssh: SshConfig,
    /// Management servers; the first one migrates the schema.
    pub management_servers: Vec<NodeConfig>,
    /// Usage servers (may repeat management servers).
    #[serde(default)]
    pub usage_servers: Vec<NodeConfig>,
    /// How to reach KVM hosts (the hosts themselves come from CloudStack).
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// The older form of `hosts`: by cluster (read as `hosts`).
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// Policies.
    #[serde(default)]
    pub policy: Policy,
    /// Repository mirrors.
    #[serde(default)]
    pub repositories: RepoConfig,
    #[serde(skip)]
    path: PathBuf,
}

impl UpgradeConfig {
    /// Reads and validates a config file. Returns the config and warnings about it (a file
    /// readable by others, inline secrets).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key or line at fault.
    pub fn load(path: &Path) -> Result<(UpgradeConfig, Vec<Finding>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = UpgradeConfig::parse(&text, path)?;
        config.path = path.to_path_buf();
        let mut warnings = config.secret_warnings();
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                warnings.push(
                    Finding::new(
                        "config.permissions",
                        Severity::Warn,
                        path.display().to_string(),
                        format!("the config file has mode {mode:04o}: other users can read it"),
                    )
                    .with_remedy(format!("chmod 600 {}", path.display())),
                );
            }
        }
        Ok((config, warnings))
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with line and column, [`ConfigError::Invalid`] for values that
    /// parse but cannot work.
    pub fn parse(text: &str, origin: &Path) -> Result<UpgradeConfig, ConfigError> {
        let mut config: UpgradeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: parse_message(text, &e),
        })?;
        config.path = origin.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// The rules that say which repository entries the upgrade switches: the official trees
    /// and the configured mirrors (checked when the file was loaded).
    pub fn repo_rules(&self) -> cs_repo::Rules {
        self.repositories
            .mirrors
            .iter()
            .fold(cs_repo::Rules::official(), |rules, m| {
                rules.clone().with_mirror(m).unwrap_or(rules)
            })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.management_servers.is_empty() {
            return Err(self.invalid("management_servers", "at least one is needed"));
        }
        for m in &self.repositories.mirrors {
            if let Err(e) = cs_repo::Rules::none().with_mirror(m) {
                return Err(self.invalid("repositories.mirrors", e.to_string()));
            }
        }
        if !self.database.password.is_set() && self.database.defaults_file.is_none() {
            return Err(self.invalid(
                "database.password",
                "set `env`, `file` or `value`, or `database.defaults_file`",
            ));
        }
        for (key, src) in [
            ("api.api_key", &self.api.api_key),
            ("api.secret_key", &self.api.secret_key),
        ] {
            if !src.is_set() {
                return Err(self.invalid(key, "set `env`, `file` or `value`"));
            }
        }
        if self.ssh.sudo_password.is_some() && !self.ssh.sudo {
            return Err(self.invalid(
                "ssh.sudo_password",
                "set `sudo = true` too: the password is only used for sudo",
            ));
        }
        if let Some(src) = &self.ssh.sudo_password
            && !src.is_set()
        {
            return Err(self.invalid("ssh.sudo_password", "set `env`, `file` or `value`"));
        }
        if let Err(reason) = self.ssh.jumps() {
            return Err(self.invalid("ssh.proxy_jump", reason));
        }
        if let Some(src) = &self.ssh.identity_passphrase
            && !src.is_set()
        {
            return Err(self.invalid("ssh.identity_passphrase", "set `env`, `file` or `value`"));
        }
        if let Err((key, reason)) = self.database.tls() {
            return Err(self.invalid(key, reason));
        }
        if !matches!(self.backup.engine.as_str(), "native" | "mysqldump") {
            return Err(self.invalid("backup.engine", "expected `native` or `mysqldump`"));
        }
        if self.backup.threads == 0 || self.policy.parallelism == 0 {
            return Err(self.invalid("backup.threads / policy.parallelism", "must be at least 1"));
        }
        if self.policy.max_fail_percent > 100 {
            return Err(self.invalid("policy.max_fail_percent", "a percentage: 0 to 100"));
        }
        if self
            .policy
            .cluster_max_fail_percent
            .is_some_and(|p| p > 100)
        {
            let key = "policy.cluster_max_fail_percent";
            return Err(self.invalid(key, "a percentage: 0 to 100"));
        }
        if let Some(t) = &self.policy.system_template {
            let key = "policy.system_template.url";
            let parsed = url::Url::parse(&t.url).map_err(|e| self.invalid(key, e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(self.invalid(
                    key,
                    "CloudStack downloads templates over http or https: give an http(s) URL with a host",
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                // Credentials would be stored in `vm_template.url` and shown by listTemplates.
                return Err(self.invalid(
                    key,
                    "a URL with credentials would be stored in CloudStack's database and listed to admins: use a URL without them",
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for h in self.host_entries() {
            if h.name.is_empty() {
                return Err(self.invalid("hosts.name", "a host entry needs its CloudStack name"));
            }
            if !names.insert(h.name.clone()) {
                return Err(self.invalid("hosts", format!("host `{}` is listed twice", h.name)));
            }
        }
        Ok(())
    }

    fn secret_warnings(&self) -> Vec<Finding> {
        [
            ("database.password", Some(&self.database.password)),
            ("api.api_key", Some(&self.api.api_key)),
            ("api.secret_key", Some(&self.api.secret_key)),
            ("ssh.sudo_password", self.ssh.sudo_password.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, s)| Some((key, s?)))
        .filter(|(_, s)| s.value.is_some())
        .map(|(key, _)| {
            Finding::new(
                "config.secrets",
                Severity::Warn,
                key,
                format!("`{key}` is written in the config file"),
            )
            .with_remedy("use `env = \"VAR\"` or `file = \"/path/0600\"` instead")
        })
        .collect()
    }

    /// The file this config came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How nodes become root: `None` for `ssh.sudo = false` (the login user's own rights),
    /// otherwise sudo with the password resolved (`sudo -n` without one).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the sudo password cannot be read.
    pub fn sudo(&self) -> Result<Option<cs_core::Sudo>, ConfigError> {
        if !self.ssh.sudo {
            return Ok(None);
        }
        Ok(Some(match &self.ssh.sudo_password {
            Some(src) => {
                cs_core::Sudo::with_password(src.resolve(&self.path, "ssh.sudo_password")?)
            }
            None => cs_core::Sudo::without_password(),
        }))
    }

    /// The database URL with its password resolved: from `database.password`, else from
    /// `database.defaults_file` (which also gives the `ssl-*` settings the section leaves
    /// unset).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the password cannot be read or the option file cannot be
    /// used (unreadable, bad syntax, readable by others while holding a password).
    pub fn database_url(&self) -> Result<DbUrl, ConfigError> {
        let cnf = match &self.database.defaults_file {
            Some(f) => Some(
                cs_core::ClientOptions::read(f)
                    .map_err(|e| self.invalid("database.defaults_file", e.to_string()))?,
            ),
            None => None,
        };
        let password = if self.database.password.is_set() {
            self.database
                .password
                .resolve(&self.path, "database.password")?
        } else {
            cnf.as_ref()
                .and_then(|c| c.password.clone())
                .ok_or_else(|| {
                    self.invalid(
                        "database.password",
                        "not set, and `database.defaults_file` has no password in its client groups",
                    )
                })?
        };
        let mut tls = self
            .database
            .tls()
            .map_err(|(key, reason)| self.invalid(key, reason))?;
        if tls == cs_core::DbTls::default()
            && let Some(c) = &cnf
            && let Some(file_tls) = c
                .tls()
                .map_err(|r| self.invalid("database.defaults_file", r))?
        {
            tls = file_tls;
        }
        Ok(DbUrl::new(
            self.database.host.clone(),
            self.database.port,
            self.database.user.clone(),
            password,
        )
        .with_deadlines(cs_core::Deadlines {
            reply: self.database.reply_timeout,
            ..cs_core::Deadlines::default()
        })
        .with_tls(tls))
    }

    /// Every KVM host entry, `hosts` then the older `clusters` ones, in config order.
    pub fn host_entries(&self) -> Vec<HostConfig> {
        let mut out = self.hosts.clone();
        out.extend(
            self.clusters
                .iter()
                .flat_map(|c| &c.hosts)
                .map(|n| HostConfig {
                    name: n.display_name().to_string(),
                    address: Some(n.address.clone()),
                    port: Some(n.port),
                    user: n.user.clone(),
                    root: n.root.clone(),
                    exclude: false,
                }),
        );
        out
    }
}

/// A TOML error as one line: where (line and column) and what, never the text of the line
/// (which may hold an inline secret) nor a value the parser quotes (a password given where a
/// number was expected).
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let what = hide_values(e.message().trim()).replace('\n', " ");
    let Some(span) = e.span() else {
        return what;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    // The key (never the value) and the table it is in, as the operator wrote them.
    let key = text[line_start..]
        .lines()
        .next()
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
        });
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(['[', ']']).trim())
            .filter(|t| !t.is_empty())
    });
    match (table, key) {
        (Some(table), Some(key)) => {
            format!("line {line}, column {column} (`{table}.{key}`): {what}")
        }
        (None, Some(key)) => format!("line {line}, column {column} (`{key}`): {what}"),
        _ => format!("line {line}, column {column}: {what}"),
    }
}

/// serde's type errors quote the offending value (`invalid type: string "s3cret", expected
/// u16`); keep the kind, hide the value. A word that names no choice of an enumerated key is
/// still shown (``unknown variant `yolo` ``): those keys hold no secrets.
fn hide_values(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead) {
            let (found, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
            let kind = found.split([' ', '`', '"']).next().unwrap_or_default();
            let expected = if expected.is_empty() {
                String::new()
            } else {
                format!(", expected{expected}")
            };
            return format!("{lead}{kind} (value hidden){expected}");
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/upgrade.toml");

    #[track_caller]
    fn invalid(text: &str, key_part: &str) {
        match UpgradeConfig::parse(text, Path::new("t.toml")) {
            Err(ConfigError::Invalid { key, reason, .. }) => {
                assert!(
                    key.contains(key_part) || reason.contains(key_part),
                    "{key}: {reason}"
                )
            }
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains(key_part), "{message}")
            }
            other => panic!("expected an error about {key_part}, got {other:?}"),
        }
    }

    #[test]
    fn the_commented_example_parses() {
        let c = UpgradeConfig::parse(EXAMPLE, Path::new("upgrade.toml")).unwrap();
        assert_eq!(c.target.to_string(), "4.19.0.0");
        assert_eq!(c.management_servers.len(), 2);
        let hosts = c.host_entries();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].port, Some(2222));
        assert!(hosts[1].exclude && hosts[1].address.is_none());
        assert_eq!(c.policy.agent_refresh, AgentRefresh::InPlace);
        assert_eq!(c.policy.system_vms, SystemVmRefresh::Patch);
        assert_eq!(c.policy.migration_deadline, Duration::from_secs(45 * 60));
        assert_eq!(c.database.password.env.as_deref(), Some("CS_DB_PASSWORD"));
        assert!(c.repositories.mirrors.is_empty());
    }

    #[test]
    fn sudo_comes_with_its_password_from_a_secret_source() {
        let c = UpgradeConfig::parse(EXAMPLE, Path::new("t.toml")).unwrap();
        assert!(!c.ssh.sudo);
        assert!(c.sudo().unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("sudo-password");
        std::fs::write(&pw, "s3cret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = EXAMPLE
            .replace("# sudo = true", "sudo = true")
            .replace(
                "# sudo_password = { file = \"/etc/cs-upgrade/sudo-password\" }",
                &format!(
                    "sudo_password = {{ file = {:?} }}",
                    pw.display().to_string()
                ),
            )
            .replace("user = \"root\"", "user = \"ops\"");
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        let sudo = c.sudo().unwrap().expect("sudo on");
        assert_eq!(sudo.password().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));

        // A password file others can read is refused, naming the key.
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        match c.sudo() {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "ssh.sudo_password"),
            other => panic!("{other:?}"),
        }
        // Without a password: `sudo -n`.
        let text = EXAMPLE.replace("# sudo = true", "sudo = true");
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        assert!(c.sudo().unwrap().expect("sudo on").password().is_none());
        // A password without `sudo = true` is a mistake, named.
        let text = EXAMPLE.replace("# sudo_password = { file", "sudo_password = { file");
        match UpgradeConfig::parse(&text, Path::new("t.toml")) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "ssh.sudo_password"),
            other => panic!("{other:?}"),
        }
        // An inline one is a warning, as for the other secrets.
        let text = EXAMPLE.replace(
            "# sudo = true",
            "sudo = true\nsudo_password = { value = \"x\" }",
        );
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        assert!(
            c.secret_warnings()
                .iter()
                .any(|f| f.subject == "ssh.sudo_password"),
            "{:?}",
            c.secret_warnings()
        );
    }

    #[test]
    fn tls_keys_reach_the_database_url_and_bad_ones_are_named() {
        let c = UpgradeConfig::parse(EXAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.database.tls().unwrap(), cs_core::DbTls::default());
        let text = EXAMPLE
            .replace(
                "# ssl_mode = \"VERIFY_CA\"",
                "ssl-mode = \"verify_identity\"",
            )
            .replace("# ssl_ca = ", "ssl_ca = ");
        let mut c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        c.database.password = SecretSource {
            value: Some(Secret::new("x")),
            ..SecretSource::default()
        };
        let url = c.database_url().unwrap();
        assert_eq!(url.tls.mode, cs_core::TlsMode::VerifyIdentity);
        assert_eq!(
            url.tls.ca.as_deref(),
            Some(Path::new("/etc/cloudstack/db-ca.pem"))
        );
        for (bad, key, reason) in [
            (
                "ssl_mode = \"sometimes\"",
                "database.ssl_mode",
                "ssl-mode `sometimes`",
            ),
            ("ssl_mode = \"VERIFY_CA\"", "database.ssl_*", "needs ssl-ca"),
            ("ssl_cert = \"/c.pem\"", "database.ssl_*", "without ssl-key"),
        ] {
            let text = EXAMPLE.replace("# ssl_mode = \"VERIFY_CA\"", bad);
            match UpgradeConfig::parse(&text, Path::new("t.toml")) {
                Err(ConfigError::Invalid {
                    key: k, reason: r, ..
                }) => {
                    assert_eq!(k, key, "{bad}");
                    assert!(r.contains(reason), "{bad}: {r}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn ssh_bastions_passphrases_and_ssh_config_are_read_and_checked() {
        let c = UpgradeConfig::parse(EXAMPLE, Path::new("t.toml")).unwrap();
        assert!(c.ssh.jumps().unwrap().is_empty());
        assert_eq!(c.ssh.config_path(), None);
        let text = EXAMPLE
            .replace("# identity_passphrase = ", "identity_passphrase = ")
            .replace("# proxy_jump = ", "proxy_jump = ")
            .replace("# config = ", "config = ");
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        let hops = c.ssh.jumps().unwrap();
        assert_eq!(hops.len(), 1);
        assert_eq!(hops[0].to_string(), "jump@bastion.example.org:22");
        assert_eq!(
            c.ssh
                .identity_passphrase
                .as_ref()
                .and_then(|s| s.file.clone()),
            Some(PathBuf::from("/root/.cs-upgrade/key-passphrase"))
        );
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
        assert_eq!(c.ssh.config_path(), Some(home.join(".ssh/config")));
        invalid(
            &EXAMPLE.replace(
                "# proxy_jump = \"jump@bastion.example.org:22\"",
                "proxy_jump = \"jump@bastion:twenty\"",
            ),
            "ssh.proxy_jump",
        );
        invalid(
            &EXAMPLE.replace(
                "# identity_passphrase = { file = \"/root/.cs-upgrade/key-passphrase\" }",
                "identity_passphrase = {}",
            ),
            "ssh.identity_passphrase",
        );
    }

    #[test]
    fn deadlines_are_bounded_by_default_and_configurable() {
        let c = UpgradeConfig::parse(EXAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.database.reply_timeout, Duration::from_secs(60));
        assert_eq!(c.backup.snapshot_window, Duration::from_secs(30));
        assert_eq!(c.ssh.reply_timeout, Duration::from_secs(60));
        assert_eq!(c.ssh.command_timeout, Duration::from_secs(3600));
        let text = EXAMPLE
            .replacen("# reply_timeout = \"60s\"", "reply_timeout = \"20s\"", 1)
            .replace("# snapshot_window = \"30s\"", "snapshot_window = \"5s\"")
            .replacen("# reply_timeout = \"60s\"", "reply_timeout = \"7s\"", 1)
            .replace("# command_timeout = \"1h\"", "command_timeout = \"2h\"");
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(c.database.reply_timeout, Duration::from_secs(20));
        assert_eq!(c.backup.snapshot_window, Duration::from_secs(5));
        assert_eq!(c.ssh.reply_timeout, Duration::from_secs(7));
        assert_eq!(c.ssh.command_timeout, Duration::from_secs(7200));
        let mut c = c;
        c.database.password = SecretSource {
            value: Some(Secret::new("x")),
            ..SecretSource::default()
        };
        let url = c.database_url().unwrap();
        assert_eq!(url.deadlines.reply, Duration::from_secs(20));
    }

    #[test]
    fn the_older_cluster_entries_still_give_addresses() {
        let text = EXAMPLE.replace(
            "[policy]",
            "[[clusters]]\nname = \"c1\"\nhosts = [{ address = \"10.0.1.21\", name = \"kvm1\" }]\n\n[policy]",
        );
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        let hosts = c.host_entries();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[2].name, "kvm1");
        assert_eq!(hosts[2].address.as_deref(), Some("10.0.1.21"));
        assert_eq!(hosts[2].port, Some(22));
    }

    #[test]
    fn mirrors_join_the_official_trees() {
        let text = EXAMPLE.replace(
            "mirrors = []",
            "mirrors = [\"https://mirror.example.com/cloudstack\"]",
        );
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        let rules = c.repo_rules();
        assert!(rules.matches("http://mirror.example.com/cloudstack/ubuntu"));
        assert!(rules.matches("https://download.cloudstack.org/ubuntu"));
        assert!(!rules.matches("https://mirror.example.com/other/ubuntu"));
        assert!(
            !UpgradeConfig::parse(EXAMPLE, Path::new("t.toml"))
                .unwrap()
                .repo_rules()
                .matches("http://mirror.example.com/cloudstack/ubuntu")
        );
    }

    #[test]
    fn the_fleet_policy_takes_a_count_or_a_percentage() {
        use cs_agent::fleet::{BatchSize, Canary};
        let c = UpgradeConfig::parse(EXAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.policy.batch_size, BatchSize::Count(1));
        assert_eq!(c.policy.canary, Canary::One);
        assert_eq!(c.policy.cluster_max_fail_percent, None);
        let text = EXAMPLE.replace(
            "batch_size = 1",
            "batch_size = \"25%\"\ncanary = \"per_cluster\"\ncluster_max_fail_percent = 20",
        );
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(c.policy.batch_size, BatchSize::Percent(25));
        assert_eq!(c.policy.canary, Canary::PerCluster);
        assert_eq!(c.policy.cluster_max_fail_percent, Some(20));
        invalid(
            &EXAMPLE.replace("batch_size = 1", "batch_size = \"0%\""),
            "batch_size",
        );
        invalid(
            &EXAMPLE.replace("batch_size = 1", "cluster_max_fail_percent = 101"),
            "cluster_max_fail_percent",
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = EXAMPLE.to_string();
        invalid(
            &base.replace("target = \"4.19.0.0\"", "target = \"4.19\""),
            "target",
        );
        invalid(
            &base.replace("engine = \"native\"", "engine = \"tar\""),
            "backup.engine",
        );
        invalid(
            &base.replace("batch_size = 1", "batch_size = 0"),
            "batch_size",
        );
        invalid(
            &base.replace("mirrors = []", "mirrors = [\"a mirror\"]"),
            "repositories.mirrors",
        );
        invalid(
            &base.replace("max_fail_percent = 0", "max_fail_percent = 150"),
            "max_fail_percent",
        );
        invalid(
            &base.replace(
                "migration_deadline = \"45m\"",
                "migration_deadline = \"soon\"",
            ),
            "soon",
        );
        invalid(
            &base.replace("[policy]", "[policy]\nunknown_knob = 1"),
            "unknown_knob",
        );
        invalid(&base.replace("\"kvm9\"", "\"kvm3\""), "listed twice");
        invalid(
            &base.replace("agent_refresh = \"in-place\"", "agent_refresh = \"yolo\""),
            "yolo",
        );
        for url in [
            "ftp://mirror/t.qcow2.bz2",
            "not a url",
            "https://u:pw@mirror/t.qcow2.bz2",
        ] {
            let text = format!("{base}\n[policy.system_template]\nurl = \"{url}\"\n");
            invalid(&text, "policy.system_template.url");
        }
    }

    #[test]
    fn the_system_template_policy_is_off_unless_given() {
        let c = UpgradeConfig::parse(EXAMPLE, Path::new("t.toml")).unwrap();
        assert_eq!(c.policy.system_template, None);
        let text = format!(
            "{EXAMPLE}\n[policy.system_template]\nurl = \"https://mirror.example.com/t.qcow2.bz2\"\n"
        );
        let c = UpgradeConfig::parse(&text, Path::new("t.toml")).unwrap();
        let t = c.policy.system_template.expect("given");
        assert_eq!(t.url, "https://mirror.example.com/t.qcow2.bz2");
        assert_eq!(t.deadline, Duration::from_secs(3600));
        assert_eq!((t.checksum, t.os_type), (None, None));
    }

    #[test]
    fn secrets_come_from_env_or_private_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = SecretSource {
            file: Some(file.clone()),
            ..SecretSource::default()
        };
        let err = src
            .resolve(Path::new("c.toml"), "database.password")
            .unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(src.resolve(Path::new("c"), "k").unwrap().expose(), "s3cret");

        // A FIFO is refused at once instead of waiting for a writer; so is a directory.
        let fifo = dir.path().join("fifo");
        #[allow(clippy::disallowed_methods)] // the test makes a FIFO with the stock tool
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        for (path, why) in [(fifo, "not a regular file"), (dir.path().to_path_buf(), "")] {
            let src = SecretSource {
                file: Some(path),
                ..SecretSource::default()
            };
            let started = std::time::Instant::now();
            let err = src.resolve(Path::new("c"), "k").unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5), "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }

        let env = SecretSource {
            env: Some("CS_UPGRADE_TEST_UNSET_VAR".into()),
            ..SecretSource::default()
        };
        let err = env.resolve(Path::new("c"), "api.secret_key").unwrap_err();
        assert!(
            err.to_string().contains("CS_UPGRADE_TEST_UNSET_VAR"),
            "{err}"
        );

        let both = SecretSource {
            env: Some("X".into()),
            value: Some(Secret::new("v")),
            ..SecretSource::default()
        };
        assert!(both.resolve(Path::new("c"), "k").is_err());
    }

    #[test]
    fn readable_config_and_inline_secrets_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.toml");
        let text = EXAMPLE.replace(
            "password = { env = \"CS_DB_PASSWORD\" }",
            "password = { value = \"inline-pw\" }",
        );
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (c, warnings) = UpgradeConfig::load(&path).unwrap();
        let ids: Vec<&str> = warnings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["config.secrets", "config.permissions"]);
        assert!(!format!("{c:?}").contains("inline-pw"));
        assert_eq!(c.database_url().unwrap().password.expose(), "inline-pw");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, warnings) = UpgradeConfig::load(&path).unwrap();
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn defaults_file_gives_the_password_and_tls_the_section_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let cnf = dir.path().join("my.cnf");
        std::fs::write(
            &cnf,
            "[client]\npassword = \"from-cnf\"\nssl-ca = /etc/db-ca.pem\n",
        )
        .unwrap();
        std::fs::set_permissions(&cnf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = EXAMPLE.replace(
            "password = { env = \"CS_DB_PASSWORD\" }",
            &format!("defaults_file = \"{}\"", cnf.display()),
        );
        let c = UpgradeConfig::parse(&text, Path::new("u.toml")).unwrap();
        let url = c.database_url().unwrap();
        assert_eq!(url.password.expose(), "from-cnf");
        assert_eq!(url.tls.mode, cs_core::TlsMode::VerifyCa);
        // A readable option file with a password is refused, naming the key and the file.
        std::fs::set_permissions(&cnf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = c.database_url().unwrap_err().to_string();
        assert!(
            e.contains("database.defaults_file") && e.contains("my.cnf"),
            "{e}"
        );
        assert!(!e.contains("from-cnf"), "{e}");
        // Neither a password nor an option file: refused when loading.
        let none = EXAMPLE.replace("password = { env = \"CS_DB_PASSWORD\" }", "");
        let e = UpgradeConfig::parse(&none, Path::new("u.toml")).unwrap_err();
        assert!(e.to_string().contains("defaults_file"), "{e}");
    }
}
