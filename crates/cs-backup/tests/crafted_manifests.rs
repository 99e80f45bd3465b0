//! Crafted backups: manifests whose paths leave the directory or name unhashed files, a
//! charset carrying SQL, DDL naming the live `cloud` schema. `verify`, `verify --deep` and
//! `restore` refuse each with an error naming the field or the statement, and the live schema
//! is unchanged.

mod common;

use std::path::Path;

use common::*;
use cs_backup::{BackupOptions, Error, Manifest, RestoreOptions, restore, verify, verify_deep};
use cs_core::{DbUrl, NoProgress};
use sha2::Digest;

/// Everything the server holds, as text: schemas, and the live schema's tables with their
/// checksums, views and routines.
fn fingerprint(url: &DbUrl) -> String {
    let mut out = format!(
        "{:?}\n",
        query(
            url,
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1"
        )
    );
    let tables = query(
        url,
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = 'cloud' ORDER BY 1",
    );
    out.push_str(&format!("{tables:?}\n"));
    for t in tables {
        if t[1].as_deref() == Some("BASE TABLE") {
            let name = t[0].clone().unwrap();
            out.push_str(&format!(
                "{:?}\n",
                query(url, &format!("CHECKSUM TABLE `cloud`.`{name}` EXTENDED"))
            ));
        }
    }
    out.push_str(&format!(
        "{:?}\n",
        query(
            url,
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = 'cloud' ORDER BY 1"
        )
    ));
    out
}

/// Copies a backup directory.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn write_manifest(dir: &Path, m: &Manifest) {
    std::fs::write(dir.join("manifest.json"), m.to_json()).unwrap();
}

/// Replaces a listed file's content and updates its size and SHA-256 in the manifest, as an
/// attacker who can edit the backup would.
fn rewrite_hashed(dir: &Path, m: &mut Manifest, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).unwrap();
    let f = m.files.iter_mut().find(|f| f.path == rel).unwrap();
    f.size = text.len() as u64;
    f.sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
}

/// Runs verify, verify --deep and restore (scratch only) on a crafted backup; each must fail
/// and match `expect`; the live schema must be unchanged and no scratch schema left behind.
async fn refused(
    root: &DbUrl,
    dir: &Path,
    shallow_too: bool,
    expect: impl Fn(&Error) -> bool,
) -> Vec<Error> {
    let before = fingerprint(root);
    let mut errors = Vec::new();
    if shallow_too {
        let e = verify(dir).await.unwrap_err();
        assert!(expect(&e), "verify: {e:?}");
        errors.push(e);
    } else {
        verify(dir).await.unwrap();
    }
    let e = verify_deep(dir, root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(expect(&e), "verify --deep: {e:?}");
    errors.push(e);
    let opts = RestoreOptions::default().mode(cs_backup::RestoreMode::ScratchOnly);
    let e = restore(dir, root, &opts, &NoProgress).await.unwrap_err();
    assert!(expect(&e), "restore: {e:?}");
    errors.push(e);
    assert_eq!(fingerprint(root), before, "the live schemas changed");
    errors
}

fn unsafe_field(e: &Error, field: &str) -> bool {
    matches!(e, Error::UnsafeManifest { field: f, .. } if f == field)
        && e.to_string().contains(field)
}

fn unsafe_statement(e: &Error) -> bool {
    let inner = match e {
        Error::Restore { source, .. } => source.as_ref(),
        other => other,
    };
    matches!(inner, Error::UnsafeStatement { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_manifests_are_refused_and_live_cloud_is_untouched() {
    let server = cs_lab::mariadb();
    let root = server.root();
    // The live `cloud` schema an attacker aims at, and the schema the backup was taken of.
    exec(
        &root,
        "mysql",
        &[
            "DROP DATABASE IF EXISTS cloud",
            "CREATE DATABASE cloud",
            "CREATE TABLE cloud.configuration (name VARCHAR(40) PRIMARY KEY, value VARCHAR(40))",
            "INSERT INTO cloud.configuration VALUES ('secstorage.ssl', 'true')",
        ],
    );
    let db = server.database("crafted").unwrap();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
            "CREATE VIEW v_t AS SELECT id FROM t",
            "CREATE PROCEDURE p() SELECT 1",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let opts = BackupOptions::default()
        .databases(vec![db.name().to_string()])
        .threads(1);
    let m = native_backup(&root, &good, &opts).await;
    // The untouched backup verifies deeply.
    verify_deep(&good, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    let ddl = m.schemas[0].table("t").unwrap().files[0].clone();
    let views = m.schemas[0].files.views.clone().unwrap();
    let routines = m.schemas[0].files.routines.clone().unwrap();
    let mut case = 0;
    let mut crafted = |edit: &dyn Fn(&Path, &mut Manifest)| {
        case += 1;
        let dir = tmp.path().join(format!("case{case}"));
        copy_dir(&good, &dir);
        let mut m = Manifest::load(&dir).unwrap();
        edit(&dir, &mut m);
        write_manifest(&dir, &m);
        dir
    };

    // 1. Paths leaving the directory: a table file, a schema file, the grants file.
    std::fs::write(
        tmp.path().join("evil.sql"),
        "CREATE TABLE `cloud`.`pwned` (a INT);\n",
    )
    .unwrap();
    let dir = crafted(&|_, m| m.schemas[0].tables[0].files[0] = "../evil.sql".into());
    let errs = refused(&root, &dir, true, |e| {
        unsafe_field(e, "schemas[0].tables[0].files[0]")
    })
    .await;
    assert!(
        errs[0].to_string().contains("leaves the backup directory"),
        "{}",
        errs[0]
    );
    let dir = crafted(&|_, m| m.schemas[0].files.views = Some("/etc/passwd".into()));
    refused(&root, &dir, true, |e| {
        unsafe_field(e, "schemas[0].files.views")
    })
    .await;
    let dir = crafted(&|_, m| m.grants_file = Some("a/../../evil.sql".into()));
    refused(&root, &dir, true, |e| unsafe_field(e, "grants_file")).await;

    // 2. A file that is not listed (so not hashed) swapped in for the DDL.
    let dir = crafted(&|dir, m| {
        std::fs::write(
            dir.join("0-swapped.sql"),
            "CREATE TABLE `cloud`.`pwned` (a INT);\n",
        )
        .unwrap();
        m.schemas[0].tables[0].files[0] = "0-swapped.sql".into();
    });
    let errs = refused(&root, &dir, true, |e| {
        unsafe_field(e, "schemas[0].tables[0].files[0]")
    })
    .await;
    assert!(errs[0].to_string().contains("not listed"), "{}", errs[0]);

    // A listed file reached through a symbolic link to a directory outside.
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::copy(good.join(&ddl), outside.join(&ddl)).unwrap();
    let dir = crafted(&|dir, m| {
        std::os::unix::fs::symlink(&outside, dir.join("sub")).unwrap();
        let rel = format!("sub/{ddl}");
        m.files.iter_mut().find(|f| f.path == ddl).unwrap().path = rel.clone();
        m.schemas[0].tables[0].files[0] = rel;
    });
    let errs = refused(&root, &dir, true, |e| {
        matches!(e, Error::Verify { .. } | Error::Restore { .. })
    })
    .await;
    assert!(errs[0].to_string().contains("symbolic link"), "{}", errs[0]);

    // 3. SQL in the charset and collation.
    let dir = crafted(&|_, m| {
        m.schemas[0].charset = "utf8mb4; CREATE TABLE cloud.pwned (a INT); SELECT 1".into();
    });
    let errs = refused(&root, &dir, true, |e| unsafe_field(e, "schemas[0].charset")).await;
    assert!(
        errs[0].to_string().contains("not a character set"),
        "{}",
        errs[0]
    );
    let dir = crafted(&|_, m| m.schemas[0].collation = "utf8mb4_bin`x".into());
    refused(&root, &dir, true, |e| {
        unsafe_field(e, "schemas[0].collation")
    })
    .await;

    // A system schema as the backup's schema.
    let dir = crafted(&|_, m| m.schemas[0].name = "mysql".into());
    refused(&root, &dir, true, |e| unsafe_field(e, "schemas[0].name")).await;

    // 4. Hashed DDL, view and routine files naming the live `cloud` schema (the checksums
    // match: only the statements give them away).
    let attacks = [
        (ddl.clone(), "CREATE TABLE `cloud`.`pwned` (a INT);\n"),
        (
            ddl.clone(),
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));\nRENAME TABLE t TO cloud.t;\n",
        ),
        (ddl.clone(), "USE `cloud`;\nCREATE TABLE pwned (a INT);\n"),
        (
            ddl.clone(),
            "/*!40000 USE cloud */;\nCREATE TABLE pwned (a INT);\n",
        ),
        (ddl.clone(), "CREATE DATABASE IF NOT EXISTS elsewhere;\n"),
        (
            views.clone(),
            "CREATE VIEW `cloud`.`v_pwned` AS SELECT 1;\n",
        ),
        (views.clone(), "DROP TABLE IF EXISTS CLOUD.configuration;\n"),
        (
            routines.clone(),
            "DELIMITER ;;\nCREATE PROCEDURE `cloud`.`p_pwned`() SELECT 1;;\nDELIMITER ;\n",
        ),
        (
            routines.clone(),
            "DELIMITER ;;\nCREATE TRIGGER tr AFTER INSERT ON `cloud`.`configuration` FOR EACH ROW SET @x = 1;;\nDELIMITER ;\n",
        ),
    ];
    for (file, text) in attacks {
        // Each file starts in the backup's own schema (mapped to the scratch one), as the
        // real ones do; only the statement after it aims elsewhere.
        let text = format!("USE `{}`;\n{text}", db.name());
        let dir = crafted(&|dir, m| rewrite_hashed(dir, m, &file, &text));
        let errs = refused(&root, &dir, false, unsafe_statement).await;
        let msg = cs_core::error_chain(&errs[0]);
        assert!(
            msg.contains(&file) && msg.contains("refused"),
            "{text}: {msg}"
        );
    }
    // Two statements in one (the delimiter changed): the connection that runs backup files
    // takes one statement per call, so the server refuses the pair as a syntax error.
    let text = format!(
        "USE `{}`;\nDELIMITER ;;\nCREATE PROCEDURE p2() SELECT 1; CREATE TABLE pwn2 (a INT);;\nDELIMITER ;\n",
        db.name()
    );
    let dir = crafted(&|dir, m| rewrite_hashed(dir, m, &routines, &text));
    refused(&root, &dir, false, |e| {
        cs_core::error_chain(e).contains("You have an error in your SQL syntax")
    })
    .await;
    let left: Vec<_> = query(
        &root,
        "SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_NAME = 'pwn2'",
    );
    assert!(left.is_empty(), "a second statement ran: {left:?}");
    let left: Vec<_> = query(
        &root,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME LIKE '%restore%' OR SCHEMA_NAME = 'elsewhere'",
    );
    assert!(left.is_empty(), "schemas left behind: {left:?}");
    exec(&root, "mysql", &["DROP DATABASE cloud"]);
}
