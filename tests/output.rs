//! Output as operators see it: tables in colour on a terminal only (and never with `NO_COLOR`
//! set), and progress with a rate (lines without a terminal, bars with the time left on one),
//! here for a `mysqldump` backup, which reports the bytes it writes.

mod common;

use std::process::Stdio;

use mysql::prelude::Queryable;

/// Runs `cleanup` under a pseudo-terminal (`script`), so that stdout is a terminal; its
/// output.
fn cleanup_on_a_terminal(root: &str, no_color: Option<&str>) -> String {
    let exe = common::example("cleanup");
    let cmd = format!("{} --root {root}", exe.display());
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env_remove("CS_DB_URL")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().expect("run script (util-linux)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tables_are_coloured_on_a_terminal_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let apt = dir.path().join("etc/apt/sources.list.d");
    std::fs::create_dir_all(&apt).unwrap();
    std::fs::write(
        apt.join("cloudstack.list.20200101T000000Z.cs-upgrade.bak"),
        "deb x",
    )
    .unwrap();
    let root = dir.path().to_str().unwrap();
    let coloured = cleanup_on_a_terminal(root, None);
    assert!(
        coloured.contains("cloudstack.list.20200101T000000Z"),
        "{coloured}"
    );
    assert!(
        coloured.contains("\u{1b}["),
        "colour on a terminal: {coloured:?}"
    );
    let plain = cleanup_on_a_terminal(root, Some("1"));
    assert!(
        plain.contains("cloudstack.list.20200101T000000Z"),
        "{plain}"
    );
    assert!(!plain.contains("\u{1b}["), "NO_COLOR=1: {plain:?}");
    // An empty NO_COLOR does not count (no-color.org).
    assert!(cleanup_on_a_terminal(root, Some("")).contains("\u{1b}["));
}

#[test]
fn a_mysqldump_backup_prints_progress_with_a_rate() {
    let server = cs_lab::mariadb();
    let db = server.database("progress_lines").unwrap();
    let schema = db.name().to_string();
    let root = server.root();
    let mut conn = cs_lab::DbUrlExt::connect(&root).expect("connect");
    conn.query_drop(format!(
        "CREATE TABLE `{schema}`.wide (id INT PRIMARY KEY, a VARCHAR(255), b VARCHAR(255))"
    ))
    .unwrap();
    conn.query_drop(format!(
        "INSERT INTO `{schema}`.wide SELECT seq, REPEAT(MD5(seq), 7), REPEAT(SHA1(seq), 6) \
         FROM `{schema}`.seq_1_to_200000"
    ))
    .unwrap();
    conn.query_drop(format!("ANALYZE TABLE `{schema}`.wide"))
        .unwrap();
    let url = format!(
        "mysql://{}:{}@{}",
        root.user,
        root.password.expose(),
        root.addr()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("b");
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let out = std::process::Command::new(common::example("backup"))
        .args(["--engine", "mysqldump", "--databases", &schema, "--out"])
        .arg(&target)
        .env("CS_DB_URL", &url)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run backup");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The dump's last line: its size, the estimate, the rate and the table it was at.
    let line = err
        .lines()
        .rfind(|l| l.starts_with("[mysqldump bytes] "))
        .unwrap_or_else(|| panic!("no mysqldump progress: {err}"));
    assert!(line.contains(" MiB of "), "{line}");
    assert!(line.contains("MiB/s"), "a rate: {line}");
    assert!(line.ends_with(&format!(": {schema}.wide")), "{line}");

    // On a terminal: bars with the rate and the time left.
    let cmd = format!(
        "{} --engine mysqldump --databases {schema} --out {}",
        common::example("backup").display(),
        out_dir.path().join("on-a-terminal").display()
    );
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("CS_DB_URL", &url)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("mysqldump bytes"), "{screen}");
    assert!(screen.contains("MiB/s"), "a rate on the bar: {screen}");
    assert!(
        screen.contains(" eta "),
        "the time left on the bar: {screen}"
    );
}
