//! Starting processes in their own session, watching them exit, and signalling their process
//! group: the pieces [`crate::Supervised`] and [`crate::run_once`] are made of.
//!
//! Every process this crate starts calls `setsid()` before `exec` (tmux does the same for its
//! panes), so it leads a new session and process group whose id is its pid. Signals go to the
//! whole group, reaching the children and grandchildren an agent starts, unless they left the
//! group on purpose (a cgroup catches those too, where there is one).
//!
//! Exit is observed with a pidfd (`pidfd_open`, Linux 5.3+) registered with tokio, falling back
//! to polling. For our own children the status is read with `waitid(WNOWAIT)`, leaving the child
//! a zombie until its owner reaps it: while it is unreaped its pid cannot be reused,
//! so a later signal to the group can never reach an unrelated process that got the same number.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::error::RuntimeError;
use crate::limits::{self, AppliedLimits, CgroupHandle};
use crate::proc_stat;
use crate::spec::{CommandSpec, ExitInfo};

/// Sends `signal` to process group `pgid`.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> Result<(), RuntimeError> {
    // pgid 0 or 1 would mean "our own group" or "init's": never a group we started.
    if pgid <= 1 {
        return Err(RuntimeError::Signal {
            signal: signal.as_str(),
            pgid,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    killpg(Pid::from_raw(pgid as i32), signal).map_err(|errno| RuntimeError::Signal {
        signal: signal.as_str(),
        pgid,
        source: io::Error::from_raw_os_error(errno as i32),
    })
}

/// Sends `signal` to the group, ignoring "no such process" (it has ended: nothing to do).
pub(crate) fn signal_group_if_any(pgid: u32, signal: Signal) {
    if let Err(e) = signal_group(pgid, signal)
        && !matches!(&e, RuntimeError::Signal { source, .. } if source.raw_os_error() == Some(libc::ESRCH))
    {
        tracing::warn!(pgid, "{e}");
    }
}

/// Polls `/proc` until no live process of group `pgid` is left or `deadline` passes; returns
/// whether the group is gone.
pub(crate) async fn wait_group_gone(pgid: u32, deadline: Instant) -> bool {
    let mut pause = Duration::from_millis(5);
    loop {
        if proc_stat::live_group_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Calls `f` once for every live process of group `pgid` (and for `also`, which may not have
/// joined it yet), rescanning `/proc` until a scan finds no process not yet seen: a process
/// forked meanwhile by one not yet handled is caught by the next scan.
pub(crate) fn for_each_member(
    pgid: u32,
    also: Option<u32>,
    mut f: impl FnMut(u32) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut seen = HashSet::new();
    let mut pending: Vec<u32> = also.into_iter().collect();
    // Bounded: a group forking faster than we scan is not worth an endless loop.
    for _ in 0..100 {
        pending.extend(
            proc_stat::live_group_members(pgid)
                .into_iter()
                .filter(|p| !seen.contains(p)),
        );
        if pending.is_empty() {
            break;
        }
        for pid in pending.drain(..) {
            if seen.insert(pid) {
                f(pid)?;
            }
        }
    }
    Ok(())
}

/// A child started by [`spawn`], with the limits it runs under.
pub(crate) struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub cgroup: Option<CgroupHandle>,
    pub applied: AppliedLimits,
}

/// Starts `spec` (plus `extra_env`) as the leader of a new session, under its limits.
pub(crate) fn spawn(
    spec: &CommandSpec,
    extra_env: &BTreeMap<String, String>,
    stdio: [Stdio; 3],
    cgroup_name: &str,
) -> Result<Spawned, RuntimeError> {
    spec.validate()?;
    for (key, value) in extra_env {
        crate::spec::validate_env(key, value)?;
    }
    let prepared = limits::prepare(cgroup_name, &spec.limits);
    let cgroup_procs = prepared
        .cgroup
        .as_ref()
        .map(CgroupHandle::open_procs)
        .transpose()?;
    let rlimits = prepared.rlimits;

    // The user's ids, computed here: nothing may be allocated in the child.
    let switch_to = spec
        .user
        .as_ref()
        .filter(|u| u.switches())
        .map(|u| (u.uid, u.gid, u.groups.clone()));
    let user_env = spec
        .user
        .as_ref()
        .map(crate::spec::RunAs::environment)
        .unwrap_or_default();

    let [stdin, stdout, stderr] = stdio;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(&user_env)
        .envs(&spec.env)
        .envs(extra_env)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false);
    if let Some(dir) = &spec.workdir {
        command.current_dir(dir);
    }
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls are
    // allowed: setsid, setrlimit, write, setgroups, setgid and setuid are (the child has one
    // thread); the closure allocates nothing (the plan and the ids were computed above) and
    // touches no lock.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid().map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            rlimits.apply_to_self()?;
            if let Some(fd) = &cgroup_procs {
                limits::join_cgroup_in_child(fd)?;
            }
            // Last: raising limits and joining the cgroup need the caller's privileges.
            if let Some((uid, gid, groups)) = &switch_to {
                drop_privileges(*uid, *gid, groups)?;
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| RuntimeError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let pid = child.id().ok_or_else(|| RuntimeError::Spawn {
        program: spec.program.clone(),
        source: io::Error::other("the child exited before its pid was read"),
    })?;
    Ok(Spawned {
        child,
        pid,
        cgroup: prepared.cgroup,
        applied: prepared.applied,
    })
}

/// Becomes user `uid` of group `gid` with supplementary `groups`, for good (real, effective
/// and saved ids). Async-signal-safe: meant for `pre_exec`.
fn drop_privileges(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: plain syscalls; `groups` outlives the call and its length is passed with it.
    unsafe {
        if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits for a process to exit without reaping it.
pub(crate) enum ExitWatch {
    /// A pidfd, readable once the process has exited.
    PidFd(AsyncFd<OwnedFd>),
    /// No pidfd: poll our child with `waitid(WNOHANG | WNOWAIT)`.
    PollChild(u32),
    /// No pidfd: poll someone else's child (a tmux pane) in `/proc`.
    PollForeign(u32),
    /// Known to have exited already.
    Exited,
}

impl ExitWatch {
    /// Watches our child `pid`.
    pub(crate) fn child(pid: u32) -> Self {
        pidfd(pid).map_or(Self::PollChild(pid), Self::PidFd)
    }

    /// Watches a process that is not our child.
    pub(crate) fn foreign(pid: u32) -> Self {
        pidfd(pid).map_or(Self::PollForeign(pid), Self::PidFd)
    }

    /// Resolves once the process has exited. Cancel-safe, and may be awaited again.
    pub(crate) async fn exited(&self) {
        let mut pause = Duration::from_millis(5);
        loop {
            let done = match self {
                Self::PidFd(fd) => {
                    // Readiness is never cleared: once exited, it stays readable.
                    let _ = fd.readable().await;
                    return;
                }
                Self::PollChild(pid) => peek_child_exit(*pid).is_some(),
                Self::PollForeign(pid) => {
                    proc_stat::read_stat(Path::new("/proc"), *pid).is_none_or(|s| !s.is_live())
                }
                Self::Exited => true,
            };
            if done {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// Opens a pidfd for `pid` and registers it with tokio; `None` if either is impossible.
fn pidfd(pid: u32) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same until it is dropped.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
}

/// The exit status of our child `pid` if it has exited, leaving it unreaped.
pub(crate) fn peek_child_exit(pid: u32) -> Option<ExitInfo> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) {
        Ok(WaitStatus::Exited(_, code)) => Some(ExitInfo::exited(code)),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some(ExitInfo::killed(signal as i32)),
        _ => None,
    }
}
