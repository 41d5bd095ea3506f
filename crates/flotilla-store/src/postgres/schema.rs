//! The PostgreSQL schema and its migrations.
//!
//! The tables, columns and indexes are SQLite's (see [`crate::sqlite::schema`]) in PostgreSQL's
//! types: instants, counts and flags are `BIGINT`, text and JSON documents `TEXT` (kept as the
//! text they arrived as, so both backends read back exactly what was written), samples `DOUBLE
//! PRECISION`. The audit log's seq is an identity column.
//!
//! Version numbers are shared with SQLite: one schema version means the same tables on both.
//! The first PostgreSQL migration creates everything of versions 1 to 8 at once; each later
//! version is one migration in both lists. Migrations run in one transaction under an advisory
//! lock, so several coordinators starting at once on an empty database create it once, and a
//! database newer than this build is refused.

use postgres::GenericClient;

use crate::error::StoreError;
use crate::sqlite::schema::SCHEMA_VERSION;

/// Versions 1 to 8: every table of SQLite's migrations 1 to 8.
const VERSIONS_1_TO_8: &str = r#"
CREATE TABLE swarms (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    description      TEXT NOT NULL,
    topology         TEXT NOT NULL,
    configuration    TEXT NOT NULL,
    status           TEXT NOT NULL,
    leader_agent_id  TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE swarm_agents (
    id                    TEXT PRIMARY KEY,
    swarm_id              TEXT NOT NULL,
    agent_type            TEXT NOT NULL,
    agent_name            TEXT NOT NULL,
    capabilities          TEXT NOT NULL,
    max_concurrent_tasks  BIGINT NOT NULL,
    role                  TEXT NOT NULL,
    status                TEXT NOT NULL,
    reported_health       TEXT NOT NULL,
    metadata              TEXT NOT NULL,
    resource_usage        TEXT NOT NULL,
    current_tasks         TEXT NOT NULL,
    tasks_completed       BIGINT NOT NULL,
    tasks_failed          BIGINT NOT NULL,
    registered_at         BIGINT NOT NULL,
    last_heartbeat_at     BIGINT NOT NULL,
    lease_until           BIGINT NOT NULL,
    stopped_at            BIGINT,
    removed_at            BIGINT,
    managed               TEXT,
    health                TEXT,
    checkpoints           TEXT,
    requested_role        TEXT NOT NULL DEFAULT 'worker',
    subscriptions         TEXT
);
CREATE INDEX swarm_agents_swarm ON swarm_agents (swarm_id);

CREATE TABLE swarm_pools (
    swarm_id              TEXT NOT NULL,
    name                  TEXT NOT NULL,
    min_agents            BIGINT NOT NULL,
    max_agents            BIGINT NOT NULL,
    capabilities          TEXT NOT NULL,
    max_concurrent_tasks  BIGINT NOT NULL,
    template              TEXT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    checkpoints           TEXT,
    priority              BIGINT NOT NULL DEFAULT 5,
    resources             TEXT,
    scaling               TEXT,
    desired_agents        BIGINT,
    PRIMARY KEY (swarm_id, name)
);

CREATE TABLE swarm_tasks (
    id                     TEXT PRIMARY KEY,
    swarm_id               TEXT NOT NULL,
    parent_task_id         TEXT,
    task_type              TEXT NOT NULL,
    payload                TEXT NOT NULL,
    priority               BIGINT NOT NULL,
    required_capabilities  TEXT NOT NULL,
    depends_on             TEXT,
    affinity_key           TEXT,
    idempotency_key        TEXT,
    max_attempts           BIGINT NOT NULL,
    backoff_initial_ms     BIGINT NOT NULL,
    backoff_max_ms         BIGINT NOT NULL,
    timeout_ms             BIGINT NOT NULL,
    deadline               BIGINT,
    status                 TEXT NOT NULL,
    assigned_agent_id      TEXT,
    attempt_count          BIGINT NOT NULL,
    result                 TEXT,
    error_message          TEXT,
    queued_at              BIGINT,
    queue_seq              BIGINT NOT NULL DEFAULT 0,
    run_after              BIGINT,
    assigned_at            BIGINT,
    started_at             BIGINT,
    timeout_at             BIGINT,
    completed_at           BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    detail                 TEXT,
    ordered                BIGINT NOT NULL DEFAULT 0,
    delegated_by           TEXT,
    delegation             TEXT
);
CREATE INDEX swarm_tasks_created ON swarm_tasks (created_at, id);
CREATE INDEX swarm_tasks_swarm_created ON swarm_tasks (swarm_id, created_at, id);
CREATE INDEX swarm_tasks_swarm_status ON swarm_tasks (swarm_id, status, created_at, id);
CREATE INDEX swarm_tasks_status ON swarm_tasks (status, created_at, id);
CREATE INDEX swarm_tasks_agent ON swarm_tasks (assigned_agent_id, created_at, id)
    WHERE assigned_agent_id IS NOT NULL;
CREATE INDEX swarm_tasks_completed ON swarm_tasks (completed_at, id)
    WHERE completed_at IS NOT NULL;
CREATE UNIQUE INDEX swarm_tasks_idempotency ON swarm_tasks (swarm_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_dependencies (
    task_id             TEXT NOT NULL,
    depends_on_task_id  TEXT NOT NULL,
    dependency_type     TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on_task_id)
);
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on_task_id);

CREATE TABLE swarm_events (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    swarm_id    TEXT NOT NULL,
    agent_id    TEXT,
    task_id     TEXT,
    detail      TEXT
);
CREATE INDEX swarm_events_swarm ON swarm_events (swarm_id, seq);
CREATE INDEX swarm_events_agent ON swarm_events (agent_id, seq) WHERE agent_id IS NOT NULL;
CREATE INDEX swarm_events_task ON swarm_events (task_id, seq) WHERE task_id IS NOT NULL;

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    agent_id    TEXT,
    label       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    swarm_id    TEXT,
    expires_at  BIGINT
);

CREATE TABLE agent_checkpoints (
    id               TEXT PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    swarm_id         TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    trigger          TEXT NOT NULL,
    description      TEXT NOT NULL,
    state            TEXT,
    tasks            TEXT NOT NULL,
    workspace        TEXT,
    workspace_error  TEXT
);
CREATE INDEX agent_checkpoints_agent ON agent_checkpoints (agent_id, created_at);

CREATE TABLE agent_states (
    agent_id    TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE agent_messages (
    id              TEXT PRIMARY KEY,
    swarm_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    from_agent      TEXT,
    to_agent        TEXT,
    topic           TEXT,
    priority        TEXT NOT NULL,
    body            TEXT NOT NULL,
    correlation_id  TEXT,
    reply_by        BIGINT,
    reply           TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    status          TEXT NOT NULL,
    deliveries      BIGINT NOT NULL,
    max_deliveries  BIGINT NOT NULL,
    deliver_after   BIGINT,
    ack_by          BIGINT,
    finished_at     BIGINT,
    dead_reason     TEXT,
    seq             BIGINT NOT NULL
);
CREATE INDEX agent_messages_unfinished ON agent_messages (seq)
    WHERE status IN ('pending', 'delivered');
CREATE INDEX agent_messages_to ON agent_messages (to_agent, created_at, id)
    WHERE to_agent IS NOT NULL;
CREATE INDEX agent_messages_from ON agent_messages (from_agent, created_at, id)
    WHERE from_agent IS NOT NULL;
CREATE INDEX agent_messages_swarm ON agent_messages (swarm_id, created_at, id);
CREATE INDEX agent_messages_swarm_status ON agent_messages (swarm_id, status, created_at, id);
CREATE INDEX agent_messages_correlation ON agent_messages (correlation_id, created_at, id)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX agent_messages_awaiting ON agent_messages (seq) WHERE reply = 'awaiting';

CREATE TABLE swarm_metrics (
    swarm_id      TEXT NOT NULL,
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    period        TEXT NOT NULL,
    period_start  BIGINT NOT NULL,
    data          TEXT NOT NULL,
    PRIMARY KEY (swarm_id, scope, key, period, period_start)
);
CREATE INDEX swarm_metrics_age ON swarm_metrics (period, period_start);

CREATE TABLE agent_heartbeats (
    agent_id         TEXT NOT NULL,
    swarm_id         TEXT NOT NULL,
    recorded_at      BIGINT NOT NULL,
    status           TEXT NOT NULL,
    reported_health  TEXT NOT NULL,
    cpu_percent      DOUBLE PRECISION,
    memory_mb        DOUBLE PRECISION,
    resource_usage   TEXT NOT NULL,
    current_tasks    TEXT NOT NULL,
    queue_depth      BIGINT NOT NULL,
    PRIMARY KEY (agent_id, recorded_at)
);
CREATE INDEX agent_heartbeats_age ON agent_heartbeats (recorded_at);
CREATE INDEX agent_heartbeats_swarm ON agent_heartbeats (swarm_id);

CREATE TABLE audit_log (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    token_id    TEXT,
    role        TEXT,
    agent_id    TEXT,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    remote      TEXT,
    request_id  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_token ON audit_log (token_id, seq);
"#;

/// Version 9: the cluster's tables (see `postgres::cluster`): the coordinators sharing the
/// database, each swarm's lease, the sequence of lease epochs, and the database clock in
/// milliseconds that every lease instant is measured by.
const VERSION_9: &str = r#"
CREATE TABLE cluster_nodes (
    id            TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    stopped_at    BIGINT,
    version       TEXT NOT NULL
);

CREATE TABLE swarm_leases (
    swarm_id     TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    epoch        BIGINT NOT NULL,
    acquired_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX swarm_leases_owner ON swarm_leases (owner);

CREATE SEQUENCE cluster_epochs;

CREATE FUNCTION flotilla_now_ms() RETURNS BIGINT
    LANGUAGE SQL VOLATILE
    AS $$ SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT $$;
"#;

/// Each migration with the versions it brings the database to, in order.
const MIGRATIONS: &[(std::ops::RangeInclusive<u32>, &str)] =
    &[(1..=8, VERSIONS_1_TO_8), (9..=9, VERSION_9)];

/// The advisory lock key migrations hold ("flotilla" in ASCII, folded into 63 bits).
const MIGRATION_LOCK: i64 = 0x666c_6f74_696c_6c61 & i64::MAX;

/// Brings the database up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) fn migrate(client: &mut postgres::Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version     BIGINT PRIMARY KEY,
            applied_at  BIGINT NOT NULL
        )",
    )?;
    let found: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
        .get(0);
    let found =
        u32::try_from(found).map_err(|_| StoreError::bad_value("schema_version.version", found))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (versions, sql) in MIGRATIONS {
        if *versions.end() <= found {
            continue;
        }
        if *versions.start() <= found {
            return Err(StoreError::Other(format!(
                "the database is at schema version {found}, inside migration {}..={}: \
                 it was not made by flotilla",
                versions.start(),
                versions.end()
            )));
        }
        tx.batch_execute(sql)?;
        for version in versions.clone() {
            record(&mut tx, version)?;
        }
        tracing::info!(version = versions.end(), "applied database migration");
    }
    tx.commit()?;
    Ok(())
}

/// Records that `version` was applied.
fn record(tx: &mut impl GenericClient, version: u32) -> Result<(), StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    tx.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
        &[&i64::from(version), &now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_reach_the_version_sqlite_reaches() {
        let last = MIGRATIONS.last().map(|(v, _)| *v.end());
        assert_eq!(last, Some(SCHEMA_VERSION));
        let mut next = 1;
        for (versions, _) in MIGRATIONS {
            assert_eq!(*versions.start(), next, "versions follow each other");
            next = versions.end() + 1;
        }
    }
}
