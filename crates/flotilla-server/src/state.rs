//! The coordinator's shared state and the one way it changes: [`AppState::apply`].
//!
//! `apply` runs a core command under the fleet lock, hands the resulting rows and events to
//! the group-commit writer (still under the lock, so commits follow the order of commands),
//! releases the lock, waits until the batch is durable, and only then carries out the
//! command's effects and lets the handler answer. A client is therefore never told about, and
//! an agent never given, anything that a crash could take back.

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_core::{AgentId, Changes, CoreError, Effect, Fleet, TaskId, Timestamp};
use flotilla_store::{Batch, SqliteReader, TokenRecord};
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
    pub reader: SqliteReader,
    /// The clock.
    pub clock: Clock,
    /// Who is waiting for what.
    pub waiters: Waiters,
    /// Where state is stored, for `GET /orchestrator`.
    pub store_description: String,
    /// Flips to true when the server shuts down; long polls return at once.
    pub shutdown: watch::Receiver<bool>,
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
        let (value, ack, effects) = {
            let mut fleet = self.fleet.lock();
            let now = self.now();
            let result = command(&mut fleet, now);
            let changes = fleet.take_changes();
            let effects = fleet.take_effects();
            let (value, mut tokens) = match result {
                Ok(v) => v,
                Err(e) => {
                    // A refused command changes nothing, but keep whatever was pending.
                    debug_assert!(changes.is_empty());
                    if !changes.is_empty() {
                        self.writer.submit(Batch {
                            changes,
                            tokens: Vec::new(),
                        });
                    }
                    return Err(e.into());
                }
            };
            tokens.extend(self.revoke_tokens_of_stopped_agents(&changes, now));
            let ack = (!changes.is_empty() || !tokens.is_empty())
                .then(|| self.writer.submit(Batch { changes, tokens }));
            (value, ack, effects)
        };
        if let Some(ack) = ack {
            match ack.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(ApiError::unavailable(format!(
                        "the change could not be stored ({e}); it was not acknowledged, retry later"
                    )));
                }
                Err(_) => {
                    return Err(ApiError::unavailable(
                        "the coordinator is shutting down; retry shortly",
                    ));
                }
            }
        }
        self.run_effects(&effects);
        Ok(value)
    }

    /// Commits whatever the fleet has pending (after a tick) and runs the effects.
    pub async fn flush(&self, tick: bool) {
        let (ack, effects) = {
            let mut fleet = self.fleet.lock();
            let now = self.now();
            if tick {
                fleet.tick(now);
            }
            let changes = fleet.take_changes();
            let effects = fleet.take_effects();
            if changes.is_empty() {
                (None, effects)
            } else {
                let tokens = self.revoke_tokens_of_stopped_agents(&changes, now);
                (Some(self.writer.submit(Batch { changes, tokens })), effects)
            }
        };
        if let Some(ack) = ack
            && !matches!(ack.await, Ok(Ok(())))
        {
            return;
        }
        self.run_effects(&effects);
    }

    /// Agents that stopped (unregistered, replaced, swarm deleted) lose their tokens.
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
        revoked
    }

    fn run_effects(&self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::WakeAgent(a) => self.waiters.wake_agent(*a),
                Effect::TaskFinished(t) => self.waiters.wake_task(*t),
            }
        }
    }
}

/// Long polls waiting for an agent's next task or for a task to finish.
#[derive(Default)]
pub struct Waiters {
    agents: Mutex<HashMap<AgentId, (Arc<Notify>, usize)>>,
    tasks: Mutex<HashMap<TaskId, (Arc<Notify>, usize)>>,
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
