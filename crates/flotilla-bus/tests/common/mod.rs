//! Helpers shared by the bus's test suites: unique names, waiting for deliveries, Redis.

#![allow(dead_code)] // each test binary uses its own part of these

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_bus::{Bus, Delivery, Subscription};

/// How long a delivery that should come may take (generous: CI machines are slow).
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long to listen to be fairly sure nothing more is coming.
pub const QUIET: Duration = Duration::from_millis(150);

/// A swarm id no other test (nor another run against the shared Redis) uses.
pub fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{test}-{}-{nanos}", std::process::id())
}

/// The next delivery, failing the test if none comes in time or the bus shut down.
pub async fn next(subscription: &mut Subscription) -> Delivery {
    match tokio::time::timeout(PATIENCE, subscription.next()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("{subscription:?}: the bus shut down"),
        Err(_) => panic!("{subscription:?}: nothing delivered within {PATIENCE:?}"),
    }
}

/// The next delivery, which must be a message: its channel and payload.
pub async fn message(subscription: &mut Subscription) -> (String, Vec<u8>) {
    match next(subscription).await {
        Delivery::Message { channel, payload } => (channel.to_string(), payload.to_vec()),
        Delivery::Gap => panic!("{subscription:?}: a Gap where a message was expected"),
    }
}

/// Asserts nothing more arrives for a little while.
pub async fn quiet(subscription: &mut Subscription) {
    if let Ok(delivery) = tokio::time::timeout(QUIET, subscription.next()).await {
        panic!("{subscription:?}: unexpected {delivery:?}");
    }
}

/// Waits (polling) until `condition` holds, failing the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < until, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The shared Redis the tests use: `FLOTILLA_TEST_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("FLOTILLA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The one place that decides what a test does without Redis: skip with a word on stderr, or,
/// when `CI=true`, fail (CI must run these tests, not skip them silently).
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: Redis is required when CI=true, but {why}");
    }
    eprintln!("skipping {test}: {why} (start redis-server, or set FLOTILLA_TEST_REDIS_URL)");
}

/// A bus on the shared Redis, or `None` (after [`skip_or_fail`]) if it cannot be reached.
pub async fn redis_bus(test: &str) -> Option<Bus> {
    let url = redis_url();
    match Bus::redis(&url).await {
        Ok(bus) => Some(bus),
        Err(e) => {
            skip_or_fail(test, &format!("no Redis at {url}: {e}"));
            None
        }
    }
}

/// A raw client connection to a Redis server, to ask it what the bus did (PUBSUB NUMSUB...).
pub async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("a raw connection to Redis")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("a bound address").port()
}

/// A private `redis-server` child on its own port, so a test can stop and restart Redis without
/// touching the machine's server. Killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one (or `None` after [`skip_or_fail`] if `redis-server` cannot be run).
    pub fn start(test: &str, extra: &[&str]) -> Option<PrivateRedis> {
        let mut redis = PrivateRedis {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(why) => {
                skip_or_fail(test, &why);
                None
            }
        }
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let until = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > until {
                return Err(format!("redis-server did not listen on {}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Kills the server (SIGKILL: an outage, not a goodbye).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts on its port");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
