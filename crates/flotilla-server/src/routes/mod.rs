//! The HTTP API's routes (see `docs/api.md`). Handlers are thin: parse, check who is calling,
//! run one core command through [`crate::state::AppState::apply`] or read, answer.

mod agents;
mod checkpoints;
mod events_live;
pub mod messages;
mod metrics;
pub mod openapi;
mod pools;
mod resources;
mod swarms;
mod system;
mod tasks;
pub mod topology;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use serde::Deserialize;

use flotilla_core::ScaleTarget;
use flotilla_core::autoscale::{Direction, Verdict};

use crate::auth::authenticate;
use crate::error::ApiError;
use crate::request_id::RequestIdLayer;
use crate::state::AppState;

pub use pools::apply_document;

/// Spawns the agents that managed pools lack (after a removal, a crash of the coordinator…).
pub async fn reconcile_pools(state: &AppState) {
    let short = state.fleet.lock().pools_short_of_agents();
    let missing: usize = short.iter().map(|(_, _, n)| *n as usize).sum();
    // With nothing missing, admission still runs while some pool waits, to forget it.
    if missing == 0 && !state.resources.holds_any() {
        return;
    }
    let ids: Vec<flotilla_core::AgentId> = (0..missing)
        .map(|_| flotilla_core::AgentId(uuid::Uuid::now_v7()))
        .collect();
    if let Err(e) = state
        .apply(|f, now| pools::spawn_missing(f, &state.resources, &ids, now).map(|_| ()))
        .await
    {
        tracing::warn!(error = %e.message, "could not spawn the agents pools lack");
    }
}

/// One round of autoscaling: moves draining agents on, evaluates the policies that are due
/// (each at its own `evaluation_period`) and applies their verdicts — resizes, or refusals
/// by the scale veto — each as an event with its reason; then spawns what grown pools lack.
/// The supervisor calls it every 100 ms (the shortest evaluation period allowed).
pub async fn autoscale(state: &AppState) {
    {
        let fleet = state.fleet.lock();
        if !fleet.has_draining() && !fleet.has_autoscaled_pools() {
            return;
        }
    }
    let grew = state
        .apply(|f, now| {
            f.settle_drains(now);
            let veto = state.scale_veto.read().clone();
            let mut scaler = state.autoscaler.lock();
            let pools = f.autoscaled_pools();
            scaler.retain(|swarm, pool| pools.iter().any(|p| p.swarm_id == swarm && p.name == pool));
            let mut grew = false;
            for pool in pools {
                // Metrics cost a pass over the swarm's agents: only when a policy is due.
                if !scaler.due(&pool, now) {
                    continue;
                }
                let Some(view) = f.pool_view(pool.swarm_id, &pool.name, now) else {
                    continue;
                };
                let fleet: &flotilla_core::Fleet = f;
                let verdict = scaler.evaluate(&pool, &view, now, |p, to| veto(fleet, p, to));
                match verdict {
                    None => {}
                    Some(Verdict::Scale(d)) => {
                        let reason = format!("autoscaler: {}", d.reason);
                        let swarm = d.swarm_id.to_string();
                        // Within bounds by construction; a refusal (changing nothing) is logged
                        // rather than abandoning the round's other changes.
                        match f.scale_pool(&swarm, &d.pool, ScaleTarget::To(d.to), &reason, now) {
                            Ok(_) => grew |= d.direction == Direction::Up,
                            Err(e) => tracing::warn!(pool = %d.pool, error = %e, "autoscaler's resize refused"),
                        }
                    }
                    Some(Verdict::Vetoed(d, why)) => {
                        let reason = format!("{why} (autoscaler: {})", d.reason);
                        if let Err(e) = f.scale_refused(d.swarm_id, &d.pool, d.from, d.to, &reason, now) {
                            tracing::warn!(pool = %d.pool, error = %e, "refusal not recorded");
                        }
                    }
                }
            }
            Ok::<bool, flotilla_core::CoreError>(grew)
        })
        .await;
    match grew {
        Ok(true) => reconcile_pools(state).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e.message, "autoscaling round failed"),
    }
}

/// Longest long poll, in seconds.
pub const MAX_WAIT_SECS: f64 = 60.0;

/// The whole router: the API under `/api/v1`, `/healthz`, and the dashboard at `/`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/swarms", post(swarms::create).get(swarms::list))
        .route(
            "/swarms/{swarm}",
            get(swarms::show).put(swarms::update).delete(swarms::delete),
        )
        .route("/swarms/{swarm}/health", get(swarms::health))
        .route("/swarms/{swarm}/metrics", get(metrics::series))
        .route("/swarms/{swarm}/metrics/keys", get(metrics::keys))
        .route("/swarms/{swarm}/scale", post(swarms::scale))
        .route(
            "/swarms/{swarm}/agents",
            post(agents::register).get(agents::list),
        )
        .route(
            "/swarms/{swarm}/tasks",
            post(tasks::submit).get(tasks::list_in_swarm),
        )
        .route(
            "/swarms/{swarm}/topology",
            get(topology::show).put(topology::update),
        )
        .route(
            "/swarms/{swarm}/messages",
            post(messages::broadcast_to_swarm).get(messages::swarm_history),
        )
        .route("/swarms/{swarm}/messages/stream", get(messages::stream))
        .route("/swarms/{swarm}/topics/{topic}", post(messages::publish))
        .route(
            "/agents/{id}/messages",
            get(messages::agent_history)
                .post(messages::send)
                .put(messages::broadcast_from)
                .delete(messages::clear)
                .patch(messages::update_status),
        )
        .route("/agents/{id}/messages/next", get(messages::receive))
        .route("/agents/{id}/messages/ws", get(messages::socket))
        .route(
            "/agents/{id}/subscriptions",
            get(messages::subscriptions).put(messages::subscribe),
        )
        .route("/messages/{id}", get(messages::show))
        .route("/messages/{id}/retry", post(messages::retry))
        .route("/tasks/{id}/delegate", post(topology::delegate))
        .route("/swarms/{swarm}/pools", get(pools::list))
        .route(
            "/swarms/{swarm}/pools/{pool}",
            get(pools::show).put(pools::put).delete(pools::delete),
        )
        .route("/swarms/{swarm}/pools/{pool}/agents", post(pools::spawn))
        .route("/fleet", axum::routing::put(pools::apply_fleet))
        .route(
            "/agents/{id}",
            get(agents::show)
                .delete(agents::remove)
                .patch(pools::lifecycle),
        )
        .route("/agents/{id}/logs", get(pools::logs))
        .route("/agents/{id}/status", get(agents::status))
        .route("/agents/{id}/heartbeats", get(metrics::heartbeats))
        .route(
            "/agents/{id}/state",
            get(checkpoints::get_state).put(checkpoints::put_state),
        )
        .route(
            "/agents/{id}/checkpoints",
            post(checkpoints::create).get(checkpoints::list),
        )
        .route(
            "/agents/{id}/checkpoints/{checkpoint}",
            get(checkpoints::show).delete(checkpoints::delete),
        )
        .route("/alerts", get(system::alerts))
        .route("/resources", get(resources::show))
        .route(
            "/resources/policy",
            axum::routing::put(resources::put_policy),
        )
        .route("/agents/{id}/heartbeat", post(agents::heartbeat))
        .route("/agents/{id}/tasks/next", get(agents::next_task))
        .route("/tasks", get(tasks::list))
        .route("/tasks/lookup", post(tasks::lookup))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/retry", post(tasks::retry))
        .route("/tasks/{id}/progress", post(tasks::progress))
        .route("/tasks/{id}/complete", post(tasks::complete))
        .route("/tasks/{id}/fail", post(tasks::fail))
        .route("/events", get(system::events))
        .route("/events/stream", get(events_live::stream))
        .route("/events/ws", get(events_live::socket))
        .route("/orchestrator", get(system::orchestrator))
        .fallback(|| async { ApiError::not_found("no such API endpoint; see docs/api.md") })
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let scrape = Router::new()
        .route("/metrics", get(prometheus_metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        // The API's description needs no token; its own router, beside the nest.
        .merge(openapi::router())
        .nest("/api/v1", api)
        .merge(scrape)
        .route("/healthz", get(healthz))
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::not_found("not found; the API is under /api/v1") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestIdLayer)
        .with_state(state)
}

/// `GET /metrics`: the Prometheus exposition (see [`crate::prometheus`]).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses(
        (status = 200, description = "The Prometheus text exposition", content_type = "text/plain; version=0.0.4", body = String),
    ),
)]
async fn prometheus_metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    who.require_admin()?;
    let body = {
        let fleet = state.fleet.lock();
        crate::prometheus::render(&fleet, state.now())
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::prometheus::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}

/// `GET /healthz`: 200 `ok`, or 503 once the store has refused a change (restart needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "Alive: `ok`", content_type = "text/plain", body = String),
        (status = 503, description = "The store refused a change: restart the coordinator", content_type = "text/plain", body = String),
    ),
)]
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if state.writer.has_failed() {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the store refused a change: restart the coordinator\n",
        )
            .into_response()
    } else {
        "ok".into_response()
    }
}

/// `?wait=SECONDS` of long-polling endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// How long to wait, in seconds (fractions allowed), 0 to 60.
    #[serde(default)]
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<f64>,
}

impl WaitQuery {
    /// The wait, checked.
    pub fn duration(&self) -> Result<Duration, ApiError> {
        match self.wait {
            None => Ok(Duration::ZERO),
            Some(w) if w.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&w) => {
                Ok(Duration::from_secs_f64(w))
            }
            Some(_) => Err(ApiError::bad_request(format!(
                "wait must be between 0 and {MAX_WAIT_SECS} seconds"
            ))),
        }
    }
}

/// One page of a list held in memory, in the order of `key`: the items after `cursor` (the
/// key of the last item of the previous page), at most `limit`.
pub fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    limit: usize,
    cursor: Option<&str>,
) -> flotilla_core::api::Page<T> {
    let mut keyed: Vec<(String, T)> = items
        .into_iter()
        .map(|t| (key(&t), t))
        .filter(|(k, _)| cursor.is_none_or(|c| k.as_str() > c))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let next_cursor = (keyed.len() > limit).then(|| keyed[limit - 1].0.clone());
    let rest: Vec<T> = keyed.into_iter().take(limit).map(|(_, t)| t).collect();
    flotilla_core::api::Page {
        items: rest,
        next_cursor,
    }
}

/// Runs a blocking store read off the async threads.
pub(super) async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&flotilla_store::SqliteReader) -> Result<T, flotilla_store::StoreError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let reader = state.reader.clone();
    Ok(tokio::task::spawn_blocking(move || f(&reader))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??)
}

/// The `limit` of list endpoints.
pub fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    check_count("limit", limit)
}

/// A count asked for in parameter `name` (a page's `limit`, a receive's `max`): 100 when not
/// given, else 1 to 1000.
pub fn check_count(name: &str, n: Option<usize>) -> Result<usize, ApiError> {
    match n {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be between 1 and 1000"
        ))),
    }
}
