//! A seeded, deterministic simulation of a whole fleet on a fake clock.
//!
//! Agents register, heartbeat, poll for tasks, work for a while and complete or fail them; they
//! crash (and forget their work), get cut off (and report late), come back by heartbeat or by
//! registering again under their name, or are unregistered by an admin. Users submit batches
//! (priorities, capabilities, dependencies of both kinds, repeated idempotency keys, small
//! timeouts, deadlines), cancel and retry tasks. The coordinator restarts now and then from the
//! rows it persisted. Throughout, the simulation keeps its own account of the truth and checks:
//!
//! - (a) a task never runs as two attempts at once: it is handed out only when no attempt of
//!   it is current, and a report on an attempt the core took back is refused with a conflict;
//! - (b) no task is lost: once agents are healthy and the clock has run long enough, every task
//!   submitted is finished (completed, failed, dead or cancelled);
//! - (c) a completed task was completed exactly once, with one `task_completed` event, however
//!   often the agent repeated its completion;
//! - (d) attempts never exceed `max_attempts`;
//! - (e) event seqs increase by one, across restarts too;
//! - (f) the persisted rows agree with the events and with what the API answered, and a fleet
//!   restored from them equals the live one;
//!
//! plus the fleet's own `check_invariants` at least every 100 steps (a step is one handled
//! action: a tick, a submission, a heartbeat, a poll, a report, …), and that refused commands
//! change nothing.
//!
//! Sizes: `simulation_small` (100 agents, 10,000 tasks, tight memory limits so finished tasks
//! are evicted and the driver must look them up in its store), `simulation_chaos` (40 agents
//! that die often, 12 restarts), `simulation_full` (1,000 agents, 100,000 tasks; ignored in
//! runs in every `cargo test`), and `simulation_is_deterministic`.
//!
//! The seed comes from `FLOTILLA_SIM_SEED` (decimal or 0x-hex), else a fixed default; it is
//! printed when a run fails. `FLOTILLA_SIM_RUNS=n` runs n consecutive seeds.

mod common;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use common::{MemStore, T0};
use flotilla_core::fleet::Submission;
use flotilla_core::{
    AgentId, AgentSpec, AgentStatus, Backoff, Changes, CompletionReport, CoreError, Dependency,
    DependencyKind, DependencySpec, Effect, ErrorKind, EventKind, FailureReport, Fleet,
    FleetLimits, Heartbeat, Json, Progress, SwarmConfig, SwarmId, SwarmSpec, Task, TaskId,
    TaskSpec, TaskState, TaskStatus, Timestamp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const DEFAULT_SEED: u64 = 0x0F10_7111_A5EE_D001;
const CAPS: [&str; 5] = ["rust", "python", "gpu", "net", "db"];
const SWARM: &str = "sim";
const HEARTBEAT_MS: i64 = 5_000;

/// How big a run is.
#[derive(Clone, Debug)]
struct Scale {
    agents: usize,
    tasks: usize,
    restores: usize,
    scratch_swarms: usize,
    /// `check_invariants` runs at least this often, in steps (handled actions).
    check_every: u64,
    /// The store is compared row by row with the live fleet this often.
    full_check_every: u64,
    /// Whether to insist that every kind of trouble actually happened.
    expect_coverage: bool,
    /// Finished tasks kept in memory, and for how long at least (eviction).
    retain_terminal: usize,
    retain_terminal_for_ms: u64,
    /// Chances per heartbeat that an agent crashes, is cut off, or is late enough to lose its
    /// lease.
    crash: f64,
    cut_off: f64,
    too_late: f64,
}

/// Something that happens at an instant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Tick,
    Submit,
    User,
    Restore,
    ScratchCreate(usize),
    ScratchDelete(usize),
    Drain,
    Register {
        slot: usize,
        inc: u64,
    },
    Heartbeat {
        slot: usize,
        inc: u64,
    },
    Poll {
        slot: usize,
        inc: u64,
    },
    PollEnd {
        slot: usize,
        inc: u64,
        poll: u64,
    },
    Finish {
        slot: usize,
        task: TaskId,
        attempt: u32,
        agent: AgentId,
    },
    Progress {
        slot: usize,
        task: TaskId,
        attempt: u32,
        agent: AgentId,
    },
    Revive {
        slot: usize,
        inc: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// Not yet registered.
    Unborn,
    Alive,
    /// Crashed: forgot its work, makes no calls.
    Crashed,
    /// Cut off: keeps working, makes no calls; reports when it is back.
    CutOff,
}

/// One simulated agent process, which may register under several ids over its life.
#[derive(Debug)]
struct SimAgent {
    name: String,
    caps: Vec<String>,
    max: u32,
    /// The id it currently uses.
    id: Option<AgentId>,
    /// Bumped whenever the process's loops restart; older scheduled actions are ignored.
    inc: u64,
    life: Life,
    /// Attempts it believes it is working on (it may work on an attempt the core took back
    /// and on the next attempt of the same task at once), and under which id it got each.
    work: BTreeSet<(TaskId, u32, AgentId)>,
    /// Work finished while cut off, to report when back.
    deferred: Vec<(TaskId, u32, AgentId)>,
    /// An open poll, by number.
    polling: Option<u64>,
    polls: u64,
    /// Never dies (the drain phase's helper).
    immortal: bool,
}

/// What the simulation knows about a task it submitted.
#[derive(Debug, Default)]
struct ModelTask {
    /// Successful `complete_task` calls that were not repeats.
    completes: u32,
    /// `task_completed` events.
    completed_events: u32,
    /// A user retried it (it may then run whatever its dependencies did).
    user_retried: bool,
    deps: Vec<Dependency>,
}

/// Statuses a task may be in after an event of this kind (with no later event about it).
fn allowed_after(kind: EventKind) -> &'static [TaskStatus] {
    use TaskStatus::*;
    match kind {
        EventKind::TaskSubmitted => &[Blocked, Queued],
        EventKind::TaskUnblocked
        | EventKind::TaskRetrying
        | EventKind::TaskRequeued
        | EventKind::TaskRetried => &[Queued],
        EventKind::TaskAssigned => &[Assigned],
        EventKind::TaskStarted => &[Running],
        EventKind::TaskCompleted => &[Completed],
        EventKind::TaskFailed => &[Failed],
        EventKind::TaskDead => &[Dead],
        EventKind::TaskCancelled => &[Cancelled],
        _ => &[],
    }
}

#[derive(Debug, Default)]
struct Stats {
    steps: u64,
    commands: u64,
    invariant_checks: u64,
    submitted_batches: u64,
    refused_batches: u64,
    created: u64,
    duplicates: u64,
    takes: u64,
    wakes: u64,
    completes: u64,
    repeated_completes: u64,
    fails: u64,
    stale_reports: u64,
    progress: u64,
    crashes: u64,
    cut_offs: u64,
    unregistrations: u64,
    topology_changes: u64,
    name_conflicts: u64,
    reregistrations: u64,
    recoveries: u64,
    lease_expiries: u64,
    retries_after_timeout: u64,
    retries_after_lease: u64,
    cancels: u64,
    user_retries: u64,
    restores: u64,
    scratch_deleted: u64,
    /// Dependencies and keys the driver had to look up in the store (evicted tasks).
    stored_statuses: u64,
    stored_keys: u64,
    /// Reports, cancels and retries of tasks no longer in memory.
    evicted_reports: u64,
    evicted_cancels: u64,
    evicted_retries: u64,
    final_by_kind: BTreeMap<String, u64>,
    final_by_status: BTreeMap<String, u64>,
}

struct Scratch {
    swarm: SwarmId,
    name: String,
    tasks: Vec<TaskId>,
    agent: AgentId,
}

struct Sim {
    scale: Scale,
    rng: StdRng,
    now: i64,
    limits: FleetLimits,
    fleet: Fleet,
    swarm_id: SwarmId,
    store: MemStore,
    actions: BinaryHeap<Reverse<(i64, u64, Action)>>,
    action_seq: u64,
    agents: Vec<SimAgent>,
    /// Every agent id ever used, to its process.
    slot_of: HashMap<AgentId, usize>,
    tasks: HashMap<TaskId, ModelTask>,
    /// Tasks created in the main swarm, in order.
    submitted: Vec<TaskId>,
    keys: HashMap<String, TaskId>,
    /// From the event log: the attempt of each task that is current, and on which agent.
    current: HashMap<TaskId, (AgentId, u32)>,
    /// From the event log: the statuses each task may be in.
    ev_status: HashMap<TaskId, &'static [TaskStatus]>,
    /// Tasks seen failed, dead or cancelled (some may have moved on since).
    retry_pool: Vec<TaskId>,
    wakes: Vec<AgentId>,
    scratch: Vec<Option<Scratch>>,
    submit_span_ms: i64,
    draining: bool,
    drain_started: i64,
    drain_ticks: u64,
    stats: Stats,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn is_conflict<T>(r: &Result<T, CoreError>) -> bool {
    matches!(r, Err(CoreError::Conflict(_)))
}

fn is_not_found<T>(r: &Result<T, CoreError>) -> bool {
    matches!(r, Err(CoreError::NotFound(_)))
}

impl Sim {
    fn new(seed: u64, scale: Scale) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let limits = FleetLimits {
            retain_terminal: scale.retain_terminal,
            retain_terminal_for: Duration::from_millis(scale.retain_terminal_for_ms),
            ..FleetLimits::default()
        };
        let mut fleet = Fleet::new(limits.clone());
        let now = T0;
        let default_id = SwarmId(Uuid::from_u128(rng.r#gen()));
        fleet.ensure_default_swarm(default_id, ts(now));
        let swarm_id = SwarmId(Uuid::from_u128(rng.r#gen()));
        let config = SwarmConfig {
            heartbeat_interval: Duration::from_millis(HEARTBEAT_MS as u64),
            heartbeat_miss_limit: 3,
            task_timeout: Duration::from_secs(60),
            task_max_attempts: 3,
            // Every placement strategy, with and without local queues, keeps the invariants.
            strategy: flotilla_core::Strategy::ALL[rng.gen_range(0..7)],
            prefetch: rng.gen_range(0..3),
            affinity_wait: Duration::from_millis(rng.gen_range(0..2_000)),
            ..SwarmConfig::default()
        };
        // Every topology too: roles, elections, the ring's token over ordered tasks,
        // delegation's lanes; users switch it now and then (see `user`).
        let mut config = config;
        config.topology.ring.token_timeout = Duration::from_millis(rng.gen_range(50..1_000));
        config.topology.ring.order = if rng.gen_bool(0.5) {
            flotilla_core::topology::RingOrder::Sequential
        } else {
            flotilla_core::topology::RingOrder::Load
        };
        config.topology.mesh.connection_strategy =
            flotilla_core::topology::ConnectionStrategy::Nearest;
        let topology = flotilla_core::Topology::ALL[rng.gen_range(0..4)];
        eprintln!(
            "simulation: strategy {}, prefetch {}, topology {}",
            config.strategy.as_str(),
            config.prefetch,
            topology.as_str()
        );
        let spec = SwarmSpec {
            name: SWARM.to_owned(),
            config,
            topology,
            ..SwarmSpec::default()
        };
        fleet
            .create_swarm(swarm_id, spec, ts(now))
            .expect("create the swarm");
        // Enough submission time for the fleet to keep up, roughly.
        let submit_span_ms =
            (scale.tasks as i64 * 1000 / (scale.agents as i64 * 2 / 5).max(1)).max(10_000);
        let mut sim = Sim {
            rng,
            now,
            limits,
            fleet,
            swarm_id,
            store: MemStore::new(),
            actions: BinaryHeap::new(),
            action_seq: 0,
            agents: Vec::new(),
            slot_of: HashMap::new(),
            tasks: HashMap::new(),
            submitted: Vec::new(),
            keys: HashMap::new(),
            current: HashMap::new(),
            ev_status: HashMap::new(),
            retry_pool: Vec::new(),
            wakes: Vec::new(),
            scratch: (0..scale.scratch_swarms).map(|_| None).collect(),
            submit_span_ms,
            draining: false,
            drain_started: 0,
            drain_ticks: 0,
            stats: Stats::default(),
            scale,
        };
        let changes = sim.fleet.take_changes();
        sim.absorb(changes, None);
        sim.fleet.take_effects();
        for i in 0..sim.scale.agents {
            let n_caps = sim.rng.gen_range(0..=CAPS.len());
            let mut caps: Vec<String> = CAPS.iter().map(|c| c.to_string()).collect();
            // A random subset of n_caps capabilities.
            for j in 0..caps.len() {
                let k = sim.rng.gen_range(j..caps.len());
                caps.swap(j, k);
            }
            caps.truncate(n_caps);
            let max = sim.rng.gen_range(1..=4);
            sim.agents.push(SimAgent {
                name: format!("agent-{i}"),
                caps,
                max,
                id: None,
                inc: 0,
                life: Life::Unborn,
                work: BTreeSet::new(),
                deferred: Vec::new(),
                polling: None,
                polls: 0,
                immortal: false,
            });
            let at = sim.rng.gen_range(0..5_000);
            sim.schedule(at, Action::Register { slot: i, inc: 0 });
        }
        sim.schedule(0, Action::Tick);
        sim.schedule(10, Action::Submit);
        sim.schedule(1_000, Action::User);
        let span = sim.submit_span_ms;
        for k in 0..sim.scale.restores {
            let at = span * (k as i64 + 1) / (sim.scale.restores as i64 + 1)
                + sim.rng.gen_range(0..1_000);
            sim.schedule(at, Action::Restore);
        }
        for k in 0..sim.scale.scratch_swarms {
            let at = span * (2 * k as i64 + 1) / (2 * sim.scale.scratch_swarms as i64 + 1);
            sim.schedule(at, Action::ScratchCreate(k));
        }
        sim.schedule(span + 20_000, Action::Drain);
        sim
    }

    fn schedule(&mut self, after_ms: i64, action: Action) {
        self.action_seq += 1;
        self.actions.push(Reverse((
            self.now + after_ms.max(0),
            self.action_seq,
            action,
        )));
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u128(self.rng.r#gen())
    }

    fn t(&self) -> Timestamp {
        ts(self.now)
    }

    // ----- running commands and checking what they changed -----

    /// Runs one command; a refused command must change nothing.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Fleet, Timestamp) -> Result<T, CoreError>,
    ) -> (Result<T, CoreError>, Changes) {
        self.stats.commands += 1;
        let now = self.t();
        let r = f(&mut self.fleet, now);
        let changes = self.fleet.take_changes();
        let effects = self.fleet.take_effects();
        if r.is_err() {
            assert!(
                changes.is_empty(),
                "a refused command changed something: {changes:?}"
            );
            assert!(
                effects.is_empty(),
                "a refused command had effects: {effects:?}"
            );
        }
        for e in effects {
            match e {
                Effect::WakeAgent(a) => self.wakes.push(a),
                Effect::TaskFinished(t) => {
                    if let Some(task) = self.fleet.task(t) {
                        assert!(
                            task.status().is_terminal(),
                            "TaskFinished for unfinished {t}"
                        );
                    }
                }
                // The simulation drives connected agents only.
                other => panic!("unexpected effect for connected agents: {other:?}"),
            }
        }
        (r, changes)
    }

    /// Runs a command and absorbs its changes.
    fn cmd<T>(
        &mut self,
        f: impl FnOnce(&mut Fleet, Timestamp) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let (r, changes) = self.run(f);
        self.absorb(changes, None);
        r
    }

    /// Checks a batch of changes against the event log and the model, and persists it.
    fn absorb(&mut self, changes: Changes, said: Option<&Task>) {
        // (e) seqs continue without a gap.
        let mut seq = self.store.next_event_seq;
        for e in &changes.events {
            assert_eq!(e.seq, seq, "event seq gap or repeat at {e:?}");
            seq += 1;
        }
        assert_eq!(self.fleet.next_event_seq(), seq);
        for e in &changes.events {
            let Some(task) = e.task_id else {
                match e.kind {
                    EventKind::AgentFailed => self.stats.lease_expiries += 1,
                    EventKind::AgentRecovered => self.stats.recoveries += 1,
                    _ => {}
                }
                continue;
            };
            match e.kind {
                EventKind::TaskStarted => {
                    let agent = e.agent_id.expect("a start names its agent");
                    let attempt: u32 = e
                        .detail
                        .strip_prefix("attempt ")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("task_started detail {:?}", e.detail));
                    // (a) no other attempt of this task is current.
                    if let Some(prev) = self.current.insert(task, (agent, attempt)) {
                        panic!(
                            "task {task} started attempt {attempt} on {agent} while attempt {prev:?} was current"
                        );
                    }
                }
                EventKind::TaskCompleted => {
                    self.current.remove(&task);
                    if let Some(m) = self.tasks.get_mut(&task) {
                        m.completed_events += 1;
                        assert_eq!(
                            m.completed_events, 1,
                            "task {task} completed twice (events)"
                        );
                    }
                }
                EventKind::TaskRetrying => {
                    self.current.remove(&task);
                    if e.detail.contains("past its timeout") {
                        self.stats.retries_after_timeout += 1;
                    } else if e.detail.contains("missed heartbeats") {
                        self.stats.retries_after_lease += 1;
                    }
                }
                EventKind::TaskFailed | EventKind::TaskDead | EventKind::TaskCancelled => {
                    self.current.remove(&task);
                    self.retry_pool.push(task);
                }
                EventKind::TaskRequeued => {
                    self.current.remove(&task);
                }
                _ => {}
            }
            let allowed = allowed_after(e.kind);
            if !allowed.is_empty() {
                self.ev_status.insert(task, allowed);
            }
        }
        // (f) rows agree with the events, (d) attempts stay within bounds.
        for t in &changes.tasks {
            assert!(
                t.attempts <= t.max_attempts,
                "task {} has {} attempts of {}",
                t.id,
                t.attempts,
                t.max_attempts
            );
            let allowed = self.ev_status.get(&t.id).copied().unwrap_or(&[]);
            assert!(
                allowed.contains(&t.status()),
                "row of task {} is {} but its events allow {allowed:?}",
                t.id,
                t.status()
            );
            if let TaskState::Running { agent_id, .. } = t.state {
                assert_eq!(
                    self.current.get(&t.id),
                    Some(&(agent_id, t.attempts)),
                    "running row of {} disagrees with its task_started event",
                    t.id
                );
            }
        }
        for a in &changes.agents {
            if a.status == AgentStatus::Stopped {
                assert!(
                    self.fleet.agent(a.id).is_none(),
                    "stopped agent {} still registered",
                    a.id
                );
            }
        }
        if let Some(task) = said {
            let row = changes.tasks.iter().rev().find(|t| t.id == task.id);
            assert_eq!(
                row,
                Some(task),
                "the row persisted differs from what the API answered"
            );
        }
        self.store.apply(&changes);
    }

    fn check_invariants(&mut self) {
        self.stats.invariant_checks += 1;
        if let Err(e) = self.fleet.check_invariants() {
            panic!("invariant broken at step {}: {e}", self.stats.steps);
        }
    }

    /// The status of a task, from memory or else the store.
    fn status_of(&self, id: TaskId) -> Option<TaskStatus> {
        self.fleet
            .task(id)
            .map(|t| t.status())
            .or_else(|| self.store.tasks.get(&id).map(|t| t.status()))
    }

    /// Every task in memory is stored as it is; every live agent is stored with its status.
    /// (Whether it is idle or busy, and which tasks it holds, follow from the tasks: the core
    /// does not write an agent row for them, and `restore` recomputes them.)
    fn compare_store(&self) {
        for id in &self.submitted {
            match self.fleet.task(*id) {
                Some(live) => {
                    let stored = self
                        .store
                        .tasks
                        .get(id)
                        .unwrap_or_else(|| panic!("task {id} was never stored"));
                    assert_eq!(stored, live, "stored row of task {id} is stale");
                }
                None => {
                    let stored = &self.store.tasks[id];
                    assert!(
                        stored.status().is_terminal(),
                        "task {id} left memory unfinished"
                    );
                }
            }
        }
        let class = |s: AgentStatus| {
            if s == AgentStatus::Busy {
                AgentStatus::Idle
            } else {
                s
            }
        };
        for a in self.fleet.agents_of(self.swarm_id, None, None) {
            let stored = &self.store.agents[&a.id];
            assert_eq!(
                class(stored.status),
                class(a.status),
                "stored row of agent {} is stale",
                a.name
            );
        }
    }

    // ----- the main loop -----

    fn run_all(&mut self) {
        let wall = Instant::now();
        while let Some(Reverse((at, _, action))) = self.actions.pop() {
            assert!(at >= self.now, "time never goes back");
            self.now = at;
            self.stats.steps += 1;
            let finished = self.handle(action);
            self.handle_wakes();
            if self.stats.steps.is_multiple_of(self.scale.check_every) {
                self.check_invariants();
            }
            if self.stats.steps.is_multiple_of(self.scale.full_check_every) {
                self.compare_store();
            }
            if finished {
                break;
            }
        }
        self.check_invariants();
        self.final_checks();
        eprintln!(
            "simulated {:.0} s in {:.1} s: {:#?}",
            (self.now - T0) as f64 / 1000.0,
            wall.elapsed().as_secs_f64(),
            self.stats
        );
    }

    /// Handles one action; true when the run is over.
    fn handle(&mut self, action: Action) -> bool {
        match action {
            Action::Tick => {
                self.cmd(|f, now| {
                    f.tick(now);
                    Ok(())
                })
                .unwrap();
                let next = self.rng.gen_range(50..1_500);
                self.schedule(next, Action::Tick);
                if self.draining && self.drain_done() {
                    return true;
                }
            }
            Action::Submit => self.submit(),
            Action::User => self.user(),
            Action::Restore => self.restore(),
            Action::ScratchCreate(k) => self.scratch_create(k),
            Action::ScratchDelete(k) => self.scratch_delete(k),
            Action::Drain => self.start_drain(),
            Action::Register { slot, inc } => {
                if self.agents[slot].inc == inc {
                    self.register(slot);
                }
            }
            Action::Heartbeat { slot, inc } => self.heartbeat(slot, inc),
            Action::Poll { slot, inc } => {
                if self.agents[slot].inc == inc && self.agents[slot].life == Life::Alive {
                    self.poll(slot);
                }
            }
            Action::PollEnd { slot, inc, poll } => {
                let a = &self.agents[slot];
                if a.inc == inc && a.polling == Some(poll) {
                    let id = a.id.expect("a polling agent has an id");
                    self.cmd(|f, _| {
                        f.stop_polling(id);
                        Ok(())
                    })
                    .unwrap();
                    self.agents[slot].polling = None;
                    let again = self.rng.gen_range(0..300);
                    self.schedule(again, Action::Poll { slot, inc });
                }
            }
            Action::Finish {
                slot,
                task,
                attempt,
                agent,
            } => {
                if self.agents[slot].work.contains(&(task, attempt, agent)) {
                    match self.agents[slot].life {
                        Life::Alive => self.report(slot, task, attempt, agent),
                        Life::CutOff => self.agents[slot].deferred.push((task, attempt, agent)),
                        Life::Crashed | Life::Unborn => {}
                    }
                }
            }
            Action::Progress {
                slot,
                task,
                attempt,
                agent,
            } => {
                let a = &self.agents[slot];
                if a.life == Life::Alive && a.work.contains(&(task, attempt, agent)) {
                    self.progress(task, agent);
                }
            }
            Action::Revive { slot, inc } => {
                if self.agents[slot].inc == inc {
                    self.revive(slot);
                }
            }
        }
        false
    }

    fn handle_wakes(&mut self) {
        while let Some(id) = self.wakes.pop() {
            let Some(&slot) = self.slot_of.get(&id) else {
                continue;
            };
            let a = &self.agents[slot];
            if a.id != Some(id) || a.life != Life::Alive || a.polling.is_none() {
                // Nobody listens: the placement expires or is taken by the next poll.
                continue;
            }
            self.stats.wakes += 1;
            let (r, changes) = self.run(|f, now| f.take_task(id, now));
            let task = r.expect("a woken agent takes its task");
            let task = task.expect("a woken agent has a task placed on it");
            self.received(slot, id, task, changes);
            // The poll answered: it is over.
            self.cmd(|f, _| {
                f.stop_polling(id);
                Ok(())
            })
            .unwrap();
            let a = &mut self.agents[slot];
            a.polling = None;
            let inc = a.inc;
            if a.work.len() < a.max as usize {
                self.schedule(0, Action::Poll { slot, inc });
            }
        }
    }

    // ----- agents -----

    fn agent_spec(&self, slot: usize) -> AgentSpec {
        let a = &self.agents[slot];
        AgentSpec {
            agent_type: "sim".to_owned(),
            name: Some(a.name.clone()),
            capabilities: a.caps.clone(),
            max_concurrent_tasks: a.max,
            ..AgentSpec::default()
        }
    }

    fn register(&mut self, slot: usize) {
        let id = AgentId(self.uuid());
        let spec = self.agent_spec(slot);
        let old = self.agents[slot].id;
        let old_alive = old
            .and_then(|o| self.fleet.agent(o))
            .is_some_and(|a| !matches!(a.status, AgentStatus::Unhealthy | AgentStatus::Failed));
        let r = self.cmd(|f, now| f.register_agent(SWARM, id, spec, now).map(|_| ()));
        match r {
            Ok(()) => {
                if let Some(o) = old {
                    assert!(
                        self.fleet.agent(o).is_none(),
                        "the old registration of a name is replaced"
                    );
                    self.stats.reregistrations += 1;
                }
                self.slot_of.insert(id, slot);
                let a = &mut self.agents[slot];
                a.id = Some(id);
                a.life = Life::Alive;
                a.inc += 1;
                a.polling = None;
                self.start_loops(slot);
            }
            Err(CoreError::Conflict(msg)) => {
                assert!(
                    old_alive,
                    "registering {} refused though no live agent has its name: {msg}",
                    self.agents[slot].name
                );
                self.stats.name_conflicts += 1;
                let inc = self.agents[slot].inc;
                let later = self.rng.gen_range(2_000..10_000);
                self.schedule(later, Action::Register { slot, inc });
            }
            Err(e) => panic!("register: {e}"),
        }
    }

    fn start_loops(&mut self, slot: usize) {
        let inc = self.agents[slot].inc;
        let hb = self.rng.gen_range(3_500..5_000);
        self.schedule(hb, Action::Heartbeat { slot, inc });
        let p = self.rng.gen_range(0..200);
        self.schedule(p, Action::Poll { slot, inc });
    }

    fn heartbeat(&mut self, slot: usize, inc: u64) {
        let a = &self.agents[slot];
        if a.inc != inc || a.life != Life::Alive {
            return;
        }
        let id = a.id.expect("alive agents have an id");
        if !self.draining && !a.immortal {
            let roll: f64 = self.rng.r#gen();
            if roll < self.scale.crash {
                return self.crash(slot);
            } else if roll < self.scale.crash + self.scale.cut_off {
                return self.cut_off(slot);
            }
        }
        let r = self.cmd(|f, now| {
            f.heartbeat(id, Heartbeat::default(), now)
                .map(|ack| ack.status)
        });
        match r {
            Ok(status) => {
                assert!(!matches!(
                    status,
                    AgentStatus::Unhealthy | AgentStatus::Stopped
                ));
                // Usually on time, now and then late, rarely too late for the lease.
                let roll: f64 = self.rng.r#gen();
                let next = if roll < 0.9 {
                    self.rng.gen_range(3_000..HEARTBEAT_MS)
                } else if roll < 1.0 - self.scale.too_late || self.draining {
                    self.rng.gen_range(HEARTBEAT_MS..2 * HEARTBEAT_MS)
                } else {
                    self.rng.gen_range(3 * HEARTBEAT_MS..5 * HEARTBEAT_MS)
                };
                self.schedule(next, Action::Heartbeat { slot, inc });
            }
            Err(CoreError::NotFound(_)) => self.lost_registration(slot),
            Err(e) => panic!("heartbeat: {e}"),
        }
    }

    /// The agent learnt that its registration is gone: it registers again.
    fn lost_registration(&mut self, slot: usize) {
        let a = &mut self.agents[slot];
        a.inc += 1;
        a.polling = None;
        let inc = a.inc;
        let later = self.rng.gen_range(100..3_000);
        self.schedule(later, Action::Register { slot, inc });
    }

    fn crash(&mut self, slot: usize) {
        self.stats.crashes += 1;
        let a = &mut self.agents[slot];
        a.inc += 1;
        a.life = Life::Crashed;
        a.work.clear();
        a.deferred.clear();
        a.polling = None;
        let inc = a.inc;
        let later = self.rng.gen_range(2_000..90_000);
        self.schedule(later, Action::Revive { slot, inc });
    }

    fn cut_off(&mut self, slot: usize) {
        self.stats.cut_offs += 1;
        let a = &mut self.agents[slot];
        a.inc += 1;
        a.life = Life::CutOff;
        a.polling = None;
        let inc = a.inc;
        let later = self.rng.gen_range(2_000..40_000);
        self.schedule(later, Action::Revive { slot, inc });
    }

    fn revive(&mut self, slot: usize) {
        let a = &mut self.agents[slot];
        let was = a.life;
        a.life = Life::Alive;
        a.inc += 1;
        if was == Life::Crashed && self.rng.gen_bool(0.5) {
            // A new process: it registers again under its name.
            let inc = a.inc;
            self.schedule(0, Action::Register { slot, inc });
            return;
        }
        // The same process (or one that kept its id) is heard from again.
        for (task, attempt, agent) in std::mem::take(&mut self.agents[slot].deferred) {
            if self.agents[slot].work.contains(&(task, attempt, agent)) {
                self.report(slot, task, attempt, agent);
            }
        }
        if self.agents[slot].life != Life::Alive {
            return;
        }
        let Some(id) = self.agents[slot].id else {
            return;
        };
        let r = self.cmd(|f, now| f.heartbeat(id, Heartbeat::default(), now).map(|_| ()));
        match r {
            Ok(()) => self.start_loops(slot),
            Err(CoreError::NotFound(_)) => self.lost_registration(slot),
            Err(e) => panic!("heartbeat: {e}"),
        }
    }

    fn poll(&mut self, slot: usize) {
        let a = &self.agents[slot];
        if a.polling.is_some() || a.work.len() >= a.max as usize {
            return;
        }
        let id = a.id.expect("alive agents have an id");
        let (r, changes) = self.run(|f, now| f.take_task(id, now));
        match r {
            Ok(Some(task)) => {
                self.received(slot, id, task, changes);
                let a = &self.agents[slot];
                if a.life == Life::Alive && a.work.len() < a.max as usize {
                    let inc = a.inc;
                    self.schedule(0, Action::Poll { slot, inc });
                }
            }
            Ok(None) => {
                self.absorb(changes, None);
                let a = &mut self.agents[slot];
                a.polls += 1;
                a.polling = Some(a.polls);
                let (inc, poll) = (a.inc, a.polls);
                let wait = self.rng.gen_range(1_000..30_000);
                self.schedule(wait, Action::PollEnd { slot, inc, poll });
            }
            Err(CoreError::NotFound(_)) => {
                self.absorb(changes, None);
                self.lost_registration(slot);
            }
            Err(e) => panic!("take_task: {e}"),
        }
    }

    /// An agent got a task from `take_task`.
    fn received(&mut self, slot: usize, agent: AgentId, task: Task, changes: Changes) {
        self.stats.takes += 1;
        // (a) no attempt of it was current when it was handed out.
        if let Some(prev) = self.current.get(&task.id) {
            panic!(
                "task {} handed to {agent} while attempt {prev:?} is current",
                task.id
            );
        }
        match task.state {
            TaskState::Running { agent_id, .. } => assert_eq!(agent_id, agent),
            ref other => panic!("take_task returned a task that is not running: {other:?}"),
        }
        assert!(
            task.attempts >= 1 && task.attempts <= task.max_attempts,
            "(d) attempts {}/{}",
            task.attempts,
            task.max_attempts
        );
        let caps = &self.agents[slot].caps;
        for need in &task.required_capabilities {
            assert!(
                caps.contains(need),
                "agent {} lacks {need} for task {}",
                self.agents[slot].name,
                task.id
            );
        }
        // It starts only after its dependencies finished (unless a user forced it to run again).
        if let Some(model) = self.tasks.get(&task.id)
            && !model.user_retried
        {
            for d in &model.deps {
                if self.tasks.get(&d.task_id).is_some_and(|m| m.user_retried) {
                    continue;
                }
                let status = self.status_of(d.task_id).expect("dependency known");
                assert!(
                    status.is_terminal(),
                    "task {} started before its dependency {} finished",
                    task.id,
                    d.task_id
                );
                if d.kind == DependencyKind::Success {
                    assert_eq!(
                        status,
                        TaskStatus::Completed,
                        "task {} started though its success dependency {} is {status}",
                        task.id,
                        d.task_id
                    );
                }
            }
        }
        self.absorb(changes, Some(&task));
        assert_eq!(self.current.get(&task.id), Some(&(agent, task.attempts)));
        self.agents[slot]
            .work
            .insert((task.id, task.attempts, agent));
        // How long the work takes; small timeouts are often overrun.
        let roll: f64 = self.rng.r#gen();
        let work_ms = if roll < 0.70 {
            self.rng.gen_range(100..3_000)
        } else if roll < 0.95 {
            self.rng.gen_range(3_000..20_000)
        } else {
            self.rng.gen_range(20_000..90_000)
        };
        let attempt = task.attempts;
        self.schedule(
            work_ms,
            Action::Finish {
                slot,
                task: task.id,
                attempt,
                agent,
            },
        );
        if self.rng.gen_bool(0.05) {
            let at = self.rng.gen_range(0..work_ms);
            self.schedule(
                at,
                Action::Progress {
                    slot,
                    task: task.id,
                    attempt,
                    agent,
                },
            );
        }
    }

    /// Whether the core considers this the task's current attempt (from the event log).
    fn is_current(&self, task: TaskId, attempt: u32, agent: AgentId) -> bool {
        self.current.get(&task) == Some(&(agent, attempt))
    }

    /// Checks the answer to a report on an attempt that is not current.
    fn expect_stale(&mut self, task: TaskId, r: &Result<(), CoreError>) {
        self.stats.stale_reports += 1;
        if self.fleet.task(task).is_some() {
            assert!(
                is_conflict(r),
                "a stale report on {task} must be a conflict, got {r:?}"
            );
        } else {
            self.stats.evicted_reports += 1;
            assert!(is_not_found(r), "stale report on evicted {task}: {r:?}");
        }
    }

    fn report(&mut self, slot: usize, task: TaskId, attempt: u32, agent: AgentId) {
        self.agents[slot].work.remove(&(task, attempt, agent));
        let current = self.is_current(task, attempt, agent);
        let roll: f64 = self.rng.r#gen();
        if roll < 0.85 {
            let report = CompletionReport {
                result: Json::from_value(
                    &serde_json::json!({ "by": agent.to_string(), "attempt": attempt }),
                ),
                attempt: Some(attempt),
            };
            let (r, changes) =
                self.run(|f, now| f.complete_task(agent, task, report.clone(), now).cloned());
            match r {
                Ok(t) => {
                    assert!(
                        current,
                        "complete of {task} attempt {attempt} by {agent} accepted though not current"
                    );
                    assert_eq!(t.status(), TaskStatus::Completed);
                    assert_eq!(t.state.agent_id(), Some(agent));
                    self.absorb(changes, Some(&t));
                    self.stats.completes += 1;
                    let m = self.tasks.get_mut(&task);
                    if let Some(m) = m {
                        m.completes += 1;
                        assert_eq!(m.completes, 1, "(c) task {task} completed twice");
                    }
                    if self.rng.gen_bool(0.05) {
                        // The agent did not hear the answer and sends the same report again.
                        self.stats.repeated_completes += 1;
                        let (r2, changes) =
                            self.run(|f, now| f.complete_task(agent, task, report, now).cloned());
                        assert_eq!(
                            r2.as_ref(),
                            Ok(&t),
                            "a repeated completion is answered with the task"
                        );
                        assert!(
                            changes.is_empty(),
                            "a repeated completion changes nothing: {changes:?}"
                        );
                    }
                }
                Err(e) => {
                    self.absorb(changes, None);
                    assert!(
                        !current,
                        "complete of current attempt {attempt} of {task} refused: {e}"
                    );
                    self.expect_stale(task, &Err(e));
                }
            }
        } else {
            let retryable = roll < 0.96;
            let report = FailureReport {
                error: "simulated failure".to_owned(),
                retryable,
                attempt: Some(attempt),
            };
            let (r, changes) = self.run(|f, now| f.fail_task(agent, task, report, now).cloned());
            match r {
                Ok(t) => {
                    assert!(
                        current,
                        "fail of {task} attempt {attempt} accepted though not current"
                    );
                    self.absorb(changes, Some(&t));
                    self.stats.fails += 1;
                    let err = t
                        .last_error
                        .as_ref()
                        .expect("a failed attempt leaves its error");
                    assert_eq!(
                        (err.kind, err.attempt),
                        (ErrorKind::AgentError, Some(attempt))
                    );
                    if !retryable {
                        assert_eq!(t.status(), TaskStatus::Failed);
                    } else if attempt >= t.max_attempts {
                        assert_eq!(t.status(), TaskStatus::Dead);
                    } else {
                        assert!(matches!(
                            t.status(),
                            TaskStatus::Queued | TaskStatus::Assigned
                        ));
                    }
                }
                Err(e) => {
                    self.absorb(changes, None);
                    assert!(
                        !current,
                        "fail of current attempt {attempt} of {task} refused: {e}"
                    );
                    self.expect_stale(task, &Err(e));
                }
            }
        }
        let a = &self.agents[slot];
        if a.life == Life::Alive && a.polling.is_none() && a.id == Some(agent) {
            let inc = a.inc;
            let after = self.rng.gen_range(0..100);
            self.schedule(after, Action::Poll { slot, inc });
        }
    }

    fn progress(&mut self, task: TaskId, agent: AgentId) {
        let expected = self.current.get(&task).is_some_and(|(a, _)| *a == agent);
        let p = Progress {
            percent: Some(50.0),
            message: Some("halfway".to_owned()),
            reported_at: None,
        };
        let (r, changes) = self.run(|f, now| f.report_progress(agent, task, p, now).cloned());
        match r {
            Ok(t) => {
                assert!(
                    expected,
                    "progress on {task} by {agent} accepted though not current"
                );
                self.absorb(changes, Some(&t));
                self.stats.progress += 1;
            }
            Err(e) => {
                self.absorb(changes, None);
                assert!(!expected, "progress on current {task} refused: {e}");
            }
        }
    }

    // ----- users -----

    fn random_spec(&mut self, i: usize, refs: &[(String, bool)]) -> TaskSpec {
        let rng = &mut self.rng;
        let mut spec = TaskSpec {
            task_type: format!("type-{}", rng.gen_range(0..8)),
            payload: Json::from_value(&serde_json::json!({ "n": i })),
            priority: rng.gen_range(1..=10),
            affinity_key: rng
                .gen_bool(0.3)
                .then(|| format!("key-{}", rng.gen_range(0..50))),
            ..TaskSpec::default()
        };
        let n_caps = match rng.gen_range(0..100) {
            0..50 => 0,
            50..85 => 1,
            _ => 2,
        };
        for _ in 0..n_caps {
            spec.required_capabilities
                .push(CAPS[rng.gen_range(0..CAPS.len())].to_owned());
        }
        if rng.gen_bool(0.7) {
            spec.max_attempts = Some(rng.gen_range(1..=5));
        }
        match rng.gen_range(0..100) {
            0..10 => spec.timeout = Some(Duration::from_millis(rng.gen_range(300..3_000))),
            10..40 => spec.timeout = Some(Duration::from_millis(rng.gen_range(5_000..120_000))),
            _ => {}
        }
        if rng.gen_bool(0.5) {
            let initial = rng.gen_range(0..2_000);
            let max = rng.gen_range(initial..=20_000);
            spec.backoff = Some(Backoff {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(max),
            });
        }
        if rng.gen_bool(0.05) {
            spec.deadline = Some(ts(self.now + rng.gen_range(2_000..120_000)));
        }
        if rng.gen_bool(0.05) {
            let pool = (self.scale.tasks / 20).max(10);
            spec.idempotency_key = Some(format!("key-{}", rng.gen_range(0..pool)));
        }
        // A few ordered tasks: each waits its turn (in a ring, for the token). They run one at
        // a time, so the full-size run keeps them few: the rest of its work would wait on them.
        let share = if self.scale.tasks > 20_000 {
            0.0003
        } else {
            0.003
        };
        spec.ordered = rng.gen_bool(share);
        if !self.submitted.is_empty() && rng.gen_bool(0.05) {
            let window = self.submitted.len().min(5_000);
            spec.parent_task_id =
                Some(self.submitted[self.submitted.len() - 1 - rng.gen_range(0..window)]);
        }
        if rng.gen_bool(0.25) {
            let n = rng.gen_range(1..=3);
            let mut success_on_existing = false;
            for _ in 0..n {
                if !self.submitted.is_empty() && (refs.is_empty() || rng.gen_bool(0.6)) {
                    // Mostly recent tasks, now and then any (often long gone from memory).
                    let window = if rng.gen_bool(0.9) {
                        self.submitted.len().min(3_000)
                    } else {
                        self.submitted.len()
                    };
                    let id = self.submitted[self.submitted.len() - 1 - rng.gen_range(0..window)];
                    let kind = if rng.gen_bool(0.5) {
                        DependencyKind::Success
                    } else {
                        DependencyKind::Completion
                    };
                    success_on_existing |= kind == DependencyKind::Success;
                    spec.depends_on.push(
                        if kind == DependencyKind::Completion && rng.gen_bool(0.5) {
                            DependencySpec::Id(id)
                        } else {
                            DependencySpec::Full(Dependency { task_id: id, kind })
                        },
                    );
                } else if !refs.is_empty() {
                    let (name, _keyed) = &refs[rng.gen_range(0..refs.len())];
                    let kind = if rng.gen_bool(0.5) {
                        DependencyKind::Success
                    } else {
                        DependencyKind::Completion
                    };
                    spec.depends_on.push(DependencySpec::Ref {
                        reference: name.clone(),
                        kind,
                    });
                }
            }
            let _ = success_on_existing;
        }
        spec
    }

    fn submit(&mut self) {
        if self.draining || self.submitted.len() >= self.scale.tasks {
            return;
        }
        let size = match self.rng.gen_range(0..100) {
            0..60 => self.rng.gen_range(1..10),
            60..95 => self.rng.gen_range(10..60),
            _ => self.rng.gen_range(60..400),
        };
        let size = size.min(self.scale.tasks - self.submitted.len()).max(1);
        let mut specs = Vec::with_capacity(size);
        let mut refs: Vec<(String, bool)> = Vec::new();
        for i in 0..size {
            let mut spec = self.random_spec(self.submitted.len() + i, &refs);
            if self.rng.gen_bool(0.3) {
                let name = format!("r{i}");
                spec.reference = Some(name.clone());
                refs.push((name, spec.idempotency_key.is_some()));
            }
            specs.push(spec);
        }
        // Now and then the batch is spoiled by one bad spec, and must be refused whole.
        let mut spoil = self.rng.gen_range(0..100);
        if self.stats.submitted_batches == 4 {
            spoil = self.rng.gen_range(0..3);
        }
        if spoil < 3 {
            let mut bad = specs.clone();
            let at = self.rng.gen_range(0..bad.len());
            match spoil {
                0 => bad[at].priority = if self.rng.gen_bool(0.5) { 0 } else { 11 },
                1 => bad[at]
                    .depends_on
                    .push(DependencySpec::Id(TaskId(self.uuid()))),
                _ => {
                    bad[at].reference = Some("loop-a".to_owned());
                    bad[at].depends_on.push(DependencySpec::Ref {
                        reference: "loop-b".to_owned(),
                        kind: DependencyKind::Completion,
                    });
                    let other = TaskSpec {
                        reference: Some("loop-b".to_owned()),
                        depends_on: vec![DependencySpec::Ref {
                            reference: "loop-a".to_owned(),
                            kind: DependencyKind::Success,
                        }],
                        ..TaskSpec::default()
                    };
                    bad.push(other);
                }
            }
            let ids: Vec<TaskId> = bad.iter().map(|_| TaskId(self.uuid())).collect();
            let known = self.store.known_for(&self.fleet, SWARM, &bad);
            let r = self.cmd(|f, now| f.submit_tasks(SWARM, bad, &ids, &known, now));
            assert!(
                matches!(r, Err(CoreError::Invalid(_))),
                "a spoiled batch must be refused: {r:?}"
            );
            self.stats.refused_batches += 1;
        }
        let ids: Vec<TaskId> = specs.iter().map(|_| TaskId(self.uuid())).collect();
        let known = self.store.known_for(&self.fleet, SWARM, &specs);
        self.stats.stored_statuses += known.statuses.len() as u64;
        self.stats.stored_keys += known.idempotency.len() as u64;
        // What the answer must be, spec by spec.
        let mut expected = Vec::with_capacity(specs.len());
        let mut batch_keys: HashMap<&str, TaskId> = HashMap::new();
        for (i, s) in specs.iter().enumerate() {
            let e = match s.idempotency_key.as_deref() {
                Some(k) => match self.keys.get(k).or(batch_keys.get(k)) {
                    Some(id) => (*id, false),
                    None => {
                        batch_keys.insert(k, ids[i]);
                        (ids[i], true)
                    }
                },
                None => (ids[i], true),
            };
            expected.push(e);
        }
        let specs_kept = specs.clone();
        let r = self.cmd(|f, now| f.submit_tasks(SWARM, specs, &ids, &known, now));
        let subs: Vec<Submission> = r.unwrap_or_else(|e| panic!("batch refused: {e}"));
        self.stats.submitted_batches += 1;
        for (i, s) in subs.iter().enumerate() {
            assert_eq!(
                (s.task, s.created),
                expected[i],
                "submission {i} of the batch"
            );
            if !s.created {
                self.stats.duplicates += 1;
                continue;
            }
            self.stats.created += 1;
            if let Some(k) = &specs_kept[i].idempotency_key {
                self.keys.insert(k.clone(), s.task);
            }
            let deps = self
                .fleet
                .task(s.task)
                .map(|t| t.depends_on.clone())
                .unwrap_or_default();
            self.tasks.insert(
                s.task,
                ModelTask {
                    deps,
                    ..ModelTask::default()
                },
            );
            self.submitted.push(s.task);
        }
        let per_batch = self.submit_span_ms * 25 / self.scale.tasks as i64;
        let next = self.rng.gen_range(0..(2 * per_batch).max(2));
        self.schedule(next, Action::Submit);
    }

    fn user(&mut self) {
        if self.draining {
            return;
        }
        let next = self
            .rng
            .gen_range(100..(200_000 / self.scale.agents as i64).max(200));
        self.schedule(next, Action::User);
        match self.rng.gen_range(0..100) {
            0..40 if !self.submitted.is_empty() => {
                let window = if self.rng.gen_bool(0.8) {
                    self.submitted.len().min(5_000)
                } else {
                    self.submitted.len()
                };
                let id = self.submitted[self.submitted.len() - 1 - self.rng.gen_range(0..window)];
                self.cancel(id);
            }
            40..80 if !self.retry_pool.is_empty() => {
                let i = self.rng.gen_range(0..self.retry_pool.len());
                let id = self.retry_pool.swap_remove(i);
                self.retry(id);
            }
            80..81 => {
                // A live change of topology: nothing in flight may be lost.
                let to = flotilla_core::Topology::ALL[self.rng.gen_range(0..4)];
                self.stats.topology_changes += 1;
                self.cmd(|f, now| f.set_topology(SWARM, to, None, now).map(|_| ()))
                    .expect("change the topology");
            }
            81..95 => {
                let slot = self.rng.gen_range(0..self.agents.len());
                let a = &self.agents[slot];
                if let Some(id) = a.id
                    && self.fleet.agent(id).is_some()
                {
                    self.stats.unregistrations += 1;
                    self.cmd(|f, now| f.unregister_agent(id, now))
                        .expect("unregister a registered agent");
                    assert!(self.fleet.agent(id).is_none());
                }
            }
            _ => {
                // Users get ids wrong too.
                let id = TaskId(self.uuid());
                let r = self.cmd(|f, now| f.cancel_task(id, None, now).map(|_| ()));
                assert!(is_not_found(&r), "{r:?}");
                let r = self.cmd(|f, now| f.retry_task(id, None, None, now).map(|_| ()));
                assert!(is_not_found(&r), "{r:?}");
            }
        }
    }

    fn cancel(&mut self, id: TaskId) {
        let in_memory = self.fleet.task(id).is_some();
        let status = self.status_of(id).expect("a submitted task is known");
        let (r, changes) =
            self.run(|f, now| f.cancel_task(id, Some("user".to_owned()), now).cloned());
        match r {
            Ok(t) => {
                assert!(
                    !status.is_terminal(),
                    "cancel of {status} task {id} accepted"
                );
                assert_eq!(t.status(), TaskStatus::Cancelled);
                self.absorb(changes, Some(&t));
                self.stats.cancels += 1;
            }
            Err(e) => {
                self.absorb(changes, None);
                assert!(
                    status.is_terminal(),
                    "cancel of unfinished task {id} refused: {e}"
                );
                if in_memory {
                    assert!(matches!(e, CoreError::Conflict(_)), "{e:?}");
                } else {
                    self.stats.evicted_cancels += 1;
                    assert!(matches!(e, CoreError::NotFound(_)), "{e:?}");
                }
            }
        }
    }

    fn retry(&mut self, id: TaskId) {
        let Some(status) = self.status_of(id) else {
            return;
        };
        let stored = match self.fleet.task(id) {
            Some(_) => None,
            None => self.store.tasks.get(&id).cloned(),
        };
        self.stats.evicted_retries += u64::from(stored.is_some());
        let max_attempts = self.rng.gen_bool(0.3).then(|| self.rng.gen_range(1..=5));
        let (r, changes) = self.run(|f, now| f.retry_task(id, max_attempts, stored, now).cloned());
        let retryable = matches!(
            status,
            TaskStatus::Failed | TaskStatus::Dead | TaskStatus::Cancelled
        );
        match r {
            Ok(t) => {
                assert!(retryable, "retry of {status} task {id} accepted");
                assert_eq!(t.attempts, 0);
                if let Some(m) = max_attempts {
                    assert_eq!(t.max_attempts, m);
                }
                self.absorb(changes, Some(&t));
                self.stats.user_retries += 1;
                if let Some(m) = self.tasks.get_mut(&id) {
                    m.user_retried = true;
                }
            }
            Err(e) => {
                self.absorb(changes, None);
                assert!(!retryable, "retry of {status} task {id} refused: {e}");
                assert!(matches!(e, CoreError::Conflict(_)), "{e:?}");
            }
        }
    }

    // ----- the coordinator restarts -----

    fn restore(&mut self) {
        if self.draining {
            return;
        }
        self.check_invariants();
        self.compare_store();
        self.stats.restores += 1;
        let now = self.t();
        let restored = self.store.restore(self.limits.clone(), now);
        let old = std::mem::replace(&mut self.fleet, restored);
        // Nothing accepted is lost, and everything is as it was.
        for id in &self.submitted {
            let new = self
                .fleet
                .task(*id)
                .unwrap_or_else(|| panic!("task {id} lost in the restart"));
            if let Some(was) = old.task(*id) {
                assert_eq!(new, was, "task {id} changed in the restart");
            }
        }
        for a in old.agents_of(self.swarm_id, None, None) {
            let new = self
                .fleet
                .agent(a.id)
                .unwrap_or_else(|| panic!("agent {} lost in the restart", a.name));
            let sorted = |v: &[TaskId]| {
                let mut v = v.to_vec();
                v.sort();
                v
            };
            assert_eq!(new.status, a.status, "status of {}", a.name);
            assert_eq!(
                sorted(&new.current_tasks),
                sorted(&a.current_tasks),
                "tasks of {}",
                a.name
            );
            assert!(
                new.lease_until >= a.lease_until,
                "a restart never shortens a lease"
            );
        }
        let changes = self.fleet.take_changes();
        assert!(
            changes.tasks.is_empty(),
            "nothing to correct after a clean restart: {:?}",
            changes.tasks
        );
        self.absorb(changes, None);
        assert!(self.fleet.take_effects().is_empty());
        self.check_invariants();
        // Open polls were cut by the restart; the agents poll again.
        for slot in 0..self.agents.len() {
            let a = &mut self.agents[slot];
            if a.polling.take().is_some() {
                let inc = a.inc;
                let after = self.rng.gen_range(0..2_000);
                self.schedule(after, Action::Poll { slot, inc });
            }
        }
    }

    // ----- a swarm that comes and goes -----

    fn scratch_create(&mut self, k: usize) {
        let swarm = SwarmId(self.uuid());
        let name = format!("scratch-{k}");
        let spec = SwarmSpec {
            name: name.clone(),
            ..SwarmSpec::default()
        };
        self.cmd(|f, now| f.create_swarm(swarm, spec, now).map(|_| ()))
            .unwrap();
        let agent = AgentId(self.uuid());
        self.cmd(|f, now| {
            f.register_agent(&name, agent, AgentSpec::default(), now)
                .map(|_| ())
        })
        .unwrap();
        let specs: Vec<TaskSpec> = (0..20)
            .map(|i| TaskSpec {
                reference: Some(format!("s{i}")),
                idempotency_key: (i % 5 == 0).then(|| format!("scratch-key-{i}")),
                depends_on: if i > 0 && i % 3 == 0 {
                    vec![DependencySpec::Ref {
                        reference: format!("s{}", i - 1),
                        kind: DependencyKind::Success,
                    }]
                } else {
                    vec![]
                },
                ..TaskSpec::default()
            })
            .collect();
        let ids: Vec<TaskId> = specs.iter().map(|_| TaskId(self.uuid())).collect();
        let known = self.store.known_for(&self.fleet, &name, &specs);
        let subs = self
            .cmd(|f, now| f.submit_tasks(&name, specs, &ids, &known, now))
            .unwrap();
        let t = self.cmd(|f, now| f.take_task(agent, now)).unwrap();
        assert!(t.is_some());
        let r = self.cmd(|f, now| f.delete_swarm(&name, false, now));
        assert!(is_conflict(&r), "a busy swarm is not deleted without force");
        self.scratch[k] = Some(Scratch {
            swarm,
            name,
            tasks: subs.iter().map(|s| s.task).collect(),
            agent,
        });
        let later = self.rng.gen_range(5_000..30_000);
        self.schedule(later, Action::ScratchDelete(k));
    }

    fn scratch_delete(&mut self, k: usize) {
        let s = self.scratch[k].take().expect("created");
        let name = s.name.clone();
        let (r, changes) = self.run(|f, now| f.delete_swarm(&name, true, now));
        r.expect("force delete");
        assert_eq!(changes.deleted_swarms, vec![s.swarm]);
        assert!(changes.tasks.iter().all(|t| t.swarm_id != s.swarm));
        // The swarm's agents come once more, removed, so that the driver revokes their tokens.
        assert!(
            changes
                .agents
                .iter()
                .filter(|a| a.swarm_id == s.swarm)
                .all(|a| a.removed_at.is_some() && a.status == AgentStatus::Stopped)
        );
        assert!(
            changes
                .events
                .iter()
                .any(|e| e.kind == EventKind::SwarmDeleted && e.swarm_id == s.swarm)
        );
        self.absorb(changes, None);
        assert!(self.fleet.swarm_by_id(s.swarm).is_none());
        assert!(self.fleet.agent(s.agent).is_none());
        for t in &s.tasks {
            assert!(self.fleet.task(*t).is_none());
            assert!(!self.store.tasks.contains_key(t));
        }
        assert!(!self.store.swarms.contains_key(&s.swarm));
        assert!(self.store.agents.values().all(|a| a.swarm_id != s.swarm));
        let r = self.cmd(|f, now| {
            f.complete_task(
                s.agent,
                s.tasks[0],
                CompletionReport {
                    result: Json::null(),
                    attempt: None,
                },
                now,
            )
            .map(|_| ())
        });
        assert!(is_not_found(&r), "{r:?}");
        self.stats.scratch_deleted += 1;
    }

    // ----- the end -----

    fn start_drain(&mut self) {
        if self.submitted.len() < self.scale.tasks {
            // Not all submitted yet: look again later.
            self.schedule(10_000, Action::Drain);
            return;
        }
        self.draining = true;
        self.drain_started = self.now;
        // Everyone comes back and stays.
        for slot in 0..self.agents.len() {
            if matches!(self.agents[slot].life, Life::Crashed | Life::CutOff) {
                let inc = self.agents[slot].inc;
                let at = self.rng.gen_range(0..5_000);
                self.schedule(at, Action::Revive { slot, inc });
            }
        }
        // And someone who can do anything joins, in case no agent has some capabilities.
        let slot = self.agents.len();
        self.agents.push(SimAgent {
            name: "omnibus".to_owned(),
            caps: CAPS.iter().map(|c| c.to_string()).collect(),
            max: 4,
            id: None,
            inc: 0,
            life: Life::Unborn,
            work: BTreeSet::new(),
            deferred: Vec::new(),
            polling: None,
            polls: 0,
            immortal: true,
        });
        self.schedule(0, Action::Register { slot, inc: 0 });
    }

    fn drain_done(&mut self) -> bool {
        self.drain_ticks += 1;
        if !self.drain_ticks.is_multiple_of(16) && self.now - self.drain_started < 6 * 3_600_000 {
            return false;
        }
        let unfinished = self
            .submitted
            .iter()
            .filter(|id| !self.status_of(**id).expect("known").is_terminal())
            .count();
        if unfinished == 0 {
            return true;
        }
        assert!(
            self.now - self.drain_started < 6 * 3_600_000,
            "(b) {unfinished} tasks still unfinished 6 h after the last submission, e.g. {:?}",
            self.submitted
                .iter()
                .filter_map(|id| self.fleet.task(*id))
                .find(|t| !t.status().is_terminal())
        );
        false
    }

    fn final_checks(&mut self) {
        self.compare_store();
        // (b) nothing is lost: every task finished.
        let mut seen = HashSet::new();
        for id in &self.submitted {
            assert!(seen.insert(*id), "task {id} created twice");
            let task = self
                .fleet
                .task(*id)
                .unwrap_or_else(|| &self.store.tasks[id]);
            let status = task.status();
            assert!(status.is_terminal(), "(b) task {id} is still {status}");
            *self
                .stats
                .final_by_status
                .entry(status.as_str().to_owned())
                .or_default() += 1;
            if let TaskState::Failed { error, .. } | TaskState::Dead { error, .. } = &task.state {
                *self
                    .stats
                    .final_by_kind
                    .entry(format!("{:?}", error.kind))
                    .or_default() += 1;
            }
            // (c) completed exactly once.
            let m = &self.tasks[id];
            let want = u32::from(status == TaskStatus::Completed);
            assert_eq!(
                m.completes, want,
                "(c) task {id} ({status}) had {} completions",
                m.completes
            );
            assert_eq!(
                m.completed_events, want,
                "(c) task {id} ({status}) had {} completion events",
                m.completed_events
            );
            assert!(task.attempts <= task.max_attempts, "(d)");
        }
        assert!(
            self.current.keys().all(|t| !self.tasks.contains_key(t)),
            "(a) an attempt of a finished task is current"
        );
        // A last restart loses nothing either.
        let restored = self.store.restore(self.limits.clone(), self.t());
        restored
            .check_invariants()
            .expect("invariants of the restored fleet");
        for id in &self.submitted {
            let t = restored.task(*id).expect("task restored");
            assert!(t.status().is_terminal());
        }
        if self.scale.expect_coverage {
            let s = &self.stats;
            let kinds = &s.final_by_kind;
            for (what, n) in [
                ("duplicates", s.duplicates),
                ("refused batches", s.refused_batches),
                ("repeated completes", s.repeated_completes),
                ("stale reports", s.stale_reports),
                ("crashes", s.crashes),
                ("cut-offs", s.cut_offs),
                ("unregistrations", s.unregistrations),
                ("re-registrations", s.reregistrations),
                ("recoveries", s.recoveries),
                ("lease expiries", s.lease_expiries),
                ("retries after a timeout", s.retries_after_timeout),
                ("retries after a lost lease", s.retries_after_lease),
                ("cancels", s.cancels),
                ("user retries", s.user_retries),
                ("progress reports", s.progress),
                ("wakes", s.wakes),
                ("restores", s.restores),
                ("stored dependency lookups", s.stored_statuses),
                ("stored key lookups", s.stored_keys),
                ("reports on evicted tasks", s.evicted_reports),
                ("cancels of evicted tasks", s.evicted_cancels),
                ("retries of evicted tasks", s.evicted_retries),
                (
                    "dependency failures",
                    kinds.get("DependencyFailed").copied().unwrap_or(0),
                ),
                (
                    "deadlines",
                    kinds.get("DeadlineExceeded").copied().unwrap_or(0),
                ),
                (
                    "dead by timeout",
                    kinds.get("Timeout").copied().unwrap_or(0),
                ),
            ] {
                assert!(n > 0, "the simulation never exercised {what}: {s:#?}");
            }
        }
    }
}

fn seeds() -> Vec<u64> {
    let first = match std::env::var("FLOTILLA_SIM_SEED") {
        Ok(s) => {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            }
            .unwrap_or_else(|_| panic!("FLOTILLA_SIM_SEED={s:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    };
    let runs: u64 = std::env::var("FLOTILLA_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (0..runs).map(|i| first.wrapping_add(i)).collect()
}

fn simulate(scale: Scale) {
    for seed in seeds() {
        let s = scale.clone();
        let outcome = catch_unwind(AssertUnwindSafe(move || {
            let mut sim = Sim::new(seed, s);
            sim.run_all();
        }));
        if let Err(panic) = outcome {
            eprintln!("\nsimulation failed: rerun with FLOTILLA_SIM_SEED={seed:#x} ({scale:?})\n");
            resume_unwind(panic);
        }
    }
}

/// A run small enough for debug builds: 100 agents, 10,000 tasks.
#[test]
fn simulation_small() {
    simulate(Scale {
        agents: 100,
        tasks: 10_000,
        restores: 3,
        scratch_swarms: 1,
        check_every: 50,
        full_check_every: 20_000,
        expect_coverage: true,
        // Tight, so that finished tasks leave memory and the store is asked about them.
        retain_terminal: 500,
        retain_terminal_for_ms: 5_000,
        crash: 0.004,
        cut_off: 0.003,
        too_late: 0.005,
    });
}

/// Few agents that die often, and a coordinator that restarts often.
#[test]
fn simulation_chaos() {
    simulate(Scale {
        agents: 40,
        tasks: 4_000,
        restores: 12,
        scratch_swarms: 3,
        check_every: 20,
        full_check_every: 2_000,
        expect_coverage: true,
        retain_terminal: 200,
        retain_terminal_for_ms: 3_000,
        crash: 0.03,
        cut_off: 0.03,
        too_late: 0.03,
    });
}

/// The full size: 1,000 agents, 100,000 tasks. The core is built optimized even in test
/// builds (see the workspace's Cargo.toml), so this runs in every `cargo test`.
#[test]
fn simulation_full() {
    simulate(Scale {
        agents: 1_000,
        tasks: 100_000,
        restores: 3,
        scratch_swarms: 2,
        check_every: 100,
        full_check_every: 100_000,
        expect_coverage: true,
        retain_terminal: FleetLimits::default().retain_terminal,
        retain_terminal_for_ms: 60_000,
        crash: 0.004,
        cut_off: 0.003,
        too_late: 0.005,
    });
}

/// The same seed gives the same run.
#[test]
fn simulation_is_deterministic() {
    let digest = |seed: u64| {
        let mut sim = Sim::new(
            seed,
            Scale {
                agents: 20,
                tasks: 1_000,
                restores: 1,
                scratch_swarms: 1,
                check_every: 10,
                full_check_every: 1_000,
                expect_coverage: false,
                retain_terminal: 100,
                retain_terminal_for_ms: 2_000,
                crash: 0.004,
                cut_off: 0.003,
                too_late: 0.005,
            },
        );
        sim.run_all();
        let mut statuses: Vec<(TaskId, TaskStatus, u32)> = sim
            .submitted
            .iter()
            .map(|id| {
                let t = sim.fleet.task(*id).unwrap_or_else(|| &sim.store.tasks[id]);
                (*id, t.status(), t.attempts)
            })
            .collect();
        statuses.sort();
        (sim.fleet.next_event_seq(), sim.now, statuses)
    };
    let seed = seeds()[0];
    assert_eq!(digest(seed), digest(seed));
}
