//! A client of several coordinators, against small scripted HTTP servers on loopback: what
//! moves to the next coordinator and what does not, when no coordinator answers, and streams
//! opened again elsewhere. (Real coordinators, killed mid-way, are in the CLI's
//! `tests/failover.rs`.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_client::{Client, ClientError, EventQuery, StreamItem};
use flotilla_core::{AgentId, SwarmSpec, TaskSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted server does with a request.
enum Reply {
    /// Answers with a status and a JSON body.
    Json(u16, String),
    /// Answers 200 with server-sent events, these pieces one by one, then closes.
    Events(Vec<String>),
    /// Answers 200 with server-sent events, these pieces, then keeps the connection open.
    EventsThenHold(Vec<String>),
    /// Reads the request and closes the connection without a word.
    Close,
    /// Reads the request and never answers.
    Hold,
}

/// A scripted server: its URL, and the requests it has read (`METHOD target`).
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (script, log) = (script.clone(), log.clone());
                tokio::spawn(async move {
                    let mut conn = conn;
                    let Some(request) = read_request(&mut conn).await else {
                        return;
                    };
                    log.lock().unwrap().push(request.clone());
                    answer(&mut conn, script(&request)).await;
                });
            }
        });
        Scripted { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request (head and `content-length` body); `METHOD target`.
async fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut first = head.lines().next()?.split(' ');
    Some(format!("{} {}", first.next()?, first.next()?))
}

async fn answer(conn: &mut TcpStream, reply: Reply) {
    let events = |pieces: &[String]| {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                    transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let mut out = head.as_bytes().to_vec();
        for p in pieces {
            out.extend_from_slice(format!("{:x}\r\n{p}\r\n", p.len()).as_bytes());
        }
        out
    };
    match reply {
        Reply::Json(status, body) => {
            let out = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(out.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
        Reply::Events(pieces) => {
            let mut out = events(&pieces);
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = conn.write_all(&out).await;
            let _ = conn.shutdown().await;
        }
        Reply::EventsThenHold(pieces) => {
            let _ = conn.write_all(&events(&pieces)).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Reply::Close => {}
        Reply::Hold => tokio::time::sleep(Duration::from_secs(3600)).await,
    }
}

/// An event of the log as the coordinator streams it.
fn event(seq: u64) -> String {
    let e = serde_json::json!({
        "seq": seq, "at": "2026-01-01T12:00:00.000Z", "type": "swarm_created",
        "swarm_id": "0190b6e4-0000-7000-8000-000000000002"
    });
    format!("event: event\nid: {seq}\ndata: {e}\n\n")
}

/// A message of a swarm's stream.
fn message(seq: u64) -> String {
    let m = serde_json::json!({
        "id": format!("0190b6e4-0000-7000-8000-{seq:012}"),
        "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
        "kind": "event", "from": null, "to": "0190b6e4-0000-7000-8000-000000000003",
        "topic": "t", "priority": "normal", "body": {"n": seq},
        "created_at": "2026-01-01T12:00:00.000Z", "status": "pending",
        "deliveries": 0, "max_deliveries": 5, "seq": seq
    });
    format!("event: message\ndata: {m}\n\n")
}

fn swarm_json(name: &str) -> String {
    serde_json::json!({
        "id": "0190b6e4-0000-7000-8000-000000000002", "name": name, "description": "",
        "topology": "star", "config": {}, "status": "active",
        "created_at": "2026-01-01T12:00:00.000Z", "updated_at": "2026-01-01T12:00:00.000Z",
        "agent_count": 0, "queue_depth": 0, "pools": []
    })
    .to_string()
}

/// A port on loopback where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn a_post_cut_off_after_sending_is_not_sent_elsewhere_but_a_get_is() {
    let cut = Scripted::start(|_| Reply::Close).await;
    let next = Scripted::start(|r| {
        if r.starts_with("GET /api/v1/swarms/") {
            Reply::Json(200, swarm_json("s"))
        } else {
            Reply::Json(201, swarm_json("s"))
        }
    })
    .await;
    let urls = format!("{},{}", cut.url, next.url);

    let client = Client::new(&urls, "the-token").unwrap();
    let spec = SwarmSpec {
        name: "s".into(),
        ..SwarmSpec::default()
    };
    let err = client.create_swarm(&spec).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&cut.url), "{text}");
    assert!(text.contains("not sent to another coordinator"), "{text}");
    assert!(
        !text.contains('\n') && !text.contains("the-token"),
        "{text}"
    );
    assert!(err.is_transient());
    assert_eq!(cut.seen(), ["POST /api/v1/swarms"]);
    assert!(next.seen().is_empty(), "{:?}", next.seen());
    // The coordinator that dropped it is left: the next request goes to the other.
    assert_eq!(client.base_url(), next.url);
    client
        .get_swarm("s")
        .await
        .expect("answered by the next one");
    assert_eq!(cut.seen().len(), 1);

    // A read cut off the same way is sent again to the next coordinator.
    let client = Client::new(&urls, "the-token").unwrap();
    client.get_swarm("s").await.expect("a GET moves on");
    assert_eq!(cut.seen().last().unwrap(), "GET /api/v1/swarms/s");
    assert_eq!(client.base_url(), next.url);
}

#[tokio::test]
async fn a_submission_with_idempotency_keys_is_sent_again() {
    let task = serde_json::json!({
        "id": "0190b6e4-0000-7000-8000-000000000009",
        "swarm_id": "0190b6e4-0000-7000-8000-000000000002", "parent_task_id": null,
        "type": "t", "payload": null, "priority": 5, "required_capabilities": [],
        "depends_on": [], "affinity_key": null, "idempotency_key": "k", "attempts": 0,
        "max_attempts": 3, "backoff": {"initial_ms": 1000, "max_ms": 2000},
        "timeout_ms": 0, "deadline": null, "last_error": null, "progress": null,
        "created_at": "2020-01-01T00:00:00.000Z", "updated_at": "2020-01-01T00:00:00.000Z",
        "status": "queued", "queued_at": "2020-01-01T00:00:00.000Z"
    })
    .to_string();
    let cut = Scripted::start(|_| Reply::Close).await;
    let next = Scripted::start(move |_| Reply::Json(201, task.clone())).await;
    let urls = format!("{},{}", cut.url, next.url);
    let keyed = TaskSpec {
        task_type: "t".into(),
        idempotency_key: Some("k".into()),
        ..TaskSpec::default()
    };
    let client = Client::new(&urls, "t").unwrap();
    let submitted = client
        .submit_task("default", &keyed)
        .await
        .expect("sent again");
    assert_eq!(submitted.idempotency_key.as_deref(), Some("k"));
    assert_eq!(cut.seen(), ["POST /api/v1/swarms/default/tasks"]);
    assert_eq!(next.seen(), ["POST /api/v1/swarms/default/tasks"]);

    // Without a key it could run twice: not sent again.
    let client = Client::new(&urls, "t").unwrap();
    let unkeyed = TaskSpec {
        idempotency_key: None,
        ..keyed
    };
    let err = client.submit_task("default", &unkeyed).await.unwrap_err();
    assert!(
        err.to_string().contains("not sent to another coordinator"),
        "{err}"
    );
    assert_eq!(next.seen().len(), 1);
}

#[tokio::test]
async fn an_answer_is_the_answer_even_a_503() {
    let busy = Scripted::start(|_| {
        Reply::Json(
            503,
            r#"{"error":{"code":"unavailable","message":"try later"}}"#.into(),
        )
    })
    .await;
    let next = Scripted::start(|_| Reply::Json(200, swarm_json("s"))).await;
    let client = Client::new(&format!("{},{}", busy.url, next.url), "t").unwrap();
    let err = client.get_swarm("s").await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(next.seen().is_empty());
    assert_eq!(client.base_url(), busy.url);
}

#[tokio::test]
async fn a_long_poll_that_gets_no_answer_in_time_moves_on() {
    let silent = Scripted::start(|_| Reply::Hold).await;
    let next = Scripted::start(|_| Reply::Json(204, String::new())).await;
    let client = Client::new(&format!("{},{}", silent.url, next.url), "t").unwrap();
    let agent = AgentId(uuid::Uuid::now_v7());
    let started = Instant::now();
    // A 1 s wait: the request's own timeout is the wait plus 10 s.
    let got = client
        .next_task(agent, Duration::from_secs(1))
        .await
        .expect("answered by the next coordinator");
    assert_eq!(got, None);
    assert!(started.elapsed() >= Duration::from_secs(10));
    let target = format!("GET /api/v1/agents/{agent}/tasks/next?wait=1");
    assert_eq!(silent.seen(), std::slice::from_ref(&target));
    assert_eq!(next.seen(), [target]);
    assert_eq!(client.base_url(), next.url);
}

#[tokio::test]
async fn when_none_answers_the_error_names_each_in_one_line() {
    let (a, b) = (dead_url(), dead_url());
    let client = Client::new(&format!("{a}, {b}"), "secret-token-value").unwrap();
    assert_eq!(client.base_urls(), [a.as_str(), b.as_str()]);
    let err = client.orchestrator().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("none of the 2 coordinators answered"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{a}: ")) && text.contains(&format!("{b}: ")),
        "{text}"
    );
    assert!(
        text.contains("flotilla serve") && text.contains("FLOTILLA_URL"),
        "{text}"
    );
    assert!(!text.contains('\n'));
    assert!(
        matches!(err, ClientError::Http { connect: true, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    for shown in [text, format!("{err:?}"), format!("{client:?}")] {
        assert!(!shown.contains("secret-token-value"), "{shown}");
    }
    // Every request a round: a POST too (nothing was sent), each URL once.
    let beat = flotilla_core::Heartbeat::default();
    let err = client.heartbeat(AgentId(uuid::Uuid::now_v7()), &beat);
    let text = err.await.unwrap_err().to_string();
    assert_eq!(text.matches(&a).count(), 1, "{text}");
    assert_eq!(text.matches(&b).count(), 1, "{text}");
}

#[tokio::test]
async fn a_dead_first_coordinator_is_passed_by_a_post() {
    let next = Scripted::start(|_| Reply::Json(201, swarm_json("s"))).await;
    let dead = dead_url();
    let client = Client::new(&format!("{dead},{}", next.url), "t").unwrap();
    assert_eq!(client.base_url(), dead);
    let spec = SwarmSpec {
        name: "s".into(),
        ..SwarmSpec::default()
    };
    client.create_swarm(&spec).await.expect("nothing was sent");
    assert_eq!(next.seen(), ["POST /api/v1/swarms"]);
    // Clones and other tokens share the choice.
    assert_eq!(client.with_token("other").base_url(), next.url);
}

#[tokio::test]
async fn an_event_stream_resumes_after_the_last_event_on_the_next_coordinator() {
    let first = Scripted::start(|_| Reply::Events(vec![event(6), event(7)])).await;
    let second = Scripted::start(|_| Reply::EventsThenHold(vec![event(8)])).await;
    let client = Client::new(&format!("{},{}", first.url, second.url), "t").unwrap();
    let query = EventQuery {
        swarm: Some("default".into()),
        ..EventQuery::default()
    };
    let mut stream = client.follow_events(&query).await.unwrap();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Ok(Some(StreamItem::Event(e)))) => seqs.push(e.seq),
            other => panic!("an event, not {other:?}"),
        }
    }
    assert_eq!(seqs, [6, 7, 8]);
    assert_eq!(first.seen(), ["GET /api/v1/events/stream?swarm=default"]);
    assert_eq!(
        second.seen(),
        ["GET /api/v1/events/stream?swarm=default&after=7"]
    );
    assert_eq!(client.base_url(), second.url);
}

#[tokio::test]
async fn a_message_stream_resumes_with_a_gap() {
    let first = Scripted::start(|_| Reply::Events(vec![message(1)])).await;
    let second = Scripted::start(|_| Reply::EventsThenHold(vec![message(2)])).await;
    let client = Client::new(&format!("{},{}", first.url, second.url), "t").unwrap();
    let mut stream = client
        .follow_messages("default", None, None, false)
        .await
        .unwrap();
    let mut items = Vec::new();
    for _ in 0..3 {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("an item")
            .expect("not the end");
        items.push(match item {
            StreamItem::Message(m) => format!("message {}", m.seq),
            StreamItem::Gap => "gap".to_owned(),
            StreamItem::Event(e) => format!("event {}", e.seq),
        });
    }
    assert_eq!(items, ["message 1", "gap", "message 2"]);
    assert_eq!(
        second.seen(),
        ["GET /api/v1/swarms/default/messages/stream"]
    );
}

#[tokio::test]
async fn one_coordinator_ending_its_stream_ends_it() {
    // With one URL, the end of the stream is the end (the coordinator is shutting down).
    let only = Scripted::start(|_| Reply::Events(vec![event(1)])).await;
    let client = Client::new(&only.url, "t").unwrap();
    let mut stream = client.follow_events(&EventQuery::default()).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Ok(Some(StreamItem::Event(e))) if e.seq == 1
    ));
    assert!(matches!(stream.next().await, Ok(None)));
    assert_eq!(only.seen().len(), 1);
}
