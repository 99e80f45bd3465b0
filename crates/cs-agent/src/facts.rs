//! One host's agent facts, gathered in a few round trips.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cs_core::{Host, HostExt, Layout};
use serde::Serialize;

use crate::keystore::{self, KeystoreState, Opener};
use crate::packages::{self, Family, JarVersions, PackageState};
use crate::properties::{Duplicate, IDENTITY_KEYS, Properties, is_secret_key};
use crate::{Error, Result};

/// A KVM host to act on: how to reach it and where its files are.
#[derive(Debug, Clone)]
pub struct Node {
    /// The host.
    pub host: Arc<dyn Host>,
    /// Where CloudStack's files are on it.
    pub layout: Layout,
    /// The root for system paths the layout does not name (`/etc/pki/libvirt`, `/boot`):
    /// `/` on a real host, the host's directory in the lab.
    pub root: PathBuf,
    /// The host's cluster, for batching and per-cluster checks.
    pub cluster: Option<String>,
    /// The name, id or address CloudStack knows the host by (for [`cs_core::HostStatus`]).
    pub key: String,
}

impl Node {
    /// A host with the stock layout, keyed by its `Host::name`.
    pub fn new(host: Arc<dyn Host>) -> Node {
        let key = host.name().to_string();
        Node {
            host,
            layout: Layout::default(),
            root: PathBuf::from("/"),
            cluster: None,
            key,
        }
    }

    /// The same host with every path under `root` (a lab host, a non-standard install).
    #[must_use]
    pub fn rerooted(mut self, root: impl Into<PathBuf>) -> Node {
        let root = root.into();
        self.layout = Layout::default().rerooted(&root);
        self.root = root;
        self
    }

    /// Sets the cluster.
    #[must_use]
    pub fn in_cluster(mut self, cluster: impl Into<String>) -> Node {
        self.cluster = Some(cluster.into());
        self
    }

    /// Sets the name CloudStack knows the host by.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Node {
        self.key = key.into();
        self
    }

    /// A system path under [`Node::root`].
    pub fn path(&self, abs: &str) -> PathBuf {
        cs_core::reroot(&self.root, std::path::Path::new(abs))
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        self.host.name()
    }

    /// Reads and parses `agent.properties`.
    ///
    /// # Errors
    /// Host errors (a missing file included) and syntax errors.
    pub async fn properties(&self) -> Result<Properties> {
        let path = self.layout.agent_properties();
        let bytes = self
            .host
            .read(&path)
            .await
            .map_err(|e| Error::host(format!("read {}", path.display()), e))?;
        Properties::from_bytes(&bytes)
    }
}

/// What one host's agent looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentFacts {
    /// The host's name.
    pub host: String,
    /// The package-manager family.
    pub family: Family,
    /// `cloudstack-common` and `cloudstack-agent`.
    pub packages: Vec<PackageState>,
    /// The identity keys of `agent.properties` that are set; the passphrase shows as `***`.
    pub identity: BTreeMap<String, String>,
    /// Keys set more than once in `agent.properties`.
    pub duplicates: Vec<Duplicate>,
    /// The keystore.
    pub keystore: KeystoreState,
    /// The default `java`'s major version.
    pub java_major: Option<u32>,
    /// `cloud-*.jar` versions in the agent's lib directory.
    pub jars: JarVersions,
}

impl AgentFacts {
    /// The installed `cloudstack-agent` version string.
    pub fn agent_version(&self) -> Option<&str> {
        self.packages
            .iter()
            .find(|p| p.name == packages::AGENT_PACKAGE)
            .and_then(|p| p.installed.as_deref())
    }
}

/// Installed agent packages, detecting the family on the way (one round trip on dpkg hosts).
///
/// # Errors
/// [`Error::NoPackageManager`], host errors.
pub async fn agent_packages(host: &dyn Host) -> Result<(Family, Vec<PackageState>)> {
    for family in [Family::Deb, Family::Rpm] {
        match packages::installed(host, family, packages::AGENT_PACKAGES).await {
            Ok(p) => return Ok((family, p)),
            Err(Error::NoPackageManager { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::NoPackageManager {
        host: host.name().to_string(),
    })
}

/// Gathers a host's agent facts: packages, `agent.properties`, keystore (opened natively where
/// the format allows, see [`Opener::Native`]), Java, jars.
///
/// # Errors
/// Host errors, a missing or malformed `agent.properties`, no package manager.
pub async fn collect_facts(node: &Node) -> Result<AgentFacts> {
    let host = node.host.as_ref();
    let (pkgs, props, java, jars) = tokio::join!(
        agent_packages(host),
        node.properties(),
        packages::java_major(host),
        packages::jar_versions(host, &node.layout),
    );
    let (family, packages) = pkgs?;
    let props = props?;
    let passphrase = keystore::passphrase_of(&props);
    let keystore =
        keystore::inspect(host, &node.layout, passphrase.as_ref(), Opener::Native).await?;
    let identity = IDENTITY_KEYS
        .iter()
        .filter_map(|k| {
            props.get(k).map(|v| {
                let v = if is_secret_key(k) { "***" } else { v };
                ((*k).to_string(), v.to_string())
            })
        })
        .collect();
    Ok(AgentFacts {
        host: host.name().to_string(),
        family,
        packages,
        identity,
        duplicates: props.duplicates(),
        keystore,
        java_major: java?,
        jars: jars?,
    })
}

/// Whether the file at `path` exists on the node.
pub(crate) async fn exists(node: &Node, path: &std::path::Path) -> Result<bool> {
    node.host
        .exists(path)
        .await
        .map_err(|e| Error::host(format!("stat {}", path.display()), e))
}
