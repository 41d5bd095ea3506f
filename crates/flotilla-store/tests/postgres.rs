//! What only the PostgreSQL backend has: a server that may restart or be unreachable, several
//! coordinators migrating one database at once, an address with a password.

#[macro_use]
mod common;

use common::*;
use flotilla_core::{Changes, TaskStatus};
use flotilla_store::{PgStore, SCHEMA_VERSION, Store, StoreError, TaskFilter};

#[test]
fn a_broken_connection_fails_one_commit_as_unavailable_and_the_next_reconnects() {
    if !postgres_available() {
        return;
    }
    let (db, mut store) = open_on(Backend::Postgres);
    commit(
        &mut store,
        Changes {
            swarms: vec![swarm(1, "alpha")],
            ..Changes::default()
        },
    );
    // What a server restart does to the writer's connection.
    let TestDb::Postgres { schema, .. } = &db else {
        unreachable!()
    };
    db.execute(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = '{schema}' AND pid <> pg_backend_pid()"
    ));
    let batch = flotilla_store::Batch {
        changes: Changes {
            tasks: vec![queued(1, swarm_id(1), 10)],
            ..Changes::default()
        },
        ..Default::default()
    };
    let mut failures = 0;
    loop {
        match store.commit(&batch) {
            Ok(()) => break,
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("127.0.0.1"), "{message}");
                failures += 1;
                assert!(failures < 3, "reconnects on the next commit");
            }
            Err(other) => panic!("a broken connection is Unavailable, not {other:?}"),
        }
    }
    let page = store
        .reader()
        .unwrap()
        .list_tasks(&TaskFilter::default(), 10, None)
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].state.status(), TaskStatus::Queued);
}

#[test]
fn several_coordinators_starting_on_an_empty_database_create_it_once() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres);
    let TestDb::Postgres { url, schema } = &db else {
        unreachable!()
    };
    let opened: Vec<Result<PgStore, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| PgStore::open(url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &opened {
        assert!(o.is_ok(), "{:?}", o.as_ref().err());
    }
    let mut client = postgres::Client::connect(&postgres_url(), postgres::NoTls).unwrap();
    let versions: i64 = client
        .query_one(
            &format!("SELECT COUNT(*) FROM {schema}.schema_version"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(versions, i64::from(SCHEMA_VERSION));
}

#[test]
fn a_newer_schema_is_refused() {
    if !postgres_available() {
        return;
    }
    let (db, store) = open_on(Backend::Postgres);
    drop(store);
    db.execute(&format!(
        "INSERT INTO schema_version (version, applied_at) VALUES ({}, 0)",
        SCHEMA_VERSION + 1
    ));
    let TestDb::Postgres { url, .. } = &db else {
        unreachable!()
    };
    let err = PgStore::open(url).unwrap_err();
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
fn an_unreachable_server_is_unavailable_and_the_password_is_not_shown() {
    // A port nothing listens on.
    let err = PgStore::open("postgres://flo:s3cret@127.0.0.1:9/fleet").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("postgres://flo@127.0.0.1:9/fleet"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("check that PostgreSQL is running"), "{text}");
}

#[test]
fn a_database_that_does_not_exist_is_an_open_error_naming_it() {
    if !postgres_available() {
        return;
    }
    let url = format!(
        "{}_no_such_database",
        postgres_url().split('?').next().unwrap()
    );
    let err = PgStore::open(&url).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(text.contains("no_such_database"), "{text}");
}

/// A database with swarms 1 and 2 stored, and its URL.
fn with_two_swarms() -> Option<(TestDb, String)> {
    if !postgres_available() {
        return None;
    }
    let (db, mut store) = open_on(Backend::Postgres);
    commit(
        &mut store,
        Changes {
            swarms: vec![swarm(1, "alpha"), swarm(2, "beta")],
            ..Changes::default()
        },
    );
    let url = match &db {
        TestDb::Postgres { url, .. } => url.clone(),
        TestDb::Sqlite(_) => unreachable!(),
    };
    Some((db, url))
}

#[test]
fn of_two_coordinators_racing_for_a_lease_exactly_one_gets_it() {
    use flotilla_store::postgres::cluster::ClusterDb;
    let Some((_db, url)) = with_two_swarms() else {
        return;
    };
    let ttl = std::time::Duration::from_secs(30);
    for round in 0..20 {
        let swarm = if round % 2 == 0 {
            swarm_id(1)
        } else {
            swarm_id(2)
        };
        let won: Vec<Option<i64>> = std::thread::scope(|s| {
            let racers: Vec<_> = ["a", "b", "c"]
                .iter()
                .map(|node| {
                    let url = &url;
                    s.spawn(move || {
                        let mut db = ClusterDb::open(url, node).unwrap();
                        db.acquire(swarm, ttl).unwrap()
                    })
                })
                .collect();
            racers.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = won.iter().filter(|w| w.is_some()).count();
        // Round 0 and 1: the lease is free, one wins; later rounds: it is held, none wins.
        assert_eq!(winners, usize::from(round < 2), "round {round}: {won:?}");
    }
}

#[test]
fn a_lapsed_lease_is_taken_with_a_larger_epoch_and_its_old_owner_cannot_renew_it() {
    use flotilla_store::postgres::cluster::ClusterDb;
    let Some((_db, url)) = with_two_swarms() else {
        return;
    };
    let short = std::time::Duration::from_millis(300);
    let mut a = ClusterDb::open(&url, "a").unwrap();
    let mut b = ClusterDb::open(&url, "b").unwrap();
    let first = a.acquire(swarm_id(1), short).unwrap().expect("free");
    assert_eq!(b.acquire(swarm_id(1), short).unwrap(), None, "held");
    assert_eq!(a.renew(short).unwrap(), vec![(swarm_id(1), first)]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    // Lapsed: A's renewal does not bring it back, B takes it with a larger epoch.
    assert_eq!(a.renew(short).unwrap(), vec![]);
    let second = b.acquire(swarm_id(1), short).unwrap().expect("lapsed");
    assert!(second > first, "{second} > {first}");
    let leases = b.leases().unwrap();
    let alpha = leases.iter().find(|l| l.swarm_name == "alpha").unwrap();
    assert_eq!(alpha.owner.as_deref(), Some("b"));
    let beta = leases.iter().find(|l| l.swarm_name == "beta").unwrap();
    assert_eq!(beta.owner, None, "never leased");
    // Released at once: A takes it back without waiting.
    b.release(swarm_id(1)).unwrap();
    assert!(a.acquire(swarm_id(1), short).unwrap().is_some());
}

#[test]
fn a_swarm_a_node_stores_first_is_leased_to_it_in_the_same_commit() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres);
    let TestDb::Postgres { url, .. } = &db else {
        unreachable!()
    };
    let mut store = PgStore::open(url).unwrap();
    store.claim_new_swarms_for("node-a", std::time::Duration::from_secs(30));
    commit(
        &mut store,
        Changes {
            swarms: vec![swarm(1, "alpha")],
            ..Changes::default()
        },
    );
    let mut other = flotilla_store::postgres::cluster::ClusterDb::open(url, "node-b").unwrap();
    assert_eq!(
        other
            .acquire(swarm_id(1), std::time::Duration::from_secs(1))
            .unwrap(),
        None
    );
    let leases = other.leases().unwrap();
    assert_eq!(leases[0].owner.as_deref(), Some("node-a"));
    // Deleting the swarm drops its lease.
    commit(
        &mut store,
        Changes {
            deleted_swarms: vec![swarm_id(1)],
            ..Changes::default()
        },
    );
    assert!(other.leases().unwrap().is_empty());
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let left: i64 = client
        .query_one("SELECT COUNT(*) FROM swarm_leases", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
