//! Background checkpoints: copying the write-ahead log into the database file off the writer's
//! path.
//!
//! By default SQLite checkpoints inside the commit that pushes the log past 1,000 pages, so one
//! group commit in a few pays for copying everyone's pages (a tenth of the commit time under a
//! heavy load, measured). Here the writer's own checkpoints are only a safety net for a log
//! grown very large; a thread with a connection of its own runs a `PASSIVE` checkpoint shortly
//! after commits, which proceeds beside the writer and the readers without waiting for either.
//! Waiting [`INTERVAL`] after the first commit lets later commits join the same checkpoint, so
//! a page rewritten by many commits is copied once.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, SyncMode};
use crate::error::StoreError;

/// How long after a commit the checkpoint starts.
const INTERVAL: Duration = Duration::from_millis(100);

/// The thread that checkpoints; stops when dropped.
pub(crate) struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with its own connection to `path`.
    pub(crate) fn start(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The copy must reach the disk before the log is reused; the mode decides how surely.
        conn.execute_batch(&format!("PRAGMA synchronous = {}", sync.pragma()))?;
        let (wake, nudges) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("flotilla-store-checkpoint".to_owned())
            .spawn(move || run(&conn, &nudges))
            .map_err(|e| StoreError::Other(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Tells the thread that a commit happened; never blocks.
    pub(crate) fn nudge(&self) {
        if let Some(wake) = &self.wake {
            // Full means a checkpoint is already due: this commit will be part of it.
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after at most one last checkpoint.
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, nudges: &Receiver<()>) {
    while nudges.recv().is_ok() {
        let due = Instant::now() + INTERVAL;
        let last = loop {
            match nudges.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break false,
                Err(RecvTimeoutError::Disconnected) => break true,
            }
        };
        // Returns (busy, log frames, checkpointed frames); a partial checkpoint is normal when
        // a reader still uses old frames: the next one continues.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %StoreError::from(e), "background checkpoint failed");
        }
        if last {
            return;
        }
    }
}
