//! [`SqliteReader`]: the reads the coordinator's memory cannot serve, on read-only connections.
//!
//! Task lists with filters and pages, tasks evicted from memory, idempotency keys of such tasks,
//! removed agents, a swarm's pools, the event log and (in `messages`) the message history are
//! read here. A reader is cheap to clone and may be used from many threads at once: each call
//! borrows a connection from a shared pool (opening one when all are busy) and gives it back.
//! In WAL mode, readers see the last committed state and neither wait for the writer nor make
//! it wait.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flotilla_core::Timestamp;
use flotilla_core::api::Page;
use flotilla_core::metrics::{Bucket, HeartbeatSample, Period, Scope};
use flotilla_core::{Agent, AgentId, Event, EventKind, Pool, SwarmId, Task, TaskId, TaskStatus};
use rusqlite::Connection;
use rusqlite::types::Value;

use super::cursor::{Conditions, NEWEST_FIRST, TaskCursor, fetch, page};
use super::open_read_only;
use super::rows::{self, agent, event, id, metric, pool, task, token};
use crate::error::StoreError;
use crate::token::TokenRecord;

mod messages;

pub use messages::{Direction, MessageFilter};

/// Idle connections kept for later calls; more are opened under load and closed afterwards.
const MAX_IDLE: usize = 8;

/// Which tasks a list shows; `None` fields do not filter.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    /// Only this swarm's tasks.
    pub swarm: Option<SwarmId>,
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this type.
    pub task_type: Option<String>,
    /// Only tasks this agent holds or last ran (assigned, running, completed, or failed on it).
    pub agent: Option<AgentId>,
}

/// Which events a list shows; `None` fields do not filter.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this swarm's events.
    pub swarm: Option<SwarmId>,
    /// Only events of these kinds (every kind when empty).
    pub kinds: Vec<EventKind>,
    /// Only events involving this agent.
    pub agent: Option<AgentId>,
    /// Only events involving this task.
    pub task: Option<TaskId>,
    /// Only events with a seq greater than this (0 for the whole log).
    pub after: u64,
    /// The newest `limit` matching events (still answered in log order) instead of the
    /// oldest.
    pub latest: bool,
}

/// Which audit entries a list shows; `None` fields do not filter.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only calls made with this token (by id).
    pub token_id: Option<String>,
    /// Only calls answered at or after this time.
    pub since: Option<Timestamp>,
    /// Only calls answered before this time.
    pub until: Option<Timestamp>,
    /// Only refused calls (status 401 or 403).
    pub denied: bool,
    /// Only entries older than this seq: the next page of a newest-first list.
    pub before_seq: Option<u64>,
}

/// Reads the database on read-only connections of its own. Clones share the pool.
#[derive(Clone)]
pub struct SqliteReader {
    pool: Arc<Connections>,
}

/// The connections a reader and its clones share.
struct Connections {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReader")
            .field("path", &self.pool.path)
            .finish()
    }
}

impl SqliteReader {
    /// A reader of the database at `path`; opens one connection at once, so that a reader that
    /// cannot read fails here rather than at its first query.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let first = open_read_only(path)?;
        Ok(SqliteReader {
            pool: Arc::new(Connections {
                path: path.to_path_buf(),
                idle: Mutex::new(vec![first]),
            }),
        })
    }

    /// Runs `f` on a pooled connection.
    fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // A panic while holding the lock leaves the list of connections intact: ignore poison.
        let pooled = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_read_only(&self.pool.path)?,
        };
        let out = f(&conn);
        let surplus = {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
                None
            } else {
                Some(conn)
            }
        };
        // Closed outside the lock.
        drop(surplus);
        out
    }

    /// The task with this id, whatever its status.
    pub fn get_task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {} FROM swarm_tasks WHERE id = ?1", task::COLUMNS);
            let mut found = rows::collect(conn, &sql, [rows::id(&id)], task::from_row)?;
            Ok(found.pop())
        })
    }

    /// The tasks with these ids that exist, in no particular order, each once.
    pub fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Task>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The ids go in as one JSON array: one statement for any number of ids, with no limit
        // on bound parameters to chunk around.
        let list = rows::to_json(ids);
        self.with(|conn| {
            let sql = format!(
                "SELECT {} FROM swarm_tasks WHERE id IN (SELECT value FROM json_each(?1))",
                task::COLUMNS
            );
            rows::collect(conn, &sql, [list], task::from_row)
        })
    }

    /// The task of this swarm submitted with this idempotency key, if any.
    pub fn find_task_by_idempotency_key(
        &self,
        swarm: SwarmId,
        key: &str,
    ) -> Result<Option<Task>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {} FROM swarm_tasks WHERE swarm_id = ?1 AND idempotency_key = ?2",
                task::COLUMNS
            );
            let mut found = rows::collect(conn, &sql, (id(&swarm), key), task::from_row)?;
            Ok(found.pop())
        })
    }

    /// One page of the tasks that pass `filter`, newest first (by creation, then id).
    ///
    /// `cursor` is the `next_cursor` of the previous page, or `None` for the first page; a
    /// cursor this store did not produce is [`StoreError::InvalidCursor`]. A `limit` of 0 is
    /// taken as 1. `next_cursor` is `None` on the last page.
    pub fn list_tasks(
        &self,
        filter: &TaskFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Task>, StoreError> {
        let after = cursor.map(TaskCursor::decode).transpose()?;
        let mut conditions = Conditions::default();
        if let Some(swarm) = filter.swarm {
            conditions.add("swarm_id = ?", Value::Text(swarm.to_string()));
        }
        if let Some(status) = filter.status {
            conditions.add("status = ?", Value::Text(status.as_str().to_owned()));
        }
        if let Some(task_type) = &filter.task_type {
            conditions.add("task_type = ?", Value::Text(task_type.clone()));
        }
        if let Some(agent) = filter.agent {
            conditions.add("assigned_agent_id = ?", Value::Text(agent.to_string()));
        }
        conditions.before(after);
        let sql = format!(
            "SELECT {} FROM swarm_tasks{} {NEWEST_FIRST}",
            task::COLUMNS,
            conditions.clause(),
        );
        let mut params = conditions.params().to_vec();
        params.push(fetch(limit));
        let items = self.with(|conn| {
            rows::collect(
                conn,
                &sql,
                rusqlite::params_from_iter(params),
                task::from_row,
            )
        })?;
        Ok(page(items, limit, |t: &Task| TaskCursor {
            created_at: t.created_at,
            id: t.id,
        }))
    }

    /// The agent with this id, stopped and removed (unregistered) ones included.
    pub fn get_agent(&self, id: AgentId) -> Result<Option<Agent>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {} FROM swarm_agents WHERE id = ?1", agent::COLUMNS);
            let mut found = rows::collect(conn, &sql, [rows::id(&id)], agent::from_row)?;
            Ok(found.pop())
        })
    }

    /// One checkpoint.
    pub fn get_checkpoint(
        &self,
        checkpoint: flotilla_core::CheckpointId,
    ) -> Result<Option<flotilla_core::Checkpoint>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {} FROM agent_checkpoints WHERE id = ?1",
                rows::checkpoint::COLUMNS
            );
            let mut found = rows::collect(
                conn,
                &sql,
                [rows::id(&checkpoint)],
                rows::checkpoint::from_row,
            )?;
            Ok(found.pop())
        })
    }

    /// An agent's checkpoints, newest first.
    pub fn list_checkpoints(
        &self,
        agent: AgentId,
    ) -> Result<Vec<flotilla_core::Checkpoint>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {} FROM agent_checkpoints WHERE agent_id = ?1
                 ORDER BY created_at DESC, id DESC",
                rows::checkpoint::COLUMNS
            );
            rows::collect(conn, &sql, [rows::id(&agent)], rows::checkpoint::from_row)
        })
    }

    /// The state an agent last reported, with when.
    pub fn get_agent_state(
        &self,
        agent: AgentId,
    ) -> Result<Option<(flotilla_core::Json, flotilla_core::Timestamp)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT state, updated_at FROM agent_states WHERE agent_id = ?1")?;
            let mut rows = stmt.query([rows::id(&agent)])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let text: String = row.get(0)?;
            let at: i64 = row.get(1)?;
            let state = flotilla_core::Json::parse_stored(&text)
                .map_err(|e| StoreError::bad_value("agent_states.state", e))?;
            Ok(Some((state, flotilla_core::Timestamp::from_millis(at))))
        })
    }

    /// The pools of this swarm, by name.
    pub fn list_pools(&self, swarm: SwarmId) -> Result<Vec<Pool>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {} FROM swarm_pools WHERE swarm_id = ?1 ORDER BY name",
                pool::COLUMNS
            );
            rows::collect(conn, &sql, [id(&swarm)], pool::from_row)
        })
    }

    /// Up to `limit` events that pass `filter` with a seq above `filter.after`, in log order.
    pub fn list_events(
        &self,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql = format!("SELECT {} FROM swarm_events WHERE seq > ?", event::COLUMNS);
        let mut params: Vec<Value> = vec![Value::Integer(
            i64::try_from(filter.after).unwrap_or(i64::MAX),
        )];
        if let Some(swarm) = filter.swarm {
            sql.push_str(" AND swarm_id = ?");
            params.push(Value::Text(swarm.to_string()));
        }
        if !filter.kinds.is_empty() {
            sql.push_str(" AND event_type IN (");
            for (i, kind) in filter.kinds.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                params.push(Value::Text(kind.as_str().to_owned()));
            }
            sql.push(')');
        }
        if let Some(agent) = filter.agent {
            sql.push_str(" AND agent_id = ?");
            params.push(Value::Text(agent.to_string()));
        }
        if let Some(task) = filter.task {
            sql.push_str(" AND task_id = ?");
            params.push(Value::Text(task.to_string()));
        }
        sql.push_str(if filter.latest {
            " ORDER BY seq DESC LIMIT ?"
        } else {
            " ORDER BY seq LIMIT ?"
        });
        params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let mut events = self.with(|conn| {
            rows::collect(
                conn,
                &sql,
                rusqlite::params_from_iter(params),
                event::from_row,
            )
        })?;
        if filter.latest {
            events.reverse();
        }
        Ok(events)
    }

    /// Up to `limit` audit entries that pass `filter`, newest first.
    pub fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<flotilla_core::api::AuditEntry>, StoreError> {
        let mut sql = format!("SELECT {} FROM audit_log WHERE 1 = 1", token::AUDIT_COLUMNS);
        let mut params: Vec<Value> = Vec::new();
        if let Some(t) = &filter.token_id {
            sql.push_str(" AND token_id = ?");
            params.push(Value::Text(t.clone()));
        }
        if let Some(since) = filter.since {
            sql.push_str(" AND at >= ?");
            params.push(Value::Integer(since.as_millis()));
        }
        if let Some(until) = filter.until {
            sql.push_str(" AND at < ?");
            params.push(Value::Integer(until.as_millis()));
        }
        if filter.denied {
            sql.push_str(" AND status IN (401, 403)");
        }
        if let Some(before) = filter.before_seq {
            sql.push_str(" AND seq < ?");
            params.push(Value::Integer(i64::try_from(before).unwrap_or(i64::MAX)));
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.with(|conn| {
            rows::collect(
                conn,
                &sql,
                rusqlite::params_from_iter(params),
                token::audit_from_row,
            )
        })
    }

    /// Every token, revoked and expired ones included, oldest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {} FROM api_tokens ORDER BY created_at, id",
                token::COLUMNS
            );
            rows::collect(conn, &sql, [], token::from_row)
        })
    }

    /// The token with this hash, revoked or not.
    pub fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {} FROM api_tokens WHERE hash = ?1", token::COLUMNS);
            Ok(rows::collect(conn, &sql, [hash], token::from_row)?
                .into_iter()
                .next())
        })
    }

    /// The stored buckets of one series and period whose start is in `[from, to)`, oldest
    /// first.
    pub fn metric_buckets(
        &self,
        series: &MetricSeries<'_>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, Bucket)>, StoreError> {
        let sql = "SELECT period_start, data FROM swarm_metrics
                   WHERE swarm_id = ?1 AND scope = ?2 AND key = ?3 AND period = ?4
                     AND period_start >= ?5 AND period_start < ?6
                   ORDER BY period_start";
        self.with(|conn| {
            rows::collect(
                conn,
                sql,
                (
                    id(&series.swarm),
                    series.scope.as_str(),
                    series.key,
                    series.period.as_str(),
                    from.as_millis(),
                    to.as_millis(),
                ),
                metric::bucket_from_row,
            )
        })
    }

    /// The keys of a swarm's series of one scope that have rows of `period` since `from`, in
    /// name order (the pools, agents or task types there are figures for).
    pub fn metric_keys(
        &self,
        swarm: SwarmId,
        scope: Scope,
        period: Period,
        from: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT key FROM swarm_metrics
                   WHERE swarm_id = ?1 AND scope = ?2 AND period = ?3 AND period_start >= ?4
                   ORDER BY key";
        self.with(|conn| {
            rows::collect(
                conn,
                sql,
                (
                    id(&swarm),
                    scope.as_str(),
                    period.as_str(),
                    from.as_millis(),
                ),
                |row| rows::Cols::new(row, "swarm_metrics").string(0, "key"),
            )
        })
    }

    /// Up to `limit` of an agent's stored heartbeats recorded in `[from, to)`, newest first.
    pub fn heartbeats(
        &self,
        agent: AgentId,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<HeartbeatSample>, StoreError> {
        let sql = format!(
            "SELECT {} FROM agent_heartbeats
             WHERE agent_id = ?1 AND recorded_at >= ?2 AND recorded_at < ?3
             ORDER BY recorded_at DESC LIMIT ?4",
            metric::HEARTBEAT_COLUMNS
        );
        self.with(|conn| {
            rows::collect(
                conn,
                &sql,
                (
                    id(&agent),
                    from.as_millis(),
                    to.as_millis(),
                    i64::try_from(limit).unwrap_or(i64::MAX),
                ),
                metric::heartbeat_from_row,
            )
        })
    }

    /// Rows and bytes in the metric and heartbeat tables: what retention keeps bounded.
    pub fn history_size(&self) -> Result<HistorySize, StoreError> {
        self.with(|conn| {
            let mut size = HistorySize::default();
            let mut stmt = conn.prepare_cached(
                "SELECT period, COUNT(*), COALESCE(SUM(LENGTH(data) + LENGTH(key)), 0)
                 FROM swarm_metrics GROUP BY period",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let c = rows::Cols::new(row, "swarm_metrics");
                let period: Period = c.enumeration(0, "period")?;
                let at = Period::ALL.iter().position(|p| *p == period).unwrap_or(0);
                size.metric_rows[at] = c.u64(1, "count")?;
                size.metric_bytes += c.u64(2, "bytes")?;
            }
            let (n, bytes): (i64, i64) = conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(resource_usage) + LENGTH(current_tasks)), 0)
                 FROM agent_heartbeats",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            size.heartbeat_rows = n.max(0) as u64;
            size.heartbeat_bytes = bytes.max(0) as u64;
            Ok(size)
        })
    }
}

/// What the metric and heartbeat history holds ([`SqliteReader::history_size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistorySize {
    /// Rows in `swarm_metrics` by period: 1m, 5m, 1h, 1d.
    pub metric_rows: [u64; 4],
    /// Bytes of their keys and buckets (the rows' payload, without SQLite's overhead).
    pub metric_bytes: u64,
    /// Rows in `agent_heartbeats`.
    pub heartbeat_rows: u64,
    /// Bytes of their JSON columns.
    pub heartbeat_bytes: u64,
}

impl HistorySize {
    /// Rows in `swarm_metrics`, every period.
    pub fn total_metric_rows(&self) -> u64 {
        self.metric_rows.iter().sum()
    }
}

/// One series of one period, as [`SqliteReader::metric_buckets`] reads it.
#[derive(Clone, Copy, Debug)]
pub struct MetricSeries<'a> {
    /// The swarm.
    pub swarm: SwarmId,
    /// What the series aggregates over.
    pub scope: Scope,
    /// The pool, agent name or task type; empty for the swarm.
    pub key: &'a str,
    /// The period of its buckets.
    pub period: Period,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<SqliteReader>();
    }
}
