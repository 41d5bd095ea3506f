//! Tokens and who is calling.
//!
//! Tokens are 32 random bytes, shown once and stored only as their SHA-256 hash: they carry
//! enough entropy that a slow password hash would add nothing. The admin token is created at
//! first start and written to `<data-dir>/admin.token` (mode 0600). Each registered agent gets
//! a token that acts only for itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::Method;
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use flotilla_core::{AgentId, SwarmId, Timestamp};
use flotilla_store::{TokenRecord, TokenRole};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Prefix of every token, so that leaked ones are easy to recognise.
const TOKEN_PREFIX: &str = "flt_";

/// What a person's (not an agent's) token may do; each role may do everything the ones before
/// it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Submits and controls tasks and agents, and reads.
    Operator,
    /// Everything: swarms, pools, fleet files, policies, tokens, the audit log.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The stored role of a token with this role.
    pub fn token_role(self) -> TokenRole {
        match self {
            Role::Viewer => TokenRole::Viewer,
            Role::Operator => TokenRole::Operator,
            Role::Admin => TokenRole::Admin,
        }
    }

    /// The role of a stored token, unless it is an agent's.
    pub fn of(role: TokenRole) -> Option<Role> {
        match role {
            TokenRole::Viewer => Some(Role::Viewer),
            TokenRole::Operator => Some(Role::Operator),
            TokenRole::Admin => Some(Role::Admin),
            TokenRole::Agent => None,
        }
    }

    /// `viewer`, `operator`, `admin`.
    pub fn as_str(self) -> &'static str {
        self.token_role().as_str()
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected viewer, operator or admin"))
    }
}

/// Who is calling, once their token is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A person or program with a role, over the whole fleet or one swarm.
    User {
        /// The token's id.
        token_id: String,
        /// What it may do.
        role: Role,
        /// The only swarm it sees, if it is limited to one.
        swarm: Option<SwarmId>,
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
    /// The administrator of the whole fleet (tests and embedders).
    pub fn admin(token_id: &str) -> Principal {
        Principal::User {
            token_id: token_id.to_owned(),
            role: Role::Admin,
            swarm: None,
        }
    }

    /// Refuses anyone without at least `role` (agents never have one).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        match self {
            Principal::User { role: own, .. } if *own >= role => Ok(()),
            Principal::User { role: own, .. } => Err(ApiError::forbidden(format!(
                "this call needs the {} role; this is a {} token (flotilla token create --role {})",
                role.as_str(),
                own.as_str(),
                role.as_str()
            ))),
            Principal::Agent { .. } => Err(ApiError::forbidden(format!(
                "this call needs the {} role; an agent token may only act for its own agent",
                role.as_str()
            ))),
        }
    }

    /// Refuses anyone but an administrator of the whole fleet.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require(Role::Admin)?;
        match self.swarm() {
            None => Ok(()),
            Some(s) => Err(ApiError::forbidden(format!(
                "this call concerns the whole fleet; this token is limited to swarm {s}"
            ))),
        }
    }

    /// Refuses agents other than `agent` (people's roles are checked by the route's rule).
    pub fn require_agent(&self, agent: AgentId) -> Result<(), ApiError> {
        match self {
            Principal::User { .. } => Ok(()),
            Principal::Agent { agent: own, .. } if *own == agent => Ok(()),
            Principal::Agent { agent: own, .. } => Err(ApiError::forbidden(format!(
                "this token belongs to agent {own} and cannot act for agent {agent}"
            ))),
        }
    }

    /// The id of the token it called with (never the token).
    pub fn token_id(&self) -> &str {
        match self {
            Principal::User { token_id, .. } | Principal::Agent { token_id, .. } => token_id,
        }
    }

    /// The agent this principal is, if it is one.
    pub fn agent(&self) -> Option<AgentId> {
        match self {
            Principal::Agent { agent, .. } => Some(*agent),
            Principal::User { .. } => None,
        }
    }

    /// The stored role of its token.
    pub fn token_role(&self) -> TokenRole {
        match self {
            Principal::User { role, .. } => role.token_role(),
            Principal::Agent { .. } => TokenRole::Agent,
        }
    }

    /// The only swarm a person's token sees, if it is limited to one.
    pub fn swarm(&self) -> Option<SwarmId> {
        match self {
            Principal::User { swarm, .. } => *swarm,
            Principal::Agent { .. } => None,
        }
    }

    /// Whether it may see swarm `id` (always, unless limited to another swarm).
    pub fn sees(&self, id: SwarmId) -> bool {
        self.swarm().is_none_or(|s| s == id)
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

/// A token record for a new secret (no swarm limit, no expiry).
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
        swarm_id: None,
        label: label.to_owned(),
        created_at: now,
        expires_at: None,
        revoked_at: None,
    }
}

/// Why a token is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Never issued, or revoked (the two are not told apart).
    Unknown,
    /// Past its expiry.
    Expired,
}

/// The tokens in force, by hash.
#[derive(Default)]
pub struct TokenTable {
    by_hash: HashMap<String, TokenRecord>,
    by_agent: HashMap<AgentId, String>,
    by_id: HashMap<String, String>,
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
        self.by_id.insert(r.id.clone(), r.hash.clone());
        self.by_hash.insert(r.hash.clone(), r);
    }

    /// Whether a token with this hash is in force.
    pub fn contains(&self, hash: &str) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Who a token with this hash belongs to, at `now`.
    pub fn principal(&self, hash: &str, now: Timestamp) -> Result<Principal, Refusal> {
        let r = self.by_hash.get(hash).ok_or(Refusal::Unknown)?;
        if r.expires_at.is_some_and(|e| e <= now) {
            return Err(Refusal::Expired);
        }
        match (Role::of(r.role), r.agent_id) {
            (None, Some(agent)) => Ok(Principal::Agent {
                token_id: r.id.clone(),
                agent,
            }),
            (None, None) => Err(Refusal::Unknown),
            (Some(role), _) => Ok(Principal::User {
                token_id: r.id.clone(),
                role,
                swarm: r.swarm_id,
            }),
        }
    }

    /// The people's tokens in force (agents' are not listed), oldest first.
    pub fn people(&self) -> Vec<TokenRecord> {
        let mut v: Vec<TokenRecord> = self
            .by_hash
            .values()
            .filter(|r| r.role != TokenRole::Agent)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// The token with this id, if it is in force.
    pub fn get(&self, id: &str) -> Option<&TokenRecord> {
        self.by_hash.get(self.by_id.get(id)?)
    }

    /// Revokes the token with this id; returns the revoked record to persist.
    pub fn revoke(&mut self, id: &str, now: Timestamp) -> Option<TokenRecord> {
        let hash = self.by_id.remove(id)?;
        let mut r = self.by_hash.remove(&hash)?;
        if let Some(a) = r.agent_id {
            self.by_agent.remove(&a);
        }
        r.revoked_at = Some(now);
        Some(r)
    }

    /// Revokes an agent's token; returns the revoked record to persist.
    pub fn revoke_agent(&mut self, agent: AgentId, now: Timestamp) -> Option<TokenRecord> {
        let hash = self.by_agent.get(&agent)?;
        let id = self.by_hash.get(hash)?.id.clone();
        self.revoke(&id, now)
    }

    /// Revokes every token limited to this swarm (it was deleted); returns the records.
    pub fn revoke_swarm(&mut self, swarm: SwarmId, now: Timestamp) -> Vec<TokenRecord> {
        let ids: Vec<String> = self
            .by_hash
            .values()
            .filter(|r| r.swarm_id == Some(swarm))
            .map(|r| r.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.revoke(id, now)).collect()
    }

    /// How many admin tokens of the whole fleet are in force at `now`.
    pub fn fleet_admins(&self, now: Timestamp) -> usize {
        self.by_hash
            .values()
            .filter(|r| {
                r.role == TokenRole::Admin
                    && r.swarm_id.is_none()
                    && r.expires_at.is_none_or(|e| e > now)
            })
            .count()
    }
}

/// The WebSocket subprotocol the coordinator answers with when a client authenticated
/// through [`WS_BEARER_PREFIX`] (a browser must offer a protocol the server picks, and the
/// token is never echoed back).
pub const WS_PROTOCOL: &str = "flotilla";

/// Prefix of the WebSocket subprotocol that carries a token: `bearer.<token>`. Browsers cannot
/// set headers on a WebSocket, so a page offers `flotilla, bearer.<token>` instead.
pub const WS_BEARER_PREFIX: &str = "bearer.";

/// The token a request carries.
pub(crate) fn bearer_secret(req: &Request) -> Result<String, ApiError> {
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
///
/// A file whose token was revoked (`revoked(hash)`) is replaced by a new token: revoking the
/// admin token and restarting is how a leaked one is changed.
pub fn ensure_admin_token(
    data_dir: &Path,
    tokens: &TokenTable,
    revoked: impl Fn(&str) -> bool,
    now: Timestamp,
) -> std::io::Result<(String, bool, Option<TokenRecord>)> {
    let path = admin_token_path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let secret = text.trim().to_owned();
        if !secret.is_empty() {
            let hash = hash_token(&secret);
            if !revoked(&hash) {
                let rec = (!tokens.contains(&hash))
                    .then(|| record(hash, TokenRole::Admin, None, "admin (from file)", now));
                return Ok((secret, false, rec));
            }
            tracing::warn!(path = %path.display(), "the admin token in this file was revoked: writing a new one");
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
