//! `SshHost` against a real OpenSSH server from the lab: the host conformance suite, host-key
//! checking, connect timeouts, authentication methods, reconnection and concurrent use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cs_core::{
    Cmd, Host, HostError, HostExt, LocalHost, Secret, SshHost, conformance, error_chain,
};
use cs_lab::{SshServer, sshd};

/// Runs a local helper command (ssh-keygen, ssh-agent) and returns its stdout.
async fn local(cmd: Cmd) -> String {
    let out = LocalHost::new()
        .run_ok(&cmd.timeout(Duration::from_secs(30)))
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    out.stdout_lossy()
}

/// A fresh ed25519 key pair in `dir`; returns the private key path.
async fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    local(
        Cmd::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(path.to_string_lossy()),
    )
    .await;
    path
}

fn public_key_of(private: &Path) -> String {
    let text = std::fs::read_to_string(private.with_extension("pub"))
        .expect("ssh-keygen wrote the public key");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_host_conforms() {
    let server = sshd();
    let host = server.connect().await.expect("connect to the lab sshd");
    conformance::run_all(&host, &server.root().join("conformance")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_with_advice() {
    let server = sshd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = new_key(tmp.path(), "other_host_key").await;
    let known = tmp.path().join("known_hosts");
    let entry = format!("[127.0.0.1]:{}", server.port());
    std::fs::write(&known, format!("{entry} {}\n", public_key_of(&other))).expect("write");
    for accept_new in [false, true] {
        let err = server
            .host_builder()
            .known_hosts(&known)
            .accept_new_host_keys(accept_new)
            .connect()
            .await
            .expect_err("a changed key must be refused");
        assert!(matches!(err, HostError::HostKey { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(server.addr()), "{text}");
        assert!(
            text.contains(&format!("ssh-keygen -R '{entry}' -f {}", known.display())),
            "{text}"
        );
    }
    // The file is left as it was.
    let after = std::fs::read_to_string(&known).expect("read");
    assert_eq!(after.lines().count(), 1, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_by_default_and_added_on_request() {
    let server = sshd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let known = tmp.path().join("ssh").join("known_hosts");
    let err = server
        .host_builder()
        .known_hosts(&known)
        .connect()
        .await
        .expect_err("an unknown key must be refused by default");
    assert!(matches!(err, HostError::HostKey { .. }), "{err:?}");
    assert!(err.to_string().contains("accept_new_host_keys"), "{err}");
    assert!(!known.exists(), "nothing written without the option");

    let host = server
        .host_builder()
        .known_hosts(&known)
        .accept_new_host_keys(true)
        .connect()
        .await
        .expect("accepted with the option");
    host.run_ok(&Cmd::new("true")).await.expect("run");
    let text = std::fs::read_to_string(&known).expect("known_hosts written");
    let server_key = std::fs::read_to_string(server.host_key_pub()).expect("read");
    let server_key: Vec<&str> = server_key.split_whitespace().take(2).collect();
    assert_eq!(
        text,
        format!("[127.0.0.1]:{} {}\n", server.port(), server_key.join(" "))
    );
    // Now known: strict checking passes, even past lines libssh2 cannot parse.
    std::fs::write(
        &known,
        format!("# comment\nother.example ssh-unknown-type AAAAxyz\n{text}"),
    )
    .expect("write");
    server
        .host_builder()
        .known_hosts(&known)
        .connect()
        .await
        .expect("strict connect with the recorded key");
}

#[tokio::test]
async fn closed_port_fails_fast_naming_the_address() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let err = SshHost::builder(&addr)
        .key_file("/nonexistent")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, HostError::Connect { .. } | HostError::Timeout { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn silent_listener_times_out_within_the_connect_timeout() {
    // Accepts TCP (the kernel completes the handshake) but never speaks SSH.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let started = Instant::now();
    let err = SshHost::builder(&addr)
        .key_file("/nonexistent")
        .connect_timeout(Duration::from_millis(700))
        .connect()
        .await
        .expect_err("no SSH banner ever comes");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        matches!(err, HostError::Timeout { .. } | HostError::Connect { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr), "{err}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_auth_works_and_an_unknown_key_is_refused() {
    let server = sshd();
    let host = SshHost::builder(server.addr())
        .user("root")
        .key_file(server.client_key())
        .known_hosts(server.known_hosts())
        .connect()
        .await
        .expect("key auth");
    let out = host.run_ok(&Cmd::new("id").arg("-un")).await.expect("run");
    assert_eq!(out.stdout_lossy().trim(), "root");
    assert_eq!(host.name(), format!("root@{}", server.addr()));

    let tmp = tempfile::tempdir().expect("tempdir");
    let stranger = new_key(tmp.path(), "stranger").await;
    let err = SshHost::builder(server.addr())
        .key_file(&stranger)
        .known_hosts(server.known_hosts())
        .connect()
        .await
        .expect_err("an unauthorized key is refused");
    assert!(matches!(err, HostError::Auth { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_with_passphrase_authenticates() {
    let server = sshd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("locked");
    local(
        Cmd::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-C", "locked", "-N"])
            .secret_arg(&Secret::new("correct horse"))
            .arg("-f")
            .arg(key.to_string_lossy()),
    )
    .await;
    server
        .authorize_key(&public_key_of(&key))
        .expect("authorize");
    // A bare builder: the server's own carries the unlocked client key as well.
    let host = SshHost::builder(server.addr())
        .key_file_with_passphrase(&key, Secret::new("correct horse"))
        .known_hosts(server.known_hosts())
        .connect()
        .await
        .expect("passphrase-protected key");
    host.run_ok(&Cmd::new("true")).await.expect("run");

    let err = SshHost::builder(server.addr())
        .key_file_with_passphrase(&key, Secret::new("battery staple"))
        .known_hosts(server.known_hosts())
        .connect()
        .await
        .expect_err("wrong passphrase");
    assert!(matches!(err, HostError::Key { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with(&format!("wrong passphrase for {}", key.display())),
        "{err}"
    );
    assert!(
        !format!("{err} {err:?}").contains("battery staple"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_works_and_never_shows_the_password() {
    let server = SshServer::builder()
        .password_login("cslab-ssh-test")
        .start()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let user = server.password_user().expect("password user");
    let password = server.password().expect("password").clone();
    let host = SshHost::builder(server.addr())
        .user(user)
        .password(password.clone())
        .known_hosts(server.known_hosts())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let out = host.run_ok(&Cmd::new("id").arg("-un")).await.expect("run");
    assert_eq!(out.stdout_lossy().trim(), user);

    let wrong = Secret::new("not-the-password-42");
    let builder = SshHost::builder(server.addr())
        .user(user)
        .password(wrong.clone())
        .known_hosts(server.known_hosts());
    assert!(!format!("{builder:?}").contains(wrong.expose()));
    let err = builder.connect().await.expect_err("wrong password");
    assert!(matches!(err, HostError::Auth { .. }), "{err:?}");
    let text = format!("{} {err:?}", error_chain(&err));
    assert!(
        !text.contains(wrong.expose()) && !text.contains(password.expose()),
        "{text}"
    );
    assert!(!format!("{host:?}").contains(password.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_auth_uses_the_agent_socket() {
    let server = sshd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock = tmp.path().join("agent.sock");
    let sock_s = sock.to_string_lossy().into_owned();
    let started = local(Cmd::new("ssh-agent").arg("-s").arg("-a").arg(&sock_s)).await;
    let pid = started
        .split(';')
        .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID="))
        .expect("ssh-agent prints its pid")
        .to_string();
    let result = async {
        local(
            Cmd::new("ssh-add")
                .arg(server.client_key().to_string_lossy())
                .env("SSH_AUTH_SOCK", &sock_s),
        )
        .await;
        let host = SshHost::builder(server.addr())
            .agent_socket(&sock)
            .known_hosts(server.known_hosts())
            .connect()
            .await?;
        host.run_ok(&Cmd::new("true")).await.map(drop)
    }
    .await;
    local(Cmd::new("kill").arg(&pid)).await;
    result.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_one_host() {
    let server = sshd();
    let host = Arc::new(server.connect().await.expect("connect"));
    let scratch = server.root().join("concurrent");
    host.create_dir_all(&scratch, 0o755).await.expect("mkdir");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let host = host.clone();
        let scratch = scratch.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let word = format!("task-{t}-{i}");
                let out = host
                    .run_ok(&Cmd::new("printf").arg("%s").arg(&word))
                    .await
                    .expect("run");
                assert_eq!(out.stdout_lossy(), word);
                let file = scratch.join(&word);
                host.write_atomic(&file, word.as_bytes(), None)
                    .await
                    .expect("write");
                assert_eq!(host.read(&file).await.expect("read"), word.as_bytes());
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(host.list_dir(&scratch).await.expect("list").len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_session_is_replaced() {
    let server = sshd();
    let host = server.connect().await.expect("connect");
    // Kill this connection's sshd process shortly after the command returns.
    host.run_ok(
        &Cmd::new("sh")
            .arg("-c")
            .arg("(sleep 0.3; kill -KILL $PPID) </dev/null >/dev/null 2>&1 &"),
    )
    .await
    .expect("run");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = host
        .run_ok(&Cmd::new("printf").arg("alive"))
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(out.stdout, b"alive");
    assert!(host.exists(Path::new("/")).await.expect("stat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_ins_in_the_bin_dir_come_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("node");
    let server = SshServer::builder()
        .root(&root)
        .start()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(server.root(), root);
    let stand_in = server.bin_dir().join("systemctl");
    std::fs::write(&stand_in, "#!/bin/sh\necho \"stand-in systemctl $*\"\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let host = server.connect().await.expect("connect");
    let out = host
        .run_ok(&Cmd::new("systemctl").arg("restart").arg("cloudstack-agent"))
        .await
        .expect("run");
    assert_eq!(
        out.stdout_lossy(),
        "stand-in systemctl restart cloudstack-agent\n"
    );
    let out = host
        .run_ok(&Cmd::new("sh").arg("-c").arg("printf %s \"$CS_LAB_ROOT\""))
        .await
        .expect("run");
    assert_eq!(out.stdout_lossy(), root.to_string_lossy());
}

#[tokio::test]
async fn command_timeout_default_applies() {
    let server = sshd();
    let host = server
        .host_builder()
        .command_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    let err = host
        .run(&Cmd::new("sleep").arg("10"))
        .await
        .expect_err("times out");
    assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
    // A command's own timeout wins over the default.
    host.run_ok(&Cmd::new("sleep").arg("0.5").timeout(Duration::from_secs(5)))
        .await
        .expect("own timeout");
}

/// A frozen node answers nothing: the command in progress never finishes and a new connection
/// gets no greeting; thawed, the stalled call ends with its timeout and new work goes through.
///
/// How long `SshHost` takes to give up while the node stays frozen is its own business (it
/// waits on the silent session when it drops it); this test bounds every wait by thawing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_stalls_its_command_and_thaw_brings_it_back() {
    let server = SshServer::start().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let host = Arc::new(
        server
            .host_builder()
            .command_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect"),
    );
    let running = {
        let host = host.clone();
        tokio::spawn(async move {
            let cmd = Cmd::new("sh")
                .arg("-c")
                .arg("echo start; sleep 1; echo end");
            host.run(&cmd).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .freeze()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert!(server.is_frozen());

    // Twice the command's timeout and more: still no answer from the node.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A new connection is not refused: it hangs until the client gives up.
    let started = Instant::now();
    let err = server
        .host_builder()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("no greeting from a frozen sshd");
    assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    if running.is_finished() {
        let result = running.await.expect("join");
        let err = result.expect_err("a frozen node never finishes the command");
        assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
    } else {
        server
            .thaw()
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let result = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("the stalled call returns once the node answers again")
            .expect("join");
        let err = result.expect_err("the command ran past its timeout while frozen");
        assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
    }

    server
        .thaw()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert!(!server.is_frozen());
    let fresh = server.connect().await.expect("connect after thaw");
    let out = fresh
        .run_ok(
            &Cmd::new("printf")
                .arg("back")
                .timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(out.stdout, b"back");
    // The first connection comes back too.
    let out = host
        .run_ok(
            &Cmd::new("printf")
                .arg("again")
                .timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(out.stdout, b"again");
}

/// A command that prints nothing for longer than the silence bound runs to its end while the
/// node answers keepalives; once the node goes silent, a command without a deadline of its own
/// fails within the bound, naming the node, instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_fails_its_command_within_the_bound_naming_it() {
    let server = SshServer::start().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let reply = Duration::from_secs(4);
    let host = Arc::new(
        server
            .host_builder()
            .name("kvm-silent")
            .deadlines(cs_core::Deadlines::quick(reply))
            .no_command_timeout()
            .connect()
            .await
            .expect("connect"),
    );
    // Quiet but alive: keepalives are answered.
    let started = Instant::now();
    host.run_ok(&Cmd::new("sleep").arg("9"))
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert!(started.elapsed() >= Duration::from_secs(9));

    let running = {
        let host = host.clone();
        tokio::spawn(async move { host.run(&Cmd::new("sleep").arg("60")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .freeze()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let frozen = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), running).await;
    let took = frozen.elapsed();
    server
        .thaw()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let err = result
        .expect("the command still waits on a silent node")
        .expect("join")
        .expect_err("a silent node cannot finish the command");
    // The bound, plus a little scheduling.
    assert!(took < reply + Duration::from_secs(2), "took {took:?}");
    assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
    let text = error_chain(&err);
    assert!(
        text.contains("kvm-silent") && text.contains("stopped answering"),
        "{text}"
    );
    // The session was dropped: the next command connects again and works.
    let out = host
        .run_ok(&Cmd::new("printf").arg("back"))
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(out.stdout, b"back");
}

/// A host key marked `@revoked` is refused even where a plain line records it, as OpenSSH
/// does; the same file hashed with `ssh-keygen -H` still lets the host in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_host_keys_are_refused_and_hashed_entries_match() {
    let server = sshd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let recorded = std::fs::read_to_string(server.known_hosts()).expect("known_hosts");
    let pub_key = public_key_of(&server.host_key_pub());
    let entry = format!("[127.0.0.1]:{}", server.port());

    let hashed = tmp.path().join("hashed");
    std::fs::write(&hashed, &recorded).unwrap();
    local(
        Cmd::new("ssh-keygen")
            .args(["-q", "-H", "-f"])
            .arg(hashed.to_string_lossy()),
    )
    .await;
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let host = SshHost::builder(server.addr())
        .key_file(server.client_key())
        .known_hosts(&hashed)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    host.run_ok(&Cmd::new("true")).await.expect("run");

    let revoked = tmp.path().join("revoked");
    std::fs::write(&revoked, format!("{recorded}@revoked {entry} {pub_key}\n")).unwrap();
    let err = SshHost::builder(server.addr())
        .key_file(server.client_key())
        .known_hosts(&revoked)
        .connect()
        .await
        .expect_err("a revoked key is refused");
    assert!(matches!(err, HostError::HostKey { .. }), "{err:?}");
    let text = error_chain(&err);
    assert!(text.contains("@revoked") && text.contains(&entry), "{text}");
}

/// A file read from a node that goes silent fails within the reply bound, naming the node,
/// and leaves no session behind that would wait on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_read_from_a_silent_node_fails_within_the_bound() {
    let server = SshServer::start().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let reply = Duration::from_secs(3);
    let host = server
        .host_builder()
        .name("kvm-quiet")
        .deadlines(cs_core::Deadlines::quick(reply))
        .connect()
        .await
        .expect("connect");
    let path = server.root().join("etc-file");
    std::fs::write(&path, b"content").unwrap();
    assert_eq!(host.read(&path).await.expect("read"), b"content");
    server
        .freeze()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let frozen = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), host.read(&path)).await;
    let took = frozen.elapsed();
    server
        .thaw()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let err = result
        .expect("the read still waits on a silent node")
        .expect_err("a silent node cannot send the file");
    // At most one reply period (libssh2 gives up sooner: its blocking wait ends when a
    // keepalive goes unanswered); the session is then cut, not waited on.
    assert!(took < reply + Duration::from_secs(2), "took {took:?}");
    let text = error_chain(&err);
    assert!(text.contains("kvm-quiet"), "{text}");
}

/// The operator account's SSH host on the shared server: logged in as `cs-lab-op`, root
/// through sudo with its password.
async fn sudo_host() -> SshHost {
    let server = sshd();
    let builder = server
        .sudo_host_builder()
        .unwrap_or_else(|e| panic!("lab operator: {}", error_chain(&e)));
    builder.connect().await.expect("connect as the operator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_host_with_sudo_conforms_as_root() {
    let server = sshd();
    let host = sudo_host().await;
    assert_eq!(host.user(), cs_lab::OPERATOR_USER);
    // Commands run as root, in the operator's own login.
    let id = host.run_ok(&Cmd::new("id").arg("-u")).await.expect("id -u");
    assert_eq!(id.stdout_lossy().trim(), "0");
    let who = host
        .run_ok(&Cmd::new("sh").arg("-c").arg("echo $SUDO_USER"))
        .await
        .expect("SUDO_USER");
    assert_eq!(who.stdout_lossy().trim(), cs_lab::OPERATOR_USER);
    // A directory only root may enter: SFTP as the operator could not write there.
    let scratch = server.root().join("conformance-sudo");
    host.create_dir_all(&scratch, 0o700)
        .await
        .expect("mkdir as root");
    let meta = host.stat(&scratch).await.expect("stat");
    assert_eq!((meta.uid, meta.mode), (0, 0o700));
    conformance::run_all(&host, &scratch.join("suite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_keeps_the_commands_stdin_and_never_shows_the_password() {
    let host = sudo_host().await;
    let op = cs_lab::operator().expect("operator");
    let out = host
        .run_ok(&Cmd::new("cat").stdin(&b"first line\nsecond\n"[..]))
        .await
        .expect("cat");
    assert_eq!(out.stdout, b"first line\nsecond\n");
    assert!(out.stderr.is_empty(), "{}", out.stderr_lossy());
    // Twice on one connection: a cached sudo credential must not leave the password line on
    // the command's standard input.
    let again = host.run_ok(&Cmd::new("cat")).await.expect("cat");
    assert!(again.stdout.is_empty(), "{}", again.stdout_lossy());
    // Not on any command line root can see while the command runs.
    let ps = host
        .run_ok(&Cmd::new("ps").args(["-eo", "args"]))
        .await
        .expect("ps");
    assert!(!ps.stdout_lossy().contains(op.password().expose()));
    assert!(!format!("{host:?}").contains(op.password().expose()));
    // sudo's own command line (which it logs) holds neither the command nor its secret
    // arguments: the command's parent is sudo.
    let sudo_args = host
        .run_ok(
            &Cmd::new("sh")
                .arg("-c")
                .arg("ps -o args= -p $PPID")
                .arg("sh")
                .secret_arg(&Secret::new("secret-argument-42")),
        )
        .await
        .expect("ps of sudo");
    let text = sudo_args.stdout_lossy();
    assert!(text.starts_with("sudo "), "{text}");
    assert!(
        !text.contains("secret-argument-42") && !text.contains("ps -o"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sudo_password_is_a_typed_error_in_time() {
    let server = sshd();
    let op = cs_lab::operator().expect("operator");
    let host = server
        .host_builder()
        .user(op.user())
        .sudo(cs_core::Sudo::with_password(Secret::new(
            "not-the-password",
        )))
        .connect()
        .await
        .expect("login works: only sudo is refused");
    let started = Instant::now();
    let err = host
        .run(
            &Cmd::new("cat")
                .stdin(&b"data\nmore\n"[..])
                .timeout(Duration::from_secs(60)),
        )
        .await
        .expect_err("a wrong password must be refused");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            &err,
            HostError::Sudo { reason: cs_core::SudoRefusal::IncorrectPassword, user, .. }
                if user == cs_lab::OPERATOR_USER
        ),
        "{err:?}"
    );
    let text = error_chain(&err);
    assert!(text.contains("incorrect password"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    // File operations too.
    let err = host
        .read(Path::new("/etc/hostname"))
        .await
        .expect_err("refused");
    assert!(matches!(err, HostError::Sudo { .. }), "{err:?}");

    // No password where the sudoers rule asks for one: `sudo -n` says so at once.
    let host = server
        .host_builder()
        .user(op.user())
        .sudo(cs_core::Sudo::without_password())
        .connect()
        .await
        .expect("login");
    let err = host.run(&Cmd::new("true")).await.expect_err("refused");
    assert!(
        matches!(
            &err,
            HostError::Sudo {
                reason: cs_core::SudoRefusal::PasswordRequired,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("a password is required"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_not_in_sudoers_is_a_typed_error() {
    let server = sshd();
    let nosudo = cs_lab::operator_without_sudo().expect("account without sudo");
    let host = server
        .host_builder()
        .user(nosudo.user())
        .sudo(cs_core::Sudo::with_password(nosudo.password().clone()))
        .connect()
        .await
        .expect("login works: only sudo is refused");
    let started = Instant::now();
    let err = host
        .stat(Path::new("/etc"))
        .await
        .expect_err("not in sudoers");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            &err,
            HostError::Sudo {
                reason: cs_core::SudoRefusal::NotInSudoers,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not in the sudoers file"), "{err}");
    assert!(!error_chain(&err).contains(nosudo.password().expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_command_under_sudo_is_killed_as_root() {
    let server = sshd();
    let host = sudo_host().await;
    let pid_file = server.root().join("sudo-timeout.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let err = host
        .run(
            &Cmd::new("sh")
                .arg("-c")
                .arg(script)
                .timeout(Duration::from_secs(2)),
        )
        .await
        .expect_err("times out");
    assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
    let pid = std::fs::read_to_string(&pid_file).expect("pid written by the command");
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    // The command ran as root: only a kill through sudo ends it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !proc_dir.exists(),
        "the root `sleep` ({}) still runs",
        pid.trim()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nopasswd_rule_works_with_and_without_a_password() {
    let server = sshd();
    let np = cs_lab::operator_nopasswd().expect("NOPASSWD account");
    let dir = server.root().join("nopasswd");
    for sudo in [
        cs_core::Sudo::without_password(),
        // sudo asks for nothing: the root shell takes the password line off the command's
        // input itself.
        cs_core::Sudo::with_password(np.password().clone()),
    ] {
        let with_password = sudo.password().is_some();
        let host = server
            .host_builder()
            .user(np.user())
            .sudo(sudo)
            .connect()
            .await
            .expect("login");
        let id = host.run_ok(&Cmd::new("id").arg("-u")).await.expect("id");
        assert_eq!(id.stdout_lossy().trim(), "0");
        let out = host
            .run_ok(&Cmd::new("cat").stdin(&b"only this\n"[..]))
            .await
            .expect("cat");
        assert_eq!(
            out.stdout, b"only this\n",
            "password given: {with_password}"
        );
        host.create_dir_all(&dir, 0o700).await.expect("mkdir");
        let f = dir.join(format!("f-{with_password}"));
        host.write_atomic(&f, b"root's", Some(0o600))
            .await
            .expect("write");
        assert_eq!(host.read(&f).await.expect("read"), b"root's");
        assert_eq!(host.stat(&f).await.expect("stat").uid, 0);
        host.remove_file(&f).await.expect("remove");
        assert!(host.stat(&f).await.expect_err("gone").is_not_found());
    }
}
