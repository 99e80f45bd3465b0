//! yum / dnf / zypper `*.repo` files: INI sections, `key=value`, continuation lines that start
//! with whitespace (several `baseurl`s), `#` and `;` comments.

use crate::doc::{RawEntry, Tok};
use crate::text::{self, Line};
use crate::{Error, Result};

/// Keys whose values are repository URLs.
const URL_KEYS: &[&str] = &["baseurl", "mirrorlist", "metalink"];

/// Parses every section into an entry (its URLs from `baseurl`, `mirrorlist` and `metalink`).
pub(crate) fn parse(lines: &[Line<'_>]) -> Result<Vec<RawEntry>> {
    let syntax = |line: usize, message: String| Error::Syntax { line, message };
    let mut out: Vec<RawEntry> = Vec::new();
    // The key whose value the next continuation line extends, if any.
    let mut open_key: Option<String> = None;
    for line in lines {
        let (content, skip) = text::content(line);
        let base = line.start + skip;
        let trimmed = content.trim();
        if trimmed.is_empty() {
            open_key = None;
            continue;
        }
        if trimmed.starts_with(['#', ';']) {
            continue;
        }
        if content.starts_with([' ', '\t']) && open_key.is_some() {
            let key = open_key.as_deref().unwrap_or_default();
            if let Some(section) = out.last_mut() {
                match key {
                    "baseurl" => section.uris.extend(url_words(content, base)),
                    k if URL_KEYS.contains(&k) => {
                        section.mirrorlists.extend(url_words(content, base));
                    }
                    _ => {}
                }
            }
            continue;
        }
        if trimmed.starts_with('[') {
            open_key = None;
            let Some(close) = trimmed.find(']') else {
                return Err(syntax(
                    line.number,
                    "unterminated section header: missing `]`".into(),
                ));
            };
            let name = trimmed[1..close].trim();
            if name.is_empty() {
                return Err(syntax(line.number, "section without a name".into()));
            }
            let after = trimmed[close + 1..].trim_start();
            if !(after.is_empty() || after.starts_with(['#', ';'])) {
                return Err(syntax(
                    line.number,
                    format!("unexpected `{after}` after the section header"),
                ));
            }
            out.push(RawEntry {
                line: line.number,
                enabled: true,
                id: Some(name.to_string()),
                ..RawEntry::default()
            });
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(syntax(
                line.number,
                format!("expected `key=value`, a [section] or a comment, found `{trimmed}`"),
            ));
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(syntax(line.number, "a key is missing before `=`".into()));
        }
        let Some(section) = out.last_mut() else {
            return Err(syntax(
                line.number,
                format!("`{key}` outside any [section]"),
            ));
        };
        let value_off = content.len() - value.len();
        if key == "baseurl" {
            section.uris.extend(url_words(value, base + value_off));
        } else if URL_KEYS.contains(&key.as_str()) {
            section
                .mirrorlists
                .extend(url_words(value, base + value_off));
        } else if key == "enabled" {
            let v = value.trim().to_ascii_lowercase();
            section.enabled = !matches!(v.as_str(), "0" | "no" | "false" | "off");
        }
        open_key = Some(key);
    }
    Ok(out)
}

/// URLs of a value: separated by whitespace or commas.
fn url_words(s: &str, base: usize) -> Vec<Tok> {
    let mut out = Vec::new();
    for (off, w) in text::words(s) {
        let mut o = 0;
        for part in w.split(',') {
            if !part.is_empty() {
                out.push(Tok {
                    start: base + off + o,
                    text: part.to_string(),
                });
            }
            o += part.len() + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn err(text: &str) -> String {
        parse(&text::lines(text)).unwrap_err().to_string()
    }

    #[test]
    fn reads_sections_continuation_urls_and_enabled() {
        let text = "\
; managed by hand
[cloudstack]
name=CloudStack
baseurl=http://a/centos/$releasever/4.19/
        http://b/centos/$releasever/4.19/,http://c/x/4.19/
enabled=0
gpgcheck=0

[cloudstack]
mirrorlist = http://m/list
";
        let es = parse(&text::lines(text)).unwrap();
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].id.as_deref(), Some("cloudstack"));
        assert_eq!(es[0].uris.len(), 3);
        assert_eq!(&text[es[0].uris[2].start..][..10], "http://c/x");
        assert!(!es[0].enabled);
        assert_eq!(es[1].mirrorlists[0].text, "http://m/list");
        assert!(es[1].enabled);
    }

    #[test]
    fn malformed_sections_name_their_line() {
        assert_eq!(err("[]\n"), "line 1: section without a name");
        assert_eq!(err("\n[  ]\n"), "line 2: section without a name");
        assert!(err("[abc\n").contains("unterminated section header"));
        assert!(err("baseurl=x\n").contains("outside any [section]"));
        assert!(err("[a]\njunk\n").contains("line 2: expected `key=value`"));
        assert!(err("[a]\n=x\n").contains("key is missing"));
    }
}
