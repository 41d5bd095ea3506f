//! Hostile input, by hand, against a real coordinator: bodies over the limit, nesting deep
//! enough to overflow a recursive parser, invalid UTF-8 in bodies and paths, path traversal in
//! names and working directories, out-of-range and overflowing numbers, NaN and Infinity, huge
//! strings, unknown fields; and shell metacharacters in payloads reaching an exec agent's argv
//! verbatim. Each is refused with its exact status and a JSON error body (or, for the payloads,
//! arrives untouched), and afterwards the coordinator still answers and has lost nothing it had
//! accepted. `scripts/hostile.sh` fuzzes the same API from its OpenAPI document.

mod common;

use std::time::Duration;

use common::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// Sends `body` as it is, with `content_type`, and the admin token.
async fn send_bytes(
    h: &Harness,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = h
        .http
        .request(method, h.url(path))
        .bearer_auth(&h.server.admin_token)
        .header("content-type", content_type)
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Sends raw bytes on a fresh connection (for what no HTTP client would send) and reads the
/// answer until the server closes: (status, body as JSON, or as a string when it is not).
async fn raw_http(h: &Harness, head: &[u8], body_chunks: Vec<Vec<u8>>) -> (u16, Value) {
    let addr = h.server.url().trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(head).await.unwrap();
    // The server may answer and close before it has read everything: that is its right.
    for chunk in body_chunks {
        if conn.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The answer is `want` with a JSON error body of `code`, naming its request.
#[track_caller]
fn refused(case: &str, (status, body): (StatusCode, Value), want: StatusCode, code: &str) {
    assert_eq!(status, want, "{case}: {body}");
    assert_eq!(body["error"]["code"], code, "{case}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
    assert!(
        body["error"]["request_id"].is_string(),
        "{case}: no request id in {body}"
    );
}

#[track_caller]
fn bad(case: &str, answer: (StatusCode, Value)) {
    refused(case, answer, StatusCode::BAD_REQUEST, "invalid_request");
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// What the coordinator holds, to compare before and after the onslaught.
async fn holdings(h: &Harness, tasks: &[String]) -> Value {
    let (s, swarms) = h.get("/swarms?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{swarms}");
    let names: Vec<Value> = swarms["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    let (s, agents) = h.get("/swarms/default/agents?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{agents}");
    let agents: Vec<Value> = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!([a["id"], a["name"]]))
        .collect();
    let (s, found) = h.post("/tasks/lookup", json!({ "ids": tasks })).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    let mut tasks: Vec<Value> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["id"], t["status"], t["payload"], t["priority"]]))
        .collect();
    tasks.sort_by_key(|t| t[0].as_str().unwrap().to_owned());
    assert_eq!(found["missing"], json!([]));
    json!({ "swarms": names, "agents": agents, "tasks": tasks })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_with_json_errors_and_nothing_is_lost() {
    let h = Harness::start().await;
    let (s, v) = h.post("/swarms", json!({"name": "kept"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (agent, _) = h
        .register(
            "default",
            json!({"name": "steady", "capabilities": ["none"]}),
        )
        .await;
    let mut tasks = Vec::new();
    for (swarm, priority) in [("default", 3), ("kept", 9), ("default", 5)] {
        let t = h
            .submit(
                swarm,
                json!({"type": "keep", "priority": priority, "payload": {"n": priority}, "required_capabilities": ["nobody"]}),
            )
            .await;
        tasks.push(t["id"].as_str().unwrap().to_owned());
    }
    let before = holdings(&h, &tasks).await;
    let task = tasks[0].clone();

    // --- Bodies over the limit (8 MiB), and payloads over theirs (1 MiB).
    let huge = format!("[{{\"payload\": \"{}\"}}]", "x".repeat(9 * MIB));
    refused(
        "a 9 MiB body",
        send_bytes(
            &h,
            Method::POST,
            "/swarms/default/tasks",
            "application/json",
            huge.into_bytes(),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let token = h.server.admin_token.clone();
    let head = format!(
        "POST /api/v1/swarms/default/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let chunk = format!("{:x}\r\n{}\r\n", MIB, "x".repeat(MIB)).into_bytes();
    let (status, body) = raw_http(&h, head.as_bytes(), vec![chunk; 10]).await;
    refused(
        "a chunked body past 8 MiB",
        (StatusCode::from_u16(status).unwrap(), body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let big_payload = json!({"type": "big", "payload": {"blob": "y".repeat(MIB + 10)}});
    refused(
        "a 1 MiB payload",
        h.post("/swarms/default/tasks", big_payload).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    refused(
        "an agent state over the payload limit",
        h.call(
            Method::PUT,
            &format!("/agents/{agent}/state"),
            Some(json!({"blob": "z".repeat(2 * MIB)})),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // --- Nesting: 100,000 levels, balanced or not, where a recursive parser would overflow.
    let deep = 100_000;
    for (case, path, method, body) in [
        (
            "unbalanced [ as a task",
            "/swarms/default/tasks",
            Method::POST,
            "[".repeat(deep),
        ),
        (
            "a nested task payload",
            "/swarms/default/tasks",
            Method::POST,
            format!("{{\"payload\": {}}}", nested(deep)),
        ),
        (
            "a nested batch",
            "/swarms/default/tasks",
            Method::POST,
            nested(deep),
        ),
        (
            "nested objects as a swarm",
            "/swarms",
            Method::POST,
            format!("{}1{}", "{\"a\":".repeat(deep), "}".repeat(deep)),
        ),
        (
            "a nested agent state",
            &format!("/agents/{agent}/state"),
            Method::PUT,
            nested(deep),
        ),
        (
            "a nested heartbeat",
            &format!("/agents/{agent}/heartbeat"),
            Method::POST,
            nested(deep),
        ),
        (
            "a nested message body",
            &format!("/agents/{agent}/messages"),
            Method::POST,
            format!("{{\"body\": {}}}", nested(deep)),
        ),
        (
            "a nested completion",
            &format!("/tasks/{task}/complete"),
            Method::POST,
            format!("{{\"result\": {}}}", nested(deep)),
        ),
    ] {
        bad(
            case,
            send_bytes(&h, method, path, "application/json", body.into_bytes()).await,
        );
    }

    // --- Invalid UTF-8: in bodies, percent-encoded in path segments and queries, raw.
    bad(
        "invalid UTF-8 in a name",
        send_bytes(
            &h,
            Method::POST,
            "/swarms",
            "application/json",
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
        )
        .await,
    );
    bad(
        "invalid UTF-8 in a payload",
        send_bytes(
            &h,
            Method::POST,
            "/swarms/default/tasks",
            "application/json",
            b"{\"payload\": \"a\xc0\xafb\"}".to_vec(),
        )
        .await,
    );
    bad(
        "an unpaired surrogate escape",
        send_bytes(
            &h,
            Method::POST,
            "/swarms",
            "application/json",
            br#"{"name": "\ud800"}"#.to_vec(),
        )
        .await,
    );
    bad(
        "invalid UTF-8 in a swarm segment",
        h.get("/swarms/%FF%FE").await,
    );
    bad(
        "an overlong '/' in an agent segment",
        h.get("/agents/%C0%AF/status").await,
    );
    bad(
        "invalid UTF-8 in a pool segment",
        h.get("/swarms/default/pools/%ED%A0%80").await,
    );
    bad("invalid UTF-8 in a query", h.get("/tasks?status=%FF").await);
    let head = format!(
        "GET /api/v1/swarms/~ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut head = head.into_bytes();
    let at = head.iter().position(|&b| b == b'~').unwrap();
    head[at] = 0xff; // a raw byte that is not UTF-8, not percent-encoded
    // hyper refuses a request line it cannot parse before any of our code runs: a bare 400
    // (and a line past its buffer, 431), without a body to make JSON of. Nothing is routed.
    let (status, body) = raw_http(&h, &head, vec![]).await;
    assert_eq!(status, 400, "a raw 0xff byte in the request line: {body}");
    assert_eq!(body, json!(""), "hyper's own refusal has no body");
    let head = format!(
        "GET /api/v1/swarms/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "n".repeat(MIB)
    );
    let (status, body) = raw_http(&h, head.as_bytes(), vec![]).await;
    assert_eq!(status, 431, "a 1 MiB request line: {body}");

    // --- Path traversal: in names, in path segments, in a template's working directory.
    bad(
        "a swarm named ../../etc",
        h.post("/swarms", json!({"name": "../../etc"})).await,
    );
    bad(
        "a pool named ../../etc",
        h.call(
            Method::PUT,
            "/swarms/default/pools/..%2F..%2Fetc",
            Some(json!({"min_agents": 0})),
        )
        .await,
    );
    bad(
        "an agent named ../x",
        h.post("/swarms/default/agents", json!({"name": "../x"}))
            .await,
    );
    bad(
        "an agent type ../x",
        h.post("/swarms/default/agents", json!({"type": "../x"}))
            .await,
    );
    refused(
        "a swarm segment ..%2F..%2Fetc",
        h.get("/swarms/..%2F..%2Fetc").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let head = format!(
        "GET /api/v1/swarms/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw_http(&h, head.as_bytes(), vec![]).await;
    refused(
        "../ segments in the request line",
        (StatusCode::from_u16(status).unwrap(), body),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for workdir in [
        "../../etc",
        "/tmp/../etc",
        "",
        "./",
        "/tmp/./x",
        "/tmp/a\u{0}b",
    ] {
        bad(
            &format!("a workdir {workdir:?}"),
            h.call(
                Method::PUT,
                "/swarms/default/pools/trav",
                Some(json!({"agent": {"command": "true", "workdir": workdir}})),
            )
            .await,
        );
    }

    // --- Numbers: negative, out of range, overflowing, fractional, NaN and Infinity spelled out.
    for priority in [
        json!(-1),
        json!(0),
        json!(11),
        json!(256),
        json!(5.5),
        json!(1e30),
        json!("NaN"),
        json!("Infinity"),
        json!(null),
    ] {
        bad(
            &format!("priority {priority}"),
            h.post("/swarms/default/tasks", json!({"priority": priority}))
                .await,
        );
    }
    for raw in [
        "18446744073709551616",
        "-0.0e400",
        "1e400",
        "NaN",
        "Infinity",
        "-Infinity",
    ] {
        for field in ["priority", "timeout_ms", "max_attempts"] {
            bad(
                &format!("{field} {raw}"),
                send_bytes(
                    &h,
                    Method::POST,
                    "/swarms/default/tasks",
                    "application/json",
                    format!("{{\"{field}\": {raw}}}").into_bytes(),
                )
                .await,
            );
        }
    }
    for (field, value) in [
        ("timeout_ms", json!(-1)),
        ("timeout_ms", json!(0)),
        ("timeout_ms", json!(18446744073709551615u64)),
        ("max_attempts", json!(0)),
        ("max_attempts", json!(101)),
        ("max_attempts", json!(4294967296u64)),
    ] {
        bad(
            &format!("{field} {value}"),
            h.post("/swarms/default/tasks", json!({ field: value }))
                .await,
        );
    }
    for wait in [
        "-1",
        "61",
        "NaN",
        "inf",
        "-inf",
        "1e30",
        "abc",
        "18446744073709551616",
        "0x10",
    ] {
        bad(
            &format!("wait={wait}"),
            h.get(&format!("/tasks/{task}?wait={wait}")).await,
        );
        bad(
            &format!("next?wait={wait}"),
            h.get(&format!("/agents/{agent}/tasks/next?wait={wait}"))
                .await,
        );
    }
    for limit in ["0", "-1", "1001", "18446744073709551616", "1e3", "abc", ""] {
        bad(
            &format!("limit={limit}"),
            h.get(&format!("/tasks?limit={limit}")).await,
        );
        bad(
            &format!("events limit={limit}"),
            h.get(&format!("/events?limit={limit}")).await,
        );
    }
    for after in ["-1", "18446744073709551616", "1.5"] {
        bad(
            &format!("after={after}"),
            h.get(&format!("/events?after={after}")).await,
        );
    }
    let (s, v) = h.get("/events?after=18446744073709551615").await;
    assert_eq!(s, StatusCode::OK, "the largest after: {v}");
    assert_eq!(v["items"], json!([]));
    for (body, case) in [
        (r#"{"pool": "p", "agents": -1}"#, "agents -1"),
        (r#"{"pool": "p", "agents": 4294967296}"#, "agents past u32"),
        (
            r#"{"pool": "p", "delta": 9223372036854775808}"#,
            "delta past i64",
        ),
        (r#"{"pool": "p", "delta": 1e30}"#, "delta 1e30"),
    ] {
        bad(
            case,
            send_bytes(
                &h,
                Method::POST,
                "/swarms/default/scale",
                "application/json",
                body.as_bytes().to_vec(),
            )
            .await,
        );
    }
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/default/pools/sized",
            Some(json!({"min_agents": 0, "max_agents": 3, "agent": {"command": "true"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    bad(
        "delta i64::MIN",
        h.post(
            "/swarms/default/scale",
            json!({"pool": "sized", "delta": i64::MIN}),
        )
        .await,
    );
    bad(
        "agents u32::MAX",
        h.post(
            "/swarms/default/scale",
            json!({"pool": "sized", "agents": u32::MAX}),
        )
        .await,
    );
    for usage in [
        json!({"cpu_percent": 1e308}),
        json!({"cpu_percent": -1}),
        json!({"memory_mb": 1e30}),
        json!({"memory_mb": -0.5}),
    ] {
        bad(
            &format!("resource usage {usage}"),
            h.post(
                &format!("/agents/{agent}/heartbeat"),
                json!({"resource_usage": usage}),
            )
            .await,
        );
    }
    for config in [
        json!({"heartbeat_interval_ms": 0}),
        json!({"heartbeat_interval_ms": 18446744073709551615u64}),
        json!({"heartbeat_miss_limit": 4294967295u64}),
        json!({"task_timeout_ms": 18446744073709551615u64}),
        json!({"max_agents": -1}),
        json!({"prefetch": 1001}),
    ] {
        bad(
            &format!("swarm config {config}"),
            h.post("/swarms", json!({"name": "numbers", "config": config}))
                .await,
        );
    }
    for query in [
        "from=0000-01-01T00:00:00Z",
        "from=-9999-01-01T00:00:00Z&to=9999-12-31T23:59:59Z",
        "to=+275760-09-13T00:00:00Z",
        "period=1s",
        "from=NaN",
    ] {
        bad(
            &format!("metrics {query}"),
            h.get(&format!("/swarms/default/metrics?{query}")).await,
        );
    }

    // --- Huge strings where names go (each body well under 8 MiB).
    let long = "n".repeat(MIB);
    bad(
        "a 1 MiB swarm name",
        h.post("/swarms", json!({"name": long})).await,
    );
    bad(
        "a 1 MiB agent name",
        h.post("/swarms/default/agents", json!({"name": long}))
            .await,
    );
    // In paths, 60 KB: the HTTP client refuses a URI over 64 KB.
    let long_segment = "n".repeat(60_000);
    bad(
        "a 60 KB pool name",
        h.call(
            Method::PUT,
            &format!("/swarms/default/pools/{long_segment}"),
            Some(json!({})),
        )
        .await,
    );
    for field in ["type", "idempotency_key", "affinity_key"] {
        bad(
            &format!("a 1 MiB {field}"),
            h.post("/swarms/default/tasks", json!({ field: long }))
                .await,
        );
    }
    bad(
        "a 1 MiB capability",
        h.post(
            "/swarms/default/tasks",
            json!({"required_capabilities": [long]}),
        )
        .await,
    );
    bad(
        "a 1 MiB topic",
        h.post(
            &format!("/agents/{agent}/messages"),
            json!({"body": 1, "topic": long}),
        )
        .await,
    );
    bad(
        "a 60 KB topic in the path",
        h.post(
            &format!("/swarms/default/topics/{long_segment}"),
            json!({"body": 1}),
        )
        .await,
    );
    refused(
        "a 60 KB swarm in the path",
        h.get(&format!("/swarms/{long_segment}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // --- Unknown fields, in bodies and queries.
    bad(
        "an unknown field in a swarm",
        h.post("/swarms", json!({"name": "x", "colour": "red"}))
            .await,
    );
    bad(
        "an unknown field in a task",
        h.post("/swarms/default/tasks", json!({"type": "t", "prio": 9}))
            .await,
    );
    bad(
        "an unknown field in a nested template",
        h.call(
            Method::PUT,
            "/swarms/default/pools/unk",
            Some(json!({"agent": {"command": "true", "shell": true}})),
        )
        .await,
    );
    bad(
        "an unknown query parameter",
        h.get("/tasks?colour=red").await,
    );
    refused(
        "a body that is not JSON",
        send_bytes(
            &h,
            Method::POST,
            "/swarms",
            "text/plain",
            b"name=x".to_vec(),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    bad(
        "a WebSocket endpoint without an upgrade",
        h.get(&format!("/agents/{agent}/messages/ws")).await,
    );
    bad(
        "the event socket without an upgrade",
        h.get("/events/ws").await,
    );
    bad(
        "an event stream with a bad filter",
        h.get("/events/stream?type=nonsense").await,
    );
    refused(
        "a message stream of no swarm",
        h.get("/swarms/nowhere/messages/stream").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // --- Still alive, nothing lost.
    let resp = h
        .http
        .get(format!("{}/healthz", h.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "ok");
    let after = holdings(&h, &tasks).await;
    assert_eq!(after, before, "what the coordinator holds changed");
    let (s, v) = h.get("/orchestrator").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["swarms"], 2, "{v}");
    assert_eq!(v["tasks"]["queued"], 3, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_reach_an_exec_agents_argv_verbatim() {
    let h = Harness::start().await;
    let dir = h.dir.path().to_str().unwrap().to_owned();
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/default/pools/verbatim",
            Some(json!({
                "min_agents": 1,
                "max_agents": 1,
                "capabilities": ["verbatim"],
                "agent": {"command": "printf", "args": ["%s", "{{payload.text}}"], "mode": "exec"},
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let texts = [
        format!("$(touch {dir}/pwned-1)"),
        format!("`touch {dir}/pwned-2`"),
        format!("; touch {dir}/pwned-3; #"),
        format!("| touch {dir}/pwned-4"),
        format!("&& touch {dir}/pwned-5 && echo"),
        format!("> {dir}/pwned-6"),
        format!("'\"; touch {dir}/pwned-7; echo \"'"),
        format!("\ntouch {dir}/pwned-8\necho"),
        "${IFS}$HOME*?[a-z]{1,2}~!#%^\\".to_owned(),
        "-n --help -e \\x41".to_owned(),
        "ünïcödé ✓ 🚢".to_owned(),
        " leading and trailing spaces ".to_owned(),
    ];
    let mut ids = Vec::new();
    for text in &texts {
        let t = h
            .submit(
                "default",
                json!({"type": "echo", "payload": {"text": text}, "required_capabilities": ["verbatim"]}),
            )
            .await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    for (id, text) in ids.iter().zip(&texts) {
        let (s, task) = h.get(&format!("/tasks/{id}?wait=30")).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(task["status"], "completed", "{text:?}: {task}");
        assert_eq!(
            task["result"],
            json!(text),
            "{text:?} did not arrive verbatim"
        );
    }
    // A NUL cannot be in an argument: the task fails (not retried: it cannot succeed), the
    // coordinator carries on.
    let t = h
        .submit(
            "default",
            json!({"type": "echo", "payload": {"text": "a\u{0}b"}, "required_capabilities": ["verbatim"], "max_attempts": 1}),
        )
        .await;
    let (s, task) = h
        .get(&format!("/tasks/{}?wait=30", t["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["kind"], "agent_error", "{task}");
    assert!(
        task["error"]["message"].as_str().unwrap().contains("NUL"),
        "{task}"
    );
    let pwned: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "a payload ran as a command: {pwned:?}");
    let (s, v) = h.get("/orchestrator").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
