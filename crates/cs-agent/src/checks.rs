//! The checks of a KVM host (CHECKS.md): `agent.*`, `node.*` and `net.*`.
//!
//! Every check is read-only. Per-host checks are [`Check<Node>`]; `net.mtu` compares hosts and
//! is a [`Check<[Node]>`](Check).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cs_core::{Check, CheckError, Cmd, CsVersion, Finding, HostExt, HostStatus, Severity};

use crate::keystore::{self, Opener};
use crate::packages::{self, AGENT_PACKAGE};
use crate::properties::{Properties, is_secret_key};
use crate::{Error, Node, facts};

impl From<Error> for CheckError {
    fn from(e: Error) -> Self {
        CheckError::with_source("cannot inspect the host", e)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `agent.keystore`: `cloud.jks` present, `keystore.passphrase` set and opening it,
/// `cloud.crt` valid for at least `min_days`, file modes as the keystore scripts set them, the
/// certificate naming the host's addresses.
#[derive(Debug, Clone)]
pub struct KeystoreCheck {
    /// How the passphrase is tried.
    pub opener: Opener,
    /// Days of validity below which the certificate fails the check.
    pub min_days: i64,
}

impl Default for KeystoreCheck {
    fn default() -> Self {
        KeystoreCheck {
            opener: Opener::Native,
            min_days: 30,
        }
    }
}

const KEYSTORE_REMEDY: &str = "re-provision the host's certificate \
    (provisionCertificate API, or cloudstack-setup-agent) and keep keystore.passphrase";

impl KeystoreCheck {
    /// The findings for one host, as a refresh's gate uses them.
    ///
    /// # Errors
    /// Host errors.
    pub async fn findings(&self, node: &Node) -> crate::Result<Vec<Finding>> {
        const ID: &str = "agent.keystore";
        let subject = node.name().to_string();
        let props = node.properties().await?;
        let pass = keystore::passphrase_of(&props);
        let (st, addrs) = tokio::join!(
            keystore::inspect(node.host.as_ref(), &node.layout, pass.as_ref(), self.opener),
            keystore::host_addresses(node.host.as_ref()),
        );
        let st = st?;
        let mut out = Vec::new();
        let fail = |msg: String| {
            Finding::new(ID, Severity::Fail, subject.clone(), msg).with_remedy(KEYSTORE_REMEDY)
        };
        let jks = st.file("cloud.jks").is_some_and(|f| f.is_present());
        if !jks {
            out.push(fail("cloud.jks is missing".into()));
        }
        if !st.passphrase_present {
            out.push(fail(
                "keystore.passphrase is missing from agent.properties (agent.log: \
                 Failed to find keystore passphrase)"
                    .into(),
            ));
        }
        if st.opens == Some(false) {
            out.push(fail(
                "keystore.passphrase does not open cloud.jks (agent.log: Failed to load keystore)"
                    .into(),
            ));
        }
        for f in &st.files {
            match f.mode {
                None if f.name != "cloud.jks" => out.push(Finding::new(
                    ID,
                    Severity::Warn,
                    subject.clone(),
                    format!("{} is missing", f.name),
                )),
                Some(m) if m & 0o077 != 0 => out.push(
                    Finding::new(
                        ID,
                        Severity::Warn,
                        subject.clone(),
                        format!(
                            "{} has mode {:04o}, the keystore scripts set {:04o}",
                            f.name, m, f.expected_mode
                        ),
                    )
                    .with_remedy(format!("chmod {:o} {}", f.expected_mode, f.name)),
                ),
                _ => {}
            }
        }
        if let Some(e) = &st.cert_error {
            out.push(fail(e.clone()));
        }
        if let Some(cert) = &st.cert {
            let days = cert.days_left(now());
            if days < 0 {
                out.push(fail(format!("cloud.crt expired {} days ago", -days)));
            } else if days < self.min_days {
                out.push(fail(format!(
                    "cloud.crt expires in {days} days (under {})",
                    self.min_days
                )));
            }
            let addrs = addrs.unwrap_or_default();
            let missing: Vec<String> = addrs
                .iter()
                .filter(|a| !cert.san_ips.contains(a))
                .map(ToString::to_string)
                .collect();
            if !addrs.is_empty() && missing.len() == addrs.len() {
                out.push(Finding::new(
                    ID,
                    Severity::Warn,
                    subject.clone(),
                    format!(
                        "cloud.crt names none of the host's addresses ({})",
                        missing.join(", ")
                    ),
                ));
            }
        }
        if out.iter().all(|f| f.severity < Severity::Fail) {
            let days = st.cert.as_ref().map_or("no certificate".into(), |c| {
                format!("cloud.crt valid {} more days", c.days_left(now()))
            });
            out.insert(
                0,
                Finding::pass(
                    ID,
                    subject,
                    format!("cloud.jks opens with keystore.passphrase; {days}"),
                ),
            );
        }
        Ok(out)
    }
}

#[async_trait]
impl Check<Node> for KeystoreCheck {
    fn id(&self) -> &str {
        "agent.keystore"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        Ok(self.findings(node).await?)
    }
}

/// The identity keys `agent.properties.intact` compares (CHECKS.md).
pub const INTACT_KEYS: &[&str] = &[
    "guid",
    "local.storage.uuid",
    "host",
    "zone",
    "pod",
    "cluster",
    "keystore.passphrase",
];

/// `agent.properties.intact`: the identity keys equal those of a snapshot taken before the
/// package upgrade.
#[derive(Debug, Clone)]
pub struct PropertiesIntact {
    /// `agent.properties` as it was before.
    pub before: Properties,
}

#[async_trait]
impl Check<Node> for PropertiesIntact {
    fn id(&self) -> &str {
        "agent.properties.intact"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let now = node.properties().await.map_err(CheckError::from)?;
        let subject = node.name().to_string();
        let mut out: Vec<Finding> = INTACT_KEYS
            .iter()
            .filter(|k| self.before.get(k) != now.get(k))
            .map(|k| {
                let shown = |p: &Properties| match p.get(k) {
                    None => "unset".to_string(),
                    Some(_) if is_secret_key(k) => "***".into(),
                    Some(v) => format!("{v:?}"),
                };
                Finding::new(
                    self.id(),
                    Severity::Fail,
                    subject.clone(),
                    format!("{k} changed: {} -> {}", shown(&self.before), shown(&now)),
                )
                .with_remedy("restore it from the snapshot (the refresh does)")
            })
            .collect();
        for d in now.duplicates() {
            out.push(Finding::new(
                self.id(),
                Severity::Warn,
                subject.clone(),
                format!("{} is set {} times; the last wins", d.key, d.lines.len()),
            ));
        }
        if out.is_empty() {
            out.push(Finding::pass(self.id(), subject, "identity keys unchanged"));
        }
        Ok(out)
    }
}

/// `agent.version.match`: the agent package (and the version the management server reports,
/// when a [`HostStatus`] is given) equals `expected`. FAIL after the upgrade, INFO before.
#[derive(Debug, Clone)]
pub struct VersionMatch {
    /// The management server's version.
    pub expected: CsVersion,
    /// Post-flight (a mismatch fails) or pre-flight (informs).
    pub post: bool,
    /// Where `listHosts.version` comes from, if anywhere.
    pub status: Option<Arc<dyn HostStatus>>,
}

#[async_trait]
impl Check<Node> for VersionMatch {
    fn id(&self) -> &str {
        "agent.version.match"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let (_, pkgs) = facts::agent_packages(node.host.as_ref()).await?;
        let agent = pkgs.iter().find(|p| p.name == AGENT_PACKAGE);
        let mut problems = Vec::new();
        match agent.and_then(|p| p.version()) {
            Some(v) if v == self.expected => {}
            Some(v) => problems.push(format!("package cloudstack-agent is {v}")),
            None => problems.push("cloudstack-agent is not installed".to_string()),
        }
        if let Some(status) = &self.status {
            let st = status
                .hypervisor(&node.key)
                .await
                .map_err(|e| CheckError::with_source("cannot ask the management server", e))?;
            match st.and_then(|s| s.version) {
                Some(v) if v == self.expected => {}
                Some(v) => problems.push(format!("the management server reports {v}")),
                None => problems.push("the management server reports no version".into()),
            }
        }
        let subject = node.name().to_string();
        Ok(vec![if problems.is_empty() {
            Finding::pass(self.id(), subject, format!("agent at {}", self.expected))
        } else {
            let sev = if self.post {
                Severity::Fail
            } else {
                Severity::Info
            };
            Finding::new(
                self.id(),
                sev,
                subject,
                format!("{} (expected {})", problems.join("; "), self.expected),
            )
            .with_remedy("refresh the agent to the management server's version")
        }])
    }
}

/// `agent.jars.consistent`: one version of `cloud-*.jar` in the agent's lib directory.
#[derive(Debug, Clone, Default)]
pub struct JarsConsistent;

#[async_trait]
impl Check<Node> for JarsConsistent {
    fn id(&self) -> &str {
        "agent.jars.consistent"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let jars = packages::jar_versions(node.host.as_ref(), &node.layout).await?;
        let subject = node.name().to_string();
        Ok(vec![if jars.is_mixed() {
            Finding::new(
                self.id(),
                Severity::Fail,
                subject,
                format!(
                    "{} holds cloud-*.jar of versions {}",
                    node.layout.agent_lib_dir.display(),
                    jars.versions().join(", ")
                ),
            )
            .with_remedy("remove the stale jars, then reinstall cloudstack-agent")
        } else {
            Finding::pass(
                self.id(),
                subject,
                format!("cloud-*.jar at {}", jars.versions().join(", ")),
            )
        }])
    }
}

/// `agent.cacerts`: aliases in the JVM's `cacerts` that the distribution did not put there
/// (a Java upgrade drops them). Distribution aliases: `debian:*` and `* [jdk]`.
#[derive(Debug, Clone, Default)]
pub struct CaCerts;

#[async_trait]
impl Check<Node> for CaCerts {
    fn id(&self) -> &str {
        "agent.cacerts"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let cmd = Cmd::new("keytool")
            .args(["-list", "-cacerts"])
            .stdin("changeit\n")
            .timeout(Duration::from_secs(60));
        let subject = node.name().to_string();
        let out = match node.host.run(&cmd).await {
            Ok(o) if o.success() => o,
            Ok(o) if o.code == 127 => {
                return Ok(vec![Finding::new(
                    self.id(),
                    Severity::Skip,
                    subject,
                    "keytool not found",
                )]);
            }
            Err(cs_core::HostError::Spawn { .. }) => {
                return Ok(vec![Finding::new(
                    self.id(),
                    Severity::Skip,
                    subject,
                    "keytool not found",
                )]);
            }
            Ok(o) => {
                return Err(CheckError::new(format!(
                    "keytool -list -cacerts exited {}",
                    o.code
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let custom = custom_cacerts(&out.stdout_lossy());
        Ok(vec![if custom.is_empty() {
            Finding::pass(self.id(), subject, "only distribution CAs in cacerts")
        } else {
            Finding::new(
                self.id(),
                Severity::Info,
                subject,
                format!("custom cacerts aliases: {}", custom.join(", ")),
            )
            .with_remedy("re-import them after a Java upgrade")
        }])
    }
}

pub(crate) fn custom_cacerts(list: &str) -> Vec<String> {
    list.lines()
        .filter(|l| l.contains("trustedCertEntry") || l.contains("PrivateKeyEntry"))
        .filter_map(|l| l.split(", ").next())
        .filter(|a| !a.starts_with("debian:") && !a.ends_with("[jdk]"))
        .map(str::to_string)
        .collect()
}

/// Operating systems CloudStack supports on KVM hosts: `ID` (or an `ID_LIKE` word) and major
/// `VERSION_ID` (seed prerequisites; Debian and Rocky/Alma/Oracle from the release notes).
pub const SUPPORTED_OS: &[(&str, &[&str])] = &[
    ("ubuntu", &["20.04", "22.04", "24.04"]),
    ("debian", &["11", "12"]),
    ("rhel", &["8", "9"]),
    ("rocky", &["8", "9"]),
    ("almalinux", &["8", "9"]),
    ("ol", &["8", "9"]),
    ("centos", &["8", "9"]),
];

/// `node.os.supported`: `/etc/os-release` in [`SUPPORTED_OS`]; running kernel equal to the
/// newest in `/boot`.
#[derive(Debug, Clone, Default)]
pub struct OsSupported;

fn os_release_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"'))
    })
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

#[async_trait]
impl Check<Node> for OsSupported {
    fn id(&self) -> &str {
        "node.os.supported"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let subject = node.name().to_string();
        let text = node
            .host
            .read_opt(&node.layout.os_release)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let id = os_release_field(&text, "ID").unwrap_or("unknown");
        let like = os_release_field(&text, "ID_LIKE").unwrap_or("");
        let version = os_release_field(&text, "VERSION_ID").unwrap_or("");
        let ok = SUPPORTED_OS.iter().any(|(os, versions)| {
            (*os == id || like.split_whitespace().any(|w| w == *os))
                && versions
                    .iter()
                    .any(|v| version == *v || version.split('.').next() == Some(v))
        });
        let mut out = vec![if ok {
            Finding::pass(self.id(), subject.clone(), format!("{id} {version}"))
        } else {
            Finding::new(
                self.id(),
                Severity::Warn,
                subject.clone(),
                format!("{id} {version} is not a supported KVM host OS"),
            )
            .with_remedy("move the host to a supported distribution release")
        }];
        let running = node.host.run(&Cmd::new("uname").arg("-r")).await?;
        let running = running.stdout_lossy().trim().to_string();
        let boot = node.path("/boot");
        if let Ok(entries) = node.host.list_dir(&boot).await {
            let newest = entries
                .iter()
                .filter_map(|e| e.name.strip_prefix("vmlinuz-"))
                .max_by_key(|v| version_key(v));
            if let Some(newest) = newest
                && newest != running
            {
                out.push(
                    Finding::new(
                        self.id(),
                        Severity::Warn,
                        subject,
                        format!("running kernel {running}, newest installed {newest}"),
                    )
                    .with_remedy("reboot into the newest kernel before the upgrade"),
                );
            }
        }
        Ok(out)
    }
}

/// `node.privileges`: root, or passwordless sudo.
#[derive(Debug, Clone, Default)]
pub struct Privileges;

#[async_trait]
impl Check<Node> for Privileges {
    fn id(&self) -> &str {
        "node.privileges"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let subject = node.name().to_string();
        let uid = node.host.run_ok(&Cmd::new("id").arg("-u")).await?;
        if uid.stdout_lossy().trim() == "0" {
            return Ok(vec![Finding::pass(self.id(), subject, "runs as root")]);
        }
        let sudo = node.host.run(&Cmd::new("sudo").args(["-n", "true"])).await;
        Ok(vec![if matches!(sudo, Ok(o) if o.success()) {
            Finding::pass(self.id(), subject, "passwordless sudo")
        } else {
            Finding::new(
                self.id(),
                Severity::Fail,
                subject,
                "neither root nor passwordless sudo",
            )
            .with_remedy("connect as root, or grant NOPASSWD sudo for the upgrade commands")
        }])
    }
}

/// `node.resources`: CPUs and memory, against the seed's 2 GB overhead for a KVM host.
#[derive(Debug, Clone, Default)]
pub struct Resources;

#[async_trait]
impl Check<Node> for Resources {
    fn id(&self) -> &str {
        "node.resources"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let cpus = node.host.run_ok(&Cmd::new("nproc")).await?;
        let cpus = cpus.stdout_lossy().trim().to_string();
        let mem = node
            .host
            .read_to_string(std::path::Path::new("/proc/meminfo"))
            .await?;
        let kb: u64 = mem
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let gb = kb as f64 / 1024.0 / 1024.0;
        Ok(vec![Finding::new(
            self.id(),
            Severity::Info,
            node.name(),
            format!(
                "{cpus} CPUs, {gb:.1} GB RAM ({:.1} GB left for guests after the 2 GB host overhead)",
                (gb - 2.0).max(0.0)
            ),
        )])
    }
}

/// `net.agent.reach`: the host opens TCP to every management server on the agent port; the
/// connect time stands for the round trip and failed attempts for packet loss.
#[derive(Debug, Clone)]
pub struct AgentReach {
    /// Management servers; empty: the `host` key of `agent.properties`.
    pub servers: Vec<String>,
    /// The agent port; `None`: the `port` key of `agent.properties`, else 8250.
    pub port: Option<u16>,
    /// Connection attempts per server.
    pub attempts: u32,
    /// Median connect time above which the check fails.
    pub max_rtt: Duration,
    /// Failed attempts (percent) above which the check fails.
    pub max_loss_pct: u32,
}

impl Default for AgentReach {
    fn default() -> Self {
        AgentReach {
            servers: Vec::new(),
            port: None,
            attempts: 5,
            max_rtt: Duration::from_millis(200),
            max_loss_pct: 0,
        }
    }
}

/// The management servers' agent port, when `agent.properties` names none.
pub const AGENT_PORT: u16 = 8250;

/// The management servers in a `host` value: `10.0.0.1,10.0.0.2@roundrobin`.
pub fn management_servers(host_value: &str) -> Vec<String> {
    let list = host_value.split('@').next().unwrap_or("");
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

const PROBE: &str = r#"h=$1; p=$2; n=$3; i=0
while [ "$i" -lt "$n" ]; do
  s=$(date +%s%N)
  if timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$h" "$p" 2>/dev/null; then
    echo "ok $(( $(date +%s%N) - s ))"
  else
    echo fail
  fi
  i=$((i+1))
done"#;

#[async_trait]
impl Check<Node> for AgentReach {
    fn id(&self) -> &str {
        "net.agent.reach"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let subject = node.name().to_string();
        let props = if self.servers.is_empty() || self.port.is_none() {
            Some(node.properties().await?)
        } else {
            None
        };
        let servers = match &props {
            Some(p) if self.servers.is_empty() => management_servers(p.get("host").unwrap_or("")),
            _ => self.servers.clone(),
        };
        let port = self
            .port
            .or_else(|| props.as_ref()?.get("port")?.trim().parse().ok())
            .unwrap_or(AGENT_PORT);
        if servers.is_empty() {
            return Ok(vec![Finding::new(
                self.id(),
                Severity::Fail,
                subject,
                "no management server configured (agent.properties host)",
            )]);
        }
        let mut out = Vec::new();
        for server in servers {
            let cmd = Cmd::new("bash")
                .arg("-c")
                .arg(PROBE)
                .arg("probe")
                .arg(&server)
                .arg(port.to_string())
                .arg(self.attempts.to_string())
                .timeout(Duration::from_secs(5 * u64::from(self.attempts) + 10));
            let text = node.host.run_ok(&cmd).await?.stdout_lossy();
            let mut times: Vec<u64> = text
                .lines()
                .filter_map(|l| l.strip_prefix("ok "))
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            times.sort_unstable();
            let attempts = text.lines().count().max(1) as u32;
            let lost = attempts - times.len() as u32;
            let loss = lost * 100 / attempts;
            let target = format!("{server}:{port}");
            let f = if times.is_empty() {
                Finding::new(
                    self.id(),
                    Severity::Fail,
                    subject.clone(),
                    format!("cannot open TCP to {target}"),
                )
                .with_remedy("open the firewall for the agent port; check routing")
            } else {
                let median = Duration::from_nanos(times[times.len() / 2]);
                let msg = format!(
                    "{target}: connect {:.1} ms median, {loss}% failed of {attempts}",
                    median.as_secs_f64() * 1000.0
                );
                if median > self.max_rtt || loss > self.max_loss_pct {
                    Finding::new(self.id(), Severity::Fail, subject.clone(), msg)
                        .with_remedy("fix the network path before restarting agents")
                } else {
                    Finding::pass(self.id(), subject.clone(), msg)
                }
            };
            out.push(f);
        }
        Ok(out)
    }
}

/// The network devices of a host: `private.network.device` (default `cloudbr1`),
/// `public.network.device` (default `cloudbr0`) and `guest.network.device` when set.
pub fn network_devices(props: &Properties) -> Vec<String> {
    let mut out = vec![
        props
            .get("private.network.device")
            .unwrap_or("cloudbr1")
            .to_string(),
        props
            .get("public.network.device")
            .unwrap_or("cloudbr0")
            .to_string(),
    ];
    if let Some(g) = props.get("guest.network.device") {
        out.push(g.to_string());
    }
    out.dedup();
    out
}

/// The MTU of a device (`ip -o link show dev X`), `None` when the device is missing.
///
/// # Errors
/// Host errors.
pub async fn mtu(node: &Node, dev: &str) -> crate::Result<Option<u32>> {
    let out = node
        .host
        .run(&Cmd::new("ip").args(["-o", "link", "show", "dev", dev]))
        .await
        .map_err(|e| Error::host("run ip link", e))?;
    if !out.success() {
        return Ok(None);
    }
    let text = out.stdout_lossy();
    let mut words = text.split_whitespace();
    Ok(words
        .by_ref()
        .find(|w| *w == "mtu")
        .and(words.next())
        .and_then(|m| m.parse().ok()))
}

/// `net.mtu`: the MTU of each network device equal across the hosts of a cluster, and within
/// 1500–9000.
#[derive(Debug, Clone, Default)]
pub struct Mtu;

#[async_trait]
impl Check<[Node]> for Mtu {
    fn id(&self) -> &str {
        "net.mtu"
    }

    async fn run(&self, nodes: &[Node]) -> Result<Vec<Finding>, CheckError> {
        // cluster -> device -> mtu -> hosts
        type Seen = BTreeMap<String, BTreeMap<String, BTreeMap<u32, Vec<String>>>>;
        let mut seen: Seen = BTreeMap::new();
        let mut out = Vec::new();
        let per_host = futures::future::join_all(nodes.iter().map(|n| async move {
            let props = n.properties().await?;
            let mut mtus = Vec::new();
            for dev in network_devices(&props) {
                let m = mtu(n, &dev).await?;
                mtus.push((dev, m));
            }
            Ok::<_, Error>((n, mtus))
        }))
        .await;
        for r in per_host {
            let (n, mtus) = r?;
            let cluster = n.cluster.clone().unwrap_or_else(|| "-".into());
            for (dev, m) in mtus {
                match m {
                    None => out.push(Finding::new(
                        self.id(),
                        Severity::Warn,
                        n.name(),
                        format!("network device {dev} not found"),
                    )),
                    Some(m) => {
                        if !(1500..=9000).contains(&m) {
                            out.push(Finding::new(
                                self.id(),
                                Severity::Warn,
                                n.name(),
                                format!("{dev} MTU {m} outside 1500-9000"),
                            ));
                        }
                        seen.entry(cluster.clone())
                            .or_default()
                            .entry(dev)
                            .or_default()
                            .entry(m)
                            .or_default()
                            .push(n.name().to_string());
                    }
                }
            }
        }
        for (cluster, devs) in seen {
            for (dev, by_mtu) in devs {
                if by_mtu.len() > 1 {
                    let detail: Vec<String> = by_mtu
                        .iter()
                        .map(|(m, hosts)| format!("{m} on {}", hosts.join(",")))
                        .collect();
                    out.push(
                        Finding::new(
                            self.id(),
                            Severity::Warn,
                            format!("cluster {cluster}"),
                            format!("{dev} MTU differs: {}", detail.join("; ")),
                        )
                        .with_remedy("set one MTU on the bridge across the cluster"),
                    );
                } else if let Some(m) = by_mtu.keys().next() {
                    out.push(Finding::pass(
                        self.id(),
                        format!("cluster {cluster}"),
                        format!("{dev} MTU {m} on every host"),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Where libvirt's TLS files are (`keystore-cert-import` links them to the agent's).
pub const LIBVIRT_TLS_FILES: &[&str] = &[
    "/etc/pki/CA/cacert.pem",
    "/etc/pki/libvirt/servercert.pem",
    "/etc/pki/libvirt/private/serverkey.pem",
];

/// `net.libvirt.tls`: libvirtd listens on 16514 and its TLS files are present.
#[derive(Debug, Clone, Default)]
pub struct LibvirtTls;

#[async_trait]
impl Check<Node> for LibvirtTls {
    fn id(&self) -> &str {
        "net.libvirt.tls"
    }

    async fn run(&self, node: &Node) -> Result<Vec<Finding>, CheckError> {
        let subject = node.name().to_string();
        let mut problems = Vec::new();
        let ss = node
            .host
            .run(&Cmd::new("ss").args(["-Hltn", "sport = :16514"]))
            .await?;
        if !ss.success() || ss.stdout_lossy().trim().is_empty() {
            problems.push("libvirtd does not listen on 16514".to_string());
        }
        for f in LIBVIRT_TLS_FILES {
            if !facts::exists(node, &node.path(f)).await? {
                problems.push(format!("{f} is missing"));
            }
        }
        Ok(vec![if problems.is_empty() {
            Finding::pass(
                self.id(),
                subject,
                "libvirtd TLS on 16514 with its certificates",
            )
        } else {
            Finding::new(self.id(), Severity::Warn, subject, problems.join("; "))
                .with_remedy("set listen_tls=1 and re-provision the host certificate")
        }])
    }
}

/// The per-host checks of a KVM host with their defaults, pre-flight flavour (no snapshot, no
/// expected version). Add [`PropertiesIntact`] and [`VersionMatch`] where those are known.
pub fn host_checks() -> Vec<Box<dyn Check<Node>>> {
    vec![
        Box::new(KeystoreCheck::default()),
        Box::new(JarsConsistent),
        Box::new(CaCerts),
        Box::new(OsSupported),
        Box::new(Privileges),
        Box::new(Resources),
        Box::new(AgentReach::default()),
        Box::new(LibvirtTls),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_server_lists() {
        assert_eq!(
            management_servers("10.0.0.1,10.0.0.2@roundrobin"),
            ["10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(management_servers("ms1"), ["ms1"]);
        assert!(management_servers("").is_empty());
    }

    #[test]
    fn cacerts_aliases() {
        let list = "Keystore type: JKS\n\ndebian:isrg.pem, Jan 1, 2024, trustedCertEntry,\n\
                    corp-root, Jan 1, 2024, trustedCertEntry,\n\
                    digicert [jdk], Jan 1, 2024, trustedCertEntry,\n";
        assert_eq!(custom_cacerts(list), ["corp-root"]);
    }

    #[test]
    fn os_release_fields() {
        let t = "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"22.04\"\n";
        assert_eq!(os_release_field(t, "ID"), Some("ubuntu"));
        assert_eq!(os_release_field(t, "VERSION_ID"), Some("22.04"));
        assert!(version_key("6.1.0-18-amd64") > version_key("6.1.0-9-amd64"));
    }
}
