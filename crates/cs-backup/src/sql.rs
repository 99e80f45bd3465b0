//! SQL text: quoting and escaping for writing dumps, a statement splitter that reads dumps
//! the way the stock `mysql` client does (quotes, comments, `DELIMITER`), and a parser for the
//! rows of `INSERT … VALUES` statements.

use std::io::BufRead;

/// Quotes an identifier with backticks (inner backticks doubled).
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `'…'` with a string literal's escapes, as `mysql_real_escape_string` writes them.
pub(crate) fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'\'');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Most text has nothing to escape: skip 16 bytes at a time while a block holds
        // nothing special, and look at single bytes only in the block that does.
        if let Some(block) = bytes.get(i..i + 16)
            && !any16(block, needs_escape)
        {
            i += 16;
            continue;
        }
        let end = (i + 16).min(bytes.len());
        for (j, &b) in bytes[i..end].iter().enumerate() {
            if !needs_escape(b) {
                continue;
            }
            let esc: &[u8] = match b {
                0 => b"\\0",
                b'\'' => b"\\'",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                _ => b"\\Z",
            };
            out.extend_from_slice(&bytes[start..i + j]);
            out.extend_from_slice(esc);
            start = i + j + 1;
        }
        i = end;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\'');
}

/// Whether [`push_string`] escapes a byte.
#[inline]
fn needs_escape(b: u8) -> bool {
    (b == 0) | (b == b'\'') | (b == b'\\') | (b == b'\n') | (b == b'\r') | (b == 0x1A)
}

/// Whether `test` holds for any byte of a 16-byte block. Every byte is tested, without
/// stopping early, so that the compiler turns it into a few vector compares.
#[inline]
fn any16(block: &[u8], test: impl Fn(u8) -> bool) -> bool {
    let mut block16 = [0u8; 16];
    block16.copy_from_slice(&block[..16]);
    block16.iter().fold(0u8, |acc, &b| acc | u8::from(test(b))) != 0
}

/// `0x…` in upper-case hex, or `''` for an empty value.
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.extend_from_slice(b"''");
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len() * 2 + 2);
    out.extend_from_slice(b"0x");
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// A back-quoted name at the start of `s` (`` `a``b` `` is ``a`b``) and what follows it.
pub(crate) fn backquoted(s: &str) -> Option<(String, &str)> {
    let rest = s.strip_prefix('`')?;
    let mut name = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().is_some_and(|&(_, n)| n == '`') {
                chars.next();
                name.push('`');
                continue;
            }
            return Some((name, &rest[i + 1..]));
        }
        name.push(c);
    }
    None
}

/// A string literal for a value known to be text (`'…'` escaped).
pub(crate) fn literal(s: &str) -> String {
    let mut out = Vec::new();
    push_string(&mut out, s.as_bytes());
    String::from_utf8(out).unwrap_or_default()
}

/// One statement read from a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// The statement without its delimiter and without plain comments.
    pub(crate) text: Vec<u8>,
    /// The line it starts on (1-based).
    pub(crate) line: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Quote(u8),
    /// A `/*! … */` or `/*M! … */` comment, which the server executes: kept.
    KeptComment,
    /// A plain `/* … */` comment: dropped.
    Comment,
}

/// Splits SQL text into statements like the `mysql` client: honours `'`, `"` and `` ` ``
/// quoting with backslash escapes, drops `-- `, `#` and `/* */` comments, keeps `/*! */`
/// comments, and understands `DELIMITER` lines.
pub(crate) struct Splitter<R> {
    input: R,
    delimiter: Vec<u8>,
    state: State,
    line: Vec<u8>,
    stmt: Vec<u8>,
    line_no: u64,
    stmt_line: u64,
    ready: std::collections::VecDeque<Statement>,
    done: bool,
}

impl<R: BufRead> Splitter<R> {
    pub(crate) fn new(input: R) -> Self {
        Splitter {
            input,
            delimiter: b";".to_vec(),
            state: State::Normal,
            line: Vec::new(),
            stmt: Vec::new(),
            line_no: 0,
            stmt_line: 1,
            ready: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// The next statement, `None` at the end.
    pub(crate) fn next_statement(&mut self) -> std::io::Result<Option<Statement>> {
        loop {
            if let Some(s) = self.ready.pop_front() {
                return Ok(Some(s));
            }
            if self.done {
                return Ok(None);
            }
            self.line.clear();
            let n = self.input.read_until(b'\n', &mut self.line)?;
            if n == 0 {
                self.done = true;
                self.finish_statement();
                continue;
            }
            self.line_no += 1;
            if self.state == State::Normal && is_blank(&self.stmt) {
                let l = trim(&self.line);
                if l.len() > 10 && l[..10].eq_ignore_ascii_case(b"delimiter ") {
                    let d = trim(&l[10..]);
                    if !d.is_empty() {
                        self.delimiter = d.to_vec();
                    }
                    self.stmt.clear();
                    continue;
                }
            }
            let line = std::mem::take(&mut self.line);
            self.scan(&line);
            self.line = line;
        }
    }

    fn finish_statement(&mut self) {
        let text = trim(&self.stmt).to_vec();
        self.stmt.clear();
        if has_content(&text) {
            self.ready.push_back(Statement {
                text,
                line: self.stmt_line,
            });
        }
    }

    fn scan(&mut self, line: &[u8]) {
        let mut i = 0;
        while i < line.len() {
            if self.state == State::Normal && is_blank(&self.stmt) {
                self.stmt_line = self.line_no;
            }
            match self.state {
                State::Quote(q) => {
                    let rest = &line[i..];
                    match rest
                        .iter()
                        .position(|&b| b == q || (b == b'\\' && q != b'`'))
                    {
                        None => {
                            self.stmt.extend_from_slice(rest);
                            i = line.len();
                        }
                        Some(p) => {
                            self.stmt.extend_from_slice(&rest[..p]);
                            if rest[p] == b'\\' {
                                self.stmt.push(b'\\');
                                if let Some(&n) = rest.get(p + 1) {
                                    self.stmt.push(n);
                                    i += p + 2;
                                } else {
                                    i += p + 1;
                                }
                            } else {
                                self.stmt.push(q);
                                self.state = State::Normal;
                                i += p + 1;
                            }
                        }
                    }
                }
                State::KeptComment | State::Comment => {
                    let keep = self.state == State::KeptComment;
                    let rest = &line[i..];
                    match find(rest, b"*/") {
                        None => {
                            if keep {
                                self.stmt.extend_from_slice(rest);
                            }
                            i = line.len();
                        }
                        Some(p) => {
                            if keep {
                                self.stmt.extend_from_slice(&rest[..p + 2]);
                            } else {
                                self.stmt.push(b' ');
                            }
                            self.state = State::Normal;
                            i += p + 2;
                        }
                    }
                }
                State::Normal => {
                    let b = line[i];
                    if b == self.delimiter[0] && line[i..].starts_with(&self.delimiter) {
                        i += self.delimiter.len();
                        self.finish_statement();
                        continue;
                    }
                    match b {
                        b'\'' | b'"' | b'`' => {
                            self.state = State::Quote(b);
                            self.stmt.push(b);
                            i += 1;
                        }
                        b'#' => {
                            self.stmt.push(b'\n');
                            i = line.len();
                        }
                        b'-' if line[i..].starts_with(b"--")
                            && line
                                .get(i + 2)
                                .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) =>
                        {
                            self.stmt.push(b'\n');
                            i = line.len();
                        }
                        b'/' if line[i..].starts_with(b"/*") => {
                            if line[i..].starts_with(b"/*!") || line[i..].starts_with(b"/*M!") {
                                self.stmt.extend_from_slice(b"/*");
                                self.state = State::KeptComment;
                            } else {
                                self.state = State::Comment;
                            }
                            i += 2;
                        }
                        _ => {
                            // Copy a run of ordinary bytes at once.
                            let rest = &line[i..];
                            let d0 = self.delimiter[0];
                            let run = rest
                                .iter()
                                .position(|&c| {
                                    c == d0 || matches!(c, b'\'' | b'"' | b'`' | b'#' | b'-' | b'/')
                                })
                                .unwrap_or(rest.len())
                                .max(1);
                            self.stmt.extend_from_slice(&rest[..run]);
                            i += run;
                        }
                    }
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_whitespace)
}

/// Whether a statement holds anything but kept comments that the server would ignore. A
/// statement made only of `/*M!999999 … */`-style comments is dropped: the server answers
/// "Query was empty" to it.
fn has_content(text: &[u8]) -> bool {
    let mut rest = trim(text);
    while rest.starts_with(b"/*") {
        match find(rest, b"*/") {
            Some(end) => {
                let inner = &rest[2..end];
                // `/*!40101 SET …*/` (version-gated) is executed; `/*M!999999\- …*/` is not.
                let executed = (inner.starts_with(b"!") || inner.starts_with(b"M!")) && {
                    let body = inner.strip_prefix(b"M").unwrap_or(inner);
                    let digits: Vec<u8> = body[1..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .copied()
                        .collect();
                    let v: u64 = std::str::from_utf8(&digits)
                        .ok()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0);
                    v < 999_999 && !is_blank(&body[1 + digits.len()..])
                };
                if executed {
                    return true;
                }
                rest = trim(&rest[end + 2..]);
            }
            None => return true,
        }
    }
    !rest.is_empty()
}

/// Names a statement may use as schemas, for confining restores: every identifier that
/// qualifies another (`a` in `` `a`.`b` ``, `a` and `b` in `a.b.c`), the name after a leading
/// `USE`, and the name after a bare `DATABASE` or `SCHEMA` keyword (`CREATE DATABASE IF NOT
/// EXISTS x`). Conservative: `/*! … */` comments, which the server runs, are read as code,
/// `"…"` is read as an identifier (as under `ANSI_QUOTES`), and table aliases (`t.col`) are
/// listed too; callers only refuse names of schemas the restore must not touch. String
/// literals (`'…'`, backslash escapes) are skipped.
pub(crate) fn schema_names(stmt: &[u8]) -> SchemaNames {
    /// Identifiers are byte ranges (inside the quotes when quoted), made text only when
    /// kept, so that the rows of an `INSERT` cost no allocation.
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Ident(usize, usize, bool),
        Dot,
        Other,
    }
    let text = |start: usize, end: usize, quoted: bool| -> String {
        let raw = String::from_utf8_lossy(&stmt[start..end]);
        if !quoted {
            return raw.into_owned();
        }
        let q = stmt[start - 1] as char;
        let doubled = format!("{q}{q}");
        let mut t = raw.replace(&doubled, &q.to_string());
        if q == '"' {
            t = t.replace("\\\"", "\"");
        }
        t
    };
    let s = stmt;
    let mut out = SchemaNames::default();
    let mut i = 0;
    let mut prev2: Option<Tok> = None;
    let mut prev: Option<Tok> = None;
    let mut first = true;
    let mut use_next = false;
    let mut db_next = false;
    while i < s.len() {
        let b = s[i];
        let tok = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                i += 1;
                continue;
            }
            b'\'' => {
                i += 1;
                while i < s.len() {
                    match s[i] {
                        b'\\' => i += 2,
                        b'\'' if s.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                Tok::Other
            }
            b'`' | b'"' => {
                let q = b;
                i += 1;
                let start = i;
                while i < s.len() {
                    if s[i] == q {
                        if s.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    if q == b'"' && s[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let end = i.min(s.len());
                i += 1;
                Tok::Ident(start, end, true)
            }
            b'-' if s.get(i + 1) == Some(&b'-')
                && s.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'#' => {
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if s.get(i + 1) == Some(&b'*') => {
                let rest = &s[i + 2..];
                let kept = rest.starts_with(b"!") || rest.starts_with(b"M!");
                if kept {
                    // The comment's content runs: skip only the marker and its version.
                    i += 2 + if rest[0] == b'M' { 2 } else { 1 };
                    while i < s.len() && s[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i += 2;
                    while i < s.len() && !(s[i] == b'*' && s.get(i + 1) == Some(&b'/')) {
                        i += 1;
                    }
                    i += 2;
                }
                continue;
            }
            b'*' if s.get(i + 1) == Some(&b'/') => {
                i += 2;
                continue;
            }
            b'.' => {
                i += 1;
                Tok::Dot
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < s.len()
                    && (s[i].is_ascii_alphanumeric()
                        || s[i] == b'_'
                        || s[i] == b'$'
                        || s[i] >= 0x80)
                {
                    i += 1;
                }
                Tok::Ident(start, i, false)
            }
            _ => {
                i += 1;
                Tok::Other
            }
        };
        // `a . b`: `a` qualifies `b`.
        if let (Some(Tok::Ident(a, b, q)), Some(Tok::Dot), Tok::Ident(..)) = (prev2, prev, tok) {
            out.qualifiers.push(text(a, b, q));
        }
        if let Tok::Ident(start, end, quoted) = tok {
            let bare = !quoted;
            let word = &stmt[start..end];
            let name = || text(start, end, quoted);
            if use_next {
                out.databases.push(name());
                use_next = false;
            } else if db_next {
                let is = |ks: &[&str]| {
                    bare && ks.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
                };
                if is(&["DEFAULT", "CHARACTER", "CHARSET", "COLLATE"]) {
                    // `ALTER DATABASE DEFAULT CHARACTER SET …`: the default schema.
                    db_next = false;
                } else if !is(&["IF", "NOT", "EXISTS"]) {
                    out.databases.push(name());
                    db_next = false;
                }
            } else if bare && first && word.eq_ignore_ascii_case(b"USE") {
                use_next = true;
            } else if bare
                && (word.eq_ignore_ascii_case(b"DATABASE") || word.eq_ignore_ascii_case(b"SCHEMA"))
            {
                db_next = true;
            }
        } else {
            use_next = false;
            db_next = false;
        }
        first = false;
        prev2 = prev.take();
        prev = Some(tok);
    }
    out
}

/// What [`schema_names`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SchemaNames {
    /// Identifiers that qualify another one (schemas, or tables and aliases).
    pub(crate) qualifiers: Vec<String>,
    /// Names after `USE`, `DATABASE` or `SCHEMA`: schemas for sure.
    pub(crate) databases: Vec<String>,
}

/// The schema of a `USE` statement.
pub(crate) fn use_target(stmt: &[u8]) -> Option<String> {
    let mut p = Parser { s: stmt, i: 0 };
    p.ws();
    if !p.keyword("USE") {
        return None;
    }
    p.ws();
    p.ident()
}

/// The head of an `INSERT` (or `REPLACE`) statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InsertHead {
    /// The table (unquoted, without schema).
    pub(crate) table: String,
    /// The column list, when the statement has one.
    pub(crate) columns: Option<Vec<String>>,
    /// Offset of the first `(` of the values.
    pub(crate) values_at: usize,
}

/// Parses the head of `INSERT [IGNORE] INTO `t` [(`a`,`b`)] VALUES`, or `None` when the
/// statement is not an insert.
pub(crate) fn insert_head(stmt: &[u8]) -> Option<InsertHead> {
    let mut p = Parser { s: stmt, i: 0 };
    p.ws();
    if !(p.keyword("INSERT") || p.keyword("REPLACE")) {
        return None;
    }
    p.ws();
    if p.keyword("IGNORE") {
        p.ws();
    }
    if !p.keyword("INTO") {
        return None;
    }
    p.ws();
    let mut table = p.ident()?;
    if p.peek() == Some(b'.') {
        p.i += 1;
        table = p.ident()?;
    }
    p.ws();
    let mut columns = None;
    if p.peek() == Some(b'(') {
        p.i += 1;
        let mut cols = Vec::new();
        loop {
            p.ws();
            cols.push(p.ident()?);
            p.ws();
            match p.next()? {
                b',' => continue,
                b')' => break,
                _ => return None,
            }
        }
        columns = Some(cols);
        p.ws();
    }
    if !(p.keyword("VALUES") || p.keyword("VALUE")) {
        return None;
    }
    p.ws();
    Some(InsertHead {
        table,
        columns,
        values_at: p.i,
    })
}

/// Appends the rows of an insert to `out` as `LOAD DATA` text in one pass: values separated by
/// tabs, rows ended by newlines, `\N` for NULL, `\`, tab, newline, carriage return and NUL
/// escaped with `\`, and binary columns (`hex[i]`) as hex digits for `UNHEX`. It reads the
/// value forms dumps use — quoted strings, `NULL`, numbers, and `0x…` or `''` in binary
/// columns — and returns the number of rows, or `None` (with `out` as it was) when a value
/// needs the general parser ([`for_each_row`]), which also reports malformed statements.
pub(crate) fn rows_to_tsv(
    stmt: &[u8],
    head: &InsertHead,
    hex: &[bool],
    out: &mut Vec<u8>,
) -> Option<u64> {
    convert_rows::<false>(stmt, head, hex, out)
}

/// Appends the rows of an insert to `out` as the rows of a `COM_STMT_BULK_EXECUTE` command
/// (see [`crate::wire::bulk_value`]): every value as the bytes the server stores, binary
/// columns (`hex[i]`) decoded. Reads the same forms as [`rows_to_tsv`] and returns the same.
pub(crate) fn rows_to_bulk(
    stmt: &[u8],
    head: &InsertHead,
    hex: &[bool],
    out: &mut Vec<u8>,
) -> Option<u64> {
    convert_rows::<true>(stmt, head, hex, out)
}

/// [`rows_to_tsv`] (`BULK` false) or [`rows_to_bulk`] (`BULK` true).
fn convert_rows<const BULK: bool>(
    stmt: &[u8],
    head: &InsertHead,
    hex: &[bool],
    out: &mut Vec<u8>,
) -> Option<u64> {
    let before = out.len();
    let rows = rows_in::<BULK>(stmt, head.values_at, hex, out);
    if rows.is_none() {
        out.truncate(before);
    }
    rows
}

fn rows_in<const BULK: bool>(
    s: &[u8],
    mut i: usize,
    hex: &[bool],
    out: &mut Vec<u8>,
) -> Option<u64> {
    use crate::wire::{bulk_value, bulk_value_end, bulk_value_start};
    let ws = |mut i: usize| {
        while s.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut rows = 0;
    loop {
        i = ws(i);
        if s.get(i) != Some(&b'(') {
            return None;
        }
        i += 1;
        for (col, &is_hex) in hex.iter().enumerate() {
            i = ws(i);
            if col > 0 {
                if s.get(i) != Some(&b',') {
                    return None;
                }
                i = ws(i + 1);
                if !BULK {
                    out.push(b'\t');
                }
            }
            let b = *s.get(i)?;
            i = match b {
                b'\'' | b'"' if !is_hex => {
                    if BULK {
                        let start = bulk_value_start(out);
                        let end = string_literal::<BULK>(s, i, out)?;
                        bulk_value_end(out, start);
                        end
                    } else {
                        string_literal::<BULK>(s, i, out)?
                    }
                }
                b'\'' if is_hex && s.get(i + 1) == Some(&b'\'') && s.get(i + 2) != Some(&b'\'') => {
                    if BULK {
                        bulk_value(out, Some(b""));
                    }
                    i + 2
                }
                b'0' if is_hex && matches!(s.get(i + 1), Some(b'x' | b'X')) => {
                    let start = i + 2;
                    let mut end = start;
                    while s.get(end).is_some_and(u8::is_ascii_hexdigit) {
                        end += 1;
                    }
                    if (end - start) % 2 == 1 {
                        return None;
                    }
                    if BULK {
                        let at = bulk_value_start(out);
                        out.extend(
                            s[start..end]
                                .chunks_exact(2)
                                .map(|p| nibble(p[0]) << 4 | nibble(p[1])),
                        );
                        bulk_value_end(out, at);
                    } else {
                        out.extend_from_slice(&s[start..end]);
                    }
                    end
                }
                b'N' if s[i..].starts_with(b"NULL")
                    && !s
                        .get(i + 4)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') =>
                {
                    if BULK {
                        bulk_value(out, None);
                    } else {
                        out.extend_from_slice(b"\\N");
                    }
                    i + 4
                }
                b'0'..=b'9' | b'-' | b'+' | b'.' if !is_hex => {
                    let start = i;
                    let mut end = i;
                    while s.get(end).is_some_and(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')
                    }) {
                        end += 1;
                    }
                    if BULK {
                        bulk_value(out, Some(&s[start..end]));
                    } else {
                        out.extend_from_slice(&s[start..end]);
                    }
                    end
                }
                _ => return None,
            };
        }
        i = ws(i);
        if s.get(i) != Some(&b')') {
            return None;
        }
        if !BULK {
            out.push(b'\n');
        }
        rows += 1;
        i = ws(i + 1);
        match s.get(i) {
            Some(b',') => i += 1,
            None => return Some(rows),
            Some(b';') => return (ws(i + 1) == s.len()).then_some(rows),
            Some(_) => return None,
        }
    }
}

/// The value of a hex digit (already checked to be one).
#[inline]
fn nibble(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// Whether a byte inside a quoted string needs more than copying on its way to `LOAD DATA`
/// text (besides the quote itself).
#[inline]
fn tsv_special(b: u8) -> bool {
    (b == b'\\') | (b == b'\t') | (b == b'\n') | (b == b'\r') | (b == 0)
}

/// A raw byte as `LOAD DATA` text.
#[inline]
fn push_tsv_byte(out: &mut Vec<u8>, b: u8) {
    match b {
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        0 => out.extend_from_slice(b"\\0"),
        _ => out.push(b),
    }
}

/// Converts the string literal at `s[at]` (a quote) to `LOAD DATA` text (`BULK` false) or to
/// its bytes (`BULK` true); returns the offset after its closing quote.
fn string_literal<const BULK: bool>(s: &[u8], at: usize, out: &mut Vec<u8>) -> Option<usize> {
    let q = s[at];
    // Bytes that end a plain run: the quote, a backslash, and what `LOAD DATA` text escapes.
    let stop = |b: u8| (b == q) | (b == b'\\') | (!BULK & tsv_special(b));
    let push = |out: &mut Vec<u8>, b: u8| {
        if BULK {
            out.push(b);
        } else {
            push_tsv_byte(out, b);
        }
    };
    let mut i = at + 1;
    loop {
        // Copy the run up to the next byte that needs attention, 16 bytes at a time while
        // blocks hold nothing special (the common case).
        let start = i;
        loop {
            if let Some(block) = s.get(i..i + 16)
                && !any16(block, stop)
            {
                i += 16;
                continue;
            }
            let end = (i + 16).min(s.len());
            match s[i..end].iter().position(|&b| stop(b)) {
                Some(p) => {
                    i += p;
                    break;
                }
                // An unterminated string.
                None => return None,
            }
        }
        out.extend_from_slice(&s[start..i]);
        let b = s[i];
        if b == q {
            if s.get(i + 1) == Some(&q) {
                out.push(q);
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        if b != b'\\' {
            push(out, b);
            i += 1;
            continue;
        }
        let e = *s.get(i + 1)?;
        match e {
            b'0' => push(out, 0),
            b'b' => out.push(8),
            b'n' => push(out, b'\n'),
            b'r' => push(out, b'\r'),
            b't' => push(out, b'\t'),
            b'Z' => out.push(0x1A),
            // `\%` and `\_` keep their backslash, as in the server.
            b'%' | b'_' => {
                push(out, b'\\');
                out.push(e);
            }
            other => push(out, other),
        }
        i += 2;
    }
}

/// Calls `f` with every row of an insert's `VALUES` list, values decoded to the bytes the
/// server would store (strings unescaped, hex and bit literals decoded, numbers as written,
/// `NULL` as `None`).
pub(crate) fn for_each_row(
    stmt: &[u8],
    head: &InsertHead,
    mut f: impl FnMut(&[Option<&[u8]>]),
) -> Result<u64, String> {
    let mut p = Parser {
        s: stmt,
        i: head.values_at,
    };
    let mut arena: Vec<u8> = Vec::new();
    let mut spans: Vec<Option<(usize, usize)>> = Vec::new();
    let mut rows = 0;
    loop {
        p.ws();
        if p.next() != Some(b'(') {
            return Err(format!("expected `(` at byte {}", p.i));
        }
        arena.clear();
        spans.clear();
        loop {
            p.ws();
            let start = arena.len();
            let is_null = p.value(&mut arena)?;
            spans.push(if is_null {
                None
            } else {
                Some((start, arena.len()))
            });
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b')') => break,
                _ => return Err(format!("expected `,` or `)` at byte {}", p.i)),
            }
        }
        let values: Vec<Option<&[u8]>> =
            spans.iter().map(|s| s.map(|(a, b)| &arena[a..b])).collect();
        f(&values);
        rows += 1;
        p.ws();
        match p.next() {
            Some(b',') => continue,
            None => return Ok(rows),
            Some(b';') => {
                p.ws();
                if p.peek().is_none() {
                    return Ok(rows);
                }
                return Err("text after the end of the insert".into());
            }
            Some(_) => {
                // `ON DUPLICATE KEY …` and the like are not in dumps.
                return Err(format!("unexpected text after row {rows} at byte {}", p.i));
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn ws(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let end = self.i + kw.len();
        if end <= self.s.len()
            && self.s[self.i..end].eq_ignore_ascii_case(kw.as_bytes())
            && self
                .s
                .get(end)
                .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        {
            self.i = end;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        if self.peek() == Some(b'`') {
            self.i += 1;
            let mut out = Vec::new();
            loop {
                let b = self.next()?;
                if b == b'`' {
                    if self.peek() == Some(b'`') {
                        self.i += 1;
                        out.push(b'`');
                    } else {
                        break;
                    }
                } else {
                    out.push(b);
                }
            }
            String::from_utf8(out).ok()
        } else {
            let start = self.i;
            while let Some(b) = self.peek() {
                if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80 {
                    self.i += 1;
                } else {
                    break;
                }
            }
            (self.i > start)
                .then(|| String::from_utf8(self.s[start..self.i].to_vec()).ok())
                .flatten()
        }
    }

    /// Parses one value into `out`; returns whether it was `NULL`.
    fn value(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        let at = self.i;
        match self.peek() {
            Some(b'\'') | Some(b'"') => {
                self.string(out)?;
                Ok(false)
            }
            Some(b'_') => {
                // A character set introducer: `_binary '…'`, `_utf8mb4 0x…`.
                self.ident();
                self.ws();
                self.value(out)
            }
            Some(b'0') if matches!(self.s.get(self.i + 1), Some(b'x') | Some(b'X')) => {
                self.i += 2;
                let start = self.i;
                while self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                    self.i += 1;
                }
                decode_hex(&self.s[start..self.i], out)
                    .ok_or_else(|| format!("bad hex literal at byte {at}"))?;
                Ok(false)
            }
            Some(b'x') | Some(b'X') if self.s.get(self.i + 1) == Some(&b'\'') => {
                self.i += 2;
                let start = self.i;
                while self.peek().is_some_and(|b| b != b'\'') {
                    self.i += 1;
                }
                let digits = &self.s[start..self.i];
                self.i += 1;
                decode_hex(digits, out).ok_or_else(|| format!("bad hex literal at byte {at}"))?;
                Ok(false)
            }
            Some(b'b') | Some(b'B') if self.s.get(self.i + 1) == Some(&b'\'') => {
                self.i += 2;
                let start = self.i;
                while self.peek().is_some_and(|b| b == b'0' || b == b'1') {
                    self.i += 1;
                }
                let bits = &self.s[start..self.i];
                if self.next() != Some(b'\'') {
                    return Err(format!("bad bit literal at byte {at}"));
                }
                decode_bits(bits, out);
                Ok(false)
            }
            Some(b'N') | Some(b'n') if self.keyword("NULL") => Ok(true),
            Some(b) if b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.' => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
                {
                    self.i += 1;
                }
                out.extend_from_slice(&self.s[start..self.i]);
                Ok(false)
            }
            _ => Err(format!("unexpected value at byte {at}")),
        }
    }

    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let q = self.next().unwrap_or(b'\'');
        loop {
            let rest = &self.s[self.i..];
            let p = rest
                .iter()
                .position(|&b| b == q || b == b'\\')
                .ok_or_else(|| "unterminated string".to_string())?;
            out.extend_from_slice(&rest[..p]);
            self.i += p;
            let b = self.next().unwrap_or(q);
            if b == q {
                if self.peek() == Some(q) {
                    self.i += 1;
                    out.push(q);
                    continue;
                }
                return Ok(());
            }
            let e = self
                .next()
                .ok_or_else(|| "unterminated string".to_string())?;
            match e {
                b'0' => out.push(0),
                b'b' => out.push(8),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'Z' => out.push(0x1A),
                b'%' | b'_' => {
                    out.push(b'\\');
                    out.push(e);
                }
                other => out.push(other),
            }
        }
    }
}

fn decode_hex(digits: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let val = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut it = digits.iter();
    if digits.len() % 2 == 1 {
        out.push(val(*it.next()?)?);
    }
    while let (Some(&a), Some(&b)) = (it.next(), it.next()) {
        out.push(val(a)? << 4 | val(b)?);
    }
    Some(())
}

fn decode_bits(bits: &[u8], out: &mut Vec<u8>) {
    let n = bits.len().div_ceil(8).max(1);
    let mut value = vec![0u8; n];
    for (k, &b) in bits.iter().rev().enumerate() {
        if b == b'1' {
            value[n - 1 - k / 8] |= 1 << (k % 8);
        }
    }
    out.extend_from_slice(&value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_find_qualifiers_and_database_names() {
        let n = schema_names(b"CREATE TABLE `cloud`.`x` (a int)");
        assert_eq!(n.qualifiers, ["cloud"]);
        let n = schema_names(b"insert into cloud . t values ('a.b', \"q\".c)");
        assert_eq!(n.qualifiers, ["cloud", "q"]);
        let n = schema_names(b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `cloud` /*!40100 DEFAULT CHARACTER SET utf8mb4 */");
        assert_eq!(n.databases, ["cloud"]);
        let n = schema_names(b"USE `x``y`");
        assert_eq!(n.databases, ["x`y"]);
        let n =
            schema_names(b"/*!50001 CREATE VIEW `v` AS select `a`.`b`.`c` AS `c` from `a`.`b` */");
        assert_eq!(n.qualifiers, ["a", "b", "a"]);
        let n = schema_names(b"select 'USE mysql', 'x.y' /* mysql.user */ -- mysql.db\n");
        assert_eq!(n, SchemaNames::default());
        let n = schema_names(b"ALTER DATABASE DEFAULT CHARACTER SET utf8mb4");
        assert_eq!(n, SchemaNames::default());
        let n = schema_names(b"DROP SCHEMA IF EXISTS mysql");
        assert_eq!(n.databases, ["mysql"]);
    }

    #[track_caller]
    fn split(input: &str, expected: &[&str]) {
        let mut s = Splitter::new(input.as_bytes());
        let mut got = Vec::new();
        while let Some(st) = s.next_statement().unwrap() {
            got.push(String::from_utf8(st.text).unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn splits_like_the_mysql_client() {
        split("SELECT 1;\nSELECT 'a;b';", &["SELECT 1", "SELECT 'a;b'"]);
        split("SET a=1; SET b=2;\n", &["SET a=1", "SET b=2"]);
        split("-- comment\nSELECT 1; # c\n", &["SELECT 1"]);
        split("/* plain */ SELECT 1;", &["SELECT 1"]);
        split(
            "/*!40101 SET NAMES utf8mb4 */;\n",
            &["/*!40101 SET NAMES utf8mb4 */"],
        );
        split("/*M!999999\\- enable the sandbox mode */ \n", &[]);
        split(
            "INSERT INTO t VALUES ('it\\'s;', \"x\"\"y\");",
            &["INSERT INTO t VALUES ('it\\'s;', \"x\"\"y\")"],
        );
        split(
            "DELIMITER ;;\nCREATE PROCEDURE p() BEGIN SELECT 1; END ;;\nDELIMITER ;\nSELECT 2;",
            &["CREATE PROCEDURE p() BEGIN SELECT 1; END", "SELECT 2"],
        );
        split("SELECT `a;--b` FROM t;", &["SELECT `a;--b` FROM t"]);
        split("SELECT 1 -- trailing\n;", &["SELECT 1"]);
        split("SELECT 'multi\nline';", &["SELECT 'multi\nline'"]);
    }

    #[track_caller]
    fn rows(stmt: &str, expected: &[&[Option<&[u8]>]]) {
        let head = insert_head(stmt.as_bytes()).expect("an insert");
        let mut got: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
        for_each_row(stmt.as_bytes(), &head, |r| {
            got.push(r.iter().map(|v| v.map(<[u8]>::to_vec)).collect())
        })
        .unwrap();
        let want: Vec<Vec<Option<Vec<u8>>>> = expected
            .iter()
            .map(|r| r.iter().map(|v| v.map(<[u8]>::to_vec)).collect())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn parses_insert_rows() {
        rows(
            "INSERT INTO `t` VALUES (1,'a\\'b',NULL,0x00FF,''),(-2.5e3,'\\0\\n\\\\',b'1010',_binary 'x',X'41')",
            &[
                &[Some(b"1"), Some(b"a'b"), None, Some(b"\x00\xff"), Some(b"")],
                &[
                    Some(b"-2.5e3"),
                    Some(b"\x00\n\\"),
                    Some(b"\x0a"),
                    Some(b"x"),
                    Some(b"A"),
                ],
            ],
        );
        let head = insert_head(b"INSERT INTO `a``b` (`x`, `y`) VALUES (1,2)").unwrap();
        assert_eq!(head.table, "a`b");
        assert_eq!(head.columns.unwrap(), ["x", "y"]);
        assert!(insert_head(b"SELECT 1").is_none());
        assert_eq!(use_target(b"USE `a``b`").as_deref(), Some("a`b"));
        assert_eq!(use_target(b"USER x"), None);
    }

    /// `LOAD DATA` text of an insert through the general parser, as the restore wrote it
    /// before the one-pass conversion.
    fn tsv_by_parser(stmt: &[u8], hex: &[bool]) -> Vec<u8> {
        let head = insert_head(stmt).unwrap();
        let mut out = Vec::new();
        for_each_row(stmt, &head, |vals| {
            for (i, v) in vals.iter().enumerate() {
                if i > 0 {
                    out.push(b'\t');
                }
                match v {
                    None => out.extend_from_slice(b"\\N"),
                    Some(b) if hex[i] => out.extend_from_slice(hex::encode_upper(b).as_bytes()),
                    Some(b) => {
                        for &c in *b {
                            push_tsv_byte(&mut out, c);
                        }
                    }
                }
            }
            out.push(b'\n');
        })
        .unwrap();
        out
    }

    /// Bulk rows of an insert through the general parser.
    fn bulk_by_parser(stmt: &[u8]) -> Vec<u8> {
        let head = insert_head(stmt).unwrap();
        let mut out = Vec::new();
        for_each_row(stmt, &head, |vals| {
            for v in vals {
                crate::wire::bulk_value(&mut out, *v);
            }
        })
        .unwrap();
        out
    }

    #[track_caller]
    fn tsv(stmt: &str, hex: &[bool], expected: Option<&str>) {
        let head = insert_head(stmt.as_bytes()).unwrap();
        // The bulk form reads the same statements, and to the same values.
        let mut bulk = b"kept".to_vec();
        let rows = rows_to_bulk(stmt.as_bytes(), &head, hex, &mut bulk);
        match expected {
            Some(e) => {
                assert_eq!(rows, Some(e.matches('\n').count() as u64));
                assert_eq!(&bulk[4..], bulk_by_parser(stmt.as_bytes()));
            }
            None => {
                assert_eq!(rows, None);
                assert_eq!(bulk, b"kept");
            }
        }
        let mut out = b"kept".to_vec();
        let rows = rows_to_tsv(stmt.as_bytes(), &head, hex, &mut out);
        match expected {
            Some(e) => {
                assert_eq!(String::from_utf8_lossy(&out[4..]), e);
                assert_eq!(rows, Some(e.matches('\n').count() as u64));
                assert_eq!(&out[4..], tsv_by_parser(stmt.as_bytes(), hex));
            }
            None => {
                assert_eq!(rows, None);
                assert_eq!(out, b"kept");
            }
        }
    }

    #[test]
    fn inserts_convert_to_load_data_text() {
        let text = [false, false, false];
        tsv(
            "INSERT INTO `t` (`a`,`b`,`c`) VALUES (1,'x\\'y\\\\z\\n\tw',NULL),(-2.5e3,'',\"q\"\"r\");",
            &text,
            Some("1\tx'y\\\\z\\n\\tw\t\\N\n-2.5e3\t\tq\"r\n"),
        );
        tsv(
            "INSERT INTO t VALUES ('\\0\\Z\\%\\_\\b\\r', 0, NULL)",
            &text,
            Some("\\0\u{1a}\\\\%\\\\_\u{8}\\r\t0\t\\N\n"),
        );
        let bin = [false, true];
        tsv(
            "INSERT INTO t VALUES (1,0x00FF),(2,''),(3,NULL)",
            &bin,
            Some("1\t00FF\n2\t\n3\t\\N\n"),
        );
        // Hex digits of either case decode to the same bytes.
        let stmt = b"INSERT INTO t VALUES (1,0xabCD09)";
        let mut bulk = Vec::new();
        let head = insert_head(stmt).unwrap();
        assert_eq!(rows_to_bulk(stmt, &head, &bin, &mut bulk), Some(1));
        assert_eq!(bulk, [0, 1, b'1', 0, 3, 0xAB, 0xCD, 0x09]);
        // Forms left to the general parser.
        tsv("INSERT INTO t VALUES (1,_binary 'x')", &bin, None);
        tsv("INSERT INTO t VALUES (1,'x')", &bin, None);
        tsv("INSERT INTO t VALUES (1,0xABC)", &bin, None);
        tsv("INSERT INTO t VALUES (b'1','x',null)", &text, None);
        // Malformed: the general parser reports it.
        tsv("INSERT INTO t VALUES (1,'x',2", &text, None);
        tsv("INSERT INTO t VALUES (1,'x',2,3)", &text, None);
        tsv("INSERT INTO t VALUES (1,'x)", &text, None);
    }

    /// The escaping before the 16-byte blocks, byte by byte.
    fn push_string_bytewise(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(b'\'');
        for &b in bytes {
            match b {
                0 => out.extend_from_slice(b"\\0"),
                b'\'' => out.extend_from_slice(b"\\'"),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                0x1A => out.extend_from_slice(b"\\Z"),
                _ => out.push(b),
            }
        }
        out.push(b'\'');
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn escaping_round_trips_through_the_parser(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let mut stmt = b"INSERT INTO t VALUES (".to_vec();
            push_string(&mut stmt, &a);
            stmt.push(b',');
            push_hex(&mut stmt, &b);
            stmt.extend_from_slice(b",NULL)");
            let head = insert_head(&stmt).unwrap();
            let mut got = Vec::new();
            for_each_row(&stmt, &head, |r| {
                got.push(r.iter().map(|v| v.map(<[u8]>::to_vec)).collect::<Vec<_>>())
            })
            .unwrap();
            proptest::prop_assert_eq!(got, vec![vec![Some(a.clone()), Some(b.clone()), None]]);

            let mut bytewise = Vec::new();
            push_string_bytewise(&mut bytewise, &a);
            let mut blockwise = Vec::new();
            push_string(&mut blockwise, &a);
            proptest::prop_assert_eq!(blockwise, bytewise);

            let hex = [false, true, false];
            let mut fast = Vec::new();
            proptest::prop_assert_eq!(rows_to_tsv(&stmt, &head, &hex, &mut fast), Some(1));
            proptest::prop_assert_eq!(fast, tsv_by_parser(&stmt, &hex));
            let mut bulk = Vec::new();
            proptest::prop_assert_eq!(rows_to_bulk(&stmt, &head, &hex, &mut bulk), Some(1));
            proptest::prop_assert_eq!(bulk, bulk_by_parser(&stmt));
        }
    }
}
