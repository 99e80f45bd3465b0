//! A lab reached as operators reach their nodes: through a bastion that only forwards, with a
//! passphrase-protected key whose passphrase is in a file of its own.

use std::path::{Path, PathBuf};

use crate::{Lab, LabError, Result, SshServer};

/// What [`Lab::bastion_access`] set up; the bastion stops when this is dropped.
#[derive(Debug)]
pub struct BastionAccess {
    /// The bastion (forwards only; see [`crate::SshServerBuilder::bastion`]).
    pub bastion: SshServer,
    /// The passphrase-protected client key, authorized on the bastion and every node.
    pub key: PathBuf,
    /// The file holding its passphrase (mode 0600).
    pub passphrase_file: PathBuf,
}

impl Lab {
    /// Starts a bastion for this lab, authorizes a new passphrase-protected key on it and on
    /// every node, records the bastion's host key in the lab's known_hosts file, and rewrites
    /// the `[ssh]` section of `config` (a file [`Lab::write_config`] wrote) to use the key,
    /// its passphrase file (`identity_passphrase = { file = … }`) and the bastion
    /// (`proxy_jump = "root@127.0.0.1:PORT"`). The nodes still listen on 127.0.0.1: the
    /// bastion's log (`target 127.0.0.1 port N`) shows which connections went through it.
    ///
    /// # Errors
    /// [`LabError::Start`] when the bastion does not start, [`LabError::Io`] for files.
    pub fn bastion_access(&self, config: &Path) -> Result<BastionAccess> {
        let bastion = SshServer::builder().bastion().locked_key().start()?;
        let (Some(key), Some(passphrase_file)) =
            (bastion.locked_key(), bastion.locked_key_passphrase_file())
        else {
            return Err(LabError::Start {
                what: "lab bastion".into(),
                detail: "no passphrase-protected key was made".into(),
            });
        };
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| LabError::io(format!("read {}", key.display()), e))?;
        for m in self.management_servers() {
            m.ssh().authorize_key(&public)?;
        }
        for s in self.kvm_hosts().iter().filter_map(|h| h.ssh()) {
            s.authorize_key(&public)?;
        }
        let known = self.dir().join("known_hosts");
        let entry = std::fs::read_to_string(bastion.known_hosts())
            .map_err(|e| LabError::io("read the bastion's known_hosts", e))?;
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&known)
                .map_err(|e| LabError::io(format!("open {}", known.display()), e))?;
            f.write_all(entry.as_bytes())
                .map_err(|e| LabError::io(format!("write {}", known.display()), e))?;
        }
        let text = std::fs::read_to_string(config)
            .map_err(|e| LabError::io(format!("read {}", config.display()), e))?;
        let text = rewrite_ssh(
            &text,
            &key,
            &passphrase_file,
            &format!("root@127.0.0.1:{}", bastion.port()),
        );
        std::fs::write(config, text)
            .map_err(|e| LabError::io(format!("write {}", config.display()), e))?;
        Ok(BastionAccess {
            bastion,
            key,
            passphrase_file,
        })
    }
}

/// The `[ssh]` section with `identity` replaced and the passphrase and bastion added.
fn rewrite_ssh(text: &str, key: &Path, passphrase_file: &Path, jump: &str) -> String {
    let quote = |p: &Path| format!("{:?}", p.to_string_lossy());
    let mut out = String::with_capacity(text.len() + 200);
    let mut in_ssh = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_ssh = t == "[ssh]";
            out.push_str(line);
            out.push('\n');
            if in_ssh {
                out.push_str(&format!(
                    "identity_passphrase = {{ file = {} }}\nproxy_jump = {jump:?}\n",
                    quote(passphrase_file)
                ));
            }
            continue;
        }
        if in_ssh && (t.starts_with("identity ") || t.starts_with("identity=")) {
            out.push_str(&format!("identity = {}\n", quote(key)));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ssh_section_changes() {
        let text = "[api]\nidentity = \"x\"\n[ssh]\nuser = \"root\"\nidentity = \"/old\"\n\n[[hosts]]\nname = \"h\"\n";
        let out = rewrite_ssh(
            text,
            Path::new("/k/locked"),
            Path::new("/k/pass"),
            "root@127.0.0.1:2200",
        );
        assert_eq!(
            out,
            "[api]\nidentity = \"x\"\n[ssh]\nidentity_passphrase = { file = \"/k/pass\" }\n\
             proxy_jump = \"root@127.0.0.1:2200\"\nuser = \"root\"\nidentity = \"/k/locked\"\n\n\
             [[hosts]]\nname = \"h\"\n"
        );
    }
}
