//! Simulated CloudStack management servers: each a lab node (its own directory with a re-rooted
//! filesystem holding `db.properties`, `key`, `server.properties`,
//! `/etc/default/cloudstack-management`, the management jars, the repository file and
//! `management-server.log`; stand-ins for `systemctl`, the family's package tools, `java` and
//! `ss` whose state lives in that directory; its own sshd), on Debian (apt, `cloudstack.list`) or
//! EL (dnf, `cloudstack.repo`), with the usage server only where one is configured
//! ([`MgmtNodeBuilder::usage`]). The node core every node shares (`data/node/core.sh`, `node.rs`)
//! answers for packages and units; the management role (`data/mgmt/standin.sh`) runs the
//! management and usage servers.
//!
//! Starting `cloudstack-management` returns at once, as with systemd, and runs in the background
//! what CloudStack's `DatabaseUpgradeChecker` does on the lab database through the stock
//! `mariadb` client: compare the newest `Complete` row of `version` with the installed package,
//! refuse a newer database or one with only unfinished rows, or run the migration prepared with
//! [`MgmtNode::prepare_migration`] step by step (a `version` row `Upgrade` → `Complete` per step,
//! with log lines like the real ones and a representative DDL change, see [`migration_table`]),
//! then, after a migration, update the system VM template rows as
//! `SystemVmTemplateRegistration.updateSystemVmTemplates` does, and finally mark the node's
//! `mshost` row `Up` and listen on 8080/8250. [`MgmtFault`]s make a step fail, the start hang or
//! the JVM die.
//!
//! What a node keeps besides every node's state (packages, units, faults, …):
//!
//! ```text
//! state/     packaged/<version>/<path> (conffiles each version ships), migrations/<from>_<to>
//!            (one "Class to-version" line per step), step_delay (seconds), db.cnf (0600
//!            client option file), mshost ("msid uuid name ip port"), startup ("starting" |
//!            "up <version>" | "failed <reason>" | "stopped"), listening, pids/<unit>,
//!            owner_pid, daemon.out
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cs_core::{CsVersion, DbUrl, Host, HostError, Layout, SshHost};
use mysql::prelude::Queryable;

use crate::mariadb::DbUrlExt;
use crate::node::{LabFamily, NodeDir};
use crate::sshd::SshServer;
use crate::util::{command, find_binary, io, token, write};
use crate::{LabError, Result};

const STANDIN: &str = include_str!("../data/mgmt/standin.sh");

/// The management server's unit and package.
pub const MANAGEMENT_UNIT: &str = "cloudstack-management";
/// The usage server's unit and package.
pub const USAGE_UNIT: &str = "cloudstack-usage";
/// The packages a lab management server has installed, all at one version (without
/// [`USAGE_UNIT`] on a node built with `usage(false)`).
pub const MGMT_PACKAGES: &[&str] = &[MANAGEMENT_UNIT, "cloudstack-common", USAGE_UNIT];

/// The port the lab writes to `mshost.service_port` (CloudStack's cluster servlet port).
const SERVICE_PORT: u16 = 9090;

/// The table a migration step's representative DDL creates in the cloud schema:
/// `lab_` + the class name in lower case (`Upgrade41800to41900` → `lab_upgrade41800to41900`).
/// The step creates it (with `id`, `step`, `to_version` and one row) in its upgrade script and
/// adds the column `cleaned_up` in its cleanup script; a `NoopDbUpgrade` step creates nothing.
pub fn migration_table(class: &str) -> String {
    format!("lab_{}", class.to_ascii_lowercase())
}

/// Something going wrong on a lab management server, on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MgmtFault {
    /// The cleanup script of migration step *k* (1-based) fails with a real SQL error
    /// (`Duplicate column name 'public_mtu'`): that step's `version` row stays `Upgrade`, the log
    /// gets `Unable to execute upgrade script`, the SQL error and `Unable to upgrade the
    /// database`, and the service ends `failed`. Earlier steps stay `Complete`.
    FailAtStep(usize),
    /// The upgrade script of step *k* fails half-way, before its `version` row is written: the
    /// step's table exists but the database still says the previous version (how
    /// apache/cloudstack#7358 starts). Logged and failed like [`MgmtFault::FailAtStep`].
    HalfApplyAtStep(usize),
    /// The start never finishes: with a migration, the first step's row stays `Upgrade` and
    /// the log stops after `Running upgrade …`; without one, the node never comes Up. A stop
    /// ends it.
    Hang,
    /// Package installs fail (`dpkg returned an error code (1)`).
    InstallFails,
    /// `systemctl stop` (and `restart`) of `cloudstack-management` fails and the service keeps
    /// running, as when its stop job fails.
    StopFails,
    /// A start at this installed version fails after the version check with `Unable to
    /// initialize the database encryptors` (a wrong `key` file or encryptor version); other
    /// versions start.
    StartFailsAt(CsVersion),
    /// The JVM is killed from outside right after it starts (as the kernel's OOM killer does):
    /// the unit ends `failed`, the start [`MgmtStartup::Failed`], and the log stops after its
    /// first line, with nothing [`cs_core::scan_log`] recognises.
    DiesSilently,
    /// Every filesystem is full: `df` reports 512 KiB available wherever it is asked.
    DiskFull,
}

impl MgmtFault {
    fn file(self) -> &'static str {
        match self {
            MgmtFault::FailAtStep(_) => "fail-at-step",
            MgmtFault::HalfApplyAtStep(_) => "half-apply-at-step",
            MgmtFault::Hang => "hang",
            MgmtFault::InstallFails => "install-fails",
            MgmtFault::StopFails => "stop-fails",
            MgmtFault::StartFailsAt(_) => "start-fails-at",
            MgmtFault::DiesSilently => "dies-silently",
            MgmtFault::DiskFull => "disk-full",
        }
    }

    fn content(self) -> String {
        match self {
            MgmtFault::FailAtStep(k) | MgmtFault::HalfApplyAtStep(k) => format!("{k}\n"),
            MgmtFault::StartFailsAt(v) => format!("{v}\n"),
            _ => String::new(),
        }
    }
}

/// How the last start of `cloudstack-management` went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MgmtStartup {
    /// Never started.
    NotStarted,
    /// Checking or migrating the database.
    Starting,
    /// Running at this version (the `mshost` row is Up, 8080 and 8250 listen).
    Up(String),
    /// The start failed; the reason in short (the log has the details).
    Failed(String),
    /// Stopped with `systemctl stop`.
    Stopped,
}

impl MgmtStartup {
    /// Whether the start is over (Up, failed or stopped).
    pub fn is_settled(&self) -> bool {
        !matches!(self, MgmtStartup::Starting)
    }
}

/// A row of `mshost`, as far as the lab reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsHostRow {
    /// `msid`.
    pub msid: u64,
    /// `name`.
    pub name: String,
    /// `state`: `Up`, `Down`, …
    pub state: String,
    /// `version`.
    pub version: Option<String>,
}

/// How a lab management server starts; see [`MgmtNode::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MgmtNodeBuilder {
    name: String,
    db: Option<(DbUrl, String, String)>,
    installed: String,
    offers: BTreeMap<String, Vec<String>>,
    java_major: Option<u32>,
    step_delay: Duration,
    msid: Option<u64>,
    running: bool,
    repo_base: String,
    family: LabFamily,
    usage: bool,
}

impl MgmtNodeBuilder {
    /// The lab database: server and user from `url` (its default schema is ignored), the
    /// `cloud` and `cloud_usage` schemas under these names. Without it, `db.properties` points
    /// at `127.0.0.1:3306` and starting the management service fails like a real one would.
    pub fn db(mut self, url: &DbUrl, cloud_schema: &str, usage_schema: &str) -> Self {
        self.db = Some((
            url.clone(),
            cloud_schema.to_string(),
            usage_schema.to_string(),
        ));
        self
    }

    /// The installed version of the three packages (default `4.18.0.0`).
    pub fn installed(mut self, version: &str) -> Self {
        self.installed = version.to_string();
        self
    }

    /// Versions the repository offers on release line `line` (`4.19`); adds to the installed
    /// version, which its own line always offers.
    pub fn offer(mut self, line: &str, versions: &[&str]) -> Self {
        let v = self.offers.entry(line.to_string()).or_default();
        v.extend(versions.iter().map(|s| s.to_string()));
        self
    }

    /// The major of the default `java` (default: what the installed release needs, 11 before
    /// 4.20, 17 from it).
    pub fn java_major(mut self, major: u32) -> Self {
        self.java_major = Some(major);
        self
    }

    /// How long each migration step pauses between its `Upgrade` and `Complete` rows (default
    /// 50 ms), so a watcher can see progress.
    pub fn step_delay(mut self, delay: Duration) -> Self {
        self.step_delay = delay;
        self
    }

    /// Scheme and host of the repository in `cloudstack.list` (default
    /// `https://download.cloudstack.org`; a lab [`crate::RepoServer`]'s URL serves the same
    /// trees).
    pub fn repo_base(mut self, base: &str) -> Self {
        self.repo_base = base.to_string();
        self
    }

    /// The package-manager family (default Debian: apt and `cloudstack.list`; EL: dnf,
    /// `/etc/yum.repos.d/cloudstack.repo` and the os-release of Rocky Linux 9).
    pub fn family(mut self, family: LabFamily) -> Self {
        self.family = family;
        self
    }

    /// Whether the node runs a usage server (default true). Without one it has no
    /// `cloudstack-usage` package, no `cloudstack-usage` unit (`systemctl stop
    /// cloudstack-usage` fails as systemd does), and no usage configuration, jars or log;
    /// installing the package later works as the package manager would, adding all of it.
    pub fn usage(mut self, usage: bool) -> Self {
        self.usage = usage;
        self
    }

    /// The management server id in `mshost.msid` (default: random, 48 bits like a MAC).
    pub fn msid(mut self, msid: u64) -> Self {
        self.msid = Some(msid);
        self
    }

    /// Start `cloudstack-management` (and `cloudstack-usage`, where the node has it) before
    /// returning, and wait (up to 30 s) until the management server is Up (default: stopped). The database must
    /// be at the installed version, or a migration must be prepared, which a builder cannot
    /// do: use [`MgmtNode::prepare_migration`] and [`MgmtNode::systemctl`] for that.
    pub fn running(mut self, running: bool) -> Self {
        self.running = running;
        self
    }

    /// Creates the node's directory and starts its sshd (and, with
    /// [`MgmtNodeBuilder::running`], its services).
    ///
    /// # Errors
    /// [`LabError::Start`] for an invalid name, schema or version, or a running start that
    /// does not come Up; [`LabError::MissingBinary`] naming `openssh-server` or
    /// `mariadb-client`; IO errors.
    pub fn start(self) -> Result<MgmtNode> {
        start(self)
    }
}

/// A simulated CloudStack management server (see the module docs). Its sshd and any start in
/// progress stop, and its directory goes, when it is dropped.
pub struct MgmtNode {
    // Field order: the server stops before the directory is removed.
    server: SshServer,
    name: String,
    msid: u64,
    db: Option<(DbUrl, String, String)>,
    root: PathBuf,
    bin: PathBuf,
    state: PathBuf,
    node: NodeDir,
}

impl fmt::Debug for MgmtNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MgmtNode")
            .field("name", &self.name)
            .field("msid", &self.msid)
            .field("dir", &self.node.path())
            .field("family", &self.node.family())
            .field("port", &self.server.port())
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, detail: impl Into<String>) -> LabError {
    LabError::Start {
        what: what.to_string(),
        detail: detail.into(),
    }
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    io(
        format!("link {}", link.display()),
        std::os::unix::fs::symlink(target, link),
    )
}

fn is_ident(s: &str, extra: &[char], max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
}

fn parse_version(what: &str, v: &str) -> Result<CsVersion> {
    CsVersion::parse(v).map_err(|e| invalid(what, e.to_string()))
}

/// The upstream version in a package version (`4.19.0.0-1` → `4.19.0.0`).
fn upstream(package_version: &str) -> &str {
    package_version
        .split_once('-')
        .map_or(package_version, |(u, _)| u)
}

fn padded(v: &CsVersion) -> String {
    let [a, b, c, d] = v.padded();
    format!("{a}.{b}.{c}.{d}")
}

/// The Java major a release needs (CHECKS.md `ms.java.compat`).
fn java_for(v: &CsVersion) -> u32 {
    if v.padded() >= [4, 20, 0, 0] { 17 } else { 11 }
}

/// `/etc/default/cloudstack-management` as the package of `v` ships it.
fn packaged_default(v: &CsVersion) -> String {
    let opens = if java_for(v) >= 17 {
        " --add-opens=java.base/java.lang=ALL-UNNAMED --add-exports=java.base/sun.security.x509=ALL-UNNAMED"
    } else {
        ""
    };
    format!(
        "# cs-lab: the environment file cloudstack-management ships\n\
         JAVA_OPTS=\"-Djava.security.properties=/etc/cloudstack/management/java.security.ciphers \
         -Djava.awt.headless=true -Dcom.sun.management.jmxremote=false -Xmx2G -XX:+UseParallelGC \
         -XX:MaxGCPauseMillis=500 -XX:+HeapDumpOnOutOfMemoryError \
         -XX:HeapDumpPath=/var/log/cloudstack/management/ \
         -XX:ErrorFile=/var/log/cloudstack/management/cloudstack-management.err{opens}\"\n\
         CLASSPATH=\"/usr/share/cloudstack-management/lib/*:/etc/cloudstack/management:\
         /usr/share/cloudstack-common:/usr/share/cloudstack-management/setup:\
         /usr/share/cloudstack-management:/usr/share/java/mysql-connector-java.jar\"\n\
         BOOTSTRAP_CLASS=org.apache.cloudstack.ServerDaemon\n"
    )
}

/// `log4j-cloud.xml` as the package of `v` ships it: Log4j 1 before 4.20, Log4j 2 from it.
fn packaged_log4j(v: &CsVersion) -> &'static str {
    if java_for(v) >= 17 {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Configuration monitorInterval=\"60\">\n</Configuration>\n"
    } else {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE log4j:configuration SYSTEM \"log4j.dtd\">\n\
         <log4j:configuration xmlns:log4j=\"http://jakarta.apache.org/log4j/\" debug=\"false\">\n\
         </log4j:configuration>\n"
    }
}

const SERVER_PROPERTIES: &str = "\
bind.interface=::
context.path=/client
http.enable=true
http.port=8080
https.enable=false
https.port=8443
https.keystore=/etc/cloudstack/management/cloud.jks
session.timeout=30
access.log=/var/log/cloudstack/management/access.log
";

/// The conffiles of version `v`, relative to the node's root.
fn packaged_files(v: &CsVersion) -> Vec<(&'static str, String)> {
    vec![
        ("etc/default/cloudstack-management", packaged_default(v)),
        (
            "etc/cloudstack/management/log4j-cloud.xml",
            packaged_log4j(v).to_string(),
        ),
        (
            "etc/cloudstack/management/server.properties",
            SERVER_PROPERTIES.to_string(),
        ),
    ]
}

fn db_properties(name: &str, db: Option<&(DbUrl, String, String)>) -> String {
    let (host, port, user, password, cloud, usage) = match db {
        Some((u, c, us)) => (
            u.host.as_str(),
            u.port,
            u.user.as_str(),
            u.password.expose(),
            c.as_str(),
            us.as_str(),
        ),
        None => ("127.0.0.1", 3306, "cloud", "cloud", "cloud", "cloud_usage"),
    };
    format!(
        "# cs-lab management server {name}: written as cloudstack-setup-databases leaves it\n\
         cluster.node.IP=127.0.0.1\n\
         cluster.servlet.port={SERVICE_PORT}\n\
         region.id=1\n\
         db.cloud.username={user}\n\
         db.cloud.password={password}\n\
         db.cloud.host={host}\n\
         db.cloud.driver=jdbc:mysql\n\
         db.cloud.port={port}\n\
         db.cloud.name={cloud}\n\
         db.cloud.uri=\n\
         db.cloud.connectionPoolLib=hikaricp\n\
         db.cloud.maxActive=250\n\
         db.cloud.maxIdle=30\n\
         db.cloud.maxWait=600000\n\
         db.cloud.validationQuery=/* ping */ SELECT 1\n\
         db.cloud.testOnBorrow=true\n\
         db.cloud.url.params=prepStmtCacheSize=517&cachePrepStmts=true&sessionVariables=sql_mode='STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'&serverTimezone=UTC\n\
         db.cloud.useSSL=false\n\
         db.cloud.encryption.type=none\n\
         db.cloud.encrypt.secret=\n\
         db.cloud.encryptor.version=\n\
         db.usage.username={user}\n\
         db.usage.password={password}\n\
         db.usage.host={host}\n\
         db.usage.driver=jdbc:mysql\n\
         db.usage.port={port}\n\
         db.usage.name={usage}\n\
         db.usage.connectionPoolLib=hikaricp\n\
         db.usage.maxActive=100\n"
    )
}

/// The `[client]` option file the stand-ins give the `mariadb` client.
fn client_options(db: Option<&(DbUrl, String, String)>) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    match db {
        Some((u, _, _)) => format!(
            "[client]\nhost=\"{}\"\nport={}\nuser=\"{}\"\npassword=\"{}\"\nprotocol=TCP\n",
            quote(&u.host),
            u.port,
            quote(&u.user),
            quote(u.password.expose())
        ),
        None => "[client]\nhost=127.0.0.1\nport=3306\nuser=cloud\nprotocol=TCP\n".to_string(),
    }
}

fn uuid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn start(b: MgmtNodeBuilder) -> Result<MgmtNode> {
    let what = "lab management server";
    if !is_ident(&b.name, &['-', '.'], 64) {
        return Err(invalid(
            what,
            format!("invalid name `{}` (letters, digits, `-`, `.`, `_`)", b.name),
        ));
    }
    if let Some((_, c, u)) = &b.db {
        for s in [c, u] {
            if !is_ident(s, &[], 64) {
                return Err(invalid(what, format!("invalid schema name `{s}`")));
            }
        }
    }
    // The stand-ins need the stock client on this machine.
    find_binary("mariadb", "mariadb-client")?;
    let installed = parse_version(what, &b.installed)?;
    let node = NodeDir::create("cs-lab-mgmt-", b.family)?;
    let (root, bin, st) = (
        node.root().to_path_buf(),
        node.bin().to_path_buf(),
        node.state().to_path_buf(),
    );
    let layout = Layout::default().rerooted(&root);
    let conf = &layout.management_conf_dir;
    let ver = installed.to_string();
    let line = installed.line();

    write(
        &layout.db_properties(),
        db_properties(&b.name, b.db.as_ref()),
        0o600,
    )?;
    write(&conf.join("key"), format!("{}\n", token(16)), 0o640)?;
    write(
        &conf.join("java.security.ciphers"),
        "jdk.tls.disabledAlgorithms=SSLv3, RC4, DES, MD5withRSA, DH keySize < 1024, 3DES_EDE_CBC\n",
        0o644,
    )?;
    write(
        &conf.join("environment.properties"),
        "paths.script=/usr/share/cloudstack-common\n",
        0o644,
    )?;
    for (rel, text) in packaged_files(&installed) {
        write(&root.join(rel), &text, 0o644)?;
    }
    if b.usage {
        write(
            &layout.default_file(USAGE_UNIT),
            "JAVA_OPTS=\"-Xms256m -Xmx2048m\"\nCLASSPATH=\"/usr/share/cloudstack-usage/lib/*:/etc/cloudstack/usage\"\nJAVA_CLASS=com.cloud.usage.UsageServer\n",
            0o644,
        )?;
        // The usage package links db.properties and key to the management ones (the spec's
        // %post usage; the deb's postinst does the same).
        io(
            "create usage conf dir",
            std::fs::create_dir_all(&layout.usage_conf_dir),
        )?;
        symlink(
            "../management/db.properties",
            &layout.usage_conf_dir.join("db.properties"),
        )?;
        symlink("../management/key", &layout.usage_conf_dir.join("key"))?;
        write(
            &layout.usage_conf_dir.join("log4j-cloud.xml"),
            packaged_log4j(&installed),
            0o644,
        )?;
        for j in ["usage", "utils"] {
            write(
                &layout.usage_lib_dir.join(format!("cloud-{j}-{ver}.jar")),
                "",
                0o644,
            )?;
        }
        write(&layout.usage_log(), "", 0o644)?;
    }
    node.write_repo(&b.repo_base, &line)?;
    for j in [
        "api",
        "server",
        "engine-schema",
        "utils",
        "plugin-hypervisor-kvm",
    ] {
        write(
            &layout
                .management_lib_dir
                .join(format!("cloud-{j}-{ver}.jar")),
            "",
            0o644,
        )?;
    }
    write(
        &layout
            .management_lib_dir
            .join("mysql-connector-java-8.0.33.jar"),
        "",
        0o644,
    )?;
    write(&layout.management_log(), "", 0o644)?;
    // MySQL's Python connector, which the database scripts import: a distribution package the
    // deb depends on (`python3-mysql.connector` in debian/control), a wheel the el8 package
    // carries and its %post installs with pip (packaging/el8/cloud.spec).
    match b.family {
        LabFamily::Deb => node.set_installed("python3-mysql.connector", "8.0.15-4")?,
        LabFamily::Rpm => write(
            &root.join(
                "usr/share/cloudstack-management/setup/wheel/mysql_connector_python-8.0.31-py2.py3-none-any.whl",
            ),
            "",
            0o644,
        )?,
    }

    for p in MGMT_PACKAGES {
        if *p != USAGE_UNIT || b.usage {
            node.set_installed(p, &ver)?;
        }
    }
    node.add_unit(MANAGEMENT_UNIT, "inactive")?;
    if b.usage {
        node.add_unit(USAGE_UNIT, "inactive")?;
    }
    let mut offers = b.offers.clone();
    let own = offers.entry(line.clone()).or_default();
    if !own.contains(&ver) {
        own.push(ver.clone());
    }
    let msid = b.msid.unwrap_or_else(|| rand::random::<u64>() >> 16);
    write(
        &st.join("mshost"),
        format!("{msid} {} {} 127.0.0.1 {SERVICE_PORT}\n", uuid(), b.name),
        0o644,
    )?;
    write(&st.join("db.cnf"), client_options(b.db.as_ref()), 0o600)?;
    write(
        &st.join("java_major"),
        format!("{}\n", b.java_major.unwrap_or_else(|| java_for(&installed))),
        0o644,
    )?;
    write(&st.join("owner_pid"), std::process::id().to_string(), 0o644)?;
    for sub in ["migrations", "pids", "packaged"] {
        io(
            format!("create state/{sub}"),
            std::fs::create_dir_all(st.join(sub)),
        )?;
    }
    node.install_standins(STANDIN, &[])?;
    let server = node.start_sshd()?;
    let node = MgmtNode {
        server,
        name: b.name.clone(),
        msid,
        db: b.db.clone(),
        root,
        bin,
        state: st,
        node,
    };
    for (l, versions) in &offers {
        let v: Vec<&str> = versions.iter().map(String::as_str).collect();
        node.offer(l, &v)?;
    }
    node.set_step_delay(b.step_delay)?;
    if b.running {
        node.systemctl("start", MANAGEMENT_UNIT)?;
        if b.usage {
            node.systemctl("start", USAGE_UNIT)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match node.startup() {
                MgmtStartup::Up(_) => break,
                MgmtStartup::Starting if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                MgmtStartup::Starting => {
                    return Err(LabError::Timeout {
                        what: format!("lab management server {} to come Up", node.name),
                    });
                }
                other => {
                    return Err(invalid(
                        "lab management server",
                        format!(
                            "{} did not come Up: {other:?}; {}",
                            node.name,
                            node.log_tail()
                        ),
                    ));
                }
            }
        }
    }
    Ok(node)
}

impl MgmtNode {
    /// Options for a node named `name` (`mgmt1`): Debian, installed 4.18.0.0 with the usage
    /// server, no database, services stopped.
    pub fn builder(name: impl Into<String>) -> MgmtNodeBuilder {
        MgmtNodeBuilder {
            name: name.into(),
            db: None,
            installed: "4.18.0.0".into(),
            offers: BTreeMap::new(),
            java_major: None,
            step_delay: Duration::from_millis(50),
            msid: None,
            running: false,
            repo_base: crate::kvm::OFFICIAL_REPO.into(),
            family: LabFamily::Deb,
            usage: true,
        }
    }

    /// The node's name (also its `mshost.name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `mshost.msid`.
    pub fn msid(&self) -> u64 {
        self.msid
    }

    /// Its package-manager family.
    pub fn family(&self) -> LabFamily {
        self.node.family()
    }

    /// Whether the node has the usage server: `cloudstack-usage` is installed (a node built
    /// with `usage(false)` gets it by installing the package).
    pub fn has_usage(&self) -> bool {
        self.node.installed(USAGE_UNIT).is_some()
    }

    /// The re-rooted filesystem: give it to `Layout::rerooted` (or use [`MgmtNode::layout`]).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The stand-ins' directory.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The stand-ins' state directory (see the module docs), for inspection.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// CloudStack's default layout re-rooted at [`MgmtNode::root`].
    pub fn layout(&self) -> Layout {
        Layout::default().rerooted(&self.root)
    }

    /// The node's sshd.
    pub fn ssh(&self) -> &SshServer {
        &self.server
    }

    /// The cloud schema named in `db.properties`, when the node has a database.
    pub fn cloud_schema(&self) -> Option<&str> {
        self.db.as_ref().map(|(_, c, _)| c.as_str())
    }

    /// A hosts-file line for it: `root@127.0.0.1:PORT role=management root=DIR`.
    pub fn hosts_line(&self) -> String {
        format!(
            "root@{} role=management root={}",
            self.server.addr(),
            self.root.display()
        )
    }

    /// Connects over SSH (root, the lab key, strict host-key checking), named after the node.
    ///
    /// # Errors
    /// What the SSH connection returns.
    pub async fn connect(&self) -> std::result::Result<SshHost, HostError> {
        self.server
            .host_builder()
            .name(self.name.clone())
            .connect()
            .await
    }

    /// Connects over SSH as the lab's operator account ([`crate::operator`], not root),
    /// running everything as root through sudo with its password, named after the node.
    ///
    /// # Errors
    /// [`HostError::Connect`] when the operator account cannot be set up; what the SSH
    /// connection returns.
    pub async fn connect_as_operator(&self) -> std::result::Result<SshHost, HostError> {
        let builder = self
            .server
            .sudo_host_builder()
            .map_err(|e| HostError::Connect {
                host: self.name.clone(),
                addr: self.server.addr().to_string(),
                source: Box::new(e),
            })?;
        builder.name(self.name.clone()).connect().await
    }

    /// This machine acting as the node: commands run locally with the stand-ins first in
    /// `PATH`, files are this machine's (use the re-rooted layout).
    pub fn local_host(&self) -> Arc<dyn Host> {
        self.node.local_host(&self.name)
    }

    /// The installed version of a package, as the stand-in package manager records it (an EL
    /// node's is version-release, `4.19.0.0-1`).
    pub fn installed(&self, package: &str) -> Option<String> {
        self.node.installed(package)
    }

    /// The installed version of `cloudstack-management`.
    pub fn installed_version(&self) -> Option<CsVersion> {
        CsVersion::parse(upstream(&self.installed(MANAGEMENT_UNIT)?)).ok()
    }

    /// A unit's state as `systemctl is-active` prints it: `active`, `inactive` or `failed`
    /// (`inactive` for a unit the node does not have).
    pub fn service_state(&self, unit: &str) -> String {
        self.node.service_state(unit)
    }

    /// Whether a unit is active.
    pub fn service_active(&self, unit: &str) -> bool {
        self.service_state(unit) == "active"
    }

    /// How the last start of `cloudstack-management` went.
    pub fn startup(&self) -> MgmtStartup {
        let text = std::fs::read_to_string(self.state.join("startup")).unwrap_or_default();
        let text = text.trim();
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match word {
            "starting" => MgmtStartup::Starting,
            "up" => MgmtStartup::Up(rest.to_string()),
            "failed" => MgmtStartup::Failed(rest.to_string()),
            "stopped" => MgmtStartup::Stopped,
            _ => MgmtStartup::NotStarted,
        }
    }

    /// Waits until the start in progress is over, polling every 25 ms.
    ///
    /// # Errors
    /// [`LabError::Timeout`] when it is still starting after `timeout`.
    pub async fn wait_settled(&self, timeout: Duration) -> Result<MgmtStartup> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.startup();
            if s.is_settled() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "lab management server {} to finish starting ({})",
                        self.name,
                        self.log_tail()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `management-server.log` so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.layout().management_log()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Every `systemctl` call on the node that changed something (start, stop, restart, …, the
    /// package scripts' included), one per line (`restart cloudstack-management`).
    pub fn systemctl_log(&self) -> Vec<String> {
        self.node.systemctl_log()
    }

    /// Runs the node's `systemctl` stand-in here (`start`, `stop`, `restart`) for a unit, as a
    /// test's setup would; a start returns before the database check finishes (see
    /// [`MgmtNode::wait_settled`]). Blocks briefly.
    ///
    /// # Errors
    /// [`LabError::Start`] with the stand-in's message when it fails; IO errors.
    pub fn systemctl(&self, verb: &str, unit: &str) -> Result<()> {
        let out = self.node.run("systemctl", &[verb, unit])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(invalid(
                &format!("systemctl {verb} {unit} on {}", self.name),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    /// Prepares what starting the management server at `to` runs on a database at `from`:
    /// `steps` are the schema steps in order, `(class, upgraded version)`, as cs-schema's path
    /// gives them (`("Upgrade41800to41900", 4.19.0.0)`). As CloudStack does, a `NoopDbUpgrade`
    /// step to `to` is added at run time when the last step stops short of it. Replaces an
    /// earlier preparation for the same pair.
    ///
    /// # Errors
    /// [`LabError::Start`] for a class name that is not a Java identifier of letters, digits
    /// and `_`; IO errors.
    pub fn prepare_migration(
        &self,
        from: &CsVersion,
        to: &CsVersion,
        steps: &[(String, CsVersion)],
    ) -> Result<()> {
        let mut text = String::new();
        for (class, v) in steps {
            let valid =
                is_ident(class, &[], 59) && class.starts_with(|c: char| c.is_ascii_alphabetic());
            if !valid {
                return Err(invalid(
                    &format!("migration {from} -> {to} on {}", self.name),
                    format!("invalid step class `{class}`"),
                ));
            }
            text.push_str(&format!("{class} {v}\n"));
        }
        write(
            &self
                .state
                .join("migrations")
                .join(format!("{}_{}", padded(from), padded(to))),
            text,
            0o644,
        )
    }

    /// Turns a fault on (a [`MgmtFault::FailAtStep`] replaces an earlier one's step).
    ///
    /// # Errors
    /// IO errors.
    pub fn inject(&self, fault: MgmtFault) -> Result<()> {
        self.node.set_fault(fault.file(), &fault.content())
    }

    /// Turns a fault off (the step number of a step fault does not matter).
    ///
    /// # Errors
    /// IO errors other than "already off".
    pub fn clear(&self, fault: MgmtFault) -> Result<()> {
        self.node.clear_fault(fault.file())
    }

    /// Turns every fault off.
    ///
    /// # Errors
    /// IO errors.
    pub fn clear_faults(&self) -> Result<()> {
        for f in [
            MgmtFault::FailAtStep(0),
            MgmtFault::HalfApplyAtStep(0),
            MgmtFault::Hang,
            MgmtFault::InstallFails,
            MgmtFault::StopFails,
            MgmtFault::StartFailsAt(CsVersion::new3(0, 0, 0)),
            MgmtFault::DiesSilently,
            MgmtFault::DiskFull,
        ] {
            self.clear(f)?;
        }
        Ok(())
    }

    /// Sets the major of the default `java`.
    ///
    /// # Errors
    /// IO errors.
    pub fn set_java_major(&self, major: u32) -> Result<()> {
        write(&self.state.join("java_major"), format!("{major}\n"), 0o644)
    }

    /// Sets the pause of each migration step.
    ///
    /// # Errors
    /// IO errors.
    pub fn set_step_delay(&self, delay: Duration) -> Result<()> {
        write(
            &self.state.join("step_delay"),
            format!("{:.3}\n", delay.as_secs_f64()),
            0o644,
        )
    }

    /// Makes the repository offer `versions` on release line `line` (replacing what it
    /// offered there); `apt-get update` after pointing `cloudstack.list` at the line makes them
    /// installable (dnf fetches a line's metadata once `cloudstack.repo` points at it).
    ///
    /// # Errors
    /// [`LabError::Start`] for a version that does not parse; IO errors.
    pub fn offer(&self, line: &str, versions: &[&str]) -> Result<()> {
        if !is_ident(line, &['.'], 16) {
            return Err(invalid("lab repository", format!("invalid line `{line}`")));
        }
        let mut text = String::new();
        for v in versions {
            let parsed = parse_version("lab repository", v)?;
            for (rel, content) in packaged_files(&parsed) {
                write(
                    &self.state.join("packaged").join(v).join(rel),
                    content,
                    0o644,
                )?;
            }
            text.push_str(v);
            text.push('\n');
        }
        write(&self.state.join("repo").join(line), text, 0o644)
    }

    fn conn(&self) -> Result<mysql::Conn> {
        let (url, cloud, _) = self.db.as_ref().ok_or_else(|| {
            invalid(
                "lab management server database",
                format!("{} was built without .db(…)", self.name),
            )
        })?;
        url.with_database(cloud).connect()
    }

    fn has_mshost(conn: &mut mysql::Conn) -> Result<bool> {
        let found: Option<String> = conn
            .query_first("SHOW TABLES LIKE 'mshost'")
            .map_err(db_err("look for the mshost table"))?;
        Ok(found.is_some())
    }

    /// Creates this node's `mshost` row (state `Down`, the installed version), if the cloud
    /// schema has an `mshost` table; an existing row keeps its state. Returns whether the
    /// table exists. Blocking: from async code, call it in `spawn_blocking`/`block_in_place`.
    ///
    /// # Errors
    /// [`LabError::Start`] without a database; [`LabError::Database`].
    pub fn register_mshost(&self) -> Result<bool> {
        let mut conn = self.conn()?;
        if !Self::has_mshost(&mut conn)? {
            return Ok(false);
        }
        let text = std::fs::read_to_string(self.state.join("mshost")).unwrap_or_default();
        let uuid = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        conn.exec_drop(
            "INSERT INTO `mshost` (`msid`, `runid`, `name`, `uuid`, `state`, `version`, \
             `service_ip`, `service_port`, `last_update`, `removed`, `alert_count`) \
             VALUES (?, 0, ?, ?, 'Down', ?, '127.0.0.1', ?, UTC_TIMESTAMP(), NULL, 0) \
             ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)",
            (
                self.msid,
                &self.name,
                uuid,
                self.installed(MANAGEMENT_UNIT)
                    .map(|v| upstream(&v).to_string()),
                SERVICE_PORT,
            ),
        )
        .map_err(db_err("insert the mshost row"))?;
        Ok(true)
    }

    /// This node's `mshost` row, if the table and the row exist. Blocking (see
    /// [`MgmtNode::register_mshost`]).
    ///
    /// # Errors
    /// [`LabError::Start`] without a database; [`LabError::Database`].
    pub fn mshost(&self) -> Result<Option<MsHostRow>> {
        let mut conn = self.conn()?;
        if !Self::has_mshost(&mut conn)? {
            return Ok(None);
        }
        let row: Option<(u64, Option<String>, String, Option<String>)> = conn
            .exec_first(
                "SELECT `msid`, `name`, `state`, `version` FROM `mshost` WHERE `msid` = ?",
                (self.msid,),
            )
            .map_err(db_err("read the mshost row"))?;
        Ok(row.map(|(msid, name, state, version)| MsHostRow {
            msid,
            name: name.unwrap_or_default(),
            state,
            version,
        }))
    }
}

fn db_err(what: &'static str) -> impl FnOnce(mysql::Error) -> LabError {
    move |e| LabError::Database {
        what: what.to_string(),
        source: Box::new(e),
    }
}

impl Drop for MgmtNode {
    fn drop(&mut self) {
        // A start in progress runs in its own session: stop its whole process group.
        let Ok(entries) = std::fs::read_dir(self.state.join("pids")) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let pid = text.trim();
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(7).any(|w| w == b"standin"));
            if ours {
                let _ = command(Path::new("/bin/kill"))
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_properties_carry_the_keys_cloudstack_writes() {
        let url = DbUrl::new("127.0.0.1", 3307, "cloud", cs_core::Secret::new("pw"));
        let text = db_properties("m1", Some(&(url, "c1".into(), "u1".into())));
        for want in [
            "db.cloud.host=127.0.0.1\n",
            "db.cloud.port=3307\n",
            "db.cloud.username=cloud\n",
            "db.cloud.password=pw\n",
            "db.cloud.name=c1\n",
            "db.usage.name=u1\n",
        ] {
            assert!(text.contains(want), "{want}");
        }
        assert!(text.contains("serverTimezone=UTC"));
    }

    #[test]
    fn java_17_releases_ship_add_opens() {
        let v = |s: &str| CsVersion::parse(s).unwrap();
        assert!(!packaged_default(&v("4.19.0.0")).contains("--add-opens"));
        assert!(packaged_default(&v("4.20.0.0")).contains("--add-opens"));
        assert_eq!(padded(&v("4.2.0")), "4.2.0.0");
        assert_eq!(
            migration_table("Upgrade41800to41900"),
            "lab_upgrade41800to41900"
        );
    }

    #[test]
    fn option_file_quotes_the_password() {
        let url = DbUrl::new("h", 1, "u", cs_core::Secret::new("a\"b\\c"));
        let text = client_options(Some(&(url, "c".into(), "u".into())));
        assert!(text.contains("password=\"a\\\"b\\\\c\"\n"), "{text}");
    }
}
