//! The management-server operations the upgrade steps share: `systemctl` on a node, the
//! installed version, the `mshost` rows, installing, stopping and starting every service node,
//! the repository switch, and the clean-up after a configuration restore.

use std::path::Path;
use std::time::{Duration, Instant};

use cs_agent::packages::{self, Family};
use cs_core::{CsVersion, StepError, error_chain};

use super::{
    MANAGEMENT_PACKAGES, MANAGEMENT_UNIT, NodeHandle, USAGE_UNIT, UpgradeContext, step_err,
};

pub(super) async fn installed_version(n: &NodeHandle) -> Result<Option<CsVersion>, StepError> {
    let family = packages::detect_family(n.host.as_ref())
        .await
        .map_err(|e| step_err(&format!("{}: package manager", n.name), e))?;
    let states = packages::installed(n.host.as_ref(), family, &[MANAGEMENT_UNIT])
        .await
        .map_err(|e| step_err(&format!("{}: installed packages", n.name), e))?;
    Ok(states.first().and_then(|s| s.version()))
}

/// The management packages installed on `n` (of [`MANAGEMENT_PACKAGES`]), with their states.
/// Services and packages are only stopped, installed and started where they are installed:
/// many clouds run `cloudstack-usage` on some management servers only.
pub(super) async fn installed_packages(
    n: &NodeHandle,
) -> Result<(Family, Vec<packages::PackageState>), StepError> {
    let family = packages::detect_family(n.host.as_ref())
        .await
        .map_err(|e| step_err(&format!("{}: package manager", n.name), e))?;
    let states = packages::installed(n.host.as_ref(), family, MANAGEMENT_PACKAGES)
        .await
        .map_err(|e| step_err(&format!("{}: installed packages", n.name), e))?;
    Ok((
        family,
        states
            .into_iter()
            .filter(|s| s.version().is_some())
            .collect(),
    ))
}

/// The CloudStack units installed on `n`: the management server's and the usage server's,
/// where their packages are.
pub(super) async fn installed_units(n: &NodeHandle) -> Result<Vec<&'static str>, StepError> {
    let (_, states) = installed_packages(n).await?;
    Ok([MANAGEMENT_UNIT, USAGE_UNIT]
        .into_iter()
        .filter(|u| states.iter().any(|s| s.name == *u))
        .collect())
}

/// What `systemctl is-active` says of `unit` (`active`, `inactive`, `failed`, …), through
/// cs-agent's services, the one home of what both node kinds run.
pub(super) async fn unit_state(n: &NodeHandle, unit: &str) -> Result<String, StepError> {
    packages::service_status(n.host.as_ref(), unit)
        .await
        .map_err(|e| step_err(&format!("{}: systemctl is-active {unit}", n.name), e))
}

pub(super) async fn unit_active(n: &NodeHandle, unit: &str) -> Result<bool, StepError> {
    Ok(unit_state(n, unit).await? == "active")
}

/// `systemctl start|stop|restart unit` on `n`, through cs-agent's services.
pub(super) async fn systemctl(
    n: &NodeHandle,
    action: packages::ServiceAction,
    unit: &str,
) -> Result<(), StepError> {
    let verb = format!("{action:?}").to_lowercase();
    packages::service(n.host.as_ref(), action, unit)
        .await
        .map_err(|e| step_err(&format!("{}: systemctl {verb} {unit}", n.name), e))
}

/// The `mshost` rows that are Up, for a message: `ms1 at 4.19.0.0, ms2`, or `none`.
fn up_list(rows: &[(String, Option<String>)]) -> String {
    if rows.is_empty() {
        return "none".into();
    }
    rows.iter()
        .map(|(name, version)| match version {
            Some(v) => format!("{name} at {v}"),
            None => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn mshosts_up(
    cx: &UpgradeContext,
) -> Result<Vec<(String, Option<String>)>, StepError> {
    let state = cs_schema::read_state(&cx.db)
        .await
        .map_err(|e| step_err("read mshost", e))?;
    Ok(state
        .mshosts
        .iter()
        .filter(|m| !m.removed && m.state == "Up")
        .map(|m| (m.name.clone().unwrap_or_default(), m.version.clone()))
        .collect())
}

/// Waits until `pred` holds on the mshost rows, polling every 200 ms.
pub(super) async fn wait_mshosts(
    cx: &UpgradeContext,
    what: &str,
    deadline: Duration,
    pred: impl Fn(&[(String, Option<String>)]) -> bool,
) -> Result<(), StepError> {
    let start = Instant::now();
    loop {
        let rows = mshosts_up(cx).await?;
        if pred(&rows) {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            return Err(StepError::new(format!(
                "timed out after {} waiting for {what} (Up: {})",
                humantime::format_duration(deadline),
                up_list(&rows)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn is_up_at(rows: &[(String, Option<String>)], name: &str, v: &CsVersion) -> bool {
    rows.iter().any(|(n, ver)| {
        n == name && ver.as_deref().and_then(|s| CsVersion::parse(s).ok()) == Some(*v)
    })
}

/// Stops the usage and management servers wherever they are installed.
pub(super) async fn stop_all(cx: &UpgradeContext) -> Result<(), StepError> {
    for n in cx.service_nodes() {
        let units = installed_units(n).await?;
        for unit in [USAGE_UNIT, MANAGEMENT_UNIT] {
            if units.contains(&unit) {
                systemctl(n, packages::ServiceAction::Stop, unit).await?;
            }
        }
    }
    Ok(())
}

/// Why the management server on `n` failed to start, from the tail of its log: the last known
/// signature with its cause and remedy, or the last lines.
async fn explain_failed_start(n: &NodeHandle) -> String {
    let log = n.layout.management_log();
    let text = match crate::diagnose::read_tail(n.host.as_ref(), &log, 64 * 1024).await {
        Ok(Some(t)) => t,
        Ok(None) => return format!("{} does not exist", log.display()),
        Err(e) => return format!("{} is unreadable: {}", log.display(), error_chain(&e)),
    };
    if let Some(m) = cs_core::scan_log(&text, cs_core::LogKind::ManagementServer).last() {
        return format!(
            "{} ({}: `{}`); remedy: {}",
            m.signature.cause,
            log.display(),
            m.line,
            m.signature.remedy
        );
    }
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!("last lines of {}:\n{}", log.display(), tail.join("\n"))
}

/// Starts the management servers in order (each Up at `version` before the next) and the usage
/// servers. A server whose unit fails stops the wait at once, with the reason from its log.
pub(super) async fn start_all(cx: &UpgradeContext, version: &CsVersion) -> Result<(), StepError> {
    for m in &cx.management {
        systemctl(m, packages::ServiceAction::Start, MANAGEMENT_UNIT).await?;
        let deadline = cx.config.policy.migration_deadline;
        let start = Instant::now();
        loop {
            let rows = mshosts_up(cx).await?;
            if is_up_at(&rows, &m.name, version) {
                break;
            }
            if unit_state(m, MANAGEMENT_UNIT).await? == "failed" {
                return Err(StepError::new(format!(
                    "{}: {MANAGEMENT_UNIT} failed to start at {version}: {}",
                    m.name,
                    explain_failed_start(m).await
                )));
            }
            if start.elapsed() >= deadline {
                return Err(StepError::new(format!(
                    "{}: not Up at {version} after {} (Up: {})",
                    m.name,
                    humantime::format_duration(deadline),
                    up_list(&rows)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for u in &cx.usage {
        if installed_units(u).await?.contains(&USAGE_UNIT) {
            systemctl(u, packages::ServiceAction::Start, USAGE_UNIT).await?;
        }
    }
    Ok(())
}

async fn pick(n: &NodeHandle, family: Family, v: &CsVersion) -> Result<String, StepError> {
    let offered = packages::available(n.host.as_ref(), family, MANAGEMENT_UNIT)
        .await
        .map_err(|e| step_err(&format!("{}: available versions", n.name), e))?;
    packages::pick_version(&offered, v)
        .map(str::to_string)
        .ok_or_else(|| {
            StepError::new(format!(
                "{}: the repositories do not offer {MANAGEMENT_UNIT} {v} (offered: {})",
                n.name,
                offered.join(", ")
            ))
        })
}

/// Installs exactly `v` of the management packages each service node has (and only those: a
/// node without `cloudstack-usage` does not get it) where they are not all at `v` already (a
/// node the failed install never reached is left alone).
pub(super) async fn install_all(cx: &UpgradeContext, v: &CsVersion) -> Result<(), StepError> {
    for n in cx.service_nodes() {
        let host = n.host.as_ref();
        let (family, states) = installed_packages(n).await?;
        if has_all_at(&states, v) {
            continue;
        }
        let names: Vec<&str> = MANAGEMENT_PACKAGES
            .iter()
            .copied()
            .filter(|p| states.iter().any(|s| s.name == *p))
            .collect();
        packages::refresh_index(host, family)
            .await
            .map_err(|e| step_err(&format!("{}: refresh the package index", n.name), e))?;
        let version = pick(n, family, v).await?;
        packages::install_exact(host, family, &names, &version)
            .await
            .map_err(|e| step_err(&format!("{}: install {version}", n.name), e))?;
    }
    Ok(())
}

/// Whether a node's installed management packages are all at exactly `v` (and there is one).
fn has_all_at(states: &[packages::PackageState], v: &CsVersion) -> bool {
    !states.is_empty() && states.iter().all(|s| s.version() == Some(*v))
}

pub(super) async fn switch_repos(cx: &UpgradeContext, line: &str) -> Result<(), StepError> {
    for n in cx.service_nodes() {
        let switcher = cs_repo::RepoSwitcher {
            layout: n.layout.clone(),
            rules: cx.config.repo_rules(),
        };
        switcher
            .switch_to(n.host.as_ref(), line)
            .await
            .map_err(|e| step_err(&format!("{}: switch repositories to {line}", n.name), e))?;
    }
    Ok(())
}

/// How many service nodes have every CloudStack repository entry at `line`.
pub(super) async fn repos_at(cx: &UpgradeContext, line: &str) -> Result<usize, StepError> {
    let rules = cx.config.repo_rules();
    let mut at = 0;
    for n in cx.service_nodes() {
        let paths = cs_repo::discover(n.host.as_ref(), &n.layout)
            .await
            .map_err(|e| step_err(&format!("{}: find repository files", n.name), e))?;
        let plan = cs_repo::plan(n.host.as_ref(), &paths, line, &rules)
            .await
            .map_err(|e| step_err(&format!("{}: read repository files", n.name), e))?;
        if plan.is_noop() && plan.has_cloudstack_entries() {
            at += 1;
        }
    }
    Ok(at)
}

/// Suffixes of files the upgrade's tools leave beside the ones they change: cs-repo's backup
/// copies and the package managers' side files.
const LEFTOVER_SUFFIXES: &[&str] = &[
    ".cs-upgrade.bak",
    ".dpkg-dist",
    ".dpkg-old",
    ".dpkg-new",
    ".rpmnew",
    ".rpmsave",
];

/// Removes, from every directory of `bundle`, the files the upgrade created beside the bundled
/// ones (see [`LEFTOVER_SUFFIXES`]), so a rolled-back node has the files it had before. Files
/// of other names, and leftovers that were already there, are kept.
pub(super) async fn remove_leftovers(
    n: &NodeHandle,
    bundle: &cs_backup::ConfigBundle,
) -> Result<(), StepError> {
    let bundled: std::collections::BTreeSet<&str> =
        bundle.entries.iter().map(|e| e.path.as_str()).collect();
    for dir in bundle
        .entries
        .iter()
        .filter(|e| e.kind == cs_core::FileKind::Dir)
    {
        let Ok(entries) = n.host.list_dir(Path::new(&dir.path)).await else {
            continue;
        };
        for e in entries {
            let path = Path::new(&dir.path).join(&e.name);
            let created = is_leftover(
                &e.name,
                e.meta.kind == cs_core::FileKind::File,
                bundled.contains(path.to_string_lossy().as_ref()),
            );
            if created {
                n.host.remove_file(&path).await.map_err(|err| {
                    step_err(&format!("{}: remove {}", n.name, path.display()), err)
                })?;
            }
        }
    }
    Ok(())
}

/// Whether a file found in a bundled directory is one the upgrade's tools left there: a regular
/// file named with one of [`LEFTOVER_SUFFIXES`] that the bundle does not hold.
fn is_leftover(name: &str, is_file: bool, bundled: bool) -> bool {
    is_file && LEFTOVER_SUFFIXES.iter().any(|s| name.ends_with(s)) && !bundled
}

#[cfg(test)]
mod tests {
    use cs_agent::packages::PackageState;
    use cs_core::CsVersion;

    use super::{MANAGEMENT_PACKAGES, has_all_at, is_leftover, is_up_at};

    fn v(s: &str) -> CsVersion {
        CsVersion::parse(s).expect("test versions parse")
    }

    #[track_caller]
    fn check_up(rows: &[(&str, Option<&str>)], name: &str, expected: bool) {
        let rows: Vec<(String, Option<String>)> = rows
            .iter()
            .map(|(n, ver)| (n.to_string(), ver.map(str::to_string)))
            .collect();
        assert_eq!(is_up_at(&rows, name, &v("4.19.0.0")), expected);
    }

    #[test]
    fn a_server_is_up_at_a_version_when_its_row_says_so() {
        check_up(&[("ms1", Some("4.19.0.0"))], "ms1", true);
        check_up(
            &[("ms2", Some("4.17.0.0")), ("ms1", Some("4.19.0.0"))],
            "ms1",
            true,
        );
        // Versions compare as CloudStack's do: 4.19.0 is 4.19.0.0.
        check_up(&[("ms1", Some("4.19.0"))], "ms1", true);
    }

    #[test]
    fn another_version_another_server_or_no_version_is_not_up() {
        check_up(&[], "ms1", false);
        check_up(&[("ms1", Some("4.17.0.0"))], "ms1", false);
        check_up(&[("ms2", Some("4.19.0.0"))], "ms1", false);
        check_up(&[("ms1", None)], "ms1", false);
        check_up(&[("ms1", Some("not a version"))], "ms1", false);
    }

    /// The installed packages of a node (`None`: not installed, left out as
    /// `installed_packages` leaves it out).
    #[track_caller]
    fn check_all_at(installed: &[Option<&str>], expected: bool) {
        let states: Vec<PackageState> = MANAGEMENT_PACKAGES
            .iter()
            .zip(installed)
            .filter_map(|(name, ver)| {
                ver.map(|ver| PackageState {
                    name: (*name).to_string(),
                    installed: Some(ver.to_string()),
                    held: false,
                })
            })
            .collect();
        assert_eq!(has_all_at(&states, &v("4.19.0.0")), expected);
    }

    #[test]
    fn a_node_with_every_installed_package_at_the_version_needs_no_install() {
        check_all_at(&[Some("4.19.0.0"); 3], true);
        check_all_at(
            &[Some("4.19.0.0-1"), Some("4.19.0.0"), Some("4.19.0.0")],
            true,
        );
        // No usage server on this node: nothing to install for it.
        check_all_at(&[Some("4.19.0.0"), Some("4.19.0.0"), None], true);
    }

    #[test]
    fn a_node_with_another_version_or_no_package_needs_the_install() {
        check_all_at(
            &[Some("4.19.0.0"), Some("4.17.0.0"), Some("4.19.0.0")],
            false,
        );
        check_all_at(&[Some("4.18.0.0"), Some("4.18.0.0"), None], false);
        check_all_at(&[None, None, None], false);
    }

    #[track_caller]
    fn check_leftover(name: &str, is_file: bool, bundled: bool, expected: bool) {
        assert_eq!(is_leftover(name, is_file, bundled), expected);
    }

    #[test]
    fn files_the_tools_left_are_leftovers() {
        check_leftover("cloudstack.list.cs-upgrade.bak", true, false, true);
        check_leftover("db.properties.dpkg-dist", true, false, true);
        check_leftover("cloudstack.repo.rpmnew", true, false, true);
    }

    #[test]
    fn bundled_files_directories_and_other_names_are_kept() {
        check_leftover("cloudstack.list.cs-upgrade.bak", true, true, false);
        check_leftover("old.dpkg-old", false, false, false);
        check_leftover("cloudstack.list", true, false, false);
    }
}
