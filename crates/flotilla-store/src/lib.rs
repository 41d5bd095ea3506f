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

mod commit;
mod cursor;
mod error;
mod load;
pub mod postgres;
pub mod reader;
mod rows;
mod sql;
pub mod sqlite;
mod token;

pub use error::StoreError;
pub use flotilla_core::Changes;
pub use flotilla_core::api::Page;
pub use postgres::PgStore;
pub use reader::{
    AuditFilter, Direction, EventFilter, HistorySize, MessageFilter, MetricSeries, Reader,
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

    /// Where the state lives, e.g. `sqlite:/abs/path/flotilla.db` or
    /// `postgres://user@host:5432/db` (never a password).
    fn describe(&self) -> String;

    /// A reader of the same state, with connections of its own, that runs beside the writer.
    fn reader(&self) -> Result<Reader, StoreError>;
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self, retain_terminal: usize) -> Result<Snapshot, StoreError> {
        (**self).load(retain_terminal)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        (**self).commit(batch)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }

    fn reader(&self) -> Result<Reader, StoreError> {
        (**self).reader()
    }
}

/// Where the fleet's state lives, as `--store` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (one coordinator).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), which several coordinators
    /// may share.
    Postgres(String),
}

impl StoreLocation {
    /// Reads `--store`: `None` or `sqlite` for `default_file`; `sqlite:PATH` for another file;
    /// a `postgres://` or `postgresql://` URL.
    pub fn parse(text: Option<&str>, default_file: &std::path::Path) -> Result<Self, StoreError> {
        let Some(text) = text
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "sqlite")
        else {
            return Ok(StoreLocation::Sqlite(default_file.to_path_buf()));
        };
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            postgres::Target::parse(text)?;
            return Ok(StoreLocation::Postgres(text.to_owned()));
        }
        if let Some(path) = text.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
            return Ok(StoreLocation::Sqlite(path.into()));
        }
        Err(StoreError::Open {
            path: text.into(),
            reason: "the store must be sqlite, sqlite:PATH or a postgres:// URL".to_owned(),
        })
    }

    /// Opens the store (bringing its schema up to date). Blocks: call it off async threads.
    pub fn open(&self, sync: SyncMode) -> Result<Box<dyn Store>, StoreError> {
        self.open_for(sync, None)
    }

    /// Opens the store for cluster node `node` with leases of `ttl` (PostgreSQL only; see
    /// [`PgStore::claim_new_swarms_for`]).
    pub fn open_for(
        &self,
        sync: SyncMode,
        node: Option<(&str, std::time::Duration)>,
    ) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            StoreLocation::Sqlite(path) => Box::new(SqliteStore::open(path, sync)?),
            StoreLocation::Postgres(url) => {
                let mut store = PgStore::open(url)?;
                if let Some((node, ttl)) = node {
                    store.claim_new_swarms_for(node, ttl);
                }
                Box::new(store)
            }
        })
    }
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
