//! The power-state sync, and scripting a cloud directly (the test's hand, not CloudStack's).

use crate::api::state::{Cloud, Vm, router_release};

impl Cloud {
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

    pub(crate) fn lab_vm(&self, v: &Vm) -> crate::api::LabVm {
        let host = |h: Option<usize>| h.map(|i| self.hosts[i].name.clone());
        crate::api::LabVm {
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
