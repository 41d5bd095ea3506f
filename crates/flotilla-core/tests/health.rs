//! Health, the circuit breaker and the recovery ladder, through the core's public API.

mod common;

use std::time::Duration;

use common::{Harness, ms, secs, spec};
use flotilla_core::pool::{AgentMode, AgentTemplate, ResourceLimits, RuntimeKind};
use flotilla_core::{
    AgentId, AgentStatus, Breaker, Effect, ErrorKind, EventKind, FleetLimits, HealthPolicy,
    HealthReason, HealthState, PoolSpec, RecoveryPolicy, ResourceUsage, SwarmConfig, TaskSpec,
    TaskState, TaskStatus,
};

fn config(health: HealthPolicy, recovery: RecoveryPolicy) -> SwarmConfig {
    SwarmConfig {
        health,
        recovery,
        ..SwarmConfig::default()
    }
}

fn health(h: &Harness, a: AgentId) -> flotilla_core::AgentHealth {
    h.fleet.agent(a).unwrap().health.clone()
}

/// Runs one task on `a` to the end, succeeding or failing, taking `took`.
fn run_one(h: &mut Harness, a: AgentId, ok: bool, took: Duration) {
    let id = h.submit(spec("t", 5));
    let t = h.take(a).expect("a task");
    assert_eq!(t.id, id);
    h.advance(took);
    if ok {
        h.complete(a, id, t.attempts).unwrap();
    } else {
        h.fail(a, id, t.attempts, false).unwrap();
    }
}

fn alerts(h: &Harness) -> Vec<EventKind> {
    h.events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::AlertWarning | EventKind::AlertCritical | EventKind::AlertRecovery
            )
        })
        .map(|e| e.kind)
        .collect()
}

#[test]
fn the_breaker_opens_after_failures_in_a_row_half_opens_after_its_cooldown_and_closes_on_success() {
    let policy = HealthPolicy {
        breaker_failures: 3,
        breaker_cooldown: secs(10),
        error_rate_min_tasks: 100, // keep the error rate out of this test
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 2);
    for _ in 0..3 {
        run_one(&mut h, a, false, ms(10));
    }
    let hl = health(&h, a);
    assert!(matches!(hl.breaker, Breaker::Open { .. }), "{hl:?}");
    assert_eq!(hl.state, HealthState::Degraded);
    assert_eq!(hl.reason, Some(HealthReason::CircuitOpen));
    // Open: a new task is not given to it, however long it asks.
    let waiting = h.submit(spec("w", 5));
    assert_eq!(h.take(a), None);
    h.advance(secs(9));
    assert_eq!(h.status(waiting), TaskStatus::Queued);
    // Half-open after the cooldown: one trial task (of its two slots).
    let other = h.submit(spec("w2", 5));
    h.advance(secs(1));
    assert_eq!(health(&h, a).breaker, Breaker::HalfOpen);
    let trial = h.take(a).expect("one trial task");
    assert_eq!(trial.id, waiting);
    assert_eq!(h.take(a), None, "only one task while half-open");
    assert_eq!(h.status(other), TaskStatus::Queued);
    h.complete(a, trial.id, trial.attempts).unwrap();
    let hl = health(&h, a);
    assert_eq!(hl.breaker, Breaker::Closed);
    assert_eq!(hl.state, HealthState::Healthy);
    // Closed: both slots again; the other task went to it at once.
    assert_eq!(h.fleet.agent(a).unwrap().current_tasks, vec![other]);
    assert_eq!(
        alerts(&h),
        [EventKind::AlertWarning, EventKind::AlertRecovery]
    );
    assert_eq!(
        h.count(EventKind::AgentBreaker),
        3,
        "open, half-open, closed"
    );
    let history: Vec<_> = hl
        .history
        .iter()
        .map(|t| (t.from, t.to, t.reason))
        .collect();
    assert_eq!(
        history,
        [
            (
                HealthState::Healthy,
                HealthState::Degraded,
                Some(HealthReason::CircuitOpen)
            ),
            (
                HealthState::Degraded,
                HealthState::Healthy,
                Some(HealthReason::CircuitOpen)
            ),
        ]
    );
}

#[test]
fn a_failed_trial_opens_the_breaker_again() {
    let policy = HealthPolicy {
        breaker_failures: 2,
        breaker_cooldown: secs(5),
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 1);
    run_one(&mut h, a, false, ms(1));
    run_one(&mut h, a, false, ms(1));
    h.advance(secs(5));
    assert_eq!(health(&h, a).breaker, Breaker::HalfOpen);
    run_one(&mut h, a, false, ms(1));
    match health(&h, a).breaker {
        Breaker::Open { until } => assert_eq!(until, h.now + secs(5)),
        other => panic!("expected open, got {other:?}"),
    }
}

#[test]
fn a_high_error_rate_degrades_an_agent_until_it_does_better() {
    let policy = HealthPolicy {
        error_rate_threshold: 0.5,
        error_rate_min_tasks: 4,
        breaker_failures: 0,
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 1);
    run_one(&mut h, a, false, ms(1));
    run_one(&mut h, a, true, ms(1));
    run_one(&mut h, a, false, ms(1));
    assert_eq!(
        health(&h, a).state,
        HealthState::Healthy,
        "3 outcomes: too few"
    );
    run_one(&mut h, a, true, ms(1));
    let hl = health(&h, a);
    assert_eq!(hl.state, HealthState::Degraded);
    assert_eq!(hl.reason, Some(HealthReason::ErrorRate));
    assert!(hl.detail.contains("2 of its last 4"), "{}", hl.detail);
    // Degraded agents still work.
    run_one(&mut h, a, true, ms(1));
    assert_eq!(health(&h, a).state, HealthState::Healthy, "2 of 5 failed");
}

#[test]
fn missed_heartbeats_take_an_agents_tasks_back_at_once_and_a_heartbeat_brings_it_back() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let id = h.submit(spec("t", 5));
    let t = h.take(a).unwrap();
    assert_eq!(t.id, id);
    // b keeps heartbeating; a falls silent for its lease (5 s × 3).
    for _ in 0..3 {
        h.advance(secs(5));
        h.heartbeat(b).unwrap();
    }
    let hl = health(&h, a);
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    assert_eq!(hl.state, HealthState::Unhealthy);
    assert_eq!(hl.reason, Some(HealthReason::MissedHeartbeats));
    // The attempt failed (lease expired) and the task is queued for its retry.
    assert_eq!(
        h.task(id).last_error.as_ref().unwrap().kind,
        ErrorKind::LeaseExpired
    );
    assert!(alerts(&h).contains(&EventKind::AlertCritical));
    // a comes back.
    assert_eq!(h.heartbeat(a).unwrap(), AgentStatus::Idle);
    assert_eq!(health(&h, a).state, HealthState::Healthy);
    assert_eq!(alerts(&h).last(), Some(&EventKind::AlertRecovery));
}

#[test]
fn a_task_far_slower_than_usual_degrades_its_agent_until_it_ends() {
    let policy = HealthPolicy {
        slow_task_factor: 3.0,
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 1);
    // Its usual time: 2 s.
    for _ in 0..3 {
        run_one(&mut h, a, true, secs(2));
    }
    assert!((health(&h, a).typical_task_ms.unwrap() - 2000.0).abs() < 1.0);
    let id = h.submit(spec("slow", 5));
    let t = h.take(a).unwrap();
    h.advance(secs(5));
    assert_eq!(health(&h, a).state, HealthState::Healthy, "5 s < 3 × 2 s");
    h.heartbeat(a).unwrap();
    h.advance(secs(2));
    let hl = health(&h, a);
    assert_eq!(hl.state, HealthState::Degraded);
    assert_eq!(hl.reason, Some(HealthReason::SlowTask));
    h.heartbeat(a).unwrap();
    h.complete(a, id, t.attempts).unwrap();
    assert_eq!(health(&h, a).state, HealthState::Healthy);
}

#[test]
fn a_task_silent_past_the_progress_timeout_degrades_its_agent_until_it_reports() {
    let policy = HealthPolicy {
        slow_task_factor: 0.0,
        progress_timeout: Some(secs(20)),
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 1);
    // No progress for 20 s: degraded; progress: healthy again.
    let id = h.submit(spec("silent", 5));
    let t = h.take(a).unwrap();
    for _ in 0..4 {
        h.advance(secs(5));
        h.heartbeat(a).unwrap();
    }
    let hl = health(&h, a);
    assert_eq!(hl.reason, Some(HealthReason::NoProgress), "{hl:?}");
    let progress = flotilla_core::Progress {
        percent: Some(10.0),
        ..Default::default()
    };
    h.fleet.report_progress(a, id, progress, h.now).unwrap();
    h.settle();
    assert_eq!(health(&h, a).state, HealthState::Healthy);
    h.complete(a, id, t.attempts).unwrap();
}

// ----- managed agents -----

fn managed_harness(recovery: RecoveryPolicy, memory: Option<u64>) -> (Harness, AgentId) {
    let mut h = Harness::with(
        FleetLimits::default(),
        config(HealthPolicy::default(), recovery),
    );
    let pool = PoolSpec {
        name: "coder".to_owned(),
        min_agents: 1,
        max_agents: 5,
        capabilities: Vec::new(),
        max_concurrent_tasks: 1,
        template: Some(AgentTemplate {
            command: "coder".to_owned(),
            args: Vec::new(),
            env: Default::default(),
            workdir: None,
            user: None,
            payload_env: Vec::new(),
            runtime: RuntimeKind::Process,
            mode: AgentMode::Daemon,
            placement: Default::default(),
            host_labels: Vec::new(),
            limits: ResourceLimits {
                memory_bytes: memory,
                ..Default::default()
            },
            stop_grace: secs(1),
        }),
        checkpoints: Default::default(),
        priority: flotilla_core::DEFAULT_POOL_PRIORITY,
        resources: Default::default(),
        scaling: Vec::new(),
    };
    let swarm = h.swarm.clone();
    h.fleet.put_pool(&swarm, pool, h.now).unwrap();
    let id = AgentId(h.uuid());
    h.fleet.spawn_agent(&swarm, "coder", id, h.now).unwrap();
    h.settle();
    assert_eq!(h.effects, vec![Effect::StartAgent(id)]);
    started(&mut h, id);
    (h, id)
}

fn started(h: &mut Harness, id: AgentId) {
    h.fleet
        .managed_started(id, Some(4242), None, h.now)
        .unwrap();
    h.settle();
    // A daemon is idle once it calls in.
    h.heartbeat(id).unwrap();
}

fn crash(h: &mut Harness, id: AgentId) {
    h.fleet
        .managed_exited(id, "killed by SIGKILL".to_owned(), false, h.now)
        .unwrap();
    h.settle();
}

#[test]
fn a_crashed_managed_agent_loses_its_task_at_once_and_is_restarted_with_backoff() {
    let recovery = RecoveryPolicy {
        backoff_initial: secs(1),
        backoff_max: secs(3),
        stable_after: secs(60),
        give_up_after: 4,
        ..RecoveryPolicy::default()
    };
    let (mut h, a) = managed_harness(recovery, None);
    let task = h.submit(TaskSpec {
        backoff: Some(flotilla_core::Backoff {
            initial: ms(1),
            max: ms(1),
        }),
        ..spec("t", 5)
    });
    assert_eq!(h.take(a).unwrap().id, task);
    crash(&mut h, a);
    // At once: the attempt failed (agent_exited), the agent recovers, nothing waits on a lease.
    assert_eq!(
        h.task(task).last_error.as_ref().unwrap().kind,
        ErrorKind::AgentExited
    );
    assert_eq!(h.agent_status(a), AgentStatus::Recovering);
    let hl = health(&h, a);
    assert_eq!(hl.reason, Some(HealthReason::ProcessExited));
    assert_eq!(hl.recovery.next_at, Some(h.now + secs(1)));
    // The backoff doubles, capped: 1 s, 2 s, 3 s, 3 s.
    let mut waits = Vec::new();
    for _ in 0..4 {
        let due = health(&h, a)
            .recovery
            .next_at
            .expect("a restart is scheduled");
        waits.push(due.since(h.now));
        h.advance_to(due);
        assert_eq!(h.effects, vec![Effect::StartAgent(a)]);
        assert_eq!(h.agent_status(a), AgentStatus::Pending);
        started(&mut h, a);
        assert_eq!(health(&h, a).state, HealthState::Healthy);
        crash(&mut h, a);
    }
    assert_eq!(waits, [secs(1), secs(2), secs(3), secs(3)]);
    // The fifth crash in a row: recovery gives up; the pool is short of an agent again.
    let hl = health(&h, a);
    assert!(hl.recovery.gave_up, "{hl:?}");
    assert_eq!(hl.reason, Some(HealthReason::GaveUp));
    assert_eq!(h.agent_status(a), AgentStatus::Failed);
    assert_eq!(
        h.fleet.pools_short_of_agents(),
        vec![(h.swarm_id, "coder".to_owned(), 1)]
    );
    // A user's start begins the ladder again.
    h.fleet
        .lifecycle(a, flotilla_core::Operation::Start, false, h.now)
        .unwrap();
    h.settle();
    assert_eq!(h.effects, vec![Effect::StartAgent(a)]);
    assert!(!health(&h, a).recovery.gave_up);
    assert_eq!(health(&h, a).recovery.restarts, 0);
}

#[test]
fn a_stable_run_resets_the_count_of_restarts_in_a_row() {
    let recovery = RecoveryPolicy {
        stable_after: secs(30),
        ..RecoveryPolicy::default()
    };
    let (mut h, a) = managed_harness(recovery, None);
    crash(&mut h, a);
    let due = health(&h, a).recovery.next_at.unwrap();
    h.advance_to(due);
    started(&mut h, a);
    crash(&mut h, a);
    assert_eq!(
        health(&h, a).recovery.next_at,
        Some(h.now + secs(2)),
        "second restart in a row: 2 s"
    );
    let due = health(&h, a).recovery.next_at.unwrap();
    h.advance_to(due);
    started(&mut h, a);
    for _ in 0..7 {
        h.advance(secs(5));
        h.heartbeat(a).unwrap();
    }
    crash(&mut h, a);
    assert_eq!(
        health(&h, a).recovery.next_at,
        Some(h.now + secs(1)),
        "after 35 s of running, the count starts over"
    );
}

#[test]
fn a_managed_agent_over_its_memory_limit_is_killed_and_restarted() {
    let (mut h, a) = managed_harness(RecoveryPolicy::default(), Some(100 * 1024 * 1024));
    let task = h.submit(spec("t", 5));
    assert_eq!(h.take(a).unwrap().id, task);
    let usage = |mb: f64| ResourceUsage {
        memory_mb: Some(mb),
        ..ResourceUsage::default()
    };
    h.fleet.record_usage(a, usage(95.0), h.now);
    h.settle();
    let hl = health(&h, a);
    assert_eq!(
        (hl.state, hl.reason),
        (HealthState::Degraded, Some(HealthReason::Memory))
    );
    assert!(matches!(h.task(task).state, TaskState::Running { .. }));
    h.fleet.record_usage(a, usage(130.0), h.now);
    h.settle();
    let hl = health(&h, a);
    assert_eq!(
        (hl.state, hl.reason),
        (HealthState::Unhealthy, Some(HealthReason::Memory))
    );
    assert!(hl.detail.contains("130 MiB"), "{}", hl.detail);
    // Its process is killed at once, its task taken back, a restart scheduled.
    assert_eq!(h.effects, vec![Effect::StopAgent(a, true)]);
    assert_eq!(
        h.task(task).last_error.as_ref().unwrap().kind,
        ErrorKind::AgentUnhealthy
    );
    assert_eq!(h.agent_status(a), AgentStatus::Recovering);
    // The kill is reported as an expected exit: recovery stays in charge.
    h.fleet
        .managed_exited(a, "killed by SIGKILL".to_owned(), true, h.now)
        .unwrap();
    h.settle();
    assert_eq!(h.agent_status(a), AgentStatus::Recovering);
    h.advance(secs(1));
    assert_eq!(h.effects, vec![Effect::StartAgent(a)]);
}

#[test]
fn health_survives_a_restart_of_the_coordinator() {
    let policy = HealthPolicy {
        breaker_failures: 2,
        breaker_cooldown: secs(60),
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 1);
    run_one(&mut h, a, false, ms(1));
    run_one(&mut h, a, false, ms(1));
    let before = health(&h, a);
    assert!(matches!(before.breaker, Breaker::Open { .. }));
    h.restart();
    assert_eq!(health(&h, a), before);
    // The open breaker still keeps tasks away, and still half-opens on time.
    h.submit(spec("x", 5));
    assert_eq!(h.take(a), None);
    h.advance(secs(60));
    assert_eq!(health(&h, a).breaker, Breaker::HalfOpen);
    assert!(h.take(a).is_some());
}

// ----- checkpoints -----

fn checkpoint(h: &mut Harness, a: AgentId, n: u128) -> flotilla_core::CheckpointId {
    let id = flotilla_core::CheckpointId(uuid::Uuid::from_u128(0xc0de_0000 + n));
    let swarm_id = h.fleet.agent(a).unwrap().swarm_id;
    let c = flotilla_core::Checkpoint {
        id,
        agent_id: a,
        swarm_id,
        created_at: h.now,
        trigger: flotilla_core::CheckpointTrigger::Manual,
        description: format!("n{n}"),
        state: None,
        tasks: h.fleet.task_context(a).unwrap(),
        workspace: Some(flotilla_core::Json::from_value(
            &serde_json::json!({"n": n as u64}),
        )),
        workspace_error: None,
    };
    let evicted = h.fleet.record_checkpoint(c, h.now).unwrap();
    h.settle();
    assert!(evicted.len() <= 1);
    id
}

#[test]
fn checkpoints_are_kept_to_the_pools_number_and_rolled_back_to_on_request() {
    let (mut h, a) = managed_harness(RecoveryPolicy::default(), None);
    // The pool keeps 10 by default: the 11th evicts the first, whose workspace is handed back.
    let first = checkpoint(&mut h, a, 0);
    for n in 1..10 {
        checkpoint(&mut h, a, n);
    }
    assert_eq!(h.fleet.agent(a).unwrap().checkpoints.len(), 10);
    let swarm_id = h.fleet.agent(a).unwrap().swarm_id;
    let c = flotilla_core::Checkpoint {
        id: flotilla_core::CheckpointId(uuid::Uuid::from_u128(0xc0de_00ff)),
        agent_id: a,
        swarm_id,
        created_at: h.now,
        trigger: flotilla_core::CheckpointTrigger::AfterTask,
        description: String::new(),
        state: None,
        tasks: Vec::new(),
        workspace: None,
        workspace_error: None,
    };
    let evicted = h.fleet.record_checkpoint(c, h.now).unwrap();
    h.settle();
    assert_eq!(
        evicted,
        vec![flotilla_core::Json::from_value(
            &serde_json::json!({"n": 0})
        )]
    );
    assert_eq!(h.last.deleted_checkpoints, vec![first]);
    assert!(
        !h.fleet
            .agent(a)
            .unwrap()
            .checkpoints
            .iter()
            .any(|c| c.id == first)
    );
    // Rollback to a named one, to the latest, to an unknown one.
    let named = h.fleet.agent(a).unwrap().checkpoints[3].id;
    assert_eq!(h.fleet.rollback(a, Some(named), h.now).unwrap(), named);
    h.settle();
    assert_eq!(h.effects, vec![Effect::RollbackAgent(a, named)]);
    let latest = h.fleet.agent(a).unwrap().checkpoints.last().unwrap().id;
    assert_eq!(h.fleet.rollback(a, None, h.now).unwrap(), latest);
    h.settle();
    let unknown = flotilla_core::CheckpointId(uuid::Uuid::from_u128(1));
    let r = h.fleet.rollback(a, Some(unknown), h.now);
    let e = h.refused(r);
    assert!(matches!(e, flotilla_core::CoreError::NotFound(_)), "{e:?}");
    // Deleting hands back the workspace; a connected agent cannot be rolled back.
    let gone = h.fleet.delete_checkpoint(a, named, h.now).unwrap();
    h.settle();
    assert_eq!(
        gone,
        Some(flotilla_core::Json::from_value(
            &serde_json::json!({"n": 4})
        ))
    );
    let c = h.agent("connected", &[], 1);
    let r = h.fleet.rollback(c, None, h.now);
    let e = h.refused(r);
    assert!(matches!(e, flotilla_core::CoreError::Conflict(_)), "{e:?}");
    assert!(e.to_string().contains("connected"), "{e}");
}

#[test]
fn from_the_rollback_rung_a_crashing_agent_is_rolled_back_before_it_restarts() {
    let recovery = RecoveryPolicy {
        backoff_initial: secs(1),
        backoff_max: secs(1),
        rollback_after: 2,
        give_up_after: 5,
        ..RecoveryPolicy::default()
    };
    let (mut h, a) = managed_harness(recovery, None);
    let cp = checkpoint(&mut h, a, 1);
    let mut starts = Vec::new();
    for _ in 0..4 {
        crash(&mut h, a);
        h.advance(secs(1));
        starts.push(h.effects.clone());
        started(&mut h, a);
    }
    assert_eq!(
        starts,
        [
            vec![Effect::StartAgent(a)],
            vec![Effect::StartAgent(a)],
            vec![Effect::RollbackAgent(a, cp)],
            vec![Effect::RollbackAgent(a, cp)],
        ]
    );
    assert_eq!(h.count(EventKind::AgentRollback), 2);
}

#[test]
fn interval_checkpoints_fall_due_from_the_start_then_from_the_last_one() {
    let (mut h, a) = managed_harness(RecoveryPolicy::default(), None);
    let swarm = h.swarm.clone();
    let mut pool = h.fleet.pools_of(h.swarm_id)[0].clone();
    pool.checkpoints.every = Some(secs(60));
    let spec = PoolSpec {
        name: pool.name.clone(),
        min_agents: pool.min_agents,
        max_agents: pool.max_agents,
        capabilities: pool.capabilities.clone(),
        max_concurrent_tasks: pool.max_concurrent_tasks,
        template: pool.template.clone(),
        checkpoints: pool.checkpoints.clone(),
        priority: flotilla_core::DEFAULT_POOL_PRIORITY,
        resources: Default::default(),
        scaling: Vec::new(),
    };
    h.fleet.put_pool(&swarm, spec, h.now).unwrap();
    h.settle();
    // Time passes with the agent heartbeating.
    let live = |h: &mut Harness, s: u64| {
        for _ in 0..s {
            h.advance(secs(1));
            h.heartbeat(a).unwrap();
        }
    };
    live(&mut h, 59);
    assert!(h.fleet.checkpoints_due(h.now).is_empty());
    live(&mut h, 1);
    assert_eq!(h.fleet.checkpoints_due(h.now), vec![a]);
    checkpoint(&mut h, a, 1);
    assert!(h.fleet.checkpoints_due(h.now).is_empty());
    live(&mut h, 59);
    assert!(h.fleet.checkpoints_due(h.now).is_empty());
    live(&mut h, 1);
    assert_eq!(h.fleet.checkpoints_due(h.now), vec![a]);
    // Not while it is paused (nor stopped).
    h.fleet
        .lifecycle(a, flotilla_core::Operation::Pause, false, h.now)
        .unwrap();
    h.settle();
    assert!(h.fleet.checkpoints_due(h.now).is_empty());
}

#[test]
fn a_restored_fleet_restarts_recovering_agents_and_leaves_given_up_ones_failed() {
    let recovery = RecoveryPolicy {
        backoff_initial: secs(10),
        backoff_max: secs(10),
        give_up_after: 1,
        ..RecoveryPolicy::default()
    };
    let (mut h, a) = managed_harness(recovery, None);
    crash(&mut h, a);
    assert_eq!(h.agent_status(a), AgentStatus::Recovering);
    h.restart();
    assert_eq!(h.agent_status(a), AgentStatus::Pending);
    assert!(
        h.effects.contains(&Effect::StartAgent(a)),
        "{:?}",
        h.effects
    );
    assert_eq!(health(&h, a).recovery.next_at, None);
    // The old restart timer finds nothing to do.
    h.advance(secs(10));
    assert!(
        !h.effects.contains(&Effect::StartAgent(a)),
        "{:?}",
        h.effects
    );
    started(&mut h, a);
    // The restore's start is not a rung of the ladder: the next crash gets its restart, the
    // one after that (one restart in a row already) gives up.
    crash(&mut h, a);
    h.advance(secs(10));
    started(&mut h, a);
    crash(&mut h, a);
    assert!(health(&h, a).recovery.gave_up);
    h.restart();
    assert_eq!(h.agent_status(a), AgentStatus::Failed);
    assert!(
        !h.effects.contains(&Effect::StartAgent(a)),
        "{:?}",
        h.effects
    );
}

// ----- regressions found in review -----

#[test]
fn a_users_restart_of_a_recovering_agent_starts_it_and_a_failed_start_climbs_the_ladder() {
    let (mut h, a) = managed_harness(RecoveryPolicy::default(), None);
    crash(&mut h, a);
    assert_eq!(h.agent_status(a), AgentStatus::Recovering);
    h.fleet
        .lifecycle(a, flotilla_core::Operation::Restart, false, h.now)
        .unwrap();
    h.settle();
    assert_eq!(h.effects, vec![Effect::RestartAgent(a, false)]);
    assert_eq!(h.agent_status(a), AgentStatus::Pending);
    // The start fails: that is a failure like any other, with its restart scheduled.
    h.fleet
        .managed_exited(a, "could not be started: ENOENT".into(), false, h.now)
        .unwrap();
    h.settle();
    assert_eq!(h.agent_status(a), AgentStatus::Recovering);
    let due = health(&h, a)
        .recovery
        .next_at
        .expect("a restart is scheduled");
    h.advance_to(due);
    assert_eq!(h.effects, vec![Effect::StartAgent(a)]);
}

#[test]
fn an_agent_given_up_on_is_replaced_even_in_a_full_pool_and_only_a_few_are_kept() {
    let recovery = RecoveryPolicy {
        give_up_after: 1,
        backoff_initial: secs(1),
        backoff_max: secs(1),
        ..RecoveryPolicy::default()
    };
    let (mut h, a) = managed_harness(recovery, None);
    let swarm = h.swarm.clone();
    // A pool of exactly one.
    let mut pool = h.fleet.pools_of(h.swarm_id)[0].clone();
    pool.max_agents = 1;
    let spec = PoolSpec {
        name: pool.name.clone(),
        min_agents: 1,
        max_agents: 1,
        capabilities: Vec::new(),
        max_concurrent_tasks: 1,
        template: pool.template.clone(),
        checkpoints: Default::default(),
        priority: flotilla_core::DEFAULT_POOL_PRIORITY,
        resources: Default::default(),
        scaling: Vec::new(),
    };
    h.fleet.put_pool(&swarm, spec, h.now).unwrap();
    h.settle();
    let mut current = a;
    let mut given_up = Vec::new();
    for _ in 0..5 {
        crash(&mut h, current);
        h.advance(secs(1));
        started(&mut h, current);
        crash(&mut h, current);
        assert!(health(&h, current).recovery.gave_up);
        given_up.push(current);
        assert_eq!(h.fleet.pools_short_of_agents().len(), 1);
        let id = AgentId(h.uuid());
        h.fleet.spawn_agent(&swarm, "coder", id, h.now).unwrap();
        h.settle();
        started(&mut h, id);
        current = id;
    }
    // The three most recent stay for inspection; older ones were removed.
    let members: Vec<AgentId> = h
        .fleet
        .agents_of(h.swarm_id, None, Some("coder"))
        .iter()
        .map(|x| x.id)
        .collect();
    for old in &given_up[..2] {
        assert!(!members.contains(old), "{old} should have been removed");
    }
    for kept in &given_up[2..] {
        assert!(members.contains(kept), "{kept} should be kept");
    }
    assert!(members.contains(&current));
}

#[test]
fn a_connected_agent_over_its_memory_stays_down_until_a_sample_shows_it_under() {
    let policy = HealthPolicy {
        memory_limit_mb: Some(100.0),
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 1);
    let beat = |mb: f64| flotilla_core::Heartbeat {
        resource_usage: Some(ResourceUsage {
            memory_mb: Some(mb),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = h.fleet.heartbeat(a, beat(150.0), h.now).map(|x| x.status);
    h.after(r).unwrap();
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    let task = h.submit(TaskSpec {
        max_attempts: Some(2),
        ..spec("t", 5)
    });
    // Its calls keep its lease but do not bring it back, nor give it work.
    assert!(h.take(a).is_none());
    h.heartbeat(a).unwrap();
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    assert_eq!(h.status(task), TaskStatus::Queued);
    // Under its limit again: back, and the task is its.
    let r = h.fleet.heartbeat(a, beat(60.0), h.now).map(|x| x.status);
    h.after(r).unwrap();
    assert_eq!(h.agent_status(a), AgentStatus::Busy);
    assert_eq!(health(&h, a).state, HealthState::Healthy);
    assert_eq!(h.task(task).attempts, 0);
}

#[test]
fn a_slow_task_that_leaves_its_agent_clears_the_verdict_and_later_ones_are_still_seen() {
    let policy = HealthPolicy {
        slow_task_factor: 3.0,
        ..HealthPolicy::default()
    };
    let mut h = Harness::with(FleetLimits::default(), config(policy, Default::default()));
    let a = h.agent("a", &[], 1);
    for _ in 0..3 {
        run_one(&mut h, a, true, secs(2));
    }
    let id = h.submit(spec("slow", 5));
    h.take(a).unwrap();
    h.advance(secs(7));
    assert_eq!(health(&h, a).reason, Some(HealthReason::SlowTask));
    h.cancel(id).unwrap();
    assert_eq!(
        health(&h, a).state,
        HealthState::Healthy,
        "the slow task is gone"
    );
    h.heartbeat(a).unwrap();
    let id = h.submit(spec("slow again", 5));
    h.take(a).unwrap();
    h.advance(secs(7));
    h.heartbeat(a).unwrap();
    assert_eq!(health(&h, a).reason, Some(HealthReason::SlowTask));
    let _ = id;
}

#[test]
fn absurd_health_settings_are_refused() {
    for bad in [
        HealthPolicy {
            slow_task_factor: 1e300,
            ..HealthPolicy::default()
        },
        HealthPolicy {
            error_rate_window: Duration::from_secs(400 * 86_400),
            ..HealthPolicy::default()
        },
        HealthPolicy {
            progress_timeout: Some(Duration::from_secs(u64::MAX / 4)),
            ..HealthPolicy::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn while_a_rollback_is_under_way_the_agent_takes_no_task_and_its_target_stays() {
    let (mut h, a) = managed_harness(RecoveryPolicy::default(), None);
    let target = checkpoint(&mut h, a, 1);
    h.fleet.rollback(a, Some(target), h.now).unwrap();
    h.settle();
    let t = h.submit(spec("t", 5));
    assert!(h.take(a).is_none(), "no task while being rolled back");
    assert_eq!(h.status(t), TaskStatus::Queued);
    // Retention does not evict the target (keep the newest 10 of 12), nor can it be deleted.
    for n in 2..14 {
        checkpoint(&mut h, a, n);
    }
    let refs = &h.fleet.agent(a).unwrap().checkpoints;
    assert!(refs.iter().any(|c| c.id == target));
    let r = h.fleet.delete_checkpoint(a, target, h.now);
    let e = h.refused(r);
    assert!(e.to_string().contains("being restored"), "{e}");
    // Back: it works again, and the target is an ordinary checkpoint.
    h.fleet
        .managed_exited(a, "terminated".into(), true, h.now)
        .unwrap();
    h.settle();
    started(&mut h, a);
    assert_eq!(h.take(a).map(|x| x.id), Some(t));
    assert!(h.fleet.delete_checkpoint(a, target, h.now).is_ok());
}

#[test]
fn a_removed_agents_checkpoints_go_with_it_and_their_workspaces_are_handed_back() {
    let (mut h, a) = managed_harness(RecoveryPolicy::default(), None);
    let one = checkpoint(&mut h, a, 1);
    let two = checkpoint(&mut h, a, 2);
    h.fleet.unregister_agent(a, h.now).unwrap();
    let discards = h.fleet.take_discards();
    h.settle();
    assert_eq!(h.last.deleted_checkpoints, vec![one, two]);
    assert_eq!(
        discards,
        vec![
            flotilla_core::Json::from_value(&serde_json::json!({"n": 1})),
            flotilla_core::Json::from_value(&serde_json::json!({"n": 2})),
        ]
    );
}

#[test]
fn a_lost_host_takes_its_agents_down_their_tasks_back_and_restarts_them_unplaced() {
    let recovery = RecoveryPolicy {
        backoff_initial: secs(1),
        ..RecoveryPolicy::default()
    };
    let (mut h, a) = managed_harness(recovery, None);
    h.fleet.place_agent(a, Some("build-1".to_owned())).unwrap();
    h.settle();
    assert_eq!(h.fleet.agents_on_host("build-1"), vec![a]);
    let task = h.submit(spec("t", 5));
    assert_eq!(h.take(a).unwrap().id, task);
    let on_it = h
        .fleet
        .host_gone("build-1", "stopped answering", false, h.now)
        .unwrap();
    h.settle();
    assert_eq!(on_it, vec![a]);
    // Its task failed the attempt at once and is back in the queue; the agent is off the host
    // and recovering, to be started (placed again) after its backoff.
    assert_eq!(
        h.task(task).last_error.as_ref().unwrap().kind,
        ErrorKind::AgentExited
    );
    assert!(h.fleet.agents_on_host("build-1").is_empty());
    let agent = h.fleet.agent(a).unwrap();
    assert_eq!(agent.managed.as_ref().unwrap().host, None);
    assert_eq!(agent.status, AgentStatus::Recovering);
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == EventKind::HostLost && e.detail.contains("build-1")),
        "{:?}",
        h.events
    );
    let due = health(&h, a)
        .recovery
        .next_at
        .expect("a restart is scheduled");
    h.advance_to(due);
    assert_eq!(h.effects, vec![Effect::StartAgent(a)]);
    // A host that leaves with a stopped agent on it: the agent is only taken off it.
    started(&mut h, a);
    h.fleet.place_agent(a, Some("build-2".to_owned())).unwrap();
    h.fleet
        .lifecycle(a, flotilla_core::Operation::Stop, false, h.now)
        .unwrap();
    h.fleet
        .managed_exited(a, "stopped".to_owned(), true, h.now)
        .unwrap();
    h.settle();
    h.fleet.host_gone("build-2", "left", true, h.now).unwrap();
    h.settle();
    assert_eq!(h.agent_status(a), AgentStatus::Stopped);
    assert!(h.effects.is_empty(), "{:?}", h.effects);
    assert!(h.events.iter().any(|e| e.kind == EventKind::HostLeft));
}
