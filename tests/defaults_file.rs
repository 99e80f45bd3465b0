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
