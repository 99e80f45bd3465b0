//! The database checks of CHECKS.md: `db.*` (with `db.schema.half_applied`),
//! `cluster.quiesced` and `systemvm.templates.ready` (their database side).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use cs_core::{Check, CheckError, CsVersion, Finding, Report, Severity};

use crate::graph::plan_path;
use crate::release::{Hypervisor, release_line, systemvm_template_name};
use crate::state::{SchemaState, Vendor, read_state};
use crate::{DbTarget, Error};

/// What the database checks run against: where the schemas are, the target release, and what
/// the orchestrator knows beyond the database.
#[derive(Debug)]
pub struct DbContext {
    /// The schemas.
    pub db: DbTarget,
    /// The release being upgraded to.
    pub target: CsVersion,
    /// The `msid` of a management server allowed to be Up (the one that will migrate), if any.
    pub except_msid: Option<u64>,
    /// Whether the target's management package carries the system VM templates it registers
    /// during the upgrade (checked on the host by another check). When true, a template not yet
    /// registered is information, not a failure.
    pub bundled_systemvm_templates: bool,
    /// Whether the run registers the target's system VM template itself before it changes
    /// anything (and waits until it is Ready in every zone). When true, a template not yet
    /// registered or not yet Ready everywhere is information, not a failure.
    pub registers_systemvm_template: bool,
    /// The file names found in [`SYSTEMVM_BUNDLE_DIR`] on every management server, when the
    /// caller looked; `None` when not known.
    pub bundled_systemvm_files: Option<Vec<String>>,
    state: tokio::sync::OnceCell<Result<Arc<SchemaState>, String>>,
}

impl DbContext {
    /// A context for `db` and `target`; nothing is read until a check runs.
    pub fn new(db: DbTarget, target: CsVersion) -> Self {
        DbContext {
            db,
            target,
            except_msid: None,
            bundled_systemvm_templates: false,
            registers_systemvm_template: false,
            bundled_systemvm_files: None,
            state: tokio::sync::OnceCell::new(),
        }
    }

    /// Gives the file names found in [`SYSTEMVM_BUNDLE_DIR`] on every management server (the
    /// ones present on all of them), so that a target that registers its bundled template
    /// itself is checked against them.
    #[must_use]
    pub fn bundled_systemvm_files(mut self, files: Vec<String>) -> Self {
        self.bundled_systemvm_files = Some(files);
        self
    }

    /// Uses a state already read (by [`read_state`]) instead of reading it again.
    #[must_use]
    pub fn with_state(mut self, state: SchemaState) -> Self {
        self.state = tokio::sync::OnceCell::new_with(Some(Ok(Arc::new(state))));
        self
    }

    /// Allows the management server with this `msid` to be Up.
    #[must_use]
    pub fn except_msid(mut self, msid: u64) -> Self {
        self.except_msid = Some(msid);
        self
    }

    /// Says whether the target package carries system VM templates to register.
    #[must_use]
    pub fn bundled_systemvm_templates(mut self, yes: bool) -> Self {
        self.bundled_systemvm_templates = yes;
        self
    }

    /// Says whether the run registers the target's system VM template before it changes
    /// anything.
    #[must_use]
    pub fn registers_systemvm_template(mut self, yes: bool) -> Self {
        self.registers_systemvm_template = yes;
        self
    }

    /// The schema state, read once and shared by every check of this context.
    ///
    /// # Errors
    /// [`CheckError`] with the cause when the database cannot be read.
    pub async fn state(&self) -> Result<Arc<SchemaState>, CheckError> {
        let r = self
            .state
            .get_or_init(|| async {
                read_state(&self.db)
                    .await
                    .map(Arc::new)
                    .map_err(|e| cs_core::error_chain(&e))
            })
            .await;
        r.clone().map_err(CheckError::new)
    }
}

/// Stable ids of the checks.
pub mod ids {
    /// `db.version.sane`.
    pub const VERSION_SANE: &str = "db.version.sane";
    /// `db.version.path`.
    pub const VERSION_PATH: &str = "db.version.path";
    /// `db.routines.present`.
    pub const ROUTINES_PRESENT: &str = "db.routines.present";
    /// `db.usage.present`.
    pub const USAGE_PRESENT: &str = "db.usage.present";
    /// `db.server.compat`.
    pub const SERVER_COMPAT: &str = "db.server.compat";
    /// `db.nics.update_time`.
    pub const NICS_UPDATE_TIME: &str = "db.nics.update_time";
    /// `db.customisations`.
    pub const CUSTOMISATIONS: &str = "db.customisations";
    /// `db.size`.
    pub const SIZE: &str = "db.size";
    /// `cluster.quiesced`.
    pub const CLUSTER_QUIESCED: &str = "cluster.quiesced";
    /// `systemvm.templates.ready`.
    pub const SYSTEMVM_TEMPLATES_READY: &str = "systemvm.templates.ready";
    /// `db.schema.half_applied`.
    pub const SCHEMA_HALF_APPLIED: &str = "db.schema.half_applied";
}

/// One database check (see [`db_checks`]).
#[derive(Clone, Copy)]
pub struct DbCheck {
    id: &'static str,
    run: fn(&DbContext, &SchemaState) -> Vec<Finding>,
}

impl fmt::Debug for DbCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbCheck({})", self.id)
    }
}

#[async_trait]
impl Check<DbContext> for DbCheck {
    fn id(&self) -> &str {
        self.id
    }

    async fn run(&self, cx: &DbContext) -> Result<Vec<Finding>, CheckError> {
        let state = cx.state().await?;
        Ok((self.run)(cx, &state))
    }
}

/// Every database check, in report order.
pub fn db_checks() -> Vec<DbCheck> {
    vec![
        DbCheck {
            id: ids::VERSION_SANE,
            run: version_sane,
        },
        DbCheck {
            id: ids::VERSION_PATH,
            run: version_path,
        },
        DbCheck {
            id: ids::SCHEMA_HALF_APPLIED,
            run: schema_half_applied,
        },
        DbCheck {
            id: ids::ROUTINES_PRESENT,
            run: routines_present,
        },
        DbCheck {
            id: ids::USAGE_PRESENT,
            run: usage_present,
        },
        DbCheck {
            id: ids::SERVER_COMPAT,
            run: server_compat,
        },
        DbCheck {
            id: ids::NICS_UPDATE_TIME,
            run: nics_update_time,
        },
        DbCheck {
            id: ids::CUSTOMISATIONS,
            run: customisations,
        },
        DbCheck {
            id: ids::SIZE,
            run: size,
        },
        DbCheck {
            id: ids::CLUSTER_QUIESCED,
            run: cluster_quiesced,
        },
        DbCheck {
            id: ids::SYSTEMVM_TEMPLATES_READY,
            run: systemvm_templates_ready,
        },
    ]
}

/// Runs every database check against `cx`, skipping the ids in `skip`.
pub async fn run_db_checks(cx: &DbContext, skip: &[&str]) -> Report {
    let checks = db_checks();
    let refs: Vec<&dyn Check<DbContext>> =
        checks.iter().map(|c| c as &dyn Check<DbContext>).collect();
    cs_core::run_checks(&refs, cx, skip).await
}

fn table(cx: &DbContext, t: &str) -> String {
    format!("{}.{t}", cx.db.cloud_schema)
}

fn no_cloud_schema(cx: &DbContext, id: &str, s: &SchemaState) -> Option<Vec<Finding>> {
    (!s.cloud_exists).then(|| {
        vec![
            Finding::new(
                id,
                Severity::Fail,
                cx.db.cloud_schema.clone(),
                format!("schema `{}` does not exist", cx.db.cloud_schema),
            )
            .with_remedy(
                "point the check at the CloudStack database (db.cloud.name in db.properties)",
            ),
        ]
    })
}

fn version_sane(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::VERSION_SANE;
    if let Some(f) = no_cloud_schema(cx, id, s) {
        return f;
    }
    let subject = table(cx, "version");
    let Some(vt) = &s.version else {
        return vec![
            Finding::new(
                id,
                Severity::Fail,
                subject,
                format!(
                    "`{}` has no `version` table: a pre-2.2 (legacy) database or not CloudStack's",
                    cx.db.cloud_schema
                ),
            )
            .with_remedy("legacy 2.1.x databases need the manual 2.1 -> 2.2 procedure first; otherwise check the schema name"),
        ];
    };
    let mut out = Vec::new();
    for r in vt.incomplete() {
        out.push(
            Finding::new(
                id,
                Severity::Fail,
                format!("{subject} id={}", r.id),
                format!(
                    "row id {} `{}` is in step `{}` (updated {}): an upgrade step started and did not finish",
                    r.id, r.version, r.step, r.updated
                ),
            )
            .with_remedy(
                "restore the backup taken before that upgrade attempt; the management server refuses \
                 to start ('Version table contains records for which upgrade wasn't completed') and \
                 re-running a half-applied step fails (e.g. Duplicate column)",
            ),
        );
    }
    let Some(current_row) = vt.current_row() else {
        out.push(
            Finding::new(
                id,
                Severity::Fail,
                subject,
                "no row of the version table is `Complete`",
            )
            .with_remedy("restore a backup of a working installation"),
        );
        return out;
    };
    if let Some(newest) = vt.newest_if_not_current()
        && (newest.is_complete() || out.is_empty())
    {
        out.push(Finding::new(
            id,
            Severity::Fail,
            format!("{subject} id={}", newest.id),
            format!(
                "the newest row (id {}, `{}`) is not the current Complete row (id {}, `{}`)",
                newest.id, newest.version, current_row.id, current_row.version
            ),
        ));
    }
    let Some(current) = current_row.parsed() else {
        out.push(
            Finding::new(
                id,
                Severity::Fail,
                format!("{subject} id={}", current_row.id),
                format!(
                    "version `{}` does not parse as a CloudStack version",
                    current_row.version
                ),
            )
            .with_remedy("fix or restore the version table"),
        );
        return out;
    };
    match plan_path(&current, &cx.target) {
        Err(Error::DatabaseNewer { .. }) => out.push(
            Finding::new(
                id,
                Severity::Fail,
                subject.clone(),
                format!(
                    "the database is at {current}, newer than the target {}: CloudStack cannot downgrade",
                    cx.target
                ),
            )
            .with_remedy("upgrade to a release at or above the database's version, or restore an older backup"),
        ),
        Err(e) => out.push(
            Finding::new(id, Severity::Fail, subject.clone(), e.to_string())
                .with_remedy("choose a CloudStack release at or above the database's version as the target"),
        ),
        Ok(plan) if out.is_empty() => out.push(Finding::pass(
            id,
            subject,
            format!(
                "at {current} (row id {}, Complete); the {} hierarchy has a path of {} step(s) to {}{}",
                current_row.id,
                plan.hierarchy,
                plan.steps.len(),
                cx.target,
                if plan.is_verified() {
                    String::new()
                } else {
                    format!(" ({} part(s) unverified, see db.version.path)", plan.unverified.len())
                }
            ),
        )),
        Ok(_) => {}
    }
    out
}

fn version_path(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::VERSION_PATH;
    let subject = table(cx, "version");
    let Some(current) = s.version.as_ref().and_then(|v| v.current()) else {
        return vec![Finding::new(
            id,
            Severity::Skip,
            subject,
            "no current version to plan from",
        )];
    };
    match plan_path(&current, &cx.target) {
        Ok(plan) if plan.steps.is_empty() => vec![Finding::new(
            id,
            Severity::Info,
            subject,
            format!("already at {}: no schema steps", cx.target),
        )],
        Ok(plan) => {
            let steps = &plan.steps;
            let list: Vec<String> = steps.iter().map(ToString::to_string).collect();
            let mut notes = Vec::new();
            if let Some(first) = steps.first()
                && !first.noop
                && first.from != current
            {
                notes.push(format!(
                    "{current} is no node of the hierarchy: the step from {} runs again",
                    first.from
                ));
            }
            if steps.last().is_some_and(|s| s.noop) {
                notes.push("ends with a NoopDbUpgrade tail (a version row only)".to_string());
            }
            if !plan.is_verified() {
                notes.push(format!(
                    "UNVERIFIED (hierarchy {}): {}",
                    plan.hierarchy,
                    plan.unverified.join("; ")
                ));
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            vec![Finding::new(
                id,
                Severity::Info,
                subject,
                format!("{} -> {}: {}{notes}", current, cx.target, list.join(", ")),
            )]
        }
        Err(e) => vec![Finding::new(
            id,
            Severity::Info,
            subject,
            format!("no path: {e}"),
        )],
    }
}

/// Objects an upgrade step's SQL creates, by the version row the step writes: a database whose
/// current version is below that version and has one of them holds DDL of a later schema
/// without its version row (apache/cloudstack #7358: a 4.17 database carrying 4.18's
/// `networks.public_mtu`, so re-running `schema-41720to41800.sql` fails with `Duplicate column
/// name 'public_mtu'`). `(version, table, column)`; `None` for a table the step creates.
/// Read from apache/cloudstack `engine/schema/src/main/resources/META-INF/db/`:
/// `schema-41720to41800.sql` (plain `ADD COLUMN`s on `networks` and `vpc`),
/// `schema-41810to41900.sql` (`roles.public_role`, table `vm_scheduled_job`),
/// `schema-41910to42000.sql` (tables `nsx_providers` and `dc_ip4_guest_subnets`, created
/// without `IF NOT EXISTS`). `schema-41800to41810.sql` adds no table or column.
/// UNCONFIRMED: markers for 4.20.1.0 and later steps are not listed.
pub const LATER_SCHEMA_OBJECTS: &[(&str, &str, Option<&str>)] = &[
    ("4.18.0.0", "networks", Some("public_mtu")),
    ("4.18.0.0", "networks", Some("private_mtu")),
    ("4.18.0.0", "vpc", Some("public_mtu")),
    ("4.19.0.0", "roles", Some("public_role")),
    ("4.19.0.0", "vm_scheduled_job", None),
    ("4.20.0.0", "nsx_providers", None),
    ("4.20.0.0", "dc_ip4_guest_subnets", None),
];

fn schema_half_applied(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::SCHEMA_HALF_APPLIED;
    if let Some(f) = no_cloud_schema(cx, id, s) {
        return f;
    }
    let Some(current) = s.version.as_ref().and_then(|v| v.current()) else {
        return vec![Finding::new(
            id,
            Severity::Skip,
            table(cx, "version"),
            "no current version to compare the schema with (see db.version.sane)",
        )];
    };
    let mut out = Vec::new();
    for (version, tbl, column) in LATER_SCHEMA_OBJECTS {
        let version = CsVersion::parse(version).expect("static");
        if version <= current {
            continue;
        }
        let (present, what) = match column {
            Some(c) => (
                s.cloud_columns
                    .contains(&((*tbl).to_string(), (*c).to_string())),
                format!("column `{tbl}`.`{c}`"),
            ),
            None => (s.cloud_tables.contains(*tbl), format!("table `{tbl}`")),
        };
        if !present {
            continue;
        }
        out.push(
            Finding::new(
                id,
                Severity::Fail,
                format!("{}.{tbl}", cx.db.cloud_schema),
                format!(
                    "{what} belongs to schema {version}, but the database is at {current}: an \
                     upgrade step ran part of its DDL without writing its version row, and \
                     running it again fails (e.g. Duplicate column)"
                ),
            )
            .with_remedy(
                "restore the backup taken before the failed upgrade attempt; without one, take a \
                 backup now, then drop exactly the objects listed here so that the step can run \
                 again",
            ),
        );
    }
    if out.is_empty() {
        out.push(Finding::pass(
            id,
            table(cx, "*"),
            format!(
                "no table or column of a schema after {current} among the {} known markers",
                LATER_SCHEMA_OBJECTS.len()
            ),
        ));
    }
    out
}

/// Procedures a 4.18 `cloud` schema carries (the replay of the 4.0.0 -> 4.18.0.0 SQL).
pub const CLOUD_PROCEDURES: &[&str] = &[
    "ADD_GUEST_OS_AND_HYPERVISOR_MAPPING",
    "IDEMPOTENT_ADD_COLUMN",
    "IDEMPOTENT_ADD_FOREIGN_KEY",
    "IDEMPOTENT_ADD_KEY",
    "IDEMPOTENT_ADD_UNIQUE_KEY",
    "IDEMPOTENT_CHANGE_COLUMN",
    "IDEMPOTENT_CREATE_UNIQUE_INDEX",
    "IDEMPOTENT_DROP_FOREIGN_KEY",
    "IDEMPOTENT_DROP_INDEX",
    "IDEMPOTENT_INSERT_GUESTOS_HYPERVISOR_MAPPING",
];

/// Procedures a 4.18 `cloud_usage` schema carries.
pub const USAGE_PROCEDURES: &[&str] = &[
    "IDEMPOTENT_ADD_COLUMN",
    "IDEMPOTENT_ADD_UNIQUE_INDEX",
    "IDEMPOTENT_CHANGE_COLUMN",
    "IDEMPOTENT_DROP_INDEX",
];

fn routines_present(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::ROUTINES_PRESENT;
    if let Some(f) = no_cloud_schema(cx, id, s) {
        return f;
    }
    let current = s.version.as_ref().and_then(|v| v.current());
    let v = |x: &str| CsVersion::parse(x).expect("static");
    // From 4.19.2 the management server re-creates every procedure before the steps run.
    let recreated = cx.target >= v("4.19.2.0");
    let required = current.is_some_and(|c| c >= v("4.18.0.0"));
    let mut out = Vec::new();
    let mut check_schema = |schema: &str, names: &[&str]| {
        for name in names {
            let present = s.routines.iter().any(|r| {
                r.schema == schema && r.name.eq_ignore_ascii_case(name) && r.kind == "PROCEDURE"
            });
            if present {
                continue;
            }
            let severity = if !required {
                Severity::Info
            } else if recreated {
                Severity::Warn
            } else {
                Severity::Fail
            };
            out.push(
                Finding::new(
                    id,
                    severity,
                    format!("{schema}.{name}"),
                    format!(
                        "procedure `{name}` is missing from `{schema}`{}",
                        if recreated {
                            " (the target re-creates procedures before its steps, but the dump this came from lost them)"
                        } else {
                            ": the upgrade SQL calls it and fails"
                        }
                    ),
                )
                .with_remedy(
                    "restore the procedures from a dump taken with -R (--routines), or run the \
                     procedure scripts of META-INF/db/procedures of the current release; always dump with -R",
                ),
            );
        }
    };
    check_schema(&cx.db.cloud_schema, CLOUD_PROCEDURES);
    if s.usage_exists {
        check_schema(&cx.db.usage_schema, USAGE_PROCEDURES);
    }
    if out.is_empty() {
        out.push(Finding::pass(
            id,
            cx.db.cloud_schema.clone(),
            format!(
                "{} procedures present in `{}`{}",
                CLOUD_PROCEDURES.len(),
                cx.db.cloud_schema,
                if s.usage_exists {
                    format!(
                        " and {} in `{}`",
                        USAGE_PROCEDURES.len(),
                        cx.db.usage_schema
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
    out
}

fn usage_present(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::USAGE_PRESENT;
    let u = &cx.db.usage_schema;
    let mut out = Vec::new();
    if !s.usage_exists {
        out.push(
            Finding::new(id, Severity::Fail, u.clone(), format!("schema `{u}` does not exist"))
                .with_remedy(format!(
                    "create it from a backup, or with the setup scripts (create-database-premium.sql, \
                     create-schema-premium.sql) before upgrading; CloudStack's upgrade SQL alters `{u}`"
                )),
        );
    } else if !s.usage_tables.contains("cloud_usage") {
        out.push(
            Finding::new(
                id,
                Severity::Fail,
                format!("{u}.cloud_usage"),
                format!("schema `{u}` has no `cloud_usage` table"),
            )
            .with_remedy("restore the usage schema from a backup"),
        );
    }
    for schema in [&cx.db.cloud_schema, u] {
        if !s.has_grants_on(schema) {
            out.push(
                Finding::new(
                    id,
                    Severity::Fail,
                    schema.clone(),
                    format!("user `{}` has no privileges on `{schema}`", cx.db.url.user),
                )
                .with_remedy(format!(
                    "GRANT ALL ON `{schema}`.* TO '{}'@'%' (as CloudStack's setup does)",
                    cx.db.url.user
                )),
            );
        }
    }
    if out.is_empty() {
        out.push(Finding::pass(
            id,
            u.clone(),
            format!(
                "`{u}` exists with `cloud_usage`; user `{}` has privileges on both schemas",
                cx.db.url.user
            ),
        ));
    }
    out
}

fn server_compat(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::SERVER_COMPAT;
    let srv = &s.server;
    let subject = format!("{} ({})", cx.db.url.addr(), srv.version);
    let v = |x: &str| CsVersion::parse(x).expect("static");
    let t = cx.target;
    let (maj, min, _) = srv.number;
    let mut out = Vec::new();
    match srv.vendor {
        Vendor::MySql => {
            if maj >= 8 && t < v("4.15.0.0") {
                out.push(
                    Finding::new(
                        id,
                        Severity::Fail,
                        subject.clone(),
                        format!(
                            "MySQL {maj}.{min} needs CloudStack 4.15 or later; the target is {t}"
                        ),
                    )
                    .with_remedy("upgrade CloudStack to 4.15+ or keep MySQL 5.7"),
                );
            }
            if maj < 8 && t >= v("4.20.0.0") {
                out.push(
                    Finding::new(
                        id,
                        Severity::Fail,
                        subject.clone(),
                        format!(
                            "MySQL {maj}.{min}: CloudStack {} supports MySQL 8.0",
                            t.line()
                        ),
                    )
                    .with_remedy("upgrade MySQL to 8.0 before this upgrade"),
                );
            }
        }
        Vendor::MariaDb => {
            if t >= v("4.20.0.0") && (maj, min) < (10, 6) {
                out.push(
                    Finding::new(
                        id,
                        Severity::Fail,
                        subject.clone(),
                        format!(
                            "MariaDB {maj}.{min}: CloudStack {} needs MariaDB 10.6 or later",
                            t.line()
                        ),
                    )
                    .with_remedy("upgrade MariaDB to 10.6+ before this upgrade"),
                );
            }
        }
    }
    if srv.has_sql_mode("ONLY_FULL_GROUP_BY") {
        out.push(
            Finding::new(
                id,
                Severity::Fail,
                format!("{} @@GLOBAL.sql_mode", cx.db.url.addr()),
                format!("the global sql_mode contains ONLY_FULL_GROUP_BY (`{}`): CloudStack's queries and upgrade SQL fail", srv.global_sql_mode),
            )
            .with_remedy("remove ONLY_FULL_GROUP_BY from sql-mode in the server's config (e.g. sql-mode=\"STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE\") and restart it"),
        );
    }
    if out.is_empty() {
        let line = release_line(&t)
            .map(|l| {
                format!(
                    " (CloudStack {}: MySQL {}{})",
                    l.line,
                    if l.mysql.is_empty() {
                        "?".to_string()
                    } else {
                        l.mysql.join("/")
                    },
                    l.mariadb_min
                        .as_deref()
                        .map(|m| format!(", MariaDB >= {m}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        out.push(Finding::pass(
            id,
            subject,
            format!(
                "server within the target's support{line}; sql_mode without ONLY_FULL_GROUP_BY"
            ),
        ));
    }
    out
}

fn nics_update_time(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::NICS_UPDATE_TIME;
    let subject = table(cx, "nics.update_time");
    match &s.nics_update_time_default {
        None => vec![Finding::new(id, Severity::Skip, subject, "no nics.update_time column")],
        Some(Some(d)) if d.to_ascii_lowercase().starts_with("current_timestamp") => {
            vec![Finding::pass(id, subject, format!("default is {d}"))]
        }
        Some(d) => vec![
            Finding::new(
                id,
                Severity::Warn,
                subject,
                format!(
                    "default is {}, not CURRENT_TIMESTAMP: on MySQL 5.7.34+/8 inserting NICs fails",
                    d.as_deref().unwrap_or("NULL")
                ),
            )
            .with_remedy(format!(
                "ALTER TABLE `{}`.`nics` MODIFY `update_time` timestamp NULL DEFAULT CURRENT_TIMESTAMP",
                cx.db.cloud_schema
            )),
        ],
    }
}

fn customisations(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::CUSTOMISATIONS;
    if s.customisations.is_empty() {
        return vec![Finding::pass(
            id,
            table(cx, "guest_os*"),
            "no user-defined guest OS rows",
        )];
    }
    s.customisations
        .iter()
        .map(|r| {
            Finding::new(
                id,
                Severity::Warn,
                format!("{} id={}", table(cx, &r.table), r.id),
                format!("user-defined row `{}` in {}", r.name, r.table),
            )
            .with_remedy(
                "note it before upgrading: upgrade SQL may add a stock row with the same name or id \
                 (duplicate keys, lost mappings); re-check the mapping after the upgrade",
            )
        })
        .collect()
}

fn size(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::SIZE;
    const BIG: &[&str] = &["vm_stats", "event", "usage_event"];
    const RATE: u64 = 50 * 1024 * 1024; // Bytes per second a dump typically sustains.
    let mut out = Vec::new();
    let mut total = 0u64;
    for t in &s.table_sizes {
        total += t.bytes;
        let big = (t.schema == cx.db.cloud_schema && BIG.contains(&t.table.as_str()))
            || t.schema == cx.db.usage_schema;
        if big && (t.rows > 0 || t.schema == cx.db.cloud_schema) {
            out.push(Finding::new(
                id,
                Severity::Info,
                format!("{}.{}", t.schema, t.table),
                format!("{} rows, {}", t.rows, human_bytes(t.bytes)),
            ));
        }
    }
    let secs = total / RATE + 1;
    out.push(Finding::new(
        id,
        Severity::Info,
        format!("{} + {}", cx.db.cloud_schema, cx.db.usage_schema),
        format!(
            "{} in total; a backup takes about {} at 50 MiB/s",
            human_bytes(total),
            if secs < 120 {
                format!("{secs} s")
            } else {
                format!("{} min", secs / 60)
            }
        ),
    ));
    out
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn cluster_quiesced(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::CLUSTER_QUIESCED;
    if let Some(f) = no_cloud_schema(cx, id, s) {
        return f;
    }
    let live: Vec<_> = s
        .mshosts
        .iter()
        .filter(|m| !m.removed && m.state != "Down" && Some(m.msid) != cx.except_msid)
        .collect();
    if live.is_empty() {
        let n = s.mshosts.iter().filter(|m| !m.removed).count();
        return vec![Finding::pass(
            id,
            table(cx, "mshost"),
            format!("none of {n} management server(s) in mshost is Up"),
        )];
    }
    live.iter()
        .map(|m| {
            Finding::new(
                id,
                Severity::Fail,
                format!("{} msid={}", table(cx, "mshost"), m.msid),
                format!(
                    "management server {} ({}, msid {}) is {} in mshost (version {}, last update {})",
                    m.name.as_deref().unwrap_or("?"),
                    m.service_ip,
                    m.msid,
                    m.state,
                    m.version.as_deref().unwrap_or("?"),
                    m.last_update.as_deref().unwrap_or("never")
                ),
            )
            .with_remedy(format!(
                "stop cloudstack-management and cloudstack-usage on {}; if that server is gone, mark it: \
                 UPDATE mshost SET state='Down' WHERE msid={}",
                m.service_ip, m.msid
            ))
        })
        .collect()
}

/// Where a management package carries the system VM templates its upgrade registers itself
/// (`SystemVmTemplateRegistration.ABSOLUTE_TEMPLATE_PATH`, with `metadata.ini`).
pub const SYSTEMVM_BUNDLE_DIR: &str = "/usr/share/cloudstack-management/templates/systemvm";

/// Whether the upgrade to `target` registers a missing system VM template itself, from the file
/// bundled in its `cloudstack-management` package (`SystemVmTemplateRegistration.registerTemplates`,
/// called from `updateSystemVmTemplates` for a hypervisor in use whose template is not
/// registered; it fails with "Cannot upgrade system Vms" when the bundled file is missing or
/// its checksum differs, apache/cloudstack #12077). From 4.16.0.0 (`Upgrade41520to41600`
/// delegates to `SystemVmTemplateRegistration`); UNCONFIRMED: whether every 4.16.x package
/// build carries the files (they ship only in builds made with the system VM templates).
///
/// ```
/// assert!(cs_schema::auto_registers_systemvm_template(&"4.18.0.0".parse()?));
/// assert!(!cs_schema::auto_registers_systemvm_template(&"4.15.2.0".parse()?));
/// # Ok::<(), cs_core::VersionError>(())
/// ```
pub fn auto_registers_systemvm_template(target: &CsVersion) -> bool {
    *target >= CsVersion::new3(4, 16, 0)
}

/// The bundled file for `hv` among `files`, as `SystemVmTemplateRegistration.validateTemplates`
/// matches it (the file name contains the hypervisor's name, `xen` for XenServer, `ovm` for
/// Ovm3), restricted to the target's `major.minor` so that an older package's files do not count.
fn bundled_file<'a>(files: &'a [String], target: &CsVersion, hv: Hypervisor) -> Option<&'a str> {
    let token = match hv {
        Hypervisor::XenServer => "xen".to_string(),
        Hypervisor::Ovm3 => "ovm".to_string(),
        other => other.as_db().to_ascii_lowercase(),
    };
    let prefix = format!("systemvmtemplate-{}.{}.", target.major(), target.minor());
    files
        .iter()
        .map(String::as_str)
        .find(|f| f.starts_with(&prefix) && f.to_ascii_lowercase().contains(&token))
}

fn systemvm_templates_ready(cx: &DbContext, s: &SchemaState) -> Vec<Finding> {
    let id = ids::SYSTEMVM_TEMPLATES_READY;
    if let Some(f) = no_cloud_schema(cx, id, s) {
        return f;
    }
    let mut out = Vec::new();
    let zones: Vec<u64> = {
        let mut z: Vec<u64> = s.image_stores.iter().filter_map(|i| i.zone_id).collect();
        z.sort_unstable();
        z.dedup();
        z
    };
    // The upgrade counts the hypervisors of clusters as in use
    // (`SystemVmTemplateRegistration.updateSystemVmTemplates`:
    // `clusterDao.getDistictAvailableHypervisorsAcrossClusters()`), hosts or not: a cluster
    // without hosts still needs its template (apache/cloudstack #5041), and a hypervisor with
    // no cluster is skipped ("hypervisor is not used, so not failing upgrade").
    // UNCONFIRMED: apache/cloudstack #12092 (hosts instead of clusters) in later releases.
    let mut in_use: Vec<Hypervisor> = Vec::new();
    for name in s.hypervisors_in_use.iter().chain(&s.cluster_hypervisors) {
        if let Some(hv) = Hypervisor::from_db(name)
            && !in_use.contains(&hv)
        {
            in_use.push(hv);
        }
    }
    for hv in in_use {
        let has_hosts = s
            .hypervisors_in_use
            .iter()
            .any(|h| h.eq_ignore_ascii_case(hv.as_db()));
        let hostless = if has_hosts {
            String::new()
        } else {
            format!(" ({hv} has a cluster but no live host; the upgrade still counts it as in use)")
        };
        let want = systemvm_template_name(&cx.target, hv);
        let subject = format!("{} {want}", table(cx, "vm_template"));
        let found: Vec<_> = s
            .systemvm_templates
            .iter()
            .filter(|t| {
                (t.name == want || t.name.starts_with(&format!("{want}-")))
                    && t.hypervisor
                        .as_deref()
                        .is_none_or(|h| h.eq_ignore_ascii_case(hv.as_db()))
            })
            .collect();
        // The newest one of that name, as `getRegisteredTemplateId` takes it.
        let Some(active) = found
            .iter()
            .rev()
            .find(|t| t.state.as_deref() == Some("Active"))
        else {
            let auto = auto_registers_systemvm_template(&cx.target);
            let mut remedy = format!(
                "register {want} for {hv} (Templates > Register template, as the upgrade guide says) before the upgrade"
            );
            let (severity, msg) = if !found.is_empty() {
                (
                    Severity::Fail,
                    format!(
                        "{want} is registered but not Active (state {}){hostless}",
                        found[0].state.as_deref().unwrap_or("NULL")
                    ),
                )
            } else if cx.registers_systemvm_template {
                (
                    Severity::Info,
                    format!(
                        "{want} is not registered yet; the run registers it first and waits until it is Ready in every zone"
                    ),
                )
            } else if let (true, Some(files)) = (auto, &cx.bundled_systemvm_files) {
                match bundled_file(files, &cx.target, hv) {
                    Some(f) => (
                        Severity::Info,
                        format!(
                            "{want} is not registered; the upgrade registers it from the bundled {SYSTEMVM_BUNDLE_DIR}/{f}"
                        ),
                    ),
                    None => {
                        remedy = format!(
                            "put the target's {hv} template file (https://download.cloudstack.org/systemvm/{}/) in \
                             {SYSTEMVM_BUNDLE_DIR} on every management server, or {remedy}",
                            cx.target.line()
                        );
                        (
                            Severity::Fail,
                            format!(
                                "{want} (hypervisor {hv}, in use) is not registered, and no systemvmtemplate-{}.* file for {hv} \
                                 is in {SYSTEMVM_BUNDLE_DIR} on every management server: the upgrade fails \
                                 ('Cannot upgrade system Vms', #12077){hostless}",
                                cx.target.line()
                            ),
                        )
                    }
                }
            } else if cx.bundled_systemvm_templates {
                (
                    Severity::Info,
                    format!(
                        "{want} is not registered; the target package carries it and registers it during the upgrade"
                    ),
                )
            } else if auto {
                remedy = format!(
                    "make sure the target's cloudstack-management package carries the {hv} template in \
                     {SYSTEMVM_BUNDLE_DIR} (metadata.ini and the file), or {remedy}"
                );
                (
                    Severity::Warn,
                    format!(
                        "{want} is not registered; {} registers it from the file bundled in its package, \
                         which was not looked at here{hostless}",
                        cx.target
                    ),
                )
            } else {
                (
                    Severity::Fail,
                    format!("{want} (hypervisor {hv}, in use) is not registered{hostless}"),
                )
            };
            if !has_hosts {
                remedy.push_str(&format!(
                    "; or remove the {hv} cluster(s) without hosts before upgrading"
                ));
            }
            out.push(Finding::new(id, severity, subject, msg).with_remedy(remedy));
            continue;
        };
        let missing: Vec<String> = zones
            .iter()
            .filter(|z| {
                !s.image_stores
                    .iter()
                    .filter(|i| i.zone_id == Some(**z))
                    .any(|i| active.ready_on_stores.contains(&i.id))
            })
            .map(|z| {
                let names: Vec<&str> = s
                    .image_stores
                    .iter()
                    .filter(|i| i.zone_id == Some(*z))
                    .map(|i| i.name.as_str())
                    .collect();
                format!("zone {z} ({})", names.join(", "))
            })
            .collect();
        if !missing.is_empty() && cx.registers_systemvm_template {
            out.push(Finding::new(
                id,
                Severity::Info,
                subject,
                format!(
                    "{want} (id {}) is not Ready yet on the image store of {}; the run waits for it before it changes anything",
                    active.id,
                    missing.join("; ")
                ),
            ));
        } else if missing.is_empty() {
            out.push(Finding::pass(
                id,
                subject,
                format!(
                    "{want} (id {}) is Active and Ready on the image stores of {} zone(s){}",
                    active.id,
                    zones.len(),
                    if active.kind == "SYSTEM" {
                        ""
                    } else {
                        " (registered as a USER template: the upgrade makes it SYSTEM)"
                    }
                ),
            ));
        } else {
            out.push(
                Finding::new(
                    id,
                    Severity::Fail,
                    subject,
                    format!("{want} (id {}) is not Ready on the image store of {}", active.id, missing.join("; ")),
                )
                .with_remedy("wait for the download to finish, or copy the template to those zones, before upgrading"),
            );
        }
    }
    // apache/cloudstack #4502: after 4.14 -> 4.15, system VMs with the 4.15 template do not
    // start on XenServer 7.0, 7.1 and 7.4 hosts. UNCONFIRMED: which later release, if any, made
    // the template start there again; so every target from 4.15 is warned.
    if cx.target >= CsVersion::new3(4, 15, 0) {
        for (hv, version) in &s.host_hypervisor_versions {
            let old_xen = hv.eq_ignore_ascii_case("XenServer")
                && ["7.0", "7.1", "7.4"]
                    .iter()
                    .any(|v| version == v || version.starts_with(&format!("{v}.")));
            if old_xen {
                out.push(
                    Finding::new(
                        id,
                        Severity::Warn,
                        format!("{} XenServer {version}", table(cx, "host")),
                        format!(
                            "XenServer {version} hosts: system VMs with the template of {} may not start there \
                             (seen from 4.15 on XenServer 7.0/7.1/7.4, apache/cloudstack #4502)",
                            cx.target
                        ),
                    )
                    .with_remedy(
                        "upgrade those XenServer hosts (7.5 or later) before the upgrade, or test the \
                         target's system VM template on one of them first",
                    ),
                );
            }
        }
    }
    if out.is_empty() {
        out.push(Finding::new(
            id,
            Severity::Skip,
            table(cx, "host"),
            "no hypervisor in use (no cluster, no live Routing host)",
        ));
    }
    out
}
