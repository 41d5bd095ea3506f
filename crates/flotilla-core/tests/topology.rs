//! The topology rules of the fleet: roles, leader elections, the ring's token and ordered tasks,
//! hierarchical delegation with results aggregated up, mesh gossip, and live topology changes.

mod common;

use common::*;
use flotilla_core::topology::{ConnectionStrategy, RingOrder, Routing, TopologyConfig};
use flotilla_core::*;

fn harness(topology: Topology, tweak: impl FnOnce(&mut TopologyConfig)) -> Harness {
    let mut config = SwarmConfig::default();
    tweak(&mut config.topology);
    let mut h = Harness::with(FleetLimits::default(), config);
    let swarm = h.swarm.clone();
    let view = h
        .fleet
        .set_topology(&swarm, topology, None, h.now)
        .expect("set topology");
    assert_eq!(view.topology, topology);
    h.settle();
    h
}

fn role(h: &Harness, a: AgentId) -> AgentRole {
    h.fleet.agent(a).expect("agent").role
}

fn leader(h: &Harness) -> Option<AgentId> {
    h.fleet.swarm(&h.swarm).unwrap().leader_agent_id
}

fn swarm_status(h: &Harness) -> SwarmStatus {
    h.fleet.swarm(&h.swarm).unwrap().status
}

/// Every agent heartbeats except `silent`.
fn heartbeat_all_but(h: &mut Harness, agents: &[AgentId], silent: &[AgentId]) {
    for a in agents {
        if !silent.contains(a) {
            h.heartbeat(*a).expect("heartbeat");
        }
    }
}

#[test]
fn a_star_elects_its_first_agent_and_fails_over_when_it_dies() {
    let mut h = harness(Topology::Star, |_| {});
    let agents: Vec<AgentId> = (0..4).map(|i| h.agent(&format!("a{i}"), &[], 1)).collect();
    assert_eq!(leader(&h), Some(agents[0]));
    assert_eq!(role(&h, agents[0]), AgentRole::Leader);
    assert!(
        agents[1..]
            .iter()
            .all(|a| role(&h, *a) == AgentRole::Worker)
    );
    assert_eq!(h.count(EventKind::LeaderElection), 1);
    assert_eq!(swarm_status(&h), SwarmStatus::Active);
    // Workers talk to the leader, not to each other.
    assert!(h.fleet.may_send(agents[1], agents[0]).is_ok());
    let refused = h.fleet.may_send(agents[1], agents[2]).unwrap_err();
    assert!(matches!(refused, CoreError::Forbidden(_)), "{refused:?}");

    // The leader falls silent: when its lease lapses, another is elected in the same tick.
    let lease = SwarmConfig::default().lease_duration();
    for _ in 0..3 {
        h.advance(lease / 3);
        heartbeat_all_but(&mut h, &agents, &agents[..1]);
    }
    h.advance(ms(1));
    assert_eq!(h.agent_status(agents[0]), AgentStatus::Unhealthy);
    assert_eq!(leader(&h), Some(agents[1]));
    assert_eq!(role(&h, agents[1]), AgentRole::Leader);
    assert_eq!(role(&h, agents[0]), AgentRole::Worker);
    let election = h
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::LeaderElection)
        .unwrap();
    assert_eq!(election.agent_id, Some(agents[1]));
    assert!(
        election.detail.contains("a0 is unhealthy"),
        "{}",
        election.detail
    );
    // The old leader comes back as a worker: the new leader stays.
    h.heartbeat(agents[0]).unwrap();
    h.advance(ms(1));
    assert_eq!(leader(&h), Some(agents[1]));
    assert_eq!(role(&h, agents[0]), AgentRole::Worker);
    // The roles are stored with the agents and the leader with the swarm.
    h.restart();
    assert_eq!(leader(&h), Some(agents[1]));
    assert_eq!(role(&h, agents[1]), AgentRole::Leader);
}

#[test]
fn a_star_without_failover_is_degraded_until_its_coordinator_returns() {
    let mut h = harness(Topology::Star, |t| t.star.failover_coordinator = false);
    let agents: Vec<AgentId> = (0..3).map(|i| h.agent(&format!("a{i}"), &[], 1)).collect();
    let lease = SwarmConfig::default().lease_duration();
    for _ in 0..3 {
        h.advance(lease / 3);
        heartbeat_all_but(&mut h, &agents, &agents[..1]);
    }
    h.advance(ms(1));
    assert_eq!(leader(&h), None);
    assert_eq!(swarm_status(&h), SwarmStatus::Degraded);
    let last = h
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::LeaderElection)
        .unwrap();
    assert!(last.detail.contains("no agent can lead"), "{}", last.detail);
    h.heartbeat(agents[0]).unwrap();
    h.advance(ms(1));
    assert_eq!(leader(&h), Some(agents[0]));
    assert_eq!(swarm_status(&h), SwarmStatus::Active);
}

#[test]
fn an_agent_asking_to_coordinate_is_preferred() {
    let mut h = harness(Topology::Star, |_| {});
    let w = h.agent("w", &[], 1);
    let id = AgentId(h.uuid());
    let spec = AgentSpec {
        name: Some("boss".to_owned()),
        role: AgentRole::Coordinator,
        ..AgentSpec::default()
    };
    let swarm = h.swarm.clone();
    h.fleet.register_agent(&swarm, id, spec, h.now).unwrap();
    h.settle();
    // The leader is sticky: w keeps it, until it leaves.
    assert_eq!(leader(&h), Some(w));
    h.fleet.unregister_agent(w, h.now).unwrap();
    h.settle();
    assert_eq!(leader(&h), Some(id));
    assert_eq!(
        h.fleet.agent(id).unwrap().requested_role,
        AgentRole::Coordinator
    );
}

/// Four agents in a ring, each polling; ordered tasks run one at a time, each by the next agent
/// around the ring, and an agent that dies is skipped.
#[test]
fn a_ring_processes_ordered_tasks_in_ring_order_and_skips_a_dead_agent() {
    // A token timeout longer than the lease, so that only the death moves the token on.
    let mut h = harness(Topology::Ring, |t| t.ring.token_timeout = secs(60));
    let agents: Vec<AgentId> = (0..4).map(|i| h.agent(&format!("r{i}"), &[], 2)).collect();
    let view = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    assert_eq!(view.nodes.len(), 4);
    assert_eq!(view.edges.len(), 4, "a ring of four has four connections");
    let first_holder = view.token.as_ref().unwrap().holder.unwrap();
    assert_eq!(first_holder, agents[0]);
    // Neighbours only.
    assert!(h.fleet.may_send(agents[0], agents[1]).is_ok());
    assert!(h.fleet.may_send(agents[0], agents[3]).is_ok());
    assert!(h.fleet.may_send(agents[0], agents[2]).is_err());

    let tasks = h.submit_all(
        (0..8)
            .map(|i| TaskSpec {
                ordered: true,
                ..spec(&format!("step{i}"), 5)
            })
            .collect(),
    );
    // All queued; each waits its turn (no dependency is added: cancelling one does not
    // release the next early).
    assert!(tasks.iter().all(|t| h.status(*t) == TaskStatus::Queued));
    assert!(tasks.iter().all(|t| h.task(*t).depends_on.is_empty()));

    let mut ran_by = Vec::new();
    let mut dead = None;
    for (i, t) in tasks.iter().enumerate() {
        // Every agent asks; only the token's holder gets the ordered task.
        let mut got = None;
        for a in &agents {
            if Some(*a) == dead {
                continue;
            }
            if let Some(task) = h.take(*a) {
                assert!(got.is_none(), "two agents got ordered work at once");
                assert_eq!(task.id, *t, "ordered tasks run in submission order");
                got = Some(*a);
            }
        }
        // Nobody keeps a poll open (a placed task never taken would go back to the queue).
        for a in &agents {
            h.fleet.stop_polling(*a);
        }
        let agent = got.expect("the holder takes the task");
        ran_by.push(agent);
        h.complete(agent, *t, 1).unwrap();
        if i == 3 {
            // r2 dies (its lease lapses) before its next turn.
            let lease = SwarmConfig::default().lease_duration();
            let victim = agents[2];
            for _ in 0..3 {
                h.advance(lease / 3);
                heartbeat_all_but(&mut h, &agents, &[victim]);
            }
            h.advance(ms(1));
            assert_eq!(h.agent_status(victim), AgentStatus::Unhealthy);
            dead = Some(victim);
        }
    }
    let names: Vec<String> = ran_by
        .iter()
        .map(|a| h.fleet.agent(*a).unwrap().name.clone())
        .collect();
    assert_eq!(
        names,
        ["r0", "r1", "r2", "r3", "r0", "r1", "r3", "r0"],
        "round the ring, r2 skipped once it died"
    );
    assert!(h.count(EventKind::TokenPassed) >= 8);
}

#[test]
fn the_token_times_out_when_its_holder_does_not_take_the_task() {
    let mut h = harness(Topology::Ring, |t| t.ring.token_timeout = ms(500));
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let t = h.submit(TaskSpec {
        ordered: true,
        ..spec("x", 5)
    });
    // a holds the token but never asks; b asks and gets nothing until the token times out.
    assert!(h.take(b).is_none());
    h.advance(ms(400));
    assert!(h.take(b).is_none());
    h.advance(ms(150));
    let passed = h
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::TokenPassed)
        .unwrap();
    assert!(passed.detail.contains("did not take"), "{}", passed.detail);
    assert_eq!(h.take(b).map(|t| t.id), Some(t));
    assert!(h.take(a).is_none());
}

#[test]
fn load_order_passes_the_token_to_the_least_loaded() {
    let mut h = harness(Topology::Ring, |t| t.ring.order = RingOrder::Load);
    let a = h.agent("a", &[], 3);
    let b = h.agent("b", &[], 3);
    let c = h.agent("c", &[], 3);
    // b is busy with two open tasks; c with one.
    let open = h.submit_all(vec![spec("o", 5), spec("o", 5), spec("o", 5)]);
    let _ = open;
    h.take(b).unwrap();
    h.take(b).unwrap();
    h.take(c).unwrap();
    let t = h.submit(TaskSpec {
        ordered: true,
        ..spec("x", 5)
    });
    let got = h.take(a).unwrap();
    assert_eq!(got.id, t);
    h.complete(a, t, 1).unwrap();
    // a is now the least loaded again, but the holder does not keep it: the least loaded of
    // the others after it... a itself is least loaded (0): load order may keep the token.
    let view = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    let holder = view.token.unwrap().holder.unwrap();
    assert_eq!(holder, a, "a holds nothing, so the least loaded is a");
}

#[test]
fn a_hierarchy_delegates_down_and_aggregates_up() {
    let mut h = harness(Topology::Hierarchical, |t| {
        t.hierarchical.parent_child_ratio = 2;
    });
    // 1 coordinator, supervisors for the rest by the ratio (7 agents: 1 + 2 + 4).
    let agents: Vec<AgentId> = (0..7).map(|i| h.agent(&format!("h{i}"), &[], 1)).collect();
    let view = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    let count = |r: AgentRole| view.nodes.iter().filter(|n| n.role == r).count();
    assert_eq!(
        (
            count(AgentRole::Leader),
            count(AgentRole::Supervisor),
            count(AgentRole::Worker)
        ),
        (1, 2, 4)
    );
    let coordinator = agents[0];
    let supervisors: Vec<AgentId> = view
        .nodes
        .iter()
        .filter(|n| n.role == AgentRole::Supervisor)
        .map(|n| n.id)
        .collect();
    let parent_of = |a: AgentId| view.nodes.iter().find(|n| n.id == a).unwrap().parent;
    assert!(
        supervisors
            .iter()
            .all(|s| parent_of(*s) == Some(coordinator))
    );

    // The coordinator takes the swarm's task and delegates it to two subtasks.
    let top = h.submit(spec("review", 5));
    assert_eq!(h.take(coordinator).unwrap().id, top);
    let ids = [TaskId(h.uuid()), TaskId(h.uuid())];
    let subs = h
        .fleet
        .delegate_task(
            coordinator,
            top,
            vec![spec("part", 5), spec("part", 5)],
            &ids,
            &Default::default(),
            h.now,
        )
        .unwrap();
    h.settle();
    assert_eq!(h.status(top), TaskStatus::Blocked);
    assert_eq!(
        h.agent_status(coordinator),
        AgentStatus::Idle,
        "its slot is free"
    );
    assert!(subs.iter().all(|s| h.task(*s).parent_task_id == Some(top)));
    // Workers may not take the coordinator's subtasks; its children (supervisors) may.
    let workers: Vec<AgentId> = agents
        .iter()
        .copied()
        .filter(|a| *a != coordinator && !supervisors.contains(a))
        .collect();
    for w in &workers {
        assert!(h.take(*w).is_none(), "a worker took a supervisor's subtask");
    }
    assert!(h.take(coordinator).is_none());
    let s0 = h.take(supervisors[0]).unwrap();
    let s1 = h.take(supervisors[1]).unwrap();
    // The first supervisor delegates again, to its own workers.
    let leaf_ids = [TaskId(h.uuid()), TaskId(h.uuid())];
    let leaves = h
        .fleet
        .delegate_task(
            supervisors[0],
            s0.id,
            vec![spec("leaf", 5), spec("leaf", 5)],
            &leaf_ids,
            &Default::default(),
            h.now,
        )
        .unwrap();
    h.settle();
    let my_workers: Vec<AgentId> = workers
        .iter()
        .copied()
        .filter(|w| parent_of(*w) == Some(supervisors[0]))
        .collect();
    assert_eq!(my_workers.len(), 2);
    for w in workers.iter().filter(|w| !my_workers.contains(w)) {
        assert!(
            h.take(*w).is_none(),
            "another supervisor's worker took a leaf"
        );
    }
    for (w, leaf) in my_workers.iter().zip(&leaves) {
        let got = h.take(*w).unwrap();
        let result = Json::from_value(&serde_json::json!({ "leaf": leaf.to_string() }));
        h.fleet
            .complete_task(
                *w,
                got.id,
                CompletionReport {
                    result,
                    attempt: Some(1),
                },
                h.now,
            )
            .unwrap();
        h.settle();
    }
    // The leaves concluded the supervisor's subtask; the other supervisor completes its own.
    assert_eq!(h.status(s0.id), TaskStatus::Completed);
    assert_eq!(h.status(top), TaskStatus::Blocked);
    h.complete(supervisors[1], s1.id, 1).unwrap();
    assert_eq!(h.status(top), TaskStatus::Completed);
    let TaskState::Completed {
        result, agent_id, ..
    } = &h.task(top).state
    else {
        unreachable!()
    };
    assert_eq!(*agent_id, coordinator);
    let v = result.to_value();
    let parts = v["subtasks"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["task_id"], serde_json::json!(subs[0]));
    let nested = parts[0]["result"]["subtasks"].as_array().unwrap();
    assert_eq!(nested.len(), 2, "the leaves' results came up two levels");
    assert!(nested[0]["result"]["leaf"].is_string());
    assert!(h.count(EventKind::TaskDelegated) >= 2);
}

#[test]
fn a_failed_subtask_fails_the_delegated_task_and_cancelling_cancels_subtasks() {
    let mut h = harness(Topology::Hierarchical, |t| {
        t.hierarchical.parent_child_ratio = 2;
    });
    let agents: Vec<AgentId> = (0..3).map(|i| h.agent(&format!("h{i}"), &[], 1)).collect();
    let top = h.submit(spec("t", 5));
    assert_eq!(h.take(agents[0]).unwrap().id, top);
    let sub_specs = vec![
        TaskSpec {
            max_attempts: Some(1),
            ..spec("a", 5)
        },
        spec("b", 5),
    ];
    let ids = [TaskId(h.uuid()), TaskId(h.uuid())];
    let subs = h
        .fleet
        .delegate_task(agents[0], top, sub_specs, &ids, &Default::default(), h.now)
        .unwrap();
    h.settle();
    let child = h.take(agents[1]).unwrap();
    assert_eq!(child.id, subs[0]);
    h.fail(agents[1], subs[0], 1, true).unwrap();
    assert_eq!(h.status(subs[0]), TaskStatus::Dead);
    assert_eq!(h.status(top), TaskStatus::Blocked, "b is not done yet");
    let b = h.take(agents[2]).or_else(|| h.take(agents[1])).unwrap();
    h.complete_any(b.id);
    let TaskState::Failed { error, .. } = &h.task(top).state else {
        panic!("expected failed, got {:?}", h.task(top).state)
    };
    assert_eq!(error.kind, ErrorKind::SubtasksFailed);
    assert!(error.message.contains("1 of 2"), "{}", error.message);

    // Cancelling a delegated task cancels what is left of its subtasks.
    let top2 = h.submit(spec("t2", 5));
    let holder = [agents[0], agents[1], agents[2]]
        .into_iter()
        .find(|a| {
            h.fleet
                .take_task(*a, h.now)
                .unwrap()
                .is_some_and(|t| t.id == top2)
        })
        .unwrap();
    h.settle();
    let ids = [TaskId(h.uuid())];
    let subs2 = h
        .fleet
        .delegate_task(
            holder,
            top2,
            vec![spec("c", 5)],
            &ids,
            &Default::default(),
            h.now,
        )
        .unwrap();
    h.settle();
    h.cancel(top2).unwrap();
    assert_eq!(h.status(subs2[0]), TaskStatus::Cancelled);
}

#[test]
fn only_the_holder_may_delegate() {
    let mut h = harness(Topology::Hierarchical, |_| {});
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let t = h.submit(spec("t", 5));
    assert_eq!(h.take(a).unwrap().id, t);
    let ids = [TaskId(h.uuid())];
    let r = h
        .fleet
        .delegate_task(b, t, vec![spec("x", 5)], &ids, &Default::default(), h.now);
    assert!(matches!(h.refused(r), CoreError::Conflict(_)));
    let r = h
        .fleet
        .delegate_task(a, t, vec![], &[], &Default::default(), h.now);
    assert!(matches!(h.refused(r), CoreError::Invalid(_)));
}

/// A subtask whose idempotency key names a finished task no longer in memory cannot be waited
/// on (its result is only in the store): the delegation is refused with a way out, where it
/// used to be accepted and then fail the parent with an "(unknown)" subtask.
#[test]
fn a_subtask_key_naming_an_evicted_task_is_refused() {
    let mut h = harness(Topology::Hierarchical, |_| {});
    let a = h.agent("a", &[], 1);
    let t = h.submit(spec("t", 5));
    assert_eq!(h.take(a).unwrap().id, t);
    let old = TaskId(h.uuid());
    let mut known = flotilla_core::fleet::KnownTasks::default();
    known
        .idempotency
        .insert("k-1".into(), (old, TaskStatus::Completed));
    let mut sub = spec("x", 5);
    sub.idempotency_key = Some("k-1".into());
    let ids = [TaskId(h.uuid())];
    let r = h.fleet.delegate_task(a, t, vec![sub], &ids, &known, h.now);
    match h.refused(r) {
        CoreError::Conflict(m) => {
            assert!(m.contains("\"k-1\"") && m.contains(&old.to_string()), "{m}")
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(h.status(t), TaskStatus::Running);
}

#[test]
fn a_delegation_survives_a_restart() {
    let mut h = harness(Topology::Hierarchical, |_| {});
    let agents: Vec<AgentId> = (0..3).map(|i| h.agent(&format!("h{i}"), &[], 1)).collect();
    let top = h.submit(spec("t", 5));
    assert_eq!(h.take(agents[0]).unwrap().id, top);
    let ids = [TaskId(h.uuid()), TaskId(h.uuid())];
    let subs = h
        .fleet
        .delegate_task(
            agents[0],
            top,
            vec![spec("a", 5), spec("b", 5)],
            &ids,
            &Default::default(),
            h.now,
        )
        .unwrap();
    h.settle();
    let first = h.take(agents[1]).unwrap();
    h.complete(agents[1], first.id, 1).unwrap();
    h.restart();
    assert_eq!(h.status(top), TaskStatus::Blocked);
    let second = subs.iter().copied().find(|s| *s != first.id).unwrap();
    let holder = agents[1..]
        .iter()
        .copied()
        .find(|a| {
            h.fleet
                .take_task(*a, h.now)
                .unwrap()
                .is_some_and(|t| t.id == second)
        })
        .expect("a child takes the second subtask after the restart");
    h.settle();
    h.complete(holder, second, 1).unwrap();
    assert_eq!(h.status(top), TaskStatus::Completed);
}

#[test]
fn a_nearest_mesh_spreads_membership_one_hop_per_gossip_round() {
    let mut h = harness(Topology::Mesh, |t| {
        t.mesh.connection_strategy = ConnectionStrategy::Nearest;
        t.mesh.neighbours = 2;
        t.mesh.routing = Routing::Targeted;
        t.mesh.gossip_interval = ms(100);
    });
    let agents: Vec<AgentId> = (0..10).map(|i| h.agent(&format!("m{i}"), &[], 1)).collect();
    // Let everyone catch up, then add one more.
    for _ in 0..10 {
        h.advance(ms(100));
        heartbeat_all_but(&mut h, &agents, &[]);
    }
    let view = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    let v0 = view.membership_version.unwrap();
    assert!(view.nodes.iter().all(|n| n.membership_version == Some(v0)));
    let newcomer = h.agent("m10", &[], 1);
    let behind = |h: &Harness| {
        let v = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
        let version = v.membership_version.unwrap();
        v.nodes
            .iter()
            .filter(|n| n.membership_version != Some(version))
            .count()
    };
    let mut rounds = 0;
    let mut seen = vec![behind(&h)];
    while behind(&h) > 0 {
        h.advance(ms(100));
        rounds += 1;
        assert!(rounds < 20, "gossip never converged");
        seen.push(behind(&h));
    }
    assert!(seen[0] > 0, "not everyone knows at once in a lattice");
    assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
    // A ring lattice of 11 with 2 neighbours: news travels at most 5 hops.
    assert!(rounds <= 6, "{rounds} rounds");
    // Targeted routing keeps messages to neighbours.
    assert!(h.fleet.may_send(newcomer, agents[0]).is_ok());
    assert!(h.fleet.may_send(newcomer, agents[5]).is_err());
}

/// A lattice mesh made full while a gossip round is armed: the coordinator tells everyone at
/// once, so that round is the last (it used to arm itself again every interval, for ever).
#[test]
fn a_mesh_made_full_gossips_no_more() {
    let lattice = |t: &mut TopologyConfig| {
        t.mesh.connection_strategy = ConnectionStrategy::Nearest;
        t.mesh.neighbours = 2;
        t.mesh.gossip_interval = ms(10);
    };
    let mut h = harness(Topology::Mesh, lattice);
    for i in 0..10 {
        h.agent(&format!("m{i}"), &[], 1);
    }
    assert_eq!(
        h.fleet.next_deadline(),
        Some(h.now + ms(10)),
        "a gossip round is armed"
    );
    let mut full = TopologyConfig::default();
    lattice(&mut full);
    full.mesh.connection_strategy = ConnectionStrategy::Full;
    let swarm = h.swarm.clone();
    h.fleet
        .set_topology(&swarm, Topology::Mesh, Some(full), h.now)
        .unwrap();
    h.settle();
    h.advance(ms(10));
    let next = h.fleet.next_deadline().expect("leases at least");
    assert!(
        next > h.now + ms(1000),
        "nothing due soon once the mesh is full: next at {next:?}, now {:?}",
        h.now
    );
}

#[test]
fn changing_the_topology_live_reassigns_roles_and_keeps_tasks_in_flight() {
    let mut h = harness(Topology::Star, |_| {});
    let agents: Vec<AgentId> = (0..5).map(|i| h.agent(&format!("a{i}"), &[], 1)).collect();
    let running = h.submit(spec("long", 5));
    let holder = agents
        .iter()
        .copied()
        .find(|a| {
            h.fleet
                .take_task(*a, h.now)
                .unwrap()
                .is_some_and(|t| t.id == running)
        })
        .unwrap();
    h.settle();
    let swarm = h.swarm.clone();
    let view = h
        .fleet
        .set_topology(&swarm, Topology::Hierarchical, None, h.now)
        .unwrap();
    h.settle();
    assert_eq!(view.topology, Topology::Hierarchical);
    assert!(view.nodes.iter().any(|n| n.role == AgentRole::Supervisor));
    let changed = h
        .events
        .iter()
        .find(|e| e.kind == EventKind::TopologyChanged)
        .unwrap();
    assert_eq!(changed.detail, "star -> hierarchical");
    // The task in flight is untouched and completes.
    assert_eq!(h.status(running), TaskStatus::Running);
    h.complete(holder, running, 1).unwrap();
    // To a ring: a token appears; back to star: it goes.
    let view = h
        .fleet
        .set_topology(&swarm, Topology::Ring, None, h.now)
        .unwrap();
    h.settle();
    assert!(view.token.unwrap().holder.is_some());
    let view = h
        .fleet
        .set_topology(&swarm, Topology::Star, None, h.now)
        .unwrap();
    h.settle();
    assert!(view.token.is_none());
    assert_eq!(
        view.nodes
            .iter()
            .filter(|n| n.role == AgentRole::Leader)
            .count(),
        1
    );
    // A bad setting is refused and changes nothing.
    let mut bad = TopologyConfig::default();
    bad.ring.token_timeout = ms(1);
    let r = h
        .fleet
        .set_topology(&swarm, Topology::Ring, Some(bad), h.now);
    assert!(matches!(h.refused(r), CoreError::Invalid(_)));
    // The DOT rendering names every agent.
    let dot = h.fleet.topology_view(h.swarm_id, h.now).unwrap().to_dot();
    assert!(dot.starts_with("graph \"work\""));
    for i in 0..5 {
        assert!(dot.contains(&format!("a{i}\\n")), "{dot}");
    }
}

#[test]
fn a_big_star_stays_cheap_and_correct_through_churn() {
    // Workers failing and returning are patched into the graph, not rebuilt: the graph must
    // stay equal to a fresh build.
    let mut h = harness(Topology::Star, |t| t.star.coordinator_count = 3);
    let agents: Vec<AgentId> = (0..200)
        .map(|i| h.agent(&format!("s{i}"), &[], 1))
        .collect();
    let lease = SwarmConfig::default().lease_duration();
    let silent: Vec<AgentId> = agents.iter().copied().skip(10).step_by(7).collect();
    for _ in 0..3 {
        h.advance(lease / 3);
        heartbeat_all_but(&mut h, &agents, &silent);
    }
    h.advance(ms(1));
    let before = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    for s in &silent {
        assert_eq!(h.agent_status(*s), AgentStatus::Unhealthy);
    }
    // Patched state equals a fresh build (a restart rebuilds from scratch).
    h.restart();
    let rebuilt = h.fleet.topology_view(h.swarm_id, h.now).unwrap();
    let key = |v: &flotilla_core::topology::TopologyView| {
        let mut n: Vec<(AgentId, AgentRole, Option<AgentId>)> =
            v.nodes.iter().map(|n| (n.id, n.role, n.parent)).collect();
        n.sort();
        (n, v.edges.clone(), v.leader)
    };
    assert_eq!(key(&before), key(&rebuilt));
}

trait CompleteAny {
    fn complete_any(&mut self, task: TaskId);
}

impl CompleteAny for Harness {
    /// Completes a running task on whichever agent holds it.
    fn complete_any(&mut self, task: TaskId) {
        let TaskState::Running { agent_id, .. } = self.task(task).state else {
            panic!("task {task} is not running");
        };
        let attempt = self.task(task).attempts;
        self.complete(agent_id, task, attempt).unwrap();
    }
}

#[test]
fn a_failed_coordinator_is_replaced_by_election_too() {
    let mut h = harness(Topology::Star, |t| t.star.coordinator_count = 2);
    let agents: Vec<AgentId> = (0..5).map(|i| h.agent(&format!("c{i}"), &[], 1)).collect();
    assert_eq!(role(&h, agents[0]), AgentRole::Leader);
    assert_eq!(role(&h, agents[1]), AgentRole::Coordinator);
    let first = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::LeaderElection)
        .map(|e| e.detail.clone())
        .collect::<Vec<_>>();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        first.iter().any(|d| d.contains("c1 elected coordinator")),
        "{first:?}"
    );
    // The standing coordinator c1 dies: c2 is elected in its place, by an election event.
    let lease = SwarmConfig::default().lease_duration();
    for _ in 0..3 {
        h.advance(lease / 3);
        heartbeat_all_but(&mut h, &agents, &agents[1..2]);
    }
    h.advance(ms(1));
    assert_eq!(role(&h, agents[2]), AgentRole::Coordinator);
    assert_eq!(role(&h, agents[1]), AgentRole::Worker);
    let last = h
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::LeaderElection)
        .unwrap();
    assert_eq!(last.agent_id, Some(agents[2]));
    assert!(
        last.detail
            .contains("c2 elected coordinator (c1 is unhealthy)"),
        "{}",
        last.detail
    );
    // Then the leader dies: the standby coordinator takes over.
    for _ in 0..3 {
        h.advance(lease / 3);
        heartbeat_all_but(&mut h, &agents, &[agents[0], agents[1]]);
    }
    h.advance(ms(1));
    assert_eq!(leader(&h), Some(agents[2]), "the standby coordinator leads");
}
