//! Pools: written, read back, replaced, deleted, and handed to the core with the rest of the
//! snapshot.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use flotilla_core::{
    AgentMode, AgentStatus, Changes, EventKind, Pool, ResourceLimits, RuntimeKind,
};
use flotilla_store::{Batch, Store, TokenRole};

/// Pools covering every runtime and mode, with and without a template, with every limit set,
/// none, and each one alone.
fn assorted_pools(swarm: flotilla_core::SwarmId) -> Vec<Pool> {
    let mut pools = vec![pool(swarm, "connected", None)];
    let mut bare = pool(swarm, "bare-template", Some(bare_template()));
    bare.capabilities = Vec::new();
    bare.min_agents = 0;
    bare.max_agents = 1;
    bare.max_concurrent_tasks = 1;
    bare.created_at = ts(0);
    bare.updated_at = ts(0);
    pools.push(bare);
    for runtime in [RuntimeKind::Process, RuntimeKind::Tmux] {
        for mode in [AgentMode::Exec, AgentMode::Daemon] {
            let name = format!("{runtime:?}-{mode:?}").to_lowercase();
            pools.push(pool(swarm, &name, Some(full_template(runtime, mode))));
        }
    }
    let full = full_limits();
    let singles = [
        ResourceLimits {
            memory_bytes: full.memory_bytes,
            ..ResourceLimits::default()
        },
        ResourceLimits {
            cpu_cores: Some(1.0 / 3.0),
            ..ResourceLimits::default()
        },
        ResourceLimits {
            cpu_time: Some(Duration::ZERO),
            ..ResourceLimits::default()
        },
        ResourceLimits {
            task_timeout: Some(Duration::from_millis(u64::from(u32::MAX) * 1000)),
            ..ResourceLimits::default()
        },
    ];
    for (i, limits) in singles.into_iter().enumerate() {
        let mut template = full_template(RuntimeKind::Process, AgentMode::Exec);
        template.limits = limits;
        pools.push(pool(swarm, &format!("limit-{i}"), Some(template)));
    }
    pools
}

fn sorted(mut pools: Vec<Pool>) -> Vec<Pool> {
    pools.sort_by(|a, b| (a.swarm_id, &a.name).cmp(&(b.swarm_id, &b.name)));
    pools
}

fn pools_round_trip_with_every_runtime_mode_and_limit(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let pools = assorted_pools(s.id);
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone()],
            pools: pools.clone(),
            ..Changes::default()
        },
    );
    let expected = sorted(pools);
    assert_eq!(store.load(0).unwrap().pools, expected);
    let reader = store.reader().unwrap();
    assert_eq!(reader.list_pools(s.id).unwrap(), expected);
    drop(reader);
    drop(store);
    assert_eq!(reopen(&dir).load(0).unwrap().pools, expected);
}

fn pools_of_different_swarms_may_share_a_name_and_load_sorted_by_swarm_and_name(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let a = swarm(1, "a");
    let b = swarm(2, "b");
    let pools = vec![
        pool(b.id, "tester", None),
        pool(b.id, "coder", Some(bare_template())),
        pool(a.id, "coder", None),
    ];
    commit(
        &mut store,
        Changes {
            swarms: vec![a.clone(), b.clone()],
            pools: pools.clone(),
            ..Changes::default()
        },
    );
    assert_eq!(
        store.load(0).unwrap().pools,
        vec![pools[2].clone(), pools[1].clone(), pools[0].clone()]
    );
    let reader = store.reader().unwrap();
    assert_eq!(reader.list_pools(a.id).unwrap(), vec![pools[2].clone()]);
    assert_eq!(
        reader.list_pools(b.id).unwrap(),
        vec![pools[1].clone(), pools[0].clone()]
    );
    assert_eq!(reader.list_pools(swarm_id(99)).unwrap(), vec![]);
}

fn the_last_pool_row_wins_within_a_batch_and_across_batches(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let first = pool(s.id, "coder", None);
    let mut second = pool(
        s.id,
        "coder",
        Some(full_template(RuntimeKind::Tmux, AgentMode::Daemon)),
    );
    second.max_agents = 3;
    second.updated_at = ts(2);
    let mut third = second.clone();
    third.min_agents = 3;
    third.capabilities = Vec::new();
    third.updated_at = ts(3);
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone()],
            pools: vec![first, second.clone(), third.clone()],
            ..Changes::default()
        },
    );
    assert_eq!(store.load(0).unwrap().pools, vec![third]);

    // Across batches, every field replaced, the template down to NULL.
    let mut fourth = pool(s.id, "coder", None);
    fourth.min_agents = 0;
    fourth.max_agents = 9;
    fourth.max_concurrent_tasks = 2;
    fourth.created_at = ts(1);
    fourth.updated_at = ts(4);
    commit(
        &mut store,
        Changes {
            pools: vec![fourth.clone()],
            ..Changes::default()
        },
    );
    assert_eq!(store.load(0).unwrap().pools, vec![fourth]);
}

fn deleted_pools_are_gone_and_one_created_again_in_the_same_batch_stays(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let other = swarm(2, "beta");
    let coder = pool(s.id, "coder", Some(bare_template()));
    let tester = pool(s.id, "tester", None);
    let reviewer = pool(s.id, "reviewer", None);
    let other_coder = pool(other.id, "coder", None);
    commit(
        &mut store,
        Changes {
            swarms: vec![s.clone(), other.clone()],
            pools: vec![
                coder.clone(),
                tester.clone(),
                reviewer.clone(),
                other_coder.clone(),
            ],
            ..Changes::default()
        },
    );

    // `tester` is deleted; `coder` is deleted and created anew (the core lists only the new
    // row); a pool that never existed is deleted too.
    let mut new_coder = pool(s.id, "coder", None);
    new_coder.created_at = ts(10);
    new_coder.updated_at = ts(10);
    commit(
        &mut store,
        Changes {
            pools: vec![new_coder.clone()],
            deleted_pools: vec![
                (s.id, "tester".to_owned()),
                (s.id, "coder".to_owned()),
                (s.id, "never-was".to_owned()),
            ],
            ..Changes::default()
        },
    );
    let expected = vec![new_coder.clone(), reviewer.clone(), other_coder.clone()];
    assert_eq!(store.load(0).unwrap().pools, expected);
    let reader = store.reader().unwrap();
    assert_eq!(
        reader.list_pools(s.id).unwrap(),
        vec![new_coder, reviewer.clone()]
    );
    // Deleting one swarm's pool leaves the same name in another swarm alone.
    assert_eq!(
        reader.list_pools(other.id).unwrap(),
        vec![other_coder.clone()]
    );

    commit(
        &mut store,
        Changes {
            deleted_pools: vec![(s.id, "coder".to_owned())],
            ..Changes::default()
        },
    );
    drop(reader);
    drop(store);
    assert_eq!(
        reopen(&dir).load(0).unwrap().pools,
        vec![reviewer, other_coder]
    );
}

fn deleting_a_swarm_removes_its_pools(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let doomed = swarm(1, "doomed");
    let kept = swarm(2, "kept");
    commit(
        &mut store,
        Changes {
            swarms: vec![doomed.clone(), kept.clone()],
            pools: [
                assorted_pools(doomed.id),
                vec![pool(kept.id, "coder", None)],
            ]
            .concat(),
            ..Changes::default()
        },
    );
    // Pool rows and deletions of the doomed swarm in the same batch change nothing.
    commit(
        &mut store,
        Changes {
            deleted_swarms: vec![doomed.id],
            pools: vec![pool(doomed.id, "late", None)],
            deleted_pools: vec![(doomed.id, "connected".to_owned())],
            ..Changes::default()
        },
    );
    assert_eq!(
        store.load(0).unwrap().pools,
        vec![pool(kept.id, "coder", None)]
    );
    assert_eq!(
        store.reader().unwrap().list_pools(doomed.id).unwrap(),
        vec![]
    );
}

fn into_parts_hands_every_part_of_the_snapshot_over(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let s = swarm(1, "alpha");
    let p = pool(s.id, "coder", Some(bare_template()));
    let mut managed_agent = agent(1, s.id, AgentStatus::Stopped);
    managed_agent.agent_type = p.name.clone();
    let task = queued(1, s.id, 10);
    let admin = token("admin", TokenRole::Admin, None);
    store
        .commit(&Batch {
            changes: Changes {
                swarms: vec![s.clone()],
                pools: vec![p.clone()],
                agents: vec![managed_agent.clone()],
                tasks: vec![task.clone()],
                events: vec![event(41, s.id, EventKind::SwarmCreated)],
                ..Changes::default()
            },
            tokens: vec![admin.clone()],
            ..Default::default()
        })
        .unwrap();
    let snapshot = store.load(10).unwrap();
    assert_eq!(snapshot.pools, vec![p.clone()]);
    let (state, tokens) = snapshot.into_parts();
    assert_eq!(state.swarms, vec![s]);
    assert_eq!(state.pools, vec![p]);
    assert_eq!(state.agents, vec![managed_agent]);
    assert_eq!(state.tasks, vec![task]);
    assert_eq!(state.next_event_seq, 42);
    assert_eq!(tokens, vec![admin]);
}

on_both_backends!(
    pools_round_trip_with_every_runtime_mode_and_limit,
    pools_of_different_swarms_may_share_a_name_and_load_sorted_by_swarm_and_name,
    the_last_pool_row_wins_within_a_batch_and_across_batches,
    deleted_pools_are_gone_and_one_created_again_in_the_same_batch_stays,
    deleting_a_swarm_removes_its_pools,
    into_parts_hands_every_part_of_the_snapshot_over,
);
