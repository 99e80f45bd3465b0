//! The `repo.target.configured` and `repo.target.resolvable` checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use cs_core::{Check, CheckError, CsVersion, Finding, Host, HostExt, Layout, Severity};

use crate::index::{self, Fetcher};
use crate::{Entry, Format, Rules, files, rewrite, scan};

/// Id of [`TargetConfigured`].
pub const TARGET_CONFIGURED: &str = "repo.target.configured";
/// Id of [`TargetResolvable`].
pub const TARGET_RESOLVABLE: &str = "repo.target.resolvable";

/// The CloudStack entries of every repository file of a host, or a finding per file that
/// cannot be read as one.
struct Discovered {
    entries: Vec<(PathBuf, Format, Entry)>,
    broken: Vec<Finding>,
}

/// Reads the host's repository files; with `target`, entries are as they would be after
/// rewriting to it.
async fn discover(
    id: &str,
    host: &dyn Host,
    layout: &Layout,
    rules: &Rules,
    target: Option<&str>,
) -> Result<Discovered, CheckError> {
    let paths = files::discover(host, layout)
        .await
        .map_err(|e| CheckError::with_source("cannot list repository files", e))?;
    let mut out = Discovered {
        entries: Vec::new(),
        broken: Vec::new(),
    };
    for path in paths {
        let Some(format) = Format::from_path(&path) else {
            continue;
        };
        let bytes = host.read(&path).await?;
        let subject = path.display().to_string();
        let parsed = files::into_text(&path, bytes).and_then(|text| match target {
            Some(t) => rewrite(&text, format, t, rules).and_then(|r| scan(&r.text, format, rules)),
            None => scan(&text, format, rules),
        });
        match parsed {
            Ok(entries) => out
                .entries
                .extend(entries.into_iter().map(|e| (path.clone(), format, e))),
            Err(e) => out.broken.push(
                Finding::new(id, Severity::Fail, subject, cs_core::error_chain(&e))
                    .with_remedy("fix the file by hand; apt, dnf and this tool cannot read it"),
            ),
        }
    }
    Ok(out)
}

/// `repo.target.configured` (FAIL): every enabled CloudStack entry of the host points at the
/// target line, there is at least one, and no repository is defined twice (the same apt
/// repository in a `.list` and a `.sources` file, apache/cloudstack#9935).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cs_core::{Check, Host, Severity, fake::FakeHost};
/// use cs_repo::TargetConfigured;
/// let host = FakeHost::new("mgmt1").with_file(
///     "/etc/yum.repos.d/cloudstack.repo",
///     "[cloudstack]\nbaseurl=http://download.cloudstack.org/centos/$releasever/4.19/\n",
/// );
/// let findings = TargetConfigured::new("4.20").run(&host as &dyn Host).await.unwrap();
/// assert_eq!(findings[0].severity, Severity::Fail);
/// assert_eq!(findings[0].subject, "/etc/yum.repos.d/cloudstack.repo:1");
/// # });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TargetConfigured {
    /// The target release line (`4.20`, `24.0`).
    pub target: String,
    /// Where the repository files are.
    pub layout: Layout,
    /// Which URLs are CloudStack's.
    pub rules: Rules,
}

impl TargetConfigured {
    /// The check for `target` with the default layout and rules.
    pub fn new(target: impl Into<String>) -> Self {
        TargetConfigured {
            target: target.into(),
            layout: Layout::default(),
            rules: Rules::default(),
        }
    }
}

#[async_trait]
impl Check<dyn Host> for TargetConfigured {
    fn id(&self) -> &str {
        TARGET_CONFIGURED
    }

    async fn run(&self, host: &dyn Host) -> Result<Vec<Finding>, CheckError> {
        let id = TARGET_CONFIGURED;
        let target = &self.target;
        let found = discover(id, host, &self.layout, &self.rules, None).await?;
        let mut out = found.broken;
        let enabled: Vec<_> = found.entries.iter().filter(|(_, _, e)| e.enabled).collect();
        let remedy = format!("run `rewrite-repo --to {target}` (or rewrite the entry by hand)");
        for (path, _, e) in &enabled {
            let subject = format!("{}:{}", path.display(), e.line);
            match &e.release {
                Some(r) if r == target => {}
                Some(r) => out.push(
                    Finding::new(
                        id,
                        Severity::Fail,
                        subject,
                        format!("CloudStack repository points at {r}, not at {target}"),
                    )
                    .with_remedy(remedy.clone()),
                ),
                None => out.push(
                    Finding::new(
                        id,
                        Severity::Fail,
                        subject,
                        "CloudStack repository entry whose release cannot be located",
                    )
                    .with_remedy(
                        "give the entry its release as an apt component or a path segment",
                    ),
                ),
            }
        }
        if enabled.is_empty() && out.is_empty() {
            out.push(
                Finding::new(
                    id,
                    Severity::Fail,
                    host.name(),
                    "no enabled CloudStack repository is configured",
                )
                .with_remedy(format!(
                    "add the CloudStack {target} repository (e.g. deb https://{}/ubuntu <codename> {target})",
                    crate::OFFICIAL_HOST
                )),
            );
        }
        out.extend(duplicates(id, &enabled));
        if out.is_empty() {
            let files: BTreeSet<_> = enabled.iter().map(|(p, _, _)| p).collect();
            out.push(Finding::pass(
                id,
                host.name(),
                format!(
                    "{} CloudStack repository entr{} in {} file{} point{} at {target}",
                    enabled.len(),
                    if enabled.len() == 1 { "y" } else { "ies" },
                    files.len(),
                    if files.len() == 1 { "" } else { "s" },
                    if enabled.len() == 1 { "s" } else { "" },
                ),
            ));
        }
        Ok(out)
    }
}

/// Apt repositories (type, URI, suite, component) defined more than once: FAIL across a `.list`
/// and a `.sources` file, WARN otherwise.
fn duplicates(id: &str, enabled: &[&(PathBuf, Format, Entry)]) -> Vec<Finding> {
    type Key = (String, String, String, String);
    let mut seen: BTreeMap<Key, Vec<(&PathBuf, Format, usize)>> = BTreeMap::new();
    for (path, format, e) in enabled {
        if *format == Format::Yum {
            continue;
        }
        let comps: Vec<&str> = if e.components.is_empty() {
            vec![""]
        } else {
            e.components.iter().map(String::as_str).collect()
        };
        for t in &e.types {
            for u in &e.uris {
                for s in &e.suites {
                    for c in &comps {
                        let key = (
                            t.clone(),
                            u.trim_end_matches('/').to_ascii_lowercase(),
                            s.clone(),
                            (*c).to_string(),
                        );
                        let places = seen.entry(key).or_default();
                        if !places.iter().any(|(p, _, l)| *p == path && *l == e.line) {
                            places.push((path, *format, e.line));
                        }
                    }
                }
            }
        }
    }
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut out = Vec::new();
    for ((ty, uri, suite, comp), places) in seen {
        if places.len() < 2 {
            continue;
        }
        let where_: Vec<String> = places
            .iter()
            .map(|(p, _, l)| format!("{}:{l}", p.display()))
            .collect();
        if !reported.insert(where_.clone()) {
            continue;
        }
        let formats: BTreeSet<Format> = places.iter().map(|(_, f, _)| *f).collect();
        let both = formats.len() > 1;
        let what = format!("{ty} {uri} {suite} {comp}");
        out.push(
            Finding::new(
                id,
                if both { Severity::Fail } else { Severity::Warn },
                where_.join(", "),
                format!(
                    "the repository `{}` is defined {}",
                    what.trim_end(),
                    if both {
                        "in both a .list and a .sources file"
                    } else {
                        "more than once"
                    }
                ),
            )
            .with_remedy("keep one definition and remove the other (apache/cloudstack#9935)"),
        );
    }
    out
}

/// `repo.target.resolvable` (FAIL): the target repository's index, fetched over HTTP(S),
/// offers the target version of `cloudstack-management` and `cloudstack-agent` (or of the
/// packages listed in [`TargetResolvable::packages`]).
///
/// The host's enabled CloudStack entries are taken as they will be after rewriting to the
/// target's line, so the check answers before the rewrite as well as after. For apt it reads
/// `dists/<suite>/<component>/binary-<arch>/Packages[.xz|.gz]` (or a flat repository's
/// `Packages`); for yum `repodata/repomd.xml` and the primary metadata it names. Each
/// repository URL gets a finding naming it; an unreachable URL is a `Fail` after
/// [`TargetResolvable::timeout`]. The index is fetched from where the check runs, not from the
/// host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TargetResolvable {
    /// The version the upgrade installs (`4.20.1.0`).
    pub target: CsVersion,
    /// Packages that must be offered at exactly that version.
    pub packages: Vec<String>,
    /// Where the repository files are.
    pub layout: Layout,
    /// Which URLs are CloudStack's.
    pub rules: Rules,
    /// The apt architecture when an entry names none (`amd64`).
    pub apt_arch: String,
    /// yum variables (`releasever`, `basearch`); `releasever` defaults to the major of
    /// `VERSION_ID` in the host's os-release, `basearch` to `x86_64`.
    pub vars: BTreeMap<String, String>,
    /// Limit for each HTTP request, connecting included.
    pub timeout: Duration,
}

impl TargetResolvable {
    /// The check for `target` with the default layout and rules, both packages, `amd64`, and a
    /// 30 s timeout.
    pub fn new(target: CsVersion) -> Self {
        TargetResolvable {
            target,
            packages: vec!["cloudstack-management".into(), "cloudstack-agent".into()],
            layout: Layout::default(),
            rules: Rules::default(),
            apt_arch: "amd64".into(),
            vars: BTreeMap::new(),
            timeout: Duration::from_secs(30),
        }
    }

    async fn vars(&self, host: &dyn Host) -> BTreeMap<String, String> {
        let mut vars = self.vars.clone();
        if !vars.contains_key("releasever")
            && let Ok(Some(text)) = host.read_opt(&self.layout.os_release).await
        {
            let text = String::from_utf8_lossy(&text);
            if let Some(v) = text.lines().find_map(|l| l.strip_prefix("VERSION_ID=")) {
                let v = v.trim().trim_matches(['"', '\'']);
                let major = v.split('.').next().unwrap_or(v);
                if !major.is_empty() {
                    vars.insert("releasever".into(), major.to_string());
                }
            }
        }
        vars.entry("basearch".into())
            .or_insert_with(|| "x86_64".into());
        vars
    }
}

/// One index to fetch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Apt {
        uri: String,
        suite: String,
        component: Option<String>,
        arch: String,
    },
    Yum {
        baseurl: String,
    },
}

impl Source {
    fn subject(&self) -> String {
        match self {
            Source::Apt {
                uri,
                suite,
                component,
                ..
            } => index::redact(&format!(
                "{uri} {suite}{}",
                component
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default()
            )),
            Source::Yum { baseurl } => index::redact(baseurl),
        }
    }
}

pub(crate) fn expand(url: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = url.to_string();
    for (k, v) in vars {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    match out.find('$') {
        Some(i) => {
            let name: String = out[i..]
                .chars()
                .take_while(|c| *c == '$' || *c == '{' || c.is_ascii_alphanumeric())
                .collect();
            Err(format!("cannot resolve `{name}` in {url}"))
        }
        None => Ok(out),
    }
}

#[async_trait]
impl Check<dyn Host> for TargetResolvable {
    fn id(&self) -> &str {
        TARGET_RESOLVABLE
    }

    async fn run(&self, host: &dyn Host) -> Result<Vec<Finding>, CheckError> {
        let id = TARGET_RESOLVABLE;
        let line = self.target.line();
        let found = discover(id, host, &self.layout, &self.rules, Some(&line)).await?;
        let mut out = found.broken;
        let vars = self.vars(host).await;
        let mut sources = BTreeSet::new();
        for (_, format, e) in found.entries.iter().filter(|(_, _, e)| e.enabled) {
            if *format == Format::Yum {
                for m in &e.mirrorlists {
                    out.push(
                        Finding::new(
                            id,
                            Severity::Warn,
                            index::redact(m),
                            "mirror lists are not followed; the repositories they name were not checked",
                        )
                        .with_remedy(format!(
                            "check by hand that the mirrors offer {}",
                            self.target
                        )),
                    );
                }
                for u in &e.uris {
                    match expand(u, &vars) {
                        Ok(baseurl) => {
                            sources.insert(Source::Yum { baseurl });
                        }
                        Err(msg) => out.push(
                            Finding::new(id, Severity::Fail, index::redact(u), msg).with_remedy(
                                "set the variable in the check's `vars` or in the repo file",
                            ),
                        ),
                    }
                }
                continue;
            }
            if !e.types.iter().any(|t| t == "deb") {
                continue;
            }
            let arches = if e.architectures.is_empty() {
                vec![self.apt_arch.clone()]
            } else {
                e.architectures.clone()
            };
            for uri in &e.uris {
                for suite in &e.suites {
                    let comps: Vec<Option<String>> = if suite.ends_with('/') {
                        vec![None]
                    } else {
                        e.components.iter().cloned().map(Some).collect()
                    };
                    for component in comps {
                        for arch in &arches {
                            sources.insert(Source::Apt {
                                uri: uri.clone(),
                                suite: suite.clone(),
                                component: component.clone(),
                                arch: arch.clone(),
                            });
                        }
                    }
                }
            }
        }
        if sources.is_empty() && out.is_empty() {
            out.push(
                Finding::new(
                    id,
                    Severity::Fail,
                    host.name(),
                    format!(
                        "no enabled CloudStack repository to fetch {} from",
                        self.target
                    ),
                )
                .with_remedy(format!("configure the CloudStack {line} repository first")),
            );
            return Ok(out);
        }
        let fetcher = Fetcher::new(self.timeout)
            .map_err(|e| CheckError::with_source("cannot build an HTTP client", e))?;
        for source in sources {
            out.push(self.probe(&fetcher, &source).await);
        }
        Ok(out)
    }
}

impl TargetResolvable {
    async fn probe(&self, fetcher: &Fetcher, source: &Source) -> Finding {
        let id = TARGET_RESOLVABLE;
        let subject = source.subject();
        let fetched = match source {
            Source::Apt {
                uri,
                suite,
                component,
                arch,
            } => fetcher.apt(uri, suite, component.as_deref(), arch).await,
            Source::Yum { baseurl } => fetcher.yum(baseurl).await,
        };
        let (url, offered) = match fetched {
            Ok(v) => v,
            Err(e) => {
                return Finding::new(id, Severity::Fail, subject, cs_core::error_chain(&e))
                    .with_remedy(
                        "check the URL, DNS, proxy and firewall, and that the release is \
                         published there",
                    );
            }
        };
        let url = index::redact(&url);
        let mut missing = Vec::new();
        for p in &self.packages {
            let versions = offered.get(p).map(Vec::as_slice).unwrap_or_default();
            if !versions
                .iter()
                .any(|v| index::upstream(v).is_some_and(|v| v == self.target))
            {
                let have = if versions.is_empty() {
                    "none".to_string()
                } else {
                    versions.join(", ")
                };
                missing.push(format!("{p} {} (offers: {have})", self.target));
            }
        }
        if missing.is_empty() {
            Finding::pass(
                id,
                subject,
                format!("{url} offers {} {}", self.packages.join(", "), self.target),
            )
        } else {
            Finding::new(
                id,
                Severity::Fail,
                subject.clone(),
                format!("{url} does not offer {}", missing.join("; ")),
            )
            .with_remedy(format!(
                "wait for {} to be published at {subject}, or point the repository at a mirror \
                 that has it",
                self.target
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_or_name_what_is_missing() {
        let vars: BTreeMap<String, String> = [("releasever", "8"), ("basearch", "x86_64")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            expand("http://h/centos/$releasever/4.20/${basearch}/", &vars).unwrap(),
            "http://h/centos/8/4.20/x86_64/"
        );
        assert_eq!(
            expand("http://h/$contentdir/4.20/", &vars).unwrap_err(),
            "cannot resolve `$contentdir` in http://h/$contentdir/4.20/"
        );
    }
}
