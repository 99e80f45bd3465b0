//! A password planted in the environment, on the command line or in a config file never
//! reaches the terminal: not in `--help` (clap shows environment values unless told not to),
//! not in an argument error, not in a config parse error.

mod common;

use std::path::Path;

use cs_upgrade::UpgradeConfig;

const PLANTED: &str = "Pl4nted-s3cret";

/// Runs an example with `env` set; its exit code and both outputs together.
fn run(name: &str, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binaries
    let out = std::process::Command::new(common::example(name))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .env_remove("RUST_LOG")
        .output()
        .expect("run the example");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains(PLANTED),
        "{what} shows the password:\n{text}"
    );
}

#[test]
fn help_hides_environment_values() {
    let url = format!("mysql://cloud:{PLANTED}@127.0.0.1:1/cloud");
    for (example, var) in [
        ("plan", "CS_PLAN_DB"),
        ("backup", "CS_DB_URL"),
        ("restore", "CS_DB_URL"),
        ("verify", "CS_DB_URL"),
        ("rehearse", "CS_DB_URL"),
        ("rehearse", "CS_SCRATCH_DB_URL"),
        ("rehearse", "CS_SCRIPT_DB_URL"),
        ("probe", "CLOUDSTACK_SECRET"),
    ] {
        let (code, text) = run(example, &["--help"], &[(var, url.clone())]);
        assert_eq!(code, 0, "{example} --help: {text}");
        assert!(text.contains("Usage"), "{example} --help: {text}");
        assert_hidden(&format!("{example} --help"), &text);
    }
}

#[test]
fn database_urls_that_do_not_parse_are_not_echoed() {
    let bad = [
        format!("mysql://cloud:{PLANTED}@host:notaport"),
        format!("cloud:{PLANTED}@host"),
        format!("mysql:/cloud:{PLANTED}@host"),
        format!("mysql://cloud:{PLANTED}"),
        format!("postgres://cloud:{PLANTED}@host"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let out = out.to_str().unwrap();
    for url in &bad {
        for (example, args) in [
            ("backup", vec!["--db", url, "--out", out]),
            ("restore", vec!["--db", url, "--from", out]),
            ("verify", vec!["--deep", "--db", url, out]),
            ("plan", vec!["--to", "4.19.0.0", "--db", url]),
            (
                "rehearse",
                vec![
                    "--to",
                    "4.19.0.0",
                    "--backups",
                    out,
                    "--sql-dir",
                    out,
                    "--db",
                    url,
                ],
            ),
        ] {
            let (code, text) = run(example, &args, &[]);
            assert_ne!(code, 0, "{example} accepted {url}: {text}");
            assert!(text.contains("invalid database URL"), "{example}: {text}");
            assert_hidden(&format!("{example} --db {url}"), &text);
            // The same URL from the environment.
            let args: Vec<&str> = args
                .iter()
                .copied()
                .filter(|a| *a != "--db" && *a != url.as_str())
                .collect();
            let var = if example == "plan" {
                "CS_PLAN_DB"
            } else {
                "CS_DB_URL"
            };
            let (code, text) = run(example, &args, &[(var, url.clone())]);
            assert_ne!(code, 0, "{example} accepted {url} from {var}: {text}");
            assert_hidden(&format!("{example} with {var}"), &text);
        }
    }
}

#[test]
fn config_errors_never_quote_the_line() {
    // Inline secrets in places the schema does not expect them, and plain syntax errors on
    // the secret's line.
    let example = include_str!("../examples/upgrade.toml");
    let line = "password = { env = \"CS_DB_PASSWORD\" }";
    assert!(example.contains(line));
    UpgradeConfig::parse(example, Path::new("upgrade.toml")).expect("the example parses");
    for bad in [
        format!("password = 12345{PLANTED}"),
        format!("password = \"{PLANTED}"),
        format!("password = \"{PLANTED}\" \"x\""),
        format!("password = {{ value = 12345{PLANTED} }}"),
        format!("password = {{ env = [\"{PLANTED}\", 5] }}"),
        format!("password = 12345\nport = \"{PLANTED}\""),
        format!("password = {{ value = 5 }}\nuser = \"{PLANTED}\"\nuser = \"x\""),
    ] {
        let text = example.replace(line, &bad);
        let err = UpgradeConfig::parse(&text, Path::new("/etc/cs-upgrade.toml"))
            .expect_err("a broken config must be refused");
        let text = cs_core::error_chain(&err);
        assert_hidden("a config error", &text);
        assert!(text.contains("/etc/cs-upgrade.toml"), "{text}");
        assert!(text.contains("line 1"), "{text}");
    }
    let err = UpgradeConfig::parse("target = 4.19\n[x\n", Path::new("c.toml")).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}
