//! The `db.backup.complete` check.

use std::collections::BTreeSet;
use std::path::PathBuf;

use async_trait::async_trait;
use cs_core::{Check, CheckError, DbUrl, Finding, Severity};

use crate::backup::blocking;
use crate::{Error, db};

/// `db.backup.complete` (FAIL): the backup directory has a manifest, its files verify, and its
/// routine inventory equals the live schemas' (a dump without routines lost CloudStack's
/// procedures in apache/cloudstack#8546).
#[derive(Debug, Clone)]
pub struct BackupCompleteCheck {
    /// The local backup directory.
    pub dir: PathBuf,
    /// The live database.
    pub url: DbUrl,
    /// Whether the backup's routines are compared with the live schemas' (before the upgrade;
    /// after it the live routines are the target release's).
    pub compare_live: bool,
}

impl BackupCompleteCheck {
    /// The check's id.
    pub const ID: &'static str = "db.backup.complete";

    /// A check of the backup in `dir` against the database at `url`.
    pub fn new(dir: impl Into<PathBuf>, url: DbUrl) -> Self {
        BackupCompleteCheck {
            dir: dir.into(),
            url,
            compare_live: true,
        }
    }

    /// The same check without the comparison of routines with the live schemas: only that the
    /// backup has its manifest and its files verify (after the upgrade).
    #[must_use]
    pub fn without_live_comparison(mut self) -> Self {
        self.compare_live = false;
        self
    }
}

#[async_trait]
impl<C: ?Sized + Sync> Check<C> for BackupCompleteCheck {
    fn id(&self) -> &str {
        Self::ID
    }

    async fn run(&self, _cx: &C) -> Result<Vec<Finding>, CheckError> {
        let subject = self.dir.display().to_string();
        let fail = |message: String, remedy: &str| {
            vec![Finding::new(Self::ID, Severity::Fail, &subject, message).with_remedy(remedy)]
        };
        let manifest = match crate::verify(&self.dir).await {
            Ok(m) => m,
            Err(e @ (Error::Incomplete { .. } | Error::BadManifest { .. })) => {
                return Ok(fail(
                    cs_core::error_chain(&e),
                    "take the backup again and let it finish; never use a directory without a manifest",
                ));
            }
            Err(e @ Error::Verify { .. }) => {
                return Ok(fail(
                    cs_core::error_chain(&e),
                    "the backup is damaged: take it again",
                ));
            }
            Err(e) => {
                return Err(CheckError::with_source("cannot verify the backup", e));
            }
        };
        if !self.compare_live {
            return Ok(manifest
                .schemas
                .iter()
                .map(|schema| {
                    Finding::pass(
                        Self::ID,
                        format!("{subject} ({})", schema.name),
                        format!(
                            "backup verified: {} tables, {} rows, {} routines",
                            schema.tables.len(),
                            schema.tables.iter().map(|t| t.rows).sum::<u64>(),
                            schema.routines.len()
                        ),
                    )
                })
                .collect());
        }
        let url = self.url.clone();
        let names: Vec<String> = manifest.schemas.iter().map(|s| s.name.clone()).collect();
        let live = blocking(move || {
            let mut db = db::connect_short(&url)?;
            let mut out = Vec::new();
            for n in names {
                out.push(db::catalog(&mut db, &n)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| CheckError::with_source("cannot read the live routines", e))?;
        let mut findings = Vec::new();
        for (schema, cat) in manifest.schemas.iter().zip(live) {
            let fmt = |r: &crate::RoutineEntry| format!("{} {}", r.kind, r.name);
            let want: BTreeSet<String> = cat.routines.iter().map(fmt).collect();
            let have: BTreeSet<String> = schema.routines.iter().map(fmt).collect();
            let missing: Vec<&String> = want.difference(&have).collect();
            let extra: Vec<&String> = have.difference(&want).collect();
            let subj = format!("{subject} ({})", schema.name);
            if missing.is_empty() && extra.is_empty() {
                findings.push(Finding::pass(
                    Self::ID,
                    subj,
                    format!(
                        "backup verified: {} tables, {} rows, {} routines equal to the live schema",
                        schema.tables.len(),
                        schema.tables.iter().map(|t| t.rows).sum::<u64>(),
                        schema.routines.len()
                    ),
                ));
            } else {
                let mut msg = String::new();
                if !missing.is_empty() {
                    msg.push_str(&format!(
                        "routines in the live schema but not in the backup: {}",
                        join(&missing)
                    ));
                }
                if !extra.is_empty() {
                    if !msg.is_empty() {
                        msg.push_str("; ");
                    }
                    msg.push_str(&format!(
                        "routines in the backup but not live: {}",
                        join(&extra)
                    ));
                }
                findings.push(
                    Finding::new(Self::ID, Severity::Fail, subj, msg).with_remedy(
                        "take the backup again (with routines) right before the upgrade",
                    ),
                );
            }
        }
        Ok(findings)
    }
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}
