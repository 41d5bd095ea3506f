//! `/swarms/{swarm}/topology` (the graph, as JSON or Graphviz DOT, and changing it live) and
//! `/tasks/{id}/delegate` (splitting a task into subtasks down a hierarchy).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use flotilla_core::TaskId;
use flotilla_core::api::ErrorBody;
use flotilla_core::topology::{TopologyConfig, TopologyView};
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, parse_id};
use crate::state::AppState;

/// `?format=` of the topology.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `json` (default) or `dot`.
    #[serde(default)]
    format: Option<String>,
}

/// `GET /swarms/{swarm}/topology`: the graph (nodes with roles, edges, leader, the ring's
/// token); `?format=dot` for Graphviz. Agents may read their own swarm's.
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/topology",
    tag = "topology",
    params(("swarm" = String, Path, description = "The swarm's id or name"), FormatQuery),
    responses(
        (status = 200, description = "The graph; with `format=dot`, Graphviz text (`text/vnd.graphviz`)", content((TopologyView = "application/json"), (String = "text/vnd.graphviz"))),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(q): ApiQuery<FormatQuery>,
) -> ApiResult<Response> {
    let view = {
        let fleet = state.fleet.lock();
        let id = fleet.resolve_swarm(&swarm)?;
        if let Some(agent) = who.agent()
            && fleet.agent(agent).is_none_or(|a| a.swarm_id != id)
        {
            return Err(ApiError::forbidden(
                "an agent may read only its own swarm's topology",
            ));
        }
        fleet
            .topology_view(id, state.now())
            .ok_or_else(|| ApiError::not_found(format!("swarm {swarm:?} not found")))?
    };
    render(view, q.format.as_deref())
}

fn render(view: TopologyView, format: Option<&str>) -> ApiResult<Response> {
    match format {
        None | Some("json") => Ok(Json(view).into_response()),
        Some("dot") => Ok((
            [(CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            view.to_dot(),
        )
            .into_response()),
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?} is not one of: json, dot"
        ))),
    }
}

/// `PUT /swarms/{swarm}/topology`: changes the topology live. Roles are reassigned at once,
/// tasks in flight are untouched, and a `topology_changed` event records it.
#[utoipa::path(
    put,
    path = "/api/v1/swarms/{swarm}/topology",
    tag = "topology",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    request_body(content = flotilla_core::api::TopologyChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The new graph", body = TopologyView),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiJson(change): ApiJson<flotilla_core::api::TopologyChange>,
) -> ApiResult<Json<TopologyView>> {
    let view = state
        .apply(|f, now| {
            let current = f.swarm(&swarm)?.config.topology.clone();
            let config = match &change.config {
                None => None,
                Some(patch) => Some(merge(&current, patch)?),
            };
            f.set_topology(&swarm, change.topology, config, now)
        })
        .await?;
    Ok(Json(view))
}

/// Overlays a partial settings document on the current settings.
fn merge(
    current: &TopologyConfig,
    patch: &serde_json::Value,
) -> Result<TopologyConfig, flotilla_core::CoreError> {
    let serde_json::Value::Object(patch) = patch else {
        return Err(flotilla_core::CoreError::invalid(
            "config must be an object of sections: star, mesh, hierarchical, ring",
        ));
    };
    let mut merged = serde_json::to_value(current).expect("settings serialize");
    for (section, fields) in patch {
        let Some(target) = merged.get_mut(section) else {
            return Err(flotilla_core::CoreError::invalid(format!(
                "config.{section} is not a topology; expected star, mesh, hierarchical or ring"
            )));
        };
        match (target, fields) {
            (serde_json::Value::Object(t), serde_json::Value::Object(f)) => {
                for (k, v) in f {
                    t.insert(k.clone(), v.clone());
                }
            }
            _ => {
                return Err(flotilla_core::CoreError::invalid(format!(
                    "config.{section} must be an object"
                )));
            }
        }
    }
    serde_json::from_value(merged)
        .map_err(|e| flotilla_core::CoreError::invalid(format!("invalid topology settings: {e}")))
}

/// `POST /tasks/{id}/delegate`: the agent running the task splits it into subtasks, taken by
/// its children in the hierarchy; their results conclude the task.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/delegate",
    tag = "topology",
    params(("id" = uuid::Uuid, Path, description = "The task's id (a UUID)")),
    request_body(content = flotilla_core::api::DelegateRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The task (now blocked) and its subtasks", body = flotilla_core::api::Delegated),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not running on that agent", body = ErrorBody),
    ),
)]
pub async fn delegate(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<flotilla_core::api::DelegateRequest>,
) -> ApiResult<(StatusCode, Json<flotilla_core::api::Delegated>)> {
    let task: TaskId = parse_id(&id)?;
    let agent = match (who.agent(), body.agent_id) {
        (Some(a), None) => a,
        (Some(a), Some(b)) if a == b => a,
        (Some(_), Some(_)) => {
            return Err(ApiError::forbidden(
                "an agent token delegates only its own tasks: leave agent_id out",
            ));
        }
        (None, Some(b)) => b,
        (None, None) => {
            return Err(ApiError::bad_request(
                "with the admin token, name the agent running the task in agent_id",
            ));
        }
    };
    let ids: Vec<TaskId> = body
        .subtasks
        .iter()
        .map(|_| TaskId(uuid::Uuid::now_v7()))
        .collect();
    let swarm_id = {
        let fleet = state.fleet.lock();
        fleet
            .task(task)
            .map(|t| t.swarm_id)
            .ok_or_else(|| ApiError::not_found(format!("task {task} not found or not running")))?
    };
    let swarm = swarm_id.to_string();
    let (task, subtasks) = super::tasks::with_known_tasks(
        &state,
        &swarm,
        swarm_id,
        &body.subtasks,
        |f, known, now| {
            let subs = f.delegate_task(agent, task, body.subtasks.clone(), &ids, known, now)?;
            let t = f.task(task).expect("delegated task in memory").clone();
            Ok((t, subs))
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(flotilla_core::api::Delegated { task, subtasks }),
    ))
}
