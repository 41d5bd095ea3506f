//! Events: the append-only record of what happened in the fleet (the PRD's `swarm_events`).
//!
//! The core emits an event for every change of lifecycle; the store appends them in the same
//! transaction as the state they describe, so the log and the state never disagree.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, SwarmId, TaskId};
use crate::time::Timestamp;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A swarm was created.
    SwarmCreated,
    /// A swarm's settings changed.
    SwarmUpdated,
    /// A swarm's status changed.
    SwarmStatusChanged,
    /// A swarm was deleted.
    SwarmDeleted,
    /// An agent registered.
    AgentJoined,
    /// An agent unregistered.
    AgentLeft,
    /// An agent went down (missed heartbeats, its process exited, memory over its limit).
    AgentFailed,
    /// An agent that had lost its lease showed a sign of life again.
    AgentRecovered,
    /// A managed agent's process started.
    AgentStarted,
    /// A managed agent's process stopped as asked.
    AgentStopped,
    /// An agent was paused.
    AgentPaused,
    /// An agent was resumed.
    AgentResumed,
    /// The coordinator's judgement of an agent's health changed.
    AgentHealthChanged,
    /// An agent's circuit breaker opened, half-opened or closed.
    AgentBreaker,
    /// A restart of a failed managed agent was scheduled.
    AgentRecovering,
    /// Alert: an agent is degraded.
    AlertWarning,
    /// Alert: an agent is unhealthy, or recovery gave up on it.
    AlertCritical,
    /// Alert: an agent is healthy again.
    AlertRecovery,
    /// A checkpoint of an agent was taken.
    CheckpointCreated,
    /// A checkpoint was deleted (asked for, or evicted by retention).
    CheckpointDeleted,
    /// An agent is being rolled back to a checkpoint.
    AgentRollback,
    /// A pool was created or changed.
    PoolUpdated,
    /// A pool was deleted.
    PoolDeleted,
    /// A pool's desired size changed (a manual scale or the autoscaler), with why.
    PoolScaled,
    /// The autoscaler wanted to grow a pool and was refused (resources, pressure), with why.
    PoolScaleRefused,
    /// A managed agent began draining out of its pool (scale-down): no new tasks, then stop.
    AgentDraining,
    /// A task was accepted.
    TaskSubmitted,
    /// A task's dependencies finished; it entered the queue.
    TaskUnblocked,
    /// A task was placed on an agent.
    TaskAssigned,
    /// An agent took a task and started an attempt.
    TaskStarted,
    /// A task completed.
    TaskCompleted,
    /// An attempt failed and the task will be retried.
    TaskRetrying,
    /// A task failed for good.
    TaskFailed,
    /// A task ran out of attempts.
    TaskDead,
    /// A task was cancelled.
    TaskCancelled,
    /// A task went back to the queue without a failed attempt (agent left or was taken away).
    TaskRequeued,
    /// A user asked for a finished task to run again.
    TaskRetried,
    /// A managed agent's start waits for resources (the resource manager's reason).
    ResourcesWaiting,
    /// A managed agent's start was refused for lack of resources.
    ResourcesRefused,
    /// Resources a pool waited for were granted.
    ResourcesGranted,
    /// A host (`flotilla host`) registered with the coordinator.
    HostJoined,
    /// A host stopped answering: its agents' work went back to the queue and they are placed
    /// elsewhere.
    HostLost,
    /// A host left on purpose (its shutdown); its agents are placed elsewhere.
    HostLeft,
    /// A pressure signal changed level.
    PressureChanged,
    /// An automatic response to pressure started or ended.
    PressureResponse,
    /// A swarm's topology was changed.
    TopologyChanged,
    /// A swarm's leader changed: elected, or lost with nobody to replace it.
    LeaderElection,
    /// The ring's token moved to another agent.
    TokenPassed,
    /// An agent delegated its task to subtasks, or the subtasks' results concluded it.
    TaskDelegated,
    /// A message could not be delivered and went to the dead-letter list.
    MessageDeadLettered,
}

impl EventKind {
    /// The kind as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SwarmCreated => "swarm_created",
            EventKind::SwarmUpdated => "swarm_updated",
            EventKind::SwarmStatusChanged => "swarm_status_changed",
            EventKind::SwarmDeleted => "swarm_deleted",
            EventKind::AgentJoined => "agent_joined",
            EventKind::AgentLeft => "agent_left",
            EventKind::AgentFailed => "agent_failed",
            EventKind::AgentRecovered => "agent_recovered",
            EventKind::AgentStarted => "agent_started",
            EventKind::AgentStopped => "agent_stopped",
            EventKind::AgentPaused => "agent_paused",
            EventKind::AgentResumed => "agent_resumed",
            EventKind::AgentHealthChanged => "agent_health_changed",
            EventKind::AgentBreaker => "agent_breaker",
            EventKind::AgentRecovering => "agent_recovering",
            EventKind::AlertWarning => "alert_warning",
            EventKind::AlertCritical => "alert_critical",
            EventKind::AlertRecovery => "alert_recovery",
            EventKind::CheckpointCreated => "checkpoint_created",
            EventKind::CheckpointDeleted => "checkpoint_deleted",
            EventKind::AgentRollback => "agent_rollback",
            EventKind::PoolUpdated => "pool_updated",
            EventKind::PoolDeleted => "pool_deleted",
            EventKind::PoolScaled => "pool_scaled",
            EventKind::PoolScaleRefused => "pool_scale_refused",
            EventKind::AgentDraining => "agent_draining",
            EventKind::TaskSubmitted => "task_submitted",
            EventKind::TaskUnblocked => "task_unblocked",
            EventKind::TaskAssigned => "task_assigned",
            EventKind::TaskStarted => "task_started",
            EventKind::TaskCompleted => "task_completed",
            EventKind::TaskRetrying => "task_retrying",
            EventKind::TaskFailed => "task_failed",
            EventKind::TaskDead => "task_dead",
            EventKind::TaskCancelled => "task_cancelled",
            EventKind::TaskRequeued => "task_requeued",
            EventKind::TaskRetried => "task_retried",
            EventKind::ResourcesWaiting => "resources_waiting",
            EventKind::ResourcesRefused => "resources_refused",
            EventKind::ResourcesGranted => "resources_granted",
            EventKind::HostJoined => "host_joined",
            EventKind::HostLost => "host_lost",
            EventKind::HostLeft => "host_left",
            EventKind::PressureChanged => "pressure_changed",
            EventKind::PressureResponse => "pressure_response",
            EventKind::TopologyChanged => "topology_changed",
            EventKind::LeaderElection => "leader_election",
            EventKind::TokenPassed => "token_passed",
            EventKind::TaskDelegated => "task_delegated",
            EventKind::MessageDeadLettered => "message_dead_lettered",
        }
    }
}

/// One record of the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in the log: strictly increasing, without gaps.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The swarm it happened in.
    pub swarm_id: SwarmId,
    /// The agent involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    /// The task involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// Details, in words (a reason, an error message); empty when there is nothing to add.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}
