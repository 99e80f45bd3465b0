//! The README's Install section works: `cargo install --path . --locked` installs every operator
//! tool as `cs-<tool>` (and nothing else), and each installed binary answers `--help` with
//! exit code 0 under its own name. Debug and offline, into a throwaway root, with the
//! workspace's target directory so the build already done is reused.

use std::path::PathBuf;
use std::process::Command;

/// The installed tools (README "Install"); `agent-upgrade` stays an example (its lab mode needs
/// cs-lab, which no installed binary carries).
const TOOLS: &[&str] = &[
    "agent-facts",
    "backup",
    "cleanup",
    "diagnose",
    "harden",
    "plan",
    "preflight",
    "probe",
    "rehearse",
    "restore",
    "rewrite-repo",
    "upgrade",
    "verify",
];

#[allow(clippy::disallowed_methods)] // the test runs cargo and the installed binaries
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    Command::new(program)
}

#[test]
fn cargo_install_gives_every_cs_tool_and_each_answers_help() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    let root = tempfile::Builder::new()
        .prefix("install-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = command(&cargo)
        .args(["install", "--path", ".", "--debug", "--locked", "--offline"])
        .arg("--root")
        .arg(root.path())
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo install");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo install failed:\n{log}");

    let mut installed: Vec<String> = std::fs::read_dir(root.path().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    installed.sort();
    let expected: Vec<String> = TOOLS.iter().map(|t| format!("cs-{t}")).collect();
    assert_eq!(installed, expected, "{log}");

    for name in &expected {
        let out = command(root.path().join("bin").join(name))
            .arg("--help")
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("run {name}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name} --help: {text}");
        assert!(
            text.contains(&format!("Usage: {name}")),
            "{name} --help names itself: {text}"
        );
    }
}
