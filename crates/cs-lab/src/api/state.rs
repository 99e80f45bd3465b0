//! The lab cloud's state and the answers to API commands.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

/// A JSON reply: HTTP status and body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

/// The envelope key of a command (`listHosts` → `listhostsresponse`).
pub(crate) fn response_key(command: &str) -> String {
    format!("{}response", command.to_lowercase())
}

/// An error reply in CloudStack's shape; HTTP status = error code.
pub(crate) fn error_reply(
    command: Option<&str>,
    code: u16,
    cs_code: Option<u32>,
    text: &str,
) -> Reply {
    let key = match command {
        Some(c) if code != 432 && is_known(c) => response_key(c),
        _ => "errorresponse".to_string(),
    };
    let mut inner = json!({"uuidList": [], "errorcode": code, "errortext": text});
    if let Some(cs) = cs_code {
        inner["cserrorcode"] = json!(cs);
    }
    Reply::json(code, &json!({ key: inner }))
}

/// Commands the lab answers.
pub(crate) const COMMANDS: [&str; 15] = [
    "listCapabilities",
    "listManagementServers",
    "listHosts",
    "listSystemVms",
    "listRouters",
    "listVirtualMachines",
    "listZones",
    "listClusters",
    "listConfigurations",
    "updateConfiguration",
    "prepareHostForMaintenance",
    "cancelHostMaintenance",
    "queryAsyncJobResult",
    "login",
    "logout",
];

pub(crate) fn is_known(command: &str) -> bool {
    COMMANDS.contains(&command)
}

#[derive(Debug, Clone)]
pub(crate) struct Zone {
    pub(crate) id: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) zone: usize,
    pub(crate) pod_id: String,
    pub(crate) pod_name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Ms {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) version: String,
}

#[derive(Debug, Clone)]
pub(crate) struct LabHost {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) resource_state: String,
    pub(crate) version: String,
    pub(crate) ip: String,
    pub(crate) cluster: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Vm {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) host: Option<usize>,
    pub(crate) zone: usize,
    pub(crate) number: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct SysVm {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) state: String,
    pub(crate) agent_state: String,
    pub(crate) version: String,
    pub(crate) zone: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Router {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) version: String,
    pub(crate) requires_upgrade: bool,
    pub(crate) zone: usize,
}

/// What a job does when it ends.
#[derive(Debug, Clone)]
pub(crate) enum JobEffect {
    HostResourceState {
        host: usize,
        success: String,
        failure: String,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) cmd: String,
    pub(crate) polls_left: u32,
    pub(crate) failure: Option<String>,
    pub(crate) effect: JobEffect,
    pub(crate) done: Option<Value>,
}

/// The whole cloud.
#[derive(Debug, Default)]
pub(crate) struct Cloud {
    next_id: u64,
    pub(crate) version: String,
    pub(crate) zones: Vec<Zone>,
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) ms: Vec<Ms>,
    pub(crate) hosts: Vec<LabHost>,
    pub(crate) vms: Vec<Vm>,
    pub(crate) sysvms: Vec<SysVm>,
    pub(crate) routers: Vec<Router>,
    pub(crate) configs: BTreeMap<String, String>,
    pub(crate) jobs: HashMap<String, Job>,
    pub(crate) job_polls: u32,
    pub(crate) fail_next_job: Option<String>,
}

/// Parameters of one request.
pub(crate) type Params = HashMap<String, String>;

#[derive(Serialize)]
struct VmJson<'a> {
    id: &'a str,
    name: &'a str,
    displayname: &'a str,
    account: &'static str,
    domainid: &'static str,
    domain: &'static str,
    created: &'static str,
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
    serviceofferingid: &'static str,
    serviceofferingname: &'static str,
    cpunumber: u32,
    cpuspeed: u32,
    memory: u32,
    guestosid: &'static str,
    rootdevicetype: &'static str,
    hypervisor: &'static str,
    instancename: String,
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

const DOMAIN_ID: &str = "8b6f0c3e-0000-4000-8000-00000000d0d0";

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
    pub(crate) fn new() -> Cloud {
        let mut c = Cloud {
            version: "4.20.0.0".into(),
            job_polls: 1,
            ..Cloud::default()
        };
        c.configs.insert("integration.api.port".into(), "0".into());
        c.configs.insert("default.page.size".into(), "500".into());
        c.configs.insert(
            "enforce.post.requests.and.timestamps".into(),
            "false".into(),
        );
        c.configs
            .insert("minreq.sysvmtemplate.version".into(), "4.20.0".into());
        c
    }

    pub(crate) fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("8b6f0c3e-0000-4000-8000-{:012x}", self.next_id)
    }

    pub(crate) fn zone_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.zones.iter().position(|z| z.name == name) {
            return i;
        }
        let id = self.new_id();
        self.zones.push(Zone {
            id,
            name: name.to_string(),
        });
        self.zones.len() - 1
    }

    pub(crate) fn cluster_index(&mut self, zone: &str, cluster: &str) -> usize {
        let z = self.zone_index(zone);
        if let Some(i) = self
            .clusters
            .iter()
            .position(|c| c.name == cluster && c.zone == z)
        {
            return i;
        }
        let id = self.new_id();
        let pod_id = format!("8b6f0c3e-0000-4000-8001-{z:012x}");
        self.clusters.push(Cluster {
            id,
            name: cluster.to_string(),
            zone: z,
            pod_id,
            pod_name: "pod1".into(),
        });
        self.clusters.len() - 1
    }

    pub(crate) fn host_index(&self, key: &str) -> Option<usize> {
        self.hosts
            .iter()
            .position(|h| h.id == key || h.name == key || h.ip == key)
    }

    fn host_json(&self, h: &LabHost) -> Value {
        let c = &self.clusters[h.cluster];
        let z = &self.zones[c.zone];
        let ms = self.ms.first();
        json!({
            "id": h.id, "name": h.name, "state": h.state, "type": "Routing",
            "ipaddress": h.ip, "zoneid": z.id, "zonename": z.name, "podid": c.pod_id,
            "podname": c.pod_name, "clusterid": c.id, "clustername": c.name,
            "clustertype": "CloudManaged", "version": h.version, "hypervisor": "KVM",
            "hypervisorversion": "8.2.2", "cpusockets": 2, "cpunumber": 32, "cpuspeed": 2400,
            "memorytotal": 270_000_000_000_u64, "lastpinged": "1970-01-20T15:32:50+0000",
            "managementserverid": ms.map(|m| m.id.as_str()),
            "managementservername": ms.map(|m| m.name.as_str()),
            "resourcestate": h.resource_state, "created": "2024-05-01T12:00:00+0000",
            "islocalstorageactive": false, "hahost": false, "arch": "x86_64",
            "details": {"Host.OS": "Ubuntu", "Host.OS.Version": "24.04", "secured": "true"}
        })
    }

    fn sysvm_host_json(&self, s: &SysVm) -> Value {
        let z = &self.zones[s.zone];
        let t = if s.kind == "consoleproxy" {
            "ConsoleProxy"
        } else {
            "SecondaryStorageVM"
        };
        json!({
            "id": format!("{}-agent", s.id), "name": s.name, "state": s.agent_state, "type": t,
            "zoneid": z.id, "zonename": z.name, "version": s.version, "resourcestate": "Enabled"
        })
    }

    fn vm_json(&self, v: &Vm, out: &mut Vec<u8>) {
        let z = &self.zones[v.zone];
        let host = v.host.map(|h| &self.hosts[h]);
        let n = v.number;
        let _ = serde_json::to_writer(
            out,
            &VmJson {
                id: &v.id,
                name: &v.name,
                displayname: &v.name,
                account: "admin",
                domainid: DOMAIN_ID,
                domain: "ROOT",
                created: "2025-10-30T11:00:00+0000",
                state: &v.state,
                haenable: false,
                hostid: host.map(|h| h.id.as_str()),
                hostname: host.map(|h| h.name.as_str()),
                zoneid: &z.id,
                zonename: &z.name,
                templateid: "8b6f0c3e-0000-4000-8000-000000000061",
                templatename: "ubuntu-24.04-x86_64",
                serviceofferingid: "8b6f0c3e-0000-4000-8000-000000000062",
                serviceofferingname: "Medium Instance",
                cpunumber: 2,
                cpuspeed: 1000,
                memory: 2048,
                guestosid: "8b6f0c3e-0000-4000-8000-000000000063",
                rootdevicetype: "ROOT",
                hypervisor: "KVM",
                instancename: format!("i-2-{n}-VM"),
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

    fn sysvm_json(&self, s: &SysVm) -> Value {
        let z = &self.zones[s.zone];
        json!({
            "id": s.id, "name": s.name, "systemvmtype": s.kind, "state": s.state,
            "agentstate": s.agent_state, "version": s.version, "zoneid": z.id, "zonename": z.name,
            "hypervisor": "KVM", "templatename": format!("systemvm-kvm-{}-x86_64", s.version),
            "created": "2025-10-30T10:05:00+0000", "isdynamicallyscalable": false
        })
    }

    /// Answers a read-only command (`list*`).
    pub(crate) fn read(&self, command: &str, p: &Params) -> Option<Reply> {
        Some(match command {
            "listCapabilities" => Reply::json(
                200,
                &json!({"listcapabilitiesresponse": {"capability": {
                    "cloudstackversion": self.version, "dynamicrolesenabled": true,
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
                        {
                            all.push(self.host_json(h));
                        }
                    }
                }
                for s in &self.sysvms {
                    let t = if s.kind == "consoleproxy" {
                        "ConsoleProxy"
                    } else {
                        "SecondaryStorageVM"
                    };
                    if ty.is_none_or(|x| x == t)
                        && !p.contains_key("id")
                        && matches(p, "name", &s.name)
                    {
                        all.push(self.sysvm_host_json(s));
                    }
                }
                list_reply(command, "host", all.iter().collect(), p, Value::clone)
            }
            "listSystemVms" => {
                let all: Vec<&SysVm> = self
                    .sysvms
                    .iter()
                    .filter(|s| {
                        matches(p, "id", &s.id)
                            && matches(p, "systemvmtype", &s.kind)
                            && matches(p, "state", &s.state)
                    })
                    .collect();
                list_reply(command, "systemvm", all, p, |s| self.sysvm_json(s))
            }
            "listRouters" => {
                let all: Vec<&Router> = self
                    .routers
                    .iter()
                    .filter(|r| matches(p, "id", &r.id))
                    .collect();
                list_reply(command, "router", all, p, |r| {
                    json!({"id": r.id, "name": r.name, "state": r.state, "version": r.version,
                           "requiresupgrade": r.requires_upgrade, "healthchecksfailed": false,
                           "role": "VIRTUAL_ROUTER", "zoneid": self.zones[r.zone].id,
                           "zonename": self.zones[r.zone].name, "isredundantrouter": false})
                })
            }
            "listVirtualMachines" => {
                let all: Vec<&Vm> = self
                    .vms
                    .iter()
                    .filter(|v| {
                        matches(p, "id", &v.id)
                            && matches(p, "state", &v.state)
                            && matches(p, "name", &v.name)
                            && p.get("hostid")
                                .is_none_or(|h| v.host.is_some_and(|i| &self.hosts[i].id == h))
                    })
                    .collect();
                list_reply_with(command, "virtualmachine", all, p, |v, out| {
                    self.vm_json(v, out)
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
            _ => return None,
        })
    }

    /// Answers a verified request.
    pub(crate) fn dispatch(&mut self, command: &str, p: &Params) -> Reply {
        if let Some(r) = self.read(command, p) {
            return r;
        }
        match command {
            "updateConfiguration" => {
                let Some(name) = p.get("name") else {
                    return error_reply(
                        Some(command),
                        431,
                        Some(4350),
                        "Unable to execute API command updateconfiguration due to missing parameter name",
                    );
                };
                if !self.configs.contains_key(name) {
                    return error_reply(
                        Some(command),
                        431,
                        Some(4350),
                        &format!("Invalid config name: {name}"),
                    );
                }
                let value = p.get("value").cloned().unwrap_or_default();
                self.configs.insert(name.clone(), value.clone());
                Reply::json(
                    200,
                    &json!({"updateconfigurationresponse": {"configuration": {
                        "name": name, "value": value, "category": "Advanced", "isdynamic": true
                    }}}),
                )
            }
            "prepareHostForMaintenance" | "cancelHostMaintenance" => {
                let Some(h) = p
                    .get("id")
                    .and_then(|id| self.hosts.iter().position(|h| &h.id == id))
                else {
                    return error_reply(
                        Some(command),
                        431,
                        Some(4350),
                        "Unable to find host with the specified ID",
                    );
                };
                let (now, success, failure) = if command == "prepareHostForMaintenance" {
                    if self.hosts[h].resource_state != "Enabled" {
                        return error_reply(
                            Some(command),
                            530,
                            Some(4250),
                            "Host is not in a state to be put into maintenance",
                        );
                    }
                    (
                        "PrepareForMaintenance",
                        "Maintenance",
                        "ErrorInPrepareForMaintenance",
                    )
                } else {
                    ("Enabled", "Enabled", "Maintenance")
                };
                self.hosts[h].resource_state = now.into();
                let jobid = self.new_id();
                self.jobs.insert(
                    jobid.clone(),
                    Job {
                        cmd: format!("org.apache.cloudstack.api.command.admin.host.{command}Cmd"),
                        polls_left: self.job_polls,
                        failure: self.fail_next_job.take(),
                        effect: JobEffect::HostResourceState {
                            host: h,
                            success: success.into(),
                            failure: failure.into(),
                        },
                        done: None,
                    },
                );
                Reply::json(200, &json!({ response_key(command): {"jobid": jobid} }))
            }
            "queryAsyncJobResult" => {
                let Some(jobid) = p.get("jobid").cloned() else {
                    return error_reply(
                        Some(command),
                        431,
                        Some(4350),
                        "Unable to execute API command queryasyncjobresult due to missing parameter jobid",
                    );
                };
                let Some(job) = self.jobs.get_mut(&jobid) else {
                    return error_reply(
                        Some(command),
                        431,
                        Some(4350),
                        &format!("Unable to find job by id {jobid}"),
                    );
                };
                if job.done.is_none() && job.polls_left > 0 {
                    job.polls_left -= 1;
                    let v = json!({"queryasyncjobresultresponse": {
                        "jobid": jobid, "cmd": job.cmd, "jobstatus": 0, "jobprocstatus": 0,
                        "jobresultcode": 0, "jobinstancetype": "Host",
                        "created": "2025-10-30T11:02:00+0000"}});
                    return Reply::json(200, &v);
                }
                if job.done.is_none() {
                    let job = job.clone();
                    let JobEffect::HostResourceState {
                        host,
                        success,
                        failure,
                    } = &job.effect;
                    let done = match &job.failure {
                        Some(text) => {
                            self.hosts[*host].resource_state = failure.clone();
                            json!({"jobid": jobid, "cmd": job.cmd, "jobstatus": 2, "jobprocstatus": 0,
                                   "jobresultcode": 530, "jobresulttype": "object",
                                   "jobresult": {"errorcode": 530, "errortext": text}})
                        }
                        None => {
                            self.hosts[*host].resource_state = success.clone();
                            json!({"jobid": jobid, "cmd": job.cmd, "jobstatus": 1, "jobprocstatus": 0,
                                   "jobresultcode": 0, "jobresulttype": "object",
                                   "jobresult": {"host": self.host_json(&self.hosts[*host])},
                                   "completed": "2025-10-30T11:02:30+0000"})
                        }
                    };
                    if let Some(j) = self.jobs.get_mut(&jobid) {
                        j.done = Some(done);
                    }
                }
                let done = self.jobs[&jobid].done.clone().unwrap_or(Value::Null);
                Reply::json(200, &json!({"queryasyncjobresultresponse": done}))
            }
            "logout" => Reply::json(200, &json!({"logoutresponse": {"description": "success"}})),
            other => error_reply(
                Some(other),
                432,
                None,
                &format!("Unknown API command: {other}"),
            ),
        }
    }

    /// Whether a command only reads (answered under a read lock).
    pub(crate) fn is_read_only(command: &str) -> bool {
        command.starts_with("list")
    }
}
