//! Where a database is: `mysql://user:password@host:port/schema`.

use std::fmt;
use std::str::FromStr;

use crate::{Deadlines, Secret};

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
        }
    }

    /// Parses `mysql://user[:password]@host[:port][/schema]` (`mariadb://` also accepted).
    /// User and password may be percent-encoded.
    ///
    /// # Errors
    /// [`DbUrlError`] saying what is wrong; the password is never part of it.
    pub fn parse(input: &str) -> Result<Self, DbUrlError> {
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
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| err("the port must be a number from 1 to 65535"))?,
            ),
            _ => (hostport, 3306),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if port == 0 {
            return Err(err("the port must be a number from 1 to 65535"));
        }
        Ok(DbUrl {
            host: host.to_string(),
            port,
            user,
            password: Secret::new(password),
            database,
            deadlines: Deadlines::default(),
        })
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
        format!(
            "mysql://{}:{password}@{}{db}",
            encode(&self.user),
            self.addr()
        )
    }
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
}
