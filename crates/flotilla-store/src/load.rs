//! Reading the [`Snapshot`] the coordinator starts from.

use flotilla_core::{SwarmId, TaskStatus};

use crate::Snapshot;
use crate::error::StoreError;
use crate::rows::{Cols, agent, message, pool, swarm, task, token};
use crate::sql::{self, Db, Param, params};

/// Reads the snapshot; the caller wraps it in a read transaction.
pub(crate) fn load(db: &mut dyn Db, retain_terminal: usize) -> Result<Snapshot, StoreError> {
    load_scope(db, retain_terminal, None)
}

/// Reads what [`load`] reads of one swarm: the swarm, its pools, agents, tasks (unfinished,
/// and its `retain_terminal` most recently finished) and messages; no tokens. The next event
/// seq is the whole log's. What a coordinator of a cluster loads when it takes a swarm over.
pub(crate) fn load_swarm(
    db: &mut dyn Db,
    swarm: SwarmId,
    retain_terminal: usize,
) -> Result<Snapshot, StoreError> {
    load_scope(db, retain_terminal, Some(swarm))
}

/// [`load`] of every swarm (`None`) or of one.
fn load_scope(
    db: &mut dyn Db,
    retain_terminal: usize,
    swarm: Option<SwarmId>,
) -> Result<Snapshot, StoreError> {
    // One swarm: every query gets `swarm_id = ?1` (the swarm table `id = ?1`).
    let (only, of_swarm, and, bound) = match swarm {
        Some(s) => (
            " WHERE id = ?1",
            " WHERE swarm_id = ?1",
            " AND swarm_id = ?1",
            vec![Param::Id(crate::rows::id(&s))],
        ),
        None => ("", "", "", Vec::new()),
    };
    let bound = &bound[..];
    let swarms = sql::collect(
        db,
        &format!(
            "SELECT {} FROM swarms{only} ORDER BY created_at, id",
            swarm::COLUMNS
        ),
        bound,
        swarm::from_row,
    )?;

    let pools = sql::collect(
        db,
        &format!(
            "SELECT {} FROM swarm_pools{of_swarm} ORDER BY swarm_id, name",
            pool::COLUMNS
        ),
        bound,
        pool::from_row,
    )?;

    // Stopped agents are loaded too (a stopped managed agent stays in its pool, and a stopped
    // connected agent may come back); only unregistered ones are not.
    let agents = sql::collect(
        db,
        &format!(
            "SELECT {} FROM swarm_agents WHERE removed_at IS NULL{and}
             ORDER BY registered_at, id",
            agent::COLUMNS,
        ),
        bound,
        agent::from_row,
    )?;

    let mut tasks = sql::collect(
        db,
        &format!(
            "SELECT {} FROM swarm_tasks WHERE status IN ({}){and} ORDER BY created_at, id",
            task::COLUMNS,
            unfinished_statuses()
        ),
        bound,
        task::from_row,
    )?;
    if retain_terminal > 0 {
        // `completed_at` is set exactly on terminal tasks, and its partial index serves this
        // without a sort (a condition on `status` would lead the planner to the status index).
        let mut finished = sql::collect(
            db,
            &format!(
                "SELECT {} FROM swarm_tasks
                 WHERE completed_at IS NOT NULL{and}
                 ORDER BY completed_at DESC, id DESC LIMIT ?{}",
                task::COLUMNS,
                bound.len() + 1
            ),
            &[
                bound,
                &params![i64::try_from(retain_terminal).unwrap_or(i64::MAX)],
            ]
            .concat(),
            task::from_row,
        )?;
        finished.reverse();
        tasks.append(&mut finished);
    }

    let max_seq = sql::first(
        db,
        "SELECT COALESCE(MAX(seq), 0) FROM swarm_events",
        &[],
        |row| Cols::new(row, "swarm_events").i64(0, "seq"),
    )?
    .unwrap_or(0);

    let tokens = match swarm {
        Some(_) => Vec::new(),
        None => sql::collect(
            db,
            &format!(
                "SELECT {} FROM api_tokens WHERE revoked_at IS NULL ORDER BY created_at, id",
                token::COLUMNS
            ),
            &[],
            token::from_row,
        )?,
    };

    let messages = sql::collect(
        db,
        &messages_where(&format!("{}{and}", message::UNFINISHED)),
        bound,
        message::from_row,
    )?;
    let awaiting_requests = sql::collect(
        db,
        &messages_where(&format!("{}{and}", message::AWAITING)),
        bound,
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
pub(crate) fn messages_where(condition: &str) -> String {
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
