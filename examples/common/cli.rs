//! The command-line interface every example shares: `-v`/`-q` and the log they set up (with
//! `RUST_LOG` taking precedence), `--json`, the exit-code table each `--help` ends with, and the
//! parsers for the values several tools take (durations, release lines).

use std::io::IsTerminal;
use std::time::Duration;

use clap::ArgAction;

/// Parses the command line. `--help` and `--version` print and exit 0; any other problem (an
/// unknown flag, a missing or bad value) prints one line, `<tool>: <what>` with the way to the
/// help, and exits 2 (clap's own rendering spans several lines).
pub(crate) fn parse<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            let program = std::env::args_os()
                .next()
                .map(std::path::PathBuf::from)
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "cs-upgrade".into());
            #[allow(clippy::print_stderr)] // The example owns the terminal.
            {
                eprintln!(
                    "{program}: {} (see --help)",
                    one_line(&e.render().to_string())
                );
            }
            std::process::exit(2);
        }
    }
}

/// Clap's error text as one line: the message and its details, without the usage and tips.
fn one_line(text: &str) -> String {
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() || line.starts_with("tip:") {
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    parts.join(" ")
}

/// `-v` (repeatable) and `-q`, flattened into every example's arguments.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub(crate) struct Verbosity {
    /// More detail on stderr: `-v` info, `-vv` debug, `-vvv` trace.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Quiet: no progress and no log below error on stderr (errors, refusals and the config's
    /// own warnings still show).
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
}

impl Verbosity {
    /// The log level the flags ask for (`RUST_LOG`, when set, overrides it).
    pub(crate) fn level(&self) -> &'static str {
        if self.quiet {
            return "error";
        }
        match self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }

    /// Logs to stderr: at `RUST_LOG` when it is set (and valid), else at the level of `-v`/`-q`.
    pub(crate) fn init(&self) {
        let filter = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .and_then(|_| tracing_subscriber::EnvFilter::try_from_default_env().ok())
            .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(self.level()));
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_env_filter(filter)
            .try_init();
    }

    /// Progress for a run: the bars (or lines) unless `-q`.
    pub(crate) fn progress(&self) -> std::sync::Arc<dyn cs_core::Progress> {
        if self.quiet {
            std::sync::Arc::new(cs_core::NoProgress)
        } else {
            std::sync::Arc::new(super::Bars::new())
        }
    }
}

/// `--json`, flattened into every operator tool's arguments.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub(crate) struct Json {
    /// Print one JSON document on stdout instead of text (progress and errors stay on stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Builds an `after_help` text: the tool's exit codes, then the logging note.
macro_rules! after_help {
    ($codes:literal) => {
        concat!(
            "Exit codes:\n",
            $codes,
            "\n\nLogging: -v, -vv, -vvv for more detail on stderr, -q for errors only. RUST_LOG, \
             when set, takes precedence (e.g. RUST_LOG=cs_backup=debug,warn)."
        )
    };
}

/// Tools whose answer is a check report (preflight, plan, diagnose, harden, probe).
pub(crate) const REPORT: &str = after_help!(
    "  0    every check passed (information only)\n  \
     1    something found: warnings, nothing failed\n  \
     2    a check failed, or an error (one line on stderr: bad input, unreachable, refused)\n  \
     255  a check could not reach a verdict"
);

/// Tools that do one job (backup, verify, restore, upgrade, rewrite-repo, lab).
pub(crate) const ACTION: &str = after_help!(
    "  0    done\n  \
     2    an error, a refusal or no confirmation (one line on stderr)"
);

/// Tools that work on many hosts (agent-facts, agent-upgrade).
pub(crate) const FLEET: &str = after_help!(
    "  0    every host done\n  \
     1    something found: a host failed (the table says which and why)\n  \
     2    an error, a refusal or no confirmation (one line on stderr)"
);

/// `rehearse`.
pub(crate) const REHEARSE: &str = after_help!(
    "  0    the rehearsal passed\n  \
     1    something found: a statement failed (the report names it)\n  \
     2    the rehearsal could not run (one line on stderr)"
);

/// The benchmarks.
pub(crate) const BENCH: &str = after_help!(
    "  0    measured (targets missed are reported, not failed)\n  \
     2    the benchmark could not run (one line on stderr)"
);

/// A duration in humantime form (`90s`, `10m`, `1h 30m`) or plain seconds (`600`).
///
/// # Errors
/// A message naming the value when it is neither.
pub(crate) fn duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 90s, 10m or 1h ({e})"))
}

/// A release line (`4.19`, `24.0`) given as the line or as any version on it (`4.19.0.0`,
/// `4.19.1`): the line.
///
/// # Errors
/// A message naming the value when it is neither.
pub(crate) fn release_line(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let parts: Vec<&str> = s.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 2 && parts.iter().all(numeric) {
        return Ok(s.to_string());
    }
    match cs_core::CsVersion::parse(s) {
        Ok(v) => Ok(v.line()),
        Err(_) => Err(format!(
            "`{s}` is not a release line (`4.19`) or a version on one (`4.19.0.0`)"
        )),
    }
}

/// Prints `value` as one pretty JSON document on stdout (a closed pipe is not an error).
pub(crate) fn print_json(value: &serde_json::Value) {
    use std::io::Write as _;
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_lines() {
        assert_eq!(duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(duration("10m"), Ok(Duration::from_secs(600)));
        assert!(duration("ten").is_err());
        assert_eq!(release_line("4.19").as_deref(), Ok("4.19"));
        assert_eq!(release_line("4.19.0.0").as_deref(), Ok("4.19"));
        assert!(release_line("four").is_err());
        assert_eq!(
            one_line(
                "error: the following required arguments were not provided:\n  --to <TO>\n\nUsage: plan --to <TO>\n\nFor more information, try '--help'.\n"
            ),
            "the following required arguments were not provided: --to <TO>"
        );
    }
}
