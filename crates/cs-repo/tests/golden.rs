//! Golden files: every `tests/golden/<case>.{list,sources,repo}` is rewritten (to 4.20 unless
//! `targets.txt` says otherwise) and compared with `<case>.out` (the new text) and
//! `<case>.changes` (the changes, the disabled entries, or the error). Run with
//! `BLESS=1` to write the expected files after a deliberate change, then review the diff.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cs_repo::{Format, Rules, rewrite};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn rules() -> Rules {
    Rules::default()
        .with_mirror("https://mirror.example.com/cloudstack")
        .and_then(|r| r.with_mirror("packages.example.org/cloudstack/upstream"))
        .unwrap()
}

fn targets(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("targets.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (f, t) = l.split_once(' ').unwrap();
            (f.to_string(), t.trim().to_string())
        })
        .collect()
}

/// The `.changes` listing of one case.
fn listing(input: &str, format: Format, target: &str) -> (String, Option<String>) {
    let mut out = format!("target {target}\n");
    match rewrite(input, format, target, &rules()) {
        Ok(r) => {
            for c in &r.changes {
                let _ = writeln!(out, "{c}");
                let _ = writeln!(out, "  - {}", c.before);
                let _ = writeln!(out, "  + {}", c.after);
            }
            for e in r.disabled() {
                let _ = writeln!(
                    out,
                    "disabled line {}: left at {}",
                    e.line,
                    e.release.as_deref().unwrap_or("an unknown release")
                );
            }
            if r.is_noop() {
                out.push_str("no change\n");
            }
            (out, Some(r.text))
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            (out, None)
        }
    }
}

#[test]
fn golden_files_rewrite_as_recorded() {
    let dir = golden_dir();
    let targets = targets(&dir);
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| Format::from_path(p).is_some())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} golden cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let format = Format::from_path(case).unwrap();
        let target = targets.get(&name).map_or("4.20", String::as_str);
        let input = std::fs::read_to_string(case).unwrap();
        let (changes, text) = listing(&input, format, target);
        let out_path = dir.join(format!("{name}.out"));
        let changes_path = dir.join(format!("{name}.changes"));
        if bless {
            std::fs::write(&changes_path, &changes).unwrap();
            match &text {
                Some(t) => std::fs::write(&out_path, t).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&out_path);
                }
            }
            continue;
        }
        let want_changes = std::fs::read_to_string(&changes_path).unwrap_or_default();
        if changes != want_changes {
            failures.push(format!(
                "{name}: changes differ\n--- expected\n{want_changes}--- got\n{changes}"
            ));
        }
        let want_text = std::fs::read_to_string(&out_path).ok();
        if text != want_text {
            failures.push(format!(
                "{name}: output differs\n--- expected\n{want_text:?}\n--- got\n{text:?}"
            ));
        }
        if let Some(t) = &text {
            // Rewriting the output again changes nothing.
            let again = rewrite(t, format, target, &rules()).unwrap();
            if !again.is_noop() || &again.text != t {
                failures.push(format!("{name}: second rewrite is not a no-op"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
