//! Topologies end to end: a real coordinator and real connected agents (small clients in this
//! file that register, heartbeat, long-poll for tasks and report, over HTTP), for every
//! topology: roles and leader failover in a star, ordered tasks in ring order under an agent's
//! death, delegation down a hierarchy with results aggregated up, gossip and routing in a mesh,
//! and a live change of topology with work in flight.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, eventually};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Heartbeats every 200 ms, lease 600 ms: failures are noticed fast.
async fn fast_swarm(h: &Harness, name: &str, topology: &str, topo_config: Value) {
    let (s, v) = h
        .post(
            "/swarms",
            json!({
                "name": name,
                "topology": topology,
                "config": {
                    "heartbeat_interval_ms": 200,
                    "heartbeat_miss_limit": 3,
                    "topology": topo_config
                }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// What an agent did: the task, its type, which agent, when it started and finished.
#[derive(Clone, Debug)]
struct Done {
    task: String,
    task_type: String,
    agent: String,
    started: Instant,
    finished: Instant,
}

type Log = Arc<Mutex<Vec<Done>>>;

/// A connected agent: its loops run until it is killed.
struct TestAgent {
    name: String,
    id: String,
    token: String,
    loops: Vec<JoinHandle<()>>,
}

impl TestAgent {
    fn kill(&self) {
        for l in &self.loops {
            l.abort();
        }
    }
}

/// How an agent handles a task: `None` completes it with `{"by": name}` after `work`;
/// `Some(subtasks)` delegates it.
type Behaviour = Arc<dyn Fn(&Value, &Value) -> Option<Vec<Value>> + Send + Sync>;

async fn connect(
    h: &Harness,
    swarm: &str,
    name: &str,
    work: Duration,
    behaviour: Behaviour,
    log: Log,
    stop_after: Option<usize>,
) -> TestAgent {
    let (id, token) = h.register(swarm, json!({"name": name})).await;
    let base = h.url("");
    let http = h.http.clone();
    let hb = {
        let (http, base, id, token) = (http.clone(), base.clone(), id.clone(), token.clone());
        tokio::spawn(async move {
            loop {
                let _ = http
                    .post(format!("{base}/agents/{id}/heartbeat"))
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let worker = {
        let (base, id, token, name) = (base.clone(), id.clone(), token.clone(), name.to_owned());
        tokio::spawn(async move {
            let mut done = 0;
            loop {
                let resp = http
                    .get(format!("{base}/agents/{id}/tasks/next?wait=1"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let Ok(resp) = resp else { continue };
                if resp.status() != StatusCode::OK {
                    continue;
                }
                let task: Value = resp.json().await.unwrap();
                let started = Instant::now();
                let me: Value = http
                    .get(format!("{base}/agents/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let tid = task["id"].as_str().unwrap().to_owned();
                match behaviour(&task, &me) {
                    Some(subtasks) => {
                        let r = http
                            .post(format!("{base}/tasks/{tid}/delegate"))
                            .bearer_auth(&token)
                            .json(&json!({"subtasks": subtasks}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(
                            r.status(),
                            StatusCode::CREATED,
                            "{}",
                            r.text().await.unwrap()
                        );
                    }
                    None => {
                        tokio::time::sleep(work).await;
                        let r = http
                            .post(format!("{base}/tasks/{tid}/complete"))
                            .bearer_auth(&token)
                            .json(&json!({"result": {"by": name, "payload": task["payload"]}}))
                            .send()
                            .await
                            .unwrap();
                        if r.status() == StatusCode::OK {
                            log.lock().push(Done {
                                task: tid,
                                task_type: task["type"].as_str().unwrap().to_owned(),
                                agent: name.clone(),
                                started,
                                finished: Instant::now(),
                            });
                        }
                    }
                }
                done += 1;
                if stop_after == Some(done) {
                    // Dies right after its task, heartbeats and all (see kill below).
                    return;
                }
            }
        })
    };
    TestAgent {
        name: name.to_owned(),
        id,
        token,
        loops: vec![hb, worker],
    }
}

fn just_work() -> Behaviour {
    Arc::new(|_, _| None)
}

async fn topology(h: &Harness, swarm: &str) -> Value {
    let (s, v) = h.get(&format!("/swarms/{swarm}/topology")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn wait_done(h: &Harness, ids: &[String], within: Duration) {
    for id in ids {
        eventually(&format!("task {id} completed"), within, || async {
            let (_, t) = h.get(&format!("/tasks/{id}")).await;
            (t["status"] == "completed").then_some(())
        })
        .await;
    }
}

/// Waits until the agents logged these tasks (they log once their report is answered).
async fn wait_logged(log: &Log, ids: &[String]) -> Vec<Done> {
    eventually(
        "agents logged their tasks",
        Duration::from_secs(5),
        || async {
            let done = log.lock().clone();
            ids.iter()
                .all(|id| done.iter().any(|d| &d.task == id))
                .then_some(done)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_gives_roles_and_elects_a_new_leader_when_its_leader_dies() {
    let h = Harness::start().await;
    fast_swarm(&h, "star", "star", json!({})).await;
    let log: Log = Default::default();
    let mut agents = Vec::new();
    for i in 0..4 {
        let a = connect(
            &h,
            "star",
            &format!("s{i}"),
            Duration::ZERO,
            just_work(),
            log.clone(),
            None,
        )
        .await;
        agents.push(a);
    }
    let view = topology(&h, "star").await;
    assert_eq!(view["topology"], "star");
    assert_eq!(view["leader"], json!(agents[0].id));
    let roles: Vec<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["leader", "worker", "worker", "worker"]);
    // Workers talk to the leader, not to one another.
    let (s, _) = h
        .call_as(
            &agents[1].token,
            Method::POST,
            &format!("/agents/{}/messages", agents[0].id),
            Some(json!({"body": "hi"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h
        .call_as(
            &agents[1].token,
            Method::POST,
            &format!("/agents/{}/messages", agents[2].id),
            Some(json!({"body": "hi"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The leader dies: within its lease (600 ms) and a tick, another is elected.
    let killed = Instant::now();
    agents[0].kill();
    let new_leader = eventually("a new leader", Duration::from_secs(5), || async {
        let v = topology(&h, "star").await;
        (v["leader"] != json!(agents[0].id) && v["leader"].is_string()).then_some(v)
    })
    .await;
    let took = killed.elapsed();
    assert_eq!(new_leader["leader"], json!(agents[1].id));
    assert_eq!(
        new_leader["status"], "degraded",
        "s0 is unhealthy, so the swarm is degraded"
    );
    assert!(took < Duration::from_secs(2), "election took {took:?}");
    // The view is read from memory; the event is in the store once the batch is committed.
    let items = eventually("the election's event", Duration::from_secs(2), || async {
        let (_, events) = h.get("/events?type=leader_election&swarm=star").await;
        let items = events["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2).then_some(items)
    })
    .await;
    let detail = items[1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("s1 elected leader") && detail.contains("s0 is unhealthy"),
        "{detail}"
    );
    // The new leader is a leader in its own agent record too; work still gets done.
    let (_, a1) = h.get(&format!("/agents/{}", agents[1].id)).await;
    assert_eq!(a1["role"], "leader");
    let t = h.submit("star", json!({"type": "after"})).await;
    wait_done(
        &h,
        &[t["id"].as_str().unwrap().to_owned()],
        Duration::from_secs(5),
    )
    .await;
    eprintln!("star: leader died, new leader elected after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_without_failover_is_degraded_while_leaderless() {
    let h = Harness::start().await;
    fast_swarm(
        &h,
        "nofail",
        "star",
        json!({"star": {"failover_coordinator": false}}),
    )
    .await;
    let log: Log = Default::default();
    let a = connect(
        &h,
        "nofail",
        "n0",
        Duration::ZERO,
        just_work(),
        log.clone(),
        None,
    )
    .await;
    let _b = connect(
        &h,
        "nofail",
        "n1",
        Duration::ZERO,
        just_work(),
        log.clone(),
        None,
    )
    .await;
    a.kill();
    let v = eventually("leaderless", Duration::from_secs(5), || async {
        let v = topology(&h, "nofail").await;
        v["leader"].is_null().then_some(v)
    })
    .await;
    assert_eq!(v["status"], "degraded");
    let (_, swarm) = h.get("/swarms/nofail").await;
    assert_eq!(swarm["status"], "degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_runs_ordered_tasks_in_ring_order_and_skips_a_dead_agent() {
    let h = Harness::start().await;
    fast_swarm(
        &h,
        "ring",
        "ring",
        json!({"ring": {"token_timeout_ms": 3000}}),
    )
    .await;
    let log: Log = Default::default();
    let mut agents = Vec::new();
    for i in 0..4 {
        // r2 dies right after its second task.
        let stop = (i == 2).then_some(2);
        let a = connect(
            &h,
            "ring",
            &format!("r{i}"),
            Duration::from_millis(40),
            just_work(),
            log.clone(),
            stop,
        )
        .await;
        agents.push(a);
    }
    let view = topology(&h, "ring").await;
    assert_eq!(view["token"]["holder"], json!(agents[0].id));
    assert_eq!(view["edges"].as_array().unwrap().len(), 4);
    let tasks: Vec<Value> = (0..12)
        .map(|i| json!({"type": "step", "payload": {"i": i}, "ordered": true}))
        .collect();
    let (s, v) = h.post("/swarms/ring/tasks", Value::Array(tasks)).await;
    assert!(s.is_success(), "{v}");
    let ids: Vec<String> = v["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    wait_done(&h, &ids, Duration::from_secs(30)).await;
    // r2's heartbeats stop with it.
    agents[2].kill();
    let done = wait_logged(&log, &ids).await;
    let order: Vec<&str> = ids
        .iter()
        .map(|id| done.iter().find(|d| &d.task == id).unwrap().agent.as_str())
        .collect();
    // One at a time, in submission order.
    for w in ids.windows(2) {
        let a = done.iter().find(|d| d.task == w[0]).unwrap();
        let b = done.iter().find(|d| d.task == w[1]).unwrap();
        assert!(b.started >= a.finished, "ordered tasks overlapped");
    }
    assert_eq!(
        order,
        [
            "r0", "r1", "r2", "r3", "r0", "r1", "r2", "r3", "r0", "r1", "r3", "r0"
        ],
        "around the ring; r2 skipped once it died"
    );
    assert!(done.iter().all(|d| d.task_type == "step"));
    let (_, passes) = h
        .get("/events?type=token_passed&swarm=ring&limit=100")
        .await;
    assert!(passes["items"].as_array().unwrap().len() >= 12, "{passes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hierarchy_delegates_down_the_tree_and_aggregates_results_up() {
    let h = Harness::start().await;
    fast_swarm(
        &h,
        "tree",
        "hierarchical",
        json!({"hierarchical": {"parent_child_ratio": 2}}),
    )
    .await;
    let log: Log = Default::default();
    // Leaders split a project into features; supervisors split a feature into units; workers
    // do units.
    let behaviour: Behaviour = Arc::new(|task, me| {
        let role = me["role"].as_str().unwrap_or("worker");
        match (task["type"].as_str().unwrap(), role) {
            ("project", "leader" | "coordinator") => Some(
                (0..2)
                    .map(|f| json!({"type": "feature", "payload": {"feature": f}}))
                    .collect(),
            ),
            ("feature", "supervisor") => Some(
                (0..2)
                    .map(|u| json!({"type": "unit", "payload": {"feature": task["payload"]["feature"], "unit": u}}))
                    .collect(),
            ),
            _ => None,
        }
    });
    let mut agents = Vec::new();
    for i in 0..7 {
        agents.push(
            connect(
                &h,
                "tree",
                &format!("h{i}"),
                Duration::from_millis(20),
                behaviour.clone(),
                log.clone(),
                None,
            )
            .await,
        );
    }
    let view = topology(&h, "tree").await;
    let nodes = view["nodes"].as_array().unwrap().clone();
    let role_of = |name: &str| {
        nodes.iter().find(|n| n["name"] == name).unwrap()["role"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(role_of("h0"), "leader");
    let supervisors: Vec<String> = nodes
        .iter()
        .filter(|n| n["role"] == "supervisor")
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(supervisors.len(), 2, "{view}");
    let project = h.submit("tree", json!({"type": "project"})).await;
    let pid = project["id"].as_str().unwrap().to_owned();
    wait_done(&h, std::slice::from_ref(&pid), Duration::from_secs(20)).await;
    let (_, done) = h.get(&format!("/tasks/{pid}")).await;
    let features = done["result"]["subtasks"].as_array().unwrap();
    assert_eq!(features.len(), 2, "{done}");
    let mut leaf_agents = Vec::new();
    for f in features {
        let units = f["result"]["subtasks"].as_array().unwrap();
        assert_eq!(units.len(), 2, "{f}");
        for u in units {
            leaf_agents.push(u["result"]["by"].as_str().unwrap().to_owned());
        }
    }
    // Every unit was done by a worker, each under the supervisor of its feature.
    let parent_of = |name: &str| {
        let node = nodes.iter().find(|n| n["name"] == name).unwrap();
        let pid = node["parent"].clone();
        nodes
            .iter()
            .find(|n| n["id"] == pid)
            .map(|n| n["name"].as_str().unwrap().to_owned())
    };
    for (i, f) in features.iter().enumerate() {
        let (_, feature_task) = h
            .get(&format!("/tasks/{}", f["task_id"].as_str().unwrap()))
            .await;
        let supervisor = feature_task["delegation"]["agent_id"].clone();
        let sup_name = nodes.iter().find(|n| n["id"] == supervisor).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(supervisors.contains(&sup_name));
        for u in f["result"]["subtasks"].as_array().unwrap() {
            let by = u["result"]["by"].as_str().unwrap();
            assert_eq!(role_of(by), "worker", "feature {i}'s unit done by {by}");
            assert_eq!(
                parent_of(by).as_deref(),
                Some(sup_name.as_str()),
                "unit done outside its supervisor's team"
            );
        }
    }
    let (_, delegated) = h.get("/events?type=task_delegated&swarm=tree").await;
    assert_eq!(
        delegated["items"].as_array().unwrap().len(),
        3,
        "{delegated}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_spreads_membership_by_gossip_and_routes_to_neighbours() {
    let h = Harness::start().await;
    fast_swarm(
        &h,
        "mesh",
        "mesh",
        json!({"mesh": {"connection_strategy": "nearest", "neighbours": 2, "routing": "targeted", "gossip_interval_ms": 100}}),
    )
    .await;
    let log: Log = Default::default();
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(
            connect(
                &h,
                "mesh",
                &format!("m{i}"),
                Duration::ZERO,
                just_work(),
                log.clone(),
                None,
            )
            .await,
        );
    }
    let converged = |v: &Value| {
        let version = v["membership_version"].clone();
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["membership_version"] == version)
    };
    eventually("gossip converges", Duration::from_secs(5), || async {
        let v = topology(&h, "mesh").await;
        converged(&v).then_some(())
    })
    .await;
    let view = topology(&h, "mesh").await;
    assert_eq!(
        view["edges"].as_array().unwrap().len(),
        8,
        "a ring lattice of 8 with 2 neighbours"
    );
    // m0's neighbours are m1 and m7; m4 is not.
    let (s, _) = h
        .call_as(
            &agents[0].token,
            Method::POST,
            &format!("/agents/{}/messages", agents[1].id),
            Some(json!({"body": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = h
        .call_as(
            &agents[0].token,
            Method::POST,
            &format!("/agents/{}/messages", agents[4].id),
            Some(json!({"body": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neighbours")
    );
    // A newcomer: its neighbours know at once, the rest hear within a few gossip rounds.
    let joined = Instant::now();
    connect(
        &h,
        "mesh",
        "m8",
        Duration::ZERO,
        just_work(),
        log.clone(),
        None,
    )
    .await;
    let v = topology(&h, "mesh").await;
    assert!(
        !converged(&v),
        "in a lattice not everyone hears at once: {v}"
    );
    eventually("gossip converges again", Duration::from_secs(5), || async {
        let v = topology(&h, "mesh").await;
        converged(&v).then_some(())
    })
    .await;
    eprintln!(
        "mesh: membership of 9 converged {:?} after a join",
        joined.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_topology_live_reassigns_roles_and_loses_no_task() {
    let h = Harness::start().await;
    fast_swarm(&h, "live", "star", json!({})).await;
    let log: Log = Default::default();
    let mut agents = Vec::new();
    for i in 0..5 {
        agents.push(
            connect(
                &h,
                "live",
                &format!("l{i}"),
                Duration::from_millis(60),
                just_work(),
                log.clone(),
                None,
            )
            .await,
        );
    }
    let tasks: Vec<Value> = (0..40)
        .map(|i| json!({"type": "work", "payload": {"i": i}}))
        .collect();
    let (_, v) = h.post("/swarms/live/tasks", Value::Array(tasks)).await;
    let ids: Vec<String> = v["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for (topology, config) in [
        ("ring", json!(null)),
        (
            "hierarchical",
            json!({"hierarchical": {"parent_child_ratio": 2}}),
        ),
        ("mesh", json!({"mesh": {"connection_strategy": "full"}})),
    ] {
        let mut body = json!({"topology": topology});
        if !config.is_null() {
            body["config"] = config;
        }
        let (s, view) = h
            .call(Method::PUT, "/swarms/live/topology", Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "{view}");
        assert_eq!(view["topology"], topology);
        assert_eq!(
            view["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["role"] == "leader")
                .count(),
            1
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_done(&h, &ids, Duration::from_secs(30)).await;
    let done = wait_logged(&log, &ids).await;
    for id in &ids {
        assert_eq!(
            done.iter().filter(|d| &d.task == id).count(),
            1,
            "task {id} done once"
        );
    }
    let (_, events) = h.get("/events?type=topology_changed&swarm=live").await;
    let details: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "star -> ring",
            "ring -> hierarchical",
            "hierarchical -> mesh"
        ]
    );
    // Settings left out keep their values; a bad one is refused with the field named.
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/live/topology",
            Some(json!({"topology": "ring", "config": {"ring": {"token_timeout_ms": 1}}})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token_timeout_ms")
    );
    let (s, v) = h
        .call(
            Method::PUT,
            "/swarms/live/topology",
            Some(json!({"topology": "torus"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Graphviz.
    let resp = h
        .http
        .get(h.url("/swarms/live/topology?format=dot"))
        .bearer_auth(&h.server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "text/vnd.graphviz; charset=utf-8"
    );
    let dot = resp.text().await.unwrap();
    assert!(dot.starts_with("graph \"live\""), "{dot}");
    for a in &agents {
        assert!(dot.contains(&a.name), "{dot}");
    }
}
