//! Every entity written and read back is equal to what was written: through `load`, through
//! the reader, and after reopening the file.

#[macro_use]
mod common;

use common::*;
use flotilla_core::api::AuditEntry;
use flotilla_core::{
    AgentMode, AgentRole, AgentStatus, Changes, Desired, EventKind, Managed, ReportedHealth,
    ResourceUsage, RuntimeKind, SwarmStatus, Topology,
};
use flotilla_store::{AuditFilter, EventFilter, Store, TokenRole};

fn every_task_state_round_trips_with_every_field_set_or_unset(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let mut tasks = Vec::new();
    for (i, state) in all_states().into_iter().enumerate() {
        let i = i as u128;
        tasks.push(full_task(100 + i, s.id, state.clone()));
        tasks.push(bare_task(200 + i, s.id, state));
    }
    commit(
        &mut store,
        Changes {
            swarms: vec![s],
            tasks: tasks.clone(),
            ..Changes::default()
        },
    );

    let reader = store.reader().unwrap();
    for t in &tasks {
        assert_eq!(
            reader.get_task(t.id).unwrap().as_ref(),
            Some(t),
            "get_task {:?}",
            t.state
        );
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(by_id(reader.get_tasks(&ids).unwrap()), by_id(tasks.clone()));

    let snapshot = store.load(usize::MAX).unwrap();
    assert_eq!(by_id(snapshot.tasks), by_id(tasks.clone()));

    drop(store);
    let mut store = reopen(&dir);
    assert_eq!(by_id(store.load(usize::MAX).unwrap().tasks), by_id(tasks));
}

fn swarms_round_trip_with_every_topology_and_status(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let topologies = [
        Topology::Star,
        Topology::Mesh,
        Topology::Hierarchical,
        Topology::Ring,
    ];
    let statuses = [
        SwarmStatus::Inactive,
        SwarmStatus::Starting,
        SwarmStatus::Active,
        SwarmStatus::Degraded,
        SwarmStatus::Stopping,
    ];
    let mut swarms = Vec::new();
    for (i, status) in statuses.into_iter().enumerate() {
        let mut s = swarm(i as u128, &format!("swarm-{i}"));
        s.status = status;
        s.topology = topologies[i % topologies.len()];
        if i % 2 == 0 {
            s.leader_agent_id = None;
            s.config = Default::default();
            s.description = String::new();
        }
        swarms.push(s);
    }
    commit(
        &mut store,
        Changes {
            swarms: swarms.clone(),
            ..Changes::default()
        },
    );
    assert_eq!(store.load(0).unwrap().swarms, swarms);
}

fn agents_round_trip_in_every_status_role_and_health(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let roles = [
        AgentRole::Leader,
        AgentRole::Coordinator,
        AgentRole::Supervisor,
        AgentRole::Worker,
    ];
    let healths = [
        ReportedHealth::Healthy,
        ReportedHealth::Degraded,
        ReportedHealth::Unhealthy,
    ];
    let mut agents = Vec::new();
    for (i, status) in AgentStatus::ALL.into_iter().enumerate() {
        let n = i as u128;
        let mut full = agent(10 + n, s.id, status);
        full.role = roles[i % roles.len()];
        full.reported_health = healths[i % healths.len()];
        agents.push(full);
        agents.push(bare_agent(20 + n, s.id, status));
    }
    commit(
        &mut store,
        Changes {
            swarms: vec![s],
            agents: agents.clone(),
            ..Changes::default()
        },
    );

    let reader = store.reader().unwrap();
    for a in &agents {
        assert_eq!(reader.get_agent(a.id).unwrap().as_ref(), Some(a));
    }
    let mut loaded = store.load(0).unwrap().agents;
    loaded.sort_by_key(|a| a.id);
    let mut expected = agents;
    expected.sort_by_key(|a| a.id);
    assert_eq!(loaded, expected, "stopped agents are loaded too");
}

fn managed_agents_round_trip_with_every_runtime_mode_and_desired_state(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let mut agents = Vec::new();
    let mut n = 0;
    for runtime in [RuntimeKind::Process, RuntimeKind::Tmux] {
        for mode in [AgentMode::Exec, AgentMode::Daemon] {
            for desired in [Desired::Running, Desired::Stopped] {
                n += 1;
                // Every field set.
                let mut full = agent(n, s.id, AgentStatus::Idle);
                full.managed = Some(Managed {
                    runtime,
                    mode,
                    desired,
                    ..managed(n as u32)
                });
                agents.push(full);
                // Every optional field unset.
                let mut bare = bare_agent(100 + n, s.id, AgentStatus::Pending);
                bare.managed = Some(Managed {
                    runtime,
                    mode,
                    desired,
                    ..Managed::default()
                });
                agents.push(bare);
            }
        }
    }
    // Resource usage with only the new field set, and with none.
    let mut files_only = bare_agent(200, s.id, AgentStatus::Busy);
    files_only.resource_usage = ResourceUsage {
        open_files: Some(0),
        ..ResourceUsage::default()
    };
    agents.push(files_only);
    commit(
        &mut store,
        Changes {
            swarms: vec![s],
            agents: agents.clone(),
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    for a in &agents {
        assert_eq!(reader.get_agent(a.id).unwrap().as_ref(), Some(a));
    }
    let mut expected = agents;
    expected.sort_by_key(|a| a.id);
    let mut loaded = store.load(0).unwrap().agents;
    loaded.sort_by_key(|a| a.id);
    assert_eq!(loaded, expected);
    drop(reader);
    drop(store);
    let mut loaded = reopen(&dir).load(0).unwrap().agents;
    loaded.sort_by_key(|a| a.id);
    assert_eq!(loaded, expected);
}

fn a_removed_agent_round_trips_through_the_reader_and_can_lose_its_managed_part(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let mut a = agent(1, s.id, AgentStatus::Stopped);
    a.removed_at = Some(ts(-1));
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone()],
            agents: vec![a.clone()],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_agent(a.id).unwrap(), Some(a.clone()));
    assert!(store.load(0).unwrap().agents.is_empty());

    // A later row replaces both new columns, down to NULL.
    a.removed_at = None;
    a.managed = None;
    commit(
        &mut store,
        Changes {
            agents: vec![a.clone()],
            ..Changes::default()
        },
    );
    assert_eq!(reader.get_agent(a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.load(0).unwrap().agents, vec![a]);
}

fn events_round_trip_with_and_without_their_optional_fields(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let kinds = [
        EventKind::SwarmCreated,
        EventKind::SwarmUpdated,
        EventKind::SwarmStatusChanged,
        EventKind::SwarmDeleted,
        EventKind::AgentJoined,
        EventKind::AgentLeft,
        EventKind::AgentFailed,
        EventKind::AgentRecovered,
        EventKind::TaskSubmitted,
        EventKind::TaskUnblocked,
        EventKind::TaskAssigned,
        EventKind::TaskStarted,
        EventKind::TaskCompleted,
        EventKind::TaskRetrying,
        EventKind::TaskFailed,
        EventKind::TaskDead,
        EventKind::TaskCancelled,
        EventKind::TaskRequeued,
        EventKind::TaskRetried,
    ];
    let events: Vec<_> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let mut e = event(i as u64 + 1, s.id, kind);
            if i % 2 == 0 {
                e.agent_id = Some(agent_id(i as u128));
                e.task_id = Some(task_id(i as u128));
                e.detail = format!("because {i}");
            }
            e
        })
        .collect();
    commit(
        &mut store,
        Changes {
            events: events.clone(),
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    assert_eq!(
        reader.list_events(&EventFilter::default(), 1000).unwrap(),
        events
    );
    assert_eq!(store.load(0).unwrap().next_event_seq, 20);
}

fn tokens_round_trip_and_revoked_ones_are_not_loaded(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let admin = token("admin1", TokenRole::Admin, None);
    let agent_token = token("agent1", TokenRole::Agent, Some(agent_id(1)));
    let mut revoked = token("agent2", TokenRole::Agent, Some(agent_id(2)));
    let revoked_hash = revoked.hash.clone();
    store
        .commit(&flotilla_store::Batch {
            changes: Changes::default(),
            tokens: vec![admin.clone(), agent_token.clone(), revoked.clone()],
            ..Default::default()
        })
        .unwrap();
    revoked.revoked_at = Some(ts(1_800_000_000_000));
    store
        .commit(&flotilla_store::Batch {
            changes: Changes::default(),
            tokens: vec![revoked],
            ..Default::default()
        })
        .unwrap();
    let loaded = store.load(0).unwrap().tokens;
    assert_eq!(loaded, vec![admin.clone(), agent_token.clone()]);
    let reader = store.reader().unwrap();
    assert_eq!(
        reader.list_tokens().unwrap().len(),
        3,
        "listing keeps revoked ones"
    );
    let found = reader
        .find_token(&revoked_hash)
        .unwrap()
        .expect("revoked found by hash");
    assert!(found.revoked_at.is_some());
    assert_eq!(reader.find_token("nope").unwrap(), None);
    drop(store);
    assert_eq!(
        reopen(&dir).load(0).unwrap().tokens,
        vec![admin, agent_token]
    );
}

fn scoped_expiring_tokens_of_every_role_round_trip(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let mut tokens = Vec::new();
    for (i, role) in TokenRole::ALL.into_iter().enumerate() {
        let mut t = token(&format!("t{i}"), role, None);
        t.swarm_id = Some(swarm_id(7));
        t.expires_at = Some(ts(1_900_000_000_000 + i as i64));
        tokens.push(t);
    }
    store
        .commit(&flotilla_store::Batch {
            tokens: tokens.clone(),
            ..Default::default()
        })
        .unwrap();
    drop(store);
    assert_eq!(reopen(&dir).load(0).unwrap().tokens, tokens);
}

fn audit_entries_round_trip_filter_page_and_prune(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let entry = |n: i64, token: Option<&str>, status: u16| AuditEntry {
        seq: 0,
        at: ts(1_000 * n),
        token_id: token.map(str::to_owned),
        role: token.map(|_| "operator".to_owned()),
        agent_id: (n == 2).then(|| agent_id(2)),
        method: "POST".into(),
        path: format!("/api/v1/swarms/s{n}/tasks"),
        action: "POST /swarms/{swarm}/tasks".into(),
        status,
        outcome: if status < 400 {
            "ok".into()
        } else {
            "forbidden".into()
        },
        remote: (n != 3).then(|| "127.0.0.1:5000".to_owned()),
        request_id: Some(format!("req-{n}")),
    };
    let written: Vec<AuditEntry> = (1..=5)
        .map(|n| {
            entry(
                n,
                (n != 4).then_some("tok-a"),
                if n == 3 { 403 } else { 201 },
            )
        })
        .collect();
    store
        .commit(&flotilla_store::Batch {
            audit: written.clone(),
            ..Default::default()
        })
        .unwrap();
    let reader = store.reader().unwrap();
    let all = reader.list_audit(&AuditFilter::default(), 100).unwrap();
    let mut expected: Vec<AuditEntry> = written
        .iter()
        .zip(1..)
        .map(|(e, seq)| AuditEntry { seq, ..e.clone() })
        .collect();
    expected.reverse();
    assert_eq!(all, expected, "newest first, every field kept");

    let page = reader.list_audit(&AuditFilter::default(), 2).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 4]);
    let next = AuditFilter {
        before_seq: Some(4),
        ..AuditFilter::default()
    };
    let page = reader.list_audit(&next, 2).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2]);

    let denied = AuditFilter {
        denied: true,
        ..AuditFilter::default()
    };
    let d = reader.list_audit(&denied, 100).unwrap();
    assert_eq!(d.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let by_token = AuditFilter {
        token_id: Some("tok-a".into()),
        since: Some(ts(2_000)),
        until: Some(ts(5_000)),
        ..AuditFilter::default()
    };
    let t = reader.list_audit(&by_token, 100).unwrap();
    assert_eq!(t.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2]);

    store
        .commit(&flotilla_store::Batch {
            audit_prune_before: Some(ts(3_000)),
            ..Default::default()
        })
        .unwrap();
    drop(store);
    let left = reopen(&dir)
        .reader()
        .unwrap()
        .list_audit(&AuditFilter::default(), 100)
        .unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 4, 3]);
}

fn the_last_row_for_an_id_wins_within_a_batch_and_across_batches(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let states = all_states();
    // One batch carrying a task through every state; the last row is what must be stored.
    let within: Vec<_> = states
        .iter()
        .map(|st| full_task(1, s.id, st.clone()))
        .collect();
    let mut a = agent(1, s.id, AgentStatus::Idle);
    let mut agents = vec![a.clone()];
    a.status = AgentStatus::Busy;
    a.tasks_completed = 1;
    agents.push(a.clone());
    let mut renamed = s.clone();
    renamed.name = "alpha-2".to_owned();
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone(), renamed.clone()],
            agents,
            tasks: within.clone(),
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    assert_eq!(reader.get_task(task_id(1)).unwrap().as_ref(), within.last());
    assert_eq!(reader.get_agent(a.id).unwrap(), Some(a));
    assert_eq!(store.load(0).unwrap().swarms, vec![renamed]);

    // Across batches, in the reverse order of states, with every field that may change
    // changed (what the submitter gave never changes after submission).
    let first = within[0].clone();
    for st in states.iter().rev() {
        let mut t = bare_task(1, s.id, st.clone());
        t.created_at = first.created_at;
        t.idempotency_key = first.idempotency_key.clone();
        t.parent_task_id = first.parent_task_id;
        t.task_type = first.task_type.clone();
        t.payload = first.payload.clone();
        t.priority = first.priority;
        t.required_capabilities = first.required_capabilities.clone();
        t.depends_on = first.depends_on.clone();
        t.affinity_key = first.affinity_key.clone();
        t.backoff = first.backoff;
        t.timeout = first.timeout;
        t.ordered = first.ordered;
        t.delegated_by = first.delegated_by;
        commit(
            &mut store,
            Changes {
                tasks: vec![t.clone()],
                ..Changes::default()
            },
        );
        assert_eq!(reader.get_task(task_id(1)).unwrap(), Some(t));
    }
}

fn swapping_two_swarm_names_in_one_batch_is_written_step_by_step(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let a = swarm(1, "a");
    let b = swarm(2, "b");
    commit(
        &mut store,
        Changes {
            swarms: vec![a.clone(), b.clone()],
            ..Changes::default()
        },
    );
    let rename = |s: &flotilla_core::Swarm, name: &str| {
        let mut s = s.clone();
        s.name = name.to_owned();
        s
    };
    commit(
        &mut store,
        Changes {
            swarms: vec![rename(&a, "tmp"), rename(&b, "a"), rename(&a, "b")],
            ..Changes::default()
        },
    );
    assert_eq!(
        store.load(0).unwrap().swarms,
        vec![rename(&a, "b"), rename(&b, "a")]
    );
}

on_both_backends!(
    every_task_state_round_trips_with_every_field_set_or_unset,
    swarms_round_trip_with_every_topology_and_status,
    agents_round_trip_in_every_status_role_and_health,
    managed_agents_round_trip_with_every_runtime_mode_and_desired_state,
    a_removed_agent_round_trips_through_the_reader_and_can_lose_its_managed_part,
    events_round_trip_with_and_without_their_optional_fields,
    tokens_round_trip_and_revoked_ones_are_not_loaded,
    scoped_expiring_tokens_of_every_role_round_trip,
    audit_entries_round_trip_filter_page_and_prune,
    the_last_row_for_an_id_wins_within_a_batch_and_across_batches,
    swapping_two_swarm_names_in_one_batch_is_written_step_by_step,
);
