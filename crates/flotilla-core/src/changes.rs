//! What the core hands to its driver after each command: the rows to persist, the events to
//! append, and the effects to carry out.

use crate::agent::Agent;
use crate::event::Event;
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::pool::Pool;
use crate::swarm::Swarm;
use crate::task::Task;

/// The state changed by one or more commands, as whole rows to upsert, plus the events they
/// emitted. Applying a later `Changes` over an earlier one is always correct (rows are whole).
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Swarms created or changed.
    pub swarms: Vec<Swarm>,
    /// Swarms deleted.
    pub deleted_swarms: Vec<SwarmId>,
    /// Agents registered or changed (an unregistered agent appears once more, `stopped`).
    pub agents: Vec<Agent>,
    /// Pools created or changed.
    pub pools: Vec<Pool>,
    /// Pools deleted: swarm and pool name.
    pub deleted_pools: Vec<(SwarmId, String)>,
    /// Tasks submitted or changed.
    pub tasks: Vec<Task>,
    /// Events, in order.
    pub events: Vec<Event>,
    /// Checkpoints taken.
    pub checkpoints: Vec<crate::checkpoint::Checkpoint>,
    /// Checkpoints deleted (evicted or asked for).
    pub deleted_checkpoints: Vec<crate::ids::CheckpointId>,
    /// Agents' reported state documents, with when they were reported.
    pub agent_states: Vec<(AgentId, crate::json::Json, crate::time::Timestamp)>,
    /// Messages sent or changed (whole rows).
    pub messages: Vec<crate::message::Message>,
    /// Messages cleared from inboxes.
    pub deleted_messages: Vec<crate::ids::MessageId>,
    /// Requests answered or timed out.
    pub message_replies: Vec<(crate::ids::MessageId, crate::message::ReplyState)>,
    /// Metric deltas: each is added to the stored row of its series, period and start.
    pub metric_rows: Vec<crate::metrics::MetricRow>,
    /// Stored history to drop, past its retention.
    pub metric_prunes: Vec<crate::metrics::Prune>,
    /// Heartbeats for the agents' history.
    pub heartbeat_samples: Vec<crate::metrics::HeartbeatSample>,
}

impl Changes {
    /// Whether there is nothing to persist.
    pub fn is_empty(&self) -> bool {
        self.swarms.is_empty()
            && self.deleted_swarms.is_empty()
            && self.agents.is_empty()
            && self.pools.is_empty()
            && self.deleted_pools.is_empty()
            && self.tasks.is_empty()
            && self.events.is_empty()
            && self.checkpoints.is_empty()
            && self.deleted_checkpoints.is_empty()
            && self.agent_states.is_empty()
            && self.messages.is_empty()
            && self.deleted_messages.is_empty()
            && self.message_replies.is_empty()
            && self.metric_rows.is_empty()
            && self.metric_prunes.is_empty()
            && self.heartbeat_samples.is_empty()
    }

    /// The swarms these changes write rows of, deleted ones included. Changes known only by
    /// id (deleted checkpoints and messages, replies, agents' state documents) and metric
    /// prunes name none.
    pub fn swarms_touched(&self) -> std::collections::BTreeSet<SwarmId> {
        let mut touched = std::collections::BTreeSet::new();
        touched.extend(self.swarms.iter().map(|s| s.id));
        touched.extend(self.deleted_swarms.iter().copied());
        touched.extend(self.agents.iter().map(|a| a.swarm_id));
        touched.extend(self.pools.iter().map(|p| p.swarm_id));
        touched.extend(self.deleted_pools.iter().map(|(s, _)| *s));
        touched.extend(self.tasks.iter().map(|t| t.swarm_id));
        touched.extend(self.events.iter().map(|e| e.swarm_id));
        touched.extend(self.checkpoints.iter().map(|c| c.swarm_id));
        touched.extend(self.messages.iter().map(|m| m.swarm_id));
        touched.extend(self.metric_rows.iter().map(|r| r.swarm_id));
        touched.extend(self.heartbeat_samples.iter().map(|h| h.swarm_id));
        touched
    }

    /// Drops every row of the swarms `keep` refuses (what a coordinator wrote about swarms it
    /// no longer holds); changes known only by id stay.
    pub fn retain_swarms(&mut self, keep: impl Fn(SwarmId) -> bool) {
        let agents_dropped: std::collections::HashSet<AgentId> = self
            .agents
            .iter()
            .filter(|a| !keep(a.swarm_id))
            .map(|a| a.id)
            .collect();
        self.swarms.retain(|s| keep(s.id));
        self.deleted_swarms.retain(|s| keep(*s));
        self.agents.retain(|a| keep(a.swarm_id));
        self.pools.retain(|p| keep(p.swarm_id));
        self.deleted_pools.retain(|(s, _)| keep(*s));
        self.tasks.retain(|t| keep(t.swarm_id));
        self.events.retain(|e| keep(e.swarm_id));
        self.checkpoints.retain(|c| keep(c.swarm_id));
        self.agent_states
            .retain(|(a, _, _)| !agents_dropped.contains(a));
        self.messages.retain(|m| keep(m.swarm_id));
        self.metric_rows.retain(|r| keep(r.swarm_id));
        self.heartbeat_samples.retain(|h| keep(h.swarm_id));
    }

    /// Appends another set of changes after this one.
    pub fn extend(&mut self, other: Changes) {
        self.swarms.extend(other.swarms);
        self.deleted_swarms.extend(other.deleted_swarms);
        self.agents.extend(other.agents);
        // A pool deleted later must not come back through a row written earlier: the store
        // applies deletions before upserts within one batch.
        if !other.deleted_pools.is_empty() {
            self.pools.retain(|p| {
                !other
                    .deleted_pools
                    .iter()
                    .any(|(s, n)| *s == p.swarm_id && *n == p.name)
            });
        }
        self.pools.extend(other.pools);
        self.deleted_pools.extend(other.deleted_pools);
        self.tasks.extend(other.tasks);
        self.events.extend(other.events);
        if !other.deleted_checkpoints.is_empty() {
            self.checkpoints
                .retain(|c| !other.deleted_checkpoints.contains(&c.id));
        }
        self.checkpoints.extend(other.checkpoints);
        self.deleted_checkpoints.extend(other.deleted_checkpoints);
        self.agent_states.extend(other.agent_states);
        if !other.deleted_messages.is_empty() {
            self.messages
                .retain(|m| !other.deleted_messages.contains(&m.id));
        }
        self.messages.extend(other.messages);
        self.deleted_messages.extend(other.deleted_messages);
        self.message_replies.extend(other.message_replies);
        self.metric_rows.extend(other.metric_rows);
        self.metric_prunes.extend(other.metric_prunes);
        self.heartbeat_samples.extend(other.heartbeat_samples);
    }
}

/// Something the driver must do once the changes are durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Tasks were placed on this agent: wake its waiting poll.
    WakeAgent(AgentId),
    /// This task reached a terminal status: wake whoever waits for it.
    TaskFinished(TaskId),
    /// Start this managed agent's process (or, in exec mode, its task loop).
    StartAgent(AgentId),
    /// Stop this managed agent's process; `true`: kill at once.
    StopAgent(AgentId, bool),
    /// Freeze this managed agent's processes.
    PauseAgent(AgentId),
    /// Thaw this managed agent's processes.
    ResumeAgent(AgentId),
    /// Stop, then start this managed agent; `true`: kill at once.
    RestartAgent(AgentId, bool),
    /// Stop this managed agent, restore the checkpoint (workspace and state), start it.
    RollbackAgent(AgentId, crate::ids::CheckpointId),
    /// Take a checkpoint of this agent (its pool's policy asks for one).
    CheckpointAgent(AgentId, crate::checkpoint::CheckpointTrigger),
    /// Messages are ready in this agent's (of this swarm) inbox: wake its waiting receive.
    WakeInbox(crate::ids::SwarmId, AgentId),
    /// This request was answered or timed out: wake whoever waits for the response.
    RequestAnswered(crate::ids::MessageId),
}
