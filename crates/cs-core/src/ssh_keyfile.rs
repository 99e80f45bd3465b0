//! What a private key file is, read before handing it to libssh2, so that a key libssh2 cannot
//! load is reported as what it is.
//!
//! Measured with the bundled libssh2 (1.11, OpenSSL backend): OpenSSH-format ed25519, ECDSA and
//! RSA keys and PEM RSA keys protected by a passphrase (`ssh-keygen -N`, cipher `aes256-ctr`,
//! kdf `bcrypt`) all authenticate with the right passphrase. With a wrong or missing passphrase
//! libssh2 says "Unable to extract public key from private key: Unsupported private key
//! format", the message issue 21 reported, which names neither the passphrase nor the file.

use std::path::Path;

/// How a key file is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Protection {
    /// Not encrypted, or a format not recognised here (libssh2's own message stands).
    None,
    /// OpenSSH format (`openssh-key-v1`) encrypted with this cipher.
    OpenSsh { cipher: String },
    /// PEM encrypted (`Proc-Type: 4,ENCRYPTED` or PKCS#8 `ENCRYPTED PRIVATE KEY`).
    Pem,
}

/// Reads the key file's header (not its secret part).
pub(crate) fn protection(path: &Path) -> Protection {
    match std::fs::read_to_string(path) {
        Ok(text) => protection_of(&text),
        Err(_) => Protection::None,
    }
}

pub(crate) fn protection_of(text: &str) -> Protection {
    const OPENSSH: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.lines().any(|l| l.trim() == "Proc-Type: 4,ENCRYPTED")
    {
        return Protection::Pem;
    }
    let Some(start) = text.find(OPENSSH) else {
        return Protection::None;
    };
    let body: String = text[start + OPENSSH.len()..]
        .lines()
        .take_while(|l| !l.starts_with("-----END"))
        .flat_map(|l| l.trim().chars())
        .collect();
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body) else {
        return Protection::None;
    };
    // PROTOCOL.key in OpenSSH: "openssh-key-v1\0", then string ciphername, string kdfname, …
    let Some(rest) = bytes.strip_prefix(b"openssh-key-v1\0") else {
        return Protection::None;
    };
    let Some(len) = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Protection::None;
    };
    let Some(cipher) = rest
        .get(4..4 + len as usize)
        .and_then(|c| std::str::from_utf8(c).ok())
    else {
        return Protection::None;
    };
    if cipher == "none" {
        Protection::None
    } else {
        Protection::OpenSsh {
            cipher: cipher.to_string(),
        }
    }
}

/// Why libssh2 could not load a protected key: what [`crate::HostError::Key`] says.
/// `ciphers` are the ones libssh2 decrypts (its crypt methods).
pub(crate) fn problem(prot: &Protection, passphrase_given: bool, ciphers: &[&str]) -> String {
    match prot {
        Protection::OpenSsh { cipher } if !ciphers.contains(&cipher.as_str()) => format!(
            "the key is encrypted with {cipher}, which libssh2 cannot decrypt (re-encrypt it \
             with `ssh-keygen -p -Z aes256-ctr -f FILE`, or load it into ssh-agent)"
        ),
        _ if passphrase_given => "wrong passphrase".to_string(),
        _ => "the key is passphrase-protected and no passphrase was given".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of an `ssh-keygen -N` key: magic, cipher `aes256-ctr`, kdf `bcrypt`, options.
    const ENCRYPTED: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAACHh4eHh4eHh4
-----END OPENSSH PRIVATE KEY-----
";
    /// Same header with cipher `none`.
    const PLAIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB
-----END OPENSSH PRIVATE KEY-----
";

    #[test]
    fn openssh_headers_tell_the_cipher() {
        assert_eq!(
            protection_of(ENCRYPTED),
            Protection::OpenSsh {
                cipher: "aes256-ctr".into()
            }
        );
        assert_eq!(protection_of(PLAIN), Protection::None);
        assert_eq!(protection_of("garbage"), Protection::None);
    }

    #[test]
    fn pem_encryption_is_recognised() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(protection_of(pem), Protection::Pem);
        assert_eq!(
            protection_of("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n"),
            Protection::Pem
        );
    }

    #[test]
    fn problems_name_the_cause() {
        let aes = Protection::OpenSsh {
            cipher: "aes256-ctr".into(),
        };
        assert_eq!(problem(&aes, true, &["aes256-ctr"]), "wrong passphrase");
        assert!(problem(&aes, false, &["aes256-ctr"]).contains("no passphrase"));
        let chacha = Protection::OpenSsh {
            cipher: "chacha20-poly1305@openssh.com".into(),
        };
        assert!(problem(&chacha, true, &["aes256-ctr"]).contains("cannot decrypt"));
        assert_eq!(problem(&Protection::Pem, true, &[]), "wrong passphrase");
    }
}
