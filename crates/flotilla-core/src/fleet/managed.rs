//! Pools and managed agents: agents whose processes Flotilla starts from a pool's template.
//!
//! The core decides; the driver's supervisor acts. A lifecycle command changes the agent's
//! state and emits an effect (start, stop, pause, resume, restart); the supervisor carries it
//! out with the runtime and reports back with [`Fleet::managed_started`] and
//! [`Fleet::managed_exited`]. Process exits are reported at once, so a crashed agent's tasks go
//! back to the queue without waiting for a lease to lapse.

use super::Fleet;
use crate::agent::{Agent, AgentStatus, Desired, Managed, ResourceUsage};
use crate::changes::Effect;
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, SwarmId};
use crate::json::Json;
use crate::pool::{Operation, Pool, PoolSpec};
use crate::swarm::DEFAULT_SWARM;
use crate::time::Timestamp;

/// What [`Fleet::put_pool`] did.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PoolChange {
    /// The pool is new.
    Created,
    /// The pool existed and changed.
    Updated,
    /// The pool existed as given.
    Unchanged,
}

impl Fleet {
    /// Creates or replaces a pool of a swarm. Managed agents already running keep their
    /// process until restarted; new ones start from the new template.
    pub fn put_pool(
        &mut self,
        swarm: &str,
        spec: PoolSpec,
        now: Timestamp,
    ) -> Result<(PoolChange, &Pool), CoreError> {
        let swarm_id = self.resolve_swarm(swarm)?;
        let spec = spec.validated()?;
        let name = spec.name.clone();
        let entry = self.swarms.get_mut(&swarm_id).expect("resolved swarm");
        let change = match entry.pools.get_mut(&name) {
            Some(p)
                if p.min_agents == spec.min_agents
                    && p.max_agents == spec.max_agents
                    && p.capabilities == spec.capabilities
                    && p.max_concurrent_tasks == spec.max_concurrent_tasks
                    && p.template == spec.template
                    && p.checkpoints == spec.checkpoints
                    && p.priority == spec.priority
                    && p.resources == spec.resources
                    && p.scaling == spec.scaling =>
            {
                PoolChange::Unchanged
            }
            Some(p) => {
                p.min_agents = spec.min_agents;
                p.max_agents = spec.max_agents;
                p.capabilities = spec.capabilities;
                p.max_concurrent_tasks = spec.max_concurrent_tasks;
                p.template = spec.template;
                p.checkpoints = spec.checkpoints;
                p.priority = spec.priority;
                p.resources = spec.resources;
                p.scaling = spec.scaling;
                // A size asked for earlier stays, within the new bounds.
                p.desired_agents = p
                    .desired_agents
                    .map(|n| n.clamp(p.min_agents, p.max_agents));
                p.updated_at = now;
                PoolChange::Updated
            }
            None => {
                let pool = Pool {
                    swarm_id,
                    name: name.clone(),
                    min_agents: spec.min_agents,
                    max_agents: spec.max_agents,
                    capabilities: spec.capabilities,
                    max_concurrent_tasks: spec.max_concurrent_tasks,
                    template: spec.template,
                    checkpoints: spec.checkpoints,
                    priority: spec.priority,
                    resources: spec.resources,
                    scaling: spec.scaling,
                    desired_agents: None,
                    created_at: now,
                    updated_at: now,
                };
                entry.pools.insert(name.clone(), pool);
                PoolChange::Created
            }
        };
        if change != PoolChange::Unchanged {
            self.mark_pool(swarm_id, &name);
            let verb = if change == PoolChange::Created {
                "created"
            } else {
                "updated"
            };
            self.emit(
                now,
                EventKind::PoolUpdated,
                swarm_id,
                None,
                None,
                format!("pool {name:?} {verb}"),
            );
        }
        Ok((change, &self.swarms[&swarm_id].pools[&name]))
    }

    /// Deletes a pool. Without `force` it must have no agents; with `force` its agents are
    /// removed (managed ones stopped).
    pub fn delete_pool(
        &mut self,
        swarm: &str,
        name: &str,
        force: bool,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let swarm_id = self.resolve_swarm(swarm)?;
        if !self.swarms[&swarm_id].pools.contains_key(name) {
            return Err(CoreError::not_found(format!(
                "pool {name:?} not found in swarm {swarm:?}"
            )));
        }
        let members = self.pool_members(swarm_id, name);
        if !members.is_empty() && !force {
            return Err(CoreError::conflict(format!(
                "pool {name:?} has {} agent(s); remove them first or delete with force (--force)",
                members.len()
            )));
        }
        for id in members {
            self.unregister_agent(id, now)?;
        }
        self.swarms
            .get_mut(&swarm_id)
            .expect("swarm")
            .pools
            .remove(name);
        self.out
            .pools
            .retain(|(s, n)| !(*s == swarm_id && n == name));
        self.out.deleted_pools.push((swarm_id, name.to_owned()));
        self.forget_pool_waits(swarm_id, name);
        self.emit(
            now,
            EventKind::PoolDeleted,
            swarm_id,
            None,
            None,
            format!("pool {name:?} deleted"),
        );
        Ok(())
    }

    /// A swarm's pools, by name.
    pub fn pools_of(&self, swarm: SwarmId) -> Vec<Pool> {
        self.swarms
            .get(&swarm)
            .map(|s| s.pools.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The agents of a pool (its type), by id.
    pub(super) fn pool_members(&self, swarm: SwarmId, pool: &str) -> Vec<AgentId> {
        let mut ids: Vec<AgentId> = self.swarms[&swarm]
            .agents
            .iter()
            .filter(|a| self.agents[*a].agent.agent_type == pool)
            .copied()
            .collect();
        ids.sort();
        ids
    }

    /// Managed pools with fewer managed agents than their desired size (`desired_agents`, set
    /// by a scale or the autoscaler; `min_agents` when none was), and how many each lacks. The
    /// driver spawns them ([`Fleet::spawn_agent`]). A stopped or failed agent still counts: a
    /// user's stop is not undone behind their back, and restarting failed agents is the health
    /// policy's decision. An agent draining out of the pool does not count, but while it is
    /// still there it takes a place under `max_agents`.
    pub fn pools_short_of_agents(&self) -> Vec<(SwarmId, String, u32)> {
        let mut short = Vec::new();
        for (swarm_id, s) in &self.swarms {
            for pool in s.pools.values().filter(|p| p.is_managed()) {
                let want = Self::desired_size(pool);
                if want == 0 {
                    continue;
                }
                let (mut staying, mut present) = (0u32, 0u32);
                for a in s.agents.iter().map(|a| &self.agents[a].agent) {
                    // One that recovery gave up on is replaced.
                    if a.agent_type != pool.name || a.managed.is_none() || a.health.recovery.gave_up
                    {
                        continue;
                    }
                    present += 1;
                    if !self.is_draining(a.id) {
                        staying += 1;
                    }
                }
                let lacking = want
                    .saturating_sub(staying)
                    .min(pool.max_agents.saturating_sub(present));
                if lacking > 0 {
                    short.push((*swarm_id, pool.name.clone(), lacking));
                }
            }
        }
        short.sort();
        short
    }

    /// Creates a managed agent in a pool from its template, and asks for it to be started.
    /// Its name is `<pool>-<n>` (prefixed with the swarm's name outside the default swarm, so
    /// that names, and tmux sessions, are unique on the machine).
    pub fn spawn_agent(
        &mut self,
        swarm: &str,
        pool: &str,
        id: AgentId,
        now: Timestamp,
    ) -> Result<&Agent, CoreError> {
        let swarm_id = self.resolve_swarm(swarm)?;
        let s = &self.swarms[&swarm_id];
        let Some(p) = s.pools.get(pool) else {
            return Err(CoreError::not_found(format!(
                "pool {pool:?} not found in swarm {:?}; create it with `flotilla apply FLEET.toml`",
                s.swarm.name
            )));
        };
        let Some(template) = &p.template else {
            return Err(CoreError::conflict(format!(
                "pool {pool:?} has no agent template, so Flotilla cannot start its agents; connect agents to it instead"
            )));
        };
        // Agents recovery gave up on are replaced: they do not count.
        let members = self
            .pool_members(swarm_id, pool)
            .iter()
            .filter(|a| !self.agents[*a].agent.health.recovery.gave_up)
            .count();
        if members >= p.max_agents as usize {
            return Err(CoreError::conflict(format!(
                "pool {pool:?} already has its maximum of {} agents",
                p.max_agents
            )));
        }
        if s.agents.len() >= s.swarm.config.max_agents as usize {
            return Err(CoreError::conflict(format!(
                "swarm {:?} already has its maximum of {} agents",
                s.swarm.name, s.swarm.config.max_agents
            )));
        }
        if self.agents.contains_key(&id) {
            return Err(CoreError::conflict(format!("agent id {id} is taken")));
        }
        let prefix = if s.swarm.name == DEFAULT_SWARM {
            pool.to_owned()
        } else {
            format!("{}-{pool}", s.swarm.name)
        };
        let taken: std::collections::HashSet<&str> = s
            .agents
            .iter()
            .map(|a| self.agents[a].agent.name.as_str())
            .collect();
        let name = (1..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|n| !taken.contains(n.as_str()))
            .expect("a free name");
        let agent = Agent {
            id,
            swarm_id,
            name,
            agent_type: pool.to_owned(),
            capabilities: p.capabilities.clone(),
            max_concurrent_tasks: p.max_concurrent_tasks,
            role: Default::default(),
            // A pool named after a senior role asks for it (the seed's `coordinator` type).
            requested_role: crate::agent::AgentRole::ALL
                .into_iter()
                .find(|r| r.as_str() == pool)
                .unwrap_or_default(),
            status: AgentStatus::Pending,
            reported_health: Default::default(),
            metadata: Json::empty_object(),
            resource_usage: Default::default(),
            current_tasks: Vec::new(),
            tasks_completed: 0,
            tasks_failed: 0,
            registered_at: now,
            last_heartbeat_at: now,
            lease_until: now,
            stopped_at: None,
            removed_at: None,
            managed: Some(Managed {
                runtime: template.runtime,
                mode: template.mode,
                ..Managed::default()
            }),
            health: Default::default(),
            checkpoints: Vec::new(),
            subscriptions: Vec::new(),
        };
        let detail = format!("{} spawned from pool {pool:?}", agent.name);
        self.insert_agent(agent, detail, now);
        self.out.effects.push(Effect::StartAgent(id));
        Ok(&self.agents[&id].agent)
    }

    /// The template a managed agent is started from (its pool's).
    pub fn template_of(&self, id: AgentId) -> Option<(&Agent, &Pool)> {
        let agent = &self.agents.get(&id)?.agent;
        agent.managed.as_ref()?;
        let pool = self
            .swarms
            .get(&agent.swarm_id)?
            .pools
            .get(&agent.agent_type)?;
        pool.template.as_ref()?;
        Some((agent, pool))
    }

    /// Starts, stops, pauses, resumes or restarts an agent. Pause and resume work for every
    /// agent (a paused agent takes no task and keeps its lease); the others only for managed
    /// agents.
    pub fn lifecycle(
        &mut self,
        id: AgentId,
        operation: Operation,
        force: bool,
        now: Timestamp,
    ) -> Result<&Agent, CoreError> {
        let Some(entry) = self.agents.get(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        let agent = &entry.agent;
        let (swarm_id, status, name) = (agent.swarm_id, agent.status, agent.name.clone());
        let managed = agent.managed.is_some();
        let desired = agent.managed.as_ref().map(|m| m.desired);
        let refuse = |what: &str| {
            Err(CoreError::conflict(format!(
                "agent {name} is {}; it cannot be {what}",
                status.as_str()
            )))
        };
        match operation {
            Operation::Pause => {
                if !matches!(
                    status,
                    AgentStatus::Idle | AgentStatus::Busy | AgentStatus::Starting
                ) {
                    return refuse("paused");
                }
                self.stop_polling(id);
                self.set_agent_status(id, AgentStatus::Paused, now);
                if managed {
                    self.out.effects.push(Effect::PauseAgent(id));
                }
                self.emit(
                    now,
                    EventKind::AgentPaused,
                    swarm_id,
                    Some(id),
                    None,
                    String::new(),
                );
            }
            Operation::Resume => {
                if status != AgentStatus::Paused {
                    return refuse("resumed (only a paused agent can)");
                }
                self.set_agent_status(id, AgentStatus::Idle, now);
                self.refresh_agent_status(id);
                self.arm_lease(id, now);
                if managed {
                    self.out.effects.push(Effect::ResumeAgent(id));
                }
                self.emit(
                    now,
                    EventKind::AgentResumed,
                    swarm_id,
                    Some(id),
                    None,
                    String::new(),
                );
                self.dispatch(now);
            }
            Operation::Start | Operation::Stop | Operation::Restart if !managed => {
                return Err(CoreError::conflict(format!(
                    "agent {name} is a connected agent, not started by Flotilla; only pause, resume and remove apply to it"
                )));
            }
            Operation::Start => {
                let stopped = matches!(status, AgentStatus::Stopped | AgentStatus::Failed);
                if !stopped && desired == Some(Desired::Running) {
                    return refuse("started (it is not stopped)");
                }
                self.set_desired(id, Desired::Running);
                self.reset_recovery(id);
                if stopped || status == AgentStatus::Recovering {
                    self.set_agent_status(id, AgentStatus::Pending, now);
                }
                self.out.effects.push(Effect::StartAgent(id));
            }
            Operation::Stop => {
                if matches!(status, AgentStatus::Stopped) && desired == Some(Desired::Stopped) {
                    return refuse("stopped");
                }
                self.stop_polling(id);
                self.set_desired(id, Desired::Stopped);
                self.reset_recovery(id);
                if matches!(
                    status,
                    AgentStatus::Failed | AgentStatus::Pending | AgentStatus::Recovering
                ) {
                    // No process to stop.
                    self.set_agent_status(id, AgentStatus::Stopped, now);
                    self.entry_mut(id).agent.stopped_at = Some(now);
                }
                self.out.effects.push(Effect::StopAgent(id, force));
            }
            Operation::Rollback => {
                self.rollback(id, None, now)?;
            }
            Operation::Restart => {
                self.stop_polling(id);
                self.set_desired(id, Desired::Running);
                self.reset_recovery(id);
                if matches!(
                    status,
                    AgentStatus::Stopped
                        | AgentStatus::Failed
                        | AgentStatus::Recovering
                        | AgentStatus::Pending
                ) {
                    // No process of its own is running: a restart is a start.
                    self.set_agent_status(id, AgentStatus::Pending, now);
                }
                self.out.effects.push(Effect::RestartAgent(id, force));
            }
        }
        self.mark_agent(id);
        Ok(&self.agents[&id].agent)
    }

    /// A managed agent, or why not.
    pub(super) fn managed_agent_mut(&mut self, id: AgentId) -> Result<&mut Agent, CoreError> {
        let Some(entry) = self.agents.get_mut(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        if entry.agent.managed.is_none() {
            return Err(CoreError::conflict(format!("agent {id} is not managed")));
        }
        Ok(&mut entry.agent)
    }

    fn entry_mut(&mut self, id: AgentId) -> &mut super::AgentEntry {
        self.agents.get_mut(&id).expect("agent present")
    }

    fn set_desired(&mut self, id: AgentId, desired: Desired) {
        if let Some(m) = self.entry_mut(id).agent.managed.as_mut() {
            m.desired = desired;
            // A user who starts, stops or restarts an agent draining out of its pool keeps it.
            m.drain = None;
        }
        self.recheck_local(id);
    }

    /// The supervisor started a managed agent's process (daemon mode: `pid` is its process
    /// group) or, in exec mode, its task loop. A daemon is `starting` until its first call; an
    /// exec-mode agent is `idle` at once.
    pub fn managed_started(
        &mut self,
        id: AgentId,
        pid: Option<u32>,
        limits_applied: Option<String>,
        now: Timestamp,
    ) -> Result<&Agent, CoreError> {
        let agent = self.managed_agent_mut(id)?;
        let m = agent.managed.as_mut().expect("managed");
        m.pid = pid;
        m.started_at = Some(now);
        m.starts += 1;
        m.limits_applied = limits_applied;
        let host = m.host.clone();
        let exec = agent.is_exec();
        let mut detail = pid.map(|p| format!("pid {p}")).unwrap_or_default();
        if let Some(host) = &host {
            detail = format!("{detail} on host {host}").trim_start().to_owned();
        }
        let swarm_id = agent.swarm_id;
        agent.stopped_at = None;
        agent.last_heartbeat_at = now;
        let heard_from = matches!(
            self.agents[&id].agent.status,
            AgentStatus::Idle | AgentStatus::Busy
        );
        let status = if exec || heard_from {
            AgentStatus::Idle
        } else {
            AgentStatus::Starting
        };
        self.set_agent_status(id, status, now);
        self.refresh_agent_status(id);
        self.arm_lease(id, now);
        self.mark_agent(id);
        // A fresh process: what was judged of the last one no longer holds.
        if let Some(e) = self.agents.get_mut(&id) {
            let h = &mut e.agent.health;
            h.stuck = None;
            h.recovery.rollback_to = None;
            h.breaker = crate::health::Breaker::Closed;
            h.consecutive_failures = 0;
            e.agent.resource_usage = Default::default();
        }
        self.set_health(
            id,
            crate::health::HealthState::Healthy,
            None,
            String::new(),
            now,
        );
        self.emit(
            now,
            EventKind::AgentStarted,
            swarm_id,
            Some(id),
            None,
            detail,
        );
        self.dispatch(now);
        Ok(&self.agents[&id].agent)
    }

    /// A managed agent's process exited (or, in exec mode, its task loop ended), described
    /// in words. `expected`: the supervisor stopped it (a stop or a restart), so the agent is
    /// `stopped` and its tasks go back to the queue without costing an attempt. Otherwise it
    /// is down (`Fleet::agent_down`): its running tasks fail their attempt (`agent_exited`,
    /// retried at once), and it recovers by the swarm's ladder. The exit of a process that
    /// recovery itself killed changes nothing more.
    pub fn managed_exited(
        &mut self,
        id: AgentId,
        exit: String,
        expected: bool,
        now: Timestamp,
    ) -> Result<&Agent, CoreError> {
        let agent = self.managed_agent_mut(id)?;
        let m = agent.managed.as_mut().expect("managed");
        m.pid = None;
        m.last_exit = Some(exit.clone());
        agent.stopped_at = Some(now);
        let (swarm_id, held, status) = (agent.swarm_id, agent.current_tasks.clone(), agent.status);
        if agent.managed.as_ref().is_some_and(|m| m.drain.is_some()) {
            // Drained out of its pool (or, if it died while draining, its tasks go back to the
            // queue without costing an attempt): it leaves.
            self.remove_drained(id, now);
            // The agent as it was removed.
            return Ok(self
                .out
                .removed_agents
                .last()
                .expect("a removed agent is kept for the store"));
        }
        if status == AgentStatus::Recovering || agent.health.recovery.gave_up {
            // Killed by recovery, which already took its tasks back and decides what is next.
            self.mark_agent(id);
            return Ok(&self.agents[&id].agent);
        }
        if !expected {
            self.agent_down(
                id,
                crate::health::HealthReason::ProcessExited,
                format!("its process {exit}"),
                now,
            );
            return Ok(&self.agents[&id].agent);
        }
        self.stop_polling(id);
        for task in held {
            self.requeue(task, "its agent stopped", now);
        }
        self.set_agent_status(id, AgentStatus::Stopped, now);
        self.mark_agent(id);
        self.emit(
            now,
            EventKind::AgentStopped,
            swarm_id,
            Some(id),
            None,
            format!("process {exit}"),
        );
        self.dispatch(now);
        Ok(&self.agents[&id].agent)
    }

    /// Records resource usage sampled from a managed agent's processes (persisted with the
    /// agent's next write, like heartbeats).
    pub fn record_usage(&mut self, id: AgentId, usage: ResourceUsage, now: Timestamp) {
        if let Some(e) = self.agents.get_mut(&id) {
            e.agent.resource_usage = usage;
        }
        self.observe_usage(id, now);
        self.check_usage(id, now);
        self.dispatch(now);
    }

    /// Settles the managed ones among agents just restored or adopted.
    pub(super) fn restored_managed(&mut self, agents: &[AgentId], now: Timestamp) {
        // After a restart (or a takeover) no managed process is known to run: the supervisor
        // starts those meant to run; their held tasks go back to the queue without costing an
        // attempt.
        let ids: Vec<AgentId> = agents
            .iter()
            .copied()
            .filter(|id| {
                self.agents
                    .get(id)
                    .is_some_and(|e| e.agent.managed.is_some())
            })
            .collect();
        for id in ids {
            if !self.agents.contains_key(&id) {
                continue;
            }
            let held = self.agents[&id].agent.current_tasks.clone();
            for task in held {
                self.requeue(
                    task,
                    "the coordinator restarted while its managed agent ran it",
                    now,
                );
            }
            if self.is_draining(id) {
                // It was leaving its pool; its process is gone: it leaves now.
                self.remove_drained(id, now);
                continue;
            }
            let desired = self.agents[&id].agent.managed.as_ref().map(|m| m.desired);
            let status = self.agents[&id].agent.status;
            let gave_up = self.agents[&id].agent.health.recovery.gave_up;
            if gave_up {
                // Recovery gave up on it (and its pool replaced it): it stays failed.
                if status != AgentStatus::Failed {
                    self.set_agent_status(id, AgentStatus::Failed, now);
                }
            } else if desired == Some(Desired::Running) {
                // A restart that was waiting for its backoff happens now.
                if let Some(e) = self.agents.get_mut(&id) {
                    e.agent.health.recovery.next_at = None;
                }
                self.set_agent_status(id, AgentStatus::Pending, now);
                self.out.effects.push(Effect::StartAgent(id));
            } else if status != AgentStatus::Stopped {
                self.set_agent_status(id, AgentStatus::Stopped, now);
            }
            // `managed.pid` is kept: the supervisor makes sure that process group is gone
            // before it starts a new one.
            self.mark_agent(id);
        }
    }
}
