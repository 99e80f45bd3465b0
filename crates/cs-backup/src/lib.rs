//! Consistent, verified backup and restore of CloudStack's `cloud` and `cloud_usage`
//! databases, and config-file bundles of CloudStack nodes.
//!
//! Start from [`backup`] with an [`Engine`] — [`NativeEngine`] (parallel connections sharing
//! one snapshot) or [`MysqldumpEngine`] (`mariadb-dump`/`mysqldump` through a
//! [`cs_core::Host`]) — then [`verify`] (files against the manifest), [`verify_deep`]
//! (restore into scratch schemas and compare), and [`restore`] (scratch, verify, swap). The
//! [`BackupCompleteCheck`] is the `db.backup.complete` pre-flight check; [`bundle_config`]
//! and [`restore_config`] archive and put back a node's configuration directories.
//!
//! # What a backup is
//!
//! A directory (mode `0700`) of files (mode `0600`) that the stock `mysql`/`mariadb` client
//! restores with nothing else, plus `manifest.json`, written **last** and atomically: server
//! version, each schema's CloudStack `version` row, per-table row counts and checksums, the
//! inventory of routines, triggers, events and views, SHA-256 and size of every file, start and
//! end time, engine and options. A directory without a manifest is never taken for a backup:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! // An interrupted backup: dump files, but no manifest.
//! std::fs::write(dir.path().join("1-cloud.sql"), "CREATE DATABASE cloud;\n").unwrap();
//! let err = cs_backup::verify(dir.path()).await.unwrap_err();
//! assert!(err.is_incomplete());
//! assert!(err.to_string().contains("manifest.json is missing"));
//! # });
//! ```
//!
//! Native backups (per-table layout) restore with
//! `cat DIR/*.sql | mariadb --max-allowed-packet=1G` (or `zstdcat DIR/*.sql.zst | …`): the
//! file names sort into load order (see [`NativeEngine`]). `mysqldump` backups are one
//! `dump.sql[.zst]`. Account definitions and grants of the `cloud` user are recorded apart, in
//! `grants/users.sql`, and are never applied by a restore.
//!
//! # Checksums
//!
//! Per table, order-independent and computed identically from live rows and from dump files
//! while they stream ([`CHECKSUM_ALGORITHM`], `rowsum-xxh3-v3`): each row's stored
//! (non-generated) columns — for a system-versioned table every row of its history with its
//! `row_start` and `row_end`, for a sequence its one state row — as the bytes the server's text protocol gives over a `utf8mb4`
//! connection in time zone `+00:00`, are encoded as the protocol's row packet carries them
//! (`0xFB` for NULL, else the length as a length-encoded integer in its shortest form, then
//! the bytes); the row hash is XXH3-64 (seed 0) of that; the table checksum is the sum modulo
//! 2^64 of the row hashes, as 16 hex digits. Parallel chunks combine by addition; tables
//! without a primary key need no ordering. `CHECKSUM TABLE` is not used: it depends on the
//! storage format. The checksum guards against accidental differences (a lost, truncated or
//! mangled row), not against deliberate tampering; files are pinned by their SHA-256. Backups
//! whose manifest names an earlier algorithm are verified with it: `rowsum-xxh64-v2` (values
//! encoded as `0xFF` for NULL or `0x01`, an 8-byte little-endian length and the bytes; XXH64
//! row hashes summed modulo 2^64) and `rowsum-sha256-v1` (the same encoding, SHA-256 row
//! hashes whose first 16 bytes are summed modulo 2^128).
//!
//! # Restore
//!
//! [`restore`] verifies the files, loads into scratch schemas `<schema>__restore_<ts>`
//! (per-table backups on parallel connections, through MariaDB's bulk `INSERT` command or
//! else `LOAD DATA LOCAL INFILE` where the server allows it, secondary keys added once the
//! rows are in), compares every table's rows and checksum (read back from the server) and the
//! object inventory with the manifest, and only then swaps all tables of all schemas in with
//! one `RENAME TABLE`, parking the replaced ones in `<schema>__parked_<ts>` until
//! [`drop_parked`]. A failure before the swap leaves the live schemas untouched. The
//! documented drop-and-reload is [`RestoreMode::DropAndReload`].
//!
//! # Connections
//!
//! Connections that move rows (the native dump's workers, the restore's loads and checksum
//! read-back) use a small client of the crate's own for the MySQL/MariaDB wire protocol: it
//! hands out the values of a text result set as slices of one buffer instead of one allocation
//! per value, sends restored rows to MariaDB as `COM_STMT_BULK_EXECUTE` commands of a few MiB
//! (values as the bytes to store, so the server parses no text), and sends `LOAD DATA LOCAL`
//! files in 256 KiB packets instead of the `mysql` crate's 4 KiB ones. It speaks plain TCP,
//! `mysql_native_password` and the fast path of `caching_sha2_password`; when the server asks
//! for anything else during the login (another plugin, a full `caching_sha2_password`
//! exchange), the connection goes through the `mysql` crate instead, which every other
//! connection uses. Both give the same bytes (tested).
//!
//! Blocking database work runs on tokio's blocking pool or on dedicated threads, never on async
//! workers. Progress (rows and bytes of an estimated total) goes to a [`cs_core::Progress`].
//!
//! # Types from cs-core
//!
//! The [`cs_core`] types this crate's API takes are re-exported here ([`DbUrl`], [`Secret`],
//! [`Progress`], [`NoProgress`], [`Host`], [`LocalHost`], …), so a program that only backs up
//! and restores needs no dependency on `cs-core` of its own. With the `ssh` feature,
//! `SshHost` too (for a [`MysqldumpEngine`] or [`verify_on`] on a remote node).

mod backup;
mod bundle;
mod check;
mod checksum;
mod db;
mod error;
mod files;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod leftovers;
mod manifest;
mod mysqldump;
mod native;
mod restore;
mod sql;
mod verify;
mod wire;

pub use backup::{BackupOptions, Compression, DumpJob, Dumped, Engine, backup};
pub use bundle::{
    BundleEntry, CLOUDSTACK_CONFIG_PATHS, ConfigBundle, bundle_config, restore_config,
};
pub use check::BackupCompleteCheck;
pub use error::{Error, Problem, Result};
pub use leftovers::{
    LeftoverKind, LeftoverSchema, drop_leftover_schemas, leftover_schemas, parse_leftover_name,
};
pub use manifest::{
    CHECKSUM_ALGORITHM, FORMAT_VERSION, FileEntry, Layout, MANIFEST_FILE, Manifest, RoutineEntry,
    SchemaEntry, SchemaFiles, ServerInfo, TableEntry, TriggerEntry,
};
pub use mysqldump::{MYSQLDUMP_FLAGS, MysqldumpEngine};
pub use native::NativeEngine;
pub use restore::{
    RestoreMode, RestoreOptions, RestoreReport, RestoredSchema, Session, drop_parked, restore,
    sessions_using,
};
pub use verify::{verify, verify_deep, verify_on};

#[cfg(feature = "ssh")]
pub use cs_core::SshHost;
pub use cs_core::{
    Check, DbUrl, DbUrlError, Deadlines, Finding, Host, HostError, LocalHost, NoProgress, Progress,
    ProgressUpdate, Secret, Severity, Unit,
};
