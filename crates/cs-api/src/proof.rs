//! The VM → host proof with its causes: each difference between the inventory taken before an
//! upgrade and the one after is either explained — by what tenants did (a `VM.STOP`,
//! `VM.DESTROY`, `VM.MIGRATE` event for that VM), or by the maintenance the upgrade was told to
//! use (VMs leaving a host it evacuated) — and reported as information with the event, or it is
//! not, and it is a failure: a VM stopped or lost on a refreshed host, a VM that moved when
//! nothing moved it, a host that is not Up.

use serde::{Deserialize, Serialize};

use cs_core::{Finding, Severity};

use crate::inventory::{INVENTORY_CHECK_ID, InventoryDiff};
use crate::types::EventResponse;

/// One difference and what explains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributed {
    /// The VM's (or host's) name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// What changed (`stopped on kvm2`, `moved from kvm1 to kvm2`).
    pub change: String,
    /// What explains it (the event, or the policy), when something does.
    pub cause: Option<String>,
}

/// The proof: how many VMs kept their host and state, and every difference, explained or not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// VMs that ran before and run now on the same host.
    pub unchanged: usize,
    /// Differences something explains.
    pub explained: Vec<Attributed>,
    /// Differences nothing explains.
    pub unexplained: Vec<Attributed>,
}

/// What the upgrade itself did, for the proof to tell its effects from the rest.
#[derive(Debug, Clone, Default)]
pub struct UpgradeActions<'a> {
    /// The hosts whose agents the upgrade refreshed.
    pub refreshed_hosts: &'a [String],
    /// Whether it put them into maintenance first (then VMs leaving them were moved by it).
    pub maintenance: bool,
}

/// Whether `event` names VM `id` (its `resourceid`, or the id in its description, as
/// CloudStack's `Vm Id: <uuid>` texts have it) and is not an error. A `Scheduled` or `Started`
/// event counts: a VM caught half-way through what its owner asked (Stopping) is explained by
/// the asking.
fn names_vm(event: &EventResponse, id: &str) -> bool {
    let names = event.resourceid.as_deref() == Some(id)
        || event.description.as_deref().is_some_and(|d| d.contains(id));
    names && event.level.as_deref().is_none_or(|l| l != "ERROR")
}

fn explain(events: &[EventResponse], id: &str, kinds: &[&str]) -> Option<String> {
    events
        .iter()
        .rfind(|e| e.event_type.as_deref().is_some_and(|t| kinds.contains(&t)) && names_vm(e, id))
        .map(|e| {
            format!(
                "{} event at {}: {}",
                e.event_type.as_deref().unwrap_or("?"),
                e.created.as_deref().unwrap_or("?"),
                e.description.as_deref().unwrap_or("")
            )
        })
}

/// Attributes every difference of `diff` (see the module docs). `events` are those since the
/// inventory before was taken; `running_before` the number of VMs Running then.
pub fn attribute(
    diff: &InventoryDiff,
    events: &[EventResponse],
    actions: &UpgradeActions<'_>,
    running_before: usize,
) -> Proof {
    let mut p = Proof::default();
    let mut push = |a: Attributed| {
        if a.cause.is_some() {
            p.explained.push(a);
        } else {
            p.unexplained.push(a);
        }
    };
    let refreshed = |h: &str| actions.refreshed_hosts.iter().any(|r| r == h);
    for m in &diff.missing {
        push(Attributed {
            name: m.name.clone(),
            id: m.id.clone(),
            change: format!(
                "no longer listed (was {} on {})",
                m.before.as_deref().unwrap_or("?"),
                m.host.as_deref().unwrap_or("no host")
            ),
            cause: explain(events, &m.id, &["VM.DESTROY", "VM.EXPUNGE"]),
        });
    }
    for s in &diff.stopped {
        let host = s.host.as_deref().unwrap_or("no host");
        let cause = explain(events, &s.id, &["VM.STOP", "VM.DESTROY", "VM.MIGRATE"]);
        let change = if refreshed(host) {
            format!(
                "{} on {host}, a host whose agent the upgrade refreshed",
                s.after.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "{} (was Running on {host})",
                s.after.as_deref().unwrap_or("?")
            )
        };
        push(Attributed {
            name: s.name.clone(),
            id: s.id.clone(),
            change,
            cause,
        });
    }
    for m in &diff.moved {
        let by_policy = (actions.maintenance && refreshed(&m.from)).then(|| {
            format!(
                "maintenance of {} (the upgrade's agent-refresh policy)",
                m.from
            )
        });
        push(Attributed {
            name: m.name.clone(),
            id: m.id.clone(),
            change: format!("moved from {} to {}", m.from, m.to),
            cause: by_policy.or_else(|| explain(events, &m.id, &["VM.MIGRATE"])),
        });
    }
    for n in &diff.new {
        push(Attributed {
            name: n.name.clone(),
            id: n.id.clone(),
            change: format!("new ({})", n.after.as_deref().unwrap_or("?")),
            // A VM that appeared harms nothing; the event says who made it when there is one.
            cause: Some(
                explain(events, &n.id, &["VM.CREATE"])
                    .unwrap_or_else(|| "created since (no event seen)".into()),
            ),
        });
    }
    for h in &diff.hosts_not_up {
        push(Attributed {
            name: h.name.clone(),
            id: h.id.clone(),
            change: format!(
                "host {}, not Up",
                h.after.as_deref().unwrap_or("no longer listed")
            ),
            cause: None,
        });
    }
    let missing_running = diff
        .missing
        .iter()
        .filter(|m| m.before.as_deref() == Some("Running"))
        .count();
    p.unchanged =
        running_before.saturating_sub(diff.moved.len() + diff.stopped.len() + missing_running);
    p
}

impl Proof {
    /// Whether nothing is unexplained.
    pub fn is_verified(&self) -> bool {
        self.unexplained.is_empty()
    }

    /// `api.inventory.unchanged` findings: a failure per unexplained difference, information
    /// per explained one, and a pass with the count when nothing is unexplained.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .unexplained
            .iter()
            .map(|a| {
                Finding::new(
                    INVENTORY_CHECK_ID,
                    Severity::Fail,
                    &a.name,
                    format!(
                        "{} {}: nothing in CloudStack's events explains it",
                        a.name, a.change
                    ),
                )
                .with_remedy(
                    "check the VM on its hypervisor (virsh list) and in the management server log",
                )
            })
            .collect();
        out.extend(self.explained.iter().map(|a| {
            Finding::new(
                INVENTORY_CHECK_ID,
                Severity::Info,
                &a.name,
                format!(
                    "{} {}: {}",
                    a.name,
                    a.change,
                    a.cause.as_deref().unwrap_or_default()
                ),
            )
        }));
        if self.is_verified() {
            out.push(Finding::pass(
                INVENTORY_CHECK_ID,
                "inventory",
                format!("{} VM(s) on their hosts", self.unchanged),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{HostChange, VmChange, VmMove};

    fn event(kind: &str, vm: &str) -> EventResponse {
        serde_json::from_value(serde_json::json!({
            "id": "e", "type": kind, "state": "Completed", "level": "INFO",
            "description": format!("Successfully completed it. Vm Id: {vm}"),
            "created": "2026-12-07T10:00:00+0000"
        }))
        .unwrap()
    }

    fn change(id: &str, host: &str, after: Option<&str>) -> VmChange {
        VmChange {
            id: id.into(),
            name: format!("vm-{id}"),
            before: Some("Running".into()),
            after: after.map(str::to_string),
            host: Some(host.into()),
        }
    }

    #[test]
    fn tenants_changes_are_explained_by_their_events() {
        let diff = InventoryDiff {
            stopped: vec![change("a", "kvm1", Some("Stopped"))],
            missing: vec![change("b", "kvm2", None)],
            ..InventoryDiff::default()
        };
        let events = [event("VM.STOP", "a"), event("VM.DESTROY", "b")];
        let refreshed = ["kvm1".to_string(), "kvm2".to_string()];
        let actions = UpgradeActions {
            refreshed_hosts: &refreshed,
            maintenance: false,
        };
        let p = attribute(&diff, &events, &actions, 5);
        assert!(p.is_verified(), "{p:?}");
        assert_eq!(p.unchanged, 3);
        assert!(
            p.explained[1]
                .cause
                .as_deref()
                .unwrap()
                .starts_with("VM.STOP event at")
        );
        let f = p.findings();
        assert_eq!(f.last().unwrap().severity, Severity::Pass);
        assert_eq!(f.last().unwrap().message, "3 VM(s) on their hosts");
    }

    #[test]
    fn a_vm_stopped_on_a_refreshed_host_without_an_event_fails() {
        let diff = InventoryDiff {
            stopped: vec![change("a", "kvm1", Some("Stopped"))],
            ..InventoryDiff::default()
        };
        let refreshed = ["kvm1".to_string()];
        let actions = UpgradeActions {
            refreshed_hosts: &refreshed,
            maintenance: false,
        };
        // A failed stop, or a stop of another VM, explains nothing.
        let mut failed = event("VM.STOP", "a");
        failed.level = Some("ERROR".into());
        let p = attribute(&diff, &[failed, event("VM.STOP", "z")], &actions, 1);
        assert!(!p.is_verified());
        assert_eq!(
            p.unexplained[0].change,
            "Stopped on kvm1, a host whose agent the upgrade refreshed"
        );
        assert_eq!(p.findings()[0].severity, Severity::Fail);
    }

    #[test]
    fn moves_are_the_policys_only_under_maintenance() {
        let diff = InventoryDiff {
            moved: vec![VmMove {
                id: "a".into(),
                name: "vm-a".into(),
                from: "kvm1".into(),
                to: "kvm2".into(),
            }],
            hosts_not_up: vec![HostChange {
                id: "h".into(),
                name: "kvm3".into(),
                after: Some("Disconnected".into()),
            }],
            ..InventoryDiff::default()
        };
        let refreshed = ["kvm1".to_string()];
        let in_place = UpgradeActions {
            refreshed_hosts: &refreshed,
            maintenance: false,
        };
        let p = attribute(&diff, &[], &in_place, 2);
        assert_eq!(p.unexplained.len(), 2);
        let evacuated = UpgradeActions {
            refreshed_hosts: &refreshed,
            maintenance: true,
        };
        let p = attribute(&diff, &[], &evacuated, 2);
        assert_eq!(p.unexplained.len(), 1, "the host not Up stays a failure");
        assert!(
            p.explained[0]
                .cause
                .as_deref()
                .unwrap()
                .contains("maintenance of kvm1")
        );
    }
}
