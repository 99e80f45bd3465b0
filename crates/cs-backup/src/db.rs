//! Talking to the server with the `mysql` crate (blocking; callers run this on blocking
//! threads): connections, the catalog of a schema, live checksums.

use std::collections::BTreeMap;
use std::time::Duration;

use cs_core::DbUrl;
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Value};

use crate::checksum::{Algorithm, RowSum};
use crate::manifest::{RoutineEntry, TriggerEntry};
use crate::sql::ident;
use crate::{Error, Result};

/// MySQL error codes that mean "you may not".
const DENIED: &[u16] = &[1044, 1045, 1142, 1143, 1227, 1370, 1410, 1698, 1044];

/// Maps a driver error to [`Error::Privilege`] or [`Error::Database`].
pub(crate) fn db_err(user: &str, what: impl Into<String>, e: mysql::Error) -> Error {
    let what = what.into();
    match &e {
        mysql::Error::MySqlError(me) if DENIED.contains(&me.code) => Error::Privilege {
            user: user.to_string(),
            what,
            source: Box::new(e),
        },
        _ => Error::Database {
            what,
            source: Box::new(e),
        },
    }
}

/// A connection plus the user name for error messages.
pub(crate) struct Db {
    pub(crate) conn: Conn,
    pub(crate) user: String,
    /// Whether `character_set_results` is NULL (values as stored) rather than `utf8mb4`.
    raw_results: bool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("user", &self.user).finish()
    }
}

/// Connects with `utf8mb4`, UTC and a permissive `sql_mode` (zero dates load as they are).
pub(crate) fn connect(url: &DbUrl) -> Result<Db> {
    let opts = OptsBuilder::new()
        .ip_or_hostname(Some(url.host.clone()))
        .tcp_port(url.port)
        .user(Some(url.user.clone()))
        .pass(Some(url.password.expose().to_string()))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(15)))
        .init(vec![
            "SET NAMES utf8mb4",
            "SET time_zone = '+00:00'",
            "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
            "SET SESSION net_read_timeout = 3600, net_write_timeout = 3600",
        ]);
    let conn = Conn::new(opts).map_err(|e| {
        let user = url.user.clone();
        match &e {
            mysql::Error::MySqlError(me) if DENIED.contains(&me.code) => Error::Connect {
                addr: url.addr(),
                user,
                source: Box::new(e),
            },
            _ => Error::Connect {
                addr: url.addr(),
                user,
                source: Box::new(e),
            },
        }
    })?;
    Ok(Db {
        conn,
        user: url.user.clone(),
        raw_results: false,
    })
}

impl Db {
    /// Runs a `SELECT` of `table`'s stored columns (rows matching the `WHERE` clause `filter`
    /// when given) and calls `row` with each row's values. The values are the bytes a
    /// `utf8mb4` connection gets; for a [`Table::utf8_only`] table the server sends them as
    /// stored (the same bytes), which spares it converting every value: a tenth of its CPU in
    /// a dump.
    pub(crate) fn select_rows(
        &mut self,
        what: &str,
        schema: &str,
        table: &Table,
        filter: Option<&str>,
        mut row: impl FnMut(&mysql::Row) -> Result<()>,
    ) -> Result<()> {
        let raw = table.utf8_only();
        if raw != self.raw_results {
            let charset = if raw { "NULL" } else { "utf8mb4" };
            self.exec(what, &format!("SET character_set_results = {charset}"))?;
            self.raw_results = raw;
        }
        let sql = format!(
            "SELECT {} FROM {}.{}{}",
            table.select_list(),
            ident(schema),
            ident(&table.name),
            filter.map(|f| format!(" WHERE {f}")).unwrap_or_default()
        );
        let user = self.user.clone();
        let result = self
            .conn
            .query_iter(sql)
            .map_err(|e| db_err(&user, what, e))?;
        for r in result {
            row(&r.map_err(|e| db_err(&user, what, e))?)?;
        }
        Ok(())
    }

    pub(crate) fn exec(&mut self, what: &str, sql: &str) -> Result<()> {
        self.conn
            .query_drop(sql)
            .map_err(|e| db_err(&self.user, what, e))
    }

    /// Rows of text (or NULL) values.
    pub(crate) fn rows(&mut self, what: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let user = self.user.clone();
        let result = self
            .conn
            .query_iter(sql)
            .map_err(|e| db_err(&user, what, e))?;
        let mut out = Vec::new();
        for row in result {
            let row = row.map_err(|e| db_err(&user, what, e))?;
            out.push(row.unwrap().into_iter().map(text).collect());
        }
        Ok(out)
    }

    /// Like [`Db::rows`], but every value must be non-NULL.
    pub(crate) fn strings(&mut self, what: &str, sql: &str) -> Result<Vec<Vec<String>>> {
        Ok(self
            .rows(what, sql)?
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }

    pub(crate) fn one(&mut self, what: &str, sql: &str) -> Result<Option<String>> {
        Ok(self
            .rows(what, sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten())
    }

    pub(crate) fn server(&mut self) -> Result<crate::ServerInfo> {
        let version = self
            .one("read the server version", "SELECT VERSION()")?
            .unwrap_or_default();
        let vendor = if version.to_ascii_lowercase().contains("mariadb") {
            "mariadb"
        } else {
            "mysql"
        };
        Ok(crate::ServerInfo {
            version,
            vendor: vendor.to_string(),
            binlog: None,
        })
    }

    pub(crate) fn schema_exists(&mut self, schema: &str) -> Result<bool> {
        Ok(self
            .one(
                "look up a schema",
                &format!(
                    "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                    crate::sql::literal(schema)
                ),
            )?
            .as_deref()
            == Some("1"))
    }
}

/// A value of the text protocol as text.
pub(crate) fn text(v: Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// `DATA_TYPE` (`int`, `varchar`, `blob`, …).
    pub(crate) data_type: String,
    /// Virtual or stored generated column: not dumped, not checksummed.
    pub(crate) generated: bool,
    /// `CHARACTER_SET_NAME` of a character column (`utf8mb3`, `latin1`, …), `None` for others.
    pub(crate) charset: Option<String>,
}

impl Column {
    /// How the value is written in a dump.
    pub(crate) fn kind(&self) -> ValueKind {
        match self.data_type.as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
            | "numeric" | "float" | "double" | "real" | "year" => ValueKind::Number,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => ValueKind::Binary,
            _ => ValueKind::Text,
        }
    }
}

/// How a value is written in a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// As the server prints it, unquoted.
    Number,
    /// `0x…` hex.
    Binary,
    /// A quoted, escaped string.
    Text,
}

/// A base table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) name: String,
    pub(crate) engine: String,
    pub(crate) est_rows: u64,
    pub(crate) est_bytes: u64,
    pub(crate) columns: Vec<Column>,
    /// Primary key columns, in key order.
    pub(crate) primary_key: Vec<String>,
}

impl Table {
    pub(crate) fn stored(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    /// The single integer primary key column, when there is one (for chunking).
    pub(crate) fn int_key(&self) -> Option<&Column> {
        match self.primary_key.as_slice() {
            [one] => self.columns.iter().find(|c| {
                &c.name == one
                    && matches!(
                        c.data_type.as_str(),
                        "tinyint" | "smallint" | "mediumint" | "int" | "bigint"
                    )
            }),
            _ => None,
        }
    }

    /// Whether every stored character column holds UTF-8 (`utf8mb4`, `utf8mb3`), ASCII or
    /// bytes, so that its values as stored are already what a `utf8mb4` connection reads.
    pub(crate) fn utf8_only(&self) -> bool {
        self.stored().all(|c| {
            c.charset
                .as_deref()
                .is_none_or(|cs| matches!(cs, "utf8mb4" | "utf8mb3" | "utf8" | "ascii" | "binary"))
        })
    }

    /// `SELECT` list of the stored columns.
    pub(crate) fn select_list(&self) -> String {
        self.stored()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The objects of a schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Catalog {
    pub(crate) charset: String,
    pub(crate) collation: String,
    pub(crate) tables: Vec<Table>,
    pub(crate) views: Vec<String>,
    pub(crate) routines: Vec<RoutineEntry>,
    pub(crate) triggers: Vec<TriggerEntry>,
    pub(crate) events: Vec<String>,
}

impl Catalog {
    pub(crate) fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Names of every object, for comparing before and after a backup.
    pub(crate) fn shape(&self) -> String {
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|t| {
                let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                format!("{}({})", t.name, cols.join(","))
            })
            .collect();
        format!(
            "tables {tables:?} views {:?} routines {:?} triggers {:?} events {:?}",
            self.views, self.routines, self.triggers, self.events
        )
    }
}

/// Reads a schema's catalog from `information_schema`.
pub(crate) fn catalog(db: &mut Db, schema: &str) -> Result<Catalog> {
    let s = crate::sql::literal(schema);
    let what = format!("read the catalog of `{schema}`");
    let head = db.strings(
        &what,
        &format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {s}"
        ),
    )?;
    let Some(head) = head.into_iter().next() else {
        return Err(Error::invalid(format!(
            "schema `{schema}` does not exist (or the user cannot see it)"
        )));
    };
    let mut cat = Catalog {
        charset: head[0].clone(),
        collation: head[1].clone(),
        ..Catalog::default()
    };
    for r in db.strings(
        &what,
        &format!(
            "SELECT TABLE_NAME, TABLE_TYPE, IFNULL(ENGINE,''), IFNULL(TABLE_ROWS,0), \
             IFNULL(DATA_LENGTH,0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {s} \
             ORDER BY TABLE_NAME"
        ),
    )? {
        if r[1] == "VIEW" {
            cat.views.push(r[0].clone());
        } else if r[1] == "BASE TABLE" {
            cat.tables.push(Table {
                name: r[0].clone(),
                engine: r[2].clone(),
                est_rows: r[3].parse().unwrap_or(0),
                est_bytes: r[4].parse().unwrap_or(0),
                columns: Vec::new(),
                primary_key: Vec::new(),
            });
        }
    }
    let mut columns: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for r in db.strings(
        &what,
        &format!(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, IFNULL(EXTRA,''), \
             IFNULL(GENERATION_EXPRESSION,''), IFNULL(CHARACTER_SET_NAME,'') \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = {s} ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ),
    )? {
        let extra = r[3].to_ascii_uppercase();
        let generated = extra.contains("VIRTUAL")
            || extra.contains("STORED")
            || extra.contains("PERSISTENT")
            || !r[4].is_empty();
        columns.entry(r[0].clone()).or_default().push(Column {
            name: r[1].clone(),
            data_type: r[2].to_ascii_lowercase(),
            generated,
            charset: (!r[5].is_empty()).then(|| r[5].to_ascii_lowercase()),
        });
    }
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in db.strings(
        &what,
        &format!(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = {s} AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX"
        ),
    )? {
        keys.entry(r[0].clone()).or_default().push(r[1].clone());
    }
    for t in &mut cat.tables {
        t.columns = columns.remove(&t.name).unwrap_or_default();
        t.primary_key = keys.remove(&t.name).unwrap_or_default();
    }
    for r in db.strings(
        &what,
        &format!(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = {s} ORDER BY ROUTINE_TYPE, ROUTINE_NAME"
        ),
    )? {
        cat.routines.push(RoutineEntry {
            kind: r[0].clone(),
            name: r[1].clone(),
        });
    }
    for r in db.strings(
        &what,
        &format!(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = {s} ORDER BY TRIGGER_NAME"
        ),
    )? {
        cat.triggers.push(TriggerEntry {
            name: r[0].clone(),
            table: r[1].clone(),
        });
    }
    for r in db.strings(
        &what,
        &format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {s} \
             ORDER BY EVENT_NAME"
        ),
    )? {
        cat.events.push(r[0].clone());
    }
    Ok(cat)
}

/// The newest row of `schema.version` (CloudStack's version table), as plain text.
pub(crate) fn version_row(
    db: &mut Db,
    schema: &str,
    cat: &Catalog,
) -> Result<Option<BTreeMap<String, Option<String>>>> {
    let Some(table) = cat.table("version") else {
        return Ok(None);
    };
    let order = if table.columns.iter().any(|c| c.name == "id") {
        " ORDER BY `id` DESC"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {} FROM {}.`version`{order} LIMIT 1",
        table.select_list(),
        ident(schema)
    );
    let rows = db.rows(&format!("read `{schema}`.`version`"), &sql)?;
    Ok(rows.into_iter().next().map(|r| {
        table
            .stored()
            .map(|c| c.name.clone())
            .zip(r)
            .collect::<BTreeMap<_, _>>()
    }))
}

/// Checksum and row count of a live table (or a part of it: `filter` is a `WHERE` clause).
pub(crate) fn table_checksum(
    db: &mut Db,
    schema: &str,
    table: &Table,
    filter: Option<&str>,
    algorithm: Algorithm,
) -> Result<RowSum> {
    let what = format!("checksum `{schema}`.`{}`", table.name);
    let mut sum = RowSum::new(algorithm);
    if table.stored().next().is_none() {
        return Ok(sum);
    }
    db.select_rows(&what, schema, table, filter, |row| {
        sum.add((0..row.len()).map(|i| match row.as_ref(i) {
            Some(Value::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        }));
        Ok(())
    })?;
    Ok(sum)
}

/// `SHOW CREATE …` for a routine, trigger, event or view, with the session settings it was
/// created under: `(statement, sql_mode, character_set_client, collation_connection,
/// time_zone)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Definition {
    pub(crate) sql: String,
    pub(crate) sql_mode: String,
    pub(crate) charset_client: String,
    pub(crate) collation_connection: String,
    pub(crate) time_zone: Option<String>,
}

pub(crate) fn show_create(db: &mut Db, schema: &str, kind: &str, name: &str) -> Result<Definition> {
    let what = format!("read the definition of {kind} `{schema}`.`{name}`");
    let sql = format!("SHOW CREATE {kind} {}.{}", ident(schema), ident(name));
    let user = db.user.clone();
    let mut result = db
        .conn
        .query_iter(sql)
        .map_err(|e| db_err(&user, &what, e))?;
    let columns: Vec<String> = result
        .columns()
        .as_ref()
        .iter()
        .map(|c| c.name_str().to_string())
        .collect();
    let row = result
        .next()
        .transpose()
        .map_err(|e| db_err(&user, &what, e))?
        .ok_or_else(|| Error::Database {
            what: what.clone(),
            source: "no definition returned".into(),
        })?;
    drop(result);
    let vals: Vec<Option<String>> = row.unwrap().into_iter().map(text).collect();
    let get = |col: &str| -> Option<String> {
        columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(col))
            .and_then(|i| vals.get(i).cloned().flatten())
    };
    let body_col = match kind {
        "PROCEDURE" => "Create Procedure",
        "FUNCTION" => "Create Function",
        "TRIGGER" => "SQL Original Statement",
        "EVENT" => "Create Event",
        _ => "Create View",
    };
    let sql = get(body_col).ok_or_else(|| Error::Privilege {
        user: db.user.clone(),
        what: format!("{what} (the server returned no body: routine definitions need SELECT on mysql.proc or being the definer)"),
        source: "definition hidden".into(),
    })?;
    Ok(Definition {
        sql,
        sql_mode: get("sql_mode").unwrap_or_default(),
        charset_client: get("character_set_client").unwrap_or_else(|| "utf8mb4".into()),
        collation_connection: get("collation_connection")
            .unwrap_or_else(|| "utf8mb4_general_ci".into()),
        time_zone: get("time_zone"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: &str, charset: Option<&str>, generated: bool) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
            generated,
            charset: charset.map(str::to_string),
        }
    }

    fn table(columns: Vec<Column>) -> Table {
        Table {
            name: "t".into(),
            engine: "InnoDB".into(),
            est_rows: 0,
            est_bytes: 0,
            columns,
            primary_key: vec!["id".into()],
        }
    }

    #[test]
    fn only_utf8_tables_are_read_as_stored() {
        let id = || column("id", "int", None, false);
        for cs in ["utf8mb4", "utf8mb3", "utf8", "ascii", "binary"] {
            let t = table(vec![id(), column("s", "varchar", Some(cs), false)]);
            assert!(t.utf8_only(), "{cs}");
        }
        let latin1 = table(vec![id(), column("s", "varchar", Some("latin1"), false)]);
        assert!(!latin1.utf8_only());
        // A generated column is neither read nor converted.
        let generated = table(vec![id(), column("g", "varchar", Some("latin1"), true)]);
        assert!(generated.utf8_only());
    }
}
