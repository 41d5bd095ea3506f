//! Fault injection with real processes: an agent killed mid-task, one frozen with SIGSTOP, one
//! that stops heartbeating but keeps running, one whose memory grows past its limit, one that
//! fails every task. Each time: the coordinator notices within its configured bound, the task
//! is completed by a healthy agent, exactly once, and the event log tells the story in order.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flotilla_client::EventQuery;
use flotilla_core::{EventKind, TaskId};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

/// A swarm whose leases last 1 s (heartbeats every 500 ms, two may be missed), whose failed
/// agents restart only after 30 s (so that the healthy agent, not the restarted one, takes
/// the retried task), and whose agents are unhealthy above 150 MiB.
async fn chaos_swarm(h: &Harness) {
    h.admin
        .create_swarm(
            &serde_json::from_value(json!({
                "name": "chaos",
                "config": {
                    "heartbeat_interval_ms": 500,
                    "heartbeat_miss_limit": 2,
                    "health": {"memory_limit_mb": 150.0, "breaker_failures": 2,
                               "breaker_cooldown_ms": 60000},
                    "recovery": {"backoff_initial_ms": 30000, "backoff_max_ms": 30000},
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// A daemon pool of one agent running `command args…` (with the test's marker).
async fn daemon(h: &Harness, pool: &str, command: &str, args: &[&str]) -> Value {
    h.put_pool(
        "chaos",
        json!({
            "name": pool,
            "min_agents": 1,
            "agent": h.template(json!({"command": command, "args": args, "mode": "daemon"})),
        }),
    )
    .await;
    poll("the agent to call in", LONG, || async {
        let agents = h.agents("chaos", pool).await;
        match agents.as_slice() {
            [a] if a["status"] == "idle" => Ok(a.clone()),
            _ => Err(agents),
        }
    })
    .await
}

/// A daemon running `flotilla worker --agent-from-env -- COMMAND…`.
async fn worker(h: &Harness, pool: &str, command: &[&str]) -> Value {
    let mut args = vec!["worker", "--agent-from-env", "--"];
    args.extend_from_slice(command);
    daemon(h, pool, FLOTILLA, &args).await
}

/// Submits one task to the chaos swarm (retried quickly) and waits until `agent` runs it.
async fn task_on(h: &Harness, agent: &Value) -> TaskId {
    let id = h
        .submit(
            "chaos",
            json!({"payload": {"n": 1}, "max_attempts": 3,
                   "backoff": {"initial_ms": 10, "max_ms": 10}}),
        )
        .await;
    h.task_until(id, "the task to run on the faulty agent", LONG, |t| {
        t["status"] == "running" && t["agent_id"] == agent["id"]
    })
    .await;
    id
}

/// Waits until the task's running attempt has failed; returns how long that took.
async fn failure_noticed(h: &Harness, id: TaskId, since: Instant, within: Duration) -> Duration {
    h.task_until(id, "the attempt to fail", within, |t| {
        !t["last_error"].is_null()
    })
    .await;
    since.elapsed()
}

/// Checks the end of the story: the task completed once, on `good`, after an attempt on
/// `bad` that failed with `kind`; the events are in that order.
async fn completed_by_the_healthy_agent(
    h: &Harness,
    id: TaskId,
    bad: &Value,
    good: &Value,
    kind: &str,
) {
    let t = h.finished(id, LONG).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["agent_id"], good["id"], "{t:#}");
    assert_eq!(t["result"], json!({"n": 1}), "{t:#}");
    assert_eq!(t["last_error"]["kind"], kind, "{t:#}");
    assert_eq!(t["last_error"]["agent_id"], bad["id"], "{t:#}");
    let events = h
        .admin
        .list_events(&EventQuery {
            task: Some(id),
            limit: Some(100),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .items;
    let story: Vec<(EventKind, Option<String>)> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::TaskStarted | EventKind::TaskRetrying | EventKind::TaskCompleted
            )
        })
        .map(|e| (e.kind, e.agent_id.map(|a| a.to_string())))
        .collect();
    let id_of = |a: &Value| Some(a["id"].as_str().unwrap().to_owned());
    assert_eq!(
        story,
        [
            (EventKind::TaskStarted, id_of(bad)),
            (EventKind::TaskRetrying, id_of(bad)),
            (EventKind::TaskStarted, id_of(good)),
            (EventKind::TaskCompleted, id_of(good)),
        ],
        "{events:#?}"
    );
    // The agent's own events say what happened to it, before the task moved on.
    let agent_events = h
        .admin
        .list_events(&EventQuery {
            agent: Some(bad["id"].as_str().unwrap().parse().unwrap()),
            limit: Some(100),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .items;
    let down = agent_events
        .iter()
        .find(|e| e.kind == EventKind::AgentFailed)
        .expect("an agent_failed event");
    let retry = events
        .iter()
        .find(|e| e.kind == EventKind::TaskRetrying)
        .unwrap();
    assert!(down.seq < retry.seq, "{down:?} before {retry:?}");
    assert!(
        agent_events
            .iter()
            .any(|e| e.kind == EventKind::AlertCritical),
        "{agent_events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_loses_it_at_once_to_a_healthy_agent() {
    let h = Harness::start().await;
    chaos_swarm(&h).await;
    let bad = worker(&h, "bad", &["sleep", "300"]).await;
    let id = task_on(&h, &bad).await;
    let good = worker(&h, "good", &["cat"]).await;
    let killed = Instant::now();
    signal_group("KILL", bad["managed"]["pid"].as_u64().unwrap() as u32);
    let took = failure_noticed(&h, id, killed, Duration::from_secs(5)).await;
    eprintln!("kill -9 noticed after {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    completed_by_the_healthy_agent(&h, id, &bad, &good, "agent_exited").await;
    let a = h.agent(id_of(&bad)).await;
    assert_eq!(a["status"], "recovering", "{a:#}");
    assert_eq!(a["health"]["reason"], "process_exited", "{a:#}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_noticed_by_its_lease_killed_and_its_task_moved() {
    let h = Harness::start().await;
    chaos_swarm(&h).await;
    let bad = worker(&h, "bad", &["sleep", "300"]).await;
    let id = task_on(&h, &bad).await;
    let good = worker(&h, "good", &["cat"]).await;
    let pgid = bad["managed"]["pid"].as_u64().unwrap() as u32;
    let frozen = Instant::now();
    signal_group("STOP", pgid);
    let took = failure_noticed(&h, id, frozen, Duration::from_secs(6)).await;
    eprintln!("SIGSTOP noticed after {took:?} (lease 1 s)");
    // The lease runs 1 s from the last heartbeat, which came at most 500 ms before the freeze.
    assert!(
        took >= Duration::from_millis(450),
        "not before the lease: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    completed_by_the_healthy_agent(&h, id, &bad, &good, "lease_expired").await;
    // The frozen process was killed (SIGKILL reaches a stopped process).
    wait_until(
        "the frozen group to be gone",
        Duration::from_secs(10),
        || {
            let left = group_members(pgid);
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
    let a = h.agent(id_of(&bad)).await;
    assert_eq!(a["health"]["reason"], "missed_heartbeats", "{a:#}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_heartbeating_but_keeps_running_is_killed() {
    let h = Harness::start().await;
    chaos_swarm(&h).await;
    // Takes one task through the API by hand, then never speaks again.
    let script = h.write_script(
        "silent.sh",
        r#"#!/bin/sh
curl -sf -H "Authorization: Bearer $FLOTILLA_TOKEN" \
  "$FLOTILLA_URL/api/v1/agents/$FLOTILLA_AGENT_ID/heartbeat" -X POST \
  -H 'content-type: application/json' -d '{}' >/dev/null
curl -sf -H "Authorization: Bearer $FLOTILLA_TOKEN" \
  "$FLOTILLA_URL/api/v1/agents/$FLOTILLA_AGENT_ID/tasks/next?wait=30" >/dev/null
exec sleep 300
"#,
    );
    let bad = daemon(&h, "bad", script.to_str().unwrap(), &[]).await;
    let id = task_on(&h, &bad).await;
    let good = worker(&h, "good", &["cat"]).await;
    let pgid = bad["managed"]["pid"].as_u64().unwrap() as u32;
    let since = Instant::now();
    let took = failure_noticed(&h, id, since, Duration::from_secs(6)).await;
    eprintln!("silence noticed {took:?} after the task was seen running (lease 1 s)");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    completed_by_the_healthy_agent(&h, id, &bad, &good, "lease_expired").await;
    wait_until(
        "the silent process to be killed",
        Duration::from_secs(10),
        || {
            let left = group_members(pgid);
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_memory_grows_past_its_limit_is_killed_and_its_task_moved() {
    let h = Harness::start().await;
    chaos_swarm(&h).await;
    let grow = "import sys, time\n\
                sys.stdin.read()\n\
                chunks = []\n\
                for _ in range(40):\n    chunks.append(b'x' * 10_000_000)\n    time.sleep(0.05)\n\
                time.sleep(300)\n";
    let py = python();
    let bad = worker(&h, "bad", &[&py, "-c", grow]).await;
    let id = task_on(&h, &bad).await;
    let good = worker(&h, "good", &["cat"]).await;
    let since = Instant::now();
    // 150 MiB is passed within a second; usage is sampled every 2 s.
    let took = failure_noticed(&h, id, since, Duration::from_secs(10)).await;
    eprintln!("memory over the limit noticed {took:?} after the task started");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    completed_by_the_healthy_agent(&h, id, &bad, &good, "agent_unhealthy").await;
    let a = h.agent(id_of(&bad)).await;
    assert_eq!(a["health"]["reason"], "memory", "{a:#}");
    assert!(
        a["health"]["detail"]
            .as_str()
            .unwrap()
            .contains("over its limit of 150 MiB"),
        "{a:#}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_fails_every_task_is_cut_off_by_its_breaker() {
    let h = Harness::start().await;
    chaos_swarm(&h).await;
    let bad = worker(&h, "bad", &["false"]).await;
    let good = worker(&h, "good", &["cat"]).await;
    let ids = {
        let mut ids = Vec::new();
        for n in 0..6 {
            ids.push(
                h.submit(
                    "chaos",
                    json!({"payload": {"n": n}, "max_attempts": 5,
                           "backoff": {"initial_ms": 10, "max_ms": 10}}),
                )
                .await,
            );
        }
        ids
    };
    for (n, id) in ids.iter().enumerate() {
        let t = h.finished(*id, LONG).await;
        assert_eq!(t["status"], "completed", "{t:#}");
        assert_eq!(t["agent_id"], good["id"]);
        assert_eq!(t["result"], json!({"n": n}));
    }
    // Two failures in a row opened the bad agent's breaker: it failed exactly two tasks.
    let status = h
        .admin
        .agent_status(id_of(&bad))
        .await
        .expect("GET /agents/{id}/status");
    let status = serde_json::to_value(status).unwrap();
    assert_eq!(status["breaker"]["state"], "open", "{status:#}");
    assert_eq!(status["consecutive_failures"], 2, "{status:#}");
    assert_eq!(status["health"], "degraded", "{status:#}");
    assert_eq!(status["reason"], "circuit_open", "{status:#}");
    assert_eq!(status["history"][0]["to"], "degraded", "{status:#}");
    let alerts = h
        .admin
        .alerts(Some("chaos"), &["warning"], None)
        .await
        .unwrap();
    assert!(
        alerts
            .items
            .iter()
            .any(|e| e.agent_id.map(|a| a.to_string()).as_deref() == bad["id"].as_str()),
        "{alerts:#?}"
    );
    // The CLI shows it.
    let out = h.cli(&["alerts", "--swarm", "chaos"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("warning"), "{text}");
    assert!(text.contains(bad["name"].as_str().unwrap()), "{text}");
    let out = h.cli(&["agent", "show", bad["name"].as_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("circuit_open"), "{text}");
    assert!(text.contains("open until"), "{text}");
    h.finish().await;
}
