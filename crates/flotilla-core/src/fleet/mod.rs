//! The fleet: every swarm, agent and unfinished task, and the rules that move them.
//!
//! [`Fleet`] is a state machine. Its command methods (in [`swarms`], [`agents`], [`tasks`] and
//! [`timers`]) take the current instant and either refuse with a [`CoreError`], changing
//! nothing, or apply the change and record what the driver must persist
//! ([`Fleet::take_changes`]) and do ([`Fleet::take_effects`]).
//!
//! A fleet holds the swarms its coordinator owns: [`Fleet::restore`] and [`Fleet::adopt`] load
//! stored ones, [`Fleet::release_swarm`] lets one go (module `adopt`).
//!
//! Invariants kept by the single transition function [`Fleet::transition`]:
//! - a task is in its swarm's ready queue exactly when it is `queued` without `run_after`;
//! - a task is in its agent's `current_tasks` exactly when it is `assigned` or `running` there;
//! - the per-swarm counts of agents by status and of unfinished tasks by status are exact.

mod adopt;
mod agents;
mod checkpoints;
mod delegation;
mod dispatch;
mod health;
mod hosts;
mod managed;
mod messages;
mod metrics;
mod resources;
mod scaling;
mod swarms;
mod tasks;
mod timers;
mod topology;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

pub use managed::PoolChange;
pub use resources::ManagedView;
pub use scaling::ScaleTarget;
pub use tasks::{KnownTasks, Submission};

use crate::agent::{Agent, AgentStatus};
use crate::api::{ActiveTaskCounts, AgentCounts};
use crate::changes::{Changes, Effect};
use crate::error::CoreError;
use crate::event::{Event, EventKind};
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::pool::Pool;
use crate::queue::{LocalQueue, QueueSlot, ReadyQueue};
use crate::swarm::{Swarm, SwarmStatus};
use crate::task::{Task, TaskState};
use crate::time::Timestamp;
use timers::{Timer, Timers};

/// What the store gives back to rebuild the fleet after a restart ([`Fleet::restore`]), or to
/// load the swarms a coordinator takes over ([`Fleet::adopt`]): then only their rows matter.
#[derive(Clone, Debug, Default)]
pub struct StoredState {
    /// Every swarm (to adopt).
    pub swarms: Vec<Swarm>,
    /// Every pool.
    pub pools: Vec<Pool>,
    /// Agents not removed.
    pub agents: Vec<Agent>,
    /// Unfinished tasks and the most recently finished ones.
    pub tasks: Vec<Task>,
    /// The sequence number of the next event.
    pub next_event_seq: u64,
    /// Messages not yet acknowledged (pending or delivered).
    pub messages: Vec<crate::message::Message>,
    /// Requests still waiting for a response (whatever their delivery status).
    pub awaiting_requests: Vec<crate::message::Message>,
}

/// Limits the fleet enforces on what it accepts and keeps.
#[derive(Clone, Debug)]
pub struct FleetLimits {
    /// Largest task payload or result, in bytes of JSON text.
    pub max_payload_bytes: usize,
    /// Most tasks in one batch submission.
    pub max_batch: usize,
    /// Finished tasks kept in memory (older ones are read from the store).
    pub retain_terminal: usize,
    /// A finished task stays in memory at least this long, whatever `retain_terminal` says.
    pub retain_terminal_for: Duration,
    /// How often an agent's state is persisted when only heartbeats change it.
    pub heartbeat_persist_interval: Duration,
    /// Metrics: gauge sampling, retention, heartbeat history.
    pub metrics: crate::metrics::MetricsConfig,
    /// Unfinished tasks (blocked, queued, assigned, running) the fleet holds at most; a
    /// submission that would go past it is refused whole, so a flood of submissions meets a
    /// clear error instead of exhausting memory.
    pub max_unfinished_tasks: usize,
}

impl Default for FleetLimits {
    fn default() -> Self {
        FleetLimits {
            max_payload_bytes: 1024 * 1024,
            max_batch: 10_000,
            retain_terminal: 10_000,
            retain_terminal_for: Duration::from_secs(60),
            heartbeat_persist_interval: Duration::from_secs(30),
            metrics: Default::default(),
            max_unfinished_tasks: 1_000_000,
        }
    }
}

#[derive(Debug)]
struct SwarmEntry {
    swarm: Swarm,
    queue: ReadyQueue,
    /// Agents with a poll open and a free slot, in the order they started waiting.
    waiting: BTreeMap<u64, AgentId>,
    agents: HashSet<AgentId>,
    pools: BTreeMap<String, Pool>,
    agent_counts: [u64; AgentStatus::ALL.len()],
    task_counts: ActiveTaskCounts,
    dirty: bool,
    /// Agents whose local queue is not empty.
    holders: BTreeSet<AgentId>,
    /// Tasks in its agents' local queues.
    local_len: usize,
    /// Affinity key → the agent that last got a task with it, and when (a placement number).
    affinity: HashMap<String, (AgentId, u64)>,
    /// Its topology's graph, the ring's token, ordered tasks, gossip.
    topo: topology::SwarmTopology,
}

#[derive(Debug)]
struct AgentEntry {
    agent: Agent,
    /// Its key in its swarm's `waiting` map while it waits for a task with a free slot.
    wait_seq: Option<u64>,
    /// It has a poll open (it may be full: it waits again when a slot frees).
    polling: bool,
    lease_timer_armed: bool,
    persisted_heartbeat_at: Timestamp,
    dirty: bool,
    /// Tasks placed ahead on it (prefetched, or waiting for it by affinity).
    local: LocalQueue,
    /// When it last got a task (a placement number), for turns.
    placed_seq: u64,
    /// Its current weight in smooth weighted round robin (the `weighted` strategy).
    swrr: f64,
}

/// Where a ready task waits when it is in an agent's local queue.
#[derive(Debug)]
struct LocalPlace {
    agent: AgentId,
    slot: QueueSlot,
    /// Placed by affinity: only this agent takes it until then.
    pinned_until: Option<Timestamp>,
}

#[derive(Debug)]
struct TaskEntry {
    task: Task,
    /// Its place in its swarm's ready queue.
    slot: Option<QueueSlot>,
    /// Its place in an agent's local queue (then `slot` is `None`).
    local: Option<LocalPlace>,
    /// Blocked tasks waiting on this one.
    dependents: Vec<TaskId>,
    /// Dependencies not yet finished.
    unmet: u32,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Outbox {
    events: Vec<Event>,
    swarms: Vec<SwarmId>,
    agents: Vec<AgentId>,
    pools: Vec<(SwarmId, String)>,
    deleted_pools: Vec<(SwarmId, String)>,
    tasks: Vec<TaskId>,
    removed_agents: Vec<Agent>,
    deleted_swarms: Vec<SwarmId>,
    effects: Vec<Effect>,
    dispatch: Vec<SwarmId>,
    checkpoints: Vec<crate::checkpoint::Checkpoint>,
    deleted_checkpoints: Vec<crate::ids::CheckpointId>,
    agent_states: Vec<(AgentId, crate::json::Json, Timestamp)>,
    discards: Vec<crate::json::Json>,
    /// Swarms whose topology must be rebuilt.
    topology: Vec<SwarmId>,
    /// Messages in flight that changed (a message no longer in flight by then is skipped: its
    /// final row is in `finished_messages`).
    messages: Vec<crate::ids::MessageId>,
    /// The same, as a set.
    marked_messages: HashSet<crate::ids::MessageId>,
    /// Inboxes already woken by these effects.
    woken_inboxes: HashSet<AgentId>,
    /// Messages acknowledged or dead (no longer in memory).
    finished_messages: Vec<crate::message::Message>,
    /// Messages cleared from inboxes.
    deleted_messages: Vec<crate::ids::MessageId>,
    /// Requests answered or timed out.
    message_replies: Vec<(crate::ids::MessageId, crate::message::ReplyState)>,
}

/// The state of the whole fleet. See the module documentation.
#[derive(Debug)]
pub struct Fleet {
    limits: FleetLimits,
    swarms: HashMap<SwarmId, SwarmEntry>,
    swarm_names: HashMap<String, SwarmId>,
    agents: HashMap<AgentId, AgentEntry>,
    tasks: HashMap<TaskId, TaskEntry>,
    idempotency: HashMap<(SwarmId, String), TaskId>,
    timers: Timers,
    /// Finished tasks in the order they finished, for eviction.
    terminal: VecDeque<(Timestamp, TaskId)>,
    queue_seq: u64,
    wait_seq: u64,
    place_seq: u64,
    next_event_seq: u64,
    /// Tasks below this priority are not placed on agents.
    priority_floor: Option<u8>,
    out: Outbox,
    /// Pools' recent queue waits and the agents draining out of pools.
    scaling: scaling::ScalingState,
    /// Messages in flight between agents.
    mail: messages::Mail,
    /// Metrics of the work done, in time buckets.
    metrics: crate::metrics::Recorder,
}

/// Which count of [`ActiveTaskCounts`] a state falls in.
fn count_of<'a>(counts: &'a mut ActiveTaskCounts, state: &TaskState) -> Option<&'a mut u64> {
    match state {
        TaskState::Blocked => Some(&mut counts.blocked),
        TaskState::Queued {
            run_after: None, ..
        } => Some(&mut counts.queued),
        TaskState::Queued {
            run_after: Some(_), ..
        } => Some(&mut counts.delayed),
        TaskState::Assigned { .. } => Some(&mut counts.assigned),
        TaskState::Running { .. } => Some(&mut counts.running),
        _ => None,
    }
}

fn holder(state: &TaskState) -> Option<AgentId> {
    match state {
        TaskState::Assigned { agent_id, .. } | TaskState::Running { agent_id, .. } => {
            Some(*agent_id)
        }
        _ => None,
    }
}

fn status_index(s: AgentStatus) -> usize {
    AgentStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new(FleetLimits::default())
    }
}

impl Fleet {
    /// An empty fleet.
    pub fn new(limits: FleetLimits) -> Self {
        Fleet {
            metrics: crate::metrics::Recorder::new(limits.metrics.clone()),
            limits,
            swarms: HashMap::new(),
            swarm_names: HashMap::new(),
            agents: HashMap::new(),
            tasks: HashMap::new(),
            idempotency: HashMap::new(),
            timers: Timers::default(),
            terminal: VecDeque::new(),
            queue_seq: 0,
            wait_seq: 0,
            place_seq: 0,
            next_event_seq: 1,
            priority_floor: None,
            out: Outbox::default(),
            scaling: Default::default(),
            mail: Default::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &FleetLimits {
        &self.limits
    }

    // ----- bookkeeping shared by all commands -----

    fn insert_swarm(&mut self, swarm: Swarm) {
        self.swarm_names.insert(swarm.name.clone(), swarm.id);
        self.swarms.insert(
            swarm.id,
            SwarmEntry {
                swarm,
                queue: ReadyQueue::new(),
                waiting: BTreeMap::new(),
                agents: HashSet::new(),
                pools: BTreeMap::new(),
                agent_counts: [0; AgentStatus::ALL.len()],
                task_counts: ActiveTaskCounts::default(),
                dirty: false,
                holders: BTreeSet::new(),
                local_len: 0,
                affinity: HashMap::new(),
                topo: Default::default(),
            },
        );
    }

    fn emit(
        &mut self,
        now: Timestamp,
        kind: EventKind,
        swarm_id: SwarmId,
        agent_id: Option<AgentId>,
        task_id: Option<TaskId>,
        detail: String,
    ) {
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        self.out.events.push(Event {
            seq,
            at: now,
            kind,
            swarm_id,
            agent_id,
            task_id,
            detail,
        });
        self.observe_event(now, kind, swarm_id, agent_id, task_id);
    }

    fn mark_swarm(&mut self, id: SwarmId) {
        if let Some(e) = self.swarms.get_mut(&id)
            && !e.dirty
        {
            e.dirty = true;
            self.out.swarms.push(id);
        }
    }

    fn mark_pool(&mut self, swarm: SwarmId, name: &str) {
        if !self.out.pools.iter().any(|(s, n)| *s == swarm && n == name) {
            self.out.pools.push((swarm, name.to_owned()));
        }
    }

    fn mark_agent(&mut self, id: AgentId) {
        if let Some(e) = self.agents.get_mut(&id)
            && !e.dirty
        {
            e.dirty = true;
            self.out.agents.push(id);
        }
    }

    fn mark_task(&mut self, id: TaskId) {
        if let Some(e) = self.tasks.get_mut(&id)
            && !e.dirty
        {
            e.dirty = true;
            self.out.tasks.push(id);
        }
    }

    /// Resolves a swarm's id or name.
    pub fn resolve_swarm(&self, reference: &str) -> Result<SwarmId, CoreError> {
        if let Ok(uuid) = uuid::Uuid::parse_str(reference) {
            let id = SwarmId(uuid);
            if self.swarms.contains_key(&id) {
                return Ok(id);
            }
        } else if let Some(id) = self.swarm_names.get(reference) {
            return Ok(*id);
        }
        Err(CoreError::not_found(format!(
            "swarm {reference:?} not found (list swarms with `flotilla swarm list`)"
        )))
    }

    /// Puts a ready task in its swarm's queue, or in the local queue of the agent it waits for
    /// by affinity.
    fn enqueue(&mut self, id: TaskId, now: Timestamp) {
        self.queue_seq += 1;
        let seq = self.queue_seq;
        self.tasks
            .get_mut(&id)
            .expect("task to enqueue")
            .task
            .queue_seq = seq;
        if !self.place_by_affinity(id, now) {
            self.enqueue_at(id, seq);
        }
    }

    /// Puts a ready task in its swarm's queue at a given place (its stored place, on restore).
    fn enqueue_at(&mut self, id: TaskId, seq: u64) {
        let entry = self.tasks.get_mut(&id).expect("task to enqueue");
        let swarm = self
            .swarms
            .get_mut(&entry.task.swarm_id)
            .expect("task's swarm");
        let lane = if entry.task.ordered {
            crate::queue::Lane::Ordered
        } else if let Some(by) = entry.task.delegated_by {
            crate::queue::Lane::Delegated(by)
        } else {
            crate::queue::Lane::Open
        };
        entry.slot = Some(swarm.queue.push_in(
            id,
            entry.task.priority,
            seq,
            &entry.task.required_capabilities,
            lane,
        ));
        let prefetching = swarm.swarm.config.prefetch > 0;
        // An ordered task may start the ring token's timeout (a dispatch round arms it).
        let ordered = lane == crate::queue::Lane::Ordered;
        if (prefetching || ordered || !swarm.waiting.is_empty())
            && !self.out.dispatch.contains(&entry.task.swarm_id)
        {
            self.out.dispatch.push(entry.task.swarm_id);
        }
    }

    /// Records that an agent holds a task.
    fn hold(&mut self, agent: AgentId, task: TaskId) {
        if let Some(a) = self.agents.get_mut(&agent)
            && !a.agent.current_tasks.contains(&task)
        {
            a.agent.current_tasks.push(task);
        }
    }

    /// Moves a task to a new state, keeping every index in step. The only place task states
    /// change.
    fn transition(&mut self, id: TaskId, state: TaskState, now: Timestamp) {
        self.observe_transition(id, &state, now);
        self.unplace_local(id);
        let entry = self.tasks.get_mut(&id).expect("task in transition");
        // Timers watching the state it leaves are of no more use.
        match entry.task.state {
            TaskState::Running { timeout_at, .. } => {
                self.timers
                    .remove(timeout_at, Timer::TaskTimeout(id, entry.task.attempts));
            }
            TaskState::Queued {
                run_after: Some(at),
                ..
            } => self.timers.remove(at, Timer::TaskRetry(id)),
            _ => {}
        }
        if state.status().is_terminal()
            && let Some(deadline) = entry.task.deadline
        {
            self.timers.remove(deadline, Timer::TaskDeadline(id));
        }
        let old_holder = holder(&entry.task.state);
        let new_holder = holder(&state);
        let queued_at = match entry.task.state {
            TaskState::Queued { queued_at, .. } => Some(queued_at),
            _ => None,
        };
        let swarm_id = entry.task.swarm_id;
        let swarm = self.swarms.get_mut(&swarm_id).expect("task's swarm");
        if let Some(slot) = entry.slot.take() {
            swarm.queue.remove(slot);
        }
        if let Some(c) = count_of(&mut swarm.task_counts, &entry.task.state) {
            *c -= 1;
        }
        if let Some(c) = count_of(&mut swarm.task_counts, &state) {
            *c += 1;
        }
        let ready = matches!(
            state,
            TaskState::Queued {
                run_after: None,
                ..
            }
        );
        let terminal = state.status().is_terminal();
        if terminal && entry.task.ordered {
            // Its turn is over: the next ordered task may go.
            let key = (entry.task.created_at, id);
            swarm.topo.ordered.remove(&key);
        }
        if terminal {
            entry.task.progress = None;
            self.terminal.push_back((now, id));
            self.out.effects.push(Effect::TaskFinished(id));
        }
        entry.task.state = state;
        entry.task.updated_at = now;
        let ordered = entry.task.ordered;
        self.mark_task(id);
        if ready {
            self.enqueue(id, now);
        }
        if old_holder != new_holder {
            if let Some(a) = old_holder
                && let Some(agent) = self.agents.get_mut(&a)
            {
                agent.agent.current_tasks.retain(|t| *t != id);
                // A slot freed: an agent with a poll open waits for work again.
                self.rejoin_if_polling(a);
                self.refresh_agent_status(a);
                self.task_left(a, id, now);
            }
            if let Some(a) = new_holder {
                self.hold(a, id);
                self.refresh_agent_status(a);
                // Autoscaling's wait metric.
                if let Some(queued_at) = queued_at {
                    self.note_wait(a, queued_at, now);
                }
            }
            if ordered {
                self.ordered_attempt(id, new_holder.is_some(), now);
            }
        }
    }

    /// Sets an agent's status, keeping its swarm's counts and status in step.
    fn set_agent_status(&mut self, id: AgentId, status: AgentStatus, now: Timestamp) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        let old = entry.agent.status;
        if old == status {
            return;
        }
        entry.agent.status = status;
        let swarm_id = entry.agent.swarm_id;
        self.observe_status(id, status, now);
        if let Some(s) = self.swarms.get_mut(&swarm_id) {
            s.agent_counts[status_index(old)] -= 1;
            s.agent_counts[status_index(status)] += 1;
        }
        self.mark_agent(id);
        let alive = |st: AgentStatus| {
            matches!(
                st,
                AgentStatus::Idle | AgentStatus::Busy | AgentStatus::Paused
            )
        };
        let holds_token = self
            .swarms
            .get(&swarm_id)
            .is_some_and(|s| s.topo.token == Some(id));
        if alive(old) != alive(status) || holds_token {
            self.note_member(swarm_id, id);
        }
        self.refresh_swarm_status(swarm_id, now);
        self.rejoin_if_polling(id);
        self.recheck_local(id);
    }

    /// An agent with tasks in its local queue may have left service: a dispatch round of its
    /// swarm gives them back (or to it).
    fn recheck_local(&mut self, id: AgentId) {
        if let Some(e) = self.agents.get(&id)
            && !e.local.is_empty()
            && !self.out.dispatch.contains(&e.agent.swarm_id)
        {
            self.out.dispatch.push(e.agent.swarm_id);
        }
    }

    /// An agent with a poll open that is in service (idle or busy, not being stopped) and has
    /// a free slot waits for work: its poll may have come while it was full, paused or not yet
    /// started.
    fn rejoin_if_polling(&mut self, id: AgentId) {
        let Some(entry) = self.agents.get(&id) else {
            return;
        };
        let a = &entry.agent;
        let free = dispatch::in_service(a) && a.current_tasks.len() < health::capacity(a);
        if entry.polling && entry.wait_seq.is_none() && free {
            let swarm_id = a.swarm_id;
            self.start_waiting(id);
            if !self.out.dispatch.contains(&swarm_id) {
                self.out.dispatch.push(swarm_id);
            }
        }
    }

    /// Idle or busy, by whether the agent holds tasks; other statuses are left alone.
    ///
    /// This does not mark the agent for persisting: idle/busy and `current_tasks` follow from
    /// the tasks (and are recomputed by [`Fleet::restore`]), and writing an agent row on every
    /// task transition doubled the store's work. Its counters are persisted with the next
    /// status change or the periodic heartbeat persist.
    fn refresh_agent_status(&mut self, id: AgentId) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        let want = match entry.agent.status {
            AgentStatus::Idle | AgentStatus::Busy => {
                if entry.agent.current_tasks.is_empty() {
                    AgentStatus::Idle
                } else {
                    AgentStatus::Busy
                }
            }
            other => other,
        };
        let old = entry.agent.status;
        if want != old {
            entry.agent.status = want;
            if let Some(s) = self.swarms.get_mut(&entry.agent.swarm_id) {
                s.agent_counts[status_index(old)] -= 1;
                s.agent_counts[status_index(want)] += 1;
            }
        }
    }

    /// Derives a swarm's status from its agents and records a change.
    fn refresh_swarm_status(&mut self, id: SwarmId, now: Timestamp) {
        let Some(entry) = self.swarms.get_mut(&id) else {
            return;
        };
        if entry.swarm.status == SwarmStatus::Stopping {
            return;
        }
        let count = |s: AgentStatus| entry.agent_counts[status_index(s)];
        let total = entry.agents.len() as u64;
        let healthy =
            count(AgentStatus::Idle) + count(AgentStatus::Busy) + count(AgentStatus::Paused);
        let status = if total == 0 {
            SwarmStatus::Inactive
        } else if healthy == 0
            && count(AgentStatus::Pending) + count(AgentStatus::Starting) == total
        {
            SwarmStatus::Starting
        } else if count(AgentStatus::Unhealthy) + count(AgentStatus::Failed) > 0
            || healthy < u64::from(entry.swarm.config.min_agents)
            // No leader elected among agents that could lead (an election is due while the
            // topology is stale).
            || (healthy > 0 && !entry.topo.stale && entry.swarm.leader_agent_id.is_none())
        {
            SwarmStatus::Degraded
        } else {
            SwarmStatus::Active
        };
        if status != entry.swarm.status {
            let from = entry.swarm.status;
            entry.swarm.status = status;
            entry.swarm.updated_at = now;
            self.mark_swarm(id);
            self.emit(
                now,
                EventKind::SwarmStatusChanged,
                id,
                None,
                None,
                format!("{} -> {}", from.as_str(), status.as_str()),
            );
        }
    }

    fn start_waiting(&mut self, id: AgentId) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        if entry.wait_seq.is_some() {
            return;
        }
        self.wait_seq += 1;
        entry.wait_seq = Some(self.wait_seq);
        if let Some(s) = self.swarms.get_mut(&entry.agent.swarm_id) {
            s.waiting.insert(self.wait_seq, id);
        }
    }

    fn stop_waiting(&mut self, id: AgentId) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        if let Some(seq) = entry.wait_seq.take()
            && let Some(s) = self.swarms.get_mut(&entry.agent.swarm_id)
        {
            s.waiting.remove(&seq);
        }
    }

    /// Drops finished tasks from memory beyond the retention limits (they stay in the store).
    fn evict(&mut self, now: Timestamp) {
        while self.terminal.len() > self.limits.retain_terminal {
            let Some(&(at, id)) = self.terminal.front() else {
                break;
            };
            if now.since(at) < self.limits.retain_terminal_for {
                break;
            }
            self.terminal.pop_front();
            let evictable = self.tasks.get(&id).is_some_and(|e| {
                !e.dirty && e.task.status().is_terminal() && e.task.updated_at <= at
            });
            if evictable
                && let Some(e) = self.tasks.remove(&id)
                && let Some(key) = e.task.idempotency_key
            {
                self.idempotency.remove(&(e.task.swarm_id, key));
            }
        }
    }

    // ----- what the driver takes after each command -----

    /// Takes the rows and events to persist since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let out = &mut self.out;
        let mut changes = Changes {
            deleted_messages: std::mem::take(&mut out.deleted_messages),
            message_replies: std::mem::take(&mut out.message_replies),
            messages: std::mem::take(&mut out.finished_messages),
            deleted_swarms: std::mem::take(&mut out.deleted_swarms),
            events: std::mem::take(&mut out.events),
            checkpoints: std::mem::take(&mut out.checkpoints),
            deleted_checkpoints: std::mem::take(&mut out.deleted_checkpoints),
            agent_states: std::mem::take(&mut out.agent_states),
            ..Changes::default()
        };
        if self.metrics.has_output() {
            (
                changes.metric_rows,
                changes.metric_prunes,
                changes.heartbeat_samples,
            ) = self.metrics.take();
        }
        for id in out.swarms.drain(..) {
            if let Some(e) = self.swarms.get_mut(&id) {
                e.dirty = false;
                changes.swarms.push(e.swarm.clone());
            }
        }
        for (swarm, name) in out.pools.drain(..) {
            if let Some(p) = self.swarms.get(&swarm).and_then(|s| s.pools.get(&name)) {
                changes.pools.push(p.clone());
            }
        }
        changes.deleted_pools = std::mem::take(&mut out.deleted_pools);
        changes.agents = std::mem::take(&mut out.removed_agents);
        for id in out.agents.drain(..) {
            if let Some(e) = self.agents.get_mut(&id) {
                e.dirty = false;
                e.persisted_heartbeat_at = e.agent.last_heartbeat_at;
                changes.agents.push(e.agent.clone());
            }
        }
        for id in out.tasks.drain(..) {
            if let Some(e) = self.tasks.get_mut(&id) {
                e.dirty = false;
                changes.tasks.push(e.task.clone());
            }
        }
        out.marked_messages.clear();
        for id in std::mem::take(&mut out.messages) {
            if let Some(m) = self.mail.live_message(id) {
                changes.messages.push(m.clone());
            }
        }
        if !changes.deleted_swarms.is_empty() {
            let gone: HashSet<SwarmId> = changes.deleted_swarms.iter().copied().collect();
            // Agent rows stay: the driver revokes the tokens of agents that stopped (the
            // store skips rows of a swarm deleted in the same batch).
            changes.pools.retain(|p| !gone.contains(&p.swarm_id));
            changes.tasks.retain(|t| !gone.contains(&t.swarm_id));
        }
        changes
    }

    /// Takes the workspace snapshots of checkpoints that went with their agent (removed), for
    /// the driver to discard once the changes are durable.
    pub fn take_discards(&mut self) -> Vec<crate::json::Json> {
        std::mem::take(&mut self.out.discards)
    }

    /// Takes the effects to carry out once the changes are durable.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.out.woken_inboxes.clear();
        std::mem::take(&mut self.out.effects)
    }

    /// The sequence number the next event will get.
    pub fn next_event_seq(&self) -> u64 {
        self.next_event_seq
    }

    // ----- queries -----

    /// A swarm by id or name.
    pub fn swarm(&self, reference: &str) -> Result<&Swarm, CoreError> {
        let id = self.resolve_swarm(reference)?;
        Ok(&self.swarms[&id].swarm)
    }

    /// A swarm by id.
    pub fn swarm_by_id(&self, id: SwarmId) -> Option<&Swarm> {
        self.swarms.get(&id).map(|e| &e.swarm)
    }

    /// A swarm with its live counts and its pools' metrics at `now`.
    pub fn swarm_view(&self, id: SwarmId, now: Timestamp) -> Option<crate::api::SwarmView> {
        let e = self.swarms.get(&id)?;
        Some(crate::api::SwarmView {
            swarm: e.swarm.clone(),
            agent_count: e.agents.len() as u64,
            queue_depth: e.task_counts.queued + e.task_counts.delayed,
            pools: self.pool_views(id, now),
        })
    }

    /// Every swarm with its live counts, by name.
    pub fn swarm_views(&self, now: Timestamp) -> Vec<crate::api::SwarmView> {
        let mut ids: Vec<(&String, &SwarmId)> = self.swarm_names.iter().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|(_, id)| self.swarm_view(*id, now))
            .collect()
    }

    /// An agent that is registered (not stopped).
    pub fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.agents.get(&id).map(|e| &e.agent)
    }

    /// The agents of a swarm, optionally of one status and type, by name.
    pub fn agents_of(
        &self,
        swarm: SwarmId,
        status: Option<AgentStatus>,
        agent_type: Option<&str>,
    ) -> Vec<Agent> {
        let Some(s) = self.swarms.get(&swarm) else {
            return Vec::new();
        };
        let mut list: Vec<Agent> = s
            .agents
            .iter()
            .filter_map(|id| self.agents.get(id))
            .map(|e| &e.agent)
            .filter(|a| status.is_none_or(|st| a.status == st))
            .filter(|a| agent_type.is_none_or(|t| a.agent_type == t))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        list
    }

    /// A task, if it is in memory (every unfinished task is; finished ones for a while).
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id).map(|e| &e.task)
    }

    /// How many tasks are in memory.
    pub fn tasks_in_memory(&self) -> usize {
        self.tasks.len()
    }

    /// Counts of a swarm's agents by status.
    fn agent_counts(entry: &SwarmEntry) -> AgentCounts {
        let mut counts = AgentCounts {
            total: entry.agents.len() as u64,
            ..AgentCounts::default()
        };
        for (i, n) in entry.agent_counts.iter().enumerate() {
            if *n > 0 {
                counts.by_status.insert(AgentStatus::ALL[i], *n);
            }
        }
        counts
    }

    /// A swarm's health: agents by status, unfinished tasks, queue depth and age.
    pub fn swarm_health(&self, id: SwarmId, now: Timestamp) -> Option<crate::api::SwarmHealth> {
        let e = self.swarms.get(&id)?;
        let oldest_queued_at =
            e.queue
                .oldest()
                .and_then(|t| match self.tasks.get(&t)?.task.state {
                    TaskState::Queued { queued_at, .. } => Some(queued_at),
                    _ => None,
                });
        Some(crate::api::SwarmHealth {
            swarm_id: id,
            name: e.swarm.name.clone(),
            status: e.swarm.status,
            agents: Self::agent_counts(e),
            tasks: e.task_counts.clone(),
            queue_depth: e.task_counts.queued + e.task_counts.delayed,
            oldest_queued_at,
            oldest_queued_age_ms: oldest_queued_at.map(|at| now.since(at).as_millis() as u64),
        })
    }

    /// Refuses `n` more unfinished tasks if the fleet would then hold more than
    /// [`FleetLimits::max_unfinished_tasks`].
    pub(crate) fn check_task_room(&self, n: usize) -> Result<(), CoreError> {
        let unfinished: u64 = self
            .swarms
            .values()
            .map(|e| {
                let c = &e.task_counts;
                c.blocked + c.queued + c.delayed + c.assigned + c.running
            })
            .sum();
        let max = self.limits.max_unfinished_tasks;
        if unfinished.saturating_add(n as u64) > max as u64 {
            return Err(CoreError::Full(format!(
                "the fleet holds {unfinished} unfinished tasks and takes at most {max}: \
                 retry when some have finished (flotilla serve --max-unfinished-tasks)"
            )));
        }
        Ok(())
    }

    /// Totals over every swarm: how many swarms, agents by status, unfinished tasks.
    pub fn totals(&self) -> (u64, AgentCounts, ActiveTaskCounts) {
        let mut agents = AgentCounts::default();
        let mut tasks = ActiveTaskCounts::default();
        for e in self.swarms.values() {
            let c = Self::agent_counts(e);
            agents.total += c.total;
            for (s, n) in c.by_status {
                *agents.by_status.entry(s).or_default() += n;
            }
            let t = &e.task_counts;
            tasks.blocked += t.blocked;
            tasks.queued += t.queued;
            tasks.delayed += t.delayed;
            tasks.assigned += t.assigned;
            tasks.running += t.running;
        }
        (self.swarms.len() as u64, agents, tasks)
    }

    /// Checks every internal index against the entities; for tests. Returns what is wrong.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut counts: HashMap<SwarmId, ActiveTaskCounts> = HashMap::new();
        let mut queued_ready = 0usize;
        for (id, e) in &self.tasks {
            let c = counts.entry(e.task.swarm_id).or_default();
            if let Some(n) = count_of(c, &e.task.state) {
                *n += 1;
            }
            let ready = matches!(
                e.task.state,
                TaskState::Queued {
                    run_after: None,
                    ..
                }
            );
            if ready != (e.slot.is_some() || e.local.is_some())
                || (e.slot.is_some() && e.local.is_some())
            {
                return Err(format!(
                    "task {id}: ready={ready} but slot={:?}, local={:?}",
                    e.slot, e.local
                ));
            }
            queued_ready += usize::from(ready);
            if let Some(a) = holder(&e.task.state) {
                let held = self
                    .agents
                    .get(&a)
                    .is_some_and(|ag| ag.agent.current_tasks.contains(id));
                if !held {
                    return Err(format!("task {id} is held by {a} which does not list it"));
                }
            }
        }
        for (id, e) in &self.agents {
            for t in &e.agent.current_tasks {
                let ok = self
                    .tasks
                    .get(t)
                    .is_some_and(|te| holder(&te.task.state) == Some(*id));
                if !ok {
                    return Err(format!("agent {id} lists task {t} which it does not hold"));
                }
            }
            if e.agent.current_tasks.len() > e.agent.max_concurrent_tasks as usize {
                return Err(format!("agent {id} holds more tasks than it may"));
            }
        }
        for s in self.swarms.values() {
            for a in s.waiting.values() {
                match self.agents.get(a) {
                    Some(e) if matches!(e.agent.status, AgentStatus::Idle | AgentStatus::Busy) => {}
                    Some(e) => {
                        return Err(format!(
                            "agent {a} waits for work while {}",
                            e.agent.status.as_str()
                        ));
                    }
                    None => return Err(format!("removed agent {a} is still waiting for work")),
                }
            }
        }
        let mut in_queues = 0;
        for (id, s) in &self.swarms {
            in_queues += s.queue.len();
            let expected = counts.remove(id).unwrap_or_default();
            if expected != s.task_counts {
                return Err(format!(
                    "swarm {id}: counts {:?} != actual {:?}",
                    s.task_counts, expected
                ));
            }
            let mut by_status = [0u64; AgentStatus::ALL.len()];
            for a in &s.agents {
                by_status[status_index(self.agents[a].agent.status)] += 1;
            }
            if by_status != s.agent_counts {
                return Err(format!("swarm {id}: agent counts disagree"));
            }
        }
        in_queues += self.check_local_queues()?;
        self.check_mail()?;
        if in_queues != queued_ready {
            return Err(format!(
                "{in_queues} tasks in queues but {queued_ready} ready"
            ));
        }
        Ok(())
    }
}
