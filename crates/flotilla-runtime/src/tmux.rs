//! The tmux runtime: each agent runs in the first pane of a detached session `flotilla-NAME`,
//! which people can attach to ([`attach_command`]).
//!
//! # Starting
//!
//! One tmux invocation creates the session and configures it, so the server runs all of it
//! before it reads any output of the pane and nothing is missed:
//!
//! ```text
//! tmux [-S SOCKET] new-session -d -P -F '#{pane_pid} #{pane_id}' -s flotilla-NAME -x 220 -y 50
//!          [-e KEY=VALUE]… [-c WORKDIR] -- sh -c WRAPPER PROGRAM ARGS…
//!      \; set-option -t =flotilla-NAME: destroy-unattached off
//!      \; set-option -w -t =flotilla-NAME: remain-on-exit on
//!      \; pipe-pane -o -t =flotilla-NAME: "exec cat >> 'LOG'"
//! ```
//!
//! The pane's command is an argv, which tmux `execvp`s (it has more than one element; tmux would
//! hand a lone element to a shell as a string). Its process is a constant wrapper script
//! ([`PANE_WRAPPER`]) that runs `"$0" "$@"`, that is PROGRAM with ARGS as positional
//! parameters, never parsed as shell text, and waits for it. The wrapper exists because tmux
//! answers the stop of a pane's process with SIGCONT to its group: [`crate::Supervised::pause`]
//! stops every process of the group but the wrapper, which does not notice (it has no job
//! control) and uses no CPU while it waits. It ignores HUP, INT, QUIT and TERM while the agent
//! runs (the agent gets default handlers back at `exec`), then ends as the agent did: same exit
//! code, or the same signal raised on itself, so tmux records the agent's status. The pane's pid
//! and process group are the wrapper's; the agent is its child, in the same group.
//!
//! With a [`crate::RunAs`] user other than the caller's, `setpriv --reuid=UID --regid=GID
//! --groups=G,… --` comes before `sh`: tmux forks the pane itself, so the ids cannot be dropped
//! in a `pre_exec` of ours; `setpriv` (util-linux) drops them and execs the wrapper, which keeps
//! the pane's pid. The pane gets the user's `HOME`, `USER` and `LOGNAME` through `-e`.
//!
//! What tmux would still interpret is escaped:
//! - tmux splits its own argv into commands at any element ending in `;` (an argument `x;`
//!   followed by `run-shell …` would run a shell command): a final `;` is sent as `\;`.
//! - `-c` and `pipe-pane`'s command are expanded as formats, where `#(…)` runs a shell command:
//!   `#` is doubled there.
//! - The `pipe-pane` command is a shell string made only of our log path, single-quoted.
//!
//! Targets use `=` (exact session name; tmux otherwise matches prefixes) or the pane id. tmux turns
//! `.` and `:` in session names into `_`, so agent `a.b` gets session `flotilla-a_b`.
//!
//! # Waiting
//!
//! The pane's process is tmux's child, not ours. [`crate::Supervised::wait`] watches it with a
//! pidfd (opened after start, then checked against the pane still being alive, so it cannot
//! refer to a reused pid), or polls `/proc`. Then it reads the status: from the kernel while
//! the process is a zombie tmux has not reaped yet (`/proc/PID/stat` field 52), otherwise from
//! tmux, which keeps the dead pane and its `#{pane_dead_status}` / `#{pane_dead_signal}` because
//! of `remain-on-exit on`. Both are needed: tmux 3.3a marks a pane dead when its terminal
//! closes, a moment before it reaps the process and knows the status; and here it was seen to
//! miss a SIGCHLD when a client connected just as the pane exited, leaving the status unknown
//! (and the zombie unreaped) until its next SIGCHLD. The session stays until
//! [`crate::Supervised::stop`], so people can still attach and read the last screen.
//!
//! # Limits
//!
//! tmux forks the pane, so rlimits are set with `prlimit` and the cgroup joined right after
//! start, for every process of the pane's group (rescanning until no new one appears); what
//! they start afterwards inherits them. A process that left the group in those first
//! milliseconds is not covered.
//!
//! # Exec mode: [`run_once_in_tmux`]
//!
//! A task's stdin must arrive byte for byte and its stdout be captured exactly (JSON results);
//! a pane is a terminal, which rewrites line endings, echoes, and mixes stderr in. Running the
//! task inside a pane would need either a shell string or a helper executable that this library
//! does not have. So the task runs exactly as [`crate::run_once`] runs it (a child of ours, with
//! pipes), and the agent's session shows it live: its window runs `tail -F` on the agent's log,
//! which `run_once` appends the task's stdout and stderr to. Attaching to an exec-mode agent
//! thus shows its tasks' output as they run.
//!
//! The server is the default one, or the one at `$FLOTILLA_TMUX_SOCKET` (`tmux -S PATH`).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::RuntimeError;
use crate::exec::{ExecOutcome, ExecRequest, TaskGroup, run_once_with};
use crate::limits;
use crate::proc_stat;
use crate::process::{ExitWatch, for_each_member};
use crate::spec::{CommandSpec, ExitInfo, LogSpec, validate_name};
use crate::supervised::{AGENT_ENV, Backend, Supervised};

/// The environment variable naming the tmux server socket to use instead of the default server.
pub const SOCKET_ENV: &str = "FLOTILLA_TMUX_SOCKET";

/// Width and height of new sessions' windows.
const WINDOW_SIZE: (&str, &str) = ("220", "50");

/// The pane's process: a constant script that runs the agent (`"$0" "$@"`: program and
/// arguments are positional parameters, never parsed as shell text) as its child and waits for
/// it. It survives HUP, INT, QUIT and TERM while the agent runs (the traps are reset in the
/// agent by `exec`), then ends the way the agent did: the same exit code, or the same signal
/// raised on itself, so tmux records the agent's status. It exists so that pausing can stop the
/// agent without stopping tmux's own child: tmux sends SIGCONT to a pane whose process stops.
pub const PANE_WRAPPER: &str = "trap : HUP INT QUIT TERM; \"$0\" \"$@\"; s=$?; \
    case $s in 129|13[0-9]|14[0-3]|15[2-5]|158|159) \
    trap - HUP INT QUIT TERM; kill -$((s - 128)) $$;; esac; exit \"$s\"";

/// How long to wait for tmux to mark a pane dead after its process exited.
const DEAD_PANE_WAIT: Duration = Duration::from_secs(10);

/// The session name of agent `name`: `flotilla-NAME`, with `.` turned into `_` as tmux would.
pub fn session_name(name: &str) -> String {
    format!("flotilla-{}", name.replace(['.', ':'], "_"))
}

/// A tmux server: the default one, or the one listening on a given socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmuxServer {
    socket: Option<PathBuf>,
}

impl TmuxServer {
    /// The server at `$FLOTILLA_TMUX_SOCKET` if set, else tmux's default server.
    pub fn from_env() -> Self {
        Self {
            socket: std::env::var_os(SOCKET_ENV)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The server listening on `socket` (`tmux -S socket`), started on first use.
    pub fn with_socket(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: Some(socket.into()),
        }
    }

    /// The socket given, if any.
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    fn base_args(&self) -> Vec<OsString> {
        match &self.socket {
            Some(socket) => vec!["-S".into(), socket.into()],
            None => Vec::new(),
        }
    }

    /// Runs one tmux client invocation and returns its standard output.
    async fn run(&self, what: &str, args: Vec<OsString>) -> Result<String, RuntimeError> {
        let output = tokio::process::Command::new("tmux")
            .args(self.base_args())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| RuntimeError::TmuxUnavailable { source })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            Err(RuntimeError::Tmux {
                command: what.to_owned(),
                stderr: if stderr.is_empty() {
                    output.status.to_string()
                } else {
                    stderr
                },
            })
        }
    }

    /// Starts `spec` as agent `name` in a new session; see the module documentation.
    pub async fn start(
        &self,
        name: &str,
        spec: &CommandSpec,
        log: &LogSpec,
    ) -> Result<Supervised, RuntimeError> {
        validate_name(name)?;
        spec.validate()?;
        let session = session_name(name);
        let log_text = utf8(&log.path, "the log path")?;
        prepare_log_file(log)?;

        let mut args = args_of(&["new-session", "-d", "-P", "-F", "#{pane_pid} #{pane_id}"]);
        args.extend(args_of(&[
            "-s",
            &session,
            "-x",
            WINDOW_SIZE.0,
            "-y",
            WINDOW_SIZE.1,
        ]));
        // The user's HOME, USER and LOGNAME, then the spec's variables, then the marker.
        let mut env = spec
            .user
            .as_ref()
            .map(crate::spec::RunAs::environment)
            .unwrap_or_default();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.insert(AGENT_ENV.to_owned(), name.to_owned());
        for (key, value) in &env {
            args.push("-e".into());
            args.push(argv_escape(&format!("{key}={value}")).into());
        }
        if let Some(dir) = &spec.workdir {
            args.push("-c".into());
            args.push(argv_escape(&format_escape(utf8(dir, "the working directory")?)).into());
        }
        args.push("--".into());
        if let Some(user) = spec.user.as_ref().filter(|u| u.switches()) {
            args.extend(setpriv_argv(user)?);
        }
        args.extend(args_of(&["sh", "-c", PANE_WRAPPER]));
        args.push(argv_escape(&spec.program).into());
        args.extend(spec.args.iter().map(|a| OsString::from(argv_escape(a))));
        // `set-option -t` takes a pane: `=NAME:` is the session's current window and pane.
        let window = format!("={session}:");
        args.extend(args_of(&[
            ";",
            "set-option",
            "-t",
            &window,
            "destroy-unattached",
            "off",
        ]));
        args.extend(args_of(&[
            ";",
            "set-option",
            "-w",
            "-t",
            &window,
            "remain-on-exit",
            "on",
        ]));
        let pipe = format!("exec cat >> {}", shell_quote(log_text));
        args.extend(args_of(&[";", "pipe-pane", "-o", "-t", &window]));
        args.push(argv_escape(&format_escape(&pipe)).into());

        let printed = self.run("new-session", args).await?;
        let (pid, pane) = parse_pane(&printed).ok_or_else(|| RuntimeError::Tmux {
            command: "new-session".into(),
            stderr: format!("unexpected answer {printed:?} (wanted a pane pid and id)"),
        })?;

        // tmux's pane process calls setsid(): it leads its own group. (Reading /proc now could
        // still show tmux's group, before the child got there.)
        match self.after_start(name, &pane, pid, spec).await {
            Ok((watch, prepared)) => Ok(Supervised::new(
                name,
                pid,
                pid,
                log.path.clone(),
                prepared.applied,
                prepared.cgroup,
                watch,
                Backend::Tmux {
                    server: self.clone(),
                    session,
                    pane,
                },
            )),
            Err(e) => {
                let _ = self.kill_session_named(&session).await;
                Err(e)
            }
        }
    }

    /// Applies limits to the pane's process and sets up the exit watch.
    async fn after_start(
        &self,
        name: &str,
        pane: &str,
        pid: u32,
        spec: &CommandSpec,
    ) -> Result<(ExitWatch, limits::Prepared), RuntimeError> {
        let mut prepared = limits::prepare(&format!("agent-{name}"), &spec.limits);
        if !spec.limits.is_empty() {
            // Every process of the pane's group, including the agent the wrapper may already
            // have forked; what they start from now on inherits the limits.
            let gone = |e: &std::io::Error| e.raw_os_error() == Some(libc::ESRCH);
            let (rlimits, cgroup) = (&prepared.rlimits, &prepared.cgroup);
            for_each_member(pid, Some(pid), |member| {
                if let Err(e) = rlimits.apply_to_pid(member)
                    && !gone(&e)
                {
                    return Err(RuntimeError::Spawn {
                        program: spec.program.clone(),
                        source: e,
                    });
                }
                match cgroup.as_ref().map(|c| c.add(member)) {
                    Some(Err(RuntimeError::Cgroup { source, .. })) if gone(&source) => Ok(()),
                    Some(Err(e)) => Err(e),
                    _ => Ok(()),
                }
            })?;
            prepared.applied.note.push_str(
                "; applied just after tmux started the pane (processes that left its process group before are not covered)",
            );
        }
        let mut watch = ExitWatch::foreign(pid);
        // The pid may have been reaped and reused before the pidfd was opened; if the pane is
        // still alive, tmux has not reaped it, so the pidfd is the pane's process.
        if self.pane_is_dead(pane).await? {
            watch = ExitWatch::Exited;
        }
        Ok((watch, prepared))
    }

    async fn pane_is_dead(&self, pane: &str) -> Result<bool, RuntimeError> {
        let out = self
            .run(
                "display-message",
                args_of(&["display-message", "-p", "-t", pane, "#{pane_dead}"]),
            )
            .await?;
        Ok(out.trim() == "1")
    }

    /// How the process `pid` of a dead pane ended: from the kernel while it is a zombie, else
    /// from tmux, waiting (up to ten seconds) for tmux to learn it. Unknown if the pane is gone
    /// or tmux never learns the status.
    pub(crate) async fn pane_exit(&self, pane: &str, pid: u32) -> ExitInfo {
        let deadline = Instant::now() + DEAD_PANE_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            // Until tmux reaps it, the kernel holds the status. (tmux 3.3a was seen here to miss
            // a SIGCHLD now and then under load, leaving the pane dead and its status unknown
            // for good.) A zombie's pid cannot be reused, so this is the pane's process.
            if let Some(exit) = proc_stat::zombie_exit(pid) {
                return exit;
            }
            let args = args_of(&[
                "display-message",
                "-p",
                "-t",
                pane,
                "#{pane_dead} #{pane_dead_status} #{pane_dead_signal}",
            ]);
            let Ok(out) = self.run("display-message", args).await else {
                return ExitInfo::UNKNOWN;
            };
            // tmux may mark the pane dead (its terminal closed) a moment before it has reaped
            // the process and learnt its status: wait for a code or a signal.
            let mut fields = out.trim_end_matches('\n').split(' ');
            if fields.next() == Some("1") {
                let code = fields.next().and_then(|s| s.parse().ok());
                let signal = fields.next().and_then(|s| s.parse().ok());
                match (code, signal) {
                    (Some(code), _) => return ExitInfo::exited(code),
                    (None, Some(signal)) => return ExitInfo::killed(signal),
                    (None, None) => {}
                }
            }
            if Instant::now() >= deadline {
                return ExitInfo::UNKNOWN;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Whether agent `name` has a session on this server.
    pub async fn has_session(&self, name: &str) -> Result<bool, RuntimeError> {
        validate_name(name)?;
        let target = format!("={}", session_name(name));
        match self
            .run("has-session", args_of(&["has-session", "-t", &target]))
            .await
        {
            Ok(_) => Ok(true),
            Err(RuntimeError::Tmux { stderr, .. }) if no_such_session(&stderr) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Kills agent `name`'s session (and so its processes, with SIGHUP). A missing session or
    /// server is not an error.
    pub async fn kill_session(&self, name: &str) -> Result<(), RuntimeError> {
        validate_name(name)?;
        self.kill_session_named(&session_name(name)).await
    }

    pub(crate) async fn kill_session_named(&self, session: &str) -> Result<(), RuntimeError> {
        let target = format!("={session}");
        match self
            .run("kill-session", args_of(&["kill-session", "-t", &target]))
            .await
        {
            Err(RuntimeError::Tmux { stderr, .. }) if no_such_session(&stderr) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The command that attaches a terminal to agent `name`'s session:
    /// `tmux [-S SOCKET] attach-session -t =flotilla-NAME` (`=`: this exact session, not one
    /// whose name merely starts so). For the CLI to run or exec.
    pub fn attach_command(&self, name: &str) -> std::process::Command {
        let mut command = std::process::Command::new("tmux");
        command.args(self.base_args()).args([
            "attach-session",
            "-t",
            &format!("={}", session_name(name)),
        ]);
        command
    }

    /// Runs one exec-mode task of agent `name`, showing its output in the agent's session; see
    /// the module documentation. `req.log` is required: it is what the session's window shows.
    pub async fn run_once(
        &self,
        name: &str,
        req: ExecRequest,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.run_once_with(name, req, |_| {}).await
    }

    /// [`TmuxServer::run_once`], calling `on_spawn` as [`crate::run_once_with`] does.
    pub async fn run_once_with(
        &self,
        name: &str,
        req: ExecRequest,
        on_spawn: impl FnOnce(TaskGroup) + Send,
    ) -> Result<ExecOutcome, RuntimeError> {
        validate_name(name)?;
        let Some(log) = &req.log else {
            return Err(RuntimeError::InvalidSpec(
                "exec mode under tmux needs a log: the agent's session shows it".into(),
            ));
        };
        self.ensure_log_session(name, log).await?;
        run_once_with(req, on_spawn).await
    }

    /// Creates agent `name`'s session, showing `tail -F LOG`, unless it exists.
    pub async fn ensure_log_session(&self, name: &str, log: &LogSpec) -> Result<(), RuntimeError> {
        if self.has_session(name).await? {
            return Ok(());
        }
        prepare_log_file(log)?;
        let session = session_name(name);
        let mut args = args_of(&["new-session", "-d", "-s", &session, "-n", "log"]);
        args.extend(args_of(&["-x", WINDOW_SIZE.0, "-y", WINDOW_SIZE.1, "--"]));
        args.extend(args_of(&["tail", "-n", "200", "-F", "--"]));
        args.push(argv_escape(utf8(&log.path, "the log path")?).into());
        match self.run("new-session", args).await {
            // Another task of the agent created it meanwhile.
            Err(RuntimeError::Tmux { stderr, .. }) if stderr.contains("duplicate session") => {
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

/// [`TmuxServer::attach_command`] on the server from the environment.
pub fn attach_command(name: &str) -> std::process::Command {
    TmuxServer::from_env().attach_command(name)
}

/// [`TmuxServer::run_once`] on the server from the environment.
pub async fn run_once_in_tmux(name: &str, req: ExecRequest) -> Result<ExecOutcome, RuntimeError> {
    TmuxServer::from_env().run_once(name, req).await
}

/// [`TmuxServer::run_once_with`] on the server from the environment.
pub async fn run_once_in_tmux_with(
    name: &str,
    req: ExecRequest,
    on_spawn: impl FnOnce(TaskGroup) + Send,
) -> Result<ExecOutcome, RuntimeError> {
    TmuxServer::from_env()
        .run_once_with(name, req, on_spawn)
        .await
}

/// [`TmuxServer::kill_session`] on the server from the environment.
pub async fn kill_session(name: &str) -> Result<(), RuntimeError> {
    TmuxServer::from_env().kill_session(name).await
}

/// Whether tmux's complaint means the session (or the whole server) does not exist.
fn no_such_session(stderr: &str) -> bool {
    [
        "can't find session",
        "no server running",
        "error connecting",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// The argv prefix that makes the pane's process `user`: `setpriv` (util-linux) sets its groups
/// and ids, then execs the wrapper. tmux forks the pane itself, so this cannot be done in a
/// `pre_exec` of ours; each id is one argv element, nothing is parsed by a shell.
fn setpriv_argv(user: &crate::spec::RunAs) -> Result<Vec<OsString>, RuntimeError> {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(dir.join("setpriv"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if !found {
        return Err(RuntimeError::User {
            name: user.name.clone(),
            message: "the tmux runtime starts agents as another user with setpriv, which is not on PATH; install util-linux (e.g. `apt-get install util-linux`) or use the process runtime".into(),
        });
    }
    let mut argv = vec![
        OsString::from("setpriv"),
        format!("--reuid={}", user.uid).into(),
        format!("--regid={}", user.gid).into(),
    ];
    if user.groups.is_empty() {
        argv.push("--clear-groups".into());
    } else {
        let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
        argv.push(format!("--groups={}", groups.join(",")).into());
    }
    argv.push("--".into());
    Ok(argv)
}

fn args_of(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

fn parse_pane(printed: &str) -> Option<(u32, String)> {
    let (pid, pane) = printed.trim().split_once(' ')?;
    let pid = pid.parse().ok()?;
    pane.starts_with('%').then(|| (pid, pane.to_owned()))
}

fn utf8<'a>(path: &'a Path, what: &str) -> Result<&'a str, RuntimeError> {
    path.to_str().ok_or_else(|| {
        RuntimeError::InvalidSpec(format!("{what} {} is not valid UTF-8", path.display()))
    })
}

/// Creates the log's directory and file, so `tail -F` and `cat >>` find them.
fn prepare_log_file(log: &LogSpec) -> Result<(), RuntimeError> {
    let fail = |source| RuntimeError::Log {
        path: log.path.clone(),
        source,
    };
    if let Some(dir) = log.path.parent()
        && !dir.as_os_str().is_empty()
    {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log.path)
        .map_err(fail)?;
    Ok(())
}

/// tmux ends a command at an argv element ending in `;`, and reads a final `\;` as a literal
/// `;`: so a final `;` is sent as `\;` (this also round-trips a final `\;`).
pub(crate) fn argv_escape(arg: &str) -> String {
    match arg.strip_suffix(';') {
        Some(head) => format!("{head}\\;"),
        None => arg.to_owned(),
    }
}

/// For values tmux expands as formats: `##` is a literal `#`, and no other `#` remains.
pub(crate) fn format_escape(text: &str) -> String {
    text.replace('#', "##")
}

/// Single-quotes `text` for `sh`.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(argv_escape("plain"), "plain");
        assert_eq!(argv_escape(";"), "\\;");
        assert_eq!(argv_escape("rm -rf /;"), "rm -rf /\\;");
        assert_eq!(argv_escape("a\\;"), "a\\\\;");
        assert_eq!(argv_escape("a;b"), "a;b");
        assert_eq!(format_escape("/tmp/#(id)/x#"), "/tmp/##(id)/x##");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn names_and_answers() {
        assert_eq!(session_name("a.b-c_d"), "flotilla-a_b-c_d");
        assert_eq!(parse_pane("4242 %7\n"), Some((4242, "%7".to_owned())));
        assert_eq!(parse_pane("nonsense"), None);
    }

    #[test]
    fn attach_argv() {
        let server = TmuxServer::with_socket("/tmp/s.sock");
        let command = server.attach_command("agent.1");
        assert_eq!(command.get_program(), "tmux");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "-S",
                "/tmp/s.sock",
                "attach-session",
                "-t",
                "=flotilla-agent_1"
            ]
        );
        let default = TmuxServer::default().attach_command("x");
        assert_eq!(
            default.get_args().collect::<Vec<_>>(),
            ["attach-session", "-t", "=flotilla-x"]
        );
    }
}
