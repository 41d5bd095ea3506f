//! API tokens as the store keeps them: only a hash of the secret, the role it grants, the swarm
//! it is limited to, when it expires, and whether it was revoked.

use std::fmt;
use std::str::FromStr;

use flotilla_core::{AgentId, SwarmId, Timestamp};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenRole {
    /// Everything: swarms, pools, fleet files, policies, tokens, the audit log.
    Admin,
    /// Submits and controls tasks and agents, and reads.
    Operator,
    /// Reads.
    Viewer,
    /// Act for one agent only.
    Agent,
}

impl TokenRole {
    /// Every role.
    pub const ALL: [TokenRole; 4] = [
        TokenRole::Admin,
        TokenRole::Operator,
        TokenRole::Viewer,
        TokenRole::Agent,
    ];

    /// The role as stored and shown: `admin`, `operator`, `viewer`, `agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Operator => "operator",
            TokenRole::Viewer => "viewer",
            TokenRole::Agent => "agent",
        }
    }
}

impl FromStr for TokenRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TokenRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown token role {s:?}"))
    }
}

impl fmt::Display for TokenRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API token. The secret itself is never stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    /// Its id, shown in listings; not secret.
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// What it may do.
    pub role: TokenRole,
    /// The agent it acts for (role `agent`).
    pub agent_id: Option<AgentId>,
    /// The only swarm it may see, if it is limited to one.
    pub swarm_id: Option<SwarmId>,
    /// Free text saying what it is for.
    pub label: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops working, if it does.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was; revoked tokens are kept but not loaded.
    pub revoked_at: Option<Timestamp>,
}
