//! Where a database is: `mysql://user:password@host:port/schema?ssl-mode=VERIFY_CA&ssl-ca=…`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::{ClientOptions, Deadlines, Secret};

/// How to reach a MySQL/MariaDB server: host, port, user, password and an optional default
/// schema. Pure data (no driver here); the crates that talk to databases connect with it.
///
/// `Display` and `Debug` mask the password; [`DbUrl::expose`] gives the full URL for the rare
/// place that needs it.
///
/// ```
/// let url: cs_core::DbUrl = "mysql://cloud:s%40cret@10.0.0.5:3306/cloud".parse()?;
/// assert_eq!(url.password.expose(), "s@cret");
/// assert_eq!(url.to_string(), "mysql://cloud:***@10.0.0.5:3306/cloud");
/// # Ok::<(), cs_core::DbUrlError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (3306 when the URL has none).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password (may be empty).
    pub password: Secret,
    /// Default schema, if any.
    pub database: Option<String>,
    /// How long the server may stay silent ([`Deadlines::default`] unless set).
    pub deadlines: Deadlines,
    /// Transport encryption ([`DbTls::default`], no TLS, unless set).
    pub tls: DbTls,
}

/// How a connection uses TLS, with the values of MySQL's `--ssl-mode` (MariaDB's clients
/// express the same with `--ssl`, `--ssl-verify-server-cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never TLS (`DISABLED`). The default when neither `ssl-mode` nor `ssl-ca` is given.
    #[default]
    Disabled,
    /// TLS when the server offers it, in clear otherwise; the certificate is not checked
    /// (`PREFERRED`).
    Preferred,
    /// TLS or no connection; the certificate is not checked (`REQUIRED`).
    Required,
    /// TLS with a certificate signed by `ssl-ca`; the name in it is not checked
    /// (`VERIFY_CA`). The default when `ssl-ca` is given without `ssl-mode`, as MySQL's client
    /// does.
    VerifyCa,
    /// TLS with a certificate signed by `ssl-ca` and naming the host connected to
    /// (`VERIFY_IDENTITY`).
    VerifyIdentity,
}

impl TlsMode {
    /// The `ssl-mode` value (`VERIFY_CA`).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "DISABLED",
            TlsMode::Preferred => "PREFERRED",
            TlsMode::Required => "REQUIRED",
            TlsMode::VerifyCa => "VERIFY_CA",
            TlsMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }

    /// Whether a connection in clear is refused (every mode but `DISABLED` and `PREFERRED`).
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            TlsMode::Required | TlsMode::VerifyCa | TlsMode::VerifyIdentity
        )
    }

    /// Whether the server's certificate is checked against `ssl-ca`.
    pub fn verifies_ca(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyIdentity)
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = String;
    /// Case-insensitive, `-` or `_`: `verify-ca`, `VERIFY_CA`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "DISABLED" => Ok(TlsMode::Disabled),
            "PREFERRED" => Ok(TlsMode::Preferred),
            "REQUIRED" => Ok(TlsMode::Required),
            "VERIFY_CA" => Ok(TlsMode::VerifyCa),
            "VERIFY_IDENTITY" => Ok(TlsMode::VerifyIdentity),
            _ => Err(format!(
                "ssl-mode `{s}` is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, \
                 VERIFY_IDENTITY"
            )),
        }
    }
}

/// TLS settings of a database connection, named as MySQL's and MariaDB's clients name them:
/// `ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`. Only paths: the files are read when a
/// connection is made, never printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbTls {
    /// `ssl-mode`.
    pub mode: TlsMode,
    /// `ssl-ca`: the PEM file of the CA(s) that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// `ssl-cert`: the client's certificate (PEM), for servers that ask for one.
    pub cert: Option<PathBuf>,
    /// `ssl-key`: the client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

impl DbTls {
    /// The files set, under the option names MySQL's and MariaDB's clients use (`ssl-ca`,
    /// `ssl-cert`, `ssl-key`), in that order.
    pub fn files(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            ("ssl-ca", &self.ca),
            ("ssl-cert", &self.cert),
            ("ssl-key", &self.key),
        ]
        .into_iter()
        .filter_map(|(name, p)| Some((name, p.as_deref()?)))
    }

    /// Settings from the `ssl-*` keys, checked together: `ssl-ca` without a mode means
    /// `VERIFY_CA`; the verifying modes need `ssl-ca`; `ssl-cert` and `ssl-key` go together
    /// and need a mode that uses TLS.
    ///
    /// # Errors
    /// The reason, naming the key, when the combination cannot be honoured.
    pub fn new(
        mode: Option<TlsMode>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<DbTls, String> {
        let mode = mode.unwrap_or(if ca.is_some() {
            TlsMode::VerifyCa
        } else {
            TlsMode::Disabled
        });
        if mode.verifies_ca() && ca.is_none() {
            return Err(format!(
                "ssl-mode={mode} needs ssl-ca (the CA file to check against)"
            ));
        }
        match (&cert, &key) {
            (Some(_), None) => return Err("ssl-cert is given without ssl-key".into()),
            (None, Some(_)) => return Err("ssl-key is given without ssl-cert".into()),
            _ => {}
        }
        if mode == TlsMode::Disabled && (cert.is_some() || ca.is_some()) {
            return Err("ssl-ca/ssl-cert are given with ssl-mode=DISABLED".into());
        }
        for (name, p) in [("ssl-ca", &ca), ("ssl-cert", &cert), ("ssl-key", &key)] {
            if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("{name} is empty"));
            }
        }
        Ok(DbTls {
            mode,
            ca,
            cert,
            key,
        })
    }

    /// Whether any TLS is asked for (a mode other than `DISABLED`).
    pub fn enabled(&self) -> bool {
        self.mode != TlsMode::Disabled
    }

    /// The settings as URL query parameters (`ssl-mode=VERIFY_CA&ssl-ca=%2Fetc%2Fca.pem`),
    /// empty when TLS is disabled.
    fn query(&self) -> String {
        if !self.enabled() {
            return String::new();
        }
        let mut q = format!("ssl-mode={}", self.mode);
        for (name, p) in self.files() {
            q.push_str(&format!("&{name}={}", encode(&p.to_string_lossy())));
        }
        q
    }
}

/// A string that is not a database URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid database URL `{shown}`: {reason}")]
pub struct DbUrlError {
    /// The input with any password masked.
    pub shown: String,
    /// What is wrong with it.
    pub reason: String,
}

impl DbUrl {
    /// A URL for `user` at `host:port` with no default schema.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: Secret,
    ) -> Self {
        DbUrl {
            host: host.into(),
            port,
            user: user.into(),
            password,
            database: None,
            deadlines: Deadlines::default(),
            tls: DbTls::default(),
        }
    }

    /// Parses `mysql://user[:password]@host[:port][/schema][?ssl-mode=…&ssl-ca=…]`
    /// (`mariadb://` also accepted). User, password and query values may be
    /// percent-encoded. The query keys are MySQL's client options: `ssl-mode`
    /// (`DISABLED`, `PREFERRED`, `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`), `ssl-ca`,
    /// `ssl-cert`, `ssl-key` (`_` for `-` also accepted); see [`DbTls::new`].
    ///
    /// # Errors
    /// [`DbUrlError`] saying what is wrong; the password is never part of it.
    pub fn parse(input: &str) -> Result<Self, DbUrlError> {
        DbUrl::parse_parts(input).map(|(url, _)| url)
    }

    /// Parses `input` as [`DbUrl::parse`] and fills what it leaves out from an option file's
    /// client settings ([`ClientOptions`], `~/.my.cnf` or `--defaults-file`): the password when
    /// the URL has none, the port when it names none, the TLS settings when it has no `ssl-*`
    /// parameter. What the URL says wins.
    ///
    /// ```
    /// # use std::path::Path;
    /// let cnf = cs_core::ClientOptions::parse(
    ///     "[client]\npassword = \"s3cret\"\nport = 3307\n", Path::new("my.cnf"))?;
    /// let url = cs_core::DbUrl::parse_under("mysql://backup@db", &cnf)?;
    /// assert_eq!((url.password.expose(), url.port), ("s3cret", 3307));
    /// let url = cs_core::DbUrl::parse_under("mysql://backup:other@db:3306", &cnf)?;
    /// assert_eq!((url.password.expose(), url.port), ("other", 3306));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`DbUrlError`] as [`DbUrl::parse`], or naming the option file's TLS settings when they
    /// do not go together.
    pub fn parse_under(input: &str, defaults: &ClientOptions) -> Result<Self, DbUrlError> {
        let (mut url, explicit_port) = DbUrl::parse_parts(input)?;
        if url.password.is_empty()
            && let Some(p) = &defaults.password
        {
            url.password = p.clone();
        }
        if !explicit_port && let Some(port) = defaults.port {
            url.port = port;
        }
        if url.tls == DbTls::default()
            && let Some(tls) = defaults.tls().map_err(|reason| DbUrlError {
                shown: mask(input),
                reason: format!("the option file's TLS settings: {reason}"),
            })?
        {
            url.tls = tls;
        }
        Ok(url)
    }

    /// A URL from an option file's client settings alone, as MariaDB's clients fill the
    /// gaps: host `localhost`, port 3306, the login name (`$USER`) as user, no password.
    ///
    /// # Errors
    /// [`DbUrlError`] when no user is set and `$USER` is unset, or the TLS settings do not go
    /// together.
    pub fn from_option_file(defaults: &ClientOptions) -> Result<Self, DbUrlError> {
        let shown = format!(
            "option file {}",
            defaults
                .files
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        let err = |reason: String| DbUrlError {
            shown: shown.clone(),
            reason,
        };
        let user = defaults
            .user
            .clone()
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .ok_or_else(|| err("no `user` in its client groups and $USER is unset".into()))?;
        let mut url = DbUrl::new(
            defaults.host.clone().unwrap_or_else(|| "localhost".into()),
            defaults.port.unwrap_or(3306),
            user,
            defaults.password.clone().unwrap_or_default(),
        );
        if let Some(tls) = defaults
            .tls()
            .map_err(|r| err(format!("its TLS settings: {r}")))?
        {
            url.tls = tls;
        }
        Ok(url)
    }

    /// The URL and whether it names its port.
    fn parse_parts(input: &str) -> Result<(Self, bool), DbUrlError> {
        let err = |reason: &str| DbUrlError {
            shown: mask(input),
            reason: reason.to_string(),
        };
        let rest = input
            .strip_prefix("mysql://")
            .or_else(|| input.strip_prefix("mariadb://"))
            .ok_or_else(|| err("expected mysql://user:password@host:port[/schema]"))?;
        let (auth, hostpart) = rest
            .rsplit_once('@')
            .ok_or_else(|| err("missing user@ before the host"))?;
        let (hostpart, query) = match hostpart.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (hostpart, None),
        };
        let tls = match query {
            Some(q) => parse_tls(q).map_err(|r| err(&r))?,
            None => DbTls::default(),
        };
        let (user, password) = match auth.split_once(':') {
            Some((u, p)) => (u, p),
            None => (auth, ""),
        };
        let user = decode(user).ok_or_else(|| err("bad percent-encoding in the user"))?;
        let password =
            decode(password).ok_or_else(|| err("bad percent-encoding in the password"))?;
        if user.is_empty() {
            return Err(err("empty user"));
        }
        let (hostport, database) = match hostpart.split_once('/') {
            Some((h, d)) if !d.is_empty() => (h, Some(d.to_string())),
            Some((h, _)) => (h, None),
            None => (hostpart, None),
        };
        let (host, port, explicit_port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| err("the port must be a number from 1 to 65535"))?,
                true,
            ),
            _ => (hostport, 3306, false),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if port == 0 {
            return Err(err("the port must be a number from 1 to 65535"));
        }
        Ok((
            DbUrl {
                host: host.to_string(),
                port,
                user,
                password: Secret::new(password),
                database,
                deadlines: Deadlines::default(),
                tls,
            },
            explicit_port,
        ))
    }

    /// The URL with the password in it, percent-encoded. Only for handing to a program that
    /// needs it; never log it.
    pub fn expose(&self) -> String {
        self.render(&encode(self.password.expose()))
    }

    /// The same server and user with another default schema.
    #[must_use]
    pub fn with_database(&self, db: &str) -> DbUrl {
        DbUrl {
            database: Some(db.to_string()),
            ..self.clone()
        }
    }

    /// The same server and user with other [`Deadlines`].
    #[must_use]
    pub fn with_deadlines(&self, deadlines: Deadlines) -> DbUrl {
        DbUrl {
            deadlines,
            ..self.clone()
        }
    }

    /// The same server and user with other [`DbTls`] settings.
    #[must_use]
    pub fn with_tls(&self, tls: DbTls) -> DbUrl {
        DbUrl {
            tls,
            ..self.clone()
        }
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn render(&self, password: &str) -> String {
        let db = self
            .database
            .as_deref()
            .map(|d| format!("/{d}"))
            .unwrap_or_default();
        let query = self.tls.query();
        let query = if query.is_empty() {
            query
        } else {
            format!("?{query}")
        };
        format!(
            "mysql://{}:{password}@{}{db}{query}",
            encode(&self.user),
            self.addr()
        )
    }
}

/// The `ssl-*` query parameters of a URL.
fn parse_tls(query: &str) -> Result<DbTls, String> {
    let (mut mode, mut ca, mut cert, mut key) = (None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("query parameter `{}` has no value", pair))?;
        let canon = name.to_ascii_lowercase().replace('_', "-");
        let value = decode(value).ok_or_else(|| format!("bad percent-encoding in {canon}"))?;
        let slot = match canon.as_str() {
            "ssl-mode" => {
                mode = Some(value.parse::<TlsMode>()?);
                continue;
            }
            "ssl-ca" => &mut ca,
            "ssl-cert" => &mut cert,
            "ssl-key" => &mut key,
            _ => {
                return Err(format!(
                    "unknown query parameter `{name}` (known: ssl-mode, ssl-ca, ssl-cert, ssl-key)"
                ));
            }
        };
        *slot = Some(PathBuf::from(value));
    }
    DbTls::new(mode, ca, cert, key)
}

/// The input with everything that may be a password hidden: between the user and the last
/// `@`, or, with no `@`, everything after the first `:` past the scheme. Whatever the input's
/// shape, no password reaches an error.
fn mask(input: &str) -> String {
    let (scheme, rest) = match input.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), input),
    };
    if let Some((auth, host)) = rest.rsplit_once('@') {
        let user = auth.split(':').next().unwrap_or("");
        return format!("{scheme}{user}:***@{host}");
    }
    match rest.split_once(':') {
        Some((head, _)) => format!("{scheme}{head}:***"),
        None => input.to_string(),
    }
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("***"))
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({self})")
    }
}

impl FromStr for DbUrl {
    type Err = DbUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DbUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let u = DbUrl::parse("mysql://root:p%3Aw%40d@127.0.0.1:33061").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_str()),
            ("127.0.0.1", 33061, "root")
        );
        assert_eq!(u.password.expose(), "p:w@d");
        assert_eq!(u.database, None);
        assert_eq!(DbUrl::parse(&u.expose()).unwrap(), u);
        let d = DbUrl::parse("mariadb://cloud@db.example/cloud").unwrap();
        assert_eq!((d.port, d.database.as_deref()), (3306, Some("cloud")));
        assert!(d.password.is_empty());
    }

    #[test]
    fn errors_never_show_the_password() {
        for bad in [
            "mysql://root:hunter2@host:notaport",
            "postgres://root:hunter2@host",
            "mysql://root:hunter2@:3306",
            "mysql://:hunter2@host",
            "mysql://root:hunter2@host:0",
            // Forms without `://`, or without a host.
            "root:hunter2@host",
            "mysql:root:hunter2@host",
            "mysql:/root:hunter2@host",
            "root:hunter2",
            "mysql://root:hunter2",
            "mysql://root:hun@ter2@host:x",
        ] {
            let e = DbUrl::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let e = DbUrl::parse("mysql://root:hunter2@host:x").unwrap_err();
        assert_eq!(e.shown, "mysql://root:***@host:x");
        assert!(e.reason.contains("port"));
    }

    #[test]
    fn tls_settings_parse_and_round_trip() {
        let u = DbUrl::parse(
            "mysql://cloud:pw@db:3306/cloud?ssl-mode=verify-ca&ssl-ca=%2Fetc%2Fca.pem&ssl_cert=/c.pem&SSL-KEY=/k.pem",
        )
        .unwrap();
        assert_eq!(u.database.as_deref(), Some("cloud"));
        assert_eq!(u.tls.mode, TlsMode::VerifyCa);
        assert_eq!(
            u.tls.ca.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(u.tls.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(DbUrl::parse(&u.expose()).unwrap(), u);
        assert_eq!(
            u.to_string(),
            "mysql://cloud:***@db:3306/cloud?ssl-mode=VERIFY_CA&ssl-ca=%2Fetc%2Fca.pem\
             &ssl-cert=%2Fc.pem&ssl-key=%2Fk.pem"
        );
        // `ssl-ca` alone means VERIFY_CA, as MySQL's client reads it; nothing means DISABLED.
        let ca = DbUrl::parse("mysql://u:p@h?ssl-ca=/ca.pem").unwrap();
        assert_eq!(ca.tls.mode, TlsMode::VerifyCa);
        let plain = DbUrl::parse("mysql://u:p@h/cloud").unwrap();
        assert!(!plain.tls.enabled());
        assert_eq!(plain.to_string(), "mysql://u:***@h:3306/cloud");
        let req = DbUrl::parse("mysql://u:p@h?ssl-mode=REQUIRED").unwrap();
        assert!(req.tls.mode.requires_tls() && !req.tls.mode.verifies_ca());
    }

    #[test]
    fn option_file_fills_only_what_the_url_leaves_out() {
        let cnf = ClientOptions::parse(
            "[client]\nuser=fileuser\npassword=filepw\nhost=filehost\nport=3307\n\
             ssl-ca=/ca.pem\n",
            Path::new("my.cnf"),
        )
        .unwrap();
        let u = DbUrl::parse_under("mysql://cloud@db/cloud", &cnf).unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port),
            ("cloud", "db", 3307)
        );
        assert_eq!(u.password.expose(), "filepw");
        assert_eq!(u.tls.mode, TlsMode::VerifyCa);
        let u = DbUrl::parse_under("mysql://cloud:urlpw@db:3306?ssl-mode=REQUIRED", &cnf).unwrap();
        assert_eq!((u.password.expose(), u.port), ("urlpw", 3306));
        assert_eq!(u.tls.mode, TlsMode::Required);
        assert_eq!(u.tls.ca, None);
        let u = DbUrl::from_option_file(&cnf).unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port),
            ("fileuser", "filehost", 3307)
        );
        assert_eq!(u.password.expose(), "filepw");
        let bare = ClientOptions::parse("[client]\nuser=u\n", Path::new("x")).unwrap();
        let u = DbUrl::from_option_file(&bare).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("localhost", 3306));
        assert!(u.password.is_empty());
        let bad = ClientOptions::parse("[client]\nssl-mode=VERIFY_CA\n", Path::new("x")).unwrap();
        let e = DbUrl::parse_under("mysql://u:hunter2@h", &bad).unwrap_err();
        assert!(e.reason.contains("needs ssl-ca"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn bad_tls_settings_are_typed_errors_naming_the_key() {
        for (bad, names) in [
            (
                "mysql://u:hunter2@h?ssl-mode=sometimes",
                "ssl-mode `sometimes`",
            ),
            (
                "mysql://u:hunter2@h?ssl-mode=VERIFY_IDENTITY",
                "needs ssl-ca",
            ),
            (
                "mysql://u:hunter2@h?ssl-mode=REQUIRED&ssl-cert=/c",
                "without ssl-key",
            ),
            (
                "mysql://u:hunter2@h?ssl-mode=REQUIRED&ssl-key=/k",
                "without ssl-cert",
            ),
            (
                "mysql://u:hunter2@h?ssl-mode=DISABLED&ssl-ca=/ca",
                "DISABLED",
            ),
            (
                "mysql://u:hunter2@h?sslmode=require",
                "unknown query parameter `sslmode`",
            ),
            ("mysql://u:hunter2@h?ssl-ca", "`ssl-ca` has no value"),
            ("mysql://u:hunter2@h?ssl-ca=", "ssl-ca is empty"),
            (
                "mysql://u:hunter2@h?ssl-ca=%zz",
                "percent-encoding in ssl-ca",
            ),
        ] {
            let e = DbUrl::parse(bad).unwrap_err();
            assert!(e.reason.contains(names), "{bad}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
