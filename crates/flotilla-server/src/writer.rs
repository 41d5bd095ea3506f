//! Group commit: one thread owns the store's write connection and persists whatever has
//! queued up since its last commit in a single transaction.
//!
//! Callers send their batch while still holding the fleet lock, so batches reach the store in
//! the order the fleet applied them; each caller then awaits its acknowledgement before
//! answering its client. Under load many requests share one transaction (and one fsync);
//! with no load a request waits for exactly one commit. The store itself keeps the last row of
//! each entity and writes swarm rows in order (renames), so batches are merged as they are.
//!
//! Every batch gets a sequence number, and [`Writer::committed`] tells the highest one that is
//! durable: a command that changed nothing still waits for that watermark to reach the batches
//! sent before it, so it never answers from state a crash could take back.
//!
//! Failures: a transient one (the file locked by another process, an I/O error, a full disk, a
//! read-only file, a database server that restarted or cannot be reached) keeps the batch and puts it in front of the next commit — rows are whole
//! entities, so writing an older row before a newer one is always correct — and tells its
//! callers it failed (503: the outcome is unknown until a later commit succeeds). Any other
//! failure (a constraint the store refuses, corruption) means memory and store disagree in a way
//! retrying cannot fix: the writer fails closed, refusing every later batch, until the
//! coordinator is restarted and reloads the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use flotilla_core::Changes;
use flotilla_store::{Batch, Store, StoreError};
use tokio::sync::{oneshot, watch};

/// How many waiting batches one commit takes at most.
const MAX_JOBS_PER_COMMIT: usize = 8192;

struct Job {
    seq: u64,
    batch: Batch,
    done: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

/// The sending side of the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: Sender<Job>,
    next_seq: Arc<AtomicU64>,
    committed: watch::Receiver<u64>,
    failed: Arc<AtomicBool>,
    /// Swarms whose changes the store refused because this coordinator's leases of them are
    /// gone (a cluster's fence); the cluster's rounds take them and drop the swarms.
    lost: Arc<parking_lot::Mutex<Vec<flotilla_core::SwarmId>>>,
}

/// Waits for one batch to be durable.
pub type Ack = oneshot::Receiver<Result<(), Arc<StoreError>>>;

impl Writer {
    /// Starts the writer thread on a store.
    pub fn start(store: Box<dyn Store>) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = channel();
        let (committed_tx, committed) = watch::channel(0);
        let failed = Arc::new(AtomicBool::new(false));
        let thread_failed = failed.clone();
        let lost = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let thread_lost = lost.clone();
        let handle = std::thread::Builder::new()
            .name("flotilla-writer".into())
            .spawn(move || run(store, rx, committed_tx, thread_failed, thread_lost))
            .expect("spawn the writer thread");
        let writer = Writer {
            tx,
            next_seq: Arc::new(AtomicU64::new(1)),
            committed,
            failed,
            lost,
        };
        (writer, handle)
    }

    /// Queues a batch; the returned receiver resolves once it is durable (or failed). Call it
    /// under the fleet lock, so that batches keep the order of the commands.
    pub fn submit(&self, batch: Batch) -> Ack {
        let (done, ack) = oneshot::channel();
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        // A send error means the writer is gone (shutting down): the dropped sender fails the ack.
        let _ = self.tx.send(Job { seq, batch, done });
        ack
    }

    /// The sequence number of the last batch submitted; read under the fleet lock, it covers
    /// every change the fleet has made so far.
    pub fn last_submitted(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst) - 1
    }

    /// Waits until every batch up to `seq` is durable; false if that does not happen within
    /// `within` (the store is failing).
    pub async fn wait_committed(&self, seq: u64, within: Duration) -> bool {
        let mut committed = self.committed.clone();
        tokio::time::timeout(within, committed.wait_for(|c| *c >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The swarms the store fenced off since the last call (see [`StoreError::Fenced`]).
    pub fn take_lost(&self) -> Vec<flotilla_core::SwarmId> {
        std::mem::take(&mut *self.lost.lock())
    }

    /// Whether the store refused a batch for a reason retrying cannot fix; the coordinator
    /// must be restarted to reload the store.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

fn run(
    mut store: Box<dyn Store>,
    rx: Receiver<Job>,
    committed: watch::Sender<u64>,
    failed: Arc<AtomicBool>,
    lost: Arc<parking_lot::Mutex<Vec<flotilla_core::SwarmId>>>,
) {
    let mut carried: Option<Batch> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if failed.load(Ordering::SeqCst) {
            let refused = Arc::new(StoreError::Other(
                "an earlier change was refused by the store; restart the coordinator to reload its state".into(),
            ));
            for job in jobs {
                let _ = job.done.send(Err(refused.clone()));
            }
            continue;
        }
        let mut batch = carried.take().unwrap_or_else(empty_batch);
        let mut waiters = Vec::with_capacity(jobs.len());
        let mut last_seq = 0;
        // What each job wrote about, to tell its caller whether a fenced swarm took its change.
        let touched: Vec<_> = jobs
            .iter()
            .map(|j| j.batch.changes.swarms_touched())
            .collect();
        for job in jobs {
            batch.changes.extend(job.batch.changes);
            batch.tokens.extend(job.batch.tokens);
            batch.audit.extend(job.batch.audit);
            batch.audit_prune_before = batch.audit_prune_before.max(job.batch.audit_prune_before);
            waiters.push(job.done);
            last_seq = job.seq;
        }
        let mut fenced = std::collections::BTreeSet::new();
        let mut result = commit_retrying(store.as_mut(), &batch);
        // A coordinator of a cluster whose lease of a swarm is gone may not write about it:
        // those rows go, the rest of the batch is written, and the swarms are reported.
        while let Err(StoreError::Fenced { swarms }) = &result {
            fenced.extend(swarms.iter().copied());
            batch.changes.retain_swarms(|s| !fenced.contains(&s));
            result = commit_retrying(store.as_mut(), &batch);
        }
        if !fenced.is_empty() {
            tracing::warn!(swarms = ?fenced, "changes about swarms whose leases are gone were not stored");
            lost.lock().extend(fenced.iter().copied());
        }
        let outcome = match result {
            Ok(()) => {
                committed.send_replace(last_seq);
                Ok(())
            }
            Err(e) if is_transient(&e) => {
                tracing::error!(error = %e, "commit failed; the batch will be retried with the next one");
                carried = Some(batch);
                Err(Arc::new(e))
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "the store refused a commit; refusing every change until the coordinator is restarted"
                );
                failed.store(true, Ordering::SeqCst);
                Err(Arc::new(e))
            }
        };
        let refused = Arc::new(StoreError::Fenced {
            swarms: fenced.iter().copied().collect(),
        });
        for (w, touched) in waiters.into_iter().zip(touched) {
            let answer = match &outcome {
                Ok(()) if touched.iter().any(|s| fenced.contains(s)) => Err(refused.clone()),
                other => other.clone(),
            };
            let _ = w.send(answer);
        }
    }
    // The channel closed: flush what failed before, once more.
    if let Some(batch) = carried
        && let Err(e) = store.commit(&batch)
    {
        tracing::error!(error = %e, "final commit failed");
    }
}

/// Commits `batch`, with a few quick retries of a busy or briefly failing store before callers
/// hear of it.
fn commit_retrying(store: &mut dyn Store, batch: &Batch) -> Result<(), StoreError> {
    let mut result = store.commit(batch);
    for delay_ms in [5, 50, 250] {
        match &result {
            Err(e) if is_transient(e) => {
                std::thread::sleep(Duration::from_millis(delay_ms));
                result = store.commit(batch);
            }
            _ => break,
        }
    }
    result
}

/// Errors worth retrying: they go away without anyone changing the data.
fn is_transient(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Locked(_)
            | StoreError::Io(_)
            | StoreError::Full(_)
            | StoreError::ReadOnly(_)
            | StoreError::Unavailable(_)
    )
}

fn empty_batch() -> Batch {
    Batch {
        changes: Changes::default(),
        tokens: Vec::new(),
        ..Default::default()
    }
}
