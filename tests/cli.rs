//! One interface for every tool: each example binary answers `--help` with exit code 0, lists
//! `-v`, `-q`, its exit codes and `RUST_LOG` (the operator tools `--json` too); an unknown flag
//! exits 2 with one line; and `--json` output of the cheap tools is exactly one JSON document.

mod common;

use std::path::Path;
use std::process::Stdio;

/// Every example, and whether it is an operator tool (must take `--json`; a benchmark may). The test below checks
/// this list against `examples/*.rs`, so a new tool cannot be left out.
const EXAMPLES: &[(&str, bool)] = &[
    ("agent-facts", true),
    ("agent-upgrade", true),
    ("backup", true),
    ("bench-backup", false),
    ("bench-fleet", false),
    ("bench-inventory", false),
    ("bench-jump", false),
    ("bench-rewrite", false),
    ("bench-sudo", false),
    ("cleanup", true),
    ("diagnose", true),
    ("harden", true),
    ("lab", false),
    ("plan", true),
    ("preflight", true),
    ("probe", true),
    ("rehearse", true),
    ("restore", true),
    ("rewrite-repo", true),
    ("upgrade", true),
    ("verify", true),
];

/// Runs an example with stdin from /dev/null and no `RUST_LOG`; exit code, stdout, stderr.
fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binaries
    let out = std::process::Command::new(common::example(name))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CS_DB_URL")
        .env_remove("CS_PLAN_DB")
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_list_is_every_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    found.sort();
    let listed: Vec<&str> = EXAMPLES.iter().map(|(n, _)| *n).collect();
    assert_eq!(found, listed);
    // The README's table names every tool.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    for name in listed {
        assert!(readme.contains(&format!("`{name}")), "README misses {name}");
    }
}

#[test]
fn every_example_has_help_with_the_shared_flags_and_exit_codes() {
    for &(name, operator) in EXAMPLES {
        let (code, out, err) = run(name, &["--help"]);
        assert_eq!(code, 0, "{name} --help: {out}{err}");
        assert!(err.is_empty(), "{name} --help wrote to stderr: {err}");
        assert!(out.contains("Usage:"), "{name} --help: {out}");
        for flag in ["-v, --verbose", "-q, --quiet", "Exit codes:", "RUST_LOG"] {
            assert!(out.contains(flag), "{name} --help lacks {flag}: {out}");
        }
        assert!(out.contains("  0 "), "{name}: no exit code 0: {out}");
        assert!(out.contains("  2 "), "{name}: no exit code 2: {out}");
        if operator {
            assert!(out.contains("--json"), "{name} --help lacks --json: {out}");
        }
    }
}

#[test]
fn an_unknown_flag_exits_2_with_one_line() {
    for &(name, _) in EXAMPLES {
        let (code, out, err) = run(name, &["--no-such-flag"]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(out.is_empty(), "{name}: {out}");
        assert_eq!(err.lines().count(), 1, "{name}: not one line: {err}");
        assert!(
            err.starts_with(&format!("{name}: ")) && err.contains("--no-such-flag"),
            "{name}: {err}"
        );
    }
    // A bad value is one line too, naming the flag.
    let (code, _, err) = run("probe", &["--wait", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--wait") && err.contains("soon"), "{err}");
    // -v and -q together are refused.
    let (code, _, err) = run(
        "plan",
        &["-v", "-q", "--from", "4.18.0.0", "--to", "4.19.0.0"],
    );
    assert_eq!(code, 2, "{err}");
}

/// Parses `text` as exactly one JSON value (trailing whitespace allowed, nothing else).
fn one_json(what: &str, text: &str) -> serde_json::Value {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let first = values
        .next()
        .unwrap_or_else(|| panic!("{what}: no JSON: {text}"))
        .unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert!(
        values.next().is_none(),
        "{what}: more than one value: {text}"
    );
    first
}

#[test]
fn json_output_is_one_document() {
    // plan, offline.
    let (code, out, err) = run(
        "plan",
        &["--from", "4.18.0.0", "--to", "4.19.0.0", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let j = one_json("plan", &out);
    assert!(j["steps"].as_array().is_some_and(|s| !s.is_empty()), "{j}");

    // -v and -q are accepted anywhere and change nothing on stdout.
    let (code, quiet, _) = run(
        "plan",
        &["-q", "--from", "4.18.0.0", "--to", "4.19.0.0", "--json"],
    );
    assert_eq!(code, 0);
    assert_eq!(quiet, out);

    // The check list.
    let (code, out, err) = run("preflight", &["--list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let j = one_json("preflight --list", &out);
    assert!(j.as_array().is_some_and(|l| l.len() > 10), "{j}");

    // probe on two snapshot files: one VM moved is a finding.
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = |host: &str| {
        serde_json::json!({
            "taken_at": "2026-12-07T10:00:00Z",
            "endpoint": "http://127.0.0.1:1/client/api",
            "hosts": [
                {"id": "h1", "name": "kvm1", "state": "Up"},
                {"id": "h2", "name": "kvm2", "state": "Up"},
            ],
            "vms": [{"id": "v1", "name": "web", "state": "Running",
                     "host_id": host, "host_name": host}],
        })
        .to_string()
    };
    let (before, after) = (
        tmp.path().join("before.json"),
        tmp.path().join("after.json"),
    );
    std::fs::write(&before, snapshot("h1")).unwrap();
    std::fs::write(&after, snapshot("h2")).unwrap();
    let (code, out, err) = run(
        "probe",
        &[
            "--diff",
            before.to_str().unwrap(),
            after.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(code == 1 || code == 2, "exit {code}: {out}{err}");
    let j = one_json("probe --diff", &out);
    assert!(
        j["findings"].as_array().is_some_and(|f| !f.is_empty()),
        "{j}"
    );
    assert!(j["diff"].is_object(), "{j}");

    // rewrite-repo's dry run on a file.
    let list = tmp.path().join("cloudstack.list");
    std::fs::write(
        &list,
        "deb https://download.cloudstack.org/ubuntu noble 4.18\n",
    )
    .unwrap();
    let (code, out, err) = run(
        "rewrite-repo",
        &[
            "--to",
            "4.19.0.0",
            "--dry-run",
            "--json",
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let j = one_json("rewrite-repo --dry-run", &out);
    assert_eq!(j["to"], "4.19", "a version means its line: {j}");
    assert!(
        j["diff"].as_str().is_some_and(|d| d.contains("+deb")),
        "{j}"
    );
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "deb https://download.cloudstack.org/ubuntu noble 4.18\n"
    );

    // verify on a directory that is no backup: an error, one line, nothing on stdout.
    let (code, out, err) = run(
        "verify",
        &["--from", tmp.path().to_str().unwrap(), "--json"],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("verify: "), "{err}");
}

/// Pre-flight of an installation that is nowhere: the database checks all break on the same
/// unreachable server, shown once with their count; the `mysql` crate's error reads as the
/// driver's message, not as `DriverError { .. }`; `--json` is one document with every check.
#[test]
fn one_unreachable_database_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::nowhere_config(tmp.path());
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let output = |extra: &[&str], rust_log: Option<&str>| {
        let mut cmd = std::process::Command::new(common::example("preflight"));
        cmd.arg("--config")
            .arg(&config)
            .args(extra)
            .env_remove("RUST_LOG")
            .env("CS_DB_PASSWORD", "planted-db-secret")
            .env("CLOUDSTACK_KEY", "key")
            .env("CLOUDSTACK_SECRET", "planted-api-secret")
            .stdin(Stdio::null());
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let out = cmd.output().expect("run preflight");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, table, err) = output(&[], None);
    assert_eq!(code, 255, "{table}");
    assert!(err.is_empty(), "the default log is warnings and up: {err}");
    let broken: Vec<&str> = table.lines().filter(|l| l.starts_with("ERR")).collect();
    assert_eq!(broken.len(), 1, "{table}");
    assert!(broken[0].contains("the same for"), "{table}");
    assert!(broken[0].contains("127.0.0.1:1"), "{table}");
    for debug in ["DriverError {", "MySqlError {", "IoError {"] {
        assert!(!table.contains(debug), "{table}");
    }
    assert!(!table.contains("planted"), "{table}");

    let (code, out, _) = output(&["--json"], None);
    assert_eq!(code, 255, "{out}");
    let j = one_json("preflight --json", &out);
    let listed = j["broken"].as_array().map_or(0, Vec::len);
    let counted = broken[0]
        .split("the same for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("a count");
    assert_eq!(listed, counted, "{out}");

    // -vv logs at debug; RUST_LOG, when set, decides instead; the report is the same.
    let (code, again, err) = output(&["-vv"], None);
    assert_eq!(code, 255);
    assert!(err.contains(" DEBUG "), "{err}");
    assert!(!err.contains("planted"), "a secret in the log: {err}");
    assert_eq!(again.lines().count(), table.lines().count());
    let (_, _, err) = output(&["-vv"], Some("off"));
    assert!(err.is_empty(), "RUST_LOG=off did not win over -vv: {err}");
    let (_, _, err) = output(&["-q"], Some("cs_api=debug"));
    assert!(
        err.contains("cs_api::client"),
        "RUST_LOG did not win over -q: {err}"
    );
    assert!(!err.contains("reqwest"), "{err}");
}

/// `agent-facts --json` (JSON Lines before) is one document: every host, the failed one with
/// its error, and the count; a failed host is exit code 1.
#[test]
fn agent_facts_json_is_one_document() {
    let lab = cs_lab::start_kvm_hosts(1, 1, |_| {}).expect("a lab KVM host");
    let ssh = lab[0].ssh().expect("the host's sshd");
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "{}\nroot@127.0.0.1:1 cluster=c9\n",
            lab[0].hosts_line().expect("a hosts line")
        ),
    )
    .unwrap();
    let (key, known) = (ssh.client_key(), ssh.known_hosts());
    let (code, out, err) = run(
        "agent-facts",
        &[
            "--hosts",
            hosts.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
            "--known-hosts",
            known.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let j = one_json("agent-facts --json", &out);
    assert_eq!(j["failed"], 1, "{j}");
    let hosts = j["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 2, "{j}");
    assert!(
        hosts.iter().any(|h| h["elapsed_ms"].is_u64()),
        "the lab host's facts: {j}"
    );
    assert!(
        hosts
            .iter()
            .any(|h| h["host"] == "root@127.0.0.1:1" && h["error"].is_string()),
        "{j}"
    );
    assert!(!out.contains(lab[0].passphrase().expose()), "{out}");
}
