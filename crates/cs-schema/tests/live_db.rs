//! Against a real MariaDB: each database check with a passing and a failing fixture (seeded by
//! `cs_lab::seed` in schemas of their own), and `MigrationWatch` over a changing version table.

use std::sync::Arc;
use std::time::Duration;

use cs_core::fake::FakeHost;
use cs_core::{Check, CsVersion, Finding, Host, RecordingProgress, Severity};
use cs_lab::{DbUrlExt, SeedOptions, TestDb};
use cs_schema::{
    DbContext, DbTarget, MigrationWatch, WatchOutcome, db_checks, ids, read_state, run_db_checks,
};
use mysql::prelude::Queryable;

fn v(s: &str) -> CsVersion {
    s.parse().unwrap()
}

/// A seeded `cloud` + `cloud_usage` pair at `version`, owned by the test.
fn seeded(name: &str, version: &str) -> (TestDb<'static>, DbTarget) {
    let server = cs_lab::mariadb();
    let mut db = server.database(name).unwrap();
    let usage = db.extra("usage").unwrap();
    cs_lab::seed(
        &server.root(),
        &SeedOptions::new(v(version), db.name(), &usage),
    )
    .unwrap();
    let target = DbTarget::new(server.cloud(), db.name(), &usage);
    (db, target)
}

/// A stock 4.18.0.0 pair shared by the tests that only read.
fn shared() -> DbTarget {
    static SHARED: std::sync::OnceLock<(TestDb<'static>, DbTarget)> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| seeded("shared", "4.18.0.0"))
        .1
        .clone()
}

/// A stock 4.18.0.0 pair for the tests that change it to build a failing fixture. Each of those
/// tests changes a different table, read by a different check, so they do not disturb each
/// other and one seed serves them all.
fn scratch() -> (&'static TestDb<'static>, DbTarget) {
    static SCRATCH: std::sync::OnceLock<(TestDb<'static>, DbTarget)> = std::sync::OnceLock::new();
    let (db, t) = SCRATCH.get_or_init(|| seeded("scratch", "4.18.0.0"));
    (db, t.clone())
}

fn sql(db: &TestDb<'_>, stmt: &str) {
    db.url().connect().unwrap().query_drop(stmt).unwrap();
}

/// Runs one check and returns its findings.
async fn run(cx: &DbContext, id: &str) -> Vec<Finding> {
    let check = db_checks().into_iter().find(|c| c.id() == id).unwrap();
    check.run(cx).await.unwrap()
}

#[track_caller]
fn assert_worst(findings: &[Finding], severity: Severity, contains: &str) {
    let worst = findings.iter().map(|f| f.severity).max().unwrap();
    assert_eq!(worst, severity, "{findings:#?}");
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains(contains) || f.subject.contains(contains)),
        "no finding mentions {contains:?}: {findings:#?}"
    );
    for f in findings.iter().filter(|f| f.severity >= Severity::Warn) {
        assert!(f.remedy.is_some(), "no remedy: {f:?}");
    }
}

#[tokio::test]
async fn a_stock_4_18_database_passes_for_4_19() {
    let target = shared();
    let cx = DbContext::new(target, v("4.19.0.0"));
    let report = run_db_checks(&cx, &[]).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    assert_eq!(report.exit_code(), 0, "{}", report.to_table());
    let text = report.to_table();
    assert!(
        text.contains("Upgrade41800to41810 (4.18.0.0 -> 4.18.1.0)"),
        "{text}"
    );
}

#[tokio::test]
async fn the_state_reads_what_the_seed_wrote() {
    let target = shared();
    let s = read_state(&target).await.unwrap();
    let vt = s.version.as_ref().unwrap();
    assert_eq!(vt.current(), Some(v("4.18.0.0")));
    assert_eq!(vt.rows.len(), 41);
    assert_eq!(s.mshosts.len(), 2);
    assert_eq!(s.hypervisors_in_use, ["KVM"]);
    assert!(s.routines.len() >= 14);
    assert!(s.server.version.contains("MariaDB"));
    assert!(
        s.systemvm_templates
            .iter()
            .any(|t| t.name == "systemvm-kvm-4.18.0")
    );
}

#[tokio::test]
async fn seeded_version_rows_are_the_path_cs_schema_computes() {
    let h = cs_schema::Hierarchy::snapshot();
    for version in ["4.18.0.0", "4.20.1.0", "4.22.0.0", "4.22.0.1"] {
        let mut want = vec![v("4.0.0")];
        want.extend(
            h.path(&v("4.0.0"), &v(version))
                .unwrap()
                .iter()
                .map(|s| s.to),
        );
        assert_eq!(cs_lab::version_history(&v(version)), want, "{version}");
    }
    // And the table holds exactly those rows, all Complete.
    let (db, _) = seeded("history", "4.22.0.1");
    let rows: Vec<(String, String)> = db
        .url()
        .connect()
        .unwrap()
        .query("SELECT version, step FROM version ORDER BY id")
        .unwrap();
    let got: Vec<CsVersion> = rows.iter().map(|r| v(&r.0)).collect();
    assert_eq!(got, cs_lab::version_history(&v("4.22.0.1")));
    assert!(rows.iter().all(|r| r.1 == "Complete"));
}

#[tokio::test]
async fn version_sane_fails_on_a_row_left_in_upgrade() {
    let (db, target) = scratch();
    let cx = DbContext::new(target.clone(), v("4.22.0.0"));
    assert_worst(
        &run(&cx, ids::VERSION_SANE).await,
        Severity::Pass,
        "at 4.18.0.0",
    );
    sql(
        db,
        "INSERT INTO version (version, updated, step) VALUES ('4.18.1.0', NOW(), 'Upgrade')",
    );
    let cx = DbContext::new(target, v("4.22.0.0"));
    let f = run(&cx, ids::VERSION_SANE).await;
    assert_worst(&f, Severity::Fail, "is in step `Upgrade`");
    assert!(f[0].subject.ends_with(".version id=42"), "{f:?}");
}

#[tokio::test]
async fn version_sane_fails_when_the_database_is_newer_or_legacy() {
    let (db, target) = seeded("newer", "4.20.1.0");
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::VERSION_SANE).await,
        Severity::Fail,
        "cannot downgrade",
    );
    sql(&db, "DROP TABLE version");
    let cx = DbContext::new(target, v("4.22.0.0"));
    assert_worst(
        &run(&cx, ids::VERSION_SANE).await,
        Severity::Fail,
        "no `version` table",
    );
    assert_eq!(
        run(&cx, ids::VERSION_PATH).await[0].severity,
        Severity::Skip
    );
}

#[tokio::test]
async fn version_path_names_rerun_and_noop_steps() {
    let (_db, target) = seeded("path", "4.18.1.3");
    let cx = DbContext::new(target, v("4.22.0.1"));
    let f = run(&cx, ids::VERSION_PATH).await;
    assert_eq!(f[0].severity, Severity::Info);
    assert!(
        f[0].message.contains("the step from 4.18.1.0 runs again"),
        "{}",
        f[0].message
    );
    assert!(
        f[0].message
            .contains("NoopDbUpgrade (4.22.0.0 -> 4.22.0.1)"),
        "{}",
        f[0].message
    );
}

#[tokio::test]
async fn routines_present_fails_on_a_dropped_procedure() {
    let (db, target) = scratch();
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::ROUTINES_PRESENT).await,
        Severity::Pass,
        "10 procedures",
    );
    sql(db, "DROP PROCEDURE IDEMPOTENT_ADD_COLUMN");
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::ROUTINES_PRESENT).await,
        Severity::Fail,
        "IDEMPOTENT_ADD_COLUMN",
    );
    // From 4.19.2 the management server re-creates procedures: a warning only.
    let cx = DbContext::new(target, v("4.22.0.0"));
    assert_worst(
        &run(&cx, ids::ROUTINES_PRESENT).await,
        Severity::Warn,
        "IDEMPOTENT_ADD_COLUMN",
    );
}

#[tokio::test]
async fn the_procedures_work() {
    let (db, _) = seeded("procs", "4.18.0.0");
    sql(
        &db,
        "CALL IDEMPOTENT_ADD_COLUMN('nics', 'lab_col', 'int NULL'); CALL IDEMPOTENT_ADD_COLUMN('nics', 'lab_col', 'int NULL')",
    );
    sql(
        &db,
        "CALL ADD_GUEST_OS_AND_HYPERVISOR_MAPPING(10, 'Ubuntu 99.04 (Lab)', 'KVM', 'default', 'Ubuntu 99.04')",
    );
    let n: Option<u64> = db
        .url()
        .connect()
        .unwrap()
        .query_first("SELECT COUNT(*) FROM guest_os_hypervisor h JOIN guest_os g ON g.id = h.guest_os_id WHERE g.display_name = 'Ubuntu 99.04 (Lab)'")
        .unwrap();
    assert_eq!(n, Some(1));
}

#[tokio::test]
async fn usage_present_fails_without_cloud_usage_or_grants() {
    let target = shared();
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::USAGE_PRESENT).await,
        Severity::Pass,
        "privileges on both",
    );
    // The usage schema missing.
    let gone = DbTarget::new(
        target.url.clone(),
        &target.cloud_schema,
        "cs_t_no_such_usage",
    );
    let cx = DbContext::new(gone, v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::USAGE_PRESENT).await,
        Severity::Fail,
        "does not exist",
    );
    // A user with grants on `cloud` only.
    let user = cs_lab::mariadb()
        .create_user(
            &format!("cs_t_u_{}", std::process::id()),
            &[&format!(
                "GRANT ALL ON `{}`.* TO {{user}}",
                target.cloud_schema
            )],
        )
        .unwrap();
    let narrow = DbTarget::new(user, &target.cloud_schema, &target.usage_schema);
    let cx = DbContext::new(narrow, v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::USAGE_PRESENT).await,
        Severity::Fail,
        "has no privileges on",
    );
}

#[tokio::test]
async fn server_compat_passes_on_the_lab_mariadb() {
    let target = shared();
    let cx = DbContext::new(target, v("4.22.0.0"));
    assert_worst(
        &run(&cx, ids::SERVER_COMPAT).await,
        Severity::Pass,
        "MariaDB >= 10.6",
    );
}

#[tokio::test]
async fn nics_update_time_warns_without_current_timestamp() {
    let (db, target) = scratch();
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::NICS_UPDATE_TIME).await,
        Severity::Pass,
        "current_timestamp",
    );
    sql(
        db,
        "ALTER TABLE nics MODIFY update_time timestamp NULL DEFAULT NULL",
    );
    let cx = DbContext::new(target, v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::NICS_UPDATE_TIME).await,
        Severity::Warn,
        "not CURRENT_TIMESTAMP",
    );
}

#[tokio::test]
async fn customisations_warn_on_a_user_defined_guest_os() {
    let (db, target) = scratch();
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::CUSTOMISATIONS).await,
        Severity::Pass,
        "no user-defined",
    );
    sql(
        db,
        "INSERT INTO guest_os (category_id, uuid, display_name, created, is_user_defined) VALUES (10, UUID(), 'Ubuntu 24.04 (Hauseigen – 自作)', NOW(), 1)",
    );
    let cx = DbContext::new(target, v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::CUSTOMISATIONS).await,
        Severity::Warn,
        "Hauseigen – 自作",
    );
}

#[tokio::test]
async fn size_reports_the_big_tables() {
    let target = shared();
    let cx = DbContext::new(target, v("4.19.0.0"));
    let f = run(&cx, ids::SIZE).await;
    assert!(f.iter().all(|f| f.severity == Severity::Info));
    assert!(
        f.iter()
            .any(|f| f.subject.ends_with(".vm_stats") && f.message.contains("rows")),
        "{f:#?}"
    );
    assert!(f.last().unwrap().message.contains("a backup takes about"));
}

#[tokio::test]
async fn cluster_quiesced_fails_while_another_management_server_is_up() {
    let (db, target) = scratch();
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::CLUSTER_QUIESCED).await,
        Severity::Pass,
        "none of 2",
    );
    sql(db, "UPDATE mshost SET state = 'Up' WHERE id = 2");
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::CLUSTER_QUIESCED).await,
        Severity::Fail,
        "mgmt-02.cloud.example.org",
    );
    let cx = DbContext::new(target, v("4.19.0.0")).except_msid(2_748_779_069_442);
    assert_worst(
        &run(&cx, ids::CLUSTER_QUIESCED).await,
        Severity::Pass,
        "none of 2",
    );
}

#[tokio::test]
async fn half_applied_ddl_of_a_later_schema_fails() {
    // apache/cloudstack #7358: DDL of a later schema present without its version row.
    let (db, target) = scratch();
    let cx = DbContext::new(target.clone(), v("4.22.0.0"));
    assert_worst(
        &run(&cx, ids::SCHEMA_HALF_APPLIED).await,
        Severity::Pass,
        "no table or column of a schema after 4.18.0.0",
    );
    // What schema-41810to41900.sql and schema-41910to42000.sql create, on a 4.18.0.0 database.
    sql(
        db,
        "CREATE TABLE roles (id bigint unsigned NOT NULL PRIMARY KEY, \
         public_role tinyint(1) NOT NULL DEFAULT '1'); \
         CREATE TABLE nsx_providers (id bigint unsigned NOT NULL PRIMARY KEY)",
    );
    let cx = DbContext::new(target, v("4.22.0.0"));
    let findings = run(&cx, ids::SCHEMA_HALF_APPLIED).await;
    assert_worst(&findings, Severity::Fail, "column `roles`.`public_role`");
    assert_worst(
        &findings,
        Severity::Fail,
        "table `nsx_providers` belongs to schema 4.20.0.0",
    );
    assert_eq!(findings.len(), 2, "{findings:#?}");
}

#[tokio::test]
async fn an_older_schema_without_later_columns_still_gives_every_check_its_report() {
    // Before `is_user_defined` existed on the guest OS tables: the state is read without it.
    let (db, target) = seeded("older", "4.18.0.0");
    sql(
        &db,
        "ALTER TABLE guest_os DROP COLUMN is_user_defined; \
         ALTER TABLE guest_os_hypervisor DROP COLUMN is_user_defined",
    );
    let cx = DbContext::new(target, v("4.19.0.0"));
    let report = run_db_checks(&cx, &[]).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.id == ids::CUSTOMISATIONS && f.severity == Severity::Pass),
        "{}",
        report.to_table()
    );
}

#[tokio::test]
async fn systemvm_templates_must_be_registered_and_on_every_zone() {
    let (db, target) = scratch();
    let cx = DbContext::new(target.clone(), v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Pass,
        "systemvm-kvm-4.19.0",
    );
    // 4.20's template is not registered. 4.20 registers its bundled template itself: without
    // a look at the management servers that is a warning, not a failure.
    let cx = DbContext::new(target.clone(), v("4.20.0.0"));
    let findings = run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await;
    assert_worst(
        &findings,
        Severity::Warn,
        "registers it from the file bundled",
    );
    // The removed XenServer cluster of the fixture is not in use.
    assert!(
        !findings.iter().any(|f| f.message.contains("XenServer")),
        "{findings:#?}"
    );
    // The bundled file on the management servers: present, or missing (#12077).
    let cx = DbContext::new(target.clone(), v("4.20.0.0")).bundled_systemvm_files(vec![
        "metadata.ini".into(),
        "systemvmtemplate-4.20.0-x86_64-kvm.qcow2.bz2".into(),
    ]);
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Info,
        "/usr/share/cloudstack-management/templates/systemvm/systemvmtemplate-4.20.0-x86_64-kvm.qcow2.bz2",
    );
    let cx = DbContext::new(target.clone(), v("4.20.0.0")).bundled_systemvm_files(vec![
        "metadata.ini".into(),
        "systemvmtemplate-4.18.0-kvm.qcow2.bz2".into(),
        "systemvmtemplate-4.20.0-x86_64-vmware.ova".into(),
    ]);
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Fail,
        "Cannot upgrade system Vms",
    );
    // Before 4.16 the upgrade registers nothing itself.
    let cx = DbContext::new(target.clone(), v("4.15.2.0"));
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Fail,
        "(hypervisor KVM, in use) is not registered",
    );
    let cx = DbContext::new(target.clone(), v("4.20.0.0")).bundled_systemvm_templates(true);
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Info,
        "registers it",
    );
    let cx = DbContext::new(target.clone(), v("4.20.0.0")).registers_systemvm_template(true);
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Info,
        "the run registers it first",
    );
    // Registered the way the upgrade guide says (a USER template, not routing), downloading in
    // one zone so far: the upgrade would find it by name, but not yet on every image store.
    sql(
        db,
        "INSERT INTO vm_template (id, unique_name, name, uuid, public, featured, type, hvm, bits, \
         url, format, created, account_id, display_text, enable_password, guest_os_id, \
         cross_zones, hypervisor_type, state) VALUES (9020, '9020abcd', 'systemvm-kvm-4.20.0', \
         UUID(), 0, 0, 'USER', 1, 64, 'https://example.org/t.qcow2.bz2', 'QCOW2', \
         UTC_TIMESTAMP(), 2, 'systemvm-kvm-4.20.0', 0, 15, 1, 'KVM', 'Active')",
    );
    sql(
        db,
        "INSERT INTO template_store_ref (store_id, template_id, created, download_pct, \
         download_state, state, destroyed, store_role) \
         VALUES (1, 9020, UTC_TIMESTAMP(), 100, 'DOWNLOADED', 'Ready', 0, 'Image'), \
         (2, 9020, UTC_TIMESTAMP(), 40, 'DOWNLOAD_IN_PROGRESS', 'Creating', 0, 'Image')",
    );
    let cx = DbContext::new(target.clone(), v("4.20.0.0"));
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Fail,
        "not Ready on the image store of zone 2",
    );
    let cx = DbContext::new(target.clone(), v("4.20.0.0")).registers_systemvm_template(true);
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Info,
        "the run waits for it",
    );
    sql(
        db,
        "UPDATE template_store_ref SET download_pct = 100, download_state = 'DOWNLOADED', \
         state = 'Ready' WHERE template_id = 9020",
    );
    let cx = DbContext::new(target.clone(), v("4.20.0.0"));
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Pass,
        "registered as a USER template",
    );
    // A VMware cluster without hosts: the upgrade counts its hypervisor as in use (#5041).
    sql(
        db,
        "INSERT INTO cluster (id, name, uuid, pod_id, data_center_id, hypervisor_type, \
         cluster_type, allocation_state, managed_state, created) VALUES (9, 'vmw-empty', UUID(), \
         1, 1, 'VMware', 'ExternalManaged', 'Enabled', 'Managed', UTC_TIMESTAMP())",
    );
    let cx = DbContext::new(target.clone(), v("4.15.2.0"));
    let findings = run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await;
    let vmware: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.subject.contains("systemvm-vmware-4.15.2"))
        .collect();
    assert_eq!(vmware.len(), 1, "{findings:#?}");
    assert_eq!(vmware[0].severity, Severity::Fail);
    assert!(
        vmware[0].message.contains("has a cluster but no live host"),
        "{vmware:#?}"
    );
    assert!(
        vmware[0]
            .remedy
            .as_deref()
            .unwrap()
            .contains("remove the VMware cluster"),
        "{vmware:#?}"
    );
    sql(db, "DELETE FROM cluster WHERE id = 9");
    // A XenServer 7.1 host the 4.15+ template does not start on (#4502).
    sql(
        db,
        "INSERT INTO host (id, name, uuid, status, type, private_ip_address, data_center_id, \
         hypervisor_type, hypervisor_version, resource_state, version, dom0_memory, last_ping, created) \
         VALUES (99, 'xen71', UUID(), 'Up', 'Routing', '192.0.2.71', 1, 'XenServer', '7.1.2', \
         'Enabled', '4.18.0.0', 0, 0, UTC_TIMESTAMP())",
    );
    let cx = DbContext::new(target.clone(), v("4.19.0.0")).bundled_systemvm_files(vec![]);
    let findings = run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await;
    assert!(
        findings.iter().any(|f| f.severity == Severity::Warn
            && f.message.contains("XenServer 7.1.2 hosts")
            && f.remedy.is_some()),
        "{findings:#?}"
    );
    // Its template is missing too, and no bundled file is on the management servers.
    assert!(
        findings.iter().any(|f| f.severity == Severity::Fail
            && f.message
                .contains("systemvm-xenserver-4.19.0 (hypervisor XenServer, in use)")),
        "{findings:#?}"
    );
    sql(db, "DELETE FROM host WHERE id = 99");
    // Missing from the second zone's image store.
    sql(
        db,
        "DELETE FROM template_store_ref WHERE template_id = 15 AND store_id = 2",
    );
    let cx = DbContext::new(target, v("4.19.0.0"));
    assert_worst(
        &run(&cx, ids::SYSTEMVM_TEMPLATES_READY).await,
        Severity::Fail,
        "zone 2 (nfs-sec-São Paulo-2)",
    );
}

#[tokio::test]
async fn an_unreachable_database_breaks_the_checks_without_leaking_the_password() {
    let mut url = cs_lab::mariadb().cloud();
    url.password = cs_core::Secret::new("hunter2-wrong");
    let cx = DbContext::new(DbTarget::cloudstack(url), v("4.19.0.0"));
    let report = run_db_checks(&cx, &[ids::SIZE]).await;
    assert_eq!(report.exit_code(), 255);
    assert_eq!(report.broken.len(), db_checks().len() - 1);
    let text = report.to_table();
    assert!(
        text.contains("cannot connect to database at 127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn server_compat_fails_on_only_full_group_by() {
    // A server of its own: the global sql_mode of the shared one stays as it is.
    let server = tokio::task::spawn_blocking(|| {
        cs_lab::MariaDb::start_with(&cs_lab::MariaDbOptions {
            server_args: vec!["--sql-mode=ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES".into()],
            ..cs_lab::MariaDbOptions::default()
        })
        .unwrap()
    })
    .await
    .unwrap();
    cs_lab::seed(
        &server.root(),
        &SeedOptions::new(v("4.18.0.0"), "cloud", "cloud_usage"),
    )
    .unwrap();
    let cx = DbContext::new(DbTarget::cloudstack(server.cloud()), v("4.19.0.0"));
    let f = run(&cx, ids::SERVER_COMPAT).await;
    assert_worst(&f, Severity::Fail, "ONLY_FULL_GROUP_BY");
    assert!(f[0].subject.ends_with("@@GLOBAL.sql_mode"), "{f:?}");
}

const LOG: &str = "/var/log/cloudstack/management/management-server.log";

fn watch(target: &DbTarget, to: &str, host: Arc<FakeHost>) -> MigrationWatch {
    let mut w = MigrationWatch::new(target.clone(), v(to), host as Arc<dyn Host>);
    w.poll = Duration::from_millis(50);
    w.deadline = Duration::from_secs(20);
    w.expected_steps = Some(2);
    w
}

#[tokio::test]
async fn the_watch_follows_steps_until_the_target_row_is_complete() {
    let (db, target) = seeded("watch_ok", "4.21.0.0");
    let host = Arc::new(
        FakeHost::new("mgmt1").with_file(LOG, "old line: Unable to upgrade the database\n"),
    );
    let url = db.url();
    let migrate = tokio::task::spawn_blocking(move || {
        let mut c = url.connect().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        c.query_drop(
            "INSERT INTO version (version, updated, step) VALUES ('4.22.0.0', NOW(), 'Upgrade')",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        c.query_drop("UPDATE version SET step = 'Complete' WHERE version = '4.22.0.0'")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        c.query_drop(
            "INSERT INTO version (version, updated, step) VALUES ('4.22.0.1', NOW(), 'Complete')",
        )
        .unwrap();
    });
    let progress = RecordingProgress::default();
    let out = watch(&target, "4.22.0.1", host)
        .run(&progress)
        .await
        .unwrap();
    migrate.await.unwrap();
    let WatchOutcome::Complete { version, rows } = out else {
        panic!("{out:?}")
    };
    assert_eq!(version, v("4.22.0.1"));
    assert_eq!(rows.len(), 2);
    let updates = progress.updates();
    assert!(
        updates
            .iter()
            .any(|u| u.message.as_deref() == Some("4.22.0.0 Upgrade")),
        "{updates:?}"
    );
    assert!(updates.last().unwrap().finished);
    assert_eq!(updates.last().unwrap().done, 2);
}

#[tokio::test]
async fn the_watch_ends_on_a_failure_line_and_quotes_it() {
    let target = shared();
    let host = Arc::new(FakeHost::new("mgmt1").with_file(LOG, "2025-11-20 INFO starting\n"));
    let h2 = host.clone();
    let line = "2025-11-20 08:00:01,123 ERROR [c.c.u.DatabaseUpgradeChecker] (main:null) Unable to upgrade the database";
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut text = String::from_utf8(h2.file(LOG).unwrap()).unwrap();
        text.push_str(line);
        text.push('\n');
        h2.write_atomic(std::path::Path::new(LOG), text.as_bytes(), None)
            .await
            .unwrap();
    });
    let out = watch(&target, "4.22.0.0", host)
        .run(&cs_core::NoProgress)
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(
        out,
        WatchOutcome::Failed {
            line: line.to_string(),
            rows: vec![]
        }
    );
}

#[tokio::test]
async fn the_watch_gives_up_at_the_deadline() {
    let target = shared();
    let host = Arc::new(FakeHost::new("mgmt1"));
    let mut w = watch(&target, "4.22.0.0", host);
    w.deadline = Duration::from_millis(300);
    let out = w.run(&cs_core::NoProgress).await.unwrap();
    assert!(
        matches!(out, WatchOutcome::TimedOut { ref rows, last_error: None } if rows.is_empty()),
        "{out:?}"
    );
}

/// What a restore to a moment would discard: rows created and changed after it, and the user
/// VMs created after it, with their hosts; a moment that is not a time is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_since_counts_what_a_restore_would_discard() {
    let (db, target) = seeded("changes_since", "4.18.0.0");
    let since = "2030-01-01 00:00:00";
    let before = cs_schema::changes_since(&target, since).await.unwrap();
    assert!(before.is_empty(), "{before:#?}");
    sql(
        &db,
        "INSERT INTO `event` (`type`, `state`, `description`, `user_id`, `account_id`, \
         `domain_id`, `created`, `level`) VALUES ('VM.STOP', 'Completed', 'later', 2, 2, 1, \
         '2030-01-02 00:00:00', 'INFO')",
    );
    sql(
        &db,
        "UPDATE `vm_instance` SET `update_time` = '2030-01-02 00:00:00' WHERE `name` = 'vm-008'",
    );
    sql(
        &db,
        "UPDATE `vm_instance` SET `created` = '2030-01-03 00:00:00' WHERE `name` = 'vm-009'",
    );
    let after = cs_schema::changes_since(&target, since).await.unwrap();
    let table = |t: &str| {
        after
            .tables
            .iter()
            .find(|c| c.table.ends_with(&format!(".{t}")))
            .map(|c| (c.created, c.changed))
    };
    assert_eq!(table("event"), Some((1, 0)), "{after:#?}");
    assert_eq!(table("vm_instance"), Some((1, 1)), "{after:#?}");
    assert_eq!(after.new_vms.len(), 1);
    assert_eq!(after.new_vms[0].name, "vm-009");
    assert_eq!(after.new_vms[0].host.as_deref(), Some("kvm-zrh-01"));
    let e = cs_schema::changes_since(&target, "yesterday")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("yesterday"), "{e}");
}

#[tokio::test]
async fn the_checks_work_over_verify_ca_and_say_when_tls_is_required() {
    // A server of its own with a CA and require_secure_transport=ON.
    let server = tokio::task::spawn_blocking(|| {
        cs_lab::MariaDb::start_with(&cs_lab::MariaDbOptions {
            tls: true,
            ..cs_lab::MariaDbOptions::default()
        })
        .unwrap()
    })
    .await
    .unwrap();
    cs_lab::seed(
        &server.root(),
        &SeedOptions::new(v("4.18.0.0"), "cloud", "cloud_usage"),
    )
    .unwrap();
    let url = server.cloud();
    assert_eq!(url.tls.mode, cs_core::TlsMode::VerifyCa);
    let cx = DbContext::new(DbTarget::cloudstack(url.clone()), v("4.19.0.0"));
    let report = run_db_checks(&cx, &[]).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    assert_eq!(report.exit_code(), 0, "{}", report.to_table());
    let state = read_state(&DbTarget::cloudstack(url.clone()))
        .await
        .unwrap();
    assert_eq!(
        state.version.as_ref().unwrap().current(),
        Some(v("4.18.0.0"))
    );

    // ssl-mode=DISABLED: every check is broken, saying that the server requires TLS.
    let clear = url.with_tls(cs_core::DbTls::default());
    let cx = DbContext::new(DbTarget::cloudstack(clear), v("4.19.0.0"));
    let report = run_db_checks(&cx, &[]).await;
    assert_eq!(report.exit_code(), 255);
    let text = report.to_table();
    assert!(
        text.contains("the server requires TLS (require_secure_transport=ON)"),
        "{text}"
    );
    assert!(!text.contains(url.password.expose()), "{text}");
}
