//! The lab's TCP proxy in front of the lab MariaDB: pass-through, stalls, resets, shutdown.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cs_lab::{DbUrlExt, TcpProxy};
use mysql::prelude::Queryable;

/// A client's patience in these tests: reads and writes give up after this long.
const PATIENCE: Duration = Duration::from_secs(1);

fn start_proxy() -> TcpProxy {
    let server = cs_lab::mariadb();
    TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], server.port()))).unwrap()
}

/// Logs in through the proxy with `PATIENCE` for every read and write.
fn connect(proxy: &TcpProxy) -> mysql::Result<mysql::Conn> {
    connect_to(proxy, &cs_lab::mariadb().cloud())
}

fn connect_to(proxy: &TcpProxy, url: &cs_lab::DbUrl) -> mysql::Result<mysql::Conn> {
    let url = proxy.db_url(url);
    let opts = mysql::OptsBuilder::from_opts(url.opts())
        .read_timeout(Some(PATIENCE))
        .write_timeout(Some(PATIENCE))
        .tcp_connect_timeout(Some(PATIENCE));
    mysql::Conn::new(opts)
}

/// The socket error under a client error; the mysql crate reports it either directly or from
/// its packet codec.
fn io_kind(e: &mysql::Error) -> Option<ErrorKind> {
    use std::error::Error as _;
    match e {
        mysql::Error::IoError(io) => Some(io.kind()),
        mysql::Error::CodecError(codec) => codec
            .source()?
            .downcast_ref::<std::io::Error>()
            .map(|io| io.kind()),
        _ => None,
    }
}

#[track_caller]
fn assert_timeout(e: &mysql::Error) {
    assert!(
        matches!(
            io_kind(e),
            Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ),
        "expected a read timeout, got {e:?}"
    );
}

#[track_caller]
fn assert_reset(e: &mysql::Error) {
    assert!(
        matches!(
            io_kind(e),
            Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
        ),
        "expected a connection reset, got {e:?}"
    );
}

/// Polls `cond` every 20 ms for up to 5 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn queries_pass_through_and_are_counted() {
    let proxy = start_proxy();
    let url = proxy.db_url(&cs_lab::mariadb().cloud());
    assert_eq!(url.port, proxy.port());
    assert_ne!(url.port, cs_lab::mariadb().port());

    let mut conn = connect(&proxy).unwrap();
    let v: Option<String> = conn
        .query_first("SELECT CONCAT('through', 'proxy')")
        .unwrap();
    assert_eq!(v.as_deref(), Some("throughproxy"));
    assert_eq!(proxy.connections(), 1);
    let (up, down) = proxy.bytes();
    assert!(up > 0 && down > 0, "up {up}, down {down}");

    drop(conn);
    assert!(eventually(|| proxy.connections() == 0), "the client left");
}

#[test]
fn a_frozen_connection_times_out_but_stays_open() {
    let proxy = start_proxy();
    let mut conn = connect(&proxy).unwrap();
    conn.query_drop("SELECT 1").unwrap();

    proxy.freeze();
    let before = proxy.bytes();
    let started = Instant::now();
    let err = conn.query_drop("SELECT 2").unwrap_err();
    assert_timeout(&err);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.connections(), 1, "frozen is not closed");
    assert_eq!(proxy.bytes(), before, "nothing passes while frozen");

    proxy.thaw();
    // The held query (and the client's goodbye) now go through.
    assert!(eventually(|| proxy.bytes().0 > before.0));
    let mut fresh = connect(&proxy).unwrap();
    let two: Option<u8> = fresh.query_first("SELECT 2").unwrap();
    assert_eq!(two, Some(2));
}

#[test]
fn a_connection_opened_while_frozen_is_accepted_but_the_login_hangs() {
    let proxy = start_proxy();
    proxy.freeze();

    let started = Instant::now();
    let err = connect(&proxy).unwrap_err();
    assert_timeout(&err);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.connections(), 1, "accepted, not refused");
    assert_eq!(proxy.bytes(), (0, 0), "not even the server's greeting");

    proxy.thaw();
    let mut conn = connect(&proxy).unwrap();
    let one: Option<u8> = conn.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
}

#[test]
fn freeze_after_stalls_a_large_result_set_part_way() {
    const ROWS: usize = 200_000;
    const LET_THROUGH: u64 = 100_000;
    let db = cs_lab::mariadb().database("proxy_freeze_after").unwrap();
    let proxy = start_proxy();
    // The sequence engine's tables need a default schema.
    let mut conn = connect_to(&proxy, &db.url()).unwrap();
    conn.query_drop("SELECT 1").unwrap();

    let before = proxy.bytes().1;
    proxy.freeze_after(LET_THROUGH);
    let started = Instant::now();
    let mut rows = 0;
    let mut error = None;
    for row in conn
        .query_iter(format!("SELECT seq FROM seq_1_to_{ROWS}"))
        .unwrap()
    {
        match row {
            Ok(_) => rows += 1,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = error.unwrap_or_else(|| panic!("all {rows} rows arrived"));
    assert_timeout(&error);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(rows > 1000 && rows < ROWS, "{rows} rows before the stall");
    assert_eq!(proxy.bytes().1 - before, LET_THROUGH);
    assert_eq!(proxy.connections(), 1, "stalled, not closed");
    // `proxy` drops before `db`: the server's session ends, so the schema can be dropped.
}

#[test]
fn drop_all_resets_open_connections() {
    let proxy = start_proxy();
    let mut conn = connect(&proxy).unwrap();
    conn.query_drop("SELECT 1").unwrap();
    // A bare socket shows how it ends: a reset, not an orderly end of stream.
    let mut raw = TcpStream::connect_timeout(&proxy.addr(), PATIENCE).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut greeting = [0u8; 1024];
    assert!(
        raw.read(&mut greeting).unwrap() > 0,
        "the server's greeting"
    );
    assert_eq!(proxy.connections(), 2);

    proxy.drop_all();
    assert_eq!(proxy.connections(), 0);
    let ended = raw.read(&mut greeting);
    assert_eq!(
        ended.as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionReset),
        "{ended:?}"
    );
    let started = Instant::now();
    let err = conn.query_drop("SELECT 1").unwrap_err();
    assert_reset(&err);
    assert!(started.elapsed() < PATIENCE / 2, "{:?}", started.elapsed());

    // The proxy itself still forwards.
    connect(&proxy).unwrap().query_drop("SELECT 1").unwrap();
}

#[test]
fn drop_all_resets_frozen_connections_too() {
    let proxy = start_proxy();
    let mut conn = connect(&proxy).unwrap();
    conn.query_drop("SELECT 1").unwrap();
    proxy.freeze();

    proxy.drop_all();
    assert_eq!(proxy.connections(), 0);
    let started = Instant::now();
    let err = conn.query_drop("SELECT 1").unwrap_err();
    assert_reset(&err);
    assert!(started.elapsed() < PATIENCE / 2, "{:?}", started.elapsed());
}

#[test]
fn dropping_the_proxy_stops_its_threads_and_closes_its_port() {
    let proxy = start_proxy();
    let addr = proxy.addr();
    let threads = format!("px{}-", addr.port());
    let mut conn = connect(&proxy).unwrap();
    conn.query_drop("SELECT 1").unwrap();
    assert_eq!(threads_named(&threads), 3, "listener, up and down");
    // Frozen connections must not keep it alive.
    proxy.freeze();

    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A joined thread's /proc entry can outlive the join by a moment.
    assert!(
        eventually(|| threads_named(&threads) == 0),
        "threads left behind"
    );
    let refused = TcpStream::connect_timeout(&addr, PATIENCE).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert_reset(&conn.query_drop("SELECT 1").unwrap_err());
}
