//! Alert webhooks against small receivers on loopback (axum on 127.0.0.1:0): a real alert (an
//! agent whose lease lapses is `alert_critical`) reaches a receiver that records it, once and as
//! JSON; a receiver that redirects is not followed (its target never hears of it) and not
//! retried; one that hangs is given up after the timeout and retried a bounded number of times;
//! one that answers 503 is retried; the coordinator answers meanwhile. URLs that are not http
//! or https stop the start.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::post;
use common::{Harness, eventually};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// What a receiver was sent, per path.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Value)>>>);

impl Received {
    fn on(&self, path: &str) -> Vec<Value> {
        self.0
            .lock()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A receiver on 127.0.0.1:0: `/ok` records and answers 204, `/redirect` answers 307 to
/// `/target` (which records), `/hang` records and never answers, `/busy` records and answers 503.
async fn receiver() -> (String, Received) {
    let got = Received::default();
    let record = |path: &'static str, got: Received| {
        move |body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                got.0.lock().push((path.to_owned(), json));
            }
        }
    };
    let ok = record("/ok", got.clone());
    let target = record("/target", got.clone());
    let hang = record("/hang", got.clone());
    let busy = record("/busy", got.clone());
    let redirected = record("/redirect", got.clone());
    let app = Router::new()
        .route(
            "/ok",
            post(move |b| async move {
                ok(b).await;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/target",
            post(move |b| async move {
                target(b).await;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/redirect",
            post(move |b| async move {
                redirected(b).await;
                Redirect::temporary("/target").into_response()
            }),
        )
        .route(
            "/hang",
            post(move |b| async move {
                hang(b).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/busy",
            post(move |b| async move {
                busy(b).await;
                StatusCode::SERVICE_UNAVAILABLE
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_posted_once_redirects_are_not_followed_and_hangs_time_out() {
    let (base, got) = receiver().await;
    let urls: Vec<String> = ["/ok", "/redirect", "/hang", "/busy"]
        .iter()
        .map(|p| format!("{base}{p}"))
        .collect();
    let h = Harness::start_with(tempfile::tempdir().unwrap(), |c| {
        c.alert_webhooks.urls = urls;
        c.alert_webhooks.timeout = Duration::from_millis(500);
        c.alert_webhooks.connect_timeout = Duration::from_millis(500);
        c.alert_webhooks.attempts = 3;
        c.alert_webhooks.backoff = Duration::from_millis(100);
    })
    .await;

    // A real alert: an agent whose lease lapses (heartbeats every 200 ms, 2 missed) goes down.
    let (s, v) = h
        .post(
            "/swarms",
            json!({"name": "hooked", "config": {"heartbeat_interval_ms": 200, "heartbeat_miss_limit": 2}}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    let (agent_id, _token) = h
        .register("hooked", json!({"type": "coder", "name": "silent-1"}))
        .await;
    let started = Instant::now();

    let delivered = eventually("the alert at /ok", Duration::from_secs(20), || async {
        let seen = got.on("/ok");
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    let alert = &delivered[0];
    assert_eq!(alert["level"], "critical", "{alert:#}");
    assert_eq!(alert["swarm"], "hooked", "{alert:#}");
    assert_eq!(alert["agent"], "silent-1", "{alert:#}");
    assert_eq!(alert["event"]["type"], "alert_critical", "{alert:#}");
    assert_eq!(alert["event"]["agent_id"], agent_id.as_str(), "{alert:#}");

    // The same alert is what GET /alerts lists.
    let (_, listed) = h.get("/alerts?swarm=hooked").await;
    assert_eq!(
        listed["items"][0]["seq"], alert["event"]["seq"],
        "{listed:#}"
    );

    // The coordinator answers while the hanging receiver holds its delivery.
    let asked = Instant::now();
    let (s, _) = h.get("/swarms/hooked").await;
    assert_eq!(s, reqwest::StatusCode::OK);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // Hang: 3 attempts of 500 ms each (plus backoff), then given up; busy: 3 attempts too.
    eventually(
        "the hang and busy given up",
        Duration::from_secs(20),
        || async {
            let c = h.server.webhooks.counts();
            (c.failed >= 3).then_some(())
        },
    )
    .await;
    assert_eq!(got.on("/hang").len(), 3, "bounded retries of a hang");
    assert_eq!(got.on("/busy").len(), 3, "bounded retries of a 503");
    // Redirect: one attempt, not followed, not retried.
    assert_eq!(got.on("/redirect").len(), 1);
    assert!(got.on("/target").is_empty(), "a redirect was followed");
    // Delivered once, no more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(got.on("/ok").len(), 1);
    let counts = h.server.webhooks.counts();
    assert_eq!(counts.delivered, 1, "{counts:?}");
    assert_eq!(counts.failed, 3, "{counts:?}");
    assert_eq!(counts.dropped, 0, "{counts:?}");
    assert_eq!(counts.attempts, 1 + 1 + 3 + 3, "{counts:?}");
    println!(
        "alert raised and delivered {:?} after the agent registered; hang given up in 3 × 500 ms",
        started.elapsed()
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_other_than_http_and_https_stop_the_start() {
    for bad in [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "127.0.0.1:9/x",
        "unix:/tmp/s",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = common::config(dir.path());
        c.alert_webhooks.urls = vec![bad.to_owned()];
        let err = match flotilla_server::start(c).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started with webhook {bad}"),
        };
        assert!(err.starts_with("--alert-webhook"), "{bad}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
