//! Placing ready tasks on agents: the swarm's strategy, local queues and work stealing.
//!
//! A ready task waits in one of two places: its swarm's [`ReadyQueue`](crate::queue::ReadyQueue),
//! or the [`LocalQueue`](crate::queue::LocalQueue) of one agent, where it was placed ahead of time
//! (prefetched, `config.prefetch`) or where it waits for the agent that last ran its affinity key
//! (the `affinity` strategy, pinned for `config.affinity_wait`). Either way its status is `queued`;
//! local queues are not stored: after a restart every ready task is back in its swarm's queue,
//! in its old place.
//!
//! A dispatch round of a swarm:
//! 1. tasks in the local queues of agents out of service go back to the swarm's queue;
//! 2. agents with a poll open and a free slot, taken in the strategy's order, each get the
//!    better of their local queue's head and the best task of the swarm's queue they may run;
//!    an agent for which both are empty steals from the local queue of the most loaded agent
//!    (pinned affinity tasks are not stolen);
//! 3. with `prefetch`, the tasks left are placed into local queues with room, agents taken in the
//!    strategy's order.
//!
//! Whatever the strategy, an agent gets the best task it may run (higher priority first, then
//! first in, first out) and nothing below the fleet's priority floor; the strategy decides which
//! agent goes first. Choosing an agent scans the candidates (O(agents waiting)); taking its task
//! costs O(capability sets × log tasks).

use std::cmp::Ordering;

use super::{Fleet, Timer, health};
use crate::agent::{Agent, AgentStatus, Desired, has_all};
use crate::event::EventKind;
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::swarm::Strategy;
use crate::task::TaskState;
use crate::time::Timestamp;

/// Where a picked task waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The swarm's queue.
    Swarm,
    /// The agent's own local queue.
    Own,
    /// Another agent's local queue.
    Stolen(AgentId),
}

/// Affinity keys remembered per swarm before the least recently used half is forgotten.
const AFFINITY_KEYS: usize = 100_000;

/// Largest local queue a task is pinned to by affinity (beyond it, it waits in the swarm).
const AFFINITY_QUEUE: usize = 1_000;

/// Whether an agent may take work now or soon: idle or busy, meant to run, with capacity.
pub(super) fn in_service(a: &Agent) -> bool {
    matches!(a.status, AgentStatus::Idle | AgentStatus::Busy)
        && a.managed
            .as_ref()
            .is_none_or(|m| m.desired == Desired::Running)
        && health::capacity(a) > 0
}

/// The agent's measured weight for the `weighted` strategy: its success rate (with one success
/// and one failure assumed, so that a new agent is neither trusted nor shunned) times its speed
/// relative to `reference_ms` (an agent not yet timed counts as average).
fn weight(a: &Agent, reference_ms: f64) -> f64 {
    let outcomes = &a.health.outcomes;
    let ok = outcomes.iter().filter(|o| o.ok).count() as f64;
    let success = (ok + 1.0) / (outcomes.len() as f64 + 2.0);
    let speed = match a.health.typical_task_ms {
        Some(ms) if a.health.timed_tasks >= 3 && ms > 0.0 => (reference_ms / ms).clamp(0.05, 20.0),
        _ => 1.0,
    };
    success * speed
}

impl Fleet {
    /// Sets the lowest priority of task placed on agents; tasks below it stay queued (the
    /// pressure response "delay low-priority tasks"). `None` places every task.
    pub fn set_priority_floor(&mut self, floor: Option<u8>, now: Timestamp) {
        if self.priority_floor == floor {
            return;
        }
        let lowered = floor.unwrap_or(0) < self.priority_floor.unwrap_or(0);
        self.priority_floor = floor;
        if lowered {
            let ids: Vec<SwarmId> = self.swarms.keys().copied().collect();
            for id in ids {
                if !self.out.dispatch.contains(&id) {
                    self.out.dispatch.push(id);
                }
            }
            self.dispatch(now);
        }
    }

    /// The lowest priority of task placed on agents, if one is set.
    pub fn priority_floor(&self) -> Option<u8> {
        self.priority_floor
    }

    /// The tasks waiting in an agent's local queue, best first.
    pub fn local_queue(&self, id: AgentId) -> Vec<TaskId> {
        self.agents
            .get(&id)
            .map(|e| e.local.iter().map(|(t, _)| t).collect())
            .unwrap_or_default()
    }

    /// How many tasks wait in an agent's local queue.
    pub fn local_queue_len(&self, id: AgentId) -> usize {
        self.agents.get(&id).map_or(0, |e| e.local.len())
    }

    /// Places ready tasks on agents, in every swarm that asked for it.
    pub(super) fn dispatch(&mut self, now: Timestamp) {
        self.refresh_topologies(now);
        while let Some(swarm_id) = self.out.dispatch.pop() {
            if self.swarms.contains_key(&swarm_id) {
                self.dispatch_swarm(swarm_id, now);
            }
        }
    }

    fn dispatch_swarm(&mut self, swarm_id: SwarmId, now: Timestamp) {
        self.arm_token_timer(swarm_id, now);
        self.reclaim_local(swarm_id);
        self.serve_waiting(swarm_id, now);
        self.prefetch(swarm_id);
    }

    /// Tasks in the local queues of agents out of service go back to the swarm's queue.
    fn reclaim_local(&mut self, swarm_id: SwarmId) {
        let holders: Vec<AgentId> = self.swarms[&swarm_id].holders.iter().copied().collect();
        for id in holders {
            if self.agents.get(&id).is_none_or(|e| !in_service(&e.agent)) {
                self.return_local(id);
            }
        }
    }

    /// Every task in an agent's local queue goes back to its swarm's queue, in its old place.
    pub(super) fn return_local(&mut self, id: AgentId) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        if entry.local.is_empty() {
            return;
        }
        let swarm_id = entry.agent.swarm_id;
        let tasks = entry.local.drain();
        if let Some(s) = self.swarms.get_mut(&swarm_id) {
            s.holders.remove(&id);
            s.local_len -= tasks.len();
        }
        for t in tasks {
            let e = self.tasks.get_mut(&t).expect("task in a local queue");
            if let Some(local) = e.local.take()
                && let Some(at) = local.pinned_until
            {
                self.timers.remove(at, Timer::LocalExpiry(t, id));
            }
            let seq = e.task.queue_seq;
            self.enqueue_at(t, seq);
        }
    }

    /// Takes a task out of the local queue it waits in, if any.
    pub(super) fn unplace_local(&mut self, task: TaskId) {
        let Some(e) = self.tasks.get_mut(&task) else {
            return;
        };
        let Some(local) = e.local.take() else {
            return;
        };
        if let Some(at) = local.pinned_until {
            self.timers
                .remove(at, Timer::LocalExpiry(task, local.agent));
        }
        if let Some(a) = self.agents.get_mut(&local.agent) {
            a.local.remove(local.slot);
            let now_empty = a.local.is_empty();
            if let Some(s) = self.swarms.get_mut(&a.agent.swarm_id) {
                s.local_len -= 1;
                if now_empty {
                    s.holders.remove(&local.agent);
                }
            }
        }
    }

    /// Puts a ready task (out of every queue) in an agent's local queue.
    fn place_local(&mut self, task: TaskId, agent: AgentId, pinned_until: Option<Timestamp>) {
        let e = self.tasks.get_mut(&task).expect("task to place");
        debug_assert!(e.slot.is_none() && e.local.is_none());
        let a = self.agents.get_mut(&agent).expect("agent to place on");
        let slot = a.local.push(task, e.task.priority, e.task.queue_seq);
        e.local = Some(super::LocalPlace {
            agent,
            slot,
            pinned_until,
        });
        self.place_seq += 1;
        a.placed_seq = self.place_seq;
        let s = self
            .swarms
            .get_mut(&a.agent.swarm_id)
            .expect("agent's swarm");
        s.local_len += 1;
        s.holders.insert(agent);
        if let Some(at) = pinned_until {
            self.timers.insert(at, Timer::LocalExpiry(task, agent));
        }
    }

    /// A ready task with an affinity key, in a swarm with the `affinity` strategy, waits for the
    /// agent that last ran that key, if that agent is in service and may run it. Returns
    /// whether it was placed so.
    pub(super) fn place_by_affinity(&mut self, task: TaskId, now: Timestamp) -> bool {
        let t = &self.tasks[&task].task;
        let Some(key) = t.affinity_key.as_deref() else {
            return false;
        };
        // Ordered and delegated tasks keep to their own rules of who takes them.
        if t.ordered || t.delegated_by.is_some() {
            return false;
        }
        let s = &self.swarms[&t.swarm_id];
        if s.swarm.config.strategy != Strategy::Affinity || s.swarm.config.affinity_wait.is_zero() {
            return false;
        }
        let Some(&(owner, _)) = s.affinity.get(key) else {
            return false;
        };
        // A retry does not wait for the agent its last attempt failed on.
        if t.last_error.as_ref().and_then(|e| e.agent_id) == Some(owner) {
            return false;
        }
        let fits = self.agents.get(&owner).is_some_and(|e| {
            in_service(&e.agent)
                && e.local.len() < AFFINITY_QUEUE
                && has_all(&e.agent.capabilities, &t.required_capabilities)
        });
        if !fits {
            return false;
        }
        let until = now + s.swarm.config.affinity_wait;
        let swarm_id = t.swarm_id;
        self.place_local(task, owner, Some(until));
        if !self.out.dispatch.contains(&swarm_id) {
            self.out.dispatch.push(swarm_id);
        }
        true
    }

    /// A pinned task waited long enough for its agent: any agent may take it now.
    pub(super) fn local_expiry_timer(&mut self, task: TaskId, agent: AgentId) {
        let pinned = self
            .tasks
            .get(&task)
            .and_then(|e| e.local.as_ref())
            .is_some_and(|l| l.agent == agent && l.pinned_until.is_some());
        if !pinned {
            return;
        }
        // The timer fired, so it is no longer in the timer wheel.
        if let Some(l) = self.tasks.get_mut(&task).and_then(|e| e.local.as_mut()) {
            l.pinned_until = None;
        }
        self.unplace_local(task);
        let seq = self.tasks[&task].task.queue_seq;
        // `enqueue_at` asks for a dispatch round when an agent may take it; `tick` runs it.
        self.enqueue_at(task, seq);
    }

    /// The next task for an agent with a free slot, and where it waits: the better of its
    /// local queue's head and the best task of the swarm's queue it may run, else one stolen
    /// from the most loaded agent's local queue.
    fn pick_for(&self, id: AgentId) -> Option<(TaskId, Source)> {
        let e = &self.agents[&id];
        let a = &e.agent;
        let s = &self.swarms[&a.swarm_id];
        let floor = self.priority_floor.unwrap_or(0);
        let best_fit = s.swarm.config.strategy == Strategy::CapabilityMatch;
        let own = e
            .local
            .iter()
            .next()
            .filter(|(_, slot)| slot.priority() >= floor);
        let shared = s
            .queue
            .peek_admitting(&a.capabilities, floor, best_fit, |lane, caps| {
                self.admits(a, lane, caps)
            });
        // The ordered task whose turn it is, if this agent may take it, competes by rank.
        let shared = match (shared, self.ordered_candidate(a, floor)) {
            (Some((u, g)), Some((t, o))) => Some(if o.rank() < g.rank() { (t, o) } else { (u, g) }),
            (x, None) | (None, x) => x,
        };
        match (own, shared) {
            (Some((t, o)), Some((u, g))) => Some(if g.rank() < o.rank() {
                (u, Source::Swarm)
            } else {
                (t, Source::Own)
            }),
            (Some((t, _)), None) => Some((t, Source::Own)),
            (None, Some((u, _))) => Some((u, Source::Swarm)),
            (None, None) => self.steal_for(a, floor),
        }
    }

    /// A task an agent may run from the local queue of the most loaded other agent (by tasks
    /// waiting there, then held): the best such task that is not pinned by affinity.
    fn steal_for(&self, a: &Agent, floor: u8) -> Option<(TaskId, Source)> {
        let s = &self.swarms[&a.swarm_id];
        if s.local_len == 0 {
            return None;
        }
        let mut victims: Vec<(&super::AgentEntry, AgentId)> = s
            .holders
            .iter()
            .filter(|v| **v != a.id)
            .filter_map(|v| self.agents.get(v).map(|e| (e, *v)))
            .collect();
        victims.sort_by(|(x, xi), (y, yi)| {
            (y.local.len(), y.agent.current_tasks.len(), *xi).cmp(&(
                x.local.len(),
                x.agent.current_tasks.len(),
                *yi,
            ))
        });
        for (v, vid) in victims {
            for (t, slot) in v.local.iter() {
                if slot.priority() < floor {
                    break;
                }
                let te = &self.tasks[&t];
                let pinned = te.local.as_ref().is_some_and(|l| l.pinned_until.is_some());
                if !pinned && has_all(&a.capabilities, &te.task.required_capabilities) {
                    return Some((t, Source::Stolen(vid)));
                }
            }
        }
        None
    }

    /// The next task for an agent that polls (see [`Fleet::pick_for`]), taken out of where it
    /// waited; a stolen one is recorded as an event.
    pub(super) fn take_next_for(&mut self, id: AgentId, now: Timestamp) -> Option<TaskId> {
        let a = &self.agents[&id].agent;
        if a.current_tasks.len() >= health::capacity(a) {
            return None;
        }
        let (task, source) = self.pick_for(id)?;
        self.unqueue(task);
        self.note_placement(task, id);
        let swarm_id = self.agents[&id].agent.swarm_id;
        let s = &self.swarms[&swarm_id];
        if s.swarm.config.prefetch > 0
            && !s.queue.is_empty()
            && !self.out.dispatch.contains(&swarm_id)
        {
            self.out.dispatch.push(swarm_id);
        }
        if let Source::Stolen(from) = source {
            let strategy = self.swarms[&swarm_id].swarm.config.strategy;
            let detail = self.stolen_detail(strategy, from);
            self.emit(
                now,
                EventKind::TaskAssigned,
                swarm_id,
                Some(id),
                Some(task),
                detail,
            );
        }
        Some(task)
    }

    /// Takes a picked task out of where it waits (the caller then moves it on).
    pub(super) fn unqueue(&mut self, task: TaskId) {
        self.unplace_local(task);
        if let Some(e) = self.tasks.get_mut(&task)
            && let Some(slot) = e.slot.take()
            && let Some(s) = self.swarms.get_mut(&e.task.swarm_id)
        {
            s.queue.remove(slot);
        }
    }

    /// Agents with a poll open and a free slot get tasks, in the strategy's order.
    fn serve_waiting(&mut self, swarm_id: SwarmId, now: Timestamp) {
        let s = &self.swarms[&swarm_id];
        if s.waiting.is_empty() || (s.queue.is_empty() && s.local_len == 0) {
            return;
        }
        let strategy = s.swarm.config.strategy;
        let waiting: Vec<AgentId> = s.waiting.values().copied().collect();
        let mut cands = self.candidates(strategy, waiting);
        while !cands.is_empty() {
            let s = &self.swarms[&swarm_id];
            if s.queue.is_empty() && s.local_len == 0 {
                break;
            }
            let i = self.choose(strategy, &cands);
            let agent_id = cands[i].0;
            let a = &self.agents[&agent_id].agent;
            let free = health::capacity(a).saturating_sub(a.current_tasks.len());
            let picked = if free > 0 {
                self.pick_for(agent_id)
            } else {
                None
            };
            let Some((task_id, source)) = picked else {
                if free == 0 {
                    self.stop_waiting(agent_id);
                }
                cands.remove(i);
                continue;
            };
            self.assign(task_id, agent_id, source, strategy, now);
            // To the back of the line, if it can take more.
            self.stop_waiting(agent_id);
            if free > 1 {
                self.start_waiting(agent_id);
                if strategy == Strategy::RoundRobin {
                    let c = cands.remove(i);
                    cands.push(c);
                }
            } else {
                cands.remove(i);
            }
        }
    }

    /// With `prefetch`, tasks left in the swarm's queue go to the local queues of agents in
    /// service with room, agents taken in the strategy's order.
    fn prefetch(&mut self, swarm_id: SwarmId) {
        let s = &self.swarms[&swarm_id];
        let prefetch = s.swarm.config.prefetch as usize;
        if prefetch == 0 || s.queue.is_empty() {
            return;
        }
        let count = |st: AgentStatus| s.agent_counts[super::status_index(st)] as usize;
        if s.local_len >= (count(AgentStatus::Idle) + count(AgentStatus::Busy)) * prefetch {
            return;
        }
        let strategy = s.swarm.config.strategy;
        let mut roomy: Vec<AgentId> = s
            .agents
            .iter()
            .copied()
            .filter(|id| {
                let e = &self.agents[id];
                in_service(&e.agent) && e.local.len() < prefetch
            })
            .collect();
        // A stable order to start from: the one agents were last placed on.
        roomy.sort_by_key(|id| (self.agents[id].placed_seq, *id));
        let mut cands = self.candidates(strategy, roomy);
        let floor = self.priority_floor.unwrap_or(0);
        let best_fit = strategy == Strategy::CapabilityMatch;
        while !cands.is_empty() && !self.swarms[&swarm_id].queue.is_empty() {
            let i = self.choose(strategy, &cands);
            let id = cands[i].0;
            let a = &self.agents[&id].agent;
            let Some((task, _)) =
                self.swarms[&swarm_id]
                    .queue
                    .peek(&a.capabilities, floor, best_fit)
            else {
                cands.remove(i);
                continue;
            };
            self.unqueue(task);
            self.place_local(task, id, None);
            if self.agents[&id].local.len() >= prefetch {
                cands.remove(i);
            } else if strategy == Strategy::RoundRobin {
                let c = cands.remove(i);
                cands.push(c);
            }
        }
    }

    /// The candidates with their `weighted` strategy weights (0 for other strategies).
    fn candidates(&self, strategy: Strategy, ids: Vec<AgentId>) -> Vec<(AgentId, f64)> {
        if strategy != Strategy::Weighted {
            return ids.into_iter().map(|id| (id, 0.0)).collect();
        }
        let timed: Vec<f64> = ids
            .iter()
            .filter_map(|id| {
                let h = &self.agents[id].agent.health;
                h.typical_task_ms.filter(|_| h.timed_tasks >= 3)
            })
            .collect();
        let reference = if timed.is_empty() {
            1.0
        } else {
            timed.iter().sum::<f64>() / timed.len() as f64
        };
        ids.into_iter()
            .map(|id| (id, weight(&self.agents[&id].agent, reference)))
            .collect()
    }

    /// Which candidate goes first under the strategy (`round_robin`: the first, the candidates
    /// being in turn order).
    fn choose(&mut self, strategy: Strategy, cands: &[(AgentId, f64)]) -> usize {
        let load = |id: &AgentId| {
            let e = &self.agents[id];
            e.agent.current_tasks.len() + e.local.len()
        };
        let first_min = |key: &dyn Fn(&AgentId) -> (f64, f64)| -> usize {
            let mut best = 0;
            let mut best_key = key(&cands[0].0);
            for (i, (id, _)) in cands.iter().enumerate().skip(1) {
                let k = key(id);
                if k.partial_cmp(&best_key) == Some(Ordering::Less) {
                    best = i;
                    best_key = k;
                }
            }
            best
        };
        match strategy {
            Strategy::RoundRobin => 0,
            Strategy::LeastLoaded | Strategy::Affinity => first_min(&|id| (load(id) as f64, 0.0)),
            Strategy::CapabilityMatch => first_min(&|id| {
                (
                    self.agents[id].agent.capabilities.len() as f64,
                    load(id) as f64,
                )
            }),
            Strategy::ResourceBased => {
                let max_mem = cands
                    .iter()
                    .filter_map(|(id, _)| self.agents[id].agent.resource_usage.memory_mb)
                    .fold(0.0_f64, f64::max);
                first_min(&|id| {
                    let a = &self.agents[id].agent;
                    let cpu = a.resource_usage.cpu_percent.unwrap_or(0.0) / 100.0;
                    let mem = match a.resource_usage.memory_mb {
                        Some(m) if max_mem > 0.0 => m / max_mem,
                        _ => 0.0,
                    };
                    let held = load(id) as f64 / health::capacity(a).max(1) as f64;
                    (cpu + mem + held, load(id) as f64)
                })
            }
            Strategy::Priority => first_min(&|id| {
                let a = &self.agents[id].agent;
                let s = &self.swarms[&a.swarm_id];
                let priority = s
                    .pools
                    .get(&a.agent_type)
                    .map_or(crate::pool::DEFAULT_POOL_PRIORITY, |p| p.priority);
                (-f64::from(priority), load(id) as f64)
            }),
            Strategy::Weighted => {
                // Smooth weighted round robin: every candidate gains its weight, the richest
                // goes and pays the total back.
                let total: f64 = cands.iter().map(|(_, w)| w).sum();
                let mut best = 0;
                let mut best_current = f64::NEG_INFINITY;
                for (i, (id, w)) in cands.iter().enumerate() {
                    let e = self.agents.get_mut(id).expect("candidate");
                    e.swrr += w;
                    if e.swrr > best_current {
                        best = i;
                        best_current = e.swrr;
                    }
                }
                if let Some(e) = self.agents.get_mut(&cands[best].0) {
                    e.swrr -= total;
                }
                best
            }
        }
    }

    /// Places a picked task on an agent: it becomes `assigned` there.
    fn assign(
        &mut self,
        task_id: TaskId,
        agent_id: AgentId,
        source: Source,
        strategy: Strategy,
        now: Timestamp,
    ) {
        let swarm_id = self.agents[&agent_id].agent.swarm_id;
        // `transition` takes it out of the queue it waits in.
        self.transition(
            task_id,
            TaskState::Assigned {
                agent_id,
                assigned_at: now,
            },
            now,
        );
        self.note_placement(task_id, agent_id);
        let lease = self.swarms[&swarm_id].swarm.config.lease_duration();
        self.timers
            .insert(now + lease, Timer::AssignExpiry(task_id, agent_id, now));
        let detail = match source {
            Source::Stolen(from) => self.stolen_detail(strategy, from),
            Source::Own => format!("{}; from its local queue", strategy.as_str()),
            Source::Swarm => strategy.as_str().to_owned(),
        };
        self.emit(
            now,
            EventKind::TaskAssigned,
            swarm_id,
            Some(agent_id),
            Some(task_id),
            detail,
        );
        if !self
            .out
            .effects
            .contains(&crate::changes::Effect::WakeAgent(agent_id))
        {
            self.out
                .effects
                .push(crate::changes::Effect::WakeAgent(agent_id));
        }
    }

    /// The words of a `task_assigned` event for a task stolen from `from`'s local queue.
    fn stolen_detail(&self, strategy: Strategy, from: AgentId) -> String {
        let name = self
            .agents
            .get(&from)
            .map_or_else(|| from.to_string(), |e| e.agent.name.clone());
        format!("{}; stolen from {name}'s local queue", strategy.as_str())
    }

    /// Records that an agent got a task: its turn for placement, and the task's affinity key.
    pub(super) fn note_placement(&mut self, task_id: TaskId, agent_id: AgentId) {
        self.place_seq += 1;
        let seq = self.place_seq;
        if let Some(e) = self.agents.get_mut(&agent_id) {
            e.placed_seq = seq;
        }
        let t = &self.tasks[&task_id].task;
        let Some(key) = t.affinity_key.clone() else {
            return;
        };
        let Some(s) = self.swarms.get_mut(&t.swarm_id) else {
            return;
        };
        if s.swarm.config.strategy != Strategy::Affinity {
            return;
        }
        s.affinity.insert(key, (agent_id, seq));
        if s.affinity.len() > AFFINITY_KEYS {
            // Forget the least recently used half.
            let mut seqs: Vec<u64> = s.affinity.values().map(|(_, q)| *q).collect();
            let (_, median, _) = seqs.select_nth_unstable(AFFINITY_KEYS / 2);
            let cut = *median;
            s.affinity.retain(|_, (_, q)| *q > cut);
        }
    }

    /// Forgets an agent's affinity keys (it left).
    pub(super) fn forget_affinity(&mut self, swarm_id: SwarmId, agent_id: AgentId) {
        if let Some(s) = self.swarms.get_mut(&swarm_id)
            && !s.affinity.is_empty()
        {
            s.affinity.retain(|_, (a, _)| *a != agent_id);
        }
    }

    /// Checks the local queues against the tasks; for [`Fleet::check_invariants`].
    pub(super) fn check_local_queues(&self) -> Result<usize, String> {
        let mut total = 0;
        for (id, e) in &self.agents {
            for (t, slot) in e.local.iter() {
                let ok = self.tasks.get(&t).is_some_and(|te| {
                    te.local
                        .as_ref()
                        .is_some_and(|l| l.agent == *id && l.slot == slot)
                        && te.slot.is_none()
                });
                if !ok {
                    return Err(format!("agent {id}'s local queue lists task {t} wrongly"));
                }
            }
            let listed = self.swarms[&e.agent.swarm_id].holders.contains(id);
            if listed == e.local.is_empty() {
                return Err(format!("agent {id}: holder index disagrees"));
            }
            total += e.local.len();
        }
        let counted: usize = self.swarms.values().map(|s| s.local_len).sum();
        if counted != total {
            return Err(format!(
                "{counted} tasks counted in local queues, {total} there"
            ));
        }
        Ok(total)
    }
}
