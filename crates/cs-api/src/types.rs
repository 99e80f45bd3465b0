//! Typed, tolerant views of CloudStack API responses: unknown fields are ignored, every field
//! the server may omit is an `Option` (Gson leaves out nulls and empty values).

use serde::{Deserialize, Deserializer, Serialize};

/// Accepts `true`, `"true"`, `false`, `"false"` (some response fields are strings).
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    Ok(match Option::<B>::deserialize(d)? {
        Some(B::Bool(b)) => Some(b),
        Some(B::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        None => None,
    })
}

/// Accepts a number or a numeric string.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(i64),
        Float(f64),
        Str(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        Some(N::Int(i)) => Some(i),
        #[allow(clippy::cast_possible_truncation)] // Codes and counts are small integers.
        Some(N::Float(f)) => Some(f as i64),
        Some(N::Str(s)) => s.trim().parse().ok(),
        None => None,
    })
}

/// Accepts a string or a number (rendered as a string).
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        Str(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Option::<S>::deserialize(d)? {
        Some(S::Str(s)) => Some(s),
        Some(S::Int(i)) => Some(i.to_string()),
        Some(S::Float(f)) => Some(f.to_string()),
        Some(S::Bool(b)) => Some(b.to_string()),
        None => None,
    })
}

/// `listCapabilities` → `capability`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CapabilitiesResponse {
    /// The management server's code version (`4.19.1.3`).
    pub cloudstackversion: Option<String>,
    /// Whether dynamic roles are on.
    #[serde(deserialize_with = "lenient_bool")]
    pub dynamicrolesenabled: Option<bool>,
    /// API rate-limit interval.
    #[serde(deserialize_with = "lenient_i64")]
    pub apilimitinterval: Option<i64>,
    /// API rate-limit maximum (0 = off).
    #[serde(deserialize_with = "lenient_i64")]
    pub apilimitmax: Option<i64>,
}

/// `listManagementServers` → `managementserver`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ManagementServerResponse {
    /// UUID.
    pub id: String,
    /// Host name.
    pub name: Option<String>,
    /// `Up`, `Down`, `PreparingToShutDown` (4.20), `PreparingForShutDown` (4.21+),
    /// `ReadyToShutDown`, `ShuttingDown`, `PreparingForMaintenance`, `Maintenance`.
    pub state: Option<String>,
    /// Code version the server runs.
    pub version: Option<String>,
    /// Java version (4.17+).
    pub javaversion: Option<String>,
    /// OS distribution (4.17+).
    pub osdistribution: Option<String>,
    /// Service IP (4.18.1+).
    pub serviceip: Option<String>,
    /// IP address (4.20.1+).
    pub ipaddress: Option<String>,
    /// Last start (4.17+).
    pub lastserverstart: Option<String>,
    /// Pending jobs (4.21+).
    #[serde(deserialize_with = "lenient_i64")]
    pub pendingjobscount: Option<i64>,
}

/// `listHosts` → `host`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HostResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Connection state (`Up`, `Down`, `Disconnected`, `Alert`, `Connecting`, …).
    pub state: Option<String>,
    /// Admin state (`Enabled`, `Disabled`, `PrepareForMaintenance`, `Maintenance`, …).
    pub resourcestate: Option<String>,
    /// `Routing` for hypervisors; `SecondaryStorageVM`, `ConsoleProxy` for system VM agents.
    #[serde(rename = "type")]
    pub host_type: Option<String>,
    /// Agent version.
    pub version: Option<String>,
    /// Hypervisor (`KVM`).
    pub hypervisor: Option<String>,
    /// Hypervisor version.
    pub hypervisorversion: Option<String>,
    /// IP address.
    pub ipaddress: Option<String>,
    /// Zone UUID.
    pub zoneid: Option<String>,
    /// Zone name.
    pub zonename: Option<String>,
    /// Pod UUID.
    pub podid: Option<String>,
    /// Pod name.
    pub podname: Option<String>,
    /// Cluster UUID.
    pub clusterid: Option<String>,
    /// Cluster name.
    pub clustername: Option<String>,
    /// Owning management server UUID.
    pub managementserverid: Option<String>,
    /// Last disconnect time.
    pub disconnected: Option<String>,
    /// Memory, in bytes.
    #[serde(deserialize_with = "lenient_i64")]
    pub memorytotal: Option<i64>,
    /// Memory allocated to VMs on it, in bytes.
    #[serde(deserialize_with = "lenient_i64")]
    pub memoryallocated: Option<i64>,
}

/// `listSystemVms` → `systemvm`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SystemVmResponse {
    /// UUID.
    pub id: String,
    /// Name (`s-1-VM`, `v-2-VM`).
    pub name: Option<String>,
    /// `secondarystoragevm` or `consoleproxy`.
    pub systemvmtype: Option<String>,
    /// VM state (`Running`, `Stopped`, `Starting`, …).
    pub state: Option<String>,
    /// State of the system VM's agent (`Up`, `Disconnected`, …).
    pub agentstate: Option<String>,
    /// Agent version (4.13.1+).
    pub version: Option<String>,
    /// Zone name.
    pub zonename: Option<String>,
    /// Host UUID.
    pub hostid: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// Template name.
    pub templatename: Option<String>,
}

/// `listRouters` → `router`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RouterResponse {
    /// UUID.
    pub id: String,
    /// Name (`r-7-VM`).
    pub name: Option<String>,
    /// VM state.
    pub state: Option<String>,
    /// Template version (`4.22.0`, `UNKNOWN`).
    pub version: Option<String>,
    /// Whether the router needs an upgrade to the current template.
    #[serde(deserialize_with = "lenient_bool")]
    pub requiresupgrade: Option<bool>,
    /// Whether its health checks failed.
    #[serde(deserialize_with = "lenient_bool")]
    pub healthchecksfailed: Option<bool>,
    /// Zone name.
    pub zonename: Option<String>,
    /// Host UUID.
    pub hostid: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// The template its next CloudStack start boots.
    pub templatename: Option<String>,
    /// Its guest network's UUID.
    pub guestnetworkid: Option<String>,
    /// Whether it is one of a redundant pair.
    #[serde(deserialize_with = "lenient_bool")]
    pub isredundantrouter: Option<bool>,
    /// `PRIMARY`, `BACKUP`, `UNKNOWN`, … for a redundant router.
    pub redundantstate: Option<String>,
}

/// `listVirtualMachines` → `virtualmachine`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VirtualMachineResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Display name.
    pub displayname: Option<String>,
    /// VM state.
    pub state: Option<String>,
    /// Host UUID (absent when stopped).
    pub hostid: Option<String>,
    /// Host name (absent when stopped).
    pub hostname: Option<String>,
    /// Zone name.
    pub zonename: Option<String>,
    /// Instance name (`i-2-60-VM`, root admin only).
    pub instancename: Option<String>,
    /// Hypervisor.
    pub hypervisor: Option<String>,
    /// Memory in MiB.
    #[serde(deserialize_with = "lenient_i64")]
    pub memory: Option<i64>,
}

/// `listEvents` → `event`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct EventResponse {
    /// UUID.
    pub id: String,
    /// `VM.START`, `MAINT.PREPARE`, …
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `Scheduled`, `Started`, `Created`, `Completed`.
    pub state: Option<String>,
    /// `INFO`, `WARN`, `ERROR`.
    pub level: Option<String>,
    /// What happened (`Successfully completed starting Vm. Vm Id: <uuid>`).
    pub description: Option<String>,
    /// When (`2026-12-07T10:15:00+0000`).
    pub created: Option<String>,
    /// The resource's id, when the event names one.
    #[serde(deserialize_with = "lenient_string")]
    pub resourceid: Option<String>,
    /// The resource's type.
    pub resourcetype: Option<String>,
}

/// `listVolumes` → `volume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeResponse {
    /// UUID.
    pub id: String,
    /// `ROOT` or `DATADISK`.
    #[serde(rename = "type")]
    pub volume_type: Option<String>,
    /// `shared` or `local`.
    pub storagetype: Option<String>,
    /// The VM it is attached to.
    pub virtualmachineid: Option<String>,
}

/// `listNetworks` → `network`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NetworkResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Zone UUID.
    pub zoneid: Option<String>,
    /// Whether its routers are a redundant pair.
    #[serde(deserialize_with = "lenient_bool")]
    pub redundantrouter: Option<bool>,
}

/// `listZones` → `zone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ZoneResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// `Enabled` or `Disabled`.
    pub allocationstate: Option<String>,
    /// `Advanced` or `Basic`.
    pub networktype: Option<String>,
}

/// `listTemplates` / `registerTemplate` → `template`: one per template and zone (a cross-zone
/// template is listed once for every zone it is on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TemplateResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// `USER`, `SYSTEM`, `ROUTING`, `BUILTIN`, …
    pub templatetype: Option<String>,
    /// `KVM`, …
    pub hypervisor: Option<String>,
    /// The zone of this entry (UUID).
    pub zoneid: Option<String>,
    /// The zone's name.
    pub zonename: Option<String>,
    /// Whether it is downloaded and usable in that zone.
    pub isready: Option<bool>,
    /// What the download is doing there ("Download Complete", "52% Downloaded", or an error).
    pub status: Option<String>,
    /// Creation time.
    pub created: Option<String>,
}

/// `listOsTypes` → `ostype`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct OsTypeResponse {
    /// UUID.
    pub id: String,
    /// "Debian GNU/Linux 12 (64-bit)", …
    pub description: Option<String>,
}

/// `listClusters` → `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ClusterResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Zone UUID.
    pub zoneid: Option<String>,
    /// Zone name.
    pub zonename: Option<String>,
    /// Pod UUID.
    pub podid: Option<String>,
    /// Pod name.
    pub podname: Option<String>,
    /// Hypervisor type.
    pub hypervisortype: Option<String>,
    /// `Enabled` or `Disabled`.
    pub allocationstate: Option<String>,
    /// `Managed` or `Unmanaged`.
    pub managedstate: Option<String>,
}

/// `listConfigurations` → `configuration`; also the answer of `updateConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ConfigurationResponse {
    /// Setting name.
    pub name: String,
    /// Value (as text; secrets are masked by the server).
    #[serde(deserialize_with = "lenient_string")]
    pub value: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Scope (`zone`, `cluster`, …) for scoped settings.
    pub scope: Option<String>,
    /// Whether a change applies without a restart.
    #[serde(deserialize_with = "lenient_bool")]
    pub isdynamic: Option<bool>,
    /// Description.
    pub description: Option<String>,
}

/// Status of an async job (`jobstatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum JobStatus {
    /// 0: still running.
    Pending,
    /// 1: succeeded.
    Succeeded,
    /// 2: failed.
    Failed,
    /// 3: cancelled.
    Cancelled,
}

/// `queryAsyncJobResult` (serialized directly under the response key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AsyncJobResponse {
    /// Job UUID.
    pub jobid: String,
    /// 0 pending, 1 succeeded, 2 failed, 3 cancelled.
    #[serde(deserialize_with = "lenient_i64")]
    pub jobstatus: Option<i64>,
    /// Result code (0 on success, an `ApiErrorCode` on failure).
    #[serde(deserialize_with = "lenient_i64")]
    pub jobresultcode: Option<i64>,
    /// `object` or `text`.
    pub jobresulttype: Option<String>,
    /// `{<object>: {...}}` on success, `{errorcode, errortext}` on failure.
    pub jobresult: Option<serde_json::Value>,
    /// The command class.
    pub cmd: Option<String>,
    /// Instance type the job acts on.
    pub jobinstancetype: Option<String>,
    /// Instance UUID.
    pub jobinstanceid: Option<String>,
    /// Creation time.
    pub created: Option<String>,
    /// Completion time.
    pub completed: Option<String>,
}

impl AsyncJobResponse {
    /// The job's status; an unknown code counts as pending.
    pub fn status(&self) -> JobStatus {
        match self.jobstatus {
            Some(1) => JobStatus::Succeeded,
            Some(2) => JobStatus::Failed,
            Some(3) => JobStatus::Cancelled,
            _ => JobStatus::Pending,
        }
    }

    /// The error text of a failed job (`jobresult.errortext`), when given.
    pub fn error_text(&self) -> Option<&str> {
        self.jobresult
            .as_ref()
            .and_then(|r| r.get("errortext"))
            .and_then(|t| t.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_odd_fields_are_tolerated() {
        let h: HostResponse = serde_json::from_str(
            r#"{"id":"h1","name":"kvm01","state":"Up","type":"Routing","details":{"a":"b"},"cpunumber":32}"#,
        )
        .unwrap();
        assert_eq!(h.host_type.as_deref(), Some("Routing"));
        let r: RouterResponse =
            serde_json::from_str(r#"{"id":"r","requiresupgrade":"true"}"#).unwrap();
        assert_eq!(r.requiresupgrade, Some(true));
        let c: ConfigurationResponse = serde_json::from_str(r#"{"name":"x","value":5}"#).unwrap();
        assert_eq!(c.value.as_deref(), Some("5"));
        let m: ManagementServerResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(m.state, None);
    }

    #[test]
    fn job_status_and_error_text() {
        let j: AsyncJobResponse = serde_json::from_str(
            r#"{"jobid":"j","jobstatus":2,"jobresultcode":530,"jobresult":{"errorcode":530,"errortext":"Failed to stop VM"}}"#,
        )
        .unwrap();
        assert_eq!(j.status(), JobStatus::Failed);
        assert_eq!(j.error_text(), Some("Failed to stop VM"));
    }
}
