//! A TCP proxy on 127.0.0.1 that does to a database connection what a real network does.
//!
//! Each mode stands for one real failure: [`TcpProxy::freeze`] is a peer that went silent (a
//! stalled network path, a hung host or a VM paused for a snapshot: sockets stay open, bytes are
//! neither delivered nor refused, only timeouts notice); [`TcpProxy::freeze_after`] is the same
//! stall in the middle of a long result set, such as a dump; [`TcpProxy::drop_all`] is a
//! connection reset (a firewall or load balancer dropping its state, the server killed).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cs_core::DbUrl;
use socket2::SockRef;

use crate::{LabError, Result};

/// How long a blocked write waits before it looks again whether its connection is closing.
const WRITE_POLL: Duration = Duration::from_millis(100);
/// Upper bound for connecting to the target and for closing connections.
const BOUND: Duration = Duration::from_secs(5);

/// A TCP proxy on a free 127.0.0.1 port that forwards every connection to one target and can
/// stall or reset them on demand.
///
/// Blocking, with two threads per connection and one for the listener. Dropping it stops the
/// listener, resets every connection and joins every thread.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("connections", &self.connections())
            .finish()
    }
}

/// Whether bytes may pass on a connection.
#[derive(Debug, Clone, Copy)]
enum Gate {
    Open,
    /// Open until this many more server→client bytes have passed (never 0), then frozen.
    Budget(u64),
    Frozen,
}

#[derive(Debug, Clone, Copy)]
enum Dir {
    Up,
    Down,
}

struct Conn {
    client: TcpStream,
    server: TcpStream,
}

struct ConnState {
    conn: Arc<Conn>,
    gate: Gate,
    closing: bool,
    pumps: u8,
}

struct State {
    /// The gate new connections start with.
    mode: Gate,
    stopping: bool,
    next_id: u64,
    conns: HashMap<u64, ConnState>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    up: AtomicU64,
    down: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl TcpProxy {
    /// Starts listening on a free 127.0.0.1 port, forwarding each connection to `target`.
    ///
    /// # Errors
    /// [`LabError::Io`] when the listener cannot be set up.
    pub fn start(target: SocketAddr) -> Result<TcpProxy> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| LabError::io("bind 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LabError::io("proxy address", e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Gate::Open,
                stopping: false,
                next_id: 0,
                conns: HashMap::new(),
            }),
            changed: Condvar::new(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("px{}-accept", addr.port()))
                .spawn(move || accept_loop(&listener, target, &shared))
                .map_err(|e| LabError::io("start proxy thread", e))?
        };
        Ok(TcpProxy {
            addr,
            target,
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `url` pointed at the proxy instead of its server.
    pub fn db_url(&self, url: &DbUrl) -> DbUrl {
        DbUrl {
            host: self.addr.ip().to_string(),
            port: self.port(),
            ..url.clone()
        }
    }

    /// Stops forwarding on every connection, in both directions, without closing anything;
    /// connections accepted from now on are frozen too (a connect succeeds, the login hangs).
    pub fn freeze(&self) {
        self.set_gate(Gate::Frozen);
    }

    /// Resumes forwarding on every connection; bytes held meanwhile then flow.
    pub fn thaw(&self) {
        self.set_gate(Gate::Open);
    }

    /// Lets `bytes` more server→client bytes through on each connection (new ones included),
    /// then freezes that connection. Resumes frozen connections until then; 0 is
    /// [`TcpProxy::freeze`].
    pub fn freeze_after(&self, bytes: u64) {
        self.set_gate(match bytes {
            0 => Gate::Frozen,
            n => Gate::Budget(n),
        });
    }

    fn set_gate(&self, gate: Gate) {
        let mut state = self.shared.lock();
        state.mode = gate;
        for c in state.conns.values_mut() {
            c.gate = gate;
        }
        self.shared.changed.notify_all();
    }

    /// Closes every open connection abruptly: both sides get a reset (`SO_LINGER` 0). Returns
    /// once they are closed (or after a few seconds). Frozen or not, new connections still
    /// go through.
    pub fn drop_all(&self) {
        self.shared.close_all();
    }

    /// Connections currently open.
    pub fn connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// Bytes forwarded so far: (client→server, server→client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.up.load(Ordering::Relaxed),
            self.shared.down.load(Ordering::Relaxed),
        )
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        // Wake the blocking accept; it sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, BOUND);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.shared.close_all();
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking pump leaves consistent state behind: every update is one assignment.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Marks every open connection closing, sets `SO_LINGER` 0 and wakes its pumps; the last
    /// pump to leave closes the sockets, which sends the resets. Waits until they are gone.
    fn close_all(&self) {
        let mut state = self.lock();
        let ids: Vec<u64> = state.conns.keys().copied().collect();
        for c in state.conns.values_mut() {
            c.closing = true;
            abort(&c.conn);
        }
        self.changed.notify_all();
        let deadline = Instant::now() + BOUND;
        while ids.iter().any(|id| state.conns.contains_key(id)) && Instant::now() < deadline {
            state = self
                .changed
                .wait_timeout(state, deadline - Instant::now())
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `dir` may forward on connection `id` and reserves up to `want` bytes
    /// (`want` 0 is the end of the stream). `None` when the connection is closing.
    fn wait_turn(&self, id: u64, dir: Dir, want: usize) -> Option<usize> {
        let mut state = self.lock();
        loop {
            let c = state.conns.get_mut(&id)?;
            if c.closing {
                return None;
            }
            match (c.gate, dir) {
                (Gate::Frozen, _) => {}
                (Gate::Budget(left), Dir::Down) => {
                    let take = want.min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - take as u64;
                    c.gate = if left == 0 {
                        Gate::Frozen
                    } else {
                        Gate::Budget(left)
                    };
                    return Some(take);
                }
                (Gate::Open, _) | (Gate::Budget(_), Dir::Up) => return Some(want),
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn is_closing(&self, id: u64) -> bool {
        self.lock().conns.get(&id).is_none_or(|c| c.closing)
    }

    /// A pump has finished; the last one of a connection removes it (closing its sockets).
    fn pump_done(&self, id: u64, conn: Arc<Conn>, failed: bool) {
        let mut state = self.lock();
        if failed {
            // One side broke: the other gets a reset too.
            abort(&conn);
            if let Some(c) = state.conns.get_mut(&id) {
                c.closing = true;
            }
        }
        // Dropped under the lock, so that once the entry is gone the sockets are closed.
        drop(conn);
        if let Some(c) = state.conns.get_mut(&id) {
            c.pumps -= 1;
            if c.pumps == 0 {
                state.conns.remove(&id);
            }
        }
        self.changed.notify_all();
    }
}

/// Prepares a connection for a reset and wakes its blocked readers. The reset itself goes out
/// when the sockets close.
fn abort(conn: &Conn) {
    for s in [&conn.client, &conn.server] {
        let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
        let _ = s.shutdown(Shutdown::Read);
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.lock().stopping {
            return;
        }
        let Ok(client) = client else {
            // Out of descriptors and the like: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(server) = TcpStream::connect_timeout(&target, BOUND) else {
            // The target refuses: so does the proxy.
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            continue;
        };
        for s in [&client, &server] {
            let _ = s.set_nodelay(true);
            let _ = s.set_write_timeout(Some(WRITE_POLL));
        }
        let conn = Arc::new(Conn { client, server });
        let id = {
            let mut state = shared.lock();
            let id = state.next_id;
            state.next_id += 1;
            let gate = state.mode;
            state.conns.insert(
                id,
                ConnState {
                    conn: Arc::clone(&conn),
                    gate,
                    closing: false,
                    pumps: 2,
                },
            );
            id
        };
        let mut threads = lock(&shared.threads);
        threads.retain(|t| !t.is_finished());
        for dir in [Dir::Up, Dir::Down] {
            let (for_pump, conn) = (Arc::clone(shared), Arc::clone(&conn));
            let dir_name = match dir {
                Dir::Up => "up",
                Dir::Down => "down",
            };
            // Short: Linux keeps 15 bytes of a thread name.
            let name = format!("px{}-{dir_name}", listener_port(listener));
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || pump(&for_pump, id, conn, dir))
            {
                Ok(t) => threads.push(t),
                Err(_) => {
                    // No thread, no forwarding: reset the connection rather than hang it.
                    let mut state = shared.lock();
                    if let Some(c) = state.conns.get_mut(&id) {
                        c.closing = true;
                        c.pumps -= 1;
                        abort(&c.conn);
                        if c.pumps == 0 {
                            state.conns.remove(&id);
                        }
                    }
                    shared.changed.notify_all();
                }
            }
        }
    }
}

fn listener_port(listener: &TcpListener) -> u16 {
    listener.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// Forwards one direction of a connection until the end of its stream or an error.
fn pump(shared: &Shared, id: u64, conn: Arc<Conn>, dir: Dir) {
    let (mut from, to, counter) = match dir {
        Dir::Up => (&conn.client, &conn.server, &shared.up),
        Dir::Down => (&conn.server, &conn.client, &shared.down),
    };
    let mut buf = vec![0u8; 16 * 1024];
    let failed = 'outer: loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break true,
        };
        let mut sent = 0;
        loop {
            let Some(take) = shared.wait_turn(id, dir, n - sent) else {
                break 'outer false;
            };
            if n == 0 {
                // The end of the stream, passed on as such.
                let _ = to.shutdown(Shutdown::Write);
                break 'outer false;
            }
            if write_all(shared, id, to, &buf[sent..sent + take], counter).is_err() {
                break 'outer true;
            }
            sent += take;
            if sent == n {
                break;
            }
        }
    };
    // Closing is not a failure of the connection itself.
    let failed = failed && !shared.is_closing(id);
    shared.pump_done(id, conn, failed);
}

/// `write_all` that gives up when the connection is closing, even while the peer reads nothing.
/// The bytes are counted before they go out, so a peer that has them sees them in
/// [`TcpProxy::bytes`]; what could not be written is taken off again.
fn write_all(
    shared: &Shared,
    id: u64,
    mut to: &TcpStream,
    mut data: &[u8],
    counter: &AtomicU64,
) -> io::Result<()> {
    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
    while !data.is_empty() {
        let failed = match to.write(data) {
            Ok(0) => io::ErrorKind::WriteZero.into(),
            Ok(k) => {
                data = &data[k..];
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) && !shared.is_closing(id) =>
            {
                continue;
            }
            Err(e) => e,
        };
        counter.fetch_sub(data.len() as u64, Ordering::Relaxed);
        return Err(failed);
    }
    Ok(())
}
