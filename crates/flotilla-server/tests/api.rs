//! The HTTP API against a real coordinator on a free port, with a real SQLite store.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

async fn fast_swarm(h: &Harness, name: &str) {
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": name, "config": {"heartbeat_interval_ms": 200, "heartbeat_miss_limit": 3, "task_timeout_ms": 60000}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn wait_for_status(h: &Harness, task: &str, want: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (_, t) = h.get(&format!("/tasks/{task}")).await;
        if t["status"] == want {
            return t;
        }
        assert!(
            start.elapsed() < within,
            "task {task} still {} after {within:?}: {t}",
            t["status"]
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_task_goes_from_submit_to_completed() {
    let h = Harness::start().await;
    let (agent, token) = h
        .register(
            "default",
            json!({"type": "coder", "capabilities": ["rust"]}),
        )
        .await;
    let task = h
        .submit(
            "default",
            json!({"type": "build", "payload": {"n": 1}, "required_capabilities": ["rust"]}),
        )
        .await;
    assert_eq!(task["status"], "queued");
    let got = h.next(&agent, &token, 1.0).await.expect("a task");
    assert_eq!(got["id"], task["id"]);
    assert_eq!(got["status"], "running");
    assert_eq!(got["attempts"], 1);
    let t = id(&task);
    let (s, done) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{t}/complete"),
            Some(json!({"result": {"ok": true}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"ok": true}));
    // Repeating the same completion is answered, not recorded twice.
    let (s, again) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{t}/complete"),
            Some(json!({"result": {"ok": true}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    let (_, events) = h
        .get(&format!("/events?task={t}&type=task_completed"))
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    let (s, list) = h.get("/swarms/default/tasks?status=completed").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["id"], task["id"]);
    let (_, agent_now) = h.get(&format!("/agents/{agent}")).await;
    assert_eq!(agent_now["tasks_completed"], 1);
    assert_eq!(agent_now["status"], "idle");
}

#[tokio::test]
async fn every_call_needs_a_valid_token() {
    let h = Harness::start().await;
    let resp = h.http.get(h.url("/swarms")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let (s, v) = h.call_as("flt_wrong", Method::GET, "/swarms", None).await;
    Harness::assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = h
        .http
        .get(h.url("/swarms"))
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The health check is open.
    let ok = h
        .http
        .get(format!("{}/healthz", h.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // The admin token file is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&h.server.admin_token_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn an_agent_token_acts_only_for_its_agent() {
    let h = Harness::start().await;
    let (a, a_token) = h.register("default", json!({"name": "a"})).await;
    let (b, b_token) = h.register("default", json!({"name": "b"})).await;
    // Not for another agent.
    let (s, v) = h
        .call_as(
            &a_token,
            Method::POST,
            &format!("/agents/{b}/heartbeat"),
            Some(json!({})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = h
        .call_as(
            &a_token,
            Method::GET,
            &format!("/agents/{b}/tasks/next"),
            None,
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = h
        .call_as(&a_token, Method::DELETE, &format!("/agents/{b}"), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    // Not for admin calls.
    let (s, v) = h.call_as(&a_token, Method::GET, "/swarms", None).await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = h
        .call_as(
            &a_token,
            Method::POST,
            "/swarms/default/tasks",
            Some(json!({})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    // A task running on b cannot be completed by a.
    let task = h.submit("default", json!({})).await;
    let got = h.next(&b, &b_token, 1.0).await.expect("b gets the task");
    assert_eq!(got["id"], task["id"]);
    let t = id(&task);
    let (s, v) = h
        .call_as(
            &a_token,
            Method::POST,
            &format!("/tasks/{t}/complete"),
            Some(json!({})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = h
        .call_as(&a_token, Method::GET, &format!("/tasks/{t}"), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    // For itself, yes.
    let (s, v) = h.call_as(&a_token, Method::POST, &format!("/agents/{a}/heartbeat"), Some(json!({"status": "healthy", "resource_usage": {"cpu_percent": 12.5, "memory_mb": 100}}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h
        .call_as(&b_token, Method::GET, &format!("/tasks/{t}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn swarms_can_be_created_read_updated_and_deleted() {
    let h = Harness::start().await;
    let (s, v) = h.get("/swarms/default").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["topology"], "star");
    assert_eq!(v["config"]["heartbeat_interval_ms"], 5000);
    assert_eq!(v["config"]["task_timeout_ms"], 300000);
    let (s, created) = h
        .post("/swarms", json!({"name": "research", "description": "papers", "topology": "mesh", "config": {"min_agents": 1, "max_agents": 4}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "inactive");
    let by_id = h.get(&format!("/swarms/{}", id(&created))).await.1;
    assert_eq!(by_id["name"], "research");
    let (s, v) = h.post("/swarms", json!({"name": "research"})).await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/research",
            Some(json!({"topology": "ring", "description": "more papers"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["topology"], "ring");
    let (_, list) = h.get("/swarms").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default", "research"]);
    // With an agent below min_agents... then one registered: active.
    h.register("research", json!({})).await;
    let (_, v) = h.get("/swarms/research").await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(v["agent_count"], 1);
    let (s, v) = h.call(Method::DELETE, "/swarms/research", None).await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, _) = h
        .call(Method::DELETE, "/swarms/research?force=true", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.get("/swarms/research").await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h
        .call(Method::DELETE, "/swarms/default?force=true", None)
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn a_swarms_placement_strategy_is_set_and_checked() {
    let h = Harness::start().await;
    let (_, v) = h.get("/swarms/default").await;
    assert_eq!(v["config"]["strategy"], "round_robin");
    assert_eq!(v["config"]["prefetch"], 0);
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/default",
            Some(json!({"config": {"strategy": "affinity", "prefetch": 2, "affinity_wait_ms": 1500}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = h.get("/swarms/default").await;
    assert_eq!(v["config"]["strategy"], "affinity");
    assert_eq!(v["config"]["prefetch"], 2);
    assert_eq!(v["config"]["affinity_wait_ms"], 1500);
    // With prefetch, an agent that is not asking yet gets two tasks placed ahead on it.
    let (agent, token) = h.register("default", json!({})).await;
    for _ in 0..3 {
        h.submit("default", json!({})).await;
    }
    let (s, v) = h.get(&format!("/agents/{agent}/status")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["local_queue"].as_array().unwrap().len(), 2, "{v}");
    // It takes from its local queue first; the third task then fills it up again.
    assert!(h.next(&agent, &token, 0.0).await.is_some());
    let (_, v) = h.get(&format!("/agents/{agent}/status")).await;
    assert_eq!(v["local_queue"].as_array().unwrap().len(), 2, "{v}");
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/default",
            Some(json!({"config": {"strategy": "fastest"}})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("least_loaded"),
        "{v}"
    );
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/default",
            Some(json!({"config": {"prefetch": 5000}})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("prefetch"),
        "{v}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let h = Harness::start_with(tempfile::tempdir().unwrap(), |c| {
        c.limits.max_payload_bytes = 1024;
        c.max_body_bytes = 64 * 1024;
    })
    .await;
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"priority": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "priority",
        ),
        (
            json!({"priority": 11}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "priority",
        ),
        (
            json!({"prio": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unknown field",
        ),
        (
            json!({"payload": "x".repeat(2000)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "payload",
        ),
        (
            json!({"max_attempts": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "max_attempts",
        ),
        (
            json!({"timeout_ms": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "timeout",
        ),
        (
            json!({"deadline": "2001-01-01T00:00:00Z"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "past",
        ),
        (
            json!({"deadline": "tomorrow"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "RFC 3339",
        ),
        (
            json!({"required_capabilities": ["has space"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "capability",
        ),
        (
            json!({"depends_on": ["0190b6e4-0000-7000-8000-00000000abcd"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "0190b6e4-0000-7000-8000-00000000abcd",
        ),
        (
            json!({"depends_on": ["not-a-uuid"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "depends_on",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (s, v) = h.post("/swarms/default/tasks", body.clone()).await;
        Harness::assert_error(s, &v, status, code);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body} -> {msg}");
    }
    // Malformed JSON, no content type, empty body, oversized body.
    let resp = h
        .http
        .post(h.url("/swarms/default/tasks"))
        .bearer_auth(&h.server.admin_token)
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_request");
    let resp = h
        .http
        .post(h.url("/swarms/default/tasks"))
        .bearer_auth(&h.server.admin_token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("[{}]", vec!["{}"; 30_000].join(","));
    let resp = h
        .http
        .post(h.url("/swarms/default/tasks"))
        .bearer_auth(&h.server.admin_token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    // Unknown swarm, unknown task, bad ids, bad queries, unknown route.
    let (s, v) = h.post("/swarms/nope/tasks", json!({})).await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h.get("/tasks/0190b6e4-0000-7000-8000-000000000001").await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h.get("/tasks/xyz").await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h.get("/tasks?status=weird").await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h.get("/tasks?limit=0").await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h.get("/tasks?cursor=garbage").await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h.get("/nothing/here").await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h.post("/swarms", json!({"name": "bad name!"})).await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": "x", "config": {"min_agents": 5, "max_agents": 2}}),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h
        .post("/swarms/default/agents", json!({"max_concurrent_tasks": 0}))
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h
        .post("/swarms/default/agents", json!({"metadata": [1, 2]}))
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    // Health and alerts.
    let (s, v) = h.get("/alerts?level=loud").await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("warning, critical or recovery")
    );
    let (s, v) = h.get("/alerts?swarm=nope").await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h.get("/events?type=task_completed,nonsense").await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h.get("/agents/xyz/status").await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h
        .get("/agents/0190b6e4-0000-7000-8000-000000000001/status")
        .await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": "y", "config": {"health": {"error_rate_threshold": 3}}}),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": "y", "config": {"recovery": {"give_up_after": 0}}}),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": "y", "config": {"health": {"nope": 1}}}),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    // Nothing was accepted by any of it.
    let (_, list) = h.get("/tasks").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let (s, _) = h.get("/swarms/y").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_agents_status_and_alerts_follow_its_failures() {
    let h = Harness::start().await;
    let (s, _) = h
        .post(
            "/swarms",
            json!({"name": "b", "config": {"health": {"breaker_failures": 2}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (agent, token) = h.register("b", json!({"name": "flaky"})).await;
    for _ in 0..2 {
        let t = h
            .submit("b", json!({"payload": 1, "max_attempts": 1}))
            .await;
        let task = h.next(&agent, &token, 5.0).await.expect("a task");
        assert_eq!(task["id"], t["id"]);
        let (s, _) = h
            .call_as(
                &token,
                Method::POST,
                &format!("/tasks/{}/fail", t["id"].as_str().unwrap()),
                Some(json!({"error": "no", "retryable": false})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    // The agent may read its own status.
    let (s, v) = h
        .call_as(
            &token,
            Method::GET,
            &format!("/agents/{agent}/status"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["health"], "degraded", "{v}");
    assert_eq!(v["reason"], "circuit_open", "{v}");
    assert_eq!(v["breaker"]["state"], "open", "{v}");
    assert_eq!(v["consecutive_failures"], 2);
    assert_eq!(v["error_rate"], 1.0);
    assert_eq!(v["recent_tasks"], 2);
    assert_eq!(v["history"].as_array().unwrap().len(), 1, "{v}");
    // An open breaker: no task for it, though one is waiting.
    h.submit("b", json!({"payload": 2})).await;
    assert!(h.next(&agent, &token, 0.3).await.is_none());
    let (_, alerts) = h.get("/alerts?swarm=b").await;
    let items = alerts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{alerts}");
    assert_eq!(items[0]["type"], "alert_warning");
    assert_eq!(items[0]["agent_id"], agent);
    let (_, none) = h.get("/alerts?swarm=b&level=critical").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none}");
    // Only the admin reads alerts.
    let (s, _) = h.call_as(&token, Method::GET, "/alerts", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_dependencies_are_checked() {
    let h = Harness::start().await;
    // A cycle through refs is refused, naming the tasks.
    let (s, v) = h
        .post(
            "/swarms/default/tasks",
            json!([
                {"ref": "a", "depends_on": [{"ref": "c"}]},
                {"ref": "b", "depends_on": [{"ref": "a"}]},
                {"ref": "c", "depends_on": [{"ref": "b"}]}
            ]),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cycle") && msg.contains("\"a\"") && msg.contains("\"c\""),
        "{msg}"
    );
    // One bad spec refuses the whole batch.
    let (s, v) = h
        .post(
            "/swarms/default/tasks",
            json!([{"type": "ok"}, {"priority": 42}]),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("task #1"),
        "{v}"
    );
    let (_, list) = h.get("/tasks").await;
    assert!(list["items"].as_array().unwrap().is_empty());
    // A diamond: build -> (test, lint) -> release.
    let (s, v) = h
        .post(
            "/swarms/default/tasks",
            json!([
                {"ref": "release", "type": "release", "depends_on": [{"ref": "test", "type": "success"}, {"ref": "lint"}]},
                {"ref": "test", "type": "test", "depends_on": [{"ref": "build", "type": "success"}]},
                {"ref": "lint", "type": "lint", "depends_on": [{"ref": "build"}]},
                {"ref": "build", "type": "build", "max_attempts": 1}
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tasks = v["tasks"].as_array().unwrap();
    let statuses: Vec<&str> = tasks
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["blocked", "blocked", "blocked", "queued"]);
    assert_eq!(tasks[0]["depends_on"].as_array().unwrap().len(), 2);
    // build fails for good: test fails (success dependency), lint runs (completion), release
    // fails because test did not succeed.
    let (agent, token) = h.register("default", json!({})).await;
    let build = h.next(&agent, &token, 1.0).await.unwrap();
    assert_eq!(build["type"], "build");
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/fail", id(&build)),
            Some(json!({"error": "compiler exploded", "retryable": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "failed");
    let test = h.get(&format!("/tasks/{}", id(&tasks[1]))).await.1;
    assert_eq!(test["status"], "failed");
    assert_eq!(test["error"]["kind"], "dependency_failed");
    assert!(
        test["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&id(&build))
    );
    let lint = h.next(&agent, &token, 1.0).await.unwrap();
    assert_eq!(lint["type"], "lint");
    let release = h.get(&format!("/tasks/{}", id(&tasks[0]))).await.1;
    assert_eq!(release["status"], "failed", "{release}");
    // A dependency on a finished task from an earlier batch is allowed.
    let later = h
        .submit("default", json!({"depends_on": [id(&build)]}))
        .await;
    assert_eq!(later["status"], "queued");
    let never = h
        .submit(
            "default",
            json!({"depends_on": [{"task_id": id(&build), "type": "success"}]}),
        )
        .await;
    assert_eq!(never["status"], "failed");
}

#[tokio::test]
async fn idempotency_keys_return_the_first_task() {
    let h = Harness::start().await;
    let (s, first) = h
        .post(
            "/swarms/default/tasks",
            json!({"idempotency_key": "order-42", "payload": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, again) = h
        .post(
            "/swarms/default/tasks",
            json!({"idempotency_key": "order-42", "payload": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["payload"], 1);
    let (s, v) = h
        .post("/swarms/default/tasks", json!([{"idempotency_key": "k"}, {"idempotency_key": "k"}, {"idempotency_key": "order-42"}]))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let t = v["tasks"].as_array().unwrap();
    assert_eq!(t[0]["id"], t[1]["id"]);
    assert_eq!(t[2]["id"], first["id"]);
    let (_, list) = h.get("/tasks").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn priority_and_capabilities_decide_who_gets_what() {
    let h = Harness::start().await;
    let low = h.submit("default", json!({"priority": 1})).await;
    let high = h.submit("default", json!({"priority": 9})).await;
    let gpu = h
        .submit(
            "default",
            json!({"priority": 10, "required_capabilities": ["gpu"]}),
        )
        .await;
    let mid = h.submit("default", json!({"priority": 5})).await;
    let (plain, plain_token) = h
        .register(
            "default",
            json!({"capabilities": ["cpu"], "max_concurrent_tasks": 10}),
        )
        .await;
    let mut order = Vec::new();
    while let Some(t) = h.next(&plain, &plain_token, 0.0).await {
        order.push(t["id"].clone());
    }
    assert_eq!(
        order,
        vec![high["id"].clone(), mid["id"].clone(), low["id"].clone()]
    );
    let (gpu_agent, gpu_token) = h
        .register("default", json!({"capabilities": ["gpu", "cpu"]}))
        .await;
    assert_eq!(
        h.next(&gpu_agent, &gpu_token, 0.0).await.unwrap()["id"],
        gpu["id"]
    );
}

#[tokio::test]
async fn a_waiting_agent_is_woken_by_a_new_task() {
    let h = Harness::start().await;
    let (agent, token) = h.register("default", json!({})).await;
    let poll = {
        let http = h.http.clone();
        let url = h.url(&format!("/agents/{agent}/tasks/next?wait=20"));
        let token = token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = http.get(url).bearer_auth(token).send().await.unwrap();
            (
                resp.status(),
                resp.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let task = h.submit("default", json!({"type": "ping"})).await;
    assert_eq!(
        task["status"], "assigned",
        "the waiting agent gets it at once: {task}"
    );
    let (status, got, took) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], task["id"]);
    assert_eq!(got["status"], "running");
    assert!(
        took < Duration::from_secs(10),
        "woken, not timed out ({took:?})"
    );
    // With nothing to do, the poll answers 204 after its wait.
    let started = Instant::now();
    assert!(h.next(&agent, &token, 0.3).await.is_none());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_silent_agent_loses_its_lease_and_its_task() {
    let h = Harness::start().await;
    fast_swarm(&h, "fast").await;
    let (a, a_token) = h.register("fast", json!({"name": "silent"})).await;
    let task = h
        .submit(
            "fast",
            json!({"max_attempts": 2, "backoff": {"initial_ms": 0, "max_ms": 0}}),
        )
        .await;
    let t = id(&task);
    assert!(h.next(&a, &a_token, 1.0).await.is_some());
    // No heartbeat for longer than 3 × 200 ms.
    let requeued = wait_for_status(&h, &t, "queued", Duration::from_secs(5)).await;
    assert_eq!(requeued["attempts"], 1);
    assert_eq!(requeued["last_error"]["kind"], "lease_expired");
    let (_, agent) = h.get(&format!("/agents/{a}")).await;
    assert_eq!(agent["status"], "unhealthy");
    let (_, health) = h.get("/swarms/fast/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    // Its late report is refused and says why.
    let (s, v) = h
        .call_as(
            &a_token,
            Method::POST,
            &format!("/tasks/{t}/complete"),
            Some(json!({"result": 1})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("taken back"),
        "{v}"
    );
    // The agent recovered by that call; another attempt runs, goes silent too: dead.
    let got = h.next(&a, &a_token, 1.0).await.expect("the task again");
    assert_eq!(got["attempts"], 2);
    let dead = wait_for_status(&h, &t, "dead", Duration::from_secs(5)).await;
    assert_eq!(dead["error"]["kind"], "lease_expired");
    let (_, events) = h.get(&format!("/events?agent={a}&type=agent_failed")).await;
    assert!(!events["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn heartbeats_keep_the_lease() {
    let h = Harness::start().await;
    fast_swarm(&h, "fast").await;
    let (a, token) = h.register("fast", json!({})).await;
    let task = h.submit("fast", json!({})).await;
    h.next(&a, &token, 1.0).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (s, ack) = h
            .call_as(
                &token,
                Method::POST,
                &format!("/agents/{a}/heartbeat"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{ack}");
    }
    let (_, t) = h.get(&format!("/tasks/{}", id(&task))).await;
    assert_eq!(t["status"], "running", "{t}");
    assert_eq!(t["agent_id"], a.as_str());
}

#[tokio::test]
async fn timeouts_retry_with_backoff_then_the_task_is_dead() {
    let h = Harness::start().await;
    let (a, token) = h.register("default", json!({})).await;
    let task = h
        .submit("default", json!({"timeout_ms": 200, "max_attempts": 2, "backoff": {"initial_ms": 300, "max_ms": 1000}}))
        .await;
    let t = id(&task);
    h.next(&a, &token, 1.0).await.unwrap();
    let retrying = wait_for_status(&h, &t, "queued", Duration::from_secs(5)).await;
    assert_eq!(retrying["last_error"]["kind"], "timeout");
    assert!(
        retrying["run_after"].is_string(),
        "a delayed retry: {retrying}"
    );
    let (_, health) = h.get("/swarms/default/health").await;
    assert_eq!(health["tasks"]["delayed"], 1, "{health}");
    // Not before the backoff has passed.
    let started = Instant::now();
    let again = h.next(&a, &token, 5.0).await.expect("retried");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(again["attempts"], 2);
    let dead = wait_for_status(&h, &t, "dead", Duration::from_secs(5)).await;
    assert_eq!(dead["error"]["kind"], "timeout");
    // A user can run it again.
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/tasks/{t}/retry"),
            Some(json!({"max_attempts": 5})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["attempts"], 0);
    assert_eq!(v["max_attempts"], 5);
    let (s, v) = h
        .call(Method::POST, &format!("/tasks/{t}/retry"), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn agent_failures_are_retried_unless_not_retryable() {
    let h = Harness::start().await;
    let (a, token) = h.register("default", json!({})).await;
    let task = h
        .submit(
            "default",
            json!({"max_attempts": 3, "backoff": {"initial_ms": 0, "max_ms": 0}}),
        )
        .await;
    let t = id(&task);
    h.next(&a, &token, 1.0).await.unwrap();
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{t}/fail"),
            Some(json!({"error": "flaky network"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["last_error"]["message"], "flaky network");
    let again = h.next(&a, &token, 1.0).await.unwrap();
    // A stale report for attempt 1 is refused.
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{t}/fail"),
            Some(json!({"error": "old", "attempt": 1})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    assert_eq!(again["attempts"], 2);
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{t}/fail"),
            Some(json!({"error": "bad input", "retryable": false, "attempt": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["retryable"], false);
}

#[tokio::test]
async fn cancelling_a_running_task_refuses_its_result() {
    let h = Harness::start().await;
    let (a, token) = h.register("default", json!({})).await;
    let task = h.submit("default", json!({})).await;
    let t = id(&task);
    h.next(&a, &token, 1.0).await.unwrap();
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/tasks/{t}/cancel"),
            Some(json!({"reason": "changed my mind"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["reason"], "changed my mind");
    let (s, v) = h
        .call_as(&token, Method::POST, &format!("/tasks/{t}/complete"), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = h
        .call(Method::POST, &format!("/tasks/{t}/cancel"), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    let (_, agent) = h.get(&format!("/agents/{a}")).await;
    assert_eq!(agent["current_tasks"], json!([]));
}

#[tokio::test]
async fn progress_is_recorded() {
    let h = Harness::start().await;
    let (a, token) = h.register("default", json!({})).await;
    let task = h.submit("default", json!({})).await;
    h.next(&a, &token, 1.0).await.unwrap();
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/progress", id(&task)),
            Some(json!({"percent": 40, "message": "halfway-ish"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["progress"]["percent"], 40.0);
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/progress", id(&task)),
            Some(json!({"percent": 140})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn unregistering_puts_tasks_back_and_revokes_the_token() {
    let h = Harness::start().await;
    let (a, token) = h.register("default", json!({"name": "leaver"})).await;
    let task = h.submit("default", json!({})).await;
    h.next(&a, &token, 1.0).await.unwrap();
    let (s, _) = h
        .call_as(&token, Method::DELETE, &format!("/agents/{a}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, t) = h.get(&format!("/tasks/{}", id(&task))).await;
    assert_eq!(t["status"], "queued");
    assert_eq!(t["attempts"], 0, "leaving is not failing: {t}");
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/agents/{a}/heartbeat"),
            None,
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (_, agent) = h.get(&format!("/agents/{a}")).await;
    assert_eq!(agent["status"], "stopped");
    // The name is free again.
    h.register("default", json!({"name": "leaver"})).await;
}

#[tokio::test]
async fn waiting_for_a_task_returns_when_it_finishes() {
    let h = Harness::start().await;
    let (a, token) = h.register("default", json!({})).await;
    let task = h.submit("default", json!({})).await;
    let t = id(&task);
    let waiter = {
        let http = h.http.clone();
        let url = h.url(&format!("/tasks/{t}?wait=20"));
        let admin = h.server.admin_token.clone();
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    h.next(&a, &token, 1.0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.call_as(
        &token,
        Method::POST,
        &format!("/tasks/{t}/complete"),
        Some(json!({"result": "done"})),
    )
    .await;
    let seen = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(seen["status"], "completed");
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let h = Harness::start().await;
    let specs: Vec<Value> = (0..250)
        .map(|i| json!({"type": if i % 2 == 0 { "even" } else { "odd" }, "payload": i}))
        .collect();
    let (s, _) = h.post("/swarms/default/tasks", Value::Array(specs)).await;
    assert_eq!(s, StatusCode::CREATED);
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/swarms/default/tasks?type=even&limit=40&cursor={c}"),
            None => "/swarms/default/tasks?type=even&limit=40".to_owned(),
        };
        let (s, page) = h.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        for t in page["items"].as_array().unwrap() {
            assert_eq!(t["type"], "even");
            assert!(
                seen.insert(t["id"].as_str().unwrap().to_owned()),
                "no duplicates"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 125);
    assert_eq!(pages, 4);
    let (_, lookup) = h
        .post(
            "/tasks/lookup",
            json!({"ids": [seen.iter().next().unwrap(), "0190b6e4-0000-7000-8000-000000000009"]}),
        )
        .await;
    assert_eq!(lookup["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        lookup["missing"],
        json!(["0190b6e4-0000-7000-8000-000000000009"])
    );
}

#[tokio::test]
async fn health_orchestrator_and_events_describe_the_fleet() {
    let h = Harness::start().await;
    h.register("default", json!({"type": "tester"})).await;
    h.submit("default", json!({"priority": 3})).await;
    h.submit("default", json!({"required_capabilities": ["never"]}))
        .await;
    let (s, health) = h.get("/swarms/default/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(health["agents"]["total"], 1);
    assert_eq!(health["agents"]["by_status"]["idle"], 1);
    assert_eq!(health["queue_depth"], 2);
    assert!(health["oldest_queued_age_ms"].is_u64(), "{health}");
    let (s, info) = h.get("/orchestrator").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["swarms"], 1);
    assert_eq!(info["tasks"]["queued"], 2);
    assert!(info["store"].as_str().unwrap().starts_with("sqlite:"));
    let (_, events) = h.get("/events?limit=1000").await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"swarm_created") && kinds.contains(&"agent_joined"),
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == "task_submitted").count(), 2);
    let seqs: Vec<u64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless: {seqs:?}"
    );
}

#[tokio::test]
async fn latest_events_are_the_newest_page_oldest_first() {
    let h = Harness::start().await;
    for p in 1..=5 {
        h.submit("default", json!({"priority": p})).await;
    }
    let seqs = |page: &Value| -> Vec<u64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let (_, all) = h.get("/events?limit=1000").await;
    let all = seqs(&all);
    assert!(all.len() > 5, "{all:?}");
    let (s, oldest) = h.get("/events?limit=3").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(seqs(&oldest), all[..3]);
    let (s, newest) = h.get("/events?limit=3&latest=true").await;
    assert_eq!(s, StatusCode::OK, "{newest}");
    assert_eq!(seqs(&newest), all[all.len() - 3..]);
    // Filters still apply: the newest two submissions, in log order.
    let (_, submitted) = h
        .get("/events?type=task_submitted&limit=2&latest=true")
        .await;
    let (_, every) = h.get("/events?type=task_submitted&limit=1000").await;
    assert_eq!(seqs(&every).len(), 5, "{every}");
    assert_eq!(seqs(&submitted), seqs(&every)[3..]);
    // `latest=false` is the default, and anything but a boolean is refused.
    let (_, explicit) = h.get("/events?limit=3&latest=false").await;
    assert_eq!(seqs(&explicit), all[..3]);
    let (s, bad) = h.get("/events?latest=yes").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");

    // The typed client asks the same.
    let client =
        flotilla_client::Client::new(&h.server.url(), h.server.admin_token.clone()).unwrap();
    let page = client
        .list_events(&flotilla_client::EventQuery {
            limit: Some(3),
            latest: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<u64> = page.items.iter().map(|e| e.seq).collect();
    assert_eq!(got, all[all.len() - 3..]);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let h = Harness::start_with(dir, |_| {}).await;
    let (a, token) = h.register("default", json!({"name": "steady"})).await;
    let running = h.submit("default", json!({"type": "long"})).await;
    h.next(&a, &token, 1.0).await.unwrap();
    let queued = h
        .submit("default", json!({"type": "later", "priority": 2}))
        .await;
    let blocked = h
        .submit(
            "default",
            json!({"depends_on": [{"task_id": id(&running), "type": "success"}]}),
        )
        .await;
    let admin = h.server.admin_token.clone();
    let Harness { server, dir, .. } = h;
    server.shutdown().await.unwrap();
    let h = Harness::start_with(dir, |_| {}).await;
    assert_eq!(h.server.admin_token, admin, "the admin token is kept");
    assert!(!h.server.admin_token_created);
    assert_eq!(h.dir.path(), path);
    let (_, r) = h.get(&format!("/tasks/{}", id(&running))).await;
    assert_eq!(r["status"], "running", "still leased to its agent: {r}");
    let (_, q) = h.get(&format!("/tasks/{}", id(&queued))).await;
    assert_eq!(q["status"], "queued");
    let (_, b) = h.get(&format!("/tasks/{}", id(&blocked))).await;
    assert_eq!(b["status"], "blocked");
    // The agent's token still works and its report completes the task, releasing the next.
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/complete", id(&running)),
            Some(json!({"result": 7})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, b) = h.get(&format!("/tasks/{}", id(&blocked))).await;
    assert_eq!(b["status"], "queued");
    let next = h.next(&a, &token, 1.0).await.unwrap();
    assert_eq!(next["id"], blocked["id"], "higher priority of the two");
}

#[tokio::test]
async fn agent_and_swarm_lists_paginate() {
    let h = Harness::start().await;
    for name in ["a", "a-b", "b", "a.c", "z", "a_d", "m"] {
        h.register("default", json!({ "name": name })).await;
        h.post("/swarms", json!({ "name": format!("s-{name}") }))
            .await;
    }
    for (path, total) in [("/swarms/default/agents", 7), ("/swarms", 8)] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}?limit=3&cursor={c}"),
                None => format!("{path}?limit=3"),
            };
            let (s, page) = h.get(&url).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            seen.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["name"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), total, "{path}: {seen:?}");
        assert_eq!(seen.len(), total, "{path}: no duplicates: {seen:?}");
    }
}

#[tokio::test]
async fn one_data_directory_serves_one_coordinator() {
    let h = Harness::start().await;
    let second = flotilla_server::start(common::config(h.dir.path())).await;
    let err = second
        .err()
        .expect("the second coordinator is refused")
        .to_string();
    assert!(
        err.contains("another flotilla") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}

#[tokio::test]
async fn finished_tasks_read_from_the_store_behave_as_in_memory() {
    // Nothing finished stays in memory: every path below goes through the store.
    let h = Harness::start_with(tempfile::tempdir().unwrap(), |c| {
        c.limits.retain_terminal = 0;
        c.limits.retain_terminal_for = Duration::ZERO;
    })
    .await;
    let (a, token) = h.register("default", json!({})).await;
    let ok = h
        .submit("default", json!({"idempotency_key": "ok-once"}))
        .await;
    let bad = h
        .submit(
            "default",
            json!({"idempotency_key": "bad-once", "max_attempts": 1}),
        )
        .await;
    for (task, outcome) in [(&ok, "complete"), (&bad, "fail")] {
        let got = h.next(&a, &token, 1.0).await.unwrap();
        let body = if outcome == "complete" {
            json!({"result": {"v": 1}})
        } else {
            json!({"error": "no", "retryable": false})
        };
        let (s, v) = h
            .call_as(
                &token,
                Method::POST,
                &format!("/tasks/{}/{outcome}", id(&got)),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(got["id"], task["id"]);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, info) = h.get("/orchestrator").await;
    assert_eq!(info["tasks"]["queued"], 0, "{info}");
    // A repeated completion is answered; a different result is refused.
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/complete", id(&ok)),
            Some(json!({"result": {"v": 1}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "completed");
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/complete", id(&ok)),
            Some(json!({"result": {"v": 2}})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    // Keys of finished tasks still deduplicate, and a batch may depend on them through refs:
    // the failed one fails its `success` dependent, the completed one releases its dependent.
    let (s, v) = h
        .post(
            "/swarms/default/tasks",
            json!([
                {"ref": "old-bad", "idempotency_key": "bad-once"},
                {"ref": "old-ok", "idempotency_key": "ok-once"},
                {"depends_on": [{"ref": "old-bad", "type": "success"}]},
                {"depends_on": [{"ref": "old-ok", "type": "success"}]},
                {"depends_on": [{"task_id": id(&bad), "type": "completion"}]}
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let t = v["tasks"].as_array().unwrap();
    assert_eq!(t[0]["id"], bad["id"]);
    assert_eq!(t[1]["id"], ok["id"]);
    assert_eq!(t[2]["status"], "failed", "{}", t[2]);
    assert_eq!(t[2]["error"]["kind"], "dependency_failed");
    assert_eq!(t[3]["status"], "queued");
    assert_eq!(t[4]["status"], "queued");
    // A finished task comes back from the store to be retried.
    let (s, v) = h
        .call(Method::POST, &format!("/tasks/{}/retry", id(&bad)), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "queued");
    let (s, v) = h
        .call(Method::POST, &format!("/tasks/{}/retry", id(&ok)), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
}

/// Memory runs ahead of the store by the commit in flight. `GET /tasks/{id}` and
/// `POST /tasks/lookup` answer from memory, so they wait until what they show is durable: a
/// client told a task finished reads its events from the store at once. Here another
/// connection holds the store's write lock while the agent completes the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_shown_finished_is_already_in_the_store() {
    let h = Harness::start().await;
    let (agent, token) = h.register("default", json!({"name": "a"})).await;
    let task = h.submit("default", json!({"type": "x"})).await;
    let t = id(&task);
    assert_eq!(
        h.next(&agent, &token, 1.0).await.expect("a task")["id"],
        task["id"]
    );
    let lock = rusqlite::Connection::open(h.dir.path().join("flotilla.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let complete = h
        .http
        .post(h.url(&format!("/tasks/{t}/complete")))
        .bearer_auth(&token)
        .json(&json!({"result": {"n": 1}}))
        .send();
    let completing = tokio::spawn(complete);
    // The completion is in memory (the agent's count shows it), its commit waits for the lock.
    common::eventually(
        "the completion in memory",
        Duration::from_secs(5),
        || async {
            let (_, a) = h.get(&format!("/agents/{agent}")).await;
            (a["tasks_completed"] == 1).then_some(())
        },
    )
    .await;
    let show = h
        .http
        .get(h.url(&format!("/tasks/{t}")))
        .bearer_auth(&h.server.admin_token)
        .send();
    let lookup = h
        .http
        .post(h.url("/tasks/lookup"))
        .bearer_auth(&h.server.admin_token)
        .json(&json!({"ids": [t]}))
        .send();
    let (show, lookup) = (tokio::spawn(show), tokio::spawn(lookup));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !show.is_finished() && !lookup.is_finished(),
        "answered before the completion was stored"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    let shown: Value = show.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(shown["status"], "completed", "{shown}");
    let looked: Value = lookup.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(looked["items"][0]["status"], "completed", "{looked}");
    let (_, events) = h
        .get(&format!("/events?task={t}&type=task_completed"))
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    let done = completing.await.unwrap().unwrap();
    assert_eq!(done.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_past_its_rate_limit_gets_429_with_retry_after_and_others_go_on() {
    use std::num::NonZeroU32;
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start_with(dir, |c| {
        c.rate_limit = Some(flotilla_server::rate_limit::RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(5).unwrap(),
        });
    })
    .await;
    // Five requests of the admin token (its burst): one registers an agent.
    let (status, reg) = h
        .call(
            Method::POST,
            "/swarms/default/agents",
            Some(json!({"name": "a"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    for _ in 0..4 {
        assert_eq!(h.get("/swarms").await.0, StatusCode::OK);
    }
    let resp = h
        .http
        .get(h.url("/swarms"))
        .bearer_auth(&h.server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(wait, 1);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again")
    );
    // The agent's token has its own allowance; an unknown token is a 401, not a 429.
    let agent_token = reg["token"].as_str().unwrap();
    let path = format!("/agents/{}", reg["agent_id"].as_str().unwrap());
    let (status, _) = h.call_as(agent_token, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.call_as("nope", Method::GET, "/swarms", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A second later the admin token may make one more.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(h.get("/swarms").await.0, StatusCode::OK);
    assert_eq!(h.get("/swarms").await.0, StatusCode::TOO_MANY_REQUESTS);
}
