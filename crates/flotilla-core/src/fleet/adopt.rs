//! Loading stored swarms into the fleet and letting them go: [`Fleet::restore`] after a restart,
//! [`Fleet::adopt`] when a coordinator takes a swarm over from another one, and
//! [`Fleet::release_swarm`] when it hands one over.
//!
//! A fleet holds only the swarms its coordinator owns. Restoring is adopting everything into an
//! empty fleet: one code path rebuilds the indexes (queues in their stored order, leases, links
//! of blocked tasks, timers, topologies, messages) for whatever it is given, and leaves the
//! swarms already held alone. Releasing is the opposite: the swarm and everything of it leave
//! memory as if they had never been loaded, while its rows stay in the store for the next owner.
//! Neither reads a clock nor makes an id; releasing records nothing at all.

use std::collections::HashSet;

use super::agents::needs_lease;
use super::{
    AgentEntry, Fleet, FleetLimits, Outbox, StoredState, TaskEntry, Timer, count_of, status_index,
};
use crate::agent::AgentStatus;
use crate::changes::Effect;
use crate::ids::{AgentId, MessageId, SwarmId, TaskId};
use crate::queue::LocalQueue;
use crate::task::{TaskState, TaskStatus};
use crate::time::Timestamp;

/// What a released swarm took out of memory, to recognise what still refers to it.
struct Released {
    swarm: SwarmId,
    agents: HashSet<AgentId>,
    tasks: HashSet<TaskId>,
    messages: HashSet<MessageId>,
}

impl Released {
    /// Whether a timer watches something of the released swarm.
    fn watches(&self, timer: &Timer) -> bool {
        match *timer {
            Timer::AgentLease(a) | Timer::BreakerHalfOpen(a) | Timer::AgentRestart(a) => {
                self.agents.contains(&a)
            }
            Timer::TaskTimeout(t, _)
            | Timer::TaskRetry(t)
            | Timer::TaskDeadline(t)
            | Timer::SlowTask(t, _)
            | Timer::NoProgress(t, _) => self.tasks.contains(&t),
            Timer::AssignExpiry(t, a, _) | Timer::LocalExpiry(t, a) => {
                self.tasks.contains(&t) || self.agents.contains(&a)
            }
            Timer::RingToken(s, _) | Timer::Gossip(s) => s == self.swarm,
            Timer::MessageAck(m, _)
            | Timer::MessageRetry(m)
            | Timer::MessageExpiry(m)
            | Timer::RequestTimeout(m) => self.messages.contains(&m),
        }
    }

    /// Whether an effect is about something of the released swarm.
    fn concerns(&self, effect: &Effect) -> bool {
        match *effect {
            Effect::WakeAgent(a)
            | Effect::StartAgent(a)
            | Effect::StopAgent(a, _)
            | Effect::PauseAgent(a)
            | Effect::ResumeAgent(a)
            | Effect::RestartAgent(a, _)
            | Effect::RollbackAgent(a, _)
            | Effect::CheckpointAgent(a, _) => self.agents.contains(&a),
            Effect::TaskFinished(t) => self.tasks.contains(&t),
            Effect::WakeInbox(s, a) => s == self.swarm || self.agents.contains(&a),
            Effect::RequestAnswered(m) => self.messages.contains(&m),
        }
    }
}

impl Outbox {
    /// Drops what is still to be persisted or done for a released swarm.
    fn forget(&mut self, r: &Released) {
        let Outbox {
            events,
            swarms,
            agents,
            pools,
            deleted_pools,
            tasks,
            removed_agents,
            deleted_swarms,
            effects,
            dispatch,
            checkpoints,
            deleted_checkpoints: _,
            agent_states,
            discards: _,
            topology,
            messages,
            marked_messages,
            woken_inboxes,
            finished_messages,
            deleted_messages: _,
            message_replies: _,
        } = self;
        events.retain(|e| e.swarm_id != r.swarm);
        swarms.retain(|s| *s != r.swarm);
        agents.retain(|a| !r.agents.contains(a));
        pools.retain(|(s, _)| *s != r.swarm);
        deleted_pools.retain(|(s, _)| *s != r.swarm);
        tasks.retain(|t| !r.tasks.contains(t));
        removed_agents.retain(|a| a.swarm_id != r.swarm);
        deleted_swarms.retain(|s| *s != r.swarm);
        effects.retain(|e| !r.concerns(e));
        dispatch.retain(|s| *s != r.swarm);
        checkpoints.retain(|c| c.swarm_id != r.swarm);
        agent_states.retain(|(a, _, _)| !r.agents.contains(a));
        topology.retain(|s| *s != r.swarm);
        messages.retain(|m| !r.messages.contains(m));
        marked_messages.retain(|m| !r.messages.contains(m));
        woken_inboxes.retain(|a| !r.agents.contains(a));
        finished_messages.retain(|m| m.swarm_id != r.swarm);
    }
}

impl Fleet {
    /// Rebuilds the fleet from stored state, as after a restart: [`Fleet::adopt`] of
    /// everything into an empty fleet.
    ///
    /// Agents get a fresh lease from `now` (they could not heartbeat while the coordinator was
    /// down); running tasks stay leased to their agents; queued tasks keep their order; blocked
    /// tasks are re-linked to their dependencies. Corrections made while restoring (a task
    /// whose agent is gone goes back to the queue) are recorded as changes to persist.
    pub fn restore(limits: FleetLimits, stored: StoredState, now: Timestamp) -> Fleet {
        let mut fleet = Fleet::new(limits);
        fleet.adopt(stored, now);
        fleet
    }

    /// Loads the stored state of swarms this fleet does not hold (their swarm, pools, agents,
    /// tasks, messages and awaiting requests), as [`Fleet::restore`] does for a whole fleet,
    /// and returns the ids of the swarms adopted, in the order given.
    ///
    /// Rows of a swarm the fleet already holds, of a swarm not among `stored.swarms`, and a
    /// swarm whose name another held swarm has (the store keeps names unique, so this means
    /// rows read at different times) are ignored: live state is never duplicated nor
    /// overwritten. What the fleet already held is left as it was, apart from
    /// `stored.next_event_seq` raising the next event seq (see [`Fleet::raise_event_seq`])
    /// and new places in the ready queues coming after every stored one.
    ///
    /// The adopted swarms' agents get a fresh lease from `now`; running tasks stay leased to
    /// their agents; queued tasks keep their stored places; blocked tasks are re-linked; tasks
    /// held by an agent no longer registered go back to the queue. Managed agents have no
    /// process known to this fleet: their held tasks go back to the queue without costing an
    /// attempt, and those meant to run become `pending` with a [`Effect::StartAgent`] (those
    /// draining out of their pool leave it). Corrections are recorded as changes and events to
    /// persist, and the starts as effects, like any command's.
    pub fn adopt(&mut self, stored: StoredState, now: Timestamp) -> Vec<SwarmId> {
        let StoredState {
            swarms,
            pools,
            agents,
            mut tasks,
            next_event_seq,
            messages,
            awaiting_requests,
        } = stored;
        self.raise_event_seq(next_event_seq);
        let mut adopted = Vec::new();
        for swarm in swarms {
            if self.swarms.contains_key(&swarm.id) || self.swarm_names.contains_key(&swarm.name) {
                continue;
            }
            adopted.push(swarm.id);
            self.insert_swarm(swarm);
        }
        let ours: HashSet<SwarmId> = adopted.iter().copied().collect();
        for pool in pools {
            if ours.contains(&pool.swarm_id)
                && let Some(s) = self.swarms.get_mut(&pool.swarm_id)
            {
                s.pools.insert(pool.name.clone(), pool);
            }
        }
        let mut agent_ids = Vec::new();
        for mut agent in agents {
            if !ours.contains(&agent.swarm_id)
                || agent.removed_at.is_some()
                || self.agents.contains_key(&agent.id)
            {
                continue;
            }
            let entry = self.swarms.get_mut(&agent.swarm_id).expect("adopted swarm");
            let lease = entry.swarm.config.lease_duration();
            agent.lease_until = agent.lease_until.max(now + lease);
            agent.current_tasks.clear();
            entry.agents.insert(agent.id);
            entry.agent_counts[status_index(agent.status)] += 1;
            let armed = agent.status != AgentStatus::Unhealthy && needs_lease(&agent);
            if armed {
                self.timers
                    .insert(agent.lease_until, Timer::AgentLease(agent.id));
            }
            // The health timers: an open breaker half-opens, a scheduled restart happens.
            if let crate::health::Breaker::Open { until } = agent.health.breaker {
                self.timers.insert(until, Timer::BreakerHalfOpen(agent.id));
            }
            if let Some(at) = agent.health.recovery.next_at {
                self.timers.insert(at, Timer::AgentRestart(agent.id));
            }
            // Slow and silent tasks are watched again from their next attempt.
            agent.health.stuck = None;
            agent_ids.push(agent.id);
            self.agents.insert(
                agent.id,
                AgentEntry {
                    persisted_heartbeat_at: agent.last_heartbeat_at,
                    agent,
                    wait_seq: None,
                    polling: false,
                    lease_timer_armed: armed,
                    dirty: false,
                    local: LocalQueue::default(),
                    placed_seq: 0,
                    swrr: 0.0,
                },
            );
        }
        // Finished tasks are evicted oldest first.
        tasks.sort_by_key(|t| (t.state.completed_at().unwrap_or(t.created_at), t.id));
        // New places in the queue come after every stored one (and every one given already).
        let last_place = tasks.iter().map(|t| t.queue_seq).max().unwrap_or(0);
        self.queue_seq = self.queue_seq.max(last_place);
        let finished_before = self.terminal.len();
        let mut task_ids = Vec::new();
        let mut ready = Vec::new();
        let mut blocked = Vec::new();
        let mut orphans = Vec::new();
        for task in tasks {
            if !ours.contains(&task.swarm_id) || self.tasks.contains_key(&task.id) {
                continue;
            }
            let id = task.id;
            let state = task.state.clone();
            if let Some(key) = &task.idempotency_key {
                self.idempotency.insert((task.swarm_id, key.clone()), id);
            }
            if let Some(deadline) = task.deadline
                && !task.status().is_terminal()
            {
                self.timers.insert(deadline, Timer::TaskDeadline(id));
            }
            let swarm_id = task.swarm_id;
            task_ids.push(id);
            self.tasks.insert(
                id,
                TaskEntry {
                    task,
                    slot: None,
                    local: None,
                    dependents: Vec::new(),
                    unmet: 0,
                    dirty: false,
                },
            );
            match state {
                TaskState::Blocked => blocked.push(id),
                TaskState::Queued { run_after, .. } => {
                    if let Some(at) = run_after {
                        self.timers.insert(at, Timer::TaskRetry(id));
                    } else {
                        ready.push(id);
                    }
                }
                TaskState::Assigned { agent_id, .. } | TaskState::Running { agent_id, .. } => {
                    if self.agents.contains_key(&agent_id) {
                        self.hold(agent_id, id);
                        match state {
                            TaskState::Running { timeout_at, .. } => {
                                let attempt = self.tasks[&id].task.attempts;
                                self.timers
                                    .insert(timeout_at, Timer::TaskTimeout(id, attempt));
                            }
                            TaskState::Assigned { assigned_at, .. } => {
                                let lease = self.swarms[&swarm_id].swarm.config.lease_duration();
                                let timer = Timer::AssignExpiry(id, agent_id, assigned_at);
                                self.timers.insert(now + lease, timer);
                            }
                            _ => unreachable!("only assigned and running tasks are held"),
                        }
                    } else {
                        orphans.push(id);
                    }
                }
                ref terminal => {
                    let at = terminal.completed_at().unwrap_or(now);
                    self.terminal.push_back((at, id));
                }
            }
            if let Some(count) = self
                .swarms
                .get_mut(&swarm_id)
                .and_then(|s| count_of(&mut s.task_counts, &self.tasks[&id].task.state))
            {
                *count += 1;
            }
        }
        if finished_before > 0 && self.terminal.len() > finished_before {
            // Eviction goes oldest first: the adopted finished tasks take their places among
            // those already held (a stable sort keeps the order of equal instants).
            self.terminal.make_contiguous().sort_by_key(|(at, _)| *at);
        }
        // Ready tasks take back their stored places in their swarm's queue (a task without a
        // valid place, from a damaged row, gets a new one at the back). Places are unique
        // within a swarm; swarms owned by different coordinators may have given the same ones.
        ready.sort_by_key(|id| {
            let t = &self.tasks[id].task;
            (t.queue_seq == 0, t.queue_seq, t.id)
        });
        let mut places = HashSet::new();
        for id in ready {
            let t = &self.tasks[&id].task;
            let (swarm_id, seq) = (t.swarm_id, t.queue_seq);
            if seq != 0 && places.insert((swarm_id, seq)) {
                self.enqueue_at(id, seq);
            } else {
                self.enqueue(id, now);
                self.mark_task(id);
            }
        }
        for id in &agent_ids {
            self.refresh_agent_status(*id);
        }
        for id in orphans {
            self.requeue(id, "its agent is no longer registered", now);
        }
        self.relink_blocked(blocked, now);
        self.restored_managed(&agent_ids, now);
        let in_ours = |m: &crate::message::Message| ours.contains(&m.swarm_id);
        self.restore_messages(
            messages.into_iter().filter(in_ours).collect(),
            awaiting_requests.into_iter().filter(in_ours).collect(),
            now,
        );
        // Unfinished ordered tasks wait their turn again, in submission order.
        for id in task_ids {
            if let Some(e) = self.tasks.get(&id)
                && e.task.ordered
                && !e.task.status().is_terminal()
            {
                let (swarm, at) = (e.task.swarm_id, e.task.created_at);
                self.ordered_waits(swarm, at, id);
            }
        }
        for id in &adopted {
            self.mark_topology(*id);
        }
        // The adopted swarms' topologies, and with them their status, are worked out afresh.
        self.refresh_topologies(now);
        adopted
    }

    /// Links blocked tasks to their unfinished dependencies after a restore; those whose
    /// dependencies all finished are released (or failed).
    fn relink_blocked(&mut self, blocked: Vec<TaskId>, now: Timestamp) {
        let mut released = Vec::new();
        for id in blocked {
            let deps = self.tasks[&id].task.depends_on.clone();
            if self.tasks[&id].task.delegation.is_some() {
                self.link_subtasks(id, now);
                continue;
            }
            let mut unmet = 0;
            let mut failed_dep = None;
            for dep in deps {
                match self.tasks.get_mut(&dep.task_id) {
                    Some(d) if !d.task.status().is_terminal() => {
                        d.dependents.push(id);
                        unmet += 1;
                    }
                    Some(d)
                        if dep.kind == crate::task::DependencyKind::Success
                            && d.task.status() != TaskStatus::Completed =>
                    {
                        failed_dep = Some((dep.task_id, d.task.status()));
                    }
                    Some(_) => {}
                    // Not in memory: finished long ago (only finished tasks are evicted).
                    None => {}
                }
            }
            self.tasks.get_mut(&id).expect("blocked task").unmet = unmet;
            if let Some((dep, status)) = failed_dep {
                self.fail_for_dependency(id, dep, status, now);
            } else if unmet == 0 {
                released.push(id);
            }
        }
        for id in released {
            self.release(id, now);
        }
    }

    /// Marks for persisting every row of the swarm that may lag behind memory: its agents'
    /// (their counters, last heartbeat and usage are otherwise written only with a status
    /// change or every `heartbeat_persist_interval`), and closes the swarm's open minute of
    /// metrics into rows. The next [`Fleet::take_changes`] carries them. Returns false if the
    /// swarm is not held.
    ///
    /// Call it before taking the last changes of a swarm about to be released, so that its
    /// next owner adopts it exactly as it was here.
    pub fn prepare_release(&mut self, id: SwarmId) -> bool {
        let Some(s) = self.swarms.get(&id) else {
            return false;
        };
        let mut agents: Vec<AgentId> = s.agents.iter().copied().collect();
        agents.sort();
        for a in agents {
            self.mark_agent(a);
        }
        self.metrics.close_swarm(id);
        true
    }

    /// Forgets a swarm and everything of it held in memory — its entry and name, pools,
    /// agents (with their local queues), tasks (with their idempotency keys and places in the
    /// eviction list), timers, messages, requests awaiting a response, scaling and metrics
    /// state — as if it had never been loaded. Returns false if the swarm is not held.
    ///
    /// This is not a deletion: the store keeps every row, for the swarm's next owner to
    /// [`Fleet::adopt`]. It records no change, no event and no effect; in particular nothing
    /// is done about the swarm's managed agents' processes (the caller decides: they keep
    /// running until stopped, and an adopting fleet starts them again).
    ///
    /// The caller must first take and persist the pending changes (after
    /// [`Fleet::prepare_release`]); whatever of this swarm is still pending in the outbox
    /// when it is released is dropped — rows, events, effects, the open minute of metrics and
    /// metric rows not yet taken — except what names only an id (deleted checkpoints and
    /// messages, request replies) or no swarm at all (workspaces to discard), which goes out
    /// with the next changes as before.
    pub fn release_swarm(&mut self, id: SwarmId) -> bool {
        let Some(entry) = self.swarms.remove(&id) else {
            return false;
        };
        if self.swarm_names.get(&entry.swarm.name) == Some(&id) {
            self.swarm_names.remove(&entry.swarm.name);
        }
        let mut agents = entry.agents;
        agents.extend(
            self.agents
                .values()
                .filter(|e| e.agent.swarm_id == id)
                .map(|e| e.agent.id),
        );
        for a in &agents {
            self.agents.remove(a);
        }
        let tasks: HashSet<TaskId> = self
            .tasks
            .values()
            .filter(|e| e.task.swarm_id == id)
            .map(|e| e.task.id)
            .collect();
        for t in &tasks {
            self.tasks.remove(t);
        }
        self.idempotency.retain(|(s, _), _| *s != id);
        self.terminal.retain(|(_, t)| !tasks.contains(t));
        let messages = self.release_mail(id, &agents);
        self.scaling.release(id, &agents);
        self.metrics.release_swarm(id, &agents);
        let released = Released {
            swarm: id,
            agents,
            tasks,
            messages,
        };
        self.timers.retain(|t| !released.watches(t));
        self.out.forget(&released);
        true
    }

    /// Raises the seq the next event gets to at least `at_least` (it never goes down).
    ///
    /// Coordinators sharing a store give each owner of a swarm a higher range of seqs (an epoch
    /// in the high bits), so that a swarm's events keep increasing when it changes owner.
    pub fn raise_event_seq(&mut self, at_least: u64) {
        self.next_event_seq = self.next_event_seq.max(at_least);
    }

    /// The ids of the swarms the fleet holds, in order.
    pub fn swarm_ids(&self) -> Vec<SwarmId> {
        let mut ids: Vec<SwarmId> = self.swarms.keys().copied().collect();
        ids.sort();
        ids
    }
}
