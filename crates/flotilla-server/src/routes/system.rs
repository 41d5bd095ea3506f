//! `/events` (the event log) and `/orchestrator` (the coordinator's own status).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use flotilla_core::api::ErrorBody;
use flotilla_core::api::{OrchestratorInfo, Page};
use flotilla_core::{AgentId, Event, EventKind, TaskId};
use flotilla_store::EventFilter;
use serde::Deserialize;

use super::{check_limit, listed_swarm};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, parse_id};
use crate::state::AppState;

/// Filters of `GET /events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this swarm (id or name).
    #[serde(default)]
    swarm: Option<String>,
    /// Only these event types, comma-separated.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// Only this agent (id).
    #[serde(default)]
    agent: Option<String>,
    /// Only this task (id).
    #[serde(default)]
    task: Option<String>,
    /// Only events after this sequence number (the `next_cursor` of the previous page).
    #[serde(default)]
    after: Option<u64>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// How many items at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The newest `limit` events (still oldest first).
    #[serde(default)]
    latest: Option<bool>,
}

/// `GET /events`
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventQuery),
    responses(
        (status = 200, description = "A page of events, in log order", body = Page<Event>),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn events(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let limit = check_limit(q.limit)?;
    let filter = event_filter(&state, &who, &q)?;
    let items = read_events(&state, filter, limit).await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// The store filter of an event query (the swarm resolved, types parsed, ids checked); a
/// swarm-limited token sees only its swarm's events.
pub(super) fn event_filter(
    state: &AppState,
    who: &Principal,
    q: &EventQuery,
) -> Result<EventFilter, ApiError> {
    let kinds = match q.kind.as_deref() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|k| parse_kind(k.trim()))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let after = match (&q.cursor, q.after) {
        (Some(c), _) => c.parse::<u64>().map_err(|_| {
            ApiError::bad_request("cursor must be the next_cursor of a previous page")
        })?,
        (None, a) => a.unwrap_or(0),
    };
    Ok(EventFilter {
        swarm: listed_swarm(state, who, q.swarm.as_deref())?,
        kinds,
        agent: q.agent.as_deref().map(parse_id::<AgentId>).transpose()?,
        task: q.task.as_deref().map(parse_id::<TaskId>).transpose()?,
        after,
        latest: q.latest.unwrap_or(false),
    })
}

/// Reads events from the store, off the async threads.
pub(super) async fn read_events(
    state: &AppState,
    filter: EventFilter,
    limit: usize,
) -> Result<Vec<Event>, ApiError> {
    super::read(state, move |r| r.list_events(&filter, limit)).await
}

fn parse_kind(k: &str) -> Result<EventKind, ApiError> {
    serde_json::from_value::<EventKind>(serde_json::Value::String(k.to_owned()))
        .map_err(|_| ApiError::bad_request(format!("unknown event type {k:?}")))
}

/// Filters of `GET /alerts`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only this swarm (id or name).
    #[serde(default)]
    swarm: Option<String>,
    /// Only this agent (id).
    #[serde(default)]
    agent: Option<String>,
    /// `warning`, `critical` or `recovery` (comma-separated); all three by default.
    #[serde(default)]
    level: Option<String>,
    /// How many items at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /alerts`: the newest alerts (warning: an agent is degraded; critical: unhealthy or
/// given up on; recovery: healthy again), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "events",
    params(AlertQuery),
    responses(
        (status = 200, description = "The newest alerts, oldest first", body = Page<Event>),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn alerts(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let limit = check_limit(q.limit)?;
    let kinds = match q.level.as_deref() {
        None => vec![
            EventKind::AlertWarning,
            EventKind::AlertCritical,
            EventKind::AlertRecovery,
        ],
        Some(list) => list
            .split(',')
            .map(|l| match l.trim() {
                "warning" => Ok(EventKind::AlertWarning),
                "critical" => Ok(EventKind::AlertCritical),
                "recovery" => Ok(EventKind::AlertRecovery),
                other => Err(ApiError::bad_request(format!(
                    "unknown alert level {other:?}; expected warning, critical or recovery"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let filter = EventFilter {
        swarm: listed_swarm(&state, &who, q.swarm.as_deref())?,
        kinds,
        agent: q.agent.as_deref().map(parse_id::<AgentId>).transpose()?,
        task: None,
        after: 0,
        latest: true,
    };
    let items = read_events(&state, filter, limit).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// `GET /orchestrator`
#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    tag = "system",
    responses(
        (status = 200, description = "The coordinators sharing this one's store, each swarm's lease, and the swarms this one took over", body = crate::cluster::ClusterStatus),
    ),
)]
pub async fn cluster(
    State(state): State<AppState>,
) -> ApiResult<Json<crate::cluster::ClusterStatus>> {
    let mut status = match state.cluster.get() {
        Some(c) => c.status(),
        None => crate::cluster::ClusterStatus {
            clustered: false,
            node: "local".to_owned(),
            url: String::new(),
            lease_ttl_ms: 0,
            nodes: Vec::new(),
            leases: Vec::new(),
            takeovers: Vec::new(),
            hosts: Vec::new(),
        },
    };
    status.hosts = state.hosts.views(&state.fleet.lock());
    Ok(Json(status))
}

#[utoipa::path(
    get,
    path = "/api/v1/orchestrator",
    tag = "system",
    responses(
        (status = 200, description = "The coordinator's status", body = OrchestratorInfo),
    ),
)]
pub async fn orchestrator(State(state): State<AppState>) -> ApiResult<Json<OrchestratorInfo>> {
    let now = state.now();
    let ((swarms, agents, tasks), in_flight) = {
        let fleet = state.fleet.lock();
        (fleet.totals(), fleet.messages_in_flight())
    };
    Ok(Json(OrchestratorInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: state.clock.started_at(),
        uptime_ms: now.since(state.clock.started_at()).as_millis() as u64,
        store: state.store_description.clone(),
        bus: state.bus.describe(),
        messages_in_flight: in_flight as u64,
        swarms,
        agents,
        tasks,
    }))
}
