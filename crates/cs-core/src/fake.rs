//! `FakeHost`: an in-memory host with scripted commands that records every call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::host::{DirEntry, FileKind, FileMeta};
use crate::{Cmd, Host, HostError, Output};

/// One call made to a [`FakeHost`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `run`, with the command as `Cmd`'s `Display` prints it (secrets masked).
    Run(String),
    /// `read`.
    Read(PathBuf),
    /// `write_atomic`.
    Write(PathBuf),
    /// `stat`.
    Stat(PathBuf),
    /// `list_dir`.
    List(PathBuf),
    /// `create_dir_all`.
    Mkdir(PathBuf),
    /// `remove_file`.
    Remove(PathBuf),
}

#[derive(Debug, Clone)]
enum Node {
    File { data: Vec<u8>, meta: FileMeta },
    Dir { meta: FileMeta },
}

/// The fake host's filesystem, handed to command handlers so a fake command can change files
/// (a fake `apt-get install` rewriting a config file, say).
#[derive(Debug, Default)]
pub struct FakeFs {
    nodes: BTreeMap<PathBuf, Node>,
}

fn file_meta(kind: FileKind, mode: u32, size: u64) -> FileMeta {
    FileMeta {
        kind,
        mode,
        uid: 0,
        gid: 0,
        size,
        mtime: 0,
    }
}

impl FakeFs {
    /// Creates a directory and its parents (existing ones are kept).
    pub fn mkdir_p(&mut self, path: &Path, mode: u32) {
        for anc in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            self.nodes.entry(anc.to_path_buf()).or_insert(Node::Dir {
                meta: file_meta(FileKind::Dir, mode, 0),
            });
        }
    }

    /// Writes a file, creating its parent directories; an existing file keeps its owner, and
    /// its mode when `mode` is `None` (new files get `0o644` then).
    pub fn write(&mut self, path: &Path, data: impl Into<Vec<u8>>, mode: Option<u32>) {
        if let Some(parent) = path.parent() {
            self.mkdir_p(parent, 0o755);
        }
        let data = data.into();
        let (uid, gid, old_mode) = match self.nodes.get(path) {
            Some(Node::File { meta, .. }) => (meta.uid, meta.gid, Some(meta.mode)),
            _ => (0, 0, None),
        };
        let mut meta = file_meta(
            FileKind::File,
            mode.or(old_mode).unwrap_or(0o644),
            data.len() as u64,
        );
        meta.uid = uid;
        meta.gid = gid;
        self.nodes
            .insert(path.to_path_buf(), Node::File { data, meta });
    }

    /// Sets the owner of an existing file or directory.
    pub fn chown(&mut self, path: &Path, uid: u32, gid: u32) {
        if let Some(Node::File { meta, .. } | Node::Dir { meta }) = self.nodes.get_mut(path) {
            meta.uid = uid;
            meta.gid = gid;
        }
    }

    /// A file's contents.
    pub fn read(&self, path: &Path) -> Option<&[u8]> {
        match self.nodes.get(path) {
            Some(Node::File { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// Metadata of a file or directory.
    pub fn meta(&self, path: &Path) -> Option<&FileMeta> {
        match self.nodes.get(path) {
            Some(Node::File { meta, .. } | Node::Dir { meta }) => Some(meta),
            None => None,
        }
    }

    /// Removes a file; returns whether it existed.
    pub fn remove(&mut self, path: &Path) -> bool {
        matches!(self.nodes.get(path), Some(Node::File { .. })) && self.nodes.remove(path).is_some()
    }

    /// Every file path, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::File { .. }))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn is_dir(&self, path: &Path) -> bool {
        matches!(self.nodes.get(path), Some(Node::Dir { .. }))
    }
}

/// What a command handler receives.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// The program.
    pub program: &'a str,
    /// The arguments, verbatim.
    pub args: Vec<String>,
    /// Environment variables set on the command.
    pub env: &'a [(String, String)],
    /// Standard input (empty when none was given).
    pub stdin: &'a [u8],
}

type Handler = Arc<dyn Fn(&Invocation<'_>, &mut FakeFs) -> Output + Send + Sync>;
type DurationFn = Arc<dyn Fn(&Invocation<'_>) -> Duration + Send + Sync>;

#[derive(Default)]
struct State {
    fs: FakeFs,
    handlers: Vec<(String, Handler)>,
    durations: Vec<(String, DurationFn)>,
    calls: Vec<Call>,
    failing_writes: BTreeSet<PathBuf>,
}

/// An in-memory host for behaviour tests: files live in a map, commands are answered by
/// handlers registered per program, and every call is recorded.
///
/// A program without a handler fails to start ([`HostError::Spawn`]), as a missing binary does.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cs_core::{Cmd, Host, HostExt, fake::{self, FakeHost, Call}};
/// let host = FakeHost::new("kvm1")
///     .with_file("/etc/cloudstack/agent/agent.properties", "guid=abc\n")
///     .on("systemctl", |_inv, _fs| fake::ok(""));
/// host.run_ok(&Cmd::new("systemctl").arg("restart").arg("cloudstack-agent")).await.unwrap();
/// assert_eq!(host.commands(), ["systemctl restart cloudstack-agent"]);
/// # });
/// ```
pub struct FakeHost {
    name: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for FakeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHost")
            .field("name", &self.name)
            .finish()
    }
}

/// A successful [`Output`] with this standard output.
pub fn ok(stdout: impl Into<Vec<u8>>) -> Output {
    Output {
        code: 0,
        stdout: stdout.into(),
        stderr: Vec::new(),
    }
}

/// A failed [`Output`] with this exit code and standard error.
pub fn exit(code: i32, stderr: impl Into<Vec<u8>>) -> Output {
    Output {
        code,
        stdout: Vec::new(),
        stderr: stderr.into(),
    }
}

impl FakeHost {
    /// An empty host (only `/` exists).
    pub fn new(name: impl Into<String>) -> Self {
        let mut state = State::default();
        state.fs.mkdir_p(Path::new("/"), 0o755);
        FakeHost {
            name: name.into(),
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked leaves the state usable; tests see the panic themselves.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a file (mode `0o644`, parents created).
    #[must_use]
    pub fn with_file(self, path: impl AsRef<Path>, data: impl Into<Vec<u8>>) -> Self {
        self.lock().fs.write(path.as_ref(), data, None);
        self
    }

    /// Adds a file with a mode.
    #[must_use]
    pub fn with_file_mode(
        self,
        path: impl AsRef<Path>,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Self {
        self.lock().fs.write(path.as_ref(), data, Some(mode));
        self
    }

    /// Adds a directory (and its parents).
    #[must_use]
    pub fn with_dir(self, path: impl AsRef<Path>) -> Self {
        self.lock().fs.mkdir_p(path.as_ref(), 0o755);
        self
    }

    /// Answers `program` with `handler` (the newest handler for a program wins).
    #[must_use]
    pub fn on<F>(self, program: impl Into<String>, handler: F) -> Self
    where
        F: Fn(&Invocation<'_>, &mut FakeFs) -> Output + Send + Sync + 'static,
    {
        self.handle(program, handler);
        self
    }

    /// Like [`FakeHost::on`], on a shared reference (to change a reply mid-test).
    pub fn handle<F>(&self, program: impl Into<String>, handler: F)
    where
        F: Fn(&Invocation<'_>, &mut FakeFs) -> Output + Send + Sync + 'static,
    {
        self.lock()
            .handlers
            .push((program.into(), Arc::new(handler)));
    }

    /// Declares how long `program` runs (simulated: nothing waits). A command whose
    /// [`Cmd::timeout`] is shorter fails with [`HostError::Timeout`] instead of reaching its
    /// handler, as it would on a real host (a fake `sleep`, a hanging `systemctl`).
    #[must_use]
    pub fn with_duration<F>(self, program: impl Into<String>, duration: F) -> Self
    where
        F: Fn(&Invocation<'_>) -> Duration + Send + Sync + 'static,
    {
        self.lock()
            .durations
            .push((program.into(), Arc::new(duration)));
        self
    }

    /// Makes every later `write_atomic` to `path` fail with "no space left on device" after
    /// writing part of the temporary file, as a full disk would.
    pub fn fail_writes_to(&self, path: impl AsRef<Path>) {
        self.lock()
            .failing_writes
            .insert(path.as_ref().to_path_buf());
    }

    /// Runs `f` on the filesystem (to inspect or change it).
    pub fn with_fs<T>(&self, f: impl FnOnce(&mut FakeFs) -> T) -> T {
        f(&mut self.lock().fs)
    }

    /// A file's contents, if it exists.
    pub fn file(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.lock().fs.read(path.as_ref()).map(<[u8]>::to_vec)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The commands run so far, as an operator would type them (secrets masked).
    pub fn commands(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Run(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn not_found(&self, path: &Path) -> HostError {
        HostError::NotFound {
            host: self.name.clone(),
            path: path.to_path_buf(),
        }
    }
}

#[async_trait]
impl Host for FakeHost {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, cmd: &Cmd) -> Result<Output, HostError> {
        let (handler, duration) = {
            let mut st = self.lock();
            st.calls.push(Call::Run(cmd.to_string()));
            let handler = st
                .handlers
                .iter()
                .rev()
                .find(|(p, _)| p == cmd.program())
                .map(|(_, h)| h.clone());
            let duration = st
                .durations
                .iter()
                .rev()
                .find(|(p, _)| p == cmd.program())
                .map(|(_, d)| d.clone());
            (handler, duration)
        };
        let Some(handler) = handler else {
            return Err(HostError::Spawn {
                host: self.name.clone(),
                program: cmd.program().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no handler registered on the fake host",
                ),
            });
        };
        let inv = Invocation {
            program: cmd.program(),
            args: cmd.argv().map(str::to_string).collect(),
            env: cmd.envs(),
            stdin: cmd.stdin_data().unwrap_or(&[]),
        };
        if let (Some(duration), Some(limit)) = (duration, cmd.timeout_value())
            && duration(&inv) > limit
        {
            return Err(HostError::Timeout {
                host: self.name.clone(),
                what: format!("`{cmd}`"),
                after: limit,
            });
        }
        let mut st = self.lock();
        Ok(handler(&inv, &mut st.fs))
    }

    async fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        let mut st = self.lock();
        st.calls.push(Call::Read(path.to_path_buf()));
        match st.fs.nodes.get(path) {
            Some(Node::File { data, .. }) => Ok(data.clone()),
            Some(Node::Dir { .. }) => Err(HostError::Io {
                host: self.name.clone(),
                op: "read",
                path: path.to_path_buf(),
                source: std::io::Error::other("is a directory"),
            }),
            None => Err(self.not_found(path)),
        }
    }

    async fn write_atomic(
        &self,
        path: &Path,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), HostError> {
        let mut st = self.lock();
        st.calls.push(Call::Write(path.to_path_buf()));
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !st.fs.is_dir(parent) {
            return Err(self.not_found(parent));
        }
        if st.failing_writes.contains(path) {
            return Err(HostError::Io {
                host: self.name.clone(),
                op: "write",
                path: path.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        let mode = mode
            .or_else(|| st.fs.meta(path).map(|m| m.mode))
            .unwrap_or(0o600);
        st.fs.write(path, data, Some(mode));
        Ok(())
    }

    async fn stat(&self, path: &Path) -> Result<FileMeta, HostError> {
        let mut st = self.lock();
        st.calls.push(Call::Stat(path.to_path_buf()));
        st.fs
            .meta(path)
            .cloned()
            .ok_or_else(|| self.not_found(path))
    }

    async fn list_dir(&self, path: &Path) -> Result<Vec<DirEntry>, HostError> {
        let mut st = self.lock();
        st.calls.push(Call::List(path.to_path_buf()));
        if !st.fs.is_dir(path) {
            return Err(self.not_found(path));
        }
        Ok(st
            .fs
            .nodes
            .iter()
            .filter(|(p, _)| p.parent() == Some(path) && p.as_path() != path)
            .map(|(p, n)| DirEntry {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                meta: match n {
                    Node::File { meta, .. } | Node::Dir { meta } => meta.clone(),
                },
            })
            .collect())
    }

    async fn create_dir_all(&self, path: &Path, mode: u32) -> Result<(), HostError> {
        let mut st = self.lock();
        st.calls.push(Call::Mkdir(path.to_path_buf()));
        if let Some(bad) = path
            .ancestors()
            .find(|a| matches!(st.fs.nodes.get(*a), Some(Node::File { .. })))
        {
            return Err(HostError::Io {
                host: self.name.clone(),
                op: "mkdir",
                path: bad.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            });
        }
        st.fs.mkdir_p(path, mode);
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        let mut st = self.lock();
        st.calls.push(Call::Remove(path.to_path_buf()));
        if st.fs.remove(path) {
            Ok(())
        } else {
            Err(self.not_found(path))
        }
    }
}
