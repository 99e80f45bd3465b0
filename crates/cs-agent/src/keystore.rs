//! The agent's keystore: files and modes, the passphrase opening the store, the certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cs_core::{Cmd, Host, HostError, Layout, Secret};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::{Digest, Sha1};
use sha2::{Sha256, Sha384, Sha512};

use crate::{Error, Result};

/// The keystore files in the agent's configuration directory and the mode CloudStack's
/// `keystore-setup` and `keystore-cert-import` scripts give each (`chmod 600`).
pub const KEYSTORE_FILES: &[(&str, u32)] = &[
    ("cloud.jks", 0o600),
    ("cloud.crt", 0o600),
    ("cloud.key", 0o600),
    ("cloud.ca.crt", 0o600),
];

/// How to tell whether the passphrase opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Opener {
    /// Verify the store's integrity check here (JKS, JCEKS and PKCS#12 with a MAC), and fall
    /// back to the host's `keytool` for anything else. No JVM start per host.
    #[default]
    Native,
    /// Always run the host's `keytool -list` (the passphrase goes on its standard input).
    HostKeytool,
}

/// The format of a keystore file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreFormat {
    /// Sun JKS (`0xFEEDFEED`).
    Jks,
    /// JCEKS (`0xCECECECE`).
    Jceks,
    /// PKCS#12 (the default of `keytool -genkey` from Java 9 on, whatever the file is called).
    Pkcs12,
    /// Not recognised.
    Unknown,
}

/// One keystore file as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreFile {
    /// The file name (`cloud.jks`).
    pub name: String,
    /// Its permission bits, when present.
    pub mode: Option<u32>,
    /// The mode the keystore scripts set.
    pub expected_mode: u32,
}

impl StoreFile {
    /// Whether the file exists.
    pub fn is_present(&self) -> bool {
        self.mode.is_some()
    }
}

/// What `cloud.crt` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The subject (`CN=kvm1, OU=cloudstack, …`).
    pub subject: String,
    /// The end of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// IP addresses among the subject alternative names.
    pub san_ips: Vec<IpAddr>,
    /// DNS names among the subject alternative names.
    pub san_dns: Vec<String>,
}

impl CertInfo {
    /// Parses a PEM (or DER) certificate.
    ///
    /// # Errors
    /// [`Error::Unexpected`] naming `what` when it is not an X.509 certificate.
    pub fn parse(bytes: &[u8], what: &str) -> Result<CertInfo> {
        let bad = |detail: String| Error::Unexpected {
            host: String::new(),
            what: what.to_string(),
            detail,
        };
        let der = if bytes.starts_with(b"-----") || bytes.iter().take(64).all(u8::is_ascii) {
            let (_, pem) = x509_parser::pem::parse_x509_pem(bytes)
                .map_err(|e| bad(format!("not a PEM certificate ({e})")))?;
            pem.contents
        } else {
            bytes.to_vec()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(format!("not an X.509 certificate ({e})")))?;
        let mut san_ips = Vec::new();
        let mut san_dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            san_ips.push(IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            san_ips.push(IpAddr::from(a));
                        }
                    }
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        san_dns.push((*d).to_string());
                    }
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            not_after: cert.validity().not_after.timestamp(),
            san_ips,
            san_dns,
        })
    }

    /// Days from `now` (Unix seconds) until the certificate expires; negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// The keystore of one host, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeystoreState {
    /// The configuration directory looked at.
    pub dir: PathBuf,
    /// Each file of [`KEYSTORE_FILES`].
    pub files: Vec<StoreFile>,
    /// Whether `keystore.passphrase` is set (non-blank) in `agent.properties`.
    pub passphrase_present: bool,
    /// The store's format, when `cloud.jks` was read.
    pub format: Option<StoreFormat>,
    /// Whether the passphrase opens the store; `None` when it could not be tried (no store, no
    /// passphrase).
    pub opens: Option<bool>,
    /// `cloud.crt`, when present and parseable.
    pub cert: Option<CertInfo>,
    /// Why `cloud.crt` could not be parsed, when it could not.
    pub cert_error: Option<String>,
}

impl KeystoreState {
    /// The entry for `name`.
    pub fn file(&self, name: &str) -> Option<&StoreFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// Inspects the keystore in `layout.agent_conf_dir`: file modes, whether `passphrase` opens
/// `cloud.jks`, and `cloud.crt`.
///
/// # Errors
/// Host errors other than missing files; [`Error::Host`] when `keytool` is needed and missing.
pub async fn inspect(
    host: &dyn Host,
    layout: &Layout,
    passphrase: Option<&Secret>,
    opener: Opener,
) -> Result<KeystoreState> {
    let dir = layout.agent_conf_dir.clone();
    let entries = match host.list_dir(&dir).await {
        Ok(e) => e,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(Error::host(format!("list {}", dir.display()), e)),
    };
    let files = store_files(|name| entries.iter().find(|e| e.name == name).map(|e| e.meta.mode));
    let jks = match files[0].is_present() {
        true => Some(read_file(host, &dir.join("cloud.jks")).await?),
        false => None,
    };
    let (format, opens) = open_store(host, &dir, jks.as_deref(), passphrase, opener).await?;
    let crt = match files[1].is_present() {
        true => Some(read_file(host, &dir.join("cloud.crt")).await?),
        false => None,
    };
    Ok(state(dir, files, passphrase, format, opens, crt.as_deref()))
}

/// [`KEYSTORE_FILES`] with the mode `mode_of` finds for each (`None`: absent).
pub(crate) fn store_files(mode_of: impl Fn(&str) -> Option<u32>) -> Vec<StoreFile> {
    KEYSTORE_FILES
        .iter()
        .map(|(name, mode)| StoreFile {
            name: (*name).to_string(),
            mode: mode_of(name),
            expected_mode: *mode,
        })
        .collect()
}

/// Reads a keystore file, naming it in the error.
pub(crate) async fn read_file(host: &dyn Host, path: &Path) -> Result<Vec<u8>> {
    host.read(path)
        .await
        .map_err(|e| Error::host(format!("read {}", path.display()), e))
}

fn usable(passphrase: Option<&Secret>) -> Option<&Secret> {
    passphrase.filter(|p| !p.expose().trim().is_empty())
}

/// The format of `cloud.jks` (its bytes, when present) and whether `passphrase` opens it,
/// asking the host's `keytool` when this code cannot tell or `opener` says so.
pub(crate) async fn open_store(
    host: &dyn Host,
    dir: &Path,
    jks: Option<&[u8]>,
    passphrase: Option<&Secret>,
    opener: Opener,
) -> Result<(Option<StoreFormat>, Option<bool>)> {
    let Some(bytes) = jks else {
        return Ok((None, None));
    };
    let format = store_format(bytes);
    let opens = match usable(passphrase) {
        None => None,
        Some(p) => Some(match (opener, verify_native(bytes, p)) {
            (Opener::Native, Some(ok)) => ok,
            _ => opens_with_keytool(host, &dir.join("cloud.jks"), p).await?,
        }),
    };
    Ok((Some(format), opens))
}

/// Puts the pieces of a [`KeystoreState`] together, parsing `cloud.crt` (its bytes, when
/// present).
pub(crate) fn state(
    dir: PathBuf,
    files: Vec<StoreFile>,
    passphrase: Option<&Secret>,
    format: Option<StoreFormat>,
    opens: Option<bool>,
    crt: Option<&[u8]>,
) -> KeystoreState {
    let (cert, cert_error) = match crt.map(|b| CertInfo::parse(b, "cloud.crt")) {
        Some(Ok(c)) => (Some(c), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    KeystoreState {
        dir,
        files,
        passphrase_present: usable(passphrase).is_some(),
        format,
        opens,
        cert,
        cert_error,
    }
}

/// Asks the host's `keytool` whether `passphrase` opens `store`.
async fn opens_with_keytool(host: &dyn Host, store: &Path, passphrase: &Secret) -> Result<bool> {
    let mut input = passphrase.expose().as_bytes().to_vec();
    input.push(b'\n');
    let cmd = Cmd::new("keytool")
        .arg("-list")
        .arg("-keystore")
        .arg(store.to_string_lossy())
        .stdin(input)
        .timeout(std::time::Duration::from_secs(60));
    let out = host
        .run(&cmd)
        .await
        .map_err(|e| Error::host("run keytool", e))?;
    if out.code == 127 {
        return Err(Error::host(
            "run keytool",
            HostError::Spawn {
                host: host.name().to_string(),
                program: "keytool".into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not on PATH"),
            },
        ));
    }
    if out.success() {
        return Ok(true);
    }
    let text = format!("{}{}", out.stdout_lossy(), out.stderr_lossy());
    if text.contains("password was incorrect")
        || text.contains("tampered")
        || text.contains("Password verification failed")
        || text.contains("keystore password was incorrect")
    {
        return Ok(false);
    }
    Err(Error::Unexpected {
        host: host.name().to_string(),
        what: "keytool -list".into(),
        detail: text.lines().last().unwrap_or("").to_string(),
    })
}

/// Recognises a keystore by its first bytes.
pub fn store_format(bytes: &[u8]) -> StoreFormat {
    match bytes.get(..4) {
        Some([0xFE, 0xED, 0xFE, 0xED]) => StoreFormat::Jks,
        Some([0xCE, 0xCE, 0xCE, 0xCE]) => StoreFormat::Jceks,
        Some([0x30, ..]) => StoreFormat::Pkcs12,
        _ => StoreFormat::Unknown,
    }
}

/// Checks a keystore's integrity with `passphrase`, as Java does on load: `Some(true)` opens,
/// `Some(false)` wrong passphrase or tampered file, `None` when the format has no check this
/// code knows (the host's `keytool` then decides).
///
/// ```
/// // A JKS file is its body followed by SHA-1(password UTF-16BE, "Mighty Aphrodite", body).
/// use sha1::Digest;
/// let body = [0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2, 0, 0, 0, 0];
/// let mut h = sha1::Sha1::new();
/// h.update([0, b'p', 0, b'w']);
/// h.update(b"Mighty Aphrodite");
/// h.update(body);
/// let store = [&body[..], &h.finalize()[..]].concat();
/// assert_eq!(cs_agent::verify_native(&store, &"pw".into()), Some(true));
/// assert_eq!(cs_agent::verify_native(&store, &"no".into()), Some(false));
/// ```
pub fn verify_native(bytes: &[u8], passphrase: &Secret) -> Option<bool> {
    match store_format(bytes) {
        StoreFormat::Jks | StoreFormat::Jceks => {
            if bytes.len() < 20 {
                return Some(false);
            }
            let (body, digest) = bytes.split_at(bytes.len() - 20);
            let mut h = Sha1::new();
            for unit in passphrase.expose().encode_utf16() {
                h.update(unit.to_be_bytes());
            }
            h.update(b"Mighty Aphrodite");
            h.update(body);
            Some(h.finalize().as_slice() == digest)
        }
        StoreFormat::Pkcs12 => pkcs12_mac_ok(bytes, passphrase),
        StoreFormat::Unknown => None,
    }
}

/// A minimal DER reader: enough of PKCS#12 to find and check the MAC.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// Reads one element: (tag, contents).
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let d = self.0;
        let tag = *d.first()?;
        let first = *d.get(1)? as usize;
        let (len, hdr) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *d.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let body = d.get(hdr..hdr + len)?;
        self.0 = &d[hdr + len..];
        Some((tag, body))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, b) if t == tag => Some(b),
            _ => None,
        }
    }
}

const OID_SHA1: &[u8] = &[0x2B, 0x0E, 0x03, 0x02, 0x1A];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

fn pkcs12_mac_ok(bytes: &[u8], passphrase: &Secret) -> Option<bool> {
    let pfx = Der(bytes).expect(0x30)?;
    let mut pfx = Der(pfx);
    pfx.expect(0x02)?; // version
    let mut auth_safe = Der(pfx.expect(0x30)?);
    auth_safe.expect(0x06)?; // contentType: data
    let data = Der(auth_safe.expect(0xA0)?).expect(0x04)?;
    let mut mac_data = Der(pfx.expect(0x30)?); // No MAC: nothing to verify natively.
    let mut digest_info = Der(mac_data.expect(0x30)?);
    let mut alg = Der(digest_info.expect(0x30)?);
    let oid = alg.expect(0x06)?;
    let digest = digest_info.expect(0x04)?;
    let salt = mac_data.expect(0x04)?;
    let iterations = match mac_data.next() {
        Some((0x02, b)) if b.len() <= 4 => b.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x)),
        None => 1,
        _ => return None,
    };
    // BMPString password with a two-byte terminator (RFC 7292 B.1).
    let mut pw: Vec<u8> = passphrase
        .expose()
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    pw.extend([0, 0]);
    macro_rules! check {
        ($h:ty, $v:expr) => {{
            let key = pkcs12_kdf::<$h>(&pw, salt, iterations, $v);
            let mut mac = <Hmac<$h> as Mac>::new_from_slice(&key).ok()?;
            mac.update(data);
            Some(mac.verify_slice(digest).is_ok())
        }};
    }
    match oid {
        OID_SHA1 => check!(Sha1, 64),
        OID_SHA256 => check!(Sha256, 64),
        OID_SHA384 => check!(Sha384, 128),
        OID_SHA512 => check!(Sha512, 128),
        _ => None,
    }
}

/// RFC 7292 appendix B.2 key derivation with ID 3 (MAC key), for a key as long as the hash.
fn pkcs12_kdf<H: Digest>(pw: &[u8], salt: &[u8], iterations: u32, v: usize) -> Vec<u8> {
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        src.iter().copied().cycle().take(len).collect()
    };
    let mut h = H::new();
    h.update(vec![3u8; v]);
    h.update(fill(salt));
    h.update(fill(pw));
    let mut a = h.finalize();
    for _ in 1..iterations.max(1) {
        a = H::digest(&a);
    }
    a.to_vec()
}

/// The host's own addresses (`ip -o addr show`), without loopback and link-local ones, as
/// `keystore-setup` puts them in the certificate request.
///
/// # Errors
/// Host errors; a host without `ip` gives an empty list.
pub async fn host_addresses(host: &dyn Host) -> Result<Vec<IpAddr>> {
    let out = match host.run(&Cmd::new("ip").args(["-o", "addr", "show"])).await {
        Ok(o) if o.success() => o,
        Ok(_) => return Ok(Vec::new()),
        Err(HostError::Spawn { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(Error::host("run ip addr", e)),
    };
    Ok(parse_ip_addr(&out.stdout_lossy()))
}

pub(crate) fn parse_ip_addr(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if (w == "inet" || w == "inet6")
                && let Some(addr) = words.next().and_then(|a| a.split('/').next())
                && let Ok(ip) = addr.parse::<IpAddr>()
            {
                let skip = match ip {
                    IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
                    IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
                };
                if !skip && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// Whether `text` has a non-blank `keystore.passphrase` line, as the keystore scripts read it.
pub(crate) fn passphrase_of(props: &crate::Properties) -> Option<Secret> {
    props
        .get_secret("keystore.passphrase")
        .filter(|s| !s.expose().trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addr_output_skips_loopback_and_link_local() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    2: eth0    inet 10.1.2.3/24 brd 10.1.2.255 scope global eth0\n\
                    2: eth0    inet6 fe80::1/64 scope link\n\
                    3: cloudbr0    inet 169.254.0.1/16 scope link\n\
                    3: cloudbr0    inet6 2001:db8::5/64 scope global\n";
        assert_eq!(
            parse_ip_addr(text),
            [
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn formats_by_magic() {
        assert_eq!(store_format(&[0xFE, 0xED, 0xFE, 0xED]), StoreFormat::Jks);
        assert_eq!(store_format(&[0x30, 0x82, 0, 0]), StoreFormat::Pkcs12);
        assert_eq!(store_format(b"junk"), StoreFormat::Unknown);
        assert_eq!(verify_native(b"junk", &"x".into()), None);
        assert_eq!(verify_native(&[0x30, 0x01, 0x00], &"x".into()), None);
    }
}
