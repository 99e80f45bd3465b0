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
/// [`Error::Host`] when the host cannot be read, [`Error::Invalid`] for a path that is not a
/// normalised absolute path, [`Error::UnsafeBundle`] for what [`restore_config`] would refuse
/// to put back (a setuid or world-writable mode).
pub async fn bundle_config(host: &dyn Host, paths: &[&str]) -> Result<ConfigBundle> {
    let mut entries = Vec::new();
    for p in paths {
        if components(p).is_none() {
            return Err(Error::invalid(format!(
                "config path `{p}` is not a normalised absolute path"
            )));
        }
        for path in expand(host, p).await? {
            collect(host, &path, &mut entries).await?;
        }
    }
    let bundle = ConfigBundle {
        host: host.name().to_string(),
        created: now_rfc3339(),
        roots: paths.iter().map(|p| p.to_string()).collect(),
        entries,
    };
    // What [`restore_config`] would refuse is refused now, while nothing depends on it yet.
    check_entries(&bundle, paths)?;
    Ok(bundle)
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
                entry.target = Some(read_link(host, path_str(&path)?).await?);
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
/// A bundle is read back from a file, so it is checked whole before anything is written: every
/// entry must be a normalised absolute path under one of `roots` (the paths the bundle was
/// taken of, as given to [`bundle_config`]), in order (parents first, no duplicates), with no
/// setuid, setgid, sticky or world-writable mode, and no entry may be written through a
/// symbolic link, whether the bundle or the host has it (the components from the root down are
/// checked on the host; those above a root are not). No link leaving the roots is created or
/// changed: one the bundle holds (an installation may link a keystore from elsewhere) must
/// still be on the host as it was, and is left alone.
///
/// # Errors
/// [`Error::UnsafeBundle`] naming the first entry refused (then nothing was written),
/// [`Error::Invalid`] for a root that is not a normalised absolute path, [`Error::Host`]
/// naming the path that could not be read or written.
pub async fn restore_config(
    host: &dyn Host,
    bundle: &ConfigBundle,
    roots: &[&str],
) -> Result<usize> {
    let placed = check_entries(bundle, roots)?;
    check_host_paths(host, bundle, &placed).await?;
    for (e, place) in bundle.entries.iter().zip(&placed) {
        if place.external {
            continue;
        }
        let p = e.path.as_str();
        let path = Path::new(p);
        match e.kind {
            FileKind::Dir => {
                host.create_dir_all(path, e.mode)
                    .await
                    .map_err(|err| Error::host(format!("create {p}"), err))?;
                host.run_ok(
                    &Cmd::new("chmod")
                        .arg(format!("{:o}", e.mode))
                        .arg("--")
                        .arg(p),
                )
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
                let target = e.target.as_deref().unwrap_or_default();
                host.run_ok(&Cmd::new("ln").arg("-sfn").arg("--").arg(target).arg(p))
                    .await
                    .map_err(|err| Error::host(format!("link {p}"), err))?;
            }
            // Refused by `check_entries`.
            _ => continue,
        }
        host.run_ok(
            &Cmd::new("chown")
                .arg("-h")
                .arg(format!("{}:{}", e.uid, e.gid))
                .arg("--")
                .arg(p),
        )
        .await
        .map_err(|err| Error::host(format!("chown {p}"), err))?;
    }
    Ok(bundle.entries.len())
}

fn refuse(path: &str, reason: impl Into<String>) -> Error {
    Error::UnsafeBundle {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// The components of a normalised absolute path (`/a/b`: no empty, `.` or `..` component, no
/// trailing slash, no NUL), or `None`.
fn components(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() || path.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = rest.split('/').collect();
    parts
        .iter()
        .all(|c| !c.is_empty() && *c != "." && *c != "..")
        .then_some(parts)
}

/// How many leading components of `path` the root covers, when `path` is the root (or a path
/// a root pattern matches) or lies under it. A root's last component may hold one `*`, as
/// [`bundle_config`] expands it.
fn under_root(path: &[&str], root: &[&str]) -> Option<usize> {
    if path.len() < root.len() {
        return None;
    }
    let last = root.len() - 1;
    root.iter()
        .zip(path)
        .enumerate()
        .all(|(i, (r, p))| match r.split_once('*') {
            Some((prefix, suffix)) if i == last => {
                p.starts_with(prefix)
                    && p.ends_with(suffix)
                    && p.len() >= prefix.len() + suffix.len()
            }
            _ => r == p,
        })
        .then_some(root.len())
}

/// Where a link at `link` (components) pointing to `target` leads, resolved lexically.
fn resolve_link<'a>(link: &[&'a str], target: &'a str) -> Option<Vec<&'a str>> {
    let mut out: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link[..link.len() - 1].to_vec()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Where an entry lies: how many leading components of its path its root covers, and whether
/// it is a link leading out of the roots.
#[derive(Debug, Clone, Copy)]
struct Placed {
    top: usize,
    external: bool,
}

/// Checks a bundle against the roots it may be restored to, without touching any host.
fn check_entries(bundle: &ConfigBundle, roots: &[&str]) -> Result<Vec<Placed>> {
    let roots = roots
        .iter()
        .map(|r| {
            components(r).ok_or_else(|| {
                Error::invalid(format!(
                    "config root `{r}` is not a normalised absolute path"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let within = |path: &[&str]| roots.iter().find_map(|r| under_root(path, r));
    let mut seen: std::collections::BTreeMap<&str, FileKind> = std::collections::BTreeMap::new();
    let mut placed = Vec::with_capacity(bundle.entries.len());
    for e in &bundle.entries {
        let p = e.path.as_str();
        let parts = components(p).ok_or_else(|| refuse(p, "not a normalised absolute path"))?;
        let top = within(&parts).ok_or_else(|| {
            refuse(
                p,
                format!("outside the configuration roots ({})", roots_list(&roots)),
            )
        })?;
        if seen.contains_key(p) {
            return Err(refuse(p, "named twice"));
        }
        // Every parent inside the root the bundle also holds must be a directory it has
        // already put back.
        for depth in top..parts.len() {
            let parent = format!("/{}", parts[..depth].join("/"));
            match seen.get(parent.as_str()) {
                Some(FileKind::Dir) | None => {}
                Some(_) => {
                    return Err(refuse(
                        p,
                        format!("its parent `{parent}` is not a directory in the bundle"),
                    ));
                }
            }
        }
        if let Some(child) = seen.keys().find(|k| k.starts_with(&format!("{p}/"))) {
            return Err(refuse(
                p,
                format!("listed after `{child}`, which lies under it"),
            ));
        }
        let mut external = false;
        match e.kind {
            FileKind::File | FileKind::Dir => {
                if e.mode & 0o7000 != 0 {
                    return Err(refuse(
                        p,
                        format!("mode {:o} sets setuid, setgid or sticky bits", e.mode),
                    ));
                }
                if e.mode & 0o002 != 0 {
                    return Err(refuse(p, format!("mode {:o} is world-writable", e.mode)));
                }
                if e.target.is_some() {
                    return Err(refuse(p, "a file or directory with a link target"));
                }
                if e.kind == FileKind::Dir && e.data.is_some() {
                    return Err(refuse(p, "a directory with contents"));
                }
                e.contents().map_err(|err| refuse(p, err.to_string()))?;
            }
            FileKind::Symlink => {
                let target = e
                    .target
                    .as_deref()
                    .filter(|t| !t.is_empty() && !t.contains('\0'))
                    .ok_or_else(|| refuse(p, "a link without a target"))?;
                if e.data.is_some() {
                    return Err(refuse(p, "a link with contents"));
                }
                external = resolve_link(&parts, target)
                    .as_deref()
                    .and_then(within)
                    .is_none();
            }
            _ => return Err(refuse(p, "not a file, directory or link")),
        }
        seen.insert(p, e.kind);
        placed.push(Placed { top, external });
    }
    Ok(placed)
}

fn roots_list(roots: &[Vec<&str>]) -> String {
    roots
        .iter()
        .map(|r| format!("/{}", r.join("/")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks on the host that no entry is written through a symbolic link: every component from
/// the entry's root down to its parent is a directory or missing, and the entry itself is not
/// a link where the bundle has a directory, nor a directory where it has a file or a link. A
/// link leading out of the roots must be on the host with the same target.
async fn check_host_paths(host: &dyn Host, bundle: &ConfigBundle, placed: &[Placed]) -> Result<()> {
    let mut known: std::collections::BTreeMap<String, Option<FileKind>> =
        std::collections::BTreeMap::new();
    for (e, place) in bundle.entries.iter().zip(placed) {
        let top = place.top;
        let parts: Vec<&str> = e.path[1..].split('/').collect();
        for depth in top..=parts.len() {
            let path = format!("/{}", parts[..depth].join("/"));
            let kind = match known.get(&path) {
                Some(k) => *k,
                None => {
                    let k = match host.stat(Path::new(&path)).await {
                        Ok(m) => Some(m.kind),
                        Err(err) if err.is_not_found() => None,
                        Err(err) => return Err(Error::host(format!("stat {path}"), err)),
                    };
                    known.insert(path.clone(), k);
                    k
                }
            };
            let own = depth == parts.len();
            let refused = match (kind, own) {
                (None | Some(FileKind::Dir), false) => None,
                (Some(_), false) => Some(format!(
                    "its parent `{path}` on the host is not a directory"
                )),
                (Some(FileKind::Symlink), true) if e.kind == FileKind::Dir => {
                    Some("a symbolic link on the host where the bundle has a directory".into())
                }
                (Some(FileKind::Dir), true) if e.kind != FileKind::Dir => {
                    Some("a directory on the host where the bundle has a file or link".into())
                }
                (Some(FileKind::File | FileKind::Dir | FileKind::Symlink), true) | (None, true) => {
                    None
                }
                (Some(_), true) => Some("a socket, device or fifo on the host".into()),
            };
            if let Some(reason) = refused {
                return Err(refuse(&e.path, reason));
            }
        }
        if place.external {
            let target = e.target.as_deref().unwrap_or_default();
            let on_host = match known.get(&e.path) {
                Some(Some(FileKind::Symlink)) => Some(read_link(host, &e.path).await?),
                _ => None,
            };
            if on_host.as_deref() != Some(target) {
                return Err(refuse(
                    &e.path,
                    format!(
                        "the link to `{target}` leaves the configuration roots and is not on \
                         the host as it was; it is not recreated"
                    ),
                ));
            }
        }
    }
    Ok(())
}

async fn read_link(host: &dyn Host, path: &str) -> Result<String> {
    let out = host
        .run_ok(&Cmd::new("readlink").arg("--").arg(path))
        .await
        .map_err(|e| Error::host(format!("readlink {path}"), e))?;
    Ok(out.stdout_lossy().trim_end_matches('\n').to_string())
}
