//! Several coordinators' URLs: real `flotilla serve` processes, one of them dead from the start
//! or killed mid-way, and the typed client, the CLI and `flotilla worker` moving to the next.
//!
//! Coordinators of this build do not share a store, so the tests give two of them the same admin
//! token (written into their data directories before they start) and different swarms: an
//! answer naming a swarm only one has shows which coordinator gave it. The worker's test starts
//! the second coordinator on the first one's data directory after killing it: to the worker it
//! is another coordinator of the same fleet, at another URL.

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{FLOTILLA, ServeProcess, free_port};
use flotilla_client::{Client, EventQuery, StreamItem};
use flotilla_core::{
    AgentSpec, EventKind, MessageSpec, SwarmSpec, TaskId, TaskSpec, TaskState, TaskStatus,
};
use parking_lot::Mutex;

/// One test at a time: each starts coordinators and workers of its own, and the worker's test
/// counts on the lease not lapsing while two cores are busy elsewhere.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh data directory holding `token` as its admin token.
fn data_dir_with(token: &str) -> tempfile::TempDir {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.path().join("admin.token"))
        .unwrap();
    writeln!(file, "{token}").unwrap();
    dir
}

fn new_token() -> String {
    format!("flt_failover_{}", uuid::Uuid::now_v7().simple())
}

/// A coordinator with `token` as its admin token, quiet but for warnings.
async fn coordinator(token: &str) -> ServeProcess {
    ServeProcess::start_in(data_dir_with(token), free_port(), quiet).await
}

fn quiet(cmd: &mut Command) {
    cmd.env("RUST_LOG", "warn");
}

/// A URL where nothing listens.
fn dead_url() -> (u16, String) {
    let port = free_port();
    (port, format!("http://127.0.0.1:{port}"))
}

fn swarm(name: &str) -> SwarmSpec {
    SwarmSpec {
        name: name.into(),
        ..SwarmSpec::default()
    }
}

fn task(task_type: &str) -> TaskSpec {
    TaskSpec {
        task_type: task_type.into(),
        ..TaskSpec::default()
    }
}

/// Counts the connections made to a port (to show that a client no longer tries it).
struct ConnectionCounter {
    count: Arc<AtomicUsize>,
}

impl ConnectionCounter {
    fn bind(port: u16) -> ConnectionCounter {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        ConnectionCounter { count }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// A listener that reads each request whole and closes the connection without answering: the
/// request reached something that may have acted on it.
struct CutListener {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl CutListener {
    fn start() -> CutListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if let Some(line) = read_request(conn) {
                    log.lock().push(line);
                }
            }
        });
        CutListener { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().clone()
    }
}

/// Reads a request's head and body, then drops (closes) the connection; `METHOD target`.
fn read_request(conn: std::net::TcpStream) -> Option<String> {
    let mut reader = std::io::BufReader::new(conn);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let mut parts = first.split(' ');
    Some(format!("{} {}", parts.next()?, parts.next()?))
}

/// A `flotilla worker` process, killed when dropped; its stderr collected.
struct WorkerProcess {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    fn start(urls: &str, token: &str, args: &[&str]) -> WorkerProcess {
        let mut child = Command::new(FLOTILLA)
            .arg("worker")
            .args(args)
            .env("FLOTILLA_URL", urls)
            .env("FLOTILLA_TOKEN", token)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flotilla worker starts");
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                sink.lock().push(line);
            }
        });
        WorkerProcess { child, stderr }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (long polls) until the task has finished.
async fn finished(client: &Client, id: TaskId) -> flotilla_core::Task {
    let started = Instant::now();
    loop {
        let t = client
            .wait_task(id, Duration::from_secs(5))
            .await
            .expect("GET task?wait");
        if t.status().is_terminal() {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "task {id} did not finish: {t:?}"
        );
    }
}

/// The next item of a stream, within 20 s.
async fn next_item(stream: &mut flotilla_client::MessageStream) -> StreamItem {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
        .expect("the stream is not over")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_url_is_passed_by_every_kind_of_call() {
    let _serial = SERIAL.lock().await;
    let token = new_token();
    let live = coordinator(&token).await;
    let (dead_port, dead) = dead_url();
    let urls = format!("{dead},{}", live.url);
    // Each kind of call on a client that starts at the dead URL: the call itself moves on.
    let fresh = |token: &str| {
        let c = Client::new(&urls, token).unwrap();
        assert_eq!(c.base_url(), dead);
        c
    };

    // GET.
    let c = fresh(&token);
    let swarms = c.list_swarms().await.expect("GET");
    assert!(swarms.iter().any(|s| s.swarm.name == "default"));
    assert_eq!(c.base_url(), live.url);
    // POST (nothing was sent to the dead one, so it goes on).
    fresh(&token)
        .create_swarm(&swarm("fo-a"))
        .await
        .expect("POST");
    // An agent, and its long poll waiting for a task submitted meanwhile.
    let reg = fresh(&token)
        .register_agent("fo-a", &AgentSpec::default())
        .await
        .expect("register");
    let agent = fresh(&reg.token);
    let poll = tokio::spawn(async move {
        let got = agent.next_task(reg.agent_id, Duration::from_secs(20)).await;
        (got, agent.base_url().to_owned())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let submitted = fresh(&token)
        .submit_task("fo-a", &task("t"))
        .await
        .expect("submit");
    let (got, used) = poll.await.unwrap();
    assert_eq!(got.expect("long poll").expect("a task").id, submitted.id);
    assert_eq!(used, live.url);
    fresh(&reg.token)
        .complete_task(submitted.id, flotilla_core::Json::null(), None)
        .await
        .expect("complete");
    // A task's long poll.
    let done = fresh(&token)
        .wait_task(submitted.id, Duration::from_secs(5))
        .await
        .expect("wait");
    assert_eq!(done.status(), TaskStatus::Completed);
    // The event log, followed (server-sent events).
    let query = EventQuery {
        swarm: Some("fo-a".into()),
        ..EventQuery::default()
    };
    let mut events = fresh(&token).follow_events(&query).await.expect("SSE");
    loop {
        if let StreamItem::Event(e) = next_item(&mut events).await
            && e.kind == EventKind::TaskCompleted
        {
            break;
        }
    }
    // The agent's message WebSocket.
    let mut socket = fresh(&reg.token)
        .message_socket(reg.agent_id, 10)
        .await
        .expect("WebSocket");
    let body = flotilla_core::Json::from_value(&serde_json::json!({"hello": 1}));
    let spec = MessageSpec {
        body: body.clone(),
        ..MessageSpec::default()
    };
    fresh(&token)
        .send_message(reg.agent_id, &spec)
        .await
        .expect("send");
    let batch = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("in time")
        .expect("a batch")
        .expect("open");
    assert_eq!(batch[0].body.to_value(), body.to_value());
    // The CLI, through --url.
    let out = Command::new(FLOTILLA)
        .args(["--url", &urls, "swarm", "list", "--json"])
        .env("FLOTILLA_TOKEN", &token)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fo-a"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("moving to {}", live.url)),
        "{stderr}"
    );
    assert!(!stderr.contains(&token), "{stderr}");

    // Sticky: once moved, a client stays with the live coordinator even when the first URL
    // answers again.
    let c = fresh(&token);
    c.orchestrator().await.expect("GET");
    let counter = ConnectionCounter::bind(dead_port);
    c.list_swarms().await.unwrap();
    c.create_swarm(&swarm("fo-a2")).await.unwrap();
    c.with_token(&token).get_swarm("fo-a2").await.unwrap();
    let mut events = c.follow_events(&query).await.unwrap();
    assert!(matches!(next_item(&mut events).await, StreamItem::Event(_)));
    assert_eq!(counter.count(), 0, "nothing went to the first URL");
    assert_eq!(c.base_url(), live.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_is_left_for_the_next() {
    let _serial = SERIAL.lock().await;
    let token = new_token();
    let a = coordinator(&token).await;
    let b = coordinator(&token).await;
    let only_a = Client::new(&a.url, &token).unwrap();
    let only_b = Client::new(&b.url, &token).unwrap();
    only_a.create_swarm(&swarm("only-on-a")).await.unwrap();
    only_b.create_swarm(&swarm("only-on-b")).await.unwrap();
    let b_default = only_b.get_swarm("default").await.unwrap().swarm.id;
    let a_task = only_a.submit_task("only-on-a", &task("t")).await.unwrap();

    let client = Client::new(&format!("{},{}", a.url, b.url), &token).unwrap();
    client.get_swarm("only-on-a").await.expect("served by a");
    assert_eq!(client.base_url(), a.url);
    // Following the default swarm's messages and events, from a.
    let mut stream = client
        .follow_messages("default", None, None, true)
        .await
        .unwrap();
    // A long poll in flight at a when it dies: a task only a has, not finishing.
    let waiting = client.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let got = waiting.wait_task(a_task.id, Duration::from_secs(30)).await;
        (got, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let _a_dir = a.kill();

    // The poll was sent again, to b, which does not know the task: its answer, at once.
    let (got, took) = poll.await.unwrap();
    let err = got.expect_err("b does not know a's task");
    assert!(err.is_not_found(), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Reads and writes go to b.
    let only = client.get_swarm("only-on-b").await.expect("served by b");
    assert_eq!(only.swarm.name, "only-on-b");
    assert_eq!(client.base_url(), b.url);
    client
        .create_swarm(&swarm("after-failover"))
        .await
        .expect("created on b");
    only_b
        .get_swarm("after-failover")
        .await
        .expect("it is on b");
    // The stream was opened again on b: a gap (messages may have been missed), then b's
    // events.
    assert_eq!(next_item(&mut stream).await, StreamItem::Gap);
    let on_b = only_b.submit_task("default", &task("after")).await.unwrap();
    loop {
        if let StreamItem::Event(e) = next_item(&mut stream).await
            && e.task_id == Some(on_b.id)
        {
            assert_eq!(e.swarm_id, b_default);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_coordinator_answering_is_one_line_naming_each() {
    let _serial = SERIAL.lock().await;
    let token = new_token();
    let a = coordinator(&token).await;
    let b = coordinator(&token).await;
    let urls = format!("{},{}", a.url, b.url);
    let client = Client::new(&urls, &token).unwrap();
    client.orchestrator().await.unwrap();
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    drop(a.kill());
    drop(b.kill());

    let err = client.list_swarms().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("none of the 2 coordinators answered"),
        "{text}"
    );
    assert!(text.contains(&a_url) && text.contains(&b_url), "{text}");
    assert!(
        text.contains("flotilla serve") && text.contains("FLOTILLA_URL"),
        "{text}"
    );
    assert!(!text.contains('\n') && !text.contains(&token), "{text}");

    let out = Command::new(FLOTILLA)
        .args(["--url", &urls, "agent", "list"])
        .env("FLOTILLA_TOKEN", &token)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(&a_url) && lines[0].contains(&b_url),
        "{stderr}"
    );
    assert!(!stderr.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_cut_off_after_sending_is_not_sent_elsewhere() {
    let _serial = SERIAL.lock().await;
    let token = new_token();
    let cut = CutListener::start();
    let live = coordinator(&token).await;
    let only_live = Client::new(&live.url, &token).unwrap();
    let urls = format!("{},{}", cut.url, live.url);

    let client = Client::new(&urls, &token).unwrap();
    let err = client.create_swarm(&swarm("fo-d")).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&cut.url), "{text}");
    assert!(text.contains("not sent to another coordinator"), "{text}");
    assert_eq!(cut.seen(), ["POST /api/v1/swarms"]);
    let missing = only_live.get_swarm("fo-d").await.unwrap_err();
    assert!(
        missing.is_not_found(),
        "the live coordinator never got it: {missing}"
    );
    // The client left the coordinator that dropped it.
    assert_eq!(client.base_url(), live.url);
    client
        .create_swarm(&swarm("fo-d"))
        .await
        .expect("made once, on the live one");
    assert_eq!(cut.seen().len(), 1);

    // A read cut off after sending is sent to the next coordinator.
    let reader = Client::new(&urls, &token).unwrap();
    let got = reader
        .get_swarm("fo-d")
        .await
        .expect("read again on the live one");
    assert_eq!(got.swarm.name, "fo-d");
    assert_eq!(cut.seen().last().unwrap(), "GET /api/v1/swarms/fo-d");

    // So is a submission whose task carries an idempotency key: one task, not two.
    let keyed = TaskSpec {
        idempotency_key: Some("fo-d-once".into()),
        ..task("t")
    };
    let submitter = Client::new(&urls, &token).unwrap();
    let first = submitter
        .submit_task("fo-d", &keyed)
        .await
        .expect("sent again");
    assert_eq!(cut.seen().last().unwrap(), "POST /api/v1/swarms/fo-d/tasks");
    let again = only_live.submit_task("fo-d", &keyed).await.unwrap();
    assert_eq!(again.id, first.id);
    let query = flotilla_client::TaskQuery {
        swarm: Some("fo-d".into()),
        ..Default::default()
    };
    assert_eq!(only_live.list_tasks(&query).await.unwrap().items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_carries_on_across_its_coordinators_death() {
    let _serial = SERIAL.lock().await;
    let token = new_token();
    let a = coordinator(&token).await;
    let b_port = free_port();
    let b_url = format!("http://127.0.0.1:{b_port}");
    let urls = format!("{},{b_url}", a.url);
    let mut worker = WorkerProcess::start(
        &urls,
        &token,
        &["--name", "fo-worker", "--poll-wait", "5s", "--", "cat"],
    );
    let admin = Client::new(&urls, &token).unwrap();
    let started = Instant::now();
    let agent = loop {
        let agents = admin.list_agents("default", None, None).await.unwrap();
        if let Some(agent) = agents.into_iter().find(|a| a.name == "fo-worker") {
            break agent;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The whole event log, followed through both URLs.
    let mut events = admin.follow_events(&EventQuery::default()).await.unwrap();

    let payload = flotilla_core::Json::from_value(&serde_json::json!({"n": 1}));
    let first = TaskSpec {
        payload: payload.clone(),
        ..task("echo")
    };
    let first = admin.submit_task("default", &first).await.unwrap();
    let first = finished(&admin, first.id).await;
    assert_eq!(first.status(), TaskStatus::Completed);
    assert_eq!(first.state.agent_id(), Some(agent.id));

    // The coordinator dies; another comes up on the fleet's store, at the second URL.
    let dir = a.kill();
    let b = ServeProcess::start_in(dir, b_port, quiet).await;

    let second = TaskSpec {
        payload: flotilla_core::Json::from_value(&serde_json::json!({"n": 2})),
        ..task("echo")
    };
    let second = admin.submit_task("default", &second).await.unwrap();
    assert_eq!(admin.base_url(), b.url);
    let second = finished(&admin, second.id).await;
    assert_eq!(second.status(), TaskStatus::Completed, "{second:?}");
    let TaskState::Completed {
        agent_id, result, ..
    } = &second.state
    else {
        panic!("completed: {second:?}");
    };
    assert_eq!(*agent_id, agent.id, "the same agent did it");
    assert_eq!(result.to_value(), serde_json::json!({"n": 2}));
    // It did not register again.
    let agents = admin.list_agents("default", None, None).await.unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker still runs"
    );
    let log = worker.stderr.lock().join("\n");
    assert!(log.contains(&format!("moving to {b_url}")), "{log}");
    assert!(!log.contains(&token), "{log}");
    assert_eq!(
        log.matches("registered agent").count(),
        1,
        "registered once: {log}"
    );

    // The event log came through whole: every seq once, in order, across the change.
    let mut last = None;
    loop {
        let StreamItem::Event(e) = next_item(&mut events).await else {
            panic!("the event log has no gaps");
        };
        if let Some(prev) = last {
            assert_eq!(e.seq, prev + 1, "after {prev}: {e:?}");
        }
        last = Some(e.seq);
        if e.kind == EventKind::TaskCompleted && e.task_id == Some(second.id) {
            break;
        }
    }
}
