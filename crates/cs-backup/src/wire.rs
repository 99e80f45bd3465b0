//! A small client for the MySQL/MariaDB wire protocol that streams text result sets without
//! an allocation per value.
//!
//! The `mysql` crate decodes every value of every row into a `Vec<u8>` of its own; in a dump
//! of millions of rows that allocation, its copy and its free take about a third of the
//! client's CPU time, on the path that competes with the server for the same cores. This
//! client reads packets into one buffer and hands out slices of it.
//!
//! It speaks only what reading rows needs: plain TCP (as the `mysql` crate is configured here),
//! the `mysql_native_password` plugin and the fast path of `caching_sha2_password`, `COM_QUERY`,
//! and single text result sets. A server that wants anything else during the login (another
//! plugin, a full `caching_sha2_password` exchange) or that sends a handshake this client does
//! not understand makes [`Conn::connect`] fail with [`WireError::Unsupported`], and the caller
//! uses the `mysql` crate instead.
//!
//! Protocol reference: the MariaDB "Client/Server Protocol" pages (packet framing, handshake
//! v10, `HandshakeResponse41`, `COM_QUERY` response, text result rows).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Instant;

use cs_core::DbUrl;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The largest payload of one packet; a longer payload continues in the next packet.
const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// The largest payload read, joined over packets: MariaDB's and MySQL's ceiling for
/// `max_allowed_packet` (1 GiB), so no server sends more; a peer announcing more is not one.
const MAX_PACKET: usize = 1 << 30;
/// The read buffer: packets up to this size are parsed where they land.
const BUF_SIZE: usize = 1 << 20;
/// The payload of each packet of a `LOAD DATA LOCAL` stream: below the default
/// `max_allowed_packet` of every server (at least 1 MiB since MySQL 5.5), and large enough
/// that per-packet costs vanish (the `mysql` crate sends 4 KiB packets). A server set lower
/// gets packets that fit ([`infile_chunk`]): it resets the connection on a bigger one.
const INFILE_CHUNK: usize = 256 * 1024;

/// The payload size of `LOAD DATA LOCAL` packets to a server with this
/// `max_allowed_packet`: [`INFILE_CHUNK`], or what fits with 1 KiB to spare (at least 512
/// bytes; the server's minimum is 1024).
pub(crate) fn infile_chunk(max_allowed_packet: usize) -> usize {
    INFILE_CHUNK.min(max_allowed_packet.saturating_sub(1024).max(512))
}

const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_LONG_FLAG: u32 = 0x4;
const CLIENT_LOCAL_FILES: u32 = 0x80;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
/// `MARIADB_CLIENT_STMT_BULK_OPERATIONS`, in the extended capabilities.
const BULK_OPERATIONS: u32 = 1 << 2;
/// What this client needs the server to offer.
const REQUIRED: u32 = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
/// `SERVER_MORE_RESULTS_EXISTS` in a status word.
const MORE_RESULTS: u16 = 0x8;
/// `utf8mb4_general_ci`, the connection's character set until the first `SET NAMES`.
const UTF8MB4: u8 = 45;

/// An error packet from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerError {
    /// The MySQL error number.
    pub(crate) code: u16,
    /// The SQLSTATE (`HY000` when the server sent none).
    pub(crate) state: String,
    /// The server's message.
    pub(crate) message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERROR {} ({}): {}", self.code, self.state, self.message)
    }
}

impl std::error::Error for ServerError {}

/// What went wrong on a wire connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError<E = std::convert::Infallible> {
    /// The server wants something this client does not speak (during the login only): use the
    /// `mysql` crate instead.
    #[error("not supported by the streaming client: {0}")]
    Unsupported(String),
    /// The server refused the statement or the login.
    #[error(transparent)]
    Server(ServerError),
    /// The server sent something that is not the protocol.
    #[error("malformed reply from the server: {0}")]
    Protocol(String),
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The row callback failed; the rest of the result was not read.
    #[error("the row callback failed")]
    Callback(E),
}

impl WireError {
    /// The same error, for a function whose callback fails with `E`.
    pub(crate) fn widen<E>(self) -> WireError<E> {
        match self {
            WireError::Unsupported(s) => WireError::Unsupported(s),
            WireError::Server(e) => WireError::Server(e),
            WireError::Protocol(s) => WireError::Protocol(s),
            WireError::Io(e) => WireError::Io(e),
        }
    }
}

type WResult<T> = std::result::Result<T, WireError>;

fn malformed<T>(what: impl Into<String>) -> WResult<T> {
    Err(WireError::Protocol(what.into()))
}

/// One row of a text result set: each value as the bytes the server sent, `None` for NULL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    data: &'a [u8],
    spans: &'a [Option<(usize, usize)>],
    names: &'a [String],
    /// Whether every length is in its shortest form.
    shortest: bool,
}

impl<'a> Row<'a> {
    /// The number of values.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The row's packet as received, when it is the canonical encoding of its values (every
    /// length in its shortest form, as servers send them): what [`crate::checksum`]'s v3
    /// hashes.
    pub(crate) fn packet(&self) -> Option<&'a [u8]> {
        self.shortest.then_some(self.data)
    }

    /// The position of the column named `name` (ASCII case ignored).
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.eq_ignore_ascii_case(name))
    }

    /// Value `i` (`None` for NULL or past the end).
    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.spans
            .get(i)
            .copied()
            .flatten()
            .map(|(a, b)| &self.data[a..b])
    }
}

/// Where the payload of the packet just read is.
enum At {
    /// In the read buffer.
    Buf(usize, usize),
    /// In `big` (a payload longer than the buffer, or joined from several packets).
    Big,
}

/// A connection. Not thread-safe; one statement at a time.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    big: Vec<u8>,
    seq: u8,
    spans: Vec<Option<(usize, usize)>>,
    /// The column names of the current result.
    names: Vec<String>,
    /// Set when a result was abandoned half-read: the connection cannot be used again.
    broken: bool,
    /// Whether the server takes `COM_STMT_BULK_EXECUTE` (MariaDB 10.2.7+).
    bulk: bool,
    /// The largest payload read ([`MAX_PACKET`]).
    max_packet: usize,
    /// The server's id of this connection (`CONNECTION_ID()`), from the handshake.
    id: u32,
    /// Where the connection goes and how long the server may stay silent; a silent server is
    /// asked from a second connection whether the statement still runs (see [`Conn::fill`]).
    url: Option<Box<DbUrl>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("wire::Conn")
            .field("peer", &self.stream.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A connection over `stream`, before the login.
    pub(crate) fn over(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0; BUF_SIZE],
            pos: 0,
            end: 0,
            big: Vec::new(),
            seq: 0,
            spans: Vec::new(),
            names: Vec::new(),
            broken: false,
            bulk: false,
            max_packet: MAX_PACKET,
            id: 0,
            url: None,
        }
    }

    /// Connects to `url` over TCP, logs in and runs each of `init`.
    ///
    /// # Errors
    /// [`WireError::Unsupported`] when the server asks for something this client does not
    /// speak (use the `mysql` crate then), [`WireError::Server`] when it refuses the login,
    /// [`WireError::Io`] when it cannot be reached.
    pub(crate) fn connect(url: &DbUrl, init: &[&str]) -> WResult<Conn> {
        let mut conn = Conn::open(url)?;
        conn.url = Some(Box::new(url.clone()));
        for sql in init {
            conn.exec(sql)?;
        }
        Ok(conn)
    }

    /// Connects and logs in, every read and write bounded by [`cs_core::Deadlines::reply`]
    /// (the login by [`cs_core::Deadlines::connect`]), without the check of a silent server.
    fn open(url: &DbUrl) -> WResult<Conn> {
        let d = url.deadlines;
        let mut last = None;
        let mut stream = None;
        for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, d.connect) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no address").into());
            }
        };
        stream.set_nodelay(true)?;
        // A dead path or host: the kernel notices (keepalive while idle, unacknowledged data
        // while busy).
        d.apply(&stream)?;
        // A port that accepts connections but never speaks must not hang the login.
        stream.set_read_timeout(Some(d.connect))?;
        stream.set_write_timeout(Some(d.reply))?;
        let mut conn = Conn::over(stream);
        conn.login(url).map_err(|e| match e {
            // Anything this client misreads during the login is better left to the crate.
            WireError::Protocol(why) => WireError::Unsupported(why),
            other => other,
        })?;
        // A server that goes silent after the login: see `fill`.
        conn.stream.set_read_timeout(Some(d.reply))?;
        Ok(conn)
    }

    /// Whether the server still runs this connection's statement, asked from a second
    /// connection after [`cs_core::Deadlines::reply`] without a byte: `Ok(())` to wait on, or
    /// why the connection counts as dead.
    ///
    /// A long statement that makes progress without sending anything (a key build, a big
    /// `ALTER TABLE`) shows in `information_schema.PROCESSLIST` as its connection's command
    /// `Query` (MariaDB `sql/sql_show.cc`, `fill_schema_processlist`); a server that answers
    /// nobody, or whose row for this connection is gone, idle or waiting to write to us, is
    /// not going to send the rest.
    fn still_running(&self, silent: std::time::Duration) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Err(format!("nothing arrived for {} s", silent.as_secs()));
        };
        let mut probe = Conn::open(url).map_err(|e| {
            format!(
                "nothing arrived for {} s, and a second connection could not ask the server \
                 about it ({e})",
                silent.as_secs()
            )
        })?;
        let mut row: Option<(String, String)> = None;
        probe
            .query::<std::convert::Infallible>(
                &format!(
                    "SELECT COMMAND, COALESCE(STATE, '') FROM information_schema.PROCESSLIST \
                     WHERE ID = {}",
                    self.id
                ),
                |r| {
                    let text = |i| String::from_utf8_lossy(r.get(i).unwrap_or(b"")).into_owned();
                    row = Some((text(0), text(1)));
                    Ok(())
                },
            )
            .map_err(|e| {
                format!(
                    "nothing arrived for {} s, and the server did not say whether the \
                     statement runs ({e})",
                    silent.as_secs()
                )
            })?;
        match row {
            // MySQL's and MariaDB's stage names for a thread blocked sending to its client
            // (`stage_sending_to_client`, `stage_writing_to_net`); UNCONFIRMED: that every
            // version names the wait this way.
            Some((command, state))
                if matches!(command.as_str(), "Query" | "Execute")
                    && !state.contains("to client")
                    && !state.contains("to net") =>
            {
                tracing::debug!(id = self.id, state, "server silent but the statement runs");
                Ok(())
            }
            Some((command, state)) => Err(format!(
                "nothing arrived for {} s although the server is done or waiting for us \
                 (connection {}: {command} {state})",
                silent.as_secs(),
                self.id
            )),
            None => Err(format!(
                "nothing arrived for {} s and the server no longer knows connection {}",
                silent.as_secs(),
                self.id
            )),
        }
    }

    /// A read that timed out: waits on while [`Conn::still_running`] says so, else the error.
    fn timed_out(&mut self, e: io::Error, since: Instant) -> io::Result<()> {
        if !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return Err(e);
        }
        let addr = self.url.as_ref().map_or_else(
            || "the server".to_string(),
            |u| format!("the database at {}", u.addr()),
        );
        self.still_running(since.elapsed()).map_err(|why| {
            self.broken = true;
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{addr} went silent: {why}"),
            )
        })
    }

    fn login(&mut self, url: &DbUrl) -> WResult<()> {
        let at = self.read_packet()?;
        let hello = Handshake::parse(self.payload(&at))?;
        self.id = hello.id;
        let mut plugin = hello.plugin;
        let mut scramble = hello.scramble;
        let password = url.password.expose().as_bytes();
        let auth = auth_response(&plugin, password, &scramble)?;
        self.bulk = hello.extended & BULK_OPERATIONS != 0;
        // MariaDB reads extended capabilities only from clients without `CLIENT_MYSQL`
        // (the old `CLIENT_LONG_PASSWORD` bit).
        let mysql_bit = if self.bulk { 0 } else { CLIENT_LONG_PASSWORD };
        let caps = mysql_bit
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_LOCAL_FILES;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&caps.to_le_bytes());
        out.extend_from_slice(&(1u32 << 30).to_le_bytes());
        out.push(UTF8MB4);
        out.extend_from_slice(&[0; 19]);
        let extended = if self.bulk { BULK_OPERATIONS } else { 0 };
        out.extend_from_slice(&extended.to_le_bytes());
        out.extend_from_slice(url.user.as_bytes());
        out.push(0);
        out.push(auth.len() as u8);
        out.extend_from_slice(&auth);
        out.extend_from_slice(plugin.as_bytes());
        out.push(0);
        self.send(&out)?;
        // OK, an error, an authentication switch, or more data for the plugin; a server
        // that keeps asking is not one this client understands.
        for _ in 0..4 {
            let at = self.read_packet()?;
            let p = self.payload(&at);
            match p.first() {
                Some(0x00) => return Ok(()),
                Some(0xFF) => return Err(WireError::Server(parse_error(p))),
                Some(0xFE) => {
                    let mut r = Reader(&p[1..]);
                    plugin = String::from_utf8_lossy(r.nul_terminated()?).into_owned();
                    scramble = r.rest().to_vec();
                    if scramble.last() == Some(&0) {
                        scramble.pop();
                    }
                    let auth = auth_response(&plugin, password, &scramble)?;
                    self.send(&auth)?;
                }
                Some(0x01) if plugin == "caching_sha2_password" => match p.get(1) {
                    // Fast authentication succeeded: the OK packet follows.
                    Some(3) => {}
                    Some(4) => {
                        return Err(WireError::Unsupported(
                            "caching_sha2_password asks for a full authentication".into(),
                        ));
                    }
                    _ => return malformed("unknown caching_sha2_password state"),
                },
                _ => return malformed("unexpected packet during the login"),
            }
        }
        malformed("the login did not finish")
    }

    /// Runs a statement that returns no rows (or whose rows are not wanted).
    ///
    /// # Errors
    /// As [`Conn::query`].
    pub(crate) fn exec(&mut self, sql: &str) -> WResult<()> {
        self.query(sql, |_| Ok(())).map_err(|e| match e {
            WireError::Callback(never) => match never {},
            other => other,
        })
    }

    /// Runs `sql` and calls `row` with each row of its result (none for a statement without
    /// one). The row's values borrow the connection's buffer.
    ///
    /// # Errors
    /// [`WireError::Server`] for the server's refusal, [`WireError::Callback`] when `row`
    /// fails (the connection is then unusable: the rest of the result was not read),
    /// [`WireError::Protocol`] or [`WireError::Io`] when the connection breaks.
    pub(crate) fn query<E>(
        &mut self,
        sql: &str,
        mut row: impl FnMut(Row<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), WireError<E>> {
        let at = self.command(sql).map_err(WireError::widen)?;
        let p = self.payload(&at);
        let columns = match p.first() {
            Some(0x00) => {
                let more = ok_status(p).map_err(WireError::widen)? & MORE_RESULTS != 0;
                return self.finish(more);
            }
            Some(0xFF) => {
                let e = parse_error(p);
                self.broken = false;
                return Err(WireError::Server(e));
            }
            Some(0xFB) => {
                return Err(WireError::Protocol(
                    "the server asked for a LOCAL INFILE".into(),
                ));
            }
            Some(_) => {
                let mut r = Reader(p);
                let n = r.lenenc().map_err(WireError::widen)?;
                usize::try_from(n).map_err(|_| WireError::Protocol(format!("{n} columns")))?
            }
            None => return Err(WireError::Protocol("empty reply".into())),
        };
        // Column definitions, then the EOF packet that ends them.
        self.names.clear();
        for _ in 0..columns {
            let at = self.read_packet().map_err(WireError::widen)?;
            let name = column_name(self.payload(&at)).map_err(WireError::widen)?;
            self.names.push(name);
        }
        let at = self.read_packet().map_err(WireError::widen)?;
        if !is_eof(self.payload(&at)) {
            return Err(WireError::Protocol(
                "no EOF packet after the column definitions".into(),
            ));
        }
        loop {
            let at = self.read_packet().map_err(WireError::widen)?;
            let data = match at {
                At::Buf(a, b) => &self.buf[a..b],
                At::Big => &self.big[..],
            };
            if is_eof(data) {
                let status = u16::from_le_bytes([data[3], data[4]]);
                return self.finish(status & MORE_RESULTS != 0);
            }
            if data.first() == Some(&0xFF) {
                let e = parse_error(data);
                self.broken = false;
                return Err(WireError::Server(e));
            }
            let shortest = parse_row(data, columns, &mut self.spans).map_err(WireError::widen)?;
            row(Row {
                data,
                spans: &self.spans,
                names: &self.names,
                shortest,
            })
            .map_err(WireError::Callback)?;
        }
    }

    /// Runs a `LOAD DATA LOCAL INFILE` statement and sends what `feed` writes as the file's
    /// content. The file name in the statement is never opened: whatever the server asks
    /// for, only `feed`'s bytes are sent (and [`Conn::query`] refuses such requests).
    ///
    /// # Errors
    /// As [`Conn::query`]; when `feed` fails, the file ends where it stopped, the server's
    /// answer is read (the connection stays usable) and the error is returned as
    /// [`WireError::Callback`].
    pub(crate) fn load_local<E>(
        &mut self,
        sql: &str,
        chunk: usize,
        feed: impl FnOnce(&mut dyn Write) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), WireError<E>> {
        let at = self.command(sql).map_err(WireError::widen)?;
        let p = self.payload(&at);
        match p.first() {
            Some(0xFB) => {}
            Some(0x00) => return self.finish(false),
            Some(0xFF) => {
                let e = parse_error(p);
                self.broken = false;
                return Err(WireError::Server(e));
            }
            _ => {
                return Err(WireError::Protocol(
                    "unexpected reply to LOAD DATA LOCAL".into(),
                ));
            }
        }
        let chunk = chunk.clamp(1, INFILE_CHUNK);
        let mut file = InfileWriter {
            conn: self,
            packet: Vec::with_capacity(chunk + 4),
            chunk,
        };
        file.packet.extend_from_slice(&[0; 4]);
        let fed = feed(&mut file);
        // What is still buffered, then the empty packet that ends the file, whatever
        // happened before.
        if file.packet.len() > 4 {
            file.send_packet()?;
        }
        file.send_packet()?;
        let at = self.read_packet().map_err(WireError::widen)?;
        let p = self.payload(&at);
        let answer = match p.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(WireError::Server(parse_error(p))),
            _ => Err(WireError::Protocol(
                "unexpected reply after a LOAD DATA LOCAL file".into(),
            )),
        };
        if matches!(answer, Err(WireError::Protocol(_))) {
            return answer;
        }
        self.broken = false;
        fed.map_err(WireError::Callback)?;
        answer
    }

    /// Starts a command: the connection counts as out of step until its answer is read.
    fn begin(&mut self) -> WResult<()> {
        if self.broken {
            return malformed("the connection was abandoned in the middle of a result");
        }
        self.broken = true;
        self.seq = 0;
        Ok(())
    }

    /// The server's id of this connection.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Whether the server takes [`Conn::bulk_execute`].
    pub(crate) fn can_bulk(&self) -> bool {
        self.bulk
    }

    /// Prepares `sql`; returns the statement's id and number of parameters.
    pub(crate) fn prepare(&mut self, sql: &str) -> WResult<(u32, u16)> {
        self.begin()?;
        let mut out = Vec::with_capacity(sql.len() + 1);
        out.push(0x16);
        out.extend_from_slice(sql.as_bytes());
        self.send(&out)?;
        let at = self.read_packet()?;
        let p = self.payload(&at);
        match p.first() {
            Some(0x00) if p.len() >= 12 => {}
            Some(0xFF) => {
                let e = parse_error(p);
                self.broken = false;
                return Err(WireError::Server(e));
            }
            _ => return malformed("unexpected reply to a prepare"),
        }
        let id = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
        let columns = u16::from_le_bytes([p[5], p[6]]);
        let params = u16::from_le_bytes([p[7], p[8]]);
        for n in [params, columns] {
            if n == 0 {
                continue;
            }
            for _ in 0..n {
                self.read_packet()?;
            }
            let at = self.read_packet()?;
            if !is_eof(self.payload(&at)) {
                return malformed("no EOF after the definitions of a prepared statement");
            }
        }
        self.broken = false;
        Ok((id, params))
    }

    /// Sends a bulk command and reads the answer; the command keeps its header and loses its
    /// rows. Returns the number of rows the server inserted.
    ///
    /// # Errors
    /// [`WireError::Server`] when the server refuses the rows (the connection stays usable),
    /// [`WireError::Io`] or [`WireError::Protocol`] when the connection fails.
    pub(crate) fn bulk_execute(&mut self, cmd: &mut BulkCommand) -> WResult<u64> {
        self.begin()?;
        let n = cmd.buf.len() - 4;
        if n < MAX_PAYLOAD {
            // One packet: its header goes in front of the command, which is sent as it is.
            cmd.buf[..3].copy_from_slice(&(n as u32).to_le_bytes()[..3]);
            cmd.buf[3] = 0;
            self.seq = 1;
            self.stream.write_all(&cmd.buf)?;
        } else {
            self.send(&cmd.buf[4..])?;
        }
        cmd.clear();
        let at = self.read_packet()?;
        let p = self.payload(&at);
        match p.first() {
            Some(0x00) => {
                let n = Reader(&p[1..]).lenenc()?;
                self.broken = false;
                Ok(n)
            }
            Some(0xFF) => {
                let e = parse_error(p);
                self.broken = false;
                Err(WireError::Server(e))
            }
            _ => malformed("unexpected reply to a bulk execute"),
        }
    }

    /// Closes a prepared statement (the server does not answer).
    pub(crate) fn close_statement(&mut self, id: u32) -> WResult<()> {
        self.seq = 0;
        let mut out = vec![0x19];
        out.extend_from_slice(&id.to_le_bytes());
        self.send(&out)?;
        Ok(())
    }

    /// Sends `sql` as `COM_QUERY` and reads the first packet of the answer. The connection
    /// counts as out of step until the caller has read the answer to its end.
    fn command(&mut self, sql: &str) -> WResult<At> {
        self.begin()?;
        let mut out = Vec::with_capacity(sql.len() + 1);
        out.push(0x03);
        out.extend_from_slice(sql.as_bytes());
        self.send(&out)?;
        self.read_packet()
    }

    /// Ends a statement: the connection is in step again.
    fn finish<E>(&mut self, more: bool) -> std::result::Result<(), WireError<E>> {
        if self.big.capacity() > BUF_SIZE {
            self.big = Vec::new();
        }
        if more {
            return Err(WireError::Protocol(
                "the statement returned more than one result".into(),
            ));
        }
        self.broken = false;
        Ok(())
    }

    fn payload(&self, at: &At) -> &[u8] {
        match *at {
            At::Buf(a, b) => &self.buf[a..b],
            At::Big => &self.big,
        }
    }

    /// Makes at least `need` (≤ the buffer's size) unread bytes available in the buffer.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.buf.len() - self.pos < need {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let mut since = Instant::now();
        while self.end - self.pos < need {
            let n = match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.timed_out(e, since)?;
                    continue;
                }
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.end += n;
            since = Instant::now();
        }
        Ok(())
    }

    /// Reads the next packet, joining a payload split over several.
    fn read_packet(&mut self) -> WResult<At> {
        let mut joined = false;
        loop {
            self.fill(4)?;
            let h = &self.buf[self.pos..self.pos + 4];
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            if h[3] != self.seq {
                return malformed(format!(
                    "packet {} arrived where {} was expected",
                    h[3], self.seq
                ));
            }
            self.seq = self.seq.wrapping_add(1);
            self.pos += 4;
            if !joined && len < MAX_PAYLOAD && len <= self.buf.len() {
                self.fill(len)?;
                let start = self.pos;
                self.pos += len;
                return Ok(At::Buf(start, self.pos));
            }
            if !joined {
                self.big.clear();
                joined = true;
            }
            if self.big.len() + len > self.max_packet {
                self.broken = true;
                return malformed(format!(
                    "the server sends a packet of more than {} bytes (the most any server's \
                     max_allowed_packet allows)",
                    self.max_packet
                ));
            }
            let buffered = (self.end - self.pos).min(len);
            self.big
                .extend_from_slice(&self.buf[self.pos..self.pos + buffered]);
            self.pos += buffered;
            let mut start = self.big.len();
            self.big.resize(start + len - buffered, 0);
            let mut since = Instant::now();
            while start < self.big.len() {
                match self.stream.read(&mut self.big[start..]) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        )
                        .into());
                    }
                    Ok(n) => {
                        start += n;
                        since = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => self.timed_out(e, since)?,
                }
            }
            if len < MAX_PAYLOAD {
                return Ok(At::Big);
            }
        }
    }

    /// Sends `payload` as the next packet(s).
    fn send(&mut self, payload: &[u8]) -> WResult<()> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < MAX_PAYLOAD {
                break;
            }
        }
        self.stream.write_all(&out)?;
        Ok(())
    }
}

/// A parameter sent as bytes: stored as they are in binary columns, checked against the
/// column's character set in text columns (as `LOAD DATA … CHARACTER SET binary` does).
pub(crate) const PARAM_BYTES: u8 = 252;
/// A parameter sent as text in the connection's character set, converted to the column's.
pub(crate) const PARAM_TEXT: u8 = 253;

/// A `COM_STMT_BULK_EXECUTE` command for one prepared statement: its header, then rows that
/// callers append to [`BulkCommand::buf`] with [`bulk_value`] (one value per parameter).
#[derive(Debug)]
pub(crate) struct BulkCommand {
    /// Four bytes for the packet header, the command's header, then the rows.
    buf: Vec<u8>,
    /// Where the rows start.
    rows_at: usize,
}

impl BulkCommand {
    /// A command for statement `id` whose parameters have the types `types`
    /// ([`PARAM_BYTES`], [`PARAM_TEXT`]).
    pub(crate) fn new(id: u32, types: &[u8]) -> BulkCommand {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&[0; 4]);
        buf.push(0xFA);
        buf.extend_from_slice(&id.to_le_bytes());
        // The types follow the header.
        buf.extend_from_slice(&128u16.to_le_bytes());
        for &t in types {
            buf.extend_from_slice(&[t, 0]);
        }
        let rows_at = buf.len();
        BulkCommand { buf, rows_at }
    }

    /// The buffer to append rows to.
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The command's size on the wire without packet headers.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - 4
    }

    /// Drops the rows.
    pub(crate) fn clear(&mut self) {
        self.buf.truncate(self.rows_at);
    }

    /// Whether the command holds no rows.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.len() == self.rows_at
    }
}

/// Appends one value of a bulk-execute row: the indicator, then the bytes as a
/// length-encoded string; `None` is NULL.
pub(crate) fn bulk_value(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let Some(v) = v else {
        out.push(1);
        return;
    };
    let start = bulk_value_start(out);
    out.extend_from_slice(v);
    bulk_value_end(out, start);
}

/// Starts a bulk-execute value whose bytes the caller appends next; returns where they start,
/// for [`bulk_value_end`].
pub(crate) fn bulk_value_start(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0, 0]);
    out.len()
}

/// Ends the value started at `start`: writes its length in front of it (in its shortest form,
/// moving the bytes when the length needs more than one byte).
pub(crate) fn bulk_value_end(out: &mut Vec<u8>, start: usize) {
    let n = out.len() - start;
    let (first, more): (u8, &[u8]) = match n {
        0..251 => (n as u8, &[]),
        251..0x1_0000 => (0xFC, &(n as u16).to_le_bytes()),
        0x1_0000..0x100_0000 => (0xFD, &(n as u32).to_le_bytes()[..3]),
        _ => (0xFE, &(n as u64).to_le_bytes()),
    };
    out[start - 1] = first;
    if !more.is_empty() {
        out.splice(start..start, more.iter().copied());
    }
}

/// The file of a `LOAD DATA LOCAL` statement, sent in packets of `chunk` bytes.
struct InfileWriter<'c> {
    conn: &'c mut Conn,
    /// The next packet: a 4-byte header, then the payload.
    packet: Vec<u8>,
    /// The payload of a full packet.
    chunk: usize,
}

impl InfileWriter<'_> {
    /// Sends the buffered payload (an empty one ends the file) as one packet.
    fn send_packet(&mut self) -> io::Result<()> {
        let n = self.packet.len() - 4;
        self.packet[..3].copy_from_slice(&(n as u32).to_le_bytes()[..3]);
        self.packet[3] = self.conn.seq;
        self.conn.seq = self.conn.seq.wrapping_add(1);
        self.conn.stream.write_all(&self.packet)?;
        self.packet.truncate(4);
        Ok(())
    }
}

impl Write for InfileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.chunk + 4 - self.packet.len();
        let n = buf.len().min(room);
        self.packet.extend_from_slice(&buf[..n]);
        if self.packet.len() == self.chunk + 4 {
            self.send_packet()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the server's first packet says.
#[derive(Debug)]
struct Handshake {
    /// The connection's id on the server.
    id: u32,
    /// MariaDB's extended capabilities (bits 32–63), 0 from other servers.
    extended: u32,
    scramble: Vec<u8>,
    plugin: String,
}

impl Handshake {
    fn parse(p: &[u8]) -> WResult<Handshake> {
        match p.first() {
            Some(0xFF) => return Err(WireError::Server(parse_error(p))),
            Some(10) => {}
            Some(v) => return Err(WireError::Unsupported(format!("handshake version {v}"))),
            None => return malformed("empty handshake"),
        }
        let mut r = Reader(&p[1..]);
        r.nul_terminated()?; // server version
        let id = r.take(4)?;
        let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
        let mut scramble = r.take(8)?.to_vec();
        r.take(1)?;
        let low = u32::from(r.u16()?);
        r.take(1)?; // character set
        r.take(2)?; // status
        let caps = low | u32::from(r.u16()?) << 16;
        if caps & REQUIRED != REQUIRED {
            return Err(WireError::Unsupported(format!(
                "server capabilities {caps:#x} lack protocol 4.1 authentication"
            )));
        }
        let auth_len = usize::from(r.take(1)?[0]);
        let reserved = r.take(10)?;
        let extended = if caps & CLIENT_LONG_PASSWORD == 0 {
            u32::from_le_bytes([reserved[6], reserved[7], reserved[8], reserved[9]])
        } else {
            0
        };
        let more = r.take(auth_len.saturating_sub(8).max(13))?;
        scramble.extend_from_slice(more.strip_suffix(&[0]).unwrap_or(more));
        let plugin = match r.nul_terminated() {
            Ok(name) => name,
            // Some servers end the name with the packet instead of a NUL.
            Err(_) => r.rest(),
        };
        Ok(Handshake {
            id,
            extended,
            scramble,
            plugin: String::from_utf8_lossy(plugin).into_owned(),
        })
    }
}

/// The login answer for `plugin`.
fn auth_response(plugin: &str, password: &[u8], scramble: &[u8]) -> WResult<Vec<u8>> {
    if password.is_empty() {
        return Ok(Vec::new());
    }
    let Some(scramble) = scramble.get(..20) else {
        return malformed(format!("a {}-byte scramble", scramble.len()));
    };
    match plugin {
        // SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))
        "mysql_native_password" => {
            let one = Sha1::digest(password);
            let two = Sha1::digest(one);
            let mask = Sha1::new()
                .chain_update(scramble)
                .chain_update(two)
                .finalize();
            Ok(one.iter().zip(mask).map(|(a, b)| a ^ b).collect())
        }
        // SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble)
        "caching_sha2_password" => {
            let one = Sha256::digest(password);
            let two = Sha256::digest(one);
            let mask = Sha256::new()
                .chain_update(two)
                .chain_update(scramble)
                .finalize();
            Ok(one.iter().zip(mask).map(|(a, b)| a ^ b).collect())
        }
        other => Err(WireError::Unsupported(format!(
            "the authentication plugin {other}"
        ))),
    }
}

/// An EOF packet: `0xFE` and less than 9 bytes (a row starting with an 8-byte length is
/// longer).
fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xFE) && p.len() < 9 && p.len() >= 5
}

/// The status word of an OK packet.
fn ok_status(p: &[u8]) -> WResult<u16> {
    let mut r = Reader(&p[1..]);
    r.lenenc()?; // affected rows
    r.lenenc()?; // last insert id
    r.u16()
}

fn parse_error(p: &[u8]) -> ServerError {
    let code = match p.get(1..3) {
        Some(c) => u16::from_le_bytes([c[0], c[1]]),
        None => 0,
    };
    let rest = p.get(3..).unwrap_or_default();
    let (state, message) = match rest.split_first() {
        Some((b'#', r)) if r.len() >= 5 => (String::from_utf8_lossy(&r[..5]), &r[5..]),
        _ => ("HY000".into(), rest),
    };
    ServerError {
        code,
        state: state.into_owned(),
        message: String::from_utf8_lossy(message).into_owned(),
    }
}

/// The name in a column definition: the fifth of its length-encoded strings (after catalog,
/// schema, table and original table).
fn column_name(p: &[u8]) -> WResult<String> {
    let mut r = Reader(p);
    for _ in 0..4 {
        r.lenenc_bytes()?;
    }
    Ok(String::from_utf8_lossy(r.lenenc_bytes()?).into_owned())
}

/// Splits a text row into its `columns` values; says whether every length was in its
/// shortest form.
fn parse_row(p: &[u8], columns: usize, spans: &mut Vec<Option<(usize, usize)>>) -> WResult<bool> {
    spans.clear();
    let mut shortest = true;
    let mut i = 0;
    for _ in 0..columns {
        let (start, len) = match p.get(i) {
            Some(0xFB) => {
                spans.push(None);
                i += 1;
                continue;
            }
            // Most values are shorter than 251 bytes: a one-byte length.
            Some(&n) if n < 0xFB => (i + 1, u64::from(n)),
            _ => {
                let mut r = Reader(&p[i.min(p.len())..]);
                let len = r.lenenc()?;
                let start = p.len() - r.0.len();
                shortest &= match start - i {
                    3 => len >= 251,
                    4 => len >= 1 << 16,
                    _ => len >= 1 << 24,
                };
                (start, len)
            }
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= p.len());
        let Some(end) = end else {
            return malformed(format!("a value of {len} bytes in a {}-byte row", p.len()));
        };
        spans.push(Some((start, end)));
        i = end;
    }
    if i != p.len() {
        return malformed(format!(
            "a row of {columns} values with {} bytes left over",
            p.len() - i
        ));
    }
    Ok(shortest)
}

/// Reads protocol fields from the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> WResult<&'a [u8]> {
        if self.0.len() < n {
            return malformed(format!(
                "{n} bytes wanted, {} left in the packet",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> WResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn nul_terminated(&mut self) -> WResult<&'a [u8]> {
        let Some(n) = self.0.iter().position(|b| *b == 0) else {
            return malformed("a string without its terminating NUL");
        };
        let s = self.take(n)?;
        self.take(1)?;
        Ok(s)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    /// A length-encoded string.
    fn lenenc_bytes(&mut self) -> WResult<&'a [u8]> {
        let n = self.lenenc()?;
        match usize::try_from(n) {
            Ok(n) => self.take(n),
            Err(_) => malformed(format!("a string of {n} bytes")),
        }
    }

    /// A length-encoded integer.
    fn lenenc(&mut self) -> WResult<u64> {
        let first = self.take(1)?[0];
        let width = match first {
            0..=0xFA => return Ok(u64::from(first)),
            0xFC => 2,
            0xFD => 3,
            0xFE => 8,
            _ => return malformed(format!("{first:#x} where a length was expected")),
        };
        let b = self.take(width)?;
        let mut le = [0u8; 8];
        le[..width].copy_from_slice(b);
        Ok(u64::from_le_bytes(le))
    }
}

/// The packet parsers on one payload, for [`crate::fuzz::wire_packets`]: `data[0]` is the
/// number of columns a row is split into.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_parse_packet(data: &[u8]) {
    let Some((&columns, p)) = data.split_first() else {
        return;
    };
    let _ = Handshake::parse(p);
    let _ = parse_error(p);
    let _ = column_name(p);
    let _ = is_eof(p);
    if !p.is_empty() {
        let _ = ok_status(p);
    }
    let mut spans = Vec::new();
    if let Ok(shortest) = parse_row(p, usize::from(columns), &mut spans) {
        assert_eq!(
            spans.len(),
            usize::from(columns),
            "a row of the wrong width"
        );
        for (a, b) in spans.iter().flatten() {
            assert!(a <= b && *b <= p.len(), "a value outside its row");
        }
        let row = Row {
            data: p,
            spans: &spans,
            names: &[],
            shortest,
        };
        for i in 0..row.len() {
            let _ = row.get(i);
        }
    }
    for plugin in ["mysql_native_password", "caching_sha2_password", "other"] {
        let _ = auth_response(plugin, b"pw", p);
    }
}

/// The packet cap used by [`fuzz_conversation`]: small, so that a fuzzer reaches it.
#[cfg(any(test, feature = "fuzzing"))]
const FUZZ_MAX_PACKET: usize = 4 << 20;

/// Runs the client over `conn` as `mode` says, for [`crate::fuzz::wire_conversation`]: 0 the
/// login then a query and a statement, 1 two queries, 2 a prepare and a bulk insert, 3 a
/// `LOAD DATA LOCAL`, 4 the login then a `LOAD DATA LOCAL`. Returns the first error; panics
/// when the client holds more than its packet cap.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_conversation(conn: &mut Conn, mode: u8) -> WResult<()> {
    conn.max_packet = FUZZ_MAX_PACKET;
    let url = DbUrl::new(
        "127.0.0.1",
        3306,
        "fuzz",
        cs_core::Secret::new("secret".to_string()),
    );
    let bounded = |conn: &Conn| {
        assert!(
            conn.big.len() <= conn.max_packet && conn.big.capacity() <= 2 * conn.max_packet,
            "{} bytes held past the packet cap",
            conn.big.capacity()
        );
    };
    let query = |conn: &mut Conn, sql: &str| -> WResult<()> {
        let mut values = 0usize;
        let r = conn.query::<std::convert::Infallible>(sql, |row| {
            for i in 0..row.len() {
                values += row.get(i).map_or(0, <[u8]>::len);
            }
            let _ = (row.packet(), row.position("id"));
            Ok(())
        });
        bounded(conn);
        r.map_err(|e| match e {
            WireError::Callback(never) => match never {},
            WireError::Unsupported(s) => WireError::Unsupported(s),
            WireError::Server(e) => WireError::Server(e),
            WireError::Protocol(s) => WireError::Protocol(s),
            WireError::Io(e) => WireError::Io(e),
        })
    };
    let load = |conn: &mut Conn| -> WResult<()> {
        let r = conn.load_local::<io::Error>(
            "LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
            INFILE_CHUNK,
            |w| w.write_all(b"1\t2\n"),
        );
        bounded(conn);
        match r {
            Err(WireError::Callback(e)) => Err(WireError::Io(e)),
            Err(WireError::Unsupported(s)) => Err(WireError::Unsupported(s)),
            Err(WireError::Server(e)) => Err(WireError::Server(e)),
            Err(WireError::Protocol(s)) => Err(WireError::Protocol(s)),
            Err(WireError::Io(e)) => Err(WireError::Io(e)),
            Ok(()) => Ok(()),
        }
    };
    match mode % 5 {
        0 => {
            let r = conn.login(&url);
            bounded(conn);
            r?;
            query(conn, "SELECT 1")?;
            conn.exec("SET NAMES utf8mb4")
        }
        1 => {
            let first = query(conn, "SELECT 1");
            // A connection left out of step refuses the next statement; one in step runs it.
            let second = query(conn, "SELECT 2");
            first.and(second)
        }
        2 => {
            let (id, params) = conn.prepare("INSERT INTO t VALUES (?)")?;
            bounded(conn);
            let mut cmd = BulkCommand::new(id, &vec![PARAM_BYTES; usize::from(params.min(8))]);
            bulk_value(cmd.buf(), Some(b"x"));
            let r = conn.bulk_execute(&mut cmd);
            bounded(conn);
            r.map(|_| ())
        }
        3 => load(conn),
        _ => {
            let r = conn.login(&url);
            bounded(conn);
            r?;
            load(conn)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infile_packets_fit_the_servers_limit() {
        assert_eq!(infile_chunk(16 * 1024 * 1024), INFILE_CHUNK);
        assert_eq!(infile_chunk(96 * 1024), 95 * 1024);
        // The server's minimum, and nonsense.
        assert_eq!(infile_chunk(1024), 512);
        assert_eq!(infile_chunk(0), 512);
    }

    #[test]
    fn scrambles_match_independent_computations() {
        // Pinned values computed independently with Python's hashlib.
        let scramble = b"abcdefghijklmnopqrst";
        let got = auth_response("mysql_native_password", b"secret", scramble).unwrap();
        assert_eq!(
            hex(&got),
            "8817c50fa779daef010ee7577825b0847df9842e",
            "SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))"
        );
        let got = auth_response("caching_sha2_password", b"secret", scramble).unwrap();
        assert_eq!(
            hex(&got),
            "c76e2898612a4cf042c77fa8c4702c4c64c0c2c557c53c4d75595aaa6abae809",
            "SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)"
        );
        assert!(
            auth_response("mysql_native_password", b"", scramble)
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            auth_response("client_ed25519", b"x", scramble),
            Err(WireError::Unsupported(_))
        ));
        assert!(matches!(
            auth_response("mysql_native_password", b"x", b"short"),
            Err(WireError::Protocol(_))
        ));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rows_split_into_values_and_nulls() {
        let mut spans = Vec::new();
        let mut p = vec![3, b'a', b'b', b'c', 0xFB, 0];
        let long = vec![b'x'; 300];
        p.extend_from_slice(&[0xFC, 0x2C, 0x01]);
        p.extend_from_slice(&long);
        assert!(parse_row(&p, 4, &mut spans).unwrap());
        let names = ["a".to_string(), "B".to_string()];
        let row = Row {
            data: &p,
            spans: &spans,
            names: &names,
            shortest: true,
        };
        assert_eq!((row.position("b"), row.position("c")), (Some(1), None));
        assert_eq!(row.len(), 4);
        assert_eq!(row.get(0), Some(&b"abc"[..]));
        assert_eq!(row.get(1), None);
        assert_eq!(row.get(2), Some(&b""[..]));
        assert_eq!(row.get(3), Some(&long[..]));
        assert_eq!(row.get(4), None);
    }

    #[test]
    fn lengths_longer_than_needed_are_noticed() {
        let mut spans = Vec::new();
        assert!(!parse_row(&[0xFC, 1, 0, b'a'], 1, &mut spans).unwrap());
        assert!(!parse_row(&[0xFD, 1, 0, 0, b'a'], 1, &mut spans).unwrap());
        let mut p = vec![0xFE, 1, 0, 0, 0, 0, 0, 0, 0, b'a'];
        assert!(!parse_row(&p, 1, &mut spans).unwrap());
        p = vec![0xFC, 251, 0];
        p.extend_from_slice(&[b'x'; 251]);
        assert!(parse_row(&p, 1, &mut spans).unwrap());
    }

    #[test]
    fn malformed_rows_are_errors_not_panics() {
        let mut spans = Vec::new();
        for (bytes, columns) in [
            (&[5, b'a'][..], 1),                // value longer than the row
            (&[1, b'a', 1, b'b'][..], 1),       // bytes left over
            (&[1, b'a'][..], 2),                // a column missing
            (&[0xFF, 0, 0][..], 1),             // not a length
            (&[0xFE, 1, 0, 0, 0, 0, 0][..], 1), // truncated 8-byte length
            (
                &[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF][..],
                1,
            ),
        ] {
            assert!(
                matches!(
                    parse_row(bytes, columns, &mut spans),
                    Err(WireError::Protocol(_))
                ),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn column_names_come_from_definitions() {
        let mut p = Vec::new();
        for s in ["def", "cloud", "t", "t", "Create Table", "c"] {
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
        assert_eq!(column_name(&p).unwrap(), "Create Table");
        assert!(column_name(&p[..12]).is_err());
    }

    #[test]
    fn error_packets_with_and_without_sqlstate() {
        let mut p = vec![0xFF, 0x15, 0x04, b'#'];
        p.extend_from_slice(b"28000Access denied");
        let e = parse_error(&p);
        assert_eq!((e.code, e.state.as_str()), (1045, "28000"));
        assert_eq!(e.to_string(), "ERROR 1045 (28000): Access denied");
        let e = parse_error(b"\xFF\x69\x04Host blocked");
        assert_eq!(
            (e.code, e.state.as_str(), e.message.as_str()),
            (1129, "HY000", "Host blocked")
        );
        assert_eq!(parse_error(b"\xFF").code, 0);
    }

    #[test]
    fn handshakes_parse_or_are_unsupported() {
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.6-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"12345678\0");
        let caps = REQUIRED | 0xF7FF;
        let caps_at = p.len();
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"9abcdefghijk\0");
        p.extend_from_slice(b"mysql_native_password\0");
        let h = Handshake::parse(&p).unwrap();
        assert_eq!(h.scramble, b"123456789abcdefghijk");
        assert_eq!(h.plugin, "mysql_native_password");
        // `CLIENT_MYSQL` (bit 0) is set: the reserved bytes are not MariaDB's capabilities.
        assert_eq!(h.extended, 0);
        let mut mariadb = p.clone();
        mariadb[caps_at] &= !(CLIENT_LONG_PASSWORD as u8);
        mariadb[caps_at + 3 + 2 + 2 + 1 + 6..][..4].copy_from_slice(&0x1Fu32.to_le_bytes());
        let h = Handshake::parse(&mariadb).unwrap();
        assert_eq!(h.extended & BULK_OPERATIONS, BULK_OPERATIONS);
        assert_eq!(h.scramble, b"123456789abcdefghijk");
        for cut in 0..p.len() - 22 {
            assert!(Handshake::parse(&p[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            Handshake::parse(&[9, 0]),
            Err(WireError::Unsupported(_))
        ));
    }

    #[test]
    fn bulk_values_carry_their_length_in_the_shortest_form() {
        for n in [0usize, 1, 250, 251, 65_535, 65_536, 0xFF_FFFF, 0x100_0000] {
            let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut out = vec![0xAA];
            bulk_value(&mut out, Some(&v));
            assert_eq!(out[0], 0xAA);
            assert_eq!(out[1], 0, "indicator: a value follows ({n})");
            let mut r = Reader(&out[2..]);
            assert_eq!(r.lenenc_bytes().unwrap(), &v[..], "{n}");
            assert!(r.rest().is_empty());
            let prefix = out.len() - 2 - n;
            let shortest = match n {
                0..251 => 1,
                251..0x1_0000 => 3,
                0x1_0000..0x100_0000 => 4,
                _ => 9,
            };
            assert_eq!(prefix, shortest, "{n}");
        }
        let mut out = Vec::new();
        bulk_value(&mut out, None);
        assert_eq!(out, [1], "NULL is the indicator alone");
    }

    #[test]
    fn bulk_commands_start_with_the_statement_and_types() {
        let mut cmd = BulkCommand::new(0x0102_0304, &[PARAM_BYTES, PARAM_TEXT]);
        assert!(cmd.is_empty());
        assert_eq!(
            cmd.len(),
            1 + 4 + 2 + 4,
            "command, statement, flags, two types"
        );
        bulk_value(cmd.buf(), Some(b"x"));
        bulk_value(cmd.buf(), None);
        assert!(!cmd.is_empty());
        assert_eq!(
            &cmd.buf()[4..],
            [0xFA, 4, 3, 2, 1, 128, 0, 252, 0, 253, 0, 0, 1, b'x', 1]
        );
        cmd.clear();
        assert!(cmd.is_empty());
    }

    #[test]
    fn a_payload_beyond_max_packet_is_refused_not_allocated() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // Continuation packets of the largest size, for ever.
        let writer = std::thread::spawn(move || {
            let chunk = vec![0u8; MAX_PAYLOAD];
            let mut seq = 0u8;
            loop {
                let head = [0xFF, 0xFF, 0xFF, seq];
                if server
                    .write_all(&head)
                    .and_then(|()| server.write_all(&chunk))
                    .is_err()
                {
                    break;
                }
                seq = seq.wrapping_add(1);
            }
        });
        let mut conn = Conn::over(client);
        conn.max_packet = 3 * MAX_PAYLOAD;
        let err = conn.read_packet().err().expect("refused");
        assert!(err.to_string().contains("more than"), "{err}");
        assert!(conn.big.len() <= 3 * MAX_PAYLOAD);
        drop(conn);
        writer.join().unwrap();
    }
}
