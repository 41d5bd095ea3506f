//! Metrics of the fleet's work: what happened to tasks and agents, in time buckets.
//!
//! The fleet feeds a [`Recorder`] as it goes: every task state change (a wait ends when a task
//! is placed, an attempt ends, a task finishes), some events (submissions, retries, scaling,
//! agent failures and recoveries), heartbeats, and every few seconds a sample of the gauges (queue
//! depth, agents in service, task slots held). Observations land in the open minute's
//! [`Bucket`] of each series they belong to: the swarm, the agent's pool, the agent and the
//! task type ([`Scope`]).
//!
//! When a minute ends, each series' bucket is handed to the store as four [`MetricRow`]s: the
//! minute itself and its share of the open 5-minute, hour and day buckets. Rows are deltas: the
//! store merges a row into the one already stored under the same key, so downsampling costs one
//! merge per period and minute, memory holds only the open minute, and a restart in the middle
//! of an hour loses nothing but the minute a crash cuts short (a graceful stop flushes it).
//! Retention is per period ([`MetricsConfig`]): the recorder asks the store to drop rows past it
//! ([`Prune`]), so a fleet that runs for years keeps a bounded number of points per series.
//!
//! Durations are kept in [`Sketch`]es: logarithmic bins with a relative accuracy of 2.5%,
//! mergeable by addition (like DDSketch), so a day's p99 comes from the merged minutes, not from
//! an average of percentiles. Cumulative totals for Prometheus ([`Totals`]) live beside them
//! with fixed histogram bounds.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{AgentStatus, ReportedHealth, ResourceUsage};
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::time::Timestamp;

/// The length of an aggregation period.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Period {
    /// One minute.
    #[serde(rename = "1m")]
    Minute,
    /// Five minutes.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// One hour.
    #[serde(rename = "1h")]
    Hour,
    /// One day (UTC).
    #[serde(rename = "1d")]
    Day,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 4] = [
        Period::Minute,
        Period::FiveMinutes,
        Period::Hour,
        Period::Day,
    ];

    /// As the API writes it: `1m`, `5m`, `1h`, `1d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Minute => "1m",
            Period::FiveMinutes => "5m",
            Period::Hour => "1h",
            Period::Day => "1d",
        }
    }

    /// Reads `1m`, `5m`, `1h` or `1d`.
    pub fn parse(text: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Its length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Period::Minute => 60_000,
            Period::FiveMinutes => 300_000,
            Period::Hour => 3_600_000,
            Period::Day => 86_400_000,
        }
    }

    /// The start of the period that holds `t`.
    pub fn start_of(self, t: Timestamp) -> Timestamp {
        let ms = t.as_millis();
        Timestamp::from_millis(ms - ms.rem_euclid(self.millis()))
    }
}

/// What a series aggregates over.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole swarm (key empty).
    Swarm,
    /// One pool (key: the pool's name, which is its agents' type).
    Pool,
    /// One agent (key: its name).
    Agent,
    /// One task type (key: the type).
    TaskType,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [Scope::Swarm, Scope::Pool, Scope::Agent, Scope::TaskType];

    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Swarm => "swarm",
            Scope::Pool => "pool",
            Scope::Agent => "agent",
            Scope::TaskType => "task_type",
        }
    }

    /// Reads a scope as the API writes it.
    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Growth factor of [`Sketch`] bins: a value is placed within 2.5% of its true size.
const GAMMA: f64 = 1.05;

/// A mergeable summary of durations in milliseconds: exact count, sum and maximum, and counts
/// in logarithmic bins from which quantiles are read within 2.5%.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sketch {
    /// Values recorded.
    #[serde(rename = "n", default)]
    pub count: u64,
    /// Their sum, in milliseconds.
    #[serde(rename = "s", default)]
    pub sum_ms: u64,
    /// The largest, in milliseconds.
    #[serde(rename = "m", default)]
    pub max_ms: u64,
    /// Bin index → count. Bin 0 holds values under a millisecond; bin `i ≥ 1` holds values in
    /// `(GAMMA^(i-2), GAMMA^(i-1)]`.
    #[serde(rename = "b", default, with = "bins")]
    bins: BTreeMap<u16, u64>,
}

/// Bins as a list of `[index, count]` pairs (JSON objects cannot have number keys).
mod bins {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &BTreeMap<u16, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(b.iter().map(|(i, c)| (*i, *c)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, u64>, D::Error> {
        let pairs: Vec<(u16, u64)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

impl Sketch {
    fn index(ms: u64) -> u16 {
        if ms == 0 {
            0
        } else {
            // ms ≥ 1: ceil(log_GAMMA(ms)) ≥ 0, shifted by one past the sub-millisecond bin.
            let k = ((ms as f64).ln() / GAMMA.ln()).ceil().max(0.0);
            (k as u16).saturating_add(1)
        }
    }

    /// A value standing for bin `i`: the middle of its range (relative error ≤ 2.5%).
    fn value_of(i: u16) -> f64 {
        if i == 0 {
            0.0
        } else {
            let upper = GAMMA.powi(i as i32 - 1);
            (2.0 * upper / (GAMMA + 1.0)).max(1.0)
        }
    }

    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.max_ms = self.max_ms.max(ms);
        *self.bins.entry(Self::index(ms)).or_default() += 1;
    }

    /// Adds another sketch's values to this one.
    pub fn merge(&mut self, other: &Sketch) {
        self.count += other.count;
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
        for (i, c) in &other.bins {
            *self.bins.entry(*i).or_default() += c;
        }
    }

    /// The `q` quantile (0 to 1) in milliseconds, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // The rank of the value asked for, 1-based: the smallest value whose rank covers q.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in &self.bins {
            seen += c;
            if seen >= rank {
                return Some(Self::value_of(*i).min(self.max_ms as f64));
            }
        }
        Some(self.max_ms as f64)
    }

    /// Count, mean and quantiles; `None` when empty.
    pub fn summary(&self) -> Option<Summary> {
        (self.count > 0).then(|| Summary {
            count: self.count,
            mean: self.sum_ms as f64 / self.count as f64,
            p50: self.quantile(0.50).unwrap_or(0.0),
            p95: self.quantile(0.95).unwrap_or(0.0),
            p99: self.quantile(0.99).unwrap_or(0.0),
            max: self.max_ms as f64,
        })
    }
}

/// Durations of a period, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    /// How many.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The longest.
    pub max: f64,
}

/// What happened to tasks: counts over a period, or since the coordinator started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct TaskCounts {
    /// Tasks submitted.
    pub submitted: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks failed for good.
    pub failed: u64,
    /// Tasks out of attempts.
    pub dead: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Tasks put back in the queue without costing an attempt (their agent was lost).
    pub requeued: u64,
}

impl TaskCounts {
    /// Adds other counts.
    pub fn merge(&mut self, o: &TaskCounts) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        self.failed += o.failed;
        self.dead += o.dead;
        self.cancelled += o.cancelled;
        self.retried += o.retried;
        self.requeued += o.requeued;
    }

    /// Counts a task that ended.
    pub fn finished(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Completed => self.completed += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Dead => self.dead += 1,
            Outcome::Cancelled => self.cancelled += 1,
        }
    }

    /// Tasks that ended, cancelled ones aside.
    fn ended(&self) -> u64 {
        self.completed + self.failed + self.dead
    }
}

/// Everything observed in one series over one period. Merging two buckets gives the bucket of
/// both periods' observations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Bucket {
    /// What happened to tasks.
    #[serde(flatten)]
    pub tasks: TaskCounts,
    /// Queue wait: from entering the ready queue to being placed on an agent.
    pub wait: Sketch,
    /// Completion time: from submission to the end (completed, failed, dead, cancelled).
    pub latency: Sketch,
    /// Run time of attempts: from start to end, whatever the outcome.
    pub run: Sketch,
    /// Gauge samples taken (every `sample_every`, 5 s by default, while the series' swarm exists).
    pub samples: u64,
    /// Sum of sampled queue depths (ready and delayed tasks).
    pub queue_sum: u64,
    /// Largest sampled queue depth.
    pub queue_max: u64,
    /// Sum of sampled agents in service (idle or busy).
    pub agents_sum: u64,
    /// Largest sampled agents in service.
    pub agents_max: u64,
    /// Sum of sampled task slots held (assigned and running tasks).
    pub held_sum: u64,
    /// Sum of sampled task slots of agents in service.
    pub capacity_sum: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Reports of CPU use (heartbeats that carried it, samples of managed agents).
    pub cpu_samples: u64,
    /// Sum of reported CPU percentages.
    pub cpu_sum: f64,
    /// Reports of resident memory.
    pub memory_samples: u64,
    /// Sum of reported resident memory, MiB.
    pub memory_sum: f64,
    /// Pool size changes (by a user or the autoscaler).
    pub scaling_events: u64,
    /// Agents failed (crashed, lost, judged unhealthy).
    pub failures: u64,
    /// Agents back in service after a failure.
    pub recoveries: u64,
    /// Time from failure to recovery, summed over `recoveries`, in milliseconds.
    pub recovery_ms: u64,
}

impl Bucket {
    /// Adds another bucket's observations.
    pub fn merge(&mut self, o: &Bucket) {
        self.tasks.merge(&o.tasks);
        self.wait.merge(&o.wait);
        self.latency.merge(&o.latency);
        self.run.merge(&o.run);
        self.samples += o.samples;
        self.queue_sum += o.queue_sum;
        self.queue_max = self.queue_max.max(o.queue_max);
        self.agents_sum += o.agents_sum;
        self.agents_max = self.agents_max.max(o.agents_max);
        self.held_sum += o.held_sum;
        self.capacity_sum += o.capacity_sum;
        self.heartbeats += o.heartbeats;
        self.cpu_samples += o.cpu_samples;
        self.cpu_sum += o.cpu_sum;
        self.memory_samples += o.memory_samples;
        self.memory_sum += o.memory_sum;
        self.scaling_events += o.scaling_events;
        self.failures += o.failures;
        self.recoveries += o.recoveries;
        self.recovery_ms += o.recovery_ms;
    }

    /// The figures of a period this bucket covers, as the API shows them.
    pub fn point(&self, start: Timestamp, period: Period) -> MetricPoint {
        self.point_until(start, period, Timestamp::from_millis(i64::MAX))
    }

    /// Like [`Bucket::point`] for a period that may still be under way at `now`: rates are
    /// over the part of it that has passed (at least a second), not over all of it.
    pub fn point_until(&self, start: Timestamp, period: Period, now: Timestamp) -> MetricPoint {
        let passed = now
            .as_millis()
            .saturating_sub(start.as_millis())
            .clamp(1_000, period.millis());
        let minutes = passed as f64 / 60_000.0;
        let t = &self.tasks;
        let finished = t.ended();
        let attempts_ended = finished + t.retried;
        let avg = |sum: f64| (self.samples > 0).then(|| sum / self.samples as f64);
        MetricPoint {
            start,
            end: Timestamp::from_millis(start.as_millis() + period.millis()),
            tasks: *t,
            throughput_per_min: t.completed as f64 / minutes,
            error_rate: (finished > 0).then(|| (t.failed + t.dead) as f64 / finished as f64),
            retry_rate: (attempts_ended > 0).then(|| t.retried as f64 / attempts_ended as f64),
            wait_ms: self.wait.summary(),
            latency_ms: self.latency.summary(),
            run_ms: self.run.summary(),
            queue_depth: (self.samples > 0).then(|| Gauge {
                avg: self.queue_sum as f64 / self.samples as f64,
                max: self.queue_max,
            }),
            agents: (self.samples > 0).then(|| Gauge {
                avg: self.agents_sum as f64 / self.samples as f64,
                max: self.agents_max,
            }),
            utilization: (self.capacity_sum > 0)
                .then(|| self.held_sum as f64 / self.capacity_sum as f64),
            busy_slots: avg(self.held_sum as f64),
            heartbeats: self.heartbeats,
            cpu_percent: (self.cpu_samples > 0).then(|| self.cpu_sum / self.cpu_samples as f64),
            memory_mb: (self.memory_samples > 0)
                .then(|| self.memory_sum / self.memory_samples as f64),
            scaling_events: self.scaling_events,
            failures: self.failures,
            recoveries: self.recoveries,
            mttr_ms: (self.recoveries > 0)
                .then(|| self.recovery_ms as f64 / self.recoveries as f64),
        }
    }
}

/// A sampled gauge over a period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gauge {
    /// Mean of the samples.
    pub avg: f64,
    /// Largest sample.
    pub max: u64,
}

/// One period of one series, as `GET /swarms/{swarm}/metrics` returns it. Figures that
/// nothing was observed for are `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricPoint {
    /// Start of the period.
    pub start: Timestamp,
    /// Its end (exclusive).
    pub end: Timestamp,
    /// What happened to tasks.
    #[serde(flatten)]
    pub tasks: TaskCounts,
    /// Completed tasks per minute (of the period, or of the part of it that has passed).
    pub throughput_per_min: f64,
    /// Failed and dead over all finished (cancelled aside).
    pub error_rate: Option<f64>,
    /// Retried attempts over all ended attempts.
    pub retry_rate: Option<f64>,
    /// Queue wait.
    pub wait_ms: Option<Summary>,
    /// Completion time, submission to end.
    pub latency_ms: Option<Summary>,
    /// Attempt run time.
    pub run_ms: Option<Summary>,
    /// Ready and delayed tasks.
    pub queue_depth: Option<Gauge>,
    /// Agents in service.
    pub agents: Option<Gauge>,
    /// Task slots held over slots of agents in service (0 to 1).
    pub utilization: Option<f64>,
    /// Task slots held, on average.
    pub busy_slots: Option<f64>,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Mean reported CPU, percent of one core, over the reports of the period (of one agent in
    /// the agent scope, of all the series' agents otherwise).
    pub cpu_percent: Option<f64>,
    /// Mean reported resident memory, MiB.
    pub memory_mb: Option<f64>,
    /// Pool size changes.
    pub scaling_events: u64,
    /// Agent failures.
    pub failures: u64,
    /// Agent recoveries.
    pub recoveries: u64,
    /// Mean time to recovery.
    pub mttr_ms: Option<f64>,
}

// ----- what the API answers -----

/// One series over a time range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsResponse {
    /// The swarm's id.
    pub swarm: SwarmId,
    /// The period of each point.
    pub period: Period,
    /// What the series aggregates over.
    pub scope: Scope,
    /// The pool, agent or task type; `null` for the swarm.
    pub key: Option<String>,
    /// The range asked for: points start at or after `from` and before `to`.
    pub from: Timestamp,
    /// Its end.
    pub to: Timestamp,
    /// Periods with observations, oldest first (periods with none are left out).
    pub points: Vec<MetricPoint>,
}

/// The series of one scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricKeys {
    /// The scope.
    pub scope: Scope,
    /// Pool names, agent names or task types with figures since `from`, by name.
    pub keys: Vec<String>,
}

/// An agent's heartbeat history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatHistory {
    /// The agent.
    pub agent_id: AgentId,
    /// How far apart stored samples are at least, in milliseconds.
    pub sample_every_ms: u64,
    /// The samples, newest first.
    pub items: Vec<HeartbeatSample>,
}

/// A delta for the store: add `bucket` to the row under this key.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRow {
    /// The swarm.
    pub swarm_id: SwarmId,
    /// What the series aggregates over.
    pub scope: Scope,
    /// Which pool, agent or task type; empty for the swarm.
    pub key: String,
    /// The period.
    pub period: Period,
    /// Its start.
    pub start: Timestamp,
    /// What to add.
    pub bucket: Bucket,
}

/// Drop stored history older than `before`: metric rows of a period, or heartbeat samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prune {
    /// Metric rows of this period starting before the instant.
    Metrics(Period, Timestamp),
    /// Heartbeat samples recorded before the instant.
    Heartbeats(Timestamp),
}

/// An agent's heartbeat as stored in its history (at most one per
/// [`MetricsConfig::heartbeat_sample_every`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatSample {
    /// The agent.
    pub agent_id: AgentId,
    /// Its swarm.
    pub swarm_id: SwarmId,
    /// When the heartbeat arrived.
    pub recorded_at: Timestamp,
    /// The agent's status then.
    pub status: AgentStatus,
    /// Its own word on its health.
    pub reported_health: ReportedHealth,
    /// Its resource usage then.
    pub resource_usage: ResourceUsage,
    /// The tasks it held.
    pub current_tasks: Vec<TaskId>,
    /// Tasks waiting in its local queue.
    pub queue_depth: u32,
}

/// How long history is kept and how often gauges are sampled.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// Gauges (queue depth, agents, slots held) are sampled this often.
    pub sample_every: Duration,
    /// Rows of each period are kept this long: 1m, 5m, 1h, 1d.
    pub retention: [Duration; 4],
    /// An agent's heartbeat is stored in its history at most this often.
    pub heartbeat_sample_every: Duration,
    /// Heartbeat history is kept this long.
    pub heartbeat_retention: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        MetricsConfig {
            sample_every: Duration::from_secs(5),
            retention: [
                Duration::from_secs(DAY),
                Duration::from_secs(7 * DAY),
                Duration::from_secs(90 * DAY),
                Duration::from_secs(3 * 365 * DAY),
            ],
            heartbeat_sample_every: Duration::from_secs(60),
            heartbeat_retention: Duration::from_secs(DAY),
        }
    }
}

impl MetricsConfig {
    /// How long rows of `period` are kept.
    pub fn retention_of(&self, period: Period) -> Duration {
        self.retention[Period::ALL.iter().position(|p| *p == period).unwrap_or(0)]
    }
}

/// Histogram bounds of the Prometheus histograms, in seconds.
pub const PROMETHEUS_BOUNDS: [f64; 17] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

/// A cumulative histogram with [`PROMETHEUS_BOUNDS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Values at or under each bound (not cumulative: the exposition adds them up).
    pub counts: [u64; PROMETHEUS_BOUNDS.len()],
    /// All values.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = PROMETHEUS_BOUNDS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += s;
    }
}

/// Task totals of one swarm, pool and task type since the coordinator started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskTotals {
    /// What happened to them (submitted ones under the pool `""`: not yet run by an agent).
    pub counts: TaskCounts,
    /// Queue waits.
    pub wait: Histogram,
    /// Attempt run times.
    pub run: Histogram,
    /// Completion times.
    pub latency: Histogram,
}

/// Agent and pool totals of one swarm since the coordinator started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SwarmTotals {
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Pool size changes.
    pub scaling_events: u64,
    /// Agent failures.
    pub failures: u64,
    /// Agent recoveries, and how long each took.
    pub recoveries: Histogram,
}

/// Cumulative totals, for Prometheus counters and histograms.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// By swarm, pool (empty for tasks not run by an agent) and task type.
    pub tasks: HashMap<SwarmId, HashMap<String, HashMap<String, TaskTotals>>>,
    /// By swarm.
    pub swarms: HashMap<SwarmId, SwarmTotals>,
}

/// Where an observation belongs.
#[derive(Clone, Copy, Debug)]
pub struct Dims<'a> {
    /// The swarm.
    pub swarm: SwarmId,
    /// The agent involved, with its name and pool (its type).
    pub agent: Option<(AgentId, &'a str, &'a str)>,
    /// The task type involved.
    pub task_type: Option<&'a str>,
}

/// The open minute of one swarm's series.
#[derive(Debug, Default)]
struct Series {
    swarm: Bucket,
    pools: HashMap<String, Bucket>,
    agents: HashMap<AgentId, (String, Bucket)>,
    task_types: HashMap<String, Bucket>,
}

/// One gauge sample of a series: queue depth, agents in service, slots held and slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GaugeSample {
    /// Ready and delayed tasks.
    pub queue: u64,
    /// Agents in service.
    pub agents: u64,
    /// Task slots held.
    pub held: u64,
    /// Task slots of agents in service.
    pub capacity: u64,
}

impl Bucket {
    fn sample(&mut self, g: GaugeSample) {
        self.samples += 1;
        self.queue_sum += g.queue;
        self.queue_max = self.queue_max.max(g.queue);
        self.agents_sum += g.agents;
        self.agents_max = self.agents_max.max(g.agents);
        self.held_sum += g.held;
        self.capacity_sum += g.capacity;
    }
}

/// The fleet's metrics: open minute buckets, cumulative totals, and what is to be stored.
#[derive(Debug)]
pub struct Recorder {
    config: MetricsConfig,
    /// Start of the open minute; `None` before the first observation.
    minute: Option<Timestamp>,
    open: HashMap<SwarmId, Series>,
    totals: Totals,
    /// Agents failed and not yet recovered, since when.
    failed_at: HashMap<AgentId, Timestamp>,
    last_sample: Option<Timestamp>,
    last_prune: Option<Timestamp>,
    last_heartbeat_sample: HashMap<AgentId, Timestamp>,
    rows: Vec<MetricRow>,
    prunes: Vec<Prune>,
    heartbeats: Vec<HeartbeatSample>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new(MetricsConfig::default())
    }
}

impl Recorder {
    /// A recorder with nothing observed.
    pub fn new(config: MetricsConfig) -> Self {
        Recorder {
            config,
            minute: None,
            open: HashMap::new(),
            totals: Totals::default(),
            failed_at: HashMap::new(),
            last_sample: None,
            last_prune: None,
            last_heartbeat_sample: HashMap::new(),
            rows: Vec::new(),
            prunes: Vec::new(),
            heartbeats: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// Cumulative totals since the recorder was made.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Closes the open minute if `now` is past it.
    fn roll(&mut self, now: Timestamp) {
        let minute = Period::Minute.start_of(now);
        match self.minute {
            Some(open) if open >= minute => {}
            Some(_) => {
                self.close();
                self.minute = Some(minute);
            }
            None => self.minute = Some(minute),
        }
    }

    /// Hands the open minute's buckets to the store (as rows of every period) and starts
    /// afresh. Called when the minute ends, and by [`Recorder::flush`].
    fn close(&mut self) {
        let Some(minute) = self.minute else { return };
        for (swarm_id, series) in std::mem::take(&mut self.open) {
            self.push_rows(minute, swarm_id, series);
        }
    }

    /// Turns one swarm's buckets of the minute into rows for the store.
    fn push_rows(&mut self, minute: Timestamp, swarm_id: SwarmId, series: Series) {
        let Series {
            swarm,
            pools,
            agents,
            task_types,
        } = series;
        let mut push = |scope: Scope, key: String, bucket: Bucket| {
            if bucket == Bucket::default() {
                return;
            }
            for period in Period::ALL {
                self.rows.push(MetricRow {
                    swarm_id,
                    scope,
                    key: key.clone(),
                    period,
                    start: period.start_of(minute),
                    bucket: bucket.clone(),
                });
            }
        };
        push(Scope::Swarm, String::new(), swarm);
        for (name, b) in pools {
            push(Scope::Pool, name, b);
        }
        for (_, (name, b)) in agents {
            push(Scope::Agent, name, b);
        }
        for (name, b) in task_types {
            push(Scope::TaskType, name, b);
        }
    }

    /// Closes one swarm's open minute early (before the swarm is handed to another
    /// coordinator): its buckets go to the store with the next rows taken. Observations later
    /// in the same minute are added to the same rows.
    pub fn close_swarm(&mut self, swarm: SwarmId) {
        if let Some(minute) = self.minute
            && let Some(series) = self.open.remove(&swarm)
        {
            self.push_rows(minute, swarm, series);
        }
    }

    /// A swarm was handed to another coordinator: everything of it goes, as if it had never
    /// been observed here — its open buckets, its totals, its rows and heartbeat samples not
    /// yet taken, and what was kept about its agents.
    pub fn release_swarm(&mut self, swarm: SwarmId, agents: &std::collections::HashSet<AgentId>) {
        self.forget_swarm(swarm);
        self.failed_at.retain(|a, _| !agents.contains(a));
        self.last_heartbeat_sample
            .retain(|a, _| !agents.contains(a));
        self.rows.retain(|r| r.swarm_id != swarm);
        self.heartbeats.retain(|h| h.swarm_id != swarm);
    }

    /// Applies `f` to the open bucket of every series `dims` belongs to.
    fn record(&mut self, now: Timestamp, dims: Dims<'_>, f: impl Fn(&mut Bucket)) {
        self.roll(now);
        let series = self.open.entry(dims.swarm).or_default();
        f(&mut series.swarm);
        if let Some((id, name, pool)) = dims.agent {
            f(by_name(&mut series.pools, pool));
            match series.agents.get_mut(&id) {
                Some((_, b)) => f(b),
                None => {
                    let mut b = Bucket::default();
                    f(&mut b);
                    series.agents.insert(id, (name.to_owned(), b));
                }
            }
        }
        if let Some(t) = dims.task_type {
            f(by_name(&mut series.task_types, t));
        }
    }

    fn task_totals(&mut self, dims: Dims<'_>) -> &mut TaskTotals {
        let pool = dims.agent.map_or("", |(_, _, p)| p);
        let task_type = dims.task_type.unwrap_or("");
        // Nested maps looked up by borrowed names: keys are built only for a new series.
        let pools = self.totals.tasks.entry(dims.swarm).or_default();
        by_name(by_name(pools, pool), task_type)
    }

    /// A task was submitted.
    pub fn submitted(&mut self, now: Timestamp, dims: Dims<'_>) {
        self.record(now, dims, |b| b.tasks.submitted += 1);
        self.task_totals(dims).counts.submitted += 1;
    }

    /// A task left the ready queue for an agent after waiting `waited`.
    pub fn waited(&mut self, now: Timestamp, dims: Dims<'_>, waited: Duration) {
        self.record(now, dims, |b| b.wait.record(waited));
        self.task_totals(dims).wait.record(waited);
    }

    /// An attempt ended after running `ran`.
    pub fn ran(&mut self, now: Timestamp, dims: Dims<'_>, ran: Duration) {
        self.record(now, dims, |b| b.run.record(ran));
        self.task_totals(dims).run.record(ran);
    }

    /// A task ended for good, `took` after its submission.
    pub fn finished(&mut self, now: Timestamp, dims: Dims<'_>, outcome: Outcome, took: Duration) {
        self.record(now, dims, |b| {
            b.tasks.finished(outcome);
            b.latency.record(took);
        });
        let t = self.task_totals(dims);
        t.counts.finished(outcome);
        t.latency.record(took);
    }

    /// A failed attempt will be retried.
    pub fn retried(&mut self, now: Timestamp, dims: Dims<'_>) {
        self.record(now, dims, |b| b.tasks.retried += 1);
        self.task_totals(dims).counts.retried += 1;
    }

    /// A task went back to the queue without costing an attempt.
    pub fn requeued(&mut self, now: Timestamp, dims: Dims<'_>) {
        self.record(now, dims, |b| b.tasks.requeued += 1);
        self.task_totals(dims).counts.requeued += 1;
    }

    /// A pool changed size.
    pub fn scaled(&mut self, now: Timestamp, swarm: SwarmId, pool: &str) {
        self.roll(now);
        let series = self.open.entry(swarm).or_default();
        series.swarm.scaling_events += 1;
        by_name(&mut series.pools, pool).scaling_events += 1;
        self.totals.swarms.entry(swarm).or_default().scaling_events += 1;
    }

    /// An agent failed (its first failure since it was last in service counts).
    pub fn agent_failed(&mut self, now: Timestamp, dims: Dims<'_>) {
        let Some((id, _, _)) = dims.agent else { return };
        if self.failed_at.contains_key(&id) {
            return;
        }
        self.failed_at.insert(id, now);
        self.record(now, dims, |b| b.failures += 1);
        self.totals.swarms.entry(dims.swarm).or_default().failures += 1;
    }

    /// An agent is back in service; with a failure on record, that is a recovery.
    pub fn agent_recovered(&mut self, now: Timestamp, dims: Dims<'_>) {
        let Some((id, _, _)) = dims.agent else { return };
        let Some(since) = self.failed_at.remove(&id) else {
            return;
        };
        let took = now.since(since);
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.record(now, dims, |b| {
            b.recoveries += 1;
            b.recovery_ms = b.recovery_ms.saturating_add(ms);
        });
        self.totals
            .swarms
            .entry(dims.swarm)
            .or_default()
            .recoveries
            .record(took);
    }

    /// An agent left the fleet: its failure, if any, will not be recovered.
    pub fn agent_removed(&mut self, id: AgentId) {
        self.failed_at.remove(&id);
        self.last_heartbeat_sample.remove(&id);
    }

    /// A heartbeat arrived (with the resource usage it reported, if any); `sample` builds its
    /// history record, taken when one is due.
    pub fn heartbeat(
        &mut self,
        now: Timestamp,
        dims: Dims<'_>,
        usage: Option<&ResourceUsage>,
        sample: impl FnOnce() -> HeartbeatSample,
    ) {
        self.record(now, dims, |b| b.heartbeats += 1);
        if let Some(u) = usage {
            self.usage(now, dims, u);
        }
        self.totals.swarms.entry(dims.swarm).or_default().heartbeats += 1;
        if let Some((id, _, _)) = dims.agent {
            let due = self
                .last_heartbeat_sample
                .get(&id)
                .is_none_or(|last| now.since(*last) >= self.config.heartbeat_sample_every);
            if due {
                self.last_heartbeat_sample.insert(id, now);
                self.heartbeats.push(sample());
            }
        }
    }

    /// An agent's resource usage, as it reported it or as its processes were sampled. Values
    /// that are not finite and non-negative are left out (the API refuses them anyway).
    pub fn usage(&mut self, now: Timestamp, dims: Dims<'_>, usage: &ResourceUsage) {
        let sane = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
        let (cpu, memory) = (sane(usage.cpu_percent), sane(usage.memory_mb));
        if cpu.is_none() && memory.is_none() {
            return;
        }
        self.record(now, dims, |b| {
            if let Some(c) = cpu {
                b.cpu_samples += 1;
                b.cpu_sum += c;
            }
            if let Some(m) = memory {
                b.memory_samples += 1;
                b.memory_sum += m;
            }
        });
    }

    /// Whether a gauge sample is due at `now`.
    pub fn sample_due(&self, now: Timestamp) -> bool {
        self.last_sample
            .is_none_or(|last| now.since(last) >= self.config.sample_every)
    }

    /// Records one round of gauge samples: per swarm, per pool and per agent.
    pub fn sample<'a>(
        &mut self,
        now: Timestamp,
        swarm: SwarmId,
        whole: GaugeSample,
        pools: impl IntoIterator<Item = (&'a str, GaugeSample)>,
        agents: impl IntoIterator<Item = (AgentId, &'a str, GaugeSample)>,
    ) {
        self.roll(now);
        self.last_sample = Some(now);
        let series = self.open.entry(swarm).or_default();
        series.swarm.sample(whole);
        for (pool, g) in pools {
            by_name(&mut series.pools, pool).sample(g);
        }
        for (id, name, g) in agents {
            match series.agents.get_mut(&id) {
                Some((_, b)) => b.sample(g),
                None => {
                    let mut b = Bucket::default();
                    b.sample(g);
                    series.agents.insert(id, (name.to_owned(), b));
                }
            }
        }
    }

    /// Lets time pass: closes the minute when it is over and asks for old history to be
    /// dropped (once an hour).
    pub fn tick(&mut self, now: Timestamp) {
        self.roll(now);
        let due = self
            .last_prune
            .is_none_or(|last| now.since(last) >= Duration::from_secs(3600));
        if due {
            self.last_prune = Some(now);
            for period in Period::ALL {
                let keep = self.config.retention_of(period);
                self.prunes.push(Prune::Metrics(period, now - keep));
            }
            self.prunes
                .push(Prune::Heartbeats(now - self.config.heartbeat_retention));
        }
    }

    /// Closes the open minute early (before a shutdown): its buckets go to the store now.
    /// Observations later in the same minute are added to the same rows.
    pub fn flush(&mut self) {
        self.close();
    }

    /// The open minute's bucket of one series, if anything was observed in it yet, with the
    /// minute's start: what the store does not have yet. Agents are keyed by name, as stored:
    /// two agents of one name in the minute (one replaced the other) are merged, as their rows
    /// will be.
    pub fn open_bucket(
        &self,
        swarm: SwarmId,
        scope: Scope,
        key: &str,
    ) -> Option<(Timestamp, Bucket)> {
        let minute = self.minute?;
        let series = self.open.get(&swarm)?;
        let bucket = match scope {
            Scope::Swarm => Some(series.swarm.clone()),
            Scope::Pool => series.pools.get(key).cloned(),
            Scope::Agent => series
                .agents
                .values()
                .filter(|(name, _)| name == key)
                .map(|(_, b)| b)
                .fold(None, |acc: Option<Bucket>, b| {
                    let mut acc = acc.unwrap_or_default();
                    acc.merge(b);
                    Some(acc)
                }),
            Scope::TaskType => series.task_types.get(key).cloned(),
        }?;
        Some((minute, bucket))
    }

    /// The keys of one scope's series with observations in the open minute, unordered.
    pub fn open_keys(&self, swarm: SwarmId, scope: Scope) -> Vec<String> {
        let Some(series) = self.open.get(&swarm) else {
            return Vec::new();
        };
        match scope {
            Scope::Swarm => vec![String::new()],
            Scope::Pool => series.pools.keys().cloned().collect(),
            Scope::Agent => series.agents.values().map(|(n, _)| n.clone()).collect(),
            Scope::TaskType => series.task_types.keys().cloned().collect(),
        }
    }

    /// Takes the rows, prunes and heartbeat samples to store.
    pub fn take(&mut self) -> (Vec<MetricRow>, Vec<Prune>, Vec<HeartbeatSample>) {
        (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.prunes),
            std::mem::take(&mut self.heartbeats),
        )
    }

    /// Whether there is anything to take.
    pub fn has_output(&self) -> bool {
        !self.rows.is_empty() || !self.prunes.is_empty() || !self.heartbeats.is_empty()
    }

    /// A swarm is gone: its open buckets and totals go with it.
    pub fn forget_swarm(&mut self, swarm: SwarmId) {
        self.open.remove(&swarm);
        self.totals.swarms.remove(&swarm);
        self.totals.tasks.remove(&swarm);
    }
}

/// The value under `key`, made on first use; the key is copied only then.
fn by_name<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed.
    Completed,
    /// Failed for good.
    Failed,
    /// Out of attempts.
    Dead,
    /// Cancelled.
    Cancelled,
}

impl Outcome {
    /// As Prometheus labels write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Dead => "dead",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sketch_quantiles_are_within_their_accuracy() {
        let mut s = Sketch::default();
        for v in 1..=10_000u64 {
            s.record(ms(v));
        }
        for (q, exact) in [(0.5, 5000.0), (0.95, 9500.0), (0.99, 9900.0)] {
            let got = s.quantile(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.026,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(s.summary().unwrap().max, 10_000.0);
        assert_eq!(s.summary().unwrap().mean, 5000.5);
    }

    #[test]
    fn merged_sketches_equal_one_sketch_of_all_values() {
        let (mut a, mut b, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
        for v in 0..500u64 {
            let d = ms(v * 7 % 901);
            if v % 3 == 0 { &mut a } else { &mut b }.record(d);
            all.record(d);
        }
        a.merge(&b);
        assert_eq!(a, all);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Sketch>(&json).unwrap(), a);
    }

    #[test]
    fn zero_and_huge_values_have_bins() {
        let mut s = Sketch::default();
        s.record(Duration::ZERO);
        s.record(Duration::from_secs(40 * 86_400));
        assert_eq!(s.quantile(0.5), Some(0.0));
        let p99 = s.quantile(0.99).unwrap();
        assert!((p99 - 3.456e9).abs() / 3.456e9 < 0.026, "{p99}");
    }

    #[test]
    fn periods_align_on_utc_boundaries() {
        let t = Timestamp::parse_rfc3339("2026-12-02T19:47:31.250Z").unwrap();
        let at = |p: Period| Period::start_of(p, t).to_rfc3339();
        assert_eq!(at(Period::Minute), "2026-12-02T19:47:00.000Z");
        assert_eq!(at(Period::FiveMinutes), "2026-12-02T19:45:00.000Z");
        assert_eq!(at(Period::Hour), "2026-12-02T19:00:00.000Z");
        assert_eq!(at(Period::Day), "2026-12-02T00:00:00.000Z");
    }

    #[test]
    fn a_closed_minute_becomes_a_delta_of_every_period() {
        let mut r = Recorder::default();
        let swarm = SwarmId(uuid::Uuid::from_u128(1));
        let agent = AgentId(uuid::Uuid::from_u128(2));
        let t0 = Timestamp::parse_rfc3339("2026-12-02T10:04:10Z").unwrap();
        let dims = Dims {
            swarm,
            agent: Some((agent, "w-1", "workers")),
            task_type: Some("echo"),
        };
        r.waited(t0, dims, ms(20));
        r.finished(t0, dims, Outcome::Completed, ms(50));
        r.tick(t0 + ms(30_000));
        assert!(r.take().0.is_empty(), "the minute is still open");
        r.tick(t0 + ms(60_000));
        let (rows, _, _) = r.take();
        // swarm, pool, agent and task type, each in four periods
        assert_eq!(rows.len(), 16);
        let five = rows
            .iter()
            .find(|r| r.scope == Scope::Agent && r.period == Period::FiveMinutes)
            .unwrap();
        assert_eq!(five.key, "w-1");
        assert_eq!(five.start.to_rfc3339(), "2026-12-02T10:00:00.000Z");
        assert_eq!(five.bucket.tasks.completed, 1);
        assert_eq!(five.bucket.wait.count, 1);
        let totals = &r.totals().tasks[&swarm]["workers"]["echo"];
        assert_eq!((totals.counts.completed, totals.wait.count), (1, 1));
    }

    #[test]
    fn recovery_time_is_from_the_first_failure() {
        let mut r = Recorder::default();
        let swarm = SwarmId(uuid::Uuid::from_u128(1));
        let agent = AgentId(uuid::Uuid::from_u128(2));
        let dims = Dims {
            swarm,
            agent: Some((agent, "a", "p")),
            task_type: None,
        };
        let t0 = Timestamp::from_millis(1_000_000_020_000);
        r.agent_failed(t0, dims);
        r.agent_failed(t0 + ms(1_000), dims);
        r.agent_recovered(t0 + ms(4_000), dims);
        r.agent_recovered(t0 + ms(5_000), dims);
        let (_, bucket) = r.open_bucket(swarm, Scope::Swarm, "").unwrap();
        let p = bucket.point(Timestamp::EPOCH, Period::Minute);
        assert_eq!((p.failures, p.recoveries, p.mttr_ms), (1, 1, Some(4_000.0)));
    }

    #[test]
    fn points_say_null_where_nothing_was_seen() {
        let p = Bucket::default().point(Timestamp::EPOCH, Period::Hour);
        assert_eq!(p.error_rate, None);
        assert_eq!(p.wait_ms, None);
        assert_eq!(p.utilization, None);
        assert_eq!(p.end.as_millis(), 3_600_000);
        let mut b = Bucket {
            tasks: TaskCounts {
                completed: 3,
                dead: 1,
                retried: 1,
                ..TaskCounts::default()
            },
            ..Bucket::default()
        };
        b.sample(GaugeSample {
            queue: 10,
            agents: 2,
            held: 1,
            capacity: 4,
        });
        let p = b.point(Timestamp::EPOCH, Period::Minute);
        assert_eq!(p.error_rate, Some(0.25));
        assert_eq!(p.retry_rate, Some(0.2));
        assert_eq!(p.utilization, Some(0.25));
        assert_eq!(p.throughput_per_min, 3.0);
    }
}
