//! The `swarm_tasks` and `task_dependencies` tables: one row per [`Task`], its state spread over
//! the PRD's columns.
//!
//! Each [`TaskState`] variant's data goes to named columns (`queued_at`, `assigned_agent_id`,
//! `result`, …), so that SQL can filter and sort on them; what has no column of its own (the
//! error object, the cancel reason, the last attempt's error, progress) goes to the `detail`
//! JSON column, which is NULL in the common case of a task that neither failed nor reported
//! progress. The dependency list is kept in the row as JSON (in the order given, so the task
//! reads back equal) and also as `task_dependencies` rows, for SQL that follows dependencies.

use crate::sql::{Cells, Db, params};
use flotilla_core::{
    Backoff, DependencyKind, Progress, Task, TaskError, TaskState, TaskStatus, Timestamp,
};
use serde::{Deserialize, Serialize};

use super::{Cols, IdText, id, millis, opt_id, opt_ts, strings_json, to_json};
use crate::error::StoreError;

/// Inserts a task, or replaces the stored one with the same id.
///
/// Everything a submitter gives is fixed at submission (swarm, parent, type, payload,
/// priority, capabilities, dependencies, keys, backoff, timeout, creation instant), so the
/// update leaves it as first written: SQLite rewrites the entries of every index over a column
/// an UPDATE sets, even to the same value (three task indexes are built on these: a fifth of
/// the cost of an update, measured), and a payload can be large. Only `max_attempts` and
/// `deadline` change after submission (a user's retry), and `delegation` (an agent delegating
/// it, its subtasks finishing).
pub(crate) const UPSERT: &str = "\
INSERT INTO swarm_tasks (id, swarm_id, parent_task_id, task_type, payload, priority,
                         required_capabilities, depends_on, affinity_key, idempotency_key,
                         max_attempts, backoff_initial_ms, backoff_max_ms, timeout_ms, deadline,
                         status, assigned_agent_id, attempt_count, result, error_message,
                         queued_at, run_after, assigned_at, started_at, timeout_at, completed_at,
                         created_at, updated_at, detail, queue_seq, ordered, delegated_by,
                         delegation)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
        ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)
ON CONFLICT (id) DO UPDATE SET
    max_attempts = excluded.max_attempts,
    deadline = excluded.deadline,
    status = excluded.status,
    assigned_agent_id = excluded.assigned_agent_id,
    attempt_count = excluded.attempt_count,
    result = excluded.result,
    error_message = excluded.error_message,
    queued_at = excluded.queued_at,
    run_after = excluded.run_after,
    assigned_at = excluded.assigned_at,
    started_at = excluded.started_at,
    timeout_at = excluded.timeout_at,
    completed_at = excluded.completed_at,
    updated_at = excluded.updated_at,
    detail = excluded.detail,
    queue_seq = excluded.queue_seq,
    delegation = excluded.delegation";

/// Records one dependency; already recorded ones are left alone (dependencies never change).
pub(crate) const INSERT_DEPENDENCY: &str = "\
INSERT INTO task_dependencies (task_id, depends_on_task_id, dependency_type)
VALUES (?1, ?2, ?3)
ON CONFLICT DO NOTHING";

/// The columns [`from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "id, swarm_id, parent_task_id, task_type, payload, priority, \
    required_capabilities, depends_on, affinity_key, idempotency_key, max_attempts, \
    backoff_initial_ms, backoff_max_ms, timeout_ms, deadline, status, assigned_agent_id, \
    attempt_count, result, queued_at, run_after, assigned_at, started_at, timeout_at, \
    completed_at, created_at, updated_at, detail, queue_seq, ordered, delegated_by, delegation";

/// The parts of `detail` as written; borrowed from the task.
#[derive(Serialize)]
struct DetailOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a TaskError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a TaskError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The parts of `detail` as read.
#[derive(Deserialize)]
struct DetailIn {
    last_error: Option<TaskError>,
    progress: Option<ProgressRecord>,
    error: Option<TaskError>,
    reason: Option<String>,
}

/// [`Progress`] with its instant in milliseconds, so that every instant reads back exactly
/// (RFC 3339 text, the API's form, cannot express every `Timestamp`).
#[derive(Serialize, Deserialize)]
struct ProgressRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reported_at: Option<i64>,
}

/// A state's data, spread over the columns it is stored in.
#[derive(Default)]
struct StateColumns<'a> {
    agent: Option<IdText>,
    result: Option<&'a str>,
    error: Option<&'a TaskError>,
    reason: Option<&'a str>,
    queued_at: Option<i64>,
    run_after: Option<i64>,
    assigned_at: Option<i64>,
    started_at: Option<i64>,
    timeout_at: Option<i64>,
    completed_at: Option<i64>,
}

impl<'a> StateColumns<'a> {
    fn of(state: &'a TaskState) -> Self {
        let ms = |t: &Timestamp| Some(t.as_millis());
        match state {
            TaskState::Blocked => StateColumns::default(),
            TaskState::Queued {
                queued_at,
                run_after,
            } => StateColumns {
                queued_at: ms(queued_at),
                run_after: opt_ts(*run_after),
                ..StateColumns::default()
            },
            TaskState::Assigned {
                agent_id,
                assigned_at,
            } => StateColumns {
                agent: Some(id(agent_id)),
                assigned_at: ms(assigned_at),
                ..StateColumns::default()
            },
            TaskState::Running {
                agent_id,
                started_at,
                timeout_at,
            } => StateColumns {
                agent: Some(id(agent_id)),
                started_at: ms(started_at),
                timeout_at: ms(timeout_at),
                ..StateColumns::default()
            },
            TaskState::Completed {
                agent_id,
                result,
                completed_at,
            } => StateColumns {
                agent: Some(id(agent_id)),
                result: Some(result.get()),
                completed_at: ms(completed_at),
                ..StateColumns::default()
            },
            // The agent the failed attempt ran on, so that listing an agent's tasks shows the
            // ones that failed on it too.
            TaskState::Failed {
                error,
                completed_at,
            }
            | TaskState::Dead {
                error,
                completed_at,
            } => StateColumns {
                agent: opt_id(&error.agent_id),
                error: Some(error),
                completed_at: ms(completed_at),
                ..StateColumns::default()
            },
            TaskState::Cancelled {
                reason,
                completed_at,
            } => StateColumns {
                reason: reason.as_deref(),
                completed_at: ms(completed_at),
                ..StateColumns::default()
            },
        }
    }
}

/// Binds `task` to [`UPSERT`] and runs it.
pub(crate) fn upsert(db: &mut dyn Db, task: &Task) -> Result<(), StoreError> {
    let s = StateColumns::of(&task.state);
    let depends_on = if task.depends_on.is_empty() {
        None
    } else {
        Some(to_json(&task.depends_on))
    };
    let detail = if task.last_error.is_none()
        && task.progress.is_none()
        && s.error.is_none()
        && s.reason.is_none()
    {
        None
    } else {
        Some(to_json(&DetailOut {
            last_error: task.last_error.as_ref(),
            progress: task.progress.as_ref().map(|p| ProgressRecord {
                percent: p.percent,
                message: p.message.clone(),
                reported_at: opt_ts(p.reported_at),
            }),
            error: s.error,
            reason: s.reason,
        }))
    };
    let error_message = s
        .error
        .or(task.last_error.as_ref())
        .map(|e| e.message.as_str());
    db.exec(
        UPSERT,
        &params![
            id(&task.id),
            id(&task.swarm_id),
            opt_id(&task.parent_task_id),
            &task.task_type,
            task.payload.get(),
            task.priority,
            strings_json(&task.required_capabilities),
            depends_on,
            &task.affinity_key,
            &task.idempotency_key,
            task.max_attempts,
            millis(task.backoff.initial),
            millis(task.backoff.max),
            millis(task.timeout),
            opt_ts(task.deadline),
            task.state.status().as_str(),
            s.agent,
            task.attempts,
            s.result,
            error_message,
            s.queued_at,
            s.run_after,
            s.assigned_at,
            s.started_at,
            s.timeout_at,
            s.completed_at,
            task.created_at.as_millis(),
            task.updated_at.as_millis(),
            detail,
            task.queue_seq as i64,
            task.ordered,
            opt_id(&task.delegated_by),
            task.delegation.as_ref().map(to_json),
        ],
    )?;
    Ok(())
}

/// Records `task`'s dependencies with [`INSERT_DEPENDENCY`].
pub(crate) fn insert_dependencies(db: &mut dyn Db, task: &Task) -> Result<(), StoreError> {
    let task_id = id(&task.id);
    for dep in &task.depends_on {
        db.exec(
            INSERT_DEPENDENCY,
            &params![task_id, id(&dep.task_id), dependency_kind_str(dep.kind)],
        )?;
    }
    Ok(())
}

/// Decodes a row of [`COLUMNS`].
pub(crate) fn from_row(row: &dyn Cells) -> Result<Task, StoreError> {
    let c = Cols::new(row, "swarm_tasks");
    let detail: Option<DetailIn> = c.opt_decode(27, "detail")?;
    let (last_error, progress, error, reason) = match detail {
        None => (None, None, None, None),
        Some(d) => (d.last_error, d.progress, d.error, d.reason),
    };
    let status: TaskStatus = c.enumeration(15, "status")?;
    let missing_error = || {
        StoreError::bad_value(
            "swarm_tasks.detail",
            format!("a {status} task has no error object"),
        )
    };
    let state = match status {
        TaskStatus::Blocked => TaskState::Blocked,
        TaskStatus::Queued => TaskState::Queued {
            queued_at: c.ts(19, "queued_at")?,
            run_after: c.opt_ts(20, "run_after")?,
        },
        TaskStatus::Assigned => TaskState::Assigned {
            agent_id: c.id(16, "assigned_agent_id")?,
            assigned_at: c.ts(21, "assigned_at")?,
        },
        TaskStatus::Running => TaskState::Running {
            agent_id: c.id(16, "assigned_agent_id")?,
            started_at: c.ts(22, "started_at")?,
            timeout_at: c.ts(23, "timeout_at")?,
        },
        TaskStatus::Completed => TaskState::Completed {
            agent_id: c.id(16, "assigned_agent_id")?,
            result: c.json(18, "result")?,
            completed_at: c.ts(24, "completed_at")?,
        },
        TaskStatus::Failed => TaskState::Failed {
            error: error.ok_or_else(missing_error)?,
            completed_at: c.ts(24, "completed_at")?,
        },
        TaskStatus::Dead => TaskState::Dead {
            error: error.ok_or_else(missing_error)?,
            completed_at: c.ts(24, "completed_at")?,
        },
        TaskStatus::Cancelled => TaskState::Cancelled {
            reason,
            completed_at: c.ts(24, "completed_at")?,
        },
    };
    Ok(Task {
        id: c.id(0, "id")?,
        swarm_id: c.id(1, "swarm_id")?,
        parent_task_id: c.opt_id(2, "parent_task_id")?,
        task_type: c.string(3, "task_type")?,
        payload: c.json(4, "payload")?,
        priority: c.int(5, "priority")?,
        required_capabilities: c.strings(6, "required_capabilities")?,
        depends_on: c.opt_decode(7, "depends_on")?.unwrap_or_default(),
        affinity_key: c.opt_str(8, "affinity_key")?.map(str::to_owned),
        idempotency_key: c.opt_str(9, "idempotency_key")?.map(str::to_owned),
        attempts: c.int(17, "attempt_count")?,
        max_attempts: c.int(10, "max_attempts")?,
        backoff: Backoff {
            initial: c.duration(11, "backoff_initial_ms")?,
            max: c.duration(12, "backoff_max_ms")?,
        },
        timeout: c.duration(13, "timeout_ms")?,
        deadline: c.opt_ts(14, "deadline")?,
        last_error,
        progress: progress.map(|p| Progress {
            percent: p.percent,
            message: p.message,
            reported_at: p.reported_at.map(Timestamp::from_millis),
        }),
        created_at: c.ts(25, "created_at")?,
        updated_at: c.ts(26, "updated_at")?,
        queue_seq: c.int::<i64>(28, "queue_seq")? as u64,
        ordered: c.int::<i64>(29, "ordered")? != 0,
        delegated_by: c.opt_id(30, "delegated_by")?,
        delegation: c.opt_decode(31, "delegation")?,
        state,
    })
}

/// The dependency kind as the API writes it.
fn dependency_kind_str(k: DependencyKind) -> &'static str {
    match k {
        DependencyKind::Completion => "completion",
        DependencyKind::Success => "success",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_kind_names_match_serde() {
        for k in [DependencyKind::Completion, DependencyKind::Success] {
            assert_eq!(serde_json::to_value(k).unwrap(), dependency_kind_str(k));
        }
    }

    #[test]
    fn column_list_has_one_name_per_index_read() {
        assert_eq!(COLUMNS.split(',').count(), 32);
    }
}
