//! Config bundles read back from disk are checked whole before anything is written: crafted
//! entries (paths outside the roots, `..`, setuid or world-writable modes, links leaving the
//! roots, writes through symbolic links) are refused, and the host is left as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use cs_backup::{BundleEntry, ConfigBundle, Error, bundle_config, restore_config};
use cs_core::{FileKind, LocalHost};

struct Fixture {
    _tmp: tempfile::TempDir,
    /// The directory the whole test lives in (a snapshot covers all of it).
    base: PathBuf,
    /// The configuration root a restore may write under.
    root: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let root = base.join("etc/cloudstack");
    std::fs::create_dir_all(root.join("management")).unwrap();
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::write(base.join("outside/secret"), "keep\n").unwrap();
    Fixture {
        root: root.to_str().unwrap().to_string(),
        base,
        _tmp: tmp,
    }
}

fn me() -> (u32, u32) {
    let meta = std::fs::metadata("/proc/self").unwrap();
    use std::os::unix::fs::MetadataExt;
    (meta.uid(), meta.gid())
}

fn entry(path: &str, kind: FileKind, mode: u32) -> BundleEntry {
    let (uid, gid) = me();
    BundleEntry {
        path: path.to_string(),
        kind,
        mode,
        uid,
        gid,
        data: (kind == FileKind::File)
            .then(|| base64::engine::general_purpose::STANDARD.encode("x=1\n")),
        target: None,
    }
}

fn link(path: &str, target: &str) -> BundleEntry {
    BundleEntry {
        target: Some(target.to_string()),
        ..entry(path, FileKind::Symlink, 0o777)
    }
}

fn bundle(entries: Vec<BundleEntry>) -> ConfigBundle {
    ConfigBundle {
        host: "localhost".into(),
        created: "2026-01-01T00:00:00Z".into(),
        roots: Vec::new(),
        entries,
    }
}

/// Every path under `dir` with its kind, mode and contents or link target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let what = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&p).unwrap().display())
        } else if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            format!("dir {:o}", meta.mode())
        } else {
            format!("file {:o} {:?}", meta.mode(), std::fs::read(&p).unwrap())
        };
        out.insert(p, what);
    }
    out
}

/// Restores `b` under the fixture's root, expects it refused naming `path` and a reason
/// containing `why`, and the whole test directory unchanged.
async fn refused(f: &Fixture, b: ConfigBundle, path: &str, why: &str) {
    let before = snapshot(&f.base);
    let err = restore_config(&LocalHost::new(), &b, &[f.root.as_str()])
        .await
        .expect_err("a crafted bundle must be refused");
    match &err {
        Error::UnsafeBundle { path: p, reason } => {
            assert_eq!(p, path, "{err}");
            assert!(reason.contains(why), "{err}");
        }
        other => panic!("expected UnsafeBundle, got {other}"),
    }
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(snapshot(&f.base), before, "the host changed: {err}");
}

#[tokio::test]
async fn paths_outside_the_roots_are_refused() {
    let f = fixture();
    let outside = format!("{}/outside/secret", f.base.display());
    let ok = format!("{}/management/db.properties", f.root);
    // The bad entry comes second: nothing of the first is written either.
    let b = bundle(vec![
        entry(&ok, FileKind::File, 0o600),
        entry(&outside, FileKind::File, 0o600),
    ]);
    refused(&f, b, &outside, "outside the configuration roots").await;

    let dotdot = format!("{}/../../outside/secret", f.root);
    let b = bundle(vec![entry(&dotdot, FileKind::File, 0o600)]);
    refused(&f, b, &dotdot, "not a normalised absolute path").await;

    let b = bundle(vec![entry("etc/cloudstack/x", FileKind::File, 0o600)]);
    refused(&f, b, "etc/cloudstack/x", "not a normalised absolute path").await;

    // A sibling whose name merely starts with the root's.
    let sibling = format!("{}-evil/x", f.root);
    let b = bundle(vec![entry(&sibling, FileKind::File, 0o600)]);
    refused(&f, b, &sibling, "outside the configuration roots").await;
}

#[tokio::test]
async fn setuid_setgid_sticky_and_world_writable_modes_are_refused() {
    let f = fixture();
    let p = format!("{}/management/run", f.root);
    for (mode, why) in [
        (0o4755, "setuid"),
        (0o2755, "setuid, setgid"),
        (0o1755, "sticky"),
        (0o666, "world-writable"),
    ] {
        let b = bundle(vec![entry(&p, FileKind::File, mode)]);
        refused(&f, b, &p, why).await;
    }
    let d = format!("{}/management/dir", f.root);
    let b = bundle(vec![entry(&d, FileKind::Dir, 0o777)]);
    refused(&f, b, &d, "world-writable").await;
}

#[tokio::test]
async fn links_leaving_the_roots_are_never_created() {
    let f = fixture();
    let l = format!("{}/management/db.properties", f.root);
    for target in [
        "/etc/shadow".to_string(),
        "../../../outside/secret".to_string(),
        format!("{}/outside/secret", f.base.display()),
        "../../../../../../../../../../../..".to_string(),
    ] {
        let b = bundle(vec![link(&l, &target)]);
        refused(&f, b, &l, "leaves the configuration roots").await;
    }
    let b = bundle(vec![link(&l, "")]);
    refused(&f, b, &l, "without a target").await;
}

#[tokio::test]
async fn a_link_out_of_the_roots_the_host_has_is_kept_as_it_is() {
    let f = fixture();
    // An installation that links its keystore from elsewhere: bundled as it is.
    let key = format!("{}/management/key", f.root);
    let target = f.base.join("outside/secret");
    std::os::unix::fs::symlink(&target, &key).unwrap();
    let taken = bundle_config(&LocalHost::new(), &[f.root.as_str()])
        .await
        .unwrap();
    assert!(taken.entries.iter().any(|e| e.path == key));
    // Put back while the link is there: left alone, the rest restored.
    let props = format!("{}/management/db.properties", f.root);
    std::fs::write(&props, "changed\n").unwrap();
    let mut with_file = taken.clone();
    with_file.entries.push(entry(&props, FileKind::File, 0o600));
    restore_config(&LocalHost::new(), &with_file, &[f.root.as_str()])
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&props).unwrap(), "x=1\n");
    assert_eq!(std::fs::read_link(&key).unwrap(), target);
    // Gone or changed on the host: not recreated.
    std::fs::remove_file(&key).unwrap();
    refused(&f, taken.clone(), &key, "not on the host as it was").await;
    std::os::unix::fs::symlink("/etc/hostname", &key).unwrap();
    refused(&f, taken, &key, "not on the host as it was").await;
}

#[tokio::test]
async fn writes_through_symbolic_links_are_refused() {
    let f = fixture();
    // On the host: a directory under the root is a link to a place outside it.
    std::os::unix::fs::symlink(f.base.join("outside"), format!("{}/agent", f.root)).unwrap();
    let through = format!("{}/agent/secret", f.root);
    let b = bundle(vec![entry(&through, FileKind::File, 0o600)]);
    refused(&f, b, &through, "is not a directory").await;
    // A directory entry where the host has that link: `chmod` would follow it.
    let d = format!("{}/agent", f.root);
    let b = bundle(vec![entry(&d, FileKind::Dir, 0o755)]);
    refused(&f, b, &d, "symbolic link on the host").await;

    // In the bundle: a link inside the roots, then an entry under it.
    let l = format!("{}/usage", f.root);
    let under = format!("{l}/db.properties");
    let b = bundle(vec![
        link(&l, "management"),
        entry(&under, FileKind::File, 0o600),
    ]);
    refused(&f, b, &under, "not a directory in the bundle").await;

    // A link where the host has a directory: `ln` would put the link inside it.
    let m = format!("{}/management", f.root);
    let b = bundle(vec![link(&m, "usage")]);
    refused(&f, b, &m, "directory on the host").await;
}

#[tokio::test]
async fn disorder_and_duplicates_are_refused() {
    let f = fixture();
    let d = format!("{}/usage", f.root);
    let child = format!("{d}/db.properties");
    let b = bundle(vec![
        entry(&child, FileKind::File, 0o600),
        entry(&d, FileKind::Dir, 0o755),
    ]);
    refused(&f, b, &d, "lies under it").await;
    let b = bundle(vec![
        entry(&child, FileKind::File, 0o600),
        entry(&child, FileKind::File, 0o640),
    ]);
    refused(&f, b, &child, "named twice").await;
}

#[tokio::test]
async fn a_root_the_caller_gives_must_be_normalised() {
    let f = fixture();
    let b = bundle(Vec::new());
    for root in ["relative/x", "/a/../b", "/a//b", "/"] {
        let err = restore_config(&LocalHost::new(), &b, &[root])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{root}: {err}");
    }
    drop(f);
}

#[tokio::test]
async fn option_like_names_are_written_literally() {
    let f = fixture();
    // A link whose target starts with a dash reaches `ln` after `--`.
    let l = format!("{}/management/-n", f.root);
    let b = bundle(vec![
        entry(&format!("{}/management/-rf", f.root), FileKind::File, 0o640),
        link(&l, "-rf"),
    ]);
    let n = restore_config(&LocalHost::new(), &b, &[f.root.as_str()])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(std::fs::read_link(&l).unwrap(), Path::new("-rf"));
    assert_eq!(std::fs::read_to_string(&l).unwrap(), "x=1\n");
}
