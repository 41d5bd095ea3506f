//! `flotilla worker -- COMMAND [ARGS…]`: registers an agent and runs COMMAND once per task,
//! with the payload on stdin; stdout becomes the result, a non-zero exit fails the attempt.
//!
//! With `--agent-from-env` it is the process of a managed agent in daemon mode: it acts as the
//! agent named by `FLOTILLA_URL`, `FLOTILLA_AGENT_ID` and `FLOTILLA_TOKEN`, which the
//! coordinator created, and neither registers nor unregisters it.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flotilla_client::Client;
use flotilla_client::worker::{
    TaskFailure, TaskHandler, WorkerConfig, run_worker, run_worker_registered,
};
use flotilla_core::{AgentId, AgentSpec, Json, Task};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::cli::{GlobalArgs, WorkerArgs};
use crate::config;
use crate::duration::format_duration;

/// `FLOTILLA_TASK_PAYLOAD` is left out of the environment above this size.
pub const MAX_ENV_PAYLOAD: usize = 64 * 1024;
/// How much of the end of stderr a failure message keeps.
pub const STDERR_TAIL: usize = 2048;
/// The most stdout kept as a result (the API refuses bodies over 8 MiB anyway).
pub const MAX_STDOUT: usize = 16 * 1024 * 1024;

/// The variables a managed daemon-mode agent gets from the coordinator.
pub const AGENT_ENV: [&str; 3] = ["FLOTILLA_URL", "FLOTILLA_AGENT_ID", "FLOTILLA_TOKEN"];

/// The coordinator's URL, the agent and its token, from the environment of a managed agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFromEnv {
    /// `FLOTILLA_URL`.
    pub url: String,
    /// `FLOTILLA_AGENT_ID`.
    pub agent_id: AgentId,
    /// `FLOTILLA_TOKEN`: the agent's own token.
    pub token: String,
}

impl AgentFromEnv {
    /// Reads the variables through `get` (`std::env::var` outside tests); every one is
    /// required.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<AgentFromEnv> {
        let values: Vec<Option<String>> = AGENT_ENV
            .iter()
            .map(|name| {
                get(name)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            })
            .collect();
        let missing: Vec<&str> = AGENT_ENV
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            bail!(
                "--agent-from-env needs {} in the environment; the coordinator sets them when \
                 it starts a managed agent in daemon mode (to run a worker of your own, leave \
                 out --agent-from-env)",
                missing.join(", ")
            );
        }
        let [url, id, token] = <[Option<String>; 3]>::try_from(values)
            .expect("three variables")
            .map(|v| v.expect("checked"));
        let agent_id = id
            .parse::<AgentId>()
            .map_err(|_| anyhow::anyhow!("FLOTILLA_AGENT_ID={id:?} is not an agent id"))?;
        Ok(AgentFromEnv {
            url,
            agent_id,
            token,
        })
    }
}

/// Runs `flotilla worker`.
pub async fn run(global: &GlobalArgs, args: WorkerArgs) -> Result<ExitCode> {
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let program = resolve_program(program)?;
    let handler = CommandHandler {
        program,
        args: rest.to_vec(),
    };
    if args.agent_from_env {
        return run_as_managed(global, args, handler).await;
    }
    let client = config::client(global)?;
    let config = WorkerConfig {
        swarm: args.swarm,
        agent: AgentSpec {
            agent_type: args.agent_type,
            name: args.name,
            capabilities: args.capabilities,
            metadata: Some(Json::from(serde_json::json!({
                "command": handler.program.display().to_string(),
            }))),
            ..AgentSpec::default()
        },
        concurrency: args.concurrency.unwrap_or(1) as usize,
        poll_wait: args.poll_wait,
        shutdown_grace: args.shutdown_grace,
    };
    let grace = args.shutdown_grace;
    let stats = run_worker(client, config, handler, shutdown_signal(grace))
        .await
        .context("the worker stopped")?;
    eprintln!(
        "worker stopped: {} completed, {} failed, {} refused by the coordinator",
        stats.completed, stats.failed, stats.rejected
    );
    Ok(ExitCode::SUCCESS)
}

/// `flotilla worker --agent-from-env`: the worker of a managed daemon-mode agent.
async fn run_as_managed(
    global: &GlobalArgs,
    args: WorkerArgs,
    handler: CommandHandler,
) -> Result<ExitCode> {
    let env = AgentFromEnv::read(|name| std::env::var(name).ok())?;
    // FLOTILLA_CA_CERT (given by the coordinator when it serves TLS) is read as --ca-cert.
    let client = Client::with_options(&env.url, env.token.clone(), &config::client_options(global))
        .with_context(|| "FLOTILLA_URL is not usable".to_owned())?;
    let concurrency = match args.concurrency {
        Some(n) => n as usize,
        // The pool says how many tasks its agents hold at once.
        None => match client.get_agent(env.agent_id).await {
            Ok(agent) => agent.max_concurrent_tasks.max(1) as usize,
            Err(e) => {
                tracing::warn!(
                    "cannot read agent {} ({e}); running one task at a time",
                    env.agent_id
                );
                1
            }
        },
    };
    let config = WorkerConfig {
        swarm: std::env::var("FLOTILLA_SWARM").unwrap_or_default(),
        concurrency,
        poll_wait: args.poll_wait,
        shutdown_grace: args.shutdown_grace,
        ..WorkerConfig::default()
    };
    let grace = args.shutdown_grace;
    let stats = run_worker_registered(
        client,
        env.agent_id,
        config,
        handler,
        shutdown_signal(grace),
    )
    .await
    .context("the worker stopped")?;
    eprintln!(
        "worker stopped: {} completed, {} failed, {} refused by the coordinator",
        stats.completed, stats.failed, stats.rejected
    );
    Ok(ExitCode::SUCCESS)
}

/// Resolves after Ctrl-C or SIGTERM; a second Ctrl-C exits at once.
async fn shutdown_signal(grace: Duration) {
    wait_for_signal().await;
    eprintln!(
        "stopping: finishing running tasks (up to {}); press Ctrl-C again to quit now",
        format_duration(grace)
    );
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("quitting now; running tasks go back to the queue when the lease lapses");
        std::process::exit(130);
    });
}

/// Resolves at the first Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    Shutdown::listen().wait().await
}

/// Ctrl-C and SIGTERM, listened for from the moment it is made: a signal that comes before
/// [`Shutdown::wait`] is polled (while a command is still starting) is kept for it instead of
/// ending the process the hard way.
pub struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    /// Starts listening.
    pub fn listen() -> Shutdown {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Shutdown { signals }
        }
        #[cfg(not(unix))]
        {
            Shutdown {}
        }
    }

    /// Resolves at the first signal (perhaps one that came already).
    pub async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut int, mut term)) = self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Finds `program` as the OS would: a path if it has a `/`, else in `PATH`.
pub fn resolve_program(program: &str) -> Result<PathBuf> {
    if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
        let path = PathBuf::from(program);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!("cannot run {program}: no such executable file");
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    bail!("command not found: {program} (not in PATH; give its path)")
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Runs a command per task.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl TaskHandler for CommandHandler {
    async fn handle(&self, task: Task) -> Result<Json, TaskFailure> {
        self.run(&task).await
    }
}

impl CommandHandler {
    fn name(&self) -> String {
        self.program.display().to_string()
    }

    /// Runs the command for `task`.
    pub async fn run(&self, task: &Task) -> Result<Json, TaskFailure> {
        let payload = task.payload.get();
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("FLOTILLA_TASK_ID", task.id.to_string())
            .env("FLOTILLA_TASK_TYPE", &task.task_type)
            .env("FLOTILLA_TASK_ATTEMPT", task.attempts.to_string());
        if payload.len() <= MAX_ENV_PAYLOAD {
            cmd.env("FLOTILLA_TASK_PAYLOAD", payload);
        } else {
            cmd.env_remove("FLOTILLA_TASK_PAYLOAD");
        }
        // Its own process group: Ctrl-C in the terminal stops the worker, which lets the
        // command finish, rather than killing the command mid-task.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| TaskFailure::retryable(format!("cannot start {}: {e}", self.name())))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let feed = async {
            if let Some(mut stdin) = stdin {
                // A command that does not read its stdin closes it: that is fine.
                let _ = stdin.write_all(payload.as_bytes()).await;
                let _ = stdin.shutdown().await;
            }
        };
        let io = async {
            let (_, out, err, status) = tokio::join!(
                feed,
                read_capped(stdout, MAX_STDOUT),
                read_tail(stderr, STDERR_TAIL),
                child.wait()
            );
            (out, err, status)
        };
        let limit = (!task.timeout.is_zero()).then_some(task.timeout);
        let (out, err, status) = match limit {
            Some(limit) => match tokio::time::timeout(limit, io).await {
                Ok(done) => done,
                Err(_) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(TaskFailure::retryable(format!(
                        "{} timed out after {} and was killed",
                        self.name(),
                        format_duration(limit)
                    )));
                }
            },
            None => io.await,
        };
        let status = status.map_err(|e| {
            TaskFailure::retryable(format!("waiting for {} failed: {e}", self.name()))
        })?;
        let (stdout, overflow) = out;
        if !err.is_empty() {
            debug!(
                "task {} stderr (end): {}",
                task.id,
                String::from_utf8_lossy(&err).trim_end()
            );
        }
        if status.success() {
            if overflow {
                return Err(TaskFailure::permanent(format!(
                    "{} wrote more than {} MiB to stdout; results must be smaller",
                    self.name(),
                    MAX_STDOUT / (1024 * 1024)
                )));
            }
            return Ok(stdout_to_result(&stdout));
        }
        let how = match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => signal_text(&status),
        };
        let tail = String::from_utf8_lossy(&err);
        let tail = tail.trim();
        Err(TaskFailure::retryable(if tail.is_empty() {
            format!("{} {how}", self.name())
        } else {
            format!("{} {how}: {tail}", self.name())
        }))
    }
}

#[cfg(unix)]
fn signal_text(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) => format!("was killed by signal {sig}"),
        None => "ended abnormally".into(),
    }
}

#[cfg(not(unix))]
fn signal_text(_: &std::process::ExitStatus) -> String {
    "ended abnormally".into()
}

/// A successful command's stdout as the task's result: the JSON document it is, else a JSON
/// string of the text without its trailing newline; `null` when it is empty.
pub fn stdout_to_result(stdout: &[u8]) -> Json {
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Json::null();
    }
    if let Ok(json) = Json::parse(trimmed) {
        return json;
    }
    Json::from_value(text.trim_end_matches(['\n', '\r']))
}

/// Reads up to `max` bytes, then drains the rest; `true` if there was more.
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>, max: usize) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let Some(mut r) = r else {
        return (buf, false);
    };
    let mut limited = (&mut r).take(max as u64 + 1);
    let _ = limited.read_to_end(&mut buf).await;
    if buf.len() > max {
        buf.truncate(max);
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
        return (buf, true);
    }
    (buf, false)
}

/// Reads everything, keeping the last `keep` bytes (prefixed with `…` when cut).
async fn read_tail<R: AsyncRead + Unpin>(r: Option<R>, keep: usize) -> Vec<u8> {
    let mut tail: Vec<u8> = Vec::new();
    let Some(mut r) = r else {
        return tail;
    };
    let mut cut = false;
    let mut chunk = vec![0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > keep {
                    let excess = tail.len() - keep;
                    tail.drain(..excess);
                    cut = true;
                }
            }
        }
    }
    if cut {
        // Skip a partial UTF-8 sequence at the start.
        while tail.first().is_some_and(|b| b & 0xC0 == 0x80) {
            tail.remove(0);
        }
        let mut with_mark = "…".as_bytes().to_vec();
        with_mark.extend_from_slice(&tail);
        return with_mark;
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(payload: serde_json::Value, timeout_ms: u64) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": "0190b6e4-0000-7000-8000-000000000001",
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002", "parent_task_id": null,
            "type": "echo", "payload": payload, "priority": 5, "required_capabilities": [],
            "depends_on": [], "affinity_key": null, "idempotency_key": null, "attempts": 2,
            "max_attempts": 3, "backoff": {"initial_ms": 1000, "max_ms": 2000},
            "timeout_ms": timeout_ms, "deadline": null, "last_error": null, "progress": null,
            "created_at": "2020-01-01T00:00:00.000Z", "updated_at": "2020-01-01T00:00:00.000Z",
            "status": "running", "agent_id": "0190b6e4-0000-7000-8000-00000000000a",
            "started_at": "2020-01-01T00:00:00.000Z", "timeout_at": "2020-01-01T00:00:30.000Z"
        }))
        .unwrap()
    }

    fn sh(script: &str) -> CommandHandler {
        CommandHandler {
            program: resolve_program("sh").unwrap(),
            args: vec!["-c".into(), script.into()],
        }
    }

    #[test]
    fn a_managed_agent_reads_its_identity_from_the_environment() {
        let vars = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |name: &str| map.get(name).cloned()
        };
        let id = "0190b6e4-0000-7000-8000-00000000000a";
        let env = AgentFromEnv::read(vars(&[
            ("FLOTILLA_URL", "http://127.0.0.1:7171"),
            ("FLOTILLA_AGENT_ID", id),
            ("FLOTILLA_TOKEN", "tok"),
        ]))
        .unwrap();
        assert_eq!(env.agent_id.to_string(), id);
        assert_eq!(env.token, "tok");
        let err = AgentFromEnv::read(vars(&[
            ("FLOTILLA_URL", "http://x"),
            ("FLOTILLA_TOKEN", " "),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("needs FLOTILLA_AGENT_ID, FLOTILLA_TOKEN in the environment"),
            "{err}"
        );
        let err = AgentFromEnv::read(vars(&[
            ("FLOTILLA_URL", "http://x"),
            ("FLOTILLA_AGENT_ID", "echo-1"),
            ("FLOTILLA_TOKEN", "t"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not an agent id"), "{err}");
    }

    #[test]
    fn stdout_becomes_json_or_a_string() {
        assert_eq!(
            stdout_to_result(b"{\"a\": 1}\n").to_value(),
            serde_json::json!({"a": 1})
        );
        assert_eq!(stdout_to_result(b"42\n").to_value(), serde_json::json!(42));
        assert_eq!(
            stdout_to_result(b"hello world\n").to_value(),
            serde_json::json!("hello world")
        );
        assert_eq!(
            stdout_to_result(b"  two\nlines\r\n").to_value(),
            serde_json::json!("  two\nlines")
        );
        assert_eq!(stdout_to_result(b"").to_value(), serde_json::Value::Null);
        assert_eq!(stdout_to_result(b"\n").to_value(), serde_json::Value::Null);
    }

    #[test]
    fn resolves_programs_like_the_shell() {
        assert!(resolve_program("sh").unwrap().is_absolute());
        let err = resolve_program("no-such-program-flotilla")
            .unwrap_err()
            .to_string();
        assert!(err.contains("command not found"), "{err}");
        assert!(resolve_program("/nonexistent/bin/x").is_err());
    }

    #[tokio::test]
    async fn cat_echoes_the_payload_as_the_result() {
        let h = CommandHandler {
            program: resolve_program("cat").unwrap(),
            args: vec![],
        };
        let out = h
            .run(&task(serde_json::json!({"x": [1, 2]}), 10_000))
            .await
            .unwrap();
        assert_eq!(out.to_value(), serde_json::json!({"x": [1, 2]}));
    }

    #[tokio::test]
    async fn the_environment_describes_the_task() {
        let h = sh(
            "printf '%s|%s|%s|%s' \"$FLOTILLA_TASK_ID\" \"$FLOTILLA_TASK_TYPE\" \"$FLOTILLA_TASK_ATTEMPT\" \"$FLOTILLA_TASK_PAYLOAD\"",
        );
        let out = h
            .run(&task(serde_json::json!({"k": "v"}), 10_000))
            .await
            .unwrap();
        assert_eq!(
            out.to_value(),
            serde_json::json!("0190b6e4-0000-7000-8000-000000000001|echo|2|{\"k\":\"v\"}")
        );
    }

    #[tokio::test]
    async fn a_large_payload_is_left_out_of_the_environment() {
        let big = "x".repeat(MAX_ENV_PAYLOAD + 1);
        let h = sh("cat >/dev/null; printf '%s' \"${FLOTILLA_TASK_PAYLOAD-unset}\"");
        let out = h.run(&task(serde_json::json!(big), 10_000)).await.unwrap();
        assert_eq!(out.to_value(), serde_json::json!("unset"));
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_with_the_end_of_stderr() {
        let h = sh("echo starting >&2; echo 'it broke' >&2; exit 3");
        let err = h
            .run(&task(serde_json::json!(null), 10_000))
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert!(
            err.message.contains("exited with code 3"),
            "{}",
            err.message
        );
        assert!(
            err.message.ends_with("starting\nit broke"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn only_the_tail_of_a_long_stderr_is_kept() {
        let h = sh("i=0; while [ $i -lt 2000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 1");
        let err = h
            .run(&task(serde_json::json!(null), 10_000))
            .await
            .unwrap_err();
        assert!(err.message.contains("line 1999"), "{}", err.message);
        assert!(!err.message.contains("line 10\n"), "{}", err.message);
        assert!(
            err.message.len() < STDERR_TAIL + 200,
            "{}",
            err.message.len()
        );
    }

    #[tokio::test]
    async fn the_timeout_kills_the_command() {
        let h = sh("sleep 30");
        let started = std::time::Instant::now();
        let err = h
            .run(&task(serde_json::json!(null), 300))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            err.message.contains("timed out after 300ms"),
            "{}",
            err.message
        );
        assert!(err.retryable);
    }

    #[tokio::test]
    async fn a_command_that_ignores_stdin_still_completes() {
        let h = sh("echo done");
        let big = "y".repeat(1024 * 1024);
        let out = h.run(&task(serde_json::json!(big), 10_000)).await.unwrap();
        assert_eq!(out.to_value(), serde_json::json!("done"));
    }
}
