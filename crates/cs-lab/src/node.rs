//! What every simulated node shares, whatever its role: its directory (a re-rooted filesystem,
//! the stand-ins and their state), its package-manager family, the stand-ins' common core
//! (`data/node/core.sh`: `systemctl`, dpkg/apt and rpm/dnf, `java`, `ss`, `df`, `python3`), its
//! sshd, and reading back what the stand-ins recorded (packages, units, `systemctl` calls,
//! faults).
//! [`crate::KvmHost`] and [`crate::MgmtNode`] are both built on a [`NodeDir`].
//!
//! Directory of a node:
//!
//! ```text
//! root/    the node's files, where a re-rooted Layout points
//! bin/     .core.sh (the shared core), .standin (the role's script, which sources the core),
//!          links named after each program to .standin, and .absent for the other family's
//!          tools (first in PATH over SSH, and for the nodes' local_host)
//! state/   family (deb|rpm), installed/<pkg> (package version), held/<pkg>, services/<unit>
//!          (active|inactive|failed; a unit exists when its file does), repo/<line> (versions
//!          offered), index (line of the last apt-get update / dnf makecache), faults/<fault>,
//!          java_major, systemctl.log, install.log, and what the role keeps
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use cs_core::{Host, LocalHost};

use crate::sshd::SshServer;
use crate::util::{StandInHost, command, io, write};
use crate::{LabError, Result};

const CORE: &str = include_str!("../data/node/core.sh");
const ABSENT: &str = "#!/bin/sh\necho \"$(basename \"$0\"): command not found\" >&2\nexit 127\n";
/// The programs every node's stand-in answers, whatever the family and role.
const COMMON_TOOLS: &[&str] = &["systemctl", "java", "ss", "df", "python3"];
const DEB_TOOLS: &[&str] = &["dpkg-query", "apt-get", "apt-cache", "apt-mark"];
const RPM_TOOLS: &[&str] = &["rpm", "dnf"];

/// The package-manager family (and distribution) a lab node simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LabFamily {
    /// dpkg + apt (Ubuntu 22.04), `cloudstack.list`.
    #[default]
    Deb,
    /// rpm + dnf (Rocky Linux 9), `cloudstack.repo`.
    Rpm,
}

impl LabFamily {
    /// The package version CloudStack's packages of `version` carry in this family: the
    /// upstream version for a deb (`4.19.0.0`), version-release for an rpm (`4.19.0.0-1`:
    /// CloudStack's `packaging/el8/cloud.spec` builds `Release: %{_rel}` with `_rel` 1 and no
    /// `%{dist}` tag).
    pub fn package_version(self, version: &str) -> String {
        match self {
            LabFamily::Deb => version.to_string(),
            LabFamily::Rpm => format!("{version}-1"),
        }
    }

    fn tools(self) -> &'static [&'static str] {
        match self {
            LabFamily::Deb => DEB_TOOLS,
            LabFamily::Rpm => RPM_TOOLS,
        }
    }

    fn other_tools(self) -> &'static [&'static str] {
        match self {
            LabFamily::Deb => RPM_TOOLS,
            LabFamily::Rpm => DEB_TOOLS,
        }
    }

    fn state_name(self) -> &'static str {
        match self {
            LabFamily::Deb => "deb",
            LabFamily::Rpm => "rpm",
        }
    }

    fn os_release(self) -> &'static str {
        match self {
            LabFamily::Deb => {
                "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=jammy\n"
            }
            LabFamily::Rpm => {
                "NAME=\"Rocky Linux\"\nVERSION_ID=\"9.3\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nPLATFORM_ID=\"platform:el9\"\n"
            }
        }
    }
}

/// A node's directory (see the module docs); removed when dropped. Owners keep it as their
/// last field, so that the sshd stops before the directory goes.
pub(crate) struct NodeDir {
    dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    state: PathBuf,
    family: LabFamily,
}

impl fmt::Debug for NodeDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeDir")
            .field("dir", &self.dir.path())
            .field("family", &self.family)
            .finish()
    }
}

impl NodeDir {
    /// Creates the directory (`prefix` names it in `/tmp`) with the family's `os-release` and
    /// the state directories every node has.
    pub(crate) fn create(prefix: &str, family: LabFamily) -> Result<NodeDir> {
        let dir = io(
            "create lab node dir",
            tempfile::Builder::new().prefix(prefix).tempdir(),
        )?;
        let d = dir.path();
        let (root, bin, state) = (d.join("root"), d.join("bin"), d.join("state"));
        for sub in ["faults", "held", "services", "installed", "repo"] {
            io(
                format!("create state/{sub}"),
                std::fs::create_dir_all(state.join(sub)),
            )?;
        }
        io("create bin", std::fs::create_dir_all(&bin))?;
        write(
            &state.join("family"),
            format!("{}\n", family.state_name()),
            0o644,
        )?;
        write(&root.join("etc/os-release"), family.os_release(), 0o644)?;
        Ok(NodeDir {
            dir,
            root,
            bin,
            state,
            family,
        })
    }

    /// Writes the shared core and the role's script, links the common programs, the family's
    /// and `role_tools` to it, and makes the other family's tools missing (a Debian machine's
    /// real `dpkg-query` must not answer for an rpm node, nor its `rpm` for a deb one).
    pub(crate) fn install_standins(&self, role_script: &str, role_tools: &[&str]) -> Result<()> {
        write(&self.bin.join(".core.sh"), CORE, 0o644)?;
        write(&self.bin.join(".standin"), role_script, 0o755)?;
        for t in COMMON_TOOLS
            .iter()
            .chain(self.family.tools())
            .chain(role_tools)
        {
            io(
                format!("link stand-in {t}"),
                std::os::unix::fs::symlink(".standin", self.bin.join(t)),
            )?;
        }
        write(&self.bin.join(".absent"), ABSENT, 0o755)?;
        for t in self.family.other_tools() {
            io(
                format!("link absent {t}"),
                std::os::unix::fs::symlink(".absent", self.bin.join(t)),
            )?;
        }
        Ok(())
    }

    /// Writes the family's CloudStack repository file, pointing at release line `line` of the
    /// repository at `base` (scheme and host), and makes the package index hold that line.
    pub(crate) fn write_repo(&self, base: &str, line: &str) -> Result<()> {
        match self.family {
            LabFamily::Deb => write(
                &self.root.join("etc/apt/sources.list.d/cloudstack.list"),
                format!("# CloudStack\ndeb {base}/ubuntu jammy {line}\n"),
                0o644,
            )?,
            LabFamily::Rpm => write(
                &self.root.join("etc/yum.repos.d/cloudstack.repo"),
                format!(
                    "[cloudstack]\nname=cloudstack\nbaseurl={base}/centos/$releasever/{line}/\nenabled=1\ngpgcheck=0\n"
                ),
                0o644,
            )?,
        }
        write(&self.state.join("index"), format!("{line}\n"), 0o644)
    }

    /// Makes the repository offer `versions` (upstream, `4.19.0.0`) on release line `line`.
    pub(crate) fn offer(&self, line: &str, versions: &[String]) -> Result<()> {
        let mut text = versions.join("\n");
        text.push('\n');
        write(&self.state.join("repo").join(line), text, 0o644)
    }

    /// Records `package` as installed at upstream `version`, in the family's version format.
    pub(crate) fn set_installed(&self, package: &str, version: &str) -> Result<()> {
        write(
            &self.state.join("installed").join(package),
            format!("{}\n", self.family.package_version(version)),
            0o644,
        )
    }

    /// Creates a unit (as its package's unit file would) in `state`.
    pub(crate) fn add_unit(&self, unit: &str, state: &str) -> Result<()> {
        write(
            &self.state.join("services").join(unit),
            format!("{state}\n"),
            0o644,
        )
    }

    /// Starts the node's sshd: the node's root, the stand-ins first in `PATH`.
    pub(crate) fn start_sshd(&self) -> Result<SshServer> {
        SshServer::builder()
            .root(&self.root)
            .path_prefix(&self.bin)
            .start()
    }

    pub(crate) fn family(&self) -> LabFamily {
        self.family
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn bin(&self) -> &Path {
        &self.bin
    }

    pub(crate) fn state(&self) -> &Path {
        &self.state
    }

    /// The installed version of a package, as the stand-in package manager records it.
    pub(crate) fn installed(&self, package: &str) -> Option<String> {
        std::fs::read_to_string(self.state.join("installed").join(package))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// A unit's state as `systemctl is-active` prints it (`inactive` for a unit the node does
    /// not have, as systemd says).
    pub(crate) fn service_state(&self, unit: &str) -> String {
        std::fs::read_to_string(self.state.join("services").join(unit))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "inactive".into())
    }

    /// The `systemctl` calls that changed something, one per line (`restart cloudstack-agent`).
    pub(crate) fn systemctl_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("systemctl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn fault_path(&self, file: &str) -> PathBuf {
        self.state.join("faults").join(file)
    }

    pub(crate) fn set_fault(&self, file: &str, content: &str) -> Result<()> {
        write(&self.fault_path(file), content, 0o644)
    }

    pub(crate) fn clear_fault(&self, file: &str) -> Result<()> {
        match std::fs::remove_file(self.fault_path(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LabError::io("clear fault", e))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn has_fault(&self, file: &str) -> bool {
        self.fault_path(file).exists()
    }

    /// This machine acting as the node: commands run locally with the stand-ins first in
    /// `PATH`, files are this machine's.
    pub(crate) fn local_host(&self, name: &str) -> Arc<dyn Host> {
        Arc::new(StandInHost {
            inner: LocalHost::named(name.to_string()),
            bin: self.bin.clone(),
        })
    }

    /// Runs stand-in `program` here with `args`, the stand-ins first in `PATH`. Blocks.
    pub(crate) fn run(&self, program: &str, args: &[&str]) -> Result<std::process::Output> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        io(
            format!("run the {program} stand-in"),
            command(&self.bin.join(program))
                .args(args)
                .env("PATH", format!("{}:{path}", self.bin.display()))
                .stdin(Stdio::null())
                .output(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_versions_carry_the_spec_release_without_a_dist_tag() {
        assert_eq!(LabFamily::Rpm.package_version("4.19.0.0"), "4.19.0.0-1");
        assert_eq!(LabFamily::Deb.package_version("4.19.0.0"), "4.19.0.0");
    }
}
