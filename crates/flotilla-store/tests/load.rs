//! What `load` gives the coordinator at start, and how deletions and the event log affect it.

#[macro_use]
mod common;

use common::*;
use flotilla_core::{
    AgentStatus, Changes, Dependency, DependencyKind, Desired, EventKind, Json, TaskState,
    TaskStatus,
};
use flotilla_store::{Batch, EventFilter, Store, TokenRole};

fn completed_at(ms: i64) -> TaskState {
    TaskState::Completed {
        agent_id: agent_id(1),
        result: Json::null(),
        completed_at: ts(ms),
    }
}

fn an_empty_database_loads_empty_with_event_seq_one(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let snapshot = store.load(100).unwrap();
    assert!(snapshot.swarms.is_empty() && snapshot.agents.is_empty());
    assert!(snapshot.pools.is_empty());
    assert!(snapshot.tasks.is_empty() && snapshot.tokens.is_empty());
    assert_eq!(snapshot.next_event_seq, 1);
}

fn load_returns_unfinished_tasks_and_the_most_recently_finished_ones(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let mut tasks = Vec::new();
    // Unfinished tasks, one per unfinished status, created in reverse order of their ids.
    for (i, state) in all_states().into_iter().enumerate() {
        if !state.status().is_terminal() {
            let mut t = bare_task(100 + i as u128, s.id, state);
            t.created_at = ts(1_000 - i as i64);
            tasks.push(t);
        }
    }
    // Ten finished tasks; their completion order is not their creation order.
    let finish = [50, 10, 90, 30, 70, 20, 100, 60, 40, 80];
    for (i, ms) in finish.into_iter().enumerate() {
        let state = if i % 2 == 0 {
            completed_at(ms)
        } else {
            TaskState::Cancelled {
                reason: None,
                completed_at: ts(ms),
            }
        };
        tasks.push(bare_task(i as u128, s.id, state));
    }
    commit(
        &mut store,
        Changes {
            swarms: vec![s],
            tasks: tasks.clone(),
            ..Changes::default()
        },
    );

    let loaded = store.load(3).unwrap().tasks;
    let unfinished: Vec<_> = loaded
        .iter()
        .take_while(|t| !t.status().is_terminal())
        .collect();
    let created: Vec<_> = unfinished.iter().map(|t| t.created_at).collect();
    assert!(
        created.is_sorted(),
        "unfinished tasks come in creation order: {created:?}"
    );
    assert_eq!(unfinished.len(), 5);
    let finished: Vec<_> = loaded[unfinished.len()..]
        .iter()
        .map(|t| t.state.completed_at().unwrap().as_millis())
        .collect();
    assert_eq!(
        finished,
        [80, 90, 100],
        "the three most recent, oldest first"
    );

    assert_eq!(store.load(0).unwrap().tasks.len(), 5);
    assert_eq!(store.load(1000).unwrap().tasks.len(), 15);
}

fn removed_agents_are_not_loaded_but_stopped_ones_are_and_the_reader_finds_both(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let idle = agent(1, s.id, AgentStatus::Idle);
    let mut leaving = bare_agent(2, s.id, AgentStatus::Busy);
    let mut stopped_managed = agent(3, s.id, AgentStatus::Busy);
    let mut removed_managed = agent(4, s.id, AgentStatus::Idle);
    let mut stopped_connected = bare_agent(5, s.id, AgentStatus::Idle);
    // Registered last (agents load in registration order).
    stopped_connected.registered_at = ts(1_700_000_000_005);
    commit(
        &mut store,
        Changes {
            swarms: vec![s],
            agents: vec![
                idle.clone(),
                leaving.clone(),
                stopped_managed.clone(),
                removed_managed.clone(),
                stopped_connected.clone(),
            ],
            ..Changes::default()
        },
    );
    // A connected agent unregisters: stopped and removed.
    leaving.status = AgentStatus::Stopped;
    leaving.stopped_at = Some(ts(1_700_000_050_000));
    leaving.removed_at = Some(ts(1_700_000_050_000));
    // A managed agent is stopped on request: it stays in its pool.
    stopped_managed.status = AgentStatus::Stopped;
    stopped_managed.stopped_at = Some(ts(1_700_000_051_000));
    stopped_managed.managed.as_mut().unwrap().desired = Desired::Stopped;
    stopped_managed.managed.as_mut().unwrap().pid = None;
    // A managed agent is removed from its pool.
    removed_managed.status = AgentStatus::Stopped;
    removed_managed.stopped_at = Some(ts(1_700_000_052_000));
    removed_managed.removed_at = Some(ts(1_700_000_052_001));
    // A connected agent whose lease ran out long ago, stopped but not unregistered.
    stopped_connected.status = AgentStatus::Stopped;
    stopped_connected.stopped_at = Some(ts(1_700_000_053_000));
    commit(
        &mut store,
        Changes {
            agents: vec![
                leaving.clone(),
                stopped_managed.clone(),
                removed_managed.clone(),
                stopped_connected.clone(),
            ],
            ..Changes::default()
        },
    );
    let expected = vec![idle, stopped_managed, stopped_connected];
    assert_eq!(store.load(0).unwrap().agents, expected);
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_agent(leaving.id).unwrap(), Some(leaving));
    assert_eq!(
        reader.get_agent(removed_managed.id).unwrap(),
        Some(removed_managed)
    );
    drop(reader);
    drop(store);
    assert_eq!(reopen(&dir).load(0).unwrap().agents, expected);
}

fn a_deleted_swarm_loses_its_pools_agents_tasks_and_tokens_but_keeps_its_events(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let doomed = swarm(1, "doomed");
    let kept = swarm(2, "kept");
    let doomed_agent = agent(1, doomed.id, AgentStatus::Idle);
    let kept_agent = agent(2, kept.id, AgentStatus::Idle);
    let mut doomed_task = queued(1, doomed.id, 10);
    let mut kept_task = queued(2, kept.id, 20);
    doomed_task.depends_on = vec![Dependency {
        task_id: task_id(2),
        kind: DependencyKind::Success,
    }];
    kept_task.idempotency_key = Some("k".to_owned());
    let mut e1 = event(1, doomed.id, EventKind::SwarmCreated);
    e1.task_id = Some(doomed_task.id);
    let e2 = event(2, kept.id, EventKind::SwarmCreated);
    let doomed_pools = vec![
        pool(doomed.id, "coder", Some(bare_template())),
        pool(doomed.id, "tester", None),
    ];
    let kept_pool = pool(kept.id, "coder", None);
    store
        .commit(&Batch {
            changes: Changes {
                swarms: vec![doomed.clone(), kept.clone()],
                pools: [doomed_pools.clone(), vec![kept_pool.clone()]].concat(),
                agents: vec![doomed_agent.clone(), kept_agent.clone()],
                tasks: vec![doomed_task.clone(), kept_task.clone()],
                events: vec![e1.clone(), e2.clone()],
                ..Changes::default()
            },
            tokens: vec![
                token("a1", TokenRole::Agent, Some(doomed_agent.id)),
                token("a2", TokenRole::Agent, Some(kept_agent.id)),
            ],
            ..Default::default()
        })
        .unwrap();

    // In the same batch as the deletion: a late row of the doomed swarm's task (it must not
    // come back), a late row of one of its pools and a new pool of it (neither must come back),
    // a new agent of that swarm with its token, and a new swarm taking its name.
    let mut late_task = doomed_task.clone();
    late_task.state = TaskState::Cancelled {
        reason: Some("swarm deleted".to_owned()),
        completed_at: ts(30),
    };
    let late_agent = agent(3, doomed.id, AgentStatus::Idle);
    let mut successor = swarm(3, "doomed");
    successor.created_at = ts(1_800_000_000_000);
    let e3 = event(3, doomed.id, EventKind::SwarmDeleted);
    store
        .commit(&Batch {
            changes: Changes {
                swarms: vec![successor.clone()],
                deleted_swarms: vec![doomed.id],
                pools: vec![
                    pool(doomed.id, "coder", None),
                    pool(doomed.id, "reviewer", None),
                ],
                deleted_pools: Vec::new(),
                agents: vec![late_agent.clone()],
                tasks: vec![late_task],
                events: vec![e3.clone()],
                ..Changes::default()
            },
            tokens: vec![token("a3", TokenRole::Agent, Some(late_agent.id))],
            ..Default::default()
        })
        .unwrap();

    let snapshot = store.load(1000).unwrap();
    assert_eq!(snapshot.swarms, vec![kept.clone(), successor.clone()]);
    assert_eq!(snapshot.pools, vec![kept_pool.clone()]);
    assert_eq!(snapshot.agents, vec![kept_agent.clone()]);
    assert_eq!(snapshot.tasks, vec![kept_task.clone()]);
    let token_ids: Vec<_> = snapshot.tokens.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(token_ids, ["a2"]);
    assert_eq!(snapshot.next_event_seq, 4);

    let reader = store.reader().unwrap();
    assert_eq!(reader.get_task(doomed_task.id).unwrap(), None);
    assert_eq!(reader.get_agent(doomed_agent.id).unwrap(), None);
    assert_eq!(reader.get_agent(late_agent.id).unwrap(), None);
    assert_eq!(reader.list_pools(doomed.id).unwrap(), vec![]);
    assert_eq!(reader.list_pools(successor.id).unwrap(), vec![]);
    assert_eq!(reader.list_pools(kept.id).unwrap(), vec![kept_pool]);
    assert_eq!(
        reader.list_events(&EventFilter::default(), 10).unwrap(),
        vec![e1, e2, e3]
    );
    assert_eq!(
        reader.find_task_by_idempotency_key(kept.id, "k").unwrap(),
        Some(kept_task)
    );
}

fn next_event_seq_follows_the_largest_seq_stored(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let events: Vec<_> = (1..=5)
        .map(|seq| event(seq, s.id, EventKind::TaskSubmitted))
        .collect();
    commit(
        &mut store,
        Changes {
            events,
            ..Changes::default()
        },
    );
    assert_eq!(store.load(0).unwrap().next_event_seq, 6);
    commit(
        &mut store,
        Changes {
            events: vec![event(6, s.id, EventKind::TaskCompleted)],
            ..Changes::default()
        },
    );
    drop(store);
    assert_eq!(reopen(&dir).load(0).unwrap().next_event_seq, 7);
}

fn a_task_retried_after_finishing_is_unfinished_again(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let done = bare_task(1, s.id, completed_at(5));
    commit(
        &mut store,
        Changes {
            tasks: vec![done.clone()],
            ..Changes::default()
        },
    );
    let mut again = done;
    again.state = TaskState::Queued {
        queued_at: ts(6),
        run_after: None,
    };
    commit(
        &mut store,
        Changes {
            tasks: vec![again.clone()],
            ..Changes::default()
        },
    );
    let loaded = store.load(10).unwrap().tasks;
    assert_eq!(loaded, vec![again]);
    assert_eq!(loaded[0].status(), TaskStatus::Queued);
}

on_both_backends!(
    load_swarm_reads_one_swarm_and_nothing_of_the_others,
    an_empty_database_loads_empty_with_event_seq_one,
    load_returns_unfinished_tasks_and_the_most_recently_finished_ones,
    removed_agents_are_not_loaded_but_stopped_ones_are_and_the_reader_finds_both,
    a_deleted_swarm_loses_its_pools_agents_tasks_and_tokens_but_keeps_its_events,
    next_event_seq_follows_the_largest_seq_stored,
    a_task_retried_after_finishing_is_unfinished_again,
);

fn load_swarm_reads_one_swarm_and_nothing_of_the_others(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let (one, two) = (swarm_id(1), swarm_id(2));
    commit(
        &mut store,
        Changes {
            swarms: vec![swarm(1, "alpha"), swarm(2, "beta")],
            agents: vec![
                agent(1, one, AgentStatus::Idle),
                agent(2, two, AgentStatus::Idle),
            ],
            tasks: vec![queued(1, one, 10), queued(2, two, 11), queued(3, one, 12)],
            events: vec![
                event(1, one, EventKind::TaskSubmitted),
                event(2, two, EventKind::TaskSubmitted),
            ],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    let alpha = reader.load_swarm(one, 10).unwrap();
    assert_eq!(alpha.swarms.len(), 1);
    assert_eq!(alpha.swarms[0].id, one);
    assert_eq!(
        alpha.agents.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![agent_id(1)]
    );
    assert_eq!(
        alpha.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![task_id(1), task_id(3)]
    );
    assert!(alpha.tokens.is_empty());
    assert_eq!(alpha.next_event_seq, 3, "the whole log's next seq");
    let whole = store.load(10).unwrap();
    assert_eq!(whole.tasks.len(), 3);
}
