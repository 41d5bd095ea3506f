//! Shared pieces of the end-to-end tests: an in-process coordinator on a free port with its own
//! data directory, polling with deadlines, and reading `/proc` to see what really runs.
//!
//! Every managed agent a test starts carries `E2E_MARKER=<unique value>` in its environment
//! (through its pool's template), which its children inherit: that is how a test finds, and
//! at the end kills, every process it caused, and nothing else.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_client::Client;
use flotilla_core::{AgentId, PoolSpec, TaskId, TaskSpec};
use flotilla_server::{Server, ServerConfig};
use serde_json::{Value, json};

/// The `flotilla` binary of this build.
pub const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");

/// The environment variable that marks a test's processes.
pub const MARKER_ENV: &str = "E2E_MARKER";

/// Tests run one at a time: they set process-wide environment variables, measure CPU time and
/// count on timings that a second test hammering the two cores would disturb.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A coordinator started in this process, with an admin client.
pub struct Harness {
    /// The running coordinator (`None` between [`Harness::shutdown`] and [`Harness::start_again`]).
    pub server: Option<Server>,
    /// An admin client of it.
    pub admin: Client,
    /// The value of `E2E_MARKER` in this test's managed processes.
    pub marker: String,
    /// The data directory (and scratch space for scripts and marker files).
    pub dir: tempfile::TempDir,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Harness {
    /// Takes the test lock, starts a coordinator on a fresh data directory.
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// Like [`Harness::start`], with the coordinator's configuration adjusted first.
    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Harness {
        let serial = SERIAL.lock().await;
        // `RUST_LOG=flotilla_server=debug cargo test …` shows the coordinator's log.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let marker = format!("e2e-{}", uuid::Uuid::now_v7().simple());
        let server = start_server(dir.path(), configure).await;
        let admin = Client::new(&server.url(), server.admin_token.clone()).unwrap();
        Harness {
            server: Some(server),
            admin,
            marker,
            dir,
            _serial: serial,
        }
    }

    /// The coordinator.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the coordinator runs")
    }

    /// Shuts the coordinator down (gracefully: it stops its managed agents).
    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            let within = Duration::from_secs(30);
            tokio::time::timeout(within, server.shutdown())
                .await
                .expect("the coordinator shut down within 30 s")
                .expect("a clean shutdown");
        }
    }

    /// Starts a coordinator again on the same data directory (a new port, the same admin token).
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "shut it down first");
        let server = start_server(self.dir.path(), |_| {}).await;
        self.admin = Client::new(&server.url(), server.admin_token.clone()).unwrap();
        self.server = Some(server);
    }

    /// Shuts down, then kills whatever of this test is still running (there should be nothing).
    pub async fn finish(mut self) {
        self.shutdown().await;
        kill_marked(&self.marker);
    }

    /// A path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable file into the test's directory.
    pub fn write_script(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A pool's agent template: `fields` plus the marker in its environment and a short stop
    /// grace (so that a stop or a shutdown does not wait 10 s for a busy agent).
    pub fn template(&self, fields: Value) -> Value {
        let mut t = json!({
            "env": { MARKER_ENV: self.marker },
            "stop_grace_ms": 2000,
        });
        let map = t.as_object_mut().unwrap();
        for (k, v) in fields.as_object().expect("template fields").clone() {
            if k == "env" {
                for (ek, ev) in v.as_object().unwrap() {
                    map["env"]
                        .as_object_mut()
                        .unwrap()
                        .insert(ek.clone(), ev.clone());
                }
            } else {
                map.insert(k, v);
            }
        }
        t
    }

    /// `PUT /swarms/{swarm}/pools/{name}` with a pool spec written as the API's JSON.
    pub async fn put_pool(&self, swarm: &str, spec: Value) -> Value {
        let spec: PoolSpec = serde_json::from_value(spec).expect("a pool spec");
        let put = self.admin.put_pool(swarm, &spec).await.expect("PUT pool");
        serde_json::to_value(put).unwrap()
    }

    /// `POST /swarms/{swarm}/tasks` with a task spec written as the API's JSON.
    pub async fn submit(&self, swarm: &str, spec: Value) -> TaskId {
        let spec: TaskSpec = serde_json::from_value(spec).expect("a task spec");
        self.admin
            .submit_task(swarm, &spec)
            .await
            .expect("submit")
            .id
    }

    /// A task as the API shows it.
    pub async fn task(&self, id: TaskId) -> Value {
        serde_json::to_value(self.admin.get_task(id).await.expect("GET task")).unwrap()
    }

    /// An agent as the API shows it.
    pub async fn agent(&self, id: AgentId) -> Value {
        serde_json::to_value(self.admin.get_agent(id).await.expect("GET agent")).unwrap()
    }

    /// A swarm's agents of one type, as the API shows them, by name.
    pub async fn agents(&self, swarm: &str, pool: &str) -> Vec<Value> {
        let agents = self
            .admin
            .list_agents(swarm, None, Some(pool))
            .await
            .expect("list agents");
        let mut v: Vec<Value> = agents
            .iter()
            .map(|a| serde_json::to_value(a).unwrap())
            .collect();
        v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v
    }

    /// Waits (long polls) until the task is finished, and returns it.
    pub async fn finished(&self, id: TaskId, within: Duration) -> Value {
        let started = Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            let t = self
                .admin
                .wait_task(
                    id,
                    left.min(Duration::from_secs(5)).max(Duration::from_secs(1)),
                )
                .await
                .expect("GET task?wait");
            let t = serde_json::to_value(t).unwrap();
            if matches!(
                t["status"].as_str(),
                Some("completed" | "failed" | "dead" | "cancelled")
            ) {
                return t;
            }
            assert!(
                started.elapsed() < within,
                "task {id} did not finish within {within:?}: {t:#}"
            );
        }
    }

    /// Polls an agent until `pred` holds; returns it.
    pub async fn agent_until(
        &self,
        id: AgentId,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        poll(what, within, || async {
            let a = self.agent(id).await;
            if pred(&a) { Ok(a) } else { Err(a) }
        })
        .await
    }

    /// Polls a task until `pred` holds; returns it.
    pub async fn task_until(
        &self,
        id: TaskId,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        poll(what, within, || async {
            let t = self.task(id).await;
            if pred(&t) { Ok(t) } else { Err(t) }
        })
        .await
    }

    /// Runs the `flotilla` CLI against this coordinator, as the admin.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(FLOTILLA)
            .args(args)
            .env("FLOTILLA_URL", self.server().url())
            .env("FLOTILLA_TOKEN", &self.server().admin_token)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("flotilla runs")
    }

    /// Waits until no process of this test is left.
    pub async fn no_processes_left(&self) {
        wait_until(
            "no process of the test left",
            Duration::from_secs(10),
            || {
                let left = marked(&self.marker);
                if left.is_empty() { Ok(()) } else { Err(left) }
            },
        )
        .await;
    }

    /// The status of an agent read straight from the coordinator's memory (no HTTP): for
    /// watching short-lived states.
    pub fn status_in_memory(&self, id: AgentId) -> Option<String> {
        let fleet = self.server().state.fleet.lock();
        fleet.agent(id).map(|a| a.status.as_str().to_owned())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // After a failed assertion too: leave nothing running.
        kill_marked(&self.marker);
    }
}

async fn start_server(dir: &Path, configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        // Daemons run `flotilla worker`: the real binary, not this test's.
        flotilla_bin: Some(FLOTILLA.into()),
        ..ServerConfig::new(dir)
    };
    configure(&mut config);
    flotilla_server::start(config)
        .await
        .expect("the coordinator starts")
}

/// Polls `f` every 20 ms until it answers `Ok`, for at most `within`; panics with the last
/// `Err` (what was seen) otherwise.
pub async fn poll<T, E: std::fmt::Debug, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(seen) => {
                if started.elapsed() > within {
                    panic!("waited {within:?} for {what}; last seen: {seen:#?}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`poll`] for a condition that needs no await.
pub async fn wait_until<E: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Result<(), E>,
) {
    poll(what, within, || std::future::ready(f())).await
}

/// A TCP port free on loopback now (for a coordinator started as its own process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent id of an agent as JSON.
pub fn id_of(agent: &Value) -> AgentId {
    agent["id"].as_str().unwrap().parse().unwrap()
}

/// The path of a real Python 3 interpreter (not a pyenv shim, whose start costs a shell).
pub fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed by these tests");
    assert!(out.status.success(), "python3 does not run");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// ----- /proc -----

/// What `/proc/PID/stat` says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// A process's stat, if it exists.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): state=f[0], ppid=f[1], pgrp=f[2], utime=f[11], stime=f[12].
    Some(ProcStat {
        pid,
        state: f[0].chars().next()?,
        ppid: f[1].parse().ok()?,
        pgrp: f[2].parse().ok()?,
        cpu_ticks: f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?,
    })
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether a process is alive (exists and is not a zombie).
pub fn is_live(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Live processes whose environment holds `E2E_MARKER=marker`.
pub fn marked(marker: &str) -> Vec<ProcStat> {
    let needle = format!("{MARKER_ENV}={marker}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
        })
        .filter_map(proc_stat)
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .collect()
}

/// Live processes whose command line contains `token`.
pub fn with_cmdline(token: &str) -> Vec<ProcStat> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(token.len()).any(|w| w == token.as_bytes()))
        })
        .filter_map(proc_stat)
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .collect()
}

/// Live members of a process group.
pub fn group_members(pgid: u32) -> Vec<ProcStat> {
    all_pids()
        .into_iter()
        .filter_map(proc_stat)
        .filter(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
        .collect()
}

/// Sends a signal (`KILL`, `STOP`, …) to processes by pid.
pub fn signal_pids(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(std::process::Stdio::null())
        .status();
}

/// Sends a signal to a whole process group.
pub fn signal_group(signal: &str, pgid: u32) {
    assert!(pgid > 1, "not a group to signal: {pgid}");
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} -- -{pgid} failed");
}

/// Kills every live process of this test (SIGKILL, then SIGCONT for stopped ones).
pub fn kill_marked(marker: &str) {
    for _ in 0..3 {
        let pids: Vec<u32> = marked(marker).iter().map(|s| s.pid).collect();
        if pids.is_empty() {
            return;
        }
        signal_pids("KILL", &pids);
        signal_pids("CONT", &pids);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of utime + stime over these processes, in clock ticks.
pub fn cpu_ticks(procs: &[u32]) -> u64 {
    procs
        .iter()
        .filter_map(|p| proc_stat(*p))
        .map(|s| s.cpu_ticks)
        .sum()
}

// ----- tmux -----

/// Whether tmux can be used: installs it with apt-get if missing. Outside CI a failure skips
/// (returns `false`, printing why); under `CI=true` it fails the test.
pub fn tmux_available() -> bool {
    let works = || {
        std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works() {
        return true;
    }
    let installed = std::process::Command::new("sh")
        .args([
            "-c",
            "(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux) >/dev/null 2>&1",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if installed && works() {
        return true;
    }
    let why = "tmux is not installed and `apt-get install tmux` failed";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: tmux tests must run)");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// A private tmux server (`tmux -S SOCKET`), killed when dropped.
pub struct PrivateTmux {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateTmux {
    /// A socket in a fresh directory, exported as `FLOTILLA_TMUX_SOCKET`. Call with the
    /// test lock held (inside a [`Harness`]).
    pub fn new() -> PrivateTmux {
        let dir = tempfile::Builder::new()
            .prefix("fl-tmux")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("sock");
        // SAFETY: tests run one at a time (the Harness holds the lock): nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("FLOTILLA_TMUX_SOCKET", &socket) };
        PrivateTmux { socket, _dir: dir }
    }

    /// Runs `tmux -S SOCKET args…`; its stdout if it succeeded.
    pub fn run(&self, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether session `name` exists.
    pub fn has_session(&self, name: &str) -> bool {
        self.run(&["has-session", "-t", &format!("={name}")])
            .is_some()
    }
}

impl Drop for PrivateTmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
        // SAFETY: as in `new`.
        unsafe { std::env::remove_var("FLOTILLA_TMUX_SOCKET") };
    }
}

/// A real `flotilla serve` process on a free loopback port with its own data directory, its
/// stdout and stderr collected line by line as they come; killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token.
    pub token: String,
    pub stdout: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    pub stderr: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts `flotilla serve` (with what `configure` adds to the command) and waits for
    /// `/healthz`.
    pub async fn start(configure: impl FnOnce(&mut std::process::Command)) -> ServeProcess {
        ServeProcess::start_in(tempfile::tempdir().unwrap(), free_port(), configure).await
    }

    /// Like [`ServeProcess::start`], on a data directory of the test's (one a coordinator
    /// used before, or with an `admin.token` written in it) and a port of its choice.
    pub async fn start_in(
        dir: tempfile::TempDir,
        port: u16,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> ServeProcess {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(FLOTILLA);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("FLOTILLA_DATA_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("flotilla serve starts");
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    sink.lock().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{url}/healthz")).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the coordinator did not come up; stderr: {:#?}",
                stderr.lock()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        ServeProcess {
            child,
            url,
            token,
            stdout,
            stderr,
            dir,
        }
    }

    /// Kills it with SIGKILL (no chance to flush or say goodbye), waits until it is gone, and
    /// hands back its data directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Runs the CLI against it with this token.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(FLOTILLA)
            .args(args)
            .env("FLOTILLA_URL", &self.url)
            .env("FLOTILLA_TOKEN", token)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("flotilla runs")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
