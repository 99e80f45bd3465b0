//! `SshHost` as operators reach their nodes (issue 21): passphrase-protected keys (the
//! passphrase given, from a secret file, wrong or missing), ProxyJump through a lab bastion
//! that only forwards (commands and SFTP on the target, its host key checked, a dead bastion
//! named within bounded time, a chain of two), and `~/.ssh/config` aliases.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cs_core::{
    Cmd, Deadlines, Host, HostError, HostExt, JumpSpec, LocalHost, Secret, SshHost, error_chain,
};
use cs_lab::SshServer;

fn start(builder: cs_lab::SshServerBuilder) -> SshServer {
    builder
        .start()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

fn bastion() -> SshServer {
    start(SshServer::builder().bastion())
}

/// A known_hosts file with the entries of every server given.
fn known_hosts_of(dir: &Path, servers: &[&SshServer]) -> PathBuf {
    let mut text = String::new();
    for s in servers {
        text.push_str(&std::fs::read_to_string(s.known_hosts()).expect("known_hosts"));
    }
    let path = dir.join("known_hosts");
    std::fs::write(&path, text).expect("write known_hosts");
    path
}

async fn ssh_keygen_locked(path: &Path, kind: &str, passphrase: &Secret) {
    LocalHost::new()
        .run_ok(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", kind, "-C", "locked", "-N"])
                .secret_arg(passphrase)
                .arg("-f")
                .arg(path.to_string_lossy())
                .timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_keys_right_wrong_missing_and_from_a_secret_file() {
    let server = start(SshServer::builder().locked_key());
    let key = server.locked_key().expect("locked key");
    let pass_file = server
        .locked_key_passphrase_file()
        .expect("passphrase file");
    let passphrase = Secret::from_file(&pass_file).unwrap_or_else(|e| panic!("{e}"));
    let bare = || SshHost::builder(server.addr()).known_hosts(server.known_hosts());

    let host = bare()
        .key_file_with_passphrase(&key, passphrase.clone())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let out = host
        .run_ok(&Cmd::new("echo").arg("unlocked"))
        .await
        .expect("run");
    assert_eq!(out.stdout_lossy().trim(), "unlocked");

    let wrong = Secret::new("not the passphrase");
    let err = bare()
        .key_file_with_passphrase(&key, wrong.clone())
        .connect()
        .await
        .expect_err("wrong passphrase");
    assert!(matches!(err, HostError::Key { .. }), "{err:?}");
    let text = format!("{} {err:?}", error_chain(&err));
    assert!(
        text.contains(&format!("wrong passphrase for {}", key.display())),
        "{text}"
    );
    assert!(!text.contains(wrong.expose()) && !text.contains(passphrase.expose()));

    let err = bare()
        .key_file(&key)
        .connect()
        .await
        .expect_err("no passphrase");
    assert!(matches!(err, HostError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("no passphrase was given"), "{err}");

    // A wrong passphrase does not hide a method that works after it.
    bare()
        .key_file_with_passphrase(&key, wrong)
        .key_file(server.client_key())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_protected_rsa_keys_authenticate() {
    let server = start(SshServer::builder());
    let tmp = tempfile::tempdir().expect("tempdir");
    let passphrase = Secret::new("rsa pass phrase");
    let key = tmp.path().join("id_rsa");
    ssh_keygen_locked(&key, "rsa", &passphrase).await;
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    server.authorize_key(&public).expect("authorize");
    // Without its .pub beside it: libssh2 reads the public key out of the private one.
    std::fs::remove_file(key.with_extension("pub")).expect("remove pub");
    let host = SshHost::builder(server.addr())
        .known_hosts(server.known_hosts())
        .key_file_with_passphrase(&key, passphrase)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    host.run_ok(&Cmd::new("true")).await.expect("run");
    let err = SshHost::builder(server.addr())
        .known_hosts(server.known_hosts())
        .key_file_with_passphrase(&key, Secret::new("nope"))
        .connect()
        .await
        .expect_err("wrong passphrase");
    assert!(err.to_string().contains("wrong passphrase for"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_runs_commands_and_sftp_on_the_target() {
    let bastion = bastion();
    let target = start(SshServer::builder());
    // The bastion only forwards: a command on it is refused.
    let direct = bastion.connect().await.expect("bastion login");
    let out = direct.run(&Cmd::new("true")).await.expect("run");
    assert_ne!(out.code, 0, "the bastion ran a command");

    let host = target
        .host_builder()
        .proxy_jump(bastion.host_builder())
        .name("kvm-behind")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    // The command runs on the target: its SetEnv names the target's root.
    let out = host
        .run_ok(&Cmd::new("sh").arg("-c").arg("echo $CS_LAB_ROOT"))
        .await
        .expect("run through the bastion");
    assert_eq!(
        out.stdout_lossy().trim(),
        target.root().to_string_lossy(),
        "ran on the wrong node"
    );
    // SFTP, with more than one channel window of data each way.
    let file = target.root().join("through-bastion.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    host.write_atomic(&file, &data, Some(0o640))
        .await
        .expect("write");
    assert_eq!(host.read(&file).await.expect("read"), data);
    assert_eq!(std::fs::read(&file).expect("local read"), data);
    // Stdin and stdout of a large command both ways.
    let out = host
        .run_ok(&Cmd::new("wc").arg("-c").stdin(data.clone()))
        .await
        .expect("wc");
    assert_eq!(out.stdout_lossy().trim(), data.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_targets_host_key_is_checked_under_its_own_name() {
    let bastion = bastion();
    let target = start(SshServer::builder());
    let tmp = tempfile::tempdir().expect("tempdir");
    // Only the bastion's key is known: the target's is not, and must not be taken on trust.
    let err = target
        .host_builder()
        .known_hosts(bastion.known_hosts())
        .proxy_jump(bastion.host_builder())
        .connect()
        .await
        .expect_err("unknown target key");
    assert!(matches!(err, HostError::HostKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("[127.0.0.1]:{}", target.port())),
        "{err}"
    );
    // The bastion's key recorded under the target's name: a mismatch.
    let bastion_key = std::fs::read_to_string(bastion.host_key_pub()).expect("pub");
    let forged = tmp.path().join("forged");
    std::fs::write(
        &forged,
        format!("[127.0.0.1]:{} {bastion_key}", target.port()),
    )
    .expect("write");
    let err = target
        .host_builder()
        .known_hosts(&forged)
        .proxy_jump(bastion.host_builder())
        .connect()
        .await
        .expect_err("wrong target key");
    assert!(err.to_string().contains("differs"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bastion_fails_in_bounded_time_naming_it() {
    let bastion = bastion();
    let target = start(SshServer::builder());
    // Nothing listens: refused at once.
    let closed = SshHost::builder("127.0.0.1:1")
        .key_file(bastion.client_key())
        .known_hosts(bastion.known_hosts())
        .name("bastion-gone");
    let err = target
        .host_builder()
        .proxy_jump(closed)
        .connect()
        .await
        .expect_err("closed bastion");
    let text = error_chain(&err);
    assert!(text.contains("through the bastion bastion-gone"), "{text}");

    // Frozen (accepts, never answers): the connect timeout bounds the whole attempt.
    bastion.freeze().expect("freeze");
    let started = Instant::now();
    let err = target
        .host_builder()
        .connect_timeout(Duration::from_secs(2))
        .proxy_jump(bastion.host_builder().name("bastion-frozen"))
        .connect()
        .await
        .expect_err("frozen bastion");
    let took = started.elapsed();
    bastion.thaw().expect("thaw");
    let text = error_chain(&err);
    assert!(text.contains("bastion-frozen"), "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {text}");

    // Mid-session: a command fails within the bastion's silence bound, naming it.
    let quick = Deadlines::quick(Duration::from_secs(3));
    let host = target
        .host_builder()
        .deadlines(quick)
        .proxy_jump(bastion.host_builder().deadlines(quick).name("bastion-dies"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    host.run_ok(&Cmd::new("true")).await.expect("first command");
    bastion.freeze().expect("freeze");
    let started = Instant::now();
    let err = host
        .run_ok(&Cmd::new("sleep").arg("30"))
        .await
        .expect_err("bastion died");
    let took = started.elapsed();
    bastion.thaw().expect("thaw");
    let text = error_chain(&err);
    assert!(text.contains("bastion-dies"), "{text}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_target_behind_a_live_bastion_is_not_blamed_on_it() {
    let bastion = bastion();
    let target = start(SshServer::builder());
    let quick = Deadlines::quick(Duration::from_secs(3));
    let host = target
        .host_builder()
        .name("kvm-silent")
        .deadlines(quick)
        .proxy_jump(bastion.host_builder().deadlines(quick).name("bastion-fine"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    host.run_ok(&Cmd::new("true")).await.expect("first command");
    target.freeze().expect("freeze");
    let started = Instant::now();
    let err = host
        .run_ok(&Cmd::new("sleep").arg("30"))
        .await
        .expect_err("target silent");
    let took = started.elapsed();
    target.thaw().expect("thaw");
    let text = error_chain(&err);
    assert!(text.contains("kvm-silent"), "{text}");
    assert!(!text.contains("bastion-fine"), "{text}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_two_bastions() {
    let outer = bastion();
    let inner = bastion();
    let target = start(SshServer::builder());
    let host = target
        .host_builder()
        .proxy_jump(outer.host_builder().name("outer"))
        .proxy_jump(inner.host_builder().name("inner"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let out = host
        .run_ok(&Cmd::new("sh").arg("-c").arg("echo $CS_LAB_ROOT"))
        .await
        .expect("run");
    assert_eq!(out.stdout_lossy().trim(), target.root().to_string_lossy());
    // The outer bastion forwarded to the inner one, the inner one to the target.
    let forwarded = |b: &SshServer, port: u16| {
        let log = std::fs::read_to_string(b.log()).expect("log");
        assert!(
            log.contains(&format!("target 127.0.0.1 port {port}")),
            "{log}"
        );
    };
    forwarded(&outer, inner.port());
    forwarded(&inner, target.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_aliases_with_proxy_jump_and_a_locked_identity() {
    let bastion = bastion();
    let target = start(SshServer::builder().locked_key());
    let tmp = tempfile::tempdir().expect("tempdir");
    let known = known_hosts_of(tmp.path(), &[&bastion, &target]);
    let config = tmp.path().join("config");
    std::fs::write(
        &config,
        format!(
            "Host lab-bastion\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {bp}\n\
             \x20   IdentityFile {bkey}\n\
             \n\
             Host lab-* !lab-bastion\n\
             \x20   HostName 127.0.0.1\n\
             \x20   User root\n\
             \x20   ProxyJump lab-bastion\n\
             \n\
             Host lab-node1\n\
             \x20   Port {tp}\n\
             \x20   IdentityFile {tkey}\n\
             \x20   User nobody-wins-too-late\n",
            bp = bastion.port(),
            bkey = bastion.client_key().display(),
            tp = target.port(),
            tkey = target.locked_key().expect("locked").display(),
        ),
    )
    .expect("write config");
    let passphrase = Secret::from_file(
        &target
            .locked_key_passphrase_file()
            .expect("passphrase file"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let host = SshHost::builder("lab-node1")
        .ssh_config(&config)
        .identity_passphrase(passphrase)
        .known_hosts(&known)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(host.addr(), format!("127.0.0.1:{}", target.port()));
    assert_eq!(host.user(), "root");
    let out = host
        .run_ok(&Cmd::new("sh").arg("-c").arg("echo $CS_LAB_ROOT"))
        .await
        .expect("run");
    assert_eq!(out.stdout_lossy().trim(), target.root().to_string_lossy());
    // Went through the bastion: it logged the forward.
    let log = std::fs::read_to_string(bastion.log()).expect("log");
    assert!(
        log.contains(&format!("target 127.0.0.1 port {}", target.port())),
        "{log}"
    );

    // Explicit builder values win: a ProxyJump of its own (to a closed port) replaces the
    // file's, and fails naming it.
    let err = SshHost::builder("lab-node1")
        .ssh_config(&config)
        .known_hosts(&known)
        .proxy_jump_via(JumpSpec::parse("root@127.0.0.1:1").expect("spec"))
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect_err("explicit jump wins");
    assert!(
        error_chain(&err).contains("through the bastion root@127.0.0.1:1"),
        "{}",
        error_chain(&err)
    );

    // A broken file is a typed error naming it.
    let bad = tmp.path().join("bad_config");
    std::fs::write(&bad, "Host x\n  Port not-a-port\n").expect("write");
    let err = SshHost::builder("x")
        .ssh_config(&bad)
        .connect()
        .await
        .expect_err("bad config");
    assert!(matches!(err, HostError::SshConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("bad_config"), "{err}");
}

/// This process's threads whose name contains `part` (`/proc/self/task/*/comm`).
fn threads_named(part: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.contains(part)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_hosts_leave_no_relay_threads_behind() {
    let bastion = bastion();
    let target = start(SshServer::builder());
    let mut hosts = Vec::new();
    for i in 0..3 {
        hosts.push(
            target
                .host_builder()
                .name(format!("leakd{i}"))
                .connect()
                .await
                .expect("direct"),
        );
        hosts.push(
            target
                .host_builder()
                .name(format!("leakj{i}"))
                .proxy_jump(bastion.host_builder().name(format!("leakb{i}")))
                .connect()
                .await
                .expect("jump"),
        );
    }
    for h in &hosts {
        h.run_ok(&Cmd::new("true")).await.expect("run");
    }
    // Two relay threads per TCP connection (3 direct, 3 to the bastion), one per channel.
    assert_eq!(threads_named("leak"), 15);
    drop(hosts);
    let started = Instant::now();
    while threads_named("leak") > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(threads_named("leak"), 0, "relay threads left behind");
}
