//! [`Supervised`], the handle of a long-running agent process (daemon mode) under either
//! runtime: wait, pause, resume, stop, kill; and the process runtime's start.
//!
//! Stopping is SIGTERM to the group, a grace period, SIGKILL to the group, and then checking in
//! `/proc` that no process of the group is left. A process-runtime agent's status is read
//! without reaping it, so its pid (the group's id) stays ours until `stop` has made sure the
//! group is gone; only then is it reaped.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::RuntimeError;
use crate::limits::{AppliedLimits, CgroupHandle};
use crate::logs::{self, RotatingLog};
use crate::proc_stat;
use crate::process::{
    ExitWatch, for_each_member, peek_child_exit, signal_group, signal_group_if_any, spawn,
    wait_group_gone,
};
use crate::spec::{CommandSpec, ExitInfo, LogSpec, RuntimeKind, validate_name};
use crate::tmux::TmuxServer;

/// The environment variable set to the agent's name in every daemon-mode agent process (and so
/// in what it starts): it lets [`kill_leftover_group`] recognise an agent's processes after a
/// restart of the coordinator.
pub const AGENT_ENV: &str = "FLOTILLA_RUNTIME_AGENT";

/// How long [`Supervised::stop`] waits for a group to die after SIGKILL before giving up (a
/// process stuck in uninterruptible sleep cannot die sooner).
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Copies a child's output into its log until every writer has closed the pipe.
async fn pump_to_log(mut pipe: tokio::net::unix::pipe::Receiver, log: Arc<Mutex<RotatingLog>>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut warned = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                // Go on draining after a failed write, or the process would block on a full pipe.
                if let Err(e) = log.write(&buf[..n])
                    && !std::mem::replace(&mut warned, true)
                {
                    tracing::warn!(log = %log.path().display(), "cannot write agent output: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("cannot read agent output: {e}");
                return;
            }
        }
    }
}

/// Which runtime holds the process.
pub(crate) enum Backend {
    Process {
        child: tokio::process::Child,
        pump: Option<JoinHandle<()>>,
    },
    Tmux {
        server: TmuxServer,
        session: String,
        pane: String,
    },
}

/// A long-running agent process (daemon mode) in its own process group, its output appended to
/// a log. Made by [`crate::start`].
///
/// Dropping the handle leaves the process running; call [`Supervised::stop`] to end it (and, for
/// tmux, its session).
pub struct Supervised {
    name: String,
    pid: u32,
    pgid: u32,
    log_path: PathBuf,
    applied: AppliedLimits,
    paused: AtomicBool,
    exit: Option<ExitInfo>,
    stopped: bool,
    cgroup: Option<CgroupHandle>,
    watch: ExitWatch,
    backend: Backend,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.name)
            .field("kind", &self.kind())
            .field("pid", &self.pid)
            .field("pgid", &self.pgid)
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

impl Supervised {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: &str,
        pid: u32,
        pgid: u32,
        log_path: PathBuf,
        applied: AppliedLimits,
        cgroup: Option<CgroupHandle>,
        watch: ExitWatch,
        backend: Backend,
    ) -> Self {
        Self {
            name: name.to_owned(),
            pid,
            pgid,
            log_path,
            applied,
            paused: AtomicBool::new(false),
            exit: None,
            stopped: false,
            cgroup,
            watch,
            backend,
        }
    }

    /// The agent name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which runtime runs it.
    pub fn kind(&self) -> RuntimeKind {
        match self.backend {
            Backend::Process { .. } => RuntimeKind::Process,
            Backend::Tmux { .. } => RuntimeKind::Tmux,
        }
    }

    /// The process id of the agent process (for tmux, the pane's process).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its process group (and session) id: equal to [`Supervised::pid`].
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// The log its output is appended to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The limits enforced, and how.
    pub fn applied_limits(&self) -> &AppliedLimits {
        &self.applied
    }

    /// Whether [`Supervised::pause`] was called without a [`Supervised::resume`] since.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// How it ended, if [`Supervised::wait`] or [`Supervised::stop`] has seen it end.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        self.exit
    }

    /// Resolves when the process exits, with how it ended. Cancel-safe (use it in `select!`);
    /// after the first answer it returns the same at once.
    ///
    /// Process runtime: a pidfd, then `waitid(WNOWAIT)`. Tmux: a pidfd on the pane's process
    /// (polling `/proc` without one), then the zombie's status in `/proc` or tmux's
    /// `#{pane_dead_status}` / `#{pane_dead_signal}`, kept by `remain-on-exit on` (details in
    /// [`crate::tmux`]). The tmux session stays until [`Supervised::stop`], so people can still
    /// attach and read the last screen.
    pub async fn wait(&mut self) -> ExitInfo {
        if let Some(exit) = self.exit {
            return exit;
        }
        self.watch.exited().await;
        let exit = match &mut self.backend {
            Backend::Process { child, .. } => match peek_child_exit(self.pid) {
                Some(exit) => exit,
                // Without WNOWAIT support: reap it (the group may then lose its pin).
                None => child.wait().await.map_or(ExitInfo::UNKNOWN, ExitInfo::from),
            },
            Backend::Tmux { server, pane, .. } => server.pane_exit(pane, self.pid).await,
        };
        self.exit = Some(exit);
        exit
    }

    /// Refuses to signal a group that is known to be gone: its number may belong to someone
    /// else by now.
    fn check_signalable(&self, signal: Signal) -> Result<(), RuntimeError> {
        let gone = self.stopped
            || (matches!(self.backend, Backend::Tmux { .. })
                && self.exit.is_some()
                && proc_stat::live_group_members(self.pgid).is_empty());
        if gone {
            return Err(RuntimeError::Signal {
                signal: signal.as_str(),
                pgid: self.pgid,
                source: io::Error::from_raw_os_error(libc::ESRCH),
            });
        }
        Ok(())
    }

    /// Stops the whole process group with SIGSTOP: it uses no CPU until resumed.
    ///
    /// Under tmux the pane's own process, the wrapper waiting for the agent (see
    /// [`crate::tmux`]), is left running: tmux would answer its stop with SIGCONT to the group.
    /// It uses no CPU while it waits.
    pub fn pause(&self) -> Result<(), RuntimeError> {
        self.check_signalable(Signal::SIGSTOP)?;
        match &self.backend {
            Backend::Process { .. } => signal_group(self.pgid, Signal::SIGSTOP)?,
            Backend::Tmux { .. } => {
                let mut any = false;
                for_each_member(self.pgid, None, |pid| {
                    any = true;
                    if pid != self.pid {
                        // A process that just exited cannot be stopped: nothing to do.
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
                    }
                    Ok(())
                })?;
                if !any {
                    return Err(RuntimeError::Signal {
                        signal: Signal::SIGSTOP.as_str(),
                        pgid: self.pgid,
                        source: io::Error::from_raw_os_error(libc::ESRCH),
                    });
                }
            }
        }
        self.paused.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Continues the process group with SIGCONT.
    pub fn resume(&self) -> Result<(), RuntimeError> {
        self.check_signalable(Signal::SIGCONT)?;
        signal_group(self.pgid, Signal::SIGCONT)?;
        self.paused.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Kills the whole process group with SIGKILL now. [`Supervised::wait`] then reports it.
    ///
    /// Like [`Supervised::pause`] and [`Supervised::resume`], fails (ESRCH) once the agent was
    /// stopped or its group is known to be gone.
    pub fn kill(&self) -> Result<(), RuntimeError> {
        self.check_signalable(Signal::SIGKILL)?;
        signal_group(self.pgid, Signal::SIGKILL)
    }

    /// SIGTERM (and SIGCONT) to the group, then waits up to `grace` for the agent and its group
    /// to be gone; returns whether they are.
    ///
    /// Under tmux the wrapper (see [`crate::tmux`]) runs a trap for TERM from its start until it
    /// has started the agent: a SIGTERM in that window is absorbed and the agent, forked after
    /// it, never gets one. So a child of the wrapper that was not in the group when SIGTERM was
    /// sent gets its own.
    async fn terminate(&self, grace: Duration) -> bool {
        let pgid = self.pgid;
        let deadline = Instant::now() + grace;
        let mut signalled: HashSet<u32> = proc_stat::live_group_members(pgid).into_iter().collect();
        signal_group_if_any(pgid, Signal::SIGTERM);
        signal_group_if_any(pgid, Signal::SIGCONT);
        let is_tmux = matches!(self.backend, Backend::Tmux { .. });
        loop {
            let members = proc_stat::live_group_stats(pgid);
            if members.is_empty() {
                // Every member is gone; the leader at least is a zombie (or reaped).
                return true;
            }
            if is_tmux {
                for late in members.iter().filter(|m| m.ppid == self.pid) {
                    if signalled.insert(late.pid) {
                        let _ =
                            nix::sys::signal::kill(Pid::from_raw(late.pid as i32), Signal::SIGTERM);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let poll = Duration::from_millis(20).min(deadline - now);
            let _ = tokio::time::timeout(poll, self.watch.exited()).await;
        }
    }

    /// Ends the agent: SIGTERM to the group (and SIGCONT, in case it is paused), up to `grace`
    /// for the group to exit, then SIGKILL to the group. Returns once no process of the group is
    /// left (checked in `/proc`; gives up after ten more seconds for processes stuck in the
    /// kernel), with how the agent process ended. Also kills the tmux session, removes the
    /// cgroup and lets the log writer finish. Calling it again returns the same answer.
    pub async fn stop(&mut self, grace: Duration) -> ExitInfo {
        if let (true, Some(exit)) = (self.stopped, self.exit) {
            return exit;
        }
        let pgid = self.pgid;
        // A tmux pane's process is reaped by tmux, so once it and its group are gone the number
        // may be reused: signal only a group that still has members.
        let ended = self.exit.is_some() && proc_stat::live_group_members(pgid).is_empty();
        if !ended && !self.terminate(grace).await {
            signal_group_if_any(pgid, Signal::SIGKILL);
        }
        self.paused.store(false, Ordering::Relaxed);
        let _ = tokio::time::timeout(KILL_WAIT, self.watch.exited()).await;
        let exit = tokio::time::timeout(KILL_WAIT, self.wait())
            .await
            .unwrap_or(ExitInfo::UNKNOWN);
        if !wait_group_gone(pgid, Instant::now() + KILL_WAIT).await {
            tracing::warn!(pgid, agent = %self.name, "processes of the group survived SIGKILL");
        }
        match &mut self.backend {
            Backend::Process { child, pump } => {
                // Reap the leader: the group is gone, its pid may be reused from now on.
                let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
                if let Some(pump) = pump.take() {
                    // EOF comes once the last writer died; something that left the group may
                    // still hold the pipe: do not wait for it long.
                    let abort = pump.abort_handle();
                    if tokio::time::timeout(Duration::from_secs(2), pump)
                        .await
                        .is_err()
                    {
                        abort.abort();
                    }
                }
            }
            Backend::Tmux {
                server, session, ..
            } => {
                if let Err(e) = server.kill_session_named(session).await {
                    tracing::warn!(session = %session, "{e}");
                }
            }
        }
        if let Some(mut cgroup) = self.cgroup.take() {
            let removed = tokio::task::spawn_blocking(move || cgroup.remove()).await;
            if let Ok(Err(e)) = removed {
                tracing::warn!(agent = %self.name, "{e}");
            }
        }
        self.watch = ExitWatch::Exited;
        self.exit = Some(exit);
        self.stopped = true;
        exit
    }
}

/// Starts `spec` under the process runtime: a child in its own session, stdin from /dev/null,
/// stdout and stderr (one pipe, so their order is kept) appended to the rotating log.
pub(crate) async fn start_process(
    name: &str,
    spec: &CommandSpec,
    log: &LogSpec,
) -> Result<Supervised, RuntimeError> {
    validate_name(name)?;
    let writer = logs::shared(log).map_err(|source| RuntimeError::Log {
        path: log.path.clone(),
        source,
    })?;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::io("creating the output pipe", e.into()))?;
    let stderr_end = write_end
        .try_clone()
        .map_err(|e| RuntimeError::io("creating the output pipe", e))?;
    let spawned = spawn(
        spec,
        &BTreeMap::from([(AGENT_ENV.to_owned(), name.to_owned())]),
        [
            Stdio::null(),
            Stdio::from(write_end),
            Stdio::from(stderr_end),
        ],
        &format!("agent-{name}"),
    )?;
    // `spawn` dropped the Command, and with it our copies of the write end: EOF will come.
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
        .map_err(|e| RuntimeError::io("reading the output pipe", e))?;
    let pump = tokio::spawn(pump_to_log(reader, writer));
    Ok(Supervised::new(
        name,
        spawned.pid,
        spawned.pid,
        log.path.clone(),
        spawned.applied,
        spawned.cgroup,
        ExitWatch::child(spawned.pid),
        Backend::Process {
            child: spawned.child,
            pump: Some(pump),
        },
    ))
}

/// Kills (SIGKILL) what is left of agent `name` in process group `pgid`, typically recorded by a
/// coordinator that has since died, so that it does not run beside a new instance. The group is
/// killed only if one of its live processes has `FLOTILLA_RUNTIME_AGENT=name` in its
/// environment ([`AGENT_ENV`]): a recorded number that now belongs to someone else is left
/// alone. Returns whether it killed; does not wait for the processes to die.
pub fn kill_leftover_group(pgid: u32, name: &str) -> bool {
    let marker = format!("{AGENT_ENV}={name}");
    let ours = proc_stat::live_group_members(pgid).into_iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
    });
    if ours {
        signal_group_if_any(pgid, Signal::SIGKILL);
        signal_group_if_any(pgid, Signal::SIGCONT);
    }
    ours
}
