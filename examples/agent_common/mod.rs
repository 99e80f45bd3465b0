//! Shared by the agent examples: hosts files, SSH connections, progress bars.
#![allow(dead_code)] // Shared by several examples; each uses a part.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cs_agent::Node;
use cs_agent::fleet::Target;
use cs_core::{Host, Progress, ProgressUpdate, SshHost};

/// How to reach the hosts of a hosts file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ssh {
    /// Private key (else the SSH agent).
    pub(crate) identity: Option<PathBuf>,
    /// known_hosts file (else `~/.ssh/known_hosts`).
    pub(crate) known_hosts: Option<PathBuf>,
}

impl Ssh {
    /// Connects to a target and describes it as a node (re-rooted with `root=DIR`).
    pub(crate) async fn node(&self, t: &Target) -> Result<Node, String> {
        let mut b = SshHost::builder(t.addr())
            .user(t.user.clone())
            .name(t.label())
            .connect_timeout(Duration::from_secs(10));
        b = match &self.identity {
            Some(k) => b.key_file(k),
            None => b.agent(),
        };
        let kh = self.known_hosts.clone().or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
        });
        if let Some(kh) = kh {
            b = b.known_hosts(kh);
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

/// A progress bar on stderr.
#[derive(Debug)]
pub(crate) struct Bar(pub(crate) indicatif::ProgressBar);

impl Bar {
    /// A bar for `total` hosts.
    pub(crate) fn hosts(total: u64) -> Bar {
        let pb = indicatif::ProgressBar::new(total);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} hosts {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar(pb)
    }
}

impl Progress for Bar {
    fn update(&self, u: ProgressUpdate) {
        if u.task != "hosts" && u.task != "fleet" {
            return;
        }
        self.0.set_position(u.done);
        if let Some(m) = u.message {
            self.0.set_message(m);
        }
        if u.finished {
            self.0.finish_and_clear();
        }
    }
}
