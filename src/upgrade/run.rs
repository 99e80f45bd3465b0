//! The entry points of an upgrade: [`plan`] (a dry run behind the pre-flight gate), [`apply`]
//! (resuming from the journal, sealed when done) and [`rollback`] (which past the point of no
//! return first says what it would discard).

use std::sync::Arc;

use cs_core::{CsVersion, NoProgress, Progress, RunReport, Runner, StepState, error_chain};
use serde::{Deserialize, Serialize};

use super::{
    JOURNAL, RunRecord, UpgradeContext, UpgradeError, UpgradeErrorKind, describe_failures,
    loss_summary, run_dir, steps, utc_now, write_json,
};
use crate::config::UpgradeConfig;

/// Written when a run finished: the upgrade is done and is not run again.
const SEAL: &str = "sealed.json";

/// The step after which the cloud serves tenants again: the first hop's migration ends with
/// the first management server serving the API at the new version.
pub fn point_of_no_return(record: &RunRecord) -> Option<String> {
    record.hops.first().map(|h| format!("migrate@{h}"))
}

fn runner(cx: &UpgradeContext) -> Runner<UpgradeContext> {
    let r = Runner::new(cx.run_dir.join(JOURNAL), steps(&cx.record));
    match point_of_no_return(&cx.record) {
        Some(p) => r.with_point_of_no_return(p),
        None => r,
    }
}

/// When the cloud reopened at the new version in the run to `config.target` (`YYYY-MM-DD
/// hh:mm:ss` UTC): the point of no return, once passed.
pub fn reopened_at(config: &UpgradeConfig) -> Option<String> {
    std::fs::read_to_string(run_dir(config).join("reopened"))
        .ok()
        .map(|t| t.trim().to_string())
}

/// A finished upgrade, as its seal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The target it reached.
    pub target: CsVersion,
    /// When it finished (UTC).
    pub finished_at: String,
}

/// The seal of a finished upgrade to `config.target`, when there is one: running the upgrade
/// again does nothing, whatever the cloud did since.
pub fn sealed(config: &UpgradeConfig) -> Option<Seal> {
    std::fs::read(run_dir(config).join(SEAL))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// What [`plan`] found: the hops with their schema steps, the pre-flight gate, and the
/// runner's dry run.
#[derive(Debug, Clone)]
pub struct UpgradePlan {
    /// What the run starts from.
    pub record: RunRecord,
    /// The schema steps of each hop (`class (from -> to)`).
    pub schema_steps: Vec<(CsVersion, Vec<String>)>,
    /// Every step's state.
    pub plan: cs_core::Plan,
    /// The pre-flight gate's report, when the run has not started (it runs before the first
    /// step that changes anything).
    pub gate: Option<cs_core::Report>,
    /// The step after which a failure no longer rolls back.
    pub point_of_no_return: Option<String>,
    /// The seal, when the upgrade is done.
    pub sealed: Option<Seal>,
}

impl UpgradePlan {
    /// A text rendering for people.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "upgrade {} -> {} in {} hop(s)\n",
            self.record.from,
            self.record.target,
            self.record.hops.len()
        );
        if let Some(seal) = &self.sealed {
            s.push_str(&format!(
                "  already done: reached {} at {}\n",
                seal.target, seal.finished_at
            ));
        }
        for (hop, steps) in &self.schema_steps {
            s.push_str(&format!("  hop to {hop}: {}\n", steps.join(", ")));
        }
        s.push_str(&format!(
            "  KVM hosts: {}\n",
            self.record
                .hosts
                .iter()
                .map(|h| format!("{} ({})", h.name, h.cluster))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        // Aligned on the longest step id (at least 22 columns, the usual ids' width).
        let w = self
            .plan
            .steps
            .iter()
            .map(|p| p.id.chars().count())
            .max()
            .unwrap_or(0)
            .max(22);
        for p in &self.plan.steps {
            let state = match (&p.state, &p.error) {
                (_, Some(e)) => format!("check failed: {e}"),
                (Some(StepState::Done), _) => "done".into(),
                (Some(StepState::Pending), _) => "would apply".into(),
                (Some(StepState::Partial(why)), _) => format!("would resume: {why}"),
                (Some(other), _) => format!("would apply ({other:?})"),
                (None, None) => "?".into(),
            };
            let point = if self.point_of_no_return.as_deref() == Some(p.id.as_str()) {
                "   <- point of no return: the cloud serves tenants again"
            } else {
                ""
            };
            s.push_str(&format!("  {:<w$} {state}{point}\n", p.id));
        }
        if let Some(gate) = &self.gate {
            let fails = gate
                .findings
                .iter()
                .filter(|f| f.severity == cs_core::Severity::Fail)
                .count();
            s.push_str(&format!(
                "pre-flight gate: {}\n",
                if fails == 0 && gate.broken.is_empty() {
                    "passes".to_string()
                } else {
                    format!("would refuse: {}", describe_failures(gate))
                }
            ));
        }
        s
    }
}

/// What a run may be told besides its configuration.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Check ids the pre-flight gate skips, besides `policy.skip_checks`.
    pub skip_checks: Vec<String>,
}

impl ApplyOptions {
    /// Options skipping these check ids in the gate.
    pub fn skipping(ids: &[&str]) -> Self {
        ApplyOptions {
            skip_checks: ids.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What a rollback may be told.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RollbackOptions {
    /// After the point of no return: the time (`YYYY-MM-DD hh:mm:ss` UTC, or RFC 3339) since
    /// which the operator accepts to lose what the cloud wrote. It must not be later than the
    /// backup the rollback restores.
    pub discard_changes_since: Option<String>,
}

/// The skip list: `policy.skip_checks` and `extra`, every id one some check has.
fn skips(config: &UpgradeConfig, extra: &[String]) -> Result<Vec<String>, UpgradeError> {
    let all: Vec<String> = config
        .policy
        .skip_checks
        .iter()
        .chain(extra)
        .cloned()
        .collect();
    match crate::catalog::check_skips(&all) {
        Ok(()) => Ok(all),
        Err(unknown) => Err(UpgradeError::new(UpgradeErrorKind::UnknownCheck(
            unknown
                .0
                .iter()
                .map(|(id, near)| match near {
                    Some(n) => format!("{id} (did you mean {n}?)"),
                    None => id.clone(),
                })
                .collect(),
        ))),
    }
}

/// The pre-flight report the gate decides on.
async fn gate_report(config: &UpgradeConfig, skip: &[String]) -> cs_core::Report {
    let refs: Vec<&str> = skip.iter().map(String::as_str).collect();
    crate::preflight::preflight(config, crate::ms_checks::Phase::Pre, &refs).await
}

fn gate_passes(report: &cs_core::Report) -> bool {
    report.broken.is_empty()
        && !report
            .findings
            .iter()
            .any(|f| f.severity == cs_core::Severity::Fail)
}

/// Dry run: what an upgrade would do — the hops and their schema steps, the KVM hosts, every
/// step's state, the point of no return, and (before the run starts) the pre-flight gate's
/// findings. Changes nothing.
///
/// # Errors
/// [`UpgradeError`] when the context cannot be built, a skip id is unknown, or the journal
/// belongs to another plan.
pub async fn plan(config: &UpgradeConfig) -> Result<UpgradePlan, UpgradeError> {
    plan_with(config, &ApplyOptions::default()).await
}

/// [`plan`] with the options a run would get.
///
/// # Errors
/// As [`plan`].
pub async fn plan_with(
    config: &UpgradeConfig,
    options: &ApplyOptions,
) -> Result<UpgradePlan, UpgradeError> {
    let skip = skips(config, &options.skip_checks)?;
    let cx = UpgradeContext::build(config, Arc::new(NoProgress)).await?;
    let mut schema_steps = Vec::new();
    let mut from = cx.record.from;
    for hop in &cx.record.hops {
        let steps = cs_schema::path(&from, hop).map_err(|e| UpgradeError::plan(e.to_string()))?;
        schema_steps.push((*hop, steps.iter().map(ToString::to_string).collect()));
        from = *hop;
    }
    let runner = runner(&cx);
    let plan = runner.plan(&cx).await?;
    let started = !cs_core::applied_steps(runner.journal_path())?.is_empty();
    let sealed = sealed(config);
    let gate = if started || sealed.is_some() {
        None
    } else {
        Some(gate_report(config, &skip).await)
    };
    Ok(UpgradePlan {
        point_of_no_return: point_of_no_return(&cx.record),
        record: cx.record.clone(),
        schema_steps,
        plan,
        gate,
        sealed,
    })
}

/// Runs the upgrade with default options (see [`apply_with`]).
///
/// # Errors
/// As [`apply_with`].
pub async fn apply(
    config: &UpgradeConfig,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    apply_with(config, &ApplyOptions::default(), progress).await
}

/// Runs the upgrade, resuming what the journal records:
/// * a finished (sealed) upgrade is not run again: every step is reported skipped;
/// * before the first step, the pre-flight gate runs and refuses on any failure;
/// * before the point of no return, a failed step rolls back what was applied, newest first;
///   after it, a failed step stops the run where it is (nothing is restored) and the error
///   says what failed; `apply` again resumes forward, [`rollback_with`] goes back.
///
/// # Errors
/// [`UpgradeErrorKind::Preflight`], [`UpgradeErrorKind::UnknownCheck`], and
/// [`UpgradeErrorKind::Run`] with the report when steps ran.
pub async fn apply_with(
    config: &UpgradeConfig,
    options: &ApplyOptions,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    let skip = skips(config, &options.skip_checks)?;
    let cx = UpgradeContext::build(config, progress.clone()).await?;
    let runner = runner(&cx);
    if sealed(config).is_some() {
        tracing::info!(target = %config.target, "the upgrade is already done");
        return Ok(skipped_report(&runner));
    }
    let record_path = cx.run_dir.join("run.json");
    if cs_core::applied_steps(runner.journal_path())?.is_empty() {
        let report = gate_report(config, &skip).await;
        if !gate_passes(&report) {
            return Err(UpgradeError::new(UpgradeErrorKind::Preflight(Box::new(
                report,
            ))));
        }
        write_json(&record_path, &cx.record).map_err(UpgradeError::plan)?;
    } else if !record_path.exists() {
        write_json(&record_path, &cx.record).map_err(UpgradeError::plan)?;
    }
    let report = runner.run(&cx, progress.as_ref()).await?;
    let seal = Seal {
        target: cx.record.target,
        finished_at: utc_now(),
    };
    write_json(&cx.run_dir.join(SEAL), &seal).map_err(UpgradeError::plan)?;
    Ok(report)
}

/// The report of a run that found everything done.
fn skipped_report(runner: &Runner<UpgradeContext>) -> RunReport {
    RunReport {
        journal: runner.journal_path().to_path_buf(),
        run: 0,
        kind: cs_core::RunKind::Apply,
        plan: runner.fingerprint().to_string(),
        steps: runner
            .step_ids()
            .map(|id| cs_core::StepReport {
                id: id.to_string(),
                outcome: cs_core::StepOutcome::Skipped,
                error: None,
                rollback_error: None,
                check_time: std::time::Duration::ZERO,
                apply_time: None,
                rollback_time: None,
            })
            .collect(),
        failed_step: None,
        rollback_order: Vec::new(),
    }
}

/// `YYYY-MM-DD hh:mm:ss` from that or an RFC 3339 time in UTC.
fn normalize_time(t: &str) -> Option<String> {
    let t = t.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix("+00:00"))
        .unwrap_or(t);
    let t = t.replacen('T', " ", 1);
    let ok = t.len() == 19
        && t.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    ok.then_some(t)
}

/// What restoring the backup would discard, when the run is past its point of no return:
/// `(time of the backup, what the cloud wrote since)`.
///
/// # Errors
/// [`UpgradeError`] when the context or the database cannot be read.
pub async fn loss_report(
    config: &UpgradeConfig,
) -> Result<Option<(String, cs_schema::ChangesSince)>, UpgradeError> {
    let cx = UpgradeContext::build(config, Arc::new(NoProgress)).await?;
    let runner = runner(&cx);
    if !runner.past_point_of_no_return().await? {
        return Ok(None);
    }
    let since = std::fs::read_to_string(cx.quiesced_marker())
        .ok()
        .and_then(|t| normalize_time(&t))
        .unwrap_or_else(|| cx.record.started_at.clone());
    let loss = cs_schema::changes_since(&cx.db, &since)
        .await
        .map_err(|e| {
            UpgradeError::plan(format!(
                "read what changed since {since}: {}",
                error_chain(&e)
            ))
        })?;
    Ok(Some((since, loss)))
}

/// Rolls back every step the journal records as applied, newest first, with default options
/// (see [`rollback_with`]).
///
/// # Errors
/// As [`rollback_with`].
pub async fn rollback(
    config: &UpgradeConfig,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    rollback_with(config, &RollbackOptions::default(), progress).await
}

/// Rolls back every step the journal records as applied, newest first. Past the point of no
/// return the cloud has served tenants since the backup, so restoring it discards what they
/// did: without [`RollbackOptions::discard_changes_since`] (at or before the backup's time) it
/// refuses, with what would be lost.
///
/// # Errors
/// [`UpgradeErrorKind::PointOfNoReturn`] with the loss; [`UpgradeError`] with the report when
/// some rollbacks failed.
pub async fn rollback_with(
    config: &UpgradeConfig,
    options: &RollbackOptions,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, UpgradeError> {
    let given = match options.discard_changes_since.as_deref() {
        None => None,
        Some(t) => Some(normalize_time(t).ok_or_else(|| {
            UpgradeError::plan(format!(
                "`{t}` is not a time: give the backup's time as `YYYY-MM-DD hh:mm:ss` (UTC) or RFC 3339 in UTC"
            ))
        })?),
    };
    if let Some((since, loss)) = loss_report(config).await? {
        let accepted = given.is_some_and(|given| given <= since);
        if !accepted {
            return Err(UpgradeError::new(UpgradeErrorKind::PointOfNoReturn {
                since,
                loss: Box::new(loss),
            }));
        }
        tracing::warn!(since = %since, discarded = %loss_summary(&loss), "rolling back past the point of no return");
    }
    let cx = UpgradeContext::build(config, progress.clone()).await?;
    let report = runner(&cx).rollback_all(&cx, progress.as_ref()).await?;
    match std::fs::remove_file(cx.run_dir.join(SEAL)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(UpgradeError::plan(format!("remove the seal: {e}")))
        }
        _ => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_time;

    #[test]
    fn times_are_taken_as_cloudstack_writes_them_or_in_rfc_3339() {
        for t in [
            "2026-12-07 10:15:00",
            "2026-12-07T10:15:00Z",
            "2026-12-07T10:15:00+00:00",
        ] {
            assert_eq!(
                normalize_time(t).as_deref(),
                Some("2026-12-07 10:15:00"),
                "{t}"
            );
        }
        for t in ["2026-12-07", "yesterday", "2026-12-07T10:15:00+02:00", ""] {
            assert_eq!(normalize_time(t), None, "{t}");
        }
    }
}
