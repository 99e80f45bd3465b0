//! The `db.backup.complete` check against a real backup, and config bundles of a host.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use cs_backup::{
    BackupCompleteCheck, BackupOptions, ConfigBundle, NativeEngine, backup, bundle_config,
    restore_config,
};
use cs_core::{Check, LocalHost, NoProgress, Severity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_complete_check_passes_then_catches_lost_routines_and_damage() {
    let server = cs_lab::mariadb();
    let db = server.database("check").unwrap();
    let root = server.root();
    fill_main(&root, db.name(), false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    backup(
        &NativeEngine::new(),
        &root,
        &dir,
        &BackupOptions::default().databases(vec![db.name().into()]),
        &NoProgress,
    )
    .await
    .unwrap();
    let check = BackupCompleteCheck::new(&dir, root.clone());
    let run = |c: BackupCompleteCheck| async move { Check::<()>::run(&c, &()).await.unwrap() };

    let f = run(check.clone()).await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Pass, "{f:?}");
    assert_eq!(f[0].id, "db.backup.complete");

    // A routine created after the backup is not in it (#8546 the other way round).
    exec(
        &root,
        db.name(),
        &["CREATE PROCEDURE idempotent_add_column() BEGIN END"],
    );
    let f = run(check.clone()).await;
    assert_eq!(f[0].severity, Severity::Fail);
    assert!(
        f[0].message.contains("PROCEDURE idempotent_add_column"),
        "{}",
        f[0].message
    );

    // No manifest: incomplete.
    std::fs::rename(dir.join("manifest.json"), tmp.path().join("m.json")).unwrap();
    let f = run(check.clone()).await;
    assert_eq!(f[0].severity, Severity::Fail);
    assert!(
        f[0].message.contains("manifest.json is missing"),
        "{}",
        f[0].message
    );
}

#[tokio::test]
async fn config_bundle_restores_contents_modes_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    let cs = etc.join("cloudstack/management");
    std::fs::create_dir_all(&cs).unwrap();
    std::fs::create_dir_all(etc.join("default")).unwrap();
    std::fs::write(cs.join("db.properties"), "db.cloud.password=ENC(x)\n").unwrap();
    std::fs::set_permissions(
        cs.join("db.properties"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(cs.join("key"), [0u8, 159, 146, 150]).unwrap();
    std::os::unix::fs::symlink("db.properties", cs.join("link")).unwrap();
    std::fs::write(
        etc.join("default/cloudstack-management"),
        "JAVA_OPTS=-Xmx2g\n",
    )
    .unwrap();
    std::fs::write(etc.join("default/cloudstack-usage"), "X=1\n").unwrap();
    std::fs::write(etc.join("default/other"), "not ours\n").unwrap();

    let host = LocalHost::new();
    let roots = [
        etc.join("cloudstack").to_str().unwrap().to_string(),
        format!("{}/default/cloudstack-*", etc.display()),
        format!("{}/not-there", etc.display()),
    ];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let bundle = bundle_config(&host, &roots).await.unwrap();
    let paths: Vec<&str> = bundle.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("default/cloudstack-usage"))
    );
    assert!(!paths.iter().any(|p| p.ends_with("default/other")));

    let saved = tmp.path().join("bundle.json");
    bundle.save(&saved).unwrap();
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = ConfigBundle::load(&saved).unwrap();
    assert_eq!(loaded, bundle);

    // The package upgrade clobbers things; the bundle puts them back.
    std::fs::write(cs.join("db.properties"), "overwritten\n").unwrap();
    std::fs::set_permissions(
        cs.join("db.properties"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(cs.join("key")).unwrap();
    std::fs::remove_file(cs.join("link")).unwrap();
    restore_config(&host, &loaded, &roots).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(cs.join("db.properties")).unwrap(),
        "db.cloud.password=ENC(x)\n"
    );
    assert_eq!(
        std::fs::metadata(cs.join("db.properties"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(cs.join("key")).unwrap(), [0u8, 159, 146, 150]);
    assert_eq!(
        std::fs::read_link(cs.join("link")).unwrap().to_str(),
        Some("db.properties")
    );
}
