//! `/agents` and `/swarms/{swarm}/agents`: register, list, show, remove, heartbeat, and the
//! long poll for an agent's next task.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_core::api::{HeartbeatAck, Page, Registration};
use flotilla_core::{Agent, AgentId, AgentSpec, AgentStatus, Heartbeat};
use flotilla_store::TokenRole;
use serde::Deserialize;

use super::{WaitQuery, check_limit, paginate};
use crate::auth::{Principal, new_token, record};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, OptionalJson, parse_id};
use crate::state::AppState;

/// `POST /swarms/{swarm}/agents`
pub async fn register(
    State(state): State<AppState>,
    Path(swarm): Path<String>,
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFilter {
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "type")]
    agent_type: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /swarms/{swarm}/agents`
pub async fn list(
    State(state): State<AppState>,
    Path(swarm): Path<String>,
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
pub async fn show(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
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
pub async fn status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
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
pub async fn remove(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    state.apply(|f, now| f.unregister_agent(id, now)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /agents/{id}/heartbeat`
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    OptionalJson(hb): OptionalJson<Heartbeat>,
) -> ApiResult<Json<HeartbeatAck>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    Ok(Json(state.apply(|f, now| f.heartbeat(id, hb, now)).await?))
}

/// `GET /agents/{id}/tasks/next?wait=SECONDS`
pub async fn next_task(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
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
