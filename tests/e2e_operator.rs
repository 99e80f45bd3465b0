//! End to end as operators reach their nodes: the lab's upgrade (2 management servers, 3 KVM
//! hosts, 4.18.0.0 to 4.19.0.0) with every node reached through a bastion that only forwards,
//! with a passphrase-protected key whose passphrase is in a secret file, as the lab's operator
//! account `cs-lab-op`, not root, everything done as root through `sudo` with its password
//! from a secret file; then `rewrite-repo` on a node as the operator (`--sudo-password-file`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use cs_core::{NoProgress, error_chain};
use cs_lab::{Lab, OPERATOR_USER};
use cs_upgrade::UpgradeConfig;

/// The length of each node's sshd log now, to read only what comes after.
fn log_marks(lab: &Lab) -> Vec<(std::path::PathBuf, usize)> {
    lab.management_servers()
        .iter()
        .map(|m| m.ssh())
        .chain(lab.kvm_hosts().iter().filter_map(|h| h.ssh()))
        .map(|s| {
            let log = s.log();
            let len = std::fs::read(&log).map_or(0, |b| b.len());
            (log, len)
        })
        .collect()
}

/// The logins each node's sshd accepted since `marks`: `(user, count)` over all nodes.
fn logins_since(marks: &[(std::path::PathBuf, usize)]) -> (usize, usize) {
    let (mut operator, mut root) = (0, 0);
    for (log, from) in marks {
        let text = std::fs::read(log).expect("sshd log");
        let text = String::from_utf8_lossy(&text[(*from).min(text.len())..]).into_owned();
        operator += text
            .matches(&format!("Accepted publickey for {OPERATOR_USER} "))
            .count();
        root += text.matches("Accepted publickey for root ").count();
    }
    (operator, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_as_a_non_root_operator_with_sudo() {
    let lab = tokio::task::spawn_blocking(|| Lab::builder().name("e2e_operator").start())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let target = common::target();
    tokio::task::block_in_place(|| lab.prepare_upgrade(&target, false)).expect("prepare");
    let path = lab
        .write_operator_config(&target)
        .unwrap_or_else(|e| panic!("operator config: {}", error_chain(&e)));
    let access = lab
        .bastion_access(&path)
        .unwrap_or_else(|e| panic!("bastion: {}", error_chain(&e)));
    let (config, warnings) = UpgradeConfig::load(&path).expect("config");
    assert_eq!(config.ssh.user, OPERATOR_USER);
    assert!(config.ssh.sudo);
    assert_eq!(config.ssh.identity.as_deref(), Some(access.key.as_path()));
    assert!(config.ssh.identity_passphrase.is_some());
    assert!(config.ssh.proxy_jump.is_some());
    assert!(
        warnings
            .iter()
            .all(|w| w.subject != "ssh.sudo_password" && w.subject != "ssh.identity_passphrase"),
        "the secrets come from files: {warnings:?}"
    );
    // The key really is locked: without its passphrase it opens nothing.
    let locked = cs_core::SshHost::builder(lab.kvm_hosts()[0].ssh().expect("sshd").addr())
        .user(OPERATOR_USER)
        .key_file(&access.key)
        .known_hosts(lab.dir().join("known_hosts"))
        .connect()
        .await
        .expect_err("a protected key without its passphrase");
    assert!(
        matches!(locked, cs_core::HostError::Key { .. }),
        "{}",
        error_chain(&locked)
    );

    let marks = log_marks(&lab);
    let report = cs_upgrade::apply(&config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {}\n{:?}", error_chain(&e), e.report));
    assert!(report.failed_step.is_none(), "{report:#?}");
    common::assert_everything_at(&lab, &target).await;
    let (operator, root) = logins_since(&marks);
    assert!(
        operator >= 5,
        "every node was reached as {OPERATOR_USER}: {operator} logins"
    );
    assert_eq!(root, 0, "no node was logged in to as root by the upgrade");
    // Every node through the bastion (its log names each forward's target).
    let log = std::fs::read_to_string(access.bastion.log()).expect("bastion log");
    let ports = lab
        .management_servers()
        .iter()
        .map(|m| m.ssh().port())
        .chain(
            lab.kvm_hosts()
                .iter()
                .filter_map(|h| h.ssh())
                .map(|s| s.port()),
        );
    for port in ports {
        assert!(
            log.contains(&format!("target 127.0.0.1 port {port}")),
            "no forward to {port} in the bastion's log"
        );
    }
    // What the upgrade wrote on the nodes is root's, as before.
    for h in lab.kvm_hosts() {
        let props = h.root().join("etc/cloudstack/agent/agent.properties");
        let meta = std::fs::metadata(&props).expect("agent.properties");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", props.display());
    }

    rewrite_repo_as_the_operator(&lab, &config.repositories.mirrors);
}

/// `rewrite-repo --host ssh://cs-lab-op@… --sudo-password-file FILE` on a KVM host: the
/// repository file, root's in a directory only root may write, points at 4.20 afterwards.
fn rewrite_repo_as_the_operator(lab: &Lab, mirrors: &[String]) {
    let h = &lab.kvm_hosts()[0];
    let server = h.ssh().expect("sshd");
    let op = cs_lab::operator().expect("operator");
    let list = [
        "etc/apt/sources.list.d/cloudstack.list",
        "etc/yum.repos.d/cloudstack.repo",
    ]
    .iter()
    .map(|f| h.root().join(f))
    .find(|p| p.exists())
    .expect("the host's repository file");
    let before = std::fs::read_to_string(&list).expect("repo file");
    assert!(before.contains("4.19"), "{before}");
    let run = |extra: &[&str]| {
        #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
        std::process::Command::new(common::example("rewrite-repo"))
            .args(["--yes", "--to", "4.20", "--host"])
            .arg(format!("ssh://{OPERATOR_USER}@{}", server.addr()))
            .arg("--key")
            .arg(server.client_key())
            .arg("--known-hosts")
            .arg(server.known_hosts())
            .arg("--root")
            .arg(h.root())
            .args(mirrors.iter().flat_map(|m| ["--mirror", m.as_str()]))
            .args(extra)
            .env_remove("RUST_LOG")
            .output()
            .expect("run rewrite-repo")
    };
    // Without sudo, the operator cannot replace root's file (`--yes`: refused by the host, not
    // by the question).
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("not confirmed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&list).expect("repo file"), before);

    let out = run(&[
        "--sudo-password-file",
        &op.password_file().to_string_lossy(),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(op.password().expose()),
            "the password was printed"
        );
    }
    let after = std::fs::read_to_string(&list).expect("repo file");
    assert!(after.contains("4.20"), "{after}");
    let meta = std::fs::metadata(&list).expect("repo file");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    assert_eq!(
        after.replace("4.20", "4.19"),
        before,
        "only the release line changed"
    );
}
