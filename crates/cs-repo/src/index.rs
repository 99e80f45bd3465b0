//! Fetching a repository's package index over HTTP(S) and reading which versions it offers:
//! apt `Packages[.xz|.gz]` (pooled or flat) and yum `repodata/repomd.xml` + primary metadata.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use cs_core::{BoxError, CsVersion};

use crate::{Error, Result};

/// The largest index (compressed or not) read, so a wrong URL cannot fill memory.
const MAX_INDEX_BYTES: u64 = 512 * 1024 * 1024;

/// Package name → versions offered.
pub(crate) type Offered = BTreeMap<String, Vec<String>>;

/// An HTTP client with timeouts.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    pub(crate) fn new(timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("cs-repo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Fetch {
                url: "-".into(),
                source: Box::new(e),
            })?;
        Ok(Fetcher { client })
    }

    /// The body at `url`, or `None` for 404 / 410.
    pub(crate) async fn get(&self, url: &str) -> Result<Option<Vec<u8>>> {
        let fail = |source: BoxError| Error::Fetch {
            url: redact(url),
            source,
        };
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(Box::new(e.without_url())))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}").into()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_INDEX_BYTES) {
            return Err(fail("index larger than 512 MiB".into()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| fail(Box::new(e.without_url())))?;
        Ok(Some(body.to_vec()))
    }

    /// Versions offered by an apt repository (the index [`Fetcher::apt_index`] finds). Returns
    /// the index URL used.
    pub(crate) async fn apt(
        &self,
        uri: &str,
        suite: &str,
        component: Option<&str>,
        arch: &str,
    ) -> Result<(String, Offered)> {
        let (url, text) = self.apt_index(uri, suite, component, arch).await?;
        Ok((url, parse_packages(&text)))
    }

    /// The `Packages` index of an apt repository, decompressed, and its URL:
    /// `<uri>/dists/<suite>/<component>/binary-<arch>/` or, for a flat repository
    /// (`component` `None`), `<uri>/<suite>`; `Packages.xz`, `Packages.gz` then `Packages`
    /// are tried.
    pub(crate) async fn apt_index(
        &self,
        uri: &str,
        suite: &str,
        component: Option<&str>,
        arch: &str,
    ) -> Result<(String, String)> {
        let dir = match component {
            Some(c) => join(uri, &format!("dists/{suite}/{c}/binary-{arch}/")),
            None => join(uri, suite),
        };
        let dir = if dir.ends_with('/') {
            dir
        } else {
            format!("{dir}/")
        };
        for name in ["Packages.xz", "Packages.gz", "Packages"] {
            let url = format!("{dir}{name}");
            if let Some(body) = self.get(&url).await? {
                let text = decompress(&url, body)?;
                return Ok((url, text));
            }
        }
        Err(Error::Fetch {
            url: redact(&dir),
            source: "no Packages, Packages.gz or Packages.xz index there (HTTP 404)".into(),
        })
    }

    /// Versions offered by a yum repository: `repodata/repomd.xml`, then the primary
    /// metadata it names. Returns the primary metadata's URL.
    pub(crate) async fn yum(&self, baseurl: &str) -> Result<(String, Offered)> {
        let repomd_url = join(baseurl, "repodata/repomd.xml");
        let Some(repomd) = self.get(&repomd_url).await? else {
            return Err(Error::Fetch {
                url: redact(&repomd_url),
                source: "no repository metadata there (HTTP 404)".into(),
            });
        };
        let bad = |url: &str, what: String| Error::Fetch {
            url: redact(url),
            source: what.into(),
        };
        let repomd = String::from_utf8(repomd)
            .map_err(|_| bad(&repomd_url, "repomd.xml is not UTF-8".into()))?;
        let href = primary_href(&repomd).map_err(|e| bad(&repomd_url, e))?;
        let url = join(baseurl, &href);
        let Some(body) = self.get(&url).await? else {
            return Err(bad(
                &url,
                "primary metadata named by repomd.xml is missing".into(),
            ));
        };
        let text = decompress(&url, body)?;
        let offered = parse_primary(&text).map_err(|e| bad(&url, e))?;
        Ok((url, offered))
    }
}

/// `base` + `/` + `rel`, without doubled slashes or `./` segments.
pub(crate) fn join(base: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    let rel = rel.replace("/./", "/");
    let rel = if rel == "." { "" } else { rel.as_str() };
    format!("{}/{rel}", base.trim_end_matches('/'))
}

/// The URL with any `user:password@` replaced by `***@`, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[i + 3..];
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..i + 3], &rest[at + 1..]),
        None => url.to_string(),
    }
}

pub(crate) fn decompress(url: &str, body: Vec<u8>) -> Result<String> {
    let fail = |what: String| Error::Fetch {
        url: redact(url),
        source: what.into(),
    };
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let mut out = Vec::new();
    let res = if path.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(&body[..])
            .take(MAX_INDEX_BYTES)
            .read_to_end(&mut out)
    } else if path.ends_with(".xz") {
        xz2::read::XzDecoder::new(&body[..])
            .take(MAX_INDEX_BYTES)
            .read_to_end(&mut out)
    } else if path.ends_with(".zst") {
        zstd::stream::read::Decoder::new(&body[..])
            .and_then(|d| d.take(MAX_INDEX_BYTES).read_to_end(&mut out))
    } else if path.ends_with(".bz2") {
        return Err(fail("bzip2-compressed metadata is not supported".into()));
    } else {
        out = body;
        Ok(0)
    };
    res.map_err(|e| fail(format!("cannot decompress: {e}")))?;
    String::from_utf8(out).map_err(|_| fail("index is not UTF-8 text".into()))
}

/// `Package:` / `Version:` pairs of an apt `Packages` index.
pub(crate) fn parse_packages(text: &str) -> Offered {
    let mut out = Offered::new();
    let mut name: Option<&str> = None;
    let mut version: Option<&str> = None;
    let mut flush = |name: &mut Option<&str>, version: &mut Option<&str>| {
        if let (Some(n), Some(v)) = (name.take(), version.take()) {
            out.entry(n.to_string()).or_default().push(v.to_string());
        }
        *name = None;
        *version = None;
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            flush(&mut name, &mut version);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("package") {
                name = Some(v.trim());
            } else if k.eq_ignore_ascii_case("version") {
                version = Some(v.trim());
            }
        }
    }
    flush(&mut name, &mut version);
    out
}

/// The `href` of the `primary` data in `repomd.xml`.
pub(crate) fn primary_href(repomd: &str) -> std::result::Result<String, String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(repomd);
    let mut in_primary = false;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) if e.local_name().as_ref() == b"data" => {
                in_primary = e
                    .try_get_attribute("type")
                    .ok()
                    .flatten()
                    .and_then(|a| a.unescape_value().ok().map(|v| v == "primary"))
                    .unwrap_or(false);
            }
            Ok(Event::End(e)) if e.local_name().as_ref() == b"data" => in_primary = false,
            Ok(Event::Start(e) | Event::Empty(e))
                if in_primary && e.local_name().as_ref() == b"location" =>
            {
                if let Some(a) = e.try_get_attribute("href").ok().flatten() {
                    return a
                        .unescape_value()
                        .map(|v| v.into_owned())
                        .map_err(|e| format!("bad href in repomd.xml: {e}"));
                }
            }
            Ok(Event::Eof) => return Err("repomd.xml names no primary metadata".into()),
            Err(e) => return Err(format!("repomd.xml is not valid XML: {e}")),
            Ok(_) => {}
        }
    }
}

/// Package names and versions (`ver`, without epoch and release) of yum primary metadata.
pub(crate) fn parse_primary(xml: &str) -> std::result::Result<Offered, String> {
    use quick_xml::events::Event;
    let mut out = Offered::new();
    let mut r = quick_xml::Reader::from_str(xml);
    let mut in_package = false;
    let mut in_name = false;
    let mut name: Option<String> = None;
    let mut version: Option<String> = None;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"package" => {
                    in_package = true;
                    name = None;
                    version = None;
                }
                b"name" if in_package && name.is_none() => in_name = true,
                b"version" if in_package && version.is_none() => version = attr(&e, "ver"),
                _ => {}
            },
            Ok(Event::Empty(e)) => {
                if in_package && version.is_none() && e.local_name().as_ref() == b"version" {
                    version = attr(&e, "ver");
                }
            }
            Ok(Event::Text(t)) if in_name => {
                name = t.decode().ok().map(|s| s.trim().to_string());
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"name" => in_name = false,
                b"package" => {
                    in_package = false;
                    if let (Some(n), Some(v)) = (name.take(), version.take()) {
                        out.entry(n).or_default().push(v);
                    }
                }
                _ => {}
            },
            Ok(Event::Eof) => return Ok(out),
            Err(e) => return Err(format!("primary metadata is not valid XML: {e}")),
            Ok(_) => {}
        }
    }
}

pub(crate) fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// The CloudStack version a package version stands for: epoch, Debian revision and suffixes
/// (`-1`, `~bpo`, `+deb12`, `-shapeblue0`) dropped. `None` when it is not a CloudStack version.
pub(crate) fn upstream(version: &str) -> Option<CsVersion> {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let v = v.split(['-', '~', '+', '_']).next().unwrap_or(v);
    CsVersion::parse(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_index_gives_every_version_of_every_package() {
        let text = "Package: cloudstack-agent\nVersion: 4.20.0.0\nDescription: x\n more\n\n\
                    Package: cloudstack-agent\nversion: 1:4.20.1.0-1\n\nPackage: only-name\n";
        let o = parse_packages(text);
        assert_eq!(o["cloudstack-agent"], ["4.20.0.0", "1:4.20.1.0-1"]);
        assert!(!o.contains_key("only-name"));
    }

    #[test]
    fn primary_metadata_gives_ver_of_each_package() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="1">
<package type="rpm"><name>cloudstack-management</name><arch>x86_64</arch>
<version epoch="0" ver="4.20.1.0" rel="1.el8"/>
<format><rpm:provides><rpm:entry name="cloudstack-management" ver="9.9"/></rpm:provides></format>
</package></metadata>"#;
        let o = parse_primary(xml).unwrap();
        assert_eq!(o["cloudstack-management"], ["4.20.1.0"]);
        let repomd = r#"<repomd><data type="filelists"><location href="repodata/f.xml.gz"/></data>
<data type="primary"><checksum type="sha256">ab</checksum><location href="repodata/p-primary.xml.gz"/></data></repomd>"#;
        assert_eq!(primary_href(repomd).unwrap(), "repodata/p-primary.xml.gz");
        assert!(primary_href("<repomd/>").is_err());
    }

    #[test]
    fn upstream_versions_drop_epoch_and_revision() {
        let v = |s| upstream(s).map(|v| v.to_string());
        assert_eq!(v("1:4.20.1.0-1").as_deref(), Some("4.20.1.0"));
        assert_eq!(v("4.19.0.0~bpo12").as_deref(), Some("4.19.0.0"));
        assert_eq!(v("24.0.1+deb12").as_deref(), Some("24.0.1"));
        assert_eq!(v("2.5"), None);
    }

    #[test]
    fn urls_join_and_hide_credentials() {
        assert_eq!(join("http://h/a/", "./"), "http://h/a/");
        assert_eq!(join("http://h/a", "dists/x/"), "http://h/a/dists/x/");
        assert_eq!(redact("https://u:p@h/x@y"), "https://***@h/x@y");
        assert_eq!(redact("https://h/x"), "https://h/x");
    }
}
