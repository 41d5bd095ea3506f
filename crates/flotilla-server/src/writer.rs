//! Group commit: one thread owns the store's write connection and persists whatever has
//! queued up since its last commit in a single transaction.
//!
//! Callers send their batch while still holding the fleet lock, so batches reach the store in
//! the order the fleet applied them; each caller then awaits its acknowledgement before
//! answering its client. Under load many requests share one transaction (and one fsync);
//! with no load a request waits for exactly one commit.
//!
//! When a commit fails, the batch is kept and put in front of the next one: rows are whole
//! entities, so writing an older row before a newer one is always correct, and events stay in
//! order. The callers of the failed commit are told it failed (503); their change may still
//! become durable with a later commit, like any request whose answer was lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use flotilla_core::Changes;
use flotilla_store::{Batch, Store, StoreError};
use tokio::sync::oneshot;

/// How many waiting batches one commit takes at most.
const MAX_JOBS_PER_COMMIT: usize = 8192;

struct Job {
    batch: Batch,
    done: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

/// The sending side of the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: Sender<Job>,
}

/// Waits for one batch to be durable.
pub type Ack = oneshot::Receiver<Result<(), Arc<StoreError>>>;

impl Writer {
    /// Starts the writer thread on a store.
    pub fn start(store: Box<dyn Store>) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = channel();
        let handle = std::thread::Builder::new()
            .name("flotilla-writer".into())
            .spawn(move || run(store, rx))
            .expect("spawn the writer thread");
        (Writer { tx }, handle)
    }

    /// Queues a batch; the returned receiver resolves once it is durable (or failed).
    pub fn submit(&self, batch: Batch) -> Ack {
        let (done, ack) = oneshot::channel();
        if self.tx.send(Job { batch, done }).is_err() {
            // The writer is gone (shutting down): the dropped sender makes the ack fail.
        }
        ack
    }
}

fn run(mut store: Box<dyn Store>, rx: Receiver<Job>) {
    let mut carried: Option<Batch> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut batch = carried.take().unwrap_or_else(empty_batch);
        let mut waiters = Vec::with_capacity(jobs.len());
        for job in jobs {
            batch.changes.extend(job.batch.changes);
            batch.tokens.extend(job.batch.tokens);
            waiters.push(job.done);
        }
        dedupe(&mut batch);
        let mut result = store.commit(&batch);
        // A busy or briefly failing disk gets a few quick retries before callers hear of it.
        for delay_ms in [5, 50, 250] {
            match &result {
                Err(e) if is_transient(e) => {
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    result = store.commit(&batch);
                }
                _ => break,
            }
        }
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the batch will be retried with the next one");
                carried = Some(batch);
                Err(Arc::new(e))
            }
        };
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }
    // The channel closed: flush what failed before, once more.
    if let Some(batch) = carried
        && let Err(e) = store.commit(&batch)
    {
        tracing::error!(error = %e, "final commit failed");
    }
}

/// Errors worth a quick retry: a lock held briefly by another process, a passing I/O hiccup.
fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Locked(_) | StoreError::Io(_))
}

fn empty_batch() -> Batch {
    Batch {
        changes: Changes::default(),
        tokens: Vec::new(),
    }
}

/// Keeps only the last row of each entity (the newest state); events all stay, in order.
fn dedupe(batch: &mut Batch) {
    fn last_wins<T, K: std::hash::Hash + Eq>(rows: &mut Vec<T>, key: impl Fn(&T) -> K) {
        if rows.len() < 2 {
            return;
        }
        let mut seen = HashSet::with_capacity(rows.len());
        let mut keep: Vec<T> = Vec::with_capacity(rows.len());
        for row in rows.drain(..).rev() {
            if seen.insert(key(&row)) {
                keep.push(row);
            }
        }
        keep.reverse();
        *rows = keep;
    }
    let c = &mut batch.changes;
    if !c.deleted_swarms.is_empty() {
        // Rows of a swarm deleted later in the same commit must not be written back.
        let gone: HashSet<_> = c.deleted_swarms.iter().copied().collect();
        c.swarms.retain(|s| !gone.contains(&s.id));
        c.agents.retain(|a| !gone.contains(&a.swarm_id));
        c.tasks.retain(|t| !gone.contains(&t.swarm_id));
    }
    last_wins(&mut c.swarms, |s| s.id);
    last_wins(&mut c.agents, |a| a.id);
    last_wins(&mut c.tasks, |t| t.id);
    last_wins(&mut batch.tokens, |t| t.id.clone());
}
