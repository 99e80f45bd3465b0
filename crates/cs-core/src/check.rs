//! Read-only checks, their findings, and reports for people (a table) and machines (JSON).

use std::fmt::{self, Write as _};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// How bad a finding is. Ordered from best to worst: `Pass < Skip < Info < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The condition holds.
    Pass,
    /// The check did not run (asked to skip, or not applicable).
    Skip,
    /// Information for the operator; nothing is wrong.
    Info,
    /// Something is off but the upgrade can go on.
    Warn,
    /// The upgrade must not go on.
    Fail,
}

impl Severity {
    /// Upper-case label for tables (`PASS`, `WARN`, …).
    pub fn label(self) -> &'static str {
        match self {
            Severity::Pass => "PASS",
            Severity::Skip => "SKIP",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One result of a check: about one subject (a host, a table, a file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The check's stable id (`db.version.sane`).
    pub id: String,
    /// How bad it is.
    pub severity: Severity,
    /// What it is about (`cloud.version`, `kvm3`, `/etc/cloudstack/agent/agent.properties`).
    pub subject: String,
    /// What was found, in one sentence.
    pub message: String,
    /// What to do about it, when something is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Finding {
    /// A finding with no remedy.
    pub fn new(
        id: impl Into<String>,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            id: id.into(),
            severity,
            subject: subject.into(),
            message: message.into(),
            remedy: None,
        }
    }

    /// A passing finding.
    pub fn pass(
        id: impl Into<String>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding::new(id, Severity::Pass, subject, message)
    }

    /// Adds a remedy.
    #[must_use]
    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }
}

/// A check that could not run to a verdict (the database went away, a host was unreachable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFailure {
    /// The check's id.
    pub id: String,
    /// What went wrong, with its causes.
    pub error: String,
}

/// The error a check returns when it cannot reach a verdict.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CheckError {
    /// What went wrong.
    pub message: String,
    /// The cause.
    #[source]
    pub source: Option<crate::BoxError>,
}

impl CheckError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        CheckError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a cause.
    pub fn with_source(message: impl Into<String>, source: impl Into<crate::BoxError>) -> Self {
        CheckError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl From<crate::HostError> for CheckError {
    fn from(e: crate::HostError) -> Self {
        CheckError::with_source("host operation failed", e)
    }
}

/// A read-only check over some context `C` (a database connection, a host, a config).
///
/// # Contract
/// * `run` never changes anything; running it twice gives the same findings.
/// * Every finding carries this check's `id`.
/// * `Err` means the check could not decide; a condition that fails is a `Fail` finding.
#[async_trait]
pub trait Check<C: ?Sized + Sync>: Send + Sync + fmt::Debug {
    /// Stable id (`db.version.sane`).
    fn id(&self) -> &str;

    /// Runs the check.
    ///
    /// # Errors
    /// [`CheckError`] when the check cannot reach a verdict.
    async fn run(&self, cx: &C) -> Result<Vec<Finding>, CheckError>;
}

/// Runs checks concurrently against one context, skipping the ids in `skip`. A skipped check
/// gives one `Skip` finding; a check that errs is recorded as broken (exit code 255).
pub async fn run_checks<C: ?Sized + Sync>(
    checks: &[&dyn Check<C>],
    cx: &C,
    skip: &[&str],
) -> Report {
    let futures = checks.iter().map(|c| async move {
        if skip.contains(&c.id()) {
            return Ok(vec![Finding::new(
                c.id(),
                Severity::Skip,
                "-",
                "skipped on request",
            )]);
        }
        c.run(cx).await.map_err(|e| CheckFailure {
            id: c.id().to_string(),
            error: crate::error_chain(&e),
        })
    });
    let mut report = Report::default();
    for result in futures::future::join_all(futures).await {
        match result {
            Ok(findings) => report.findings.extend(findings),
            Err(failure) => report.broken.push(failure),
        }
    }
    report
}

/// All findings of a run of checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Findings in the order the checks were given.
    pub findings: Vec<Finding>,
    /// Checks that could not reach a verdict.
    #[serde(default)]
    pub broken: Vec<CheckFailure>,
}

impl Report {
    /// Adds a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Appends another report.
    pub fn merge(&mut self, other: Report) {
        self.findings.extend(other.findings);
        self.broken.extend(other.broken);
    }

    /// The worst severity among the findings (`Pass` for an empty report).
    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Pass)
    }

    /// Findings of at least `severity`.
    pub fn at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }

    /// Whether any finding fails or any check broke.
    pub fn has_failures(&self) -> bool {
        !self.broken.is_empty() || self.worst() == Severity::Fail
    }

    /// Process exit code: 255 when a check broke, 2 for failures, 1 for warnings, else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.broken.is_empty() {
            255
        } else {
            match self.worst() {
                Severity::Fail => 2,
                Severity::Warn => 1,
                _ => 0,
            }
        }
    }

    /// The report as JSON for machines:
    /// `{"findings": [...], "broken": [...], "worst": "warn", "exit_code": 1}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "findings": self.findings,
            "broken": self.broken,
            "worst": self.worst(),
            "exit_code": self.exit_code(),
        })
    }

    /// The report as a plain-text table for people, one finding a row and its remedy below it,
    /// with a closing summary line.
    pub fn to_table(&self) -> String {
        let w_id = self
            .findings
            .iter()
            .map(|f| f.id.chars().count())
            .chain([2])
            .max()
            .unwrap_or(2);
        let w_sub = self
            .findings
            .iter()
            .map(|f| f.subject.chars().count())
            .chain([7])
            .max()
            .unwrap_or(7)
            .min(40);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<4}  {:<w_id$}  {:<w_sub$}  MESSAGE",
            "", "ID", "SUBJECT"
        );
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{:<4}  {:<w_id$}  {:<w_sub$}  {}",
                f.severity.label(),
                f.id,
                f.subject,
                f.message
            );
            if let Some(r) = &f.remedy {
                let _ = writeln!(out, "{:<4}  {:<w_id$}  {:<w_sub$}  -> {}", "", "", "", r);
            }
        }
        for b in &self.broken {
            let _ = writeln!(
                out,
                "ERR   {:<w_id$}  {:<w_sub$}  check broke: {}",
                b.id, "-", b.error
            );
        }
        let count = |s| self.findings.iter().filter(|f| f.severity == s).count();
        let _ = writeln!(
            out,
            "{} pass, {} info, {} warn, {} fail, {} skipped, {} broken",
            count(Severity::Pass),
            count(Severity::Info),
            count(Severity::Warn),
            count(Severity::Fail),
            count(Severity::Skip),
            self.broken.len()
        );
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(&'static str, Severity);

    #[async_trait]
    impl Check<()> for Fixed {
        fn id(&self) -> &str {
            self.0
        }
        async fn run(&self, _: &()) -> Result<Vec<Finding>, CheckError> {
            if self.1 == Severity::Skip {
                return Err(CheckError::new("database went away"));
            }
            Ok(vec![
                Finding::new(self.0, self.1, "x", "m").with_remedy("do y"),
            ])
        }
    }

    async fn report(checks: &[Fixed], skip: &[&str]) -> Report {
        let refs: Vec<&dyn Check<()>> = checks.iter().map(|c| c as &dyn Check<()>).collect();
        run_checks(&refs, &(), skip).await
    }

    #[tokio::test]
    async fn exit_codes_follow_the_worst_finding() {
        let pass = report(
            &[Fixed("a", Severity::Pass), Fixed("b", Severity::Info)],
            &[],
        )
        .await;
        assert_eq!(pass.exit_code(), 0);
        let warn = report(
            &[Fixed("a", Severity::Pass), Fixed("b", Severity::Warn)],
            &[],
        )
        .await;
        assert_eq!(warn.exit_code(), 1);
        let fail = report(
            &[Fixed("a", Severity::Fail), Fixed("b", Severity::Warn)],
            &[],
        )
        .await;
        assert_eq!(fail.exit_code(), 2);
        // `Skip` in the fixture makes the check err: a broken check outranks everything.
        let broken = report(
            &[Fixed("a", Severity::Fail), Fixed("b", Severity::Skip)],
            &[],
        )
        .await;
        assert_eq!(broken.exit_code(), 255);
        assert_eq!(broken.broken[0].id, "b");
        assert!(
            broken
                .to_table()
                .contains("check broke: database went away")
        );
    }

    #[tokio::test]
    async fn skipped_checks_do_not_run() {
        let r = report(
            &[Fixed("a", Severity::Fail), Fixed("b", Severity::Pass)],
            &["a"],
        )
        .await;
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.findings[0].severity, Severity::Skip);
        assert_eq!(r.findings[0].id, "a");
    }

    #[tokio::test]
    async fn json_and_table_carry_every_finding() {
        let r = report(&[Fixed("db.version.sane", Severity::Warn)], &[]).await;
        let j = r.to_json();
        assert_eq!(j["worst"], "warn");
        assert_eq!(j["exit_code"], 1);
        assert_eq!(j["findings"][0]["remedy"], "do y");
        let t = r.to_table();
        assert!(t.contains("WARN  db.version.sane"), "{t}");
        assert!(t.contains("-> do y"));
        assert!(t.ends_with("0 pass, 0 info, 1 warn, 0 fail, 0 skipped, 0 broken\n"));
        let back: Report = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }
}
