//! A seeded simulation of two coordinators sharing one store while their swarms move back and
//! forth between them under load, on a fake clock.
//!
//! Four swarms of five agents work a steady stream of tasks (priorities, dependencies,
//! repeated idempotency keys, retryable failures); agents now and then fall silent past their
//! lease and come back. Every few seconds, at a random moment, a swarm changes owner the way
//! coordinators hand it over: its owner persists, releases it, and the other takes a new epoch
//! (`raise_event_seq(epoch << 32)`) and adopts its stored rows. Agents keep talking to
//! whichever fleet owns their swarm, and finish the work they held across the move.
//!
//! Checked throughout (by `common::cluster` after every command, and here): each fleet's
//! invariants; every swarm and agent held by exactly one fleet, every task in memory in at
//! most one; an unfinished task is in the memory of its swarm's owner exactly as stored; no
//! event seq is given twice, and each swarm's seqs strictly increase across moves; no task is
//! completed twice. At the end, once the load stops, every task submitted is completed.
//!
//! `FLOTILLA_SIM_SEED` picks the seed (decimal or 0x-hex).

mod common;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use common::cluster::Cluster;
use common::{at, done, failed};
use flotilla_core::{
    AgentId, AgentSpec, Backoff, DependencyKind, DependencySpec, EventKind, FleetLimits, Heartbeat,
    SwarmConfig, SwarmId, SwarmSpec, TaskId, TaskSpec, TaskState, TaskStatus,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEED: u64 = 0x0F10_7111_5A1D_0009;
const SWARMS: usize = 4;
const AGENTS_PER_SWARM: usize = 5;
/// How long tasks arrive, swarms move and agents fall silent.
const LOAD_MS: i64 = 8 * 60 * 1000;
/// How long the work left may take once the load stops.
const SETTLE_MS: i64 = 3 * 60 * 1000;
const HEARTBEAT_MS: i64 = 1_000;
const TICK_MS: i64 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick,
    Submit,
    Move,
    Vanish,
    Heartbeat(usize, u32),
    Poll(usize, u32),
    Finish(usize, u32, TaskId, u32),
    Return(usize),
}

struct SimAgent {
    id: AgentId,
    swarm: usize,
    /// Changes when it falls silent: what it was doing before is forgotten.
    epoch: u32,
    silent: bool,
    working: Option<(TaskId, u32)>,
}

#[derive(Default, Debug)]
struct Stats {
    moves: u64,
    moves_while_running: u64,
    silences: u64,
    failures: u64,
    completions: u64,
    duplicates: u64,
    finished_on_another_fleet: u64,
}

struct Sim {
    c: Cluster,
    rng: StdRng,
    now: i64,
    seq: u64,
    queue: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    swarms: Vec<(SwarmId, String)>,
    agents: Vec<SimAgent>,
    submitted: Vec<TaskId>,
    /// The last task submitted to each swarm, for dependencies.
    last_task: Vec<Option<TaskId>>,
    /// Accepted completions by task.
    completed: HashMap<TaskId, u32>,
    /// Which fleet handed out each attempt.
    handed_by: HashMap<(TaskId, u32), usize>,
    events_seen: usize,
    completed_events: HashMap<TaskId, u32>,
    steps: u64,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let limits = FleetLimits {
            retain_terminal: 300,
            retain_terminal_for: Duration::from_secs(20),
            ..FleetLimits::default()
        };
        let mut sim = Sim {
            c: Cluster::new(2, limits),
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            swarms: Vec::new(),
            agents: Vec::new(),
            submitted: Vec::new(),
            last_task: vec![None; SWARMS],
            completed: HashMap::new(),
            handed_by: HashMap::new(),
            events_seen: 0,
            completed_events: HashMap::new(),
            steps: 0,
            stats: Stats::default(),
        };
        let config = SwarmConfig {
            heartbeat_interval: Duration::from_millis(HEARTBEAT_MS as u64),
            heartbeat_miss_limit: 3,
            ..SwarmConfig::default()
        };
        // Every swarm starts in fleet 0; half of them move to fleet 1 at once.
        for k in 0..SWARMS {
            let name = format!("s{k}");
            let id = sim.c.create_swarm(
                0,
                SwarmSpec {
                    name: name.clone(),
                    config: config.clone(),
                    ..SwarmSpec::default()
                },
            );
            sim.swarms.push((id, name.clone()));
            for j in 0..AGENTS_PER_SWARM {
                let id = AgentId(sim.c.uuid());
                let spec = AgentSpec {
                    name: Some(format!("s{k}-a{j}")),
                    ..AgentSpec::default()
                };
                let now = sim.c.now;
                sim.c.fleets[0]
                    .register_agent(&name, id, spec, now)
                    .expect("register");
                sim.c.settle(0);
                let slot = sim.agents.len();
                sim.agents.push(SimAgent {
                    id,
                    swarm: k,
                    epoch: 0,
                    silent: false,
                    working: None,
                });
                let first = sim.rng.gen_range(0..HEARTBEAT_MS);
                sim.at(first, Ev::Heartbeat(slot, 0));
                sim.at(0, Ev::Poll(slot, 0));
            }
        }
        for k in (0..SWARMS).step_by(2) {
            sim.move_swarm(k);
        }
        sim.at(0, Ev::Tick);
        sim.at(0, Ev::Submit);
        let first = sim.exp(5_000.0);
        sim.at(first, Ev::Move);
        let first = sim.exp(15_000.0);
        sim.at(first, Ev::Vanish);
        sim
    }

    fn at(&mut self, after: i64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + after, self.seq, ev)));
    }

    fn exp(&mut self, mean_ms: f64) -> i64 {
        let u: f64 = self.rng.gen_range(1e-9..1.0);
        (-u.ln() * mean_ms) as i64
    }

    fn loading(&self) -> bool {
        self.now < LOAD_MS
    }

    fn run(&mut self) {
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if t > LOAD_MS + SETTLE_MS {
                break;
            }
            self.now = t;
            self.c.now = at(t);
            self.step(ev);
            self.steps += 1;
            self.read_events();
            if self.steps.is_multiple_of(1_000) {
                self.check_ownership();
            }
            if !self.loading() && self.all_finished() {
                break;
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                self.c.tick();
                self.at(TICK_MS, Ev::Tick);
            }
            Ev::Submit => {
                if self.loading() {
                    self.submit();
                    let next = self.exp(250.0);
                    self.at(next, Ev::Submit);
                }
            }
            Ev::Move => {
                if self.loading() {
                    let k = self.rng.gen_range(0..SWARMS);
                    self.move_swarm(k);
                    let next = self.exp(5_000.0);
                    self.at(next, Ev::Move);
                }
            }
            Ev::Vanish => {
                if self.loading() {
                    let slot = self.rng.gen_range(0..self.agents.len());
                    let a = &mut self.agents[slot];
                    if !a.silent {
                        a.silent = true;
                        a.epoch += 1;
                        a.working = None;
                        self.stats.silences += 1;
                        let back = self.rng.gen_range(4_000..9_000);
                        self.at(back, Ev::Return(slot));
                    }
                    let next = self.exp(15_000.0);
                    self.at(next, Ev::Vanish);
                }
            }
            Ev::Return(slot) => {
                let a = &mut self.agents[slot];
                a.silent = false;
                let epoch = a.epoch;
                self.at(0, Ev::Heartbeat(slot, epoch));
                self.at(0, Ev::Poll(slot, epoch));
            }
            Ev::Heartbeat(slot, epoch) => {
                let a = &self.agents[slot];
                if a.silent || a.epoch != epoch {
                    return;
                }
                let (id, i) = (a.id, self.owner_of(slot));
                let now = self.c.now;
                self.c.fleets[i]
                    .heartbeat(id, Heartbeat::default(), now)
                    .expect("heartbeat");
                self.c.settle(i);
                let next = HEARTBEAT_MS + self.rng.gen_range(-100..100);
                self.at(next, Ev::Heartbeat(slot, epoch));
            }
            Ev::Poll(slot, epoch) => {
                let a = &self.agents[slot];
                if a.silent || a.epoch != epoch || a.working.is_some() {
                    return;
                }
                let (id, i) = (a.id, self.owner_of(slot));
                let now = self.c.now;
                let got = self.c.fleets[i].take_task(id, now).expect("take task");
                self.c.settle(i);
                match got {
                    Some(t) => {
                        self.handed_by.insert((t.id, t.attempts), i);
                        self.agents[slot].working = Some((t.id, t.attempts));
                        let work = self.rng.gen_range(200..3_000);
                        self.at(work, Ev::Finish(slot, epoch, t.id, t.attempts));
                    }
                    None => {
                        let again = self.rng.gen_range(100..400);
                        self.at(again, Ev::Poll(slot, epoch));
                    }
                }
            }
            Ev::Finish(slot, epoch, task, attempt) => {
                let a = &self.agents[slot];
                if a.silent || a.epoch != epoch || a.working != Some((task, attempt)) {
                    return;
                }
                let (id, i) = (a.id, self.owner_of(slot));
                let now = self.c.now;
                if self.handed_by[&(task, attempt)] != i {
                    self.stats.finished_on_another_fleet += 1;
                }
                if self.rng.gen_bool(0.1) {
                    self.c.fleets[i]
                        .fail_task(id, task, failed(attempt, true), now)
                        .unwrap_or_else(|e| panic!("fail of {task} attempt {attempt}: {e}"));
                    self.stats.failures += 1;
                } else {
                    self.c.fleets[i]
                        .complete_task(id, task, done(attempt), now)
                        .unwrap_or_else(|e| panic!("completion of {task} attempt {attempt}: {e}"));
                    let n = self.completed.entry(task).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "task {task} completed twice");
                    self.stats.completions += 1;
                }
                self.c.settle(i);
                self.agents[slot].working = None;
                let next = self.rng.gen_range(0..50);
                self.at(next, Ev::Poll(slot, epoch));
            }
        }
    }

    /// The fleet holding an agent's swarm, which must hold the agent.
    fn owner_of(&self, slot: usize) -> usize {
        let a = &self.agents[slot];
        let i = self.c.owner(self.swarms[a.swarm].0);
        assert_eq!(
            self.c.owner_of_agent(a.id),
            Some(i),
            "agent and swarm apart"
        );
        i
    }

    fn submit(&mut self) {
        let k = self.rng.gen_range(0..SWARMS);
        let (swarm, name) = self.swarms[k].clone();
        let n = self.rng.gen_range(1..=3);
        let mut specs = Vec::new();
        for _ in 0..n {
            let mut spec = TaskSpec {
                task_type: "sim".to_owned(),
                priority: self.rng.gen_range(1..=10),
                max_attempts: Some(20),
                backoff: Some(Backoff {
                    initial: Duration::from_millis(200),
                    max: Duration::from_secs(1),
                }),
                timeout: Some(Duration::from_secs(10)),
                ..TaskSpec::default()
            };
            if let Some(dep) = self.last_task[k]
                && self.rng.gen_bool(0.15)
            {
                spec.depends_on = vec![DependencySpec::Full(flotilla_core::Dependency {
                    task_id: dep,
                    kind: DependencyKind::Completion,
                })];
            }
            if self.rng.gen_bool(0.1) {
                spec.idempotency_key = Some(format!("key-{}", self.rng.gen_range(0..200)));
            }
            specs.push(spec);
        }
        let i = self.c.owner(swarm);
        let ids: Vec<TaskId> = specs.iter().map(|_| TaskId(self.c.uuid())).collect();
        let known = self.c.store.known_for(&self.c.fleets[i], &name, &specs);
        let now = self.c.now;
        let subs = self.c.fleets[i]
            .submit_tasks(&name, specs, &ids, &known, now)
            .expect("submit");
        self.c.settle(i);
        for s in subs {
            if s.created {
                self.submitted.push(s.task);
                self.last_task[k] = Some(s.task);
            } else {
                self.stats.duplicates += 1;
            }
        }
    }

    fn move_swarm(&mut self, k: usize) {
        let swarm = self.swarms[k].0;
        let from = self.c.owner(swarm);
        let running = self.c.fleets[from]
            .swarm_health(swarm, self.c.now)
            .expect("health")
            .tasks
            .running;
        self.c.move_swarm(swarm, 1 - from);
        self.stats.moves += 1;
        if running > 0 {
            self.stats.moves_while_running += 1;
        }
        self.check_ownership();
    }

    /// Counts completion events as they come.
    fn read_events(&mut self) {
        for e in &self.c.events[self.events_seen..] {
            if e.kind == EventKind::TaskCompleted {
                let n = self
                    .completed_events
                    .entry(e.task_id.expect("task"))
                    .or_default();
                *n += 1;
                assert_eq!(*n, 1, "two completion events for {:?}", e.task_id);
            }
        }
        self.events_seen = self.c.events.len();
    }

    /// Every swarm and agent in one fleet; every unfinished task in its owner's memory,
    /// exactly as stored, and in no other fleet's.
    fn check_ownership(&self) {
        let mut held: HashSet<SwarmId> = HashSet::new();
        for f in &self.c.fleets {
            for s in f.swarm_ids() {
                assert!(held.insert(s), "swarm {s} in two fleets");
            }
        }
        assert_eq!(held.len(), SWARMS);
        for slot in 0..self.agents.len() {
            self.owner_of(slot);
        }
        for t in &self.submitted {
            let row = &self.c.store.tasks[t];
            let holder = self.c.owner_of_task(*t);
            if !row.status().is_terminal() {
                let owner = self.c.owner(row.swarm_id);
                assert_eq!(holder, Some(owner), "unfinished task {t} not in its owner");
                assert_eq!(
                    self.c.fleets[owner].task(*t),
                    Some(row),
                    "task {t} not as stored"
                );
            }
        }
    }

    fn all_finished(&self) -> bool {
        self.submitted
            .iter()
            .all(|t| self.c.store.tasks[t].status().is_terminal())
    }
}

fn seed() -> u64 {
    match std::env::var("FLOTILLA_SIM_SEED") {
        Ok(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).expect("hex seed"),
            None => s.parse().expect("decimal seed"),
        },
        Err(_) => DEFAULT_SEED,
    }
}

#[test]
fn swarms_moving_between_two_fleets_under_load_lose_and_repeat_nothing() {
    let seed = seed();
    eprintln!("handover simulation, seed {seed:#x}");
    let mut sim = Sim::new(seed);
    sim.run();
    sim.check_ownership();
    eprintln!("{:?}, {} tasks", sim.stats, sim.submitted.len());
    // Every task submitted was completed, once, with one completion event.
    for t in &sim.submitted {
        let row = &sim.c.store.tasks[t];
        assert_eq!(
            row.status(),
            TaskStatus::Completed,
            "task {t}: {:?}",
            row.state
        );
        assert_eq!(sim.completed.get(t), Some(&1), "task {t}");
        assert_eq!(sim.completed_events.get(t), Some(&1), "task {t}");
        assert!(matches!(row.state, TaskState::Completed { .. }));
    }
    // What was meant to happen did.
    let s = &sim.stats;
    assert!(s.moves >= 50, "{s:?}");
    assert!(s.moves_while_running >= 40, "{s:?}");
    assert!(s.finished_on_another_fleet >= 10, "{s:?}");
    assert!(
        s.silences >= 10 && s.failures >= 100 && s.duplicates >= 5,
        "{s:?}"
    );
    assert!(
        sim.submitted.len() >= 3_000,
        "{} tasks",
        sim.submitted.len()
    );
    let expiries = sim
        .c
        .events
        .iter()
        .filter(|e| e.kind == EventKind::AgentFailed)
        .count();
    assert!(expiries >= 5, "{expiries} leases lapsed");
}
