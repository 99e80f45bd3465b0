//! The health report (management servers, hypervisors, system VMs, routers), the `api.*`
//! checks, `wait_healthy`, and the cs-core [`HostStatus`] / [`HostMaintenance`] answers.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cs_core::{
    BoxError, Check, CheckError, CsVersion, Finding, HostMaintenance, HostStatus, HypervisorState,
    Progress, ProgressUpdate, Report, Severity, Unit,
};
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{HostResponse, ManagementServerResponse, RouterResponse, SystemVmResponse};

/// When the checks run: before the upgrade (problems are warnings) or after it (failures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Pre-flight: report what is off, block nothing.
    Pre,
    /// Post-flight: everything must be Up, Running and at the target version.
    #[default]
    Post,
}

/// What a healthy cloud looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthExpectations {
    /// Pre- or post-flight.
    pub phase: Phase,
    /// The version management servers, agents and system VMs must report, when known.
    pub version: Option<CsVersion>,
}

/// A snapshot of the cloud's health as the API reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The endpoint asked.
    pub endpoint: String,
    /// `listCapabilities.cloudstackversion`.
    pub cloudstack_version: Option<String>,
    /// Every management server.
    pub management_servers: Vec<ManagementServerResponse>,
    /// Every hypervisor (`type=Routing`).
    pub hosts: Vec<HostResponse>,
    /// Secondary storage and console proxy VMs.
    pub system_vms: Vec<SystemVmResponse>,
    /// Virtual routers that report `requiresupgrade`.
    pub routers_needing_upgrade: Vec<RouterResponse>,
    /// `integration.api.port` (the unauthenticated port; `0` = off), when readable.
    pub integration_api_port: Option<String>,
}

const MS_UP: &str = "api.ms.up";
const HOSTS_UP: &str = "api.hosts.up";
const SYSVMS: &str = "api.systemvms.running";
const AGENT_VERSION: &str = "agent.version.match";
const FIREWALL: &str = "api.firewall";

/// The ids of the checks a [`HealthReport`] answers.
pub const HEALTH_CHECK_IDS: [&str; 5] = [MS_UP, HOSTS_UP, SYSVMS, AGENT_VERSION, FIREWALL];

/// What a management server state means for an upgrade.
fn ms_state_note(state: &str) -> Option<&'static str> {
    match state {
        "Up" => None,
        // 4.20 says PreparingToShutDown; 4.21 renamed it PreparingForShutDown.
        "PreparingToShutDown" | "PreparingForShutDown" => {
            Some("is preparing to shut down (draining jobs)")
        }
        "ReadyToShutDown" => Some("is ready to shut down"),
        "ShuttingDown" => Some("is shutting down"),
        "PreparingForMaintenance" => Some("is preparing for maintenance"),
        "Maintenance" => Some("is in maintenance"),
        "Down" => Some("is Down"),
        _ => Some("is in an unknown state"),
    }
}

fn version_matches(reported: Option<&str>, expected: &CsVersion) -> bool {
    reported
        .and_then(|v| CsVersion::parse(v).ok())
        .is_some_and(|v| v == *expected)
}

impl HealthReport {
    /// Asks the endpoint: capabilities, management servers, hypervisors, system VMs, routers
    /// and the integration port setting, concurrently.
    ///
    /// # Errors
    /// The first error of those calls (the integration port setting is optional).
    pub async fn collect(client: &Client) -> Result<HealthReport> {
        let (caps, ms, hosts, sysvms, routers, port) = tokio::join!(
            client.list_capabilities(),
            client.list_management_servers(&[]),
            client.list_hosts(&[("type", "Routing")]),
            client.list_system_vms(&[]),
            client.list_routers(&[("listall", "true")]),
            client.list_configurations(&[("name", "integration.api.port")]),
        );
        Ok(HealthReport {
            endpoint: client.endpoint().to_string(),
            cloudstack_version: caps?.cloudstackversion,
            management_servers: ms?,
            hosts: hosts?,
            system_vms: sysvms?,
            routers_needing_upgrade: routers?
                .into_iter()
                .filter(|r| r.requiresupgrade == Some(true))
                .collect(),
            integration_api_port: port.ok().and_then(|c| {
                c.into_iter()
                    .find(|c| c.name == "integration.api.port")
                    .and_then(|c| c.value)
            }),
        })
    }

    /// The findings of the `api.*` checks (and the `listHosts` half of `agent.version.match`).
    pub fn findings(&self, expect: &HealthExpectations) -> Vec<Finding> {
        let bad = match expect.phase {
            Phase::Pre => Severity::Warn,
            Phase::Post => Severity::Fail,
        };
        let mut out = Vec::new();
        self.ms_findings(expect, bad, &mut out);
        self.host_findings(expect, bad, &mut out);
        self.sysvm_findings(expect, bad, &mut out);
        match self.integration_api_port.as_deref().map(str::trim) {
            None => out.push(Finding::new(
                FIREWALL,
                Severity::Skip,
                "integration.api.port",
                "setting not readable with these credentials",
            )),
            Some("" | "0") => out.push(Finding::pass(
                FIREWALL,
                "integration.api.port",
                "the unauthenticated integration port is off",
            )),
            Some(port) => out.push(
                Finding::new(
                    FIREWALL,
                    Severity::Warn,
                    "integration.api.port",
                    format!("the unauthenticated integration API port {port} is enabled"),
                )
                .with_remedy("set integration.api.port to 0 (or firewall it to trusted hosts) and restart the management servers"),
            ),
        }
        out
    }

    fn ms_findings(&self, expect: &HealthExpectations, bad: Severity, out: &mut Vec<Finding>) {
        if self.management_servers.is_empty() {
            out.push(Finding::new(
                MS_UP,
                bad,
                "management servers",
                "listManagementServers returned no server",
            ));
            return;
        }
        let mut ok = 0;
        for ms in &self.management_servers {
            let name = ms.name.clone().unwrap_or_else(|| ms.id.clone());
            let state = ms.state.as_deref().unwrap_or("unknown");
            if let Some(note) = ms_state_note(state) {
                out.push(
                    Finding::new(MS_UP, bad, &name, format!("{name} {note} (state {state})"))
                        .with_remedy("start cloudstack-management on it, or wait for it to finish shutting down and start it again"),
                );
                continue;
            }
            if let Some(want) = &expect.version
                && !version_matches(ms.version.as_deref(), want)
            {
                out.push(
                    Finding::new(
                        MS_UP,
                        bad,
                        &name,
                        format!(
                            "{name} runs {}, expected {want}",
                            ms.version.as_deref().unwrap_or("an unknown version")
                        ),
                    )
                    .with_remedy("upgrade cloudstack-management on it and restart it"),
                );
                continue;
            }
            ok += 1;
        }
        if ok == self.management_servers.len() {
            out.push(Finding::pass(
                MS_UP,
                "management servers",
                format!("{ok} management server(s) Up"),
            ));
        }
    }

    fn host_findings(&self, expect: &HealthExpectations, bad: Severity, out: &mut Vec<Finding>) {
        let mut ok = 0;
        let mut version_ok = 0;
        for h in &self.hosts {
            let name = h.name.clone().unwrap_or_else(|| h.id.clone());
            let state = h.state.as_deref().unwrap_or("unknown");
            let rs = h.resourcestate.as_deref().unwrap_or("unknown");
            if state == "Up" && rs == "Enabled" {
                ok += 1;
            } else {
                let remedy = if state != "Up" {
                    "check cloudstack-agent on the host (systemctl status cloudstack-agent, /var/log/cloudstack/agent/agent.log)"
                } else {
                    "enable the host, or cancel its maintenance, when it is ready"
                };
                out.push(
                    Finding::new(
                        HOSTS_UP,
                        bad,
                        &name,
                        format!(
                            "{name} ({}) is {state} / {rs}",
                            h.clustername.as_deref().unwrap_or("no cluster")
                        ),
                    )
                    .with_remedy(remedy),
                );
            }
            if let Some(want) = &expect.version {
                if version_matches(h.version.as_deref(), want) {
                    version_ok += 1;
                } else {
                    let sev = match expect.phase {
                        Phase::Pre => Severity::Info,
                        Phase::Post => Severity::Fail,
                    };
                    out.push(
                        Finding::new(
                            AGENT_VERSION,
                            sev,
                            &name,
                            format!(
                                "agent on {name} reports {}, management server {want}",
                                h.version.as_deref().unwrap_or("no version")
                            ),
                        )
                        .with_remedy("upgrade cloudstack-agent on the host and restart it"),
                    );
                }
            }
        }
        if ok == self.hosts.len() {
            out.push(Finding::pass(
                HOSTS_UP,
                "hosts",
                format!("{ok} hypervisor(s) Up and Enabled"),
            ));
        }
        if let Some(want) = &expect.version
            && version_ok == self.hosts.len()
        {
            out.push(Finding::pass(
                AGENT_VERSION,
                "hosts",
                format!("{version_ok} agent(s) report {want}"),
            ));
        }
    }

    fn sysvm_findings(&self, expect: &HealthExpectations, bad: Severity, out: &mut Vec<Finding>) {
        if self.system_vms.is_empty() {
            out.push(
                Finding::new(SYSVMS, bad, "system VMs", "no SSVM or CPVM listed").with_remedy(
                    "check that the zone is enabled and its system VM template is registered",
                ),
            );
        }
        let mut ok = 0;
        for vm in &self.system_vms {
            let name = vm.name.clone().unwrap_or_else(|| vm.id.clone());
            let state = vm.state.as_deref().unwrap_or("unknown");
            let agent = vm.agentstate.as_deref().unwrap_or("unknown");
            if state != "Running" || agent != "Up" {
                out.push(
                    Finding::new(
                        SYSVMS,
                        bad,
                        &name,
                        format!("{name} is {state}, its agent {agent}"),
                    )
                    .with_remedy("check the system VM template and secondary storage; destroy the VM to have it recreated"),
                );
                continue;
            }
            if let Some(want) = &expect.version
                && !version_matches(vm.version.as_deref(), want)
            {
                out.push(
                    Finding::new(
                        SYSVMS,
                        bad,
                        &name,
                        format!(
                            "{name} runs {}, expected {want}",
                            vm.version.as_deref().unwrap_or("an unknown version")
                        ),
                    )
                    .with_remedy(
                        "destroy the system VM so CloudStack recreates it from the new template",
                    ),
                );
                continue;
            }
            ok += 1;
        }
        if ok == self.system_vms.len() && ok > 0 {
            out.push(Finding::pass(
                SYSVMS,
                "system VMs",
                format!("{ok} system VM(s) Running"),
            ));
        }
        let sev = match expect.phase {
            Phase::Pre => Severity::Info,
            Phase::Post => Severity::Warn,
        };
        for r in &self.routers_needing_upgrade {
            let name = r.name.clone().unwrap_or_else(|| r.id.clone());
            out.push(
                Finding::new(
                    SYSVMS,
                    sev,
                    &name,
                    format!(
                        "router {name} runs template {} and needs an upgrade",
                        r.version.as_deref().unwrap_or("UNKNOWN")
                    ),
                )
                .with_remedy("restart its network with cleanup, or call upgradeRouterTemplate"),
            );
        }
    }

    /// All findings as a report.
    pub fn report(&self, expect: &HealthExpectations) -> Report {
        Report {
            findings: self.findings(expect),
            broken: Vec::new(),
        }
    }

    /// The findings that keep the cloud from being healthy: any non-passing finding of
    /// `api.ms.up`, `api.hosts.up` and `api.systemvms.running` (routers excepted), judged as
    /// post-flight.
    pub fn problems(&self, expect: &HealthExpectations) -> Vec<Finding> {
        let post = HealthExpectations {
            phase: Phase::Post,
            ..expect.clone()
        };
        self.findings(&post)
            .into_iter()
            .filter(|f| f.severity == Severity::Fail && f.id != AGENT_VERSION)
            .collect()
    }

    /// Hypervisors `Up`.
    pub fn hosts_up(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.state.as_deref() == Some("Up"))
            .count()
    }
}

/// One `api.*` check over a collected [`HealthReport`].
#[derive(Debug, Clone)]
pub struct HealthCheck {
    id: &'static str,
    expect: HealthExpectations,
}

/// The checks a [`HealthReport`] answers, for [`cs_core::run_checks`].
pub fn health_checks(expect: &HealthExpectations) -> Vec<HealthCheck> {
    HEALTH_CHECK_IDS
        .iter()
        .map(|id| HealthCheck {
            id,
            expect: expect.clone(),
        })
        .collect()
}

#[async_trait]
impl Check<HealthReport> for HealthCheck {
    fn id(&self) -> &str {
        self.id
    }

    async fn run(&self, cx: &HealthReport) -> std::result::Result<Vec<Finding>, CheckError> {
        Ok(cx
            .findings(&self.expect)
            .into_iter()
            .filter(|f| f.id == self.id)
            .collect())
    }
}

/// Polls the health report until nothing fails ([`HealthReport::problems`] is empty) or
/// `deadline` passes, reporting hosts Up of all hosts to `progress`. Errors from the endpoint
/// while waiting (a management server restarting) count as "not yet", except a refused
/// signature or a bad configuration, which end the wait at once.
///
/// # Errors
/// [`Error::NotHealthy`] with the last report and what was still wrong; [`Error::Unauthorized`]
/// and [`Error::Config`] at once.
pub async fn wait_healthy(
    client: &Client,
    expect: &HealthExpectations,
    deadline: Duration,
    progress: &dyn Progress,
) -> Result<HealthReport> {
    const TASK: &str = "wait for a healthy cloud";
    let start = Instant::now();
    let mut interval = Duration::from_millis(500);
    let mut last: Option<HealthReport> = None;
    loop {
        let reason = match HealthReport::collect(client).await {
            Ok(report) => {
                let problems = report.problems(expect);
                let total = report.hosts.len() as u64;
                let up = report.hosts_up() as u64;
                if problems.is_empty() {
                    progress.update(
                        ProgressUpdate::new(TASK, up, Some(total), Unit::Hosts)
                            .message("healthy")
                            .finished(),
                    );
                    return Ok(report);
                }
                let reason = summarize(&problems);
                progress.update(
                    ProgressUpdate::new(TASK, up, Some(total), Unit::Hosts).message(&reason),
                );
                last = Some(report);
                reason
            }
            Err(e @ (Error::Unauthorized { .. } | Error::Config { .. })) => return Err(e),
            Err(e) => {
                let reason = cs_core::error_chain(&e);
                progress.update(ProgressUpdate::new(TASK, 0, None, Unit::Hosts).message(&reason));
                reason
            }
        };
        let waited = start.elapsed();
        if waited >= deadline {
            return Err(Error::NotHealthy {
                waited,
                reason,
                report: last.map(Box::new),
            });
        }
        tokio::time::sleep(interval.min(deadline - waited)).await;
        interval = (interval * 3 / 2).min(Duration::from_secs(15));
    }
}

fn summarize(problems: &[Finding]) -> String {
    let mut parts: Vec<String> = problems.iter().take(3).map(|f| f.message.clone()).collect();
    if problems.len() > 3 {
        parts.push(format!("and {} more", problems.len() - 3));
    }
    parts.join("; ")
}

impl Client {
    /// The hypervisor whose id, name or IP address is `key`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn find_host(&self, key: &str) -> Result<Option<HostResponse>> {
        let hosts = self.list_hosts(&[("type", "Routing")]).await?;
        Ok(hosts.into_iter().find(|h| {
            h.id == key || h.name.as_deref() == Some(key) || h.ipaddress.as_deref() == Some(key)
        }))
    }

    async fn wait_resource_state(&self, id: &str, want: &str, fail_on: &[&str]) -> Result<()> {
        let deadline = self.config().job.deadline;
        let start = Instant::now();
        let mut interval = self.config().job.initial_interval;
        loop {
            let host = self.find_host(id).await?.ok_or_else(|| Error::NoSuchHost {
                key: id.to_string(),
            })?;
            let rs = host.resourcestate.unwrap_or_default();
            if rs == want {
                return Ok(());
            }
            if fail_on.contains(&rs.as_str()) {
                return Err(Error::JobFailed {
                    jobid: String::new(),
                    command: "prepareHostForMaintenance".into(),
                    errorcode: 530,
                    errortext: format!("host {id} went to {rs}"),
                });
            }
            let waited = start.elapsed();
            if waited >= deadline {
                return Err(Error::JobTimeout {
                    jobid: String::new(),
                    command: format!("wait for host {id} to be {want}"),
                    waited,
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(self.config().job.max_interval);
        }
    }
}

fn to_state(h: HostResponse) -> HypervisorState {
    HypervisorState {
        version: h.version.as_deref().and_then(|v| CsVersion::parse(v).ok()),
        name: h.name.unwrap_or_else(|| h.id.clone()),
        id: h.id,
        state: h.state.unwrap_or_else(|| "Unknown".into()),
        resource_state: h.resourcestate,
        address: h.ipaddress,
    }
}

#[async_trait]
impl HostStatus for Client {
    async fn hypervisor(
        &self,
        key: &str,
    ) -> std::result::Result<Option<HypervisorState>, BoxError> {
        Ok(self.find_host(key).await?.map(to_state))
    }

    /// One `listHosts type=Routing`, every page of it (`pagesize` from the config): what a
    /// shared poller answers all waiting hosts from.
    async fn hypervisors(&self) -> std::result::Result<Option<Vec<HypervisorState>>, BoxError> {
        let hosts = self.list_hosts(&[("type", "Routing")]).await?;
        Ok(Some(hosts.into_iter().map(to_state).collect()))
    }
}

#[async_trait]
impl HostMaintenance for Client {
    async fn enter(&self, key: &str) -> std::result::Result<(), BoxError> {
        let host = self
            .find_host(key)
            .await?
            .ok_or_else(|| Error::NoSuchHost {
                key: key.to_string(),
            })?;
        self.prepare_host_for_maintenance(&host.id).await?;
        // The job ends with the host preparing; CloudStack's monitor moves it to Maintenance
        // once its VMs have left. ErrorInPrepareForMaintenance is not the end: attemptMaintain
        // sets it while migrations are pending on a host whose VMs started there, and moves
        // the host back once they are done (ResourceManagerImpl.attemptMaintain, steps 4-5).
        self.wait_resource_state(&host.id, "Maintenance", &["ErrorInMaintenance"])
            .await?;
        Ok(())
    }

    async fn leave(&self, key: &str) -> std::result::Result<(), BoxError> {
        let host = self
            .find_host(key)
            .await?
            .ok_or_else(|| Error::NoSuchHost {
                key: key.to_string(),
            })?;
        self.cancel_host_maintenance(&host.id).await?;
        self.wait_resource_state(&host.id, "Enabled", &[]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, state: &str, rs: &str, version: &str) -> HostResponse {
        serde_json::from_value(serde_json::json!({
            "id": format!("id-{name}"), "name": name, "state": state,
            "resourcestate": rs, "version": version, "clustername": "c1", "type": "Routing"
        }))
        .unwrap()
    }

    fn report() -> HealthReport {
        HealthReport {
            endpoint: "http://127.0.0.1/client/api".into(),
            cloudstack_version: Some("4.20.0.0".into()),
            management_servers: vec![
                serde_json::from_value(serde_json::json!({"id":"m1","name":"ms1","state":"Up","version":"4.20.0.0"})).unwrap(),
                serde_json::from_value(serde_json::json!({"id":"m2","name":"ms2","state":"PreparingForShutDown","version":"4.20.0.0"})).unwrap(),
            ],
            hosts: vec![
                host("kvm1", "Up", "Enabled", "4.20.0.0"),
                host("kvm2", "Disconnected", "Enabled", "4.19.1.0"),
            ],
            system_vms: vec![serde_json::from_value(serde_json::json!({"id":"s","name":"s-1-VM","state":"Running","agentstate":"Up","version":"4.20.0"})).unwrap()],
            routers_needing_upgrade: vec![serde_json::from_value(serde_json::json!({"id":"r","name":"r-7-VM","version":"4.19.0","requiresupgrade":true})).unwrap()],
            integration_api_port: Some("8096".into()),
        }
    }

    #[track_caller]
    fn check(phase: Phase, expected: &[(&str, Severity, &str)]) {
        let expect = HealthExpectations {
            phase,
            version: Some("4.20.0.0".parse().unwrap()),
        };
        let got: Vec<(String, Severity, String)> = report()
            .findings(&expect)
            .into_iter()
            .map(|f| (f.id, f.severity, f.subject))
            .collect();
        let want: Vec<(String, Severity, String)> = expected
            .iter()
            .map(|(i, s, n)| (i.to_string(), *s, n.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn post_flight_fails_on_shutdown_servers_and_down_hosts() {
        check(
            Phase::Post,
            &[
                (MS_UP, Severity::Fail, "ms2"),
                (HOSTS_UP, Severity::Fail, "kvm2"),
                (AGENT_VERSION, Severity::Fail, "kvm2"),
                (SYSVMS, Severity::Pass, "system VMs"),
                (SYSVMS, Severity::Warn, "r-7-VM"),
                (FIREWALL, Severity::Warn, "integration.api.port"),
            ],
        );
    }

    #[test]
    fn pre_flight_only_warns() {
        check(
            Phase::Pre,
            &[
                (MS_UP, Severity::Warn, "ms2"),
                (HOSTS_UP, Severity::Warn, "kvm2"),
                (AGENT_VERSION, Severity::Info, "kvm2"),
                (SYSVMS, Severity::Pass, "system VMs"),
                (SYSVMS, Severity::Info, "r-7-VM"),
                (FIREWALL, Severity::Warn, "integration.api.port"),
            ],
        );
    }

    #[test]
    fn both_shutdown_state_spellings_are_understood() {
        for s in ["PreparingToShutDown", "PreparingForShutDown"] {
            assert_eq!(
                ms_state_note(s),
                Some("is preparing to shut down (draining jobs)")
            );
        }
    }

    #[tokio::test]
    async fn checks_split_findings_by_id() {
        let expect = HealthExpectations::default();
        let checks = health_checks(&expect);
        let refs: Vec<&dyn Check<HealthReport>> = checks
            .iter()
            .map(|c| c as &dyn Check<HealthReport>)
            .collect();
        let r = cs_core::run_checks(&refs, &report(), &[FIREWALL]).await;
        assert_eq!(r.exit_code(), 2);
        assert!(
            r.findings
                .iter()
                .any(|f| f.id == FIREWALL && f.severity == Severity::Skip)
        );
    }
}
