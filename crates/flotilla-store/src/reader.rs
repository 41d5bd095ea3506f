//! [`Reader`]: the reads the coordinator's memory cannot serve, on read-only connections.
//!
//! Task lists with filters and pages, tasks evicted from memory, idempotency keys of such tasks,
//! removed agents, a swarm's pools, the event log and (in `messages`) the message history are
//! read here. A reader is cheap to clone and may be used from many threads at once: each call
//! borrows a connection from a shared pool (opening one when all are busy) and gives it back.
//! In WAL mode, readers see the last committed state and neither wait for the writer nor make
//! it wait.

use std::sync::Arc;

use flotilla_core::Timestamp;
use flotilla_core::api::Page;
use flotilla_core::metrics::{Bucket, HeartbeatSample, Period, Scope};
use flotilla_core::{Agent, AgentId, Event, EventKind, Pool, SwarmId, Task, TaskId, TaskStatus};

use crate::cursor::{Conditions, NEWEST_FIRST, TaskCursor, fetch, page};
use crate::error::StoreError;
use crate::rows::{self, agent, event, id, metric, pool, task, token};
use crate::sql::{self, Db, Param, params};
use crate::token::TokenRecord;

mod messages;

pub use messages::{Direction, MessageFilter};

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

/// Reads the store on connections of its own, beside the writer. Clones share the
/// connections.
#[derive(Clone)]
pub struct Reader {
    pool: Arc<dyn ReadPool>,
}

/// Where a reader's connections come from: each backend keeps a pool of them.
pub(crate) trait ReadPool: Send + Sync {
    /// Runs `f` on a connection of the pool (opening one when all are busy).
    fn with_db(
        &self,
        f: &mut dyn FnMut(&mut dyn Db) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Where the state lives, as [`Store::describe`](crate::Store::describe) says.
    fn describe(&self) -> String;
}

/// Idle connections kept for later calls; more are opened under load and closed afterwards.
const MAX_IDLE: usize = 8;

/// A backend's idle read connections: a call takes one (or opens one when none is idle) and
/// gives it back, up to [`MAX_IDLE`] kept.
pub(crate) struct Idle<C> {
    conns: std::sync::Mutex<Vec<C>>,
}

impl<C> Idle<C> {
    /// A pool holding `first`.
    pub(crate) fn new(first: C) -> Self {
        Idle {
            conns: std::sync::Mutex::new(vec![first]),
        }
    }

    /// An idle connection, if there is one.
    pub(crate) fn take(&self) -> Option<C> {
        // A panic while holding the lock leaves the list of connections intact: ignore poison.
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Keeps `conn` for a later call, or closes it (outside the lock) when enough are idle.
    pub(crate) fn give_back(&self, conn: C) {
        let surplus = {
            let mut idle = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
                None
            } else {
                Some(conn)
            }
        };
        drop(surplus);
    }

    /// Every idle connection, leaving none.
    pub(crate) fn drain(&mut self) -> Vec<C> {
        std::mem::take(self.conns.get_mut().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("store", &self.pool.describe())
            .finish()
    }
}

impl Reader {
    /// A reader on `pool`.
    pub(crate) fn new(pool: Arc<dyn ReadPool>) -> Self {
        Reader { pool }
    }

    /// Runs `f` on a pooled connection.
    fn with<R>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut f = Some(f);
        let mut out = None;
        self.pool.with_db(&mut |db| {
            if let Some(f) = f.take() {
                out = Some(f(db)?);
            }
            Ok(())
        })?;
        out.ok_or_else(|| StoreError::Other("the read was not run".to_owned()))
    }

    /// One swarm's stored state, as [`Store::load`](crate::Store::load) reads the whole
    /// fleet's (without tokens), in one consistent read: what a coordinator of a cluster
    /// loads when it takes the swarm over.
    pub fn load_swarm(
        &self,
        swarm: SwarmId,
        retain_terminal: usize,
    ) -> Result<crate::Snapshot, StoreError> {
        self.with(|db| crate::load::load_swarm(db, swarm, retain_terminal))
    }

    /// The task with this id, whatever its status.
    pub fn get_task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.with(|db| {
            let sql = format!("SELECT {} FROM swarm_tasks WHERE id = ?1", task::COLUMNS);
            let mut found = sql::collect(db, &sql, &params![rows::id(&id)], task::from_row)?;
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
        self.with(|db| {
            let sql = db.by_ids_sql(task::COLUMNS, "swarm_tasks");
            sql::collect(db, &sql, &params![list], task::from_row)
        })
    }

    /// The task of this swarm submitted with this idempotency key, if any.
    pub fn find_task_by_idempotency_key(
        &self,
        swarm: SwarmId,
        key: &str,
    ) -> Result<Option<Task>, StoreError> {
        self.with(|db| {
            let sql = format!(
                "SELECT {} FROM swarm_tasks WHERE swarm_id = ?1 AND idempotency_key = ?2",
                task::COLUMNS
            );
            let mut found = sql::collect(db, &sql, &params![id(&swarm), key], task::from_row)?;
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
            conditions.add("swarm_id = ?", Param::from(swarm.to_string()));
        }
        if let Some(status) = filter.status {
            conditions.add("status = ?", Param::from(status.as_str().to_owned()));
        }
        if let Some(task_type) = &filter.task_type {
            conditions.add("task_type = ?", Param::from(task_type.clone()));
        }
        if let Some(agent) = filter.agent {
            conditions.add("assigned_agent_id = ?", Param::from(agent.to_string()));
        }
        conditions.before(after);
        let sql = format!(
            "SELECT {} FROM swarm_tasks{} {NEWEST_FIRST}",
            task::COLUMNS,
            conditions.clause(),
        );
        let mut params = conditions.params().to_vec();
        params.push(fetch(limit));
        let items = self.with(|db| sql::collect(db, &sql, &params, task::from_row))?;
        Ok(page(items, limit, |t: &Task| TaskCursor {
            created_at: t.created_at,
            id: t.id,
        }))
    }

    /// The agent with this id, stopped and removed (unregistered) ones included.
    pub fn get_agent(&self, id: AgentId) -> Result<Option<Agent>, StoreError> {
        self.with(|db| {
            let sql = format!("SELECT {} FROM swarm_agents WHERE id = ?1", agent::COLUMNS);
            let mut found = sql::collect(db, &sql, &params![rows::id(&id)], agent::from_row)?;
            Ok(found.pop())
        })
    }

    /// One checkpoint.
    pub fn get_checkpoint(
        &self,
        checkpoint: flotilla_core::CheckpointId,
    ) -> Result<Option<flotilla_core::Checkpoint>, StoreError> {
        self.with(|db| {
            let sql = format!(
                "SELECT {} FROM agent_checkpoints WHERE id = ?1",
                rows::checkpoint::COLUMNS
            );
            let mut found = sql::collect(
                db,
                &sql,
                &params![rows::id(&checkpoint)],
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
        self.with(|db| {
            let sql = format!(
                "SELECT {} FROM agent_checkpoints WHERE agent_id = ?1
                 ORDER BY created_at DESC, id DESC",
                rows::checkpoint::COLUMNS
            );
            sql::collect(
                db,
                &sql,
                &params![rows::id(&agent)],
                rows::checkpoint::from_row,
            )
        })
    }

    /// The state an agent last reported, with when.
    pub fn get_agent_state(
        &self,
        agent: AgentId,
    ) -> Result<Option<(flotilla_core::Json, flotilla_core::Timestamp)>, StoreError> {
        self.with(|db| {
            sql::first(
                db,
                "SELECT state, updated_at FROM agent_states WHERE agent_id = ?1",
                &params![rows::id(&agent)],
                |row| {
                    let c = rows::Cols::new(row, "agent_states");
                    Ok((c.json(0, "state")?, c.ts(1, "updated_at")?))
                },
            )
        })
    }

    /// The pools of this swarm, by name.
    pub fn list_pools(&self, swarm: SwarmId) -> Result<Vec<Pool>, StoreError> {
        self.with(|db| {
            let sql = format!(
                "SELECT {} FROM swarm_pools WHERE swarm_id = ?1 ORDER BY name",
                pool::COLUMNS
            );
            sql::collect(db, &sql, &params![id(&swarm)], pool::from_row)
        })
    }

    /// Up to `limit` events that pass `filter` with a seq above `filter.after`, in log order.
    pub fn list_events(
        &self,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql = format!("SELECT {} FROM swarm_events WHERE seq > ?", event::COLUMNS);
        let mut params: Vec<Param<'static>> =
            vec![Param::Int(i64::try_from(filter.after).unwrap_or(i64::MAX))];
        if let Some(swarm) = filter.swarm {
            sql.push_str(" AND swarm_id = ?");
            params.push(Param::from(swarm.to_string()));
        }
        if !filter.kinds.is_empty() {
            sql.push_str(" AND event_type IN (");
            for (i, kind) in filter.kinds.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                params.push(Param::from(kind.as_str().to_owned()));
            }
            sql.push(')');
        }
        if let Some(agent) = filter.agent {
            sql.push_str(" AND agent_id = ?");
            params.push(Param::from(agent.to_string()));
        }
        if let Some(task) = filter.task {
            sql.push_str(" AND task_id = ?");
            params.push(Param::from(task.to_string()));
        }
        sql.push_str(if filter.latest {
            " ORDER BY seq DESC LIMIT ?"
        } else {
            " ORDER BY seq LIMIT ?"
        });
        params.push(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        let mut events = self.with(|db| sql::collect(db, &sql, &params, event::from_row))?;
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
        let mut params: Vec<Param<'static>> = Vec::new();
        if let Some(t) = &filter.token_id {
            sql.push_str(" AND token_id = ?");
            params.push(Param::from(t.clone()));
        }
        if let Some(since) = filter.since {
            sql.push_str(" AND at >= ?");
            params.push(Param::Int(since.as_millis()));
        }
        if let Some(until) = filter.until {
            sql.push_str(" AND at < ?");
            params.push(Param::Int(until.as_millis()));
        }
        if filter.denied {
            sql.push_str(" AND status IN (401, 403)");
        }
        if let Some(before) = filter.before_seq {
            sql.push_str(" AND seq < ?");
            params.push(Param::Int(i64::try_from(before).unwrap_or(i64::MAX)));
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        params.push(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.with(|db| sql::collect(db, &sql, &params, token::audit_from_row))
    }

    /// Every token, revoked and expired ones included, oldest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.with(|db| {
            let sql = format!(
                "SELECT {} FROM api_tokens ORDER BY created_at, id",
                token::COLUMNS
            );
            sql::collect(db, &sql, &[], token::from_row)
        })
    }

    /// The token with this hash, revoked or not.
    pub fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|db| {
            let sql = format!("SELECT {} FROM api_tokens WHERE hash = ?1", token::COLUMNS);
            Ok(sql::collect(db, &sql, &params![hash], token::from_row)?
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
        self.with(|db| {
            sql::collect(
                db,
                sql,
                &params![
                    id(&series.swarm),
                    series.scope.as_str(),
                    series.key,
                    series.period.as_str(),
                    from.as_millis(),
                    to.as_millis(),
                ],
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
        self.with(|db| {
            sql::collect(
                db,
                sql,
                &params![
                    id(&swarm),
                    scope.as_str(),
                    period.as_str(),
                    from.as_millis(),
                ],
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
        self.with(|db| {
            sql::collect(
                db,
                &sql,
                &params![
                    id(&agent),
                    from.as_millis(),
                    to.as_millis(),
                    i64::try_from(limit).unwrap_or(i64::MAX),
                ],
                metric::heartbeat_from_row,
            )
        })
    }

    /// Rows and bytes in the metric and heartbeat tables: what retention keeps bounded.
    pub fn history_size(&self) -> Result<HistorySize, StoreError> {
        self.with(|db| {
            let mut size = HistorySize::default();
            db.each(
                "SELECT period, COUNT(*), COALESCE(SUM(LENGTH(data) + LENGTH(key)), 0)
                 FROM swarm_metrics GROUP BY period",
                &[],
                &mut |row| {
                    let c = rows::Cols::new(row, "swarm_metrics");
                    let period: Period = c.enumeration(0, "period")?;
                    let at = Period::ALL.iter().position(|p| *p == period).unwrap_or(0);
                    size.metric_rows[at] = c.u64(1, "count")?;
                    size.metric_bytes += c.u64(2, "bytes")?;
                    Ok(())
                },
            )?;
            let (n, bytes) = sql::first(
                db,
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(resource_usage) + LENGTH(current_tasks)), 0)
                 FROM agent_heartbeats",
                &[],
                |row| {
                    let c = rows::Cols::new(row, "agent_heartbeats");
                    Ok((c.i64(0, "count")?, c.i64(1, "bytes")?))
                },
            )?
            .unwrap_or((0, 0));
            size.heartbeat_rows = n.max(0) as u64;
            size.heartbeat_bytes = bytes.max(0) as u64;
            Ok(size)
        })
    }
}

/// What the metric and heartbeat history holds ([`Reader::history_size`]).
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

/// One series of one period, as [`Reader::metric_buckets`] reads it.
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
        shareable::<Reader>();
    }
}
