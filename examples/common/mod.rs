//! What the examples share: progress on a terminal (indicatif bars on stderr) or plain lines
//! otherwise, loading the orchestrator config with its warnings, and a one-line error exit.

#![allow(dead_code)] // Shared by several examples; each uses part of it.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cs_core::{Progress, ProgressUpdate, Unit};
use cs_upgrade::UpgradeConfig;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

/// Progress bars on a terminal (stderr), a plain line per message otherwise (at most one every
/// two seconds per task, except messages of the run's steps, which all print).
pub(crate) struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    last: Mutex<HashMap<String, (Instant, Option<String>)>>,
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

impl Progress for Bars {
    fn update(&self, u: ProgressUpdate) {
        let Some(multi) = &self.multi else {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let prev = last.get(&u.task);
            let new_message = prev.is_none_or(|(_, m)| *m != u.message);
            let due = prev.is_none_or(|(t, _)| t.elapsed() > Duration::from_secs(2));
            if (new_message && (due || u.unit == Unit::Steps)) || u.finished {
                last.insert(u.task.clone(), (Instant::now(), u.message.clone()));
                let total = u
                    .total
                    .map(|t| format!(" of {}", amount(t, u.unit)))
                    .unwrap_or_default();
                let message = u.message.map(|m| format!(": {m}")).unwrap_or_default();
                #[allow(clippy::print_stderr)] // The example owns the terminal.
                {
                    eprintln!("[{}] {}{total}{message}", u.task, amount(u.done, u.unit));
                }
            }
            return;
        };
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(u.task.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(u.total.unwrap_or(0)));
            let tpl = match u.unit {
                Unit::Bytes => "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg}",
                _ => "{prefix:>12} [{bar:30}] {pos}/{len} {msg}",
            };
            bar.set_style(
                ProgressStyle::with_template(tpl)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(u.task.clone());
            bar
        });
        if let Some(t) = u.total {
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

/// Prints one line (`<program>: <error and its causes>`) and returns exit code 2.
pub(crate) fn fail(program: &str, e: &(dyn std::error::Error + 'static)) -> ExitCode {
    #[allow(clippy::print_stderr)] // The example owns the terminal.
    {
        eprintln!("{program}: {}", cs_core::error_chain(e));
    }
    ExitCode::from(2)
}

/// Parses a database URL given on the command line or in the environment. It is taken as a
/// plain string and parsed here rather than by clap, whose errors would echo the value with
/// its password; this error masks it.
#[allow(dead_code)] // Not every example that includes this module takes a database.
pub(crate) fn db_url(program: &str, raw: &str) -> Result<cs_core::DbUrl, ExitCode> {
    cs_core::DbUrl::parse(raw).map_err(|e| fail(program, &e))
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

/// Logs to stderr at `RUST_LOG` (default warn).
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
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
