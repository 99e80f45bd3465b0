//! Round trips against a real MariaDB: native dump → stock `mariadb` client restore,
//! `mariadb-dump` → native restore, and a swap restore with zstd and parallel parts, all with
//! equal per-table checksums; and table definitions that come back exactly although the
//! restore adds most keys after the rows.

mod common;

use std::sync::Arc;

use common::*;
use cs_backup::{
    BackupOptions, Compression, Manifest, MysqldumpEngine, NativeEngine, RestoreMode,
    RestoreOptions, RestoreReport, backup, drop_parked, restore, verify, verify_deep,
};
use cs_core::{LocalHost, NoProgress, RecordingProgress, Unit};

fn options(dbs: &[&str]) -> BackupOptions {
    BackupOptions::default()
        .databases(dbs.iter().map(|s| s.to_string()).collect())
        .threads(3)
        .chunk_rows(700)
        .statement_bytes(16 * 1024)
}

/// A swap restore on `threads` connections; `db` drops the parked schemas when it goes.
async fn swap_restore(
    db: &mut cs_lab::TestDb<'_>,
    dir: &std::path::Path,
    root: &cs_core::DbUrl,
    threads: usize,
) -> RestoreReport {
    let report = restore(
        dir,
        root,
        &RestoreOptions::default().threads(threads),
        &NoProgress,
    )
    .await
    .unwrap();
    for p in report.parked() {
        db.adopt(p);
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_dump_restores_with_the_stock_client_exactly() {
    let server = cs_lab::mariadb();
    let mut db = server.database("native_stock").unwrap();
    let main = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    fill_main(&root, &main, true);
    fill_usage(&root, &usage, &main);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b1");
    let progress = RecordingProgress::default();
    let m1 = backup(
        &NativeEngine::new(),
        &root,
        &dir,
        &options(&[&main, &usage]),
        &progress,
    )
    .await
    .unwrap();
    verify(&dir).await.unwrap();
    assert!(m1.file("manifest.json").is_none());
    assert_eq!(
        m1.schema(&main).unwrap().cloudstack_version(),
        Some("4.19.1.0")
    );
    assert_eq!(m1.schema(&main).unwrap().table("big").unwrap().rows, 3000);
    assert!(
        m1.schema(&main).unwrap().table("big").unwrap().files.len() > 3,
        "big is split"
    );
    let ups = progress.updates();
    assert!(
        ups.iter()
            .any(|u| u.unit == Unit::Rows && u.finished && u.done >= 3000)
    );
    assert!(
        ups.iter()
            .any(|u| u.unit == Unit::Bytes && u.done > 16_000_000)
    );

    // Modes: files 0600, directory 0700.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            assert_eq!(
                e.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{:?}",
                e.path()
            );
        }
    }

    // Drop everything and restore with the stock client alone.
    server
        .exec(&format!("DROP DATABASE `{main}`; DROP DATABASE `{usage}`"))
        .unwrap();
    let out = stock_client(&root, concatenated(&dir)).await;
    assert!(out.success(), "mariadb failed: {}", out.stderr_lossy());

    let dir2 = tmp.path().join("b2");
    let m2 = native_backup(&root, &dir2, &options(&[&main, &usage])).await;
    assert_eq!(sums(&m1), sums(&m2));
    for (a, b) in m1.schemas.iter().zip(&m2.schemas) {
        assert_eq!(
            (&a.views, &a.routines, &a.triggers, &a.events),
            (&b.views, &b.routines, &b.triggers, &b.events)
        );
    }
    // The 16 MB blob came back byte for byte.
    assert_eq!(
        scalar(
            &root,
            &format!("SELECT LENGTH(lb) FROM `{main}`.everything WHERE parent_id = 3")
        ),
        Some("16777224".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysqldump_dump_restores_natively_exactly() {
    let server = cs_lab::mariadb();
    let mut db = server.database("mysqldump_native").unwrap();
    let main = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    fill_main(&root, &main, true);
    fill_usage(&root, &usage, &main);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dump");
    let engine = MysqldumpEngine::new(Arc::new(LocalHost::new()));
    let m1 = backup(
        &engine,
        &root,
        &dir,
        &options(&[&main, &usage]),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(m1.engine, "mysqldump");
    verify(&dir).await.unwrap();

    // The checksums parsed from the dump equal the live tables' (native backup of live).
    let live = native_backup(&root, &tmp.path().join("live"), &options(&[&main, &usage])).await;
    assert_eq!(sums(&m1), sums(&live));

    // Native restore (swap) of the mysqldump backup after changing the live data.
    server
        .exec(&format!(
            "DELETE FROM `{main}`.big WHERE id > 10; UPDATE `{main}`.parent SET name = 'changed'"
        ))
        .unwrap();
    let report = restore(&dir, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    let after = native_backup(&root, &tmp.path().join("after"), &options(&[&main, &usage])).await;
    assert_eq!(sums(&m1), sums(&after));
    for p in report.parked() {
        db.adopt(p);
    }
    drop_parked(&root, &report).await.unwrap();
}

/// The mysqldump engine reports the dump file's growing size while the dump runs, with the
/// table it is at, against a total estimated from `information_schema`, and ends with the
/// file's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysqldump_reports_bytes_written_while_it_runs() {
    let server = cs_lab::mariadb();
    let db = server.database("mysqldump_progress").unwrap();
    let main = db.name().to_string();
    let root = server.root();
    // About 80 MB of dump text: long enough to be seen several times at 5 looks a second.
    exec(
        &root,
        &main,
        &[
            "CREATE TABLE wide (id INT PRIMARY KEY, a VARCHAR(255), b VARCHAR(255)) ENGINE=InnoDB",
            "INSERT INTO wide SELECT seq, REPEAT(MD5(seq), 7), REPEAT(SHA1(seq), 6) \
             FROM seq_1_to_200000",
            // Fresh statistics, as a server that has run a while has: the estimate's source.
            "ANALYZE TABLE wide",
        ],
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dump");
    let progress = RecordingProgress::default();
    let engine = MysqldumpEngine::new(Arc::new(LocalHost::new()));
    backup(&engine, &root, &dir, &options(&[&main]), &progress)
        .await
        .unwrap();
    let file = std::fs::metadata(dir.join("dump.sql")).unwrap().len();
    let ups: Vec<_> = progress
        .updates()
        .into_iter()
        .filter(|u| u.task == "mysqldump bytes")
        .collect();
    assert!(ups.iter().all(|u| u.unit == Unit::Bytes));
    let last = ups.last().expect("the dump reported progress");
    assert!(last.finished, "{last:?}");
    assert_eq!(last.done, file, "the last update is the dump's size");
    // Counts never shrink, and several distinct sizes were seen before the end.
    assert!(ups.windows(2).all(|w| w[0].done <= w[1].done), "{ups:?}");
    let mut running: Vec<u64> = ups
        .iter()
        .filter(|u| !u.finished && u.done > 0 && u.done < file)
        .map(|u| u.done)
        .collect();
    running.dedup();
    assert!(
        running.len() >= 2,
        "growing sizes while the dump ran: {running:?}"
    );
    // The estimate from data_length is there, and of the dump's order of magnitude.
    let total = last
        .total
        .expect("a total estimated from information_schema");
    assert!(total >= file && total < file * 4, "{total} for {file}");
    // The table being dumped is named.
    assert!(
        ups.iter()
            .any(|u| u.message.as_deref() == Some(&format!("{main}.wide"))),
        "{ups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_restore_parks_the_replaced_tables_and_keeps_every_object() {
    let server = cs_lab::mariadb();
    let mut db = server.database("swap").unwrap();
    let main = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    fill_main(&root, &main, false);
    fill_usage(&root, &usage, &main);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zst");
    let opts = options(&[&main, &usage]).compression(Compression::ZSTD);
    let m1 = backup(&NativeEngine::new(), &root, &dir, &opts, &NoProgress)
        .await
        .unwrap();
    assert!(
        m1.files
            .iter()
            .all(|f| f.path.ends_with(".zst") || f.path.starts_with("grants/"))
    );

    // Deep verify restores into scratch schemas and drops them.
    verify_deep(&dir, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();

    server
        .exec(&format!(
            "INSERT INTO `{main}`.parent VALUES (99, 'new'); DROP PROCEDURE `{main}`.twice; \
             CREATE TABLE `{main}`.extra (x INT)"
        ))
        .unwrap();
    let report = swap_restore(&mut db, &dir, &root, 3).await;
    let parked_main = report.schemas[0].parked.clone().unwrap();
    // The replaced rows and the extra table are parked; the live schema is the backup's.
    assert_eq!(
        scalar(
            &root,
            &format!("SELECT name FROM `{parked_main}`.parent WHERE id = 99")
        ),
        Some("new".into())
    );
    assert_eq!(
        scalar(
            &root,
            &format!("SELECT COUNT(*) FROM `{main}`.parent WHERE id = 99")
        ),
        Some("0".into())
    );
    assert_eq!(
        scalar(
            &root,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{main}' AND TABLE_NAME = 'extra'"
            )
        ),
        Some("0".into())
    );
    assert_eq!(
        routines(&root, &main),
        [
            "FUNCTION twice",
            "PROCEDURE ADD_GUEST_OS_AND_HYPERVISOR_MAPPING"
        ]
    );
    // Triggers fire on the swapped-in table; the foreign key points at the live parent.
    server
        .exec(&format!("INSERT INTO `{main}`.parent VALUES (7, 'seven')"))
        .unwrap();
    assert_eq!(
        scalar(
            &root,
            &format!("SELECT msg FROM `{main}`.audit ORDER BY id DESC LIMIT 1")
        ),
        Some("parent 7".into())
    );
    let fk = scalar(
        &root,
        &format!(
            "SELECT REFERENCED_TABLE_SCHEMA FROM information_schema.KEY_COLUMN_USAGE \
         WHERE CONSTRAINT_SCHEMA = '{main}' AND CONSTRAINT_NAME = 'fk_parent'"
        ),
    );
    assert_eq!(fk, Some(main.clone()));
    assert_eq!(
        scalar(&root, &format!("SELECT COUNT(*) FROM `{usage}`.v_cross")),
        Some("4".into())
    );
    assert_eq!(
        scalar(&root, &format!("SELECT COUNT(*) FROM `{main}`.v_v")),
        Some("4".into())
    );
    // The old routine definitions are kept in the parking schema.
    assert!(
        scalar(
            &root,
            &format!(
                "SELECT COUNT(*) FROM `{parked_main}`.cs_parked_objects WHERE kind = 'TRIGGER'"
            )
        ) == Some("1".into())
    );
    // No scratch schema is left behind.
    assert_eq!(
        scalar(
            &root,
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{main}%restore%'"
            )
        ),
        Some("0".into())
    );
    drop_parked(&root, &report).await.unwrap();

    // Drop-and-reload is there too, behind its option.
    let report = restore(
        &dir,
        &root,
        &RestoreOptions::default().mode(RestoreMode::DropAndReload),
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(report.parked().is_empty());
    let m2 = Manifest::load(&dir).unwrap();
    assert_eq!(report.rows, m2.total_rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_keys_come_back_and_those_constraints_need_are_kept() {
    let server = cs_lab::mariadb();
    let mut db = server.database("keys").unwrap();
    let main = db.name().to_string();
    let root = server.root();
    // `z_child` sorts after `p`: loading on one connection creates it once `p` exists, which
    // fails unless the key its foreign key references is already there.
    exec(
        &root,
        &main,
        &[
            "CREATE TABLE p (id INT PRIMARY KEY, uuid VARCHAR(40), code VARCHAR(10), \
             UNIQUE KEY uc_uuid (uuid), UNIQUE KEY uc_code (code), KEY k_code_id (code, id)) \
             ENGINE=InnoDB",
            "CREATE TABLE z_child (id INT PRIMARY KEY, p_uuid VARCHAR(40), \
             CONSTRAINT fk_uuid FOREIGN KEY (p_uuid) REFERENCES p (uuid)) ENGINE=InnoDB",
            "CREATE TABLE a (n INT NOT NULL AUTO_INCREMENT, v INT, UNIQUE KEY un (n), \
             KEY kv (v)) ENGINE=InnoDB",
            "INSERT INTO p SELECT seq, UUID(), CONCAT('c', seq) FROM seq_1_to_2000",
            "INSERT INTO z_child SELECT id, uuid FROM p WHERE id % 3 = 0",
            "INSERT INTO a (v) SELECT seq % 17 FROM seq_1_to_1500",
        ],
    );
    let create = |table: &str| {
        query(&root, &format!("SHOW CREATE TABLE `{main}`.`{table}`"))[0][1]
            .clone()
            .unwrap()
    };
    let before: Vec<String> = ["a", "p", "z_child"].iter().map(|t| create(t)).collect();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    native_backup(&root, &dir, &options(&[&main])).await;
    let report = swap_restore(&mut db, &dir, &root, 1).await;
    let after: Vec<String> = ["a", "p", "z_child"].iter().map(|t| create(t)).collect();
    assert_eq!(after, before);
    drop_parked(&root, &report).await.unwrap();
}

/// The examples on [`backup`], [`verify`] and [`restore`] (their doc comments), run as written
/// against a real MariaDB with the re-exported cs-core types (`cs_backup::DbUrl`,
/// `cs_backup::NoProgress`), the lab's schema names in place of `cloud`/`cloud_usage`: the
/// backup lists both schemas, the verification finds every file intact, and the swap restore
/// brings back a row changed after the backup and leaves no parking schema once dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_verify_and_restore_doc_examples_run_against_a_real_server() {
    let server = cs_lab::mariadb();
    let mut db = server.database("doc_examples").unwrap();
    let main = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    fill_main(&root, &main, false);
    fill_usage(&root, &usage, &main);
    let url: cs_backup::DbUrl = root.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("before-4.19");

    // `backup`'s example.
    let options = BackupOptions::default().databases(vec![main.clone(), usage.clone()]);
    let manifest = backup(
        &NativeEngine::new(),
        &url,
        &dir,
        &options,
        &cs_backup::NoProgress,
    )
    .await
    .unwrap();
    let lines: Vec<String> = manifest
        .schemas
        .iter()
        .map(|schema| {
            let rows: u64 = schema.tables.iter().map(|t| t.rows).sum();
            format!(
                "{}: {} tables, {rows} rows",
                schema.name,
                schema.tables.len()
            )
        })
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{main}: 7 tables, ")),
        "{lines:?}"
    );
    assert_eq!(lines[1], format!("{usage}: 1 tables, 500 rows"));

    // `verify`'s example.
    match verify(&dir).await {
        Ok(verified) => assert_eq!(verified.files.len(), manifest.files.len()),
        Err(e) => panic!("the fresh backup does not verify: {e}"),
    }

    // A connection on the schema (a running CloudStack's) shows before a restore.
    let held = root.with_database(&main);
    let held = tokio::task::block_in_place(|| {
        use cs_lab::DbUrlExt;
        held.connect().unwrap()
    });
    let sessions = cs_backup::sessions_using(&url, &[main.clone(), usage.clone()])
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].schema, main);
    assert_eq!(sessions[0].user, url.user);
    drop(held);

    // `restore`'s example, after a change the restore must undo.
    exec(
        &root,
        &main,
        &["UPDATE parent SET name = 'changed' WHERE id = 1"],
    );
    let report = restore(
        &dir,
        &url,
        &RestoreOptions::default(),
        &cs_backup::NoProgress,
    )
    .await
    .unwrap();
    let parked: Vec<String> = report.parked().iter().map(|p| p.to_string()).collect();
    for p in &parked {
        db.adopt(p);
    }
    assert_eq!(report.tables, 8);
    assert_eq!(parked.len(), 2, "{report:?}");
    drop_parked(&url, &report).await.unwrap();
    assert_eq!(
        scalar(
            &root,
            &format!("SELECT name FROM `{main}`.parent WHERE id = 1")
        )
        .as_deref(),
        Some("eins")
    );
    for p in &parked {
        assert_eq!(
            scalar(
                &root,
                &format!(
                    "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{p}'"
                )
            )
            .as_deref(),
            Some("0"),
            "{p} is still there"
        );
    }
}

/// Restores started within the same second (their scratch names carry the second) each get
/// schemas of their own: none loads into, parks in or drops another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_in_the_same_second_keep_to_their_own_schemas() {
    let server = cs_lab::mariadb();
    let mut db = server.database("same_second").unwrap();
    let main = db.name().to_string();
    let root = server.root();
    exec(
        &root,
        &main,
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    native_backup(&root, &dir, &options(&[&main])).await;
    let scratch_only = RestoreOptions::default().mode(RestoreMode::ScratchOnly);
    let mut names = Vec::new();
    // Back to back: at least two of three share their second (a small restore takes well
    // under half of one), so they would share names without the suffix.
    for _ in 0..3 {
        let report = restore(&dir, &root, &scratch_only, &NoProgress)
            .await
            .unwrap_or_else(|e| panic!("{}", cs_core::error_chain(&e)));
        let scratch = report.schemas[0].scratch.clone().unwrap();
        db.adopt(&scratch);
        names.push(scratch);
    }
    let distinct: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), 3, "{names:?}");
    for s in &names {
        assert_eq!(
            scalar(&root, &format!("SELECT COUNT(*) FROM `{s}`.t")).as_deref(),
            Some("2"),
            "{s} holds its restore"
        );
    }
}
