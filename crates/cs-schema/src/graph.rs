//! CloudStack's schema-upgrade hierarchy and the path it computes, as
//! `DatabaseVersionHierarchy.getPath` and `DatabaseUpgradeChecker.calculateUpgradePath` do.
//!
//! The data is `data/upgrade-graph.json`, a copy of the project's facts file read from
//! apache/cloudstack at commit `3d6cafe1936ed2403a1031cd5ad42dd205934412` (main, 2025-10-30,
//! 4.22.0.0-SNAPSHOT), embedded at compile time.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use cs_core::CsVersion;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The apache/cloudstack commit the verified hierarchy was read at.
pub const SNAPSHOT_COMMIT: &str = "3d6cafe1936ed2403a1031cd5ad42dd205934412";

const GRAPH_JSON: &str = include_str!("../data/upgrade-graph.json");

/// Where a fact comes from, and so how far to trust it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Provenance {
    /// Read from `DatabaseUpgradeChecker` at [`SNAPSHOT_COMMIT`]: verified.
    Snapshot,
    /// The step class was read at another commit of apache/cloudstack; where it sits in a
    /// hierarchy was not verified.
    OtherCommit {
        /// The commit the class was read at.
        commit: String,
    },
    /// Inferred (from a class name, a test expectation or the release notes); not read.
    Inferred {
        /// What it was inferred from.
        from: String,
    },
}

impl Provenance {
    /// Whether the fact was read from the verified snapshot.
    pub fn is_verified(&self) -> bool {
        matches!(self, Provenance::Snapshot)
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Snapshot => write!(
                f,
                "DatabaseUpgradeChecker at apache/cloudstack {} (verified)",
                &SNAPSHOT_COMMIT[..12]
            ),
            Provenance::OtherCommit { commit } => {
                write!(f, "read at apache/cloudstack {commit} (unverified)")
            }
            Provenance::Inferred { from } => write!(f, "inferred from {from} (unverified)"),
        }
    }
}

/// One upgrade class (`Upgrade41810to41900`): what it upgrades to and which SQL it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepClass {
    /// The Java class name.
    pub class: String,
    /// `getUpgradableVersionRange()`, when known.
    pub range: Option<[CsVersion; 2]>,
    /// `getUpgradedVersion()`: the version row the step writes.
    pub upgraded: CsVersion,
    /// Prepare scripts under `META-INF/db/`.
    pub prepare_sql: Vec<String>,
    /// Cleanup scripts under `META-INF/db/`.
    pub cleanup_sql: Vec<String>,
    /// Whether `performDataMigration` does work in Java.
    pub java_data_migration: bool,
    /// Whether the class implements `DbUpgradeSystemVmTemplate`.
    pub registers_systemvm_template: bool,
    /// Where this fact comes from.
    pub provenance: Provenance,
}

/// One node of a hierarchy: a database at `version` runs `step`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node version (`DatabaseVersionHierarchyBuilder.next(version, …)`).
    pub version: CsVersion,
    /// The step that runs from it.
    pub step: Arc<StepClass>,
    /// Where the wiring of this node comes from.
    pub provenance: Provenance,
}

/// One step of a computed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathStep {
    /// The class (`Upgrade41810to41900`, or `NoopDbUpgrade` for the tail).
    pub class: String,
    /// The node the step runs from (for a Noop tail: the previous step's end).
    pub from: CsVersion,
    /// The version row the step writes.
    pub to: CsVersion,
    /// Whether this is the `NoopDbUpgrade` tail (no SQL, only a version row).
    pub noop: bool,
    /// Prepare scripts.
    pub prepare_sql: Vec<String>,
    /// Cleanup scripts.
    pub cleanup_sql: Vec<String>,
    /// Whether the class can register system VM templates.
    pub registers_systemvm_template: bool,
    /// Whether the class's `performDataMigration` does work in Java (which a replay of the
    /// SQL alone does not reproduce).
    pub java_data_migration: bool,
    /// Whether class and wiring were read from the verified snapshot.
    pub verified: bool,
    /// Where the node and its class come from (the verified snapshot, a commit of a release
    /// branch, an inference), so that every step of a path names its source.
    pub source: String,
}

impl PathStep {
    fn noop(from: CsVersion, to: CsVersion) -> Self {
        PathStep {
            class: "NoopDbUpgrade".to_string(),
            from,
            to,
            noop: true,
            prepare_sql: Vec::new(),
            cleanup_sql: Vec::new(),
            registers_systemvm_template: false,
            java_data_migration: false,
            verified: true,
            source: "the NoopDbUpgrade tail of DatabaseUpgradeChecker.calculateUpgradePath"
                .to_string(),
        }
    }

    fn of_node(n: &Node) -> Self {
        let source = if n.provenance == n.step.provenance {
            n.provenance.to_string()
        } else {
            format!("node: {}; class: {}", n.provenance, n.step.provenance)
        };
        PathStep {
            class: n.step.class.clone(),
            from: n.version,
            to: n.step.upgraded,
            noop: false,
            prepare_sql: n.step.prepare_sql.clone(),
            cleanup_sql: n.step.cleanup_sql.clone(),
            registers_systemvm_template: n.step.registers_systemvm_template,
            java_data_migration: n.step.java_data_migration,
            verified: n.provenance.is_verified() && n.step.provenance.is_verified(),
            source,
        }
    }
}

impl fmt::Display for PathStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} -> {})", self.class, self.from, self.to)
    }
}

/// An ordered list of (node version → step) pairs, as `DatabaseVersionHierarchy` holds it.
///
/// ```
/// use cs_schema::Hierarchy;
/// let h = Hierarchy::snapshot();
/// let steps = h.path(&"4.20.2.0".parse()?, &"4.22.0.0".parse()?)?;
/// let classes: Vec<&str> = steps.iter().map(|s| s.class.as_str()).collect();
/// assert_eq!(classes, ["Upgrade42010to42100", "Upgrade42100to42200"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Hierarchy {
    name: String,
    note: String,
    nodes: Vec<Node>,
}

impl Hierarchy {
    /// Builds a hierarchy from nodes in declaration order.
    pub fn new(name: impl Into<String>, note: impl Into<String>, nodes: Vec<Node>) -> Self {
        Hierarchy {
            name: name.into(),
            note: note.into(),
            nodes,
        }
    }

    /// The hierarchy of apache/cloudstack main at [`SNAPSHOT_COMMIT`] (newest step
    /// 4.21.0.0 → 4.22.0.0): every node verified.
    pub fn snapshot() -> &'static Hierarchy {
        &facts().snapshot
    }

    /// Every hierarchy this crate knows: the verified snapshot first, then the release-branch
    /// and post-snapshot hierarchies assembled from unverified facts.
    pub fn all() -> &'static [Hierarchy] {
        &facts().all
    }

    /// The hierarchy the management server of `target` carries. Targets the snapshot covers
    /// use it; targets on a branch with later patch releases (4.18.2+, 4.19.2+, 4.20.2+,
    /// 4.22.1+) and targets from 4.23 on use hierarchies whose wiring is not verified
    /// ([`Hierarchy::is_verified`] says so).
    pub fn for_target(target: &CsVersion) -> &'static Hierarchy {
        let f = facts();
        let v = |s: &str| CsVersion::parse(s).expect("static version");
        let pick = |name: &str| {
            f.all
                .iter()
                .find(|h| h.name == name)
                .expect("known hierarchy")
        };
        if *target >= v("4.23.0.0") {
            pick("main-after-snapshot")
        } else if *target >= v("4.22.1.0") {
            pick("4.22-branch")
        } else if *target >= v("4.20.2.0") && *target < v("4.21.0.0") {
            pick("4.20-branch")
        } else if *target >= v("4.19.2.0") && *target < v("4.20.0.0") {
            pick("4.19-branch")
        } else if *target >= v("4.18.2.0") && *target < v("4.19.0.0") {
            pick("4.18-branch")
        } else {
            &f.snapshot
        }
    }

    /// A short name (`main@3d6cafe`, `4.20-branch`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the hierarchy comes from and what is unverified about it.
    pub fn note(&self) -> &str {
        &self.note
    }

    /// The nodes in declaration order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Whether every node and class was read from the verified snapshot.
    pub fn is_verified(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.provenance.is_verified() && n.step.provenance.is_verified())
    }

    /// The upgraded version of the last node (`getLatestVersion`).
    pub fn latest(&self) -> Option<CsVersion> {
        self.nodes.last().map(|n| n.step.upgraded)
    }

    /// Whether `version` is a node, compared as Java's `List.contains` does (with
    /// `CloudStackVersion.equals`: `4.2.0` is not `4.2.0.0`).
    pub fn contains(&self, version: &CsVersion) -> bool {
        self.nodes.iter().any(|n| n.version.is_identical(version))
    }

    /// `getRecentVersion`: the last declared node strictly below `version`.
    pub fn recent_version(&self, version: &CsVersion) -> Option<CsVersion> {
        self.nodes
            .iter()
            .rev()
            .map(|n| n.version)
            .find(|n| version > n)
    }

    /// `getPath(from, to)`: the nodes whose steps run, in declaration order. Empty when `from`
    /// is at or above [`Hierarchy::latest`]; an unregistered `from` starts at
    /// [`Hierarchy::recent_version`] (so that node's step runs again); otherwise every node
    /// with `from <= node < to`, skipping a node whose upgraded version was already taken.
    pub fn get_path(&self, from: &CsVersion, to: &CsVersion) -> Vec<&Node> {
        let mut from = *from;
        loop {
            match self.latest() {
                Some(latest) if from < latest => {}
                _ => return Vec::new(),
            }
            if self.contains(&from) {
                break;
            }
            match self.recent_version(&from) {
                Some(r) => from = r,
                None => return Vec::new(),
            }
        }
        let mut seen = HashSet::new();
        self.nodes
            .iter()
            .filter(|n| n.version >= from && n.version < *to)
            .filter(|n| seen.insert(n.step.upgraded.to_string()))
            .collect()
    }

    /// `calculateUpgradePath(db, code)` plus the checks around it: the steps a management
    /// server carrying this hierarchy at version `code` runs on a database at `db`, with a
    /// `NoopDbUpgrade` tail when the last step does not end at `code`. Empty when the versions
    /// compare equal.
    ///
    /// # Errors
    /// [`Error::DatabaseNewer`] when `db > code`.
    pub fn path(&self, db: &CsVersion, code: &CsVersion) -> Result<Vec<PathStep>> {
        if db > code {
            return Err(Error::DatabaseNewer {
                db: *db,
                target: *code,
            });
        }
        if db == code {
            return Ok(Vec::new());
        }
        let mut steps: Vec<PathStep> = self
            .get_path(db, code)
            .into_iter()
            .map(PathStep::of_node)
            .collect();
        let tail = steps.last().map(|s| s.to).unwrap_or(*db);
        if tail != *code {
            steps.push(PathStep::noop(tail, *code));
        }
        Ok(steps)
    }
}

/// A computed path with what it rests on: the hierarchy used, whether the tool's data knows the
/// target, and which parts are unverified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathPlan {
    /// The database's version.
    pub db: CsVersion,
    /// The target release.
    pub target: CsVersion,
    /// The name of the hierarchy the steps come from (`main@3d6cafe`, `4.19-branch`, or one of
    /// them cut at the target for a version newer than the tool's data).
    pub hierarchy: String,
    /// Where that hierarchy comes from.
    pub hierarchy_note: String,
    /// Whether the target is a release or schema version the embedded facts know.
    pub target_known: bool,
    /// The steps, in order (empty when the versions are equal).
    pub steps: Vec<PathStep>,
    /// One line per unverified part: what was computed rather than read, and from what.
    pub unverified: Vec<String>,
}

impl PathPlan {
    /// Whether every step and the hierarchy were read from the verified snapshot.
    pub fn is_verified(&self) -> bool {
        self.unverified.is_empty()
    }
}

/// The path the management server of `target` runs on a database at `db`, for any version
/// `CloudStackVersion.parse` accepts, with the hierarchy of `target`'s release
/// ([`Hierarchy::for_target`]).
///
/// A target the embedded facts do not know (a security release newer than the data such as
/// `4.19.0.5`, a release of a line the data lacks) is not refused: CloudStack computes a path
/// for it too (`DatabaseUpgradeChecker.calculateUpgradePath` ends with a `NoopDbUpgrade` tail
/// to any code version its hierarchy does not reach). The path is computed from the newest
/// hierarchy known for the target's line, without the nodes whose step would write a version
/// above the target (a release's own hierarchy never upgrades past the release), and every
/// part that rests on that guess is listed in [`PathPlan::unverified`].
///
/// ```
/// let plan = cs_schema::plan_path(&"4.18.0.0".parse()?, &"4.19.9.9".parse()?)?;
/// let tail = plan.steps.last().unwrap();
/// assert!(tail.noop && !tail.verified);
/// assert_eq!(tail.to.to_string(), "4.19.9.9");
/// assert!(!plan.target_known && !plan.is_verified());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::DatabaseNewer`] when `db > target`.
pub fn plan_path(db: &CsVersion, target: &CsVersion) -> Result<PathPlan> {
    let base = Hierarchy::for_target(target);
    let target_known = is_known(target);
    let mut unverified = Vec::new();
    let cut;
    let h = if target_known {
        base
    } else {
        let nodes: Vec<Node> = base
            .nodes
            .iter()
            .filter(|n| n.step.upgraded <= *target)
            .cloned()
            .collect();
        let dropped = base.nodes.len() - nodes.len();
        cut = Hierarchy::new(
            if dropped == 0 {
                base.name.clone()
            } else {
                format!("{} cut at {target}", base.name)
            },
            base.note.clone(),
            nodes,
        );
        // The newest known version of the target's line, or the newest of all.
        let known = known_versions();
        let newest = known
            .iter()
            .rev()
            .find(|k| k.line() == target.line())
            .or(known.last())
            .copied();
        unverified.push(format!(
            "{target} is not a release or schema version in the tool's data (newest known: {}): \
             the path is computed from hierarchy {}{}, the newest the tool has for it; \
             the target's own hierarchy may add steps",
            newest.map_or_else(|| "none".to_string(), |v| v.to_string()),
            base.name,
            if dropped == 0 {
                String::new()
            } else {
                format!(" without the {dropped} node(s) whose step writes a version above {target}")
            }
        ));
        &cut
    };
    let mut steps = h.path(db, target)?;
    if !target_known && let Some(tail) = steps.last_mut().filter(|s| s.noop) {
        tail.verified = false;
        tail.source = format!(
            "the NoopDbUpgrade tail of DatabaseUpgradeChecker.calculateUpgradePath, computed for {target}, \
             which the tool's data does not know (unverified)"
        );
        unverified.push(format!(
            "{tail}: computed; CloudStack writes a version row for a code version its hierarchy does not reach"
        ));
    }
    for s in steps.iter().filter(|s| !s.verified && !s.noop) {
        unverified.push(format!("{s}: {}", s.source));
    }
    Ok(PathPlan {
        db: *db,
        target: *target,
        hierarchy: h.name.clone(),
        hierarchy_note: h.note.clone(),
        target_known,
        steps,
        unverified,
    })
}

/// The steps of [`plan_path`]: what the management server of `target` runs on a database at
/// `db`. Empty when they are equal.
///
/// ```
/// let steps = cs_schema::path(&"4.18.1.3".parse()?, &"4.22.0.0".parse()?)?;
/// assert_eq!(steps[0].class, "Upgrade41810to41900"); // 4.18.1.3 is no node: 4.18.1.0 re-runs
/// assert_eq!(steps.len(), 6);
/// // A security release newer than the data ends with a Noop tail.
/// let steps = cs_schema::path(&"4.18.0.0".parse()?, &"4.19.0.5".parse()?)?;
/// assert_eq!(steps.last().unwrap().class, "NoopDbUpgrade");
/// assert!(cs_schema::path(&"4.22.0.0".parse()?, &"4.20.0.0".parse()?).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::DatabaseNewer`] when `db > target`.
pub fn path(db: &CsVersion, target: &CsVersion) -> Result<Vec<PathStep>> {
    plan_path(db, target).map(|p| p.steps)
}

/// Every version this crate knows as a release or a schema version, sorted.
pub fn known_versions() -> &'static [CsVersion] {
    &facts().known
}

/// Whether `v` is a known version ([`known_versions`]).
pub fn is_known(v: &CsVersion) -> bool {
    known_versions().binary_search(v).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Loading the embedded facts.

pub(crate) struct Facts {
    snapshot: Hierarchy,
    all: Vec<Hierarchy>,
    known: Vec<CsVersion>,
    pub(crate) raw: RawGraph,
}

#[derive(Deserialize)]
pub(crate) struct RawGraph {
    edges: Vec<RawEdge>,
    classes_present_but_not_in_hierarchy_at_snapshot: Vec<RawClass>,
    supplementary_edges_other_commits: RawSupplementary,
    pub(crate) release_lines: RawReleaseLines,
}

#[derive(Deserialize)]
struct RawEdge {
    from: String,
    to: String,
    step_class: String,
    declared_range: [String; 2],
    prepare_sql: Vec<String>,
    cleanup_sql: Vec<String>,
    java_data_migration: bool,
    registers_systemvm_template: bool,
}

#[derive(Deserialize)]
struct RawClass {
    class: String,
    declared_range: [String; 2],
    to: String,
    prepare_sql: Vec<String>,
    cleanup_sql: Vec<String>,
}

#[derive(Deserialize)]
struct RawSupplementary {
    edges: Vec<RawSuppEdge>,
}

#[derive(Deserialize)]
struct RawSuppEdge {
    step_class: String,
    from: String,
    to: String,
    commit: String,
    #[serde(default)]
    prepare_sql: Vec<String>,
    #[serde(default)]
    cleanup_sql: Vec<String>,
    #[serde(default)]
    java_data_migration: bool,
    #[serde(default)]
    registers_systemvm_template: bool,
    #[serde(default)]
    range_inferred: bool,
}

#[derive(Deserialize)]
pub(crate) struct RawReleaseLines {
    pub(crate) lines: Vec<RawLine>,
    pub(crate) documented_release_versions: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawLine {
    pub(crate) line: String,
    pub(crate) lts: serde_json::Value,
    pub(crate) java: u32,
    #[serde(default)]
    pub(crate) mysql: Option<String>,
}

fn ver(s: &str) -> CsVersion {
    CsVersion::parse(s).unwrap_or_else(|e| panic!("embedded upgrade graph: {e}"))
}

pub(crate) fn facts() -> &'static Facts {
    static FACTS: OnceLock<Facts> = OnceLock::new();
    FACTS.get_or_init(|| {
        let raw: RawGraph =
            serde_json::from_str(GRAPH_JSON).expect("embedded upgrade-graph.json parses");
        build(raw)
    })
}

fn build(raw: RawGraph) -> Facts {
    // Verified snapshot: one node per edge, in declaration order; nodes sharing a class share
    // one `StepClass`.
    let mut classes: Vec<Arc<StepClass>> = Vec::new();
    let mut class_of = |c: StepClass| -> Arc<StepClass> {
        if let Some(found) = classes.iter().find(|k| k.class == c.class) {
            return found.clone();
        }
        let a = Arc::new(c);
        classes.push(a.clone());
        a
    };
    let mut snapshot_nodes = Vec::new();
    for e in &raw.edges {
        let step = class_of(StepClass {
            class: e.step_class.clone(),
            range: Some([ver(&e.declared_range[0]), ver(&e.declared_range[1])]),
            upgraded: ver(&e.to),
            prepare_sql: e.prepare_sql.clone(),
            cleanup_sql: e.cleanup_sql.clone(),
            java_data_migration: e.java_data_migration,
            registers_systemvm_template: e.registers_systemvm_template,
            provenance: Provenance::Snapshot,
        });
        snapshot_nodes.push(Node {
            version: ver(&e.from),
            step,
            provenance: Provenance::Snapshot,
        });
    }
    let snapshot = Hierarchy::new(
        format!("main@{}", &SNAPSHOT_COMMIT[..7]),
        format!(
            "apache/cloudstack main at {SNAPSHOT_COMMIT} (4.22.0.0-SNAPSHOT): DatabaseUpgradeChecker, verified"
        ),
        snapshot_nodes.clone(),
    );

    // Unverified classes: present at the snapshot but not wired, and from other commits.
    let mut extra: Vec<Arc<StepClass>> = Vec::new();
    for c in &raw.classes_present_but_not_in_hierarchy_at_snapshot {
        extra.push(Arc::new(StepClass {
            class: c.class.clone(),
            range: Some([ver(&c.declared_range[0]), ver(&c.declared_range[1])]),
            upgraded: ver(&c.to),
            prepare_sql: c.prepare_sql.clone(),
            cleanup_sql: c.cleanup_sql.clone(),
            java_data_migration: false,
            registers_systemvm_template: false,
            provenance: Provenance::OtherCommit {
                commit: format!("{SNAPSHOT_COMMIT} (present, not wired)"),
            },
        }));
    }
    for e in &raw.supplementary_edges_other_commits.edges {
        extra.push(Arc::new(StepClass {
            class: e.step_class.clone(),
            range: (!e.range_inferred).then(|| [ver(&e.from), ver(&e.to)]),
            upgraded: ver(&e.to),
            prepare_sql: e.prepare_sql.clone(),
            cleanup_sql: e.cleanup_sql.clone(),
            java_data_migration: e.java_data_migration,
            registers_systemvm_template: e.registers_systemvm_template,
            provenance: if e.range_inferred {
                Provenance::Inferred {
                    from: format!("class name (seen at {})", e.commit),
                }
            } else {
                Provenance::OtherCommit {
                    commit: e.commit.clone(),
                }
            },
        }));
    }
    // 4.23.0.0 -> 24.0.0: the class CloudStack's DatabaseUpgradeCheckerTest names
    // (Upgrade42300to2400, range {"4.23.0.0", "24.0.0"}); the facts saw it earlier as
    // Upgrade42300to42400. Script names follow the default naming rule.
    extra.push(Arc::new(StepClass {
        class: "Upgrade42300to2400".into(),
        range: Some([ver("4.23.0.0"), ver("24.0.0")]),
        upgraded: ver("24.0.0"),
        prepare_sql: vec!["schema-42300to2400.sql".into()],
        cleanup_sql: vec!["schema-42300to2400-cleanup.sql".into()],
        java_data_migration: false,
        registers_systemvm_template: true,
        provenance: Provenance::Inferred {
            from: "DatabaseUpgradeCheckerTest at 018744670b2b (testCalculateUpgradePath42300to2400); apache/cloudstack #14033".into(),
        },
    }));
    let by_name = |name: &str| -> Arc<StepClass> {
        extra
            .iter()
            .chain(classes.iter())
            .find(|c| c.class == name)
            .cloned()
            .unwrap_or_else(|| panic!("embedded upgrade graph lacks {name}"))
    };
    let node = |v: &str, class: &str, why: &str| Node {
        version: ver(v),
        step: by_name(class),
        provenance: Provenance::Inferred { from: why.into() },
    };
    let below = |limit: &str| -> Vec<Node> {
        let limit = ver(limit);
        snapshot_nodes
            .iter()
            .filter(|n| n.version < limit)
            .cloned()
            .collect()
    };
    let branch = "release-branch wiring guessed from the class's range (facts: branch_guess)";

    let mut h418 = below("4.18.1.0");
    h418.push(node("4.18.1.0", "Upgrade41810to41820", branch));
    let mut h419 = below("4.19.1.0");
    h419.push(node("4.19.1.0", "Upgrade41910to41920", branch));
    h419.push(node("4.19.2.0", "Upgrade41920to41930", branch));
    h419.push(node("4.19.3.0", "Upgrade41930to41940", branch));
    let mut h420 = below("4.20.1.0");
    h420.push(node("4.20.1.0", "Upgrade42010to42020", branch));
    h420.push(node("4.20.2.0", "Upgrade42020to42030", branch));
    h420.push(node("4.20.3.0", "Upgrade42030to42040", branch));
    let mut h422 = below("4.23.0.0");
    h422.push(node("4.22.0.0", "Upgrade42200to42210", branch));
    h422.push(node("4.22.1.0", "Upgrade42210to42220", branch));
    let test = "DatabaseUpgradeCheckerTest at 018744670b2b: 4.20.1.0 -> 4.20.3.0 is [Upgrade42020to42030], 4.20.1.0 -> 4.21.0.0 is [42020to42030, 42030to42040, 42040to42100]";
    let mut main = below("4.20.1.0");
    main.push(node("4.20.1.0", "Upgrade42020to42030", test));
    main.push(node("4.20.2.0", "Upgrade42020to42030", test));
    main.push(node("4.20.3.0", "Upgrade42030to42040", test));
    main.push(node("4.20.4.0", "Upgrade42040to42100", test));
    main.push(node("4.21.0.0", "Upgrade42100to42200", "snapshot"));
    main.push(node("4.22.0.0", "Upgrade42200to42210", branch));
    main.push(node("4.22.1.0", "Upgrade42210to42300", branch));
    main.push(node(
        "4.23.0.0",
        "Upgrade42300to2400",
        "DatabaseUpgradeCheckerTest at 018744670b2b",
    ));

    let unverified = "UNVERIFIED: nodes up to the branch point are the verified snapshot; the rest is wired from step classes read at other commits";
    let all = vec![
        snapshot.clone(),
        Hierarchy::new("4.18-branch", format!("{unverified} (4.18.2.x)"), h418),
        Hierarchy::new(
            "4.19-branch",
            format!("{unverified} (4.19.2.x-4.19.4.x)"),
            h419,
        ),
        Hierarchy::new(
            "4.20-branch",
            format!("{unverified} (4.20.2.x-4.20.4.x)"),
            h420,
        ),
        Hierarchy::new(
            "4.22-branch",
            format!("{unverified} (4.22.1.x-4.22.2.x)"),
            h422,
        ),
        Hierarchy::new(
            "main-after-snapshot",
            format!(
                "{unverified}; the 4.20.x wiring reproduces CloudStack's own newer test cases (4.23, 24.0)"
            ),
            main,
        ),
    ];

    let mut known: Vec<CsVersion> = Vec::new();
    for h in &all {
        for n in &h.nodes {
            known.push(n.version);
            known.push(n.step.upgraded);
        }
    }
    known.extend(
        raw.release_lines
            .documented_release_versions
            .iter()
            .map(|s| ver(s)),
    );
    known.sort();
    known.dedup();
    Facts {
        snapshot,
        all,
        known,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> CsVersion {
        CsVersion::parse(s).unwrap()
    }

    fn classes(steps: &[PathStep]) -> Vec<&str> {
        steps.iter().map(|s| s.class.as_str()).collect()
    }

    #[track_caller]
    fn check(h: &Hierarchy, db: &str, code: &str, expected: &[(&str, &str, &str)]) {
        let steps = h.path(&v(db), &v(code)).unwrap();
        let got: Vec<(String, String, String)> = steps
            .iter()
            .map(|s| (s.class.clone(), s.from.to_string(), s.to.to_string()))
            .collect();
        let want: Vec<(String, String, String)> = expected
            .iter()
            .map(|(c, f, t)| (c.to_string(), f.to_string(), t.to_string()))
            .collect();
        assert_eq!(got, want, "{db} -> {code}");
    }

    #[derive(Deserialize)]
    struct Example {
        db_version: String,
        code_version: String,
        steps: Vec<ExampleStep>,
    }
    #[derive(Deserialize)]
    struct ExampleStep {
        class: String,
        from_node: String,
        to: String,
    }

    #[test]
    fn reproduces_every_example_path_of_the_facts() {
        #[derive(Deserialize)]
        struct G {
            example_paths_with_this_snapshot: Vec<Example>,
        }
        let g: G = serde_json::from_str(GRAPH_JSON).unwrap();
        assert!(g.example_paths_with_this_snapshot.len() >= 10);
        for ex in &g.example_paths_with_this_snapshot {
            let want: Vec<(&str, &str, &str)> = ex
                .steps
                .iter()
                .map(|s| (s.class.as_str(), s.from_node.as_str(), s.to.as_str()))
                .collect();
            check(
                Hierarchy::snapshot(),
                &ex.db_version,
                &ex.code_version,
                &want,
            );
        }
    }

    #[test]
    fn the_snapshot_is_verified_and_ends_at_4_22() {
        let h = Hierarchy::snapshot();
        assert!(h.is_verified());
        assert_eq!(h.latest(), Some(v("4.22.0.0")));
        assert_eq!(h.nodes().len(), 91);
        assert!(Hierarchy::all()[1..].iter().all(|h| !h.is_verified()));
    }

    // DatabaseUpgradeCheckerTest (apache/cloudstack, read at 018744670b2b and 8429579b68bf).
    #[test]
    fn cloudstack_database_upgrade_checker_test_cases() {
        let h = Hierarchy::snapshot();
        // testCalculateUpgradePath480to481
        assert_eq!(
            h.path(&v("4.8.0"), &v("4.8.1")).unwrap()[0].class,
            "Upgrade480to481"
        );
        // testCalculateUpgradePath490to4910
        check(
            h,
            "4.9.0",
            "4.9.1.0",
            &[("Upgrade490to4910", "4.9.0", "4.9.1.0")],
        );
        let s = h.path(&v("4.9.0"), &v("4.9.1.0")).unwrap();
        let step = &h
            .nodes()
            .iter()
            .find(|n| n.step.class == s[0].class)
            .unwrap()
            .step;
        assert_eq!(step.range, Some([v("4.9.0"), v("4.9.1.0")]));
        // testCalculateUpgradePath410to412
        let s = h.path(&v("4.10.0.0"), &v("4.12.0.0")).unwrap();
        assert_eq!(
            classes(&s),
            [
                "Upgrade41000to41100",
                "Upgrade41100to41110",
                "Upgrade41110to41120",
                "Upgrade41120to41130",
                "Upgrade41120to41200"
            ]
        );
        assert_eq!(s[4].to, v("4.12.0.0"));
        // testFindUpgradePath470to481
        assert_eq!(
            classes(&h.path(&v("4.7.0"), &v("4.8.1")).unwrap()),
            ["Upgrade470to471", "Upgrade471to480", "Upgrade480to481"]
        );
        // testFindUpgradePath452to490
        let s = h.path(&v("4.5.2"), &v("4.9.0")).unwrap();
        assert_eq!(
            classes(&s),
            [
                "Upgrade452to453",
                "Upgrade453to460",
                "Upgrade460to461",
                "Upgrade461to470",
                "Upgrade470to471",
                "Upgrade471to480",
                "Upgrade480to481",
                "Upgrade481to490"
            ]
        );
        assert_eq!(s.last().unwrap().from, v("4.8.1"));
        // testCalculateUpgradePathUnknownDbVersion: 99.0.0 -> 99.1.0 is one Noop.
        check(
            h,
            "99.0.0",
            "99.1.0",
            &[("NoopDbUpgrade", "99.0.0", "99.1.0")],
        );
        // testCalculateUpgradePathFromKnownDbVersion: 4.17.0.0 -> 99.1.0 ends in a Noop.
        let s = h.path(&v("4.17.0.0"), &v("99.1.0")).unwrap();
        assert!(s.len() > 2 && s.last().unwrap().noop);
        assert_eq!(s.last().unwrap().from, v("4.22.0.0"));
        // testCalculateUpgradePathFromUnregisteredSecVersion: 4.15.1.3 -> 4.17.0.0.
        let s = h.path(&v("4.15.1.3"), &v("4.17.0.0")).unwrap();
        assert_eq!(s[0].class, "Upgrade41510to41520");
        assert_eq!(s.last().unwrap().class, "Upgrade41610to41700");
        // testCalculateUpgradePathFromLatestDbVersion: latest -> next security release.
        check(
            h,
            "4.22.0.0",
            "4.22.0.1",
            &[("NoopDbUpgrade", "4.22.0.0", "4.22.0.1")],
        );
        // testCalculateUpgradePathFrom41800toNextSecurityRelease.
        let to_latest = h.path(&v("4.18.0.0"), &v("4.22.0.0")).unwrap();
        let to_next = h.path(&v("4.18.0.0"), &v("4.22.0.1")).unwrap();
        assert_eq!(to_next.len(), to_latest.len() + 1);
        assert!(to_next.last().unwrap().noop);
        // testCalculateUpgradePathFromSecurityReleaseToLatest: 4.17.2.100 = 4.17.2.0.
        assert_eq!(
            h.path(&v("4.17.2.100"), &v("4.22.0.0")).unwrap().len(),
            h.path(&v("4.17.2.0"), &v("4.22.0.0")).unwrap().len()
        );
        // testCalculateUpgradePathFromSecurityReleaseToNextSecurityRelease.
        assert_eq!(
            h.path(&v("4.17.2.100"), &v("4.22.0.1")).unwrap().len(),
            h.path(&v("4.17.2.0"), &v("4.22.0.0")).unwrap().len() + 1
        );
    }

    #[test]
    fn cloudstack_test_cases_after_the_snapshot_hold_in_the_unverified_main() {
        let main = Hierarchy::for_target(&v("24.0.0"));
        assert_eq!(main.name(), "main-after-snapshot");
        // testCalculateUpgradePath42010to42030
        check(
            main,
            "4.20.1.0",
            "4.20.3.0",
            &[("Upgrade42020to42030", "4.20.1.0", "4.20.3.0")],
        );
        // testCalculateUpgradePath42010to42100
        assert_eq!(
            classes(&main.path(&v("4.20.1.0"), &v("4.21.0.0")).unwrap()),
            [
                "Upgrade42020to42030",
                "Upgrade42030to42040",
                "Upgrade42040to42100"
            ]
        );
        // testCalculateUpgradePath42300to2400
        check(
            main,
            "4.23.0.0",
            "24.0.0",
            &[("Upgrade42300to2400", "4.23.0.0", "24.0.0")],
        );
        assert!(
            main.path(&v("4.23.0.0"), &v("24.0.0"))
                .unwrap()
                .iter()
                .all(|s| !s.verified)
        );
    }

    // DatabaseVersionHierarchyTest.getRecentVersion* on its own small hierarchy.
    #[test]
    fn recent_version_as_cloudstack_tests_it() {
        let dummy = |to: &str| {
            Arc::new(StepClass {
                class: format!("Dummy{to}"),
                range: None,
                upgraded: v(to),
                prepare_sql: vec![],
                cleanup_sql: vec![],
                java_data_migration: false,
                registers_systemvm_template: false,
                provenance: Provenance::Snapshot,
            })
        };
        let nodes = [
            "0.0.5", "1.0.0.0", "1.0.1", "1.2.0", "2.0.0", "2.3.2", "3.4.5.6",
        ]
        .iter()
        .map(|s| Node {
            version: v(s),
            step: dummy("9.9.9"),
            provenance: Provenance::Snapshot,
        })
        .collect();
        let h = Hierarchy::new("t", "", nodes);
        assert_eq!(h.recent_version(&v("2.2.2")), Some(v("2.0.0")));
        assert_eq!(h.recent_version(&v("0.0.2")), None);
        assert_eq!(h.recent_version(&v("0.0.5")), None);
        assert_eq!(h.recent_version(&v("0.0.9")), Some(v("0.0.5")));
        assert_eq!(h.recent_version(&v("1.0.0.0")), Some(v("0.0.5")));
    }

    #[test]
    fn equal_versions_give_no_steps_and_a_newer_database_is_refused() {
        let h = Hierarchy::snapshot();
        assert!(h.path(&v("4.18.0.0"), &v("4.18.0.0")).unwrap().is_empty());
        let e = h.path(&v("4.22.0.0"), &v("4.20.0.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "database version 4.22.0.0 is newer than the target 4.20.0.0: CloudStack cannot downgrade"
        );
    }

    #[test]
    fn any_version_cloudstack_parses_gets_a_path_with_its_unverified_parts_named() {
        // 4.19.9.9: newer than the 4.19 branch the data has; its Noop tail is computed.
        let p = plan_path(&v("4.18.0.0"), &v("4.19.9.9")).unwrap();
        assert_eq!(p.hierarchy, "4.19-branch");
        let tail = p.steps.last().unwrap();
        assert!(tail.noop && !tail.verified, "{tail:?}");
        assert_eq!((tail.from, tail.to), (v("4.19.4.0"), v("4.19.9.9")));
        assert!(!p.target_known);
        assert!(
            p.unverified[0].contains("4.19.9.9 is not a release"),
            "{p:#?}"
        );
        // A security release of a line: the line's hierarchy cut at the target, then Noop
        // (4.19.0.x does not run 4.19.0.0 -> 4.19.1.0).
        let p = plan_path(&v("4.18.0.0"), &v("4.19.0.5")).unwrap();
        assert_eq!(
            classes(&p.steps),
            [
                "Upgrade41800to41810",
                "Upgrade41810to41900",
                "NoopDbUpgrade"
            ]
        );
        assert!(p.hierarchy.ends_with("cut at 4.19.0.5"), "{}", p.hierarchy);
        let p = plan_path(&v("4.17.2.0"), &v("4.18.1.3")).unwrap();
        assert_eq!(p.steps.last().unwrap().from, v("4.18.1.0"));
        assert!(p.steps.iter().all(|s| s.to <= v("4.18.1.3")));
        // A line the data lacks, and majors from 24 in either form.
        let p = plan_path(&v("4.18.0.0"), &v("4.21.7.0")).unwrap();
        assert_eq!(p.steps.last().unwrap().from, v("4.21.0.0"));
        for t in ["24.0.0.0", "25.1.3", "99.0.0.1"] {
            let p = plan_path(&v("4.22.0.0"), &v(t)).unwrap();
            assert_eq!(p.steps.last().unwrap().to, v(t));
            assert!(!p.is_verified());
        }
        // A known verified target has nothing unverified, and every step names its source.
        let p = plan_path(&v("4.18.0.0"), &v("4.20.1.0")).unwrap();
        assert!(p.is_verified() && p.target_known, "{:?}", p.unverified);
        assert!(p.steps.iter().all(|s| s.source.contains("verified")));
        // Branch nodes after the snapshot name where they come from.
        let p = plan_path(&v("4.20.1.0"), &v("4.20.3.0")).unwrap();
        assert!(
            p.steps.iter().all(|s| s.source.contains("unverified")),
            "{p:#?}"
        );
        assert_eq!(p.unverified.len(), p.steps.len());
    }

    #[test]
    fn the_4_4_x_nodes_make_the_old_path_jump_back() {
        // A fresh 4.0.0 install upgraded to 4.18 wrote 4.4.4 after 4.5.0: node 4.4.3 comes after
        // 4.4.2 -> 4.5.0 in declaration order.
        let s = Hierarchy::snapshot()
            .path(&v("4.4.2"), &v("4.5.1"))
            .unwrap();
        assert_eq!(
            classes(&s),
            ["Upgrade442to450", "Upgrade443to444", "Upgrade450to451"]
        );
    }

    #[test]
    fn the_target_picks_its_release_hierarchy() {
        let name = |t: &str| Hierarchy::for_target(&v(t)).name().to_string();
        assert_eq!(name("4.22.0.0"), "main@3d6cafe");
        assert_eq!(name("4.20.1.0"), "main@3d6cafe");
        assert_eq!(name("4.20.3.0"), "4.20-branch");
        assert_eq!(name("4.19.3.0"), "4.19-branch");
        assert_eq!(name("4.18.2.5"), "4.18-branch");
        assert_eq!(name("4.22.1.0"), "4.22-branch");
        assert_eq!(name("24.0.0"), "main-after-snapshot");
        let s = path(&v("4.19.1.0"), &v("4.19.3.0")).unwrap();
        assert_eq!(classes(&s), ["Upgrade41910to41920", "Upgrade41920to41930"]);
        assert!(s.iter().all(|s| !s.verified));
    }

    /// The path by brute force: a plain loop over the list, as the issue describes it.
    fn brute(h: &Hierarchy, db: CsVersion, code: CsVersion) -> Vec<(String, CsVersion, CsVersion)> {
        if db == code {
            return vec![];
        }
        let latest = h.nodes().last().unwrap().step.upgraded;
        let mut start = None;
        if db < latest {
            let mut f = db;
            loop {
                if h.nodes().iter().any(|n| n.version.is_identical(&f)) {
                    start = Some(f);
                    break;
                }
                let mut below = None;
                for n in h.nodes() {
                    if n.version < f {
                        below = Some(n.version);
                    }
                }
                match below {
                    Some(b) => f = b,
                    None => break,
                }
            }
        }
        let mut out: Vec<(String, CsVersion, CsVersion)> = vec![];
        if let Some(f) = start {
            for n in h.nodes() {
                if n.version >= f && n.version < code && !out.iter().any(|o| o.2 == n.step.upgraded)
                {
                    out.push((n.step.class.clone(), n.version, n.step.upgraded));
                }
            }
        }
        let tail = out.last().map(|o| o.2).unwrap_or(db);
        if tail != code {
            out.push(("NoopDbUpgrade".into(), tail, code));
        }
        out
    }

    fn any_version() -> impl Strategy<Value = CsVersion> {
        prop_oneof![
            (2u32..5, 0u32..25, 0u32..5, 0u32..4)
                .prop_map(|(a, b, c, d)| CsVersion::new4(a, b, c, d).unwrap()),
            (2u32..5, 0u32..25, 0u32..5).prop_map(|(a, b, c)| CsVersion::new3(a, b, c)),
            (0usize..200).prop_map(|i| {
                let k = known_versions();
                k[i % k.len()]
            }),
        ]
    }

    fn release_target() -> impl Strategy<Value = CsVersion> {
        let h = Hierarchy::snapshot();
        let ups: Vec<CsVersion> = h
            .nodes()
            .iter()
            .map(|n| n.step.upgraded)
            .filter(|u| *u >= v("4.5.1"))
            .collect();
        prop_oneof![
            proptest::sample::select(ups),
            (22u32..30, 0u32..5, 0u32..5)
                .prop_map(|(b, c, d)| CsVersion::new4(4, b, c, d).unwrap()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn path_equals_a_brute_force_walk_of_the_list(db in any_version(), code in any_version()) {
            for h in Hierarchy::all() {
                let got = h.path(&db, &code);
                if db > code {
                    prop_assert!(got.is_err());
                    continue;
                }
                let got: Vec<(String, CsVersion, CsVersion)> =
                    got.unwrap().into_iter().map(|s| (s.class, s.from, s.to)).collect();
                prop_assert_eq!(got, brute(h, db, code), "{} {} -> {}", h.name(), db, code);
            }
        }

        #[test]
        fn path_is_contiguous_and_ascending_from_4_5(db in any_version(), code in release_target()) {
            prop_assume!(db >= v("4.5.0") && db < code);
            let steps = Hierarchy::snapshot().path(&db, &code).unwrap();
            prop_assert!(!steps.is_empty());
            prop_assert!(steps[0].from <= db);
            prop_assert_eq!(steps.last().unwrap().to, code);
            for w in steps.windows(2) {
                prop_assert_eq!(w[0].to, w[1].from, "{} then {}", w[0], w[1]);
            }
            for s in &steps {
                prop_assert!(s.from < s.to, "{}", s);
            }
        }
    }
}
