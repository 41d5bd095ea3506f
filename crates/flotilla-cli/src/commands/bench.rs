//! `flotilla bench`: scenarios that print the figures we hold ourselves to.
//!
//! - `assign`: the core alone, for each placement strategy: how fast agents get tasks with
//!   1,000 agents and 100,000 queued tasks (an agent polls and takes its next task), and how
//!   fast a submitted task is placed when 1,000 agents wait for work (the strategy chooses
//!   among them). No I/O; includes taking the changes to persist, as the server does.
//! - `throughput`: the whole product on loopback: a coordinator with its durable SQLite store,
//!   authentication and the event log, N connected agents over HTTP, M no-op tasks submitted
//!   in batches or one by one; tasks per second end to end and latency percentiles.
//!
//! - `messages`: the message bus end to end (see `bench_messages.rs`), over the in-process bus
//!   or Redis (`--bus`).
//! - `history`: simulated days of work through the core and the SQLite store: metrics history
//!   stays bounded (see `bench_history.rs`).
//!
//! Every scenario is bounded in count and time, uses only loopback and a temporary data
//! directory, and stops by itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use flotilla_client::Client;
use flotilla_core::fleet::KnownTasks;
use flotilla_core::{
    AgentId, AgentSpec, CompletionReport, Fleet, FleetLimits, Json, Strategy, SwarmConfig, SwarmId,
    SwarmSpec, TaskId, TaskSpec, Timestamp,
};
use parking_lot::Mutex;
use serde::Serialize;

/// Which scenario to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Core assignment rate and latency.
    Assign,
    /// End-to-end tasks per second through the HTTP API with durable SQLite.
    Throughput,
    /// Managed agents: spawn N exec-mode agents running a trivial command, one task each.
    Spawn,
    /// The message bus: messages per second and delivery latency, send to receive.
    Messages,
    /// Metrics history over simulated days: stored rows, database size and memory stay flat.
    History,
    /// Agent registration over HTTP, one after another: latency percentiles.
    Register,
    /// The fleet status query (`GET /swarms/{swarm}`) with 1,000 and 10,000 agents.
    Status,
    /// Heartbeats per second sustained from concurrent connections.
    Heartbeat,
    /// A managed agent killed while it runs a task: kill → task back in the queue.
    Failover,
    /// A `flotilla serve` process with 1,000 agents and 100,000 queued tasks: its memory.
    Memory,
    /// How cost grows: the core by queue size (1,000 to 1,000,000), end to end by fleet size
    /// (10 to 1,000 agents; `--agents 10000` adds 10,000), drawn in an SVG file (`--out`). Not
    /// part of `all`.
    Curves,
    /// Several coordinators on one PostgreSQL database (`--store postgres://…`, where a
    /// schema of its own is made and dropped): end-to-end tasks per second. Not part of `all`.
    Cluster,
    /// Every scenario.
    All,
}

/// `flotilla bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The scenario.
    #[arg(value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Agents (assign: registered in the core; throughput: connected over HTTP).
    #[arg(long)]
    pub agents: Option<usize>,
    /// Tasks (assign: queued; throughput: submitted).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Tasks per batch submission (throughput); 1 submits one by one.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent submitters when submitting one by one (throughput, --batch 1); concurrent
    /// connections (heartbeat).
    #[arg(long, default_value_t = 32)]
    pub submitters: usize,
    /// Assignments to measure (assign, per strategy).
    #[arg(long, default_value_t = 100_000)]
    pub ops: usize,
    /// Placement strategy (assign); every strategy when left out.
    #[arg(long, value_parser = crate::cli::parse_strategy)]
    pub strategy: Option<Strategy>,
    /// Give up after this many seconds (throughput).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// How the store syncs commits (throughput).
    #[arg(long, value_enum, default_value = "full")]
    pub sync: crate::cli::Sync,
    /// The bus (messages): `memory`, or `redis://host:port`.
    #[arg(long, default_value = "memory", value_name = "URL")]
    pub bus: String,
    /// Simulated days (history).
    #[arg(long, default_value_t = 5)]
    pub days: u32,
    /// Messages in the flood (messages).
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// The PostgreSQL database (cluster): `postgres://user@host:port/db`.
    #[arg(long, env = "FLOTILLA_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Coordinators (cluster).
    #[arg(long, default_value_t = 3)]
    pub coordinators: usize,
    /// Swarms, spread over the coordinators (cluster).
    #[arg(long, default_value_t = 6)]
    pub swarms: usize,
    /// Status queries per fleet size (status).
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    /// How long to heartbeat, in seconds (heartbeat; from --submitters connections).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Crashes to measure (failover).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Where `curves` draws its plot.
    #[arg(long, default_value = "bench-curves.svg", value_name = "FILE")]
    pub out: std::path::PathBuf,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

pub(crate) fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| -> u64 {
        if samples.is_empty() {
            return 0;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_micros() as u64
    };
    Percentiles {
        p50_us: at(0.50),
        p95_us: at(0.95),
        p99_us: at(0.99),
        max_us: at(1.0),
    }
}

/// Results of `assign`, for one strategy.
#[derive(Debug, Serialize)]
pub struct AssignReport {
    /// The placement strategy.
    pub strategy: &'static str,
    /// Agents registered.
    pub agents: usize,
    /// Tasks queued while measuring.
    pub queued: usize,
    /// Tasks submitted per second while filling the queue (batches of 10,000).
    pub submit_per_sec: f64,
    /// Assignments measured.
    pub ops: usize,
    /// Assignments per second (an agent takes its next task, changes taken for the store).
    pub assign_per_sec: f64,
    /// Full cycles per second (take, complete, submit a replacement).
    pub cycle_per_sec: f64,
    /// Latency of one assignment.
    pub assign_latency: Percentiles,
    /// With every agent waiting for work: placements per second (submit one task, the
    /// strategy picks its agent, the agent takes it).
    pub place_per_sec: f64,
    /// Latency of submitting one task and placing it on one of the waiting agents.
    pub place_latency: Percentiles,
}

/// Results of `throughput`.
#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    /// Connected agents.
    pub agents: usize,
    /// Tasks run.
    pub tasks: usize,
    /// Tasks per submission.
    pub batch: usize,
    /// Seconds from the first submission to the last completion.
    pub seconds: f64,
    /// Tasks per second, end to end.
    pub tasks_per_sec: f64,
    /// Submit to an agent receiving the task.
    pub enqueue_to_start: Percentiles,
    /// Submit to the completion being acknowledged.
    pub enqueue_to_done: Percentiles,
    /// Store commits are fsynced (`full`) or not (`normal`).
    pub sync: String,
    /// Light load: one task at a time, agents waiting: submit to an agent receiving it.
    pub light_enqueue_to_start: Percentiles,
    /// Light load: submit to the completion being acknowledged.
    pub light_enqueue_to_done: Percentiles,
    /// Tasks in the light-load phase.
    pub light_tasks: usize,
}

/// Runs `flotilla bench`.
pub async fn run(args: BenchArgs) -> Result<()> {
    let mut out = serde_json::Map::new();
    if matches!(args.scenario, Scenario::Assign | Scenario::All) {
        let agents = args.agents.unwrap_or(1_000);
        let queued = args.tasks.unwrap_or(100_000);
        let ops = args.ops;
        let strategies = match args.strategy {
            Some(s) => vec![s],
            None => Strategy::ALL.to_vec(),
        };
        let reports = tokio::task::spawn_blocking(move || {
            strategies
                .into_iter()
                .map(|s| assign(agents, queued, ops, s))
                .collect::<Result<Vec<_>>>()
        })
        .await??;
        if !args.json {
            print_assign(&reports);
        }
        out.insert("assign".into(), serde_json::to_value(&reports)?);
    }
    if matches!(args.scenario, Scenario::Throughput | Scenario::All) {
        let agents = args.agents.unwrap_or(100);
        let tasks = args.tasks.unwrap_or(50_000);
        let report = throughput(
            args.sync.into(),
            agents,
            tasks,
            args.batch.max(1),
            args.submitters.max(1),
            Duration::from_secs(args.timeout),
        )
        .await?;
        if !args.json {
            print_throughput(&report);
        }
        out.insert("throughput".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.scenario, Scenario::Spawn | Scenario::All) {
        let agents = args.agents.unwrap_or(1_000);
        let report = spawn(agents, Duration::from_secs(args.timeout)).await?;
        if !args.json {
            print_spawn(&report);
        }
        out.insert("spawn".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.scenario, Scenario::Messages | Scenario::All) {
        let report = super::bench_messages::messages(
            &args.bus,
            args.agents.unwrap_or(10),
            args.messages,
            args.submitters.max(1),
            Duration::from_secs(args.timeout),
        )
        .await?;
        if !args.json {
            super::bench_messages::print_messages(&report);
        }
        out.insert("messages".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.scenario, Scenario::History | Scenario::All) {
        let agents = args.agents.unwrap_or(20);
        let days = args.days.max(1);
        let report =
            tokio::task::spawn_blocking(move || super::bench_history::history(agents, days))
                .await??;
        if !args.json {
            super::bench_history::print_history(&report);
        }
        out.insert("history".into(), serde_json::to_value(&report)?);
    }
    let all = args.scenario == Scenario::All;
    let timeout = Duration::from_secs(args.timeout);
    if args.scenario == Scenario::Register || all {
        let report = super::bench_api::register(args.agents.unwrap_or(1_000)).await?;
        if !args.json {
            super::bench_api::print_register(&report);
        }
        out.insert("register".into(), serde_json::to_value(&report)?);
    }
    if args.scenario == Scenario::Status || all {
        let sizes = match args.agents {
            Some(n) => vec![n],
            None => vec![1_000, 10_000],
        };
        let reports = super::bench_api::status(&sizes, args.queries.max(1)).await?;
        if !args.json {
            super::bench_api::print_status(&reports);
        }
        out.insert("status".into(), serde_json::to_value(&reports)?);
    }
    if args.scenario == Scenario::Heartbeat || all {
        let report = super::bench_api::heartbeat(
            args.agents.unwrap_or(1_000),
            args.submitters.max(1),
            Duration::from_secs(args.seconds.max(1)),
        )
        .await?;
        if !args.json {
            super::bench_api::print_heartbeat(&report);
        }
        out.insert("heartbeat".into(), serde_json::to_value(&report)?);
    }
    if args.scenario == Scenario::Failover || all {
        let report = super::bench_api::failover(args.rounds.max(1), timeout).await?;
        if !args.json {
            super::bench_api::print_failover(&report);
        }
        out.insert("failover".into(), serde_json::to_value(&report)?);
    }
    if args.scenario == Scenario::Memory || all {
        let report = super::bench_api::memory(
            args.agents.unwrap_or(1_000),
            args.tasks.unwrap_or(100_000),
            timeout,
        )
        .await?;
        if !args.json {
            super::bench_api::print_memory(&report);
        }
        out.insert("memory".into(), serde_json::to_value(&report)?);
    }
    if args.scenario == Scenario::Curves {
        let report = super::bench_curves::curves(
            args.agents.unwrap_or(1_000),
            args.tasks.unwrap_or(20_000),
            timeout,
            &args.out,
        )
        .await?;
        if !args.json {
            super::bench_curves::print_curves(&report);
        }
        out.insert("curves".into(), serde_json::to_value(&report)?);
    }
    if args.scenario == Scenario::Cluster {
        let store = args.store.as_deref().unwrap_or_default();
        let report = super::bench_cluster::cluster(
            store,
            args.coordinators,
            args.swarms,
            args.agents.unwrap_or(10),
            args.tasks.unwrap_or(30_000),
            args.batch.max(1),
            Duration::from_secs(args.timeout),
        )
        .await?;
        if !args.json {
            super::bench_cluster::print_cluster(&report);
        }
        out.insert("cluster".into(), serde_json::to_value(&report)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Results of `spawn`.
#[derive(Debug, Serialize)]
pub struct SpawnReport {
    /// Exec-mode agents spawned.
    pub agents: usize,
    /// From applying the pool to every agent idle.
    pub spawn_seconds: f64,
    /// From submitting one task per agent to the last completed (one `true` process each).
    pub tasks_seconds: f64,
    /// Both.
    pub total_seconds: f64,
    /// Peak resident memory of this process (coordinator, supervisor and the benchmark's own
    /// client), in MiB.
    pub peak_rss_mib: f64,
    /// Resident memory before the coordinator started, in MiB.
    pub base_rss_mib: f64,
}

/// Peak and current resident memory of this process, in MiB, from /proc/self/status.
pub(crate) fn rss_mib() -> (f64, f64) {
    rss_mib_of("self")
}

/// Peak and current resident memory of process `pid` (a number, or `self`), in MiB.
pub(crate) fn rss_mib_of(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Spawns `agents` exec-mode managed agents running `true`, and runs one task on each.
pub async fn spawn(agents: usize, timeout: Duration) -> Result<SpawnReport> {
    let base_rss_mib = rss_mib().1;
    let dir = tempfile::tempdir().context("create a temporary data directory")?;
    let mut config = flotilla_server::ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    let server = flotilla_server::start(config).await?;
    let admin = Client::new(&server.url(), server.admin_token.clone())?;
    let pool: flotilla_core::PoolSpec = serde_json::from_value(serde_json::json!({
        "name": "bench",
        "min_agents": agents,
        "max_agents": agents,
        "capabilities": ["bench"],
        "agent": {"command": "true", "mode": "exec", "runtime": "process"}
    }))?;
    let t0 = Instant::now();
    admin.put_pool("default", &pool).await?;
    loop {
        let idle = admin
            .list_agents(
                "default",
                Some(flotilla_core::AgentStatus::Idle),
                Some("bench"),
            )
            .await?
            .len();
        if idle >= agents {
            break;
        }
        if t0.elapsed() > timeout {
            bail!("only {idle} of {agents} agents were idle within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spawn_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let specs: Vec<TaskSpec> = (0..agents)
        .map(|_| TaskSpec {
            required_capabilities: vec!["bench".to_owned()],
            ..TaskSpec::default()
        })
        .collect();
    let mut pending: Vec<TaskId> = Vec::with_capacity(agents);
    for chunk in specs.chunks(1000) {
        pending.extend(
            admin
                .submit_tasks("default", chunk)
                .await?
                .into_iter()
                .map(|t| t.id),
        );
    }
    while !pending.is_empty() {
        let mut still = Vec::new();
        for chunk in pending.chunks(5000) {
            let found = admin.lookup_tasks(chunk).await?;
            for t in found.items {
                match t.status() {
                    flotilla_core::TaskStatus::Completed => {}
                    s if s.is_terminal() => bail!("task {} ended {s}: {:?}", t.id, t.state),
                    _ => still.push(t.id),
                }
            }
        }
        pending = still;
        if t0.elapsed() > timeout {
            bail!("{} tasks unfinished within {timeout:?}", pending.len());
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let tasks_seconds = t1.elapsed().as_secs_f64();
    let peak_rss_mib = rss_mib().0;
    server.shutdown().await?;
    Ok(SpawnReport {
        agents,
        spawn_seconds,
        tasks_seconds,
        total_seconds: spawn_seconds + tasks_seconds,
        peak_rss_mib,
        base_rss_mib,
    })
}

fn print_spawn(r: &SpawnReport) {
    println!(
        "spawn ({} exec-mode managed agents running `true`, one task each)",
        r.agents
    );
    println!(
        "  spawn until all idle           {:>8.2} s",
        r.spawn_seconds
    );
    println!(
        "  one task on each               {:>8.2} s",
        r.tasks_seconds
    );
    println!(
        "  total                          {:>8.2} s",
        r.total_seconds
    );
    println!(
        "  peak memory (whole process)    {:>8.1} MiB (before start: {:.1} MiB)",
        r.peak_rss_mib, r.base_rss_mib
    );
}

const CAPABILITIES: [&str; 4] = ["python", "rust", "browser", "gpu"];

/// A deterministic stream of ids (no randomness needed to measure).
struct Ids(u128);

impl Ids {
    fn next(&mut self) -> uuid::Uuid {
        self.0 += 1;
        uuid::Uuid::from_u128(self.0)
    }
}

fn spec(i: usize) -> TaskSpec {
    TaskSpec {
        priority: (i % 10) as u8 + 1,
        // One task in four needs a capability.
        required_capabilities: if i.is_multiple_of(4) {
            vec![CAPABILITIES[i / 4 % 4].to_owned()]
        } else {
            Vec::new()
        },
        payload: Json::null(),
        ..TaskSpec::default()
    }
}

/// The core alone: `agents` agents, `queued` tasks kept queued, `ops` assignments measured;
/// then `ops / 10` placements with every agent waiting.
pub fn assign(
    agents: usize,
    queued: usize,
    ops: usize,
    strategy: Strategy,
) -> Result<AssignReport> {
    let limits = FleetLimits {
        retain_terminal: 1_000,
        retain_terminal_for: Duration::ZERO,
        ..FleetLimits::default()
    };
    let mut fleet = Fleet::new(limits);
    let mut ids = Ids(0);
    let mut now = Timestamp::from_millis(1_800_000_000_000);
    fleet.ensure_default_swarm(SwarmId(ids.next()), now);
    let config = SwarmConfig {
        strategy,
        ..SwarmConfig::default()
    };
    let swarm = SwarmSpec {
        name: "bench".to_owned(),
        config,
        ..SwarmSpec::default()
    };
    fleet.create_swarm(SwarmId(ids.next()), swarm, now)?;
    let mut agent_ids = Vec::with_capacity(agents);
    for i in 0..agents {
        let id = AgentId(ids.next());
        let capabilities = vec![
            CAPABILITIES[i % 4].to_owned(),
            CAPABILITIES[(i + 1) % 4].to_owned(),
        ];
        let spec = AgentSpec {
            capabilities,
            ..AgentSpec::default()
        };
        fleet.register_agent("bench", id, spec, now)?;
        agent_ids.push(id);
    }
    fleet.take_changes();
    let known = KnownTasks::default();
    let started = Instant::now();
    let mut submitted = 0;
    while submitted < queued {
        let n = (queued - submitted).min(10_000);
        let specs: Vec<TaskSpec> = (submitted..submitted + n).map(spec).collect();
        let task_ids: Vec<TaskId> = (0..n).map(|_| TaskId(ids.next())).collect();
        fleet.submit_tasks("bench", specs, &task_ids, &known, now)?;
        fleet.take_changes();
        submitted += n;
    }
    let submit_secs = started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(ops);
    let mut assign_time = Duration::ZERO;
    let cycle_start = Instant::now();
    let mut i = 0;
    let mut done = 0;
    while done < ops {
        let agent = agent_ids[i % agents];
        i += 1;
        let t0 = Instant::now();
        let task = fleet.take_task(agent, now)?;
        let changes = fleet.take_changes();
        let dt = t0.elapsed();
        drop(changes);
        let Some(task) = task else {
            fleet.stop_polling(agent);
            continue;
        };
        assign_time += dt;
        latencies.push(dt);
        done += 1;
        fleet.complete_task(agent, task.id, CompletionReport::default(), now)?;
        let replacement = TaskId(ids.next());
        fleet.submit_tasks("bench", vec![spec(submitted)], &[replacement], &known, now)?;
        submitted += 1;
        fleet.take_changes();
        fleet.take_effects();
        if done.is_multiple_of(1_000) {
            now = now + Duration::from_millis(10);
            fleet.tick(now);
        }
    }
    let cycle_secs = cycle_start.elapsed().as_secs_f64();

    // Drain the queue, then every agent waits: each submitted task is placed by the strategy.
    loop {
        let mut took = 0;
        for &agent in &agent_ids {
            while let Some(task) = fleet.take_task(agent, now)? {
                fleet.complete_task(agent, task.id, CompletionReport::default(), now)?;
                took += 1;
            }
        }
        fleet.take_changes();
        fleet.take_effects();
        if took == 0 {
            break;
        }
    }
    let places = (ops / 10).max(1);
    let mut place_latencies = Vec::with_capacity(places);
    let mut place_time = Duration::ZERO;
    for k in 0..places {
        let t0 = Instant::now();
        let mut s = spec(k);
        s.required_capabilities.clear();
        fleet.submit_tasks("bench", vec![s], &[TaskId(ids.next())], &known, now)?;
        fleet.take_changes();
        let dt = t0.elapsed();
        place_time += dt;
        place_latencies.push(dt);
        for e in fleet.take_effects() {
            if let flotilla_core::Effect::WakeAgent(agent) = e
                && let Some(task) = fleet.take_task(agent, now)?
            {
                fleet.complete_task(agent, task.id, CompletionReport::default(), now)?;
            }
        }
        fleet.take_changes();
        fleet.take_effects();
        if k.is_multiple_of(1_000) {
            now = now + Duration::from_millis(10);
            fleet.tick(now);
            fleet.take_changes();
            fleet.take_effects();
        }
    }
    Ok(AssignReport {
        strategy: strategy.as_str(),
        agents,
        queued,
        submit_per_sec: queued as f64 / submit_secs,
        ops,
        assign_per_sec: ops as f64 / assign_time.as_secs_f64(),
        cycle_per_sec: ops as f64 / cycle_secs,
        assign_latency: percentiles(latencies),
        place_per_sec: places as f64 / place_time.as_secs_f64(),
        place_latency: percentiles(place_latencies),
    })
}

fn print_assign(reports: &[AssignReport]) {
    let Some(first) = reports.first() else {
        return;
    };
    println!(
        "assign (core only: {} agents, {} tasks queued; submit {:.0} tasks/s in batches of 10,000)",
        first.agents, first.queued, first.submit_per_sec
    );
    println!(
        "  {:<17} {:>12} {:>9} {:>9} {:>12} {:>12} {:>9} {:>9}",
        "strategy", "assign/s", "p50 µs", "p99 µs", "cycles/s", "place/s", "p50 µs", "p99 µs"
    );
    for r in reports {
        println!(
            "  {:<17} {:>12.0} {:>9} {:>9} {:>12.0} {:>12.0} {:>9} {:>9}",
            r.strategy,
            r.assign_per_sec,
            r.assign_latency.p50_us,
            r.assign_latency.p99_us,
            r.cycle_per_sec,
            r.place_per_sec,
            r.place_latency.p50_us,
            r.place_latency.p99_us,
        );
    }
    println!(
        "  (assign: an agent polls with the queue full; place: one task submitted while every agent waits)"
    );
}

fn print_throughput(r: &ThroughputReport) {
    let how = if r.batch == 1 {
        "one by one".to_owned()
    } else {
        format!("in batches of {}", r.batch)
    };
    println!(
        "throughput (HTTP on loopback, durable SQLite sync={}, {} agents, {} tasks submitted {how})",
        r.sync, r.agents, r.tasks
    );
    println!(
        "  end to end                   {:>12.0} tasks/s ({:.0}/min) in {:.2} s",
        r.tasks_per_sec,
        r.tasks_per_sec * 60.0,
        r.seconds
    );
    for (name, p) in [
        ("enqueue -> start", &r.enqueue_to_start),
        ("enqueue -> done", &r.enqueue_to_done),
        ("light load: enqueue -> start", &r.light_enqueue_to_start),
        ("light load: enqueue -> done", &r.light_enqueue_to_done),
    ] {
        println!(
            "  {name:<30} p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            p.p50_us as f64 / 1e3,
            p.p95_us as f64 / 1e3,
            p.p99_us as f64 / 1e3,
            p.max_us as f64 / 1e3
        );
    }
}

/// The whole product on loopback.
pub async fn throughput(
    sync: flotilla_store::SyncMode,
    agents: usize,
    tasks: usize,
    batch: usize,
    submitters: usize,
    timeout: Duration,
) -> Result<ThroughputReport> {
    let dir = tempfile::tempdir().context("create a temporary data directory")?;
    let mut config = flotilla_server::ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.sync = sync;
    let sync = format!("{sync:?}").to_lowercase();
    let server = flotilla_server::start(config).await?;
    let admin = Client::new(&server.url(), server.admin_token.clone())?;
    let submitted_at: Arc<Mutex<HashMap<TaskId, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(tasks)));
    let started_after: Arc<Mutex<Vec<(TaskId, Instant)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(tasks)));
    let done_after: Arc<Mutex<Vec<(TaskId, Instant)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(tasks)));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(agents);
    for i in 0..agents {
        let spec = AgentSpec {
            name: Some(format!("bench-{i}")),
            ..AgentSpec::default()
        };
        let reg = admin.register_agent("default", &spec).await?;
        let client = admin.with_token(reg.token);
        let (done, stop, started_after, done_after, finished) = (
            done.clone(),
            stop.clone(),
            started_after.clone(),
            done_after.clone(),
            finished.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.next_task(reg.agent_id, Duration::from_secs(1)).await {
                    Ok(Some(task)) => {
                        started_after.lock().push((task.id, Instant::now()));
                        if client
                            .complete_task(task.id, Json::null(), Some(task.attempts))
                            .await
                            .is_ok()
                        {
                            done_after.lock().push((task.id, Instant::now()));
                            done.fetch_add(1, Ordering::Relaxed);
                            finished.notify_one();
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("bench agent: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    // Light load first: one task at a time, every agent waiting for work.
    let light_tasks = 500.min(tasks);
    let mut light_start = Vec::with_capacity(light_tasks);
    let mut light_done = Vec::with_capacity(light_tasks);
    for _ in 0..light_tasks {
        let before = done.load(Ordering::Relaxed);
        let at = Instant::now();
        let task = admin.submit_task("default", &TaskSpec::default()).await?;
        while done.load(Ordering::Relaxed) == before {
            finished.notified().await;
        }
        let started = started_after
            .lock()
            .iter()
            .find(|(id, _)| *id == task.id)
            .map(|(_, i)| *i);
        let completed = done_after
            .lock()
            .iter()
            .find(|(id, _)| *id == task.id)
            .map(|(_, i)| *i);
        light_start.extend(started.map(|i| i.saturating_duration_since(at)));
        light_done.extend(completed.map(|i| i.saturating_duration_since(at)));
        started_after.lock().clear();
        done_after.lock().clear();
    }
    done.store(0, Ordering::Relaxed);
    let specs: Vec<TaskSpec> = (0..tasks)
        .map(|i| TaskSpec {
            payload: Json::from_value(&serde_json::json!({ "n": i })),
            priority: (i % 10) as u8 + 1,
            ..TaskSpec::default()
        })
        .collect();
    let t0 = Instant::now();
    if batch > 1 {
        for chunk in specs.chunks(batch) {
            let at = Instant::now();
            let created = admin.submit_tasks("default", chunk).await?;
            let mut map = submitted_at.lock();
            for t in created {
                map.insert(t.id, at);
            }
        }
    } else {
        let queue = Arc::new(Mutex::new(specs));
        let mut handles = Vec::new();
        for _ in 0..submitters {
            let (queue, admin, submitted_at) = (queue.clone(), admin.clone(), submitted_at.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    let Some(spec) = queue.lock().pop() else {
                        break;
                    };
                    let at = Instant::now();
                    let task = admin.submit_task("default", &spec).await?;
                    submitted_at.lock().insert(task.id, at);
                }
                Ok::<_, flotilla_client::ClientError>(())
            }));
        }
        for h in handles {
            h.await??;
        }
    }
    while done.load(Ordering::Relaxed) < tasks {
        if t0.elapsed() > timeout {
            stop.store(true, Ordering::Relaxed);
            bail!(
                "only {} of {tasks} tasks finished within {timeout:?}",
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
    server.shutdown().await?;
    let submitted_at = submitted_at.lock();
    let since = |list: &Mutex<Vec<(TaskId, Instant)>>| -> Vec<Duration> {
        list.lock()
            .iter()
            .filter_map(|(id, at)| {
                submitted_at
                    .get(id)
                    .map(|s| at.saturating_duration_since(*s))
            })
            .collect()
    };
    Ok(ThroughputReport {
        agents,
        tasks,
        batch,
        seconds,
        tasks_per_sec: tasks as f64 / seconds,
        enqueue_to_start: percentiles(since(&started_after)),
        enqueue_to_done: percentiles(since(&done_after)),
        sync,
        light_enqueue_to_start: percentiles(light_start),
        light_enqueue_to_done: percentiles(light_done),
        light_tasks,
    })
}
