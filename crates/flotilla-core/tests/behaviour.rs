//! One test per rule of the core, through its public API.
//!
//! Every command goes through [`common::Harness`], which checks the fleet's invariants, the
//! event log's seqs and that refused commands change nothing, and persists the changes into an
//! in-memory store (used by the restore tests).

mod common;

use std::time::Duration;

use common::{Harness, at, done, ms, secs, spec, strings};
use flotilla_core::fleet::KnownTasks;
use flotilla_core::{
    AgentStatus, Backoff, CoreError, Dependency, DependencyKind, DependencySpec, Effect, ErrorKind,
    EventKind, FleetLimits, Json, SwarmConfig, SwarmSpec, SwarmStatus, TaskError, TaskId, TaskSpec,
    TaskState, TaskStatus,
};

fn dep(id: TaskId, kind: DependencyKind) -> DependencySpec {
    DependencySpec::Full(Dependency { task_id: id, kind })
}

fn by_ref(name: &str, kind: DependencyKind) -> DependencySpec {
    DependencySpec::Ref {
        reference: name.to_owned(),
        kind,
    }
}

fn with_ref(name: &str, deps: Vec<DependencySpec>) -> TaskSpec {
    TaskSpec {
        reference: Some(name.to_owned()),
        depends_on: deps,
        ..TaskSpec::default()
    }
}

fn error_of(h: &Harness, id: TaskId) -> TaskError {
    match &h.task(id).state {
        TaskState::Failed { error, .. } | TaskState::Dead { error, .. } => error.clone(),
        other => panic!("task {id} has no final error: {other:?}"),
    }
}

fn is_conflict(e: &CoreError) -> bool {
    matches!(e, CoreError::Conflict(_))
}

// ----- scheduling -----

#[test]
fn higher_priority_runs_first_and_equal_priorities_run_in_submission_order() {
    let mut h = Harness::new();
    let low1 = h.submit(spec("low1", 2));
    let high1 = h.submit(spec("high1", 9));
    let low2 = h.submit(spec("low2", 2));
    let batch = h.submit_all(vec![spec("mid1", 5), spec("high2", 9), spec("mid2", 5)]);
    let a = h.agent("a", &[], 1);
    let mut order = Vec::new();
    while let Some(t) = h.take(a) {
        order.push(t.id);
        h.complete(a, t.id, t.attempts).unwrap();
    }
    assert_eq!(order, vec![high1, batch[1], batch[0], batch[2], low1, low2]);
}

#[test]
fn an_agent_lacking_a_required_capability_never_gets_the_task() {
    let mut h = Harness::new();
    let gpu_task = h.submit(TaskSpec {
        priority: 10,
        required_capabilities: strings(&["gpu", "python"]),
        ..TaskSpec::default()
    });
    let plain = h.submit(spec("plain", 1));
    let python_only = h.agent("py", &["python"], 4);
    // The python-only agent skips the better task it cannot do.
    assert_eq!(h.take(python_only).map(|t| t.id), Some(plain));
    assert_eq!(h.take(python_only), None, "nothing else it can do");
    assert_eq!(h.status(gpu_task), TaskStatus::Queued);
    // Even when it is waiting and the task is the only one left, it is not placed on it.
    h.advance(secs(1));
    assert_eq!(h.status(gpu_task), TaskStatus::Queued);
    assert!(h.fleet.agent(python_only).unwrap().current_tasks == vec![plain]);
    let both = h.agent("both", &["python", "gpu", "extra"], 1);
    let t = h.take(both).expect("an able agent gets it");
    assert_eq!(t.id, gpu_task);
    assert_eq!(t.state.agent_id(), Some(both));
}

#[test]
fn a_waiting_agent_is_woken_for_a_new_task_which_is_assigned_then_running() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    assert_eq!(h.take(a), None, "nothing to do: the agent now waits");
    let id = h.submit(spec("x", 5));
    assert_eq!(h.effects, vec![Effect::WakeAgent(a)]);
    match h.task(id).state {
        TaskState::Assigned { agent_id, .. } => assert_eq!(agent_id, a),
        ref other => panic!("expected assigned, got {other:?}"),
    }
    assert_eq!(h.fleet.agent(a).unwrap().current_tasks, vec![id]);
    assert_eq!(h.agent_status(a), AgentStatus::Busy);
    let t = h.take(a).expect("the placed task");
    assert_eq!(t.id, id);
    assert_eq!(t.status(), TaskStatus::Running);
    assert_eq!(t.attempts, 1);
    assert_eq!(
        h.task_events(id),
        vec![
            EventKind::TaskSubmitted,
            EventKind::TaskAssigned,
            EventKind::TaskStarted
        ]
    );
}

#[test]
fn an_agent_that_stopped_polling_is_not_woken() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    assert_eq!(h.take(a), None);
    h.fleet.stop_polling(a);
    let id = h.submit(spec("x", 5));
    assert!(h.effects.iter().all(|e| !matches!(e, Effect::WakeAgent(_))));
    assert_eq!(h.status(id), TaskStatus::Queued);
}

#[test]

fn a_task_unblocked_by_a_completion_wakes_a_waiting_agent() {
    let mut h = Harness::new();
    let first = h.submit(spec("first", 5));
    let second = h.submit(TaskSpec {
        depends_on: vec![DependencySpec::Id(first)],
        ..spec("second", 5)
    });
    let worker = h.agent("worker", &[], 1);
    let waiter = h.agent("waiter", &[], 1);
    let t = h.take(worker).unwrap();
    assert_eq!(h.take(waiter), None, "the waiter waits");
    h.complete(worker, t.id, 1).unwrap();
    assert_eq!(
        h.status(second),
        TaskStatus::Assigned,
        "the freed task goes to the waiting agent at once"
    );
    assert!(
        h.effects.contains(&Effect::WakeAgent(waiter)),
        "effects: {:?}",
        h.effects
    );
}

// ----- dependencies -----

#[test]
fn a_dependent_is_blocked_until_its_dependency_finishes() {
    let mut h = Harness::new();
    let ids = h.submit_all(vec![
        with_ref("build", vec![]),
        with_ref("test", vec![by_ref("build", DependencyKind::Success)]),
    ]);
    let (build, test) = (ids[0], ids[1]);
    assert_eq!(h.status(build), TaskStatus::Queued);
    assert_eq!(h.status(test), TaskStatus::Blocked);
    let a = h.agent("a", &[], 2);
    assert_eq!(h.take(a).unwrap().id, build);
    assert_eq!(h.take(a), None, "the blocked task is not handed out");
    h.complete(a, build, 1).unwrap();
    // `a` has been waiting since its empty take: the released task is placed on it at once.
    assert_eq!(h.status(test), TaskStatus::Assigned);
    assert!(h.task_events(test).contains(&EventKind::TaskUnblocked));
    assert_eq!(h.take(a).unwrap().id, test);
}

#[test]
fn a_completion_dependency_releases_its_dependent_even_when_it_fails() {
    let mut h = Harness::new();
    let first = h.submit(TaskSpec {
        max_attempts: Some(1),
        ..spec("first", 5)
    });
    let then = h.submit(TaskSpec {
        depends_on: vec![dep(first, DependencyKind::Completion)],
        ..spec("then", 5)
    });
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    h.fail(a, first, 1, false).unwrap();
    assert_eq!(h.status(first), TaskStatus::Failed);
    assert_eq!(h.status(then), TaskStatus::Queued);
}

#[test]
fn a_failed_success_dependency_fails_its_dependents_transitively() {
    let mut h = Harness::new();
    let ids = h.submit_all(vec![
        with_ref("a", vec![]),
        with_ref("b", vec![by_ref("a", DependencyKind::Success)]),
        // c waits for b's completion only, but b will fail, which completes it: c is released.
        with_ref("c", vec![by_ref("b", DependencyKind::Completion)]),
        with_ref("d", vec![by_ref("b", DependencyKind::Success)]),
        with_ref("e", vec![by_ref("d", DependencyKind::Success)]),
    ]);
    let [a, b, c, d, e] = ids[..] else {
        unreachable!()
    };
    let w = h.agent("w", &[], 1);
    assert_eq!(h.take(w).unwrap().id, a);
    h.fail(w, a, 1, false).unwrap();
    for id in [b, d, e] {
        assert_eq!(h.status(id), TaskStatus::Failed, "{id}");
        let err = error_of(&h, id);
        assert_eq!(err.kind, ErrorKind::DependencyFailed);
        assert!(!err.retryable);
    }
    assert!(
        error_of(&h, b).message.contains(&a.to_string()),
        "names the dependency"
    );
    assert!(error_of(&h, e).message.contains(&d.to_string()));
    assert_eq!(h.status(c), TaskStatus::Queued);
    assert!(h.effects.contains(&Effect::TaskFinished(e)));
}

#[test]
fn a_dependency_that_already_failed_fails_a_new_success_dependent_at_once() {
    let mut h = Harness::new();
    let first = h.submit(spec("first", 5));
    h.cancel(first).unwrap();
    let then = h.submit(TaskSpec {
        depends_on: vec![dep(first, DependencyKind::Success)],
        ..spec("then", 5)
    });
    assert_eq!(h.status(then), TaskStatus::Failed);
    assert_eq!(error_of(&h, then).kind, ErrorKind::DependencyFailed);
    let after = h.submit(TaskSpec {
        depends_on: vec![dep(first, DependencyKind::Completion)],
        ..spec("after", 5)
    });
    assert_eq!(h.status(after), TaskStatus::Queued);
}

#[test]

fn a_failed_success_dependency_fails_a_dependent_also_waiting_on_a_batch_task() {
    // `second` needs `gone` (already cancelled) to succeed, and also waits for `first` of the
    // same batch, which itself fails at once because it needs `gone` too.
    let mut h = Harness::new();
    let gone = h.submit(spec("gone", 5));
    h.cancel(gone).unwrap();
    let ids = h.submit_all(vec![
        TaskSpec {
            reference: Some("first".to_owned()),
            depends_on: vec![dep(gone, DependencyKind::Success)],
            ..TaskSpec::default()
        },
        TaskSpec {
            reference: Some("second".to_owned()),
            depends_on: vec![
                by_ref("first", DependencyKind::Completion),
                dep(gone, DependencyKind::Success),
            ],
            ..TaskSpec::default()
        },
    ]);
    assert_eq!(h.status(ids[0]), TaskStatus::Failed);
    assert_eq!(
        h.status(ids[1]),
        TaskStatus::Failed,
        "its success dependency {gone} was cancelled, so it must not run"
    );
}

#[test]
fn a_cycle_in_a_batch_is_refused_naming_its_tasks() {
    let mut h = Harness::new();
    let err = h.refuse_submit(vec![
        with_ref("lint", vec![by_ref("test", DependencyKind::Completion)]),
        with_ref("build", vec![by_ref("lint", DependencyKind::Completion)]),
        with_ref("test", vec![by_ref("build", DependencyKind::Completion)]),
        with_ref("free", vec![]),
    ]);
    let text = err.to_string();
    assert!(matches!(err, CoreError::Invalid(_)), "{err:?}");
    assert!(text.contains("cycle"), "{text}");
    for name in ["\"lint\"", "\"build\"", "\"test\""] {
        assert!(text.contains(name), "{text} should name {name}");
    }
    assert!(!text.contains("free"), "{text}");
    assert_eq!(h.fleet.tasks_in_memory(), 0);
}

#[test]
fn an_unknown_dependency_is_refused_naming_its_id() {
    let mut h = Harness::new();
    let known = h.submit(spec("known", 5));
    let missing = TaskId(h.uuid());
    let err = h.refuse_submit(vec![TaskSpec {
        depends_on: vec![DependencySpec::Id(known), DependencySpec::Id(missing)],
        ..TaskSpec::default()
    }]);
    assert!(matches!(err, CoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains(&missing.to_string()), "{err}");
    assert!(!err.to_string().contains(&known.to_string()), "{err}");
    let err = h.refuse_submit(vec![with_ref(
        "x",
        vec![by_ref("nope", DependencyKind::Success)],
    )]);
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn a_batch_with_one_invalid_spec_inserts_nothing() {
    let mut h = Harness::new();
    let before = h.fleet.next_event_seq();
    let err = h.refuse_submit(vec![
        spec("ok1", 5),
        spec("ok2", 5),
        TaskSpec {
            reference: Some("bad".to_owned()),
            ..spec("bad", 42)
        },
        spec("ok3", 5),
    ]);
    assert!(
        err.to_string().contains("\"bad\""),
        "names the offender: {err}"
    );
    assert_eq!(h.fleet.tasks_in_memory(), 0);
    assert_eq!(h.fleet.next_event_seq(), before, "no events");
    let health = h.fleet.swarm_health(h.swarm_id, h.now).unwrap();
    assert_eq!(health.queue_depth, 0);
}

#[test]
fn an_idempotency_key_returns_the_existing_task() {
    let mut h = Harness::new();
    let keyed = |k: &str| TaskSpec {
        idempotency_key: Some(k.to_owned()),
        ..TaskSpec::default()
    };
    let first = h.try_submit(vec![keyed("k1")]).unwrap();
    assert!(first[0].created);
    let again = h.try_submit(vec![keyed("k1")]).unwrap();
    assert_eq!(again[0].task, first[0].task);
    assert!(!again[0].created);
    assert!(
        h.last.tasks.is_empty() && h.last.events.is_empty(),
        "nothing new: {:?}",
        h.last
    );
    // Within one batch, the second use of a key returns the first task of the batch.
    let batch = h
        .try_submit(vec![keyed("k2"), keyed("k1"), keyed("k2")])
        .unwrap();
    assert!(batch[0].created);
    assert_eq!((batch[1].task, batch[1].created), (first[0].task, false));
    assert_eq!((batch[2].task, batch[2].created), (batch[0].task, false));
    assert_eq!(h.fleet.tasks_in_memory(), 2);
    // Keys are per swarm.
    let other_id = TaskId(h.uuid());
    let other = h
        .fleet
        .submit_tasks(
            "default",
            vec![keyed("k1")],
            &[other_id],
            &KnownTasks::default(),
            h.now,
        )
        .unwrap();
    assert!(other[0].created);
    h.settle();
}

#[test]

fn an_existing_key_used_twice_in_one_batch_returns_the_existing_task_both_times() {
    let mut h = Harness::new();
    let keyed = || TaskSpec {
        idempotency_key: Some("k".to_owned()),
        ..TaskSpec::default()
    };
    let existing = h.submit(keyed());
    let subs = h
        .try_submit(vec![keyed(), spec("other", 5), keyed()])
        .unwrap();
    assert_eq!((subs[0].task, subs[0].created), (existing, false));
    assert_eq!(
        (subs[2].task, subs[2].created),
        (existing, false),
        "not an id that was never created"
    );
    assert!(h.fleet.task(subs[2].task).is_some());
}

#[test]

fn a_repeated_key_referenced_in_its_batch_after_eviction_resolves_to_the_stored_task() {
    // The keyed task finishes and is evicted from memory; a new batch repeats its key and
    // another task of the batch depends on that spec by ref. The driver passes what
    // `submission_lookups` asks for: the key (found in the store), no ids.
    let limits = FleetLimits {
        retain_terminal: 0,
        retain_terminal_for: Duration::ZERO,
        ..FleetLimits::default()
    };
    let mut h = Harness::with(limits, SwarmConfig::default());
    let old = h.submit(TaskSpec {
        idempotency_key: Some("nightly".to_owned()),
        ..TaskSpec::default()
    });
    h.cancel(old).unwrap();
    h.advance(secs(1));
    assert!(h.fleet.task(old).is_none(), "evicted");
    let subs = h
        .try_submit(vec![
            TaskSpec {
                reference: Some("n".to_owned()),
                idempotency_key: Some("nightly".to_owned()),
                ..TaskSpec::default()
            },
            with_ref("after", vec![by_ref("n", DependencyKind::Completion)]),
        ])
        .unwrap();
    assert_eq!((subs[0].task, subs[0].created), (old, false));
    assert_eq!(
        h.status(subs[1].task),
        TaskStatus::Queued,
        "its dependency finished long ago"
    );
}

#[test]
fn a_dependency_no_longer_in_memory_is_judged_by_the_stored_status() {
    let limits = FleetLimits {
        retain_terminal: 0,
        retain_terminal_for: Duration::ZERO,
        ..FleetLimits::default()
    };
    let mut h = Harness::with(limits, SwarmConfig::default());
    let gone = h.submit(spec("gone", 5));
    h.cancel(gone).unwrap();
    h.advance(secs(1));
    assert!(h.fleet.task(gone).is_none(), "evicted");
    let completion = h.submit(TaskSpec {
        depends_on: vec![DependencySpec::Id(gone)],
        ..TaskSpec::default()
    });
    assert_eq!(h.status(completion), TaskStatus::Queued);
    let success = h.submit(TaskSpec {
        depends_on: vec![dep(gone, DependencyKind::Success)],
        ..TaskSpec::default()
    });
    assert_eq!(h.status(success), TaskStatus::Failed);
}

// ----- validation -----

#[test]
fn priorities_outside_1_to_10_are_refused() {
    let mut h = Harness::new();
    for p in [0u8, 11] {
        let err = h.refuse_submit(vec![spec("x", p)]);
        assert!(matches!(err, CoreError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("priority"), "{err}");
    }
    h.submit(spec("lowest", 1));
    h.submit(spec("highest", 10));
}

#[test]
fn a_payload_over_the_limit_is_too_large() {
    let limits = FleetLimits {
        max_payload_bytes: 100,
        ..FleetLimits::default()
    };
    let mut h = Harness::with(limits, SwarmConfig::default());
    let big = Json::from_value(&"x".repeat(200));
    let err = h.refuse_submit(vec![TaskSpec {
        payload: big.clone(),
        ..TaskSpec::default()
    }]);
    assert!(matches!(err, CoreError::TooLarge(_)), "{err:?}");
    // A result over the limit is refused the same way, and the task keeps running.
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    let report = flotilla_core::CompletionReport {
        result: big,
        attempt: Some(1),
    };
    let r = h.fleet.complete_task(a, id, report, h.now).cloned();
    let err = h.refused(r);
    assert!(matches!(err, CoreError::TooLarge(_)), "{err:?}");
    assert_eq!(h.status(id), TaskStatus::Running);
}

#[test]
fn submissions_past_the_unfinished_limit_are_refused_whole_until_tasks_finish() {
    let limits = FleetLimits {
        max_unfinished_tasks: 3,
        ..FleetLimits::default()
    };
    let mut h = Harness::with(limits, SwarmConfig::default());
    let first = h.submit(spec("a", 5));
    h.submit(spec("b", 5));
    // Two more would make four: refused whole, nothing added.
    let err = h.refuse_submit(vec![spec("c", 5), spec("d", 5)]);
    assert!(matches!(err, CoreError::Full(_)), "{err:?}");
    assert_eq!(err.code(), "queue_full");
    assert!(err.to_string().contains("at most 3"), "{err}");
    h.submit(spec("c", 5));
    let err = h.refuse_submit(vec![spec("e", 5)]);
    assert!(matches!(err, CoreError::Full(_)), "{err:?}");
    // A running task still counts; a finished one frees its place.
    let a = h.agent("a", &[], 1);
    let taken = h.take(a).unwrap();
    assert_eq!(taken.id, first);
    assert!(matches!(
        h.refuse_submit(vec![spec("e", 5)]),
        CoreError::Full(_)
    ));
    h.fleet.complete_task(a, first, done(1), h.now).unwrap();
    h.submit(spec("e", 5));
}

// ----- leases -----

fn lease_config() -> SwarmConfig {
    SwarmConfig {
        heartbeat_interval: secs(5),
        heartbeat_miss_limit: 3,
        ..SwarmConfig::default()
    }
}

#[test]
fn a_silent_agent_loses_its_lease_and_its_running_task_is_retried_with_the_attempt_counted() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let id = h.submit(TaskSpec {
        backoff: Some(Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        }),
        ..TaskSpec::default()
    });
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    // One millisecond short of the lease (5 s × 3), nothing happens.
    h.advance(ms(14_999));
    assert_eq!(h.agent_status(a), AgentStatus::Busy);
    assert_eq!(h.status(id), TaskStatus::Running);
    h.advance(ms(1));
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    let t = h.task(id);
    assert_eq!(t.status(), TaskStatus::Queued);
    assert_eq!(t.attempts, 1, "the lost attempt counts");
    let err = t.last_error.clone().unwrap();
    assert_eq!(err.kind, ErrorKind::LeaseExpired);
    assert_eq!(err.agent_id, Some(a));
    assert!(h.fleet.agent(a).unwrap().current_tasks.is_empty());
    assert!(h.count(EventKind::AgentFailed) == 1);
    // Another agent gets the next attempt.
    let b = h.agent("b", &[], 1);
    assert_eq!(h.take(b).unwrap().attempts, 2);
}

#[test]
fn a_task_whose_agents_keep_dying_is_dead_with_lease_expired() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let id = h.submit(TaskSpec {
        max_attempts: Some(2),
        backoff: Some(Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        }),
        ..TaskSpec::default()
    });
    for name in ["a", "b"] {
        let agent = h.agent(name, &[], 1);
        h.take(agent).unwrap();
        h.advance(secs(15));
        assert_eq!(h.agent_status(agent), AgentStatus::Unhealthy);
    }
    assert_eq!(h.status(id), TaskStatus::Dead);
    assert_eq!(h.task(id).attempts, 2);
    assert_eq!(error_of(&h, id).kind, ErrorKind::LeaseExpired);
    assert!(h.task_events(id).contains(&EventKind::TaskDead));
}

#[test]
fn a_placed_task_never_taken_goes_back_without_counting_an_attempt() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let a = h.agent("a", &[], 1);
    assert_eq!(h.take(a), None);
    let id = h.submit(TaskSpec::default());
    assert_eq!(h.status(id), TaskStatus::Assigned);
    h.advance(secs(15));
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    let t = h.task(id);
    assert_eq!(t.status(), TaskStatus::Queued);
    assert_eq!(t.attempts, 0);
    assert!(t.last_error.is_none());
    assert!(h.task_events(id).contains(&EventKind::TaskRequeued));
}

#[test]
fn a_placed_task_not_taken_within_a_lease_goes_back_though_the_agent_lives() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let a = h.agent("a", &[], 1);
    assert_eq!(h.take(a), None);
    let id = h.submit(TaskSpec::default());
    assert_eq!(h.task(id).state.agent_id(), Some(a));
    h.fleet.stop_polling(a);
    for _ in 0..3 {
        h.advance(secs(5));
        h.heartbeat(a).unwrap();
    }
    assert_eq!(
        h.agent_status(a),
        AgentStatus::Idle,
        "alive, but lost the unclaimed task"
    );
    let t = h.task(id);
    assert_eq!((t.status(), t.attempts), (TaskStatus::Queued, 0));
    let b = h.agent("b", &[], 1);
    assert_eq!(h.take(b).unwrap().id, id);
}

#[test]

fn a_fresh_placement_is_not_taken_back_by_the_expiry_of_an_older_one() {
    // The task is placed on `a`, taken, failed (no backoff) and placed on `a` again 10 s
    // later; the expiry of the first placement (at 15 s) must not take back the second.
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let a = h.agent("a", &[], 2);
    assert_eq!(h.take(a), None);
    let id = h.submit(TaskSpec {
        backoff: Some(Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        }),
        ..TaskSpec::default()
    });
    assert_eq!(h.status(id), TaskStatus::Assigned);
    assert_eq!(h.take(a).unwrap().id, id);
    assert_eq!(h.take(a), None, "a waits for more");
    h.advance(secs(10));
    h.fail(a, id, 1, true).unwrap();
    assert_eq!(
        h.status(id),
        TaskStatus::Assigned,
        "placed on the waiting agent again"
    );
    h.advance(secs(5));
    h.heartbeat(a).unwrap();
    assert_eq!(h.status(id), TaskStatus::Assigned, "placed only 5 s ago");
    assert!(
        !h.task_events(id).contains(&EventKind::TaskRequeued),
        "{:?}",
        h.task_events(id)
    );
}

#[test]
fn a_report_after_the_lease_expired_is_a_conflict() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    h.advance(secs(16));
    let err = h.complete(a, id, 1).unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    assert!(err.to_string().contains("taken back"), "{err}");
    let err = h.fail(a, id, 1, true).unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    assert_eq!(h.status(id), TaskStatus::Queued);
    assert_eq!(h.count(EventKind::TaskCompleted), 0);
}

#[test]
fn heartbeats_keep_the_lease() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    for _ in 0..20 {
        h.advance(secs(10));
        assert_eq!(h.heartbeat(a).unwrap(), AgentStatus::Busy);
    }
    assert_eq!(h.status(id), TaskStatus::Running);
    assert_eq!(h.count(EventKind::AgentFailed), 0);
    h.complete(a, id, 1).unwrap();
}

#[test]
fn an_agent_that_lost_its_lease_recovers_with_a_heartbeat_but_not_its_tasks() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    h.advance(secs(15));
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    assert_eq!(h.heartbeat(a).unwrap(), AgentStatus::Idle);
    assert_eq!(h.count(EventKind::AgentRecovered), 1);
    assert_eq!(h.status(id), TaskStatus::Queued);
    // Its lease runs again: silent for another lease, it is unhealthy again.
    h.advance(secs(15));
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
}

#[test]
fn an_agent_name_is_reused_only_once_its_holder_lost_its_lease() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let old = h.agent("crashy", &[], 1);
    let new_id = flotilla_core::AgentId(h.uuid());
    let spec = flotilla_core::AgentSpec {
        name: Some("crashy".to_owned()),
        ..Default::default()
    };
    let swarm = h.swarm.clone();
    let r = h
        .fleet
        .register_agent(&swarm, new_id, spec.clone(), h.now)
        .cloned();
    assert!(is_conflict(&h.refused(r)));
    h.advance(secs(15));
    h.fleet.register_agent(&swarm, new_id, spec, h.now).unwrap();
    h.settle();
    assert!(
        h.fleet.agent(old).is_none(),
        "the crashed agent is replaced"
    );
    assert_eq!(h.agent_status(new_id), AgentStatus::Idle);
    assert!(h.store.agents[&old].status == AgentStatus::Stopped);
}

// ----- attempts -----

#[test]
fn a_timed_out_attempt_is_retried_with_exponential_backoff_then_dead() {
    let mut h = Harness::with(
        FleetLimits::default(),
        SwarmConfig {
            heartbeat_interval: secs(3600),
            ..SwarmConfig::default()
        },
    );
    let backoff = Backoff {
        initial: secs(2),
        max: secs(5),
    };
    let id = h.submit(TaskSpec {
        max_attempts: Some(4),
        timeout: Some(secs(10)),
        backoff: Some(backoff),
        ..TaskSpec::default()
    });
    let a = h.agent("a", &[], 1);
    // Expected waits after attempts 1, 2, 3: 2 s, 4 s, then 8 s capped at 5 s.
    for (attempt, wait) in [(1, 2u64), (2, 4), (3, 5)] {
        let t = h.take(a).expect("a retry is due");
        assert_eq!(t.attempts, attempt);
        h.advance(ms(9_999));
        assert_eq!(h.status(id), TaskStatus::Running);
        h.advance(ms(1));
        let t = h.task(id);
        let failed_at = h.now;
        match t.state {
            TaskState::Queued {
                run_after: Some(run_after),
                ..
            } => assert_eq!(run_after, failed_at + secs(wait), "attempt {attempt}"),
            ref other => panic!("expected a delayed retry, got {other:?}"),
        }
        assert_eq!(t.last_error.as_ref().unwrap().kind, ErrorKind::Timeout);
        assert_eq!(h.take(a), None, "not before its backoff");
        h.fleet.stop_polling(a);
        h.advance(ms(wait * 1000 - 1));
        assert_eq!(h.take(a), None, "still not");
        h.fleet.stop_polling(a);
        h.advance(ms(1));
    }
    h.take(a).unwrap();
    h.advance(secs(10));
    assert_eq!(h.status(id), TaskStatus::Dead);
    assert_eq!(h.task(id).attempts, 4);
    assert_eq!(error_of(&h, id).kind, ErrorKind::Timeout);
    let err = h.complete(a, id, 4).unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
}

#[test]
fn a_non_retryable_failure_fails_the_task_at_once() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec {
        max_attempts: Some(5),
        ..TaskSpec::default()
    });
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    let t = h.fail(a, id, 1, false).unwrap();
    assert_eq!(t.status(), TaskStatus::Failed);
    let err = error_of(&h, id);
    assert_eq!(err.kind, ErrorKind::AgentError);
    assert!(!err.retryable);
    assert_eq!(err.attempt, Some(1));
    assert_eq!(h.agent_status(a), AgentStatus::Idle);
}

#[test]
fn a_retryable_failure_is_retried_until_max_attempts() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec {
        max_attempts: Some(2),
        backoff: Some(Backoff {
            initial: ms(100),
            max: ms(100),
        }),
        ..TaskSpec::default()
    });
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    assert_eq!(h.fail(a, id, 1, true).unwrap().status(), TaskStatus::Queued);
    h.advance(ms(100));
    assert_eq!(h.take(a).unwrap().attempts, 2);
    assert_eq!(h.fail(a, id, 2, true).unwrap().status(), TaskStatus::Dead);
    assert!(h.task_events(id).ends_with(&[EventKind::TaskDead]));
}

#[test]
fn a_report_for_an_older_attempt_is_a_conflict() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec {
        backoff: Some(Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        }),
        ..TaskSpec::default()
    });
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    h.fail(a, id, 1, true).unwrap();
    assert_eq!(h.take(a).unwrap().attempts, 2);
    let err = h.complete(a, id, 1).unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    assert!(err.to_string().contains("stale"), "{err}");
    h.complete(a, id, 2).unwrap();
}

#[test]
fn repeating_the_same_completion_is_answered_and_changes_nothing() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    let first = h.complete(a, id, 1).unwrap();
    let seq = h.fleet.next_event_seq();
    let again = h.complete(a, id, 1).unwrap();
    assert_eq!(first, again);
    assert!(h.last.is_empty(), "{:?}", h.last);
    assert_eq!(h.fleet.next_event_seq(), seq);
    assert_eq!(h.count(EventKind::TaskCompleted), 1);
    assert_eq!(h.fleet.agent(a).unwrap().tasks_completed, 1);
    // Another agent cannot claim it.
    let b = h.agent("b", &[], 1);
    assert!(is_conflict(&h.complete(b, id, 1).unwrap_err()));
}

#[test]
fn cancelling_a_running_task_makes_its_agents_report_a_conflict() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    let t = h.cancel(id).unwrap();
    assert_eq!(t.status(), TaskStatus::Cancelled);
    assert!(h.fleet.agent(a).unwrap().current_tasks.is_empty());
    assert_eq!(h.agent_status(a), AgentStatus::Idle);
    let err = h.complete(a, id, 1).unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    assert!(
        is_conflict(&h.cancel(id).unwrap_err()),
        "cancelling twice is a conflict"
    );
    assert_eq!(h.count(EventKind::TaskCompleted), 0);
}

#[test]
fn retrying_a_dead_task_resets_its_attempts() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec {
        max_attempts: Some(1),
        ..TaskSpec::default()
    });
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    h.fail(a, id, 1, true).unwrap();
    assert_eq!(h.status(id), TaskStatus::Dead);
    let t = h.retry(id, Some(3)).unwrap();
    assert_eq!(t.status(), TaskStatus::Queued);
    assert_eq!((t.attempts, t.max_attempts), (0, 3));
    assert_eq!(h.take(a).unwrap().attempts, 1);
    // Only failed, dead or cancelled tasks can be retried.
    assert!(is_conflict(&h.retry(id, None).unwrap_err()));
    h.complete(a, id, 1).unwrap();
    assert!(is_conflict(&h.retry(id, None).unwrap_err()));
}

#[test]

fn retrying_a_stored_task_that_is_not_retryable_changes_nothing() {
    let limits = FleetLimits {
        retain_terminal: 0,
        retain_terminal_for: Duration::ZERO,
        ..FleetLimits::default()
    };
    let mut h = Harness::with(limits, SwarmConfig::default());
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    h.complete(a, id, 1).unwrap();
    h.advance(secs(1));
    assert!(h.fleet.task(id).is_none(), "evicted");
    let err = h.retry(id, None).unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    assert!(
        h.fleet.task(id).is_none(),
        "a refused retry must not load the task back into memory"
    );
}

#[test]
fn a_retried_stored_task_still_keeps_its_deadline() {
    let limits = FleetLimits {
        retain_terminal: 0,
        retain_terminal_for: Duration::ZERO,
        ..FleetLimits::default()
    };
    let mut h = Harness::with(limits, SwarmConfig::default());
    let deadline = h.now + secs(3600);
    let id = h.submit(TaskSpec {
        deadline: Some(deadline),
        ..TaskSpec::default()
    });
    h.cancel(id).unwrap();
    h.advance(secs(1));
    assert!(h.fleet.task(id).is_none(), "evicted");
    h.retry(id, None).unwrap();
    h.advance_to(deadline);
    assert_eq!(
        h.status(id),
        TaskStatus::Failed,
        "the deadline still applies"
    );
    assert_eq!(error_of(&h, id).kind, ErrorKind::DeadlineExceeded);
}

#[test]
fn unregistering_an_agent_puts_its_tasks_back_without_counting_an_attempt() {
    let mut h = Harness::new();
    let ids = h.submit_all(vec![TaskSpec::default(), TaskSpec::default()]);
    let a = h.agent("a", &[], 2);
    let running = h.take(a).unwrap().id;
    assert_eq!(h.take(a).unwrap().attempts, 1);
    h.fleet.unregister_agent(a, h.now).unwrap();
    h.settle();
    for id in &ids {
        let t = h.task(*id);
        assert_eq!(t.status(), TaskStatus::Queued);
        assert_eq!(t.attempts, 0, "leaving is not failing");
    }
    assert!(h.fleet.agent(a).is_none());
    assert_eq!(h.store.agents[&a].status, AgentStatus::Stopped);
    let err = h.complete(a, running, 1).unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    assert!(matches!(
        h.heartbeat(a).unwrap_err(),
        CoreError::NotFound(_)
    ));
}

#[test]
fn a_passed_deadline_fails_the_task_with_deadline_exceeded() {
    let mut h = Harness::new();
    let queued = h.submit(TaskSpec {
        deadline: Some(h.now + secs(30)),
        ..TaskSpec::default()
    });
    let running = h.submit(TaskSpec {
        priority: 10,
        deadline: Some(h.now + secs(60)),
        ..TaskSpec::default()
    });
    let a = h.agent("a", &[], 1);
    assert_eq!(h.take(a).unwrap().id, running);
    for _ in 0..5 {
        h.advance(secs(5));
        h.heartbeat(a).unwrap();
    }
    h.advance(ms(4_999));
    assert_eq!(h.status(queued), TaskStatus::Queued);
    h.advance(ms(1));
    assert_eq!(h.status(queued), TaskStatus::Failed);
    assert_eq!(error_of(&h, queued).kind, ErrorKind::DeadlineExceeded);
    h.heartbeat(a).unwrap();
    for _ in 0..6 {
        h.advance(secs(5));
        h.heartbeat(a).unwrap();
    }
    assert_eq!(h.status(running), TaskStatus::Failed);
    let err = error_of(&h, running);
    assert_eq!(err.kind, ErrorKind::DeadlineExceeded);
    assert_eq!(err.agent_id, Some(a));
    assert!(is_conflict(&h.complete(a, running, 1).unwrap_err()));
    // A deadline in the past is refused.
    let past = h.now;
    let err = h.refuse_submit(vec![TaskSpec {
        deadline: Some(past),
        ..TaskSpec::default()
    }]);
    assert!(matches!(err, CoreError::Invalid(_)));
}

// ----- swarms -----

#[test]
fn a_busy_swarm_is_deleted_only_with_force() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    let r = h.fleet.delete_swarm("work", false, h.now);
    let err = h.refused(r);
    assert!(is_conflict(&err), "{err:?}");
    assert!(err.to_string().contains("force"), "{err}");
    h.fleet.delete_swarm("work", true, h.now).unwrap();
    let changes = h.settle().clone();
    assert_eq!(changes.deleted_swarms, vec![h.swarm_id]);
    assert!(
        changes
            .events
            .iter()
            .any(|e| e.kind == EventKind::SwarmDeleted)
    );
    assert!(h.fleet.task(id).is_none());
    assert!(h.fleet.agent(a).is_none());
    assert!(!h.store.swarms.contains_key(&h.swarm_id));
    assert!(h.store.tasks.is_empty() && h.store.agents.is_empty());
    assert!(matches!(h.fleet.swarm("work"), Err(CoreError::NotFound(_))));
    assert!(matches!(
        h.complete(a, id, 1).unwrap_err(),
        CoreError::NotFound(_)
    ));
    // An idle, empty swarm is deleted without force; the default one never is.
    let spare = flotilla_core::SwarmId(h.uuid());
    let spec = SwarmSpec {
        name: "spare".to_owned(),
        ..SwarmSpec::default()
    };
    h.fleet.create_swarm(spare, spec, h.now).unwrap();
    h.fleet.delete_swarm("spare", false, h.now).unwrap();
    h.settle();
    let r = h.fleet.delete_swarm("default", true, h.now);
    assert!(is_conflict(&h.refused(r)));
}

#[test]
fn swarm_status_follows_its_agents() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let status = |h: &Harness| h.fleet.swarm_by_id(h.swarm_id).unwrap().status;
    assert_eq!(status(&h), SwarmStatus::Inactive);
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    assert_eq!(status(&h), SwarmStatus::Active);
    // b keeps heartbeating, a goes silent.
    for _ in 0..3 {
        h.advance(secs(5));
        h.heartbeat(b).unwrap();
    }
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    assert_eq!(status(&h), SwarmStatus::Degraded);
    h.heartbeat(a).unwrap();
    assert_eq!(status(&h), SwarmStatus::Active);
    // Below min_agents healthy agents, it is degraded too.
    let mut config = lease_config();
    config.min_agents = 3;
    h.fleet
        .update_swarm(
            "work",
            flotilla_core::SwarmUpdate {
                config: Some(config),
                ..Default::default()
            },
            h.now,
        )
        .unwrap();
    h.settle();
    assert_eq!(status(&h), SwarmStatus::Degraded);
    h.agent("c", &[], 1);
    assert_eq!(status(&h), SwarmStatus::Active);
    let changes: Vec<String> = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::SwarmStatusChanged && e.swarm_id == h.swarm_id)
        .map(|e| e.detail.clone())
        .collect();
    assert_eq!(
        changes,
        [
            "inactive -> active",
            "active -> degraded",
            "degraded -> active",
            "active -> degraded",
            "degraded -> active"
        ]
    );
    for id in h
        .fleet
        .agents_of(h.swarm_id, None, None)
        .iter()
        .map(|a| a.id)
        .collect::<Vec<_>>()
    {
        h.fleet.unregister_agent(id, h.now).unwrap();
    }
    h.settle();
    assert_eq!(status(&h), SwarmStatus::Inactive);
}

// ----- restore -----

#[test]
fn restore_keeps_queued_order_running_leases_and_blocked_links() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let runner = h.agent("runner", &[], 1);
    let silent = h.agent("silent", &[], 1);
    let ids = h.submit_all(vec![
        TaskSpec {
            reference: Some("run".to_owned()),
            priority: 10,
            timeout: Some(secs(100)),
            ..TaskSpec::default()
        },
        TaskSpec {
            reference: Some("lost".to_owned()),
            priority: 10,
            backoff: Some(Backoff {
                initial: Duration::ZERO,
                max: Duration::ZERO,
            }),
            ..TaskSpec::default()
        },
        with_ref("blocked", vec![by_ref("run", DependencyKind::Success)]),
        spec("q1", 3),
    ]);
    let [run, lost, blocked, q1] = ids[..] else {
        unreachable!()
    };
    h.advance(ms(1));
    let q2 = h.submit(spec("q2", 7));
    h.advance(ms(1));
    let q3 = h.submit(spec("q3", 3));
    assert_eq!(h.take(runner).unwrap().id, run);
    assert_eq!(h.take(silent).unwrap().id, lost);
    h.advance(secs(4));
    let before: Vec<_> = ids
        .iter()
        .chain([&q2, &q3])
        .map(|id| h.task(*id).clone())
        .collect();

    h.restart();
    for t in &before {
        assert_eq!(h.task(t.id), t, "restored as it was");
    }
    assert_eq!(h.fleet.agent(runner).unwrap().current_tasks, vec![run]);
    assert_eq!(h.agent_status(runner), AgentStatus::Busy);
    assert_eq!(h.fleet.next_event_seq(), h.store.next_event_seq);
    // Leases start afresh from the restart: the runner heartbeats, the silent agent does not.
    for _ in 0..3 {
        h.advance(secs(5));
        h.heartbeat(runner).unwrap();
    }
    assert_eq!(h.agent_status(silent), AgentStatus::Unhealthy);
    assert_eq!(h.status(lost), TaskStatus::Queued);
    assert_eq!(h.status(run), TaskStatus::Running);
    // The blocked task is still linked to its dependency.
    h.complete(runner, run, 1).unwrap();
    assert_eq!(h.status(blocked), TaskStatus::Queued);
    // Queue order: lost (10), q2 (7), then the priority-5 blocked one, q1 and q3 (3, FIFO).
    let mut order = Vec::new();
    while let Some(t) = h.take(runner) {
        order.push(t.id);
        h.complete(runner, t.id, t.attempts).unwrap();
    }
    assert_eq!(order, vec![lost, q2, blocked, q1, q3]);
}

#[test]

fn restore_keeps_fifo_order_of_tasks_queued_in_the_same_millisecond() {
    let mut h = Harness::new();
    // Ids that sort backwards: the queue must not care.
    let specs: Vec<TaskSpec> = (0..5).map(|i| spec(&format!("t{i}"), 5)).collect();
    let ids: Vec<TaskId> = (0..5u128)
        .rev()
        .map(|i| TaskId(uuid::Uuid::from_u128(1000 + i)))
        .collect();
    h.fleet
        .submit_tasks("work", specs, &ids, &KnownTasks::default(), h.now)
        .unwrap();
    h.settle();
    h.restart();
    let a = h.agent("a", &[], 1);
    let mut order = Vec::new();
    while let Some(t) = h.take(a) {
        order.push(t.id);
        h.complete(a, t.id, 1).unwrap();
    }
    assert_eq!(order, ids, "submission order, as before the restart");
}

/// A task fails and is retried after a 10 s backoff; another is submitted 5 s after the
/// failure. Once both are ready, which does an agent get (optionally after a restart)?
fn first_of_retried_and_newer(restart: bool) -> (TaskId, TaskId, TaskId) {
    let mut h = Harness::new();
    let retried = h.submit(TaskSpec {
        backoff: Some(Backoff {
            initial: secs(10),
            max: secs(10),
        }),
        ..spec("retried", 5)
    });
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    h.fail(a, retried, 1, true).unwrap();
    h.advance(secs(5));
    let newer = h.submit(spec("newer", 5));
    h.advance(secs(5));
    if restart {
        h.restart();
    }
    let first = h.take(a).unwrap().id;
    (retried, newer, first)
}

#[test]
fn a_retried_task_waits_behind_tasks_that_were_ready_before_it() {
    let (_, newer, first) = first_of_retried_and_newer(false);
    assert_eq!(first, newer);
}

#[test]

fn restore_keeps_the_place_of_a_retried_task_in_the_queue() {
    let (_, newer, first) = first_of_retried_and_newer(true);
    assert_eq!(first, newer, "the same order as without the restart");
}

#[test]
fn restore_requeues_tasks_of_agents_that_are_gone() {
    let mut h = Harness::new();
    let id = h.submit(TaskSpec::default());
    let a = h.agent("a", &[], 1);
    h.take(a).unwrap();
    // The agent's row says it was removed (as if the task's row was written before the agent
    // left): restore puts the task back without counting the attempt.
    let mut removed = h.store.agents[&a].clone();
    removed.status = AgentStatus::Stopped;
    removed.removed_at = Some(h.now);
    h.store.agents.insert(a, removed);
    h.restart();
    assert!(h.fleet.agent(a).is_none());
    assert_eq!(h.status(id), TaskStatus::Queued);
    assert_eq!(h.task(id).attempts, 0);
    assert!(
        h.last.tasks.iter().any(|t| t.id == id),
        "the correction is persisted"
    );
    assert_eq!(h.store.tasks[&id].status(), TaskStatus::Queued);
}

#[test]

fn restore_after_a_retried_terminal_task_keeps_its_deadline() {
    let mut h = Harness::new();
    let deadline = h.now + secs(600);
    let id = h.submit(TaskSpec {
        deadline: Some(deadline),
        ..TaskSpec::default()
    });
    h.cancel(id).unwrap();
    h.restart();
    h.retry(id, None).unwrap();
    h.advance_to(deadline);
    assert_eq!(
        h.status(id),
        TaskStatus::Failed,
        "the deadline still applies"
    );
    assert_eq!(error_of(&h, id).kind, ErrorKind::DeadlineExceeded);
}

#[test]
fn every_change_is_persisted_so_a_restored_fleet_equals_the_live_one() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let a = h.agent("a", &["x"], 2);
    let b = h.agent("b", &[], 1);
    let ids = h.submit_all(vec![
        with_ref("one", vec![]),
        with_ref("two", vec![by_ref("one", DependencyKind::Success)]),
        TaskSpec {
            required_capabilities: strings(&["x"]),
            ..spec("three", 9)
        },
        spec("four", 1),
    ]);
    assert_eq!(h.take(a).unwrap().id, ids[2]);
    assert_eq!(h.take(a).unwrap().id, ids[0]);
    assert_eq!(h.take(b).unwrap().id, ids[3]);
    h.advance(secs(2));
    h.fleet
        .report_progress(
            a,
            ids[2],
            flotilla_core::Progress {
                percent: Some(50.0),
                ..Default::default()
            },
            h.now,
        )
        .unwrap();
    h.settle();
    h.complete(a, ids[0], 1).unwrap();
    h.advance(secs(1));
    for id in &ids {
        assert_eq!(
            &h.store.tasks[id],
            h.task(*id),
            "stored row of {id} is current"
        );
    }
    // Agents' rows are written when their status changes; whether they are idle or busy and
    // which tasks they hold follow from the tasks, and a restore recomputes them.
    let live_agents: Vec<_> = [a, b]
        .iter()
        .map(|id| h.fleet.agent(*id).unwrap().clone())
        .collect();
    let live: Vec<_> = ids.iter().map(|id| h.task(*id).clone()).collect();
    h.restart();
    for t in live {
        assert_eq!(h.task(t.id), &t);
    }
    for was in live_agents {
        let now = h.fleet.agent(was.id).unwrap();
        assert_eq!(
            (now.status, &now.current_tasks),
            (was.status, &was.current_tasks)
        );
    }
}

trait RefuseSubmit {
    fn refuse_submit(&mut self, specs: Vec<TaskSpec>) -> CoreError;
}

impl RefuseSubmit for Harness {
    /// Submits a batch that must be refused, and checks that it changed nothing.
    fn refuse_submit(&mut self, specs: Vec<TaskSpec>) -> CoreError {
        let ids: Vec<TaskId> = specs.iter().map(|_| TaskId(self.uuid())).collect();
        let swarm = self.swarm.clone();
        let known = self.store.known_for(&self.fleet, &swarm, &specs);
        let r = self
            .fleet
            .submit_tasks(&swarm, specs, &ids, &known, self.now);
        self.refused(r)
    }
}

#[test]
fn the_clock_is_the_callers() {
    // Nothing happens without a tick, however late it is.
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let a = h.agent("a", &[], 1);
    let id = h.submit(TaskSpec {
        deadline: Some(at(1_000)),
        ..TaskSpec::default()
    });
    assert_eq!(h.take(a).unwrap().id, id);
    h.now = at(3_600_000);
    assert_eq!(h.status(id), TaskStatus::Running);
    assert_eq!(h.agent_status(a), AgentStatus::Busy);
    assert!(h.fleet.next_deadline().is_some_and(|d| d <= h.now));
    h.fleet.tick(h.now);
    h.settle();
    assert_eq!(h.status(id), TaskStatus::Failed);
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
}
