//! `/swarms`: create, list, show, update, delete, health, scale.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use flotilla_core::api::{Page, ScaleAnswer, ScaleRequest, SwarmHealth, SwarmView};
use flotilla_core::{ScaleTarget, SwarmId, SwarmSpec, SwarmUpdate};
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /swarms`, by name.
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<SwarmView>>> {
    let limit = check_limit(q.limit)?;
    let now = state.now();
    let mut items = state.fleet.lock().swarm_views(now);
    items.retain(|s| who.sees(s.swarm.id));
    Ok(Json(paginate(
        items,
        |s| s.swarm.name.clone(),
        limit,
        q.cursor.as_deref(),
    )))
}

/// `GET /swarms/{swarm}`
pub async fn show(
    State(state): State<AppState>,
    Path(swarm): Path<String>,
) -> ApiResult<Json<SwarmView>> {
    let id = state.fleet.lock().resolve_swarm(&swarm)?;
    Ok(Json(view(&state, id)?))
}

/// `PUT /swarms/{swarm}`
pub async fn update(
    State(state): State<AppState>,
    Path(swarm): Path<String>,
    ApiJson(update): ApiJson<SwarmUpdate>,
) -> ApiResult<Json<SwarmView>> {
    let id = state
        .apply(|f, now| f.update_swarm(&swarm, update, now).map(|s| s.id))
        .await?;
    Ok(Json(view(&state, id)?))
}

/// `?force=` of `DELETE /swarms/{swarm}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

/// `DELETE /swarms/{swarm}`
pub async fn delete(
    State(state): State<AppState>,
    Path(swarm): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    state
        .apply(|f, now| f.delete_swarm(&swarm, q.force, now))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /swarms/{swarm}/health`
pub async fn health(
    State(state): State<AppState>,
    Path(swarm): Path<String>,
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
pub async fn scale(
    State(state): State<AppState>,
    Path(swarm): Path<String>,
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
