//! Local dump files: created `0600`, written through an optional zstd encoder, hashed while
//! written, bypassing the page cache where the file system allows, flushed to disk before
//! they count.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::FileEntry;
use crate::{Compression, Error, Result};

/// Bytes per write to the file: a multiple of [`ALIGN`].
const BLOCK: usize = 1 << 20;
/// The alignment `O_DIRECT` asks of buffers, lengths and offsets (the largest logical
/// block size in common use).
const ALIGN: usize = 4096;

/// The `open` flag for writes that bypass the page cache, where the platform has one.
#[cfg(target_os = "linux")]
const O_DIRECT: i32 = libc::O_DIRECT;
#[cfg(not(target_os = "linux"))]
const O_DIRECT: i32 = 0;

/// The end of a dump file: hashes and counts the bytes, and writes them in aligned 1 MiB
/// blocks with `O_DIRECT` where the file system takes it, through the page cache where not.
///
/// Bypassing the page cache keeps a backup from pushing the database host's cached files
/// out of memory, and saves the kernel copying every byte and allocating a page for it: on
/// the benchmark machine that was most of the dumper's system time. The file is opened
/// twice: once normally (which creates it, and writes the unaligned tail at the end) and
/// once with `O_DIRECT`; a file system that refuses the second (`EINVAL`), at the open or at
/// any write, gets everything through the first.
struct Output {
    file: File,
    direct: Option<File>,
    path: PathBuf,
    /// `BLOCK + ALIGN` bytes, of which `[start, start + BLOCK)` is aligned.
    storage: Vec<u8>,
    start: usize,
    /// Bytes waiting in the block.
    len: usize,
    /// Bytes written to the file so far.
    offset: u64,
    hash: Sha256,
}

impl Output {
    fn create(path: &Path) -> Result<Output> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        let direct = if O_DIRECT == 0 {
            None
        } else {
            OpenOptions::new()
                .write(true)
                .custom_flags(O_DIRECT)
                .open(path)
                .ok()
        };
        let storage = vec![0u8; BLOCK + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Ok(Output {
            file,
            direct,
            path: path.to_path_buf(),
            storage,
            start,
            len: 0,
            offset: 0,
            hash: Sha256::new(),
        })
    }

    /// Writes the first `n` bytes of the block, `n` a multiple of [`ALIGN`] unless nothing
    /// follows, at the file's current end.
    fn write_block(&mut self, n: usize) -> std::io::Result<()> {
        let bytes = &self.storage[self.start..self.start + n];
        if n.is_multiple_of(ALIGN)
            && let Some(direct) = &self.direct
        {
            match direct.write_all_at(bytes, self.offset) {
                Ok(()) => {
                    self.offset += n as u64;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(path = %self.path.display(), "O_DIRECT refused; writing through the page cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(bytes, self.offset)?;
        self.offset += n as u64;
        Ok(())
    }

    /// Writes what the block still holds; returns the file, its size and its SHA-256.
    fn finish(mut self) -> std::io::Result<(File, u64, String)> {
        let aligned = self.len / ALIGN * ALIGN;
        let tail = self.len - aligned;
        if aligned > 0 {
            self.write_block(aligned)?;
        }
        if tail > 0 {
            self.storage
                .copy_within(self.start + aligned..self.start + self.len, self.start);
            self.write_block(tail)?;
        }
        Ok((self.file, self.offset, hex::encode(self.hash.finalize())))
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(BLOCK - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&buf[..n]);
        self.hash.update(&buf[..n]);
        self.len += n;
        if self.len == BLOCK {
            self.write_block(BLOCK)?;
            self.len = 0;
        }
        Ok(n)
    }

    /// Blocks are written when full or at [`Output::finish`]: writing a partial one early
    /// would leave the file's end unaligned for the next.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Sink {
    Plain(Output),
    Zstd(zstd::Encoder<'static, Output>),
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
        let inner = Output::create(&path)?;
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
        let (file, size, sha256) = inner.finish().map_err(|e| Error::io("write", &path, e))?;
        let entry = FileEntry {
            path: self.rel,
            size,
            sha256,
        };
        Ok((entry, Unsynced { file, path }))
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
    // `O_NOFOLLOW`: a file swapped for a symbolic link after the checks is not followed.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
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

    /// Bytes that differ from position to position, so a misplaced block shows.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Writes `data` in uneven pieces, as the dumper does, and reads the file back.
    fn round_trip(compression: Compression, data: &[u8]) -> (FileEntry, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let rel = format!("t.sql{}", compression.suffix());
        let rel = rel.as_str();
        let mut f = DumpFile::create(dir.path(), rel, compression).unwrap();
        let mut rest = data;
        let mut piece = 1;
        while !rest.is_empty() {
            let n = piece.min(rest.len());
            f.write(&rest[..n]).unwrap();
            rest = &rest[n..];
            piece = piece * 3 + 1;
        }
        assert_eq!(f.written, data.len() as u64);
        let entry = f.finish().unwrap();
        let path = dir.path().join(rel);
        let mut back = Vec::new();
        open_reader(&path).unwrap().read_to_end(&mut back).unwrap();
        let (size, sha256) = hash_file(&path).unwrap();
        assert_eq!(
            (entry.size, &entry.sha256),
            (size, &sha256),
            "{} bytes",
            data.len()
        );
        (entry, back)
    }

    #[test]
    fn files_hold_exactly_what_was_written_whatever_the_block_boundaries() {
        for n in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + ALIGN + 123,
        ] {
            let data = pattern(n);
            let (entry, back) = round_trip(Compression::None, &data);
            assert_eq!(entry.size, n as u64);
            assert!(back == data, "{n} bytes differ after the round trip");
            let (_, back) = round_trip(Compression::Zstd { level: 1 }, &data);
            assert!(
                back == data,
                "{n} bytes differ after the compressed round trip"
            );
        }
    }

    #[test]
    fn a_refused_direct_write_goes_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sql");
        let mut out = Output::create(&path).unwrap();
        if O_DIRECT != 0 {
            assert!(out.direct.is_some(), "this file system takes O_DIRECT");
        }
        // An unaligned file end makes the kernel refuse the next direct write (EINVAL).
        let data = pattern(BLOCK + 100);
        out.write_all(&data[..100]).unwrap();
        out.write_block(100).unwrap();
        out.len = 0;
        out.write_all(&data[100..]).unwrap();
        assert!(out.direct.is_none(), "the refused descriptor is dropped");
        let (_, size, _) = out.finish().unwrap();
        assert_eq!(size, data.len() as u64);
        assert!(std::fs::read(&path).unwrap() == data);
    }
}
