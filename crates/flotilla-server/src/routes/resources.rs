//! `/resources`: the resource manager's capacity, allocations, waiting pools, usage and
//! pressure, and its policy.

use axum::Json;
use axum::extract::State;
use flotilla_core::resources::view::{PolicyUpdate, ResourcesView};

use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::state::AppState;

/// `GET /resources`
#[utoipa::path(
    get,
    path = "/api/v1/resources",
    tag = "resources",
    responses(
        (status = 200, description = "Capacity, allocations, waiting pools, usage and pressure", body = ResourcesView),
    ),
)]
pub async fn show(State(state): State<AppState>) -> ApiResult<Json<ResourcesView>> {
    Ok(Json(state.resources.view(&state)))
}

/// `PUT /resources/policy`: changes the allocation strategy, the admission policy or the
/// pressure responses, live; answers with the new state.
#[utoipa::path(
    put,
    path = "/api/v1/resources/policy",
    tag = "resources",
    request_body(content = PolicyUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "The new state", body = ResourcesView),
    ),
)]
pub async fn put_policy(
    State(state): State<AppState>,
    ApiJson(update): ApiJson<PolicyUpdate>,
) -> ApiResult<Json<ResourcesView>> {
    state.resources.update_policy(update)?;
    // A waiting pool may be served under the new policy at once.
    crate::routes::reconcile_pools(&state).await;
    Ok(Json(state.resources.view(&state)))
}
