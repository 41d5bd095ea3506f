//! Pools: the agents of one type inside a swarm, and, for managed pools, the template from
//! which Flotilla starts them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::normalize_capabilities;
use crate::error::CoreError;
use crate::ids::SwarmId;
use crate::swarm::validate_name;
use crate::time::{Timestamp, serde_ms};

/// Where a managed agent's process runs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// A child process of the coordinator, in its own process group.
    #[default]
    Process,
    /// A tmux session named `flotilla-<agent name>`, which a user can attach to.
    Tmux,
}

/// Which machine a managed agent's process runs on.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The coordinator's own machine.
    #[default]
    Local,
    /// One of the hosts (`flotilla host`) connected to the coordinator, chosen by the
    /// resource manager's strategy among those with room (and the labels `host_labels` asks for).
    Hosts,
}

impl Placement {
    fn is_local(&self) -> bool {
        *self == Placement::Local
    }
}

/// How a managed agent runs its command.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// The command runs once per task: payload on stdin, result on stdout.
    #[default]
    Exec,
    /// The command is one long process per agent that speaks the agent protocol itself.
    Daemon,
}

/// Resource limits of a managed agent's processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceLimits {
    /// Address-space limit (rlimit) and `memory.max` (cgroup v2, where available), in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU share in cores (`cpu.max`, cgroup v2, where available).
    pub cpu_cores: Option<f64>,
    /// CPU time per process (rlimit), in milliseconds.
    #[serde(rename = "cpu_time_ms", with = "serde_ms::option")]
    #[schema(value_type = Option<u64>)]
    pub cpu_time: Option<Duration>,
    /// Wall-clock limit of one task attempt on this pool's agents; a task with a shorter
    /// timeout of its own keeps it.
    #[serde(rename = "task_timeout_ms", with = "serde_ms::option")]
    #[schema(value_type = Option<u64>)]
    pub task_timeout: Option<Duration>,
}

/// How Flotilla starts the agents of a managed pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTemplate {
    /// The program, looked up on `PATH` when it has no `/`.
    pub command: String,
    /// Its arguments. In `exec` mode, `{{payload.field}}`, `{{payload}}`, `{{task.id}}`,
    /// `{{task.type}}` and `{{task.attempt}}` are replaced inside each argument (never
    /// through a shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables a task may set (exec mode): the names listed here, and only those,
    /// may appear in the task payload's `env` object (`{"env": {"MODEL": "opus"}}`); a task whose
    /// payload sets any other fails without running. Empty (the default): a payload sets none,
    /// and its `env` field is plain data. Names starting with `FLOTILLA_` are the coordinator's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_env: Vec<String>,
    /// Working directory, without `.` or `..` segments (the CLI makes a fleet file's relative
    /// ones absolute). With work roots configured (`flotilla serve --work-root`) it must resolve
    /// inside one of them (a relative one against the first; the first root when left out);
    /// without, the coordinator's own when left out.
    #[serde(default)]
    pub workdir: Option<String>,
    /// The user its processes run as (a name, or a numeric uid); the coordinator's `--run-as`
    /// user when left out, else the coordinator's own user. Another user than the
    /// coordinator's needs a coordinator running as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `process` (default) or `tmux`.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// `exec` (default) or `daemon`.
    #[serde(default)]
    pub mode: AgentMode,
    /// `local` (default): on the coordinator's machine; `hosts`: on a connected host (daemon
    /// mode only: the agent talks to the coordinator over the network).
    #[serde(default, skip_serializing_if = "Placement::is_local")]
    pub placement: Placement,
    /// With `placement = "hosts"`: only hosts that carry every one of these labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_labels: Vec<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: ResourceLimits,
    /// How long a stop waits after SIGTERM before SIGKILL.
    #[serde(rename = "stop_grace_ms", with = "serde_ms", default = "default_grace")]
    #[schema(value_type = u64)]
    pub stop_grace: Duration,
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}

impl AgentTemplate {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.command.trim().is_empty() {
            return Err(CoreError::invalid("agent.command must not be empty"));
        }
        if self.args.len() > 1000 || self.env.len() > 1000 {
            return Err(CoreError::invalid(
                "agent.args and agent.env take at most 1000 entries each",
            ));
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(CoreError::invalid(format!(
                    "agent.env: {key:?} is not a valid environment variable name"
                )));
            }
        }
        self.validate_payload_env()?;
        self.validate_placement()?;
        if let Some(user) = &self.user {
            let ok = !user.is_empty()
                && user.len() <= 64
                && !user.starts_with('-')
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(CoreError::invalid(format!(
                    "agent.user {user:?} is not a user name: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-' (or a numeric uid)"
                )));
            }
        }
        if self.command.contains('\0')
            || self
                .args
                .iter()
                .chain(self.env.values())
                .any(|a| a.contains('\0'))
        {
            return Err(CoreError::invalid(
                "agent.command, args and env must not contain NUL bytes",
            ));
        }
        if let Some(dir) = &self.workdir {
            // A `..` would make the path shown (in checkpoints, in logs) not the one used, and
            // is how a path climbs out of a work root. Relative ones are taken from the first
            // work root (the coordinator's checks them against the roots).
            if dir.is_empty()
                || dir.contains('\0')
                || dir.split('/').any(|seg| seg == "." || seg == "..")
                || dir.len() > 4096
            {
                return Err(CoreError::invalid(format!(
                    "agent.workdir {dir:?} must be a path (at most 4096 bytes) without `.` or `..` segments"
                )));
            }
        }
        let l = &self.limits;
        if l.memory_bytes.is_some_and(|m| m < 1024 * 1024) {
            return Err(CoreError::invalid(
                "agent.limits.memory must be at least 1 MiB",
            ));
        }
        if l.cpu_cores
            .is_some_and(|c| !c.is_finite() || c <= 0.0 || c > 1024.0)
        {
            return Err(CoreError::invalid(
                "agent.limits.cpu must be a number of cores above 0",
            ));
        }
        if l.task_timeout
            .is_some_and(|t| t < Duration::from_millis(100))
        {
            return Err(CoreError::invalid(
                "agent.limits.task_timeout must be at least 100 ms",
            ));
        }
        if self.stop_grace > Duration::from_secs(3600) {
            return Err(CoreError::invalid(
                "agent.stop_grace must be at most 1 hour",
            ));
        }
        Ok(())
    }
}

impl AgentTemplate {
    /// Checks `placement` and `host_labels`: hosts run daemon-mode agents only, and labels are
    /// names.
    fn validate_placement(&self) -> Result<(), CoreError> {
        if self.placement == Placement::Hosts && self.mode != AgentMode::Daemon {
            return Err(CoreError::invalid(
                "agent.placement = \"hosts\" needs agent.mode = \"daemon\": an agent on another machine talks to the coordinator itself (for a command run once per task, use `flotilla worker --agent-from-env -- COMMAND` as the daemon)",
            ));
        }
        if !self.host_labels.is_empty() && self.placement != Placement::Hosts {
            return Err(CoreError::invalid(
                "agent.host_labels only applies with agent.placement = \"hosts\"",
            ));
        }
        if self.host_labels.len() > 32 {
            return Err(CoreError::invalid(
                "agent.host_labels takes at most 32 labels",
            ));
        }
        for l in &self.host_labels {
            validate_name("host label", l)?;
        }
        Ok(())
    }

    /// Checks `payload_env`: valid, distinct names, none of the coordinator's, exec mode only.
    fn validate_payload_env(&self) -> Result<(), CoreError> {
        if self.payload_env.is_empty() {
            return Ok(());
        }
        if self.mode != AgentMode::Exec {
            return Err(CoreError::invalid(
                "agent.payload_env applies to exec mode only: a daemon is started once, before any task, and takes its tasks through the API",
            ));
        }
        if self.payload_env.len() > 100 {
            return Err(CoreError::invalid(
                "agent.payload_env takes at most 100 names",
            ));
        }
        for (i, name) in self.payload_env.iter().enumerate() {
            let mut bytes = name.bytes();
            let ok = name.len() <= 128
                && bytes
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(CoreError::invalid(format!(
                    "agent.payload_env: {name:?} is not an environment variable name (a letter or '_', then letters, digits and '_')"
                )));
            }
            if name.starts_with("FLOTILLA_") {
                return Err(CoreError::invalid(format!(
                    "agent.payload_env: {name} is set by the coordinator (FLOTILLA_* names are reserved); a task may not set it"
                )));
            }
            if self.payload_env[..i].contains(name) {
                return Err(CoreError::invalid(format!(
                    "agent.payload_env lists {name} twice"
                )));
            }
        }
        Ok(())
    }
}

/// The fleet seed's sixteen pool types. A pool's name is its agents' type; any other valid
/// name makes a custom pool, which behaves the same.
pub const POOL_TYPES: [&str; 16] = [
    "coder",
    "tester",
    "reviewer",
    "architect",
    "researcher",
    "analyst",
    "optimizer",
    "security",
    "performance",
    "ui",
    "mobile",
    "devops",
    "database",
    "network",
    "infrastructure",
    "coordinator",
];

/// The default priority level of a pool (1 to 10, higher more important).
pub const DEFAULT_POOL_PRIORITY: u8 = 5;

/// What each agent of a pool reserves on its machine; the resource manager allocates it
/// against the machine's capacity before the agent is started. Zero means nothing reserved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceRequest {
    /// CPU cores (fractions allowed).
    pub cpu_cores: f64,
    /// Memory, in MiB.
    pub memory_mb: u64,
    /// Disk, in MiB.
    pub disk_mb: u64,
}

impl ResourceRequest {
    /// Whether nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.cpu_cores == 0.0 && self.memory_mb == 0 && self.disk_mb == 0
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        if !self.cpu_cores.is_finite() || !(0.0..=1024.0).contains(&self.cpu_cores) {
            return Err(CoreError::invalid(
                "resources.cpu_cores must be between 0 and 1024",
            ));
        }
        if self.memory_mb > 16 * 1024 * 1024 || self.disk_mb > 1024 * 1024 * 1024 {
            return Err(CoreError::invalid(
                "resources.memory_mb must be at most 16 TiB and resources.disk_mb at most 1 PiB",
            ));
        }
        Ok(())
    }
}

/// What an autoscaling policy watches (the PRD's `scaling_policies.metric_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScalingMetric {
    /// Ready tasks the pool's agents could run, per agent of the pool.
    QueueDepth,
    /// Share of the pool's task slots in use, 0 to 1.
    AgentUtilization,
    /// Share of the pool's recent task attempts that failed, 0 to 1.
    ErrorRate,
    /// 95th percentile of the pool's recent task wait (queued to started), in milliseconds.
    LatencyP95,
}

/// An autoscaling policy of a managed pool (the PRD's `scaling_policies` row): when the metric
/// stays above `scale_up_threshold` (or below `scale_down_threshold`) for `evaluation_periods`
/// periods in a row, the pool grows (shrinks) by the increment, within its min and max, and
/// then waits `cooldown` before the next action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalingPolicy {
    /// Its name, unique in the pool.
    #[serde(default = "default_policy_name")]
    pub name: String,
    /// What it watches.
    pub metric: ScalingMetric,
    /// At or above this the pool grows.
    pub scale_up_threshold: f64,
    /// At or below this the pool shrinks.
    pub scale_down_threshold: f64,
    /// Agents added per action.
    #[serde(default = "one")]
    pub scale_up_increment: u32,
    /// Agents removed per action.
    #[serde(default = "one")]
    pub scale_down_increment: u32,
    /// Wait after an action before the next one.
    #[serde(
        rename = "cooldown_ms",
        with = "serde_ms",
        default = "default_cooldown"
    )]
    #[schema(value_type = u64)]
    pub cooldown: Duration,
    /// Periods in a row the threshold must be crossed.
    #[serde(default = "default_evaluation_periods")]
    pub evaluation_periods: u32,
    /// How long one evaluation period lasts.
    #[serde(
        rename = "evaluation_period_ms",
        with = "serde_ms",
        default = "default_evaluation_period"
    )]
    #[schema(value_type = u64)]
    pub evaluation_period: Duration,
    /// A disabled policy is kept but not evaluated.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Predictive scale-up: a period whose metric is still under the up threshold counts as a
    /// breach when the metric's trend (least squares over the last periods) reaches the
    /// threshold within `evaluation_periods` more periods.
    #[serde(default)]
    pub predictive: bool,
}

fn default_policy_name() -> String {
    "default".to_owned()
}

fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

fn default_evaluation_periods() -> u32 {
    3
}

fn default_evaluation_period() -> Duration {
    Duration::from_secs(10)
}

fn yes() -> bool {
    true
}

impl ScalingPolicy {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        validate_name("scaling policy", &self.name)?;
        let (up, down) = (self.scale_up_threshold, self.scale_down_threshold);
        if !up.is_finite() || !down.is_finite() || up < 0.0 || down < 0.0 {
            return Err(CoreError::invalid(format!(
                "scaling policy {:?}: thresholds must be numbers of at least 0",
                self.name
            )));
        }
        if down >= up {
            return Err(CoreError::invalid(format!(
                "scaling policy {:?}: scale_down_threshold ({down}) must be below scale_up_threshold ({up})",
                self.name
            )));
        }
        if !(1..=1000).contains(&self.scale_up_increment)
            || !(1..=1000).contains(&self.scale_down_increment)
        {
            return Err(CoreError::invalid(format!(
                "scaling policy {:?}: increments must be between 1 and 1000",
                self.name
            )));
        }
        if !(1..=100).contains(&self.evaluation_periods) {
            return Err(CoreError::invalid(format!(
                "scaling policy {:?}: evaluation_periods must be between 1 and 100",
                self.name
            )));
        }
        if self.evaluation_period < Duration::from_millis(100)
            || self.evaluation_period > Duration::from_secs(3600)
            || self.cooldown > Duration::from_secs(24 * 3600)
        {
            return Err(CoreError::invalid(format!(
                "scaling policy {:?}: evaluation_period_ms must be between 100 and 3600000 and cooldown_ms at most 86400000",
                self.name
            )));
        }
        Ok(())
    }
}

/// A pool of a swarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pool {
    /// Its swarm.
    pub swarm_id: SwarmId,
    /// Its name, which is also the type of its agents (coder, tester, … or a custom name).
    pub name: String,
    /// Flotilla keeps at least this many managed agents running.
    pub min_agents: u32,
    /// No more agents than this are spawned in it.
    pub max_agents: u32,
    /// Capabilities of the agents it starts.
    pub capabilities: Vec<String>,
    /// Tasks one of its agents may hold at once.
    pub max_concurrent_tasks: u32,
    /// How its agents are started; a pool without one only groups connected agents.
    pub template: Option<AgentTemplate>,
    /// How its agents' checkpoints are taken and kept.
    #[serde(default)]
    pub checkpoints: crate::checkpoint::CheckpointPolicy,
    /// Its priority level, 1 to 10 (higher is more important): resources go to higher pools
    /// first, and pressure pauses lower pools first.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// What each of its agents reserves on the machine.
    #[serde(default)]
    pub resources: ResourceRequest,
    /// Its autoscaling policies (managed pools).
    #[serde(default)]
    pub scaling: Vec<ScalingPolicy>,
    /// The size the autoscaler or a manual scale asked for, between `min_agents` and
    /// `max_agents`; `None` keeps `min_agents` running.
    #[serde(default)]
    pub desired_agents: Option<u32>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Pool {
    /// Whether Flotilla starts its agents.
    pub fn is_managed(&self) -> bool {
        self.template.is_some()
    }
}

/// What a caller gives to create or replace a pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Its name (the agents' type).
    pub name: String,
    /// Managed agents kept running (0 by default).
    #[serde(default)]
    pub min_agents: u32,
    /// At most this many agents (100 by default).
    #[serde(default = "default_max")]
    pub max_agents: u32,
    /// Capabilities of the agents it starts.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Tasks one agent may hold at once (1 by default).
    #[serde(default = "one")]
    pub max_concurrent_tasks: u32,
    /// The agent template of a managed pool.
    #[serde(default, rename = "agent")]
    pub template: Option<AgentTemplate>,
    /// How its agents' checkpoints are taken and kept.
    #[serde(default)]
    pub checkpoints: crate::checkpoint::CheckpointPolicy,
    /// Its priority level, 1 to 10 (5 by default).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// What each of its agents reserves on the machine.
    #[serde(default)]
    pub resources: ResourceRequest,
    /// Its autoscaling policies (managed pools).
    #[serde(default)]
    pub scaling: Vec<ScalingPolicy>,
}

fn default_priority() -> u8 {
    DEFAULT_POOL_PRIORITY
}

fn default_max() -> u32 {
    100
}

fn one() -> u32 {
    1
}

impl PoolSpec {
    /// Checks every field and normalises the capabilities.
    pub fn validated(mut self) -> Result<PoolSpec, CoreError> {
        validate_name("pool", &self.name)?;
        if self.max_agents == 0 || self.min_agents > self.max_agents {
            return Err(CoreError::invalid(format!(
                "pool {:?}: min_agents ({}) must not exceed max_agents ({}), which must be at least 1",
                self.name, self.min_agents, self.max_agents
            )));
        }
        if self.max_agents > 10_000 {
            return Err(CoreError::invalid(format!(
                "pool {:?}: max_agents must be at most 10000",
                self.name
            )));
        }
        if !(1..=10_000).contains(&self.max_concurrent_tasks) {
            return Err(CoreError::invalid(format!(
                "pool {:?}: max_concurrent_tasks must be between 1 and 10000",
                self.name
            )));
        }
        self.capabilities = normalize_capabilities(self.capabilities)?;
        if !(1..=10).contains(&self.priority) {
            return Err(CoreError::invalid(format!(
                "pool {:?}: priority must be between 1 and 10",
                self.name
            )));
        }
        self.resources
            .validate()
            .map_err(|e| CoreError::invalid(format!("pool {:?}: {e}", self.name)))?;
        if self.scaling.len() > 10 {
            return Err(CoreError::invalid(format!(
                "pool {:?}: at most 10 scaling policies",
                self.name
            )));
        }
        for (i, p) in self.scaling.iter().enumerate() {
            p.validate()
                .map_err(|e| CoreError::invalid(format!("pool {:?}: {e}", self.name)))?;
            if self.scaling[..i].iter().any(|q| q.name == p.name) {
                return Err(CoreError::invalid(format!(
                    "pool {:?}: two scaling policies are named {:?}",
                    self.name, p.name
                )));
            }
        }
        if !self.scaling.is_empty() && self.template.is_none() {
            return Err(CoreError::invalid(format!(
                "pool {:?}: scaling policies need an agent template (an `agent` section) to start agents from",
                self.name
            )));
        }
        self.checkpoints
            .validate()
            .map_err(|e| CoreError::invalid(format!("pool {:?}: {e}", self.name)))?;
        if let Some(t) = &self.template {
            t.validate()
                .map_err(|e| CoreError::invalid(format!("pool {:?}: {e}", self.name)))?;
        } else if self.min_agents > 0 {
            return Err(CoreError::invalid(format!(
                "pool {:?}: min_agents needs an agent template (an `agent` section) to start agents from",
                self.name
            )));
        }
        Ok(self)
    }
}

/// What a lifecycle request asks of a managed agent (`PATCH /agents/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Stop, restore a checkpoint (workspace and state), start.
    Rollback,
    /// Start its process (it was stopped or failed).
    Start,
    /// Stop its process: SIGTERM, a grace period, then SIGKILL (at once with `force`).
    Stop,
    /// Freeze its processes (SIGSTOP); it takes no tasks and keeps its lease.
    Pause,
    /// Thaw its processes (SIGCONT).
    Resume,
    /// Stop, then start.
    Restart,
}

/// The body of `PATCH /agents/{id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRequest {
    /// What to do.
    pub operation: Operation,
    /// With `stop` or `restart`: kill at once instead of waiting for a graceful exit.
    #[serde(default)]
    pub force: bool,
    /// With `rollback`: the checkpoint (the latest when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<crate::ids::CheckpointId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(json: serde_json::Value) -> AgentTemplate {
        serde_json::from_value(json).expect("a template")
    }

    #[test]
    fn payload_env_and_user_are_checked() {
        let ok = template(serde_json::json!({
            "command": "x", "payload_env": ["MODEL", "_X2"], "user": "nobody"
        }));
        assert!(ok.validate().is_ok());
        assert!(
            template(serde_json::json!({"command": "x", "user": "65534"}))
                .validate()
                .is_ok()
        );
        for (json, words) in [
            (
                serde_json::json!({"command": "x", "payload_env": ["2X"]}),
                "not an environment variable name",
            ),
            (
                serde_json::json!({"command": "x", "payload_env": ["A=B"]}),
                "not an environment variable name",
            ),
            (
                serde_json::json!({"command": "x", "payload_env": ["FLOTILLA_TOKEN"]}),
                "reserved",
            ),
            (
                serde_json::json!({"command": "x", "payload_env": ["A", "A"]}),
                "twice",
            ),
            (
                serde_json::json!({"command": "x", "mode": "daemon", "payload_env": ["A"]}),
                "exec mode only",
            ),
            (
                serde_json::json!({"command": "x", "user": "-rf"}),
                "not a user name",
            ),
            (
                serde_json::json!({"command": "x", "user": "a b"}),
                "not a user name",
            ),
        ] {
            let err = template(json.clone()).validate().unwrap_err().to_string();
            assert!(err.contains(words), "{json}: {err}");
        }
    }

    #[test]
    fn new_fields_are_left_out_of_the_json_when_unset() {
        let t = template(serde_json::json!({"command": "x"}));
        let json = serde_json::to_value(&t).unwrap();
        assert!(
            json.get("user").is_none() && json.get("payload_env").is_none(),
            "{json}"
        );
    }
}
