//! The destructive commands ask first: fed no `--yes` and no terminal (stdin from /dev/null, as
//! under cron or CI), `upgrade` (a run and `--rollback`), `restore` (a swap and `--replace`),
//! `agent-upgrade` (a run), `rewrite-repo` (when it would write) and `harden --fix` refuse with
//! a clear message and exit code 2, and change nothing; with `--yes` they go ahead.
//! `restore --scratch-only`, `upgrade --dry-run`, `agent-upgrade --dry-run`, `rewrite-repo
//! --dry-run` and `harden` without `--fix` never ask.

mod common;

use std::process::Stdio;

use cs_backup::{BackupOptions, NativeEngine, backup};
use cs_core::NoProgress;
use cs_lab::DbUrlExt;
use mysql::prelude::Queryable;

/// Runs an example with stdin from /dev/null; its exit code, stdout and stderr.
fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binaries
    let out = std::process::Command::new(common::example(name))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a refusal for want of `--yes`: exit 2, the reason and the way out on stderr.
fn assert_refused(what: &str, (code, out, err): &(i32, String, String)) {
    assert_eq!(*code, 2, "{what}: {out}{err}");
    assert!(
        err.contains("not confirmed: no terminal to ask on (pass --yes"),
        "{what}: {err}"
    );
    assert!(err.contains("nothing changed"), "{what}: {err}");
}

/// Every row of `schema.parent`, and the schemas whose name starts with `prefix`.
fn state(url: &cs_core::DbUrl, schema: &str, prefix: &str) -> (Vec<(i64, String)>, Vec<String>) {
    let mut conn = url.connect().expect("connect");
    let rows: Vec<(i64, String)> = conn
        .query(format!(
            "SELECT id, name FROM `{schema}`.parent ORDER BY id"
        ))
        .expect("read parent");
    let schemas: Vec<String> = conn
        .exec(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
            (format!("{prefix}%"),),
        )
        .expect("list schemas");
    (rows, schemas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_swap_and_replace_refuse_without_yes_and_a_terminal_and_change_nothing() {
    let server = cs_lab::mariadb();
    let mut db = server.database("confirm_restore").unwrap();
    let schema = db.name().to_string();
    let root = server.root();
    {
        let mut conn = root.with_database(&schema).connect().expect("connect");
        conn.query_drop("CREATE TABLE parent (id BIGINT PRIMARY KEY, name VARCHAR(20))")
            .unwrap();
        conn.query_drop("INSERT INTO parent VALUES (1, 'backed up'), (2, 'two')")
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let options = BackupOptions::default()
        .databases(vec![schema.clone()])
        .threads(1);
    backup(&NativeEngine::new(), &root, &dir, &options, &NoProgress)
        .await
        .expect("backup");
    root.with_database(&schema)
        .connect()
        .unwrap()
        .query_drop("UPDATE parent SET name = 'changed since' WHERE id = 1")
        .unwrap();
    let before = state(&root, &schema, &format!("{schema}__"));
    assert_eq!(before.0[0].1, "changed since");
    assert!(before.1.is_empty(), "{:?}", before.1);

    let password = root.password.expose().to_string();
    let url = format!("mysql://{}:{}@{}", root.user, password, root.addr());
    let env = [("CS_DB_URL", url.as_str())];
    let from = dir.to_str().unwrap();
    // A connection on the live schema, as a running management server holds: the question
    // says so.
    let cloudstack = root.with_database(&schema).connect().expect("connect");
    for args in [vec!["--from", from], vec!["--from", from, "--replace"]] {
        let result = run("restore", &args, &env);
        assert!(
            result.2.contains("1 other connection uses them now")
                && result.2.contains("CloudStack looks to be running"),
            "{}",
            result.2
        );
        assert_refused(&format!("restore {args:?}"), &result);
        assert!(
            result.2.contains(&format!("`{schema}`")),
            "names the schema: {}",
            result.2
        );
        assert!(!result.2.contains(&password), "{}", result.2);
        assert_eq!(
            state(&root, &schema, &format!("{schema}__")),
            before,
            "restore {args:?} changed the database without --yes"
        );
    }

    drop(cloudstack);

    // A scratch-only restore leaves the live schema alone: it does not ask.
    // With --json its answer is one JSON document.
    let (code, out, err) = run(
        "restore",
        &["--from", from, "--scratch-only", "--json"],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(j["schemas"][0]["source"], schema.as_str(), "{j}");
    assert!(
        j["schemas"][0]["scratch"]
            .as_str()
            .is_some_and(|s| s.contains("__restore_")),
        "{j}"
    );
    let after_scratch = state(&root, &schema, &format!("{schema}__"));
    for s in &after_scratch.1 {
        db.adopt(s);
    }
    assert_eq!(after_scratch.0, before.0);
    assert_eq!(after_scratch.1.len(), 1, "{:?}", after_scratch.1);
    assert!(after_scratch.1[0].contains("__restore_"));
    // Scratch names carry the second: drop it, so the swap below may start within the same one.
    root.connect()
        .unwrap()
        .query_drop(format!("DROP DATABASE `{}`", after_scratch.1[0]))
        .unwrap();

    // With --yes the swap goes ahead: the row is back, the replaced table parked.
    let (code, out, err) = run("restore", &["--from", from, "--yes"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("parked in"), "{out}");
    let after = state(&root, &schema, &format!("{schema}__"));
    for s in &after.1 {
        db.adopt(s);
    }
    assert_eq!(after.0[0].1, "backed up");
    assert!(
        after.1.iter().any(|s| s.contains("__parked_")),
        "{:?}",
        after.1
    );
}

#[test]
fn upgrade_and_rollback_refuse_without_yes_and_a_terminal_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::nowhere_config(tmp.path());
    let config = config.to_str().unwrap();
    let env = [
        ("CS_DB_PASSWORD", "planted-db-secret"),
        ("CLOUDSTACK_KEY", "key"),
        ("CLOUDSTACK_SECRET", "planted-api-secret"),
    ];
    let backups = tmp.path().join("backups");
    let before = common::files(tmp.path());

    // The dry run never asks (here it fails for want of the servers, not of an answer).
    let (code, out, err) = run("upgrade", &["--config", config, "--dry-run"], &env);
    assert!(
        !err.contains("not confirmed") && !err.contains("about to"),
        "exit {code}: {out}{err}"
    );
    assert!(err.contains("cannot reach"), "exit {code}: {out}{err}");

    for args in [
        vec!["--config", config],
        vec!["--config", config, "--rollback"],
        vec![
            "--config",
            config,
            "--rollback",
            "--discard-changes-since",
            "2026-12-07 10:15:00",
        ],
    ] {
        let result = run("upgrade", &args, &env);
        assert_refused(&format!("upgrade {args:?}"), &result);
        let err = &result.2;
        assert!(err.contains("upgrade: about to"), "{err}");
        assert!(!err.contains("planted"), "a secret on the terminal: {err}");
        assert!(
            !err.contains("cannot reach"),
            "it tried the nodes first: {err}"
        );
        if args.contains(&"--rollback") {
            assert!(err.contains("roll back every applied step"), "{err}");
        } else {
            assert!(err.contains("the downtime starts"), "{err}");
        }
        if args.contains(&"--discard-changes-since") {
            assert!(err.contains("discards what the cloud wrote since"), "{err}");
        }
        assert_eq!(
            common::files(tmp.path()),
            before,
            "upgrade {args:?} wrote under {} without --yes",
            backups.display()
        );
    }

    // With --yes the run goes ahead, and fails at once: no node is there.
    let (code, out, err) = run("upgrade", &["--config", config, "--yes"], &env);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!err.contains("not confirmed"), "{err}");
    assert!(err.contains("cannot reach mgmt1"), "{err}");
    assert!(!err.contains("planted"), "a secret on the terminal: {err}");
}

/// On a lab cloud ready to upgrade: `upgrade` and `upgrade --rollback` without `--yes` and
/// without a terminal refuse, and the cloud is as it was (databases, packages, hosts, guests:
/// the e2e snapshot), with no run journal written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_refuses_on_a_lab_and_the_cloud_is_unchanged() {
    let (lab, config, path) = common::lab_for_upgrade("confirm").await;
    let before = common::snapshot(&lab).await;
    let config_path = path.to_str().unwrap();
    let modes = |lab: &cs_lab::Lab| -> Vec<String> {
        lab.management_servers()
            .iter()
            .flat_map(|m| {
                let root = m.root().to_path_buf();
                common::files(&root)
                    .into_iter()
                    .filter_map(move |f| {
                        let meta = std::fs::metadata(root.join(&f)).ok()?;
                        Some(format!(
                            "{f} {:o}",
                            std::os::unix::fs::PermissionsExt::mode(&meta.permissions())
                        ))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    // Open a secret file up, as the hardening report flags: `harden --fix` would tighten it.
    let first = lab.management_servers()[0].root().to_path_buf();
    let secret = common::files(&first)
        .into_iter()
        .find(|f| f.ends_with("db.properties"))
        .expect("db.properties in the lab");
    let original = std::fs::metadata(first.join(&secret))
        .unwrap()
        .permissions();
    std::fs::set_permissions(
        first.join(&secret),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let modes_before = modes(&lab);
    let result = run("harden", &["--config", config_path, "--fix"], &[]);
    assert_refused("harden --fix", &result);
    assert!(
        result.2.contains("harden: about to tighten"),
        "{}",
        result.2
    );
    assert!(!result.1.contains("fixed"), "{}", result.1);
    assert_eq!(modes(&lab), modes_before, "harden --fix changed a mode");
    std::fs::set_permissions(first.join(&secret), original).unwrap();
    for args in [
        vec!["--config", config_path],
        vec!["--config", config_path, "--resume"],
        vec!["--config", config_path, "--rollback"],
    ] {
        let result = run("upgrade", &args, &[]);
        if args.contains(&"--resume") {
            // Nothing to resume is said before anything is asked.
            assert_eq!(result.0, 2, "{}{}", result.1, result.2);
            assert!(result.2.contains("nothing to resume"), "{}", result.2);
        } else {
            assert_refused(&format!("upgrade {args:?}"), &result);
        }
        assert!(
            !result.2.contains(lab.db_url().password.expose()),
            "{}",
            result.2
        );
    }
    assert!(
        !cs_upgrade::run_dir(&config).join("journal.jsonl").exists(),
        "a journal was written"
    );
    common::assert_same(&before, &common::snapshot(&lab).await);
}

#[test]
fn harden_fix_refuses_without_yes_before_reaching_any_node() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::nowhere_config(tmp.path());
    let config = config.to_str().unwrap();
    let env = [
        ("CS_DB_PASSWORD", "planted-db-secret"),
        ("CLOUDSTACK_KEY", "key"),
        ("CLOUDSTACK_SECRET", "planted-api-secret"),
    ];
    let before = common::files(tmp.path());
    let result = run("harden", &["--config", config, "--fix"], &env);
    assert_refused("harden --fix", &result);
    assert!(!result.2.contains("cannot reach"), "{}", result.2);
    assert!(!result.2.contains("planted"), "{}", result.2);
    assert_eq!(common::files(tmp.path()), before);
    // `--yes` without `--fix` means nothing: refused as a usage error.
    let (code, _, err) = run("harden", &["--config", config, "--yes"], &env);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A repository file pointed at 4.18: what `rewrite-repo` would rewrite.
const LIST: &str = "# CloudStack\ndeb https://download.cloudstack.org/ubuntu noble 4.18\n";

#[test]
fn rewrite_repo_refuses_to_write_without_yes_and_writes_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("cloudstack.list");
    std::fs::write(&list, LIST).unwrap();
    let path = list.to_str().unwrap();
    let before = common::files(tmp.path());

    // The dry run and --stdout never ask and write nothing.
    for extra in [&["--dry-run"][..], &["--stdout"][..]] {
        let mut args = vec!["--to", "4.19", path];
        args.extend_from_slice(extra);
        let (code, out, err) = run("rewrite-repo", &args, &[]);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(!err.contains("not confirmed"), "{err}");
        assert!(out.contains("4.19"), "{out}");
    }
    assert_eq!(common::files(tmp.path()), before);

    let result = run("rewrite-repo", &["--to", "4.19.0.0", path], &[]);
    assert_refused("rewrite-repo", &result);
    assert!(
        result.2.contains("rewrite-repo: about to point") && result.2.contains(path),
        "{}",
        result.2
    );
    assert_eq!(std::fs::read_to_string(&list).unwrap(), LIST);
    assert_eq!(
        common::files(tmp.path()),
        before,
        "a backup copy was written"
    );

    let (code, out, err) = run("rewrite-repo", &["--to", "4.19.0.0", path, "--yes"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        std::fs::read_to_string(&list)
            .unwrap()
            .contains("noble 4.19"),
        "{out}{err}"
    );
    assert_eq!(
        common::files(tmp.path()).len(),
        2,
        "the file and its backup copy"
    );
}

#[test]
fn agent_upgrade_refuses_without_yes_and_leaves_the_host_alone() {
    let lab = cs_lab::start_kvm_hosts(1, 1, |_| {}).expect("a lab KVM host");
    let host = &lab[0];
    let ssh = host.ssh().expect("the host's sshd");
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, host.hosts_line().expect("a hosts line") + "\n").unwrap();
    let journal = tmp.path().join("journal");
    let (key, known) = (ssh.client_key(), ssh.known_hosts());
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--hosts",
            hosts.to_str().unwrap(),
            "--to",
            "4.19.1.0",
            "--identity",
            key.to_str().unwrap(),
            "--known-hosts",
            known.to_str().unwrap(),
            "--journal-dir",
            journal.to_str().unwrap(),
            "--up-deadline",
            "20s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let installed = host.installed("cloudstack-agent");
    let log = host.systemctl_log();

    // The dry run does not ask.
    let a = args(&["--dry-run"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, out, err) = run("agent-upgrade", &a, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would apply"), "{out}");
    assert!(!err.contains("not confirmed"), "{err}");
    let _ = std::fs::remove_dir_all(&journal);

    let a = args(&[]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let result = run("agent-upgrade", &a, &[]);
    assert_refused("agent-upgrade", &result);
    assert!(
        result
            .2
            .contains("about to upgrade cloudstack-agent to 4.19.1.0")
            && result.2.contains(&ssh.addr().to_string()),
        "{}",
        result.2
    );
    assert_eq!(host.installed("cloudstack-agent"), installed);
    assert_eq!(host.systemctl_log(), log, "the agent was touched");
    assert!(!journal.exists(), "a journal was written");
}
