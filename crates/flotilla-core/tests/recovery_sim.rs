//! A simulated day of failures: 1,000 agents (800 connected, 200 managed) work a steady stream
//! of tasks while agents crash, hang, fail every task, slow down and leak memory. The driver
//! plays the agents and the supervisor, event by event at millisecond resolution (so measured
//! times are exact, not rounded to a tick).
//!
//! Checked: the fleet's invariants throughout; no task is completed twice; when the failures
//! stop, every task ends; crashes and leaks give their tasks back at once and hangs within the
//! lease. Printed: how long a failed agent's task took to be back in the queue and to run on
//! another agent, p50/p99/max by kind of failure (the figures in the closing note).
//!
//! `FLOTILLA_SIM_SEED` picks the seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use flotilla_core::fleet::KnownTasks;
use flotilla_core::pool::{AgentMode, AgentTemplate, ResourceLimits, RuntimeKind};
use flotilla_core::{
    AgentId, AgentSpec, AgentStatus, CompletionReport, Effect, FailureReport, Fleet, FleetLimits,
    Heartbeat, Json, PoolSpec, ResourceUsage, SwarmConfig, SwarmId, SwarmSpec, TaskId, TaskSpec,
    TaskState, Timestamp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const SWARM: &str = "day";
const CONNECTED: usize = 800;
const MANAGED: u32 = 200;
const DAY_MS: i64 = 24 * 3600 * 1000;
const HEARTBEAT_MS: i64 = 10_000;
const LEASE_MS: i64 = 3 * HEARTBEAT_MS;
/// Tasks arrive at ~80% of what the fleet can do (1,000 agents, 60 s a task on average).
const ARRIVALS_PER_SEC: f64 = 13.0;
/// One failure every 20 s on average: ~4,300 in the day.
const FAILURE_EVERY_MS: f64 = 20_000.0;
const MEMORY_LIMIT_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// A managed agent's process dies: the supervisor sees the exit.
    Crash,
    /// A connected agent's process dies: only its silence tells.
    Vanish,
    Hang,
    Failing,
    Slow,
    Leak,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Submit,
    Failure,
    Reconcile,
    Heartbeat(usize, u32),
    Poll(usize, u32),
    Finish(usize, u32, TaskId, u32),
    /// The end of a hang or of a connected agent's downtime, or of a bad spell.
    Recover(usize, u32),
    /// A managed agent's process came up (the supervisor's start finished).
    ProcUp(usize, u32),
    /// A managed agent's process ended as the supervisor asked.
    ProcDown(usize, u32),
}

#[derive(Debug)]
struct SimAgent {
    id: AgentId,
    managed: bool,
    /// Changes at each crash, restart and recovery: events of an older epoch are stale.
    epoch: u32,
    /// Its process runs and it talks to the coordinator.
    up: bool,
    hung: bool,
    failing_until: i64,
    slow_until: i64,
    /// The task it works on, with its attempt.
    working: Option<(TaskId, u32)>,
    polling: bool,
}

/// A failed agent's task, watched until another agent runs it.
struct Watch {
    kind: Kind,
    task: TaskId,
    agent: AgentId,
    at: i64,
    requeued_at: Option<i64>,
}

struct Sim {
    fleet: Fleet,
    rng: StdRng,
    now: i64,
    seq: u64,
    queue: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    agents: Vec<SimAgent>,
    by_id: HashMap<AgentId, usize>,
    next_id: u128,
    completed: HashSet<TaskId>,
    submitted: u64,
    watches: Vec<Watch>,
    to_queue: HashMap<Kind, Vec<i64>>,
    to_other: HashMap<Kind, Vec<i64>>,
    failures: HashMap<Kind, u64>,
    failing_on: bool,
    steps: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let config = SwarmConfig {
            heartbeat_interval: Duration::from_millis(HEARTBEAT_MS as u64),
            heartbeat_miss_limit: 3,
            max_agents: 10_000,
            ..SwarmConfig::default()
        };
        let limits = FleetLimits {
            retain_terminal: 2_000,
            retain_terminal_for: Duration::from_secs(60),
            ..FleetLimits::default()
        };
        let mut sim = Sim {
            fleet: Fleet::new(limits),
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            agents: Vec::new(),
            by_id: HashMap::new(),
            next_id: 0,
            completed: HashSet::new(),
            submitted: 0,
            watches: Vec::new(),
            to_queue: HashMap::new(),
            to_other: HashMap::new(),
            failures: HashMap::new(),
            failing_on: true,
            steps: 0,
        };
        let now = sim.ts();
        let id = SwarmId(sim.uuid());
        sim.fleet.ensure_default_swarm(id, now);
        let id = SwarmId(sim.uuid());
        let spec = SwarmSpec {
            name: SWARM.to_owned(),
            config,
            ..SwarmSpec::default()
        };
        sim.fleet.create_swarm(id, spec, now).unwrap();
        for i in 0..CONNECTED {
            let id = AgentId(sim.uuid());
            let spec = AgentSpec {
                name: Some(format!("c{i}")),
                ..AgentSpec::default()
            };
            sim.fleet.register_agent(SWARM, id, spec, now).unwrap();
            sim.add_agent(id, false);
            let first = sim.rng.gen_range(0..HEARTBEAT_MS);
            sim.at(first, Ev::Heartbeat(i, 0));
            sim.at(0, Ev::Poll(i, 0));
        }
        let pool = PoolSpec {
            name: "m".to_owned(),
            min_agents: MANAGED,
            max_agents: 10_000,
            capabilities: Vec::new(),
            max_concurrent_tasks: 1,
            template: Some(AgentTemplate {
                command: "agent".to_owned(),
                args: Vec::new(),
                env: Default::default(),
                workdir: None,
                user: None,
                payload_env: Vec::new(),
                runtime: RuntimeKind::Process,
                mode: AgentMode::Daemon,
                placement: Default::default(),
                host_labels: Vec::new(),
                limits: ResourceLimits {
                    memory_bytes: Some(MEMORY_LIMIT_BYTES),
                    ..Default::default()
                },
                stop_grace: Duration::from_secs(1),
            }),
            checkpoints: Default::default(),
            priority: flotilla_core::DEFAULT_POOL_PRIORITY,
            resources: Default::default(),
            scaling: Vec::new(),
        };
        sim.fleet.put_pool(SWARM, pool, now).unwrap();
        sim.reconcile();
        sim.at(0, Ev::Submit);
        sim.at(0, Ev::Reconcile);
        let first = sim.exp(FAILURE_EVERY_MS);
        sim.at(first, Ev::Failure);
        sim.drain();
        sim
    }

    fn ts(&self) -> Timestamp {
        Timestamp::from_millis(1_767_225_600_000 + self.now)
    }

    fn uuid(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | self.next_id)
    }

    fn exp(&mut self, mean: f64) -> i64 {
        let u: f64 = self.rng.gen_range(1e-9..1.0);
        (-u.ln() * mean) as i64
    }

    fn add_agent(&mut self, id: AgentId, managed: bool) -> usize {
        let i = self.agents.len();
        self.agents.push(SimAgent {
            id,
            managed,
            epoch: 0,
            up: !managed,
            hung: false,
            failing_until: 0,
            slow_until: 0,
            working: None,
            polling: false,
        });
        self.by_id.insert(id, i);
        i
    }

    /// Schedules an event `after` ms from now.
    fn at(&mut self, after: i64, ev: Ev) {
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + after.max(0), self.seq, ev)));
    }

    /// Spawns the agents the pool lacks (recovery gave up on some).
    fn reconcile(&mut self) {
        let now = self.ts();
        for (_, pool, missing) in self.fleet.pools_short_of_agents() {
            for _ in 0..missing {
                let id = AgentId(self.uuid());
                self.fleet.spawn_agent(SWARM, &pool, id, now).unwrap();
                self.add_agent(id, true);
            }
        }
    }

    /// Carries out the fleet's effects, as the supervisor and the agents' polls would.
    fn drain(&mut self) {
        self.fleet.take_changes();
        for effect in self.fleet.take_effects() {
            match effect {
                Effect::WakeAgent(id) => {
                    if let Some(&i) = self.by_id.get(&id) {
                        let e = self.agents[i].epoch;
                        self.at(0, Ev::Poll(i, e));
                    }
                }
                // No checkpoints in this simulation: rollback is a start.
                Effect::StartAgent(id) | Effect::RollbackAgent(id, _) => {
                    let i = self.by_id[&id];
                    let e = self.agents[i].epoch;
                    self.at(200, Ev::ProcUp(i, e));
                }
                Effect::StopAgent(id, _) | Effect::RestartAgent(id, _) => {
                    let i = self.by_id[&id];
                    // The process is killed now; the supervisor reports its end a little later.
                    let a = &mut self.agents[i];
                    a.up = false;
                    a.hung = false;
                    a.working = None;
                    a.epoch += 1;
                    let e = a.epoch;
                    self.at(50, Ev::ProcDown(i, e));
                }
                Effect::TaskFinished(_)
                | Effect::PauseAgent(_)
                | Effect::ResumeAgent(_)
                | Effect::CheckpointAgent(..)
                | Effect::WakeInbox(..)
                | Effect::RequestAnswered(_) => {}
            }
        }
        self.steps += 1;
        if self.steps.is_multiple_of(5_000) {
            self.fleet.check_invariants().expect("invariants");
        }
        self.observe();
    }

    /// Follows the watched tasks: when they leave the failed agent, and run on another.
    fn observe(&mut self) {
        let now = self.now;
        let fleet = &self.fleet;
        let (to_queue, to_other) = (&mut self.to_queue, &mut self.to_other);
        self.watches.retain_mut(|w| {
            let Some(t) = fleet.task(w.task) else {
                return false;
            };
            let holder = match t.state {
                TaskState::Assigned { agent_id, .. } | TaskState::Running { agent_id, .. } => {
                    Some(agent_id)
                }
                _ => None,
            };
            if t.status().is_terminal() {
                return false;
            }
            if holder != Some(w.agent) && w.requeued_at.is_none() {
                w.requeued_at = Some(now);
                to_queue.entry(w.kind).or_default().push(now - w.at);
            }
            match holder {
                Some(h) if h != w.agent => {
                    to_other.entry(w.kind).or_default().push(now - w.at);
                    false
                }
                _ => true,
            }
        });
    }

    fn run_until(&mut self, end: i64) {
        loop {
            let next_driver = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let next_timer = self
                .fleet
                .next_deadline()
                .map(|t| t.as_millis() - 1_767_225_600_000);
            let next = match (next_driver, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > end {
                self.now = end;
                let now = self.ts();
                self.fleet.tick(now);
                self.drain();
                break;
            }
            self.now = self.now.max(next);
            if next_timer.is_some_and(|t| t <= self.now) {
                let now = self.ts();
                self.fleet.tick(now);
                self.drain();
            }
            if next_driver.is_some_and(|t| t <= self.now) {
                let Reverse((_, _, ev)) = self.queue.pop().unwrap();
                self.handle(ev);
                self.drain();
            }
        }
    }

    fn live(&self, i: usize, epoch: u32) -> bool {
        let a = &self.agents[i];
        a.epoch == epoch && a.up && !a.hung
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.ts();
        match ev {
            Ev::Submit => {
                if self.failing_on {
                    let n = 1 + self.rng.gen_range(0..2);
                    let specs: Vec<TaskSpec> = (0..n)
                        .map(|_| TaskSpec {
                            payload: Json::from_value(&self.rng.gen_range(20_000u64..100_000)),
                            max_attempts: Some(6),
                            ..TaskSpec::default()
                        })
                        .collect();
                    let ids: Vec<TaskId> = (0..n).map(|_| TaskId(self.uuid())).collect();
                    self.fleet
                        .submit_tasks(SWARM, specs, &ids, &KnownTasks::default(), now)
                        .unwrap();
                    self.submitted += n as u64;
                    let gap = self.exp(1000.0 * n as f64 / ARRIVALS_PER_SEC);
                    self.at(gap, Ev::Submit);
                }
            }
            Ev::Reconcile => {
                self.reconcile();
                self.at(1_000, Ev::Reconcile);
            }
            Ev::Heartbeat(i, e) => {
                if self.agents[i].epoch != e {
                    return;
                }
                if self.live(i, e) {
                    let _ = self
                        .fleet
                        .heartbeat(self.agents[i].id, Heartbeat::default(), now);
                    // A returning agent polls again.
                    if self.agents[i].working.is_none() && !self.agents[i].polling {
                        self.at(0, Ev::Poll(i, e));
                    }
                }
                self.at(HEARTBEAT_MS, Ev::Heartbeat(i, e));
            }
            Ev::Poll(i, e) => {
                if !self.live(i, e) || self.agents[i].working.is_some() {
                    return;
                }
                let id = self.agents[i].id;
                match self.fleet.take_task(id, now) {
                    Ok(Some(t)) => {
                        let a = &mut self.agents[i];
                        a.polling = false;
                        a.working = Some((t.id, t.attempts));
                        let mut took = t.payload.to_value().as_u64().unwrap_or(60_000) as i64;
                        if a.slow_until > self.now {
                            took *= 10;
                        }
                        if a.failing_until > self.now {
                            took = 500;
                        }
                        self.at(took, Ev::Finish(i, e, t.id, t.attempts));
                    }
                    Ok(None) => self.agents[i].polling = true,
                    Err(_) => self.agents[i].polling = false,
                }
            }
            Ev::Finish(i, e, task, attempt) => {
                if self.agents[i].epoch != e || self.agents[i].working != Some((task, attempt)) {
                    return;
                }
                if self.agents[i].hung {
                    // Finishes when the hang ends (`Recover`).
                    return;
                }
                self.finish(i);
            }
            Ev::Recover(i, e) => {
                let a = &mut self.agents[i];
                if a.epoch != e {
                    return;
                }
                if a.managed {
                    a.hung = false;
                } else {
                    a.up = true;
                    a.hung = false;
                }
                if self.agents[i].working.is_some() {
                    self.finish(i);
                } else {
                    self.at(0, Ev::Poll(i, e));
                }
            }
            Ev::ProcUp(i, e) => {
                if self.agents[i].epoch != e {
                    return;
                }
                let id = self.agents[i].id;
                if self.fleet.managed_started(id, Some(1), None, now).is_ok() {
                    let a = &mut self.agents[i];
                    a.up = true;
                    a.hung = false;
                    a.working = None;
                    a.failing_until = 0;
                    a.slow_until = 0;
                    let first = self.rng.gen_range(0..HEARTBEAT_MS);
                    self.at(0, Ev::Heartbeat(i, e));
                    self.at(first.min(10), Ev::Poll(i, e));
                }
            }
            Ev::ProcDown(i, e) => {
                if self.agents[i].epoch != e {
                    return;
                }
                let id = self.agents[i].id;
                let _ = self
                    .fleet
                    .managed_exited(id, "killed by SIGKILL".to_owned(), true, now);
            }
            Ev::Failure => {
                if !self.failing_on {
                    return;
                }
                self.inject();
                let next = self.exp(FAILURE_EVERY_MS);
                self.at(next, Ev::Failure);
            }
        }
    }

    /// The agent reports the end of its task (failing agents fail it).
    fn finish(&mut self, i: usize) {
        let now = self.ts();
        let (task, attempt) = self.agents[i].working.take().unwrap();
        let id = self.agents[i].id;
        let e = self.agents[i].epoch;
        if self.agents[i].failing_until > self.now {
            let report = FailureReport {
                error: "it always fails".to_owned(),
                retryable: true,
                attempt: Some(attempt),
            };
            let _ = self.fleet.fail_task(id, task, report, now);
        } else {
            let report = CompletionReport {
                result: Json::from_value(&1),
                attempt: Some(attempt),
            };
            // Each attempt is reported once here: an accepted report is the task's first and
            // only completion.
            if self.fleet.complete_task(id, task, report, now).is_ok() {
                assert!(self.completed.insert(task), "task {task} completed twice");
            }
        }
        self.at(0, Ev::Poll(i, e));
    }

    fn inject(&mut self) {
        let kinds = [
            Kind::Crash,
            Kind::Hang,
            Kind::Failing,
            Kind::Slow,
            Kind::Leak,
        ];
        let kind = kinds[self.rng.gen_range(0..kinds.len())];
        let candidates: Vec<usize> = (0..self.agents.len())
            .filter(|&i| {
                let a = &self.agents[i];
                a.up && !a.hung
                    && (kind != Kind::Leak || a.managed)
                    && self
                        .fleet
                        .agent(a.id)
                        .is_some_and(|x| matches!(x.status, AgentStatus::Busy))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.rng.gen_range(0..candidates.len())];
        let kind = if kind == Kind::Crash && !self.agents[i].managed {
            Kind::Vanish
        } else {
            kind
        };
        *self.failures.entry(kind).or_default() += 1;
        let now = self.ts();
        let id = self.agents[i].id;
        let held = self.fleet.agent(id).unwrap().current_tasks.clone();
        if matches!(kind, Kind::Crash | Kind::Vanish | Kind::Hang | Kind::Leak) {
            for task in held {
                self.watches.push(Watch {
                    kind,
                    task,
                    agent: id,
                    at: self.now,
                    requeued_at: None,
                });
            }
        }
        let spell = self.rng.gen_range(60_000..600_000);
        match kind {
            Kind::Crash | Kind::Vanish => {
                let a = &mut self.agents[i];
                a.up = false;
                a.working = None;
                a.polling = false;
                a.epoch += 1;
                let e = a.epoch;
                if a.managed {
                    // The supervisor sees the exit at once.
                    self.fleet
                        .managed_exited(id, "killed by SIGKILL".to_owned(), false, now)
                        .unwrap();
                } else {
                    // A connected worker comes back after a while, with the same identity.
                    self.at(spell, Ev::Recover(i, e));
                    self.at(spell, Ev::Heartbeat(i, e));
                }
            }
            Kind::Hang => {
                self.agents[i].hung = true;
                let e = self.agents[i].epoch;
                self.at(spell, Ev::Recover(i, e));
            }
            Kind::Failing => self.agents[i].failing_until = self.now + spell,
            Kind::Slow => self.agents[i].slow_until = self.now + spell,
            Kind::Leak => {
                let usage = ResourceUsage {
                    memory_mb: Some(MEMORY_LIMIT_BYTES as f64 / 1024.0 / 1024.0 * 1.3),
                    ..ResourceUsage::default()
                };
                self.fleet.record_usage(id, usage, now);
            }
        }
    }
}

fn percentiles(v: &mut [i64]) -> (i64, i64, i64) {
    v.sort_unstable();
    if v.is_empty() {
        return (0, 0, 0);
    }
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), *v.last().unwrap())
}

#[test]
fn a_day_of_failures_across_a_thousand_agents() {
    let seed = std::env::var("FLOTILLA_SIM_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x000d_a70f_fa11);
    let mut sim = Sim::new(seed);
    sim.run_until(DAY_MS);
    // The failures stop; an hour later everything has ended.
    sim.failing_on = false;
    sim.run_until(DAY_MS + 3_600_000);
    sim.fleet.check_invariants().expect("invariants at the end");
    let (_, agents, tasks) = sim.fleet.totals();
    let unfinished = tasks.blocked + tasks.queued + tasks.delayed + tasks.assigned + tasks.running;
    let failures: u64 = sim.failures.values().sum();
    eprintln!(
        "seed {seed:#x}: {} tasks, {} completed, {failures} failures {:?}, agents {agents:?}",
        sim.submitted,
        sim.completed.len(),
        sim.failures
    );
    for kind in [Kind::Crash, Kind::Vanish, Kind::Hang, Kind::Leak] {
        let (q50, q99, qmax) = percentiles(sim.to_queue.entry(kind).or_default());
        let (o50, o99, omax) = percentiles(sim.to_other.entry(kind).or_default());
        eprintln!(
            "{kind:?}: back in queue p50 {q50} ms p99 {q99} ms max {qmax} ms; running elsewhere p50 {o50} ms p99 {o99} ms max {omax} ms ({} tasks)",
            sim.to_other[&kind].len()
        );
    }
    assert_eq!(unfinished, 0, "tasks left unfinished: {tasks:?}");
    assert!(failures > 3_000, "{failures} failures injected");
    assert!(sim.completed.len() as u64 > sim.submitted * 9 / 10);
    for kind in [Kind::Crash, Kind::Vanish, Kind::Hang, Kind::Leak] {
        assert!(
            sim.to_other[&kind].len() > 100,
            "{kind:?}: too few tasks watched to measure"
        );
    }
    // A crash or a leak gives the task back at once; a hang within the lease.
    let (_, _, crash_max) = percentiles(sim.to_queue.get_mut(&Kind::Crash).unwrap());
    let (_, _, leak_max) = percentiles(sim.to_queue.get_mut(&Kind::Leak).unwrap());
    let (_, _, hang_max) = percentiles(sim.to_queue.get_mut(&Kind::Hang).unwrap());
    let (_, _, vanish_max) = percentiles(sim.to_queue.get_mut(&Kind::Vanish).unwrap());
    assert_eq!(crash_max, 0, "crash to queue");
    assert_eq!(leak_max, 0, "leak to queue");
    assert!(hang_max <= LEASE_MS, "hang to queue: {hang_max} ms");
    assert!(vanish_max <= LEASE_MS, "vanish to queue: {vanish_max} ms");
}
