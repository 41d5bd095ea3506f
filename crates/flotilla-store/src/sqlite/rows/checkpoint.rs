//! The `agent_checkpoints` table: one row per [`Checkpoint`], its state, task context and
//! workspace description as JSON text; and `agent_states`, each agent's last reported state.

use flotilla_core::{AgentId, Checkpoint, CheckpointId, Json, Timestamp};
use rusqlite::{Row, Statement};

use super::{Cols, id, to_json};
use crate::error::StoreError;

/// Inserts a checkpoint (ids are never reused; a repeat replaces it whole).
pub(crate) const UPSERT: &str = "\
INSERT OR REPLACE INTO agent_checkpoints (id, agent_id, swarm_id, created_at, trigger,
                                          description, state, tasks, workspace, workspace_error)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Removes one checkpoint.
pub(crate) const DELETE: &str = "DELETE FROM agent_checkpoints WHERE id = ?1";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "id, agent_id, swarm_id, created_at, trigger, description, \
                                  state, tasks, workspace, workspace_error";

/// Inserts or replaces an agent's state document.
pub(crate) const UPSERT_STATE: &str = "\
INSERT INTO agent_states (agent_id, state, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (agent_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";

/// Binds `c` to a prepared [`UPSERT`] and runs it.
pub(crate) fn upsert(stmt: &mut Statement<'_>, c: &Checkpoint) -> Result<(), StoreError> {
    stmt.execute(rusqlite::params![
        id(&c.id),
        id(&c.agent_id),
        id(&c.swarm_id),
        c.created_at.as_millis(),
        c.trigger.as_str(),
        &c.description,
        c.state.as_ref().map(|s| s.get()),
        to_json(&c.tasks),
        c.workspace.as_ref().map(|w| w.get()),
        c.workspace_error.as_deref(),
    ])?;
    Ok(())
}

/// Binds a checkpoint id to a prepared [`DELETE`] and runs it.
pub(crate) fn delete(stmt: &mut Statement<'_>, c: &CheckpointId) -> Result<(), StoreError> {
    stmt.execute([id(c)])?;
    Ok(())
}

/// Binds an agent's state to a prepared [`UPSERT_STATE`] and runs it.
pub(crate) fn upsert_state(
    stmt: &mut Statement<'_>,
    agent: &AgentId,
    state: &Json,
    at: Timestamp,
) -> Result<(), StoreError> {
    stmt.execute(rusqlite::params![id(agent), state.get(), at.as_millis()])?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &Row<'_>) -> Result<Checkpoint, StoreError> {
    let c = Cols::new(row, "agent_checkpoints");
    Ok(Checkpoint {
        id: c.id(0, "id")?,
        agent_id: c.id(1, "agent_id")?,
        swarm_id: c.id(2, "swarm_id")?,
        created_at: c.ts(3, "created_at")?,
        trigger: c.enumeration(4, "trigger")?,
        description: c.string(5, "description")?,
        state: c.opt_json(6, "state")?,
        tasks: c.decode(7, "tasks")?,
        workspace: c.opt_json(8, "workspace")?,
        workspace_error: c.opt_string(9, "workspace_error")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_list_has_one_name_per_index_read() {
        assert_eq!(COLUMNS.split(',').count(), 10);
        assert_eq!(UPSERT.matches('?').count(), 10);
    }
}
