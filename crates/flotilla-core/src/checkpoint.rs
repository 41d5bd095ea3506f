//! Checkpoints: what an agent was at a moment — the state it reported, the tasks it held, and
//! its workspace (a commit on a private git ref, or an archive, made by the runtime) — so that
//! it can be rolled back to it.
//!
//! The core keeps a short index of each agent's checkpoints on the agent ([`CheckpointRef`]:
//! for retention, for the recovery ladder's rollback, and to discard evicted workspaces); the
//! whole [`Checkpoint`] rows live in the store.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{AgentId, CheckpointId, SwarmId, TaskId};
use crate::json::Json;
use crate::task::Progress;
use crate::time::{Timestamp, serde_ms};

/// Why a checkpoint was taken.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointTrigger {
    /// Asked for (API, CLI).
    #[default]
    Manual,
    /// After a task the agent completed (pool policy `after_each_task`).
    AfterTask,
    /// On the pool's schedule (`every_ms`).
    Interval,
}

impl CheckpointTrigger {
    /// The trigger as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointTrigger::Manual => "manual",
            CheckpointTrigger::AfterTask => "after_task",
            CheckpointTrigger::Interval => "interval",
        }
    }
}

/// A task an agent held when a checkpoint was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskContext {
    /// The task.
    pub task_id: TaskId,
    /// Its type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its attempt then.
    pub attempt: u32,
    /// Its payload.
    pub payload: Json,
    /// Its last reported progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// A checkpoint, whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// Its id.
    pub id: CheckpointId,
    /// The agent.
    pub agent_id: AgentId,
    /// The agent's swarm.
    pub swarm_id: SwarmId,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Why.
    pub trigger: CheckpointTrigger,
    /// Free text.
    pub description: String,
    /// The state the agent last reported (`PUT /agents/{id}/state`), if any.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub state: Option<Json>,
    /// The tasks it held.
    pub tasks: Vec<TaskContext>,
    /// Its workspace snapshot as the runtime describes it (`{"kind": "git", …}` or `{"kind":
    /// "archive", …}`); none for an agent without a working directory.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub workspace: Option<Json>,
    /// Why the workspace could not be saved, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_error: Option<String>,
}

/// What the agent itself keeps of one of its checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointRef {
    /// Its id.
    pub id: CheckpointId,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Why.
    pub trigger: CheckpointTrigger,
    /// Its workspace snapshot, to discard when it is evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub workspace: Option<Json>,
}

/// The body of `POST /agents/{id}/checkpoints`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// A pool's checkpoint policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointPolicy {
    /// How many checkpoints each agent keeps; the oldest go first.
    pub keep: u32,
    /// Take one after every task an agent completes.
    pub after_each_task: bool,
    /// Take one this often while an agent runs.
    #[serde(
        rename = "every_ms",
        with = "serde_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub every: Option<Duration>,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            keep: DEFAULT_KEEP,
            after_each_task: false,
            every: None,
        }
    }
}

/// Checkpoints an agent keeps when its pool does not say (and for connected agents).
pub const DEFAULT_KEEP: u32 = 10;

impl CheckpointPolicy {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        if !(1..=1000).contains(&self.keep) {
            return Err(CoreError::invalid(
                "checkpoints.keep must be between 1 and 1000",
            ));
        }
        if self.every.is_some_and(|e| e < Duration::from_secs(1)) {
            return Err(CoreError::invalid(
                "checkpoints.every_ms must be at least 1000",
            ));
        }
        Ok(())
    }
}
