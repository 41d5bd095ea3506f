//! Request ids and the JSON log of a real `flotilla serve --log-format json`: every answer
//! carries an `x-request-id` (the caller's, or a fresh UUID v7), error bodies carry it too, and
//! every line the process writes is JSON, with one access line per request naming its id.

mod common;

use std::time::{Duration, Instant};

use common::ServeProcess;
use serde_json::Value;

/// A `flotilla serve --log-format json` process.
struct Coordinator(ServeProcess);

impl std::ops::Deref for Coordinator {
    type Target = ServeProcess;
    fn deref(&self) -> &ServeProcess {
        &self.0
    }
}

impl Coordinator {
    async fn start() -> Coordinator {
        Coordinator(
            ServeProcess::start(|cmd| {
                cmd.args(["--log-format", "json"])
                    .env_remove("RUST_LOG")
                    .env_remove("FLOTILLA_LOG_FORMAT");
            })
            .await,
        )
    }

    /// Every line written so far, stdout's then stderr's, each parsed as JSON (panics on one
    /// that is not).
    fn json_lines(&self) -> Vec<Value> {
        let out = self.stdout.lock().clone();
        let err = self.stderr.lock().clone();
        out.iter()
            .chain(err.iter())
            .map(|line| {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
            })
            .collect()
    }

    /// The access line of request `id`, waiting for it up to 10 s.
    async fn access_line(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let lines = self.json_lines();
            if let Some(line) = lines
                .iter()
                .find(|l| l["target"] == "flotilla::access" && l["request_id"] == id)
            {
                return line.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no access line for request {id}; lines: {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `GET url` as the admin, with `x-request-id: id` when given: status, the answered id, body.
async fn get(c: &Coordinator, path: &str, id: Option<&str>, auth: bool) -> (u16, String, Value) {
    let http = reqwest::Client::new();
    let mut req = http.get(format!("{}{path}", c.url));
    if auth {
        req = req.bearer_auth(&c.token);
    }
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    let res = req.send().await.expect("the coordinator answers");
    let status = res.status().as_u16();
    let answered = res
        .headers()
        .get("x-request-id")
        .expect("every answer carries x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, answered, body)
}

fn is_uuid_v7(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok_and(|u| u.get_version_num() == 7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_ids_into_answers_errors_and_json_logs() {
    let c = Coordinator::start().await;

    // The caller's id comes back.
    let (status, id, body) = get(&c, "/api/v1/swarms", Some("e2e-list-0001"), true).await;
    assert_eq!((status, id.as_str()), (200, "e2e-list-0001"), "{body}");

    // A bad request: 400, with a fresh id in the header and in the error body.
    let (status, fresh, body) = get(&c, "/api/v1/tasks?limit=0", None, true).await;
    assert_eq!(status, 400, "{body}");
    assert!(is_uuid_v7(&fresh), "{fresh}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(body["error"]["request_id"], fresh.as_str(), "{body}");

    // An unknown swarm with the caller's id: 404 naming it.
    let (status, id, body) = get(&c, "/api/v1/swarms/nope", Some("e2e-missing-2"), true).await;
    assert_eq!((status, id.as_str()), (404, "e2e-missing-2"), "{body}");
    assert_eq!(body["error"]["request_id"], "e2e-missing-2", "{body}");

    // No token: refused before any handler, still with the id.
    let (status, id, body) = get(&c, "/api/v1/swarms", Some("e2e-no-token"), false).await;
    assert_eq!((status, id.as_str()), (401, "e2e-no-token"), "{body}");
    assert_eq!(body["error"]["request_id"], "e2e-no-token", "{body}");

    // An id that could forge a log line (too long, or with spaces) is replaced.
    let long = "x".repeat(129);
    let (_, id, _) = get(&c, "/api/v1/swarms", Some(&long), true).await;
    assert!(is_uuid_v7(&id), "{id}");
    let (_, spaced, _) = get(&c, "/api/v1/swarms", Some("a b"), true).await;
    assert!(is_uuid_v7(&spaced), "{spaced}");

    // One access line per request, with what happened, inside the request's span.
    for (id, path, status) in [
        ("e2e-list-0001", "/api/v1/swarms", 200),
        (fresh.as_str(), "/api/v1/tasks", 400),
        ("e2e-missing-2", "/api/v1/swarms/nope", 404),
        ("e2e-no-token", "/api/v1/swarms", 401),
        (spaced.as_str(), "/api/v1/swarms", 200),
    ] {
        let line = c.access_line(id).await;
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["path"], path, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert!(
            line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{line}"
        );
        assert!(line["timestamp"].is_string(), "{line}");
        let spans = line["spans"].as_array().expect("the spans it ran in");
        assert_eq!(spans[0]["name"], "request", "{line}");
        assert_eq!(spans[0]["request_id"], id, "{line}");
    }
    let lines = c.json_lines();
    let access = lines
        .iter()
        .filter(|l| l["target"] == "flotilla::access" && l["path"] != "/healthz")
        .count();
    assert_eq!(access, 6, "one access line per API request: {lines:#?}");
    // Startup went to the log as JSON too, stdout included.
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "flotilla coordinator listening"
                && l["url"] == c.url.as_str()),
        "{lines:#?}"
    );
}
