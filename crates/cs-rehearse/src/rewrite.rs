//! Points a script's `cloud` / `cloud_usage` names at the scratch schemas.
//!
//! CloudStack's upgrade scripts qualify names with the schema (`` `cloud`.`vm_instance` ``,
//! `cloud_usage.usage_event`), pass qualified names as strings to the idempotent procedures
//! (`CALL IDEMPOTENT_ADD_COLUMN('cloud.vm_instance', …)`), and compare
//! `information_schema` columns with `'cloud'`. Each of these is rewritten, outside comments;
//! anything else (a column called `cloud`, a value `'cloud stack'`) is left alone.

/// The schema names to rewrite to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMap {
    /// What `cloud` becomes.
    pub cloud: String,
    /// What `cloud_usage` becomes.
    pub usage: String,
}

impl SchemaMap {
    fn get(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case("cloud") {
            Some(&self.cloud)
        } else if name.eq_ignore_ascii_case("cloud_usage") {
            Some(&self.usage)
        } else {
            None
        }
    }

    /// Rewrites one statement (see the module docs).
    ///
    /// ```
    /// use cs_rehearse::SchemaMap;
    /// let m = SchemaMap { cloud: "c_x".into(), usage: "u_x".into() };
    /// assert_eq!(
    ///     m.rewrite("UPDATE `cloud`.`t` JOIN cloud_usage.u SET cloud = 'cloud' WHERE s = 'cloud'"),
    ///     "UPDATE `c_x`.`t` JOIN `u_x`.u SET cloud = 'c_x' WHERE s = 'c_x'"
    /// );
    /// assert_eq!(m.rewrite("CALL p('cloud.vm_instance', 'x')"), "CALL p('c_x.vm_instance', 'x')");
    /// ```
    pub fn rewrite(&self, sql: &str) -> String {
        let b = sql.as_bytes();
        let mut out = String::with_capacity(sql.len() + 16);
        let mut i = 0;
        let mut last_word = String::new();
        while i < b.len() {
            let c = b[i];
            // Comments pass unchanged.
            if c == b'/' && b.get(i + 1) == Some(&b'*') {
                let end = sql[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                out.push_str(&sql[i..end]);
                i = end;
                continue;
            }
            if c == b'\'' || c == b'"' {
                let end = string_end(b, i);
                let closed = end - 1 > i && b[end - 1] == c;
                let inner = &sql[i + 1..if closed { end - 1 } else { end }];
                out.push(c as char);
                if closed {
                    out.push_str(&self.rewrite_literal(inner));
                    out.push(c as char);
                } else {
                    out.push_str(inner);
                }
                i = end;
                last_word.clear();
                continue;
            }
            if c == b'`' {
                let close = sql[i + 1..].find('`').map(|e| i + 1 + e);
                let end = close.map_or(b.len(), |e| e + 1);
                let name = &sql[i + 1..close.unwrap_or(b.len())];
                match self.get(name) {
                    Some(to) if qualifies(b, end) || last_word.eq_ignore_ascii_case("use") => {
                        out.push('`');
                        out.push_str(to);
                        out.push('`');
                    }
                    _ => out.push_str(&sql[i..end]),
                }
                i = end;
                last_word.clear();
                continue;
            }
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
                {
                    i += 1;
                }
                let word = &sql[start..i];
                let preceded_by_dot = start > 0 && b[start - 1] == b'.';
                match self.get(word) {
                    Some(to)
                        if !preceded_by_dot
                            && (qualifies(b, i) || last_word.eq_ignore_ascii_case("use")) =>
                    {
                        out.push('`');
                        out.push_str(to);
                        out.push('`');
                    }
                    _ => out.push_str(word),
                }
                last_word = word.to_string();
                continue;
            }
            if !c.is_ascii_whitespace() {
                last_word.clear();
            }
            let ch = sql[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }

    fn rewrite_literal(&self, inner: &str) -> String {
        if let Some(to) = self.get(inner) {
            return to.to_string();
        }
        if let Some((schema, rest)) = inner.split_once('.')
            && let Some(to) = self.get(schema)
            && !rest.is_empty()
            && !rest.contains(char::is_whitespace)
        {
            return format!("{to}.{rest}");
        }
        inner.to_string()
    }
}

/// Whether the name ending at `end` is followed (after blanks) by a `.`.
fn qualifies(b: &[u8], end: usize) -> bool {
    let mut j = end;
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    b.get(j) == Some(&b'.')
}

/// The index just past the string literal starting at `start` (backslash escapes and doubled
/// quotes honoured); the end of the text when it is not closed.
fn string_end(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let mut j = start + 1;
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> SchemaMap {
        SchemaMap {
            cloud: "s_cloud".into(),
            usage: "s_usage".into(),
        }
    }

    #[test]
    fn rewrites_qualified_names_use_and_schema_literals_only() {
        let cases = [
            (
                "ALTER TABLE `cloud`.`vm_instance` ADD COLUMN `cloud` int",
                "ALTER TABLE `s_cloud`.`vm_instance` ADD COLUMN `cloud` int",
            ),
            ("USE cloud", "USE `s_cloud`"),
            ("use `cloud_usage`", "use `s_usage`"),
            (
                "SELECT * FROM information_schema.columns WHERE table_schema = 'cloud' AND x = 'cloud stack'",
                "SELECT * FROM information_schema.columns WHERE table_schema = 's_cloud' AND x = 'cloud stack'",
            ),
            (
                "INSERT INTO cloud_usage . usage_event VALUES ('it''s cloud.x', \"cloud\")",
                "INSERT INTO `s_usage` . usage_event VALUES ('it''s cloud.x', \"s_cloud\")",
            ),
            (
                "/* cloud.t */ SELECT t.cloud FROM x.cloud",
                "/* cloud.t */ SELECT t.cloud FROM x.cloud",
            ),
            (
                "SELECT 'São Paulo' FROM cloud.t",
                "SELECT 'São Paulo' FROM `s_cloud`.t",
            ),
            ("SELECT 'unterminated cloud", "SELECT 'unterminated cloud"),
        ];
        for (input, want) in cases {
            assert_eq!(m().rewrite(input), want, "{input}");
        }
    }
}
