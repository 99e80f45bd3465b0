//! Stepping stones: upgrade through LTS lines instead of one long jump.

use cs_core::CsVersion;
use serde::Serialize;

use crate::graph::{PathStep, plan_path};
use crate::release::{ReleaseLine, release_facts, release_line, release_lines};
use crate::{Error, Result};

/// At most this many release lines per hop: the upgrade guides of a release document
/// upgrades from the last couple of lines.
pub const MAX_LINES_PER_HOP: usize = 2;

/// One hop of an upgrade plan: install `to`'s packages, let the schema migrate, check, go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The version before the hop.
    pub from: CsVersion,
    /// The version after it.
    pub to: CsVersion,
    /// The schema steps the management server of `to` runs.
    pub steps: Vec<PathStep>,
    /// The release line of `to` (LTS, Java, databases, templates).
    pub release: ReleaseLine,
    /// The name of the hierarchy the steps come from.
    pub hierarchy: String,
    /// Whether this hop changes the Java major (from the line of `from`).
    pub java_change: bool,
    /// Whether every step and fact of the hop is verified.
    pub verified: bool,
}

/// The hops from `from` to `to`: each hop ends on an LTS line at most
/// [`MAX_LINES_PER_HOP`] lines ahead (at that line's newest known release), a change of Java
/// major ends a hop at the first line that needs the new Java, and the last hop ends at `to`.
/// Empty when the versions are equal. A target of a line the facts lack gets that line's
/// facts carried over from the nearest known line ([`release_facts`]), marked unverified.
///
/// ```
/// let hops = cs_schema::plan_hops(&"4.15.0.0".parse()?, &"4.18.0.0".parse()?)?;
/// let stones: Vec<String> = hops.iter().map(|h| h.to.to_string()).collect();
/// assert_eq!(stones, ["4.17.2.0", "4.18.0.0"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::DatabaseNewer`] when `from > to`.
pub fn plan_hops(from: &CsVersion, to: &CsVersion) -> Result<Vec<Hop>> {
    if from > to {
        return Err(Error::DatabaseNewer {
            db: *from,
            target: *to,
        });
    }
    let mut lines: Vec<ReleaseLine> = release_lines().to_vec();
    if release_line(to).is_none() {
        let facts = release_facts(to);
        let at = lines.partition_point(|l| l.key() < facts.key());
        lines.insert(at, facts);
    }
    let index = |v: &CsVersion| -> Option<usize> {
        lines.iter().position(|l| l.key() == (v.major(), v.minor()))
    };
    let to_idx = index(to).expect("the target's line was inserted above");
    // A from-version older than every known line starts before the first one.
    let from_idx = index(from);
    let mut hops = Vec::new();
    let mut cur = *from;
    let mut cur_idx: Option<usize> = from_idx.or_else(|| {
        lines
            .iter()
            .rposition(|l| l.key() < (from.major(), from.minor()))
    });
    while cur < *to {
        let next_idx = match cur_idx {
            Some(c) if c >= to_idx => to_idx,
            _ => {
                let start = cur_idx.map_or(0, |c| c + 1);
                let cur_java = cur_idx.map(|c| lines[c].java);
                let mut chosen = None;
                for (i, line) in lines
                    .iter()
                    .enumerate()
                    .take(to_idx + 1)
                    .skip(start)
                    .take(MAX_LINES_PER_HOP)
                {
                    if let Some(j) = cur_java
                        && line.java != j
                    {
                        // The first line of a new Java major ends the hop.
                        chosen = Some(i);
                        break;
                    }
                    if i == to_idx || line.is_lts() {
                        chosen = Some(i);
                    }
                    if i == to_idx {
                        break;
                    }
                }
                chosen.unwrap_or(start.min(to_idx))
            }
        };
        let release = &lines[next_idx];
        let hop_to = if next_idx == to_idx {
            *to
        } else {
            release.latest
        };
        let plan = plan_path(&cur, &hop_to)?;
        let java_change = match release_line(&cur) {
            Some(l) => l.java != release.java,
            None => false,
        };
        let verified = release.verified && plan.is_verified();
        hops.push(Hop {
            from: cur,
            to: hop_to,
            steps: plan.steps,
            release: release.clone(),
            hierarchy: plan.hierarchy,
            java_change,
            verified,
        });
        cur = hop_to;
        cur_idx = Some(next_idx);
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(from: &str, to: &str, stones: &[&str]) {
        let hops = plan_hops(&from.parse().unwrap(), &to.parse().unwrap()).unwrap();
        let got: Vec<String> = hops.iter().map(|h| h.to.to_string()).collect();
        assert_eq!(got, stones, "{from} -> {to}");
        for w in hops.windows(2) {
            assert_eq!(w[0].to, w[1].from);
        }
    }

    #[test]
    fn hops_follow_lts_lines_and_java_changes() {
        check("4.15.0.0", "4.18.0.0", &["4.17.2.0", "4.18.0.0"]);
        check("4.18.1.3", "4.22.0.0", &["4.20.3.0", "4.22.0.0"]);
        check("4.18.0.0", "4.19.0.0", &["4.19.0.0"]);
        check(
            "4.11.3.0",
            "4.22.0.0",
            &[
                "4.13.1.0", "4.14.1.0", "4.16.1.0", "4.18.2.5", "4.20.3.0", "4.22.0.0",
            ],
        );
        check("4.20.1.0", "4.20.1.0", &[]);
        check("4.22.0.0", "24.0.0", &["24.0.0"]);
    }

    #[test]
    fn a_hop_carries_its_facts() {
        let hops = plan_hops(&"4.18.1.3".parse().unwrap(), &"4.22.0.0".parse().unwrap()).unwrap();
        assert!(hops[0].java_change);
        assert_eq!(hops[0].release.java, 17);
        assert_eq!(hops[0].release.mariadb_min.as_deref(), Some("10.6"));
        assert!(
            !hops[0].verified,
            "4.20.3.0 uses the unverified 4.20 branch"
        );
        assert_eq!(hops[1].steps[0].class, "Upgrade42010to42100");
        assert!(!hops[1].java_change);
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(matches!(
            plan_hops(&"4.22.0.0".parse().unwrap(), &"4.18.0.0".parse().unwrap()),
            Err(Error::DatabaseNewer { .. })
        ));
    }

    #[test]
    fn targets_beyond_the_facts_are_planned_and_marked_unverified() {
        let hops = plan_hops(&"4.18.0.0".parse().unwrap(), &"4.19.9.9".parse().unwrap()).unwrap();
        let last = hops.last().unwrap();
        assert_eq!(last.to.to_string(), "4.19.9.9");
        assert!(last.steps.last().unwrap().noop && !last.verified);
        let hops = plan_hops(&"4.22.0.0".parse().unwrap(), &"4.25.1.0".parse().unwrap()).unwrap();
        let last = hops.last().unwrap();
        assert_eq!(last.release.line, "4.25");
        assert!(!last.release.verified && !last.verified);
        // An older line the facts lack, as a target.
        let hops = plan_hops(&"4.2.0".parse().unwrap(), &"4.3.0".parse().unwrap()).unwrap();
        assert_eq!(hops.last().unwrap().to.to_string(), "4.3.0");
    }
}
