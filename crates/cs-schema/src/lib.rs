//! CloudStack's schema-upgrade graph, the path a target release will run, release facts, a
//! live schema's state, the database checks, and a watch over a running migration.
//!
//! Start from [`path`] (the steps `DatabaseUpgradeChecker` runs, reproduced exactly from the
//! hierarchy embedded from apache/cloudstack at [`SNAPSHOT_COMMIT`]), [`plan_hops`] (LTS
//! stepping stones), [`release_line`] (Java, databases, templates per release), [`read_state`]
//! and [`run_db_checks`] (the `db.*`, `cluster.quiesced` and `systemvm.templates.ready`
//! checks over a [`DbContext`]) and [`MigrationWatch`].
//!
//! ```
//! use cs_schema::{path, plan_hops};
//! let steps = path(&"4.18.1.3".parse()?, &"4.22.0.0".parse()?)?;
//! assert_eq!(steps.first().unwrap().class, "Upgrade41810to41900");
//! assert_eq!(steps.last().unwrap().to.to_string(), "4.22.0.0");
//! // A patch release the hierarchy does not know ends with a Noop step.
//! let noop = path(&"4.22.0.0".parse()?, &"4.22.0.1".parse()?)?;
//! assert_eq!(noop[0].class, "NoopDbUpgrade");
//! let hops = plan_hops(&"4.15.0.0".parse()?, &"4.18.0.0".parse()?)?;
//! assert_eq!(hops.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Any version `CloudStackVersion.parse` accepts gets a path ([`plan_path`]); parts computed
//! beyond the data (a target newer than it, a line it lacks) are listed as unverified.
//!
//! Facts beyond the verified snapshot (release-branch steps such as 4.20.2 → 4.20.3, 4.23,
//! 24.0.0) are modelled in separate hierarchies marked unverified ([`Hierarchy::is_verified`],
//! [`PathStep::verified`]).

mod changes;
mod checks;
mod error;
mod graph;
mod hops;
mod release;
mod state;
mod watch;

pub use changes::{ChangesSince, NewVm, TABLES_THAT_MATTER, TableChanges, changes_since};
pub use checks::{
    CLOUD_PROCEDURES, DbCheck, DbContext, LATER_SCHEMA_OBJECTS, SYSTEMVM_BUNDLE_DIR,
    USAGE_PROCEDURES, auto_registers_systemvm_template, db_checks, ids, run_db_checks,
};
pub use error::{Error, Result};
pub use graph::{
    Hierarchy, Node, PathPlan, PathStep, Provenance, SNAPSHOT_COMMIT, StepClass, is_known,
    known_versions, path, plan_path,
};
pub use hops::{Hop, MAX_LINES_PER_HOP, plan_hops};
pub use release::{
    Hypervisor, Lts, ReleaseLine, release_facts, release_line, release_lines,
    systemvm_template_name,
};
pub use state::{
    CustomRow, DbTarget, ImageStore, MsHost, Routine, SchemaState, ServerInfo, SystemTemplate,
    TableSize, Vendor, VersionRow, VersionTable, read_state,
};
pub use watch::{MigrationWatch, WatchOutcome};
