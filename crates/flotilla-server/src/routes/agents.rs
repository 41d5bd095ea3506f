//! `/agents` and `/swarms/{swarm}/agents`: register, list, show, remove, heartbeat, and the
//! long poll for an agent's next task.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_core::api::ErrorBody;
use flotilla_core::api::{HeartbeatAck, Page, Registration};
use flotilla_core::{Agent, AgentId, AgentSpec, AgentStatus, Heartbeat};
use flotilla_store::TokenRole;
use serde::Deserialize;

use super::{WaitQuery, check_limit, paginate};
use crate::auth::{Principal, new_token, record};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery, OptionalJson, parse_id};
use crate::state::AppState;

/// `POST /swarms/{swarm}/agents`
#[utoipa::path(
    post,
    path = "/api/v1/swarms/{swarm}/agents",
    tag = "agents",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    request_body(content = Option<AgentSpec>, content_type = "application/json"),
    responses(
        (status = 201, description = "The agent, registered, with its token", body = Registration),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 409, description = "The name is taken, or the swarm is full", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    OptionalJson(spec): OptionalJson<AgentSpec>,
) -> ApiResult<impl IntoResponse> {
    let id = AgentId(uuid::Uuid::now_v7());
    let (secret, hash) = new_token();
    let (agent, interval, lease) = state
        .apply_with_tokens(|f, now| {
            let agent = f.register_agent(&swarm, id, spec, now)?.clone();
            let config = &f.swarm_by_id(agent.swarm_id).expect("agent's swarm").config;
            let out = (agent, config.heartbeat_interval, config.lease_duration());
            let token = record(
                hash,
                TokenRole::Agent,
                Some(id),
                &format!("agent {}", out.0.name),
                now,
            );
            // The secret is revealed only after the commit, so the token cannot be used
            // before it is durable.
            state.tokens.write().insert(token.clone());
            Ok((out, vec![token]))
        })
        .await?;
    let body = Registration {
        agent_id: id,
        token: secret,
        agent,
        heartbeat_interval_ms: interval.as_millis() as u64,
        lease_ms: lease.as_millis() as u64,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Filters of `GET /swarms/{swarm}/agents`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgentFilter {
    /// Only this status.
    #[serde(default)]
    status: Option<String>,
    /// Only this type (pool).
    #[serde(default, rename = "type")]
    agent_type: Option<String>,
    /// How many items at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /swarms/{swarm}/agents`
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/agents",
    tag = "agents",
    params(("swarm" = String, Path, description = "The swarm's id or name"), AgentFilter),
    responses(
        (status = 200, description = "A page of agents, by name", body = Page<Agent>),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(filter): ApiQuery<AgentFilter>,
) -> ApiResult<Json<Page<Agent>>> {
    let status = filter
        .status
        .as_deref()
        .map(str::parse::<AgentStatus>)
        .transpose()?;
    let limit = check_limit(filter.limit)?;
    let fleet = state.fleet.lock();
    let id = fleet.resolve_swarm(&swarm)?;
    // By name, then id (names cannot hold '/').
    let items = fleet.agents_of(id, status, filter.agent_type.as_deref());
    let page = paginate(
        items,
        |a| format!("{}/{}", a.name, a.id),
        limit,
        filter.cursor.as_deref(),
    );
    Ok(Json(page))
}

/// `GET /agents/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}",
    tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Agent>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    if let Some(a) = state.fleet.lock().agent(id) {
        return Ok(Json(a.clone()));
    }
    let stored = super::read(&state, move |r| r.get_agent(id)).await?;
    stored
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))
}

/// `GET /agents/{id}/status`: the coordinator's judgement of the agent's health, with its
/// history, breaker, error rate and recovery.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/status",
    tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    responses(
        (status = 200, description = "The agent's health as the coordinator judges it", body = flotilla_core::api::AgentStatusView),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<flotilla_core::api::AgentStatusView>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let now = state.now();
    let window = |f: &flotilla_core::Fleet, a: &Agent| {
        f.swarm_by_id(a.swarm_id)
            .map_or(std::time::Duration::from_secs(300), |s| {
                s.config.health.error_rate_window
            })
    };
    {
        let fleet = state.fleet.lock();
        if let Some(a) = fleet.agent(id) {
            let w = window(&fleet, a);
            let mut view = flotilla_core::api::AgentStatusView::of(a, w, now);
            view.local_queue = fleet.local_queue(id);
            return Ok(Json(view));
        }
    }
    let stored = super::read(&state, move |r| r.get_agent(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))?;
    let w = window(&state.fleet.lock(), &stored);
    Ok(Json(flotilla_core::api::AgentStatusView::of(
        &stored, w, now,
    )))
}

/// `DELETE /agents/{id}`
#[utoipa::path(
    delete,
    path = "/api/v1/agents/{id}",
    tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    responses(
        (status = 204, description = "Removed; its tasks went back to the queue"),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    state.apply(|f, now| f.unregister_agent(id, now)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /agents/{id}/heartbeat`
#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/heartbeat",
    tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    request_body(content = Option<Heartbeat>, content_type = "application/json"),
    responses(
        (status = 200, description = "The lease, renewed", body = HeartbeatAck),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "The agent is stopped", body = ErrorBody),
    ),
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(hb): OptionalJson<Heartbeat>,
) -> ApiResult<Json<HeartbeatAck>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    Ok(Json(state.apply(|f, now| f.heartbeat(id, hb, now)).await?))
}

/// `GET /agents/{id}/tasks/next?wait=SECONDS`
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/tasks/next",
    tag = "agents",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), WaitQuery),
    responses(
        (status = 200, description = "The task, now running on this agent", body = flotilla_core::Task),
        (status = 204, description = "No task came within the wait"),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "The agent may not take tasks (stopped, failed)", body = ErrorBody),
    ),
)]
pub async fn next_task(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Response> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let wait = q.duration()?;
    let deadline = tokio::time::Instant::now() + wait;
    let poll = state.waiters.enter_agent(&state, id);
    let mut shutdown = state.shutdown.clone();
    loop {
        let notified = poll.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(task) = state.apply(|f, now| f.take_task(id, now)).await? {
            return Ok(Json(task).into_response());
        }
        if wait.is_zero() || *shutdown.borrow() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
            _ = shutdown.changed() => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}
