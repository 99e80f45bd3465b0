//! Shared by the agent examples: hosts files and SSH connections (progress is `common::Bars`).
#![allow(dead_code)] // Shared by several examples; each uses a part.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cs_agent::Node;
use cs_agent::fleet::Target;
use cs_core::{Host, SshHost};

/// How to reach the hosts of a hosts file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ssh {
    /// Private key (else the SSH agent).
    pub(crate) identity: Option<PathBuf>,
    /// known_hosts file (else `~/.ssh/known_hosts`).
    pub(crate) known_hosts: Option<PathBuf>,
    /// Root through sudo, for a login user that is not root.
    pub(crate) sudo: Option<cs_core::Sudo>,
    /// Passphrase, bastions, ssh config.
    pub(crate) options: super::ssh_common::SshOptions,
}

impl Ssh {
    /// Connects to a target and describes it as a node (re-rooted with `root=DIR`).
    pub(crate) async fn node(&self, t: &Target) -> Result<Node, String> {
        let mut b = SshHost::builder(t.addr())
            .user(t.user.clone())
            .name(t.label())
            .connect_timeout(Duration::from_secs(10));
        b = self.options.apply(b, self.identity.as_deref())?;
        let kh = self.known_hosts.clone().or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
        });
        if let Some(kh) = kh {
            b = b.known_hosts(kh);
        }
        if let Some(sudo) = &self.sudo {
            b = b.sudo(sudo.clone());
        }
        let host: Arc<dyn Host> =
            Arc::new(b.connect().await.map_err(|e| cs_core::error_chain(&e))?);
        let mut node = Node::new(host).with_key(t.host.clone());
        if let Some(r) = &t.root {
            node = node.rerooted(r);
        }
        if let Some(c) = &t.cluster {
            node = node.in_cluster(c.clone());
        }
        Ok(node)
    }
}

/// Reads and parses a hosts file.
pub(crate) fn read_hosts(path: &std::path::Path) -> Result<Vec<Target>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    cs_agent::fleet::parse_hosts(&text).map_err(|e| e.to_string())
}
