//! The `template` step, first of a run with `[policy.system_template]`: the target's KVM system
//! VM template registered through the API the way the upgrade guide registers it
//! (`_sysvm_templates.rst`: name `systemvm-kvm-X.Y.Z`, description the same, QCOW2, OS type the
//! newest Debian, not extractable, no password, not public, not featured, not routing) in every
//! zone, and waited for until it is Ready in each zone that has KVM clusters ("Do not proceed
//! until this is successful"). The upgrade's own `SystemVmTemplateRegistration` then finds it
//! by name, makes it SYSTEM and points the system VMs and `router.template.kvm` at it.
//!
//! It changes nothing an upgrade's rollback must undo: the template is one more registered
//! template (the backups are taken after it, and hold it), harmless if the upgrade is abandoned
//! and used as it is by the next attempt. Its rollback therefore leaves it registered.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cs_api::TemplateResponse;
use cs_core::{ProgressUpdate, Step, StepError, StepState, Unit};
use cs_schema::Hypervisor;

use super::{UpgradeContext, step_err};
use crate::config::SystemTemplatePolicy;

#[derive(Debug)]
pub(super) struct Template;

/// Where the template stands in one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ZoneState {
    /// Downloaded and usable.
    Ready,
    /// Being downloaded or installed (the status CloudStack shows).
    Downloading(String),
    /// The download ended in an error (CloudStack's error text).
    Failed(String),
    /// Not on this zone's image store at all.
    Absent,
}

/// What the step's check found.
#[derive(Debug, Clone)]
struct TemplateFacts {
    /// The template's name.
    name: String,
    /// Whether a template of that name is registered.
    registered: bool,
    /// Each zone with KVM clusters, by name, and the template's state there.
    zones: Vec<(String, ZoneState)>,
}

/// Whether a `listTemplates` status is one of the steps of a download that goes on, as
/// `TemplateJoinDaoImpl.newTemplateResponse` builds them ("NN% Downloaded", "Installing
/// Template", a state name while the download is being set up); anything else on a template
/// that is not ready is the download's error text.
fn in_progress(status: &str) -> bool {
    status.is_empty()
        || status.ends_with("% Downloaded")
        || matches!(
            status,
            "Installing Template"
                | "Processing"
                | "Not Downloaded"
                | "Download Complete"
                | "Allocated"
                | "Creating"
                | "Ready"
                | "Active"
                | "Inactive"
        )
}

/// The template's state in a zone from its `listTemplates` entry there, if any.
fn zone_state(entry: Option<&TemplateResponse>) -> ZoneState {
    match entry {
        None => ZoneState::Absent,
        Some(t) if t.isready == Some(true) => ZoneState::Ready,
        Some(t) => {
            let status = t.status.clone().unwrap_or_default();
            if in_progress(&status) {
                ZoneState::Downloading(status)
            } else {
                ZoneState::Failed(status)
            }
        }
    }
}

/// `Done` when the template is Ready in every zone, `Pending` when it is not registered,
/// `Partial` (saying where it stands) otherwise.
fn decide(f: &TemplateFacts) -> StepState {
    if !f.registered {
        return StepState::Pending;
    }
    let ready = f
        .zones
        .iter()
        .filter(|(_, s)| *s == ZoneState::Ready)
        .count();
    if ready == f.zones.len() {
        return StepState::Done;
    }
    let waiting: Vec<String> = f
        .zones
        .iter()
        .filter_map(|(zone, s)| match s {
            ZoneState::Ready => None,
            ZoneState::Downloading(status) => Some(format!("{zone}: {status}")),
            ZoneState::Failed(status) => Some(format!("{zone}: failed: {status}")),
            ZoneState::Absent => Some(format!("{zone}: not on its image store")),
        })
        .collect();
    StepState::Partial(format!(
        "{} registered, Ready in {ready} of {} zone(s) ({})",
        f.name,
        f.zones.len(),
        waiting.join("; ")
    ))
}

impl Template {
    fn name(cx: &UpgradeContext) -> String {
        cs_schema::systemvm_template_name(&cx.record.target, Hypervisor::Kvm)
    }

    fn policy(cx: &UpgradeContext) -> Result<&SystemTemplatePolicy, StepError> {
        cx.config
            .policy
            .system_template
            .as_ref()
            .ok_or_else(|| StepError::new("`policy.system_template` is not set"))
    }

    async fn facts(cx: &UpgradeContext) -> Result<TemplateFacts, StepError> {
        let name = Self::name(cx);
        let query = [
            ("templatefilter", "all"),
            ("name", name.as_str()),
            ("hypervisor", "KVM"),
        ];
        let (clusters, listed) = tokio::try_join!(
            cx.client.list_clusters(&[("hypervisor", "KVM")]),
            cx.client.list_templates(&query),
        )
        .map_err(|e| step_err("list the KVM clusters and the system VM template", e))?;
        let listed: Vec<TemplateResponse> = listed
            .into_iter()
            .filter(|t| t.name.as_deref() == Some(name.as_str()))
            .collect();
        let mut zones: Vec<(String, String)> = clusters
            .iter()
            .filter(|c| {
                c.hypervisortype
                    .as_deref()
                    .is_none_or(|h| h.eq_ignore_ascii_case("KVM"))
            })
            .filter_map(|c| {
                let id = c.zoneid.clone()?;
                Some((id.clone(), c.zonename.clone().unwrap_or(id)))
            })
            .collect();
        zones.sort();
        zones.dedup();
        Ok(TemplateFacts {
            registered: !listed.is_empty(),
            zones: zones
                .into_iter()
                .map(|(id, zone)| {
                    // The best entry of the zone (one of several of that name is enough).
                    let entries: Vec<&TemplateResponse> = listed
                        .iter()
                        .filter(|t| t.zoneid.as_deref() == Some(id.as_str()))
                        .collect();
                    let state = entries
                        .iter()
                        .map(|t| zone_state(Some(t)))
                        .min_by_key(|s| match s {
                            ZoneState::Ready => 0,
                            ZoneState::Downloading(_) => 1,
                            ZoneState::Failed(_) => 2,
                            ZoneState::Absent => 3,
                        })
                        .unwrap_or(ZoneState::Absent);
                    (zone, state)
                })
                .collect(),
            name,
        })
    }

    /// The OS type to register with: the configured one, else the newest "Debian GNU/Linux N
    /// (64-bit)" the cloud lists, as the guide says.
    async fn os_type(
        cx: &UpgradeContext,
        policy: &SystemTemplatePolicy,
    ) -> Result<String, StepError> {
        let types = cx
            .client
            .list_os_types(&[("keyword", "Debian")])
            .await
            .map_err(|e| step_err("list the OS types", e))?;
        let chosen = match &policy.os_type {
            Some(wanted) => types
                .iter()
                .find(|t| t.description.as_deref() == Some(wanted.as_str())),
            None => types
                .iter()
                .filter_map(|t| {
                    let d = t.description.as_deref()?;
                    let n: u32 = d
                        .strip_prefix("Debian GNU/Linux ")?
                        .strip_suffix(" (64-bit)")?
                        .split('.')
                        .next()?
                        .parse()
                        .ok()?;
                    Some((n, t))
                })
                .max_by_key(|(n, _)| *n)
                .map(|(_, t)| t),
        };
        chosen.map(|t| t.id.clone()).ok_or_else(|| {
            StepError::new(match &policy.os_type {
                Some(wanted) => format!(
                    "the cloud has no OS type `{wanted}` (policy.system_template.os_type); it has: {}",
                    types
                        .iter()
                        .filter_map(|t| t.description.as_deref())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "the cloud lists no \"Debian GNU/Linux N (64-bit)\" OS type: set policy.system_template.os_type".into(),
            })
        })
    }

    async fn register(cx: &UpgradeContext, policy: &SystemTemplatePolicy) -> Result<(), StepError> {
        let name = Self::name(cx);
        let os_type = Self::os_type(cx, policy).await?;
        let mut params: Vec<(&str, &str)> = vec![
            ("name", &name),
            ("displaytext", &name),
            ("url", &policy.url),
            ("zoneids", "-1"),
            ("hypervisor", "KVM"),
            ("format", "QCOW2"),
            ("ostypeid", &os_type),
            ("isextractable", "false"),
            ("passwordenabled", "false"),
            ("ispublic", "false"),
            ("isfeatured", "false"),
            ("isrouting", "false"),
        ];
        if let Some(c) = &policy.checksum {
            params.push(("checksum", c));
        }
        cx.client
            .register_template(&params)
            .await
            .map_err(|e| step_err(&format!("register {name} from {}", policy.url), e))?;
        tracing::info!(template = %name, url = %policy.url, "registered the system VM template");
        Ok(())
    }
}

#[async_trait]
impl Step<UpgradeContext> for Template {
    fn id(&self) -> &str {
        "template"
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        // Once a package or the schema has moved on, the template's moment has passed (the
        // migration has made it SYSTEM, which not every listing shows).
        if cx.passed(&cx.record.from).await? {
            return Ok(StepState::Done);
        }
        Ok(decide(&Self::facts(cx).await?))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        let policy = Self::policy(cx)?;
        if !Self::facts(cx).await?.registered {
            Self::register(cx, policy).await?;
        }
        let start = Instant::now();
        loop {
            let facts = Self::facts(cx).await?;
            let ready = facts
                .zones
                .iter()
                .filter(|(_, s)| *s == ZoneState::Ready)
                .count();
            let state = decide(&facts);
            let detail = match &state {
                StepState::Partial(why) => why.clone(),
                _ => format!("{} Ready in every zone", facts.name),
            };
            cx.progress.update(
                ProgressUpdate::new(
                    "system VM template download",
                    ready as u64,
                    Some(facts.zones.len() as u64),
                    Unit::Items,
                )
                .message(detail.clone()),
            );
            if state == StepState::Done {
                return Ok(());
            }
            let failed: Vec<String> = facts
                .zones
                .iter()
                .filter_map(|(zone, s)| match s {
                    ZoneState::Failed(e) => Some(format!("{zone}: {e}")),
                    _ => None,
                })
                .collect();
            if !failed.is_empty() {
                return Err(StepError::new(format!(
                    "the download of {} failed ({}); delete the template (deleteTemplate) or fix the secondary storage VM of that zone, then run again",
                    facts.name,
                    failed.join("; ")
                )));
            }
            if start.elapsed() >= policy.deadline {
                return Err(StepError::new(format!(
                    "{detail} after {} (policy.system_template.deadline)",
                    humantime::format_duration(policy.deadline)
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn rollback(&self, _cx: &UpgradeContext) -> Result<(), StepError> {
        // The template stays registered (see the module docs).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cs_core::StepState;

    use super::{TemplateFacts, ZoneState, decide, zone_state};

    fn entry(isready: bool, status: &str) -> cs_api::TemplateResponse {
        let mut t = cs_api::TemplateResponse::default();
        t.isready = Some(isready);
        t.status = Some(status.into());
        t
    }

    #[track_caller]
    fn check(registered: bool, zones: &[ZoneState], expected: StepState) {
        let f = TemplateFacts {
            name: "systemvm-kvm-4.19.0".into(),
            registered,
            zones: zones
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("z{}", i + 1), s.clone()))
                .collect(),
        };
        assert_eq!(decide(&f), expected);
    }

    #[test]
    fn not_registered_is_pending() {
        check(false, &[ZoneState::Absent], StepState::Pending);
    }

    #[test]
    fn ready_in_every_zone_is_done() {
        check(true, &[ZoneState::Ready, ZoneState::Ready], StepState::Done);
    }

    #[test]
    fn anything_less_says_where_it_stands() {
        check(
            true,
            &[
                ZoneState::Ready,
                ZoneState::Downloading("52% Downloaded".into()),
                ZoneState::Failed("Connection refused".into()),
                ZoneState::Absent,
            ],
            StepState::Partial(
                "systemvm-kvm-4.19.0 registered, Ready in 1 of 4 zone(s) (z2: 52% Downloaded; \
                 z3: failed: Connection refused; z4: not on its image store)"
                    .into(),
            ),
        );
    }

    #[test]
    fn statuses_are_read_as_cloudstack_writes_them() {
        assert_eq!(zone_state(None), ZoneState::Absent);
        assert_eq!(
            zone_state(Some(&entry(true, "Download Complete"))),
            ZoneState::Ready
        );
        for s in ["52% Downloaded", "Installing Template", "", "Creating"] {
            assert_eq!(
                zone_state(Some(&entry(false, s))),
                ZoneState::Downloading(s.into()),
                "{s}"
            );
        }
        assert_eq!(
            zone_state(Some(&entry(false, "Failed to download: 404 Not Found"))),
            ZoneState::Failed("Failed to download: 404 Not Found".into())
        );
    }
}
