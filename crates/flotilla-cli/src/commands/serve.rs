//! `flotilla serve`: runs the coordinator in this process.

use std::process::ExitCode;

use anyhow::{Result, anyhow};

use crate::cli::{GlobalArgs, LogFormat, ServeArgs};
use crate::commands::worker::Shutdown;
use crate::config;

/// Runs the coordinator until Ctrl-C or SIGTERM, saying where it listens and where the admin
/// token is: on stdout for people, or as log lines when the log is JSON (so that everything
/// the process writes is JSON lines).
pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    // From the start: a SIGTERM while the coordinator starts still shuts it down gracefully.
    let signals = Shutdown::listen();
    let data_dir = config::data_dir(global)?;
    let server = flotilla_server::start(args.config(data_dir))
        .await
        .map_err(|e| anyhow!("cannot start the coordinator: {e}"))?;
    if args.log_format == LogFormat::Text {
        // The log says it too; this line is for the person at the terminal.
        for warning in &server.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let token = server.admin_token_path.display().to_string();
    let url = server.url();
    match args.log_format {
        LogFormat::Text => {
            if server.admin_token_created {
                println!("created an admin token in {token}");
            } else {
                println!("admin token: {token}");
            }
            println!("flotilla coordinator listening on {url}");
        }
        LogFormat::Json => {
            tracing::info!(
                admin_token = %token,
                created = server.admin_token_created,
                %url,
                "flotilla coordinator listening"
            );
        }
    }
    signals.wait().await;
    match args.log_format {
        LogFormat::Text => println!("shutting down"),
        LogFormat::Json => tracing::info!("shutting down"),
    }
    server
        .shutdown()
        .await
        .map_err(|e| anyhow!("the coordinator stopped: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
