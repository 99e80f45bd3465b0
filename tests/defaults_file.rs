//! Database credentials as operators keep them: `backup` takes the password (and port) from
//! `--defaults-file` or from `~/.my.cnf`, connects from the option file alone without `--db`,
//! refuses an option file with a password that others can read (without echoing it), and
//! without a password or a terminal says, after the server's refusal, how to give one.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use cs_lab::DbUrlExt;
use mysql::prelude::Queryable;

/// Runs `backup` with stdin from /dev/null and `HOME` at `home`; exit code and stderr.
fn backup(home: &Path, args: &[&str]) -> (i32, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let out = std::process::Command::new(common::example("backup"))
        .args(args)
        .env("HOME", home)
        .env_remove("CS_DB_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run backup");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn backup_takes_credentials_from_option_files_and_says_how_when_none() {
    let server = cs_lab::mariadb();
    let db = server.database("defaults_file").unwrap();
    let schema = db.name().to_string();
    let root = server.root();
    {
        let mut conn = root.with_database(&schema).connect().expect("connect");
        conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
            .unwrap();
        conn.query_drop("INSERT INTO t VALUES (1), (2)").unwrap();
    }
    let password = root.password.expose().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();

    // --defaults-file: password and port from the file, user and host from the URL.
    let cnf = tmp.path().join("backup.cnf");
    write(
        &cnf,
        &format!(
            "# the operator's file\n[mysqld]\nport = 1\n[client]\npassword = \"{password}\"\n\
             port = {}\n",
            server.port()
        ),
        0o600,
    );
    let cnf_arg = cnf.to_string_lossy().into_owned();
    let (code, err) = backup(
        &home,
        &[
            "--db",
            "mysql://root@127.0.0.1",
            "--defaults-file",
            &cnf_arg,
            "--out",
            &out("b1"),
            "--databases",
            &schema,
        ],
    );
    assert_eq!(code, 0, "{err}");

    // The file alone, without --db.
    write(
        &cnf,
        &format!(
            "[client]\nuser = root\nhost = 127.0.0.1\nport = {}\n!include secret.cnf\n",
            server.port()
        ),
        0o644,
    );
    write(
        &tmp.path().join("secret.cnf"),
        &format!("[client-mariadb]\npassword = {password}\n"),
        0o600,
    );
    let (code, err) = backup(
        &home,
        &[
            "--defaults-file",
            &cnf_arg,
            "--out",
            &out("b2"),
            "--databases",
            &schema,
        ],
    );
    assert_eq!(code, 0, "{err}");

    // ~/.my.cnf, read because the URL has no password.
    write(
        &home.join(".my.cnf"),
        &format!("[client]\npassword = '{password}'\n"),
        0o600,
    );
    let url = format!("mysql://root@127.0.0.1:{}", server.port());
    let (code, err) = backup(
        &home,
        &["--db", &url, "--out", &out("b3"), "--databases", &schema],
    );
    assert_eq!(code, 0, "{err}");

    // Readable by others with a password in it: refused, naming the file, never the value.
    std::fs::set_permissions(home.join(".my.cnf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = backup(
        &home,
        &["--db", &url, "--out", &out("b4"), "--databases", &schema],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(".my.cnf") && err.contains("mode 0644"),
        "{err}"
    );
    assert!(!err.contains(&password), "{err}");
    assert!(!Path::new(&out("b4")).exists());

    // No password anywhere and no terminal: the server's refusal, then the ways to give one.
    std::fs::remove_file(home.join(".my.cnf")).unwrap();
    let (code, err) = backup(
        &home,
        &["--db", &url, "--out", &out("b5"), "--databases", &schema],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Access denied"), "{err}");
    assert!(
        err.contains("no database password was given") && err.contains("--defaults-file"),
        "{err}"
    );
}

/// On a terminal (a pseudo-terminal made by util-linux's `script`), a missing password is
/// asked for, read without echo, and used.
#[test]
fn a_missing_password_is_asked_for_on_a_terminal_without_echo() {
    use std::io::{Read, Write};
    let server = cs_lab::mariadb();
    let db = server.database("prompt").unwrap();
    let schema = db.name().to_string();
    let password = server.root().password.expose().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let line = format!(
        "{} --db mysql://root@127.0.0.1:{} --out {} --databases {schema}",
        common::example("backup").display(),
        server.port(),
        out.display()
    );
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary on a terminal
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("HOME", tmp.path())
        .env_remove("CS_DB_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
                }
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let text = rx.recv_timeout(left).expect("the prompt never came");
        if text.contains("password for root@127.0.0.1") {
            break;
        }
    }
    // Typed as a person types, after the prompt: the prompt is printed just before echo is
    // turned off, so input sent in that very instant would be echoed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let text = reader.join().unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("backup of"), "{text}");
    assert!(!text.contains(&password), "the password was echoed: {text}");
    assert!(out.join("manifest.json").exists() || out.exists(), "{text}");
}
