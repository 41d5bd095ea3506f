//! The database schema and its migrations.
//!
//! `schema_version` records every migration applied; [`migrate`] applies the missing ones in one
//! `IMMEDIATE` transaction, so two processes opening a new file at once cannot both create it.
//! A file whose version is newer than this build knows is refused rather than misread.
//!
//! Table and column names follow the swarm PRD (`swarms`, `swarm_agents`, `swarm_pools`,
//! `swarm_tasks`, `task_dependencies`, `swarm_events`, `agent_messages`) where they fit. Instants are INTEGER
//! milliseconds since the epoch, ids are UUID text, JSON documents are stored as the text they
//! arrived as. There are no foreign keys: the core keeps the state consistent, and checking
//! references on every upsert would cost the hot path for nothing.
//!
//! Index choice is driven by the write path: every index costs each insert, and each update
//! that sets its columns (a task is inserted once and updated a few times as it runs), so there
//! are only the indexes the reads need: the task and message lists' filters in
//! `(created_at, id)` order, the start-up load, idempotency keys, and the event log's filters.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};

use crate::error::StoreError;

/// Migration 1: every table of the first release.
const MIGRATION_1: &str = r#"
CREATE TABLE swarms (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    description      TEXT NOT NULL,
    topology         TEXT NOT NULL,
    configuration    TEXT NOT NULL,
    status           TEXT NOT NULL,
    leader_agent_id  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE swarm_agents (
    id                    TEXT PRIMARY KEY,
    swarm_id              TEXT NOT NULL,
    agent_type            TEXT NOT NULL,
    agent_name            TEXT NOT NULL,
    capabilities          TEXT NOT NULL,
    max_concurrent_tasks  INTEGER NOT NULL,
    role                  TEXT NOT NULL,
    status                TEXT NOT NULL,
    reported_health       TEXT NOT NULL,
    metadata              TEXT NOT NULL,
    resource_usage        TEXT NOT NULL,
    current_tasks         TEXT NOT NULL,
    tasks_completed       INTEGER NOT NULL,
    tasks_failed          INTEGER NOT NULL,
    registered_at         INTEGER NOT NULL,
    last_heartbeat_at     INTEGER NOT NULL,
    lease_until           INTEGER NOT NULL,
    stopped_at            INTEGER,
    -- Set when the agent was unregistered; such a row is kept for lookups but not loaded.
    removed_at            INTEGER,
    -- The process side of a managed agent, as JSON; NULL for a connected agent.
    managed               TEXT
);
CREATE INDEX swarm_agents_swarm ON swarm_agents (swarm_id);

CREATE TABLE swarm_pools (
    swarm_id              TEXT NOT NULL,
    name                  TEXT NOT NULL,
    min_agents            INTEGER NOT NULL,
    max_agents            INTEGER NOT NULL,
    capabilities          TEXT NOT NULL,
    max_concurrent_tasks  INTEGER NOT NULL,
    -- The agent template of a managed pool, as JSON; NULL for a pool of connected agents.
    template              TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    PRIMARY KEY (swarm_id, name)
) WITHOUT ROWID;

CREATE TABLE swarm_tasks (
    id                     TEXT PRIMARY KEY,
    swarm_id               TEXT NOT NULL,
    parent_task_id         TEXT,
    task_type              TEXT NOT NULL,
    payload                TEXT NOT NULL,
    priority               INTEGER NOT NULL,
    required_capabilities  TEXT NOT NULL,
    depends_on             TEXT,
    affinity_key           TEXT,
    idempotency_key        TEXT,
    max_attempts           INTEGER NOT NULL,
    backoff_initial_ms     INTEGER NOT NULL,
    backoff_max_ms         INTEGER NOT NULL,
    timeout_ms             INTEGER NOT NULL,
    deadline               INTEGER,
    status                 TEXT NOT NULL,
    assigned_agent_id      TEXT,
    attempt_count          INTEGER NOT NULL,
    result                 TEXT,
    error_message          TEXT,
    queued_at              INTEGER,
    -- The task's place in its swarm's ready queue, so that a restart keeps FIFO order.
    queue_seq              INTEGER NOT NULL DEFAULT 0,
    run_after              INTEGER,
    assigned_at            INTEGER,
    started_at             INTEGER,
    timeout_at             INTEGER,
    completed_at           INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    detail                 TEXT
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
) WITHOUT ROWID;
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on_task_id);

CREATE TABLE swarm_events (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
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
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
"#;

/// Migration 2: the coordinator's judgement of each agent's health (state, history, circuit
/// breaker, recovery ladder), as JSON; NULL reads as healthy.
const MIGRATION_2: &str = r#"
ALTER TABLE swarm_agents ADD COLUMN health TEXT;
"#;

/// Migration 3: checkpoints (the whole rows; the agent keeps a short index of its own, and a
/// pool its checkpoint policy) and agents' reported state documents.
const MIGRATION_3: &str = r#"
ALTER TABLE swarm_agents ADD COLUMN checkpoints TEXT;
ALTER TABLE swarm_pools ADD COLUMN checkpoints TEXT;

CREATE TABLE agent_checkpoints (
    id               TEXT PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    swarm_id         TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
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
    updated_at  INTEGER NOT NULL
);
"#;

/// Migration 4: a pool's priority level, resource request, autoscaling policies (JSON) and the
/// size the autoscaler or a manual scale asked for.
const MIGRATION_4: &str = r#"
ALTER TABLE swarm_pools ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
ALTER TABLE swarm_pools ADD COLUMN resources TEXT;
ALTER TABLE swarm_pools ADD COLUMN scaling TEXT;
ALTER TABLE swarm_pools ADD COLUMN desired_agents INTEGER;
"#;

/// Migration 5: topologies. The role an agent asked for (the topology gives `role`); ordered
/// tasks, subtasks' delegating agent, and a delegated task's subtasks and their outcomes (JSON).
/// The swarm's topology settings live in its `configuration` JSON.
const MIGRATION_5: &str = r#"
ALTER TABLE swarm_agents ADD COLUMN requested_role TEXT NOT NULL DEFAULT 'worker';
ALTER TABLE swarm_tasks ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE swarm_tasks ADD COLUMN delegated_by TEXT;
ALTER TABLE swarm_tasks ADD COLUMN delegation TEXT;
"#;

/// Migration 6: messages between agents and agents' topic subscriptions (a JSON list of
/// patterns; NULL for none).
///
/// A message row keeps every field of the core's `Message`: kind, priority, status and reply as
/// the API writes them, the body as the JSON text it arrived as. Its indexes serve: the start-up
/// load of messages in flight in seq order (partial, so it holds only those, and its condition
/// must stay word for word the one `load` uses); an agent's history, received and sent, newest
/// first; a swarm's history, whole or by status (the dead-letter list); the responses to a
/// request; the requests still waiting for a response (partial). Only the two status indexes
/// and the awaiting one change after a message is inserted.
const MIGRATION_6: &str = r#"
ALTER TABLE swarm_agents ADD COLUMN subscriptions TEXT;

CREATE TABLE agent_messages (
    id              TEXT PRIMARY KEY,
    swarm_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    -- NULL: sent by an operator or the coordinator.
    from_agent      TEXT,
    -- NULL: a response to an operator's request.
    to_agent        TEXT,
    topic           TEXT,
    priority        TEXT NOT NULL,
    body            TEXT NOT NULL,
    correlation_id  TEXT,
    reply_by        INTEGER,
    -- Requests only: awaiting, answered or timed_out.
    reply           TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    status          TEXT NOT NULL,
    deliveries      INTEGER NOT NULL,
    max_deliveries  INTEGER NOT NULL,
    deliver_after   INTEGER,
    ack_by          INTEGER,
    finished_at     INTEGER,
    dead_reason     TEXT,
    -- The message's place in arrival order; inboxes are FIFO within a priority.
    seq             INTEGER NOT NULL
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
"#;

/// Migration 7: metrics (the PRD's `swarm_metrics`) and heartbeat history (`agent_heartbeats`).
///
/// A metric row is one bucket of one series (the swarm, a pool, an agent or a task type) over
/// one period (`1m`, `5m`, `1h`, `1d`) starting at `period_start`; `data` is the bucket as
/// compact JSON (counts, duration sketches, gauge sums). The primary key serves the API's reads
/// (one series, a time range) and the merge on write; the second index serves the hourly
/// retention prune, period by period. Heartbeat samples are read per agent newest first and
/// pruned by age.
const MIGRATION_7: &str = r#"
CREATE TABLE swarm_metrics (
    swarm_id      TEXT NOT NULL,
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    period        TEXT NOT NULL,
    period_start  INTEGER NOT NULL,
    data          TEXT NOT NULL,
    PRIMARY KEY (swarm_id, scope, key, period, period_start)
) WITHOUT ROWID;
CREATE INDEX swarm_metrics_age ON swarm_metrics (period, period_start);

CREATE TABLE agent_heartbeats (
    agent_id         TEXT NOT NULL,
    swarm_id         TEXT NOT NULL,
    recorded_at      INTEGER NOT NULL,
    status           TEXT NOT NULL,
    reported_health  TEXT NOT NULL,
    cpu_percent      REAL,
    memory_mb        REAL,
    resource_usage   TEXT NOT NULL,
    current_tasks    TEXT NOT NULL,
    queue_depth      INTEGER NOT NULL,
    PRIMARY KEY (agent_id, recorded_at)
) WITHOUT ROWID;
CREATE INDEX agent_heartbeats_age ON agent_heartbeats (recorded_at);
CREATE INDEX agent_heartbeats_swarm ON agent_heartbeats (swarm_id);
"#;

/// Migration 8: tokens with the roles `operator` and `viewer` may be limited to one swarm and may
/// expire; the audit log records who called what, from where, and how it ended (read newest
/// first, pruned by age).
const MIGRATION_8: &str = r#"
ALTER TABLE api_tokens ADD COLUMN swarm_id TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;

CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    token_id    TEXT,
    role        TEXT,
    agent_id    TEXT,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    remote      TEXT,
    request_id  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_token ON audit_log (token_id, seq);
"#;

/// Migration 9: nothing in SQLite. PostgreSQL's migration 9 creates the cluster's tables
/// (coordinators and swarm leases); a SQLite file only ever has one coordinator. The version is
/// taken all the same, so that one schema version means the same thing on both backends.
const MIGRATION_9: &str = "-- the cluster's tables exist only in PostgreSQL";

/// Every migration, in order; migration `n` is at index `n - 1`.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version     INTEGER PRIMARY KEY,
            applied_at  INTEGER NOT NULL
        )",
    )?;
    let found: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    let found =
        u32::try_from(found).map_err(|_| StoreError::bad_value("schema_version.version", found))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            (version, now),
        )?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit()?;
    Ok(())
}
