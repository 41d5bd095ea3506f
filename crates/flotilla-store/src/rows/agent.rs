//! The `swarm_agents` table: one row per [`Agent`], stopped and removed ones included; the
//! process side of a managed agent ([`flotilla_core::Managed`]) as JSON text, its topic
//! subscriptions as a JSON list (NULL for none).

use crate::sql::{Cells, Db, params};
use flotilla_core::{Agent, AgentRole, ReportedHealth};

use super::{Cols, id, opt_ts, strings_json, to_json};
use crate::error::StoreError;

/// Inserts or replaces an agent by id.
pub(crate) const UPSERT: &str = "\
INSERT INTO swarm_agents (id, swarm_id, agent_type, agent_name, capabilities, max_concurrent_tasks,
                          role, status, reported_health, metadata, resource_usage, current_tasks,
                          tasks_completed, tasks_failed, registered_at, last_heartbeat_at,
                          lease_until, stopped_at, removed_at, managed, health, checkpoints,
                          requested_role, subscriptions)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
        ?21, ?22, ?23, ?24)
ON CONFLICT (id) DO UPDATE SET
    swarm_id = excluded.swarm_id,
    agent_type = excluded.agent_type,
    agent_name = excluded.agent_name,
    capabilities = excluded.capabilities,
    max_concurrent_tasks = excluded.max_concurrent_tasks,
    role = excluded.role,
    status = excluded.status,
    reported_health = excluded.reported_health,
    metadata = excluded.metadata,
    resource_usage = excluded.resource_usage,
    current_tasks = excluded.current_tasks,
    tasks_completed = excluded.tasks_completed,
    tasks_failed = excluded.tasks_failed,
    registered_at = excluded.registered_at,
    last_heartbeat_at = excluded.last_heartbeat_at,
    lease_until = excluded.lease_until,
    stopped_at = excluded.stopped_at,
    removed_at = excluded.removed_at,
    managed = excluded.managed,
    health = excluded.health,
    checkpoints = excluded.checkpoints,
    requested_role = excluded.requested_role,
    subscriptions = excluded.subscriptions";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "id, swarm_id, agent_type, agent_name, capabilities, \
    max_concurrent_tasks, role, status, reported_health, metadata, resource_usage, \
    current_tasks, tasks_completed, tasks_failed, registered_at, last_heartbeat_at, \
    lease_until, stopped_at, removed_at, managed, health, checkpoints, requested_role, \
    subscriptions";

/// Binds `agent` to [`UPSERT`] and runs it.
pub(crate) fn upsert(db: &mut dyn Db, agent: &Agent) -> Result<(), StoreError> {
    let current_tasks = if agent.current_tasks.is_empty() {
        "[]".to_owned()
    } else {
        to_json(&agent.current_tasks)
    };
    db.exec(
        UPSERT,
        &params![
            id(&agent.id),
            id(&agent.swarm_id),
            &agent.agent_type,
            &agent.name,
            strings_json(&agent.capabilities),
            agent.max_concurrent_tasks,
            role_str(agent.role),
            agent.status.as_str(),
            health_str(agent.reported_health),
            agent.metadata.get(),
            to_json(&agent.resource_usage),
            current_tasks,
            agent.tasks_completed as i64,
            agent.tasks_failed as i64,
            agent.registered_at.as_millis(),
            agent.last_heartbeat_at.as_millis(),
            agent.lease_until.as_millis(),
            opt_ts(agent.stopped_at),
            opt_ts(agent.removed_at),
            agent.managed.as_ref().map(to_json),
            to_json(&agent.health),
            (!agent.checkpoints.is_empty()).then(|| to_json(&agent.checkpoints)),
            role_str(agent.requested_role),
            (!agent.subscriptions.is_empty()).then(|| to_json(&agent.subscriptions)),
        ],
    )?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<Agent, StoreError> {
    let c = Cols::new(row, "swarm_agents");
    Ok(Agent {
        id: c.id(0, "id")?,
        swarm_id: c.id(1, "swarm_id")?,
        agent_type: c.string(2, "agent_type")?,
        name: c.string(3, "agent_name")?,
        capabilities: c.strings(4, "capabilities")?,
        max_concurrent_tasks: c.int(5, "max_concurrent_tasks")?,
        role: c.enumeration(6, "role")?,
        status: c.enumeration(7, "status")?,
        reported_health: c.enumeration(8, "reported_health")?,
        metadata: c.json(9, "metadata")?,
        resource_usage: c.decode(10, "resource_usage")?,
        current_tasks: c.decode(11, "current_tasks")?,
        tasks_completed: c.u64(12, "tasks_completed")?,
        tasks_failed: c.u64(13, "tasks_failed")?,
        registered_at: c.ts(14, "registered_at")?,
        last_heartbeat_at: c.ts(15, "last_heartbeat_at")?,
        lease_until: c.ts(16, "lease_until")?,
        stopped_at: c.opt_ts(17, "stopped_at")?,
        removed_at: c.opt_ts(18, "removed_at")?,
        managed: c.opt_decode(19, "managed")?,
        health: c.opt_decode(20, "health")?.unwrap_or_default(),
        checkpoints: c.opt_decode(21, "checkpoints")?.unwrap_or_default(),
        requested_role: c.enumeration(22, "requested_role")?,
        subscriptions: c.opt_decode(23, "subscriptions")?.unwrap_or_default(),
    })
}

/// The role as the API writes it.
fn role_str(r: AgentRole) -> &'static str {
    match r {
        AgentRole::Leader => "leader",
        AgentRole::Coordinator => "coordinator",
        AgentRole::Supervisor => "supervisor",
        AgentRole::Worker => "worker",
    }
}

/// The reported health as the API writes it.
pub(crate) fn health_str(h: ReportedHealth) -> &'static str {
    match h {
        ReportedHealth::Healthy => "healthy",
        ReportedHealth::Degraded => "degraded",
        ReportedHealth::Unhealthy => "unhealthy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_list_has_one_name_per_index_read() {
        assert_eq!(COLUMNS.split(',').count(), 24);
        assert_eq!(UPSERT.matches('?').count(), 24);
    }

    #[test]
    fn enum_names_match_serde() {
        for r in [
            AgentRole::Leader,
            AgentRole::Coordinator,
            AgentRole::Supervisor,
            AgentRole::Worker,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), role_str(r));
        }
        for h in [
            ReportedHealth::Healthy,
            ReportedHealth::Degraded,
            ReportedHealth::Unhealthy,
        ] {
            assert_eq!(serde_json::to_value(h).unwrap(), health_str(h));
        }
    }
}
