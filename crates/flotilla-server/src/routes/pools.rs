//! `/swarms/{swarm}/pools`, `/fleet` and managed agents' lifecycle and logs.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flotilla_core::api::ErrorBody;
use flotilla_core::api::{FleetApplied, FleetChange, FleetSpec, Page, PoolPut};
use flotilla_core::fleet::PoolChange;
use flotilla_core::{
    Agent, AgentId, CoreError, LifecycleRequest, Pool, PoolSpec, SwarmId, SwarmSpec, SwarmUpdate,
};
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, parse_id};
use crate::state::AppState;

/// `GET /swarms/{swarm}/pools`
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/pools",
    tag = "pools",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    responses(
        (status = 200, description = "The swarm's pools", body = Page<Pool>),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
) -> ApiResult<Json<Page<Pool>>> {
    let fleet = state.fleet.lock();
    let id = fleet.resolve_swarm(&swarm)?;
    Ok(Json(Page {
        items: fleet.pools_of(id),
        next_cursor: None,
    }))
}

/// `GET /swarms/{swarm}/pools/{pool}`
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/pools/{pool}",
    tag = "pools",
    params(("swarm" = String, Path, description = "The swarm's id or name"), ("pool" = String, Path, description = "The pool's name")),
    responses(
        (status = 200, description = "The pool", body = Pool),
        (status = 404, description = "No such swarm or pool", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath((swarm, pool)): ApiPath<(String, String)>,
) -> ApiResult<Json<Pool>> {
    let fleet = state.fleet.lock();
    let id = fleet.resolve_swarm(&swarm)?;
    fleet
        .pools_of(id)
        .into_iter()
        .find(|p| p.name == pool)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("pool {pool:?} not found in swarm {swarm:?}")))
}

/// `PUT /swarms/{swarm}/pools/{pool}`
#[utoipa::path(
    put,
    path = "/api/v1/swarms/{swarm}/pools/{pool}",
    tag = "pools",
    params(("swarm" = String, Path, description = "The swarm's id or name"), ("pool" = String, Path, description = "The pool's name")),
    request_body(content = PoolSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = PoolPut),
        (status = 200, description = "Updated or unchanged", body = PoolPut),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 409, description = "The change does not fit the pool's agents", body = ErrorBody),
    ),
)]
pub async fn put(
    State(state): State<AppState>,
    ApiPath((swarm, pool)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let mut body = match body {
        serde_json::Value::Object(map) => map,
        _ => {
            return Err(ApiError::bad_request(
                "the body must be a JSON object: a pool spec",
            ));
        }
    };
    match body.get("name") {
        Some(serde_json::Value::String(n)) if *n != pool => {
            return Err(ApiError::bad_request(format!(
                "the body names pool {n:?} but the path names {pool:?}"
            )));
        }
        _ => {
            body.insert("name".into(), serde_json::Value::String(pool.clone()));
        }
    }
    let spec: PoolSpec = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::bad_request(format!("invalid pool spec: {e}")))?;
    check_launch(&state, &spec)?;
    // Enough ids for this pool's agents (and a few for other pools short of theirs).
    let ids = spawn_ids(spec.min_agents as usize + 16);
    let put = state
        .apply(|f, now| {
            let (change, pool) = f.put_pool(&swarm, spec, now)?;
            let put = PoolPut {
                change,
                pool: pool.clone(),
            };
            spawn_missing(f, &state.resources, &state.hosts, &ids, now)?;
            Ok(put)
        })
        .await?;
    let status = if put.change == PoolChange::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(put)).into_response())
}

/// `?force=` of `DELETE /swarms/{swarm}/pools/{pool}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Also when it has agents or unfinished tasks (they are removed or cancelled).
    #[serde(default)]
    force: bool,
}

/// `DELETE /swarms/{swarm}/pools/{pool}`
#[utoipa::path(
    delete,
    path = "/api/v1/swarms/{swarm}/pools/{pool}",
    tag = "pools",
    params(("swarm" = String, Path, description = "The swarm's id or name"), ("pool" = String, Path, description = "The pool's name"), ForceQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such swarm or pool", body = ErrorBody),
        (status = 409, description = "It has agents (use force)", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath((swarm, pool)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> ApiResult<StatusCode> {
    state
        .apply(|f, now| f.delete_pool(&swarm, &pool, q.force, now))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /swarms/{swarm}/pools/{pool}/agents`: a new managed agent.
#[utoipa::path(
    post,
    path = "/api/v1/swarms/{swarm}/pools/{pool}/agents",
    tag = "pools",
    params(("swarm" = String, Path, description = "The swarm's id or name"), ("pool" = String, Path, description = "The pool's name")),
    responses(
        (status = 201, description = "A new managed agent, started from the template", body = Agent),
        (status = 404, description = "No such swarm or pool", body = ErrorBody),
        (status = 409, description = "The pool is unmanaged or full, or the resources do not fit", body = ErrorBody),
    ),
)]
pub async fn spawn(
    State(state): State<AppState>,
    ApiPath((swarm, pool)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    let id = AgentId(uuid::Uuid::now_v7());
    let agent = state
        .apply(|f, now| {
            let swarm_id = f.resolve_swarm(&swarm)?;
            if let Some(p) = f.pools_of(swarm_id).iter().find(|p| p.name == pool) {
                state.resources.check_fit(f, p, &state.hosts)?;
            }
            f.spawn_agent(&swarm, &pool, id, now).cloned()
        })
        .await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// `PATCH /agents/{id}`: start, stop, pause, resume, restart.
#[utoipa::path(
    patch,
    path = "/api/v1/agents/{id}",
    tag = "pools",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    request_body(content = LifecycleRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 404, description = "No such agent or checkpoint", body = ErrorBody),
        (status = 409, description = "The operation does not fit the agent's state", body = ErrorBody),
    ),
)]
pub async fn lifecycle(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<LifecycleRequest>,
) -> ApiResult<Json<Agent>> {
    let id: AgentId = parse_id(&id)?;
    if req.checkpoint.is_some() && req.operation != flotilla_core::Operation::Rollback {
        return Err(ApiError::bad_request(
            "checkpoint goes only with the rollback operation",
        ));
    }
    let agent = state
        .apply(|f, now| {
            if req.operation == flotilla_core::Operation::Rollback {
                f.rollback(id, req.checkpoint, now)?;
                return Ok(f.agent(id).expect("rolled back agent").clone());
            }
            if matches!(
                req.operation,
                flotilla_core::Operation::Start | flotilla_core::Operation::Restart
            ) {
                // An agent that released its allocation (stopped) must fit to start again.
                let view = f.managed_views().into_iter().find(|v| v.id == id);
                if let Some(v) = view.filter(|v| !v.holds)
                    && let Some(p) = f
                        .pools_of(v.pool.swarm_id)
                        .iter()
                        .find(|p| p.name == v.pool.pool)
                {
                    state.resources.check_fit(f, p, &state.hosts)?;
                }
            }
            f.lifecycle(id, req.operation, req.force, now).cloned()
        })
        .await?;
    Ok(Json(agent))
}

/// Checks a managed pool's template against the work roots and run-as rules (a 400 naming
/// what to change): its agents could not start otherwise.
fn check_launch(state: &AppState, spec: &PoolSpec) -> Result<(), ApiError> {
    match &spec.template {
        // An agent on a host runs under the host's rules, not this machine's.
        Some(t) if t.placement == flotilla_core::Placement::Hosts => Ok(()),
        Some(t) => state
            .supervisor
            .launch()
            .check(t)
            .map_err(|e| ApiError::bad_request(format!("pool {:?}: {e}", spec.name))),
        None => Ok(()),
    }
}

/// Fresh agent ids for spawning, generated before taking the fleet lock.
fn spawn_ids(n: usize) -> Vec<AgentId> {
    (0..n).map(|_| AgentId(uuid::Uuid::now_v7())).collect()
}

/// Spawns the agents managed pools lack (up to `ids.len()` of them); returns their names.
pub fn spawn_missing(
    f: &mut flotilla_core::Fleet,
    resources: &crate::resources::Resources,
    hosts: &crate::hosts::Hosts,
    ids: &[AgentId],
    now: flotilla_core::Timestamp,
) -> Result<Vec<(SwarmId, String)>, CoreError> {
    // The resource manager decides which of the missing agents start now; the others wait or
    // are refused, with events saying why.
    Ok(crate::resources::spawn_admitted(
        f, resources, hosts, ids, now,
    ))
}

/// `PUT /fleet`
#[utoipa::path(
    put,
    path = "/api/v1/fleet",
    tag = "pools",
    request_body(content = FleetSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "What applying the document changed", body = FleetApplied),
        (status = 409, description = "A change does not fit the state", body = ErrorBody),
    ),
)]
pub async fn apply_fleet(
    State(state): State<AppState>,
    ApiJson(doc): ApiJson<FleetSpec>,
) -> ApiResult<Json<FleetApplied>> {
    Ok(Json(apply_document(&state, doc).await?))
}

/// Applies a fleet document: creates or updates its swarms, creates or replaces its pools,
/// spawns the agents managed pools lack. All or nothing: everything is checked first.
pub async fn apply_document(state: &AppState, doc: FleetSpec) -> ApiResult<FleetApplied> {
    // Check every part before changing anything, so that a bad pool leaves no half-applied file.
    let mut pools_checked = Vec::new();
    for s in &doc.swarms {
        flotilla_core::swarm::validate_name("swarm", &s.name)?;
        if let Some(c) = &s.config {
            c.validate()
                .map_err(|e| CoreError::invalid(format!("swarm {:?}: {e}", s.name)))?;
        }
        let mut names = std::collections::HashSet::new();
        for p in &s.pools {
            if !names.insert(p.name.clone()) {
                return Err(CoreError::invalid(format!(
                    "swarm {:?}: pool {:?} appears twice",
                    s.name, p.name
                ))
                .into());
            }
            pools_checked.push(
                p.clone()
                    .validated()
                    .map_err(|e| CoreError::invalid(format!("swarm {:?}: {e}", s.name)))?,
            );
            check_launch(state, p)
                .map_err(|e| ApiError::bad_request(format!("swarm {:?}: {}", s.name, e.message)))?;
        }
    }
    let total_min: usize = pools_checked.iter().map(|p| p.min_agents as usize).sum();
    let ids = spawn_ids(total_min);
    let swarm_ids: Vec<SwarmId> = doc
        .swarms
        .iter()
        .map(|_| SwarmId(uuid::Uuid::now_v7()))
        .collect();
    let changes = state
        .apply(|f, now| {
            let mut changes = Vec::new();
            for (s, new_id) in doc.swarms.into_iter().zip(swarm_ids) {
                let action = match f.swarm(&s.name) {
                    Err(_) => {
                        let spec = SwarmSpec {
                            name: s.name.clone(),
                            description: s.description.clone().unwrap_or_default(),
                            topology: s.topology.unwrap_or_default(),
                            config: s.config.clone().unwrap_or_default(),
                        };
                        f.create_swarm(new_id, spec, now)?;
                        "created"
                    }
                    Ok(current) => {
                        let differs = s
                            .description
                            .as_ref()
                            .is_some_and(|d| *d != current.description)
                            || s.topology.is_some_and(|t| t != current.topology)
                            || s.config.as_ref().is_some_and(|c| *c != current.config);
                        if differs {
                            let update = SwarmUpdate {
                                name: None,
                                description: s.description.clone(),
                                topology: s.topology,
                                config: s.config.clone(),
                            };
                            f.update_swarm(&s.name, update, now)?;
                            "updated"
                        } else {
                            "unchanged"
                        }
                    }
                };
                changes.push(FleetChange {
                    kind: "swarm".into(),
                    name: s.name.clone(),
                    action: action.into(),
                    detail: None,
                });
                for p in s.pools {
                    let name = format!("{}/{}", s.name, p.name);
                    let managed = p.template.is_some();
                    let (change, pool) = f.put_pool(&s.name, p, now)?;
                    let detail = managed.then(|| {
                        let t = pool.template.as_ref().expect("managed");
                        format!(
                            "managed, {} agents min; {} mode, {} runtime",
                            pool.min_agents,
                            serde_json::to_value(t.mode)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            serde_json::to_value(t.runtime)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                        )
                    });
                    let action = match change {
                        PoolChange::Created => "created",
                        PoolChange::Updated => "updated",
                        PoolChange::Unchanged => "unchanged",
                    };
                    changes.push(FleetChange {
                        kind: "pool".into(),
                        name,
                        action: action.into(),
                        detail,
                    });
                }
            }
            for (swarm, agent) in spawn_missing(f, &state.resources, &state.hosts, &ids, now)? {
                let swarm_name = f
                    .swarm_by_id(swarm)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                changes.push(FleetChange {
                    kind: "agent".into(),
                    name: format!("{swarm_name}/{agent}"),
                    action: "spawned".into(),
                    detail: None,
                });
            }
            Ok(changes)
        })
        .await?;
    Ok(FleetApplied { changes })
}

/// `?tail=&follow=` of `GET /agents/{id}/logs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// How many of the last lines (default 200).
    #[serde(default)]
    tail: Option<usize>,
    /// Keep the answer open and stream what the agent writes next.
    #[serde(default)]
    follow: bool,
}

/// `GET /agents/{id}/logs`: the last lines of a managed agent's log, and with `follow`, what
/// it writes next.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/logs",
    tag = "pools",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), LogQuery),
    responses(
        (status = 200, description = "The last lines of the agent's log (streamed with `follow=true`)", content_type = "text/plain", body = String),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "A connected agent: its log is its own", body = ErrorBody),
    ),
)]
pub async fn logs(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let name = match state.fleet.lock().agent(id) {
        Some(a) if a.managed.as_ref().is_some_and(|m| m.host.is_some()) => {
            let host = a.managed.as_ref().and_then(|m| m.host.as_deref());
            return Err(ApiError::conflict(format!(
                "agent {} runs on host {}: its log is there, in logs/{}.log under the host's work directory (`flotilla host --work-dir`)",
                a.name,
                host.unwrap_or_default(),
                a.name
            )));
        }
        Some(a) if a.managed.is_some() => a.name.clone(),
        Some(a) => {
            return Err(ApiError::conflict(format!(
                "agent {} is a connected agent: Flotilla does not run it, so it keeps no logs of it",
                a.name
            )));
        }
        None => return Err(ApiError::not_found(format!("agent {id} not found"))),
    };
    let path = state.log_path(&name);
    let tail = q.tail.unwrap_or(200).min(100_000);
    let head = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || crate::logs::tail_lines(&path, tail))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))?
    };
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((text_plain, head.text).into_response());
    }
    let stream = crate::logs::follow(path, head, state.shutdown.clone());
    Ok((text_plain, Body::from_stream(stream)).into_response())
}
