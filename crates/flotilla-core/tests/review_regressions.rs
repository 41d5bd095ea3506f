//! Regressions found by a review of the topology, delegation and message rules: each test
//! failed before its fix (the names say what must hold).

mod common;

use common::*;
use flotilla_core::topology::TopologyConfig;
use flotilla_core::*;

fn harness(topology: Topology, tweak: impl FnOnce(&mut TopologyConfig)) -> Harness {
    let mut config = SwarmConfig::default();
    tweak(&mut config.topology);
    let mut h = Harness::with(FleetLimits::default(), config);
    let swarm = h.swarm.clone();
    h.fleet
        .set_topology(&swarm, topology, None, h.now)
        .expect("set topology");
    h.settle();
    h
}

fn ordered(name: &str) -> TaskSpec {
    TaskSpec {
        ordered: true,
        ..spec(name, 5)
    }
}

fn report(h: &mut Harness, a: AgentId, status: ReportedHealth) {
    let r = h
        .fleet
        .heartbeat(
            a,
            Heartbeat {
                status: Some(status),
                ..Heartbeat::default()
            },
            h.now,
        )
        .map(|_| ());
    h.after(r).unwrap();
}

fn token_holder(h: &Harness) -> Option<AgentId> {
    h.fleet
        .topology_view(h.swarm_id, h.now)
        .unwrap()
        .token
        .unwrap()
        .holder
}

/// Every agent of the ring goes out of service (here: says it is unhealthy) while an ordered
/// task waits: the token times out and goes to "nobody". When the agents come back, nothing
/// gives the token out again (no liveness change is noted), so the ordered task waits forever.
#[test]
fn the_rings_token_comes_back_after_everyone_was_out_of_service() {
    let mut h = harness(Topology::Ring, |t| t.ring.token_timeout = ms(500));
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    assert_eq!(token_holder(&h), Some(a));
    report(&mut h, a, ReportedHealth::Unhealthy);
    report(&mut h, b, ReportedHealth::Unhealthy);
    let t = h.submit(ordered("step"));
    h.advance(ms(600));
    assert_eq!(token_holder(&h), None, "the token went to nobody");
    // Both are well again.
    report(&mut h, a, ReportedHealth::Healthy);
    report(&mut h, b, ReportedHealth::Healthy);
    for _ in 0..20 {
        h.advance(secs(1));
        h.heartbeat(a).unwrap();
        h.heartbeat(b).unwrap();
    }
    let got_a = h.take(a).map(|t| t.id);
    let got_b = h.take(b).map(|t| t.id);
    assert!(
        got_a == Some(t) || got_b == Some(t),
        "the ordered task is never taken: token holder {:?}, task {:?}",
        token_holder(&h),
        h.status(t)
    );
}

/// Ordered tasks A, B, C: A runs, B waits on A, C waits on B. Cancelling B releases C at once,
/// while A still runs: two ordered tasks run at the same time.
#[test]
fn cancelling_a_middle_ordered_task_keeps_one_at_a_time() {
    let mut h = harness(Topology::Star, |_| {});
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let ts = h.submit_all(vec![ordered("A"), ordered("B"), ordered("C")]);
    let first = h.take(a).unwrap();
    assert_eq!(first.id, ts[0]);
    h.cancel(ts[1]).unwrap();
    let second = h.take(b).map(|t| t.id);
    assert_eq!(h.status(ts[0]), TaskStatus::Running);
    assert_ne!(
        second,
        Some(ts[2]),
        "ordered task C started while ordered task A is still running"
    );
}

/// Ordered A runs, B (the newest) waits. B is cancelled, then C is submitted: C still waits
/// for A (one at a time), and runs once A is done.
#[test]
fn an_ordered_task_submitted_after_the_newest_was_cancelled_still_waits_its_turn() {
    let mut h = harness(Topology::Star, |_| {});
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let ts = h.submit_all(vec![ordered("A"), ordered("B")]);
    assert_eq!(h.take(a).unwrap().id, ts[0]);
    h.cancel(ts[1]).unwrap();
    let c = h.submit(ordered("C"));
    assert!(h.take(b).is_none(), "C started while A still runs");
    h.fleet.stop_polling(b);
    h.complete(a, ts[0], 1).unwrap();
    assert_eq!(h.take(b).map(|t| t.id), Some(c));
}

/// An agent delegates two subtasks with the same idempotency key (say, the same piece of work
/// listed twice). Both resolve to one task, the parent counts it twice, and never concludes.
#[test]
fn two_subtasks_with_one_key_are_one_subtask() {
    let mut h = harness(Topology::Hierarchical, |_| {});
    let boss = h.agent("boss", &[], 1);
    let worker = h.agent("worker", &[], 1);
    let top = h.submit(spec("top", 5));
    assert_eq!(h.take(boss).unwrap().id, top);
    let sub = |k: &str| TaskSpec {
        idempotency_key: Some(k.to_owned()),
        ..spec("part", 5)
    };
    let ids = [TaskId(h.uuid()), TaskId(h.uuid())];
    let r = h.fleet.delegate_task(
        boss,
        top,
        vec![sub("same"), sub("same")],
        &ids,
        &Default::default(),
        h.now,
    );
    let subs = h.after(r).unwrap();
    assert_eq!(subs.len(), 1, "the same task twice is one subtask");
    let got = h.take(worker).unwrap();
    h.complete(worker, got.id, 1).unwrap();
    for _ in 0..10 {
        h.advance(secs(10));
        h.heartbeat(boss).unwrap();
        h.heartbeat(worker).unwrap();
    }
    assert_eq!(
        h.status(top),
        TaskStatus::Completed,
        "every subtask finished, yet the parent is still {:?}",
        h.status(top)
    );
}

/// A subtask whose idempotency key is the parent's own: the parent waits on itself forever.
#[test]
fn a_subtask_keyed_like_its_parent_is_refused() {
    let mut h = harness(Topology::Hierarchical, |_| {});
    let boss = h.agent("boss", &[], 1);
    let _worker = h.agent("worker", &[], 1);
    let top = h.submit(TaskSpec {
        idempotency_key: Some("job-1".to_owned()),
        ..spec("top", 5)
    });
    assert_eq!(h.take(boss).unwrap().id, top);
    let ids = [TaskId(h.uuid())];
    let r = h.fleet.delegate_task(
        boss,
        top,
        vec![TaskSpec {
            idempotency_key: Some("job-1".to_owned()),
            ..spec("part", 5)
        }],
        &ids,
        &Default::default(),
        h.now,
    );
    match h.after(r) {
        Err(e) => {
            // A refusal would be fine.
            eprintln!("refused: {e}");
        }
        Ok(subs) => {
            assert_ne!(
                subs[0],
                top,
                "the task was delegated to itself: it is {:?} and depends on nothing that can finish",
                h.status(top)
            );
        }
    }
}

/// A dead message retried twice with the copy read from the store (two concurrent
/// `POST /messages/{id}/retry`, each reading the row before the other's commit): the core puts
/// the same id in flight twice, breaking the inbox indexes.
#[test]
fn retrying_a_dead_message_twice_keeps_one_copy() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let id = MessageId(h.uuid());
    let r = h.fleet.send_message(
        id,
        Some(a),
        b,
        MessageSpec {
            body: Json::from_value(&serde_json::json!({"x": 1})),
            ttl: Some(ms(100)),
            ..MessageSpec::default()
        },
        h.now,
    );
    h.after(r).unwrap();
    h.advance(ms(200));
    let dead = h.store.messages[&id].clone();
    assert_eq!(dead.status, MessageStatus::Dead);
    let first = h.fleet.retry_dead_message(dead.clone(), h.now);
    assert!(first.is_ok());
    h.settle();
    let second = h.fleet.retry_dead_message(dead, h.now);
    // The second must be refused (the message is live again); if it is accepted the inbox
    // indexes are broken.
    if second.is_ok() {
        let check = h.fleet.check_invariants();
        panic!("second retry of the same message accepted; invariants: {check:?}");
    }
}

/// A dead request retried before its timeout: in memory it can still be answered, but the row
/// says it no longer waits (`reply` null), so after a restart the responder's answer is refused
/// and the requester never gets a response nor a timeout.
#[test]
fn a_retried_request_behaves_the_same_across_a_restart() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let req = MessageId(h.uuid());
    let r = h.fleet.send_message(
        req,
        Some(a),
        b,
        MessageSpec {
            kind: Some(MessageKind::Request),
            body: Json::from_value(&serde_json::json!({"q": 1})),
            ttl: Some(ms(100)),
            timeout: Some(secs(600)),
            ..MessageSpec::default()
        },
        h.now,
    );
    h.after(r).unwrap();
    h.advance(ms(200));
    let dead = h.store.messages[&req].clone();
    assert_eq!(dead.status, MessageStatus::Dead);
    let r = h.fleet.retry_dead_message(dead, h.now);
    h.after(r).unwrap();
    h.restart();
    h.heartbeat(a).unwrap();
    h.heartbeat(b).unwrap();
    let resp = MessageId(h.uuid());
    let r = h.fleet.send_message(
        resp,
        Some(b),
        a,
        MessageSpec {
            kind: Some(MessageKind::Response),
            correlation_id: Some(req),
            body: Json::from_value(&serde_json::json!({"a": 1})),
            ..MessageSpec::default()
        },
        h.now,
    );
    let answered = h.after(r);
    // Before the restart the same answer is accepted (the request still awaits in memory);
    // after it, it is refused, and no timeout response will ever come either.
    h.advance(secs(700));
    let to_a: Vec<&Message> = h
        .store
        .messages
        .values()
        .filter(|m| m.correlation_id == Some(req))
        .collect();
    assert!(
        answered.is_ok() || !to_a.is_empty(),
        "after a restart the retried request can neither be answered ({answered:?}) nor times out"
    );
}

/// A star with two coordinators; an agent asking to coordinate dies and comes back. The patch
/// path keeps it a worker; a fresh build (any restart) makes it a coordinator and demotes the
/// current one: patched graph != rebuilt graph.
#[test]
fn star_roles_survive_a_restart_when_a_senior_agent_returns() {
    let mut h = harness(Topology::Star, |t| t.star.coordinator_count = 2);
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let c = h.agent("c", &[], 1);
    let d = AgentId(h.uuid());
    let swarm = h.swarm.clone();
    let r = h
        .fleet
        .register_agent(
            &swarm,
            d,
            AgentSpec {
                name: Some("d".to_owned()),
                role: AgentRole::Coordinator,
                ..AgentSpec::default()
            },
            h.now,
        )
        .map(|_| ());
    h.after(r).unwrap();
    // d dies (its lease lapses) and comes back.
    let lease = SwarmConfig::default().lease_duration();
    for _ in 0..3 {
        h.advance(lease / 3);
        for x in [a, b, c] {
            h.heartbeat(x).unwrap();
        }
    }
    h.advance(ms(1));
    assert_eq!(h.agent_status(d), AgentStatus::Unhealthy);
    h.heartbeat(d).unwrap();
    h.advance(ms(1));
    let roles = |h: &Harness| -> Vec<(String, AgentRole)> {
        let mut v: Vec<(String, AgentRole)> = [a, b, c, d]
            .iter()
            .map(|x| {
                let ag = h.fleet.agent(*x).unwrap();
                (ag.name.clone(), ag.role)
            })
            .collect();
        v.sort();
        v
    };
    let before = roles(&h);
    h.restart();
    let after = roles(&h);
    assert_eq!(
        before, after,
        "roles change across a restart with no membership change"
    );
}

/// A supervisor delegates a subtask needing a capability none of its (alive) children has: only
/// its children may take it, so it waits forever although another agent could run it.
#[test]
fn a_subtask_no_child_can_run_goes_to_anyone() {
    let mut h = harness(Topology::Hierarchical, |t| {
        t.hierarchical.parent_child_ratio = 2
    });
    let boss = h.agent("boss", &[], 1);
    let s1 = h.agent("s1", &[], 1);
    let others: Vec<AgentId> = (0..3).map(|i| h.agent(&format!("w{i}"), &[], 1)).collect();
    let gpu = h.agent("gpu", &["gpu"], 1);
    let top = h.submit(spec("top", 5));
    assert_eq!(h.take(boss).unwrap().id, top);
    let ids = [TaskId(h.uuid())];
    let r = h.fleet.delegate_task(
        boss,
        top,
        vec![TaskSpec {
            required_capabilities: strings(&["gpu"]),
            ..spec("render", 5)
        }],
        &ids,
        &Default::default(),
        h.now,
    );
    let subs = h.after(r).unwrap();
    let view = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    let parent_of_gpu = view.nodes.iter().find(|n| n.id == gpu).unwrap().parent;
    assert_ne!(
        parent_of_gpu,
        Some(boss),
        "the gpu agent is not the boss's child"
    );
    for _ in 0..5 {
        h.advance(secs(5));
        for x in [boss, s1, gpu].iter().chain(others.iter()) {
            h.heartbeat(*x).unwrap();
        }
    }
    assert!(
        h.take(gpu).is_some_and(|t| t.id == subs[0]),
        "the gpu subtask stays {:?}: only the boss's children (none with gpu) may take it",
        h.status(subs[0])
    );
}

/// A delegated task whose deadline passes fails, but its subtasks go on (queued, run), their
/// results going nowhere; cancelling cascades, the deadline does not.
#[test]
fn a_delegated_task_past_its_deadline_cancels_its_subtasks() {
    let mut h = harness(Topology::Hierarchical, |_| {});
    let boss = h.agent("boss", &[], 1);
    let _w = h.agent("w", &[], 1);
    let top = h.submit(TaskSpec {
        deadline: Some(h.now + secs(5)),
        ..spec("top", 5)
    });
    assert_eq!(h.take(boss).unwrap().id, top);
    let ids = [TaskId(h.uuid())];
    let r = h.fleet.delegate_task(
        boss,
        top,
        vec![spec("part", 5)],
        &ids,
        &Default::default(),
        h.now,
    );
    let subs = h.after(r).unwrap();
    h.advance(secs(6));
    h.heartbeat(boss).unwrap();
    assert_eq!(h.status(top), TaskStatus::Failed);
    assert!(
        h.status(subs[0]).is_terminal(),
        "the parent failed at its deadline but its subtask is still {:?}",
        h.status(subs[0])
    );
}

/// With the `affinity` strategy, a ready task with an affinity key goes straight to the local
/// queue of the agent that last ran the key (`place_by_affinity`), bypassing the lanes: an
/// ordered task in a ring is taken by an agent that does not hold the token.
#[test]
fn affinity_does_not_give_an_ordered_task_to_a_non_holder() {
    let mut config = SwarmConfig {
        strategy: Strategy::Affinity,
        ..SwarmConfig::default()
    };
    config.topology.ring.token_timeout = secs(60);
    let mut h = Harness::with(FleetLimits::default(), config);
    let swarm = h.swarm.clone();
    h.fleet
        .set_topology(&swarm, Topology::Ring, None, h.now)
        .unwrap();
    h.settle();
    let r0 = h.agent("r0", &[], 1);
    let r1 = h.agent("r1", &[], 1);
    let keyed = |n: &str| TaskSpec {
        ordered: true,
        affinity_key: Some("repo".to_owned()),
        ..spec(n, 5)
    };
    let t1 = h.submit(keyed("one"));
    assert_eq!(h.take(r0).map(|t| t.id), Some(t1));
    h.complete(r0, t1, 1).unwrap();
    assert_eq!(token_holder(&h), Some(r1), "the token moved on to r1");
    let t2 = h.submit(keyed("two"));
    let got = h.take(r0).map(|t| t.id);
    assert_ne!(
        got,
        Some(t2),
        "r0 took ordered task two although r1 holds the ring's token"
    );
}

/// Same bypass for a delegated subtask: it goes to the agent that last ran its affinity key,
/// though that agent is not a child of the delegator.
#[test]
fn affinity_does_not_give_a_subtask_to_a_non_child() {
    let mut config = SwarmConfig {
        strategy: Strategy::Affinity,
        ..SwarmConfig::default()
    };
    config.topology.hierarchical.parent_child_ratio = 1;
    let mut h = Harness::with(FleetLimits::default(), config);
    let swarm = h.swarm.clone();
    h.fleet
        .set_topology(&swarm, Topology::Hierarchical, None, h.now)
        .unwrap();
    h.settle();
    // boss -> s (supervisor) -> w (worker)
    let boss = h.agent("boss", &[], 1);
    let s = h.agent("s", &[], 1);
    let w = h.agent("w", &[], 1);
    let view = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    let parent = |a: AgentId| view.nodes.iter().find(|n| n.id == a).unwrap().parent;
    assert_eq!(parent(s), Some(boss));
    assert_eq!(parent(w), Some(s));
    // w ran key "repo" last.
    let warm = h.submit(TaskSpec {
        affinity_key: Some("repo".to_owned()),
        ..spec("warm", 5)
    });
    let got = [w, s, boss]
        .into_iter()
        .find(|a| h.take(*a).is_some_and(|t| t.id == warm));
    // Make sure w is the one that ran it.
    let holder = got.unwrap();
    if holder != w {
        eprintln!("skip: {holder:?} took the warm-up task");
        return;
    }
    h.complete(w, warm, 1).unwrap();
    let top = h.submit(spec("top", 5));
    assert_eq!(h.take(boss).map(|t| t.id), Some(top));
    let ids = [TaskId(h.uuid())];
    let r = h.fleet.delegate_task(
        boss,
        top,
        vec![TaskSpec {
            affinity_key: Some("repo".to_owned()),
            ..spec("part", 5)
        }],
        &ids,
        &Default::default(),
        h.now,
    );
    let subs = h.after(r).unwrap();
    let got = h.take(w).map(|t| t.id);
    assert_ne!(
        got,
        Some(subs[0]),
        "w (a grandchild) took the boss's subtask; only the boss's children may"
    );
}

/// A dead message retried twice (two operators at once): the second retry is refused, and an
/// acknowledgement then a receive work (a stale inbox entry once made the receive panic).
#[test]
fn a_second_retry_of_a_dead_message_is_refused_and_nothing_breaks() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let id = MessageId(h.uuid());
    let r = h.fleet.send_message(
        id,
        Some(a),
        b,
        MessageSpec {
            body: Json::from_value(&serde_json::json!({"x": 1})),
            ttl: Some(ms(100)),
            ..MessageSpec::default()
        },
        h.now,
    );
    h.after(r).unwrap();
    h.advance(ms(200));
    let dead = h.store.messages[&id].clone();
    let r = h.fleet.retry_dead_message(dead.clone(), h.now);
    h.after(r).unwrap();
    let r = h.fleet.retry_dead_message(dead, h.now);
    assert!(matches!(h.refused(r), CoreError::Conflict(_)));
    let r = h.fleet.ack_messages(b, &[id], h.now);
    assert_eq!(h.after(r).unwrap(), vec![id]);
    let r = h.fleet.take_messages(b, 10, h.now);
    assert!(h.after(r).unwrap().is_empty());
}

/// A request cleared from its recipient's inbox: its row is deleted, but it still awaits in
/// memory (answerable, and a timeout response will come). After a restart it is gone: the
/// requester never gets a response nor a timeout.
#[test]
fn a_cleared_request_is_answered_at_once_and_across_a_restart() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let req = MessageId(h.uuid());
    let r = h.fleet.send_message(
        req,
        Some(a),
        b,
        MessageSpec {
            kind: Some(MessageKind::Request),
            body: Json::from_value(&serde_json::json!({"q": 1})),
            timeout: Some(secs(5)),
            ..MessageSpec::default()
        },
        h.now,
    );
    h.after(r).unwrap();
    let r = h.fleet.clear_inbox(b, h.now);
    assert_eq!(h.after(r).unwrap(), 1);
    let restart = true;
    if restart {
        h.restart();
    }
    for _ in 0..10 {
        h.advance(secs(1));
        h.heartbeat(a).unwrap();
        h.heartbeat(b).unwrap();
    }
    let timeouts = h
        .store
        .messages
        .values()
        .filter(|m| m.correlation_id == Some(req))
        .count();
    assert_eq!(
        timeouts, 1,
        "without the restart a's request gets its timeout response; after it, nothing"
    );
}

/// Plain agents, two coordinators: b (a coordinator) dies, c is promoted; b comes back and the
/// patch makes it a worker. A fresh build ranks b (earlier) before c, so a restart (or any later
/// rebuild) demotes c and promotes b with no membership change.
#[test]
fn star_roles_survive_a_restart_when_a_former_coordinator_returns() {
    let mut h = harness(Topology::Star, |t| t.star.coordinator_count = 2);
    let agents: Vec<AgentId> = (0..4).map(|i| h.agent(&format!("s{i}"), &[], 1)).collect();
    let b = agents[1];
    assert_eq!(h.fleet.agent(b).unwrap().role, AgentRole::Coordinator);
    let lease = SwarmConfig::default().lease_duration();
    for _ in 0..3 {
        h.advance(lease / 3);
        for x in agents.iter().filter(|x| **x != b) {
            h.heartbeat(*x).unwrap();
        }
    }
    h.advance(ms(1));
    assert_eq!(h.agent_status(b), AgentStatus::Unhealthy);
    h.heartbeat(b).unwrap();
    h.advance(ms(1));
    let roles = |h: &Harness| -> Vec<(String, AgentRole, Option<String>)> {
        let v = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
        let name = |id: AgentId| h.fleet.agent(id).unwrap().name.clone();
        let mut out: Vec<_> = v
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.role, n.parent.map(name)))
            .collect();
        out.sort();
        out
    };
    let before = roles(&h);
    h.restart();
    assert_eq!(
        before,
        roles(&h),
        "roles and parents change across a restart"
    );
}
