//! The event log, live: `GET /events/stream` (server-sent events) and `GET /events/ws`
//! (WebSocket), with the filters of `GET /events`.
//!
//! A follower first replays the stored events after `after` (or the SSE `Last-Event-ID`), then
//! follows the bus, where every committed batch's events are published. The bus only wakes it:
//! payloads are split per channel and published by each request after its own commit, so they
//! may arrive out of sequence order, and a publish may be dropped. On each wake-up (a burst
//! drained into one), after a gap, and once a second anyway, the follower reads the store after
//! the highest sequence number it delivered. A store read sees a prefix of the commits, which
//! are in sequence order, so no event is skipped and none is delivered twice.

use flotilla_core::api::ErrorBody;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flotilla_bus::{Channel, Delivery, Subscription};
use flotilla_core::Event;
use flotilla_store::EventFilter;
use serde::Serialize;

use super::system::{EventQuery, event_filter, read_events};
use crate::access::StreamPermit;
use crate::auth::{Principal, WS_PROTOCOL};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, ApiWebSocket};
use crate::state::AppState;

/// Events read from the store at once while catching up.
const PAGE: usize = 1000;

/// How often a follower reads the store after what it delivered, whatever the bus said.
const RESYNC: Duration = Duration::from_secs(1);

/// Follows the event log for one client.
struct Follower {
    state: AppState,
    filter: EventFilter,
    sub: Option<Subscription>,
    /// The highest sequence number delivered (or asked to start after).
    last: u64,
    /// The last store read filled a page: more is stored, read it without waiting.
    behind: bool,
    resync: tokio::time::Interval,
}

impl Follower {
    async fn start(state: AppState, mut filter: EventFilter) -> Follower {
        let pattern = match filter.swarm {
            Some(s) => flotilla_bus::swarm_pattern(&s.to_string()),
            None => "swarm:*".to_owned(),
        };
        // Subscribed before the first read of the store, so that nothing falls in between.
        let sub = state.bus.bus().subscribe(&pattern).await.ok();
        let last = filter.after;
        filter.latest = false;
        // The first resync one period on: the caller reads the store right after starting.
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Follower {
            state,
            filter,
            sub,
            last,
            behind: false,
            resync,
        }
    }

    /// The stored events after the last delivered, up to a page.
    async fn catch_up(&mut self) -> Result<Vec<Event>, ApiError> {
        let filter = EventFilter {
            after: self.last,
            ..self.filter.clone()
        };
        let events = read_events(&self.state, filter, PAGE).await?;
        self.behind = events.len() == PAGE;
        if let Some(e) = events.last() {
            self.last = e.seq;
        }
        Ok(events)
    }

    /// The next events to deliver, in order; `None` when the coordinator shuts down.
    async fn next(&mut self) -> Option<Result<Vec<Event>, ApiError>> {
        let mut shutdown = self.state.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return None;
            }
            if self.behind {
                return Some(self.catch_up().await);
            }
            let delivery = async {
                match self.sub.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                d = delivery => d,
                _ = self.resync.tick() => Some(Delivery::Gap),
                _ = shutdown.changed() => return None,
            };
            match woke {
                // The bus ended (shut down): the store alone, at each resync.
                None => {
                    self.sub = None;
                    continue;
                }
                Some(Delivery::Message { channel, .. }) if !is_event_channel(&channel) => continue,
                Some(_) => {}
            }
            // One store read serves every wake-up already queued.
            if let Some(sub) = self.sub.as_mut() {
                while sub.try_next().is_some() {}
            }
            let events = self.catch_up().await;
            if events.as_ref().map_or(true, |e| !e.is_empty()) {
                return Some(events);
            }
        }
    }
}

/// Whether the coordinator publishes events on a channel (not messages or inbox wake-ups).
fn is_event_channel(channel: &str) -> bool {
    !matches!(
        Channel::parse(channel),
        Some(Channel::Agent(..) | Channel::Messages(_)) | None
    )
}

/// Where to start: `after`, or the `Last-Event-ID` a reconnecting SSE client sends.
fn start_after(headers: &HeaderMap, filter: &mut EventFilter) -> Result<(), ApiError> {
    if let Some(id) = headers.get("last-event-id") {
        let seq = id
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event's seq"))?;
        filter.after = filter.after.max(seq);
    }
    Ok(())
}

/// `GET /events/stream?swarm=&type=&agent=&task=&after=`: the events after `after` (or
/// `Last-Event-ID`), then every new one as it is committed, as server-sent events
/// (`event: event`, `id:` its seq, `data:` the event).
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "events",
    params(EventQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event (sent by a reconnecting client)")),
    responses(
        (status = 200, description = "Server-sent events `event` (id: the seq), then each new one", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Response> {
    let mut filter = event_filter(&state, &who, &q)?;
    start_after(&headers, &mut filter)?;
    let mut follower = Follower::start(state, filter).await;
    let first = follower.catch_up().await?;
    let stream = async_stream::stream! {
        let mut batch: Option<Result<Vec<Event>, ApiError>> = Some(Ok(first));
        while let Some(events) = batch {
            match events {
                Ok(events) => {
                    for e in events {
                        if let Ok(json) = serde_json::to_string(&e) {
                            yield Ok::<_, Infallible>(
                                SseEvent::default().event("event").id(e.seq.to_string()).data(json),
                            );
                        }
                    }
                }
                Err(e) => {
                    yield Ok(SseEvent::default().event("error").data(e.message));
                    break;
                }
            }
            batch = follower.next().await;
        }
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// What the event WebSocket sends.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame<'a> {
    /// Events, in log order.
    Events { events: &'a [Event] },
    /// The store could not be read; the socket closes.
    Error { message: &'a str },
}

/// `GET /events/ws?swarm=&type=&agent=&task=&after=`: the same as `/events/stream`, as
/// WebSocket text frames `{"type": "events", "events": [...]}`. A browser, which cannot set
/// headers on a WebSocket, authenticates with the subprotocols `flotilla, bearer.<token>`;
/// the answer picks `flotilla` (see [`crate::access::authorize`]).
#[utoipa::path(
    get,
    path = "/api/v1/events/ws",
    tag = "events",
    params(EventQuery),
    responses(
        (status = 101, description = "A WebSocket: frames `{\"type\": \"events\", \"events\": [...]}`"),
        (status = 404, description = "No such swarm", body = ErrorBody),
        (status = 426, description = "upgrade_required: the connection cannot be upgraded to a WebSocket", body = ErrorBody),
    ),
)]
pub async fn socket(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(permit): Extension<Arc<StreamPermit>>,
    ApiQuery(q): ApiQuery<EventQuery>,
    ApiWebSocket(upgrade): ApiWebSocket,
) -> ApiResult<Response> {
    let filter = event_filter(&state, &who, &q)?;
    let follower = Follower::start(state, filter).await;
    Ok(upgrade
        .protocols([WS_PROTOCOL])
        .on_upgrade(move |ws| async move {
            // The token's slot stays taken while the socket lives.
            let _permit = permit;
            run_socket(follower, ws).await
        }))
}

async fn run_socket(mut follower: Follower, mut ws: WebSocket) {
    let mut batch = Some(follower.catch_up().await);
    while let Some(events) = batch {
        let text = match &events {
            Ok(events) if events.is_empty() => None,
            Ok(events) => serde_json::to_string(&Frame::Events { events }).ok(),
            Err(e) => serde_json::to_string(&Frame::Error {
                message: &e.message,
            })
            .ok(),
        };
        if let Some(text) = text
            && ws.send(WsMessage::Text(text.into())).await.is_err()
        {
            return;
        }
        if events.is_err() {
            let _ = ws.send(WsMessage::Close(None)).await;
            return;
        }
        // The client may only close; anything else it sends is ignored.
        batch = tokio::select! {
            b = follower.next() => b,
            m = ws.recv() => match m {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => Some(Ok(Vec::new())),
            },
        };
    }
    let _ = ws.send(WsMessage::Close(None)).await;
}
