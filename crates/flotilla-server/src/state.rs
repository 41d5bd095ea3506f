//! The coordinator's shared state and the one way it changes: [`AppState::apply`].
//!
//! `apply` runs a core command under the fleet lock, hands the resulting rows and events to
//! the group-commit writer (still under the lock, so commits follow the order of commands),
//! releases the lock, waits until the batch is durable, and only then carries out the
//! command's effects and lets the handler answer. A client is therefore never told about, and
//! an agent never given, anything that a crash could take back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::{AgentId, Changes, CoreError, Effect, Fleet, TaskId, Timestamp};
use flotilla_store::{Batch, Reader, TokenRecord};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};

use crate::auth::TokenTable;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::writer::Writer;

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// The fleet.
    pub fleet: Mutex<Fleet>,
    /// Tokens in force.
    pub tokens: RwLock<TokenTable>,
    /// The group-commit writer.
    pub writer: Writer,
    /// Read connections to the store.
    pub reader: Reader,
    /// The clock.
    pub clock: Clock,
    /// Who is waiting for what.
    pub waiters: Waiters,
    /// Where state is stored, for `GET /orchestrator`.
    pub store_description: String,
    /// Flips to true when the server shuts down; long polls return at once.
    pub shutdown: watch::Receiver<bool>,
    /// The supervisor of managed agents.
    pub supervisor: crate::supervisor::Supervisor,
    /// The data directory (managed agents' logs live in `logs/` there).
    pub data_dir: std::path::PathBuf,
    /// What daemon-mode agents get as `FLOTILLA_BIN`.
    pub flotilla_bin: Option<std::path::PathBuf>,
    /// The resource manager and pressure detector.
    pub resources: crate::resources::Resources,
    /// The hosts (`flotilla host`) that run agents of pools placed on hosts.
    pub hosts: crate::hosts::Hosts,
    /// The autoscaler's memory (runs of breaches, last actions). Locked after the fleet.
    pub autoscaler: Mutex<flotilla_core::autoscale::Autoscaler>,
    /// Asked before the autoscaler grows a pool; see [`ScaleVeto`].
    pub scale_veto: RwLock<ScaleVeto>,
    /// The bus: committed events and messages are published there, receives wait on it.
    pub bus: crate::bus::BusLink,
    /// Hooks every message send passes through (size limit, audit, your own).
    pub middleware: RwLock<Vec<Arc<dyn crate::middleware::MessageMiddleware>>>,
    /// Requests per token (`None`: unlimited).
    pub limiter: Option<crate::rate_limit::Limiter>,
    /// Open streams, WebSockets and long polls per token.
    pub streams: crate::access::Streams,
    /// The audit log's writer side.
    pub audit: crate::access::AuditLog,
    /// With a PostgreSQL store: this coordinator's place in the cluster (set once it listens).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Asked, under the fleet lock, before the autoscaler grows a pool: given the fleet, the pool
/// and the size wanted, it answers why not (`Some(reason)`, recorded as a
/// `pool_scale_refused` event) or `None` to let it grow. The resource and pressure manager
/// installs its own with [`AppState::set_scale_veto`]; until then nothing is refused.
pub type ScaleVeto =
    Arc<dyn Fn(&Fleet, &flotilla_core::Pool, u32) -> Option<String> + Send + Sync + 'static>;

/// The veto in force until another is installed: never refuses.
pub fn no_scale_veto() -> ScaleVeto {
    Arc::new(|_: &Fleet, _: &flotilla_core::Pool, _: u32| None)
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// Adds a hook to the message path (after the built-in size limit and audit).
    pub fn add_message_middleware(&self, m: Arc<dyn crate::middleware::MessageMiddleware>) {
        self.middleware.write().push(m);
    }

    /// Installs the check asked before the autoscaler grows a pool (see [`ScaleVeto`]).
    pub fn set_scale_veto(&self, veto: ScaleVeto) {
        *self.scale_veto.write() = veto;
    }

    /// The current instant.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Applies a command to the fleet and returns once its changes are durable.
    pub async fn apply<T>(
        &self,
        command: impl FnOnce(&mut Fleet, Timestamp) -> Result<T, CoreError>,
    ) -> Result<T, ApiError> {
        self.apply_with_tokens(|fleet, now| command(fleet, now).map(|v| (v, Vec::new())))
            .await
    }

    /// Like [`AppState::apply`], for commands that also issue tokens (persisted in the same
    /// transaction as the command's changes).
    pub async fn apply_with_tokens<T>(
        &self,
        command: impl FnOnce(&mut Fleet, Timestamp) -> Result<(T, Vec<TokenRecord>), CoreError>,
    ) -> Result<T, ApiError> {
        if self.writer.has_failed() {
            return Err(refused_since_failure());
        }
        let (value, pending) = {
            let mut fleet = self.fleet.lock();
            let now = self.now();
            match command(&mut fleet, now) {
                Ok((value, tokens)) => (value, self.hand_over(&mut fleet, tokens, now)),
                Err(e) => {
                    // A refused command changes nothing.
                    debug_assert!(fleet.take_changes().is_empty());
                    return Err(e.into());
                }
            }
        };
        self.settle(pending).await?;
        Ok(value)
    }

    /// Commits whatever the fleet has pending (after a tick) and runs the effects.
    pub async fn flush(&self, tick: bool) {
        if self.writer.has_failed() {
            return;
        }
        let pending = {
            let mut fleet = self.fleet.lock();
            let now = self.now();
            if tick {
                fleet.tick(now);
            }
            self.hand_over(&mut fleet, Vec::new(), now)
        };
        if let Err(e) = self.settle(pending).await {
            tracing::warn!(error = %e.message, "could not persist the clock's changes");
        }
    }

    /// Under the fleet lock: takes the fleet's changes and effects and hands the changes (with
    /// these tokens) to the writer. With nothing to write, it notes the last batch handed over
    /// before, so that the answer still waits for it.
    fn hand_over(
        &self,
        fleet: &mut Fleet,
        mut tokens: Vec<TokenRecord>,
        now: Timestamp,
    ) -> Pending {
        let changes = fleet.take_changes();
        let effects = fleet.take_effects();
        let discards = fleet.take_discards();
        tokens.extend(self.revoke_tokens_of_stopped_agents(&changes, now));
        let published = self
            .bus
            .wants(&changes)
            .then(|| crate::bus::Published::of(&changes));
        let wait = if changes.is_empty() && tokens.is_empty() {
            Wait::Watermark(self.writer.last_submitted())
        } else {
            Wait::Ack(self.writer.submit(Batch {
                changes,
                tokens,
                ..Batch::default()
            }))
        };
        Pending {
            wait,
            effects,
            discards,
            published,
        }
    }

    /// Out of the lock: waits until what was handed over is durable, then runs the effects.
    async fn settle(&self, pending: Pending) -> Result<(), ApiError> {
        match pending.wait {
            Wait::Ack(ack) => match ack.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(ApiError::unavailable(format!(
                        "the change could not be stored ({e}); its outcome is unknown until the store recovers: retry (with an idempotency key for submissions)"
                    )));
                }
                Err(_) => {
                    return Err(ApiError::unavailable(
                        "the coordinator is shutting down; retry shortly",
                    ));
                }
            },
            Wait::Watermark(seq) => self.durable(seq).await?,
        }
        if let Some(p) = pending.published {
            self.bus.committed(p);
        }
        self.run_effects(&pending.effects);
        crate::checkpoints::discard_all(pending.discards);
        Ok(())
    }

    /// Waits until every batch up to `seq` is durable: what a caller read from memory when
    /// [`Writer::last_submitted`](crate::writer::Writer::last_submitted) was `seq` is then in
    /// the store too, and no crash can take it back.
    pub async fn durable(&self, seq: u64) -> Result<(), ApiError> {
        if self
            .writer
            .wait_committed(seq, Duration::from_secs(10))
            .await
        {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "the store has not confirmed earlier changes; retry shortly",
            ))
        }
    }

    /// Agents that stopped (unregistered, replaced, swarm deleted) lose their tokens, and so do
    /// tokens limited to a deleted swarm.
    fn revoke_tokens_of_stopped_agents(
        &self,
        changes: &Changes,
        now: Timestamp,
    ) -> Vec<TokenRecord> {
        let stopped = changes
            .agents
            .iter()
            .filter(|a| a.status == flotilla_core::AgentStatus::Stopped);
        let mut revoked = Vec::new();
        let mut tokens = None;
        for agent in stopped {
            let table = tokens.get_or_insert_with(|| self.tokens.write());
            revoked.extend(table.revoke_agent(agent.id, now));
        }
        // Tokens limited to a deleted swarm (ids are never used again) go with it.
        for swarm in &changes.deleted_swarms {
            let table = tokens.get_or_insert_with(|| self.tokens.write());
            revoked.extend(table.revoke_swarm(*swarm, now));
        }
        revoked
    }

    /// Where a managed agent's log is.
    pub fn log_path(&self, agent_name: &str) -> std::path::PathBuf {
        self.data_dir.join("logs").join(format!("{agent_name}.log"))
    }

    /// Carries out effects once their changes are durable.
    pub fn run_effects(&self, effects: &[Effect]) {
        use crate::supervisor::Order;
        for effect in effects {
            match *effect {
                Effect::WakeAgent(a) => self.waiters.wake_agent(a),
                Effect::TaskFinished(t) => self.waiters.wake_task(t),
                Effect::StartAgent(a) => self.supervisor.send(Order::Start(a)),
                Effect::StopAgent(a, force) => self.supervisor.send(Order::Stop(a, force)),
                Effect::PauseAgent(a) => self.supervisor.send(Order::Pause(a)),
                Effect::ResumeAgent(a) => self.supervisor.send(Order::Resume(a)),
                Effect::RestartAgent(a, force) => self.supervisor.send(Order::Restart(a, force)),
                Effect::RollbackAgent(a, c) => self.supervisor.send(Order::Rollback(a, c)),
                Effect::CheckpointAgent(a, trigger) => {
                    self.supervisor.send(Order::Checkpoint(a, trigger))
                }
                Effect::WakeInbox(swarm, agent) => self.bus.wake_inbox(swarm, agent),
                Effect::RequestAnswered(request) => self.waiters.wake_request(request),
            }
        }
    }
}

/// What a command handed to the writer, and what to do once it is durable.
struct Pending {
    wait: Wait,
    effects: Vec<Effect>,
    /// Workspace snapshots of removed checkpoints, discarded once durable.
    discards: Vec<flotilla_core::Json>,
    /// Events and messages to publish on the bus once durable.
    published: Option<crate::bus::Published>,
}

enum Wait {
    /// The command's own batch.
    Ack(crate::writer::Ack),
    /// The command changed nothing: the batches before it.
    Watermark(u64),
}

fn refused_since_failure() -> ApiError {
    ApiError::unavailable(
        "the store refused an earlier change, so this coordinator accepts no more: restart it to reload its state from the store",
    )
}

/// Long polls waiting for an agent's next task or for a task to finish.
#[derive(Default)]
pub struct Waiters {
    agents: Mutex<HashMap<AgentId, (Arc<Notify>, usize)>>,
    tasks: Mutex<HashMap<TaskId, (Arc<Notify>, usize)>>,
    requests: Mutex<HashMap<flotilla_core::MessageId, (Arc<Notify>, usize)>>,
}

impl Waiters {
    /// Registers a poll of an agent; the guard unregisters it.
    pub fn enter_agent(&self, state: &AppState, agent: AgentId) -> AgentPoll {
        let mut map = self.agents.lock();
        let e = map
            .entry(agent)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        e.1 += 1;
        AgentPoll {
            state: state.clone(),
            agent,
            notify: e.0.clone(),
        }
    }

    /// Registers a wait on a task; the guard unregisters it.
    pub fn enter_task(&self, state: &AppState, task: TaskId) -> TaskWait {
        let mut map = self.tasks.lock();
        let e = map
            .entry(task)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        e.1 += 1;
        TaskWait {
            state: state.clone(),
            task,
            notify: e.0.clone(),
        }
    }

    /// Registers a wait for the response to a request; the guard unregisters it.
    pub fn enter_request(
        &self,
        state: &AppState,
        request: flotilla_core::MessageId,
    ) -> RequestWait {
        let mut map = self.requests.lock();
        let e = map
            .entry(request)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        e.1 += 1;
        RequestWait {
            state: state.clone(),
            request,
            notify: e.0.clone(),
        }
    }

    fn wake_request(&self, request: flotilla_core::MessageId) {
        if let Some((n, _)) = self.requests.lock().get(&request) {
            n.notify_waiters();
        }
    }

    fn wake_agent(&self, agent: AgentId) {
        if let Some((n, _)) = self.agents.lock().get(&agent) {
            n.notify_waiters();
        }
    }

    fn wake_task(&self, task: TaskId) {
        if let Some((n, _)) = self.tasks.lock().get(&task) {
            n.notify_waiters();
        }
    }
}

/// An open poll of an agent for its next task.
pub struct AgentPoll {
    state: AppState,
    agent: AgentId,
    /// Notified when a task is placed on the agent.
    pub notify: Arc<Notify>,
}

impl Drop for AgentPoll {
    fn drop(&mut self) {
        // Lock order: waiters, then fleet (nothing locks them the other way round). Holding
        // both keeps a new poll of the same agent from being un-marked as waiting.
        let mut map = self.state.waiters.agents.lock();
        match map.get_mut(&self.agent) {
            Some(e) if e.1 > 1 => e.1 -= 1,
            _ => {
                map.remove(&self.agent);
                self.state.fleet.lock().stop_polling(self.agent);
            }
        }
    }
}

/// An open wait for a task to finish.
pub struct TaskWait {
    state: AppState,
    task: TaskId,
    /// Notified when the task finishes.
    pub notify: Arc<Notify>,
}

impl Drop for TaskWait {
    fn drop(&mut self) {
        let mut map = self.state.waiters.tasks.lock();
        match map.get_mut(&self.task) {
            Some(e) if e.1 > 1 => e.1 -= 1,
            _ => {
                map.remove(&self.task);
            }
        }
    }
}

/// An open wait for the response to a request.
pub struct RequestWait {
    state: AppState,
    request: flotilla_core::MessageId,
    /// Notified when the request is answered or times out.
    pub notify: Arc<Notify>,
}

impl Drop for RequestWait {
    fn drop(&mut self) {
        let mut map = self.state.waiters.requests.lock();
        match map.get_mut(&self.request) {
            Some(e) if e.1 > 1 => e.1 -= 1,
            _ => {
                map.remove(&self.request);
            }
        }
    }
}
