//! Runs a [`Plan`] on a scratch copy, on one connection shaped like the management server's.

use std::time::{Duration, Instant};

use cs_core::DbUrl;
use mysql::prelude::Queryable;
use sha2::{Digest, Sha256};

use crate::package::Scripts;
use crate::plan::Plan;
use crate::report::{Failure, Outcome, Phase, Report, known_cause};
use crate::rewrite::SchemaMap;
use crate::split::split;
use crate::{Error, Result};

/// The session the management server's connections have: the variables Connector/J sets from
/// `sessionVariables=` in `db.cloud.url.params` (`db.properties`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Session {
    /// `(name, value)` pairs, the value as written (`'STRICT_TRANS_TABLES,…'`).
    pub variables: Vec<(String, String)>,
}

/// The `sql_mode` CloudStack's packaged `db.properties` sets (`client/conf/db.properties.in`,
/// `db.cloud.url.params`).
pub const PACKAGED_SQL_MODE: &str = "STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";

impl Session {
    /// The session of CloudStack's packaged `db.properties`.
    pub fn packaged() -> Session {
        Session {
            variables: vec![("sql_mode".into(), format!("'{PACKAGED_SQL_MODE}'"))],
        }
    }

    /// The session `db.properties` text asks for (`db.cloud.url.params`, its
    /// `sessionVariables=`); none when it sets none.
    ///
    /// ```
    /// let s = cs_rehearse::Session::from_db_properties(
    ///     "db.cloud.url.params=prepStmtCacheSize=517&sessionVariables=sql_mode='ANSI,STRICT_ALL_TABLES',wait_timeout=60&serverTimezone=UTC\n",
    /// )?;
    /// assert_eq!(s.variables, [("sql_mode".into(), "'ANSI,STRICT_ALL_TABLES'".into()), ("wait_timeout".into(), "60".into())]);
    /// # Ok::<(), cs_rehearse::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] for a variable name or value that is not a plain identifier, number
    /// or single-quoted string.
    pub fn from_db_properties(text: &str) -> Result<Session> {
        let params = text.lines().find_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            (k.trim() == "db.cloud.url.params").then(|| v.trim().to_string())
        });
        let Some(params) = params else {
            return Ok(Session::default());
        };
        let Some(start) = params.find("sessionVariables=") else {
            return Ok(Session::default());
        };
        let rest = &params[start + "sessionVariables=".len()..];
        // The value runs to the next `&` outside quotes.
        let mut vars = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in rest.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                '&' if !quoted => break,
                ',' if !quoted => vars.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        vars.push(cur);
        let mut out = Session::default();
        for v in vars.iter().filter(|v| !v.trim().is_empty()) {
            let invalid = |detail: &str| Error::Invalid {
                what: "sessionVariables in db.properties".into(),
                detail: detail.to_string(),
            };
            let (name, value) = v
                .split_once('=')
                .ok_or_else(|| invalid("a variable without `=`"))?;
            let (name, value) = (name.trim(), value.trim());
            let ident = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            };
            let quoted_ok = value.len() >= 2
                && value.starts_with('\'')
                && value.ends_with('\'')
                && !value[1..value.len() - 1].contains(['\'', '\\']);
            if !ident(name) || !(quoted_ok || ident(value)) {
                return Err(invalid("only identifiers, numbers and 'quoted' values"));
            }
            out.variables.push((name.to_string(), value.to_string()));
        }
        Ok(out)
    }
}

/// How to rehearse.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The session to run on.
    pub session: Session,
    /// Statements that take at least this long are marked slow. Default 1 s.
    pub slow: Duration,
    /// The longest a statement may run (the connection's read timeout). Default 6 h.
    pub statement_timeout: Duration,
}

cs_core::setters!(Options {
    session: Session,
    slow: Duration,
    statement_timeout: Duration,
});

impl Default for Options {
    fn default() -> Self {
        Options {
            session: Session::packaged(),
            slow: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(6 * 3600),
        }
    }
}

fn connect(url: &DbUrl, db: Option<&str>, timeout: Duration) -> Result<mysql::Conn> {
    // Host, credentials, keepalive and TLS from the URL (`DbUrl::mysql_opts`); statements may
    // run up to `timeout`.
    let opts = url
        .mysql_opts()
        .db_name(db.map(str::to_string))
        .read_timeout(Some(timeout))
        .write_timeout(Some(timeout));
    url.mysql_connect(opts)
        .map_err(|e| db_err("connect", url, e))
}

fn db_err(what: &str, url: &DbUrl, e: mysql::Error) -> Error {
    Error::Database {
        what: what.to_string(),
        addr: url.addr(),
        source: Box::new(e),
    }
}

struct Run<'a> {
    conn: mysql::Conn,
    map: &'a SchemaMap,
    options: &'a Options,
    report: Report,
}

impl Run<'_> {
    /// Runs one script; `false` when a statement failed (recorded).
    fn script(&mut self, name: &str, text: &str, step: &str, phase: Phase) -> bool {
        let split = split(text);
        if split.unterminated.is_some() {
            self.report.unterminated.push(name.to_string());
        }
        for s in split.statements {
            let sql = self.map.rewrite(&s.text);
            let t = Instant::now();
            // CloudStack's connections do not allow several statements in one (Connector/J's
            // `allowMultiQueries` is off by default and `db.properties` does not set it;
            // UNCONFIRMED that no deployment sets it): such text reaches the server as one
            // statement and is refused. The `mysql` crate always asks for multi-statements,
            // so that text goes through the prepared-statement protocol, where the server
            // parses it as one statement and refuses it as Connector/J's server would.
            let res = if several_statements(&sql) {
                self.conn.exec_drop(&sql, ())
            } else {
                self.conn.query_drop(&sql)
            };
            let elapsed = t.elapsed();
            let at = format!("{name}#{}", s.index);
            self.report.statements.push(Outcome {
                at: at.clone(),
                line: s.line,
                step: step.to_string(),
                phase,
                millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                slow: elapsed >= self.options.slow,
                ok: res.is_ok(),
            });
            if let Err(e) = res {
                let (code, error) = match &e {
                    mysql::Error::MySqlError(m) => (
                        Some(m.code),
                        format!("ERROR {} ({}): {}", m.code, m.state, m.message),
                    ),
                    other => (None, other.to_string()),
                };
                let known = code.and_then(|c| known_cause(c, &s.text));
                self.report.failure = Some(Failure {
                    at,
                    line: s.line,
                    step: step.to_string(),
                    statement: s.text,
                    code,
                    error,
                    cause: known.map(|k| k.cause.to_string()).or_else(|| {
                        code.is_none()
                            .then(|| "the connection failed or the statement timed out".into())
                    }),
                    remedy: known.map(|k| k.remedy.to_string()),
                    check: known.and_then(|k| k.check.map(str::to_string)),
                });
                // ScriptRunner's `finally { conn.rollback(); }`.
                let _ = self.conn.query_drop("ROLLBACK");
                return false;
            }
        }
        true
    }

    fn exec(&mut self, what: &str, sql: &str) -> Result<()> {
        self.conn.query_drop(sql).map_err(|e| Error::Database {
            what: what.to_string(),
            addr: String::new(),
            source: Box::new(e),
        })
    }
}

/// Whether `sql` holds a `;` followed by more text outside quotes and comments, and is not a
/// compound statement (`CREATE PROCEDURE` / `FUNCTION` / `TRIGGER` / `EVENT`, `BEGIN`) whose
/// body may hold `;`s.
fn several_statements(sql: &str) -> bool {
    let head: Vec<String> = sql
        .split_whitespace()
        .take(6)
        .map(str::to_ascii_uppercase)
        .collect();
    let compound = head.first().is_some_and(|w| w == "BEGIN")
        || (head.first().is_some_and(|w| w == "CREATE")
            && head
                .iter()
                .any(|w| ["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"].contains(&w.as_str())));
    if compound {
        return false;
    }
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 1);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(b.len(), |e| i + e);
            }
            b'#' => {
                i = sql[i..].find('\n').map_or(b.len(), |e| i + e);
            }
            b';' if !sql[i + 1..].trim().is_empty() => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Rehearses `plan` on the scratch schemas `map` names (the server `url` points at), with the
/// scripts of `scripts`, as `DatabaseUpgradeChecker` runs them (see [`crate::plan`]): one
/// connection, `autocommit` off, the session of [`Options::session`], statements split by
/// [`crate::split()`] and sent one at a time (text holding several statements is refused, as
/// on CloudStack's connections), the first failing statement stopping the run (`stopOnError = true`),
/// and the `version` rows written as the upgrade writes them. Only the scratch schemas are
/// written to: every `cloud` / `cloud_usage` name is rewritten to them.
///
/// # Errors
/// [`Error::MissingScript`] when the plan needs a script that is not there (nothing runs);
/// [`Error::Database`] when the server cannot be reached or the session not set up. A
/// failing statement is not an error: it is the report's [`Report::failure`].
pub fn rehearse(
    url: &DbUrl,
    map: &SchemaMap,
    plan: &Plan,
    scripts: &Scripts,
    options: &Options,
) -> Result<Report> {
    for name in plan.scripts() {
        scripts.get(name)?;
    }
    let started = Instant::now();
    let mut conn = connect(url, Some(&map.cloud), options.statement_timeout)?;
    let mut setup = vec!["SET autocommit = 0".to_string()];
    for (k, v) in &options.session.variables {
        setup.push(format!("SET SESSION {k} = {v}"));
    }
    for s in &setup {
        conn.query_drop(s)
            .map_err(|e| db_err("set up the session", url, e))?;
    }
    let mut run = Run {
        conn,
        map,
        options,
        report: Report {
            target: plan.target.clone(),
            scripts_source: scripts.source.clone(),
            passed: false,
            statements: Vec::new(),
            failure: None,
            not_rehearsed: plan.not_rehearsed(),
            unterminated: Vec::new(),
            versions: Vec::new(),
            millis: 0,
        },
    };
    let ok = run_all(&mut run, plan, scripts).map_err(|e| match e {
        Error::Database {
            what,
            source,
            addr: _,
        } => Error::Database {
            what,
            addr: url.addr(),
            source,
        },
        other => other,
    })?;
    run.report.passed = ok;
    run.report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(run.report)
}

fn run_all(run: &mut Run<'_>, plan: &Plan, scripts: &Scripts) -> Result<bool> {
    if plan.procedures_first {
        for name in scripts.under("procedures") {
            if !run.script(name, scripts.get(name)?, "", Phase::Procedures) {
                return Ok(false);
            }
        }
        run.exec("commit the procedures", "COMMIT")?;
    }
    for step in &plan.steps {
        for name in &step.prepare {
            if !run.script(name, scripts.get(name)?, &step.class, Phase::Prepare) {
                return Ok(false);
            }
        }
        // `performDataMigration` runs here in Java (not rehearsed); then the version row.
        run.exec(
            "record the step's version row",
            &format!(
                "INSERT INTO `{}`.`version` (`version`, `updated`, `step`) VALUES ('{}', now(), 'Upgrade')",
                run.map.cloud.replace('`', "``"),
                step.to.replace('\'', "")
            ),
        )?;
        let id: Option<u64> = run
            .conn
            .query_first("SELECT LAST_INSERT_ID()")
            .ok()
            .flatten();
        run.exec("commit the step", "COMMIT")?;
        for name in &step.cleanup {
            if !run.script(name, scripts.get(name)?, &step.class, Phase::Cleanup) {
                return Ok(false);
            }
        }
        run.exec("commit the cleanup", "COMMIT")?;
        if let Some(id) = id {
            run.exec(
                "complete the step's version row",
                &format!(
                    "UPDATE `{}`.`version` SET `step` = 'Complete', `updated` = now() WHERE `id` = {id}",
                    run.map.cloud.replace('`', "``")
                ),
            )?;
            run.exec("commit the version row", "COMMIT")?;
        }
        run.report.versions.push(step.to.clone());
    }
    if plan.views_last {
        for name in scripts.under("views") {
            if !run.script(name, scripts.get(name)?, "", Phase::Views) {
                return Ok(false);
            }
        }
        run.exec("commit the views", "COMMIT")?;
    }
    Ok(true)
}

/// A fingerprint of `schemas` on the server `url` points at: every table's columns and
/// `CHECKSUM TABLE`, every routine's, view's and trigger's definition, hashed. Equal
/// fingerprints before and after a rehearsal show the schemas were not touched.
///
/// # Errors
/// [`Error::Database`] when the server cannot be read.
pub fn fingerprint(url: &DbUrl, schemas: &[&str]) -> Result<String> {
    let mut conn = connect(url, None, Duration::from_secs(600))?;
    let q = |e| db_err("fingerprint", url, e);
    let mut h = Sha256::new();
    for schema in schemas {
        let cols: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT table_name, column_name, column_type, COALESCE(column_default, '') \
                 FROM information_schema.columns WHERE table_schema = ? \
                 ORDER BY table_name, ordinal_position",
                (schema,),
            )
            .map_err(q)?;
        for c in cols {
            h.update(format!("c\0{}\0{}\0{}\0{}\n", c.0, c.1, c.2, c.3));
        }
        let defs: Vec<(String, String)> = conn
            .exec(
                "SELECT CONCAT('r ', routine_name), COALESCE(routine_definition, '') FROM information_schema.routines WHERE routine_schema = ? \
                 UNION ALL SELECT CONCAT('v ', table_name), view_definition FROM information_schema.views WHERE table_schema = ? \
                 UNION ALL SELECT CONCAT('t ', trigger_name), action_statement FROM information_schema.triggers WHERE trigger_schema = ? \
                 ORDER BY 1",
                (schema, schema, schema),
            )
            .map_err(q)?;
        for d in defs {
            h.update(format!("d\0{}\0{}\n", d.0, d.1));
        }
        let tables: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? \
                 AND table_type = 'BASE TABLE' ORDER BY table_name",
                (schema,),
            )
            .map_err(q)?;
        for t in tables {
            let sum: Option<(String, Option<i64>)> = conn
                .query_first(format!(
                    "CHECKSUM TABLE `{}`.`{}`",
                    schema.replace('`', "``"),
                    t.replace('`', "``")
                ))
                .map_err(q)?;
            h.update(format!("s\0{t}\0{:?}\n", sum.and_then(|s| s.1)));
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Drops scratch schemas a rehearsal ran on. Only names containing `__restore_` (the scratch
/// names cs-backup's restore gives) are dropped; any other name is refused.
///
/// # Errors
/// [`Error::Invalid`] for a name that is not a scratch schema's; [`Error::Database`] when a
/// drop fails.
pub fn drop_scratch(url: &DbUrl, names: &[String]) -> Result<()> {
    if let Some(bad) = names.iter().find(|n| !n.contains("__restore_")) {
        return Err(Error::Invalid {
            what: "scratch schema".into(),
            detail: format!("`{bad}` is not a scratch schema; not dropping it"),
        });
    }
    let mut conn = connect(url, None, Duration::from_secs(600))?;
    for n in names {
        conn.query_drop(format!(
            "DROP DATABASE IF EXISTS `{}`",
            n.replace('`', "``")
        ))
        .map_err(|e| db_err("drop the scratch schema", url, e))?;
    }
    Ok(())
}

/// The account (`'user'@'host'`) the server sees `user` log in as.
fn account_of(user: &DbUrl) -> Result<String> {
    let mut conn = connect(user, None, Duration::from_secs(60))?;
    let who: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .map_err(|e| db_err("read the account", user, e))?;
    let who = who.unwrap_or_default();
    let (name, host) = who.rsplit_once('@').ok_or_else(|| Error::Invalid {
        what: "account".into(),
        detail: "the server names no account for the script user".into(),
    })?;
    Ok(format!(
        "'{}'@'{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'"),
        host.replace('\\', "\\\\").replace('\'', "\\'")
    ))
}

/// `GRANT`/`REVOKE` target for one schema: backquoted, with `_` and `%` escaped (they are
/// wildcards in a grant's database name).
fn grant_target(schema: &str) -> String {
    format!(
        "`{}`.*",
        schema
            .replace('`', "``")
            .replace('_', "\\_")
            .replace('%', "\\%")
    )
}

/// Lets the account `user` logs in as (the management server's, from `db.properties`) work on
/// the scratch schemas, as the management server works on `cloud`: `GRANT ALL PRIVILEGES` on
/// each, given by `admin`. Only scratch schemas (`…__restore_…`) are granted. Returns the
/// account, for [`revoke_scratch`].
///
/// # Errors
/// [`Error::Invalid`] for a name that is not a scratch schema's; [`Error::Database`] when the
/// login or the grant fails.
pub fn grant_scratch(admin: &DbUrl, user: &DbUrl, schemas: &[String]) -> Result<String> {
    if let Some(bad) = schemas.iter().find(|n| !n.contains("__restore_")) {
        return Err(Error::Invalid {
            what: "scratch schema".into(),
            detail: format!("`{bad}` is not a scratch schema; not granting on it"),
        });
    }
    let account = account_of(user)?;
    let mut conn = connect(admin, None, Duration::from_secs(60))?;
    for s in schemas {
        conn.query_drop(format!(
            "GRANT ALL PRIVILEGES ON {} TO {account}",
            grant_target(s)
        ))
        .map_err(|e| db_err("grant the script user the scratch schema", admin, e))?;
    }
    Ok(account)
}

/// Takes back what [`grant_scratch`] gave.
///
/// # Errors
/// [`Error::Database`] when a revoke fails.
pub fn revoke_scratch(admin: &DbUrl, account: &str, schemas: &[String]) -> Result<()> {
    let mut conn = connect(admin, None, Duration::from_secs(60))?;
    for s in schemas {
        conn.query_drop(format!(
            "REVOKE ALL PRIVILEGES ON {} FROM {account}",
            grant_target(s)
        ))
        .map_err(|e| db_err("revoke the script user's scratch grant", admin, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::several_statements;

    #[test]
    fn several_statements_are_told_from_compound_ones() {
        assert!(several_statements("SELECT 1;  SELECT 2 "));
        assert!(!several_statements("SELECT 1 "));
        assert!(!several_statements("SELECT 1; "));
        assert!(!several_statements(
            "UPDATE t SET v = 'a;b' WHERE c = \"x;y\" "
        ));
        assert!(!several_statements("SELECT `a;b` /* ; */ FROM t "));
        assert!(!several_statements(
            "CREATE PROCEDURE `cloud`.`P` () BEGIN DECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SELECT 1; END "
        ));
        assert!(!several_statements(
            "CREATE DEFINER=`root`@`%` TRIGGER x BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END "
        ));
        assert!(several_statements(
            "INSERT INTO t VALUES ('it''s'); DELETE FROM t "
        ));
    }
}
