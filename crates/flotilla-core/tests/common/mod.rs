//! Helpers shared by the integration tests of the core: a fake clock, deterministic ids, a
//! driver that checks invariants and the event log after every command, and a tiny in-memory
//! "store" that applies [`Changes`] the way the real store does.

#![allow(dead_code)]

pub mod cluster;

use std::collections::HashMap;
use std::time::Duration;

use flotilla_core::fleet::{KnownTasks, Submission};
use flotilla_core::{
    Agent, AgentId, AgentSpec, AgentStatus, Changes, CompletionReport, CoreError, Effect, Event,
    EventKind, FailureReport, Fleet, FleetLimits, Heartbeat, Json, Message, MessageId, Pool,
    ReplyState, StoredState, Swarm, SwarmConfig, SwarmId, SwarmSpec, Task, TaskId, TaskSpec,
    TaskStatus, Timestamp,
};
use uuid::Uuid;

/// The instant every test starts at (2026-01-01T00:00:00Z), so that timestamps look real.
pub const T0: i64 = 1_767_225_600_000;

/// An instant `ms` milliseconds after [`T0`].
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Owned strings from string slices.
pub fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// A spec of the given type and priority, everything else default.
pub fn spec(task_type: &str, priority: u8) -> TaskSpec {
    TaskSpec {
        task_type: task_type.to_owned(),
        priority,
        ..TaskSpec::default()
    }
}

/// A completion report for the given attempt.
pub fn done(attempt: u32) -> CompletionReport {
    CompletionReport {
        result: Json::from_value(&serde_json::json!({"ok": true})),
        attempt: Some(attempt),
    }
}

/// A failure report.
pub fn failed(attempt: u32, retryable: bool) -> FailureReport {
    FailureReport {
        error: "it broke".to_owned(),
        retryable,
        attempt: Some(attempt),
    }
}

/// Whole rows as the store keeps them, built by applying [`Changes`] one after the other:
/// rows are upserted by id, deleted swarms take their agents and tasks with them, and the next
/// event seq is one more than the last event appended.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    pub swarms: HashMap<SwarmId, Swarm>,
    pub agents: HashMap<AgentId, Agent>,
    pub tasks: HashMap<TaskId, Task>,
    /// Idempotency keys of stored tasks, as the store's unique index would find them.
    pub keys: HashMap<(SwarmId, String), TaskId>,
    pub next_event_seq: u64,
    /// Messages, every status.
    pub messages: HashMap<MessageId, Message>,
    /// Pools, by swarm and name.
    pub pools: HashMap<(SwarmId, String), Pool>,
}

impl MemStore {
    pub fn new() -> Self {
        MemStore {
            next_event_seq: 1,
            ..MemStore::default()
        }
    }

    /// Applies one batch of changes, as `Store::commit` does.
    pub fn apply(&mut self, changes: &Changes) {
        for id in &changes.deleted_swarms {
            self.swarms.remove(id);
            self.agents.retain(|_, a| a.swarm_id != *id);
            self.tasks.retain(|_, t| t.swarm_id != *id);
            self.keys.retain(|(s, _), _| s != id);
            self.pools.retain(|(s, _), _| s != id);
        }
        // Deletions first, as the store applies them within a batch.
        for key in &changes.deleted_pools {
            self.pools.remove(key);
        }
        for s in &changes.swarms {
            self.swarms.insert(s.id, s.clone());
        }
        // Like the SQLite store: rows of a swarm deleted in the same batch are skipped.
        let gone = |swarm| changes.deleted_swarms.contains(&swarm);
        for a in changes.agents.iter().filter(|a| !gone(a.swarm_id)) {
            self.agents.insert(a.id, a.clone());
        }
        for p in changes.pools.iter().filter(|p| !gone(p.swarm_id)) {
            self.pools.insert((p.swarm_id, p.name.clone()), p.clone());
        }
        for t in changes.tasks.iter().filter(|t| !gone(t.swarm_id)) {
            if let Some(k) = &t.idempotency_key {
                self.keys.entry((t.swarm_id, k.clone())).or_insert(t.id);
            }
            self.tasks.insert(t.id, t.clone());
        }
        // Several coordinators may write here, each in its own range of seqs.
        if let Some(last) = changes.events.iter().map(|e| e.seq).max() {
            self.next_event_seq = self.next_event_seq.max(last + 1);
        }
        for id in &changes.deleted_messages {
            self.messages.remove(id);
        }
        for m in &changes.messages {
            self.messages.insert(m.id, m.clone());
        }
        for (id, reply) in &changes.message_replies {
            if let Some(m) = self.messages.get_mut(id) {
                m.reply = Some(*reply);
            }
        }
    }

    /// What the store would load at start: every swarm, every agent not stopped, and (here)
    /// every task, in creation order.
    pub fn load(&self) -> (Vec<Swarm>, Vec<Agent>, Vec<Task>) {
        let mut swarms: Vec<Swarm> = self.swarms.values().cloned().collect();
        swarms.sort_by_key(|s| (s.created_at, s.id));
        let mut agents: Vec<Agent> = self
            .agents
            .values()
            .filter(|a| a.removed_at.is_none())
            .cloned()
            .collect();
        agents.sort_by_key(|a| (a.registered_at, a.id));
        let mut tasks: Vec<Task> = self.tasks.values().cloned().collect();
        tasks.sort_by_key(|t| (t.created_at, t.id));
        (swarms, agents, tasks)
    }

    /// What the store gives a coordinator at start: every row a fleet is rebuilt from.
    pub fn stored(&self) -> StoredState {
        let (swarms, agents, tasks) = self.load();
        let mut pools: Vec<Pool> = self.pools.values().cloned().collect();
        pools.sort_by(|a, b| (a.swarm_id, &a.name).cmp(&(b.swarm_id, &b.name)));
        let mut messages: Vec<Message> = self
            .messages
            .values()
            .filter(|m| !m.status.is_final())
            .cloned()
            .collect();
        messages.sort_by_key(|m| (m.seq, m.id));
        let mut awaiting_requests: Vec<Message> = self
            .messages
            .values()
            .filter(|m| m.reply == Some(ReplyState::Awaiting))
            .cloned()
            .collect();
        awaiting_requests.sort_by_key(|m| (m.seq, m.id));
        StoredState {
            swarms,
            pools,
            agents,
            tasks,
            next_event_seq: self.next_event_seq,
            messages,
            awaiting_requests,
        }
    }

    /// What the store gives a coordinator taking these swarms over: their rows only.
    pub fn stored_for(&self, swarms: &[SwarmId]) -> StoredState {
        let mut s = self.stored();
        s.swarms.retain(|x| swarms.contains(&x.id));
        s.pools.retain(|x| swarms.contains(&x.swarm_id));
        s.agents.retain(|x| swarms.contains(&x.swarm_id));
        s.tasks.retain(|x| swarms.contains(&x.swarm_id));
        s.messages.retain(|x| swarms.contains(&x.swarm_id));
        s.awaiting_requests.retain(|x| swarms.contains(&x.swarm_id));
        s
    }

    /// Rebuilds a fleet from these rows, as a restarted coordinator would.
    pub fn restore(&self, limits: FleetLimits, now: Timestamp) -> Fleet {
        Fleet::restore(limits, self.stored(), now)
    }

    /// What a driver passes to `submit_tasks` for tasks and keys the fleet no longer holds.
    pub fn known_for(&self, fleet: &Fleet, swarm: &str, specs: &[TaskSpec]) -> KnownTasks {
        let (ids, keys) = fleet.submission_lookups(swarm, specs);
        let swarm_id = fleet.resolve_swarm(swarm).ok();
        let mut known = KnownTasks::default();
        for id in ids {
            if let Some(t) = self.tasks.get(&id) {
                known.statuses.insert(id, t.status());
            }
        }
        if let Some(swarm_id) = swarm_id {
            for key in keys {
                if let Some(id) = self.keys.get(&(swarm_id, key.clone())) {
                    let status = self.tasks[id].status();
                    known.idempotency.insert(key, (*id, status));
                }
            }
        }
        known
    }
}

/// A fleet with a fake clock, driven one command at a time.
///
/// After every command it takes the changes and effects, checks the fleet's invariants, checks
/// that event seqs continue without a gap, and applies the changes to a [`MemStore`].
pub struct Harness {
    pub fleet: Fleet,
    pub limits: FleetLimits,
    pub now: Timestamp,
    pub swarm: String,
    pub swarm_id: SwarmId,
    pub store: MemStore,
    /// Every event so far, in order.
    pub events: Vec<Event>,
    /// Effects of the last command.
    pub effects: Vec<Effect>,
    /// Changes of the last command.
    pub last: Changes,
    next_id: u128,
}

impl Harness {
    /// A fleet with a `default` swarm using the default configuration.
    pub fn new() -> Self {
        Self::with(FleetLimits::default(), SwarmConfig::default())
    }

    /// A fleet with the given limits and a swarm named `work` with the given configuration.
    pub fn with(limits: FleetLimits, config: SwarmConfig) -> Self {
        let mut h = Harness {
            fleet: Fleet::new(limits.clone()),
            limits,
            now: at(0),
            swarm: "work".to_owned(),
            swarm_id: SwarmId(Uuid::nil()),
            store: MemStore::new(),
            events: Vec::new(),
            effects: Vec::new(),
            last: Changes::default(),
            next_id: 0,
        };
        let default_id = SwarmId(h.uuid());
        assert!(h.fleet.ensure_default_swarm(default_id, h.now));
        let id = SwarmId(h.uuid());
        let spec = SwarmSpec {
            name: "work".to_owned(),
            config,
            ..SwarmSpec::default()
        };
        h.fleet.create_swarm(id, spec, h.now).expect("create swarm");
        h.swarm_id = id;
        h.settle();
        h
    }

    /// A fresh, deterministic id.
    pub fn uuid(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | self.next_id)
    }

    /// Takes changes and effects, checks them, and persists them.
    pub fn settle(&mut self) -> &Changes {
        if let Err(e) = self.fleet.check_invariants() {
            panic!("invariant broken: {e}");
        }
        let changes = self.fleet.take_changes();
        let mut expected = self.store.next_event_seq;
        for e in &changes.events {
            assert_eq!(e.seq, expected, "event seqs must increase by one: {:?}", e);
            expected += 1;
        }
        assert_eq!(
            self.fleet.next_event_seq(),
            expected,
            "next_event_seq follows the last event"
        );
        self.store.apply(&changes);
        self.events.extend(changes.events.iter().cloned());
        self.effects = self.fleet.take_effects();
        self.last = changes;
        &self.last
    }

    /// Runs a command that must be refused, and checks that it changed nothing.
    pub fn refused<T: std::fmt::Debug>(&mut self, result: Result<T, CoreError>) -> CoreError {
        let err = result.expect_err("the command should have been refused");
        let changes = self.fleet.take_changes();
        assert!(
            changes.is_empty(),
            "a refused command must change nothing, got {changes:?}"
        );
        assert!(
            self.fleet.take_effects().is_empty(),
            "a refused command has no effects"
        );
        self.fleet
            .check_invariants()
            .expect("invariants after a refusal");
        err
    }

    /// Moves the clock forward and fires the timers that are due.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.fleet.tick(self.now);
        self.settle();
    }

    /// Moves the clock to an instant (not backwards) and ticks.
    pub fn advance_to(&mut self, to: Timestamp) {
        assert!(to >= self.now, "the clock never goes back");
        self.now = to;
        self.fleet.tick(self.now);
        self.settle();
    }

    /// Registers an agent with these capabilities and slots.
    pub fn agent(&mut self, name: &str, caps: &[&str], max_concurrent: u32) -> AgentId {
        let id = AgentId(self.uuid());
        let spec = AgentSpec {
            name: Some(name.to_owned()),
            capabilities: strings(caps),
            max_concurrent_tasks: max_concurrent,
            ..AgentSpec::default()
        };
        let swarm = self.swarm.clone();
        self.fleet
            .register_agent(&swarm, id, spec, self.now)
            .expect("register agent");
        self.settle();
        id
    }

    /// Tries to submit a batch, filling in lookups from the store.
    pub fn try_submit(&mut self, specs: Vec<TaskSpec>) -> Result<Vec<Submission>, CoreError> {
        let ids: Vec<TaskId> = specs.iter().map(|_| TaskId(self.uuid())).collect();
        let swarm = self.swarm.clone();
        let known = self.store.known_for(&self.fleet, &swarm, &specs);
        let r = self
            .fleet
            .submit_tasks(&swarm, specs, &ids, &known, self.now);
        if r.is_ok() {
            self.settle();
        }
        r
    }

    /// Submits a batch that must be accepted.
    pub fn submit_all(&mut self, specs: Vec<TaskSpec>) -> Vec<TaskId> {
        let r = self.try_submit(specs).expect("submit");
        r.into_iter().map(|s| s.task).collect()
    }

    /// Submits one task that must be accepted.
    pub fn submit(&mut self, spec: TaskSpec) -> TaskId {
        self.submit_all(vec![spec])[0]
    }

    /// The agent's next task, if any.
    pub fn take(&mut self, agent: AgentId) -> Option<Task> {
        let t = self.fleet.take_task(agent, self.now).expect("take_task");
        self.settle();
        t
    }

    /// Completes a task's attempt.
    pub fn complete(
        &mut self,
        agent: AgentId,
        task: TaskId,
        attempt: u32,
    ) -> Result<Task, CoreError> {
        let r = self
            .fleet
            .complete_task(agent, task, done(attempt), self.now)
            .cloned();
        self.after(r)
    }

    /// Fails a task's attempt.
    pub fn fail(
        &mut self,
        agent: AgentId,
        task: TaskId,
        attempt: u32,
        retryable: bool,
    ) -> Result<Task, CoreError> {
        let r = self
            .fleet
            .fail_task(agent, task, failed(attempt, retryable), self.now)
            .cloned();
        self.after(r)
    }

    /// Cancels a task.
    pub fn cancel(&mut self, task: TaskId) -> Result<Task, CoreError> {
        let r = self
            .fleet
            .cancel_task(task, Some("not needed".to_owned()), self.now)
            .cloned();
        self.after(r)
    }

    /// Retries a task.
    pub fn retry(&mut self, task: TaskId, max_attempts: Option<u32>) -> Result<Task, CoreError> {
        let stored = match self.fleet.task(task) {
            Some(_) => None,
            None => self.store.tasks.get(&task).cloned(),
        };
        let r = self
            .fleet
            .retry_task(task, max_attempts, stored, self.now)
            .cloned();
        self.after(r)
    }

    /// Heartbeats.
    pub fn heartbeat(&mut self, agent: AgentId) -> Result<AgentStatus, CoreError> {
        let r = self
            .fleet
            .heartbeat(agent, Heartbeat::default(), self.now)
            .map(|ack| ack.status);
        self.after(r)
    }

    /// Settles after a command that was accepted, or checks that a refusal changed nothing.
    pub fn after<T: std::fmt::Debug>(&mut self, r: Result<T, CoreError>) -> Result<T, CoreError> {
        match r {
            Ok(v) => {
                self.settle();
                Ok(v)
            }
            Err(e) => Err(self.refused(Err::<T, _>(e))),
        }
    }

    /// A task as the fleet holds it (it must be in memory).
    pub fn task(&self, id: TaskId) -> &Task {
        self.fleet
            .task(id)
            .unwrap_or_else(|| panic!("task {id} is not in memory"))
    }

    /// A task's status.
    pub fn status(&self, id: TaskId) -> TaskStatus {
        self.task(id).status()
    }

    /// An agent's status.
    pub fn agent_status(&self, id: AgentId) -> AgentStatus {
        self.fleet.agent(id).expect("agent registered").status
    }

    /// The kinds of the events about a task, in order.
    pub fn task_events(&self, id: TaskId) -> Vec<EventKind> {
        self.events
            .iter()
            .filter(|e| e.task_id == Some(id))
            .map(|e| e.kind)
            .collect()
    }

    /// How many events of this kind were emitted.
    pub fn count(&self, kind: EventKind) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }

    /// Replaces the fleet by one restored from the store at the current instant.
    pub fn restart(&mut self) {
        self.fleet = self.store.restore(self.limits.clone(), self.now);
        self.settle();
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
