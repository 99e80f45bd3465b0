//! What changes the lab cloud, as CloudStack's management server changes it: async jobs that
//! take time and can fail, host maintenance that live-migrates every VM away (or ends in
//! `ErrorInMaintenance`), VM lifecycles, system VMs and routers that keep the template they
//! booted until CloudStack restarts them, templates operators register (and delete) and the
//! secondary storage VMs download, events and usage events for each of these, and the
//! power-state sync that notices guests gone from their hypervisor.
//!
//! Each behaviour names the CloudStack code it follows. Times are [`super::Timings`], scaled down from
//! CloudStack's defaults; nothing here happens in zero time, so a caller that does not wait for
//! a job sees the states in between, as on a real cloud.

mod appliances;
mod maintenance;
mod script;
mod templates;
mod vms;

pub(crate) use templates::{DEFAULT_DOWNLOAD_ERROR, translate_uuid};

use std::time::{Duration, Instant};

use cs_core::CsVersion;
use serde_json::json;

use super::state::{
    Cloud, Event, Job, JobEvent, JobOutcome, Params, Reply, Vm, VmKind, api_date, db_now,
    error_reply, param_error, response_key,
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
    /// The next progress report of a template's download to an image store (by ids).
    TemplateDownload { template: u64, store: u64 },
    /// The secondary storage VM has deleted a template's copy from the first of `stores` (by
    /// ids); `deleteTemplate`'s job goes on with the others.
    TemplateDeleted {
        job: String,
        template: u64,
        stores: Vec<u64>,
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
        "deleteTemplate" => "user.template",
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
            Action::TemplateDownload { template, store } => {
                self.template_download(template, store);
            }
            Action::TemplateDeleted {
                job,
                template,
                stores,
            } => self.template_deleted(&job, template, stores),
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
        let resource = Some(Self::vm_resource(v));
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

    /// The resource an event on `v` names: its row id and type.
    fn vm_resource(v: &Vm) -> (u64, &'static str) {
        let ty = if v.kind == VmKind::User {
            "VirtualMachine"
        } else {
            "DomainRouter"
        };
        (v.db_id, ty)
    }

    /// Ends `job` at once with a failure (the command's checks refused it).
    fn refuse(&mut self, job: &str, code: u16, text: String) {
        self.finish(job, JobOutcome::Failure { code, text });
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
        self.event_row(
            kind,
            state,
            level,
            description,
            resource.map(|r| r.0),
            resource.map(|r| r.1),
        );
    }

    /// An event row whose resource id and type are given apart.
    pub(crate) fn event_row(
        &mut self,
        kind: &str,
        state: &'static str,
        level: &'static str,
        description: String,
        resource_id: Option<u64>,
        resource_type: Option<&'static str>,
    ) {
        let e = Event {
            id: self.new_event_id(),
            kind: kind.to_string(),
            state,
            level,
            description,
            resource_id,
            resource_type,
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
        let resource = Some(Self::vm_resource(v));
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
            "registerTemplate" => self.register_template(command, p),
            "deleteTemplate" => self.delete_template(command, p),
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
