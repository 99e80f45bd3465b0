//! Local dump files: created `0600`, written through an optional zstd encoder, hashed while
//! written, flushed to disk before they count.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::FileEntry;
use crate::{Compression, Error, Result};

/// A file that hashes and counts what reaches the disk.
struct Hashing {
    file: File,
    hash: Sha256,
    size: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

enum Sink {
    Plain(BufWriter<Hashing>),
    Zstd(zstd::Encoder<'static, BufWriter<Hashing>>),
}

/// A dump file being written.
pub(crate) struct DumpFile {
    sink: Sink,
    path: PathBuf,
    rel: String,
    /// Uncompressed bytes written.
    pub(crate) written: u64,
}

impl DumpFile {
    /// Creates `dir/rel` (it must not exist) with mode `0600`.
    pub(crate) fn create(dir: &Path, rel: &str, compression: Compression) -> Result<DumpFile> {
        let path = dir.join(rel);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        let inner = BufWriter::with_capacity(
            256 * 1024,
            Hashing {
                file,
                hash: Sha256::new(),
                size: 0,
            },
        );
        let sink = match compression {
            Compression::None => Sink::Plain(inner),
            Compression::Zstd { level } => Sink::Zstd(
                zstd::Encoder::new(inner, level).map_err(|e| Error::io("compress", &path, e))?,
            ),
        };
        Ok(DumpFile {
            sink,
            path,
            rel: rel.to_string(),
            written: 0,
        })
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let r = match &mut self.sink {
            Sink::Plain(w) => w.write_all(bytes),
            Sink::Zstd(w) => w.write_all(bytes),
        };
        r.map_err(|e| Error::io("write", &self.path, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Flushes everything to disk and returns the file's manifest entry.
    pub(crate) fn finish(self) -> Result<FileEntry> {
        let (entry, unsynced) = self.finish_unsynced()?;
        unsynced.sync()?;
        Ok(entry)
    }

    /// Writes everything out and returns the file's manifest entry, leaving the flush to disk
    /// to the caller ([`Unsynced::sync`]), which can then overlap it with other work.
    pub(crate) fn finish_unsynced(self) -> Result<(FileEntry, Unsynced)> {
        let path = self.path;
        let inner = match self.sink {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w.finish().map_err(|e| Error::io("write", &path, e))?,
        };
        let hashing = inner
            .into_inner()
            .map_err(|e| Error::io("write", &path, e.into_error()))?;
        let entry = FileEntry {
            path: self.rel,
            size: hashing.size,
            sha256: hex::encode(hashing.hash.finalize()),
        };
        Ok((
            entry,
            Unsynced {
                file: hashing.file,
                path,
            },
        ))
    }
}

/// A written dump file whose data may not be on disk yet.
#[derive(Debug)]
pub(crate) struct Unsynced {
    file: File,
    path: PathBuf,
}

impl Unsynced {
    /// Flushes the file's data and metadata to disk.
    pub(crate) fn sync(self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("flush", &self.path, e))
    }
}

/// Opens a dump file for reading, decompressing `.zst` files.
pub(crate) fn open_reader(path: &Path) -> Result<Box<dyn std::io::BufRead + Send>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    if path.extension().is_some_and(|e| e == "zst") {
        let dec = zstd::Decoder::new(file).map_err(|e| Error::io("decompress", path, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, dec)))
    } else {
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
    }
}

/// SHA-256 and size of a local file.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}

/// Flushes a directory entry list to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("flush", dir, e))
}

/// A file name part for a schema or table: letters, digits, `_` and `-` as they are, every
/// other byte as `@xx` (hex), so names never clash or leave the directory.
pub(crate) fn name_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("@{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_parts_are_safe() {
        assert_eq!(name_part("cloud_usage"), "cloud_usage");
        assert_eq!(name_part("a.b/c"), "a@2eb@2fc");
        assert_eq!(name_part("é"), "@c3@a9");
    }
}
