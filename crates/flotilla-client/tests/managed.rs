//! The client's calls for pools and managed agents, against a scripted HTTP server: the
//! requests they send and how they read the answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::Client;
use flotilla_client::worker::{WorkerConfig, run_worker_registered};
use flotilla_core::api::{FleetSpec, FleetSwarm};
use flotilla_core::{
    Agent, AgentId, AgentMode, AgentRole, AgentStatus, AgentTemplate, Json, Managed, Operation,
    Pool, PoolSpec, ReportedHealth, ResourceLimits, ResourceUsage, RuntimeKind, SwarmId, Task,
    Timestamp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request the scripted server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    content_type: Option<String>,
    body: String,
}

/// What the scripted server answers: a status, a content type, and the body in pieces sent
/// with a pause between them (chunked when there are several).
struct Answer {
    status: u16,
    content_type: &'static str,
    pieces: Vec<Vec<u8>>,
}

impl Answer {
    fn json(status: u16, value: &impl serde::Serialize) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            pieces: vec![serde_json::to_vec(value).unwrap()],
        }
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            pieces: vec![],
        }
    }
}

type Script = dyn Fn(&Seen) -> Answer + Send + Sync;

/// Starts a server answering every request with `script`; the URL and the requests seen.
async fn scripted(script: Arc<Script>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.lines();
                let mut first = lines.next().unwrap().split(' ');
                let method = first.next().unwrap().to_owned();
                let target = first.next().unwrap().to_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let len: usize = header("content-length")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let seen = Seen {
                    method,
                    target,
                    content_type: header("content-type"),
                    body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
                };
                log.lock().unwrap().push(seen.clone());
                let answer = script(&seen);
                let mut out = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\nconnection: close\r\n",
                    answer.status, answer.content_type
                );
                if answer.pieces.len() > 1 {
                    out.push_str("transfer-encoding: chunked\r\n\r\n");
                    let _ = conn.write_all(out.as_bytes()).await;
                    for piece in &answer.pieces {
                        let framed = [
                            format!("{:x}\r\n", piece.len()).into_bytes(),
                            piece.clone(),
                            b"\r\n".to_vec(),
                        ]
                        .concat();
                        let _ = conn.write_all(&framed).await;
                        let _ = conn.flush().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let _ = conn.write_all(b"0\r\n\r\n").await;
                } else {
                    let body = answer.pieces.concat();
                    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                    let _ = conn.write_all(out.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, seen)
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn template() -> AgentTemplate {
    AgentTemplate {
        command: "python3".into(),
        args: vec!["agents/wordcount.py".into()],
        env: [("LANG".to_owned(), "C.UTF-8".to_owned())].into(),
        workdir: Some("/srv/examples".into()),
        user: None,
        payload_env: Vec::new(),
        runtime: RuntimeKind::Process,
        mode: AgentMode::Exec,
        placement: Default::default(),
        host_labels: Vec::new(),
        limits: ResourceLimits {
            memory_bytes: Some(256 << 20),
            task_timeout: Some(Duration::from_secs(30)),
            ..ResourceLimits::default()
        },
        stop_grace: Duration::from_secs(10),
    }
}

fn pool() -> Pool {
    Pool {
        swarm_id: SwarmId(uuid::Uuid::now_v7()),
        name: "wordcount".into(),
        min_agents: 3,
        max_agents: 10,
        capabilities: vec!["text".into()],
        max_concurrent_tasks: 1,
        template: Some(template()),
        checkpoints: Default::default(),
        priority: flotilla_core::DEFAULT_POOL_PRIORITY,
        resources: Default::default(),
        scaling: Vec::new(),
        desired_agents: None,
        created_at: ts(1_000),
        updated_at: ts(2_000),
    }
}

fn agent(status: AgentStatus) -> Agent {
    Agent {
        id: AgentId(uuid::Uuid::now_v7()),
        swarm_id: SwarmId(uuid::Uuid::now_v7()),
        name: "wordcount-1".into(),
        agent_type: "wordcount".into(),
        capabilities: vec!["text".into()],
        max_concurrent_tasks: 1,
        role: AgentRole::Worker,
        requested_role: AgentRole::Worker,
        status,
        reported_health: ReportedHealth::Healthy,
        metadata: Json::empty_object(),
        resource_usage: ResourceUsage::default(),
        current_tasks: vec![],
        tasks_completed: 0,
        tasks_failed: 0,
        registered_at: ts(1_000),
        last_heartbeat_at: ts(1_000),
        lease_until: ts(16_000),
        stopped_at: None,
        removed_at: None,
        managed: Some(Managed {
            runtime: RuntimeKind::Tmux,
            mode: AgentMode::Daemon,
            pid: Some(4242),
            starts: 1,
            ..Managed::default()
        }),
        health: Default::default(),
        checkpoints: Vec::new(),
        subscriptions: Vec::new(),
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn pools_are_listed_read_put_and_deleted() {
    let p = pool();
    let answer_pool = p.clone();
    let (url, seen) = scripted(Arc::new(move |req: &Seen| {
        match (req.method.as_str(), req.target.as_str()) {
            ("GET", "/api/v1/swarms/default/pools") => Answer::json(
                200,
                &serde_json::json!({"items": [answer_pool], "next_cursor": null}),
            ),
            ("GET", _) => Answer::json(200, &answer_pool),
            ("PUT", _) => Answer::json(
                201,
                &serde_json::json!({"change": "created", "pool": answer_pool}),
            ),
            ("DELETE", _) => Answer::empty(204),
            _ => Answer::empty(500),
        }
    }))
    .await;
    let client = Client::new(&url, "admin").unwrap();

    assert_eq!(client.list_pools("default").await.unwrap(), vec![p.clone()]);
    assert_eq!(client.get_pool("default", "wordcount").await.unwrap(), p);
    let spec = PoolSpec {
        name: "wordcount".into(),
        min_agents: 3,
        max_agents: 10,
        capabilities: vec!["text".into()],
        max_concurrent_tasks: 1,
        template: Some(template()),
        checkpoints: Default::default(),
        priority: flotilla_core::DEFAULT_POOL_PRIORITY,
        resources: Default::default(),
        scaling: Vec::new(),
    };
    let put = client.put_pool("default", &spec).await.unwrap();
    assert_eq!(put.pool, p);
    assert_eq!(
        serde_json::to_value(put.change).unwrap(),
        serde_json::json!("created")
    );
    client
        .delete_pool("default", "wordcount", true)
        .await
        .unwrap();
    client
        .delete_pool("default", "wordcount", false)
        .await
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    let targets: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert_eq!(
        targets,
        [
            "GET /api/v1/swarms/default/pools",
            "GET /api/v1/swarms/default/pools/wordcount",
            "PUT /api/v1/swarms/default/pools/wordcount",
            "DELETE /api/v1/swarms/default/pools/wordcount?force=true",
            "DELETE /api/v1/swarms/default/pools/wordcount",
        ]
    );
    let body = json(&seen[2].body);
    assert_eq!(body["agent"]["limits"]["memory_bytes"], 268_435_456);
    assert_eq!(body["agent"]["limits"]["task_timeout_ms"], 30_000);
    assert_eq!(body["agent"]["stop_grace_ms"], 10_000);
    assert_eq!(body["agent"]["runtime"], "process");
    assert_eq!(seen[2].content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn spawning_and_lifecycle_answer_the_agent() {
    let a = agent(AgentStatus::Starting);
    let answer = a.clone();
    let (url, seen) = scripted(Arc::new(move |_req: &Seen| Answer::json(200, &answer))).await;
    let client = Client::new(&url, "admin").unwrap();

    assert_eq!(client.spawn_agent("default", "echo").await.unwrap(), a);
    assert_eq!(
        client
            .agent_lifecycle(a.id, Operation::Stop, true)
            .await
            .unwrap(),
        a
    );
    client
        .agent_lifecycle(a.id, Operation::Restart, false)
        .await
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/api/v1/swarms/default/pools/echo/agents");
    assert_eq!(seen[0].body, "");
    assert_eq!(seen[1].method, "PATCH");
    assert_eq!(seen[1].target, format!("/api/v1/agents/{}", a.id));
    assert_eq!(
        json(&seen[1].body),
        serde_json::json!({"operation": "stop", "force": true})
    );
    assert_eq!(
        json(&seen[2].body),
        serde_json::json!({"operation": "restart", "force": false})
    );
}

#[tokio::test]
async fn a_fleet_is_applied_with_one_put() {
    let (url, seen) = scripted(Arc::new(|_req: &Seen| {
        Answer::json(
            200,
            &serde_json::json!({"changes": [
                {"kind": "swarm", "name": "default", "action": "unchanged"},
                {"kind": "pool", "name": "default/wordcount", "action": "created"},
                {"kind": "agent", "name": "wordcount-1", "action": "spawned", "detail": "pid 12"},
            ]}),
        )
    }))
    .await;
    let client = Client::new(&url, "admin").unwrap();
    let fleet = FleetSpec {
        swarms: vec![FleetSwarm {
            name: "default".into(),
            description: None,
            topology: None,
            config: None,
            pools: vec![PoolSpec {
                name: "wordcount".into(),
                min_agents: 1,
                max_agents: 100,
                capabilities: vec![],
                max_concurrent_tasks: 1,
                template: Some(template()),
                checkpoints: Default::default(),
                priority: flotilla_core::DEFAULT_POOL_PRIORITY,
                resources: Default::default(),
                scaling: Vec::new(),
            }],
        }],
    };
    let applied = client.apply_fleet(&fleet).await.unwrap();
    assert_eq!(applied.changes.len(), 3);
    assert_eq!(applied.changes[2].detail.as_deref(), Some("pid 12"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].target, "/api/v1/fleet");
    let body = json(&seen[0].body);
    assert_eq!(body["swarms"][0]["name"], "default");
    assert_eq!(body["swarms"][0]["pools"][0]["agent"]["command"], "python3");
    // What was sent reads back as the same document.
    let back: FleetSpec = serde_json::from_value(body).unwrap();
    assert_eq!(back, fleet);
}

#[tokio::test]
async fn logs_are_read_whole_or_followed_in_pieces() {
    let id = AgentId(uuid::Uuid::now_v7());
    let (url, seen) = scripted(Arc::new(|req: &Seen| {
        if req.target.contains("tail=7") {
            Answer::json(
                404,
                &serde_json::json!({"error": {"code": "not_found", "message": "no agent"}}),
            )
        } else if req.target.contains("follow=true") {
            // "é" (C3 A9) and "ö" (C3 B6) are split across pieces.
            Answer {
                status: 200,
                content_type: "text/plain; charset=utf-8",
                pieces: vec![
                    b"h\xC3".to_vec(),
                    b"\xA9llo\n".to_vec(),
                    b"w\xC3".to_vec(),
                    b"\xB6rld\n".to_vec(),
                ],
            }
        } else {
            Answer {
                status: 200,
                content_type: "text/plain; charset=utf-8",
                pieces: vec![b"line 1\nline 2\n".to_vec()],
            }
        }
    }))
    .await;
    let client = Client::new(&url, "admin").unwrap();

    assert_eq!(client.agent_logs(id, 5).await.unwrap(), "line 1\nline 2\n");
    let err = client.agent_logs(id, 7).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let mut stream = client.follow_agent_logs(id, 50).await.unwrap();
    let mut text = String::new();
    let mut pieces = 0;
    while let Some(piece) = stream.next_chunk().await.unwrap() {
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        text.push_str(&piece);
        pieces += 1;
    }
    assert_eq!(text, "héllo\nwörld\n");
    assert!(pieces >= 2, "{pieces}");
    assert_eq!(stream.next_chunk().await.unwrap(), None);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].target, format!("/api/v1/agents/{id}/logs?tail=5"));
    assert_eq!(
        seen[2].target,
        format!("/api/v1/agents/{id}/logs?follow=true&tail=50")
    );
    let err = client.follow_agent_logs(id, 7).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_registered_worker_heartbeats_works_and_does_not_unregister() {
    let id = AgentId(uuid::Uuid::now_v7());
    let task_id = uuid::Uuid::now_v7();
    let handed = Arc::new(Mutex::new(false));
    let handed2 = handed.clone();
    let (url, seen) = scripted(Arc::new(move |req: &Seen| {
        let path = req.target.split('?').next().unwrap();
        if path.ends_with("/heartbeat") {
            Answer::json(
                200,
                &serde_json::json!({"agent_id": id, "status": "idle",
                    "lease_until": "2030-01-01T00:00:00.000Z", "heartbeat_interval_ms": 200}),
            )
        } else if path.ends_with("/tasks/next") {
            let mut handed = handed2.lock().unwrap();
            if *handed {
                Answer::empty(204)
            } else {
                *handed = true;
                Answer::json(200, &task(id, task_id))
            }
        } else if path.ends_with("/complete") {
            Answer::json(200, &task(id, task_id))
        } else {
            Answer::empty(500)
        }
    }))
    .await;
    let agent_client = Client::new(&url, "agent-token").unwrap();
    let config = WorkerConfig {
        poll_wait: Duration::from_secs(1),
        ..WorkerConfig::default()
    };
    let stats = run_worker_registered(
        agent_client,
        id,
        config,
        |t: Task| async move {
            Ok(Json::from_value(
                &serde_json::json!({"echo": t.payload.to_value()}),
            ))
        },
        tokio::time::sleep(Duration::from_millis(800)),
    )
    .await
    .unwrap();
    assert_eq!(stats.agent_id, Some(id));
    assert_eq!(stats.completed, 1);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[0].target.ends_with("/heartbeat"),
        "the first call is a heartbeat: {:?}",
        seen[0]
    );
    assert!(
        seen.iter().all(|s| s.method != "DELETE"),
        "a managed agent is not unregistered: {seen:?}"
    );
    assert!(
        seen.iter().all(|s| !s.target.contains("/swarms/")),
        "nothing is registered: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.target == format!("/api/v1/tasks/{task_id}/complete")),
        "{seen:?}"
    );
}

fn task(agent: AgentId, id: uuid::Uuid) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "swarm_id": "0190b6e4-0000-7000-8000-000000000002", "parent_task_id": null,
        "type": "echo", "payload": {"n": 1}, "priority": 5, "required_capabilities": [],
        "depends_on": [], "affinity_key": null, "idempotency_key": null, "attempts": 1,
        "max_attempts": 3, "backoff": {"initial_ms": 1000, "max_ms": 2000},
        "timeout_ms": 10000, "deadline": null, "last_error": null, "progress": null,
        "created_at": "2020-01-01T00:00:00.000Z", "updated_at": "2020-01-01T00:00:00.000Z",
        "status": "running", "agent_id": agent,
        "started_at": "2020-01-01T00:00:00.000Z", "timeout_at": "2020-01-01T00:00:30.000Z"
    })
}
