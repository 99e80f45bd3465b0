//! Issue #23's "Done when": rehearsals of the 4.18.0.0 → 4.19.0.0 migration on a scratch copy
//! of a seeded lab database, with the scripts of the `cloudstack-management` package the lab's
//! repository serves (or a package file, or a directory of scripts): a clean run passes; a
//! user-defined guest OS at an id the scripts insert, a half-applied earlier run and a session
//! with `ONLY_FULL_GROUP_BY` each fail at their statement with their cause and remedy; the live
//! schemas' fingerprint is the same after every rehearsal, and no scratch schema is left.

use std::sync::Arc;
use std::time::Duration;

use cs_core::{CsVersion, NoProgress, error_chain};
use cs_lab::packages::{PackageCompression, lab_scripts, step_column, step_guest_os_id};
use cs_lab::{DbUrlExt, RepoServer, SeedOptions, TestDb};
use cs_upgrade::{Rehearsal, RehearseOptions, ScriptSource, last_passed, rehearse};
use mysql::prelude::Queryable;

fn target() -> CsVersion {
    "4.19.0.0".parse().unwrap()
}

/// A seeded `cloud` + `cloud_usage` pair at 4.18.0.0.
fn seeded(name: &str) -> (TestDb<'static>, String) {
    let server = cs_lab::mariadb();
    let mut db = server.database(name).unwrap();
    let usage = db.extra("usage").unwrap();
    let opts = SeedOptions::new("4.18.0.0".parse().unwrap(), db.name(), &usage);
    cs_lab::seed(&server.root(), &opts).unwrap();
    (db, usage)
}

fn options(
    db: &TestDb<'_>,
    usage: &str,
    source: ScriptSource,
    dir: &std::path::Path,
) -> RehearseOptions {
    let mut o = RehearseOptions::new(
        target(),
        source,
        cs_lab::mariadb().root(),
        dir.join("backups"),
    );
    o.cloud_schema = db.name().to_string();
    o.usage_schema = usage.to_string();
    o.fetch_timeout = Duration::from_secs(30);
    o
}

fn from_repo(repo: &RepoServer) -> ScriptSource {
    let url = repo.url();
    // The node's file still points at the installed release, as days before the window.
    ScriptSource::Repository {
        text: format!("deb [arch=amd64] {url}/ubuntu noble 4.18\n"),
        format: cs_repo::Format::AptList,
        mirrors: vec![url],
    }
}

async fn run(o: &RehearseOptions) -> Rehearsal {
    tokio::time::timeout(Duration::from_secs(120), rehearse(o, Arc::new(NoProgress)))
        .await
        .expect("the rehearsal finishes")
        .unwrap_or_else(|e| panic!("rehearse: {}", error_chain(&e)))
}

fn schemas_like(pattern: &str) -> Vec<String> {
    let mut c = cs_lab::mariadb().root().connect().unwrap();
    c.exec(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE ?",
        (pattern,),
    )
    .unwrap()
}

/// Checks what every rehearsal must leave: the live schemas untouched, no scratch schema.
fn assert_left_alone(r: &Rehearsal, db: &TestDb<'_>) {
    assert!(r.live_unchanged, "the live schemas changed");
    assert!(!r.kept);
    assert_eq!(r.scratch.len(), 2, "{:?}", r.scratch);
    let left = schemas_like(&format!("{}%__restore_%", db.name()));
    assert!(left.is_empty(), "scratch schemas left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_rehearsal_from_the_repository_passes_and_is_recorded() {
    let repo = RepoServer::start(&["4.18.0.0", "4.19.0.0"]).await.unwrap();
    let (db, usage) = seeded("rh_clean");
    let dir = tempfile::tempdir().unwrap();
    let before = cs_rehearse::fingerprint(&db.url(), &[db.name(), &usage]).unwrap();
    let mut o = options(&db, &usage, from_repo(&repo), dir.path());
    o.keep_scratch = true;
    let r = run(&o).await;
    assert!(r.report.passed, "{}", r.report);
    assert_eq!(r.db_version, "4.18.0.0");
    assert!(r.backup_taken);
    assert!(r.live_unchanged);
    let (url, sum) = r.package.clone().expect("downloaded");
    assert!(
        url.ends_with("/ubuntu/pool/4.19/cloudstack-management_4.19.0.0_all.deb"),
        "{url}"
    );
    assert_eq!(sum.len(), 64);
    assert!(
        repo.requests()
            .contains(&"/ubuntu/dists/noble/4.19/binary-amd64/Packages.xz".to_string()),
        "{:?}",
        repo.requests()
    );
    // Both steps' prepare and cleanup scripts, then the view.
    let files: std::collections::BTreeSet<&str> = r
        .report
        .statements
        .iter()
        .map(|o| o.at.split('#').next().unwrap())
        .collect();
    assert_eq!(
        files.into_iter().collect::<Vec<_>>(),
        [
            "schema-41800to41810-cleanup.sql",
            "schema-41800to41810.sql",
            "schema-41810to41900-cleanup.sql",
            "schema-41810to41900.sql",
            "views/cloud.lab_host_summary.sql",
        ]
    );
    assert!(r.report.statements.iter().all(|o| o.ok));
    assert_eq!(r.report.versions, ["4.18.1.0", "4.19.0.0"]);
    assert_eq!(
        r.report.not_rehearsed,
        [
            "Upgrade41800to41810 (4.18.0.0 -> 4.18.1.0)",
            "Upgrade41810to41900 (4.18.1.0 -> 4.19.0.0)"
        ]
    );
    assert!(r.report.to_string().contains("PASSED"), "{}", r.report);
    // The kept scratch copy is upgraded: version rows Complete, the columns and the view there.
    let cloud_scratch = r
        .scratch
        .iter()
        .find(|s| s.starts_with(db.name()) && !s.starts_with(&usage))
        .unwrap()
        .clone();
    let mut c = cs_lab::mariadb().root().connect().unwrap();
    let rows: Vec<(String, String)> = c
        .query(format!(
            "SELECT version, step FROM `{cloud_scratch}`.version WHERE version IN ('4.18.1.0', '4.19.0.0') ORDER BY id"
        ))
        .unwrap();
    assert_eq!(
        rows,
        [
            ("4.18.1.0".to_string(), "Complete".to_string()),
            ("4.19.0.0".to_string(), "Complete".to_string())
        ]
    );
    let views: Vec<String> = c
        .exec(
            "SELECT table_name FROM information_schema.views WHERE table_schema = ?",
            (&cloud_scratch,),
        )
        .unwrap();
    assert!(views.contains(&"lab_host_summary".to_string()), "{views:?}");
    cs_rehearse::drop_scratch(&cs_lab::mariadb().root(), &r.scratch).unwrap();
    // The live schemas never saw any of it.
    let after = cs_rehearse::fingerprint(&db.url(), &[db.name(), &usage]).unwrap();
    assert_eq!(before, after);
    let live_rows: Option<u64> = c
        .query_first(format!(
            "SELECT COUNT(*) FROM `{}`.version WHERE version = '4.19.0.0'",
            db.name()
        ))
        .unwrap();
    assert_eq!(live_rows, Some(0));
    // The gate finds the record.
    let rec = last_passed(&dir.path().join("backups"), &target()).expect("recorded");
    assert!(rec.passed);
    assert_eq!(rec.db_version, "4.18.0.0");
    // A second rehearsal restores the backup the first one took.
    o.keep_scratch = false;
    let again = run(&o).await;
    assert!(again.report.passed, "{}", again.report);
    assert!(!again.backup_taken);
    assert_eq!(again.backup, r.backup);
    assert_left_alone(&again, &db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_defined_guest_os_at_an_inserted_id_fails_with_the_customisations_remedy() {
    let repo = RepoServer::start(&["4.18.0.0", "4.19.0.0"]).await.unwrap();
    let (db, usage) = seeded("rh_guest_os");
    let id = step_guest_os_id(&"4.18.1.0".parse().unwrap());
    db.url()
        .connect()
        .unwrap()
        .query_drop(format!(
            "INSERT INTO guest_os (id, category_id, uuid, display_name, created, is_user_defined) \
             VALUES ({id}, 1, UUID(), 'Our golden image OS', now(), 1)"
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = run(&options(&db, &usage, from_repo(&repo), dir.path())).await;
    assert!(!r.report.passed);
    let f = r.report.failure.as_ref().expect("a failure");
    assert_eq!(f.at, "schema-41800to41810.sql#2", "{}", r.report);
    assert_eq!(f.step, "Upgrade41800to41810");
    assert_eq!(f.code, Some(1062), "{}", f.error);
    assert!(
        f.statement.contains("INSERT INTO `cloud`.`guest_os`"),
        "{}",
        f.statement
    );
    assert!(f.error.contains("Duplicate entry"), "{}", f.error);
    assert_eq!(f.check.as_deref(), Some("db.customisations"));
    assert!(f.remedy.as_deref().unwrap().contains("db.customisations"));
    // The run stopped there, as the upgrade does.
    assert_eq!(
        r.report.statements.last().unwrap().at,
        "schema-41800to41810.sql#2"
    );
    assert!(r.report.versions.is_empty());
    assert!(last_passed(&dir.path().join("backups"), &target()).is_none());
    assert_left_alone(&r, &db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_applied_earlier_run_fails_on_the_duplicate_column() {
    let (db, usage) = seeded("rh_half");
    let col = step_column(&"4.18.1.0".parse().unwrap());
    db.url()
        .connect()
        .unwrap()
        .query_drop(format!(
            "ALTER TABLE vm_instance ADD COLUMN `{col}` varchar(64) DEFAULT NULL"
        ))
        .unwrap();
    // Air-gapped: the operator hands over the package file.
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("cloudstack-management_4.19.0.0_all.deb");
    std::fs::write(
        &pkg,
        cs_lab::packages::management_deb(&target(), PackageCompression::Zstd).unwrap(),
    )
    .unwrap();
    let r = run(&options(
        &db,
        &usage,
        ScriptSource::Package(pkg),
        dir.path(),
    ))
    .await;
    let f = r.report.failure.as_ref().expect("a failure");
    assert_eq!(f.at, "schema-41800to41810.sql#3", "{}", r.report);
    assert_eq!(f.code, Some(1060), "{}", f.error);
    assert!(f.error.contains("Duplicate column name"), "{}", f.error);
    assert!(f.cause.as_deref().unwrap().contains("half-applied"));
    assert!(
        r.report
            .to_string()
            .contains("first failure: schema-41800to41810.sql#3")
    );
    assert_left_alone(&r, &db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_needs_a_disabled_sql_mode_fails_under_that_session() {
    let (db, usage) = seeded("rh_sql_mode");
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("db");
    for (name, text) in lab_scripts(&target()).unwrap() {
        let p = sql.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let mut o = options(&db, &usage, ScriptSource::SqlDir(sql), dir.path());
    o.session = cs_rehearse::Session::from_db_properties(
        "db.cloud.url.params=prepStmtCacheSize=517&cachePrepStmts=true&sessionVariables=sql_mode='ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'&serverTimezone=UTC\n",
    )
    .unwrap();
    let r = run(&o).await;
    let f = r.report.failure.as_ref().expect("a failure");
    assert_eq!(f.at, "views/cloud.lab_host_summary.sql#2", "{}", r.report);
    assert_eq!(f.code, Some(1055), "{}", f.error);
    assert!(f.cause.as_deref().unwrap().contains("ONLY_FULL_GROUP_BY"));
    assert_eq!(f.check.as_deref(), Some("db.server.compat"));
    // Every step ran before the views.
    assert_eq!(r.report.versions, ["4.18.1.0", "4.19.0.0"]);
    assert_left_alone(&r, &db);
}

/// The example binary (`cargo build --example rehearse`), beside the test binaries.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let path = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the target directory")
        .join("examples")
        .join(name);
    assert!(path.exists(), "{} is not built", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_prints_json_keeps_the_password_off_the_terminal_and_exits_by_outcome() {
    let (db, usage) = seeded("rh_example");
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("db");
    for (name, text) in lab_scripts(&target()).unwrap() {
        let p = sql.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let root = cs_lab::mariadb().root();
    let password = root.password.expose().to_string();
    assert!(!password.is_empty());
    let url = format!("mysql://{}:{}@{}", root.user, password, root.addr());
    let run = |extra: &[&str]| {
        #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
        let mut cmd = std::process::Command::new(example("rehearse"));
        cmd.env("CS_DB_URL", &url)
            .arg("--to")
            .arg("4.19.0.0")
            .arg("--backups")
            .arg(dir.path().join("backups"))
            .arg("--sql-dir")
            .arg(&sql)
            .arg("--cloud")
            .arg(db.name())
            .arg("--usage")
            .arg(&usage)
            .args(extra);
        let out = cmd.output().expect("run the example");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stdout.contains(&password) && !stderr.contains(&password));
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = tokio::task::block_in_place(|| run(&["--json"]));
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["report"]["passed"], true);
    assert_eq!(v["live_unchanged"], true);
    // A session with ONLY_FULL_GROUP_BY fails: exit 1, the failure in the text report.
    let props = dir.path().join("db.properties");
    std::fs::write(
        &props,
        "db.cloud.url.params=sessionVariables=sql_mode='ONLY_FULL_GROUP_BY'\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| run(&["--db-properties", props.to_str().unwrap()]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout.contains("views/cloud.lab_host_summary.sql#2"),
        "{stdout}"
    );
    assert!(stdout.contains("live schemas unchanged"), "{stdout}");
    // A command line that cannot run: exit 2.
    let (code, _, stderr) = tokio::task::block_in_place(|| run(&["--to", "nonsense"]));
    assert_eq!(code, Some(2), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yum_repository_and_a_scratch_server_of_its_own() {
    let repo = RepoServer::start(&["4.18.0.0", "4.19.0.0"]).await.unwrap();
    let (db, usage) = seeded("rh_yum");
    let other = tokio::task::spawn_blocking(cs_lab::MariaDb::start)
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = repo.url();
    let source = ScriptSource::Repository {
        text: format!(
            "[cloudstack]\nname=cloudstack\nbaseurl={url}/centos/$releasever/4.18/\nenabled=1\ngpgcheck=0\n"
        ),
        format: cs_repo::Format::Yum,
        mirrors: vec![url.clone()],
    };
    let mut o = options(&db, &usage, source, dir.path());
    o.scratch_db = Some(other.root());
    o.keep_scratch = true;
    let r = run(&o).await;
    assert!(r.report.passed, "{}", r.report);
    assert!(r.live_unchanged);
    let (pkg, _) = r.package.clone().unwrap();
    assert!(
        pkg.ends_with("/centos/8/4.19/cloudstack-management-4.19.0.0-1.noarch.rpm"),
        "{pkg}"
    );
    // The scratch copy lives on the other server only.
    let mut c = other.root().connect().unwrap();
    let there: Vec<String> = c
        .exec(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE ?",
            (format!("{}%__restore_%", db.name()),),
        )
        .unwrap();
    assert_eq!(there.len(), 2, "{there:?}");
    assert!(schemas_like(&format!("{}%__restore_%", db.name())).is_empty());
    cs_rehearse::drop_scratch(&other.root(), &r.scratch).unwrap();
    // Only scratch schemas are ever dropped.
    let err = cs_rehearse::drop_scratch(&other.root(), &[db.name().to_string()]).unwrap_err();
    assert!(err.to_string().contains("not a scratch schema"), "{err}");
}

/// On the whole lab: the first management server's repository file and `db.properties` are
/// read over SSH, the package comes from the lab's repository, and the gate's policy finds the
/// passed rehearsal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_installation_is_rehearsed_from_its_management_server() {
    let lab = tokio::task::spawn_blocking(|| {
        cs_lab::Lab::builder()
            .name("rehearse")
            .management_servers(1)
            .kvm_hosts(1)
            .start()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("start the lab: {}", error_chain(&e)));
    let t = target();
    tokio::task::block_in_place(|| lab.prepare_upgrade(&t, false)).unwrap();
    let path = lab.write_config(&t).unwrap();
    let (mut config, _) = cs_upgrade::UpgradeConfig::load(&path).unwrap();
    // With `[policy.rehearsal]`, the gate's pre-flight wants a passed rehearsal first.
    config.policy.rehearsal = Some(cs_upgrade::RehearsalPolicy {
        within: Duration::from_secs(7 * 86400),
    });
    let recent = |config: &cs_upgrade::UpgradeConfig| {
        let config = config.clone();
        async move {
            let report = cs_upgrade::preflight(&config, cs_upgrade::Phase::Pre, &[]).await;
            report
                .findings
                .into_iter()
                .find(|f| f.id == cs_upgrade::REHEARSAL_RECENT)
                .expect("rehearsal.recent in the gate")
        }
    };
    assert_eq!(recent(&config).await.severity, cs_core::Severity::Fail);
    let before =
        cs_rehearse::fingerprint(&lab.db_url(), &[lab.cloud_schema(), lab.usage_schema()]).unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(120),
        cs_upgrade::rehearse_configured(&config, false, Arc::new(NoProgress)),
    )
    .await
    .expect("finishes")
    .unwrap_or_else(|e| panic!("rehearse: {}", error_chain(&e)));
    assert!(r.report.passed, "{}", r.report);
    assert!(r.live_unchanged);
    assert!(r.package.is_some());
    let after =
        cs_rehearse::fingerprint(&lab.db_url(), &[lab.cloud_schema(), lab.usage_schema()]).unwrap();
    assert_eq!(before, after);
    assert!(last_passed(&config.backup.dir, &t).is_some());
    let f = recent(&config).await;
    assert_eq!(f.severity, cs_core::Severity::Pass, "{}", f.message);
    // The example with the config: JSON, exit 0, no secret on the terminal.
    let out = tokio::task::block_in_place(|| {
        #[allow(clippy::disallowed_methods)] // the test runs the operator's binary
        std::process::Command::new(example("rehearse"))
            .arg("--config")
            .arg(&path)
            .arg("--json")
            .output()
            .expect("run the example")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let password = lab.db_url().password.expose().to_string();
    assert!(!stdout.contains(&password) && !stderr.contains(&password));
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["report"]["passed"], true);
    assert_eq!(
        v["backup_taken"], false,
        "the newest verified backup is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_as_the_management_servers_user_granted_on_the_scratch_copy_only() {
    let (db, usage) = seeded("rh_user");
    let server = cs_lab::mariadb();
    let user = server.create_user("rh_cloud_user", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir
        .path()
        .join("cloudstack-management-4.19.0.0-1.noarch.rpm");
    std::fs::write(
        &pkg,
        cs_lab::packages::management_rpm(&target(), PackageCompression::Xz).unwrap(),
    )
    .unwrap();
    let mut o = options(&db, &usage, ScriptSource::Package(pkg), dir.path());
    o.script_user = Some(user.clone());
    o.keep_scratch = true;
    let r = run(&o).await;
    assert!(r.report.passed, "{}", r.report);
    assert!(r.live_unchanged);
    // The objects the scripts created belong to that user, as on the management server.
    let cloud_scratch = r
        .scratch
        .iter()
        .find(|s| !s.starts_with(&usage))
        .unwrap()
        .clone();
    let mut c = server.root().connect().unwrap();
    let definer: Option<String> = c
        .exec_first(
            "SELECT definer FROM information_schema.views WHERE table_schema = ? AND table_name = 'lab_host_summary'",
            (&cloud_scratch,),
        )
        .unwrap();
    assert!(definer.unwrap().starts_with("rh_cloud_user@"));
    // The grant is gone again; the user never had any on the live schemas.
    let grants: Vec<String> = c.query("SHOW GRANTS FOR 'rh_cloud_user'@'%'").unwrap();
    assert!(
        grants
            .iter()
            .all(|g| !g.contains("__restore_") && !g.contains(db.name())),
        "{grants:?}"
    );
    cs_rehearse::drop_scratch(&server.root(), &r.scratch).unwrap();
}
