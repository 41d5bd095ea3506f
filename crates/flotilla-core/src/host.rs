//! The host protocol's shapes: what `flotilla host` sends the coordinator and what it is told
//! to do (`POST /api/v1/hosts`, `POST /api/v1/hosts/{name}/poll`), and the hosts' view
//! (`GET /api/v1/hosts`).
//!
//! A host registers with its capacity and labels and gets a session. Then it polls: each poll
//! reports what happened to its agents since the last one (started, exited), acknowledges the
//! orders it carried out and waits for new ones (start an agent, stop, pause, resume). A host
//! that has not polled for the coordinator's host timeout is lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::ResourceUsage;
use crate::ids::{AgentId, SwarmId};
use crate::pool::{ResourceLimits, ResourceRequest, RuntimeKind};
use crate::resources::Capacity;
use crate::time::Timestamp;

/// What a host gives when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRegistration {
    /// Its name, unique among the coordinator's hosts (`flotilla host --name`, the machine's
    /// host name by default).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub name: String,
    /// What it offers managed agents.
    pub capacity: Capacity,
    /// Labels pools can ask for (`host_labels`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Its flotilla version.
    #[serde(default)]
    pub version: String,
}

/// The coordinator's answer to a registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostSession {
    /// Identifies this registration in the host's polls; a host that registers again gets a
    /// new one, and polls of the old one are refused.
    pub session: u64,
    /// Poll at least this often (milliseconds): a host silent for the host timeout is lost.
    pub poll_ms: u64,
    /// The host timeout (milliseconds).
    pub timeout_ms: u64,
}

/// What a host reports at every poll.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// Its session.
    pub session: u64,
    /// The highest order sequence it has carried out; those orders are not sent again.
    #[serde(default)]
    pub ack: u64,
    /// What happened to its agents since the last poll, in order.
    #[serde(default)]
    pub events: Vec<HostEvent>,
    /// The agents it runs now.
    #[serde(default)]
    pub running: Vec<AgentId>,
    /// Their resource usage, as sampled on the host.
    #[serde(default)]
    pub usage: BTreeMap<AgentId, ResourceUsage>,
    /// How long to wait for an order when there is none (milliseconds; at most 25,000).
    #[serde(default)]
    pub wait_ms: u64,
}

/// Something that happened to an agent on a host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HostEvent {
    /// Its process started.
    Started {
        /// The agent.
        agent_id: AgentId,
        /// Its process group on the host.
        pid: u32,
        /// Which limits the host's runtime could apply, in words.
        #[serde(default)]
        limits: Option<String>,
    },
    /// Its process ended (or could not start).
    Exited {
        /// The agent.
        agent_id: AgentId,
        /// How, in words (`exited with code 3`, `could not be started: …`).
        exit: String,
        /// It was stopped on the coordinator's order.
        expected: bool,
    },
}

/// An order to a host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostOrder {
    /// Its sequence number: acknowledged by [`HostReport::ack`].
    pub seq: u64,
    /// What to do.
    #[serde(flatten)]
    pub action: HostAction,
}

/// What a host is told to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HostAction {
    /// Start this agent (stopping a process it may still run for it first).
    Start(Box<AgentLaunch>),
    /// Stop this agent: SIGTERM, then SIGKILL after `grace_ms`.
    Stop {
        /// The agent.
        agent_id: AgentId,
        /// How long to wait after SIGTERM.
        grace_ms: u64,
    },
    /// Freeze its processes.
    Pause {
        /// The agent.
        agent_id: AgentId,
    },
    /// Thaw its processes.
    Resume {
        /// The agent.
        agent_id: AgentId,
    },
}

/// Everything a host needs to start one managed agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentLaunch {
    /// The agent.
    pub agent_id: AgentId,
    /// Its name (its tmux session and log file are named after it).
    pub name: String,
    /// Its swarm's name.
    pub swarm: String,
    /// Its agent token (`FLOTILLA_TOKEN`), fresh for this start.
    pub token: String,
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Its working directory on the host; the host's own directory for it when `None`.
    pub workdir: Option<String>,
    /// `process` or `tmux`.
    pub runtime: RuntimeKind,
    /// Resource limits.
    pub limits: ResourceLimits,
    /// How long a stop waits after SIGTERM (milliseconds).
    pub stop_grace_ms: u64,
}

/// Whether a host is usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// It polls: agents are placed on it.
    Ready,
    /// It stopped polling for longer than the host timeout; its agents were placed elsewhere.
    Lost,
    /// It left (its shutdown); its agents were placed elsewhere.
    Left,
}

impl HostStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ready => "ready",
            HostStatus::Lost => "lost",
            HostStatus::Left => "left",
        }
    }
}

/// One agent on a host, in [`HostView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostAgent {
    /// The agent.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// Its swarm.
    pub swarm_id: SwarmId,
    /// Its status.
    pub status: crate::agent::AgentStatus,
}

/// A host, as `GET /api/v1/hosts` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    /// Its name.
    pub name: String,
    /// Whether it is usable.
    pub status: HostStatus,
    /// Its labels.
    pub labels: Vec<String>,
    /// What it offers managed agents.
    pub capacity: Capacity,
    /// What the agents placed on it hold.
    pub allocated: ResourceRequest,
    /// Its flotilla version.
    pub version: String,
    /// When it registered.
    pub registered_at: Timestamp,
    /// When it last polled.
    pub last_seen_at: Timestamp,
    /// Milliseconds since it last polled.
    pub last_seen_ms_ago: u64,
    /// The agents placed on it.
    pub agents: Vec<HostAgent>,
}
