//! `rehearse` on a real MariaDB with small in-memory scripts: the version rows, the schema
//! names pointed at the scratch schemas, slow statements, text the runner never runs, several
//! statements in one refused as on CloudStack's connections, and a missing script refused
//! before anything runs.

use std::collections::BTreeMap;
use std::time::Duration;

use cs_lab::DbUrlExt;
use cs_rehearse::{Error, Options, Plan, PlanStep, SchemaMap, Scripts, rehearse};
use mysql::prelude::Queryable;

fn plan() -> Plan {
    Plan {
        target: "2.0.0.0".into(),
        procedures_first: false,
        steps: vec![PlanStep {
            class: "UpgradeLab".into(),
            from: "1.0.0.0".into(),
            to: "2.0.0.0".into(),
            prepare: vec!["schema-a.sql".into()],
            cleanup: vec!["schema-a-cleanup.sql".into()],
            java_data_migration: true,
        }],
        views_last: false,
    }
}

fn scripts(prepare: &str) -> Scripts {
    Scripts {
        source: "memory".into(),
        files: BTreeMap::from([
            ("schema-a.sql".to_string(), prepare.to_string()),
            (
                "schema-a-cleanup.sql".to_string(),
                "UPDATE `cloud_usage`.`u` SET n = n + 1;\nSELECT 1 -- never run, no `;`\n"
                    .to_string(),
            ),
        ]),
        jars: Vec::new(),
    }
}

#[test]
fn runs_steps_on_the_mapped_schemas_and_refuses_several_statements_in_one() {
    let server = cs_lab::mariadb();
    let mut db = server.database("rehearse_exec").unwrap();
    let usage = db.extra("usage").unwrap();
    let mut c = db.url().connect().unwrap();
    c.query_drop(format!(
        "CREATE TABLE version (id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         version char(40) NOT NULL UNIQUE, updated datetime NOT NULL, step char(32) NOT NULL); \
         INSERT INTO version (version, updated, step) VALUES ('1.0.0.0', now(), 'Complete'); \
         CREATE TABLE `{usage}`.u (n int NOT NULL); INSERT INTO `{usage}`.u VALUES (0)"
    ))
    .unwrap();
    let map = SchemaMap {
        cloud: db.name().to_string(),
        usage: usage.clone(),
    };
    let options = Options::default().slow(Duration::from_millis(200));
    let good = "CREATE TABLE `cloud`.`t` (\n  a int -- a column\n);\nINSERT INTO cloud.t VALUES (1);\nSELECT SLEEP(0.3);\n";
    let r = rehearse(&server.root(), &map, &plan(), &scripts(good), &options).unwrap();
    assert!(r.passed, "{r}");
    assert_eq!(r.versions, ["2.0.0.0"]);
    assert_eq!(r.not_rehearsed, ["UpgradeLab (1.0.0.0 -> 2.0.0.0)"]);
    assert_eq!(r.unterminated, ["schema-a-cleanup.sql"]);
    let slow: Vec<&str> = r.slow().map(|o| o.at.as_str()).collect();
    assert_eq!(slow, ["schema-a.sql#3"]);
    assert!(r.to_string().contains("slow: schema-a.sql#3"), "{r}");
    let rows: Vec<(String, String)> = c
        .query("SELECT version, step FROM version ORDER BY id")
        .unwrap();
    assert_eq!(rows[1], ("2.0.0.0".to_string(), "Complete".to_string()));
    let n: Option<i32> = c.query_first(format!("SELECT n FROM `{usage}`.u")).unwrap();
    assert_eq!(n, Some(1));
    let t: Option<i32> = c.query_first("SELECT a FROM t").unwrap();
    assert_eq!(t, Some(1));

    // `…; -- note` does not end the statement for CloudStack's runner: the next one joins it
    // and the server refuses the pair, as on Connector/J's connection.
    c.query_drop("DROP TABLE t; DELETE FROM version WHERE version = '2.0.0.0'")
        .unwrap();
    let joined = "CREATE TABLE `cloud`.`t` (a int);\nINSERT INTO `cloud`.`t` VALUES (1); -- first\nINSERT INTO `cloud`.`t` VALUES (2);\n";
    let r = rehearse(&server.root(), &map, &plan(), &scripts(joined), &options).unwrap();
    assert!(!r.passed);
    let f = r.failure.as_ref().unwrap();
    assert_eq!(f.at, "schema-a.sql#2");
    assert_eq!(f.code, Some(1064), "{}", f.error);
    assert_eq!(
        f.statement,
        "INSERT INTO `cloud`.`t` VALUES (1);  INSERT INTO `cloud`.`t` VALUES (2) "
    );
    let rows: Option<i64> = c.query_first("SELECT COUNT(*) FROM t").unwrap();
    assert_eq!(rows, Some(0), "neither insert ran");
    assert!(r.versions.is_empty());

    // A script the plan needs and the source lacks: refused before anything runs.
    let mut missing = scripts(good);
    missing.files.remove("schema-a-cleanup.sql");
    let err = rehearse(&server.root(), &map, &plan(), &missing, &options).unwrap_err();
    assert!(matches!(err, Error::MissingScript { .. }), "{err}");
    assert!(
        err.to_string().contains("META-INF/db/schema-a-cleanup.sql"),
        "{err}"
    );
}

#[test]
fn procedures_run_first_and_views_last() {
    let server = cs_lab::mariadb();
    let mut db = server.database("rehearse_phases").unwrap();
    let usage = db.extra("usage").unwrap();
    let mut c = db.url().connect().unwrap();
    c.query_drop(format!(
        "CREATE TABLE version (id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         version char(40) NOT NULL UNIQUE, updated datetime NOT NULL, step char(32) NOT NULL); \
         CREATE TABLE `{usage}`.u (n int NOT NULL); INSERT INTO `{usage}`.u VALUES (0)"
    ))
    .unwrap();
    let mut p = plan();
    p.procedures_first = true;
    p.views_last = true;
    let mut s = scripts("CREATE TABLE `cloud`.`t` (a int);\nCALL `cloud`.`ADD_ROW`(7);\n");
    s.files.insert(
        "procedures/cloud.add_row.sql".into(),
        "DROP PROCEDURE IF EXISTS `cloud`.`ADD_ROW`;\nCREATE PROCEDURE `cloud`.`ADD_ROW` (IN v INT)\nBEGIN\n    INSERT INTO `cloud`.`t` VALUES (v); END;\n".into(),
    );
    s.files.insert(
        "views/cloud.t_view.sql".into(),
        "CREATE OR REPLACE VIEW `cloud`.`t_view` AS SELECT a FROM `cloud`.`t`;\n".into(),
    );
    let map = SchemaMap {
        cloud: db.name().to_string(),
        usage,
    };
    let r = rehearse(&server.root(), &map, &p, &s, &Options::default()).unwrap();
    assert!(r.passed, "{r}");
    let order: Vec<(cs_rehearse::Phase, &str)> = r
        .statements
        .iter()
        .map(|o| (o.phase, o.at.as_str()))
        .collect();
    use cs_rehearse::Phase::*;
    assert_eq!(
        order,
        [
            (Procedures, "procedures/cloud.add_row.sql#1"),
            (Procedures, "procedures/cloud.add_row.sql#2"),
            (Prepare, "schema-a.sql#1"),
            (Prepare, "schema-a.sql#2"),
            (Cleanup, "schema-a-cleanup.sql#1"),
            (Views, "views/cloud.t_view.sql#1"),
        ]
    );
    let v: Option<i32> = c.query_first("SELECT a FROM t_view").unwrap();
    assert_eq!(v, Some(7));
}
