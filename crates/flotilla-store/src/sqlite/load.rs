//! Reading the [`Snapshot`] the coordinator starts from.

use flotilla_core::TaskStatus;
use rusqlite::Connection;

use super::rows::{self, agent, message, pool, swarm, task, token};
use crate::Snapshot;
use crate::error::StoreError;

/// Reads the snapshot; the caller wraps it in a read transaction.
pub(crate) fn load(conn: &Connection, retain_terminal: usize) -> Result<Snapshot, StoreError> {
    let swarms = rows::collect(
        conn,
        &format!(
            "SELECT {} FROM swarms ORDER BY created_at, id",
            swarm::COLUMNS
        ),
        [],
        swarm::from_row,
    )?;

    let pools = rows::collect(
        conn,
        &format!(
            "SELECT {} FROM swarm_pools ORDER BY swarm_id, name",
            pool::COLUMNS
        ),
        [],
        pool::from_row,
    )?;

    // Stopped agents are loaded too (a stopped managed agent stays in its pool, and a stopped
    // connected agent may come back); only unregistered ones are not.
    let agents = rows::collect(
        conn,
        &format!(
            "SELECT {} FROM swarm_agents WHERE removed_at IS NULL ORDER BY registered_at, id",
            agent::COLUMNS,
        ),
        [],
        agent::from_row,
    )?;

    let mut tasks = rows::collect(
        conn,
        &format!(
            "SELECT {} FROM swarm_tasks WHERE status IN ({}) ORDER BY created_at, id",
            task::COLUMNS,
            unfinished_statuses()
        ),
        [],
        task::from_row,
    )?;
    if retain_terminal > 0 {
        // `completed_at` is set exactly on terminal tasks, and its partial index serves this
        // without a sort (a condition on `status` would lead the planner to the status index).
        let mut finished = rows::collect(
            conn,
            &format!(
                "SELECT {} FROM swarm_tasks
                 WHERE completed_at IS NOT NULL
                 ORDER BY completed_at DESC, id DESC LIMIT ?1",
                task::COLUMNS
            ),
            [i64::try_from(retain_terminal).unwrap_or(i64::MAX)],
            task::from_row,
        )?;
        finished.reverse();
        tasks.append(&mut finished);
    }

    let max_seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM swarm_events")?
        .query_row([], |r| r.get(0))?;

    let tokens = rows::collect(
        conn,
        &format!(
            "SELECT {} FROM api_tokens WHERE revoked_at IS NULL ORDER BY created_at, id",
            token::COLUMNS
        ),
        [],
        token::from_row,
    )?;

    let messages = rows::collect(
        conn,
        &messages_where(message::UNFINISHED),
        [],
        message::from_row,
    )?;
    let awaiting_requests = rows::collect(
        conn,
        &messages_where(message::AWAITING),
        [],
        message::from_row,
    )?;

    Ok(Snapshot {
        swarms,
        pools,
        agents,
        tasks,
        next_event_seq: max_seq as u64 + 1,
        tokens,
        messages,
        awaiting_requests,
    })
}

/// The messages that meet `condition`, in arrival order: those in flight
/// ([`message::UNFINISHED`]), requests waiting for their response whatever their delivery
/// status ([`message::AWAITING`]).
fn messages_where(condition: &str) -> String {
    format!(
        "SELECT {} FROM agent_messages WHERE {condition} ORDER BY seq",
        message::COLUMNS
    )
}

/// `'blocked', 'queued', …`: the statuses that are not terminal.
fn unfinished_statuses() -> String {
    TaskStatus::ALL
        .iter()
        .filter(|s| !s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::sqlite::SyncMode;

    /// The plan SQLite chose for `sql`, one step a line.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let steps = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        steps.join("\n")
    }

    #[test]
    fn message_loads_read_their_partial_indexes_in_seq_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            SqliteStore::open(&dir.path().join("flotilla.db"), SyncMode::Normal).expect("open");
        let unfinished = plan(&store.conn, &messages_where(message::UNFINISHED));
        assert!(
            unfinished.contains("USING INDEX agent_messages_unfinished"),
            "{unfinished}"
        );
        let awaiting = plan(&store.conn, &messages_where(message::AWAITING));
        assert!(
            awaiting.contains("USING INDEX agent_messages_awaiting"),
            "{awaiting}"
        );
        for p in [unfinished, awaiting] {
            assert!(!p.contains("TEMP B-TREE"), "no sort: {p}");
        }
    }
}
