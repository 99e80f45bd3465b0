//! `SshHost` logged in as an operator account that becomes root through `sudo`
//! ([`SshHostBuilder::sudo`](super::SshHostBuilder::sudo)).
//!
//! Every command runs as `sudo … -- sh -c SCRIPT`, a fixed script that reads the command line
//! from its standard input (base64, one line: never on a command line sudo logs), writes an
//! OK line to standard error and `exec`s the command. That first line on standard error tells
//! sudo's own refusals (wrong password, not in sudoers) apart from the command's failures, and
//! is removed from what the caller sees. With a password, sudo reads it from standard input
//! (`-S -p ''`, never from argv), followed by a sentinel line: the root shell reads lines up
//! to the sentinel, so the command's own input starts right after it whether sudo asked for
//! the password or not (a `NOPASSWD` rule, or the credential sudo caches for the session's
//! later commands, which spares each of them the password check). `sh`'s `read` takes one
//! byte at a time from a pipe, so nothing of the command's input is lost.
//!
//! SFTP would run as the login user, so file operations are small `sh` scripts under sudo with
//! the guarantees of the SFTP path: `write_atomic` writes a temporary file beside the target
//! (exclusive create, mode 0600), flushes it to disk (`sync FILE`: fsync), gives it the
//! existing file's owner and then its mode, and renames it over the target (`mv -f -T`,
//! rename(2)); a failure removes the temporary file. Errors are classified from the tools'
//! messages under `LC_ALL=C` into the same [`HostError`] kinds (`ENOENT`/`ENOTDIR` are
//! [`HostError::NotFound`], as OpenSSH's sftp-server maps them).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::host::{DirEntry, FileKind, FileMeta, tail};
use crate::local::temp_path_for;
use crate::{Cmd, HostError, Output, Secret, SudoRefusal, shell_quote};

use super::SshHost;

/// The line the root shell writes to standard error before the command starts.
const OK_MARKER: &str = "cs-upgrade-sudo:ok";
/// The line that follows the password on standard input.
const SENTINEL: &str = "cs-upgrade-sudo:stdin";

/// How an [`SshHost`] logged in as a non-root user becomes root: through `sudo`, with or
/// without a password. `Debug` never shows the password.
///
/// ```
/// use cs_core::{Secret, Sudo};
/// let s = Sudo::with_password(Secret::new("hunter2"));
/// assert!(!format!("{s:?}").contains("hunter2"));
/// assert!(Sudo::without_password().password().is_none());
/// ```
#[derive(Clone)]
pub struct Sudo {
    password: Option<Secret>,
}

impl fmt::Debug for Sudo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sudo")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Sudo {
    /// `sudo -n`: the sudoers rule needs no password (`NOPASSWD`); a rule that asks for one
    /// fails with [`SudoRefusal::PasswordRequired`].
    pub fn without_password() -> Self {
        Sudo { password: None }
    }

    /// `sudo -S`: the password is given to sudo on standard input (never on the command line),
    /// for every command.
    pub fn with_password(password: Secret) -> Self {
        Sudo {
            password: Some(password),
        }
    }

    /// The password, if any.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The shell line that runs `line` as root, and what goes first on its standard input.
    ///
    /// The command line itself goes on standard input too (base64, one line), never on sudo's
    /// command line: sudo logs the command it runs (`COMMAND=` in the auth log), and a
    /// command's arguments may hold a secret ([`Cmd::secret_arg`]). sudo logs only the fixed
    /// script.
    fn wrap(&self, line: &str) -> (String, Vec<u8>) {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(line);
        let run = format!(
            "IFS= read -r c || exit 125; c=$(printf '%s' \"$c\" | base64 -d) || exit 125; \
             printf '%s\\n' {OK_MARKER} >&2; eval \"exec $c\""
        );
        let mut stdin = Vec::with_capacity(line.len() * 4 / 3 + 64);
        let (sudo, script) = match &self.password {
            None => ("sudo -n", run),
            Some(pw) => {
                stdin.extend_from_slice(pw.expose().as_bytes());
                stdin.push(b'\n');
                stdin.extend_from_slice(SENTINEL.as_bytes());
                stdin.push(b'\n');
                (
                    "sudo -S -p ''",
                    format!(
                        "IFS= read -r l || exit 125; [ \"$l\" = {SENTINEL} ] || IFS= read -r l || \
                         exit 125; [ \"$l\" = {SENTINEL} ] || exit 125; l=; {run}"
                    ),
                )
            }
        };
        stdin.extend_from_slice(encoded.as_bytes());
        stdin.push(b'\n');
        (format!("{sudo} -- sh -c {}", shell_quote(&script)), stdin)
    }
}

/// The line (and its standard input) that kills a timed-out command's process group: as root,
/// since the command runs as root below the user's `sudo`.
pub(super) fn kill_line(sudo: Option<&Sudo>, pid: u32) -> (String, Vec<u8>) {
    match sudo {
        None => (
            format!("kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}"),
            Vec::new(),
        ),
        Some(s) => {
            // The line runs in `sh`, which may be dash: its `kill` takes no `--`.
            let kill = format!("kill -9 -{pid} 2>/dev/null || kill -9 {pid}");
            s.wrap(&format!("sh -c {}", shell_quote(&kill)))
        }
    }
}

/// Reads sudo's refusal from its standard error (sudo 1.8/1.9 messages, `LC_ALL=C`).
fn refusal(stderr: &[u8], code: i32) -> SudoRefusal {
    let text = String::from_utf8_lossy(stderr);
    let has = |s: &str| text.contains(s);
    if has("incorrect password") || has("Sorry, try again") {
        SudoRefusal::IncorrectPassword
    } else if has("not in the sudoers file") {
        SudoRefusal::NotInSudoers
    } else if has("a password is required")
        || has("a terminal is required")
        || has("no password was provided")
    {
        SudoRefusal::PasswordRequired
    } else if has("is not allowed to execute") || has("may not run sudo") {
        SudoRefusal::NotAllowed
    } else if has("must have a tty") {
        SudoRefusal::TtyRequired
    } else if code == 127 && (has("sudo: not found") || has("sudo: command not found")) {
        SudoRefusal::NotInstalled
    } else {
        // Only sudo's own lines: a line quoting the command (which may hold a secret
        // argument) is left out.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sudo:") && !l.contains("sh -c"))
            .collect();
        SudoRefusal::Other(format!(
            "exit code {code}: {}",
            tail(lines.join("; ").as_bytes(), 300)
        ))
    }
}

/// Where the OK marker line ends, if the root shell wrote it.
fn marker_end(stderr: &[u8]) -> Option<usize> {
    let m = format!("{OK_MARKER}\n");
    let m = m.as_bytes();
    stderr
        .windows(m.len())
        .enumerate()
        .find(|(i, w)| *w == m && (*i == 0 || stderr[i - 1] == b'\n'))
        .map(|(i, _)| i + m.len())
}

impl SshHost {
    /// Runs a shell `line` as root through sudo; `shown` names it in messages.
    async fn sudo_exec(
        &self,
        sudo: &Sudo,
        line: &str,
        shown: String,
        stdin: &[u8],
        limit: Option<Duration>,
    ) -> Result<Output, HostError> {
        if sudo
            .password
            .as_ref()
            .is_some_and(|p| p.expose().contains('\n'))
        {
            return Err(self.refused(SudoRefusal::Other(
                "the sudo password holds a line break, which `sudo -S` cannot read".into(),
            )));
        }
        let (wrapped, mut input) = sudo.wrap(line);
        input.extend_from_slice(stdin);
        let mut out = self
            .call(move |inner| {
                inner.with_conn(|conn| super::run_on(inner, conn, &wrapped, &shown, &input, limit))
            })
            .await?;
        match marker_end(&out.stderr) {
            Some(end) => {
                // sudo's own notices (a lecture, warnings) before the command started go too.
                out.stderr.drain(..end);
                Ok(out)
            }
            None => Err(self.refused(refusal(&out.stderr, out.code))),
        }
    }

    fn refused(&self, reason: SudoRefusal) -> HostError {
        HostError::Sudo {
            host: self.inner.name.clone(),
            user: self.inner.cfg.user.clone(),
            reason,
        }
    }

    /// [`Host::run`](crate::Host::run) as root.
    pub(super) async fn sudo_run(&self, sudo: &Sudo, cmd: &Cmd) -> Result<Output, HostError> {
        let limit = cmd.timeout_value().or(self.inner.cfg.command_timeout);
        let stdin = cmd.stdin_data().unwrap_or_default();
        tracing::debug!(host = %self.inner.name, cmd = %cmd, "run (sudo)");
        self.sudo_exec(sudo, &cmd.to_shell(), cmd.to_string(), stdin, limit)
            .await
    }

    /// Runs one of this module's file scripts as root with `args`; `op` and `path` name it.
    async fn sudo_script(
        &self,
        sudo: &Sudo,
        op: &'static str,
        path: &Path,
        script: &str,
        args: &[&str],
        stdin: &[u8],
    ) -> Result<Output, HostError> {
        let mut line = format!("sh -c {} cs-upgrade", shell_quote(script));
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let shown = format!("{op} {}", path.display());
        self.sudo_exec(sudo, &line, shown, stdin, self.inner.cfg.command_timeout)
            .await
    }

    fn path_str<'p>(&self, op: &'static str, path: &'p Path) -> Result<&'p str, HostError> {
        path.to_str().ok_or_else(|| HostError::Io {
            host: self.inner.name.clone(),
            op,
            path: path.to_path_buf(),
            source: std::io::Error::other("the path is not UTF-8"),
        })
    }

    /// A failed file script as the matching [`HostError`].
    fn file_error(&self, op: &'static str, path: &Path, out: &Output) -> HostError {
        let text = out.stderr_lossy();
        let host = self.inner.name.clone();
        let path = path.to_path_buf();
        if out.code == NOT_FOUND
            || text.contains("No such file or directory")
            || text.contains("Not a directory")
            || text.contains("Directory nonexistent")
        {
            HostError::NotFound { host, path }
        } else if text.contains("Permission denied") {
            HostError::PermissionDenied { host, path }
        } else {
            HostError::Io {
                host,
                op,
                path,
                source: std::io::Error::other(format!(
                    "exited with {}: {}",
                    out.code,
                    tail(&out.stderr, 300)
                )),
            }
        }
    }

    /// [`Host::read`](crate::Host::read) as root (`cat`).
    pub(super) async fn sudo_read(&self, sudo: &Sudo, path: &Path) -> Result<Vec<u8>, HostError> {
        let p = self.path_str("read", path)?;
        let out = self
            .sudo_script(sudo, "read", path, READ, &[p], &[])
            .await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(self.file_error("read", path, &out))
        }
    }

    /// [`Host::stat`](crate::Host::stat) as root (`stat`, links not followed).
    pub(super) async fn sudo_stat(&self, sudo: &Sudo, path: &Path) -> Result<FileMeta, HostError> {
        let p = self.path_str("stat", path)?;
        let out = self
            .sudo_script(sudo, "stat", path, STAT, &[p], &[])
            .await?;
        if !out.success() {
            return Err(self.file_error("stat", path, &out));
        }
        let text = out.stdout_lossy();
        parse_stat(text.trim_end()).ok_or_else(|| self.garbled("stat", path, &text))
    }

    fn garbled(&self, op: &'static str, path: &Path, text: &str) -> HostError {
        HostError::Io {
            host: self.inner.name.clone(),
            op,
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "unexpected output: {}",
                tail(text.as_bytes(), 200)
            )),
        }
    }

    /// [`Host::list_dir`](crate::Host::list_dir) as root (`find -printf`).
    pub(super) async fn sudo_list_dir(
        &self,
        sudo: &Sudo,
        path: &Path,
    ) -> Result<Vec<DirEntry>, HostError> {
        let p = self.path_str("list", path)?;
        let out = self
            .sudo_script(sudo, "list", path, LIST, &[p], &[])
            .await?;
        if !out.success() {
            return Err(self.file_error("list", path, &out));
        }
        let mut entries = Vec::new();
        for record in out.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let text = String::from_utf8_lossy(record);
            let entry = parse_entry(&text).ok_or_else(|| self.garbled("list", path, &text))?;
            entries.push(entry);
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// [`Host::create_dir_all`](crate::Host::create_dir_all) as root: each missing component
    /// made with `mode`, as the SFTP path does.
    pub(super) async fn sudo_create_dir_all(
        &self,
        sudo: &Sudo,
        path: &Path,
        mode: u32,
    ) -> Result<(), HostError> {
        self.path_str("mkdir", path)?;
        let mut prefixes = Vec::new();
        let mut cur = std::path::PathBuf::new();
        for comp in path.components() {
            cur.push(comp);
            prefixes.push(cur.to_string_lossy().into_owned());
        }
        let mode = format!("{:o}", mode & 0o7777);
        let mut args: Vec<&str> = vec![&mode];
        args.extend(prefixes.iter().map(String::as_str));
        let out = self
            .sudo_script(sudo, "mkdir", path, MKDIR, &args, &[])
            .await?;
        if out.success() {
            return Ok(());
        }
        if out.code == NOT_A_DIR {
            return Err(HostError::Io {
                host: self.inner.name.clone(),
                op: "mkdir",
                path: std::path::PathBuf::from(out.stderr_lossy().trim_end()),
                source: std::io::Error::other("exists and is not a directory"),
            });
        }
        Err(self.file_error("mkdir", path, &out))
    }

    /// [`Host::remove_file`](crate::Host::remove_file) as root (`rm`, never a directory).
    pub(super) async fn sudo_remove_file(&self, sudo: &Sudo, path: &Path) -> Result<(), HostError> {
        let p = self.path_str("remove", path)?;
        let out = self
            .sudo_script(sudo, "remove", path, REMOVE, &[p], &[])
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.file_error("remove", path, &out))
        }
    }

    /// [`Host::write_atomic`](crate::Host::write_atomic) as root (see the module's comment).
    pub(super) async fn sudo_write_atomic(
        &self,
        sudo: &Sudo,
        path: &Path,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), HostError> {
        let p = self.path_str("write", path)?;
        let tmp = temp_path_for(path);
        let t = self.path_str("write", &tmp)?;
        let mode = mode
            .map(|m| format!("{:o}", m & 0o7777))
            .unwrap_or_default();
        let out = self
            .sudo_script(sudo, "write", path, WRITE, &[p, t, &mode], data)
            .await?;
        if out.success() {
            return Ok(());
        }
        let op = match out.code {
            11 => "stat",
            12 => "create temporary file for",
            13 => "fsync",
            14 => "chown",
            15 => "chmod",
            16 => "rename",
            _ => "write",
        };
        Err(self.file_error(op, path, &out))
    }
}

/// Exit code of the scripts for a path that does not exist.
const NOT_FOUND: i32 = 66;
/// Exit code of the mkdir script for a component that exists and is no directory (its path
/// on standard error).
const NOT_A_DIR: i32 = 67;

/// `$1`: the file. A missing file (or a dangling link) is exit 66.
const READ: &str = r#"export LC_ALL=C
[ -e "$1" ] || exit 66
exec cat -- "$1""#;

/// `$1`: the path; prints `MODE_HEX UID GID SIZE MTIME` of the link itself.
const STAT: &str = r#"export LC_ALL=C
[ -e "$1" ] || [ -L "$1" ] || exit 66
exec stat -c '%f %u %g %s %Y' -- "$1""#;

/// `$1`: the directory (a link to one is followed, as SFTP's opendir does); one NUL-ended
/// record per entry: `TYPE MODE UID GID SIZE MTIME NAME`.
const LIST: &str = r#"export LC_ALL=C
[ -e "$1" ] || exit 66
[ -d "$1" ] || { echo "$1: Not a directory" >&2; exit 20; }
exec find -H "$1" -mindepth 1 -maxdepth 1 -printf '%y %m %U %G %s %T@ %f\0'"#;

/// `$1`: the mode (octal); then every prefix of the path, shortest first. A component that
/// exists as something else is exit 67 with its path on stderr.
const MKDIR: &str = r#"export LC_ALL=C
m=$1; shift
for p do
  [ -d "$p" ] && continue
  if [ -e "$p" ] || [ -L "$p" ]; then printf '%s\n' "$p" >&2; exit 67; fi
  mkdir -m "$m" -- "$p" 2>/dev/null || [ -d "$p" ] || mkdir -m "$m" -- "$p" || exit 1
done"#;

/// `$1`: the file; a directory is refused as SFTP's unlink refuses it.
const REMOVE: &str = r#"export LC_ALL=C
[ -e "$1" ] || [ -L "$1" ] || exit 66
if [ -d "$1" ] && [ ! -L "$1" ]; then echo "$1: Is a directory" >&2; exit 21; fi
exec rm -f -- "$1""#;

/// `$1`: the target, `$2`: the temporary file beside it, `$3`: the mode (octal) or empty to
/// keep the existing file's (0600 for a new file); the contents on stdin. Exit codes name the
/// step that failed (11 stat … 16 rename); the temporary file is removed on any failure.
const WRITE: &str = r#"export LC_ALL=C
p=$1 t=$2 m=$3 own=
if [ -e "$p" ]; then
  s=$(stat -L -c '%a %u %g' -- "$p") || exit 11
  set -- $s
  [ -n "$m" ] || m=$1
  own=$2:$3
fi
[ -n "$m" ] || m=600
fail() { rm -f -- "$t"; exit "$1"; }
(umask 077; set -C; exec cat > "$t") || fail 12
sync -- "$t" || fail 13
# Owner first: chown clears set-id bits, the mode below restores them.
if [ -n "$own" ]; then chown -- "$own" "$t" || fail 14; fi
chmod -- "$m" "$t" || fail 15
mv -f -T -- "$t" "$p" || fail 16"#;

/// Parses `MODE_HEX UID GID SIZE MTIME` (GNU `stat -c '%f %u %g %s %Y'`).
fn parse_stat(text: &str) -> Option<FileMeta> {
    let mut f = text.split(' ');
    let raw = u32::from_str_radix(f.next()?, 16).ok()?;
    let kind = match raw & 0o170_000 {
        0o100_000 => FileKind::File,
        0o040_000 => FileKind::Dir,
        0o120_000 => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let meta = FileMeta {
        kind,
        mode: raw & 0o7777,
        uid: f.next()?.parse().ok()?,
        gid: f.next()?.parse().ok()?,
        size: f.next()?.parse().ok()?,
        mtime: f.next()?.parse().ok()?,
    };
    f.next().is_none().then_some(meta)
}

/// Parses one `TYPE MODE UID GID SIZE MTIME NAME` record of GNU `find -printf`
/// (`%y %m %U %G %s %T@ %f`); the name may hold spaces.
fn parse_entry(text: &str) -> Option<DirEntry> {
    let mut f = text.splitn(7, ' ');
    let kind = match f.next()? {
        "f" => FileKind::File,
        "d" => FileKind::Dir,
        "l" => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let mode = u32::from_str_radix(f.next()?, 8).ok()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let size = f.next()?.parse().ok()?;
    let mtime = f.next()?;
    let mtime = mtime.split('.').next()?.parse().ok()?;
    let name = f.next()?.to_string();
    Some(DirEntry {
        name,
        meta: FileMeta {
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            size,
            mtime,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_to_stdin_never_to_the_line() {
        let s = Sudo::with_password(Secret::new("pa ss'word"));
        let (line, stdin) = s.wrap("cat secret-arg");
        assert!(
            !line.contains("pa ss") && !line.contains("secret-arg"),
            "{line}"
        );
        assert!(line.starts_with("sudo -S -p '' -- sh -c "), "{line}");
        // "cat secret-arg" in base64.
        assert_eq!(
            stdin,
            format!("pa ss'word\n{SENTINEL}\nY2F0IHNlY3JldC1hcmc=\n").as_bytes()
        );
        let (line, stdin) = Sudo::without_password().wrap("cat secret-arg");
        assert!(line.starts_with("sudo -n -- sh -c "), "{line}");
        assert!(!line.contains("secret-arg"), "{line}");
        assert_eq!(stdin, b"Y2F0IHNlY3JldC1hcmc=\n");
        let (_, stdin) = kill_line(Some(&s), 42);
        assert!(stdin.starts_with(b"pa ss'word\n"));
        assert_eq!(kill_line(None, 42).1, b"");
    }

    #[test]
    fn refusals_are_read_from_sudo_messages() {
        let cases: [(&str, i32, SudoRefusal); 6] = [
            (
                "Sorry, try again.\nsudo: 3 incorrect password attempts\n",
                1,
                SudoRefusal::IncorrectPassword,
            ),
            (
                "op is not in the sudoers file.  This incident will be reported.\n",
                1,
                SudoRefusal::NotInSudoers,
            ),
            (
                "sudo: a password is required\n",
                1,
                SudoRefusal::PasswordRequired,
            ),
            (
                "Sorry, user op is not allowed to execute '/bin/sh -c x' as root on h.\n",
                1,
                SudoRefusal::NotAllowed,
            ),
            ("sh: 1: sudo: not found\n", 127, SudoRefusal::NotInstalled),
            (
                "sudo: unable to stat /etc/sudoers: Permission denied\n",
                1,
                SudoRefusal::Other(
                    "exit code 1: sudo: unable to stat /etc/sudoers: Permission denied".into(),
                ),
            ),
        ];
        for (stderr, code, want) in cases {
            assert_eq!(refusal(stderr.as_bytes(), code), want, "{stderr}");
        }
    }

    #[test]
    fn the_marker_counts_only_at_a_line_start() {
        assert_eq!(
            marker_end(format!("{OK_MARKER}\nrest").as_bytes()),
            Some(19)
        );
        assert_eq!(
            marker_end(format!("lecture\n{OK_MARKER}\n").as_bytes()),
            Some(27)
        );
        assert_eq!(marker_end(format!("x{OK_MARKER}\n").as_bytes()), None);
    }

    #[test]
    fn stat_and_find_records_parse() {
        let m = parse_stat("81a4 0 0 12 1700000000").expect("parses");
        assert_eq!((m.kind, m.mode, m.size), (FileKind::File, 0o644, 12));
        assert_eq!(
            parse_stat("41ed 1 2 4096 5").map(|m| m.kind),
            Some(FileKind::Dir)
        );
        assert_eq!(
            parse_stat("a1ff 0 0 3 5").map(|m| m.kind),
            Some(FileKind::Symlink)
        );
        assert!(parse_stat("zz 0 0 0 0").is_none());
        let e = parse_entry("f 4755 0 0 5 1700000000.5 two words").expect("parses");
        assert_eq!(e.name, "two words");
        assert_eq!((e.meta.kind, e.meta.mode), (FileKind::File, 0o4755));
        assert!(parse_entry("f 644 0 0").is_none());
    }
}
