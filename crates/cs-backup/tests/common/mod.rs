//! Shared fixtures for cs-backup's integration tests: a schema pair with every MariaDB column
//! type and every kind of schema object, and helpers to run the stock client.

#![allow(dead_code)] // Each test binary uses a different subset of the helpers.

use std::collections::BTreeMap;
use std::path::Path;

use cs_backup::{BackupOptions, Manifest, NativeEngine};
use cs_core::{Cmd, DbUrl, Host, LocalHost, NoProgress};
use cs_lab::DbUrlExt;
use mysql::prelude::Queryable;

/// Runs statements one by one on a fresh connection (zero dates allowed).
pub(crate) fn exec(url: &DbUrl, schema: &str, statements: &[&str]) {
    let mut conn = url.with_database(schema).connect().expect("connect");
    conn.query_drop("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")
        .unwrap();
    for s in statements {
        conn.query_drop(s)
            .unwrap_or_else(|e| panic!("fixture statement failed: {e}\n{s}"));
    }
}

/// One value as text (for assertions).
pub(crate) fn query(url: &DbUrl, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut conn = url.connect().expect("connect");
    let rows: Vec<mysql::Row> = conn.query(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    rows.into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql::Value::NULL => None,
                    mysql::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(other.as_sql(true)),
                })
                .collect()
        })
        .collect()
}

pub(crate) fn scalar(url: &DbUrl, sql: &str) -> Option<String> {
    query(url, sql)
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .flatten()
}

/// The main schema: every column type, NULLs, empty strings, zero dates, non-ASCII, a 16 MB
/// blob (when `big_blob`), generated columns, foreign keys, a table without a key, odd names,
/// triggers, a procedure, a function, an event and views (one on another).
pub(crate) fn fill_main(url: &DbUrl, schema: &str, big_blob: bool) {
    exec(url, schema, &[
        "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100)) ENGINE=InnoDB",
        "CREATE TABLE everything (
            id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT NULL,
            ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, bi BIGINT,
            biu BIGINT UNSIGNED, de DECIMAL(30,10), fl FLOAT, dbl DOUBLE, b1 BIT(1), b64 BIT(64),
            bo BOOLEAN, d DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, t TIME(6), y YEAR,
            c CHAR(10), vc VARCHAR(255), l1 VARCHAR(50) CHARACTER SET latin1, bin BINARY(8),
            vb VARBINARY(64), tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB, tt TINYTEXT,
            tx TEXT, mt MEDIUMTEXT, lt LONGTEXT, en ENUM('a','b','ü'), st SET('x','y','z'),
            js JSON, g GEOMETRY, p POINT, ip6 INET6, u UUID, ip4 INET4,
            gen_v INT AS (i * 2) VIRTUAL, gen_s VARCHAR(300) AS (CONCAT(vc, '!')) PERSISTENT,
            KEY (gen_v),
            CONSTRAINT fk_parent FOREIGN KEY (parent_id) REFERENCES parent (id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE nokey (a INT, b VARCHAR(10)) ENGINE=InnoDB",
        "CREATE TABLE `odd name-é` (`col ``x` INT PRIMARY KEY, `select` VARCHAR(5)) ENGINE=InnoDB",
        "CREATE TABLE big (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT) ENGINE=InnoDB",
        "CREATE TABLE version (id BIGINT PRIMARY KEY AUTO_INCREMENT, version VARCHAR(40) NOT NULL,
            updated DATETIME NOT NULL, step VARCHAR(32) NOT NULL) ENGINE=InnoDB",
        "CREATE TRIGGER parent_ai AFTER INSERT ON parent FOR EACH ROW
            INSERT INTO audit (msg) VALUES (CONCAT('parent ', NEW.id))",
        "CREATE PROCEDURE ADD_GUEST_OS_AND_HYPERVISOR_MAPPING(IN n INT)
         BEGIN
            DECLARE x INT DEFAULT 0;
            SELECT n + x AS r;
         END",
        "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
        "CREATE EVENT ev_cleanup ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE id < 0",
        "CREATE VIEW v_parent AS SELECT id, name FROM parent",
        "CREATE VIEW v_v AS SELECT id FROM v_parent WHERE id > 0",
        "INSERT INTO parent VALUES (1, 'eins'), (2, 'zwei ü 🙂 中文'), (3, '')",
        "INSERT INTO version (version, updated, step) VALUES
            ('4.18.0.0', '2024-01-01 00:00:00', 'Complete'),
            ('4.19.1.0', '2024-06-01 12:00:00', 'Complete')",
        "INSERT INTO everything (parent_id, ti, tiu, si, mi, i, bi, biu, de, fl, dbl, b1, b64, bo,
            d, dt, ts, t, y, c, vc, l1, bin, vb, tb, bl, mb, lb, tt, tx, mt, lt, en, st, js, g, p,
            ip6, u, ip4) VALUES
          (1, -128, 255, -32768, -8388608, -2147483648, -9223372036854775808, 18446744073709551615,
            '-12345678901234567890.1234567890', 3.14159, -2.718281828459045e-300, b'1',
            b'1010101010101010101010101010101010101010101010101010101010101010', TRUE,
            '0000-00-00', '0000-00-00 00:00:00.000000', '2038-01-19 03:14:07.999', '-838:59:59.000000', 1901,
            'ä', 'It''s a \"test\"\\\\ with \\n newline, tab\\t and \\0 nul ; -- not a comment', 'café ÿ',
            UNHEX('00FF00FF27225C0A'), UNHEX('000102030405'), UNHEX('1A'), UNHEX('FFFEFD'), '', 'x',
            'tiny ✓', 'text 🙂', REPEAT('medium ', 1000), 'long', 'ü', 'x,z', '{\"k\": [1, \"two\", null]}',
            ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))'), POINT(1.5, -2.25),
            '2001:db8::1', '123e4567-e89b-12d3-a456-426614174000', '192.0.2.1'),
          (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'0', b'0', FALSE, '1000-01-01', '9999-12-31 23:59:59.999999',
            '1970-01-01 00:00:01', '00:00:00', 0, '', '', '', '', '', '', '', '', '', '', '', '', '',
            'a', '', '[]', NULL, NULL, '::', '00000000-0000-0000-0000-000000000000', '0.0.0.0')",
        "INSERT INTO nokey VALUES (1, 'a'), (1, 'a'), (NULL, ''), (NULL, NULL)",
        "INSERT INTO `odd name-é` VALUES (1, 'from'), (2, NULL)",
        "INSERT INTO big SELECT seq, CONCAT('row ', seq, ' ', REPEAT('x', seq % 20)), seq % 7 FROM seq_1_to_3000",
    ]);
    if big_blob {
        exec(
            url,
            schema,
            &["INSERT INTO everything (parent_id, lb, mb) VALUES
                (3, REPEAT(UNHEX('00FF27225C0D0A1A41'), 1864136), REPEAT(UNHEX('C3A9'), 10))"],
        );
    }
}

/// The usage schema: a table, a view reading the main schema, a procedure.
pub(crate) fn fill_usage(url: &DbUrl, schema: &str, main: &str) {
    exec(
        url,
        schema,
        &[
            "CREATE TABLE usage_event (id BIGINT AUTO_INCREMENT PRIMARY KEY, type VARCHAR(32),
            account_id BIGINT, created DATETIME, size BIGINT UNSIGNED) ENGINE=InnoDB",
            &format!("CREATE VIEW v_cross AS SELECT id, name FROM `{main}`.parent"),
            "CREATE PROCEDURE usage_noop() BEGIN END",
            "INSERT INTO usage_event (type, account_id, created, size)
            SELECT 'VM.CREATE', seq % 13, '2024-01-01 00:00:00' + INTERVAL seq MINUTE, seq * 1024
            FROM seq_1_to_500",
        ],
    );
}

/// Table name → (rows, checksum) of every table in a manifest, keyed `schema.table` with the
/// schema replaced through `rename` (to compare backups of renamed schemas).
pub(crate) fn sums(m: &Manifest) -> BTreeMap<String, (u64, String)> {
    m.schemas
        .iter()
        .flat_map(|s| {
            s.tables.iter().map(move |t| {
                (
                    format!("{}.{}", s.name, t.name),
                    (t.rows, t.checksum.clone()),
                )
            })
        })
        .collect()
}

/// Runs the stock `mariadb` client on `input`, password in a `0600` option file.
pub(crate) async fn stock_client(url: &DbUrl, input: Vec<u8>) -> cs_core::Output {
    let dir = tempfile::tempdir().unwrap();
    let cnf = dir.path().join("client.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[client]\nuser={}\npassword=\"{}\"\nhost={}\nport={}\n",
            url.user,
            url.password.expose(),
            url.host,
            url.port
        ),
    )
    .unwrap();
    LocalHost::new()
        .run(
            &Cmd::new("mariadb")
                .arg(format!("--defaults-extra-file={}", cnf.display()))
                .arg("--max-allowed-packet=1G")
                .arg("--batch")
                .stdin(input),
        )
        .await
        .expect("run mariadb")
}

/// Every dump file of a native backup, in name order (what `cat *.sql` would give).
pub(crate) fn concatenated(dir: &Path) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Routine inventory of a live schema: `KIND name` sorted.
pub(crate) fn routines(url: &DbUrl, schema: &str) -> Vec<String> {
    query(
        url,
        &format!(
            "SELECT CONCAT(ROUTINE_TYPE, ' ', ROUTINE_NAME) FROM information_schema.ROUTINES
             WHERE ROUTINE_SCHEMA = '{schema}' ORDER BY 1"
        ),
    )
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect()
}

/// A native backup of `options.databases` into `dir`, which must succeed.
pub(crate) async fn native_backup(url: &DbUrl, dir: &Path, options: &BackupOptions) -> Manifest {
    cs_backup::backup(&NativeEngine::new(), url, dir, options, &NoProgress)
        .await
        .unwrap()
}
