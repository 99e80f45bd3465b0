//! Small helpers shared by the lab's servers: finding binaries, free ports, watchdogs.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cs_core::{Cmd, DirEntry, FileMeta, Host, HostError, LocalHost, Output};

use crate::{LabError, Result};

/// Finds `binary` in `/usr/sbin`, `/usr/bin`, `/sbin` or `PATH`, or names the package to install.
pub(crate) fn find_binary(binary: &str, package: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| LabError::MissingBinary {
            binary: binary.to_string(),
            package: package.to_string(),
        })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| LabError::io("bind 127.0.0.1:0", e))?;
    let port = l
        .local_addr()
        .map_err(|e| LabError::io("local address", e))?
        .port();
    Ok(port)
}

/// A new command for a lab server.
#[allow(clippy::disallowed_methods)] // cs-lab starts real servers; that is its job.
pub(crate) fn command(program: &Path) -> Command {
    Command::new(program)
}

/// Whether process `pid` is alive (and not a zombie). PID 1 in containers reaps slowly, so
/// `kill -0` is not enough.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// Starts a detached watchdog that, once this process is gone, stops `pid` and removes `dir`.
/// Lab servers shared by a test binary live in statics, which are never dropped; the watchdog
/// makes sure they do not outlive the test run.
pub(crate) fn watchdog(pid: u32, dir: &Path) -> Result<()> {
    let sh = find_binary("sh", "dash")?;
    let script = r#"
me=$1; pid=$2; dir=$3
gone() { [ ! -r /proc/$1/status ] || grep -q '^State:.*Z' /proc/$1/status; }
while ! gone "$me"; do
  gone "$pid" && exit 0
  sleep 0.5
done
kill -TERM "$pid" 2>/dev/null
i=0; while ! gone "$pid" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$pid" 2>/dev/null
rm -rf "$dir"
"#;
    let mut cmd = command(&sh);
    cmd.arg("-c")
        .arg(script)
        .arg("cs-lab-watchdog")
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
        .map_err(|e| LabError::io("start lab watchdog", e))?;
    Ok(())
}

/// Polls `ready` every 50 ms until it is true, the child dies, or `limit` passes.
pub(crate) fn wait_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LabError::Start {
                what: what.to_string(),
                detail: format!("exited with {status}; {}", log_tail(log)),
            });
        }
        if start.elapsed() > limit {
            return Err(LabError::Timeout {
                what: format!("{what} to become ready ({})", log_tail(log)),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!("see {}: {}", log.display(), tail.join(" | "))
}

/// A random alphanumeric token (passwords, names).
pub(crate) fn token(len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random (version 4) UUID, as `UUID.randomUUID()` writes it.
pub(crate) fn random_uuid() -> String {
    use rand::Rng;
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Maps an IO error to a [`LabError::Io`] saying what was being done.
pub(crate) fn io<T>(what: impl Into<String>, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| LabError::io(what, e))
}

/// Writes a file with `mode`, creating its directory; written beside and renamed, so a
/// stand-in never reads half a file.
pub(crate) fn write(path: &Path, data: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    if let Some(p) = path.parent() {
        io(
            format!("create {}", p.display()),
            std::fs::create_dir_all(p),
        )?;
    }
    let tmp = path.with_extension(format!("tmp{}", token(6)));
    io(
        format!("write {}", path.display()),
        std::fs::write(&tmp, data),
    )?;
    io(
        format!("chmod {}", path.display()),
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)),
    )?;
    io(
        format!("rename to {}", path.display()),
        std::fs::rename(&tmp, path),
    )
}

/// A [`Host`] that is this machine with a lab node's stand-ins first in `PATH` (the
/// `local_host` of KVM hosts and management servers).
#[derive(Debug)]
pub(crate) struct StandInHost {
    pub(crate) inner: LocalHost,
    pub(crate) bin: PathBuf,
}

#[async_trait]
impl Host for StandInHost {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn run(&self, cmd: &Cmd) -> std::result::Result<Output, HostError> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let cmd = cmd
            .clone()
            .env("PATH", format!("{}:{path}", self.bin.display()));
        self.inner.run(&cmd).await
    }

    async fn read(&self, path: &Path) -> std::result::Result<Vec<u8>, HostError> {
        self.inner.read(path).await
    }

    async fn write_atomic(
        &self,
        path: &Path,
        data: &[u8],
        mode: Option<u32>,
    ) -> std::result::Result<(), HostError> {
        self.inner.write_atomic(path, data, mode).await
    }

    async fn stat(&self, path: &Path) -> std::result::Result<FileMeta, HostError> {
        self.inner.stat(path).await
    }

    async fn list_dir(&self, path: &Path) -> std::result::Result<Vec<DirEntry>, HostError> {
        self.inner.list_dir(path).await
    }

    async fn create_dir_all(&self, path: &Path, mode: u32) -> std::result::Result<(), HostError> {
        self.inner.create_dir_all(path, mode).await
    }

    async fn remove_file(&self, path: &Path) -> std::result::Result<(), HostError> {
        self.inner.remove_file(path).await
    }
}
