//! Placement strategies, local queues and work stealing: each strategy's distinct behaviour on
//! one workload, and the mechanisms one by one.
//!
//! The workload: eight agents of two pools (`coder`, priority 8; `tester`, priority 3) that
//! differ in speed, reliability, capabilities and reported CPU use, each with two slots, and
//! 1,200 tasks arriving two every 20 ms with mixed priorities, some needing capabilities, some with
//! affinity keys. Agents behave like real ones: they poll when a slot frees, wait, and take
//! what is placed on them. Run with `--nocapture` to see the table of tasks per agent and
//! waits per strategy.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{Harness, ms, spec, strings};
use flotilla_core::agent::{AgentSpec, Heartbeat, ResourceUsage};
use flotilla_core::{
    AgentId, Effect, EventKind, PoolSpec, Strategy, SwarmConfig, TaskId, TaskState, Timestamp,
};

struct Worker {
    name: &'static str,
    pool: &'static str,
    caps: &'static [&'static str],
    run_ms: u64,
    /// Every n-th attempt fails (0: never).
    fail_every: u32,
    cpu_percent: f64,
}

const WORKERS: [Worker; 8] = [
    Worker {
        name: "fast-1",
        pool: "coder",
        caps: &[],
        run_ms: 50,
        fail_every: 0,
        cpu_percent: 20.0,
    },
    Worker {
        name: "fast-2",
        pool: "coder",
        caps: &[],
        run_ms: 50,
        fail_every: 0,
        cpu_percent: 20.0,
    },
    Worker {
        name: "slow-1",
        pool: "coder",
        caps: &[],
        run_ms: 400,
        fail_every: 0,
        cpu_percent: 20.0,
    },
    Worker {
        name: "cool-1",
        pool: "coder",
        caps: &[],
        run_ms: 100,
        fail_every: 0,
        cpu_percent: 5.0,
    },
    Worker {
        name: "flaky-1",
        pool: "tester",
        caps: &[],
        run_ms: 50,
        fail_every: 2,
        cpu_percent: 20.0,
    },
    Worker {
        name: "gpu-1",
        pool: "tester",
        caps: &["gpu"],
        run_ms: 100,
        fail_every: 0,
        cpu_percent: 20.0,
    },
    Worker {
        name: "full-1",
        pool: "tester",
        caps: &["gpu", "rust"],
        run_ms: 100,
        fail_every: 0,
        cpu_percent: 20.0,
    },
    Worker {
        name: "hot-1",
        pool: "tester",
        caps: &[],
        run_ms: 100,
        fail_every: 0,
        cpu_percent: 95.0,
    },
];

const TASKS: usize = 1_200;

#[derive(Default)]
struct Report {
    /// Tasks completed per agent name.
    done: BTreeMap<&'static str, usize>,
    /// Attempts started per agent name.
    started: BTreeMap<&'static str, usize>,
    /// Of the tasks each agent completed, how many needed a capability.
    needing_caps: BTreeMap<&'static str, usize>,
    /// Waits (created → first start), in ms.
    waits: Vec<u64>,
    /// Waits of priority 8 and above.
    high_waits: Vec<u64>,
    /// Keyed tasks that started on the agent that last started a task with the same key.
    affinity_hits: usize,
    affinity_total: usize,
    stolen: usize,
    finished_at: i64,
}

/// A heartbeat reporting the worker's CPU use.
fn beat(h: &mut Harness, id: AgentId, w: &Worker) {
    let beat = Heartbeat {
        resource_usage: Some(ResourceUsage {
            cpu_percent: Some(w.cpu_percent),
            memory_mb: Some(100.0),
            ..ResourceUsage::default()
        }),
        ..Heartbeat::default()
    };
    h.fleet.heartbeat(id, beat, h.now).expect("heartbeat");
    h.settle();
}

/// Agents the last command placed a task on: they poll.
fn woken(h: &mut Harness, to_poll: &mut Vec<AgentId>) {
    for e in std::mem::take(&mut h.effects) {
        if let Effect::WakeAgent(a) = e {
            to_poll.push(a);
        }
    }
}

fn p95(xs: &[u64]) -> u64 {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v.get(v.len() * 95 / 100).copied().unwrap_or(0)
}

/// Runs the workload under one strategy and returns what happened.
fn run(strategy: Strategy, prefetch: u32) -> Report {
    let config = SwarmConfig {
        strategy,
        prefetch,
        affinity_wait: ms(300),
        heartbeat_interval: ms(5_000),
        task_max_attempts: 10,
        ..SwarmConfig::default()
    };
    let mut h = Harness::with(Default::default(), config);
    for (pool, priority) in [("coder", 8), ("tester", 3)] {
        let spec = PoolSpec {
            name: pool.to_owned(),
            min_agents: 0,
            max_agents: 100,
            capabilities: Vec::new(),
            max_concurrent_tasks: 2,
            template: None,
            checkpoints: Default::default(),
            priority,
            resources: Default::default(),
            scaling: Vec::new(),
        };
        let swarm = h.swarm.clone();
        h.fleet.put_pool(&swarm, spec, h.now).expect("pool");
        h.settle();
    }
    let mut ids = Vec::new();
    let mut by_id: HashMap<AgentId, usize> = HashMap::new();
    for (i, w) in WORKERS.iter().enumerate() {
        let id = AgentId(h.uuid());
        let spec = AgentSpec {
            agent_type: w.pool.to_owned(),
            name: Some(w.name.to_owned()),
            capabilities: strings(w.caps),
            max_concurrent_tasks: 2,
            ..AgentSpec::default()
        };
        let swarm = h.swarm.clone();
        h.fleet
            .register_agent(&swarm, id, spec, h.now)
            .expect("register");
        h.settle();
        beat(&mut h, id, w);
        ids.push(id);
        by_id.insert(id, i);
    }

    let mut report = Report::default();
    let start = h.now;
    // Running attempts: (ends at, agent, task, attempt, fails).
    let mut running: Vec<(Timestamp, AgentId, TaskId, u32, bool)> = Vec::new();
    let mut attempts_of: Vec<u32> = vec![0; WORKERS.len()];
    let mut created: HashMap<TaskId, (Timestamp, u8)> = HashMap::new();
    let mut started_once: HashMap<TaskId, ()> = HashMap::new();
    let mut last_on_key: HashMap<String, AgentId> = HashMap::new();
    let mut submitted = 0usize;
    let mut completed = 0usize;
    let mut seed: u64 = 0x5eed;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };

    // Every agent polls once at the start.
    let mut to_poll: Vec<AgentId> = ids.clone();
    let mut step = 0i64;
    while completed < TASKS {
        step += 1;
        if step >= 200_000 {
            let open: Vec<String> = created
                .keys()
                .filter_map(|t| h.fleet.task(*t))
                .filter(|t| !t.status().is_terminal())
                .map(|t| {
                    format!(
                        "{:?} {:?} {:?} {:?}",
                        t.status(),
                        t.state,
                        t.required_capabilities,
                        t.affinity_key
                    )
                })
                .collect();

            for t in created
                .keys()
                .filter(|t| h.fleet.task(**t).is_some_and(|t| !t.status().is_terminal()))
            {
                for e in h.events.iter().filter(|e| e.task_id == Some(*t)) {
                    eprintln!(
                        "{} {:?} {:?} {}",
                        e.at.as_millis(),
                        e.kind,
                        e.agent_id.map(|a| WORKERS[by_id[&a]].name),
                        e.detail
                    );
                }
            }
            panic!(
                "{}: the workload did not finish: {completed} done, open: {open:?}, running {}",
                strategy.as_str(),
                running.len()
            );
        }
        // Two tasks every 20 ms: fewer than the free slots, so that the strategy decides which
        // waiting agents get them.
        if step % 2 == 1 && submitted < TASKS {
            let mut batch = Vec::new();
            woken(&mut h, &mut to_poll);
            for _ in 0..2.min(TASKS - submitted) {
                let mut s = spec("work", 1 + rand(10) as u8);
                match rand(100) {
                    0..15 => s.required_capabilities = strings(&["gpu"]),
                    15..20 => s.required_capabilities = strings(&["rust"]),
                    _ => {}
                }
                if rand(100) < 40 {
                    s.affinity_key = Some(format!("repo-{}", rand(8)));
                }
                batch.push(s);
            }
            let specs = batch.clone();
            let tasks = h.submit_all(batch);
            woken(&mut h, &mut to_poll);
            for (t, s) in tasks.iter().zip(specs) {
                created.insert(*t, (h.now, s.priority));
            }
            submitted += tasks.len();
        }
        // Every agent heartbeats each second, with its CPU use.
        if step % 100 == 0 {
            for (i, id) in ids.iter().enumerate() {
                beat(&mut h, *id, &WORKERS[i]);
                woken(&mut h, &mut to_poll);
            }
        }
        // Attempts that end now.
        let now = h.now;
        let (ended, rest): (Vec<_>, Vec<_>) = running.into_iter().partition(|r| r.0 <= now);
        running = rest;
        for (_, agent, task, attempt, fails) in ended {
            if fails {
                h.fail(agent, task, attempt, true).expect("fail");
                woken(&mut h, &mut to_poll);
            } else {
                h.complete(agent, task, attempt).expect("complete");
                woken(&mut h, &mut to_poll);
                completed += 1;
                let w = &WORKERS[by_id[&agent]];
                *report.done.entry(w.name).or_default() += 1;
                if !h.fleet.task(task).unwrap().required_capabilities.is_empty() {
                    *report.needing_caps.entry(w.name).or_default() += 1;
                }
            }
            to_poll.push(agent);
        }
        // Polls: take until nothing more (the agent then waits).
        while let Some(agent) = to_poll.pop() {
            loop {
                let held = running.iter().filter(|r| r.1 == agent).count();
                if held >= 2 {
                    break;
                }
                let Some(task) = h.take(agent) else { break };
                let i = by_id[&agent];
                let w = &WORKERS[i];
                attempts_of[i] += 1;
                *report.started.entry(w.name).or_default() += 1;
                let fails = w.fail_every > 0 && attempts_of[i].is_multiple_of(w.fail_every);
                if started_once.insert(task.id, ()).is_none() {
                    let (at, priority) = created[&task.id];
                    let wait = h.now.since(at).as_millis() as u64;
                    report.waits.push(wait);
                    if priority >= 8 {
                        report.high_waits.push(wait);
                    }
                }
                if let Some(key) = &task.affinity_key {
                    report.affinity_total += 1;
                    if last_on_key.get(key) == Some(&agent) {
                        report.affinity_hits += 1;
                    }
                    last_on_key.insert(key.clone(), agent);
                }
                let attempt = task.attempts;
                running.push((h.now + ms(w.run_ms), agent, task.id, attempt, fails));
                woken(&mut h, &mut to_poll);
            }
        }
        h.advance(ms(10));
        woken(&mut h, &mut to_poll);
    }
    report.stolen = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::TaskAssigned && e.detail.contains("stolen from"))
        .count();
    report.finished_at = h.now.since(start).as_millis() as i64;
    h.fleet.check_invariants().expect("invariants");
    report
}

fn share(r: &Report, name: &str) -> f64 {
    let total: usize = r.done.values().sum();
    *r.done.get(name).unwrap_or(&0) as f64 / total as f64
}

#[test]
fn each_strategy_shows_its_own_behaviour_on_the_same_workload() {
    let rr = run(Strategy::RoundRobin, 0);
    let mut rows = vec![("round_robin", 0, rr)];
    for (s, prefetch) in [
        (Strategy::LeastLoaded, 0),
        (Strategy::CapabilityMatch, 0),
        (Strategy::Affinity, 0),
        (Strategy::Weighted, 0),
        (Strategy::ResourceBased, 0),
        (Strategy::Priority, 0),
        (Strategy::RoundRobin, 2),
        (Strategy::LeastLoaded, 2),
    ] {
        rows.push((s.as_str(), prefetch, run(s, prefetch)));
    }
    // The table.
    let mut header = format!("{:<17} {:>3}", "strategy", "pf");
    for w in &WORKERS {
        header += &format!(" {:>7}", w.name);
    }
    header += "  p95 wait  p95 high  affinity  stolen  makespan";
    eprintln!("{header}");
    for (name, prefetch, r) in &rows {
        let mut line = format!("{name:<17} {prefetch:>3}");
        for w in &WORKERS {
            line += &format!(" {:>7}", r.done.get(w.name).unwrap_or(&0));
        }
        line += &format!(
            "  {:>6}ms  {:>6}ms  {:>7.0}%  {:>6}  {:>6}ms",
            p95(&r.waits),
            p95(&r.high_waits),
            100.0 * r.affinity_hits as f64 / r.affinity_total.max(1) as f64,
            r.stolen,
            r.finished_at,
        );
        eprintln!("{line}");
    }
    let get = |name: &str, pf: u32| {
        &rows
            .iter()
            .find(|(n, p, _)| *n == name && *p == pf)
            .expect("row")
            .2
    };
    let rr = get("round_robin", 0);
    for (name, _, r) in &rows {
        assert_eq!(
            r.done.values().sum::<usize>(),
            TASKS,
            "{name}: every task completes once"
        );
    }

    // least_loaded: the slow agent, which holds its tasks longest, gets fewer than in turns.
    let ll = get("least_loaded", 0);
    assert!(
        share(ll, "slow-1") < share(rr, "slow-1"),
        "least_loaded gives the slow agent less: {:.3} vs {:.3}",
        share(ll, "slow-1"),
        share(rr, "slow-1")
    );

    // capability_match: the generalist spends more of its time on work only it (or the gpu
    // agent) can do.
    let cm = get("capability_match", 0);
    let spec_share = |r: &Report| {
        *r.needing_caps.get("full-1").unwrap_or(&0) as f64
            / *r.done.get("full-1").unwrap_or(&1) as f64
    };
    assert!(
        spec_share(cm) > spec_share(rr) + 0.1,
        "capability_match keeps the generalist for capability work: {:.2} vs {:.2}",
        spec_share(cm),
        spec_share(rr)
    );

    // affinity: tasks with a key mostly run where the key ran last.
    let af = get("affinity", 0);
    let rate = |r: &Report| r.affinity_hits as f64 / r.affinity_total as f64;
    assert!(
        rate(af) > 0.6 && rate(af) > 2.0 * rate(rr),
        "affinity keeps keys on their agent: {:.2} vs {:.2}",
        rate(af),
        rate(rr)
    );

    // weighted: the flaky and the slow agent get less, the fast ones more.
    let wt = get("weighted", 0);
    assert!(
        share(wt, "flaky-1") < share(rr, "flaky-1"),
        "weighted gives the flaky agent less: {:.3} vs {:.3}",
        share(wt, "flaky-1"),
        share(rr, "flaky-1")
    );
    assert!(
        share(wt, "fast-1") + share(wt, "fast-2") > share(rr, "fast-1") + share(rr, "fast-2"),
        "weighted gives the fast agents more"
    );

    // resource_based: the agent at 95% CPU gets less than the one at 5%, and less than in turns.
    let rb = get("resource_based", 0);
    assert!(
        share(rb, "hot-1") < share(rb, "cool-1") && share(rb, "hot-1") < share(rr, "hot-1"),
        "resource_based avoids the hot agent: hot {:.3}, cool {:.3}, round robin hot {:.3}",
        share(rb, "hot-1"),
        share(rb, "cool-1"),
        share(rr, "hot-1")
    );

    // priority: the higher-priority pool's agents get more of the work.
    let pr = get("priority", 0);
    let coder = |r: &Report| {
        WORKERS
            .iter()
            .filter(|w| w.pool == "coder")
            .map(|w| share(r, w.name))
            .sum::<f64>()
    };
    assert!(
        coder(pr) > coder(rr) + 0.05,
        "priority prefers the coder pool: {:.2} vs {:.2}",
        coder(pr),
        coder(rr)
    );
    // Whatever the strategy, high-priority tasks wait no longer than the rest at p95.
    for (name, _, r) in &rows {
        assert!(
            p95(&r.high_waits) <= p95(&r.waits),
            "{name}: high-priority tasks wait less"
        );
    }

    // Prefetch places work ahead; idle agents steal it back from busy ones.
    let pf = get("round_robin", 2);
    assert!(pf.stolen > 0, "with prefetch, idle agents steal work");
}

#[test]
fn an_idle_agent_steals_from_the_most_loaded_local_queue() {
    let config = SwarmConfig {
        prefetch: 3,
        ..SwarmConfig::default()
    };
    let mut h = Harness::with(Default::default(), config);
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    // a polls and holds a task; b is registered but not polling yet.
    assert!(h.take(a).is_none());
    let tasks = h.submit_all((0..5).map(|i| spec("t", 5 + (i % 2) as u8)).collect());
    // a got one; the rest were placed ahead: a's and b's local queues, round robin.
    let held = h.fleet.agent(a).unwrap().current_tasks.clone();
    assert_eq!(held.len(), 1);
    assert_eq!(
        h.fleet.local_queue_len(a) + h.fleet.local_queue_len(b),
        4,
        "the other four wait in local queues"
    );
    for t in &tasks {
        let task = h.fleet.task(*t).unwrap();
        assert!(
            matches!(
                task.state,
                TaskState::Queued { .. } | TaskState::Assigned { .. }
            ),
            "{:?}",
            task.state
        );
    }
    // b takes its own local queue first, then steals from a's.
    let mut got = Vec::new();
    while let Some(t) = h.take(b) {
        got.push(t.id);
        h.complete(b, t.id, t.attempts).unwrap();
    }
    assert_eq!(got.len(), 4, "b ran everything a was not running");
    assert_eq!(h.fleet.local_queue_len(a), 0);
    let stolen: Vec<&str> = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::TaskAssigned && e.detail.contains("stolen from"))
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(
        stolen,
        vec!["round_robin; stolen from a's local queue"; 2],
        "b ran its own two, then stole a's two"
    );
    h.fleet.check_invariants().unwrap();
}

#[test]
fn a_keyed_task_waits_for_its_agent_then_falls_back() {
    let config = SwarmConfig {
        strategy: Strategy::Affinity,
        affinity_wait: ms(500),
        ..SwarmConfig::default()
    };
    let mut h = Harness::with(Default::default(), config);
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let keyed = |k: &str| {
        let mut s = spec("t", 5);
        s.affinity_key = Some(k.to_owned());
        s
    };
    // a runs the first task of key k.
    assert!(h.take(b).is_none());
    let first = h.submit(keyed("k"));
    let t = h.fleet.task(first).unwrap().clone();
    let runner = t.state.agent_id().unwrap();
    let other = if runner == a { b } else { a };
    let t = h.take(runner).unwrap();
    h.complete(runner, t.id, t.attempts).unwrap();
    // The runner is busy with something else when the next k task comes; the other agent
    // waits, but does not get it.
    let filler = h.submit(spec("filler", 9));
    let f = h.take(runner).unwrap();
    assert_eq!(f.id, filler);
    assert!(h.take(other).is_none());
    let second = h.submit(keyed("k"));
    assert_eq!(h.fleet.local_queue_len(runner), 1, "it waits for its agent");
    h.advance(ms(200));
    assert!(
        matches!(
            h.fleet.task(second).unwrap().state,
            TaskState::Queued { .. }
        ),
        "not taken by the other agent before the wait ends"
    );
    // After the wait, the waiting agent gets it.
    h.advance(ms(400));
    let state = h.fleet.task(second).unwrap().state.clone();
    assert_eq!(state.agent_id(), Some(other), "{state:?}");
    // And a third k task now prefers the new owner.
    let t = h.take(other).unwrap();
    h.complete(other, t.id, t.attempts).unwrap();
    h.complete(runner, f.id, f.attempts).unwrap();
    assert!(h.take(runner).is_none());
    assert!(h.take(other).is_none());
    let third = h.submit(keyed("k"));
    assert_eq!(h.fleet.task(third).unwrap().state.agent_id(), Some(other));
    h.fleet.check_invariants().unwrap();
}

#[test]
fn a_priority_floor_holds_back_lower_tasks_until_lifted() {
    let mut h = Harness::with(Default::default(), SwarmConfig::default());
    let a = h.agent("a", &[], 1);
    h.fleet.set_priority_floor(Some(6), h.now);
    h.settle();
    let low = h.submit(spec("low", 3));
    assert!(h.take(a).is_none(), "a task below the floor is not placed");
    let high = h.submit(spec("high", 8));
    assert_eq!(h.fleet.task(high).unwrap().state.agent_id(), Some(a));
    let t = h.take(a).unwrap();
    h.complete(a, t.id, t.attempts).unwrap();
    assert!(h.take(a).is_none());
    assert!(matches!(
        h.fleet.task(low).unwrap().state,
        TaskState::Queued { .. }
    ));
    h.fleet.set_priority_floor(None, h.now);
    h.settle();
    assert_eq!(h.fleet.task(low).unwrap().state.agent_id(), Some(a));
}
