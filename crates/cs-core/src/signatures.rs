//! Log lines that tell what went wrong in an upgrade, with their cause and remedy
//! (CHECKS.md, "Log signatures").

use serde::Serialize;

/// Which log a signature appears in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LogKind {
    /// `/var/log/cloudstack/management/management-server.log`.
    ManagementServer,
    /// `/var/log/cloudstack/agent/agent.log`.
    Agent,
    /// `/var/log/cloudstack/usage/usage.log`.
    Usage,
}

/// A known failure line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogSignature {
    /// Stable id (`db.upgrade.failed`).
    pub id: &'static str,
    /// The log it appears in.
    pub log: LogKind,
    /// The text the line contains (case-sensitive, as CloudStack writes it).
    pub needle: &'static str,
    /// What it means.
    pub cause: &'static str,
    /// What to do.
    pub remedy: &'static str,
    /// Whether it means a schema migration failed (the orchestrator rolls back on these).
    pub fails_migration: bool,
}

/// Every signature the tools recognise.
pub const SIGNATURES: &[LogSignature] = &[
    LogSignature {
        id: "db.upgrade.failed",
        log: LogKind::ManagementServer,
        needle: "Unable to upgrade the database",
        cause: "a schema upgrade step failed; the database may be half-upgraded (a version row left in `Upgrade`)",
        remedy: "stop every management server, restore the database backup taken before the upgrade, fix the error logged just before this line (often a duplicate column from an earlier half-applied step), then retry",
        fails_migration: true,
    },
    LogSignature {
        id: "db.cleanup.failed",
        log: LogKind::ManagementServer,
        needle: "Unable to cleanup the database",
        cause: "the cleanup script of an upgrade step failed after its upgrade script ran",
        remedy: "restore the database backup and read the SQL error logged before this line",
        fails_migration: true,
    },
    LogSignature {
        id: "db.script.failed",
        log: LogKind::ManagementServer,
        needle: "Unable to execute upgrade script",
        cause: "an upgrade SQL script failed; the lines that follow name the statement",
        remedy: "restore the database backup; check sql_mode, server version support and custom schema changes",
        fails_migration: true,
    },
    LogSignature {
        id: "db.version.higher",
        log: LogKind::ManagementServer,
        needle: "is higher than management software version",
        cause: "the database is newer than the installed packages (a downgrade, or packages of mixed versions)",
        remedy: "install the package version that matches the database, or restore the backup that matches the packages",
        fails_migration: true,
    },
    LogSignature {
        id: "db.version.incomplete",
        log: LogKind::ManagementServer,
        needle: "Version table contains records for which upgrade wasn't completed",
        cause: "an earlier upgrade stopped half-way: a `cloud.version` row is not `Complete`",
        remedy: "restore the backup taken before that upgrade; do not edit the version table by hand",
        fails_migration: true,
    },
    LogSignature {
        id: "db.encryptors",
        log: LogKind::ManagementServer,
        needle: "Unable to initialize the database encryptors",
        cause: "the encryption key or db.properties do not match the database (`key` file replaced or lost)",
        remedy: "restore /etc/cloudstack/management/key and db.properties from the config backup",
        fails_migration: true,
    },
    LogSignature {
        id: "java.class.version",
        log: LogKind::ManagementServer,
        needle: "java.lang.UnsupportedClassVersionError",
        cause: "the default Java is older than the release needs (Java 17 from 4.20, 11 for 4.14 to 4.19)",
        remedy: "install the Java the release needs and select it with update-alternatives --config java",
        fails_migration: true,
    },
    // The operator's manual names these three lines ("Unable to migrate database",
    // "Authentication Failed", "Version Mismatch"). UNCONFIRMED: neither the page of
    // apache/cloudstack-documentation nor the class of apache/cloudstack that writes each one
    // was found in the indexed text (source/adminguide/troubleshooting.rst has none of them);
    // causes and remedies follow the failures of apache/cloudstack#3826, #3856 and #3883 (a
    // JDBC driver the schema migration cannot use) and the version rule of
    // `agent.version.match`.
    LogSignature {
        id: "db.migrate.failed",
        log: LogKind::ManagementServer,
        needle: "Unable to migrate database",
        cause: "the schema migration at start-up failed (a JDBC driver CloudStack cannot use, #3826/#3856/#3883, or a SQL step that failed)",
        remedy: "stop every management server, restore the database backup, check the JDBC connector and the SQL error logged before this line, then retry",
        fails_migration: true,
    },
    LogSignature {
        id: "db.auth.failed",
        log: LogKind::ManagementServer,
        needle: "Authentication Failed",
        cause: "a login the management server makes was refused: the database user of db.properties (password or its encryption key changed by the upgrade) or a host's credentials",
        remedy: "compare db.properties and the key file with the config backup; check the cloud user's grants and the host credentials",
        fails_migration: false,
    },
    LogSignature {
        id: "ms.version.mismatch",
        log: LogKind::ManagementServer,
        needle: "Version Mismatch",
        cause: "an agent or peer management server runs another CloudStack version than this management server",
        remedy: "upgrade every management server and every KVM agent to the same version (preflight --post: cluster.same.version, agent.version.match)",
        fails_migration: false,
    },
    LogSignature {
        id: "agent.version.mismatch",
        log: LogKind::Agent,
        needle: "Version Mismatch",
        cause: "the agent's version differs from the management server's, which refuses the connection",
        remedy: "install cloudstack-agent at the management server's version on this host and restart it",
        fails_migration: false,
    },
    // The usage server (cloudstack-usage) reads the same db.properties and runs on the same Java
    // as the management server (packaging/el8/cloud.spec: `%package usage`, java-17-openjdk).
    LogSignature {
        id: "usage.class.version",
        log: LogKind::Usage,
        needle: "java.lang.UnsupportedClassVersionError",
        cause: "the usage server's Java is older than the release needs",
        remedy: "install the Java the release needs, select it with update-alternatives --config java, restart cloudstack-usage",
        fails_migration: false,
    },
    LogSignature {
        id: "usage.auth.failed",
        log: LogKind::Usage,
        needle: "Authentication Failed",
        cause: "the usage server could not log in to the database with /etc/cloudstack/usage/db.properties",
        remedy: "compare the usage server's db.properties and key with the management server's (the config backup has both)",
        fails_migration: false,
    },
    LogSignature {
        id: "usage.db.encryptors",
        log: LogKind::Usage,
        needle: "Unable to initialize the database encryptors",
        cause: "the usage server's key or db.properties do not match the database",
        remedy: "restore /etc/cloudstack/usage/db.properties and its key from the config backup",
        fails_migration: false,
    },
    LogSignature {
        id: "agent.ssl.handshake",
        log: LogKind::Agent,
        needle: "SSLHandshakeException",
        cause: "the agent and the management server do not trust each other's certificates",
        remedy: "check cloud.jks and keystore.passphrase in /etc/cloudstack/agent; re-provision with provisionCertificate if needed",
        fails_migration: false,
    },
    LogSignature {
        id: "agent.keystore.load",
        log: LogKind::Agent,
        needle: "Failed to load keystore",
        cause: "cloud.jks is missing, unreadable or does not open with keystore.passphrase",
        remedy: "restore /etc/cloudstack/agent from the snapshot taken before the refresh",
        fails_migration: false,
    },
    LogSignature {
        id: "agent.keystore.passphrase",
        log: LogKind::Agent,
        needle: "Failed to find keystore passphrase",
        cause: "keystore.passphrase is missing from agent.properties (a package overwrote the file)",
        remedy: "restore keystore.passphrase in agent.properties from the snapshot, then restart the agent",
        fails_migration: false,
    },
    LogSignature {
        id: "agent.cert.ownership",
        log: LogKind::Agent,
        needle: "Certificate ownership verification failed",
        cause: "the agent's certificate does not name this host's address",
        remedy: "re-provision the host's certificate (provisionCertificate) after checking its IP addresses",
        fails_migration: false,
    },
];

/// One recognised line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogMatch {
    /// The signature.
    pub signature: &'static LogSignature,
    /// 1-based line number in the text scanned.
    pub line_no: usize,
    /// The line, trimmed.
    pub line: String,
}

/// Finds the signatures of `kind` in `text`, in line order.
///
/// ```
/// use cs_core::{LogKind, scan_log};
/// let log = "INFO ok\nERROR Unable to upgrade the database\n";
/// let m = scan_log(log, LogKind::ManagementServer);
/// assert_eq!((m[0].signature.id, m[0].line_no), ("db.upgrade.failed", 2));
/// ```
pub fn scan_log(text: &str, kind: LogKind) -> Vec<LogMatch> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            SIGNATURES
                .iter()
                .filter(|s| s.log == kind)
                .find(|s| line.contains(s.needle))
                .map(|signature| LogMatch {
                    signature,
                    line_no: i + 1,
                    line: line.trim().to_string(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_is_found_only_in_its_own_log() {
        for s in SIGNATURES {
            let text = format!("2026-01-01 ERROR [c.c.u.X] (main:null) {} here\n", s.needle);
            let own = scan_log(&text, s.log);
            assert_eq!(own.len(), 1, "{}", s.id);
            assert_eq!(own[0].signature.id, s.id);
            let other = match s.log {
                LogKind::Agent => LogKind::Usage,
                _ => LogKind::Agent,
            };
            assert!(
                scan_log(&text, other)
                    .iter()
                    .all(|m| m.signature.id != s.id),
                "{}",
                s.id
            );
        }
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = SIGNATURES.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SIGNATURES.len());
    }

    #[test]
    fn the_manuals_strings_are_known() {
        for (line, kind, id) in [
            (
                "ERROR Unable to migrate database",
                LogKind::ManagementServer,
                "db.migrate.failed",
            ),
            (
                "WARN Authentication Failed for user",
                LogKind::ManagementServer,
                "db.auth.failed",
            ),
            (
                "ERROR Version Mismatch",
                LogKind::Agent,
                "agent.version.mismatch",
            ),
            (
                "ERROR Authentication Failed",
                LogKind::Usage,
                "usage.auth.failed",
            ),
        ] {
            assert_eq!(scan_log(line, kind)[0].signature.id, id, "{line}");
        }
    }

    #[test]
    fn the_version_line_matches_with_its_numbers() {
        let l = "Database version 4.19.0.0 is higher than management software version 4.18.0.0";
        let m = scan_log(l, LogKind::ManagementServer);
        assert_eq!(m[0].signature.id, "db.version.higher");
        assert!(m[0].signature.fails_migration);
    }
}
