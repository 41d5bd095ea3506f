//! Swarms moving between fleets, as between coordinators sharing one store: `Fleet::adopt`
//! loads a swarm's stored rows into a running fleet, `Fleet::release_swarm` forgets one
//! without recording anything, and `Fleet::raise_event_seq` keeps each swarm's event seqs
//! increasing whoever owns it. `Fleet::restore` is adoption into an empty fleet.

mod common;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Duration;

use common::cluster::Cluster;
use common::{Harness, done, failed, ms, secs, spec, strings};
use flotilla_core::pool::{AgentMode, AgentTemplate, ResourceLimits, RuntimeKind};
use flotilla_core::*;

fn lease_config() -> SwarmConfig {
    SwarmConfig {
        heartbeat_interval: secs(5),
        heartbeat_miss_limit: 3,
        ..SwarmConfig::default()
    }
}

/// Creates a swarm in the harness's fleet.
fn create(h: &mut Harness, name: &str, config: SwarmConfig) -> SwarmId {
    let id = SwarmId(h.uuid());
    let spec = SwarmSpec {
        name: name.to_owned(),
        config,
        ..SwarmSpec::default()
    };
    h.fleet.create_swarm(id, spec, h.now).expect("create swarm");
    h.settle();
    id
}

/// Points the harness's commands (agents, submissions) at another swarm.
fn use_swarm(h: &mut Harness, name: &str) {
    h.swarm = name.to_owned();
    h.swarm_id = h.fleet.resolve_swarm(name).expect("swarm");
}

fn message(text: &str) -> MessageSpec {
    MessageSpec {
        body: Json::from_value(&serde_json::json!({ "text": text })),
        ..MessageSpec::default()
    }
}

fn send(h: &mut Harness, from: Option<AgentId>, to: AgentId, spec: MessageSpec) -> MessageId {
    let id = MessageId(h.uuid());
    h.fleet
        .send_message(id, from, to, spec, h.now)
        .expect("send");
    h.settle();
    id
}

fn coder_pool() -> PoolSpec {
    PoolSpec {
        name: "coder".to_owned(),
        min_agents: 1,
        max_agents: 3,
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
            limits: ResourceLimits::default(),
            stop_grace: secs(1),
        }),
        checkpoints: Default::default(),
        priority: DEFAULT_POOL_PRIORITY,
        resources: Default::default(),
        scaling: Vec::new(),
    }
}

/// A fleet in the middle of everything a restore must bring back: in `work`, tasks queued at
/// several priorities, running (one with progress), placed behind a failed attempt's backoff,
/// blocked on a running one, ordered, with a deadline and an idempotency key, an agent that
/// will not heartbeat again, messages pending, delivered and a request awaiting its response;
/// in `tree` (hierarchical), a delegation half done; in `pool`, a managed agent running a task.
/// Returns the harness and every agent, in a fixed order.
fn busy() -> (Harness, Vec<AgentId>) {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let runner = h.agent("runner", &["x"], 2);
    let worker = h.agent("worker", &[], 1);
    let silent = h.agent("silent", &[], 1);
    let ids = h.submit_all(vec![
        TaskSpec {
            reference: Some("run".to_owned()),
            required_capabilities: strings(&["x"]),
            timeout: Some(secs(100)),
            ..spec("run", 10)
        },
        TaskSpec {
            backoff: Some(Backoff {
                initial: Duration::ZERO,
                max: Duration::ZERO,
            }),
            ..spec("lost", 10)
        },
        TaskSpec {
            backoff: Some(Backoff {
                initial: secs(10),
                max: secs(10),
            }),
            ..spec("retried", 9)
        },
        TaskSpec {
            depends_on: vec![DependencySpec::Ref {
                reference: "run".to_owned(),
                kind: DependencyKind::Success,
            }],
            ..spec("blocked", 5)
        },
        spec("q1", 3),
        TaskSpec {
            idempotency_key: Some("key".to_owned()),
            ..spec("keyed", 3)
        },
        TaskSpec {
            ordered: true,
            ..spec("ordered-1", 4)
        },
        TaskSpec {
            ordered: true,
            ..spec("ordered-2", 4)
        },
        TaskSpec {
            deadline: Some(h.now + secs(30)),
            ..spec("deadline", 2)
        },
    ]);
    assert_eq!(h.take(runner).unwrap().id, ids[0]);
    assert_eq!(h.take(silent).unwrap().id, ids[1]);
    assert_eq!(h.take(worker).unwrap().id, ids[2]);
    h.fail(worker, ids[2], 1, true).unwrap();
    h.advance(ms(5));
    h.submit(spec("q2", 7));
    h.fleet
        .report_progress(
            runner,
            ids[0],
            Progress {
                percent: Some(40.0),
                ..Default::default()
            },
            h.now,
        )
        .unwrap();
    h.settle();
    send(&mut h, None, worker, message("pending"));
    let delivered = send(&mut h, None, runner, message("delivered"));
    let got = h.fleet.take_messages(runner, 10, h.now).unwrap();
    assert_eq!(got[0].id, delivered);
    h.settle();
    send(
        &mut h,
        Some(runner),
        worker,
        MessageSpec {
            kind: Some(MessageKind::Request),
            timeout: Some(secs(20)),
            ..message("request")
        },
    );

    create(&mut h, "tree", SwarmConfig::default());
    h.fleet
        .set_topology("tree", Topology::Hierarchical, None, h.now)
        .unwrap();
    h.settle();
    use_swarm(&mut h, "tree");
    let tree: Vec<AgentId> = (0..3).map(|i| h.agent(&format!("h{i}"), &[], 1)).collect();
    let top = h.submit(spec("top", 5));
    assert_eq!(h.take(tree[0]).unwrap().id, top);
    let sub_ids = [TaskId(h.uuid()), TaskId(h.uuid())];
    h.fleet
        .delegate_task(
            tree[0],
            top,
            vec![spec("a", 5), spec("b", 5)],
            &sub_ids,
            &Default::default(),
            h.now,
        )
        .unwrap();
    h.settle();
    let first = h.take(tree[1]).unwrap();
    h.complete(tree[1], first.id, 1).unwrap();

    create(&mut h, "pool", SwarmConfig::default());
    use_swarm(&mut h, "pool");
    h.fleet.put_pool("pool", coder_pool(), h.now).unwrap();
    let managed = AgentId(h.uuid());
    h.fleet
        .spawn_agent("pool", "coder", managed, h.now)
        .unwrap();
    h.settle();
    h.fleet
        .managed_started(managed, Some(4242), None, h.now)
        .unwrap();
    h.settle();
    h.heartbeat(managed).unwrap();
    let job = h.submit(spec("job", 5));
    assert_eq!(h.take(managed).unwrap().id, job);
    h.advance(secs(1));
    use_swarm(&mut h, "work");

    let mut agents = vec![runner, worker, silent];
    agents.extend(tree);
    agents.push(managed);
    (h, agents)
}

/// What a command recorded, in an order that does not depend on hash maps: events without
/// their seqs (sorted), rows by id, effects sorted.
fn recorded(f: &mut Fleet) -> Vec<String> {
    let c = f.take_changes();
    let mut out = Vec::new();
    let mut events: Vec<String> = c
        .events
        .iter()
        .map(|e| {
            format!(
                "{:?} {} {:?} {:?} {}",
                e.kind, e.swarm_id, e.agent_id, e.task_id, e.detail
            )
        })
        .collect();
    events.sort();
    out.extend(events);
    let mut rows: Vec<String> = c.swarms.iter().map(|s| format!("{s:?}")).collect();
    rows.extend(c.agents.iter().map(|a| format!("{a:?}")));
    rows.extend(c.tasks.iter().map(|t| format!("{t:?}")));
    rows.extend(c.pools.iter().map(|p| format!("{p:?}")));
    rows.extend(c.messages.iter().map(|m| format!("{m:?}")));
    rows.extend(c.deleted_messages.iter().map(|m| format!("deleted {m}")));
    rows.extend(c.message_replies.iter().map(|r| format!("{r:?}")));
    rows.sort();
    out.extend(rows);
    let mut effects: Vec<String> = f.take_effects().iter().map(|e| format!("{e:?}")).collect();
    effects.sort();
    out.extend(effects);
    out
}

/// Everything the fleet answers about its swarms, agents and tasks.
fn snapshot(f: &Fleet, tasks: &[TaskId], now: Timestamp) -> Vec<String> {
    let mut out = vec![
        format!("{:?}", f.swarm_ids()),
        format!("next seq {}", f.next_event_seq()),
        format!("next deadline {:?}", f.next_deadline()),
        format!("totals {:?}", f.totals()),
    ];
    for s in f.swarm_ids() {
        out.push(format!("{:?}", f.swarm_view(s, now)));
        out.push(format!("{:?}", f.swarm_health(s, now)));
        for a in f.agents_of(s, None, None) {
            out.push(format!("{a:?}"));
        }
    }
    for t in tasks {
        out.push(format!("{:?}", f.task(*t)));
    }
    out
}

/// Runs the same script on a fleet: every agent but the silent ones heartbeats, completes what
/// it holds, takes a task and acknowledges its messages, every half second for 40 s. Returns
/// what every call answered and what every round recorded.
fn drive(f: &mut Fleet, agents: &[AgentId], silent: &[AgentId], from: Timestamp) -> Vec<String> {
    let mut log = recorded(f);
    let mut now = from;
    for _ in 0..80 {
        now = now + ms(500);
        f.tick(now);
        for a in agents.iter().filter(|a| !silent.contains(a)) {
            let hb = f.heartbeat(*a, Heartbeat::default(), now).map(|x| x.status);
            log.push(format!("{a} heartbeat {hb:?}"));
            let held = f
                .agent(*a)
                .map(|x| x.current_tasks.clone())
                .unwrap_or_default();
            for t in held {
                let attempt = f.task(t).map_or(0, |t| t.attempts);
                let r = f.complete_task(*a, t, done(attempt), now).map(|t| t.id);
                log.push(format!("{a} complete {t} {r:?}"));
            }
            let took = f.take_task(*a, now).map(|t| t.map(|t| t.id));
            log.push(format!("{a} took {took:?}"));
            if let Ok(msgs) = f.take_messages(*a, 10, now) {
                let ids: Vec<MessageId> = msgs.iter().map(|m| m.id).collect();
                log.push(format!("{a} messages {ids:?}"));
                let _ = f.ack_messages(*a, &ids, now);
            }
        }
        f.check_invariants().expect("invariants while driving");
        log.extend(recorded(f));
    }
    log
}

#[test]
fn adopting_into_an_empty_fleet_equals_restoring() {
    let (h, agents) = busy();
    let stored = h.store.stored();
    let tasks: Vec<TaskId> = {
        let mut t: Vec<TaskId> = h.store.tasks.keys().copied().collect();
        t.sort();
        t
    };
    let mut restored = Fleet::restore(h.limits.clone(), stored.clone(), h.now);
    let mut adopted = Fleet::new(h.limits.clone());
    let ids = adopted.adopt(stored.clone(), h.now);
    let mut want: Vec<SwarmId> = stored.swarms.iter().map(|s| s.id).collect();
    assert_eq!(ids, want, "every swarm adopted, in the order given");
    want.sort();
    assert_eq!(adopted.swarm_ids(), want);
    restored.check_invariants().unwrap();
    adopted.check_invariants().unwrap();
    assert_eq!(
        snapshot(&restored, &tasks, h.now),
        snapshot(&adopted, &tasks, h.now)
    );
    // The managed agent is started again, its task back in the queue: the same corrections.
    let managed = *agents.last().unwrap();
    assert_eq!(
        restored.agent(managed).unwrap().status,
        AgentStatus::Pending
    );
    // Then the same commands get the same answers and record the same things.
    let silent = [agents[2]];
    let a = drive(&mut restored, &agents, &silent, h.now);
    let b = drive(&mut adopted, &agents, &silent, h.now);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "line {i} of the two runs differs");
    }
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().any(|l| l.contains("TaskCompleted")),
        "the script ran tasks"
    );
    // Every task ended, in both.
    for t in &tasks {
        let (x, y) = (restored.task(*t), adopted.task(*t));
        assert_eq!(x, y);
        assert!(x.is_none_or(|t| t.status().is_terminal()), "{x:?}");
    }
}

#[test]
fn adopting_into_an_empty_fleet_equals_restoring_at_every_moment_of_a_busy_run() {
    // The same comparison after each step of a run: whatever the moment, both paths agree.
    let (mut h, agents) = busy();
    let silent = [agents[2]];
    for step in 0..30 {
        h.advance(ms(700));
        for a in agents.iter().filter(|a| !silent.contains(a)) {
            let _ = h.heartbeat(*a);
            if step % 3 == 0 {
                let held = h.fleet.agent(*a).unwrap().current_tasks.clone();
                for t in held {
                    let attempt = h.task(t).attempts;
                    if step % 2 == 0 {
                        let _ = h.complete(*a, t, attempt);
                    } else {
                        let _ = h.fail(*a, t, attempt, true);
                    }
                }
            }
            if h.fleet.agent(*a).is_some() {
                let _ = h.fleet.take_task(*a, h.now);
                h.settle();
            }
        }
        if step % 5 == 0 {
            h.submit(spec("more", (step % 10 + 1) as u8));
        }
        let stored = h.store.stored();
        let tasks: Vec<TaskId> = stored.tasks.iter().map(|t| t.id).collect();
        let mut restored = Fleet::restore(h.limits.clone(), stored.clone(), h.now);
        let mut adopted = Fleet::new(h.limits.clone());
        adopted.adopt(stored, h.now);
        assert_eq!(
            snapshot(&restored, &tasks, h.now),
            snapshot(&adopted, &tasks, h.now),
            "step {step}"
        );
        assert_eq!(
            recorded(&mut restored),
            recorded(&mut adopted),
            "step {step}"
        );
    }
}

#[test]
fn adopt_leaves_the_swarms_it_holds_alone() {
    let (mut h, _) = busy();
    let before = {
        let tasks: Vec<TaskId> = h.store.tasks.keys().copied().collect();
        (tasks.clone(), snapshot(&h.fleet, &tasks, h.now))
    };
    // Everything it is given is already held: nothing is duplicated or overwritten, nothing
    // recorded.
    let mut stored = h.store.stored();
    stored.next_event_seq = 0;
    assert!(h.fleet.adopt(stored, h.now).is_empty());
    assert!(h.fleet.take_changes().is_empty());
    assert!(h.fleet.take_effects().is_empty());
    assert_eq!(snapshot(&h.fleet, &before.0, h.now), before.1);
    // A higher stored seq raises the next one; a lower one does not lower it.
    let mut stored = h.store.stored();
    stored.next_event_seq = 1 << 40;
    h.fleet.adopt(stored, h.now);
    assert_eq!(h.fleet.next_event_seq(), 1 << 40);
    h.fleet.raise_event_seq(5);
    assert_eq!(h.fleet.next_event_seq(), 1 << 40);
    h.store.next_event_seq = 1 << 40;
    h.settle();
    // A swarm whose name another held swarm has is not adopted either.
    let mut twin = h
        .store
        .stored_for(&[h.fleet.resolve_swarm("tree").unwrap()]);
    let other = SwarmId(h.uuid());
    for s in &mut twin.swarms {
        s.id = other;
    }
    assert!(h.fleet.adopt(twin, h.now).is_empty());
    assert!(h.fleet.swarm_by_id(other).is_none());
}

#[test]
fn adopting_a_swarm_keeps_the_queue_places_of_the_others_increasing() {
    // Fleet 1's places are far ahead of fleet 0's; a swarm adopted from fleet 0 keeps its own
    // places, and new tasks anywhere go after every place either gave.
    let mut c = Cluster::new(2, FleetLimits::default());
    let a = c.create_swarm(
        0,
        SwarmSpec {
            name: "a".to_owned(),
            ..SwarmSpec::default()
        },
    );
    let b = c.create_swarm(
        1,
        SwarmSpec {
            name: "b".to_owned(),
            ..SwarmSpec::default()
        },
    );
    let submit = |c: &mut Cluster, i: usize, swarm: &str, n: usize| -> Vec<TaskId> {
        let ids: Vec<TaskId> = (0..n).map(|_| TaskId(c.uuid())).collect();
        let specs = (0..n).map(|_| spec("t", 5)).collect();
        let now = c.now;
        c.fleets[i]
            .submit_tasks(swarm, specs, &ids, &Default::default(), now)
            .unwrap();
        c.settle(i);
        ids
    };
    let in_a = submit(&mut c, 0, "a", 3);
    submit(&mut c, 1, "b", 50);
    let place = |c: &Cluster, t: TaskId| {
        c.fleets[c.owner_of_task(t).unwrap()]
            .task(t)
            .unwrap()
            .queue_seq
    };
    let places: Vec<u64> = in_a.iter().map(|t| place(&c, *t)).collect();
    c.move_swarm(a, 1);
    assert_eq!(
        in_a.iter().map(|t| place(&c, *t)).collect::<Vec<_>>(),
        places
    );
    let newer = submit(&mut c, 1, "a", 1)[0];
    assert!(place(&c, newer) > 50);
    // Back to fleet 0, whose own counter was at 3: it goes on after the 51 places seen.
    c.move_swarm(a, 0);
    let newest = submit(&mut c, 0, "a", 1)[0];
    assert!(place(&c, newest) > place(&c, newer));
    assert_eq!(c.owner(b), 1);
}

#[test]
fn two_fleets_split_swarms_and_lose_or_repeat_no_task() {
    let mut c = Cluster::new(2, FleetLimits::default());
    let alpha = c.create_swarm(
        0,
        SwarmSpec {
            name: "alpha".to_owned(),
            config: lease_config(),
            ..SwarmSpec::default()
        },
    );
    let beta = c.create_swarm(
        0,
        SwarmSpec {
            name: "beta".to_owned(),
            config: lease_config(),
            ..SwarmSpec::default()
        },
    );
    let register = |c: &mut Cluster, swarm: &str, name: &str, slots: u32| {
        let id = AgentId(c.uuid());
        let spec = AgentSpec {
            name: Some(name.to_owned()),
            max_concurrent_tasks: slots,
            ..AgentSpec::default()
        };
        let now = c.now;
        c.fleets[0].register_agent(swarm, id, spec, now).unwrap();
        c.settle(0);
        id
    };
    let a1 = register(&mut c, "alpha", "a1", 1);
    let a2 = register(&mut c, "alpha", "a2", 1);
    let b1 = register(&mut c, "beta", "b1", 2);
    let b2 = register(&mut c, "beta", "b2", 1);
    let submit = |c: &mut Cluster, i: usize, swarm: &str, specs: Vec<TaskSpec>| {
        let ids: Vec<TaskId> = specs.iter().map(|_| TaskId(c.uuid())).collect();
        let known = c.store.known_for(&c.fleets[i], swarm, &specs);
        let now = c.now;
        let subs = c.fleets[i]
            .submit_tasks(swarm, specs, &ids, &known, now)
            .unwrap();
        c.settle(i);
        subs
    };
    let tasks = |subs: Vec<flotilla_core::fleet::Submission>| -> Vec<TaskId> {
        subs.into_iter().map(|s| s.task).collect()
    };
    let retry_later = Backoff {
        initial: secs(10),
        max: secs(10),
    };
    let alpha_tasks = tasks(submit(
        &mut c,
        0,
        "alpha",
        (1..=6).map(|i| spec("a", i)).collect(),
    ));
    let beta_tasks = tasks(submit(
        &mut c,
        0,
        "beta",
        vec![
            TaskSpec {
                reference: Some("r1".to_owned()),
                ..spec("r1", 10)
            },
            spec("r2", 10),
            TaskSpec {
                backoff: Some(retry_later),
                ..spec("r3", 10)
            },
            spec("t1", 9),
            spec("t2", 5),
            spec("t3", 5),
            TaskSpec {
                idempotency_key: Some("b-key".to_owned()),
                ..spec("t4", 1)
            },
            TaskSpec {
                depends_on: vec![DependencySpec::Ref {
                    reference: "r1".to_owned(),
                    kind: DependencyKind::Success,
                }],
                ..spec("t5", 5)
            },
        ],
    ));
    let [r1, r2, r3, t1, t2, t3, t4, t5] = beta_tasks[..] else {
        unreachable!()
    };
    let take = |c: &mut Cluster, agent: AgentId| -> Option<Task> {
        let i = c.owner_of_agent(agent).unwrap();
        let now = c.now;
        let t = c.fleets[i].take_task(agent, now).unwrap();
        c.settle(i);
        t
    };
    let complete = |c: &mut Cluster, agent: AgentId, task: TaskId, attempt: u32| {
        let i = c.owner_of_agent(agent).unwrap();
        let now = c.now;
        c.fleets[i]
            .complete_task(agent, task, done(attempt), now)
            .unwrap();
        c.settle(i);
    };
    let heartbeat_all = |c: &mut Cluster| {
        for a in [a1, a2, b1, b2] {
            let i = c.owner_of_agent(a).unwrap();
            let now = c.now;
            c.fleets[i].heartbeat(a, Heartbeat::default(), now).unwrap();
            c.settle(i);
        }
    };
    assert_eq!(take(&mut c, b1).unwrap().id, r1);
    assert_eq!(take(&mut c, b1).unwrap().id, r2);
    assert_eq!(take(&mut c, b2).unwrap().id, r3);
    let now = c.now;
    c.fleets[0].fail_task(b2, r3, failed(1, true), now).unwrap();
    c.settle(0);
    assert!(take(&mut c, a1).is_some());
    c.advance(secs(1));
    heartbeat_all(&mut c);

    // What beta looks like before the move.
    let before: HashMap<TaskId, Task> = beta_tasks
        .iter()
        .map(|t| (*t, c.fleets[0].task(*t).unwrap().clone()))
        .collect();
    let agents_before: Vec<Agent> = c.fleets[0].agents_of(beta, None, None);
    let health_before = c.fleets[0].swarm_health(beta, c.now).unwrap();
    let mut ready: Vec<&Task> = before
        .values()
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Queued {
                    run_after: None,
                    ..
                }
            )
        })
        .collect();
    ready.sort_by_key(|t| (Reverse(t.priority), t.queue_seq));
    let ready: Vec<TaskId> = ready.iter().map(|t| t.id).collect();
    assert_eq!(ready, vec![t1, t2, t3, t4]);
    let seq_before = c
        .events
        .iter()
        .filter(|e| e.swarm_id == beta)
        .map(|e| e.seq)
        .max()
        .unwrap();

    c.move_swarm(beta, 1);

    // Fleet 0 forgot beta; fleet 1 holds it exactly as it was.
    assert_eq!(c.fleets[0].swarm_ids(), vec![alpha]);
    assert_eq!(c.fleets[1].swarm_ids(), vec![beta]);
    assert!(c.fleets[0].resolve_swarm("beta").is_err());
    for t in &beta_tasks {
        assert!(c.fleets[0].task(*t).is_none());
        assert_eq!(c.fleets[1].task(*t), Some(&before[t]), "task {t} as it was");
    }
    for was in &agents_before {
        assert!(c.fleets[0].agent(was.id).is_none());
        let now = c.fleets[1].agent(was.id).unwrap();
        let mut is = now.clone();
        assert!(
            is.lease_until >= was.lease_until,
            "a move never shortens a lease"
        );
        is.lease_until = was.lease_until;
        is.current_tasks.sort();
        let mut was = was.clone();
        was.current_tasks.sort();
        assert_eq!(is, was);
    }
    assert_eq!(
        c.fleets[1].swarm_health(beta, c.now).unwrap(),
        health_before
    );
    let first_after = c
        .events
        .iter()
        .filter(|e| e.swarm_id == beta && e.seq > seq_before)
        .map(|e| e.seq)
        .min();
    if let Some(s) = first_after {
        assert!(
            s >= c.epoch << 32,
            "beta's events now come from the new epoch"
        );
    }
    // Its idempotency keys came along.
    let again = submit(
        &mut c,
        1,
        "beta",
        vec![TaskSpec {
            idempotency_key: Some("b-key".to_owned()),
            ..spec("t4", 1)
        }],
    );
    assert_eq!(again[0].task, t4);
    assert!(!again[0].created);

    // The running tasks finish on fleet 1 under their attempts; t5 is released behind t3.
    complete(&mut c, b1, r1, 1);
    complete(&mut c, b1, r2, 1);
    let mut order = Vec::new();
    while let Some(t) = take(&mut c, b2) {
        order.push(t.id);
        complete(&mut c, b2, t.id, t.attempts);
    }
    assert_eq!(order, vec![t1, t2, t3, t5, t4]);
    // The retried one after its backoff, on its second attempt.
    for _ in 0..10 {
        c.advance(secs(1));
        heartbeat_all(&mut c);
    }
    let t = take(&mut c, b2).expect("r3 after its backoff");
    assert_eq!((t.id, t.attempts), (r3, 2));
    complete(&mut c, b2, r3, 2);

    // Alpha keeps running on fleet 0, unaffected.
    loop {
        let mut progress = false;
        for a in [a1, a2] {
            let held = c.fleets[0].agent(a).unwrap().current_tasks.clone();
            for t in held {
                let attempt = c.fleets[0].task(t).unwrap().attempts;
                complete(&mut c, a, t, attempt);
                progress = true;
            }
            if take(&mut c, a).is_some() {
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    // Every task completed once, on the fleet that owned its swarm at the time.
    let mut completions: HashMap<TaskId, usize> = HashMap::new();
    for e in c
        .events
        .iter()
        .filter(|e| e.kind == EventKind::TaskCompleted)
    {
        *completions.entry(e.task_id.unwrap()).or_default() += 1;
    }
    for t in alpha_tasks.iter().chain(&beta_tasks) {
        assert_eq!(completions.get(t), Some(&1), "task {t} completed once");
        assert_eq!(c.store.tasks[t].status(), TaskStatus::Completed);
    }
    assert!(
        c.events
            .iter()
            .all(|e| e.swarm_id != alpha || e.seq < 2 << 32),
        "alpha's events all from fleet 0"
    );
}

#[test]
fn a_released_swarm_is_forgotten_silently_and_comes_back_the_same() {
    let mut h = Harness::with(FleetLimits::default(), lease_config());
    let w = h.agent("w", &[], 1);
    let work_task = h.submit(spec("w", 5));
    let other = create(&mut h, "other", lease_config());
    use_swarm(&mut h, "other");
    let o1 = h.agent("o1", &[], 1);
    let o2 = h.agent("o2", &[], 1);
    let ids = h.submit_all(vec![
        TaskSpec {
            timeout: Some(secs(20)),
            ..spec("running", 9)
        },
        TaskSpec {
            backoff: Some(Backoff {
                initial: secs(30),
                max: secs(30),
            }),
            ..spec("retried", 8)
        },
        TaskSpec {
            deadline: Some(h.now + secs(40)),
            ..spec("deadline", 1)
        },
        TaskSpec {
            idempotency_key: Some("k".to_owned()),
            ..spec("queued", 5)
        },
    ]);
    assert_eq!(h.take(o1).unwrap().id, ids[0]);
    assert_eq!(h.take(o2).unwrap().id, ids[1]);
    h.fail(o2, ids[1], 1, true).unwrap();
    let pending = send(
        &mut h,
        None,
        o2,
        MessageSpec {
            ttl: Some(secs(50)),
            ..message("pending")
        },
    );
    h.advance(secs(3));
    h.heartbeat(o1).unwrap();
    h.heartbeat(o2).unwrap();

    // Its agents' rows are written before the release.
    assert!(h.fleet.prepare_release(other));
    h.settle();
    assert!(h.last.agents.iter().any(|a| a.id == o1) && h.last.agents.iter().any(|a| a.id == o2));
    let tasks_before: Vec<Task> = ids.iter().map(|t| h.task(*t).clone()).collect();
    let agents_before = h.fleet.agents_of(other, None, None);
    let swarm_before = h.fleet.swarm_by_id(other).unwrap().clone();
    let health_before = h.fleet.swarm_health(other, h.now).unwrap();

    assert!(h.fleet.release_swarm(other));
    assert!(
        h.fleet.take_changes().is_empty(),
        "a release records nothing"
    );
    assert!(h.fleet.take_effects().is_empty(), "a release does nothing");
    h.fleet.check_invariants().unwrap();
    assert_eq!(h.fleet.swarm_ids().len(), 2, "default and work");
    assert!(h.fleet.swarm_by_id(other).is_none());
    assert!(h.fleet.resolve_swarm("other").is_err());
    assert!(ids.iter().all(|t| h.fleet.task(*t).is_none()));
    assert!(h.fleet.agent(o1).is_none() && h.fleet.agent(o2).is_none());
    assert!(h.fleet.take_messages(o2, 10, h.now).is_err());
    assert!(!h.fleet.release_swarm(other), "not held any more");
    let unknown = SwarmId(h.uuid());
    assert!(!h.fleet.release_swarm(unknown), "never held");
    assert!(!h.fleet.prepare_release(other));

    // Adopted straight back: the same swarm.
    let back = h.fleet.adopt(h.store.stored_for(&[other]), h.now);
    assert_eq!(back, vec![other]);
    h.settle();
    assert!(
        h.last.tasks.is_empty(),
        "nothing to correct: {:?}",
        h.last.tasks
    );
    for t in &tasks_before {
        assert_eq!(h.task(t.id), t);
    }
    let agents_after = h.fleet.agents_of(other, None, None);
    assert_eq!(agents_after.len(), agents_before.len());
    for (is, was) in agents_after.iter().zip(&agents_before) {
        assert_eq!(is, was, "agent {} as it was", was.name);
    }
    assert_eq!(h.fleet.swarm_by_id(other), Some(&swarm_before));
    assert_eq!(h.fleet.swarm_health(other, h.now), Some(health_before));
    let got = h.fleet.take_messages(o2, 10, h.now).unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), vec![pending]);
    h.settle();

    // Released again, its timers (lease, timeout, retry, deadline, message expiry and
    // acknowledgement) come and go without a trace, while `work` goes on.
    assert!(h.fleet.prepare_release(other));
    h.settle();
    assert!(h.fleet.release_swarm(other));
    let theirs: Vec<AgentId> = vec![o1, o2];
    let released_at = h.events.len();
    let mut ran = false;
    for _ in 0..120 {
        h.advance(secs(1));
        h.heartbeat(w).unwrap();
        if let Some(t) = h.take(w) {
            h.complete(w, t.id, t.attempts).unwrap();
            ran = true;
        }
        let last = &h.last;
        assert!(last.tasks.iter().all(|t| t.swarm_id != other));
        assert!(last.agents.iter().all(|a| a.swarm_id != other));
        assert!(last.messages.is_empty());
    }
    assert!(ran && h.status(work_task) == TaskStatus::Completed);
    for e in &h.events[released_at..] {
        assert!(
            e.swarm_id != other
                && e.agent_id.is_none_or(|a| !theirs.contains(&a))
                && e.task_id.is_none_or(|t| !ids.contains(&t)),
            "an event about the released swarm: {e:?}"
        );
    }

    // And adopted once more, two minutes later, it picks up where the rows left it: its
    // silent agents lose their fresh leases, the running task's timeout has passed.
    h.fleet.adopt(h.store.stored_for(&[other]), h.now);
    h.settle();
    assert_eq!(h.status(ids[0]), TaskStatus::Running);
    h.advance(ms(1));
    assert_ne!(
        h.status(ids[0]),
        TaskStatus::Running,
        "its timeout fires now"
    );
    assert_eq!(h.task(ids[3]).status(), TaskStatus::Queued);
}
