//! `/hosts`: machines running managed agents for the coordinator (`flotilla host`); see
//! [`crate::hosts`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flotilla_core::api::ErrorBody;
use flotilla_core::host::{HostOrder, HostRegistration, HostReport, HostSession, HostView};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// `POST /hosts`
#[utoipa::path(
    post,
    path = "/api/v1/hosts",
    tag = "hosts",
    request_body(content = HostRegistration, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered: poll with this session", body = HostSession),
        (status = 400, description = "A bad name, capacity or label", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(reg): ApiJson<HostRegistration>,
) -> ApiResult<(StatusCode, Json<HostSession>)> {
    let session = crate::hosts::register(&state, reg).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// `POST /hosts/{name}/poll`
#[utoipa::path(
    post,
    path = "/api/v1/hosts/{name}/poll",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name")),
    request_body(content = HostReport, content_type = "application/json"),
    responses(
        (status = 200, description = "The orders not yet acknowledged (empty after `wait_ms` without one)", body = Vec<HostOrder>),
        (status = 409, description = "Not registered under this session, or lost: register again", body = ErrorBody),
    ),
)]
pub async fn poll(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(report): ApiJson<HostReport>,
) -> ApiResult<Json<Vec<HostOrder>>> {
    Ok(Json(crate::hosts::poll(&state, &name, report).await?))
}

/// What `POST /hosts/{name}/leave` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Leave {
    /// The host's session.
    pub session: u64,
}

/// `POST /hosts/{name}/leave`
#[utoipa::path(
    post,
    path = "/api/v1/hosts/{name}/leave",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name")),
    request_body(content = Leave, content_type = "application/json"),
    responses(
        (status = 204, description = "Left: its agents are placed elsewhere"),
        (status = 409, description = "No such session", body = ErrorBody),
    ),
)]
pub async fn leave(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(leave): ApiJson<Leave>,
) -> ApiResult<StatusCode> {
    crate::hosts::leave(&state, &name, leave.session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /hosts`
#[utoipa::path(
    get,
    path = "/api/v1/hosts",
    tag = "hosts",
    responses(
        (status = 200, description = "Every host this coordinator knows, with its agents", body = Vec<HostView>),
    ),
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<HostView>>> {
    let fleet = state.fleet.lock();
    Ok(Json(state.hosts.views(&fleet)))
}

/// `GET /hosts/{name}`
#[utoipa::path(
    get,
    path = "/api/v1/hosts/{name}",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name")),
    responses(
        (status = 200, description = "The host, with its agents", body = HostView),
        (status = 404, description = "No such host", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<HostView>> {
    let fleet = state.fleet.lock();
    state
        .hosts
        .views(&fleet)
        .into_iter()
        .find(|h| h.name == name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "host {name:?} not found; `flotilla status --cluster` lists the hosts"
            ))
        })
}
