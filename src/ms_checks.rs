//! Management-server checks of CHECKS.md (`ms.*`, `net.ms.ports`), read through a `Host`.
//!
//! Each check reads files and runs read-only commands (`java -version`, `dpkg-query`, `ss`);
//! none changes anything. Before the upgrade (`Phase::Pre`) expectations that only the new
//! packages can meet are information; after it (`Phase::Post`) they fail.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use cs_core::{Check, CheckError, Cmd, CsVersion, Finding, Host, HostExt, Layout, Severity};

/// Before or after the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Pre-flight: the node still runs the old release.
    Pre,
    /// Post-flight: the node should run the target release.
    Post,
}

/// What the management-server checks look at.
#[derive(Debug, Clone)]
pub struct MsContext {
    /// The node.
    pub host: Arc<dyn Host>,
    /// Where its files are.
    pub layout: Layout,
    /// The release being upgraded to.
    pub target: CsVersion,
    /// The Java major the target needs (11 for 4.14–4.19, 17 from 4.20).
    pub java_major: u32,
    /// Before or after.
    pub phase: Phase,
}

impl MsContext {
    fn subject(&self, what: &str) -> String {
        format!("{}:{what}", self.host.name())
    }

    /// Severity of an unmet expectation that only the target's packages can meet.
    fn post_only(&self) -> Severity {
        match self.phase {
            Phase::Pre => Severity::Info,
            Phase::Post => Severity::Fail,
        }
    }
}

/// Every management-server check, in report order.
pub fn ms_checks() -> Vec<Box<dyn Check<MsContext>>> {
    vec![
        Box::new(JavaCompat),
        Box::new(ConfigDrift),
        Box::new(DbProperties),
        Box::new(JarsConsistent),
        Box::new(Heap),
        Box::new(Ports),
    ]
}

/// `JAVA_OPTS` from an `/etc/default/cloudstack-*` file (last assignment wins; quotes removed).
fn java_opts(default_file: &str) -> Option<String> {
    default_file
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.strip_prefix("export ")
                .unwrap_or(l)
                .strip_prefix("JAVA_OPTS=")
        })
        .next_back()
        .map(|v| v.trim_matches(['"', '\'']).to_string())
}

/// `-Xmx` in bytes (`-Xmx2G`, `-Xmx2048m`).
fn xmx_bytes(opts: &str) -> Option<u64> {
    let v = opts
        .split_whitespace()
        .find_map(|w| w.strip_prefix("-Xmx"))?;
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    Some(n * mult)
}

async fn read_opt_text(host: &dyn Host, path: &Path) -> Result<Option<String>, CheckError> {
    Ok(host
        .read_opt(path)
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

#[derive(Debug)]
struct JavaCompat;

#[async_trait]
impl Check<MsContext> for JavaCompat {
    fn id(&self) -> &str {
        "ms.java.compat"
    }

    async fn run(&self, cx: &MsContext) -> Result<Vec<Finding>, CheckError> {
        let mut out = Vec::new();
        let java = cx.host.run(&Cmd::new("java").arg("-version")).await;
        let text = match java {
            Ok(o) => format!("{}{}", o.stderr_lossy(), o.stdout_lossy()),
            Err(e) => format!("java cannot run: {}", cs_core::error_chain(&e)),
        };
        let subject = cx.subject("java");
        match cs_agent::packages::parse_java_major(&text) {
            Some(m) if m == cx.java_major => out.push(Finding::pass(
                self.id(),
                &subject,
                format!("default java is {m}, as {} needs", cx.target),
            )),
            Some(m) => out.push(
                Finding::new(
                    self.id(),
                    if m < cx.java_major { Severity::Fail } else { cx.post_only() },
                    &subject,
                    format!(
                        "default java is {m}; {} needs Java {} (UnsupportedClassVersionError otherwise)",
                        cx.target, cx.java_major
                    ),
                )
                .with_remedy(format!(
                    "install openjdk-{0}-jre-headless and select it: update-alternatives --config java",
                    cx.java_major
                )),
            ),
            None => out.push(
                Finding::new(
                    self.id(),
                    Severity::Fail,
                    &subject,
                    format!("cannot tell the Java version: {}", text.trim()),
                )
                .with_remedy(format!("install openjdk-{}-jre-headless", cx.java_major)),
            ),
        }
        if cx.java_major >= 17 {
            let path = cx.layout.default_file("cloudstack-management");
            let opts = read_opt_text(cx.host.as_ref(), &path)
                .await?
                .and_then(|t| java_opts(&t))
                .unwrap_or_default();
            let subject = cx.subject(&path.display().to_string());
            if opts.contains("--add-opens") || opts.contains("--add-exports") {
                out.push(Finding::pass(
                    self.id(),
                    subject,
                    "JAVA_OPTS carry --add-opens/--add-exports for Java 17",
                ));
            } else {
                out.push(
                    Finding::new(
                        self.id(),
                        cx.post_only(),
                        subject,
                        "JAVA_OPTS carry no --add-opens/--add-exports, which Java 17 needs",
                    )
                    .with_remedy(
                        "merge the packaged file (.dpkg-dist / .rpmnew) into /etc/default/cloudstack-management",
                    ),
                );
            }
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct ConfigDrift;

pub(crate) const DRIFT_SUFFIXES: [&str; 5] = [
    ".rpmnew",
    ".rpmsave",
    ".dpkg-dist",
    ".dpkg-old",
    ".dpkg-new",
];

#[async_trait]
impl Check<MsContext> for ConfigDrift {
    fn id(&self) -> &str {
        "ms.config.drift"
    }

    async fn run(&self, cx: &MsContext) -> Result<Vec<Finding>, CheckError> {
        let mut out = Vec::new();
        let dirs = [
            cx.layout.management_conf_dir.clone(),
            cx.layout.usage_conf_dir.clone(),
            cx.layout.default_dir.clone(),
        ];
        for dir in &dirs {
            let entries = match cx.host.list_dir(dir).await {
                Ok(e) => e,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for e in entries {
                let in_scope = dir != &cx.layout.default_dir || e.name.starts_with("cloudstack-");
                if in_scope && DRIFT_SUFFIXES.iter().any(|s| e.name.ends_with(s)) {
                    out.push(
                        Finding::new(
                            self.id(),
                            Severity::Warn,
                            cx.subject(&dir.join(&e.name).display().to_string()),
                            "an unmerged package config file sits beside the live one",
                        )
                        .with_remedy("diff it with the live file, merge what is needed, remove it"),
                    );
                }
            }
        }
        // The management server's and the usage server's log4j-cloud.xml: both are config files
        // of their packages (packaging/el8/cloud.spec installs client/target/conf/log4j-cloud.xml
        // to /etc/cloudstack/management and usage/target/transformed/log4j-cloud_usage.xml to
        // /etc/cloudstack/usage/log4j-cloud.xml), so an operator's changed copy survives the
        // upgrade in the old syntax.
        for dir in [&cx.layout.management_conf_dir, &cx.layout.usage_conf_dir] {
            if let Some(f) = log4j_finding(
                cx.host.as_ref(),
                &dir.join("log4j-cloud.xml"),
                cx.target,
                cx.post_only(),
                self.id(),
                cx.host.name(),
            )
            .await?
            {
                out.push(f);
            }
        }
        if out.is_empty() {
            out.push(Finding::pass(
                self.id(),
                cx.subject("config"),
                "no unmerged package config files",
            ));
        }
        Ok(out)
    }
}

/// The finding for a `log4j-cloud.xml` in Log4j 1 syntax when `target` (4.20+) reads Log4j 2
/// (4.20 moved every CloudStack service to Log4j 2, apache/cloudstack#7131), with `severity`;
/// `None` when the file is absent, the target older, or the file already Log4j 2.
pub(crate) async fn log4j_finding(
    host: &dyn Host,
    path: &Path,
    target: CsVersion,
    severity: Severity,
    id: &str,
    node: &str,
) -> Result<Option<Finding>, CheckError> {
    if target.padded() < [4, 20, 0, 0] {
        return Ok(None);
    }
    let Some(text) = read_opt_text(host, path).await? else {
        return Ok(None);
    };
    if !text.contains("log4j:configuration") {
        return Ok(None);
    }
    Ok(Some(
        Finding::new(
            id,
            severity,
            format!("{node}:{}", path.display()),
            format!("log4j-cloud.xml is Log4j 1 syntax; {target} reads Log4j 2"),
        )
        .with_remedy("take the packaged log4j-cloud.xml and re-apply local changes"),
    ))
}

#[derive(Debug)]
struct DbProperties;

#[async_trait]
impl Check<MsContext> for DbProperties {
    fn id(&self) -> &str {
        "ms.db.properties"
    }

    async fn run(&self, cx: &MsContext) -> Result<Vec<Finding>, CheckError> {
        let path = cx.layout.db_properties();
        let subject = cx.subject(&path.display().to_string());
        let meta = match cx.host.stat(&path).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => {
                return Ok(vec![
                    Finding::new(
                        self.id(),
                        Severity::Fail,
                        subject,
                        "db.properties is missing",
                    )
                    .with_remedy("restore it from the config backup"),
                ]);
            }
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8_lossy(&cx.host.read(&path).await?).into_owned();
        let mut out = Vec::new();
        if meta.mode & crate::hardening::TOO_OPEN != 0 {
            out.push(
                Finding::new(
                    self.id(),
                    Severity::Warn,
                    &subject,
                    format!(
                        "db.properties has mode {:04o}: it holds the database password",
                        meta.mode
                    ),
                )
                .with_remedy(format!("chmod 600 {}", path.display())),
            );
        }
        let params = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("db.cloud.url.params="))
            .unwrap_or("");
        if !params.contains("serverTimezone=UTC") {
            out.push(
                Finding::new(
                    self.id(),
                    Severity::Warn,
                    &subject,
                    "db.cloud.url.params lacks serverTimezone=UTC (needed since 4.14)",
                )
                .with_remedy("append &serverTimezone=UTC to db.cloud.url.params"),
            );
        }
        if text.contains("NO_AUTO_CREATE_USER") {
            out.push(
                Finding::new(
                    self.id(),
                    Severity::Warn,
                    &subject,
                    "sessionVariables set NO_AUTO_CREATE_USER, which MySQL 8 rejects",
                )
                .with_remedy("remove NO_AUTO_CREATE_USER from the sql_mode in db.cloud.url.params"),
            );
        }
        if out.is_empty() {
            out.push(Finding::pass(
                self.id(),
                subject,
                "db.properties is private, with serverTimezone=UTC",
            ));
        }
        Ok(out)
    }
}

/// `cloud-server-4.18.0.0.jar` → (`cloud-server`, `4.18.0.0`).
pub(crate) fn split_jar(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".jar")?;
    if !stem.starts_with("cloud-") {
        return None;
    }
    let idx = stem
        .match_indices('-')
        .map(|(i, _)| i)
        .find(|&i| stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()))?;
    Some((&stem[..idx], &stem[idx + 1..]))
}

#[derive(Debug)]
struct JarsConsistent;

#[async_trait]
impl Check<MsContext> for JarsConsistent {
    fn id(&self) -> &str {
        "ms.jars.consistent"
    }

    async fn run(&self, cx: &MsContext) -> Result<Vec<Finding>, CheckError> {
        let mut out = Vec::new();
        for dir in [&cx.layout.management_lib_dir, &cx.layout.usage_lib_dir] {
            let entries = match cx.host.list_dir(dir).await {
                Ok(e) => e,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let mut versions = std::collections::BTreeMap::<String, Vec<String>>::new();
            for e in &entries {
                if let Some((_, v)) = split_jar(&e.name) {
                    versions
                        .entry(v.to_string())
                        .or_default()
                        .push(e.name.clone());
                }
            }
            let subject = cx.subject(&dir.display().to_string());
            match versions.len() {
                0 => {}
                1 => out.push(Finding::pass(
                    self.id(),
                    subject,
                    format!(
                        "one version of cloud-*.jar ({})",
                        versions.keys().next().map_or("", |v| v)
                    ),
                )),
                _ => out.push(
                    Finding::new(
                        self.id(),
                        Severity::Fail,
                        subject,
                        format!(
                            "cloud-*.jar of several versions: {}",
                            versions
                                .iter()
                                .map(|(v, j)| format!("{v} ({} jars, e.g. {})", j.len(), j[0]))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .with_remedy("remove the jars of the old version and reinstall the package"),
                ),
            }
        }
        if out.is_empty() {
            out.push(Finding::new(
                self.id(),
                Severity::Skip,
                cx.subject("lib"),
                "no CloudStack lib directory on this node",
            ));
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct Heap;

#[async_trait]
impl Check<MsContext> for Heap {
    fn id(&self) -> &str {
        "ms.heap"
    }

    async fn run(&self, cx: &MsContext) -> Result<Vec<Finding>, CheckError> {
        let path = cx.layout.default_file("cloudstack-management");
        let subject = cx.subject(&path.display().to_string());
        let Some(opts) = read_opt_text(cx.host.as_ref(), &path)
            .await?
            .and_then(|t| java_opts(&t))
        else {
            return Ok(vec![Finding::new(
                self.id(),
                Severity::Info,
                subject,
                "no JAVA_OPTS found; the JVM picks its default heap",
            )]);
        };
        let meminfo = read_opt_text(cx.host.as_ref(), Path::new("/proc/meminfo"))
            .await?
            .unwrap_or_default();
        let mem = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024);
        let finding = match (xmx_bytes(&opts), mem) {
            (Some(x), Some(m)) if x > m * 3 / 4 => Finding::new(
                self.id(),
                Severity::Info,
                subject,
                format!(
                    "-Xmx is {} MiB of {} MiB RAM: little left for the OS and page cache",
                    x >> 20,
                    m >> 20
                ),
            )
            .with_remedy("keep -Xmx at or below half the RAM on a dedicated management server"),
            (Some(x), Some(m)) => Finding::new(
                self.id(),
                Severity::Info,
                subject,
                format!("-Xmx is {} MiB of {} MiB RAM", x >> 20, m >> 20),
            ),
            (Some(x), None) => Finding::new(
                self.id(),
                Severity::Info,
                subject,
                format!("-Xmx is {} MiB (RAM unknown)", x >> 20),
            ),
            (None, _) => Finding::new(self.id(), Severity::Info, subject, "JAVA_OPTS set no -Xmx"),
        };
        Ok(vec![finding])
    }
}

#[derive(Debug)]
struct Ports;

/// Ports a management server listens on: the API (8080, 8443) and the agents' (8250).
const MS_PORTS: [(u16, &str); 3] = [
    (8080, "API (HTTP)"),
    (8443, "API (HTTPS)"),
    (8250, "agents"),
];

/// Listening TCP sockets in `ss -Hltn` output: the local address (`*`, `0.0.0.0`, `[::]`,
/// `127.0.0.1`, with any `%interface` kept) and the port.
pub(crate) fn listening_sockets(ss_output: &str) -> Vec<(String, u16)> {
    ss_output
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| {
            let (addr, port) = local.rsplit_once(':')?;
            Some((addr.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// Listening TCP ports in `ss -Hltn` output.
pub(crate) fn listening_ports(ss_output: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = listening_sockets(ss_output)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[async_trait]
impl Check<MsContext> for Ports {
    fn id(&self) -> &str {
        "net.ms.ports"
    }

    async fn run(&self, cx: &MsContext) -> Result<Vec<Finding>, CheckError> {
        let out = cx
            .host
            .run_ok(&Cmd::new("ss").args(["-H", "-l", "-t", "-n"]))
            .await?;
        let listening = listening_ports(&out.stdout_lossy());
        // 8443 is optional (HTTPS may be off); 8080 and 8250 are required after the upgrade.
        Ok(MS_PORTS
            .iter()
            .map(|(port, what)| {
                let subject = cx.subject(&format!("tcp/{port}"));
                if listening.contains(port) {
                    Finding::pass(self.id(), subject, format!("listening on {port} ({what})"))
                } else {
                    let sev = if *port == 8443 { Severity::Info } else { cx.post_only() };
                    Finding::new(self.id(), sev, subject, format!("nothing listens on {port} ({what})"))
                        .with_remedy("check that cloudstack-management runs: systemctl status cloudstack-management")
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cs_core::fake::{self, FakeHost};

    fn cx(host: FakeHost, target: &str, phase: Phase) -> MsContext {
        let target: CsVersion = target.parse().unwrap();
        MsContext {
            host: Arc::new(host),
            layout: Layout::default(),
            java_major: if target >= "4.20.0.0".parse().unwrap() {
                17
            } else {
                11
            },
            target,
            phase,
        }
    }

    async fn run(check: &dyn Check<MsContext>, cx: &MsContext) -> Vec<(Severity, String)> {
        check
            .run(cx)
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.severity, f.message))
            .collect()
    }

    fn java(version: &'static str) -> FakeHost {
        FakeHost::new("mgmt1").on("java", move |_, _| {
            fake::exit(
                0,
                format!("openjdk version \"{version}\" 2025-04-15\nOpenJDK Runtime\n"),
            )
        })
    }

    #[test]
    fn java_majors_parse_from_both_schemes() {
        assert_eq!(
            cs_agent::packages::parse_java_major("openjdk version \"17.0.15\" 2025"),
            Some(17)
        );
        assert_eq!(
            cs_agent::packages::parse_java_major("java version \"1.8.0_392\""),
            Some(8)
        );
        assert_eq!(
            cs_agent::packages::parse_java_major("openjdk version \"11\" 2018-09-25"),
            Some(11)
        );
        assert_eq!(
            cs_agent::packages::parse_java_major("bash: java: not found"),
            None
        );
    }

    #[tokio::test]
    async fn java_too_old_fails_and_17_needs_add_opens_after_the_upgrade() {
        let c = cx(java("11.0.2"), "4.20.0.0", Phase::Pre);
        let r = run(&JavaCompat, &c).await;
        assert_eq!(r[0].0, Severity::Fail, "{r:?}");
        assert!(r[0].1.contains("needs Java 17"));

        let host = java("17.0.15").with_file(
            "/etc/default/cloudstack-management",
            "JAVA_OPTS=\"-Xmx2G -Djava.awt.headless=true\"\n",
        );
        let post = cx(host, "4.20.0.0", Phase::Post);
        let r = run(&JavaCompat, &post).await;
        assert_eq!(r[0].0, Severity::Pass);
        assert_eq!(r[1].0, Severity::Fail, "{r:?}");

        let host = java("17.0.15").with_file(
            "/etc/default/cloudstack-management",
            "JAVA_OPTS=\"-Xmx2G --add-opens=java.base/java.lang=ALL-UNNAMED\"\n",
        );
        let r = run(&JavaCompat, &cx(host, "4.20.0.0", Phase::Post)).await;
        assert!(r.iter().all(|(s, _)| *s == Severity::Pass), "{r:?}");
    }

    #[tokio::test]
    async fn unmerged_package_files_are_reported() {
        let host = FakeHost::new("mgmt1")
            .with_file("/etc/cloudstack/management/db.properties", "x")
            .with_file("/etc/cloudstack/management/db.properties.dpkg-dist", "y")
            .with_file("/etc/default/cloudstack-management.rpmnew", "z")
            .with_file("/etc/default/grub.dpkg-old", "not ours")
            .with_file(
                "/etc/cloudstack/management/log4j-cloud.xml",
                "<log4j:configuration/>",
            );
        let r = run(&ConfigDrift, &cx(host, "4.20.0.0", Phase::Post)).await;
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r.iter().all(|(s, _)| *s >= Severity::Warn));
        let clean = FakeHost::new("mgmt1").with_dir("/etc/cloudstack/management");
        let r = run(&ConfigDrift, &cx(clean, "4.19.0.0", Phase::Pre)).await;
        assert_eq!(
            r,
            [(
                Severity::Pass,
                "no unmerged package config files".to_string()
            )]
        );
    }

    #[tokio::test]
    async fn the_usage_servers_log4j_follows_the_same_rule() {
        let log4j1 = "<!DOCTYPE log4j:configuration SYSTEM \"log4j.dtd\">\n<log4j:configuration/>";
        let host = || {
            FakeHost::new("mgmt1")
                .with_file(
                    "/etc/cloudstack/management/log4j-cloud.xml",
                    "<Configuration/>",
                )
                .with_file("/etc/cloudstack/usage/log4j-cloud.xml", log4j1)
        };
        let r = run(&ConfigDrift, &cx(host(), "4.20.0.0", Phase::Post)).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0, Severity::Fail);
        let f = ConfigDrift
            .run(&cx(host(), "4.20.0.0", Phase::Pre))
            .await
            .unwrap();
        assert_eq!(f[0].severity, Severity::Info);
        assert!(
            f[0].subject
                .ends_with("/etc/cloudstack/usage/log4j-cloud.xml"),
            "{f:?}"
        );
        // Before 4.20 the old syntax is what the release reads.
        let r = run(&ConfigDrift, &cx(host(), "4.19.0.0", Phase::Post)).await;
        assert_eq!(r[0].0, Severity::Pass, "{r:?}");
    }

    #[tokio::test]
    async fn db_properties_mode_timezone_and_sql_mode() {
        let path = "/etc/cloudstack/management/db.properties";
        let bad = FakeHost::new("mgmt1").with_file_mode(
            path,
            "db.cloud.url.params=prepStmtCacheSize=517&sessionVariables=sql_mode='NO_AUTO_CREATE_USER'\n",
            0o644,
        );
        let r = run(&DbProperties, &cx(bad, "4.19.0.0", Phase::Pre)).await;
        assert_eq!(r.len(), 3, "{r:?}");
        let good = FakeHost::new("mgmt1").with_file_mode(
            path,
            "db.cloud.url.params=prepStmtCacheSize=517&serverTimezone=UTC\n",
            0o600,
        );
        let r = run(&DbProperties, &cx(good, "4.19.0.0", Phase::Pre)).await;
        assert_eq!(r[0].0, Severity::Pass);
        let missing = FakeHost::new("mgmt1");
        let r = run(&DbProperties, &cx(missing, "4.19.0.0", Phase::Pre)).await;
        assert_eq!(r[0].0, Severity::Fail);
    }

    #[tokio::test]
    async fn mixed_jar_versions_fail() {
        let lib = "/usr/share/cloudstack-management/lib";
        let host = FakeHost::new("mgmt1")
            .with_file(format!("{lib}/cloud-server-4.18.0.0.jar"), "")
            .with_file(format!("{lib}/cloud-api-4.18.0.0.jar"), "")
            .with_file(format!("{lib}/cloud-server-4.19.0.0.jar"), "")
            .with_file(format!("{lib}/mysql-connector-java-8.0.jar"), "");
        let r = run(&JarsConsistent, &cx(host, "4.19.0.0", Phase::Post)).await;
        assert_eq!(r[0].0, Severity::Fail);
        assert!(
            r[0].1.contains("4.18.0.0 (2 jars") && r[0].1.contains("4.19.0.0 (1 jars"),
            "{r:?}"
        );
        assert_eq!(
            split_jar("cloud-plugin-hypervisor-kvm-4.19.0.0.jar"),
            Some(("cloud-plugin-hypervisor-kvm", "4.19.0.0"))
        );
        assert_eq!(split_jar("commons-io-2.8.jar"), None);
    }

    #[tokio::test]
    async fn heap_is_measured_against_ram() {
        let host = FakeHost::new("mgmt1")
            .with_file(
                "/etc/default/cloudstack-management",
                "JAVA_OPTS=\"-Xms1G -Xmx6g\"\n",
            )
            .with_file(
                "/proc/meminfo",
                "MemTotal:        8000000 kB\nMemFree: 1 kB\n",
            );
        let r = run(&Heap, &cx(host, "4.19.0.0", Phase::Pre)).await;
        assert_eq!(r[0].0, Severity::Info);
        assert!(
            r[0].1
                .contains("-Xmx is 6144 MiB of 7812 MiB RAM: little left"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn ports_fail_only_after_the_upgrade() {
        let ss = "LISTEN 0 50 *:8080 *:*\nLISTEN 0 4096 127.0.0.1:22 0.0.0.0:*\n";
        let mk = || FakeHost::new("mgmt1").on("ss", move |_, _| fake::ok(ss));
        let pre = run(&Ports, &cx(mk(), "4.19.0.0", Phase::Pre)).await;
        assert_eq!(
            pre.iter().map(|r| r.0).collect::<Vec<_>>(),
            [Severity::Pass, Severity::Info, Severity::Info]
        );
        let post = run(&Ports, &cx(mk(), "4.19.0.0", Phase::Post)).await;
        assert_eq!(post[2].0, Severity::Fail);
        assert_eq!(listening_ports("LISTEN 0 5 [::]:8250 [::]:*\n"), [8250]);
    }
}
