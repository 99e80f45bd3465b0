//! What changes the lab cloud, as CloudStack's management server changes it: async jobs that
//! take time and can fail, host maintenance that live-migrates every VM away (or ends in
//! `ErrorInMaintenance`), VM lifecycles, system VMs and routers that keep the template they
//! booted until CloudStack restarts them, events and usage events for each of these, and the
//! power-state sync that notices guests gone from their hypervisor.
//!
//! Each behaviour names the CloudStack code it follows. Times are [`Timings`], scaled down from
//! CloudStack's defaults; nothing here happens in zero time, so a caller that does not wait for
//! a job sees the states in between, as on a real cloud.

use std::time::{Duration, Instant};

use cs_core::CsVersion;
use serde_json::{Value, json};

use super::state::{
    ADMIN_ACCOUNT, Cloud, Event, Job, JobEvent, JobOutcome, Params, Reply, RouterInfo,
    USER_TEMPLATE, Vm, VmKind, api_date, db_now, error_reply, offering, param_error, response_key,
    router_release,
};

/// Something the management server does later.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Ends a job whose work is already done (or that fails).
    Finish { job: String, outcome: JobOutcome },
    /// Begins a CloudStack start (placement, Stopped → Starting).
    BeginStart {
        vm: String,
        job: Option<String>,
        then: Option<Box<Action>>,
    },
    /// A start completes: Starting → Running; then `then`, or the job ends.
    Started {
        vm: String,
        job: Option<String>,
        then: Option<Box<Action>>,
    },
    /// A stop completes: Stopping → Stopped; then `then`, or the job ends.
    Stopped {
        vm: String,
        job: Option<String>,
        then: Option<Box<Action>>,
    },
    /// A stopped VM is destroyed (and expunged with `expunge`).
    Destroy {
        vm: String,
        job: Option<String>,
        expunge: bool,
    },
    /// An HA worker's migration attempt (`HighAvailabilityManagerImpl.migrate`).
    TryMigration { vm: String, host: usize },
    /// A live migration completes (`VirtualMachineManagerImpl.migrate`).
    Migrated {
        vm: String,
        from: usize,
        job: Option<String>,
    },
    /// `AgentManagerImpl.MonitorTask`: `checkAndMaintain` of hosts preparing for maintenance.
    Monitor,
    /// An expunge completes; a destroyed system VM is recreated by the next capacity scan.
    Expunged { vm: String, job: Option<String> },
    /// The console proxy / secondary storage capacity scan creates a system VM.
    Recreate { kind: VmKind, zone: usize },
    /// A hypervisor reboot completes.
    Rebooted { vm: String, job: String },
    /// A live patch completes.
    Patched { vm: String, job: String },
    /// `restartNetwork` with cleanup: the next old router of `network` (backup before
    /// primary) makes way for a new one from the current template; the job ends after the last.
    ReplaceRouters {
        network: usize,
        job: String,
        remaining: Vec<String>,
    },
}

/// Pending HA migration work for a VM leaving a host for maintenance (`op_ha_work`).
#[derive(Debug, Clone)]
pub(crate) struct HaWork {
    pub(crate) vm: String,
    pub(crate) host: usize,
    pub(crate) attempts: u32,
    pub(crate) done: bool,
}

/// Resource states from which `prepareHostForMaintenance` refuses
/// (`ResourceState.canAttemptMaintenance`).
const NOT_AGAIN: &[&str] = &[
    "Maintenance",
    "PrepareForMaintenance",
    "ErrorInPrepareForMaintenance",
];
/// `ResourceState.isMaintenanceState`.
const MAINTENANCE_STATES: &[&str] = &[
    "Maintenance",
    "ErrorInMaintenance",
    "PrepareForMaintenance",
    "ErrorInPrepareForMaintenance",
];

fn event_type(kind: VmKind, op: &str) -> String {
    let prefix = match kind {
        VmKind::User => "VM",
        VmKind::SecondaryStorageVm => "SSVM",
        VmKind::ConsoleProxy => "PROXY",
        VmKind::DomainRouter => "ROUTER",
    };
    format!("{prefix}.{op}")
}

fn job_class(command: &str) -> String {
    let pkg = match command {
        "prepareHostForMaintenance" | "cancelHostMaintenance" => "admin.host",
        "startSystemVm" | "stopSystemVm" | "rebootSystemVm" | "destroySystemVm"
        | "patchSystemVm" => "admin.systemvm",
        "rebootRouter" | "startRouter" | "stopRouter" => "admin.router",
        "restartNetwork" => "user.network",
        "migrateVirtualMachine" => "admin.vm",
        _ => "user.vm",
    };
    let mut class = command.to_string();
    if let Some(first) = class.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    format!("org.apache.cloudstack.api.command.{pkg}.{class}Cmd")
}

impl Cloud {
    /// Marks a change: a reload from the database that started earlier must not undo it.
    pub(crate) fn touch(&mut self) {
        self.generation += 1;
    }

    pub(crate) fn schedule(&mut self, after: Duration, action: Action) {
        self.timeline_seq += 1;
        self.timeline
            .insert((Instant::now() + after, self.timeline_seq), action);
    }

    /// Runs every action that is due; nothing happens while no management server runs.
    pub(crate) fn advance(&mut self, now: Instant) {
        if !self.serving() {
            return;
        }
        while let Some((&key, _)) = self.timeline.iter().next() {
            if key.0 > now {
                break;
            }
            if let Some(action) = self.timeline.remove(&key) {
                self.touch();
                self.run(action);
            }
        }
        if let Some(p) = &mut self.persist {
            p.flush();
        }
    }

    fn run(&mut self, action: Action) {
        match action {
            Action::Finish { job, outcome } => self.finish(&job, outcome),
            Action::BeginStart { vm, job, then } => {
                if let Some(i) = self.vm_index(&vm)
                    && let Err((code, text)) = self.begin_start(i, job.clone(), then)
                {
                    self.fail_job(&job, code, &text);
                }
            }
            Action::Started { vm, job, then } => self.started(&vm, job, then),
            Action::Stopped { vm, job, then } => self.stopped(&vm, job, then),
            Action::Destroy { vm, job, expunge } => self.destroy_stopped(&vm, job, expunge),
            Action::TryMigration { vm, host } => self.try_migration(&vm, host),
            Action::Migrated { vm, from, job } => self.migrated(&vm, from, job),
            Action::Monitor => self.monitor(),
            Action::Expunged { vm, job } => self.expunged(&vm, job),
            Action::Recreate { kind, zone } => self.recreate(kind, zone),
            Action::Rebooted { vm, job } => self.rebooted(&vm, &job),
            Action::Patched { vm, job } => self.patched(&vm, &job),
            Action::ReplaceRouters {
                network,
                job,
                remaining,
            } => self.replace_routers(network, job, remaining),
        }
    }

    // ----------------------------------------------------------------------------------- jobs

    /// A new async job for `command` on `instance` (`AsyncJobManagerImpl.submitAsyncJob`); an
    /// injected failure (`fail_next_job`, or one for the VM) is kept to end it with.
    fn new_job(
        &mut self,
        command: &str,
        instance_type: &'static str,
        instance: Option<(&str, &str)>,
    ) -> String {
        let id = self.new_id();
        let injected = self
            .fail_next_job
            .take()
            .or_else(|| instance.and_then(|(_, name)| self.fail_vm_jobs.get(name).cloned()));
        self.jobs.insert(
            id.clone(),
            Job {
                cmd: job_class(command),
                instance_type,
                instance_id: instance.map(|(id, _)| id.to_string()),
                polls_left: self.job_polls,
                outcome: None,
                created: db_now(),
                injected,
                event: None,
            },
        );
        id
    }

    /// Ends `job`, with its `Completed` (or `Error while`) event when it has one
    /// (`ActionEventInterceptor.interceptComplete` / `interceptException`).
    fn finish(&mut self, job: &str, outcome: JobOutcome) {
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        if j.outcome.is_some() {
            return;
        }
        // A failure injected for the job replaces a success it would have had.
        let outcome = match (outcome, j.injected.take()) {
            (JobOutcome::Success(_), Some(text)) => JobOutcome::Failure { code: 530, text },
            (outcome, _) => outcome,
        };
        let ok = matches!(outcome, JobOutcome::Success(_));
        j.outcome = Some(outcome);
        if let Some(JobEvent {
            kind,
            what,
            resource,
        }) = j.event.clone()
        {
            let (text, level) = if ok {
                (format!("Successfully completed {what}"), "INFO")
            } else {
                (format!("Error while {what}"), "ERROR")
            };
            self.event(&kind, "Completed", level, text, resource);
        }
    }

    fn fail_job(&mut self, job: &Option<String>, code: u16, text: &str) {
        if let Some(j) = job {
            self.finish(
                j,
                JobOutcome::Failure {
                    code,
                    text: text.to_string(),
                },
            );
        }
    }

    /// The injected failure of `job`, taken.
    fn injected(&mut self, job: &str) -> Option<String> {
        self.jobs.get_mut(job).and_then(|j| j.injected.take())
    }

    /// A reply carrying a new job's id (and the object's, as CloudStack answers).
    fn job_reply(command: &str, job: &str, id: Option<&str>) -> Reply {
        let mut body = json!({ "jobid": job });
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        Reply::json(200, &json!({ response_key(command): body }))
    }

    pub(crate) fn query_job(&mut self, command: &str, p: &Params) -> Reply {
        let Some(jobid) = p.get("jobid").cloned() else {
            return param_error(
                command,
                "Unable to execute API command queryasyncjobresult due to missing parameter jobid",
            );
        };
        let Some(job) = self.jobs.get_mut(&jobid) else {
            return param_error(command, &format!("Unable to find job by id {jobid}"));
        };
        let pending = job.polls_left > 0 || job.outcome.is_none();
        if job.polls_left > 0 {
            job.polls_left -= 1;
        }
        let base = json!({
            "jobid": jobid, "cmd": job.cmd, "jobinstancetype": job.instance_type,
            "jobinstanceid": job.instance_id, "created": api_date(&job.created),
            "userid": "8b6f0c3e-0000-4000-8000-000000000072",
            "accountid": "8b6f0c3e-0000-4000-8000-0000000000a2"
        });
        let mut v = base;
        match (pending, &job.outcome) {
            (true, _) | (_, None) => {
                v["jobstatus"] = json!(0);
                v["jobprocstatus"] = json!(0);
                v["jobresultcode"] = json!(0);
            }
            (false, Some(JobOutcome::Success(result))) => {
                v["jobstatus"] = json!(1);
                v["jobprocstatus"] = json!(0);
                v["jobresultcode"] = json!(0);
                v["jobresulttype"] = json!("object");
                v["jobresult"] = result.clone();
                v["completed"] = json!(api_date(&db_now()));
            }
            (false, Some(JobOutcome::Failure { code, text })) => {
                v["jobstatus"] = json!(2);
                v["jobprocstatus"] = json!(0);
                v["jobresultcode"] = json!(code);
                v["jobresulttype"] = json!("object");
                v["jobresult"] = json!({"errorcode": code, "errortext": text});
            }
        }
        Reply::json(200, &json!({ "queryasyncjobresultresponse": v }))
    }

    // --------------------------------------------------------------------------- events, usage

    /// An action event (`ActionEventUtils`): `Scheduled` when the job is queued, `Started`,
    /// then `Completed` ("Successfully completed …") or an `ERROR` one ("Error while …").
    pub(crate) fn event(
        &mut self,
        kind: &str,
        state: &'static str,
        level: &'static str,
        description: String,
        resource: Option<(u64, &'static str)>,
    ) {
        let e = Event {
            id: self.new_event_id(),
            kind: kind.to_string(),
            state,
            level,
            description,
            resource_id: resource.map(|r| r.0),
            resource_type: resource.map(|r| r.1),
            created: db_now(),
        };
        if let Some(p) = &mut self.persist {
            p.insert_event(&e);
        }
        self.events.push(e);
    }

    fn vm_event(&mut self, vm: usize, op: &str, state: &'static str, ok: bool, description: &str) {
        let v = &self.vms[vm];
        let kind = event_type(v.kind, op);
        let what = format!("{description}. Vm Id: {}", v.id);
        let resource = Some((
            v.db_id,
            if v.kind == VmKind::User {
                "VirtualMachine"
            } else {
                "DomainRouter"
            },
        ));
        let (text, level) = match (state, ok) {
            ("Completed", true) => (format!("Successfully completed {what}"), "INFO"),
            ("Completed", false) => (format!("Error while {what}"), "ERROR"),
            ("Created", _) => (format!("Successfully created entity for {what}"), "INFO"),
            _ => (what, "INFO"),
        };
        self.event(&kind, state, level, text, resource);
    }

    /// A usage event (`UserVmStateListener.postStateTransitionEvent`): user VMs only.
    fn usage(&mut self, vm: usize, kind: &str) {
        let v = &self.vms[vm];
        if v.kind != VmKind::User {
            return;
        }
        let (db_id, name, offering, zone) = (
            v.db_id,
            v.name.clone(),
            v.offering.db_id,
            self.zones[v.zone].db_id,
        );
        if let Some(p) = &mut self.persist {
            p.insert_usage_event(kind, db_id, &name, offering, zone);
        }
    }

    /// Writes VM `vm` as it is now.
    fn save_vm(&mut self, vm: usize) {
        let snapshot = self.vms[vm].clone();
        let host_db = |h: Option<usize>| h.map(|i| self.hosts[i].db_id);
        let (host, last) = (host_db(snapshot.host), host_db(snapshot.last_host));
        if let Some(p) = &mut self.persist {
            p.update_vm(&snapshot, host, last);
        }
    }

    fn save_host(&mut self, h: usize) {
        let host = self.hosts[h].clone();
        if let Some(p) = &mut self.persist {
            p.update_host(&host);
        }
    }

    fn set_state(&mut self, vm: usize, state: &str) {
        self.vms[vm].state = state.to_string();
        self.save_vm(vm);
    }

    fn domain_start(&self, vm: usize) {
        let v = &self.vms[vm];
        if let (Some(hv), Some(h)) = (&self.hypervisors, v.host) {
            hv.start(&self.hosts[h].name, &v.instance_name);
        }
    }

    fn domain_stop(&self, vm: usize, host: usize) {
        if let Some(hv) = &self.hypervisors {
            hv.stop(&self.hosts[host].name, &self.vms[vm].instance_name);
        }
    }

    // ---------------------------------------------------------------------------- placement

    /// A host for `vm` to start on (`DeploymentPlanningManagerImpl`): its last host first when
    /// it is Up, Enabled and has room, then the zone's Up and Enabled hosts in order. CloudStack's
    /// default `vm.allocation.algorithm` is `random`; the lab takes them in order (`firstfit`)
    /// so runs repeat. Tests must not depend on which of several fitting hosts is chosen.
    fn place(&self, vm: usize) -> Option<usize> {
        let v = &self.vms[vm];
        let fits = |h: usize| {
            let host = &self.hosts[h];
            host.is_up_and_enabled()
                && self.clusters[host.cluster].zone == v.zone
                && self.has_capacity(h, &v.offering)
        };
        if let Some(last) = v.last_host
            && fits(last)
        {
            return Some(last);
        }
        (0..self.hosts.len()).find(|&h| fits(h))
    }

    /// A host in the same cluster for a VM leaving `from` (`getMigrationDeployment`: same
    /// cluster, source excluded, Up and Enabled, with capacity).
    fn migration_target(&self, vm: usize, from: usize) -> Option<usize> {
        let cluster = self.hosts[from].cluster;
        let offering = self.vms[vm].offering;
        (0..self.hosts.len()).find(|&h| {
            h != from
                && self.hosts[h].cluster == cluster
                && self.hosts[h].is_up_and_enabled()
                && self.has_capacity(h, &offering)
        })
    }

    // ------------------------------------------------------------------------- VM lifecycle

    /// Begins a CloudStack start of `vm` (Stopped → Starting on a planned host). The root disk
    /// of system VMs and routers is recreatable, so they boot their `vm_template_id`
    /// (`VolumeOrchestrator` RECREATE / `switchVolume`). Errs with the capacity text.
    fn begin_start(
        &mut self,
        vm: usize,
        job: Option<String>,
        then: Option<Box<Action>>,
    ) -> Result<(), (u16, String)> {
        let Some(host) = self.place(vm) else {
            let v = &self.vms[vm];
            // `InsufficientServerCapacityException` as StartVMCmd maps it
            // (ApiErrorCode.INSUFFICIENT_CAPACITY_ERROR); `VMInstanceVO.toString()`.
            return Err((
                533,
                format!(
                    "Unable to create a deployment for VM[{}|{}]",
                    v.kind.db(),
                    v.instance_name
                ),
            ));
        };
        self.vms[vm].host = Some(host);
        self.set_state(vm, "Starting");
        let id = self.vms[vm].id.clone();
        self.schedule(self.timings.start, Action::Started { vm: id, job, then });
        Ok(())
    }

    fn started(&mut self, vm_id: &str, job: Option<String>, then: Option<Box<Action>>) {
        let Some(vm) = self.vm_index(vm_id) else {
            return;
        };
        if let Some(j) = &job
            && let Some(text) = self.injected(j)
        {
            // The start failed on the hypervisor: back to Stopped.
            let host = self.vms[vm].host.take();
            self.vms[vm].last_host = host.or(self.vms[vm].last_host);
            self.set_state(vm, "Stopped");
            self.fail_job(&job, 530, &text);
            return;
        }
        let host = self.vms[vm].host;
        let template = self.vms[vm].template_id;
        let version = self.template(template).and_then(|t| t.version);
        {
            let v = &mut self.vms[vm];
            v.last_host = host; // `stateTransitTo`: Starting → Running sets last_host_id.
            v.booted_template = Some(template);
            if v.kind.is_system() {
                // The system VM's agent code comes from the systemvm.iso of the host's
                // cloudstack-common (apache/cloudstack#8406).
                v.agent_version = host.map(|h| self.hosts[h].version.clone());
            }
            if let (Some(r), Some(ver)) = (v.router.as_mut(), version) {
                r.template_version = Some(router_release(&ver));
            }
        }
        self.set_state(vm, "Running");
        self.domain_start(vm);
        self.usage(vm, "VM.START");
        match then {
            Some(next) => self.run(*next),
            None => {
                if let Some(j) = job {
                    let result = self.vm_result(vm);
                    self.finish(&j, JobOutcome::Success(result));
                }
            }
        }
    }

    /// Begins a stop (Running → Stopping).
    fn begin_stop(&mut self, vm: usize, job: Option<String>, then: Option<Box<Action>>) {
        self.set_state(vm, "Stopping");
        let id = self.vms[vm].id.clone();
        self.schedule(self.timings.stop, Action::Stopped { vm: id, job, then });
    }

    fn stopped(&mut self, vm_id: &str, job: Option<String>, then: Option<Box<Action>>) {
        let Some(vm) = self.vm_index(vm_id) else {
            return;
        };
        if let Some(j) = &job
            && let Some(text) = self.injected(j)
        {
            self.set_state(vm, "Running");
            self.fail_job(&job, 530, &text);
            return;
        }
        let host = self.vms[vm].host.take();
        if let Some(h) = host {
            // Stopping → Stopped sets last_host_id to the host it ran on.
            self.vms[vm].last_host = Some(h);
            self.domain_stop(vm, h);
        }
        self.set_state(vm, "Stopped");
        self.usage(vm, "VM.STOP");
        match then {
            Some(next) => self.run(*next),
            None => {
                if let Some(j) = job {
                    let result = self.vm_result(vm);
                    self.finish(&j, JobOutcome::Success(result));
                }
            }
        }
    }

    fn expunged(&mut self, vm_id: &str, job: Option<String>) {
        let Some(vm) = self.vm_index(vm_id) else {
            return;
        };
        if let Some(h) = self.vms[vm].host.take() {
            self.domain_stop(vm, h);
        }
        let v = self.vms.remove(vm);
        if let Some(p) = &mut self.persist {
            p.remove_vm(v.db_id);
        }
        if v.kind.is_system() {
            // `ConsoleProxyManagerImpl` / `SecondaryStorageManagerImpl` capacity scans create a
            // new one (a new id and name) from the current system VM template.
            self.schedule(
                self.timings.capacity_scan,
                Action::Recreate {
                    kind: v.kind,
                    zone: v.zone,
                },
            );
        }
        if let Some(j) = job {
            self.finish(&j, JobOutcome::Success(json!({"success": true})));
        }
    }

    fn recreate(&mut self, kind: VmKind, zone: usize) {
        if self
            .vms
            .iter()
            .any(|v| v.kind == kind && v.zone == zone && v.state != "Expunging")
        {
            return;
        }
        let Some(template) = self.current_system_template().map(|t| t.db_id) else {
            return;
        };
        let vm = self.create_vm(kind, zone, None, template, None);
        if self.begin_start(vm, None, None).is_err() {
            // No host can take it now: the next scan tries again.
            let v = self.vms.remove(vm);
            if let Some(p) = &mut self.persist {
                p.remove_vm(v.db_id);
            }
            self.schedule(self.timings.capacity_scan, Action::Recreate { kind, zone });
        }
    }

    fn rebooted(&mut self, vm_id: &str, job: &str) {
        let Some(vm) = self.vm_index(vm_id) else {
            return;
        };
        if let Some(text) = self.injected(job) {
            self.fail_job(&Some(job.to_string()), 530, &text);
            return;
        }
        // A hypervisor reboot keeps the root disk, so the template; the agent starts again from
        // the host's systemvm.iso.
        let host = self.vms[vm].host;
        if self.vms[vm].kind.is_system() {
            self.vms[vm].agent_version = host.map(|h| self.hosts[h].version.clone());
        }
        self.set_state(vm, "Running");
        let result = self.vm_result(vm);
        self.finish(job, JobOutcome::Success(result));
    }

    fn patched(&mut self, vm_id: &str, job: &str) {
        let Some(vm) = self.vm_index(vm_id) else {
            return;
        };
        if let Some(text) = self.injected(job) {
            let name = self.vms[vm].name.clone();
            self.fail_job(
                &Some(job.to_string()),
                530,
                &format!("Failed to patch systemVM {name} due to {text}"),
            );
            return;
        }
        // Live patching copies the management server's agent and scripts into the VM and
        // restarts its services (`PatchSystemVmCommand`); for routers it refreshes
        // template_version (`updateRouterDetails`). The version reported is the management
        // server's (UNCONFIRMED: taken from the patch's agent.zip).
        let ms = self.answering_version();
        let v = &mut self.vms[vm];
        if v.kind.is_system() {
            v.agent_version = Some(ms.clone());
        }
        if let (Some(r), Ok(ver)) = (v.router.as_mut(), CsVersion::parse(&ms)) {
            r.template_version = Some(router_release(&ver));
        }
        // Nothing of `vm_instance` changes: the agent's version is its host row's, a router's
        // in `domain_router`.
        let text = format!("Successfully patched system VM {}", self.vms[vm].name);
        self.finish(
            job,
            JobOutcome::Success(json!({"success": true, "displaytext": text})),
        );
    }

    /// A new VM row in `zone` (Stopped, no host): user VMs get the stock template and
    /// `name`; system VMs and routers are named after their id (`s-12-VM`).
    pub(crate) fn create_vm(
        &mut self,
        kind: VmKind,
        zone: usize,
        name: Option<&str>,
        template: u64,
        router: Option<RouterInfo>,
    ) -> usize {
        let id = self.new_id();
        let mut v = Vm {
            id,
            db_id: 0,
            name: String::new(),
            display_name: String::new(),
            instance_name: String::new(),
            kind,
            state: "Stopped".into(),
            host: None,
            last_host: None,
            zone,
            offering: offering(kind.offering()),
            local_storage: false,
            template_id: template,
            booted_template: None,
            agent_version: None,
            router,
            created: db_now(),
        };
        v.db_id = self.new_db_id();
        let n = v.db_id;
        v.instance_name = match kind {
            VmKind::User => format!("i-{ADMIN_ACCOUNT}-{n}-VM"),
            k => format!("{}-{n}-VM", k.prefix()),
        };
        v.name = match (kind, name) {
            (VmKind::User, Some(name)) => name.to_string(),
            (VmKind::User, None) => format!("VM-{}", &v.id[v.id.len() - 8..]),
            _ => v.instance_name.clone(),
        };
        v.display_name = v.name.clone();
        let zone_db = self.zones[zone].db_id;
        if let Some(p) = &mut self.persist {
            p.insert_vm(&v, zone_db);
        }
        self.vms.push(v);
        let i = self.vms.len() - 1;
        self.save_vm(i);
        i
    }

    fn vm_result(&self, vm: usize) -> Value {
        let v = &self.vms[vm];
        match v.kind {
            VmKind::User => {
                let mut out = Vec::new();
                self.vm_json_into(v, &mut out);
                let vm: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
                json!({ "virtualmachine": vm })
            }
            VmKind::DomainRouter => {
                json!({"router": {"id": v.id, "name": v.name, "state": v.state}})
            }
            _ => json!({"systemvm": {"id": v.id, "name": v.name, "state": v.state}}),
        }
    }

    // --------------------------------------------------------------------------- maintenance

    /// `ResourceManagerImpl.maintain(PrepareForMaintenanceCmd)` then `doMaintain`, run as the
    /// job: pre-checks in CloudStack's order, the host to PrepareForMaintenance, and one HA
    /// migration per VM on it. The job ends with the host still preparing; the monitor moves
    /// it to Maintenance (or ErrorInMaintenance) once the VMs have left (or could not).
    fn prepare_maintenance(&mut self, command: &str, p: &Params) -> Reply {
        let Some(h) = p
            .get("id")
            .and_then(|id| self.hosts.iter().position(|h| &h.id == id))
        else {
            let id = p.get("id").cloned().unwrap_or_default();
            return param_error(
                command,
                &format!("Unable to find host with ID: {id}. Please specify a valid host ID."),
            );
        };
        let host_db = self.hosts[h].db_id;
        let job = self.new_job(command, "Host", Some((&self.hosts[h].id.clone(), "")));
        let id = self.hosts[h].id.clone();
        self.event(
            "MAINT.PREPARE",
            "Scheduled",
            "INFO",
            format!("preparing host: {host_db} for maintenance"),
            Some((host_db, "Host")),
        );
        if let Err(text) = self.maintain(h) {
            self.schedule(
                Duration::from_millis(20),
                Action::Finish {
                    job: job.clone(),
                    outcome: JobOutcome::Failure { code: 530, text },
                },
            );
        } else {
            let result = json!({ "host": self.host_result(h) });
            self.schedule(
                Duration::from_millis(20),
                Action::Finish {
                    job: job.clone(),
                    outcome: JobOutcome::Success(result),
                },
            );
        }
        Self::job_reply(command, &job, Some(&id))
    }

    fn host_result(&self, h: usize) -> Value {
        let host = &self.hosts[h];
        json!({"id": host.id, "name": host.name, "state": host.state,
               "resourcestate": host.resource_state, "version": host.version})
    }

    fn maintain(&mut self, h: usize) -> Result<(), String> {
        let (state, cluster, host_db) = {
            let host = &self.hosts[h];
            (host.resource_state.clone(), host.cluster, host.db_id)
        };
        if NOT_AGAIN.contains(&state.as_str()) {
            return Err(format!(
                "Host is already in state {state}. Cannot recall for maintenance until resolved."
            ));
        }
        let preparing = self.hosts.iter().enumerate().any(|(i, o)| {
            i != h
                && o.cluster == cluster
                && matches!(
                    o.resource_state.as_str(),
                    "PrepareForMaintenance" | "ErrorInPrepareForMaintenance"
                )
        });
        if preparing {
            return Err(format!(
                "There are other servers attempting migrations for maintenance. Found hosts in \
                 PrepareForMaintenance OR ErrorInPrepareForMaintenance STATUS in cluster {}",
                self.clusters[cluster].db_id
            ));
        }
        let on_host: Vec<usize> = (0..self.vms.len())
            .filter(|&v| self.vms[v].host == Some(h))
            .collect();
        let in_state = |states: &[&str]| {
            on_host
                .iter()
                .any(|&v| states.contains(&self.vms[v].state.as_str()))
        };
        // `host.maintenance.local.storage.strategy` defaults to Error.
        if on_host
            .iter()
            .any(|&v| self.vms[v].local_storage && self.vms[v].holds_capacity())
        {
            return Err("There are active VMs using the host's local storage pool. Please stop all VMs on this host that use local storage.".into());
        }
        if in_state(&["Migrating"]) {
            return Err("Host contains incoming VMs migrating. Please wait for them to complete before putting to maintenance.".into());
        }
        if in_state(&["Starting", "Stopping"]) {
            return Err("Host contains VMs in starting/stopping state. Please wait for them to complete before putting to maintenance.".into());
        }
        if in_state(&["Error", "Unknown"]) {
            return Err(
                "Host contains VMs in error/unknown/shutdown state. Please fix errors to proceed."
                    .into(),
            );
        }
        // doMaintain: AdminAskMaintenance → PrepareForMaintenance, then the migrations.
        self.hosts[h].resource_state = "PrepareForMaintenance".into();
        self.save_host(h);
        self.event(
            "MAINT.PREPARE",
            "Started",
            "INFO",
            format!("starting maintenance for host {host_db}"),
            Some((host_db, "Host")),
        );
        self.ensure_monitor();
        if on_host.is_empty() {
            return Ok(());
        }
        let targets = (0..self.hosts.len()).any(|o| {
            o != h && self.hosts[o].cluster == cluster && self.hosts[o].is_up_and_enabled()
        });
        if !targets {
            // `migrate.vm.across.clusters` is false by default: doMaintain returns false.
            return Err(format!("Unable to prepare for maintenance host {host_db}"));
        }
        for v in on_host {
            let vm = self.vms[v].id.clone();
            self.ha_work.push(HaWork {
                vm: vm.clone(),
                host: h,
                attempts: 0,
                done: false,
            });
            // `ha.workers` (5) pick the work up at once.
            self.schedule(
                Duration::from_millis(10),
                Action::TryMigration { vm, host: h },
            );
        }
        Ok(())
    }

    fn ensure_monitor(&mut self) {
        if !self.timeline.values().any(|a| matches!(a, Action::Monitor)) {
            self.schedule(self.timings.ping_interval, Action::Monitor);
        }
    }

    fn work_index(&self, vm: &str, host: usize) -> Option<usize> {
        self.ha_work
            .iter()
            .position(|w| w.vm == vm && w.host == host && !w.done)
    }

    /// `HighAvailabilityManagerImpl.migrate` → `migrateAway`: to a host of the same cluster
    /// with room, or, when there is none, `migrateAwayFailed` (the host goes
    /// ErrorInPrepareForMaintenance) and another try after `migrate.retry.interval`, up to
    /// `max.retries`.
    fn try_migration(&mut self, vm_id: &str, host: usize) {
        let Some(w) = self.work_index(vm_id, host) else {
            return; // Cancelled (cancelHostMaintenance).
        };
        let Some(vm) = self.vm_index(vm_id) else {
            self.ha_work[w].done = true;
            return;
        };
        if self.vms[vm].host != Some(host) || self.vms[vm].state != "Running" {
            self.ha_work[w].done = true;
            return;
        }
        match self.migration_target(vm, host) {
            Some(to) => {
                // `vm.setLastHostId(src)`, then MigrationRequested sets host_id to the
                // destination at once.
                self.vms[vm].last_host = Some(host);
                self.vms[vm].host = Some(to);
                self.set_state(vm, "Migrating");
                self.schedule(
                    self.timings.migrate,
                    Action::Migrated {
                        vm: vm_id.to_string(),
                        from: host,
                        job: None,
                    },
                );
            }
            None => {
                self.ha_work[w].attempts += 1;
                if self.hosts[host].resource_state == "PrepareForMaintenance" {
                    self.hosts[host].resource_state = "ErrorInPrepareForMaintenance".into();
                    self.save_host(host);
                }
                if self.ha_work[w].attempts < self.timings.max_retries {
                    self.schedule(
                        self.timings.migrate_retry,
                        Action::TryMigration {
                            vm: vm_id.to_string(),
                            host,
                        },
                    );
                } else {
                    self.ha_work[w].done = true; // "Giving up, retried max 5/5 times".
                }
            }
        }
    }

    fn migrated(&mut self, vm_id: &str, from: usize, job: Option<String>) {
        let Some(vm) = self.vm_index(vm_id) else {
            return;
        };
        if let Some(w) = self.work_index(vm_id, from) {
            self.ha_work[w].done = true;
        }
        if let Some(j) = &job
            && let Some(text) = self.injected(j)
        {
            // OperationFailed: back to Running on the source.
            self.vms[vm].host = Some(from);
            self.vms[vm].last_host = Some(from);
            self.set_state(vm, "Running");
            self.fail_job(&job, 530, &text);
            return;
        }
        // OperationSucceeded: Running on the destination, last_host_id the source.
        self.set_state(vm, "Running");
        self.domain_start(vm);
        self.domain_stop(vm, from);
        if let Some(j) = job {
            let result = self.vm_result(vm);
            self.finish(&j, JobOutcome::Success(result));
        }
    }

    /// `ResourceManagerImpl.attemptMaintain` for every host preparing for maintenance.
    fn monitor(&mut self) {
        let mut again = false;
        for h in 0..self.hosts.len() {
            let rs = self.hosts[h].resource_state.clone();
            if !matches!(
                rs.as_str(),
                "PrepareForMaintenance" | "ErrorInPrepareForMaintenance"
            ) {
                continue;
            }
            again = true;
            let next = self.attempt_maintain(h);
            if let Some(next) = next
                && next != rs
            {
                self.hosts[h].resource_state = next.to_string();
                self.save_host(h);
                if next == "Maintenance" {
                    let db = self.hosts[h].db_id;
                    self.event(
                        "MAINT.PREPARE",
                        "Completed",
                        "INFO",
                        format!("completed maintenance for host {db}"),
                        Some((db, "Host")),
                    );
                }
                if next == "ErrorInMaintenance" {
                    // setHostIntoErrorInMaintenance cancels the scheduled migrations.
                    for w in self.ha_work.iter_mut().filter(|w| w.host == h) {
                        w.done = true;
                    }
                }
            }
        }
        if again {
            self.schedule(self.timings.ping_interval, Action::Monitor);
        }
    }

    fn attempt_maintain(&self, h: usize) -> Option<&'static str> {
        let on: Vec<&Vm> = self.vms.iter().filter(|v| v.host == Some(h)).collect();
        let migrating_away = self
            .vms
            .iter()
            .any(|v| v.state == "Migrating" && v.last_host == Some(h) && v.host != Some(h));
        let pending = self.ha_work.iter().any(|w| w.host == h && !w.done);
        let any = |states: &[&str]| on.iter().any(|v| states.contains(&v.state.as_str()));
        if !migrating_away
            && !any(&[
                "Migrating",
                "Running",
                "Starting",
                "Stopping",
                "Error",
                "Unknown",
            ])
        {
            return Some("Maintenance");
        }
        // listNonMigratingVmsByHostEqualsLastHost: host_id = last_host_id = h, not Migrating.
        let failed = on
            .iter()
            .any(|v| v.last_host == Some(h) && v.state != "Migrating");
        let errors = any(&["Error", "Unknown"]);
        let running = any(&["Running"]);
        let stopping = any(&["Stopping"]);
        // Step 3: nothing pending or migrating away, and still running VMs or errors.
        if !migrating_away && ((!pending && running) || (!running && errors)) {
            return Some("ErrorInMaintenance");
        }
        if (pending || migrating_away || stopping) && (errors || failed) {
            return Some("ErrorInPrepareForMaintenance");
        }
        if self.hosts[h].resource_state == "ErrorInPrepareForMaintenance" {
            return Some("PrepareForMaintenance");
        }
        None
    }

    /// `ResourceManagerImpl.cancelMaintenance`: cancels the pending migrations and enables the
    /// host. Nothing moves back.
    fn cancel_maintenance(&mut self, command: &str, p: &Params) -> Reply {
        let Some(h) = p
            .get("id")
            .and_then(|id| self.hosts.iter().position(|h| &h.id == id))
        else {
            let id = p.get("id").cloned().unwrap_or_default();
            return param_error(
                command,
                &format!("Unable to find host with ID: {id}. Please specify a valid host ID."),
            );
        };
        let id = self.hosts[h].id.clone();
        let job = self.new_job(command, "Host", Some((&id, "")));
        let db = self.hosts[h].db_id;
        let rs = self.hosts[h].resource_state.clone();
        let outcome = if MAINTENANCE_STATES.contains(&rs.as_str()) {
            for w in self.ha_work.iter_mut().filter(|w| w.host == h) {
                w.done = true;
            }
            self.hosts[h].resource_state = "Enabled".into();
            self.save_host(h);
            self.event(
                "MAINT.CANCEL",
                "Completed",
                "INFO",
                format!("Successfully completed canceling maintenance for host {db}"),
                Some((db, "Host")),
            );
            JobOutcome::Success(json!({ "host": self.host_result(h) }))
        } else {
            JobOutcome::Failure {
                code: 530,
                text: format!(
                    "Cannot perform cancelMaintenance when resource state is {rs}, hostId = {db}"
                ),
            }
        };
        self.schedule(
            Duration::from_millis(20),
            Action::Finish {
                job: job.clone(),
                outcome,
            },
        );
        Self::job_reply(command, &job, Some(&id))
    }

    // ------------------------------------------------------------------------ VM commands

    fn find_vm(
        &self,
        command: &str,
        p: &Params,
        key: &str,
        kinds: &[VmKind],
    ) -> Result<usize, Reply> {
        let Some(id) = p.get(key) else {
            return Err(param_error(
                command,
                &format!(
                    "Unable to execute API command {} due to missing parameter {key}",
                    command.to_lowercase()
                ),
            ));
        };
        self.vms
            .iter()
            .position(|v| &v.id == id && kinds.contains(&v.kind))
            .ok_or_else(|| {
                param_error(
                    command,
                    &format!("Unable to find virtual machine with specified id {id}"),
                )
            })
    }

    /// A job for an operation on VM `vm`, with its Scheduled and Started events.
    fn vm_job(&mut self, command: &str, vm: usize, op: &str, description: &str) -> String {
        let (id, name, ty) = {
            let v = &self.vms[vm];
            let ty = match v.kind {
                VmKind::User => "VirtualMachine",
                VmKind::DomainRouter => "DomainRouter",
                _ => "SystemVm",
            };
            (v.id.clone(), v.name.clone(), ty)
        };
        let job = self.new_job(command, ty, Some((&id, &name)));
        self.vm_event(vm, op, "Scheduled", true, description);
        self.vm_event(vm, op, "Started", true, description);
        let v = &self.vms[vm];
        let resource = Some((
            v.db_id,
            if v.kind == VmKind::User {
                "VirtualMachine"
            } else {
                "DomainRouter"
            },
        ));
        let completes = JobEvent {
            kind: event_type(v.kind, op),
            what: format!("{description}. Vm Id: {}", v.id),
            resource,
        };
        if let Some(j) = self.jobs.get_mut(&job) {
            j.event = Some(completes);
        }
        job
    }

    /// Ends `job` at once with a failure (the command's checks refused it).
    fn refuse(&mut self, job: &str, code: u16, text: String) {
        self.finish(job, JobOutcome::Failure { code, text });
    }

    fn deploy(&mut self, command: &str, p: &Params) -> Reply {
        let Some(zone) = p.get("zoneid") else {
            return param_error(
                command,
                "Unable to execute API command deployvirtualmachine due to missing parameter zoneid",
            );
        };
        let Some(zone) = self.zones.iter().position(|z| &z.id == zone) else {
            return param_error(command, &format!("Unable to find zone by id {zone}"));
        };
        let name = p.get("name").map(String::as_str);
        let vm = self.create_vm(VmKind::User, zone, name, USER_TEMPLATE, None);
        if let Some(d) = p.get("displayname") {
            self.vms[vm].display_name.clone_from(d);
            self.save_vm(vm);
        }
        let job = self.vm_job(command, vm, "CREATE", "deploying Vm");
        self.vm_event(vm, "CREATE", "Created", true, "deploying Vm");
        self.usage(vm, "VM.CREATE");
        let id = self.vms[vm].id.clone();
        if p.get("startvm").is_some_and(|s| s == "false") {
            let result = self.vm_result(vm);
            self.finish(&job, JobOutcome::Success(result));
        } else if let Err((code, text)) = self.begin_start(vm, Some(job.clone()), None) {
            self.refuse(&job, code, text);
        }
        Self::job_reply(command, &job, Some(&id))
    }

    fn start_vm(&mut self, command: &str, p: &Params, kinds: &[VmKind]) -> Reply {
        let vm = match self.find_vm(command, p, "id", kinds) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let id = self.vms[vm].id.clone();
        let job = self.vm_job(command, vm, "START", "starting Vm");
        match self.vms[vm].state.clone().as_str() {
            "Running" => {
                let result = self.vm_result(vm);
                self.finish(&job, JobOutcome::Success(result));
            }
            "Stopped" => {
                if let Err((code, text)) = self.begin_start(vm, Some(job.clone()), None) {
                    self.refuse(&job, code, text);
                }
            }
            state => {
                let text = format!(
                    "VM {} is in state {state} and cannot be started",
                    self.vms[vm].instance_name
                );
                self.refuse(&job, 530, text);
            }
        }
        Self::job_reply(command, &job, Some(&id))
    }

    fn stop_vm(&mut self, command: &str, p: &Params, kinds: &[VmKind]) -> Reply {
        let vm = match self.find_vm(command, p, "id", kinds) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let id = self.vms[vm].id.clone();
        let job = self.vm_job(command, vm, "STOP", "stopping Vm");
        match self.vms[vm].state.clone().as_str() {
            "Running" => self.begin_stop(vm, Some(job.clone()), None),
            "Stopped" => {
                let result = self.vm_result(vm);
                self.finish(&job, JobOutcome::Success(result));
            }
            state => {
                let text = format!(
                    "Unable to stop VM {} in state {state}",
                    self.vms[vm].instance_name
                );
                self.refuse(&job, 530, text);
            }
        }
        Self::job_reply(command, &job, Some(&id))
    }

    /// `destroyVirtualMachine`: a running VM is stopped first; Destroyed (recoverable), or
    /// with `expunge` Expunging and then removed.
    fn destroy_vm(&mut self, command: &str, p: &Params) -> Reply {
        let vm = match self.find_vm(command, p, "id", &[VmKind::User]) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let expunge = p.get("expunge").is_some_and(|e| e == "true");
        let id = self.vms[vm].id.clone();
        let job = self.vm_job(command, vm, "DESTROY", "destroying Vm");
        let destroy = Action::Destroy {
            vm: id.clone(),
            job: Some(job.clone()),
            expunge,
        };
        match self.vms[vm].state.clone().as_str() {
            "Running" => self.begin_stop(vm, None, Some(Box::new(destroy))),
            "Stopped" => self.run(destroy),
            state => {
                let text = format!(
                    "Unable to destroy VM {} in state {state}",
                    self.vms[vm].instance_name
                );
                self.refuse(&job, 530, text);
            }
        }
        Self::job_reply(command, &job, Some(&id))
    }

    fn destroy_stopped(&mut self, vm_id: &str, job: Option<String>, expunge: bool) {
        let Some(vm) = self.vm_index(vm_id) else {
            return;
        };
        self.usage(vm, "VM.DESTROY");
        if expunge {
            self.set_state(vm, "Expunging");
            self.schedule(
                self.timings.destroy,
                Action::Expunged {
                    vm: vm_id.to_string(),
                    job,
                },
            );
        } else {
            self.set_state(vm, "Destroyed");
            if let Some(j) = job {
                self.finish(&j, JobOutcome::Success(json!({"success": true})));
            }
        }
    }

    fn migrate_vm(&mut self, command: &str, p: &Params) -> Reply {
        let vm = match self.find_vm(command, p, "virtualmachineid", &[VmKind::User]) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let id = self.vms[vm].id.clone();
        let job = self.vm_job(command, vm, "MIGRATE", "migrating VM");
        let from = self.vms[vm].host;
        let to = p.get("hostid").and_then(|h| self.host_index(h));
        let offering = self.vms[vm].offering;
        match (self.vms[vm].state.clone().as_str(), from, to) {
            ("Running", Some(from), Some(to))
                if to != from
                    && self.hosts[to].is_up_and_enabled()
                    && self.has_capacity(to, &offering) =>
            {
                self.vms[vm].last_host = Some(from);
                self.vms[vm].host = Some(to);
                self.set_state(vm, "Migrating");
                self.schedule(
                    self.timings.migrate,
                    Action::Migrated {
                        vm: id.clone(),
                        from,
                        job: Some(job.clone()),
                    },
                );
            }
            ("Running", _, _) => {
                self.refuse(&job, 533, "Unable to find a server to migrate to.".into());
            }
            (state, _, _) => {
                let text = format!(
                    "VM is not Running, unable to migrate the vm currently VM[User|{}] , current state: {state}",
                    self.vms[vm].instance_name
                );
                self.refuse(&job, 530, text);
            }
        }
        Self::job_reply(command, &job, Some(&id))
    }

    /// `rebootVirtualMachine` / `rebootSystemVm`: a hypervisor reboot (same root disk), unless a
    /// system VM's reboot is `forced`, which is a CloudStack stop and start (the new
    /// template).
    fn reboot_vm(&mut self, command: &str, p: &Params, kinds: &[VmKind]) -> Reply {
        let vm = match self.find_vm(command, p, "id", kinds) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let id = self.vms[vm].id.clone();
        let job = self.vm_job(command, vm, "REBOOT", "rebooting Vm");
        if self.vms[vm].state != "Running" {
            let text = format!(
                "Unable to reboot VM {}, it is not in right state {}",
                self.vms[vm].name, self.vms[vm].state
            );
            self.refuse(&job, 530, text);
        } else if self.vms[vm].kind.is_system() && p.get("forced").is_some_and(|f| f == "true") {
            self.stop_then_start(vm, &job);
        } else {
            self.schedule(
                self.timings.reboot,
                Action::Rebooted {
                    vm: id.clone(),
                    job: job.clone(),
                },
            );
        }
        Self::job_reply(command, &job, Some(&id))
    }

    fn stop_then_start(&mut self, vm: usize, job: &str) {
        let id = self.vms[vm].id.clone();
        self.begin_stop(
            vm,
            None,
            Some(Box::new(Action::BeginStart {
                vm: id,
                job: Some(job.to_string()),
                then: None,
            })),
        );
    }

    // ------------------------------------------------------------- system VMs and routers

    const SYSTEM: &'static [VmKind] = &[VmKind::SecondaryStorageVm, VmKind::ConsoleProxy];

    /// `destroySystemVm`: expunged at once; the capacity scan creates a replacement.
    fn destroy_system_vm(&mut self, command: &str, p: &Params) -> Reply {
        let vm = match self.find_vm(command, p, "id", Self::SYSTEM) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let id = self.vms[vm].id.clone();
        let job = self.vm_job(command, vm, "DESTROY", "destroying system Vm");
        self.set_state(vm, "Expunging");
        self.schedule(
            self.timings.destroy,
            Action::Expunged {
                vm: id.clone(),
                job: Some(job.clone()),
            },
        );
        Self::job_reply(command, &job, Some(&id))
    }

    /// `patchSystemVm` (since 4.17.0): SSVM and CPVM only, Running only; no reboot.
    fn patch_system_vm(&mut self, command: &str, p: &Params) -> Reply {
        let id = p.get("id").cloned().unwrap_or_default();
        let Some(vm) = self
            .vms
            .iter()
            .position(|v| v.id == id && v.kind.is_system())
        else {
            return error_reply(
                Some(command),
                431,
                Some(4350),
                &format!(
                    "Unable to find SystemVm with id {id}. patchSystemVm API can be used to patch CPVM / SSVM only."
                ),
            );
        };
        let job = self.vm_job(command, vm, "LIVEPATCH", "patching system Vm");
        if self.vms[vm].state != "Running" {
            let text = format!(
                "Unable to patch SystemVM: {} as it is not in Running state. Please destroy and recreate the SystemVM.",
                self.vms[vm].name
            );
            self.refuse(&job, 530, text);
        } else {
            self.schedule(
                self.timings.patch,
                Action::Patched {
                    vm: id.clone(),
                    job: job.clone(),
                },
            );
        }
        Self::job_reply(command, &job, Some(&id))
    }

    /// `rebootRouter`: a stop and a start through CloudStack, so the router comes back on its
    /// `vm_template_id` (`VirtualNetworkApplianceManagerImpl.rebootRouter`).
    fn reboot_router(&mut self, command: &str, p: &Params) -> Reply {
        let vm = match self.find_vm(command, p, "id", &[VmKind::DomainRouter]) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let id = self.vms[vm].id.clone();
        let job = self.vm_job(command, vm, "REBOOT", "rebooting router Vm");
        if self.vms[vm].state != "Running" {
            let text = format!(
                "Unable to reboot domR, it is not in right state {}",
                self.vms[vm].state
            );
            self.refuse(&job, 530, text);
        } else {
            self.stop_then_start(vm, &job);
        }
        Self::job_reply(command, &job, Some(&id))
    }

    /// Whether a router's reported version is below `minreq.sysvmtemplate.version`
    /// (`checkRouterTemplateVersion` is false).
    fn router_needs_upgrade(&self, vm: &Vm) -> bool {
        let minreq = self
            .configs
            .get("minreq.sysvmtemplate.version")
            .and_then(|v| CsVersion::parse(v).ok());
        let reported = vm
            .router
            .as_ref()
            .and_then(|r| r.template_version.as_deref())
            .map(super::state::trim_router_version)
            .and_then(|v| CsVersion::parse(&v).ok());
        match (reported, minreq) {
            (Some(r), Some(m)) => r < m,
            (None, _) => true,
            _ => false,
        }
    }

    /// `upgradeRouterTemplate` (synchronous): a `rebootRouter` job for every matching router
    /// that needs an upgrade; the response lists the jobs (UNCONFIRMED: the list's field
    /// names).
    fn upgrade_router_template(&mut self, command: &str, p: &Params) -> Reply {
        let filters = ["id", "zoneid", "clusterid", "podid", "account", "domainid"];
        if !filters.iter().any(|f| p.contains_key(*f)) {
            return param_error(
                command,
                "Please specify a router, zone, pod, cluster, account or domain",
            );
        }
        let picked: Vec<usize> = (0..self.vms.len())
            .filter(|&i| {
                let v = &self.vms[i];
                v.kind == VmKind::DomainRouter
                    && p.get("id").is_none_or(|id| &v.id == id)
                    && p.get("zoneid").is_none_or(|z| &self.zones[v.zone].id == z)
                    && p.get("clusterid").is_none_or(|c| {
                        v.host
                            .is_some_and(|h| &self.clusters[self.hosts[h].cluster].id == c)
                    })
                    && self.router_needs_upgrade(v)
            })
            .collect();
        let mut jobs = Vec::new();
        for vm in picked {
            let job = self.vm_job("rebootRouter", vm, "REBOOT", "rebooting router Vm");
            if self.vms[vm].state == "Running" {
                self.stop_then_start(vm, &job);
            } else {
                let text = format!(
                    "Unable to reboot domR, it is not in right state {}",
                    self.vms[vm].state
                );
                self.refuse(&job, 530, text);
            }
            jobs.push(json!({"jobid": job}));
        }
        Reply::json(
            200,
            &json!({ response_key(command): {"count": jobs.len(), "asyncjobs": jobs} }),
        )
    }

    /// `restartNetwork`: with `cleanup` the routers are replaced from the current template,
    /// one at a time, the BACKUP of a redundant pair before the PRIMARY; with `livepatch`
    /// (since 4.17.0, only without cleanup) they are patched in place; otherwise the rules are
    /// re-applied and the routers stay as they are.
    fn restart_network(&mut self, command: &str, p: &Params) -> Reply {
        let Some(n) = p
            .get("id")
            .and_then(|id| self.networks.iter().position(|n| &n.id == id))
        else {
            let id = p.get("id").cloned().unwrap_or_default();
            return param_error(
                command,
                &format!("Network with specified id {id} doesn't exist"),
            );
        };
        let id = self.networks[n].id.clone();
        let job = self.new_job(command, "Network", Some((&id, "")));
        // A router of the network that is made to fail fails the network's job.
        let failing = self
            .vms
            .iter()
            .filter(|v| v.router.as_ref().is_some_and(|r| r.network == n))
            .find_map(|v| self.fail_vm_jobs.get(&v.name).cloned());
        if let Some(text) = failing
            && let Some(j) = self.jobs.get_mut(&job)
        {
            j.injected.get_or_insert(text);
        }
        self.event(
            "NETWORK.RESTART",
            "Scheduled",
            "INFO",
            format!("Restarting network: {id}"),
            None,
        );
        let cleanup = p.get("cleanup").is_some_and(|c| c == "true");
        let livepatch = p.get("livepatch").is_some_and(|c| c == "true");
        let mut routers: Vec<usize> = (0..self.vms.len())
            .filter(|&i| self.vms[i].router.as_ref().is_some_and(|r| r.network == n))
            .collect();
        routers.sort_by_key(|&i| {
            self.vms[i]
                .router
                .as_ref()
                .is_some_and(|r| r.redundant_state == Some("PRIMARY"))
        });
        if cleanup {
            let remaining = routers.iter().map(|&i| self.vms[i].id.clone()).collect();
            self.schedule(
                Duration::from_millis(10),
                Action::ReplaceRouters {
                    network: n,
                    job: job.clone(),
                    remaining,
                },
            );
        } else if livepatch {
            let last = routers.last().copied();
            for vm in routers {
                let rid = self.vms[vm].id.clone();
                let step = if Some(vm) == last {
                    job.clone()
                } else {
                    self.new_job("patchSystemVm", "DomainRouter", None)
                };
                self.schedule(self.timings.patch, Action::Patched { vm: rid, job: step });
            }
            if last.is_none() {
                self.finish(&job, JobOutcome::Success(json!({"success": true})));
            }
        } else {
            self.schedule(
                Duration::from_millis(20),
                Action::Finish {
                    job: job.clone(),
                    outcome: JobOutcome::Success(json!({"success": true})),
                },
            );
        }
        Self::job_reply(command, &job, None)
    }

    fn replace_routers(&mut self, network: usize, job: String, mut remaining: Vec<String>) {
        if remaining.is_empty() {
            self.finish(&job, JobOutcome::Success(json!({"success": true})));
            return;
        }
        let old = remaining.remove(0);
        let Some(vm) = self.vm_index(&old) else {
            self.schedule(
                Duration::ZERO,
                Action::ReplaceRouters {
                    network,
                    job,
                    remaining,
                },
            );
            return;
        };
        if let Some(text) = self.injected(&job) {
            self.refuse(&job, 530, text);
            return;
        }
        let state = self.vms[vm].router.as_ref().and_then(|r| r.redundant_state);
        let zone = self.vms[vm].zone;
        if let Some(h) = self.vms[vm].host.take() {
            self.domain_stop(vm, h);
        }
        let gone = self.vms.remove(vm);
        if let Some(p) = &mut self.persist {
            p.remove_vm(gone.db_id);
        }
        let template = self
            .current_system_template()
            .map_or(gone.template_id, |t| t.db_id);
        let new = self.create_vm(
            VmKind::DomainRouter,
            zone,
            None,
            template,
            Some(RouterInfo {
                network,
                redundant_state: state,
                template_version: None,
            }),
        );
        let next = Action::ReplaceRouters {
            network,
            job: job.clone(),
            remaining,
        };
        if let Err((code, text)) = self.begin_start(new, None, Some(Box::new(next))) {
            self.refuse(&job, code, text);
        }
    }

    // ------------------------------------------------------------------- power state sync

    /// `VirtualMachinePowerStateSyncImpl`: a VM Running on an Up host whose hypervisor no
    /// longer runs its domain is reported PowerOff and goes to Stopped (with the usage event);
    /// nothing is done for hosts whose agent is not Up.
    pub(crate) fn power_sync(&mut self) {
        let Some(hv) = self.hypervisors.clone() else {
            return;
        };
        for h in 0..self.hosts.len() {
            if self.hosts[h].state != "Up" {
                continue;
            }
            let Some(running) = hv.running(&self.hosts[h].name) else {
                continue;
            };
            let gone: Vec<usize> = (0..self.vms.len())
                .filter(|&v| {
                    let vm = &self.vms[v];
                    vm.host == Some(h)
                        && vm.state == "Running"
                        && !running.contains(&vm.instance_name)
                })
                .collect();
            for vm in gone {
                self.touch();
                self.vms[vm].host = None;
                self.vms[vm].last_host = Some(h);
                self.set_state(vm, "Stopped");
                self.usage(vm, "VM.STOP");
            }
        }
        if let Some(p) = &mut self.persist {
            p.flush();
        }
    }

    // ------------------------------------------------------------------------- dispatch

    /// Answers a verified request that may change the cloud.
    pub(crate) fn dispatch(&mut self, command: &str, p: &Params) -> Reply {
        if let Some(r) = self.read(command, p) {
            return r;
        }
        self.touch();
        let user = [VmKind::User];
        let reply = match command {
            "updateConfiguration" => self.update_configuration(command, p),
            "prepareHostForMaintenance" => self.prepare_maintenance(command, p),
            "cancelHostMaintenance" => self.cancel_maintenance(command, p),
            "deployVirtualMachine" => self.deploy(command, p),
            "startVirtualMachine" => self.start_vm(command, p, &user),
            "stopVirtualMachine" => self.stop_vm(command, p, &user),
            "rebootVirtualMachine" => self.reboot_vm(command, p, &user),
            "destroyVirtualMachine" => self.destroy_vm(command, p),
            "migrateVirtualMachine" => self.migrate_vm(command, p),
            "startSystemVm" => self.start_vm(command, p, Self::SYSTEM),
            "stopSystemVm" => self.stop_vm(command, p, Self::SYSTEM),
            "rebootSystemVm" => self.reboot_vm(command, p, Self::SYSTEM),
            "destroySystemVm" => self.destroy_system_vm(command, p),
            "patchSystemVm" if self.has_live_patch() => self.patch_system_vm(command, p),
            "rebootRouter" => self.reboot_router(command, p),
            "startRouter" => self.start_vm(command, p, &[VmKind::DomainRouter]),
            "stopRouter" => self.stop_vm(command, p, &[VmKind::DomainRouter]),
            "upgradeRouterTemplate" => self.upgrade_router_template(command, p),
            "restartNetwork" => self.restart_network(command, p),
            "queryAsyncJobResult" => self.query_job(command, p),
            "logout" => Reply::json(200, &json!({"logoutresponse": {"description": "success"}})),
            other => error_reply(
                Some(other),
                432,
                None,
                &format!(
                    "The given command:{other} does not exist or it is not available for user"
                ),
            ),
        };
        if let Some(p) = &mut self.persist {
            p.flush();
        }
        reply
    }

    /// `patchSystemVm` exists from 4.17.0 on.
    fn has_live_patch(&self) -> bool {
        CsVersion::parse(&self.answering_version()).is_ok_and(|v| v >= CsVersion::new3(4, 17, 0))
    }

    fn update_configuration(&mut self, command: &str, p: &Params) -> Reply {
        let Some(name) = p.get("name") else {
            return param_error(
                command,
                "Unable to execute API command updateconfiguration due to missing parameter name",
            );
        };
        if !self.configs.contains_key(name) {
            return param_error(command, &format!("Invalid config name: {name}"));
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
}

/// Scripting a cloud directly (the test's hand, not CloudStack's): used to set a lab up.
impl Cloud {
    /// Makes VM `vm` run on `host` as if CloudStack had started it there (no job, no event).
    pub(crate) fn place_running(&mut self, vm: usize, host: Option<usize>) {
        self.touch();
        let template = self.vms[vm].template_id;
        let version = self.template(template).and_then(|t| t.version);
        let host_version = host.map(|h| self.hosts[h].version.clone());
        {
            let v = &mut self.vms[vm];
            v.host = host;
            v.last_host = host;
            v.booted_template = Some(template);
            if v.kind.is_system() {
                v.agent_version = host_version;
            }
            if let (Some(r), Some(ver)) = (v.router.as_mut(), version) {
                r.template_version = Some(router_release(&ver));
            }
        }
        let state = if host.is_some() { "Running" } else { "Stopped" };
        self.set_state(vm, state);
        self.domain_start(vm);
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(p) = &mut self.persist {
            p.flush();
        }
    }

    /// Sets a VM's state and host directly.
    pub(crate) fn set_vm_state(&mut self, vm: usize, state: &str, host: Option<usize>) {
        self.touch();
        let running = matches!(state, "Running" | "Starting" | "Migrating" | "Stopping");
        let old = self.vms[vm].host;
        if let Some(h) = old
            && (!running || host != old)
        {
            self.domain_stop(vm, h);
        }
        self.vms[vm].host = if running { host } else { None };
        if running && host.is_some() {
            self.vms[vm].last_host = host;
        }
        self.set_state(vm, state);
        if running && host != old {
            self.domain_start(vm);
        }
        self.flush();
    }

    /// Removes VM `vm` at once, as a finished expunge.
    pub(crate) fn expunge_now(&mut self, vm: usize) {
        self.touch();
        if let Some(h) = self.vms[vm].host {
            self.domain_stop(vm, h);
        }
        let v = self.vms.remove(vm);
        if let Some(p) = &mut self.persist {
            p.remove_vm(v.db_id);
            p.flush();
        }
    }

    pub(crate) fn save_host_row(&mut self, h: usize) {
        self.save_host(h);
        if let Some(p) = &mut self.persist {
            p.flush();
        }
    }

    pub(crate) fn save_vm_row(&mut self, vm: usize) {
        self.save_vm(vm);
        if let Some(p) = &mut self.persist {
            p.flush();
        }
    }

    pub(crate) fn lab_vm(&self, v: &Vm) -> super::LabVm {
        let host = |h: Option<usize>| h.map(|i| self.hosts[i].name.clone());
        super::LabVm {
            id: v.id.clone(),
            db_id: v.db_id,
            name: v.name.clone(),
            instance_name: v.instance_name.clone(),
            kind: v.kind.db().to_string(),
            state: v.state.clone(),
            host: host(v.host),
            last_host: host(v.last_host),
            template: self.template(v.template_id).map(|t| t.name.clone()),
            booted_template: v
                .booted_template
                .and_then(|t| self.template(t))
                .map(|t| t.name.clone()),
            agent_version: v.agent_version.clone(),
        }
    }
}
