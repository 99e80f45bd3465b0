//! [`DbUrl`] to the `mysql` crate's options (feature `mysql`): the one place where its host,
//! credentials, [`crate::Deadlines`] and [`crate::DbTls`] become connection options, so every
//! crate that connects with the `mysql` crate encrypts, verifies and times out alike.

use std::time::Duration;

use mysql::{ClientIdentity, Conn, OptsBuilder, SslOpts};

use crate::{DbTls, DbUrl, TlsMode};

/// What a refused login in clear means when the server takes the same login over TLS.
pub const TLS_REQUIRED: &str = "the server requires TLS (require_secure_transport=ON) and \
     ssl-mode is DISABLED: set ssl-mode=VERIFY_CA with ssl-ca (or at least REQUIRED)";

/// MySQL's and MariaDB's `ER_ACCESS_DENIED_ERROR`.
pub const ER_ACCESS_DENIED: u16 = 1045;

impl DbUrl {
    /// The `mysql` crate's options: host, port, user, password and default schema, TCP (never
    /// the Unix socket), the connect timeout, TCP keepalive and `TCP_USER_TIMEOUT` from
    /// [`DbUrl::deadlines`], a write timeout of [`crate::Deadlines::reply`], and TLS from
    /// [`DbUrl::tls`]. No read timeout: callers add one for short statements only (a client
    /// that gives up on a long statement does not stop it on the server).
    ///
    /// TLS (rustls): `REQUIRED` and `PREFERRED` accept any certificate, `VERIFY_CA` checks
    /// the chain against `ssl-ca` but not the name, `VERIFY_IDENTITY` checks both. The crate
    /// also trusts the public web CAs it carries (`webpki-roots`) next to `ssl-ca`.
    /// [`DbUrl::mysql_connect`] carries out `PREFERRED`'s fallback to clear.
    pub fn mysql_opts(&self) -> OptsBuilder {
        let d = self.deadlines;
        let opts = OptsBuilder::new()
            .ip_or_hostname(Some(self.host.clone()))
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.expose().to_string()))
            .db_name(self.database.clone())
            .prefer_socket(false)
            .tcp_connect_timeout(Some(d.connect))
            .write_timeout(Some(d.reply))
            .tcp_keepalive_time_ms(Some(ms(d.keepalive)))
            .tcp_keepalive_probe_interval_secs(Some(
                u32::try_from(d.keepalive_interval().as_secs()).unwrap_or(u32::MAX),
            ))
            .tcp_keepalive_probe_count(Some(crate::Deadlines::KEEPALIVE_PROBES))
            .tcp_user_timeout_ms(Some(ms(d.reply)));
        opts.ssl_opts(self.ssl_opts())
    }

    fn ssl_opts(&self) -> Option<SslOpts> {
        let tls = &self.tls;
        let mut ssl = match tls.mode {
            TlsMode::Disabled => return None,
            TlsMode::Preferred | TlsMode::Required => {
                SslOpts::default().with_danger_accept_invalid_certs(true)
            }
            TlsMode::VerifyCa => SslOpts::default().with_danger_skip_domain_validation(true),
            TlsMode::VerifyIdentity => SslOpts::default(),
        };
        if let Some(ca) = &tls.ca {
            ssl = ssl.with_root_cert_path(Some(ca.clone()));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.clone(), key.clone())));
        }
        Some(ssl)
    }

    /// Connects with `opts` (built from [`DbUrl::mysql_opts`]). With `ssl-mode=PREFERRED` a
    /// server that offers no TLS is connected to again in clear, as MySQL's client does; every
    /// other mode gets exactly what it asked for.
    ///
    /// # Errors
    /// The crate's error. A server that demands TLS from a client that has it disabled
    /// refuses the login: MySQL says why ("Connections using insecure transport are
    /// prohibited while --require_secure_transport=ON", error 3159), MariaDB (10.11:
    /// `require_secure_transport` in `acl_authenticate`, tried on this lab's server) only
    /// answers "Access denied". Such an error is checked with [`DbUrl::mysql_requires_tls`]
    /// and, when TLS is what is missing, begins with [`TLS_REQUIRED`].
    pub fn mysql_connect(&self, opts: OptsBuilder) -> Result<Conn, mysql::Error> {
        match Conn::new(opts.clone()) {
            Err(mysql::Error::MySqlError(e))
                if e.code == ER_ACCESS_DENIED && self.mysql_requires_tls() =>
            {
                Err(mysql::Error::MySqlError(mysql::MySqlError {
                    message: format!("{TLS_REQUIRED}; the server answered: {}", e.message),
                    ..e
                }))
            }
            Err(mysql::Error::DriverError(mysql::DriverError::TlsNotSupported))
                if self.tls.mode == TlsMode::Preferred =>
            {
                tracing::debug!(addr = %self.addr(), "server offers no TLS; ssl-mode=PREFERRED continues in clear");
                Conn::new(opts.ssl_opts(None::<SslOpts>))
            }
            other => other,
        }
    }
}

impl DbUrl {
    /// After a login in clear was refused with "Access denied": whether the server takes the
    /// same login over TLS (`REQUIRED`, certificate not checked), that is, whether TLS and not
    /// the password is what it wants. The probe connection runs no statement and is closed at
    /// once. False when TLS is already on.
    ///
    /// The probe sends nothing a login in clear did not: the crate never sends a cleartext
    /// password unless asked (`enable_cleartext_plugin`), and MySQL 8's full authentication
    /// in clear already encrypts it to a key the unauthenticated peer sent.
    pub fn mysql_requires_tls(&self) -> bool {
        if self.tls.enabled() {
            return false;
        }
        let probe = self.with_tls(DbTls {
            mode: TlsMode::Required,
            ..DbTls::default()
        });
        let opts = probe
            .mysql_opts()
            .db_name(None::<String>)
            .read_timeout(Some(self.deadlines.reply));
        Conn::new(opts).is_ok()
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl(url: &str) -> Option<SslOpts> {
        let url: DbUrl = url.parse().unwrap();
        mysql::Opts::from(url.mysql_opts()).get_ssl_opts().cloned()
    }

    #[test]
    fn each_mode_gets_the_checks_it_names() {
        assert!(ssl("mysql://u:p@h").is_none());
        assert!(ssl("mysql://u:p@h?ssl-mode=DISABLED").is_none());
        for mode in ["PREFERRED", "REQUIRED"] {
            let s = ssl(&format!("mysql://u:p@h?ssl-mode={mode}")).unwrap();
            assert!(s.accept_invalid_certs(), "{mode}");
        }
        let ca = ssl("mysql://u:p@h?ssl-mode=VERIFY_CA&ssl-ca=/ca.pem").unwrap();
        assert!(!ca.accept_invalid_certs() && ca.skip_domain_validation());
        assert_eq!(ca.root_cert_path(), Some(std::path::Path::new("/ca.pem")));
        let id =
            ssl("mysql://u:p@h?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem&ssl-cert=/c&ssl-key=/k")
                .unwrap();
        assert!(!id.accept_invalid_certs() && !id.skip_domain_validation());
        assert!(id.client_identity().is_some());
    }
}
