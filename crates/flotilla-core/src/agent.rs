//! Agents: the workers of a swarm, their registration, status and resource usage.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::json::Json;
use crate::time::Timestamp;

/// An agent's lifecycle status.
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
pub enum AgentStatus {
    /// Registered, not yet started (managed agents).
    Pending,
    /// Its process is starting (managed agents).
    Starting,
    /// Alive and holding no task.
    Idle,
    /// Alive and holding at least one task.
    Busy,
    /// Alive but not taking tasks.
    Paused,
    /// Its lease expired (missed heartbeats); its tasks were taken back.
    Unhealthy,
    /// Being restarted or rolled back.
    Recovering,
    /// Given up on; removed from scheduling.
    Failed,
    /// Unregistered or stopped.
    Stopped,
}

impl AgentStatus {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Starting => "starting",
            AgentStatus::Idle => "idle",
            AgentStatus::Busy => "busy",
            AgentStatus::Paused => "paused",
            AgentStatus::Unhealthy => "unhealthy",
            AgentStatus::Recovering => "recovering",
            AgentStatus::Failed => "failed",
            AgentStatus::Stopped => "stopped",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [AgentStatus; 9] = [
        AgentStatus::Pending,
        AgentStatus::Starting,
        AgentStatus::Idle,
        AgentStatus::Busy,
        AgentStatus::Paused,
        AgentStatus::Unhealthy,
        AgentStatus::Recovering,
        AgentStatus::Failed,
        AgentStatus::Stopped,
    ];
}

impl std::str::FromStr for AgentStatus {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        AgentStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown agent status {s:?}; expected one of: {}",
                    AgentStatus::ALL.map(|s| s.as_str()).join(", ")
                ))
            })
    }
}

/// The part an agent plays in its swarm's topology. Declared most senior first: the derived
/// order is seniority (elections rely on it).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
pub enum AgentRole {
    /// Leads the swarm.
    Leader,
    /// Coordinates workers.
    Coordinator,
    /// Supervises a group of workers.
    Supervisor,
    /// Does tasks.
    #[default]
    Worker,
}

/// How an agent says it is doing, in a heartbeat.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReportedHealth {
    /// All is well.
    #[default]
    Healthy,
    /// Working, but struggling.
    Degraded,
    /// The agent itself thinks it cannot work.
    Unhealthy,
}

/// Resource usage an agent reports (all fields optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceUsage {
    /// CPU use in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory in MiB.
    pub memory_mb: Option<f64>,
    /// Open network connections.
    pub active_connections: Option<u32>,
    /// Open files (sampled from /proc for managed agents).
    pub open_files: Option<u64>,
}

impl ResourceUsage {
    /// The largest CPU share an agent may report: 100,000% (a thousand cores).
    pub const MAX_CPU_PERCENT: f64 = 100_000.0;
    /// The largest resident memory an agent may report: 1 PiB in MiB.
    pub const MAX_MEMORY_MB: f64 = 1_073_741_824.0;

    /// Checks that numbers are finite, not negative and not absurd (the metrics add them up).
    pub fn validate(&self) -> Result<(), CoreError> {
        for (name, v, max) in [
            ("cpu_percent", self.cpu_percent, Self::MAX_CPU_PERCENT),
            ("memory_mb", self.memory_mb, Self::MAX_MEMORY_MB),
        ] {
            if let Some(v) = v
                && (!v.is_finite() || !(0.0..=max).contains(&v))
            {
                return Err(CoreError::invalid(format!(
                    "resource_usage.{name} must be a number from 0 to {max}"
                )));
            }
        }
        Ok(())
    }
}

/// An agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    /// Its id.
    pub id: AgentId,
    /// Its swarm.
    pub swarm_id: SwarmId,
    /// Its name, unique within the swarm.
    pub name: String,
    /// Its type, which is also the pool it belongs to (coder, tester, …).
    #[serde(rename = "type")]
    pub agent_type: String,
    /// What it can do, sorted; a task runs only on an agent that has all its required ones.
    pub capabilities: Vec<String>,
    /// How many tasks it may hold at once.
    pub max_concurrent_tasks: u32,
    /// Its role in the topology, given by the swarm's topology.
    pub role: AgentRole,
    /// The role it asked for when it registered: agents asking for more senior roles are
    /// preferred when roles are handed out and leaders elected.
    #[serde(default)]
    pub requested_role: AgentRole,
    /// Its status.
    pub status: AgentStatus,
    /// Health the agent last reported about itself.
    pub reported_health: ReportedHealth,
    /// Free-form metadata given at registration (a JSON object).
    pub metadata: Json,
    /// Resource usage last reported.
    pub resource_usage: ResourceUsage,
    /// Tasks it currently holds (assigned or running).
    pub current_tasks: Vec<TaskId>,
    /// Tasks it completed.
    pub tasks_completed: u64,
    /// Task attempts that failed on it.
    pub tasks_failed: u64,
    /// When it registered.
    pub registered_at: Timestamp,
    /// When it last showed a sign of life.
    pub last_heartbeat_at: Timestamp,
    /// Its lease: it holds its tasks until this instant unless it shows a sign of life.
    pub lease_until: Timestamp,
    /// When it last stopped, if it did.
    pub stopped_at: Option<Timestamp>,
    /// When it was unregistered (removed for good); such an agent is not restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<Timestamp>,
    /// The process side of an agent that Flotilla starts itself; `null` for a connected agent.
    #[serde(default)]
    pub managed: Option<Managed>,
    /// The coordinator's judgement of its health, with its history, breaker and recovery.
    #[serde(default)]
    pub health: crate::health::AgentHealth,
    /// Its checkpoints, oldest first (the whole rows are in the store).
    #[serde(default)]
    pub checkpoints: Vec<crate::checkpoint::CheckpointRef>,
    /// The topic patterns it subscribed to (`tasks.*`, `health`, `*`).
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

/// Whether a managed agent should be running.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Keep it running (restart it when asked).
    #[default]
    Running,
    /// Keep it stopped.
    Stopped,
}

/// The process side of a managed agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Managed {
    /// Where its processes run.
    pub runtime: crate::pool::RuntimeKind,
    /// How it runs its command.
    pub mode: crate::pool::AgentMode,
    /// What was last asked of it.
    pub desired: Desired,
    /// The process (group) running it, in daemon mode while it runs.
    pub pid: Option<u32>,
    /// When its process was last started.
    pub started_at: Option<Timestamp>,
    /// How many times it was started.
    pub starts: u32,
    /// How its last process ended, e.g. `exited with code 3`.
    pub last_exit: Option<String>,
    /// Which limits the runtime could apply (rlimits, cgroup), in words.
    pub limits_applied: Option<String>,
    /// The host (`flotilla host --name`) it is placed on, for a pool placed on hosts; `None`
    /// on the coordinator's machine, or while it waits for a host with room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Set while a scale-down removes it from its pool: it takes no new task, finishes the
    /// ones it holds, then is stopped and removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// A managed agent being drained out of its pool by a scale-down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drain {
    /// When the drain began.
    pub since: Timestamp,
    /// Why (the scale decision, in words).
    pub reason: String,
    /// Its tasks are done and its stop was asked for; it is removed when its process ends.
    #[serde(default)]
    pub stopping: bool,
}

impl Agent {
    /// Whether Flotilla runs this agent's process, in `exec` mode (one process per task).
    pub fn is_exec(&self) -> bool {
        self.managed
            .as_ref()
            .is_some_and(|m| m.mode == crate::pool::AgentMode::Exec)
    }
}

/// What an agent gives to register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Its type (pool): `coder`, `tester`, … or a custom name.
    #[serde(rename = "type", alias = "pool", default = "default_agent_type")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub agent_type: String,
    /// Its name; generated from the type when left out.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub name: Option<String>,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// How many tasks it may hold at once (1 by default).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent_tasks: u32,
    /// The role it asks for (worker by default); the topology decides, preferring agents that
    /// ask for more senior roles.
    #[serde(default)]
    pub role: AgentRole,
    /// Free-form metadata (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub metadata: Option<Json>,
}

fn default_agent_type() -> String {
    "worker".to_owned()
}

fn one() -> u32 {
    1
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec {
            agent_type: default_agent_type(),
            name: None,
            capabilities: Vec::new(),
            max_concurrent_tasks: 1,
            role: AgentRole::Worker,
            metadata: None,
        }
    }
}

/// What an agent sends with a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Heartbeat {
    /// How the agent says it is doing.
    pub status: Option<ReportedHealth>,
    /// Its resource usage.
    pub resource_usage: Option<ResourceUsage>,
    /// The tasks the agent is working on, if it keeps count. A task the coordinator has had
    /// running on this agent for longer than one heartbeat interval but that the agent does
    /// not list was never received (the answer handing it over was lost): it goes back to the
    /// queue without costing an attempt. Tasks listed here that the agent no longer holds come
    /// back in [`crate::api::HeartbeatAck::revoked_tasks`].
    pub running_tasks: Option<Vec<TaskId>>,
}

/// Checks and normalises a capability list: sorted, without duplicates.
pub fn normalize_capabilities(mut caps: Vec<String>) -> Result<Vec<String>, CoreError> {
    if caps.len() > 64 {
        return Err(CoreError::invalid("at most 64 capabilities are allowed"));
    }
    for c in &caps {
        if c.is_empty()
            || c.len() > 64
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':' | '/'))
        {
            return Err(CoreError::invalid(format!(
                "capability {c:?} must be 1 to 64 characters of letters, digits, '-', '_', '.', ':' or '/'"
            )));
        }
    }
    caps.sort_unstable();
    caps.dedup();
    Ok(caps)
}

/// Whether sorted `have` contains every element of sorted `need`.
pub fn has_all(have: &[String], need: &[String]) -> bool {
    let mut it = have.iter();
    'outer: for n in need {
        for h in it.by_ref() {
            match h.cmp(n) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => continue 'outer,
                std::cmp::Ordering::Greater => return false,
            }
        }
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn has_all_is_subset_of_sorted_lists() {
        assert!(has_all(&v(&["a", "b", "c"]), &v(&["a", "c"])));
        assert!(has_all(&v(&["a"]), &v(&[])));
        assert!(!has_all(&v(&["a", "c"]), &v(&["b"])));
        assert!(!has_all(&v(&[]), &v(&["a"])));
        assert!(!has_all(&v(&["a", "b"]), &v(&["b", "z"])));
    }

    #[test]
    fn capabilities_are_sorted_and_deduplicated() {
        let caps = normalize_capabilities(v(&["rust", "python", "rust"])).unwrap();
        assert_eq!(caps, v(&["python", "rust"]));
        assert!(normalize_capabilities(v(&["bad cap"])).is_err());
    }
}
