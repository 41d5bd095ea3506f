//! A real coordinator on a free loopback port, and a small HTTP helper around reqwest.
#![allow(dead_code)]

/// Runs each `$case(bus_url)` of the calling test file once with the in-process bus (module
/// `memory`) and once with Redis (module `redis`; skipped with a note when Redis is absent,
/// failing under CI=true).
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case("memory".to_owned()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(url) = super::common::redis_or_skip(stringify!($case)).await {
                        super::$case(url).await;
                    }
                }
            )*
        }
    };
}

use std::time::Duration;

use flotilla_server::{Server, ServerConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Harness {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub fn config(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

impl Harness {
    pub async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Self::start_with(dir, |_| {}).await
    }

    pub async fn start_with(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Harness {
        let mut c = config(dir.path());
        tweak(&mut c);
        let server = flotilla_server::start(c).await.expect("server starts");
        Harness {
            server,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.server.url(), path)
    }

    /// Sends a request with a token and an optional JSON body; returns status and JSON body.
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .timeout(Duration::from_secs(90))
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = self.server.admin_token.clone();
        self.call_as(&token, method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Registers an agent; returns (agent id, agent token).
    pub async fn register(&self, swarm: &str, body: Value) -> (String, String) {
        let (s, v) = self.post(&format!("/swarms/{swarm}/agents"), body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["agent_id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Submits a task to a swarm; returns it.
    pub async fn submit(&self, swarm: &str, body: Value) -> Value {
        let (s, v) = self.post(&format!("/swarms/{swarm}/tasks"), body).await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {v}");
        v
    }

    /// An agent takes its next task (waiting up to `wait` seconds).
    pub async fn next(&self, agent: &str, token: &str, wait: f64) -> Option<Value> {
        let (s, v) = self
            .call_as(
                token,
                Method::GET,
                &format!("/agents/{agent}/tasks/next?wait={wait}"),
                None,
            )
            .await;
        match s {
            StatusCode::OK => Some(v),
            StatusCode::NO_CONTENT => None,
            other => panic!("next: {other} {v}"),
        }
    }

    pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
        assert_eq!(status, want, "body: {body}");
        assert_eq!(body["error"]["code"], code, "body: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "body: {body}"
        );
    }
}

/// The Redis the bus tests use: `FLOTILLA_TEST_REDIS_URL`, or the machine's on 6379.
pub fn redis_url() -> String {
    std::env::var("FLOTILLA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether Redis answers; when it does not, a test that needs it prints why and is skipped,
/// except under `CI=true`, where it fails.
pub async fn redis_or_skip(test: &str) -> Option<String> {
    let url = redis_url();
    match flotilla_bus::Bus::redis(&url).await {
        Ok(bus) => {
            bus.shutdown();
            Some(url)
        }
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: Redis is required when CI=true, but {url} does not answer: {e}");
            }
            eprintln!("skipping {test}: no Redis at {url} ({e}); start redis-server to run it");
            None
        }
    }
}

/// Polls `check` every 20 ms until it answers `Some`, or panics naming `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `redis-server` of the test's own on a free port, so that it can be killed and started
/// again without touching the machine's; killed when dropped. `None` (after the CI check of
/// [`redis_or_skip`]) when `redis-server` cannot be run.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    pub fn start(test: &str) -> Option<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut r = OwnRedis { port, child: None };
        match r.spawn() {
            Ok(()) => Some(r),
            Err(why) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: redis-server is required when CI=true: {why}");
                }
                eprintln!("skipping {test}: {why}");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if std::time::Instant::now() > until {
                return Err(format!("redis-server did not listen on {}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGKILL: an outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server starts again on its port");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
