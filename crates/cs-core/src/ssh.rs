//! `SshHost`: a machine over SSH (libssh2): commands on exec channels, files over SFTP.
//!
//! libssh2 blocks, so every call into it runs on tokio's blocking pool. One session per host is
//! kept behind a mutex and reused; operations on one `SshHost` therefore run one after another
//! (open several `SshHost`s to the same machine for parallel work).

use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ssh2::{
    CheckResult, ErrorCode, FileStat, HashType, KnownHostFileKind, MethodType, OpenFlags, OpenType,
    RenameFlags, Session, Sftp,
};

use crate::host::{DirEntry, FileKind, FileMeta, tail};
use crate::local::temp_path_for;
use crate::{BoxError, Cmd, Deadlines, Host, HostError, Output, Secret, shell_quote};

#[path = "ssh_sudo.rs"]
mod ssh_sudo;
pub use ssh_sudo::Sudo;

/// The deadline of the `mv` that completes an atomic write.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a killed command's channel to close after a timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// The default deadline of a command without its own [`Cmd::timeout`]: generous (package
/// upgrades run for minutes), but never forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

// libssh2 error codes (`LIBSSH2_ERROR_*`, `LIBSSH2_FX_*`).
const ERR_SOCKET_NONE: i32 = -1;
const ERR_SOCKET_SEND: i32 = -7;
const ERR_FILE: i32 = -16;
const ERR_TIMEOUT: i32 = -9;
const ERR_SOCKET_DISCONNECT: i32 = -13;
const ERR_SOCKET_TIMEOUT: i32 = -30;
const ERR_EAGAIN: i32 = -37;
const ERR_SOCKET_RECV: i32 = -43;
const ERR_BAD_SOCKET: i32 = -45;
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_OP_UNSUPPORTED: i32 = 8;
const FX_NO_SUCH_PATH: i32 = 10;

/// One way to authenticate, tried in the order they were added to the builder.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    KeyFile {
        path: PathBuf,
        passphrase: Option<Secret>,
    },
    Agent {
        socket: Option<PathBuf>,
    },
    Password(Secret),
}

/// Builds and connects an [`SshHost`]; see [`SshHost::builder`].
///
/// Secrets (password, key passphrase) are kept as [`Secret`]s: `Debug` prints `***`.
#[derive(Debug, Clone)]
#[must_use]
pub struct SshHostBuilder {
    pub(crate) addr: String,
    pub(crate) user: String,
    /// Whether [`SshHostBuilder::user`] was called (it wins over an ssh config `User`).
    pub(crate) user_set: bool,
    pub(crate) name: Option<String>,
    pub(crate) auth: Vec<Auth>,
    pub(crate) known_hosts: Option<PathBuf>,
    pub(crate) accept_new: bool,
    pub(crate) connect_timeout: Duration,
    command_timeout: Option<Duration>,
    pub(crate) deadlines: Deadlines,
    pub(crate) nodelay: bool,
    pub(crate) quickack: bool,
    /// The bastions to go through, first hop first (OpenSSH `ProxyJump`).
    pub(crate) jumps: Vec<crate::ssh_jump::Hop>,
    /// The OpenSSH client configuration to honour, if any.
    pub(crate) ssh_config: Option<PathBuf>,
    /// The passphrase of identity files named by the ssh config (and of bastions' inherited
    /// keys).
    pub(crate) identity_passphrase: Option<Secret>,
    /// Whether `auth` was inherited from the host a bastion leads to (the ssh config's
    /// `IdentityFile`s for the bastion then come first).
    pub(crate) auth_inherited: bool,
    /// How many bastions lead to this one (a loop in an ssh config ends at a bound).
    pub(crate) depth: u8,
    sudo: Option<Sudo>,
}

impl SshHostBuilder {
    /// The user to log in as (default `root`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self.user_set = true;
        self
    }

    /// Authenticates with a private key file (OpenSSH or PEM format, no passphrase; a
    /// protected key fails with [`HostError::Key`]).
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth.push(Auth::KeyFile {
            path: path.into(),
            passphrase: None,
        });
        self
    }

    /// Authenticates with a private key file protected by a passphrase (OpenSSH format with
    /// `ssh-keygen`'s default cipher `aes256-ctr`, or PEM). A wrong passphrase fails with
    /// [`HostError::Key`] naming the file, once no other method was accepted. For a key in
    /// ssh-agent, use [`SshHostBuilder::agent`] instead.
    pub fn key_file_with_passphrase(
        mut self,
        path: impl Into<PathBuf>,
        passphrase: Secret,
    ) -> Self {
        self.auth.push(Auth::KeyFile {
            path: path.into(),
            passphrase: Some(passphrase),
        });
        self
    }

    /// Authenticates with the keys of the ssh-agent at `$SSH_AUTH_SOCK`.
    ///
    /// Without any authentication method the agent is tried, as `ssh` does.
    pub fn agent(mut self) -> Self {
        self.auth.push(Auth::Agent { socket: None });
        self
    }

    /// Authenticates with the keys of the ssh-agent listening on `socket`.
    pub fn agent_socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.auth.push(Auth::Agent {
            socket: Some(socket.into()),
        });
        self
    }

    /// Authenticates with a password.
    pub fn password(mut self, password: Secret) -> Self {
        self.auth.push(Auth::Password(password));
        self
    }

    /// The known_hosts file the host key is checked against (default `~/.ssh/known_hosts`).
    /// Entries for ports other than 22 use OpenSSH's `[host]:port` form.
    pub fn known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }

    /// Whether a host whose key is not in the known_hosts file is accepted, its key appended to
    /// the file (default `false`: unknown hosts are refused). A key that differs from the
    /// recorded one is refused either way.
    pub fn accept_new_host_keys(mut self, accept: bool) -> Self {
        self.accept_new = accept;
        self
    }

    /// How long TCP connect, SSH handshake and authentication may take together (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A timeout for commands without their own [`Cmd::timeout`] (default 1 hour).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// Commands without their own [`Cmd::timeout`] may run forever, as long as the node
    /// answers keepalives.
    pub fn no_command_timeout(mut self) -> Self {
        self.command_timeout = None;
        self
    }

    /// How long the node may stay silent (default [`Deadlines::default`]): TCP keepalive and
    /// `TCP_USER_TIMEOUT` on the socket, and, while a command runs, SSH keepalive requests
    /// every quarter of [`Deadlines::reply`] (at least two seconds); a node that sends nothing,
    /// answers included, for a whole [`Deadlines::reply`] counts as dead and the command fails
    /// naming it.
    pub fn deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Whether the session's socket sends small packets at once (`TCP_NODELAY`, default on).
    /// Off, Nagle's algorithm holds a request back until the peer's delayed ACK of the one
    /// before it, which stalls the first exchanges of a session by about 40 ms on Linux (the
    /// benchmark `bench-fleet --mode first-op` measures both).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Whether what the node sends is acknowledged at once (`TCP_QUICKACK` after every read,
    /// Linux; default on). OpenSSH's sshd turns Nagle's algorithm off on its side only when
    /// the first session starts (`ssh_packet_set_interactive` in its `packet.c`); until then
    /// it holds a small packet (the channel-open confirmation) back until our ACK of the one
    /// before it (the `hostkeys-00@openssh.com` notice it sends after authentication), which a
    /// delayed ACK keeps back for about 40 ms: the first command of every fresh session
    /// stalls that long even with [`SshHostBuilder::tcp_nodelay`] on (the benchmark
    /// `bench-fleet --mode first-op` measures it).
    pub fn tcp_quickack(mut self, on: bool) -> Self {
        self.quickack = on;
        self
    }

    /// Runs every command, and every file operation, as root through `sudo` on the host, for a
    /// [`SshHostBuilder::user`] that is not root (default: none, the user's own rights). File
    /// operations then go through commands under sudo instead of SFTP, with the same
    /// guarantees; sudo's refusals are [`HostError::Sudo`].
    pub fn sudo(mut self, sudo: Sudo) -> Self {
        self.sudo = Some(sudo);
        self
    }

    /// The name used in messages (default `user@addr`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Connects through a bastion (OpenSSH's `ProxyJump`): the bastion is reached with its own
    /// builder (user, port, keys, known_hosts), a `direct-tcpip` channel is opened from it to
    /// this host's address, and this host's SSH session runs over that channel, its key still
    /// checked against this builder's known_hosts under this host's own name. Called more than
    /// once, the hops chain, first call first (`ProxyJump a,b`). The connect timeout covers
    /// every hop together; the bastion's keepalives and silence bound are its own builder's.
    /// A bastion that cannot be reached fails the connection with an error naming it.
    pub fn proxy_jump(mut self, bastion: SshHostBuilder) -> Self {
        self.jumps
            .push(crate::ssh_jump::Hop::Builder(Box::new(bastion)));
        self
    }

    /// Connects through a bastion given as `[user@]host[:port]` (see
    /// [`SshHostBuilder::proxy_jump`]). The bastion inherits this builder's authentication,
    /// known_hosts file and its policy, timeouts, deadlines and ssh config; its user is the
    /// one in `spec`, else the ssh config's `User` for it, else this builder's user.
    pub fn proxy_jump_via(mut self, spec: crate::JumpSpec) -> Self {
        self.jumps.push(crate::ssh_jump::Hop::Spec(spec));
        self
    }

    /// Honours the `Host`, `HostName`, `User`, `Port`, `IdentityFile` and `ProxyJump` entries
    /// of an OpenSSH client configuration file for this host (the builder's address, without
    /// its port, is the name matched against `Host` patterns) and its bastions; see
    /// [`crate::SshConfig`]. What is set on the builder wins: an explicit port in the address,
    /// [`SshHostBuilder::user`], any authentication method (then no `IdentityFile` is used),
    /// [`SshHostBuilder::proxy_jump`]. The file is read at connect time; identity files that
    /// do not exist are skipped, as `ssh` does.
    pub fn ssh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssh_config = Some(path.into());
        self
    }

    /// [`SshHostBuilder::ssh_config`] with `~/.ssh/config`, when that file exists.
    pub fn use_ssh_config(mut self) -> Self {
        if let Some(p) = crate::SshConfig::default_path().filter(|p| p.is_file()) {
            self.ssh_config = Some(p);
        }
        self
    }

    /// The passphrase for identity files that come from the ssh config
    /// ([`SshHostBuilder::ssh_config`]); keys given with [`SshHostBuilder::key_file`] or
    /// [`SshHostBuilder::key_file_with_passphrase`] keep their own.
    pub fn identity_passphrase(mut self, passphrase: Secret) -> Self {
        self.identity_passphrase = Some(passphrase);
        self
    }

    /// Connects, checks the host key and authenticates.
    ///
    /// # Errors
    /// [`HostError::Connect`] or [`HostError::Timeout`] (both naming the address) when the host
    /// cannot be reached or does not speak SSH within the connect timeout,
    /// [`HostError::HostKey`] when its key is unknown or changed, [`HostError::Auth`] when no
    /// method was accepted, [`HostError::Key`] when a key's passphrase is wrong or missing,
    /// [`HostError::SshConfig`] when the ssh config cannot be read. Through a bastion,
    /// [`HostError::Connect`] naming the bastion, with the bastion's own error as its source.
    pub async fn connect(self) -> Result<SshHost, HostError> {
        let name = self.display_name();
        let cfg = {
            let name = name.clone();
            spawn(&name.clone(), move || {
                crate::ssh_config::resolve(self, &name)
            })
            .await?
        };
        let inner = Arc::new(Inner {
            name,
            cfg,
            conn: Mutex::new(None),
        });
        let task = inner.clone();
        spawn(&inner.name, move || {
            let (session, heard) = connect_blocking(&task.cfg, &task.name)?;
            *lock(&task.conn) = Some(Conn {
                session,
                sftp: None,
                heard,
            });
            Ok(())
        })
        .await?;
        Ok(SshHost { inner })
    }

    /// The name in messages: [`SshHostBuilder::name`], else `user@addr`.
    pub(crate) fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}@{}", self.user, self.addr))
    }

    fn known_hosts_path(&self) -> PathBuf {
        self.known_hosts.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
            home.join(".ssh").join("known_hosts")
        })
    }
}

/// A machine over SSH: commands run through the remote user's shell with every argument quoted
/// ([`Cmd::to_shell`]), files go over SFTP.
///
/// Host keys are checked strictly against a known_hosts file; accepting unknown keys is an
/// explicit option. One SSH session is kept and reused (reconnecting once when it died), so an
/// `Arc<SshHost>` can be shared by many tasks; their operations take turns on the session.
///
/// ```no_run
/// # async fn demo() -> Result<(), cs_core::HostError> {
/// use cs_core::{Cmd, HostExt, SshHost};
/// let host = SshHost::builder("10.0.0.5:22")
///     .user("root")
///     .key_file("/root/.ssh/id_ed25519")
///     .name("kvm1")
///     .connect()
///     .await?;
/// host.run_ok(&Cmd::new("systemctl").arg("is-active").arg("cloudstack-agent")).await?;
/// # Ok(()) }
/// ```
pub struct SshHost {
    inner: Arc<Inner>,
}

impl fmt::Debug for SshHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshHost")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.cfg.addr)
            .field("user", &self.inner.cfg.user)
            .finish()
    }
}

impl SshHost {
    /// A builder for a host at `addr` (`host:port`, `[v6]:port`, or `host` for port 22).
    pub fn builder(addr: impl Into<String>) -> SshHostBuilder {
        SshHostBuilder {
            addr: addr.into(),
            user: "root".into(),
            user_set: false,
            name: None,
            auth: Vec::new(),
            known_hosts: None,
            accept_new: false,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Some(COMMAND_TIMEOUT),
            deadlines: Deadlines::default(),
            nodelay: true,
            quickack: true,
            sudo: None,
            jumps: Vec::new(),
            ssh_config: None,
            identity_passphrase: None,
            auth_inherited: false,
            depth: 0,
        }
    }

    /// The address connected to, as given to the builder.
    pub fn addr(&self) -> &str {
        &self.inner.cfg.addr
    }

    /// The user logged in as.
    pub fn user(&self) -> &str {
        &self.inner.cfg.user
    }

    async fn call<T, F>(&self, f: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, HostError> + Send + 'static,
    {
        let inner = self.inner.clone();
        spawn(&self.inner.name, move || f(&inner)).await
    }
}

async fn spawn<T, F>(name: &str, f: F) -> Result<T, HostError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, HostError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HostError::Protocol {
            host: name.to_string(),
            what: "SSH task panicked or was cancelled".into(),
            source: Some(Box::new(e)),
        })?
}

struct Inner {
    name: String,
    cfg: SshHostBuilder,
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    session: Session,
    sftp: Option<Sftp>,
    /// When the node last sent anything.
    heard: Arc<Heard>,
}

impl Conn {
    fn sftp(&mut self) -> Result<&Sftp, ssh2::Error> {
        if self.sftp.is_none() {
            self.sftp = Some(self.session.sftp()?);
        }
        match &self.sftp {
            Some(s) => Ok(s),
            None => Err(ssh2::Error::unknown()),
        }
    }
}

/// How an operation on the session failed.
enum Fail {
    /// The session is dead and nothing happened yet: reconnect and try again.
    Retry(ssh2::Error),
    /// The session is unusable after this error: drop it, report the error.
    Broken(HostError),
    /// An ordinary failure; the session is fine.
    Host(HostError),
}

fn lock(m: &Mutex<Option<Conn>>) -> std::sync::MutexGuard<'_, Option<Conn>> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            // A panic mid-operation leaves the session in an unknown state: start afresh.
            let mut g = poisoned.into_inner();
            *g = None;
            g
        }
    }
}

impl Inner {
    /// Runs `op` on the session, connecting first if needed, reconnecting once if it died.
    fn with_conn<T>(
        &self,
        mut op: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, HostError> {
        let mut guard = lock(&self.conn);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = match guard.as_mut() {
                Some(c) => c,
                None => {
                    let (session, heard) = connect_blocking(&self.cfg, &self.name)?;
                    guard.insert(Conn {
                        session,
                        sftp: None,
                        heard,
                    })
                }
            };
            conn.session.set_blocking(true);
            conn.session.set_timeout(millis(self.cfg.deadlines.reply));
            let heard = Arc::clone(&conn.heard);
            match op(conn) {
                Ok(v) => return Ok(v),
                Err(Fail::Host(e)) => return Err(self.blame_bastion(&heard, e)),
                Err(Fail::Broken(e)) => {
                    drop_conn(&mut guard);
                    return Err(self.blame_bastion(&heard, e));
                }
                Err(Fail::Retry(e)) => {
                    drop_conn(&mut guard);
                    if attempt >= 2 {
                        return Err(HostError::Protocol {
                            host: self.name.clone(),
                            what: format!("SSH connection to {} lost", self.cfg.addr),
                            source: Some(Box::new(e)),
                        });
                    }
                    tracing::debug!(host = %self.name, error = %e, "SSH session died; reconnecting");
                }
            }
        }
    }

    /// Through a bastion, a timeout or a lost connection may be the bastion's doing: the
    /// bastion is given one keepalive period (and a second) to show it is alive, and named
    /// first if it does not. A live bastion answers the relay's keepalive requests within
    /// that time even while nothing else moves.
    fn blame_bastion(&self, heard: &Heard, e: HostError) -> HostError {
        let Some(via) = heard.via.as_ref() else {
            return e;
        };
        if !matches!(e, HostError::Timeout { .. } | HostError::Protocol { .. })
            || e.to_string().contains(via.name.as_str())
        {
            return e;
        }
        let start = Instant::now();
        let patience = via.patience + Duration::from_secs(1);
        while start.elapsed() < patience {
            if via.heard.silent_for() < start.elapsed() {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let bastion = heard
            .silent_bastion()
            .unwrap_or(via.name.as_str())
            .to_string();
        HostError::Protocol {
            host: self.name.clone(),
            what: format!(
                "the bastion {bastion} on the way to {} stopped answering",
                self.cfg.addr
            ),
            source: Some(Box::new(e)),
        }
    }

    fn fail(&self, op: &'static str, path: &Path, e: ssh2::Error) -> Fail {
        if is_dead(&e) {
            Fail::Broken(HostError::Protocol {
                host: self.name.clone(),
                what: format!(
                    "SSH connection to {} lost during {op} {}",
                    self.cfg.addr,
                    path.display()
                ),
                source: Some(Box::new(e)),
            })
        } else if is_timeout(&e) {
            Fail::Broken(HostError::Timeout {
                host: self.name.clone(),
                what: format!("{op} {}", path.display()),
                after: self.cfg.deadlines.reply,
            })
        } else {
            Fail::Host(sftp_error(&self.name, op, path, e))
        }
    }

    /// Like [`Inner::fail`], but a dead session before any change is retried.
    fn fail_first(&self, op: &'static str, path: &Path, e: ssh2::Error) -> Fail {
        if is_dead(&e) {
            Fail::Retry(e)
        } else {
            self.fail(op, path, e)
        }
    }

    fn io_fail(&self, op: &'static str, path: &Path, e: std::io::Error) -> Fail {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return Fail::Broken(HostError::Timeout {
                host: self.name.clone(),
                what: format!("{op} {}", path.display()),
                after: self.cfg.deadlines.reply,
            });
        }
        Fail::Host(HostError::from_io(&self.name, op, path, e))
    }

    fn sftp<'c>(&self, conn: &'c mut Conn, path: &Path) -> Result<&'c Sftp, Fail> {
        conn.sftp().map_err(|e| {
            if is_dead(&e) {
                Fail::Retry(e)
            } else {
                Fail::Host(HostError::Protocol {
                    host: self.name.clone(),
                    what: format!("cannot start SFTP for {}", path.display()),
                    source: Some(Box::new(e)),
                })
            }
        })
    }
}

/// Drops a broken session without waiting on its node: the connection is cut first, so that
/// libssh2 closing its channels finds a closed socket instead of waiting for answers.
fn drop_conn(guard: &mut Option<Conn>) {
    if let Some(conn) = guard.take() {
        conn.heard.cut();
        conn.session.set_timeout(millis(KILL_GRACE));
        drop(conn);
    }
}

pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

fn is_dead(e: &ssh2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Session(
            ERR_SOCKET_NONE
                | ERR_SOCKET_SEND
                | ERR_SOCKET_DISCONNECT
                | ERR_SOCKET_TIMEOUT
                | ERR_SOCKET_RECV
                | ERR_BAD_SOCKET
        )
    )
}

fn is_dead_or_timeout(e: &HostError) -> bool {
    match e {
        HostError::Protocol {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<ssh2::Error>()
            .is_some_and(|e| is_dead(e) || is_timeout(e)),
        _ => false,
    }
}

pub(crate) fn is_timeout(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::Session(ERR_TIMEOUT))
}

fn is_eagain(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::Session(ERR_EAGAIN))
}

fn is_not_found(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH))
}

fn sftp_error(host: &str, op: &'static str, path: &Path, e: ssh2::Error) -> HostError {
    match e.code() {
        ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH) => HostError::NotFound {
            host: host.to_string(),
            path: path.to_path_buf(),
        },
        ErrorCode::SFTP(FX_PERMISSION_DENIED) => HostError::PermissionDenied {
            host: host.to_string(),
            path: path.to_path_buf(),
        },
        _ => HostError::Io {
            host: host.to_string(),
            op,
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Connecting.

/// Splits `host:port`, `[v6]:port` or `host` into host and port.
pub(crate) fn split_addr(addr: &str) -> (String, u16) {
    if let Some(rest) = addr.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(22);
        return (host.to_string(), port);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host.to_string(), p),
            Err(_) => (addr.to_string(), 22),
        },
        _ => (addr.to_string(), 22),
    }
}

/// The host's name in known_hosts: `host` for port 22, `[host]:port` otherwise.
fn known_hosts_entry(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

pub(crate) fn connect_blocking(
    cfg: &SshHostBuilder,
    name: &str,
) -> Result<(Session, Arc<Heard>), HostError> {
    let addr = cfg.addr.as_str();
    let start = Instant::now();
    let left = || cfg.connect_timeout.saturating_sub(start.elapsed());
    let timeout = |what: String| HostError::Timeout {
        host: name.to_string(),
        what,
        after: cfg.connect_timeout,
    };
    let connect_err = |source: BoxError| HostError::Connect {
        host: name.to_string(),
        addr: addr.to_string(),
        source,
    };
    let (host, port) = split_addr(addr);
    let (local, heard) = if cfg.jumps.is_empty() {
        tcp_transport(cfg, name, &host, port, start)?
    } else {
        crate::ssh_jump::transport(cfg, name, &host, port, start)?
    };

    // A bastion's session is driven by the channel relay, which waits on its socket. Only
    // there: the clone keeps the socket open, so the relay threads of a session that was simply
    // dropped would wait for an end of file that never comes (a bastion's are ended by the
    // channel relay cutting its connection).
    if cfg.depth > 0
        && let Ok(end) = local.try_clone()
    {
        let _ = heard.session_end.set(end);
    }
    let mut session = Session::new().map_err(|e| connect_err(Box::new(e)))?;
    session.set_tcp_stream(local);
    session.set_timeout(millis(left()));
    let known_hosts = cfg.known_hosts_path();
    let entry = known_hosts_entry(&host, port);
    prefer_known_key_types(&session, &known_hosts, &entry);
    session.handshake().map_err(|e| {
        if is_timeout(&e) || start.elapsed() >= cfg.connect_timeout {
            timeout(format!("SSH handshake with {addr}"))
        } else {
            connect_err(Box::new(e))
        }
    })?;
    verify_host_key(&session, cfg, name, &host, port, &known_hosts)?;
    session.set_timeout(millis(left()));
    authenticate(&session, cfg, name).map_err(|e| match e {
        HostError::Auth { .. } if start.elapsed() >= cfg.connect_timeout => {
            timeout(format!("SSH authentication with {addr}"))
        }
        e => e,
    })?;
    session.set_timeout(0);
    // Only now: configured before the handshake, libssh2 fails the key exchange.
    session.set_keepalive(true, keepalive_secs(&cfg.deadlines));
    tracing::debug!(host = %name, addr, user = %cfg.user, "SSH session established");
    Ok((session, heard))
}

/// A TCP connection to `host:port` behind a [`relay`].
fn tcp_transport(
    cfg: &SshHostBuilder,
    name: &str,
    host: &str,
    port: u16,
    start: Instant,
) -> Result<(std::os::unix::net::UnixStream, Arc<Heard>), HostError> {
    let addr = cfg.addr.as_str();
    let left = || cfg.connect_timeout.saturating_sub(start.elapsed());
    let timeout = |what: String| HostError::Timeout {
        host: name.to_string(),
        what,
        after: cfg.connect_timeout,
    };
    let connect_err = |source: BoxError| HostError::Connect {
        host: name.to_string(),
        addr: addr.to_string(),
        source,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| connect_err(Box::new(e)))?
        .collect();
    let mut last: Option<std::io::Error> = None;
    let mut tcp = None;
    for a in &addrs {
        let remaining = left();
        if remaining.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(a, remaining) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(t), _) => t,
        (None, Some(e)) if e.kind() != std::io::ErrorKind::TimedOut => {
            return Err(connect_err(Box::new(e)));
        }
        (None, Some(_)) => return Err(timeout(format!("TCP connect to {addr}"))),
        (None, None) if addrs.is_empty() => {
            return Err(connect_err("the name resolved to no address".into()));
        }
        (None, None) => return Err(timeout(format!("TCP connect to {addr}"))),
    };
    // No Nagle: SSH's small request/reply packets would otherwise wait for delayed ACKs.
    if let Err(e) = tcp.set_nodelay(cfg.nodelay) {
        tracing::debug!(addr, error = %e, "cannot set TCP_NODELAY");
    }
    // A dead path or host: the kernel notices (keepalive while idle, unacknowledged data
    // while busy).
    let _ = cfg.deadlines.apply(&tcp);
    relay(tcp, name, cfg.quickack).map_err(|e| connect_err(Box::new(e)))
}

/// SSH keepalive requests go out every quarter of a reply period while the session waits
/// (libssh2 counts in whole seconds and makes 1 into 2), so that a live node answers several
/// before the silence bound. libssh2's blocking calls (SFTP) also give up when a keepalive
/// they sent goes unanswered for an interval (`_libssh2_wait_socket` in libssh2's
/// `session.c`).
pub(crate) fn keepalive_secs(d: &Deadlines) -> u32 {
    u32::try_from((d.reply / 4).as_secs())
        .unwrap_or(u32::MAX)
        .max(2)
}

/// The bastion a connection goes through.
#[derive(Debug)]
pub(crate) struct Via {
    /// Its name in messages.
    pub(crate) name: String,
    /// When it last sent a byte.
    pub(crate) heard: Arc<Heard>,
    /// How often its keepalive requests go out.
    pub(crate) patience: Duration,
}

/// When a node last sent a byte, kept by [`relay`] (or, through a bastion, by the channel
/// relay of `ssh_jump`).
#[derive(Debug)]
pub(crate) struct Heard {
    /// The node's socket (a TCP connection, or the socket pair end of a bastion's channel
    /// relay), to cut a dead connection.
    sock: socket2::Socket,
    start: Instant,
    /// Milliseconds from `start` to the last byte received.
    last: std::sync::atomic::AtomicU64,
    /// The bastion this connection goes through.
    via: Option<Via>,
    /// A clone of the socket libssh2 runs the session on, to wait on it (`ssh_jump`).
    pub(crate) session_end: std::sync::OnceLock<std::os::unix::net::UnixStream>,
}

impl Heard {
    pub(crate) fn new(sock: socket2::Socket, via: Option<Via>) -> Heard {
        Heard {
            sock,
            start: Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
            via,
            session_end: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// The first bastion on the way that has been silent for longer than a live one can be
    /// (its keepalive period and a second), if any.
    fn silent_bastion(&self) -> Option<&str> {
        let via = self.via.as_ref()?;
        via.heard.silent_bastion().or_else(|| {
            (via.heard.silent_for() > via.patience + Duration::from_secs(1))
                .then_some(via.name.as_str())
        })
    }

    pub(crate) fn cut(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    pub(crate) fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Puts a relay between libssh2 and the node's socket that notes when the node last sent
/// anything: libssh2 sends keepalive requests but does not tell whether they are answered
/// (OpenSSH's `ServerAliveCountMax` does), and a node whose kernel still acknowledges while
/// `sshd` is hung (a stopped process, a stalled VM device) is otherwise never noticed. Two
/// threads copy between the socket and one end of a local socket pair; libssh2 gets the other
/// end. They end when the session closes its end (or the node closes the connection). With
/// `quickack`, every read is acknowledged at once (see [`SshHostBuilder::tcp_quickack`]).
/// Each thread blocks in `read` and writes what it got at once: the relay adds a thread
/// wake-up per packet (microseconds), no buffering delay.
fn relay(
    tcp: TcpStream,
    name: &str,
    quickack: bool,
) -> std::io::Result<(std::os::unix::net::UnixStream, Arc<Heard>)> {
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    let (ours, theirs) = UnixStream::pair()?;
    let heard = Arc::new(Heard::new(
        socket2::Socket::from(std::os::fd::OwnedFd::from(tcp.try_clone()?)),
        None,
    ));
    let (tcp_in, mut tcp_out) = (tcp.try_clone()?, tcp);
    let (mut local_out, mut local_in) = (ours.try_clone()?, ours);
    let for_down = Arc::clone(&heard);
    let short: String = name.chars().take(10).collect();
    std::thread::Builder::new()
        .name(format!("ssh<{short}"))
        .spawn(move || {
            let mut tcp_in = tcp_in;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tcp_in.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        for_down.now();
                        if quickack {
                            quick_ack(&tcp_in);
                        }
                        if local_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = local_out.shutdown(Shutdown::Write);
        })?;
    std::thread::Builder::new()
        .name(format!("ssh>{short}"))
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match local_in.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tcp_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // The session is gone: so is the connection, which also ends the other thread.
            let _ = tcp_out.shutdown(Shutdown::Both);
            let _ = local_in.shutdown(Shutdown::Both);
        })?;
    Ok((theirs, heard))
}

/// Acknowledges what was received at once and keeps the socket in quick-ACK mode for what
/// comes next (Linux resets the mode by itself, hence after every read).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn quick_ack(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quick_ack(_tcp: &TcpStream) {}

/// Restricts the host key algorithms to the types recorded for this host, so a host with
/// several keys presents one that can be checked (plain-text entries only).
fn prefer_known_key_types(session: &Session, known_hosts: &Path, entry: &str) {
    let Ok(text) = std::fs::read_to_string(known_hosts) else {
        return;
    };
    let mut types = known_key_types(&text, entry);
    let supported = session
        .supported_algs(MethodType::HostKey)
        .unwrap_or_default();
    types.retain(|t| supported.contains(&t.as_str()));
    if !types.is_empty() {
        let _ = session.method_pref(MethodType::HostKey, &types.join(","));
    }
}

/// One line of a known_hosts file, split as OpenSSH reads it (`sshd(8)`, "SSH_KNOWN_HOSTS FILE
/// FORMAT"; OpenSSH `hostfile.c`): an optional marker (`@revoked`, `@cert-authority`), the
/// host patterns, the key type and the key.
struct KnownLine<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    kind: &'a str,
    key: &'a str,
}

fn known_lines(text: &str) -> impl Iterator<Item = KnownLine<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let first = fields.next()?;
        if first.starts_with('#') {
            return None;
        }
        let (marker, hosts) = match first.strip_prefix('@') {
            Some(m) => (Some(m), fields.next()?),
            None => (None, first),
        };
        Some(KnownLine {
            marker,
            hosts,
            kind: fields.next()?,
            key: fields.next()?,
        })
    })
}

/// Whether the host patterns of a known_hosts line name `entry` (`host` or `[host]:port`, as
/// [`known_hosts_entry`] writes it): a hashed name (`|1|salt|hash`, HMAC-SHA1 of the name
/// keyed with the salt, as `ssh-keygen -H` writes), or a comma-separated list of patterns
/// with `*` and `?`, where a matching `!pattern` excludes the host (OpenSSH `match.c`,
/// `match_hostname`).
fn hosts_match(hosts: &str, entry: &str) -> bool {
    if let Some(hashed) = hosts.strip_prefix("|1|") {
        return hashed_match(hashed, entry);
    }
    let entry = entry.to_ascii_lowercase();
    let mut matched = false;
    for pattern in hosts.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), entry.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(pattern.as_bytes(), entry.as_bytes()),
        }
    }
    matched
}

fn hashed_match(salt_and_hash: &str, entry: &str) -> bool {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(entry.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` wildcards.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// The host key algorithms recorded for `entry` (plain or hashed lines, markers skipped), in
/// file order; RSA keys allow the SHA-2 signatures first.
fn known_key_types(text: &str, entry: &str) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for line in known_lines(text) {
        if line.marker.is_some() || !hosts_match(line.hosts, entry) {
            continue;
        }
        let names: &[&str] = if line.kind == "ssh-rsa" {
            &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        } else {
            &[line.kind]
        };
        for n in names {
            if !types.iter().any(|t| t == n) {
                types.push((*n).to_string());
            }
        }
    }
    types
}

/// Whether `key` (the public key blob) is on a `@revoked` line for `entry`: OpenSSH refuses
/// such a key whatever else the file says (`sshconnect.c`, `check_host_key`, `HOST_REVOKED`).
fn revoked(text: &str, entry: &str, key: &[u8]) -> bool {
    let key = base64(key, true);
    known_lines(text).any(|line| {
        line.marker == Some("revoked") && line.key == key && hosts_match(line.hosts, entry)
    })
}

fn verify_host_key(
    session: &Session,
    cfg: &SshHostBuilder,
    name: &str,
    host: &str,
    port: u16,
    file: &Path,
) -> Result<(), HostError> {
    let refuse = |reason: String| HostError::HostKey {
        host: name.to_string(),
        addr: cfg.addr.clone(),
        reason,
    };
    let Some((key, _)) = session.host_key() else {
        return Err(refuse("the server sent no host key".into()));
    };
    let key_type = key_type_name(key).unwrap_or("unknown");
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64(h, false)))
        .unwrap_or_default();
    let entry = known_hosts_entry(host, port);
    let mut known = session
        .known_hosts()
        .map_err(|e| refuse(format!("cannot load known hosts: {e}")))?;
    match std::fs::read_to_string(file) {
        Ok(text) => {
            if revoked(&text, &entry, key) {
                return Err(refuse(format!(
                    "the {key_type} key it presented ({fingerprint}) is marked @revoked for \
                     {entry} in {file}; a revoked key is never accepted",
                    file = file.display()
                )));
            }
            // Line by line: libssh2 gives up on a whole file at the first line it cannot parse
            // (a key type it does not know), which would hide every other entry.
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                // Markers are ours to read (libssh2 knows none of them): a revoked key must
                // not match as a plain entry would.
                if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
                    continue;
                }
                if let Err(e) = known.read_str(line, KnownHostFileKind::OpenSSH) {
                    tracing::debug!(file = %file.display(), line = n + 1, error = %e, "skipped known_hosts line");
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(format!("cannot read {}: {e}", file.display()))),
    }
    match known.check_port(host, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(refuse(format!(
            "the {key_type} key it presented ({fingerprint}) differs from the one recorded for \
             {entry} in {file}; if the host was reinstalled, remove the old entry with \
             `ssh-keygen -R '{entry}' -f {file}` and connect again, otherwise someone may be \
             intercepting the connection",
            file = file.display()
        ))),
        CheckResult::NotFound if cfg.accept_new => {
            append_known_host(file, &entry, key_type, key)
                .map_err(|e| refuse(format!("cannot add its key to {}: {e}", file.display())))?;
            tracing::info!(host = %name, entry, %fingerprint, file = %file.display(), "added new host key");
            Ok(())
        }
        CheckResult::NotFound => Err(refuse(format!(
            "no key for {entry} in {file}; check that the host's {key_type} key is {fingerprint} \
             and record it (for example `ssh-keyscan -p {port} {host} >> {file}`), or allow \
             unknown keys explicitly with accept_new_host_keys(true)",
            file = file.display()
        ))),
        CheckResult::Failure => Err(refuse(format!(
            "checking the key against {} failed",
            file.display()
        ))),
    }
}

fn append_known_host(file: &Path, entry: &str, key_type: &str, key: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let needs_newline = std::fs::read(file)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)?;
    let line = format!(
        "{}{entry} {key_type} {}\n",
        if needs_newline { "\n" } else { "" },
        base64(key, true)
    );
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

/// The key type from an SSH public key blob (its first string: `ssh-ed25519`, …).
fn key_type_name(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

fn base64(data: &[u8], pad: bool) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn authenticate(session: &Session, cfg: &SshHostBuilder, name: &str) -> Result<(), HostError> {
    let default = [Auth::Agent { socket: None }];
    let methods: &[Auth] = if cfg.auth.is_empty() {
        &default
    } else {
        &cfg.auth
    };
    let user = cfg.user.as_str();
    let mut tried = Vec::new();
    // A protected key libssh2 could not load: reported as such when nothing else worked.
    let mut key_problem: Option<(PathBuf, String)> = None;
    for method in methods {
        let result = match method {
            Auth::KeyFile { path, passphrase } => {
                tried.push(format!("publickey {}", path.display()));
                session.userauth_pubkey_file(
                    user,
                    None,
                    path,
                    passphrase.as_ref().map(Secret::expose),
                )
            }
            Auth::Agent { socket } => {
                tried.push(match socket {
                    Some(s) => format!("agent {}", s.display()),
                    None => "agent".to_string(),
                });
                agent_auth(session, user, socket.as_deref())
            }
            Auth::Password(password) => {
                tried.push("password".to_string());
                session.userauth_password(user, password.expose())
            }
        };
        if session.authenticated() {
            return Ok(());
        }
        if let Err(e) = result {
            if is_timeout(&e) || is_dead(&e) {
                return Err(HostError::Connect {
                    host: name.to_string(),
                    addr: cfg.addr.clone(),
                    source: Box::new(e),
                });
            }
            if let Auth::KeyFile { path, passphrase } = method
                && matches!(e.code(), ErrorCode::Session(ERR_FILE))
                && key_problem.is_none()
            {
                let prot = crate::ssh_keyfile::protection(path);
                if prot != crate::ssh_keyfile::Protection::None {
                    let ciphers = session
                        .supported_algs(MethodType::CryptCs)
                        .unwrap_or_default();
                    let given = passphrase.as_ref().is_some_and(|p| !p.is_empty());
                    let problem = crate::ssh_keyfile::problem(&prot, given, &ciphers);
                    if let Some(last) = tried.last_mut() {
                        last.push_str(&format!(": {problem}"));
                    }
                    key_problem = Some((path.clone(), problem));
                    continue;
                }
            }
            // libssh2's messages name no secrets; keep them for the diagnosis.
            if let Some(last) = tried.last_mut() {
                last.push_str(&format!(": {}", e.message()));
            }
        }
    }
    if let Some((path, problem)) = key_problem {
        tracing::debug!(host = %name, tried = %tried.join("; "), "authentication failed");
        return Err(HostError::Key {
            host: name.to_string(),
            path,
            problem,
        });
    }
    Err(HostError::Auth {
        host: name.to_string(),
        user: user.to_string(),
        method: tried.join("; "),
    })
}

fn agent_auth(session: &Session, user: &str, socket: Option<&Path>) -> Result<(), ssh2::Error> {
    let mut agent = session.agent()?;
    if let Some(s) = socket {
        agent.set_identity_path(s)?;
    }
    agent.connect()?;
    agent.list_identities()?;
    let mut last = None;
    for id in agent.identities()? {
        match agent.userauth(user, &id) {
            Ok(()) => {
                let _ = agent.disconnect();
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    let _ = agent.disconnect();
    Err(last.unwrap_or_else(|| {
        ssh2::Error::new(ErrorCode::Session(-18), "the agent holds no usable key")
    }))
}

// ---------------------------------------------------------------------------------------------
// Commands.

/// Marks the line the remote shell writes to stderr first: its pid, which is also the process
/// group of the command (sshd starts each session in a new session), so a command that times
/// out can be killed with its children. The line is removed from the returned stderr.
const PID_MARKER: &str = "cs-upgrade-pid:";

/// Runs one command on an exec channel: stdin fed, stdout and stderr read interleaved (so
/// neither can fill the window and stall the other), exit status or signal collected. On
/// timeout the command's process group is killed over a second channel.
fn exec(
    inner: &Inner,
    session: &Session,
    heard: &Heard,
    line: &str,
    shown: &str,
    stdin: &[u8],
    limit: Option<Duration>,
) -> Result<Output, Fail> {
    let name = &inner.name;
    let protocol = |what: String, source: BoxError| HostError::Protocol {
        host: name.clone(),
        what,
        source: Some(source),
    };
    let wrapped = format!("printf '{PID_MARKER}%s\\n' \"$$\" >&2; exec {line}");
    // A dead session found while opening the channel is retried on a new one; once the exec
    // request is sent the command may have started, so it is never sent twice.
    let mut ch = session.channel_session().map_err(|e| {
        if is_dead(&e) {
            Fail::Retry(e)
        } else {
            Fail::Host(protocol(
                format!("cannot open a channel for `{shown}`"),
                Box::new(e),
            ))
        }
    })?;
    ch.exec(&wrapped).map_err(|e| {
        let err = protocol(format!("cannot start `{shown}` over SSH"), Box::new(e));
        if is_dead_or_timeout(&err) {
            Fail::Broken(err)
        } else {
            Fail::Host(err)
        }
    })?;
    let start = Instant::now();
    session.set_blocking(false);
    let silence = inner.cfg.deadlines.reply;
    let pumped = pump(&mut ch, stdin, start, limit, &|| {
        // Due keepalive requests go out; a node that answers none for a whole reply period
        // is gone.
        let _ = session.keepalive_send();
        heard.silent_for() > silence
    });
    session.set_blocking(true);
    let (stdout, mut stderr) = match pumped {
        Ok(out) => out,
        Err(Pump::TimedOut(after, stderr)) => {
            tracing::debug!(host = %name, cmd = %shown, "command timed out; killing it");
            let timeout = HostError::Timeout {
                host: name.clone(),
                what: format!("`{shown}`"),
                after,
            };
            session.set_timeout(millis(KILL_GRACE));
            if let Some(pid) = marked_pid(&stderr) {
                let (kill, input) = ssh_sudo::kill_line(inner.cfg.sudo.as_ref(), pid);
                if let Ok(mut k) = open_exec(session, &kill) {
                    let _ = k.write_all(&input);
                    let _ = k.send_eof();
                    let _ = k.wait_eof();
                    let _ = k.wait_close();
                }
            }
            let closed = ch.close().is_ok() && ch.wait_close().is_ok();
            session.set_timeout(millis(inner.cfg.deadlines.reply));
            // A channel that would not close could block the session: start a new one.
            return Err(if closed {
                Fail::Host(timeout)
            } else {
                Fail::Broken(timeout)
            });
        }
        Err(Pump::Silent) => {
            tracing::debug!(host = %name, cmd = %shown, "node silent; dropping the session");
            // Cut first: closing the channel must not wait for a node that answers nothing.
            heard.cut();
            session.set_timeout(millis(KILL_GRACE));
            let who = match heard.silent_bastion() {
                Some(bastion) => format!("the bastion {bastion} on the way to {name}"),
                None => format!("{name} ({})", inner.cfg.addr),
            };
            return Err(Fail::Broken(HostError::Timeout {
                host: name.clone(),
                what: format!("`{shown}`: {who} stopped answering, keepalives included"),
                after: silence,
            }));
        }
        Err(Pump::Io(e)) => {
            return Err(Fail::Broken(protocol(
                format!("lost the output of `{shown}`"),
                Box::new(e),
            )));
        }
    };
    strip_marker(&mut stderr);
    let _ = ch.wait_close();
    let code = match ch.exit_signal() {
        Ok(ssh2::ExitSignal {
            exit_signal: Some(sig),
            ..
        }) => 128 + signal_number(&sig),
        _ => ch.exit_status().unwrap_or(255),
    };
    Ok(Output {
        code,
        stdout,
        stderr,
    })
}

fn open_exec(session: &Session, line: &str) -> Result<ssh2::Channel, ssh2::Error> {
    let mut ch = session.channel_session()?;
    ch.exec(line)?;
    Ok(ch)
}

/// Where the marker line starts in `stderr` (at the start of a line), and where it ends.
fn marker_span(stderr: &[u8]) -> Option<(usize, usize)> {
    let m = PID_MARKER.as_bytes();
    let start = stderr
        .windows(m.len())
        .enumerate()
        .find(|(i, w)| *w == m && (*i == 0 || stderr[i - 1] == b'\n'))
        .map(|(i, _)| i)?;
    let end = stderr[start..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| start + p + 1)?;
    Some((start, end))
}

fn marked_pid(stderr: &[u8]) -> Option<u32> {
    let (start, end) = marker_span(stderr)?;
    let digits = &stderr[start + PID_MARKER.len()..end - 1];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn strip_marker(stderr: &mut Vec<u8>) {
    if let Some((start, end)) = marker_span(stderr) {
        stderr.drain(start..end);
    }
}

enum Pump {
    TimedOut(Duration, Vec<u8>),
    /// The node sent nothing, not even answers to keepalives, for a reply period.
    Silent,
    Io(std::io::Error),
}

/// The non-blocking loop of [`exec`]: writes stdin, reads both output streams as data comes,
/// sleeps briefly (backing off to 5 ms) only when nothing moved.
fn pump(
    ch: &mut ssh2::Channel,
    stdin: &[u8],
    start: Instant,
    limit: Option<Duration>,
    silent: &dyn Fn() -> bool,
) -> Result<(Vec<u8>, Vec<u8>), Pump> {
    const CHUNK: usize = 64 * 1024;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0;
    let mut eof_sent = false;
    let mut idle = Duration::from_micros(50);
    let would_block = |e: &std::io::Error| e.kind() == std::io::ErrorKind::WouldBlock;
    loop {
        let mut moved = false;
        if !eof_sent {
            if written < stdin.len() {
                let end = (written + CHUNK).min(stdin.len());
                match ch.write(&stdin[written..end]) {
                    Ok(n) => {
                        written += n;
                        moved |= n > 0;
                    }
                    Err(e) if would_block(&e) => {}
                    // The command closed its input (or exited) without reading it all.
                    Err(_) => written = stdin.len(),
                }
            }
            if written >= stdin.len() {
                match ch.send_eof() {
                    Ok(()) => {
                        eof_sent = true;
                        moved = true;
                    }
                    Err(e) if is_eagain(&e) => {}
                    Err(_) => eof_sent = true,
                }
            }
        }
        for (id, sink) in [(0, &mut stdout), (1, &mut stderr)] {
            loop {
                match ch.stream(id).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        sink.extend_from_slice(&buf[..n]);
                        moved = true;
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(Pump::Io(e)),
                }
            }
        }
        if ch.eof() {
            return Ok((stdout, stderr));
        }
        if let Some(limit) = limit
            && start.elapsed() > limit
        {
            return Err(Pump::TimedOut(limit, stderr));
        }
        if moved {
            idle = Duration::from_micros(50);
        } else {
            if silent() {
                return Err(Pump::Silent);
            }
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(5));
        }
    }
}

/// The number of a signal named as in SSH's `exit-signal` (`KILL`, `TERM`, …), Linux numbering.
fn signal_number(name: &str) -> i32 {
    const NAMES: [&str; 15] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM",
    ];
    let name = name.trim_start_matches("SIG");
    NAMES
        .iter()
        .position(|n| *n == name)
        .map_or(127, |i| i as i32 + 1)
}

fn run_on(
    inner: &Inner,
    conn: &mut Conn,
    line: &str,
    shown: &str,
    stdin: &[u8],
    limit: Option<Duration>,
) -> Result<Output, Fail> {
    exec(inner, &conn.session, &conn.heard, line, shown, stdin, limit)
}

// ---------------------------------------------------------------------------------------------
// Files.

fn meta_of(st: &FileStat) -> FileMeta {
    let perm = st.perm.unwrap_or(0);
    let kind = match perm & 0o170_000 {
        0o100_000 => FileKind::File,
        0o040_000 => FileKind::Dir,
        0o120_000 => FileKind::Symlink,
        _ => FileKind::Other,
    };
    FileMeta {
        kind,
        mode: perm & 0o7777,
        uid: st.uid.unwrap_or(0),
        gid: st.gid.unwrap_or(0),
        size: st.size.unwrap_or(0),
        mtime: st.mtime.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
    }
}

fn empty_stat() -> FileStat {
    FileStat {
        size: None,
        uid: None,
        gid: None,
        perm: None,
        atime: None,
        mtime: None,
    }
}

fn write_atomic_on(
    inner: &Inner,
    conn: &mut Conn,
    path: &Path,
    data: &[u8],
    mode: Option<u32>,
) -> Result<(), Fail> {
    let sftp = inner.sftp(conn, path)?;
    let existing = match sftp.stat(path) {
        Ok(st) => Some(st),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(inner.fail_first("stat", path, e)),
    };
    let mode = mode.unwrap_or_else(|| {
        existing
            .as_ref()
            .and_then(|s| s.perm)
            .map_or(0o600, |p| p & 0o7777)
    });
    let tmp = temp_path_for(path);
    let result = write_temp(inner, sftp, &tmp, path, data, mode, existing.as_ref());
    let result = match result {
        Ok(()) => rename_over(inner, conn, &tmp, path),
        Err(e) => Err(e),
    };
    if result.is_err()
        && let Some(sftp) = conn.sftp.as_ref()
    {
        let _ = sftp.unlink(&tmp);
    }
    result
}

fn write_temp(
    inner: &Inner,
    sftp: &Sftp,
    tmp: &Path,
    path: &Path,
    data: &[u8],
    mode: u32,
    existing: Option<&FileStat>,
) -> Result<(), Fail> {
    // Errors name the target: the temporary file is an implementation detail.
    let mut f = sftp
        .open_mode(
            tmp,
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE | OpenFlags::TRUNCATE,
            0o600,
            OpenType::File,
        )
        .map_err(|e| inner.fail("create temporary file for", path, e))?;
    f.write_all(data)
        .map_err(|e| inner.io_fail("write", path, e))?;
    match f.fsync() {
        Ok(()) => {}
        // Servers without fsync@openssh.com: the rename is still atomic, only less durable.
        Err(e) if matches!(e.code(), ErrorCode::SFTP(FX_OP_UNSUPPORTED)) => {}
        Err(e) => return Err(inner.fail("fsync", path, e)),
    }
    if let Some(st) = existing
        && st.uid.is_some()
        && st.gid.is_some()
    {
        // Owner first: chown clears set-id bits, the mode below restores them.
        f.setstat(FileStat {
            uid: st.uid,
            gid: st.gid,
            ..empty_stat()
        })
        .map_err(|e| inner.fail("chown", path, e))?;
    }
    f.setstat(FileStat {
        perm: Some(mode),
        ..empty_stat()
    })
    .map_err(|e| inner.fail("chmod", path, e))?;
    f.close().map_err(|e| inner.fail("write", path, e))
}

/// Renames the temporary file over the target. SFTP v3 (OpenSSH's sftp-server) refuses to
/// rename over an existing file and libssh2 does not offer posix-rename@openssh.com, so when
/// the SFTP rename fails the server's `mv -f -T` does it with rename(2), which is atomic.
fn rename_over(inner: &Inner, conn: &mut Conn, tmp: &Path, path: &Path) -> Result<(), Fail> {
    let sftp = inner.sftp(conn, path)?;
    let flags = RenameFlags::OVERWRITE | RenameFlags::ATOMIC | RenameFlags::NATIVE;
    let err = match sftp.rename(tmp, path, Some(flags)) {
        Ok(()) => return Ok(()),
        Err(e) if is_dead(&e) || is_timeout(&e) => return Err(inner.fail("rename", path, e)),
        Err(e) => e,
    };
    let (Some(t), Some(p)) = (tmp.to_str(), path.to_str()) else {
        return Err(Fail::Host(sftp_error(&inner.name, "rename", path, err)));
    };
    let line = format!("mv -f -T -- {} {}", shell_quote(t), shell_quote(p));
    let out = exec(
        inner,
        &conn.session,
        &conn.heard,
        &line,
        &line,
        &[],
        Some(IO_TIMEOUT),
    )
    .map_err(|f| match f {
        Fail::Retry(e) => inner.fail("rename", path, e),
        other => other,
    })?;
    if out.success() {
        Ok(())
    } else {
        Err(Fail::Host(HostError::Io {
            host: inner.name.clone(),
            op: "rename",
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "SFTP rename failed ({err}) and `mv` exited with {}: {}",
                out.code,
                tail(&out.stderr, 300)
            )),
        }))
    }
}

fn create_dir_all_on(inner: &Inner, conn: &mut Conn, path: &Path, mode: u32) -> Result<(), Fail> {
    let sftp = inner.sftp(conn, path)?;
    match sftp.stat(path) {
        Ok(st) if st.is_dir() => return Ok(()),
        Ok(_) => return Err(not_a_dir(inner, path)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(inner.fail_first("mkdir", path, e)),
    }
    let mut cur = PathBuf::new();
    for comp in path.components() {
        cur.push(comp);
        match sftp.stat(&cur) {
            Ok(st) if st.is_dir() => continue,
            Ok(_) => return Err(not_a_dir(inner, &cur)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(inner.fail("mkdir", &cur, e)),
        }
        let mode = i32::try_from(mode & 0o7777).unwrap_or(0o755);
        if let Err(e) = sftp.mkdir(&cur, mode) {
            // Someone else may have created it meanwhile.
            match sftp.stat(&cur) {
                Ok(st) if st.is_dir() => {}
                _ => return Err(inner.fail("mkdir", &cur, e)),
            }
        }
    }
    Ok(())
}

fn not_a_dir(inner: &Inner, path: &Path) -> Fail {
    Fail::Host(HostError::Io {
        host: inner.name.clone(),
        op: "mkdir",
        path: path.to_path_buf(),
        source: std::io::Error::other("exists and is not a directory"),
    })
}

#[async_trait]
impl Host for SshHost {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn run(&self, cmd: &Cmd) -> Result<Output, HostError> {
        if let Some(sudo) = &self.inner.cfg.sudo {
            return self.sudo_run(sudo, cmd).await;
        }
        let line = cmd.to_shell();
        let shown = cmd.to_string();
        let stdin = cmd.stdin_data().map(<[u8]>::to_vec).unwrap_or_default();
        let limit = cmd.timeout_value().or(self.inner.cfg.command_timeout);
        tracing::debug!(host = %self.inner.name, cmd = %shown, "run");
        self.call(move |inner| {
            inner.with_conn(|conn| run_on(inner, conn, &line, &shown, &stdin, limit))
        })
        .await
    }

    async fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        if let Some(sudo) = &self.inner.cfg.sudo {
            return self.sudo_read(sudo, path).await;
        }
        let path = path.to_path_buf();
        self.call(move |inner| {
            inner.with_conn(|conn| {
                let sftp = inner.sftp(conn, &path)?;
                let mut f = sftp
                    .open(&path)
                    .map_err(|e| inner.fail_first("read", &path, e))?;
                let mut data = Vec::new();
                f.read_to_end(&mut data)
                    .map_err(|e| inner.io_fail("read", &path, e))?;
                Ok(data)
            })
        })
        .await
    }

    async fn write_atomic(
        &self,
        path: &Path,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), HostError> {
        if let Some(sudo) = &self.inner.cfg.sudo {
            return self.sudo_write_atomic(sudo, path, data, mode).await;
        }
        let path = path.to_path_buf();
        let data = data.to_vec();
        self.call(move |inner| {
            inner.with_conn(|conn| write_atomic_on(inner, conn, &path, &data, mode))
        })
        .await
    }

    async fn stat(&self, path: &Path) -> Result<FileMeta, HostError> {
        if let Some(sudo) = &self.inner.cfg.sudo {
            return self.sudo_stat(sudo, path).await;
        }
        let path = path.to_path_buf();
        self.call(move |inner| {
            inner.with_conn(|conn| {
                let sftp = inner.sftp(conn, &path)?;
                sftp.lstat(&path)
                    .map(|st| meta_of(&st))
                    .map_err(|e| inner.fail_first("stat", &path, e))
            })
        })
        .await
    }

    async fn list_dir(&self, path: &Path) -> Result<Vec<DirEntry>, HostError> {
        if let Some(sudo) = &self.inner.cfg.sudo {
            return self.sudo_list_dir(sudo, path).await;
        }
        let path = path.to_path_buf();
        self.call(move |inner| {
            inner.with_conn(|conn| {
                let sftp = inner.sftp(conn, &path)?;
                let entries = sftp
                    .readdir(&path)
                    .map_err(|e| inner.fail_first("list", &path, e))?;
                let mut out: Vec<DirEntry> = entries
                    .iter()
                    .filter_map(|(p, st)| {
                        let name = p.file_name()?.to_string_lossy().into_owned();
                        Some(DirEntry {
                            name,
                            meta: meta_of(st),
                        })
                    })
                    .collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            })
        })
        .await
    }

    async fn create_dir_all(&self, path: &Path, mode: u32) -> Result<(), HostError> {
        if let Some(sudo) = &self.inner.cfg.sudo {
            return self.sudo_create_dir_all(sudo, path, mode).await;
        }
        let path = path.to_path_buf();
        self.call(move |inner| inner.with_conn(|conn| create_dir_all_on(inner, conn, &path, mode)))
            .await
    }

    async fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        if let Some(sudo) = &self.inner.cfg.sudo {
            return self.sudo_remove_file(sudo, path).await;
        }
        let path = path.to_path_buf();
        self.call(move |inner| {
            inner.with_conn(|conn| {
                let sftp = inner.sftp(conn, &path)?;
                sftp.unlink(&path)
                    .map_err(|e| inner.fail_first("remove", &path, e))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_addr("127.0.0.1:2222"), ("127.0.0.1".into(), 2222));
        assert_eq!(split_addr("kvm1"), ("kvm1".into(), 22));
        assert_eq!(split_addr("[::1]:2200"), ("::1".into(), 2200));
        assert_eq!(split_addr("::1"), ("::1".into(), 22));
    }

    #[test]
    fn known_hosts_entries_bracket_non_default_ports() {
        assert_eq!(known_hosts_entry("10.0.0.5", 22), "10.0.0.5");
        assert_eq!(known_hosts_entry("127.0.0.1", 2222), "[127.0.0.1]:2222");
        // IPv6 as OpenSSH writes it: bare on port 22, bracketed with any other port.
        let (host, port) = split_addr("[::1]:2222");
        assert_eq!(known_hosts_entry(&host, port), "[::1]:2222");
        let (host, port) = split_addr("fe80::1");
        assert_eq!(known_hosts_entry(&host, port), "fe80::1");
    }

    /// Salt bytes 0..20; hashes computed independently (Python `hmac`, SHA-1).
    const SALT: &str = "AAECAwQFBgcICQoLDA0ODxAREhM=";

    #[test]
    fn hashed_entries_match_their_host_only() {
        let lab = format!("|1|{SALT}|zKYaAqmSav3Qxr2sffNqWFIcbe4=");
        assert!(hosts_match(&lab, "[127.0.0.1]:2222"));
        assert!(!hosts_match(&lab, "[127.0.0.1]:2223"));
        assert!(!hosts_match(&lab, "127.0.0.1"));
        let v6 = format!("|1|{SALT}|Orla712qdBdiFap+jRvaNbWjt4Y=");
        assert!(hosts_match(&v6, "[::1]:2222"));
        assert!(hosts_match(
            &format!("|1|{SALT}|FOTowN1KlLwkyQvo8iBjvpREtZk="),
            "kvm1"
        ));
        // Broken hashes match nothing rather than fail.
        assert!(!hosts_match("|1|!!|??", "kvm1"));
        assert!(!hosts_match("|1|nohash", "kvm1"));
    }

    #[test]
    fn patterns_match_as_openssh_does() {
        assert!(hosts_match("kvm1,kvm2", "kvm2"));
        assert!(hosts_match("KVM1", "kvm1"));
        assert!(hosts_match("kvm*", "kvm12"));
        assert!(hosts_match("kvm?", "kvm1"));
        assert!(!hosts_match("kvm?", "kvm12"));
        assert!(!hosts_match("kvm*,!kvm3", "kvm3"));
        assert!(hosts_match("[10.0.0.*]:2222", "[10.0.0.7]:2222"));
        assert!(!hosts_match("10.0.0.5", "[10.0.0.5]:2222"));
    }

    #[test]
    fn key_types_of_hashed_non_ed25519_entries_are_preferred() {
        // The false "someone may be intercepting" warning came from here: a hashed ECDSA
        // entry was not recognised, the server presented its ed25519 key, libssh2 found the
        // recorded ECDSA key for the host and reported a mismatch.
        let text = format!(
            "# comment\n\
             |1|{SALT}|zKYaAqmSav3Qxr2sffNqWFIcbe4= ecdsa-sha2-nistp256 AAAAE2VjZHNh\n\
             other ssh-ed25519 AAAAC3Nz\n\
             |1|{SALT}|zKYaAqmSav3Qxr2sffNqWFIcbe4= ssh-rsa AAAAB3Nz\n\
             @revoked [127.0.0.1]:2222 ssh-ed25519 AAAAC3Nz\n"
        );
        assert_eq!(
            known_key_types(&text, "[127.0.0.1]:2222"),
            [
                "ecdsa-sha2-nistp256",
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ssh-rsa"
            ]
        );
        assert_eq!(known_key_types(&text, "other"), ["ssh-ed25519"]);
        assert!(known_key_types(&text, "nobody").is_empty());
    }

    #[test]
    fn revoked_keys_are_found_for_their_hosts() {
        let key = b"\x00\x00\x00\x0bssh-ed25519 some key bytes";
        let b64 = base64(key, true);
        let text = format!(
            "kvm1 ssh-ed25519 {b64}\n\
             @revoked kvm1,kvm2 ssh-ed25519 {b64}\n\
             @cert-authority * ssh-ed25519 {b64}\n\
             @revoked |1|{SALT}|zKYaAqmSav3Qxr2sffNqWFIcbe4= ssh-ed25519 {b64}\n"
        );
        assert!(revoked(&text, "kvm1", key));
        assert!(revoked(&text, "kvm2", key));
        assert!(revoked(&text, "[127.0.0.1]:2222", key));
        assert!(!revoked(&text, "kvm3", key));
        assert!(!revoked(&text, "kvm1", b"another key"));
        // The revoked line is no plain entry for the key types either.
        assert_eq!(known_key_types(&text, "kvm2"), Vec::<String>::new());
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, padded, bare) in [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes(), true), padded);
            assert_eq!(base64(input.as_bytes(), false), bare);
        }
    }

    #[test]
    fn key_type_is_read_from_the_blob() {
        let mut blob = 11u32.to_be_bytes().to_vec();
        blob.extend_from_slice(b"ssh-ed25519rest");
        assert_eq!(key_type_name(&blob), Some("ssh-ed25519"));
        assert_eq!(key_type_name(&[0, 0, 0, 9, b'x']), None);
    }

    #[test]
    fn the_pid_marker_is_read_and_removed() {
        let mut err = b"motd noise\ncs-upgrade-pid:4242\noops\n".to_vec();
        assert_eq!(marked_pid(&err), Some(4242));
        strip_marker(&mut err);
        assert_eq!(err, b"motd noise\noops\n");
        let mut none = b"xcs-upgrade-pid:1\n".to_vec();
        assert_eq!(marked_pid(&none), None);
        strip_marker(&mut none);
        assert_eq!(none, b"xcs-upgrade-pid:1\n");
    }

    #[test]
    fn signals_map_to_shell_codes() {
        assert_eq!(128 + signal_number("KILL"), 137);
        assert_eq!(128 + signal_number("TERM"), 143);
    }

    #[test]
    fn builder_debug_hides_secrets() {
        let b = SshHost::builder("h:22")
            .password(Secret::new("hunter2"))
            .key_file_with_passphrase("/k", Secret::new("pass-phrase"))
            .identity_passphrase(Secret::new("config-phrase"))
            .proxy_jump(SshHost::builder("b:22").password(Secret::new("jump-secret")));
        let text = format!("{b:?}");
        assert!(
            !text.contains("config-phrase") && !text.contains("jump-secret"),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("pass-phrase"),
            "{text}"
        );
    }
}
