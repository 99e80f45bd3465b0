//! Faults and bad input: a backup killed mid-way, a full disk, truncated and altered files,
//! a restore without privileges, a restore that fails half-way through loading, manifests
//! naming the first checksum algorithm or an unknown one, a `mysqldump` backup cancelled
//! mid-dump.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use cs_backup::{BackupOptions, Error, NativeEngine, RestoreOptions, backup, restore, verify};
use cs_core::{Cmd, DbUrl, Host, LocalHost, NoProgress, Secret};

fn options(dbs: &[&str]) -> BackupOptions {
    BackupOptions::default()
        .databases(dbs.iter().map(|s| s.to_string()).collect())
        .threads(2)
        .chunk_rows(1000)
}

const CHILD_ENV: &str = "CS_BACKUP_TEST_CHILD";

/// Not a test of its own: the body of the child process `killed_backup_*` starts and kills.
/// Without the environment variable it does nothing.
#[test]
fn child_backup_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let url = DbUrl::new(
        "127.0.0.1",
        v["port"].as_u64().unwrap() as u16,
        v["user"].as_str().unwrap(),
        Secret::new(v["password"].as_str().unwrap()),
    );
    let dir = PathBuf::from(v["dir"].as_str().unwrap());
    let opts = options(&[v["schema"].as_str().unwrap()])
        .threads(1)
        .statement_bytes(4096);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(backup(&NativeEngine::new(), &url, &dir, &opts, &NoProgress))
        .unwrap();
}

#[test]
fn killed_backup_leaves_no_manifest_and_verify_says_incomplete() {
    let server = cs_lab::mariadb();
    let db = server.database("killed").unwrap();
    let root = server.root();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(200))",
            "INSERT INTO big SELECT seq, REPEAT('x', 150) FROM seq_1_to_400000",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backup");
    let spec = serde_json::json!({
        "port": root.port, "user": root.user, "password": root.password.expose(),
        "dir": dir, "schema": db.name(),
    });
    #[allow(clippy::disallowed_methods)] // The test kills a real child.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_backup_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until rows are being written, then kill it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let data = dir.join(format!("2-{}.big.00001.sql", db.name()));
    loop {
        assert!(
            Instant::now() < deadline,
            "the child never started writing rows"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        if std::fs::metadata(&data).is_ok_and(|m| m.len() > 100_000) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(!dir.join("manifest.json").exists());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(verify(&dir)).unwrap_err();
    assert!(matches!(err, Error::Incomplete { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a complete backup"),
        "{err}"
    );
    // Nor can it be restored.
    let err = rt
        .block_on(restore(
            &dir,
            &root,
            &RestoreOptions::default(),
            &NoProgress,
        ))
        .unwrap_err();
    assert!(err.is_incomplete(), "{err:?}");
}

/// A 1 MiB tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    async fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = LocalHost::new()
            .run(
                &Cmd::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
                    .arg(at.to_str().unwrap()),
            )
            .await
            .unwrap();
        assert!(
            out.success(),
            "the full-disk test mounts a 1 MiB tmpfs and needs root (CI runs as root): {}",
            out.stderr_lossy()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        #[allow(clippy::disallowed_methods)] // Drop cannot await a Host; umount is test cleanup.
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_gives_a_clear_error_naming_the_path() {
    let server = cs_lab::mariadb();
    let db = server.database("fulldisk").unwrap();
    let root = server.root();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200))",
            "INSERT INTO t SELECT seq, REPEAT('y', 100) FROM seq_1_to_30000",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let _fs = Tmpfs::mount(&mnt).await;
    let dir = mnt.join("backup");
    let err = backup(
        &NativeEngine::new(),
        &root,
        &dir,
        &options(&[db.name()]),
        &NoProgress,
    )
    .await
    .unwrap_err();
    let text = cs_core::error_chain(&err);
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(text.contains(dir.to_str().unwrap()), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(!dir.join("manifest.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_altered_files_fail_verify_naming_the_file() {
    let server = cs_lab::mariadb();
    let db = server.database("altered").unwrap();
    let root = server.root();
    fill_main(&root, db.name(), false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let m = native_backup(&root, &dir, &options(&[db.name()])).await;
    let table = m.schemas[0].table("big").unwrap();
    let (trunc, alter) = (table.files[1].clone(), table.files[2].clone());

    // Truncated.
    let path = dir.join(&trunc);
    let original = std::fs::read(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(original.len() as u64 / 2)
        .unwrap();
    let err = verify(&dir).await.unwrap_err();
    assert_eq!(err.problems().len(), 1, "{err}");
    assert_eq!(err.problems()[0].subject, trunc);
    assert!(
        err.to_string().contains(&trunc) && err.to_string().contains("truncated"),
        "{err}"
    );
    std::fs::write(&path, &original).unwrap();
    verify(&dir).await.unwrap();

    // Altered, same size.
    let path = dir.join(&alter);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = verify(&dir).await.unwrap_err();
    assert!(
        err.to_string().contains(&alter) && err.to_string().contains("altered"),
        "{err}"
    );
    // A restore refuses it before touching anything.
    let err = restore(&dir, &root, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Verify { .. }), "{err:?}");

    // Missing.
    std::fs::remove_file(&path).unwrap();
    let err = verify(&dir).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("{alter}: missing")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_without_privileges_fails_clearly_and_leaves_live_unchanged() {
    let server = cs_lab::mariadb();
    let mut db = server.database("noprivs").unwrap();
    let main = db.name().to_string();
    let root = server.root();
    fill_main(&root, &main, false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let m1 = native_backup(&root, &dir, &options(&[&main])).await;
    server
        .exec(&format!(
            "UPDATE `{main}`.parent SET name = 'live change' WHERE id = 1"
        ))
        .unwrap();
    let live_before = query(
        &root,
        &format!("SELECT id, name FROM `{main}`.parent ORDER BY id"),
    );

    // Only SELECT on the live schema: the scratch schema cannot even be created.
    let reader = server
        .create_user(
            &format!("ro_{}", std::process::id()),
            &[&format!("GRANT SELECT ON `{main}`.* TO {{user}}")],
        )
        .unwrap();
    let err = restore(&dir, &reader, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    let text = cs_core::error_chain(&err);
    assert!(
        matches!(&err, Error::Restore { live_untouched: true, source, .. } if matches!(**source, Error::Privilege { .. })),
        "{err:?}"
    );
    assert!(
        text.contains("lacks a privilege") && text.contains("live schemas are untouched"),
        "{text}"
    );

    // Enough to create and fill scratch schemas, not to create routines, triggers or views:
    // the restore fails half-way through loading, cleans up, and live is still untouched.
    let pattern = main.replace('_', "\\_");
    let loader = server
        .create_user(&format!("ld_{}", std::process::id()), &[
            &format!("GRANT SELECT ON `{main}`.* TO {{user}}"),
            &format!("GRANT CREATE, DROP, INSERT, SELECT, ALTER, INDEX, REFERENCES ON `{pattern}\\_\\_restore\\_%`.* TO {{user}}"),
        ])
        .unwrap();
    let err = restore(&dir, &loader, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Restore {
                live_untouched: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        cs_core::error_chain(&err).contains("load into the scratch schemas"),
        "{}",
        cs_core::error_chain(&err)
    );
    assert_eq!(
        query(
            &root,
            &format!("SELECT id, name FROM `{main}`.parent ORDER BY id")
        ),
        live_before
    );
    assert_eq!(
        scalar(
            &root,
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{pattern}\\_\\_%'"
            )
        ),
        Some("0".into()),
        "no scratch schema is left"
    );
    assert_eq!(routines(&root, &main).len(), 2);
    db.adopt("unused");
    let _ = m1;
}

/// The first checksum version, computed here from its definition (SHA-256 of each row's
/// encoding, the first 16 bytes summed modulo 2^128), independently of the crate.
/// A row in the encoding of checksum versions 1 and 2: `0xFF` for NULL, else `0x01`, the
/// length as 8 bytes little-endian and the bytes.
fn encoding_v1(row: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in row {
        match v {
            None => out.push(0xFF),
            Some(s) => {
                out.push(0x01);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

fn sha256_v1(rows: &[Vec<Option<String>>]) -> String {
    use sha2::Digest;
    let mut sum = 0u128;
    for row in rows {
        let mut first = [0u8; 16];
        first.copy_from_slice(&sha2::Sha256::digest(encoding_v1(row))[..16]);
        sum = sum.wrapping_add(u128::from_le_bytes(first));
    }
    format!("{sum:032x}")
}

fn xxh64_v2(rows: &[Vec<Option<String>>]) -> String {
    let sum = rows.iter().fold(0u64, |sum, row| {
        sum.wrapping_add(twox_hash::XxHash64::oneshot(0, &encoding_v1(row)))
    });
    format!("{sum:016x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_names_the_checksum_and_older_versions_still_restore() {
    let server = cs_lab::mariadb();
    let db = server.database("sumv1").unwrap();
    let root = server.root();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20), d DATETIME, n DOUBLE) \
             DEFAULT CHARSET = utf8mb3",
            "INSERT INTO t VALUES (1, 'a\\'b', '2024-01-02 03:04:05', 1.5), \
             (2, NULL, NULL, NULL), (3, 'Ångström', '0000-00-00 00:00:00', -0.25)",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let m = native_backup(&root, &dir, &options(&[db.name()])).await;
    assert_eq!(m.checksum, cs_backup::CHECKSUM_ALGORITHM);
    let rows = query(&root, &format!("SELECT id, s, d, n FROM `{}`.t", db.name()));
    let manifest_path = dir.join(cs_backup::MANIFEST_FILE);
    let write = |m: &cs_backup::Manifest| std::fs::write(&manifest_path, m.to_json()).unwrap();
    let scratch_only = RestoreOptions::default().mode(cs_backup::RestoreMode::ScratchOnly);

    // Backups written with the earlier versions restore and verify with them.
    for (name, sum) in [
        ("rowsum-sha256-v1", sha256_v1(&rows)),
        ("rowsum-xxh64-v2", xxh64_v2(&rows)),
    ] {
        let mut old = m.clone();
        old.checksum = name.into();
        old.schemas[0].tables[0].checksum = sum;
        write(&old);
        cs_backup::verify_deep(&dir, &root, &scratch_only, &NoProgress)
            .await
            .unwrap_or_else(|e| panic!("{name}: {}", cs_core::error_chain(&e)));
    }

    // The name decides: the same sums under the other name do not verify.
    let mut swapped = m.clone();
    swapped.checksum = "rowsum-sha256-v1".into();
    write(&swapped);
    let err = cs_backup::verify_deep(&dir, &root, &scratch_only, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        cs_core::error_chain(&err).contains("checksum of the restored rows differs"),
        "{}",
        cs_core::error_chain(&err)
    );

    // An unknown algorithm is a bad manifest, refused before anything is loaded.
    let mut unknown = m.clone();
    unknown.checksum = "rowsum-md5-v0".into();
    write(&unknown);
    let err = verify(&dir).await.unwrap_err();
    assert!(matches!(err, Error::BadManifest { .. }), "{err:?}");
    assert!(err.to_string().contains("rowsum-md5-v0"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Peers that vanish: a database gone silent mid-dump, a global read lock held past its window.

/// Held by the tests below: `FLUSH TABLES WITH READ LOCK` and the long statements they queue
/// it behind are global to the shared server, so these tests take turns.
static GLOBAL_LOCK_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A proxy in front of the lab server.
fn proxy() -> cs_lab::TcpProxy {
    let port = cs_lab::mariadb().port();
    cs_lab::TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).unwrap()
}

/// Runs a native backup of `schema` on its own task, for tests that stall it.
fn spawn_backup(
    url: DbUrl,
    dir: PathBuf,
    opts: BackupOptions,
) -> tokio::task::JoinHandle<Result<cs_backup::Manifest, Error>> {
    tokio::spawn(async move { backup(&NativeEngine::new(), &url, &dir, &opts, &NoProgress).await })
}

/// Waits (at most 30 s) until `sql` run as root on the server itself returns a row.
fn wait_for_row(root: &DbUrl, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(root, sql).is_empty() {
        assert!(
            Instant::now() < deadline,
            "never saw a row for {sql}; processes: {:?}",
            query(
                root,
                "SELECT ID, COMMAND, STATE, INFO FROM information_schema.PROCESSLIST"
            )
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_gone_silent_mid_dump_fails_within_the_bound() {
    let _turn = GLOBAL_LOCK_TESTS.lock().await;
    let server = cs_lab::mariadb();
    let db = server.database("silent").unwrap();
    let root = server.root();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(200))",
            "INSERT INTO big SELECT seq, REPEAT('x', 150) FROM seq_1_to_400000",
        ],
    );
    let proxy = proxy();
    let reply = Duration::from_secs(2);
    let deadlines = cs_core::Deadlines::quick(reply);
    let url = proxy.db_url(&root).with_deadlines(deadlines);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let opts = options(&[db.name()]).statement_bytes(4096);
    let task = spawn_backup(url, dir.clone(), opts);
    let data = dir.join(format!("2-{}.big.00001.sql", db.name()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::metadata(&data).is_ok_and(|m| m.len() > 100_000) {
        assert!(Instant::now() < deadline, "rows never arrived");
        assert!(
            !task.is_finished(),
            "the dump ended before the database froze"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.freeze();
    let frozen = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the backup still waits a minute after the database froze")
        .unwrap()
        .unwrap_err();
    let took = frozen.elapsed();
    // One reply period, then the check from a second connection: its connect and login.
    let bound = deadlines.reply + deadlines.connect * 2 + Duration::from_secs(3);
    assert!(took < bound, "took {took:?}, bound {bound:?}");
    let text = cs_core::error_chain(&err);
    assert!(
        text.contains(&format!("the database at {} went silent", proxy.addr())),
        "{text}"
    );
    assert!(!dir.join("manifest.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_read_lock_past_its_window_is_killed_and_writes_go_on() {
    let _turn = GLOBAL_LOCK_TESTS.lock().await;
    let server = cs_lab::mariadb();
    let db = server.database("ftwrl").unwrap();
    let root = server.root();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE held (id INT PRIMARY KEY)",
            "INSERT INTO held VALUES (1)",
            "CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY)",
        ],
    );
    // A long write: FLUSH TABLES WITH READ LOCK queues behind it, and every new write of the
    // server queues behind the flush (the classic pile-up; MariaDB's FTWRL waits for running
    // writes, not for reads).
    let marker = format!("long-{}", db.name());
    let sleeper = {
        let (url, schema, marker) = (root.clone(), db.name().to_string(), marker.clone());
        std::thread::spawn(move || {
            use cs_lab::DbUrlExt;
            use mysql::prelude::Queryable;
            let mut conn = url.with_database(&schema).connect().unwrap();
            // Cut short by the KILL QUERY at the end of the test.
            let _ = conn.query_drop(format!(
                "UPDATE held SET id = id WHERE SLEEP(20) = 0 AND '{marker}' <> ''"
            ));
        })
    };
    wait_for_row(
        &root,
        &format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' \
             AND INFO NOT LIKE '%PROCESSLIST%'"
        ),
    );
    let window = Duration::from_secs(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let opts = options(&[db.name()]).snapshot_window(window);
    let url = root.with_deadlines(cs_core::Deadlines::quick(Duration::from_secs(5)));
    let task = spawn_backup(url, dir.clone(), opts);
    wait_for_row(
        &root,
        // Queued behind the running write: new writes queue behind it from then on.
        "SELECT ID FROM information_schema.PROCESSLIST \
         WHERE INFO = 'FLUSH TABLES WITH READ LOCK' AND STATE LIKE 'Waiting%'",
    );
    let queued = Instant::now();
    // A write of the cloud: blocked by the lock until the watchdog kills it.
    let writer = {
        let (url, schema) = (root.clone(), db.name().to_string());
        std::thread::spawn(move || {
            exec(&url, &schema, &["INSERT INTO w VALUES (NULL)"]);
            Instant::now()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!writer.is_finished(), "the write was not held by the lock");
    let written = writer.join().unwrap();
    let held = written - queued;
    assert!(
        held < window + Duration::from_secs(3),
        "the write waited {held:?} with a window of {window:?}"
    );
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the backup still runs")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::SnapshotWindow { .. }), "{err:?}");
    let text = cs_core::error_chain(&err);
    assert!(
        text.contains("was killed from a second connection"),
        "{text}"
    );
    assert!(text.contains("the backup was abandoned"), "{text}");
    assert!(!dir.join("manifest.json").exists());
    // The long statement itself was not cut.
    assert!(!sleeper.is_finished());
    let long = scalar(
        &root,
        &format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' \
             AND INFO NOT LIKE '%PROCESSLIST%'"
        ),
    )
    .unwrap();
    exec(&root, db.name(), &[&format!("KILL QUERY {long}")]);
    sleeper.join().unwrap();
}

/// The network to the server goes silent while the backup holds the global read lock: neither
/// the backup nor its watchdog can reach the server, which ends the lock's session by itself
/// (`wait_timeout`) a second after the window; the backup fails saying so within its bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_read_lock_behind_a_silent_network_is_released_by_the_server() {
    let _turn = GLOBAL_LOCK_TESTS.lock().await;
    let server = cs_lab::mariadb();
    let db = server.database("ftwrlnet").unwrap();
    let root = server.root();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE held (id INT PRIMARY KEY)",
            "INSERT INTO held VALUES (1)",
            "CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY)",
        ],
    );
    // A long write holds FTWRL back until the network is frozen; then it is cut, FTWRL takes
    // the lock on the server, and its answer is stuck in the silent network.
    let marker = format!("long-{}", db.name());
    let find_long = format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' \
         AND INFO NOT LIKE '%PROCESSLIST%'"
    );
    let sleeper = {
        let (url, schema, marker) = (root.clone(), db.name().to_string(), marker.clone());
        std::thread::spawn(move || {
            use cs_lab::DbUrlExt;
            use mysql::prelude::Queryable;
            let mut conn = url.with_database(&schema).connect().unwrap();
            let _ = conn.query_drop(format!(
                "UPDATE held SET id = id WHERE SLEEP(20) = 0 AND '{marker}' <> ''"
            ));
        })
    };
    wait_for_row(&root, &find_long);
    let proxy = proxy();
    let window = Duration::from_secs(2);
    let reply = Duration::from_secs(3);
    let url = proxy
        .db_url(&root)
        .with_deadlines(cs_core::Deadlines::quick(reply));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let opts = options(&[db.name()]).snapshot_window(window);
    let task = spawn_backup(url, dir.clone(), opts);
    wait_for_row(
        &root,
        // Queued behind the running write: new writes queue behind it from then on.
        "SELECT ID FROM information_schema.PROCESSLIST \
         WHERE INFO = 'FLUSH TABLES WITH READ LOCK' AND STATE LIKE 'Waiting%'",
    );
    proxy.freeze();
    let long = scalar(&root, &find_long).unwrap();
    exec(&root, db.name(), &[&format!("KILL QUERY {long}")]);
    sleeper.join().unwrap();
    let locked = Instant::now();
    // The lock is now held by a session nobody can reach.
    let writer = {
        let (url, schema) = (root.clone(), db.name().to_string());
        std::thread::spawn(move || {
            exec(&url, &schema, &["INSERT INTO w VALUES (NULL)"]);
            Instant::now()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!writer.is_finished(), "the write was not held by the lock");
    let held = writer.join().unwrap() - locked;
    // `wait_timeout` is the window plus a second, counted from FTWRL's end; the server checks
    // it with a second's granularity.
    assert!(
        held < window + Duration::from_secs(3),
        "the write waited {held:?} with a window of {window:?}"
    );
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the backup still waits")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::SnapshotWindow { .. }), "{err:?}");
    let text = cs_core::error_chain(&err);
    assert!(
        text.contains("could not kill") && text.contains("wait_timeout"),
        "{text}"
    );
    assert!(!dir.join("manifest.json").exists());
}

/// A process whose command line holds `needle`: its pid and its arguments.
fn find_process(needle: &str) -> Option<(u32, Vec<String>)> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a.contains(needle)) && alive(pid) {
            return Some((pid, args));
        }
    }
    None
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_mysqldump_backup_leaves_no_option_file_and_no_dump_running() {
    let server = cs_lab::mariadb();
    let db = server.database("cancel_dump").unwrap();
    let root = server.root();
    exec(
        &root,
        db.name(),
        &[
            "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(200))",
            "INSERT INTO big SELECT seq, REPEAT('x', 150) FROM seq_1_to_600000",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backup");
    let engine = cs_backup::MysqldumpEngine::new(std::sync::Arc::new(LocalHost::new()));
    let opts = options(&[db.name()]);
    let (url, d) = (root.clone(), dir.clone());
    let task = tokio::spawn(async move { backup(&engine, &url, &d, &opts, &NoProgress).await });

    // Wait (bounded) for the dump program, then cancel the backup while it runs.
    let marker = format!("--result-file={}", dir.join("dump.sql").display());
    let deadline = Instant::now() + Duration::from_secs(60);
    let (pid, args) = loop {
        if let Some(found) = find_process(&marker) {
            break found;
        }
        assert!(
            !task.is_finished(),
            "the backup ended before its dump was seen"
        );
        assert!(Instant::now() < deadline, "the dump program never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cnf = args
        .iter()
        .find_map(|a| a.strip_prefix("--defaults-file="))
        .map(PathBuf::from)
        .expect("the dump reads an option file");
    assert!(cnf.exists(), "the option file exists while the dump runs");
    assert!(
        !cnf.starts_with(&dir),
        "the option file is outside the backup directory: {}",
        cnf.display()
    );
    task.abort();
    let joined = task.await;
    assert!(
        joined.as_ref().is_err_and(|e| e.is_cancelled()),
        "the backup was cancelled mid-dump, not finished: {joined:?}"
    );

    // Within a bounded time: the dump program is gone and so is the option file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(pid) || cnf.exists() || cnf.parent().unwrap().exists())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "the dump program {pid} still runs");
    assert!(!cnf.exists(), "the option file {} is left", cnf.display());
    assert!(
        !cnf.parent().unwrap().exists(),
        "its private directory is left"
    );
    // Nothing holding the password is in the backup directory.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read(e.path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains(root.password.expose()),
            "{} holds the password",
            e.path().display()
        );
    }
}
