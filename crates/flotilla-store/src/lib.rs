//! Flotilla's durable state.
//!
//! The coordinator keeps the live fleet in memory (`flotilla_core::Fleet`) and persists every
//! change through a [`Store`] before it answers the API call that caused it. One writer thread
//! owns the store and hands it group-committed [`Batch`]es: whole rows to upsert, where a later
//! row for an id replaces an earlier one, plus events to append. At start the coordinator
//! rebuilds its state from [`Store::load`].
//!
//! Reads the memory cannot serve (filtered, paginated task lists, tasks evicted from memory, the
//! event log, the message history) go through a [`SqliteReader`], which has read-only
//! connections of its own and runs beside the writer (SQLite's WAL mode lets readers proceed
//! while a write is under way).
//!
//! [`SqliteStore`] is the backend; start reading at [`sqlite`].

#![warn(missing_docs)]

mod error;
pub mod sqlite;
mod token;

pub use error::StoreError;
pub use flotilla_core::Changes;
pub use flotilla_core::api::Page;
pub use sqlite::reader::{
    AuditFilter, Direction, EventFilter, HistorySize, MessageFilter, MetricSeries, SqliteReader,
    TaskFilter,
};
pub use sqlite::schema::SCHEMA_VERSION;
pub use sqlite::{SqliteStore, SyncMode};
pub use token::{TokenRecord, TokenRole};

use flotilla_core::{Agent, Message, Pool, StoredState, Swarm, Task};

/// Durable state of the fleet. One writer at a time.
pub trait Store: Send {
    /// Loads what the coordinator needs at start: every swarm; every pool; every agent not
    /// removed (unregistered), stopped ones included; every task not in a terminal status plus
    /// the `retain_terminal` most recently finished terminal ones; the next event seq; every
    /// token not revoked; every message in flight; every request awaiting its response.
    fn load(&mut self, retain_terminal: usize) -> Result<Snapshot, StoreError>;

    /// Persists one batch atomically: all of it or, on error, nothing.
    ///
    /// In order: tokens are upserted; deleted swarms are removed with their pools, agents,
    /// tasks, dependencies, messages and their agents' tokens (their events stay in the log);
    /// swarms are upserted; deleted pools are removed; pools, agents and tasks are upserted (rows
    /// of a swarm deleted in the same batch are skipped, and of several rows for one pool, agent
    /// or task only the last is written); tasks' dependencies are recorded; messages are
    /// upserted (likewise), then deleted messages removed, then requests' replies set (on rows
    /// of this batch or earlier ones); events are appended.
    ///
    /// Pools are deleted before they are upserted, so a pool both in `deleted_pools` and in
    /// `pools` (deleted, then created again under the same name) is stored.
    ///
    /// A task's `swarm_id`, `created_at` and `idempotency_key` are fixed when it is first
    /// written (the core never changes them); every other field of a later row replaces the
    /// stored one. Likewise, what a message's sender gave (swarm, kind, sender, recipient,
    /// topic, priority, body, correlation id, `created_at`) is fixed when it is first written.
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// Where the state lives, e.g. `sqlite:/abs/path/flotilla.db`.
    fn describe(&self) -> String;
}

/// What one group commit persists.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Rows and events from the core.
    pub changes: Changes,
    /// Tokens created or revoked.
    pub tokens: Vec<TokenRecord>,
    /// Entries to append to the audit log.
    pub audit: Vec<flotilla_core::api::AuditEntry>,
    /// Forget the audit entries older than this.
    pub audit_prune_before: Option<flotilla_core::Timestamp>,
}

impl Batch {
    /// Whether there is nothing to persist.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.tokens.is_empty()
            && self.audit.is_empty()
            && self.audit_prune_before.is_none()
    }
}

/// The state the coordinator starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Every swarm, oldest first.
    pub swarms: Vec<Swarm>,
    /// Every pool, by swarm id then name.
    pub pools: Vec<Pool>,
    /// Every agent not removed (stopped ones included), in registration order.
    pub agents: Vec<Agent>,
    /// Unfinished tasks in creation order, then the retained finished ones in the order they
    /// finished.
    pub tasks: Vec<Task>,
    /// The seq the next event gets: one more than the largest stored, or 1.
    pub next_event_seq: u64,
    /// Every token not revoked, oldest first.
    pub tokens: Vec<TokenRecord>,
    /// Every message in flight (pending or delivered), in arrival order (`seq`).
    pub messages: Vec<Message>,
    /// Every request still waiting for its response (`reply` is `awaiting`), whatever its
    /// delivery status, in arrival order.
    pub awaiting_requests: Vec<Message>,
}

impl Snapshot {
    /// Splits the snapshot into the state [`flotilla_core::Fleet::restore`] takes and the tokens.
    pub fn into_parts(self) -> (StoredState, Vec<TokenRecord>) {
        let Snapshot {
            swarms,
            pools,
            agents,
            tasks,
            next_event_seq,
            tokens,
            messages,
            awaiting_requests,
        } = self;
        (
            StoredState {
                swarms,
                pools,
                agents,
                tasks,
                next_event_seq,
                messages,
                awaiting_requests,
            },
            tokens,
        )
    }
}
