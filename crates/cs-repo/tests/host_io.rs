//! The IO layer on a `FakeHost` and on `LocalHost` in a temporary directory: discovery, plans
//! and diffs, atomic writes with backups, revert, the switcher and `repo.target.configured`.

use std::path::{Path, PathBuf};

use cs_core::fake::{Call, FakeHost};
use cs_core::{Check, Host, HostExt, Layout, LocalHost, RepoSwitch, Severity};
use cs_repo::{
    Error, RepoSwitcher, Rules, TargetConfigured, apply, backups, discover, plan, revert,
};

const LIST: &str = "/etc/apt/sources.list.d/cloudstack.list";
const REPO: &str = "/etc/yum.repos.d/cloudstack.repo";
const LIST_TEXT: &str = "# CloudStack\r\ndeb [arch=amd64] https://download.cloudstack.org/ubuntu noble 4.19 # pinned\r\n# deb https://download.cloudstack.org/ubuntu noble 4.18\r\n";
const REPO_TEXT: &str = "[cloudstack]\nname=CloudStack\nbaseurl=http://download.cloudstack.org/centos/$releasever/4.19/\nenabled=1";

fn host() -> FakeHost {
    FakeHost::new("mgmt1")
        .with_file(
            "/etc/apt/sources.list",
            "deb http://archive.ubuntu.com/ubuntu noble main\n",
        )
        .with_file_mode(LIST, LIST_TEXT, 0o640)
        .with_file(
            "/etc/apt/sources.list.d/ubuntu.sources",
            "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\nSuites: noble\nComponents: main\n",
        )
        .with_file(
            "/etc/apt/sources.list.d/cloudstack.list.20240101T000000Z.cs-upgrade.bak",
            "old\n",
        )
        .with_file(
            "/etc/apt/sources.list.d/notes.txt",
            "deb https://download.cloudstack.org/ubuntu noble 4.17\n",
        )
        .with_file(REPO, REPO_TEXT)
}

fn paths(v: &[&str]) -> Vec<PathBuf> {
    v.iter().map(PathBuf::from).collect()
}

#[tokio::test]
async fn discovery_reads_what_apt_and_yum_read_in_their_order() {
    let h = host();
    let found = discover(&h, &Layout::default()).await.unwrap();
    assert_eq!(
        found,
        paths(&[
            "/etc/apt/sources.list",
            LIST,
            "/etc/apt/sources.list.d/ubuntu.sources",
            REPO
        ])
    );
}

#[tokio::test]
async fn apply_writes_a_backup_keeps_the_mode_and_a_second_run_applies_nothing() {
    let h = host();
    let layout = Layout::default();
    let files = discover(&h, &layout).await.unwrap();
    let p = plan(&h, &files, "4.20", &Rules::default()).await.unwrap();
    assert_eq!(p.changed().count(), 2);
    let diff = p.diff();
    assert!(diff.contains(&format!("--- {LIST}")), "{diff}");
    assert!(
        diff.contains(
            "-deb [arch=amd64] https://download.cloudstack.org/ubuntu noble 4.19 # pinned\r\n"
        ),
        "{diff}"
    );
    assert!(
        diff.contains(
            "+deb [arch=amd64] https://download.cloudstack.org/ubuntu noble 4.20 # pinned\r\n"
        ),
        "{diff}"
    );
    assert!(diff.contains("\\ No newline at end of file"), "{diff}");
    let summary: Vec<String> = p.files.iter().flat_map(|f| f.summary()).collect();
    assert_eq!(
        summary,
        [
            format!("{LIST}:2: 4.19 -> 4.20"),
            format!("{LIST}:3: disabled CloudStack entry left at 4.18"),
            format!("{REPO}:3: 4.19 -> 4.20"),
        ]
    );

    let applied = apply(&h, &p).await.unwrap();
    assert_eq!(applied.len(), 2);
    let new_list = String::from_utf8(h.file(LIST).unwrap()).unwrap();
    assert_eq!(new_list, LIST_TEXT.replace("noble 4.19", "noble 4.20"));
    assert_eq!(h.stat(Path::new(LIST)).await.unwrap().mode, 0o640);
    let backup = &applied[0].backup;
    assert!(
        backup.to_string_lossy().ends_with(".cs-upgrade.bak"),
        "{backup:?}"
    );
    assert_eq!(backup.parent(), Path::new(LIST).parent());
    assert_eq!(h.file(backup).unwrap(), LIST_TEXT.as_bytes());
    assert_eq!(h.stat(backup).await.unwrap().mode, 0o640);
    assert!(
        h.commands().is_empty(),
        "no chown needed: {:?}",
        h.commands()
    );

    let again = plan(&h, &files, "4.20", &Rules::default()).await.unwrap();
    assert!(again.is_noop());
    assert!(again.diff().is_empty());
    assert!(apply(&h, &again).await.unwrap().is_empty());

    // The backups sort oldest first; revert puts the newest back.
    let all = backups(&h, Path::new(LIST)).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(&all[1], backup);
    revert(&h, Path::new(LIST), backup).await.unwrap();
    assert_eq!(h.file(LIST).unwrap(), LIST_TEXT.as_bytes());
}

#[tokio::test]
async fn a_malformed_file_is_refused_with_path_and_line_and_nothing_is_written() {
    let h = host().with_file(
        "/etc/yum.repos.d/broken.repo",
        "[ok]\nbaseurl=http://x/\n[]\n",
    );
    let files = discover(&h, &Layout::default()).await.unwrap();
    let e = plan(&h, &files, "4.20", &Rules::default())
        .await
        .unwrap_err();
    assert_eq!(e.line(), Some(3));
    assert_eq!(
        cs_core::error_chain(&e),
        "/etc/yum.repos.d/broken.repo: line 3: section without a name"
    );
    assert!(!h.calls().iter().any(|c| matches!(c, Call::Write(_))));
    assert_eq!(h.file(REPO).unwrap(), REPO_TEXT.as_bytes());
}

#[tokio::test]
async fn binary_files_are_refused_with_their_line() {
    let h = FakeHost::new("n").with_file(
        LIST,
        b"deb https://download.cloudstack.org/ubuntu noble 4.19\n\xff\xfe\x00".to_vec(),
    );
    let e = plan(&h, &paths(&[LIST]), "4.20", &Rules::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotText { line: 2, .. }), "{e}");
    let h = FakeHost::new("n").with_file(LIST, "ok\u{0}\n");
    let e = plan(&h, &paths(&[LIST]), "4.20", &Rules::default())
        .await
        .unwrap_err();
    assert_eq!(e.line(), Some(1));
}

#[tokio::test]
async fn a_file_changed_since_planning_is_not_touched() {
    let h = host();
    let p = plan(&h, &paths(&[LIST]), "4.20", &Rules::default())
        .await
        .unwrap();
    h.with_fs(|fs| fs.write(Path::new(LIST), "edited by someone\n", None));
    let e = apply(&h, &p).await.unwrap_err();
    assert!(matches!(e, Error::Changed { .. }), "{e}");
    assert_eq!(h.file(LIST).unwrap(), b"edited by someone\n");
}

#[tokio::test]
async fn a_failed_write_puts_the_files_already_written_back() {
    let h = host();
    h.fail_writes_to(REPO);
    let p = plan(&h, &paths(&[LIST, REPO]), "4.20", &Rules::default())
        .await
        .unwrap();
    let e = apply(&h, &p).await.unwrap_err();
    assert!(matches!(e, Error::Host(_)), "{e}");
    assert_eq!(h.file(LIST).unwrap(), LIST_TEXT.as_bytes());
    assert_eq!(h.file(REPO).unwrap(), REPO_TEXT.as_bytes());
}

#[tokio::test]
async fn switching_there_and_back_restores_every_byte() {
    let h = host();
    let s = RepoSwitcher::default();
    let r = s.switch(&h, "4.20").await.unwrap();
    assert_eq!(r.changed_files, paths(&[LIST, REPO]));
    let r = s.switch(&h, "4.20").await.unwrap();
    assert!(r.changed_files.is_empty(), "{r:?}");
    s.switch(&h, "4.19").await.unwrap();
    assert_eq!(h.file(LIST).unwrap(), LIST_TEXT.as_bytes());
    assert_eq!(h.file(REPO).unwrap(), REPO_TEXT.as_bytes());
}

#[tokio::test]
async fn switching_a_host_without_cloudstack_repositories_fails() {
    let h = FakeHost::new("kvm9").with_file(
        "/etc/apt/sources.list",
        "deb http://archive.ubuntu.com/ubuntu noble main\n",
    );
    let e = RepoSwitcher::default()
        .switch(&h, "4.20")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("kvm9: no CloudStack repository entry found in /etc/apt/sources.list"),
        "{e}"
    );
}

#[tokio::test]
async fn local_host_keeps_mode_and_writes_the_backup_beside_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::default().rerooted(dir.path());
    std::fs::create_dir_all(&layout.apt_sources_dir).unwrap();
    std::fs::create_dir_all(&layout.yum_repos_dir).unwrap();
    let list = layout.apt_sources_dir.join("cloudstack.sources");
    let text = "Types: deb\nURIs: https://download.cloudstack.org/ubuntu\nSuites: noble\nComponents: 4.19\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\n";
    std::fs::write(&list, text).unwrap();
    std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o604)).unwrap();
    let h = LocalHost::new();
    let files = discover(&h, &layout).await.unwrap();
    assert_eq!(files, std::slice::from_ref(&list));
    let p = plan(&h, &files, "24.0", &Rules::default()).await.unwrap();
    let applied = apply(&h, &p).await.unwrap();
    let after = std::fs::read_to_string(&list).unwrap();
    assert_eq!(after, text.replace("Components: 4.19", "Components: 24.0"));
    assert_eq!(
        std::fs::metadata(&list).unwrap().permissions().mode() & 0o7777,
        0o604
    );
    let backup = &applied[0].backup;
    assert_eq!(std::fs::read_to_string(backup).unwrap(), text);
    assert_eq!(
        std::fs::metadata(backup).unwrap().permissions().mode() & 0o7777,
        0o604
    );
    // The backup is not a repository file, so discovery ignores it.
    assert_eq!(
        discover(&h, &layout).await.unwrap(),
        std::slice::from_ref(&list)
    );
    revert(&h, &list, backup).await.unwrap();
    assert_eq!(h.read_to_string(&list).await.unwrap(), text);
}

#[track_caller]
fn severities(findings: &[cs_core::Finding]) -> Vec<(Severity, String)> {
    findings
        .iter()
        .map(|f| (f.severity, f.subject.clone()))
        .collect()
}

#[tokio::test]
async fn target_configured_passes_only_when_every_entry_points_at_the_target() {
    let h = host();
    let before = TargetConfigured::new("4.20")
        .run(&h as &dyn Host)
        .await
        .unwrap();
    assert_eq!(
        severities(&before),
        [
            (Severity::Fail, format!("{LIST}:2")),
            (Severity::Fail, format!("{REPO}:1")),
        ]
    );
    assert_eq!(
        before[0].message,
        "CloudStack repository points at 4.19, not at 4.20"
    );
    RepoSwitcher::default().switch(&h, "4.20").await.unwrap();
    let after = TargetConfigured::new("4.20")
        .run(&h as &dyn Host)
        .await
        .unwrap();
    assert_eq!(severities(&after), [(Severity::Pass, "mgmt1".to_string())]);
    assert_eq!(
        after[0].message,
        "2 CloudStack repository entries in 2 files point at 4.20"
    );
}

#[tokio::test]
async fn target_configured_fails_on_a_repository_in_both_a_list_and_a_sources_file() {
    let h = FakeHost::new("kvm1")
        .with_file(LIST, "deb https://download.cloudstack.org/ubuntu noble 4.20\n")
        .with_file(
            "/etc/apt/sources.list.d/cloudstack.sources",
            "Types: deb\nURIs: https://download.cloudstack.org/ubuntu/\nSuites: noble\nComponents: 4.20\n",
        );
    let f = TargetConfigured::new("4.20")
        .run(&h as &dyn Host)
        .await
        .unwrap();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Fail);
    assert_eq!(
        f[0].subject,
        format!("{LIST}:1, /etc/apt/sources.list.d/cloudstack.sources:1")
    );
    assert!(
        f[0].message.contains("in both a .list and a .sources file"),
        "{}",
        f[0].message
    );
}

#[tokio::test]
async fn target_configured_fails_without_any_cloudstack_repository_or_on_a_broken_file() {
    let h = FakeHost::new("kvm2").with_dir("/etc/apt/sources.list.d");
    let f = TargetConfigured::new("4.20")
        .run(&h as &dyn Host)
        .await
        .unwrap();
    assert_eq!(severities(&f), [(Severity::Fail, "kvm2".to_string())]);
    let h = FakeHost::new("kvm3").with_file(LIST, "deb [arch=amd64 https://x noble\n");
    let f = TargetConfigured::new("4.20")
        .run(&h as &dyn Host)
        .await
        .unwrap();
    assert_eq!(severities(&f), [(Severity::Fail, LIST.to_string())]);
    assert_eq!(f[0].message, "line 1: unterminated [options]: missing `]`");
}
