//! The `swarm_pools` table: one row per [`Pool`], keyed by swarm and name; the agent template of
//! a managed pool as JSON text.

use crate::sql::{Cells, Db, params};
use flotilla_core::{Pool, SwarmId};

use super::{Cols, id, strings_json, to_json};
use crate::error::StoreError;

/// Inserts or replaces a pool by swarm and name.
pub(crate) const UPSERT: &str = "\
INSERT INTO swarm_pools (swarm_id, name, min_agents, max_agents, capabilities,
                         max_concurrent_tasks, template, created_at, updated_at, checkpoints,
                         priority, resources, scaling, desired_agents)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
ON CONFLICT (swarm_id, name) DO UPDATE SET
    min_agents = excluded.min_agents,
    max_agents = excluded.max_agents,
    capabilities = excluded.capabilities,
    max_concurrent_tasks = excluded.max_concurrent_tasks,
    template = excluded.template,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    checkpoints = excluded.checkpoints,
    priority = excluded.priority,
    resources = excluded.resources,
    scaling = excluded.scaling,
    desired_agents = excluded.desired_agents";

/// Removes one pool.
pub(crate) const DELETE: &str = "DELETE FROM swarm_pools WHERE swarm_id = ?1 AND name = ?2";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "swarm_id, name, min_agents, max_agents, capabilities, \
                                  max_concurrent_tasks, template, created_at, updated_at, \
                                  checkpoints, priority, resources, scaling, desired_agents";

/// Binds `pool` to [`UPSERT`] and runs it.
pub(crate) fn upsert(db: &mut dyn Db, pool: &Pool) -> Result<(), StoreError> {
    db.exec(
        UPSERT,
        &params![
            id(&pool.swarm_id),
            &pool.name,
            pool.min_agents,
            pool.max_agents,
            strings_json(&pool.capabilities),
            pool.max_concurrent_tasks,
            pool.template.as_ref().map(to_json),
            pool.created_at.as_millis(),
            pool.updated_at.as_millis(),
            to_json(&pool.checkpoints),
            pool.priority,
            to_json(&pool.resources),
            to_json(&pool.scaling),
            pool.desired_agents,
        ],
    )?;
    Ok(())
}

/// Binds a pool's key to [`DELETE`] and runs it.
pub(crate) fn delete(db: &mut dyn Db, swarm: &SwarmId, name: &str) -> Result<(), StoreError> {
    db.exec(DELETE, &params![id(swarm), name])?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<Pool, StoreError> {
    let c = Cols::new(row, "swarm_pools");
    Ok(Pool {
        swarm_id: c.id(0, "swarm_id")?,
        name: c.string(1, "name")?,
        min_agents: c.int(2, "min_agents")?,
        max_agents: c.int(3, "max_agents")?,
        capabilities: c.strings(4, "capabilities")?,
        max_concurrent_tasks: c.int(5, "max_concurrent_tasks")?,
        template: c.opt_decode(6, "template")?,
        created_at: c.ts(7, "created_at")?,
        updated_at: c.ts(8, "updated_at")?,
        checkpoints: c.opt_decode(9, "checkpoints")?.unwrap_or_default(),
        priority: c.int(10, "priority")?,
        resources: c.opt_decode(11, "resources")?.unwrap_or_default(),
        scaling: c.opt_decode(12, "scaling")?.unwrap_or_default(),
        desired_agents: c.opt_int(13, "desired_agents")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_list_has_one_name_per_index_read() {
        assert_eq!(COLUMNS.split(',').count(), 14);
        assert_eq!(UPSERT.matches('?').count(), 14);
    }
}
