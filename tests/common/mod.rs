//! What the end-to-end tests share: the lab they start, the snapshot of everything a rollback
//! must leave as it was, and the assertions on it.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cs_api::{Client, ClientConfig, Credentials, HealthExpectations, HealthReport};
use cs_core::{CsVersion, error_chain};
use cs_lab::Lab;
use cs_upgrade::UpgradeConfig;

/// A lab of 2 management servers and 3 KVM hosts at 4.18.0.0, prepared for an upgrade to
/// 4.19.0.0, with the config file that describes it.
pub(crate) async fn lab_for_upgrade(name: &'static str) -> (Lab, UpgradeConfig, PathBuf) {
    lab_for_upgrade_with(Lab::builder().name(name)).await
}

/// The lab `builder` describes, prepared for an upgrade to [`target`], with the config file
/// that describes it.
pub(crate) async fn lab_for_upgrade_with(
    builder: cs_lab::LabBuilder,
) -> (Lab, UpgradeConfig, PathBuf) {
    let lab = tokio::task::spawn_blocking(move || builder.start())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let target = target();
    tokio::task::block_in_place(|| lab.prepare_upgrade(&target, false)).expect("prepare");
    let path = lab.write_config(&target).expect("config");
    let (config, _) = UpgradeConfig::load(&path).expect("config");
    (lab, config, path)
}

/// The steps of the labs' one-hop upgrade to [`target`], in order.
pub(crate) const ONE_HOP_STEPS: &[&str] = &[
    "backup",
    "quiesce",
    "repos@4.19.0.0",
    "packages@4.19.0.0",
    "migrate@4.19.0.0",
    "start@4.19.0.0",
    "agents",
    "sysvms",
    "postflight",
];

/// Rolls a finished upgrade back, past its point of no return: asks what the restore discards
/// first (the refusal without the flag says it), then accepts it with the backup's time.
pub(crate) async fn rollback_discarding(config: &UpgradeConfig) -> cs_core::RunReport {
    let err = cs_upgrade::rollback(config, std::sync::Arc::new(cs_core::NoProgress))
        .await
        .expect_err("past the point of no return a rollback needs the flag");
    let since = match &err.kind {
        cs_upgrade::UpgradeErrorKind::PointOfNoReturn { since, .. } => since.clone(),
        other => panic!("refused for another reason: {}", error_chain(other)),
    };
    assert!(
        err.to_string().contains("--discard-changes-since"),
        "{}",
        error_chain(&err)
    );
    let mut options = cs_upgrade::RollbackOptions::default();
    options.discard_changes_since = Some(since);
    cs_upgrade::rollback_with(config, &options, std::sync::Arc::new(cs_core::NoProgress))
        .await
        .unwrap_or_else(|e| panic!("rollback: {}\n{:?}", error_chain(&e), e.report))
}

/// The version the labs upgrade to.
pub(crate) fn target() -> CsVersion {
    "4.19.0.0".parse().expect("a version")
}

/// Waits until everything is Up at `v` again (after a rollback or an upgrade), then checks
/// packages and health.
pub(crate) async fn settle_at(lab: &Lab, v: &CsVersion) {
    tokio::task::block_in_place(|| lab.wait_all_up(&v.to_string(), Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("everything Up at {v}: {}", error_chain(&e)));
    assert_everything_at(lab, v).await;
}

/// Tables left out of the before/after database comparison, each for a reason of its own.
pub(crate) const VOLATILE_TABLES: &[&str] = &[
    // One row per management server with its state (Up/Down), run id and heartbeat time:
    // stopping and starting the servers, which a rollback must do, rewrites them.
    "mshost",
];

/// Every file under the node's `etc` (CloudStack's configuration, `/etc/default`, the apt
/// sources), with its mode and bytes (a symlink as its target).
pub(crate) fn etc_files(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(root).expect("under root").display();
            if meta.is_dir() {
                walk(&path, root, out);
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel.to_string(), (mode, std::fs::read(&path).expect("read")));
            } else {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(
                    rel.to_string(),
                    (0, target.to_string_lossy().into_owned().into_bytes()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&root.join("etc"), root, &mut out);
    out
}

/// What must be the same after a rollback as before the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) checksums: BTreeMap<String, String>,
    pub(crate) files: BTreeMap<String, BTreeMap<String, (u32, Vec<u8>)>>,
}

pub(crate) async fn snapshot(lab: &Lab) -> Snapshot {
    let checksums = tokio::task::block_in_place(|| lab.checksums(VOLATILE_TABLES))
        .unwrap_or_else(|e| panic!("checksums: {}", error_chain(&e)));
    let files = lab
        .management_servers()
        .iter()
        .map(|m| (m.name().to_string(), etc_files(m.root())))
        // On KVM hosts, the agent's configuration, keystore and repository files.
        .chain(lab.kvm_hosts().iter().map(|h| {
            let mut files = etc_files(&h.root());
            files.retain(|path, _| {
                path.starts_with("etc/cloudstack/agent/")
                    || path.starts_with("etc/apt/")
                    || path.starts_with("etc/yum.repos.d/")
            });
            (h.name().to_string(), files)
        }))
        .collect();
    Snapshot { checksums, files }
}

#[track_caller]
pub(crate) fn assert_same(before: &Snapshot, after: &Snapshot) {
    assert_same_except(before, after, &[]);
}

/// [`assert_same`], leaving out the tables named (`event`: a rollback past the point of no
/// return writes the events of putting system VMs back onto the old code after restoring).
#[track_caller]
pub(crate) fn assert_same_except(before: &Snapshot, after: &Snapshot, tables: &[&str]) {
    let left_out = |k: &str| tables.iter().any(|t| k.ends_with(&format!(".{t}")));
    for (k, v) in before.checksums.iter().filter(|(k, _)| !left_out(k)) {
        assert_eq!(after.checksums.get(k), Some(v), "table {k} differs");
    }
    let extra: Vec<&String> = after
        .checksums
        .keys()
        .filter(|k| !before.checksums.contains_key(*k))
        .collect();
    assert!(extra.is_empty(), "tables left behind: {extra:?}");
    for (node, files) in &before.files {
        let now = &after.files[node];
        for (path, v) in files {
            match now.get(path) {
                Some(n) if n == v => {}
                Some(n) => panic!(
                    "{node}: {path} differs (mode {:o} -> {:o}):\n{}\n---\n{}",
                    v.0,
                    n.0,
                    String::from_utf8_lossy(&v.1),
                    String::from_utf8_lossy(&n.1)
                ),
                None => panic!("{node}: {path} is gone"),
            }
        }
        let extra: Vec<&String> = now.keys().filter(|k| !files.contains_key(*k)).collect();
        assert!(extra.is_empty(), "{node}: files left behind: {extra:?}");
    }
}

pub(crate) fn client(lab: &Lab) -> Client {
    Client::new(
        &lab.api().endpoint(),
        Credentials::api_key(lab.api().api_key(), lab.api().secret_key().clone()),
        ClientConfig::default(),
    )
    .expect("client")
}

/// Packages at `v` on every node, and the API reporting everything Up at `v`.
pub(crate) async fn assert_everything_at(lab: &Lab, v: &CsVersion) {
    for m in lab.management_servers() {
        for p in cs_upgrade::MANAGEMENT_PACKAGES {
            // The usage server only where it was installed: the upgrade must not add it.
            let want = (*p != cs_upgrade::USAGE_UNIT || m.name() == "mgmt1").then(|| v.to_string());
            assert_eq!(m.installed(p), want, "{}: {p}", m.name());
        }
    }
    for h in lab.kvm_hosts() {
        assert_eq!(
            h.installed("cloudstack-agent").as_deref(),
            Some(v.to_string().as_str()),
            "{}",
            h.name()
        );
    }
    lab.sync();
    let report = HealthReport::collect(&client(lab)).await.expect("health");
    let expect = HealthExpectations {
        phase: cs_api::Phase::Post,
        version: Some(*v),
    };
    let problems = report.problems(&expect);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(report.hosts.len(), lab.kvm_hosts().len());
    assert_eq!(report.hosts_up(), lab.kvm_hosts().len());
}

/// A fault for [`fault_rolls_back`]: how to inject it, and what the failed run must say.
pub(crate) struct StageFault<'a> {
    /// The step the run must fail at.
    pub(crate) step: &'a str,
    /// Each of these must be in the error's message (with causes).
    pub(crate) says: &'a [&'a str],
    /// Turns the fault on (before the snapshot: a fault may change files).
    pub(crate) inject: Box<dyn FnOnce(&Lab) + 'a>,
    /// Turns it off after the failed run, and undoes what it did outside the upgrade's reach.
    pub(crate) clear: Box<dyn FnOnce(&Lab) + 'a>,
}

/// Runs `apply` with `fault` on: it must fail at the fault's step with its message, roll back
/// every step it applied (none failing to), and leave the databases, configuration and
/// repository files, packages and hosts as they were. Returns the run's report.
pub(crate) async fn fault_rolls_back(
    lab: &Lab,
    config: &UpgradeConfig,
    fault: StageFault<'_>,
) -> cs_core::RunReport {
    let old = lab.initial_version();
    (fault.inject)(lab);
    let before = snapshot(lab).await;
    let err = cs_upgrade::apply(config, std::sync::Arc::new(cs_core::NoProgress))
        .await
        .expect_err("the fault must fail the upgrade");
    (fault.clear)(lab);
    let message = error_chain(&err);
    assert!(
        matches!(err.kind, cs_upgrade::UpgradeErrorKind::Run(_)),
        "{message}"
    );
    let report = *err.report.expect("the runner's report");
    assert_eq!(
        report.failed_step.as_deref(),
        Some(fault.step),
        "{message}\n{report:#?}"
    );
    for s in fault.says {
        assert!(message.contains(s), "`{s}` not in: {message}");
    }
    assert!(
        report
            .ids_with(cs_core::StepOutcome::RollbackFailed)
            .is_empty(),
        "{report:#?}"
    );
    assert!(
        report.ids_with(cs_core::StepOutcome::Applied).is_empty(),
        "applied and not rolled back: {report:#?}"
    );
    settle_at(lab, &old).await;
    assert_same(&before, &snapshot(lab).await);
    report
}

/// An example binary as `cargo test` builds them, beside the test binaries' directory.
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the target directory")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built (`cargo test` builds the examples; so does `cargo build --examples`)",
        path.display()
    );
    path
}

/// A config for an installation that is nowhere (every address refuses at once), with its
/// backups under `dir`.
pub(crate) fn nowhere_config(dir: &Path) -> std::path::PathBuf {
    let text = include_str!("../../examples/upgrade.toml")
        .replace(
            "/var/backups/cloudstack",
            dir.join("backups").to_str().unwrap(),
        )
        .replace("10.0.0.5", "127.0.0.1")
        .replace("port = 3306", "port = 1")
        .replace("http://10.0.0.10:8080", "http://127.0.0.1:1")
        .replace("/root/.ssh/id_ed25519", dir.join("id").to_str().unwrap())
        .replace(
            "/root/.ssh/known_hosts",
            dir.join("known_hosts").to_str().unwrap(),
        )
        // Nodes on port 1 of the loopback: nothing listens there.
        .replace(
            "address = \"10.0.0.10\"",
            "address = \"127.0.0.1\"\nport = 1",
        )
        .replace(
            "address = \"10.0.0.11\"",
            "address = \"127.0.0.1\"\nport = 1",
        )
        .replace("10.0.2.21", "127.0.0.1")
        .replace("port = 2222", "port = 1")
        .replace("connect_timeout = \"10s\"", "connect_timeout = \"1s\"");
    assert!(!text.contains("10.0."), "an address left: {text}");
    let path = dir.join("upgrade.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Every file under `dir`, relative.
pub(crate) fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}
