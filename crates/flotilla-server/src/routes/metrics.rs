//! `/swarms/{swarm}/metrics` (stored aggregates over time), `/swarms/{swarm}/metrics/keys`
//! and `/agents/{id}/heartbeats` (an agent's sampled heartbeat history).
//!
//! Closed minutes are in the store (merged into their 5-minute, hour and day rows as they
//! close); the minute under way is only in the core's recorder, so a read adds it to the
//! point of the period that holds it. A chart polled every few seconds thus moves within the
//! minute.

use flotilla_core::api::ErrorBody;
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use flotilla_core::metrics::{
    Bucket, HeartbeatHistory, MetricKeys, MetricsResponse, Period, Scope,
};
use flotilla_core::{AgentId, Timestamp};
use flotilla_store::MetricSeries;
use serde::Deserialize;

use super::check_limit;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery, parse_id};
use crate::state::AppState;

/// Most points one read may span: `(to - from) / period`.
pub const MAX_POINTS: i64 = 10_000;

/// Periods a read spans when `from` is not given.
const DEFAULT_POINTS: i64 = 60;

/// Query of `GET /swarms/{swarm}/metrics`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// `1m` (default), `5m`, `1h` or `1d`.
    #[serde(default)]
    period: Option<String>,
    /// RFC 3339 or `now`; aligned down to the period.
    #[serde(default)]
    from: Option<String>,
    /// RFC 3339 or `now` (default).
    #[serde(default)]
    to: Option<String>,
    /// `swarm` (default), `pool`, `agent` or `task_type`.
    #[serde(default)]
    scope: Option<String>,
    /// The pool, agent or task type of a scope other than swarm.
    #[serde(default)]
    key: Option<String>,
}

/// `GET /swarms/{swarm}/metrics?period=&from=&to=&scope=&key=`
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/metrics",
    tag = "metrics",
    params(("swarm" = String, Path, description = "The swarm's id or name"), MetricsQuery),
    responses(
        (status = 200, description = "The series", body = MetricsResponse),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn series(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Json<MetricsResponse>> {
    let swarm_id = state.fleet.lock().resolve_swarm(&swarm)?;
    let period = parse_period(q.period.as_deref())?;
    let scope = parse_scope(q.scope.as_deref())?;
    let key = match (scope, q.key) {
        (Scope::Swarm, None) => String::new(),
        (Scope::Swarm, Some(_)) => {
            return Err(ApiError::bad_request(
                "key is for the pool, agent and task_type scopes; leave it out for the swarm",
            ));
        }
        (_, Some(k)) if !k.is_empty() => k,
        (s, _) => {
            return Err(ApiError::bad_request(format!(
                "scope {} needs key=NAME; GET /api/v1/swarms/{swarm}/metrics/keys?scope={} lists them",
                s.as_str(),
                s.as_str()
            )));
        }
    };
    let now = state.now();
    let (from, to) = range(period, q.from.as_deref(), q.to.as_deref(), now)?;

    let series_key = key.clone();
    let stored = super::read(&state, move |r| {
        let series = MetricSeries {
            swarm: swarm_id,
            scope,
            key: &series_key,
            period,
        };
        r.metric_buckets(&series, from, to)
    })
    .await?;
    let mut buckets: BTreeMap<Timestamp, Bucket> = stored.into_iter().collect();
    // The minute under way, which the store does not have yet.
    {
        let fleet = state.fleet.lock();
        if let Some((minute, open)) = fleet.metrics().open_bucket(swarm_id, scope, &key) {
            let start = period.start_of(minute);
            if start >= from && start < to {
                buckets.entry(start).or_default().merge(&open);
            }
        }
    }
    let points = buckets
        .into_iter()
        .map(|(start, b)| b.point_until(start, period, now))
        .collect();
    Ok(Json(MetricsResponse {
        swarm: swarm_id,
        period,
        scope,
        key: (scope != Scope::Swarm).then_some(key),
        from,
        to,
        points,
    }))
}

/// Query of `GET /swarms/{swarm}/metrics/keys`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// `swarm` (default), `pool`, `agent` or `task_type`.
    #[serde(default)]
    scope: Option<String>,
    /// `1m` (default), `5m`, `1h` or `1d`.
    #[serde(default)]
    period: Option<String>,
    /// RFC 3339 or `now`; aligned down to the period.
    #[serde(default)]
    from: Option<String>,
}

/// `GET /swarms/{swarm}/metrics/keys?scope=pool|agent|task_type&period=&from=`: which pools,
/// agents or task types have figures (by default: minutes of the last day).
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/metrics/keys",
    tag = "metrics",
    params(("swarm" = String, Path, description = "The swarm's id or name"), KeysQuery),
    responses(
        (status = 200, description = "The series of a scope", body = MetricKeys),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn keys(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(q): ApiQuery<KeysQuery>,
) -> ApiResult<Json<MetricKeys>> {
    let swarm_id = state.fleet.lock().resolve_swarm(&swarm)?;
    let scope = match parse_scope(q.scope.as_deref())? {
        Scope::Swarm => {
            return Err(ApiError::bad_request(
                "scope must be pool, agent or task_type (the swarm has one series)",
            ));
        }
        s => s,
    };
    let period = parse_period(q.period.as_deref())?;
    let now = state.now();
    let from = match q.from.as_deref() {
        Some(f) => parse_time("from", f, now)?,
        None => now - std::time::Duration::from_secs(86_400),
    };
    let mut keys = super::read(&state, move |r| {
        r.metric_keys(swarm_id, scope, period, period.start_of(from))
    })
    .await?;
    {
        let fleet = state.fleet.lock();
        for key in fleet.metrics().open_keys(swarm_id, scope) {
            if let Err(at) = keys.binary_search(&key) {
                keys.insert(at, key);
            }
        }
    }
    Ok(Json(MetricKeys { scope, keys }))
}

/// Query of `GET /agents/{id}/heartbeats`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HeartbeatQuery {
    /// RFC 3339 or `now`; aligned down to the period.
    #[serde(default)]
    from: Option<String>,
    /// RFC 3339 or `now` (default).
    #[serde(default)]
    to: Option<String>,
    /// How many items at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /agents/{id}/heartbeats?from=&to=&limit=`: the agent's stored heartbeats (one per
/// sampling interval), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/heartbeats",
    tag = "metrics",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), HeartbeatQuery),
    responses(
        (status = 200, description = "The agent's heartbeat history, newest first", body = HeartbeatHistory),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn heartbeats(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HeartbeatQuery>,
) -> ApiResult<Json<HeartbeatHistory>> {
    let agent: AgentId = parse_id(&id)?;
    let limit = check_limit(q.limit)?;
    let now = state.now();
    let to = match q.to.as_deref() {
        Some(t) => parse_time("to", t, now)?,
        None => now + std::time::Duration::from_millis(1),
    };
    let from = match q.from.as_deref() {
        Some(f) => parse_time("from", f, now)?,
        None => Timestamp::EPOCH,
    };
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let (known, every) = {
        let fleet = state.fleet.lock();
        (
            fleet.agent(agent).is_some(),
            fleet.metrics().config().heartbeat_sample_every,
        )
    };
    let (found, items) = super::read(&state, move |r| {
        let found = known || r.get_agent(agent)?.is_some();
        let items = if found {
            r.heartbeats(agent, from, to, limit)?
        } else {
            Vec::new()
        };
        Ok((found, items))
    })
    .await?;
    if !found {
        return Err(ApiError::not_found(format!("no agent {agent}")));
    }
    Ok(Json(HeartbeatHistory {
        agent_id: agent,
        sample_every_ms: every.as_millis() as u64,
        items,
    }))
}

fn parse_period(text: Option<&str>) -> Result<Period, ApiError> {
    match text {
        None => Ok(Period::Minute),
        Some(p) => Period::parse(p).ok_or_else(|| {
            ApiError::bad_request(format!("unknown period {p:?}; expected 1m, 5m, 1h or 1d"))
        }),
    }
}

fn parse_scope(text: Option<&str>) -> Result<Scope, ApiError> {
    match text {
        None => Ok(Scope::Swarm),
        Some(s) => Scope::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown scope {s:?}; expected swarm, pool, agent or task_type"
            ))
        }),
    }
}

/// An instant of a query: RFC 3339, or `now`.
fn parse_time(name: &str, text: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    if text == "now" {
        return Ok(now);
    }
    Timestamp::parse_rfc3339(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} must be an RFC 3339 instant (e.g. 2026-01-31T12:00:00Z) or now, not {text:?}"
        ))
    })
}

/// The range a read covers, aligned on `period`: `to` defaults to now (the period under way
/// included), `from` to [`DEFAULT_POINTS`] periods before `to`.
fn range(
    period: Period,
    from: Option<&str>,
    to: Option<&str>,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), ApiError> {
    let step = period.millis();
    let to = match to {
        Some(t) => parse_time("to", t, now)?,
        None => now,
    };
    // The period holding `to` is included.
    let end = Timestamp::from_millis(period.start_of(to).as_millis().saturating_add(step));
    let start = match from {
        Some(f) => period.start_of(parse_time("from", f, now)?),
        None => Timestamp::from_millis(end.as_millis().saturating_sub(DEFAULT_POINTS * step)),
    };
    if start >= end {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let points = (end.as_millis() - start.as_millis()) / step;
    if points > MAX_POINTS {
        return Err(ApiError::bad_request(format!(
            "the range spans {points} periods of {}; at most {MAX_POINTS}: narrow it or use a longer period",
            period.as_str()
        )));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn ranges_align_on_the_period_and_include_the_one_under_way() {
        let now = at("2026-12-03T10:17:30Z");
        let (from, to) = range(Period::FiveMinutes, None, None, now).unwrap();
        assert_eq!(to, at("2026-12-03T10:20:00Z"));
        assert_eq!(from, at("2026-12-03T05:20:00Z"));
        let (from, to) = range(
            Period::Hour,
            Some("2026-12-01T00:30:00Z"),
            Some("2026-12-02T00:00:00Z"),
            now,
        )
        .unwrap();
        assert_eq!(
            (from, to),
            (at("2026-12-01T00:00:00Z"), at("2026-12-02T01:00:00Z"))
        );
    }

    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        let now = at("2026-12-03T10:17:30Z");
        let e = range(Period::Minute, Some("2026-12-04T00:00:00Z"), None, now).unwrap_err();
        assert!(e.message.contains("before"), "{}", e.message);
        let e = range(Period::Minute, Some("2020-01-01T00:00:00Z"), None, now).unwrap_err();
        assert!(e.message.contains("at most"), "{}", e.message);
        let e = range(Period::Minute, Some("yesterday"), None, now).unwrap_err();
        assert!(e.message.contains("RFC 3339"), "{}", e.message);
    }
}
