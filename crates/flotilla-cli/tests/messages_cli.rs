//! The message bus and topologies from the command line, end to end: a coordinator in this
//! process, two connected agents acting through the typed client (long poll, WebSocket), and
//! the real `flotilla` binary as the operator.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use flotilla_client::{Client, MessageDirection, MessageQuery};
use flotilla_core::api::DelegateRequest;
use flotilla_core::{
    AgentId, AgentSpec, Heartbeat, Json, MessageKind, MessageSpec, MessageStatus, TaskStatus,
};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(10);

/// Registers a connected agent named `name` in `default`; its id and a client acting as it.
async fn register(h: &Harness, name: &str) -> (AgentId, Client) {
    let spec: AgentSpec = serde_json::from_value(json!({ "name": name })).unwrap();
    let reg = h
        .admin
        .register_agent("default", &spec)
        .await
        .expect("register");
    (reg.agent_id, h.admin.with_token(reg.token))
}

/// Runs the CLI; its stdout, after checking it succeeded.
fn ok(h: &Harness, args: &[&str]) -> String {
    let out = h.cli(args);
    assert!(
        out.status.success(),
        "flotilla {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `flotilla` process whose output lines are read as they come.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    fn start(h: &Harness, args: &[&str]) -> Running {
        let mut child = Command::new(FLOTILLA)
            .args(args)
            .env("FLOTILLA_URL", h.server().url())
            .env("FLOTILLA_TOKEN", &h.server().admin_token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flotilla starts");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// The first line of `rx` for which `pred` holds, within `within`; panics with what came.
    fn wait_line(
        rx: &mpsc::Receiver<String>,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("waited {within:?} for {what}; saw {seen:#?}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_topologies_from_the_command_line() {
    let h = Harness::start().await;
    let (alice, alice_client) = register(&h, "alice").await;
    let (bob, bob_client) = register(&h, "bob").await;
    // Keep both leases while the test runs.
    let beats = {
        let (a, b) = (alice_client.clone(), bob_client.clone());
        tokio::spawn(async move {
            loop {
                let _ = a.heartbeat(alice, &Heartbeat::default()).await;
                let _ = b.heartbeat(bob, &Heartbeat::default()).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    // A message sent by name with the CLI; alice takes it with a long poll and acknowledges it.
    let out = ok(
        &h,
        &[
            "msg",
            "send",
            "alice",
            "--body",
            r#"{"hi": 1}"#,
            "--priority",
            "high",
        ],
    );
    assert!(
        out.starts_with("sent message ") && out.trim_end().ends_with("to alice (high)"),
        "{out}"
    );
    let got = alice_client
        .receive_messages(alice, Duration::from_secs(5), 10)
        .await
        .expect("receive");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body.to_value(), json!({"hi": 1}));
    assert_eq!(got[0].from, None, "sent by the operator");
    assert_eq!(got[0].priority.as_str(), "high");
    let acked = alice_client
        .ack_messages(alice, &[got[0].id])
        .await
        .expect("ack");
    assert_eq!(acked, [got[0].id]);

    // A body that is not JSON goes as a JSON string; --json prints the message.
    let out = ok(
        &h,
        &[
            "msg",
            "send",
            bob.to_string().as_str(),
            "--body",
            "plain words",
            "--json",
        ],
    );
    let sent: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sent["body"], "plain words", "{sent:#}");
    assert_eq!(sent["to"], json!(bob));
    assert_eq!(bob_client.clear_messages(bob).await.expect("clear"), 1);

    // Another agent's token may not open alice's socket: the coordinator's refusal, in a line.
    let refused = bob_client.message_socket(alice, 10).await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");

    // A request: alice answers over her WebSocket, the CLI prints the response.
    let responder = {
        let client = alice_client.clone();
        let mut socket = client.message_socket(alice, 10).await.expect("socket");
        tokio::spawn(async move {
            loop {
                let batch = socket.next().await.expect("a frame").expect("open");
                for m in batch {
                    assert_eq!(socket.ack(&[m.id]).await.expect("ack"), [m.id]);
                    if m.kind == MessageKind::Request {
                        let reply = MessageSpec {
                            kind: Some(MessageKind::Response),
                            correlation_id: Some(m.id),
                            body: Json::from_value(&json!({"pong": m.body.to_value()})),
                            ..MessageSpec::default()
                        };
                        client.send_message(alice, &reply).await.expect("respond");
                        return socket;
                    }
                }
            }
        })
    };
    let out = ok(
        &h,
        &[
            "msg",
            "send",
            "alice",
            "--body",
            "ping",
            "--request",
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"pong": "ping"})
    );
    let socket = tokio::time::timeout(SHORT, responder)
        .await
        .expect("the responder finished")
        .unwrap();
    socket.close().await.expect("close");

    // Nobody answers: exit 1 with one line saying so.
    let started = Instant::now();
    let out = h.cli(&[
        "msg",
        "send",
        "alice",
        "--body",
        "anyone?",
        "--request",
        "--timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: no response from alice within 1s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A message nobody takes in time dies; `msg dead` lists it with why, `msg retry` revives it.
    let out = ok(
        &h,
        &[
            "msg",
            "send",
            "bob",
            "--body",
            "\"short-lived\"",
            "--ttl",
            "200ms",
            "--json",
        ],
    );
    let doomed = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dead_query = MessageQuery {
        status: Some(MessageStatus::Dead),
        ..MessageQuery::default()
    };
    poll("the message dead", SHORT, || async {
        let page = h
            .admin
            .swarm_messages("default", &dead_query)
            .await
            .unwrap();
        if page.items.iter().any(|m| m.id.to_string() == doomed) {
            Ok(())
        } else {
            Err(page.items)
        }
    })
    .await;
    let out = ok(&h, &["msg", "dead", "default"]);
    let row = out
        .lines()
        .find(|l| l.starts_with(&doomed))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("bob") && row.contains("expired"), "{out}");
    let out = ok(&h, &["msg", "retry", &doomed]);
    assert_eq!(
        out.trim_end(),
        format!("message {doomed} is back in bob's inbox (pending)")
    );
    let inbox = bob_client
        .message_history(
            bob,
            &MessageQuery {
                direction: Some(MessageDirection::In),
                status: Some(MessageStatus::Pending),
                ..MessageQuery::default()
            },
        )
        .await
        .expect("history");
    assert!(
        inbox.items.iter().any(|m| m.id.to_string() == doomed),
        "{inbox:?}"
    );
    let out = ok(&h, &["msg", "list", "bob", "--direction", "in"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&doomed) && l.contains("pending")),
        "{out}"
    );

    // Subscriptions, and `msg tail` following the swarm for bob's messages only.
    let out = ok(&h, &["msg", "subscribe", "bob", "builds.*"]);
    assert_eq!(out.trim_end(), "bob subscribes to: builds.*");
    assert_eq!(ok(&h, &["msg", "subscribe", "bob"]), out);
    assert_eq!(bob_client.subscriptions(bob).await.unwrap(), ["builds.*"]);
    let tail = Running::start(&h, &["msg", "tail", "default", "--agent", "bob"]);
    Running::wait_line(&tail.stderr, "tail to follow", SHORT, |l| {
        l.starts_with("following the messages of swarm default to or from bob")
    });
    // Not bob's: filtered out.
    ok(&h, &["msg", "send", "alice", "--body", "\"not for bob\""]);
    let out = ok(
        &h,
        &[
            "msg",
            "publish",
            "default",
            "builds.done",
            "--body",
            r#"{"build": 7}"#,
        ],
    );
    assert_eq!(
        out.trim_end(),
        "published to topic builds.done in swarm default: 1 recipient"
    );
    let line = Running::wait_line(&tail.stdout, "the published message", SHORT, |l| {
        l.contains("→")
    });
    assert!(
        line.contains("normal    event      operator → bob  builds.done  {\"build\":7}"),
        "{line}"
    );
    drop(tail);
    let out = ok(&h, &["msg", "broadcast", "default", "--body", "all hands"]);
    assert_eq!(out.trim_end(), "broadcast to swarm default: 2 agents");

    // Delegation: alice splits the task she runs into a subtask; her task waits for it.
    let task = h.submit("default", json!({ "type": "plan" })).await;
    let taken = alice_client
        .next_task(alice, Duration::from_secs(5))
        .await
        .expect("next task")
        .expect("a task");
    assert_eq!(taken.id, task);
    let request = DelegateRequest {
        subtasks: vec![serde_json::from_value(json!({ "type": "step" })).unwrap()],
        agent_id: None,
    };
    let delegated = alice_client
        .delegate_task(task, &request)
        .await
        .expect("delegate");
    assert_eq!(delegated.subtasks.len(), 1);
    assert_eq!(delegated.task.status(), TaskStatus::Blocked);

    // The topology: DOT naming both agents, a change with settings, a wrong name refused.
    let dot = ok(&h, &["swarm", "topology", "default", "--dot"]);
    assert!(dot.starts_with("graph \"default\" {"), "{dot}");
    assert!(
        dot.contains("label=\"alice\\n") && dot.contains("label=\"bob\\n"),
        "{dot}"
    );
    assert!(
        dot.contains(&alice.to_string()) && dot.contains(&bob.to_string()),
        "{dot}"
    );
    let out = ok(
        &h,
        &[
            "swarm",
            "topology",
            "default",
            "--set",
            "ring",
            "--config",
            r#"{"ring":{"order":"load"}}"#,
        ],
    );
    assert!(out.starts_with("swarm default: ring, "), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("alice")) && out.lines().any(|l| l.starts_with("bob")),
        "{out}"
    );
    let view = h.admin.topology("default").await.unwrap();
    assert_eq!(view.topology.as_str(), "ring");
    assert_eq!(view.config["order"], "load");
    let json: Value =
        serde_json::from_str(&ok(&h, &["swarm", "topology", "default", "--json"])).unwrap();
    assert_eq!(json["topology"], "ring");
    assert_eq!(json["nodes"].as_array().unwrap().len(), 2);
    let out = h.cli(&["swarm", "topology", "default", "--set", "blob"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"blob\" is not a topology; use one of star, mesh, hierarchical, ring"),
        "{err}"
    );

    beats.abort();
    h.finish().await;
}

/// `flotilla events -f` follows the log live, naming agents (one that joined after it started
/// too, and still after it was removed); `flotilla events --json` prints the stored log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_from_the_command_line() {
    let h = Harness::start().await;
    let follow = Running::start(&h, &["events", "-f", "--swarm", "default"]);
    let (carol, _) = register(&h, "carol").await;
    Running::wait_line(&follow.stdout, "carol joining", SHORT, |l| {
        l.contains("agent_joined") && l.contains("carol")
    });
    h.admin.remove_agent(carol).await.expect("remove carol");
    Running::wait_line(&follow.stdout, "carol leaving", SHORT, |l| {
        l.contains("agent_left") && l.contains("carol")
    });
    let log: Vec<Value> = serde_json::from_str(&ok(
        &h,
        &[
            "events",
            "--swarm",
            "default",
            "--type",
            "agent_left",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["agent_id"], json!(carol));
    let out = h.cli(&["events", "--type", "nonsense"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .next()
            .is_some_and(|l| l.contains("\"nonsense\" is not an event type (e.g. task_completed")),
        "{err}"
    );
}
