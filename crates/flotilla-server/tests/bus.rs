//! The message bus end to end, against a real coordinator, on both bus backends: every test
//! runs once with the in-process bus and once with Redis (127.0.0.1:6379, or
//! `FLOTILLA_TEST_REDIS_URL`; skipped with a note when Redis is absent, failing under CI=true).
//!
//! Covered: priority order, a long poll woken through the bus, at-least-once with
//! acknowledgements, redelivery and the dead-letter list with its retry, time to live,
//! wildcard topics, request/response and its timeout, the topology refusing a send, the
//! WebSocket, the size limit and the audit log, the live stream, and no message lost across a
//! coordinator restart.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Harness, eventually};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    an_inbox_is_served_by_priority,
    a_long_poll_is_woken_by_a_send,
    unacknowledged_messages_are_redelivered_then_dead_lettered_and_retried,
    a_message_past_its_ttl_is_dead,
    topics_reach_their_wildcard_subscribers,
    a_request_gets_its_response_or_times_out,
    the_topology_refuses_a_worker_to_worker_send,
    the_websocket_pushes_messages_and_takes_acks,
    the_size_limit_refuses_and_the_audit_log_records_without_bodies,
    the_stream_shows_traffic_live,
    no_message_is_lost_across_a_coordinator_restart,
);

async fn start(bus: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, bus).await
}

async fn start_in(dir: tempfile::TempDir, bus: &str) -> Harness {
    let bus = bus.to_owned();
    Harness::start_with(dir, move |c| {
        c.bus = bus;
        c.message_max_bytes = 4096;
    })
    .await
}

/// A swarm with fast message timings, and `n` agents registered in it (name, id, token).
async fn swarm(h: &Harness, name: &str, topology: &str, n: usize) -> Vec<(String, String, String)> {
    let fast = json!({
        "ack_timeout_ms": 300,
        "retry_initial_ms": 50,
        "retry_max_ms": 100,
        "max_deliveries": 2,
        "request_timeout_ms": 2000
    });
    swarm_with(h, name, topology, n, fast).await
}

/// A swarm with these message settings, and `n` agents registered in it (name, id, token).
async fn swarm_with(
    h: &Harness,
    name: &str,
    topology: &str,
    n: usize,
    messaging: Value,
) -> Vec<(String, String, String)> {
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": name, "topology": topology, "config": {"messaging": messaging}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut agents = Vec::new();
    for i in 0..n {
        let agent_name = format!("{name}-a{i}");
        let (id, token) = h.register(name, json!({"name": agent_name})).await;
        agents.push((agent_name, id, token));
    }
    agents
}

async fn send(h: &Harness, token: &str, to: &str, body: Value) -> (StatusCode, Value) {
    h.call_as(
        token,
        Method::POST,
        &format!("/agents/{to}/messages"),
        Some(body),
    )
    .await
}

async fn receive(h: &Harness, id: &str, token: &str, wait: f64) -> Vec<Value> {
    let (s, v) = h
        .call_as(
            token,
            Method::GET,
            &format!("/agents/{id}/messages/next?wait={wait}&max=100"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

async fn ack(h: &Harness, id: &str, token: &str, ids: &[&str]) -> Value {
    let (s, v) = h
        .call_as(
            token,
            Method::PATCH,
            &format!("/agents/{id}/messages"),
            Some(json!({"ids": ids, "status": "acked"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn texts(ms: &[Value]) -> Vec<String> {
    ms.iter()
        .map(|m| m["body"]["t"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn an_inbox_is_served_by_priority(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "prio", "mesh", 1).await;
    let (_, id, token) = &agents[0];
    let admin = h.server.admin_token.clone();
    for (t, p) in [
        ("n1", "normal"),
        ("l1", "low"),
        ("c1", "critical"),
        ("h1", "high"),
        ("n2", "normal"),
        ("c2", "critical"),
    ] {
        let (s, v) = send(&h, &admin, id, json!({"body": {"t": t}, "priority": p})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["status"], "pending");
        assert_eq!(
            v["from"],
            Value::Null,
            "an operator's message has no sender agent"
        );
    }
    let got = receive(&h, id, token, 0.0).await;
    assert_eq!(texts(&got), ["c1", "c2", "h1", "n1", "n2", "l1"]);
    assert!(
        got.iter()
            .all(|m| m["status"] == "delivered" && m["deliveries"] == 1)
    );
}

async fn a_long_poll_is_woken_by_a_send(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "wake", "mesh", 2).await;
    let (_, a, a_token) = agents[0].clone();
    let (_, b, b_token) = agents[1].clone();
    let url = h.url(&format!("/agents/{b}/messages/next?wait=10"));
    let http = h.http.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let v: Value = http
            .get(url)
            .bearer_auth(b_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, sent) = send(&h, &a_token, &b, json!({"body": {"t": "wake up"}})).await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["from"], json!(a));
    let (got, took) = poll.await.unwrap();
    assert_eq!(texts(got.as_array().unwrap()), ["wake up"]);
    assert!(
        took < Duration::from_secs(3),
        "the poll should end when the message comes, not at its 10 s wait ({took:?})"
    );
}

async fn unacknowledged_messages_are_redelivered_then_dead_lettered_and_retried(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "ack", "mesh", 1).await;
    let (_, id, token) = agents[0].clone();
    let admin = h.server.admin_token.clone();
    let (_, m) = send(&h, &admin, &id, json!({"body": {"t": "important"}})).await;
    let mid = m["id"].as_str().unwrap().to_owned();
    let first = receive(&h, &id, &token, 0.0).await;
    assert_eq!(first[0]["deliveries"], 1);
    // Not acknowledged within 300 ms: delivered again (at least once).
    let second = eventually("redelivery", Duration::from_secs(5), || async {
        let got = receive(&h, &id, &token, 0.2).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(second[0]["id"], json!(mid));
    assert_eq!(second[0]["deliveries"], 2);
    // Out of deliveries (2): dead, with the reason, in the dead-letter list.
    let dead = eventually("dead letter", Duration::from_secs(5), || async {
        let (_, page) = h.get("/swarms/ack/messages?status=dead").await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(dead[0]["id"], json!(mid));
    assert!(
        dead[0]["dead_reason"]
            .as_str()
            .unwrap()
            .contains("not acknowledged"),
        "{}",
        dead[0]
    );
    let (_, events) = h.get("/events?type=message_dead_lettered").await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    // Retried from the dead-letter list, received, acknowledged: done.
    let (s, v) = h.post(&format!("/messages/{mid}/retry"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let third = receive(&h, &id, &token, 2.0).await;
    assert_eq!(third[0]["id"], json!(mid));
    let v = ack(&h, &id, &token, &[&mid]).await;
    assert_eq!(v["updated"], json!([mid]));
    let (_, stored) = h.get(&format!("/messages/{mid}")).await;
    assert_eq!(stored["status"], "acked");
    // A message that is not dead cannot be retried.
    let (s, v) = h.post(&format!("/messages/{mid}/retry"), json!({})).await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    // The agent's history shows it, received.
    let (_, history) = h
        .call_as(
            &token,
            Method::GET,
            &format!("/agents/{id}/messages?direction=in"),
            None,
        )
        .await;
    assert_eq!(history["items"][0]["id"], json!(mid));
}

async fn a_message_past_its_ttl_is_dead(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "ttl", "mesh", 1).await;
    let (_, id, token) = agents[0].clone();
    let admin = h.server.admin_token.clone();
    let (_, m) = send(
        &h,
        &admin,
        &id,
        json!({"body": {"t": "stale"}, "ttl_ms": 150}),
    )
    .await;
    let mid = m["id"].as_str().unwrap().to_owned();
    let stored = eventually("expiry", Duration::from_secs(5), || async {
        let (_, v) = h.get(&format!("/messages/{mid}")).await;
        (v["status"] == "dead").then_some(v)
    })
    .await;
    assert_eq!(stored["dead_reason"], "expired");
    assert!(receive(&h, &id, &token, 0.0).await.is_empty());
}

async fn topics_reach_their_wildcard_subscribers(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "topics", "mesh", 4).await;
    let subs = [
        json!(["*"]),
        json!(["tasks.*"]),
        json!(["health"]),
        json!([]),
    ];
    for ((_, id, token), topics) in agents.iter().zip(subs) {
        let (s, v) = h
            .call_as(
                token,
                Method::PUT,
                &format!("/agents/{id}/subscriptions"),
                Some(json!({"topics": topics})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = h
        .call_as(
            &agents[3].2,
            Method::PUT,
            &format!("/agents/{}/subscriptions", agents[3].1),
            Some(json!({"topics": ["ta*sks"]})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, sent) = h
        .post(
            "/swarms/topics/topics/tasks.review.done",
            json!({"body": {"t": "done"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
    h.post("/swarms/topics/topics/health", json!({"body": {"t": "ok"}}))
        .await;
    let got: Vec<Vec<String>> = {
        let mut out = Vec::new();
        for (_, id, token) in &agents {
            let mut t: Vec<String> = receive(&h, id, token, 0.0)
                .await
                .iter()
                .map(|m| m["topic"].as_str().unwrap().to_owned())
                .collect();
            t.sort();
            out.push(t);
        }
        out
    };
    assert_eq!(
        got,
        vec![
            vec!["health".to_owned(), "tasks.review.done".to_owned()],
            vec!["tasks.review.done".to_owned()],
            vec!["health".to_owned()],
            vec![],
        ]
    );
    let (s, v) = h.post("/swarms/topics/topics/bad topic", json!({})).await;
    assert!(s.is_client_error(), "{s} {v}");
}

async fn a_request_gets_its_response_or_times_out(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "rpc", "mesh", 2).await;
    let (_, asker, asker_token) = agents[0].clone();
    let (_, answerer, answerer_token) = agents[1].clone();
    // The answerer serves one request in the background.
    let url = h.url("");
    let http = h.http.clone();
    let (answerer2, token2) = (answerer.clone(), answerer_token.clone());
    let server = tokio::spawn(async move {
        let got: Value = http
            .get(format!("{url}/agents/{answerer2}/messages/next?wait=10"))
            .bearer_auth(&token2)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let req = &got[0];
        assert_eq!(req["kind"], "request");
        let q = req["body"]["q"].as_i64().unwrap();
        let resp = http
            .post(format!(
                "{url}/agents/{}/messages",
                req["from"].as_str().unwrap()
            ))
            .bearer_auth(&token2)
            .json(&json!({"kind": "response", "correlation_id": req["id"], "body": {"a": q * 2}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    });
    let (s, exchange) = h
        .call_as(
            &asker_token,
            Method::POST,
            &format!("/agents/{answerer}/messages?wait=true"),
            Some(json!({"kind": "request", "body": {"q": 21}, "timeout_ms": 5000})),
        )
        .await;
    server.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{exchange}");
    assert_eq!(exchange["response"]["body"]["a"], 42);
    assert_eq!(
        exchange["response"]["correlation_id"],
        exchange["request"]["id"]
    );
    // The waiting asker got its answer over HTTP; it is not in its inbox again.
    assert!(receive(&h, &asker, &asker_token, 0.0).await.is_empty());
    let (_, req) = h
        .get(&format!(
            "/messages/{}",
            exchange["request"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(req["reply"], "answered");

    // Nobody answers: 504 after the timeout, and the asker's inbox has the timeout response.
    let started = Instant::now();
    let (s, v) = h
        .call_as(
            &asker_token,
            Method::POST,
            &format!("/agents/{answerer}/messages?wait=true"),
            Some(json!({"kind": "request", "body": {"q": 1}, "timeout_ms": 400})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::GATEWAY_TIMEOUT, "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // wait is for requests only.
    let (s, v) = h
        .call_as(
            &asker_token,
            Method::POST,
            &format!("/agents/{answerer}/messages?wait=true"),
            Some(json!({"body": {}})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
}

async fn the_topology_refuses_a_worker_to_worker_send(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "star", "star", 3).await;
    let (boss_name, boss, _) = agents[0].clone();
    let (_, w1, w1_token) = agents[1].clone();
    let (_, w2, _) = agents[2].clone();
    let (_, topo) = h.get("/swarms/star/topology").await;
    assert_eq!(topo["leader"], json!(boss), "{topo}");
    let (s, v) = send(&h, &w1_token, &boss, json!({"body": {"t": "report"}})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = send(&h, &w1_token, &w2, json!({"body": {"t": "psst"}})).await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let why = v["error"]["message"].as_str().unwrap();
    assert!(why.contains("star") && why.contains("star-a1"), "{why}");
    // A worker's broadcast reaches its coordinator only.
    let (s, v) = h
        .call_as(
            &w1_token,
            Method::PUT,
            &format!("/agents/{w1}/messages"),
            Some(json!({"body": {"t": "hello"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["messages"][0]["to"], json!(boss));
    assert_eq!(v["unreachable"], 1);
    let _ = boss_name;
}

async fn the_websocket_pushes_messages_and_takes_acks(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "ws", "mesh", 1).await;
    let (_, id, token) = agents[0].clone();
    let admin = h.server.admin_token.clone();
    send(&h, &admin, &id, json!({"body": {"t": "before"}})).await;
    let url = format!(
        "ws://{}/api/v1/agents/{id}/messages/ws?max_in_flight=10",
        h.server.addr
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    let mut next_frame = async || -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("frame");
            if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    };
    let first = next_frame().await;
    assert_eq!(first["type"], "messages", "{first}");
    assert_eq!(texts(first["messages"].as_array().unwrap()), ["before"]);
    // A message sent while connected is pushed at once.
    send(
        &h,
        &admin,
        &id,
        json!({"body": {"t": "live"}, "priority": "high"}),
    )
    .await;
    let second = next_frame().await;
    assert_eq!(texts(second["messages"].as_array().unwrap()), ["live"]);
    let ids = [
        first["messages"][0]["id"].clone(),
        second["messages"][0]["id"].clone(),
    ];
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"ack": ids}).to_string().into(),
    ))
    .await
    .unwrap();
    let updated = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
            break serde_json::from_str::<Value>(t.as_str()).unwrap();
        }
    };
    assert_eq!(updated["type"], "updated");
    assert_eq!(updated["ids"].as_array().unwrap().len(), 2);
    for id in &ids {
        let (_, m) = h.get(&format!("/messages/{}", id.as_str().unwrap())).await;
        assert_eq!(m["status"], "acked");
    }
    // Another agent's token may not open this socket.
    let other = h.register("ws", json!({"name": "intruder"})).await;
    let url = format!("ws://{}/api/v1/agents/{id}/messages/ws", h.server.addr);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", other.1).parse().unwrap(),
    );
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(refused.is_err(), "another agent opened the socket");
}

async fn the_size_limit_refuses_and_the_audit_log_records_without_bodies(bus: String) {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("messages.audit.jsonl");
    let audit2 = audit.clone();
    let h = Harness::start_with(dir, move |c| {
        c.bus = bus;
        c.message_max_bytes = 1024;
        c.message_audit = Some(audit2);
    })
    .await;
    let agents = swarm(&h, "limits", "mesh", 1).await;
    let (_, id, token) = agents[0].clone();
    let admin = h.server.admin_token.clone();
    let big = "x".repeat(2000);
    let (s, v) = send(&h, &admin, &id, json!({"body": {"t": big}})).await;
    Harness::assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(
        receive(&h, &id, &token, 0.0).await.is_empty(),
        "nothing was sent"
    );
    let (_, m) = send(&h, &admin, &id, json!({"body": {"t": "secret-words"}})).await;
    let got = receive(&h, &id, &token, 0.0).await;
    ack(&h, &id, &token, &[got[0]["id"].as_str().unwrap()]).await;
    let log = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(lines[0]["action"], "send");
    assert_eq!(lines[0]["id"], m["id"]);
    assert_eq!(lines[1]["action"], "ack");
    assert!(
        !log.contains("secret-words"),
        "bodies never reach the audit log"
    );
    assert!(!log.contains(&admin), "tokens never reach the audit log");
}

async fn the_stream_shows_traffic_live(bus: String) {
    let h = start(&bus).await;
    let agents = swarm(&h, "tail", "mesh", 2).await;
    let resp = h
        .http
        .get(h.url("/swarms/tail/messages/stream?topic=news.*"))
        .bearer_auth(&h.server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = resp;
    // Give the stream's subscription a moment, then publish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (_, id, token) in &agents {
        h.call_as(
            token,
            Method::PUT,
            &format!("/agents/{id}/subscriptions"),
            Some(json!({"topics": ["news.*", "other"]})),
        )
        .await;
    }
    h.post(
        "/swarms/tail/topics/other",
        json!({"body": {"t": "filtered out"}}),
    )
    .await;
    h.post(
        "/swarms/tail/topics/news.today",
        json!({"body": {"t": "extra"}}),
    )
    .await;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while text.matches("event: message").count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("stream data in time")
            .unwrap()
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"extra\""), "{text}");
    assert!(!text.contains("filtered out"), "{text}");
}

async fn no_message_is_lost_across_a_coordinator_restart(bus: String) {
    let h = start(&bus).await;
    let slow = json!({"ack_timeout_ms": 60000, "max_deliveries": 5});
    let agents = swarm_with(&h, "durable", "mesh", 2, slow).await;
    let (_, id, token) = agents[0].clone();
    let admin = h.server.admin_token.clone();
    let mut sent = Vec::new();
    for i in 0..5 {
        let (_, m) = send(&h, &admin, &id, json!({"body": {"t": format!("m{i}")}})).await;
        sent.push(m["id"].as_str().unwrap().to_owned());
    }
    // Two taken, one of them acknowledged; three never taken.
    let got = receive(&h, &id, &token, 0.0).await;
    assert_eq!(got.len(), 5);
    ack(&h, &id, &token, &[&sent[0]]).await;
    let Harness { server, dir, .. } = h;
    server.shutdown().await.unwrap();
    let h = start_in(dir, &bus).await;
    let again = receive(&h, &id, &token, 0.0).await;
    let ids: Vec<String> = again
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        sent[1..].to_vec(),
        "every unacknowledged message, in order"
    );
    assert!(again.iter().all(|m| m["deliveries"] == 2));
    let (_, first) = h.get(&format!("/messages/{}", sent[0])).await;
    assert_eq!(first["status"], "acked");
}

/// Redis goes away and comes back: sends are still accepted and stored, receives still get
/// their messages (they look at the inbox on their own while the bus is down), nothing is lost,
/// and wake-ups travel through Redis again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_delays_wake_ups_and_loses_nothing() {
    let Some(mut redis) =
        common::OwnRedis::start("a_redis_outage_delays_wake_ups_and_loses_nothing")
    else {
        return;
    };
    let h = start(&redis.url()).await;
    let agents = swarm(&h, "outage", "mesh", 1).await;
    let (_, id, token) = agents[0].clone();
    let admin = h.server.admin_token.clone();
    redis.kill();
    // A receive waiting while Redis is down still gets a message sent meanwhile.
    let url = h.url(&format!("/agents/{id}/messages/next?wait=10"));
    let (http, t) = (h.http.clone(), token.clone());
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let v: Value = http
            .get(url)
            .bearer_auth(t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, m) = send(&h, &admin, &id, json!({"body": {"t": "during"}})).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "a send is accepted with the bus down: {m}"
    );
    let (got, took) = poll.await.unwrap();
    assert_eq!(texts(got.as_array().unwrap()), ["during"]);
    assert!(
        took < Duration::from_secs(3),
        "found by looking, not at the 10 s wait: {took:?}"
    );
    ack(&h, &id, &token, &[m["id"].as_str().unwrap()]).await;
    // Redis is back: a long poll is woken through it again.
    redis.restart();
    let bus = h.server.state.bus.bus().clone();
    eventually("the bus reconnects", Duration::from_secs(10), || {
        let bus = bus.clone();
        async move { bus.stats().reconnects.ge(&1).then_some(()) }
    })
    .await;
    let url = h.url(&format!("/agents/{id}/messages/next?wait=10"));
    let (http, t) = (h.http.clone(), token.clone());
    let poll = tokio::spawn(async move {
        let v: Value = http
            .get(url)
            .bearer_auth(t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&h, &admin, &id, json!({"body": {"t": "after"}})).await;
    let got = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("woken in time")
        .unwrap();
    assert_eq!(texts(got.as_array().unwrap()), ["after"]);
    let (_, history) = h
        .call_as(
            &token,
            Method::GET,
            &format!("/agents/{id}/messages?direction=in"),
            None,
        )
        .await;
    assert_eq!(
        history["items"].as_array().unwrap().len(),
        2,
        "nothing lost: {history}"
    );
}
