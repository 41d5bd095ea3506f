//! The SQLite backend: [`SqliteStore`], the single writer, and [`SqliteReader`](reader::SqliteReader),
//! its read-only companion.
//!
//! The file is in WAL mode: a commit appends to the write-ahead log and syncs it once (with
//! [`SyncMode::Full`]), and readers keep reading the last committed state meanwhile. Every
//! statement is prepared once per connection and cached.
//!
//! Files: [`schema`] creates and migrates the tables; `checkpoint` moves the log into the
//! database file in the background. This file runs the shared SQL (`crate::sql`) on rusqlite
//! connections: [`Lite`] for the writer's transactions and the readers' connections.

mod checkpoint;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::StoreError;
use crate::reader::{Idle, ReadPool, Reader};
use crate::sql::{Cells, Db, Param};
use crate::{Batch, Snapshot, Store, commit, load};
use checkpoint::Checkpointer;

/// How long a connection waits for another's lock before giving up with
/// [`StoreError::Locked`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The log size (in 4 KiB pages) at which the writer checkpoints by itself, should the
/// background checkpoints fall behind; 64 MiB.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// Prepared statements each connection keeps (the list queries vary with their filters).
const STATEMENT_CACHE: usize = 64;

/// How hard a commit pushes its data to the disk (SQLite's `PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Every commit is on the disk when [`Store::commit`] returns, even if the machine loses
    /// power.
    #[default]
    Full,
    /// Commits survive a crash of the process but the last ones may be lost if the machine
    /// loses power; the database stays consistent either way.
    Normal,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        }
    }
}

/// The fleet's state in one SQLite file, written by one connection.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    checkpointer: Checkpointer,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file if needed (its directory must exist),
    /// switches it to WAL mode with the given durability and a 5 s busy timeout, and brings its
    /// schema up to date.
    pub fn open(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        let path = std::path::absolute(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = path.parent()
            && !dir.is_dir()
        {
            return Err(StoreError::Open {
                path: path.clone(),
                reason: format!("directory {} does not exist", dir.display()),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(&path, flags).map_err(|e| StoreError::from(e).at(&path))?;
        configure_writer(&conn, sync).map_err(|e| e.at(&path))?;
        schema::migrate(&mut conn).map_err(|e| e.at(&path))?;
        let checkpointer = Checkpointer::start(&path, sync).map_err(|e| e.at(&path))?;
        tracing::debug!(path = %path.display(), ?sync, "opened the store");
        Ok(SqliteStore {
            conn,
            path,
            checkpointer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Sets the writer's pragmas.
fn configure_writer(conn: &Connection, sync: SyncMode) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "cannot switch to WAL mode (the journal stays in {mode} mode); \
             is the file on a network file system?"
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};",
        sync.pragma()
    ))?;
    Ok(())
}

/// Opens a read-only connection to `path`.
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| StoreError::from(e).at(path))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Store for SqliteStore {
    fn load(&mut self, retain_terminal: usize) -> Result<Snapshot, StoreError> {
        // One read transaction, so that every table is read at the same instant.
        let tx = self.conn.transaction()?;
        let snapshot = load::load(&mut Lite(&tx), retain_terminal)?;
        tx.commit()?;
        Ok(snapshot)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // IMMEDIATE takes the write lock at once: a busy database fails here, before any work.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        commit::write(&mut Lite(&tx), batch)?;
        tx.commit()?;
        self.checkpointer.nudge();
        Ok(())
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    /// A reader of the same database, with its own read-only connections; it opens one at
    /// once, so that a reader that cannot read fails here rather than at its first query.
    fn reader(&self) -> Result<Reader, StoreError> {
        let first = open_read_only(&self.path)?;
        Ok(Reader::new(Arc::new(ReadConnections {
            path: self.path.clone(),
            idle: Idle::new(first),
        })))
    }
}

/// The read-only connections a reader and its clones share.
struct ReadConnections {
    path: PathBuf,
    idle: Idle<Connection>,
}

impl ReadPool for ReadConnections {
    fn with_db(
        &self,
        f: &mut dyn FnMut(&mut dyn Db) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let conn = match self.idle.take() {
            Some(conn) => conn,
            None => open_read_only(&self.path)?,
        };
        let out = f(&mut Lite(&conn));
        self.idle.give_back(conn);
        out
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

/// The shared SQL on a rusqlite connection (or transaction), with its statement cache.
pub(crate) struct Lite<'c>(pub(crate) &'c Connection);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(*v),
            Param::Real(v) => ValueRef::Real(*v),
            Param::Text(t) => ValueRef::Text(t.as_bytes()),
            Param::Id(id) => ValueRef::Text(id.as_str().as_bytes()),
        }))
    }
}

impl Db for Lite<'_> {
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let n = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        row: &mut dyn FnMut(&dyn Cells) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            row(r)?;
        }
        Ok(())
    }

    fn by_ids_sql(&self, columns: &str, table: &str) -> String {
        // The ids go in as one JSON array: one statement for any number of ids, with no limit
        // on bound parameters to chunk around.
        format!("SELECT {columns} FROM {table} WHERE id IN (SELECT value FROM json_each(?1))")
    }
}

impl Cells for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<Option<&str>, String> {
        self.get_ref(i)
            .map_err(|e| e.to_string())?
            .as_str_or_null()
            .map_err(|e| e.to_string())
    }

    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        self.get_ref(i)
            .map_err(|e| e.to_string())?
            .as_i64_or_null()
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{Cols, message};
    use crate::sql;

    /// The plan SQLite chose for `sql`, one step a line.
    fn plan(conn: &Connection, sql: &str) -> String {
        sql::collect(
            &mut Lite(conn),
            &format!("EXPLAIN QUERY PLAN {sql}"),
            &[],
            |r| Cols::new(r, "plan").string(3, "detail"),
        )
        .expect("plan")
        .join("\n")
    }

    #[test]
    fn message_loads_read_their_partial_indexes_in_seq_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            SqliteStore::open(&dir.path().join("flotilla.db"), SyncMode::Normal).expect("open");
        let unfinished = plan(&store.conn, &load::messages_where(message::UNFINISHED));
        assert!(
            unfinished.contains("USING INDEX agent_messages_unfinished"),
            "{unfinished}"
        );
        let awaiting = plan(&store.conn, &load::messages_where(message::AWAITING));
        assert!(
            awaiting.contains("USING INDEX agent_messages_awaiting"),
            "{awaiting}"
        );
        for p in [unfinished, awaiting] {
            assert!(!p.contains("TEMP B-TREE"), "no sort: {p}");
        }
    }
}
