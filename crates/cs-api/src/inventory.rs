//! Inventory snapshots (VM → host, host states), their diff — the `api.inventory.unchanged`
//! proof — and the Ansible dynamic inventory of the hypervisors.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;

use async_trait::async_trait;
use cs_core::{Check, CheckError, Finding, Severity};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::HostResponse;

/// The id of the inventory check.
pub const INVENTORY_CHECK_ID: &str = "api.inventory.unchanged";

/// The fields of `listVirtualMachines` a snapshot keeps (fewer allocations for big clouds).
#[derive(Deserialize)]
struct LeanVm {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    hostid: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
}

/// A hypervisor in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryHost {
    /// CloudStack id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Connection state.
    pub state: String,
    /// Resource state.
    #[serde(default)]
    pub resource_state: Option<String>,
    /// Cluster id.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Cluster name.
    #[serde(default)]
    pub cluster_name: Option<String>,
}

/// A VM in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryVm {
    /// CloudStack id.
    pub id: String,
    /// Name.
    pub name: String,
    /// VM state.
    pub state: String,
    /// Host id, when placed.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Host name, when placed.
    #[serde(default)]
    pub host_name: Option<String>,
}

/// Every VM with its state and host, and every hypervisor with its state, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// The endpoint asked.
    pub endpoint: String,
    /// Hypervisors.
    pub hosts: Vec<InventoryHost>,
    /// Virtual machines (all accounts).
    pub vms: Vec<InventoryVm>,
}

impl Inventory {
    /// Takes a snapshot: `listHosts type=Routing` and `listVirtualMachines listall=true`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn snapshot(client: &Client) -> Result<Inventory> {
        let (hosts, vms) = tokio::try_join!(
            client.list_hosts(&[("type", "Routing")]),
            client.list::<LeanVm>(
                "listVirtualMachines",
                "virtualmachine",
                &[("listall", "true")]
            ),
        )?;
        let taken_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Ok(Inventory {
            taken_at,
            endpoint: client.endpoint().to_string(),
            hosts: hosts
                .into_iter()
                .map(|h| InventoryHost {
                    name: h.name.unwrap_or_else(|| h.id.clone()),
                    id: h.id,
                    state: h.state.unwrap_or_default(),
                    resource_state: h.resourcestate,
                    cluster_id: h.clusterid,
                    cluster_name: h.clustername,
                })
                .collect(),
            vms: vms
                .into_iter()
                .map(|v| InventoryVm {
                    name: v.name.unwrap_or_else(|| v.id.clone()),
                    id: v.id,
                    state: v.state.unwrap_or_default(),
                    host_id: v.hostid,
                    host_name: v.hostname,
                })
                .collect(),
        })
    }

    /// Writes the snapshot as JSON, atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map_or_else(|| "inventory".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Reads a snapshot written by [`Inventory::save`].
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Snapshot`].
    pub fn load(path: &Path) -> Result<Inventory> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Snapshot {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A VM that runs on another host than before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMove {
    /// VM id.
    pub id: String,
    /// VM name.
    pub name: String,
    /// Host name (or id) before.
    pub from: String,
    /// Host name (or id) now.
    pub to: String,
}

/// A VM whose state changed, or that appeared or disappeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmChange {
    /// VM id.
    pub id: String,
    /// VM name.
    pub name: String,
    /// State before (`None` for a new VM).
    pub before: Option<String>,
    /// State now (`None` for a missing VM).
    pub after: Option<String>,
    /// Host name (or id) before, or now for a new VM.
    pub host: Option<String>,
}

/// A host that was Up and no longer is (or is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChange {
    /// Host id.
    pub id: String,
    /// Host name.
    pub name: String,
    /// State now (`None` when no longer listed).
    pub after: Option<String>,
}

/// What changed between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryDiff {
    /// VMs Running before and now, on another host.
    pub moved: Vec<VmMove>,
    /// VMs Running before and not now.
    pub stopped: Vec<VmChange>,
    /// VMs no longer listed.
    pub missing: Vec<VmChange>,
    /// VMs listed now and not before.
    pub new: Vec<VmChange>,
    /// Hosts Up before and not now.
    pub hosts_not_up: Vec<HostChange>,
}

fn host_label(id: Option<&str>, name: Option<&str>) -> String {
    name.or(id).unwrap_or("no host").to_string()
}

/// Compares two snapshots (see [`InventoryDiff`]). Lists are sorted by name.
pub fn diff(before: &Inventory, after: &Inventory) -> InventoryDiff {
    let now: HashMap<&str, &InventoryVm> = after.vms.iter().map(|v| (v.id.as_str(), v)).collect();
    let then: HashMap<&str, &InventoryVm> = before.vms.iter().map(|v| (v.id.as_str(), v)).collect();
    let mut d = InventoryDiff::default();
    for b in &before.vms {
        let Some(a) = now.get(b.id.as_str()) else {
            d.missing.push(VmChange {
                id: b.id.clone(),
                name: b.name.clone(),
                before: Some(b.state.clone()),
                after: None,
                host: b
                    .host_id
                    .as_deref()
                    .map(|_| host_label(b.host_id.as_deref(), b.host_name.as_deref())),
            });
            continue;
        };
        if b.state != "Running" {
            continue;
        }
        if a.state != "Running" {
            d.stopped.push(VmChange {
                id: b.id.clone(),
                name: b.name.clone(),
                before: Some(b.state.clone()),
                after: Some(a.state.clone()),
                host: Some(host_label(b.host_id.as_deref(), b.host_name.as_deref())),
            });
        } else if a.host_id != b.host_id {
            d.moved.push(VmMove {
                id: b.id.clone(),
                name: b.name.clone(),
                from: host_label(b.host_id.as_deref(), b.host_name.as_deref()),
                to: host_label(a.host_id.as_deref(), a.host_name.as_deref()),
            });
        }
    }
    for a in &after.vms {
        if !then.contains_key(a.id.as_str()) {
            d.new.push(VmChange {
                id: a.id.clone(),
                name: a.name.clone(),
                before: None,
                after: Some(a.state.clone()),
                host: a
                    .host_id
                    .as_deref()
                    .map(|_| host_label(a.host_id.as_deref(), a.host_name.as_deref())),
            });
        }
    }
    let hosts_now: HashMap<&str, &InventoryHost> =
        after.hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    for b in before.hosts.iter().filter(|h| h.state == "Up") {
        let a = hosts_now.get(b.id.as_str());
        if a.is_none_or(|a| a.state != "Up") {
            d.hosts_not_up.push(HostChange {
                id: b.id.clone(),
                name: b.name.clone(),
                after: a.map(|a| a.state.clone()),
            });
        }
    }
    d.moved.sort_by(|x, y| x.name.cmp(&y.name));
    d.stopped.sort_by(|x, y| x.name.cmp(&y.name));
    d.missing.sort_by(|x, y| x.name.cmp(&y.name));
    d.new.sort_by(|x, y| x.name.cmp(&y.name));
    d.hosts_not_up.sort_by(|x, y| x.name.cmp(&y.name));
    d
}

impl InventoryDiff {
    /// Whether every VM that ran still runs on the same host, none is missing and every host
    /// that was Up still is (new VMs do not count).
    pub fn is_clean(&self) -> bool {
        self.moved.is_empty()
            && self.stopped.is_empty()
            && self.missing.is_empty()
            && self.hosts_not_up.is_empty()
    }

    /// The `api.inventory.unchanged` findings: one per change, or one pass.
    pub fn findings(&self) -> Vec<Finding> {
        let id = INVENTORY_CHECK_ID;
        let mut out = Vec::new();
        for m in &self.moved {
            out.push(
                Finding::new(id, Severity::Fail, &m.name, format!("{} moved from {} to {}", m.name, m.from, m.to))
                    .with_remedy("check why it migrated (host maintenance, HA) and migrate it back if it must stay put"),
            );
        }
        for s in &self.stopped {
            out.push(
                Finding::new(
                    id,
                    Severity::Fail,
                    &s.name,
                    format!(
                        "{} was Running on {}, is now {}",
                        s.name,
                        s.host.as_deref().unwrap_or("no host"),
                        s.after.as_deref().unwrap_or("gone")
                    ),
                )
                .with_remedy("start it again and check the host's agent.log"),
            );
        }
        for m in &self.missing {
            out.push(Finding::new(
                id,
                Severity::Fail,
                &m.name,
                format!(
                    "{} ({}) is no longer listed",
                    m.name,
                    m.before.as_deref().unwrap_or("unknown state")
                ),
            ));
        }
        for h in &self.hosts_not_up {
            out.push(
                Finding::new(
                    id,
                    Severity::Fail,
                    &h.name,
                    format!(
                        "host {} was Up, is now {}",
                        h.name,
                        h.after.as_deref().unwrap_or("not listed")
                    ),
                )
                .with_remedy("check cloudstack-agent on the host"),
            );
        }
        for n in &self.new {
            out.push(Finding::new(
                id,
                Severity::Info,
                &n.name,
                format!(
                    "{} is new ({})",
                    n.name,
                    n.after.as_deref().unwrap_or("unknown state")
                ),
            ));
        }
        if self.is_clean() {
            out.insert(
                0,
                Finding::pass(
                    id,
                    "inventory",
                    "every VM that ran still runs on the same host",
                ),
            );
        }
        out
    }
}

/// The `api.inventory.unchanged` check: takes a snapshot now and compares it with `before`.
#[derive(Debug, Clone)]
pub struct InventoryUnchanged {
    /// The snapshot taken before the upgrade.
    pub before: Inventory,
}

#[async_trait]
impl Check<Client> for InventoryUnchanged {
    fn id(&self) -> &str {
        INVENTORY_CHECK_ID
    }

    async fn run(&self, cx: &Client) -> std::result::Result<Vec<Finding>, CheckError> {
        let now = Inventory::snapshot(cx)
            .await
            .map_err(|e| CheckError::with_source("cannot take an inventory snapshot", e))?;
        Ok(diff(&self.before, &now).findings())
    }
}

/// An Ansible group name: lowercase letters, digits and underscores.
fn group(prefix: &str, parts: &[&str]) -> String {
    let mut s = prefix.to_string();
    for p in parts {
        s.push('_');
        s.extend(p.chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        }));
    }
    s
}

/// The hypervisors as an Ansible dynamic inventory (the `--list` JSON): groups
/// `zone_<zone>` ⊃ `pod_<zone>_<pod>` ⊃ `cluster_<zone>_<pod>_<cluster>` ⊃ hosts, all under
/// `cloudstack_hypervisors`, with `_meta.hostvars` giving `ansible_host` (the host's IP) and
/// `cloudstack_*` facts. Only `Routing` hosts (hosts without a type count as hypervisors).
///
/// ```
/// let h: cs_api::HostResponse = serde_json::from_value(serde_json::json!({
///     "id": "h1", "name": "kvm01", "ipaddress": "192.0.2.21", "type": "Routing",
///     "zonename": "zone1", "podname": "pod1", "clustername": "cluster1", "state": "Up"
/// })).unwrap();
/// let inv = cs_api::ansible_inventory(&[h]);
/// assert_eq!(inv["cluster_zone1_pod1_cluster1"]["hosts"][0], "kvm01");
/// assert_eq!(inv["_meta"]["hostvars"]["kvm01"]["ansible_host"], "192.0.2.21");
/// ```
pub fn ansible_inventory(hosts: &[HostResponse]) -> serde_json::Value {
    let mut zones: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<String>>>> =
        BTreeMap::new();
    let mut hostvars = serde_json::Map::new();
    for h in hosts {
        if h.host_type.as_deref().is_some_and(|t| t != "Routing") {
            continue;
        }
        let name = h.name.clone().unwrap_or_else(|| h.id.clone());
        let zone = h.zonename.as_deref().unwrap_or("nozone");
        let pod = h.podname.as_deref().unwrap_or("nopod");
        let cluster = h.clustername.as_deref().unwrap_or("nocluster");
        let zg = group("zone", &[zone]);
        let pg = group("pod", &[zone, pod]);
        let cg = group("cluster", &[zone, pod, cluster]);
        zones
            .entry(zg)
            .or_default()
            .entry(pg)
            .or_default()
            .entry(cg)
            .or_default()
            .push(name.clone());
        hostvars.insert(
            name.clone(),
            json!({
                "ansible_host": h.ipaddress.clone().unwrap_or_else(|| name.clone()),
                "cloudstack_id": h.id,
                "cloudstack_state": h.state,
                "cloudstack_resource_state": h.resourcestate,
                "cloudstack_version": h.version,
                "cloudstack_hypervisor": h.hypervisor,
                "cloudstack_zone": h.zonename,
                "cloudstack_pod": h.podname,
                "cloudstack_cluster": h.clustername,
            }),
        );
    }
    let mut out = serde_json::Map::new();
    let zone_names: Vec<String> = zones.keys().cloned().collect();
    for (zg, pods) in zones {
        out.insert(zg, json!({ "children": pods.keys().collect::<Vec<_>>() }));
        for (pg, clusters) in pods {
            out.insert(
                pg,
                json!({ "children": clusters.keys().collect::<Vec<_>>() }),
            );
            for (cg, mut names) in clusters {
                names.sort();
                out.insert(cg, json!({ "hosts": names }));
            }
        }
    }
    out.insert(
        "cloudstack_hypervisors".into(),
        json!({ "children": zone_names }),
    );
    out.insert(
        "all".into(),
        json!({ "children": ["cloudstack_hypervisors", "ungrouped"] }),
    );
    out.insert("_meta".into(), json!({ "hostvars": hostvars }));
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, state: &str, host: Option<&str>) -> InventoryVm {
        InventoryVm {
            id: id.into(),
            name: format!("vm-{id}"),
            state: state.into(),
            host_id: host.map(str::to_string),
            host_name: host.map(|h| format!("kvm-{h}")),
        }
    }

    fn host(id: &str, state: &str) -> InventoryHost {
        InventoryHost {
            id: id.into(),
            name: format!("kvm-{id}"),
            state: state.into(),
            resource_state: Some("Enabled".into()),
            cluster_id: None,
            cluster_name: None,
        }
    }

    fn inv(hosts: Vec<InventoryHost>, vms: Vec<InventoryVm>) -> Inventory {
        Inventory {
            taken_at: "2025-01-01T00:00:00Z".into(),
            endpoint: "http://127.0.0.1/client/api".into(),
            hosts,
            vms,
        }
    }

    #[test]
    fn unchanged_inventory_is_clean() {
        let a = inv(vec![host("1", "Up")], vec![vm("a", "Running", Some("1"))]);
        let d = diff(&a, &a.clone());
        assert!(d.is_clean());
        let f = d.findings();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Pass);
    }

    #[test]
    fn moves_stops_losses_and_newcomers_are_reported() {
        let before = inv(
            vec![host("1", "Up"), host("2", "Up")],
            vec![
                vm("a", "Running", Some("1")),
                vm("b", "Running", Some("1")),
                vm("c", "Running", Some("2")),
                vm("d", "Stopped", None),
            ],
        );
        let after = inv(
            vec![host("1", "Up"), host("2", "Disconnected")],
            vec![
                vm("a", "Running", Some("2")),
                vm("b", "Stopped", None),
                vm("d", "Running", Some("1")),
                vm("e", "Running", Some("1")),
            ],
        );
        let d = diff(&before, &after);
        assert_eq!(d.moved[0].from, "kvm-1");
        assert_eq!(d.moved[0].to, "kvm-2");
        assert_eq!(d.stopped[0].name, "vm-b");
        assert_eq!(d.missing[0].name, "vm-c");
        assert_eq!(d.new[0].name, "vm-e");
        assert_eq!(d.hosts_not_up[0].after.as_deref(), Some("Disconnected"));
        assert!(!d.is_clean());
        let sev: Vec<Severity> = d.findings().iter().map(|f| f.severity).collect();
        assert_eq!(
            sev,
            [
                Severity::Fail,
                Severity::Fail,
                Severity::Fail,
                Severity::Fail,
                Severity::Info
            ]
        );
    }

    #[test]
    fn snapshots_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.json");
        let a = inv(vec![host("1", "Up")], vec![vm("a", "Running", Some("1"))]);
        a.save(&path).unwrap();
        assert_eq!(Inventory::load(&path).unwrap(), a);
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            Inventory::load(&path),
            Err(Error::Snapshot { .. })
        ));
    }

    #[test]
    fn ansible_groups_nest_zone_pod_cluster() {
        let hosts: Vec<HostResponse> = serde_json::from_value(json!([
            {"id":"1","name":"kvm01","type":"Routing","zonename":"Zone 1","podname":"p1","clustername":"c1","ipaddress":"192.0.2.1"},
            {"id":"2","name":"kvm02","type":"Routing","zonename":"Zone 1","podname":"p1","clustername":"c2","ipaddress":"192.0.2.2"},
            {"id":"3","name":"s-1-VM","type":"SecondaryStorageVM","zonename":"Zone 1"}
        ]))
        .unwrap();
        let inv = ansible_inventory(&hosts);
        assert_eq!(inv["zone_zone_1"]["children"], json!(["pod_zone_1_p1"]));
        assert_eq!(
            inv["pod_zone_1_p1"]["children"],
            json!(["cluster_zone_1_p1_c1", "cluster_zone_1_p1_c2"])
        );
        assert_eq!(
            inv["cloudstack_hypervisors"]["children"],
            json!(["zone_zone_1"])
        );
        assert!(inv["_meta"]["hostvars"].get("s-1-VM").is_none());
    }
}
