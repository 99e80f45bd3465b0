//! The entries of an OpenSSH client configuration file (`~/.ssh/config`) that
//! [`SshHost`](crate::SshHost) honours: `Host`, `HostName`, `User`, `Port`, `IdentityFile` and
//! `ProxyJump`, read with the `ssh2-config` crate.
//!
//! As OpenSSH does (`ssh_config(5)`, `readconf.c`), the file is read top to bottom and for each
//! option the first value obtained from a matching `Host` block wins; `IdentityFile`s add up.
//! `Match` blocks are not evaluated: their options are skipped (the crate knows no `Match`,
//! and read as plain lines they would land in the `Host` block before them). Other options
//! (`ProxyCommand`, `HostKeyAlias`, ciphers, …) are not applied.

use std::fmt;
use std::path::{Path, PathBuf};

use ssh2_config::ParseRule;

/// A `Host` pattern no name matches: `Match` blocks are renamed to it so that their options
/// apply to nothing (`.invalid` is reserved, RFC 2606).
const UNMATCHABLE: &str = "cs-upgrade.match-block.invalid";

/// A parsed OpenSSH client configuration file.
///
/// ```
/// let cfg = cs_core::SshConfig::parse_str(
///     "Host kvm*\n  User ops\n  ProxyJump jump@bastion:2222\nHost kvm1\n  HostName 10.0.0.5\n",
///     std::path::Path::new("/home/ops"),
/// )?;
/// let e = cfg.entry("kvm1");
/// assert_eq!(e.host_name.as_deref(), Some("10.0.0.5"));
/// assert_eq!(e.user.as_deref(), Some("ops"));
/// assert_eq!(e.proxy_jump.unwrap()[0].to_string(), "jump@bastion:2222");
/// # Ok::<(), cs_core::SshConfigError>(())
/// ```
pub struct SshConfig {
    inner: ssh2_config::SshConfig,
    home: PathBuf,
}

impl fmt::Debug for SshConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshConfig")
            .field("hosts", &self.inner.get_hosts().len())
            .field("home", &self.home)
            .finish()
    }
}

/// A configuration file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("ssh config {}: {reason}", path.display())]
pub struct SshConfigError {
    /// The file (or `<text>` for [`SshConfig::parse_str`]).
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// What the configuration says for one host name, as [`SshConfig::entry`] finds it. Unset
/// options are `None` (or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SshConfigEntry {
    /// `HostName`, with `%h` replaced by the name asked for.
    pub host_name: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// Every `IdentityFile` of every matching block, in file order, `~` and `%d`/`%h`/`%r`/`%u`
    /// expanded.
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump`: the hops in order, first hop first; `Some(vec![])` for `ProxyJump none`.
    pub proxy_jump: Option<Vec<JumpSpec>>,
}

/// One hop of a `ProxyJump`: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    /// The user, when given.
    pub user: Option<String>,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

impl JumpSpec {
    /// Parses one hop.
    ///
    /// # Errors
    /// A message naming the text when the host is empty or the port is not a number.
    pub fn parse(text: &str) -> Result<JumpSpec, String> {
        let t = text.trim();
        let t = t.strip_prefix("ssh://").unwrap_or(t);
        let (user, rest) = match t.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
            Some(_) => return Err(format!("`{text}`: empty user before `@`")),
            None => (None, t),
        };
        let bad_port = |p: &str| format!("`{text}`: port `{p}` is not a number from 1 to 65535");
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: `[` without `]`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or(bad_port(p))?,
                ),
                None if after.is_empty() => None,
                None => return Err(format!("`{text}`: unexpected `{after}` after `]`")),
            };
            (host.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                // A bare IPv6 address has several colons and no port.
                Some((h, p)) if !h.contains(':') => (
                    h.to_string(),
                    Some(
                        p.parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or(bad_port(p))?,
                    ),
                ),
                _ => (rest.to_string(), None),
            }
        };
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(format!("`{text}`: no host name"));
        }
        Ok(JumpSpec { user, host, port })
    }

    /// Parses a comma-separated chain (`a,user@b:2222`), first hop first; `none` is no hop.
    ///
    /// # Errors
    /// As [`JumpSpec::parse`], for the first bad hop.
    pub fn parse_list(text: &str) -> Result<Vec<JumpSpec>, String> {
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(Vec::new());
        }
        text.split(',').map(JumpSpec::parse).collect()
    }

    /// `host:port` (`[v6]:port`), or the bare host without a port.
    pub fn addr(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

impl fmt::Display for JumpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.addr())
    }
}

impl std::str::FromStr for JumpSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JumpSpec::parse(s)
    }
}

impl SshConfig {
    /// `~/.ssh/config` of the running user (`$HOME`), whether or not it exists.
    pub fn default_path() -> Option<PathBuf> {
        home_dir().map(|h| h.join(".ssh").join("config"))
    }

    /// Reads and parses a file; `~` and relative `Include`s resolve against `$HOME`.
    ///
    /// # Errors
    /// [`SshConfigError`] naming the file when it cannot be read or a line cannot be parsed.
    pub fn load(path: &Path) -> Result<SshConfig, SshConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| SshConfigError {
            path: path.to_path_buf(),
            reason: format!("cannot read it: {e}"),
        })?;
        let home = home_dir().unwrap_or_else(|| PathBuf::from("/"));
        Self::parse_with(&text, &home, path)
    }

    /// Parses configuration text; `~` resolves against `home`.
    ///
    /// # Errors
    /// [`SshConfigError`] when a line cannot be parsed.
    pub fn parse_str(text: &str, home: &Path) -> Result<SshConfig, SshConfigError> {
        Self::parse_with(text, home, Path::new("<text>"))
    }

    fn parse_with(text: &str, home: &Path, path: &Path) -> Result<SshConfig, SshConfigError> {
        let text = without_match_blocks(text);
        let mut reader = std::io::BufReader::new(text.as_bytes());
        // Unknown and unsupported options are kept aside, not refused: a real file holds
        // many options this tool does not apply.
        let inner = ssh2_config::SshConfig::default()
            .home_dir(home)
            .parse(
                &mut reader,
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| SshConfigError {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(SshConfig {
            inner,
            home: home.to_path_buf(),
        })
    }

    /// What the configuration says for `name` (the name as given to `ssh`, matched against
    /// the `Host` patterns).
    pub fn entry(&self, name: &str) -> SshConfigEntry {
        let p = self.inner.query(name);
        let host_name = p.host_name.map(|h| expand(&h, name, None, &self.home));
        let target = host_name.clone().unwrap_or_else(|| name.to_string());
        let identity_files = p
            .identity_file
            .unwrap_or_default()
            .iter()
            .map(|f| {
                PathBuf::from(expand(
                    &f.to_string_lossy(),
                    &target,
                    p.user.as_deref(),
                    &self.home,
                ))
            })
            .collect();
        let proxy_jump = p.proxy_jump.map(|hops| {
            if hops.len() == 1 && hops[0].eq_ignore_ascii_case("none") {
                return Vec::new();
            }
            hops.iter()
                .filter_map(|h| match JumpSpec::parse(h) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        tracing::warn!(host = name, error = %e, "ProxyJump hop skipped");
                        None
                    }
                })
                .collect()
        });
        if let Some(cmd) = p.unsupported_fields.get("proxycommand") {
            tracing::warn!(
                host = name,
                ?cmd,
                "ProxyCommand in ssh config is not applied; use ProxyJump"
            );
        }
        SshConfigEntry {
            host_name,
            user: p.user,
            port: p.port,
            identity_files,
            proxy_jump,
        }
    }
}

/// Applies the builder's ssh config, if any, to the builder (what it sets itself wins; see
/// [`crate::SshHostBuilder::ssh_config`]).
pub(crate) fn resolve(
    mut b: crate::SshHostBuilder,
    name: &str,
) -> Result<crate::SshHostBuilder, crate::HostError> {
    let Some(path) = b.ssh_config.clone() else {
        return Ok(b);
    };
    let conf = SshConfig::load(&path).map_err(|e| crate::HostError::SshConfig {
        host: name.to_string(),
        path: e.path,
        reason: e.reason,
    })?;
    let (alias, port) = split_alias(&b.addr);
    let e = conf.entry(&alias);
    let host = e.host_name.clone().unwrap_or_else(|| alias.clone());
    let port = port.or(e.port);
    let spec = JumpSpec {
        user: None,
        host,
        port,
    };
    b.addr = spec.addr();
    if !b.user_set
        && let Some(u) = e.user
    {
        b.user = u;
        b.user_set = true;
    }
    if (b.auth.is_empty() || b.auth_inherited) && !e.identity_files.is_empty() {
        let inherited = std::mem::take(&mut b.auth);
        for f in e.identity_files.iter().filter(|f| f.is_file()) {
            b.auth.push(crate::ssh::Auth::KeyFile {
                path: f.clone(),
                passphrase: b.identity_passphrase.clone(),
            });
        }
        if inherited.is_empty() {
            // As without any method: the agent too, where there is one.
            if std::env::var_os("SSH_AUTH_SOCK").is_some() || b.auth.is_empty() {
                b.auth.push(crate::ssh::Auth::Agent { socket: None });
            }
        } else {
            b.auth.extend(inherited);
        }
    }
    if b.jumps.is_empty()
        && let Some(hops) = e.proxy_jump
    {
        b.jumps = hops.into_iter().map(crate::ssh_jump::Hop::Spec).collect();
    }
    tracing::debug!(host = name, alias, addr = %b.addr, user = %b.user, jumps = b.jumps.len(), config = %path.display(), "ssh config applied");
    Ok(b)
}

/// The name to match against `Host` patterns (the address without its port) and the port,
/// when the address names one.
fn split_alias(addr: &str) -> (String, Option<u16>) {
    match JumpSpec::parse(addr) {
        Ok(j) if j.user.is_none() => (j.host, j.port),
        _ => (addr.to_string(), None),
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Renames every `Match` line to a `Host` line no name matches, so its block applies to
/// nothing (OpenSSH reads `Match` and `Host` as the two kinds of block start).
fn without_match_blocks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let keyword = line
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or("");
        if keyword.eq_ignore_ascii_case("match") {
            tracing::debug!(
                line,
                "ssh config Match block not evaluated; its options are skipped"
            );
            out.push_str("Host ");
            out.push_str(UNMATCHABLE);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// OpenSSH's `%` tokens that make sense here (`ssh_config(5)`, TOKENS): `%%`, `%h` (the host
/// name), `%d` (the local home), `%u` (the local user), `%r` (the remote user, when known).
fn expand(value: &str, host: &str, remote_user: Option<&str>, home: &Path) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(host),
            Some('d') => out.push_str(&home.to_string_lossy()),
            Some('u') => out.push_str(&std::env::var("USER").unwrap_or_default()),
            Some('r') => out.push_str(remote_user.unwrap_or("%r")),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as operators keep them: defaults at the end, a wildcard for a fleet, a bastion, a
    /// Match block, options this tool does not apply, an alias whose HostName uses `%h`.
    const REALISTIC: &str = "\
# ~/.ssh/config
Host bastion
    HostName 203.0.113.10
    User jump
    Port 2222
    IdentityFile ~/.ssh/id_bastion

Host kvm-*.dc1
    User ops
    ProxyJump bastion
    IdentityFile ~/.ssh/id_fleet
    ServerAliveInterval 15
    UseKeychain yes

Host kvm-7.dc1
    # Too late: the first obtained value wins, kvm-*.dc1 already set User.
    User late
    Port 2200

Host mgmt1
    HostName %h.mgmt.example.org
    ProxyJump ssh://jump@bastion:2222,admin@[2001:db8::1]:22

Host direct
    ProxyJump none
    HostName=10.0.0.9

Match host kvm-* exec \"true\"
    User from-match

Host *
    User root
    Port 22
    IdentityFile %d/.ssh/id_%r
    ProxyCommand ssh -W %h:%p other
";

    fn cfg() -> SshConfig {
        SshConfig::parse_str(REALISTIC, Path::new("/home/ops")).expect("parses")
    }

    #[test]
    fn first_obtained_value_wins() {
        let e = cfg().entry("kvm-7.dc1");
        assert_eq!(e.user.as_deref(), Some("ops"));
        assert_eq!(e.port, Some(2200));
        assert_eq!(e.host_name, None);
        assert_eq!(
            e.proxy_jump,
            Some(vec![JumpSpec {
                user: None,
                host: "bastion".into(),
                port: None
            }])
        );
    }

    #[test]
    fn identity_files_add_up_with_tokens_expanded() {
        let e = cfg().entry("kvm-1.dc1");
        assert_eq!(
            e.identity_files,
            [
                PathBuf::from("/home/ops/.ssh/id_fleet"),
                PathBuf::from("/home/ops/.ssh/id_ops")
            ]
        );
        assert_eq!(e.port, Some(22));
    }

    #[test]
    fn the_bastion_has_its_own_entry() {
        let e = cfg().entry("bastion");
        assert_eq!(e.host_name.as_deref(), Some("203.0.113.10"));
        assert_eq!(e.user.as_deref(), Some("jump"));
        assert_eq!(e.port, Some(2222));
        assert_eq!(
            e.identity_files[0],
            PathBuf::from("/home/ops/.ssh/id_bastion")
        );
        assert_eq!(e.proxy_jump, None);
    }

    #[test]
    fn host_name_tokens_and_jump_chains() {
        let e = cfg().entry("mgmt1");
        assert_eq!(e.host_name.as_deref(), Some("mgmt1.mgmt.example.org"));
        let hops = e.proxy_jump.expect("chain");
        assert_eq!(
            hops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["jump@bastion:2222", "admin@[2001:db8::1]:22"]
        );
        assert_eq!(e.user.as_deref(), Some("root"));
    }

    #[test]
    fn proxy_jump_none_and_equals_syntax() {
        let e = cfg().entry("direct");
        assert_eq!(e.proxy_jump, Some(vec![]));
        assert_eq!(e.host_name.as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn match_blocks_apply_to_nothing() {
        // kvm-9.other matches the Match block's pattern but no Host block before `Host *`.
        let e = cfg().entry("kvm-9.other");
        assert_eq!(e.user.as_deref(), Some("root"));
        assert_eq!(e.proxy_jump, None);
        // Read as plain lines, the Match block's User would land in `Host direct` before it.
        assert_eq!(cfg().entry("direct").user.as_deref(), Some("root"));
    }

    #[test]
    fn unknown_names_get_the_defaults_only() {
        let e = cfg().entry("elsewhere");
        assert_eq!(e.user.as_deref(), Some("root"));
        assert_eq!(e.identity_files, [PathBuf::from("/home/ops/.ssh/id_root")]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let err = SshConfig::parse_str("Host a\n  Port many\n", Path::new("/h")).expect_err("bad");
        assert!(err.to_string().contains("<text>"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = SshConfig::load(&missing).expect_err("missing");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn jump_specs_parse_and_refuse() {
        let j = JumpSpec::parse("ops@10.0.0.1:2222").expect("ok");
        assert_eq!(
            (j.user.as_deref(), j.host.as_str(), j.port),
            (Some("ops"), "10.0.0.1", Some(2222))
        );
        assert_eq!(JumpSpec::parse("::1").expect("v6").host, "::1");
        assert_eq!(JumpSpec::parse("[::1]:22").expect("v6").addr(), "[::1]:22");
        assert!(JumpSpec::parse("host:port").is_err());
        assert!(JumpSpec::parse("@host").is_err());
        assert!(JumpSpec::parse("").is_err());
        assert!(JumpSpec::parse_list("none").expect("none").is_empty());
        assert_eq!(JumpSpec::parse_list("a,b:2").expect("two").len(), 2);
    }
}
