//! Simulated KVM hosts: each a lab node (its own directory with a re-rooted filesystem holding
//! `agent.properties`, a real keystore and the agent's jars; stand-ins for `systemctl`,
//! `apt-get`/`dnf`, `dpkg-query`/`rpm`, `java`, `ss`, `ip` and `virsh` whose state lives in that
//! directory; its own sshd). The node core every node shares (`data/node/core.sh`, `node.rs`)
//! answers for packages and units; the KVM role (`data/kvm/standin.sh`) runs the agent and
//! libvirt's guests. Faults ([`KvmFault`]) change what installing the agent and starting it do.
//!
//! What a host keeps besides every node's state (packages, units, faults, …):
//!
//! ```text
//! state/     agent.status ("Up 4.19.1.0"), domains/<instance name> (a running guest, its
//!            libvirt id inside), domain-seq, maintenance, addresses, mtu/<dev>, libvirt-tls
//! packaged/  the agent.properties the package ships (for KvmFault::OverwriteIdentity)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use cs_core::{
    BoxError, CsVersion, Host, HostError, HostMaintenance, HostStatus, HypervisorState, RepoSwitch,
    RepoSwitchReport, Secret, SshHost,
};

use crate::node::{LabFamily, NodeDir};
use crate::sshd::SshServer;
use crate::util::{command, find_binary, io, token, write};
use crate::{LabError, Result};

const STANDIN: &str = include_str!("../data/kvm/standin.sh");
/// The programs only a KVM host's stand-in answers.
const KVM_TOOLS: &[&str] = &["ip", "virsh"];

/// The keystore format a lab host's `cloud.jks` is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreKind {
    /// PKCS#12, what `keytool -genkey` writes from Java 9 on (and so what CloudStack's
    /// `keystore-setup` leaves on current hosts).
    #[default]
    Pkcs12,
    /// The old Sun JKS format.
    Jks,
}

/// Something going wrong on a lab host, on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvmFault {
    /// Installing the package replaces `agent.properties` with the packaged one (identity keys
    /// reset, passphrase gone).
    OverwriteIdentity,
    /// Installing the package drops `keystore.passphrase` from `agent.properties`.
    DropPassphrase,
    /// Installing the package leaves the old `cloud-*.jar` beside the new ones.
    MixedJars,
    /// The package install fails (`dpkg returned an error code (1)`).
    InstallFails,
    /// The agent never comes back Up after a restart.
    NeverUp,
    /// Installing or upgrading the agent package destroys every guest libvirt runs on the host
    /// (as an upgrade that takes the guests down would): [`KvmHost::domains`] is empty after it.
    /// Noticing that the guests are gone is the management server's business.
    StopsVms,
}

impl KvmFault {
    fn file(self) -> &'static str {
        match self {
            KvmFault::OverwriteIdentity => "overwrite-identity",
            KvmFault::DropPassphrase => "drop-passphrase",
            KvmFault::MixedJars => "mixed-jars",
            KvmFault::InstallFails => "install-fails",
            KvmFault::NeverUp => "never-up",
            KvmFault::StopsVms => "stops-vms",
        }
    }
}

/// The libvirt services a KVM host runs besides the agent.
const LIBVIRT_UNIT: &str = "libvirtd";
/// The agent's unit and package.
const AGENT: &str = "cloudstack-agent";

/// Scheme and host of the official CloudStack repository, the lab nodes' default.
pub(crate) const OFFICIAL_REPO: &str = "https://download.cloudstack.org";

/// How a lab KVM host starts.
#[derive(Debug, Clone)]
pub struct KvmHostOptions {
    /// Its name (`kvm1`): the key the lab's [`HostStatus`] answers to.
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// dpkg or rpm.
    pub family: LabFamily,
    /// The installed agent version.
    pub installed: String,
    /// Versions the repository offers, per release line.
    pub repo: BTreeMap<String, Vec<String>>,
    /// The keystore's format.
    pub store: StoreKind,
    /// MTU of `cloudbr0` and `cloudbr1`.
    pub mtu: u32,
    /// The management server address written to `host=` in `agent.properties`.
    pub management_server: String,
    /// The management server's agent port, written to `port=` (default 8250).
    pub agent_port: u16,
    /// Start an sshd for the host (off: reach it with [`KvmHost::local_host`] only).
    pub ssh: bool,
    /// Scheme and host of the repository in `cloudstack.list` / `cloudstack.repo` (default
    /// `https://download.cloudstack.org`; a lab [`crate::RepoServer`]'s URL serves the same
    /// trees).
    pub repo_base: String,
}

impl KvmHostOptions {
    /// A host `name` in `cluster` at 4.18.0.0, offered 4.18.0.0 and 4.19.0.0 / 4.19.1.0.
    pub fn new(name: impl Into<String>, cluster: impl Into<String>) -> Self {
        let mut repo = BTreeMap::new();
        repo.insert("4.18".to_string(), vec!["4.18.0.0".to_string()]);
        repo.insert(
            "4.19".to_string(),
            vec!["4.19.0.0".to_string(), "4.19.1.0".to_string()],
        );
        KvmHostOptions {
            name: name.into(),
            cluster: cluster.into(),
            family: LabFamily::Deb,
            installed: "4.18.0.0".into(),
            repo,
            store: StoreKind::Pkcs12,
            mtu: 1500,
            management_server: "127.0.0.1".into(),
            agent_port: 8250,
            ssh: true,
            repo_base: OFFICIAL_REPO.into(),
        }
    }
}

/// A simulated KVM host (see the module docs). Its sshd stops and its directory goes when it
/// is dropped.
pub struct KvmHost {
    // Field order: the server stops before the directory is removed.
    server: Option<SshServer>,
    name: String,
    cluster: String,
    passphrase: Secret,
    node: NodeDir,
}

impl fmt::Debug for KvmHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvmHost")
            .field("name", &self.name)
            .field("dir", &self.node.path())
            .field("port", &self.server.as_ref().map(SshServer::port))
            .finish_non_exhaustive()
    }
}

struct StoreTemplate {
    jks: Vec<u8>,
    crt: Vec<u8>,
    key: Vec<u8>,
    passphrase: Secret,
}

fn run_tool(program: &Path, args: &[&str], what: &str) -> Result<Vec<u8>> {
    let out = io(
        format!("run {what}"),
        command(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )?;
    if !out.status.success() {
        return Err(LabError::Start {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Makes a keystore with the real `keytool` once per process and format; every lab host gets
/// a copy (a JVM start per host would dominate a 100-host lab's start-up).
fn template(kind: StoreKind) -> Result<&'static StoreTemplate> {
    static P12: OnceLock<std::result::Result<StoreTemplate, String>> = OnceLock::new();
    static JKS: OnceLock<std::result::Result<StoreTemplate, String>> = OnceLock::new();
    let cell = match kind {
        StoreKind::Pkcs12 => &P12,
        StoreKind::Jks => &JKS,
    };
    cell.get_or_init(|| make_template(kind).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LabError::Start {
            what: "lab keystore".into(),
            detail: e.clone(),
        })
}

fn make_template(kind: StoreKind) -> Result<StoreTemplate> {
    let keytool = find_binary("keytool", "default-jre-headless")?;
    let openssl = find_binary("openssl", "openssl")?;
    let dir = io("create keystore dir", tempfile::tempdir())?;
    let pass = token(24);
    let p12 = dir.path().join("cloud.p12");
    let p12s = p12.to_string_lossy().into_owned();
    run_tool(
        &keytool,
        &[
            "-genkeypair",
            "-storetype",
            "PKCS12",
            "-alias",
            "cloud",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-validity",
            "3650",
            "-dname",
            "cn=kvm.lab,ou=cloudstack,o=cloudstack,c=cloudstack",
            "-ext",
            "san=ip:10.0.0.1",
            "-keystore",
            &p12s,
            "-storepass",
            &pass,
            "-keypass",
            &pass,
        ],
        "keytool -genkeypair",
    )?;
    let crt = run_tool(
        &keytool,
        &[
            "-exportcert",
            "-rfc",
            "-alias",
            "cloud",
            "-keystore",
            &p12s,
            "-storepass",
            &pass,
        ],
        "keytool -exportcert",
    )?;
    let key = run_tool(
        &openssl,
        &[
            "pkcs12",
            "-in",
            &p12s,
            "-nocerts",
            "-nodes",
            "-passin",
            &format!("pass:{pass}"),
        ],
        "openssl pkcs12",
    )?;
    let jks = match kind {
        StoreKind::Pkcs12 => io("read keystore", std::fs::read(&p12))?,
        StoreKind::Jks => {
            let jks = dir.path().join("cloud.jks");
            let jkss = jks.to_string_lossy().into_owned();
            run_tool(
                &keytool,
                &[
                    "-importkeystore",
                    "-srckeystore",
                    &p12s,
                    "-srcstoretype",
                    "PKCS12",
                    "-srcstorepass",
                    &pass,
                    "-destkeystore",
                    &jkss,
                    "-deststoretype",
                    "JKS",
                    "-deststorepass",
                    &pass,
                    "-destkeypass",
                    &pass,
                    "-noprompt",
                ],
                "keytool -importkeystore",
            )?;
            io("read keystore", std::fs::read(&jks))?
        }
    };
    Ok(StoreTemplate {
        jks,
        crt,
        key,
        passphrase: Secret::new(pass),
    })
}

/// The `agent.properties` the package ships (agent/conf/agent.properties).
pub const PACKAGED_AGENT_PROPERTIES: &str = "\
# Sample configuration file for CloudStack agent

# The GUID to identify the agent with, this is mandatory!
# Generate with \"uuidgen\"
guid=

#resource= the java class, which agent load to execute
resource=com.cloud.hypervisor.kvm.resource.LibvirtComputingResource

#workers= number of threads running in agent
workers=5

#host= The IP address of management server
host=localhost

#port = The port management server listening on, default is 8250
port=8250

#cluster= The cluster which the agent belongs to
cluster=default

#pod= The pod which the agent belongs to
pod=default

#zone= The zone which the agent belongs to
zone=default

#local.storage.uuid= The UUID for the local storage pool, this is mandatory!
local.storage.uuid=

domr.scripts.dir=scripts/network/domr/kvm
hypervisor.type=kvm
iscsi.session.cleanup.enabled=false
";

fn uuid_like(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    token(4).hash(&mut h);
    let a = h.finish();
    a.hash(&mut h);
    let b = h.finish();
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl KvmHost {
    /// Creates the host's directory and, with `options.ssh`, starts its sshd.
    ///
    /// # Errors
    /// [`LabError::MissingBinary`] naming `default-jre-headless` (keytool), `openssl` or
    /// `openssh-server`; IO errors.
    pub fn start(options: &KvmHostOptions) -> Result<KvmHost> {
        let store = template(options.store)?;
        let ver = &options.installed;
        let line = CsVersion::parse(ver)
            .map(|v| v.line())
            .map_err(|e| LabError::Start {
                what: "lab host".into(),
                detail: e.to_string(),
            })?;
        let node = NodeDir::create("cs-lab-kvm-", options.family)?;
        let (root, st) = (node.root(), node.state());
        let agent = root.join("etc/cloudstack/agent");
        let props = format!(
            "# Sample configuration file for CloudStack agent\n\
             # written by cloudstack-setup-agent for {name}\n\n\
             guid={guid}\n\
             resource=com.cloud.hypervisor.kvm.resource.LibvirtComputingResource\n\
             workers=5\n\
             host={ms}\n\
             port={port}\n\
             cluster={cluster}\n\
             pod=1\n\
             zone=1\n\
             local.storage.uuid={lsu}\n\
             private.network.device=cloudbr1\n\
             public.network.device=cloudbr0\n\
             domr.scripts.dir=scripts/network/domr/kvm\n\
             hypervisor.type=kvm\n\
             iscsi.session.cleanup.enabled=false\n\
             keystore.passphrase={pass}\n",
            name = options.name,
            guid = uuid_like(&options.name),
            ms = options.management_server,
            port = options.agent_port,
            cluster = options.cluster,
            lsu = uuid_like(&format!("{}-local", options.name)),
            pass = store.passphrase.expose(),
        );
        write(&agent.join("agent.properties"), props, 0o600)?;
        write(&agent.join("cloud.jks"), &store.jks, 0o600)?;
        write(&agent.join("cloud.crt"), &store.crt, 0o600)?;
        write(&agent.join("cloud.ca.crt"), &store.crt, 0o600)?;
        write(&agent.join("cloud.key"), &store.key, 0o600)?;
        write(&agent.join("log4j-cloud.xml"), "<Configuration/>\n", 0o644)?;
        write(
            &node.path().join("packaged/agent.properties"),
            PACKAGED_AGENT_PROPERTIES,
            0o644,
        )?;
        node.write_repo(&options.repo_base, &line)?;
        let lib = root.join("usr/share/cloudstack-agent/lib");
        for j in ["agent", "plugin-hypervisor-kvm", "utils"] {
            write(&lib.join(format!("cloud-{j}-{ver}.jar")), "", 0o644)?;
        }
        write(&lib.join("commons-io-2.8.0.jar"), "", 0o644)?;
        for f in ["etc/pki/CA/cacert.pem", "etc/pki/libvirt/servercert.pem"] {
            write(&root.join(f), &store.crt, 0o644)?;
        }
        write(
            &root.join("etc/pki/libvirt/private/serverkey.pem"),
            &store.key,
            0o600,
        )?;
        write(&root.join("var/log/cloudstack/agent/agent.log"), "", 0o644)?;
        node.set_installed(AGENT, ver)?;
        node.set_installed("cloudstack-common", ver)?;
        node.add_unit(AGENT, "active")?;
        node.add_unit(LIBVIRT_UNIT, "active")?;
        write(&st.join("agent.status"), format!("Up {ver}\n"), 0o644)?;
        for (l, versions) in &options.repo {
            node.offer(l, versions)?;
        }
        write(&st.join("addresses"), "10.0.0.1\n", 0o644)?;
        for dev in ["cloudbr0", "cloudbr1"] {
            write(&st.join("mtu").join(dev), options.mtu.to_string(), 0o644)?;
        }
        write(&st.join("java_major"), "17\n", 0o644)?;
        write(&st.join("libvirt-tls"), "", 0o644)?;
        io(
            "create domains dir",
            std::fs::create_dir_all(st.join("domains")),
        )?;
        node.install_standins(STANDIN, KVM_TOOLS)?;
        let server = if options.ssh {
            Some(node.start_sshd()?)
        } else {
            None
        };
        Ok(KvmHost {
            server,
            name: options.name.clone(),
            cluster: options.cluster.clone(),
            passphrase: store.passphrase.clone(),
            node,
        })
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's cluster.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Its package-manager family.
    pub fn family(&self) -> LabFamily {
        self.node.family()
    }

    /// The re-rooted filesystem: give it to `Layout::rerooted`.
    pub fn root(&self) -> PathBuf {
        self.node.root().to_path_buf()
    }

    /// The stand-ins' directory.
    pub fn bin_dir(&self) -> PathBuf {
        self.node.bin().to_path_buf()
    }

    fn state(&self) -> PathBuf {
        self.node.state().to_path_buf()
    }

    /// Sets the MTU `ip link` reports for network device `dev`.
    ///
    /// # Errors
    /// IO errors.
    pub fn set_mtu(&self, dev: &str, mtu: u32) -> Result<()> {
        write(&self.state().join("mtu").join(dev), mtu.to_string(), 0o644)
    }

    /// The keystore passphrase in `agent.properties` (the same for every lab host).
    pub fn passphrase(&self) -> &Secret {
        &self.passphrase
    }

    /// The host's sshd, when it has one.
    pub fn ssh(&self) -> Option<&SshServer> {
        self.server.as_ref()
    }

    /// A hosts-file line for it: `root@127.0.0.1:PORT cluster=NAME root=DIR`.
    pub fn hosts_line(&self) -> Option<String> {
        self.server.as_ref().map(|s| {
            format!(
                "root@{} cluster={} root={}",
                s.addr(),
                self.cluster,
                self.root().display()
            )
        })
    }

    /// Connects over SSH as the lab's operator account ([`crate::operator`], not root),
    /// running everything as root through sudo with its password, named after the host.
    ///
    /// # Errors
    /// [`HostError::Connect`] without an sshd or when the operator account cannot be set up;
    /// what the SSH connection returns.
    pub async fn connect_as_operator(&self) -> std::result::Result<SshHost, HostError> {
        let Some(s) = &self.server else {
            return Err(HostError::Connect {
                host: self.name.clone(),
                addr: "-".into(),
                source: "the lab host was started without sshd".into(),
            });
        };
        let builder = s.sudo_host_builder().map_err(|e| HostError::Connect {
            host: self.name.clone(),
            addr: s.addr().to_string(),
            source: Box::new(e),
        })?;
        builder.name(self.name.clone()).connect().await
    }

    /// Connects over SSH (root, the lab key, strict host-key checking), named after the host.
    ///
    /// # Errors
    /// [`HostError::Connect`] without an sshd; what the SSH connection returns.
    pub async fn connect(&self) -> std::result::Result<SshHost, HostError> {
        match &self.server {
            Some(s) => s.host_builder().name(self.name.clone()).connect().await,
            None => Err(HostError::Connect {
                host: self.name.clone(),
                addr: "-".into(),
                source: "the lab host was started without sshd".into(),
            }),
        }
    }

    /// This machine acting as the host: commands run locally with the stand-ins first in
    /// `PATH`, files are this machine's (use the re-rooted layout).
    pub fn local_host(&self) -> Arc<dyn Host> {
        self.node.local_host(&self.name)
    }

    /// Turns a fault on.
    ///
    /// # Errors
    /// IO errors.
    pub fn inject(&self, fault: KvmFault) -> Result<()> {
        self.node.set_fault(fault.file(), "")
    }

    /// Turns a fault off.
    ///
    /// # Errors
    /// IO errors other than "already off".
    pub fn clear(&self, fault: KvmFault) -> Result<()> {
        self.node.clear_fault(fault.file())
    }

    /// How long the agent takes to come back Up after a start (`None`: at once), as a real
    /// agent's reconnect does: the start returns, the host reads `Disconnected` meanwhile. For
    /// benchmarks that simulate a real refresh's time.
    ///
    /// # Errors
    /// IO errors.
    pub fn set_up_delay(&self, delay: Option<std::time::Duration>) -> Result<()> {
        let path = self.state().join("up-delay");
        let r = match delay {
            Some(d) => std::fs::write(&path, format!("{:.3}\n", d.as_secs_f64())),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            },
        };
        r.map_err(|e| LabError::io(format!("write {}", path.display()), e))
    }

    /// Whether a fault is on.
    pub fn has_fault(&self, fault: KvmFault) -> bool {
        self.node.has_fault(fault.file())
    }

    /// The installed version of a package, as the stand-in package manager records it (an rpm
    /// host's is version-release, `4.19.0.0-1`).
    pub fn installed(&self, package: &str) -> Option<String> {
        self.node.installed(package)
    }

    /// A unit's state as `systemctl is-active` prints it: `active`, `inactive` or `failed`
    /// (`inactive` for a unit the host does not have).
    pub fn service_state(&self, unit: &str) -> String {
        self.node.service_state(unit)
    }

    /// Every `systemctl` call on the host that changed something (start, stop, restart, …,
    /// the package scripts' included), one per line (`restart cloudstack-agent`).
    pub fn systemctl_log(&self) -> Vec<String> {
        self.node.systemctl_log()
    }

    /// The guests libvirt runs on the host (`virsh list --name`), sorted by name.
    pub fn domains(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.state().join("domains"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Starts guest `name` (an instance name, `i-2-7-VM`) on the host, as the agent does with
    /// libvirt when CloudStack starts or migrates a VM here; a guest already running stays as
    /// it is.
    ///
    /// # Errors
    /// [`LabError::Start`] for a name that is not a file name; IO errors.
    pub fn start_domain(&self, name: &str) -> Result<()> {
        let path = self.domain_path(name)?;
        if path.exists() {
            return Ok(());
        }
        let seq = self.state().join("domain-seq");
        let id = std::fs::read_to_string(&seq)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        write(&seq, format!("{id}\n"), 0o644)?;
        write(&path, format!("{id}\n"), 0o644)
    }

    /// Destroys guest `name` (`virsh destroy`): it stops running on the host; a guest that is
    /// not running is no error.
    ///
    /// # Errors
    /// [`LabError::Start`] for a name that is not a file name; IO errors.
    pub fn destroy_domain(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.domain_path(name)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LabError::io(format!("destroy domain {name}"), e))
            }
            _ => Ok(()),
        }
    }

    fn domain_path(&self, name: &str) -> Result<PathBuf> {
        let valid = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(LabError::Start {
                what: format!("domain on {}", self.name),
                detail: format!("invalid domain name `{name}`"),
            });
        }
        Ok(self.state().join("domains").join(name))
    }

    /// Whether the host is in maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.state().join("maintenance").exists()
    }

    /// The agent's state as the lab's management server sees it.
    pub fn hypervisor(&self) -> HypervisorState {
        read_status(&self.name, &self.state())
    }

    /// A [`HostStatus`] + [`HostMaintenance`] answering for this host only.
    pub fn status(&self) -> Arc<LabStatus> {
        LabStatus::of([self])
    }
}

fn read_status(name: &str, state: &Path) -> HypervisorState {
    let text = std::fs::read_to_string(state.join("agent.status")).unwrap_or_default();
    let mut words = text.split_whitespace();
    let st = words.next().unwrap_or("Disconnected").to_string();
    let version = words.next().and_then(|v| CsVersion::parse(v).ok());
    HypervisorState {
        id: format!("lab-{name}"),
        name: name.to_string(),
        state: st,
        resource_state: Some(
            if state.join("maintenance").exists() {
                "Maintenance"
            } else {
                "Enabled"
            }
            .into(),
        ),
        version,
        address: None,
    }
}

/// The lab's answer to "is this hypervisor Up, at which version" and its maintenance switch,
/// read from and written to the hosts' state directories (what cs-api gives for a real cloud).
#[derive(Debug, Clone, Default)]
pub struct LabStatus {
    states: BTreeMap<String, PathBuf>,
}

impl LabStatus {
    /// A status answering for `hosts`, by name.
    pub fn of<'a>(hosts: impl IntoIterator<Item = &'a KvmHost>) -> Arc<LabStatus> {
        Arc::new(LabStatus {
            states: hosts
                .into_iter()
                .map(|h| (h.name.clone(), h.state()))
                .collect(),
        })
    }

    fn state(&self, key: &str) -> std::result::Result<&PathBuf, BoxError> {
        self.states
            .get(key)
            .ok_or_else(|| format!("no lab host named {key}").into())
    }
}

#[async_trait]
impl HostStatus for LabStatus {
    async fn hypervisor(
        &self,
        key: &str,
    ) -> std::result::Result<Option<HypervisorState>, BoxError> {
        Ok(self.states.get(key).map(|s| read_status(key, s)))
    }

    async fn hypervisors(&self) -> std::result::Result<Option<Vec<HypervisorState>>, BoxError> {
        Ok(Some(
            self.states
                .iter()
                .map(|(name, s)| read_status(name, s))
                .collect(),
        ))
    }
}

#[async_trait]
impl HostMaintenance for LabStatus {
    async fn enter(&self, key: &str) -> std::result::Result<(), BoxError> {
        std::fs::write(self.state(key)?.join("maintenance"), "")?;
        Ok(())
    }

    async fn leave(&self, key: &str) -> std::result::Result<(), BoxError> {
        match std::fs::remove_file(self.state(key)?.join("maintenance")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// A [`RepoSwitch`] for lab hosts: rewrites the release line of the one CloudStack entry the
/// lab writes (`cloudstack.list` or `cloudstack.repo`) under a root. The orchestrator uses
/// cs-repo for real hosts.
#[derive(Debug, Clone)]
pub struct LabRepoSwitch {
    roots: BTreeMap<String, PathBuf>,
}

impl LabRepoSwitch {
    /// A switch for `hosts`, by host name.
    pub fn of<'a>(hosts: impl IntoIterator<Item = &'a KvmHost>) -> Arc<LabRepoSwitch> {
        Arc::new(LabRepoSwitch {
            roots: hosts
                .into_iter()
                .map(|h| (h.name.clone(), h.root()))
                .collect(),
        })
    }
}

#[async_trait]
impl RepoSwitch for LabRepoSwitch {
    async fn switch(
        &self,
        host: &dyn Host,
        line: &str,
    ) -> std::result::Result<RepoSwitchReport, BoxError> {
        let root = self
            .roots
            .get(host.name())
            .ok_or_else(|| format!("no lab host named {}", host.name()))?;
        let mut report = RepoSwitchReport::default();
        for rel in [
            "etc/apt/sources.list.d/cloudstack.list",
            "etc/yum.repos.d/cloudstack.repo",
        ] {
            let path = root.join(rel);
            let Some(bytes) = cs_core::HostExt::read_opt(host, &path).await? else {
                continue;
            };
            let text = String::from_utf8(bytes)?;
            let mut out = String::new();
            for l in text.split_inclusive('\n') {
                let body = l.trim_end_matches('\n');
                let new = if body.starts_with("deb ") {
                    let (head, old) = body.rsplit_once(' ').unwrap_or((body, ""));
                    if old != line {
                        report.changes.push(format!("{rel}: {old} -> {line}"));
                    }
                    format!("{head} {line}")
                } else if let Some(url) = body.strip_prefix("baseurl=") {
                    let trimmed = url.trim_end_matches('/');
                    let (head, old) = trimmed.rsplit_once('/').unwrap_or((trimmed, ""));
                    if old != line {
                        report.changes.push(format!("{rel}: {old} -> {line}"));
                    }
                    format!("baseurl={head}/{line}/")
                } else {
                    body.to_string()
                };
                out.push_str(&new);
                if l.ends_with('\n') {
                    out.push('\n');
                }
            }
            if out != text {
                host.write_atomic(&path, out.as_bytes(), None).await?;
                report.changed_files.push(path);
            }
        }
        Ok(report)
    }
}

/// Starts `count` lab hosts named `kvm1`…, `per_cluster` to a cluster (`c1`, `c2`, …), on
/// parallel threads, each configured by `configure` after the defaults.
///
/// # Errors
/// The first host that fails to start.
pub fn start_kvm_hosts(
    count: usize,
    per_cluster: usize,
    configure: impl Fn(&mut KvmHostOptions) + Sync,
) -> Result<Vec<KvmHost>> {
    let per_cluster = per_cluster.max(1);
    let opts: Vec<KvmHostOptions> = (0..count)
        .map(|i| {
            let mut o =
                KvmHostOptions::new(format!("kvm{}", i + 1), format!("c{}", i / per_cluster + 1));
            configure(&mut o);
            o
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
        * 2;
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = opts
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(KvmHost::start).collect::<Result<Vec<_>>>()))
            .collect();
        let mut out = Vec::with_capacity(count);
        for h in handles {
            let hosts = h.join().map_err(|_| LabError::Start {
                what: "lab hosts".into(),
                detail: "a start-up thread panicked".into(),
            })??;
            out.extend(hosts);
        }
        Ok(out)
    })
}
