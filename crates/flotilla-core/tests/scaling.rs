//! Pool sizes through the core's public API: desired size, manual scaling and its refusals,
//! draining on scale-down (no task lost or cut short), pool metrics.

mod common;

use common::{Harness, ms, secs, spec, strings};
use flotilla_core::pool::{AgentMode, AgentTemplate, RuntimeKind};
use flotilla_core::{
    AgentId, AgentStatus, Effect, EventKind, FleetLimits, PoolSpec, ScaleTarget, TaskSpec,
    TaskStatus,
};

fn template() -> AgentTemplate {
    AgentTemplate {
        command: "true".to_owned(),
        args: Vec::new(),
        env: Default::default(),
        workdir: None,
        user: None,
        payload_env: Vec::new(),
        runtime: RuntimeKind::Process,
        mode: AgentMode::Exec,
        placement: Default::default(),
        host_labels: Vec::new(),
        limits: Default::default(),
        stop_grace: secs(1),
    }
}

fn pool(name: &str, min: u32, max: u32, caps: &[&str], managed: bool) -> PoolSpec {
    PoolSpec {
        name: name.to_owned(),
        min_agents: min,
        max_agents: max,
        capabilities: strings(caps),
        max_concurrent_tasks: 1,
        template: managed.then(template),
        checkpoints: Default::default(),
        priority: 5,
        resources: Default::default(),
        scaling: Vec::new(),
    }
}

/// A harness with a managed `coder` pool (min 1, max 4) whose missing agents are spawned and
/// started (exec mode: idle at once).
fn with_pool() -> Harness {
    let mut h = Harness::new();
    let swarm = h.swarm.clone();
    h.fleet
        .put_pool(&swarm, pool("coder", 1, 4, &["rust"], true), h.now)
        .unwrap();
    h.settle();
    fill(&mut h);
    h
}

/// Spawns and starts what the pools lack, as the server's reconcile loop does.
fn fill(h: &mut Harness) -> Vec<AgentId> {
    let mut ids = Vec::new();
    for (_, pool, n) in h.fleet.pools_short_of_agents() {
        for _ in 0..n {
            let id = AgentId(h.uuid());
            let swarm = h.swarm.clone();
            h.fleet.spawn_agent(&swarm, &pool, id, h.now).unwrap();
            h.settle();
            h.fleet.managed_started(id, None, None, h.now).unwrap();
            h.settle();
            ids.push(id);
            // Distinct registration instants make "newest" meaningful.
            h.advance(ms(1));
        }
    }
    ids
}

fn scale(h: &mut Harness, target: ScaleTarget) -> flotilla_core::api::ScaleAnswer {
    let swarm = h.swarm.clone();
    let r = h.fleet.scale_pool(&swarm, "coder", target, "manual", h.now);
    let answer = r.expect("scale accepted");
    h.settle();
    answer
}

fn members(h: &Harness) -> Vec<AgentId> {
    h.fleet
        .agents_of(h.swarm_id, None, Some("coder"))
        .iter()
        .map(|a| a.id)
        .collect()
}

fn rust_task(name: &str) -> TaskSpec {
    TaskSpec {
        required_capabilities: strings(&["rust"]),
        ..spec(name, 5)
    }
}

#[test]
fn the_desired_size_decides_how_many_agents_are_spawned_within_max() {
    let mut h = with_pool();
    assert_eq!(
        members(&h).len(),
        1,
        "min_agents when no size was asked for"
    );
    assert!(h.fleet.pools_short_of_agents().is_empty());
    let answer = scale(&mut h, ScaleTarget::To(3));
    assert_eq!((answer.from, answer.to), (1, 3));
    assert_eq!(
        h.fleet.pools_short_of_agents(),
        vec![(h.swarm_id, "coder".to_owned(), 2)]
    );
    fill(&mut h);
    assert_eq!(members(&h).len(), 3);
    let answer = scale(&mut h, ScaleTarget::By(1));
    assert_eq!((answer.from, answer.to), (3, 4));
    assert_eq!(fill(&mut h).len(), 1);
    assert_eq!(members(&h).len(), 4);
    let e = h
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::PoolScaled);
    let detail = &e.expect("a pool_scaled event").detail;
    assert!(detail.contains("3 -> 4 agents; manual"), "{detail}");
}

#[test]
fn scaling_refuses_unknown_and_unmanaged_pools_and_sizes_out_of_bounds() {
    let mut h = with_pool();
    let swarm = h.swarm.clone();
    h.fleet
        .put_pool(&swarm, pool("humans", 0, 3, &[], false), h.now)
        .unwrap();
    h.settle();
    let now = h.now;
    let r = h
        .fleet
        .scale_pool(&swarm, "nope", ScaleTarget::To(2), "manual", now);
    let e = h.refused(r);
    assert_eq!(e.code(), "not_found");
    assert!(e.to_string().contains("coder, humans"), "{e}");
    let r = h
        .fleet
        .scale_pool(&swarm, "humans", ScaleTarget::To(2), "manual", now);
    let e = h.refused(r);
    assert_eq!(e.code(), "conflict");
    for target in [
        ScaleTarget::To(5),
        ScaleTarget::To(0),
        ScaleTarget::By(-1),
        ScaleTarget::By(i64::MAX),
    ] {
        let r = h.fleet.scale_pool(&swarm, "coder", target, "manual", now);
        let e = h.refused(r);
        assert_eq!(e.code(), "invalid_request", "{target:?}");
        assert!(e.to_string().contains("takes 1 to 4 agents"), "{e}");
    }
    let r = h
        .fleet
        .scale_pool("no-such-swarm", "coder", ScaleTarget::To(2), "manual", now);
    let e = h.refused(r);
    assert_eq!(e.code(), "not_found");
}

#[test]
fn scale_down_drains_idle_agents_first_newest_first_and_removes_them() {
    let mut h = with_pool();
    scale(&mut h, ScaleTarget::To(3));
    let added = fill(&mut h);
    let [oldest] = members(&h)
        .into_iter()
        .filter(|id| !added.contains(id))
        .collect::<Vec<_>>()[..]
    else {
        panic!("one original agent");
    };
    // The oldest and the first added one get work; the newest stays idle.
    h.submit(rust_task("a"));
    h.submit(rust_task("b"));
    let ta = h.take(oldest).expect("a task");
    let tb = h.take(added[0]).expect("a task");
    let answer = scale(&mut h, ScaleTarget::To(2));
    assert_eq!(
        answer.draining,
        vec![h.fleet.agent(added[1]).unwrap().name.clone()]
    );
    // Idle: stopped at once, removed when its process ends.
    assert!(
        h.effects.contains(&Effect::StopAgent(added[1], false)),
        "{:?}",
        h.effects
    );
    h.fleet
        .managed_exited(added[1], "stopped".into(), true, h.now)
        .unwrap();
    h.settle();
    assert!(h.fleet.agent(added[1]).is_none(), "removed");
    assert!(h.fleet.pools_short_of_agents().is_empty(), "no replacement");
    // Both busy: the newer one drains, and keeps its task.
    let answer = scale(&mut h, ScaleTarget::To(1));
    assert_eq!(
        answer.draining,
        vec![h.fleet.agent(added[0]).unwrap().name.clone()]
    );
    assert!(
        h.effects.is_empty(),
        "not stopped while busy: {:?}",
        h.effects
    );
    assert_eq!(answer.pool.size.current, 1);
    assert_eq!(answer.pool.size.draining, 1);
    // It takes no new task, even one it could run.
    h.submit(rust_task("c"));
    h.fleet.settle_drains(h.now);
    h.settle();
    assert_eq!(h.take(added[0]), None);
    assert!(h.effects.is_empty());
    h.advance(secs(1));
    h.complete(added[0], tb.id, tb.attempts).unwrap();
    h.fleet.settle_drains(h.now);
    h.settle();
    assert_eq!(h.effects, vec![Effect::StopAgent(added[0], false)]);
    h.fleet
        .managed_exited(added[0], "stopped".into(), true, h.now)
        .unwrap();
    h.settle();
    assert!(h.fleet.agent(added[0]).is_none());
    assert_eq!(h.task(tb.id).status(), TaskStatus::Completed);
    assert_eq!(h.task(tb.id).attempts, 1, "never cut short nor retried");
    h.complete(oldest, ta.id, ta.attempts).unwrap();
    assert_eq!(members(&h), vec![oldest]);
    let kinds: Vec<EventKind> = h
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::AgentDraining | EventKind::AgentLeft))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::AgentDraining,
            EventKind::AgentLeft,
            EventKind::AgentDraining,
            EventKind::AgentLeft
        ]
    );
}

#[test]
fn a_task_placed_on_a_draining_agent_goes_to_another_without_costing_an_attempt() {
    let mut h = with_pool();
    scale(&mut h, ScaleTarget::To(2));
    let [newer] = fill(&mut h)[..] else {
        panic!("one new agent")
    };
    let older = members(&h).into_iter().find(|a| *a != newer).unwrap();
    // The newer agent polls: a task is placed on it.
    assert_eq!(h.take(newer), None);
    let t = h.submit(rust_task("placed"));
    assert_eq!(h.task(t).state.agent_id(), Some(newer));
    // The older one busy too: equally loaded, the newer is chosen.
    let busy = h.submit(rust_task("busy"));
    assert_eq!(h.take(older).expect("a task").id, busy);
    let scaled = scale(&mut h, ScaleTarget::To(1));
    assert_eq!(scaled.draining.len(), 1);
    let drained = members(&h)
        .into_iter()
        .find(|a| {
            h.fleet
                .agent(*a)
                .unwrap()
                .managed
                .as_ref()
                .unwrap()
                .drain
                .is_some()
        })
        .unwrap();
    assert_eq!(drained, newer, "newest first among the equally loaded");
    assert_eq!(h.task(t).status(), TaskStatus::Queued, "back in the queue");
    assert_eq!(h.task(t).attempts, 0);
    h.complete(older, busy, 1).unwrap();
    let got = h.take(older).expect("the placed task");
    assert_eq!(got.id, t);
}

#[test]
fn growing_keeps_draining_agents_before_spawning_new_ones() {
    let mut h = with_pool();
    scale(&mut h, ScaleTarget::To(2));
    let [newer] = fill(&mut h)[..] else {
        panic!("one new agent")
    };
    h.submit(rust_task("x"));
    let t = h.take(newer).expect("a task");
    let older = members(&h).into_iter().find(|a| *a != newer).unwrap();
    h.submit(rust_task("y"));
    let _ = h.take(older).expect("a task");
    scale(&mut h, ScaleTarget::To(1));
    assert_eq!(members(&h).len(), 2, "one draining, still there");
    // While it is draining, the pool is at its max of 2 present agents: growing keeps it.
    let answer = scale(&mut h, ScaleTarget::To(2));
    assert_eq!(
        answer.kept,
        vec![h.fleet.agent(newer).unwrap().name.clone()]
    );
    assert!(h.fleet.pools_short_of_agents().is_empty());
    assert!(
        h.fleet
            .agent(newer)
            .unwrap()
            .managed
            .as_ref()
            .unwrap()
            .drain
            .is_none()
    );
    // It takes work again.
    h.complete(newer, t.id, t.attempts).unwrap();
    h.submit(rust_task("z"));
    assert!(h.take(newer).is_some());
}

#[test]
fn an_agent_stopping_at_the_end_of_its_drain_holds_its_place_under_max_until_it_is_gone() {
    let mut h = Harness::new();
    let swarm = h.swarm.clone();
    h.fleet
        .put_pool(&swarm, pool("coder", 1, 2, &[], true), h.now)
        .unwrap();
    h.settle();
    fill(&mut h);
    scale(&mut h, ScaleTarget::To(2));
    let [newer] = fill(&mut h)[..] else {
        panic!("one new agent")
    };
    // Idle: its drain ends at once with a stop.
    scale(&mut h, ScaleTarget::To(1));
    assert_eq!(h.effects, vec![Effect::StopAgent(newer, false)]);
    // Asked for 2 again before its process ended: it cannot be kept (it is stopping), and a
    // third agent would pass max_agents: nothing is spawned yet.
    let answer = scale(&mut h, ScaleTarget::To(2));
    assert!(answer.kept.is_empty());
    assert!(h.fleet.pools_short_of_agents().is_empty());
    h.fleet
        .managed_exited(newer, "stopped".into(), true, h.now)
        .unwrap();
    h.settle();
    assert!(h.fleet.agent(newer).is_none());
    assert_eq!(
        h.fleet.pools_short_of_agents(),
        vec![(h.swarm_id, "coder".to_owned(), 1)]
    );
}

#[test]
fn a_user_start_keeps_a_draining_agent_and_a_restore_removes_one() {
    let mut h = with_pool();
    let original = members(&h)[0];
    scale(&mut h, ScaleTarget::To(3));
    let added = fill(&mut h);
    // All three busy: the two newest drain.
    let mut held = Vec::new();
    for (i, a) in [original, added[0], added[1]].iter().enumerate() {
        h.submit(rust_task(&format!("t{i}")));
        held.push(h.take(*a).expect("a task").id);
    }
    let answer = scale(&mut h, ScaleTarget::To(1));
    let names = |ids: &[AgentId]| -> Vec<String> {
        ids.iter()
            .map(|a| h.fleet.agent(*a).unwrap().name.clone())
            .collect()
    };
    assert_eq!(answer.draining, names(&[added[1], added[0]]));
    let draining = |h: &Harness, a: AgentId| {
        h.fleet
            .agent(a)
            .and_then(|a| a.managed.as_ref())
            .is_some_and(|m| m.drain.is_some())
    };
    // A user restarts one of them: it stays.
    assert!(draining(&h, added[0]));
    h.fleet
        .lifecycle(added[0], flotilla_core::Operation::Restart, false, h.now)
        .unwrap();
    h.settle();
    assert!(!draining(&h, added[0]));
    assert!(draining(&h, added[1]));
    // After a restart of the coordinator, the other one (still draining) is gone and its task
    // is back in the queue without a spent attempt.
    let now = h.now + secs(1);
    let mut fleet = h.store.restore(FleetLimits::default(), now);
    assert!(
        fleet.agent(added[1]).is_none(),
        "a draining agent leaves at restore"
    );
    assert!(fleet.agent(added[0]).is_some());
    let task = fleet.task(held[2]).unwrap();
    assert_eq!(task.status(), TaskStatus::Queued);
    assert_eq!(task.attempts, 0);
    let changes = fleet.take_changes();
    assert!(
        changes
            .events
            .iter()
            .any(|e| e.kind == EventKind::AgentLeft && e.agent_id == Some(added[1]))
    );
}

#[test]
fn pool_metrics_count_size_queue_load_errors_and_waits() {
    let mut h = with_pool();
    let swarm = h.swarm.clone();
    h.fleet
        .put_pool(&swarm, pool("other", 0, 2, &["go"], true), h.now)
        .unwrap();
    h.settle();
    scale(&mut h, ScaleTarget::To(2));
    let agents = fill(&mut h);
    // 4 tasks the coder pool can run (no capability and "rust"), 1 it cannot ("go").
    for name in ["a", "b", "c"] {
        h.submit(rust_task(name));
    }
    h.submit(spec("plain", 5));
    h.submit(TaskSpec {
        required_capabilities: strings(&["go"]),
        ..spec("go", 5)
    });
    let view = h.fleet.pool_view(h.swarm_id, "coder", h.now).unwrap();
    assert_eq!(view.queue.ready, 4);
    assert_eq!(view.queue.per_agent, 2.0);
    assert_eq!(view.utilization, 0.0);
    assert_eq!(view.wait_p95_ms, None);
    assert_eq!(
        (
            view.size.current,
            view.size.desired,
            view.size.min,
            view.size.max,
            view.size.draining
        ),
        (2, 2, 1, 4, 0)
    );
    assert_eq!(view.size.by_status.get(&AgentStatus::Idle), Some(&2));
    // One agent takes a task after 400 ms in the queue, the other after 800 ms.
    h.advance(ms(400));
    let t1 = h.take(agents[0]).expect("a task");
    h.advance(ms(400));
    let t2 = members(&h)
        .into_iter()
        .find(|a| *a != agents[0])
        .map(|a| (a, h.take(a).expect("a task")))
        .unwrap();
    let view = h.fleet.pool_view(h.swarm_id, "coder", h.now).unwrap();
    assert_eq!(view.queue.ready, 2);
    assert_eq!(view.utilization, 1.0);
    let p95 = view.wait_p95_ms.expect("two waits");
    assert!((800..=803).contains(&p95), "p95 {p95}");
    // One success, one failure: half.
    h.complete(agents[0], t1.id, t1.attempts).unwrap();
    h.fail(t2.0, t2.1.id, t2.1.attempts, false).unwrap();
    let view = h.fleet.pool_view(h.swarm_id, "coder", h.now).unwrap();
    assert_eq!((view.error_rate, view.recent_outcomes), (0.5, 2));
    assert_eq!(view.utilization, 0.0);
    // The swarm view shows every pool.
    let sv = h.fleet.swarm_view(h.swarm_id, h.now).unwrap();
    let names: Vec<&str> = sv.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["coder", "other"]);
    assert_eq!(sv.pools[1].queue.ready, 2, "the go task and the plain one");
}

#[test]
fn a_draining_agent_whose_process_dies_leaves_and_its_task_runs_elsewhere() {
    let mut h = with_pool();
    let original = members(&h)[0];
    scale(&mut h, ScaleTarget::To(2));
    let [newer] = fill(&mut h)[..] else {
        panic!("one new agent")
    };
    h.submit(rust_task("a"));
    let _ = h.take(original).expect("a task");
    h.submit(rust_task("b"));
    let t = h.take(newer).expect("a task");
    scale(&mut h, ScaleTarget::To(1));
    h.fleet
        .managed_exited(newer, "killed by signal 9".into(), false, h.now)
        .unwrap();
    h.settle();
    assert!(h.fleet.agent(newer).is_none(), "removed, not recovered");
    assert_eq!(h.task(t.id).status(), TaskStatus::Queued);
    assert_eq!(h.task(t.id).attempts, 0);
    assert!(h.fleet.pools_short_of_agents().is_empty());
    assert!(!h.fleet.has_draining());
}
