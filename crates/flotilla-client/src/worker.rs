//! The worker loop of a connected agent: register, heartbeat, take tasks, run a handler on
//! each, report the outcome, and unregister on shutdown ([`run_worker`]); or the same for an
//! agent the coordinator created and manages, without registering or unregistering
//! ([`run_worker_registered`]).
//!
//! A handler is anything implementing [`TaskHandler`]; every `Fn(Task) -> impl Future<Output =
//! Result<Json, TaskFailure>>` closure does:
//!
//! ```no_run
//! use flotilla_client::worker::{run_worker, TaskFailure, WorkerConfig};
//! use flotilla_client::Client;
//! use flotilla_core::{Json, Task};
//!
//! # async fn demo() -> Result<(), flotilla_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:7171", "admin-token")?;
//! let config = WorkerConfig { concurrency: 4, ..WorkerConfig::default() };
//! let stats = run_worker(
//!     client,
//!     config,
//!     |task: Task| async move {
//!         let v = task.payload.to_value();
//!         match v["n"].as_i64() {
//!             Some(n) => Ok(Json::from(serde_json::json!({ "square": n * n }))),
//!             None => Err(TaskFailure::permanent("payload has no integer `n`")),
//!         }
//!     },
//!     async { let _ = tokio::signal::ctrl_c().await; },
//! )
//! .await?;
//! println!("{} completed, {} failed", stats.completed, stats.failed);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_core::{AgentId, AgentSpec, DEFAULT_SWARM, Heartbeat, Json, Task, TaskId};
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use crate::client::Client;
use crate::error::ClientError;

/// How many times a result report is retried on transient errors before it is given up.
const REPORT_TRIES: u32 = 8;
/// How many times unregistering is tried on transient errors.
const UNREGISTER_TRIES: u32 = 3;

/// Why a handler did not complete a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    /// What went wrong; becomes the task's error message.
    pub message: String,
    /// Whether another attempt might succeed; `false` fails the task for good.
    pub retryable: bool,
}

impl TaskFailure {
    /// A failure worth another attempt (the task is queued again until its attempts run out).
    pub fn retryable(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no other attempt would fix: the task fails for good.
    pub fn permanent(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            retryable: false,
        }
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskFailure {}

impl From<String> for TaskFailure {
    /// A retryable failure with this message.
    fn from(message: String) -> Self {
        TaskFailure::retryable(message)
    }
}

impl From<&str> for TaskFailure {
    /// A retryable failure with this message.
    fn from(message: &str) -> Self {
        TaskFailure::retryable(message)
    }
}

/// Runs one task: its result on success, a [`TaskFailure`] otherwise.
///
/// Implemented for every `Fn(Task) -> Fut` closure whose `Fut` is a `Send` future of
/// `Result<Json, TaskFailure>`; implement it on a type of your own when the handler carries
/// state. One handler serves all of the worker's concurrent tasks.
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs `task` (now `running` on this agent).
    fn handle(&self, task: Task) -> impl Future<Output = Result<Json, TaskFailure>> + Send;
}

impl<F, Fut> TaskHandler for F
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Json, TaskFailure>> + Send + 'static,
{
    fn handle(&self, task: Task) -> impl Future<Output = Result<Json, TaskFailure>> + Send {
        self(task)
    }
}

/// How a worker registers and polls.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    /// The swarm to join (id or name); not used by [`run_worker_registered`].
    pub swarm: String,
    /// The agent to register; its `max_concurrent_tasks` is replaced by `concurrency`. Not
    /// used by [`run_worker_registered`].
    pub agent: AgentSpec,
    /// How many tasks run at once (at least 1).
    pub concurrency: usize,
    /// How long one poll for a task waits on the coordinator (at most 60 s are used).
    pub poll_wait: Duration,
    /// On shutdown, how long running tasks may take to finish before they are abandoned (they
    /// go back to the queue when the agent unregisters).
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    /// The `default` swarm, a `worker` agent, one task at a time, 30 s polls, 30 s grace.
    fn default() -> Self {
        WorkerConfig {
            swarm: DEFAULT_SWARM.to_owned(),
            agent: AgentSpec::default(),
            concurrency: 1,
            poll_wait: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What a worker did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The agent it registered as; `None` if it stopped before registering.
    pub agent_id: Option<AgentId>,
    /// Tasks completed (and accepted by the coordinator).
    pub completed: u64,
    /// Failed attempts reported (and accepted).
    pub failed: u64,
    /// Reports the coordinator refused because the attempt was no longer current (409/404):
    /// the task timed out, was cancelled or was taken away meanwhile.
    pub rejected: u64,
    /// Reports that could not be delivered at all (the coordinator stayed unreachable).
    pub lost: u64,
}

/// Registers an agent in `config.swarm`, then takes and runs tasks until `shutdown` resolves.
///
/// `client` acts with an admin or operator token; once registered the worker acts with the
/// agent's own token. It heartbeats at the interval the coordinator asks for, runs
/// `config.concurrency` poll loops (each takes one task at a time and reports its outcome with
/// the task's attempt number), and rides out transient errors (unreachable coordinator, 5xx)
/// with a capped backoff, logging them with `tracing`. A refused report (409: the attempt is no
/// longer current) is logged and skipped.
///
/// On `shutdown` it stops taking tasks, lets running ones finish for up to
/// `config.shutdown_grace`, then unregisters so that anything unfinished goes back to the
/// queue. It returns early with an error when registration is refused (bad swarm, bad token,
/// …) or when the coordinator no longer knows the agent (it was removed).
///
/// With a client of several coordinators ([`Client::with_urls`]), the worker carries on when
/// the one it talks to dies: its heartbeats, polls and reports move to the next (they share
/// the client's choice of coordinator; a poll cut off is made again there, a heartbeat or
/// report at its next turn or retry). It registers once: its agent's id and token are valid on
/// every coordinator of the fleet, so changing coordinator never registers another agent. (A
/// registration whose connection broke after it was sent is made again, as with one
/// coordinator; the first agent, if it was created, is never used and lapses.)
pub async fn run_worker<H: TaskHandler>(
    client: Client,
    config: WorkerConfig,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerStats, ClientError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let concurrency = config.concurrency.max(1);
    let mut spec = config.agent.clone();
    spec.max_concurrent_tasks = u32::try_from(concurrency).unwrap_or(u32::MAX);

    // Register, waiting out a coordinator that is not reachable yet.
    let mut backoff = RetryBackoff::new();
    let registration = loop {
        let attempt = tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(WorkerStats::default()),
            r = client.register_agent(&config.swarm, &spec) => r,
        };
        match attempt {
            Ok(reg) => break reg,
            Err(e) if e.is_transient() => {
                let wait = backoff.next_delay();
                warn!("cannot register yet ({e}); retrying in {wait:?}");
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(WorkerStats::default()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    info!(
        "registered agent {} ({}) in swarm {}; running up to {concurrency} task(s) at once",
        registration.agent.name, registration.agent_id, config.swarm
    );
    work(
        client.with_token(registration.token),
        registration.agent_id,
        Duration::from_millis(registration.heartbeat_interval_ms),
        &config,
        handler,
        shutdown,
        Ending::Unregister,
    )
    .await
}

/// Runs an agent that already exists, such as a managed agent in `daemon` mode that the
/// coordinator started with `FLOTILLA_URL`, `FLOTILLA_AGENT_ID` and `FLOTILLA_TOKEN`:
/// `agent_client` acts with the agent's own token.
///
/// It works as [`run_worker`] does, except that it does not register (`config.swarm` and
/// `config.agent` are not used) and does not unregister when it stops: the coordinator manages
/// the agent, and whatever it still held goes back to the queue when the coordinator sees its
/// process end. It starts with a heartbeat, which tells the coordinator that the agent is up
/// and learns the heartbeat interval.
pub async fn run_worker_registered<H: TaskHandler>(
    agent_client: Client,
    agent_id: AgentId,
    config: WorkerConfig,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerStats, ClientError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = RetryBackoff::new();
    let beat = Heartbeat {
        running_tasks: Some(Vec::new()),
        ..Heartbeat::default()
    };
    let ack = loop {
        let attempt = tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(WorkerStats { agent_id: Some(agent_id), ..WorkerStats::default() }),
            r = agent_client.heartbeat(agent_id, &beat) => r,
        };
        match attempt {
            Ok(ack) => break ack,
            Err(e) if e.is_transient() => {
                let wait = backoff.next_delay();
                warn!("cannot reach the coordinator yet ({e}); retrying in {wait:?}");
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(WorkerStats { agent_id: Some(agent_id), ..WorkerStats::default() }),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    info!(
        "running as agent {agent_id}; up to {} task(s) at once",
        config.concurrency.max(1)
    );
    work(
        agent_client,
        agent_id,
        Duration::from_millis(ack.heartbeat_interval_ms),
        &config,
        handler,
        shutdown,
        Ending::Leave,
    )
    .await
}

/// What a worker does with its agent when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Unregister it: its unfinished tasks go back to the queue at once.
    Unregister,
    /// Leave it registered: the coordinator manages it.
    Leave,
}

/// The worker proper, once the agent exists: heartbeats, poll loops, shutdown.
async fn work<H: TaskHandler, S: Future<Output = ()>>(
    agent: Client,
    agent_id: AgentId,
    heartbeat_interval: Duration,
    config: &WorkerConfig,
    handler: H,
    mut shutdown: std::pin::Pin<&mut S>,
    ending: Ending,
) -> Result<WorkerStats, ClientError> {
    let concurrency = config.concurrency.max(1);
    let shared = Arc::new(Shared {
        agent,
        agent_id,
        fatal: std::sync::Mutex::new(None),
        fatal_notify: Notify::new(),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        running: std::sync::Mutex::new(HashMap::new()),
    });

    let (hb_stop_tx, hb_stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat_loop(
        shared.clone(),
        heartbeat_interval,
        hb_stop_rx,
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let handler = Arc::new(handler);
    let mut loops = JoinSet::new();
    for _ in 0..concurrency {
        loops.spawn(poll_loop(
            shared.clone(),
            handler.clone(),
            config.poll_wait,
            stop_rx.clone(),
        ));
    }

    tokio::select! {
        _ = &mut shutdown => match ending {
            Ending::Unregister => info!("stopping: finishing running tasks, then unregistering"),
            Ending::Leave => info!("stopping: finishing running tasks"),
        },
        _ = shared.fatal_notify.notified() => {}
    }
    stop_tx.send_replace(true);

    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while loops.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            "tasks still running after {:?}; abandoning them (they go back to the queue)",
            config.shutdown_grace
        );
        loops.abort_all();
        while loops.join_next().await.is_some() {}
    }

    hb_stop_tx.send_replace(true);
    let _ = heartbeat.await;

    let fatal = shared.fatal.lock().expect("not poisoned").take();
    // An agent whose token is refused or who is unknown was removed already.
    if ending == Ending::Unregister
        && !fatal
            .as_ref()
            .is_some_and(|e| matches!(e.status(), Some(401 | 403 | 404)))
    {
        unregister(&shared).await;
    }
    let stats = WorkerStats {
        agent_id: Some(agent_id),
        completed: shared.completed.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        lost: shared.lost.load(Ordering::Relaxed),
    };
    info!(
        "agent {agent_id} stopped: {} completed, {} failed, {} rejected",
        stats.completed, stats.failed, stats.rejected
    );
    match fatal {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// What the worker's loops share.
struct Shared {
    agent: Client,
    agent_id: AgentId,
    fatal: std::sync::Mutex<Option<ClientError>>,
    fatal_notify: Notify,
    completed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    lost: AtomicU64,
    /// Tasks being worked on, to list in heartbeats and to stop when the coordinator revokes
    /// them.
    running: std::sync::Mutex<HashMap<TaskId, AbortHandle>>,
}

impl Shared {
    /// Records an error that ends the worker (the first one wins) and wakes the main loop.
    fn set_fatal(&self, e: ClientError) {
        let mut slot = self.fatal.lock().expect("not poisoned");
        if slot.is_none() {
            error!("agent {}: {e}; stopping", self.agent_id);
            *slot = Some(e);
        }
        drop(slot);
        self.fatal_notify.notify_one();
    }
}

/// Whether an error means the agent can no longer work (removed, token refused, request
/// refused as malformed): any 4xx but 408, 409 and 429.
fn is_fatal(e: &ClientError) -> bool {
    matches!(e.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 408 | 409 | 429))
}

async fn heartbeat_loop(shared: Arc<Shared>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = interval.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            biased;
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            _ = tokio::time::sleep(interval) => {}
        }
        let running: Vec<TaskId> = shared
            .running
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect();
        let beat = Heartbeat {
            running_tasks: Some(running),
            ..Heartbeat::default()
        };
        let call = shared.agent.heartbeat(shared.agent_id, &beat);
        match tokio::time::timeout(interval.max(Duration::from_secs(1)) * 2, call).await {
            Ok(Ok(ack)) => {
                for id in &ack.revoked_tasks {
                    if let Some(handle) = shared.running.lock().expect("not poisoned").remove(id) {
                        warn!("task {id} was taken back by the coordinator; stopping it");
                        handle.abort();
                        shared.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if ack.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(ack.heartbeat_interval_ms)
                        .max(Duration::from_millis(100));
                }
            }
            // A stopped agent's heartbeat conflicts: it was removed.
            Ok(Err(e)) if is_fatal(&e) || e.is_conflict() => {
                shared.set_fatal(e);
                return;
            }
            Ok(Err(e)) => warn!("heartbeat failed: {e}"),
            Err(_) => warn!("heartbeat got no answer in time"),
        }
    }
}

async fn poll_loop<H: TaskHandler>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    poll_wait: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = RetryBackoff::new();
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let next = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = shared.agent.next_task(shared.agent_id, poll_wait) => r,
        };
        match next {
            Ok(Some(task)) => {
                backoff.reset();
                run_one(&shared, &handler, task).await;
            }
            Ok(None) => backoff.reset(),
            Err(e) if is_fatal(&e) => {
                shared.set_fatal(e);
                return;
            }
            Err(e) => {
                let wait = backoff.next_delay();
                warn!("taking a task failed ({e}); retrying in {wait:?}");
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Aborts the task when dropped (so that abandoning a poll loop also stops its handler).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_one<H: TaskHandler>(shared: &Shared, handler: &Arc<H>, task: Task) {
    let id = task.id;
    let attempt = task.attempts;
    debug!("task {id} ({}) attempt {attempt}: started", task.task_type);
    let h = handler.clone();
    let mut running = AbortOnDrop(tokio::spawn(async move { h.handle(task).await }));
    shared
        .running
        .lock()
        .expect("not poisoned")
        .insert(id, running.0.abort_handle());
    let joined = (&mut running.0).await;
    let outcome = match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err(TaskFailure::retryable(format!(
            "the task handler panicked: {}",
            panic_message(e.into_panic())
        ))),
        Err(_) => {
            shared.running.lock().expect("not poisoned").remove(&id);
            return;
        }
    };
    report(shared, id, attempt, outcome).await;
    // Only now: until the report lands, heartbeats keep listing the task, so the coordinator
    // does not take it for one whose hand-over was lost.
    shared.running.lock().expect("not poisoned").remove(&id);
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

async fn report(shared: &Shared, id: TaskId, attempt: u32, mut outcome: Result<Json, TaskFailure>) {
    let mut backoff = RetryBackoff::new();
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = match &outcome {
            Ok(result) => {
                shared
                    .agent
                    .complete_task(id, result.clone(), Some(attempt))
                    .await
            }
            Err(f) => {
                shared
                    .agent
                    .fail_task(id, &f.message, f.retryable, Some(attempt))
                    .await
            }
        };
        match sent {
            Ok(_) => {
                match &outcome {
                    Ok(_) => {
                        debug!("task {id} attempt {attempt}: completed");
                        shared.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(f) => {
                        debug!("task {id} attempt {attempt}: failed: {f}");
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return;
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                info!(
                    "task {id} attempt {attempt}: the coordinator no longer expects this report ({e}); skipped"
                );
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) if e.status() == Some(413) && outcome.is_ok() => {
                let size = outcome.as_ref().map(Json::len).unwrap_or(0);
                warn!("task {id}: result of {size} bytes refused as too large; failing the task");
                outcome = Err(TaskFailure::permanent(format!(
                    "the result ({size} bytes) is too large to store: {e}"
                )));
            }
            Err(e) if e.is_transient() && tries < REPORT_TRIES => {
                let wait = backoff.next_delay();
                warn!("task {id}: reporting failed ({e}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                error!("task {id}: could not report the outcome of attempt {attempt}: {e}");
                shared.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

async fn unregister(shared: &Shared) {
    let mut backoff = RetryBackoff::new();
    for tries in 1..=UNREGISTER_TRIES {
        match shared.agent.remove_agent(shared.agent_id).await {
            Ok(()) => return,
            Err(e) if e.is_not_found() => return,
            Err(e) if e.is_transient() && tries < UNREGISTER_TRIES => {
                let wait = backoff.next_delay();
                warn!("unregistering failed ({e}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                warn!(
                    "could not unregister agent {} ({e}); its tasks go back to the queue when its lease lapses",
                    shared.agent_id
                );
                return;
            }
        }
    }
}

/// Capped exponential backoff with a little jitter: 200 ms, 400 ms, … up to 5 s.
struct RetryBackoff {
    next: Duration,
}

impl RetryBackoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        RetryBackoff { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to +25 % jitter, so that many workers do not retry in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jittered = base + base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        Duration::from_millis(jittered.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_and_resets() {
        let mut b = RetryBackoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(200) && first <= Duration::from_millis(250));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(6250), "{d:?}");
        }
        assert!(b.next_delay() >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(250));
    }

    #[test]
    fn fatal_errors_are_refusals_not_conflicts_or_outages() {
        let api = |status: u16| ClientError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
        };
        assert!(is_fatal(&api(401)));
        assert!(is_fatal(&api(404)));
        assert!(!is_fatal(&api(409)));
        assert!(!is_fatal(&api(429)));
        assert!(!is_fatal(&api(503)));
    }

    #[test]
    fn closures_are_handlers() {
        fn assert_handler<H: TaskHandler>(_: H) {}
        assert_handler(|_t: Task| async { Ok(Json::null()) });
        assert_handler(|t: Task| async move {
            if t.attempts > 1 {
                Err(TaskFailure::permanent("no"))
            } else {
                Err("retry me".into())
            }
        });
    }

    #[tokio::test]
    async fn stops_before_registering_when_the_coordinator_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = Client::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
        let stats = run_worker(
            client,
            WorkerConfig::default(),
            |_t: Task| async { Ok(Json::null()) },
            tokio::time::sleep(Duration::from_millis(600)),
        )
        .await
        .unwrap();
        assert_eq!(stats, WorkerStats::default());
    }
}
