//! Templates an operator registers (`registerTemplate`, as the upgrade guide asks for the next
//! release's system VM template), their download to the zones' image stores by the secondary
//! storage VMs, and their deletion (`deleteTemplate`, as after a failed download), with
//! CloudStack's checks, rows, events and download states.

use std::time::Duration;

use serde_json::json;

use cs_core::CsVersion;

use super::Action;
use crate::api::state::{
    ADMIN_ACCOUNT, Cloud, JobEvent, JobOutcome, Params, Reply, SYSTEM_TEMPLATE_PHYSICAL_SIZE,
    SYSTEM_TEMPLATE_SIZE, StoreRef, Template, Vm, VmKind, db_now, error_reply, param_error,
    template_version,
};

/// `Hypervisor.HypervisorType` without `None`, in declaration order (4.19–4.20, with
/// `Custom`), and the lower-case names `HypervisorType.getType` knows them by.
const HYPERVISORS: &[(&str, &str)] = &[
    ("xenserver", "XenServer"),
    ("kvm", "KVM"),
    ("vmware", "VMware"),
    ("hyperv", "Hyperv"),
    ("virtualbox", "VirtualBox"),
    ("parallels", "Parralels"),
    ("baremetal", "BareMetal"),
    ("simulator", "Simulator"),
    ("ovm", "Ovm"),
    ("ovm3", "Ovm3"),
    ("lxc", "LXC"),
    ("custom", "Custom"),
    ("any", "Any"),
];

/// `Storage.ImageFormat`, in declaration order. UNCONFIRMED: the list of 4.18–4.20 (read from
/// an older `Storage.java`; a later release may have added formats).
const IMAGE_FORMATS: &[&str] = &[
    "QCOW2",
    "RAW",
    "VHD",
    "ISO",
    "OVA",
    "VHDX",
    "BAREMETAL",
    "VMDK",
    "VDI",
    "TAR",
    "DIR",
];

/// `UriUtils.SUPPORTED_EXTENSIONS_BY_FORMAT`: the base extensions a URL's path may end with
/// for a format (each also compressed: `.zip`, `.bz2`, `.gz`), and whether `.metalink` is
/// allowed.
const EXTENSIONS: &[(&str, &[&str], bool)] = &[
    ("vhd", &["vhd"], false),
    ("vhdx", &["vhdx"], false),
    ("qcow2", &["qcow2", "img"], true),
    ("ova", &["ova"], true),
    ("tar", &["tar"], false),
    ("raw", &["img", "raw"], false),
    ("vmdk", &["vmdk"], false),
    ("iso", &["iso"], true),
];

/// The progress reports of a download: 0 %, 25 %, 50 %, 75 %, 100 % ("Installing Template"),
/// then `DOWNLOADED`, [`crate::Timings::template_download`] apart in all.
const DOWNLOAD_STEPS: u32 = 6;
const DOWNLOAD_STEP_PCT: u32 = 25;

/// The error a download ends with when the template's URL answers 404, as the secondary
/// storage VM's `HttpTemplateDownloader` reports it (leading and trailing space included).
pub(crate) const DEFAULT_DOWNLOAD_ERROR: &str = " HTTP Server returned 404 (expected 200 OK) ";

/// `ParamProcessWorker.processParameters` refusing a value: a `ServerApiException`
/// (`cserrorcode` 9999) with the command's name.
fn invalid_value(command: &str, text: &str) -> Reply {
    error_reply(
        Some(command),
        431,
        Some(9999),
        &format!(
            "Unable to execute API command {} due to invalid value. {text}",
            command.to_lowercase()
        ),
    )
}

/// `ParamProcessWorker.translateUuidToInternalId` for a UUID parameter of a command from
/// before 3.x (no `since`): `-1` passes as -1, a number as an internal id (not looked up),
/// anything else must be the uuid of an existing entity.
pub(crate) fn translate_uuid(
    command: &str,
    name: &str,
    value: &str,
    find: impl Fn(&str) -> Option<u64>,
) -> Result<i64, Reply> {
    if value == "-1" {
        return Ok(-1);
    }
    if let Ok(n) = value.parse::<i64>() {
        return Ok(n);
    }
    find(value).map(|id| id as i64).ok_or_else(|| {
        invalid_value(
            command,
            &format!(
                "Invalid parameter {name} value={value} due to incorrect long value format, or \
                 entity does not exist or due to incorrect parameter annotation for the field \
                 in api cmd class."
            ),
        )
    })
}

/// A `ServerApiException(PARAM_ERROR)` thrown by a command or by the API layer for an
/// `IllegalArgumentException` (`cserrorcode` 9999: `ServerApiException` keeps its own code
/// unless the cause is a `CloudRuntimeException`).
fn api_param_error(command: &str, text: &str) -> Reply {
    error_reply(Some(command), 431, Some(9999), text)
}

/// The parts of a URL `java.net.URI` gives `UriUtils.validateUrl`: scheme, host, path.
fn split_url(url: &str) -> Option<(Option<&str>, &str, &str)> {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>')
    {
        return None;
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some((None, "", url));
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .map_or("", |h| h.trim_start_matches('['))
    } else {
        host.split(':').next().unwrap_or("")
    };
    Some((Some(scheme), host, path))
}

/// `UriUtils.validateUrl(format, url)`: an http(s) URL of a host the management server can
/// resolve that is not its own (loopback, link-local, multicast, any), IPv4, whose path ends
/// with an extension of the format. The lab resolves nothing: a host under `.invalid`
/// (RFC 2606) does not resolve, every other name does (and is reachable: UNCONFIRMED that
/// nothing else fails; `HypervisorTemplateAdapter.prepare` also asks the URL for its size with
/// `UriUtils.getRemoteSize`, which the lab does not).
fn validate_url(format: &str, url: &str) -> Result<(), String> {
    let Some((scheme, host, path)) = split_url(url) else {
        return Err(format!("Invalid URL: {url}"));
    };
    if !scheme.is_some_and(|s| {
        ["http", "https", "file"]
            .iter()
            .any(|k| s.eq_ignore_ascii_case(k))
    }) {
        return Err(format!("Unsupported scheme for url: {url}"));
    }
    let host = host.to_ascii_lowercase();
    if host.ends_with(".invalid") || host == "invalid" {
        return Err(format!("Unable to resolve {host}"));
    }
    let illegal = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            a.is_loopback() || a.is_unspecified() || a.is_link_local() || a.is_multicast()
        }
        Ok(std::net::IpAddr::V6(a)) => {
            if a.is_loopback() || a.is_unspecified() || a.is_multicast() {
                true
            } else {
                return Err(format!("IPV6 addresses not supported ({a})"));
            }
        }
        // `InetAddress.getByName(null or "")` is the loopback address.
        Err(_) => host.is_empty() || host == "localhost" || host.ends_with(".localhost"),
    };
    if illegal {
        return Err("Illegal host specified in url".into());
    }
    check_format(format, path)
}

/// `UriUtils.checkFormat`.
fn check_format(format: &str, path: &str) -> Result<(), String> {
    let f = format.to_lowercase();
    let lower = path.to_lowercase();
    let ends = |bases: &[&str], metalink: bool| {
        bases.iter().any(|b| {
            lower.ends_with(&format!(".{b}"))
                || ["zip", "bz2", "gz"]
                    .iter()
                    .any(|c| lower.ends_with(&format!(".{b}.{c}")))
        }) || (metalink && lower.ends_with(".metalink"))
    };
    let Some((_, bases, metalink)) = EXTENSIONS.iter().find(|(k, _, _)| *k == f) else {
        // A format without extensions (`BAREMETAL`, `VDI`, `DIR`): the map has no entry and
        // the check throws a NullPointerException. UNCONFIRMED: answered as ApiServer answers
        // an unexpected exception.
        return Err(String::new());
    };
    if ends(bases, *metalink) {
        return Ok(());
    }
    if !EXTENSIONS.iter().any(|(_, b, m)| ends(b, *m)) {
        return Err(format!("Please specify a valid {f}"));
    }
    Err(format!(
        "Please specify a valid URL. URL:{path} is an invalid for the format {f}"
    ))
}

/// `Boolean.valueOf`, as `ParamProcessWorker` reads a BOOLEAN parameter.
fn flag(p: &Params, name: &str) -> Option<bool> {
    p.get(name).map(|v| v.eq_ignore_ascii_case("true"))
}

/// `VMInstanceVO.toString` in the messages of 4.18.1+ (issue apache/cloudstack#8157 quotes
/// `VM instance {"id":2972,"instanceName":"i-39 …` from 4.18.1). UNCONFIRMED: the fields
/// after `instanceName` (assumed `type` and `uuid`, as other VOs' `reflectOnlySelectedFields`
/// name them).
fn vm_instance_string(v: &Vm) -> String {
    format!(
        "VM instance {{\"id\":{},\"instanceName\":\"{}\",\"type\":\"{}\",\"uuid\":\"{}\"}}",
        v.db_id,
        v.instance_name,
        v.kind.db(),
        v.id
    )
}

/// `ObjectInDataStoreManagerImpl`'s state machine: the states of a `template_store_ref` row
/// from which `DestroyRequested` leads to `Destroying` (`Allocated`, `Ready`, `Destroying`,
/// `Failed`). From the others (`Creating`/`Creating2` while a download is requested but not
/// answered yet, `Copying`, `Migrating`) there is no transition and `TemplateObject
/// .processEvent` throws "Failed to update state".
const DESTROYABLE: &[&str] = &["Allocated", "Ready", "Destroying", "Failed"];

impl Cloud {
    /// Whether a secondary storage VM runs in `zone` with its agent connected: the endpoint
    /// `DefaultEndPointSelector.select` hands a download to (the SSVM's agent host is Up once
    /// the VM runs).
    pub(crate) fn ssvm_running(&self, zone: usize) -> bool {
        self.vms
            .iter()
            .any(|v| v.kind == VmKind::SecondaryStorageVm && v.zone == zone && v.state == "Running")
    }

    /// The id of the zone with uuid `uuid`.
    fn zone_by_uuid(&self, uuid: &str) -> Option<u64> {
        self.zones
            .iter()
            .find(|z| z.id.eq_ignore_ascii_case(uuid))
            .map(|z| z.db_id)
    }

    /// The optional `zoneid` parameter, translated as `ParamProcessWorker` does.
    pub(crate) fn zone_param(&self, command: &str, p: &Params) -> Result<Option<i64>, Reply> {
        p.get("zoneid")
            .map(|v| translate_uuid(command, "zoneid", v, |u| self.zone_by_uuid(u)))
            .transpose()
    }

    /// The id of the template with uuid `uuid`, removed ones included, as
    /// `ParamProcessWorker` finds it (`findByUuidIncludingRemoved`: "we search within removed
    /// entities and let service layer deal with removed ones").
    pub(crate) fn template_by_uuid(&self, uuid: &str) -> Option<u64> {
        self.templates
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(uuid))
            .map(|t| t.db_id)
            .or_else(|| {
                self.removed_templates
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(uuid))
                    .map(|(_, id)| *id)
            })
    }

    /// Whether the management server that answers is at `v` or later.
    fn answering_at_least(&self, v: CsVersion) -> bool {
        CsVersion::parse(&self.answering_version()).is_ok_and(|a| a >= v)
    }

    fn download_interval(&self) -> Duration {
        (self.timings.template_download / DOWNLOAD_STEPS).max(Duration::from_millis(1))
    }

    /// `registerTemplate` (`RegisterTemplateCmd`, synchronous; 4.18–4.20): the parameters as
    /// `ParamProcessWorker` reads them, `validateParameters`, then
    /// `TemplateManagerImpl.registerTemplate` → `HypervisorTemplateAdapter.prepare`
    /// (`TemplateAdapterBase.prepare`, `UriUtils.validateUrl`) and `create`
    /// (`persistTemplate`, `createTemplateWithinZones`). Writes the `vm_template` row (state
    /// `Active`), a `template_store_ref` row on the image store(s) of each zone and the
    /// `TEMPLATE.CREATE` event; the secondary storage VMs then download it.
    pub(crate) fn register_template(&mut self, command: &str, p: &Params) -> Reply {
        let missing = |name: &str| {
            param_error(
                command,
                &format!(
                    "Unable to execute API command registertemplate due to missing parameter {name}"
                ),
            )
        };
        // The fields in declaration order; the first missing or unreadable one answers.
        // UNCONFIRMED: that `getDeclaredFields` returns them in declaration order (it does on
        // the JVMs CloudStack runs on, but Java does not promise it).
        let bits = match p.get("bits") {
            None => 64,
            Some(v) => match v.parse::<u32>() {
                Ok(b) => b,
                Err(_) => {
                    return api_param_error(
                        command,
                        &format!(
                            "Unable to execute API command registertemplate due to invalid value {v} for parameter bits"
                        ),
                    );
                }
            },
        };
        let Some(format) = p.get("format") else {
            return missing("format");
        };
        let Some(hypervisor) = p.get("hypervisor") else {
            return missing("hypervisor");
        };
        let Some(name) = p.get("name") else {
            return missing("name");
        };
        let os_type = match p.get("ostypeid") {
            None => None,
            Some(v) => {
                match translate_uuid(command, "ostypeid", v, |u| {
                    self.guest_os
                        .iter()
                        .find(|o| o.id.eq_ignore_ascii_case(u))
                        .map(|o| o.db_id)
                }) {
                    Ok(id) => Some(id),
                    Err(r) => return r,
                }
            }
        };
        let Some(url) = p.get("url") else {
            return missing("url");
        };
        let zone_of = |u: &str| self.zone_by_uuid(u);
        let zone_id = match self.zone_param(command, p) {
            Ok(z) => z,
            Err(r) => return r,
        };
        let mut zone_ids = Vec::new();
        if let Some(list) = p.get("zoneids") {
            for v in list.split(',').filter(|v| !v.is_empty()) {
                match translate_uuid(command, "zoneids", v, zone_of) {
                    Ok(z) => zone_ids.push(z),
                    Err(r) => return r,
                }
            }
        }
        let direct = flag(p, "directdownload").unwrap_or(false);

        // RegisterTemplateCmd.validateParameters.
        if zone_id.is_some() && !zone_ids.is_empty() {
            return api_param_error(
                command,
                "Both zoneid and zoneids cannot be specified at the same time",
            );
        }
        if zone_id.is_none() && zone_ids.is_empty() {
            return api_param_error(
                command,
                "Either zoneid or zoneids is required. Both cannot be null.",
            );
        }
        if zone_ids.len() > 1 && zone_ids.contains(&-1) {
            return api_param_error(
                command,
                "Parameter zoneids cannot combine all zones (-1) option with other zones",
            );
        }
        if direct && !hypervisor.eq_ignore_ascii_case("KVM") {
            return api_param_error(
                command,
                "Parameter directdownload is only allowed for KVM templates",
            );
        }
        let Some(os_type) = os_type else {
            return api_param_error(command, "Please provide a guest OS type");
        };
        if direct {
            // Direct download (the template goes to primary storage when a VM first needs it,
            // after a host checks the URL) is not simulated.
            return error_reply(
                Some(command),
                530,
                Some(4250),
                "cs-lab: directdownload templates are not simulated",
            );
        }
        // RegisterTemplateCmd.getZoneIds: -1 alone means every zone (null).
        let zones: Option<Vec<i64>> = match (zone_id, zone_ids.as_slice()) {
            (Some(-1), _) | (None, [-1]) => None,
            (Some(z), _) => Some(vec![z]),
            (None, list) => Some(list.to_vec()),
        };

        // TemplateAdapterBase.prepare(RegisterTemplateCmd).
        let Some(hv) = HYPERVISORS
            .iter()
            .find(|(k, _)| hypervisor.eq_ignore_ascii_case(k))
            .map(|(_, v)| *v)
        else {
            let names: String = HYPERVISORS.iter().map(|(_, v)| format!("{v}, ")).collect();
            return param_error(
                command,
                &format!(
                    "Hypervisor Type: {hypervisor} is invalid. Supported Hypervisor types are [{names}]"
                ),
            );
        };
        // 4.18: `isrouting` makes a ROUTING template (admins only; the lab's caller is the
        // root admin). The `templatetype` parameter of 4.19+ is not simulated.
        let kind = if flag(p, "isrouting").unwrap_or(false) {
            "ROUTING"
        } else {
            "USER"
        };
        // TemplateAdapterBase.prepare(…): defaults, then the checks in order.
        let display_text = p
            .get("displaytext")
            .filter(|d| !d.is_empty())
            .unwrap_or(name)
            .clone();
        let public = flag(p, "ispublic").unwrap_or(false);
        let featured = flag(p, "isfeatured").unwrap_or(false);
        if url.to_lowercase().contains("file://") {
            return param_error(command, "File:// type urls are currently unsupported");
        }
        let Some(format) = IMAGE_FORMATS
            .iter()
            .find(|f| f.eq_ignore_ascii_case(format))
            .copied()
        else {
            let list: String = IMAGE_FORMATS.iter().map(|v| format!("{v}, ")).collect();
            return api_param_error(
                command,
                &format!("Image format: {format} is incorrect. Supported formats are [{list}]"),
            );
        };
        if let Some(list) = &zones
            && list
                .iter()
                .any(|z| !self.zones.iter().any(|x| x.db_id as i64 == *z))
        {
            return api_param_error(command, "Please specify a valid zone.");
        }
        // `VMTemplateDaoImpl.listAllSystemVMTemplates`: no new template may share a name or a
        // display text with a SYSTEM one (the upgrade would otherwise take it for its own).
        if self.templates.iter().any(|t| {
            t.is_system()
                && (t.name.eq_ignore_ascii_case(name)
                    || t.display_text.eq_ignore_ascii_case(&display_text))
        }) {
            return api_param_error(command, "Cannot use reserved names for templates");
        }
        // HypervisorTemplateAdapter.prepare: UriUtils.validateUrl(format, url).
        if let Err(text) = validate_url(format, url) {
            if text.is_empty() {
                return error_reply(
                    Some(command),
                    530,
                    Some(9999),
                    "Internal error executing command, please contact your system administrator",
                );
            }
            return api_param_error(command, &text);
        }

        // HypervisorTemplateAdapter.create → persistTemplate (state Active, cross_zones for
        // all zones), then createTemplateWithinZones.
        let zone_list: Vec<usize> = match &zones {
            None => (0..self.zones.len()).collect(),
            Some(list) => list
                .iter()
                .filter_map(|z| self.zones.iter().position(|x| x.db_id as i64 == *z))
                .collect(),
        };
        if zone_list.is_empty() {
            return error_reply(
                Some(command),
                530,
                Some(4250),
                "No zones are present in the system, can't add template",
            );
        }
        let db_id = self.next_template_id;
        self.next_template_id += 1;
        let uuid = crate::util::random_uuid();
        let created = db_now();
        let mut t = Template {
            db_id,
            id: uuid,
            name: name.clone(),
            display_text: display_text.clone(),
            kind: kind.into(),
            hypervisor: hv.into(),
            format: format.into(),
            guest_os: os_type.max(0) as u64,
            account: ADMIN_ACCOUNT,
            // VMTemplateVO.generateUniqueName: `<id>-<account>-<name-based UUID>`; the lab's
            // UUID is random.
            unique_name: format!("{db_id}-{ADMIN_ACCOUNT}-{}", crate::util::random_uuid()),
            public,
            featured,
            extractable: flag(p, "isextractable").unwrap_or(false),
            password_enabled: flag(p, "passwordenabled").unwrap_or(false),
            sshkey_enabled: flag(p, "sshkeyenabled").unwrap_or(false),
            dynamically_scalable: flag(p, "isdynamicallyscalable").unwrap_or(false),
            requires_hvm: flag(p, "requireshvm").unwrap_or(true),
            bits,
            cross_zones: zones.is_none(),
            url: Some(url.clone()),
            checksum: p.get("checksum").cloned(),
            state: "Active".into(),
            size: None,
            created: created.clone(),
            version: template_version(name),
            stores: Vec::new(),
        };
        if let Some(pe) = &mut self.persist {
            pe.insert_template(&t);
        }
        // TemplateAdapterBase.isPrivateTemplate: a private template goes to one image store
        // of each zone (picked at random; the lab takes the first), others to every store.
        let private = !(t.public || t.featured || t.is_system());
        for &z in &zone_list {
            let stores: Vec<u64> = self
                .image_stores
                .iter()
                .filter(|s| s.zone == z)
                .map(|s| s.db_id)
                .collect();
            if stores.is_empty() {
                // getImageStoresThrowsExceptionIfNotFound; the vm_template row stays.
                // UNCONFIRMED: `profile.getTemplate()` is null when prepare built the profile.
                self.templates.push(t);
                return error_reply(
                    Some(command),
                    530,
                    Some(4250),
                    "Unable to find image store to download the template [null].",
                );
            }
            let running = self.ssvm_running(z);
            for store in stores
                .into_iter()
                .take(if private { 1 } else { usize::MAX })
            {
                // ObjectInDataStoreManagerImpl.create: state Allocated, install path
                // `template/tmpl/<account>/<id>`; TemplateServiceImpl.createTemplateAsync:
                // CreateOnlyRequested (→ Creating2), then the download is handed to a
                // secondary storage VM. With none in the zone `DownloadMonitorImpl` throws
                // "There is no secondary storage VM for downloading template to image store
                // …", createTemplateAsync catches it (OperationFailed → Allocated) and the
                // registration still succeeds.
                let r = StoreRef {
                    store,
                    created: created.clone(),
                    download_state: None,
                    download_pct: 0,
                    state: if running { "Creating2" } else { "Allocated" }.into(),
                    error: None,
                    install_path: Some(format!("template/tmpl/{}/{db_id}", t.account)),
                    size: None,
                    physical_size: 0,
                };
                if let Some(pe) = &mut self.persist {
                    pe.insert_store_ref(db_id, &r);
                }
                t.stores.push(r);
                self.schedule(
                    self.download_interval(),
                    Action::TemplateDownload {
                        template: db_id,
                        store,
                    },
                );
            }
        }
        self.templates.push(t);
        // @ActionEvent(EVENT_TEMPLATE_CREATE, "creating template") on a synchronous command:
        // one Completed event, with the details prepare set ("Id: <id> name: <name>").
        // UNCONFIRMED: the resource type and id the event row gets (the lab writes type
        // Template, no id).
        self.event_row(
            "TEMPLATE.CREATE",
            "Completed",
            "INFO",
            format!("Successfully completed creating template. Id: {db_id} name: {name}"),
            None,
            Some("Template"),
        );
        // ResponseGenerator.createTemplateResponses(view, template, zoneIds): one response per
        // zone of the registration.
        let i = self.templates.len() - 1;
        let entries: Vec<serde_json::Value> = self
            .template_entries(&self.templates[i])
            .into_iter()
            .filter(|(z, _)| z.is_some_and(|z| zone_list.contains(&z)))
            .map(|(z, r)| self.template_json(&self.templates[i], z, r))
            .collect();
        Reply::json(
            200,
            &json!({"registertemplateresponse": {"count": entries.len(), "template": entries}}),
        )
    }

    /// One step of a template's download to an image store by the zone's secondary storage
    /// VM (`DownloadListener` relaying the SSVM's `DownloadAnswer`s;
    /// `BaseImageStoreDriverImpl.createTemplateAsyncCallback` writes each to
    /// `template_store_ref`; `TemplateServiceImpl.createTemplateCallback` moves the state).
    pub(super) fn template_download(&mut self, template: u64, store: u64) {
        let Some(ti) = self.templates.iter().position(|t| t.db_id == template) else {
            return;
        };
        let Some(ri) = self.templates[ti]
            .stores
            .iter()
            .position(|r| r.store == store)
        else {
            return;
        };
        let Some(zone) = self
            .image_stores
            .iter()
            .find(|s| s.db_id == store)
            .map(|s| s.zone)
        else {
            return;
        };
        let state = self.templates[ti].stores[ri].download_state.clone();
        if matches!(
            state.as_deref(),
            Some("DOWNLOADED" | "DOWNLOAD_ERROR" | "ABANDONED" | "BYPASSED")
        ) {
            return;
        }
        // A copy `deleteTemplate` is destroying is not downloaded any more (a download in
        // progress refuses the delete, so this is one that had not started: no secondary
        // storage VM when it was registered).
        if self.templates[ti].stores[ri].state == "Destroying" {
            return;
        }
        let next = Action::TemplateDownload { template, store };
        if !self.ssvm_running(zone) {
            // No endpoint, no download. A template not on the store yet is downloaded when a
            // secondary storage VM connects and syncs the store
            // (`TemplateServiceImpl.handleTemplateSync`); one in progress resumes
            // (`DownloadProgressCommand` GET_OR_RESTART). UNCONFIRMED: the lab keeps the row as
            // it is meanwhile and resumes where it stopped.
            self.schedule(self.download_interval(), next);
            return;
        }
        let job = crate::util::random_uuid();
        if let Some(text) = self.fail_template_downloads.clone() {
            // The SSVM answers DOWNLOAD_ERROR; createTemplateCallback: OperationFailed
            // (Creating2 → Allocated in `ObjectInDataStoreManagerImpl`'s state machine). The
            // template stays Active; the store sync may request it again later (not
            // simulated). `BaseImageStoreDriverImpl` also sends an ALERT_TYPE_UPLOAD_FAILED
            // alert "Failed to register template: <uuid> with error: <error>" (not written).
            let r = &mut self.templates[ti].stores[ri];
            r.download_state = Some("DOWNLOAD_ERROR".into());
            r.error = Some(text);
            r.state = "Allocated".into();
            let r = r.clone();
            if let Some(p) = &mut self.persist {
                p.update_store_ref(template, &r, Some(&job));
            }
            return;
        }
        let t = &mut self.templates[ti];
        let account = t.account;
        let r = &mut t.stores[ri];
        let mut done = false;
        match (r.download_state.as_deref(), r.download_pct) {
            (Some("DOWNLOAD_IN_PROGRESS"), pct) if pct >= 100 => {
                // Installed: DOWNLOADED, with where and how big (the SSVM's answer), then
                // OperationSuccessed → Ready.
                r.download_state = Some("DOWNLOADED".into());
                r.download_pct = 100;
                r.state = "Ready".into();
                r.error = None;
                r.install_path = Some(format!(
                    "template/tmpl/{account}/{template}/{}.qcow2",
                    crate::util::random_uuid()
                ));
                r.size = Some(SYSTEM_TEMPLATE_SIZE);
                r.physical_size = SYSTEM_TEMPLATE_PHYSICAL_SIZE;
                done = true;
            }
            (Some("DOWNLOAD_IN_PROGRESS"), pct) => {
                r.download_pct = (pct + DOWNLOAD_STEP_PCT).min(100);
            }
            _ => {
                // The first answer; a row left Allocated (no SSVM when it was registered) is
                // requested again (CreateOnlyRequested → Creating2).
                r.download_state = Some("DOWNLOAD_IN_PROGRESS".into());
                r.download_pct = 0;
                r.state = "Creating2".into();
            }
        }
        let r = r.clone();
        if done {
            t.size = r.size;
        }
        let t = t.clone();
        let zone_db = self.zones[zone].db_id;
        if let Some(p) = &mut self.persist {
            p.update_store_ref(template, &r, Some(&job));
            if done {
                p.update_template_size(template, SYSTEM_TEMPLATE_SIZE);
                p.insert_template_usage_event(
                    &t,
                    zone_db,
                    SYSTEM_TEMPLATE_PHYSICAL_SIZE,
                    SYSTEM_TEMPLATE_SIZE,
                );
            }
        }
        if !done {
            self.schedule(self.download_interval(), next);
        }
    }
}

impl Cloud {
    /// `deleteTemplate` (`DeleteTemplateCmd`, async; 4.18–4.20): `id` (required), `zoneid`,
    /// `forced` and, from 4.20.0, `issystem`, read by `ParamProcessWorker` before the job is
    /// queued (`ApiServer.queueCommand`: an unknown uuid is refused at once; a removed
    /// template's uuid still translates, `findByUuidIncludingRemoved`). The job writes the
    /// `Scheduled` event ("Deleting template <uuid>", `getEventDescription`) and the `Started`
    /// one (`@ActionEvent(TEMPLATE.DELETE, "deleting template", async = true)` with the details
    /// "Template Id: <uuid>" `execute` sets), then runs `TemplateManagerImpl.deleteTemplate`
    /// (see [`Cloud::delete_template_job`]).
    pub(crate) fn delete_template(&mut self, command: &str, p: &Params) -> Reply {
        let Some(raw) = p.get("id") else {
            return param_error(
                command,
                "Unable to execute API command deletetemplate due to missing parameter id",
            );
        };
        let id = match translate_uuid(command, "id", raw, |u| self.template_by_uuid(u)) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let zone = match self.zone_param(command, p) {
            Ok(z) => z,
            Err(r) => return r,
        };
        // `isForced`: `forced` defaulted to true until apache/cloudstack#7731 made it false
        // (merged 2023-07; UNCONFIRMED that 4.18.1.0 is the first release with it: issue
        // apache/cloudstack#8157 shows 4.18.1 refusing a template in use without `forced`).
        let forced = flag(p, "forced")
            .unwrap_or_else(|| !self.answering_at_least(CsVersion::new3(4, 18, 1)));
        // `issystem` exists from 4.20.0; earlier releases ignore an unknown parameter.
        let is_system = self.answering_at_least(CsVersion::new3(4, 20, 0))
            && flag(p, "issystem").unwrap_or(false);

        // `_uuidMgr.getUuid(VirtualMachineTemplate.class, id)`, removed templates included.
        // UNCONFIRMED: what it gives for an id no template ever had (the lab says "null").
        let uuid = self
            .templates
            .iter()
            .find(|t| t.db_id as i64 == id)
            .map(|t| t.id.clone())
            .or_else(|| {
                self.removed_templates
                    .iter()
                    .find(|(_, v)| **v as i64 == id)
                    .map(|(k, _)| k.clone())
            });
        let name = self
            .templates
            .iter()
            .find(|t| t.db_id as i64 == id)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let job = self.new_job(
            command,
            "Template",
            uuid.as_deref().map(|u| (u, name.as_str())),
        );
        let shown = uuid.unwrap_or_else(|| "null".into());
        let resource = u64::try_from(id).ok().map(|id| (id, "Template"));
        self.event(
            "TEMPLATE.DELETE",
            "Scheduled",
            "INFO",
            format!("Deleting template {shown}"),
            resource,
        );
        let what = format!("deleting template. Template Id: {shown}");
        self.event("TEMPLATE.DELETE", "Started", "INFO", what.clone(), resource);
        if let Some(j) = self.jobs.get_mut(&job) {
            j.event = Some(JobEvent {
                kind: "TEMPLATE.DELETE".into(),
                what,
                resource,
            });
        }
        self.delete_template_job(&job, id, zone, forced, is_system);
        // `ApiServer.getBaseAsyncResponse` (not a create command): the job id only.
        // UNCONFIRMED: the lab's other async commands also answer the object's id.
        Self::job_reply(command, &job, None)
    }

    /// The job of `deleteTemplate`: `TemplateManagerImpl.deleteTemplate` (the template, not
    /// removed; unless `forced`, no VM not expunged may use it, in the zone when one is given;
    /// not an ISO), `TemplateAdapterBase.prepareDelete` (not being uploaded),
    /// `HypervisorTemplateAdapter.prepareDelete` (not `SYSTEM` unless `issystem` on 4.20; the
    /// zone has an image store) and `HypervisorTemplateAdapter.delete`: no copy may be
    /// downloading, then each copy on the image stores (of the zone, or all) is destroyed in
    /// turn by the zone's secondary storage VM, after its `TEMPLATE.DELETE` usage event.
    /// Refusals are `InvalidParameterValueException`s (431) or `CloudRuntimeException`s (530),
    /// as `ApiAsyncJobDispatcher` reports them.
    fn delete_template_job(
        &mut self,
        job: &str,
        id: i64,
        zone: Option<i64>,
        forced: bool,
        is_system: bool,
    ) {
        let Some(t) = self
            .templates
            .iter()
            .find(|t| t.db_id as i64 == id)
            .cloned()
        else {
            // `_tmpltDao.findById`: removed templates are not found.
            self.refuse(job, 431, format!("unable to find template with id {id}"));
            return;
        };
        let zone_index = zone.and_then(|z| self.zones.iter().position(|x| x.db_id as i64 == z));
        // `listNonExpungedByTemplate` / `listNonExpungedByZoneAndTemplate`.
        let users: Vec<String> = self
            .vms
            .iter()
            .filter(|v| {
                v.template_id == t.db_id
                    && v.state != "Expunging"
                    && zone.is_none_or(|_| Some(v.zone) == zone_index)
            })
            .map(vm_instance_string)
            .collect();
        if !forced && !users.is_empty() {
            // 4.18–4.20 (apache/cloudstack#1773); later releases say "Unable to delete
            // template [<template>] because there are [<n>] VM instances using it."
            self.refuse(
                job,
                431,
                format!(
                    "Unable to delete template with id: {} because VM instances: [{}] are using it.",
                    t.db_id,
                    users.join(",")
                ),
            );
            return;
        }
        if t.format == "ISO" {
            self.refuse(job, 431, "Please specify a valid template.".into());
            return;
        }
        if matches!(t.state.as_str(), "NotUploaded" | "UploadInProgress") {
            self.refuse(
                job,
                431,
                "The template is either getting uploaded or it may be initiated shortly, please \
                 wait for it to be completed"
                    .into(),
            );
            return;
        }
        if t.is_system() {
            if !self.answering_at_least(CsVersion::new3(4, 20, 0)) {
                self.refuse(job, 431, "The DomR template cannot be deleted.".into());
                return;
            }
            if !is_system {
                self.refuse(
                    job,
                    431,
                    "Could not delete template as it is a SYSTEM template and isSystem is set \
                     to false."
                        .into(),
                );
                return;
            }
        }
        // checkZoneImageStores.
        if zone.is_some() && !self.image_stores.iter().any(|s| Some(s.zone) == zone_index) {
            self.refuse(
                job,
                431,
                "Failed to find a secondary storage in the specified zone.".into(),
            );
            return;
        }
        // HypervisorTemplateAdapter.delete: `templateMgr.getImageStoreByTemplate(id, zone)`,
        // the image stores (of the zone, or every one) holding a copy not destroyed.
        let stores: Vec<u64> = self
            .image_stores
            .iter()
            .filter(|s| zone.is_none() || zone_index == Some(s.zone))
            .filter(|s| t.stores.iter().any(|r| r.store == s.db_id))
            .map(|s| s.db_id)
            .collect();
        if t.stores.iter().any(|r| {
            stores.contains(&r.store) && r.download_state.as_deref() == Some("DOWNLOAD_IN_PROGRESS")
        }) {
            // The download is not stopped: the delete is refused.
            self.refuse(
                job,
                530,
                "Please specify a template that is not currently being downloaded.".into(),
            );
            return;
        }
        if stores.is_empty() {
            // "Unable to find image store still having template: <name>, so just mark the
            // template removed".
            self.delete_template_done(job, t.db_id);
        } else {
            self.delete_template_copy(job, t.db_id, stores);
        }
    }

    /// The first of `stores`: its `TEMPLATE.DELETE` usage event (zone-wide), `DestroyRequested`
    /// (`TemplateServiceImpl.deleteTemplateAsync`), then the `DeleteCommand` to a secondary
    /// storage VM of the zone (`BaseImageStoreDriverImpl.deleteAsync`). With none running the
    /// copy stays `Destroying`, `delete` returns false, the action event still says
    /// "Successfully completed" (`ActionEventInterceptor.interceptComplete` runs on any
    /// return) and `DeleteTemplateCmd` fails the job with "Failed to delete template".
    fn delete_template_copy(&mut self, job: &str, template: u64, stores: Vec<u64>) {
        let Some(&store) = stores.first() else {
            self.delete_template_done(job, template);
            return;
        };
        // The template, its copy or the store gone meanwhile (a database restored under the
        // cloud): nothing is left to delete there.
        let (Some(ti), Some(zone)) = (
            self.templates.iter().position(|t| t.db_id == template),
            self.image_stores
                .iter()
                .find(|s| s.db_id == store)
                .map(|s| s.zone),
        ) else {
            self.template_deleted(job, template, stores);
            return;
        };
        let account = self.templates[ti].account;
        let zone_db = self.zones[zone].db_id;
        if let Some(p) = &mut self.persist {
            p.insert_template_delete_usage_event(account, zone_db, template);
        }
        let Some(r) = self.templates[ti]
            .stores
            .iter_mut()
            .find(|r| r.store == store)
        else {
            self.template_deleted(job, template, stores);
            return;
        };
        if !DESTROYABLE.contains(&r.state.as_str()) {
            // UNCONFIRMED: that nothing rolls the usage event back (`delete` is `@DB`, which
            // opens no transaction by itself).
            self.refuse(job, 530, "Failed to update state".into());
            return;
        }
        r.state = "Destroying".into();
        if let Some(p) = &mut self.persist {
            p.update_store_ref_state(template, store, "Destroying");
        }
        if !self.ssvm_running(zone) {
            // "No remote endpoint to send command, check if host or ssvm is down?"
            if let Some(j) = self.jobs.get_mut(job)
                && let Some(e) = j.event.take()
            {
                self.event(
                    &e.kind,
                    "Completed",
                    "INFO",
                    format!("Successfully completed {}", e.what),
                    e.resource,
                );
            }
            self.refuse(job, 530, "Failed to delete template".into());
            return;
        }
        self.schedule(
            self.timings.template_delete,
            Action::TemplateDeleted {
                job: job.to_string(),
                template,
                stores,
            },
        );
    }

    /// The secondary storage VM deleted the copy on the first of `stores`
    /// (`deleteTemplateCallback`: `OperationSuccessed`, `Destroying` → `Destroyed`, the row
    /// marked `destroyed`); the job goes on with the next store, or ends.
    pub(super) fn template_deleted(&mut self, job: &str, template: u64, mut stores: Vec<u64>) {
        if stores.is_empty() {
            return;
        }
        let store = stores.remove(0);
        if let Some(t) = self.templates.iter_mut().find(|t| t.db_id == template) {
            t.stores.retain(|r| r.store != store);
        }
        if let Some(p) = &mut self.persist {
            p.update_store_ref_state(template, store, "Destroyed");
        }
        if stores.is_empty() {
            self.delete_template_done(job, template);
        } else {
            self.delete_template_copy(job, template, stores);
        }
    }

    /// The end of `HypervisorTemplateAdapter.delete`: when no image store holds a copy any more
    /// (`getImageStoreByTemplate(id, null)`, every zone), the template is `Inactive` and
    /// removed; one deleted from a zone (`zoneid`) while other zones still have it stays, as
    /// `cleanupTemplate` keeps it while `template_zone_ref` rows of other zones remain (the lab
    /// has no `template_zone_ref`: a zone has it while it has a copy there). The job answers
    /// `SuccessResponse`.
    fn delete_template_done(&mut self, job: &str, template: u64) {
        if let Some(i) = self
            .templates
            .iter()
            .position(|t| t.db_id == template && t.stores.is_empty())
        {
            let t = self.templates.remove(i);
            self.removed_templates.insert(t.id, t.db_id);
            if let Some(p) = &mut self.persist {
                p.remove_template(template);
            }
        }
        self.finish(job, JobOutcome::Success(json!({"success": true})));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_as_uri_utils_does() {
        let ok =
            "https://download.cloudstack.org/systemvm/4.19/systemvmtemplate-4.19.0-kvm.qcow2.bz2";
        assert_eq!(validate_url("QCOW2", ok), Ok(()));
        assert_eq!(
            validate_url("QCOW2", "ftp://example.org/a.qcow2"),
            Err("Unsupported scheme for url: ftp://example.org/a.qcow2".into())
        );
        assert_eq!(
            validate_url("QCOW2", "nothing"),
            Err("Unsupported scheme for url: nothing".into())
        );
        assert_eq!(
            validate_url("QCOW2", "http://127.0.0.1/a.qcow2"),
            Err("Illegal host specified in url".into())
        );
        assert_eq!(
            validate_url("QCOW2", "http://images.invalid/a.qcow2"),
            Err("Unable to resolve images.invalid".into())
        );
        assert_eq!(
            validate_url("QCOW2", "http://example.org/a.vhd"),
            Err("Please specify a valid URL. URL:/a.vhd is an invalid for the format qcow2".into())
        );
        assert_eq!(
            validate_url("QCOW2", "http://example.org/a.txt"),
            Err("Please specify a valid qcow2".into())
        );
        assert_eq!(validate_url("qcow2", "http://example.org/a.img.gz"), Ok(()));
    }
}
