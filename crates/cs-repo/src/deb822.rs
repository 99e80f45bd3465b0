//! apt deb822 format (`*.sources`): paragraphs of `Field: value` lines separated by blank
//! lines; continuation lines start with a space or tab (` .` stands for an empty line inside a
//! multi-line value such as an inline `Signed-By` key); `#` lines are comments; field names are
//! case-insensitive.

use crate::doc::{RawEntry, Tok};
use crate::text::{self, Line};
use crate::{Error, Result};

#[derive(Default)]
struct Field {
    name: String,
    line: usize,
    /// Words of the value with their absolute offsets.
    words: Vec<Tok>,
}

#[derive(Default)]
struct Paragraph {
    line: usize,
    fields: Vec<Field>,
}

impl Paragraph {
    fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    fn values(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|f| f.words.iter().map(|w| w.text.clone()).collect())
            .unwrap_or_default()
    }
}

/// Parses every paragraph into an entry.
pub(crate) fn parse(lines: &[Line<'_>]) -> Result<Vec<RawEntry>> {
    let syntax = |line: usize, message: String| Error::Syntax { line, message };
    let mut paragraphs: Vec<Paragraph> = Vec::new();
    let mut current: Option<Paragraph> = None;
    for line in lines {
        let (content, skip) = text::content(line);
        let base = line.start + skip;
        if content.starts_with('#') {
            continue;
        }
        if content.trim().is_empty() {
            paragraphs.extend(current.take());
            continue;
        }
        if content.starts_with([' ', '\t']) {
            let Some(field) = current.as_mut().and_then(|p| p.fields.last_mut()) else {
                return Err(syntax(
                    line.number,
                    "continuation line outside a field".into(),
                ));
            };
            field.words.extend(words(content, base));
            continue;
        }
        let Some((name, _)) = content.split_once(':') else {
            return Err(syntax(
                line.number,
                format!("expected `Field: value`, found `{}`", content.trim()),
            ));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(syntax(line.number, format!("invalid field name `{name}`")));
        }
        let p = current.get_or_insert_with(|| Paragraph {
            line: line.number,
            fields: Vec::new(),
        });
        let lname = name.to_ascii_lowercase();
        if p.get(&lname).is_some() {
            return Err(syntax(
                line.number,
                format!("field `{name}` appears twice in one paragraph"),
            ));
        }
        let value_off = name.len() + 1;
        p.fields.push(Field {
            name: lname,
            line: line.number,
            words: words(&content[value_off..], base + value_off),
        });
    }
    paragraphs.extend(current);
    paragraphs.into_iter().map(entry).collect()
}

fn words(s: &str, base: usize) -> Vec<Tok> {
    text::words(s)
        .into_iter()
        .map(|(o, w)| Tok {
            start: base + o,
            text: w.to_string(),
        })
        .collect()
}

fn entry(p: Paragraph) -> Result<RawEntry> {
    let missing = |field: &str| Error::Syntax {
        line: p.line,
        message: format!("paragraph has no `{field}` field"),
    };
    let types = p.values("types");
    if types.is_empty() {
        return Err(missing("Types"));
    }
    if let Some(t) = types.iter().find(|t| *t != "deb" && *t != "deb-src") {
        let line = p.get("types").map_or(p.line, |f| f.line);
        return Err(Error::Syntax {
            line,
            message: format!("unknown type `{t}` (expected deb or deb-src)"),
        });
    }
    let uris = p.get("uris").map(|f| f.words.clone()).unwrap_or_default();
    if uris.is_empty() {
        return Err(missing("URIs"));
    }
    let suites = p.values("suites");
    if suites.is_empty() {
        return Err(missing("Suites"));
    }
    let components = p
        .get("components")
        .map(|f| f.words.clone())
        .unwrap_or_default();
    if let Some(flat) = suites.iter().find(|s| s.ends_with('/'))
        && !components.is_empty()
    {
        let line = p.get("components").map_or(p.line, |f| f.line);
        return Err(Error::Syntax {
            line,
            message: format!("flat repository `{flat}` (suite ending in `/`) takes no component"),
        });
    }
    let enabled = p.get("enabled").is_none_or(|f| {
        let v = f
            .words
            .first()
            .map(|w| w.text.to_ascii_lowercase())
            .unwrap_or_default();
        !matches!(v.as_str(), "no" | "false" | "0" | "off")
    });
    Ok(RawEntry {
        line: p.line,
        enabled,
        id: None,
        types,
        uris,
        suites,
        components,
        arches: p.values("architectures"),
        mirrorlists: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn entries(text: &str) -> Vec<RawEntry> {
        parse(&text::lines(text)).unwrap()
    }

    #[track_caller]
    fn err(text: &str) -> String {
        parse(&text::lines(text)).unwrap_err().to_string()
    }

    #[test]
    fn reads_paragraphs_multi_values_and_case_insensitive_names() {
        let text = "\
# CloudStack
types: deb
URIS: https://a/ubuntu
 https://b/ubuntu
Suites: noble jammy
Components: 4.19
Signed-By: -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 abc
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb-src
URIs: https://c/ubuntu
Suites: noble
Components: main
Enabled: no
";
        let es = entries(text);
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].line, 2);
        assert_eq!(es[0].uris.len(), 2);
        assert_eq!(es[0].suites, ["noble", "jammy"]);
        assert_eq!(es[0].components[0].text, "4.19");
        assert!(es[0].enabled);
        assert!(!es[1].enabled);
    }

    #[test]
    fn malformed_paragraphs_name_their_line() {
        assert_eq!(
            err("Types: deb\nnonsense\n"),
            "line 2: expected `Field: value`, found `nonsense`"
        );
        assert!(err(" leading\n").contains("line 1: continuation"));
        assert!(err("Types: deb\nSuites: noble\n").contains("no `URIs`"));
        assert!(err("Types: deb\nURIs: a\nuris: b\n").contains("line 3"));
        assert!(err("Types: rpm\nURIs: a\nSuites: x\n").contains("unknown type"));
    }
}
