//! Regressions found by a review of the message and delegation API: each test failed before
//! its fix (the names say what must hold).

mod common;

use std::time::Duration;

use common::{Harness, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// `POST /tasks/{id}/delegate` with a subtask whose idempotency key belongs to a finished task no
/// longer in memory: the delegate path gives the core no store lookups (`KnownTasks::default()`),
/// so the core makes a second task with that key; SQLite's unique index refuses the commit and
/// the writer fails closed: every later change is refused until the coordinator restarts. Now
/// the store is looked up, and the delegation refused (409): the parent could not wait for a
/// task that finished long ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegating_with_an_evicted_idempotency_key_is_refused_and_changes_go_on() {
    let h = Harness::start_with(tempfile::tempdir().unwrap(), |c| {
        c.limits.retain_terminal = 0;
        c.limits.retain_terminal_for = Duration::ZERO;
    })
    .await;
    let (a, token) = h.register("default", json!({"name": "a"})).await;
    let old = h
        .submit("default", json!({"type": "old", "idempotency_key": "k-1"}))
        .await;
    let got = h.next(&a, &token, 1.0).await.unwrap();
    assert_eq!(id(&got), id(&old));
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/complete", id(&got)),
            Some(json!({"result": {"v": 1}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Let the ticker evict it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let parent = h.submit("default", json!({"type": "parent"})).await;
    let got = h.next(&a, &token, 1.0).await.unwrap();
    assert_eq!(id(&got), id(&parent));
    let (s, v) = h
        .call_as(
            &token,
            Method::POST,
            &format!("/tasks/{}/delegate", id(&parent)),
            Some(json!({"subtasks": [{"type": "part", "idempotency_key": "k-1"}]})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&id(&old)),
        "{v}"
    );
    // Whatever the answer to that call, the coordinator must still accept changes.
    let (s2, v2) = h
        .post("/swarms/default/tasks", json!({"type": "after"}))
        .await;
    assert!(
        s2 == StatusCode::CREATED,
        "delegate answered {s} {v}; a plain submission afterwards is refused: {s2} {v2}"
    );
}

/// Several concurrent `POST /messages/{id}/retry` of one dead message: each reads the dead row
/// from the store outside the fleet lock, and the core accepts the same dead copy again, putting
/// the id in flight twice; the agent then receives the same message twice in one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_dead_message_deliver_it_once() {
    let h = Harness::start().await;
    let (a, token) = h.register("default", json!({"name": "a"})).await;
    let (s, m) = h
        .post(
            &format!("/agents/{a}/messages"),
            json!({"body": {"t": 1}, "ttl_ms": 50}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let mid = id(&m);
    eventually("dead", Duration::from_secs(5), || async {
        let (_, v) = h.get(&format!("/messages/{mid}")).await;
        (v["status"] == "dead").then_some(())
    })
    .await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let url = h.url(&format!("/messages/{mid}/retry"));
        let http = h.http.clone();
        let admin = h.server.admin_token.clone();
        calls.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(admin)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    for c in calls {
        if c.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    let (s, got) = h
        .call_as(
            &token,
            Method::GET,
            &format!("/agents/{a}/messages/next?wait=0&max=100"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    let n = got.as_array().unwrap().len();
    assert!(
        ok == 1 && n == 1,
        "{ok} retries accepted; the agent received {n} copies of message {mid}"
    );
}

/// An agent requester with `?wait=true` has its answer on the call, and the docs promise the
/// response is not delivered to its inbox a second time. An open receive of the requester
/// (a long poll or its WebSocket) gets it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waited_response_is_not_delivered_to_an_open_receive() {
    let h = Harness::start().await;
    let (s, v) = h
        .post("/swarms", json!({"name": "m", "topology": "mesh"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (asker, asker_token) = h.register("m", json!({"name": "asker"})).await;
    let (answerer, answerer_token) = h.register("m", json!({"name": "answerer"})).await;
    // The asker's own receive loop is waiting on its inbox.
    let url = h.url("");
    let http = h.http.clone();
    let (asker2, at2) = (asker.clone(), asker_token.clone());
    let inbox = tokio::spawn(async move {
        let v: Value = http
            .get(format!("{url}/agents/{asker2}/messages/next?wait=5"))
            .bearer_auth(&at2)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v
    });
    // The answerer answers in the background.
    let url = h.url("");
    let http = h.http.clone();
    let (ans2, tok2) = (answerer.clone(), answerer_token.clone());
    let server = tokio::spawn(async move {
        let got: Value = http
            .get(format!("{url}/agents/{ans2}/messages/next?wait=10"))
            .bearer_auth(&tok2)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let req = &got[0];
        http.post(format!(
            "{url}/agents/{}/messages",
            req["from"].as_str().unwrap()
        ))
        .bearer_auth(&tok2)
        .json(&json!({"kind": "response", "correlation_id": req["id"], "body": {"a": 1}}))
        .send()
        .await
        .unwrap()
        .status()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, exchange) = h
        .call_as(
            &asker_token,
            Method::POST,
            &format!("/agents/{answerer}/messages?wait=true"),
            Some(json!({"kind": "request", "body": {"q": 1}, "timeout_ms": 5000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{exchange}");
    assert_eq!(server.await.unwrap(), StatusCode::CREATED);
    let polled = inbox.await.unwrap();
    let again: Vec<&Value> = polled
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == exchange["response"]["id"])
        .collect();
    assert!(
        again.is_empty(),
        "the response returned on the waiting call was delivered to the asker's inbox too: {polled}"
    );
}
