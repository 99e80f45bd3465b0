//! Where the configured repository keeps a package at a version, and downloading it checked
//! against the index: apt `Packages` (`Filename`, `Size`, `SHA256`) and yum primary metadata
//! (`location href`, `size package`, `checksum type="sha256"`).

use std::collections::BTreeMap;
use std::time::Duration;

use cs_core::CsVersion;
use sha2::{Digest, Sha256};

use crate::check::expand;
use crate::index::{self, Fetcher, join, redact};
use crate::{Error, Format, Result, Rules};

/// A package found in a repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageLocation {
    /// The package name.
    pub package: String,
    /// The version as the index writes it (`4.19.0.0`, `4.19.0.0-1`).
    pub version: String,
    /// Where to download it (may carry credentials: show [`PackageLocation::shown_url`]).
    pub url: String,
    /// Its size in bytes, as the index says.
    pub size: u64,
    /// Its SHA-256 (lower-case hex), as the index says.
    pub sha256: String,
    /// The index it was found in.
    pub index_url: String,
}

impl PackageLocation {
    /// The download URL with any `user:password@` masked, for messages and reports.
    pub fn shown_url(&self) -> String {
        redact(&self.url)
    }
}

/// How to look for a package.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LocateOptions {
    /// Which URLs are CloudStack's.
    pub rules: Rules,
    /// The apt architecture when an entry names none.
    pub apt_arch: String,
    /// yum variables (`releasever`, `basearch`).
    pub vars: BTreeMap<String, String>,
    /// Limit for each index request.
    pub timeout: Duration,
}

cs_core::setters!(LocateOptions {
    rules: Rules,
    apt_arch: String,
    vars: BTreeMap<String, String>,
    timeout: Duration,
});

impl Default for LocateOptions {
    fn default() -> Self {
        LocateOptions {
            rules: Rules::default(),
            apt_arch: "amd64".into(),
            vars: BTreeMap::from([
                ("releasever".to_string(), "8".to_string()),
                ("basearch".to_string(), "x86_64".to_string()),
            ]),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Finds `package` at `target` in the enabled CloudStack entries of a repository file's text
/// (`format` as [`crate::scan`] reads it), by reading each entry's index. Entries are first
/// pointed at `target`'s release line as [`crate::rewrite`] would (a rehearsal runs before
/// the repositories are switched).
///
/// # Errors
/// What [`crate::scan`] returns for the text; [`Error::Fetch`] when an index cannot be read;
/// [`Error::PackageNotOffered`] when no index lists the package at that version with a size
/// and SHA-256.
pub async fn locate_package(
    repo_text: &str,
    format: Format,
    target: &CsVersion,
    package: &str,
    options: &LocateOptions,
) -> Result<PackageLocation> {
    let switched = crate::rewrite(repo_text, format, &target.line(), &options.rules)?;
    let entries = crate::scan(&switched.text, format, &options.rules)?;
    let fetcher = Fetcher::new(options.timeout)?;
    let mut looked = Vec::new();
    for e in entries.iter().filter(|e| e.enabled) {
        if format == Format::Yum {
            for u in &e.uris {
                let baseurl = expand(u, &options.vars).map_err(|m| Error::Fetch {
                    url: redact(u),
                    source: m.into(),
                })?;
                let (url, text) = yum_primary(&fetcher, &baseurl).await?;
                looked.push(redact(&url));
                if let Some(found) = find_rpm(&text, package, target, &baseurl, &url) {
                    return Ok(found);
                }
            }
            continue;
        }
        if !e.types.iter().any(|t| t == "deb") {
            continue;
        }
        let arches = if e.architectures.is_empty() {
            vec![options.apt_arch.clone()]
        } else {
            e.architectures.clone()
        };
        for uri in &e.uris {
            for suite in &e.suites {
                let flat = suite.ends_with('/');
                let comps: Vec<Option<&str>> = if flat {
                    vec![None]
                } else {
                    e.components.iter().map(|c| Some(c.as_str())).collect()
                };
                for comp in comps {
                    for arch in &arches {
                        let (url, text) = fetcher.apt_index(uri, suite, comp, arch).await?;
                        looked.push(redact(&url));
                        // `Filename:` is relative to the archive root: the URI, or for a flat
                        // repository the directory it names.
                        let root = if flat { join(uri, suite) } else { uri.clone() };
                        if let Some(found) = find_deb(&text, package, target, &root, &url) {
                            return Ok(found);
                        }
                    }
                }
            }
        }
    }
    Err(Error::PackageNotOffered {
        package: package.to_string(),
        version: target.to_string(),
        looked: if looked.is_empty() {
            "no enabled CloudStack entry".into()
        } else {
            looked.join(", ")
        },
    })
}

async fn yum_primary(f: &Fetcher, baseurl: &str) -> Result<(String, String)> {
    let repomd_url = join(baseurl, "repodata/repomd.xml");
    let bad = |url: &str, what: String| Error::Fetch {
        url: redact(url),
        source: what.into(),
    };
    let repomd = f.get(&repomd_url).await?.ok_or_else(|| {
        bad(
            &repomd_url,
            "no repository metadata there (HTTP 404)".into(),
        )
    })?;
    let repomd = String::from_utf8(repomd)
        .map_err(|_| bad(&repomd_url, "repomd.xml is not UTF-8".into()))?;
    let href = index::primary_href(&repomd).map_err(|e| bad(&repomd_url, e))?;
    let url = join(baseurl, &href);
    let body = f.get(&url).await?.ok_or_else(|| {
        bad(
            &url,
            "primary metadata named by repomd.xml is missing".into(),
        )
    })?;
    Ok((url.clone(), index::decompress(&url, body)?))
}

/// The stanza of `package` at `target` in an apt `Packages` text.
fn find_deb(
    text: &str,
    package: &str,
    target: &CsVersion,
    root: &str,
    index_url: &str,
) -> Option<PackageLocation> {
    for stanza in text.split("\n\n") {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if fields.get("package").map(String::as_str) != Some(package) {
            continue;
        }
        let Some(version) = fields.get("version") else {
            continue;
        };
        if index::upstream(version).as_ref() != Some(target) {
            continue;
        }
        let (Some(file), Some(size), Some(sum)) = (
            fields.get("filename"),
            fields.get("size").and_then(|s| s.parse().ok()),
            fields.get("sha256"),
        ) else {
            continue;
        };
        return Some(PackageLocation {
            package: package.to_string(),
            version: version.clone(),
            url: join(root, file),
            size,
            sha256: sum.to_ascii_lowercase(),
            index_url: redact(index_url),
        });
    }
    None
}

/// The `<package>` of `package` at `target` in yum primary metadata.
fn find_rpm(
    xml: &str,
    package: &str,
    target: &CsVersion,
    baseurl: &str,
    index_url: &str,
) -> Option<PackageLocation> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    #[derive(Default)]
    struct P {
        name: Option<String>,
        ver: Option<String>,
        href: Option<String>,
        size: Option<u64>,
        sum: Option<String>,
    }
    let mut cur: Option<P> = None;
    let mut text_for: Option<&'static str> = None;
    let mut sha_checksum = false;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"package" => cur = Some(P::default()),
                b"name" if cur.as_ref().is_some_and(|p| p.name.is_none()) => {
                    text_for = Some("name")
                }
                b"checksum" if cur.is_some() => {
                    sha_checksum = index::attr(&e, "type").as_deref() == Some("sha256");
                    text_for = Some("checksum");
                }
                _ => {}
            },
            Ok(Event::Empty(e)) => {
                if let Some(p) = cur.as_mut() {
                    match e.local_name().as_ref() {
                        b"version" if p.ver.is_none() => p.ver = index::attr(&e, "ver"),
                        b"location" => p.href = index::attr(&e, "href"),
                        b"size" => p.size = index::attr(&e, "package").and_then(|s| s.parse().ok()),
                        _ => {}
                    }
                }
            }
            Ok(Event::Text(t)) => {
                if let (Some(which), Some(p)) = (text_for, cur.as_mut()) {
                    let v = t.decode().ok().map(|s| s.trim().to_string());
                    match which {
                        "name" => p.name = v,
                        _ if sha_checksum => p.sum = v,
                        _ => {}
                    }
                }
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"name" | b"checksum" => text_for = None,
                b"package" => {
                    if let Some(p) = cur.take()
                        && p.name.as_deref() == Some(package)
                        && p.ver.as_deref().and_then(index::upstream).as_ref() == Some(target)
                        && let (Some(href), Some(size), Some(sum)) = (p.href, p.size, p.sum)
                    {
                        return Some(PackageLocation {
                            package: package.to_string(),
                            version: p.ver.unwrap_or_default(),
                            url: join(baseurl, &href),
                            size,
                            sha256: sum.to_ascii_lowercase(),
                            index_url: redact(index_url),
                        });
                    }
                }
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Downloads a located package, at most `max_bytes` and within `timeout`, and checks its size
/// and SHA-256 against the index.
///
/// # Errors
/// [`Error::Fetch`] when it cannot be downloaded (or is bigger than `max_bytes`);
/// [`Error::Integrity`] when its size or SHA-256 differs from the index's.
pub async fn download_package(
    loc: &PackageLocation,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let fail = |source: cs_core::BoxError| Error::Fetch {
        url: redact(&loc.url),
        source,
    };
    if loc.size > max_bytes {
        return Err(fail(
            format!("the index says {} bytes, more than {max_bytes}", loc.size).into(),
        ));
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| fail(Box::new(e)))?;
    let mut resp = client
        .get(&loc.url)
        .send()
        .await
        .map_err(|e| fail(Box::new(e.without_url())))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status()).into()));
    }
    let mut body = Vec::new();
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| fail(Box::new(e.without_url())))?
    {
        if (body.len() + chunk.len()) as u64 > loc.size.min(max_bytes) {
            return Err(Error::Integrity {
                url: redact(&loc.url),
                detail: format!("longer than the {} bytes the index gives", loc.size),
            });
        }
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    if body.len() as u64 != loc.size {
        return Err(Error::Integrity {
            url: redact(&loc.url),
            detail: format!("{} bytes, the index gives {}", body.len(), loc.size),
        });
    }
    let sum = hex_lower(&hasher.finalize());
    if sum != loc.sha256 {
        return Err(Error::Integrity {
            url: redact(&loc.url),
            detail: format!("SHA-256 {sum}, the index gives {}", loc.sha256),
        });
    }
    Ok(body)
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
