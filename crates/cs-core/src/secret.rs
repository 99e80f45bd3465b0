//! Secrets that never print.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// A secret value: an API secret key, a database password, a keystore passphrase.
///
/// `Debug` and `Display` print `***`; the value is only reachable through [`Secret::expose`],
/// so it cannot reach a log line or an error message by accident. It is not `Serialize`.
///
/// ```
/// let s = cs_core::Secret::new("hunter2");
/// assert_eq!(format!("{s} {s:?}"), "*** ***");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Call it only where the value is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from a file of its own, without its trailing line break. The file must
    /// be a regular file (a FIFO or a device is refused at once, never waited on), owned by the
    /// running user or root, readable by nobody else (no group or other bits), and at most
    /// [`Secret::MAX_FILE_LEN`] bytes.
    ///
    /// # Errors
    /// [`SecretFileError`] naming the file and what is wrong (never its contents).
    pub fn from_file(path: &Path) -> Result<Secret, SecretFileError> {
        let err = |reason: String| SecretFileError {
            path: path.to_path_buf(),
            reason,
        };
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| err(format!("cannot open it: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot read its metadata: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(err("not a regular file".into()));
        }
        let me = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        if meta.uid() != me && meta.uid() != 0 {
            return Err(err(format!(
                "owned by uid {}, neither the running user (uid {me}) nor root",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:04o}; secret files must not be readable by others (chmod 600 {})",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        file.take(Secret::MAX_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(format!("cannot read it: {e}")))?;
        if bytes.len() as u64 > Secret::MAX_FILE_LEN {
            return Err(err(format!(
                "longer than {} bytes; not a secret file",
                Secret::MAX_FILE_LEN
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))?;
        Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
    }

    /// The longest secret file [`Secret::from_file`] reads.
    pub const MAX_FILE_LEN: u64 = 64 * 1024;
}

/// A secret file that cannot be used: what is wrong with it, never what it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret file {}: {reason}", path.display())]
pub struct SecretFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_in_containers() {
        let v = vec![Some(Secret::new("pw"))];
        assert_eq!(format!("{v:?}"), "[Some(***)]");
    }

    #[test]
    fn secret_files_are_private_regular_files_of_ours() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::from_file(&file).unwrap().expose(), "s3cret");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Secret::from_file(&file).unwrap_err();
        assert!(err.reason.contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; Secret::MAX_FILE_LEN as usize + 1]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            Secret::from_file(&big)
                .unwrap_err()
                .reason
                .contains("longer")
        );

        let missing = Secret::from_file(&dir.path().join("none")).unwrap_err();
        assert!(missing.reason.contains("cannot open"), "{missing}");

        // Someone else's file. The suite runs as root (it starts MariaDB and sshd), which may
        // give a file away.
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(
            me, 0,
            "this test gives a file to another user, which needs root"
        );
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let err = Secret::from_file(&file).unwrap_err();
        assert!(err.reason.contains("owned by uid 65534"), "{err}");
    }
}
