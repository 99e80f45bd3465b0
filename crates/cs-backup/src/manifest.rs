//! `manifest.json`: what a backup holds, written last so that its presence means "complete".

use std::collections::BTreeMap;
use std::path::Path;

use cs_core::{Host, HostExt};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The name of the per-table checksum algorithm new backups use (see the crate docs,
/// "Checksums"). Backups made with the earlier `rowsum-sha256-v1` and `rowsum-xxh64-v2` still
/// verify and restore.
pub const CHECKSUM_ALGORITHM: &str = "rowsum-xxh3-v3";

/// How the dump files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Layout {
    /// One file for everything (the `mysqldump` engine).
    SingleFile,
    /// A file per schema, per table part, per schema's views and per schema's routines (the
    /// native engine); `cat *.sql` in name order restores.
    PerTable,
}

/// The description of a complete backup: written last, atomically, into `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The program that wrote it (`cs-backup 0.1.0`).
    pub tool: String,
    /// The engine (`native`, `mysqldump`).
    pub engine: String,
    /// The engine's options (threads, compression, flags, snapshot method).
    pub options: serde_json::Value,
    /// When the backup started (RFC 3339, UTC).
    pub started: String,
    /// When the manifest was written (RFC 3339, UTC).
    pub finished: String,
    /// The server the data came from.
    pub server: ServerInfo,
    /// How the files are laid out.
    pub layout: Layout,
    /// The per-table checksum algorithm ([`CHECKSUM_ALGORITHM`]).
    pub checksum: String,
    /// The schemas, in the order given.
    pub schemas: Vec<SchemaEntry>,
    /// Every file of the backup except the manifest, relative to the backup directory.
    pub files: Vec<FileEntry>,
    /// The users and grants file (relative path), when they could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants_file: Option<String>,
    /// Notes worth knowing (grants unreadable, snapshot fallback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The database server a backup came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `SELECT VERSION()` (`10.11.6-MariaDB-0+deb12u1`).
    pub version: String,
    /// `mariadb` or `mysql`.
    pub vendor: String,
    /// Binary log position at the snapshot (`file:pos`), when the server logs and it was
    /// readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<String>,
}

/// One schema in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaEntry {
    /// The schema's name.
    pub name: String,
    /// Default character set.
    pub charset: String,
    /// Default collation.
    pub collation: String,
    /// The newest row of the schema's CloudStack `version` table, column by column as text,
    /// when the schema has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudstack_version: Option<BTreeMap<String, Option<String>>>,
    /// Base tables, by name.
    pub tables: Vec<TableEntry>,
    /// Views, by name.
    pub views: Vec<String>,
    /// Stored procedures and functions.
    pub routines: Vec<RoutineEntry>,
    /// Triggers.
    pub triggers: Vec<TriggerEntry>,
    /// Events.
    pub events: Vec<String>,
    /// Files for this schema in load order (per-table layout only): the schema file first.
    #[serde(default, skip_serializing_if = "SchemaFiles::is_empty")]
    pub files: SchemaFiles,
}

impl SchemaEntry {
    /// The `version` column of [`SchemaEntry::cloudstack_version`] (`4.19.1.0`).
    pub fn cloudstack_version(&self) -> Option<&str> {
        self.cloudstack_version
            .as_ref()
            .and_then(|r| r.get("version"))
            .and_then(|v| v.as_deref())
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// The files of one schema in a per-table backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaFiles {
    /// `CREATE DATABASE` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Views file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<String>,
    /// Routines, triggers and events file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routines: Option<String>,
}

impl SchemaFiles {
    fn is_empty(&self) -> bool {
        self.schema.is_none() && self.views.is_none() && self.routines.is_none()
    }
}

/// One base table in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The table's name.
    pub name: String,
    /// Rows dumped.
    pub rows: u64,
    /// The table's checksum ([`CHECKSUM_ALGORITHM`]), over its stored (non-generated) columns.
    pub checksum: String,
    /// Files holding it, in load order: the DDL part first, then data parts (per-table layout
    /// only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// A stored procedure or function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoutineEntry {
    /// `PROCEDURE` or `FUNCTION`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// A trigger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TriggerEntry {
    /// Its name.
    pub name: String,
    /// The table it fires on.
    pub table: String,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the backup directory.
    pub path: String,
    /// Size in bytes, as stored (after compression).
    pub size: u64,
    /// SHA-256 of the stored bytes, lower-case hex.
    pub sha256: String,
}

impl Manifest {
    /// Reads `manifest.json` from a local backup directory.
    ///
    /// # Errors
    /// [`Error::Incomplete`] when there is no manifest; [`Error::BadManifest`] when it cannot be
    /// parsed or has an unknown format; [`Error::Io`] for other read errors.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::parse(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if dir.is_dir() {
                    Err(Error::Incomplete {
                        dir: dir.to_path_buf(),
                    })
                } else {
                    Err(Error::io("read", dir, e))
                }
            }
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Reads `manifest.json` from a backup directory on a host.
    ///
    /// # Errors
    /// As [`Manifest::load`]; host errors as [`Error::Host`].
    pub async fn load_from(host: &dyn Host, dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        match host.read_opt(&path).await {
            Ok(Some(bytes)) => Manifest::parse(&path, &bytes),
            Ok(None) => match host.exists(dir).await {
                Ok(true) => Err(Error::Incomplete {
                    dir: dir.to_path_buf(),
                }),
                Ok(false) => Err(Error::host(
                    format!("read {}", dir.display()),
                    cs_core::HostError::NotFound {
                        host: host.name().to_string(),
                        path: dir.to_path_buf(),
                    },
                )),
                Err(e) => Err(Error::host(format!("read {}", dir.display()), e)),
            },
            Err(e) => Err(Error::host(format!("read {}", path.display()), e)),
        }
    }

    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::BadManifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if m.format != FORMAT_VERSION {
            return Err(Error::BadManifest {
                path: path.to_path_buf(),
                reason: format!(
                    "format {} is not the supported format {FORMAT_VERSION}",
                    m.format
                ),
            });
        }
        if crate::checksum::Algorithm::from_name(&m.checksum).is_none() {
            return Err(Error::BadManifest {
                path: path.to_path_buf(),
                reason: format!("unknown checksum algorithm `{}`", m.checksum),
            });
        }
        m.check_fields()
            .map_err(|(field, reason)| Error::UnsafeManifest {
                path: path.to_path_buf(),
                field,
                reason,
            })?;
        Ok(m)
    }

    /// Checks every field a restore or verify uses to name a file or an SQL identifier: each
    /// path relative, normalised and inside the directory, and (except `files` itself) listed
    /// in `files`, so that its SHA-256 is checked before it is read; schema and table names,
    /// charsets and collations within their grammars; no system schema. Returns the field and
    /// what is wrong.
    fn check_fields(&self) -> std::result::Result<(), (String, String)> {
        let listed: std::collections::BTreeSet<&str> =
            self.files.iter().map(|f| f.path.as_str()).collect();
        for (i, f) in self.files.iter().enumerate() {
            if !is_safe_relative(&f.path) {
                return Err((
                    format!("files[{i}].path"),
                    format!("= `{}` leaves the backup directory", f.path),
                ));
            }
        }
        let named = |field: String, p: &str| -> std::result::Result<(), (String, String)> {
            if !is_safe_relative(p) {
                return Err((field, format!("= `{p}` leaves the backup directory")));
            }
            if !listed.contains(p) {
                return Err((
                    field,
                    format!("= `{p}` is not listed (with its SHA-256) in `files`"),
                ));
            }
            Ok(())
        };
        if let Some(g) = &self.grants_file {
            named("grants_file".into(), g)?;
        }
        for (i, s) in self.schemas.iter().enumerate() {
            let at = format!("schemas[{i}]");
            check_name(&s.name).map_err(|r| (format!("{at}.name"), r))?;
            if is_system_schema(&s.name) {
                return Err((
                    format!("{at}.name"),
                    format!("= `{}` is a system schema, never restored", s.name),
                ));
            }
            check_charset_name(&s.charset, 32).map_err(|r| (format!("{at}.charset"), r))?;
            check_charset_name(&s.collation, 64).map_err(|r| (format!("{at}.collation"), r))?;
            for (kind, f) in [
                ("schema", &s.files.schema),
                ("views", &s.files.views),
                ("routines", &s.files.routines),
            ] {
                if let Some(f) = f {
                    named(format!("{at}.files.{kind}"), f)?;
                }
            }
            for (j, t) in s.tables.iter().enumerate() {
                check_name(&t.name).map_err(|r| (format!("{at}.tables[{j}].name"), r))?;
                for (k, f) in t.files.iter().enumerate() {
                    named(format!("{at}.tables[{j}].files[{k}]"), f)?;
                }
            }
        }
        Ok(())
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The schema called `name`.
    pub fn schema(&self, name: &str) -> Option<&SchemaEntry> {
        self.schemas.iter().find(|s| s.name == name)
    }

    /// Total rows over every table.
    pub fn total_rows(&self) -> u64 {
        self.schemas
            .iter()
            .flat_map(|s| &s.tables)
            .map(|t| t.rows)
            .sum()
    }

    /// Total stored bytes over every file.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The entry for a file, by relative path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// A relative path with no `..`, no absolute part and no empty component.
pub(crate) fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Schemas of the server itself, which a backup never restores into.
pub(crate) fn is_system_schema(name: &str) -> bool {
    ["mysql", "information_schema", "performance_schema", "sys"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
}

/// A schema or table name: 1 to 64 characters, no control character, not ending in a space
/// (the server's own limits), so that [`crate::sql::ident`] can quote it.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 64 {
        return Err(format!("has {n} characters; a name has 1 to 64"));
    }
    if name.chars().any(char::is_control) || name.ends_with(' ') {
        return Err(format!(
            "= {name:?} holds a control character or ends in a space"
        ));
    }
    Ok(())
}

/// A character set or collation name: ASCII letters, digits and `_`, at most `max` long
/// (`utf8mb4`, `utf8mb4_general_ci`, `utf8mb4_uca1400_ai_ci`).
fn check_charset_name(name: &str, max: usize) -> std::result::Result<(), String> {
    if name.is_empty()
        || name.len() > max
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "= {name:?} is not a character set or collation name (letters, digits and `_`, \
             at most {max})"
        ));
    }
    Ok(())
}

/// Now, as RFC 3339 UTC.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A compact UTC timestamp for schema names (`20250101T120000`).
pub(crate) fn stamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        for (p, ok) in [
            ("a.sql", true),
            ("grants/users.sql", true),
            ("../x", false),
            ("/etc/passwd", false),
            ("a//b", false),
            ("", false),
            ("a/./b", false),
        ] {
            assert_eq!(is_safe_relative(p), ok, "{p}");
        }
    }

    #[test]
    fn the_written_algorithm_is_the_current_one() {
        let current = crate::checksum::Algorithm::CURRENT;
        assert_eq!(CHECKSUM_ALGORITHM, current.name());
    }

    #[test]
    fn stamp_is_schema_name_safe() {
        let s = stamp();
        assert_eq!(s.len(), 15, "{s}");
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
