//! Tokens and who is calling.
//!
//! Tokens are 32 random bytes, shown once and stored only as their SHA-256 hash: they carry
//! enough entropy that a slow password hash would add nothing. The admin token is created at
//! first start and written to `<data-dir>/admin.token` (mode 0600). Each registered agent gets
//! a token that acts only for itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flotilla_core::{AgentId, Timestamp};
use flotilla_store::{TokenRecord, TokenRole};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of every token, so that leaked ones are easy to recognise.
const TOKEN_PREFIX: &str = "flt_";

/// Who is calling, once their token is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The administrator: may do everything.
    Admin {
        /// The token's id.
        token_id: String,
    },
    /// An agent: may act only for itself.
    Agent {
        /// The token's id.
        token_id: String,
        /// The agent it acts for.
        agent: AgentId,
    },
}

impl Principal {
    /// Refuses anyone but the administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin { .. } => Ok(()),
            Principal::Agent { .. } => Err(ApiError::forbidden(
                "this call needs the admin token; an agent token may only act for its own agent",
            )),
        }
    }

    /// Refuses anyone but the administrator and the agent itself.
    pub fn require_agent(&self, agent: AgentId) -> Result<(), ApiError> {
        match self {
            Principal::Admin { .. } => Ok(()),
            Principal::Agent { agent: own, .. } if *own == agent => Ok(()),
            Principal::Agent { agent: own, .. } => Err(ApiError::forbidden(format!(
                "this token belongs to agent {own} and cannot act for agent {agent}"
            ))),
        }
    }

    /// The id of the token it called with (never the token).
    pub fn token_id(&self) -> &str {
        match self {
            Principal::Admin { token_id } | Principal::Agent { token_id, .. } => token_id,
        }
    }

    /// The agent this principal is, if it is one.
    pub fn agent(&self) -> Option<AgentId> {
        match self {
            Principal::Agent { agent, .. } => Some(*agent),
            Principal::Admin { .. } => None,
        }
    }
}

/// A new random token (the secret), its hash and id.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_token(&secret);
    (secret, hash)
}

/// The stored form of a token.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A token record for a new secret.
pub fn record(
    hash: String,
    role: TokenRole,
    agent_id: Option<AgentId>,
    label: &str,
    now: Timestamp,
) -> TokenRecord {
    TokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        hash,
        role,
        agent_id,
        label: label.to_owned(),
        created_at: now,
        revoked_at: None,
    }
}

/// The tokens in force, by hash.
#[derive(Default)]
pub struct TokenTable {
    by_hash: HashMap<String, TokenRecord>,
    by_agent: HashMap<AgentId, String>,
}

impl TokenTable {
    /// A table of the given (unrevoked) tokens.
    pub fn new(tokens: Vec<TokenRecord>) -> Self {
        let mut t = TokenTable::default();
        for r in tokens {
            t.insert(r);
        }
        t
    }

    /// Adds a token.
    pub fn insert(&mut self, r: TokenRecord) {
        if r.revoked_at.is_some() {
            return;
        }
        if let Some(a) = r.agent_id {
            self.by_agent.insert(a, r.hash.clone());
        }
        self.by_hash.insert(r.hash.clone(), r);
    }

    /// Whether a token with this hash is in force.
    pub fn contains(&self, hash: &str) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Who a token with this hash belongs to.
    pub fn principal(&self, hash: &str) -> Option<Principal> {
        let r = self.by_hash.get(hash)?;
        Some(match (r.role, r.agent_id) {
            (TokenRole::Agent, Some(agent)) => Principal::Agent {
                token_id: r.id.clone(),
                agent,
            },
            (TokenRole::Agent, None) => return None,
            (TokenRole::Admin, _) => Principal::Admin {
                token_id: r.id.clone(),
            },
        })
    }

    /// Revokes an agent's token; returns the revoked record to persist.
    pub fn revoke_agent(&mut self, agent: AgentId, now: Timestamp) -> Option<TokenRecord> {
        let hash = self.by_agent.remove(&agent)?;
        let mut r = self.by_hash.remove(&hash)?;
        r.revoked_at = Some(now);
        Some(r)
    }
}

/// The WebSocket subprotocol the coordinator answers with when a client authenticated
/// through [`WS_BEARER_PREFIX`] (a browser must offer a protocol the server picks, and the
/// token is never echoed back).
pub const WS_PROTOCOL: &str = "flotilla";

/// Prefix of the WebSocket subprotocol that carries a token: `bearer.<token>`. Browsers cannot
/// set headers on a WebSocket, so a page offers `flotilla, bearer.<token>` instead.
pub const WS_BEARER_PREFIX: &str = "bearer.";

/// Checks the bearer token of every API request and records who is calling.
///
/// The token comes from `Authorization: Bearer <token>`; only on a WebSocket upgrade with no
/// such header, from a `bearer.<token>` entry of `Sec-WebSocket-Protocol`.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let secret = match bearer_secret(&req) {
        Ok(secret) => secret,
        Err(e) => return e.into_response(),
    };
    let hash = hash_token(&secret);
    let principal = state.tokens.read().principal(&hash);
    match principal {
        Some(p) => {
            if let Some(Err(wait)) = state.limiter.as_ref().map(|l| l.check(&hash)) {
                return rate_limited(wait);
            }
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => ApiError::unauthorized("unknown or revoked token").into_response(),
    }
}

/// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1).
fn rate_limited(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
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

/// The token a request carries.
fn bearer_secret(req: &Request) -> Result<String, ApiError> {
    if let Some(header) = req.headers().get(AUTHORIZATION) {
        let header = header.to_str().unwrap_or("");
        return header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(|s| s.trim().to_owned())
            .ok_or_else(|| {
                ApiError::unauthorized("malformed Authorization header: expected `Bearer <token>`")
            });
    }
    if is_websocket_upgrade(req) {
        let offered = req
            .headers()
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find_map(|p| p.strip_prefix(WS_BEARER_PREFIX));
        if let Some(secret) = offered {
            return Ok(secret.to_owned());
        }
        return Err(ApiError::unauthorized(
            "missing token: send `Authorization: Bearer <token>`, or offer the WebSocket \
             subprotocols `flotilla, bearer.<token>` (the admin token is in <data-dir>/admin.token)",
        ));
    }
    Err(ApiError::unauthorized(
        "missing token: send `Authorization: Bearer <token>` (the admin token is in <data-dir>/admin.token)",
    ))
}

/// Whether a request asks to become a WebSocket (`GET` with `Upgrade: websocket`) on one of
/// the API's sockets (`/events/ws`, `/agents/{id}/messages/ws`): the only requests that may
/// carry their token in the subprotocol.
fn is_websocket_upgrade(req: &Request) -> bool {
    req.method() == Method::GET
        && req.uri().path().ends_with("/ws")
        && req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Where the admin token lives in a data directory.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// Reads the admin token file, or creates a new admin token and writes it (mode 0600).
/// Returns the secret, whether it was created, and the record to persist if it is new to
/// the store.
pub fn ensure_admin_token(
    data_dir: &Path,
    tokens: &TokenTable,
    now: Timestamp,
) -> std::io::Result<(String, bool, Option<TokenRecord>)> {
    let path = admin_token_path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let secret = text.trim().to_owned();
        if !secret.is_empty() {
            let hash = hash_token(&secret);
            let rec = (!tokens.contains(&hash))
                .then(|| record(hash, TokenRole::Admin, None, "admin (from file)", now));
            return Ok((secret, false, rec));
        }
    }
    let (secret, hash) = new_token();
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?
    };
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    Ok((
        secret,
        true,
        Some(record(hash, TokenRole::Admin, None, "admin", now)),
    ))
}
