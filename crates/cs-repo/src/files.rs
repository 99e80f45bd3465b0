//! The IO layer: discover repository files on a host, plan a rewrite, apply it with backups,
//! revert from a backup.

use std::path::{Path, PathBuf};

use cs_core::{Cmd, FileKind, Host, HostExt, Layout};
use serde::{Deserialize, Serialize};

use crate::{Error, Format, Result, Rewrite, Rules, rewrite};

/// Suffix of backup copies: `cloudstack.list.20260124T070102Z.cs-upgrade.bak`. apt ignores
/// `*.bak` silently and yum reads only `*.repo`, so a backup is never taken for a source.
const BACKUP_SUFFIX: &str = ".cs-upgrade.bak";

/// The repository files of a host, in the order apt and yum read them: `sources.list`, then
/// `sources.list.d/*.list` and `*.sources`, then `yum.repos.d/*.repo` and
/// `zypp/repos.d/*.repo`, each directory sorted by name. Directories that do not exist are
/// skipped.
///
/// # Errors
/// Host errors other than "not found".
pub async fn discover(host: &dyn Host, layout: &Layout) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match host.stat(&layout.apt_sources_list).await {
        Ok(m) if matches!(m.kind, FileKind::File | FileKind::Symlink) => {
            out.push(layout.apt_sources_list.clone());
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    for dir in [
        &layout.apt_sources_dir,
        &layout.yum_repos_dir,
        &layout.zypp_repos_dir,
    ] {
        let entries = match host.list_dir(dir).await {
            Ok(v) => v,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let yum = dir != &layout.apt_sources_dir;
        for e in entries {
            if !matches!(e.meta.kind, FileKind::File | FileKind::Symlink) || e.name.starts_with('.')
            {
                continue;
            }
            let path = dir.join(&e.name);
            let wanted = match Format::from_path(&path) {
                Some(Format::Yum) => yum,
                Some(_) => !yum,
                None => false,
            };
            if wanted {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// The planned rewrite of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FilePlan {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its text as read.
    pub original: String,
    /// The rewrite (`rewrite.text` is what will be written).
    pub rewrite: Rewrite,
}

impl FilePlan {
    /// Whether the file changes.
    pub fn is_noop(&self) -> bool {
        self.rewrite.is_noop()
    }

    /// A unified diff of the change (empty when nothing changes), with the path in the
    /// `---`/`+++` headers.
    pub fn diff(&self) -> String {
        if self.is_noop() {
            return String::new();
        }
        let name = self.path.display().to_string();
        similar::TextDiff::from_lines(&self.original, &self.rewrite.text)
            .unified_diff()
            .context_radius(3)
            .header(&name, &name)
            .to_string()
    }

    /// One line per change and per disabled CloudStack entry, prefixed with the path
    /// (`/etc/apt/sources.list.d/cloudstack.list:1: 4.19 -> 4.20`).
    pub fn summary(&self) -> Vec<String> {
        let p = self.path.display();
        let mut out: Vec<String> = self
            .rewrite
            .changes
            .iter()
            .map(|c| format!("{p}:{}: {} -> {}", c.line, c.from, c.to))
            .collect();
        out.extend(self.rewrite.disabled().map(|e| {
            format!(
                "{p}:{}: disabled CloudStack entry left at {}",
                e.line,
                e.release.as_deref().unwrap_or("its release")
            )
        }));
        out
    }
}

/// The planned rewrite of several files to one release line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Plan {
    /// The target release line.
    pub target: String,
    /// One plan per file read, changed or not.
    pub files: Vec<FilePlan>,
}

impl Plan {
    /// Whether no file changes.
    pub fn is_noop(&self) -> bool {
        self.files.iter().all(FilePlan::is_noop)
    }

    /// The files that change.
    pub fn changed(&self) -> impl Iterator<Item = &FilePlan> {
        self.files.iter().filter(|f| !f.is_noop())
    }

    /// Whether any file has a CloudStack entry, enabled or not.
    pub fn has_cloudstack_entries(&self) -> bool {
        self.files.iter().any(|f| !f.rewrite.entries.is_empty())
    }

    /// The unified diff of every changed file.
    pub fn diff(&self) -> String {
        self.changed().map(FilePlan::diff).collect()
    }
}

/// Reads `paths` on `host` and plans their rewrite to `target` (nothing is written). The format
/// of each file comes from its name.
///
/// # Errors
/// * [`Error::InvalidTarget`] for a target that is not a release line.
/// * [`Error::UnknownFormat`] for a file name that is not a repository file.
/// * [`Error::NotText`] for a file that is not UTF-8, naming the line.
/// * [`Error::InFile`] wrapping what [`rewrite`] refuses (syntax, ambiguity), naming the file.
/// * [`Error::Host`] when a file cannot be read.
pub async fn plan(host: &dyn Host, paths: &[PathBuf], target: &str, rules: &Rules) -> Result<Plan> {
    crate::rules::check_target(target)?;
    let mut files = Vec::new();
    for path in paths {
        let format =
            Format::from_path(path).ok_or_else(|| Error::UnknownFormat { path: path.clone() })?;
        let bytes = host.read(path).await?;
        let original = into_text(path, bytes)?;
        let rewrite =
            rewrite(&original, format, target, rules).map_err(|e| Error::in_file(path, e))?;
        files.push(FilePlan {
            path: path.clone(),
            format,
            original,
            rewrite,
        });
    }
    Ok(Plan {
        target: target.to_string(),
        files,
    })
}

pub(crate) fn into_text(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::NotText {
            path: path.to_path_buf(),
            line,
        }
    })
}

/// A file rewritten by [`apply`], and the backup copy of what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Applied {
    /// The rewritten file.
    pub path: PathBuf,
    /// The backup copy beside it.
    pub backup: PathBuf,
}

/// Writes the changed files of `plan`: for each, a backup copy beside it
/// (`<name>.<UTC timestamp>.cs-upgrade.bak`, same mode and owner), then the new text with
/// `write_atomic`, keeping mode and owner. A file that changed on the host since it was planned
/// is not touched. When writing a file fails, the files already written are put back.
///
/// # Errors
/// * [`Error::Changed`] when a file is no longer what was planned.
/// * [`Error::Symlink`] when a file is a symbolic link (renaming over it would replace the link).
/// * [`Error::Host`] when reading, writing or `chown` fails.
pub async fn apply(host: &dyn Host, plan: &Plan) -> Result<Vec<Applied>> {
    let stamp = timestamp();
    let mut done: Vec<(Applied, &FilePlan)> = Vec::new();
    for file in plan.changed() {
        match apply_one(host, file, &stamp).await {
            Ok(a) => done.push((a, file)),
            Err(e) => {
                for (a, f) in done.iter().rev() {
                    let mode = host.stat(&a.path).await.ok().map(|m| m.mode);
                    if let Err(undo) = host
                        .write_atomic(&a.path, f.original.as_bytes(), mode)
                        .await
                    {
                        tracing::error!(path = %a.path.display(), error = %undo,
                            "could not put the file back; restore it from its backup");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(done.into_iter().map(|(a, _)| a).collect())
}

async fn apply_one(host: &dyn Host, file: &FilePlan, stamp: &str) -> Result<Applied> {
    let path = &file.path;
    let meta = host.stat(path).await?;
    if meta.kind == FileKind::Symlink {
        return Err(Error::Symlink { path: path.clone() });
    }
    let current = host.read(path).await?;
    if current != file.original.as_bytes() {
        return Err(Error::Changed { path: path.clone() });
    }
    let backup = free_backup_path(host, path, stamp).await?;
    host.write_atomic(&backup, &current, Some(meta.mode))
        .await?;
    keep_owner(host, &backup, meta.uid, meta.gid).await?;
    host.write_atomic(path, file.rewrite.text.as_bytes(), Some(meta.mode))
        .await?;
    tracing::info!(path = %path.display(), backup = %backup.display(),
        changes = file.rewrite.changes.len(), "repository file rewritten");
    Ok(Applied {
        path: path.clone(),
        backup,
    })
}

/// Gives `path` the owner `uid:gid` when it has another one (a new file belongs to whoever
/// wrote it).
async fn keep_owner(host: &dyn Host, path: &Path, uid: u32, gid: u32) -> Result<()> {
    let now = host.stat(path).await?;
    if now.uid != uid || now.gid != gid {
        host.run_ok(
            &Cmd::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(path.display().to_string()),
        )
        .await?;
    }
    Ok(())
}

fn timestamp() -> String {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "00000000T000000Z".into())
}

async fn free_backup_path(host: &dyn Host, path: &Path, stamp: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0u32.. {
        let extra = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let candidate = path.with_file_name(format!("{name}.{stamp}{extra}{BACKUP_SUFFIX}"));
        if !host.exists(&candidate).await? {
            return Ok(candidate);
        }
    }
    unreachable!("u32 range exhausted looking for a backup name")
}

/// The backup copies of `path` beside it, oldest first.
///
/// # Errors
/// Host errors other than "not found".
pub async fn backups(host: &dyn Host, path: &Path) -> Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let entries = match host.list_dir(dir).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .into_iter()
        .filter_map(|e| {
            let stem = e.name.strip_prefix(&prefix)?.strip_suffix(BACKUP_SUFFIX)?;
            let (stamp, n) = match stem.split_once('-') {
                Some((s, n)) => (s, n.parse::<u32>().ok()?),
                None => (stem, 0),
            };
            Some((format!("{stamp}-{n:010}"), dir.join(&e.name)))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Puts `backup` back in place of `path` (atomically, with the backup's mode and the file's
/// owner). The backup is kept.
///
/// # Errors
/// [`Error::Host`] when the backup cannot be read or the file cannot be written.
pub async fn revert(host: &dyn Host, path: &Path, backup: &Path) -> Result<()> {
    let meta = host.stat(backup).await?;
    let bytes = host.read(backup).await?;
    let existed = host.exists(path).await?;
    host.write_atomic(path, &bytes, Some(meta.mode)).await?;
    if !existed {
        keep_owner(host, path, meta.uid, meta.gid).await?;
    }
    tracing::info!(path = %path.display(), backup = %backup.display(), "repository file reverted");
    Ok(())
}

/// A backup copy [`apply`] left beside a repository file
/// (`<name>.<YYYYMMDDTHHMMSSZ>[-<n>].cs-upgrade.bak`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackupFile {
    /// The copy.
    pub path: PathBuf,
    /// The file it is a copy of.
    pub original: PathBuf,
    /// When it was made: the UTC stamp in its name.
    #[serde(serialize_with = "unix_seconds")]
    pub created: std::time::SystemTime,
    /// Its size.
    pub bytes: u64,
}

impl BackupFile {
    /// How long ago it was made (zero for a stamp in the future).
    pub fn age(&self, now: std::time::SystemTime) -> std::time::Duration {
        now.duration_since(self.created).unwrap_or_default()
    }
}

fn unix_seconds<S: serde::Serializer>(
    t: &std::time::SystemTime,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    s.serialize_u64(secs)
}

/// The original's name and the time of a backup copy's name, as [`apply`] names it (the
/// stamp `YYYYMMDDTHHMMSSZ` in UTC, maybe followed by `-<n>`); `None` for any other name.
pub fn parse_backup_name(name: &str) -> Option<(String, std::time::SystemTime)> {
    let stem = name.strip_suffix(BACKUP_SUFFIX)?;
    let (original, tail) = stem.rsplit_once('.')?;
    if original.is_empty() {
        return None;
    }
    let stamp = match tail.split_once('-') {
        Some((s, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => s,
        Some(_) => return None,
        None => tail,
    };
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(stamp, &fmt)
        .ok()?
        .assume_utc();
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some((
        original.to_string(),
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    ))
}

/// The directories [`apply`] writes backup copies into: those of the repository files.
fn backup_dirs(layout: &Layout) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = layout
        .apt_sources_list
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .chain([
            layout.apt_sources_dir.clone(),
            layout.yum_repos_dir.clone(),
            layout.zypp_repos_dir.clone(),
        ])
        .collect();
    dirs.dedup();
    dirs
}

/// Every backup copy [`apply`] left in the repository directories of `layout` (`sources.list`'s
/// directory, `sources.list.d`, `yum.repos.d`, `zypp/repos.d`), oldest first. apt warns about
/// each on every update (`Ignoring file … invalid filename extension`). Files of other names
/// are never listed.
///
/// # Errors
/// Host errors other than "not found".
pub async fn backup_files(host: &dyn Host, layout: &Layout) -> Result<Vec<BackupFile>> {
    let mut out = Vec::new();
    for dir in backup_dirs(layout) {
        let entries = match host.list_dir(&dir).await {
            Ok(v) => v,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            if e.meta.kind != FileKind::File {
                continue;
            }
            let Some((original, created)) = parse_backup_name(&e.name) else {
                continue;
            };
            out.push(BackupFile {
                path: dir.join(&e.name),
                original: dir.join(original),
                created,
                bytes: e.meta.size,
            });
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.path.cmp(&b.path)));
    Ok(out)
}

/// Removes backup copies. Every path is checked first: one whose name is not a backup copy's
/// (see [`parse_backup_name`]) is refused and nothing is removed.
///
/// # Errors
/// [`Error::NotBackup`] naming such a path; host errors (a failed removal: the ones before it
/// are gone).
pub async fn remove_backup_files(host: &dyn Host, paths: &[PathBuf]) -> Result<()> {
    if let Some(bad) = paths.iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_backup_name)
            .is_none()
    }) {
        return Err(Error::NotBackup { path: bad.clone() });
    }
    for p in paths {
        match host.remove_file(p).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(path = %p.display(), "repository backup copy removed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_apply_gives_are_backup_copies() {
        // The name `apply` gives now parses back to now (to the second).
        let now = std::time::SystemTime::now();
        let name = format!("cloudstack.list.{}{BACKUP_SUFFIX}", timestamp());
        let (original, at) = parse_backup_name(&name).unwrap();
        assert_eq!(original, "cloudstack.list");
        assert!(now.duration_since(at).unwrap() < std::time::Duration::from_secs(2));
        let (original, at) =
            parse_backup_name("sources.list.20260124T070102Z-3.cs-upgrade.bak").unwrap();
        assert_eq!(original, "sources.list");
        assert_eq!(
            at.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_769_238_062
        );
        for other in [
            "cloudstack.list",
            "cloudstack.list.bak",
            "cloudstack.list.cs-upgrade.bak",
            "cloudstack.list.old.cs-upgrade.bak",
            "cloudstack.list.20260124T070102Z-.cs-upgrade.bak",
            "cloudstack.list.20260124T070102Z-x.cs-upgrade.bak",
            "cloudstack.list.20260124T070102.cs-upgrade.bak",
            "cloudstack.list.20260124T070102Z.cs-upgrade.bak~",
            ".20260124T070102Z.cs-upgrade.bak",
        ] {
            assert_eq!(parse_backup_name(other), None, "{other}");
        }
    }
}
