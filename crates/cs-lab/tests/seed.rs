//! Seeding a CloudStack-shaped `cloud` + `cloud_usage` pair: stock rows, determinism, speed.

use std::time::Instant;

use cs_lab::{DbUrlExt, SeedOptions};
use mysql::prelude::Queryable;

fn opts(db: &cs_lab::TestDb<'_>, usage: &str, scale: u64, seed: u64) -> SeedOptions {
    let mut o = SeedOptions::new("4.18.0.0".parse().unwrap(), db.name(), usage);
    o.scale = scale;
    o.seed = seed;
    o
}

fn count(summary: &cs_lab::SeedSummary, suffix: &str) -> u64 {
    summary
        .tables
        .iter()
        .find(|(t, _)| t.ends_with(suffix))
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("no table {suffix}: {summary:?}"))
}

#[test]
fn stock_seed_has_the_fixture_rows_procedures_and_non_ascii_data() {
    let server = cs_lab::mariadb();
    let mut db = server.database("seed_stock").unwrap();
    let usage = db.extra("usage").unwrap();
    let t = Instant::now();
    let s = cs_lab::seed(&server.root(), &opts(&db, &usage, 0, 1)).unwrap();
    let stock_secs = t.elapsed().as_secs_f64();
    assert_eq!(count(&s, ".version"), 41);
    assert_eq!(count(&s, ".mshost"), 2);
    assert!(count(&s, ".guest_os_hypervisor") > 7000, "{s:?}");
    assert_eq!(count(&s, ".lab_blob"), 16);
    assert!(s.rows > 8000);
    let mut c = db.url().connect().unwrap();
    let procs: Vec<String> = c
        .exec(
            "SELECT routine_name FROM information_schema.routines WHERE routine_schema IN (?, ?)",
            (db.name(), &usage),
        )
        .unwrap();
    assert_eq!(procs.len(), 14, "{procs:?}");
    let zone: Option<String> = c
        .query_first("SELECT name FROM data_center WHERE id = 2")
        .unwrap();
    assert_eq!(zone.as_deref(), Some("São Paulo-2"));
    let nulls: Option<u64> = c
        .query_first("SELECT COUNT(*) FROM lab_blob WHERE data IS NULL OR LOCATE(X'00', data) > 0")
        .unwrap();
    assert!(nulls.unwrap() > 0);
    assert!(stock_secs < 30.0, "stock seed took {stock_secs:.1} s");
}

#[test]
fn scale_rows_are_deterministic_and_fast() {
    let server = cs_lab::mariadb();
    let checksum = |name: &str, seed: u64| {
        let mut db = server.database(name).unwrap();
        let usage = db.extra("usage").unwrap();
        let t = Instant::now();
        let s = cs_lab::seed(&server.root(), &opts(&db, &usage, 40_000, seed)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let mut c = db.url().connect().unwrap();
        let sums: Vec<(String, Option<u64>)> = ["event", "vm_stats", "usage_event"]
            .iter()
            .map(|t| {
                let row: (String, Option<u64>) = c
                    .query_first(format!("CHECKSUM TABLE `{t}`"))
                    .unwrap()
                    .unwrap();
                row
            })
            .collect();
        let cu: (String, Option<u64>) = c
            .query_first(format!("CHECKSUM TABLE `{usage}`.`cloud_usage`"))
            .unwrap()
            .unwrap();
        (
            s,
            sums.into_iter()
                .map(|s| s.1)
                .chain([cu.1])
                .collect::<Vec<_>>(),
            secs,
        )
    };
    let (a, sa, secs) = checksum("seed_a", 7);
    let (b, sb, _) = checksum("seed_b", 7);
    let (_, sc, _) = checksum("seed_c", 8);
    assert_eq!(sa, sb, "same seed, same rows");
    assert_ne!(sa, sc, "another seed, other rows");
    assert_eq!(a.rows, b.rows);
    let generated = 40_000 * 100 / 100;
    assert!(count(&a, ".event") >= 12_000);
    assert!(count(&a, "_usage.cloud_usage") >= 6_000);
    #[allow(clippy::print_stderr)] // The measured speed is part of this test's output.
    {
        eprintln!(
            "seeded {} rows ({} generated) in {secs:.2} s: {:.0} rows/s",
            a.rows,
            generated,
            a.rows as f64 / secs
        );
    }
}

#[test]
fn debian_12_is_a_guest_os_type_from_4_20_1_on() {
    let server = cs_lab::mariadb();
    let debian12 = |name: &str, version: &str| -> (u64, u64) {
        let mut db = server.database(name).unwrap();
        let usage = db.extra("usage").unwrap();
        let o = SeedOptions::new(version.parse().unwrap(), db.name(), &usage);
        cs_lab::seed(&server.root(), &o).unwrap();
        let mut c = db.url().connect().unwrap();
        let os: Option<(u64, u64)> = c
            .query_first(
                "SELECT COUNT(*), COALESCE(MAX(g.category_id), 0) FROM guest_os g \
                 JOIN guest_os_hypervisor h ON h.guest_os_id = g.id AND h.hypervisor_type = 'KVM' \
                 WHERE g.display_name = 'Debian GNU/Linux 12 (64-bit)' AND g.removed IS NULL",
            )
            .unwrap();
        os.unwrap()
    };
    assert_eq!(debian12("seed_deb_418", "4.18.0.0"), (0, 0));
    assert_eq!(debian12("seed_deb_4201", "4.20.1.0"), (1, 2));
}
