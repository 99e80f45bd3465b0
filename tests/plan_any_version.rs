//! `plan` computes CloudStack's path for any version `CloudStackVersion.parse` accepts: a
//! target newer than the tool's data gets the path from the newest hierarchy the tool has,
//! with a `NoopDbUpgrade` tail and its unverified parts named, instead of a refusal.

mod common;

/// Runs the `plan` example; its exit code and stdout, stderr.
fn plan(args: &[&str]) -> (i32, String, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
    let out = std::process::Command::new(common::example("plan"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CS_PLAN_DB")
        .output()
        .expect("run plan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = plan(args);
    assert_eq!(code, 0, "plan {args:?}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("plan {args:?}: {e}: {out}"))
}

#[test]
fn a_target_newer_than_the_data_gets_a_noop_tail_marked_unverified() {
    let j = json(&["--from", "4.18.0.0", "--to", "4.19.9.9", "--json"]);
    let steps = j["steps"].as_array().unwrap();
    let tail = steps.last().unwrap();
    assert_eq!(tail["class"], "NoopDbUpgrade", "{j:#}");
    assert_eq!(tail["to"], "4.19.9.9");
    assert_eq!(tail["verified"], false);
    assert_eq!(steps[0]["class"], "Upgrade41800to41810");
    assert_eq!(steps[0]["verified"], true);
    assert_eq!(j["verified"], false);
    assert_eq!(j["target_known"], false);
    let unverified = j["unverified"].as_array().unwrap();
    assert!(
        unverified
            .iter()
            .any(|u| u.as_str().unwrap().contains("4.19.9.9 is not a release")),
        "{j:#}"
    );
    // Every step names its source.
    assert!(
        steps
            .iter()
            .all(|s| !s["source"].as_str().unwrap().is_empty())
    );
    // And the text says so too.
    let (code, text, _) = plan(&["--from", "4.18.0.0", "--to", "4.19.9.9"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("NoopDbUpgrade"), "{text}");
    assert!(text.contains("Unverified:"), "{text}");
}

#[test]
fn security_releases_and_new_majors_are_planned() {
    for (from, to, last_from) in [
        ("4.18.0.0", "4.19.0.5", "4.19.0.0"),
        ("4.17.2.0", "4.18.1.3", "4.18.1.0"),
        ("4.22.0.0", "24.0.0.0", "4.23.0.0"),
        ("4.22.0.0", "25.1.0", "24.0.0"),
        ("4.22.0.0", "24.0.1-SNAPSHOT", "24.0.0"),
    ] {
        let j = json(&["--from", from, "--to", to, "--json"]);
        let steps = j["steps"].as_array().unwrap();
        let last = steps.last().unwrap();
        assert_eq!(last["from"], last_from, "{from} -> {to}: {j:#}");
        assert_eq!(j["verified"], false, "{from} -> {to}");
        assert!(!j["hops"].as_array().unwrap().is_empty());
    }
    // A known, verified target stays verified.
    let j = json(&["--from", "4.18.0.0", "--to", "4.20.1.0", "--json"]);
    assert_eq!(j["verified"], true, "{j:#}");
    assert!(j["unverified"].as_array().unwrap().is_empty());
    // What CloudStack cannot parse is still refused, with one line.
    let (code, out, err) = plan(&["--from", "4.18.0.0", "--to", "4.19"]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("invalid CloudStack version"), "{err}");
}
