//! Who may call what: every route of the API carries an [`Access`] rule, and [`authorize`]
//! enforces it before the handler runs, then writes the call to the audit log.
//!
//! The rule of a route says the least role a person's token needs (viewer, operator, admin),
//! what the route's target is (the whole fleet, a swarm, an agent, a task, a message, or a list
//! across swarms), whether agent tokens may call it and for what, and whether the route holds
//! its connection open (streams, WebSockets, long polls), which counts against the token's
//! allowance of open connections.
//!
//! Swarm-limited tokens see nothing of other swarms: a target in another swarm answers 404,
//! exactly as a target that does not exist; fleet-wide routes answer 403; lists show only the
//! token's swarm (the handlers filter them by [`Principal::swarm`]).
//!
//! The rules live in one table, `routes::ROUTES`, which also builds the router: a route cannot
//! exist without its rule, and the authorization test walks the same table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flotilla_core::api::AuditEntry;
use flotilla_core::{AgentId, MessageId, SwarmId, TaskId, Timestamp};
use parking_lot::Mutex;

use crate::auth::{Principal, Refusal, Role, bearer_secret, hash_token};
use crate::error::{ApiError, ErrorCode};
use crate::request_id::RequestId;
use crate::state::AppState;

/// What a route acts on, for swarm-limited tokens and agent tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The whole fleet: swarm-limited tokens are refused (403).
    Fleet,
    /// A list across swarms: the handler shows a swarm-limited token only its swarm.
    Listed,
    /// The swarm named by `{swarm}` in the path.
    Swarm,
    /// The agent `{id}`.
    Agent,
    /// The task `{id}`.
    Task,
    /// The message `{id}`.
    Message,
}

/// What agent tokens may do on a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agents {
    /// Nothing: agent tokens are refused (403).
    Refused,
    /// Act for themselves: the agent `{id}` must be the caller.
    Own,
    /// Reach their own swarm: the target must be in the caller's swarm (the topology may
    /// still refuse, in the core).
    SameSwarm,
    /// The handler decides (a task the agent holds, a message it sent or received).
    Handler,
}

/// Whether a route holds its connection open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Answers at once.
    No,
    /// Streams or upgrades to a WebSocket: always counts as an open connection.
    Stream,
    /// Long-polls when asked to wait (`?wait=` other than `0` or `false`).
    LongPoll,
}

/// The rule of one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The least role a person's token needs.
    pub role: Role,
    /// What the route acts on.
    pub target: Target,
    /// What agent tokens may do.
    pub agents: Agents,
    /// Whether successful calls are written to the audit log. Every mutating call is, except
    /// the agent protocol's frequent ones (heartbeats, progress, results, acknowledgements),
    /// whose outcome the event log already records. Refused calls always are.
    pub audited: bool,
    /// Whether it holds its connection open.
    pub hold: Hold,
}

impl Access {
    /// Readable by viewers.
    pub const fn read(target: Target) -> Access {
        Access {
            role: Role::Viewer,
            target,
            agents: Agents::Refused,
            audited: false,
            hold: Hold::No,
        }
    }

    /// Callable by operators; audited.
    pub const fn operate(target: Target) -> Access {
        Access {
            role: Role::Operator,
            audited: true,
            ..Access::read(target)
        }
    }

    /// Callable by administrators; audited.
    pub const fn admin(target: Target) -> Access {
        Access {
            role: Role::Admin,
            audited: true,
            ..Access::read(target)
        }
    }

    /// Agent tokens may call it too, as `agents` says.
    pub const fn agents(self, agents: Agents) -> Access {
        Access { agents, ..self }
    }

    /// Successful calls are not audited (the agent protocol's frequent calls).
    pub const fn quiet(self) -> Access {
        Access {
            audited: false,
            ..self
        }
    }

    /// It holds its connection open.
    pub const fn holds(self, hold: Hold) -> Access {
        Access { hold, ..self }
    }
}

/// What [`authorize`] needs for one route.
#[derive(Clone)]
pub struct Guard {
    /// The coordinator.
    pub state: AppState,
    /// The route's rule.
    pub access: Access,
    /// The route, as the audit log names it: `POST /api/v1/swarms/{swarm}/tasks`.
    pub action: Arc<str>,
}

/// Checks the caller's token against the route's rule, runs the handler, and audits the call.
pub async fn authorize(
    State(guard): State<Guard>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let state = &guard.state;
    let method = req.method().clone();
    // Inside `/api/v1` the router sees the path without its prefix: record the one called.
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path().to_owned(), |u| u.path().to_owned());
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let mut call = Call {
        guard: &guard,
        principal: None,
        method: &method,
        path: &path,
        remote,
    };
    let (principal, hash) = match identify(state, &req) {
        Ok(found) => found,
        // A node of a cluster may not have seen a token another node issued: it asks the
        // shared store once before refusing.
        Err(e) if state.cluster.get().is_some() => {
            match learn_token(state, bearer_secret(&req).ok()).await {
                Some(found) => found,
                None => return call.finish(e.into_response()),
            }
        }
        Err(e) => return call.finish(e.into_response()),
    };
    call.principal = Some(principal.clone());
    if let Some(Err(wait)) = state.limiter.as_ref().map(|l| l.check(&hash)) {
        // Not audited: a token over its rate would flood the log it is meant to protect.
        return rate_limited(wait);
    }
    let params: Vec<(String, String)> = match params {
        Ok(p) => p
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        Err(e) => {
            return call.finish(ApiError::bad_request(e.body_text()).into_response());
        }
    };
    if let Err(e) = check(state, &guard.access, &principal, &params).await {
        return call.finish(e.into_response());
    }
    // A node of a cluster serves the swarms it holds and forwards the rest to their holders.
    if let Some(cluster) = state.cluster.get() {
        match cluster_route(
            state,
            cluster,
            guard.access.target,
            &params,
            req.uri().query(),
        )
        .await
        {
            Ok(crate::cluster::Route::Here) => {}
            Ok(crate::cluster::Route::Node { id, url }) => {
                let resp = crate::cluster::forward(cluster, &id, &url, req).await;
                return call.finish(resp);
            }
            Ok(crate::cluster::Route::Nowhere) => {
                let e = ApiError::unavailable(
                    "no coordinator holds this swarm right now (it is being taken over): retry in a few seconds",
                );
                return call.finish(e.into_response());
            }
            Err(e) => return call.finish(e.into_response()),
        }
    }
    let permit = match hold_wanted(guard.access.hold, req.uri().query()) {
        false => None,
        true => match state.streams.open(principal.token_id()) {
            Some(p) => Some(Arc::new(p)),
            None => {
                let e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    format!(
                        "this token already holds {} open streams, WebSockets or long polls: close one first (flotilla serve --max-streams-per-token)",
                        state.streams.limit
                    ),
                );
                return call.finish(e.into_response());
            }
        },
    };
    if let Some(p) = &permit {
        req.extensions_mut().insert(p.clone());
    }
    req.extensions_mut().insert(principal);
    let resp = next.run(req).await;
    let resp = match permit {
        // The body may stream long after this returns: it holds the permit until it ends.
        Some(p) => {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, Body::new(HeldBody { body, _permit: p }))
        }
        None => resp,
    };
    call.finish(resp)
}

/// Who a request's token belongs to, and the token's hash (the rate limiter's key).
fn identify(state: &AppState, req: &Request) -> Result<(Principal, String), ApiError> {
    let secret = bearer_secret(req)?;
    let hash = hash_token(&secret);
    let principal = state.tokens.read().principal(&hash, state.now());
    match principal {
        Ok(p) => Ok((p, hash)),
        Err(Refusal::Unknown) => Err(ApiError::unauthorized("unknown or revoked token")),
        Err(Refusal::Expired) => Err(ApiError::unauthorized(
            "this token has expired: ask an administrator for a new one (flotilla token create)",
        )),
    }
}

/// In a cluster: looks the request's token up in the shared store and, if it is in force,
/// remembers it and identifies the caller with it.
async fn learn_token(state: &AppState, secret: Option<String>) -> Option<(Principal, String)> {
    let secret = secret?;
    let hash = hash_token(&secret);
    let lookup = hash.clone();
    let record = crate::routes::read(state, move |r| r.find_token(&lookup))
        .await
        .ok()
        .flatten()?;
    if record.revoked_at.is_some() {
        return None;
    }
    state.tokens.write().insert(record);
    let principal = state.tokens.read().principal(&hash, state.now()).ok()?;
    Some((principal, hash))
}

/// The rule's checks that need the path: role, agent, swarm.
async fn check(
    state: &AppState,
    access: &Access,
    who: &Principal,
    params: &[(String, String)],
) -> Result<(), ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match who {
        Principal::Agent { agent, .. } => match access.agents {
            Agents::Refused => who.require(access.role),
            Agents::Handler => Ok(()),
            Agents::Own => match param("id").and_then(|id| id.parse::<AgentId>().ok()) {
                Some(target) => who.require_agent(target),
                // Not an id: the handler answers 400.
                None => Ok(()),
            },
            Agents::SameSwarm => {
                let own = state.fleet.lock().agent(*agent).map(|a| a.swarm_id);
                let target = target_swarm(state, access.target, param).await?;
                match (own, target) {
                    (Some(own), Some(target)) if own != target => Err(ApiError::forbidden(
                        "an agent token reaches only its own swarm",
                    )),
                    _ => Ok(()),
                }
            }
        },
        Principal::User { swarm, .. } => {
            who.require(access.role)?;
            let Some(scope) = *swarm else {
                return Ok(());
            };
            match access.target {
                Target::Fleet => Err(ApiError::forbidden(format!(
                    "this call concerns the whole fleet; this token is limited to swarm {scope}"
                ))),
                Target::Listed => Ok(()),
                target => match target_swarm(state, target, param).await? {
                    Some(s) if s != scope => Err(hidden(target, param)),
                    _ => Ok(()),
                },
            }
        }
    }
}

/// The 404 a swarm-limited token gets for a target in another swarm: the same as for one that
/// does not exist.
fn hidden<'a>(target: Target, param: impl Fn(&str) -> Option<&'a str>) -> ApiError {
    let (what, value) = match target {
        Target::Swarm => ("swarm", param("swarm")),
        Target::Agent => ("agent", param("id")),
        Target::Task => ("task", param("id")),
        Target::Message => ("message", param("id")),
        Target::Fleet | Target::Listed => ("resource", None),
    };
    ApiError::not_found(format!("{what} {} not found", value.unwrap_or("")))
}

/// The swarm a route's target is in, when it can be found (`None`: the handler answers, 404
/// or 400).
async fn target_swarm<'a>(
    state: &AppState,
    target: Target,
    param: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<SwarmId>, ApiError> {
    let id = param("id");
    Ok(match target {
        Target::Fleet | Target::Listed => None,
        Target::Swarm => param("swarm").and_then(|s| state.fleet.lock().resolve_swarm(s).ok()),
        Target::Agent => match id.and_then(|i| i.parse::<AgentId>().ok()) {
            None => None,
            Some(a) => {
                let live = state.fleet.lock().agent(a).map(|a| a.swarm_id);
                match live {
                    Some(s) => Some(s),
                    None => crate::routes::read(state, move |r| r.get_agent(a))
                        .await?
                        .map(|a| a.swarm_id),
                }
            }
        },
        Target::Task => match id.and_then(|i| i.parse::<TaskId>().ok()) {
            None => None,
            Some(t) => {
                let live = state.fleet.lock().task(t).map(|t| t.swarm_id);
                match live {
                    Some(s) => Some(s),
                    None => crate::routes::read(state, move |r| r.get_task(t))
                        .await?
                        .map(|t| t.swarm_id),
                }
            }
        },
        Target::Message => match id.and_then(|i| i.parse::<MessageId>().ok()) {
            None => None,
            Some(m) => {
                let live = state.fleet.lock().message(m).map(|m| m.swarm_id);
                match live {
                    Some(s) => Some(s),
                    None => crate::routes::read(state, move |r| r.get_message(m))
                        .await?
                        .map(|m| m.swarm_id),
                }
            }
        },
    })
}

/// Where a call goes in a cluster: the swarm of its target, then that swarm's holder. Calls
/// about no swarm (the fleet, lists across swarms without `?swarm=`) are served here.
async fn cluster_route(
    state: &AppState,
    cluster: &crate::cluster::Cluster,
    target: Target,
    params: &[(String, String)],
    query: Option<&str>,
) -> Result<crate::cluster::Route, ApiError> {
    use crate::cluster::Route;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let swarm = match target {
        Target::Fleet => None,
        Target::Listed => {
            let asked = query.and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("swarm="))
                    .map(|v| v.to_owned())
            });
            match asked {
                None => None,
                Some(reference) => {
                    let local = state.fleet.lock().resolve_swarm(&reference).is_ok();
                    match cluster.route_swarm(&reference, local) {
                        Some((_, route)) => return Ok(route),
                        None => None,
                    }
                }
            }
        }
        Target::Swarm => match param("swarm") {
            None => None,
            Some(reference) => {
                let local = state.fleet.lock().resolve_swarm(reference).is_ok();
                return Ok(cluster
                    .route_swarm(reference, local)
                    .map_or(Route::Here, |(_, route)| route));
            }
        },
        Target::Agent | Target::Task | Target::Message => {
            target_swarm(state, target, param).await?
        }
    };
    Ok(match swarm {
        None => Route::Here,
        Some(s) => {
            let local = state.fleet.lock().resolve_swarm(&s.to_string()).is_ok();
            cluster.route(s, local)
        }
    })
}

/// Whether a call to a route holding `hold` takes one of its token's open connections.
fn hold_wanted(hold: Hold, query: Option<&str>) -> bool {
    match hold {
        Hold::No => false,
        Hold::Stream => true,
        Hold::LongPoll => query.is_some_and(|q| {
            q.split('&').any(|kv| {
                kv.strip_prefix("wait=")
                    .is_some_and(|v| !matches!(v, "" | "0" | "0.0" | "false"))
            })
        }),
    }
}

/// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1).
fn rate_limited(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many requests with this token: try again in {secs} s (see flotilla serve --rate-limit)"
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, secs.into());
    resp
}

/// One call on its way through [`authorize`], to be audited when it is answered.
struct Call<'a> {
    guard: &'a Guard,
    principal: Option<Principal>,
    method: &'a Method,
    path: &'a str,
    remote: Option<String>,
}

impl Call<'_> {
    /// Audits the call if it should be, and returns its answer.
    fn finish(self, resp: Response) -> Response {
        let status = resp.status();
        let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        let mutating = !matches!(*self.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if refused || (mutating && self.guard.access.audited) {
            let outcome = resp
                .extensions()
                .get::<ErrorCode>()
                .map_or_else(|| "ok".to_owned(), |c| c.0.to_owned());
            let p = self.principal.as_ref();
            let record = AuditEntry {
                seq: 0,
                at: self.guard.state.now(),
                token_id: p.map(|p| p.token_id().to_owned()),
                role: p.map(|p| p.token_role().as_str().to_owned()),
                agent_id: p.and_then(Principal::agent),
                method: self.method.as_str().to_owned(),
                path: truncate(self.path, 512),
                action: self.guard.action.to_string(),
                status: status.as_u16(),
                outcome,
                remote: self.remote,
                request_id: RequestId::current().map(|r| r.to_string()),
            };
            self.guard
                .state
                .audit
                .record(&self.guard.state, record, refused);
        }
        resp
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The audit log's writer side: entries go to the store with the next group commit, without
/// making the answer wait. Refused calls are written up to [`AuditLog::REFUSALS_PER_MINUTE`]
/// a minute (a flood of bad tokens must not fill the disk); the rest are counted and the count
/// is logged.
pub struct AuditLog {
    /// How long entries are kept.
    pub retention: std::time::Duration,
    refusals: Mutex<(u64, u64)>,
    dropped: AtomicU64,
}

impl AuditLog {
    /// Refused calls written per minute at most.
    pub const REFUSALS_PER_MINUTE: u64 = 600;

    /// An audit log keeping entries this long.
    pub fn new(retention: std::time::Duration) -> Self {
        AuditLog {
            retention,
            refusals: Mutex::new((0, 0)),
            dropped: AtomicU64::new(0),
        }
    }

    fn record(&self, state: &AppState, entry: AuditEntry, refused: bool) {
        if refused {
            let minute = entry.at.as_millis().max(0) as u64 / 60_000;
            let mut r = self.refusals.lock();
            if r.0 != minute {
                let dropped = self.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "refused calls not written to the audit log in the last minute (over {} a minute)",
                        Self::REFUSALS_PER_MINUTE
                    );
                }
                *r = (minute, 0);
            }
            if r.1 >= Self::REFUSALS_PER_MINUTE {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            r.1 += 1;
        }
        tracing::info!(
            target: "flotilla::audit",
            token = entry.token_id.as_deref().unwrap_or("-"),
            action = %entry.action,
            path = %entry.path,
            status = entry.status,
            outcome = %entry.outcome,
            "audit"
        );
        // Not awaited: the entry is durable with the next commit.
        drop(state.writer.submit(flotilla_store::Batch {
            audit: vec![entry],
            ..Default::default()
        }));
    }

    /// Forgets entries older than the retention (hourly, from the clock's loop).
    pub fn prune(&self, state: &AppState, now: Timestamp) {
        let before = now - self.retention;
        drop(state.writer.submit(flotilla_store::Batch {
            audit_prune_before: Some(before),
            ..Default::default()
        }));
    }
}

/// Open streams, WebSockets and long polls per token.
pub struct Streams {
    /// The most one token may hold at once.
    pub limit: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Streams {
    /// At most `limit` per token.
    pub fn new(limit: usize) -> Self {
        Streams {
            limit,
            open: Arc::default(),
        }
    }

    /// Takes one of the token's slots, if it has one free.
    pub fn open(&self, token_id: &str) -> Option<StreamPermit> {
        let mut open = self.open.lock();
        let n = open.entry(token_id.to_owned()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(StreamPermit {
            token_id: token_id.to_owned(),
            open: self.open.clone(),
        })
    }

    /// How many the token holds now.
    pub fn held(&self, token_id: &str) -> usize {
        self.open.lock().get(token_id).copied().unwrap_or(0)
    }
}

/// One open stream, WebSocket or long poll; its slot frees when the last clone is dropped.
/// Handlers that upgrade to a WebSocket take it from the request's extensions
/// (`Extension<Arc<StreamPermit>>`) and keep it for the socket's life.
pub struct StreamPermit {
    token_id: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.token_id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.token_id);
            }
        }
    }
}

/// A response body that holds a stream permit until it ends.
struct HeldBody {
    body: Body,
    _permit: Arc<StreamPermit>,
}

impl http_body::Body for HeldBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_hold_only_when_they_wait() {
        assert!(!hold_wanted(Hold::LongPoll, None));
        assert!(!hold_wanted(Hold::LongPoll, Some("wait=0")));
        assert!(!hold_wanted(Hold::LongPoll, Some("limit=5&wait=false")));
        assert!(hold_wanted(Hold::LongPoll, Some("wait=30")));
        assert!(hold_wanted(Hold::LongPoll, Some("x=1&wait=true")));
        assert!(hold_wanted(Hold::Stream, None));
        assert!(!hold_wanted(Hold::No, Some("wait=30")));
    }

    #[test]
    fn permits_free_their_slot_when_dropped() {
        let s = Streams::new(2);
        let a = s.open("t").expect("first");
        let b = s.open("t").expect("second");
        assert!(s.open("t").is_none(), "third refused");
        assert!(s.open("u").is_some(), "another token has its own");
        drop(a);
        assert_eq!(s.held("t"), 1);
        let _c = s.open("t").expect("a freed slot is usable");
        drop(b);
        assert_eq!(s.held("t"), 1);
    }
}
