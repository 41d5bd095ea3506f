mod common;
use common::Harness;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_task_goes_from_submit_to_completed() {
    let h = Harness::start().await;
    let (agent, token) = h.register("default", json!({"type": "coder", "capabilities": ["rust"]})).await;
    let task = h.submit("default", json!({"type": "build", "payload": {"n": 1}, "required_capabilities": ["rust"]})).await;
    assert_eq!(task["status"], "queued");
    let got = h.next(&agent, &token, 1.0).await.expect("a task");
    assert_eq!(got["id"], task["id"]);
    assert_eq!(got["status"], "running");
    let id = task["id"].as_str().unwrap();
    let (s, done) = h
        .call_as(&token, reqwest::Method::POST, &format!("/tasks/{id}/complete"), Some(json!({"result": {"ok": true}})))
        .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"ok": true}));
    let (s, list) = h.get("/swarms/default/tasks?status=completed").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["id"], task["id"]);
    h.server.shutdown().await.unwrap();
}
