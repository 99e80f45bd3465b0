//! The `Host` trait: a machine to act on, and the value types it speaks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Secret;

/// One argument of a [`Cmd`]: plain text, or a secret that is passed verbatim but shown as `***`.
#[derive(Clone, PartialEq, Eq)]
enum Arg {
    Plain(String),
    Secret(Secret),
}

impl Arg {
    fn as_str(&self) -> &str {
        match self {
            Arg::Plain(s) => s,
            Arg::Secret(s) => s.expose(),
        }
    }
}

/// A command to run on a [`Host`]: a program and its arguments, never a shell string.
///
/// Arguments reach the program verbatim. Implementations that go through a shell (SSH does)
/// quote each one. Arguments added with [`Cmd::secret_arg`] are passed as they are but print as
/// `***` in `Display` and `Debug`, so a command can be logged or put in an error safely.
///
/// ```
/// use cs_core::Cmd;
/// let cmd = Cmd::new("systemctl").arg("restart").arg("cloudstack-agent");
/// assert_eq!(cmd.to_string(), "systemctl restart cloudstack-agent");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct Cmd {
    program: String,
    args: Vec<Arg>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl Cmd {
    /// A command running `program` (looked up in `PATH` unless it contains a `/`).
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(Arg::Plain(arg.into()));
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args
            .extend(args.into_iter().map(|a| Arg::Plain(a.into())));
        self
    }

    /// Appends an argument that is passed verbatim but printed as `***`.
    pub fn secret_arg(mut self, secret: &Secret) -> Self {
        self.args.push(Arg::Secret(secret.clone()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Bytes written to the command's standard input (then closed). Without it stdin is empty.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Kills the command and fails with [`HostError::Timeout`] when it runs longer than this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The program to run.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The arguments, verbatim (secrets included: do not log this).
    pub fn argv(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(Arg::as_str)
    }

    /// The environment variables set for the command.
    pub fn envs(&self) -> &[(String, String)] {
        &self.env
    }

    /// The standard input, if any.
    pub fn stdin_data(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// The timeout, if any.
    pub fn timeout_value(&self) -> Option<Duration> {
        self.timeout
    }

    /// The command as one POSIX `sh` string with every word quoted, for hosts that go through a
    /// shell. Environment variables are set through `env`.
    pub fn to_shell(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if !self.env.is_empty() {
            words.push("env".into());
            for (k, v) in &self.env {
                words.push(shell_quote(&format!("{k}={v}")));
            }
        }
        words.push(shell_quote(&self.program));
        words.extend(self.argv().map(shell_quote));
        words.join(" ")
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            match a {
                Arg::Plain(s) if needs_quoting(s) => write!(f, " {}", shell_quote(s))?,
                Arg::Plain(s) => write!(f, " {s}")?,
                Arg::Secret(_) => f.write_str(" ***")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmd")
            .field("cmd", &self.to_string())
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("stdin_bytes", &self.stdin.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn needs_quoting(s: &str) -> bool {
    s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
}

/// Quotes one word for POSIX `sh`: safe words stay as they are, others go in single quotes with
/// every `'` written as `'\''`.
///
/// ```
/// assert_eq!(cs_core::shell_quote("a b"), "'a b'");
/// assert_eq!(cs_core::shell_quote("it's"), r"'it'\''s'");
/// assert_eq!(cs_core::shell_quote("plain"), "plain");
/// ```
pub fn shell_quote(s: &str) -> String {
    if !needs_quoting(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// What a finished command returned.
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code; a command killed by signal `n` reports `128 + n`, as shells do.
    pub code: i32,
    /// Standard output, as bytes.
    pub stdout: Vec<u8>,
    /// Standard error, as bytes.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("code", &self.code)
            .field("stdout_bytes", &self.stdout.len())
            .field("stderr", &tail(&self.stderr, 200))
            .finish()
    }
}

/// The last `max` bytes of `bytes` as trimmed text, for error messages.
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// The kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else (socket, device, fifo).
    Other,
}

/// Metadata of a path on a host (symbolic links are not followed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMeta {
    /// File, directory, link or other.
    pub kind: FileKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name, without the directory.
    pub name: String,
    /// Its metadata.
    pub meta: FileMeta,
}

/// Errors from a [`Host`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The path does not exist.
    #[error("{host}: {} not found", path.display())]
    NotFound {
        /// Host name.
        host: String,
        /// The missing path.
        path: PathBuf,
    },
    /// The host refused access to a path.
    #[error("{host}: permission denied on {}", path.display())]
    PermissionDenied {
        /// Host name.
        host: String,
        /// The path.
        path: PathBuf,
    },
    /// A file operation failed for another reason (disk full, not a directory, …).
    #[error("{host}: {op} {} failed", path.display())]
    Io {
        /// Host name.
        host: String,
        /// The operation (`read`, `write`, `rename`, …).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started (not installed, not executable).
    #[error("{host}: cannot start `{program}`")]
    Spawn {
        /// Host name.
        host: String,
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command exited non-zero where success was required ([`HostExt::run_ok`]).
    #[error("{host}: `{cmd}` exited with code {code}: {stderr}")]
    Failed {
        /// Host name.
        host: String,
        /// The command as printed by [`Cmd`]'s `Display` (secrets masked).
        cmd: String,
        /// The exit code.
        code: i32,
        /// The end of its standard error.
        stderr: String,
    },
    /// A command or connection took longer than allowed.
    #[error("{host}: {what} timed out after {after:?}")]
    Timeout {
        /// Host name.
        host: String,
        /// What timed out (`connect to 10.0.0.5:22`, `systemctl restart …`).
        what: String,
        /// The limit.
        after: Duration,
    },
    /// The host could not be reached.
    #[error("{host}: cannot connect to {addr}")]
    Connect {
        /// Host name.
        host: String,
        /// The address tried.
        addr: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The host's key is not the one recorded, or not recorded at all.
    #[error("{host}: host key verification failed for {addr}: {reason}")]
    HostKey {
        /// Host name.
        host: String,
        /// The address.
        addr: String,
        /// What was wrong and what to do about it.
        reason: String,
    },
    /// The host refused the credentials.
    #[error("{host}: authentication as `{user}` failed ({method})")]
    Auth {
        /// Host name.
        host: String,
        /// The user.
        user: String,
        /// The methods tried.
        method: String,
    },
    /// `sudo` on the host refused to run commands as root for the SSH user (see
    /// `SshHostBuilder::sudo`): a wrong or missing password, a user not in sudoers.
    #[error("{host}: sudo as `{user}` refused: {reason}")]
    Sudo {
        /// Host name.
        host: String,
        /// The user logged in as.
        user: String,
        /// Why, as sudo said it.
        reason: SudoRefusal,
    },
    /// A private key file cannot be used: its passphrase is wrong or missing, or its cipher is
    /// not one libssh2 decrypts. Never carries the passphrase.
    #[error("{host}: {problem} for {}", path.display())]
    Key {
        /// Host name.
        host: String,
        /// The key file.
        path: PathBuf,
        /// What is wrong (`wrong passphrase`, `no passphrase given`, …).
        problem: String,
    },
    /// An OpenSSH client configuration file (`~/.ssh/config`) cannot be read or parsed.
    #[error("{host}: ssh config {}: {reason}", path.display())]
    SshConfig {
        /// Host name.
        host: String,
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line where known.
        reason: String,
    },
    /// The connection broke or the remote side misbehaved.
    #[error("{host}: {what}")]
    Protocol {
        /// Host name.
        host: String,
        /// What failed.
        what: String,
        /// The cause, if known.
        #[source]
        source: Option<BoxError>,
    },
}

/// Why `sudo` refused to run a command as root ([`HostError::Sudo`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SudoRefusal {
    /// The sudoers rule asks for a password and none was configured (`sudo -n`'s "a password
    /// is required").
    #[error("a password is required: configure the sudo password, or a NOPASSWD rule")]
    PasswordRequired,
    /// The configured password is wrong (sudo's "incorrect password attempts").
    #[error("incorrect password")]
    IncorrectPassword,
    /// The user may not use sudo at all (sudo's "is not in the sudoers file").
    #[error("the user is not in the sudoers file")]
    NotInSudoers,
    /// The user may use sudo, but not to run this as root (sudo's "is not allowed to
    /// execute").
    #[error("the user is not allowed to run commands as root through sudo")]
    NotAllowed,
    /// The sudoers policy requires a terminal (`Defaults requiretty`).
    #[error("sudo requires a terminal here (`Defaults requiretty`): allow this user without one")]
    TtyRequired,
    /// `sudo` is not installed on the host.
    #[error("sudo is not installed")]
    NotInstalled,
    /// Another refusal; sudo's own message lines (never the command line).
    #[error("{0}")]
    Other(String),
}

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl HostError {
    /// Whether this is [`HostError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, HostError::NotFound { .. })
    }

    /// Maps an `std::io::Error` from a file operation on `path` to the matching variant.
    pub fn from_io(host: &str, op: &'static str, path: &Path, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => HostError::NotFound {
                host: host.to_string(),
                path: path.to_path_buf(),
            },
            std::io::ErrorKind::PermissionDenied => HostError::PermissionDenied {
                host: host.to_string(),
                path: path.to_path_buf(),
            },
            _ => HostError::Io {
                host: host.to_string(),
                op,
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// A machine to act on: this one ([`LocalHost`](crate::LocalHost)), one over SSH
/// (`SshHost`, feature `ssh`), or an in-memory fake ([`FakeHost`](crate::fake::FakeHost)).
///
/// # Contract
/// * `run`: a non-zero exit is `Ok(Output)`; only failing to run (cannot spawn, connection lost,
///   timeout) is `Err`. Arguments arrive verbatim; an implementation that goes through a shell
///   quotes each one. Standard input is what [`Cmd::stdin`] gave, or empty.
/// * `read` of a missing file is [`HostError::NotFound`].
/// * `write_atomic` leaves either the old or the new file, never a mix: it writes a temporary
///   file beside the target, flushes it to disk, gives it the existing file's owner, and renames
///   it over the target. `mode: Some(m)` sets the permission bits; `None` keeps the existing
///   file's mode, or uses `0o600` for a new file. A failed write leaves the old file intact and
///   no temporary file behind.
/// * Paths are absolute; symbolic links are not followed by `stat` and `list_dir`.
#[async_trait::async_trait]
pub trait Host: Send + Sync + fmt::Debug {
    /// A short name for messages (`mgmt1`, `root@10.0.0.5:22`).
    fn name(&self) -> &str;

    /// Runs a command and returns what it printed and its exit code.
    ///
    /// # Errors
    /// [`HostError::Spawn`] when the program cannot start, [`HostError::Timeout`] when it runs
    /// past [`Cmd::timeout`], connection errors for remote hosts.
    async fn run(&self, cmd: &Cmd) -> Result<Output, HostError>;

    /// Reads a whole file.
    ///
    /// # Errors
    /// [`HostError::NotFound`] when it does not exist; other IO errors otherwise.
    async fn read(&self, path: &Path) -> Result<Vec<u8>, HostError>;

    /// Replaces a file atomically (see the trait's contract).
    ///
    /// # Errors
    /// [`HostError::NotFound`] when the directory does not exist; IO errors (disk full,
    /// permission) otherwise, after which the old file is intact.
    async fn write_atomic(
        &self,
        path: &Path,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), HostError>;

    /// Metadata of a path, without following a final symbolic link.
    ///
    /// # Errors
    /// [`HostError::NotFound`] when it does not exist.
    async fn stat(&self, path: &Path) -> Result<FileMeta, HostError>;

    /// The entries of a directory (without `.` and `..`), sorted by name.
    ///
    /// # Errors
    /// [`HostError::NotFound`] when the directory does not exist.
    async fn list_dir(&self, path: &Path) -> Result<Vec<DirEntry>, HostError>;

    /// Creates a directory and its missing parents with `mode` (existing ones are left alone).
    ///
    /// # Errors
    /// IO errors, for example a parent that is a file.
    async fn create_dir_all(&self, path: &Path, mode: u32) -> Result<(), HostError>;

    /// Removes a file (not a directory).
    ///
    /// # Errors
    /// [`HostError::NotFound`] when it does not exist.
    async fn remove_file(&self, path: &Path) -> Result<(), HostError>;
}

/// Conveniences for every [`Host`]. Implemented for all hosts; do not implement it yourself.
#[async_trait::async_trait]
pub trait HostExt: Host {
    /// Like [`Host::run`], but a non-zero exit becomes [`HostError::Failed`].
    ///
    /// # Errors
    /// What `run` returns, and [`HostError::Failed`] for a non-zero exit.
    async fn run_ok(&self, cmd: &Cmd) -> Result<Output, HostError> {
        let out = self.run(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(HostError::Failed {
                host: self.name().to_string(),
                cmd: cmd.to_string(),
                code: out.code,
                stderr: tail(&out.stderr, 400),
            })
        }
    }

    /// Reads a file as UTF-8 text.
    ///
    /// # Errors
    /// What `read` returns, and [`HostError::Protocol`] when the file is not UTF-8.
    async fn read_to_string(&self, path: &Path) -> Result<String, HostError> {
        let bytes = self.read(path).await?;
        String::from_utf8(bytes).map_err(|e| HostError::Protocol {
            host: self.name().to_string(),
            what: format!("{} is not UTF-8 text", path.display()),
            source: Some(Box::new(e)),
        })
    }

    /// Whether a path exists (as anything, links not followed).
    ///
    /// # Errors
    /// IO errors other than "not found".
    async fn exists(&self, path: &Path) -> Result<bool, HostError> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a file, or `None` when it does not exist.
    ///
    /// # Errors
    /// IO errors other than "not found".
    async fn read_opt(&self, path: &Path) -> Result<Option<Vec<u8>>, HostError> {
        match self.read(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl<T: Host + ?Sized> HostExt for T {}

/// Joins `root` and an absolute `path` so that `path` lives under `root` (`/srv/h1` +
/// `/etc/x` = `/srv/h1/etc/x`).
pub fn reroot(root: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    root.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_args_are_masked_in_display_and_debug() {
        let s = Secret::new("hunter2");
        let cmd = Cmd::new("mysql").arg("-p").secret_arg(&s);
        assert_eq!(cmd.to_string(), "mysql -p ***");
        assert!(!format!("{cmd:?}").contains("hunter2"));
        assert_eq!(cmd.argv().collect::<Vec<_>>(), ["-p", "hunter2"]);
    }

    #[test]
    fn shell_string_quotes_every_word() {
        let cmd = Cmd::new("echo")
            .arg("a b")
            .arg("$HOME")
            .arg("x;y")
            .arg("")
            .env("K", "v w");
        assert_eq!(cmd.to_shell(), "env 'K=v w' echo 'a b' '$HOME' 'x;y' ''");
    }

    #[test]
    fn reroot_places_absolute_paths_under_root() {
        assert_eq!(
            reroot(Path::new("/srv/h1"), Path::new("/etc/cloudstack")),
            PathBuf::from("/srv/h1/etc/cloudstack")
        );
    }
}
