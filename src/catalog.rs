//! The list of checks: every id `preflight` (and the upgrade's gate) runs, with its severity,
//! what it reads, what it verifies and the real failures it prevents. `preflight --list` prints
//! it; `docs/CHECKS.md` holds the same table, kept in step by a unit test; `--skip` and
//! `policy.skip_checks` may name only these ids ([`check_skips`]).

use std::fmt::Write as _;

/// One check as the list describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInfo {
    /// The stable id (`db.version.sane`).
    pub id: &'static str,
    /// The severity it reports when its condition fails (`FAIL`, `FAIL (post) / INFO (pre)`).
    pub severity: &'static str,
    /// What it reads.
    pub reads: &'static str,
    /// What it verifies.
    pub verifies: &'static str,
    /// The crate it lives in.
    pub krate: &'static str,
    /// The real failures (apache/cloudstack issues, log lines) it prevents.
    pub prevents: &'static str,
}

/// Check ids given to skip that no check has, each with the nearest known id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no check has the id(s) {}", describe(.0))]
pub struct UnknownCheckIds(pub Vec<(String, Option<&'static str>)>);

fn describe(unknown: &[(String, Option<&'static str>)]) -> String {
    unknown
        .iter()
        .map(|(id, near)| match near {
            Some(n) => format!("{id} (did you mean {n}?)"),
            None => id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known id closest to `id`: the shortest one it begins, else the one at the smallest edit
/// distance (at most a third of its length, at least 3), if any.
pub fn nearest_check_id(id: &str) -> Option<&'static str> {
    if let Some(c) = CATALOG
        .iter()
        .filter(|c| !id.is_empty() && c.id.starts_with(id))
        .min_by_key(|c| c.id.len())
    {
        return Some(c.id);
    }
    let limit = (id.len() / 3).max(3);
    CATALOG
        .iter()
        .map(|c| (strsim::levenshtein(id, c.id), c.id))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// Checks that every id in `ids` is a check's.
///
/// # Errors
/// [`UnknownCheckIds`] naming each unknown id and the nearest known one.
pub fn check_skips<S: AsRef<str>>(ids: &[S]) -> Result<(), UnknownCheckIds> {
    let unknown: Vec<(String, Option<&'static str>)> = ids
        .iter()
        .map(AsRef::as_ref)
        .filter(|id| !CATALOG.iter().any(|c| c.id == *id))
        .map(|id| (id.to_string(), nearest_check_id(id)))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(UnknownCheckIds(unknown))
    }
}

/// The list as the Markdown table of docs/CHECKS.md (header included).
pub fn list_table() -> String {
    let mut s = String::from(
        "| id | sev | reads | what it verifies | crate | real failures it prevents |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in CATALOG {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            c.id, c.severity, c.reads, c.verifies, c.krate, c.prevents
        );
    }
    s
}

/// Every check id with what `preflight --list` and docs/CHECKS.md say about it, in report order.
pub const CATALOG: &[CheckInfo] = &[
    CheckInfo {
        id: "db.reachable",
        severity: "FAIL",
        reads: "a connection with `[database]`",
        verifies: "the database answers with the configured credentials",
        krate: "cs-upgrade",
        prevents: "—",
    },
    CheckInfo {
        id: "db.version.sane",
        severity: "FAIL",
        reads: "`cloud.version`",
        verifies: "newest `cloud.version` row is `Complete`; no row stuck in `Upgrade`; DB version <= target; a path exists in the target release's hierarchy",
        krate: "cs-schema",
        prevents: "#7358 (half-applied step, `Duplicate column 'public_mtu'`), #3843, #6608",
    },
    CheckInfo {
        id: "db.version.path",
        severity: "INFO",
        reads: "`cloud.version`, the target's upgrade hierarchy",
        verifies: "the step list the target release will run, with Noop tails and re-run steps for unregistered patch versions",
        krate: "cs-schema",
        prevents: "planning",
    },
    CheckInfo {
        id: "db.routines.present",
        severity: "FAIL",
        reads: "`information_schema.ROUTINES`",
        verifies: "the stored procedures CloudStack relies on exist in `cloud` (`ADD_GUEST_OS_AND_HYPERVISOR_MAPPING`, the `idempotent_*` ones, per version)",
        krate: "cs-schema",
        prevents: "#8546 (dump without `-R` lost procedures)",
    },
    CheckInfo {
        id: "db.usage.present",
        severity: "FAIL",
        reads: "`information_schema.SCHEMATA`, `SHOW GRANTS`",
        verifies: "`cloud_usage` exists and the `cloud` user has grants on both schemas",
        krate: "cs-schema",
        prevents: "#6074",
    },
    CheckInfo {
        id: "db.server.compat",
        severity: "FAIL",
        reads: "`VERSION()`, `@@GLOBAL.sql_mode`",
        verifies: "server vendor and version within the target's support (MySQL 8 needs >= 4.15; MariaDB >= 10.6 for 4.20+); `@@GLOBAL.sql_mode` without `ONLY_FULL_GROUP_BY`",
        krate: "cs-schema",
        prevents: "#10048, #4549, #5175",
    },
    CheckInfo {
        id: "db.nics.update_time",
        severity: "WARN",
        reads: "`information_schema.COLUMNS`",
        verifies: "on MySQL 5.7.34+/8, `cloud.nics.update_time` defaults to `CURRENT_TIMESTAMP`",
        krate: "cs-schema",
        prevents: "docs mysql.rst, #6247",
    },
    CheckInfo {
        id: "db.customisations",
        severity: "WARN",
        reads: "`cloud.guest_os*` rows",
        verifies: "user-defined rows in `guest_os`, `guest_os_hypervisor`, `guest_os_details`, `guest_os_category`",
        krate: "cs-schema",
        prevents: "#5685, #2740, #3609",
    },
    CheckInfo {
        id: "db.size",
        severity: "INFO",
        reads: "`information_schema.TABLES`",
        verifies: "rows and bytes per big table (`vm_stats`, `event`, `usage_event`, `cloud_usage.*`) with an estimate of backup time",
        krate: "cs-schema",
        prevents: "#11103, slow first start",
    },
    CheckInfo {
        id: "db.schema.half_applied",
        severity: "FAIL",
        reads: "`information_schema.TABLES`, `information_schema.COLUMNS`, `cloud.version`",
        verifies: "no table or column a later schema version creates (markers read from the upgrade SQL of 4.18.0.0, 4.19.0.0 and 4.20.0.0) is present in a database whose version row is older: DDL of a step ran without its version row",
        krate: "cs-schema",
        prevents: "#7358 (`Duplicate column name 'public_mtu'`)",
    },
    CheckInfo {
        id: "db.backup.complete",
        severity: "FAIL (post)",
        reads: "the run's backup directory (`manifest.json`, its files)",
        verifies: "the backup a rollback restores has its manifest and every file verifies (INFO without a run)",
        krate: "cs-backup",
        prevents: "#8546, a rollback from a broken backup",
    },
    CheckInfo {
        id: "cluster.quiesced",
        severity: "FAIL",
        reads: "`cloud.mshost`, the service units",
        verifies: "no other `mshost` row is Up; management and usage services stopped on every management server (checked where the upgrade needs it quiet)",
        krate: "cs-schema",
        prevents: "#11973, #12140",
    },
    CheckInfo {
        id: "cluster.same.version",
        severity: "FAIL",
        reads: "`dpkg-query`/`rpm -q` of `cloudstack-management`, `-common`, `-usage` on every management server",
        verifies: "every management server has its CloudStack packages at one version; after the upgrade, at the target",
        krate: "cs-upgrade",
        prevents: "#12140, `Database version X is higher than management software version Y`",
    },
    CheckInfo {
        id: "systemvm.templates.ready",
        severity: "FAIL",
        reads: "`cloud.vm_template`, `template_store_ref`, `cloud.host`",
        verifies: "for each hypervisor type in use, the template the target expects (by name, of any type: the guide registers it as a USER template and the upgrade makes it SYSTEM) is registered, Active and on every zone's image store, or the bundled template for auto-registration is present; INFO when `[policy.system_template]` makes the run register it and wait for it",
        krate: "cs-schema",
        prevents: "#3614, #3647, #5041, #12077, #6166",
    },
    CheckInfo {
        id: "node.reachable",
        severity: "FAIL",
        reads: "an SSH session to each node",
        verifies: "every configured node and every KVM host CloudStack lists opens an SSH session",
        krate: "cs-upgrade",
        prevents: "—",
    },
    CheckInfo {
        id: "node.os.supported",
        severity: "WARN",
        reads: "`/etc/os-release`, `/boot`, `uname -r`",
        verifies: "`/etc/os-release` in the target's supported list; running kernel equal to the newest installed one",
        krate: "cs-agent",
        prevents: "install guide prerequisites",
    },
    CheckInfo {
        id: "node.privileges",
        severity: "FAIL",
        reads: "`id -u`, `sudo -n -l`",
        verifies: "root, or passwordless sudo for every command the upgrade runs",
        krate: "cs-agent",
        prevents: "install guide prerequisites",
    },
    CheckInfo {
        id: "node.resources",
        severity: "INFO",
        reads: "`/proc/cpuinfo`, `/proc/meminfo`",
        verifies: "CPU and RAM against the install guide's recommendations",
        krate: "cs-agent",
        prevents: "install guide specifications",
    },
    CheckInfo {
        id: "node.disk.free",
        severity: "FAIL",
        reads: "`df -Pk` of the backup directory, `/var/lib/mysql` (database node), `/usr/share/cloudstack-*`, `/var/cache/apt` or `/var/cache/dnf`",
        verifies: "free space: the databases' size + 256 MiB for the backup; the biggest table + 256 MiB for the data directory; 1 GiB for each package directory and package cache",
        krate: "cs-upgrade",
        prevents: "backups and package installs that fail half-way on a full disk",
    },
    CheckInfo {
        id: "ms.java.compat",
        severity: "FAIL",
        reads: "`java -version`, `/etc/default/cloudstack-*`",
        verifies: "default `java` major matches the target (11 for 4.14–4.19, 17 for 4.20+); `JAVA_OPTS` carry the `--add-opens`/`--add-exports` 17 needs",
        krate: "cs-upgrade",
        prevents: "#11074, #10960, `UnsupportedClassVersionError`",
    },
    CheckInfo {
        id: "ms.config.drift",
        severity: "WARN",
        reads: "`/etc/cloudstack/{management,usage}`, `/etc/default`, `log4j-cloud.xml`",
        verifies: "no unmerged `.rpmnew`/`.rpmsave`/`.dpkg-dist`/`.dpkg-old` beside CloudStack configs; the management and usage servers' `log4j-cloud.xml` is Log4j2 for 4.20+",
        krate: "cs-upgrade",
        prevents: "#9983, #10665, #10565",
    },
    CheckInfo {
        id: "ms.db.properties",
        severity: "WARN",
        reads: "`/etc/cloudstack/management/db.properties`",
        verifies: "`db.properties` has `serverTimezone=UTC` (4.14+), no `NO_AUTO_CREATE_USER` on MySQL 8, mode 0600",
        krate: "cs-upgrade",
        prevents: "docs _timezone.rst, #4549",
    },
    CheckInfo {
        id: "ms.jars.consistent",
        severity: "FAIL",
        reads: "`/usr/share/cloudstack-*/lib`",
        verifies: "one version of `cloud-*.jar` in each CloudStack lib directory",
        krate: "cs-upgrade",
        prevents: "#6794, #11604, #2542",
    },
    CheckInfo {
        id: "ms.heap",
        severity: "INFO",
        reads: "`/etc/default/cloudstack-management`, `/proc/meminfo`",
        verifies: "`-Xmx` in `/etc/default/cloudstack-management` against RAM",
        krate: "cs-upgrade",
        prevents: "GC pauses",
    },
    CheckInfo {
        id: "ms.deps",
        severity: "FAIL",
        reads: "`java -version`, `/usr/share/cloudstack-management/lib`, `/etc/default/cloudstack-management`, `python3-mysql.connector` (deb) or the el8 package's `mysql_connector_python` wheel",
        verifies: "a `java` that runs; a MySQL JDBC driver (bundled since 4.14, or the system `mysql-connector-java.jar` on the CLASSPATH; the system 8.0.19+ one before 4.14 fails); MySQL's Python connector",
        krate: "cs-upgrade",
        prevents: r#"#3826, #3856, #3883 ("Unable to upgrade the database"), #7108"#,
    },
    CheckInfo {
        id: "net.ms.ports",
        severity: "FAIL (post) / INFO (pre)",
        reads: "`ss -ltn`, a TCP connect to the database",
        verifies: "8080/8443 and 8250 listening on each management server; the database port reachable from it",
        krate: "cs-upgrade",
        prevents: "install guide specifications",
    },
    CheckInfo {
        id: "repo.target.configured",
        severity: "FAIL",
        reads: "the apt/yum/zypper repository files",
        verifies: "after rewriting, every CloudStack repository entry points at the target line; no duplicate `.list` + `.sources` for one repository",
        krate: "cs-repo",
        prevents: "#9935",
    },
    CheckInfo {
        id: "repo.target.resolvable",
        severity: "FAIL",
        reads: "`apt-cache madison` / `dnf list --showduplicates`",
        verifies: "the target repository's index offers the target `cloudstack-management` / `cloudstack-agent` version",
        krate: "cs-repo",
        prevents: r#"#9935 ("No packages marked for update")"#,
    },
    CheckInfo {
        id: "hosts.known",
        severity: "FAIL",
        reads: "`listHosts`, `[[hosts]]`",
        verifies: "every `[[hosts]]` name is a KVM host CloudStack lists",
        krate: "cs-upgrade",
        prevents: "—",
    },
    CheckInfo {
        id: "hosts.excluded",
        severity: "WARN",
        reads: "`[[hosts]]` (`exclude`)",
        verifies: "names the KVM hosts `exclude`d from the upgrade (their agents stay at the old version)",
        krate: "cs-upgrade",
        prevents: "—",
    },
    CheckInfo {
        id: "agent.keystore",
        severity: "FAIL (per host)",
        reads: "`/etc/cloudstack/agent` (`cloud.jks`, `cloud.crt`, `agent.properties`)",
        verifies: "`cloud.jks` present and readable, `keystore.passphrase` in `agent.properties` opens it, `cloud.crt` not expired nor expiring within 30 days",
        krate: "cs-agent",
        prevents: "#4659, #12493, #6716, #8707",
    },
    CheckInfo {
        id: "agent.jars.consistent",
        severity: "FAIL (per host)",
        reads: "`/usr/share/cloudstack-agent/lib`",
        verifies: "one version of `cloud-*.jar` in `/usr/share/cloudstack-agent/lib`",
        krate: "cs-agent",
        prevents: "#6794, #11604",
    },
    CheckInfo {
        id: "agent.cacerts",
        severity: "INFO",
        reads: "`keytool -list` of the JVM `cacerts`",
        verifies: "non-default aliases in the JVM `cacerts` that a Java upgrade would drop",
        krate: "cs-agent",
        prevents: "#9250",
    },
    CheckInfo {
        id: "agent.version.match",
        severity: "FAIL (post) / INFO (pre)",
        reads: "the agent package, `listHosts.version`",
        verifies: "each host's agent version (package and `listHosts.version`) equals the target",
        krate: "cs-agent",
        prevents: r#""Version Mismatch""#,
    },
    CheckInfo {
        id: "agent.properties.intact",
        severity: "FAIL (post, per host)",
        reads: "`agent.properties` and the agent refresh's snapshot of it",
        verifies: "`guid`, `local.storage.uuid`, `host`, `zone`, `pod`, `cluster`, `keystore.passphrase` unchanged by the package upgrade (INFO without a snapshot)",
        krate: "cs-agent",
        prevents: "keys overwritten → `SSLHandshakeException`, a host that reconnects as a new one",
    },
    CheckInfo {
        id: "agent.config.drift",
        severity: "WARN (INFO pre / FAIL post for log4j)",
        reads: "`/etc/cloudstack/agent`",
        verifies: "no unmerged package config file beside the agent's; `log4j-cloud.xml` is Log4j2 for 4.20+",
        krate: "cs-upgrade",
        prevents: "#10665, #9983",
    },
    CheckInfo {
        id: "net.agent.reach",
        severity: "FAIL (per host)",
        reads: "`agent.properties` (`host`), a TCP connect to 8250",
        verifies: "each KVM host opens TCP to every management server on 8250",
        krate: "cs-agent",
        prevents: "agent heartbeat, packet loss",
    },
    CheckInfo {
        id: "net.libvirt.tls",
        severity: "WARN (per host)",
        reads: "`ss -ltn`, `/etc/pki`",
        verifies: "libvirtd listens on 16514 with its TLS certificates present",
        krate: "cs-agent",
        prevents: "install guide specifications",
    },
    CheckInfo {
        id: "net.mtu",
        severity: "WARN",
        reads: "`agent.properties` (bridges), `ip -o link show`",
        verifies: "the MTU of each bridge equal across the hosts of a cluster and within 1500–9000",
        krate: "cs-agent",
        prevents: "storage and guest traffic dropped between hosts after a migration",
    },
    CheckInfo {
        id: "agents.maintenance.capacity",
        severity: "FAIL",
        reads: "`listHosts`, `listVirtualMachines`",
        verifies: r#"with `policy.agent_refresh = "maintenance"`: each host's running VMs fit on the other Up hosts of its cluster"#,
        krate: "cs-upgrade",
        prevents: "evacuation that cannot finish (`ErrorInMaintenance`)",
    },
    CheckInfo {
        id: "rehearsal.recent",
        severity: "FAIL",
        reads: "the rehearsal records under the backup directory",
        verifies: "with `[policy.rehearsal] within = \"7d\"`: a rehearsal of the target's schema migration on a scratch copy (`rehearse`) passed within the window",
        krate: "cs-upgrade",
        prevents: "#7358, #3843, #5685, #2740, #5175, #10048, #8546 (found on a copy days ahead)",
    },
    CheckInfo {
        id: "api.reachable",
        severity: "FAIL",
        reads: "a signed `listCapabilities`",
        verifies: "the API answers signed requests",
        krate: "cs-upgrade",
        prevents: "—",
    },
    CheckInfo {
        id: "api.ms.up",
        severity: "FAIL (post)",
        reads: "`listManagementServers`",
        verifies: "`listManagementServers`: every server Up, at the target version (`PreparingToShutDown`/`PreparingForShutDown` both understood)",
        krate: "cs-api",
        prevents: "#13009",
    },
    CheckInfo {
        id: "api.hosts.up",
        severity: "FAIL (post)",
        reads: "`listHosts`",
        verifies: "every Routing host `Up` and `Enabled` within a deadline; a per-host table otherwise",
        krate: "cs-api",
        prevents: "#13009, #3820",
    },
    CheckInfo {
        id: "api.systemvms.running",
        severity: "FAIL (post)",
        reads: "`listSystemVms`, `listRouters`",
        verifies: "SSVM / CPVM Running with the target template version; routers needing upgrade listed",
        krate: "cs-api",
        prevents: "#6826, #6497, #12934",
    },
    CheckInfo {
        id: "api.firewall",
        severity: "WARN",
        reads: "TCP connects to 8080 / 8096, `integration.api.port`",
        verifies: "8080 / 8096 not reachable from outside trusted subnets (8096, the unauthenticated integration port, must be 0)",
        krate: "cs-api",
        prevents: "hardening, sysvmadm docs",
    },
    CheckInfo {
        id: "api.inventory.unchanged",
        severity: "FAIL (post)",
        reads: "`listVirtualMachines`, `listHosts`, `listEvents`, `inventory-before.json` of the run",
        verifies: "every VM that ran before the run still runs, on the same host, unless CloudStack's events explain the difference (against `inventory-before.json` of the run; INFO without one)",
        krate: "cs-api",
        prevents: "VM → host mapping lost",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/CHECKS.md's first table is exactly [`list_table`].
    #[test]
    fn the_doc_table_is_the_catalog() {
        let doc = include_str!("../docs/CHECKS.md");
        let section = doc
            .split("## Run by `preflight`")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/CHECKS.md has the `Run by preflight` section");
        let table: String = section
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            table,
            list_table(),
            "regenerate docs/CHECKS.md's table from the catalog"
        );
    }

    /// The catalog names exactly the ids pre-flight knows, each once.
    #[test]
    fn the_catalog_is_every_check_id() {
        let mut ids: Vec<String> = CATALOG.iter().map(|c| c.id.to_string()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(n, ids.len(), "an id is listed twice");
        assert_eq!(ids, crate::check_ids());
    }

    #[test]
    fn unknown_ids_name_the_nearest_known_one() {
        assert!(check_skips(&["db.version.sane", "net.mtu"]).is_ok());
        let err = check_skips(&["db.version.sain", "completely.different.thing"]).unwrap_err();
        assert_eq!(
            err.0,
            [
                ("db.version.sain".to_string(), Some("db.version.sane")),
                ("completely.different.thing".to_string(), None),
            ]
        );
        assert_eq!(
            err.to_string(),
            "no check has the id(s) db.version.sain (did you mean db.version.sane?), completely.different.thing"
        );
        assert_eq!(nearest_check_id("node.disk"), Some("node.disk.free"));
    }
}
