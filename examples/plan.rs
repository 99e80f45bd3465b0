//! The schema-upgrade plan from one CloudStack version to another, as the target's management
//! server computes it: the steps, the LTS hops the upgrade guides recommend, and the release
//! facts; with `--db`, the from-version comes from the database and the database checks run.
//!
//! ```text
//! plan --from 4.18.1.3 --to 4.22.0.0 [--json]
//! plan --db mysql://cloud:PASSWORD@10.0.0.5:3306 --to 4.22.0.0 [--json] [--skip db.size]
//! ```
//!
//! Exit codes follow the report: 0 all passed, 1 warnings, 2 failures, 255 a check broke. Bad
//! input (a version that does not parse, an unknown target, an unreachable database) prints
//! one line and exits 2. The password is never printed.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Parser;
use cs_core::{CsVersion, DbUrl, Report};
use cs_schema::{DbContext, DbTarget, Hierarchy, Hop, PathStep, ReleaseLine};

/// Print the upgrade plan between two CloudStack versions.
#[derive(Debug, Parser)]
struct Args {
    /// The version the database is at (not needed with --db).
    #[arg(long)]
    from: Option<String>,
    /// The target release.
    #[arg(long)]
    to: String,
    /// Read the from-version from this database and run the database checks
    /// (mysql://user:password@host:port).
    #[arg(long, env = "CS_PLAN_DB", hide_env_values = true)]
    db: Option<String>,
    /// Name of the `cloud` schema.
    #[arg(long, default_value = "cloud")]
    cloud_schema: String,
    /// Name of the `cloud_usage` schema.
    #[arg(long, default_value = "cloud_usage")]
    usage_schema: String,
    /// Skip a check by id (repeatable).
    #[arg(long)]
    skip: Vec<String>,
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok((text, code)) => {
            print!("{text}");
            ExitCode::from(code)
        }
        Err(line) => {
            eprintln!("plan: {line}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &Args) -> Result<(String, u8), String> {
    let to = CsVersion::parse(&args.to).map_err(|e| e.to_string())?;
    let (from, report) = match &args.db {
        Some(raw) => {
            let url = DbUrl::parse(raw).map_err(|e| e.to_string())?;
            let target = DbTarget::new(url, &args.cloud_schema, &args.usage_schema);
            let state = cs_schema::read_state(&target)
                .await
                .map_err(|e| cs_core::error_chain(&e))?;
            let from = state
                .version
                .as_ref()
                .and_then(|v| v.current())
                .ok_or_else(|| {
                    format!(
                        "no current version in `{}`.version (missing table or no Complete row)",
                        args.cloud_schema
                    )
                });
            let cx = DbContext::new(target, to);
            let skip: Vec<&str> = args.skip.iter().map(String::as_str).collect();
            let report = cs_schema::run_db_checks(&cx, &skip).await;
            match from {
                Ok(f) => (f, Some(report)),
                // Still show the findings that explain why.
                Err(e) if args.json => return Err(e),
                Err(e) => {
                    return Ok((
                        format!("{e}\n\n{}", report.to_table()),
                        report.exit_code().max(2),
                    ));
                }
            }
        }
        None => {
            let raw = args
                .from
                .as_deref()
                .ok_or("give --from VERSION or --db URL")?;
            (CsVersion::parse(raw).map_err(|e| e.to_string())?, None)
        }
    };
    let steps = cs_schema::path(&from, &to).map_err(|e| e.to_string())?;
    let hops = cs_schema::plan_hops(&from, &to).map_err(|e| e.to_string())?;
    let hierarchy = Hierarchy::for_target(&to);
    let release = cs_schema::release_line(&to);
    let code = report.as_ref().map_or(0, Report::exit_code);
    let text = if args.json {
        let mut j = serde_json::json!({
            "from": from,
            "to": to,
            "hierarchy": {"name": hierarchy.name(), "verified": hierarchy.is_verified(), "note": hierarchy.note()},
            "steps": steps.iter().map(step_json).collect::<Vec<_>>(),
            "hops": hops.iter().map(hop_json).collect::<Vec<_>>(),
            "release": release.map(release_json),
            "findings": report.as_ref().map(|r| r.findings.clone()).unwrap_or_default(),
        });
        if let Some(r) = &report {
            j["broken"] = serde_json::json!(r.broken);
            j["exit_code"] = serde_json::json!(r.exit_code());
        }
        format!(
            "{}\n",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        )
    } else {
        tables(
            &from,
            &to,
            hierarchy,
            &steps,
            &hops,
            release,
            report.as_ref(),
        )
    };
    Ok((text, code))
}

fn step_json(s: &PathStep) -> serde_json::Value {
    serde_json::json!({
        "class": s.class,
        "from": s.from,
        "to": s.to,
        "noop": s.noop,
        "verified": s.verified,
        "prepare_sql": s.prepare_sql,
        "cleanup_sql": s.cleanup_sql,
    })
}

fn release_json(l: &ReleaseLine) -> serde_json::Value {
    serde_json::json!({
        "line": l.line,
        "lts": l.lts,
        "java": l.java,
        "mysql": l.mysql,
        "mariadb_min": l.mariadb_min,
        "latest": l.latest,
        "verified": l.verified,
        "systemvm_templates": l.systemvm_templates().into_iter()
            .map(|(h, n)| (h.as_db().to_string(), serde_json::Value::String(n)))
            .collect::<serde_json::Map<_, _>>(),
    })
}

fn hop_json(h: &Hop) -> serde_json::Value {
    serde_json::json!({
        "from": h.from,
        "to": h.to,
        "hierarchy": h.hierarchy,
        "java": h.release.java,
        "java_change": h.java_change,
        "lts": h.release.lts,
        "mysql": h.release.mysql,
        "mariadb_min": h.release.mariadb_min,
        "verified": h.verified,
        "steps": h.steps.iter().map(step_json).collect::<Vec<_>>(),
    })
}

fn tables(
    from: &CsVersion,
    to: &CsVersion,
    hierarchy: &Hierarchy,
    steps: &[PathStep],
    hops: &[Hop],
    release: Option<&ReleaseLine>,
    report: Option<&Report>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Schema steps {from} -> {to} (hierarchy {}{}):",
        hierarchy.name(),
        if hierarchy.is_verified() {
            ""
        } else {
            ", UNVERIFIED"
        }
    );
    if steps.is_empty() {
        let _ = writeln!(out, "  none: the database is at the target");
    } else {
        let w = steps
            .iter()
            .map(|s| s.class.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "  {:>2}  {:<w$}  {:<10}  {:<10}  SQL",
            "#", "CLASS", "FROM", "TO"
        );
        for (i, s) in steps.iter().enumerate() {
            let sql = if s.noop {
                "(no SQL: version row only)".to_string()
            } else if s.prepare_sql.is_empty() && s.cleanup_sql.is_empty() {
                "(Java only)".to_string()
            } else {
                [s.prepare_sql.clone(), s.cleanup_sql.clone()]
                    .concat()
                    .join(", ")
            };
            let mark = if s.verified { "" } else { "  [unverified]" };
            let _ = writeln!(
                out,
                "  {:>2}  {:<w$}  {:<10}  {:<10}  {sql}{mark}",
                i + 1,
                s.class,
                s.from.to_string(),
                s.to.to_string()
            );
        }
    }
    let _ = writeln!(out, "\nHops (LTS stepping stones):");
    let _ = writeln!(
        out,
        "  {:<10}  {:<10}  {:<5}  {:<7}  {:<5}  {:<14}  {:<8}  NOTE",
        "FROM", "TO", "STEPS", "LTS", "JAVA", "MYSQL", "MARIADB"
    );
    for h in hops {
        let mut note = Vec::new();
        if h.java_change {
            note.push(format!("switch to Java {}", h.release.java));
        }
        if !h.verified {
            note.push(format!("unverified ({})", h.hierarchy));
        }
        let row = format!(
            "  {:<10}  {:<10}  {:<5}  {:<7}  {:<5}  {:<14}  {:<8}  {}",
            h.from.to_string(),
            h.to.to_string(),
            h.steps.len(),
            h.release.lts.to_string(),
            h.release.java,
            if h.release.mysql.is_empty() {
                "?".to_string()
            } else {
                h.release.mysql.join(", ")
            },
            h.release
                .mariadb_min
                .as_deref()
                .map(|m| format!(">= {m}"))
                .unwrap_or_else(|| "?".into()),
            note.join("; ")
        );
        let _ = writeln!(out, "{}", row.trim_end());
    }
    if let Some(l) = release {
        let _ = writeln!(
            out,
            "\nRelease {}: {}, Java {}, MySQL {}, MariaDB {}{}",
            l.line,
            l.lts,
            l.java,
            if l.mysql.is_empty() {
                "?".to_string()
            } else {
                l.mysql.join("/")
            },
            l.mariadb_min
                .as_deref()
                .map(|m| format!(">= {m}"))
                .unwrap_or_else(|| "?".into()),
            if l.verified { "" } else { " (unverified)" }
        );
        let names: Vec<String> = cs_schema::Hypervisor::ALL
            .iter()
            .map(|h| format!("{h}: {}", cs_schema::systemvm_template_name(to, *h)))
            .collect();
        let _ = writeln!(out, "System VM templates for {to}: {}", names.join(", "));
    }
    if let Some(r) = report {
        let _ = writeln!(out, "\nDatabase checks:\n{}", r.to_table());
    }
    out
}
