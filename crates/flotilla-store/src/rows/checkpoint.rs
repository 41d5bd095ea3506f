//! The `agent_checkpoints` table: one row per [`Checkpoint`], its state, task context and
//! workspace description as JSON text; and `agent_states`, each agent's last reported state.

use crate::sql::{Cells, Db, params};
use flotilla_core::{AgentId, Checkpoint, CheckpointId, Json, Timestamp};

use super::{Cols, id, to_json};
use crate::error::StoreError;

/// Inserts a checkpoint (ids are never reused; a repeat replaces it whole).
pub(crate) const UPSERT: &str = "\
INSERT INTO agent_checkpoints (id, agent_id, swarm_id, created_at, trigger, description, state,
                               tasks, workspace, workspace_error)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (id) DO UPDATE SET
    agent_id = excluded.agent_id,
    swarm_id = excluded.swarm_id,
    created_at = excluded.created_at,
    trigger = excluded.trigger,
    description = excluded.description,
    state = excluded.state,
    tasks = excluded.tasks,
    workspace = excluded.workspace,
    workspace_error = excluded.workspace_error";

/// Removes one checkpoint.
pub(crate) const DELETE: &str = "DELETE FROM agent_checkpoints WHERE id = ?1";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "id, agent_id, swarm_id, created_at, trigger, description, \
                                  state, tasks, workspace, workspace_error";

/// Inserts or replaces an agent's state document.
pub(crate) const UPSERT_STATE: &str = "\
INSERT INTO agent_states (agent_id, state, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (agent_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";

/// Binds `c` to [`UPSERT`] and runs it.
pub(crate) fn upsert(db: &mut dyn Db, c: &Checkpoint) -> Result<(), StoreError> {
    db.exec(
        UPSERT,
        &params![
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
        ],
    )?;
    Ok(())
}

/// Binds a checkpoint id to [`DELETE`] and runs it.
pub(crate) fn delete(db: &mut dyn Db, c: &CheckpointId) -> Result<(), StoreError> {
    db.exec(DELETE, &params![id(c)])?;
    Ok(())
}

/// Binds an agent's state to [`UPSERT_STATE`] and runs it.
pub(crate) fn upsert_state(
    db: &mut dyn Db,
    agent: &AgentId,
    state: &Json,
    at: Timestamp,
) -> Result<(), StoreError> {
    db.exec(
        UPSERT_STATE,
        &params![id(agent), state.get(), at.as_millis()],
    )?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<Checkpoint, StoreError> {
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
