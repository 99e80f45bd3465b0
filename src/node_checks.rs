//! Checks across the nodes the upgrade writes to: `cluster.same.version` (one CloudStack version
//! on every management server), `ms.deps` (what the management server needs besides its own
//! packages), `node.disk.free` (room where the upgrade writes) and `agent.config.drift` (the
//! agent's configuration files left beside the live ones by a package).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use cs_agent::packages::{self, Family};
use cs_core::{Check, CheckError, Cmd, CsVersion, Finding, Host, HostExt, Layout, Severity};

use crate::ms_checks::{MsContext, Phase, log4j_finding};
use crate::upgrade::MANAGEMENT_PACKAGES;

/// The id of [`SameVersion`].
pub const CLUSTER_SAME_VERSION: &str = "cluster.same.version";
/// The id of [`Deps`].
pub const MS_DEPS: &str = "ms.deps";
/// The id of [`DiskFree`].
pub const NODE_DISK_FREE: &str = "node.disk.free";
/// The id of [`AgentConfigDrift`].
pub const AGENT_CONFIG_DRIFT: &str = "agent.config.drift";

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Free space `/usr/share/cloudstack-*` needs: a release's jars unpack there next to the old ones
/// while the package manager replaces them (the 4.19 `cloudstack-management` package holds
/// about 400 MiB of jars and the UI).
pub const PACKAGE_DIR_NEED: u64 = GIB;
/// Free space the package cache (`/var/cache/apt`, `/var/cache/dnf`) needs for the downloaded
/// packages of one release (`cloudstack-management`, `-common`, `-usage`, or `-agent`).
pub const PACKAGE_CACHE_NEED: u64 = GIB;
/// Headroom on top of a backup's estimated size, and of the biggest table's copy.
pub const HEADROOM: u64 = 256 * MIB;

/// `cluster.same.version` (FAIL): every management server has its CloudStack packages
/// (`cloudstack-management`, `-common`, and `-usage` where installed) at one version; after the
/// upgrade, at the target. A management server at another version than the database refuses to
/// start (`Database version X is higher than management software version Y`,
/// `DatabaseUpgradeChecker.check` in apache/cloudstack), and mixed versions in one cluster are
/// the half-upgraded clusters of apache/cloudstack#12140.
#[derive(Debug, Clone)]
pub struct SameVersion {
    /// The target release.
    pub target: CsVersion,
    /// Before or after the upgrade.
    pub phase: Phase,
}

#[async_trait]
impl Check<[MsContext]> for SameVersion {
    fn id(&self) -> &str {
        CLUSTER_SAME_VERSION
    }

    async fn run(&self, nodes: &[MsContext]) -> Result<Vec<Finding>, CheckError> {
        let mut seen: Vec<(String, String, String)> = Vec::new(); // node, package, version
        let per_node = futures::future::join_all(nodes.iter().map(|cx| async move {
            let family = packages::detect_family(cx.host.as_ref()).await?;
            let states = packages::installed(cx.host.as_ref(), family, MANAGEMENT_PACKAGES).await?;
            Ok::<_, cs_agent::Error>((cx.host.name().to_string(), states))
        }))
        .await;
        for r in per_node {
            let (node, states) =
                r.map_err(|e| CheckError::with_source("read the installed packages", e))?;
            for s in states {
                if let Some(v) = s.version() {
                    seen.push((node.clone(), s.name.clone(), v.to_string()));
                }
            }
        }
        let mut versions: Vec<&str> = seen.iter().map(|(_, _, v)| v.as_str()).collect();
        versions.sort_unstable();
        versions.dedup();
        let mut out = Vec::new();
        let listing = || {
            seen.iter()
                .map(|(n, p, v)| format!("{n}: {p} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !seen
            .iter()
            .any(|(_, p, _)| p == crate::upgrade::MANAGEMENT_UNIT)
        {
            out.push(Finding::new(
                self.id(),
                Severity::Fail,
                "management servers",
                "cloudstack-management is installed on no management server".to_string(),
            ));
        } else if versions.len() > 1 {
            out.push(
                Finding::new(
                    self.id(),
                    Severity::Fail,
                    "management servers",
                    format!("CloudStack packages at {} versions: {}", versions.len(), listing()),
                )
                .with_remedy(
                    "install one version of cloudstack-management, -common and -usage on every management server before starting any",
                ),
            );
        } else if self.phase == Phase::Post && versions[0] != self.target.to_string() {
            out.push(
                Finding::new(
                    self.id(),
                    Severity::Fail,
                    "management servers",
                    format!(
                        "every management server is at {}, not the target {}",
                        versions[0], self.target
                    ),
                )
                .with_remedy("install the target's packages on every management server"),
            );
        } else {
            out.push(Finding::pass(
                self.id(),
                "management servers",
                format!(
                    "{} management server(s) at {}",
                    nodes.len(),
                    versions.first().copied().unwrap_or("-")
                ),
            ));
        }
        Ok(out)
    }
}

/// The Debian package of MySQL's Python connector that `cloudstack-management` depends on
/// (`Depends: … python3-mysql.connector` in debian/control of apache/cloudstack); the
/// database scripts (`cloudstack-setup-databases`, `cloudstack-migrate-databases`, the
/// `cloudutils` of `cloudstack-setup-management`) import `mysql.connector`.
pub const DEB_PYTHON_CONNECTOR: &str = "python3-mysql.connector";
/// Where the el8 spec of apache/cloudstack (`packaging/el8/cloud.spec`, "Package
/// mysql-connector-python") puts the connector's wheel, which its `%post` installs with pip.
pub const EL_PYTHON_WHEEL_DIR: &str = "/usr/share/cloudstack-management/setup/wheel";
/// The system JDBC driver older releases loaded through the `CLASSPATH` of
/// `/etc/default/cloudstack-management`.
pub const SYSTEM_JDBC_JAR: &str = "/usr/share/java/mysql-connector-java.jar";

/// `ms.deps` (FAIL): what a management server needs besides CloudStack's packages: a `java`
/// that runs, a MySQL JDBC driver (the one bundled in `/usr/share/cloudstack-management/lib`
/// since 4.14, apache/cloudstack#3601, or the system `mysql-connector-java.jar` on the
/// `CLASSPATH`), and MySQL's Python connector (`python3-mysql.connector` on Debian; the wheel
/// the el8 package installs on EL). The system connector 8.0.19 broke the schema migration of
/// releases before 4.14 ("Unable to upgrade the database", apache/cloudstack#3826, #3856,
/// #3883).
#[derive(Debug, Clone, Default)]
pub struct Deps;

/// Whether `dir` holds a file named `<one of prefixes>…<suffix>`.
async fn has_file(
    host: &dyn Host,
    dir: &Path,
    prefixes: &[&str],
    suffix: &str,
) -> Result<bool, CheckError> {
    match host.list_dir(dir).await {
        Ok(entries) => Ok(entries
            .iter()
            .any(|e| e.name.ends_with(suffix) && prefixes.iter().any(|p| e.name.starts_with(p)))),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl Check<MsContext> for Deps {
    fn id(&self) -> &str {
        MS_DEPS
    }

    async fn run(&self, cx: &MsContext) -> Result<Vec<Finding>, CheckError> {
        let host = cx.host.as_ref();
        let mut problems: Vec<(Severity, String, String)> = Vec::new();
        // Java: any that runs (its major is ms.java.compat's).
        let java = host.run(&Cmd::new("java").arg("-version")).await;
        let java_ok = match &java {
            Ok(o) => {
                packages::parse_java_major(&format!("{}{}", o.stderr_lossy(), o.stdout_lossy()))
                    .is_some()
            }
            Err(_) => false,
        };
        if !java_ok {
            problems.push((
                Severity::Fail,
                "no java runs on the node: the management server cannot start".into(),
                format!("install openjdk-{}-jre-headless", cx.java_major),
            ));
        }
        // The JDBC driver.
        let bundled = has_file(
            host,
            &cx.layout.management_lib_dir,
            &["mysql-connector-java-", "mysql-connector-j-"],
            ".jar",
        )
        .await?;
        let default_file = cx.layout.default_dir.join("cloudstack-management");
        let default_text = host
            .read_opt(&default_file)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let system_on_classpath = default_text.contains(SYSTEM_JDBC_JAR);
        let root = root_of(&cx.layout);
        let system_present =
            system_on_classpath && host.exists(&rerooted(&root, SYSTEM_JDBC_JAR)).await?;
        if !bundled && !system_present {
            problems.push((
                cx_post_only(cx),
                format!(
                    "no MySQL JDBC driver: none bundled in {} and {} not on the CLASSPATH",
                    cx.layout.management_lib_dir.display(),
                    SYSTEM_JDBC_JAR
                ),
                "reinstall cloudstack-management (4.14+ bundles mysql-connector-java)".into(),
            ));
        }
        let old_target = cx.target.padded() < [4, 14, 0, 0];
        if old_target && system_present && !bundled {
            problems.push((
                Severity::Fail,
                format!(
                    "{} before 4.14 loads the system {SYSTEM_JDBC_JAR}, whose 8.0.19+ fails the schema migration (#3826)",
                    cx.target
                ),
                "pin mysql-connector-java to 5.1.x, or upgrade to 4.14 or later".into(),
            ));
        }
        // MySQL's Python connector.
        let family = packages::detect_family(host)
            .await
            .map_err(|e| CheckError::with_source("detect the package manager", e))?;
        // The deb's dependency, else the wheel the el8 package carries, else another package
        // of the connector or an import that works (newer debs may ship the wheel too).
        let deb_package = family == Family::Deb
            && packages::installed(host, family, &[DEB_PYTHON_CONNECTOR])
                .await
                .map_err(|e| CheckError::with_source("read the installed packages", e))?
                .iter()
                .any(|s| s.name == DEB_PYTHON_CONNECTOR && s.installed.is_some());
        let python_ok = deb_package
            || has_file(
                host,
                &rerooted(&root, EL_PYTHON_WHEEL_DIR),
                &["mysql_connector_python-"],
                ".whl",
            )
            .await?
            || other_connector_installed(host, family).await?;
        if !python_ok {
            let (what, fix) = match family {
                Family::Deb => (
                    format!("{DEB_PYTHON_CONNECTOR} is not installed"),
                    format!("apt-get install {DEB_PYTHON_CONNECTOR}"),
                ),
                _ => (
                    format!(
                        "no mysql_connector_python wheel in {EL_PYTHON_WHEEL_DIR}, no connector package, no importable mysql.connector"
                    ),
                    "reinstall cloudstack-management (its %post installs the wheel with pip)"
                        .into(),
                ),
            };
            problems.push((
                Severity::Fail,
                format!("{what}: cloudstack-setup-databases and cloudstack-migrate-databases cannot import mysql.connector"),
                fix,
            ));
        }
        let subject = format!("{}:deps", host.name());
        if problems.is_empty() {
            return Ok(vec![Finding::pass(
                self.id(),
                subject,
                "java runs, a MySQL JDBC driver and MySQL's Python connector are installed",
            )]);
        }
        Ok(problems
            .into_iter()
            .map(|(sev, msg, fix)| Finding::new(self.id(), sev, &subject, msg).with_remedy(fix))
            .collect())
    }
}

/// The EL packages of MySQL's Python connector an operator (or an older spec) may have
/// installed instead of the wheel. UNCONFIRMED: which of these names older el8 specs of
/// apache/cloudstack required; each is a name EL repositories use.
const EL_PYTHON_CONNECTOR_PACKAGES: &[&str] = &[
    "mysql-connector-python3",
    "python3-mysql-connector",
    "mysql-connector-python",
];

/// Whether MySQL's Python connector is there without the deb's package or the el8 wheel: one
/// of [`EL_PYTHON_CONNECTOR_PACKAGES`] installed (EL), or `python3` importing
/// `mysql.connector` (what the database scripts do).
async fn other_connector_installed(host: &dyn Host, family: Family) -> Result<bool, CheckError> {
    let found = family == Family::Rpm
        && packages::installed(host, family, EL_PYTHON_CONNECTOR_PACKAGES)
            .await
            .map_err(|e| CheckError::with_source("read the installed packages", e))?
            .iter()
            .any(|s| s.installed.is_some());
    if found {
        return Ok(true);
    }
    Ok(host
        .run(&Cmd::new("python3").args(["-c", "import mysql.connector"]))
        .await
        .is_ok_and(|o| o.success()))
}

fn cx_post_only(cx: &MsContext) -> Severity {
    match cx.phase {
        Phase::Pre => Severity::Info,
        Phase::Post => Severity::Fail,
    }
}

/// The root a layout was re-rooted under (`/` for a stock layout): the parent of `/etc/cloudstack`.
fn root_of(layout: &Layout) -> PathBuf {
    layout
        .etc_dir
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

fn rerooted(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// One place the upgrade writes to and how much room it needs there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceNeed {
    /// What it is (`package cache`, `backup directory`).
    pub what: String,
    /// The directory (the nearest existing ancestor is measured).
    pub path: PathBuf,
    /// Bytes needed free.
    pub bytes: u64,
}

impl SpaceNeed {
    /// A need of `bytes` at `path`.
    pub fn new(what: impl Into<String>, path: impl Into<PathBuf>, bytes: u64) -> Self {
        SpaceNeed {
            what: what.into(),
            path: path.into(),
            bytes,
        }
    }
}

/// The places a CloudStack node's packages write to, under its `root`: the package's directory
/// under `/usr/share` and the package manager's cache.
pub(crate) async fn package_needs(host: &dyn Host, root: &Path, share: &str) -> Vec<SpaceNeed> {
    let cache = match packages::detect_family(host).await {
        Ok(Family::Rpm) => "/var/cache/dnf",
        _ => "/var/cache/apt",
    };
    vec![
        SpaceNeed::new(
            share.trim_start_matches("/usr/share/"),
            rerooted(root, share),
            PACKAGE_DIR_NEED,
        ),
        SpaceNeed::new("package cache", rerooted(root, cache), PACKAGE_CACHE_NEED),
    ]
}

/// `node.disk.free` (FAIL): free space on the filesystems the upgrade writes, measured with
/// `df -Pk` on the nearest existing directory: on every node the package directory and the
/// package cache ([`PACKAGE_DIR_NEED`], [`PACKAGE_CACHE_NEED`]); where the upgrade runs, the
/// backup directory (the databases' size plus [`HEADROOM`]); on the database's node, its data
/// directory (the biggest table plus [`HEADROOM`]: an `ALTER TABLE` of the schema migration
/// copies the table).
#[derive(Debug, Clone)]
pub struct DiskFree {
    /// What to measure.
    pub needs: Vec<SpaceNeed>,
}

/// The available bytes `df -Pk` reports for `path`.
fn parse_df(text: &str) -> Option<u64> {
    let line = text.lines().rfind(|l| !l.trim().is_empty())?;
    let avail: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    avail.checked_mul(1024)
}

fn human(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

#[async_trait]
impl Check<dyn Host> for DiskFree {
    fn id(&self) -> &str {
        NODE_DISK_FREE
    }

    async fn run(&self, host: &dyn Host) -> Result<Vec<Finding>, CheckError> {
        let mut out = Vec::new();
        for need in &self.needs {
            let mut at = need.path.clone();
            while !host.exists(&at).await? {
                match at.parent() {
                    Some(p) => at = p.to_path_buf(),
                    None => break,
                }
            }
            let df = host
                .run(&Cmd::new("df").args(["-Pk", &at.display().to_string()]))
                .await?;
            let avail = if df.success() {
                parse_df(&df.stdout_lossy())
            } else {
                None
            };
            let Some(avail) = avail else {
                return Err(CheckError::new(format!(
                    "{}: df -Pk {} gave no free space: {}",
                    host.name(),
                    at.display(),
                    df.stderr_lossy().trim()
                )));
            };
            let subject = format!("{}:{}", host.name(), need.path.display());
            let message = format!(
                "{}: {} free, {} needed",
                need.what,
                human(avail),
                human(need.bytes)
            );
            if avail < need.bytes {
                out.push(
                    Finding::new(self.id(), Severity::Fail, subject, message)
                    .with_remedy("free space there (old logs, packages in the cache: apt-get clean / dnf clean packages) or move it"),
                );
            } else {
                out.push(Finding::pass(self.id(), subject, message));
            }
        }
        Ok(out)
    }
}

/// `agent.config.drift` (WARN): on a KVM host, no unmerged package file beside the agent's
/// configuration (`.dpkg-dist`, `.rpmnew`, …) and, for 4.20+, a Log4j 2 `log4j-cloud.xml`:
/// the same rule as `ms.config.drift`, for `/etc/cloudstack/agent` (the el8 spec installs
/// `agent/target/transformed/log4j-cloud.xml` there as a config file, which an upgrade leaves
/// as it was when the operator changed it).
#[derive(Debug, Clone)]
pub struct AgentConfigDrift {
    /// The release being upgraded to.
    pub target: CsVersion,
    /// Before or after.
    pub phase: Phase,
}

#[async_trait]
impl Check<cs_agent::Node> for AgentConfigDrift {
    fn id(&self) -> &str {
        AGENT_CONFIG_DRIFT
    }

    async fn run(&self, node: &cs_agent::Node) -> Result<Vec<Finding>, CheckError> {
        let host = node.host.as_ref();
        let dir = &node.layout.agent_conf_dir;
        let mut out = Vec::new();
        let entries = match host.list_dir(dir).await {
            Ok(e) => e,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            if crate::ms_checks::DRIFT_SUFFIXES
                .iter()
                .any(|s| e.name.ends_with(s))
            {
                out.push(
                    Finding::new(
                        self.id(),
                        Severity::Warn,
                        format!("{}:{}", node.name(), dir.join(&e.name).display()),
                        "an unmerged package config file sits beside the live one",
                    )
                    .with_remedy("diff it with the live file, merge what is needed, remove it"),
                );
            }
        }
        let severity = match self.phase {
            Phase::Pre => Severity::Info,
            Phase::Post => Severity::Fail,
        };
        if let Some(f) = log4j_finding(
            host,
            &dir.join("log4j-cloud.xml"),
            self.target,
            severity,
            self.id(),
            node.name(),
        )
        .await?
        {
            out.push(f);
        }
        if out.is_empty() {
            out.push(Finding::pass(
                self.id(),
                node.name(),
                "no unmerged package config files",
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output_parses() {
        let t = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                 /dev/sda1        102400000  51200000  51200000      50% /\n";
        assert_eq!(parse_df(t), Some(51_200_000 * 1024));
        assert_eq!(parse_df("df: /x: No such file or directory\n"), None);
    }

    #[test]
    fn layout_roots() {
        assert_eq!(root_of(&Layout::default()), PathBuf::from("/"));
        let l = Layout::default().rerooted(Path::new("/srv/n1"));
        assert_eq!(root_of(&l), PathBuf::from("/srv/n1"));
    }
}
