//! The parsed form shared by the three formats: the file's physical lines (printing them gives
//! the input back byte for byte) and its entries, whose URLs and components remember where they
//! sit in the text so a rewrite can replace exactly those bytes.

use crate::rules::{self, Rules};
use crate::text::{self, Line};
use crate::{Format, Result, apt, deb822, yum};

/// A word of the text and its absolute byte offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tok {
    pub(crate) start: usize,
    pub(crate) text: String,
}

/// One repository entry as the parsers see it (CloudStack or not).
#[derive(Debug, Clone, Default)]
pub(crate) struct RawEntry {
    /// 1-based first line.
    pub(crate) line: usize,
    pub(crate) enabled: bool,
    /// yum section id.
    pub(crate) id: Option<String>,
    /// `deb`, `deb-src` (empty for yum).
    pub(crate) types: Vec<String>,
    pub(crate) uris: Vec<Tok>,
    /// yum `mirrorlist` / `metalink` URLs.
    pub(crate) mirrorlists: Vec<Tok>,
    pub(crate) suites: Vec<String>,
    pub(crate) components: Vec<Tok>,
    pub(crate) arches: Vec<String>,
}

/// A parsed file.
#[derive(Debug)]
pub(crate) struct Document<'a> {
    pub(crate) lines: Vec<Line<'a>>,
    pub(crate) entries: Vec<RawEntry>,
}

impl<'a> Document<'a> {
    /// Parses `text` as `format`.
    pub(crate) fn parse(text: &'a str, format: Format) -> Result<Self> {
        let lines = text::lines(text);
        text::refuse_binary(&lines)?;
        let entries = match format {
            Format::AptList => apt::parse(&lines)?,
            Format::Deb822 => deb822::parse(&lines)?,
            Format::Yum => yum::parse(&lines)?,
        };
        Ok(Document { lines, entries })
    }

    /// The text again, byte for byte.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn print(&self) -> String {
        text::print(&self.lines)
    }
}

/// Where an entry's CloudStack release sits, if it is a CloudStack entry.
#[derive(Debug)]
pub(crate) enum Release {
    /// No URL of the entry is CloudStack's.
    NotCloudStack,
    /// The tokens that hold the release (all equal).
    Found(Vec<Tok>),
    /// A CloudStack entry whose release cannot be located; the reason.
    Unknown(String),
}

/// Locates the release of one entry: line-like components, and line-like path segments after
/// the matched prefix of each CloudStack URL. All must agree.
pub(crate) fn locate(entry: &RawEntry, rules: &Rules) -> Release {
    let mut tokens: Vec<Tok> = Vec::new();
    let mut any = false;
    for uri in entry.uris.iter().chain(&entry.mirrorlists) {
        if let Some(segs) = rules.release_segments(&uri.text) {
            any = true;
            tokens.extend(segs.into_iter().map(|(off, s)| Tok {
                start: uri.start + off,
                text: s.to_string(),
            }));
        }
    }
    if !any {
        return Release::NotCloudStack;
    }
    tokens.extend(
        entry
            .components
            .iter()
            .filter(|c| rules::is_line(&c.text))
            .cloned(),
    );
    tokens.sort_by_key(|t| t.start);
    tokens.dedup_by_key(|t| t.start);
    let Some(first) = tokens.first() else {
        return Release::Unknown(
            "no component or URL path segment after the CloudStack prefix looks like a release \
             line (4.19, 24.0)"
                .into(),
        );
    };
    if let Some(other) = tokens.iter().find(|t| t.text != first.text) {
        return Release::Unknown(format!("it names both {} and {}", first.text, other.text));
    }
    // A URL the rules do not know, in the same entry and naming the same release, would be
    // left behind at the old release: refuse rather than rewrite half an entry.
    if let Some(why) = stray(entry, rules, &first.text) {
        return Release::Unknown(why);
    }
    Release::Found(tokens)
}

/// Why an entry cannot be at (or be moved to) `release`: a URL of it that the rules do not
/// know names that release, and would be left behind by a rewrite (or hold one back).
pub(crate) fn stray(entry: &RawEntry, rules: &Rules, release: &str) -> Option<String> {
    let stray = entry.uris.iter().chain(&entry.mirrorlists).find(|u| {
        rules.match_len(&u.text).is_none()
            && u.text
                .split(['/', '?', '#', '&', '='])
                .any(|seg| seg == release)
    })?;
    Some(format!(
        "it also lists {}, which names {release} but is not a known CloudStack URL; add it as a \
         mirror or remove it",
        stray.text
    ))
}
