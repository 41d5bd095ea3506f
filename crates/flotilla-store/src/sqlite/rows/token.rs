//! The `api_tokens` table: one row per [`TokenRecord`], revoked ones included.

use rusqlite::{Row, Statement};

use super::{Cols, opt_id, opt_ts};
use crate::error::StoreError;
use crate::token::{TokenRecord, TokenRole};

/// Inserts or replaces a token by id.
pub(crate) const UPSERT: &str = "\
INSERT INTO api_tokens (id, hash, role, agent_id, label, created_at, revoked_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (id) DO UPDATE SET
    hash = excluded.hash,
    role = excluded.role,
    agent_id = excluded.agent_id,
    label = excluded.label,
    created_at = excluded.created_at,
    revoked_at = excluded.revoked_at";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "id, hash, role, agent_id, label, created_at, revoked_at";

/// Binds `token` to a prepared [`UPSERT`] and runs it.
pub(crate) fn upsert(stmt: &mut Statement<'_>, token: &TokenRecord) -> Result<(), StoreError> {
    stmt.execute((
        &token.id,
        &token.hash,
        token.role.as_str(),
        opt_id(&token.agent_id),
        &token.label,
        token.created_at.as_millis(),
        opt_ts(token.revoked_at),
    ))?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &Row<'_>) -> Result<TokenRecord, StoreError> {
    let c = Cols::new(row, "api_tokens");
    let role = c.str(2, "role")?;
    Ok(TokenRecord {
        id: c.string(0, "id")?,
        hash: c.string(1, "hash")?,
        role: role
            .parse::<TokenRole>()
            .map_err(|e| StoreError::bad_value("api_tokens.role", e))?,
        agent_id: c.opt_id(3, "agent_id")?,
        label: c.string(4, "label")?,
        created_at: c.ts(5, "created_at")?,
        revoked_at: c.opt_ts(6, "revoked_at")?,
    })
}
