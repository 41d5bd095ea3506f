//! API tokens as the store keeps them: only a hash of the secret, the role it grants, and whether
//! it was revoked.

use std::fmt;
use std::str::FromStr;

use flotilla_core::{AgentId, Timestamp};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenRole {
    /// Everything.
    Admin,
    /// Act for one agent only.
    Agent,
}

impl TokenRole {
    /// Every role.
    pub const ALL: [TokenRole; 2] = [TokenRole::Admin, TokenRole::Agent];

    /// The role as stored and shown: `admin`, `agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
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
    /// Free text saying what it is for.
    pub label: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was; revoked tokens are kept but not loaded.
    pub revoked_at: Option<Timestamp>,
}
