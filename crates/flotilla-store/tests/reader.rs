//! The reader: task lists with filters and pages, lookups by id and idempotency key, and the
//! event log's filters.

#[macro_use]
mod common;

use std::collections::HashSet;

use common::*;
use flotilla_core::{Changes, EventKind, Json, Task, TaskId, TaskState, TaskStatus};
use flotilla_store::{EventFilter, Reader, StoreError, TaskFilter};

/// Every page of a list, following cursors; checks each page's size.
fn all_pages(reader: &Reader, filter: &TaskFilter, limit: usize) -> Vec<Task> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = reader.list_tasks(filter, limit, cursor.as_deref()).unwrap();
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

/// 200 tasks in two swarms, over four statuses, two types and two agents; many share a
/// creation instant, so pages must break ties by id.
fn fixture(backend: Backend) -> (TestDb, Reader, Vec<Task>) {
    let (dir, mut store) = open_on(backend);
    let swarms = [swarm(1, "a"), swarm(2, "b")];
    let mut tasks = Vec::new();
    for i in 0..200u128 {
        let s = &swarms[(i % 2) as usize];
        let mut t = queued(i, s.id, (i / 7) as i64);
        t.task_type = if i % 3 == 0 { "build" } else { "test" }.to_owned();
        let agent = agent_id(i % 2);
        t.state = match i % 4 {
            0 => t.state,
            1 => TaskState::Running {
                agent_id: agent,
                started_at: ts(1),
                timeout_at: ts(2),
            },
            2 => TaskState::Completed {
                agent_id: agent,
                result: Json::null(),
                completed_at: ts(3),
            },
            _ => TaskState::Failed {
                error: error(Some(agent), Some(1)),
                completed_at: ts(4),
            },
        };
        tasks.push(t);
    }
    commit(
        &mut store,
        Changes {
            swarms: swarms.to_vec(),
            tasks: tasks.clone(),
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    (dir, reader, tasks)
}

fn newest_first(mut tasks: Vec<Task>) -> Vec<Task> {
    tasks.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
    tasks
}

fn pages_cover_every_task_once_newest_first_under_every_filter(backend: Backend) {
    let (_dir, reader, tasks) = fixture(backend);
    let filters = [
        TaskFilter::default(),
        TaskFilter {
            swarm: Some(swarm_id(1)),
            ..TaskFilter::default()
        },
        TaskFilter {
            status: Some(TaskStatus::Running),
            ..TaskFilter::default()
        },
        TaskFilter {
            swarm: Some(swarm_id(2)),
            status: Some(TaskStatus::Failed),
            ..TaskFilter::default()
        },
        TaskFilter {
            task_type: Some("build".to_owned()),
            ..TaskFilter::default()
        },
        TaskFilter {
            agent: Some(agent_id(1)),
            ..TaskFilter::default()
        },
        TaskFilter {
            swarm: Some(swarm_id(1)),
            status: Some(TaskStatus::Completed),
            task_type: Some("test".to_owned()),
            agent: Some(agent_id(0)),
        },
        TaskFilter {
            status: Some(TaskStatus::Cancelled),
            ..TaskFilter::default()
        },
    ];
    for filter in &filters {
        let expected = newest_first(
            tasks
                .iter()
                .filter(|t| filter.swarm.is_none_or(|s| t.swarm_id == s))
                .filter(|t| filter.status.is_none_or(|s| t.status() == s))
                .filter(|t| filter.task_type.as_ref().is_none_or(|ty| &t.task_type == ty))
                .filter(|t| {
                    filter.agent.is_none_or(|a| {
                        t.state.agent_id() == Some(a)
                            || matches!(&t.state, TaskState::Failed { error, .. } if error.agent_id == Some(a))
                    })
                })
                .cloned()
                .collect(),
        );
        for limit in [1, 7, 50, 1000] {
            let listed = all_pages(&reader, filter, limit);
            let ids: HashSet<TaskId> = listed.iter().map(|t| t.id).collect();
            assert_eq!(
                ids.len(),
                listed.len(),
                "no duplicates ({filter:?}, limit {limit})"
            );
            assert_eq!(listed, expected, "{filter:?}, limit {limit}");
        }
    }
}

fn tasks_added_between_pages_are_neither_repeated_nor_skipping_older_ones(backend: Backend) {
    let (dir, reader, tasks) = fixture(backend);
    let first = reader.list_tasks(&TaskFilter::default(), 10, None).unwrap();
    // A newer task arrives; the following pages continue where the first one stopped.
    let mut store = reopen(&dir);
    commit(
        &mut store,
        Changes {
            tasks: vec![queued(10_000, swarm_id(1), 1_000_000)],
            ..Changes::default()
        },
    );
    let mut listed = first.items;
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let page = reader
            .list_tasks(&TaskFilter::default(), 10, Some(&c))
            .unwrap();
        listed.extend(page.items);
        cursor = page.next_cursor;
    }
    assert_eq!(listed, newest_first(tasks));
}

fn a_bad_cursor_is_an_invalid_cursor_error(backend: Backend) {
    let (_dir, reader, _) = fixture(backend);
    for bad in [
        "",
        "nope",
        "t1.5",
        "t1.5.zzzz",
        "t1.x.0190b6e4000070008000000000000001",
    ] {
        let err = reader
            .list_tasks(&TaskFilter::default(), 10, Some(bad))
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidCursor(_)), "{bad}: {err}");
        assert!(err.to_string().contains("next_cursor"), "{err}");
    }
}

fn a_limit_of_zero_is_taken_as_one(backend: Backend) {
    let (_dir, reader, _) = fixture(backend);
    let page = reader.list_tasks(&TaskFilter::default(), 0, None).unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.next_cursor.is_some());
}

fn get_tasks_finds_the_existing_ones_among_many_ids(backend: Backend) {
    let (_dir, reader, tasks) = fixture(backend);
    let mut ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    ids.extend((0..5_000).map(|i| task_id(50_000 + i)));
    ids.push(tasks[0].id);
    let found = reader.get_tasks(&ids).unwrap();
    assert_eq!(by_id(found), by_id(tasks.clone()));
    assert!(reader.get_tasks(&[]).unwrap().is_empty());
    assert_eq!(reader.get_task(task_id(99_999)).unwrap(), None);
    assert_eq!(
        reader.get_task(tasks[3].id).unwrap().as_ref(),
        Some(&tasks[3])
    );
}

fn idempotency_keys_are_found_per_swarm(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let mut a = queued(1, swarm_id(1), 1);
    a.idempotency_key = Some("order-7".to_owned());
    let mut b = queued(2, swarm_id(2), 2);
    b.idempotency_key = Some("order-7".to_owned());
    commit(
        &mut store,
        Changes {
            tasks: vec![a.clone(), b.clone()],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    assert_eq!(
        reader
            .find_task_by_idempotency_key(swarm_id(1), "order-7")
            .unwrap(),
        Some(a)
    );
    assert_eq!(
        reader
            .find_task_by_idempotency_key(swarm_id(2), "order-7")
            .unwrap(),
        Some(b)
    );
    assert_eq!(
        reader
            .find_task_by_idempotency_key(swarm_id(3), "order-7")
            .unwrap(),
        None
    );
    assert_eq!(
        reader
            .find_task_by_idempotency_key(swarm_id(1), "other")
            .unwrap(),
        None
    );
}

fn events_are_filtered_and_listed_in_log_order_after_a_seq(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let kinds = [
        EventKind::TaskSubmitted,
        EventKind::TaskStarted,
        EventKind::TaskCompleted,
    ];
    let events: Vec<_> = (1..=60u64)
        .map(|seq| {
            let mut e = event(seq, swarm_id((seq % 2) as u128), kinds[(seq % 3) as usize]);
            e.task_id = Some(task_id((seq % 5) as u128));
            e.agent_id = (seq % 4 != 0).then(|| agent_id((seq % 4) as u128));
            e
        })
        .collect();
    commit(
        &mut store,
        Changes {
            events: events.clone(),
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    let filters = [
        EventFilter::default(),
        EventFilter {
            after: 42,
            ..EventFilter::default()
        },
        EventFilter {
            swarm: Some(swarm_id(1)),
            ..EventFilter::default()
        },
        EventFilter {
            kinds: vec![EventKind::TaskStarted],
            after: 10,
            ..EventFilter::default()
        },
        EventFilter {
            kinds: vec![EventKind::TaskStarted, EventKind::TaskCompleted],
            ..EventFilter::default()
        },
        EventFilter {
            agent: Some(agent_id(3)),
            ..EventFilter::default()
        },
        EventFilter {
            task: Some(task_id(2)),
            swarm: Some(swarm_id(0)),
            ..EventFilter::default()
        },
        EventFilter {
            swarm: Some(swarm_id(1)),
            kinds: vec![EventKind::TaskCompleted],
            agent: Some(agent_id(1)),
            task: Some(task_id(3)),
            after: 0,
            latest: false,
        },
        EventFilter {
            after: 60,
            ..EventFilter::default()
        },
    ];
    for filter in &filters {
        let expected: Vec<_> = events
            .iter()
            .filter(|e| e.seq > filter.after)
            .filter(|e| filter.swarm.is_none_or(|s| e.swarm_id == s))
            .filter(|e| filter.kinds.is_empty() || filter.kinds.contains(&e.kind))
            .filter(|e| filter.agent.is_none_or(|a| e.agent_id == Some(a)))
            .filter(|e| filter.task.is_none_or(|t| e.task_id == Some(t)))
            .cloned()
            .collect();
        assert_eq!(
            reader.list_events(filter, 1000).unwrap(),
            expected,
            "{filter:?}"
        );
        let limited = reader.list_events(filter, 3).unwrap();
        assert_eq!(
            limited,
            expected[..expected.len().min(3)],
            "{filter:?} limit 3"
        );
        let latest = EventFilter {
            latest: true,
            ..filter.clone()
        };
        let newest = reader.list_events(&latest, 3).unwrap();
        assert_eq!(
            newest,
            expected[expected.len().saturating_sub(3)..],
            "{filter:?} latest 3"
        );
    }
}

fn readers_work_from_many_threads_and_see_later_commits(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let reader = store.reader().unwrap();
    assert!(
        reader
            .list_events(&EventFilter::default(), 10)
            .unwrap()
            .is_empty()
    );
    let tasks: Vec<_> = (0..50).map(|i| queued(i, swarm_id(1), i as i64)).collect();
    commit(
        &mut store,
        Changes {
            tasks: tasks.clone(),
            ..Changes::default()
        },
    );
    std::thread::scope(|scope| {
        for t in 0..16 {
            let reader = reader.clone();
            let tasks = &tasks;
            scope.spawn(move || {
                for i in 0..20 {
                    let want = &tasks[(t * 20 + i) % tasks.len()];
                    assert_eq!(reader.get_task(want.id).unwrap().as_ref(), Some(want));
                }
            });
        }
    });
}

fn checkpoints_and_agent_states_round_trip_and_go_with_their_swarm(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "ckpt");
    let a = agent(1, s.id, flotilla_core::AgentStatus::Idle);
    let checkpoint = |n: u128, at: i64| {
        flotilla_core::Checkpoint {
        id: flotilla_core::CheckpointId(uuid::Uuid::from_u128(0xc0_0000 + n)),
        agent_id: a.id,
        swarm_id: s.id,
        created_at: ts(at),
        trigger: flotilla_core::CheckpointTrigger::Interval,
        description: format!("ünïcode \"{n}\""),
        state: (n == 1).then(|| Json::parse(r#"{"step": 1, "deep": [1, {"x": null}]}"#).unwrap()),
        tasks: vec![flotilla_core::checkpoint::TaskContext {
            task_id: task_id(9),
            task_type: "code".to_owned(),
            attempt: 2,
            payload: Json::parse(r#"{"prompt": "fix it"}"#).unwrap(),
            progress: None,
        }],
        workspace: (n == 2)
            .then(|| Json::parse(r#"{"kind":"git","repo":"/r","commit":"abc","reference":"refs/flotilla/checkpoints/x/y"}"#).unwrap()),
        workspace_error: (n == 3).then(|| "git failed".to_owned()),
    }
    };
    let (c1, c2, c3) = (checkpoint(1, 100), checkpoint(2, 200), checkpoint(3, 300));
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone()],
            agents: vec![a.clone()],
            checkpoints: vec![c1.clone(), c2.clone(), c3.clone()],
            agent_states: vec![
                (a.id, Json::parse(r#"{"v": 1}"#).unwrap(), ts(5)),
                (a.id, Json::parse(r#"{"v": 2}"#).unwrap(), ts(6)),
            ],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_checkpoint(c1.id).unwrap(), Some(c1.clone()));
    assert_eq!(
        reader.list_checkpoints(a.id).unwrap(),
        vec![c3.clone(), c2.clone(), c1.clone()],
        "newest first"
    );
    let (state, at) = reader.get_agent_state(a.id).unwrap().unwrap();
    assert_eq!(
        (state.get(), at),
        (r#"{"v": 2}"#, ts(6)),
        "the last state wins"
    );
    // Taken and deleted in one batch: gone.
    let c4 = checkpoint(4, 400);
    commit(
        &mut store,
        Changes {
            checkpoints: vec![c4.clone()],
            deleted_checkpoints: vec![c1.id, c4.id],
            ..Changes::default()
        },
    );
    assert_eq!(reader.get_checkpoint(c1.id).unwrap(), None);
    assert_eq!(reader.get_checkpoint(c4.id).unwrap(), None);
    assert_eq!(reader.list_checkpoints(a.id).unwrap().len(), 2);
    // A deleted swarm takes its agents' checkpoints and states with it.
    commit(
        &mut store,
        Changes {
            deleted_swarms: vec![s.id],
            ..Changes::default()
        },
    );
    assert!(reader.list_checkpoints(a.id).unwrap().is_empty());
    assert_eq!(reader.get_agent_state(a.id).unwrap(), None);
    // Also when the state and the deletion come in the same batch.
    let s2 = swarm(2, "ckpt2");
    let b = agent(2, s2.id, flotilla_core::AgentStatus::Idle);
    commit(
        &mut store,
        Changes {
            swarms: vec![s2.clone()],
            agents: vec![b.clone()],
            ..Changes::default()
        },
    );
    commit(
        &mut store,
        Changes {
            agent_states: vec![(b.id, Json::parse("{}").unwrap(), ts(7))],
            deleted_swarms: vec![s2.id],
            ..Changes::default()
        },
    );
    assert_eq!(reader.get_agent_state(b.id).unwrap(), None);
}

on_both_backends!(
    pages_cover_every_task_once_newest_first_under_every_filter,
    tasks_added_between_pages_are_neither_repeated_nor_skipping_older_ones,
    a_bad_cursor_is_an_invalid_cursor_error,
    a_limit_of_zero_is_taken_as_one,
    get_tasks_finds_the_existing_ones_among_many_ids,
    idempotency_keys_are_found_per_swarm,
    events_are_filtered_and_listed_in_log_order_after_a_seq,
    readers_work_from_many_threads_and_see_later_commits,
    checkpoints_and_agent_states_round_trip_and_go_with_their_swarm,
);
