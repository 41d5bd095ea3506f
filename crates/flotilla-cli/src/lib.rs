//! The `flotilla` binary: the coordinator (`serve`, and `up` with a fleet file), the CLI of its
//! API (`apply`, `swarm`, `pool`, `agent`, `task`, `run`, `msg`), a live view of it (`top`) and
//! an agent host (`worker`).

pub mod cli;
pub mod commands;
pub mod config;
pub mod duration;
pub mod fleet_file;
pub mod output;
pub mod serve_config;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};

/// Parses the command line, runs the command and returns the process's exit code: 0 on
/// success, 1 on an error (printed as one `error: …` line), 2 on a usage error or a timeout.
pub fn main() -> ExitCode {
    let args = match serve_config::apply(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    init_tracing(&cli.command);
    if matches!(cli.command, Command::Serve(_) | Command::Up(_)) {
        export_own_path();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Do not wait for stray background tasks (e.g. a blocked stdin read).
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!(
                "error: {}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: `info` for the long-running commands, `warn` otherwise; `RUST_LOG`
/// overrides. The coordinator's may be JSON lines (`--log-format json`). `flotilla up` in text
/// (the quick start, someone at a terminal) leaves out the access line of every request: with
/// agents heartbeating it would bury everything else.
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Up(args) if matches!(args.serve.log_format, LogFormat::Text) => {
            "info,flotilla::access=off"
        }
        Command::Serve(_) | Command::Up(_) | Command::Worker(_) | Command::Host(_) => "info",
        // Lines on stderr would tear its screen (RUST_LOG with 2>FILE still gets them).
        Command::Top(_) => "off",
        _ => "warn",
    };
    let format = match command {
        Command::Serve(args) => args.log_format,
        Command::Up(args) => args.serve.log_format,
        _ => LogFormat::Text,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        // Fields at the top level, where collectors look; every enclosing span listed, so a
        // request's id is on every line it causes even inside a nested span.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// Sets `FLOTILLA_BIN` to this executable unless it is set, so that the coordinator's managed
/// agents (which inherit its environment in the process runtime) can run this very `flotilla`,
/// e.g. `"${FLOTILLA_BIN:-flotilla}" worker --agent-from-env -- …`, even when it is not on `PATH`.
fn export_own_path() {
    if std::env::var_os("FLOTILLA_BIN").is_some() {
        return;
    }
    if let Ok(exe) = std::env::current_exe() {
        // SAFETY: called from `main` before the async runtime or any other thread starts.
        unsafe { std::env::set_var("FLOTILLA_BIN", exe) };
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
