//! Spawns `true` 1,000 times with `run_once` and prints how long it took: the cost of starting,
//! supervising and reaping one exec-mode task.
//!
//! ```text
//! cargo run --release -p flotilla-runtime --example spawn_bench [COUNT] [CONCURRENCY] [baseline]
//! ```
//!
//! Runs COUNT (default 1000) tasks, CONCURRENCY (default 1) at a time. With `baseline`, runs
//! plain `tokio::process::Command::status()` instead, for comparison.

use std::time::Instant;

use flotilla_runtime::{CommandSpec, ExecRequest, run_once};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let concurrency: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let baseline = args.next().as_deref() == Some("baseline");
    let program = which_true();

    let started = Instant::now();
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    let mut failures = 0;
    while next < count || !running.is_empty() {
        while next < count && running.len() < concurrency {
            running.spawn(run_true(program.clone(), baseline));
            next += 1;
        }
        if let Some(done) = running.join_next().await
            && !done?
        {
            failures += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{count} {}({program}), {concurrency} at a time: {:.2} s, {:.2} ms each, {:.0}/s, {failures} failed",
        if baseline {
            "Command::status"
        } else {
            "run_once"
        },
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / count as f64,
        count as f64 / elapsed.as_secs_f64(),
    );
    Ok(())
}

/// Runs `program` once; whether it succeeded.
async fn run_true(program: String, baseline: bool) -> bool {
    if baseline {
        let status = tokio::process::Command::new(&program).status().await;
        status.is_ok_and(|s| s.success())
    } else {
        let req = ExecRequest::new(CommandSpec::new(program));
        run_once(req)
            .await
            .is_ok_and(|outcome| outcome.exit.success())
    }
}

/// `true` by absolute path, so the figure does not include PATH lookups.
fn which_true() -> String {
    ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("true")
        .to_owned()
}
