//! ProxyJump: an [`SshHost`](crate::SshHost)'s session carried over a `direct-tcpip` channel
//! of a session to a bastion.
//!
//! libssh2 runs a session over a file descriptor, so the channel is joined to one end of a
//! local socket pair by a relay thread (as `ssh.rs`'s [`relay`](crate::ssh) joins a TCP
//! connection), and the target's session gets the other end. The thread owns the bastion's
//! session: it sends the bastion's keepalives, notes when the target last sent anything (for
//! the target's own silence bound) and ends, cutting both sides, when either side closes or the
//! bastion stays silent for its whole reply period.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh2::{BlockDirections, Channel, Session};

use crate::ssh::{Heard, Via, connect_blocking, keepalive_secs, millis};
use crate::{HostError, JumpSpec, SshHostBuilder};

/// One hop on the way to a host.
#[derive(Debug, Clone)]
pub(crate) enum Hop {
    /// A bastion with a builder of its own.
    Builder(Box<SshHostBuilder>),
    /// A bastion named `[user@]host[:port]`, inheriting the target's settings.
    Spec(JumpSpec),
}

/// The bastion's builder for the last hop of `cfg`'s chain, with the hops before it.
fn hop_builder(cfg: &SshHostBuilder, left: Duration) -> SshHostBuilder {
    let (last, before) = cfg
        .jumps
        .split_last()
        .expect("transport is only called with hops");
    let mut b = match last {
        Hop::Builder(b) => {
            let mut b = (**b).clone();
            b.connect_timeout = b.connect_timeout.min(left);
            b
        }
        Hop::Spec(spec) => {
            let mut b = cfg.clone();
            b.addr = spec.addr();
            b.name = None;
            b.jumps = Vec::new();
            b.auth_inherited = true;
            // The spec's user, else the ssh config's for the bastion, else the target's.
            match &spec.user {
                Some(u) => {
                    b.user = u.clone();
                    b.user_set = true;
                }
                None => b.user_set = false,
            }
            b.connect_timeout = left;
            b
        }
    };
    if b.jumps.is_empty() {
        b.jumps = before.to_vec();
    }
    b.depth = cfg.depth.saturating_add(1);
    b
}

/// More bastions than this on the way is taken for a loop (an ssh config whose `ProxyJump`
/// host matches its own `Host` pattern).
const MAX_HOPS: u8 = 8;

/// Connects to the last bastion of `cfg`'s chain (through the ones before it) and opens a
/// channel from it to `host:port`; returns the local end libssh2 runs the target's session
/// on, and the target's [`Heard`].
pub(crate) fn transport(
    cfg: &SshHostBuilder,
    name: &str,
    host: &str,
    port: u16,
    start: Instant,
) -> Result<(UnixStream, Arc<Heard>), HostError> {
    let left = || cfg.connect_timeout.saturating_sub(start.elapsed());
    let hop = hop_builder(cfg, left());
    let hop_name = hop.display_name();
    let through = |source: crate::BoxError| HostError::Connect {
        host: name.to_string(),
        addr: format!("{} through the bastion {hop_name}", cfg.addr),
        source,
    };
    if hop.depth > MAX_HOPS {
        return Err(through(
            format!(
                "more than {MAX_HOPS} bastions on the way; does a ProxyJump host match its own \
                 Host pattern in the ssh config?"
            )
            .into(),
        ));
    }
    let hop = crate::ssh_config::resolve(hop, &hop_name).map_err(|e| through(Box::new(e)))?;
    let (session, hop_heard) =
        connect_blocking(&hop, &hop_name).map_err(|e| through(Box::new(e)))?;
    if left().is_zero() {
        return Err(HostError::Timeout {
            host: name.to_string(),
            what: format!("connecting to {} through the bastion {hop_name}", cfg.addr),
            after: cfg.connect_timeout,
        });
    }
    session.set_timeout(millis(left()));
    let channel = session
        .channel_direct_tcpip(host, port, None)
        .map_err(|e| {
            hop_heard.cut();
            if crate::ssh::is_timeout(&e) {
                HostError::Timeout {
                    host: name.to_string(),
                    what: format!("the bastion {hop_name} opening a connection to {host}:{port}"),
                    after: cfg.connect_timeout,
                }
            } else {
                through(
                    format!(
                        "the bastion {hop_name} cannot open a connection to {host}:{port}: {}",
                        e.message()
                    )
                    .into(),
                )
            }
        })?;
    session.set_timeout(0);
    let io = |e: std::io::Error| through(Box::new(e));
    let (ours, theirs) = UnixStream::pair().map_err(io)?;
    let heard = Arc::new(Heard::new(
        socket2::Socket::from(std::os::fd::OwnedFd::from(ours.try_clone().map_err(io)?)),
        Some(Via {
            name: hop_name.clone(),
            heard: Arc::clone(&hop_heard),
            patience: Duration::from_secs(u64::from(keepalive_secs(&hop.deadlines))),
        }),
    ));
    let reply = hop.deadlines.reply;
    let for_relay = Arc::clone(&heard);
    let short: String = name.chars().take(10).collect();
    std::thread::Builder::new()
        .name(format!("jump={short}"))
        .spawn(move || {
            relay_channel(&session, channel, &ours, &for_relay, &hop_heard, reply);
            ours_done(&ours);
            // The bastion connection goes with it: its relay threads end.
            hop_heard.cut();
            session.set_timeout(millis(Duration::from_secs(1)));
        })
        .map_err(io)?;
    tracing::debug!(host = %name, bastion = %hop_name, target = %format!("{host}:{port}"), "channel through the bastion open");
    Ok((theirs, heard))
}

fn ours_done(ours: &UnixStream) {
    let _ = ours.shutdown(std::net::Shutdown::Both);
}

/// Copies between the channel and the local socket until either side closes or the bastion
/// goes silent. The bastion's session is non-blocking here; the thread sleeps in `poll` on
/// both descriptors when nothing moves (at most a second, for the keepalives).
fn relay_channel(
    session: &Session,
    mut channel: Channel,
    local: &UnixStream,
    heard: &Heard,
    hop_heard: &Heard,
    reply: Duration,
) {
    const CHUNK: usize = 64 * 1024;
    session.set_blocking(false);
    if local.set_nonblocking(true).is_err() {
        return;
    }
    let mut local_r = local;
    let mut local_w = local;
    let mut up: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut up_at = 0;
    let mut down: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut down_at = 0;
    let mut buf = vec![0u8; CHUNK];
    let would_block = |e: &std::io::Error| e.kind() == std::io::ErrorKind::WouldBlock;
    loop {
        let mut moved = false;
        // Target session -> channel.
        if up_at == up.len() {
            match local_r.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    up.clear();
                    up.extend_from_slice(&buf[..n]);
                    up_at = 0;
                    moved = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        if up_at < up.len() {
            match channel.write(&up[up_at..]) {
                Ok(n) => {
                    up_at += n;
                    moved |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        // Channel -> target session.
        if down_at == down.len() {
            match channel.read(&mut buf) {
                Ok(0) => {
                    if channel.eof() {
                        return;
                    }
                }
                Ok(n) => {
                    heard.now();
                    down.clear();
                    down.extend_from_slice(&buf[..n]);
                    down_at = 0;
                    moved = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        if down_at < down.len() {
            match local_w.write(&down[down_at..]) {
                Ok(n) => {
                    down_at += n;
                    moved |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        // Due keepalive requests to the bastion go out; one silent for a whole reply period
        // is gone (the target's session then finds its socket closed).
        let _ = session.keepalive_send();
        if hop_heard.silent_for() > reply {
            tracing::debug!("bastion silent; closing the channel relay");
            return;
        }
        if !moved {
            wait(
                session,
                hop_heard.session_end.get(),
                local,
                up_at < up.len(),
                down_at < down.len(),
            );
        }
    }
}

/// Sleeps until one of the two sides can move (or a second has passed).
fn wait(
    session: &Session,
    session_end: Option<&UnixStream>,
    local: &UnixStream,
    up_pending: bool,
    down_pending: bool,
) {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let Some(session_end) = session_end else {
        std::thread::sleep(Duration::from_millis(1));
        return;
    };
    let mut session_events = PollFlags::IN;
    if matches!(
        session.block_directions(),
        BlockDirections::Outbound | BlockDirections::Both
    ) {
        session_events |= PollFlags::OUT;
    }
    let mut local_events = PollFlags::empty();
    if !up_pending {
        local_events |= PollFlags::IN;
    }
    if down_pending {
        local_events |= PollFlags::OUT;
    }
    let mut fds = [
        PollFd::new(session_end, session_events),
        PollFd::new(local, local_events),
    ];
    let second = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    let _ = rustix::event::poll(&mut fds, Some(&second));
}
