//! The `swarm_events` table: the append-only event log, keyed by `seq`.

use crate::sql::{Cells, Db, params};
use flotilla_core::Event;

use super::{Cols, id, opt_id};
use crate::error::StoreError;

/// Appends one event. A seq already stored is a [`StoreError::Conflict`]: the log is never
/// rewritten.
pub(crate) const INSERT: &str = "\
INSERT INTO swarm_events (seq, at, event_type, swarm_id, agent_id, task_id, detail)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Appends one event unless its seq is stored: the replay of a batch whose commit may have
/// landed (PostgreSQL lost the connection at the commit, so its outcome is unknown).
pub(crate) const INSERT_ONCE: &str = "\
INSERT INTO swarm_events (seq, at, event_type, swarm_id, agent_id, task_id, detail)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (seq) DO NOTHING";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "seq, at, event_type, swarm_id, agent_id, task_id, detail";

/// Binds `event` to [`INSERT`] (to [`INSERT_ONCE`] when `replay`) and runs it. An empty detail is stored as NULL.
pub(crate) fn insert(db: &mut dyn Db, event: &Event, replay: bool) -> Result<(), StoreError> {
    let detail = (!event.detail.is_empty()).then_some(event.detail.as_str());
    db.exec(
        if replay { INSERT_ONCE } else { INSERT },
        &params![
            event.seq as i64,
            event.at.as_millis(),
            event.kind.as_str(),
            id(&event.swarm_id),
            opt_id(&event.agent_id),
            opt_id(&event.task_id),
            detail,
        ],
    )?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<Event, StoreError> {
    let c = Cols::new(row, "swarm_events");
    Ok(Event {
        seq: c.u64(0, "seq")?,
        at: c.ts(1, "at")?,
        kind: c.enumeration(2, "event_type")?,
        swarm_id: c.id(3, "swarm_id")?,
        agent_id: c.opt_id(4, "agent_id")?,
        task_id: c.opt_id(5, "task_id")?,
        detail: c.opt_str(6, "detail")?.unwrap_or_default().to_owned(),
    })
}
