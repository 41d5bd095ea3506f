//! Pool sizes: each pool's metrics, resizing a managed pool (by hand or by the autoscaler of
//! [`crate::autoscale`]), and draining agents out of a pool that shrinks.
//!
//! A resize records the pool's `desired_agents` and emits `pool_scaled` with its reason. Growing
//! first keeps agents that were draining out, then [`Fleet::pools_short_of_agents`] tells the
//! driver to spawn the rest. Shrinking drains agents, idle ones first, then the least loaded,
//! newest first: a draining agent takes no new task (its managed `desired` is `stopped`, which
//! `take_task` and dispatch honour), gives back the tasks placed on it but not yet taken,
//! finishes those it runs, and only then is stopped ([`Fleet::settle_drains`]) and removed
//! when its process has ended ([`Fleet::managed_exited`]). No task is cut short.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use super::Fleet;
use crate::agent::{AgentStatus, Desired, Drain};
use crate::api::{PoolQueue, PoolSize, PoolView, ScaleAnswer};
use crate::autoscale::WaitWindow;
use crate::changes::Effect;
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, SwarmId};
use crate::pool::Pool;
use crate::task::TaskState;
use crate::time::Timestamp;

/// What the fleet keeps for scaling besides the pools themselves.
#[derive(Debug, Default)]
pub(super) struct ScalingState {
    /// Recent queue waits of each pool's tasks.
    waits: HashMap<(SwarmId, String), WaitWindow>,
    /// Agents draining out of their pool.
    draining: BTreeSet<AgentId>,
}

impl ScalingState {
    /// Forgets a released swarm's pools' waits and its draining agents.
    pub(super) fn release(&mut self, swarm: SwarmId, agents: &HashSet<AgentId>) {
        self.waits.retain(|(s, _), _| *s != swarm);
        self.draining.retain(|a| !agents.contains(a));
    }
}

/// The size a resize asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleTarget {
    /// This many agents.
    To(u32),
    /// This many more (or fewer, when negative) than the pool's desired size.
    By(i64),
}

impl Fleet {
    /// The desired size of a pool: what was asked for, `min_agents` when nothing was, within
    /// its bounds.
    pub(super) fn desired_size(pool: &Pool) -> u32 {
        pool.desired_agents
            .unwrap_or(pool.min_agents)
            .clamp(pool.min_agents, pool.max_agents)
    }

    /// A pool's size, load and queue at `now` (see [`PoolView`]).
    pub fn pool_view(&self, swarm: SwarmId, pool: &str, now: Timestamp) -> Option<PoolView> {
        let s = self.swarms.get(&swarm)?;
        let p = s.pools.get(pool)?;
        let window = s.swarm.config.health.error_rate_window;
        let mut size = PoolSize {
            desired: Self::desired_size(p),
            min: p.min_agents,
            max: p.max_agents,
            ..PoolSize::default()
        };
        let (mut held, mut slots) = (0u64, 0u64);
        let (mut outcomes, mut failures) = (0u64, 0u64);
        for a in s.agents.iter().map(|id| &self.agents[id].agent) {
            if a.agent_type != p.name {
                continue;
            }
            *size.by_status.entry(a.status).or_default() += 1;
            let draining = a.managed.as_ref().is_some_and(|m| m.drain.is_some());
            if draining {
                size.draining += 1;
            } else if !a.health.recovery.gave_up {
                size.current += 1;
            }
            if !draining && matches!(a.status, AgentStatus::Idle | AgentStatus::Busy) {
                held += a.current_tasks.len() as u64;
                slots += u64::from(a.max_concurrent_tasks);
            }
            let (rate, n) = a.health.error_rate(now - window);
            outcomes += n as u64;
            failures += (rate * n as f64).round() as u64;
        }
        let ready = s.queue.count_for(&p.capabilities) as u64;
        Some(PoolView {
            name: p.name.clone(),
            managed: p.is_managed(),
            priority: p.priority,
            utilization: if slots == 0 {
                0.0
            } else {
                held as f64 / slots as f64
            },
            queue: PoolQueue {
                ready,
                per_agent: ready as f64 / f64::from(size.current.max(1)),
            },
            error_rate: if outcomes == 0 {
                0.0
            } else {
                failures as f64 / outcomes as f64
            },
            recent_outcomes: outcomes,
            wait_p95_ms: self
                .scaling
                .waits
                .get(&(swarm, p.name.clone()))
                .and_then(|w| w.p95(now))
                .map(|d| d.as_millis() as u64),
            scaling_policies: p.scaling.iter().filter(|x| x.enabled).count(),
            size,
        })
    }

    /// Every pool of a swarm with its metrics, by name.
    pub fn pool_views(&self, swarm: SwarmId, now: Timestamp) -> Vec<PoolView> {
        let Some(s) = self.swarms.get(&swarm) else {
            return Vec::new();
        };
        s.pools
            .keys()
            .filter_map(|name| self.pool_view(swarm, name, now))
            .collect()
    }

    /// Whether some managed pool has an enabled scaling policy (without copying any).
    pub fn has_autoscaled_pools(&self) -> bool {
        self.swarms
            .values()
            .flat_map(|s| s.pools.values())
            .any(autoscaled)
    }

    /// Managed pools with at least one enabled scaling policy: the autoscaler's work.
    pub fn autoscaled_pools(&self) -> Vec<Pool> {
        let mut pools: Vec<Pool> = self
            .swarms
            .values()
            .flat_map(|s| s.pools.values())
            .filter(|p| autoscaled(p))
            .cloned()
            .collect();
        pools.sort_by(|a, b| (a.swarm_id, &a.name).cmp(&(b.swarm_id, &b.name)));
        pools
    }

    /// Resizes a managed pool: records its desired size and emits `pool_scaled` with `reason`.
    /// Growing keeps agents that were draining out (the driver spawns the rest, see
    /// [`Fleet::pools_short_of_agents`]); shrinking drains agents out (see the module
    /// documentation). Refused for an unknown or unmanaged pool and for a size outside its
    /// `min_agents..=max_agents`.
    pub fn scale_pool(
        &mut self,
        swarm: &str,
        pool: &str,
        target: ScaleTarget,
        reason: &str,
        now: Timestamp,
    ) -> Result<ScaleAnswer, CoreError> {
        let swarm_id = self.resolve_swarm(swarm)?;
        let s = &self.swarms[&swarm_id];
        let Some(p) = s.pools.get(pool) else {
            let names: Vec<&str> = s.pools.keys().map(String::as_str).collect();
            return Err(CoreError::not_found(format!(
                "pool {pool:?} not found in swarm {:?}; its pools: {}",
                s.swarm.name,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        };
        if !p.is_managed() {
            return Err(CoreError::conflict(format!(
                "pool {pool:?} has no agent template, so Flotilla does not start or stop its agents; \
                 only managed pools can be scaled"
            )));
        }
        let from = Self::desired_size(p);
        let wanted = match target {
            ScaleTarget::To(n) => i64::from(n),
            ScaleTarget::By(d) => i64::from(from).saturating_add(d),
        };
        let (min, max) = (p.min_agents, p.max_agents);
        if wanted < i64::from(min) || wanted > i64::from(max) {
            return Err(CoreError::invalid(format!(
                "pool {pool:?} takes {min} to {max} agents (its min_agents and max_agents); \
                 {wanted} is out of range"
            )));
        }
        let to = wanted as u32;
        let p = self
            .swarms
            .get_mut(&swarm_id)
            .expect("resolved swarm")
            .pools
            .get_mut(pool)
            .expect("pool found");
        if p.desired_agents != Some(to) {
            p.desired_agents = Some(to);
            p.updated_at = now;
            self.mark_pool(swarm_id, pool);
        }
        let (draining, kept) = self.fit_pool(swarm_id, pool, to, reason, now);
        let mut detail = format!("pool {pool:?}: {from} -> {to} agents; {reason}");
        if !draining.is_empty() {
            detail.push_str(&format!("; draining {}", draining.join(", ")));
        }
        if !kept.is_empty() {
            detail.push_str(&format!("; kept draining {}", kept.join(", ")));
        }
        self.emit(now, EventKind::PoolScaled, swarm_id, None, None, detail);
        if from != to {
            self.metrics.scaled(now, swarm_id, pool);
        }
        self.dispatch(now);
        let view = self.pool_view(swarm_id, pool, now).expect("pool exists");
        Ok(ScaleAnswer {
            from,
            to,
            draining,
            kept,
            pool: view,
        })
    }

    /// Records that a growth of a pool was refused (by the resource manager), with why.
    pub fn scale_refused(
        &mut self,
        swarm: SwarmId,
        pool: &str,
        from: u32,
        to: u32,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        if !self
            .swarms
            .get(&swarm)
            .is_some_and(|s| s.pools.contains_key(pool))
        {
            return Err(CoreError::not_found(format!("pool {pool:?} not found")));
        }
        self.emit(
            now,
            EventKind::PoolScaleRefused,
            swarm,
            None,
            None,
            format!("pool {pool:?}: {from} -> {to} agents refused: {reason}"),
        );
        Ok(())
    }

    /// Brings the agents staying in a pool to `to`: keeps draining agents when there are too
    /// few (spawning the rest is the driver's), drains the surplus when there are too many.
    /// Returns the names of the agents it began to drain and of those it kept.
    fn fit_pool(
        &mut self,
        swarm: SwarmId,
        pool: &str,
        to: u32,
        reason: &str,
        now: Timestamp,
    ) -> (Vec<String>, Vec<String>) {
        let members: Vec<AgentId> = self
            .pool_members(swarm, pool)
            .into_iter()
            .filter(|id| !self.agents[id].agent.health.recovery.gave_up)
            .collect();
        let is_draining = |f: &Fleet, id: &AgentId| {
            f.agents[id]
                .agent
                .managed
                .as_ref()
                .is_some_and(|m| m.drain.is_some())
        };
        let staying = members.iter().filter(|id| !is_draining(self, id)).count() as u32;
        let (mut drained, mut kept) = (Vec::new(), Vec::new());
        if staying < to {
            // Agents draining out and not yet stopping are cheaper than new ones.
            let mut back: Vec<AgentId> = members
                .iter()
                .copied()
                .filter(|id| {
                    self.agents[id]
                        .agent
                        .managed
                        .as_ref()
                        .and_then(|m| m.drain.as_ref())
                        .is_some_and(|d| !d.stopping)
                })
                .collect();
            // The busiest first: they are the furthest from being stopped.
            back.sort_by_key(|id| Reverse(self.agents[id].agent.current_tasks.len()));
            for id in back.into_iter().take((to - staying) as usize) {
                kept.push(self.agents[&id].agent.name.clone());
                self.undrain(id, now);
            }
        } else if staying > to {
            let mut leaving: Vec<AgentId> = members
                .iter()
                .copied()
                .filter(|id| !is_draining(self, id))
                .collect();
            // Idle first, then the least loaded; among equals the newest.
            leaving.sort_by_key(|id| {
                let a = &self.agents[id].agent;
                (
                    a.current_tasks.len(),
                    Reverse(a.registered_at),
                    Reverse(*id),
                )
            });
            for id in leaving.into_iter().take((staying - to) as usize) {
                drained.push(self.agents[&id].agent.name.clone());
                self.drain(id, format!("scaled down to {to}: {reason}"), now);
            }
        }
        (drained, kept)
    }

    /// Starts draining an agent out of its pool.
    fn drain(&mut self, id: AgentId, reason: String, now: Timestamp) {
        let Some(e) = self.agents.get_mut(&id) else {
            return;
        };
        let Some(m) = e.agent.managed.as_mut() else {
            return;
        };
        m.desired = Desired::Stopped;
        m.drain = Some(Drain {
            since: now,
            reason: reason.clone(),
            stopping: false,
        });
        let swarm = e.agent.swarm_id;
        // Tasks placed on it but not yet taken go to another agent, without costing an attempt.
        let placed: Vec<_> = e
            .agent
            .current_tasks
            .iter()
            .copied()
            .filter(|t| matches!(self.tasks[t].task.state, TaskState::Assigned { .. }))
            .collect();
        self.stop_polling(id);
        self.mark_agent(id);
        self.scaling.draining.insert(id);
        self.emit(now, EventKind::AgentDraining, swarm, Some(id), None, reason);
        for t in placed {
            self.requeue(t, "its agent is draining out of its pool", now);
        }
        self.settle_drain(id, now);
    }

    /// Keeps a draining agent in its pool after all.
    fn undrain(&mut self, id: AgentId, now: Timestamp) {
        if let Some(m) = self
            .agents
            .get_mut(&id)
            .and_then(|e| e.agent.managed.as_mut())
        {
            m.drain = None;
            m.desired = Desired::Running;
        }
        self.scaling.draining.remove(&id);
        self.mark_agent(id);
        // A poll it left open waits for work again.
        self.rejoin_if_polling(id);
        self.dispatch(now);
    }

    /// Whether some agent is draining out of its pool.
    pub fn has_draining(&self) -> bool {
        !self.scaling.draining.is_empty()
    }

    /// Moves draining agents on: one that holds no more task is stopped (or removed at once
    /// when it has no process). The driver calls this regularly (the server: every 100 ms).
    pub fn settle_drains(&mut self, now: Timestamp) {
        let ids: Vec<AgentId> = self.scaling.draining.iter().copied().collect();
        for id in ids {
            self.settle_drain(id, now);
        }
    }

    fn settle_drain(&mut self, id: AgentId, now: Timestamp) {
        let Some(a) = self.agents.get(&id).map(|e| &e.agent) else {
            self.scaling.draining.remove(&id);
            return;
        };
        let Some(drain) = a.managed.as_ref().and_then(|m| m.drain.as_ref()) else {
            // Started again by a user, who keeps it.
            self.scaling.draining.remove(&id);
            return;
        };
        if !a.current_tasks.is_empty() {
            return;
        }
        let no_process = matches!(
            a.status,
            AgentStatus::Pending
                | AgentStatus::Stopped
                | AgentStatus::Failed
                | AgentStatus::Recovering
        );
        if no_process {
            self.remove_drained(id, now);
        } else if !drain.stopping {
            if let Some(d) = self
                .agents
                .get_mut(&id)
                .and_then(|e| e.agent.managed.as_mut())
                .and_then(|m| m.drain.as_mut())
            {
                d.stopping = true;
            }
            self.mark_agent(id);
            self.out.effects.push(Effect::StopAgent(id, false));
        }
    }

    /// Removes an agent whose drain is over.
    pub(super) fn remove_drained(&mut self, id: AgentId, now: Timestamp) {
        self.scaling.draining.remove(&id);
        if self.agents.contains_key(&id) {
            self.unregister_agent(id, now).expect("agent present");
        }
    }

    /// Whether an agent is draining out of its pool.
    pub(super) fn is_draining(&self, id: AgentId) -> bool {
        self.agents
            .get(&id)
            .and_then(|e| e.agent.managed.as_ref())
            .is_some_and(|m| m.drain.is_some())
    }

    /// A task queued since `queued_at` was placed on, or taken by, `agent` at `now`.
    pub(super) fn note_wait(&mut self, agent: AgentId, queued_at: Timestamp, now: Timestamp) {
        let Some(a) = self.agents.get(&agent).map(|e| &e.agent) else {
            return;
        };
        let has_pool = self
            .swarms
            .get(&a.swarm_id)
            .is_some_and(|s| s.pools.contains_key(&a.agent_type));
        if has_pool {
            self.scaling
                .waits
                .entry((a.swarm_id, a.agent_type.clone()))
                .or_default()
                .record(queued_at, now);
        }
    }

    /// Forgets the waits of a deleted pool.
    pub(super) fn forget_pool_waits(&mut self, swarm: SwarmId, pool: &str) {
        self.scaling.waits.remove(&(swarm, pool.to_owned()));
    }
}

/// Whether the autoscaler looks after a pool: managed, with an enabled policy.
fn autoscaled(p: &Pool) -> bool {
    p.is_managed() && p.scaling.iter().any(|x| x.enabled)
}
