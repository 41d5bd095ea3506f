//! `flotilla bench history`: a long run of simulated time through the core and the real SQLite
//! store, to show that metrics history stays bounded.
//!
//! A fleet of N agents runs one task per agent per simulated minute and heartbeats every 10 s,
//! for D simulated days; every change (metric rows merged into their 1m/5m/1h/1d buckets,
//! heartbeat samples, retention prunes, tasks and events) is committed to a SQLite file as the
//! coordinator would. After each simulated day the scenario prints the rows in `swarm_metrics`
//! and `agent_heartbeats`, the database's size, the tasks held in memory and this process's
//! resident memory. Retention is shortened (`1m` rows 1 h, `5m` 6 h, `1h` 1 day, `1d` 3 days)
//! so that every period reaches its plateau within the run; the default retention (1 day, 7
//! days, 90 days, 3 years) reaches the same kind of plateau, later and higher: 6,711 rows per
//! series at most.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flotilla_core::fleet::KnownTasks;
use flotilla_core::metrics::MetricsConfig;
use flotilla_core::{
    AgentId, AgentSpec, CompletionReport, Fleet, FleetLimits, Heartbeat, SwarmId, SwarmSpec,
    TaskId, TaskSpec, Timestamp,
};
use flotilla_store::{Batch, SqliteStore, Store, SyncMode};
use serde::Serialize;

/// The figures after one simulated day.
#[derive(Debug, Serialize)]
pub struct HistoryDay {
    /// Simulated days so far.
    pub day: u32,
    /// Rows in `swarm_metrics` by period: 1m, 5m, 1h, 1d.
    pub metric_rows: [u64; 4],
    /// Their keys and buckets, KiB.
    pub metric_kib: f64,
    /// Rows in `agent_heartbeats`.
    pub heartbeat_rows: u64,
    /// Their JSON columns, KiB.
    pub heartbeat_kib: f64,
    /// The whole database with its WAL (tasks and the event log included), MiB.
    pub db_mib: f64,
    /// Tasks the core holds in memory.
    pub tasks_in_memory: usize,
    /// Resident memory of this process, MiB.
    pub rss_mib: f64,
}

/// Results of `history`.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    /// Agents.
    pub agents: usize,
    /// Simulated days.
    pub days: u32,
    /// Tasks run.
    pub tasks: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One row per simulated day.
    pub per_day: Vec<HistoryDay>,
}

fn file_mib(path: &std::path::Path) -> f64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = path.with_extension("db-wal");
    (size(path) + size(&wal)) as f64 / (1024.0 * 1024.0)
}

/// Runs `agents` agents for `days` simulated days.
pub fn history(agents: usize, days: u32) -> Result<HistoryReport> {
    const HOUR: u64 = 3_600;
    let limits = FleetLimits {
        retain_terminal: 1_000,
        retain_terminal_for: Duration::from_secs(60),
        metrics: MetricsConfig {
            retention: [
                Duration::from_secs(HOUR),
                Duration::from_secs(6 * HOUR),
                Duration::from_secs(24 * HOUR),
                Duration::from_secs(72 * HOUR),
            ],
            ..MetricsConfig::default()
        },
        ..FleetLimits::default()
    };
    let dir = tempfile::tempdir().context("create a temporary directory")?;
    let path = dir.path().join("flotilla.db");
    let mut store = SqliteStore::open(&path, SyncMode::Normal)?;
    let reader = store.reader()?;
    let mut fleet = Fleet::new(limits);
    let mut next = 0u128;
    let mut id = || {
        next += 1;
        uuid::Uuid::from_u128(next)
    };
    // 2027-01-15T08:00:00Z, on a minute boundary.
    let mut now = Timestamp::from_millis(1_800_000_000_000);
    fleet.ensure_default_swarm(SwarmId(id()), now);
    let swarm = SwarmSpec {
        name: "history".to_owned(),
        ..SwarmSpec::default()
    };
    fleet.create_swarm(SwarmId(id()), swarm, now)?;
    let mut agent_ids = Vec::with_capacity(agents);
    for i in 0..agents {
        let a = AgentId(id());
        let spec = AgentSpec {
            name: Some(format!("agent-{i}")),
            ..AgentSpec::default()
        };
        fleet.register_agent("history", a, spec, now)?;
        agent_ids.push(a);
    }
    let mut commit = |fleet: &mut Fleet| -> Result<()> {
        let changes = fleet.take_changes();
        fleet.take_effects();
        if !changes.is_empty() {
            store.commit(&Batch {
                changes,
                tokens: Vec::new(),
                ..Default::default()
            })?;
        }
        Ok(())
    };
    commit(&mut fleet)?;
    let known = KnownTasks::default();
    let started = Instant::now();
    let mut tasks = 0u64;
    let mut per_day = Vec::new();
    for day in 1..=days {
        for minute in 0..24 * 60 {
            // One task per agent at the start of the minute: waits 100 ms, runs 2 s.
            let types = ["build", "test", "review"];
            let specs: Vec<TaskSpec> = (0..agents)
                .map(|i| TaskSpec {
                    task_type: types[(i + minute) % types.len()].to_owned(),
                    ..TaskSpec::default()
                })
                .collect();
            let ids: Vec<TaskId> = (0..agents).map(|_| TaskId(id())).collect();
            fleet.submit_tasks("history", specs, &ids, &known, now)?;
            now = now + Duration::from_millis(100);
            fleet.tick(now);
            let mut held = Vec::with_capacity(agents);
            for &a in &agent_ids {
                if let Some(t) = fleet.take_task(a, now)? {
                    held.push((a, t.id));
                }
            }
            commit(&mut fleet)?;
            now = now + Duration::from_secs(2);
            for (a, t) in held {
                fleet.complete_task(a, t, CompletionReport::default(), now)?;
                tasks += 1;
            }
            commit(&mut fleet)?;
            // Heartbeats every 10 s for the rest of the minute (2.1 s to 52.1 s).
            for beat in 0..6 {
                for &a in &agent_ids {
                    fleet.heartbeat(a, Heartbeat::default(), now)?;
                }
                fleet.tick(now);
                commit(&mut fleet)?;
                if beat < 5 {
                    now = now + Duration::from_secs(10);
                }
            }
            let next_minute = now.as_millis() - now.as_millis() % 60_000 + 60_000;
            now = Timestamp::from_millis(next_minute);
            fleet.tick(now);
            commit(&mut fleet)?;
        }
        let size = reader.history_size()?;
        per_day.push(HistoryDay {
            day,
            metric_rows: size.metric_rows,
            metric_kib: size.metric_bytes as f64 / 1024.0,
            heartbeat_rows: size.heartbeat_rows,
            heartbeat_kib: size.heartbeat_bytes as f64 / 1024.0,
            db_mib: file_mib(&path),
            tasks_in_memory: fleet.tasks_in_memory(),
            rss_mib: super::bench::rss_mib().1,
        });
    }
    Ok(HistoryReport {
        agents,
        days,
        tasks,
        seconds: started.elapsed().as_secs_f64(),
        per_day,
    })
}

/// Prints the report as a table.
pub fn print_history(r: &HistoryReport) {
    println!(
        "history: {} agents, {} simulated days, {} tasks in {:.1} s (retention 1m 1 h, 5m 6 h, 1h 1 d, 1d 3 d)",
        r.agents, r.days, r.tasks, r.seconds
    );
    println!(
        "  {:>4}  {:>26}  {:>10}  {:>10}  {:>9}  {:>8}  {:>9}  {:>8}",
        "day",
        "metric rows 1m/5m/1h/1d",
        "metric KiB",
        "heartbeats",
        "hb KiB",
        "db MiB",
        "in memory",
        "RSS MiB"
    );
    for d in &r.per_day {
        let [m, f, h, dd] = d.metric_rows;
        println!(
            "  {:>4}  {:>26}  {:>10.0}  {:>10}  {:>9.0}  {:>8.1}  {:>9}  {:>8.1}",
            d.day,
            format!("{m}/{f}/{h}/{dd}"),
            d.metric_kib,
            d.heartbeat_rows,
            d.heartbeat_kib,
            d.db_mib,
            d.tasks_in_memory,
            d.rss_mib
        );
    }
    println!(
        "  (db MiB includes every task and event of the run: the task table and event log are \
         not pruned by metrics retention)"
    );
}
