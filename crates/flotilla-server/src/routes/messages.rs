//! The message bus's API: the AgentFlow seed's `/agents/{id}/messages` operations (history,
//! send, broadcast, clear, update status), receiving by long poll and WebSocket, topic
//! subscriptions and publishing, swarm broadcasts, the dead-letter list and its retry, and a
//! live stream of a swarm's traffic (server-sent events, from the bus).
//!
//! Every send passes the message middleware (size limit, audit, …) and the topology's rules in
//! the core; it is durable before it is answered.

use flotilla_core::api::ErrorBody;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flotilla_bus::Delivery;
use flotilla_core::api::{
    ClientFrame, Exchange, MessageStatusUpdate, MessagesUpdated, Page, ServerFrame, Subscriptions,
};
use flotilla_core::{
    AgentId, Message, MessageId, MessageKind, MessageSpec, MessageStatus, Sent, SwarmId,
};
use flotilla_store::{Direction, MessageFilter};
use serde::Deserialize;

use super::{check_count, check_limit, read};
use crate::auth::Principal;
use crate::bus::inbox_channel;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, ApiWebSocket, parse_id};
use crate::middleware::{SendAction, SendContext};
use crate::state::AppState;

/// Most messages one update (ack, nack, …) takes at once.
const MAX_TAKE: usize = 1000;

/// The agent's swarm (it must be registered).
fn swarm_of(state: &AppState, agent: AgentId) -> Result<SwarmId, ApiError> {
    state
        .fleet
        .lock()
        .agent(agent)
        .map(|a| a.swarm_id)
        .ok_or_else(|| ApiError::not_found(format!("agent {agent} not found")))
}

/// Runs the middleware's `before_send`, then `send` under the fleet, then `after_send`.
async fn send_through(
    state: &AppState,
    ctx: SendContext<'_>,
    spec: MessageSpec,
    send: impl FnOnce(
        &mut flotilla_core::Fleet,
        MessageSpec,
        flotilla_core::Timestamp,
    ) -> Result<Sent, flotilla_core::CoreError>,
) -> Result<Sent, ApiError> {
    let middleware = state.middleware.read().clone();
    for m in &middleware {
        m.before_send(&ctx, &spec)?;
    }
    let sent = state.apply(|f, now| send(f, spec, now)).await?;
    for m in &middleware {
        m.after_send(&ctx, &sent.messages);
    }
    Ok(sent)
}

/// `?wait=` of a send: for a request, how long to wait for its response.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// How long to wait, in seconds (fractions allowed), 0 to 60.
    #[serde(default)]
    wait: Option<bool>,
}

/// `POST /agents/{id}/messages`: sends a message to agent `id`, from the calling agent (or an
/// operator, with the admin token). A request with `?wait=true` answers with its response.
#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/messages",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), SendQuery),
    request_body(content = MessageSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "The message, sent", body = Message),
        (status = 200, description = "With `wait=true`: the request and its response", body = flotilla_core::api::Exchange),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "The inbox is full, or a response to a request that no longer waits", body = ErrorBody),
        (status = 504, description = "request_timeout: no response came within the request's timeout", body = ErrorBody),
    ),
)]
pub async fn send(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<SendQuery>,
    ApiJson(spec): ApiJson<MessageSpec>,
) -> ApiResult<Response> {
    let to: AgentId = parse_id(&id)?;
    let from = who.agent();
    let swarm = swarm_of(&state, to)?;
    let wait = q.wait.unwrap_or(false);
    let kind = spec.kind.unwrap_or(MessageKind::Message);
    if wait && kind != MessageKind::Request {
        return Err(ApiError::bad_request(
            "wait=true is for requests (kind \"request\"): only they get a response",
        ));
    }
    let message_id = MessageId(uuid::Uuid::now_v7());
    // Registered before the request exists, so that a quick response is not missed.
    let waiter = wait.then(|| state.waiters.enter_request(&state, message_id));
    let notified = waiter.as_ref().map(|w| w.notify.clone());
    let notified = notified.as_ref().map(|n| n.notified());
    tokio::pin!(notified);
    if let Some(n) = notified.as_mut().as_pin_mut() {
        n.enable();
    }
    let mut spec = spec;
    // A waited request's response comes back on this call, not to an inbox.
    spec.waited = wait;
    let topic = spec.topic.clone();
    let ctx = SendContext {
        action: SendAction::Send,
        swarm,
        from,
        to: Some(to),
        topic: topic.as_deref(),
        token_id: who.token_id(),
        at: state.now(),
    };
    let sent = send_through(&state, ctx, spec, |f, spec, now| {
        f.send_message(message_id, from, to, spec, now)
            .map(|m| Sent {
                messages: vec![m],
                unreachable: 0,
            })
    })
    .await?;
    let request = sent.messages.into_iter().next().expect("one message sent");
    let Some(notified) = notified.as_pin_mut() else {
        return Ok((StatusCode::CREATED, Json(request)).into_response());
    };
    let reply_by = request.reply_by.expect("a request has a deadline");
    let left = Duration::from_millis(
        u64::try_from(reply_by.as_millis() - state.now().as_millis()).unwrap_or(0),
    )
    // The coordinator's timer fires at most a tick late.
    .saturating_add(Duration::from_millis(500));
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        _ = notified => {}
        _ = tokio::time::sleep(left) => {}
        _ = shutdown.changed() => {
            return Err(ApiError::unavailable("the coordinator is shutting down; the request stays sent"));
        }
    }
    let response = find_response(&state, &request).await?;
    let Some(response) = response else {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            format!("no response to request {} came in time", request.id),
        ));
    };
    if response.from.is_none() {
        // The coordinator's stand-in: nobody answered in time, or the request was cleared.
        let why = match response.body.to_value()["error"].as_str() {
            Some("cleared") => "it was cleared from the recipient's inbox",
            _ => "no answer came within its timeout; a later answer will be refused",
        };
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            format!("no response to request {}: {why}", request.id),
        ));
    }
    Ok((StatusCode::OK, Json(Exchange { request, response })).into_response())
}

/// The response to a request, from memory (an operator's) or the store.
async fn find_response(state: &AppState, request: &Message) -> Result<Option<Message>, ApiError> {
    if let Some(r) = state.fleet.lock().response_to(request.id) {
        return Ok(Some(r.clone()));
    }
    let filter = MessageFilter {
        correlation_id: Some(request.id),
        ..MessageFilter::default()
    };
    let page = read(state, move |r| r.list_messages(&filter, 1, None)).await?;
    Ok(page.items.into_iter().next())
}

/// `PUT /agents/{id}/messages`: broadcasts from agent `id` to every agent its topology lets it
/// reach.
#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/messages",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    request_body(content = MessageSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "A broadcast from this agent", body = Sent),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "An inbox is full", body = ErrorBody),
    ),
)]
pub async fn broadcast_from(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(spec): ApiJson<MessageSpec>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let from: AgentId = parse_id(&id)?;
    who.require_agent(from)?;
    let swarm = swarm_of(&state, from)?;
    broadcast(&state, &who, swarm, Some(from), spec).await
}

/// `POST /swarms/{swarm}/messages`: broadcasts to every agent of the swarm (from the calling
/// agent: those it may reach).
#[utoipa::path(
    post,
    path = "/api/v1/swarms/{swarm}/messages",
    tag = "messages",
    params(("swarm" = String, Path, description = "The swarm's id or name")),
    request_body(content = MessageSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "The copies sent and how many agents could not be reached", body = Sent),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 409, description = "An inbox is full", body = ErrorBody),
    ),
)]
pub async fn broadcast_to_swarm(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(swarm): ApiPath<String>,
    ApiJson(spec): ApiJson<MessageSpec>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let swarm = state.fleet.lock().resolve_swarm(&swarm)?;
    broadcast(&state, &who, swarm, who.agent(), spec).await
}

async fn broadcast(
    state: &AppState,
    who: &Principal,
    swarm: SwarmId,
    from: Option<AgentId>,
    spec: MessageSpec,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let ctx = SendContext {
        action: SendAction::Broadcast,
        swarm,
        from,
        to: None,
        topic: None,
        token_id: who.token_id(),
        at: state.now(),
    };
    let sent = send_through(state, ctx, spec, |f, spec, now| {
        let mut ids = std::iter::repeat_with(|| MessageId(uuid::Uuid::now_v7()));
        f.broadcast_message(swarm, from, spec, &mut ids, now)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(sent)))
}

/// `POST /swarms/{swarm}/topics/{topic}`: publishes to a topic's subscribers in the swarm.
#[utoipa::path(
    post,
    path = "/api/v1/swarms/{swarm}/topics/{topic}",
    tag = "messages",
    params(("swarm" = String, Path, description = "The swarm's id or name"), ("topic" = String, Path, description = "The topic")),
    request_body(content = MessageSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "The copies sent to the topic's subscribers", body = Sent),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 409, description = "An inbox is full", body = ErrorBody),
    ),
)]
pub async fn publish(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((swarm, topic)): ApiPath<(String, String)>,
    ApiJson(spec): ApiJson<MessageSpec>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let swarm = state.fleet.lock().resolve_swarm(&swarm)?;
    let from = who.agent();
    let ctx = SendContext {
        action: SendAction::Publish,
        swarm,
        from,
        to: None,
        topic: Some(&topic),
        token_id: who.token_id(),
        at: state.now(),
    };
    let t = topic.clone();
    let sent = send_through(&state, ctx, spec, move |f, spec, now| {
        let mut ids = std::iter::repeat_with(|| MessageId(uuid::Uuid::now_v7()));
        f.publish_message(swarm, from, &t, spec, &mut ids, now)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(sent)))
}

/// Filters of the message history.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// `in`, `out` or `both` (default).
    #[serde(default)]
    direction: Option<String>,
    /// Only this status.
    #[serde(default)]
    status: Option<String>,
    /// Only messages on topics matching this pattern.
    #[serde(default)]
    topic: Option<String>,
    /// How many items at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

impl HistoryQuery {
    fn filter(&self) -> Result<MessageFilter, ApiError> {
        let direction = match self.direction.as_deref() {
            None | Some("both") => Direction::Both,
            Some("in") => Direction::Inbound,
            Some("out") => Direction::Outbound,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "direction {other:?} is not one of: in, out, both"
                )));
            }
        };
        Ok(MessageFilter {
            direction,
            status: self
                .status
                .as_deref()
                .map(str::parse::<MessageStatus>)
                .transpose()?,
            topic: self.topic.clone(),
            ..MessageFilter::default()
        })
    }
}

async fn history(
    state: &AppState,
    filter: MessageFilter,
    q: &HistoryQuery,
) -> ApiResult<Json<Page<Message>>> {
    let limit = check_limit(q.limit)?;
    let cursor = q.cursor.clone();
    let page = read(state, move |r| {
        r.list_messages(&filter, limit, cursor.as_deref())
    })
    .await?;
    Ok(Json(page))
}

/// `GET /agents/{id}/messages`: the agent's messages, sent and received, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/messages",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), HistoryQuery),
    responses(
        (status = 200, description = "A page of the agent's messages, newest first", body = Page<Message>),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn agent_history(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<Message>>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let filter = MessageFilter {
        agent: Some(id),
        ..q.filter()?
    };
    history(&state, filter, &q).await
}

/// `GET /swarms/{swarm}/messages`: a swarm's messages, newest first (`?status=dead`: the
/// dead-letter list).
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/messages",
    tag = "messages",
    params(("swarm" = String, Path, description = "The swarm's id or name"), HistoryQuery),
    responses(
        (status = 200, description = "A page of the swarm's messages, newest first", body = Page<Message>),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn swarm_history(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<Message>>> {
    let swarm = state.fleet.lock().resolve_swarm(&swarm)?;
    if q.direction.is_some() {
        return Err(ApiError::bad_request(
            "direction applies to an agent's messages; use /agents/{id}/messages",
        ));
    }
    let filter = MessageFilter {
        swarm: Some(swarm),
        ..q.filter()?
    };
    history(&state, filter, &q).await
}

/// `GET /messages/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The message's id (a UUID)")),
    responses(
        (status = 200, description = "The message", body = Message),
        (status = 404, description = "No such message", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Message>> {
    let id: MessageId = parse_id(&id)?;
    let live = state.fleet.lock().message(id).cloned();
    let found = match live {
        Some(m) => Some(m),
        None => read(&state, move |r| r.get_message(id)).await?,
    };
    let Some(m) = found else {
        return Err(ApiError::not_found(format!("message {id} not found")));
    };
    if let Some(agent) = who.agent()
        && m.to != Some(agent)
        && m.from != Some(agent)
    {
        return Err(ApiError::forbidden(
            "an agent may read only the messages it sent or received",
        ));
    }
    Ok(Json(m))
}

/// `POST /messages/{id}/retry`: a dead message goes back to its recipient's inbox.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/retry",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The message's id (a UUID)")),
    responses(
        (status = 200, description = "The message, back in its inbox", body = Message),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "The message is not dead", body = ErrorBody),
    ),
)]
pub async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Message>> {
    let id: MessageId = parse_id(&id)?;
    let stored = read(&state, move |r| r.get_message(id)).await?;
    let Some(stored) = stored else {
        if state.fleet.lock().message(id).is_some() {
            return Err(ApiError::conflict(format!(
                "message {id} is still being delivered; only dead messages can be retried"
            )));
        }
        return Err(ApiError::not_found(format!("message {id} not found")));
    };
    let m = state
        .apply(|f, now| f.retry_dead_message(stored, now))
        .await?;
    Ok(Json(m))
}

/// `DELETE /agents/{id}/messages`: empties the agent's inbox (messages it took and has not
/// yet acknowledged stay until it does).
#[utoipa::path(
    delete,
    path = "/api/v1/agents/{id}/messages",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    responses(
        (status = 200, description = "`{\"cleared\": n}`", body = super::openapi::Cleared),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn clear(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let cleared = state.apply(|f, now| f.clear_inbox(id, now)).await?;
    Ok(Json(serde_json::json!({ "cleared": cleared })))
}

/// `PATCH /agents/{id}/messages`
#[utoipa::path(
    patch,
    path = "/api/v1/agents/{id}/messages",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    request_body(content = MessageStatusUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "The messages changed", body = MessagesUpdated),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn update_status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(update): ApiJson<MessageStatusUpdate>,
) -> ApiResult<Json<MessagesUpdated>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    if update.ids.len() > MAX_TAKE {
        return Err(ApiError::bad_request(format!(
            "update at most {MAX_TAKE} messages at once"
        )));
    }
    let updated = match update.status {
        MessageStatus::Acked => ack(&state, id, update.ids).await?,
        MessageStatus::Pending => {
            state
                .apply(|f, now| f.nack_messages(id, &update.ids, now))
                .await?
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "status {:?} cannot be set; use acked (done) or pending (deliver again)",
                other.as_str()
            )));
        }
    };
    Ok(Json(MessagesUpdated { updated }))
}

async fn ack(
    state: &AppState,
    agent: AgentId,
    ids: Vec<MessageId>,
) -> Result<Vec<MessageId>, ApiError> {
    let acked = state
        .apply(|f, now| f.ack_messages(agent, &ids, now))
        .await?;
    let now = state.now();
    for m in state.middleware.read().iter() {
        m.after_ack(agent, &acked, now);
    }
    Ok(acked)
}

/// `?wait=&max=` of a receive.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReceiveQuery {
    /// How long to wait, in seconds (fractions allowed), 0 to 60.
    #[serde(default)]
    #[param(minimum = 0, maximum = 60)]
    wait: Option<f64>,
    /// How many messages at most, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    max: Option<usize>,
}

impl ReceiveQuery {
    fn wait(&self) -> Result<Duration, ApiError> {
        super::WaitQuery { wait: self.wait }.duration()
    }

    fn max(&self) -> Result<usize, ApiError> {
        check_count("max", self.max)
    }
}

/// `GET /agents/{id}/messages/next?wait=SECONDS&max=N`: the agent's next messages, most
/// urgent first, waiting up to `wait` for one; an empty list when none came. Each must be
/// acknowledged (`PATCH /agents/{id}/messages`) within the swarm's ack timeout.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/messages/next",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), ReceiveQuery),
    responses(
        (status = 200, description = "The messages taken (possibly none), now delivered", body = Vec<Message>),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn receive(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReceiveQuery>,
) -> ApiResult<Json<Vec<Message>>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let wait = q.wait()?;
    let max = q.max()?;
    let swarm = swarm_of(&state, id)?;
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before looking, so that a message arriving in between wakes us. Without the
    // bus (Redis down) the receive still works: it looks again every `POLL_WITHOUT_BUS`.
    let mut sub = if wait.is_zero() {
        None
    } else {
        match state.bus.bus().subscribe(&inbox_channel(swarm, id)).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "bus unavailable: the receive polls");
                None
            }
        }
    };
    let mut shutdown = state.shutdown.clone();
    loop {
        let got = state.apply(|f, now| f.take_messages(id, max, now)).await?;
        if !got.is_empty()
            || wait.is_zero()
            || *shutdown.borrow()
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(Json(got));
        }
        let woken = async {
            match sub.as_mut() {
                Some(s) => s.next().await.is_some(),
                None => {
                    tokio::time::sleep(POLL_WITHOUT_BUS).await;
                    true
                }
            }
        };
        tokio::select! {
            alive = woken => if !alive { sub = None },
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(Vec::new())),
            _ = shutdown.changed() => return Ok(Json(Vec::new())),
        }
    }
}

/// How often a receive or socket without the bus looks at the inbox.
const POLL_WITHOUT_BUS: Duration = Duration::from_millis(250);

fn bus_down(e: flotilla_bus::BusError) -> ApiError {
    ApiError::unavailable(format!(
        "the bus is unavailable ({e}); receive without waiting (wait=0) or retry shortly"
    ))
}

/// `?max_in_flight=` of the WebSocket.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SocketQuery {
    /// Messages unacknowledged at a time, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    max_in_flight: Option<usize>,
}

/// `GET /agents/{id}/messages/ws`: messages pushed to the agent as they arrive (JSON text
/// frames `{"type":"messages","messages":[...]}`), at most `max_in_flight` (100) not yet
/// acknowledged at a time; the agent answers `{"ack":[ids]}` or `{"nack":[ids]}`.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/messages/ws",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)"), SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: frames `{\"type\": \"messages\"|\"updated\"|\"error\", ...}`"),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 426, description = "upgrade_required: the connection cannot be upgraded to a WebSocket", body = ErrorBody),
    ),
)]
pub async fn socket(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(permit): Extension<std::sync::Arc<crate::access::StreamPermit>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<SocketQuery>,
    ApiWebSocket(upgrade): ApiWebSocket,
) -> ApiResult<Response> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let swarm = swarm_of(&state, id)?;
    let max = check_count("max_in_flight", q.max_in_flight)?;
    // Without the bus (Redis down) the socket looks at the inbox every `POLL_WITHOUT_BUS`.
    let sub = state
        .bus
        .bus()
        .subscribe(&inbox_channel(swarm, id))
        .await
        .ok();
    Ok(upgrade
        .protocols([crate::auth::WS_PROTOCOL])
        .on_upgrade(move |ws| async move {
            // The token's slot stays taken while the socket lives.
            let _permit = permit;
            run_socket(state, id, max, sub, ws).await
        }))
}

async fn run_socket(
    state: AppState,
    agent: AgentId,
    max: usize,
    mut sub: Option<flotilla_bus::Subscription>,
    mut ws: WebSocket,
) {
    let mut in_flight: std::collections::HashSet<MessageId> = Default::default();
    let mut shutdown = state.shutdown.clone();
    // A redelivery (not acknowledged in time) comes with no bus wake-up of its own when the
    // agent is full; look again now and then.
    let period = if sub.is_some() {
        Duration::from_secs(1)
    } else {
        POLL_WITHOUT_BUS
    };
    // The first look is the loop's own; the tick comes one period on.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        if in_flight.len() < max {
            let room = max - in_flight.len();
            match state
                .apply(|f, now| f.take_messages(agent, room, now))
                .await
            {
                Ok(got) if !got.is_empty() => {
                    in_flight.extend(got.iter().map(|m| m.id));
                    let frame = ServerFrame::Messages { messages: got };
                    if send_frame(&mut ws, &frame).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = send_frame(&mut ws, &ServerFrame::Error { message: e.message }).await;
                    return;
                }
            }
        }
        let woken = async {
            match sub.as_mut() {
                Some(s) => s.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            alive = woken => if !alive { return },
            _ = tick.tick() => {
                // Messages given back by the coordinator (ack timeout) are in flight no more.
                let fleet = state.fleet.lock();
                in_flight.retain(|m| fleet.message(*m).is_some_and(|m| m.status == MessageStatus::Delivered));
            }
            _ = shutdown.changed() => { let _ = ws.send(WsMessage::Close(None)).await; return }
            frame = ws.recv() => {
                let Some(Ok(frame)) = frame else { return };
                let text = match frame {
                    WsMessage::Text(t) => t,
                    WsMessage::Close(_) => return,
                    _ => continue,
                };
                let parsed: ClientFrame = match serde_json::from_str(text.as_str()) {
                    Ok(f) => f,
                    Err(e) => {
                        let message = format!("not a frame this socket takes ({e}); send {{\"ack\": [ids]}} or {{\"nack\": [ids]}}");
                        if send_frame(&mut ws, &ServerFrame::Error { message }).await.is_err() { return }
                        continue;
                    }
                };
                let mut ids = Vec::new();
                if !parsed.ack.is_empty() {
                    match ack(&state, agent, parsed.ack.clone()).await {
                        Ok(done) => ids.extend(done),
                        Err(e) => { let _ = send_frame(&mut ws, &ServerFrame::Error { message: e.message }).await; return }
                    }
                    for m in &parsed.ack { in_flight.remove(m); }
                }
                if !parsed.nack.is_empty() {
                    match state.apply(|f, now| f.nack_messages(agent, &parsed.nack, now)).await {
                        Ok(done) => ids.extend(done),
                        Err(e) => { let _ = send_frame(&mut ws, &ServerFrame::Error { message: e.message }).await; return }
                    }
                    for m in &parsed.nack { in_flight.remove(m); }
                }
                if send_frame(&mut ws, &ServerFrame::Updated { ids }).await.is_err() { return }
            }
        }
    }
}

async fn send_frame(ws: &mut WebSocket, frame: &ServerFrame) -> Result<(), axum::Error> {
    let text = serde_json::to_string(frame).unwrap_or_else(|_| "{}".to_owned());
    ws.send(WsMessage::Text(text.into())).await
}

/// `GET /agents/{id}/subscriptions`
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/subscriptions",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    responses(
        (status = 200, description = "The agent's topic subscriptions", body = Subscriptions),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn subscriptions(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Subscriptions>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let fleet = state.fleet.lock();
    let a = fleet
        .agent(id)
        .ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))?;
    Ok(Json(Subscriptions {
        topics: a.subscriptions.clone(),
    }))
}

/// `PUT /agents/{id}/subscriptions`: replaces the agent's topic subscriptions.
#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/subscriptions",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The agent's id (a UUID)")),
    request_body(content = Subscriptions, content_type = "application/json"),
    responses(
        (status = 200, description = "The subscriptions now", body = Subscriptions),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn subscribe(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(subs): ApiJson<Subscriptions>,
) -> ApiResult<Json<Subscriptions>> {
    let id: AgentId = parse_id(&id)?;
    who.require_agent(id)?;
    let topics = state
        .apply(|f, now| f.set_subscriptions(id, subs.topics, now))
        .await?;
    Ok(Json(Subscriptions { topics }))
}

/// `?agent=&topic=&events=` of the traffic stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only messages to or from this agent (id).
    #[serde(default)]
    agent: Option<String>,
    /// Only messages on topics matching this pattern.
    #[serde(default)]
    topic: Option<String>,
    /// Also the swarm's events (`true`), not only its messages.
    #[serde(default)]
    events: Option<bool>,
}

/// `GET /swarms/{swarm}/messages/stream`: the swarm's message traffic as it happens, as
/// server-sent events (`event: message`, data one message; with `events=true` also
/// `event: event`, data one fleet event). A `gap` event says some may have been missed.
#[utoipa::path(
    get,
    path = "/api/v1/swarms/{swarm}/messages/stream",
    tag = "messages",
    params(("swarm" = String, Path, description = "The swarm's id or name"), StreamQuery),
    responses(
        (status = 200, description = "Server-sent events: `message`, `event` (with `events=true`), `gap`", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such swarm or agent", body = ErrorBody),
    ),
)]
pub async fn stream(
    State(state): State<AppState>,
    ApiPath(swarm): ApiPath<String>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<Response> {
    let swarm = state.fleet.lock().resolve_swarm(&swarm)?;
    let agent = q.agent.as_deref().map(parse_id::<AgentId>).transpose()?;
    if let Some(t) = &q.topic {
        flotilla_core::message::validate_pattern(t)?;
    }
    // Only this swarm's channels: its messages, and with `events` the rest of them.
    let pattern = if q.events.unwrap_or(false) {
        flotilla_bus::swarm_pattern(&swarm.to_string())
    } else {
        flotilla_bus::Channel::Messages(swarm.to_string()).name()
    };
    let mut sub = state
        .bus
        .bus()
        .subscribe(&pattern)
        .await
        .map_err(bus_down)?;
    let topic = q.topic.clone();
    let mut shutdown = state.shutdown.clone();
    let stream = async_stream::stream! {
        loop {
            let d = tokio::select! {
                d = sub.next() => d,
                _ = shutdown.changed() => None,
            };
            let Some(d) = d else { break };
            match d {
                Delivery::Gap => yield Ok::<_, Infallible>(SseEvent::default().event("gap").data("messages may have been missed")),
                Delivery::Message { channel, payload } => match flotilla_bus::Channel::parse(&channel) {
                    Some(flotilla_bus::Channel::Messages(_)) => {
                        let Ok(batch) = serde_json::from_slice::<Vec<Message>>(&payload) else { continue };
                        for m in batch {
                            if agent.is_some_and(|a| m.to != Some(a) && m.from != Some(a)) { continue }
                            if let Some(p) = &topic
                                && !m.topic.as_deref().is_some_and(|t| flotilla_core::message::topic_matches(p, t))
                            { continue }
                            if let Ok(json) = serde_json::to_string(&m) {
                                yield Ok(SseEvent::default().event("message").data(json));
                            }
                        }
                    }
                    Some(flotilla_bus::Channel::Agent(..)) | None => continue,
                    Some(_) => {
                        let Ok(batch) = serde_json::from_slice::<Vec<flotilla_core::Event>>(&payload) else { continue };
                        for e in batch {
                            if let Ok(json) = serde_json::to_string(&e) {
                                yield Ok(SseEvent::default().event("event").data(json));
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
