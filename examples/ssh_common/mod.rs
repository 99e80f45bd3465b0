//! SSH options the node-facing examples share: a key's passphrase from a file, bastions
//! (ProxyJump) and an OpenSSH client config.
#![allow(dead_code)] // Shared by several examples; each uses a part.

use std::path::{Path, PathBuf};

use cs_core::{JumpSpec, Secret, SshHostBuilder};

/// `--key-passphrase-file`, `--jump`, `--ssh-config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct SshOptions {
    /// File holding the passphrase of the private key (mode 0600, owned by you or root). A key
    /// held by ssh-agent needs none.
    #[arg(long, value_name = "FILE")]
    pub(crate) key_passphrase_file: Option<PathBuf>,
    /// Reach the nodes through a bastion: `[user@]host[:port]`, comma-separated for a chain,
    /// first hop first (as `ssh -J`). The bastion uses the same key and known_hosts.
    #[arg(long, value_name = "HOPS")]
    pub(crate) jump: Option<String>,
    /// Honour the Host/HostName/User/Port/IdentityFile/ProxyJump entries of an OpenSSH client
    /// config (for example ~/.ssh/config) for the node names; options given here win.
    #[arg(long, value_name = "FILE")]
    pub(crate) ssh_config: Option<PathBuf>,
}

impl SshOptions {
    /// Adds the key (`None`: the ssh config's identity files, else the agent), its passphrase,
    /// the bastions and the ssh config to `b`.
    pub(crate) fn apply(
        &self,
        mut b: SshHostBuilder,
        key: Option<&Path>,
    ) -> Result<SshHostBuilder, String> {
        let passphrase = match &self.key_passphrase_file {
            Some(f) => {
                Some(Secret::from_file(f).map_err(|e| format!("--key-passphrase-file: {e}"))?)
            }
            None => None,
        };
        b = match (key, &passphrase) {
            (Some(k), Some(p)) => b.key_file_with_passphrase(k, p.clone()),
            (Some(k), None) => b.key_file(k),
            (None, _) if self.ssh_config.is_some() => b,
            (None, _) => b.agent(),
        };
        if let Some(p) = passphrase {
            b = b.identity_passphrase(p);
        }
        if let Some(hops) = &self.jump {
            for hop in JumpSpec::parse_list(hops).map_err(|e| format!("--jump {e}"))? {
                b = b.proxy_jump_via(hop);
            }
        }
        if let Some(c) = &self.ssh_config {
            b = b.ssh_config(c);
        }
        Ok(b)
    }
}
