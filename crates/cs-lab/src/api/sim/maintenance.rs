//! Host maintenance as `ResourceManagerImpl` runs it: the pre-checks, PrepareForMaintenance,
//! one HA migration per VM (retried, then given up), the monitor that ends in Maintenance or
//! ErrorInMaintenance, and cancelling.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Action, HaWork};
use crate::api::state::{Cloud, JobOutcome, Params, Reply, Vm, param_error};

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

impl Cloud {
    /// `ResourceManagerImpl.maintain(PrepareForMaintenanceCmd)` then `doMaintain`, run as the
    /// job: pre-checks in CloudStack's order, the host to PrepareForMaintenance, and one HA
    /// migration per VM on it. The job ends with the host still preparing; the monitor moves
    /// it to Maintenance (or ErrorInMaintenance) once the VMs have left (or could not).
    pub(super) fn prepare_maintenance(&mut self, command: &str, p: &Params) -> Reply {
        let h = match self.host_param(command, p) {
            Ok(h) => h,
            Err(r) => return r,
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

    pub(super) fn work_index(&self, vm: &str, host: usize) -> Option<usize> {
        self.ha_work
            .iter()
            .position(|w| w.vm == vm && w.host == host && !w.done)
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

    /// `HighAvailabilityManagerImpl.migrate` → `migrateAway`: to a host of the same cluster
    /// with room, or, when there is none, `migrateAwayFailed` (the host goes
    /// ErrorInPrepareForMaintenance) and another try after `migrate.retry.interval`, up to
    /// `max.retries`.
    pub(super) fn try_migration(&mut self, vm_id: &str, host: usize) {
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

    /// `ResourceManagerImpl.attemptMaintain` for every host preparing for maintenance.
    pub(super) fn monitor(&mut self) {
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

    /// The host named by the `id` parameter, or CloudStack's answer when there is none.
    fn host_param(&self, command: &str, p: &Params) -> Result<usize, Reply> {
        p.get("id")
            .and_then(|id| self.hosts.iter().position(|h| &h.id == id))
            .ok_or_else(|| {
                let id = p.get("id").cloned().unwrap_or_default();
                param_error(
                    command,
                    &format!("Unable to find host with ID: {id}. Please specify a valid host ID."),
                )
            })
    }

    /// `ResourceManagerImpl.cancelMaintenance`: cancels the pending migrations and enables the
    /// host. Nothing moves back.
    pub(super) fn cancel_maintenance(&mut self, command: &str, p: &Params) -> Reply {
        let h = match self.host_param(command, p) {
            Ok(h) => h,
            Err(r) => return r,
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
}
