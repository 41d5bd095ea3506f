//! The message history: one message by id, and pages of messages by swarm, agent, status,
//! topic or request, newest first.
//!
//! The coordinator's memory holds only the messages in flight; acknowledged and dead ones (the
//! dead-letter list included) are read from the store.

use flotilla_core::api::Page;
use flotilla_core::{AgentId, Message, MessageId, MessageStatus, SwarmId};

use super::Reader;
use crate::cursor::{Conditions, MessageCursor, NEWEST_FIRST, fetch, page};
use crate::error::StoreError;
use crate::rows::{self, message};
use crate::sql::{self, Param, params};

/// Which of an agent's messages a list shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// The messages it received and the ones it sent.
    #[default]
    Both,
    /// The messages sent to it (its inbox, past and present).
    Inbound,
    /// The messages it sent.
    Outbound,
}

/// Which messages a list shows; `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only this swarm's messages.
    pub swarm: Option<SwarmId>,
    /// Only messages to or from this agent, as `direction` says.
    pub agent: Option<AgentId>,
    /// With `agent`: received, sent, or both. Without `agent` it does not filter.
    pub direction: Direction,
    /// Only messages in this status (`dead` for the dead-letter list).
    pub status: Option<MessageStatus>,
    /// Only messages published to this topic (exactly this one, not a pattern).
    pub topic: Option<String>,
    /// Only responses to this request.
    pub correlation_id: Option<MessageId>,
}

impl Reader {
    /// The message with this id, whatever its status; `None` if it never existed, was cleared
    /// from its inbox or went with its swarm.
    pub fn get_message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.with(|db| {
            let sql = format!(
                "SELECT {} FROM agent_messages WHERE id = ?1",
                message::COLUMNS
            );
            let mut found = sql::collect(db, &sql, &params![rows::id(&id)], message::from_row)?;
            Ok(found.pop())
        })
    }

    /// One page of the messages that pass `filter`, newest first (by sending instant, then
    /// id).
    ///
    /// `cursor` is the `next_cursor` of the previous page, or `None` for the first page; a
    /// cursor this store did not produce for a message list is [`StoreError::InvalidCursor`].
    /// A `limit` of 0 is taken as 1. `next_cursor` is `None` on the last page.
    pub fn list_messages(
        &self,
        filter: &MessageFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Message>, StoreError> {
        let after = cursor.map(MessageCursor::decode).transpose()?;
        let (sql, params) = list_query(filter, after, limit);
        let items = self.with(|db| sql::collect(db, &sql, &params, message::from_row))?;
        Ok(page(items, limit, |m: &Message| MessageCursor {
            created_at: m.created_at,
            id: m.id,
        }))
    }
}

/// The query of one page of [`Reader::list_messages`], with its parameters.
fn list_query(
    filter: &MessageFilter,
    after: Option<MessageCursor>,
    limit: usize,
) -> (String, Vec<Param<'static>>) {
    let mut conditions = Conditions::default();
    if let Some(swarm) = filter.swarm {
        conditions.add("swarm_id = ?", Param::from(swarm.to_string()));
    }
    if let Some(status) = filter.status {
        conditions.add("status = ?", Param::from(status.as_str().to_owned()));
    }
    if let Some(topic) = &filter.topic {
        conditions.add("topic = ?", Param::from(topic.clone()));
    }
    if let Some(request) = filter.correlation_id {
        conditions.add("correlation_id = ?", Param::from(request.to_string()));
    }
    conditions.before(after);
    let fetch = fetch(limit);

    let side = |column: &'static str, agent: AgentId| {
        let mut c = conditions.clone();
        c.add(column, Param::from(agent.to_string()));
        c
    };
    let one = |c: &Conditions| {
        let sql = format!(
            "SELECT {} FROM agent_messages{} {NEWEST_FIRST}",
            message::COLUMNS,
            c.clause()
        );
        let mut params = c.params().to_vec();
        params.push(fetch.clone());
        (sql, params)
    };
    match (filter.agent, filter.direction) {
        (None, _) => one(&conditions),
        (Some(agent), Direction::Inbound) => one(&side("to_agent = ?", agent)),
        (Some(agent), Direction::Outbound) => one(&side("from_agent = ?", agent)),
        // Each side's index yields its newest rows in order: merge a page's worth of each,
        // rather than an OR that reads and sorts the agent's whole history. UNION (not ALL)
        // lists a message an agent sent itself once.
        (Some(agent), Direction::Both) => {
            let (inbound, mut params) = one(&side("to_agent = ?", agent));
            let (outbound, more) = one(&side("from_agent = ?", agent));
            params.extend(more);
            params.push(fetch.clone());
            let sql = format!(
                "SELECT {columns} FROM ({inbound}) AS inbound
                 UNION
                 SELECT {columns} FROM ({outbound}) AS outbound
                 {NEWEST_FIRST}",
                columns = message::COLUMNS,
            );
            (sql, params)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::sqlite::{SqliteStore, SyncMode};
    use uuid::Uuid;

    /// The plan SQLite chooses for one page of `filter`, one step a line.
    fn plan(reader: &Reader, filter: &MessageFilter) -> String {
        let (sql, params) = list_query(filter, None, 10);
        reader
            .with(|db| {
                let steps = sql::collect(db, &format!("EXPLAIN QUERY PLAN {sql}"), &params, |r| {
                    rows::Cols::new(r, "plan").string(3, "detail")
                })?;
                Ok(steps.join("\n"))
            })
            .expect("plan")
    }

    #[test]
    fn history_pages_are_read_from_indexes_without_reading_everything() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            SqliteStore::open(&dir.path().join("flotilla.db"), SyncMode::Normal).expect("open");
        let reader = store.reader().expect("reader");
        let agent = Some(AgentId(Uuid::from_u128(1)));
        let filter = |direction| MessageFilter {
            agent,
            direction,
            ..MessageFilter::default()
        };

        let inbound = plan(&reader, &filter(Direction::Inbound));
        assert!(inbound.contains("INDEX agent_messages_to"), "{inbound}");
        assert!(!inbound.contains("TEMP B-TREE"), "{inbound}");
        let outbound = plan(&reader, &filter(Direction::Outbound));
        assert!(outbound.contains("INDEX agent_messages_from"), "{outbound}");
        assert!(!outbound.contains("TEMP B-TREE"), "{outbound}");
        // Both: each side in index order; only the merged page of at most 2 × (limit + 1)
        // rows is sorted.
        let both = plan(&reader, &filter(Direction::Both));
        assert!(both.contains("INDEX agent_messages_to"), "{both}");
        assert!(both.contains("INDEX agent_messages_from"), "{both}");

        let dead_letters = plan(
            &reader,
            &MessageFilter {
                swarm: Some(SwarmId(Uuid::from_u128(2))),
                status: Some(MessageStatus::Dead),
                ..MessageFilter::default()
            },
        );
        assert!(
            dead_letters.contains("INDEX agent_messages_swarm_status"),
            "{dead_letters}"
        );
        assert!(!dead_letters.contains("TEMP B-TREE"), "{dead_letters}");

        let swarm = plan(
            &reader,
            &MessageFilter {
                swarm: Some(SwarmId(Uuid::from_u128(2))),
                ..MessageFilter::default()
            },
        );
        assert!(swarm.contains("INDEX agent_messages_swarm "), "{swarm}");
        assert!(!swarm.contains("TEMP B-TREE"), "{swarm}");

        // The response to a request.
        let responses = plan(
            &reader,
            &MessageFilter {
                correlation_id: Some(MessageId(Uuid::from_u128(3))),
                ..MessageFilter::default()
            },
        );
        assert!(
            responses.contains("INDEX agent_messages_correlation"),
            "{responses}"
        );
        assert!(!responses.contains("TEMP B-TREE"), "{responses}");
    }
}
