//! VM lifecycles (placement, start, stop, migration, expunge) and the commands on user VMs
//! (deploy, start, stop, destroy, migrate, reboot), which system VMs and routers share.

use serde_json::{Value, json};

use super::Action;
use crate::api::state::{
    ADMIN_ACCOUNT, Cloud, JobOutcome, Params, Reply, RouterInfo, USER_TEMPLATE, Vm, VmKind, db_now,
    offering, param_error, router_release,
};

impl Cloud {
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

    // ------------------------------------------------------------------------- VM lifecycle

    /// Begins a CloudStack start of `vm` (Stopped → Starting on a planned host). The root disk
    /// of system VMs and routers is recreatable, so they boot their `vm_template_id`
    /// (`VolumeOrchestrator` RECREATE / `switchVolume`). Errs with the capacity text.
    pub(super) fn begin_start(
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

    pub(super) fn started(&mut self, vm_id: &str, job: Option<String>, then: Option<Box<Action>>) {
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

    pub(super) fn stopped(&mut self, vm_id: &str, job: Option<String>, then: Option<Box<Action>>) {
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

    pub(super) fn migrated(&mut self, vm_id: &str, from: usize, job: Option<String>) {
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

    pub(super) fn expunged(&mut self, vm_id: &str, job: Option<String>) {
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

    pub(super) fn vm_result(&self, vm: usize) -> Value {
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

    // ------------------------------------------------------------------------ VM commands

    pub(super) fn find_vm(
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

    pub(super) fn deploy(&mut self, command: &str, p: &Params) -> Reply {
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

    pub(super) fn start_vm(&mut self, command: &str, p: &Params, kinds: &[VmKind]) -> Reply {
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

    pub(super) fn stop_vm(&mut self, command: &str, p: &Params, kinds: &[VmKind]) -> Reply {
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
    pub(super) fn destroy_vm(&mut self, command: &str, p: &Params) -> Reply {
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

    pub(super) fn destroy_stopped(&mut self, vm_id: &str, job: Option<String>, expunge: bool) {
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

    pub(super) fn migrate_vm(&mut self, command: &str, p: &Params) -> Reply {
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
    pub(super) fn reboot_vm(&mut self, command: &str, p: &Params, kinds: &[VmKind]) -> Reply {
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

    pub(super) fn stop_then_start(&mut self, vm: usize, job: &str) {
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
}
