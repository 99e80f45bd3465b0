//! The SQL scripts the target's management server runs, read out of its package.
//!
//! CloudStack keeps the upgrade scripts as classpath resources under `META-INF/db/`
//! (`engine/schema/src/main/resources/META-INF/db/`: `schema-<from>to<to>.sql`,
//! `schema-<from>to<to>-cleanup.sql`, `views/*.sql`, `procedures/*.sql`). They end up inside
//! the jars the `cloudstack-management` package installs under
//! `/usr/share/cloudstack-management/lib/` (`debian/cloudstack-management.install` takes
//! `/usr/share/cloudstack-management/*`; `packaging/el8/cloud.spec` installs the same tree).
//! A `.deb` is an `ar` archive whose `data.tar[.gz|.xz|.zst]` holds that tree; an `.rpm` is a
//! lead, a signature header and a header followed by a compressed `cpio` (newc) payload.
//! The resources travel in the one application jar, `lib/cloudstack-<version>.jar` (a
//! downstream build's packaging check asserts exactly that jar carries
//! `META-INF/db/views/*.sql` and no `cloud-engine-schema-*.jar` sits beside it). UNCONFIRMED
//! for every upstream release, so every jar under that directory is read.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Where CloudStack's management package installs its jars.
pub const JAR_DIR: &str = "usr/share/cloudstack-management/lib/";

/// The resource directory of the upgrade scripts inside a jar.
pub const RESOURCE_DIR: &str = "META-INF/db/";

/// The largest package read (bytes).
pub const MAX_PACKAGE_BYTES: u64 = 2 << 30;

/// The largest single member (a jar, a script) read out of an archive (bytes).
pub const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// SQL scripts by name under `META-INF/db/` (`schema-41800to41810.sql`, `views/x.sql`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scripts {
    /// Where they were read from (a directory, a package file, a URL), for messages.
    pub source: String,
    /// Script name → text.
    pub files: BTreeMap<String, String>,
    /// The jars they came from (empty for a directory).
    pub jars: Vec<String>,
}

impl Scripts {
    /// The script `name`, or [`Error::MissingScript`].
    ///
    /// # Errors
    /// [`Error::MissingScript`] when it is not there.
    pub fn get(&self, name: &str) -> Result<&str> {
        self.files
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::MissingScript {
                name: name.to_string(),
                source_name: self.source.clone(),
            })
    }

    /// The names under `dir/` (`views`, `procedures`), sorted as CloudStack lists them.
    ///
    /// UNCONFIRMED: `DatabaseUpgradeChecker` lists the directory through the class loader;
    /// the order is taken to be the file names' order.
    pub fn under(&self, dir: &str) -> Vec<&str> {
        let prefix = format!("{dir}/");
        self.files
            .keys()
            .filter(|k| k.starts_with(&prefix) && k.ends_with(".sql"))
            .map(String::as_str)
            .collect()
    }

    /// Reads every `*.sql` file under `dir` (and its `views/` and `procedures/`
    /// subdirectories): an operator's copy of `META-INF/db/`.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory or a file cannot be read; [`Error::Package`] when a
    /// file is not UTF-8 or too large.
    pub fn from_dir(dir: &Path) -> Result<Scripts> {
        let mut files = BTreeMap::new();
        for sub in ["", "views", "procedures"] {
            let d = if sub.is_empty() {
                dir.to_path_buf()
            } else {
                dir.join(sub)
            };
            if !sub.is_empty() && !d.is_dir() {
                continue;
            }
            let io = |source| Error::Io {
                path: d.clone(),
                source,
            };
            for entry in std::fs::read_dir(&d).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".sql") || !entry.path().is_file() {
                    continue;
                }
                let path = entry.path();
                let data = read_bounded(&path, MAX_MEMBER_BYTES)?;
                let key = if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                };
                files.insert(key.clone(), utf8(&key, data)?);
            }
        }
        Ok(Scripts {
            source: dir.display().to_string(),
            files,
            jars: Vec::new(),
        })
    }

    /// Reads the scripts out of a `cloudstack-management` `.deb` or `.rpm` file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; [`Error::Package`] when it is neither format,
    /// is damaged, or carries no `META-INF/db/*.sql` in any jar.
    pub fn from_package_file(path: &Path) -> Result<Scripts> {
        let data = read_bounded(path, MAX_PACKAGE_BYTES)?;
        Scripts::from_package(&path.display().to_string(), &data)
    }

    /// Reads the scripts out of a package's bytes (`.deb` or `.rpm`, told apart by their magic).
    ///
    /// # Errors
    /// As [`Scripts::from_package_file`].
    pub fn from_package(source: &str, data: &[u8]) -> Result<Scripts> {
        let mut jars = Vec::new();
        if data.starts_with(b"!<arch>\n") {
            deb_jars(source, data, &mut jars)?;
        } else if data.starts_with(&[0xed, 0xab, 0xee, 0xdb]) {
            rpm_jars(source, data, &mut jars)?;
        } else {
            return Err(Error::package(source, "neither a .deb nor an .rpm package"));
        }
        let mut files = BTreeMap::new();
        let mut names = Vec::new();
        for (name, jar) in jars {
            let found = jar_scripts(&name, &jar)?;
            if !found.is_empty() {
                names.push(name);
            }
            for (k, v) in found {
                files.entry(k).or_insert(v);
            }
        }
        if files.is_empty() {
            return Err(Error::package(
                source,
                format!("no jar under /{JAR_DIR} carries {RESOURCE_DIR}*.sql"),
            ));
        }
        Ok(Scripts {
            source: source.to_string(),
            files,
            jars: names,
        })
    }
}

/// The SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut data = Vec::new();
    f.take(max + 1).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 > max {
        return Err(Error::package(
            path.display().to_string(),
            format!("larger than {max} bytes"),
        ));
    }
    Ok(data)
}

fn utf8(name: &str, data: Vec<u8>) -> Result<String> {
    String::from_utf8(data).map_err(|_| Error::package(name, "not UTF-8 text"))
}

fn is_jar(path: &str) -> bool {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    p.starts_with(JAR_DIR) && p.ends_with(".jar")
}

/// The jars of a `.deb`'s `data.tar*`.
fn deb_jars(source: &str, data: &[u8], jars: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut ar = ar::Archive::new(Cursor::new(data));
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| Error::package(source, format!("bad ar archive: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let name = name.trim_end_matches('/').to_string();
        if !name.starts_with("data.tar") {
            continue;
        }
        let what = format!("{source}: {name}");
        let reader = decompressor(&what, &name, entry)?;
        return tar_jars(&what, reader, jars);
    }
    Err(Error::package(source, "no data.tar member"))
}

/// A reader decompressing by the member name's suffix.
fn decompressor<'a, R: Read + 'a>(what: &str, name: &str, r: R) -> Result<Box<dyn Read + 'a>> {
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(r))
    } else if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new(r))
    } else if name.ends_with(".zst") {
        Box::new(
            zstd::stream::read::Decoder::new(r)
                .map_err(|e| Error::package(what, format!("bad zstd stream: {e}")))?,
        )
    } else if name.ends_with(".tar") || !name.contains('.') {
        Box::new(r)
    } else {
        return Err(Error::package(what, "unsupported compression"));
    })
}

fn tar_jars(what: &str, r: impl Read, jars: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let bad = |e: std::io::Error| Error::package(what, format!("bad tar archive: {e}"));
    let mut tar = tar::Archive::new(r);
    for entry in tar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if !entry.header().entry_type().is_file() || !is_jar(&path) {
            continue;
        }
        let mut data = Vec::new();
        entry
            .take(MAX_MEMBER_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(bad)?;
        if data.len() as u64 > MAX_MEMBER_BYTES {
            return Err(Error::package(what, format!("{path} is too large")));
        }
        jars.push((path, data));
    }
    Ok(())
}

/// The jars of an `.rpm`'s payload. The lead is 96 bytes; each header is an 8-byte magic +
/// reserved block, a 4-byte index count and a 4-byte store size, then 16 bytes per index entry
/// and the store; the signature header is padded to 8 bytes. The payload compressor is told
/// by its magic.
fn rpm_jars(source: &str, data: &[u8], jars: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let short = || Error::package(source, "truncated rpm header");
    let header_len = |at: usize| -> Result<usize> {
        let h = data.get(at..at + 16).ok_or_else(short)?;
        if h[..3] != [0x8e, 0xad, 0xe8] {
            return Err(Error::package(source, "bad rpm header magic"));
        }
        let n = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let size = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
        Ok(16 + n.saturating_mul(16) + size)
    };
    let sig = 96;
    let sig_len = header_len(sig)?;
    let main = sig + sig_len.div_ceil(8) * 8;
    let payload = main + header_len(main)?;
    let body = data.get(payload..).ok_or_else(short)?;
    let what = format!("{source}: payload");
    let name = if body.starts_with(&[0x1f, 0x8b]) {
        "payload.gz"
    } else if body.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "payload.xz"
    } else if body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "payload.zst"
    } else if body.starts_with(b"07070") {
        "payload"
    } else {
        return Err(Error::package(&what, "unsupported payload compression"));
    };
    let mut r = decompressor(&what, name, body)?;
    let bad = |e: std::io::Error| Error::package(&what, format!("bad cpio archive: {e}"));
    loop {
        let entry = cpio::NewcReader::new(r).map_err(bad)?;
        if entry.entry().is_trailer() {
            return Ok(());
        }
        let path = entry.entry().name().to_string();
        let size = u64::from(entry.entry().file_size());
        let is_file = entry.entry().mode() & 0o170000 == 0o100000;
        if is_file && is_jar(&path) {
            if size > MAX_MEMBER_BYTES {
                return Err(Error::package(&what, format!("{path} is too large")));
            }
            let mut data = Vec::new();
            let mut entry = entry;
            (&mut entry)
                .take(size)
                .read_to_end(&mut data)
                .map_err(bad)?;
            jars.push((path, data));
            r = entry.finish().map_err(bad)?;
        } else {
            r = entry.finish().map_err(bad)?;
        }
    }
}

/// `META-INF/db/**.sql` of one jar.
fn jar_scripts(name: &str, jar: &[u8]) -> Result<BTreeMap<String, String>> {
    let bad = |e: zip::result::ZipError| Error::package(name, format!("bad jar: {e}"));
    let mut zip = zip::ZipArchive::new(Cursor::new(jar)).map_err(bad)?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(bad)?;
        let fname = f.name().map_err(bad)?.into_owned();
        let Some(rel) = fname.strip_prefix(RESOURCE_DIR).map(str::to_string) else {
            continue;
        };
        if !f.is_file() || !rel.ends_with(".sql") {
            continue;
        }
        if f.size() > MAX_MEMBER_BYTES {
            return Err(Error::package(name, format!("{rel} is too large")));
        }
        let mut data = Vec::new();
        (&mut f)
            .take(MAX_MEMBER_BYTES)
            .read_to_end(&mut data)
            .map_err(|e| Error::package(name, format!("cannot read {rel}: {e}")))?;
        out.insert(rel.clone(), utf8(&format!("{name}!{rel}"), data)?);
    }
    Ok(out)
}
