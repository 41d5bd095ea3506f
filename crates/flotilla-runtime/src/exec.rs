//! Exec mode: one process per task ([`run_once`]).
//!
//! The task's process leads its own session and process group, reads `stdin` from a pipe, and
//! has its stdout kept (up to `stdout_limit` bytes, the rest drained and dropped) and the tail of
//! its stderr kept; both are also appended to the agent's log if one is given.
//!
//! When the process exits, whatever it left running in its group is killed (SIGKILL): a task is
//! over when its process is, and a straggler holding the output pipes would otherwise keep us
//! waiting. Its exit is learnt with a pidfd and `waitid(WNOWAIT)`, without reaping it: while it
//! is an unreaped zombie its pid, the group's id, cannot be reused, so that kill reaches only
//! the task's processes. At the deadline the group gets SIGTERM (and SIGCONT), two
//! seconds' grace, then SIGKILL, and `timed_out` is set; `run_once` then returns only once no
//! process of the group is left.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal as OsSignal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::RuntimeError;
use crate::limits::{self, AppliedLimits};
use crate::logs::{self, RotatingLog};
use crate::process::{
    ExitWatch, Spawned, peek_child_exit, signal_group, signal_group_if_any, spawn, wait_group_gone,
};
use crate::spec::{CommandSpec, ExitInfo, LogSpec, Signal};

/// Grace between SIGTERM and SIGKILL when a task passes its deadline.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// How long output pipes are read after the process exited and its group was killed. Only a
/// process that left the group (`setsid`) can hold them longer.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for a killed group to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// One task to run: the command, its input, and what to keep of its output.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The command (usually with arguments filled by [`crate::template::render_args`]).
    pub spec: CommandSpec,
    /// Written to the process's stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Environment added on top of `spec.env` (e.g. `FLOTILLA_TASK_ID`).
    pub env: BTreeMap<String, String>,
    /// When to give up: SIGTERM, [`DEADLINE_GRACE`], SIGKILL.
    pub deadline: Option<Instant>,
    /// Bytes of stdout kept (default 1 MiB).
    pub stdout_limit: usize,
    /// Bytes of stderr kept, the last ones (default 4 KiB).
    pub stderr_tail: usize,
    /// A log to append stdout and stderr to, as they come.
    pub log: Option<LogSpec>,
}

impl ExecRequest {
    /// Default for [`ExecRequest::stdout_limit`]: 1 MiB.
    pub const DEFAULT_STDOUT_LIMIT: usize = 1024 * 1024;
    /// Default for [`ExecRequest::stderr_tail`]: 4 KiB.
    pub const DEFAULT_STDERR_TAIL: usize = 4 * 1024;

    /// A request running `spec` with empty stdin, no deadline, no log and the default limits.
    pub fn new(spec: CommandSpec) -> Self {
        Self {
            spec,
            stdin: Vec::new(),
            env: BTreeMap::new(),
            deadline: None,
            stdout_limit: Self::DEFAULT_STDOUT_LIMIT,
            stderr_tail: Self::DEFAULT_STDERR_TAIL,
            log: None,
        }
    }
}

/// What came of one task's process.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// How the process ended.
    pub exit: ExitInfo,
    /// The first `stdout_limit` bytes of its stdout.
    pub stdout: Vec<u8>,
    /// Whether stdout was longer than `stdout_limit`.
    pub stdout_truncated: bool,
    /// The last `stderr_tail` bytes of its stderr (invalid UTF-8 replaced).
    pub stderr_tail: String,
    /// Whether it was killed for passing its deadline.
    pub timed_out: bool,
    /// From start to exit.
    pub duration: Duration,
    /// The limits enforced, and how.
    pub applied_limits: AppliedLimits,
    /// The process group the task ran as (its process's pid). Gone by now: for logs only.
    pub pgid: u32,
}

/// A running task's process group, handed to the `on_spawn` callback of [`run_once_with`] so
/// that the task can be paused, resumed or ended from elsewhere while it runs.
///
/// Signals reach the group only until `run_once` reaps the task's process; after that
/// [`TaskGroup::signal`] does nothing, so a kept handle can never signal another group that got
/// the same number.
#[derive(Debug, Clone)]
pub struct TaskGroup {
    pgid: u32,
    live: Arc<Mutex<bool>>,
}

impl TaskGroup {
    /// The process group id (the task process's pid).
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Whether the task's process has not been reaped yet.
    pub fn is_live(&self) -> bool {
        *self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `signal` to the whole group if the task is still running; returns whether it was
    /// sent. A paused ([`Signal::Stop`]) task's deadline still runs: at the deadline it is
    /// continued and gets SIGTERM like any other.
    pub fn signal(&self, signal: Signal) -> Result<bool, RuntimeError> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if !*live {
            return Ok(false);
        }
        match signal_group(self.pgid, signal.into()) {
            Ok(()) => Ok(true),
            Err(RuntimeError::Signal { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Marks the group as gone (before its leader is reaped); returns whether it was live.
    fn retire(&self) -> bool {
        std::mem::replace(
            &mut *self.live.lock().unwrap_or_else(|e| e.into_inner()),
            false,
        )
    }
}

/// Runs one task's process to completion; see the module documentation.
///
/// Fails only if the process cannot be started (or its log opened); how the process itself
/// ended, including by the deadline, is in the [`ExecOutcome`]. Cancel-safe: dropping the
/// future (a cancelled task) kills the process group with SIGKILL.
pub async fn run_once(req: ExecRequest) -> Result<ExecOutcome, RuntimeError> {
    run_once_with(req, |_| {}).await
}

/// [`run_once`], calling `on_spawn` with the task's [`TaskGroup`] as soon as its process
/// started (before it is fed its stdin).
pub async fn run_once_with(
    req: ExecRequest,
    on_spawn: impl FnOnce(TaskGroup) + Send,
) -> Result<ExecOutcome, RuntimeError> {
    let ExecRequest {
        spec,
        stdin: input,
        env,
        deadline,
        stdout_limit,
        stderr_tail,
        log,
    } = req;
    let log = match &log {
        Some(log_spec) => Some(logs::shared(log_spec).map_err(|source| RuntimeError::Log {
            path: log_spec.path.clone(),
            source,
        })?),
        None => None,
    };
    let Spawned {
        mut child,
        pid,
        mut cgroup,
        applied,
    } = spawn(
        &spec,
        &env,
        [Stdio::piped(), Stdio::piped(), Stdio::piped()],
        &limits::task_cgroup_name(),
    )?;
    let started = Instant::now();
    let group = TaskGroup {
        pgid: pid,
        live: Arc::new(Mutex::new(true)),
    };
    // If this future is dropped (the task was cancelled), the task's processes die with it.
    let guard = KillGroupOnDrop(group.clone());
    on_spawn(group);
    let watch = ExitWatch::child(pid);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    // Set once the process has exited and its group was killed: readers stop at this instant.
    let (drained_tx, drained_rx) = watch::channel(None::<Instant>);

    let feed = until_drained(drained_rx.clone(), async move {
        if let Some(mut stdin) = stdin {
            // A process that does not read its input closes the pipe: not an error.
            if !input.is_empty() {
                let _ = stdin.write_all(&input).await;
            }
            let _ = stdin.shutdown().await;
        }
    });
    let mut head = Head {
        kept: Vec::new(),
        limit: stdout_limit,
        truncated: false,
    };
    let mut tail = Tail {
        kept: Vec::new(),
        limit: stderr_tail,
    };
    let read_out = until_drained(drained_rx.clone(), copy(stdout, log.clone(), &mut head));
    let read_err = until_drained(drained_rx, copy(stderr, log.clone(), &mut tail));

    let supervise = async {
        let timed_out = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, watch.exited())
                .await
                .is_err(),
            None => {
                watch.exited().await;
                false
            }
        };
        if timed_out {
            signal_group_if_any(pid, OsSignal::SIGTERM);
            signal_group_if_any(pid, OsSignal::SIGCONT);
            if tokio::time::timeout(DEADLINE_GRACE, watch.exited())
                .await
                .is_err()
            {
                signal_group_if_any(pid, OsSignal::SIGKILL);
                let _ = tokio::time::timeout(KILL_WAIT, watch.exited()).await;
            }
        }
        let duration = started.elapsed();
        let peeked = peek_child_exit(pid);
        // The leader is an unreaped zombie: the group id is still ours. Kill what it left.
        signal_group_if_any(pid, OsSignal::SIGKILL);
        if timed_out && !wait_group_gone(pid, Instant::now() + KILL_WAIT).await {
            tracing::warn!(pgid = pid, "processes of a timed-out task survived SIGKILL");
        }
        let _ = drained_tx.send(Some(Instant::now() + DRAIN_GRACE));
        // From here on the pid may be reused: never signal the group again.
        guard.0.retire();
        let reaped = child
            .wait()
            .await
            .map(ExitInfo::from)
            .unwrap_or(ExitInfo::UNKNOWN);
        (peeked.unwrap_or(reaped), timed_out, duration)
    };
    let ((exit, timed_out, duration), _, stdout_cut, stderr_cut) =
        tokio::join!(supervise, feed, read_out, read_err);
    if stdout_cut || stderr_cut {
        // The pipes are held by a process that left the group (the cgroup, if any, kills it
        // below), or by members SIGKILL has not finished yet: let those go first.
        wait_group_gone(pid, Instant::now() + KILL_WAIT).await;
    }
    if let Some(mut cgroup) = cgroup.take()
        && let Ok(Err(e)) = tokio::task::spawn_blocking(move || cgroup.remove()).await
    {
        tracing::warn!("{e}");
    }
    Ok(ExecOutcome {
        exit,
        stdout: head.kept,
        stdout_truncated: head.truncated,
        stderr_tail: tail.into_string(),
        timed_out,
        duration,
        applied_limits: applied,
        pgid: pid,
    })
}

/// Kills a task's process group when `run_once` is dropped before it reaped the process.
struct KillGroupOnDrop(TaskGroup);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.0.retire() {
            signal_group_if_any(self.0.pgid, nix::sys::signal::Signal::SIGKILL);
            signal_group_if_any(self.0.pgid, nix::sys::signal::Signal::SIGCONT);
        }
    }
}

/// Runs `work` until it finishes or the drain deadline (once one is set) passes; returns whether
/// it was cut short.
async fn until_drained<F: Future>(mut drained: watch::Receiver<Option<Instant>>, work: F) -> bool {
    tokio::pin!(work);
    loop {
        let deadline = *drained.borrow_and_update();
        tokio::select! {
            _ = &mut work => return false,
            _ = sleep_until(deadline) => return true,
            changed = drained.changed(), if deadline.is_none() => {
                if changed.is_err() {
                    // The supervisor is gone without setting a deadline: just finish.
                    (&mut work).await;
                    return false;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where a stream's bytes are kept.
trait Keep {
    fn keep(&mut self, bytes: &[u8]);
}

/// The first `limit` bytes.
struct Head {
    kept: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Keep for Head {
    fn keep(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.truncated |= bytes.len() > room;
    }
}

/// The last `limit` bytes.
struct Tail {
    kept: Vec<u8>,
    limit: usize,
}

impl Keep for Tail {
    fn keep(&mut self, bytes: &[u8]) {
        self.kept.extend_from_slice(bytes);
        // Trim only once twice the limit is held: amortised O(1) per byte.
        if self.kept.len() > self.limit.saturating_mul(2).max(64) {
            self.kept.drain(..self.kept.len() - self.limit);
        }
    }
}

impl Tail {
    fn into_string(mut self) -> String {
        if self.kept.len() > self.limit {
            self.kept.drain(..self.kept.len() - self.limit);
        }
        // Do not start in the middle of a UTF-8 character.
        let skip = self
            .kept
            .iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count();
        String::from_utf8_lossy(&self.kept[skip..]).into_owned()
    }
}

/// Reads `stream` to its end into `keep`, appending everything to `log`.
async fn copy<R: AsyncRead + Unpin>(
    stream: Option<R>,
    log: Option<std::sync::Arc<std::sync::Mutex<RotatingLog>>>,
    keep: &mut impl Keep,
) {
    let Some(mut stream) = stream else { return };
    let mut buf = vec![0u8; 32 * 1024];
    let mut warned = false;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        keep.keep(&buf[..n]);
        if let Some(log) = &log {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = log.write(&buf[..n])
                && !std::mem::replace(&mut warned, true)
            {
                tracing::warn!(log = %log.path().display(), "cannot write task output: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keeps_the_first_bytes() {
        let mut head = Head {
            kept: Vec::new(),
            limit: 5,
            truncated: false,
        };
        head.keep(b"abc");
        assert!(!head.truncated);
        head.keep(b"defg");
        assert_eq!(head.kept, b"abcde");
        assert!(head.truncated);
    }

    #[test]
    fn tail_keeps_the_last_bytes_on_a_character_boundary() {
        let mut tail = Tail {
            kept: Vec::new(),
            limit: 4,
        };
        for _ in 0..100 {
            tail.keep(b"0123456789");
        }
        assert_eq!(tail.into_string(), "6789");
        let mut tail = Tail {
            kept: Vec::new(),
            limit: 4,
        };
        tail.keep("xxé€".as_bytes()); // é is 2 bytes, € 3: the last 4 bytes cut é in half
        assert_eq!(tail.into_string(), "€");
    }
}
