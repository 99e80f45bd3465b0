//! The answers to the read-only API commands (`list*`): the lab cloud rendered as
//! CloudStack's API renders it, filtered and paged as its `list*` commands are.

use serde::Serialize;
use serde_json::{Value, json};

use super::sim::translate_uuid;
use super::state::{
    Cloud, Cluster, Event, GuestOs, LabHost, Ms, Network, Params, Reply, StoreRef, Template, Vm,
    VmKind, Zone, api_date, error_reply, param_error, response_key, trim_router_version,
    version_below,
};

pub(crate) const DOMAIN_ID: &str = "8b6f0c3e-0000-4000-8000-00000000d0d0";

#[derive(Serialize)]
struct VmJson<'a> {
    id: &'a str,
    name: &'a str,
    displayname: &'a str,
    account: &'static str,
    domainid: &'static str,
    domain: &'static str,
    created: &'a str,
    state: &'a str,
    haenable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    zoneid: &'a str,
    zonename: &'a str,
    templateid: &'static str,
    templatename: &'static str,
    serviceofferingid: String,
    serviceofferingname: &'static str,
    cpunumber: u32,
    cpuspeed: u32,
    memory: u64,
    guestosid: &'static str,
    rootdevicetype: &'static str,
    hypervisor: &'static str,
    instancename: &'a str,
    nic: [NicJson; 1],
    arch: &'static str,
    lastupdated: &'static str,
}

#[derive(Serialize)]
struct NicJson {
    id: String,
    networkid: &'static str,
    networkname: &'static str,
    ipaddress: String,
    macaddress: String,
    isdefault: bool,
    traffictype: &'static str,
    r#type: &'static str,
}

fn page_of<'a, T>(items: &'a [&'a T], p: &Params) -> Result<&'a [&'a T], Reply> {
    let parse = |k: &str| -> Result<Option<i64>, Reply> {
        match p.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                error_reply(
                    p.get("command").map(String::as_str),
                    431,
                    Some(4350),
                    &format!("Unable to execute API command due to invalid value. Invalid parameter {k} value={v} due to incorrect long value format"),
                )
            }),
        }
    };
    let page = parse("page")?;
    let size = parse("pagesize")?;
    if size == Some(-1) {
        return Ok(items);
    }
    if let Some(s) = size
        && !(1..=500).contains(&s)
    {
        return Err(error_reply(
            p.get("command").map(String::as_str),
            431,
            Some(4350),
            "Page size can't exceed max allowed page size value: 500",
        ));
    }
    let size = size.unwrap_or(500) as usize;
    let page = page.unwrap_or(1).max(1) as usize;
    let start = (page - 1).saturating_mul(size).min(items.len());
    let end = start.saturating_add(size).min(items.len());
    Ok(&items[start..end])
}

fn list_reply<T>(
    command: &str,
    key: &str,
    all: Vec<&T>,
    p: &Params,
    render: impl Fn(&T) -> Value,
) -> Reply {
    list_reply_with(command, key, all, p, |t, out| {
        let _ = serde_json::to_writer(out, &render(t));
    })
}

/// A list page written straight to bytes: `{"<cmd>response":{"count":N,"<key>":[...]}}`.
fn list_reply_with<T>(
    command: &str,
    key: &str,
    all: Vec<&T>,
    p: &Params,
    write: impl Fn(&T, &mut Vec<u8>),
) -> Reply {
    let page = match page_of(&all, p) {
        Ok(page) => page,
        Err(r) => return r,
    };
    let mut out = Vec::with_capacity(64 + page.len() * 1100);
    out.extend_from_slice(format!("{{\"{}\":", response_key(command)).as_bytes());
    if all.is_empty() {
        out.extend_from_slice(b"{}}");
    } else {
        out.extend_from_slice(format!("{{\"count\":{},\"{key}\":[", all.len()).as_bytes());
        for (i, t) in page.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(t, &mut out);
        }
        out.extend_from_slice(b"]}}");
    }
    Reply {
        status: 200,
        body: out,
    }
}

fn matches(p: &Params, key: &str, value: &str) -> bool {
    p.get(key).is_none_or(|v| v == value)
}

impl Cloud {
    fn host_json(&self, h: &LabHost) -> Value {
        let c = &self.clusters[h.cluster];
        let z = &self.zones[c.zone];
        let ms = self.ms.iter().find(|m| m.state == "Up").or(self.ms.first());
        let (mem, cpu) = self.used(self.host_index(&h.id).unwrap_or(0));
        let total_mhz = u64::from(h.capacity.cpus) * u64::from(h.capacity.speed);
        json!({
            "id": h.id, "name": h.name, "state": h.state, "type": "Routing",
            "ipaddress": h.ip, "zoneid": z.id, "zonename": z.name, "podid": c.pod_id,
            "podname": c.pod_name, "clusterid": c.id, "clustername": c.name,
            "clustertype": "CloudManaged", "version": h.version, "hypervisor": "KVM",
            "hypervisorversion": "8.2.2", "cpusockets": 2, "cpunumber": h.capacity.cpus,
            "cpuspeed": h.capacity.speed,
            "cpuallocated": format!("{:.2}%", cpu as f64 * 100.0 / total_mhz.max(1) as f64),
            "memorytotal": h.capacity.memory_mb * 1024 * 1024,
            "memoryallocated": mem * 1024 * 1024,
            "lastpinged": "1970-01-20T15:32:50+0000",
            "managementserverid": ms.map(|m| m.id.as_str()),
            "managementservername": ms.map(|m| m.name.as_str()),
            "resourcestate": h.resource_state, "created": "2024-05-01T12:00:00+0000",
            "islocalstorageactive": false, "hahost": false, "arch": "x86_64",
            "details": {"Host.OS": "Ubuntu", "Host.OS.Version": "24.04", "secured": "true"}
        })
    }

    /// The agent state of a system VM: its agent connects once the VM runs.
    fn agent_state(v: &Vm) -> &'static str {
        if v.state == "Running" {
            "Up"
        } else {
            "Disconnected"
        }
    }

    /// A system VM's agent as a host of type SecondaryStorageVM or ConsoleProxy.
    fn sysvm_host_json(&self, v: &Vm) -> Value {
        let z = &self.zones[v.zone];
        json!({
            "id": format!("{}-agent", v.id), "name": v.name, "state": Self::agent_state(v),
            "type": v.kind.host_type(), "zoneid": z.id, "zonename": z.name,
            "version": v.agent_version, "resourcestate": "Enabled"
        })
    }

    pub(crate) fn vm_json_into(&self, v: &Vm, out: &mut Vec<u8>) {
        let z = &self.zones[v.zone];
        let host = v.host.map(|h| &self.hosts[h]);
        let n = v.db_id;
        let _ = serde_json::to_writer(
            out,
            &VmJson {
                id: &v.id,
                name: &v.name,
                displayname: &v.display_name,
                account: "admin",
                domainid: DOMAIN_ID,
                domain: "ROOT",
                created: &v.created,
                state: &v.state,
                haenable: false,
                hostid: host.map(|h| h.id.as_str()),
                hostname: host.map(|h| h.name.as_str()),
                zoneid: &z.id,
                zonename: &z.name,
                templateid: "8b6f0c3e-0000-4000-8000-000000000061",
                templatename: "ubuntu-24.04-x86_64",
                serviceofferingid: format!("8b6f0c3e-0000-4000-8004-{:012x}", v.offering.db_id),
                serviceofferingname: v.offering.name,
                cpunumber: v.offering.cpus,
                cpuspeed: v.offering.speed,
                memory: v.offering.memory_mb,
                guestosid: "8b6f0c3e-0000-4000-8000-000000000063",
                rootdevicetype: "ROOT",
                hypervisor: "KVM",
                instancename: &v.instance_name,
                nic: [NicJson {
                    id: format!("8b6f0c3e-0000-4000-8002-{n:012x}"),
                    networkid: "8b6f0c3e-0000-4000-8000-000000000051",
                    networkname: "guestnet",
                    ipaddress: format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
                    macaddress: format!(
                        "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
                        (n >> 24) & 255,
                        (n >> 16) & 255,
                        (n >> 8) & 255,
                        n & 255
                    ),
                    isdefault: true,
                    traffictype: "Guest",
                    r#type: "Isolated",
                }],
                arch: "x86_64",
                lastupdated: "2025-10-30T11:01:00+0000",
            },
        );
    }

    fn template_fields(&self, v: &Vm) -> (Option<String>, Option<String>) {
        self.template(v.template_id)
            .map_or((None, None), |t| (Some(t.id.clone()), Some(t.name.clone())))
    }

    /// `ApiResponseHelper.createSystemVmResponse`: `templatename` is `vm_template_id` (the new
    /// template right after an upgrade), `version` the agent's (the old one until the VM
    /// runs new agent code).
    fn sysvm_json(&self, v: &Vm) -> Value {
        let z = &self.zones[v.zone];
        let host = v.host.map(|h| &self.hosts[h]);
        let (template_id, template_name) = self.template_fields(v);
        json!({
            "id": v.id, "name": v.name, "systemvmtype": v.kind.api(), "state": v.state,
            "agentstate": Self::agent_state(v), "version": v.agent_version, "zoneid": z.id,
            "zonename": z.name, "hypervisor": "KVM", "templateid": template_id,
            "templatename": template_name, "hostid": host.map(|h| h.id.as_str()),
            "hostname": host.map(|h| h.name.as_str()), "created": api_date(&v.created),
            "isdynamicallyscalable": false
        })
    }

    /// `DomainRouterJoinDaoImpl.newDomainRouterResponse`: `version` is the trimmed
    /// `template_version` the router reported, `requiresupgrade` whether it is below
    /// `minreq.sysvmtemplate.version` (UNKNOWN and true when it never reported).
    fn router_json(&self, v: &Vm) -> Value {
        let z = &self.zones[v.zone];
        let host = v.host.map(|h| &self.hosts[h]);
        let r = v.router.as_ref();
        let minreq = self
            .configs
            .get("minreq.sysvmtemplate.version")
            .cloned()
            .unwrap_or_else(|| "4.10.0".into());
        let reported = r.and_then(|r| r.template_version.as_deref());
        let (version, requires) = match reported {
            Some(t) => {
                let v = trim_router_version(t);
                let below = version_below(&v, &minreq);
                (v, below)
            }
            None => ("UNKNOWN".to_string(), true),
        };
        let network = r.map(|r| &self.networks[r.network]);
        let (template_id, template_name) = self.template_fields(v);
        json!({
            "id": v.id, "name": v.name, "state": v.state, "version": version,
            "requiresupgrade": requires, "healthchecksfailed": false, "role": "VIRTUAL_ROUTER",
            "zoneid": z.id, "zonename": z.name, "hostid": host.map(|h| h.id.as_str()),
            "hostname": host.map(|h| h.name.as_str()), "templateid": template_id,
            "templatename": template_name,
            "guestnetworkid": network.map(|n| n.id.as_str()),
            "guestnetworkname": network.map(|n| n.name.as_str()),
            "isredundantrouter": network.is_some_and(|n| n.redundant),
            "redundantstate": r.and_then(|r| r.redundant_state).unwrap_or("UNKNOWN"),
            "created": api_date(&v.created)
        })
    }

    fn event_json(e: &Event) -> Value {
        json!({
            "id": e.id, "username": "admin", "type": e.kind, "level": e.level,
            "description": e.description, "account": "admin", "domainid": DOMAIN_ID,
            "domain": "ROOT", "created": api_date(&e.created), "state": e.state,
            // The API names resources by uuid; a VM's is in CloudStack's descriptions
            // (`Vm Id: <uuid>`).
            "resourceid": e.description.split("Vm Id: ").nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap_or(rest)),
            "resourcetype": e.resource_type
        })
    }

    /// Answers a read-only command (`list*`).
    pub(crate) fn read(&self, command: &str, p: &Params) -> Option<Reply> {
        Some(match command {
            "listCapabilities" => Reply::json(
                200,
                &json!({"listcapabilitiesresponse": {"capability": {
                    "cloudstackversion": self.answering_version(), "dynamicrolesenabled": true,
                    "apilimitinterval": 1, "apilimitmax": 0, "supportELB": "false",
                    "defaultuipagesize": 20, "kvmsnapshotenabled": true
                }}}),
            ),
            "listManagementServers" => {
                let all: Vec<&Ms> = self
                    .ms
                    .iter()
                    .filter(|m| matches(p, "id", &m.id) && matches(p, "name", &m.name))
                    .collect();
                list_reply(command, "managementserver", all, p, |m| {
                    json!({"id": m.id, "name": m.name, "state": m.state, "version": m.version,
                           "javaversion": "17.0.16", "osdistribution": "Ubuntu 24.04.3 LTS",
                           "serviceip": "127.0.0.1", "ipaddress": "127.0.0.1", "peers": [],
                           "lastserverstart": "2025-10-30T10:00:00+0000", "pendingjobscount": 0})
                })
            }
            "listHosts" => {
                let ty = p.get("type").map(String::as_str);
                let mut all: Vec<Value> = Vec::new();
                if ty.is_none_or(|t| t == "Routing") {
                    for h in &self.hosts {
                        let c = &self.clusters[h.cluster];
                        if matches(p, "id", &h.id)
                            && matches(p, "name", &h.name)
                            && matches(p, "state", &h.state)
                            && matches(p, "resourcestate", &h.resource_state)
                            && matches(p, "clusterid", &c.id)
                            && matches(p, "zoneid", &self.zones[c.zone].id)
                            && p.get("hypervisor")
                                .is_none_or(|v| v.eq_ignore_ascii_case("KVM"))
                        {
                            all.push(self.host_json(h));
                        }
                    }
                }
                for v in self.vms.iter().filter(|v| v.kind.is_system()) {
                    let t = v.kind.host_type().unwrap_or_default();
                    if ty.is_none_or(|x| x == t)
                        && !p.contains_key("id")
                        && !p.contains_key("hypervisor")
                        && matches(p, "name", &v.name)
                    {
                        all.push(self.sysvm_host_json(v));
                    }
                }
                list_reply(command, "host", all.iter().collect(), p, Value::clone)
            }
            "listSystemVms" => {
                let all: Vec<&Vm> = self
                    .vms
                    .iter()
                    .filter(|v| {
                        v.kind.is_system()
                            && matches(p, "id", &v.id)
                            && matches(p, "systemvmtype", v.kind.api())
                            && matches(p, "state", &v.state)
                            && p.get("hostid")
                                .is_none_or(|h| v.host.is_some_and(|i| &self.hosts[i].id == h))
                    })
                    .collect();
                list_reply(command, "systemvm", all, p, |v| self.sysvm_json(v))
            }
            "listRouters" => {
                let all: Vec<&Vm> = self
                    .vms
                    .iter()
                    .filter(|v| {
                        v.kind == VmKind::DomainRouter
                            && matches(p, "id", &v.id)
                            && matches(p, "state", &v.state)
                            && p.get("networkid").is_none_or(|n| {
                                v.router
                                    .as_ref()
                                    .is_some_and(|r| &self.networks[r.network].id == n)
                            })
                    })
                    .collect();
                list_reply(command, "router", all, p, |v| self.router_json(v))
            }
            "listVirtualMachines" => {
                let all: Vec<&Vm> = self
                    .vms
                    .iter()
                    .filter(|v| {
                        v.kind == VmKind::User
                            && matches(p, "id", &v.id)
                            && matches(p, "state", &v.state)
                            && matches(p, "name", &v.name)
                            && p.get("hostid")
                                .is_none_or(|h| v.host.is_some_and(|i| &self.hosts[i].id == h))
                    })
                    .collect();
                list_reply_with(command, "virtualmachine", all, p, |v, out| {
                    self.vm_json_into(v, out)
                })
            }
            "listNetworks" => {
                let all: Vec<&Network> = self
                    .networks
                    .iter()
                    .filter(|n| matches(p, "id", &n.id))
                    .collect();
                list_reply(command, "network", all, p, |n| {
                    json!({"id": n.id, "name": n.name, "displaytext": n.name, "type": "Isolated",
                           "state": "Implemented", "zoneid": self.zones[n.zone].id,
                           "zonename": self.zones[n.zone].name, "traffictype": "Guest",
                           "redundantrouter": n.redundant, "restartrequired": false,
                           "account": "admin", "domain": "ROOT"})
                })
            }
            "listVolumes" => {
                // One ROOT volume per user VM, on local storage where the VM's is.
                let all: Vec<&Vm> = self
                    .vms
                    .iter()
                    .filter(|v| {
                        v.kind == VmKind::User
                            && p.get("virtualmachineid").is_none_or(|id| &v.id == id)
                            && p.get("type").is_none_or(|t| t.eq_ignore_ascii_case("ROOT"))
                    })
                    .collect();
                list_reply(command, "volume", all, p, |v| {
                    json!({"id": format!("8b6f0c3e-0000-4000-8006-{:012x}", v.db_id),
                           "name": format!("ROOT-{}", v.db_id), "type": "ROOT",
                           "storagetype": if v.local_storage { "local" } else { "shared" },
                           "virtualmachineid": v.id, "vmname": v.name, "state": "Ready",
                           "size": 10_737_418_240_u64})
                })
            }
            "listZones" => {
                let all: Vec<&Zone> = self
                    .zones
                    .iter()
                    .filter(|z| matches(p, "id", &z.id) && matches(p, "name", &z.name))
                    .collect();
                list_reply(command, "zone", all, p, |z| {
                    json!({"id": z.id, "name": z.name, "allocationstate": "Enabled",
                           "networktype": "Advanced", "securitygroupsenabled": false})
                })
            }
            "listClusters" => {
                let all: Vec<&Cluster> = self
                    .clusters
                    .iter()
                    .filter(|c| {
                        matches(p, "id", &c.id)
                            && matches(p, "name", &c.name)
                            && matches(p, "zoneid", &self.zones[c.zone].id)
                    })
                    .collect();
                list_reply(command, "cluster", all, p, |c| {
                    json!({"id": c.id, "name": c.name, "zoneid": self.zones[c.zone].id,
                           "zonename": self.zones[c.zone].name, "podid": c.pod_id,
                           "podname": c.pod_name, "hypervisortype": "KVM",
                           "clustertype": "CloudManaged", "allocationstate": "Enabled",
                           "managedstate": "Managed"})
                })
            }
            "listConfigurations" => {
                let pairs: Vec<(&String, &String)> = self
                    .configs
                    .iter()
                    .filter(|(k, _)| p.get("name").is_none_or(|n| k.contains(n.as_str())))
                    .collect();
                let all: Vec<&(&String, &String)> = pairs.iter().collect();
                list_reply(command, "configuration", all, p, |(k, v)| {
                    json!({"name": k, "value": v, "category": "Advanced", "isdynamic": true,
                           "description": format!("lab setting {k}")})
                })
            }
            "listTemplates" => self.list_templates(command, p),
            "listOsTypes" => self.list_os_types(command, p),
            "listEvents" => {
                // With a database, `server::answer` reads the events from it instead.
                let all: Vec<&Event> = self.events.iter().filter(|e| event_matches(e, p)).collect();
                list_reply(command, "event", all, p, Self::event_json)
            }
            "listAccounts" => Reply::json(
                200,
                &json!({"listaccountsresponse": {"count": 1, "account": [{
                    "id": "8b6f0c3e-0000-4000-8000-0000000000a2", "name": "admin",
                    "accounttype": 1, "domainid": DOMAIN_ID, "domain": "ROOT", "state": "enabled"
                }]}}),
            ),
            _ => return None,
        })
    }

    /// A template's entries in `template_view`: one per zone it has a copy in (the first
    /// store's, as the distinct `(template, zone)` pairs `searchForTemplatesInternal` lists),
    /// or one without a zone when it is on no store (`temp_zone_pair` `<id>_0`).
    pub(crate) fn template_entries<'a>(
        &self,
        t: &'a Template,
    ) -> Vec<(Option<usize>, Option<&'a StoreRef>)> {
        let mut out: Vec<(Option<usize>, Option<&StoreRef>)> = Vec::new();
        for r in &t.stores {
            let Some(zone) = self
                .image_stores
                .iter()
                .find(|s| s.db_id == r.store)
                .map(|s| s.zone)
            else {
                continue;
            };
            if !out.iter().any(|(z, _)| *z == Some(zone)) {
                out.push((Some(zone), Some(r)));
            }
        }
        if out.is_empty() {
            out.push((None, None));
        }
        out
    }

    /// `TemplateJoinDaoImpl.getTemplateStatus` (4.19–4.20) for one zone's copy: the download
    /// percentage while downloading ("Installing Template" at 100 %), "Download Complete" once
    /// downloaded, else the error, or the template's own state when there is none.
    fn template_status(t: &Template, r: Option<&StoreRef>) -> String {
        let state = r.and_then(|r| r.download_state.as_deref());
        match state {
            Some("DOWNLOADED") => "Download Complete".into(),
            Some("DOWNLOAD_IN_PROGRESS") => {
                let pct = r.map_or(0, |r| r.download_pct);
                if pct == 100 {
                    "Installing Template".into()
                } else {
                    format!("{pct}% Downloaded")
                }
            }
            Some("BYPASSED") => "Bypassed Secondary Storage".into(),
            _ => match r.and_then(|r| r.error.clone()) {
                Some(e) => e,
                None => t.state.clone(),
            },
        }
    }

    /// `TemplateJoinDaoImpl.newTemplateResponse` for a root admin (`ResponseView.Full`: the
    /// status and URL are shown), in one zone.
    pub(crate) fn template_json(
        &self,
        t: &Template,
        zone: Option<usize>,
        r: Option<&StoreRef>,
    ) -> Value {
        let os = self.guest_os.iter().find(|o| o.db_id == t.guest_os);
        let z = zone.map(|z| &self.zones[z]);
        let details: Vec<Value> = zone.map_or_else(Vec::new, |zone| {
            t.stores
                .iter()
                .filter_map(|r| {
                    let s = self
                        .image_stores
                        .iter()
                        .find(|s| s.db_id == r.store && s.zone == zone)?;
                    Some(json!({"datastore": s.name,
                                "downloadPercent": r.download_pct.to_string(),
                                "downloadState": r.download_state.clone().unwrap_or_default()}))
                })
                .collect()
        });
        let mut v = json!({
            "id": t.id, "name": t.name, "displaytext": t.display_text,
            "ispublic": t.public, "isready": r.is_some_and(|r| r.state == "Ready")
                || t.format == "BAREMETAL",
            "passwordenabled": t.password_enabled, "format": t.format,
            "isfeatured": t.featured, "crossZones": t.cross_zones,
            "templatetype": t.kind, "hypervisor": t.hypervisor,
            "ostypeid": os.map(|o| o.id.as_str()), "ostypename": os.map(|o| o.name.as_str()),
            "account": if t.account == 1 { "system" } else { "admin" },
            "domainid": DOMAIN_ID, "domain": "ROOT",
            "status": Self::template_status(t, r), "url": t.url,
            "isextractable": t.extractable && !t.is_system(),
            "sshkeyenabled": t.sshkey_enabled,
            "isdynamicallyscalable": t.dynamically_scalable,
            "requireshvm": t.requires_hvm,
            "directdownload": false, "deployasis": false, "hasannotations": false,
            "downloaddetails": details, "tags": []
        });
        if let Some(r) = r {
            v["created"] = json!(api_date(&r.created));
            if let Some(size) = r.size.filter(|s| *s > 0) {
                v["size"] = json!(size);
            }
            if r.physical_size > 0 {
                v["physicalsize"] = json!(r.physical_size);
            }
        }
        if let Some(z) = z {
            v["zoneid"] = json!(z.id);
            v["zonename"] = json!(z.name);
        }
        if let Some(c) = &t.checksum {
            v["checksum"] = json!(c);
        }
        v
    }

    /// `listTemplates` (`ListTemplatesCmd`, `QueryManagerImpl.searchForTemplates`) for the
    /// root admin: `templatefilter` required; `featured` (public and featured), `community`
    /// (public, not featured), `self`/`selfexecutable` (the caller's), `executable` (public or
    /// the caller's), `sharedexecutable`/`shared` (shared with the caller: none in the lab),
    /// `all`; `featured`, `community`, `selfexecutable` and `sharedexecutable` only list
    /// copies that are Ready and leave out SYSTEM templates (`showDomr`). Then `id`, `name`
    /// (equal), `keyword` (in the name or display text), `hypervisor`, `zoneid`, the
    /// hypervisors in use, no ISOs, templates in state Active (or an upload state). One entry
    /// per template and zone, ordered by `temp_zone_pair` (`<id>_<zone id>`, as text).
    fn list_templates(&self, command: &str, p: &Params) -> Reply {
        let id = match p.get("id") {
            None => None,
            // `findByUuidIncludingRemoved`: a removed template's uuid translates (and lists
            // nothing).
            Some(v) => match translate_uuid(command, "id", v, |u| self.template_by_uuid(u)) {
                Ok(id) => Some(id),
                Err(r) => return r,
            },
        };
        let Some(filter) = p.get("templatefilter") else {
            return param_error(
                command,
                "Unable to execute API command listtemplates due to missing parameter templatefilter",
            );
        };
        let zone = match self.zone_param(command, p) {
            Ok(z) => z,
            Err(r) => return r,
        };
        // TemplateFilter.valueOf: the exact constant name.
        const FILTERS: &[&str] = &[
            "featured",
            "self",
            "selfexecutable",
            "shared",
            "sharedexecutable",
            "executable",
            "community",
            "all",
        ];
        if !FILTERS.contains(&filter.as_str()) {
            return error_reply(
                Some(command),
                431,
                Some(9999),
                &format!(
                    "No enum constant com.cloud.template.VirtualMachineTemplate.TemplateFilter.{filter}"
                ),
            );
        }
        let filter = filter.as_str();
        let only_ready = matches!(
            filter,
            "featured" | "selfexecutable" | "sharedexecutable" | "community"
        );
        let show_domr = !matches!(filter, "selfexecutable" | "featured");
        let caller = super::state::ADMIN_ACCOUNT;
        let hyper = p.get("hypervisor").and_then(|h| {
            [
                "XenServer",
                "KVM",
                "VMware",
                "Hyperv",
                "VirtualBox",
                "Simulator",
                "Ovm",
                "Ovm3",
            ]
            .into_iter()
            .chain(["LXC", "Custom", "Any", "BareMetal"])
            .find(|x| x.eq_ignore_ascii_case(h))
            .or_else(|| h.eq_ignore_ascii_case("parallels").then_some("Parralels"))
        });
        let in_use = !self.hosts.is_empty();
        let mut entries: Vec<(String, &Template, Option<usize>, Option<&StoreRef>)> = Vec::new();
        for t in &self.templates {
            let by_filter = id.is_some()
                || match filter {
                    "featured" => t.public && t.featured,
                    "community" => t.public && !t.featured,
                    "self" | "selfexecutable" => t.account == caller,
                    "executable" => t.public || t.account == caller,
                    "shared" | "sharedexecutable" => false,
                    _ => true,
                };
            let keep = by_filter
                && id.is_none_or(|i| t.db_id as i64 == i)
                && matches!(
                    t.state.as_str(),
                    "Active"
                        | "UploadAbandoned"
                        | "UploadError"
                        | "NotUploaded"
                        | "UploadInProgress"
                )
                && t.format != "ISO"
                && (!in_use || t.hypervisor == "KVM")
                && hyper.is_none_or(|h| t.hypervisor == h)
                && p.get("name").is_none_or(|n| t.name.eq_ignore_ascii_case(n))
                && p.get("keyword").is_none_or(|k| {
                    let k = k.to_lowercase();
                    t.name.to_lowercase().contains(&k) || t.display_text.to_lowercase().contains(&k)
                })
                && (show_domr || !t.is_system());
            if !keep {
                continue;
            }
            for (z, r) in self.template_entries(t) {
                let zone_db = z.map_or(0, |z| self.zones[z].db_id);
                if zone.is_some_and(|want| want != zone_db as i64) {
                    continue;
                }
                if only_ready && r.is_none_or(|r| r.state != "Ready") {
                    continue;
                }
                entries.push((format!("{}_{zone_db}", t.db_id), t, z, r));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let all: Vec<&(String, &Template, Option<usize>, Option<&StoreRef>)> =
            entries.iter().collect();
        list_reply(command, "template", all, p, |(_, t, z, r)| {
            self.template_json(t, *z, *r)
        })
    }

    /// `listOsTypes` (`ListGuestOsCmd`, `ManagementServerImpl.listGuestOSByCriteria`): `id`,
    /// `oscategoryid`, `description` and `keyword` (contained in the display name), ordered by
    /// display name; `GuestOSResponse` (`name` and the deprecated `description` both the
    /// display name). UNCONFIRMED: the order (4.18 sorts by display name, later releases may
    /// differ).
    fn list_os_types(&self, command: &str, p: &Params) -> Reply {
        let id = match p.get("id") {
            None => None,
            Some(v) => match translate_uuid(command, "id", v, |u| {
                self.guest_os
                    .iter()
                    .find(|o| o.id.eq_ignore_ascii_case(u))
                    .map(|o| o.db_id)
            }) {
                Ok(id) => Some(id),
                Err(r) => return r,
            },
        };
        let contains = |key: &str, o: &GuestOs| {
            p.get(key)
                .is_none_or(|d| o.name.to_lowercase().contains(&d.to_lowercase()))
        };
        let mut all: Vec<&GuestOs> = self
            .guest_os
            .iter()
            .filter(|o| {
                id.is_none_or(|i| o.db_id as i64 == i)
                    && p.get("oscategoryid")
                        .is_none_or(|c| o.category_id.eq_ignore_ascii_case(c))
                    && contains("description", o)
                    && contains("keyword", o)
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.db_id.cmp(&b.db_id)));
        list_reply(command, "ostype", all, p, |o| {
            json!({"id": o.id, "name": o.name, "description": o.name,
                   "oscategoryid": o.category_id, "oscategoryname": o.category_name,
                   "isuserdefined": o.user_defined.to_string()})
        })
    }

    /// Renders events read from the database.
    pub(crate) fn events_reply(command: &str, events: &[Event], p: &Params) -> Reply {
        let all: Vec<&Event> = events.iter().filter(|e| event_matches(e, p)).collect();
        list_reply(command, "event", all, p, Self::event_json)
    }

    /// Whether a command only reads (answered under a read lock).
    pub(crate) fn is_read_only(command: &str) -> bool {
        command.starts_with("list")
    }
}

/// The `listEvents` filters the lab answers: `type`, `level`, `startdate` and `enddate`
/// (`yyyy-MM-dd HH:mm:ss`, or a day for `enddate`).
fn event_matches(e: &Event, p: &Params) -> bool {
    let after = |d: &str| e.created.as_str() >= d;
    let before = |d: &str| {
        if d.len() == 10 {
            e.created.get(..10).is_some_and(|day| day <= d)
        } else {
            e.created.as_str() <= d
        }
    };
    matches(p, "type", &e.kind)
        && matches(p, "level", e.level)
        && p.get("startdate").is_none_or(|d| after(d))
        && p.get("enddate").is_none_or(|d| before(d))
}
