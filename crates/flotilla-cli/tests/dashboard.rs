//! The dashboard in a real browser: headless Chromium, driven by `web/tests/dashboard.mjs`
//! (playwright-core), against a real `flotilla serve` with real agents.
//!
//! The script signs in with the admin token, walks every view, pauses an agent, watches a task's
//! events arrive live, provokes the error banner, cancels and retries a task, checks charts.js
//! against the metrics contract, and saves a screenshot of each view under
//! `$CARGO_TARGET_DIR/test-artefacts/dashboard/`. A second test times the agent grid with
//! 1,000 agents.
//!
//! They need Node, Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) and `npm ci` in `web/`
//! (`scripts/test.sh` sees to all three). Outside CI a missing one skips the test with the
//! reason; under `CI=true` it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{FLOTILLA, MARKER_ENV, free_port, kill_marked, poll, proc_stat};
use flotilla_client::Client;
use flotilla_core::{AgentSpec, PoolSpec, SwarmSpec, TaskSpec};
use serde_json::{Value, json};

/// One browser test at a time: each runs a coordinator and a Chromium on a two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the browser script may take before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Node, Chromium and playwright-core, or why the browser tests cannot run.
fn browser_prerequisites() -> Result<PathBuf, String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node is not installed ({e})"))?;
    if !node.status.success() {
        return Err("`node --version` failed".into());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "{chromium} is missing (`apt-get install chromium`, or set CHROMIUM)"
        ));
    }
    let web = web_dir();
    if !web.join("node_modules/playwright-core").is_dir() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            web.display()
        ));
    }
    Ok(web)
}

/// The web directory, or `None` after printing why the test is skipped (a failure under CI).
fn browser_or_skip(test: &str) -> Option<PathBuf> {
    match browser_prerequisites() {
        Ok(web) => Some(web),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {why} (CI=true: the browser tests must run)")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// `$CARGO_TARGET_DIR/test-artefacts/dashboard` (the target directory found from this test's
/// executable when the variable is not set).
fn artefacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/debug/deps/dashboard-<hash>
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().to_path_buf()
        });
    target.join("test-artefacts").join("dashboard")
}

/// `flotilla serve` as its own process, on a fresh data directory; stopped (SIGTERM, which
/// stops its managed agents) when dropped.
struct Coordinator {
    child: Child,
    url: String,
    token: String,
    admin: Client,
    marker: String,
    dir: tempfile::TempDir,
}

impl Coordinator {
    async fn start() -> Coordinator {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(FLOTILLA)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("FLOTILLA_DATA_DIR", dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("flotilla serve starts");
        let url = format!("http://127.0.0.1:{port}");
        let probe = Client::new(&url, "none").unwrap();
        let started = Instant::now();
        while probe.healthz().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the coordinator did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = std::fs::read_to_string(dir.path().join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        let admin = Client::new(&url, token.clone()).unwrap();
        Coordinator {
            child,
            url,
            token,
            admin,
            marker: format!("e2e-{}", uuid::Uuid::now_v7().simple()),
            dir,
        }
    }

    /// Runs the browser script with these settings; its stdout (it passed) or a panic with both
    /// of its outputs.
    fn run_script(&self, web: &Path, settings: &[(&str, String)]) -> String {
        let out_path = self.dir.path().join("script.out");
        let err_path = self.dir.path().join("script.err");
        let mut child = Command::new("node")
            .arg(web.join("tests/dashboard.mjs"))
            .current_dir(web)
            .env("FLOTILLA_URL", &self.url)
            .env("FLOTILLA_TOKEN", &self.token)
            .env("DASHBOARD_ARTEFACTS", artefacts_dir())
            .env("DASHBOARD_CSP", flotilla_server::dashboard::POLICY)
            .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("node runs");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > SCRIPT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        println!("--- dashboard.mjs stdout ---\n{stdout}--- stderr ---\n{stderr}");
        match status {
            Some(s) if s.success() => stdout,
            Some(s) => panic!(
                "the browser test failed ({s}; its output is above); screenshots in {}\ncoordinator log:\n{}",
                artefacts_dir().display(),
                std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
            ),
            None => panic!("the browser test ran past {SCRIPT_TIMEOUT:?} (its output is above)"),
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        // SIGTERM: a graceful shutdown stops the managed agents; then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_marked(&self.marker);
    }
}

/// The `MEASURE name value` lines of the script's output.
fn measures(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("MEASURE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_drives_a_real_coordinator() {
    let Some(web) = browser_or_skip("the_dashboard_drives_a_real_coordinator") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let c = Coordinator::start().await;

    // Three daemon agents that echo their task's payload: `flotilla worker -- cat`.
    let spec: PoolSpec = serde_json::from_value(json!({
        "name": "dash",
        "min_agents": 3,
        "max_agents": 5,
        "agent": {
            "command": FLOTILLA,
            "args": ["worker", "--agent-from-env", "--", "cat"],
            "mode": "daemon",
            "env": { MARKER_ENV: c.marker },
            "stop_grace_ms": 2000,
        },
    }))
    .unwrap();
    c.admin.put_pool("default", &spec).await.expect("PUT pool");
    poll("three idle agents", Duration::from_secs(60), || async {
        let agents = c
            .admin
            .list_agents("default", None, Some("dash"))
            .await
            .unwrap();
        let idle = agents
            .iter()
            .filter(|a| a.status.as_str() == "idle")
            .count();
        if idle == 3 { Ok(()) } else { Err(agents) }
    })
    .await;
    // Some finished work for the task table and the charts.
    for i in 0..5 {
        let spec: TaskSpec =
            serde_json::from_value(json!({"type": "echo", "payload": {"n": i}})).unwrap();
        let t = c.admin.submit_task("default", &spec).await.unwrap();
        let done = c.admin.wait_task(t.id, Duration::from_secs(30)).await;
        assert_eq!(
            done.unwrap().status().as_str(),
            "completed",
            "task {i} completes"
        );
    }

    let stdout = c.run_script(
        &web,
        &[
            ("DASHBOARD_MODE", "full".into()),
            ("DASHBOARD_SWARM", "default".into()),
            ("DASHBOARD_POOL", "dash".into()),
            ("DASHBOARD_AGENTS", "3".into()),
        ],
    );

    // The pause clicked in the browser really paused the agent: the API says so, and its
    // process is stopped (SIGSTOP of its process group).
    let paused = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PAUSED "))
        .expect("the script names the agent it paused");
    let agent = c.admin.get_agent(paused.parse().unwrap()).await.unwrap();
    assert_eq!(agent.status.as_str(), "paused");
    let agent: Value = serde_json::to_value(agent).unwrap();
    let pid = agent["managed"]["pid"]
        .as_u64()
        .expect("a daemon has a pid") as u32;
    let state = proc_stat(pid).map(|s| s.state);
    assert_eq!(state, Some('T'), "the paused agent's process is stopped");

    for view in [
        "login", "swarms", "agents", "events", "tasks", "task", "charts", "alerts", "topology",
        "hosts",
    ] {
        let file = artefacts_dir().join(format!("{view}.png"));
        assert!(file.is_file(), "screenshot {} saved", file.display());
    }
    println!(
        "screenshots in {}; measures: {:?}",
        artefacts_dir().display(),
        measures(&stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_grid_renders_1000_agents() {
    const AGENTS: usize = 1000;
    let Some(web) = browser_or_skip("the_agent_grid_renders_1000_agents") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let c = Coordinator::start().await;
    // Connected agents that never call in: an hour's heartbeat interval keeps them registered
    // and healthy for the test.
    let spec: SwarmSpec = serde_json::from_value(json!({
        "name": "big",
        "config": {"heartbeat_interval_ms": 3_600_000},
    }))
    .unwrap();
    c.admin.create_swarm(&spec).await.unwrap();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let admin = c.admin.clone();
        workers.spawn(async move {
            let mut first = None;
            for i in (w..AGENTS).step_by(16) {
                let spec = AgentSpec {
                    name: Some(format!("agent-{i:04}")),
                    capabilities: vec!["text".into()],
                    ..AgentSpec::default()
                };
                let r = admin.register_agent("big", &spec).await.expect("register");
                first.get_or_insert((r.agent_id, r.token));
            }
            first
        });
    }
    let mut probe = None;
    while let Some(r) = workers.join_next().await {
        if let Some(p) = r.unwrap() {
            probe.get_or_insert(p);
        }
    }
    println!(
        "registered {AGENTS} agents in {} ms",
        started.elapsed().as_millis()
    );
    let (probe_id, probe_token) = probe.unwrap();

    let stdout = c.run_script(
        &web,
        &[
            ("DASHBOARD_MODE", "grid".into()),
            ("DASHBOARD_SWARM", "big".into()),
            ("DASHBOARD_AGENTS", AGENTS.to_string()),
            ("DASHBOARD_PROBE_AGENT", probe_id.to_string()),
            ("DASHBOARD_PROBE_TOKEN", probe_token),
        ],
    );
    let m = measures(&stdout);
    println!("grid with {AGENTS} agents: {m:?}");
    let first: u64 = m
        .iter()
        .find(|(k, _)| k == "grid_first_render_ms")
        .and_then(|(_, v)| v.parse().ok())
        .expect("the first render was timed");
    // Generous: the figure is reported; the bound only catches a grid that stopped scaling.
    assert!(
        first < 20_000,
        "1,000 tiles took {first} ms to render (figures: {m:?})"
    );
}
