//! Autoscaling and manual scaling end to end: a coordinator in the test process runs a managed
//! exec pool of real child processes; a burst of tasks grows it within its policy's evaluation
//! periods and never past its max, and when the burst is over it shrinks back to its min
//! after each cooldown, draining agents without losing or cutting short a task. Manual
//! scaling through the API and the CLI, with its refusals.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use flotilla_client::ClientError;
use flotilla_client::EventQuery;
use flotilla_core::api::ScaleRequest;
use flotilla_core::{Event, EventKind, SwarmId};
use serde_json::json;

/// Every event of a kind, oldest first.
async fn events(h: &Harness, kind: EventKind) -> Vec<Event> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = h
            .admin
            .list_events(&EventQuery {
                kind: Some(kind),
                after,
                limit: Some(1000),
                ..EventQuery::default()
            })
            .await
            .expect("GET events");
        let done = page.next_cursor.is_none() || page.items.is_empty();
        after = page.items.iter().map(|e| e.seq).max().or(after);
        all.extend(page.items);
        if done {
            break;
        }
    }
    all.sort_by_key(|e| e.seq);
    all.dedup_by_key(|e| e.seq);
    all
}

/// The pool's size as the coordinator holds it: (present agents, desired).
fn size_in_memory(h: &Harness, swarm: SwarmId, pool: &str) -> (u32, u32) {
    let now = h.server().state.now();
    let fleet = h.server().state.fleet.lock();
    let v = fleet.pool_view(swarm, pool, now).expect("the pool exists");
    (v.size.current + v.size.draining, v.size.desired)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_grows_the_pool_within_max_and_it_shrinks_back_by_draining_without_losing_a_task() {
    let h = Harness::start().await;
    let template = h.template(json!({
        "command": "sh",
        "args": ["-c", "sleep 1; echo done-{{payload.n}}"],
        "mode": "exec",
    }));
    h.put_pool(
        "default",
        json!({
            "name": "burst",
            "min_agents": 1,
            "max_agents": 4,
            "agent": template,
            "scaling": [{
                "name": "backlog",
                "metric": "queue_depth",
                "scale_up_threshold": 2.0,
                "scale_down_threshold": 0.5,
                "scale_up_increment": 2,
                "scale_down_increment": 1,
                "cooldown_ms": 2000,
                "evaluation_periods": 2,
                "evaluation_period_ms": 300,
            }],
        }),
    )
    .await;
    poll(
        "the pool's first agent",
        Duration::from_secs(10),
        || async {
            let agents = h.agents("default", "burst").await;
            if agents.len() == 1 && agents[0]["status"] == "idle" {
                Ok(())
            } else {
                Err(agents)
            }
        },
    )
    .await;
    let swarm = h.admin.get_swarm("default").await.unwrap().swarm.id;

    // Watch the pool's size all along: it must never pass its max.
    let stop = Arc::new(AtomicBool::new(false));
    let largest = Arc::new(AtomicU32::new(0));
    let watcher = {
        let (stop, largest) = (stop.clone(), largest.clone());
        let state = h.server().state.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let now = state.now();
                let present = {
                    let fleet = state.fleet.lock();
                    fleet
                        .pool_view(swarm, "burst", now)
                        .map(|v| v.size.current + v.size.draining)
                        .unwrap_or(0)
                };
                largest.fetch_max(present, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let burst_at = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..24 {
        tasks.push(
            h.submit(
                "default",
                json!({ "type": "work", "payload": { "n": n }, "max_attempts": 3 }),
            )
            .await,
        );
    }
    // Grows within its evaluation periods (2 × 300 ms), with room for the 100 ms rounds.
    poll("the pool to grow", Duration::from_secs(5), || async {
        let (_, desired) = size_in_memory(&h, swarm, "burst");
        if desired > 1 { Ok(()) } else { Err(desired) }
    })
    .await;
    let grew_after = burst_at.elapsed();
    poll(
        "the pool to reach its max",
        Duration::from_secs(10),
        || async {
            let (present, desired) = size_in_memory(&h, swarm, "burst");
            if desired == 4 {
                Ok(())
            } else {
                Err((present, desired))
            }
        },
    )
    .await;
    for id in &tasks {
        let t = h.finished(*id, Duration::from_secs(60)).await;
        assert_eq!(t["status"], "completed", "{t:#}");
        assert_eq!(t["attempts"], 1, "never cut short nor retried: {t:#}");
    }
    // Shrinks back to its min, one agent per cooldown, once the queue has stayed empty.
    poll(
        "the pool back at its min",
        Duration::from_secs(30),
        || async {
            let agents = h.agents("default", "burst").await;
            let (present, desired) = size_in_memory(&h, swarm, "burst");
            if desired == 1 && present == 1 && agents.len() == 1 {
                Ok(())
            } else {
                Err((present, desired, agents.len()))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert!(
        largest.load(Ordering::Relaxed) <= 4,
        "the pool passed its max: {} agents",
        largest.load(Ordering::Relaxed)
    );
    assert_eq!(largest.load(Ordering::Relaxed), 4, "it reached its max");

    // Every task completed exactly once.
    let completed = events(&h, EventKind::TaskCompleted).await;
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for e in &completed {
        *per_task.entry(e.task_id.unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_task.len(), 24, "{per_task:?}");
    assert!(per_task.values().all(|n| *n == 1), "{per_task:?}");

    // The event log tells each decision with its reason: up by 2 (1 -> 3), up to the max
    // (3 -> 4), then down one at a time.
    let scaled: Vec<String> = events(&h, EventKind::PoolScaled)
        .await
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert!(
        scaled
            .iter()
            .all(|d| d.contains("autoscaler: policy \"backlog\"")),
        "{scaled:#?}"
    );
    let steps: Vec<&str> = scaled
        .iter()
        .map(|d| {
            d.split(';')
                .next()
                .unwrap()
                .trim_start_matches("pool \"burst\": ")
        })
        .collect();
    assert_eq!(
        steps,
        [
            "1 -> 3 agents",
            "3 -> 4 agents",
            "4 -> 3 agents",
            "3 -> 2 agents",
            "2 -> 1 agents"
        ],
        "{scaled:#?}"
    );
    assert!(scaled[0].contains("queue_depth"), "{}", scaled[0]);
    assert!(scaled[0].contains(">= 2"), "{}", scaled[0]);
    assert!(scaled[2].contains("<= 0.5"), "{}", scaled[2]);
    assert!(
        grew_after < Duration::from_secs(5),
        "grew after {grew_after:?}"
    );
    // Each shrink drained one agent, which then left.
    let drained = events(&h, EventKind::AgentDraining).await;
    assert_eq!(drained.len(), 3, "{drained:#?}");
    let left = events(&h, EventKind::AgentLeft).await;
    for d in &drained {
        assert!(
            left.iter()
                .any(|l| l.agent_id == d.agent_id && l.seq > d.seq),
            "drained agent {:?} did not leave: {left:#?}",
            d.agent_id
        );
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_scaling_through_the_api_and_the_cli_with_its_refusals() {
    let h = Harness::start().await;
    let template = h.template(json!({
        "command": "sh",
        "args": ["-c", "echo ok"],
        "mode": "exec",
    }));
    h.put_pool(
        "default",
        json!({ "name": "hands", "min_agents": 1, "max_agents": 3, "agent": template }),
    )
    .await;
    h.put_pool("default", json!({ "name": "outside", "max_agents": 2 }))
        .await;
    let scale = |agents: Option<u32>, delta: Option<i64>, pool: &str| ScaleRequest {
        pool: pool.to_owned(),
        agents,
        delta,
    };
    let answer = h
        .admin
        .scale_pool("default", &scale(Some(3), None, "hands"))
        .await
        .expect("scale to 3");
    assert_eq!((answer.from, answer.to), (1, 3));
    poll("three idle agents", Duration::from_secs(10), || async {
        let agents = h.agents("default", "hands").await;
        if agents.len() == 3 && agents.iter().all(|a| a["status"] == "idle") {
            Ok(())
        } else {
            Err(agents)
        }
    })
    .await;
    let view = h.admin.get_swarm("default").await.unwrap();
    let pool = view.pools.iter().find(|p| p.name == "hands").unwrap();
    assert_eq!(
        (
            pool.size.current,
            pool.size.desired,
            pool.size.min,
            pool.size.max
        ),
        (3, 3, 1, 3)
    );
    assert!(pool.managed);

    // Refusals: 4xx with a message that says what is wrong.
    let refused = |r: Result<_, ClientError>| match r {
        Err(ClientError::Api {
            status, message, ..
        }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    };
    let (status, message) = refused(
        h.admin
            .scale_pool("default", &scale(Some(2), None, "nope"))
            .await,
    );
    assert_eq!(status, 404, "{message}");
    assert!(message.contains("hands, outside"), "{message}");
    let (status, message) = refused(
        h.admin
            .scale_pool("default", &scale(Some(2), None, "outside"))
            .await,
    );
    assert_eq!(status, 409, "{message}");
    let (status, message) = refused(
        h.admin
            .scale_pool("default", &scale(Some(9), None, "hands"))
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("takes 1 to 3 agents"), "{message}");
    let (status, _) = refused(
        h.admin
            .scale_pool("default", &scale(Some(2), Some(1), "hands"))
            .await,
    );
    assert_eq!(status, 400);
    let (status, _) = refused(
        h.admin
            .scale_pool("default", &scale(None, None, "hands"))
            .await,
    );
    assert_eq!(status, 400);

    // The CLI: a one-line error, then a relative scale-down that drains two agents.
    let out = h.cli(&["swarm", "scale", "default", "hands", "7"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("takes 1 to 3 agents"), "{err}");
    let out = h.cli(&["swarm", "scale", "default", "hands", "--by", "-2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 -> 1 agents"), "{text}");
    assert!(text.contains("draining"), "{text}");
    poll("one agent left", Duration::from_secs(10), || async {
        let agents = h.agents("default", "hands").await;
        if agents.len() == 1 {
            Ok(())
        } else {
            Err(agents)
        }
    })
    .await;
    let out = h.cli(&["swarm", "show", "default"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Pools"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("hands"))
        .unwrap_or_else(|| panic!("a row for the pool: {text}"));
    assert!(row.contains("1/1 (1–3)"), "{row}");
    let scaled: Vec<String> = events(&h, EventKind::PoolScaled)
        .await
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(scaled.len(), 2, "{scaled:#?}");
    assert!(
        scaled[0].contains("1 -> 3 agents; manual: scale to 3"),
        "{scaled:#?}"
    );
    assert!(
        scaled[1].contains("3 -> 1 agents; manual: scale by -2"),
        "{scaled:#?}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoed_growth_is_recorded_with_its_reason_and_happens_once_the_veto_lifts() {
    let h = Harness::start().await;
    // The seam the resource manager fills: refuse every growth, saying why.
    h.server().state.set_scale_veto(Arc::new(
        |_: &flotilla_core::Fleet, p: &flotilla_core::Pool, to: u32| {
            Some(format!("no room for {to} agent(s) of {} (test)", p.name))
        },
    ));
    let template = h.template(json!({
        "command": "sh",
        "args": ["-c", "echo ok"],
        "mode": "exec",
    }));
    h.put_pool(
        "default",
        json!({
            "name": "gated",
            "min_agents": 0,
            "max_agents": 2,
            "agent": template,
            "scaling": [{
                "metric": "queue_depth",
                "scale_up_threshold": 1.0,
                "scale_down_threshold": 0.0,
                "cooldown_ms": 0,
                "evaluation_periods": 1,
                "evaluation_period_ms": 100,
            }],
        }),
    )
    .await;
    let mut tasks = Vec::new();
    for n in 0..3 {
        tasks.push(
            h.submit("default", json!({ "type": "work", "payload": { "n": n } }))
                .await,
        );
    }
    let refused = poll("a refusal", Duration::from_secs(5), || async {
        let e = events(&h, EventKind::PoolScaleRefused).await;
        if e.is_empty() { Err(e) } else { Ok(e) }
    })
    .await;
    let detail = &refused[0].detail;
    assert!(
        detail.contains(
            "pool \"gated\": 0 -> 1 agents refused: no room for 1 agent(s) of gated (test)"
        ),
        "{detail}"
    );
    assert!(detail.contains("queue_depth 3.00 >= 1"), "{detail}");
    assert!(
        h.agents("default", "gated").await.is_empty(),
        "nothing spawned"
    );
    assert!(events(&h, EventKind::PoolScaled).await.is_empty());
    // The veto lifts: the pool grows and the tasks run.
    h.server()
        .state
        .set_scale_veto(flotilla_server::state::no_scale_veto());
    for id in &tasks {
        let t = h.finished(*id, Duration::from_secs(20)).await;
        assert_eq!(t["status"], "completed", "{t:#}");
    }
    let scaled = events(&h, EventKind::PoolScaled).await;
    assert!(
        scaled[0].detail.contains("0 -> 1 agents; autoscaler"),
        "{scaled:#?}"
    );
    h.finish().await;
}
