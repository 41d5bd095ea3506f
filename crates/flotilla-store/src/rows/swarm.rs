//! The `swarms` table: one row per [`Swarm`], its configuration as JSON text.

use crate::sql::{Cells, Db, params};
use flotilla_core::{Swarm, Topology};

use super::{Cols, id, opt_id, to_json};
use crate::error::StoreError;

/// Inserts or replaces a swarm by id.
pub(crate) const UPSERT: &str = "\
INSERT INTO swarms (id, name, description, topology, configuration, status, leader_agent_id,
                    created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    description = excluded.description,
    topology = excluded.topology,
    configuration = excluded.configuration,
    status = excluded.status,
    leader_agent_id = excluded.leader_agent_id,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at";

/// Inserts a swarm unless one with its id or name exists.
pub(crate) const INSERT_IF_ABSENT: &str = "\
INSERT INTO swarms (id, name, description, topology, configuration, status, leader_agent_id,
                    created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT DO NOTHING";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "id, name, description, topology, configuration, status, \
                                  leader_agent_id, created_at, updated_at";

/// Binds `swarm` to [`UPSERT`] and runs it.
pub(crate) fn upsert(db: &mut dyn Db, swarm: &Swarm) -> Result<(), StoreError> {
    write(db, UPSERT, swarm).map(|_| ())
}

/// Binds `swarm` to [`INSERT_IF_ABSENT`] and runs it; answers whether it was inserted.
pub(crate) fn insert_if_absent(db: &mut dyn Db, swarm: &Swarm) -> Result<bool, StoreError> {
    write(db, INSERT_IF_ABSENT, swarm).map(|n| n > 0)
}

/// Binds `swarm` to `sql` (an insert of every column) and runs it.
fn write(db: &mut dyn Db, sql: &str, swarm: &Swarm) -> Result<u64, StoreError> {
    db.exec(
        sql,
        &params![
            id(&swarm.id),
            &swarm.name,
            &swarm.description,
            topology_str(swarm.topology),
            to_json(&swarm.config),
            swarm.status.as_str(),
            opt_id(&swarm.leader_agent_id),
            swarm.created_at.as_millis(),
            swarm.updated_at.as_millis(),
        ],
    )
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<Swarm, StoreError> {
    let c = Cols::new(row, "swarms");
    Ok(Swarm {
        id: c.id(0, "id")?,
        name: c.string(1, "name")?,
        description: c.string(2, "description")?,
        topology: c.enumeration(3, "topology")?,
        config: c.decode(4, "configuration")?,
        status: c.enumeration(5, "status")?,
        leader_agent_id: c.opt_id(6, "leader_agent_id")?,
        created_at: c.ts(7, "created_at")?,
        updated_at: c.ts(8, "updated_at")?,
    })
}

/// The topology as the API writes it.
pub(crate) fn topology_str(t: Topology) -> &'static str {
    match t {
        Topology::Star => "star",
        Topology::Mesh => "mesh",
        Topology::Hierarchical => "hierarchical",
        Topology::Ring => "ring",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_names_match_serde() {
        for t in [
            Topology::Star,
            Topology::Mesh,
            Topology::Hierarchical,
            Topology::Ring,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), topology_str(t));
        }
    }
}
