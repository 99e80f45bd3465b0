//! `cleanup` against the lab's MariaDB and a directory of repository files: it lists the
//! parking and scratch schemas restores leave and the repository backup copies with their
//! age, selects by `--older-than`, refuses to remove without `--yes` and a terminal, removes
//! with `--yes`, and never touches the live `cloud`/`cloud_usage` schemas or a look-alike
//! schema or file.

mod common;

use std::path::Path;
use std::process::Stdio;

use cs_lab::DbUrlExt as _;
use mysql::prelude::Queryable;

/// Runs `cleanup` with stdin from /dev/null; its exit code, stdout and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let out = std::process::Command::new(common::example("cleanup"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run cleanup");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `name`s of a JSON listing's `key` (`schemas` or `repo_files`, whose `path`s are given
/// by file name).
fn names(doc: &serde_json::Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = doc[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {doc}"))
        .iter()
        .map(|e| match e["name"].as_str() {
            Some(n) => n.to_string(),
            None => Path::new(e["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        })
        .collect();
    v.sort();
    v
}

fn listing(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let (code, out, err) = run(args, env);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Schema names on the server that the test made, and the rows of the live `cloud.host`.
fn state(conn: &mut mysql::Conn) -> (Vec<String>, Vec<String>) {
    let schemas: Vec<String> = conn
        .query(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA \
             WHERE SCHEMA_NAME LIKE 'cloud%' OR SCHEMA_NAME LIKE 'mycloud%' ORDER BY 1",
        )
        .unwrap();
    let rows: Vec<String> = conn
        .query("SELECT name FROM cloud.host ORDER BY id")
        .unwrap();
    (schemas, rows)
}

fn stamp_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_lists_selects_by_age_asks_and_removes_only_its_own_leftovers() {
    let server = cs_lab::mariadb();
    let root = server.root();
    let mut conn = root.connect().expect("connect");
    let now = stamp_now();
    let old_parked = "cloud__parked_20200101t000000";
    let old_scratch = "cloud_usage__restore_20200101t000000_2";
    let new_scratch = format!("cloud__restore_{now}");
    let look_alikes = [
        "cloud__parked_old",
        "cloud__restore_20200101t000000x",
        "mycloud_parked_20200101t000000",
        "cloud__parked_20200101T000000",
    ];
    for s in [
        "cloud",
        "cloud_usage",
        old_parked,
        old_scratch,
        new_scratch.as_str(),
    ]
    .into_iter()
    .chain(look_alikes)
    {
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{s}`"))
            .unwrap();
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS `{s}`.host (id INT PRIMARY KEY, name VARCHAR(255))"
        ))
        .unwrap();
        conn.query_drop(format!(
            "INSERT IGNORE INTO `{s}`.host SELECT seq, REPEAT('x', 200) FROM `{s}`.seq_1_to_500"
        ))
        .unwrap();
    }
    conn.query_drop("UPDATE cloud.host SET name = 'kvm1' WHERE id = 1")
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let apt = dir.path().join("etc/apt/sources.list.d");
    let yum = dir.path().join("etc/yum.repos.d");
    std::fs::create_dir_all(&apt).unwrap();
    std::fs::create_dir_all(&yum).unwrap();
    let new_bak = format!("cloudstack.list.{}Z.cs-upgrade.bak", now.to_uppercase());
    let files = [
        (apt.join("cloudstack.list"), "live"),
        (
            apt.join("cloudstack.list.20200101T000000Z.cs-upgrade.bak"),
            "old",
        ),
        (apt.join(&new_bak), "new"),
        (apt.join("cloudstack.list.bak"), "look-alike"),
        (apt.join("other.cs-upgrade.bak"), "look-alike"),
        (
            yum.join("cloudstack.repo.20200101T000000Z-2.cs-upgrade.bak"),
            "old",
        ),
    ];
    for (p, text) in &files {
        std::fs::write(p, text).unwrap();
    }

    let password = root.password.expose().to_string();
    let url = format!("mysql://{}:{}@{}", root.user, password, root.addr());
    let env = [("CS_DB_URL", url.as_str())];
    let base = ["--root", dir.path().to_str().unwrap()];
    let with = |more: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(more.iter().copied()).collect()
    };

    // Everything it made, nothing else, with size and age.
    let all = listing(&with(&["--json"]), &env);
    let mut want = vec![
        old_parked.to_string(),
        old_scratch.to_string(),
        new_scratch.clone(),
    ];
    want.sort();
    assert_eq!(names(&all, "schemas"), want);
    assert_eq!(
        names(&all, "repo_files"),
        vec![
            "cloudstack.list.20200101T000000Z.cs-upgrade.bak".to_string(),
            new_bak.clone(),
            "cloudstack.repo.20200101T000000Z-2.cs-upgrade.bak".to_string(),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let parked = all["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == old_parked)
        .unwrap();
    assert_eq!(parked["kind"], "parked");
    assert_eq!(parked["live"], "cloud");
    assert_eq!(parked["tables"], 1, "{all:#}");
    assert!(parked["bytes"].as_u64().unwrap() > 50_000, "{parked}");
    assert!(parked["age_seconds"].as_u64().unwrap() > 5 * 365 * 86_400);

    // The age filter keeps the old ones only.
    let old = listing(&with(&["--older-than", "7d", "--json"]), &env);
    assert_eq!(
        names(&old, "schemas"),
        vec![old_parked.to_string(), old_scratch.to_string()]
    );
    assert_eq!(names(&old, "repo_files").len(), 2, "{old}");

    // The table for people: aligned columns, no colour when stdout is not a terminal.
    let (code, out, err) = run(&with(&["--older-than", "7d"]), &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains('\u{1b}'),
        "no escape codes in a pipe: {out:?}"
    );
    let header = out.lines().next().unwrap();
    let row = out.lines().find(|l| l.contains(old_parked)).unwrap();
    assert!(header.starts_with("KIND"), "{out}");
    assert_eq!(
        header.find("SCHEMA"),
        row.find(old_parked),
        "aligned columns:\n{out}"
    );
    assert!(out.contains("2 schema(s), 2 file(s)"), "{out}");
    assert!(!out.contains(&password) && !err.contains(&password));

    // Removal without --yes and without a terminal: refused, nothing changed.
    let before = state(&mut conn);
    let (code, out, err) = run(&with(&["--older-than", "7d", "--remove"]), &env);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("pass --yes") && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(state(&mut conn), before);
    for (p, _) in &files {
        assert!(p.exists(), "{} removed without --yes", p.display());
    }

    // With --yes: the old leftovers go; the new, the live schemas and the look-alikes stay.
    let removed = listing(
        &with(&["--older-than", "7d", "--remove", "--yes", "--json"]),
        &env,
    );
    assert_eq!(removed["removed"], true);
    let (schemas, rows) = state(&mut conn);
    assert!(!schemas.contains(&old_parked.to_string()));
    assert!(!schemas.contains(&old_scratch.to_string()));
    for keep in ["cloud", "cloud_usage", new_scratch.as_str()]
        .into_iter()
        .chain(look_alikes)
    {
        assert!(
            schemas.contains(&keep.to_string()),
            "{keep} dropped: {schemas:?}"
        );
    }
    assert_eq!(rows, before.1, "the live cloud.host is as it was");
    for (p, kind) in &files {
        assert_eq!(p.exists(), *kind != "old", "{}", p.display());
    }
    let rest = listing(&with(&["--json"]), &env);
    assert_eq!(names(&rest, "schemas"), vec![new_scratch.clone()]);
    assert_eq!(names(&rest, "repo_files"), vec![new_bak.clone()]);

    // The lab server outlives the test binary's other users: leave it as found.
    for s in [new_scratch.as_str(), "cloud", "cloud_usage"]
        .into_iter()
        .chain(look_alikes)
    {
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{s}`"))
            .unwrap();
    }
}
