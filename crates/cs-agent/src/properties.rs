//! Lossless parsing and editing of Java properties files (`agent.properties`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cs_core::Secret;
use serde::Serialize;

use crate::keys::{self, KeyKind};
use crate::{Error, Result};

/// The keys that make up a KVM host's identity: the refresh restores each one the package
/// changed. The network devices are included because a packaged default (`cloudbr0`) on a
/// host wired differently takes its guests off the network.
pub const IDENTITY_KEYS: &[&str] = &[
    "guid",
    "local.storage.uuid",
    "host",
    "zone",
    "pod",
    "cluster",
    "keystore.passphrase",
    "public.network.device",
    "private.network.device",
    "guest.network.device",
];

/// Keys whose values are secrets: never printed, masked in diffs.
pub const SECRET_KEYS: &[&str] = &["keystore.passphrase"];

/// Whether `key`'s value is a secret.
pub fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A comment, a blank line, or anything without a key; kept byte for byte.
    Other(String),
    Entry(Entry),
}

#[derive(Clone, PartialEq, Eq)]
struct Entry {
    /// The whole logical line as written: continuation lines included, terminator excluded.
    raw: String,
    /// Byte offset in `raw` where the value starts.
    value_start: usize,
    /// The line terminator (`\n`, `\r\n`, `\r` or empty at the end of the file).
    eol: String,
    key: String,
    value: String,
    /// 1-based line number of the first natural line.
    line: usize,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The raw text may hold a passphrase: show the key only.
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// A Java properties file, parsed so that it prints back byte for byte and edits touch only the
/// lines they must.
///
/// Follows `java.util.Properties.load`: `#` and `!` comments, `=`, `:` or whitespace between key
/// and value, `\` line continuations (leading whitespace of the next line dropped), `\uXXXX`,
/// `\t`, `\n`, `\r`, `\f` and `\x` → `x` escapes. A key given twice keeps its last value, as Java
/// does; [`Properties::duplicates`] reports such keys.
///
/// ```
/// use cs_agent::Properties;
/// let mut p = Properties::parse("# agent\nguid = abc\nzone:1\nzone=2\n")?;
/// assert_eq!(p.get("guid"), Some("abc"));
/// assert_eq!(p.get("zone"), Some("2"));
/// assert_eq!(p.duplicates()[0].key, "zone");
/// p.set("guid", "def");
/// assert_eq!(p.to_string(), "# agent\nguid = def\nzone:1\nzone=2\n");
/// # Ok::<(), cs_agent::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    lines: Vec<Line>,
    /// Read from bytes that are UTF-8 and not ASCII: written back as UTF-8, so that an
    /// unedited file keeps its bytes.
    utf8: bool,
}

/// A key given more than once; the last value wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    /// The key.
    pub key: String,
    /// The 1-based lines where it is set, in order.
    pub lines: Vec<usize>,
}

const WS: [char; 3] = [' ', '\t', '\x0c'];

/// Splits text into natural lines, each with its terminator.
fn natural_lines(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push((&text[start..i], &text[i..i + 1]));
                i += 1;
                start = i;
            }
            b'\r' => {
                let len = if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                out.push((&text[start..i], &text[i..i + len]));
                i += len;
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        out.push((&text[start..], ""));
    }
    out
}

/// Whether a line ends in an odd number of backslashes (continues on the next line).
fn continues(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Unescapes a key or value (continuations already joined) as `Properties.loadConvert` does.
fn unescape(s: &str, line: usize) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    // A high surrogate from a `\uD8xx` escape, waiting for its low half.
    let mut high: Option<u32> = None;
    while let Some(c) = chars.next() {
        if let Some(h) = high.take() {
            if c != '\\' || !chars.as_str().starts_with('u') {
                out.push('\u{fffd}');
            } else {
                high = Some(h);
            }
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| Error::Syntax {
                        line,
                        reason: "malformed \\uxxxx escape".into(),
                    })?;
                // Surrogate pairs arrive as two escapes; combine them.
                match (high.take(), code) {
                    (None, 0xD800..=0xDBFF) => high = Some(code),
                    (Some(h), 0xDC00..=0xDFFF) => {
                        let c = 0x10000 + ((h - 0xD800) << 10) + (code - 0xDC00);
                        out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                    }
                    (h, _) => {
                        if h.is_some() {
                            out.push('\u{fffd}');
                        }
                        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    if high.is_some() {
        out.push('\u{fffd}');
    }
    Ok(out)
}

/// Escapes a value for writing: backslashes, leading whitespace, control and non-ASCII
/// characters (the agent reads the file as ISO-8859-1).
fn escape(s: &str, is_key: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            ' ' if i == 0 || is_key => out.push_str("\\ "),
            '=' | ':' | '#' | '!' if is_key => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Parses one logical line (continuations joined into `logical`, with a map back to `raw`
/// offsets) into key, value and the raw offset where the value starts.
fn split_entry(raw: &str, line: usize) -> Result<(String, String, usize)> {
    // Build the logical line: drop `\`+terminator and the next line's leading whitespace,
    // remembering for each logical char its byte offset in raw.
    let mut logical = String::new();
    let mut offsets = Vec::new();
    let nat = natural_lines(raw);
    for (idx, (text, _eol)) in nat.iter().enumerate() {
        let base = text.as_ptr() as usize - raw.as_ptr() as usize;
        // Leading whitespace goes, on the first line and on every continuation line.
        let body = text.trim_start_matches(WS);
        let skip = text.len() - body.len();
        let cont = idx + 1 < nat.len() && continues(body);
        let body = if cont { &body[..body.len() - 1] } else { body };
        for (o, c) in body.char_indices() {
            offsets.push(base + skip + o);
            logical.push(c);
        }
    }
    offsets.push(raw.len());
    let chars: Vec<char> = logical.chars().collect();
    let mut i = 0;
    let mut key_end = chars.len();
    let mut escaped = false;
    while i < chars.len() {
        let c = chars[i];
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || WS.contains(&c) {
            key_end = i;
            break;
        }
        i += 1;
    }
    let mut v = key_end;
    while v < chars.len() && WS.contains(&chars[v]) {
        v += 1;
    }
    if v < chars.len() && (chars[v] == '=' || chars[v] == ':') {
        v += 1;
        while v < chars.len() && WS.contains(&chars[v]) {
            v += 1;
        }
    }
    let key: String = chars[..key_end].iter().collect();
    let value: String = chars[v..].iter().collect();
    let value_start = offsets[v.min(offsets.len() - 1)];
    Ok((unescape(&key, line)?, unescape(&value, line)?, value_start))
}

impl Properties {
    /// Parses properties text.
    ///
    /// # Errors
    /// [`Error::Syntax`] for a malformed `\uXXXX` escape (Java refuses those too).
    pub fn parse(text: &str) -> Result<Properties> {
        let nat = natural_lines(text);
        let mut lines = Vec::new();
        let mut i = 0;
        while i < nat.len() {
            let (body, eol) = nat[i];
            let first = body.trim_start_matches(WS);
            if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
                lines.push(Line::Other(format!("{body}{eol}")));
                i += 1;
                continue;
            }
            let start_line = i + 1;
            let mut raw = String::from(body);
            let mut last_eol = eol;
            let mut cur = body;
            while continues(cur) && i + 1 < nat.len() {
                i += 1;
                raw.push_str(last_eol);
                let (next, next_eol) = nat[i];
                raw.push_str(next);
                last_eol = next_eol;
                cur = next;
            }
            let (key, value, value_start) = split_entry(&raw, start_line)?;
            lines.push(Line::Entry(Entry {
                raw,
                value_start,
                eol: last_eol.to_string(),
                key,
                value,
                line: start_line,
            }));
            i += 1;
        }
        Ok(Properties { lines, utf8: false })
    }

    /// Parses a file's bytes: UTF-8 when valid, otherwise ISO-8859-1 (what Java reads).
    ///
    /// # Errors
    /// As [`Properties::parse`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Properties> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Properties {
                utf8: !s.is_ascii(),
                ..Properties::parse(s)?
            }),
            Err(_) => Properties::parse(&bytes.iter().map(|&b| b as char).collect::<String>()),
        }
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(e) => Some(e),
            Line::Other(_) => None,
        })
    }

    /// The effective value of `key` (the last one given), unescaped.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries()
            .filter(|e| e.key == key)
            .last()
            .map(|e| e.value.as_str())
    }

    /// The value of a secret key (`keystore.passphrase`), wrapped so it cannot print.
    pub fn get_secret(&self, key: &str) -> Option<Secret> {
        self.get(key).map(Secret::new)
    }

    /// Whether `key` is set (to anything, the empty string included).
    pub fn contains(&self, key: &str) -> bool {
        self.entries().any(|e| e.key == key)
    }

    /// Every key with its effective value, sorted by key.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.entries()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    /// The keys, in file order, each once.
    pub fn keys(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.entries()
            .filter(|e| seen.insert(e.key.as_str()))
            .map(|e| e.key.as_str())
            .collect()
    }

    /// Keys given more than once.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for e in self.entries() {
            by_key.entry(&e.key).or_default().push(e.line);
        }
        by_key
            .into_iter()
            .filter(|(_, l)| l.len() > 1)
            .map(|(k, lines)| Duplicate {
                key: k.to_string(),
                lines,
            })
            .collect()
    }

    /// Sets `key` to `value`. The last line giving `key` keeps its key text and separator and
    /// gets the new value; a new key is appended as `key=value`. Other lines are untouched.
    pub fn set(&mut self, key: &str, value: &str) {
        let escaped = escape(value, false);
        if let Some(e) = self.lines.iter_mut().rev().find_map(|l| match l {
            Line::Entry(e) if e.key == key => Some(e),
            _ => None,
        }) {
            if e.value == value {
                return;
            }
            let mut raw = e.raw[..e.value_start].to_string();
            // A value that started on a continuation line keeps its prefix as written.
            raw.push_str(&escaped);
            // A key written without a separator (`guid` alone) needs one now.
            let read = split_entry(&raw, e.line).ok().map(|(k, v, _)| (k, v));
            if read.as_ref().is_none_or(|(k, v)| k != key || v != value) {
                raw = format!("{}={escaped}", &e.raw[..e.value_start]);
                e.value_start += 1;
            }
            e.raw = raw;
            e.value = value.to_string();
            return;
        }
        let eol = self.dominant_eol();
        match self.lines.last_mut() {
            // A last line ending in a continuation would take the new line in: an empty line
            // ends it (as it ends it for `Properties.load`).
            // The line's own terminator, so that a `\r` and the empty line's `\n` do not make
            // one `\r\n`.
            Some(Line::Entry(e)) if continues(&e.raw) => {
                if e.eol.is_empty() {
                    e.eol = eol.clone();
                }
                let blank = e.eol.clone();
                self.lines.push(Line::Other(blank));
            }
            Some(Line::Entry(e)) if e.eol.is_empty() => e.eol = eol.clone(),
            Some(Line::Other(s)) if !s.is_empty() && !s.ends_with(['\n', '\r']) => {
                s.push_str(&eol);
            }
            _ => {}
        }
        let key_text = escape(key, true);
        let raw = format!("{key_text}={escaped}");
        self.lines.push(Line::Entry(Entry {
            value_start: key_text.len() + 1,
            raw,
            eol,
            key: key.to_string(),
            value: value.to_string(),
            line: self.line_count() + 1,
        }));
    }

    /// Removes every line that gives `key`; returns whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry(e) if e.key == key));
        before != self.lines.len()
    }

    fn line_count(&self) -> usize {
        self.to_string().lines().count()
    }

    fn dominant_eol(&self) -> String {
        let text = self.to_string();
        if text.contains("\r\n") {
            "\r\n".into()
        } else {
            "\n".into()
        }
    }

    /// Typed value of a key the agent knows (see [`crate::known_keys`]), falling back to the
    /// agent's default when the key is not set. `Ok(None)`: not set and no default.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when the value does not parse as the key's type.
    pub fn typed(&self, key: &str) -> Result<Option<Value>> {
        let info = keys::key_info(key);
        let kind = info.map_or(KeyKind::Str, |i| i.kind);
        let raw = match self.get(key) {
            Some(v) => v,
            None => match info.and_then(|i| i.default) {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        Value::parse(key, kind, raw).map(Some)
    }

    /// The file as bytes: in the encoding it was read in ([`Properties::from_bytes`]: UTF-8
    /// stays UTF-8, so an unedited file keeps every byte), else ISO-8859-1 when every
    /// character fits (what the agent reads: `AgentShell.loadProperties` through
    /// `PropertiesUtil.loadFromFile`, `Properties.load` of a `FileInputStream`), UTF-8
    /// otherwise.
    pub fn to_bytes(&self) -> Vec<u8> {
        let text = self.to_string();
        if !self.utf8 && text.chars().all(|c| (c as u32) < 0x100) {
            text.chars().map(|c| c as u8).collect()
        } else {
            text.into_bytes()
        }
    }
}

impl fmt::Display for Properties {
    /// The file as text, byte for byte as parsed plus edits.
    ///
    /// This prints values, the passphrase included: write it to the file, never to a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            match l {
                Line::Other(s) => f.write_str(s)?,
                Line::Entry(e) => {
                    f.write_str(&e.raw)?;
                    f.write_str(&e.eol)?;
                }
            }
        }
        Ok(())
    }
}

/// A typed property value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// A `String` key.
    Str(String),
    /// An `Integer` or `Long` key.
    Int(i64),
    /// A `Boolean` key (Java's `Boolean.parseBoolean`: `true` in any case, anything else false).
    Bool(bool),
}

impl Value {
    fn parse(key: &str, kind: KeyKind, raw: &str) -> Result<Value> {
        Ok(match kind {
            KeyKind::Str => Value::Str(raw.to_string()),
            KeyKind::Bool => Value::Bool(raw.trim().eq_ignore_ascii_case("true")),
            KeyKind::Int | KeyKind::Long => {
                Value::Int(raw.trim().parse().map_err(|_| Error::InvalidValue {
                    key: key.to_string(),
                    expected: "integer",
                })?)
            }
        })
    }
}

/// How a key changed between two versions of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChangeKind {
    /// Set in the new version only.
    Added,
    /// Set in the old version only.
    Removed,
    /// Set in both, to different values.
    Changed,
}

/// One key-level difference. Values of secret keys are `***`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// What happened to it.
    pub kind: ChangeKind,
    /// The old value (masked for secret keys).
    pub old: Option<String>,
    /// The new value (masked for secret keys).
    pub new: Option<String>,
}

impl fmt::Display for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.as_deref().map_or("-".into(), |s| format!("{s:?}"));
        write!(
            f,
            "{} {}: {} -> {}",
            match self.kind {
                ChangeKind::Added => "+",
                ChangeKind::Removed => "-",
                ChangeKind::Changed => "~",
            },
            self.key,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// Key-level differences from `old` to `new`, sorted by key; comments and layout are ignored.
///
/// ```
/// use cs_agent::{ChangeKind, Properties, diff};
/// let old = Properties::parse("guid=a\nkeystore.passphrase=s3cret\n")?;
/// let new = Properties::parse("guid=b\nport=8250\n")?;
/// let d = diff(&old, &new);
/// assert_eq!(d.len(), 3);
/// assert_eq!(d[0].to_string(), r#"~ guid: "a" -> "b""#);
/// assert_eq!(d[1].kind, ChangeKind::Removed);
/// assert_eq!(d[1].old.as_deref(), Some("***"));
/// # Ok::<(), cs_agent::Error>(())
/// ```
pub fn diff(old: &Properties, new: &Properties) -> Vec<KeyChange> {
    let (a, b) = (old.to_map(), new.to_map());
    let mask = |k: &str, v: &String| {
        if is_secret_key(k) {
            "***".to_string()
        } else {
            v.clone()
        }
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let kind = match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) if x == y => return None,
                (Some(_), Some(_)) => ChangeKind::Changed,
                (Some(_), None) => ChangeKind::Removed,
                (None, Some(_)) => ChangeKind::Added,
                (None, None) => return None,
            };
            Some(KeyChange {
                key: k.clone(),
                kind,
                old: a.get(k).map(|v| mask(k, v)),
                new: b.get(k).map(|v| mask(k, v)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn kv(text: &str, expected: &[(&str, &str)]) {
        let p = Properties::parse(text).unwrap();
        let got: Vec<(String, String)> = p
            .entries()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(p.to_string(), text, "round trip");
    }

    #[test]
    fn separators_comments_and_blank_lines() {
        kv(
            "a=1\nb:2\nc 3\nd\t=\t4\n",
            &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
        );
        kv("# c=1\n! d=2\n\n   \n  e = 5", &[("e", "5")]);
        kv("empty=\nbare\n", &[("empty", ""), ("bare", "")]);
        kv("a==b\n", &[("a", "=b")]);
        kv("  indented = x  \n", &[("indented", "x  ")]);
    }

    #[test]
    fn escapes_and_continuations() {
        kv(r"k\ ey=v\tw\u0041\\z", &[("k ey", "v\twA\\z")]);
        kv(r"k\=x\:y=1", &[("k=x:y", "1")]);
        kv("list=a,\\\n    b,\\\n    c\n", &[("list", "a,b,c")]);
        kv("a=ends\\\\\nb=2\n", &[("a", "ends\\"), ("b", "2")]);
        kv("key\\\n  cont=v\r\n", &[("keycont", "v")]);
        kv("# comment \\\nx=1\n", &[("x", "1")]);
    }

    #[test]
    fn malformed_unicode_escape_is_an_error() {
        let e = Properties::parse("a=1\nb=\\u12\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: malformed \\uxxxx escape");
    }

    #[test]
    fn duplicates_last_one_wins() {
        let p = Properties::parse("host=a\nx=1\nhost=b\n").unwrap();
        assert_eq!(p.get("host"), Some("b"));
        assert_eq!(
            p.duplicates(),
            [Duplicate {
                key: "host".into(),
                lines: vec![1, 3]
            }]
        );
    }

    #[test]
    fn set_changes_only_the_last_occurrence() {
        let mut p = Properties::parse("# h\nhost = a\nhost : b # not a comment\nz=1").unwrap();
        p.set("host", "10.0.0.1,10.0.0.2@roundrobin");
        assert_eq!(
            p.to_string(),
            "# h\nhost = a\nhost : 10.0.0.1,10.0.0.2@roundrobin\nz=1"
        );
        p.set("guid", "g 1");
        assert_eq!(
            p.to_string(),
            "# h\nhost = a\nhost : 10.0.0.1,10.0.0.2@roundrobin\nz=1\nguid=g 1\n"
        );
        p.set(" odd key", " lead\u{e9}");
        assert!(p.to_string().ends_with("\\ odd\\ key=\\ lead\\u00E9\n"));
        let back = Properties::parse(&p.to_string()).unwrap();
        assert_eq!(back.get(" odd key"), Some(" lead\u{e9}"));
    }

    #[test]
    fn set_keeps_crlf_and_continuation_prefix() {
        let mut p = Properties::parse("a=1\r\nb=\\\r\n   2\r\n").unwrap();
        p.set("b", "3");
        p.set("c", "4");
        assert_eq!(p.to_string(), "a=1\r\nb=\\\r\n   3\r\nc=4\r\n");
    }

    #[test]
    fn set_same_value_changes_nothing() {
        let mut p = Properties::parse("a = \\u0041\n").unwrap();
        p.set("a", "A");
        assert_eq!(p.to_string(), "a = \\u0041\n");
    }

    #[test]
    fn remove_drops_every_occurrence() {
        let mut p = Properties::parse("k=1\n# c\nk=2\nx=3\n").unwrap();
        assert!(p.remove("k"));
        assert_eq!(p.to_string(), "# c\nx=3\n");
        assert!(!p.remove("k"));
    }

    #[test]
    fn typed_access_uses_defaults_from_the_facts() {
        let p = Properties::parse("workers=7\ndeveloper=TRUE\nport=x\n").unwrap();
        assert_eq!(p.typed("workers").unwrap(), Some(Value::Int(7)));
        assert_eq!(p.typed("developer").unwrap(), Some(Value::Bool(true)));
        assert_eq!(p.typed("cmds.timeout").unwrap(), Some(Value::Int(7200)));
        assert_eq!(
            p.typed("private.network.device").unwrap(),
            Some(Value::Str("cloudbr1".into()))
        );
        assert_eq!(p.typed("guid").unwrap(), None);
        assert_eq!(
            p.typed("port").unwrap_err().to_string(),
            "`port` is not a valid integer"
        );
    }

    #[test]
    fn latin1_bytes_are_read_as_java_does() {
        let p = Properties::from_bytes(b"name=caf\xe9\n").unwrap();
        assert_eq!(p.get("name"), Some("caf\u{e9}"));
        assert_eq!(p.to_bytes(), b"name=caf\xe9\n");
    }

    #[test]
    fn debug_never_shows_values() {
        let p = Properties::parse("keystore.passphrase=hunter2\n").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(
            format!("{:?}", p.get_secret("keystore.passphrase")),
            "Some(***)"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn any_text_round_trips(text in "[a-z=:#! \\\\\\n\\r\\tu0-9]{0,60}") {
                if let Ok(p) = Properties::parse(&text) {
                    prop_assert_eq!(p.to_string(), text);
                }
            }

            #[test]
            fn set_then_get_returns_the_value(
                key in "[a-z.]{1,8}",
                value in "\\PC{0,20}",
                text in "([a-z.]{1,5}=[a-z ]{0,5}\n){0,5}",
            ) {
                let mut p = Properties::parse(&text).unwrap();
                p.set(&key, &value);
                let back = Properties::parse(&p.to_string()).unwrap();
                prop_assert_eq!(back.get(&key), Some(value.as_str()));
                for (k, v) in Properties::parse(&text).unwrap().to_map() {
                    if k != key {
                        prop_assert_eq!(back.get(&k), Some(v.as_str()));
                    }
                }
            }
        }
    }
}
