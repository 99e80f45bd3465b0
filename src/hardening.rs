//! The hardening report and its one safe fix, after the seed's advice: `-Xmx` against the
//! node's memory (`ms.heap`), who may read the files that hold the management server's secrets
//! (`harden.secret.files`), and whether the API ports and the unauthenticated integration
//! port 8096 are exposed (`api.firewall`).
//!
//! On file modes: CHECKS.md asks for 0600, but the packages install `db.properties` and `key`
//! as 0640 `root:cloud` so that the service user can read them (see the `db-properties` facts).
//! What is flagged, and what [`harden`] removes, is therefore anything for others and write
//! access for the group: 0644 becomes 0640, 0600 and 0640 are left alone.

use std::path::PathBuf;

use cs_core::{Check, Cmd, Finding, HostExt, Report, Severity, error_chain, run_checks};
use futures::future::join_all;
use serde::Serialize;

use crate::config::{NodeConfig, UpgradeConfig};
use crate::ms_checks::{MsContext, Phase, listening_sockets, ms_checks};
use crate::preflight::{NODE_REACHABLE, unreachable};
use crate::upgrade::{NodeHandle, UpgradeError, api_client, connect};

/// The id of the secret-file findings.
pub const SECRET_FILES_CHECK: &str = "harden.secret.files";
/// The id of the port-exposure findings (CHECKS.md).
pub const FIREWALL_CHECK: &str = "api.firewall";

/// Files under the management server's configuration directory that hold secrets: the
/// database password, the key that decrypts it, and the HTTPS keystores.
const SECRET_FILES: &[&str] = &[
    "db.properties",
    "key",
    "cloud.jks",
    "cloudmanagementserver.keystore",
];

/// Mode bits a secret file must not have: write for the group, anything for others.
pub(crate) const TOO_OPEN: u32 = 0o027;

/// The global setting of the unauthenticated integration API port (0 or empty: off).
const INTEGRATION_PORT: &str = "integration.api.port";

/// A file whose mode [`harden`] tightened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeFix {
    /// The node.
    pub node: String,
    /// The file.
    pub path: PathBuf,
    /// Its mode before.
    pub from: u32,
    /// Its mode now.
    pub to: u32,
}

/// Checks every management server and the API for what the seed's hardening advice covers.
/// Never fails: a node or API that cannot be reached is a `Fail` finding naming it.
pub async fn hardening_report(config: &UpgradeConfig) -> Report {
    let nodes = join_all(
        config
            .management_servers
            .iter()
            .map(|n| node_report(config, n)),
    );
    let (nodes, api) = tokio::join!(nodes, integration_port(config));
    let mut report = Report::default();
    for r in nodes {
        report.merge(r);
    }
    report.merge(api);
    report
}

/// Tightens the mode of every secret file the report flags (see the module docs), on every
/// management server, and returns what changed. Nothing else is changed: the integration port
/// is a global setting whose change needs a restart, so the report only says how.
///
/// # Errors
/// [`UpgradeError`] when a node cannot be reached or a `chmod` fails; the fixes made before it
/// stay made (each is complete on its own).
pub async fn harden(config: &UpgradeConfig) -> Result<Vec<ModeFix>, UpgradeError> {
    let mut fixes = Vec::new();
    for n in &config.management_servers {
        let node = connect(config, n).await?;
        for (path, mode) in open_secret_files(&node).await.map_err(plan_err(&node))? {
            let to = mode & !TOO_OPEN;
            node.host
                .run_ok(
                    &Cmd::new("chmod")
                        .arg(format!("{to:04o}"))
                        .arg(path.display().to_string()),
                )
                .await
                .map_err(plan_err(&node))?;
            tracing::info!(node = %node.name, path = %path.display(), from = format!("{mode:04o}"),
                to = format!("{to:04o}"), "secret file mode tightened");
            fixes.push(ModeFix {
                node: node.name.clone(),
                path,
                from: mode,
                to,
            });
        }
    }
    Ok(fixes)
}

fn plan_err(node: &NodeHandle) -> impl Fn(cs_core::HostError) -> UpgradeError + '_ {
    move |e| UpgradeError::plan(format!("{}: {}", node.name, error_chain(&e)))
}

/// The secret files on `node` (regular files only: a symlink's target is checked where it is)
/// with their modes, all of them.
async fn secret_files(node: &NodeHandle) -> Result<Vec<(PathBuf, u32)>, cs_core::HostError> {
    let mut out = Vec::new();
    let dirs = [
        node.layout.management_conf_dir.clone(),
        node.path("/etc/cloudstack/usage"),
    ];
    for dir in dirs {
        for name in SECRET_FILES {
            let path = dir.join(name);
            match node.host.stat(&path).await {
                Ok(m) if m.kind == cs_core::FileKind::File => out.push((path, m.mode & 0o7777)),
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

async fn open_secret_files(node: &NodeHandle) -> Result<Vec<(PathBuf, u32)>, cs_core::HostError> {
    let mut files = secret_files(node).await?;
    files.retain(|(_, mode)| mode & TOO_OPEN != 0);
    Ok(files)
}

async fn node_report(config: &UpgradeConfig, n: &NodeConfig) -> Report {
    let node = match connect(config, n).await {
        Ok(h) => h,
        Err(e) => return unreachable(NODE_REACHABLE, n.display_name(), error_chain(&e)),
    };
    let mut report = Report::default();
    match secret_files(&node).await {
        Ok(files) => {
            for (path, mode) in files {
                let subject = format!("{}:{}", node.name, path.display());
                report.push(if mode & TOO_OPEN == 0 {
                    Finding::pass(SECRET_FILES_CHECK, subject, format!("mode {mode:04o}"))
                } else {
                    Finding::new(
                        SECRET_FILES_CHECK,
                        Severity::Warn,
                        subject,
                        format!(
                            "mode {mode:04o}: it holds secrets and others can read it or the \
                             group can change it"
                        ),
                    )
                    .with_remedy(format!(
                        "chmod {:04o} {} (the `harden --fix` example does it)",
                        mode & !TOO_OPEN,
                        path.display()
                    ))
                });
            }
        }
        Err(e) => report.broken.push(cs_core::CheckFailure {
            id: SECRET_FILES_CHECK.into(),
            error: format!("{}: {}", node.name, error_chain(&e)),
        }),
    }
    report.merge(exposed_ports(&node).await);

    let cx = MsContext {
        host: node.host.clone(),
        layout: node.layout.clone(),
        target: config.target,
        java_major: 0,
        phase: Phase::Pre,
    };
    let checks = ms_checks();
    let heap: Vec<&dyn Check<MsContext>> = checks
        .iter()
        .map(AsRef::as_ref)
        .filter(|c| c.id() == "ms.heap")
        .collect();
    report.merge(run_checks(&heap, &cx, &[]).await);
    report
}

/// `api.firewall` on one node: 8096 must not listen; the API ports on every interface are
/// worth knowing (only a firewall can say who reaches them).
async fn exposed_ports(node: &NodeHandle) -> Report {
    let mut report = Report::default();
    let out = match node
        .host
        .run_ok(&Cmd::new("ss").args(["-H", "-l", "-t", "-n"]))
        .await
    {
        Ok(o) => o.stdout_lossy(),
        Err(e) => {
            report.broken.push(cs_core::CheckFailure {
                id: FIREWALL_CHECK.into(),
                error: format!("{}: ss: {}", node.name, error_chain(&e)),
            });
            return report;
        }
    };
    let sockets = listening_sockets(&out);
    for (port, what) in [
        (8080, "API (HTTP)"),
        (8443, "API (HTTPS)"),
        (8096, "integration API"),
    ] {
        let subject = format!("{}:tcp/{port}", node.name);
        let bound: Vec<&str> = sockets
            .iter()
            .filter(|(_, p)| *p == port)
            .map(|(a, _)| a.as_str())
            .collect();
        if bound.is_empty() {
            if port == 8096 {
                report.push(Finding::pass(FIREWALL_CHECK, subject, "8096 is closed"));
            }
            continue;
        }
        let everywhere = bound
            .iter()
            .any(|a| matches!(*a, "*" | "0.0.0.0" | "[::]" | "::"));
        let f = if port == 8096 {
            Finding::new(
                FIREWALL_CHECK,
                Severity::Warn,
                subject,
                format!("the unauthenticated {what} listens on {}", bound.join(", ")),
            )
            .with_remedy(format!(
                "set {INTEGRATION_PORT} to 0 and restart cloudstack-management"
            ))
        } else if everywhere {
            Finding::new(
                FIREWALL_CHECK,
                Severity::Info,
                subject,
                format!("the {what} listens on every interface"),
            )
            .with_remedy("allow it only from trusted subnets in the firewall")
        } else {
            Finding::pass(
                FIREWALL_CHECK,
                subject,
                format!("the {what} listens on {}", bound.join(", ")),
            )
        };
        report.push(f);
    }
    report
}

/// `api.firewall` from the API: the integration port setting.
async fn integration_port(config: &UpgradeConfig) -> Report {
    let subject = format!("api:{INTEGRATION_PORT}");
    let client = match api_client(config) {
        Ok(c) => c,
        Err(e) => return unreachable(FIREWALL_CHECK, &subject, error_chain(&e)),
    };
    let settings = match client
        .list_configurations(&[("name", INTEGRATION_PORT)])
        .await
    {
        Ok(s) => s,
        Err(e) => return unreachable(FIREWALL_CHECK, &subject, error_chain(&e)),
    };
    let value = settings
        .iter()
        .find(|s| s.name == INTEGRATION_PORT)
        .and_then(|s| s.value.clone())
        .unwrap_or_default();
    let mut report = Report::default();
    report.push(match value.trim() {
        "" | "0" => Finding::pass(FIREWALL_CHECK, subject, "the integration API is off"),
        port => Finding::new(
            FIREWALL_CHECK,
            Severity::Warn,
            subject,
            format!("the unauthenticated integration API is on, port {port}"),
        )
        .with_remedy(format!(
            "updateConfiguration name={INTEGRATION_PORT} value=0, then restart the management servers"
        )),
    });
    report
}
