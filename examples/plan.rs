//! The schema-upgrade plan from one CloudStack version to another, as the target's management
//! server computes it: the steps, the LTS hops the upgrade guides recommend, and the release
//! facts; with `--db`, the from-version comes from the database and the database checks run.
//!
//! ```text
//! plan --from 4.18.1.3 --to 4.22.0.0 [--json]
//! plan --db mysql://cloud:PASSWORD@10.0.0.5:3306 --to 4.22.0.0 [--json] [--skip db.size]
//! ```
//!
//! Any version CloudStack's `CloudStackVersion.parse` accepts is planned; parts computed beyond
//! the tool's data (a target newer than it, a line it lacks) are marked unverified, in the
//! text and in the JSON (`"unverified": [...]`). A database that can be reached always gives
//! the report: a version table without a `Complete` row is a `db.version.sane` finding, not an
//! error.
//!
//! Exit codes follow the report: 0 all passed, 1 warnings, 2 failures, 255 a check broke. Bad
//! input (a version that does not parse, an unreachable database) prints one line and exits 2.
//! The password is never printed.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cs_core::{CsVersion, DbUrl, Report};
use cs_schema::{DbContext, DbTarget, Hop, PathPlan, PathStep, ReleaseLine};

/// Print the upgrade plan between two CloudStack versions.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::REPORT)]
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
    /// MySQL option file (`[client]` user, password, host, port, ssl-*) that gives what the URL
    /// leaves out, or the whole connection without one; read instead of `~/.my.cnf`, which is
    /// read when the URL has no password. Still no password: asked on a terminal.
    #[arg(long, value_name = "PATH")]
    defaults_file: Option<PathBuf>,
    /// Name of the `cloud` schema.
    #[arg(long, default_value = "cloud")]
    cloud_schema: String,
    /// Name of the `cloud_usage` schema.
    #[arg(long, default_value = "cloud_usage")]
    usage_schema: String,
    /// Check ids to skip: repeatable, or comma-separated (`--skip db.size,db.engine`).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    skip: Vec<String>,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // An example owns its terminal.
#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let url = match (&args.db, &args.defaults_file) {
        (None, None) => None,
        (raw, file) => match common::database("plan", raw.as_deref(), file.as_deref()) {
            Ok(url) => Some(url),
            Err(code) => return code,
        },
    };
    match run(&args, url).await {
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

async fn run(args: &Args, url: Option<DbUrl>) -> Result<(String, u8), String> {
    let to = CsVersion::parse(&args.to).map_err(|e| e.to_string())?;
    let mut unread = None;
    let (from, report) = match url {
        Some(url) => {
            let target = DbTarget::new(url, &args.cloud_schema, &args.usage_schema);
            let mut cx = DbContext::new(target.clone(), to);
            let from = match cs_schema::read_state(&target).await {
                Ok(state) => {
                    let from = state.version.as_ref().and_then(|v| v.current());
                    cx = cx.with_state(state);
                    from
                }
                // Not reachable: there is no report to give.
                Err(e @ cs_schema::Error::Connect { .. }) => {
                    return Err(cs_core::error_chain(&e));
                }
                // Reachable but not readable: the checks report it (as broken).
                Err(e) => {
                    unread = Some(cs_core::error_chain(&e));
                    None
                }
            };
            let skip: Vec<&str> = args.skip.iter().map(String::as_str).collect();
            (from, Some(cs_schema::run_db_checks(&cx, &skip).await))
        }
        None => {
            let raw = args
                .from
                .as_deref()
                .ok_or("give --from VERSION or --db URL")?;
            (
                Some(CsVersion::parse(raw).map_err(|e| e.to_string())?),
                None,
            )
        }
    };
    let code = report.as_ref().map_or(0, Report::exit_code);
    // Without a path (no version to plan from, a database newer than the target), the report,
    // whose db.version.sane says why, is the answer.
    let mut no_path = match unread {
        Some(e) => format!("the database could not be read ({e}): no path; see the broken checks"),
        None => format!(
            "no current version in `{}`.version (missing table or no Complete row): no path; see db.version.sane",
            args.cloud_schema
        ),
    };
    let planned = match from {
        Some(from) => match Planned::new(from, to) {
            Ok(p) => Some(p),
            Err(e) if report.is_some() => {
                no_path = format!("no path: {e}; see db.version.sane");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let text = if args.output.json {
        let mut j = serde_json::json!({
            "from": from,
            "to": to,
            "findings": report.as_ref().map(|r| r.findings.clone()).unwrap_or_default(),
        });
        match &planned {
            Some(p) => {
                j["hierarchy"] = serde_json::json!({
                    "name": p.path.hierarchy,
                    "verified": p.path.is_verified(),
                    "note": p.path.hierarchy_note,
                });
                j["target_known"] = serde_json::json!(p.path.target_known);
                j["verified"] = serde_json::json!(p.path.is_verified());
                j["unverified"] = serde_json::json!(p.path.unverified);
                j["steps"] = p.path.steps.iter().map(step_json).collect();
                j["hops"] = p.hops.iter().map(hop_json).collect();
                j["release"] = release_json(&p.release);
            }
            None => {
                j["steps"] = serde_json::json!([]);
                j["note"] = serde_json::json!(no_path);
            }
        }
        if let Some(r) = &report {
            j["broken"] = serde_json::json!(r.broken);
            j["exit_code"] = serde_json::json!(r.exit_code());
        }
        format!(
            "{}\n",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        )
    } else {
        match &planned {
            Some(p) => tables(p, report.as_ref()),
            None => format!(
                "{no_path}\n\nDatabase checks:\n{}",
                report.as_ref().map(table::report).unwrap_or_default()
            ),
        }
    };
    Ok((text, code))
}

/// The plan between two versions: the path, the hops, the target's release facts.
struct Planned {
    path: PathPlan,
    hops: Vec<Hop>,
    release: ReleaseLine,
}

impl Planned {
    fn new(from: CsVersion, to: CsVersion) -> Result<Self, String> {
        Ok(Planned {
            path: cs_schema::plan_path(&from, &to).map_err(|e| e.to_string())?,
            hops: cs_schema::plan_hops(&from, &to).map_err(|e| e.to_string())?,
            release: cs_schema::release_facts(&to),
        })
    }
}

fn step_json(s: &PathStep) -> serde_json::Value {
    serde_json::json!({
        "class": s.class,
        "from": s.from,
        "to": s.to,
        "noop": s.noop,
        "verified": s.verified,
        "source": s.source,
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

fn tables(p: &Planned, report: Option<&Report>) -> String {
    let (from, to, steps, hops) = (&p.path.db, &p.path.target, &p.path.steps, &p.hops);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Schema steps {from} -> {to} (hierarchy {}{}):",
        p.path.hierarchy,
        if p.path.is_verified() {
            ""
        } else {
            ", UNVERIFIED"
        }
    );
    if steps.is_empty() {
        let _ = writeln!(out, "  none: the database is at the target");
    } else {
        let mut t = table::new_table(&["#", "CLASS", "FROM", "TO", "SQL"]);
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
            t.add_row(vec![
                (i + 1).to_string(),
                s.class.clone(),
                s.from.to_string(),
                s.to.to_string(),
                format!("{sql}{mark}"),
            ]);
        }
        let _ = writeln!(out, "{}", table::indent(&table::render(&t), "  "));
    }
    if !p.path.is_verified() {
        let _ = writeln!(out, "\nUnverified:");
        for u in &p.path.unverified {
            let _ = writeln!(out, "  - {u}");
        }
    }
    let _ = writeln!(out, "\nHops (LTS stepping stones):");
    let mut t = table::new_table(&[
        "FROM", "TO", "STEPS", "LTS", "JAVA", "MYSQL", "MARIADB", "NOTE",
    ]);
    for h in hops {
        let mut note = Vec::new();
        if h.java_change {
            note.push(format!("switch to Java {}", h.release.java));
        }
        if !h.verified {
            note.push(format!("unverified ({})", h.hierarchy));
        }
        t.add_row(vec![
            h.from.to_string(),
            h.to.to_string(),
            h.steps.len().to_string(),
            h.release.lts.to_string(),
            h.release.java.to_string(),
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
            note.join("; "),
        ]);
    }
    let _ = writeln!(out, "{}", table::indent(&table::render(&t), "  "));
    {
        let l = &p.release;
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
        let _ = writeln!(out, "\nDatabase checks:\n{}", table::report(r));
    }
    out
}
