//! Kill -9 the coordinator while agents work and tasks are being submitted; start it again on
//! the same data directory; check that nothing acknowledged was lost and nothing ran to
//! completion twice.

mod common;

use common::free_port;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flotilla_client::Client;
use flotilla_core::{AgentSpec, Json, TaskId, TaskSpec, TaskStatus};
use parking_lot::Mutex;

struct Coordinator {
    child: Child,
}

impl Coordinator {
    async fn start(dir: &std::path::Path, port: u16) -> Coordinator {
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("FLOTILLA_DATA_DIR", dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("flotilla serve starts");
        let probe = Client::new(&format!("http://127.0.0.1:{port}"), "none").unwrap();
        let started = Instant::now();
        while probe.healthz().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the coordinator did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Coordinator { child }
    }

    fn kill9(mut self) {
        // SIGKILL: no chance to flush anything.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[derive(Default)]
struct Ledger {
    /// Tasks whose submission was acknowledged.
    accepted: HashSet<TaskId>,
    /// Tasks whose completion was acknowledged, with how many times.
    completed: HashMap<TaskId, u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut coordinator = Coordinator::start(dir.path(), port).await;
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let url = format!("http://127.0.0.1:{port}");
    let admin = Client::new(&url, token).unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // Four agents that take tasks and complete them, riding out the coordinator's deaths.
    let mut agents = Vec::new();
    for i in 0..4 {
        let spec = AgentSpec {
            name: Some(format!("crash-{i}")),
            max_concurrent_tasks: 1,
            ..AgentSpec::default()
        };
        let reg = admin.register_agent("default", &spec).await.unwrap();
        let client = admin.with_token(reg.token);
        let (ledger, stop) = (ledger.clone(), stop.clone());
        agents.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Between tasks it runs nothing: a task handed over by an answer that a
                // killed coordinator never sent goes back to the queue.
                let beat = flotilla_core::Heartbeat {
                    running_tasks: Some(Vec::new()),
                    ..Default::default()
                };
                let _ = client.heartbeat(reg.agent_id, &beat).await;
                match client.next_task(reg.agent_id, Duration::from_secs(1)).await {
                    Ok(Some(task)) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        if client
                            .complete_task(task.id, Json::null(), Some(task.attempts))
                            .await
                            .is_ok()
                        {
                            *ledger.lock().completed.entry(task.id).or_default() += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    // A submitter: single tasks and small batches, as fast as it is answered.
    let submitter = {
        let (admin, ledger, stop) = (admin.clone(), ledger.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let spec = TaskSpec {
                    payload: Json::from_value(&serde_json::json!({ "n": n })),
                    ..TaskSpec::default()
                };
                let result = if n.is_multiple_of(3) {
                    admin.submit_tasks("default", &vec![spec; 5]).await
                } else {
                    admin.submit_task("default", &spec).await.map(|t| vec![t])
                };
                match result {
                    Ok(tasks) => ledger.lock().accepted.extend(tasks.iter().map(|t| t.id)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };

    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(400 + 150 * round)).await;
        coordinator.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        coordinator = Coordinator::start(dir.path(), port).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    submitter.await.unwrap();

    // Let the agents finish everything that was accepted.
    let accepted: Vec<TaskId> = ledger.lock().accepted.iter().copied().collect();
    assert!(
        accepted.len() > 50,
        "the test submitted too little to mean anything ({})",
        accepted.len()
    );
    let stop_agents = Arc::new(AtomicBool::new(false));
    let finisher = {
        let (admin, ledger, stop) = (admin.clone(), ledger.clone(), stop_agents.clone());
        tokio::spawn(async move {
            let reg = admin
                .register_agent(
                    "default",
                    &AgentSpec {
                        max_concurrent_tasks: 4,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let client = admin.with_token(reg.token);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(task)) = client
                    .next_task(reg.agent_id, Duration::from_millis(500))
                    .await
                    && client
                        .complete_task(task.id, Json::null(), Some(task.attempts))
                        .await
                        .is_ok()
                {
                    *ledger.lock().completed.entry(task.id).or_default() += 1;
                }
            }
        })
    };
    let started = Instant::now();
    loop {
        let mut unfinished = 0;
        let mut missing = Vec::new();
        for chunk in accepted.chunks(5_000) {
            let found = admin.lookup_tasks(chunk).await.unwrap();
            missing.extend(found.missing);
            unfinished += found
                .items
                .iter()
                .filter(|t| !t.status().is_terminal())
                .count();
        }
        assert!(missing.is_empty(), "accepted tasks lost: {missing:?}");
        if unfinished == 0 {
            break;
        }
        // Tasks whose agents died with a coordinator come back when those leases lapse (15 s).
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{unfinished} tasks never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_agents.store(true, Ordering::Relaxed);
    finisher.await.unwrap();
    for a in agents {
        a.await.unwrap();
    }

    let completed: HashMap<TaskId, u32> = ledger.lock().completed.clone();
    for chunk in accepted.chunks(5_000) {
        for task in admin.lookup_tasks(chunk).await.unwrap().items {
            assert_eq!(task.status(), TaskStatus::Completed, "{task:?}");
        }
    }
    // Every acknowledged completion is recorded, and exactly once per task.
    for (id, times) in &completed {
        assert_eq!(*times, 1, "task {id} completion acknowledged {times} times");
        assert_eq!(
            admin.get_task(*id).await.unwrap().status(),
            TaskStatus::Completed
        );
    }
    let events = admin
        .list_events(&flotilla_client::EventQuery {
            kind: Some(flotilla_core::EventKind::TaskCompleted),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut per_task: HashMap<TaskId, u32> = HashMap::new();
    let mut page = events;
    loop {
        for e in &page.items {
            *per_task.entry(e.task_id.unwrap()).or_default() += 1;
        }
        let Some(cursor) = page.next_cursor.clone() else {
            break;
        };
        page = admin
            .list_events(&flotilla_client::EventQuery {
                kind: Some(flotilla_core::EventKind::TaskCompleted),
                limit: Some(1000),
                cursor: Some(cursor),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(
        per_task.values().all(|n| *n == 1),
        "a task completed twice in the log"
    );
    // Submissions whose answer was lost to a kill may exist too; every acknowledged one is there.
    for id in &accepted {
        assert_eq!(
            per_task.get(id),
            Some(&1),
            "task {id} has no completion in the log"
        );
    }
    coordinator.kill9();
}
