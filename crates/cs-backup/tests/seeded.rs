//! Round trips of a realistic CloudStack-shaped pair seeded by `cs_lab::seed`: the 4.18 schema
//! subset with its real stored procedures, version rows, blobs and generated rows.

mod common;

use std::sync::Arc;

use common::*;
use cs_backup::{
    BackupCompleteCheck, BackupOptions, Compression, MysqldumpEngine, NativeEngine, RestoreOptions,
    backup, drop_parked, restore, verify,
};
use cs_core::{Check, LocalHost, NoProgress, Severity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_cloudstack_round_trips_through_both_engines() {
    let server = cs_lab::mariadb();
    let mut db = server.database("seeded").unwrap();
    let cloud = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    let mut opts = cs_lab::SeedOptions::new("4.19.1.0".parse().unwrap(), &cloud, &usage);
    opts.scale = 3000;
    let summary = cs_lab::seed(&root, &opts).unwrap();
    let live_routines = routines(&root, &cloud);
    assert!(
        !live_routines.is_empty(),
        "the seed has CloudStack's procedures"
    );

    let options = BackupOptions {
        databases: vec![cloud.clone(), usage.clone()],
        threads: 2,
        chunk_rows: 500,
        compression: Compression::ZSTD,
        ..BackupOptions::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let native = native_backup(&root, &tmp.path().join("n"), &options).await;
    assert_eq!(native.total_rows(), summary.rows);
    assert_eq!(
        native.schema(&cloud).unwrap().cloudstack_version(),
        Some("4.19.1.0")
    );
    let engine = MysqldumpEngine::new(Arc::new(LocalHost::new()));
    let dumped = backup(&engine, &root, &tmp.path().join("m"), &options, &NoProgress)
        .await
        .unwrap();
    verify(&tmp.path().join("m")).await.unwrap();
    assert_eq!(
        sums(&native),
        sums(&dumped),
        "both engines see the same rows"
    );

    let check = BackupCompleteCheck::new(tmp.path().join("n"), root.clone());
    let findings = Check::<()>::run(&check, &()).await.unwrap();
    assert!(
        findings.iter().all(|f| f.severity == Severity::Pass),
        "{findings:?}"
    );

    // Restore the mysqldump backup natively, then the native one; compare each time.
    for dir in ["m", "n"] {
        let report = restore(
            &tmp.path().join(dir),
            &root,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        for p in report.parked() {
            db.adopt(p);
        }
        drop_parked(&root, &report).await.unwrap();
        let after = backup(
            &NativeEngine::new(),
            &root,
            &tmp.path().join(format!("after-{dir}")),
            &options,
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(sums(&after), sums(&native));
        assert_eq!(routines(&root, &cloud), live_routines);
    }
}
