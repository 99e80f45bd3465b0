//! A runner process killed with SIGKILL, between steps and inside a step, resumes from its
//! journal: done steps are skipped, the interrupted step is re-applied, the rest applied.
//!
//! Each test re-executes this test binary (`--exact <test> --nocapture`) with [`CHILD_ENV`] set
//! to a temp dir; the child runs the plan and blocks at the chosen point, the parent waits for
//! the child's marker file, kills it, and runs the same plan again in-process.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cs_core::{
    JournalEntry, JournalEvent, NoProgress, Progress, ProgressUpdate, Runner, Step, StepError,
    StepOutcome, StepState, read_journal,
};

/// Set (to the work dir) in the child process.
const CHILD_ENV: &str = "CS_CORE_RUNNER_RESUME_CHILD_DIR";
/// The plan.
const STEPS: [&str; 4] = ["s1", "s2", "s3", "s4"];
/// How long any wait may take.
const WAIT: Duration = Duration::from_secs(30);

/// Where the child blocks until it is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockAt {
    /// Nowhere (the parent's resumed run).
    Nowhere,
    /// Inside `apply` of `s3`, after it wrote half its state.
    InsideApply,
    /// After `s2` is done and journaled, before `s3` is checked.
    BeforeCheck,
}

/// A step whose state is `<dir>/<id>.done` (or `<id>.partial` half-way), logging every apply and
/// rollback with the process id into `<dir>/calls.log`, which survives the kill.
#[derive(Debug)]
struct FileStep {
    id: &'static str,
    dir: PathBuf,
    block: BlockAt,
}

impl FileStep {
    fn log(&self, what: &str) {
        append(
            &self.dir.join("calls.log"),
            &format!("{what} {} {}\n", self.id, std::process::id()),
        );
    }
    fn done(&self) -> PathBuf {
        self.dir.join(format!("{}.done", self.id))
    }
    fn partial(&self) -> PathBuf {
        self.dir.join(format!("{}.partial", self.id))
    }
}

#[async_trait]
impl Step<()> for FileStep {
    fn id(&self) -> &str {
        self.id
    }

    async fn check(&self, _: &()) -> Result<StepState, StepError> {
        Ok(if self.done().exists() {
            StepState::Done
        } else if self.partial().exists() {
            StepState::Partial("half written".into())
        } else {
            StepState::Pending
        })
    }

    async fn apply(&self, _: &()) -> Result<(), StepError> {
        self.log("apply");
        std::fs::write(self.partial(), "half").map_err(|e| StepError::with_source("write", e))?;
        if self.block == BlockAt::InsideApply && self.id == "s3" {
            std::fs::write(self.dir.join("inside-s3"), "").unwrap();
            // Killed here; never returns in a passing test.
            tokio::time::sleep(Duration::from_secs(120)).await;
            return Err(StepError::new("the parent did not kill this process"));
        }
        std::fs::write(self.done(), "done").map_err(|e| StepError::with_source("write", e))?;
        std::fs::remove_file(self.partial()).map_err(|e| StepError::with_source("remove", e))?;
        Ok(())
    }

    async fn rollback(&self, _: &()) -> Result<(), StepError> {
        self.log("rollback");
        for f in [self.done(), self.partial()] {
            match std::fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StepError::with_source("remove", e)),
            }
        }
        Ok(())
    }
}

/// Progress that blocks (the whole process) when the run is about to check `s3`.
#[derive(Debug)]
struct BlockBeforeS3 {
    marker: PathBuf,
}

impl Progress for BlockBeforeS3 {
    fn update(&self, update: ProgressUpdate) {
        if update.message.as_deref() == Some("s3: check") {
            std::fs::write(&self.marker, "").unwrap();
            // Killed here.
            std::thread::sleep(Duration::from_secs(120));
        }
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_data().unwrap();
}

fn runner(dir: &Path, block: BlockAt) -> Runner<()> {
    let steps = STEPS
        .iter()
        .map(|id| {
            Box::new(FileStep {
                id,
                dir: dir.to_owned(),
                block,
            }) as Box<dyn Step<()>>
        })
        .collect();
    Runner::new(dir.join("journal.jsonl"), steps)
}

/// The child's side: run the plan, blocking where asked. Only returns if something is wrong.
async fn child(dir: &Path, block: BlockAt) {
    let runner = runner(dir, block);
    let result = match block {
        BlockAt::BeforeCheck => {
            let progress = BlockBeforeS3 {
                marker: dir.join("before-s3"),
            };
            runner.run(&(), &progress).await
        }
        _ => runner.run(&(), &NoProgress).await,
    };
    panic!("the child was not killed; its run ended with {result:?}");
}

/// Starts this test again as a child process working in `dir`.
fn spawn_child(test: &str, dir: &Path) -> Child {
    let exe = std::env::current_exe().unwrap();
    #[allow(clippy::disallowed_methods)] // The test kills a real child process.
    let child = std::process::Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
}

/// Waits until `marker` exists, failing if the child exits first or time runs out.
fn wait_for_marker(child: &mut Child, marker: &Path) {
    let deadline = Instant::now() + WAIT;
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the child exited ({status}) before reaching {}",
                marker.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the child did not reach {} within {WAIT:?}",
            marker.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs the child and reaps it.
fn kill(child: &mut Child) {
    child.kill().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the child was killed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "the killed child did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The calls log as `(what, step, by the child?)`.
fn calls(dir: &Path) -> Vec<(String, String, bool)> {
    let me = std::process::id().to_string();
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            (parts[0].to_string(), parts[1].to_string(), parts[2] != me)
        })
        .collect()
}

fn call(what: &str, step: &str, by_child: bool) -> (String, String, bool) {
    (what.to_string(), step.to_string(), by_child)
}

/// The journal as `run event step` lines.
fn story(entries: &[JournalEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let text = match &e.event {
                JournalEvent::RunStart { kind, .. } => format!("start {kind:?}"),
                JournalEvent::Check { step, state } => {
                    let state = match state {
                        StepState::Done => "done",
                        StepState::Pending => "pending",
                        _ => "partial",
                    };
                    format!("check {step} {state}")
                }
                JournalEvent::ApplyStart { step } => format!("apply_start {step}"),
                JournalEvent::ApplyDone { step, .. } => format!("apply_done {step}"),
                JournalEvent::RollbackStart { step } => format!("rollback_start {step}"),
                JournalEvent::RollbackDone { step, .. } => format!("rollback_done {step}"),
                JournalEvent::RunFinished => "finished".to_string(),
                other => format!("{other:?}"),
            };
            format!("{} {text}", e.run)
        })
        .collect()
}

/// What the killed child's run wrote for `s1` and `s2`.
const CHILD_S1_S2: [&str; 9] = [
    "1 start Apply",
    "1 check s1 pending",
    "1 apply_start s1",
    "1 check s1 done",
    "1 apply_done s1",
    "1 check s2 pending",
    "1 apply_start s2",
    "1 check s2 done",
    "1 apply_done s2",
];

#[tokio::test]
async fn killed_inside_a_step_resumes_and_reapplies_it() {
    const TEST: &str = "killed_inside_a_step_resumes_and_reapplies_it";
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir), BlockAt::InsideApply).await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut child = spawn_child(TEST, dir);
    wait_for_marker(&mut child, &dir.join("inside-s3"));
    kill(&mut child);

    let journal = read_journal(&dir.join("journal.jsonl")).unwrap();
    let mut expected: Vec<&str> = CHILD_S1_S2.to_vec();
    expected.extend(["1 check s3 pending", "1 apply_start s3"]);
    assert_eq!(story(&journal), expected, "the killed run's journal");
    assert!(dir.join("s3.partial").exists());

    let runner = runner(dir, BlockAt::Nowhere);
    let plan = runner.plan(&()).await.unwrap();
    assert_eq!(plan.interrupted.as_deref(), Some("s3"));
    assert_eq!(plan.would_apply(), ["s3", "s4"]);

    let report = runner.run(&(), &NoProgress).await.unwrap();
    assert_eq!(report.run, 2);
    assert_eq!(report.ids_with(StepOutcome::Skipped), ["s1", "s2"]);
    assert_eq!(report.ids_with(StepOutcome::Applied), ["s3", "s4"]);
    assert_eq!(
        calls(dir),
        [
            call("apply", "s1", true),
            call("apply", "s2", true),
            call("apply", "s3", true),
            call("apply", "s3", false),
            call("apply", "s4", false),
        ]
    );
    let journal = read_journal(&dir.join("journal.jsonl")).unwrap();
    expected.extend([
        "2 start Apply",
        "2 check s1 done",
        "2 check s2 done",
        "2 check s3 partial",
        "2 apply_start s3",
        "2 check s3 done",
        "2 apply_done s3",
        "2 check s4 pending",
        "2 apply_start s4",
        "2 check s4 done",
        "2 apply_done s4",
        "2 finished",
    ]);
    assert_eq!(story(&journal), expected, "the whole story");
    assert!(journal.iter().all(|e| e.ts.ends_with('Z')));

    // The journal is the upgrade's record: rolling back undoes what the killed run applied too.
    let report = runner.rollback_all(&(), &NoProgress).await.unwrap();
    assert_eq!(report.rollback_order, ["s4", "s3", "s2", "s1"]);
    assert!(
        STEPS
            .iter()
            .all(|s| !dir.join(format!("{s}.done")).exists())
    );
}

#[tokio::test]
async fn killed_between_steps_resumes_with_the_next_step() {
    const TEST: &str = "killed_between_steps_resumes_with_the_next_step";
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir), BlockAt::BeforeCheck).await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut child = spawn_child(TEST, dir);
    wait_for_marker(&mut child, &dir.join("before-s3"));
    kill(&mut child);

    let journal = read_journal(&dir.join("journal.jsonl")).unwrap();
    assert_eq!(story(&journal), CHILD_S1_S2, "the killed run's journal");

    let runner = runner(dir, BlockAt::Nowhere);
    let plan = runner.plan(&()).await.unwrap();
    assert_eq!(plan.interrupted, None);
    assert_eq!(plan.applied, ["s2", "s1"]);

    let report = runner.run(&(), &NoProgress).await.unwrap();
    assert_eq!(report.ids_with(StepOutcome::Skipped), ["s1", "s2"]);
    assert_eq!(report.ids_with(StepOutcome::Applied), ["s3", "s4"]);
    assert_eq!(
        calls(dir),
        [
            call("apply", "s1", true),
            call("apply", "s2", true),
            call("apply", "s3", false),
            call("apply", "s4", false),
        ]
    );
    let journal = read_journal(&dir.join("journal.jsonl")).unwrap();
    let mut expected: Vec<&str> = CHILD_S1_S2.to_vec();
    expected.extend([
        "2 start Apply",
        "2 check s1 done",
        "2 check s2 done",
        "2 check s3 pending",
        "2 apply_start s3",
        "2 check s3 done",
        "2 apply_done s3",
        "2 check s4 pending",
        "2 apply_start s4",
        "2 check s4 done",
        "2 apply_done s4",
        "2 finished",
    ]);
    assert_eq!(story(&journal), expected, "the whole story");

    // A third run finds everything done.
    let report = runner.run(&(), &NoProgress).await.unwrap();
    assert_eq!(report.ids_with(StepOutcome::Skipped), STEPS);
    assert_eq!(calls(dir).len(), 4);
}
