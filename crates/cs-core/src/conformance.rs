//! The host conformance suite: what every [`Host`] implementation must do, as async functions
//! that panic with a clear message on the first violation (they are tests).
//!
//! Every case takes the host and a scratch directory on it (absolute, empty or missing; cases
//! work in their own subdirectories). [`run_all`] runs them all; [`fake_host`] gives a
//! [`FakeHost`] that emulates exactly the commands the suite uses, so the fake is held to the
//! same contract as [`LocalHost`](crate::LocalHost) and `SshHost`:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let host = cs_core::conformance::fake_host("fake");
//! cs_core::conformance::run_all_on_fake(&host, std::path::Path::new("/scratch")).await;
//! # });
//! ```
//!
//! Commands the suite runs on the host: `printf`, `cat`, `sh -c` (a few fixed scripts), `seq`,
//! `env`, `sleep`, `true`, `id -u`, `chown`, and for [`FailingWrite::Auto`] `mount`/`umount`
//! (root), `chmod` (non-root) or `tee`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fake::{self, FakeHost};
use crate::host::FileKind;
use crate::{Cmd, Host, HostError, Output, error_chain};

/// Limit for commands that should finish quickly: a hang fails the case instead of the run.
const QUICK: Duration = Duration::from_secs(60);
/// Size of the large-output case: 50 MiB.
const LARGE: usize = 50 * 1024 * 1024;
/// Standard error written before the large output (2 MiB of `e\n`).
const LARGE_STDERR: usize = 2 * 1024 * 1024;
/// The script of the large-output case: all of stderr first, so an implementation that drains
/// stdout only would stall on a full stderr window.
const LARGE_SCRIPT: &str = "yes e | head -c 2097152 >&2; head -c 52428800 /dev/zero";
/// A script that writes to stderr and exits 5.
const STDERR_SCRIPT: &str = "echo oops >&2; exit 5";
/// A script killed by SIGKILL (exit code 137).
const KILL_SCRIPT: &str = "kill -9 $$";
/// Lines of the ordered-output case.
const SEQ_LINES: u32 = 200_000;

/// Arguments that a shell would mangle: each must reach the program verbatim.
pub const TRICKY_ARGS: &[&str] = &[
    "plain",
    "two words",
    "  leading and trailing  ",
    "it's",
    "say \"hi\"",
    "'single' \"double\" 'mixed\"",
    "$HOME",
    "${PATH}",
    "a;b",
    "a && b || c",
    "a|b",
    "*",
    "?",
    "[a-z]",
    "~",
    "~root",
    "back\\slash",
    "trailing backslash\\",
    "new\nline",
    "tab\tchar",
    "",
    "-n",
    "--",
    "`id`",
    "$(id)",
    "!event",
    "#hash",
    "{a,b}",
    "<in >out 2>&1",
    "%s %d %%",
    "non-ASCII: é ß 日本 🚀",
];

/// How [`failed_write_leaves_old_file`] makes a write fail.
#[derive(Default)]
#[non_exhaustive]
pub enum FailingWrite<'a> {
    /// As root, a 64 KiB tmpfs mounted over a directory (the write runs out of space half-way);
    /// as root where mounting is refused, a file name so long that the temporary file's name
    /// exceeds the 255-byte limit; as another user, a read-only directory.
    #[default]
    Auto,
    /// Called with the target path after the old file is written; it must make the next
    /// `write_atomic` to that path fail (for a [`FakeHost`]: [`FakeHost::fail_writes_to`]).
    Hook(&'a (dyn Fn(&Path) + Send + Sync)),
}

impl std::fmt::Debug for FailingWrite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailingWrite::Auto => f.write_str("Auto"),
            FailingWrite::Hook(_) => f.write_str("Hook(..)"),
        }
    }
}

/// Options for [`run_all_with`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Options<'a> {
    /// How the failed-write case makes a write fail.
    pub failing_write: FailingWrite<'a>,
}

impl<'a> Options<'a> {
    /// Options with this way of failing a write.
    pub fn failing_write(failing_write: FailingWrite<'a>) -> Self {
        Options { failing_write }
    }
}

/// Runs every case with default [`Options`]; panics on the first violation.
///
/// # Panics
/// When the host breaks the [`Host`] contract, naming the case and what differed.
pub async fn run_all(host: &dyn Host, scratch: &Path) {
    run_all_with(host, scratch, &Options::default()).await;
}

/// Runs every case; panics on the first violation.
///
/// # Panics
/// When the host breaks the [`Host`] contract, naming the case and what differed.
pub async fn run_all_with(host: &dyn Host, scratch: &Path, options: &Options<'_>) {
    let started = Instant::now();
    must(
        host,
        "setup",
        "create the scratch directory",
        host.create_dir_all(scratch, 0o755).await,
    );
    args_arrive_verbatim(host, scratch).await;
    exit_codes_are_ok(host, scratch).await;
    stdin_reaches_command(host, scratch).await;
    large_output_arrives_whole(host, scratch).await;
    output_keeps_its_order(host, scratch).await;
    env_reaches_command(host, scratch).await;
    timeout_is_enforced(host, scratch).await;
    missing_program_fails_to_start(host, scratch).await;
    missing_paths_are_not_found(host, scratch).await;
    write_atomic_sets_and_keeps_mode(host, scratch).await;
    write_atomic_keeps_owner(host, scratch).await;
    write_into_missing_dir_is_not_found(host, scratch).await;
    failed_write_leaves_old_file(host, scratch, &options.failing_write).await;
    directories_and_listings(host, scratch).await;
    remove_file_removes_only_files(host, scratch).await;
    tracing::debug!(host = host.name(), elapsed = ?started.elapsed(), "host conformance passed");
}

/// [`run_all_with`] for a [`FakeHost`] from [`fake_host`], failing writes through
/// [`FakeHost::fail_writes_to`].
///
/// # Panics
/// When the fake breaks the [`Host`] contract.
pub async fn run_all_on_fake(host: &FakeHost, scratch: &Path) {
    let hook = |p: &Path| host.fail_writes_to(p);
    run_all_with(
        host,
        scratch,
        &Options::failing_write(FailingWrite::Hook(&hook)),
    )
    .await;
}

#[track_caller]
fn violation(host: &dyn Host, case: &str, what: impl std::fmt::Display) -> ! {
    panic!(
        "host conformance: `{case}` failed on {}: {what}",
        host.name()
    )
}

#[track_caller]
fn must<T>(host: &dyn Host, case: &str, what: &str, r: Result<T, HostError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => violation(host, case, format!("{what}: {}", error_chain(&e))),
    }
}

#[track_caller]
fn expect_eq<T: PartialEq + std::fmt::Debug>(
    host: &dyn Host,
    case: &str,
    what: &str,
    got: T,
    want: T,
) {
    if got != want {
        violation(host, case, format!("{what}: got {got:?}, want {want:?}"));
    }
}

/// Compares bytes without printing megabytes: length and first difference.
#[track_caller]
fn expect_bytes(host: &dyn Host, case: &str, what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let show = |b: &[u8]| String::from_utf8_lossy(&b[at..(at + 40).min(b.len())]).into_owned();
        violation(
            host,
            case,
            format!(
                "{what}: got {} bytes, want {}; first difference at byte {at}: {:?} vs {:?}",
                got.len(),
                want.len(),
                show(got),
                show(want)
            ),
        );
    }
}

async fn run(host: &dyn Host, case: &str, cmd: Cmd) -> Output {
    let shown = cmd.to_string();
    let r = host.run(&cmd).await;
    must(host, case, &format!("run `{shown}`"), r)
}

async fn dir(host: &dyn Host, case: &str, scratch: &Path, name: &str) -> PathBuf {
    let d = scratch.join(name);
    must(
        host,
        case,
        "create its directory",
        host.create_dir_all(&d, 0o755).await,
    );
    d
}

/// Proves that arguments reach the program verbatim, whatever a shell would do with them:
/// spaces, quotes, `$`, `;`, globs, backslashes, newlines, empty strings, option-like words
/// and non-ASCII (an SSH implementation must quote each one).
pub async fn args_arrive_verbatim(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "args_arrive_verbatim";
    let out = run(
        host,
        CASE,
        Cmd::new("printf")
            .arg("%s\\0")
            .args(TRICKY_ARGS.iter().copied())
            .timeout(QUICK),
    )
    .await;
    expect_eq(host, CASE, "exit code", out.code, 0);
    let got: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut want: Vec<String> = TRICKY_ARGS.iter().map(|s| (*s).to_string()).collect();
    want.push(String::new()); // After the last NUL.
    expect_eq(host, CASE, "arguments as printed", got, want);
}

/// Proves that a non-zero exit is `Ok` with its code, that standard error is captured apart
/// from standard output, and that a command killed by a signal reports `128 + n`.
pub async fn exit_codes_are_ok(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "exit_codes_are_ok";
    for code in [0, 1, 3, 42, 255] {
        let out = run(
            host,
            CASE,
            Cmd::new("sh")
                .arg("-c")
                .arg(format!("exit {code}"))
                .timeout(QUICK),
        )
        .await;
        expect_eq(
            host,
            CASE,
            &format!("code of `exit {code}`"),
            out.code,
            code,
        );
    }
    let out = run(
        host,
        CASE,
        Cmd::new("sh").arg("-c").arg(STDERR_SCRIPT).timeout(QUICK),
    )
    .await;
    expect_eq(host, CASE, "code", out.code, 5);
    expect_eq(
        host,
        CASE,
        "stderr",
        out.stderr_lossy(),
        "oops\n".to_string(),
    );
    expect_eq(host, CASE, "stdout", out.stdout_lossy(), String::new());
    let out = run(
        host,
        CASE,
        Cmd::new("sh").arg("-c").arg(KILL_SCRIPT).timeout(QUICK),
    )
    .await;
    expect_eq(
        host,
        CASE,
        "code of a command killed by SIGKILL",
        out.code,
        137,
    );
}

/// Proves that [`Cmd::stdin`] reaches the command byte for byte (binary, 4 MiB, more than an
/// SSH window, while the command echoes it back), and that without it stdin is empty rather
/// than left open (`cat` must not hang).
pub async fn stdin_reaches_command(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "stdin_reaches_command";
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let out = run(
        host,
        CASE,
        Cmd::new("cat").stdin(data.clone()).timeout(QUICK),
    )
    .await;
    expect_eq(host, CASE, "exit code", out.code, 0);
    expect_bytes(host, CASE, "stdout of cat", &out.stdout, &data);
    let out = run(host, CASE, Cmd::new("cat").timeout(QUICK)).await;
    expect_eq(host, CASE, "exit code without stdin", out.code, 0);
    expect_eq(host, CASE, "stdout without stdin", out.stdout.len(), 0);
}

/// Proves that 50 MiB of standard output arrive whole and unaltered while 2 MiB of standard
/// error are written first (both streams must be drained together).
pub async fn large_output_arrives_whole(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "large_output_arrives_whole";
    let out = run(
        host,
        CASE,
        Cmd::new("sh")
            .arg("-c")
            .arg(LARGE_SCRIPT)
            .timeout(Duration::from_secs(300)),
    )
    .await;
    expect_eq(host, CASE, "exit code", out.code, 0);
    expect_eq(host, CASE, "stdout length", out.stdout.len(), LARGE);
    if let Some(i) = out.stdout.iter().position(|b| *b != 0) {
        violation(host, CASE, format!("stdout byte {i} is not zero"));
    }
    expect_eq(host, CASE, "stderr length", out.stderr.len(), LARGE_STDERR);
    if out.stderr.chunks(2).any(|c| c != b"e\n") {
        violation(host, CASE, "stderr is not `e\\n` repeated");
    }
}

/// Proves that output arrives in order, without lost or repeated chunks (`seq`, 1.3 MB).
pub async fn output_keeps_its_order(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "output_keeps_its_order";
    let out = run(
        host,
        CASE,
        Cmd::new("seq")
            .arg("1")
            .arg(SEQ_LINES.to_string())
            .timeout(QUICK),
    )
    .await;
    expect_eq(host, CASE, "exit code", out.code, 0);
    expect_bytes(
        host,
        CASE,
        "output of seq",
        &out.stdout,
        seq_output(SEQ_LINES).as_bytes(),
    );
}

fn seq_output(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

/// Proves that environment variables set with [`Cmd::env`] reach the command verbatim,
/// including spaces, quotes, `$` and empty values.
pub async fn env_reaches_command(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "env_reaches_command";
    let a = "value with spaces $HOME 'single' \"double\" ; *";
    let out = run(
        host,
        CASE,
        Cmd::new("env")
            .env("CS_CONFORMANCE_A", a)
            .env("CS_CONFORMANCE_B", "")
            .timeout(QUICK),
    )
    .await;
    expect_eq(host, CASE, "exit code", out.code, 0);
    let text = out.stdout_lossy();
    for want in [
        format!("CS_CONFORMANCE_A={a}"),
        "CS_CONFORMANCE_B=".to_string(),
    ] {
        if !text.lines().any(|l| l == want) {
            violation(
                host,
                CASE,
                format!("`{want}` missing from the output of env"),
            );
        }
    }
}

/// Proves that a command running past [`Cmd::timeout`] fails with [`HostError::Timeout`] soon
/// after the limit, and that the host still runs commands afterwards.
pub async fn timeout_is_enforced(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "timeout_is_enforced";
    let started = Instant::now();
    let r = host
        .run(
            &Cmd::new("sleep")
                .arg("30")
                .timeout(Duration::from_millis(500)),
        )
        .await;
    match r {
        Err(HostError::Timeout { .. }) => {}
        Err(e) => violation(
            host,
            CASE,
            format!("want a timeout, got {}", error_chain(&e)),
        ),
        Ok(out) => violation(
            host,
            CASE,
            format!("want a timeout, got exit code {}", out.code),
        ),
    }
    if started.elapsed() > Duration::from_secs(15) {
        violation(
            host,
            CASE,
            format!("timing out took {:?}", started.elapsed()),
        );
    }
    let out = run(host, CASE, Cmd::new("true").timeout(QUICK)).await;
    expect_eq(
        host,
        CASE,
        "exit code of a command after the timeout",
        out.code,
        0,
    );
}

/// Proves that a program that does not exist is an error ([`HostError::Spawn`]) or, on hosts
/// that go through a shell, exit code 127, never a success.
pub async fn missing_program_fails_to_start(host: &dyn Host, _scratch: &Path) {
    const CASE: &str = "missing_program_fails_to_start";
    match host
        .run(&Cmd::new("cs-conformance-no-such-program").timeout(QUICK))
        .await
    {
        Err(HostError::Spawn { .. }) => {}
        Ok(out) if out.code == 127 => {}
        Ok(out) => violation(
            host,
            CASE,
            format!("exit code {}, want 127 or Spawn", out.code),
        ),
        Err(e) => violation(host, CASE, format!("want Spawn, got {}", error_chain(&e))),
    }
}

/// Proves that `read`, `stat`, `list_dir` and `remove_file` of a missing path are
/// [`HostError::NotFound`], which callers rely on to tell "absent" from "broken".
pub async fn missing_paths_are_not_found(host: &dyn Host, scratch: &Path) {
    const CASE: &str = "missing_paths_are_not_found";
    let d = dir(host, CASE, scratch, "missing").await;
    let p = d.join("nope");
    let check = |what: &str, r: Result<(), HostError>| match r {
        Err(e) if e.is_not_found() => {}
        Err(e) => violation(
            host,
            CASE,
            format!("{what}: want NotFound, got {}", error_chain(&e)),
        ),
        Ok(()) => violation(host, CASE, format!("{what}: want NotFound, got Ok")),
    };
    check("read", host.read(&p).await.map(drop));
    check("stat", host.stat(&p).await.map(drop));
    check("list_dir", host.list_dir(&p).await.map(drop));
    check("remove_file", host.remove_file(&p).await);
}

/// Proves `write_atomic`'s modes: `Some(m)` sets `m` on new and existing files, `None` keeps
/// an existing file's mode and gives a new file `0o600`; contents round-trip exactly (binary,
/// empty, 1 MiB); no temporary file is left beside the target.
pub async fn write_atomic_sets_and_keeps_mode(host: &dyn Host, scratch: &Path) {
    const CASE: &str = "write_atomic_sets_and_keeps_mode";
    let d = dir(host, CASE, scratch, "modes").await;
    let a = d.join("a");
    let write = |p: PathBuf, data: Vec<u8>, mode: Option<u32>| async move {
        let r = host.write_atomic(&p, &data, mode).await;
        must(host, CASE, &format!("write_atomic {}", p.display()), r);
    };
    let read = |p: PathBuf| async move {
        let r = host.read(&p).await;
        must(host, CASE, &format!("read {}", p.display()), r)
    };
    let stat = |p: PathBuf| async move {
        let r = host.stat(&p).await;
        must(host, CASE, &format!("stat {}", p.display()), r)
    };

    write(a.clone(), b"one\n".to_vec(), Some(0o640)).await;
    expect_bytes(host, CASE, "contents", &read(a.clone()).await, b"one\n");
    let m = stat(a.clone()).await;
    expect_eq(host, CASE, "kind", m.kind, FileKind::File);
    expect_eq(
        host,
        CASE,
        "mode of a new file with Some(0o640)",
        m.mode,
        0o640,
    );
    expect_eq(host, CASE, "size", m.size, 4);

    write(a.clone(), b"two, longer\n".to_vec(), None).await;
    expect_bytes(
        host,
        CASE,
        "replaced contents",
        &read(a.clone()).await,
        b"two, longer\n",
    );
    let m = stat(a.clone()).await;
    expect_eq(host, CASE, "mode kept with None", m.mode, 0o640);
    expect_eq(host, CASE, "size after replace", m.size, 12);

    write(a.clone(), b"3".to_vec(), Some(0o604)).await;
    expect_eq(
        host,
        CASE,
        "mode changed with Some(0o604)",
        stat(a.clone()).await.mode,
        0o604,
    );

    let b = d.join("b");
    write(b.clone(), b"new".to_vec(), None).await;
    expect_eq(
        host,
        CASE,
        "mode of a new file with None",
        stat(b).await.mode,
        0o600,
    );

    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 256) as u8).collect();
    write(d.join("big"), big.clone(), Some(0o644)).await;
    expect_bytes(
        host,
        CASE,
        "1 MiB binary file",
        &read(d.join("big")).await,
        &big,
    );

    write(d.join("empty"), Vec::new(), Some(0o644)).await;
    expect_eq(
        host,
        CASE,
        "empty file",
        read(d.join("empty")).await.len(),
        0,
    );

    let names = must(host, CASE, "list_dir", host.list_dir(&d).await)
        .into_iter()
        .map(|e| e.name)
        .collect::<Vec<_>>();
    expect_eq(
        host,
        CASE,
        "directory after writes (no temporary files)",
        names,
        vec!["a".into(), "b".into(), "big".into(), "empty".to_string()],
    );
}

/// Proves that `write_atomic` keeps an existing file's owner and group: the file is chowned to
/// uid 4242, gid 4343 first (needs root; as another user the unchanged owner is checked).
pub async fn write_atomic_keeps_owner(host: &dyn Host, scratch: &Path) {
    const CASE: &str = "write_atomic_keeps_owner";
    let d = dir(host, CASE, scratch, "owner").await;
    let f = d.join("owned");
    must(
        host,
        CASE,
        "write",
        host.write_atomic(&f, b"v1\n", Some(0o644)).await,
    );
    let path = f.to_string_lossy().into_owned();
    let chown = run(
        host,
        CASE,
        Cmd::new("chown").arg("4242:4343").arg(&path).timeout(QUICK),
    )
    .await;
    let before = must(host, CASE, "stat", host.stat(&f).await);
    if chown.success() {
        expect_eq(
            host,
            CASE,
            "owner after chown",
            (before.uid, before.gid),
            (4242, 4343),
        );
    } else {
        tracing::info!(
            host = host.name(),
            "chown refused (not root): checking the unchanged owner"
        );
    }
    for mode in [None, Some(0o640)] {
        must(
            host,
            CASE,
            "write_atomic",
            host.write_atomic(&f, b"v2\n", mode).await,
        );
        let after = must(host, CASE, "stat", host.stat(&f).await);
        expect_eq(
            host,
            CASE,
            &format!("owner after write_atomic with mode {mode:?}"),
            (after.uid, after.gid),
            (before.uid, before.gid),
        );
        expect_eq(host, CASE, "mode", after.mode, mode.unwrap_or(0o644));
    }
    expect_bytes(
        host,
        CASE,
        "contents",
        &must(host, CASE, "read", host.read(&f).await),
        b"v2\n",
    );
}

/// Proves that writing into a directory that does not exist is [`HostError::NotFound`].
pub async fn write_into_missing_dir_is_not_found(host: &dyn Host, scratch: &Path) {
    const CASE: &str = "write_into_missing_dir_is_not_found";
    let p = scratch.join("no-such-dir").join("f");
    match host.write_atomic(&p, b"x", None).await {
        Err(e) if e.is_not_found() => {}
        Err(e) => violation(
            host,
            CASE,
            format!("want NotFound, got {}", error_chain(&e)),
        ),
        Ok(()) => violation(host, CASE, "want NotFound, got Ok"),
    }
}

/// How the failed-write case arranged the failure, to undo it afterwards.
enum Arranged {
    Tmpfs,
    ReadOnly,
    Other,
}

/// Proves that a `write_atomic` that fails half-way (disk full, read-only directory, or the
/// [`FailingWrite::Hook`]'s failure) returns an error, leaves the old file intact and leaves
/// no temporary file behind.
pub async fn failed_write_leaves_old_file(host: &dyn Host, scratch: &Path, how: &FailingWrite<'_>) {
    const CASE: &str = "failed_write_leaves_old_file";
    let d = dir(host, CASE, scratch, "failing").await;
    let mut target = d.join("target");
    let old = b"old contents\n";
    let arranged = match how {
        FailingWrite::Hook(hook) => {
            must(
                host,
                CASE,
                "write the old file",
                host.write_atomic(&target, old, Some(0o644)).await,
            );
            hook(&target);
            Arranged::Other
        }
        FailingWrite::Auto => {
            let id = run(host, CASE, Cmd::new("id").arg("-u").timeout(QUICK)).await;
            let root = id.stdout_lossy().trim() == "0";
            let dir_arg = d.to_string_lossy().into_owned();
            let mounted = root
                && run(
                    host,
                    CASE,
                    Cmd::new("mount")
                        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "cs-conformance"])
                        .arg(&dir_arg)
                        .timeout(QUICK),
                )
                .await
                .success();
            if mounted {
                must(
                    host,
                    CASE,
                    "write the old file",
                    host.write_atomic(&target, old, Some(0o644)).await,
                );
                Arranged::Tmpfs
            } else if root {
                // The temporary file's name is longer than the target's: past 255 bytes.
                target = d.join("n".repeat(250));
                let path = target.to_string_lossy().into_owned();
                let out = run(
                    host,
                    CASE,
                    Cmd::new("tee").arg(&path).stdin(&old[..]).timeout(QUICK),
                )
                .await;
                expect_eq(host, CASE, "exit code of tee", out.code, 0);
                Arranged::Other
            } else {
                must(
                    host,
                    CASE,
                    "write the old file",
                    host.write_atomic(&target, old, Some(0o644)).await,
                );
                let out = run(
                    host,
                    CASE,
                    Cmd::new("chmod").arg("0555").arg(&dir_arg).timeout(QUICK),
                )
                .await;
                expect_eq(host, CASE, "exit code of chmod", out.code, 0);
                Arranged::ReadOnly
            }
        }
    };
    let big = vec![b'x'; 256 * 1024];
    let result = host.write_atomic(&target, &big, None).await;
    let after = host.read(&target).await;
    let listing = host.list_dir(&d).await;
    // Undo before judging, so a violation leaves no mount or read-only directory behind.
    let dir_arg = d.to_string_lossy().into_owned();
    match arranged {
        Arranged::Tmpfs => {
            let out = run(host, CASE, Cmd::new("umount").arg(&dir_arg).timeout(QUICK)).await;
            expect_eq(host, CASE, "exit code of umount", out.code, 0);
        }
        Arranged::ReadOnly => {
            run(
                host,
                CASE,
                Cmd::new("chmod").arg("0755").arg(&dir_arg).timeout(QUICK),
            )
            .await;
        }
        Arranged::Other => {}
    }
    if result.is_ok() {
        violation(host, CASE, "the write that should fail succeeded");
    }
    expect_bytes(
        host,
        CASE,
        "old file after the failed write",
        &must(host, CASE, "read", after),
        old,
    );
    let names: Vec<String> = must(host, CASE, "list_dir", listing)
        .into_iter()
        .map(|e| e.name)
        .collect();
    let want = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    expect_eq(
        host,
        CASE,
        "directory after the failed write (no temporary file)",
        names,
        vec![want],
    );
}

/// Proves `create_dir_all` (parents created, repeating it is fine, a file in the way is an
/// error), `stat` kinds and sizes, and `list_dir` (sorted by name, no `.`/`..`, kinds right,
/// a file is not a directory).
pub async fn directories_and_listings(host: &dyn Host, scratch: &Path) {
    const CASE: &str = "directories_and_listings";
    let tree = scratch.join("tree");
    let deep = tree.join("a/b/c");
    must(
        host,
        CASE,
        "create_dir_all",
        host.create_dir_all(&deep, 0o755).await,
    );
    must(
        host,
        CASE,
        "create_dir_all again",
        host.create_dir_all(&deep, 0o755).await,
    );
    must(
        host,
        CASE,
        "create_dir_all of a parent",
        host.create_dir_all(&tree.join("a"), 0o755).await,
    );
    for p in [tree.join("a"), tree.join("a/b"), deep.clone()] {
        let m = must(host, CASE, "stat", host.stat(&p).await);
        expect_eq(
            host,
            CASE,
            &format!("kind of {}", p.display()),
            m.kind,
            FileKind::Dir,
        );
    }
    for (name, data) in [
        ("file", &b"12345"[..]),
        ("Z", b""),
        ("a.txt", b"a"),
        ("b.txt", b"b"),
    ] {
        must(
            host,
            CASE,
            "write",
            host.write_atomic(&tree.join(name), data, Some(0o644)).await,
        );
    }
    let m = must(host, CASE, "stat", host.stat(&tree.join("file")).await);
    expect_eq(host, CASE, "kind of a file", m.kind, FileKind::File);
    expect_eq(host, CASE, "size of a file", m.size, 5);
    if host
        .create_dir_all(&tree.join("file/sub"), 0o755)
        .await
        .is_ok()
    {
        violation(host, CASE, "create_dir_all through a file succeeded");
    }
    let entries = must(host, CASE, "list_dir", host.list_dir(&tree).await);
    let got: Vec<(String, FileKind)> = entries.into_iter().map(|e| (e.name, e.meta.kind)).collect();
    let want: Vec<(String, FileKind)> = [
        ("Z", FileKind::File),
        ("a", FileKind::Dir),
        ("a.txt", FileKind::File),
        ("b.txt", FileKind::File),
        ("file", FileKind::File),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_string(), k))
    .collect();
    expect_eq(host, CASE, "listing (sorted, no . or ..)", got, want);
    if host.list_dir(&tree.join("file")).await.is_ok() {
        violation(host, CASE, "list_dir of a file succeeded");
    }
}

/// Proves that `remove_file` removes a file (then `stat` is NotFound) and refuses a directory,
/// which stays.
pub async fn remove_file_removes_only_files(host: &dyn Host, scratch: &Path) {
    const CASE: &str = "remove_file_removes_only_files";
    let d = dir(host, CASE, scratch, "remove").await;
    let f = d.join("f");
    must(host, CASE, "write", host.write_atomic(&f, b"x", None).await);
    must(host, CASE, "remove_file", host.remove_file(&f).await);
    match host.stat(&f).await {
        Err(e) if e.is_not_found() => {}
        other => violation(
            host,
            CASE,
            format!("stat after remove: want NotFound, got {other:?}"),
        ),
    }
    let sub = d.join("sub");
    must(
        host,
        CASE,
        "create_dir_all",
        host.create_dir_all(&sub, 0o755).await,
    );
    if host.remove_file(&sub).await.is_ok() {
        violation(host, CASE, "remove_file of a directory succeeded");
    }
    let m = must(host, CASE, "stat", host.stat(&sub).await);
    expect_eq(
        host,
        CASE,
        "directory after remove_file refused",
        m.kind,
        FileKind::Dir,
    );
}

// ---------------------------------------------------------------------------------------------
// The fake.

/// A [`FakeHost`] whose handlers emulate exactly the commands this suite runs (`printf`, `cat`,
/// the suite's `sh -c` scripts, `seq`, `env`, `sleep` with its duration, `true`, `id -u`,
/// `chown`), registered through the public [`FakeHost::on`] API. Run it with
/// [`run_all_on_fake`].
pub fn fake_host(name: impl Into<String>) -> FakeHost {
    FakeHost::new(name)
        .on("printf", |inv, _| fake::ok(fake_printf(&inv.args)))
        .on("cat", |inv, fs| {
            if inv.args.is_empty() {
                return fake::ok(inv.stdin.to_vec());
            }
            let mut out = Vec::new();
            for a in &inv.args {
                match fs.read(Path::new(a)) {
                    Some(d) => out.extend_from_slice(d),
                    None => return fake::exit(1, format!("cat: {a}: No such file or directory\n")),
                }
            }
            fake::ok(out)
        })
        .on("sh", |inv, _| match inv.args.as_slice() {
            [c, script] if c == "-c" => fake_sh(script),
            _ => fake::exit(2, "sh: the fake runs only `sh -c SCRIPT`\n"),
        })
        .on("seq", |inv, _| {
            let nums: Vec<u32> = inv.args.iter().filter_map(|a| a.parse().ok()).collect();
            match nums.as_slice() {
                [last] => fake::ok((1..=*last).map(|i| format!("{i}\n")).collect::<String>()),
                [first, last] => fake::ok(
                    (*first..=*last)
                        .map(|i| format!("{i}\n"))
                        .collect::<String>(),
                ),
                _ => fake::exit(1, "seq: bad arguments\n"),
            }
        })
        .on("env", |inv, _| {
            let mut out = String::from("PATH=/usr/sbin:/usr/bin:/sbin:/bin\n");
            for (k, v) in inv.env {
                out.push_str(&format!("{k}={v}\n"));
            }
            fake::ok(out)
        })
        .on("sleep", |_, _| fake::ok(""))
        .with_duration("sleep", |inv| {
            let secs = inv
                .args
                .first()
                .and_then(|a| a.parse::<f64>().ok())
                .unwrap_or(0.0);
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
        })
        .on("true", |_, _| fake::ok(""))
        .on("id", |inv, _| match inv.args.as_slice() {
            [u] if u == "-u" => fake::ok("0\n"),
            _ => fake::ok("uid=0(root) gid=0(root) groups=0(root)\n"),
        })
        .on("chown", |inv, fs| {
            let [owner, path] = inv.args.as_slice() else {
                return fake::exit(1, "chown: the fake takes UID:GID PATH\n");
            };
            let ids = owner
                .split_once(':')
                .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
            let Some((uid, gid)) = ids else {
                return fake::exit(1, format!("chown: invalid owner `{owner}`\n"));
            };
            if fs.meta(Path::new(path)).is_none() {
                return fake::exit(
                    1,
                    format!("chown: cannot access '{path}': No such file or directory\n"),
                );
            }
            fs.chown(Path::new(path), uid, gid);
            fake::ok("")
        })
}

/// `printf FORMAT ARGS...` for formats of one `%s` plus literal text with `\0`, `\n`, `\t`,
/// `\\` escapes, repeated per argument as printf does.
fn fake_printf(args: &[String]) -> Vec<u8> {
    let Some((format, rest)) = args.split_first() else {
        return Vec::new();
    };
    let unescape = |s: &str| -> Vec<u8> {
        let mut out = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('0') => out.push(0),
                    Some('n') => out.push(b'\n'),
                    Some('t') => out.push(b'\t'),
                    Some('\\') => out.push(b'\\'),
                    Some(o) => {
                        out.push(b'\\');
                        out.extend_from_slice(o.to_string().as_bytes());
                    }
                    None => out.push(b'\\'),
                }
            } else {
                out.extend_from_slice(c.to_string().as_bytes());
            }
        }
        out
    };
    let Some((before, after)) = format.split_once("%s") else {
        return unescape(format);
    };
    let (before, after) = (unescape(before), unescape(after));
    let mut out = Vec::new();
    let args: Vec<&str> = if rest.is_empty() {
        vec![""]
    } else {
        rest.iter().map(String::as_str).collect()
    };
    for a in args {
        out.extend_from_slice(&before);
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(&after);
    }
    out
}

/// The suite's `sh -c` scripts.
fn fake_sh(script: &str) -> Output {
    if let Some(code) = script.strip_prefix("exit ").and_then(|c| c.parse().ok()) {
        return fake::exit(code, "");
    }
    match script {
        STDERR_SCRIPT => fake::exit(5, "oops\n"),
        KILL_SCRIPT => fake::exit(137, ""),
        LARGE_SCRIPT => Output {
            code: 0,
            stdout: vec![0; LARGE],
            stderr: b"e\n".repeat(LARGE_STDERR / 2),
        },
        _ => fake::exit(
            2,
            format!("sh: the fake does not know the script `{script}`\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_printf_repeats_the_format_per_argument() {
        let args: Vec<String> = ["%s\\0", "a b", ""].iter().map(|s| s.to_string()).collect();
        assert_eq!(fake_printf(&args), b"a b\0\0");
    }

    #[test]
    fn fake_seq_matches_the_expected_text() {
        assert_eq!(seq_output(3), "1\n2\n3\n");
    }
}
