//! Config bundles: the CloudStack configuration directories of a node, with modes and owners.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use cs_core::{Cmd, FileKind, Host, HostExt};
use serde::{Deserialize, Serialize};

use crate::backup::path_str;
use crate::manifest::now_rfc3339;
use crate::{Error, Result};

/// The paths CloudStack keeps its configuration in: `/etc/cloudstack` and
/// `/etc/default/cloudstack-*`.
pub const CLOUDSTACK_CONFIG_PATHS: &[&str] = &["/etc/cloudstack", "/etc/default/cloudstack-*"];

/// Files, directories and links archived from a host, with their modes and owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBundle {
    /// The host's name.
    pub host: String,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// The paths asked for (as given).
    pub roots: Vec<String>,
    /// Every entry, parents before children.
    pub entries: Vec<BundleEntry>,
}

/// One archived path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// Absolute path.
    pub path: String,
    /// File, directory or symbolic link.
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// A file's contents, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl BundleEntry {
    /// A file's contents.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the stored data is not base64.
    pub fn contents(&self) -> Result<Option<Vec<u8>>> {
        self.data
            .as_deref()
            .map(|d| {
                base64::engine::general_purpose::STANDARD
                    .decode(d)
                    .map_err(|e| Error::invalid(format!("bundle entry {}: {e}", self.path)))
            })
            .transpose()
    }
}

/// Archives `paths` of a host: each a file or directory (taken recursively), or a pattern whose
/// last component has a `*` (`/etc/default/cloudstack-*`). Paths that do not exist are left
/// out (a node without a usage server has no `/etc/default/cloudstack-usage`). Sockets, fifos
/// and devices are skipped.
///
/// # Errors
/// [`Error::Host`] when the host cannot be read, [`Error::Invalid`] for a relative path.
pub async fn bundle_config(host: &dyn Host, paths: &[&str]) -> Result<ConfigBundle> {
    let mut entries = Vec::new();
    for p in paths {
        if !p.starts_with('/') {
            return Err(Error::invalid(format!("config path `{p}` is not absolute")));
        }
        for path in expand(host, p).await? {
            collect(host, &path, &mut entries).await?;
        }
    }
    Ok(ConfigBundle {
        host: host.name().to_string(),
        created: now_rfc3339(),
        roots: paths.iter().map(|p| p.to_string()).collect(),
        entries,
    })
}

async fn expand(host: &dyn Host, pattern: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(pattern);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains('*') {
        return Ok(vec![path.to_path_buf()]);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    match host.list_dir(parent).await {
        Ok(list) => Ok(list
            .into_iter()
            .filter(|e| {
                e.name.starts_with(prefix)
                    && e.name.ends_with(suffix)
                    && e.name.len() >= prefix.len() + suffix.len()
            })
            .map(|e| parent.join(e.name))
            .collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(Error::host(format!("list {}", parent.display()), e)),
    }
}

async fn collect(host: &dyn Host, root: &Path, out: &mut Vec<BundleEntry>) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match host.stat(&path).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(Error::host(format!("stat {}", path.display()), e)),
        };
        let mut entry = BundleEntry {
            path: path_str(&path)?.to_string(),
            kind: meta.kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            data: None,
            target: None,
        };
        match meta.kind {
            FileKind::File => {
                let bytes = host
                    .read(&path)
                    .await
                    .map_err(|e| Error::host(format!("read {}", path.display()), e))?;
                entry.data = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            FileKind::Dir => {
                let list = host
                    .list_dir(&path)
                    .await
                    .map_err(|e| Error::host(format!("list {}", path.display()), e))?;
                // Reverse so that popping visits children in name order.
                for e in list.into_iter().rev() {
                    stack.push(path.join(e.name));
                }
            }
            FileKind::Symlink => {
                let out = host
                    .run_ok(&Cmd::new("readlink").arg(path_str(&path)?))
                    .await
                    .map_err(|e| Error::host(format!("readlink {}", path.display()), e))?;
                entry.target = Some(out.stdout_lossy().trim_end_matches('\n').to_string());
            }
            _ => continue,
        }
        out.push(entry);
    }
    Ok(())
}

impl ConfigBundle {
    /// Writes the bundle as JSON to `path` (mode `0600`, atomically, on this machine).
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid(format!("bundle cannot be serialised: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(&json)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io("write", &tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
    }

    /// Reads a bundle written by [`ConfigBundle::save`].
    ///
    /// # Errors
    /// [`Error::Io`] and [`Error::BadManifest`] for unreadable JSON.
    pub fn load(path: &Path) -> Result<ConfigBundle> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadManifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Puts a bundle back on a host: directories created with their modes, files written
/// atomically with their modes, links recreated, owners set with `chown`. Files that exist on
/// the host but not in the bundle are left alone. Returns the number of entries restored.
///
/// # Errors
/// [`Error::Host`] naming the path that could not be written.
pub async fn restore_config(host: &dyn Host, bundle: &ConfigBundle) -> Result<usize> {
    for e in &bundle.entries {
        let path = Path::new(&e.path);
        let p = path_str(path)?;
        match e.kind {
            FileKind::Dir => {
                host.create_dir_all(path, e.mode)
                    .await
                    .map_err(|err| Error::host(format!("create {p}"), err))?;
                host.run_ok(&Cmd::new("chmod").arg(format!("{:o}", e.mode)).arg(p))
                    .await
                    .map_err(|err| Error::host(format!("chmod {p}"), err))?;
            }
            FileKind::File => {
                let data = e.contents()?.unwrap_or_default();
                host.write_atomic(path, &data, Some(e.mode))
                    .await
                    .map_err(|err| Error::host(format!("write {p}"), err))?;
            }
            FileKind::Symlink => {
                let target = e.target.clone().unwrap_or_default();
                host.run_ok(&Cmd::new("ln").arg("-sfn").arg(target).arg(p))
                    .await
                    .map_err(|err| Error::host(format!("link {p}"), err))?;
            }
            _ => continue,
        }
        host.run_ok(
            &Cmd::new("chown")
                .arg("-h")
                .arg(format!("{}:{}", e.uid, e.gid))
                .arg(p),
        )
        .await
        .map_err(|err| Error::host(format!("chown {p}"), err))?;
    }
    Ok(bundle.entries.len())
}
