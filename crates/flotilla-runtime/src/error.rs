//! The errors of this crate: [`RuntimeError`] for starting and controlling processes,
//! [`TemplateError`] for filling argument templates.

use std::io;
use std::path::PathBuf;

/// Why a process could not be started or controlled. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The agent name is not 1 to 100 characters from `A-Z a-z 0-9 . _ -`.
    #[error(
        "invalid agent name {name:?}: use 1 to 100 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    InvalidName {
        /// The name refused.
        name: String,
    },
    /// The command, its environment or its limits cannot be used as given.
    #[error("invalid command: {0}")]
    InvalidSpec(String),
    /// The user to run as cannot be found or switched to.
    #[error("cannot run as user {name:?}: {message}")]
    User {
        /// The user's name as given.
        name: String,
        /// Why.
        message: String,
    },
    /// The program could not be started (not found, not executable, a limit refused).
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The `tmux` binary could not be run.
    #[error(
        "cannot run tmux ({source}); install it (e.g. `apt-get install tmux`, version 3.2 or later) or use the process runtime"
    )]
    TmuxUnavailable {
        /// The OS error from running `tmux`.
        #[source]
        source: io::Error,
    },
    /// A tmux command failed; `stderr` is what tmux said.
    #[error("tmux {command} failed: {stderr}")]
    Tmux {
        /// The tmux command (`new-session`, `kill-session`, …).
        command: String,
        /// tmux's error output.
        stderr: String,
    },
    /// A signal could not be sent to a process group.
    #[error("cannot send {signal} to process group {pgid}: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The process group.
        pgid: u32,
        /// The OS error (ESRCH when the group has no process left).
        #[source]
        source: io::Error,
    },
    /// The log file could not be opened or written.
    #[error("log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup could not be created, configured or joined.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another OS operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why an argument template (or a payload's environment) could not be filled. Each names the
/// placeholder or variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder is neither `payload…` nor `task.id`, `task.type`, `task.attempt`.
    #[error(
        "argument {arg}: unknown placeholder {{{{{placeholder}}}}}; use {{{{payload}}}}, {{{{payload.FIELD…}}}}, {{{{task.id}}}}, {{{{task.type}}}} or {{{{task.attempt}}}}"
    )]
    UnknownPlaceholder {
        /// Index of the argument in the template.
        arg: usize,
        /// The placeholder's text, without braces.
        placeholder: String,
    },
    /// A `{{payload.…}}` path does not exist in the task's payload.
    #[error("argument {arg}: {{{{{placeholder}}}}}: the payload has no field {missing:?}")]
    MissingField {
        /// Index of the argument in the template.
        arg: usize,
        /// The placeholder's text, without braces.
        placeholder: String,
        /// The first path segment not found.
        missing: String,
    },
    /// A `{{` has no matching `}}`.
    #[error("argument {arg}: '{{{{' without a closing '}}}}'")]
    Unterminated {
        /// Index of the argument in the template.
        arg: usize,
    },
    /// The payload's `env` names a variable the template does not let tasks set.
    #[error(
        "the payload's env sets {name}, which this pool's agent template does not let tasks set (its payload_env allows: {allowed}); leave it out, or add it to payload_env"
    )]
    EnvNotAllowed {
        /// The variable refused.
        name: String,
        /// The names the template allows, comma-separated.
        allowed: String,
    },
    /// The payload's `env` is not a JSON object.
    #[error(
        "the payload's env must be an object of environment variables, e.g. {{\"MODEL\": \"opus\"}}"
    )]
    EnvNotObject,
    /// A value of the payload's `env` cannot be an environment variable's value.
    #[error("the payload's env value of {name} {reason}")]
    EnvValue {
        /// The variable.
        name: String,
        /// What is wrong with its value.
        reason: &'static str,
    },
    /// The filled argument contains a NUL byte, which no argv element can hold.
    #[error("argument {arg}: the filled value contains a NUL byte")]
    NulByte {
        /// Index of the argument in the template.
        arg: usize,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        Self::Io { context, source }
    }
}
