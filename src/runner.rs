//! Runs one action executable for a job (SPEC §4), with bounded memory and a hard timeout.
//!
//! An action is any executable file (`actorTemplates/<actor>/actions/<name>`). [`run_action`]
//! starts it in the service's directory, writes the job JSON to its stdin and closes it, reads
//! stdout and stderr line by line at the same time, and waits for it to exit or for the timeout.
//!
//! Decisions an operator may want to know:
//! - **Environment**: the child inherits cockpit's environment plus [`ActionJob::env`] (which wins).
//! - **Process group**: on Unix the child leads its own process group, so a terminal's Ctrl-C does
//!   not reach actions, and a timeout (or dropping the future) kills the whole group with
//!   `SIGKILL` — grandchildren such as a `sleep` started by a shell script included. A normal exit
//!   kills nothing: an action may legitimately leave a daemon running.
//! - **Output after exit**: if something still holds stdout/stderr open after the child exited
//!   (a daemon that did not redirect its output), reading stops after [`OUTPUT_GRACE`] and a
//!   `level: "error"` line says so; the job's state is not affected.
//! - **Logs**: empty lines are skipped; a line keeps at most [`MAX_LOG_LINE_BYTES`] bytes (the rest
//!   is replaced by `…[truncated]`); at most [`ActionJob::max_log_lines`] lines are kept, the first
//!   half and the last half, with one `level: "error"` line in between counting what was dropped.
//!   The failure itself (timeout, exit status, spawn error) is only in [`ActionOutcome::error`],
//!   not repeated in the logs: the caller appends it as the job's last `error` line if it wants.
//! - **Data**: if the last non-empty stdout line is exactly a JSON object `{"data": {...}}` (one
//!   key, an object value, at most [`MAX_DATA_LINE_BYTES`]), that object becomes
//!   [`ActionOutcome::data`] — only when the action succeeded. The line also stays in the logs.
//! - **Time**: [`LogLine::epoch`] is seconds since the Unix epoch as an `f64` (the original AYS unit,
//!   with sub-second precision).

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest log line kept, in bytes; the rest of a longer line is dropped.
pub const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

/// Longest stdout line that may still carry `{"data": ...}`, in bytes (1 MiB).
pub const MAX_DATA_LINE_BYTES: usize = 1024 * 1024;

/// How long output is still read after the child exited (or was killed) before giving up on
/// pipes that a leftover process keeps open.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for a child to be reaped after `SIGKILL` before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Lines in flight between the readers and the collector; bounds memory and applies back-pressure.
const LINE_CHANNEL: usize = 64;

/// How often a spawn is retried when the executable is momentarily busy (`ETXTBSY`, e.g. a
/// concurrent fork still holds a write handle on a just-written script).
const SPAWN_ATTEMPTS: u32 = 5;

/// One action to run.
#[derive(Debug, Clone)]
pub struct ActionJob {
    /// The executable (`actorTemplates/<actor>/actions/<name>`); a relative path is made absolute
    /// against cockpit's working directory, never against `cwd`.
    pub program: PathBuf,
    /// The service's directory, the action's working directory; it must already exist.
    pub cwd: PathBuf,
    /// The job description written to the action's stdin (`repo, run, action, args, service, ...`).
    pub stdin_json: Value,
    /// Extra environment variables (`COCKPIT_REPO`, `COCKPIT_RUN`, ...), on top of cockpit's own.
    pub env: Vec<(String, String)>,
    /// How long the action may run before its process group is killed.
    pub timeout: Duration,
    /// How many output lines are kept at most (half from the start, half from the end).
    pub max_log_lines: usize,
}

/// The end state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    /// The action exited with status 0.
    Ok,
    /// The action could not start, exited non-zero, died from a signal or timed out.
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// The action's standard output.
    Stdout,
    /// The action's standard error.
    Stderr,
    /// The runner itself: dropped lines, output left open after exit (and, added by callers,
    /// the job's error).
    Error,
}

impl LogLevel {
    /// The level as stored and shown by the API: `stdout`, `stderr` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Stdout => "stdout",
            LogLevel::Stderr => "stderr",
            LogLevel::Error => "error",
        }
    }
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the line was read: seconds since the Unix epoch, with sub-second precision.
    pub epoch: f64,
    /// Which stream the line came from, or `error` for the runner's own lines.
    pub level: LogLevel,
    /// The line's text, without its line ending, lossily decoded as UTF-8.
    pub log: String,
}

/// What happened when an action ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// `ok` when the action exited 0, `error` otherwise.
    pub state: ActionState,
    /// The kept output lines in the order they were read, then the runner's own notes; the
    /// failure message is not repeated here (see `error`).
    pub logs: Vec<LogLine>,
    /// The service data from a last stdout line `{"data": {...}}`, only when the action succeeded.
    pub data: Option<Map<String, Value>>,
    /// Why the job failed (`exit status 3`, `timed out after 600s`, ...); `None` on success.
    pub error: Option<String>,
}

/// Runs `job` to completion and reports its state, logs and data; never panics on a bad program.
pub async fn run_action(job: ActionJob) -> ActionOutcome {
    run_action_reporting(job, |_| {}).await
}

/// [`run_action`], telling `started` the process group id as soon as the process runs (so that a
/// caller can record it and kill the group if it outlives a crash, or cancel it).
pub async fn run_action_reporting(
    job: ActionJob,
    started: impl FnOnce(i32) + Send,
) -> ActionOutcome {
    run_action_live(job, started, None).await
}

/// [`run_action_reporting`], also sending the output lines to `live` as they are read, for
/// as long as they are the first lines kept (the head of [`ActionOutcome::logs`]): the
/// outcome's first `n` lines are then exactly the `n` lines sent. The send waits when `live`
/// is full, so a slow reader slows the job's output, never loses lines.
pub async fn run_action_live(
    job: ActionJob,
    started: impl FnOnce(i32) + Send,
    live: Option<mpsc::Sender<LogLine>>,
) -> ActionOutcome {
    let mut logs = LogBuffer::new(job.max_log_lines);
    let result = run(&job, &mut logs, started, live).await;
    let (state, data, error) = match result {
        Ok(data) => (ActionState::Ok, data, None),
        Err(message) => (ActionState::Error, None, Some(message)),
    };
    tracing::debug!(
        program = %job.program.display(),
        state = ?state,
        error = error.as_deref().unwrap_or(""),
        "action finished"
    );
    ActionOutcome {
        state,
        logs: logs.into_lines(),
        data,
        error,
    }
}

/// Kills process group `pgid` if it is still there and is the group of an action of run `run`
/// (its leader's environment has `COCKPIT_RUN=<run>`): what a crash left behind. A group id that
/// the system has since given to an unrelated process is left alone. True when it was killed.
pub fn kill_leftover_group(pgid: i32, run: &str) -> bool {
    if pgid <= 1 {
        return false;
    }
    let Ok(environ) = std::fs::read(format!("/proc/{pgid}/environ")) else {
        return false;
    };
    let wanted = format!("COCKPIT_RUN={run}");
    let ours = environ
        .split(|b| *b == 0)
        .any(|var| var == wanted.as_bytes());
    ours && nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}

/// Kills every process whose environment has `COCKPIT_RUN=<run>` for one of `runs`, and its
/// process group: what a crash left of those runs' actions, including a job whose group was not
/// recorded yet (a crash between spawning it and storing its group) and descendants that left
/// their group. Processes of other users are not readable and not ours. How many were killed.
pub fn kill_leftovers_of_runs(runs: &[String]) -> usize {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::{Pid, getpgid, getpgrp};
    if runs.is_empty() {
        return 0;
    }
    let wanted: Vec<Vec<u8>> = runs
        .iter()
        .map(|run| format!("COCKPIT_RUN={run}").into_bytes())
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let own = (std::process::id(), getpgrp());
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 1 || pid as u32 == own.0 {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| wanted.iter().any(|w| var == w.as_slice()))
        {
            continue;
        }
        let pid = Pid::from_raw(pid);
        if let Ok(group) = getpgid(Some(pid))
            && group.as_raw() > 1
            && group != own.1
        {
            let _ = killpg(group, Signal::SIGKILL);
        }
        if kill(pid, Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Sends `SIGTERM` to process group `pgid` (a cancelled job: it may clean up before the
/// `SIGKILL` that follows after a grace period).
pub fn terminate_group(pgid: i32) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// How the wait for the child ended.
enum Ending {
    /// The child exited by itself.
    Exited(ExitStatus),
    /// The deadline passed first.
    TimedOut,
}

/// The body of [`run_action`]: `Ok(data)` when the action exited 0, `Err(message)` otherwise.
async fn run(
    job: &ActionJob,
    logs: &mut LogBuffer,
    started: impl FnOnce(i32),
    mut live: Option<mpsc::Sender<LogLine>>,
) -> Result<Option<Map<String, Value>>, String> {
    let program = std::path::absolute(&job.program)
        .map_err(|err| format!("bad action path {}: {err}", job.program.display()))?;
    check_paths(&program, &job.cwd).await?;
    let input = serde_json::to_vec(&job.stdin_json)
        .map_err(|err| format!("cannot encode the job as JSON: {err}"))?;

    let deadline = Instant::now() + job.timeout;
    let mut child = spawn(&program, job).await?;
    // Declared after `child` so it drops first: the group is killed before the child is reaped.
    let mut group = GroupGuard::new(&child);
    if let Some(pgid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        started(pgid);
    }

    let stdin_task = child.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            // A script that never reads stdin makes this fail with a broken pipe: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        })
    });
    let (tx, mut rx) = mpsc::channel(LINE_CHANNEL);
    let stdout_task = child
        .stdout
        .take()
        .map(|out| tokio::spawn(read_lines(out, LogLevel::Stdout, tx.clone())));
    let stderr_task = child
        .stderr
        .take()
        .map(|err| tokio::spawn(read_lines(err, LogLevel::Stderr, tx.clone())));
    drop(tx);

    let mut output_open = true;
    let ending = loop {
        tokio::select! {
            line = rx.recv(), if output_open => match line {
                Some(line) => {
                    if let Some(tx) = &live {
                        if logs.head_has_room() {
                            if tx.send(line.clone()).await.is_err() {
                                live = None;
                            }
                        } else {
                            live = None;
                        }
                    }
                    logs.push(line)
                }
                None => output_open = false,
            },
            status = child.wait() => match status {
                Ok(status) => {
                    group.disarm();
                    break Ending::Exited(status);
                }
                Err(err) => {
                    group.kill();
                    return Err(format!("cannot wait for {}: {err}", program.display()));
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                group.kill();
                let _ = child.start_kill();
                match tokio::time::timeout(KILL_WAIT, child.wait()).await {
                    Ok(_) => group.disarm(),
                    Err(_) => tracing::warn!(program = %program.display(), "killed action did not exit"),
                }
                break Ending::TimedOut;
            }
        }
    };

    // Drain what the readers still have, but not forever: a leftover process may hold the pipes.
    let grace = tokio::time::sleep(OUTPUT_GRACE);
    tokio::pin!(grace);
    while output_open {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => logs.push(line),
                None => output_open = false,
            },
            () = &mut grace => break,
        }
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    let last_stdout = if output_open {
        logs.push_runner(format!(
            "stopped reading output {OUTPUT_GRACE:?} after the action ended: \
             a background process still holds its stdout/stderr"
        ));
        abort(stderr_task);
        abort(stdout_task);
        None
    } else {
        abort(stderr_task);
        match stdout_task {
            Some(task) => task.await.ok().flatten(),
            None => None,
        }
    };

    match ending {
        Ending::TimedOut => Err(format!("timed out after {:?}", job.timeout)),
        Ending::Exited(status) if status.success() => {
            Ok(last_stdout.as_deref().and_then(data_line))
        }
        Ending::Exited(status) => Err(describe_failure(status)),
    }
}

/// Checks the working directory and the program before spawning, for clear messages.
async fn check_paths(program: &Path, cwd: &Path) -> Result<(), String> {
    match tokio::fs::metadata(cwd).await {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "working directory {} is not a directory",
                cwd.display()
            ));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "working directory {} does not exist",
                cwd.display()
            ));
        }
        Err(err) => return Err(format!("working directory {}: {err}", cwd.display())),
    }
    match tokio::fs::metadata(program).await {
        Ok(meta) if meta.is_dir() => Err(format!(
            "action program {} is a directory",
            program.display()
        )),
        Ok(meta) if !is_executable(&meta) => Err(format!(
            "action program {} is not executable (chmod +x it)",
            program.display()
        )),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Err(format!("action program {} not found", program.display()))
        }
        Err(err) => Err(format!("action program {}: {err}", program.display())),
    }
}

/// Whether any execute bit is set (always true where there are no such bits).
fn is_executable(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        true
    }
}

/// Starts the child with piped stdio in its own process group, retrying a busy executable.
async fn spawn(program: &Path, job: &ActionJob) -> Result<Child, String> {
    let mut command = Command::new(program);
    command
        .current_dir(&job.cwd)
        .envs(job.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);

    let mut attempt = 1;
    loop {
        match command.spawn() {
            Ok(child) => return Ok(child),
            Err(err)
                if err.kind() == io::ErrorKind::ExecutableFileBusy && attempt < SPAWN_ATTEMPTS =>
            {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "cannot start {}: its interpreter (the #! line) was not found",
                    program.display()
                ));
            }
            Err(err) => return Err(format!("cannot start {}: {err}", program.display())),
        }
    }
}

/// Describes a non-successful exit: `exit status N`, or the signal that killed the action.
fn describe_failure(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("failed: {status}")
}

/// Aborts a reader task, if there is one.
fn abort<T>(task: Option<JoinHandle<T>>) {
    if let Some(task) = task {
        task.abort();
    }
}

/// Reads `stream` line by line, sends each non-empty line (capped) to the collector, and returns
/// the last non-empty stdout line if it fits [`MAX_DATA_LINE_BYTES`].
async fn read_lines<R: AsyncRead + Unpin>(
    stream: R,
    level: LogLevel,
    tx: mpsc::Sender<LogLine>,
) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let limit = match level {
        LogLevel::Stdout => MAX_DATA_LINE_BYTES,
        _ => MAX_LOG_LINE_BYTES,
    };
    let mut buf = Vec::new();
    let mut last: Option<String> = None;
    // A read error (rare on a pipe) ends the stream like EOF would.
    while let Ok(Some(truncated)) = read_line_bounded(&mut reader, &mut buf, limit).await {
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        if level == LogLevel::Stdout && !text.trim().is_empty() {
            last = (!truncated).then(|| text.clone().into_owned());
        }
        let line = LogLine {
            epoch: now_epoch(),
            level,
            log: cap_line(&text, truncated),
        };
        if tx.send(line).await.is_err() {
            break;
        }
    }
    last
}

/// Reads one line (without its `\n`) into `buf`, keeping at most `limit` bytes and discarding the
/// rest of a longer line. Returns `None` at end of stream, else whether the line was truncated.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let newline = available.iter().position(|b| *b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let room = limit.saturating_sub(buf.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = newline.map_or(available.len(), |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(truncated));
        }
    }
}

/// Cuts `text` to [`MAX_LOG_LINE_BYTES`] on a character boundary, marking any cut.
fn cap_line(text: &str, already_truncated: bool) -> String {
    if text.len() <= MAX_LOG_LINE_BYTES && !already_truncated {
        return text.to_owned();
    }
    let mut end = text.len().min(MAX_LOG_LINE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated]", &text[..end])
}

/// Parses a `{"data": {...}}` line (exactly one key, an object value) into the data map.
fn data_line(line: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(line.trim()) {
        Ok(Value::Object(mut outer)) if outer.len() == 1 => match outer.remove("data") {
            Some(Value::Object(data)) => Some(data),
            _ => None,
        },
        _ => None,
    }
}

/// Seconds since the Unix epoch, with sub-second precision.
fn now_epoch() -> f64 {
    crate::clock::now_secs_f64()
}

/// Keeps the first and last lines of a job's output within a line budget.
struct LogBuffer {
    /// The maximum number of output lines kept, as given by the job.
    max: usize,
    /// The first lines, up to half of the budget (rounded up).
    head: Vec<LogLine>,
    /// The most recent lines after the head filled up, up to the other half of the budget.
    tail: VecDeque<LogLine>,
    /// How many lines fell out between the head and the tail.
    dropped: usize,
    /// The runner's own lines, always kept and appended at the end.
    runner: Vec<LogLine>,
}

impl LogBuffer {
    /// An empty buffer for at most `max` output lines.
    fn new(max: usize) -> LogBuffer {
        LogBuffer {
            max,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
            runner: Vec::new(),
        }
    }

    /// Whether the next output line is kept in the head.
    fn head_has_room(&self) -> bool {
        self.head.len() < self.max.div_ceil(2)
    }

    /// Adds an output line, dropping the oldest non-head line when over budget.
    fn push(&mut self, line: LogLine) {
        let head_cap = self.max.div_ceil(2);
        let tail_cap = self.max - head_cap;
        if self.head.len() < head_cap {
            self.head.push(line);
        } else if tail_cap == 0 {
            self.dropped += 1;
        } else {
            if self.tail.len() == tail_cap {
                self.tail.pop_front();
                self.dropped += 1;
            }
            self.tail.push_back(line);
        }
    }

    /// Adds one of the runner's own lines (`level: "error"`).
    fn push_runner(&mut self, log: String) {
        self.runner.push(LogLine {
            epoch: now_epoch(),
            level: LogLevel::Error,
            log,
        });
    }

    /// The kept lines: head, a marker for dropped lines, tail, then the runner's lines.
    fn into_lines(self) -> Vec<LogLine> {
        let mut lines = self.head;
        if self.dropped > 0 {
            let epoch = self.tail.front().map_or_else(now_epoch, |line| line.epoch);
            lines.push(LogLine {
                epoch,
                level: LogLevel::Error,
                log: format!(
                    "… {} output lines dropped (the log keeps at most {}) …",
                    self.dropped, self.max
                ),
            });
        }
        lines.extend(self.tail);
        lines.extend(self.runner);
        lines
    }
}

/// Kills the child's process group (Unix) unless disarmed once the child has been reaped.
///
/// The group id is the child's pid. It is only signalled while the child is known not to be
/// reaped (an unreaped leader keeps its pid, hence the group id, from being reused).
struct GroupGuard {
    /// The process group to kill, `None` once the child was reaped or the group already killed.
    pgid: Option<i32>,
}

/// The process groups of the actions running in this process, each led by a child not reaped
/// yet (so no id here can belong to an unrelated group): what [`kill_every_action`] kills.
static LIVE_GROUPS: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

fn live_groups() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends `SIGKILL` to the process group of every action running in this process; how many.
/// For a process about to exit because it may no longer run them (a replica that lost its
/// claim on the store: another takes over and runs them again).
pub fn kill_every_action() -> usize {
    kill_actions_where(|_| true)
}

/// [`kill_every_action`] for the groups `which` picks.
fn kill_actions_where(which: impl Fn(i32) -> bool) -> usize {
    let mut live = live_groups();
    let groups: Vec<i32> = live.iter().copied().filter(|pgid| which(*pgid)).collect();
    for pgid in &groups {
        kill_group(*pgid);
        live.remove(pgid);
    }
    groups.len()
}

/// `SIGKILL` to process group `pgid`.
fn kill_group(pgid: i32) {
    #[cfg(unix)]
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl GroupGuard {
    /// Arms a guard for the group led by `child`.
    fn new(child: &Child) -> GroupGuard {
        let pgid = child.id().and_then(|pid| i32::try_from(pid).ok());
        if let Some(pgid) = pgid {
            live_groups().insert(pgid);
        }
        GroupGuard { pgid }
    }

    /// Forgets the group: the child was reaped, so its id may be reused from now on.
    fn disarm(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            live_groups().remove(&pgid);
        }
    }

    /// Sends `SIGKILL` to the whole group, once. The child stays unreaped until waited for.
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // The group that our still-unreaped child leads, so no unrelated group is hit.
            kill_group(pgid);
            live_groups().remove(&pgid);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    /// Writes an executable `/bin/sh` script into `dir`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        if let Err(err) = std::fs::write(&path, format!("#!/bin/sh\n{body}\n")) {
            panic!("cannot write {}: {err}", path.display());
        }
        if let Err(err) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)) {
            panic!("cannot chmod {}: {err}", path.display());
        }
        path
    }

    fn tempdir() -> tempfile::TempDir {
        match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(err) => panic!("cannot create a tempdir: {err}"),
        }
    }

    fn job(program: PathBuf, cwd: &Path) -> ActionJob {
        ActionJob {
            program,
            cwd: cwd.to_path_buf(),
            stdin_json: json!({"repo": "r1", "action": "install"}),
            env: vec![
                ("COCKPIT_REPO".into(), "r1".into()),
                ("COCKPIT_SERVICE".into(), "node!web".into()),
            ],
            timeout: Duration::from_secs(10),
            max_log_lines: 100,
        }
    }

    /// Runs `body` as a script and returns the outcome.
    async fn run_script(body: &str, tweak: impl FnOnce(&mut ActionJob)) -> ActionOutcome {
        let dir = tempdir();
        let mut job = job(script(dir.path(), "action", body), dir.path());
        tweak(&mut job);
        run_action(job).await
    }

    fn lines(outcome: &ActionOutcome, level: LogLevel) -> Vec<&str> {
        outcome
            .logs
            .iter()
            .filter(|line| line.level == level)
            .map(|line| line.log.as_str())
            .collect()
    }

    #[tokio::test]
    async fn ok_with_both_streams() {
        let outcome = run_script("echo one\necho two >&2\necho\necho three", |_| {}).await;
        assert_eq!(outcome.state, ActionState::Ok);
        assert_eq!(outcome.error, None);
        assert_eq!(lines(&outcome, LogLevel::Stdout), ["one", "three"]);
        assert_eq!(lines(&outcome, LogLevel::Stderr), ["two"]);
        assert!(outcome.logs.iter().all(|line| line.epoch > 1.6e9));
        assert_eq!(outcome.data, None);
    }

    #[tokio::test]
    async fn stdin_env_and_cwd_reach_the_action() {
        let dir = tempdir();
        let service_dir = dir.path().join("service");
        if let Err(err) = std::fs::create_dir(&service_dir) {
            panic!("mkdir: {err}");
        }
        let program = script(
            dir.path(),
            "action",
            "input=$(cat)\necho \"in=$input\"\necho \"env=$COCKPIT_REPO $COCKPIT_SERVICE\"\npwd",
        );
        let outcome = run_action(job(program, &service_dir)).await;
        assert_eq!(outcome.state, ActionState::Ok, "{outcome:?}");
        let cwd = match service_dir.canonicalize() {
            Ok(cwd) => cwd,
            Err(err) => panic!("canonicalize: {err}"),
        };
        let expected_cwd = cwd.display().to_string();
        assert_eq!(
            lines(&outcome, LogLevel::Stdout),
            [
                r#"in={"action":"install","repo":"r1"}"#,
                "env=r1 node!web",
                expected_cwd.as_str(),
            ]
        );
    }

    #[tokio::test]
    async fn action_that_ignores_a_large_stdin_still_runs() {
        let outcome = run_script("echo done", |job| {
            job.stdin_json = json!({"blob": "x".repeat(1 << 20)});
        })
        .await;
        assert_eq!(outcome.state, ActionState::Ok, "{outcome:?}");
    }

    #[tokio::test]
    async fn non_zero_exit_is_an_error() {
        let outcome = run_script("echo partial\nexit 3", |_| {}).await;
        assert_eq!(outcome.state, ActionState::Error);
        assert_eq!(outcome.error.as_deref(), Some("exit status 3"));
        assert_eq!(lines(&outcome, LogLevel::Stdout), ["partial"]);
        assert!(lines(&outcome, LogLevel::Error).is_empty());
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let started = std::time::Instant::now();
        let outcome = run_script("echo started\nsleep 5\necho never", |job| {
            job.timeout = Duration::from_millis(300);
        })
        .await;
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        assert_eq!(outcome.state, ActionState::Error);
        assert_eq!(outcome.error.as_deref(), Some("timed out after 300ms"));
        assert_eq!(lines(&outcome, LogLevel::Stdout), ["started"]);
    }

    #[tokio::test]
    async fn every_running_action_can_be_killed_at_once_and_a_finished_one_is_forgotten() {
        let dir = tempdir();
        let sleeper = job(
            script(
                dir.path(),
                "action",
                "sleep 30 &\necho $! > grandchild\nwait",
            ),
            dir.path(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let running = tokio::spawn(run_action_reporting(sleeper, move |pgid| {
            let _ = tx.send(pgid);
        }));
        let pgid = rx.await.expect("the group");
        assert!(live_groups().contains(&pgid), "a running action is known");
        let written = dir.path().join("grandchild");
        let mut pid = String::new();
        for _ in 0..500 {
            pid = std::fs::read_to_string(&written).unwrap_or_default();
            if pid.ends_with('\n') {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = pid.trim().to_string();
        assert!(pid.parse::<u32>().is_ok(), "no grandchild pid: {pid:?}");
        // Only this test's group: the other tests of this process run actions too.
        assert_eq!(kill_actions_where(|g| g == pgid), 1);
        let outcome = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("killed, not left running")
            .expect("joined");
        assert_eq!(outcome.state, ActionState::Error);
        assert!(!live_groups().contains(&pgid));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        assert!(
            matches!(state, None | Some('Z' | 'X')),
            "the grandchild {pid} survived: {stat}"
        );

        // An action that ended by itself leaves nothing behind to kill.
        let dir = tempdir();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = run_action_reporting(job(script(dir.path(), "a", "true"), dir.path()), |g| {
            let _ = tx.send(g);
        })
        .await;
        assert_eq!(done.state, ActionState::Ok);
        let pgid = rx.await.expect("the group");
        assert!(!live_groups().contains(&pgid));
    }

    #[tokio::test]
    async fn timeout_also_kills_grandchildren() {
        let outcome = run_script(
            "sleep 30 &
echo $!
wait",
            |job| {
                job.timeout = Duration::from_millis(300);
            },
        )
        .await;
        assert_eq!(outcome.state, ActionState::Error);
        let pid = lines(&outcome, LogLevel::Stdout).concat();
        assert!(pid.parse::<u32>().is_ok(), "no pid in {outcome:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Gone, or a zombie waiting for its new parent to reap it: either way, not running.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        assert!(
            matches!(state, None | Some('Z' | 'X')),
            "sleep {pid} survived: {stat}"
        );
    }

    #[tokio::test]
    async fn last_stdout_data_line_becomes_data() {
        let outcome = run_script(
            "echo working\necho warn >&2\necho '{\"data\": {\"ip\": \"10.0.0.1\", \"port\": 22}}'\necho",
            |_| {},
        )
        .await;
        assert_eq!(outcome.state, ActionState::Ok);
        let expected = json!({"ip": "10.0.0.1", "port": 22});
        assert_eq!(outcome.data.clone().map(Value::Object), Some(expected));
        // The data line stays in the log.
        assert_eq!(lines(&outcome, LogLevel::Stdout).len(), 2);

        for body in [
            "echo '{\"data\": {\"a\": 1}}'\necho done",
            "echo '{\"data\": {\"a\": 1}, \"more\": 2}'",
            "echo '{\"data\": 5}'",
            "echo '{\"data\": {\"a\": 1}}'\nexit 1",
        ] {
            let outcome = run_script(body, |_| {}).await;
            assert_eq!(outcome.data, None, "{body}");
        }
    }

    #[tokio::test]
    async fn missing_or_unusable_programs_are_clear_errors() {
        let dir = tempdir();
        let missing = run_action(job(dir.path().join("nope"), dir.path())).await;
        assert_eq!(missing.state, ActionState::Error);
        let message = missing.error.unwrap_or_default();
        assert!(message.contains("not found"), "{message}");

        let plain = dir.path().join("plain");
        if let Err(err) = std::fs::write(&plain, "echo hi\n") {
            panic!("write: {err}");
        }
        let not_exec = run_action(job(plain, dir.path())).await;
        let message = not_exec.error.unwrap_or_default();
        assert!(message.contains("not executable"), "{message}");

        let bad_interpreter = script(dir.path(), "bad", "");
        if let Err(err) = std::fs::write(&bad_interpreter, "#!/no/such/interpreter\n") {
            panic!("write: {err}");
        }
        let outcome = run_action(job(bad_interpreter, dir.path())).await;
        let message = outcome.error.unwrap_or_default();
        assert!(message.contains("interpreter"), "{message}");

        let program = script(dir.path(), "ok", "echo hi");
        let no_cwd = run_action(job(program, &dir.path().join("gone"))).await;
        let message = no_cwd.error.unwrap_or_default();
        assert!(message.contains("does not exist"), "{message}");
    }

    #[tokio::test]
    async fn chatty_actions_are_capped() {
        let outcome = run_script(
            "i=1\nwhile [ $i -le 1000 ]; do echo line$i; i=$((i+1)); done\n\
             head -c 100000 /dev/zero | tr '\\0' a",
            |job| job.max_log_lines = 10,
        )
        .await;
        assert_eq!(outcome.state, ActionState::Ok, "{:?}", outcome.error);
        let stdout = lines(&outcome, LogLevel::Stdout);
        assert_eq!(stdout.len(), 10);
        assert_eq!(stdout[..5], ["line1", "line2", "line3", "line4", "line5"]);
        assert_eq!(stdout[5..9], ["line997", "line998", "line999", "line1000"]);
        assert!(stdout[9].ends_with("…[truncated]"));
        assert!(stdout[9].len() <= MAX_LOG_LINE_BYTES + "…[truncated]".len());
        assert_eq!(
            lines(&outcome, LogLevel::Error),
            ["… 991 output lines dropped (the log keeps at most 10) …"]
        );
    }

    #[tokio::test]
    async fn leftover_background_output_does_not_hang_the_job() {
        let started = std::time::Instant::now();
        let outcome = run_script("echo main\n(sleep 5; echo late) &\nexit 0", |_| {}).await;
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(outcome.state, ActionState::Ok);
        assert_eq!(lines(&outcome, LogLevel::Stdout), ["main"]);
        assert_eq!(lines(&outcome, LogLevel::Error).len(), 1);
    }

    #[test]
    fn read_line_bounded_caps_and_reports() {
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(err) => panic!("runtime: {err}"),
        };
        rt.block_on(async {
            let input: &[u8] = b"short\nlonger line\r\n\nlast";
            let mut reader = BufReader::with_capacity(4, input);
            let mut buf = Vec::new();
            let mut got = Vec::new();
            while let Ok(Some(truncated)) = read_line_bounded(&mut reader, &mut buf, 6).await {
                got.push((String::from_utf8_lossy(&buf).into_owned(), truncated));
            }
            let expected = [
                ("short", false),
                ("longer", true),
                ("", false),
                ("last", false),
            ];
            let expected: Vec<(String, bool)> =
                expected.iter().map(|(s, t)| (s.to_string(), *t)).collect();
            assert_eq!(got, expected);
        });
    }
}
