//! apt one-line format (`sources.list`, `*.list`).
//!
//! `[#] deb|deb-src [ [options] ] URI suite [component...] [# comment]`, as apt's
//! `sourcelist.cc` reads it: a `#` outside `[…]` starts a comment; `[…]` and `"…"` quote
//! whitespace inside a word (`cdrom:[Ubuntu 24.04 LTS]/`); a suite ending in `/` is a flat
//! repository and takes no component.

use crate::doc::{RawEntry, Tok};
use crate::text::{self, Line};
use crate::{Error, Result};

/// Parses every line; commented-out entries become disabled entries.
pub(crate) fn parse(lines: &[Line<'_>]) -> Result<Vec<RawEntry>> {
    let mut out = Vec::new();
    for line in lines {
        let (content, skip) = text::content(line);
        let base = line.start + skip;
        let trimmed = content.trim_start();
        let off = content.len() - trimmed.len();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            let rest = trimmed.trim_start_matches('#').trim_start();
            let rest_off = off + (trimmed.len() - rest.len());
            // A comment that parses as an entry is a disabled entry; anything else is prose.
            if let Ok(mut e) = parse_entry(rest, base + rest_off, line.number) {
                e.enabled = false;
                out.push(e);
            }
            continue;
        }
        let e = parse_entry(trimmed, base + off, line.number).map_err(|message| Error::Syntax {
            line: line.number,
            message,
        })?;
        out.push(e);
    }
    Ok(out)
}

/// Parses one entry (without a leading `#`) starting at absolute offset `base`.
fn parse_entry(s: &str, base: usize, line: usize) -> std::result::Result<RawEntry, String> {
    let s = strip_comment(s);
    let mut p = Cursor { s, pos: 0 };
    let ty = p.word_plain();
    if ty != "deb" && ty != "deb-src" {
        return Err(format!("unknown type `{ty}` (expected deb or deb-src)"));
    }
    p.skip_ws();
    let mut arches = Vec::new();
    if p.rest().starts_with('[') {
        let close = p
            .rest()
            .find(']')
            .ok_or_else(|| "unterminated [options]: missing `]`".to_string())?;
        let inner = &p.rest()[1..close];
        for opt in inner.split_whitespace() {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| format!("option `{opt}` has no value (expected key=value)"))?;
            let key = key.trim_end_matches(['+', '-']);
            if key.is_empty() {
                return Err(format!("option `{opt}` has no name"));
            }
            if key == "arch" {
                arches.extend(
                    value
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string),
                );
            }
        }
        p.pos += close + 1;
        p.skip_ws();
    }
    let uri_start = p.pos;
    let uri = p.word_quoted()?;
    if uri.is_empty() {
        return Err("missing URI".into());
    }
    if !uri.contains(':') {
        return Err(format!("`{uri}` is not a URI (expected scheme:…)"));
    }
    p.skip_ws();
    let suite = p.word_quoted()?;
    if suite.is_empty() {
        return Err(format!("missing suite after `{uri}`"));
    }
    let mut components = Vec::new();
    loop {
        p.skip_ws();
        let start = p.pos;
        let w = p.word_quoted()?;
        if w.is_empty() {
            break;
        }
        components.push(Tok {
            start: base + start,
            text: w.to_string(),
        });
    }
    if suite.ends_with('/') && !components.is_empty() {
        return Err(format!(
            "flat repository `{suite}` (suite ending in `/`) takes no component"
        ));
    }
    Ok(RawEntry {
        line,
        enabled: true,
        id: None,
        types: vec![ty.to_string()],
        uris: vec![Tok {
            start: base + uri_start,
            text: uri.to_string(),
        }],
        suites: vec![suite.to_string()],
        components,
        arches,
        mirrorlists: Vec::new(),
    })
}

/// Cuts `s` at the first `#` outside `[…]`, as apt does.
fn strip_comment(s: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '#' if depth == 0 => return &s[..i],
            _ => {}
        }
    }
    s
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    /// A word up to whitespace or `[`.
    fn word_plain(&mut self) -> &'a str {
        let r = self.rest();
        let end = r
            .find(|c: char| c.is_whitespace() || c == '[')
            .unwrap_or(r.len());
        self.pos += end;
        &r[..end]
    }

    /// A word up to whitespace, where `[…]` and `"…"` may contain whitespace.
    fn word_quoted(&mut self) -> std::result::Result<&'a str, String> {
        let r = self.rest();
        let mut close: Option<char> = None;
        let mut end = r.len();
        for (i, c) in r.char_indices() {
            match close {
                Some(q) if c == q => close = None,
                Some(_) => {}
                None if c == '[' => close = Some(']'),
                None if c == '"' => close = Some('"'),
                None if c.is_whitespace() => {
                    end = i;
                    break;
                }
                None => {}
            }
        }
        if let Some(q) = close {
            return Err(format!("unterminated `{q}` in `{r}`"));
        }
        self.pos += end;
        Ok(&r[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn one(line: &str) -> RawEntry {
        let ls = text::lines(line);
        let mut v = parse(&ls).unwrap();
        assert_eq!(v.len(), 1, "{line}");
        v.remove(0)
    }

    #[track_caller]
    fn err(text: &str) -> String {
        parse(&text::lines(text)).unwrap_err().to_string()
    }

    #[test]
    fn reads_options_with_and_without_inner_spaces() {
        let e = one("deb [arch=amd64,arm64 signed-by=/k.gpg] https://x/ubuntu noble 4.19 main");
        assert_eq!(e.arches, ["amd64", "arm64"]);
        assert_eq!(e.uris[0].text, "https://x/ubuntu");
        assert_eq!(e.components.len(), 2);
        let e = one("deb [ arch=amd64 trusted=yes ] https://x/ubuntu noble 4.19");
        assert_eq!(e.arches, ["amd64"]);
        assert_eq!(e.components[0].text, "4.19");
        assert_eq!(e.components[0].start, 54);
    }

    #[test]
    fn commented_entries_are_disabled_and_prose_is_ignored() {
        let e = one("#deb https://x/ubuntu noble 4.18");
        assert!(!e.enabled);
        let e = one("  ##  deb-src https://x/ubuntu noble 4.18 # old");
        assert!(!e.enabled);
        assert_eq!(e.types, ["deb-src"]);
        assert!(
            parse(&text::lines("# deb is the binary type\n# see man\n"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn cdrom_uris_keep_their_spaces() {
        let e = one("deb cdrom:[Ubuntu 24.04 LTS _Noble_ - Release amd64 (20240424)]/ noble main");
        assert!(e.uris[0].text.ends_with(")]/"));
        assert_eq!(e.suites, ["noble"]);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(
            err("\ndeb [arch=amd64 https://x noble 4.19\n"),
            "line 2: unterminated [options]: missing `]`"
        );
        assert!(err("deb https://x\n").contains("missing suite"));
        assert!(err("deb https://x ./ 4.19\n").contains("takes no component"));
        assert!(err("dep https://x noble\n").contains("unknown type `dep`"));
        assert!(err("deb [arch] https://x noble\n").contains("no value"));
        assert!(err("deb mirror noble\n").contains("not a URI"));
    }
}
