//! The KVM hosts of an upgrade: every host CloudStack lists (`listHosts type=Routing
//! hypervisor=KVM`), in its cluster, reached as the configuration says (`[[hosts]]` entries by
//! name: another address, port, user or root, or `exclude`), over SSH at the address CloudStack
//! lists otherwise. A configured name CloudStack does not know is a pre-flight failure; an
//! excluded host a warning (its agent keeps its version).

use std::path::PathBuf;

use cs_core::{Finding, Severity};
use serde::{Deserialize, Serialize};

use crate::config::{HostConfig, NodeConfig, UpgradeConfig};

/// The id of the finding for configured hosts CloudStack does not know.
pub const HOSTS_KNOWN: &str = "hosts.known";
/// The id of the finding for hosts the configuration leaves alone.
pub const HOSTS_EXCLUDED: &str = "hosts.excluded";

/// A KVM host CloudStack knows, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmHostTarget {
    /// Its name in CloudStack.
    pub name: String,
    /// Its CloudStack id.
    pub id: String,
    /// Its cluster's name.
    pub cluster: String,
    /// Address to SSH to.
    pub address: String,
    /// The address CloudStack lists for it (used when the configuration gives none).
    #[serde(default)]
    pub listed_address: String,
    /// SSH port.
    pub port: u16,
    /// Login user, when not `ssh.user`.
    pub user: Option<String>,
    /// Root of CloudStack's paths, when not `/`.
    pub root: Option<PathBuf>,
}

impl KvmHostTarget {
    /// The host as a node to connect to.
    pub fn node(&self) -> NodeConfig {
        NodeConfig {
            address: self.address.clone(),
            port: self.port,
            user: self.user.clone(),
            name: Some(self.name.clone()),
            root: self.root.clone(),
        }
    }
}

/// The KVM hosts CloudStack lists, reconciled with the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInventory {
    /// The hosts the upgrade refreshes, in CloudStack's order.
    pub hosts: Vec<KvmHostTarget>,
    /// Hosts CloudStack knows that the configuration excludes.
    pub excluded: Vec<KvmHostTarget>,
    /// Names in the configuration that are not KVM hosts CloudStack knows.
    pub unknown: Vec<String>,
}

/// `hosts` (recorded when a run began) reached as the configuration says now: a run stopped on
/// a host it could not reach resumes once the entry is fixed. Pure.
pub fn reach_as_configured(hosts: &[KvmHostTarget], entries: &[HostConfig]) -> Vec<KvmHostTarget> {
    hosts
        .iter()
        .map(|h| {
            let entry = entries.iter().find(|e| e.name == h.name);
            let listed = if h.listed_address.is_empty() {
                h.address.clone()
            } else {
                h.listed_address.clone()
            };
            KvmHostTarget {
                address: entry.and_then(|e| e.address.clone()).unwrap_or(listed),
                port: entry.and_then(|e| e.port).unwrap_or(22),
                user: entry.and_then(|e| e.user.clone()),
                root: entry.and_then(|e| e.root.clone()),
                ..h.clone()
            }
        })
        .collect()
}

/// Reconciles the hosts CloudStack lists (`name`, `id`, `cluster`, `ip`) with the config's
/// entries. Pure.
pub fn reconcile(
    listed: &[(String, String, String, String)],
    entries: &[HostConfig],
) -> HostInventory {
    let mut inv = HostInventory::default();
    for (name, id, cluster, ip) in listed {
        let entry = entries.iter().find(|e| &e.name == name);
        let target = KvmHostTarget {
            name: name.clone(),
            id: id.clone(),
            cluster: cluster.clone(),
            address: entry
                .and_then(|e| e.address.clone())
                .unwrap_or_else(|| ip.clone()),
            listed_address: ip.clone(),
            port: entry.and_then(|e| e.port).unwrap_or(22),
            user: entry.and_then(|e| e.user.clone()),
            root: entry.and_then(|e| e.root.clone()),
        };
        if entry.is_some_and(|e| e.exclude) {
            inv.excluded.push(target);
        } else {
            inv.hosts.push(target);
        }
    }
    inv.unknown = entries
        .iter()
        .filter(|e| !listed.iter().any(|(name, ..)| name == &e.name))
        .map(|e| e.name.clone())
        .collect();
    inv
}

impl HostInventory {
    /// Asks CloudStack for its KVM hosts and reconciles them with `config`.
    ///
    /// # Errors
    /// What the API call returns.
    pub async fn collect(
        config: &UpgradeConfig,
        client: &cs_api::Client,
    ) -> Result<HostInventory, cs_api::Error> {
        let hosts = client
            .list_hosts(&[("type", "Routing"), ("hypervisor", "KVM")])
            .await?;
        let listed: Vec<(String, String, String, String)> = hosts
            .into_iter()
            .filter(|h| {
                h.hypervisor
                    .as_deref()
                    .is_none_or(|v| v.eq_ignore_ascii_case("KVM"))
            })
            .map(|h| {
                (
                    h.name.clone().unwrap_or_else(|| h.id.clone()),
                    h.id.clone(),
                    h.clustername.clone().unwrap_or_default(),
                    h.ipaddress.clone().unwrap_or_default(),
                )
            })
            .collect();
        Ok(reconcile(&listed, &config.host_entries()))
    }

    /// `hosts.known` (a failure per configured name CloudStack does not know) and
    /// `hosts.excluded` (a warning per excluded host).
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        for name in &self.unknown {
            out.push(
                Finding::new(
                    HOSTS_KNOWN,
                    Severity::Fail,
                    name,
                    format!("`{name}` is in the configuration, but CloudStack has no KVM host of that name"),
                )
                .with_remedy("fix the name (it must be the host's name in CloudStack) or remove the entry"),
            );
        }
        if self.unknown.is_empty() {
            out.push(Finding::pass(
                HOSTS_KNOWN,
                "hosts",
                format!(
                    "{} KVM host(s) in CloudStack, every configured one among them",
                    self.hosts.len() + self.excluded.len()
                ),
            ));
        }
        for h in &self.excluded {
            out.push(
                Finding::new(
                    HOSTS_EXCLUDED,
                    Severity::Warn,
                    &h.name,
                    format!(
                        "{} ({}) is excluded: its agent keeps its version",
                        h.name, h.cluster
                    ),
                )
                .with_remedy(
                    "refresh its agent yourself, or remove `exclude` to let the upgrade do it",
                ),
            );
        }
        out
    }
}

/// The KVM hosts to act on outside a run (logs, hardening): those of the run to
/// `config.target` when one is recorded (the API may be down mid-upgrade), else what
/// CloudStack lists now, reconciled with the configuration.
///
/// # Errors
/// [`crate::UpgradeError`] when no run is recorded and the API cannot be asked.
pub async fn kvm_hosts(config: &UpgradeConfig) -> Result<Vec<KvmHostTarget>, crate::UpgradeError> {
    let record = crate::upgrade::run_dir(config).join("run.json");
    if let Some(r) = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::RunRecord>(&b).ok())
        .filter(|r| !r.hosts.is_empty())
    {
        return Ok(r.hosts);
    }
    let client = crate::upgrade::api_client(config)?;
    HostInventory::collect(config, &client)
        .await
        .map(|i| i.hosts)
        .map_err(|e| {
            crate::UpgradeError::plan(format!("list the KVM hosts: {}", cs_core::error_chain(&e)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Vec<(String, String, String, String)> {
        [
            ("kvm1", "c1", "10.0.0.1"),
            ("kvm2", "c1", "10.0.0.2"),
            ("kvm3", "c2", "10.0.0.3"),
        ]
        .iter()
        .map(|(n, c, ip)| {
            (
                n.to_string(),
                format!("id-{n}"),
                c.to_string(),
                ip.to_string(),
            )
        })
        .collect()
    }

    fn entry(name: &str) -> HostConfig {
        HostConfig {
            name: name.into(),
            address: None,
            port: None,
            user: None,
            root: None,
            exclude: false,
        }
    }

    #[test]
    fn every_listed_host_is_refreshed_at_its_own_address_by_default() {
        let inv = reconcile(&listed(), &[]);
        assert_eq!(inv.hosts.len(), 3);
        assert_eq!(inv.hosts[2].address, "10.0.0.3");
        assert_eq!(inv.hosts[2].cluster, "c2");
        assert_eq!(inv.hosts[2].port, 22);
        assert!(inv.unknown.is_empty() && inv.excluded.is_empty());
        assert_eq!(inv.findings()[0].severity, Severity::Pass);
    }

    #[test]
    fn recorded_hosts_are_reached_as_the_config_says_now() {
        let mut kvm2 = entry("kvm2");
        kvm2.address = Some("127.0.0.1".into());
        kvm2.port = Some(2222);
        let recorded = reconcile(&listed(), std::slice::from_ref(&kvm2)).hosts;
        kvm2.port = Some(2223);
        let now = reach_as_configured(&recorded, &[kvm2]);
        assert_eq!((now[1].address.as_str(), now[1].port), ("127.0.0.1", 2223));
        // Without an entry, the address CloudStack listed.
        let now = reach_as_configured(&recorded, &[]);
        assert_eq!((now[1].address.as_str(), now[1].port), ("10.0.0.2", 22));
    }

    #[test]
    fn entries_override_reach_exclude_and_unknown_names_fail() {
        let mut kvm2 = entry("kvm2");
        kvm2.address = Some("127.0.0.1".into());
        kvm2.port = Some(2222);
        let mut kvm3 = entry("kvm3");
        kvm3.exclude = true;
        let inv = reconcile(&listed(), &[kvm2, kvm3, entry("kvm9")]);
        assert_eq!(
            inv.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>(),
            ["kvm1", "kvm2"]
        );
        assert_eq!(
            (inv.hosts[1].address.as_str(), inv.hosts[1].port),
            ("127.0.0.1", 2222)
        );
        assert_eq!(inv.excluded[0].name, "kvm3");
        assert_eq!(inv.unknown, ["kvm9"]);
        let f = inv.findings();
        assert!(
            f.iter().any(|f| f.id == HOSTS_KNOWN
                && f.severity == Severity::Fail
                && f.subject == "kvm9")
        );
        assert!(f.iter().any(|f| f.id == HOSTS_EXCLUDED
            && f.severity == Severity::Warn
            && f.subject == "kvm3"));
    }
}
