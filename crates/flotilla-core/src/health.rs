//! Agent health: what the coordinator concludes about an agent from what it sees (heartbeats,
//! exits, task outcomes, durations, resource usage), the circuit breaker that keeps a failing
//! agent from eating the queue, and the policies that say when to conclude what and how to
//! recover.
//!
//! This is the coordinator's judgement, beside [`crate::ReportedHealth`], which is the agent's
//! own word in its heartbeats.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::time::{Timestamp, serde_ms};

/// How many health transitions an agent keeps.
pub const HEALTH_HISTORY: usize = 20;

/// How many recent task outcomes an agent keeps for its error rate.
pub const OUTCOME_WINDOW: usize = 50;

/// The coordinator's judgement of an agent.
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
pub enum HealthState {
    /// Nothing wrong seen.
    #[default]
    Healthy,
    /// Working, but something is off (errors, slowness, memory near its limit, an open
    /// circuit breaker); it keeps its tasks.
    Degraded,
    /// Not working: its tasks were taken back and recovery (if any) is under way.
    Unhealthy,
}

impl HealthState {
    /// The state as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// Why an agent is not healthy (or, on a return to healthy, what it recovered from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthReason {
    /// No heartbeat for the whole lease.
    MissedHeartbeats,
    /// Its process exited without being asked to.
    ProcessExited,
    /// Too many of its recent tasks failed.
    ErrorRate,
    /// Several tasks in a row failed: its circuit breaker is open.
    CircuitOpen,
    /// Its memory is near (degraded) or over (unhealthy) its limit.
    Memory,
    /// A task has run far longer than this agent usually takes.
    SlowTask,
    /// A running task reported no progress for too long.
    NoProgress,
    /// The agent said so in its heartbeat.
    Reported,
    /// Recovery gave up on it.
    GaveUp,
}

impl HealthReason {
    /// The reason as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthReason::MissedHeartbeats => "missed_heartbeats",
            HealthReason::ProcessExited => "process_exited",
            HealthReason::ErrorRate => "error_rate",
            HealthReason::CircuitOpen => "circuit_open",
            HealthReason::Memory => "memory",
            HealthReason::SlowTask => "slow_task",
            HealthReason::NoProgress => "no_progress",
            HealthReason::Reported => "reported",
            HealthReason::GaveUp => "gave_up",
        }
    }
}

/// One change of an agent's health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthTransition {
    /// When.
    pub at: Timestamp,
    /// From which state.
    pub from: HealthState,
    /// To which state.
    pub to: HealthState,
    /// Why (for a return to healthy: what it recovered from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<HealthReason>,
    /// What was seen, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// An agent's circuit breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Breaker {
    /// Tasks flow.
    #[default]
    Closed,
    /// No new tasks until `until`.
    Open {
        /// When it half-opens.
        until: Timestamp,
    },
    /// One trial task: success closes it, failure opens it again.
    HalfOpen,
}

impl Breaker {
    /// The breaker as the API writes its state.
    pub fn as_str(&self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half_open",
        }
    }
}

/// One finished attempt, for the error rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    /// When it finished.
    pub at: Timestamp,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Where a managed agent is on its recovery ladder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RecoveryState {
    /// Restarts in a row without a stable period between them.
    pub restarts: u32,
    /// When the next restart is due, while one is scheduled.
    pub next_at: Option<Timestamp>,
    /// When recovery last started the agent.
    pub last_restart_at: Option<Timestamp>,
    /// Recovery gave up: the agent stays `failed` and its pool starts a replacement.
    pub gave_up: bool,
    /// A rollback to this checkpoint is under way: the agent takes no task and no checkpoint
    /// until it starts again, and the checkpoint is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<crate::ids::CheckpointId>,
}

/// The coordinator's view of an agent's health.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct AgentHealth {
    /// Healthy, degraded or unhealthy.
    pub state: HealthState,
    /// Why, when not healthy.
    pub reason: Option<HealthReason>,
    /// What was seen, in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Since when it is in this state.
    pub since: Option<Timestamp>,
    /// The last transitions, oldest first (at most [`HEALTH_HISTORY`]).
    #[schema(value_type = Vec<HealthTransition>)]
    pub history: VecDeque<HealthTransition>,
    /// Its circuit breaker.
    pub breaker: Breaker,
    /// Task failures in a row.
    pub consecutive_failures: u32,
    /// Its recent task outcomes, oldest first (at most [`OUTCOME_WINDOW`]).
    #[schema(value_type = Vec<Outcome>)]
    pub outcomes: VecDeque<Outcome>,
    /// Its usual time for a successful task (exponentially weighted mean), in milliseconds.
    pub typical_task_ms: Option<f64>,
    /// How many successful tasks `typical_task_ms` is drawn from.
    pub timed_tasks: u32,
    /// A running task that makes it degraded (slow, or silent), with why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<(crate::ids::TaskId, HealthReason)>,
    /// Its recovery ladder (managed agents).
    pub recovery: RecoveryState,
}

impl AgentHealth {
    /// The share of failures among outcomes at or after `since`, and how many there were.
    pub fn error_rate(&self, since: Timestamp) -> (f64, usize) {
        let recent: Vec<&Outcome> = self.outcomes.iter().filter(|o| o.at >= since).collect();
        if recent.is_empty() {
            return (0.0, 0);
        }
        let failed = recent.iter().filter(|o| !o.ok).count();
        (failed as f64 / recent.len() as f64, recent.len())
    }
}

/// When a swarm concludes that an agent is not healthy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthPolicy {
    /// Failures among recent outcomes at or above this share make the agent degraded.
    pub error_rate_threshold: f64,
    /// How far back the error rate looks.
    #[serde(rename = "error_rate_window_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub error_rate_window: Duration,
    /// The error rate counts only with at least this many outcomes in the window.
    pub error_rate_min_tasks: u32,
    /// Failures in a row that open the circuit breaker (0: never).
    pub breaker_failures: u32,
    /// How long an open breaker stays open before one trial task.
    #[serde(rename = "breaker_cooldown_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub breaker_cooldown: Duration,
    /// A task running this many times longer than the agent's usual time makes it degraded
    /// (0: never). The usual time counts after three successful tasks.
    pub slow_task_factor: f64,
    /// A running task that reports no progress for this long makes its agent degraded.
    #[serde(
        rename = "progress_timeout_ms",
        with = "serde_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub progress_timeout: Option<Duration>,
    /// Resident memory above which an agent is unhealthy (managed agents default to their
    /// template's memory limit); from 90% of it, degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<f64>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            error_rate_threshold: 0.5,
            error_rate_window: Duration::from_secs(300),
            error_rate_min_tasks: 4,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            slow_task_factor: 5.0,
            progress_timeout: None,
            memory_limit_mb: None,
        }
    }
}

impl HealthPolicy {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        if !(self.error_rate_threshold > 0.0 && self.error_rate_threshold <= 1.0) {
            return Err(CoreError::invalid(
                "config.health.error_rate_threshold must be above 0 and at most 1",
            ));
        }
        if self.error_rate_window < Duration::from_secs(1) {
            return Err(CoreError::invalid(
                "config.health.error_rate_window_ms must be at least 1000",
            ));
        }
        if self.breaker_cooldown < Duration::from_millis(100)
            || self.breaker_cooldown > Duration::from_secs(24 * 3600)
        {
            return Err(CoreError::invalid(
                "config.health.breaker_cooldown_ms must be between 100 and 86400000",
            ));
        }
        if !(self.slow_task_factor == 0.0 || (1.0..=1000.0).contains(&self.slow_task_factor)) {
            return Err(CoreError::invalid(
                "config.health.slow_task_factor must be 0 (off) or from 1 to 1000",
            ));
        }
        if self.error_rate_window > Duration::from_secs(30 * 86_400) {
            return Err(CoreError::invalid(
                "config.health.error_rate_window_ms must be at most 30 days",
            ));
        }
        if self.error_rate_min_tasks > 10_000 || self.breaker_failures > 10_000 {
            return Err(CoreError::invalid(
                "config.health.error_rate_min_tasks and breaker_failures must be at most 10000",
            ));
        }
        if self
            .progress_timeout
            .is_some_and(|t| t < Duration::from_millis(100) || t > Duration::from_secs(7 * 86_400))
        {
            return Err(CoreError::invalid(
                "config.health.progress_timeout_ms must be between 100 and 604800000 (7 days)",
            ));
        }
        if self
            .memory_limit_mb
            .is_some_and(|m| !m.is_finite() || m <= 0.0)
        {
            return Err(CoreError::invalid(
                "config.health.memory_limit_mb must be a number above 0",
            ));
        }
        Ok(())
    }
}

/// How a swarm recovers its managed agents: restart with exponential backoff; after too many
/// restarts in a row, give up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryPolicy {
    /// Restart managed agents that fail (false: leave them failed).
    pub restart: bool,
    /// The wait before the first restart; it doubles with each restart in a row.
    #[serde(rename = "backoff_initial_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub backoff_initial: Duration,
    /// The longest wait.
    #[serde(rename = "backoff_max_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub backoff_max: Duration,
    /// Running this long after a restart resets the count of restarts in a row.
    #[serde(rename = "stable_after_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub stable_after: Duration,
    /// From this many restarts in a row, roll back to the agent's latest checkpoint before
    /// restarting (0: never; agents without a checkpoint just restart).
    pub rollback_after: u32,
    /// After this many restarts in a row, give up: the agent stays failed and its pool starts
    /// a replacement.
    pub give_up_after: u32,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            restart: true,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            rollback_after: 3,
            give_up_after: 5,
        }
    }
}

impl RecoveryPolicy {
    /// The wait before restart number `n` in a row (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        self.backoff_initial
            .checked_mul(1u32 << n.min(30))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.backoff_initial < Duration::from_millis(10)
            || self.backoff_max < self.backoff_initial
            || self.backoff_max > Duration::from_secs(24 * 3600)
        {
            return Err(CoreError::invalid(
                "config.recovery: backoff_initial_ms must be at least 10 and at most backoff_max_ms, which is at most 86400000",
            ));
        }
        if self.give_up_after == 0 || self.give_up_after > 1000 {
            return Err(CoreError::invalid(
                "config.recovery.give_up_after must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RecoveryPolicy::default();
        let waits: Vec<u64> = (0..8).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.backoff(200), Duration::from_secs(60));
    }

    #[test]
    fn error_rate_counts_only_the_window() {
        let mut h = AgentHealth::default();
        let t = |ms| Timestamp::from_millis(ms);
        for (at, ok) in [(0, false), (10, false), (20, true), (30, false)] {
            h.outcomes.push_back(Outcome { at: t(at), ok });
        }
        assert_eq!(h.error_rate(t(0)), (0.75, 4));
        assert_eq!(h.error_rate(t(15)), (0.5, 2));
        assert_eq!(h.error_rate(t(100)), (0.0, 0));
    }

    #[test]
    fn policies_refuse_nonsense() {
        let bad = HealthPolicy {
            error_rate_threshold: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = HealthPolicy {
            slow_task_factor: 0.5,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(HealthPolicy::default().validate().is_ok());
        let bad = RecoveryPolicy {
            give_up_after: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(RecoveryPolicy::default().validate().is_ok());
    }
}
