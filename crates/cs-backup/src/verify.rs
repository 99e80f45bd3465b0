//! Checking a backup's files against its manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cs_core::{Cmd, DbUrl, Host, Progress};

use crate::backup::{blocking, path_str};
use crate::files::hash_file;
use crate::manifest::{FileEntry, Manifest};
use crate::restore::{RestoreMode, RestoreOptions, restore};
use crate::{Error, Problem, Result};

/// Checks a local backup: the manifest is there and readable, and every file it lists is
/// present with the recorded size and SHA-256. Hashes files on several threads.
///
/// # Errors
/// [`Error::Incomplete`] when `manifest.json` is missing (an interrupted backup),
/// [`Error::BadManifest`], and [`Error::Verify`] listing every missing, truncated or altered
/// file by name.
///
/// # Examples
///
/// Checks a backup's files before trusting it (`no_run`: it needs a backup; `tests/roundtrip.rs`
/// runs the same code on one it makes):
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::path::Path::new("/var/backups/cloudstack/before-4.19");
/// match cs_backup::verify(dir).await {
///     Ok(manifest) => println!("{} files intact", manifest.files.len()),
///     Err(e) if e.is_incomplete() => println!("an interrupted backup: {e}"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
pub async fn verify(dir: &Path) -> Result<Manifest> {
    let dir = dir.to_path_buf();
    blocking(move || {
        let manifest = Manifest::load(&dir)?;
        check_local(&dir, &manifest)?;
        Ok(manifest)
    })
    .await
}

pub(crate) fn check_local(dir: &Path, manifest: &Manifest) -> Result<()> {
    let queue = Mutex::new(manifest.files.iter().collect::<Vec<&FileEntry>>());
    let problems = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(f) = queue.lock().ok().and_then(|mut q| q.pop()) {
                    if let Some(p) = check_one(dir, f)
                        && let Ok(mut v) = problems.lock()
                    {
                        v.push(p);
                    }
                }
            });
        }
    });
    let mut problems = problems.into_inner().unwrap_or_else(|p| p.into_inner());
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort_by(|a, b| a.subject.cmp(&b.subject));
    Err(Error::Verify {
        dir: dir.to_path_buf(),
        problems,
    })
}

fn check_one(dir: &Path, f: &FileEntry) -> Option<Problem> {
    let path = dir.join(&f.path);
    // A directory on the way that is a symbolic link could lead out of the backup.
    let mut at = dir.to_path_buf();
    let parts: Vec<&str> = f.path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(Problem::new(
                &f.path,
                format!(
                    "`{part}` on its path is a symbolic link (it could lead out of the backup)"
                ),
            ));
        }
    }
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(Problem::new(&f.path, "missing"));
        }
        Err(e) => return Some(Problem::new(&f.path, format!("cannot read: {e}"))),
        Ok(m) if !m.is_file() => return Some(Problem::new(&f.path, "not a regular file")),
        Ok(m) if m.len() != f.size => {
            return Some(Problem::new(&f.path, size_message(m.len(), f.size)));
        }
        Ok(_) => {}
    }
    match hash_file(&path) {
        Ok((_, sha)) if sha == f.sha256 => None,
        Ok(_) => Some(Problem::new(
            &f.path,
            "SHA-256 differs from the manifest (the file was altered)",
        )),
        Err(e) => Some(Problem::new(&f.path, format!("cannot read: {e}"))),
    }
}

fn size_message(found: u64, expected: u64) -> String {
    if found < expected {
        format!("truncated: {found} bytes, the manifest says {expected}")
    } else {
        format!("{found} bytes, the manifest says {expected} (the file was altered)")
    }
}

/// Checks a backup on a host (for example one the `mysqldump` engine wrote on the database
/// server): sizes through [`Host::stat`], hashes with `sha256sum` on the host.
///
/// # Errors
/// As [`verify`], and [`Error::Host`] when the host cannot be used.
pub async fn verify_on(host: &dyn Host, dir: &Path) -> Result<Manifest> {
    let manifest = Manifest::load_from(host, dir).await?;
    let mut problems = Vec::new();
    let mut to_hash: Vec<(&FileEntry, PathBuf)> = Vec::new();
    for f in &manifest.files {
        let path = dir.join(&f.path);
        match host.stat(&path).await {
            Err(e) if e.is_not_found() => problems.push(Problem::new(&f.path, "missing")),
            Err(e) => problems.push(Problem::new(&f.path, format!("cannot read: {e}"))),
            Ok(m) if m.size != f.size => {
                problems.push(Problem::new(&f.path, size_message(m.size, f.size)));
            }
            Ok(_) => to_hash.push((f, path)),
        }
    }
    for batch in to_hash.chunks(200) {
        let paths: Vec<PathBuf> = batch.iter().map(|(_, p)| p.clone()).collect();
        let sums = sha256_on(host, &paths).await?;
        for (f, p) in batch {
            if sums.get(p) != Some(&f.sha256) {
                problems.push(Problem::new(
                    &f.path,
                    "SHA-256 differs from the manifest (the file was altered)",
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(Error::Verify {
            dir: dir.to_path_buf(),
            problems,
        })
    }
}

/// SHA-256 of files on a host with `sha256sum`.
pub(crate) async fn sha256_on(
    host: &dyn Host,
    paths: &[PathBuf],
) -> Result<BTreeMap<PathBuf, String>> {
    let mut cmd = Cmd::new("sha256sum").arg("--");
    for p in paths {
        cmd = cmd.arg(path_str(p)?);
    }
    let out = host
        .run(&cmd)
        .await
        .map_err(|e| Error::host("sha256sum", e))?;
    let mut sums = BTreeMap::new();
    for line in out.stdout_lossy().lines() {
        if let Some((hash, path)) = line.split_once("  ") {
            sums.insert(PathBuf::from(path), hash.to_string());
        }
    }
    Ok(sums)
}

/// [`verify`], then restores the backup into scratch schemas, compares every table's row
/// count and checksum and the routine, trigger, event and view inventory with the manifest, and
/// drops the scratch schemas. The live schemas are never touched.
///
/// # Errors
/// As [`verify`]; [`Error::Restore`] (with the [`Error::Verify`] problems inside) when the data
/// differs, and database errors.
pub async fn verify_deep(
    dir: &Path,
    url: &DbUrl,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let opts = options.clone().mode(RestoreMode::ScratchOnly);
    let report = restore(dir, url, &opts, progress).await?;
    let scratch: Vec<String> = report
        .schemas
        .iter()
        .filter_map(|s| s.scratch.clone())
        .collect();
    crate::restore::drop_schemas(url, &scratch).await?;
    Manifest::load(dir)
}
