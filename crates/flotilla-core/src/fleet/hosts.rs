//! Managed agents placed on hosts (`flotilla host`): which host an agent is on, and what
//! happens to its agents when a host is lost or leaves.
//!
//! The hosts themselves (their capacity, labels and liveness) are the driver's: it learns them
//! from the hosts' calls and judges their silence by its clock. The fleet records where each
//! agent was placed, so a restarted coordinator knows which agents a host should run.

use super::Fleet;
use crate::agent::{AgentStatus, Desired};
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::AgentId;
use crate::time::Timestamp;

impl Fleet {
    /// Places a managed agent on `host` (`None`: on no host, waiting for one with room).
    pub fn place_agent(&mut self, id: AgentId, host: Option<String>) -> Result<(), CoreError> {
        let agent = self.managed_agent_mut(id)?;
        let m = agent.managed.as_mut().expect("managed");
        if m.host != host {
            m.host = host;
            self.mark_agent(id);
        }
        Ok(())
    }

    /// The managed agents placed on `host`.
    pub fn agents_on_host(&self, host: &str) -> Vec<AgentId> {
        self.agents
            .values()
            .filter(|e| {
                e.agent
                    .managed
                    .as_ref()
                    .is_some_and(|m| m.host.as_deref() == Some(host))
            })
            .map(|e| e.agent.id)
            .collect()
    }

    /// `host` stopped answering (`left`: it said it was leaving): records `host_lost` (or
    /// `host_left`) and takes its agents off it. An agent that was meant to run there is down:
    /// its running tasks fail their attempt and go back to the queue, and the recovery ladder
    /// restarts it, on another host. Returns the agents that were on it.
    pub fn host_gone(
        &mut self,
        host: &str,
        reason: &str,
        left: bool,
        now: Timestamp,
    ) -> Result<Vec<AgentId>, CoreError> {
        let on_it = self.agents_on_host(host);
        let kind = if left {
            EventKind::HostLeft
        } else {
            EventKind::HostLost
        };
        self.record_resource_event(
            kind,
            None,
            None,
            format!("host {host:?} {reason}; {} agent(s) on it", on_it.len()),
            now,
        )?;
        for &id in &on_it {
            self.place_agent(id, None)?;
            let a = &self.agents[&id].agent;
            let meant_to_run = a
                .managed
                .as_ref()
                .is_some_and(|m| m.desired == Desired::Running);
            if meant_to_run && !matches!(a.status, AgentStatus::Stopped | AgentStatus::Failed) {
                self.managed_exited(
                    id,
                    format!("was lost with host {host:?} ({reason})"),
                    false,
                    now,
                )?;
            }
        }
        Ok(on_it)
    }
}
