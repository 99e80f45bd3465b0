//! One host's agent facts, gathered in one round trip where the host allows it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cs_core::{Host, HostExt, Layout};
use serde::Serialize;

use crate::batch::{self, Batch};
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
/// One script over one command gathers them where the host has a POSIX `sh` (one round trip
/// instead of a dozen over SSH); whatever it cannot answer is asked for piece by piece, so the
/// facts and errors are the same either way.
///
/// # Errors
/// Host errors, a missing or malformed `agent.properties`, no package manager.
pub async fn collect_facts(node: &Node) -> Result<AgentFacts> {
    match batch::gather(node, packages::AGENT_PACKAGES).await {
        Some(b) => from_batch(node, b).await,
        None => collect_piecewise(node).await,
    }
}

/// [`collect_facts`] from what the batch found, asking the host for the rest. Errors come in
/// the order [`collect_piecewise`] reports them.
async fn from_batch(node: &Node, b: Batch) -> Result<AgentFacts> {
    let host = node.host.as_ref();
    let (family, packages) = match b.packages {
        Some(p) => p?,
        None => agent_packages(host).await?,
    };
    let props = match b.properties {
        Some(bytes) => Properties::from_bytes(&bytes)?,
        None => node.properties().await?,
    };
    let passphrase = keystore::passphrase_of(&props);
    let keystore = match b.keystore {
        Some(found) => {
            let dir = &node.layout.agent_conf_dir;
            let jks = match (found.files[0].is_present(), found.jks) {
                (true, Some(bytes)) => Some(bytes),
                (true, None) => Some(keystore::read_file(host, &dir.join("cloud.jks")).await?),
                (false, _) => None,
            };
            let (format, opens) = keystore::open_store(
                host,
                dir,
                jks.as_deref(),
                passphrase.as_ref(),
                Opener::Native,
            )
            .await?;
            let crt = match (found.files[1].is_present(), found.crt) {
                (true, Some(bytes)) => Some(bytes),
                (true, None) => Some(keystore::read_file(host, &dir.join("cloud.crt")).await?),
                (false, _) => None,
            };
            keystore::state(
                dir.clone(),
                found.files,
                passphrase.as_ref(),
                format,
                opens,
                crt.as_deref(),
            )
        }
        None => keystore::inspect(host, &node.layout, passphrase.as_ref(), Opener::Native).await?,
    };
    let java = match b.java {
        Some(j) => j,
        None => packages::java_major(host).await?,
    };
    let jars = match b.jars {
        Some(j) => j,
        None => packages::jar_versions(host, &node.layout).await?,
    };
    Ok(facts(host, family, packages, &props, keystore, java, jars))
}

/// [`collect_facts`] one command and one file at a time.
pub(crate) async fn collect_piecewise(node: &Node) -> Result<AgentFacts> {
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
    Ok(facts(
        host, family, packages, &props, keystore, java?, jars?,
    ))
}

fn facts(
    host: &dyn Host,
    family: Family,
    packages: Vec<PackageState>,
    props: &Properties,
    keystore: KeystoreState,
    java_major: Option<u32>,
    jars: JarVersions,
) -> AgentFacts {
    let identity = IDENTITY_KEYS
        .iter()
        .filter_map(|k| {
            props.get(k).map(|v| {
                let v = if is_secret_key(k) { "***" } else { v };
                ((*k).to_string(), v.to_string())
            })
        })
        .collect();
    AgentFacts {
        host: host.name().to_string(),
        family,
        packages,
        identity,
        duplicates: props.duplicates(),
        keystore,
        java_major,
        jars,
    }
}

/// Whether the file at `path` exists on the node.
pub(crate) async fn exists(node: &Node, path: &std::path::Path) -> Result<bool> {
    node.host
        .exists(path)
        .await
        .map_err(|e| Error::host(format!("stat {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cs_core::fake::{self, FakeHost};
    use cs_lab::{KvmHost, KvmHostOptions, LabFamily, StoreKind};

    use super::*;

    fn lab_host(family: LabFamily, store: StoreKind) -> KvmHost {
        let mut o = KvmHostOptions::new("kvm1", "c1");
        o.family = family;
        o.store = store;
        KvmHost::start(&o).expect("lab host (openssh-server, default-jre-headless, openssl)")
    }

    /// The host over SSH and as this machine, both seeing `root` as the node's root.
    async fn nodes(lab: &KvmHost, root: &Path) -> [Node; 2] {
        let ssh = lab.connect().await.expect("connect to the lab host");
        [
            Node::new(Arc::new(ssh)).rerooted(root),
            Node::new(lab.local_host()).rerooted(root),
        ]
    }

    fn shown(r: &Result<AgentFacts>) -> String {
        match r {
            Ok(f) => format!("{f:?}"),
            Err(e) => format!("error: {}", cs_core::error_chain(e)),
        }
    }

    /// Both ways give the same facts (or the same error) on `node`.
    #[track_caller]
    fn same(batched: &Result<AgentFacts>, piecewise: &Result<AgentFacts>, node: &Node) {
        assert_eq!(shown(batched), shown(piecewise), "{}", node.name());
    }

    async fn both(node: &Node) -> (Result<AgentFacts>, Result<AgentFacts>) {
        (collect_facts(node).await, collect_piecewise(node).await)
    }

    /// Copies a lab host's files (regular files and directories, modes kept).
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_batch_answers_everything_and_equals_the_piecewise_collection() {
        for (family, store) in [
            (LabFamily::Deb, StoreKind::Pkcs12),
            (LabFamily::Rpm, StoreKind::Jks),
        ] {
            let lab = lab_host(family, store);
            let fam = match family {
                LabFamily::Rpm => Family::Rpm,
                _ => Family::Deb,
            };
            packages::hold(lab.local_host().as_ref(), fam, &[packages::AGENT_PACKAGE])
                .await
                .unwrap();
            for node in nodes(&lab, &lab.root()).await {
                let b = batch::gather(&node, packages::AGENT_PACKAGES)
                    .await
                    .expect("the script runs");
                assert!(
                    b.packages.is_some()
                        && b.properties.is_some()
                        && b.keystore
                            .as_ref()
                            .is_some_and(|k| k.jks.is_some() && k.crt.is_some())
                        && b.java.is_some()
                        && b.jars.is_some(),
                    "{family:?} {}: {b:?}",
                    node.name()
                );
                let (batched, piecewise) = both(&node).await;
                same(&batched, &piecewise, &node);
                let f = batched.unwrap();
                assert_eq!(
                    f.agent_version().map(|v| v.starts_with("4.18.0.0")),
                    Some(true)
                );
                assert!(f.packages.iter().any(|p| p.held), "{:?}", f.packages);
                assert_eq!(f.keystore.opens, Some(true));
                assert!(f.keystore.cert.is_some());
                assert_eq!(f.java_major, Some(17));
                assert_eq!(f.jars.versions(), ["4.18.0.0"]);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paths_with_spaces_and_quotes_are_read_where_they_are() {
        let lab = lab_host(LabFamily::Deb, StoreKind::Pkcs12);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("it's a \"root\" $HOME `x`");
        copy_tree(&lab.root(), &root);
        // Tell the copy from the original: one jar more.
        std::fs::write(
            root.join("usr/share/cloudstack-agent/lib/cloud-extra-4.19.0.0.jar"),
            "",
        )
        .unwrap();
        for node in nodes(&lab, &root).await {
            let (batched, piecewise) = both(&node).await;
            same(&batched, &piecewise, &node);
            let f = batched.unwrap();
            assert_eq!(f.jars.versions(), ["4.18.0.0", "4.19.0.0"]);
            assert_eq!(f.keystore.dir, root.join("etc/cloudstack/agent"));
        }
    }

    /// Both ways agree on the lab host, over SSH and locally.
    async fn agree(lab: &KvmHost, what: &str) {
        for node in nodes(lab, &lab.root()).await {
            let (batched, piecewise) = both(&node).await;
            assert_eq!(
                shown(&batched),
                shown(&piecewise),
                "{what}: {}",
                node.name()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_and_odd_files_give_the_piecewise_answer() {
        let lab = lab_host(LabFamily::Deb, StoreKind::Pkcs12);
        let conf = lab.root().join("etc/cloudstack/agent");
        let absent = |tool: &str| {
            let link = lab.bin_dir().join(tool);
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(".absent", link).unwrap();
        };

        std::fs::remove_file(conf.join("cloud.jks")).unwrap();
        std::fs::remove_file(conf.join("cloud.key")).unwrap();
        std::os::unix::fs::symlink("nowhere", conf.join("cloud.key")).unwrap();
        agree(&lab, "no cloud.jks, a dangling cloud.key").await;
        std::fs::remove_dir_all(lab.root().join("usr/share/cloudstack-agent/lib")).unwrap();
        agree(&lab, "no jar directory").await;
        absent("java");
        agree(&lab, "no java").await;

        // From here on, errors.
        std::fs::remove_file(conf.join("cloud.crt")).unwrap();
        std::fs::create_dir(conf.join("cloud.crt")).unwrap();
        agree(&lab, "cloud.crt is a directory").await;
        absent("dpkg-query");
        agree(&lab, "no package manager").await;
        let [ssh, _] = nodes(&lab, &lab.root()).await;
        assert!(matches!(
            collect_facts(&ssh).await,
            Err(Error::NoPackageManager { .. })
        ));

        std::fs::remove_file(lab.bin_dir().join("dpkg-query")).unwrap();
        std::os::unix::fs::symlink(".standin", lab.bin_dir().join("dpkg-query")).unwrap();
        // Without the configuration directory, agent.properties is missing too.
        std::fs::remove_dir_all(&conf).unwrap();
        agree(&lab, "no configuration directory").await;
        let props = conf.join("agent.properties");
        for node in nodes(&lab, &lab.root()).await {
            let err = collect_facts(&node).await.unwrap_err();
            assert!(
                matches!(&err, Error::Host { source, .. } if source.is_not_found()),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&props.display().to_string()),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn a_host_without_sh_is_asked_piece_by_piece() {
        let conf = "/etc/cloudstack/agent";
        let host = FakeHost::new("kvm1")
            .with_file_mode(
                format!("{conf}/agent.properties"),
                "guid=abc\nkeystore.passphrase=pw\n",
                0o600,
            )
            .with_file_mode(format!("{conf}/cloud.key"), "k", 0o644)
            .with_file(
                "/usr/share/cloudstack-agent/lib/cloud-agent-4.19.1.0.jar",
                "",
            )
            .on("dpkg-query", |_, _| {
                fake::ok("cloudstack-agent\t4.19.1.0\tii \tinstall ok installed\n")
            })
            .on("java", |_, _| fake::exit(0, "openjdk version \"11.0.2\"\n"));
        let node = Node::new(Arc::new(host));
        let (batched, piecewise) = both(&node).await;
        same(&batched, &piecewise, &node);
        let f = batched.unwrap();
        assert_eq!(f.agent_version(), Some("4.19.1.0"));
        assert_eq!(f.java_major, Some(11));
        assert_eq!(
            f.keystore.file("cloud.key").and_then(|k| k.mode),
            Some(0o644)
        );
        assert!(f.keystore.passphrase_present);
    }
}
