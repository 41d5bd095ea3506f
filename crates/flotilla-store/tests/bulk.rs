//! Large batches: a sanity check that 10,000 tasks commit and read back, and an ignored test
//! that prints how long the hot path's batches take (run it in release mode:
//! `cargo test --release -p flotilla-store --test bulk -- --ignored --nocapture`).

#[macro_use]
mod common;

use std::time::Instant;

use common::*;
use flotilla_core::{
    Changes, Event, EventKind, Json, SwarmId, Task, TaskId, TaskState, TaskStatus,
};
use flotilla_store::{Batch, EventFilter, SqliteStore, Store, SyncMode, TaskFilter};
use uuid::Uuid;

const N: usize = 10_000;

/// `N` queued tasks with small payloads and time-ordered ids, as the API creates them.
fn submitted(swarm: SwarmId) -> Vec<Task> {
    (0..N)
        .map(|i| {
            let mut t = queued(0, swarm, 1_700_000_000_000 + i as i64);
            t.id = TaskId(Uuid::now_v7());
            t.payload = Json::parse(&format!(r#"{{"prompt":"summarize file {i}","n":{i}}}"#))
                .expect("json");
            t.task_type = "summarize".to_owned();
            t
        })
        .collect()
}

fn events_for(tasks: &[Task], first_seq: u64, kind: EventKind) -> Vec<Event> {
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = event(first_seq + i as u64, t.swarm_id, kind);
            e.task_id = Some(t.id);
            e.agent_id = t.state.agent_id();
            e
        })
        .collect()
}

fn with_state(tasks: &[Task], state: impl Fn(usize) -> TaskState) -> Vec<Task> {
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut t = t.clone();
            t.state = state(i);
            t
        })
        .collect()
}

fn batch(tasks: Vec<Task>, events: Vec<Event>) -> Batch {
    Batch {
        changes: Changes {
            tasks,
            events,
            ..Changes::default()
        },
        tokens: Vec::new(),
        ..Default::default()
    }
}

fn ten_thousand_tasks_commit_in_one_batch_and_read_back(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "bulk");
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone()],
            ..Changes::default()
        },
    );
    let tasks = submitted(s.id);
    let events = events_for(&tasks, 1, EventKind::TaskSubmitted);
    store.commit(&batch(tasks.clone(), events)).unwrap();

    let snapshot = store.load(0).unwrap();
    assert_eq!(snapshot.tasks.len(), N);
    assert_eq!(snapshot.next_event_seq, N as u64 + 1);
    assert_eq!(by_id(snapshot.tasks), by_id(tasks));
    let reader = store.reader().unwrap();
    let filter = TaskFilter {
        status: Some(TaskStatus::Queued),
        ..TaskFilter::default()
    };
    assert_eq!(
        reader.list_tasks(&filter, 1000, None).unwrap().items.len(),
        1000
    );
    assert_eq!(
        reader
            .list_events(&EventFilter::default(), N)
            .unwrap()
            .len(),
        N
    );
}

/// Prints the time of each step of the hot path for `N` tasks: submit, start, complete, each one
/// batch of `N` task upserts and `N` events. Five rounds on a growing file; the best and the
/// median round of each step are printed, as other work on the machine makes single runs noisy.
#[test]
#[ignore = "prints timings; run in release mode with --ignored --nocapture"]
fn print_commit_timings() {
    const ROUNDS: usize = 5;
    for sync in [SyncMode::Full, SyncMode::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("flotilla.db"), sync).unwrap();
        let s = swarm(1, "bench");
        commit(
            &mut store,
            Changes {
                swarms: vec![s.clone()],
                ..Changes::default()
            },
        );
        let mut seq = 1;
        let mut times: [Vec<f64>; 3] = Default::default();
        for _ in 0..ROUNDS {
            let tasks = submitted(s.id);
            let agent = agent_id(1);
            let started = with_state(&tasks, |i| TaskState::Running {
                agent_id: agent,
                started_at: ts(1_700_000_100_000 + i as i64),
                timeout_at: ts(1_700_000_400_000 + i as i64),
            });
            let completed = with_state(&tasks, |i| TaskState::Completed {
                agent_id: agent,
                result: Json::parse(&format!(r#"{{"summary":"file {i} is fine"}}"#)).unwrap(),
                completed_at: ts(1_700_000_200_000 + i as i64),
            });
            let steps = [
                (tasks, EventKind::TaskSubmitted),
                (started, EventKind::TaskStarted),
                (completed, EventKind::TaskCompleted),
            ];
            for (step, (rows, kind)) in steps.into_iter().enumerate() {
                let events = events_for(&rows, seq, kind);
                seq += N as u64;
                let b = batch(rows, events);
                let t0 = Instant::now();
                store.commit(&b).unwrap();
                times[step].push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        for (name, mut ms) in ["submit", "start", "complete"].into_iter().zip(times) {
            ms.sort_by(f64::total_cmp);
            println!(
                "{sync:?} {name:>8}: {N} task upserts + {N} events: best {:.0} ms, median {:.0} ms",
                ms[0],
                ms[ROUNDS / 2]
            );
        }
        let t0 = Instant::now();
        let snapshot = store.load(1000).unwrap();
        println!(
            "{sync:?} load of {} tasks out of {}: {:.1} ms",
            snapshot.tasks.len(),
            ROUNDS * N,
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}

on_both_backends!(ten_thousand_tasks_commit_in_one_batch_and_read_back,);
