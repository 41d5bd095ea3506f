//! Shapes of the HTTP API's requests and answers that are not entities themselves.
//!
//! They live here, beside the entities, so that the server and the typed client share one
//! definition and cannot drift apart. See `docs/api.md` for the whole API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::{Agent, AgentStatus};
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::swarm::{Swarm, SwarmStatus};
use crate::task::Task;
use crate::time::Timestamp;

/// A page of a list, with the cursor of the next page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A swarm with its live counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SwarmView {
    /// The swarm.
    #[serde(flatten)]
    pub swarm: Swarm,
    /// Registered agents (not stopped).
    pub agent_count: u64,
    /// Tasks waiting for an agent (queued, including delayed retries).
    pub queue_depth: u64,
    /// Its pools with their size, load and queue, by name.
    #[serde(default)]
    pub pools: Vec<PoolView>,
}

/// A pool's size, load and queue: what `GET /swarms/{swarm}` shows and the autoscaler reads.
/// See `docs/autoscaling.md` for the exact definitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolView {
    /// Its name (the type of its agents).
    pub name: String,
    /// Whether Flotilla starts its agents (it has an agent template).
    pub managed: bool,
    /// Its priority level, 1 to 10.
    pub priority: u8,
    /// How many agents it has and should have.
    pub size: PoolSize,
    /// Held task slots over all task slots of its in-service agents (idle or busy, not
    /// draining), 0 to 1; 0 when none is in service.
    pub utilization: f64,
    /// Ready tasks its agents could run.
    pub queue: PoolQueue,
    /// Failed share of its agents' task outcomes within the swarm's error-rate window.
    pub error_rate: f64,
    /// How many outcomes `error_rate` is drawn from.
    pub recent_outcomes: u64,
    /// 95th percentile of the time its agents' tasks waited in the queue (queued to placed or
    /// started) over the last minute (at most the last 256 tasks), in milliseconds; `null`
    /// without such a task.
    pub wait_p95_ms: Option<u64>,
    /// How many of its scaling policies are enabled.
    pub scaling_policies: usize,
}

/// The size of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolSize {
    /// Its agents that stay in it: all but those draining out and those recovery gave up on.
    pub current: u32,
    /// The size asked for (by a scale or the autoscaler), `min` when none was.
    pub desired: u32,
    /// Its `min_agents`.
    pub min: u32,
    /// Its `max_agents`.
    pub max: u32,
    /// Agents finishing their tasks before they stop and leave (scale-down).
    pub draining: u32,
    /// All its agents by status; statuses with no agent are left out.
    pub by_status: BTreeMap<AgentStatus, u32>,
}

/// The part of a swarm's ready queue a pool can serve.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolQueue {
    /// Ready tasks (queued, not waiting for a retry backoff) whose required capabilities the
    /// pool's agents have.
    pub ready: u64,
    /// `ready` divided by `size.current` (by 1 when the pool has no agent).
    pub per_agent: f64,
}

/// `POST /swarms/{swarm}/scale`: a new size for a managed pool, absolute or relative.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The pool.
    pub pool: String,
    /// The size wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<u32>,
    /// Agents to add (positive) or remove (negative), from the pool's desired size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
}

/// The answer to `POST /swarms/{swarm}/scale`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScaleAnswer {
    /// The desired size before.
    pub from: u32,
    /// The desired size now.
    pub to: u32,
    /// Agents that began draining out of the pool (scale-down), by name.
    pub draining: Vec<String>,
    /// Draining agents kept in the pool instead of starting new ones (scale-up), by name.
    pub kept: Vec<String>,
    /// The pool now.
    pub pool: PoolView,
}

/// Counts of unfinished tasks by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActiveTaskCounts {
    /// Waiting for dependencies.
    pub blocked: u64,
    /// Ready to run now.
    pub queued: u64,
    /// Queued, but waiting for a retry backoff to pass.
    pub delayed: u64,
    /// Placed on an agent, not yet taken.
    pub assigned: u64,
    /// Being worked on.
    pub running: u64,
}

/// Counts of agents by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentCounts {
    /// All registered agents (not stopped).
    pub total: u64,
    /// By status; statuses with no agent are left out.
    pub by_status: BTreeMap<AgentStatus, u64>,
}

/// `GET /swarms/{swarm}/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SwarmHealth {
    /// The swarm's id.
    pub swarm_id: SwarmId,
    /// The swarm's name.
    pub name: String,
    /// The swarm's status.
    pub status: SwarmStatus,
    /// Its agents.
    pub agents: AgentCounts,
    /// Its unfinished tasks.
    pub tasks: ActiveTaskCounts,
    /// Tasks waiting for an agent (queued and delayed).
    pub queue_depth: u64,
    /// When the oldest ready task entered the queue.
    pub oldest_queued_at: Option<Timestamp>,
    /// How long the oldest ready task has waited, in milliseconds.
    pub oldest_queued_age_ms: Option<u64>,
}

/// `GET /orchestrator`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrchestratorInfo {
    /// Flotilla's version.
    pub version: String,
    /// When this coordinator started.
    pub started_at: Timestamp,
    /// How long it has been up, in milliseconds.
    pub uptime_ms: u64,
    /// Where state is stored, e.g. `sqlite:/path/flotilla.db`.
    pub store: String,
    /// The bus events and messages are published on: `in-process` or `redis://host:port`.
    #[serde(default)]
    pub bus: String,
    /// Inter-agent messages in flight (not yet acknowledged).
    #[serde(default)]
    pub messages_in_flight: u64,
    /// How many swarms exist.
    pub swarms: u64,
    /// Agents of all swarms.
    pub agents: AgentCounts,
    /// Unfinished tasks of all swarms.
    pub tasks: ActiveTaskCounts,
}

/// One swarm this node took over, for `GET /cluster`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Takeover {
    /// The swarm.
    pub swarm: String,
    /// The lease's epoch.
    pub epoch: i64,
    /// When (database clock, ms).
    pub at: i64,
    /// How long loading it took, in ms.
    pub load_ms: u64,
}

/// `GET /api/v1/cluster`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// Whether the coordinator is a node of a cluster (its store is PostgreSQL); a coordinator
    /// on SQLite is alone, and the lists are empty.
    pub clustered: bool,
    /// The node that answered.
    pub node: String,
    /// Its API.
    pub url: String,
    /// How long a lease lasts without renewal, in ms.
    pub lease_ttl_ms: u64,
    /// Every node with a row (live or recently gone).
    pub nodes: Vec<NodeStatus>,
    /// Every swarm's lease.
    pub leases: Vec<LeaseStatus>,
    /// The swarms the answering node took over, oldest first (the last 50).
    pub takeovers: Vec<Takeover>,
    /// The hosts (`flotilla host`) connected to the answering node, with their agents.
    #[serde(default)]
    pub hosts: Vec<crate::host::HostView>,
}

/// One node of [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// Its id.
    pub id: String,
    /// Its API.
    pub url: String,
    /// Whether it is the node that answered.
    pub this: bool,
    /// Whether it heartbeats.
    pub alive: bool,
    /// Its flotilla version.
    pub version: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// How long ago it last heartbeat, in ms.
    pub heartbeat_age_ms: i64,
    /// How many swarms it holds.
    pub swarms: usize,
}

/// One lease of [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseStatus {
    /// The swarm's name.
    pub swarm: String,
    /// Its id.
    pub swarm_id: String,
    /// The node holding (or last holding) it.
    pub owner: Option<String>,
    /// The lease's fencing epoch.
    pub epoch: i64,
    /// Whether it is in force.
    pub valid: bool,
    /// Milliseconds until it lapses (negative: lapsed).
    pub expires_in_ms: Option<i64>,
}

/// The answer to an agent's registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// The new agent's id.
    pub agent_id: AgentId,
    /// The agent's own token; shown only here.
    pub token: String,
    /// The agent.
    pub agent: Agent,
    /// How often it must heartbeat.
    pub heartbeat_interval_ms: u64,
    /// How long its lease lasts without a sign of life.
    pub lease_ms: u64,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAck {
    /// The agent.
    pub agent_id: AgentId,
    /// Its status now.
    pub status: AgentStatus,
    /// Its lease now lasts until this instant.
    pub lease_until: Timestamp,
    /// How often it must heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Tasks the agent listed in `running_tasks` that it no longer holds (cancelled, timed
    /// out, taken back): stop working on them, their reports will be refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_tasks: Vec<TaskId>,
}

/// `POST /tasks/lookup`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// The tasks wanted.
    pub ids: Vec<TaskId>,
}

/// The answer to `POST /tasks/lookup`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LookupResponse {
    /// The tasks found.
    pub items: Vec<Task>,
    /// The ids not found.
    pub missing: Vec<TaskId>,
}

/// The answer to a batch submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchSubmitted {
    /// The tasks, in the order submitted.
    pub tasks: Vec<Task>,
}

/// `POST /tasks/{id}/cancel`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /tasks/{id}/retry`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// A new attempt limit, if the old one should change.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `unsupported_media_type`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
    /// The id of the request that failed (its `x-request-id`), to find its log lines; left
    /// out when the coordinator did not give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `PUT /fleet`: swarms and their pools, applied idempotently.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// The swarms.
    #[serde(default)]
    pub swarms: Vec<FleetSwarm>,
}

/// One swarm of a fleet document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSwarm {
    /// Its name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub name: String,
    /// Its description; left as it is when left out.
    #[serde(default)]
    pub description: Option<String>,
    /// Its topology; left as it is when left out (star for a new swarm).
    #[serde(default)]
    pub topology: Option<crate::swarm::Topology>,
    /// Its configuration; left as it is when left out (defaults for a new swarm).
    #[serde(default)]
    pub config: Option<crate::swarm::SwarmConfig>,
    /// Its pools.
    #[serde(default)]
    pub pools: Vec<crate::pool::PoolSpec>,
}

/// What applying a fleet document did to one thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetChange {
    /// `swarm`, `pool` or `agent`.
    pub kind: String,
    /// Its name (`swarm/pool` for pools).
    pub name: String,
    /// `created`, `updated`, `unchanged` or `spawned`.
    pub action: String,
    /// More, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The answer to `PUT /fleet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetApplied {
    /// Every swarm and pool in document order, then every agent started to fill the pools.
    pub changes: Vec<FleetChange>,
}

/// The answer to `PUT /swarms/{swarm}/pools/{pool}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolPut {
    /// What changed.
    pub change: crate::fleet::PoolChange,
    /// The pool now.
    pub pool: crate::pool::Pool,
}

/// The answer to `GET /agents/{id}/status`: how an agent is doing, as the coordinator judges
/// it, with the recent history of that judgement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentStatusView {
    /// The agent.
    pub agent_id: crate::ids::AgentId,
    /// Its name.
    pub name: String,
    /// Its lifecycle status.
    pub status: crate::agent::AgentStatus,
    /// Healthy, degraded or unhealthy.
    pub health: crate::health::HealthState,
    /// Why, when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::health::HealthReason>,
    /// What was seen, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// What the agent says of itself in its heartbeats.
    pub reported_health: crate::agent::ReportedHealth,
    /// Its circuit breaker: `closed`, `open` (with `until`) or `half_open`.
    pub breaker: crate::health::Breaker,
    /// Task failures in a row.
    pub consecutive_failures: u32,
    /// Failed share of its tasks within the swarm's error-rate window.
    pub error_rate: f64,
    /// How many tasks that share is drawn from.
    pub recent_tasks: usize,
    /// Its usual time for a successful task, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typical_task_ms: Option<f64>,
    /// Where it is on the recovery ladder (managed agents).
    pub recovery: crate::health::RecoveryState,
    /// Its last sign of life.
    pub last_heartbeat_at: Timestamp,
    /// When its lease runs out without another.
    pub lease_until: Timestamp,
    /// Its resource usage.
    pub resource_usage: crate::agent::ResourceUsage,
    /// The last health transitions, oldest first.
    pub history: Vec<crate::health::HealthTransition>,
    /// Tasks waiting in its local queue (prefetched, or waiting for it by affinity), best
    /// first; they are still `queued`, and another agent may steal the prefetched ones.
    #[serde(default)]
    pub local_queue: Vec<crate::ids::TaskId>,
}

impl AgentStatusView {
    /// The view of `agent` at `now`, its error rate counted over `window`.
    pub fn of(agent: &crate::agent::Agent, window: std::time::Duration, now: Timestamp) -> Self {
        let h = &agent.health;
        let (error_rate, recent_tasks) = h.error_rate(now - window);
        AgentStatusView {
            agent_id: agent.id,
            name: agent.name.clone(),
            status: agent.status,
            health: h.state,
            reason: h.reason,
            detail: h.detail.clone(),
            since: h.since,
            reported_health: agent.reported_health,
            breaker: h.breaker,
            consecutive_failures: h.consecutive_failures,
            error_rate,
            recent_tasks,
            typical_task_ms: h.typical_task_ms,
            recovery: h.recovery.clone(),
            last_heartbeat_at: agent.last_heartbeat_at,
            lease_until: agent.lease_until,
            resource_usage: agent.resource_usage.clone(),
            history: h.history.iter().cloned().collect(),
            local_queue: Vec::new(),
        }
    }
}

/// A request sent with `?wait=true` (`POST /agents/{id}/messages`), and its response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exchange {
    /// The request.
    pub request: crate::message::Message,
    /// Its response.
    pub response: crate::message::Message,
}

/// `PATCH /agents/{id}/messages`: acknowledge (`acked`) or give back (`pending`) messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageStatusUpdate {
    /// The messages.
    pub ids: Vec<crate::ids::MessageId>,
    /// `acked`, or `pending` to give them back for redelivery.
    pub status: crate::message::MessageStatus,
}

/// What a message status update changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessagesUpdated {
    /// The messages changed (others were not the agent's, or not in that state).
    pub updated: Vec<crate::ids::MessageId>,
}

/// An agent's topic subscriptions (`GET`/`PUT /agents/{id}/subscriptions`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscriptions {
    /// Topic patterns: `tasks.*`, `health`, `*`.
    pub topics: Vec<String>,
}

/// `PUT /swarms/{swarm}/topology`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopologyChange {
    /// The topology to switch to.
    pub topology: crate::swarm::Topology,
    /// Settings to change, by topology (`{"ring": {"order": "load"}}`); sections left out keep
    /// their values, and so do fields left out of a section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// `POST /tasks/{id}/delegate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateRequest {
    /// The subtasks (task specifications; `ref` and `depends_on` work within the list).
    pub subtasks: Vec<crate::task::TaskSpec>,
    /// With the admin token: the agent running the task, on whose behalf it is delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
}

/// What a delegation did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delegated {
    /// The delegated task, now waiting `blocked` for its subtasks.
    pub task: Task,
    /// The subtasks' ids, in the order given.
    pub subtasks: Vec<TaskId>,
}

/// What the coordinator sends on an agent's message WebSocket
/// (`GET /agents/{id}/messages/ws`): `{"type": "messages" | "updated" | "error", …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "FrameWire")]
pub enum ServerFrame {
    /// Messages taken for the agent: acknowledge each.
    Messages {
        /// The messages.
        messages: Vec<crate::message::Message>,
    },
    /// What an `ack` or `nack` changed.
    Updated {
        /// The messages.
        ids: Vec<crate::ids::MessageId>,
    },
    /// A frame the coordinator could not use, or a failure; the socket closes after a failure.
    Error {
        /// Why.
        message: String,
    },
}

/// A frame as read: the tag beside the fields. A `type`-tagged enum is read through serde's
/// buffered content, which cannot hold the raw JSON text of a message's body; this flat form is
/// read directly (the same reason as `Task`'s wire form).
#[derive(Deserialize)]
struct FrameWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    messages: Option<Vec<crate::message::Message>>,
    #[serde(default)]
    ids: Option<Vec<crate::ids::MessageId>>,
    #[serde(default)]
    message: Option<String>,
}

impl TryFrom<FrameWire> for ServerFrame {
    type Error = String;

    fn try_from(w: FrameWire) -> Result<Self, String> {
        let missing = |field: &str| format!("a {} frame needs `{field}`", w.kind);
        match w.kind.as_str() {
            "messages" => Ok(ServerFrame::Messages {
                messages: w.messages.ok_or_else(|| missing("messages"))?,
            }),
            "updated" => Ok(ServerFrame::Updated {
                ids: w.ids.ok_or_else(|| missing("ids"))?,
            }),
            "error" => Ok(ServerFrame::Error {
                message: w.message.clone().ok_or_else(|| missing("message"))?,
            }),
            other => Err(format!(
                "unknown frame type {other:?}; expected messages, updated or error"
            )),
        }
    }
}

/// What an agent sends on its message WebSocket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientFrame {
    /// Messages handled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ack: Vec<crate::ids::MessageId>,
    /// Messages to deliver again later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nack: Vec<crate::ids::MessageId>,
}

/// `POST /tokens`: a token for a person or a program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// `viewer` (reads), `operator` (also submits and controls tasks and agents) or `admin`
    /// (also manages swarms, pools, fleet files, policies, tokens, and reads the audit log).
    pub role: String,
    /// Limit the token to this swarm (name or id): it sees nothing of the others.
    #[serde(default)]
    pub swarm: Option<String>,
    /// Let the token expire this long after its creation, in milliseconds.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
    /// What it is for (shown in listings and the audit log's token list).
    #[serde(default)]
    pub label: Option<String>,
}

/// A token as listings show it: never the secret, nor its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Named apart from the ring topology's `TokenView` in the OpenAPI document.
#[schema(as = ApiToken)]
pub struct TokenView {
    /// Its id: what the audit log records and `DELETE /tokens/{id}` takes.
    pub id: String,
    /// `viewer`, `operator`, `admin` or `agent`.
    pub role: String,
    /// The only swarm it sees, if it is limited to one.
    pub swarm_id: Option<SwarmId>,
    /// The agent it acts for (role `agent`).
    pub agent_id: Option<AgentId>,
    /// What it is for.
    pub label: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops working, if it does.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// The answer to `POST /tokens`: the token, shown only here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    /// The secret: send it as `Authorization: Bearer <token>`. It is not stored and cannot be
    /// shown again.
    pub token: String,
    /// What it is.
    #[serde(flatten)]
    pub view: TokenView,
}

/// One entry of the audit log (`GET /audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Its place in the log.
    pub seq: u64,
    /// When the call was answered.
    pub at: Timestamp,
    /// The id of the token it came with (never the token); `null` when it had none or an
    /// unknown one.
    pub token_id: Option<String>,
    /// That token's role.
    pub role: Option<String>,
    /// The agent an agent token acts for.
    pub agent_id: Option<AgentId>,
    /// The HTTP method.
    pub method: String,
    /// The path called, without its query.
    pub path: String,
    /// The endpoint: method and route, e.g. `POST /api/v1/swarms/{swarm}/tasks`.
    pub action: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// `ok`, or the error code of the answer (`forbidden`, `not_found`, …).
    pub outcome: String,
    /// The caller's address, when known.
    pub remote: Option<String>,
    /// The request's id (`x-request-id`), to find its log lines.
    pub request_id: Option<String>,
}
