//! Flotilla's core: the fleet as a pure, deterministic state machine.
//!
//! The driver (the server, or a simulation test) calls a command method on [`Fleet`] with the
//! current instant; the command either is refused with a [`CoreError`] and changes nothing, or
//! changes the state and records rows to persist, events and [`Effect`]s, which the driver takes
//! with [`Fleet::take_changes`] and [`Fleet::take_effects`]. Nothing here reads a clock, does
//! I/O or generates randomness: ids and instants come in as arguments.
//!
//! Start reading at [`fleet`]; [`queue`] holds the ready queue and [`dag`] checks dependencies.

pub mod agent;
pub mod api;
pub mod autoscale;
pub mod changes;
pub mod checkpoint;
pub mod dag;
pub mod error;
pub mod event;
pub mod fleet;
pub mod health;
pub mod host;
pub mod ids;
pub mod json;
pub mod message;
pub mod metrics;
pub mod pool;
pub mod pressure;
pub mod queue;
pub mod resources;
pub mod swarm;
pub mod task;
pub mod time;
pub mod topology;

pub use agent::{
    Agent, AgentRole, AgentSpec, AgentStatus, Desired, Drain, Heartbeat, Managed, ReportedHealth,
    ResourceUsage,
};
pub use changes::{Changes, Effect};
pub use checkpoint::{
    Checkpoint, CheckpointPolicy, CheckpointRef, CheckpointSpec, CheckpointTrigger,
};
pub use error::CoreError;
pub use event::{Event, EventKind};
pub use fleet::{Fleet, FleetLimits, ScaleTarget, StoredState};
pub use health::{
    AgentHealth, Breaker, HealthPolicy, HealthReason, HealthState, HealthTransition, RecoveryPolicy,
};
pub use ids::{AgentId, CheckpointId, MessageId, SwarmId, TaskId};
pub use json::Json;
pub use message::{
    Message, MessageKind, MessagePriority, MessageSpec, MessageStatus, MessagingConfig, ReplyState,
    Sent,
};
pub use pool::{
    AgentMode, AgentTemplate, DEFAULT_POOL_PRIORITY, LifecycleRequest, Operation, POOL_TYPES,
    Placement, Pool, PoolSpec, ResourceLimits, ResourceRequest, RuntimeKind, ScalingMetric,
    ScalingPolicy,
};
pub use swarm::{
    DEFAULT_SWARM, Strategy, Swarm, SwarmConfig, SwarmSpec, SwarmStatus, SwarmUpdate, Topology,
};
pub use task::{
    Backoff, CompletionReport, Delegation, Dependency, DependencyKind, DependencySpec, ErrorKind,
    FailureReport, Progress, SubtaskOutcome, Task, TaskError, TaskSpec, TaskState, TaskStatus,
};
pub use time::Timestamp;
