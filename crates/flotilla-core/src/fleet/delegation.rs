//! Delegation down a hierarchy: an agent running a task splits it into subtasks for its
//! children, and the subtasks' results conclude the task.
//!
//! `delegate_task` ends the agent's attempt without failing it: the task waits `blocked` on its
//! subtasks (which carry `parent_task_id` and `delegated_by`, so that only the delegator's
//! children take them, see [`Lane::Delegated`](crate::queue::Lane)). Each subtask that finishes
//! is recorded on the task's [`Delegation`]; when the last one has, the task completes with
//! `{"subtasks": [...]}` (their results, in the order given) if every one completed, and fails
//! (`subtasks_failed`, not retried) naming those that did not otherwise. A subtask may itself
//! be delegated further down; its conclusion then counts for the task above.

use serde_json::json;

use super::{Fleet, KnownTasks};
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, TaskId};
use crate::json::Json;
use crate::task::{
    Delegation, ErrorKind, SubtaskOutcome, Task, TaskError, TaskSpec, TaskState, TaskStatus,
};
use crate::time::Timestamp;

/// Most subtasks in one delegation.
pub const MAX_SUBTASKS: usize = 1_000;

impl Fleet {
    /// The agent running `task` delegates it to `specs` (new tasks with these ids). Returns
    /// the subtasks' ids, in order (an idempotency key may resolve to an existing task).
    /// `known` answers for tasks the subtasks name (dependencies, idempotency keys) that the
    /// fleet no longer holds in memory, as for [`Fleet::submit_tasks`].
    pub fn delegate_task(
        &mut self,
        agent: AgentId,
        task: TaskId,
        specs: Vec<TaskSpec>,
        ids: &[TaskId],
        known: &KnownTasks,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, CoreError> {
        self.check_reporter(agent, task, None)?;
        if specs.is_empty() {
            return Err(CoreError::invalid(
                "give at least one subtask to delegate to",
            ));
        }
        if specs.len() > MAX_SUBTASKS {
            return Err(CoreError::TooLarge(format!(
                "a task may be delegated to at most {MAX_SUBTASKS} subtasks; this asks for {}",
                specs.len()
            )));
        }
        self.check_task_room(specs.len())?;
        if let Some(i) = specs.iter().position(|s| s.ordered) {
            return Err(CoreError::invalid(format!(
                "subtask #{i} is ordered; subtasks follow their delegator, not the swarm's order: \
                 leave `ordered` out"
            )));
        }
        let swarm_id = self.tasks[&task].task.swarm_id;
        let specs: Vec<TaskSpec> = specs
            .into_iter()
            .map(|mut s| {
                s.parent_task_id = Some(task);
                s.delegated_by = Some(agent);
                s
            })
            .collect();
        // An idempotency key may name a task that exists: it must not be this task or one of
        // its ancestors (it would wait for itself).
        let mut lineage = vec![task];
        let mut up = self.tasks[&task].task.parent_task_id;
        while let Some(p) = up {
            if lineage.contains(&p) {
                break;
            }
            lineage.push(p);
            up = self.tasks.get(&p).and_then(|e| e.task.parent_task_id);
        }
        for (i, spec) in specs.iter().enumerate() {
            let Some(key) = spec.idempotency_key.as_deref() else {
                continue;
            };
            let existing = self
                .idempotency
                .get(&(swarm_id, key.to_owned()))
                .copied()
                .or_else(|| known.idempotency.get(key).map(|(id, _)| *id));
            if existing.is_some_and(|e| lineage.contains(&e)) {
                return Err(CoreError::invalid(format!(
                    "subtask #{i}'s idempotency key {key:?} names the delegated task or one of its \
                     parents: it would wait for itself"
                )));
            }
            // A finished task no longer in memory has its result in the store only: the
            // delegation could not wait for it nor aggregate its result.
            if let Some(e) = existing.filter(|e| !self.tasks.contains_key(e)) {
                return Err(CoreError::conflict(format!(
                    "subtask #{i}'s idempotency key {key:?} names task {e}, which finished long \
                     ago: read its result with GET /tasks/{e}, or delegate with a new key"
                )));
            }
        }
        let submitted = self.submit_tasks(&swarm_id.to_string(), specs, ids, known, now)?;
        self.touch(agent, now)?;
        // The same task twice (one idempotency key) is one subtask.
        let mut subtasks: Vec<TaskId> = Vec::with_capacity(submitted.len());
        for s in &submitted {
            if !subtasks.contains(&s.task) {
                subtasks.push(s.task);
            }
        }
        self.emit(
            now,
            EventKind::TaskDelegated,
            swarm_id,
            Some(agent),
            Some(task),
            format!("delegated to {} subtask(s)", subtasks.len()),
        );
        self.tasks
            .get_mut(&task)
            .expect("checked task")
            .task
            .delegation = Some(Delegation {
            agent_id: agent,
            at: now,
            subtasks: subtasks.clone(),
            outcomes: Vec::new(),
        });
        // The attempt ends without failing; the agent's slot is free.
        self.transition(task, TaskState::Blocked, now);
        self.link_subtasks(task, now);
        self.dispatch(now);
        Ok(subtasks)
    }

    /// Links a delegated task to its unfinished subtasks (after a restore too), recording
    /// those already finished; concludes it if none is left.
    pub(super) fn link_subtasks(&mut self, task: TaskId, now: Timestamp) {
        let delegation = self.tasks[&task]
            .task
            .delegation
            .clone()
            .expect("delegated");
        let mut unmet = 0;
        for sub in &delegation.subtasks {
            if delegation.outcomes.iter().any(|o| o.task_id == *sub) {
                continue;
            }
            match self.tasks.get_mut(sub) {
                Some(e) if !e.task.status().is_terminal() => {
                    if !e.dependents.contains(&task) {
                        e.dependents.push(task);
                    }
                    unmet += 1;
                }
                Some(_) => self.record_subtask_outcome(task, *sub, now),
                // Finished and evicted long ago: its outcome was recorded when it finished.
                None => {}
            }
        }
        self.tasks.get_mut(&task).expect("task").unmet = unmet;
        if unmet == 0 {
            self.conclude_delegation(task, now);
            self.settle_dependents(vec![task], now);
        }
    }

    /// Records on the delegated task how one of its subtasks ended.
    pub(super) fn record_subtask_outcome(&mut self, task: TaskId, sub: TaskId, now: Timestamp) {
        let Some(s) = self.tasks.get(&sub) else {
            return;
        };
        let outcome = outcome_of(&s.task);
        let Some(e) = self.tasks.get_mut(&task) else {
            return;
        };
        let Some(d) = e.task.delegation.as_mut() else {
            return;
        };
        if !d.subtasks.contains(&sub) || d.outcomes.iter().any(|o| o.task_id == sub) {
            return;
        }
        d.outcomes.push(outcome);
        e.task.updated_at = now;
        self.mark_task(task);
    }

    /// Every subtask of a delegated task has finished: it completes with their results, or
    /// fails naming those that did not complete. Its own dependents are the caller's.
    pub(super) fn conclude_delegation(&mut self, task: TaskId, now: Timestamp) {
        let t = &self.tasks[&task].task;
        let Some(d) = t.delegation.as_ref() else {
            return;
        };
        if !matches!(t.state, TaskState::Blocked) {
            return;
        }
        let swarm_id = t.swarm_id;
        let agent = d.agent_id;
        let by_id = |id: &TaskId| d.outcomes.iter().find(|o| o.task_id == *id);
        let not_done: Vec<String> = d
            .subtasks
            .iter()
            .filter_map(|id| match by_id(id) {
                Some(o) if o.status == TaskStatus::Completed => None,
                Some(o) => Some(format!(
                    "{id} ({}{})",
                    o.status,
                    o.error
                        .as_deref()
                        .map_or(String::new(), |e| format!(": {e}"))
                )),
                None => Some(format!("{id} (unknown)")),
            })
            .collect();
        let total = d.subtasks.len();
        if not_done.is_empty() {
            let results: Vec<serde_json::Value> = d
                .subtasks
                .iter()
                .map(|id| {
                    let result = by_id(id)
                        .and_then(|o| o.result.as_ref())
                        .map_or(serde_json::Value::Null, Json::to_value);
                    json!({ "task_id": id, "result": result })
                })
                .collect();
            let result = Json::from_value(&json!({ "subtasks": results }));
            self.emit(
                now,
                EventKind::TaskCompleted,
                swarm_id,
                Some(agent),
                Some(task),
                format!("all {total} subtask(s) completed"),
            );
            self.transition(
                task,
                TaskState::Completed {
                    agent_id: agent,
                    result,
                    completed_at: now,
                },
                now,
            );
        } else {
            let error = TaskError {
                kind: ErrorKind::SubtasksFailed,
                message: super::tasks::cut(
                    format!(
                        "{} of {total} subtask(s) did not complete: {}",
                        not_done.len(),
                        not_done.join(", ")
                    ),
                    4096,
                ),
                retryable: false,
                agent_id: Some(agent),
                attempt: None,
            };
            self.end_for_good(task, error, now);
        }
    }

    /// A delegated task was cancelled: its unfinished subtasks are cancelled too.
    pub(super) fn cancel_subtasks(&mut self, task: TaskId, now: Timestamp) {
        let Some(d) = self
            .tasks
            .get(&task)
            .and_then(|e| e.task.delegation.clone())
        else {
            return;
        };
        for sub in d.subtasks {
            let unfinished = self
                .tasks
                .get(&sub)
                .is_some_and(|e| !e.task.status().is_terminal());
            if unfinished {
                let _ = self.cancel_task(sub, Some(format!("parent task {task} cancelled")), now);
            }
        }
    }
}

/// How a finished task ended, for its delegator.
fn outcome_of(t: &Task) -> SubtaskOutcome {
    let (result, error) = match &t.state {
        TaskState::Completed { result, .. } => (Some(result.clone()), None),
        TaskState::Failed { error, .. } | TaskState::Dead { error, .. } => {
            (None, Some(error.message.clone()))
        }
        TaskState::Cancelled { reason, .. } => (
            None,
            Some(reason.clone().unwrap_or_else(|| "cancelled".to_owned())),
        ),
        _ => (None, None),
    };
    SubtaskOutcome {
        task_id: t.id,
        status: t.status(),
        result,
        error,
    }
}
