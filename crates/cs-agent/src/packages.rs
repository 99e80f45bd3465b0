//! Packages and services on a KVM host: dpkg/apt or rpm/dnf, systemd units, Java, jars.

use std::collections::BTreeMap;
use std::time::Duration;

use cs_core::{Cmd, CsVersion, Host, HostError, Layout, Output};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The agent package.
pub const AGENT_PACKAGE: &str = "cloudstack-agent";
/// The package the agent depends on, upgraded with it.
pub const COMMON_PACKAGE: &str = "cloudstack-common";
/// The packages a refresh installs, at one exact version.
pub const AGENT_PACKAGES: &[&str] = &[COMMON_PACKAGE, AGENT_PACKAGE];
/// The agent's systemd unit.
pub const AGENT_SERVICE: &str = "cloudstack-agent";
/// libvirt's systemd unit.
pub const LIBVIRT_SERVICE: &str = "libvirtd";

const PKG_TIMEOUT: Duration = Duration::from_secs(900);
const SVC_TIMEOUT: Duration = Duration::from_secs(120);

/// A package-manager family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Family {
    /// Debian, Ubuntu: `dpkg-query`, `apt-get`, `apt-cache`, `apt-mark`.
    Deb,
    /// RHEL and relatives: `rpm`, `dnf`.
    Rpm,
}

/// What the package database says about one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageState {
    /// The package.
    pub name: String,
    /// The installed version string as the package manager prints it (`4.19.1.0`,
    /// `4.19.1.0-1.el8`), or `None`.
    pub installed: Option<String>,
    /// Whether it is held (`apt-mark hold`, `dnf versionlock`).
    pub held: bool,
}

impl PackageState {
    /// The installed version as a CloudStack version, when it parses.
    pub fn version(&self) -> Option<CsVersion> {
        self.installed
            .as_deref()
            .and_then(|v| CsVersion::parse(strip_epoch(v)).ok())
    }
}

fn strip_epoch(v: &str) -> &str {
    v.split_once(':').map_or(v, |(_, rest)| rest)
}

fn pkg_err(host: &dyn Host, cmd: &Cmd, out: &Output) -> Error {
    let stderr = out.stderr_lossy();
    let start = stderr.len().saturating_sub(400);
    Error::Package {
        host: host.name().to_string(),
        cmd: cmd.to_string(),
        code: out.code,
        stderr: stderr.get(start..).unwrap_or(&stderr).trim().to_string(),
    }
}

async fn run(host: &dyn Host, cmd: &Cmd) -> Result<Output> {
    host.run(cmd)
        .await
        .map_err(|e| Error::host(format!("run `{cmd}`"), e))
}

async fn run_ok(host: &dyn Host, cmd: &Cmd) -> Result<Output> {
    let out = run(host, cmd).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(pkg_err(host, cmd, &out))
    }
}

/// Whether a program is missing: a local spawn failure, or a shell's 127 over SSH.
fn missing(r: &std::result::Result<Output, HostError>) -> bool {
    matches!(r, Err(HostError::Spawn { .. })) || matches!(r, Ok(o) if o.code == 127)
}

/// Runs a command whose program may be missing: [`Error::NoPackageManager`] then.
async fn run_present(host: &dyn Host, cmd: &Cmd) -> Result<Output> {
    let r = host.run(cmd).await;
    if missing(&r) {
        return Err(Error::NoPackageManager {
            host: host.name().to_string(),
        });
    }
    r.map_err(|e| Error::host(format!("run `{cmd}`"), e))
}

/// Finds the package-manager family: `dpkg-query`, else `rpm`.
///
/// # Errors
/// [`Error::NoPackageManager`] when neither answers; host errors.
pub async fn detect_family(host: &dyn Host) -> Result<Family> {
    let deb = host.run(&Cmd::new("dpkg-query").arg("--version")).await;
    if !missing(&deb) {
        deb.map_err(|e| Error::host("run dpkg-query", e))?;
        return Ok(Family::Deb);
    }
    let rpm = host.run(&Cmd::new("rpm").arg("--version")).await;
    if !missing(&rpm) {
        rpm.map_err(|e| Error::host("run rpm", e))?;
        return Ok(Family::Rpm);
    }
    Err(Error::NoPackageManager {
        host: host.name().to_string(),
    })
}

/// Installed versions and hold state of `packages`.
///
/// # Errors
/// [`Error::NoPackageManager`] when the family's query program is missing; host errors.
pub async fn installed(
    host: &dyn Host,
    family: Family,
    packages: &[&str],
) -> Result<Vec<PackageState>> {
    // Exit 1 with "no packages found" for unknown names: not an error here.
    let out = run_present(host, &query_cmd(family, packages)).await?;
    let locks = match family {
        Family::Deb => String::new(),
        Family::Rpm => run(host, &locks_cmd())
            .await
            .map(|o| o.stdout_lossy())
            .unwrap_or_default(),
    };
    Ok(parse_installed(
        family,
        packages,
        &out.stdout_lossy(),
        &locks,
    ))
}

/// The command listing installed versions of `packages` (`dpkg-query -W`, `rpm -q`).
pub(crate) fn query_cmd(family: Family, packages: &[&str]) -> Cmd {
    match family {
        Family::Deb => Cmd::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package}\t${Version}\t${db:Status-Abbrev}\t${Status}\n")
            .args(packages.iter().copied()),
        Family::Rpm => Cmd::new("rpm")
            .arg("-q")
            .arg("--qf")
            .arg("%{NAME}\t%{VERSION}-%{RELEASE}\n")
            .args(packages.iter().copied()),
    }
}

/// The command listing dnf's version locks (rpm hosts' holds).
pub(crate) fn locks_cmd() -> Cmd {
    Cmd::new("dnf").args(["-q", "versionlock", "list"])
}

/// Reads [`query_cmd`]'s output (and, on rpm hosts, [`locks_cmd`]'s) into one state per
/// package, in the order of `packages`.
pub(crate) fn parse_installed(
    family: Family,
    packages: &[&str],
    text: &str,
    locks: &str,
) -> Vec<PackageState> {
    match family {
        Family::Deb => {
            let mut found: BTreeMap<String, PackageState> = BTreeMap::new();
            for line in text.lines() {
                let f: Vec<&str> = line.split('\t').collect();
                if f.len() < 3 {
                    continue;
                }
                let abbrev = f[2];
                let status = f.get(3).copied().unwrap_or("");
                let is_installed = abbrev.starts_with("ii") || abbrev.starts_with("hi");
                found.insert(
                    f[0].to_string(),
                    PackageState {
                        name: f[0].to_string(),
                        installed: (is_installed && !f[1].is_empty()).then(|| f[1].to_string()),
                        held: abbrev.starts_with('h') || status.starts_with("hold "),
                    },
                );
            }
            packages
                .iter()
                .map(|p| {
                    found.remove(*p).unwrap_or(PackageState {
                        name: (*p).to_string(),
                        installed: None,
                        held: false,
                    })
                })
                .collect()
        }
        Family::Rpm => packages
            .iter()
            .map(|p| {
                let installed = text.lines().find_map(|l| {
                    l.split_once('\t')
                        .filter(|(n, _)| n == p)
                        .map(|(_, v)| v.to_string())
                });
                PackageState {
                    name: (*p).to_string(),
                    installed,
                    // `cloudstack-agent-0:4.19.1.0-1.el8.*`
                    held: locks.lines().any(|l| {
                        l.trim().strip_prefix(p).is_some_and(|r| {
                            r.strip_prefix('-')
                                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                        })
                    }),
                }
            })
            .collect(),
    }
}

/// The versions of `package` the configured repositories offer, as printed (newest first for
/// apt, as dnf lists them for rpm).
///
/// # Errors
/// Host errors.
pub async fn available(host: &dyn Host, family: Family, package: &str) -> Result<Vec<String>> {
    match family {
        Family::Deb => {
            let out = run(host, &Cmd::new("apt-cache").arg("madison").arg(package)).await?;
            Ok(out
                .stdout_lossy()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split('|').map(str::trim).collect();
                    (f.len() >= 2 && f[0] == package).then(|| f[1].to_string())
                })
                .collect())
        }
        Family::Rpm => {
            let cmd = Cmd::new("dnf")
                .args(["-q", "repoquery", "--qf", "%{version}-%{release}\n"])
                .arg(package);
            let out = run(host, &cmd).await?;
            Ok(out
                .stdout_lossy()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect())
        }
    }
}

/// The candidate version of `package`: what an install without a version would pick.
///
/// # Errors
/// Host errors.
pub async fn candidate(host: &dyn Host, family: Family, package: &str) -> Result<Option<String>> {
    match family {
        Family::Deb => {
            let out = run(host, &Cmd::new("apt-cache").arg("policy").arg(package)).await?;
            Ok(out.stdout_lossy().lines().find_map(|l| {
                l.trim()
                    .strip_prefix("Candidate:")
                    .map(str::trim)
                    .filter(|v| *v != "(none)")
                    .map(str::to_string)
            }))
        }
        Family::Rpm => {
            let mut all = available(host, family, package).await?;
            all.sort_by_key(|v| CsVersion::parse(v).ok());
            Ok(all.pop())
        }
    }
}

/// The package-version string the repositories offer for a CloudStack version (`4.19.1.0`
/// matches `4.19.1.0`, `4.19.1.0-1.el8` and `1:4.19.1.0~bpo1`), if any.
pub fn pick_version<'a>(offered: &'a [String], version: &CsVersion) -> Option<&'a str> {
    offered.iter().map(String::as_str).find(|v| {
        CsVersion::parse(strip_epoch(v).split('~').next().unwrap_or(v)).ok() == Some(*version)
    })
}

/// Refreshes the package index (`apt-get update`, `dnf makecache`).
///
/// # Errors
/// [`Error::Package`] when it fails.
pub async fn refresh_index(host: &dyn Host, family: Family) -> Result<()> {
    let cmd = match family {
        Family::Deb => Cmd::new("apt-get")
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        Family::Rpm => Cmd::new("dnf").args(["-q", "makecache"]),
    };
    run_ok(host, &cmd.timeout(PKG_TIMEOUT)).await.map(drop)
}

/// Installs exactly `version` (a package-version string as [`available`] lists it) of each of
/// `packages`, downgrading if needed, keeping changed configuration files (`--force-confold`),
/// and installing through a hold.
///
/// # Errors
/// [`Error::Package`] when the package manager fails.
pub async fn install_exact(
    host: &dyn Host,
    family: Family,
    packages: &[&str],
    version: &str,
) -> Result<()> {
    let cmd = match family {
        Family::Deb => Cmd::new("apt-get")
            .args([
                "-q",
                "-y",
                "--allow-downgrades",
                "--allow-change-held-packages",
                "-o",
                "Dpkg::Options::=--force-confold",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "install",
            ])
            .args(packages.iter().map(|p| format!("{p}={version}")))
            .env("DEBIAN_FRONTEND", "noninteractive"),
        Family::Rpm => Cmd::new("dnf")
            .args([
                "-q",
                "-y",
                "--allowerasing",
                "--disableexcludes=all",
                "install",
            ])
            .args(packages.iter().map(|p| format!("{p}-{version}"))),
    };
    run_ok(host, &cmd.timeout(PKG_TIMEOUT)).await.map(drop)
}

/// Holds `packages` at their installed version (`apt-mark hold`, `dnf versionlock add`).
///
/// # Errors
/// [`Error::Package`] when the package manager fails.
pub async fn hold(host: &dyn Host, family: Family, packages: &[&str]) -> Result<()> {
    let cmd = match family {
        Family::Deb => Cmd::new("apt-mark").arg("hold"),
        Family::Rpm => Cmd::new("dnf").args(["-q", "versionlock", "add"]),
    };
    run_ok(host, &cmd.args(packages.iter().copied()))
        .await
        .map(drop)
}

/// Releases a hold (`apt-mark unhold`, `dnf versionlock delete`).
///
/// # Errors
/// [`Error::Package`] when the package manager fails.
pub async fn unhold(host: &dyn Host, family: Family, packages: &[&str]) -> Result<()> {
    let cmd = match family {
        Family::Deb => Cmd::new("apt-mark").arg("unhold"),
        Family::Rpm => Cmd::new("dnf").args(["-q", "versionlock", "delete"]),
    };
    run_ok(host, &cmd.args(packages.iter().copied()))
        .await
        .map(drop)
}

/// A systemd action on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceAction {
    /// `systemctl start`.
    Start,
    /// `systemctl stop`.
    Stop,
    /// `systemctl restart`.
    Restart,
}

/// Runs `systemctl start|stop|restart unit`.
///
/// # Errors
/// [`Error::Package`] (the command's failure) when systemctl exits non-zero.
pub async fn service(host: &dyn Host, action: ServiceAction, unit: &str) -> Result<()> {
    let verb = match action {
        ServiceAction::Start => "start",
        ServiceAction::Stop => "stop",
        ServiceAction::Restart => "restart",
    };
    let cmd = Cmd::new("systemctl")
        .arg(verb)
        .arg(unit)
        .timeout(SVC_TIMEOUT);
    run_ok(host, &cmd).await.map(drop)
}

/// `systemctl is-active unit`: `active`, `inactive`, `failed`, `activating`, `unknown`, …
///
/// # Errors
/// Host errors.
pub async fn service_status(host: &dyn Host, unit: &str) -> Result<String> {
    let out = run(host, &Cmd::new("systemctl").arg("is-active").arg(unit)).await?;
    let s = out.stdout_lossy().trim().to_string();
    Ok(if s.is_empty() { "unknown".into() } else { s })
}

/// The major version of the default `java` (`java -version`), or `None` when there is none.
///
/// # Errors
/// Host errors other than a missing `java`.
pub async fn java_major(host: &dyn Host) -> Result<Option<u32>> {
    let r = host.run(&java_cmd()).await;
    if missing(&r) {
        return Ok(None);
    }
    let out = r.map_err(|e| Error::host("run java -version", e))?;
    Ok(java_major_of(&out.stderr, &out.stdout))
}

/// `java -version`.
pub(crate) fn java_cmd() -> Cmd {
    Cmd::new("java").arg("-version")
}

/// The major version in `java -version`'s output (it writes to standard error).
pub(crate) fn java_major_of(stderr: &[u8], stdout: &[u8]) -> Option<u32> {
    parse_java_major(&format!(
        "{}{}",
        String::from_utf8_lossy(stderr),
        String::from_utf8_lossy(stdout)
    ))
}

/// Parses `java -version` output: `openjdk version "17.0.15"` → 17, `"1.8.0_292"` → 8.
pub fn parse_java_major(text: &str) -> Option<u32> {
    let quoted = text.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// `cloud-*.jar` files under the agent's lib directory, grouped by the version in their name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JarVersions {
    /// Version → jar names.
    pub by_version: BTreeMap<String, Vec<String>>,
    /// `cloud-*.jar` names without a recognisable version.
    pub unversioned: Vec<String>,
}

impl JarVersions {
    /// Whether more than one version is present.
    pub fn is_mixed(&self) -> bool {
        self.by_version.len() > 1
    }

    /// The versions present.
    pub fn versions(&self) -> Vec<&str> {
        self.by_version.keys().map(String::as_str).collect()
    }
}

/// Lists `cloud-*.jar` under `layout.agent_lib_dir`.
///
/// # Errors
/// Host errors other than a missing directory.
pub async fn jar_versions(host: &dyn Host, layout: &Layout) -> Result<JarVersions> {
    let dir = &layout.agent_lib_dir;
    let entries = match host.list_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(Error::host(format!("list {}", dir.display()), e)),
    };
    Ok(group_jars(entries.iter().map(|e| e.name.as_str())))
}

/// Groups jar names by version (`cloud-agent-4.19.1.0.jar` → `4.19.1.0`).
pub fn group_jars<'a>(names: impl Iterator<Item = &'a str>) -> JarVersions {
    let mut out = JarVersions::default();
    for name in names {
        let Some(stem) = name
            .strip_prefix("cloud-")
            .and_then(|n| n.strip_suffix(".jar"))
        else {
            continue;
        };
        let version = stem
            .match_indices('-')
            .map(|(i, _)| &stem[i + 1..])
            .find(|rest| {
                let core = rest.split('-').next().unwrap_or("");
                rest.starts_with(|c: char| c.is_ascii_digit()) && CsVersion::parse(core).is_ok()
            });
        match version {
            Some(v) => out
                .by_version
                .entry(v.to_string())
                .or_default()
                .push(name.to_string()),
            None => out.unversioned.push(name.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions() {
        assert_eq!(
            parse_java_major("openjdk version \"17.0.15\" 2025-04-15"),
            Some(17)
        );
        assert_eq!(parse_java_major("java version \"1.8.0_292\""), Some(8));
        assert_eq!(
            parse_java_major("openjdk version \"21\" 2023-09-19"),
            Some(21)
        );
        assert_eq!(parse_java_major("nothing"), None);
    }

    #[test]
    fn jars_group_by_version() {
        let j = group_jars(
            [
                "cloud-agent-4.19.1.0.jar",
                "cloud-plugin-hypervisor-kvm-4.19.1.0.jar",
                "cloud-utils-4.18.0.0-SNAPSHOT.jar",
                "cloud-foo.jar",
                "commons-io-2.8.jar",
            ]
            .into_iter(),
        );
        assert_eq!(j.versions(), ["4.18.0.0-SNAPSHOT", "4.19.1.0"]);
        assert!(j.is_mixed());
        assert_eq!(j.unversioned, ["cloud-foo.jar"]);
    }

    #[test]
    fn versions_pick_exact_matches() {
        let offered = vec![
            "4.19.1.0".to_string(),
            "4.19.0.0-1.el8".into(),
            "1:4.18.0.0~x".into(),
        ];
        let v = |s: &str| CsVersion::parse(s).unwrap();
        assert_eq!(
            pick_version(&offered, &v("4.19.0.0")),
            Some("4.19.0.0-1.el8")
        );
        assert_eq!(pick_version(&offered, &v("4.18.0.0")), Some("1:4.18.0.0~x"));
        assert_eq!(pick_version(&offered, &v("4.20.0.0")), None);
    }
}
