//! Lab management servers against the real MariaDB and sshd: packages from the offered repo
//! line (apt and dnf), the usage server only where configured, the startup database check and
//! migration (version rows, DDL, system VM templates, log, `mshost`, ports), faults, and stop;
//! every command runs over SSH through `cs_core::SshHost`.

use std::time::{Duration, Instant};

use cs_core::{Cmd, CsVersion, Host, HostExt, LogKind, Output, SshHost, error_chain, scan_log};
use cs_lab::{
    DbUrlExt, LabFamily, MANAGEMENT_UNIT, MgmtFault, MgmtNode, MgmtStartup, SeedOptions, TestDb,
    USAGE_UNIT, mariadb, migration_table, seed,
};
use mysql::prelude::Queryable;

const INSTALL: &[&str] = &[
    "apt-get",
    "install",
    "-y",
    "cloudstack-management=4.19.0.0",
    "cloudstack-common=4.19.0.0",
    "cloudstack-usage=4.19.0.0",
];

/// Runs blocking lab calls (MariaDB, starting servers) off the async worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn v(s: &str) -> CsVersion {
    CsVersion::parse(s).expect("version")
}

/// A test database with the `version` and `mshost` tables of CloudStack's `cloud` schema, the
/// `version` rows `rows` (version, step), and an empty usage schema.
fn minimal_db(name: &str, rows: &[(&str, &str)]) -> (TestDb<'static>, String) {
    let mut db = mariadb().database(name).expect("test database");
    let usage = db.extra("usage").expect("usage schema");
    let mut conn = db.url().connect().expect("connect");
    conn.query_drop(
        "CREATE TABLE `version` (
          `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
          `version` char(40) NOT NULL,
          `updated` datetime NOT NULL,
          `step` char(32) NOT NULL,
          PRIMARY KEY (`id`),
          UNIQUE KEY `version` (`version`)
        ) ENGINE=InnoDB;
        CREATE TABLE `mshost` (
          `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
          `msid` bigint(20) unsigned NOT NULL,
          `runid` bigint(20) NOT NULL DEFAULT 0,
          `name` varchar(255) DEFAULT NULL,
          `uuid` varchar(40) DEFAULT NULL,
          `state` varchar(10) NOT NULL DEFAULT 'Down',
          `version` varchar(255) DEFAULT NULL,
          `service_ip` char(40) NOT NULL,
          `service_port` int(11) NOT NULL,
          `last_update` datetime DEFAULT NULL,
          `removed` datetime DEFAULT NULL,
          `alert_count` int(11) NOT NULL DEFAULT 0,
          PRIMARY KEY (`id`),
          UNIQUE KEY `msid` (`msid`)
        ) ENGINE=InnoDB",
    )
    .expect("create tables");
    for (version, step) in rows {
        conn.exec_drop(
            "INSERT INTO `version` (`version`, `updated`, `step`) VALUES (?, NOW(), ?)",
            (version, step),
        )
        .expect("insert version row");
    }
    (db, usage)
}

/// A node on `db` with 4.19.0.0 offered, started off the async worker.
fn node(db: &TestDb<'_>, usage: &str, installed: &str, delay_ms: u64) -> MgmtNode {
    blocking(|| {
        MgmtNode::builder("mgmt1")
            .db(&mariadb().cloud(), db.name(), usage)
            .installed(installed)
            .offer("4.19", &["4.19.0.0"])
            .step_delay(Duration::from_millis(delay_ms))
            .start()
            .unwrap_or_else(|e| panic!("start lab management server: {}", error_chain(&e)))
    })
}

async fn connect(node: &MgmtNode) -> SshHost {
    node.connect()
        .await
        .unwrap_or_else(|e| panic!("ssh to {}: {}", node.name(), error_chain(&e)))
}

async fn run(host: &SshHost, argv: &[&str]) -> Output {
    host.run(
        &Cmd::new(argv[0])
            .args(argv[1..].iter().copied())
            .timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap_or_else(|e| panic!("{argv:?}: {}", error_chain(&e)))
}

async fn run_ok(host: &SshHost, argv: &[&str]) -> String {
    let out = run(host, argv).await;
    assert!(out.success(), "{argv:?}: {}", out.stderr_lossy());
    out.stdout_lossy()
}

/// `(version, step)` of every row, oldest first.
fn version_rows(db: &TestDb<'_>) -> Vec<(String, String)> {
    blocking(|| {
        db.url()
            .connect()
            .expect("connect")
            .query("SELECT `version`, `step` FROM `version` ORDER BY `id`")
            .expect("read version rows")
    })
}

fn mshost_state(node: &MgmtNode) -> Option<(String, Option<String>)> {
    blocking(|| node.mshost().expect("read mshost")).map(|r| (r.state, r.version))
}

async fn settle(node: &MgmtNode) -> MgmtStartup {
    node.wait_settled(Duration::from_secs(8))
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

/// Waits for the start to end and asserts it failed.
async fn expect_failed(node: &MgmtNode) {
    let s = settle(node).await;
    assert!(
        matches!(s, MgmtStartup::Failed(_)),
        "{s:?}\n{}",
        node.log_text()
    );
}

async fn point_repo_at(host: &SshHost, node: &MgmtNode, line: &str) {
    let list = node.layout().apt_sources_dir.join("cloudstack.list");
    let text = format!("# CloudStack\ndeb https://download.cloudstack.org/ubuntu jammy {line}\n");
    host.write_atomic(&list, text.as_bytes(), None)
        .await
        .expect("rewrite cloudstack.list");
    run_ok(host, &["apt-get", "-q", "update"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_version_installs_once_the_repo_points_at_its_line() {
    let (db, usage) = blocking(|| minimal_db("mgmt_install", &[("4.18.0.0", "Complete")]));
    let node = node(&db, &usage, "4.18.0.0", 0);
    let host = connect(&node).await;
    let layout = node.layout();
    let text = host
        .read_to_string(&layout.db_properties())
        .await
        .expect("read db.properties");
    assert!(
        text.contains(&format!("db.cloud.name={}\n", db.name())),
        "{text}"
    );
    assert!(text.contains("serverTimezone=UTC"));
    let meta = host.stat(&layout.db_properties()).await.expect("stat");
    assert_eq!(meta.mode & 0o777, 0o600);

    // Still on 4.18: the index does not have 4.19.
    let out = run(&host, INSTALL).await;
    assert!(!out.success());
    assert!(
        out.stderr_lossy()
            .contains("Version '4.19.0.0' for 'cloudstack-management' was not found")
    );

    point_repo_at(&host, &node, "4.19").await;
    run_ok(&host, &["apt-mark", "hold", "cloudstack-management"]).await;
    let out = run(&host, INSTALL).await;
    assert!(
        out.stderr_lossy().contains("Held packages were changed"),
        "{out:?}"
    );
    let mut allowed = INSTALL.to_vec();
    allowed.insert(3, "--allow-change-held-packages");
    run_ok(&host, &allowed).await;
    run_ok(&host, &["apt-mark", "unhold", "cloudstack-management"]).await;

    let version = run_ok(
        &host,
        &["dpkg-query", "-W", "-f=${Version}", "cloudstack-management"],
    )
    .await;
    assert_eq!(version, "4.19.0.0");
    assert_eq!(node.installed_version(), Some(v("4.19.0.0")));
    let jars: Vec<String> = host
        .list_dir(&layout.management_lib_dir)
        .await
        .expect("list lib")
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with("cloud-"))
        .collect();
    assert!(
        !jars.is_empty() && jars.iter().all(|j| j.ends_with("-4.19.0.0.jar")),
        "{jars:?}"
    );

    // Conffiles on the way to 4.20: an edited one is kept (the package's goes beside it), an
    // untouched one is replaced (Log4j 2 from 4.20).
    node.offer("4.20", &["4.20.0.0"]).expect("offer 4.20");
    let default = layout.default_file("cloudstack-management");
    let mut edited = host.read(&default).await.expect("read default file");
    edited.extend_from_slice(b"# local change\n");
    host.write_atomic(&default, &edited, None)
        .await
        .expect("edit default file");
    point_repo_at(&host, &node, "4.20").await;
    let to_420: Vec<String> = INSTALL
        .iter()
        .map(|a| a.replace("4.19.0.0", "4.20.0.0"))
        .collect();
    let to_420: Vec<&str> = to_420.iter().map(String::as_str).collect();
    run_ok(&host, &to_420).await;
    assert_eq!(host.read(&default).await.expect("read"), edited);
    let dist = host
        .read_to_string(&default.with_file_name("cloudstack-management.dpkg-dist"))
        .await
        .expect("packaged default file beside");
    assert!(dist.contains("--add-opens"), "{dist}");
    let log4j = host
        .read_to_string(&layout.management_conf_dir.join("log4j-cloud.xml"))
        .await
        .expect("read log4j");
    assert!(log4j.contains("<Configuration"), "{log4j}");

    // 4.20 needs Java 17; the node still has 11.
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    expect_failed(&node).await;
    assert!(
        node.log_text()
            .contains("java.lang.UnsupportedClassVersionError")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_the_repo_does_not_offer_is_refused() {
    let (db, usage) = blocking(|| minimal_db("mgmt_refuse", &[("4.18.0.0", "Complete")]));
    let node = node(&db, &usage, "4.18.0.0", 0);
    let host = connect(&node).await;
    point_repo_at(&host, &node, "4.19").await;
    let out = run(
        &host,
        &[
            "apt-get",
            "install",
            "-y",
            "cloudstack-management=4.19.1.0",
            "cloudstack-common=4.19.1.0",
        ],
    )
    .await;
    assert_eq!(out.code, 100, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("Version '4.19.1.0' for 'cloudstack-management' was not found")
    );
    // apt takes a version exactly as the index has it: no rpm-style release.
    let out = run(
        &host,
        &[
            "apt-get",
            "install",
            "-y",
            "cloudstack-management=4.19.0.0-1",
            "cloudstack-common=4.19.0.0-1",
        ],
    )
    .await;
    assert_eq!(out.code, 100, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("Version '4.19.0.0-1' for 'cloudstack-management' was not found"),
        "{out:?}"
    );
    // Mixed versions break the packages' dependency on cloudstack-common.
    let out = run(
        &host,
        &["apt-get", "install", "-y", "cloudstack-management=4.19.0.0"],
    )
    .await;
    assert!(out.stderr_lossy().contains("unmet dependencies"), "{out:?}");
    assert_eq!(node.installed(MANAGEMENT_UNIT).as_deref(), Some("4.18.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_migrates_the_seeded_database_step_by_step() {
    let mut db = mariadb().database("mgmt_migrate").expect("test database");
    let usage = db.extra("usage").expect("usage schema");
    blocking(|| {
        seed(
            &db.url(),
            &SeedOptions::new(v("4.18.0.0"), db.name(), &usage),
        )
    })
    .unwrap_or_else(|e| panic!("seed: {}", error_chain(&e)));
    let node = node(&db, &usage, "4.18.0.0", 300);
    let host = connect(&node).await;
    point_repo_at(&host, &node, "4.19").await;
    run_ok(&host, INSTALL).await;
    let steps = [
        ("Upgrade41800to41810".to_string(), v("4.18.1.0")),
        ("Upgrade41810to41900".to_string(), v("4.19.0.0")),
    ];
    node.prepare_migration(&v("4.18.0.0"), &v("4.19.0.0"), &steps)
        .expect("prepare");
    assert!(blocking(|| node.register_mshost()).expect("register"));
    assert_eq!(mshost_state(&node).map(|m| m.0).as_deref(), Some("Down"));

    let started = Instant::now();
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "start returns before the migration"
    );

    // Watch the version table: each new row shows up as `Upgrade` before it is `Complete`.
    let mut seen = Vec::new();
    let mut conn = blocking(|| db.url().connect()).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let done = node.startup().is_settled() || Instant::now() > deadline;
        let rows: Vec<(String, String)> = blocking(|| {
            conn.query("SELECT `version`, `step` FROM `version` WHERE `version` IN ('4.18.1.0', '4.19.0.0') ORDER BY `id`")
        })
        .expect("read version rows");
        for row in rows {
            if !seen.contains(&row) {
                seen.push(row);
            }
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(settle(&node).await, MgmtStartup::Up("4.19.0.0".into()));
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        seen,
        [
            pair("4.18.1.0", "Upgrade"),
            pair("4.18.1.0", "Complete"),
            pair("4.19.0.0", "Upgrade"),
            pair("4.19.0.0", "Complete"),
        ]
    );
    let rows = version_rows(&db);
    assert_eq!(
        rows[rows.len() - 3..],
        [
            pair("4.18.0.0", "Complete"),
            pair("4.18.1.0", "Complete"),
            pair("4.19.0.0", "Complete"),
        ]
    );

    // The representative DDL of both steps, cleanup included.
    let cols: Vec<(String, String)> = blocking(|| {
        db.url()
            .connect()
            .expect("connect")
            .exec(
                "SELECT `TABLE_NAME`, `COLUMN_NAME` FROM information_schema.COLUMNS \
                 WHERE `TABLE_SCHEMA` = ? AND `COLUMN_NAME` = 'cleaned_up' ORDER BY 1",
                (db.name(),),
            )
            .expect("columns")
    });
    assert_eq!(
        cols,
        [
            (
                migration_table("Upgrade41800to41810"),
                "cleaned_up".to_string()
            ),
            (
                migration_table("Upgrade41810to41900"),
                "cleaned_up".to_string()
            ),
        ]
    );

    let log = node.log_text();
    let order = [
        "DB version = 4.18.0.0 Code Version = 4.19.0.0",
        "Running upgrade Upgrade41800to41810 to upgrade from 4.18.0.0-4.18.1.0 to 4.18.1.0",
        "Upgrade completed for version 4.18.1.0",
        "Running upgrade Upgrade41810to41900 to upgrade from 4.18.1.0-4.19.0.0 to 4.19.0.0",
        "Upgrade completed for version 4.19.0.0",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|l| {
            log.find(l)
                .unwrap_or_else(|| panic!("log lacks `{l}`:\n{log}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order:\n{log}");
    assert!(
        scan_log(&log, LogKind::ManagementServer).is_empty(),
        "{log}"
    );

    assert_eq!(
        mshost_state(&node),
        Some(("Up".into(), Some("4.19.0.0".into())))
    );
    // 4.19's system VM template is registered already (the fixture's id 15): the upgrade marks
    // it SYSTEM, points the system VMs at it and sets the two configuration values.
    assert_eq!(system_vm_templates(&db), [(15, 6)]);
    assert_eq!(
        config_value(&db, "minreq.sysvmtemplate.version").as_deref(),
        Some("4.19.0")
    );
    assert_eq!(
        config_value(&db, "router.template.kvm").as_deref(),
        Some("systemvm-kvm-4.19.0")
    );
    assert_eq!(
        run_ok(&host, &["systemctl", "is-active", "cloudstack-management"])
            .await
            .trim(),
        "active"
    );
    let ss = run_ok(&host, &["ss", "-Hltn"]).await;
    assert!(
        ss.lines()
            .any(|l| l.split_whitespace().nth(3) == Some("*:8080")),
        "{ss}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_at_step_two_leaves_its_row_in_upgrade() {
    let (db, usage) = blocking(|| minimal_db("mgmt_fault", &[("4.18.0.0", "Complete")]));
    let node = node(&db, &usage, "4.19.0.0", 0);
    let host = connect(&node).await;
    let steps = [
        ("Upgrade41800to41810".to_string(), v("4.18.1.0")),
        ("Upgrade41810to41900".to_string(), v("4.19.0.0")),
    ];
    node.prepare_migration(&v("4.18.0.0"), &v("4.19.0.0"), &steps)
        .expect("prepare");
    node.inject(MgmtFault::FailAtStep(2)).expect("inject");
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    expect_failed(&node).await;

    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        version_rows(&db),
        [
            pair("4.18.0.0", "Complete"),
            pair("4.18.1.0", "Complete"),
            pair("4.19.0.0", "Upgrade"),
        ]
    );
    let log = node.log_text();
    assert!(log.contains("Unable to upgrade the database"), "{log}");
    assert!(log.contains("Duplicate column name 'public_mtu'"), "{log}");
    let ids: Vec<&str> = scan_log(&log, LogKind::ManagementServer)
        .iter()
        .map(|m| m.signature.id)
        .collect();
    assert!(ids.contains(&"db.upgrade.failed"), "{ids:?}");
    let out = run(&host, &["systemctl", "is-active", "cloudstack-management"]).await;
    assert_eq!(
        (out.success(), out.stdout_lossy().trim()),
        (false, "failed")
    );
    let ss = run_ok(&host, &["ss", "-Hltn"]).await;
    assert!(!ss.contains(":8080"), "{ss}");
    assert_ne!(mshost_state(&node).map(|m| m.0).as_deref(), Some("Up"));

    // As CloudStack does, a restart resumes from the newest Complete row and re-runs step 2,
    // whose half-applied DDL now fails: not idempotent, so the backup is the way back.
    node.clear_faults().expect("clear");
    node.prepare_migration(&v("4.18.1.0"), &v("4.19.0.0"), &steps[1..])
        .expect("prepare");
    run_ok(&host, &["systemctl", "restart", "cloudstack-management"]).await;
    expect_failed(&node).await;
    let log = node.log_text();
    assert!(
        log.contains("Duplicate entry '4.19.0.0'") || log.contains("already exists"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_newer_than_the_code_is_refused() {
    let (db, usage) = blocking(|| {
        minimal_db(
            "mgmt_newer",
            &[("4.18.0.0", "Complete"), ("4.19.0.0", "Complete")],
        )
    });
    let node = node(&db, &usage, "4.18.0.0", 0);
    let host = connect(&node).await;
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    expect_failed(&node).await;
    let log = node.log_text();
    assert!(
        log.contains(
            "Database version 4.19.0.0 is higher than management software version 4.18.0.0"
        ),
        "{log}"
    );
    assert_eq!(node.service_state(MANAGEMENT_UNIT), "failed");
    assert_eq!(version_rows(&db).len(), 2, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unfinished_version_rows_are_refused() {
    let (db, usage) = blocking(|| minimal_db("mgmt_unfinished", &[("4.18.0.0", "Upgrade")]));
    let node = node(&db, &usage, "4.18.0.0", 0);
    node.systemctl("start", MANAGEMENT_UNIT).expect("start");
    expect_failed(&node).await;
    assert!(
        node.log_text()
            .contains("Version table contains records for which upgrade wasn't completed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_marks_mshost_down() {
    let (db, usage) = blocking(|| minimal_db("mgmt_stop", &[("4.18.0.0", "Complete")]));
    let node = blocking(|| {
        MgmtNode::builder("mgmt2")
            .db(&mariadb().cloud(), db.name(), &usage)
            .running(true)
            .start()
            .unwrap_or_else(|e| panic!("start: {}", error_chain(&e)))
    });
    assert!(
        node.log_text()
            .contains("DB version and code version matches so no upgrade needed.")
    );
    assert_eq!(
        mshost_state(&node),
        Some(("Up".into(), Some("4.18.0.0".into())))
    );
    let host = connect(&node).await;
    let out = run(&host, &["java", "-version"]).await;
    assert!(out.stderr_lossy().contains("version \"11."), "{out:?}");
    assert!(run_ok(&host, &["ss", "-Hltn"]).await.contains(":8250"));

    run_ok(
        &host,
        &[
            "systemctl",
            "stop",
            "cloudstack-management",
            "cloudstack-usage",
        ],
    )
    .await;
    assert_eq!(mshost_state(&node).map(|m| m.0).as_deref(), Some("Down"));
    let out = run(&host, &["systemctl", "is-active", "cloudstack-management"]).await;
    assert_eq!((out.code, out.stdout_lossy().trim()), (3, "inactive"));
    assert!(!node.service_active("cloudstack-usage"));
    assert_eq!(run_ok(&host, &["ss", "-Hltn"]).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_start_never_completes_and_stops_on_request() {
    let (db, usage) = blocking(|| minimal_db("mgmt_hang", &[("4.18.0.0", "Complete")]));
    let node = node(&db, &usage, "4.19.0.0", 0);
    node.prepare_migration(&v("4.18.0.0"), &v("4.19.0.0"), &[])
        .expect("prepare");
    node.inject(MgmtFault::Hang).expect("inject");
    let host = connect(&node).await;
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    let err = node
        .wait_settled(Duration::from_millis(600))
        .await
        .expect_err("never settles");
    assert!(
        error_chain(&err).contains("timed out"),
        "{}",
        error_chain(&err)
    );
    assert_eq!(
        version_rows(&db).last().map(|r| r.1.as_str()),
        Some("Upgrade")
    );
    assert!(node.log_text().contains("Running upgrade NoopDbUpgrade"));

    let started = Instant::now();
    run_ok(&host, &["systemctl", "stop", "cloudstack-management"]).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(node.startup(), MgmtStartup::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_el_management_server_upgrades_with_dnf() {
    let (db, usage) = blocking(|| minimal_db("mgmt_el", &[("4.18.0.0", "Complete")]));
    let node = blocking(|| {
        MgmtNode::builder("mgmt-el")
            .family(LabFamily::Rpm)
            .db(&mariadb().cloud(), db.name(), &usage)
            .offer("4.19", &["4.19.0.0"])
            .running(true)
            .start()
            .unwrap_or_else(|e| panic!("start: {}", error_chain(&e)))
    });
    assert_eq!(node.family(), LabFamily::Rpm);
    let host = connect(&node).await;
    let layout = node.layout();
    let os = host
        .read_to_string(&layout.os_release)
        .await
        .expect("os-release");
    assert!(os.contains("ID=\"rocky\""), "{os}");
    assert!(
        !host
            .exists(&layout.apt_sources_dir.join("cloudstack.list"))
            .await
            .expect("stat")
    );
    assert_eq!(run(&host, &["apt-get", "update"]).await.code, 127);
    assert_eq!(
        run_ok(
            &host,
            &[
                "rpm",
                "-q",
                "--qf",
                "%{VERSION}-%{RELEASE}\\n",
                "cloudstack-management"
            ]
        )
        .await,
        "4.18.0.0-1\n"
    );

    let repo = layout.yum_repos_dir.join("cloudstack.repo");
    let text = host.read_to_string(&repo).await.expect("read repo");
    assert!(text.contains("/4.18/"), "{text}");
    host.write_atomic(&repo, text.replace("/4.18/", "/4.19/").as_bytes(), None)
        .await
        .expect("rewrite repo");
    run_ok(&host, &["dnf", "-q", "makecache"]).await;
    let offered = run_ok(
        &host,
        &[
            "dnf",
            "-q",
            "repoquery",
            "--qf",
            "%{version}-%{release}\\n",
            "cloudstack-management",
        ],
    )
    .await;
    assert_eq!(offered, "4.19.0.0-1\n");

    // dnf pulls cloudstack-common along (`Requires: cloudstack-common = 4.19.0.0`); the old
    // package's %preun stops the running management server.
    run_ok(
        &host,
        &[
            "dnf",
            "-y",
            "install",
            "cloudstack-management-4.19.0.0-1",
            "cloudstack-usage-4.19.0.0-1",
        ],
    )
    .await;
    for p in [
        "cloudstack-management",
        "cloudstack-common",
        "cloudstack-usage",
    ] {
        assert_eq!(node.installed(p).as_deref(), Some("4.19.0.0-1"), "{p}");
    }
    assert_eq!(node.installed_version(), Some(v("4.19.0.0")));
    assert_eq!(node.startup(), MgmtStartup::Stopped);
    assert_eq!(node.service_state(MANAGEMENT_UNIT), "inactive");
    assert!(
        node.systemctl_log()
            .contains(&"stop cloudstack-management".to_string()),
        "{:?}",
        node.systemctl_log()
    );

    node.prepare_migration(&v("4.18.0.0"), &v("4.19.0.0"), &[])
        .expect("prepare");
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    assert_eq!(settle(&node).await, MgmtStartup::Up("4.19.0.0".into()));
    assert_eq!(
        mshost_state(&node),
        Some(("Up".into(), Some("4.19.0.0".into())))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_usage_has_no_usage_server_until_the_package_comes() {
    let (db, usage) = blocking(|| minimal_db("mgmt_no_usage", &[("4.18.0.0", "Complete")]));
    let node = blocking(|| {
        MgmtNode::builder("mgmt-nousage")
            .db(&mariadb().cloud(), db.name(), &usage)
            .usage(false)
            .running(true)
            .start()
            .unwrap_or_else(|e| panic!("start: {}", error_chain(&e)))
    });
    assert!(!node.has_usage());
    let host = connect(&node).await;
    let layout = node.layout();
    let out = run(&host, &["dpkg-query", "-W", "cloudstack-usage"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("no packages found matching cloudstack-usage")
    );
    let out = run(&host, &["systemctl", "stop", USAGE_UNIT]).await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("Unit cloudstack-usage.service not loaded."),
        "{out:?}"
    );
    let out = run(&host, &["systemctl", "start", USAGE_UNIT]).await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr_lossy()
            .contains("Unit cloudstack-usage.service not found."),
        "{out:?}"
    );
    let out = run(&host, &["systemctl", "is-active", USAGE_UNIT]).await;
    assert_eq!((out.code, out.stdout_lossy().trim()), (3, "inactive"));
    for path in [
        layout.usage_conf_dir.clone(),
        layout.usage_lib_dir.clone(),
        layout.usage_log(),
    ] {
        assert!(
            !host.exists(&path).await.expect("stat"),
            "{}",
            path.display()
        );
    }

    // apt installs it like any new package: files, unit (not started) and all.
    run_ok(
        &host,
        &["apt-get", "install", "-y", "cloudstack-usage=4.18.0.0"],
    )
    .await;
    assert!(node.has_usage());
    assert_eq!(node.service_state(USAGE_UNIT), "inactive");
    let link = host
        .read_to_string(&layout.usage_conf_dir.join("db.properties"))
        .await
        .expect("db.properties through the link");
    assert!(link.contains(&format!("db.cloud.name={}", db.name())));
    assert!(
        host.exists(&layout.usage_lib_dir.join("cloud-usage-4.18.0.0.jar"))
            .await
            .expect("stat")
    );
    run_ok(&host, &["systemctl", "start", USAGE_UNIT]).await;
    assert!(node.service_active(USAGE_UNIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jvm_that_dies_silently_leaves_no_known_signature() {
    let (db, usage) = blocking(|| minimal_db("mgmt_silent", &[("4.18.0.0", "Complete")]));
    let node = node(&db, &usage, "4.19.0.0", 0);
    node.prepare_migration(&v("4.18.0.0"), &v("4.19.0.0"), &[])
        .expect("prepare");
    node.inject(MgmtFault::DiesSilently).expect("inject");
    let host = connect(&node).await;
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    expect_failed(&node).await;
    assert_eq!(node.startup(), MgmtStartup::Failed("status=9/KILL".into()));
    let out = run(&host, &["systemctl", "is-active", "cloudstack-management"]).await;
    assert_eq!((out.code, out.stdout_lossy().trim()), (3, "failed"));
    let log = node.log_text();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.contains("Server configuration file found"), "{log}");
    assert!(
        scan_log(&log, LogKind::ManagementServer).is_empty(),
        "{log}"
    );
    assert_eq!(version_rows(&db).len(), 1, "nothing written");
    assert_ne!(mshost_state(&node).map(|m| m.0).as_deref(), Some("Up"));
}

/// `(vm_template_id, count)` of the non-User KVM VMs that are not removed.
fn system_vm_templates(db: &TestDb<'_>) -> Vec<(u64, u64)> {
    blocking(|| {
        db.url()
            .connect()
            .expect("connect")
            .query(
                "SELECT `vm_template_id`, COUNT(*) FROM `vm_instance` WHERE `type` <> 'User' \
                 AND `hypervisor_type` = 'KVM' AND `removed` IS NULL GROUP BY 1 ORDER BY 1",
            )
            .expect("read vm_instance")
    })
}

fn config_value(db: &TestDb<'_>, name: &str) -> Option<String> {
    blocking(|| {
        db.url()
            .connect()
            .expect("connect")
            .exec_first::<Option<String>, _, _>(
                "SELECT `value` FROM `configuration` WHERE `name` = ?",
                (name,),
            )
            .expect("read configuration")
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_start_registers_the_new_system_vm_template() {
    let mut db = mariadb().database("mgmt_sysvm").expect("test database");
    let usage = db.extra("usage").expect("usage schema");
    blocking(|| {
        seed(
            &db.url(),
            &SeedOptions::new(v("4.18.0.0"), db.name(), &usage),
        )
    })
    .unwrap_or_else(|e| panic!("seed: {}", error_chain(&e)));
    let before = system_vm_templates(&db);
    assert_eq!(
        before,
        [(14, 6)],
        "the fixture's system VMs run 4.18's template"
    );
    let user_before: Vec<(u64, Option<u64>)> = blocking(|| {
        db.url()
            .connect()
            .expect("connect")
            .query(
                "SELECT `id`, `vm_template_id` FROM `vm_instance` WHERE `type` = 'User' ORDER BY 1",
            )
            .expect("user vms")
    });

    // A start without a migration leaves the templates alone.
    let node = blocking(|| {
        MgmtNode::builder("mgmt-sysvm")
            .db(&mariadb().cloud(), db.name(), &usage)
            .offer("4.20", &["4.20.0.0"])
            .java_major(17)
            .running(true)
            .start()
            .unwrap_or_else(|e| panic!("start: {}", error_chain(&e)))
    });
    assert_eq!(system_vm_templates(&db), before);
    assert_eq!(config_value(&db, "minreq.sysvmtemplate.version"), None);

    let host = connect(&node).await;
    run_ok(&host, &["systemctl", "stop", "cloudstack-management"]).await;
    point_repo_at(&host, &node, "4.20").await;
    let to_420: Vec<String> = INSTALL
        .iter()
        .map(|a| a.replace("4.19.0.0", "4.20.0.0"))
        .collect();
    let to_420: Vec<&str> = to_420.iter().map(String::as_str).collect();
    run_ok(&host, &to_420).await;
    let steps = [
        ("Upgrade41800to41900".to_string(), v("4.19.0.0")),
        ("Upgrade41900to42000".to_string(), v("4.20.0.0")),
    ];
    node.prepare_migration(&v("4.18.0.0"), &v("4.20.0.0"), &steps)
        .expect("prepare");
    run_ok(&host, &["systemctl", "start", "cloudstack-management"]).await;
    assert_eq!(settle(&node).await, MgmtStartup::Up("4.20.0.0".into()));

    let mut conn = blocking(|| db.url().connect()).expect("connect");
    let rows: Vec<(u64, String, String, String, String, String)> = blocking(|| {
        conn.query(
            "SELECT `id`, `unique_name`, `type`, `hypervisor_type`, `state`, `format` \
             FROM `vm_template` WHERE `name` = 'systemvm-kvm-4.20.0' AND `removed` IS NULL",
        )
    })
    .expect("read vm_template");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (id, unique, kind, hv, state, format) = rows[0].clone();
    assert_eq!(
        (
            unique.as_str(),
            kind.as_str(),
            hv.as_str(),
            state.as_str(),
            format.as_str()
        ),
        (
            format!("routing-{id}").as_str(),
            "SYSTEM",
            "KVM",
            "Active",
            "QCOW2"
        )
    );
    let stores: Vec<(u64, String, String)> = blocking(|| {
        conn.exec(
            "SELECT `store_id`, `state`, `download_state` FROM `template_store_ref` \
             WHERE `template_id` = ? ORDER BY 1",
            (id,),
        )
    })
    .expect("read template_store_ref");
    let ready = |s: u64| (s, "Ready".to_string(), "DOWNLOADED".to_string());
    assert_eq!(stores, [ready(1), ready(2)], "one per zone's NFS store");
    assert_eq!(system_vm_templates(&db), [(id, 6)]);
    let user_after: Vec<(u64, Option<u64>)> = blocking(|| {
        conn.query(
            "SELECT `id`, `vm_template_id` FROM `vm_instance` WHERE `type` = 'User' ORDER BY 1",
        )
    })
    .expect("user vms");
    assert_eq!(user_after, user_before, "user VMs keep their templates");
    assert_eq!(
        config_value(&db, "minreq.sysvmtemplate.version").as_deref(),
        Some("4.20.0")
    );
    assert_eq!(
        config_value(&db, "router.template.kvm").as_deref(),
        Some("systemvm-kvm-4.20.0")
    );
    let log = node.log_text();
    let order = [
        "Upgrade completed for version 4.20.0.0",
        "Updating System Vm template IDs",
        "Updating KVM System Vms",
        "Updating System Vm Template IDs Complete",
        "Started ServerConnector",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|l| {
            log.rfind(l)
                .unwrap_or_else(|| panic!("log lacks `{l}`:\n{log}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order:\n{log}");
}
