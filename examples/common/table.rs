//! Tables for people on stdout, through comfy-table: columns aligned to their widest cell
//! (wrapped to the terminal's width on a terminal), and the verdicts (`PASS`, `WARN`, `FAIL`,
//! …) in colour only when stdout is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>). Piped or redirected output is plain text.

#![allow(dead_code)] // Shared by several examples; each uses part of it.

use std::io::IsTerminal;

use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};
use cs_core::{Report, Severity};

/// Whether stdout gets colour: a terminal, and `NO_COLOR` unset or empty.
pub(crate) fn colour() -> bool {
    colour_for(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// [`colour`]'s rule on given facts: a terminal and no non-empty `NO_COLOR`.
fn colour_for(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A table with `header`, borderless, its columns two spaces apart.
pub(crate) fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    if colour() {
        t.enforce_styling();
    }
    // Wrapped to the terminal's width where it has a usable one (a pseudo-terminal may say 0).
    if let Some(w) = t
        .width()
        .filter(|w| *w >= 40 && std::io::stdout().is_terminal())
    {
        t.set_width(w);
        t.set_content_arrangement(ContentArrangement::Dynamic);
    }
    if !colour() {
        t.force_no_tty();
    }
    let bold = colour();
    t.set_header(header.iter().map(|h| {
        let c = Cell::new(h);
        if bold {
            c.add_attribute(Attribute::Bold)
        } else {
            c
        }
    }));
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    t
}

/// A verdict's cell: its label, coloured when stdout gets colour (FAIL and ERR red, WARN
/// yellow, PASS green, the rest plain). Labels other than a [`Severity`]'s (`ERR`, `OK`,
/// `FAILED`) are coloured by the same rule.
pub(crate) fn verdict(label: &str) -> Cell {
    let cell = Cell::new(label);
    if !colour() {
        return cell;
    }
    match label {
        "FAIL" | "ERR" | "FAILED" | "ERROR" | "BAD PASS" | "failed" | "rollback failed" => {
            cell.fg(Color::Red).add_attribute(Attribute::Bold)
        }
        "WARN" => cell.fg(Color::Yellow),
        "PASS" | "OK" | "ok" | "applied" => cell.fg(Color::Green),
        _ => cell,
    }
}

/// A cell of text that reports a failure: red when stdout gets colour.
pub(crate) fn bad(text: &str) -> Cell {
    let cell = Cell::new(text);
    if colour() { cell.fg(Color::Red) } else { cell }
}

/// Renders a table to print with `println!` (its lines without trailing blanks).
pub(crate) fn render(t: &Table) -> String {
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` with `prefix` before each line.
pub(crate) fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A check report as a table (verdict, id, subject, message; the remedy on a row of its own
/// below, after `->`), its broken checks as `ERR` rows, and the closing count line: the same
/// content as [`Report::to_table`], aligned and coloured by the rules above. Checks broken by
/// the same error are one row naming how many and which.
pub(crate) fn report(r: &Report) -> String {
    let r = &grouped(r);
    let mut t = new_table(&["", "ID", "SUBJECT", "MESSAGE"]);
    for f in &r.findings {
        t.add_row(vec![
            verdict(f.severity.label()),
            Cell::new(&f.id),
            Cell::new(&f.subject),
            Cell::new(&f.message),
        ]);
        if let Some(remedy) = &f.remedy {
            t.add_row(vec![
                Cell::new(""),
                Cell::new(""),
                Cell::new(""),
                Cell::new(format!("-> {remedy}")),
            ]);
        }
    }
    for b in &r.broken {
        t.add_row(vec![
            verdict("ERR"),
            Cell::new(&b.id),
            Cell::new("-"),
            Cell::new(format!("check broke: {}", b.error)),
        ]);
    }
    let count = |s| r.findings.iter().filter(|f| f.severity == s).count();
    format!(
        "{}\n{} pass, {} info, {} warn, {} fail, {} skipped, {} broken\n",
        render(&t),
        count(Severity::Pass),
        count(Severity::Info),
        count(Severity::Warn),
        count(Severity::Fail),
        count(Severity::Skip),
        r.broken.len()
    )
}

/// A fleet refresh's report as a table (host, cluster, result, time, detail), the count line
/// and why it stopped: the content of `FleetReport::to_table`, aligned and coloured.
pub(crate) fn fleet(r: &cs_agent::fleet::FleetReport) -> String {
    use cs_agent::fleet::Outcome;
    let mut t = new_table(&["HOST", "CLUSTER", "RESULT", "TIME", "DETAIL"]);
    for h in &r.hosts {
        let result = match h.outcome {
            Outcome::Ok => verdict("ok"),
            Outcome::Failed => verdict("FAILED"),
            Outcome::AlreadyDone => Cell::new("already done"),
            Outcome::NotStarted => Cell::new("not started"),
            other => Cell::new(format!("{other:?}")),
        };
        t.add_row(vec![
            Cell::new(&h.host),
            Cell::new(h.cluster.as_deref().unwrap_or("-")),
            result,
            Cell::new(format!("{:.1}s", h.elapsed.as_secs_f64()))
                .set_alignment(comfy_table::CellAlignment::Right),
            Cell::new(&h.detail),
        ]);
    }
    let count = |o| r.hosts.iter().filter(|h| h.outcome == o).count();
    let mut out = format!(
        "{}\n{} ok, {} failed, {} already done, {} not started\n",
        render(&t),
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::AlreadyDone),
        count(Outcome::NotStarted)
    );
    if let Some(s) = &r.stopped {
        out.push_str(&format!("stopped: {s}\n"));
    }
    out
}

/// A fleet refresh's waves (`--dry-run`) as a table: one row per wave and cluster, with the
/// hosts in it; the content of `fleet::waves_table`, aligned.
pub(crate) fn waves(
    targets: &[cs_agent::fleet::Target],
    waves: &[Vec<usize>],
    options: &cs_agent::fleet::FleetOptions,
) -> String {
    let mut t = new_table(&["WAVE", "CLUSTER", "HOSTS"]);
    for (n, wave) in waves.iter().enumerate() {
        let mut by: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for &i in wave {
            if let Some(target) = targets.get(i) {
                by.entry(target.cluster.as_deref().unwrap_or("-"))
                    .or_default()
                    .push(target.label());
            }
        }
        let canary = n == 0 && options.canary == cs_agent::fleet::Canary::One;
        for (j, (cluster, hosts)) in by.iter().enumerate() {
            let wave = match (j, canary) {
                (0, true) => format!("{} (canary)", n + 1),
                (0, false) => (n + 1).to_string(),
                _ => String::new(),
            };
            t.add_row(vec![wave, (*cluster).to_string(), hosts.join(" ")]);
        }
    }
    format!("{}\n", render(&t))
}

/// The report with each distinct broken-check error shown once: checks that broke on the same
/// error (an unreachable database breaks every database check) become one entry naming how many
/// and which.
fn grouped(report: &Report) -> Report {
    let mut shown = report.clone();
    shown.broken.clear();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for b in &report.broken {
        match groups.iter_mut().find(|(e, _)| *e == b.error) {
            Some((_, ids)) => ids.push(b.id.clone()),
            None => groups.push((b.error.clone(), vec![b.id.clone()])),
        }
    }
    for (error, ids) in groups {
        let mut b = report
            .broken
            .iter()
            .find(|b| b.id == ids[0])
            .cloned()
            .unwrap_or_else(|| report.broken[0].clone());
        if ids.len() > 1 {
            b.error = format!(
                "{error} (the same for {} checks: {})",
                ids.len(),
                ids.join(", ")
            );
        }
        shown.broken.push(b);
    }
    shown
}
