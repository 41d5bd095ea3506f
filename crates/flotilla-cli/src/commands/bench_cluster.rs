//! `flotilla bench cluster`: end-to-end throughput of several coordinators on one PostgreSQL
//! database, each swarm's agents and submitter talking to the coordinator that holds it.
//!
//! The coordinators run in this process (as `flotilla serve` would, with `--store` naming a
//! schema of their own, made for the run and dropped after it), on loopback. The load is
//! bounded: a fixed number of no-op tasks, and a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_client::Client;
use flotilla_core::{AgentSpec, Json, SwarmSpec, TaskSpec};
use serde::Serialize;

/// Results of `cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// Coordinators sharing the database.
    pub coordinators: usize,
    /// Swarms, spread over them.
    pub swarms: usize,
    /// Connected agents per swarm.
    pub agents_per_swarm: usize,
    /// Tasks submitted (and completed).
    pub tasks: usize,
    /// Tasks per batch submission.
    pub batch: usize,
    /// From the first submission to the last completion.
    pub seconds: f64,
    /// Tasks per second, end to end.
    pub tasks_per_sec: f64,
    /// Swarms each coordinator held during the run.
    pub swarms_per_coordinator: Vec<usize>,
}

/// A schema of its own in the database at `base`, dropped when this is dropped.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    fn create(base: &str) -> Result<Schema> {
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        let mut client = postgres::Client::connect(base, postgres::NoTls).with_context(|| {
            format!(
                "cannot connect to {}",
                flotilla_store::postgres::redact(base)
            )
        })?;
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .context("cannot create the benchmark's schema")?;
        Ok(Schema {
            base: base.to_owned(),
            name,
        })
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // The synchronous client may not run on an async thread.
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&base, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA {name} CASCADE"));
            }
        })
        .join();
    }
}

/// Runs the scenario.
pub async fn cluster(
    store: &str,
    coordinators: usize,
    swarms: usize,
    agents_per_swarm: usize,
    tasks: usize,
    batch: usize,
    timeout: Duration,
) -> Result<ClusterReport> {
    if !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
        bail!("bench cluster needs --store postgres://… (a database it may create a schema in)");
    }
    let base = store.to_owned();
    let schema = tokio::task::spawn_blocking(move || Schema::create(&base)).await??;
    let url = schema.url();
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..coordinators.max(1) {
        let dir = tempfile::tempdir().context("create a temporary data directory")?;
        let mut config = flotilla_server::ServerConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse()?;
        config.store = Some(url.clone());
        servers.push(flotilla_server::start(config).await?);
        dirs.push(dir);
    }
    let token = servers[0].admin_token.clone();
    let admin = Client::new(&servers[0].url(), token.clone())?;
    let names: Vec<String> = (0..swarms.max(1)).map(|i| format!("bench-{i}")).collect();
    for name in &names {
        admin
            .create_swarm(&SwarmSpec {
                name: name.clone(),
                ..SwarmSpec::default()
            })
            .await?;
    }
    // Wait until every swarm is held and, with several coordinators, each holds some.
    let started = Instant::now();
    let status = loop {
        let c = admin.cluster().await?;
        let alive = c.nodes.iter().filter(|n| n.alive).count();
        let spread = c.nodes.iter().filter(|n| n.alive).all(|n| n.swarms > 0);
        if alive == servers.len() && spread && c.leases.iter().all(|l| l.valid) {
            break c;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the swarms did not spread over the coordinators within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let owner_url = |swarm: &str| -> String {
        status
            .leases
            .iter()
            .find(|l| l.swarm == swarm)
            .and_then(|l| l.owner.as_deref())
            .and_then(|o| status.nodes.iter().find(|n| n.id == o))
            .map(|n| n.url.clone())
            .unwrap_or_else(|| servers[0].url())
    };
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for name in &names {
        let near = Client::new(&owner_url(name), token.clone())?;
        for i in 0..agents_per_swarm.max(1) {
            let reg = near
                .register_agent(
                    name,
                    &AgentSpec {
                        name: Some(format!("{name}-{i}")),
                        ..AgentSpec::default()
                    },
                )
                .await?;
            let agent = near.with_token(reg.token);
            let (done, stop) = (done.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match agent.next_task(reg.agent_id, Duration::from_secs(1)).await {
                        Ok(Some(task)) => {
                            if agent
                                .complete_task(task.id, Json::null(), Some(task.attempts))
                                .await
                                .is_ok()
                            {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
    }
    let per_swarm = tasks.div_ceil(names.len());
    let total = per_swarm * names.len();
    let t0 = Instant::now();
    let mut submitters = Vec::new();
    for name in &names {
        let near = Client::new(&owner_url(name), token.clone())?;
        let name = name.clone();
        let batch = batch.max(1);
        submitters.push(tokio::spawn(async move {
            let specs: Vec<TaskSpec> = (0..per_swarm).map(|_| TaskSpec::default()).collect();
            for chunk in specs.chunks(batch) {
                near.submit_tasks(&name, chunk).await?;
            }
            Ok::<_, flotilla_client::ClientError>(())
        }));
    }
    for s in submitters {
        s.await??;
    }
    while done.load(Ordering::Relaxed) < total {
        if t0.elapsed() > timeout {
            stop.store(true, Ordering::Relaxed);
            bail!(
                "only {} of {total} tasks finished within {timeout:?}",
                done.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let swarms_per_coordinator = status.nodes.iter().map(|n| n.swarms).collect();
    for s in servers {
        s.shutdown().await?;
    }
    drop(dirs);
    drop(schema);
    Ok(ClusterReport {
        coordinators: coordinators.max(1),
        swarms: names.len(),
        agents_per_swarm: agents_per_swarm.max(1),
        tasks: total,
        batch,
        seconds,
        tasks_per_sec: total as f64 / seconds,
        swarms_per_coordinator,
    })
}

/// Prints a report.
pub fn print_cluster(r: &ClusterReport) {
    println!(
        "cluster (HTTP on loopback, PostgreSQL, {} coordinator(s) holding {:?} of {} swarms, {} agents each, {} tasks in batches of {})",
        r.coordinators, r.swarms_per_coordinator, r.swarms, r.agents_per_swarm, r.tasks, r.batch
    );
    println!(
        "  end to end                   {:>12.0} tasks/s ({:.0}/min) in {:.2} s",
        r.tasks_per_sec,
        r.tasks_per_sec * 60.0,
        r.seconds
    );
}
