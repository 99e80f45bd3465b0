//! The pure API: scan a file for CloudStack entries, rewrite their release token.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::doc::{self, Document, RawEntry, Release};
use crate::rules::{Rules, check_target};
use crate::text;
use crate::{Error, Result};

/// The syntax of a repository file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Format {
    /// apt one-line format: `sources.list`, `*.list`.
    AptList,
    /// apt deb822 format: `*.sources`.
    Deb822,
    /// yum / dnf / zypper INI format: `*.repo`.
    Yum,
}

impl Format {
    /// The format a file name implies (`sources.list` and `*.list`, `*.sources`, `*.repo`), as
    /// apt and yum decide which files to read.
    ///
    /// ```
    /// use cs_repo::Format;
    /// use std::path::Path;
    /// assert_eq!(Format::from_path(Path::new("/etc/apt/sources.list")), Some(Format::AptList));
    /// assert_eq!(Format::from_path(Path::new("cloudstack.sources")), Some(Format::Deb822));
    /// assert_eq!(Format::from_path(Path::new("cloudstack.repo.bak")), None);
    /// ```
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "list" => Some(Format::AptList),
            "sources" => Some(Format::Deb822),
            "repo" => Some(Format::Yum),
            _ => None,
        }
    }

    /// A short name (`apt-list`, `deb822`, `yum`).
    pub fn name(self) -> &'static str {
        match self {
            Format::AptList => "apt-list",
            Format::Deb822 => "deb822",
            Format::Yum => "yum",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A CloudStack repository entry of a file: an apt line, a deb822 paragraph or a yum section
/// with at least one URL that the [`Rules`] recognise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// 1-based line where the entry starts (the apt line, the paragraph's first field, the
    /// yum section header).
    pub line: usize,
    /// Whether the package manager uses it (not commented out, not `Enabled: no`, not
    /// `enabled=0`).
    pub enabled: bool,
    /// The yum section id.
    pub id: Option<String>,
    /// `deb` / `deb-src` (empty for yum).
    pub types: Vec<String>,
    /// The entry's CloudStack URLs: apt URIs, yum `baseurl`s (others in the same entry are
    /// left out).
    pub uris: Vec<String>,
    /// The entry's CloudStack yum `mirrorlist` / `metalink` URLs.
    pub mirrorlists: Vec<String>,
    /// apt suites (`noble`, or `./` for a flat repository; empty for yum).
    pub suites: Vec<String>,
    /// apt components (`4.19`, `main`; empty for yum).
    pub components: Vec<String>,
    /// Architectures from `[arch=…]` or `Architectures:` (empty when not restricted).
    pub architectures: Vec<String>,
    /// The release line it points at, `None` when it cannot be located (see [`rewrite`]).
    pub release: Option<String>,
}

/// One changed line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// 1-based line number.
    pub line: usize,
    /// The release before (`4.19`).
    pub from: String,
    /// The release after (`4.20`).
    pub to: String,
    /// The whole line before, without its line end.
    pub before: String,
    /// The whole line after, without its line end.
    pub after: String,
}

impl fmt::Display for Change {
    /// `line 3: 4.19 -> 4.20`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} -> {}", self.line, self.from, self.to)
    }
}

/// What [`rewrite`] produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rewrite {
    /// The new text (equal to the input when nothing changed).
    pub text: String,
    /// The changed lines, in order.
    pub changes: Vec<Change>,
    /// Every CloudStack entry of the input, enabled or not, as it was before the rewrite.
    pub entries: Vec<Entry>,
}

impl Rewrite {
    /// Whether nothing changed.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }

    /// CloudStack entries that are disabled: left as they were, reported so that nobody is
    /// surprised when one is enabled later.
    pub fn disabled(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.enabled)
    }
}

/// Parses `text` and lists its CloudStack entries, enabled or not. Unlike [`rewrite`], it does
/// not fail on entries whose release cannot be located (their `release` is `None`) or on
/// entries that disagree: it is for inspecting, checks turn those into findings.
///
/// # Errors
/// [`Error::Syntax`] naming the line when the text is not a well-formed file of `format`
/// (an unterminated `[options]`, a section without a name, binary data, …).
///
/// ```
/// use cs_repo::{Format, Rules, scan};
/// let text = "[cloudstack]\nbaseurl=http://download.cloudstack.org/centos/$releasever/4.19/\n";
/// let entries = scan(text, Format::Yum, &Rules::default())?;
/// assert_eq!(entries[0].release.as_deref(), Some("4.19"));
/// assert_eq!(entries[0].id.as_deref(), Some("cloudstack"));
/// # Ok::<(), cs_repo::Error>(())
/// ```
pub fn scan(text: &str, format: Format, rules: &Rules) -> Result<Vec<Entry>> {
    let doc = Document::parse(text, format)?;
    Ok(located(&doc, rules)
        .into_iter()
        .map(|(e, _, _)| e)
        .collect())
}

/// Points every enabled CloudStack entry of `text` at release line `target` (`4.20`, `24.0`),
/// changing only the release tokens and keeping every other byte: comments, options, order,
/// whitespace, disabled entries, CRLF line ends, a missing final newline.
///
/// The release token is an apt component that looks like a release line (`noble 4.19`), or a
/// path segment after the matched prefix of a CloudStack URL (`centos/$releasever/4.19/`,
/// `centos7/4.19/`, a flat `…/debian/4.19 ./`). Rewriting twice is a no-op; rewriting to
/// another line and back gives the input back. Disabled CloudStack entries are not changed;
/// they are listed in [`Rewrite::entries`] with `enabled: false`.
///
/// # Errors
/// * [`Error::InvalidTarget`] when `target` is not a release line.
/// * [`Error::Syntax`] when the text is malformed, naming the line.
/// * [`Error::NoRelease`] when an enabled CloudStack entry has no release token, or two
///   different ones, naming its line.
/// * [`Error::Ambiguous`] when enabled CloudStack entries point at different releases.
///
/// ```
/// use cs_repo::{Format, Rules, rewrite};
/// let text = "deb [arch=amd64] https://download.cloudstack.org/ubuntu noble 4.19 # CS\r\n";
/// let out = rewrite(text, Format::AptList, "4.20", &Rules::default())?;
/// assert_eq!(out.text, "deb [arch=amd64] https://download.cloudstack.org/ubuntu noble 4.20 # CS\r\n");
/// assert_eq!(out.changes[0].to_string(), "line 1: 4.19 -> 4.20");
/// # Ok::<(), cs_repo::Error>(())
/// ```
pub fn rewrite(text: &str, format: Format, target: &str, rules: &Rules) -> Result<Rewrite> {
    check_target(target)?;
    let doc = Document::parse(text, format)?;
    let found = located(&doc, rules);
    let mut tokens: Vec<&doc::Tok> = Vec::new();
    let mut first: Option<(&str, usize)> = None;
    for (entry, release, raw) in &found {
        if !entry.enabled {
            continue;
        }
        match release {
            Release::Found(toks) => {
                let rel = toks[0].text.as_str();
                // Moved to the target, the entry would be refused next time: a URL the rules
                // do not know already names the target.
                if rel != target
                    && let Some(reason) = doc::stray(raw, rules, target)
                {
                    return Err(Error::NoRelease {
                        line: entry.line,
                        reason,
                    });
                }
                match first {
                    None => first = Some((rel, entry.line)),
                    Some((f, fl)) if f != rel => {
                        return Err(Error::Ambiguous {
                            first: f.to_string(),
                            first_line: fl,
                            second: rel.to_string(),
                            second_line: entry.line,
                        });
                    }
                    Some(_) => {}
                }
                tokens.extend(toks.iter().filter(|t| t.text != target));
            }
            Release::Unknown(reason) => {
                return Err(Error::NoRelease {
                    line: entry.line,
                    reason: reason.clone(),
                });
            }
            Release::NotCloudStack => {}
        }
    }
    tokens.sort_by_key(|t| t.start);
    tokens.dedup_by_key(|t| t.start);
    let mut out = String::with_capacity(text.len() + tokens.len() * 2);
    let mut pos = 0;
    for t in &tokens {
        out.push_str(&text[pos..t.start]);
        out.push_str(target);
        pos = t.start + t.text.len();
    }
    out.push_str(&text[pos..]);

    let old_lines = &doc.lines;
    let new_lines = text::lines(&out);
    let mut changes: Vec<Change> = Vec::new();
    // The tokens are sorted by offset: walk the lines once beside them instead of counting
    // the newlines before each token again (which made a rewrite quadratic in its entries).
    let mut line_idx = 0;
    for t in &tokens {
        while line_idx + 1 < old_lines.len() && old_lines[line_idx + 1].start <= t.start {
            line_idx += 1;
        }
        let n = line_idx + 1;
        if changes.last().is_some_and(|c| c.line == n) {
            continue;
        }
        changes.push(Change {
            line: n,
            from: t.text.clone(),
            to: target.to_string(),
            before: old_lines[n - 1].text.to_string(),
            after: new_lines[n - 1].text.to_string(),
        });
    }
    Ok(Rewrite {
        text: out,
        changes,
        entries: found.into_iter().map(|(e, _, _)| e).collect(),
    })
}

/// The CloudStack entries of a document with where their release sits.
fn located<'d>(doc: &'d Document<'_>, rules: &Rules) -> Vec<(Entry, Release, &'d RawEntry)> {
    doc.entries
        .iter()
        .filter_map(|raw| {
            let release = doc::locate(raw, rules);
            if matches!(release, Release::NotCloudStack) {
                return None;
            }
            let entry = Entry {
                line: raw.line,
                enabled: raw.enabled,
                id: raw.id.clone(),
                types: raw.types.clone(),
                uris: raw
                    .uris
                    .iter()
                    .filter(|u| rules.matches(&u.text))
                    .map(|u| u.text.clone())
                    .collect(),
                mirrorlists: raw
                    .mirrorlists
                    .iter()
                    .filter(|u| rules.matches(&u.text))
                    .map(|u| u.text.clone())
                    .collect(),
                suites: raw.suites.clone(),
                components: raw.components.iter().map(|c| c.text.clone()).collect(),
                architectures: raw.arches.clone(),
                release: match &release {
                    Release::Found(t) => Some(t[0].text.clone()),
                    _ => None,
                },
            };
            Some((entry, release, raw))
        })
        .collect()
}

/// Parses and prints `text` again (for the round-trip property).
#[cfg(test)]
pub(crate) fn reprint(text: &str, format: Format) -> Result<String> {
    Ok(Document::parse(text, format)?.print())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(format: Format, input: &str, expected: &str) {
        let out = rewrite(input, format, "4.20", &Rules::default()).unwrap();
        assert_eq!(out.text, expected);
        let again = rewrite(&out.text, format, "4.20", &Rules::default()).unwrap();
        assert!(again.is_noop());
    }

    #[track_caller]
    fn fails(format: Format, input: &str, expected: &str) {
        let e = rewrite(input, format, "4.20", &Rules::default()).unwrap_err();
        assert_eq!(e.to_string(), expected);
    }

    #[test]
    fn apt_component_changes_and_nothing_else() {
        check(
            Format::AptList,
            "deb http://download.cloudstack.org/ubuntu bionic 4.19\n# deb http://download.cloudstack.org/ubuntu bionic 4.18\ndeb http://archive.ubuntu.com/ubuntu noble 4.19\n",
            "deb http://download.cloudstack.org/ubuntu bionic 4.20\n# deb http://download.cloudstack.org/ubuntu bionic 4.18\ndeb http://archive.ubuntu.com/ubuntu noble 4.19\n",
        );
    }

    #[test]
    fn yum_path_segment_changes() {
        check(
            Format::Yum,
            "[cloudstack]\nbaseurl=http://download.cloudstack.org/centos/$releasever/4.19/\nenabled=1",
            "[cloudstack]\nbaseurl=http://download.cloudstack.org/centos/$releasever/4.20/\nenabled=1",
        );
    }

    #[test]
    fn new_scheme_lines_are_release_tokens_too() {
        let out = rewrite(
            "deb https://download.cloudstack.org/ubuntu noble 4.23\n",
            Format::AptList,
            "24.0",
            &Rules::default(),
        )
        .unwrap();
        assert_eq!(
            out.text,
            "deb https://download.cloudstack.org/ubuntu noble 24.0\n"
        );
    }

    #[test]
    fn ambiguity_is_an_error_naming_the_lines() {
        fails(
            Format::AptList,
            "deb https://download.cloudstack.org/ubuntu noble 4.18\n\ndeb https://download.cloudstack.org/debian bookworm 4.19\n",
            "two different CloudStack releases in one file: 4.18 (line 1) and 4.19 (line 3)",
        );
        fails(
            Format::AptList,
            "deb https://download.cloudstack.org/ubuntu noble main\n",
            "line 1: cannot tell which CloudStack release this entry uses: no component or URL path \
             segment after the CloudStack prefix looks like a release line (4.19, 24.0)",
        );
        fails(
            Format::Yum,
            "[a]\nbaseurl=http://download.cloudstack.org/centos/4.18/4.19/\n",
            "line 1: cannot tell which CloudStack release this entry uses: it names both 4.18 and 4.19",
        );
    }

    #[test]
    fn an_unknown_url_already_at_the_target_is_refused_before_the_move() {
        // Found by the `repo_file` fuzz target: the rewrite moved the entry to 4.20 beside an
        // unknown URL naming 4.20, and the next rewrite refused the file it had written.
        let text = "[cloudstack]\nbaseurl=http://download.cloudstack.org/centos/$releasever/4.19/\n        http://fallback.example.net/centos/4.20/\n";
        fails(
            Format::Yum,
            text,
            "line 1: cannot tell which CloudStack release this entry uses: it also lists \
             http://fallback.example.net/centos/4.20/, which names 4.20 but is not a known \
             CloudStack URL; add it as a mirror or remove it",
        );
        let at_target = text.replace("4.19", "4.20");
        assert!(rewrite(&at_target, Format::Yum, "4.20", &Rules::default()).is_err());
    }

    #[test]
    fn invalid_targets_are_refused() {
        for t in ["4", "4.20.1.0", "", "latest"] {
            let e = rewrite("", Format::AptList, t, &Rules::default()).unwrap_err();
            assert!(matches!(e, Error::InvalidTarget { .. }), "{t}");
        }
    }
}
