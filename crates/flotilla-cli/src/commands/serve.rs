//! `flotilla serve`: runs the coordinator in this process.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use flotilla_server::ServerConfig;

use crate::cli::{GlobalArgs, ServeArgs};
use crate::config;

/// Runs the coordinator until Ctrl-C or SIGTERM.
pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    let data_dir = config::data_dir(global)?;
    let mut server = ServerConfig {
        listen: args.listen,
        sync: args.sync.into(),
        resources: args.resources.settings(),
        ..ServerConfig::new(data_dir)
    };
    args.bus.apply(&mut server);
    flotilla_server::serve(server)
        .await
        .map_err(|e| anyhow!("the coordinator stopped: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
