//! Talking to the server (blocking; callers run this on blocking threads): connections, the
//! catalog of a schema, live checksums.
//!
//! Connections go through the `mysql` crate, except those that stream big result sets
//! ([`connect_streaming`]), which use the crate's own [`crate::wire`] client when the server
//! allows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cs_core::DbUrl;
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Value};

use crate::checksum::{Algorithm, RowSum};
use crate::manifest::{RoutineEntry, TriggerEntry};
use crate::sql::ident;
use crate::wire::{self, WireError};
use crate::{Error, Result};

/// MySQL error codes that mean "you may not".
const DENIED: &[u16] = &[1044, 1045, 1142, 1143, 1227, 1370, 1410, 1698];

/// What every connection runs first: `utf8mb4`, UTC and a permissive `sql_mode` (zero dates
/// load as they are).
const INIT: [&str; 4] = [
    "SET NAMES utf8mb4",
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
    "SET SESSION net_read_timeout = 3600, net_write_timeout = 3600",
];

/// Maps a driver error to [`Error::Privilege`] or [`Error::Database`].
pub(crate) fn db_err(user: &str, what: impl Into<String>, e: mysql::Error) -> Error {
    let code = match &e {
        mysql::Error::MySqlError(me) => Some(me.code),
        _ => None,
    };
    classify(user, what.into(), code, Box::new(e))
}

/// Maps an error of the streaming client like [`db_err`]; a failed callback is returned as
/// it is.
fn wire_err(user: &str, what: &str, e: WireError<Error>) -> Error {
    match e {
        WireError::Callback(e) => e,
        WireError::Server(se) => classify(user, what.into(), Some(se.code), Box::new(se)),
        other => classify(user, what.into(), None, Box::new(other)),
    }
}

/// [`wire_err`] for a call without a callback.
fn wire_plain(user: &str, what: &str, e: WireError) -> Error {
    wire_err(user, what, e.widen())
}

fn classify(user: &str, what: String, code: Option<u16>, source: cs_core::BoxError) -> Error {
    match code {
        Some(c) if DENIED.contains(&c) => Error::Privilege {
            user: user.to_string(),
            what,
            source,
        },
        _ => Error::Database { what, source },
    }
}

/// The protocol client under a [`Db`].
enum Link {
    /// The `mysql` crate.
    Driver(Conn),
    /// [`crate::wire`]: statements, text result sets without an allocation per value, and
    /// `LOAD DATA LOCAL` in large packets.
    Wire(wire::Conn),
}

/// A connection plus the user name for error messages.
pub(crate) struct Db {
    link: Link,
    pub(crate) user: String,
    /// Whether `character_set_results` is NULL (values as stored) rather than `utf8mb4`.
    raw_results: bool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("user", &self.user).finish()
    }
}

/// One row of a result: each value as the bytes of the text protocol, `None` for NULL.
pub(crate) enum RowRef<'a> {
    Driver(&'a mysql::Row),
    Wire(wire::Row<'a>),
}

impl RowRef<'_> {
    /// The number of values.
    pub(crate) fn len(&self) -> usize {
        match self {
            RowRef::Driver(r) => r.len(),
            RowRef::Wire(r) => r.len(),
        }
    }

    /// Value `i`; `None` for NULL. (The text protocol sends nothing but bytes and NULL.)
    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        match self {
            RowRef::Driver(r) => match r.as_ref(i) {
                Some(Value::Bytes(b)) => Some(b),
                _ => None,
            },
            RowRef::Wire(r) => r.get(i),
        }
    }

    /// The position of the column named `name` (ASCII case ignored).
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        match self {
            RowRef::Driver(r) => r
                .columns_ref()
                .iter()
                .position(|c| c.name_str().eq_ignore_ascii_case(name)),
            RowRef::Wire(r) => r.position(name),
        }
    }

    /// Adds the row to a table checksum, hashing the packet as received where it can.
    pub(crate) fn add_to(&self, sum: &mut RowSum) {
        match self {
            RowRef::Wire(r) => match r.packet() {
                Some(packet) => sum.add_packet(packet, self.values()),
                None => sum.add(self.values()),
            },
            RowRef::Driver(_) => sum.add(self.values()),
        }
    }

    /// The values in order.
    pub(crate) fn values(&self) -> impl Iterator<Item = Option<&[u8]>> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// The size a bulk insert's rows are sent in: large enough that the round trips do not
/// count, small enough to stay far below a server's `max_allowed_packet` (16 MiB by default).
const BULK_BATCH: usize = 4 << 20;

/// An `INSERT` running as `COM_STMT_BULK_EXECUTE` commands in one transaction (see
/// [`Db::bulk_insert`]): rows are sent in batches of [`BULK_BATCH`] bytes, and nothing counts
/// until [`BulkInsert::commit`].
#[derive(Debug)]
pub(crate) struct BulkInsert<'a> {
    conn: &'a mut wire::Conn,
    user: String,
    what: String,
    id: u32,
    cmd: wire::BulkCommand,
    batch: usize,
    /// The largest command the server takes.
    cap: usize,
    /// Set once committed or rolled back.
    done: bool,
}

impl Drop for BulkInsert<'_> {
    /// A bulk insert abandoned on an error rolls back, so that the connection is not left in
    /// the middle of a transaction.
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.exec("ROLLBACK");
            let _ = self.conn.close_statement(self.id);
        }
    }
}

impl BulkInsert<'_> {
    /// Adds the rows that `encode` appends to the buffer it is given, sending the rows before them first when the batch would grow too big. Returns `None`
    /// when the new rows alone are more than the server takes in one command: they are not
    /// added, and the caller should [`BulkInsert::rollback`] and load another way.
    ///
    /// # Errors
    /// `encode`'s error, or the server's refusal of the rows sent.
    pub(crate) fn add<T>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<T>,
    ) -> Result<Option<T>> {
        let before = self.cmd.buf().len();
        let had_rows = !self.cmd.is_empty();
        let added = match encode(self.cmd.buf()) {
            Ok(added) => added,
            Err(e) => {
                self.cmd.buf().truncate(before);
                return Err(e);
            }
        };
        if self.cmd.len() <= self.batch {
            return Ok(Some(added));
        }
        if had_rows {
            let new = self.cmd.buf().split_off(before);
            self.execute()?;
            self.cmd.buf().extend_from_slice(&new);
        }
        if self.cmd.len() > self.cap {
            // Rows before these are sent already.
            self.cmd.clear();
            return Ok(None);
        }
        Ok(Some(added))
    }

    fn execute(&mut self) -> Result<()> {
        if self.cmd.is_empty() {
            return Ok(());
        }
        self.conn
            .bulk_execute(&mut self.cmd)
            .map_err(|e| wire_plain(&self.user, &self.what, e))?;
        Ok(())
    }

    /// Sends the remaining rows and commits.
    ///
    /// # Errors
    /// The server's refusal of the rows or of the commit.
    pub(crate) fn commit(mut self) -> Result<()> {
        self.execute()?;
        self.end("COMMIT")
    }

    /// Rolls back every row added.
    ///
    /// # Errors
    /// When the connection fails.
    pub(crate) fn rollback(self) -> Result<()> {
        self.end("ROLLBACK")
    }

    fn end(mut self, sql: &str) -> Result<()> {
        self.done = true;
        let err = |e| wire_plain(&self.user, &self.what, e);
        self.conn.exec(sql).map_err(err)?;
        self.conn.close_statement(self.id).map_err(err)
    }

    /// Smaller batches and commands, for tests.
    #[cfg(test)]
    fn with_limits(mut self, batch: usize, cap: usize) -> Self {
        self.batch = batch;
        self.cap = cap;
        self
    }
}

/// The `mysql` crate's options for `url` ([`DbUrl::mysql_opts`]: TCP keepalive and
/// `TCP_USER_TIMEOUT` from its [`cs_core::Deadlines`], its TLS settings), without a default
/// schema, and with `short` a read timeout of [`cs_core::Deadlines::reply`] too.
///
/// The read timeout goes only on connections for catalog and other short queries: the
/// crate cannot ask the server whether a silent statement still runs (as [`crate::wire`]
/// does), and a client that gives up on a statement does not stop it on the server.
pub(crate) fn driver_opts(url: &DbUrl, short: bool) -> OptsBuilder {
    let reply = short.then_some(url.deadlines.reply);
    url.mysql_opts().db_name(None::<String>).read_timeout(reply)
}

/// Connects through the `mysql` crate for catalog reads and other short statements: a
/// server silent for [`cs_core::Deadlines::reply`] is an error.
pub(crate) fn connect_short(url: &DbUrl) -> Result<Db> {
    connect_with(url, driver_opts(url, true))
}

/// [`connect_short`] with reads bounded by `reply` instead (a statement known to wait up to a
/// limit of its own, such as `FLUSH TABLES WITH READ LOCK`, gets that limit plus a reply
/// period).
pub(crate) fn connect_with_reply(url: &DbUrl, reply: Duration) -> Result<Db> {
    connect_with(url, driver_opts(url, true).read_timeout(Some(reply)))
}

/// Connects through the `mysql` crate, for statements that may run long (restore DDL, a
/// `RENAME TABLE` waiting for the cloud's transactions): a dead path or host is noticed by
/// TCP keepalive and `TCP_USER_TIMEOUT`, a statement is never cut on the client's side.
pub(crate) fn connect(url: &DbUrl) -> Result<Db> {
    connect_with(url, driver_opts(url, false))
}

fn connect_with(url: &DbUrl, opts: OptsBuilder) -> Result<Db> {
    let opts = opts.init(INIT.to_vec());
    let conn = url.mysql_connect(opts).map_err(|e| Error::Connect {
        addr: url.addr(),
        user: url.user.clone(),
        source: Box::new(e),
    })?;
    Ok(Db {
        link: Link::Driver(conn),
        user: url.user.clone(),
        raw_results: false,
    })
}

/// Whether [`crate::wire`] may carry a connection to `url`: only when TLS is disabled. The
/// wire client speaks no TLS, so any `ssl-mode` but `DISABLED` (`PREFERRED` included, which
/// encrypts whenever the server can) goes through the `mysql` crate, and a connection the user
/// asked to encrypt is never carried in clear.
pub(crate) fn wire_allowed(url: &DbUrl) -> bool {
    !url.tls.enabled()
}

/// Connects through [`crate::wire`] (which reads big results and sends `LOAD DATA LOCAL` files
/// at a fraction of the crate's CPU time), or through the `mysql` crate when the server asks
/// for something that client does not speak. Such a server and user are remembered for the
/// rest of the process, so that the workers of a dump or restore do not each try (and abort)
/// a login first.
pub(crate) fn connect_streaming(url: &DbUrl) -> Result<Db> {
    if !wire_allowed(url) {
        return connect(url);
    }
    static DRIVER_ONLY: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let account = (url.addr(), url.user.clone());
    if DRIVER_ONLY.lock().is_ok_and(|set| set.contains(&account)) {
        return connect(url);
    }
    match wire::Conn::connect(url, &INIT) {
        Ok(conn) => Ok(Db {
            link: Link::Wire(conn),
            user: url.user.clone(),
            raw_results: false,
        }),
        Err(WireError::Unsupported(why)) => {
            tracing::debug!(why, "streaming client not usable; using the mysql crate");
            if let Ok(mut set) = DRIVER_ONLY.lock() {
                set.insert(account);
            }
            connect(url)
        }
        Err(WireError::Server(e))
            if e.code == cs_core::ER_ACCESS_DENIED && url.mysql_requires_tls() =>
        {
            Err(Error::Connect {
                addr: url.addr(),
                user: url.user.clone(),
                source: format!("{}; the server answered: {e}", cs_core::TLS_REQUIRED).into(),
            })
        }
        Err(e) => Err(Error::Connect {
            addr: url.addr(),
            user: url.user.clone(),
            source: Box::new(e),
        }),
    }
}

impl Db {
    /// Starts a transaction and prepares `sql`, an `INSERT` with one placeholder per value,
    /// for bulk execution with parameters of `types` ([`wire::PARAM_BYTES`],
    /// [`wire::PARAM_TEXT`]). `None` when this connection cannot: it is not the streaming
    /// client, or the server does not take bulk commands (MySQL, MariaDB before 10.2.7).
    ///
    /// # Errors
    /// The server's refusal of the statement.
    pub(crate) fn bulk_insert(
        &mut self,
        what: &str,
        sql: &str,
        types: &[u8],
    ) -> Result<Option<BulkInsert<'_>>> {
        if !matches!(&self.link, Link::Wire(c) if c.can_bulk()) {
            return Ok(None);
        }
        let max_packet: usize = self
            .one(what, "SELECT @@max_allowed_packet")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Room for packet headers and the server's own accounting.
        let cap = max_packet.saturating_sub(64 * 1024);
        if cap < 64 * 1024 {
            return Ok(None);
        }
        let Link::Wire(conn) = &mut self.link else {
            return Ok(None);
        };
        let user = self.user.clone();
        let err = |e| wire_plain(&user, what, e);
        conn.exec("BEGIN").map_err(err)?;
        let (id, params) = conn.prepare(sql).map_err(err)?;
        if usize::from(params) != types.len() {
            return Err(Error::Database {
                what: what.to_string(),
                source: format!(
                    "the statement has {params} placeholders for {} values",
                    types.len()
                )
                .into(),
            });
        }
        Ok(Some(BulkInsert {
            conn,
            user,
            what: what.to_string(),
            id,
            cmd: wire::BulkCommand::new(id, types),
            batch: BULK_BATCH.min(cap),
            cap,
            done: false,
        }))
    }

    /// The server's id of this connection (`CONNECTION_ID()`), for `KILL`.
    pub(crate) fn connection_id(&self) -> u32 {
        match &self.link {
            Link::Driver(c) => c.connection_id(),
            Link::Wire(c) => c.id(),
        }
    }

    /// Whether this connection streams through [`crate::wire`].
    #[cfg(test)]
    pub(crate) fn is_streaming(&self) -> bool {
        matches!(self.link, Link::Wire(_))
    }

    /// Runs a `LOAD DATA LOCAL INFILE` statement whose file is what `feed` writes. Returns
    /// `false` when the server refuses `LOCAL` (the caller then loads another way).
    ///
    /// # Errors
    /// `feed`'s error, or the server's refusal of the statement.
    pub(crate) fn load_local(
        &mut self,
        what: &str,
        sql: &str,
        mut feed: impl FnMut(&mut dyn std::io::Write) -> Result<()> + Send + 'static,
    ) -> Result<bool> {
        /// "LOCAL is disabled" on MariaDB and MySQL.
        const REFUSED: [u16; 3] = [1148, 3948, 4166];
        // Packets of the file must fit the server's limit (the `mysql` crate's are 4 KiB).
        let chunk = if matches!(self.link, Link::Wire(_)) {
            self.one(what, "SELECT @@max_allowed_packet")?
                .and_then(|v| v.parse().ok())
                .map_or(4096, wire::infile_chunk)
        } else {
            0
        };
        let user = &self.user;
        match &mut self.link {
            Link::Wire(conn) => match conn.load_local(sql, chunk, |w| feed(w)) {
                Ok(()) => Ok(true),
                Err(WireError::Server(e)) if REFUSED.contains(&e.code) => Ok(false),
                Err(e) => Err(wire_err(user, what, e)),
            },
            Link::Driver(conn) => {
                let failure: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
                let handler = {
                    let failure = failure.clone();
                    mysql::LocalInfileHandler::new(move |_, w| {
                        feed(w).map_err(|e| {
                            let msg = e.to_string();
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                            std::io::Error::other(msg)
                        })
                    })
                };
                conn.set_local_infile_handler(Some(handler));
                let r = conn.query_drop(sql);
                conn.set_local_infile_handler(None);
                if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
                    return Err(e);
                }
                match r {
                    Ok(()) => Ok(true),
                    Err(mysql::Error::MySqlError(e)) if REFUSED.contains(&e.code) => Ok(false),
                    Err(e) => Err(db_err(user, what, e)),
                }
            }
        }
    }

    /// Runs `sql` and calls `row` with each row of its result.
    pub(crate) fn query(
        &mut self,
        what: &str,
        sql: &str,
        mut row: impl FnMut(RowRef<'_>) -> Result<()>,
    ) -> Result<()> {
        let user = &self.user;
        match &mut self.link {
            Link::Driver(conn) => {
                let result = conn.query_iter(sql).map_err(|e| db_err(user, what, e))?;
                for r in result {
                    row(RowRef::Driver(&r.map_err(|e| db_err(user, what, e))?))?;
                }
                Ok(())
            }
            Link::Wire(conn) => conn
                .query(sql, |r| row(RowRef::Wire(r)))
                .map_err(|e| wire_err(user, what, e)),
        }
    }

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
        row: impl FnMut(RowRef<'_>) -> Result<()>,
    ) -> Result<()> {
        let raw = table.utf8_only();
        if raw != self.raw_results {
            let charset = if raw { "NULL" } else { "utf8mb4" };
            self.exec(what, &format!("SET character_set_results = {charset}"))?;
            self.raw_results = raw;
        }
        let sql = format!(
            "SELECT {} FROM {}.{}{}{}",
            table.select_list(),
            ident(schema),
            ident(&table.name),
            table.all_rows(),
            filter.map(|f| format!(" WHERE {f}")).unwrap_or_default()
        );
        self.query(what, &sql, row)
    }

    pub(crate) fn exec(&mut self, what: &str, sql: &str) -> Result<()> {
        self.query(what, sql, |_| Ok(()))
    }

    /// Rows of text (or NULL) values.
    pub(crate) fn rows(&mut self, what: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut out = Vec::new();
        self.query(what, sql, |r| {
            out.push(
                r.values()
                    .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            );
            Ok(())
        })?;
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
    /// The row start or end column of a system-versioned table.
    pub(crate) period: bool,
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

impl Column {
    /// Whether this is the row start or end column of a system-versioned table.
    pub(crate) fn is_period(&self) -> bool {
        self.period
    }

    /// Whether a `binary` string stored into the column is taken as the type's packed form
    /// rather than as text: MariaDB's fixed-size binary types (`UUID`, `INET4`, `INET6`).
    pub(crate) fn packed_from_binary(&self) -> bool {
        matches!(self.data_type.as_str(), "uuid" | "inet4" | "inet6")
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

/// What kind of table `information_schema.TABLES` lists (`TABLE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TableKind {
    /// `BASE TABLE`.
    #[default]
    Base,
    /// `SEQUENCE` (MariaDB 10.3+): a one-row table holding the sequence's state.
    Sequence,
    /// `SYSTEM VERSIONED` (MariaDB 10.3+): rows are read and written with their history
    /// (`FOR SYSTEM_TIME ALL`, the row start and end columns included).
    Versioned,
}

/// A base table, sequence or system-versioned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) name: String,
    pub(crate) kind: TableKind,
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

    /// Whether the server stores values sent as bytes in every stored column as it would
    /// store them sent as `utf8mb4` text: [`Table::utf8_only`], and no column of a type that
    /// takes a binary string as its packed form (`UUID`, `INET4`, `INET6` read 16 or 4 raw
    /// bytes from a `binary` string instead of parsing its text; MariaDB's
    /// `sql/sql_type_fixedbin.h`, `Field_fbt::store`).
    pub(crate) fn bytes_load_ok(&self) -> bool {
        self.utf8_only() && self.stored().all(|c| !c.packed_from_binary())
    }

    /// What follows the table's name in a `SELECT` of all its rows: `FOR SYSTEM_TIME ALL` for
    /// a system-versioned table (its history too), else nothing.
    pub(crate) fn all_rows(&self) -> &'static str {
        match self.kind {
            TableKind::Versioned => " FOR SYSTEM_TIME ALL",
            _ => "",
        }
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
        let kind = match r[1].as_str() {
            "VIEW" => {
                cat.views.push(r[0].clone());
                continue;
            }
            "BASE TABLE" => TableKind::Base,
            "SEQUENCE" => TableKind::Sequence,
            "SYSTEM VERSIONED" => TableKind::Versioned,
            // `TEMPORARY` and `SYSTEM VIEW` are not part of a schema's backup.
            _ => continue,
        };
        {
            cat.tables.push(Table {
                name: r[0].clone(),
                kind,
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
        // The row start and end columns of a system-versioned table are "generated" by the
        // server, but their values are the history's and are dumped like stored ones.
        let period = matches!(r[4].to_ascii_uppercase().as_str(), "ROW START" | "ROW END");
        let generated = !period
            && (extra.contains("VIRTUAL")
                || extra.contains("STORED")
                || extra.contains("PERSISTENT")
                || !r[4].is_empty());
        columns.entry(r[0].clone()).or_default().push(Column {
            name: r[1].clone(),
            data_type: r[2].to_ascii_lowercase(),
            generated,
            charset: (!r[5].is_empty()).then(|| r[5].to_ascii_lowercase()),
            period,
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
        // A table versioned `WITH SYSTEM VERSIONING` alone has hidden period columns that
        // `information_schema.COLUMNS` does not list; they are addressed as `row_start` and
        // `row_end` (MariaDB's `sql/table.cc`, `TABLE_SHARE::vers_start_field`; mariadb-dump
        // `--dump-history` names them so).
        if t.kind == TableKind::Versioned && t.columns.iter().all(|c| !c.is_period()) {
            for name in ["row_start", "row_end"] {
                t.columns.push(Column {
                    name: name.to_string(),
                    data_type: "timestamp".to_string(),
                    generated: false,
                    charset: None,
                    period: true,
                });
            }
        }
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
        row.add_to(&mut sum);
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
    let body_col = match kind {
        "PROCEDURE" => "Create Procedure",
        "FUNCTION" => "Create Function",
        "TRIGGER" => "SQL Original Statement",
        "EVENT" => "Create Event",
        "SEQUENCE" => "Create Table",
        _ => "Create View",
    };
    // The columns by name: their order differs between kinds and servers.
    let wanted = [
        body_col,
        "sql_mode",
        "character_set_client",
        "collation_connection",
        "time_zone",
    ];
    let mut first: Option<BTreeMap<&str, String>> = None;
    db.query(&what, &sql, |row| {
        first.get_or_insert_with(|| {
            wanted
                .iter()
                .filter_map(|col| {
                    let v = row.get(row.position(col)?)?;
                    Some((*col, String::from_utf8_lossy(v).into_owned()))
                })
                .collect()
        });
        Ok(())
    })?;
    let named = first.ok_or_else(|| Error::Database {
        what: what.clone(),
        source: "no definition returned".into(),
    })?;
    let get = |col: &str| -> Option<String> { named.get(col).cloned() };
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

    #[test]
    fn the_wire_client_never_carries_a_connection_asked_to_be_encrypted() {
        let plain: DbUrl = "mysql://u:p@127.0.0.1:3306".parse().unwrap();
        assert!(wire_allowed(&plain));
        for mode in ["PREFERRED", "REQUIRED"] {
            let url: DbUrl = format!("mysql://u:p@127.0.0.1:3306?ssl-mode={mode}")
                .parse()
                .unwrap();
            assert!(!wire_allowed(&url), "{mode}");
        }
        let ca: DbUrl = "mysql://u:p@127.0.0.1:3306?ssl-ca=/ca.pem".parse().unwrap();
        assert!(!wire_allowed(&ca));
    }

    fn column(name: &str, data_type: &str, charset: Option<&str>, generated: bool) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
            generated,
            charset: charset.map(str::to_string),
            period: false,
        }
    }

    fn table(columns: Vec<Column>) -> Table {
        Table {
            name: "t".into(),
            kind: TableKind::Base,
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

/// The two kinds of connection against a real server.
#[cfg(test)]
mod live_tests {
    use super::*;

    /// `schema.t`: values of most types, NULL, empty, non-ASCII, latin1, and a 17 MiB blob
    /// that arrives split over two packets and is larger than the streaming read buffer.
    fn fixture(url: &DbUrl, schema: &str) {
        let mut db = connect(url).unwrap();
        let s = ident(schema);
        for sql in [
            format!(
                "CREATE TABLE {s}.t (id INT PRIMARY KEY, i BIGINT UNSIGNED, d DECIMAL(20,6), \
                 f FLOAT, g DOUBLE, dt DATETIME(3), ts TIMESTAMP NULL, tm TIME, y YEAR, \
                 s VARCHAR(40) CHARACTER SET utf8mb4, l VARCHAR(40) CHARACTER SET latin1, \
                 b LONGBLOB, bt BIT(10), e ENUM('a','b'), j JSON)"
            ),
            format!(
                "INSERT INTO {s}.t VALUES \
                 (1, 18446744073709551615, -12345678901234.123456, 1.5e-7, 2.2250738585072014e-308, \
                  '0000-00-00 00:00:00', '2038-01-19 03:14:07', '-838:59:59', 1901, \
                  'café ☃ 🚀', 'naïve ÿ', x'00FF0D0A275C', b'1010101010', 'b', '{{\"k\": [1, null]}}'), \
                 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', '', '', NULL, NULL, NULL), \
                 (3, 0, 0, 0, 0, '2024-02-29 23:59:59.999', NULL, '00:00:00', 2155, \
                  REPEAT('x', 40), NULL, REPEAT(x'AB', 17825792), b'0', 'a', '[]')"
            ),
        ] {
            db.exec("create the fixture", &sql).unwrap();
        }
    }

    #[test]
    fn streaming_and_driver_connections_read_the_same_bytes() {
        let server = cs_lab::mariadb();
        let test = server.database("wire_same").unwrap();
        let url = test.url();
        fixture(&url, test.name());
        let mut wire = connect_streaming(&url).unwrap();
        let mut driver = connect(&url).unwrap();
        assert!(wire.is_streaming());
        assert!(!driver.is_streaming());

        let cat = catalog(&mut driver, test.name()).unwrap();
        let table = cat.table("t").unwrap();
        let sums: Vec<RowSum> = [&mut wire, &mut driver]
            .into_iter()
            .map(|db| table_checksum(db, test.name(), table, None, Algorithm::CURRENT).unwrap())
            .collect();
        assert_eq!(sums[0], sums[1]);
        assert_eq!(sums[0].rows(), 3);

        // Every value, byte for byte, with NULLs where they are.
        let sql = format!("SELECT * FROM {}.t ORDER BY id", ident(test.name()));
        let mut seen: Vec<Vec<Vec<Option<Vec<u8>>>>> = Vec::new();
        for db in [&mut wire, &mut driver] {
            let mut rows = Vec::new();
            db.query("read the fixture", &sql, |r| {
                rows.push(r.values().map(|v| v.map(<[u8]>::to_vec)).collect());
                Ok(())
            })
            .unwrap();
            seen.push(rows);
        }
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[0][1][2], None, "NULL stays NULL");
        assert_eq!(
            seen[0][1][9].as_deref(),
            Some(&b""[..]),
            "empty stays empty"
        );
        assert_eq!(seen[0][2][11].as_ref().map(Vec::len), Some(17_825_792));

        // Named columns (SHOW CREATE) and plain text results agree too.
        db_exec(
            &mut driver,
            &format!(
                "CREATE VIEW {}.v AS SELECT id FROM {0}.t",
                ident(test.name())
            ),
        );
        for db in [&mut wire, &mut driver] {
            let def = show_create(db, test.name(), "VIEW", "v").unwrap();
            assert!(def.sql.contains("CREATE"), "{}", def.sql);
            assert_eq!(def.charset_client, "utf8mb4");
        }
        assert_eq!(
            wire.rows("x", "SELECT 1, NULL, 'é'").unwrap(),
            vec![vec![Some("1".into()), None, Some("é".into())]]
        );
    }

    fn db_exec(db: &mut Db, sql: &str) {
        db.exec("test setup", sql).unwrap();
    }

    /// A statement that sends nothing for several reply periods but runs on the server (as a
    /// key build does) is waited for; the same silence from a server nobody can reach is an
    /// error within a reply period and a check; a short-statement driver connection gives up
    /// after one reply period.
    #[test]
    fn silent_statements_are_waited_for_only_while_the_server_runs_them() {
        let server = cs_lab::mariadb();
        let test = server.database("wire_silence").unwrap();
        let reply = Duration::from_secs(1);
        let url = test.url().with_deadlines(cs_core::Deadlines::quick(reply));
        let mut wire = connect_streaming(&url).unwrap();
        assert!(wire.is_streaming());
        let started = std::time::Instant::now();
        assert_eq!(
            wire.one("sleep", "SELECT SLEEP(4)").unwrap().as_deref(),
            Some("0")
        );
        // Several reply periods of silence, waited for. (The server times SLEEP on its
        // realtime clock, this test on the monotonic one: allow their drift.)
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(3500), "{waited:?}");

        let mut short = connect_short(&url).unwrap();
        let e = short.one("sleep", "SELECT SLEEP(4)").unwrap_err();
        assert!(matches!(e, Error::Database { .. }), "{e:?}");

        let proxy =
            cs_lab::TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], server.port())))
                .unwrap();
        let mut wire = connect_streaming(&proxy.db_url(&url)).unwrap();
        assert!(wire.is_streaming());
        proxy.freeze();
        let started = std::time::Instant::now();
        let e = wire.one("sleep", "SELECT SLEEP(4)").unwrap_err();
        let took = started.elapsed();
        let text = cs_core::error_chain(&e);
        assert!(text.contains("went silent"), "{text}");
        assert!(
            text.contains("a second connection could not ask the server"),
            "{text}"
        );
        // One reply period, then the check's connect and login (half a period each, at least
        // a second), and scheduling.
        assert!(took < Duration::from_secs(4), "took {took:?}");
    }

    #[test]
    fn preferred_tls_falls_back_to_clear_only_on_a_server_without_tls() {
        // The shared lab server has no certificate: it offers no TLS.
        let url = cs_lab::mariadb().root();
        let with = |mode| {
            url.with_tls(cs_core::DbTls {
                mode,
                ..cs_core::DbTls::default()
            })
        };
        let mut db = connect_streaming(&with(cs_core::TlsMode::Preferred)).unwrap();
        assert!(!db.is_streaming(), "PREFERRED must not use the wire client");
        let cipher = db
            .one(
                "cipher",
                "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
                 WHERE VARIABLE_NAME = 'SSL_CIPHER'",
            )
            .unwrap();
        assert_eq!(cipher.as_deref(), Some(""));
        let e = connect_short(&with(cs_core::TlsMode::Required)).unwrap_err();
        let text = cs_core::error_chain(&e);
        assert!(text.contains("secure connection"), "{text}");
    }

    #[test]
    fn streaming_errors_are_typed_and_recoverable() {
        let server = cs_lab::mariadb();
        let test = server.database("wire_errors").unwrap();
        let url = test.url();
        let mut wire = connect_streaming(&url).unwrap();

        // A refused statement leaves the connection usable.
        let e = wire.exec("run nonsense", "SELEKT 1").unwrap_err();
        assert!(matches!(e, Error::Database { .. }), "{e:?}");
        assert!(
            cs_core::error_chain(&e).contains("1064"),
            "{}",
            cs_core::error_chain(&e)
        );
        assert_eq!(wire.one("x", "SELECT 2").unwrap().as_deref(), Some("2"));

        // A failing callback ends the statement; the connection is not reused half-read.
        let e = wire
            .query(
                "read",
                &format!("SELECT seq FROM {}.seq_1_to_100000", ident(test.name())),
                |_| {
                    Err(Error::Interrupted {
                        what: "test".into(),
                    })
                },
            )
            .unwrap_err();
        assert!(matches!(e, Error::Interrupted { .. }), "{e:?}");
        let e = wire.one("x", "SELECT 3").unwrap_err();
        assert!(cs_core::error_chain(&e).contains("abandoned"), "{e:?}");

        // Missing privileges are privilege errors; a wrong password is a connect error that
        // does not show the password.
        let user = server
            .create_user("wire_limited", &["GRANT USAGE ON *.* TO {user}"])
            .unwrap();
        let mut limited = connect_streaming(&user).unwrap();
        assert!(limited.is_streaming());
        let e = limited
            .exec(
                "read a table",
                &format!("SELECT * FROM {}.nope", ident(test.name())),
            )
            .unwrap_err();
        assert!(matches!(e, Error::Privilege { .. }), "{e:?}");
        let mut wrong = user.clone();
        wrong.password = cs_core::Secret::new("not-the-password-1234");
        let e = connect_streaming(&wrong).unwrap_err();
        let chain = cs_core::error_chain(&e);
        assert!(matches!(e, Error::Connect { .. }), "{chain}");
        assert!(chain.contains("1045"), "{chain}");
        assert!(!chain.contains("not-the-password-1234"), "{chain}");
        let mut closed = url.clone();
        closed.port = 1;
        assert!(matches!(
            connect_streaming(&closed),
            Err(Error::Connect { .. })
        ));
    }

    #[test]
    fn a_login_the_streaming_client_does_not_speak_falls_back_to_the_driver() {
        let server = cs_lab::mariadb();
        server
            .exec(
                "INSTALL PLUGIN IF NOT EXISTS ed25519 SONAME 'auth_ed25519'; \
                 DROP USER IF EXISTS 'wire_ed'@'%'; \
                 CREATE USER 'wire_ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pass-42')",
            )
            .unwrap();
        let url = DbUrl::new(
            "127.0.0.1",
            server.port(),
            "wire_ed",
            cs_core::Secret::new("ed-pass-42"),
        );
        let mut db = connect_streaming(&url).unwrap();
        assert!(!db.is_streaming());
        assert_eq!(
            db.one("x", "SELECT CURRENT_USER()").unwrap().as_deref(),
            Some("wire_ed@%")
        );
    }

    #[test]
    fn local_infile_loads_on_both_links_and_a_refusal_is_reported() {
        let server = cs_lab::mariadb();
        let test = server.database("wire_infile").unwrap();
        let url = test.url();
        let t = format!("{}.t", ident(test.name()));
        let mut links = [connect_streaming(&url).unwrap(), connect(&url).unwrap()];
        assert!(links[0].is_streaming() && !links[1].is_streaming());
        let mut sums = Vec::new();
        for (n, db) in links.iter_mut().enumerate() {
            db_exec(db, &format!("DROP TABLE IF EXISTS {t}"));
            db_exec(
                db,
                &format!("CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(300))"),
            );
            // 60,000 rows in writes of odd sizes, across many 256 KiB packets.
            let loaded = db
                .load_local(
                    "load",
                    &format!("LOAD DATA LOCAL INFILE 'x' INTO TABLE {t} CHARACTER SET utf8mb4"),
                    |w| {
                        for i in 0..60_000 {
                            let line = format!("{i}\t{}é\\t\n", "v".repeat(i % 300));
                            w.write_all(line.as_bytes())
                                .map_err(|e| Error::io("send", "x", e))?;
                        }
                        Ok(())
                    },
                )
                .unwrap();
            assert!(loaded, "link {n}");
            let sum = db
                .one(
                    "sum",
                    &format!("SELECT CONCAT(COUNT(*), ':', SUM(CRC32(s))) FROM {t}"),
                )
                .unwrap();
            sums.push(sum);

            // A failing feed ends the file and its error comes back; the streaming link stays
            // usable (the crate's connection is out of step afterwards).
            db_exec(db, &format!("DELETE FROM {t}"));
            let e = db
                .load_local(
                    "load",
                    &format!("LOAD DATA LOCAL INFILE 'x' INTO TABLE {t}"),
                    |w| {
                        w.write_all(b"1\ta\n2\tb\n").unwrap();
                        Err(Error::Interrupted {
                            what: "test".into(),
                        })
                    },
                )
                .unwrap_err();
            assert!(matches!(e, Error::Interrupted { .. }), "link {n}: {e:?}");
            if db.is_streaming() {
                assert_eq!(db.one("x", "SELECT 7").unwrap().as_deref(), Some("7"));
            }
        }
        links[1] = connect(&url).unwrap();
        assert_eq!(sums[0], sums[1]);
        assert!(sums[0].as_deref().unwrap().starts_with("60000:"));

        // With LOCAL disabled on the server, both links say so instead of failing.
        let before = links[1].one("x", "SELECT @@GLOBAL.local_infile").unwrap();
        db_exec(&mut links[1], "SET GLOBAL local_infile = 0");
        for (n, db) in links.iter_mut().enumerate() {
            let loaded = db
                .load_local(
                    "load",
                    &format!("LOAD DATA LOCAL INFILE 'x' INTO TABLE {t}"),
                    |_| Ok(()),
                )
                .unwrap();
            assert!(!loaded, "link {n}");
        }
        db_exec(
            &mut links[1],
            &format!(
                "SET GLOBAL local_infile = {}",
                before.as_deref().unwrap_or("1")
            ),
        );
    }

    #[test]
    fn bulk_inserts_store_what_was_read_and_leave_nothing_when_abandoned() {
        let server = cs_lab::mariadb();
        let test = server.database("wire_bulk").unwrap();
        let url = test.url();
        fixture(&url, test.name());
        let mut db = connect_streaming(&url).unwrap();
        let schema = test.name();
        let cat = catalog(&mut db, schema).unwrap();
        let table = cat.table("t").unwrap().clone();
        assert!(!table.utf8_only(), "the fixture has a latin1 column");
        let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
        db.select_rows("read the fixture", schema, &table, None, |r| {
            rows.push(r.values().map(|v| v.map(<[u8]>::to_vec)).collect());
            Ok(())
        })
        .unwrap();
        let copy = format!("{}.copy", ident(schema));
        db_exec(
            &mut db,
            &format!("CREATE TABLE {copy} LIKE {}.t", ident(schema)),
        );
        let types: Vec<u8> = table
            .stored()
            .map(|c| match c.kind() {
                ValueKind::Binary => wire::PARAM_BYTES,
                _ => wire::PARAM_TEXT,
            })
            .collect();
        let insert = format!(
            "INSERT INTO {copy} ({}) VALUES ({})",
            table.select_list(),
            vec!["?"; types.len()].join(",")
        );
        let add_all = |bulk: &mut BulkInsert<'_>, rows: &[Vec<Option<Vec<u8>>>]| {
            let mut added = Vec::new();
            for row in rows {
                added.push(
                    bulk.add(|out| {
                        for v in row {
                            wire::bulk_value(out, v.as_deref());
                        }
                        Ok(())
                    })
                    .unwrap(),
                );
            }
            added
        };

        // Every row, the 17 MiB blob in a command of its own (over one packet), each value
        // stored as it was read.
        let mut bulk = db.bulk_insert("copy", &insert, &types).unwrap().unwrap();
        assert!(add_all(&mut bulk, &rows).iter().all(Option::is_some));
        bulk.commit().unwrap();
        let sum = |db: &mut Db, name: &str| {
            let mut t = table.clone();
            t.name = name.to_string();
            table_checksum(db, schema, &t, None, Algorithm::CURRENT).unwrap()
        };
        assert_eq!(sum(&mut db, "copy"), sum(&mut db, "t"));
        assert_eq!(sum(&mut db, "copy").rows(), 3);
        let count = format!("SELECT COUNT(*) FROM {copy}");

        // Rows too big for one command are refused before anything is sent; a rollback then
        // leaves the table as it was.
        db_exec(&mut db, &format!("DELETE FROM {copy}"));
        let mut bulk = db
            .bulk_insert("copy", &insert, &types)
            .unwrap()
            .unwrap()
            .with_limits(64, 1 << 20);
        let added = add_all(&mut bulk, &rows);
        assert!(added[0].is_some() && added[1].is_some());
        assert!(added[2].is_none(), "the 17 MiB row does not fit in 1 MiB");
        bulk.rollback().unwrap();
        assert_eq!(db.one("count", &count).unwrap().as_deref(), Some("0"));

        // A refused row is an error naming the server's code; the abandoned insert rolls back
        // and the connection stays usable.
        let mut bulk = db.bulk_insert("copy", &insert, &types).unwrap().unwrap();
        add_all(&mut bulk, &rows[..2]);
        add_all(&mut bulk, &rows[..1]);
        let e = bulk.commit().unwrap_err();
        assert!(cs_core::error_chain(&e).contains("1062"), "{e:?}");
        assert_eq!(db.one("count", &count).unwrap().as_deref(), Some("0"));
        assert_eq!(
            db.one("x", "SELECT @@in_transaction").unwrap().as_deref(),
            Some("0")
        );

        // The crate's connections do not bulk-execute.
        let mut driver = connect(&url).unwrap();
        assert!(
            driver
                .bulk_insert("copy", &insert, &types)
                .unwrap()
                .is_none()
        );
    }
}
