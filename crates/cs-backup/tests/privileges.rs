//! The privileges docs/ACCESS.md lists are enough: accounts with exactly those grants (and no
//! others) back up with both engines, verify deeply and restore with a swap, on the schema pair
//! with every kind of object (tables, views, triggers, routines, events, foreign keys), whose
//! objects were created by another account (`root`), as CloudStack's are by `cloud`. Without
//! the one optional backup privilege (`RELOAD`) the backup still succeeds and says so in a note.

mod common;

use std::sync::Arc;

use common::*;
use cs_backup::{
    BackupOptions, Engine, MysqldumpEngine, NativeEngine, RestoreOptions, backup, drop_parked,
    restore, sessions_using, verify_deep,
};
use cs_core::{DbUrl, LocalHost, NoProgress};

/// Granted on the schemas backed up (docs/ACCESS.md, "backup").
const BACKUP_ON_SCHEMAS: &str = "SELECT, SHOW VIEW, TRIGGER, EVENT";
/// Global grants of a backup: `RELOAD` (optional: `FLUSH TABLES WITH READ LOCK`, for one
/// snapshot across parallel connections).
const BACKUP_GLOBAL: &str = "RELOAD";
/// Routine bodies (`SHOW CREATE PROCEDURE` of routines the account did not define).
const BACKUP_PROC: &str = "GRANT SELECT ON mysql.proc TO {user}";

/// Granted on the schemas and the restore's own (`<schema>__restore_*`, `<schema>__parked_*`,
/// a `<schema>%` pattern), for `verify --deep` and `restore` (docs/ACCESS.md, "restore").
const RESTORE_ON_SCHEMAS: &str = "SELECT, INSERT, CREATE, DROP, ALTER, \
     CREATE VIEW, SHOW VIEW, TRIGGER, EVENT, CREATE ROUTINE, ALTER ROUTINE";
/// Global grants of a restore: `SET USER` (recreate views, triggers, routines and events with
/// their original `DEFINER`) and `PROCESS` (see CloudStack's sessions on the live schemas).
const RESTORE_GLOBAL: &str = "SET USER, PROCESS";
/// The live routines' bodies, kept in the parking schema before they are replaced.
const RESTORE_PROC: &str = "GRANT SELECT ON mysql.proc TO {user}";

fn options(dbs: &[&str]) -> BackupOptions {
    BackupOptions::default()
        .databases(dbs.iter().map(|s| s.to_string()).collect())
        .threads(3)
        .chunk_rows(700)
}

/// The grants of an account, as the server reports them (to show they are exactly these).
fn grants_of(url: &DbUrl) -> Vec<String> {
    query(url, "SHOW GRANTS FOR CURRENT_USER")
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listed_privileges_are_enough_for_backup_verify_and_restore() {
    let server = cs_lab::mariadb();
    let mut db = server.database("privs").unwrap();
    let main = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    fill_main(&root, &main, false);
    fill_usage(&root, &usage, &main);
    // The test's schemas and every name the restore derives from them.
    let pattern = format!("`{}%`.*", main.replace('_', "\\_"));
    let schemas = [main.as_str(), usage.as_str()];

    // Backup: both engines, with every listed privilege.
    let backup_user = server
        .create_user(
            "cs_priv_backup",
            &[
                &format!("GRANT {BACKUP_GLOBAL} ON *.* TO {{user}}"),
                &format!("GRANT {BACKUP_ON_SCHEMAS} ON {pattern} TO {{user}}"),
                BACKUP_PROC,
            ],
        )
        .unwrap();
    assert_eq!(grants_of(&backup_user).len(), 3);
    let tmp = tempfile::tempdir().unwrap();
    let native_dir = tmp.path().join("native");
    let m = backup(
        &NativeEngine::new(),
        &backup_user,
        &native_dir,
        &options(&schemas).grant_users(vec![]),
        &NoProgress,
    )
    .await
    .unwrap_or_else(|e| panic!("native backup: {}", cs_core::error_chain(&e)));
    assert!(
        m.notes.iter().all(|n| !n.contains("lacks")),
        "{:?}",
        m.notes
    );
    assert_eq!(m.schema(&main).unwrap().table("big").unwrap().rows, 3000);
    assert_eq!(routines(&root, &main).len(), 2);
    let engine: Box<dyn Engine> = Box::new(MysqldumpEngine::new(Arc::new(LocalHost::new())));
    let dump_dir = tmp.path().join("dump");
    let d = backup(
        engine.as_ref(),
        &backup_user,
        &dump_dir,
        &options(&schemas).grant_users(vec![]),
        &NoProgress,
    )
    .await
    .unwrap_or_else(|e| panic!("mysqldump backup: {}", cs_core::error_chain(&e)));
    // Every object is in both: an account that cannot see triggers, routines or events gets
    // a backup without them and no error (information_schema hides them), so the list is
    // proven by the contents, not by success alone.
    for m in [&m, &d] {
        let s = m.schema(&main).unwrap();
        assert_eq!(
            (
                s.views.len(),
                s.routines.len(),
                s.triggers.len(),
                s.events.len()
            ),
            (2, 2, 1, 1),
            "{} backup",
            m.engine
        );
    }

    // Without the optional RELOAD: still a backup, on one connection, with a note.
    let no_reload = server
        .create_user(
            "cs_priv_noreload",
            &[
                &format!("GRANT {BACKUP_ON_SCHEMAS} ON {pattern} TO {{user}}"),
                BACKUP_PROC,
            ],
        )
        .unwrap();
    let nr = backup(
        &NativeEngine::new(),
        &no_reload,
        &tmp.path().join("noreload"),
        &options(&schemas).grant_users(vec![]),
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(
        nr.notes.iter().any(|n| n.contains("lacks RELOAD")),
        "{:?}",
        nr.notes
    );

    // Without TRIGGER the backup has no triggers and no error from the server: a note says so.
    let no_trigger = server
        .create_user(
            "cs_priv_notrigger",
            &[
                &format!("GRANT SELECT, SHOW VIEW, EVENT ON {pattern} TO {{user}}"),
                BACKUP_PROC,
            ],
        )
        .unwrap();
    let nt = backup(
        &NativeEngine::new(),
        &no_trigger,
        &tmp.path().join("notrigger"),
        &options(&schemas).grant_users(vec![]),
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(nt.schema(&main).unwrap().triggers.is_empty());
    for s in &schemas {
        assert!(
            nt.notes
                .iter()
                .any(|n| n.contains("lacks TRIGGER") && n.contains(&format!("`{s}`"))),
            "{:?}",
            nt.notes
        );
    }
    assert!(
        nt.notes.iter().all(|n| !n.contains("lacks EVENT")),
        "{:?}",
        nt.notes
    );

    // verify --deep and a swap restore with the restore's privileges.
    let restore_user = server
        .create_user(
            "cs_priv_restore",
            &[
                &format!("GRANT {RESTORE_GLOBAL} ON *.* TO {{user}}"),
                &format!("GRANT {RESTORE_ON_SCHEMAS} ON {pattern} TO {{user}}"),
                RESTORE_PROC,
            ],
        )
        .unwrap();
    let ropts = RestoreOptions::default().threads(2);
    assert_eq!(grants_of(&restore_user).len(), 3);
    for dir in [&native_dir, &dump_dir] {
        verify_deep(dir, &restore_user, &ropts, &NoProgress)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "verify --deep of {}: {}",
                    dir.display(),
                    cs_core::error_chain(&e)
                )
            });
    }
    // PROCESS: the restore sees root's session on the live schema, as it would CloudStack's.
    let mut held = {
        use cs_lab::DbUrlExt;
        root.with_database(&main).connect().unwrap()
    };
    let names: Vec<String> = schemas.iter().map(|s| s.to_string()).collect();
    let seen = sessions_using(&restore_user, &names).await.unwrap();
    assert!(seen.iter().any(|s| s.user == "root"), "{seen:?}");
    {
        use mysql::prelude::Queryable;
        held.query_drop("SELECT 1").unwrap();
    }
    drop(held);
    let report = restore(&native_dir, &restore_user, &ropts, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("swap restore: {}", cs_core::error_chain(&e)));
    for p in report.parked() {
        db.adopt(p);
    }
    assert_eq!(routines(&root, &main).len(), 2);
    drop_parked(&restore_user, &report).await.unwrap();
}
