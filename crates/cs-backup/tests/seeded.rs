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

    let options = BackupOptions::default()
        .databases(vec![cloud.clone(), usage.clone()])
        .threads(2)
        .chunk_rows(500)
        .compression(Compression::ZSTD);
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

/// `SHOW CREATE TABLE` of every table of `schema`, by name.
fn definitions(root: &cs_core::DbUrl, schema: &str) -> Vec<(String, String)> {
    query(
        root,
        &format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = '{schema}' AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME"
        ),
    )
    .into_iter()
    .map(|r| {
        let name = r[0].clone().unwrap();
        let create = query(root, &format!("SHOW CREATE TABLE `{schema}`.`{name}`"))[0][1]
            .clone()
            .unwrap();
        (name, create)
    })
    .collect()
}

/// The own restore gives back every table of a CloudStack-shaped schema with the definition it
/// was backed up with, index order included, although it adds keys after the rows: through a
/// scratch restore and a swap, from a native and a mariadb-dump backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_cloudstack_tables_keep_their_exact_definitions() {
    let server = cs_lab::mariadb();
    let mut db = server.database("seeded_ddl").unwrap();
    let cloud = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    let mut opts = cs_lab::SeedOptions::new("4.18.1.0".parse().unwrap(), &cloud, &usage);
    opts.scale = 500;
    cs_lab::seed(&root, &opts).unwrap();
    // The foreign keys of a real 4.18 schema on these tables (the seed's subset leaves them
    // out): CloudStack's `setup/db/db/schema-228to229.sql` (cluster) and
    // `setup/db/create-schema.sql` (host, vm_instance). They make the restore keep the keys
    // they need in `CREATE TABLE` while others come after the rows.
    exec(
        &root,
        &cloud,
        &[
            "SET SESSION foreign_key_checks = 0",
            "ALTER TABLE cluster ADD CONSTRAINT fk_cluster__data_center_id \
             FOREIGN KEY (data_center_id) REFERENCES data_center (id) ON DELETE CASCADE",
            "ALTER TABLE host ADD CONSTRAINT fk_host__cluster_id \
             FOREIGN KEY (cluster_id) REFERENCES cluster (id) ON DELETE CASCADE",
            "ALTER TABLE vm_instance ADD CONSTRAINT fk_vm_instance__host_id \
             FOREIGN KEY (host_id) REFERENCES host (id), \
             ADD CONSTRAINT fk_vm_instance__last_host_id \
             FOREIGN KEY (last_host_id) REFERENCES host (id)",
        ],
    );
    let before = [definitions(&root, &cloud), definitions(&root, &usage)];
    // Tables the issue names whose keys came back in another order, with their foreign keys.
    for t in ["cluster", "host", "vm_instance"] {
        assert!(
            before[0]
                .iter()
                .any(|(n, d)| n == t && d.contains("FOREIGN KEY")),
            "`{t}` has a foreign key"
        );
    }

    let options = BackupOptions::default()
        .databases(vec![cloud.clone(), usage.clone()])
        .threads(2)
        .chunk_rows(300);
    let tmp = tempfile::tempdir().unwrap();
    native_backup(&root, &tmp.path().join("n"), &options).await;
    let engine = MysqldumpEngine::new(Arc::new(LocalHost::new()));
    backup(&engine, &root, &tmp.path().join("m"), &options, &NoProgress)
        .await
        .unwrap();

    for dir in ["n", "m"] {
        // Scratch only: the loaded schemas are compared, then dropped.
        let report = restore(
            &tmp.path().join(dir),
            &root,
            &RestoreOptions::default().mode(cs_backup::RestoreMode::ScratchOnly),
            &NoProgress,
        )
        .await
        .unwrap();
        for (s, want) in report.schemas.iter().zip(&before) {
            let scratch = s.scratch.clone().unwrap();
            db.adopt(&scratch);
            let got = definitions(&root, &scratch);
            assert_eq!(&got, want, "{dir}: scratch restore of `{}`", s.source);
        }

        // Swap: the live schemas after it.
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
        let after = [definitions(&root, &cloud), definitions(&root, &usage)];
        for (got, want) in after.iter().zip(&before) {
            for ((name, a), (_, b)) in got.iter().zip(want) {
                assert_eq!(a, b, "{dir}: swap restore changed `{name}`");
            }
            assert_eq!(got, want, "{dir}: swap restore");
        }
    }
}
