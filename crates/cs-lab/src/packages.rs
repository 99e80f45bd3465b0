//! Small `cloudstack-management` packages the lab builds itself, laid out the way CloudStack's
//! are, carrying the lab's own upgrade scripts (no CloudStack SQL: every script here is
//! written for the lab's 4.18 subset).
//!
//! Layout followed: `debian/cloudstack-management.install` installs
//! `/usr/share/cloudstack-management/*`, whose `lib/` holds the jars; the upgrade scripts are
//! classpath resources `META-INF/db/schema-<from>to<to>.sql`, `schema-<from>to<to>-cleanup.sql`
//! (`DbUpgrade.getPrepareScripts`/`getCleanupScripts`), `views/*.sql` and `procedures/*.sql`
//! (`DatabaseUpgradeChecker.executeViewScripts`/`executeProcedureScripts`) of
//! `engine/schema/src/main/resources`. A `.deb` is `debian-binary`, `control.tar.*` and
//! `data.tar.*` in an `ar` archive; an `.rpm` a lead, a signature header, a header and a
//! compressed `cpio` (newc) payload. The scripts travel in the one application jar,
//! `lib/cloudstack-<version>.jar` (UNCONFIRMED for every upstream release).

use std::collections::BTreeMap;
use std::io::Write;

use cs_core::CsVersion;

/// The oldest version the lab's scripts start from.
pub const LAB_SCRIPTS_FROM: &str = "4.15.0.0";

/// Compression of a package's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageCompression {
    /// gzip.
    Gzip,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
}

/// The `guest_os` id the lab's script of the step to `to` inserts (as CloudStack's scripts
/// insert new guest OS types with explicit ids).
pub fn step_guest_os_id(to: &CsVersion) -> u64 {
    let [a, b, c, d] = to.padded();
    9000 + u64::from(a) * 1000 + u64::from(b) * 100 + u64::from(c) * 10 + u64::from(d)
}

/// The `vm_instance` column the lab's script of the step to `to` adds with a plain
/// `ALTER TABLE … ADD COLUMN` (not idempotent, as many of CloudStack's are not).
pub fn step_column(to: &CsVersion) -> String {
    let [a, b, c, d] = to.padded();
    format!("lab_note_{a}_{b}_{c}_{d}")
}

/// The view the lab's `views/` script creates; its `GROUP BY` needs `ONLY_FULL_GROUP_BY` off.
pub const LAB_VIEW: &str = "lab_host_summary";

/// The lab's scripts for every step from [`LAB_SCRIPTS_FROM`] to `target`, by name under
/// `META-INF/db/`.
///
/// # Errors
/// When cs-schema knows no path to `target`.
pub fn lab_scripts(target: &CsVersion) -> crate::Result<BTreeMap<String, String>> {
    let from: CsVersion = LAB_SCRIPTS_FROM
        .parse()
        .map_err(|e| crate::LabError::Start {
            what: "lab scripts".into(),
            detail: format!("{e}"),
        })?;
    let steps = cs_schema::path(&from, target).map_err(|e| crate::LabError::Start {
        what: format!("lab scripts for {target}"),
        detail: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for s in steps.iter().filter(|s| !s.noop) {
        for name in &s.prepare_sql {
            out.insert(name.clone(), prepare_script(&s.from, &s.to));
        }
        for name in &s.cleanup_sql {
            out.insert(name.clone(), cleanup_script(&s.from, &s.to));
        }
    }
    out.insert(format!("views/cloud.{LAB_VIEW}.sql"), view_script());
    out.insert(
        "procedures/cloud.lab_idempotent_add_column.sql".into(),
        procedure_script(),
    );
    Ok(out)
}

const LICENSE: &str = "-- Licensed to the Apache Software Foundation (ASF) under one\n\
-- or more contributor license agreements; this script is the lab's own.\n";

fn prepare_script(from: &CsVersion, to: &CsVersion) -> String {
    let id = step_guest_os_id(to);
    let col = step_column(to);
    let tag = format!("{}", to).replace('.', "_");
    format!(
        "{LICENSE}\n--;\n-- Schema upgrade from {from} to {to} (cs-lab)\n--;\n\n\
/* A table of the step's own, over several lines,\n   with a quoted semicolon in a default. */\n\
CREATE TABLE IF NOT EXISTS `cloud`.`lab_step_{tag}` (\n\
  `id` bigint unsigned NOT NULL AUTO_INCREMENT,\n\
  `note` varchar(255) DEFAULT 'a;b', -- a comment after a column\n\
  PRIMARY KEY (`id`)\n\
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3;\n\n\
# A new guest OS type, with the id CloudStack would give it.\n\
INSERT INTO `cloud`.`guest_os` (`id`, `uuid`, `category_id`, `display_name`, `created`, `is_user_defined`)\n\
    VALUES ({id}, UUID(), 1, 'Lab Linux {to} (64-bit)', now(), 0);\n\n\
ALTER TABLE `cloud`.`vm_instance` ADD COLUMN `{col}` varchar(64) DEFAULT NULL COMMENT 'lab step {to}';\n\n\
DROP PROCEDURE IF EXISTS `cloud`.`LAB_STEP_ADD_COLUMN`;\n\
CREATE PROCEDURE `cloud`.`LAB_STEP_ADD_COLUMN` (\n\
\t\tIN in_table_name VARCHAR(200)\n\
    , IN in_column_name VARCHAR(200)\n\
    , IN in_column_definition VARCHAR(1000)\n\
)\n\
BEGIN\n\
\tDECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name, ' ADD COLUMN ', in_column_name, ' ', in_column_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END;\n\n\
CALL `cloud`.`LAB_STEP_ADD_COLUMN`('cloud.host', 'lab_seen_{tag}', 'datetime DEFAULT NULL');\n\
UPDATE `cloud_usage`.`usage_event` SET `processed` = `processed` WHERE `id` < 0;\n"
    )
}

fn cleanup_script(from: &CsVersion, to: &CsVersion) -> String {
    let tag = format!("{}", to).replace('.', "_");
    format!(
        "{LICENSE}\n--;\n-- Schema upgrade cleanup from {from} to {to} (cs-lab)\n--;\n\n\
INSERT INTO `cloud`.`lab_step_{tag}` (`note`) VALUES ('cleaned up; done');\n\
DROP PROCEDURE IF EXISTS `cloud`.`LAB_STEP_ADD_COLUMN`;\n"
    )
}

fn view_script() -> String {
    format!(
        "{LICENSE}\n-- VIEW `cloud`.`{LAB_VIEW}`;\n\n\
DROP VIEW IF EXISTS `cloud`.`{LAB_VIEW}`;\n\n\
CREATE VIEW `cloud`.`{LAB_VIEW}` AS\n\
    SELECT\n\
        `host`.`status`,\n\
        `host`.`name` AS `example_host`,\n\
        COUNT(*) AS `hosts`\n\
    FROM `cloud`.`host`\n\
    GROUP BY `host`.`status`;\n"
    )
}

fn procedure_script() -> String {
    format!(
        "{LICENSE}\n-- PROCEDURE `cloud`.`LAB_IDEMPOTENT_ADD_COLUMN`\n\n\
DROP PROCEDURE IF EXISTS `cloud`.`LAB_IDEMPOTENT_ADD_COLUMN`;\n\n\
CREATE PROCEDURE `cloud`.`LAB_IDEMPOTENT_ADD_COLUMN` (\n\
    IN in_table_name VARCHAR(200), IN in_column_name VARCHAR(200), IN in_column_definition VARCHAR(1000)\n\
)\n\
BEGIN\n\
    DECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name, ' ADD COLUMN ', in_column_name, ' ', in_column_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END;\n"
    )
}

/// A jar (zip) with `scripts` under `META-INF/db/` and a manifest naming `version`.
///
/// # Errors
/// IO errors of the zip writer.
pub fn management_jar(
    version: &CsVersion,
    scripts: &BTreeMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let err = |e: zip::result::ZipError| std::io::Error::other(e.to_string());
    zip.start_file("META-INF/MANIFEST.MF", opts).map_err(err)?;
    zip.write_all(
        format!("Manifest-Version: 1.0\r\nImplementation-Version: {version}\r\n\r\n").as_bytes(),
    )?;
    for (name, text) in scripts {
        zip.start_file(format!("META-INF/db/{name}"), opts)
            .map_err(err)?;
        zip.write_all(text.as_bytes())?;
    }
    Ok(zip.finish().map_err(err)?.into_inner())
}

/// Where the jar goes in the package.
pub fn jar_path(version: &CsVersion) -> String {
    format!("usr/share/cloudstack-management/lib/cloudstack-{version}.jar")
}

fn compress(data: &[u8], c: PackageCompression) -> std::io::Result<Vec<u8>> {
    match c {
        PackageCompression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data)?;
            e.finish()
        }
        PackageCompression::Xz => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data)?;
            e.finish()
        }
        PackageCompression::Zstd => zstd::stream::encode_all(data, 3),
    }
}

fn suffix(c: PackageCompression) -> &'static str {
    match c {
        PackageCompression::Gzip => "gz",
        PackageCompression::Xz => "xz",
        PackageCompression::Zstd => "zst",
    }
}

fn tar_of(files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("./{path}"), &data[..])?;
    }
    b.into_inner()
}

/// A `cloudstack-management_<version>_all.deb` carrying the lab's scripts for `version`.
///
/// # Errors
/// IO errors of the archive writers; no path to `version`.
pub fn management_deb(version: &CsVersion, c: PackageCompression) -> crate::Result<Vec<u8>> {
    let scripts = lab_scripts(version)?;
    let io = |e| crate::LabError::io("build the lab's management package", e);
    let jar = management_jar(version, &scripts).map_err(io)?;
    let control = format!(
        "Package: cloudstack-management\nVersion: {version}\nArchitecture: all\n\
         Maintainer: Apache CloudStack <dev@cloudstack.apache.org>\n\
         Depends: cloudstack-common (= {version})\nDescription: CloudStack server library (cs-lab)\n"
    );
    let control_tar = tar_of(&[("control".into(), control.into_bytes())]).map_err(io)?;
    let data_tar = tar_of(&[
        (jar_path(version), jar),
        (
            "etc/cloudstack/management/db.properties".into(),
            b"db.cloud.name=cloud\n".to_vec(),
        ),
    ])
    .map_err(io)?;
    let mut ar = ar::Builder::new(Vec::new());
    let members = [
        ("debian-binary".to_string(), b"2.0\n".to_vec()),
        (
            "control.tar.gz".to_string(),
            compress(&control_tar, PackageCompression::Gzip).map_err(io)?,
        ),
        (
            format!("data.tar.{}", suffix(c)),
            compress(&data_tar, c).map_err(io)?,
        ),
    ];
    for (name, data) in members {
        let mut h = ar::Header::new(name.into_bytes(), data.len() as u64);
        h.set_mode(0o100644);
        ar.append(&h, &data[..]).map_err(io)?;
    }
    ar.into_inner().map_err(io)
}

/// One rpm header: magic, index entries (all `STRING`), store.
fn rpm_header(tags: &[(u32, &str)]) -> Vec<u8> {
    let mut index = Vec::new();
    let mut store = Vec::new();
    for (tag, value) in tags {
        index.extend_from_slice(&tag.to_be_bytes());
        index.extend_from_slice(&6u32.to_be_bytes()); // RPM_STRING_TYPE
        index.extend_from_slice(&(store.len() as u32).to_be_bytes());
        index.extend_from_slice(&1u32.to_be_bytes());
        store.extend_from_slice(value.as_bytes());
        store.push(0);
    }
    let mut out = vec![0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
    out.extend_from_slice(&(tags.len() as u32).to_be_bytes());
    out.extend_from_slice(&(store.len() as u32).to_be_bytes());
    out.extend(index);
    out.extend(store);
    out
}

/// A `cloudstack-management-<version>-1.noarch.rpm` carrying the lab's scripts for `version`
/// (headers with the package's name, version, release and payload format only; no signature).
///
/// # Errors
/// IO errors of the archive writers; no path to `version`.
pub fn management_rpm(version: &CsVersion, c: PackageCompression) -> crate::Result<Vec<u8>> {
    let scripts = lab_scripts(version)?;
    let io = |e| crate::LabError::io("build the lab's management rpm", e);
    let jar = management_jar(version, &scripts).map_err(io)?;
    let mut cpio = Vec::new();
    let files = [(format!("./{}", jar_path(version)), jar)];
    for (name, data) in &files {
        let w = cpio::NewcBuilder::new(name)
            .mode(0o100644)
            .nlink(1)
            .write(&mut cpio, data.len() as u32);
        let mut w = w;
        w.write_all(data).map_err(io)?;
        w.finish().map_err(io)?;
    }
    cpio::newc::trailer(&mut cpio).map_err(io)?;
    let mut out = Vec::new();
    // The lead: magic, version 3.0, binary, arch 0, name, os 1, signature type 5.
    out.extend_from_slice(&[0xed, 0xab, 0xee, 0xdb, 3, 0, 0, 0, 0, 0]);
    let mut name = format!("cloudstack-management-{version}-1").into_bytes();
    name.resize(66, 0);
    out.extend(name);
    out.extend_from_slice(&[0, 1, 0, 5]);
    out.extend_from_slice(&[0; 16]);
    let sig = rpm_header(&[]);
    out.extend_from_slice(&sig);
    out.resize(out.len().div_ceil(8) * 8, 0);
    let compressor = match c {
        PackageCompression::Gzip => "gzip",
        PackageCompression::Xz => "xz",
        PackageCompression::Zstd => "zstd",
    };
    let v = version.to_string();
    out.extend(rpm_header(&[
        (1000, "cloudstack-management"),
        (1001, &v),
        (1002, "1"),
        (1124, "cpio"),
        (1125, compressor),
    ]));
    out.extend(compress(&cpio, c).map_err(io)?);
    Ok(out)
}
