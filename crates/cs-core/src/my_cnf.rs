//! MySQL/MariaDB option files (`~/.my.cnf`, `--defaults-file`): the client settings an
//! operator already keeps for `mysql` and `mysqldump`.
//!
//! The syntax follows MariaDB's own reader (`mysys/my_default.c`,
//! `search_default_file_with_ext` and `remove_end_comment`; described in MariaDB's
//! "Configuring MariaDB with Option Files"): leading and trailing blanks dropped; lines starting
//! with `#` or `;` are comments, and so is the rest of a line from a `#` outside quotes; `[group]`
//! headers (compared case-insensitively); `name = value` or a bare `name`; one pair of matching
//! quotes around a value removed; the escapes `\b \t \n \r \s \" \' \\` (any other `\x` kept as
//! written); `!include FILE` and `!includedir DIR` (the `.cnf` files in it, in name order) at
//! most ten levels deep; option names with `-` and `_` alike and an optional `loose-` prefix.
//!
//! Groups read: `[client]`, `[client-server]` and `[client-mariadb]`, the groups every MariaDB
//! client program reads (the MariaDB KB's "Option Groups" table); not `[mysql]` or
//! `[mysqldump]`, which belong to those two programs alone. A later value wins, as in MariaDB.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{DbTls, Secret, TlsMode};

/// The groups read, as every MariaDB client program reads them.
pub const CLIENT_GROUPS: [&str; 3] = ["client", "client-server", "client-mariadb"];

/// How deep `!include` may nest (MariaDB's `MAX_RECURSION_LEVEL`).
const MAX_DEPTH: usize = 10;

/// The connection settings of an option file's client groups. Every field is `None` where no
/// file set it. `Debug` masks the password ([`Secret`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// `host`.
    pub host: Option<String>,
    /// `port`.
    pub port: Option<u16>,
    /// `user`.
    pub user: Option<String>,
    /// `password` (a bare `password` with no value, which makes `mysql` prompt, leaves it unset).
    pub password: Option<Secret>,
    /// `socket`. Parsed and reported, but the tools connect over TCP only.
    pub socket: Option<PathBuf>,
    /// `database`.
    pub database: Option<String>,
    /// `ssl-mode` (MySQL's clients), or what MariaDB's `ssl`, `skip-ssl` and
    /// `ssl-verify-server-cert` amount to.
    pub ssl_mode: Option<TlsMode>,
    /// `ssl-ca`.
    pub ssl_ca: Option<PathBuf>,
    /// `ssl-cert`.
    pub ssl_cert: Option<PathBuf>,
    /// `ssl-key`.
    pub ssl_key: Option<PathBuf>,
    /// Every file read, in order (the includes too).
    pub files: Vec<PathBuf>,
    /// What was skipped and why (a world-writable file, as MariaDB skips it; a `socket`).
    pub warnings: Vec<String>,
}

/// An option file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("option file {}{}: {reason}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct OptionFileError {
    /// The file at fault.
    pub path: PathBuf,
    /// The line, where one is at fault.
    pub line: Option<usize>,
    /// What is wrong (never a value: it may be a password).
    pub reason: String,
}

/// MariaDB's `ssl`/`ssl-verify-server-cert` flags, turned into a mode at the end.
#[derive(Default)]
struct Flags {
    ssl: Option<bool>,
    verify_server_cert: Option<bool>,
}

impl ClientOptions {
    /// Reads `path` (and what it includes) as `--defaults-file=PATH` does: only that file.
    ///
    /// A file that holds a password must belong to the running user (or root) and must not be
    /// readable by group or others, as the config's secret files (`Secret::from_file`); a
    /// world-writable file is skipped with a warning, as MariaDB skips it.
    ///
    /// # Errors
    /// [`OptionFileError`] naming the file (and line) when it cannot be read, a line is not
    /// option-file syntax, an include nests too deep, a value is not valid (`port`, `ssl-mode`),
    /// or a file with a password is readable by others.
    pub fn read(path: &Path) -> Result<ClientOptions, OptionFileError> {
        let mut out = ClientOptions::default();
        let mut flags = Flags::default();
        out.read_file(path, 0, &mut flags)?;
        out.finish(flags);
        Ok(out)
    }

    /// Reads `~/.my.cnf` (`$HOME`) when it exists; `Ok(None)` when it does not.
    ///
    /// # Errors
    /// As [`ClientOptions::read`].
    pub fn read_user_default() -> Result<Option<ClientOptions>, OptionFileError> {
        let Some(home) = std::env::var_os("HOME") else {
            return Ok(None);
        };
        let path = Path::new(&home).join(".my.cnf");
        if !path.exists() {
            return Ok(None);
        }
        ClientOptions::read(&path).map(Some)
    }

    /// Parses option-file text as if read from `origin` (includes resolved on disk).
    ///
    /// # Errors
    /// As [`ClientOptions::read`], without the file-mode checks for `text` itself.
    pub fn parse(text: &str, origin: &Path) -> Result<ClientOptions, OptionFileError> {
        let mut out = ClientOptions::default();
        let mut flags = Flags::default();
        out.parse_text(text, origin, 0, &mut flags)?;
        out.finish(flags);
        Ok(out)
    }

    /// The TLS settings the file asks for ([`DbTls::new`]'s rules), `None` when it names none.
    ///
    /// # Errors
    /// The reason, naming the key, as [`DbTls::new`].
    pub fn tls(&self) -> Result<Option<DbTls>, String> {
        if self.ssl_mode.is_none()
            && self.ssl_ca.is_none()
            && self.ssl_cert.is_none()
            && self.ssl_key.is_none()
        {
            return Ok(None);
        }
        DbTls::new(
            self.ssl_mode,
            self.ssl_ca.clone(),
            self.ssl_cert.clone(),
            self.ssl_key.clone(),
        )
        .map(Some)
    }

    fn finish(&mut self, flags: Flags) {
        if self.ssl_mode.is_none() {
            self.ssl_mode = match (flags.ssl, flags.verify_server_cert) {
                (Some(false), _) => Some(TlsMode::Disabled),
                (_, Some(true)) => Some(TlsMode::VerifyIdentity),
                (Some(true), _) if self.ssl_ca.is_some() => Some(TlsMode::VerifyCa),
                (Some(true), _) => Some(TlsMode::Required),
                _ => None,
            };
        }
        if self.socket.is_some() {
            self.warnings.push(
                "`socket` is not used: cs-upgrade connects over TCP (host, port)".to_string(),
            );
        }
    }

    fn read_file(
        &mut self,
        path: &Path,
        depth: usize,
        flags: &mut Flags,
    ) -> Result<(), OptionFileError> {
        let err = |reason: String| OptionFileError {
            path: path.to_path_buf(),
            line: None,
            reason,
        };
        if depth > MAX_DEPTH {
            return Err(err(format!("includes nest deeper than {MAX_DEPTH} levels")));
        }
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        // mysys/my_default.c: "World-writable config file '%s' is ignored".
        if meta.mode() & 0o002 != 0 {
            self.warnings.push(format!(
                "{} is world-writable and is ignored, as MariaDB ignores it",
                path.display()
            ));
            return Ok(());
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        // A file that itself sets a password (an include checks itself) must be private.
        if self.parse_text(&text, path, depth, flags)? {
            let me = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            if meta.uid() != me && meta.uid() != 0 {
                return Err(err(format!(
                    "it holds a password and is owned by uid {}, neither the running user \
                     (uid {me}) nor root",
                    meta.uid()
                )));
            }
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "it holds a password and has mode {mode:04o}: other users can read it \
                     (chmod 600 {})",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn parse_text(
        &mut self,
        text: &str,
        path: &Path,
        depth: usize,
        flags: &mut Flags,
    ) -> Result<bool, OptionFileError> {
        let mut sets_password = false;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut in_group: Option<bool> = None;
        self.files.push(path.to_path_buf());
        for (n, raw) in text.lines().enumerate() {
            let line_err = |reason: String| OptionFileError {
                path: path.to_path_buf(),
                line: Some(n + 1),
                reason,
            };
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(directive) = line.strip_prefix('!') {
                let directive = remove_end_comment(directive).trim_end();
                let (word, arg) = directive
                    .split_once(char::is_whitespace)
                    .map(|(w, a)| (w, a.trim()))
                    .unwrap_or((directive, ""));
                if arg.is_empty() {
                    return Err(line_err(format!("`!{word}` without a path")));
                }
                let target = dir.join(arg);
                match word {
                    "include" => self.read_file(&target, depth + 1, flags)?,
                    "includedir" => {
                        let entries = std::fs::read_dir(&target).map_err(|e| {
                            line_err(format!("cannot list {}: {e}", target.display()))
                        })?;
                        let mut files: Vec<PathBuf> = entries
                            .filter_map(Result::ok)
                            .map(|e| e.path())
                            .filter(|p| p.extension().is_some_and(|x| x == "cnf"))
                            .collect();
                        files.sort();
                        for f in files {
                            self.read_file(&f, depth + 1, flags)?;
                        }
                    }
                    _ => {
                        return Err(line_err(format!(
                            "unknown directive `!{word}` (known: !include, !includedir)"
                        )));
                    }
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some((name, _)) = rest.split_once(']') else {
                    return Err(line_err("a group header without `]`".into()));
                };
                let name = name.trim();
                in_group = Some(CLIENT_GROUPS.iter().any(|g| g.eq_ignore_ascii_case(name)));
                continue;
            }
            match in_group {
                None => {
                    return Err(line_err("an option before any [group] header".into()));
                }
                Some(false) => continue,
                Some(true) => {}
            }
            let line = remove_end_comment(line);
            let (name, value) = match line.split_once('=') {
                Some((n, v)) => (n.trim_end(), Some(unquote(v.trim()))),
                None => (line.trim_end(), None),
            };
            sets_password |= name.trim() == "password" && value.is_some();
            self.set(name, value, flags).map_err(line_err)?;
        }
        Ok(sets_password)
    }

    /// One option of a client group; unknown names belong to other programs and are ignored.
    fn set(&mut self, name: &str, value: Option<String>, flags: &mut Flags) -> Result<(), String> {
        let name = name.replace('_', "-");
        let name = name.strip_prefix("loose-").unwrap_or(&name);
        // my_getopt: `skip-`/`disable-` turn a boolean off, `enable-` on.
        let (name, negated) = match name
            .strip_prefix("skip-")
            .or_else(|| name.strip_prefix("disable-"))
        {
            Some(n) => (n, true),
            None => (name.strip_prefix("enable-").unwrap_or(name), false),
        };
        let path = |v: Option<String>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        match name {
            "host" => self.host = value.filter(|v| !v.is_empty()),
            "user" => self.user = value.filter(|v| !v.is_empty()),
            "database" => self.database = value.filter(|v| !v.is_empty()),
            "password" => self.password = value.map(Secret::new),
            "socket" => self.socket = path(value),
            "port" => {
                let v = value.unwrap_or_default();
                self.port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| format!("port `{v}` is not a number from 1 to 65535"))?,
                );
            }
            "ssl-mode" => {
                self.ssl_mode = Some(value.unwrap_or_default().parse::<TlsMode>()?);
            }
            "ssl-ca" => self.ssl_ca = path(value),
            "ssl-cert" => self.ssl_cert = path(value),
            "ssl-key" => self.ssl_key = path(value),
            "ssl" => flags.ssl = Some(boolean(value.as_deref(), negated, "ssl")?),
            "ssl-verify-server-cert" => {
                flags.verify_server_cert = Some(boolean(
                    value.as_deref(),
                    negated,
                    "ssl-verify-server-cert",
                )?);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A boolean option's value as my_getopt reads it (`1`/`0`, `on`/`off`, `true`/`false`; bare:
/// on), turned around by a `skip-` prefix.
fn boolean(value: Option<&str>, negated: bool, name: &str) -> Result<bool, String> {
    let v = match value.map(str::to_ascii_lowercase).as_deref() {
        None => true,
        Some("1" | "on" | "true" | "yes") => true,
        Some("0" | "off" | "false" | "no") => false,
        Some(other) => return Err(format!("{name} = `{other}` is not a boolean")),
    };
    Ok(v != negated)
}

/// The line up to a `#` outside quotes (`remove_end_comment` in `mysys/my_default.c`: a quote
/// opens or closes only when not escaped, a `\` escapes only inside quotes).
fn remove_end_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escape = false;
    for (i, c) in line.char_indices() {
        if (c == '\'' || c == '"') && !escape {
            match quote {
                None => quote = Some(c),
                Some(q) if q == c => quote = None,
                Some(_) => {}
            }
        }
        if quote.is_none() && c == '#' {
            return &line[..i];
        }
        escape = quote.is_some() && c == '\\' && !escape;
    }
    line
}

/// One pair of matching quotes around the value removed, then the escapes read
/// (`search_default_file_with_ext`).
fn unquote(value: &str) -> String {
    let bytes = value.as_bytes();
    let inner = if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[0] == bytes[bytes.len() - 1]
    {
        &value[1..value.len() - 1]
    } else {
        value
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        // A `\` that ends the value stays as written.
        let Some(next) = chars.next() else {
            out.push('\\');
            break;
        };
        match next {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            's' => out.push(' '),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            '\\' => out.push('\\'),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_the_client_groups_with_quotes_escapes_and_comments() {
        let text = "\
# a comment
; another
[mysqld]
password = not-this-one
[client]
user = backup_user   # trailing comment
password = \"p#ss\\\"w\\sord\"
host=db.example
port = 3307
[mysqldump]
password = nor-this
[Client-MariaDB]
ssl-ca = '/etc/ssl/db ca.pem'
loose_ssl_verify_server_cert
";
        let o = ClientOptions::parse(text, Path::new("/nowhere/my.cnf")).unwrap();
        assert_eq!(o.user.as_deref(), Some("backup_user"));
        assert_eq!(o.password.as_ref().unwrap().expose(), "p#ss\"w ord");
        assert_eq!(o.host.as_deref(), Some("db.example"));
        assert_eq!(o.port, Some(3307));
        assert_eq!(o.ssl_ca.as_deref(), Some(Path::new("/etc/ssl/db ca.pem")));
        assert_eq!(o.ssl_mode, Some(TlsMode::VerifyIdentity));
        assert!(!format!("{o:?}").contains("p#ss"));
    }

    #[test]
    fn escapes_as_mariadb_reads_them() {
        assert_eq!(unquote(r"a\tb\nc\\d\qe\"), "a\tb\nc\\d\\qe\\");
        assert_eq!(unquote("'it''s'"), "it''s");
        assert_eq!(unquote("\"x'"), "\"x'");
        assert_eq!(unquote("\""), "\"");
        assert_eq!(remove_end_comment("a = 'x#y' # c"), "a = 'x#y' ");
        assert_eq!(
            remove_end_comment(r##"a = "x\"#y" # c"##),
            r##"a = "x\"#y" "##
        );
        assert_eq!(remove_end_comment(r"a = x\#y"), r"a = x\");
    }

    #[test]
    fn later_values_win_and_skip_ssl_disables() {
        let o = ClientOptions::parse(
            "[client]\nuser=a\n[client-server]\nuser=b\nssl\nskip-ssl\n",
            Path::new("x.cnf"),
        )
        .unwrap();
        assert_eq!(o.user.as_deref(), Some("b"));
        assert_eq!(o.ssl_mode, Some(TlsMode::Disabled));
        let o = ClientOptions::parse("[client]\nssl\n", Path::new("x.cnf")).unwrap();
        assert_eq!(o.ssl_mode, Some(TlsMode::Required));
        let o = ClientOptions::parse("[client]\nssl-mode=VERIFY_CA\nssl-ca=/ca\n", Path::new("x"))
            .unwrap();
        assert_eq!(o.tls().unwrap().unwrap().mode, TlsMode::VerifyCa);
        let bare = ClientOptions::parse("[client]\npassword\n", Path::new("x")).unwrap();
        assert_eq!(bare.password, None);
    }

    #[test]
    fn bad_lines_are_typed_errors_naming_file_and_line() {
        for (text, line, what) in [
            ("user=x\n", 1, "before any [group]"),
            ("[client\n", 1, "without `]`"),
            ("[client]\nport=abc\n", 2, "port `abc`"),
            ("[client]\nport=0\n", 2, "port `0`"),
            (
                "[client]\n\nssl-mode=sometimes\n",
                3,
                "ssl-mode `sometimes`",
            ),
            ("[client]\nssl=maybe\n", 2, "not a boolean"),
            ("!include\n", 1, "without a path"),
            ("!frobnicate x\n", 1, "unknown directive"),
        ] {
            let e = ClientOptions::parse(text, Path::new("/o/my.cnf")).unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert!(e.reason.contains(what), "{text}: {e}");
            assert!(e.to_string().contains("/o/my.cnf"), "{e}");
        }
    }

    #[test]
    fn includes_and_include_dirs_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        write(d, "conf.d/20-b.cnf", "[client]\nuser=from-b\n", 0o644);
        write(
            d,
            "conf.d/10-a.cnf",
            "[client]\nuser=from-a\nport=3310\n",
            0o644,
        );
        write(d, "conf.d/30-c.txt", "[client]\nuser=ignored\n", 0o644);
        write(d, "extra.cnf", "[client]\npassword=s3cret\n", 0o600);
        write(d, "evil.cnf", "[client]\nhost=evil\n", 0o666);
        let main = write(
            d,
            "my.cnf",
            "[client]\nhost=db\n!includedir conf.d\n!include extra.cnf\n!include evil.cnf\n",
            0o644,
        );
        let o = ClientOptions::read(&main).unwrap();
        assert_eq!(o.user.as_deref(), Some("from-b"));
        assert_eq!(o.port, Some(3310));
        assert_eq!(
            o.host.as_deref(),
            Some("db"),
            "the world-writable file is skipped"
        );
        assert_eq!(o.password.unwrap().expose(), "s3cret");
        assert!(o.warnings.iter().any(|w| w.contains("world-writable")));
        assert_eq!(o.files.len(), 4, "{:?}", o.files);

        let looped = write(d, "loop.cnf", "!include loop.cnf\n", 0o600);
        let e = ClientOptions::read(&looped).unwrap_err();
        assert!(e.reason.contains("nest deeper"), "{e}");
    }

    #[test]
    fn a_readable_file_with_a_password_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = write(dir.path(), "my.cnf", "[client]\npassword=hunter2\n", 0o644);
        let e = ClientOptions::read(&open).unwrap_err();
        assert!(e.reason.contains("mode 0644"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
        let no_pw = write(dir.path(), "np.cnf", "[client]\nuser=u\n", 0o644);
        assert_eq!(
            ClientOptions::read(&no_pw).unwrap().user.as_deref(),
            Some("u")
        );
        let e = ClientOptions::read(&dir.path().join("missing.cnf")).unwrap_err();
        assert!(e.reason.contains("cannot read"), "{e}");
    }
}
