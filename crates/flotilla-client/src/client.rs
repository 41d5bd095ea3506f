//! [`Client`]: one async method per endpoint of the HTTP API (`docs/api.md`), returning the
//! core's types.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::api::HeartbeatAck;
use flotilla_core::api::{
    BatchSubmitted, CancelRequest, DelegateRequest, Delegated, Exchange, FleetApplied, FleetSpec,
    LookupRequest, LookupResponse, MessageStatusUpdate, MessagesUpdated, OrchestratorInfo, Page,
    PoolPut, Registration, RetryRequest, Subscriptions, SwarmHealth, SwarmView, TopologyChange,
};
use flotilla_core::metrics::{HeartbeatHistory, MetricKeys, MetricsResponse, Period, Scope};
use flotilla_core::topology::TopologyView;
use flotilla_core::{
    Agent, AgentId, AgentSpec, AgentStatus, CompletionReport, Event, EventKind, FailureReport,
    Heartbeat, Json, LifecycleRequest, Message, MessageId, MessageKind, MessageSpec, MessageStatus,
    Operation, Pool, PoolSpec, Progress, Sent, SwarmSpec, SwarmUpdate, Task, TaskId, TaskSpec,
    TaskStatus, Timestamp,
};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::endpoints::{Endpoints, Safety};
use crate::error::ClientError;
use crate::message_socket::MessageSocket;
use crate::message_stream::{Followed, MessageStream};
use crate::tls::ClientOptions;

/// Timeout of an ordinary request (long polls get their wait plus [`LONG_POLL_MARGIN`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to a long poll's wait to get its request timeout.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(10);
/// The longest wait the API accepts, in seconds.
const MAX_WAIT_SECS: u64 = 60;
/// Timeout of following a log: in effect none (a year).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A typed client of a fleet's coordinator, acting with one token.
///
/// Given several coordinators' URLs ([`Client::with_urls`], or a comma-separated list), it uses
/// one at a time and moves to the next when one gives no answer; which requests are then sent
/// again is in the [crate's rules](crate#several-coordinators).
///
/// Cheap to clone: clones (and [`Client::with_token`]) share one connection pool (keep-alive)
/// and the coordinator in use.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Endpoints>,
    token: Arc<str>,
    /// The TLS configuration of `https://` coordinators (for their WebSockets).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Client {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base_url())
            .field("urls", &self.endpoints.bases())
            .finish_non_exhaustive()
    }
}

/// Filters of [`Client::list_tasks`]; every field is optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskQuery {
    /// Only this swarm's tasks (id or name); all swarms when `None`.
    pub swarm: Option<String>,
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this type.
    pub task_type: Option<String>,
    /// Only tasks held or done by this agent.
    pub agent: Option<AgentId>,
    /// Page size, 1–1000 (the coordinator's default, 100, when `None`).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Which series [`Client::swarm_metrics`] reads.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsQuery {
    /// The period of each point.
    pub period: Period,
    /// The first period wanted (the coordinator's default: 60 periods before `to`).
    pub from: Option<Timestamp>,
    /// The last (default: now).
    pub to: Option<Timestamp>,
    /// The swarm, or one pool, agent or task type.
    pub scope: Scope,
    /// The pool, agent name or task type; for the swarm, none.
    pub key: Option<String>,
}

impl Default for MetricsQuery {
    fn default() -> Self {
        MetricsQuery {
            period: Period::Minute,
            from: None,
            to: None,
            scope: Scope::Swarm,
            key: None,
        }
    }
}

/// Filters of [`Client::list_events`]; every field is optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventQuery {
    /// Only this swarm's events (id or name).
    pub swarm: Option<String>,
    /// Only events of this kind.
    pub kind: Option<EventKind>,
    /// Only events about this agent.
    pub agent: Option<AgentId>,
    /// Only events about this task.
    pub task: Option<TaskId>,
    /// Only events after this sequence number.
    pub after: Option<u64>,
    /// Page size, 1–1000.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `Some(true)`: the newest `limit` matching events (still oldest first) instead of the
    /// oldest; [`Client::list_events`] only (a followed log starts after `after`).
    pub latest: Option<bool>,
}

/// Which of an agent's messages [`Client::message_history`] lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageDirection {
    /// Those it received.
    In,
    /// Those it sent.
    Out,
    /// Both (the default).
    #[default]
    Both,
}

impl MessageDirection {
    /// The direction as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageDirection::In => "in",
            MessageDirection::Out => "out",
            MessageDirection::Both => "both",
        }
    }
}

/// Filters of [`Client::message_history`] and [`Client::swarm_messages`]; every field is
/// optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageQuery {
    /// An agent's received or sent messages (not for a swarm's).
    pub direction: Option<MessageDirection>,
    /// Only messages with this status (`dead`: the dead-letter list).
    pub status: Option<MessageStatus>,
    /// Only messages published to this topic.
    pub topic: Option<String>,
    /// Page size, 1–1000 (the coordinator's default, 100, when `None`).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl MessageQuery {
    /// `url` with the filters as its query.
    fn apply(&self, mut url: Url) -> Url {
        {
            let mut q = url.query_pairs_mut();
            if let Some(d) = self.direction {
                q.append_pair("direction", d.as_str());
            }
            if let Some(s) = self.status {
                q.append_pair("status", s.as_str());
            }
            if let Some(t) = &self.topic {
                q.append_pair("topic", t);
            }
            if let Some(l) = self.limit {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(c) = &self.cursor {
                q.append_pair("cursor", c);
            }
        }
        strip_empty_query(&mut url);
        url
    }
}

/// The answer of `DELETE /agents/{id}/messages`.
#[derive(Deserialize)]
struct Cleared {
    cleared: u64,
}

/// The body of `POST /tasks/{id}/progress` as the API documents it (`reported_at` is the
/// coordinator's to set).
#[derive(Serialize)]
struct ProgressBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// Filters of [`Client::audit`].
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only calls made with this token (by id).
    pub token: Option<String>,
    /// Only calls at or after this time.
    pub since: Option<Timestamp>,
    /// Only refused calls.
    pub denied: bool,
    /// Page size (1 to 1000; the coordinator's default when `None`).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Client {
    /// A client of the coordinator at `base_url` (e.g. `http://127.0.0.1:7171`), acting with
    /// `token`. A trailing `/` or `/api/v1` on the URL is ignored. `base_url` may list several
    /// coordinators of one fleet, separated by commas (`http://a:7171,http://b:7171`): see
    /// [`Client::with_urls`]. An `https://` coordinator must have a publicly trusted
    /// certificate; see [`Client::with_options`] otherwise.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Client, ClientError> {
        Client::with_options(base_url, token, &ClientOptions::default())
    }

    /// Like [`Client::new`], with options: the certificates to trust for an `https://`
    /// coordinator whose certificate is self-signed or from a private CA.
    pub fn with_options(
        base_url: &str,
        token: impl Into<String>,
        options: &ClientOptions,
    ) -> Result<Client, ClientError> {
        Client::with_urls(&[base_url], token, options)
    }

    /// A client of the coordinators of one fleet at `urls` (each may itself be a
    /// comma-separated list; empty entries are skipped, repeated ones kept once), acting with
    /// `token`.
    ///
    /// It uses the first until it gives no answer, then the next, and so on around the list;
    /// a request that failed without an answer is sent to the next coordinator when that is
    /// safe (the [crate's rules](crate#several-coordinators)), each URL at most once, and the
    /// error names every URL tried when none answered.
    pub fn with_urls<S: AsRef<str>>(
        urls: &[S],
        token: impl Into<String>,
        options: &ClientOptions,
    ) -> Result<Client, ClientError> {
        let endpoints = Endpoints::parse(urls)?;
        let tls = if endpoints.any_https() {
            Some(crate::tls::client_config(options.ca_cert.as_deref())?)
        } else {
            None
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("flotilla-client/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &tls {
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
        }
        let http = builder.build().map_err(|e| ClientError::InvalidUrl {
            url: endpoints.bases().join(","),
            message: format!("cannot set up HTTP: {e}"),
        })?;
        Ok(Client {
            http,
            endpoints: Arc::new(endpoints),
            token: Arc::from(token.into()),
            tls,
        })
    }

    /// A client of the same coordinators, sharing the connection pool and the coordinator in
    /// use, acting with `token` (an agent acts with the token its registration returned).
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            http: self.http.clone(),
            endpoints: self.endpoints.clone(),
            token: Arc::from(token.into()),
            tls: self.tls.clone(),
        }
    }

    /// The base URL of the coordinator in use (the one the next request goes to first),
    /// without `/api/v1`.
    pub fn base_url(&self) -> &str {
        self.endpoints.base(self.endpoints.current())
    }

    /// The base URLs of every coordinator this client may use, in the order given.
    pub fn base_urls(&self) -> Vec<&str> {
        self.endpoints.bases().iter().map(String::as_str).collect()
    }

    /// `GET /healthz`: whether the coordinator is up (needs no token).
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let req = self.http.get(self.root_url("healthz"));
        self.send(req).await.map(drop)
    }

    // ----- swarms -----

    /// `POST /swarms`: creates a swarm.
    pub async fn create_swarm(&self, spec: &SwarmSpec) -> Result<SwarmView, ClientError> {
        let url = self.url(&["swarms"]);
        let body = self.send(self.req(Method::POST, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `GET /swarms`: every swarm (follows the cursors).
    pub async fn list_swarms(&self) -> Result<Vec<SwarmView>, ClientError> {
        let url = self.url(&["swarms"]);
        self.collect(&url, Vec::new()).await
    }

    /// `GET /swarms/{swarm}`: one swarm, by id or name.
    pub async fn get_swarm(&self, swarm: &str) -> Result<SwarmView, ClientError> {
        self.get_json(&self.url(&["swarms", swarm])).await
    }

    /// `PUT /swarms/{swarm}`: changes a swarm's name, description, topology or configuration.
    pub async fn update_swarm(
        &self,
        swarm: &str,
        update: &SwarmUpdate,
    ) -> Result<SwarmView, ClientError> {
        let url = self.url(&["swarms", swarm]);
        let body = self.send(self.req(Method::PUT, &url).json(update)).await?;
        decode(&url, &body)
    }

    /// `DELETE /swarms/{swarm}`: deletes a swarm; with `force`, cancels its unfinished tasks
    /// and removes its agents first.
    pub async fn delete_swarm(&self, swarm: &str, force: bool) -> Result<(), ClientError> {
        let mut url = self.url(&["swarms", swarm]);
        if force {
            url.query_pairs_mut().append_pair("force", "true");
        }
        self.send(self.req(Method::DELETE, &url)).await.map(drop)
    }

    /// `POST /swarms/{swarm}/scale`: sets a managed pool's size (absolute or relative).
    pub async fn scale_pool(
        &self,
        swarm: &str,
        request: &flotilla_core::api::ScaleRequest,
    ) -> Result<flotilla_core::api::ScaleAnswer, ClientError> {
        let url = self.url(&["swarms", swarm, "scale"]);
        let body = self
            .send(self.req(Method::POST, &url).json(request))
            .await?;
        decode(&url, &body)
    }

    /// `GET /swarms/{swarm}/health`.
    pub async fn swarm_health(&self, swarm: &str) -> Result<SwarmHealth, ClientError> {
        self.get_json(&self.url(&["swarms", swarm, "health"])).await
    }

    // ----- agents -----

    /// `POST /swarms/{swarm}/agents`: registers an agent (admin token); the answer holds the
    /// agent's own token.
    pub async fn register_agent(
        &self,
        swarm: &str,
        spec: &AgentSpec,
    ) -> Result<Registration, ClientError> {
        let url = self.url(&["swarms", swarm, "agents"]);
        let body = self.send(self.req(Method::POST, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `GET /swarms/{swarm}/agents`: the swarm's agents, optionally only those with a status or
    /// a type (follows the cursors, a page of 1,000 at a time: the API's largest).
    pub async fn list_agents(
        &self,
        swarm: &str,
        status: Option<AgentStatus>,
        agent_type: Option<&str>,
    ) -> Result<Vec<Agent>, ClientError> {
        let url = self.url(&["swarms", swarm, "agents"]);
        let mut query = vec![("limit", "1000".to_owned())];
        if let Some(s) = status {
            query.push(("status", s.as_str().to_owned()));
        }
        if let Some(t) = agent_type {
            query.push(("type", t.to_owned()));
        }
        self.collect(&url, query).await
    }

    /// `GET /agents/{id}`.
    pub async fn get_agent(&self, agent: AgentId) -> Result<Agent, ClientError> {
        self.get_json(&self.url(&["agents", &agent.to_string()]))
            .await
    }

    /// `DELETE /agents/{id}`: unregisters an agent; its tasks go back to the queue.
    pub async fn remove_agent(&self, agent: AgentId) -> Result<(), ClientError> {
        let url = self.url(&["agents", &agent.to_string()]);
        self.send(self.req(Method::DELETE, &url)).await.map(drop)
    }

    /// `POST /agents/{id}/heartbeat`: renews the agent's lease.
    pub async fn heartbeat(
        &self,
        agent: AgentId,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatAck, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "heartbeat"]);
        let body = self
            .send(self.req(Method::POST, &url).json(heartbeat))
            .await?;
        decode(&url, &body)
    }

    /// `GET /agents/{id}/tasks/next?wait=`: takes the agent's next task, waiting up to `wait`
    /// (whole seconds, at most 60) for one; `None` when none came.
    pub async fn next_task(
        &self,
        agent: AgentId,
        wait: Duration,
    ) -> Result<Option<Task>, ClientError> {
        let secs = wait_secs(wait);
        let mut url = self.url(&["agents", &agent.to_string(), "tasks", "next"]);
        url.query_pairs_mut().append_pair("wait", &secs.to_string());
        let req = self
            .req(Method::GET, &url)
            .timeout(Duration::from_secs(secs) + LONG_POLL_MARGIN);
        let (status, body) = self.send_status(req).await?;
        if status == StatusCode::NO_CONTENT || body.is_empty() {
            return Ok(None);
        }
        decode(&url, &body).map(Some)
    }

    // ----- metrics -----

    /// `GET /swarms/{swarm}/metrics`: one series of stored aggregates over a time range.
    pub async fn swarm_metrics(
        &self,
        swarm: &str,
        query: &MetricsQuery,
    ) -> Result<MetricsResponse, ClientError> {
        let mut url = self.url(&["swarms", swarm, "metrics"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("period", query.period.as_str());
            if let Some(from) = query.from {
                q.append_pair("from", &from.to_rfc3339());
            }
            if let Some(to) = query.to {
                q.append_pair("to", &to.to_rfc3339());
            }
            if query.scope != Scope::Swarm {
                q.append_pair("scope", query.scope.as_str());
            }
            if let Some(k) = &query.key {
                q.append_pair("key", k);
            }
        }
        self.get_json(&url).await
    }

    /// `GET /swarms/{swarm}/metrics/keys`: the pools, agents or task types with figures.
    pub async fn metric_keys(&self, swarm: &str, scope: Scope) -> Result<MetricKeys, ClientError> {
        let mut url = self.url(&["swarms", swarm, "metrics", "keys"]);
        url.query_pairs_mut().append_pair("scope", scope.as_str());
        self.get_json(&url).await
    }

    /// `GET /agents/{id}/heartbeats`: the agent's stored heartbeats, newest first.
    pub async fn agent_heartbeats(
        &self,
        agent: AgentId,
        limit: Option<u32>,
    ) -> Result<HeartbeatHistory, ClientError> {
        let mut url = self.url(&["agents", &agent.to_string(), "heartbeats"]);
        if let Some(l) = limit {
            url.query_pairs_mut().append_pair("limit", &l.to_string());
        }
        self.get_json(&url).await
    }

    /// `GET /metrics`: the Prometheus text exposition.
    pub async fn prometheus_text(&self) -> Result<String, ClientError> {
        let url = self.root_url("metrics");
        let body = self.send(self.req(Method::GET, &url)).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    // ----- tasks -----

    /// `POST /swarms/{swarm}/tasks` with one spec: submits a task (answers the existing task
    /// when its `idempotency_key` was seen before). With an idempotency key, a submission whose
    /// connection broke is sent again to the next coordinator (a repeat creates nothing).
    pub async fn submit_task(&self, swarm: &str, spec: &TaskSpec) -> Result<Task, ClientError> {
        let url = self.url(&["swarms", swarm, "tasks"]);
        let safety = submission_safety(std::slice::from_ref(spec));
        let req = self.req(Method::POST, &url).json(spec);
        let (_, body) = self.exchange(req, Some(safety)).await?;
        decode(&url, &body)
    }

    /// `POST /swarms/{swarm}/tasks` with an array: submits up to 10,000 tasks at once, all or
    /// nothing; `ref`s resolve within the batch. Answers the tasks in input order. When every
    /// task has an idempotency key, a batch whose connection broke is sent again to the next
    /// coordinator.
    pub async fn submit_tasks(
        &self,
        swarm: &str,
        specs: &[TaskSpec],
    ) -> Result<Vec<Task>, ClientError> {
        let url = self.url(&["swarms", swarm, "tasks"]);
        let req = self.req(Method::POST, &url).json(specs);
        let (_, body) = self.exchange(req, Some(submission_safety(specs))).await?;
        decode::<BatchSubmitted>(&url, &body).map(|b| b.tasks)
    }

    /// `GET /swarms/{swarm}/tasks` (when `query.swarm` is set) or `GET /tasks`: one page of
    /// tasks, newest first.
    pub async fn list_tasks(&self, query: &TaskQuery) -> Result<Page<Task>, ClientError> {
        let mut url = match &query.swarm {
            Some(swarm) => self.url(&["swarms", swarm, "tasks"]),
            None => self.url(&["tasks"]),
        };
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = query.status {
                q.append_pair("status", s.as_str());
            }
            if let Some(t) = &query.task_type {
                q.append_pair("type", t);
            }
            if let Some(a) = query.agent {
                q.append_pair("agent", &a.to_string());
            }
            if let Some(l) = query.limit {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(c) = &query.cursor {
                q.append_pair("cursor", c);
            }
        }
        strip_empty_query(&mut url);
        let body = self.send(self.req(Method::GET, &url)).await?;
        decode(&url, &body)
    }

    /// `GET /tasks/{id}`.
    pub async fn get_task(&self, task: TaskId) -> Result<Task, ClientError> {
        let url = self.url(&["tasks", &task.to_string()]);
        let body = self.send(self.req(Method::GET, &url)).await?;
        decode(&url, &body)
    }

    /// `GET /tasks/{id}?wait=`: the task once it has finished, or as it is when `wait` (whole
    /// seconds, at most 60) has passed.
    pub async fn wait_task(&self, task: TaskId, wait: Duration) -> Result<Task, ClientError> {
        let secs = wait_secs(wait);
        let mut url = self.url(&["tasks", &task.to_string()]);
        url.query_pairs_mut().append_pair("wait", &secs.to_string());
        let req = self
            .req(Method::GET, &url)
            .timeout(Duration::from_secs(secs) + LONG_POLL_MARGIN);
        let body = self.send(req).await?;
        decode(&url, &body)
    }

    /// `POST /tasks/lookup`: many tasks at once (at most 10,000 ids).
    pub async fn lookup_tasks(&self, ids: &[TaskId]) -> Result<LookupResponse, ClientError> {
        let url = self.url(&["tasks", "lookup"]);
        let req = LookupRequest { ids: ids.to_vec() };
        let body = self.send(self.req(Method::POST, &url).json(&req)).await?;
        decode(&url, &body)
    }

    /// `POST /tasks/{id}/cancel`: cancels an unfinished task.
    pub async fn cancel_task(
        &self,
        task: TaskId,
        reason: Option<String>,
    ) -> Result<Task, ClientError> {
        self.post_task(task, "cancel", &CancelRequest { reason })
            .await
    }

    /// `POST /tasks/{id}/retry`: queues a failed, dead or cancelled task again, optionally with
    /// a new attempt limit.
    pub async fn retry_task(
        &self,
        task: TaskId,
        max_attempts: Option<u32>,
    ) -> Result<Task, ClientError> {
        self.post_task(task, "retry", &RetryRequest { max_attempts })
            .await
    }

    /// `POST /tasks/{id}/progress` (the task's agent): reports progress of the running attempt.
    pub async fn report_progress(
        &self,
        task: TaskId,
        progress: &Progress,
    ) -> Result<Task, ClientError> {
        let body = ProgressBody {
            percent: progress.percent,
            message: progress.message.as_deref(),
        };
        self.post_task(task, "progress", &body).await
    }

    /// `POST /tasks/{id}/complete` (the task's agent): reports success with a result. With
    /// `attempt`, the coordinator refuses (409) a report about an attempt that is no longer
    /// the task's current one.
    pub async fn complete_task(
        &self,
        task: TaskId,
        result: Json,
        attempt: Option<u32>,
    ) -> Result<Task, ClientError> {
        self.post_task(task, "complete", &CompletionReport { result, attempt })
            .await
    }

    /// `POST /tasks/{id}/fail` (the task's agent): reports a failed attempt; `retryable: false`
    /// fails the task for good.
    pub async fn fail_task(
        &self,
        task: TaskId,
        error: &str,
        retryable: bool,
        attempt: Option<u32>,
    ) -> Result<Task, ClientError> {
        let report = FailureReport {
            error: error.to_owned(),
            retryable,
            attempt,
        };
        self.post_task(task, "fail", &report).await
    }

    // ----- pools and managed agents -----

    /// `GET /swarms/{swarm}/pools`: the swarm's pools.
    pub async fn list_pools(&self, swarm: &str) -> Result<Vec<Pool>, ClientError> {
        let url = self.url(&["swarms", swarm, "pools"]);
        self.get_json::<Items<Pool>>(&url).await.map(|i| i.items)
    }

    /// `GET /swarms/{swarm}/pools/{pool}`: one pool.
    pub async fn get_pool(&self, swarm: &str, pool: &str) -> Result<Pool, ClientError> {
        self.get_json(&self.url(&["swarms", swarm, "pools", pool]))
            .await
    }

    /// `PUT /swarms/{swarm}/pools/{pool}` (admin): creates or replaces the pool named
    /// `spec.name`; tells whether it was created, updated or left unchanged.
    pub async fn put_pool(&self, swarm: &str, spec: &PoolSpec) -> Result<PoolPut, ClientError> {
        let url = self.url(&["swarms", swarm, "pools", &spec.name]);
        let body = self.send(self.req(Method::PUT, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `DELETE /swarms/{swarm}/pools/{pool}`: deletes a pool; with `force`, removes its agents
    /// first (stopping the managed ones).
    pub async fn delete_pool(
        &self,
        swarm: &str,
        pool: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let mut url = self.url(&["swarms", swarm, "pools", pool]);
        if force {
            url.query_pairs_mut().append_pair("force", "true");
        }
        self.send(self.req(Method::DELETE, &url)).await.map(drop)
    }

    /// `POST /swarms/{swarm}/pools/{pool}/agents` (admin): starts a new managed agent from the
    /// pool's template.
    pub async fn spawn_agent(&self, swarm: &str, pool: &str) -> Result<Agent, ClientError> {
        let url = self.url(&["swarms", swarm, "pools", pool, "agents"]);
        let body = self.send(self.req(Method::POST, &url)).await?;
        decode(&url, &body)
    }

    /// `PATCH /agents/{id}` (admin): starts, stops, pauses, resumes or restarts a managed
    /// agent; `force` (stop, restart) kills it at once instead of waiting for it to exit.
    pub async fn agent_lifecycle(
        &self,
        agent: AgentId,
        operation: Operation,
        force: bool,
    ) -> Result<Agent, ClientError> {
        let url = self.url(&["agents", &agent.to_string()]);
        let req = LifecycleRequest {
            operation,
            force,
            checkpoint: None,
        };
        let body = self.send(self.req(Method::PATCH, &url).json(&req)).await?;
        decode(&url, &body)
    }

    /// `PATCH /agents/{id}` with `rollback` (admin): stops a managed agent, restores a
    /// checkpoint (its latest when `None`) and starts it again.
    pub async fn rollback_agent(
        &self,
        agent: AgentId,
        checkpoint: Option<flotilla_core::CheckpointId>,
    ) -> Result<Agent, ClientError> {
        let url = self.url(&["agents", &agent.to_string()]);
        let req = LifecycleRequest {
            operation: Operation::Rollback,
            force: false,
            checkpoint,
        };
        let body = self.send(self.req(Method::PATCH, &url).json(&req)).await?;
        decode(&url, &body)
    }

    /// `POST /agents/{id}/checkpoints`: takes a checkpoint of an agent (its reported state,
    /// its tasks, its workspace).
    pub async fn create_checkpoint(
        &self,
        agent: AgentId,
        description: Option<&str>,
    ) -> Result<flotilla_core::Checkpoint, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "checkpoints"]);
        let spec = flotilla_core::CheckpointSpec {
            description: description.map(str::to_owned),
        };
        let body = self.send(self.req(Method::POST, &url).json(&spec)).await?;
        decode(&url, &body)
    }

    /// `GET /agents/{id}/checkpoints`: an agent's checkpoints, newest first.
    pub async fn list_checkpoints(
        &self,
        agent: AgentId,
    ) -> Result<Vec<flotilla_core::Checkpoint>, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "checkpoints"]);
        let page: Page<flotilla_core::Checkpoint> = self.get_json(&url).await?;
        Ok(page.items)
    }

    /// `GET /agents/{id}/checkpoints/{checkpoint}`.
    pub async fn get_checkpoint(
        &self,
        agent: AgentId,
        checkpoint: flotilla_core::CheckpointId,
    ) -> Result<flotilla_core::Checkpoint, ClientError> {
        let url = self.url(&[
            "agents",
            &agent.to_string(),
            "checkpoints",
            &checkpoint.to_string(),
        ]);
        self.get_json(&url).await
    }

    /// `DELETE /agents/{id}/checkpoints/{checkpoint}`.
    pub async fn delete_checkpoint(
        &self,
        agent: AgentId,
        checkpoint: flotilla_core::CheckpointId,
    ) -> Result<(), ClientError> {
        let url = self.url(&[
            "agents",
            &agent.to_string(),
            "checkpoints",
            &checkpoint.to_string(),
        ]);
        self.send(self.req(Method::DELETE, &url)).await.map(drop)
    }

    /// `PUT /agents/{id}/state`: the state document an agent reports about itself (kept in
    /// its checkpoints, given back on rollback).
    pub async fn put_agent_state(
        &self,
        agent: AgentId,
        state: &serde_json::Value,
    ) -> Result<(), ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "state"]);
        self.send(self.req(Method::PUT, &url).json(state))
            .await
            .map(drop)
    }

    /// `GET /agents/{id}/state`: the state an agent last reported.
    pub async fn get_agent_state(&self, agent: AgentId) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "state"]);
        self.get_json(&url).await
    }

    /// `GET /agents/{id}/logs?tail=`: the last `tail` lines of a managed agent's log.
    pub async fn agent_logs(&self, agent: AgentId, tail: usize) -> Result<String, ClientError> {
        let mut url = self.url(&["agents", &agent.to_string(), "logs"]);
        url.query_pairs_mut().append_pair("tail", &tail.to_string());
        let body = self.send(self.req(Method::GET, &url)).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /agents/{id}/logs?follow=true&tail=`: the last `tail` lines of a managed agent's
    /// log, then its new output as it comes, until the coordinator ends the stream or the
    /// [`LogStream`] is dropped.
    pub async fn follow_agent_logs(
        &self,
        agent: AgentId,
        tail: usize,
    ) -> Result<LogStream, ClientError> {
        let mut url = self.url(&["agents", &agent.to_string(), "logs"]);
        url.query_pairs_mut()
            .append_pair("follow", "true")
            .append_pair("tail", &tail.to_string());
        // No overall timeout: the answer lasts as long as the agent runs.
        let req = self.req(Method::GET, &url).timeout(FOLLOW_TIMEOUT);
        let (index, response) = self.send_streaming(req).await?;
        Ok(LogStream {
            response,
            endpoints: self.endpoints.clone(),
            index,
            pending: Vec::new(),
            done: false,
        })
    }

    /// `PUT /fleet` (admin): applies a fleet document (swarms and their pools) idempotently;
    /// answers what changed, swarms and pools in document order, then the agents it started.
    pub async fn apply_fleet(&self, fleet: &FleetSpec) -> Result<FleetApplied, ClientError> {
        let url = self.url(&["fleet"]);
        let body = self.send(self.req(Method::PUT, &url).json(fleet)).await?;
        decode(&url, &body)
    }

    // ----- topology and delegation -----

    /// `GET /swarms/{swarm}/topology`: the swarm's graph (nodes with roles, edges, leader, the
    /// ring's token).
    pub async fn topology(&self, swarm: &str) -> Result<TopologyView, ClientError> {
        self.get_json(&self.url(&["swarms", swarm, "topology"]))
            .await
    }

    /// `GET /swarms/{swarm}/topology?format=dot`: the swarm's graph in Graphviz DOT.
    pub async fn topology_dot(&self, swarm: &str) -> Result<String, ClientError> {
        let mut url = self.url(&["swarms", swarm, "topology"]);
        url.query_pairs_mut().append_pair("format", "dot");
        let body = self.send(self.req(Method::GET, &url)).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `PUT /swarms/{swarm}/topology` (admin): changes the topology live, and settings given
    /// in `change.config` (sections left out keep their values); answers the new graph.
    pub async fn set_topology(
        &self,
        swarm: &str,
        change: &TopologyChange,
    ) -> Result<TopologyView, ClientError> {
        let url = self.url(&["swarms", swarm, "topology"]);
        let body = self.send(self.req(Method::PUT, &url).json(change)).await?;
        decode(&url, &body)
    }

    /// `POST /tasks/{id}/delegate`: the agent running the task splits it into subtasks (with
    /// the admin token, `request.agent_id` names that agent); the task waits for them.
    pub async fn delegate_task(
        &self,
        task: TaskId,
        request: &DelegateRequest,
    ) -> Result<Delegated, ClientError> {
        let url = self.url(&["tasks", &task.to_string(), "delegate"]);
        let body = self
            .send(self.req(Method::POST, &url).json(request))
            .await?;
        decode(&url, &body)
    }

    // ----- messages -----

    /// `POST /agents/{id}/messages`: sends a message to agent `to`, from the calling agent (or
    /// from the operator, with the admin token). The topology may forbid it (403).
    pub async fn send_message(
        &self,
        to: AgentId,
        spec: &MessageSpec,
    ) -> Result<Message, ClientError> {
        let url = self.url(&["agents", &to.to_string(), "messages"]);
        let body = self.send(self.req(Method::POST, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `POST /agents/{id}/messages?wait=true`: sends `spec` to agent `to` as a request (whatever
    /// its kind) and waits for the response, up to `spec.timeout` (the swarm's default when
    /// `None`, 30 s unless changed: give a timeout to wait longer). Without a response in time
    /// the error is a 504 ([`ClientError::is_request_timeout`]); the request stays sent.
    pub async fn request(&self, to: AgentId, spec: &MessageSpec) -> Result<Exchange, ClientError> {
        let mut url = self.url(&["agents", &to.to_string(), "messages"]);
        url.query_pairs_mut().append_pair("wait", "true");
        let spec = MessageSpec {
            kind: Some(MessageKind::Request),
            ..spec.clone()
        };
        // The swarm's default, unless changed.
        let wait = spec
            .timeout
            .unwrap_or(flotilla_core::message::DEFAULT_REQUEST_TIMEOUT);
        let req = self
            .req(Method::POST, &url)
            .json(&spec)
            .timeout(wait + LONG_POLL_MARGIN);
        let body = self.send(req).await?;
        decode(&url, &body)
    }

    /// `PUT /agents/{id}/messages`: broadcasts from agent `from` to every agent its topology
    /// lets it reach (with the agent's own token, or the admin's).
    pub async fn broadcast_from(
        &self,
        from: AgentId,
        spec: &MessageSpec,
    ) -> Result<Sent, ClientError> {
        let url = self.url(&["agents", &from.to_string(), "messages"]);
        let body = self.send(self.req(Method::PUT, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `POST /swarms/{swarm}/messages`: broadcasts to every agent of the swarm (from an
    /// agent's token: to those its topology lets it reach).
    pub async fn broadcast(&self, swarm: &str, spec: &MessageSpec) -> Result<Sent, ClientError> {
        let url = self.url(&["swarms", swarm, "messages"]);
        let body = self.send(self.req(Method::POST, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `POST /swarms/{swarm}/topics/{topic}`: publishes to the agents of the swarm subscribed
    /// to a pattern matching `topic`.
    pub async fn publish(
        &self,
        swarm: &str,
        topic: &str,
        spec: &MessageSpec,
    ) -> Result<Sent, ClientError> {
        let url = self.url(&["swarms", swarm, "topics", topic]);
        let body = self.send(self.req(Method::POST, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `GET /agents/{id}/messages`: one page of an agent's messages, sent and received, newest
    /// first.
    pub async fn message_history(
        &self,
        agent: AgentId,
        query: &MessageQuery,
    ) -> Result<Page<Message>, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "messages"]);
        self.get_json(&query.apply(url)).await
    }

    /// `GET /swarms/{swarm}/messages` (admin): one page of a swarm's messages, newest first;
    /// with `status: Some(Dead)`, the dead-letter list. `query.direction` must be `None`.
    pub async fn swarm_messages(
        &self,
        swarm: &str,
        query: &MessageQuery,
    ) -> Result<Page<Message>, ClientError> {
        let url = self.url(&["swarms", swarm, "messages"]);
        self.get_json(&query.apply(url)).await
    }

    /// `DELETE /agents/{id}/messages`: empties an agent's inbox (messages it took and has not
    /// acknowledged stay until it does); answers how many were cleared.
    pub async fn clear_messages(&self, agent: AgentId) -> Result<u64, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "messages"]);
        let body = self.send(self.req(Method::DELETE, &url)).await?;
        decode::<Cleared>(&url, &body).map(|c| c.cleared)
    }

    /// `PATCH /agents/{id}/messages` with `acked`: the agent is done with these messages;
    /// answers those changed (others were not its own, or not delivered to it).
    pub async fn ack_messages(
        &self,
        agent: AgentId,
        ids: &[MessageId],
    ) -> Result<Vec<MessageId>, ClientError> {
        self.update_messages(agent, ids, MessageStatus::Acked).await
    }

    /// `PATCH /agents/{id}/messages` with `pending`: gives messages back, to be delivered again
    /// later; answers those changed.
    pub async fn nack_messages(
        &self,
        agent: AgentId,
        ids: &[MessageId],
    ) -> Result<Vec<MessageId>, ClientError> {
        self.update_messages(agent, ids, MessageStatus::Pending)
            .await
    }

    /// `GET /agents/{id}/messages/next?wait=&max=`: takes up to `max` (1–1000) of the agent's
    /// next messages, most urgent first, waiting up to `wait` (at most 60 s) for one; empty
    /// when none came. Each must be acknowledged within the swarm's ack timeout.
    pub async fn receive_messages(
        &self,
        agent: AgentId,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<Message>, ClientError> {
        let wait = wait.min(Duration::from_secs(MAX_WAIT_SECS));
        let mut url = self.url(&["agents", &agent.to_string(), "messages", "next"]);
        url.query_pairs_mut()
            .append_pair("wait", &(wait.as_millis() as f64 / 1000.0).to_string())
            .append_pair("max", &max.to_string());
        let req = self.req(Method::GET, &url).timeout(wait + LONG_POLL_MARGIN);
        let body = self.send(req).await?;
        decode(&url, &body)
    }

    /// `GET /agents/{id}/messages/ws?max_in_flight=`: opens the agent's message WebSocket,
    /// which pushes messages as they arrive, at most `max_in_flight` (1–1000) unacknowledged
    /// at a time. `http://` coordinators only.
    pub async fn message_socket(
        &self,
        agent: AgentId,
        max_in_flight: usize,
    ) -> Result<MessageSocket, ClientError> {
        let mut url = self.url(&["agents", &agent.to_string(), "messages", "ws"]);
        url.query_pairs_mut()
            .append_pair("max_in_flight", &max_in_flight.to_string());
        // The handshake is a GET: any failure without an answer moves on.
        let mut tried = Vec::new();
        for i in self.endpoints.round() {
            let url = self.endpoints.rebase(&url, i)?;
            let tls = (url.scheme() == "https")
                .then(|| self.tls.clone())
                .flatten();
            let base = self.endpoints.base(i);
            match MessageSocket::connect(url, &self.token, base, CONNECT_TIMEOUT, tls).await {
                Ok(socket) => return Ok(socket.opened_on(self.endpoints.clone(), i)),
                Err(e @ ClientError::Http { .. }) => {
                    self.endpoints.failed(i, &e);
                    tried.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::none_answered(tried))
    }

    /// `GET /agents/{id}/subscriptions`: the agent's topic patterns.
    pub async fn subscriptions(&self, agent: AgentId) -> Result<Vec<String>, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "subscriptions"]);
        self.get_json::<Subscriptions>(&url).await.map(|s| s.topics)
    }

    /// `PUT /agents/{id}/subscriptions`: replaces the agent's topic patterns (`tasks.*`,
    /// `health`, `*`; none to unsubscribe from everything); answers them as stored.
    pub async fn subscribe(
        &self,
        agent: AgentId,
        topics: &[String],
    ) -> Result<Vec<String>, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "subscriptions"]);
        let subs = Subscriptions {
            topics: topics.to_vec(),
        };
        let body = self.send(self.req(Method::PUT, &url).json(&subs)).await?;
        decode::<Subscriptions>(&url, &body).map(|s| s.topics)
    }

    /// `GET /messages/{id}`.
    pub async fn get_message(&self, id: MessageId) -> Result<Message, ClientError> {
        self.get_json(&self.url(&["messages", &id.to_string()]))
            .await
    }

    /// `POST /messages/{id}/retry` (admin): puts a dead message back in its recipient's inbox.
    pub async fn retry_message(&self, id: MessageId) -> Result<Message, ClientError> {
        let url = self.url(&["messages", &id.to_string(), "retry"]);
        let body = self.send(self.req(Method::POST, &url)).await?;
        decode(&url, &body)
    }

    /// `GET /swarms/{swarm}/messages/stream` (admin): the swarm's messages as they are sent,
    /// only those to or from `agent` and on topics matching `topic` if given, and with
    /// `events` its fleet events too, until the coordinator ends the stream or the
    /// [`MessageStream`] is dropped.
    ///
    /// When the stream breaks (or, with several coordinators, the coordinator ends it as it
    /// shuts down), it is opened again on the next coordinator, and a
    /// [`crate::StreamItem::Gap`] says that messages sent meanwhile may have been missed.
    pub async fn follow_messages(
        &self,
        swarm: &str,
        agent: Option<AgentId>,
        topic: Option<&str>,
        events: bool,
    ) -> Result<MessageStream, ClientError> {
        let mut url = self.url(&["swarms", swarm, "messages", "stream"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(a) = agent {
                q.append_pair("agent", &a.to_string());
            }
            if let Some(t) = topic {
                q.append_pair("topic", t);
            }
            if events {
                q.append_pair("events", "true");
            }
        }
        strip_empty_query(&mut url);
        let followed = Followed::Messages(url);
        let (index, response) = self.open_followed(&followed).await?;
        Ok(MessageStream::new(response, self.clone(), index, followed))
    }

    // ----- events and orchestrator -----

    /// `GET /events`: one page of the event log, in log order.
    pub async fn list_events(&self, query: &EventQuery) -> Result<Page<Event>, ClientError> {
        let mut url = self.url(&["events"]);
        event_query(&mut url, query, true);
        self.get_json(&url).await
    }

    /// `GET /events/stream`: the events after `query.after` that pass its filters, then each
    /// new one as it is committed (server-sent events; the coordinator misses none). Items are
    /// [`crate::StreamItem::Event`]s.
    ///
    /// When the stream breaks (or, with several coordinators, the coordinator ends it as it
    /// shuts down), it is opened again on the next coordinator after the last event read, so
    /// that no event is missed or repeated.
    pub async fn follow_events(&self, query: &EventQuery) -> Result<MessageStream, ClientError> {
        let followed = Followed::Events(query.clone());
        let (index, response) = self.open_followed(&followed).await?;
        Ok(MessageStream::new(response, self.clone(), index, followed))
    }

    /// `GET /agents/{id}/status`: the coordinator's judgement of an agent's health.
    pub async fn agent_status(
        &self,
        agent: AgentId,
    ) -> Result<flotilla_core::api::AgentStatusView, ClientError> {
        self.get_json(&self.url(&["agents", &agent.to_string(), "status"]))
            .await
    }

    /// `GET /alerts`: the newest `limit` alerts (oldest first), of a swarm and of some levels
    /// (`warning`, `critical`, `recovery`) if given.
    pub async fn alerts(
        &self,
        swarm: Option<&str>,
        levels: &[&str],
        limit: Option<usize>,
    ) -> Result<Page<Event>, ClientError> {
        let mut url = self.url(&["alerts"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = swarm {
                q.append_pair("swarm", s);
            }
            if !levels.is_empty() {
                q.append_pair("level", &levels.join(","));
            }
            if let Some(l) = limit {
                q.append_pair("limit", &l.to_string());
            }
        }
        strip_empty_query(&mut url);
        self.get_json(&url).await
    }

    /// `GET /resources`: capacity, allocations, waiting pools, usage and pressure.
    pub async fn resources(
        &self,
    ) -> Result<flotilla_core::resources::view::ResourcesView, ClientError> {
        self.get_json(&self.url(&["resources"])).await
    }

    /// `PUT /resources/policy`: changes the allocation strategy, admission or responses.
    pub async fn put_resource_policy(
        &self,
        update: &flotilla_core::resources::view::PolicyUpdate,
    ) -> Result<flotilla_core::resources::view::ResourcesView, ClientError> {
        let url = self.url(&["resources", "policy"]);
        let body = self.send(self.req(Method::PUT, &url).json(update)).await?;
        decode(&url, &body)
    }

    /// `GET /orchestrator`: the coordinator's version, uptime and counts.
    pub async fn orchestrator(&self) -> Result<OrchestratorInfo, ClientError> {
        self.get_json(&self.url(&["orchestrator"])).await
    }

    /// `GET /cluster`: the coordinators sharing this one's store, each swarm's lease and the
    /// swarms this one took over (`clustered` is false on a SQLite store).
    pub async fn cluster(&self) -> Result<flotilla_core::api::ClusterStatus, ClientError> {
        self.get_json(&self.url(&["cluster"])).await
    }

    /// `POST /hosts`: registers this machine as a host that runs managed agents.
    pub async fn register_host(
        &self,
        registration: &flotilla_core::host::HostRegistration,
    ) -> Result<flotilla_core::host::HostSession, ClientError> {
        let url = self.url(&["hosts"]);
        let body = self
            .send(self.req(Method::POST, &url).json(registration))
            .await?;
        decode(&url, &body)
    }

    /// `POST /hosts/{name}/poll`: reports what happened to the host's agents and waits (up to
    /// `report.wait_ms`) for orders.
    pub async fn poll_host(
        &self,
        name: &str,
        report: &flotilla_core::host::HostReport,
    ) -> Result<Vec<flotilla_core::host::HostOrder>, ClientError> {
        let url = self.url(&["hosts", name, "poll"]);
        let wait = Duration::from_millis(report.wait_ms);
        let req = self
            .req(Method::POST, &url)
            .json(report)
            .timeout(wait + LONG_POLL_MARGIN);
        let body = self.send(req).await?;
        decode(&url, &body)
    }

    /// `POST /hosts/{name}/leave`: the host is shutting down.
    pub async fn leave_host(&self, name: &str, session: u64) -> Result<(), ClientError> {
        let url = self.url(&["hosts", name, "leave"]);
        self.send(
            self.req(Method::POST, &url)
                .json(&serde_json::json!({ "session": session })),
        )
        .await
        .map(|_| ())
    }

    /// `GET /hosts`: the hosts this coordinator knows, with their agents.
    pub async fn hosts(&self) -> Result<Vec<flotilla_core::host::HostView>, ClientError> {
        self.get_json(&self.url(&["hosts"])).await
    }

    /// `POST /tokens`: a new token for a person or program; its secret is shown only here.
    pub async fn create_token(
        &self,
        spec: &flotilla_core::api::TokenSpec,
    ) -> Result<flotilla_core::api::NewToken, ClientError> {
        let url = self.url(&["tokens"]);
        let body = self.send(self.req(Method::POST, &url).json(spec)).await?;
        decode(&url, &body)
    }

    /// `GET /tokens`: people's tokens in force; with `all`, every token ever issued.
    pub async fn list_tokens(
        &self,
        all: bool,
    ) -> Result<Vec<flotilla_core::api::TokenView>, ClientError> {
        let mut url = self.url(&["tokens"]);
        if all {
            url.query_pairs_mut().append_pair("all", "true");
        }
        self.get_json(&url).await
    }

    /// `DELETE /tokens/{id}`: revokes a token at once.
    pub async fn revoke_token(
        &self,
        id: &str,
    ) -> Result<flotilla_core::api::TokenView, ClientError> {
        let url = self.url(&["tokens", id]);
        let body = self.send(self.req(Method::DELETE, &url)).await?;
        decode(&url, &body)
    }

    /// `GET /audit`: one page of the audit log, newest first.
    pub async fn audit(
        &self,
        query: &AuditQuery,
    ) -> Result<Page<flotilla_core::api::AuditEntry>, ClientError> {
        let mut url = self.url(&["audit"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(t) = &query.token {
                q.append_pair("token", t);
            }
            if let Some(s) = query.since {
                q.append_pair("since", &s.to_rfc3339());
            }
            if query.denied {
                q.append_pair("denied", "true");
            }
            if let Some(l) = query.limit {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(c) = &query.cursor {
                q.append_pair("cursor", c);
            }
        }
        strip_empty_query(&mut url);
        self.get_json(&url).await
    }

    // ----- plumbing -----

    /// `{base}/api/v1/{segments…}`, each segment percent-encoded, written against the first
    /// coordinator (a request is moved to the one it goes to as it is sent).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoints.template().clone();
        url.path_segments_mut()
            .expect("checked in Endpoints::parse")
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        url
    }

    /// `{base}/{name}`, outside the API (`/healthz`, `/metrics`), written as [`Client::url`].
    fn root_url(&self, name: &str) -> Url {
        let mut url = self.endpoints.template().clone();
        url.path_segments_mut()
            .expect("checked in Endpoints::parse")
            .pop_if_empty()
            .push(name);
        url
    }

    fn req(&self, method: Method, url: &Url) -> RequestBuilder {
        self.http
            .request(method, url.clone())
            .bearer_auth(&*self.token)
    }

    async fn post_task<B: Serialize>(
        &self,
        task: TaskId,
        action: &str,
        body: &B,
    ) -> Result<Task, ClientError> {
        let url = self.url(&["tasks", &task.to_string(), action]);
        let body = self.send(self.req(Method::POST, &url).json(body)).await?;
        decode(&url, &body)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Url) -> Result<T, ClientError> {
        let body = self.send(self.req(Method::GET, url)).await?;
        decode(url, &body)
    }

    /// Follows `next_cursor` until the last page, collecting the items. No `limit` is sent, so
    /// the coordinator picks the page size.
    async fn collect<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        query: Vec<(&str, String)>,
    ) -> Result<Vec<T>, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_url = url.clone();
            {
                let mut q = page_url.query_pairs_mut();
                for (k, v) in &query {
                    q.append_pair(k, v);
                }
                if let Some(c) = &cursor {
                    q.append_pair("cursor", c);
                }
            }
            strip_empty_query(&mut page_url);
            let page: Page<T> = self.get_json(&page_url).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(items),
            }
        }
    }

    /// Sends a request whose answer is read as it comes: the response once its status is a
    /// success (and the index of the coordinator that gave it), the API's error otherwise.
    async fn send_streaming(
        &self,
        req: RequestBuilder,
    ) -> Result<(usize, reqwest::Response), ClientError> {
        let request = self.build(req)?;
        let safety = Safety::of(request.method());
        let (index, response) = self.dispatch(request, safety).await?;
        let status = response.status();
        if !status.is_success() {
            let body = self.read_body(index, response).await?;
            return Err(ClientError::from_response(status.as_u16(), &body));
        }
        Ok((index, response))
    }

    /// Opens a followed stream (server-sent events) at the coordinator in use, or the next
    /// ones; for events, after the last one `followed` has seen.
    pub(crate) async fn open_followed(
        &self,
        followed: &Followed,
    ) -> Result<(usize, reqwest::Response), ClientError> {
        let url = match followed {
            Followed::Events(query) => {
                let mut url = self.url(&["events", "stream"]);
                event_query(&mut url, query, false);
                url
            }
            Followed::Messages(url) => url.clone(),
        };
        // No overall timeout: the stream lasts as long as it is followed (a silent connection
        // is noticed by the stream itself).
        let req = self
            .req(Method::GET, &url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(FOLLOW_TIMEOUT);
        self.send_streaming(req).await
    }

    /// The coordinators this client uses.
    pub(crate) fn endpoints(&self) -> &Arc<Endpoints> {
        &self.endpoints
    }

    async fn update_messages(
        &self,
        agent: AgentId,
        ids: &[MessageId],
        status: MessageStatus,
    ) -> Result<Vec<MessageId>, ClientError> {
        let url = self.url(&["agents", &agent.to_string(), "messages"]);
        let update = MessageStatusUpdate {
            ids: ids.to_vec(),
            status,
        };
        let body = self
            .send(self.req(Method::PATCH, &url).json(&update))
            .await?;
        decode::<MessagesUpdated>(&url, &body).map(|u| u.updated)
    }

    async fn send(&self, req: RequestBuilder) -> Result<Vec<u8>, ClientError> {
        self.send_status(req).await.map(|(_, body)| body)
    }

    /// Sends a request, safe to send again elsewhere as its method says; the status and body of
    /// a success, the API's error otherwise.
    async fn send_status(&self, req: RequestBuilder) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.exchange(req, None).await
    }

    /// [`Client::send_status`], for a request whose safety may be other than its method's.
    async fn exchange(
        &self,
        req: RequestBuilder,
        safety: Option<Safety>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let request = self.build(req)?;
        let safety = safety.unwrap_or_else(|| Safety::of(request.method()));
        let (index, response) = self.dispatch(request, safety).await?;
        let status = response.status();
        let body = self.read_body(index, response).await?;
        if status.is_success() {
            Ok((status, body))
        } else {
            Err(ClientError::from_response(status.as_u16(), &body))
        }
    }

    fn build(&self, req: RequestBuilder) -> Result<reqwest::Request, ClientError> {
        req.build()
            .map_err(|e| ClientError::from_reqwest(self.base_url(), &e))
    }

    /// Sends `request` to the coordinator in use, and to the next ones while it gets no answer
    /// and may be sent again (`safety`; the crate's rules): the first response, whatever its
    /// status, with the index of the coordinator that gave it.
    async fn dispatch(
        &self,
        request: reqwest::Request,
        safety: Safety,
    ) -> Result<(usize, reqwest::Response), ClientError> {
        let others = self.endpoints.len() > 1;
        let mut tried = Vec::new();
        for i in self.endpoints.round() {
            let mut attempt = request
                .try_clone()
                .expect("this client's request bodies are bytes, which clone");
            *attempt.url_mut() = self.endpoints.rebase(request.url(), i)?;
            match self.http.execute(attempt).await {
                Ok(response) => return Ok((i, response)),
                Err(e) => {
                    let error = ClientError::from_reqwest(self.endpoints.base(i), &e);
                    self.endpoints.failed(i, &error);
                    // A connection never made carried nothing; otherwise the coordinator may
                    // have acted on the request.
                    if !e.is_connect() && safety == Safety::Once {
                        return Err(error.not_sent_elsewhere(others));
                    }
                    tried.push(error);
                }
            }
        }
        Err(ClientError::none_answered(tried))
    }

    /// The body of a response from coordinator `index`. A body cut off counts as that
    /// coordinator failing, but the request is not sent again: it was answered.
    async fn read_body(
        &self,
        index: usize,
        response: reqwest::Response,
    ) -> Result<Vec<u8>, ClientError> {
        match response.bytes().await {
            Ok(body) => Ok(body.to_vec()),
            Err(e) => {
                let error = ClientError::from_reqwest(self.endpoints.base(index), &e);
                self.endpoints.failed(index, &error);
                Err(error)
            }
        }
    }
}

/// A submission may be sent again when every task in it has an idempotency key: a repeat
/// answers the tasks the first one created.
fn submission_safety(specs: &[TaskSpec]) -> Safety {
    if !specs.is_empty() && specs.iter().all(|s| s.idempotency_key.is_some()) {
        Safety::Repeatable
    } else {
        Safety::Once
    }
}

/// The filters of an event query in `url`; `paged` adds the page's limit and cursor.
fn event_query(url: &mut Url, query: &EventQuery, paged: bool) {
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = &query.swarm {
            q.append_pair("swarm", s);
        }
        if let Some(k) = query.kind {
            q.append_pair("type", k.as_str());
        }
        if let Some(a) = query.agent {
            q.append_pair("agent", &a.to_string());
        }
        if let Some(t) = query.task {
            q.append_pair("task", &t.to_string());
        }
        if let Some(after) = query.after {
            q.append_pair("after", &after.to_string());
        }
        if paged {
            if let Some(l) = query.limit {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(c) = &query.cursor {
                q.append_pair("cursor", c);
            }
            if let Some(latest) = query.latest {
                q.append_pair("latest", if latest { "true" } else { "false" });
            }
        }
    }
    strip_empty_query(url);
}

fn decode<T: serde::de::DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        url: url.path().to_owned(),
        message: e.to_string(),
    })
}

/// An answer of the form `{"items": [...]}` (other fields, such as `next_cursor`, ignored).
#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// The output of an agent's log as it comes, from [`Client::follow_agent_logs`].
///
/// Each [`LogStream::next_chunk`] answers the next piece of text (whole UTF-8 characters;
/// not necessarily whole lines), or `None` once the coordinator closed the stream (it stopped,
/// or the agent was removed). A stream that breaks is not opened again by itself (following
/// again repeats the log's tail); the client moves on, so following again goes to the next
/// coordinator.
pub struct LogStream {
    response: reqwest::Response,
    /// The coordinators, and which one the stream comes from (told when it breaks).
    endpoints: Arc<Endpoints>,
    index: usize,
    /// The bytes of a character split between two chunks.
    pending: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("url", &self.response.url().as_str())
            .finish_non_exhaustive()
    }
}

impl LogStream {
    /// The next piece of the log; `None` when the stream has ended.
    pub async fn next_chunk(&mut self) -> Result<Option<String>, ClientError> {
        while !self.done {
            let chunk = match self.response.chunk().await {
                Ok(chunk) => chunk,
                Err(e) => {
                    let error = ClientError::from_reqwest(self.endpoints.base(self.index), &e);
                    self.endpoints.failed(self.index, &error);
                    return Err(error);
                }
            };
            match chunk {
                Some(bytes) => {
                    self.pending.extend_from_slice(&bytes);
                    let text = take_utf8(&mut self.pending);
                    if !text.is_empty() {
                        return Ok(Some(text));
                    }
                }
                None => {
                    self.done = true;
                    if !self.pending.is_empty() {
                        let rest = String::from_utf8_lossy(&self.pending).into_owned();
                        self.pending.clear();
                        return Ok(Some(rest));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Takes the text of `buf` up to an incomplete UTF-8 sequence at its end (kept in `buf` for
/// the next chunk); invalid bytes become U+FFFD.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    // An incomplete sequence is at most 3 bytes long: find where the last one starts.
    let mut keep = 0;
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let needed = if b & 0xE0 == 0xC0 {
            2
        } else if b & 0xF0 == 0xE0 {
            3
        } else if b & 0xF8 == 0xF0 {
            4
        } else {
            1
        };
        if needed > back {
            keep = back;
        }
        break;
    }
    let cut = buf.len() - keep;
    let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
    buf.drain(..cut);
    text
}

/// A wait as the API takes it: whole seconds, rounded up, at most 60.
fn wait_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.min(MAX_WAIT_SECS)
}

/// `query_pairs_mut` leaves a bare `?` when nothing was appended.
fn strip_empty_query(url: &mut Url) {
    if url.query() == Some("") {
        url.set_query(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_urls_under_api_v1_with_encoded_segments() {
        let c = Client::new("http://127.0.0.1:7171/", "t").unwrap();
        assert_eq!(
            c.url(&["swarms", "a b/c", "tasks"]).as_str(),
            "http://127.0.0.1:7171/api/v1/swarms/a%20b%2Fc/tasks"
        );
        let c = Client::new("http://example.test:80/prefix/api/v1", "t").unwrap();
        assert_eq!(
            c.url(&["orchestrator"]).as_str(),
            "http://example.test/prefix/api/v1/orchestrator"
        );
        assert_eq!(c.base_url(), "http://example.test/prefix");
    }

    #[test]
    fn refuses_unusable_urls() {
        for bad in ["127.0.0.1:7171", "ftp://x", "not a url", "http://x/?a=1"] {
            let err = Client::new(bad, "t").unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidUrl { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn text_is_taken_up_to_a_split_character() {
        let mut buf = b"abc\xC3".to_vec();
        assert_eq!(take_utf8(&mut buf), "abc");
        assert_eq!(buf, b"\xC3");
        buf.extend_from_slice(b"\xA9!");
        assert_eq!(take_utf8(&mut buf), "\u{e9}!");
        assert!(buf.is_empty());
        // A four-byte character split after two bytes, then after three.
        let crab = "\u{1F980}".as_bytes();
        let mut buf = crab[..2].to_vec();
        assert_eq!(take_utf8(&mut buf), "");
        buf.push(crab[2]);
        assert_eq!(take_utf8(&mut buf), "");
        buf.push(crab[3]);
        assert_eq!(take_utf8(&mut buf), "\u{1F980}");
        // Invalid bytes are replaced, not kept forever.
        let mut buf = b"x\xFFy".to_vec();
        assert_eq!(take_utf8(&mut buf), "x\u{FFFD}y");
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_are_whole_seconds_capped_at_sixty() {
        assert_eq!(wait_secs(Duration::ZERO), 0);
        assert_eq!(wait_secs(Duration::from_millis(1)), 1);
        assert_eq!(wait_secs(Duration::from_secs(30)), 30);
        assert_eq!(wait_secs(Duration::from_millis(30_500)), 31);
        assert_eq!(wait_secs(Duration::from_secs(600)), 60);
    }

    #[test]
    fn message_queries_become_the_documented_parameters() {
        let c = Client::new("http://127.0.0.1:7171", "t").unwrap();
        let agent = "0190b6e4-0000-7000-8000-000000000001";
        let url = c.url(&["agents", agent, "messages"]);
        assert_eq!(
            MessageQuery::default().apply(url.clone()).as_str(),
            format!("http://127.0.0.1:7171/api/v1/agents/{agent}/messages")
        );
        let q = MessageQuery {
            direction: Some(MessageDirection::In),
            status: Some(MessageStatus::Dead),
            topic: Some("builds.done".into()),
            limit: Some(20),
            cursor: Some("c/1".into()),
        };
        assert_eq!(
            q.apply(url).query(),
            Some("direction=in&status=dead&topic=builds.done&limit=20&cursor=c%2F1")
        );
    }

    #[test]
    fn progress_body_has_only_documented_fields() {
        let b = ProgressBody {
            percent: Some(50.0),
            message: None,
        };
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"percent":50.0}"#);
    }

    #[tokio::test]
    async fn connection_refused_is_one_helpful_line() {
        // Bind then drop a listener to get a port where nothing listens.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
        let err = c.orchestrator().await.unwrap_err();
        let text = err.to_string();
        assert!(err.is_transient());
        assert!(text.contains("cannot reach the coordinator"), "{text}");
        assert!(text.contains("flotilla serve"), "{text}");
        assert!(!text.contains('\n'));
    }
}
