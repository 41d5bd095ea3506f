//! The file itself: state survives reopening, failed batches write nothing, and files this
//! version must not use are refused with errors that say what to do.

#[macro_use]
mod common;

use common::*;
use flotilla_core::{AgentStatus, Changes, EventKind, MessageStatus, TaskState};
use flotilla_store::{
    Batch, EventFilter, SCHEMA_VERSION, SqliteStore, Store, StoreError, SyncMode, TaskFilter,
    TokenRole,
};

fn everything_committed_survives_closing_and_reopening(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let a = agent(1, s.id, AgentStatus::Busy);
    let tasks: Vec<_> = all_states()
        .into_iter()
        .enumerate()
        .map(|(i, st)| full_task(i as u128, s.id, st))
        .collect();
    let events = vec![event(1, s.id, EventKind::SwarmCreated)];
    let tokens = vec![token("admin", TokenRole::Admin, None)];
    let in_flight = full_message(1, s.id, MessageStatus::Delivered);
    let awaiting = request(2, s.id, MessageStatus::Acked, Some(a.id), None);
    store
        .commit(&Batch {
            changes: Changes {
                swarms: vec![s.clone()],
                agents: vec![a.clone()],
                tasks: tasks.clone(),
                events: events.clone(),
                messages: vec![in_flight.clone(), awaiting.clone()],
                ..Changes::default()
            },
            tokens: tokens.clone(),
            ..Default::default()
        })
        .unwrap();
    let before = store.load(usize::MAX).unwrap();
    drop(store);

    let mut store = reopen(&dir);
    let after = store.load(usize::MAX).unwrap();
    assert_eq!(after, before);
    assert_eq!(after.swarms, vec![s]);
    assert_eq!(after.agents, vec![a]);
    assert_eq!(by_id(after.tasks), by_id(tasks));
    assert_eq!(after.tokens, tokens);
    assert_eq!(after.next_event_seq, 2);
    assert_eq!(after.messages, vec![in_flight]);
    assert_eq!(after.awaiting_requests, vec![awaiting.clone()]);
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_message(awaiting.id).unwrap(), Some(awaiting));
    assert_eq!(
        reader.list_events(&EventFilter::default(), 10).unwrap(),
        events
    );
}

fn a_reader_keeps_working_after_the_writer_is_dropped(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let t = queued(1, swarm_id(1), 5);
    commit(
        &mut store,
        Changes {
            tasks: vec![t.clone()],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    drop(store);
    assert_eq!(reader.get_task(t.id).unwrap(), Some(t.clone()));
    // A second reader opened now needs a connection of its own.
    let other = reader.clone();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let page = other.list_tasks(&TaskFilter::default(), 10, None).unwrap();
            assert_eq!(page.items, vec![t.clone()]);
        });
        assert_eq!(reader.get_task(t.id).unwrap(), Some(t.clone()));
    });
}

fn a_failing_batch_writes_nothing(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone()],
            events: vec![event(1, s.id, EventKind::SwarmCreated)],
            ..Changes::default()
        },
    );
    // The event seq is taken: the whole batch must be refused.
    let bad = Changes {
        tasks: vec![queued(1, s.id, 1)],
        agents: vec![agent(1, s.id, AgentStatus::Idle)],
        events: vec![
            event(2, s.id, EventKind::TaskSubmitted),
            event(1, s.id, EventKind::TaskSubmitted),
        ],
        ..Changes::default()
    };
    let err = store
        .commit(&Batch {
            changes: bad,
            tokens: Vec::new(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let snapshot = store.load(10).unwrap();
    assert!(snapshot.tasks.is_empty() && snapshot.agents.is_empty());
    assert_eq!(snapshot.next_event_seq, 2);

    // Two tasks of one swarm with one idempotency key: refused as well.
    let mut a = queued(1, s.id, 1);
    a.idempotency_key = Some("k".to_owned());
    let mut b = queued(2, s.id, 2);
    b.idempotency_key = Some("k".to_owned());
    let err = store
        .commit(&Batch {
            changes: Changes {
                tasks: vec![a, b],
                ..Changes::default()
            },
            tokens: Vec::new(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(store.load(10).unwrap().tasks.is_empty());

    // The store is still usable.
    commit(
        &mut store,
        Changes {
            tasks: vec![queued(3, s.id, 3)],
            ..Changes::default()
        },
    );
    assert_eq!(store.load(10).unwrap().tasks.len(), 1);
}

#[test]
fn describe_names_the_absolute_path() {
    let (dir, store) = open_sqlite();
    let path = dir.path().join("flotilla.db");
    assert_eq!(store.describe(), format!("sqlite:{}", path.display()));
    assert_eq!(store.path(), path);
}

#[test]
fn a_missing_directory_is_an_open_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("flotilla.db");
    let err = SqliteStore::open(&path, SyncMode::Full).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot open database at ") && text.contains("nope"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flotilla.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStore::open(&path, SyncMode::Full).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("flotilla.db"), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let (dir, store) = open_sqlite();
    drop(store);
    let path = dir.path().join("flotilla.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, SyncMode::Normal).unwrap_err();
    assert_eq!(
        err,
        StoreError::SchemaTooNew {
            found: SCHEMA_VERSION + 1,
            supported: SCHEMA_VERSION
        }
    );
    assert!(err.to_string().contains("run a newer flotilla"), "{err}");
}

#[test]
fn reopening_applies_no_migration_twice() {
    let (dir, store) = open_sqlite();
    drop(store);
    drop(SqliteStore::open(&dir.path().join("flotilla.db"), SyncMode::Full).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("flotilla.db")).unwrap();
    let versions: Vec<u32> = conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_second_writer_waiting_on_a_held_lock_reports_it_locked() {
    let (dir, mut store) = open_sqlite();
    let path = dir.path().join("flotilla.db");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let err = store
        .commit(&Batch {
            changes: Changes {
                tasks: vec![bare_task(1, swarm_id(1), TaskState::Blocked)],
                ..Changes::default()
            },
            tokens: Vec::new(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "waits for the busy timeout"
    );
    other.execute_batch("ROLLBACK").unwrap();
}

on_both_backends!(
    everything_committed_survives_closing_and_reopening,
    a_reader_keeps_working_after_the_writer_is_dropped,
    a_failing_batch_writes_nothing,
);
