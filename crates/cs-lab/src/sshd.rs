//! A real OpenSSH server on 127.0.0.1 with its own keys, config and temporary directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cs_core::{HostError, Secret, SshHost, SshHostBuilder, Sudo};

use crate::util::{alive, command, find_binary, free_port, log_tail, token, wait_ready};
use crate::{LabError, Result};

/// The `PATH` commands get over SSH after the stand-in directory.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An OpenSSH server started for the lab: `sshd -D` on a free 127.0.0.1 port with a fresh host
/// key, a fresh client key authorized for every user (root included), and a known_hosts file
/// for strict host-key checking. Stopped, and its temporary directory removed, on drop.
///
/// It describes one simulated node: [`SshServer::root`] is the node's re-rooted filesystem
/// (commands see it as `$CS_LAB_ROOT`), and [`SshServer::bin_dir`] comes first in the `PATH`
/// of every command run over SSH, so stand-ins placed there (a fake `systemctl`) win.
///
/// [`SshServer::freeze`] makes the node go silent the way a hung machine or a dropped network
/// path does: nothing is refused, nothing answers.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use cs_core::{Cmd, HostExt};
/// let server = cs_lab::SshServer::start()?;
/// let host = server.connect().await?;
/// host.run_ok(&Cmd::new("true")).await?;
/// # Ok(()) }
/// ```
pub struct SshServer {
    child: Option<Child>,
    frozen: AtomicBool,
    watchdog: Option<Watchdog>,
    dir: tempfile::TempDir,
    port: u16,
    addr: String,
    root: PathBuf,
    bin: PathBuf,
    password_login: Option<(String, Secret)>,
    bastion: bool,
    locked_key: bool,
}

impl fmt::Debug for SshServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshServer")
            .field("addr", &self.addr)
            .field("dir", &self.dir.path())
            .field("root", &self.root)
            .field(
                "password_user",
                &self.password_login.as_ref().map(|(u, _)| u),
            )
            .finish()
    }
}

/// Options for an [`SshServer`]; see [`SshServer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct SshServerBuilder {
    root: Option<PathBuf>,
    path_prefix: Option<PathBuf>,
    password_user: Option<String>,
    bastion: bool,
    locked_key: bool,
}

impl SshServerBuilder {
    /// The simulated node's root directory (default: `root/` in the server's temporary
    /// directory). Created if missing; a directory given here is not removed on drop.
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    /// The directory put first in the `PATH` of commands run over SSH, for stand-in commands
    /// (default: `bin/` in the server's temporary directory). Created if missing.
    pub fn path_prefix(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path_prefix = Some(dir.into());
        self
    }

    /// Also allows password login for `user`, with a random password
    /// ([`SshServer::password`]). The user is created if missing (`useradd`) and its password
    /// set (`chpasswd`): this changes the machine's `/etc/passwd` and `/etc/shadow`, needs
    /// root, and is meant for a dedicated test user. Use one user name per test binary, since
    /// each server sets a new password.
    pub fn password_login(mut self, user: impl Into<String>) -> Self {
        self.password_user = Some(user.into());
        self
    }

    /// Makes the server a bastion (a jump host): it only forwards TCP connections to
    /// 127.0.0.1 (`ssh -J`, `direct-tcpip` channels); every command and SFTP session is refused
    /// (`ForceCommand` of a program that prints a refusal and exits 1).
    pub fn bastion(mut self) -> Self {
        self.bastion = true;
        self
    }

    /// Also authorizes an ed25519 client key protected by a random passphrase
    /// ([`SshServer::locked_key`]), the passphrase in a file of its own (mode 0600,
    /// [`SshServer::locked_key_passphrase_file`]).
    pub fn locked_key(mut self) -> Self {
        self.locked_key = true;
        self
    }

    /// Starts the server and waits until it listens.
    ///
    /// # Errors
    /// [`LabError::MissingBinary`] naming `openssh-server` or `openssh-client` when `sshd` or
    /// `ssh-keygen` is not installed; [`LabError::Start`] with the end of sshd's log when it
    /// does not come up; [`LabError::Io`] for file errors.
    pub fn start(self) -> Result<SshServer> {
        start(&self)
    }
}

impl SshServer {
    /// Starts a server with default options.
    ///
    /// # Errors
    /// As [`SshServerBuilder::start`].
    pub fn start() -> Result<SshServer> {
        SshServer::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> SshServerBuilder {
        SshServerBuilder::default()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The private key authorized for every user (ECDSA P-256, no passphrase).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("id_ecdsa")
    }

    /// The passphrase-protected client key, when the server was built with
    /// [`SshServerBuilder::locked_key`].
    pub fn locked_key(&self) -> Option<PathBuf> {
        self.locked_key
            .then(|| self.dir.path().join("id_ed25519_locked"))
    }

    /// The file holding [`SshServer::locked_key`]'s passphrase (mode 0600, no newline).
    pub fn locked_key_passphrase_file(&self) -> Option<PathBuf> {
        self.locked_key
            .then(|| self.dir.path().join("id_ed25519_locked.passphrase"))
    }

    /// Whether the server is a bastion ([`SshServerBuilder::bastion`]).
    pub fn is_bastion(&self) -> bool {
        self.bastion
    }

    /// A known_hosts file holding this server's key as `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The server's public host key file (`ssh-ed25519 AAAA… comment`).
    pub fn host_key_pub(&self) -> PathBuf {
        self.dir.path().join("host_ed25519.pub")
    }

    /// The simulated node's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory first in `PATH` for commands run over SSH.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The server's temporary directory (config, keys, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log (`-e` output).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    /// The user allowed to log in with a password, if any.
    pub fn password_user(&self) -> Option<&str> {
        self.password_login.as_ref().map(|(u, _)| u.as_str())
    }

    /// That user's password, if any.
    pub fn password(&self) -> Option<&Secret> {
        self.password_login.as_ref().map(|(_, p)| p)
    }

    /// Authorizes another public key (one `authorized_keys` line) for every user.
    ///
    /// # Errors
    /// [`LabError::Io`] when the file cannot be written.
    pub fn authorize_key(&self, public_key_line: &str) -> Result<()> {
        let path = self.dir.path().join("authorized_keys");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
        writeln!(f, "{}", public_key_line.trim())
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))
    }

    /// A builder for an [`SshHost`] on this server: user `root`, the client key, strict
    /// checking against [`SshServer::known_hosts`], named `lab-ssh:PORT`.
    pub fn host_builder(&self) -> SshHostBuilder {
        SshHost::builder(self.addr.clone())
            .user("root")
            .key_file(self.client_key())
            .known_hosts(self.known_hosts())
            .connect_timeout(Duration::from_secs(10))
            .name(format!("lab-ssh:{}", self.port))
    }

    /// A builder for an [`SshHost`] on this server logged in as the lab's operator account
    /// ([`operator`]: `cs-lab-op`, the client key) that runs everything as root through
    /// `sudo` with the operator's password, named `lab-ssh:PORT`.
    ///
    /// # Errors
    /// What [`operator`] returns.
    pub fn sudo_host_builder(&self) -> Result<SshHostBuilder> {
        let op = operator()?;
        Ok(self
            .host_builder()
            .user(op.user())
            .sudo(Sudo::with_password(op.password().clone())))
    }

    /// Connects as root with the client key and strict host-key checking.
    ///
    /// # Errors
    /// What [`SshHostBuilder::connect`] returns.
    pub async fn connect(&self) -> std::result::Result<SshHost, HostError> {
        self.host_builder().connect().await
    }

    /// Makes the node go silent: stops (`SIGSTOP`) the sshd listener and every process below it
    /// (the sessions and the commands they run). A command in progress stops answering half-way;
    /// a new connection is accepted by the kernel and then hangs without a greeting, never
    /// refused. Undone by [`SshServer::thaw`], and on drop.
    ///
    /// # Errors
    /// [`LabError::Io`] when `kill` cannot be run.
    pub fn freeze(&self) -> Result<()> {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return Ok(());
        };
        self.frozen.store(true, Ordering::SeqCst);
        // The listener first, so it forks no new session; then what runs below it, pass after
        // pass until a pass finds nothing new (a stopped process forks nothing more).
        signal("STOP", &[pid])?;
        let mut stopped = BTreeSet::from([pid]);
        for _ in 0..100 {
            let new: Vec<u32> = descendants(pid)
                .into_iter()
                .filter(|p| !stopped.contains(p))
                .collect();
            if new.is_empty() {
                break;
            }
            signal("STOP", &new)?;
            stopped.extend(new);
        }
        Ok(())
    }

    /// Lets a [`SshServer::freeze`]d node go on (`SIGCONT` to the listener and everything below
    /// it): stopped commands resume, waiting connections get their greeting.
    ///
    /// # Errors
    /// [`LabError::Io`] when `kill` cannot be run.
    pub fn thaw(&self) -> Result<()> {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return Ok(());
        };
        let mut all = descendants(pid);
        all.push(pid);
        signal("CONT", &all)?;
        self.frozen.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the node is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

/// Sends `SIG<name>` to `pids`; a process that is gone meanwhile is no error.
fn signal(name: &str, pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    command(Path::new("/bin/kill"))
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(drop)
        .map_err(|e| LabError::io(format!("send SIG{name}"), e))
}

/// Every process below `pid`, following the parent links in `/proc/<pid>/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        if let Some(ppid) = parent_of(&stat) {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// The parent pid in a `/proc/<pid>/stat` line: the second field after the command name, which
/// is in parentheses and may itself hold spaces and parentheses.
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for SshServer {
    fn drop(&mut self) {
        // Never leave stopped processes behind (a stopped sshd would not even see its TERM).
        if self.is_frozen() {
            let _ = self.thaw();
        }
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = command(Path::new("/bin/kill"))
                .arg("-TERM")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            for _ in 0..40 {
                if !alive(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Stopped the ordinary way: the watchdog has nothing left to do.
        drop(self.watchdog.take());
    }
}

/// Stops a server and removes its directory once this process is gone, however it goes (lab
/// servers shared by a test binary live in statics, which are never dropped).
///
/// The watchdog is a shell blocked reading a pipe whose only writer is this process: the pipe
/// reaches end of file when the process exits, even by `SIGKILL`. It costs nothing while it
/// waits, where a watchdog polling every half second would, for a hundred lab hosts, start
/// hundreds of processes a second and take a good share of a small machine from the
/// benchmarks run on it.
struct Watchdog(Child);

const WATCHDOG: &str = r#"
pid=$1; dir=$2
# A line: the server was stopped the ordinary way. End of file: this process is gone.
read -r _ && exit 0
# Only stop an sshd of this directory: the pid may have been reused if sshd died meanwhile.
case $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) in
  *"$dir"*)
    # A frozen server (SshServer::freeze) would not act on its TERM.
    kill -CONT "$pid" 2>/dev/null
    kill -TERM "$pid" 2>/dev/null
    i=0
    while [ -r "/proc/$pid/status" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" && [ $i -lt 100 ]; do
      sleep 0.1; i=$((i+1))
    done
    kill -KILL "$pid" 2>/dev/null ;;
esac
rm -rf "$dir"
"#;

impl Watchdog {
    fn start(pid: u32, dir: &Path) -> Result<Watchdog> {
        let sh = find_binary("sh", "dash")?;
        let mut cmd = command(&sh);
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("cs-lab-sshd-watchdog")
            .arg(pid.to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: a Ctrl-C to the tests must not stop it before it cleans up.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn()
            .map(Watchdog)
            .map_err(|e| LabError::io("start lab sshd watchdog", e))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.0.stdin.take() {
            let _ = pipe.write_all(b"stopped\n");
        }
        let _ = self.0.wait();
    }
}

/// The SSH server shared by every test of this test binary (default options), started on
/// first use.
///
/// # Panics
/// When the server cannot start: a test that needs sshd fails (never skips) with the reason,
/// for example the Debian package to install.
pub fn sshd() -> &'static SshServer {
    static SHARED: OnceLock<SshServer> = OnceLock::new();
    SHARED.get_or_init(|| match SshServer::start() {
        Ok(s) => s,
        Err(e) => panic!("cannot start the lab sshd: {}", cs_core::error_chain(&e)),
    })
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> LabError {
    let what = format!("{what} {}", path.display());
    move |e| LabError::io(what, e)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

fn run_tool(what: &str, cmd: &mut std::process::Command, stdin: Option<&str>) -> Result<()> {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::io(format!("run {what}"), e))?;
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), stdin) {
        pipe.write_all(data.as_bytes())
            .map_err(|e| LabError::io(format!("write to {what}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("run {what}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Start {
            what: what.to_string(),
            detail: format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Makes a key pair of `kind` (`ssh-keygen -t`).
fn keygen(keygen: &Path, kind: &str, file: &Path, comment: &str) -> Result<()> {
    run_tool(
        "ssh-keygen",
        command(keygen)
            .args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
            .arg(file),
        None,
    )
}

/// A passphrase-protected ed25519 key (`ssh-keygen -N`: OpenSSH format, aes256-ctr, bcrypt)
/// with its passphrase in `<file>.passphrase` (mode 0600).
fn keygen_locked(keygen: &Path, file: &Path) -> Result<()> {
    let passphrase = token(24);
    let pass_file = file.with_extension("passphrase");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pass_file)
            .map_err(io("create", &pass_file))?;
        f.write_all(passphrase.as_bytes())
            .map_err(io("write", &pass_file))?;
    }
    run_tool(
        "ssh-keygen",
        command(keygen)
            .args(["-q", "-t", "ed25519", "-C", "cs-lab-locked", "-N"])
            .arg(&passphrase)
            .arg("-f")
            .arg(file),
        None,
    )
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn start(opts: &SshServerBuilder) -> Result<SshServer> {
    let sshd = find_binary("sshd", "openssh-server")?;
    let keygen_bin = find_binary("ssh-keygen", "openssh-client")?;
    let dir = tempfile::Builder::new()
        .prefix("cslab-ssh-")
        .tempdir_in("/tmp")
        .map_err(|e| LabError::io("create sshd directory", e))?;
    let d = dir.path().to_path_buf();
    // Readable by every user: authorized_keys is checked as the user logging in.
    set_mode(&d, 0o755)?;
    keygen(
        &keygen_bin,
        "ed25519",
        &d.join("host_ed25519"),
        "cs-lab-host",
    )?;
    // The client key is ECDSA P-256 (ssh-keygen's default size for ecdsa): sshd verifies every
    // login's signature, ed25519 ones with OpenSSH's own portable code and ECDSA ones with
    // OpenSSL's, and on the lab's shared cores that is about 1 ms of sshd CPU a connection
    // less (measured with an sshd configured as here and `ssh` in a loop, its CPU from
    // /proc/PID/stat). Both are key types operators use.
    keygen(&keygen_bin, "ecdsa", &d.join("id_ecdsa"), "cs-lab-client")?;
    let authorized = d.join("authorized_keys");
    std::fs::copy(d.join("id_ecdsa.pub"), &authorized).map_err(io("copy", &authorized))?;
    if opts.locked_key {
        let locked = d.join("id_ed25519_locked");
        keygen_locked(&keygen_bin, &locked)?;
        let line = std::fs::read_to_string(locked.with_extension("pub"))
            .map_err(io("read", &locked.with_extension("pub")))?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&authorized)
            .map_err(io("open", &authorized))?;
        f.write_all(line.as_bytes())
            .map_err(io("write", &authorized))?;
    }
    set_mode(&authorized, 0o644)?;

    let root = opts.root.clone().unwrap_or_else(|| d.join("root"));
    let bin = opts.path_prefix.clone().unwrap_or_else(|| d.join("bin"));
    for p in [&root, &bin] {
        std::fs::create_dir_all(p).map_err(io("create", p))?;
    }
    // sshd's privilege-separation directory.
    std::fs::create_dir_all("/run/sshd").map_err(io("create", Path::new("/run/sshd")))?;

    let password_login = match &opts.password_user {
        Some(user) => Some((user.clone(), set_password(user)?)),
        None => None,
    };

    let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub"))
        .map_err(io("read", &d.join("host_ed25519.pub")))?;
    let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let log = d.join("sshd.log");
    let config = d.join("sshd_config");

    let mut last_err = None;
    for _ in 0..5 {
        let port = free_port()?;
        let mut text = config_text(&d, port, &root, &bin, password_login.is_some());
        if opts.bastion {
            // DEBUG1 logs each forward (`server_request_direct_tcpip: … target 127.0.0.1 port
            // N`); sshd takes the first LogLevel it reads.
            text = text.replace("LogLevel VERBOSE", "LogLevel DEBUG1");
            text.push_str(&bastion_text(&d)?);
        }
        std::fs::write(&config, text).map_err(io("write", &config))?;
        // By default sshd execs itself afresh for every connection (new address-space layout
        // per connection), which costs an exec of sshd and its libraries each time. A lab
        // server on loopback does not need that, and `-r` turns it off where this sshd still
        // has the option; the config check tells.
        let no_rexec = run_tool(
            "sshd -t -r (config check)",
            command(&sshd).arg("-t").arg("-r").arg("-f").arg(&config),
            None,
        )
        .is_ok();
        if !no_rexec {
            run_tool(
                "sshd -t (config check)",
                command(&sshd).arg("-t").arg("-f").arg(&config),
                None,
            )?;
        }
        let log_file = std::fs::File::create(&log).map_err(io("create", &log))?;
        let log_err = log_file.try_clone().map_err(io("open", &log))?;
        // sshd must be started by absolute path; -D: foreground, -e: log to stderr.
        let mut cmd = command(&sshd);
        cmd.arg("-D").arg("-e");
        if no_rexec {
            cmd.arg("-r");
        }
        let mut child = cmd
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| LabError::io("start sshd", e))?;
        let watchdog = match Watchdog::start(child.id(), &d) {
            Ok(w) => w,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let listening = format!("Server listening on 127.0.0.1 port {port}");
        let ready = wait_ready("sshd", &mut child, &log, Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&listening))
        });
        match ready {
            Ok(()) => {
                let known = d.join("known_hosts");
                std::fs::write(
                    &known,
                    format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
                )
                .map_err(io("write", &known))?;
                tracing::debug!(port, dir = %d.display(), "lab sshd ready");
                return Ok(SshServer {
                    child: Some(child),
                    frozen: AtomicBool::new(false),
                    watchdog: Some(watchdog),
                    dir,
                    port,
                    addr: format!("127.0.0.1:{port}"),
                    root,
                    bin,
                    password_login,
                    bastion: opts.bastion,
                    locked_key: opts.locked_key,
                });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                drop(watchdog);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if !(text.contains("Address already in use") || text.contains("Cannot bind")) {
                    return Err(e);
                }
                // Another process took the port between probe and bind: try another.
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| LabError::Timeout {
        what: format!("sshd ({})", log_tail(&log)),
    }))
}

/// sshd's configuration. `SetEnv` puts the stand-in directory first in `PATH` and names the
/// node's root; `SHLVL=1` makes bash skip `~/.bashrc` (it sources it only for a top-level shell
/// started by sshd), so the machine's own shell setup neither slows every command down nor
/// reorders `PATH` in front of the stand-ins. The one key exchange offered is ECDH on P-256,
/// which OpenSSH does in OpenSSL: its own curve25519 code (libssh2's first choice) costs the
/// server about 2 ms of CPU more per connection and its default, the post-quantum
/// sntrup761x25519 (OpenSSH clients' first choice), about 8 ms more, which a lab of a hundred
/// hosts on a couple of cores feels. Every client here, libssh2 and OpenSSH, has P-256.
fn config_text(d: &Path, port: u16, root: &Path, bin: &Path, password: bool) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {authorized}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication {pw}\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin yes\n\
         StrictModes no\n\
         UsePAM no\n\
         UseDNS no\n\
         KexAlgorithms ecdh-sha2-nistp256\n\
         MaxStartups 100:30:200\n\
         MaxSessions 100\n\
         Subsystem sftp internal-sftp\n\
         SetEnv \"PATH={bin}:{SYSTEM_PATH}\" \"CS_LAB_ROOT={root}\" SHLVL=1\n\
         LogLevel VERBOSE\n",
        host_key = d.join("host_ed25519").display(),
        pid = d.join("sshd.pid").display(),
        authorized = d.join("authorized_keys").display(),
        pw = yes_no(password),
        bin = bin.display(),
        root = root.display(),
    )
}

/// The lines that make a server a bastion: TCP forwarding to 127.0.0.1 only, nothing else.
/// `ForceCommand` also replaces the SFTP subsystem (`sshd_config(5)`), so no file is served.
/// Written as a script of its own: `ForceCommand` runs through the user's shell.
fn bastion_text(d: &Path) -> Result<String> {
    let refuse = d.join("bastion-refuse");
    std::fs::write(
        &refuse,
        "#!/bin/sh\necho 'this bastion only forwards connections' >&2\nexit 1\n",
    )
    .map_err(io("write", &refuse))?;
    set_mode(&refuse, 0o755)?;
    Ok(format!(
        "AllowTcpForwarding local\n\
         PermitOpen 127.0.0.1:*\n\
         X11Forwarding no\n\
         PermitTTY no\n\
         ForceCommand {}\n",
        refuse.display()
    ))
}

/// Creates `user` if missing and gives it a new random password.
fn set_password(user: &str) -> Result<Secret> {
    if !is_root() {
        return Err(LabError::Start {
            what: format!("password login for `{user}`"),
            detail: "creating the user and setting its password needs root".into(),
        });
    }
    let valid = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(LabError::Start {
            what: format!("password login for `{user}`"),
            detail: "user names must be lowercase letters, digits, `-` and `_`".into(),
        });
    }
    ensure_user(user)?;
    let password = Secret::new(token(24));
    chpasswd(user, &password)?;
    Ok(password)
}

/// Creates `user` (with a home and `/bin/sh`) unless `/etc/passwd` has it; whether it existed.
fn ensure_user(user: &str) -> Result<bool> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.split(':').next() == Some(user)) {
        return Ok(true);
    }
    let useradd = find_binary("useradd", "passwd")?;
    run_tool(
        "useradd",
        command(&useradd).args(["-m", "-s", "/bin/sh", user]),
        None,
    )?;
    Ok(false)
}

/// Sets `user`'s password (`chpasswd`, the password on its standard input).
fn chpasswd(user: &str, password: &Secret) -> Result<()> {
    let chpasswd = find_binary("chpasswd", "passwd")?;
    run_tool(
        "chpasswd",
        &mut command(&chpasswd),
        Some(&format!("{user}:{}\n", password.expose())),
    )
}

/// A login account of this machine for lab nodes reached as an operator would reach them:
/// not root, `sudo` to root with its password. See [`operator`].
pub struct LabOperator {
    user: String,
    password: Secret,
    password_file: PathBuf,
}

impl fmt::Debug for LabOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabOperator")
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

impl LabOperator {
    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Its login and sudo password.
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// A file holding the password (mode 0600, owned by root), for configs that name a
    /// secret file.
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }
}

/// The user every lab node can be reached as instead of root.
pub const OPERATOR_USER: &str = "cs-lab-op";
/// A user whose sudoers rule needs no password (`NOPASSWD`), for `sudo -n`.
pub const NOPASSWD_USER: &str = "cs-lab-op-np";
/// A user with a password but no sudoers entry, for tests of sudo's refusal.
pub const NO_SUDO_USER: &str = "cs-lab-nosudo";
/// Where the lab keeps its accounts' passwords (root only).
const ACCOUNTS_DIR: &str = "/var/lib/cs-lab";

/// The lab's operator account [`OPERATOR_USER`] (`cs-lab-op`): created if missing
/// (`useradd`), its password random, set once (`chpasswd`) and kept in a root-only file, and a
/// sudoers entry (`/etc/sudoers.d/cs-lab-op`, checked with `visudo`) that lets it run anything
/// as root after giving that password. The entry also keeps `PATH` and `CS_LAB_ROOT` through
/// sudo (`env_keep`, no `secure_path`), so the stand-ins of a lab node win under sudo as they
/// do for root over SSH. This changes the machine's users and sudoers and needs root.
///
/// Idempotent, and safe from parallel test binaries: the work is done under an exclusive
/// lock, and an existing account keeps its password (a test binary running never sees it
/// change). Done once per process.
///
/// # Errors
/// [`LabError::MissingBinary`] naming `sudo` or `passwd`; [`LabError::Start`] when not root or
/// a tool fails; IO errors.
pub fn operator() -> Result<&'static LabOperator> {
    static OP: OnceLock<std::result::Result<LabOperator, String>> = OnceLock::new();
    once(&OP, OPERATOR_USER, Some("ALL"))
}

/// The account `user` (with the sudoers `rule`, or none), set up once per process.
fn once(
    cell: &'static OnceLock<std::result::Result<LabOperator, String>>,
    user: &str,
    rule: Option<&str>,
) -> Result<&'static LabOperator> {
    cell.get_or_init(|| account(user, rule).map_err(|e| cs_core::error_chain(&e)))
        .as_ref()
        .map_err(|e| LabError::Start {
            what: format!("the lab account `{user}`"),
            detail: e.clone(),
        })
}

/// Like [`operator`], for [`NO_SUDO_USER`] (`cs-lab-nosudo`): an account with a password and
/// no sudoers entry (one left from elsewhere is removed).
///
/// # Errors
/// As [`operator`].
pub fn operator_without_sudo() -> Result<&'static LabOperator> {
    static OP: OnceLock<std::result::Result<LabOperator, String>> = OnceLock::new();
    once(&OP, NO_SUDO_USER, None)
}

/// Like [`operator`], for [`NOPASSWD_USER`] (`cs-lab-op-np`): sudo to root without a
/// password (a `NOPASSWD` rule), for `sudo -n`.
///
/// # Errors
/// As [`operator`].
pub fn operator_nopasswd() -> Result<&'static LabOperator> {
    static OP: OnceLock<std::result::Result<LabOperator, String>> = OnceLock::new();
    once(&OP, NOPASSWD_USER, Some("NOPASSWD: ALL"))
}

/// The sudoers entry of a lab operator; `rule` is what it may run (`ALL`, `NOPASSWD: ALL`).
fn sudoers_text(user: &str, rule: &str) -> String {
    format!(
        "# cs-lab: the lab's operator account (written by cs_lab::operator).\n\
         {user} ALL=(ALL:ALL) {rule}\n\
         Defaults:{user} !secure_path, !lecture, env_keep += \"PATH CS_LAB_ROOT\"\n"
    )
}

fn account(user: &str, rule: Option<&str>) -> Result<LabOperator> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !is_root() {
        return Err(LabError::Start {
            what: format!("the lab account `{user}`"),
            detail: "creating users and sudoers entries needs root".into(),
        });
    }
    find_binary("sudo", "sudo")?;
    let visudo = find_binary("visudo", "sudo")?;
    let dir = Path::new(ACCOUNTS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    // Held until the end of this function (dropping the file releases it).
    lock.lock().map_err(io("lock", &lock_path))?;

    let exists = ensure_user(user)?;
    let password_file = dir.join(format!("{user}.password"));
    let password = match std::fs::read_to_string(&password_file) {
        Ok(text) if exists && !text.trim().is_empty() => Secret::new(text.trim_end()),
        _ => {
            let password = Secret::new(token(24));
            chpasswd(user, &password)?;
            let tmp = dir.join(format!(".{user}.password.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(password.expose().as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io("write", &tmp))?;
            std::fs::rename(&tmp, &password_file).map_err(io("rename", &password_file))?;
            password
        }
    };

    let sudoers_dir = Path::new("/etc/sudoers.d");
    let entry = sudoers_dir.join(user);
    if let Some(rule) = rule {
        let text = sudoers_text(user, rule);
        if std::fs::read_to_string(&entry).ok().as_deref() != Some(text.as_str()) {
            std::fs::create_dir_all(sudoers_dir).map_err(io("create", sudoers_dir))?;
            // sudo skips files whose names contain a dot: the temporary file is never read.
            let tmp = sudoers_dir.join(format!(".{user}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o440)
                .open(&tmp)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(io("write", &tmp))?;
            if let Err(e) = run_tool("visudo -c", command(&visudo).arg("-cqf").arg(&tmp), None) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &entry).map_err(io("rename", &entry))?;
        }
    } else {
        match std::fs::remove_file(&entry) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io(format!("remove {}", entry.display()), e)),
        }
    }
    Ok(LabOperator {
        user: user.to_string(),
        password,
        password_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_is_read_past_the_command_name() {
        assert_eq!(parent_of("42 (sshd) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("43 (a b) (c)) R 9 43 43 0 -1"), Some(9));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn a_missing_sshd_names_the_package() {
        let err = find_binary("cs-lab-no-such-sshd", "openssh-server").expect_err("missing");
        assert!(err.to_string().contains("openssh-server"), "{err}");
    }

    #[test]
    fn config_puts_stand_ins_first_in_path() {
        let text = config_text(
            Path::new("/tmp/d"),
            2222,
            Path::new("/srv/node"),
            Path::new("/srv/bin"),
            false,
        );
        assert!(text.contains(&format!(
            "SetEnv \"PATH=/srv/bin:{SYSTEM_PATH}\" \"CS_LAB_ROOT=/srv/node\" SHLVL=1\n"
        )));
        assert!(text.contains("PasswordAuthentication no\n"));
        assert!(text.contains("ListenAddress 127.0.0.1\n"));
    }
}
