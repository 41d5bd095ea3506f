//! The API's own figures, against a real coordinator on loopback with its durable SQLite store:
//!
//! - `register`: agents registering one after another (`POST /swarms/{s}/agents`): latency
//!   percentiles and registrations per second.
//! - `status`: the fleet status query (`GET /swarms/{s}`, counts by status included) with
//!   1,000 and 10,000 registered agents: latency percentiles.
//! - `heartbeat`: agents heartbeating as fast as they can from concurrent connections for a
//!   bounded time: heartbeats per second, latency percentiles.
//! - `failover`: a managed daemon-mode agent killed (SIGKILL of its process group) while it runs
//!   a task: time from the kill until the task is back in the queue, over several rounds.
//! - `memory`: a `flotilla serve` process of its own, 1,000 agents registered and 100,000 tasks
//!   queued: its resident memory before and after.
//!
//! Each is bounded in count and time, uses loopback and a temporary data directory only, and
//! stops by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_client::Client;
use flotilla_core::{AgentSpec, Heartbeat, TaskSpec};
use parking_lot::Mutex;
use serde::Serialize;

use super::bench::{Percentiles, percentiles, rss_mib_of};

/// A coordinator in this process on a free loopback port, and an admin client.
async fn coordinator() -> Result<(flotilla_server::Server, Client, tempfile::TempDir)> {
    let dir = tempfile::tempdir().context("create a temporary data directory")?;
    let mut config = flotilla_server::ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    let server = flotilla_server::start(config).await?;
    let admin = Client::new(&server.url(), server.admin_token.clone())?;
    Ok((server, admin, dir))
}

/// Registers `n` agents (in a swarm made for it), `concurrency` at a time; their ids and
/// tokens, and each registration's latency.
async fn register_many(
    admin: &Client,
    swarm: &str,
    n: usize,
    concurrency: usize,
) -> Result<(Vec<(flotilla_core::AgentId, String)>, Vec<Duration>)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let out = Arc::new(Mutex::new((Vec::with_capacity(n), Vec::with_capacity(n))));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (admin, swarm, next, out) =
            (admin.clone(), swarm.to_owned(), next.clone(), out.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let spec = AgentSpec {
                    name: Some(format!("bench-{i}")),
                    agent_type: "bench".to_owned(),
                    ..AgentSpec::default()
                };
                let t = Instant::now();
                let reg = admin.register_agent(&swarm, &spec).await?;
                let took = t.elapsed();
                let mut o = out.lock();
                o.0.push((reg.agent_id, reg.token));
                o.1.push(took);
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let out = std::mem::take(&mut *out.lock());
    Ok(out)
}

/// A swarm of its own, large enough for `agents`, whose agents' leases outlast the benchmark.
async fn bench_swarm(admin: &Client, name: &str, agents: usize) -> Result<()> {
    let spec: flotilla_core::SwarmSpec = serde_json::from_value(serde_json::json!({
        "name": name,
        "config": {
            "max_agents": agents.max(1),
            "heartbeat_interval_ms": 600_000,
        },
    }))?;
    admin.create_swarm(&spec).await?;
    Ok(())
}

/// Results of `register`.
#[derive(Debug, Serialize)]
pub struct RegisterReport {
    /// Agents registered, one after another.
    pub agents: usize,
    /// Registrations per second.
    pub per_second: f64,
    /// Latency of one registration.
    pub latency: Percentiles,
}

/// Registers `agents` agents one after another.
pub async fn register(agents: usize) -> Result<RegisterReport> {
    let (_server, admin, _dir) = coordinator().await?;
    bench_swarm(&admin, "bench", agents).await?;
    let t = Instant::now();
    let (_, samples) = register_many(&admin, "bench", agents, 1).await?;
    let secs = t.elapsed().as_secs_f64();
    Ok(RegisterReport {
        agents,
        per_second: agents as f64 / secs,
        latency: percentiles(samples),
    })
}

/// Prints `register`.
pub fn print_register(r: &RegisterReport) {
    println!(
        "register: {} agents one after another: {:.0}/s, p50 {} µs, p95 {} µs, p99 {} µs, max {} µs (aim: p99 < 5 ms)",
        r.agents,
        r.per_second,
        r.latency.p50_us,
        r.latency.p95_us,
        r.latency.p99_us,
        r.latency.max_us
    );
}

/// One fleet size of `status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Agents registered.
    pub agents: usize,
    /// Queries made.
    pub queries: usize,
    /// Latency of `GET /swarms/{swarm}`.
    pub latency: Percentiles,
}

/// The fleet status query with 1,000 and 10,000 agents (or `sizes`).
pub async fn status(sizes: &[usize], queries: usize) -> Result<Vec<StatusReport>> {
    let (_server, admin, _dir) = coordinator().await?;
    let mut reports = Vec::new();
    for (i, &agents) in sizes.iter().enumerate() {
        let swarm = format!("status-{i}");
        bench_swarm(&admin, &swarm, agents).await?;
        register_many(&admin, &swarm, agents, 8).await?;
        let mut samples = Vec::with_capacity(queries);
        for _ in 0..queries {
            let t = Instant::now();
            let view = admin.get_swarm(&swarm).await?;
            samples.push(t.elapsed());
            std::hint::black_box(view);
        }
        reports.push(StatusReport {
            agents,
            queries,
            latency: percentiles(samples),
        });
    }
    Ok(reports)
}

/// Prints `status`.
pub fn print_status(reports: &[StatusReport]) {
    for r in reports {
        println!(
            "status: GET /swarms/{{swarm}} with {} agents, {} queries: p50 {} µs, p95 {} µs, p99 {} µs, max {} µs (aim: p99 < 1 ms at 1,000)",
            r.agents,
            r.queries,
            r.latency.p50_us,
            r.latency.p95_us,
            r.latency.p99_us,
            r.latency.max_us
        );
    }
}

/// Results of `heartbeat`.
#[derive(Debug, Serialize)]
pub struct HeartbeatReport {
    /// Agents heartbeating.
    pub agents: usize,
    /// Concurrent connections.
    pub connections: usize,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Heartbeats answered.
    pub heartbeats: usize,
    /// Heartbeats per second.
    pub per_second: f64,
    /// Latency of one heartbeat.
    pub latency: Percentiles,
}

/// `agents` agents heartbeat from `connections` concurrent loops for `duration`.
pub async fn heartbeat(
    agents: usize,
    connections: usize,
    duration: Duration,
) -> Result<HeartbeatReport> {
    let (server, admin, _dir) = coordinator().await?;
    bench_swarm(&admin, "bench", agents).await?;
    let (registered, _) = register_many(&admin, "bench", agents, 8).await?;
    let url = server.url();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut loops = tokio::task::JoinSet::new();
    let per = registered.len().div_ceil(connections.max(1));
    for chunk in registered.chunks(per.max(1)) {
        let clients: Vec<_> = chunk
            .iter()
            .map(|(id, token)| Client::new(&url, token.clone()).map(|c| (*id, c)))
            .collect::<Result<_, _>>()?;
        let (stop, samples) = (stop.clone(), samples.clone());
        loops.spawn(async move {
            let mut mine = Vec::new();
            'run: loop {
                for (id, c) in &clients {
                    if stop.load(Ordering::Relaxed) {
                        break 'run;
                    }
                    let t = Instant::now();
                    c.heartbeat(*id, &Heartbeat::default()).await?;
                    mine.push(t.elapsed());
                }
            }
            samples.lock().extend(mine);
            Ok::<_, anyhow::Error>(())
        });
    }
    let t = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = loops.join_next().await {
        r??;
    }
    let seconds = t.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *samples.lock());
    let heartbeats = samples.len();
    Ok(HeartbeatReport {
        agents,
        connections,
        seconds,
        heartbeats,
        per_second: heartbeats as f64 / seconds,
        latency: percentiles(samples),
    })
}

/// Prints `heartbeat`.
pub fn print_heartbeat(r: &HeartbeatReport) {
    println!(
        "heartbeat: {} agents over {} connections for {:.1} s: {} heartbeats, {:.0}/s, p50 {} µs, p99 {} µs (aim: > 100,000/s)",
        r.agents,
        r.connections,
        r.seconds,
        r.heartbeats,
        r.per_second,
        r.latency.p50_us,
        r.latency.p99_us
    );
}

/// Results of `failover`.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Crashes measured.
    pub rounds: usize,
    /// From SIGKILL of the agent's process group to its task back in the queue.
    pub requeued: Percentiles,
}

/// Kills a managed daemon-mode agent running a task, `rounds` times.
pub async fn failover(rounds: usize, timeout: Duration) -> Result<FailoverReport> {
    let (_server, admin, _dir) = coordinator().await?;
    // Restarts at once, so that the next round does not wait for a backoff.
    let swarm: flotilla_core::SwarmSpec = serde_json::from_value(serde_json::json!({
        "name": "failover",
        "config": { "recovery": { "backoff_initial_ms": 10, "backoff_max_ms": 10, "give_up_after": 1000 } },
    }))?;
    admin.create_swarm(&swarm).await?;
    let exe = std::env::current_exe().context("find the flotilla binary")?;
    let pool: flotilla_core::PoolSpec = serde_json::from_value(serde_json::json!({
        "name": "victim",
        "min_agents": 1,
        "max_agents": 1,
        "agent": {
            "command": exe.display().to_string(),
            "args": ["worker", "--agent-from-env", "--", "sleep", "60"],
            "mode": "daemon",
            "stop_grace_ms": 100,
        },
    }))?;
    admin.put_pool("failover", &pool).await?;
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let task = admin
            .submit_task(
                "failover",
                &TaskSpec {
                    max_attempts: Some(rounds as u32 + 5),
                    ..TaskSpec::default()
                },
            )
            .await?;
        // Wait until the agent runs it, and learn its process group.
        let t0 = Instant::now();
        let pgid = loop {
            let t = admin.get_task(task.id).await?;
            if t.status() == flotilla_core::TaskStatus::Running
                && let Some(agent) = t.state.agent_id()
            {
                let a = admin.get_agent(agent).await?;
                if let Some(pid) = a.managed.as_ref().and_then(|m| m.pid) {
                    break pid;
                }
            }
            if t0.elapsed() > timeout {
                bail!("round {round}: the task did not start within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let killed = Instant::now();
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        if unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) } != 0 {
            bail!("cannot kill process group {pgid}");
        }
        loop {
            let t = admin.get_task(task.id).await?;
            if t.status() != flotilla_core::TaskStatus::Running {
                samples.push(killed.elapsed());
                break;
            }
            if killed.elapsed() > timeout {
                bail!("round {round}: the task was still running {timeout:?} after the kill");
            }
        }
        admin
            .cancel_task(task.id, Some("benchmark round over".to_owned()))
            .await
            .ok();
    }
    Ok(FailoverReport {
        rounds,
        requeued: percentiles(samples),
    })
}

/// Prints `failover`.
pub fn print_failover(r: &FailoverReport) {
    println!(
        "failover: {} crashes of a managed agent running a task: kill → task back in the queue p50 {} µs, p99 {} µs, max {} µs (aim: < 100 ms)",
        r.rounds, r.requeued.p50_us, r.requeued.p99_us, r.requeued.max_us
    );
}

/// Results of `memory`.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    /// Agents registered.
    pub agents: usize,
    /// Tasks queued.
    pub tasks: usize,
    /// The coordinator's resident memory once started, in MiB.
    pub base_rss_mib: f64,
    /// Its resident memory with the agents and the tasks, in MiB.
    pub loaded_rss_mib: f64,
    /// Its peak resident memory, in MiB.
    pub peak_rss_mib: f64,
}

/// A `flotilla serve` of its own: its memory with `agents` agents and `tasks` queued tasks.
pub async fn memory(agents: usize, tasks: usize, timeout: Duration) -> Result<MemoryReport> {
    let dir = tempfile::tempdir().context("create a temporary data directory")?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let exe = std::env::current_exe().context("find the flotilla binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--max-unfinished-tasks", &(tasks + 1000).to_string()])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start flotilla serve")?;
    let pid = child.id();
    let result = async {
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        let admin = loop {
            if let Ok(t) = std::fs::read_to_string(dir.path().join("admin.token"))
                && let Ok(c) = Client::new(&url, t.trim())
                && c.healthz().await.is_ok()
            {
                break c;
            }
            if t0.elapsed() > timeout {
                bail!("the coordinator did not start within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = rss_mib_of(&pid.to_string());
        bench_swarm(&admin, "bench", agents).await?;
        register_many(&admin, "bench", agents, 8).await?;
        // Tasks no agent can take, so that they stay queued.
        let specs: Vec<TaskSpec> = (0..1000)
            .map(|i| TaskSpec {
                task_type: "memory".to_owned(),
                required_capabilities: vec!["nobody-has-this".to_owned()],
                payload: flotilla_core::Json::from(serde_json::json!({ "n": i })),
                ..TaskSpec::default()
            })
            .collect();
        for _ in 0..tasks.div_ceil(1000) {
            admin.submit_tasks("bench", &specs).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = rss_mib_of(&pid.to_string());
        Ok(MemoryReport {
            agents,
            tasks: tasks.div_ceil(1000) * 1000,
            base_rss_mib: base.1,
            loaded_rss_mib: loaded.1,
            peak_rss_mib: loaded.0,
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Prints `memory`.
pub fn print_memory(r: &MemoryReport) {
    println!(
        "memory: flotilla serve with {} agents and {} queued tasks: {:.1} MiB resident (base {:.1} MiB, peak {:.1} MiB) (aim: < 64 MB)",
        r.agents, r.tasks, r.loaded_rss_mib, r.base_rss_mib, r.peak_rss_mib
    );
}
