//! `/tasks` and `/swarms/{swarm}/tasks`: submit, list, show (and wait), lookup, cancel,
//! retry, and an agent's progress, completion and failure reports.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_core::api::ErrorBody;
use flotilla_core::api::{
    BatchSubmitted, CancelRequest, LookupRequest, LookupResponse, Page, RetryRequest,
};
use flotilla_core::fleet::KnownTasks;
use flotilla_core::{
    AgentId, CompletionReport, CoreError, FailureReport, Progress, SwarmId, Task, TaskId, TaskSpec,
    TaskStatus, Timestamp,
};
use flotilla_store::TaskFilter;
use serde::Deserialize;

use super::{WaitQuery, check_limit, read};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson, RawJson, parse_id, parse_json};
use crate::state::AppState;

/// A task from memory, once what memory shows of it is durable (a client told a task finished
/// may read its events and result from the store at once), else from the store.
async fn find_task(state: &AppState, id: TaskId) -> ApiResult<Option<Task>> {
    let (task, seen) = {
        let fleet = state.fleet.lock();
        (fleet.task(id).cloned(), state.writer.last_submitted())
    };
    match task {
        Some(t) => {
            state.durable(seen).await?;
            Ok(Some(t))
        }
        None => read(state, move |r| r.get_task(id)).await,
    }
}

/// `POST /swarms/{swarm}/tasks`: one task (an object) or a batch (an array).
#[utoipa::path(
    post,
    path = "/api/v1/swarms/{swarm}/tasks",
    tag = "tasks",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    request_body(content = super::openapi::TaskSubmission, content_type = "application/json"),
    responses(
        (status = 201, description = "The task, or for an array `{\"tasks\": [...]}` in input order", body = super::openapi::TaskSubmitted),
        (status = 200, description = "The existing task whose idempotency key this repeats", body = Task),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 409, description = "A dependency or the submission does not fit the state", body = ErrorBody),
    ),
)]
pub async fn submit(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    RawJson(body): RawJson,
) -> ApiResult<Response> {
    let (specs, is_batch) = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => (parse_json::<Vec<TaskSpec>>(&body)?, true),
        Some(_) => (vec![parse_json::<TaskSpec>(&body)?], false),
        None => {
            return Err(ApiError::bad_request(
                "the request body is empty; send a task or an array of tasks",
            ));
        }
    };
    let swarm_id = state.fleet.lock().resolve_swarm(&swarm)?;
    if let Some((below, why)) = state.resources.shed_below()
        && let Some(low) = specs
            .iter()
            .map(|s| s.priority)
            .filter(|&p| p < below)
            .min()
    {
        return Err(ApiError::unavailable(format!(
            "the coordinator is shedding tasks below priority {below} under resource pressure {why}; a task of priority {low} was refused (nothing of this submission was accepted): retry later, or submit at priority {below} or above"
        )));
    }
    let ids: Vec<TaskId> = (0..specs.len())
        .map(|_| TaskId(uuid::Uuid::now_v7()))
        .collect();
    let (outcome, mut tasks) =
        with_known_tasks(&state, &swarm, swarm_id, &specs, |f, known, now| {
            let outcome = f.submit_tasks(&swarm, specs.clone(), &ids, known, now)?;
            let tasks: Vec<Option<Task>> =
                outcome.iter().map(|s| f.task(s.task).cloned()).collect();
            Ok((outcome, tasks))
        })
        .await?;
    // An idempotent repeat of a task that has left memory is read from the store.
    let gone: Vec<TaskId> = tasks
        .iter()
        .zip(&outcome)
        .filter(|(slot, _)| slot.is_none())
        .map(|(_, s)| s.task)
        .collect();
    if !gone.is_empty() {
        let stored = read(&state, move |r| r.get_tasks(&gone)).await?;
        for (slot, s) in tasks.iter_mut().zip(&outcome) {
            if slot.is_none() {
                *slot = stored.iter().find(|t| t.id == s.task).cloned();
            }
        }
    }
    let tasks: Vec<Task> = tasks.into_iter().flatten().collect();
    if is_batch {
        return Ok((StatusCode::CREATED, Json(BatchSubmitted { tasks })).into_response());
    }
    let status = if outcome[0].created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let task = tasks
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("submitted task vanished"))?;
    Ok((status, Json(task)).into_response())
}

/// Runs a command that submits `specs` (a submission, a delegation) with what they need from
/// the store: tasks they name that left memory, and the tasks behind idempotency keys no longer
/// in memory. The lookups run without the fleet lock; if a task left memory in between, the
/// command finds a lookup missing, and the lookup runs again.
pub(super) async fn with_known_tasks<T>(
    state: &AppState,
    swarm: &str,
    swarm_id: SwarmId,
    specs: &[TaskSpec],
    mut command: impl FnMut(&mut flotilla_core::Fleet, &KnownTasks, Timestamp) -> Result<T, CoreError>,
) -> Result<T, ApiError> {
    let mut looked_up: (Vec<TaskId>, Vec<String>) = (Vec::new(), Vec::new());
    let mut known = KnownTasks::default();
    loop {
        let needed = state.fleet.lock().submission_lookups(swarm, specs);
        let (new_ids, new_keys) = unseen(&needed, &looked_up);
        if !new_ids.is_empty() || !new_keys.is_empty() {
            let (found, by_key) =
                lookup_stored(state, swarm_id, new_ids.clone(), new_keys.clone()).await?;
            // Only finished tasks leave memory; anything else read here is a stale row.
            known.statuses.extend(
                found
                    .into_iter()
                    .filter(|t| t.status().is_terminal())
                    .map(|t| (t.id, t.status())),
            );
            known.idempotency.extend(by_key);
            looked_up.0.extend(new_ids);
            looked_up.1.extend(new_keys);
        }
        let attempt = state
            .apply(|f, now| {
                let (again_ids, again_keys) =
                    unseen(&f.submission_lookups(swarm, specs), &looked_up);
                if !again_ids.is_empty() || !again_keys.is_empty() {
                    return Ok(None);
                }
                command(f, &known, now).map(Some)
            })
            .await?;
        if let Some(done) = attempt {
            return Ok(done);
        }
    }
}

/// The ids and keys of `needed` not in `seen`.
fn unseen(
    needed: &(Vec<TaskId>, Vec<String>),
    seen: &(Vec<TaskId>, Vec<String>),
) -> (Vec<TaskId>, Vec<String>) {
    (
        needed
            .0
            .iter()
            .filter(|i| !seen.0.contains(i))
            .copied()
            .collect(),
        needed
            .1
            .iter()
            .filter(|k| !seen.1.contains(k))
            .cloned()
            .collect(),
    )
}

/// Reads tasks by id, and by idempotency key in a swarm, from the store.
async fn lookup_stored(
    state: &AppState,
    swarm: flotilla_core::SwarmId,
    ids: Vec<TaskId>,
    keys: Vec<String>,
) -> ApiResult<(Vec<Task>, Vec<(String, (TaskId, TaskStatus))>)> {
    read(state, move |r| {
        let found = if ids.is_empty() {
            Vec::new()
        } else {
            r.get_tasks(&ids)?
        };
        let mut by_key = Vec::new();
        for key in keys {
            if let Some(t) = r.find_task_by_idempotency_key(swarm, &key)? {
                by_key.push((key, (t.id, t.status())));
            }
        }
        Ok((found, by_key))
    })
    .await
}

/// Filters and paging of task lists.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskListQuery {
    /// Only this swarm (id or name).
    #[serde(default)]
    swarm: Option<String>,
    /// Only this status.
    #[serde(default)]
    status: Option<String>,
    /// Only this type.
    #[serde(default, rename = "type")]
    task_type: Option<String>,
    /// Only this agent (id).
    #[serde(default)]
    agent: Option<String>,
    /// How many items at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_tasks(
    state: &AppState,
    who: &Principal,
    swarm: Option<String>,
    q: TaskListQuery,
) -> ApiResult<Json<Page<Task>>> {
    let limit = check_limit(q.limit)?;
    let filter = TaskFilter {
        swarm: super::listed_swarm(state, who, swarm.as_deref())?,
        status: q
            .status
            .as_deref()
            .map(str::parse::<TaskStatus>)
            .transpose()?,
        task_type: q.task_type,
        agent: q.agent.as_deref().map(parse_id::<AgentId>).transpose()?,
    };
    let cursor = q.cursor;
    let page = read(state, move |r| {
        r.list_tasks(&filter, limit, cursor.as_deref())
    })
    .await?;
    Ok(Json(page))
}

/// `GET /swarms/{swarm}/tasks`
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/tasks",
    tag = "tasks",
    params(("swarm" = String, Path, description = "The swarm's id or name"), TaskListQuery),
    responses(
        (status = 200, description = "A page of the swarm's tasks, newest first", body = Page<Task>),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn list_in_swarm(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(q): ApiQuery<TaskListQuery>,
) -> ApiResult<Json<Page<Task>>> {
    if q.swarm.is_some() {
        return Err(ApiError::bad_request(
            "the swarm is in the path; leave out ?swarm=",
        ));
    }
    list_tasks(&state, &who, Some(swarm), q).await
}

/// `GET /tasks`
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(TaskListQuery),
    responses(
        (status = 200, description = "A page of tasks, newest first", body = Page<Task>),
        (status = 404, description = "No such swarm (`swarm=`)", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(mut q): ApiQuery<TaskListQuery>,
) -> ApiResult<Json<Page<Task>>> {
    let swarm = q.swarm.take();
    list_tasks(&state, &who, swarm, q).await
}

/// `POST /tasks/lookup`
#[utoipa::path(
    post,
    path = "/api/v1/tasks/lookup",
    tag = "tasks",
    request_body(content = LookupRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The tasks found and the ids missing", body = LookupResponse),
    ),
)]
pub async fn lookup(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<LookupRequest>,
) -> ApiResult<Json<LookupResponse>> {
    if req.ids.len() > 10_000 {
        return Err(ApiError::bad_request(
            "look up at most 10000 tasks at a time",
        ));
    }
    let mut items = Vec::with_capacity(req.ids.len());
    let mut elsewhere = Vec::new();
    let seen = {
        let fleet = state.fleet.lock();
        for id in &req.ids {
            match fleet.task(*id) {
                Some(t) => items.push(t.clone()),
                None => elsewhere.push(*id),
            }
        }
        state.writer.last_submitted()
    };
    // What memory shows is answered once it is durable, as in `find_task`.
    if !items.is_empty() {
        state.durable(seen).await?;
    }
    let mut missing = Vec::new();
    if !elsewhere.is_empty() {
        let asked = elsewhere.clone();
        let stored = read(&state, move |r| r.get_tasks(&asked)).await?;
        let found: std::collections::HashSet<TaskId> = stored.iter().map(|t| t.id).collect();
        missing = elsewhere
            .into_iter()
            .filter(|id| !found.contains(id))
            .collect();
        items.extend(stored);
    }
    // A swarm-limited token finds other swarms' tasks missing, as if they did not exist.
    if who.swarm().is_some() {
        let (seen, hidden): (Vec<Task>, Vec<Task>) =
            items.into_iter().partition(|t| who.sees(t.swarm_id));
        items = seen;
        missing.extend(hidden.into_iter().map(|t| t.id));
    }
    Ok(Json(LookupResponse { items, missing }))
}

/// `GET /tasks/{id}?wait=SECONDS`
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id (a UUID)"), WaitQuery),
    responses(
        (status = 200, description = "The task (once finished, or when the wait ends)", body = Task),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Task>> {
    let id: TaskId = parse_id(&id)?;
    let wait = q.duration()?;
    let deadline = tokio::time::Instant::now() + wait;
    let guard = (!wait.is_zero()).then(|| state.waiters.enter_task(&state, id));
    let mut shutdown = state.shutdown.clone();
    loop {
        let notified = guard.as_ref().map(|g| g.notify.notified());
        tokio::pin!(notified);
        if let Some(n) = notified.as_mut().as_pin_mut() {
            n.enable();
        }
        let task = find_task(&state, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
        if let Some(agent) = who.agent()
            && task.state.agent_id() != Some(agent)
        {
            return Err(ApiError::forbidden(format!(
                "an agent token can read only the tasks of its own agent ({agent})"
            )));
        }
        if task.status().is_terminal() || wait.is_zero() || *shutdown.borrow() {
            return Ok(Json(task));
        }
        tokio::select! {
            _ = async { if let Some(n) = notified.as_mut().as_pin_mut() { n.await } } => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(task)),
            _ = shutdown.changed() => return Ok(Json(task)),
        }
    }
}

/// `POST /tasks/{id}/cancel`
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id (a UUID)")),
    request_body(content = Option<CancelRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The task, cancelled", body = Task),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has finished", body = ErrorBody),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(req): OptionalJson<CancelRequest>,
) -> ApiResult<Json<Task>> {
    let id: TaskId = parse_id(&id)?;
    let result = state
        .apply(|f, now| f.cancel_task(id, req.reason, now).cloned())
        .await;
    finished_elsewhere(&state, id, result).await.map(Json)
}

/// `POST /tasks/{id}/retry`
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/retry",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id (a UUID)")),
    request_body(content = Option<RetryRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The task, queued again", body = Task),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not failed, dead or cancelled", body = ErrorBody),
    ),
)]
pub async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(req): OptionalJson<RetryRequest>,
) -> ApiResult<Json<Task>> {
    let id: TaskId = parse_id(&id)?;
    let in_memory = state.fleet.lock().task(id).is_some();
    let stored = if in_memory {
        None
    } else {
        read(&state, move |r| r.get_task(id)).await?
    };
    let task = state
        .apply(|f, now| f.retry_task(id, req.max_attempts, stored, now).cloned())
        .await?;
    Ok(Json(task))
}

/// The agent a report is made for: the caller if it is an agent; for the administrator, the
/// agent holding the task.
fn reporter(state: &AppState, who: &Principal, task: TaskId) -> ApiResult<AgentId> {
    if let Some(agent) = who.agent() {
        return Ok(agent);
    }
    let fleet = state.fleet.lock();
    match fleet.task(task) {
        Some(t) => t.state.agent_id().ok_or_else(|| {
            ApiError::conflict(format!(
                "task {task} is {}, not running on any agent",
                t.status()
            ))
        }),
        None => Ok(AgentId(uuid::Uuid::nil())),
    }
}

/// A report about a task no longer in memory is answered from the store: 409 if the task
/// exists (it finished long ago), else 404.
async fn finished_elsewhere(
    state: &AppState,
    id: TaskId,
    result: ApiResult<Task>,
) -> ApiResult<Task> {
    match result {
        Err(e) if e.status == StatusCode::NOT_FOUND && e.message.starts_with("task ") => {
            match read(state, move |r| r.get_task(id)).await? {
                Some(t) => Err(CoreError::conflict(format!(
                    "task {id} is already {}; this report was not recorded",
                    t.status()
                ))
                .into()),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// `POST /tasks/{id}/progress`
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/progress",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id (a UUID)")),
    request_body(content = Progress, content_type = "application/json"),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not running on this agent", body = ErrorBody),
    ),
)]
pub async fn progress(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(report): ApiJson<Progress>,
) -> ApiResult<Json<Task>> {
    let id: TaskId = parse_id(&id)?;
    let agent = reporter(&state, &who, id)?;
    let result = state
        .apply(|f, now| f.report_progress(agent, id, report, now).cloned())
        .await;
    finished_elsewhere(&state, id, result).await.map(Json)
}

/// `POST /tasks/{id}/complete`
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/complete",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id (a UUID)")),
    request_body(content = Option<CompletionReport>, content_type = "application/json"),
    responses(
        (status = 200, description = "The task, completed", body = Task),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not running on this agent, or another result was recorded", body = ErrorBody),
    ),
)]
pub async fn complete(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(report): OptionalJson<CompletionReport>,
) -> ApiResult<Json<Task>> {
    let id: TaskId = parse_id(&id)?;
    let agent = reporter(&state, &who, id)?;
    let repeat = report.clone();
    let result = state
        .apply(|f, now| f.complete_task(agent, id, report, now).cloned())
        .await;
    // The same completion, repeated after the task left memory, is answered from the store
    // exactly as the core answers it while the task is in memory.
    if matches!(&result, Err(e) if e.status == StatusCode::NOT_FOUND)
        && let Some(stored) = read(&state, move |r| r.get_task(id)).await?
        && let Some(check) = stored.repeated_completion(agent, &repeat)
    {
        check?;
        return Ok(Json(stored));
    }
    finished_elsewhere(&state, id, result).await.map(Json)
}

/// `POST /tasks/{id}/fail`
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/fail",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id (a UUID)")),
    request_body(content = FailureReport, content_type = "application/json"),
    responses(
        (status = 200, description = "The task, failed or queued for a retry", body = Task),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not running on this agent", body = ErrorBody),
    ),
)]
pub async fn fail(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(report): ApiJson<FailureReport>,
) -> ApiResult<Json<Task>> {
    let id: TaskId = parse_id(&id)?;
    let agent = reporter(&state, &who, id)?;
    let result = state
        .apply(|f, now| f.fail_task(agent, id, report, now).cloned())
        .await;
    finished_elsewhere(&state, id, result).await.map(Json)
}
