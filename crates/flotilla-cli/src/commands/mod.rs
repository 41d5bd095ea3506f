//! The commands, one module each; [`run`] dispatches.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub mod agent;
pub mod alerts;
pub mod audit;
pub mod bench;
pub mod bench_api;
pub mod bench_cluster;
pub mod bench_curves;
pub mod bench_history;
pub mod bench_messages;
pub mod checkpoint;
pub mod events;
pub mod fleet;
pub mod host;
pub mod metrics;
pub mod msg;
pub mod names;
pub mod pool;
pub mod resources;
pub mod run;
pub mod serve;
pub mod status;
pub mod swarm;
pub mod tail;
pub mod task;
pub mod top;
pub mod topology;
pub mod worker;

/// Runs the parsed command line; the exit code on success, an error to print otherwise.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let Cli { global, command } = cli;
    match command {
        Command::Serve(args) => serve::run(&global, args).await,
        Command::Up(args) => fleet::up(&global, args).await,
        Command::Apply(args) => fleet::apply(&global, args).await,
        Command::Pool(cmd) => pool::run(&global, cmd).await,
        Command::Swarm(cmd) => swarm::run(&global, cmd).await,
        Command::Agent(cmd) => agent::run(&global, cmd).await,
        Command::Task(cmd) => task::run(&global, cmd).await,
        Command::Run(args) => run::run(&global, args).await,
        Command::Worker(args) => worker::run(&global, args).await,
        Command::Checkpoint(cmd) => checkpoint::run(&global, cmd).await,
        Command::Msg(cmd) => msg::run(&global, cmd).await,
        Command::Alerts(args) => alerts::run(&global, args).await,
        Command::Events(args) => events::run(&global, args).await,
        Command::Resources(args) => resources::run(&global, args).await,
        Command::Metrics(args) => metrics::run(&global, args).await,
        Command::Top(args) => top::run(&global, args).await,
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Token(cmd) => audit::token(&global, cmd).await,
        Command::Audit(args) => audit::run(&global, args).await,
        Command::Status(args) => status::run(&global, args).await,
        Command::Host(args) => host::run(&global, args).await,
    }
}
