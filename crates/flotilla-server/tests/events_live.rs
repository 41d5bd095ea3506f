//! The event log, live (`/events/stream` over server-sent events, `/events/ws` over a
//! WebSocket), on both bus backends: replay then follow, filters, resuming with
//! `Last-Event-ID`, and no event missing or repeated under a burst.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::Harness;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends!(
    the_stream_replays_then_follows_and_resumes,
    no_event_is_missing_or_repeated_under_a_burst,
    the_stream_keeps_log_order_across_channels,
    the_websocket_follows_the_log,
);

async fn start(bus: &str) -> Harness {
    let bus = bus.to_owned();
    Harness::start_with(tempfile::tempdir().unwrap(), move |c| c.bus = bus).await
}

/// Reads server-sent events from a response until `until` holds for the events so far.
async fn read_sse(
    resp: &mut reqwest::Response,
    within: Duration,
    until: impl Fn(&[(u64, Value)]) -> bool,
) -> Vec<(u64, Value)> {
    let deadline = Instant::now() + within;
    let mut buf = String::new();
    let mut out: Vec<(u64, Value)> = Vec::new();
    while !until(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("stream data in time; got {} events", out.len()))
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf[..end].to_owned();
            buf.drain(..end + 2);
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

async fn open(h: &Harness, query: &str, last_event_id: Option<u64>) -> reqwest::Response {
    let mut req = h
        .http
        .get(h.url(&format!("/events/stream?{query}")))
        .bearer_auth(&h.server.admin_token);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp
}

async fn the_stream_replays_then_follows_and_resumes(bus: String) {
    let h = start(&bus).await;
    let (s, _) = h.post("/swarms", json!({"name": "live"})).await;
    assert_eq!(s, StatusCode::CREATED);
    h.register("live", json!({"name": "a1"})).await;
    // Replay: what happened before the stream was opened.
    let mut resp = open(&h, "swarm=live", None).await;
    let got = read_sse(&mut resp, Duration::from_secs(5), |ev| {
        ev.iter().any(|(_, e)| e["type"] == "agent_joined")
    })
    .await;
    assert_eq!(got[0].1["type"], "swarm_created");
    // Follow: a task submitted now arrives live.
    let t = h.submit("live", json!({"type": "x"})).await;
    let started = Instant::now();
    let got = read_sse(&mut resp, Duration::from_secs(5), |ev| {
        ev.iter().any(|(_, e)| e["type"] == "task_submitted")
    })
    .await;
    let submitted = got
        .iter()
        .find(|(_, e)| e["type"] == "task_submitted")
        .unwrap();
    assert_eq!(submitted.1["task_id"], t["id"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Resume after the last seen: only newer events; a type filter holds.
    let last = submitted.0;
    drop(resp);
    h.submit("live", json!({"type": "y"})).await;
    let mut resp = open(&h, "swarm=live&type=task_submitted", Some(last)).await;
    let got = read_sse(&mut resp, Duration::from_secs(5), |ev| !ev.is_empty()).await;
    assert!(
        got.iter()
            .all(|(seq, e)| *seq > last && e["type"] == "task_submitted"),
        "{got:?}"
    );
    // Another swarm's events are not in this stream.
    let (_, other) = h.post("/swarms", json!({"name": "other"})).await;
    assert!(other["id"].is_string());
    h.submit("other", json!({"type": "z"})).await;
    h.submit("live", json!({"type": "w"})).await;
    let got = read_sse(&mut resp, Duration::from_secs(5), |ev| {
        ev.iter()
            .any(|(_, e)| e["detail"].as_str().is_some_and(|d| d.starts_with("w ")))
    })
    .await;
    assert!(
        got.iter().all(|(_, e)| e["swarm_id"] != other["id"]),
        "{got:?}"
    );
    // A bad filter is a 400.
    let resp = h
        .http
        .get(h.url("/events/stream?type=nonsense"))
        .bearer_auth(&h.server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

async fn no_event_is_missing_or_repeated_under_a_burst(bus: String) {
    let h = start(&bus).await;
    let mut resp = open(&h, "", None).await;
    // 300 tasks in 30 batches while the stream follows.
    for b in 0..30 {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"type": format!("t{b}-{i}")}))
            .collect();
        let (s, v) = h.post("/swarms/default/tasks", Value::Array(batch)).await;
        assert!(s.is_success(), "{v}");
    }
    let (_, page) = h.get("/events?limit=1000").await;
    let expected: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let last = *expected.last().unwrap();
    let got = read_sse(&mut resp, Duration::from_secs(10), |ev| {
        ev.last().is_some_and(|(seq, _)| *seq >= last)
    })
    .await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs, expected,
        "the stream equals the log, in order, once each"
    );
}

/// One command's events go out on several channels (an agent joining is on `:registry`, the
/// election it starts on `:fleet`, a task it takes on `:allocation`), which the bus may deliver
/// in any order; the stream still equals the log.
async fn the_stream_keeps_log_order_across_channels(bus: String) {
    let h = start(&bus).await;
    let mut resp = open(&h, "", None).await;
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": "mix", "topology": "hierarchical"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for i in 0..3 {
        h.submit("mix", json!({"type": format!("t{i}")})).await;
    }
    for i in 0..3 {
        let (agent, token) = h.register("mix", json!({"name": format!("a{i}")})).await;
        let task = h.next(&agent, &token, 1.0).await.expect("a task");
        assert!(task["id"].is_string(), "{task}");
    }
    let (_, page) = h.get("/events?limit=1000").await;
    let expected: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let last = *expected.last().unwrap();
    let got = read_sse(&mut resp, Duration::from_secs(10), |ev| {
        ev.last().is_some_and(|(seq, _)| *seq >= last)
    })
    .await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs, expected,
        "the stream equals the log, in order, once each"
    );
}

async fn the_websocket_follows_the_log(bus: String) {
    let h = start(&bus).await;
    let url = format!(
        "ws://{}/api/v1/events/ws?type=task_submitted",
        h.server.addr
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", h.server.admin_token).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    let t = h.submit("default", json!({"type": "over-ws"})).await;
    let frame = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            break serde_json::from_str::<Value>(t.as_str()).unwrap();
        }
    };
    assert_eq!(frame["type"], "events");
    assert_eq!(frame["events"][0]["type"], "task_submitted");
    assert_eq!(frame["events"][0]["task_id"], t["id"]);
    // An agent token may not follow the log.
    let (_, token) = h.register("default", json!({"name": "nosy"})).await;
    let url = format!("ws://{}/api/v1/events/ws", h.server.addr);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}
