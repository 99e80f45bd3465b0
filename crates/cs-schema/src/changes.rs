//! What a running cloud has written since a moment: rows created or changed after it in the
//! tables that describe tenants' resources and their history, and the user VMs created after
//! it. This is what restoring a backup taken at that moment would discard. Read-only.

use mysql::prelude::Queryable;
use serde::Serialize;

use crate::state::{connect, ident, q};
use crate::{DbTarget, Error, Result};

/// The `cloud` tables whose rows a restore would take back, in this order: resources, then
/// their history. Tables a schema does not have are left out.
pub const TABLES_THAT_MATTER: &[&str] = &[
    "vm_instance",
    "volumes",
    "networks",
    "nics",
    "user_ip_address",
    "snapshots",
    "event",
    "usage_event",
    "async_job",
];

/// Rows of one table created or changed since the moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableChanges {
    /// `cloud.<table>`.
    pub table: String,
    /// Rows created after the moment.
    pub created: u64,
    /// Rows created before it and changed (updated or removed) after it.
    pub changed: u64,
}

/// A user VM created after the moment: after a restore, CloudStack would not know it while it
/// may still run on its hypervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewVm {
    /// `uuid`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `state`.
    pub state: String,
    /// The name of the host it is on, when it is on one.
    pub host: Option<String>,
    /// `created`.
    pub created: String,
}

/// Everything written since the moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangesSince {
    /// The moment (`YYYY-MM-DD hh:mm:ss`, UTC, as CloudStack stores times).
    pub since: String,
    /// Per table, only those with changes.
    pub tables: Vec<TableChanges>,
    /// User VMs created since.
    pub new_vms: Vec<NewVm>,
}

impl ChangesSince {
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.new_vms.is_empty()
    }
}

/// The column of `table` that says when a row was last changed, among CloudStack's names.
const CHANGED_COLUMNS: &[&str] = &["update_time", "updated", "last_updated", "removed"];

/// Reads what the cloud wrote after `since` (`YYYY-MM-DD hh:mm:ss`, UTC) in
/// [`TABLES_THAT_MATTER`], and the user VMs created after it.
///
/// # Errors
/// [`Error::Connect`], [`Error::Query`]; [`Error::Query`] too for a `since` that is not a
/// time of that form.
pub async fn changes_since(target: &DbTarget, since: &str) -> Result<ChangesSince> {
    let valid = since.len() == 19
        && since.bytes().enumerate().all(|(i, b)| {
            matches!((i, b), (4 | 7, b'-') | (10, b' ') | (13 | 16, b':')) || b.is_ascii_digit()
        });
    if !valid {
        return Err(Error::Query {
            what: format!("`{since}` is not a time like 2026-12-07 10:15:00"),
            source: "invalid time".into(),
        });
    }
    let (target, since) = (target.clone(), since.to_string());
    tokio::task::spawn_blocking(move || read(&target, &since))
        .await
        .map_err(|e| Error::Task(Box::new(e)))?
}

fn read(target: &DbTarget, since: &str) -> Result<ChangesSince> {
    let mut conn = connect(&target.url)?;
    let schema = &target.cloud_schema;
    let c = ident(schema);
    let mut out = ChangesSince {
        since: since.to_string(),
        ..ChangesSince::default()
    };
    for table in TABLES_THAT_MATTER {
        let columns: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (schema, table),
            )
            .map_err(q("list a table's columns"))?;
        if !columns.iter().any(|c| c == "created") {
            continue;
        }
        let created: Option<u64> = conn
            .exec_first(
                format!(
                    "SELECT COUNT(*) FROM {c}.{} WHERE `created` > ?",
                    ident(table)
                ),
                (since,),
            )
            .map_err(q("count created rows"))?;
        let changed_cols: Vec<&&str> = CHANGED_COLUMNS
            .iter()
            .filter(|col| columns.iter().any(|c| c == **col))
            .collect();
        let changed: Option<u64> = if changed_cols.is_empty() {
            Some(0)
        } else {
            let any: Vec<String> = changed_cols
                .iter()
                .map(|col| format!("{} > ?", ident(col)))
                .collect();
            let params: Vec<mysql::Value> = std::iter::once(since.into())
                .chain(changed_cols.iter().map(|_| since.into()))
                .collect();
            conn.exec_first(
                format!(
                    "SELECT COUNT(*) FROM {c}.{} WHERE `created` <= ? AND ({})",
                    ident(table),
                    any.join(" OR ")
                ),
                params,
            )
            .map_err(q("count changed rows"))?
        };
        let (created, changed) = (created.unwrap_or(0), changed.unwrap_or(0));
        if created + changed > 0 {
            out.tables.push(TableChanges {
                table: format!("{schema}.{table}"),
                created,
                changed,
            });
        }
    }
    /// `uuid`, `name`, `state`, the host's name, `created`.
    type Row = (Option<String>, String, String, Option<String>, String);
    let vms: Vec<Row> = conn
        .exec(
            format!(
                "SELECT v.`uuid`, v.`name`, v.`state`, h.`name`, CAST(v.`created` AS CHAR) \
                 FROM {c}.`vm_instance` v LEFT JOIN {c}.`host` h ON h.`id` = v.`host_id` \
                 WHERE v.`type` = 'User' AND v.`removed` IS NULL AND v.`created` > ? \
                 ORDER BY v.`id`"
            ),
            (since,),
        )
        .map_err(q("list the VMs created since"))?;
    out.new_vms = vms
        .into_iter()
        .map(|(id, name, state, host, created)| NewVm {
            id: id.unwrap_or_default(),
            name,
            state,
            host,
            created,
        })
        .collect();
    Ok(out)
}
