//! The HTTP API's routes (see `docs/api.md`). Handlers are thin: parse, check who is calling,
//! run one core command through [`crate::state::AppState::apply`] or read, answer.

mod agents;
mod checkpoints;
mod events_live;
mod hosts;
pub mod messages;
mod metrics;
pub mod openapi;
mod pools;
mod resources;
mod swarms;
mod system;
mod tasks;
mod tokens;
pub mod topology;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use serde::Deserialize;

use flotilla_core::ScaleTarget;
use flotilla_core::autoscale::{Direction, Verdict};

use crate::access::{Access, Agents, Guard, Hold, Target, authorize};
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
        .apply(|f, now| {
            pools::spawn_missing(f, &state.resources, &state.hosts, &ids, now).map(|_| ())
        })
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

/// One endpoint: its method, path, access rule and handler. [`table`] lists them all; the
/// router is built from it, so no endpoint exists without its rule.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path from the server's root (`/api/v1/...`, or `/metrics`), with `{params}`.
    pub path: &'static str,
    /// Who may call it (see [`crate::access`]).
    pub access: Access,
    handler: fn() -> MethodRouter<AppState>,
}

impl Route {
    /// The path under `/api/v1`, if it is an API route.
    fn api_path(&self) -> Option<&'static str> {
        self.path.strip_prefix("/api/v1")
    }

    /// How the audit log names it: `POST /api/v1/swarms/{swarm}/tasks`.
    pub fn action(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: fn() -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every authenticated endpoint with its rule. Reading this table is reading the API's
/// authorization: `docs/security.md` shows it as a matrix, and the authorization test calls
/// every row with every kind of token.
pub fn table() -> Vec<Route> {
    use Agents::{Handler, Own, SameSwarm};
    use Method as M;
    use Target::{Agent, Fleet, Listed, Message, Swarm, Task};
    let read = Access::read;
    let operate = Access::operate;
    let admin = Access::admin;
    vec![
        route(M::POST, "/api/v1/swarms", admin(Fleet), || {
            post(swarms::create)
        }),
        route(M::GET, "/api/v1/swarms", read(Listed), || get(swarms::list)),
        route(M::GET, "/api/v1/swarms/{swarm}", read(Swarm), || {
            get(swarms::show)
        }),
        route(M::PUT, "/api/v1/swarms/{swarm}", admin(Swarm), || {
            put(swarms::update)
        }),
        route(M::DELETE, "/api/v1/swarms/{swarm}", admin(Swarm), || {
            delete(swarms::delete)
        }),
        route(M::GET, "/api/v1/swarms/{swarm}/health", read(Swarm), || {
            get(swarms::health)
        }),
        route(
            M::GET,
            "/api/v1/swarms/{swarm}/metrics",
            read(Swarm),
            || get(metrics::series),
        ),
        route(
            M::GET,
            "/api/v1/swarms/{swarm}/metrics/keys",
            read(Swarm),
            || get(metrics::keys),
        ),
        route(
            M::POST,
            "/api/v1/swarms/{swarm}/scale",
            operate(Swarm),
            || post(swarms::scale),
        ),
        route(
            M::POST,
            "/api/v1/swarms/{swarm}/agents",
            operate(Swarm),
            || post(agents::register),
        ),
        route(M::GET, "/api/v1/swarms/{swarm}/agents", read(Swarm), || {
            get(agents::list)
        }),
        route(
            M::POST,
            "/api/v1/swarms/{swarm}/tasks",
            operate(Swarm),
            || post(tasks::submit),
        ),
        route(M::GET, "/api/v1/swarms/{swarm}/tasks", read(Swarm), || {
            get(tasks::list_in_swarm)
        }),
        route(
            M::GET,
            "/api/v1/swarms/{swarm}/topology",
            read(Swarm).agents(SameSwarm),
            || get(topology::show),
        ),
        route(
            M::PUT,
            "/api/v1/swarms/{swarm}/topology",
            admin(Swarm),
            || put(topology::update),
        ),
        route(
            M::POST,
            "/api/v1/swarms/{swarm}/messages",
            operate(Swarm).agents(SameSwarm),
            || post(messages::broadcast_to_swarm),
        ),
        route(
            M::GET,
            "/api/v1/swarms/{swarm}/messages",
            read(Swarm),
            || get(messages::swarm_history),
        ),
        route(
            M::GET,
            "/api/v1/swarms/{swarm}/messages/stream",
            read(Swarm).holds(Hold::Stream),
            || get(messages::stream),
        ),
        route(
            M::POST,
            "/api/v1/swarms/{swarm}/topics/{topic}",
            operate(Swarm).agents(SameSwarm),
            || post(messages::publish),
        ),
        route(M::GET, "/api/v1/swarms/{swarm}/pools", read(Swarm), || {
            get(pools::list)
        }),
        route(
            M::GET,
            "/api/v1/swarms/{swarm}/pools/{pool}",
            read(Swarm),
            || get(pools::show),
        ),
        route(
            M::PUT,
            "/api/v1/swarms/{swarm}/pools/{pool}",
            admin(Swarm),
            || put(pools::put),
        ),
        route(
            M::DELETE,
            "/api/v1/swarms/{swarm}/pools/{pool}",
            admin(Swarm),
            || delete(pools::delete),
        ),
        route(
            M::POST,
            "/api/v1/swarms/{swarm}/pools/{pool}/agents",
            operate(Swarm),
            || post(pools::spawn),
        ),
        route(M::PUT, "/api/v1/fleet", admin(Fleet), || {
            put(pools::apply_fleet)
        }),
        route(
            M::GET,
            "/api/v1/agents/{id}",
            read(Agent).agents(Own),
            || get(agents::show),
        ),
        route(
            M::DELETE,
            "/api/v1/agents/{id}",
            operate(Agent).agents(Own),
            || delete(agents::remove),
        ),
        route(M::PATCH, "/api/v1/agents/{id}", operate(Agent), || {
            patch(pools::lifecycle)
        }),
        route(
            M::GET,
            "/api/v1/agents/{id}/logs",
            read(Agent).agents(Own),
            || get(pools::logs),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/status",
            read(Agent).agents(Own),
            || get(agents::status),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/heartbeats",
            read(Agent).agents(Own),
            || get(metrics::heartbeats),
        ),
        route(
            M::POST,
            "/api/v1/agents/{id}/heartbeat",
            operate(Agent).agents(Own).quiet(),
            || post(agents::heartbeat),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/tasks/next",
            operate(Agent).agents(Own).holds(Hold::LongPoll),
            || get(agents::next_task),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/state",
            read(Agent).agents(Own),
            || get(checkpoints::get_state),
        ),
        route(
            M::PUT,
            "/api/v1/agents/{id}/state",
            operate(Agent).agents(Own).quiet(),
            || put(checkpoints::put_state),
        ),
        route(
            M::POST,
            "/api/v1/agents/{id}/checkpoints",
            operate(Agent).agents(Own),
            || post(checkpoints::create),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/checkpoints",
            read(Agent).agents(Own),
            || get(checkpoints::list),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/checkpoints/{checkpoint}",
            read(Agent).agents(Own),
            || get(checkpoints::show),
        ),
        route(
            M::DELETE,
            "/api/v1/agents/{id}/checkpoints/{checkpoint}",
            operate(Agent),
            || delete(checkpoints::delete),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/messages",
            read(Agent).agents(Own),
            || get(messages::agent_history),
        ),
        route(
            M::POST,
            "/api/v1/agents/{id}/messages",
            operate(Agent).agents(SameSwarm).holds(Hold::LongPoll),
            || post(messages::send),
        ),
        route(
            M::PUT,
            "/api/v1/agents/{id}/messages",
            operate(Agent).agents(Own),
            || put(messages::broadcast_from),
        ),
        route(
            M::DELETE,
            "/api/v1/agents/{id}/messages",
            operate(Agent).agents(Own),
            || delete(messages::clear),
        ),
        route(
            M::PATCH,
            "/api/v1/agents/{id}/messages",
            operate(Agent).agents(Own).quiet(),
            || patch(messages::update_status),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/messages/next",
            operate(Agent).agents(Own).holds(Hold::LongPoll),
            || get(messages::receive),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/messages/ws",
            operate(Agent).agents(Own).holds(Hold::Stream),
            || get(messages::socket),
        ),
        route(
            M::GET,
            "/api/v1/agents/{id}/subscriptions",
            read(Agent).agents(Own),
            || get(messages::subscriptions),
        ),
        route(
            M::PUT,
            "/api/v1/agents/{id}/subscriptions",
            operate(Agent).agents(Own),
            || put(messages::subscribe),
        ),
        route(
            M::GET,
            "/api/v1/messages/{id}",
            read(Message).agents(Handler),
            || get(messages::show),
        ),
        route(
            M::POST,
            "/api/v1/messages/{id}/retry",
            operate(Message),
            || post(messages::retry),
        ),
        route(M::GET, "/api/v1/tasks", read(Listed), || get(tasks::list)),
        route(M::POST, "/api/v1/tasks/lookup", read(Listed), || {
            post(tasks::lookup)
        }),
        route(
            M::GET,
            "/api/v1/tasks/{id}",
            read(Task).agents(Handler).holds(Hold::LongPoll),
            || get(tasks::show),
        ),
        route(M::POST, "/api/v1/tasks/{id}/cancel", operate(Task), || {
            post(tasks::cancel)
        }),
        route(M::POST, "/api/v1/tasks/{id}/retry", operate(Task), || {
            post(tasks::retry)
        }),
        route(
            M::POST,
            "/api/v1/tasks/{id}/progress",
            operate(Task).agents(Handler).quiet(),
            || post(tasks::progress),
        ),
        route(
            M::POST,
            "/api/v1/tasks/{id}/complete",
            operate(Task).agents(Handler).quiet(),
            || post(tasks::complete),
        ),
        route(
            M::POST,
            "/api/v1/tasks/{id}/fail",
            operate(Task).agents(Handler).quiet(),
            || post(tasks::fail),
        ),
        route(
            M::POST,
            "/api/v1/tasks/{id}/delegate",
            operate(Task).agents(Handler),
            || post(topology::delegate),
        ),
        route(M::GET, "/api/v1/events", read(Listed), || {
            get(system::events)
        }),
        route(
            M::GET,
            "/api/v1/events/stream",
            read(Listed).holds(Hold::Stream),
            || get(events_live::stream),
        ),
        route(
            M::GET,
            "/api/v1/events/ws",
            read(Listed).holds(Hold::Stream),
            || get(events_live::socket),
        ),
        route(M::GET, "/api/v1/alerts", read(Listed), || {
            get(system::alerts)
        }),
        route(M::GET, "/api/v1/orchestrator", read(Fleet), || {
            get(system::orchestrator)
        }),
        route(M::GET, "/api/v1/cluster", read(Fleet), || {
            get(system::cluster)
        }),
        route(M::POST, "/api/v1/hosts", operate(Fleet), || {
            post(hosts::register)
        }),
        route(M::GET, "/api/v1/hosts", read(Fleet), || get(hosts::list)),
        route(M::GET, "/api/v1/hosts/{name}", read(Fleet), || {
            get(hosts::show)
        }),
        route(
            M::POST,
            "/api/v1/hosts/{name}/poll",
            operate(Fleet).quiet().holds(Hold::LongPoll),
            || post(hosts::poll),
        ),
        route(
            M::POST,
            "/api/v1/hosts/{name}/leave",
            operate(Fleet),
            || post(hosts::leave),
        ),
        route(M::GET, "/api/v1/resources", read(Fleet), || {
            get(resources::show)
        }),
        route(M::PUT, "/api/v1/resources/policy", admin(Fleet), || {
            put(resources::put_policy)
        }),
        route(M::POST, "/api/v1/tokens", admin(Fleet), || {
            post(tokens::create)
        }),
        route(M::GET, "/api/v1/tokens", admin(Fleet), || get(tokens::list)),
        route(M::DELETE, "/api/v1/tokens/{id}", admin(Fleet), || {
            delete(tokens::revoke)
        }),
        route(M::GET, "/api/v1/audit", admin(Fleet), || get(tokens::audit)),
        route(M::GET, "/metrics", read(Fleet), || get(prometheus_metrics)),
    ]
}

/// The whole router: the API under `/api/v1`, `/metrics`, `/healthz`, and the dashboard at
/// `/`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let mut api = Router::new();
    let mut root = Router::new();
    for r in table() {
        let guard = Guard {
            state: state.clone(),
            access: r.access,
            action: r.action().into(),
        };
        let endpoint = (r.handler)().route_layer(middleware::from_fn_with_state(guard, authorize));
        match r.api_path() {
            Some(path) => api = api.route(path, endpoint),
            None => root = root.route(r.path, endpoint),
        }
    }
    let api =
        api.fallback(|| async { ApiError::not_found("no such API endpoint; see docs/api.md") });
    root
        // The API's description needs no token; its own router, beside the nest.
        .merge(openapi::router())
        .nest("/api/v1", api)
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
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
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
pub(crate) async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&flotilla_store::Reader) -> Result<T, flotilla_store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = state.reader.clone();
    Ok(tokio::task::spawn_blocking(move || f(&reader))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??)
}

/// The swarm a list across swarms shows: the one asked for, if any; for a swarm-limited token,
/// always its own (asking for another answers 404, as for a swarm that does not exist).
pub(crate) fn listed_swarm(
    state: &AppState,
    who: &crate::auth::Principal,
    asked: Option<&str>,
) -> Result<Option<flotilla_core::SwarmId>, ApiError> {
    let not_found = |s: &str| ApiError::not_found(format!("swarm {s:?} not found"));
    let resolved = match asked {
        None => None,
        Some(s) => Some(
            state
                .fleet
                .lock()
                .resolve_swarm(s)
                .map_err(|_| not_found(s))?,
        ),
    };
    match (who.swarm(), resolved) {
        (Some(scope), Some(id)) if id != scope => Err(not_found(asked.unwrap_or_default())),
        (Some(scope), _) => Ok(Some(scope)),
        (None, id) => Ok(id),
    }
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
