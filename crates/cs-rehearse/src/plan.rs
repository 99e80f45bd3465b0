//! What a rehearsal runs, in which order.
//!
//! `DatabaseUpgradeChecker.upgrade` (apache/cloudstack `engine/schema/src/main/java/com/cloud/
//! upgrade/DatabaseUpgradeChecker.java`, as summarised in cs-schema's embedded facts): since
//! 4.19.2 the `META-INF/db/procedures/*.sql` scripts run first; then, per step of the path, one
//! transaction runs the prepare scripts, `performDataMigration` and inserts the step's
//! `version` row (`step = 'Upgrade'`); a second runs the cleanup scripts, then the row becomes
//! `Complete`; since 4.19.0 the `META-INF/db/views/*.sql` scripts re-create every view at the
//! end.

use serde::Serialize;

/// One step of the path (built by the caller from `cs_schema::path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanStep {
    /// The upgrade class (`Upgrade41800to41810`, `NoopDbUpgrade`).
    pub class: String,
    /// The version it upgrades from.
    pub from: String,
    /// The `version` row it writes.
    pub to: String,
    /// Prepare scripts, under `META-INF/db/`.
    pub prepare: Vec<String>,
    /// Cleanup scripts, under `META-INF/db/`.
    pub cleanup: Vec<String>,
    /// Whether `performDataMigration` does work in Java: its effect is not rehearsed.
    pub java_data_migration: bool,
}

/// The whole rehearsal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The target version.
    pub target: String,
    /// Whether the `procedures/` scripts run before the steps (targets from 4.19.2).
    pub procedures_first: bool,
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
    /// Whether the `views/` scripts run after the steps (targets from 4.19.0).
    pub views_last: bool,
}

impl Plan {
    /// The steps whose Java data migration the rehearsal cannot run, as `class (from -> to)`.
    pub fn not_rehearsed(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.java_data_migration)
            .map(|s| format!("{} ({} -> {})", s.class, s.from, s.to))
            .collect()
    }

    /// Every script name the plan needs from the step lists (the directories are listed at
    /// run time).
    pub fn scripts(&self) -> Vec<&str> {
        self.steps
            .iter()
            .flat_map(|s| s.prepare.iter().chain(&s.cleanup))
            .map(String::as_str)
            .collect()
    }
}
