//! Agent commands: register, unregister, heartbeat, and taking the next task.

use super::{AgentEntry, Fleet, status_index};
use crate::agent::{
    Agent, AgentRole, AgentSpec, AgentStatus, Desired, Heartbeat, normalize_capabilities,
};
use crate::api::HeartbeatAck;
use crate::changes::Effect;
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, TaskId};
use crate::json::Json;
use crate::swarm::validate_name;
use crate::task::{Task, TaskState};
use crate::time::Timestamp;

use super::timers::Timer;

/// Largest agent metadata document, in bytes.
const MAX_METADATA_BYTES: usize = 64 * 1024;

impl Fleet {
    /// Registers an agent in a swarm under the given id.
    ///
    /// A name is unique within the swarm. Registering under the name of an agent that has
    /// lost its lease replaces that agent (a crashed worker coming back); under the name of a
    /// live agent it is refused.
    pub fn register_agent(
        &mut self,
        swarm: &str,
        id: AgentId,
        spec: AgentSpec,
        now: Timestamp,
    ) -> Result<&Agent, CoreError> {
        let swarm_id = self.resolve_swarm(swarm)?;
        validate_name("agent type", &spec.agent_type)?;
        let capabilities = normalize_capabilities(spec.capabilities)?;
        if !(1..=10_000).contains(&spec.max_concurrent_tasks) {
            return Err(CoreError::invalid(
                "max_concurrent_tasks must be between 1 and 10000",
            ));
        }
        let metadata = match spec.metadata {
            None => Json::empty_object(),
            Some(m) if !m.is_object() => {
                return Err(CoreError::invalid("metadata must be a JSON object"));
            }
            Some(m) if m.len() > MAX_METADATA_BYTES => {
                return Err(CoreError::TooLarge(format!(
                    "metadata is {} bytes; at most {MAX_METADATA_BYTES} are allowed",
                    m.len()
                )));
            }
            Some(m) => m,
        };
        let name = match spec.name {
            Some(n) => {
                validate_name("agent", &n)?;
                n
            }
            // The tail of a UUIDv7 is random; its head is the clock and repeats within a millisecond.
            None => format!("{}-{}", spec.agent_type, &id.0.simple().to_string()[24..]),
        };
        if self.agents.contains_key(&id) {
            return Err(CoreError::conflict(format!("agent id {id} is taken")));
        }
        let entry = &self.swarms[&swarm_id];
        let same_name = entry
            .agents
            .iter()
            .find(|a| self.agents[*a].agent.name == name)
            .copied();
        if let Some(old) = same_name {
            let old = &self.agents[&old].agent;
            let status = old.status;
            let replaceable = matches!(status, AgentStatus::Unhealthy | AgentStatus::Failed);
            if old.managed.is_some() || !replaceable {
                return Err(CoreError::conflict(format!(
                    "an agent named {name:?} is already registered in swarm {:?} ({}); \
                     choose another name or remove it first",
                    entry.swarm.name,
                    status.as_str()
                )));
            }
        } else if entry.agents.len() >= entry.swarm.config.max_agents as usize {
            return Err(CoreError::conflict(format!(
                "swarm {:?} already has its maximum of {} agents",
                entry.swarm.name, entry.swarm.config.max_agents
            )));
        } else if entry.swarm.topology == crate::swarm::Topology::Star {
            let star = &entry.swarm.config.topology.star;
            let room = (star.coordinator_count + star.max_workers) as usize;
            if entry.agents.len() >= room {
                return Err(CoreError::conflict(format!(
                    "swarm {:?} is a star with room for {} coordinator(s) and {} workers, and it is full; \
                     raise config.topology.star.max_workers or register in another swarm",
                    entry.swarm.name, star.coordinator_count, star.max_workers
                )));
            }
        }
        if let Some(old) = same_name {
            self.unregister_agent(old, now)?;
        }
        let lease = self.swarms[&swarm_id].swarm.config.lease_duration();
        let agent = Agent {
            id,
            swarm_id,
            name,
            agent_type: spec.agent_type,
            capabilities,
            max_concurrent_tasks: spec.max_concurrent_tasks,
            role: AgentRole::Worker,
            requested_role: spec.role,
            status: AgentStatus::Idle,
            reported_health: Default::default(),
            metadata,
            resource_usage: Default::default(),
            current_tasks: Vec::new(),
            tasks_completed: 0,
            tasks_failed: 0,
            registered_at: now,
            last_heartbeat_at: now,
            lease_until: now + lease,
            stopped_at: None,
            removed_at: None,
            managed: None,
            health: Default::default(),
            checkpoints: Vec::new(),
            subscriptions: Vec::new(),
        };
        let detail = format!("{} ({}) joined", agent.name, agent.agent_type);
        self.insert_agent(agent, detail, now);
        // Its place in the topology, at once.
        self.dispatch(now);
        Ok(&self.agents[&id].agent)
    }

    /// Adds a new agent to the fleet and its swarm, with its lease timer when it needs one.
    pub(super) fn insert_agent(&mut self, agent: Agent, detail: String, now: Timestamp) {
        let (id, swarm_id, status) = (agent.id, agent.swarm_id, agent.status);
        let swarm = self.swarms.get_mut(&swarm_id).expect("agent's swarm");
        swarm.agents.insert(id);
        swarm.agent_counts[status_index(status)] += 1;
        let armed = needs_lease(&agent);
        if armed {
            self.timers.insert(agent.lease_until, Timer::AgentLease(id));
        }
        self.agents.insert(
            id,
            AgentEntry {
                agent,
                wait_seq: None,
                polling: false,
                lease_timer_armed: armed,
                persisted_heartbeat_at: now,
                dirty: false,
                local: Default::default(),
                placed_seq: 0,
                swrr: 0.0,
            },
        );
        self.mark_agent(id);
        self.note_member(swarm_id, id);
        self.emit(
            now,
            EventKind::AgentJoined,
            swarm_id,
            Some(id),
            None,
            detail,
        );
        self.refresh_swarm_status(swarm_id, now);
    }

    /// Unregisters an agent. The tasks it holds go back to the queue without counting an
    /// attempt: leaving is not failing.
    pub fn unregister_agent(&mut self, id: AgentId, now: Timestamp) -> Result<(), CoreError> {
        let Some(entry) = self.agents.get(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        let held = entry.agent.current_tasks.clone();
        let swarm_id = entry.agent.swarm_id;
        self.stop_polling(id);
        for task in held {
            self.requeue(task, "its agent left", now);
        }
        self.return_local(id);
        self.forget_affinity(swarm_id, id);
        self.dead_letter_inbox(id, "recipient removed", now);
        if !self.out.dispatch.contains(&swarm_id) {
            self.out.dispatch.push(swarm_id);
        }
        let mut entry = self.agents.remove(&id).expect("agent present");
        if let Some(s) = self.swarms.get_mut(&swarm_id) {
            s.agents.remove(&id);
            s.agent_counts[status_index(entry.agent.status)] -= 1;
        }
        self.out.agents.retain(|a| *a != id);
        entry.agent.status = AgentStatus::Stopped;
        entry.agent.stopped_at = Some(now);
        entry.agent.removed_at = Some(now);
        entry.agent.current_tasks.clear();
        // Its checkpoints go with it.
        for c in entry.agent.checkpoints.drain(..) {
            self.out.deleted_checkpoints.push(c.id);
            self.out.discards.extend(c.workspace);
        }
        if entry.agent.managed.is_some() {
            // Its process, if any, goes with it.
            self.out.effects.push(Effect::StopAgent(id, false));
        }
        let detail = format!("{} left", entry.agent.name);
        self.out.removed_agents.push(entry.agent);
        self.emit(now, EventKind::AgentLeft, swarm_id, Some(id), None, detail);
        self.note_member(swarm_id, id);
        self.refresh_swarm_status(swarm_id, now);
        self.dispatch(now);
        Ok(())
    }

    /// Renews an agent's lease: it showed a sign of life. An agent that had lost its lease
    /// recovers (without the tasks it lost).
    pub(super) fn touch(&mut self, id: AgentId, now: Timestamp) -> Result<(), CoreError> {
        let Some(entry) = self.agents.get_mut(&id) else {
            return Err(CoreError::not_found(format!(
                "agent {id} not found; it may have been removed: register again"
            )));
        };
        let lease = self.swarms[&entry.agent.swarm_id]
            .swarm
            .config
            .lease_duration();
        let previous = entry.agent.last_heartbeat_at;
        entry.agent.last_heartbeat_at = now;
        entry.agent.lease_until = now + lease;
        let persist_due =
            now.since(entry.persisted_heartbeat_at) >= self.limits.heartbeat_persist_interval;
        if matches!(
            entry.agent.status,
            AgentStatus::Starting | AgentStatus::Pending
        ) && entry.agent.managed.is_some()
        {
            // A managed daemon's first call (it may come before its start is recorded): it is up.
            self.set_agent_status(id, AgentStatus::Idle, now);
            self.refresh_agent_status(id);
        } else if entry.agent.status == AgentStatus::Unhealthy
            && entry.agent.health.reason != Some(crate::health::HealthReason::Memory)
        {
            let swarm_id = entry.agent.swarm_id;
            let silent = now.since(previous);
            if !entry.lease_timer_armed {
                entry.lease_timer_armed = true;
                self.timers.insert(now + lease, Timer::AgentLease(id));
            }
            self.set_agent_status(id, AgentStatus::Idle, now);
            self.refresh_agent_status(id);
            self.emit(
                now,
                EventKind::AgentRecovered,
                swarm_id,
                Some(id),
                None,
                format!("heard from again after {:.1}s", silent.as_secs_f64()),
            );
            self.set_health(
                id,
                crate::health::HealthState::Healthy,
                None,
                String::new(),
                now,
            );
            self.judge(id, now);
        } else if persist_due {
            self.mark_agent(id);
        }
        Ok(())
    }

    /// Records a heartbeat: renews the lease and stores the reported health and usage.
    pub fn heartbeat(
        &mut self,
        id: AgentId,
        heartbeat: Heartbeat,
        now: Timestamp,
    ) -> Result<HeartbeatAck, CoreError> {
        if let Some(usage) = &heartbeat.resource_usage {
            usage.validate()?;
        }
        self.touch(id, now)?;
        let entry = self.agents.get_mut(&id).expect("touched agent");
        if let Some(h) = heartbeat.status
            && h != entry.agent.reported_health
        {
            entry.agent.reported_health = h;
            self.mark_agent(id);
        }
        let entry = self.agents.get_mut(&id).expect("touched agent");
        let reported = heartbeat.status.is_some();
        let usage = heartbeat.resource_usage.is_some();
        // Recorded as it arrived, before any judgement below changes the agent.
        if let Some(u) = heartbeat.resource_usage {
            entry.agent.resource_usage = u;
        }
        self.observe_heartbeat(id, usage, now);
        if usage {
            self.check_usage(id, now);
        } else if reported {
            self.judge(id, now);
        }
        // Its capacity may have changed with its word.
        self.rejoin_if_polling(id);
        let revoked_tasks = match heartbeat.running_tasks {
            Some(listed) => self.reconcile(id, &listed, now),
            None => Vec::new(),
        };
        let agent = &self.agents[&id].agent;
        Ok(HeartbeatAck {
            agent_id: id,
            status: agent.status,
            lease_until: agent.lease_until,
            heartbeat_interval_ms: self.swarms[&agent.swarm_id]
                .swarm
                .config
                .heartbeat_interval
                .as_millis() as u64,
            revoked_tasks,
        })
    }

    /// Compares what an agent says it runs with what it holds: tasks it never received go back
    /// to the queue; returns the listed tasks it no longer holds.
    fn reconcile(&mut self, id: AgentId, listed: &[TaskId], now: Timestamp) -> Vec<TaskId> {
        let agent = &self.agents[&id].agent;
        let grace = self.swarms[&agent.swarm_id].swarm.config.heartbeat_interval;
        let unknown: Vec<TaskId> = agent
            .current_tasks
            .iter()
            .copied()
            .filter(|t| !listed.contains(t))
            .filter(|t| match self.tasks[t].task.state {
                TaskState::Running { started_at, .. } => now.since(started_at) > grace,
                _ => false,
            })
            .collect();
        for task in unknown {
            self.requeue(
                task,
                "its agent never received it (the answer handing it over was lost)",
                now,
            );
        }
        let agent = &self.agents[&id].agent;
        listed
            .iter()
            .copied()
            .filter(|t| !agent.current_tasks.contains(t))
            .collect()
    }

    /// Gives an agent its next task, which becomes `running` on it: a task already placed on
    /// it, else the best ready task it can do. With none, the agent is marked as waiting, so
    /// the next task that becomes ready is placed on it (and [`crate::Effect::WakeAgent`] is
    /// emitted). The driver calls [`Fleet::stop_polling`] when the agent stops waiting.
    pub fn take_task(&mut self, id: AgentId, now: Timestamp) -> Result<Option<Task>, CoreError> {
        self.touch(id, now)?;
        let agent = &self.agents[&id].agent;
        let stopping = agent
            .managed
            .as_ref()
            .is_some_and(|m| m.desired == Desired::Stopped);
        if !matches!(agent.status, AgentStatus::Idle | AgentStatus::Busy) || stopping {
            // Its poll stays noted: it waits for work once it is back in service.
            self.agents.get_mut(&id).expect("touched agent").polling = true;
            return Ok(None);
        }
        let placed = agent
            .current_tasks
            .iter()
            .copied()
            .find(|t| matches!(self.tasks[t].task.state, TaskState::Assigned { .. }));
        let next = match placed {
            Some(t) => Some(t),
            None => self.take_next_for(id, now),
        };
        match next {
            Some(task) => {
                self.start(task, id, now);
                // Its local queue has room again: a prefetching swarm fills it.
                self.dispatch(now);
                Ok(Some(self.tasks[&task].task.clone()))
            }
            None => {
                let entry = self.agents.get_mut(&id).expect("touched agent");
                entry.polling = true;
                let agent = &entry.agent;
                if agent.current_tasks.len() < super::health::capacity(agent) {
                    self.start_waiting(id);
                }
                Ok(None)
            }
        }
    }

    /// The agent no longer waits for a task (its poll ended).
    pub fn stop_polling(&mut self, id: AgentId) {
        if let Some(e) = self.agents.get_mut(&id) {
            e.polling = false;
        }
        self.stop_waiting(id);
    }

    /// Starts a new attempt of a task on an agent.
    fn start(&mut self, task: TaskId, agent: AgentId, now: Timestamp) {
        let entry = self.tasks.get_mut(&task).expect("task to start");
        entry.task.attempts += 1;
        entry.task.progress = None;
        let attempt = entry.task.attempts;
        // A pool's task timeout caps the attempts of its agents.
        let pool_cap = self
            .template_of(agent)
            .and_then(|(_, p)| p.template.as_ref()?.limits.task_timeout);
        let entry = self.tasks.get_mut(&task).expect("task to start");
        let timeout = pool_cap.map_or(entry.task.timeout, |c| c.min(entry.task.timeout));
        let timeout_at = now + timeout;
        let swarm_id = entry.task.swarm_id;
        self.transition(
            task,
            TaskState::Running {
                agent_id: agent,
                started_at: now,
                timeout_at,
            },
            now,
        );
        self.timers
            .insert(timeout_at, Timer::TaskTimeout(task, attempt));
        self.watch_attempt(task, attempt, agent, now);
        self.emit(
            now,
            EventKind::TaskStarted,
            swarm_id,
            Some(agent),
            Some(task),
            format!("attempt {attempt}"),
        );
    }
}

/// Whether an agent's liveness depends on its lease: not while paused (its lease is held),
/// not for exec-mode managed agents (the coordinator itself runs their processes and sees them
/// exit), and not while a managed agent has no process (pending, stopped, failed).
pub(super) fn needs_lease(agent: &Agent) -> bool {
    match agent.status {
        AgentStatus::Paused
        | AgentStatus::Pending
        | AgentStatus::Stopped
        | AgentStatus::Failed
        | AgentStatus::Recovering => false,
        _ => !agent.is_exec(),
    }
}
