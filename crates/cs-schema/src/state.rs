//! A live schema's state, read over the `mysql` crate (blocking, inside `spawn_blocking`).

use std::collections::BTreeSet;

use cs_core::{CsVersion, DbUrl};
use mysql::prelude::Queryable;
use serde::Serialize;

use crate::{Error, Result};

/// Where the CloudStack schemas are: a server (as a [`DbUrl`]) and the names of the `cloud` and
/// `cloud_usage` schemas (tests use their own names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTarget {
    /// The server and user.
    pub url: DbUrl,
    /// The `cloud` schema's name.
    pub cloud_schema: String,
    /// The `cloud_usage` schema's name.
    pub usage_schema: String,
}

impl DbTarget {
    /// Schemas with their own names.
    pub fn new(url: DbUrl, cloud_schema: &str, usage_schema: &str) -> Self {
        DbTarget {
            url,
            cloud_schema: cloud_schema.to_string(),
            usage_schema: usage_schema.to_string(),
        }
    }

    /// CloudStack's default names, `cloud` and `cloud_usage`.
    pub fn cloudstack(url: DbUrl) -> Self {
        DbTarget::new(url, "cloud", "cloud_usage")
    }
}

/// One row of `cloud.version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRow {
    /// `id`.
    pub id: u64,
    /// `version` as stored.
    pub version: String,
    /// `updated` (`YYYY-MM-DD hh:mm:ss`).
    pub updated: String,
    /// `step` (`Complete`, `Upgrade`, …).
    pub step: String,
}

impl VersionRow {
    /// Whether `step` is `Complete`.
    pub fn is_complete(&self) -> bool {
        self.step == "Complete"
    }

    /// The version, parsed (`None` when it does not parse).
    pub fn parsed(&self) -> Option<CsVersion> {
        CsVersion::parse(&self.version).ok()
    }
}

/// The rows of `cloud.version`, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionTable {
    /// Every row, ascending by id.
    pub rows: Vec<VersionRow>,
}

impl VersionTable {
    /// The row `VersionDao.getCurrentVersion` reads: the newest (by id) `Complete` row.
    pub fn current_row(&self) -> Option<&VersionRow> {
        self.rows.iter().rev().find(|r| r.is_complete())
    }

    /// The current version, parsed.
    pub fn current(&self) -> Option<CsVersion> {
        self.current_row().and_then(VersionRow::parsed)
    }

    /// Rows whose step is not `Complete`.
    pub fn incomplete(&self) -> impl Iterator<Item = &VersionRow> {
        self.rows.iter().filter(|r| !r.is_complete())
    }

    /// The newest row by id, when it is not the current (newest `Complete`) row.
    pub fn newest_if_not_current(&self) -> Option<&VersionRow> {
        let newest = self.rows.last()?;
        match self.current_row() {
            Some(c) if c.id == newest.id => None,
            _ => Some(newest),
        }
    }
}

/// One row of `cloud.mshost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MsHost {
    /// `id`.
    pub id: u64,
    /// `msid`.
    pub msid: u64,
    /// `name`.
    pub name: Option<String>,
    /// `state` (`Up`, `Down`, `PreparingToShutDown`, …).
    pub state: String,
    /// `version`.
    pub version: Option<String>,
    /// `service_ip`.
    pub service_ip: String,
    /// `last_update`.
    pub last_update: Option<String>,
    /// Whether `removed` is set.
    pub removed: bool,
}

/// Database server vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Vendor {
    /// MariaDB.
    MariaDb,
    /// Oracle MySQL (or a compatible server that does not say MariaDB).
    MySql,
}

/// The server's identity and global settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// Vendor.
    pub vendor: Vendor,
    /// `VERSION()` as reported (`10.11.6-MariaDB-0+deb12u1`).
    pub version: String,
    /// `(major, minor, patch)` of the server version.
    pub number: (u32, u32, u32),
    /// `@@GLOBAL.sql_mode`.
    pub global_sql_mode: String,
}

impl ServerInfo {
    /// Whether the global `sql_mode` contains `mode` (case-insensitive, whole word).
    pub fn has_sql_mode(&self, mode: &str) -> bool {
        self.global_sql_mode
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case(mode))
    }
}

/// A stored routine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Routine {
    /// Schema.
    pub schema: String,
    /// Name as stored.
    pub name: String,
    /// `PROCEDURE` or `FUNCTION`.
    pub kind: String,
}

/// A row an operator added (user-defined guest OS data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomRow {
    /// The table (`guest_os`).
    pub table: String,
    /// The row's id.
    pub id: u64,
    /// A name to show.
    pub name: String,
}

/// A registered system VM template and where it is ready: a SYSTEM template, or one named
/// `systemvm-…` of any type (an operator registers the target's template as a USER template,
/// as the upgrade guide says, and the upgrade finds it by name and makes it SYSTEM:
/// `SystemVmTemplateRegistration.getRegisteredTemplateId` / `updateRegisteredTemplateDetails`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemTemplate {
    /// `vm_template.id`.
    pub id: u64,
    /// `name`.
    pub name: String,
    /// `type` (`SYSTEM`, `USER`, …).
    pub kind: String,
    /// `hypervisor_type`.
    pub hypervisor: Option<String>,
    /// `state` (`Active`, `Inactive`, …).
    pub state: Option<String>,
    /// Image stores holding it `Ready` (and not destroyed).
    pub ready_on_stores: Vec<u64>,
}

/// An image (secondary) store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageStore {
    /// `id`.
    pub id: u64,
    /// `name`.
    pub name: String,
    /// `data_center_id` (the zone), `None` for region-wide stores.
    pub zone_id: Option<u64>,
}

/// Rows and bytes of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSize {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Rows (exact for tables under 200 000 rows, else the server's estimate).
    pub rows: u64,
    /// Data and index bytes.
    pub bytes: u64,
}

/// Everything the database checks read, in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaState {
    /// Server identity and `sql_mode`.
    pub server: ServerInfo,
    /// Whether the `cloud` schema exists.
    pub cloud_exists: bool,
    /// Whether the `cloud_usage` schema exists.
    pub usage_exists: bool,
    /// Tables of the `cloud` schema.
    pub cloud_tables: BTreeSet<String>,
    /// Tables of the `cloud_usage` schema.
    pub usage_tables: BTreeSet<String>,
    /// `(table, column)` of every column of the `cloud` schema's tables.
    pub cloud_columns: BTreeSet<(String, String)>,
    /// The `version` table, `None` when there is none (a legacy or foreign database).
    pub version: Option<VersionTable>,
    /// `mshost` rows.
    pub mshosts: Vec<MsHost>,
    /// Routines in both schemas.
    pub routines: Vec<Routine>,
    /// The connecting user's `SHOW GRANTS` lines.
    pub grants: Vec<String>,
    /// User-defined guest OS data.
    pub customisations: Vec<CustomRow>,
    /// Hypervisor types of live Routing hosts.
    pub hypervisors_in_use: Vec<String>,
    /// `(hypervisor type, hypervisor version)` of live Routing hosts, distinct.
    pub host_hypervisor_versions: Vec<(String, String)>,
    /// Hypervisor types of clusters not removed, which is what the upgrade's system VM
    /// template registration counts as in use (`ClusterDao.getDistictAvailableHypervisorsAcrossClusters`
    /// in `SystemVmTemplateRegistration.updateSystemVmTemplates`), hosts or not.
    pub cluster_hypervisors: Vec<String>,
    /// Registered system VM templates (type `SYSTEM`, not removed).
    pub systemvm_templates: Vec<SystemTemplate>,
    /// `(vm type, template id)` of live system VMs and routers.
    pub templates_in_use: Vec<(String, u64)>,
    /// Live image stores.
    pub image_stores: Vec<ImageStore>,
    /// Sizes of every table in both schemas.
    pub table_sizes: Vec<TableSize>,
    /// `COLUMN_DEFAULT` of `nics.update_time` (`None` when the column is missing, `Some(None)`
    /// when it has no default).
    pub nics_update_time_default: Option<Option<String>>,
}

impl SchemaState {
    /// Whether the connecting user has privileges on `schema` (through `*.*` or the schema).
    pub fn has_grants_on(&self, schema: &str) -> bool {
        self.grants.iter().any(|g| grant_covers(g, schema))
    }
}

fn grant_covers(grant: &str, schema: &str) -> bool {
    let upper = grant.to_ascii_uppercase();
    if upper.starts_with("GRANT USAGE ON") || upper.starts_with("GRANT PROXY") {
        return false;
    }
    let Some(on) = upper.find(" ON ") else {
        return false;
    };
    let rest = &grant[on + 4..];
    let object = rest.split(" TO ").next().unwrap_or("").trim();
    let db = object.split('.').next().unwrap_or("");
    let db = db.trim_matches('`').replace('\\', "");
    db == "*" || db == schema
}

/// Reads the state of `target`'s schemas (blocking work runs on a blocking thread).
///
/// # Errors
/// [`Error::Connect`] when the server cannot be reached, [`Error::Query`] when a read fails.
pub async fn read_state(target: &DbTarget) -> Result<SchemaState> {
    let target = target.clone();
    tokio::task::spawn_blocking(move || read_state_blocking(&target))
        .await
        .map_err(|e| Error::Task(Box::new(e)))?
}

pub(crate) fn connect(url: &DbUrl) -> Result<mysql::Conn> {
    // Version rows, catalog and check queries: short statements, so a server silent for a
    // reply period is an error rather than a hang. Keepalive, TCP_USER_TIMEOUT and TLS come
    // from the URL (`DbUrl::mysql_opts`).
    let opts = url.mysql_opts().read_timeout(Some(url.deadlines.reply));
    url.mysql_connect(opts).map_err(|e| Error::Connect {
        addr: url.addr(),
        source: Box::new(e),
    })
}

pub(crate) fn q(what: &str) -> impl FnOnce(mysql::Error) -> Error + '_ {
    move |e| Error::Query {
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// Backquotes an identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

pub(crate) fn read_versions(conn: &mut mysql::Conn, cloud: &str) -> Result<Vec<VersionRow>> {
    let sql = format!(
        "SELECT id, version, CAST(updated AS CHAR), step FROM {}.`version` ORDER BY id",
        ident(cloud)
    );
    conn.query_map(
        sql,
        |(id, version, updated, step): (u64, String, Option<String>, String)| VersionRow {
            id,
            version: version.trim().to_string(),
            updated: updated.unwrap_or_default(),
            step,
        },
    )
    .map_err(q("read the version table"))
}

fn parse_server_number(v: &str) -> (u32, u32, u32) {
    let core = v.split(['-', '+', ' ']).next().unwrap_or("");
    let mut it = core.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// `mshost` columns as the query returns them.
type MsHostRow = (
    u64,
    u64,
    Option<String>,
    String,
    Option<String>,
    String,
    Option<String>,
    bool,
);

fn read_state_blocking(t: &DbTarget) -> Result<SchemaState> {
    let mut conn = connect(&t.url)?;
    let (version, comment, sql_mode): (String, Option<String>, String) = conn
        .query_first("SELECT VERSION(), @@version_comment, @@GLOBAL.sql_mode")
        .map_err(q("read the server version"))?
        .ok_or_else(|| Error::Schema("SELECT VERSION() returned no row".into()))?;
    let vendor = if version.to_ascii_lowercase().contains("mariadb")
        || comment
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().contains("mariadb"))
    {
        Vendor::MariaDb
    } else {
        Vendor::MySql
    };
    let server = ServerInfo {
        vendor,
        number: parse_server_number(&version),
        version,
        global_sql_mode: sql_mode,
    };
    let (cloud, usage) = (t.cloud_schema.as_str(), t.usage_schema.as_str());
    let schemas: Vec<String> = conn
        .exec(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name IN (?, ?)",
            (cloud, usage),
        )
        .map_err(q("list schemas"))?;
    let tables: Vec<(String, String, Option<u64>, Option<u64>)> = conn
        .exec(
            "SELECT table_schema, table_name, table_rows, COALESCE(data_length, 0) + COALESCE(index_length, 0) \
             FROM information_schema.tables WHERE table_schema IN (?, ?) AND table_type = 'BASE TABLE'",
            (cloud, usage),
        )
        .map_err(q("list tables"))?;
    let in_schema = |s: &str| -> BTreeSet<String> {
        tables
            .iter()
            .filter(|t| t.0 == s)
            .map(|t| t.1.clone())
            .collect()
    };
    let cloud_tables = in_schema(cloud);
    let usage_tables = in_schema(usage);
    let has = |t: &str| cloud_tables.contains(t);
    let cloud_columns: BTreeSet<(String, String)> = conn
        .exec::<(String, String), _, _>(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?",
            (cloud,),
        )
        .map_err(q("list columns"))?
        .into_iter()
        .collect();
    // Columns later releases added are read only where they exist, so that an older schema
    // still gives every check its state (and a report) instead of a failed query.
    let has_col = |t: &str, c: &str| cloud_columns.contains(&(t.to_string(), c.to_string()));
    let c = ident(cloud);

    let version = if has("version") {
        Some(VersionTable {
            rows: read_versions(&mut conn, cloud)?,
        })
    } else {
        None
    };

    let mshosts = if has("mshost") {
        conn.query_map(
            format!(
                "SELECT id, msid, name, state, version, service_ip, CAST(last_update AS CHAR), removed IS NOT NULL \
                 FROM {c}.`mshost` ORDER BY id"
            ),
            |(id, msid, name, state, version, service_ip, last_update, removed): MsHostRow| MsHost {
                id,
                msid,
                name,
                state,
                version,
                service_ip,
                last_update,
                removed,
            },
        )
        .map_err(q("read mshost"))?
    } else {
        Vec::new()
    };

    let routines: Vec<Routine> = conn
        .exec_map(
            "SELECT routine_schema, routine_name, routine_type FROM information_schema.routines \
             WHERE routine_schema IN (?, ?) ORDER BY routine_schema, routine_name",
            (cloud, usage),
            |(schema, name, kind): (String, String, String)| Routine { schema, name, kind },
        )
        .map_err(q("list routines"))?;

    let grants: Vec<String> = conn.query("SHOW GRANTS").map_err(q("SHOW GRANTS"))?;

    let mut customisations = Vec::new();
    if has("guest_os") && has_col("guest_os", "is_user_defined") {
        let rows: Vec<(u64, String)> = conn
            .query(format!(
                "SELECT id, display_name FROM {c}.`guest_os` WHERE is_user_defined = 1 AND removed IS NULL ORDER BY id"
            ))
            .map_err(q("read guest_os"))?;
        customisations.extend(rows.into_iter().map(|(id, name)| CustomRow {
            table: "guest_os".into(),
            id,
            name,
        }));
    }
    if has("guest_os_hypervisor") && has_col("guest_os_hypervisor", "is_user_defined") {
        let rows: Vec<(u64, String, String)> = conn
            .query(format!(
                "SELECT id, hypervisor_type, guest_os_name FROM {c}.`guest_os_hypervisor` \
                 WHERE is_user_defined = 1 AND removed IS NULL ORDER BY id"
            ))
            .map_err(q("read guest_os_hypervisor"))?;
        customisations.extend(rows.into_iter().map(|(id, hv, name)| CustomRow {
            table: "guest_os_hypervisor".into(),
            id,
            name: format!("{hv}: {name}"),
        }));
    }
    if has("guest_os_details") {
        let rows: Vec<(u64, u64, String)> = conn
            .query(format!(
                "SELECT id, guest_os_id, name FROM {c}.`guest_os_details` ORDER BY id"
            ))
            .map_err(q("read guest_os_details"))?;
        customisations.extend(rows.into_iter().map(|(id, os, name)| CustomRow {
            table: "guest_os_details".into(),
            id,
            name: format!("guest_os {os}: {name}"),
        }));
    }
    if has("guest_os_category") {
        let rows: Vec<(u64, String)> = conn
            .query(format!(
                "SELECT id, name FROM {c}.`guest_os_category` ORDER BY id"
            ))
            .map_err(q("read guest_os_category"))?;
        customisations.extend(
            rows.into_iter()
                .filter(|(_, name)| !STOCK_CATEGORIES.contains(&name.as_str()))
                .map(|(id, name)| CustomRow {
                    table: "guest_os_category".into(),
                    id,
                    name,
                }),
        );
    }

    let hypervisors_in_use: Vec<String> = if has("host") {
        conn.query(format!(
            "SELECT DISTINCT hypervisor_type FROM {c}.`host` WHERE removed IS NULL AND type = 'Routing' \
             AND hypervisor_type IS NOT NULL AND status <> 'Removed' ORDER BY hypervisor_type"
        ))
        .map_err(q("read host"))?
    } else {
        Vec::new()
    };

    let host_hypervisor_versions: Vec<(String, String)> = if has("host") {
        conn.query(format!(
            "SELECT DISTINCT hypervisor_type, hypervisor_version FROM {c}.`host` WHERE removed IS NULL \
             AND type = 'Routing' AND hypervisor_type IS NOT NULL AND hypervisor_version IS NOT NULL \
             AND status <> 'Removed' ORDER BY hypervisor_type, hypervisor_version"
        ))
        .map_err(q("read host versions"))?
    } else {
        Vec::new()
    };

    let cluster_hypervisors: Vec<String> = if has("cluster") {
        conn.query(format!(
            "SELECT DISTINCT hypervisor_type FROM {c}.`cluster` WHERE removed IS NULL \
             AND hypervisor_type IS NOT NULL ORDER BY hypervisor_type"
        ))
        .map_err(q("read cluster"))?
    } else {
        Vec::new()
    };

    let mut systemvm_templates: Vec<SystemTemplate> = if has("vm_template") {
        conn.query_map(
            format!(
                "SELECT id, name, type, hypervisor_type, state FROM {c}.`vm_template` \
                 WHERE (type = 'SYSTEM' OR name LIKE 'systemvm-%') AND removed IS NULL ORDER BY id"
            ),
            |(id, name, kind, hypervisor, state): (
                u64,
                String,
                String,
                Option<String>,
                Option<String>,
            )| {
                SystemTemplate {
                    id,
                    name,
                    kind,
                    hypervisor,
                    state,
                    ready_on_stores: Vec::new(),
                }
            },
        )
        .map_err(q("read vm_template"))?
    } else {
        Vec::new()
    };
    if has("template_store_ref") && !systemvm_templates.is_empty() {
        let refs: Vec<(u64, u64)> = conn
            .query(format!(
                "SELECT template_id, store_id FROM {c}.`template_store_ref` \
                 WHERE state = 'Ready' AND COALESCE(destroyed, 0) = 0 AND store_id IS NOT NULL \
                 AND store_role = 'Image'"
            ))
            .map_err(q("read template_store_ref"))?;
        for t in &mut systemvm_templates {
            t.ready_on_stores = refs
                .iter()
                .filter(|(tid, _)| *tid == t.id)
                .map(|(_, s)| *s)
                .collect();
        }
    }
    let templates_in_use: Vec<(String, u64)> = if has("vm_instance") {
        conn.query(format!(
            "SELECT DISTINCT type, vm_template_id FROM {c}.`vm_instance` WHERE removed IS NULL \
             AND type IN ('SecondaryStorageVm', 'ConsoleProxy', 'DomainRouter') ORDER BY type, vm_template_id"
        ))
        .map_err(q("read vm_instance"))?
    } else {
        Vec::new()
    };
    let image_stores: Vec<ImageStore> = if has("image_store") {
        conn.query_map(
            format!(
                "SELECT id, name, data_center_id FROM {c}.`image_store` WHERE removed IS NULL AND role = 'Image' ORDER BY id"
            ),
            |(id, name, zone_id): (u64, String, Option<u64>)| ImageStore { id, name, zone_id },
        )
        .map_err(q("read image_store"))?
    } else {
        Vec::new()
    };

    let mut table_sizes = Vec::new();
    for (schema, table, rows, bytes) in &tables {
        let mut rows = rows.unwrap_or(0);
        if rows < 200_000 {
            let exact: Option<u64> = conn
                .query_first(format!(
                    "SELECT COUNT(*) FROM {}.{}",
                    ident(schema),
                    ident(table)
                ))
                .map_err(q("count rows"))?;
            rows = exact.unwrap_or(0);
        }
        table_sizes.push(TableSize {
            schema: schema.clone(),
            table: table.clone(),
            rows,
            bytes: bytes.unwrap_or(0),
        });
    }
    table_sizes.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));

    let nics_update_time_default = if has("nics") {
        let d: Option<Option<String>> = conn
            .exec_first(
                "SELECT column_default FROM information_schema.columns \
                 WHERE table_schema = ? AND table_name = 'nics' AND column_name = 'update_time'",
                (cloud,),
            )
            .map_err(q("read nics.update_time"))?;
        d
    } else {
        None
    };

    Ok(SchemaState {
        server,
        cloud_exists: schemas.iter().any(|s| s == cloud),
        usage_exists: schemas.iter().any(|s| s == usage),
        cloud_tables,
        usage_tables,
        cloud_columns,
        version,
        mshosts,
        routines,
        grants,
        customisations,
        hypervisors_in_use,
        host_hypervisor_versions,
        cluster_hypervisors,
        systemvm_templates,
        templates_in_use,
        image_stores,
        table_sizes,
        nics_update_time_default,
    })
}

/// Guest OS categories a stock 4.18 schema carries (replay of apache/cloudstack at
/// 0574087284f8, see `cs-lab`'s fixture).
const STOCK_CATEGORIES: &[&str] = &[
    "CentOS", "Debian", "Oracle", "RedHat", "SUSE", "Windows", "Other", "Novel", "Unix", "Ubuntu",
    "None",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_cover_global_and_schema_privileges() {
        let t = |g: &str, s: &str| grant_covers(g, s);
        assert!(t(
            "GRANT ALL PRIVILEGES ON *.* TO `cloud`@`%` IDENTIFIED BY PASSWORD '*x'",
            "cloud"
        ));
        assert!(t(
            "GRANT ALL PRIVILEGES ON `cloud\\_usage`.* TO `cloud`@`%`",
            "cloud_usage"
        ));
        assert!(!t(
            "GRANT ALL PRIVILEGES ON `cloud`.* TO `cloud`@`%`",
            "cloud_usage"
        ));
        assert!(!t("GRANT USAGE ON *.* TO `cloud`@`%`", "cloud"));
    }

    #[test]
    fn server_numbers_parse() {
        assert_eq!(
            parse_server_number("10.11.6-MariaDB-0+deb12u1"),
            (10, 11, 6)
        );
        assert_eq!(parse_server_number("8.0.36"), (8, 0, 36));
    }

    #[test]
    fn the_current_version_is_the_newest_complete_row() {
        let row = |id, v: &str, step: &str| VersionRow {
            id,
            version: v.into(),
            updated: String::new(),
            step: step.into(),
        };
        let t = VersionTable {
            rows: vec![
                row(1, "4.17.2.0", "Complete"),
                row(2, "4.18.0.0", "Complete"),
                row(3, "4.18.1.0", "Upgrade"),
            ],
        };
        assert_eq!(t.current(), Some("4.18.0.0".parse().unwrap()));
        assert_eq!(t.incomplete().count(), 1);
        assert_eq!(t.newest_if_not_current().unwrap().id, 3);
    }
}
