//! A small generated apt + yum package repository served over HTTP on 127.0.0.1, shaped like
//! `download.cloudstack.org`, for tests of repository checks.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cs_core::CsVersion;
use sha2::{Digest, Sha256};

use crate::packages::PackageCompression;
use crate::{LabError, Result};

/// The CloudStack packages every generated release offers.
pub const REPO_PACKAGES: &[&str] = &[
    "cloudstack-common",
    "cloudstack-management",
    "cloudstack-agent",
    "cloudstack-usage",
];

/// apt suites of the pooled tree and the one index compression each serves, so that every
/// compression gets exercised: `noble` has only `Packages.xz`, `jammy` only `Packages.gz`,
/// `focal` only a plain `Packages`.
pub const REPO_APT_SUITES: &[(&str, &str)] = &[("noble", "xz"), ("jammy", "gz"), ("focal", "")];

/// yum `$releasever` values of the generated trees.
pub const REPO_YUM_RELEASES: &[&str] = &["8", "9"];

#[derive(Debug, Default)]
struct Shared {
    files: BTreeMap<String, Vec<u8>>,
    requests: Mutex<Vec<String>>,
}

/// A package repository on `127.0.0.1:<random port>`, generated for a list of CloudStack
/// versions. Every version `X.Y.Z[.W]` is published under its line `X.Y`:
///
/// * apt, pooled: `/ubuntu/dists/<suite>/<line>/binary-amd64/Packages{.xz,.gz,}` for the suites
///   in [`REPO_APT_SUITES`] (one compression each), with a `Release` file per suite;
/// * apt, flat: `/cloudstack/upstream/debian/<line>/Packages` and `Packages.gz`;
/// * yum: `/centos/<releasever>/<line>/repodata/repomd.xml` and the `…-primary.xml.gz` it names,
///   for the releases in [`REPO_YUM_RELEASES`].
///
/// Each release offers the packages in [`REPO_PACKAGES`]. `cloudstack-management` is a real
/// package the lab builds ([`crate::packages`]: a `.deb` with `data.tar.xz` in the pooled tree,
/// one with `data.tar.zst` in the flat tree, a gzip `.rpm` in the yum trees) whose index entry
/// gives its real size and SHA-256; the others are index entries only. Anything else is a 404. Every
/// request path is recorded. The server stops when the value is dropped.
///
/// ```no_run
/// # async fn demo() -> cs_lab::Result<()> {
/// let repo = cs_lab::RepoServer::start(&["4.19.1.0", "4.20.0.0"]).await?;
/// let apt_line = format!("deb {}/ubuntu noble 4.20", repo.url());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RepoServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl RepoServer {
    /// Generates the tree for `versions` and starts serving it on the current tokio runtime.
    ///
    /// # Errors
    /// [`LabError::Start`] for a version that does not parse; [`LabError::Io`] when binding
    /// the port fails.
    pub async fn start(versions: &[&str]) -> Result<RepoServer> {
        let mut parsed = Vec::new();
        for v in versions {
            let version = CsVersion::parse(v).map_err(|e| LabError::Start {
                what: "repository server".into(),
                detail: e.to_string(),
            })?;
            parsed.push(version);
        }
        let files = generate(&parsed).map_err(|e| LabError::io("generate repository", e))?;
        let shared = Arc::new(Shared {
            files,
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| LabError::io("bind 127.0.0.1:0 for the repository server", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LabError::io("local address of the repository server", e))?;
        let app = Router::new().fallback(serve).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "repository server stopped");
            }
        });
        Ok(RepoServer { addr, shared, task })
    }

    /// The base URL, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every path served, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.shared.files.keys().cloned().collect()
    }

    /// The paths requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for RepoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.clone());
    match shared.files.get(&path) {
        Some(body) => (StatusCode::OK, body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    e.finish()
}

fn xz(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data)?;
    e.finish()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The generated files, by URL path.
fn generate(versions: &[CsVersion]) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut by_line: BTreeMap<String, Vec<CsVersion>> = BTreeMap::new();
    for v in versions {
        by_line.entry(v.line()).or_default().push(*v);
    }
    let mut files = BTreeMap::new();
    let mut built: BTreeMap<String, Built> = BTreeMap::new();
    for v in versions {
        // Versions cs-schema has no path to get index entries only.
        let deb = crate::packages::management_deb(v, PackageCompression::Xz).ok();
        let flat = crate::packages::management_deb(v, PackageCompression::Zstd).ok();
        let rpm = crate::packages::management_rpm(v, PackageCompression::Gzip).ok();
        let line = v.line();
        let mut b = Built::default();
        if let Some(d) = deb {
            b.pooled = Some((d.len(), sha256(&d)));
            files.insert(
                format!("/ubuntu/pool/{line}/cloudstack-management_{v}_all.deb"),
                d,
            );
        }
        if let Some(d) = flat {
            b.flat = Some((d.len(), sha256(&d)));
            files.insert(
                format!("/cloudstack/upstream/debian/{line}/cloudstack-management_{v}_all.deb"),
                d,
            );
        }
        if let Some(r) = rpm {
            b.rpm = Some((r.len(), sha256(&r)));
            for rel in REPO_YUM_RELEASES {
                files.insert(
                    format!("/centos/{rel}/{line}/cloudstack-management-{v}-1.noarch.rpm"),
                    r.clone(),
                );
            }
        }
        built.insert(v.to_string(), b);
    }
    for (suite, compression) in REPO_APT_SUITES {
        let mut release = format!(
            "Origin: cs-lab\nLabel: Apache CloudStack\nSuite: {suite}\nCodename: {suite}\n\
             Architectures: amd64\nComponents: {}\nSHA256:\n",
            by_line.keys().cloned().collect::<Vec<_>>().join(" ")
        );
        for (line, vs) in &by_line {
            let packages =
                packages_index(vs, &format!("pool/{line}"), &built, |b| b.pooled.clone());
            let (name, body) = match *compression {
                "xz" => ("Packages.xz", xz(packages.as_bytes())?),
                "gz" => ("Packages.gz", gzip(packages.as_bytes())?),
                _ => ("Packages", packages.into_bytes()),
            };
            let rel = format!("{line}/binary-amd64/{name}");
            release.push_str(&format!(" {} {} {rel}\n", sha256(&body), body.len()));
            files.insert(format!("/ubuntu/dists/{suite}/{rel}"), body);
        }
        files.insert(
            format!("/ubuntu/dists/{suite}/Release"),
            release.into_bytes(),
        );
    }
    for (line, vs) in &by_line {
        let packages = packages_index(vs, ".", &built, |b| b.flat.clone());
        let dir = format!("/cloudstack/upstream/debian/{line}");
        files.insert(format!("{dir}/Packages.gz"), gzip(packages.as_bytes())?);
        files.insert(format!("{dir}/Packages"), packages.into_bytes());
        for rel in REPO_YUM_RELEASES {
            let primary = primary_xml(vs, &built);
            let primary_gz = gzip(primary.as_bytes())?;
            let sum = sha256(&primary_gz);
            let href = format!("repodata/{sum}-primary.xml.gz");
            let repomd = format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="primary">
    <checksum type="sha256">{sum}</checksum>
    <open-checksum type="sha256">{open}</open-checksum>
    <location href="{href}"/>
    <timestamp>1700000000</timestamp>
    <size>{size}</size>
    <open-size>{open_size}</open-size>
  </data>
</repomd>
"#,
                open = sha256(primary.as_bytes()),
                size = primary_gz.len(),
                open_size = primary.len(),
            );
            let dir = format!("/centos/{rel}/{line}");
            files.insert(format!("{dir}/repodata/repomd.xml"), repomd.into_bytes());
            files.insert(format!("{dir}/{href}"), primary_gz);
        }
    }
    Ok(files)
}

/// The real packages of one version: `(size, sha256)` of each form.
#[derive(Debug, Default, Clone)]
struct Built {
    pooled: Option<(usize, String)>,
    flat: Option<(usize, String)>,
    rpm: Option<(usize, String)>,
}

fn packages_index(
    versions: &[CsVersion],
    pool: &str,
    built: &BTreeMap<String, Built>,
    form: impl Fn(&Built) -> Option<(usize, String)>,
) -> String {
    let mut out = String::new();
    for v in versions {
        for p in REPO_PACKAGES {
            let real = (*p == "cloudstack-management")
                .then(|| built.get(&v.to_string()).and_then(&form))
                .flatten();
            if let Some((size, sum)) = real {
                out.push_str(&format!(
                    "Package: {p}\nSource: cloudstack\nVersion: {v}\nArchitecture: all\n\
                     Maintainer: Apache CloudStack <dev@cloudstack.apache.org>\n\
                     Installed-Size: 1024\nDepends: cloudstack-common (= {v})\nSection: libs\n\
                     Priority: extra\nFilename: {pool}/{p}_{v}_all.deb\nSize: {size}\n\
                     SHA256: {sum}\nDescription: Apache CloudStack {p}\n generated by cs-lab\n\n"
                ));
                continue;
            }
            out.push_str(&format!(
                "Package: {p}\nSource: cloudstack\nVersion: {v}\nArchitecture: all\n\
                 Maintainer: Apache CloudStack <dev@cloudstack.apache.org>\n\
                 Installed-Size: 1024\nDepends: cloudstack-common (= {v})\nSection: libs\n\
                 Priority: extra\nFilename: {pool}/{p}_{v}_all.deb\nSize: 1048576\n\
                 Description: Apache CloudStack {p}\n generated by cs-lab\n\n"
            ));
        }
    }
    out
}

/// The yum `primary.xml` of every `$releasever` tree. CloudStack's el8 spec builds every package
/// `BuildArch: noarch` with `Release: %{_rel}` (1, no `%{dist}` tag), so the same rpms serve el8
/// and el9: `cloudstack-agent-4.19.0.0-1.noarch.rpm`.
fn primary_xml(versions: &[CsVersion], built: &BTreeMap<String, Built>) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" \
         xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{}\">\n",
        versions.len() * REPO_PACKAGES.len()
    );
    for v in versions {
        for p in REPO_PACKAGES {
            let real = (*p == "cloudstack-management")
                .then(|| built.get(&v.to_string()).and_then(|b| b.rpm.clone()))
                .flatten();
            let extra = real
                .map(|(size, sum)| {
                    format!(
                        "  <checksum type=\"sha256\" pkgid=\"YES\">{sum}</checksum>\n  \
                         <size package=\"{size}\" installed=\"{size}\" archive=\"{size}\"/>\n"
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<package type=\"rpm\">\n  <name>{p}</name>\n  <arch>noarch</arch>\n{extra}  \
                 <version epoch=\"0\" ver=\"{v}\" rel=\"1\"/>\n  \
                 <summary>Apache CloudStack {p}</summary>\n  \
                 <location href=\"{p}-{v}-1.noarch.rpm\"/>\n  <format>\n    \
                 <rpm:provides><rpm:entry name=\"{p}\" flags=\"EQ\" epoch=\"0\" ver=\"{v}\" rel=\"1\"/></rpm:provides>\n  \
                 </format>\n</package>\n"
            ));
        }
    }
    out.push_str("</metadata>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_is_published_in_every_form() {
        let v = [
            CsVersion::parse("4.20.1.0").unwrap(),
            CsVersion::new3(24, 0, 0),
        ];
        let files = generate(&v).unwrap();
        for p in [
            "/ubuntu/dists/noble/4.20/binary-amd64/Packages.xz",
            "/ubuntu/dists/jammy/24.0/binary-amd64/Packages.gz",
            "/ubuntu/dists/focal/4.20/binary-amd64/Packages",
            "/ubuntu/dists/noble/Release",
            "/cloudstack/upstream/debian/24.0/Packages",
            "/centos/8/4.20/repodata/repomd.xml",
            "/centos/9/24.0/repodata/repomd.xml",
        ] {
            assert!(files.contains_key(p), "{p}");
        }
        let plain =
            String::from_utf8(files["/cloudstack/upstream/debian/4.20/Packages"].clone()).unwrap();
        assert!(
            plain.contains("Package: cloudstack-agent\nSource: cloudstack\nVersion: 4.20.1.0\n")
        );
        let primary = primary_xml(&v, &BTreeMap::new());
        assert!(
            primary.contains("<version epoch=\"0\" ver=\"4.20.1.0\" rel=\"1\"/>"),
            "{primary}"
        );
        assert!(
            primary.contains("cloudstack-agent-4.20.1.0-1.noarch.rpm"),
            "{primary}"
        );
    }

    #[tokio::test]
    async fn serves_files_and_404s_and_records_requests() {
        let repo = RepoServer::start(&["4.19.1.0"]).await.unwrap();
        let get = |path: &str| {
            let addr = repo.addr();
            let path = path.to_string();
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf).await;
                buf
            }
        };
        let ok = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            get("/cloudstack/upstream/debian/4.19/Packages"),
        )
        .await
        .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("Version: 4.19.1.0"));
        let missing = tokio::time::timeout(std::time::Duration::from_secs(10), get("/nope"))
            .await
            .unwrap();
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert_eq!(
            repo.requests(),
            ["/cloudstack/upstream/debian/4.19/Packages", "/nope"]
        );
    }
}
