//! What the examples share: progress on a terminal (indicatif bars on stderr) or plain lines
//! otherwise, loading the orchestrator config with its warnings, and a one-line error exit.

#![allow(dead_code)] // Shared by several examples; each uses part of it.

pub(crate) mod cli;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cs_core::{Progress, ProgressUpdate, Unit};
use cs_upgrade::UpgradeConfig;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

/// Progress bars on a terminal (stderr), with rate and time left; a plain line per task
/// otherwise (at most one every two seconds per task, except messages of the run's steps, which
/// all print), with the rate since the task's first update and the time left when a total is
/// known.
pub(crate) struct Bars {
    multi: Option<MultiProgress>,
    /// Each task's bar and whether its style already shows a total (bar and ETA).
    bars: Mutex<HashMap<String, (ProgressBar, bool)>>,
    last: Mutex<HashMap<String, Plain>>,
}

/// What the plain-line mode remembers of a task.
struct Plain {
    /// When the last line printed (never yet: `None`), and its message.
    printed: Option<Instant>,
    message: Option<String>,
    /// When the task was first seen, with the amount done then (the rate's origin).
    first: Instant,
    first_done: u64,
    last_done: u64,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bars")
    }
}

impl Bars {
    pub(crate) fn new() -> Self {
        Bars {
            multi: std::io::stderr().is_terminal().then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Prints a line above the bars (or plainly).
    pub(crate) fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            #[allow(clippy::print_stderr)] // The example owns the terminal.
            None => eprintln!("{line}"),
        }
    }
}

fn amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => HumanBytes(n).to_string(),
        Unit::Rows => format!("{n} rows"),
        Unit::Hosts => format!("{n} hosts"),
        Unit::Steps => format!("{n} steps"),
        _ => n.to_string(),
    }
}

/// `rate` units a second, as the plain line shows it (`12.5 MiB/s`, `3400 rows/s`).
fn rate(per_sec: f64, unit: Unit) -> String {
    match unit {
        // Whole bytes: HumanBytes scales them.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Unit::Bytes => format!("{}/s", HumanBytes(per_sec as u64)),
        Unit::Rows => format!("{per_sec:.0} rows/s"),
        Unit::Hosts => format!("{per_sec:.2} hosts/s"),
        Unit::Steps => format!("{per_sec:.2} steps/s"),
        _ => format!("{per_sec:.1}/s"),
    }
}

/// The rate and time left of a plain line: `, 12.5 MiB/s, 40s left` (empty before the rate
/// can be told: less than half a second in, or nothing done yet).
fn plain_rate(p: &Plain, done: u64, total: Option<u64>, unit: Unit) -> String {
    // The time left only while the task runs (a finished task's estimate may overshoot).
    let secs = p.first.elapsed().as_secs_f64();
    let moved = done.saturating_sub(p.first_done);
    if secs < 0.5 || moved == 0 {
        return String::new();
    }
    #[allow(clippy::cast_precision_loss)] // A rate to show, not to count with.
    let per_sec = moved as f64 / secs;
    let left = total
        .filter(|t| *t > done)
        .map(|t| {
            #[allow(clippy::cast_precision_loss)]
            let secs = (t - done) as f64 / per_sec;
            let left = Duration::from_secs(secs.round().clamp(0.0, 1e9) as u64);
            format!(", {} left", humantime::format_duration(left))
        })
        .unwrap_or_default();
    format!(", {}{left}", rate(per_sec, unit))
}

/// The bar's template: with a total, a bar, the rate and the time left; without one, a
/// spinner, the amount and the rate.
fn bar_style(unit: Unit, with_total: bool) -> ProgressStyle {
    let tpl = match (unit, with_total) {
        (Unit::Bytes, true) => {
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}"
        }
        (Unit::Bytes, false) => "{prefix:>12} {spinner} {bytes} {bytes_per_sec} {msg}",
        (Unit::Rows, true) => {
            "{prefix:>12} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta} {msg}"
        }
        (Unit::Rows, false) => "{prefix:>12} {spinner} {human_pos} rows {per_sec} {msg}",
        (_, true) => "{prefix:>12} [{bar:30}] {pos}/{len} eta {eta} {msg}",
        (_, false) => "{prefix:>12} {spinner} {pos} {msg}",
    };
    ProgressStyle::with_template(tpl)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn update(&self, u: ProgressUpdate) {
        let Some(multi) = &self.multi else {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let p = last.entry(u.task.clone()).or_insert_with(|| Plain {
                printed: None,
                message: None,
                first: now,
                first_done: u.done,
                last_done: u.done,
            });
            let new_message = p.message != u.message;
            let moved = p.last_done != u.done;
            let due = p
                .printed
                .is_none_or(|t| t.elapsed() > Duration::from_secs(2));
            if (due && (p.printed.is_none() || new_message || moved))
                || (new_message && u.unit == Unit::Steps)
                || u.finished
            {
                let total = u
                    .total
                    .map(|t| format!(" of {}", amount(t, u.unit)))
                    .unwrap_or_default();
                let speed = plain_rate(p, u.done, u.total.filter(|_| !u.finished), u.unit);
                let message = u
                    .message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                #[allow(clippy::print_stderr)] // The example owns the terminal.
                {
                    eprintln!(
                        "[{}] {}{total}{speed}{message}",
                        u.task,
                        amount(u.done, u.unit)
                    );
                }
                p.printed = Some(now);
                p.message = u.message;
                p.last_done = u.done;
            }
            return;
        };
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        let (bar, with_total) = bars.entry(u.task.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(u.total.unwrap_or(0)));
            bar.set_style(bar_style(u.unit, u.total.is_some()));
            bar.set_prefix(u.task.clone());
            (bar, u.total.is_some())
        });
        if let Some(t) = u.total {
            if !*with_total {
                bar.set_style(bar_style(u.unit, true));
                *with_total = true;
            }
            bar.set_length(t.max(u.done));
        }
        bar.set_position(u.done);
        if let Some(m) = u.message {
            bar.set_message(m);
        }
        if u.finished {
            bar.finish();
        }
    }
}

/// Prints one line (`<program>: <error and its causes>`) and returns exit code 2. A login
/// refused while no password was given adds a line saying how to give one.
pub(crate) fn fail(program: &str, e: &(dyn std::error::Error + 'static)) -> ExitCode {
    let line = cs_core::error_chain(e);
    #[allow(clippy::print_stderr)] // The example owns the terminal.
    {
        eprintln!("{program}: {line}");
        if NO_PASSWORD.load(std::sync::atomic::Ordering::Relaxed) && line.contains("Access denied")
        {
            eprintln!(
                "{program}: no database password was given and there is no terminal to ask \
                 on: give it {PASSWORD_SOURCES}"
            );
        }
    }
    ExitCode::from(2)
}

/// Set when a database URL is used without a password and no terminal could ask for one:
/// [`fail`] then says how to give one when the server refuses the login.
static NO_PASSWORD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The ways to give a database password, for `--help` texts and the refusal.
pub(crate) const PASSWORD_SOURCES: &str = "in the URL, in the [client] group of --defaults-file      or ~/.my.cnf, or typed at the prompt on a terminal";

/// Parses a database URL given on the command line or in the environment (see [`database`]).
pub(crate) fn db_url(program: &str, raw: &str) -> Result<cs_core::DbUrl, ExitCode> {
    database(program, Some(raw), None)
}

/// The database to use: the URL (`raw`, taken as a plain string and parsed here rather than
/// by clap, whose errors would echo the value with its password; this error masks it), with
/// what it leaves out (password, port, `ssl-*`) filled from the MySQL option file
/// `defaults_file`, or from `~/.my.cnf` when the URL has no password; the option file alone
/// when there is no URL. With no password after that and a terminal on stdin, it asks for one
/// without echo.
pub(crate) fn database(
    program: &str,
    raw: Option<&str>,
    defaults_file: Option<&Path>,
) -> Result<cs_core::DbUrl, ExitCode> {
    use cs_core::{ClientOptions, DbUrl};
    let parsed = match raw {
        Some(raw) => Some(DbUrl::parse(raw).map_err(|e| fail(program, &e))?),
        None => None,
    };
    let cnf = match defaults_file {
        Some(f) => Some(ClientOptions::read(f).map_err(|e| fail(program, &e))?),
        None if parsed.as_ref().is_none_or(|u| u.password.is_empty()) => {
            ClientOptions::read_user_default().map_err(|e| fail(program, &e))?
        }
        None => None,
    };
    for w in cnf.iter().flat_map(|c| &c.warnings) {
        #[allow(clippy::print_stderr)] // The example owns the terminal.
        {
            eprintln!("{program}: warning: {w}");
        }
    }
    let mut url = match (raw, &cnf) {
        (Some(raw), Some(cnf)) => DbUrl::parse_under(raw, cnf).map_err(|e| fail(program, &e))?,
        (Some(_), None) => parsed.unwrap_or_else(|| unreachable!("parsed above")),
        (None, Some(cnf)) => DbUrl::from_option_file(cnf).map_err(|e| fail(program, &e))?,
        (None, None) => {
            #[allow(clippy::print_stderr)] // The example owns the terminal.
            {
                eprintln!(
                    "{program}: no database: give --db URL (or its environment variable) or \
                     --defaults-file FILE (no ~/.my.cnf found)"
                );
            }
            return Err(ExitCode::from(2));
        }
    };
    if url.password.is_empty() {
        if std::io::stdin().is_terminal() {
            let prompt = format!("{program}: password for {}@{}: ", url.user, url.addr());
            match rpassword::prompt_password(prompt) {
                Ok(p) => url.password = cs_core::Secret::new(p),
                Err(e) => return Err(fail(program, &e)),
            }
        } else {
            NO_PASSWORD.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(url)
}

/// Loads the config; its warnings (readable file, inline secrets) go to stderr.
pub(crate) fn load(program: &str, path: &Path) -> Result<UpgradeConfig, ExitCode> {
    match UpgradeConfig::load(path) {
        Ok((config, warnings)) => {
            for w in warnings {
                #[allow(clippy::print_stderr)] // The example owns the terminal.
                {
                    eprintln!("{program}: warning: {}", w.message);
                }
            }
            Ok(config)
        }
        Err(e) => Err(fail(program, &e)),
    }
}

/// Asks before a destructive action. `what` says what is about to happen (one or more lines).
/// With `yes` (the `--yes` flag) it goes ahead at once. On a terminal (stdin and stderr) it
/// asks `Go ahead? [y/N]` on stderr and goes ahead on `y` or `yes` only. Without a terminal it
/// refuses: nobody can answer, and a script must say `--yes` to destroy. A refusal prints one
/// line saying nothing changed and returns exit code 2.
pub(crate) fn confirm(program: &str, what: &str, yes: bool) -> Result<(), ExitCode> {
    use std::io::{BufRead, Write};
    if yes {
        return Ok(());
    }
    let refuse = |why: &str| {
        #[allow(clippy::print_stderr)] // The example owns the terminal.
        {
            eprintln!("{program}: {why}; nothing changed");
        }
        ExitCode::from(2)
    };
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        #[allow(clippy::print_stderr)] // The example owns the terminal.
        {
            eprintln!("{what}");
        }
        return Err(refuse(
            "not confirmed: no terminal to ask on (pass --yes to go ahead without asking)",
        ));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{what}\nGo ahead? [y/N] ");
    let _ = err.flush();
    drop(err);
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return Err(refuse("not confirmed (no answer)"));
    }
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(refuse("not confirmed")),
    }
}

/// `--sudo` and `--sudo-password-file` for the examples that reach nodes over SSH: log in as a
/// user that is not root and run everything as root through sudo.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct SudoArgs {
    /// Run every command and file operation as root through sudo (log in as a user that is
    /// not root, with sudo rights).
    #[arg(long)]
    pub(crate) sudo: bool,
    /// A file holding sudo's password (mode 0600, read once; implies --sudo). Without it,
    /// sudo runs with -n and needs a NOPASSWD rule.
    #[arg(long, value_name = "FILE")]
    pub(crate) sudo_password_file: Option<std::path::PathBuf>,
}

impl SudoArgs {
    /// The sudo setting for the SSH builder; `None` without either flag.
    ///
    /// # Errors
    /// The password file's problem (missing, readable by others, …), never its contents.
    pub(crate) fn sudo(&self) -> Result<Option<cs_core::Sudo>, String> {
        match &self.sudo_password_file {
            Some(file) => cs_core::Secret::from_file(file)
                .map(|pw| Some(cs_core::Sudo::with_password(pw)))
                .map_err(|e| format!("--sudo-password-file: {}", cs_core::error_chain(&e))),
            None if self.sudo => Ok(Some(cs_core::Sudo::without_password())),
            None => Ok(None),
        }
    }
}
