//! `/agents/{id}/checkpoints` and `/agents/{id}/state`: an agent's checkpoints, and the state
//! document it reports about itself. Rollback is `PATCH /agents/{id}` (`pools::lifecycle`).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use flotilla_core::api::ErrorBody;
use flotilla_core::api::Page;
use flotilla_core::{AgentId, Checkpoint, CheckpointId, CheckpointSpec, CheckpointTrigger};
use serde::Serialize;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, OptionalJson, parse_id};
use crate::state::AppState;

/// `POST /agents/{id}/checkpoints` (the agent itself or an admin).
#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/checkpoints",
    tag = "checkpoints",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    request_body(content = Option<CheckpointSpec>, content_type = "application/json"),
    responses(
        (status = 201, description = "The checkpoint", body = Checkpoint),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "A rollback is under way", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(spec): OptionalJson<CheckpointSpec>,
) -> ApiResult<impl IntoResponse> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let checkpoint =
        crate::checkpoints::take(&state, id, spec.description, CheckpointTrigger::Manual).await?;
    Ok((StatusCode::CREATED, Json(checkpoint)))
}

/// `GET /agents/{id}/checkpoints`: newest first.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/checkpoints",
    tag = "checkpoints",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    responses(
        (status = 200, description = "The agent's checkpoints, newest first", body = Page<Checkpoint>),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Page<Checkpoint>>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    known_agent(&state, id).await?;
    let items = super::read(&state, move |r| r.list_checkpoints(id)).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// `GET /agents/{id}/checkpoints/{checkpoint}`
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/checkpoints/{checkpoint}",
    tag = "checkpoints",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), ("checkpoint" = uuid::Uuid, Path, description = "The checkpoint's id (a UUID)")),
    responses(
        (status = 200, description = "The checkpoint", body = Checkpoint),
        (status = 404, description = "No such agent or checkpoint", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((id, checkpoint)): ApiPath<(String, String)>,
) -> ApiResult<Json<Checkpoint>> {
    let id: AgentId = parse_id(&id)?;
    let checkpoint: CheckpointId = parse_id(&checkpoint)?;
    who.require_agent(id)?;
    let found = super::read(&state, move |r| r.get_checkpoint(checkpoint)).await?;
    match found {
        Some(c) if c.agent_id == id => Ok(Json(c)),
        _ => Err(ApiError::not_found(format!(
            "agent {id} has no checkpoint {checkpoint}"
        ))),
    }
}

/// `DELETE /agents/{id}/checkpoints/{checkpoint}` (admin)
#[utoipa::path(
    delete,
    path = "/api/v1/agents/{id}/checkpoints/{checkpoint}",
    tag = "checkpoints",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), ("checkpoint" = uuid::Uuid, Path, description = "The checkpoint's id (a UUID)")),
    responses(
        (status = 204, description = "Deleted, with its workspace"),
        (status = 404, description = "No such agent or checkpoint", body = ErrorBody),
        (status = 409, description = "A rollback to it is under way", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath((id, checkpoint)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let id: AgentId = parse_id(&id)?;
    let checkpoint: CheckpointId = parse_id(&checkpoint)?;
    let workspace = state
        .apply(|f, now| f.delete_checkpoint(id, checkpoint, now))
        .await?;
    crate::checkpoints::discard_all(workspace.into_iter().collect());
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /agents/{id}/state` (the agent itself or an admin): any JSON document.
#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/state",
    tag = "checkpoints",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 204, description = "Saved"),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn put_state(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<StatusCode> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let doc = flotilla_core::Json::from_value(&body);
    state
        .apply(|f, now| f.put_agent_state(id, doc, now))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The answer to `GET /agents/{id}/state`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StateView {
    /// The document, as the agent reported it.
    state: flotilla_core::Json,
    /// When.
    updated_at: flotilla_core::Timestamp,
}

/// `GET /agents/{id}/state`
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/state",
    tag = "checkpoints",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    responses(
        (status = 200, description = "The state the agent last reported", body = StateView),
        (status = 404, description = "No such agent, or it reported no state", body = ErrorBody),
    ),
)]
pub async fn get_state(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let found = super::read(&state, move |r| r.get_agent_state(id)).await?;
    match found {
        Some((doc, at)) => Ok(Json(StateView {
            state: doc,
            updated_at: at,
        })),
        None => Err(ApiError::not_found(format!(
            "agent {id} has reported no state (PUT /agents/{id}/state)"
        ))),
    }
}

/// 404 unless the agent is known (in memory or in the store).
async fn known_agent(state: &AppState, id: AgentId) -> Result<(), ApiError> {
    if state.fleet.lock().agent(id).is_some() {
        return Ok(());
    }
    let stored = super::read(state, move |r| r.get_agent(id)).await?;
    stored
        .map(drop)
        .ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))
}
