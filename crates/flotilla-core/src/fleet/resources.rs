//! What the resource manager needs from the fleet: the managed agents, each with its pool's
//! priority and resource request, and a way to record its decisions in the event log.
//!
//! The allocator and the pressure detector themselves (`crate::resources`,
//! `crate::pressure`) know nothing of the fleet; the driver joins them with these views.

use super::Fleet;
use crate::agent::{AgentStatus, Desired, ResourceUsage};
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, SwarmId};
use crate::pool::ResourceRequest;
use crate::resources::{PoolKey, request_of};
use crate::swarm::DEFAULT_SWARM;
use crate::time::Timestamp;

/// A managed agent as the resource manager sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedView {
    /// The agent.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// Its pool.
    pub pool: PoolKey,
    /// Its pool's priority.
    pub priority: u8,
    /// Its status.
    pub status: AgentStatus,
    /// What one agent of its pool reserves ([`request_of`]).
    pub request: ResourceRequest,
    /// Whether it holds its allocation: it is meant to run (a crash on its way to a restart
    /// included) and recovery has not given up on it.
    pub holds: bool,
    /// Whether its process (or task loop) is running now.
    pub running: bool,
    /// Its last sampled usage.
    pub usage: ResourceUsage,
    /// Its pool's placement.
    pub placement: crate::pool::Placement,
    /// The host it is placed on (pools placed on hosts).
    pub host: Option<String>,
}

impl Fleet {
    /// Every managed agent whose pool still exists, by swarm, pool and name.
    pub fn managed_views(&self) -> Vec<ManagedView> {
        let mut out: Vec<ManagedView> = self
            .agents
            .values()
            .map(|e| &e.agent)
            .filter_map(|a| {
                let m = a.managed.as_ref()?;
                let pool = self.swarms.get(&a.swarm_id)?.pools.get(&a.agent_type)?;
                Some(ManagedView {
                    id: a.id,
                    name: a.name.clone(),
                    pool: PoolKey {
                        swarm_id: a.swarm_id,
                        pool: pool.name.clone(),
                    },
                    priority: pool.priority,
                    status: a.status,
                    request: request_of(pool),
                    holds: m.desired == Desired::Running && !a.health.recovery.gave_up,
                    running: matches!(
                        a.status,
                        AgentStatus::Starting
                            | AgentStatus::Idle
                            | AgentStatus::Busy
                            | AgentStatus::Paused
                    ),
                    usage: a.resource_usage.clone(),
                    placement: pool
                        .template
                        .as_ref()
                        .map(|t| t.placement)
                        .unwrap_or_default(),
                    host: m.host.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.pool.cmp(&b.pool).then(a.name.cmp(&b.name)));
        out
    }

    /// Records a decision of the resource manager or the pressure detector (kinds
    /// `resources_*`, `pressure_*`, and alerts) in the event log. Machine-wide ones (`swarm`
    /// `None`) are recorded in the default swarm.
    pub fn record_resource_event(
        &mut self,
        kind: EventKind,
        swarm: Option<SwarmId>,
        agent: Option<AgentId>,
        detail: String,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        if !matches!(
            kind,
            EventKind::ResourcesWaiting
                | EventKind::ResourcesRefused
                | EventKind::ResourcesGranted
                | EventKind::HostJoined
                | EventKind::HostLost
                | EventKind::HostLeft
                | EventKind::PressureChanged
                | EventKind::PressureResponse
                | EventKind::AlertWarning
                | EventKind::AlertCritical
                | EventKind::AlertRecovery
        ) {
            return Err(CoreError::invalid(format!(
                "{} is not an event of the resource manager",
                kind.as_str()
            )));
        }
        let swarm_id = match swarm {
            Some(s) if self.swarms.contains_key(&s) => s,
            Some(s) => return Err(CoreError::not_found(format!("swarm {s} not found"))),
            None => self.resolve_swarm(DEFAULT_SWARM)?,
        };
        if let Some(a) = agent
            && !self.agents.contains_key(&a)
        {
            return Err(CoreError::not_found(format!("agent {a} not found")));
        }
        self.emit(now, kind, swarm_id, agent, None, detail);
        Ok(())
    }
}
