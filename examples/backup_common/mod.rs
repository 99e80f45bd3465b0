//! What the backup examples share: progress bars on a terminal, plain lines otherwise, and a
//! one-line error exit.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cs_core::{Progress, ProgressUpdate, Unit};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

/// Progress bars on a terminal (stderr), one plain line every few seconds otherwise.
pub(crate) struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    last: Mutex<HashMap<String, Instant>>,
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
}

fn amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => HumanBytes(n).to_string(),
        _ => format!("{n} rows"),
    }
}

impl Progress for Bars {
    fn update(&self, u: ProgressUpdate) {
        let Some(multi) = &self.multi else {
            let mut last = self.last.lock().unwrap();
            let due = last
                .get(&u.task)
                .is_none_or(|t| t.elapsed() > Duration::from_secs(3));
            if due || u.finished {
                last.insert(u.task.clone(), Instant::now());
                let total = u
                    .total
                    .map(|t| format!(" of ~{}", amount(t, u.unit)))
                    .unwrap_or_default();
                #[allow(clippy::print_stderr)] // The example owns the terminal.
                {
                    eprintln!(
                        "{}: {}{total}{}",
                        u.task,
                        amount(u.done, u.unit),
                        if u.finished { " (done)" } else { "" }
                    );
                }
            }
            return;
        };
        let mut bars = self.bars.lock().unwrap();
        let bar = bars.entry(u.task.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(u.total.unwrap_or(0)));
            let tpl = match u.unit {
                Unit::Bytes => {
                    "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}"
                }
                _ => "{prefix:>16} [{bar:30}] {human_pos}/{human_len} {per_sec} {msg}",
            };
            bar.set_style(
                ProgressStyle::with_template(tpl)
                    .unwrap()
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

/// Prints one line (the error and its causes) and returns exit code 1.
pub(crate) fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    #[allow(clippy::print_stderr)] // The example owns the terminal.
    {
        eprintln!("error: {}", cs_core::error_chain(e));
    }
    ExitCode::FAILURE
}

/// Logs to stderr at `RUST_LOG` (default warn).
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}
