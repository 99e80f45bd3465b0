//! Which URLs are CloudStack repositories, and where their release token sits.

use crate::{Error, Result};

/// The host of the official CloudStack package trees.
pub const OFFICIAL_HOST: &str = "download.cloudstack.org";

/// The official trees on [`OFFICIAL_HOST`]; each may carry a numeric suffix (`centos7`).
const OFFICIAL_TREES: &[&str] = &["ubuntu", "debian", "centos", "rhel", "suse", "el"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `download.cloudstack.org/<tree>` for the trees in [`OFFICIAL_TREES`].
    Official,
    /// A host and leading path segments, as a mirror prefix.
    Prefix { host: String, segments: Vec<String> },
}

/// Which repository URLs are CloudStack's: the official `download.cloudstack.org` trees
/// (`ubuntu`, `debian`, `centos`, `rhel`, `suse`, and `el`; a tree name may carry a numeric
/// suffix such as `centos7`) by default, plus mirror prefixes the caller adds.
///
/// A URL matches a prefix when its host is the prefix's host (case-insensitive, user info
/// ignored, port significant) and its path starts with the prefix's path segments. The scheme
/// is ignored, so `http` and `https` URLs of one mirror both match. Entries are never recognised
/// by file name. The release token is looked for only *after* the matched prefix.
///
/// ```
/// use cs_repo::Rules;
/// let rules = Rules::default().with_mirror("https://mirror.local/cloudstack/upstream")?;
/// assert!(rules.matches("http://download.cloudstack.org/centos/$releasever/4.19/"));
/// assert!(rules.matches("https://mirror.local/cloudstack/upstream/debian/4.19"));
/// assert!(!rules.matches("http://archive.ubuntu.com/ubuntu"));
/// # Ok::<(), cs_repo::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    patterns: Vec<Pattern>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::official()
    }
}

impl Rules {
    /// The official `download.cloudstack.org` trees only (the default).
    pub fn official() -> Self {
        Rules {
            patterns: vec![Pattern::Official],
        }
    }

    /// No pattern at all (add mirrors with [`Rules::with_mirror`]).
    pub fn none() -> Self {
        Rules {
            patterns: Vec::new(),
        }
    }

    /// Adds a mirror prefix such as `https://packages.example.com/cloudstack/upstream` (the
    /// scheme is optional and ignored; `file:///srv/cloudstack` names a local tree).
    ///
    /// # Errors
    /// [`Error::InvalidPattern`] when the prefix names neither a host nor a path.
    pub fn with_mirror(mut self, prefix: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidPattern {
            pattern: prefix.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = prefix.trim();
        if trimmed.chars().any(char::is_whitespace) {
            return Err(bad("contains whitespace"));
        }
        let (has_scheme, rest) = match trimmed.find("://") {
            Some(i) => (true, &trimmed[i + 3..]),
            None => (false, trimmed),
        };
        let (host, path) = split_authority(rest);
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if host.is_empty() && (!has_scheme || segments.is_empty()) {
            return Err(bad("expected host/path or file:///path"));
        }
        self.patterns.push(Pattern::Prefix {
            host: host.to_ascii_lowercase(),
            segments,
        });
        Ok(self)
    }

    /// Whether `url` is a CloudStack repository URL under these rules.
    pub fn matches(&self, url: &str) -> bool {
        self.match_len(url).is_some()
    }

    /// The byte length of the matched prefix in `url` (the release is looked for after it).
    pub(crate) fn match_len(&self, url: &str) -> Option<usize> {
        let scheme_end = url.find("://")? + 3;
        let rest = &url[scheme_end..];
        let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
        let (host, path) = split_authority(rest);
        let path_start = scheme_end + (rest.len() - path.len());
        let segs = segments(path);
        self.patterns
            .iter()
            .filter_map(|p| match p {
                Pattern::Official => {
                    let (off, first) = segs.first()?;
                    let tree = first.trim_end_matches(|c: char| c.is_ascii_digit());
                    (host.eq_ignore_ascii_case(OFFICIAL_HOST) && OFFICIAL_TREES.contains(&tree))
                        .then(|| path_start + off + first.len())
                }
                Pattern::Prefix {
                    host: ph,
                    segments: ps,
                } => {
                    if !host.eq_ignore_ascii_case(ph) || segs.len() < ps.len() {
                        return None;
                    }
                    if segs.iter().zip(ps).any(|((_, s), p)| s != p) {
                        return None;
                    }
                    Some(match ps.len() {
                        0 => path_start,
                        n => {
                            let (off, s) = segs[n - 1];
                            path_start + off + s.len()
                        }
                    })
                }
            })
            .max()
    }

    /// Release tokens in a CloudStack URL: line-like path segments after the matched prefix,
    /// as (byte offset in `url`, token). `None` when the URL is not CloudStack's.
    pub(crate) fn release_segments<'a>(&self, url: &'a str) -> Option<Vec<(usize, &'a str)>> {
        let start = self.match_len(url)?;
        let rest = &url[start..];
        let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
        Some(
            segments(rest)
                .into_iter()
                .filter(|(_, s)| is_line(s))
                .map(|(off, s)| (start + off, s))
                .collect(),
        )
    }
}

/// Splits `host[:port]/path` (user info dropped from the host) into host and path (with its
/// leading `/`).
fn split_authority(rest: &str) -> (&str, &str) {
    let slash = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..slash];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    (host, &rest[slash..])
}

/// Non-empty `/`-separated segments with their byte offsets.
fn segments(path: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut off = 0;
    for s in path.split('/') {
        if !s.is_empty() {
            out.push((off, s));
        }
        off += s.len() + 1;
    }
    out
}

/// Whether `s` looks like a release line: `4.19`, `24.0` (one to three digits, a dot, one to
/// three digits). Never tied to a major version.
pub(crate) fn is_line(s: &str) -> bool {
    let Some((a, b)) = s.split_once('.') else {
        return false;
    };
    let num = |x: &str| (1..=3).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
    num(a) && num(b)
}

/// Validates a target release line.
pub(crate) fn check_target(target: &str) -> Result<()> {
    if is_line(target) {
        Ok(())
    } else {
        Err(Error::InvalidTarget {
            target: target.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn tokens(rules: &Rules, url: &str) -> Option<Vec<String>> {
        rules.release_segments(url).map(|v| {
            v.into_iter()
                .map(|(o, s)| {
                    assert_eq!(&url[o..o + s.len()], s);
                    s.to_string()
                })
                .collect()
        })
    }

    #[test]
    fn official_trees_match_and_yield_the_release_segment() {
        let r = Rules::default();
        assert_eq!(
            tokens(&r, "https://download.cloudstack.org/ubuntu"),
            Some(vec![])
        );
        assert_eq!(
            tokens(
                &r,
                "http://download.cloudstack.org/centos/$releasever/4.19/"
            ),
            Some(vec!["4.19".into()])
        );
        assert_eq!(
            tokens(&r, "http://Download.CloudStack.org/centos7/4.19/"),
            Some(vec!["4.19".into()])
        );
        assert_eq!(
            tokens(&r, "http://download.cloudstack.org/systemvm/4.19/"),
            None
        );
        assert_eq!(tokens(&r, "http://example.org/centos/8/4.19/"), None);
        assert_eq!(tokens(&r, "cdrom:[Ubuntu 22.04]/"), None);
    }

    #[test]
    fn mirror_prefixes_match_on_segment_boundaries() {
        let r = Rules::none()
            .with_mirror("https://u:p@mirror.local:8080/cloudstack/upstream/")
            .unwrap();
        assert!(r.matches("http://mirror.local:8080/cloudstack/upstream/debian/4.19"));
        assert!(!r.matches("http://mirror.local:8080/cloudstack/upstreamx/debian/4.19"));
        assert!(!r.matches("http://mirror.local/cloudstack/upstream/debian/4.19"));
        assert_eq!(
            tokens(
                &r,
                "http://mirror.local:8080/cloudstack/upstream/debian/4.19?x=4.18"
            ),
            Some(vec!["4.19".into()])
        );
        let f = Rules::none().with_mirror("file:///srv/cs").unwrap();
        assert!(f.matches("file:///srv/cs/4.19"));
    }

    #[test]
    fn patterns_without_host_or_path_are_refused() {
        assert!(Rules::none().with_mirror("").is_err());
        assert!(Rules::none().with_mirror("/just/a/path").is_err());
        assert!(Rules::none().with_mirror("file://").is_err());
        assert!(Rules::none().with_mirror("a b").is_err());
    }

    #[test]
    fn release_lines_are_not_tied_to_major_4() {
        for ok in ["4.19", "24.0", "4.9", "25.10"] {
            assert!(is_line(ok), "{ok}");
        }
        for bad in ["4", "4.19.1", "4.19.1.0", "main", "v4.19", "4.", ".19", "8"] {
            assert!(!is_line(bad), "{bad}");
        }
    }
}
