//! Feeding the metrics recorder from the fleet's state changes; see [`crate::metrics`].

use std::collections::HashMap;

use super::{AgentEntry, Fleet, holder};
use crate::agent::AgentStatus;
use crate::event::EventKind;
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::metrics::{Dims, GaugeSample, HeartbeatSample, Outcome, Recorder};
use crate::task::TaskState;
use crate::time::Timestamp;

/// The series an observation about `agent` and a task of `task_type` belongs to.
fn dims<'a>(
    agents: &'a HashMap<AgentId, AgentEntry>,
    swarm: SwarmId,
    agent: Option<AgentId>,
    task_type: Option<&'a str>,
) -> Dims<'a> {
    Dims {
        swarm,
        agent: agent.and_then(|id| {
            let a = &agents.get(&id)?.agent;
            Some((id, a.name.as_str(), a.agent_type.as_str()))
        }),
        task_type,
    }
}

fn in_service(s: AgentStatus) -> bool {
    matches!(s, AgentStatus::Idle | AgentStatus::Busy)
}

impl Fleet {
    /// The metrics recorder: open buckets and cumulative totals.
    pub fn metrics(&self) -> &Recorder {
        &self.metrics
    }

    /// Closes the open minute now (before a shutdown), so that its figures are stored.
    pub fn flush_metrics(&mut self) {
        self.metrics.flush();
    }

    /// Observes a task about to move to `next`: the end of its wait, of an attempt, of the
    /// task.
    pub(super) fn observe_transition(&mut self, id: TaskId, next: &TaskState, now: Timestamp) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let task = &entry.task;
        let task_type = Some(task.task_type.as_str());
        let swarm = task.swarm_id;
        if let TaskState::Queued { queued_at, .. } = task.state
            && let Some(agent) = holder(next)
        {
            let d = dims(&self.agents, swarm, Some(agent), task_type);
            self.metrics.waited(now, d, now.since(queued_at));
        }
        if let TaskState::Running {
            agent_id,
            started_at,
            ..
        } = task.state
            && !matches!(next, TaskState::Running { .. })
        {
            let d = dims(&self.agents, swarm, Some(agent_id), task_type);
            self.metrics.ran(now, d, now.since(started_at));
        }
        let outcome = match next {
            TaskState::Completed { .. } => Outcome::Completed,
            TaskState::Failed { .. } => Outcome::Failed,
            TaskState::Dead { .. } => Outcome::Dead,
            TaskState::Cancelled { .. } => Outcome::Cancelled,
            _ => return,
        };
        let agent = match next {
            TaskState::Completed { agent_id, .. } => Some(*agent_id),
            _ => holder(&task.state),
        };
        let d = dims(&self.agents, swarm, agent, task_type);
        self.metrics
            .finished(now, d, outcome, now.since(task.created_at));
    }

    /// Observes an event the recorder counts.
    pub(super) fn observe_event(
        &mut self,
        now: Timestamp,
        kind: EventKind,
        swarm: SwarmId,
        agent: Option<AgentId>,
        task: Option<TaskId>,
    ) {
        let task_type = task
            .and_then(|t| self.tasks.get(&t))
            .map(|e| e.task.task_type.as_str());
        let d = dims(&self.agents, swarm, agent, task_type);
        match kind {
            EventKind::TaskSubmitted => self.metrics.submitted(now, d),
            EventKind::TaskRetrying => self.metrics.retried(now, d),
            EventKind::TaskRequeued => self.metrics.requeued(now, d),
            EventKind::AgentFailed => self.metrics.agent_failed(now, d),
            EventKind::AgentLeft => {
                if let Some(a) = agent {
                    self.metrics.agent_removed(a);
                }
            }
            EventKind::SwarmDeleted => self.metrics.forget_swarm(swarm),
            _ => {}
        }
    }

    /// Observes an agent's status change: back in service after a failure is a recovery.
    pub(super) fn observe_status(&mut self, id: AgentId, status: AgentStatus, now: Timestamp) {
        if !in_service(status) {
            return;
        }
        if let Some(e) = self.agents.get(&id) {
            let d = dims(&self.agents, e.agent.swarm_id, Some(id), None);
            self.metrics.agent_recovered(now, d);
        }
    }

    /// Observes a heartbeat (after it was applied to the agent).
    pub(super) fn observe_heartbeat(&mut self, id: AgentId, reported_usage: bool, now: Timestamp) {
        let Some(e) = self.agents.get(&id) else {
            return;
        };
        let a = &e.agent;
        let d = dims(&self.agents, a.swarm_id, Some(id), None);
        let usage = reported_usage.then_some(&a.resource_usage);
        self.metrics.heartbeat(now, d, usage, || HeartbeatSample {
            agent_id: id,
            swarm_id: a.swarm_id,
            recorded_at: now,
            status: a.status,
            reported_health: a.reported_health,
            resource_usage: a.resource_usage.clone(),
            current_tasks: a.current_tasks.clone(),
            queue_depth: e.local.len() as u32,
        });
    }

    /// Observes resource usage sampled from a managed agent's processes.
    pub(super) fn observe_usage(&mut self, id: AgentId, now: Timestamp) {
        let Some(e) = self.agents.get(&id) else {
            return;
        };
        let d = dims(&self.agents, e.agent.swarm_id, Some(id), None);
        self.metrics.usage(now, d, &e.agent.resource_usage);
    }

    /// Lets the recorder's time pass, and samples the gauges when a sample is due.
    pub(super) fn tick_metrics(&mut self, now: Timestamp) {
        self.metrics.tick(now);
        if !self.metrics.sample_due(now) {
            return;
        }
        for (swarm_id, s) in &self.swarms {
            let mut whole = GaugeSample {
                queue: s.task_counts.queued + s.task_counts.delayed,
                ..GaugeSample::default()
            };
            let mut pools: HashMap<&str, GaugeSample> = HashMap::new();
            let mut agents = Vec::with_capacity(s.agents.len());
            for id in &s.agents {
                let Some(e) = self.agents.get(id) else {
                    continue;
                };
                let a = &e.agent;
                if !in_service(a.status) {
                    continue;
                }
                let g = GaugeSample {
                    queue: e.local.len() as u64,
                    agents: 1,
                    held: a.current_tasks.len() as u64,
                    capacity: u64::from(a.max_concurrent_tasks),
                };
                whole.agents += 1;
                whole.held += g.held;
                whole.capacity += g.capacity;
                let p = pools.entry(a.agent_type.as_str()).or_default();
                p.agents += 1;
                p.held += g.held;
                p.capacity += g.capacity;
                agents.push((*id, a.name.as_str(), g));
            }
            self.metrics.sample(now, *swarm_id, whole, pools, agents);
        }
    }
}
