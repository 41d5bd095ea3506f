//! Real coordinators (`flotilla serve --store postgres://…`) on one PostgreSQL database: swarms
//! spread over them, any of them serves any call, and under a steady load of submissions and
//! agents: the owner of a busy swarm killed with SIGKILL; PostgreSQL restarted; Redis stopped
//! for a while. After each, no accepted task is lost, none is run by two agents at once and
//! none is completed twice. The figures are printed (`--nocapture`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ServeProcess;
use flotilla_client::Client;
use flotilla_core::api::ClusterStatus;
use flotilla_core::{AgentSpec, Json, SwarmSpec, TaskId, TaskSpec, TaskStatus};
use parking_lot::Mutex;

/// The tests of this file run one at a time: one restarts PostgreSQL, which would be a second
/// fault in the middle of the other's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The PostgreSQL database the tests use (a schema of their own in it).
fn postgres_url() -> String {
    std::env::var("FLOTILLA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema and the store URL that selects it; `None` (after saying why) when PostgreSQL
/// cannot be reached outside CI.
fn fresh_schema() -> Option<(String, String)> {
    // The synchronous client drives a runtime of its own: not on the test's async thread.
    std::thread::spawn(fresh_schema_blocking)
        .join()
        .expect("schema thread")
}

fn fresh_schema_blocking() -> Option<(String, String)> {
    let base = postgres_url();
    let mut admin = match postgres::Client::connect(&base, postgres::NoTls) {
        Ok(c) => c,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but PostgreSQL at {base} cannot be reached: {e}")
        }
        Err(e) => {
            eprintln!("skipped: PostgreSQL at {base} cannot be reached ({e})");
            return None;
        }
    };
    let schema = format!("cluster_{}", uuid::Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create schema");
    let url = format!("{base}?options=-csearch_path%3D{schema}");
    Some((schema, url))
}

fn drop_schema(schema: &str) {
    let schema = schema.to_owned();
    let _ = std::thread::spawn(move || {
        if let Ok(mut admin) = postgres::Client::connect(&postgres_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
        }
    })
    .join();
}

async fn node(store: &str) -> ServeProcess {
    node_on(store, "memory").await
}

async fn node_on(store: &str, bus: &str) -> ServeProcess {
    let (store, bus) = (store.to_owned(), bus.to_owned());
    ServeProcess::start(move |cmd| {
        cmd.args([
            "--store",
            &store,
            "--bus",
            &bus,
            "--lease-ttl",
            "2s",
            "--rate-limit",
            "0",
        ]);
    })
    .await
}

/// Waits until every swarm has a valid lease; answers how long that took.
async fn wait_healthy(client: &Client, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(c) = client.cluster().await
            && c.leases.iter().all(|l| l.valid)
            && c.nodes.iter().any(|n| n.alive)
        {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "the cluster did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cluster(client: &Client) -> ClusterStatus {
    client.cluster().await.expect("GET /cluster")
}

/// Waits until every swarm has a valid lease and each live node holds at least one.
async fn wait_spread(client: &Client, nodes: usize, within: Duration) -> ClusterStatus {
    let started = Instant::now();
    loop {
        let c = cluster(client).await;
        let alive = c.nodes.iter().filter(|n| n.alive).count();
        let spread = c.nodes.iter().filter(|n| n.alive).all(|n| n.swarms > 0);
        if alive == nodes && spread && c.leases.iter().all(|l| l.valid) {
            return c;
        }
        assert!(
            started.elapsed() < within,
            "swarms did not spread over {nodes} coordinators: {c:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run of a task by an agent, as the agent saw it.
#[derive(Clone, Debug)]
struct Run {
    agent: String,
    started: Instant,
    ended: Instant,
    completed: bool,
}

/// What a load ended with.
#[derive(Debug)]
struct Figures {
    accepted: usize,
    lost: usize,
    concurrent: usize,
    completed_twice: usize,
    reruns: usize,
}

/// A steady load: two agents per swarm taking and completing tasks, talking to the coordinators
/// at `url` (one, or several comma-separated), and a producer submitting round-robin over the
/// swarms through `admin` (each submission with an idempotency key, retried until accepted).
struct Load {
    runs: Arc<Mutex<HashMap<TaskId, Vec<Run>>>>,
    accepted: Arc<Mutex<BTreeMap<String, TaskId>>>,
    producing: Arc<AtomicBool>,
    working: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    producer: tokio::task::JoinHandle<()>,
}

impl Load {
    async fn start(admin: &Client, url: &str, swarms: &[String]) -> Load {
        let runs: Arc<Mutex<HashMap<TaskId, Vec<Run>>>> = Arc::default();
        let working = Arc::new(AtomicBool::new(true));
        let mut workers = Vec::new();
        for name in swarms {
            for i in 0..2 {
                let label = format!("{name}-w{i}");
                let reg = admin
                    .register_agent(
                        name,
                        &AgentSpec {
                            name: Some(label.clone()),
                            ..AgentSpec::default()
                        },
                    )
                    .await
                    .expect("register through any coordinator");
                let agent = Client::new(url, &reg.token).unwrap();
                let id = reg.agent_id;
                let (runs, working) = (runs.clone(), working.clone());
                workers.push(tokio::spawn(async move {
                    while working.load(Ordering::Relaxed) {
                        let task = match agent.next_task(id, Duration::from_secs(1)).await {
                            Ok(Some(t)) => t,
                            Ok(None) => continue,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        let started = Instant::now();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        // Report until the coordinator answers: a takeover may be under way.
                        let mut completed = false;
                        for _ in 0..400 {
                            match agent
                                .complete_task(task.id, Json::null(), Some(task.attempts))
                                .await
                            {
                                Ok(_) => {
                                    completed = true;
                                    break;
                                }
                                Err(e) if e.status() == Some(409) => break,
                                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                            }
                        }
                        runs.lock().entry(task.id).or_default().push(Run {
                            agent: label.clone(),
                            started,
                            ended: Instant::now(),
                            completed,
                        });
                    }
                }));
            }
        }
        let accepted: Arc<Mutex<BTreeMap<String, TaskId>>> = Arc::default();
        let producing = Arc::new(AtomicBool::new(true));
        let producer = {
            let client = admin.clone();
            let (accepted, producing) = (accepted.clone(), producing.clone());
            let swarms = swarms.to_vec();
            tokio::spawn(async move {
                let mut n = 0usize;
                while producing.load(Ordering::Relaxed) {
                    let swarm = &swarms[n % swarms.len()];
                    let key = format!("job-{n}");
                    while producing.load(Ordering::Relaxed) {
                        let spec = TaskSpec {
                            task_type: "job".to_owned(),
                            idempotency_key: Some(key.clone()),
                            ..TaskSpec::default()
                        };
                        match client.submit_task(swarm, &spec).await {
                            Ok(task) => {
                                accepted.lock().insert(key.clone(), task.id);
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        Load {
            runs,
            accepted,
            producing,
            working,
            workers,
            producer,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.lock().len()
    }

    /// Stops submitting, lets the agents finish every accepted task (up to a minute), stops
    /// them and counts.
    async fn finish(self, client: &Client) -> Figures {
        self.producing.store(false, Ordering::Relaxed);
        let _ = self.producer.await;
        let accepted = self.accepted.lock().clone();
        let drain_started = Instant::now();
        let mut lost;
        loop {
            lost = 0;
            let ids: Vec<TaskId> = accepted.values().copied().collect();
            for chunk in ids.chunks(500) {
                match client.lookup_tasks(chunk).await {
                    Ok(found) => {
                        lost += found
                            .items
                            .iter()
                            .filter(|t| t.state.status() != TaskStatus::Completed)
                            .count();
                        lost += found.missing.len();
                    }
                    Err(_) => lost += chunk.len(),
                }
            }
            if lost == 0 || drain_started.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.working.store(false, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let runs = self.runs.lock().clone();
        let mut concurrent = 0;
        let mut completed_twice = 0;
        for list in runs.values() {
            for (i, r) in list.iter().enumerate() {
                for s in &list[i + 1..] {
                    if r.agent != s.agent && r.started < s.ended && s.started < r.ended {
                        concurrent += 1;
                    }
                }
            }
            if list.iter().filter(|r| r.completed).count() > 1 {
                completed_twice += 1;
            }
        }
        Figures {
            accepted: accepted.len(),
            lost,
            concurrent,
            completed_twice,
            reruns: runs.values().filter(|l| l.len() > 1).count(),
        }
    }
}

fn check(figures: &Figures) {
    // Run again (not at once) after a fault: at least once delivery, allowed.
    println!(
        "tasks run more than once, one run after another: {}",
        figures.reruns
    );
    assert!(figures.accepted > 0, "the load ran: {figures:?}");
    assert_eq!(
        figures.lost, 0,
        "every accepted task completed: {figures:?}"
    );
    assert_eq!(
        figures.concurrent, 0,
        "no task ran on two agents at once: {figures:?}"
    );
    assert_eq!(
        figures.completed_twice, 0,
        "no task completed twice: {figures:?}"
    );
}

async fn create_swarms(admin: &Client, n: usize) -> Vec<String> {
    let swarms: Vec<String> = (1..=n).map(|i| format!("s{i}")).collect();
    for name in &swarms {
        admin
            .create_swarm(&SwarmSpec {
                name: name.clone(),
                ..SwarmSpec::default()
            })
            .await
            .expect("create swarm");
    }
    swarms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_owner_s_swarms_are_taken_over_with_no_task_lost_or_run_twice() {
    let _serial = SERIAL.lock().await;
    let Some((schema, store)) = fresh_schema() else {
        return;
    };
    let a = node(&store).await;
    let admin = Client::new(&a.url, &a.token).unwrap();
    let swarms = create_swarms(&admin, 5).await;
    let b = node(&store).await;
    let c = node(&store).await;
    // Any node's token works on every node: A's admin token drives the test through C.
    let survivor = Client::new(&c.url, &a.token).unwrap();
    let spread = wait_spread(&survivor, 3, Duration::from_secs(20)).await;
    println!("{}", flotilla_cli::commands::status::cluster_text(&spread));
    // `swarm list` on any coordinator shows every swarm.
    let listed = survivor.list_swarms().await.expect("list swarms");
    assert_eq!(listed.len(), swarms.len() + 1, "{listed:?}");

    // The agents are given every coordinator and start on A: those on the victim move on.
    let every = format!("{},{},{}", a.url, b.url, c.url);
    let load = Load::start(&survivor, &every, &swarms).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The victim: the owner (not C) of a swarm.
    let before = cluster(&survivor).await;
    let c_id = before
        .nodes
        .iter()
        .find(|n| n.url == c.url)
        .map(|n| n.id.clone())
        .expect("C is listed");
    let victim_id = before
        .leases
        .iter()
        .find_map(|l| l.owner.clone().filter(|o| *o != c_id))
        .expect("a swarm held by A or B");
    let victim_url = before
        .nodes
        .iter()
        .find(|n| n.id == victim_id)
        .map(|n| n.url.clone())
        .expect("victim listed");
    let victim_swarms: Vec<String> = before
        .leases
        .iter()
        .filter(|l| l.owner.as_deref() == Some(victim_id.as_str()))
        .map(|l| l.swarm.clone())
        .collect();
    let (mut a, mut b) = (a, b);
    let victim = if victim_url == a.url { &mut a } else { &mut b };
    let submitted_before_kill = load.accepted();
    let killed_at = Instant::now();
    victim.child.kill().expect("kill -9 the owner");
    let _ = victim.child.wait();
    let takeover = loop {
        let now = cluster(&survivor).await;
        let taken = victim_swarms.iter().all(|s| {
            now.leases
                .iter()
                .any(|l| &l.swarm == s && l.valid && l.owner.as_deref() != Some(victim_id.as_str()))
        });
        if taken {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the victim's swarms were not taken over: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let figures = load.finish(&survivor).await;
    println!(
        "kill -9 of the owner of {victim_swarms:?} after {submitted_before_kill} submissions: \
         takeover in {} ms (lease 2 s); {figures:?}",
        takeover.as_millis(),
    );
    println!(
        "{}",
        flotilla_cli::commands::status::cluster_text(&cluster(&survivor).await)
    );
    drop_schema(&schema);
    check(&figures);
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
}

/// A private redis-server on a free port, stopped when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis came up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this run may restart the machine's PostgreSQL (CI, or asked for).
fn may_restart_postgres() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("FLOTILLA_TEST_RESTART_POSTGRES").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_and_a_redis_outage_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let Some((schema, store)) = fresh_schema() else {
        return;
    };
    let redis = Redis::start(common::free_port());
    let bus = format!("redis://127.0.0.1:{}", redis.port);
    let a = node_on(&store, &bus).await;
    let admin = Client::new(&a.url, &a.token).unwrap();
    let swarms = create_swarms(&admin, 3).await;
    let b = node_on(&store, &bus).await;
    let client = Client::new(&b.url, &a.token).unwrap();
    wait_spread(&client, 2, Duration::from_secs(20)).await;
    let load = Load::start(&client, &b.url, &swarms).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    if may_restart_postgres() {
        let before = load.accepted();
        let restarted = Instant::now();
        // The cluster listening on 5432, as Debian's tools name it (`15 main`).
        let clusters = std::process::Command::new("pg_lsclusters")
            .arg("--no-header")
            .output()
            .expect("pg_lsclusters runs");
        let listing = String::from_utf8_lossy(&clusters.stdout).into_owned();
        let (version, name) = listing
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(2) == Some(&"5432"))
            .map(|f| (f[0].to_owned(), f[1].to_owned()))
            .expect("a PostgreSQL cluster on port 5432");
        let status = std::process::Command::new("pg_ctlcluster")
            .args([version.as_str(), name.as_str(), "restart"])
            .status()
            .expect("pg_ctlcluster runs");
        assert!(status.success(), "PostgreSQL restarted");
        let down = restarted.elapsed();
        let recovered = wait_healthy(&client, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "PostgreSQL restart ({} ms down) after {before} submissions: every swarm leased and \
             served again {} ms after it was back; {} submissions since",
            down.as_millis(),
            recovered.as_millis(),
            load.accepted() - before
        );
    } else {
        println!(
            "not restarting PostgreSQL (CI is not set; FLOTILLA_TEST_RESTART_POSTGRES=1 allows it)"
        );
    }

    // Redis away for 3 s: the fleet keeps working from PostgreSQL (receives fall back to their
    // timeouts) and catches up when it is back.
    let port = redis.port;
    let before = load.accepted();
    drop(redis);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = load.accepted() - before;
    let redis = Redis::start(port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let figures = load.finish(&client).await;
    println!("Redis stopped for 3 s: {during} submissions accepted meanwhile; {figures:?}");
    drop(redis);
    drop((a, b));
    drop_schema(&schema);
    check(&figures);
    assert!(during > 0, "submissions went on without Redis");
}
