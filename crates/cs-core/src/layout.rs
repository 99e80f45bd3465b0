//! Where things live on a CloudStack node.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::reroot;

/// Where CloudStack's files live on a node. [`Layout::default`] is a stock package install;
/// [`Layout::rerooted`] moves every path under another root, which is how a lab host or a
/// non-standard install is described.
///
/// ```
/// use cs_core::Layout;
/// use std::path::Path;
/// let l = Layout::default().rerooted(Path::new("/srv/kvm1"));
/// assert_eq!(l.agent_properties(), Path::new("/srv/kvm1/etc/cloudstack/agent/agent.properties"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Layout {
    /// `/etc/cloudstack`: every CloudStack configuration directory.
    pub etc_dir: PathBuf,
    /// `/etc/cloudstack/management`: `db.properties`, `key`, `server.properties`, …
    pub management_conf_dir: PathBuf,
    /// `/etc/cloudstack/usage`.
    pub usage_conf_dir: PathBuf,
    /// `/etc/cloudstack/agent`: `agent.properties` and the keystore files.
    pub agent_conf_dir: PathBuf,
    /// `/etc/default`: `cloudstack-management`, `cloudstack-agent`, `cloudstack-usage`.
    pub default_dir: PathBuf,
    /// `/etc/apt/sources.list`.
    pub apt_sources_list: PathBuf,
    /// `/etc/apt/sources.list.d`: `*.list` and `*.sources`.
    pub apt_sources_dir: PathBuf,
    /// `/etc/yum.repos.d`: `*.repo`.
    pub yum_repos_dir: PathBuf,
    /// `/etc/zypp/repos.d`: `*.repo` on SUSE.
    pub zypp_repos_dir: PathBuf,
    /// `/var/log/cloudstack/management`.
    pub management_log_dir: PathBuf,
    /// `/var/log/cloudstack/agent`.
    pub agent_log_dir: PathBuf,
    /// `/var/log/cloudstack/usage`.
    pub usage_log_dir: PathBuf,
    /// `/usr/share/cloudstack-management/lib`.
    pub management_lib_dir: PathBuf,
    /// `/usr/share/cloudstack-agent/lib`.
    pub agent_lib_dir: PathBuf,
    /// `/usr/share/cloudstack-usage/lib`.
    pub usage_lib_dir: PathBuf,
    /// `/etc/os-release`.
    pub os_release: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            etc_dir: "/etc/cloudstack".into(),
            management_conf_dir: "/etc/cloudstack/management".into(),
            usage_conf_dir: "/etc/cloudstack/usage".into(),
            agent_conf_dir: "/etc/cloudstack/agent".into(),
            default_dir: "/etc/default".into(),
            apt_sources_list: "/etc/apt/sources.list".into(),
            apt_sources_dir: "/etc/apt/sources.list.d".into(),
            yum_repos_dir: "/etc/yum.repos.d".into(),
            zypp_repos_dir: "/etc/zypp/repos.d".into(),
            management_log_dir: "/var/log/cloudstack/management".into(),
            agent_log_dir: "/var/log/cloudstack/agent".into(),
            usage_log_dir: "/var/log/cloudstack/usage".into(),
            management_lib_dir: "/usr/share/cloudstack-management/lib".into(),
            agent_lib_dir: "/usr/share/cloudstack-agent/lib".into(),
            usage_lib_dir: "/usr/share/cloudstack-usage/lib".into(),
            os_release: "/etc/os-release".into(),
        }
    }
}

impl Layout {
    /// The same layout with every path moved under `root`.
    #[must_use]
    pub fn rerooted(&self, root: &Path) -> Layout {
        let r = |p: &PathBuf| reroot(root, p);
        Layout {
            etc_dir: r(&self.etc_dir),
            management_conf_dir: r(&self.management_conf_dir),
            usage_conf_dir: r(&self.usage_conf_dir),
            agent_conf_dir: r(&self.agent_conf_dir),
            default_dir: r(&self.default_dir),
            apt_sources_list: r(&self.apt_sources_list),
            apt_sources_dir: r(&self.apt_sources_dir),
            yum_repos_dir: r(&self.yum_repos_dir),
            zypp_repos_dir: r(&self.zypp_repos_dir),
            management_log_dir: r(&self.management_log_dir),
            agent_log_dir: r(&self.agent_log_dir),
            usage_log_dir: r(&self.usage_log_dir),
            management_lib_dir: r(&self.management_lib_dir),
            agent_lib_dir: r(&self.agent_lib_dir),
            usage_lib_dir: r(&self.usage_lib_dir),
            os_release: r(&self.os_release),
        }
    }

    /// `agent.properties`.
    pub fn agent_properties(&self) -> PathBuf {
        self.agent_conf_dir.join("agent.properties")
    }

    /// `db.properties` of the management server.
    pub fn db_properties(&self) -> PathBuf {
        self.management_conf_dir.join("db.properties")
    }

    /// `management-server.log`.
    pub fn management_log(&self) -> PathBuf {
        self.management_log_dir.join("management-server.log")
    }

    /// `agent.log`.
    pub fn agent_log(&self) -> PathBuf {
        self.agent_log_dir.join("agent.log")
    }

    /// `usage.log`.
    pub fn usage_log(&self) -> PathBuf {
        self.usage_log_dir.join("usage.log")
    }

    /// The environment file of a service (`/etc/default/cloudstack-management`).
    pub fn default_file(&self, service: &str) -> PathBuf {
        self.default_dir.join(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerooting_moves_every_path() {
        let l = Layout::default().rerooted(Path::new("/lab/h1"));
        let json = serde_json::to_value(&l).unwrap();
        for (k, v) in json.as_object().unwrap() {
            assert!(v.as_str().unwrap().starts_with("/lab/h1/"), "{k} = {v}");
        }
        assert_eq!(
            l.management_log(),
            Path::new("/lab/h1/var/log/cloudstack/management/management-server.log")
        );
    }

    #[test]
    fn partial_config_keeps_defaults() {
        let l: Layout = serde_json::from_str(r#"{"agent_conf_dir": "/opt/cs/agent"}"#).unwrap();
        assert_eq!(
            l.agent_properties(),
            Path::new("/opt/cs/agent/agent.properties")
        );
        assert_eq!(l.yum_repos_dir, Path::new("/etc/yum.repos.d"));
    }
}
