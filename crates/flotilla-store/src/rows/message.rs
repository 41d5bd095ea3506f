//! The `agent_messages` table: one row per [`Message`], in flight or finished (acknowledged or
//! dead), until its swarm is deleted or it is cleared from its inbox.

use crate::sql::{Cells, Db, params};
use flotilla_core::{Message, MessageId, ReplyState};

use super::{Cols, id, opt_id, opt_ts};
use crate::error::StoreError;

/// Inserts a message, or replaces the delivery state of the stored one with the same id.
///
/// What the sender gave (swarm, kind, sender, recipient, topic, priority, body, correlation,
/// sending instant) never changes, so the update leaves it as first written: SQLite rewrites
/// the entries of every index over a column an UPDATE sets, even to the same value (four
/// message indexes are built on these), and a body can be large. A dead message retried gets a
/// new seq, expiry and reply state, so those are updated with the delivery state.
pub(crate) const UPSERT: &str = "\
INSERT INTO agent_messages (id, swarm_id, kind, from_agent, to_agent, topic, priority, body,
                            correlation_id, reply_by, reply, created_at, expires_at, status,
                            deliveries, max_deliveries, deliver_after, ack_by, finished_at,
                            dead_reason, seq)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
        ?20, ?21)
ON CONFLICT (id) DO UPDATE SET
    reply_by = excluded.reply_by,
    reply = excluded.reply,
    expires_at = excluded.expires_at,
    status = excluded.status,
    deliveries = excluded.deliveries,
    max_deliveries = excluded.max_deliveries,
    deliver_after = excluded.deliver_after,
    ack_by = excluded.ack_by,
    finished_at = excluded.finished_at,
    dead_reason = excluded.dead_reason,
    seq = excluded.seq";

/// Removes a message (cleared from its inbox).
pub(crate) const DELETE: &str = "DELETE FROM agent_messages WHERE id = ?1";

/// Sets what became of a request.
pub(crate) const SET_REPLY: &str = "UPDATE agent_messages SET reply = ?2 WHERE id = ?1";

/// The condition that selects messages in flight (pending or delivered), written exactly as in
/// the partial index `agent_messages_unfinished`, so that the planner can use it.
pub(crate) const UNFINISHED: &str = "status IN ('pending', 'delivered')";

/// The condition that selects requests still waiting for their response; it implies the
/// condition of the partial index `agent_messages_awaiting`.
pub(crate) const AWAITING: &str = "kind = 'request' AND reply = 'awaiting'";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "id, swarm_id, kind, from_agent, to_agent, topic, priority, \
    body, correlation_id, reply_by, reply, created_at, expires_at, status, deliveries, \
    max_deliveries, deliver_after, ack_by, finished_at, dead_reason, seq";

/// Binds `message` to [`UPSERT`] and runs it.
pub(crate) fn upsert(db: &mut dyn Db, message: &Message) -> Result<(), StoreError> {
    db.exec(
        UPSERT,
        &params![
            id(&message.id),
            id(&message.swarm_id),
            message.kind.as_str(),
            opt_id(&message.from),
            opt_id(&message.to),
            &message.topic,
            message.priority.as_str(),
            message.body.get(),
            opt_id(&message.correlation_id),
            opt_ts(message.reply_by),
            message.reply.map(reply_str),
            message.created_at.as_millis(),
            opt_ts(message.expires_at),
            message.status.as_str(),
            message.deliveries,
            message.max_deliveries,
            opt_ts(message.deliver_after),
            opt_ts(message.ack_by),
            opt_ts(message.finished_at),
            &message.dead_reason,
            message.seq as i64,
        ],
    )?;
    Ok(())
}

/// Removes a message with [`DELETE`].
pub(crate) fn delete(db: &mut dyn Db, message: &MessageId) -> Result<(), StoreError> {
    db.exec(DELETE, &params![id(message)])?;
    Ok(())
}

/// Records what became of a request with [`SET_REPLY`]; a request not stored (its
/// swarm deleted, say) is left alone.
pub(crate) fn set_reply(
    db: &mut dyn Db,
    request: &MessageId,
    reply: ReplyState,
) -> Result<(), StoreError> {
    db.exec(SET_REPLY, &params![id(request), reply_str(reply)])?;
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<Message, StoreError> {
    let c = Cols::new(row, "agent_messages");
    Ok(Message {
        id: c.id(0, "id")?,
        swarm_id: c.id(1, "swarm_id")?,
        kind: c.enumeration(2, "kind")?,
        from: c.opt_id(3, "from_agent")?,
        to: c.opt_id(4, "to_agent")?,
        topic: c.opt_string(5, "topic")?,
        priority: c.enumeration(6, "priority")?,
        body: c.json(7, "body")?,
        correlation_id: c.opt_id(8, "correlation_id")?,
        reply_by: c.opt_ts(9, "reply_by")?,
        reply: c.opt_enumeration(10, "reply")?,
        created_at: c.ts(11, "created_at")?,
        expires_at: c.opt_ts(12, "expires_at")?,
        status: c.enumeration(13, "status")?,
        deliveries: c.int(14, "deliveries")?,
        max_deliveries: c.int(15, "max_deliveries")?,
        deliver_after: c.opt_ts(16, "deliver_after")?,
        ack_by: c.opt_ts(17, "ack_by")?,
        finished_at: c.opt_ts(18, "finished_at")?,
        dead_reason: c.opt_string(19, "dead_reason")?,
        seq: c.u64(20, "seq")?,
    })
}

/// The reply state as the API writes it.
fn reply_str(r: ReplyState) -> &'static str {
    match r {
        ReplyState::Awaiting => "awaiting",
        ReplyState::Answered => "answered",
        ReplyState::TimedOut => "timed_out",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::{MessageKind, MessagePriority, MessageStatus};

    #[test]
    fn column_list_has_one_name_per_index_read() {
        assert_eq!(COLUMNS.split(',').count(), 21);
        assert_eq!(UPSERT.matches('?').count(), 21);
    }

    #[test]
    fn enum_names_match_serde() {
        for r in [
            ReplyState::Awaiting,
            ReplyState::Answered,
            ReplyState::TimedOut,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), reply_str(r));
        }
        for k in [
            MessageKind::Message,
            MessageKind::Request,
            MessageKind::Response,
            MessageKind::Event,
            MessageKind::Broadcast,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for p in MessagePriority::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for s in MessageStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn the_fixed_conditions_name_the_right_values() {
        let unfinished: Vec<String> = MessageStatus::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(UNFINISHED, format!("status IN ({})", unfinished.join(", ")));
        assert_eq!(
            AWAITING,
            format!(
                "kind = '{}' AND reply = '{}'",
                MessageKind::Request.as_str(),
                reply_str(ReplyState::Awaiting)
            )
        );
    }
}
