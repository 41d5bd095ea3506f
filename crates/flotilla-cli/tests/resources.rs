//! The resource manager and pressure detection against a real coordinator and real processes:
//! admission of managed agents against a small capacity (waiting, refusal, release on
//! removal), and a task really holding memory pushing the fleet's memory pressure up, with its
//! responses (alert, lower-priority agents paused, low-priority submissions shed) and their
//! reversal when the memory is freed.

mod common;

use std::time::Duration;

use common::*;
use flotilla_client::EventQuery;
use flotilla_core::EventKind;
use flotilla_core::pressure::Level;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(90);

async fn resources(h: &Harness) -> Value {
    serde_json::to_value(h.admin.resources().await.expect("GET /resources")).unwrap()
}

async fn events(h: &Harness, kind: EventKind) -> Vec<String> {
    let page = h
        .admin
        .list_events(&EventQuery {
            kind: Some(kind),
            limit: Some(1000),
            ..EventQuery::default()
        })
        .await
        .expect("GET /events");
    page.items.into_iter().map(|e| e.detail).collect()
}

fn idle_pool(h: &Harness, name: &str, priority: u8, memory_mb: u64) -> Value {
    json!({
        "name": name,
        "min_agents": 1,
        "max_agents": 3,
        "priority": priority,
        "resources": {"memory_mb": memory_mb},
        "agent": h.template(json!({"command": "true", "mode": "exec"})),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_wait_for_resources_and_start_when_another_pool_releases_them() {
    let h = Harness::start_with(|c| {
        c.resources.memory_mb = Some(400);
    })
    .await;
    h.put_pool("default", idle_pool(&h, "first", 5, 300)).await;
    let first = poll("first's agent to be idle", LONG, || async {
        match h.agents("default", "first").await.as_slice() {
            [a] if a["status"] == "idle" => Ok(a.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // 300 of 400 MiB are allocated: the second pool's 200 MiB wait.
    h.put_pool("default", idle_pool(&h, "second", 5, 200)).await;
    let waiting = poll("second to wait for memory", LONG, || async {
        let r = resources(&h).await;
        match r["waiting"].as_array().and_then(|w| w.first()) {
            Some(w) if w["pool"] == "second" => Ok(w.clone()),
            _ => Err(r),
        }
    })
    .await;
    assert_eq!(waiting["refused"], false, "{waiting}");
    let why = waiting["reason"].as_str().unwrap();
    assert!(
        why.contains("memory needs 200 MiB but 100 MiB of 400 MiB is free"),
        "{why}"
    );
    assert!(h.agents("default", "second").await.is_empty());
    let r = resources(&h).await;
    assert_eq!(r["allocated"]["memory_mb"], 300, "{r}");
    assert_eq!(r["pools"][0]["pool"], "first", "{r}");
    assert_eq!(r["allocations"][0]["agent_id"], first["id"], "{r}");
    assert!(
        events(&h, EventKind::ResourcesWaiting)
            .await
            .iter()
            .any(|d| d.contains("\"second\"") && d.contains("memory needs 200 MiB")),
    );
    // The CLI says the same, readably.
    let out = h.cli(&["resources"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("waiting") && text.contains("second"),
        "{text}"
    );

    // The first pool goes (its agent removed): its 300 MiB are released and second starts.
    h.admin
        .delete_pool("default", "first", true)
        .await
        .expect("delete first");
    poll("second's agent to be idle", LONG, || async {
        match h.agents("default", "second").await.as_slice() {
            [a] if a["status"] == "idle" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let r = resources(&h).await;
    assert_eq!(r["allocated"]["memory_mb"], 200, "{r}");
    assert_eq!(r["waiting"], json!([]), "{r}");
    assert!(
        events(&h, EventKind::ResourcesGranted)
            .await
            .iter()
            .any(|d| d.contains("\"second\""))
    );

    // Under `refuse`, a pool that does not fit is refused, not queued, and stays so.
    let out = h.cli(&["resources", "--admission", "refuse", "--json"]);
    assert!(out.status.success(), "{out:?}");
    h.put_pool("default", idle_pool(&h, "third", 5, 300)).await;
    let refused = poll("third to be refused", LONG, || async {
        let r = resources(&h).await;
        match r["waiting"].as_array().and_then(|w| w.first()) {
            Some(w) if w["pool"] == "third" && w["refused"] == true => Ok(w.clone()),
            _ => Err(r),
        }
    })
    .await;
    assert!(
        refused["reason"].as_str().unwrap().contains("memory"),
        "{refused}"
    );
    assert!(
        events(&h, EventKind::ResourcesRefused)
            .await
            .iter()
            .any(|d| d.contains("\"third\""))
    );
    // An explicit spawn that does not fit is refused with a 409 and the reason.
    let err = h
        .admin
        .spawn_agent("default", "third")
        .await
        .expect_err("no room for third");
    assert!(err.to_string().contains("not enough resources"), "{err}");
    // Bad input is a 400, not a panic.
    let bad = h.cli(&["resources", "--strategy", "random"]);
    assert!(!bad.status.success());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_held_by_an_agent_raises_pressure_and_its_responses_reverse_on_release() {
    let h = Harness::start_with(|c| {
        c.resources.memory_mb = Some(340);
        let r = &mut c.resources.responses;
        r.pause_low_priority = Some(Level::High);
        r.shed = Some(Level::High);
        r.shed_below = 3;
    })
    .await;
    let release = h.path("release");
    let hog = h.write_script(
        "hog.py",
        &format!(
            "import os, time\n\
             block = b'x' * (300 * 1024 * 1024)\n\
             while not os.path.exists({release:?}):\n    time.sleep(0.1)\n\
             del block\n\
             time.sleep(30)\n\
             print('done')\n",
            release = release.display().to_string()
        ),
    );
    h.put_pool(
        "default",
        json!({
            "name": "hog", "min_agents": 1, "max_agents": 1, "priority": 8,
            "capabilities": ["hog"],
            "agent": h.template(json!({"command": python(), "args": [hog], "mode": "exec"})),
        }),
    )
    .await;
    h.put_pool(
        "default",
        json!({
            "name": "low", "min_agents": 1, "max_agents": 1, "priority": 2,
            "capabilities": ["low"],
            "agent": h.template(json!({"command": "true", "mode": "exec"})),
        }),
    )
    .await;
    let low = poll("both agents idle", LONG, || async {
        let hog = h.agents("default", "hog").await;
        let low = h.agents("default", "low").await;
        match (hog.as_slice(), low.as_slice()) {
            ([a], [b]) if a["status"] == "idle" && b["status"] == "idle" => Ok(b.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let task = h
        .submit(
            "default",
            json!({"payload": {}, "required_capabilities": ["hog"], "priority": 9}),
        )
        .await;

    // The level climbs (the average rises sample by sample) to high or beyond.
    let seen = std::sync::Mutex::new(Vec::new());
    poll("fleet memory pressure to reach high", LONG, || async {
        let r = resources(&h).await;
        let level = r["pressure"]["signals"]["fleet_memory"]["level"].clone();
        let mut seen = seen.lock().unwrap();
        if seen.last() != Some(&level) {
            seen.push(level.clone());
        }
        if level == "high" || level == "critical" {
            Ok(())
        } else {
            Err(r["pressure"].clone())
        }
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.iter().any(|l| l == "elevated" || l == "normal"),
        "the level rose through the lower levels first: {seen:?}"
    );
    // The responses: an alert, the low-priority agent paused, low submissions shed.
    let low_id = id_of(&low);
    h.agent_until(low_id, "the low agent paused", LONG, |a| {
        a["status"] == "paused"
    })
    .await;
    let r = resources(&h).await;
    assert_eq!(r["pressure"]["paused_agents"], json!([low["id"]]), "{r}");
    assert!(r["pressure"]["scale_up_veto"].is_string(), "{r}");
    assert!(h.admin.resources().await.is_ok());
    let alerts = [
        events(&h, EventKind::AlertWarning).await,
        events(&h, EventKind::AlertCritical).await,
    ]
    .concat();
    assert!(
        alerts.iter().any(|d| d.contains("resource pressure")),
        "{alerts:?}"
    );
    let shed = h
        .admin
        .submit_task(
            "default",
            &serde_json::from_value(json!({"payload": 1, "priority": 1})).unwrap(),
        )
        .await
        .expect_err("a priority-1 task is shed");
    assert!(
        shed.to_string().contains("shedding tasks below priority 3"),
        "{shed}"
    );
    let responses = events(&h, EventKind::PressureResponse).await;
    assert!(
        responses
            .iter()
            .any(|d| d.contains("pausing the lowest-priority agents")),
        "{responses:?}"
    );

    // The memory is freed: the level falls back, the agent resumes, the alert resolves.
    std::fs::write(&release, "").unwrap();
    h.agent_until(low_id, "the low agent resumed", LONG, |a| {
        a["status"] == "idle"
    })
    .await;
    poll("pressure to fall below high", LONG, || async {
        let r = resources(&h).await;
        let level = &r["pressure"]["level"];
        if level == "normal" || level == "elevated" {
            Ok(())
        } else {
            Err(r["pressure"].clone())
        }
    })
    .await;
    let r = resources(&h).await;
    assert_eq!(r["pressure"]["paused_agents"], json!([]), "{r}");
    assert!(r["pressure"]["scale_up_veto"].is_null(), "{r}");
    assert!(
        !events(&h, EventKind::AlertRecovery)
            .await
            .iter()
            .filter(|d| d.contains("resource pressure back to"))
            .collect::<Vec<_>>()
            .is_empty()
    );
    let responses = events(&h, EventKind::PressureResponse).await;
    assert!(
        responses
            .iter()
            .any(|d| d.contains("resuming") && d.contains("paused by pressure")),
        "{responses:?}"
    );
    assert_eq!(h.task(task).await["status"], "running");
    h.finish().await;
}
