//! `LocalHost`: this machine, through `tokio::process` and `std::fs`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::host::{DirEntry, FileKind, FileMeta};
use crate::{Cmd, Host, HostError, Output};

/// This machine. Commands run through `tokio::process` (no shell), files through `std::fs` on
/// the blocking pool.
///
/// ```
/// # tokio_test_main(async {
/// use cs_core::{Cmd, Host, LocalHost};
/// let out = LocalHost::new().run(&Cmd::new("printf").arg("%s").arg("a b")).await?;
/// assert_eq!(out.stdout, b"a b");
/// # Ok::<(), cs_core::HostError>(())
/// # });
/// # fn tokio_test_main<F: std::future::Future<Output = Result<(), cs_core::HostError>>>(f: F) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f).unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LocalHost {
    name: String,
}

impl Default for LocalHost {
    fn default() -> Self {
        LocalHost::new()
    }
}

impl LocalHost {
    /// This machine, named `local`.
    pub fn new() -> Self {
        LocalHost::named("local")
    }

    /// This machine under another name (for messages).
    pub fn named(name: impl Into<String>) -> Self {
        LocalHost { name: name.into() }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce(&str) -> Result<T, HostError> + Send + 'static,
    {
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || f(&name))
            .await
            .map_err(|e| HostError::Protocol {
                host: self.name.clone(),
                what: "blocking file task panicked or was cancelled".into(),
                source: Some(Box::new(e)),
            })?
    }
}

pub(crate) fn meta_of(m: &std::fs::Metadata) -> FileMeta {
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileMeta {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.len(),
        mtime: m.mtime(),
    }
}

/// The temporary file `write_atomic` writes before renaming: hidden, beside the target, unique.
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

fn write_atomic_blocking(
    host: &str,
    path: &Path,
    data: &[u8],
    mode: Option<u32>,
) -> Result<(), HostError> {
    let io = |op, e| HostError::from_io(host, op, path, e);
    let existing = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("stat", e)),
    };
    let mode = mode.unwrap_or_else(|| existing.as_ref().map_or(0o600, |m| m.mode() & 0o7777));
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("create temporary file for", e))?;
        f.write_all(data).map_err(|e| io("write", e))?;
        if let Some(m) = &existing {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))
                .map_err(|e| io("chown", e))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("chmod", e))?;
        f.sync_all().map_err(|e| io("fsync", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
        if let Some(dir) = path.parent() {
            // Make the rename durable; some filesystems refuse to fsync a directory, which
            // only weakens durability, not atomicity.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[async_trait]
impl Host for LocalHost {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, cmd: &Cmd) -> Result<Output, HostError> {
        // The one place outside cs-lab that spawns processes (see ARCHITECTURE.md).
        #[allow(clippy::disallowed_methods)]
        let mut command = tokio::process::Command::new(cmd.program());
        command
            .args(cmd.argv())
            .envs(cmd.envs().iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin_data().is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| HostError::Spawn {
            host: self.name.clone(),
            program: cmd.program().to_string(),
            source: e,
        })?;
        let writer = match (child.stdin.take(), cmd.stdin_data()) {
            (Some(mut stdin), Some(data)) => {
                let data = data.to_vec();
                Some(tokio::spawn(async move {
                    // A command that exits without reading its input is not an error.
                    let _ = stdin.write_all(&data).await;
                    let _ = stdin.shutdown().await;
                }))
            }
            _ => None,
        };
        let wait = child.wait_with_output();
        let out = match cmd.timeout_value() {
            Some(limit) => match tokio::time::timeout(limit, wait).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(HostError::Timeout {
                        host: self.name.clone(),
                        what: format!("`{cmd}`"),
                        after: limit,
                    });
                }
            },
            None => wait.await,
        }
        .map_err(|e| HostError::Protocol {
            host: self.name.clone(),
            what: format!("waiting for `{cmd}` failed"),
            source: Some(Box::new(e)),
        })?;
        if let Some(w) = writer {
            let _ = w.await;
        }
        let code = out
            .status
            .code()
            .or_else(|| out.status.signal().map(|s| 128 + s))
            .unwrap_or(255);
        Ok(Output {
            code,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        tokio::fs::read(path)
            .await
            .map_err(|e| HostError::from_io(&self.name, "read", path, e))
    }

    async fn write_atomic(
        &self,
        path: &Path,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), HostError> {
        let path = path.to_path_buf();
        let data = data.to_vec();
        self.blocking(move |host| write_atomic_blocking(host, &path, &data, mode))
            .await
    }

    async fn stat(&self, path: &Path) -> Result<FileMeta, HostError> {
        tokio::fs::symlink_metadata(path)
            .await
            .map(|m| meta_of(&m))
            .map_err(|e| HostError::from_io(&self.name, "stat", path, e))
    }

    async fn list_dir(&self, path: &Path) -> Result<Vec<DirEntry>, HostError> {
        let path = path.to_path_buf();
        self.blocking(move |host| {
            let io = |e| HostError::from_io(host, "list", &path, e);
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(io)? {
                let entry = entry.map_err(io)?;
                let meta = std::fs::symlink_metadata(entry.path()).map_err(io)?;
                out.push(DirEntry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    meta: meta_of(&meta),
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn create_dir_all(&self, path: &Path, mode: u32) -> Result<(), HostError> {
        let path = path.to_path_buf();
        self.blocking(move |host| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(&path)
                .map_err(|e| HostError::from_io(host, "mkdir", &path, e))
        })
        .await
    }

    async fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        tokio::fs::remove_file(path)
            .await
            .map_err(|e| HostError::from_io(&self.name, "remove", path, e))
    }
}
