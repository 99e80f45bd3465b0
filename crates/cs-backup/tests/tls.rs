//! TLS to the database, against a real MariaDB with a CA of its own and
//! `require_secure_transport=ON` (`cs_lab::mariadb_tls`): backup (both engines), verify, a deep
//! verify and a swap restore with `ssl-mode=VERIFY_CA`; `ssl-mode=DISABLED` refused with the
//! server's reason; and, without a packet capture, proof that every connection the server
//! accepted was TLS (its `Connections` and `Ssl_accepts` counters move together), so the own
//! wire client (which speaks no TLS) carried none of them.

mod common;

use std::sync::Arc;

use common::*;
use cs_backup::{
    BackupOptions, MysqldumpEngine, NativeEngine, RestoreOptions, backup, drop_parked, restore,
    verify, verify_deep,
};
use cs_core::{DbTls, DbUrl, LocalHost, NoProgress, TlsMode};

/// The tests of this binary share one server and compare its global counters: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(dbs: &[&str]) -> BackupOptions {
    BackupOptions::default()
        .databases(dbs.iter().map(|s| s.to_string()).collect())
        .threads(3)
        .chunk_rows(700)
}

/// `(Connections, Ssl_accepts)`, read on a TLS connection of its own.
fn counters(url: &DbUrl) -> (u64, u64) {
    let get = |name: &str| -> u64 {
        query(url, &format!("SHOW GLOBAL STATUS LIKE '{name}'"))[0][1]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    (get("Connections"), get("Ssl_accepts"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_verify_and_restore_work_over_verify_ca_and_never_in_clear() {
    let _serial = SERIAL.lock().await;
    let server = cs_lab::mariadb_tls();
    let mut db = server.database("tls_roundtrip").unwrap();
    let main = db.name().to_string();
    let usage = db.extra("usage").unwrap();
    let root = server.root();
    assert_eq!(root.tls.mode, TlsMode::VerifyCa);
    fill_main(&root, &main, false);
    fill_usage(&root, &usage, &main);
    let tmp = tempfile::tempdir().unwrap();

    let before = counters(&root);
    // Native engine: its workers would use the wire client on a connection in clear; the
    // server would refuse it and the backup would fail.
    let dir = tmp.path().join("native");
    let m1 = backup(
        &NativeEngine::new(),
        &root,
        &dir,
        &options(&[&main, &usage]),
        &NoProgress,
    )
    .await
    .unwrap();
    verify(&dir).await.unwrap();
    verify_deep(&dir, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    // A swap restore after the live data changed brings the backed-up rows back.
    server
        .exec(&format!("DELETE FROM `{main}`.big WHERE id > 10"))
        .unwrap();
    let report = restore(&dir, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    for p in report.parked() {
        db.adopt(p);
    }
    let after = native_backup(&root, &tmp.path().join("after"), &options(&[&main, &usage])).await;
    assert_eq!(sums(&m1), sums(&after));
    drop_parked(&root, &report).await.unwrap();
    let (connections, tls) = counters(&root);
    let made = connections - before.0;
    // Backup workers, catalog reads, restore workers and the counter reads: many connections,
    // every one of them TLS.
    assert!(made >= 8, "only {made} connections");
    assert_eq!(made, tls - before.1, "connections in clear were made");

    // The mysqldump engine gets ssl-ca and server-certificate verification in its option
    // file (mariadb-dump has no ssl-mode), and its checksums equal the live tables'.
    let engine = MysqldumpEngine::new(Arc::new(LocalHost::new()));
    let dumped = backup(
        &engine,
        &root,
        &tmp.path().join("dump"),
        &options(&[&main, &usage]),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(dumped.engine, "mysqldump");
    verify(&tmp.path().join("dump")).await.unwrap();
    assert_eq!(sums(&dumped), sums(&m1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_disabled_is_refused_saying_the_server_requires_tls() {
    let _serial = SERIAL.lock().await;
    let server = cs_lab::mariadb_tls();
    let db = server.database("tls_disabled").unwrap();
    let clear = server.root().with_tls(DbTls::default());
    let tmp = tempfile::tempdir().unwrap();
    let e = backup(
        &NativeEngine::new(),
        &clear,
        &tmp.path().join("b"),
        &options(&[db.name()]),
        &NoProgress,
    )
    .await
    .unwrap_err();
    let text = cs_core::error_chain(&e);
    // MariaDB answers a login in clear with "Access denied" only; the error says what is
    // wrong first.
    assert!(
        text.contains(": the server requires TLS (require_secure_transport=ON)")
            && text.contains("set ssl-mode=VERIFY_CA"),
        "{text}"
    );
    assert!(!text.contains(server.root().password.expose()), "{text}");
    // A wrong password in clear stays "Access denied": the TLS login is refused too.
    let mut wrong_password = clear.clone();
    wrong_password.password = cs_core::Secret::new("not-the-password");
    let text = query_err(&wrong_password);
    assert!(
        text.contains("Access denied") && !text.contains("requires TLS"),
        "{text}"
    );

    // A CA that did not sign the server's certificate is refused too (VERIFY_CA checks).
    let other_ca = tmp.path().join("other-ca.pem");
    std::fs::write(
        &other_ca,
        std::fs::read(&server.tls().unwrap().client_cert).unwrap(),
    )
    .unwrap();
    let wrong = server.root().with_tls(DbTls {
        mode: TlsMode::VerifyCa,
        ca: Some(other_ca),
        cert: None,
        key: None,
    });
    let e = backup(
        &NativeEngine::new(),
        &wrong,
        &tmp.path().join("c"),
        &options(&[db.name()]),
        &NoProgress,
    )
    .await
    .unwrap_err();
    let text = cs_core::error_chain(&e);
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_configured() {
    let _serial = SERIAL.lock().await;
    let server = cs_lab::mariadb_tls();
    let lab = server.tls().unwrap();
    // An account that must present a certificate signed by the server's CA.
    let url = server
        .create_user("tls_x509", &["GRANT SELECT ON *.* TO {user}"])
        .unwrap();
    server
        .exec("ALTER USER 'tls_x509'@'%' REQUIRE X509")
        .unwrap();
    let without = query_err(&url);
    assert!(without.contains("Access denied"), "{without}");
    let with = url.with_tls(DbTls {
        cert: Some(lab.client_cert.clone()),
        key: Some(lab.client_key.clone()),
        ..url.tls.clone()
    });
    assert_eq!(scalar(&with, "SELECT 1").as_deref(), Some("1"));
    // VERIFY_IDENTITY: the server's certificate names 127.0.0.1, the address connected to.
    let identity = with.with_tls(DbTls {
        mode: TlsMode::VerifyIdentity,
        ..with.tls.clone()
    });
    let cipher = query(
        &identity,
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME = 'SSL_CIPHER'",
    );
    assert!(
        cipher[0][0].as_deref().is_some_and(|c| !c.is_empty()),
        "{cipher:?}"
    );
}

fn query_err(url: &DbUrl) -> String {
    use cs_lab::DbUrlExt;
    match url.connect() {
        Ok(_) => String::from("connected"),
        Err(e) => cs_core::error_chain(&e),
    }
}
