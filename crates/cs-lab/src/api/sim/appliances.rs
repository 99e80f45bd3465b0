//! System VMs and routers: recreated by the capacity scans, rebooted or live-patched in place,
//! destroyed, and replaced from the current template by `restartNetwork` with cleanup.

use std::time::Duration;

use cs_core::CsVersion;
use serde_json::json;

use super::Action;
use crate::api::state::{
    Cloud, JobOutcome, Params, Reply, RouterInfo, Vm, VmKind, error_reply, param_error,
    response_key, router_release,
};

impl Cloud {
    pub(super) const SYSTEM: &'static [VmKind] =
        &[VmKind::SecondaryStorageVm, VmKind::ConsoleProxy];

    pub(super) fn recreate(&mut self, kind: VmKind, zone: usize) {
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

    pub(super) fn rebooted(&mut self, vm_id: &str, job: &str) {
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

    pub(super) fn patched(&mut self, vm_id: &str, job: &str) {
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

    /// `destroySystemVm`: expunged at once; the capacity scan creates a replacement.
    pub(super) fn destroy_system_vm(&mut self, command: &str, p: &Params) -> Reply {
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
    pub(super) fn patch_system_vm(&mut self, command: &str, p: &Params) -> Reply {
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
    pub(super) fn reboot_router(&mut self, command: &str, p: &Params) -> Reply {
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
            .map(crate::api::state::trim_router_version)
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
    pub(super) fn upgrade_router_template(&mut self, command: &str, p: &Params) -> Reply {
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
    pub(super) fn restart_network(&mut self, command: &str, p: &Params) -> Reply {
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

    pub(super) fn replace_routers(
        &mut self,
        network: usize,
        job: String,
        mut remaining: Vec<String>,
    ) {
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
}
