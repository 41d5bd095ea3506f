//! `/swarms`: create, list, show, update, delete, health, scale.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use flotilla_core::api::ErrorBody;
use flotilla_core::api::{Page, ScaleAnswer, ScaleRequest, SwarmHealth, SwarmView};
use flotilla_core::{ScaleTarget, SwarmId, SwarmSpec, SwarmUpdate};
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

use super::{check_limit, paginate};

fn view(state: &AppState, id: SwarmId) -> ApiResult<SwarmView> {
    let now = state.now();
    state
        .fleet
        .lock()
        .swarm_view(id, now)
        .ok_or_else(|| ApiError::not_found(format!("swarm {id} not found")))
}

/// `POST /swarms`
#[utoipa::path(
    post,
    path = "/api/v1/swarms",
    tag = "swarms",
    request_body(content = SwarmSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "The swarm, created", body = SwarmView),
        (status = 409, description = "A swarm of that name exists", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<SwarmSpec>,
) -> ApiResult<impl IntoResponse> {
    let id = SwarmId(uuid::Uuid::now_v7());
    state
        .apply(|f, now| f.create_swarm(id, spec, now).map(|_| ()))
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, id)?)))
}

/// `limit` and `cursor` of `GET /swarms`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many items at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /swarms`, by name.
#[utoipa::path(
    get,
    path = "/api/v1/swarms",
    tag = "swarms",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of swarms, by name", body = Page<SwarmView>),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<SwarmView>>> {
    let limit = check_limit(q.limit)?;
    let now = state.now();
    let mut items = state.fleet.lock().swarm_views(now);
    // In a cluster each coordinator holds some swarms: the one asked gathers the others'.
    if let Some(cluster) = state.cluster.get()
        && !headers.contains_key(crate::cluster::FORWARDED_BY)
    {
        let held: std::collections::HashSet<_> = items.iter().map(|s| s.swarm.id).collect();
        let others = cluster.gather_swarm_views(&headers).await;
        items.extend(others.into_iter().filter(|s| !held.contains(&s.swarm.id)));
    }
    items.retain(|s| who.sees(s.swarm.id));
    Ok(Json(paginate(
        items,
        |s| s.swarm.name.clone(),
        limit,
        q.cursor.as_deref(),
    )))
}

/// `GET /swarms/{swarm}`
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}",
    tag = "swarms",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    responses(
        (status = 200, description = "The swarm", body = SwarmView),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
) -> ApiResult<Json<SwarmView>> {
    let id = state.fleet.lock().resolve_swarm(&swarm)?;
    Ok(Json(view(&state, id)?))
}

/// `PUT /swarms/{swarm}`
#[utoipa::path(
    put,
    path = "/api/v1/swarms/{swarm}",
    tag = "swarms",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    request_body(content = SwarmUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "The swarm, changed", body = SwarmView),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiJson(update): ApiJson<SwarmUpdate>,
) -> ApiResult<Json<SwarmView>> {
    let id = state
        .apply(|f, now| f.update_swarm(&swarm, update, now).map(|s| s.id))
        .await?;
    Ok(Json(view(&state, id)?))
}

/// `?force=` of `DELETE /swarms/{swarm}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Also when it has agents or unfinished tasks (they are removed or cancelled).
    #[serde(default)]
    force: bool,
}

/// `DELETE /swarms/{swarm}`
#[utoipa::path(
    delete,
    path = "/api/v1/swarms/{swarm}",
    tag = "swarms",
    params(("swarm" = String, Path, description = "The swarm's id or name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 409, description = "It has agents or unfinished tasks (use force), or it is the default swarm", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    state
        .apply(|f, now| f.delete_swarm(&swarm, q.force, now))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /swarms/{swarm}/health`
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/health",
    tag = "swarms",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    responses(
        (status = 200, description = "The swarm's health", body = SwarmHealth),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn health(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
) -> ApiResult<Json<SwarmHealth>> {
    let now = state.now();
    let fleet = state.fleet.lock();
    let id = fleet.resolve_swarm(&swarm)?;
    fleet
        .swarm_health(id, now)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("swarm {swarm:?} not found")))
}

/// `POST /swarms/{swarm}/scale`: sets a managed pool's size, `agents` or `delta` (not both).
#[utoipa::path(
    post,
    path = "/api/v1/swarms/{swarm}/scale",
    tag = "swarms",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    request_body(content = ScaleRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The pool's new size", body = ScaleAnswer),
        (status = 404, description = "No such swarm or pool", body = ErrorBody),
        (status = 409, description = "The pool has no agent template", body = ErrorBody),
    ),
)]
pub async fn scale(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiJson(req): ApiJson<ScaleRequest>,
) -> ApiResult<Json<ScaleAnswer>> {
    let target = match (req.agents, req.delta) {
        (Some(n), None) => ScaleTarget::To(n),
        (None, Some(d)) => ScaleTarget::By(d),
        _ => {
            return Err(ApiError::bad_request(
                "give either `agents` (the size wanted) or `delta` (agents to add, or remove when negative), not both",
            ));
        }
    };
    let reason = match target {
        ScaleTarget::To(n) => format!("manual: scale to {n}"),
        ScaleTarget::By(d) => format!("manual: scale by {d:+}"),
    };
    let answer = state
        .apply(|f, now| {
            let id = f.resolve_swarm(&swarm)?;
            let answer = f.scale_pool(&swarm, &req.pool, target, &reason, now)?;
            // The autoscaler waits its cooldown before it undoes a user's choice.
            state.autoscaler.lock().record_action(id, &req.pool, now);
            Ok(answer)
        })
        .await?;
    if answer.to > answer.from {
        super::reconcile_pools(&state).await;
    }
    Ok(Json(answer))
}
