//! The `api_tokens` table: one row per [`TokenRecord`], revoked ones included; and the
//! `audit_log`, one row per [`AuditEntry`].

use crate::sql::{Cells, Db, params};

use super::{Cols, opt_id, opt_ts};
use crate::error::StoreError;
use flotilla_core::api::AuditEntry;

use crate::token::{TokenRecord, TokenRole};

/// Inserts or replaces a token by id.
pub(crate) const UPSERT: &str = "\
INSERT INTO api_tokens (id, hash, role, agent_id, label, created_at, revoked_at, swarm_id,
    expires_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (id) DO UPDATE SET
    hash = excluded.hash,
    role = excluded.role,
    agent_id = excluded.agent_id,
    label = excluded.label,
    created_at = excluded.created_at,
    revoked_at = excluded.revoked_at,
    swarm_id = excluded.swarm_id,
    expires_at = excluded.expires_at";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str =
    "id, hash, role, agent_id, label, created_at, revoked_at, swarm_id, expires_at";

/// Binds `token` to [`UPSERT`] and runs it.
pub(crate) fn upsert(db: &mut dyn Db, token: &TokenRecord) -> Result<(), StoreError> {
    db.exec(
        UPSERT,
        &params![
            &token.id,
            &token.hash,
            token.role.as_str(),
            opt_id(&token.agent_id),
            &token.label,
            token.created_at.as_millis(),
            opt_ts(token.revoked_at),
            opt_id(&token.swarm_id),
            opt_ts(token.expires_at),
        ],
    )?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<TokenRecord, StoreError> {
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
        swarm_id: c.opt_id(7, "swarm_id")?,
        expires_at: c.opt_ts(8, "expires_at")?,
    })
}

/// Appends one entry to the audit log.
pub(crate) const INSERT_AUDIT: &str = "\
INSERT INTO audit_log (at, token_id, role, agent_id, method, path, action, status, outcome,
    remote, request_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Forgets the audit entries older than a time.
pub(crate) const PRUNE_AUDIT: &str = "DELETE FROM audit_log WHERE at < ?1";

/// The columns [`audit_from_row`] reads, in order.
pub(crate) const AUDIT_COLUMNS: &str = "seq, at, token_id, role, agent_id, method, path, action, \
     status, outcome, remote, request_id";

/// Binds `entry` to [`INSERT_AUDIT`] and runs it.
pub(crate) fn insert_audit(db: &mut dyn Db, e: &AuditEntry) -> Result<(), StoreError> {
    db.exec(
        INSERT_AUDIT,
        &params![
            e.at.as_millis(),
            &e.token_id,
            &e.role,
            opt_id(&e.agent_id),
            &e.method,
            &e.path,
            &e.action,
            e.status,
            &e.outcome,
            &e.remote,
            &e.request_id,
        ],
    )?;
    Ok(())
}

/// Decodes a row of [`AUDIT_COLUMNS`].
pub(crate) fn audit_from_row(row: &dyn Cells) -> Result<AuditEntry, StoreError> {
    let c = Cols::new(row, "audit_log");
    Ok(AuditEntry {
        seq: c.u64(0, "seq")?,
        at: c.ts(1, "at")?,
        token_id: c.opt_string(2, "token_id")?,
        role: c.opt_string(3, "role")?,
        agent_id: c.opt_id(4, "agent_id")?,
        method: c.string(5, "method")?,
        path: c.string(6, "path")?,
        action: c.string(7, "action")?,
        status: c.int(8, "status")?,
        outcome: c.string(9, "outcome")?,
        remote: c.opt_string(10, "remote")?,
        request_id: c.opt_string(11, "request_id")?,
    })
}
