//! Writing one [`Batch`] inside the caller's transaction.
//!
//! A batch gathers the changes of many API calls, so the same agent or task often appears in it
//! several times (an agent turns busy, then idle; a short task is submitted, started and
//! completed). Rows are whole, so only the last row of each id is written. Swarm rows are all
//! written, in order: a rename chain within one batch is valid only step by step under the
//! unique name.
//!
//! Pool names, unlike ids, can be used again: a pool deleted and created anew within one batch
//! appears in both `deleted_pools` and `pools`. Deletions are applied first, so the pool rows
//! (which the core emits only for pools that exist after its commands) are what remains.
//!
//! Message ids, like checkpoint ids, are never used again: a message cleared from its inbox is
//! gone for good, so its deletion is applied after the message rows of the batch. What became
//! of a request (`message_replies`) is applied last, over the request's row whether it was
//! written in this batch or an earlier one.

use std::collections::HashSet;
use std::hash::Hash;

use flotilla_core::{AgentId, MessageId, SwarmId, TaskId};

use flotilla_core::metrics::Prune;

use crate::Batch;
use crate::error::StoreError;
use crate::rows::{agent, checkpoint, event, id, message, metric, pool, swarm, task, token};
use crate::sql::{Db, params};

/// Removes a swarm and everything that belongs to it except its events.
const DELETE_SWARM: [&str; 11] = [
    "DELETE FROM agent_messages WHERE swarm_id = ?1",
    "DELETE FROM swarm_metrics WHERE swarm_id = ?1",
    "DELETE FROM agent_heartbeats WHERE swarm_id = ?1",
    "DELETE FROM agent_checkpoints WHERE swarm_id = ?1",
    "DELETE FROM agent_states
     WHERE agent_id IN (SELECT id FROM swarm_agents WHERE swarm_id = ?1)",
    "DELETE FROM task_dependencies
     WHERE task_id IN (SELECT id FROM swarm_tasks WHERE swarm_id = ?1)",
    "DELETE FROM swarm_tasks WHERE swarm_id = ?1",
    "DELETE FROM api_tokens
     WHERE agent_id IN (SELECT id FROM swarm_agents WHERE swarm_id = ?1)",
    "DELETE FROM swarm_agents WHERE swarm_id = ?1",
    "DELETE FROM swarm_pools WHERE swarm_id = ?1",
    "DELETE FROM swarms WHERE id = ?1",
];

/// Writes `batch` in the caller's transaction on `db`; the caller commits.
pub(crate) fn write(db: &mut dyn Db, batch: &Batch) -> Result<(), StoreError> {
    write_replaying(db, batch, false)
}

/// [`write`], where `replay` says the batch may already be stored in part (an earlier commit
/// of it had an unknown outcome): events already stored are left alone instead of refused.
pub(crate) fn write_replaying(
    db: &mut dyn Db,
    batch: &Batch,
    replay: bool,
) -> Result<(), StoreError> {
    let changes = &batch.changes;

    // Ids are never reused, so a swarm deleted in this batch is gone for good: rows of it that
    // come before the deletion in the batch must not bring it back.
    let deleted: HashSet<SwarmId> = changes.deleted_swarms.iter().copied().collect();
    let live = |swarm: &SwarmId| deleted.is_empty() || !deleted.contains(swarm);
    let dead_agents: HashSet<AgentId> = changes
        .agents
        .iter()
        .filter(|a| !live(&a.swarm_id))
        .map(|a| a.id)
        .collect();

    if !batch.tokens.is_empty() {
        for t in &batch.tokens {
            if t.agent_id.is_none_or(|a| !dead_agents.contains(&a)) {
                token::upsert(db, t)?;
            }
        }
    }

    // Before the swarm deletions, which remove the states of their agents with them.
    if !changes.agent_states.is_empty() {
        for (agent, state, at) in last_of_each(&changes.agent_states, |s| s.0) {
            checkpoint::upsert_state(db, agent, state, *at)?;
        }
    }

    for swarm_id in &changes.deleted_swarms {
        let swarm_id = id(swarm_id);
        for sql in DELETE_SWARM {
            db.exec(sql, &params![swarm_id])?;
        }
    }

    if !changes.swarms.is_empty() {
        for s in changes.swarms.iter().filter(|s| live(&s.id)) {
            swarm::upsert(db, s)?;
        }
    }

    if !changes.deleted_pools.is_empty() {
        for (swarm_id, name) in &changes.deleted_pools {
            if live(swarm_id) {
                pool::delete(db, swarm_id, name)?;
            }
        }
    }

    if !changes.pools.is_empty() {
        for p in last_of_each(&changes.pools, |p| (p.swarm_id, p.name.as_str())) {
            if live(&p.swarm_id) {
                pool::upsert(db, p)?;
            }
        }
    }

    if !changes.agents.is_empty() {
        for a in last_of_each(&changes.agents, |a| a.id) {
            if live(&a.swarm_id) {
                agent::upsert(db, a)?;
            }
        }
    }

    if !changes.tasks.is_empty() {
        for t in last_of_each::<_, TaskId>(&changes.tasks, |t| t.id) {
            if live(&t.swarm_id) {
                task::upsert(db, t)?;
                if !t.depends_on.is_empty() {
                    task::insert_dependencies(db, t)?;
                }
            }
        }
    }

    // A checkpoint deleted in this batch may have been taken in it too: deletions go last.
    if !changes.checkpoints.is_empty() {
        for c in changes.checkpoints.iter().filter(|c| live(&c.swarm_id)) {
            checkpoint::upsert(db, c)?;
        }
    }
    if !changes.deleted_checkpoints.is_empty() {
        for c in &changes.deleted_checkpoints {
            checkpoint::delete(db, c)?;
        }
    }

    if !changes.messages.is_empty() {
        for m in last_of_each::<_, MessageId>(&changes.messages, |m| m.id) {
            if live(&m.swarm_id) {
                message::upsert(db, m)?;
            }
        }
    }
    if !changes.deleted_messages.is_empty() {
        for m in &changes.deleted_messages {
            message::delete(db, m)?;
        }
    }
    if !changes.message_replies.is_empty() {
        for (request, reply) in &changes.message_replies {
            message::set_reply(db, request, *reply)?;
        }
    }

    // Metrics of a swarm deleted in this batch were removed with it; a delta of it written
    // afterwards would leave an orphan row.
    if !changes.metric_rows.is_empty() {
        metric::merge_rows(db, changes.metric_rows.iter().filter(|r| live(&r.swarm_id)))?;
    }
    if !changes.heartbeat_samples.is_empty() {
        for h in changes
            .heartbeat_samples
            .iter()
            .filter(|h| live(&h.swarm_id))
        {
            metric::insert_heartbeat(db, h)?;
        }
    }
    for prune in &changes.metric_prunes {
        match *prune {
            Prune::Metrics(period, before) => {
                db.exec(
                    metric::PRUNE_METRICS,
                    &params![period.as_str(), before.as_millis()],
                )?;
            }
            Prune::Heartbeats(before) => {
                db.exec(metric::PRUNE_HEARTBEATS, &params![before.as_millis()])?;
            }
        }
    }

    if !changes.events.is_empty() {
        for e in &changes.events {
            event::insert(db, e, replay)?;
        }
    }

    if !batch.audit.is_empty() {
        for e in &batch.audit {
            token::insert_audit(db, e)?;
        }
    }
    if let Some(before) = batch.audit_prune_before {
        db.exec(token::PRUNE_AUDIT, &params![before.as_millis()])?;
    }
    Ok(())
}

/// The last row of each key, in the order of those last rows.
fn last_of_each<'a, T, K: Eq + Hash>(rows: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<&'a T> {
    if rows.len() < 2 {
        return rows.iter().collect();
    }
    let mut seen = HashSet::with_capacity(rows.len());
    let mut last: Vec<&T> = rows.iter().rev().filter(|r| seen.insert(key(*r))).collect();
    last.reverse();
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_of_each_keeps_the_last_row_per_key_in_order() {
        let rows = [(1, 'a'), (2, 'b'), (1, 'c'), (3, 'd'), (2, 'e')];
        let last: Vec<char> = last_of_each(&rows, |r| r.0).iter().map(|r| r.1).collect();
        assert_eq!(last, ['c', 'd', 'e']);
    }
}
