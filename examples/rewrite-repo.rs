//! Points a node's CloudStack package repositories at another release line, keeping every
//! other byte of the files.
//!
//! ```text
//! cargo run --example rewrite-repo -- --to 4.20 [--dry-run] [--stdout]
//!     [--host ssh://user@host:port [--key FILE] [--known-hosts FILE]
//!      [--sudo] [--sudo-password-file FILE]]
//!     [--mirror PREFIX]... [--root DIR] [FILE...]
//! ```
//!
//! Without FILEs it discovers `sources.list`, `sources.list.d/*.list|*.sources`,
//! `yum.repos.d/*.repo` and `zypp/repos.d/*.repo` (under `--root` when given). `--dry-run`
//! prints the unified diff and writes nothing; `--stdout` prints the rewritten text of the
//! single FILE and writes nothing. Otherwise it says which files it is about to rewrite and asks
//! `[y/N]` on a terminal (without one it refuses, exit 2, nothing written, unless `--yes`);
//! each changed file gets a timestamped backup copy beside it and is replaced atomically.
//! `--to` takes the line (`4.20`) or any version on it (`4.20.0.0`). `--json` prints one JSON
//! document (the diff and summaries, or the files rewritten). Any error ends the program with
//! exit status 2 and one line on standard error.

// An example owns the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cs_core::{Host, HostExt, Layout, LocalHost, SshHost};
use cs_repo::{Format, Rules};

#[path = "ssh_common/mod.rs"]
mod ssh_common;

/// Rewrites CloudStack apt/yum repository entries to a target release line.
#[derive(Debug, Parser)]
#[command(name = "rewrite-repo", after_help = common::cli::ACTION)]
struct Args {
    /// Target release line (`4.20`, `24.0`), or a version on it (`4.20.0.0`).
    #[arg(long, value_name = "LINE", value_parser = common::cli::release_line)]
    to: String,
    /// Print the unified diff; write nothing.
    #[arg(long, conflicts_with = "stdout")]
    dry_run: bool,
    /// Print the rewritten text of the single FILE; write nothing.
    #[arg(long)]
    stdout: bool,
    /// Act on a remote node: `ssh://[user@]host[:port]` (user root, port 22 by default).
    #[arg(long, value_name = "URL")]
    host: Option<String>,
    /// Private key for `--host` (default: the ssh-agent).
    #[arg(long, value_name = "FILE", requires = "host")]
    key: Option<PathBuf>,
    /// known_hosts file for `--host` (default `~/.ssh/known_hosts`; unknown hosts are refused).
    #[arg(long, value_name = "FILE", requires = "host")]
    known_hosts: Option<PathBuf>,
    #[command(flatten)]
    sudo: common::SudoArgs,
    /// Passphrase, bastions, ssh config for `--host`.
    #[command(flatten)]
    ssh: ssh_common::SshOptions,
    /// A mirror URL prefix whose entries are CloudStack's too: repeatable, or comma-separated.
    #[arg(long, value_name = "PREFIX", value_delimiter = ',')]
    mirror: Vec<String>,
    /// Look for repository files under this root instead of `/`.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Repository files (`*.list`, `*.sources`, `*.repo`); discovered when none is given.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Go ahead without asking (writing asks `[y/N]` on a terminal and refuses without one
    /// unless this is given; `--dry-run` and `--stdout` never ask).
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    output: common::cli::Json,
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

/// Why the run ended early: an error (one line), or a refusal already printed.
enum Stop {
    Error(String),
    Refused(ExitCode),
}

impl From<String> for Stop {
    fn from(e: String) -> Self {
        Stop::Error(e)
    }
}

impl From<&str> for Stop {
    fn from(e: &str) -> Self {
        Stop::Error(e.to_string())
    }
}

#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Refused(code)) => code,
        Err(Stop::Error(e)) => {
            eprintln!("rewrite-repo: {e}");
            ExitCode::from(2)
        }
    }
}

/// One-line error text with its causes.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    cs_core::error_chain(e)
}

async fn run(args: &Args) -> Result<(), Stop> {
    let mut rules = Rules::default();
    for m in &args.mirror {
        rules = rules.with_mirror(m).map_err(|e| chain(&e))?;
    }
    let host: Box<dyn Host> = match &args.host {
        Some(url) => Box::new(connect(url, args).await?),
        None => Box::new(LocalHost::new()),
    };
    let host = host.as_ref();
    if args.stdout && args.files.len() != 1 {
        return Err("--stdout takes exactly one FILE".into());
    }
    let files = files(args, host).await?;

    if args.stdout {
        let [file] = files.as_slice() else {
            return Err("--stdout takes exactly one FILE".into());
        };
        let format = Format::from_path(file)
            .ok_or_else(|| format!("{}: not a .list, .sources or .repo file", file.display()))?;
        let text = host.read_to_string(file).await.map_err(|e| chain(&e))?;
        let out = cs_repo::rewrite(&text, format, &args.to, &rules)
            .map_err(|e| format!("{}: {}", file.display(), chain(&e)))?;
        if args.output.json {
            common::cli::print_json(&serde_json::json!({
                "file": file,
                "text": out.text,
            }));
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to standard output: {e}"))?;
        return Ok(());
    }

    let plan = cs_repo::plan(host, &files, &args.to, &rules)
        .await
        .map_err(|e| chain(&e))?;
    if !plan.has_cloudstack_entries() {
        let searched: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        return Err(Stop::Error(format!(
            "{}: no CloudStack repository entry in {}",
            host.name(),
            if searched.is_empty() {
                "the standard directories (no repository file found)".to_string()
            } else {
                searched.join(", ")
            }
        )));
    }
    let summaries: Vec<String> = plan.files.iter().flat_map(|f| f.summary()).collect();
    if args.dry_run && args.output.json {
        common::cli::print_json(&serde_json::json!({
            "to": args.to,
            "diff": plan.diff(),
            "summary": summaries,
            "noop": plan.is_noop(),
        }));
        return Ok(());
    }
    if args.dry_run {
        print!("{}", plan.diff());
        for f in &plan.files {
            for line in f.summary() {
                eprintln!("{line}");
            }
        }
        if plan.is_noop() {
            eprintln!("already at {}: nothing to change", args.to);
        }
        return Ok(());
    }
    if !plan.is_noop() {
        let what = format!(
            "rewrite-repo: about to point the CloudStack entries on {} at {} (a backup copy of \
             each file is kept beside it):\n  {}",
            host.name(),
            args.to,
            summaries.join("\n  ")
        );
        common::confirm("rewrite-repo", &what, args.yes).map_err(Stop::Refused)?;
    }
    let applied = cs_repo::apply(host, &plan).await.map_err(|e| chain(&e))?;
    if args.output.json {
        common::cli::print_json(&serde_json::json!({
            "to": args.to,
            "summary": summaries,
            "rewritten": applied.iter().map(|a| serde_json::json!({
                "path": a.path,
                "backup": a.backup,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for line in &summaries {
        println!("{line}");
    }
    for a in &applied {
        println!(
            "rewrote {} (backup {})",
            a.path.display(),
            a.backup.display()
        );
    }
    if applied.is_empty() {
        println!("already at {}: nothing to change", args.to);
    }
    Ok(())
}

/// The files to act on: the arguments (made absolute for a local host), or discovered ones.
async fn files(args: &Args, host: &dyn Host) -> Result<Vec<PathBuf>, String> {
    if args.files.is_empty() {
        let mut layout = Layout::default();
        if let Some(root) = &args.root {
            layout = layout.rerooted(root);
        }
        return cs_repo::discover(host, &layout)
            .await
            .map_err(|e| chain(&e));
    }
    let mut out = Vec::new();
    for f in &args.files {
        let path = if f.is_absolute() {
            f.clone()
        } else if args.host.is_none() {
            std::env::current_dir()
                .map_err(|e| format!("cannot read the current directory: {e}"))?
                .join(f)
        } else {
            return Err(format!("{}: remote paths must be absolute", f.display()));
        };
        if Format::from_path(&path).is_none() {
            return Err(format!(
                "{}: not a repository file (expected sources.list, *.list, *.sources or *.repo)",
                path.display()
            ));
        }
        out.push(path);
    }
    Ok(out)
}

/// Connects to `ssh://[user@]host[:port]`.
async fn connect(url: &str, args: &Args) -> Result<SshHost, String> {
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| format!("--host {url}: expected ssh://[user@]host[:port]"))?;
    let rest = rest.trim_end_matches('/');
    let (user, addr) = match rest.rsplit_once('@') {
        Some((u, a)) => (Some(u), a),
        None => (None, rest),
    };
    if addr.is_empty() || user.is_some_and(str::is_empty) {
        return Err(format!("--host {url}: expected ssh://[user@]host[:port]"));
    }
    let has_port = match addr.rsplit_once(':') {
        Some((_, p)) => !addr.ends_with(']') && p.parse::<u16>().is_ok(),
        None => false,
    };
    // With --ssh-config, a port or user not in the URL is the config's to say.
    let from_config = args.ssh.ssh_config.is_some();
    let addr = if has_port || from_config {
        addr.to_string()
    } else {
        format!("{addr}:22")
    };
    let mut b = SshHost::builder(addr);
    match user {
        Some(u) => b = b.user(u),
        None if from_config => {}
        None => b = b.user("root"),
    }
    b = args.ssh.apply(b, args.key.as_deref())?;
    if let Some(kh) = &args.known_hosts {
        b = b.known_hosts(kh);
    }
    if let Some(sudo) = args.sudo.sudo()? {
        b = b.sudo(sudo);
    }
    b.connect().await.map_err(|e| chain(&e))
}
