//! What a rehearsal found: every statement's outcome, the first failure with its known cause.

use std::fmt;

use serde::Serialize;

/// Which part of the upgrade a statement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `procedures/*.sql`, before the steps.
    Procedures,
    /// A step's prepare script.
    Prepare,
    /// A step's cleanup script.
    Cleanup,
    /// `views/*.sql`, after the steps.
    Views,
}

/// One statement run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `file#statement` (`schema-41800to41810.sql#3`).
    pub at: String,
    /// The 1-based line of the script where it starts.
    pub line: usize,
    /// The step's class (empty for procedures and views).
    pub step: String,
    /// The phase.
    pub phase: Phase,
    /// Run time in milliseconds.
    pub millis: u64,
    /// Whether it took at least the slow threshold.
    pub slow: bool,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The first failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// `file#statement`.
    pub at: String,
    /// The line of the script where it starts.
    pub line: usize,
    /// The step's class (empty for procedures and views).
    pub step: String,
    /// The statement as the script has it (schema names not rewritten).
    pub statement: String,
    /// The server's error code, when it sent one.
    pub code: Option<u16>,
    /// The server's error.
    pub error: String,
    /// The known cause, when the error matches one.
    pub cause: Option<String>,
    /// What to do about it.
    pub remedy: Option<String>,
    /// The pre-flight check that looks for this cause (`db.customisations`).
    pub check: Option<String>,
}

/// A rehearsal's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The target version.
    pub target: String,
    /// Where the scripts came from.
    pub scripts_source: String,
    /// Whether every statement ran.
    pub passed: bool,
    /// Every statement run, in order.
    pub statements: Vec<Outcome>,
    /// The first failure (the upgrade stops there).
    pub failure: Option<Failure>,
    /// The steps whose Java data migration is not rehearsed.
    pub not_rehearsed: Vec<String>,
    /// Scripts with text after their last `;`, which CloudStack's runner never runs.
    pub unterminated: Vec<String>,
    /// The `version` rows written, as the upgrade writes them.
    pub versions: Vec<String>,
    /// Whole run time in milliseconds.
    pub millis: u64,
}

impl Report {
    /// The statements that reached the slow threshold.
    pub fn slow(&self) -> impl Iterator<Item = &Outcome> {
        self.statements.iter().filter(|o| o.slow)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        writeln!(
            f,
            "rehearsal of the upgrade to {}: {verdict} ({} statements, {} ms; scripts from {})",
            self.target,
            self.statements.len(),
            self.millis,
            self.scripts_source
        )?;
        for o in self.slow() {
            writeln!(f, "  slow: {} (line {}) took {} ms", o.at, o.line, o.millis)?;
        }
        if let Some(x) = &self.failure {
            writeln!(f, "  first failure: {} (line {}, {})", x.at, x.line, x.step)?;
            writeln!(f, "    statement: {}", x.statement.trim())?;
            writeln!(f, "    server: {}", x.error)?;
            if let Some(c) = &x.cause {
                writeln!(f, "    cause: {c}")?;
            }
            if let Some(r) = &x.remedy {
                writeln!(f, "    remedy: {r}")?;
            }
            if let Some(c) = &x.check {
                writeln!(f, "    check: {c}")?;
            }
        }
        for s in &self.not_rehearsed {
            writeln!(
                f,
                "  not rehearsed: {s} has a Java data migration (performDataMigration)"
            )?;
        }
        for s in &self.unterminated {
            writeln!(f, "  note: {s} has text after its last `;`, never run")?;
        }
        Ok(())
    }
}

/// A known failure: the server error it shows as, its cause, remedy and check.
#[derive(Debug, Clone, Copy)]
pub struct KnownCause {
    /// The server error code.
    pub code: u16,
    /// A fragment the statement must contain (case-insensitive), if any.
    pub statement_contains: Option<&'static str>,
    /// The cause.
    pub cause: &'static str,
    /// The remedy.
    pub remedy: &'static str,
    /// The check that looks for it.
    pub check: Option<&'static str>,
}

/// The failures the rehearsal recognises (first match wins).
pub const KNOWN_CAUSES: &[KnownCause] = &[
    KnownCause {
        code: 1062,
        statement_contains: Some("guest_os"),
        cause: "a user-defined guest OS row holds an id the upgrade inserts (apache/cloudstack #5685, #2740)",
        remedy: "move the user-defined guest_os / guest_os_hypervisor rows to ids above the range CloudStack uses (see the db.customisations finding), then rehearse again",
        check: Some("db.customisations"),
    },
    KnownCause {
        code: 1062,
        statement_contains: None,
        cause: "a row the upgrade inserts already exists: a custom row, or an earlier run that was half-applied",
        remedy: "find the row by the key in the error; move a custom row away, or restore the pre-upgrade backup of a half-applied run",
        check: Some("db.customisations"),
    },
    KnownCause {
        code: 1060,
        statement_contains: None,
        cause: "the column already exists: an earlier upgrade run was half-applied (apache/cloudstack #7358, #3843)",
        remedy: "restore the backup taken before the earlier run (or drop what it added) so that the version table and the schema agree, then rehearse again",
        check: Some("db.version.sane"),
    },
    KnownCause {
        code: 1061,
        statement_contains: None,
        cause: "the index already exists: an earlier upgrade run was half-applied",
        remedy: "restore the backup taken before the earlier run, then rehearse again",
        check: Some("db.version.sane"),
    },
    KnownCause {
        code: 1050,
        statement_contains: None,
        cause: "the table already exists: an earlier upgrade run was half-applied",
        remedy: "restore the backup taken before the earlier run, then rehearse again",
        check: Some("db.version.sane"),
    },
    KnownCause {
        code: 1055,
        statement_contains: None,
        cause: "the session's sql_mode has ONLY_FULL_GROUP_BY, which CloudStack's views do not satisfy (apache/cloudstack #5175)",
        remedy: "keep sql_mode in db.properties (db.cloud.url.params sessionVariables) as CloudStack ships it, without ONLY_FULL_GROUP_BY, or remove it from the server's sql_mode",
        check: Some("db.server.compat"),
    },
    KnownCause {
        code: 1305,
        statement_contains: None,
        cause: "a stored procedure the scripts call is missing (apache/cloudstack #8546)",
        remedy: "re-create CloudStack's procedures (the db.routines.present finding names them) before the upgrade",
        check: Some("db.routines.present"),
    },
    KnownCause {
        code: 1142,
        statement_contains: None,
        cause: "the management server's database user lacks a privilege this statement needs",
        remedy: "grant the `cloud` user what CloudStack's install guide grants (ALL on cloud.* and cloud_usage.*), then rehearse again",
        check: Some("db.usage.present"),
    },
    KnownCause {
        code: 1044,
        statement_contains: None,
        cause: "the management server's database user is denied access to a schema this statement uses",
        remedy: "grant the `cloud` user what CloudStack's install guide grants (ALL on cloud.* and cloud_usage.*), then rehearse again",
        check: Some("db.usage.present"),
    },
    KnownCause {
        code: 1064,
        statement_contains: None,
        cause: "the server does not understand the statement: it may need a newer MySQL/MariaDB (apache/cloudstack #10048)",
        remedy: "check the target's supported database versions (db.server.compat) and upgrade the server first",
        check: Some("db.server.compat"),
    },
];

/// The known cause of server error `code` on `statement`.
pub fn known_cause(code: u16, statement: &str) -> Option<&'static KnownCause> {
    let lower = statement.to_ascii_lowercase();
    KNOWN_CAUSES.iter().find(|k| {
        k.code == code
            && k.statement_contains
                .is_none_or(|frag| lower.contains(&frag.to_ascii_lowercase()))
    })
}
