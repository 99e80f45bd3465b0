//! Tenants of the lab cloud: they use the API as CloudStack's users do while the cloud runs —
//! deploying, starting, stopping and destroying VMs — so every change goes through the same
//! commands, jobs, events and database rows as on a real cloud, and an upgrade meets a cloud
//! that does not stand still. [`Tenant`] makes single changes a test scripts; a
//! [`TenantActor`] keeps making them at a rate until it is dropped. Both record what they
//! changed ([`TenantChange`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::verify;
use crate::{LabError, Result};

/// One change a tenant made (or tried to).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantChange {
    /// When the job ended, `yyyy-MM-dd HH:mm:ss` UTC.
    pub at: String,
    /// `deploy`, `start`, `stop` or `destroy`.
    pub action: String,
    /// The VM's name.
    pub vm: String,
    /// The VM's id.
    pub vm_id: String,
    /// Whether the job succeeded.
    pub ok: bool,
    /// The job's error text when it failed.
    pub detail: String,
}

/// A tenant using the lab's API with the admin key: each call submits the command, waits for
/// its job (at most 30 s) and records the change.
#[derive(Debug, Clone)]
pub struct Tenant {
    endpoint: String,
    api_key: String,
    secret: cs_core::Secret,
    http: reqwest::Client,
    changes: Arc<Mutex<Vec<TenantChange>>>,
}

fn now_db() -> String {
    super::state::db_now()
}

impl Tenant {
    pub(crate) fn new(endpoint: String, api_key: String, secret: cs_core::Secret) -> Tenant {
        Tenant {
            endpoint,
            api_key,
            secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            changes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn err(what: &str, detail: impl std::fmt::Display) -> LabError {
        LabError::Start {
            what: format!("tenant {what}"),
            detail: detail.to_string(),
        }
    }

    /// A signed call (signature version 3); the response's inner object.
    async fn call(&self, command: &str, args: &[(&str, &str)]) -> Result<Value> {
        let expires = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+0000");
        let mut p: HashMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.insert("command".into(), command.into());
        p.insert("response".into(), "json".into());
        p.insert("apiKey".into(), self.api_key.clone());
        p.insert("signatureVersion".into(), "3".into());
        p.insert("expires".into(), expires.format(&fmt).unwrap_or_default());
        let signature = verify::compute_signature(&p, self.secret.expose());
        p.insert("signature".into(), signature);
        let resp = self
            .http
            .post(&self.endpoint)
            .form(&p)
            .send()
            .await
            .map_err(|e| Self::err(command, e.without_url()))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| Self::err(command, format!("HTTP {status}: {}", e.without_url())))?;
        let key = format!("{}response", command.to_lowercase());
        let inner = body
            .get(&key)
            .or_else(|| body.get("errorresponse"))
            .cloned()
            .unwrap_or(Value::Null);
        if !status.is_success() {
            let text = inner["errortext"].as_str().unwrap_or("error").to_string();
            return Err(Self::err(command, format!("HTTP {status}: {text}")));
        }
        Ok(inner)
    }

    /// Waits for a job; `Ok(Ok(result))` or `Ok(Err(errortext))`.
    async fn wait(&self, job: &str) -> Result<std::result::Result<Value, String>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.call("queryAsyncJobResult", &[("jobid", job)]).await?;
            match v["jobstatus"].as_i64() {
                Some(1) => return Ok(Ok(v["jobresult"].clone())),
                Some(2) => {
                    let text = v["jobresult"]["errortext"]
                        .as_str()
                        .unwrap_or("failed")
                        .to_string();
                    return Ok(Err(text));
                }
                _ if Instant::now() >= deadline => {
                    return Err(Self::err("job", format!("{job} still pending after 30 s")));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn job(
        &self,
        action: &str,
        vm: &str,
        vm_id: &str,
        command: &str,
        args: &[(&str, &str)],
    ) -> Result<TenantChange> {
        let v = self.call(command, args).await?;
        let job = v["jobid"]
            .as_str()
            .ok_or_else(|| Self::err(command, "no jobid in the answer"))?
            .to_string();
        let vm_id = v["id"].as_str().unwrap_or(vm_id).to_string();
        let outcome = self.wait(&job).await?;
        let change = TenantChange {
            at: now_db(),
            action: action.into(),
            vm: vm.into(),
            vm_id,
            ok: outcome.is_ok(),
            detail: outcome.err().unwrap_or_default(),
        };
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(change.clone());
        Ok(change)
    }

    /// The user VMs: `(id, name, state)`.
    ///
    /// # Errors
    /// When the API does not answer.
    pub async fn vms(&self) -> Result<Vec<(String, String, String)>> {
        let v = self
            .call("listVirtualMachines", &[("listall", "true")])
            .await?;
        Ok(v["virtualmachine"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|vm| {
                        let s = |k: &str| vm[k].as_str().unwrap_or_default().to_string();
                        (s("id"), s("name"), s("state"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn id_of(&self, name: &str) -> Result<String> {
        self.vms()
            .await?
            .into_iter()
            .find(|(_, n, _)| n == name)
            .map(|(id, _, _)| id)
            .ok_or_else(|| Self::err("lookup", format!("no VM named {name}")))
    }

    /// Deploys and starts VM `name` in the first zone.
    ///
    /// # Errors
    /// When the API does not answer or the job does not end in 30 s (a failed job is an
    /// `Ok` change with `ok: false`).
    pub async fn deploy(&self, name: &str) -> Result<TenantChange> {
        let zones = self.call("listZones", &[]).await?;
        let zone = zones["zone"][0]["id"]
            .as_str()
            .ok_or_else(|| Self::err("deploy", "no zone"))?
            .to_string();
        self.job(
            "deploy",
            name,
            "",
            "deployVirtualMachine",
            &[
                ("zoneid", &zone),
                ("name", name),
                ("serviceofferingid", "8b6f0c3e-0000-4000-8004-000000000002"),
                ("templateid", "8b6f0c3e-0000-4000-8000-000000000061"),
            ],
        )
        .await
    }

    /// Starts VM `name`.
    ///
    /// # Errors
    /// As [`Tenant::deploy`].
    pub async fn start(&self, name: &str) -> Result<TenantChange> {
        let id = self.id_of(name).await?;
        self.job("start", name, &id, "startVirtualMachine", &[("id", &id)])
            .await
    }

    /// Stops VM `name`.
    ///
    /// # Errors
    /// As [`Tenant::deploy`].
    pub async fn stop(&self, name: &str) -> Result<TenantChange> {
        let id = self.id_of(name).await?;
        self.job("stop", name, &id, "stopVirtualMachine", &[("id", &id)])
            .await
    }

    /// Destroys and expunges VM `name`.
    ///
    /// # Errors
    /// As [`Tenant::deploy`].
    pub async fn destroy(&self, name: &str) -> Result<TenantChange> {
        let id = self.id_of(name).await?;
        self.job(
            "destroy",
            name,
            &id,
            "destroyVirtualMachine",
            &[("id", &id), ("expunge", "true")],
        )
        .await
    }

    /// The changes this tenant (and its clones) made so far, in order.
    pub fn changes(&self) -> Vec<TenantChange> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How a [`TenantActor`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantOptions {
    /// The pause between two changes.
    pub interval: Duration,
    /// Seed of the choices: the same seed makes the same choices on the same cloud.
    pub seed: u64,
    /// It deploys only while fewer user VMs exist.
    pub max_vms: usize,
    /// It touches only VMs it deployed itself (off: any user VM, the lab's own included).
    pub own_vms_only: bool,
}

impl Default for TenantOptions {
    /// A change every 300 ms, seed 7, at most 12 user VMs, on any user VM.
    fn default() -> Self {
        TenantOptions {
            interval: Duration::from_millis(300),
            seed: 7,
            max_vms: 12,
            own_vms_only: false,
        }
    }
}

/// A tenant that keeps changing the cloud while the API serves (see the module docs); it
/// stops, and its thread ends, when dropped. While no management server is Up it waits, as
/// users do.
#[derive(Debug)]
pub struct TenantActor {
    tenant: Tenant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TenantActor {
    pub(crate) fn start(tenant: Tenant, options: TenantOptions) -> Result<TenantActor> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (tenant, stop) = (tenant.clone(), stop.clone());
            std::thread::Builder::new()
                .name("lab-tenant".into())
                .spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(run(tenant, options, stop));
                })
                .map_err(|e| LabError::io("spawn the tenant actor", e))?
        };
        Ok(TenantActor {
            tenant,
            stop,
            thread: Some(thread),
        })
    }

    /// What it changed so far, in order.
    pub fn changes(&self) -> Vec<TenantChange> {
        self.tenant.changes()
    }

    /// Stops it and waits for the change in progress to end; returns its changes.
    pub fn stop(mut self) -> Vec<TenantChange> {
        self.halt();
        self.tenant.changes()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TenantActor {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn run(tenant: Tenant, options: TenantOptions, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut own: Vec<String> = Vec::new();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(options.interval).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(vms) = tenant.vms().await else {
            continue; // The API is down: users wait.
        };
        let mine = |name: &str| !options.own_vms_only || own.iter().any(|o| o == name);
        let pick = |rng: &mut StdRng, state: &str| {
            let c: Vec<&String> = vms
                .iter()
                .filter(|(_, name, s)| s == state && mine(name))
                .map(|(_, name, _)| name)
                .collect();
            (!c.is_empty()).then(|| c[rng.random_range(0..c.len())].clone())
        };
        let roll: u32 = rng.random_range(0..100);
        let result = if roll < 30 && vms.len() < options.max_vms {
            n += 1;
            let name = format!("tenant-{}-{n:03}", options.seed);
            own.push(name.clone());
            tenant.deploy(&name).await
        } else if roll < 55 {
            match pick(&mut rng, "Running") {
                Some(vm) => tenant.stop(&vm).await,
                None => continue,
            }
        } else if roll < 80 {
            match pick(&mut rng, "Stopped") {
                Some(vm) => tenant.start(&vm).await,
                None => continue,
            }
        } else {
            let c: Vec<String> = vms
                .iter()
                .filter(|(_, name, s)| (s == "Running" || s == "Stopped") && own.contains(name))
                .map(|(_, name, _)| name.clone())
                .collect();
            if c.is_empty() {
                continue;
            }
            let vm = c[rng.random_range(0..c.len())].clone();
            tenant.destroy(&vm).await
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "lab tenant change not made");
        }
    }
}
