//! Watching a management server migrate the schema: the `version` table and
//! `management-server.log`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cs_core::{CsVersion, Host, Progress, ProgressUpdate, Unit};
use serde::Serialize;

use crate::state::{VersionRow, connect, read_versions};
use crate::{DbTarget, Error, Result};

/// Whether a `management-server.log` line says the migration failed (cs-core's log signatures
/// that fail a migration: `Unable to upgrade the database`, a newer database, …).
fn is_failure_line(line: &str) -> bool {
    cs_core::SIGNATURES.iter().any(|s| {
        s.fails_migration && s.log == cs_core::LogKind::ManagementServer && line.contains(s.needle)
    })
}

/// How a watch ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WatchOutcome {
    /// The target's version row is `Complete`.
    Complete {
        /// The target.
        version: CsVersion,
        /// Version rows written during the watch, in order.
        rows: Vec<VersionRow>,
    },
    /// The log reported a failure.
    Failed {
        /// The log line, as written.
        line: String,
        /// Version rows written during the watch.
        rows: Vec<VersionRow>,
    },
    /// The deadline passed first.
    TimedOut {
        /// Version rows written during the watch.
        rows: Vec<VersionRow>,
        /// The last database error, when the database could not be read at the end.
        last_error: Option<String>,
    },
}

/// Watches a schema migration: polls the `version` table and tails the management server's
/// log through a [`Host`]. Rows and log lines that exist when the watch starts are history
/// and are ignored.
#[derive(Debug, Clone)]
pub struct MigrationWatch {
    /// The schemas.
    pub db: DbTarget,
    /// The version whose `Complete` row ends the watch.
    pub target: CsVersion,
    /// The management server.
    pub host: Arc<dyn Host>,
    /// Its log (`/var/log/cloudstack/management/management-server.log` by default).
    pub log: PathBuf,
    /// How often to poll (2 s by default).
    pub poll: Duration,
    /// How long to wait in total (1 h by default: big `vm_stats` tables migrate slowly).
    pub deadline: Duration,
    /// How many steps the migration should write, for progress totals (`None`: unknown).
    pub expected_steps: Option<u64>,
}

impl MigrationWatch {
    /// A watch with the default log path, poll interval and deadline.
    pub fn new(db: DbTarget, target: CsVersion, host: Arc<dyn Host>) -> Self {
        MigrationWatch {
            db,
            target,
            host,
            log: cs_core::Layout::default()
                .management_log_dir
                .join("management-server.log"),
            poll: Duration::from_secs(2),
            deadline: Duration::from_secs(3600),
            expected_steps: None,
        }
    }

    /// Watches until the target row is `Complete`, a failure line appears, or the deadline.
    /// Reports each new version row to `progress` (task `schema migration`, unit steps).
    ///
    /// # Errors
    /// [`Error::Log`] when the log cannot be read for a reason other than not existing yet.
    /// Database errors are retried until the deadline (the server may be restarting).
    pub async fn run(&self, progress: &dyn Progress) -> Result<WatchOutcome> {
        let start = tokio::time::Instant::now();
        let task = "schema migration";
        let mut offset = self.log_size().await?.unwrap_or(0);
        let mut pending = String::new();
        let mut baseline: Option<u64> = None;
        let mut rows: Vec<VersionRow> = Vec::new();
        let mut last_error: Option<String>;
        loop {
            // Log first: a failure line wins over a row that says Complete.
            if let Some(size) = self.log_size().await? {
                if size < offset {
                    offset = 0; // Rotated or truncated.
                    pending.clear();
                }
                if size > offset {
                    let data = self
                        .host
                        .read(&self.log)
                        .await
                        .map_err(|e| self.log_err(e))?;
                    let from = usize::try_from(offset)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    pending.push_str(&String::from_utf8_lossy(&data[from..]));
                    offset = data.len() as u64;
                    let complete_upto = pending.rfind('\n').map_or(0, |i| i + 1);
                    let lines: String = pending.drain(..complete_upto).collect();
                    if let Some(line) = lines.lines().find(|l| is_failure_line(l)) {
                        progress.update(
                            ProgressUpdate::new(
                                task,
                                done(&rows),
                                self.expected_steps,
                                Unit::Steps,
                            )
                            .message(line.trim().to_string())
                            .finished(),
                        );
                        return Ok(WatchOutcome::Failed {
                            line: line.trim_end().to_string(),
                            rows,
                        });
                    }
                }
            }
            match self.read_rows().await {
                Ok(all) => {
                    last_error = None;
                    let base = *baseline.get_or_insert_with(|| all.last().map_or(0, |r| r.id));
                    let new: Vec<VersionRow> = all.into_iter().filter(|r| r.id > base).collect();
                    for r in &new {
                        if !rows.contains(r) {
                            progress.update(
                                ProgressUpdate::new(
                                    task,
                                    done(&new),
                                    self.expected_steps,
                                    Unit::Steps,
                                )
                                .message(format!("{} {}", r.version, r.step)),
                            );
                        }
                    }
                    rows = new;
                    if rows
                        .iter()
                        .any(|r| r.is_complete() && r.parsed() == Some(self.target))
                    {
                        progress.update(
                            ProgressUpdate::new(
                                task,
                                done(&rows),
                                self.expected_steps,
                                Unit::Steps,
                            )
                            .message(format!("{} Complete", self.target))
                            .finished(),
                        );
                        return Ok(WatchOutcome::Complete {
                            version: self.target,
                            rows,
                        });
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %cs_core::error_chain(&e), "version table not readable yet");
                    last_error = Some(cs_core::error_chain(&e));
                }
            }
            if start.elapsed() >= self.deadline {
                progress.update(
                    ProgressUpdate::new(task, done(&rows), self.expected_steps, Unit::Steps)
                        .message("deadline passed")
                        .finished(),
                );
                return Ok(WatchOutcome::TimedOut { rows, last_error });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn log_size(&self) -> Result<Option<u64>> {
        match self.host.stat(&self.log).await {
            Ok(m) => Ok(Some(m.size)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.log_err(e)),
        }
    }

    fn log_err(&self, source: cs_core::HostError) -> Error {
        Error::Log {
            host: self.host.name().to_string(),
            path: self.log.display().to_string(),
            source: Box::new(source),
        }
    }

    async fn read_rows(&self) -> Result<Vec<VersionRow>> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = connect(&db.url)?;
            read_versions(&mut conn, &db.cloud_schema)
        })
        .await
        .map_err(|e| Error::Task(Box::new(e)))?
    }
}

fn done(rows: &[VersionRow]) -> u64 {
    rows.iter().filter(|r| r.is_complete()).count() as u64
}
