//! Deadlines for network peers that may vanish: TCP keepalive, `TCP_USER_TIMEOUT` and the
//! silence bounds the database and SSH clients apply.
//!
//! A peer can disappear in two ways. Its host or the path to it dies: nothing acknowledges
//! what is sent any more, which TCP keepalive (probes while idle) and `TCP_USER_TIMEOUT`
//! (unacknowledged data while busy) notice in the kernel. Or its host still acknowledges but
//! the program stops answering (a hung server, a stalled middlebox): only the application can
//! notice, by how long it waited for a reply. [`Deadlines`] bounds both.

use std::net::TcpStream;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// How long a network peer may stay silent, for database and SSH connections.
///
/// The defaults report a silent peer within two minutes without any setting: a dead path after
/// about 30 s of keepalive probes (or 60 s of unacknowledged data), a hung server after
/// [`Deadlines::reply`] plus one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// TCP connect (and, for the database, the login). Default 15 s.
    pub connect: Duration,
    /// How long a reply may take before the peer is questioned. A short statement or a
    /// stream of rows silent this long fails; a long statement (a key build) is checked from a
    /// second connection and waited for as long as the server says it runs. SSH sends a
    /// keepalive request after this much silence and gives up when a second period passes
    /// without any answer. Also the `TCP_USER_TIMEOUT`. Default 60 s.
    pub reply: Duration,
    /// Idle time before the first TCP keepalive probe; probes then follow every third of it,
    /// and four unanswered ones close the connection. Default 15 s.
    pub keepalive: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(15),
            reply: Duration::from_secs(60),
            keepalive: Duration::from_secs(15),
        }
    }
}

impl Deadlines {
    /// Deadlines with every bound set from `reply` (for tests and impatient callers):
    /// connect and keepalive at half of it, at least one second each.
    pub fn quick(reply: Duration) -> Deadlines {
        let half = (reply / 2).max(Duration::from_secs(1));
        Deadlines {
            connect: half,
            reply,
            keepalive: half,
        }
    }

    /// The interval between keepalive probes once they started.
    pub fn keepalive_interval(&self) -> Duration {
        (self.keepalive / 3).max(Duration::from_secs(1))
    }

    /// Unanswered keepalive probes before the kernel closes the connection.
    pub const KEEPALIVE_PROBES: u32 = 4;

    /// Turns on TCP keepalive and `TCP_USER_TIMEOUT` on `stream`.
    ///
    /// # Errors
    /// The `setsockopt` failure.
    pub fn apply(&self, stream: &TcpStream) -> std::io::Result<()> {
        let sock = SockRef::from(stream);
        let keepalive = TcpKeepalive::new()
            .with_time(self.keepalive.max(Duration::from_secs(1)))
            .with_interval(self.keepalive_interval())
            .with_retries(Self::KEEPALIVE_PROBES);
        sock.set_tcp_keepalive(&keepalive)?;
        sock.set_tcp_user_timeout(Some(self.reply.max(Duration::from_secs(1))))
    }

    /// [`Deadlines::reply`] in whole milliseconds, for APIs that take them.
    pub fn reply_ms(&self) -> u32 {
        u32::try_from(self.reply.as_millis()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_report_a_silent_peer_within_two_minutes() {
        let d = Deadlines::default();
        let dead_path = d.keepalive + d.keepalive_interval() * Deadlines::KEEPALIVE_PROBES;
        assert!(dead_path < Duration::from_secs(120), "{dead_path:?}");
        // A hung server: one reply period, then a check bounded by connect + reply.
        assert!(d.reply + d.connect + d.reply / 2 <= Duration::from_secs(120));
    }

    #[test]
    fn options_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        Deadlines::quick(Duration::from_secs(4)).apply(&s).unwrap();
        let sock = SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(2));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(4))
        );
    }
}
