//! Messages between agents and agents' subscriptions: every field reads back equal through the
//! reader, `load` and a reopened file; batches upsert (last row wins), delete and set replies
//! as the core expects; `load` hands back exactly what `Fleet::restore` needs; the history is
//! filtered and paged newest first; a deleted swarm takes its messages.

#[macro_use]
mod common;

use std::collections::HashSet;

use common::*;
use flotilla_core::{
    AgentId, AgentStatus, Changes, Message, MessageKind, MessageStatus, ReplyState, SwarmId,
};
use flotilla_store::{Direction, MessageFilter, Reader, Store, StoreError, TaskFilter};

/// Commits `messages` (and their swarms) in one batch.
fn commit_messages(store: &mut dyn Store, swarms: &[SwarmId], messages: Vec<Message>) {
    commit(
        store,
        Changes {
            swarms: swarms
                .iter()
                .enumerate()
                .map(|(i, id)| flotilla_core::Swarm {
                    id: *id,
                    ..swarm(i as u128 + 1, &format!("swarm-{i}"))
                })
                .collect(),
            messages,
            ..Changes::default()
        },
    );
}

/// Every page of a list, following cursors; checks each page's size.
fn all_pages(reader: &Reader, filter: &MessageFilter, limit: usize) -> Vec<Message> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = reader
            .list_messages(filter, limit, cursor.as_deref())
            .unwrap();
        assert!(page.items.len() <= limit);
        out.extend(page.items.iter().cloned());
        match page.next_cursor {
            Some(next) => {
                assert_eq!(page.items.len(), limit, "only the last page may be short");
                cursor = Some(next);
            }
            None => return out,
        }
    }
}

fn newest_first(mut messages: Vec<Message>) -> Vec<Message> {
    messages.sort_by_key(|m| std::cmp::Reverse((m.created_at, m.id)));
    messages
}

fn every_message_round_trips_with_every_field_set_or_unset(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm_id(1);
    let kinds = [
        MessageKind::Message,
        MessageKind::Request,
        MessageKind::Response,
        MessageKind::Event,
        MessageKind::Broadcast,
    ];
    let replies = [
        None,
        Some(ReplyState::Awaiting),
        Some(ReplyState::Answered),
        Some(ReplyState::TimedOut),
    ];
    let mut messages = Vec::new();
    for (i, status) in MessageStatus::ALL.into_iter().enumerate() {
        for (j, priority) in flotilla_core::MessagePriority::ALL.into_iter().enumerate() {
            let n = (i * 10 + j) as u128;
            let mut full = full_message(100 + n, s, status);
            full.kind = kinds[(i + j) % kinds.len()];
            full.priority = priority;
            full.reply = replies[(i + j) % replies.len()];
            messages.push(full);
            let mut bare = bare_message(200 + n, s, status, None, None);
            bare.priority = priority;
            bare.kind = kinds[(i + j + 1) % kinds.len()];
            messages.push(bare);
        }
    }
    commit_messages(&mut store, &[s], messages.clone());

    let reader = store.reader().unwrap();
    for m in &messages {
        assert_eq!(reader.get_message(m.id).unwrap().as_ref(), Some(m), "{m:?}");
    }
    assert_eq!(reader.get_message(message_id(999)).unwrap(), None);
    assert_eq!(
        all_pages(&reader, &MessageFilter::default(), 7),
        newest_first(messages.clone())
    );

    let in_flight: Vec<Message> = messages
        .iter()
        .filter(|m| !m.status.is_final())
        .cloned()
        .collect();
    let snapshot = store.load(0).unwrap();
    assert_eq!(
        messages_by_id(snapshot.messages.clone()),
        messages_by_id(in_flight)
    );

    drop(reader);
    drop(store);
    let mut store = reopen(&dir);
    assert_eq!(store.load(0).unwrap(), snapshot);
    let reader = store.reader().unwrap();
    for m in &messages {
        assert_eq!(reader.get_message(m.id).unwrap().as_ref(), Some(m));
    }
}

fn the_last_message_row_wins_within_a_batch_and_across_batches(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm_id(1);
    let pending = bare_message(1, s, MessageStatus::Pending, None, Some(agent_id(1)));
    let delivered = Message {
        status: MessageStatus::Delivered,
        deliveries: 1,
        ack_by: Some(ts(30_001)),
        ..pending.clone()
    };
    let acked = Message {
        status: MessageStatus::Acked,
        ack_by: None,
        finished_at: Some(ts(30_002)),
        ..delivered.clone()
    };
    commit_messages(&mut store, &[s], vec![pending.clone(), delivered.clone()]);
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_message(pending.id).unwrap(), Some(delivered));

    // Across batches, every delivery field of the later row replaces the stored one, back to
    // unset ones: a dead message retried is pending again with a new seq.
    commit_messages(&mut store, &[s], vec![acked.clone()]);
    assert_eq!(reader.get_message(pending.id).unwrap(), Some(acked));
    let full = full_message(2, s, MessageStatus::Dead);
    commit_messages(&mut store, &[s], vec![full.clone()]);
    let retried = Message {
        status: MessageStatus::Pending,
        reply: None,
        reply_by: None,
        expires_at: None,
        deliveries: 0,
        deliver_after: None,
        ack_by: None,
        finished_at: None,
        dead_reason: None,
        seq: 7,
        ..full
    };
    commit_messages(&mut store, &[s], vec![retried.clone()]);
    assert_eq!(
        reader.get_message(retried.id).unwrap(),
        Some(retried.clone())
    );
    assert_eq!(store.load(0).unwrap().messages, vec![retried]);
}

fn cleared_messages_are_deleted_whichever_batch_wrote_them(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm_id(1);
    let to = Some(agent_id(1));
    let old = bare_message(1, s, MessageStatus::Pending, None, to);
    let kept = bare_message(2, s, MessageStatus::Pending, None, to);
    commit_messages(&mut store, &[s], vec![old.clone(), kept.clone()]);

    // One cleared from an earlier batch, one written and cleared in this one.
    let new = bare_message(3, s, MessageStatus::Pending, None, to);
    commit(
        &mut store,
        Changes {
            messages: vec![new.clone()],
            deleted_messages: vec![old.id, new.id, message_id(999)],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_message(old.id).unwrap(), None);
    assert_eq!(reader.get_message(new.id).unwrap(), None);
    assert_eq!(reader.get_message(kept.id).unwrap(), Some(kept.clone()));
    assert_eq!(store.load(0).unwrap().messages, vec![kept]);
}

fn replies_are_set_on_requests_of_earlier_batches_and_of_the_same_batch(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm_id(1);
    let (a, b) = (Some(agent_id(1)), Some(agent_id(2)));
    let earlier = request(1, s, MessageStatus::Acked, a, b);
    commit_messages(&mut store, &[s], vec![earlier.clone()]);

    // The same batch writes a request as awaiting and says it timed out: the reply, applied
    // after the rows, wins. A reply to a request never stored changes nothing.
    let same = request(2, s, MessageStatus::Delivered, a, b);
    let response = Message {
        kind: MessageKind::Response,
        correlation_id: Some(earlier.id),
        ..bare_message(3, s, MessageStatus::Pending, b, a)
    };
    commit(
        &mut store,
        Changes {
            messages: vec![same.clone(), response.clone()],
            message_replies: vec![
                (earlier.id, ReplyState::Answered),
                (same.id, ReplyState::TimedOut),
                (message_id(999), ReplyState::Answered),
            ],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    let answered = Message {
        reply: Some(ReplyState::Answered),
        ..earlier
    };
    let timed_out = Message {
        reply: Some(ReplyState::TimedOut),
        ..same
    };
    assert_eq!(
        reader.get_message(answered.id).unwrap(),
        Some(answered.clone())
    );
    assert_eq!(
        reader.get_message(timed_out.id).unwrap(),
        Some(timed_out.clone())
    );
    assert_eq!(reader.get_message(message_id(999)).unwrap(), None);
    let snapshot = store.load(0).unwrap();
    assert!(snapshot.awaiting_requests.is_empty());
    assert_eq!(snapshot.messages, vec![timed_out, response.clone()]);
    assert_eq!(
        reader
            .list_messages(
                &MessageFilter {
                    correlation_id: Some(answered.id),
                    ..MessageFilter::default()
                },
                10,
                None
            )
            .unwrap()
            .items,
        vec![response]
    );
}

fn load_hands_over_the_messages_in_flight_in_seq_order_and_the_awaiting_requests(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm_id(1);
    let (a, b) = (Some(agent_id(1)), Some(agent_id(2)));
    let mut messages = Vec::new();
    // Seqs run against creation order and ids: load must sort by seq.
    for (i, status) in MessageStatus::ALL.into_iter().enumerate() {
        for k in 0..3u128 {
            let n = i as u128 * 3 + k;
            let mut m = bare_message(n, s, status, a, b);
            m.seq = 1_000 - n as u64;
            messages.push(m);
        }
    }
    // Requests: awaiting in every status, and answered or timed out ones (not awaiting).
    let mut awaiting = Vec::new();
    for (i, status) in MessageStatus::ALL.into_iter().enumerate() {
        let mut r = request(100 + i as u128, s, status, a, b);
        r.seq = 2_000 - i as u64;
        awaiting.push(r.clone());
        messages.push(r);
    }
    for (i, reply) in [ReplyState::Answered, ReplyState::TimedOut]
        .into_iter()
        .enumerate()
    {
        let mut r = request(200 + i as u128, s, MessageStatus::Pending, a, b);
        r.reply = Some(reply);
        messages.push(r);
    }
    commit_messages(&mut store, &[s], messages.clone());

    let mut in_flight: Vec<Message> = messages
        .iter()
        .filter(|m| matches!(m.status, MessageStatus::Pending | MessageStatus::Delivered))
        .cloned()
        .collect();
    in_flight.sort_by_key(|m| m.seq);
    awaiting.sort_by_key(|m| m.seq);

    let snapshot = store.load(0).unwrap();
    assert_eq!(snapshot.messages, in_flight);
    assert_eq!(snapshot.awaiting_requests, awaiting);
    let (state, _) = snapshot.into_parts();
    assert_eq!(state.messages, in_flight);
    assert_eq!(state.awaiting_requests, awaiting);
}

/// 25 messages in two swarms between three agents (and the operator), over every status, two
/// topics and two requests; many share a sending instant, so pages must break ties by id.
fn history(backend: Backend) -> (TestDb, Reader, Vec<Message>) {
    let (dir, mut store) = open_on(backend);
    let swarms = [swarm_id(1), swarm_id(2)];
    let agents = [
        Some(agent_id(1)),
        Some(agent_id(2)),
        Some(agent_id(3)),
        None,
    ];
    let mut messages = Vec::new();
    for i in 0..25u128 {
        let from = agents[(i % 4) as usize];
        // Every fifth message an agent sends itself.
        let to = if i % 5 == 0 {
            from.or(agents[0])
        } else {
            agents[((i + 1) % 3) as usize]
        };
        let status = MessageStatus::ALL[(i % 4) as usize];
        let mut m = bare_message(i, swarms[(i % 2) as usize], status, from, to);
        m.created_at = ts((i / 3) as i64);
        m.topic = match i % 3 {
            0 => Some("tasks.created".to_owned()),
            1 => Some("health".to_owned()),
            _ => None,
        };
        m.correlation_id = (i % 6 == 0).then(|| message_id(1_000 + i % 12));
        messages.push(m);
    }
    commit_messages(&mut store, &swarms, messages.clone());
    let reader = store.reader().unwrap();
    (dir, reader, messages)
}

/// What `filter` should select, checked in Rust.
fn passes(filter: &MessageFilter, m: &Message) -> bool {
    let agent = match filter.agent {
        None => true,
        Some(a) => match filter.direction {
            Direction::Both => m.to == Some(a) || m.from == Some(a),
            Direction::Inbound => m.to == Some(a),
            Direction::Outbound => m.from == Some(a),
        },
    };
    agent
        && filter.swarm.is_none_or(|s| m.swarm_id == s)
        && filter.status.is_none_or(|s| m.status == s)
        && filter
            .topic
            .as_ref()
            .is_none_or(|t| m.topic.as_ref() == Some(t))
        && filter
            .correlation_id
            .is_none_or(|c| m.correlation_id == Some(c))
}

fn the_history_is_filtered_and_paged_newest_first_under_every_filter(backend: Backend) {
    let (_dir, reader, messages) = history(backend);
    let mut filters = vec![MessageFilter::default()];
    for direction in [Direction::Both, Direction::Inbound, Direction::Outbound] {
        for agent in [agent_id(1), agent_id(2), agent_id(3), agent_id(9)] {
            filters.push(MessageFilter {
                agent: Some(agent),
                direction,
                ..MessageFilter::default()
            });
            filters.push(MessageFilter {
                agent: Some(agent),
                direction,
                swarm: Some(swarm_id(1)),
                status: Some(MessageStatus::Dead),
                ..MessageFilter::default()
            });
        }
    }
    for status in MessageStatus::ALL {
        filters.push(MessageFilter {
            status: Some(status),
            ..MessageFilter::default()
        });
        filters.push(MessageFilter {
            swarm: Some(swarm_id(2)),
            status: Some(status),
            ..MessageFilter::default()
        });
    }
    for swarm in [swarm_id(1), swarm_id(2), swarm_id(3)] {
        filters.push(MessageFilter {
            swarm: Some(swarm),
            ..MessageFilter::default()
        });
    }
    for topic in ["tasks.created", "health", "tasks"] {
        filters.push(MessageFilter {
            topic: Some(topic.to_owned()),
            ..MessageFilter::default()
        });
    }
    filters.push(MessageFilter {
        correlation_id: Some(message_id(1_000)),
        ..MessageFilter::default()
    });
    // Without an agent, a direction does not filter.
    filters.push(MessageFilter {
        direction: Direction::Inbound,
        ..MessageFilter::default()
    });

    let mut seen_any = 0;
    for filter in &filters {
        let expected = newest_first(
            messages
                .iter()
                .filter(|m| passes(filter, m))
                .cloned()
                .collect(),
        );
        seen_any += usize::from(!expected.is_empty());
        for limit in [1, 4, 25, 100] {
            let listed = all_pages(&reader, filter, limit);
            assert_eq!(listed, expected, "{filter:?} limit {limit}");
            let ids: HashSet<_> = listed.iter().map(|m| m.id).collect();
            assert_eq!(ids.len(), listed.len(), "each message once: {filter:?}");
        }
    }
    assert!(seen_any > filters.len() / 2, "the filters select something");

    // A message an agent sent itself is in both of its directions, and listed once in both.
    let own = messages.iter().find(|m| m.from.is_some() && m.from == m.to);
    let own = own.expect("a message to oneself");
    for direction in [Direction::Both, Direction::Inbound, Direction::Outbound] {
        let listed = all_pages(
            &reader,
            &MessageFilter {
                agent: own.from,
                direction,
                ..MessageFilter::default()
            },
            3,
        );
        assert_eq!(listed.iter().filter(|m| m.id == own.id).count(), 1);
    }
}

fn a_page_of_messages_is_cut_at_the_limit_with_a_cursor_that_goes_on(backend: Backend) {
    let (_dir, reader, messages) = history(backend);
    let all = newest_first(messages);
    let first = reader
        .list_messages(&MessageFilter::default(), 10, None)
        .unwrap();
    assert_eq!(first.items, all[..10]);
    let cursor = first.next_cursor.expect("a second page");
    let second = reader
        .list_messages(&MessageFilter::default(), 10, Some(&cursor))
        .unwrap();
    assert_eq!(second.items, all[10..20]);
    let third = reader
        .list_messages(&MessageFilter::default(), 10, second.next_cursor.as_deref())
        .unwrap();
    assert_eq!(third.items, all[20..]);
    assert_eq!(third.next_cursor, None);

    // A limit of 0 is taken as 1; an exact fit has no next page.
    let one = reader
        .list_messages(&MessageFilter::default(), 0, None)
        .unwrap();
    assert_eq!(one.items, all[..1]);
    let exact = reader
        .list_messages(&MessageFilter::default(), 25, None)
        .unwrap();
    assert_eq!((exact.items.len(), exact.next_cursor), (25, None));
}

fn a_bad_message_cursor_is_an_invalid_cursor_error(backend: Backend) {
    let (_dir, reader, _) = history(backend);
    // A task list's cursor is not a message list's.
    let (_tasks_dir, mut tasks_store) = open_on(backend);
    commit(
        &mut tasks_store,
        Changes {
            tasks: (0..3).map(|i| queued(i, swarm_id(1), i as i64)).collect(),
            ..Changes::default()
        },
    );
    let task_cursor = tasks_store
        .reader()
        .unwrap()
        .list_tasks(&TaskFilter::default(), 1, None)
        .unwrap()
        .next_cursor
        .expect("a task cursor");
    for bad in [
        "",
        "m1.",
        "m1.5",
        "m1.x.0000",
        "garbage",
        task_cursor.as_str(),
    ] {
        assert_eq!(
            reader.list_messages(&MessageFilter::default(), 10, Some(bad)),
            Err(StoreError::InvalidCursor(bad.to_owned())),
            "{bad:?}"
        );
    }
}

fn a_deleted_swarm_takes_its_messages_and_skips_rows_of_the_same_batch(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let (doomed, kept) = (swarm_id(1), swarm_id(2));
    let a = Some(agent_id(1));
    let old = request(1, doomed, MessageStatus::Pending, None, a);
    let finished = bare_message(2, doomed, MessageStatus::Acked, a, a);
    let other = request(3, kept, MessageStatus::Delivered, a, None);
    commit_messages(
        &mut store,
        &[doomed, kept],
        vec![old.clone(), finished.clone(), other.clone()],
    );

    let late = bare_message(4, doomed, MessageStatus::Pending, None, a);
    commit(
        &mut store,
        Changes {
            messages: vec![late.clone()],
            deleted_swarms: vec![doomed],
            message_replies: vec![(old.id, ReplyState::Answered)],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    for m in [&old, &finished, &late] {
        assert_eq!(reader.get_message(m.id).unwrap(), None, "{:?}", m.id);
    }
    assert_eq!(reader.get_message(other.id).unwrap(), Some(other.clone()));
    assert_eq!(
        all_pages(&reader, &MessageFilter::default(), 10),
        vec![other.clone()]
    );
    drop(reader);
    drop(store);
    let snapshot = reopen(&dir).load(0).unwrap();
    assert_eq!(snapshot.messages, vec![other.clone()]);
    assert_eq!(snapshot.awaiting_requests, vec![other]);
}

fn agents_subscriptions_round_trip_and_can_be_cleared(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let mut a = bare_agent(1, s.id, AgentStatus::Idle);
    a.subscriptions = vec!["tasks.*".to_owned(), "a.*.c".to_owned(), "*".to_owned()];
    let full = agent(2, s.id, AgentStatus::Busy);
    assert!(!full.subscriptions.is_empty());
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone()],
            agents: vec![a.clone(), full.clone()],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_agent(a.id).unwrap().as_ref(), Some(&a));
    assert_eq!(reader.get_agent(full.id).unwrap().as_ref(), Some(&full));

    // Unsubscribed from everything: none read back.
    let cleared = flotilla_core::Agent {
        subscriptions: Vec::new(),
        ..a.clone()
    };
    commit(
        &mut store,
        Changes {
            agents: vec![cleared.clone()],
            ..Changes::default()
        },
    );
    assert_eq!(reader.get_agent(a.id).unwrap(), Some(cleared.clone()));
    drop(reader);
    drop(store);
    let mut loaded = reopen(&dir).load(0).unwrap().agents;
    loaded.sort_by_key(|x: &flotilla_core::Agent| x.id);
    assert_eq!(loaded, vec![cleared, full]);
}

fn an_agent_with_no_messages_has_an_empty_history(backend: Backend) {
    let (_dir, reader, _) = history(backend);
    let nobody: AgentId = agent_id(42);
    for direction in [Direction::Both, Direction::Inbound, Direction::Outbound] {
        let page = reader
            .list_messages(
                &MessageFilter {
                    agent: Some(nobody),
                    direction,
                    ..MessageFilter::default()
                },
                10,
                None,
            )
            .unwrap();
        assert!(page.items.is_empty());
        assert_eq!(page.next_cursor, None);
    }
}

on_both_backends!(
    every_message_round_trips_with_every_field_set_or_unset,
    the_last_message_row_wins_within_a_batch_and_across_batches,
    cleared_messages_are_deleted_whichever_batch_wrote_them,
    replies_are_set_on_requests_of_earlier_batches_and_of_the_same_batch,
    load_hands_over_the_messages_in_flight_in_seq_order_and_the_awaiting_requests,
    the_history_is_filtered_and_paged_newest_first_under_every_filter,
    a_page_of_messages_is_cut_at_the_limit_with_a_cursor_that_goes_on,
    a_bad_message_cursor_is_an_invalid_cursor_error,
    a_deleted_swarm_takes_its_messages_and_skips_rows_of_the_same_batch,
    agents_subscriptions_round_trip_and_can_be_cleared,
    an_agent_with_no_messages_has_an_empty_history,
);
