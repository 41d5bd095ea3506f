//! What to run and what came of it: [`CommandSpec`], [`Limits`], [`LogSpec`], [`RuntimeKind`],
//! [`ExitInfo`], and the agent name rule ([`validate_name`]).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// A program to run: an argv (never a shell string), extra environment, a working directory,
/// resource limits and the user to run as.
///
/// The process inherits the environment of the caller (process runtime) or of the tmux server
/// (tmux runtime), with `HOME`, `USER` and `LOGNAME` of [`CommandSpec::user`] (when set) and
/// then `env` added on top.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandSpec {
    /// The program: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments, passed as they are (see [`crate::template::render_args`] to fill them).
    pub args: Vec<String>,
    /// Variables added to (or replacing those of) the inherited environment.
    pub env: BTreeMap<String, String>,
    /// The working directory; the caller's (or the tmux server's) when `None`.
    pub workdir: Option<PathBuf>,
    /// Resource limits; see [`crate::limits`] for how each is enforced.
    pub limits: Limits,
    /// The user to run as; the caller's own when `None`. Switching to another user needs a
    /// caller running as root (see [`RunAs`]).
    pub user: Option<RunAs>,
}

impl CommandSpec {
    /// A spec running `program` with no arguments, no extra environment and no limits.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }

    /// Appends arguments (builder style).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Checks what the OS would refuse later with a less helpful message: an empty program, NUL
    /// bytes, malformed environment names.
    pub(crate) fn validate(&self) -> Result<(), RuntimeError> {
        if self.program.is_empty() {
            return Err(RuntimeError::InvalidSpec("the program is empty".into()));
        }
        if self.program.contains('\0') || self.args.iter().any(|a| a.contains('\0')) {
            return Err(RuntimeError::InvalidSpec(
                "the program or an argument contains a NUL byte".into(),
            ));
        }
        for (key, value) in &self.env {
            validate_env(key, value)?;
        }
        if let Some(dir) = &self.workdir
            && dir.as_os_str().as_encoded_bytes().contains(&0)
        {
            return Err(RuntimeError::InvalidSpec(
                "the working directory contains a NUL byte".into(),
            ));
        }
        if let Some(user) = &self.user {
            user.check_switch()?;
        }
        self.limits.validate()
    }
}

/// A user to run processes as: its ids, supplementary groups and home, read from the system's
/// user database by [`RunAs::lookup`].
///
/// A process started with one gets, in the child before `exec` and after its limits and cgroup
/// are in place, the user's supplementary groups (`setgroups`), group (`setgid`) and user
/// (`setuid`), in that order; tmux panes get the same through `setpriv` (see [`crate::tmux`]).
/// Its environment gets `HOME`, `USER` and `LOGNAME` for the user (the spec's own `env` may
/// still set them). Only a caller running as root may switch; anyone may "switch" to itself,
/// which changes nothing but the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
    /// Every group it belongs to (the primary one included), as `initgroups` would set them.
    pub groups: Vec<u32>,
    /// Its home directory.
    pub home: PathBuf,
}

impl RunAs {
    /// The user named `name` (or with the numeric id `name`), from the user database.
    pub fn lookup(name: &str) -> Result<RunAs, RuntimeError> {
        use nix::unistd::{Gid, Uid, User, getgrouplist};
        let fail = |message: String| RuntimeError::User {
            name: name.to_owned(),
            message,
        };
        if name.is_empty() || name.contains('\0') {
            return Err(fail("the name is empty or contains a NUL byte".into()));
        }
        let found = match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(name),
        }
        .map_err(|e| fail(format!("cannot read the user database: {e}")))?;
        let user = found.ok_or_else(|| {
            fail(
                "no such user on this machine (see `getent passwd`); create it or name another"
                    .into(),
            )
        })?;
        let c_name = std::ffi::CString::new(user.name.clone())
            .map_err(|_| fail("the user's name contains a NUL byte".into()))?;
        let mut groups: Vec<u32> = getgrouplist(&c_name, user.gid)
            .map_err(|e| fail(format!("cannot read the user's groups: {e}")))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        if !groups.contains(&user.gid.as_raw()) {
            groups.insert(0, user.gid.as_raw());
        }
        groups.dedup();
        Ok(RunAs {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
        })
    }

    /// Whether this process runs as root (effective user id 0), and so may start processes as
    /// any user.
    pub fn caller_is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The effective user id of this process.
    pub fn caller_uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// Whether starting a process as this user changes its ids (it is not the caller's own
    /// user and group).
    pub fn switches(&self) -> bool {
        self.uid != nix::unistd::geteuid().as_raw() || self.gid != nix::unistd::getegid().as_raw()
    }

    /// Fails when the caller may not start processes as this user: it is not root, and the
    /// user is not its own.
    pub fn check_switch(&self) -> Result<(), RuntimeError> {
        if self.switches() && !Self::caller_is_root() {
            return Err(RuntimeError::User {
                name: self.name.clone(),
                message: format!(
                    "this process runs as uid {}, not root, so it can start processes only as itself; run it as root or do not ask for another user",
                    Self::caller_uid()
                ),
            });
        }
        Ok(())
    }

    /// `HOME`, `USER` and `LOGNAME` for this user.
    pub fn environment(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("HOME".to_owned(), self.home.display().to_string()),
            ("USER".to_owned(), self.name.clone()),
            ("LOGNAME".to_owned(), self.name.clone()),
        ])
    }
}

/// Checks one environment variable: a non-empty name without `=` or NUL, a value without NUL.
pub(crate) fn validate_env(key: &str, value: &str) -> Result<(), RuntimeError> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(RuntimeError::InvalidSpec(format!(
            "environment variable name {key:?} is empty or contains '=' or NUL"
        )));
    }
    if value.contains('\0') {
        return Err(RuntimeError::InvalidSpec(format!(
            "the value of environment variable {key} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Resource limits of one agent process (and its descendants).
///
/// `memory_bytes` and `cpu_cores` use a cgroup v2 when one is available
/// ([`crate::limits::Cgroups`]); without one, `memory_bytes` falls back to `RLIMIT_AS` and
/// `cpu_cores` is not enforced. `cpu_time` and `open_files` are always rlimits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory: cgroup `memory.max`, or `RLIMIT_AS` (address space) without a cgroup.
    pub memory_bytes: Option<u64>,
    /// CPU bandwidth in cores (1.5 = one and a half cores): cgroup `cpu.max`.
    pub cpu_cores: Option<f64>,
    /// Total CPU time: `RLIMIT_CPU` (SIGXCPU at the limit, SIGKILL a little later).
    pub cpu_time: Option<Duration>,
    /// Open file descriptors: `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
}

impl Limits {
    /// How these limits would be enforced on this machine, for people to read (what
    /// [`crate::AppliedLimits::note`] would say once a process starts with them).
    pub fn describe_plan(&self) -> String {
        crate::limits::describe_plan(self).note
    }

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn validate(&self) -> Result<(), RuntimeError> {
        if let Some(cores) = self.cpu_cores
            && !(cores.is_finite() && cores > 0.0)
        {
            return Err(RuntimeError::InvalidSpec(format!(
                "cpu_cores must be a positive number, not {cores}"
            )));
        }
        if self.memory_bytes == Some(0) {
            return Err(RuntimeError::InvalidSpec(
                "memory_bytes must be positive".into(),
            ));
        }
        if self.cpu_time == Some(Duration::ZERO) {
            return Err(RuntimeError::InvalidSpec(
                "cpu_time must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Where a process's output goes: a file, rotated when it reaches `max_bytes`
/// (see [`crate::logs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    /// The log file; its directory is created if missing.
    pub path: PathBuf,
    /// Size at which the file is rotated (default 10 MiB).
    pub max_bytes: u64,
    /// Rotated files kept: `path.1` (newest) to `path.{keep}` (default 3).
    pub keep: usize,
}

impl LogSpec {
    /// Default size at which a log is rotated: 10 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
    /// Default number of rotated files kept: 3.
    pub const DEFAULT_KEEP: usize = 3;

    /// A log at `path` with the default size and number of rotated files.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            keep: Self::DEFAULT_KEEP,
        }
    }
}

/// Which backend runs an agent's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// A child of the coordinator, in its own session and process group.
    Process,
    /// The first pane of a detached tmux session `flotilla-<name>`, which users can attach to.
    Tmux,
}

/// How a process ended: an exit code, a signal, or (rarely) unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when it was killed.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// An exit status that could not be learnt (the tmux session vanished, for example).
    pub const UNKNOWN: ExitInfo = ExitInfo {
        code: None,
        signal: None,
    };

    /// A process that exited with `code`.
    pub fn exited(code: i32) -> Self {
        Self {
            code: Some(code),
            signal: None,
        }
    }

    /// A process killed by signal number `signal`.
    pub fn killed(signal: i32) -> Self {
        Self {
            code: None,
            signal: Some(signal),
        }
    }

    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// One line for people: "exited with code 3", "killed by SIGKILL".
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(sig) => format!("killed by {}", sig.as_str()),
                Err(_) => format!("killed by signal {signal}"),
            },
            (None, None) => "exit status unknown".to_owned(),
        }
    }
}

impl From<ExitStatus> for ExitInfo {
    fn from(status: ExitStatus) -> Self {
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The signals this crate sends to process groups on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// SIGSTOP: pause.
    Stop,
    /// SIGCONT: resume.
    Cont,
    /// SIGTERM: please exit.
    Term,
    /// SIGKILL: exit now.
    Kill,
}

impl From<Signal> for nix::sys::signal::Signal {
    fn from(signal: Signal) -> Self {
        match signal {
            Signal::Stop => Self::SIGSTOP,
            Signal::Cont => Self::SIGCONT,
            Signal::Term => Self::SIGTERM,
            Signal::Kill => Self::SIGKILL,
        }
    }
}

/// Longest agent name accepted.
pub const MAX_NAME_LEN: usize = 100;

/// Checks an agent name: 1 to 100 characters from `A-Z a-z 0-9 . _ -`.
///
/// The name becomes part of a tmux session name and of cgroup directory names, so nothing else
/// is allowed.
pub fn validate_name(name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "agent-1", "A.b_c-9", &"x".repeat(100)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "a;b", "ä", "$(x)", &"x".repeat(101)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn describe() {
        assert_eq!(ExitInfo::exited(3).describe(), "exited with code 3");
        assert_eq!(ExitInfo::killed(9).describe(), "killed by SIGKILL");
        assert_eq!(ExitInfo::killed(15).to_string(), "killed by SIGTERM");
        assert_eq!(ExitInfo::killed(99).describe(), "killed by signal 99");
        assert_eq!(ExitInfo::UNKNOWN.describe(), "exit status unknown");
        assert!(ExitInfo::exited(0).success());
    }

    #[test]
    fn spec_validation() {
        assert!(CommandSpec::new("").validate().is_err());
        assert!(CommandSpec::new("a").args(["b\0"]).validate().is_err());
        let mut spec = CommandSpec::new("true");
        spec.env.insert("A=B".into(), "x".into());
        assert!(spec.validate().is_err());
        let mut spec = CommandSpec::new("true");
        spec.limits.cpu_cores = Some(f64::NAN);
        assert!(spec.validate().is_err());
        assert!(CommandSpec::new("true").validate().is_ok());
    }
}
