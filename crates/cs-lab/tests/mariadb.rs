//! The lab MariaDB: a real server, one per test binary, a database per test.

use cs_lab::DbUrlExt;
use mysql::prelude::Queryable;

#[test]
fn shared_server_answers_as_root_and_cloud() {
    let server = cs_lab::mariadb();
    assert!(server.version().contains("MariaDB"), "{}", server.version());
    let mut conn = server.cloud().connect().unwrap();
    let one: Option<u8> = conn.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").unwrap();
    assert_eq!(user.as_deref(), Some("cloud@%"));
}

#[test]
fn a_wrong_password_is_refused() {
    let mut url = cs_lab::mariadb().cloud();
    url.password = cs_core::Secret::new("wrong");
    let err = url.connect().unwrap_err();
    let text = cs_core::error_chain(&err);
    assert!(text.contains("Access denied"), "{text}");
    assert!(!text.contains("wrong"), "password leaked: {text}");
}

#[test]
fn each_test_gets_its_own_databases_dropped_afterwards() {
    let server = cs_lab::mariadb();
    let (main, extra) = {
        let mut db = server.database("own_db").unwrap();
        let extra = db.extra("usage").unwrap();
        let mut conn = db.url().connect().unwrap();
        conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)")
            .unwrap();
        (db.name().to_string(), extra)
    };
    assert!(main.starts_with("cs_t_own_db_"));
    let mut conn = server.root().connect().unwrap();
    let left: Vec<String> = conn
        .exec(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name IN (?, ?)",
            (&main, &extra),
        )
        .unwrap();
    assert!(left.is_empty(), "not dropped: {left:?}");
}

#[test]
fn separate_servers_start_and_stop_cleanly() {
    let server = cs_lab::MariaDb::start().unwrap();
    let port = server.port();
    let dir = server.dir().to_path_buf();
    server.exec("CREATE DATABASE x").unwrap();
    drop(server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn limited_users_get_only_their_grants() {
    let server = cs_lab::mariadb();
    let db = server.database("limited").unwrap();
    let url = server
        .create_user(
            "cs_t_reader",
            &[&format!("GRANT SELECT ON `{}`.* TO {{user}}", db.name())],
        )
        .unwrap();
    let mut conn = url.with_database(db.name()).connect().unwrap();
    let err = conn.query_drop("CREATE TABLE t (id INT)").unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
}
