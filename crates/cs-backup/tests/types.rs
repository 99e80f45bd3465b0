//! Every MariaDB 10.6–11.x column type and schema object through three round trips against
//! one real server: native dump → stock `mariadb` client, native dump → own restore (into a
//! dropped schema), and `mariadb-dump` → own restore (swapped over the live schema). Each case
//! is a schema of its own; after every round trip its fingerprint (a native backup's per-table
//! rows and checksums), every table's and sequence's `SHOW CREATE TABLE` text, the object
//! inventory and the case's own probes (history rows, sequence state, values read back as
//! text or hex) must equal those taken before. A case needing a newer server asserts the
//! version (it never skips). Every case runs again on two servers whose packet limit leaves
//! the restore no bulk inserts, one with `LOCAL` loads and one without, so the fallbacks
//! (`LOAD DATA LOCAL`, the dump's `INSERT` statements) carry every type too.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use cs_backup::{
    BackupOptions, Manifest, MysqldumpEngine, RestoreOptions, backup, drop_parked, restore,
};
use cs_core::{DbUrl, LocalHost, NoProgress};
use cs_lab::{MariaDb, MariaDbOptions};

/// Small statements (many per table) unless `statement_bytes` says otherwise.
fn options(schema: &str, statement_bytes: Option<usize>) -> BackupOptions {
    BackupOptions::default()
        .databases(vec![schema.to_string()])
        .threads(2)
        .chunk_rows(400)
        .statement_bytes(statement_bytes.unwrap_or(8 * 1024))
}

/// What must come back: fingerprint, definitions, inventory and probes.
#[derive(Debug, PartialEq, Eq)]
struct State {
    /// `schema.table` → (rows, checksum) of a native backup.
    sums: BTreeMap<String, (u64, String)>,
    /// `(name, TABLE_TYPE, SHOW CREATE TABLE)` of every table, sequence and view.
    definitions: Vec<(String, String, String)>,
    /// Routines, triggers and events.
    objects: Vec<Vec<Option<String>>>,
    /// The case's probe queries and their results.
    probes: Vec<(String, Vec<Vec<Option<String>>>)>,
}

async fn state(root: &DbUrl, schema: &str, probes: &[&str], dir: &Path) -> State {
    let m: Manifest = native_backup(root, dir, &options(schema, None)).await;
    let tables = query(
        root,
        &format!(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = '{schema}' ORDER BY TABLE_NAME"
        ),
    );
    let definitions = tables
        .into_iter()
        .map(|r| {
            let name = r[0].clone().unwrap();
            let kind = r[1].clone().unwrap();
            let create = query(root, &format!("SHOW CREATE TABLE `{schema}`.`{name}`"))[0][1]
                .clone()
                .unwrap();
            (name, kind, create)
        })
        .collect();
    let objects = query(
        root,
        &format!(
            "SELECT 'routine', ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES \
               WHERE ROUTINE_SCHEMA = '{schema}' \
             UNION ALL SELECT 'trigger', EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS \
               WHERE TRIGGER_SCHEMA = '{schema}' \
             UNION ALL SELECT 'event', STATUS, EVENT_NAME, EVENT_DEFINITION FROM information_schema.EVENTS \
               WHERE EVENT_SCHEMA = '{schema}' ORDER BY 1, 3"
        ),
    );
    let probes = probes
        .iter()
        .map(|p| {
            let sql = p.replace("{s}", &format!("`{schema}`"));
            let rows = query(root, &sql);
            (p.to_string(), rows)
        })
        .collect();
    State {
        sums: sums(&m),
        definitions,
        objects,
        probes,
    }
}

/// One object type or group of types: what fills its schema and what must read the same.
struct Case {
    name: &'static str,
    /// The MariaDB version the case needs, and what needs it.
    needs: Option<((u32, u32), &'static str)>,
    /// Statements that fill the schema.
    setup: &'static [&'static str],
    /// Queries (`{s}` stands for the schema) whose results must come back too.
    probes: &'static [&'static str],
}

/// Every case, for the runs on servers that force the restore's fallback loads.
const ALL: [&Case; 14] = [
    &UUID,
    &INET,
    &SPATIAL,
    &JSON,
    &VERSIONED,
    &SEQUENCES,
    &COLUMNS,
    &NO_KEY,
    &OBJECTS,
    &BYTES,
    &ENUM_SET_BIT,
    &KEYS,
    &PARTITIONS,
    &NUMBERS,
];

/// The server's `(major, minor)`, asserted to be at least `need` for `what`: a type the
/// server lacks fails the test with the version, never skips it.
fn require(server: &MariaDb, need: (u32, u32), what: &str) {
    let version = server.version().to_string();
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        version.contains("MariaDB") && have >= need,
        "{what} needs MariaDB {}.{}+, the lab server is {version}",
        need.0,
        need.1
    );
}

/// Runs the three round trips of a case on `server`, the backups with `statement_bytes`
/// (else small statements).
async fn round_trips(server: &MariaDb, case: &Case, statement_bytes: Option<usize>) {
    if let Some((need, what)) = case.needs {
        require(server, need, what);
    }
    let Case {
        name: case,
        setup,
        probes,
        ..
    } = *case;
    let mut db = server.database(&format!("ty_{case}")).unwrap();
    let schema = db.name().to_string();
    let root = server.root();
    exec(&root, &schema, setup);
    let tmp = tempfile::tempdir().unwrap();
    let before = state(&root, &schema, probes, &tmp.path().join("before")).await;
    assert!(!before.sums.is_empty(), "{case}: the fingerprint is empty");
    for (probe, rows) in &before.probes {
        assert!(!rows.is_empty(), "{case}: the probe finds nothing: {probe}");
    }

    // 1. Native dump → stock client, into a dropped schema.
    let native = tmp.path().join("native");
    let m = native_backup(&root, &native, &options(&schema, statement_bytes)).await;
    assert_eq!(
        sums(&m),
        before.sums,
        "{case}: the native backup's fingerprint"
    );
    server.exec(&format!("DROP DATABASE `{schema}`")).unwrap();
    let out = stock_client(&root, concatenated(&native)).await;
    assert!(
        out.success(),
        "{case}: the stock client failed: {}",
        out.stderr_lossy()
    );
    let after = state(&root, &schema, probes, &tmp.path().join("after-stock")).await;
    assert_eq!(after, before, "{case}: native dump → stock client");

    // 2. Native dump → own restore, into a dropped schema (a fresh server).
    server.exec(&format!("DROP DATABASE `{schema}`")).unwrap();
    let report = restore(&native, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{case}: own restore of the native dump: {}",
                cs_core::error_chain(&e)
            )
        });
    for p in report.parked() {
        db.adopt(p);
    }
    drop_parked(&root, &report).await.unwrap();
    let after = state(&root, &schema, probes, &tmp.path().join("after-own")).await;
    assert_eq!(
        after, before,
        "{case}: native dump → own restore into a dropped schema"
    );

    // 3. mariadb-dump → own restore, swapped over the live schema.
    let dumped = tmp.path().join("mysqldump");
    let engine = MysqldumpEngine::new(Arc::new(LocalHost::new()));
    let m = backup(
        &engine,
        &root,
        &dumped,
        &options(&schema, statement_bytes),
        &NoProgress,
    )
    .await
    .unwrap_or_else(|e| panic!("{case}: mariadb-dump backup: {}", cs_core::error_chain(&e)));
    assert_eq!(
        sums(&m),
        before.sums,
        "{case}: the mariadb-dump backup's fingerprint"
    );
    let report = restore(&dumped, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{case}: own restore of the mariadb-dump backup: {}",
                cs_core::error_chain(&e)
            )
        });
    for p in report.parked() {
        db.adopt(p);
    }
    drop_parked(&root, &report).await.unwrap();
    let after = state(&root, &schema, probes, &tmp.path().join("after-dump")).await;
    assert_eq!(after, before, "{case}: mariadb-dump → own restore");
}

const UUID: Case = Case {
    name: "uuid",
    needs: Some(((10, 7), "the UUID type")),
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, u UUID NOT NULL, n UUID NULL, UNIQUE KEY uk_u (u)) \
             ENGINE=InnoDB",
        "INSERT INTO t SELECT seq, UUID(), IF(seq % 3 = 0, NULL, UUID()) FROM seq_1_to_1500",
        "INSERT INTO t VALUES (0, '00000000-0000-0000-0000-000000000000', NULL), \
             (-1, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '123e4567-e89b-12d3-a456-426614174000')",
    ],
    probes: &["SELECT id, u, n FROM {s}.t WHERE id < 5 ORDER BY id"],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_columns_with_a_unique_key() {
    round_trips(cs_lab::mariadb(), &UUID, None).await;
}

const INET: Case = Case {
    name: "inet",
    needs: Some(((10, 10), "the INET4 type")),
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, a4 INET4 NOT NULL, a6 INET6 NULL, \
             UNIQUE KEY uk4 (a4), UNIQUE KEY uk6 (a6)) ENGINE=InnoDB",
        "INSERT INTO t SELECT seq, INET_NTOA(167772160 + seq), \
             IF(seq % 4 = 0, NULL, CONCAT('2001:db8::', HEX(seq))) FROM seq_1_to_1200",
        "INSERT INTO t VALUES (0, '0.0.0.0', '::'), (-1, '255.255.255.255', '::ffff:192.0.2.1'), \
             (-2, '192.0.2.1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')",
    ],
    probes: &["SELECT id, a4, a6 FROM {s}.t WHERE id < 3 ORDER BY id"],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inet4_and_inet6_columns_with_unique_keys() {
    round_trips(cs_lab::mariadb(), &INET, None).await;
}

const SPATIAL: Case = Case {
    name: "spatial",
    needs: None,
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, g GEOMETRY NOT NULL, p POINT, l LINESTRING, \
             po POLYGON NOT NULL, mp MULTIPOINT, ml MULTILINESTRING, mpo MULTIPOLYGON, gc GEOMETRYCOLLECTION, \
             s POINT REF_SYSTEM_ID=4326, SPATIAL KEY sk (g), SPATIAL KEY sk_po (po)) ENGINE=InnoDB",
        "INSERT INTO t SELECT seq, POINT(seq, -seq), POINT(seq / 7, seq / 3), \
             ST_GeomFromText(CONCAT('LINESTRING(0 0,', seq, ' 1)')), \
             ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2))'), \
             ST_GeomFromText('MULTIPOINT(1 1,2 2)'), ST_GeomFromText('MULTILINESTRING((0 0,1 1),(2 2,3 3))'), \
             ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)))'), \
             ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,1 1))'), \
             ST_GeomFromText(CONCAT('POINT(', seq / 100, ' 45.5)'), 4326) FROM seq_1_to_900",
        "INSERT INTO t (id, g, po) VALUES (0, ST_GeomFromText('POINT(0 0)'), \
             ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'))",
    ],
    probes: &[
        "SELECT id, ST_AsText(g), ST_AsText(po), ST_SRID(s) FROM {s}.t WHERE id < 3 ORDER BY id",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spatial_columns_with_a_spatial_key() {
    round_trips(cs_lab::mariadb(), &SPATIAL, None).await;
}

const JSON: Case = Case {
    name: "json",
    needs: None,
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, j JSON, k JSON NOT NULL DEFAULT '{}', \
             name VARCHAR(40) AS (JSON_VALUE(j, '$.name')) VIRTUAL, KEY k_name (name)) ENGINE=InnoDB",
        "INSERT INTO t (id, j) SELECT seq, JSON_OBJECT('name', CONCAT('n', seq), 'tags', \
             JSON_ARRAY(seq, 'é 🙂', NULL, TRUE), 'nested', JSON_OBJECT('q', '\"quoted\"\\\\')) \
             FROM seq_1_to_800",
        "INSERT INTO t (id, j, k) VALUES (0, NULL, '[]'), (-1, '\"just a string\"', '1.5e10')",
    ],
    probes: &["SELECT id, j, k, name FROM {s}.t WHERE id < 3 ORDER BY id"],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_columns() {
    round_trips(cs_lab::mariadb(), &JSON, None).await;
}

const VERSIONED: Case = Case {
    name: "versioned",
    needs: None,
    setup: &[
        // Implicit row_start/row_end columns, and explicit period columns.
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) WITH SYSTEM VERSIONING",
        "CREATE TABLE e (id INT PRIMARY KEY, v INT, \
             rs TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE, \
             re TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE, \
             PERIOD FOR SYSTEM_TIME (rs, re)) WITH SYSTEM VERSIONING",
        "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_600",
        "UPDATE t SET v = CONCAT(v, '+') WHERE id % 5 = 0",
        "DELETE FROM t WHERE id % 7 = 0",
        "INSERT INTO e (id, v) SELECT seq, seq FROM seq_1_to_300",
        "UPDATE e SET v = v + 1 WHERE id % 2 = 0",
    ],
    probes: &[
        "SELECT COUNT(*), SUM(ROW_END = TIMESTAMP'2038-01-19 03:14:07.999999') \
             FROM {s}.t FOR SYSTEM_TIME ALL",
        "SELECT COUNT(*), SUM(v LIKE '%+') FROM {s}.t",
        "SELECT id, v, ROW_START, ROW_END FROM {s}.t FOR SYSTEM_TIME ALL \
             WHERE id IN (5, 7, 8) ORDER BY id, ROW_START",
        "SELECT id, v, rs, re FROM {s}.e FOR SYSTEM_TIME ALL WHERE id IN (1, 2) ORDER BY id, rs",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_versioned_tables_with_their_history() {
    round_trips(cs_lab::mariadb(), &VERSIONED, None).await;
}

const SEQUENCES: Case = Case {
    name: "sequence",
    needs: None,
    setup: &[
        "CREATE SEQUENCE s1 START WITH 100 INCREMENT BY 10 CACHE 50",
        "CREATE SEQUENCE s2 START WITH -5 MINVALUE -10 MAXVALUE 1000 INCREMENT BY -1 NOCACHE CYCLE",
        "CREATE SEQUENCE s_unused",
        "DO NEXTVAL(s1), NEXTVAL(s1), NEXTVAL(s2)",
        "CREATE TABLE t (id BIGINT NOT NULL DEFAULT NEXTVAL(s1), v INT, PRIMARY KEY (id)) ENGINE=InnoDB",
        "INSERT INTO t (v) SELECT seq FROM seq_1_to_50",
    ],
    probes: &[
        "SELECT * FROM {s}.s1",
        "SELECT * FROM {s}.s2",
        "SELECT * FROM {s}.s_unused",
        "SELECT COUNT(*), MIN(id), MAX(id) FROM {s}.t",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_keep_their_state() {
    round_trips(cs_lab::mariadb(), &SEQUENCES, None).await;
}

const COLUMNS: Case = Case {
    name: "columns",
    needs: None,
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, h INT INVISIBLE DEFAULT 7, \
             hs VARCHAR(20) INVISIBLE, gv INT AS (a * 2) VIRTUAL, \
             gs VARCHAR(40) AS (CONCAT('x', a, hs)) PERSISTENT, gi INT AS (a + h) INVISIBLE, \
             KEY k_gv (gv), UNIQUE KEY u_gs (gs)) ENGINE=InnoDB",
        "INSERT INTO t (id, a, h, hs) SELECT seq, seq, seq % 11, CONCAT('h', seq) FROM seq_1_to_700",
        "INSERT INTO t (id, a) VALUES (0, NULL)",
    ],
    probes: &["SELECT id, a, h, hs, gv, gs, gi FROM {s}.t WHERE id < 3 ORDER BY id"],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_and_generated_columns() {
    round_trips(cs_lab::mariadb(), &COLUMNS, None).await;
}

const NO_KEY: Case = Case {
    name: "nokey",
    needs: None,
    setup: &[
        "CREATE TABLE heap (a INT, b VARCHAR(10), c BLOB) ENGINE=InnoDB",
        "CREATE TABLE uniq (a INT NOT NULL, b INT, UNIQUE KEY ua (a), KEY kb (b)) ENGINE=InnoDB",
        "INSERT INTO heap SELECT seq % 5, IF(seq % 3 = 0, NULL, 'dup'), UNHEX('00FF') FROM seq_1_to_900",
        "INSERT INTO heap VALUES (1, 'dup', UNHEX('00FF')), (NULL, NULL, NULL), (NULL, NULL, NULL)",
        "INSERT INTO uniq SELECT seq, seq % 9 FROM seq_1_to_500",
    ],
    probes: &["SELECT a, b, COUNT(*) FROM {s}.heap GROUP BY a, b ORDER BY a, b"],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_a_primary_key() {
    round_trips(cs_lab::mariadb(), &NO_KEY, None).await;
}

const OBJECTS: Case = Case {
    name: "objects",
    needs: None,
    setup: &[
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB",
        "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(40)) ENGINE=InnoDB",
        "CREATE TRIGGER p_ai AFTER INSERT ON p FOR EACH ROW INSERT INTO log (msg) VALUES (NEW.name)",
        "CREATE PROCEDURE pr(IN n INT) BEGIN SELECT n * 2; END",
        "CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x + 1",
        "CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM log WHERE id < 0",
        "CREATE VIEW v1 AS SELECT id, name FROM p",
        "CREATE VIEW v2 AS SELECT id FROM v1 WHERE id > 1",
        "INSERT INTO p SELECT seq, CONCAT('n', seq) FROM seq_1_to_30",
    ],
    probes: &[
        "SELECT COUNT(*) FROM {s}.v2",
        "SELECT COUNT(*) FROM {s}.log",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_routines_triggers_and_events() {
    round_trips(cs_lab::mariadb(), &OBJECTS, None).await;
}

const BYTES: Case = Case {
    name: "bytes",
    needs: None,
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, b1 BINARY(1), b4 BINARY(4), vb VARBINARY(300), \
             bl BLOB, tb TINYBLOB, lb LONGBLOB, tx TEXT, l1 VARCHAR(300) CHARACTER SET latin1, \
             vbin VARCHAR(300) COLLATE utf8mb4_bin, c CHAR(3)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        // One row per byte value, in every binary column and (below 0x80) as text.
        "INSERT INTO t SELECT seq, UNHEX(LPAD(HEX(seq), 2, '0')), \
             UNHEX(CONCAT(LPAD(HEX(seq), 2, '0'), '00')), \
             UNHEX(REPEAT(LPAD(HEX(seq), 2, '0'), seq + 1)), UNHEX(LPAD(HEX(seq), 2, '0')), \
             UNHEX(LPAD(HEX(255 - seq), 2, '0')), UNHEX(CONCAT('00', LPAD(HEX(seq), 2, '0'), 'FF')), \
             IF(seq < 128, CHAR(seq USING utf8mb4), NULL), CHAR(seq USING latin1), \
             IF(seq < 128, CONCAT('a', CHAR(seq USING utf8mb4), 'z'), NULL), \
             IF(seq < 128, CHAR(seq USING utf8mb4), 'ü') FROM seq_0_to_255",
        // Every byte in one value, in both orders, and the characters dumps escape.
        "CREATE TABLE every (id INT PRIMARY KEY, v LONGBLOB) ENGINE=InnoDB",
        "INSERT INTO every SELECT 1, GROUP_CONCAT(UNHEX(LPAD(HEX(seq), 2, '0')) ORDER BY seq \
             SEPARATOR '') FROM seq_0_to_255",
        "INSERT INTO every SELECT 2, GROUP_CONCAT(UNHEX(LPAD(HEX(seq), 2, '0')) ORDER BY seq DESC \
             SEPARATOR '') FROM seq_0_to_255",
        "INSERT INTO every SELECT 3, REPEAT(v, 64) FROM every WHERE id = 1",
        "INSERT INTO every VALUES (4, ''), (5, NULL), (6, 'NULL'), (7, '\\\\N'), (8, 0x5C4E), \
             (9, 0x000D0A1A09275C22), (10, ' '), (11, 0x00)",
        // NULL against the empty string, 'NULL' and '\N', in text columns too.
        "INSERT INTO t (id, tx, vbin, c, vb) VALUES (-1, NULL, '', '', ''), (-2, '', NULL, NULL, NULL), \
             (-3, 'NULL', '\\\\N', 'N', 'NULL'), (-4, '\\\\N', 'NULL', '\\\\', 0x5C4E), \
             (-5, '\\t\\n\\r', ' x ', ' ', 0x20)",
    ],
    probes: &[
        "SELECT id, HEX(b1), HEX(b4), HEX(vb), HEX(bl), HEX(tb), HEX(lb), HEX(tx), HEX(l1), \
             HEX(vbin), HEX(c), tx IS NULL, vbin IS NULL FROM {s}.t ORDER BY id",
        "SELECT id, LENGTH(v), MD5(v), v IS NULL FROM {s}.every ORDER BY id",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_with_every_byte_and_nulls() {
    round_trips(cs_lab::mariadb(), &BYTES, None).await;
}

const ENUM_SET_BIT: Case = Case {
    name: "enumset",
    needs: None,
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, e ENUM('a', 'b', 'ü', '1', 'x y') NULL, e2 ENUM('', 'a') NULL, \
             en ENUM('2', '1', '0') NOT NULL DEFAULT '0', \
             s SET('x', 'y', 'z', 'ö') NULL, sn SET('1', '2', '4') NOT NULL DEFAULT '', \
             b1 BIT(1), b7 BIT(7), b8 BIT(8) NOT NULL DEFAULT b'101', b64 BIT(64)) ENGINE=InnoDB",
        "INSERT INTO t SELECT seq, ELT(seq % 6 + 1, 'a', 'b', 'ü', '1', 'x y', NULL), \
             ELT(seq % 3 + 1, '', 'a', NULL), \
             ELT(seq % 3 + 1, '2', '1', '0'), \
             IF(seq % 9 = 0, NULL, MAKE_SET(seq % 16, 'x', 'y', 'z', 'ö')), \
             MAKE_SET(seq % 8, '1', '2', '4'), seq % 2, seq % 128, seq % 256, \
             IF(seq % 5 = 0, NULL, (seq % 256) * 72057594037927935) FROM seq_0_to_600",
        // An invalid ENUM value is stored as the error value (index 0, printed ''), as is
        // '' where it is no member. (Where '' is a member too, the text of the two is the
        // same, and no dump in text carries the difference: mariadb-dump neither.)
        "INSERT INTO t (id, e) VALUES (-1, 'no such'), (-4, '')",
        "INSERT INTO t (id, b64) VALUES (-2, 18446744073709551615), (-3, 0)",
        "CREATE TABLE k (e ENUM('p', 'q') NOT NULL, s SET('m', 'n') NOT NULL, b BIT(3) NOT NULL, \
             PRIMARY KEY (e, s, b)) ENGINE=InnoDB",
        "INSERT INTO k VALUES ('p', '', 0), ('p', 'm,n', 7), ('q', 'n', 5)",
    ],
    probes: &[
        "SELECT id, e, e + 0, e2, e2 + 0, en, en + 0, s, s + 0, sn, b1 + 0, b7 + 0, b8 + 0, b64 + 0 \
             FROM {s}.t WHERE id < 12 ORDER BY id",
        "SELECT e, s, b + 0 FROM {s}.k ORDER BY 1, 2, 3",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_set_and_bit_columns() {
    round_trips(cs_lab::mariadb(), &ENUM_SET_BIT, None).await;
}

const KEYS: Case = Case {
    name: "keys",
    needs: Some(((10, 8), "a descending index")),
    setup: &[
        "CREATE TABLE p (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL, UNIQUE KEY (code)) ENGINE=InnoDB",
        "CREATE TABLE t (id INT AUTO_INCREMENT, p_code VARCHAR(20), a INT NOT NULL, \
             b VARCHAR(200), body TEXT, big BLOB, \
             ts TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, \
             c VARCHAR(500) COMPRESSED COMMENT 'column comment', \
             PRIMARY KEY (id, a), KEY k_desc (a DESC, id), KEY k_prefix (b(10)), \
             UNIQUE KEY u_hash (big) USING HASH, FULLTEXT KEY ft_body (body), \
             KEY k_ignored (b) IGNORED, \
             CONSTRAINT fk_code FOREIGN KEY (p_code) REFERENCES p (code) ON DELETE SET NULL ON UPDATE CASCADE, \
             CONSTRAINT ck_a CHECK (a >= 0), CHECK (b <> 'forbidden')) \
             ENGINE=InnoDB AUTO_INCREMENT=5000 COMMENT='table comment' ROW_FORMAT=DYNAMIC",
        "CREATE TABLE aria (id INT PRIMARY KEY, v VARCHAR(20), KEY (v)) ENGINE=Aria",
        "CREATE TABLE mem (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM",
        "INSERT INTO p SELECT seq, CONCAT('c', seq) FROM seq_1_to_50",
        "INSERT INTO t (p_code, a, b, body, big, ts, c) SELECT IF(seq % 4 = 0, NULL, CONCAT('c', seq % 50 + 1)), \
             seq % 97, CONCAT('b', seq % 13, REPEAT('.', seq % 30)), CONCAT('word', seq % 17, ' text ', seq), \
             CONCAT('blob ', seq), '2024-01-02 03:04:05', REPEAT(CONCAT('c', seq), 20) FROM seq_1_to_700",
        "INSERT INTO aria SELECT seq, CONCAT('v', seq) FROM seq_1_to_100",
        "INSERT INTO mem SELECT seq, CONCAT('m', seq) FROM seq_1_to_100",
    ],
    probes: &[
        "SELECT COUNT(*), SUM(p_code IS NULL), MAX(id) FROM {s}.t",
        "SELECT id FROM {s}.t WHERE MATCH(body) AGAINST ('word3') ORDER BY id LIMIT 5",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_constraints_of_every_kind() {
    round_trips(cs_lab::mariadb(), &KEYS, None).await;
}

const PARTITIONS: Case = Case {
    name: "partitions",
    needs: Some(((10, 5), "WITHOUT OVERLAPS keys")),
    setup: &[
        "CREATE TABLE r (id INT NOT NULL, created DATE NOT NULL, v VARCHAR(20), \
             PRIMARY KEY (id, created), KEY k_v (v)) ENGINE=InnoDB \
             PARTITION BY RANGE (YEAR(created)) (PARTITION p2023 VALUES LESS THAN (2024), \
             PARTITION p2024 VALUES LESS THAN (2025), PARTITION pmax VALUES LESS THAN MAXVALUE)",
        "CREATE TABLE h (id INT PRIMARY KEY, v INT) ENGINE=InnoDB PARTITION BY HASH (id) PARTITIONS 3",
        "CREATE TABLE hist (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING \
             PARTITION BY SYSTEM_TIME (PARTITION p_hist HISTORY, PARTITION p_cur CURRENT)",
        // Application-time period with a key that forbids overlaps (MariaDB 10.5+).
        "CREATE TABLE rent (room INT NOT NULL, s DATE NOT NULL, e DATE NOT NULL, who VARCHAR(20), \
             PERIOD FOR booked (s, e), UNIQUE KEY no_double (room, booked WITHOUT OVERLAPS)) ENGINE=InnoDB",
        "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(40)) ENGINE=InnoDB",
        "CREATE TRIGGER r_bi_1 BEFORE INSERT ON r FOR EACH ROW SET NEW.v = CONCAT(NEW.v, '1')",
        "CREATE TRIGGER r_bi_2 BEFORE INSERT ON r FOR EACH ROW SET NEW.v = CONCAT(NEW.v, '2')",
        "CREATE TRIGGER r_bi_0 BEFORE INSERT ON r FOR EACH ROW PRECEDES r_bi_1 \
             SET NEW.v = CONCAT(NEW.v, '0')",
        "CREATE ALGORITHM=MERGE SQL SECURITY INVOKER VIEW v_chk AS SELECT id, v FROM h WHERE v > 0 \
             WITH CASCADED CHECK OPTION",
        "CREATE AGGREGATE FUNCTION agg_sum(x INT) RETURNS INT BEGIN DECLARE t INT DEFAULT 0; \
             DECLARE CONTINUE HANDLER FOR NOT FOUND RETURN t; LOOP FETCH GROUP NEXT ROW; \
             SET t = t + x; END LOOP; END",
        "CREATE EVENT ev_once ON SCHEDULE AT '2037-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE \
             COMMENT 'kept' DO DELETE FROM log",
        "INSERT INTO r SELECT seq, '2023-06-01' + INTERVAL seq DAY, 'v' FROM seq_1_to_900",
        "INSERT INTO h SELECT seq, seq % 10 FROM seq_1_to_300",
        "INSERT INTO hist SELECT seq, seq FROM seq_1_to_200",
        "UPDATE hist SET v = v + 1 WHERE id % 3 = 0",
        "INSERT INTO rent VALUES (1, '2024-01-01', '2024-01-05', 'a'), (1, '2024-01-05', '2024-01-09', 'b'), \
             (2, '2024-01-01', '2024-02-01', 'c')",
    ],
    probes: &[
        "SELECT COUNT(*), COUNT(DISTINCT v), MIN(v) FROM {s}.r",
        "SELECT COUNT(*) FROM {s}.r PARTITION (p2024)",
        "SELECT COUNT(*) FROM {s}.hist FOR SYSTEM_TIME ALL",
        "SELECT COUNT(*) FROM {s}.hist PARTITION (p_hist)",
        "SELECT room, s, e, who FROM {s}.rent ORDER BY room, s",
        "SELECT TRIGGER_NAME, ACTION_ORDER FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_TABLE = 'r' AND TRIGGER_SCHEMA = REPLACE('{s}', '`', '') ORDER BY 2",
        "SELECT {s}.agg_sum(v) FROM {s}.h",
        "SELECT VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE, ALGORITHM FROM information_schema.VIEWS \
             WHERE TABLE_SCHEMA = REPLACE('{s}', '`', '')",
        "SELECT ON_COMPLETION, EVENT_COMMENT, EXECUTE_AT FROM information_schema.EVENTS \
             WHERE EVENT_SCHEMA = REPLACE('{s}', '`', '')",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_periods_and_trigger_order() {
    round_trips(cs_lab::mariadb(), &PARTITIONS, None).await;
}

const NUMBERS: Case = Case {
    name: "numbers",
    needs: None,
    setup: &[
        "CREATE TABLE t (id INT PRIMARY KEY, d65 DECIMAL(65,30), du DECIMAL(10,2) UNSIGNED ZEROFILL, \
             f FLOAT, f2 FLOAT(7,3), dbl DOUBLE, i0 INT(5) ZEROFILL, \
             dt0 DATETIME, dt6 DATETIME(6), t3 TIME(3), ts6 TIMESTAMP(6) NULL, y YEAR, d DATE, \
             u3 VARCHAR(20) CHARACTER SET utf8mb3, l1 VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_bin, \
             u4 VARCHAR(20) COLLATE utf8mb4_unicode_520_ci, asc7 CHAR(4) CHARACTER SET ascii, \
             ucs VARCHAR(10) CHARACTER SET ucs2, u16 VARCHAR(10) CHARACTER SET utf16, \
             u32 VARCHAR(10) CHARACTER SET utf32, gbk VARCHAR(10) CHARACTER SET gbk) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "INSERT INTO t VALUES \
             (1, '-99999999999999999999999999999999999.999999999999999999999999999999', 12.5, \
              -0.0, 1234.5678, 1.7976931348623157e308, 42, '0000-00-00 00:00:00', '9999-12-31 23:59:59.999999', \
              '-838:59:59.999', '1970-01-01 00:00:01.000001', 2155, '0000-00-00', 'ü€', 'ÿ', '🙂𝄞', 'abc', \
              'ü€', '🙂', '𝄞', '中文'), \
             (2, 0.000000000000000000000000000001, 0, 1.175494e-38, -0.001, -4.9e-324, 0, \
              '1000-01-01 00:00:00', '2000-02-29 12:34:56.5', '838:59:59', '2038-01-19 03:14:07.999999', 1901, \
              '2000-02-29', '', '', '', '', '', '', '', ''), \
             (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO t (id, dbl, f, dt6, u4) SELECT seq + 10, seq / 7, seq / 3, \
             '2020-01-01' + INTERVAL seq * 1000003 MICROSECOND, CONCAT('ä', seq) FROM seq_1_to_800",
    ],
    probes: &[
        "SELECT * FROM {s}.t WHERE id < 12 ORDER BY id",
        "SELECT id, HEX(dbl), HEX(f), HEX(u3), HEX(l1), HEX(ucs), HEX(u16), HEX(u32), HEX(gbk) \
             FROM {s}.t WHERE id < 4 ORDER BY id",
        "SELECT SUM(dbl), BIT_XOR(CRC32(dbl)), BIT_XOR(CRC32(f)) FROM {s}.t",
    ],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_times_and_character_sets() {
    round_trips(cs_lab::mariadb(), &NUMBERS, None).await;
}

/// A server whose `max_allowed_packet` leaves no room for the restore's bulk inserts
/// (`Db::bulk_insert` wants 64 KiB beyond its 64 KiB of headroom), with `LOCAL` loads on or
/// off: every case then loads through `LOAD DATA LOCAL` or through the dump's own `INSERT`
/// statements, the fallbacks a server without bulk commands (or a row over one command) gets.
async fn fallback(local_infile: bool) {
    let server = MariaDb::start_with(&MariaDbOptions {
        server_args: vec![
            "--max-allowed-packet=96K".into(),
            format!("--local-infile={}", u8::from(local_infile)),
        ],
        ..MariaDbOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot start a MariaDB: {}", cs_core::error_chain(&e)));
    let root = server.root();
    assert_eq!(
        scalar(&root, "SELECT @@max_allowed_packet").as_deref(),
        Some("98304")
    );
    assert_eq!(
        scalar(&root, "SELECT @@local_infile").as_deref(),
        Some(if local_infile { "1" } else { "0" })
    );
    // The default statement size, over the packet limit: the native engine has to keep its
    // statements within it (the stock client's and the own restore's statements fail else).
    let statement_bytes = BackupOptions::default().statement_bytes;
    assert!(statement_bytes > 96 * 1024);
    for case in ALL {
        round_trips(&server, case, Some(statement_bytes)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_through_load_data() {
    fallback(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_through_insert_statements() {
    fallback(false).await;
}
