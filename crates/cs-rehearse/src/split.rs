//! Splits a script into statements exactly as CloudStack's `ScriptRunner` does.
//!
//! Follows `framework/db/src/main/java/com/cloud/utils/db/ScriptRunner.java`
//! (`runScript(Connection, Reader)`), line by line, with its default delimiter `;` and
//! `fullLineDelimiter = false` (`DatabaseUpgradeChecker.runScript` never calls
//! `setDelimiter`):
//!
//! * each line is trimmed (Java's `String.trim()`: every character up to U+0020);
//! * a trimmed line starting with `--`, `//` or `#`, or an empty one, is skipped;
//! * a trimmed line *ending* with `;` ends the statement: the line up to its **last** `;` is
//!   appended, then a space (a line `…; -- note` does not end with `;`, so it does not end
//!   the statement: the next line joins it);
//! * any other line is appended up to its **first** `--` (even one inside a quoted string),
//!   then a space;
//! * text after the last statement that no `;` ends is never run.
//!
//! So a `;` inside a line (a quoted `';'`, a procedure body written on one line) does not split,
//! `/* … */` comments go to the server as they are, and `DELIMITER` is not a command: the
//! runner appends a `DELIMITER $$` line to the statement text like any other, and the server
//! then rejects it. CloudStack's own scripts therefore write procedures with their body's `;`s
//! inside lines and `END;` at the end of one.

use serde::Serialize;

/// One statement as the runner sends it to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// 1-based position in the script.
    pub index: usize,
    /// 1-based line of the script where the statement's text starts.
    pub line: usize,
    /// The text sent (with the runner's trailing space).
    pub text: String,
}

/// A script split into statements.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Split {
    /// The statements, in order.
    pub statements: Vec<Statement>,
    /// Text after the last `;` that the runner never runs (`None` when there is none).
    pub unterminated: Option<String>,
}

/// Java's `String.trim()`: strips every leading and trailing character up to U+0020.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// Splits `script` as `ScriptRunner.runScript` does (see the module docs).
///
/// ```
/// let s = cs_rehearse::split("-- a comment\nALTER TABLE `cloud`.`vm_instance`\n  ADD COLUMN x INT;\n");
/// assert_eq!(s.statements.len(), 1);
/// assert_eq!(s.statements[0].text, "ALTER TABLE `cloud`.`vm_instance`   ADD COLUMN x INT ");
/// assert_eq!(s.statements[0].line, 2);
/// ```
pub fn split(script: &str) -> Split {
    let mut out = Split::default();
    let mut command: Option<(usize, String)> = None;
    // `LineNumberReader.readLine` ends lines at `\n`, `\r` or `\r\n`.
    let normalized = script.replace("\r\n", "\n").replace('\r', "\n");
    for (i, line) in normalized.split('\n').enumerate() {
        let number = i + 1;
        let trimmed = java_trim(line);
        if trimmed.is_empty()
            || trimmed.starts_with("--")
            || trimmed.starts_with("//")
            || trimmed.starts_with('#')
        {
            continue;
        }
        let (_, text) = command.get_or_insert_with(|| (number, String::new()));
        if trimmed.ends_with(';') {
            let cut = line.rfind(';').unwrap_or(line.len());
            text.push_str(&line[..cut]);
            text.push(' ');
            let (start, text) = command.take().unwrap_or_default();
            out.statements.push(Statement {
                index: out.statements.len() + 1,
                line: start,
                text,
            });
        } else {
            match line.find("--") {
                Some(idx) => text.push_str(&line[..idx]),
                None => text.push_str(line),
            }
            text.push(' ');
        }
    }
    out.unterminated = command.map(|(_, t)| t).filter(|t| !java_trim(t).is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<String> {
        split(script)
            .statements
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    /// `(script, statements as the runner sends them)`, in the shapes CloudStack's upgrade
    /// scripts use.
    const TABLE: &[(&str, &[&str])] = &[
        // One statement per line.
        (
            "UPDATE `cloud`.`configuration` SET value='true' WHERE name='a';\n",
            &["UPDATE `cloud`.`configuration` SET value='true' WHERE name='a' "],
        ),
        // A multi-line statement: every line followed by a space.
        (
            "CREATE TABLE `cloud`.`t` (\n  `id` bigint unsigned NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\n",
            &[
                "CREATE TABLE `cloud`.`t` (   `id` bigint unsigned NOT NULL,   PRIMARY KEY (`id`) ) ENGINE=InnoDB ",
            ],
        ),
        // `--` comment lines skipped, trailing `--` stripped from inner lines only.
        (
            "-- Schema upgrade from 4.18.0.0 to 4.18.1.0\n--;\nALTER TABLE a -- why\n ADD b INT;\n",
            &["ALTER TABLE a   ADD b INT "],
        ),
        // A `;` followed by a comment does not end the line's statement: the runner strips
        // the comment and goes on, so the next statement joins it.
        ("SELECT 1; -- one\nSELECT 2;\n", &["SELECT 1;  SELECT 2 "]),
        // `#` and `//` lines skipped; blank lines skipped.
        (
            "# note\n\n   // note\nDELETE FROM t;\n",
            &["DELETE FROM t "],
        ),
        // `/* */` comments go to the server as they are.
        (
            "/* license\n header */\nINSERT INTO t VALUES (1);\n",
            &["/* license  header */ INSERT INTO t VALUES (1) "],
        ),
        // A quoted `;` inside a line does not split.
        (
            "UPDATE t SET v = 'a;b' WHERE id = 1;\n",
            &["UPDATE t SET v = 'a;b' WHERE id = 1 "],
        ),
        // …but a line that ends with a quoted `;` does (the runner cuts at the last `;`).
        (
            "INSERT INTO t VALUES ('x;\n');\n",
            &["INSERT INTO t VALUES ('x ", "') "],
        ),
        // A `--` inside a quoted string on an inner line cuts the line (as the runner does).
        (
            "UPDATE t SET v = 'a--b'\n WHERE id = 1;\n",
            &["UPDATE t SET v = 'a  WHERE id = 1 "],
        ),
        // A procedure as CloudStack writes it: body statements joined on lines, `END;` last.
        (
            "DROP PROCEDURE IF EXISTS `cloud`.`IDEMPOTENT_ADD_COLUMN`;\n\
             CREATE PROCEDURE `cloud`.`IDEMPOTENT_ADD_COLUMN` (\n\
             \t\tIN in_table_name VARCHAR(200)\n\
             , IN in_column_name VARCHAR(200)\n\
             )\n\
             BEGIN\n\
             \tDECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END;\n\
             CALL `cloud`.`IDEMPOTENT_ADD_COLUMN`('cloud.t', 'c');\n",
            &[
                "DROP PROCEDURE IF EXISTS `cloud`.`IDEMPOTENT_ADD_COLUMN` ",
                "CREATE PROCEDURE `cloud`.`IDEMPOTENT_ADD_COLUMN` ( \t\tIN in_table_name VARCHAR(200) , IN in_column_name VARCHAR(200) ) BEGIN \tDECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ",
                "CALL `cloud`.`IDEMPOTENT_ADD_COLUMN`('cloud.t', 'c') ",
            ],
        ),
        // `DELIMITER` is not a command for the runner: it becomes statement text, and a body
        // line ending with `;` ends the statement there.
        (
            "DELIMITER $$\nCREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\nEND $$\nDELIMITER ;\n",
            &[
                "DELIMITER $$ CREATE PROCEDURE p() BEGIN   SELECT 1 ",
                "END $$ DELIMITER  ",
            ],
        ),
        // CRLF line ends.
        ("SELECT 1;\r\nSELECT 2;\r\n", &["SELECT 1 ", "SELECT 2 "]),
    ];

    #[test]
    fn splits_the_shapes_cloudstack_scripts_use() {
        for (script, want) in TABLE {
            assert_eq!(texts(script), *want, "script:\n{script}");
        }
    }

    #[test]
    fn statements_know_their_line_and_index_and_the_unterminated_tail() {
        let s = split("-- c\n\nSELECT 1;\nUPDATE t\n SET a = 1;\nSELECT 3\n");
        let at: Vec<(usize, usize)> = s.statements.iter().map(|s| (s.index, s.line)).collect();
        assert_eq!(at, [(1, 3), (2, 4)]);
        assert_eq!(s.unterminated.as_deref(), Some("SELECT 3 "));
        assert_eq!(split("SELECT 1;\n-- end\n").unterminated, None);
    }
}
