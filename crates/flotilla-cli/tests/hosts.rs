//! Hosts end to end: a coordinator in this process, real `flotilla host` processes on loopback
//! (each pretending to be a machine of its own with the capacity it is given), and real agent
//! processes that they start. Placement within capacity and labels, a host killed with its
//! agents (as when a machine dies) under a task load, a host that leaves, a host killed alone
//! and started again.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use flotilla_core::api::TokenSpec;
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(20);

/// A `flotilla host` process; killed when dropped.
struct HostProcess {
    child: Child,
}

impl HostProcess {
    fn start(h: &Harness, token: &str, name: &str, cpu: &str, labels: &[&str]) -> HostProcess {
        let mut cmd = Command::new(FLOTILLA);
        cmd.args([
            "host",
            "--coordinator",
            &h.server().url(),
            "--name",
            name,
            "--capacity-cpu",
            cpu,
            "--capacity-memory",
            "4GiB",
            "--work-dir",
        ])
        .arg(h.path(&format!("host-{name}")))
        .env("FLOTILLA_TOKEN", token)
        .env(MARKER_ENV, &h.marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        for l in labels {
            cmd.args(["--label", l]);
        }
        HostProcess {
            child: cmd.spawn().expect("flotilla host starts"),
        }
    }

    fn signal(&self, sig: &str) {
        signal_pids(sig, &[self.child.id()]);
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn operator_token(h: &Harness) -> String {
    h.admin
        .create_token(&TokenSpec {
            role: "operator".to_owned(),
            swarm: None,
            expires_in_ms: None,
            label: Some("hosts".to_owned()),
        })
        .await
        .expect("a token")
        .token
}

/// The hosts as `GET /hosts` shows them, by name.
async fn hosts(h: &Harness) -> BTreeMap<String, Value> {
    h.admin
        .hosts()
        .await
        .expect("GET /hosts")
        .into_iter()
        .map(|v| (v.name.clone(), serde_json::to_value(v).unwrap()))
        .collect()
}

/// Where each agent of the pool runs (`managed.host`), for the idle or busy ones.
async fn placement(h: &Harness, pool: &str) -> BTreeMap<String, String> {
    h.agents("default", pool)
        .await
        .iter()
        .filter(|a| matches!(a["status"].as_str(), Some("idle" | "busy")))
        .filter_map(|a| {
            Some((
                a["name"].as_str()?.to_owned(),
                a["managed"]["host"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// A pool of daemon-mode echo agents placed on hosts, each reserving half a core.
fn echo_pool(h: &Harness, min: u32, labels: &[&str]) -> Value {
    json!({
        "name": "echo",
        "min_agents": min,
        "max_agents": 10,
        "resources": { "cpu_cores": 0.5 },
        "agent": h.template(json!({
            "command": FLOTILLA,
            "args": ["worker", "--agent-from-env", "--", "sh", "-c", "sleep 0.3; cat"],
            "mode": "daemon",
            "placement": "hosts",
            "host_labels": labels,
        })),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_on_hosts_within_capacity_and_move_when_a_host_dies() {
    let h = Harness::start_with(|c| c.host_timeout = Duration::from_secs(2)).await;
    let token = operator_token(&h).await;
    // Room for two agents on `small`, four on `big`; `gpu` lacks the label the pool asks for.
    let _small = HostProcess::start(&h, &token, "small", "1", &["linux"]);
    let big = HostProcess::start(&h, &token, "big", "2", &["linux"]);
    let _gpu = HostProcess::start(&h, &token, "gpu", "8", &["gpu"]);
    poll("three hosts ready", SHORT, || async {
        let hs = hosts(&h).await;
        if hs.len() == 3 && hs.values().all(|v| v["status"] == "ready") {
            Ok(())
        } else {
            Err(hs)
        }
    })
    .await;
    h.put_pool("default", echo_pool(&h, 4, &["linux"])).await;
    let placed = poll("four agents running on hosts", SHORT, || async {
        let p = placement(&h, "echo").await;
        if p.len() == 4 { Ok(p) } else { Err(p) }
    })
    .await;
    let on = |p: &BTreeMap<String, String>, host: &str| p.values().filter(|h| *h == host).count();
    assert!(
        on(&placed, "small") <= 2,
        "over small's capacity: {placed:?}"
    );
    assert_eq!(on(&placed, "gpu"), 0, "the label was ignored: {placed:?}");
    // The processes run where the coordinator says: each agent's process group carries its
    // agent id.
    for a in h.agents("default", "echo").await {
        let pgid = a["managed"]["pid"].as_u64().expect("a process group") as u32;
        assert!(
            !group_members(pgid).is_empty(),
            "no process for {}: {a:#}",
            a["name"]
        );
    }
    // Its log and terminal are on its host: the CLI says where.
    let name = h.agents("default", "echo").await[0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        ["agent", "logs", name.as_str()],
        ["agent", "attach", name.as_str()],
    ] {
        let out = h.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("runs on host"),
            "{args:?}: {err}"
        );
    }
    // Allocations as the hosts' view shows them.
    let hs = hosts(&h).await;
    let allocated: f64 = hs
        .values()
        .map(|v| v["allocated"]["cpu_cores"].as_f64().unwrap())
        .sum();
    assert_eq!(allocated, 2.0, "{hs:#?}");

    // A load, and the machine `small` dies in the middle of it: the host and its agents.
    let tasks: Vec<_> = {
        let mut ids = Vec::new();
        for i in 0..60 {
            ids.push(
                h.submit("default", json!({ "type": "echo", "payload": { "n": i } }))
                    .await,
            );
        }
        ids
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_small: Vec<u32> = h
        .agents("default", "echo")
        .await
        .iter()
        .filter(|a| a["managed"]["host"] == "small")
        .map(|a| a["managed"]["pid"].as_u64().unwrap() as u32)
        .collect();
    let killed = Instant::now();
    _small.signal("KILL");
    for g in &on_small {
        signal_group("KILL", *g);
    }
    // Lost after the host timeout; its agents start again on `big`, which has room for all
    // four (and never on `gpu`).
    let lost_after = poll("small lost", SHORT, || async {
        let hs = hosts(&h).await;
        if hs["small"]["status"] == "lost" {
            Ok(killed.elapsed())
        } else {
            Err(hs["small"].clone())
        }
    })
    .await;
    let replaced = poll("four agents running again", SHORT, || async {
        let p = placement(&h, "echo").await;
        if p.len() == 4 && p.values().all(|h| h == "big") {
            Ok(killed.elapsed())
        } else {
            Err(p)
        }
    })
    .await;
    eprintln!(
        "host killed with {} agent(s): lost after {lost_after:?}, all agents running on the other host after {replaced:?}",
        on_small.len()
    );
    // No accepted task is lost; each ran to completion (some a second time, on another agent,
    // after the first ran on a dead machine).
    let mut retried = 0;
    for id in &tasks {
        let t = h.finished(*id, Duration::from_secs(60)).await;
        assert_eq!(t["status"], "completed", "{t:#}");
        if t["attempts"].as_u64().unwrap() > 1 {
            retried += 1;
        }
    }
    eprintln!(
        "{} tasks completed, {retried} of them after a retry",
        tasks.len()
    );
    let events = h.cli(&["events", "--type", "host_lost", "--json"]);
    let events: Vec<Value> = serde_json::from_slice(&events.stdout).unwrap();
    assert!(
        events.iter().any(
            |e| e["type"] == "host_lost" && e["detail"].as_str().unwrap().contains("\"small\"")
        ),
        "{events:#?}"
    );

    // Growing the pool past what the labelled hosts hold: the rest waits, saying why, and is
    // placed when a host with room joins.
    let grown = h.cli(&["swarm", "scale", "default", "echo", "6"]);
    assert!(grown.status.success(), "{grown:?}");
    poll("a pool waiting for a host", SHORT, || async {
        let out = h.cli(&["events", "--type", "resources_waiting", "--json"]);
        let ev: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if ev.iter().any(|e| {
            e["detail"].as_str().unwrap().contains("no host has room")
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("host big: CPU needs")
        }) {
            Ok(())
        } else {
            Err(ev)
        }
    })
    .await;
    let _more = HostProcess::start(&h, &token, "more", "1", &["linux"]);
    let grown = poll("six agents running", SHORT, || async {
        let p = placement(&h, "echo").await;
        if p.len() == 6 { Ok(p) } else { Err(p) }
    })
    .await;
    assert_eq!(on(&grown, "more"), 2, "{grown:?}");
    assert_eq!(on(&grown, "big"), 4, "{grown:?}");

    // `flotilla status --cluster` shows the hosts and their agents.
    let out = h.cli(&["status", "--cluster"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("small") && text.contains("lost") && text.contains("2.00/2.00 cores"),
        "{text}"
    );

    // A host that leaves (SIGTERM) says so: its agents are placed elsewhere at once, not after
    // the timeout; here nowhere has room, so they wait.
    let left = Instant::now();
    big.signal("TERM");
    poll("big left", SHORT, || async {
        let hs = hosts(&h).await;
        if hs["big"]["status"] == "left" {
            Ok(())
        } else {
            Err(hs["big"].clone())
        }
    })
    .await;
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "{:?}",
        left.elapsed()
    );
    poll("big's agents off it", SHORT, || async {
        let p = placement(&h, "echo").await;
        if on(&p, "big") == 0 { Ok(()) } else { Err(p) }
    })
    .await;
    drop(big);
    h.finish().await;
}

/// The process groups of the two idle agents of the echo pool, other than `old` ones.
async fn idle_groups(h: &Harness, what: &str, old: &[u32]) -> Vec<u32> {
    poll(what, SHORT, || async {
        let agents = h.agents("default", "echo").await;
        let pids: Vec<u32> = agents
            .iter()
            .filter(|a| a["status"] == "idle")
            .filter_map(|a| a["managed"]["pid"].as_u64().map(|p| p as u32))
            .filter(|p| !old.contains(p))
            .collect();
        if pids.len() == 2 {
            Ok(pids)
        } else {
            Err(agents)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_alone_and_started_again_leaves_no_agent_running_twice() {
    let h = Harness::start_with(|c| c.host_timeout = Duration::from_secs(3)).await;
    let token = operator_token(&h).await;
    let first = HostProcess::start(&h, &token, "solo", "2", &[]);
    h.put_pool("default", echo_pool(&h, 2, &[])).await;
    let before = idle_groups(&h, "two agents on solo", &[]).await;
    // The host dies; its agents live on (they talk to the coordinator themselves).
    first.signal("KILL");
    drop(first);
    for g in &before {
        assert!(
            !group_members(*g).is_empty(),
            "agent group {g} died with the host"
        );
    }
    // Started again before the timeout: it kills what the last run left, registers, and the
    // coordinator starts the agents anew on it.
    let _second = HostProcess::start(&h, &token, "solo", "2", &[]);
    let after = idle_groups(&h, "two new agent processes", &before).await;
    for g in &before {
        wait_until("the old agent gone", Duration::from_secs(5), || {
            if group_members(*g).is_empty() {
                Ok(())
            } else {
                Err(group_members(*g))
            }
        })
        .await;
    }
    for g in &after {
        assert!(
            !group_members(*g).is_empty(),
            "new agent group {g} is not running"
        );
    }
    // Tasks run on the new processes.
    let id = h
        .submit("default", json!({ "payload": { "hello": "host" } }))
        .await;
    let t = h.finished(id, SHORT).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"]["hello"], "host", "{t:#}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hosts_and_stale_sessions_get_clear_errors() {
    let h = Harness::start().await;
    let url = h.server().url();
    let http = reqwest::Client::new();
    let admin = &h.server().admin_token;
    let post = |path: &str, body: Value, token: &str| {
        http.post(format!("{url}/api/v1{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let cap = json!({ "cpu_cores": 1.0, "memory_mb": 100, "disk_mb": 0 });
    for (body, says) in [
        (json!({ "name": "", "capacity": cap }), "host"),
        (json!({ "name": "a/b", "capacity": cap }), "host"),
        (
            json!({ "name": "a", "capacity": { "cpu_cores": 0.0, "memory_mb": 100, "disk_mb": 0 } }),
            "cpu_cores",
        ),
        (
            json!({ "name": "a", "capacity": cap, "labels": ["no spaces"] }),
            "label",
        ),
    ] {
        let r = post("/hosts", body.clone(), admin).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {e}"
        );
    }
    // A viewer cannot be a host.
    let viewer = h
        .admin
        .create_token(&TokenSpec {
            role: "viewer".to_owned(),
            swarm: None,
            expires_in_ms: None,
            label: None,
        })
        .await
        .unwrap()
        .token;
    let r = post("/hosts", json!({ "name": "v", "capacity": cap }), &viewer)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A poll with a session that is not the host's: 409, register again.
    let r = post("/hosts", json!({ "name": "a", "capacity": cap }), admin)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let session: Value = r.json().await.unwrap();
    let stale = session["session"].as_u64().unwrap() + 1;
    let r = post("/hosts/a/poll", json!({ "session": stale }), admin)
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("register again"),
        "{e}"
    );
    // The right session: no orders after the wait.
    let r = post(
        "/hosts/a/poll",
        json!({ "session": session["session"], "wait_ms": 100 }),
        admin,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    // An agent it runs that the coordinator did not place there is stopped.
    let stray = uuid::Uuid::now_v7().to_string();
    let r = post(
        "/hosts/a/poll",
        json!({ "session": session["session"], "running": [stray] }),
        admin,
    )
    .await
    .unwrap();
    let orders: Value = r.json().await.unwrap();
    assert_eq!(orders[0]["action"], "stop", "{orders}");
    assert_eq!(orders[0]["agent_id"], stray.as_str(), "{orders}");
    // A pool placed on hosts must run daemon-mode agents.
    let spec = json!({
        "name": "p",
        "agent": { "command": "true", "placement": "hosts" },
    });
    let r = http
        .put(format!("{url}/api/v1/swarms/default/pools/p"))
        .bearer_auth(admin)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("daemon"),
        "{e}"
    );
    // `flotilla host` with a viewer's token stops at once, saying what to do.
    let out = Command::new(FLOTILLA)
        .args([
            "host",
            "--coordinator",
            &url,
            "--name",
            "v",
            "--capacity-cpu",
            "1",
        ])
        .args(["--capacity-memory", "1GiB", "--work-dir"])
        .arg(h.path("host-v"))
        .env("FLOTILLA_TOKEN", &viewer)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operator or admin token"), "{err}");
    h.finish().await;
}
