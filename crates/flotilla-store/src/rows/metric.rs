//! The `swarm_metrics` table (aggregated buckets, merged on write) and the `agent_heartbeats`
//! table (an agent's sampled heartbeat history).
//!
//! A metric row is keyed by swarm, scope, series key, period and the period's start; its
//! `data` is the core's [`Bucket`] as compact JSON. The core hands the store deltas, so a write
//! reads the stored bucket, merges the delta into it and writes it back: the 5-minute, hour and
//! day rows of a series are updated once a minute each, and never recomputed from the minutes.

use std::collections::HashMap;

use crate::sql::{self, Cells, Db, params};
use flotilla_core::metrics::{Bucket, HeartbeatSample, MetricRow, Period, Scope};
use flotilla_core::{SwarmId, Timestamp};

use super::agent::health_str;
use super::{Cols, id, to_json};
use crate::error::StoreError;

/// The stored bucket of one key.
const SELECT_BUCKET: &str = "\
SELECT data FROM swarm_metrics
WHERE swarm_id = ?1 AND scope = ?2 AND key = ?3 AND period = ?4 AND period_start = ?5";

/// Writes the (merged) bucket of one key.
const UPSERT_BUCKET: &str = "\
INSERT INTO swarm_metrics (swarm_id, scope, key, period, period_start, data)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (swarm_id, scope, key, period, period_start) DO UPDATE SET data = excluded.data";

/// Appends one heartbeat sample; a second sample of an agent at the same millisecond replaces
/// the first.
pub(crate) const INSERT_HEARTBEAT: &str = "\
INSERT INTO agent_heartbeats
    (agent_id, swarm_id, recorded_at, status, reported_health, cpu_percent, memory_mb,
     resource_usage, current_tasks, queue_depth)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (agent_id, recorded_at) DO UPDATE SET
    swarm_id = excluded.swarm_id,
    status = excluded.status,
    reported_health = excluded.reported_health,
    cpu_percent = excluded.cpu_percent,
    memory_mb = excluded.memory_mb,
    resource_usage = excluded.resource_usage,
    current_tasks = excluded.current_tasks,
    queue_depth = excluded.queue_depth";

/// The columns [`heartbeat_from_row`] reads, in order.
pub(crate) const HEARTBEAT_COLUMNS: &str = "agent_id, swarm_id, recorded_at, status, \
     reported_health, resource_usage, current_tasks, queue_depth";

/// Drops metric rows of a period older than an instant.
pub(crate) const PRUNE_METRICS: &str =
    "DELETE FROM swarm_metrics WHERE period = ?1 AND period_start < ?2";

/// Drops heartbeat samples older than an instant.
pub(crate) const PRUNE_HEARTBEATS: &str = "DELETE FROM agent_heartbeats WHERE recorded_at < ?1";

/// A row's key.
type Key<'a> = (SwarmId, Scope, &'a str, Period, Timestamp);

/// Adds every delta of `rows` to its stored bucket. Deltas of one key within the batch are
/// merged first, so each key is read and written once.
pub(crate) fn merge_rows<'a>(
    db: &mut dyn Db,
    rows: impl Iterator<Item = &'a MetricRow>,
) -> Result<(), StoreError> {
    let mut merged: HashMap<Key<'a>, Bucket> = HashMap::new();
    let mut order: Vec<Key<'a>> = Vec::new();
    for r in rows {
        let key = (r.swarm_id, r.scope, r.key.as_str(), r.period, r.start);
        match merged.get_mut(&key) {
            Some(b) => b.merge(&r.bucket),
            None => {
                merged.insert(key, r.bucket.clone());
                order.push(key);
            }
        }
    }
    for key in order {
        let (swarm, scope, series, period, start) = key;
        let mut bucket = merged.remove(&key).unwrap_or_default();
        let key = params![
            id(&swarm),
            scope.as_str(),
            series,
            period.as_str(),
            start.as_millis(),
        ];
        let stored = sql::first(db, SELECT_BUCKET, &key, |row| {
            Cols::new(row, "swarm_metrics").string(0, "data")
        })?;
        // A stored bucket that cannot be read (written by a build with a bug) is replaced, not
        // allowed to stop every later commit: losing one row's history is the smaller harm.
        if let Some(text) = stored {
            match serde_json::from_str::<Bucket>(&text) {
                Ok(old) => bucket.merge(&old),
                Err(e) => tracing::warn!(
                    scope = scope.as_str(),
                    key = series,
                    period = period.as_str(),
                    error = %e,
                    "unreadable metrics bucket replaced"
                ),
            }
        }
        db.exec(
            UPSERT_BUCKET,
            &params![
                id(&swarm),
                scope.as_str(),
                series,
                period.as_str(),
                start.as_millis(),
                to_json(&bucket),
            ],
        )?;
    }
    Ok(())
}

/// Decodes a `period_start, data` row.
pub(crate) fn bucket_from_row(row: &dyn Cells) -> Result<(Timestamp, Bucket), StoreError> {
    let c = Cols::new(row, "swarm_metrics");
    let start = c.ts(0, "period_start")?;
    Ok((start, c.decode(1, "data")?))
}

/// Binds `sample` to a prepared insert and runs it.
pub(crate) fn insert_heartbeat(
    db: &mut dyn Db,
    sample: &HeartbeatSample,
) -> Result<(), StoreError> {
    let usage = &sample.resource_usage;
    db.exec(
        INSERT_HEARTBEAT,
        &params![
            id(&sample.agent_id),
            id(&sample.swarm_id),
            sample.recorded_at.as_millis(),
            sample.status.as_str(),
            health_str(sample.reported_health),
            usage.cpu_percent,
            usage.memory_mb,
            to_json(usage),
            to_json(&sample.current_tasks),
            i64::from(sample.queue_depth),
        ],
    )?;
    Ok(())
}

/// Decodes a row of [`HEARTBEAT_COLUMNS`].
pub(crate) fn heartbeat_from_row(row: &dyn Cells) -> Result<HeartbeatSample, StoreError> {
    let c = Cols::new(row, "agent_heartbeats");
    Ok(HeartbeatSample {
        agent_id: c.id(0, "agent_id")?,
        swarm_id: c.id(1, "swarm_id")?,
        recorded_at: c.ts(2, "recorded_at")?,
        status: c.enumeration(3, "status")?,
        reported_health: c.enumeration(4, "reported_health")?,
        resource_usage: c.decode(5, "resource_usage")?,
        current_tasks: c.decode(6, "current_tasks")?,
        queue_depth: c.int(7, "queue_depth")?,
    })
}
