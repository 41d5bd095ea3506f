//! Launching and supervising agent processes, knowing nothing of the coordinator.
//!
//! - Daemon mode: [`start`] runs a long-lived agent process under the process runtime (our child)
//!   or the tmux runtime (a detached session people can attach to) and returns a [`Supervised`]
//!   handle: [`Supervised::wait`], [`Supervised::pause`] / [`Supervised::resume`] (SIGSTOP /
//!   SIGCONT), [`Supervised::stop`] (SIGTERM, grace, SIGKILL, nothing of the group left),
//!   [`Supervised::kill`].
//! - Exec mode: [`run_once`] runs one process per task with stdin, a stdout limit, a stderr tail
//!   and a deadline; [`run_once_in_tmux`] does the same and shows it in the agent's tmux session.
//! - Every process leads its own session and process group; signals go to the group.
//! - [`Limits`] become rlimits and, where the machine has a usable cgroup v2, a cgroup
//!   ([`limits`]); each start reports what was enforced as [`AppliedLimits`].
//! - [`CommandSpec::user`] ([`RunAs`]) starts the process as another user (the caller must be
//!   root): supplementary groups, group and user set before `exec`, `setpriv` under tmux.
//! - Output goes to size-rotated logs ([`logs`]); [`Sampler`] reads groups' CPU, memory and
//!   open files from `/proc`; [`render_args`] fills argv templates from a task, without a shell,
//!   and [`render_env`] takes the environment variables a task may set from its payload.
//! - Workspace checkpoints ([`checkpoint`]): [`checkpoint::snapshot`] records an agent's working
//!   directory (a commit on a private git ref, or a `.tar.gz` outside git),
//!   [`checkpoint::restore`] rolls it back, [`checkpoint::discard`] deletes the snapshot.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_runtime::RuntimeError> {
//! use std::time::Duration;
//! use flotilla_runtime::{CommandSpec, LogSpec, RuntimeKind, start};
//!
//! let spec = CommandSpec::new("my-agent").args(["--serve"]);
//! let mut agent = start(RuntimeKind::Process, "coder-1", &spec, &LogSpec::new("/tmp/coder-1.log")).await?;
//! agent.pause()?;
//! agent.resume()?;
//! let exit = agent.stop(Duration::from_secs(5)).await;
//! println!("coder-1 {exit}");
//! # Ok(()) }
//! ```
//!
//! Linux only: it relies on `/proc`, pidfds, `prlimit` and cgroup v2.

#![warn(missing_docs)]

pub mod checkpoint;
mod error;
pub mod exec;
pub mod limits;
pub mod logs;
pub mod machine;
mod proc_stat;
mod process;
pub mod sample;
mod spec;
mod supervised;
pub mod template;
pub mod tmux;

pub use checkpoint::{CheckpointError, RestoreReport, WorkspaceSnapshot};
pub use error::{RuntimeError, TemplateError};
pub use exec::{ExecOutcome, ExecRequest, TaskGroup, run_once, run_once_with};
pub use limits::{AppliedLimits, CgroupHandle, Cgroups};
pub use logs::{RotatingLog, rotate_if_needed};
pub use machine::{MachineCapacity, MachineSampler, MachineUsage};
pub use sample::{Sampler, Usage};
pub use spec::{
    CommandSpec, ExitInfo, Limits, LogSpec, MAX_NAME_LEN, RunAs, RuntimeKind, Signal, validate_name,
};
pub use supervised::{AGENT_ENV, Supervised, kill_leftover_group};
pub use template::{TaskVars, render_args, render_env};
pub use tmux::{TmuxServer, attach_command, run_once_in_tmux, run_once_in_tmux_with};

/// Starts agent `name` (checked by [`validate_name`]) running `spec` under runtime `kind`, its
/// output appended to `log`.
///
/// - [`RuntimeKind::Process`]: a child of this process, in its own session; stdin is
///   `/dev/null`, stdout and stderr go to `log`, which is rotated as it is written.
/// - [`RuntimeKind::Tmux`]: the pane of a new detached session `flotilla-NAME` on the server
///   of [`TmuxServer::from_env`]; the pane's output is appended to `log` by `pipe-pane` (call
///   [`rotate_if_needed`] periodically). Fails if the session exists.
pub async fn start(
    kind: RuntimeKind,
    name: &str,
    spec: &CommandSpec,
    log: &LogSpec,
) -> Result<Supervised, RuntimeError> {
    match kind {
        RuntimeKind::Process => supervised::start_process(name, spec, log).await,
        RuntimeKind::Tmux => TmuxServer::from_env().start(name, spec, log).await,
    }
}

/// Compile-time checks that handles and futures can move between tokio worker threads.
#[cfg(test)]
mod send_checks {
    use std::time::Duration;

    use super::*;

    fn is_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    fn handles_and_futures_are_send(mut agent: Supervised, spec: CommandSpec, log: LogSpec) {
        is_send(&agent);
        is_send(&agent.wait());
        is_send(&agent.stop(Duration::ZERO));
        is_send(&start(RuntimeKind::Tmux, "x", &spec, &log));
        is_send(&run_once(ExecRequest::new(spec.clone())));
        is_send(&TmuxServer::default().run_once("x", ExecRequest::new(spec)));
        is_send(&Sampler::new());
    }

    const _: fn() = || {
        fn is_sync<T: Sync>() {}
        is_sync::<Supervised>();
    };
}
