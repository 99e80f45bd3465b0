//! A host's agent facts in one round trip: one POSIX `sh` script runs the commands the
//! piecewise collection runs (package query, `java -version`) and reads the files it reads
//! (`agent.properties`, the keystore's modes and bytes, the jar directory), printing each in
//! a section of its standard output.
//!
//! Over SSH every command or file is a round trip or several (SFTP's open, read, close), and
//! on a real network those round trips are most of a host's time. The script is a shortcut,
//! not a second implementation: it runs the very [`Cmd`]s the piecewise functions run, the
//! parsers are shared, and whatever the script cannot answer exactly (a program that cannot be
//! executed, a file it cannot read, a host without `sh`, `stat` or `tail`) is left to the
//! piecewise functions, so results and errors stay those of the piecewise collection.
//!
//! The script is a fixed text with every path and command word quoted by
//! [`cs_core::shell_quote`] / [`Cmd::to_shell`]; it goes to `sh -c` as one argument, so the
//! [`cs_core::Host`] contract (a program and its arguments) holds.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use cs_core::{Cmd, shell_quote};

use crate::keystore::{self, KEYSTORE_FILES, StoreFile};
use crate::packages::{self, Family, JarVersions, PackageState};
use crate::{Error, Node, Result};

/// What the script found. `None` in a field: the script could not tell, ask the host the
/// piecewise way.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The package family and states, or [`Error::NoPackageManager`].
    pub(crate) packages: Option<Result<(Family, Vec<PackageState>)>>,
    /// The bytes of `agent.properties`.
    pub(crate) properties: Option<Vec<u8>>,
    /// The keystore files and the bytes of those it read.
    pub(crate) keystore: Option<StoreFiles>,
    /// `java -version`'s major version (`Some(None)`: no `java`).
    pub(crate) java: Option<Option<u32>>,
    /// `cloud-*.jar` versions.
    pub(crate) jars: Option<JarVersions>,
}

/// The keystore directory as the script saw it.
#[derive(Debug)]
pub(crate) struct StoreFiles {
    /// Each of [`KEYSTORE_FILES`] with its mode when present.
    pub(crate) files: Vec<StoreFile>,
    /// `cloud.jks`, when present and read.
    pub(crate) jks: Option<Vec<u8>>,
    /// `cloud.crt`, when present and read.
    pub(crate) crt: Option<Vec<u8>>,
}

/// Runs the script on the node's host. `None` when it did not run or its output is not what
/// the script prints (no `sh`, a fake host, a non-UTF-8 path): collect piecewise then.
pub(crate) async fn gather(node: &Node, packages: &[&str]) -> Option<Batch> {
    let props = node.layout.agent_properties();
    let (props, conf, lib) = (
        plain(props.to_str()?)?,
        plain(node.layout.agent_conf_dir.to_str()?)?,
        plain(node.layout.agent_lib_dir.to_str()?)?,
    );
    let marker = marker();
    let text = script(&marker, packages, props, conf, lib);
    let out = match node.host.run(&Cmd::new("sh").arg("-c").arg(text)).await {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(host = %node.name(), error = %e, "batched facts unavailable");
            return None;
        }
    };
    let batch = parse(
        &out.stdout,
        &out.stderr,
        &marker,
        packages,
        node.name(),
        (props, conf),
    );
    if batch.is_none() {
        tracing::debug!(host = %node.name(), code = out.code, "batched facts output not understood");
    }
    batch
}

/// A path the script's line-based sections can carry (no newline).
fn plain(path: &str) -> Option<&str> {
    (!path.contains('\n')).then_some(path)
}

/// A fresh random marker for section headers, so file contents cannot forge one.
fn marker() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut a = state.build_hasher();
    a.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut b = state.build_hasher();
    b.write_u64(a.finish());
    format!("cs-facts-{:016x}{:016x}", a.finish(), b.finish())
}

/// The script. Section headers are `\n<marker> <name...>\n`; the bytes up to the next header
/// are the section's content, exactly. `rc N` headers carry the previous command's exit code.
/// Only `java` may write to standard error, as it does when run alone.
///
/// Every process counts (on a real host `java -version` dwarfs them, but a lab of a hundred
/// hosts on two cores feels each one), so the files come from one `stat` (sizes and modes) and
/// one `tail -v -c +1` (their bytes, one after the other with a `==> path <==` line before
/// each); the sizes cut the stream apart and the header lines check the cuts.
fn script(m: &str, packages: &[&str], props: &str, conf: &str, lib: &str) -> String {
    let deb = packages::query_cmd(Family::Deb, packages).to_shell();
    let rpm = packages::query_cmd(Family::Rpm, packages).to_shell();
    let locks = packages::locks_cmd().to_shell();
    let java = packages::java_cmd().to_shell();
    let store: String = KEYSTORE_FILES
        .iter()
        .map(|(n, _)| format!(" \"$c/{n}\""))
        .collect();
    let read: String = READ.iter().map(|n| format!(" \"$c/{n}\"")).collect();
    let (props, conf, lib) = (shell_quote(props), shell_quote(conf), shell_quote(lib));
    format!(
        r#"s() {{ printf '\n%s %s\n' {m} "$*"; }}
s deb; {deb} 2>/dev/null; r=$?; s rc $r
if [ $r -eq 127 ]; then
  s rpm; {rpm} 2>/dev/null; r=$?; s rc $r
  if [ $r -ne 127 ]; then s locks; {locks} 2>/dev/null; s rc $?; fi
fi
p={props}; c={conf}
if [ -d "$c" ] && [ -r "$c" ] && [ -x "$c" ]; then
  s stat; stat -c '%s %f %n' -- "$c" "$p"{store} 2>/dev/null; s rc $?
  s files; tail -v -c +1 -- "$p"{read} 2>/dev/null; s rc $?
elif [ -e "$c" ] || [ -L "$c" ]; then s conf other
else s conf missing; fi
l={lib}
if [ -d "$l" ] && [ -r "$l" ] && [ -x "$l" ]; then
  s jars; for f in "$l"/*; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "${{f##*/}}"; fi; done
elif [ -e "$l" ] || [ -L "$l" ]; then s lib other
else s jars; fi
s java; {java}; s rc $?
s end
"#
    )
}

/// The keystore files whose bytes the facts need, in the order the script reads them (after
/// `agent.properties`).
const READ: [&str; 2] = ["cloud.jks", "cloud.crt"];

/// The script's sections in order: (header after the marker, content).
fn sections<'a>(stdout: &'a [u8], marker: &str) -> Option<Vec<(&'a str, &'a [u8])>> {
    let delim = format!("\n{marker} ");
    let delim = delim.as_bytes();
    let mut rest = stdout.strip_prefix(delim)?;
    let mut out = Vec::new();
    loop {
        let nl = rest.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&rest[..nl]).ok()?;
        let body = &rest[nl + 1..];
        match body.windows(delim.len()).position(|w| w == delim) {
            Some(i) => {
                out.push((header, &body[..i]));
                rest = &body[i + delim.len()..];
            }
            None => {
                out.push((header, body));
                return Some(out);
            }
        }
    }
}

/// Reads sections in order.
struct Cursor<'a> {
    secs: Vec<(&'a str, &'a [u8])>,
    next: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.secs.get(self.next).map(|(h, _)| *h)
    }

    /// The content of the next section, which must be `header`.
    fn expect(&mut self, header: &str) -> Option<&'a [u8]> {
        let (h, body) = *self.secs.get(self.next)?;
        (h == header).then(|| {
            self.next += 1;
            body
        })
    }

    /// The exit code in the next section, an empty `rc N`.
    fn rc(&mut self) -> Option<i32> {
        let (h, body) = *self.secs.get(self.next)?;
        let code = h.strip_prefix("rc ")?.parse().ok()?;
        body.is_empty().then(|| {
            self.next += 1;
            code
        })
    }
}

/// A command's output read as the piecewise path reads it: `None` (ask the host) for 126, the
/// shell's "cannot execute", which a local spawn reports as a failure to start.
fn usable(code: i32) -> bool {
    code != 126
}

fn parse(
    stdout: &[u8],
    stderr: &[u8],
    marker: &str,
    packages: &[&str],
    host: &str,
    (props, conf): (&str, &str),
) -> Option<Batch> {
    let mut cur = Cursor {
        secs: sections(stdout, marker)?,
        next: 0,
    };
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut batch = Batch::default();

    let deb = cur.expect("deb")?;
    let code = cur.rc()?;
    batch.packages = if code != 127 {
        usable(code).then(|| {
            Ok((
                Family::Deb,
                packages::parse_installed(Family::Deb, packages, &lossy(deb), ""),
            ))
        })
    } else {
        let rpm = cur.expect("rpm")?;
        let code = cur.rc()?;
        if code == 127 {
            Some(Err(Error::NoPackageManager {
                host: host.to_string(),
            }))
        } else {
            let locks = cur.expect("locks")?;
            cur.rc()?;
            usable(code).then(|| {
                Ok((
                    Family::Rpm,
                    packages::parse_installed(Family::Rpm, packages, &lossy(rpm), &lossy(locks)),
                ))
            })
        }
    };

    match cur.peek()? {
        "conf missing" => {
            cur.next += 1;
            batch.keystore = Some(StoreFiles {
                files: keystore::store_files(|_| None),
                jks: None,
                crt: None,
            });
        }
        "conf other" => cur.next += 1,
        _ => {
            let stat = cur.expect("stat")?;
            cur.rc()?;
            let files = cur.expect("files")?;
            cur.rc()?;
            if let Some(stat) = Stat::parse(stat, conf) {
                let paths: Vec<String> = std::iter::once(props.to_string())
                    .chain(READ.iter().map(|n| format!("{conf}/{n}")))
                    .collect();
                let mut read = split_files(files, &paths, &stat).into_iter();
                batch.properties = read.next().flatten();
                let jks = read.next().flatten();
                let crt = read.next().flatten();
                batch.keystore = Some(StoreFiles {
                    files: keystore::store_files(|name| stat.mode(&format!("{conf}/{name}"))),
                    jks,
                    crt,
                });
            }
        }
    }

    batch.jars = match cur.peek()? {
        "lib other" => {
            cur.next += 1;
            None
        }
        _ => {
            let body = cur.expect("jars")?;
            let mut names: Vec<String> = body
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(lossy)
                .collect();
            // In the order a directory listing gives them, which decides the order within
            // each version.
            names.sort();
            Some(packages::group_jars(names.iter().map(String::as_str)))
        }
    };

    let java = cur.expect("java")?;
    let code = cur.rc()?;
    batch.java = match code {
        127 => Some(None),
        c if usable(c) => Some(packages::java_major_of(stderr, java)),
        _ => None,
    };

    cur.expect("end")?;
    (cur.next == cur.secs.len()).then_some(batch)
}

/// `stat -c '%s %f %n'` output: size, raw mode (hexadecimal) and path of each path that
/// exists, as `lstat` sees it.
struct Stat<'a>(BTreeMap<&'a str, (u64, u32)>);

impl<'a> Stat<'a> {
    /// `None` unless the directory's own line is there, so a `stat` that printed nothing (or
    /// something else) is not taken for "no files".
    fn parse(text: &'a [u8], conf: &str) -> Option<Stat<'a>> {
        let text = std::str::from_utf8(text).ok()?;
        let mut found = BTreeMap::new();
        for line in text.lines() {
            let (size, rest) = line.split_once(' ')?;
            let (mode, path) = rest.split_once(' ')?;
            found.insert(
                path,
                (size.parse().ok()?, u32::from_str_radix(mode, 16).ok()?),
            );
        }
        found.get(conf)?;
        Some(Stat(found))
    }

    /// Permission bits of `path`, when it exists.
    fn mode(&self, path: &str) -> Option<u32> {
        self.0.get(path).map(|(_, raw)| raw & 0o7777)
    }

    /// The size of `path` when it is a regular file (a symbolic link's size is its target's
    /// name, not the bytes `tail` prints).
    fn file_size(&self, path: &str) -> Option<usize> {
        self.0
            .get(path)
            .filter(|(_, raw)| raw & 0o170_000 == 0o100_000)
            .and_then(|(size, _)| usize::try_from(*size).ok())
    }
}

/// Cuts `tail -v -c +1 -- paths...` output into each file's bytes, by the sizes `stat` gave,
/// checking that each piece is preceded by its `==> path <==` line and that the stream ends
/// with the last one. A file that is not a regular file, or that changed size between `stat`
/// and `tail`, breaks the chain: it and the files after it are `None` (read them from the host).
fn split_files(mut out: &[u8], paths: &[String], stat: &Stat<'_>) -> Vec<Option<Vec<u8>>> {
    let mut result = vec![None; paths.len()];
    // The file just cut out, kept until what follows it (the next header, or the end) shows
    // the cut was right.
    let mut pending: Option<(usize, &[u8])> = None;
    for (i, path) in paths.iter().enumerate() {
        if !stat.0.contains_key(path.as_str()) {
            // Missing: tail printed nothing for it.
            continue;
        }
        let header = format!(
            "{}==> {path} <==\n",
            if pending.is_some() { "\n" } else { "" }
        );
        let Some(rest) = out.strip_prefix(header.as_bytes()) else {
            return result;
        };
        if let Some((j, bytes)) = pending.take() {
            result[j] = Some(bytes.to_vec());
        }
        let Some((bytes, rest)) = stat.file_size(path).and_then(|n| rest.split_at_checked(n))
        else {
            return result;
        };
        pending = Some((i, bytes));
        out = rest;
    }
    if let Some((j, bytes)) = pending
        && out.is_empty()
    {
        result[j] = Some(bytes.to_vec());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keep_contents_exactly() {
        let out = b"\nM a\nline\n\nM rc 0\n\nM b\nM x\nno newline at end\nM end\n";
        let s = sections(out, "M").unwrap();
        assert_eq!(
            s,
            [
                ("a", &b"line\n"[..]),
                ("rc 0", b""),
                ("b", b"M x\nno newline at end"),
                ("end", b""),
            ]
        );
        assert!(sections(b"noise\nM a\n", "M").is_none());
    }

    #[test]
    fn files_are_cut_by_size_and_checked_by_header() {
        let stat = Stat::parse(
            b"4096 41ed /a b\n3 81a4 /a b/p\n2 8180 /a b/j\n4 81a4 /a b/c\n",
            "/a b",
        )
        .unwrap();
        let paths = ["/a b/p", "/a b/j", "/a b/c"].map(String::from);
        let out = b"==> /a b/p <==\nx\ny\n==> /a b/j <==\n\0\n\n==> /a b/c <==\nlast";
        assert_eq!(
            split_files(out, &paths, &stat),
            [
                Some(b"x\ny".to_vec()),
                Some(b"\0\n".to_vec()),
                Some(b"last".to_vec())
            ]
        );
        assert_eq!(stat.mode("/a b/j"), Some(0o600));
        assert_eq!(stat.mode("/a b/q"), None);
        // A file that grew since stat: it and what follows are read from the host.
        let grown = b"==> /a b/p <==\nx\nyz\n==> /a b/j <==\n\0\n\n==> /a b/c <==\nlast";
        assert_eq!(split_files(grown, &paths, &stat), [None, None, None]);
        let longer = b"==> /a b/p <==\nx\ny\n==> /a b/j <==\n\0\n\n==> /a b/c <==\nlast!";
        assert_eq!(split_files(longer, &paths, &stat)[2], None);
        // Missing files are skipped; a symbolic link is read from the host.
        let stat = Stat::parse(b"1 41ed /a b\n3 81a4 /a b/p\n9 a1ff /a b/c\n", "/a b").unwrap();
        let out = b"==> /a b/p <==\nabc\n==> /a b/c <==\ntarget's bytes";
        assert_eq!(
            split_files(out, &paths, &stat),
            [Some(b"abc".to_vec()), None, None]
        );
    }

    #[test]
    fn stat_needs_the_directory_line() {
        assert!(Stat::parse(b"", "/a b").is_none());
        assert!(Stat::parse(b"3 81a4 /a b/p\n", "/a b").is_none());
        assert!(Stat::parse(b"stat: invalid option\n", "/a b").is_none());
    }

    #[test]
    fn markers_differ() {
        assert_ne!(marker(), marker());
    }
}
