//! `diagnose`: read CloudStack's logs through a `Host`, find the known failure lines and say
//! cause and remedy for each, with the lines.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cs_core::{Cmd, Finding, Host, HostExt, LogKind, Report, Severity, scan_log};

/// How much of the end of each log is read (the failure of an upgrade is near the end).
pub const DEFAULT_TAIL_BYTES: u64 = 16 << 20;

/// One log to read.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// The node.
    pub host: Arc<dyn Host>,
    /// The log file.
    pub path: PathBuf,
    /// Which log it is.
    pub kind: LogKind,
}

/// The logs of the installation `config` describes: `management-server.log` of every
/// management server, `usage.log` of every usage server (`[[usage_servers]]`, or the management
/// servers when none is listed; a node without it gets an information finding) and `agent.log`
/// of every KVM host, each over its own SSH connection.
///
/// # Errors
/// [`crate::UpgradeError`] when a node cannot be reached.
pub async fn log_sources(
    config: &crate::UpgradeConfig,
) -> Result<Vec<LogSource>, crate::UpgradeError> {
    let mut out = Vec::new();
    for n in &config.management_servers {
        let h = crate::upgrade::connect(config, n).await?;
        out.push(LogSource {
            path: h.layout.management_log(),
            host: h.host,
            kind: LogKind::ManagementServer,
        });
    }
    // The usage server logs to /var/log/cloudstack/usage/usage.log (its log4j-cloud.xml,
    // usage/conf/log4j-cloud_usage.xml.in in apache/cloudstack).
    let usage = if config.usage_servers.is_empty() {
        &config.management_servers
    } else {
        &config.usage_servers
    };
    for n in usage {
        let h = crate::upgrade::connect(config, n).await?;
        out.push(LogSource {
            path: h.layout.usage_log(),
            host: h.host,
            kind: LogKind::Usage,
        });
    }
    for n in crate::inventory::kvm_hosts(config).await? {
        let h = crate::upgrade::connect(config, &n.node()).await?;
        out.push(LogSource {
            path: h.layout.agent_log(),
            host: h.host,
            kind: LogKind::Agent,
        });
    }
    Ok(out)
}

/// Reads the last `tail_bytes` of every log and reports each known signature once per log, with
/// how often it occurred and the first and last lines. A missing log is information; a log that
/// cannot be read is a broken check.
pub async fn diagnose(sources: &[LogSource], tail_bytes: u64) -> Report {
    let mut report = Report::default();
    for src in sources {
        match read_tail(src.host.as_ref(), &src.path, tail_bytes).await {
            Ok(None) => report.push(Finding::new(
                "diagnose.log",
                Severity::Info,
                subject(src),
                "log not found",
            )),
            Ok(Some(text)) => report.merge(findings(src, &text)),
            Err(e) => report.broken.push(cs_core::CheckFailure {
                id: "diagnose.log".into(),
                error: format!("{}: {}", subject(src), cs_core::error_chain(&e)),
            }),
        }
    }
    report
}

fn subject(src: &LogSource) -> String {
    format!("{}:{}", src.host.name(), src.path.display())
}

pub(crate) async fn read_tail(
    host: &dyn Host,
    path: &Path,
    tail_bytes: u64,
) -> Result<Option<String>, cs_core::HostError> {
    if !host.exists(path).await? {
        return Ok(None);
    }
    let out = host
        .run_ok(
            &Cmd::new("tail")
                .arg("-c")
                .arg(tail_bytes.to_string())
                .arg(path.display().to_string()),
        )
        .await?;
    Ok(Some(out.stdout_lossy()))
}

fn findings(src: &LogSource, text: &str) -> Report {
    let matches = scan_log(text, src.kind);
    let mut report = Report::default();
    if matches.is_empty() {
        report.push(Finding::pass(
            "diagnose.log",
            subject(src),
            "no known failure line",
        ));
        return report;
    }
    let mut seen: Vec<&str> = Vec::new();
    for m in &matches {
        let id = m.signature.id;
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let all: Vec<_> = matches.iter().filter(|x| x.signature.id == id).collect();
        let first = all[0];
        let last = all[all.len() - 1];
        let mut message = format!(
            "{} ({}x); line {}: {}",
            m.signature.cause,
            all.len(),
            first.line_no,
            first.line
        );
        if all.len() > 1 {
            message.push_str(&format!(" … last at line {}: {}", last.line_no, last.line));
        }
        report.push(
            Finding::new(
                format!("diagnose.{id}"),
                Severity::Fail,
                subject(src),
                message,
            )
            .with_remedy(m.signature.remedy),
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use cs_core::LocalHost;

    #[tokio::test]
    async fn finds_each_signature_once_with_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ms = dir.path().join("management-server.log");
        let agent = dir.path().join("agent.log");
        std::fs::write(
            &ms,
            "INFO start\n\
             ERROR [c.c.u.DatabaseUpgradeChecker] Unable to execute upgrade script schema-41800to41810.sql\n\
             ERROR Unable to upgrade the database\n\
             INFO retry\n\
             ERROR Unable to upgrade the database\n",
        )
        .unwrap();
        std::fs::write(&agent, "INFO agent started\n").unwrap();
        let host: Arc<dyn Host> = Arc::new(LocalHost::named("mgmt1"));
        let sources = [
            LogSource {
                host: host.clone(),
                path: ms.clone(),
                kind: LogKind::ManagementServer,
            },
            LogSource {
                host: host.clone(),
                path: agent,
                kind: LogKind::Agent,
            },
            LogSource {
                host,
                path: dir.path().join("usage.log"),
                kind: LogKind::ManagementServer,
            },
        ];
        let r = diagnose(&sources, DEFAULT_TAIL_BYTES).await;
        let ids: Vec<_> = r
            .findings
            .iter()
            .map(|f| (f.id.as_str(), f.severity))
            .collect();
        assert_eq!(
            ids,
            [
                ("diagnose.db.script.failed", Severity::Fail),
                ("diagnose.db.upgrade.failed", Severity::Fail),
                ("diagnose.log", Severity::Pass),
                ("diagnose.log", Severity::Info),
            ]
        );
        let upgrade = &r.findings[1];
        assert!(
            upgrade.message.contains("(2x); line 3:"),
            "{}",
            upgrade.message
        );
        assert!(
            upgrade.message.contains("last at line 5"),
            "{}",
            upgrade.message
        );
        assert!(
            upgrade
                .remedy
                .as_deref()
                .unwrap()
                .contains("restore the database backup")
        );
        assert_eq!(r.exit_code(), 2);
    }

    #[tokio::test]
    async fn the_usage_log_and_the_manuals_strings_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let usage = dir.path().join("usage.log");
        std::fs::write(
            &usage,
            "INFO usage server starting\nERROR [c.c.u.UsageServer] Authentication Failed\n",
        )
        .unwrap();
        let agent = dir.path().join("agent.log");
        std::fs::write(&agent, "ERROR [c.c.a.Agent] Version Mismatch: 4.18.0.0\n").unwrap();
        let host: Arc<dyn Host> = Arc::new(LocalHost::named("mgmt1"));
        let sources = [
            LogSource {
                host: host.clone(),
                path: usage,
                kind: LogKind::Usage,
            },
            LogSource {
                host,
                path: agent,
                kind: LogKind::Agent,
            },
        ];
        let r = diagnose(&sources, DEFAULT_TAIL_BYTES).await;
        let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "diagnose.usage.auth.failed",
                "diagnose.agent.version.mismatch"
            ]
        );
        assert!(r.findings[0].message.contains("line 2"), "{r}");
    }

    #[tokio::test]
    async fn only_the_tail_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ms = dir.path().join("m.log");
        let mut text = String::from("ERROR Unable to upgrade the database\n");
        text.push_str(&"INFO filler line\n".repeat(1000));
        std::fs::write(&ms, text).unwrap();
        let src = [LogSource {
            host: Arc::new(LocalHost::new()),
            path: ms,
            kind: LogKind::ManagementServer,
        }];
        let r = diagnose(&src, 4096).await;
        assert_eq!(r.exit_code(), 0, "{r}");
    }
}
