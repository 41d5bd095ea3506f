//! Tasks: units of work, their specification, their lifecycle state and their errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::json::Json;
use crate::time::{Timestamp, serde_ms};

/// The lowest priority.
pub const MIN_PRIORITY: u8 = 1;
/// The highest priority.
pub const MAX_PRIORITY: u8 = 10;
/// The priority of a task that does not set one.
pub const DEFAULT_PRIORITY: u8 = 5;

/// A task's status, as the API writes it. [`TaskState`] carries each status's data.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its dependencies.
    Blocked,
    /// Waiting for an agent.
    Queued,
    /// Given to an agent that has not yet taken it.
    Assigned,
    /// Being worked on by an agent.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished unsuccessfully and will not be retried.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// Failed on every attempt it was allowed.
    Dead,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Blocked,
        TaskStatus::Queued,
        TaskStatus::Assigned,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Dead,
    ];

    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Blocked => "blocked",
            TaskStatus::Queued => "queued",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Dead => "dead",
        }
    }

    /// Whether the task is finished for good (until a user retries it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Dead
        )
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown task status {s:?}; expected one of: {}",
                    TaskStatus::ALL.map(|s| s.as_str()).join(", ")
                ))
            })
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's lifecycle state with the data each status needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for dependencies to finish.
    Blocked,
    /// In the queue; not before `run_after` when it is a delayed retry.
    Queued {
        /// When it entered the queue.
        queued_at: Timestamp,
        /// It may not start before this instant (retry backoff).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_after: Option<Timestamp>,
    },
    /// Placed on an agent that has not taken it yet.
    Assigned {
        /// The agent holding it.
        agent_id: AgentId,
        /// When it was placed.
        assigned_at: Timestamp,
    },
    /// Being worked on.
    Running {
        /// The agent working on it.
        agent_id: AgentId,
        /// When this attempt started.
        started_at: Timestamp,
        /// When this attempt times out.
        timeout_at: Timestamp,
    },
    /// Done.
    Completed {
        /// The agent that did it.
        agent_id: AgentId,
        /// What the agent returned.
        result: Json,
        /// When it finished.
        completed_at: Timestamp,
    },
    /// Failed for good.
    Failed {
        /// Why.
        error: TaskError,
        /// When.
        completed_at: Timestamp,
    },
    /// Cancelled by a user.
    Cancelled {
        /// Why, if the user said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When.
        completed_at: Timestamp,
    },
    /// Out of attempts.
    Dead {
        /// The error of the last attempt.
        error: TaskError,
        /// When.
        completed_at: Timestamp,
    },
}

impl TaskState {
    /// The status of this state.
    pub fn status(&self) -> TaskStatus {
        match self {
            TaskState::Blocked => TaskStatus::Blocked,
            TaskState::Queued { .. } => TaskStatus::Queued,
            TaskState::Assigned { .. } => TaskStatus::Assigned,
            TaskState::Running { .. } => TaskStatus::Running,
            TaskState::Completed { .. } => TaskStatus::Completed,
            TaskState::Failed { .. } => TaskStatus::Failed,
            TaskState::Cancelled { .. } => TaskStatus::Cancelled,
            TaskState::Dead { .. } => TaskStatus::Dead,
        }
    }

    /// The agent holding or having done the task, if any.
    pub fn agent_id(&self) -> Option<AgentId> {
        match self {
            TaskState::Assigned { agent_id, .. }
            | TaskState::Running { agent_id, .. }
            | TaskState::Completed { agent_id, .. } => Some(*agent_id),
            _ => None,
        }
    }

    /// When the task finished, if it did.
    pub fn completed_at(&self) -> Option<Timestamp> {
        match self {
            TaskState::Completed { completed_at, .. }
            | TaskState::Failed { completed_at, .. }
            | TaskState::Cancelled { completed_at, .. }
            | TaskState::Dead { completed_at, .. } => Some(*completed_at),
            _ => None,
        }
    }
}

/// What kind of failure ended an attempt or a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The agent reported a failure.
    AgentError,
    /// The attempt ran past its timeout.
    Timeout,
    /// The agent stopped heartbeating and lost its lease.
    LeaseExpired,
    /// The task's deadline passed before it finished.
    DeadlineExceeded,
    /// A dependency did not succeed (dependency kind `success`).
    DependencyFailed,
    /// The agent's process exited while the attempt ran.
    AgentExited,
    /// The coordinator judged the agent unhealthy (memory over its limit, for one) and took
    /// the attempt back.
    AgentUnhealthy,
    /// Subtasks it was delegated to did not all complete.
    SubtasksFailed,
}

/// Why an attempt or a task failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened, in words.
    pub message: String,
    /// Whether another attempt might succeed.
    pub retryable: bool,
    /// The agent the attempt ran on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    /// Which attempt failed (1-based), if an attempt was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// How a dependent task waits on another.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DependencyKind {
    /// Wait until the dependency finishes, however it finishes.
    #[default]
    Completion,
    /// Wait until the dependency completes; if it fails, the dependent fails too.
    Success,
}

/// One dependency of a task.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The task depended on.
    pub task_id: TaskId,
    /// How to wait on it.
    #[serde(default, rename = "type")]
    pub kind: DependencyKind,
}

/// A dependency as a submitter writes it: an id, or `{"task_id": …, "type": …}`; in a batch,
/// `{"ref": …, "type": …}` naming another task of the same batch by its `ref`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DependencySpec {
    /// Just the id; kind `completion`.
    Id(TaskId),
    /// The id and the kind.
    Full(Dependency),
    /// Another task of the same batch, by its `ref`.
    Ref {
        /// The `ref` of the other task.
        #[serde(rename = "ref")]
        reference: String,
        /// How to wait on it.
        #[serde(rename = "type")]
        kind: DependencyKind,
    },
}

impl<'de> Deserialize<'de> for DependencySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Written by hand so that a bad entry gets a message that says what is expected,
        // not serde's "did not match any variant".
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            #[serde(default)]
            task_id: Option<TaskId>,
            #[serde(default, rename = "ref")]
            reference: Option<String>,
            #[serde(default, rename = "type")]
            kind: DependencyKind,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Object(Object),
        }
        const EXPECTED: &str = r#"expected a task id, {"task_id": ID, "type": "completion"|"success"} or {"ref": NAME, "type": …}"#;
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(format!("invalid depends_on entry: {EXPECTED}"))
        })? {
            Raw::Text(text) => text.parse::<TaskId>().map(DependencySpec::Id).map_err(|_| {
                serde::de::Error::custom(format!("invalid depends_on entry {text:?}: {EXPECTED}"))
            }),
            Raw::Object(Object {
                task_id: Some(task_id),
                reference: None,
                kind,
            }) => Ok(DependencySpec::Full(Dependency { task_id, kind })),
            Raw::Object(Object {
                task_id: None,
                reference: Some(reference),
                kind,
            }) => Ok(DependencySpec::Ref { reference, kind }),
            Raw::Object(_) => Err(serde::de::Error::custom(format!(
                "invalid depends_on entry: give exactly one of task_id and ref; {EXPECTED}"
            ))),
        }
    }
}

/// Retry backoff: attempt `n` (1-based) that fails waits `initial × 2^(n-1)`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    #[serde(rename = "initial_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub initial: Duration,
    /// The longest wait.
    #[serde(rename = "max_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.initial
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Progress an agent reports on a running task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Percent done, 0 to 100.
    #[serde(default)]
    pub percent: Option<f64>,
    /// What it is doing.
    #[serde(default)]
    pub message: Option<String>,
    /// When it was reported (set by the coordinator).
    #[serde(default)]
    pub reported_at: Option<Timestamp>,
}

/// A task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "TaskWire")]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its swarm.
    pub swarm_id: SwarmId,
    /// The task it is a subtask of, if any.
    pub parent_task_id: Option<TaskId>,
    /// Its type, e.g. `summarize` or `test`.
    #[serde(rename = "type")]
    pub task_type: String,
    /// What to do: any JSON document.
    pub payload: Json,
    /// 1 to 10, higher first.
    pub priority: u8,
    /// Capabilities an agent needs, sorted; all of them.
    pub required_capabilities: Vec<String>,
    /// Tasks that must finish first.
    pub depends_on: Vec<Dependency>,
    /// Tasks with the same key prefer the same agent.
    pub affinity_key: Option<String>,
    /// Submitting twice with the same key returns the first task.
    pub idempotency_key: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed before the task is `dead`.
    pub max_attempts: u32,
    /// Wait between attempts.
    pub backoff: Backoff,
    /// How long one attempt may run.
    #[serde(rename = "timeout_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
    /// The task fails if it has not finished by then.
    pub deadline: Option<Timestamp>,
    /// The error of the last failed attempt, kept while the task is retried.
    pub last_error: Option<TaskError>,
    /// The last progress report of the current attempt.
    pub progress: Option<Progress>,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// It runs one at a time with its swarm's other ordered tasks, in the order they were
    /// submitted (in a ring, taken by the token's holder).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
    /// A subtask delegated by this agent: only the agent's children in the hierarchy take it
    /// (anyone, while it has none alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_by: Option<AgentId>,
    /// Its delegation to subtasks, when an agent delegated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Delegation>,
    /// Its place in its swarm's ready queue, by arrival, set each time it enters the queue.
    /// Stored so that a restart keeps first-in, first-out order; not part of the API.
    #[serde(skip)]
    pub queue_seq: u64,
    /// Its status and that status's data.
    #[serde(flatten)]
    pub state: TaskState,
}

impl Task {
    /// Its status.
    pub fn status(&self) -> TaskStatus {
        self.state.status()
    }

    /// Whether `report` repeats the completion already recorded by `agent`: `None` if the
    /// task is not completed by that agent (for that attempt); `Ok` if the result is the same
    /// (the first answer was lost, the repeat is answered); a conflict if it differs (only the
    /// first result is recorded).
    pub fn repeated_completion(
        &self,
        agent: AgentId,
        report: &CompletionReport,
    ) -> Option<Result<(), CoreError>> {
        let TaskState::Completed {
            agent_id, result, ..
        } = &self.state
        else {
            return None;
        };
        if *agent_id != agent || report.attempt.is_some_and(|a| a != self.attempts) {
            return None;
        }
        let same =
            result.get() == report.result.get() || result.to_value() == report.result.to_value();
        Some(if same {
            Ok(())
        } else {
            Err(CoreError::conflict(format!(
                "task {} was already completed by this agent with a different result; only the first result is recorded",
                self.id
            )))
        })
    }
}

/// A task as it is read from JSON: the state's fields flat beside the others.
///
/// `Task` is written with its state flattened into it, but it cannot be read back that way:
/// serde buffers flattened fields, and a raw JSON value (a payload or result) cannot be read
/// from that buffer. Reading into this flat form and then building the state works.
#[derive(Deserialize)]
struct TaskWire {
    id: TaskId,
    swarm_id: SwarmId,
    parent_task_id: Option<TaskId>,
    #[serde(rename = "type")]
    task_type: String,
    payload: Json,
    priority: u8,
    required_capabilities: Vec<String>,
    depends_on: Vec<Dependency>,
    affinity_key: Option<String>,
    idempotency_key: Option<String>,
    attempts: u32,
    max_attempts: u32,
    backoff: Backoff,
    #[serde(rename = "timeout_ms", with = "serde_ms")]
    timeout: Duration,
    deadline: Option<Timestamp>,
    last_error: Option<TaskError>,
    progress: Option<Progress>,
    created_at: Timestamp,
    updated_at: Timestamp,
    status: TaskStatus,
    #[serde(default)]
    queued_at: Option<Timestamp>,
    #[serde(default)]
    run_after: Option<Timestamp>,
    #[serde(default)]
    agent_id: Option<AgentId>,
    #[serde(default)]
    assigned_at: Option<Timestamp>,
    #[serde(default)]
    started_at: Option<Timestamp>,
    #[serde(default)]
    timeout_at: Option<Timestamp>,
    #[serde(default)]
    result: Option<Json>,
    #[serde(default)]
    completed_at: Option<Timestamp>,
    #[serde(default)]
    error: Option<TaskError>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ordered: bool,
    #[serde(default)]
    delegated_by: Option<AgentId>,
    #[serde(default)]
    delegation: Option<Delegation>,
}

impl TryFrom<TaskWire> for Task {
    type Error = String;

    fn try_from(w: TaskWire) -> Result<Self, String> {
        fn need<T>(v: Option<T>, status: TaskStatus, field: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("a {status} task needs `{field}`"))
        }
        let s = w.status;
        let state = match s {
            TaskStatus::Blocked => TaskState::Blocked,
            TaskStatus::Queued => TaskState::Queued {
                queued_at: need(w.queued_at, s, "queued_at")?,
                run_after: w.run_after,
            },
            TaskStatus::Assigned => TaskState::Assigned {
                agent_id: need(w.agent_id, s, "agent_id")?,
                assigned_at: need(w.assigned_at, s, "assigned_at")?,
            },
            TaskStatus::Running => TaskState::Running {
                agent_id: need(w.agent_id, s, "agent_id")?,
                started_at: need(w.started_at, s, "started_at")?,
                timeout_at: need(w.timeout_at, s, "timeout_at")?,
            },
            TaskStatus::Completed => TaskState::Completed {
                agent_id: need(w.agent_id, s, "agent_id")?,
                // `"result": null` reads as None.
                result: w.result.unwrap_or_default(),
                completed_at: need(w.completed_at, s, "completed_at")?,
            },
            TaskStatus::Failed => TaskState::Failed {
                error: need(w.error, s, "error")?,
                completed_at: need(w.completed_at, s, "completed_at")?,
            },
            TaskStatus::Cancelled => TaskState::Cancelled {
                reason: w.reason,
                completed_at: need(w.completed_at, s, "completed_at")?,
            },
            TaskStatus::Dead => TaskState::Dead {
                error: need(w.error, s, "error")?,
                completed_at: need(w.completed_at, s, "completed_at")?,
            },
        };
        Ok(Task {
            id: w.id,
            swarm_id: w.swarm_id,
            parent_task_id: w.parent_task_id,
            task_type: w.task_type,
            payload: w.payload,
            priority: w.priority,
            required_capabilities: w.required_capabilities,
            depends_on: w.depends_on,
            affinity_key: w.affinity_key,
            idempotency_key: w.idempotency_key,
            attempts: w.attempts,
            max_attempts: w.max_attempts,
            backoff: w.backoff,
            timeout: w.timeout,
            deadline: w.deadline,
            last_error: w.last_error,
            progress: w.progress,
            created_at: w.created_at,
            updated_at: w.updated_at,
            ordered: w.ordered,
            delegated_by: w.delegated_by,
            delegation: w.delegation,
            queue_seq: 0,
            state,
        })
    }
}

/// What a submitter gives to create a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Its type.
    #[serde(rename = "type", default = "default_task_type")]
    #[schema(min_length = 1, max_length = 100)]
    pub task_type: String,
    /// What to do; `null` when left out.
    #[serde(default)]
    pub payload: Json,
    /// 1 to 10, higher first; 5 when left out.
    #[serde(default = "default_priority")]
    #[schema(minimum = 1, maximum = 10)]
    pub priority: u8,
    /// Capabilities an agent needs.
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// The task it is a subtask of.
    #[serde(default)]
    pub parent_task_id: Option<TaskId>,
    /// Tasks that must finish first.
    #[serde(default)]
    pub depends_on: Vec<DependencySpec>,
    /// A name for this task within a batch, so other tasks of the batch can depend on it.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    /// Tasks with the same key prefer the same agent.
    #[serde(default)]
    pub affinity_key: Option<String>,
    /// Submitting twice with the same key returns the first task.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Attempts allowed; the swarm's default when left out.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Wait between attempts.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// How long one attempt may run; the swarm's default when left out.
    #[serde(default, rename = "timeout_ms", with = "serde_ms::option")]
    #[schema(value_type = Option<u64>, minimum = 100, maximum = 604800000)]
    pub timeout: Option<Duration>,
    /// The task fails if it has not finished by then.
    #[serde(default)]
    pub deadline: Option<Timestamp>,
    /// Run it one at a time with the swarm's other ordered tasks, in submission order (in a
    /// ring, by the token's holder).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
    /// Set by the coordinator on subtasks an agent delegates; not part of the API.
    #[serde(skip)]
    pub delegated_by: Option<AgentId>,
}

fn default_task_type() -> String {
    "default".to_owned()
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            task_type: default_task_type(),
            payload: Json::null(),
            priority: DEFAULT_PRIORITY,
            required_capabilities: Vec::new(),
            parent_task_id: None,
            depends_on: Vec::new(),
            reference: None,
            affinity_key: None,
            idempotency_key: None,
            max_attempts: None,
            backoff: None,
            timeout: None,
            deadline: None,
            ordered: false,
            delegated_by: None,
        }
    }
}

/// An agent's delegation of its task to subtasks (hierarchical swarms): the task waits
/// `blocked` for them, and when every one has finished it concludes with their results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delegation {
    /// The agent that delegated it.
    pub agent_id: AgentId,
    /// When.
    pub at: Timestamp,
    /// The subtasks, in the order given.
    pub subtasks: Vec<TaskId>,
    /// How each finished subtask ended, in the order they finished.
    #[serde(default)]
    pub outcomes: Vec<SubtaskOutcome>,
}

/// How a subtask of a delegation ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubtaskOutcome {
    /// The subtask.
    pub task_id: TaskId,
    /// Its final status.
    pub status: TaskStatus,
    /// Its result, when it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Json>,
    /// Its error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an agent sends when an attempt fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    /// What went wrong.
    pub error: String,
    /// Whether another attempt might succeed (true by default).
    #[serde(default = "yes")]
    pub retryable: bool,
    /// The attempt this report is about; checked when given.
    #[serde(default)]
    pub attempt: Option<u32>,
}

/// What an agent sends when an attempt succeeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionReport {
    /// The result: any JSON document.
    #[serde(default)]
    pub result: Json,
    /// The attempt this report is about; checked when given.
    #[serde(default)]
    pub attempt: Option<u32>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(4), Duration::from_secs(8));
        assert_eq!(b.delay(5), Duration::from_secs(10));
        assert_eq!(b.delay(500), Duration::from_secs(10));
    }

    #[test]
    fn state_flattens_into_the_task_json() {
        let state = TaskState::Queued {
            queued_at: Timestamp::from_millis(0),
            run_after: None,
        };
        let v = serde_json::to_value(&state).unwrap();
        assert_eq!(v["status"], "queued");
    }

    #[test]
    fn every_state_round_trips_through_json() {
        let at = Timestamp::from_millis(1_800_000_000_000);
        let agent = AgentId(uuid::Uuid::from_u128(7));
        let error = TaskError {
            kind: ErrorKind::Timeout,
            message: "slow".into(),
            retryable: true,
            agent_id: Some(agent),
            attempt: Some(1),
        };
        let states = vec![
            TaskState::Blocked,
            TaskState::Queued {
                queued_at: at,
                run_after: Some(at),
            },
            TaskState::Assigned {
                agent_id: agent,
                assigned_at: at,
            },
            TaskState::Running {
                agent_id: agent,
                started_at: at,
                timeout_at: at,
            },
            TaskState::Completed {
                agent_id: agent,
                result: Json::parse(r#"{"ok":[1,2]}"#).unwrap(),
                completed_at: at,
            },
            TaskState::Completed {
                agent_id: agent,
                result: Json::null(),
                completed_at: at,
            },
            TaskState::Failed {
                error: error.clone(),
                completed_at: at,
            },
            TaskState::Cancelled {
                reason: Some("why".into()),
                completed_at: at,
            },
            TaskState::Dead {
                error,
                completed_at: at,
            },
        ];
        for state in states {
            let task = Task {
                id: TaskId(uuid::Uuid::from_u128(1)),
                swarm_id: SwarmId(uuid::Uuid::from_u128(2)),
                parent_task_id: None,
                task_type: "t".into(),
                payload: Json::parse(r#"{"n":1}"#).unwrap(),
                priority: 5,
                required_capabilities: vec!["a".into()],
                depends_on: vec![],
                affinity_key: None,
                idempotency_key: Some("k".into()),
                attempts: 1,
                max_attempts: 3,
                backoff: Backoff::default(),
                timeout: Duration::from_secs(3),
                deadline: None,
                last_error: None,
                progress: None,
                created_at: at,
                updated_at: at,
                ordered: false,
                delegated_by: None,
                delegation: None,
                queue_seq: 0,
                state,
            };
            let text = serde_json::to_string(&task).unwrap();
            let back: Task = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(back, task);
        }
    }

    #[test]
    fn dependency_spec_accepts_three_shapes() {
        let id = "0190b6e4-0000-7000-8000-000000000001";
        let a: DependencySpec = serde_json::from_str(&format!("\"{id}\"")).unwrap();
        assert!(matches!(a, DependencySpec::Id(_)));
        let b: DependencySpec =
            serde_json::from_str(&format!(r#"{{"task_id":"{id}","type":"success"}}"#)).unwrap();
        assert!(matches!(
            b,
            DependencySpec::Full(Dependency {
                kind: DependencyKind::Success,
                ..
            })
        ));
        let c: DependencySpec = serde_json::from_str(r#"{"ref":"build"}"#).unwrap();
        assert!(matches!(c, DependencySpec::Ref { .. }));
    }
}
