//! Swarms: named groups of agents with a topology, a configuration and a status.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{AgentId, SwarmId};
use crate::time::{Timestamp, serde_ms};

/// The name of the swarm that always exists.
pub const DEFAULT_SWARM: &str = "default";

/// How the agents of a swarm are connected.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// One coordinator and workers.
    #[default]
    Star,
    /// Every agent reaches every other.
    Mesh,
    /// A tree: coordinator, supervisors, workers.
    Hierarchical,
    /// A token passes around a ring.
    Ring,
}

/// How a swarm places its ready tasks on its agents. Whatever the strategy, an agent takes the
/// best task it may run (higher priority first, then first in, first out); the strategy decides
/// which agent goes first, and where tasks wait.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Agents take turns, in the order they asked for work.
    #[default]
    RoundRobin,
    /// The agent with the fewest tasks, held plus waiting in its local queue, goes first.
    LeastLoaded,
    /// The most specific agent (fewest capabilities) goes first, and among tasks of equal
    /// priority an agent takes the one that needs most of its capabilities: generalists stay
    /// free for the work only they can do.
    CapabilityMatch,
    /// A task with an `affinity_key` waits in the local queue of the agent that last ran a task
    /// with that key, for at most `affinity_wait`; then any agent may take it. Otherwise, least
    /// loaded.
    Affinity,
    /// Agents get work in proportion to their measured success rate times speed (smooth
    /// weighted round robin).
    Weighted,
    /// The agent with the lowest current CPU and memory use, and fewest held tasks, goes first.
    ResourceBased,
    /// Agents of higher-priority pools go first, then the least loaded.
    Priority,
}

impl Strategy {
    /// Every strategy, in the order the documentation lists them.
    pub const ALL: [Strategy; 7] = [
        Strategy::RoundRobin,
        Strategy::LeastLoaded,
        Strategy::CapabilityMatch,
        Strategy::Affinity,
        Strategy::Weighted,
        Strategy::ResourceBased,
        Strategy::Priority,
    ];

    /// Its name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
            Strategy::CapabilityMatch => "capability_match",
            Strategy::Affinity => "affinity",
            Strategy::Weighted => "weighted",
            Strategy::ResourceBased => "resource_based",
            Strategy::Priority => "priority",
        }
    }
}

/// A swarm's lifecycle status, derived from its agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SwarmStatus {
    /// No agents are registered.
    Inactive,
    /// Agents are registered but none has yet reported in.
    Starting,
    /// At least `min_agents` agents are healthy.
    Active,
    /// Some agents are unhealthy, or fewer than `min_agents` are healthy.
    Degraded,
    /// The swarm is being deleted.
    Stopping,
}

impl SwarmStatus {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SwarmStatus::Inactive => "inactive",
            SwarmStatus::Starting => "starting",
            SwarmStatus::Active => "active",
            SwarmStatus::Degraded => "degraded",
            SwarmStatus::Stopping => "stopping",
        }
    }
}

/// A swarm's configuration (the PRD's `swarms.configuration`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmConfig {
    /// Fewer healthy agents than this makes the swarm `degraded`.
    pub min_agents: u32,
    /// Registrations beyond this many agents are refused.
    pub max_agents: u32,
    /// How often agents must heartbeat.
    #[serde(rename = "heartbeat_interval_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub heartbeat_interval: Duration,
    /// How many intervals may pass without a heartbeat before an agent's lease expires.
    pub heartbeat_miss_limit: u32,
    /// Default timeout of a task's attempt, when the task does not set one.
    #[serde(rename = "task_timeout_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub task_timeout: Duration,
    /// Default maximum attempts of a task, when the task does not set it.
    pub task_max_attempts: u32,
    /// When an agent counts as degraded or unhealthy.
    pub health: crate::health::HealthPolicy,
    /// How managed agents that fail are recovered.
    pub recovery: crate::health::RecoveryPolicy,
    /// How ready tasks are placed on agents.
    pub strategy: Strategy,
    /// Tasks each agent may have waiting in its local queue beyond those it holds; 0 keeps
    /// every waiting task in the swarm's queue. An agent with nothing to do takes work from
    /// the most loaded agent's local queue (work stealing).
    pub prefetch: u32,
    /// With the `affinity` strategy, how long a task waits for the agent that last ran its
    /// affinity key before any agent may take it.
    #[serde(rename = "affinity_wait_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub affinity_wait: Duration,
    /// The settings of each topology (the swarm's `topology` says which is in force).
    pub topology: crate::topology::TopologyConfig,
    /// How messages between its agents are delivered.
    pub messaging: crate::message::MessagingConfig,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            min_agents: 0,
            max_agents: 10_000,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_miss_limit: 3,
            task_timeout: Duration::from_secs(300),
            task_max_attempts: 3,
            health: Default::default(),
            recovery: Default::default(),
            strategy: Strategy::default(),
            prefetch: 0,
            affinity_wait: Duration::from_secs(5),
            topology: Default::default(),
            messaging: Default::default(),
        }
    }
}

impl SwarmConfig {
    /// How long an agent's lease lasts after its last sign of life.
    pub fn lease_duration(&self) -> Duration {
        self.heartbeat_interval * self.heartbeat_miss_limit
    }

    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.max_agents == 0 {
            return Err(CoreError::invalid("config.max_agents must be at least 1"));
        }
        if self.min_agents > self.max_agents {
            return Err(CoreError::invalid(format!(
                "config.min_agents ({}) must not exceed config.max_agents ({})",
                self.min_agents, self.max_agents
            )));
        }
        if self.heartbeat_interval < Duration::from_millis(100)
            || self.heartbeat_interval > Duration::from_secs(3600)
        {
            return Err(CoreError::invalid(
                "config.heartbeat_interval_ms must be between 100 and 3600000",
            ));
        }
        if !(1..=100).contains(&self.heartbeat_miss_limit) {
            return Err(CoreError::invalid(
                "config.heartbeat_miss_limit must be between 1 and 100",
            ));
        }
        if self.task_timeout < Duration::from_millis(100)
            || self.task_timeout > Duration::from_secs(7 * 24 * 3600)
        {
            return Err(CoreError::invalid(
                "config.task_timeout_ms must be between 100 and 604800000 (7 days)",
            ));
        }
        if !(1..=100).contains(&self.task_max_attempts) {
            return Err(CoreError::invalid(
                "config.task_max_attempts must be between 1 and 100",
            ));
        }
        if self.prefetch > 1000 {
            return Err(CoreError::invalid(
                "config.prefetch must be between 0 and 1000",
            ));
        }
        if self.affinity_wait > Duration::from_secs(3600) {
            return Err(CoreError::invalid(
                "config.affinity_wait_ms must be at most 3600000 (1 hour)",
            ));
        }
        self.health.validate()?;
        self.recovery.validate()?;
        self.topology.validate()?;
        self.messaging.validate()?;
        Ok(())
    }
}

/// A swarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Swarm {
    /// Its id.
    pub id: SwarmId,
    /// Its unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// How its agents are connected.
    pub topology: Topology,
    /// Its configuration.
    pub config: SwarmConfig,
    /// Its status, derived from its agents.
    pub status: SwarmStatus,
    /// The agent leading the swarm, once one is elected.
    pub leader_agent_id: Option<AgentId>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What a caller gives to create a swarm.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// Unique name: letters, digits, `-`, `_` and `.`, at most 100 characters.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Topology; `star` by default.
    #[serde(default)]
    pub topology: Topology,
    /// Configuration; defaults for what is left out.
    #[serde(default)]
    pub config: SwarmConfig,
}

/// A partial update of a swarm; fields left out keep their value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmUpdate {
    /// New name.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub name: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New topology.
    #[serde(default)]
    pub topology: Option<Topology>,
    /// New configuration (replaces the whole configuration).
    #[serde(default)]
    pub config: Option<SwarmConfig>,
}

/// Checks a swarm, agent or pool name.
pub fn validate_name(what: &str, name: &str) -> Result<(), CoreError> {
    if name.is_empty() || name.len() > 100 {
        return Err(CoreError::invalid(format!(
            "{what} name must be 1 to 100 characters long"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(CoreError::invalid(format!(
            "{what} name {name:?} may contain only letters, digits, '-', '_' and '.'"
        )));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(CoreError::invalid(format!(
            "{what} name {name:?} must not be a UUID (it would be confused with an id)"
        )));
    }
    Ok(())
}
