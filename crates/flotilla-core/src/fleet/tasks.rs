//! Task commands: submit (with dependencies and idempotency), report progress, complete,
//! fail, cancel and retry; and the rules for ending an attempt and releasing dependents.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{Fleet, TaskEntry};
use crate::agent::normalize_capabilities;
use crate::dag::{index_refs, topological_order};
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::task::{
    Backoff, CompletionReport, Dependency, DependencyKind, DependencySpec, ErrorKind,
    FailureReport, MAX_PRIORITY, MIN_PRIORITY, Progress, Task, TaskError, TaskSpec, TaskState,
    TaskStatus,
};
use crate::time::Timestamp;

use super::timers::Timer;

/// Longest accepted error message; longer ones are cut.
const MAX_ERROR_BYTES: usize = 8 * 1024;
/// Most dependencies of one task.
const MAX_DEPENDENCIES: usize = 1_000;

/// What the driver found in the store about tasks no longer in memory, for a submission.
#[derive(Clone, Debug, Default)]
pub struct KnownTasks {
    /// Status of finished tasks referenced as dependencies or parents.
    pub statuses: HashMap<TaskId, TaskStatus>,
    /// Tasks already submitted to the swarm under these idempotency keys, with their status
    /// (a task found here may be referenced by the batch through a `ref`).
    pub idempotency: HashMap<String, (TaskId, TaskStatus)>,
}

impl KnownTasks {
    /// The status of a task not in memory, as the driver found it.
    fn status(&self, id: TaskId) -> Option<TaskStatus> {
        self.statuses.get(&id).copied().or_else(|| {
            self.idempotency
                .values()
                .find(|(t, _)| *t == id)
                .map(|(_, s)| *s)
        })
    }
}

/// The outcome of one task of a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The task.
    pub task: TaskId,
    /// False when the idempotency key matched an existing task, which is returned instead.
    pub created: bool,
}

/// A dependency after references are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// Another task of this batch, by index.
    Batch(usize),
    /// A task that already exists.
    Existing(TaskId),
}

/// One spec of a batch, checked.
struct Prepared {
    task: Task,
    deps: Vec<(Target, DependencyKind)>,
    /// Set when the idempotency key matched: no task is created.
    duplicate_of: Option<Target>,
}

pub(super) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …");
    }
    text
}

fn check_key(what: &str, key: &Option<String>) -> Result<(), CoreError> {
    if let Some(k) = key
        && (k.is_empty() || k.len() > 200)
    {
        return Err(CoreError::invalid(format!(
            "{what} must be 1 to 200 bytes long"
        )));
    }
    Ok(())
}

impl Fleet {
    /// What a submission needs from the store: referenced tasks and idempotency keys that are
    /// not in memory. The driver looks them up and passes them to [`Fleet::submit_tasks`].
    pub fn submission_lookups(
        &self,
        swarm: &str,
        specs: &[TaskSpec],
    ) -> (Vec<TaskId>, Vec<String>) {
        let swarm_id = self.resolve_swarm(swarm).ok();
        let mut ids = Vec::new();
        let mut keys = Vec::new();
        for spec in specs {
            let referenced = spec.depends_on.iter().filter_map(|d| match d {
                DependencySpec::Id(id) => Some(*id),
                DependencySpec::Full(d) => Some(d.task_id),
                DependencySpec::Ref { .. } => None,
            });
            for id in referenced.chain(spec.parent_task_id) {
                if !self.tasks.contains_key(&id) {
                    ids.push(id);
                }
            }
            if let (Some(key), Some(swarm_id)) = (&spec.idempotency_key, swarm_id)
                && !self.idempotency.contains_key(&(swarm_id, key.clone()))
            {
                keys.push(key.clone());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        (ids, keys)
    }

    /// Submits a batch of tasks to a swarm, all or nothing. `ids` holds one new id per spec.
    ///
    /// Refused (nothing changes) when a spec is invalid, a dependency or parent is unknown, or
    /// the batch's `ref` dependencies form a cycle; the error names the offenders. A spec whose
    /// idempotency key was seen returns the existing task. A task with unfinished dependencies
    /// is `blocked`; one whose `success` dependency did not complete fails at once.
    pub fn submit_tasks(
        &mut self,
        swarm: &str,
        specs: Vec<TaskSpec>,
        ids: &[TaskId],
        known: &KnownTasks,
        now: Timestamp,
    ) -> Result<Vec<Submission>, CoreError> {
        let swarm_id = self.resolve_swarm(swarm)?;
        if specs.is_empty() {
            return Err(CoreError::invalid(
                "the batch is empty: submit at least one task",
            ));
        }
        if specs.len() > self.limits.max_batch {
            return Err(CoreError::TooLarge(format!(
                "a batch may hold at most {} tasks; this one holds {}",
                self.limits.max_batch,
                specs.len()
            )));
        }
        self.check_task_room(specs.len())?;
        assert_eq!(specs.len(), ids.len(), "one id per spec");
        let refs = index_refs(
            specs
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.reference.as_deref())),
        )?;
        let names: Vec<String> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| match &s.reference {
                Some(r) => format!("{r:?}"),
                None => format!("task #{i}"),
            })
            .collect();

        // Check everything before changing anything.
        let mut prepared = Vec::with_capacity(specs.len());
        let mut unknown: Vec<String> = Vec::new();
        let mut batch_keys: HashMap<&str, usize> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let p = self
                .prepare(swarm_id, spec, ids[i], &refs, known, &mut unknown, now)
                .map_err(|e| match e {
                    CoreError::Invalid(m) if specs.len() > 1 => {
                        CoreError::Invalid(format!("{}: {m}", names[i]))
                    }
                    CoreError::TooLarge(m) if specs.len() > 1 => {
                        CoreError::TooLarge(format!("{}: {m}", names[i]))
                    }
                    other => other,
                })?;
            prepared.push(p);
            if let Some(key) = spec.idempotency_key.as_deref() {
                match batch_keys.get(key) {
                    // A key already known outside the batch resolves to that task every time.
                    Some(&first) if prepared[i].duplicate_of.is_none() => {
                        prepared[i].duplicate_of = Some(Target::Batch(first));
                    }
                    Some(_) => {}
                    None => {
                        batch_keys.insert(key, i);
                    }
                }
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            return Err(CoreError::invalid(format!(
                "unknown dependencies: {}",
                unknown.join(", ")
            )));
        }
        let edges: Vec<Vec<usize>> = prepared
            .iter()
            .map(|p| {
                p.deps
                    .iter()
                    .filter_map(|(t, _)| match t {
                        Target::Batch(j) => Some(*j),
                        Target::Existing(_) => None,
                    })
                    .collect()
            })
            .collect();
        let order = topological_order(&edges, &names)?;

        // Resolve each spec to the task it stands for.
        let resolve = |prepared: &[Prepared], mut t: Target| -> TaskId {
            loop {
                match t {
                    Target::Existing(id) => return id,
                    Target::Batch(j) => match prepared[j].duplicate_of {
                        Some(next) => t = next,
                        None => return ids[j],
                    },
                }
            }
        };
        let outcome: Vec<Submission> = (0..prepared.len())
            .map(|i| Submission {
                task: resolve(&prepared, Target::Batch(i)),
                created: prepared[i].duplicate_of.is_none(),
            })
            .collect();

        // Insert every new task as blocked, then link dependencies.
        let mut links: Vec<(TaskId, Vec<(TaskId, DependencyKind)>)> = Vec::new();
        let resolved: Vec<Vec<(TaskId, DependencyKind)>> = prepared
            .iter()
            .map(|p| {
                p.deps
                    .iter()
                    .map(|(t, k)| (resolve(&prepared, *t), *k))
                    .collect()
            })
            .collect();
        for (p, deps) in prepared.into_iter().zip(resolved) {
            if p.duplicate_of.is_some() {
                continue;
            }
            let mut task = p.task;
            let id = task.id;
            task.depends_on = deps
                .iter()
                .map(|(t, k)| Dependency {
                    task_id: *t,
                    kind: *k,
                })
                .collect();
            if let Some(key) = &task.idempotency_key {
                self.idempotency.insert((swarm_id, key.clone()), id);
            }
            if let Some(deadline) = task.deadline {
                self.timers.insert(deadline, Timer::TaskDeadline(id));
            }
            let detail = format!("{} (priority {})", task.task_type, task.priority);
            if task.ordered {
                self.ordered_waits(swarm_id, task.created_at, id);
            }
            self.tasks.insert(
                id,
                TaskEntry {
                    task,
                    slot: None,
                    local: None,
                    dependents: Vec::new(),
                    unmet: 0,
                    dirty: false,
                },
            );
            self.swarms
                .get_mut(&swarm_id)
                .expect("swarm")
                .task_counts
                .blocked += 1;
            self.mark_task(id);
            self.emit(
                now,
                EventKind::TaskSubmitted,
                swarm_id,
                None,
                Some(id),
                detail,
            );
            links.push((id, deps));
        }
        let mut failed_deps: HashMap<TaskId, (TaskId, TaskStatus)> = HashMap::new();
        for (id, deps) in &links {
            let mut unmet = 0;
            for (dep, kind) in deps {
                let status = match self.tasks.get_mut(dep) {
                    Some(d) if !d.task.status().is_terminal() => {
                        d.dependents.push(*id);
                        unmet += 1;
                        continue;
                    }
                    Some(d) => d.task.status(),
                    // Only finished tasks leave memory, and the driver found them (prepare
                    // checked every reference against memory and `known`).
                    None => known
                        .status(*dep)
                        .expect("a referenced task is in memory or known"),
                };
                if *kind == DependencyKind::Success && status != TaskStatus::Completed {
                    failed_deps.entry(*id).or_insert((*dep, status));
                }
            }
            self.tasks.get_mut(id).expect("inserted").unmet = unmet;
        }
        // First fail every task whose `success` dependency already failed (a cascade from one
        // of them must not release another before that one's own failure is seen), then
        // release, in dependency order, what has nothing left to wait for.
        let mut failed_now = Vec::new();
        for &i in &order {
            let Submission { task, created } = outcome[i];
            if let Some((dep, status)) = failed_deps.get(&task)
                && created
                && matches!(self.tasks[&task].task.state, TaskState::Blocked)
            {
                self.end_for_good(task, dependency_error(*dep, *status), now);
                failed_now.push(task);
            }
        }
        self.settle_dependents(failed_now, now);
        for i in order {
            let Submission { task, created } = outcome[i];
            if created
                && matches!(self.tasks[&task].task.state, TaskState::Blocked)
                && self.tasks[&task].unmet == 0
            {
                self.release(task, now);
            }
        }
        self.dispatch(now);
        Ok(outcome)
    }

    /// Checks one spec and turns it into a task (not yet inserted).
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        swarm_id: SwarmId,
        spec: &TaskSpec,
        id: TaskId,
        refs: &HashMap<&str, usize>,
        known: &KnownTasks,
        unknown: &mut Vec<String>,
        now: Timestamp,
    ) -> Result<Prepared, CoreError> {
        let config = &self.swarms[&swarm_id].swarm.config;
        if spec.task_type.is_empty()
            || spec.task_type.len() > 100
            || spec.task_type.chars().any(char::is_control)
        {
            return Err(CoreError::invalid(
                "type must be 1 to 100 printable characters",
            ));
        }
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&spec.priority) {
            return Err(CoreError::invalid(format!(
                "priority must be between {MIN_PRIORITY} and {MAX_PRIORITY} (higher runs first); got {}",
                spec.priority
            )));
        }
        if spec.payload.len() > self.limits.max_payload_bytes {
            return Err(CoreError::TooLarge(format!(
                "payload is {} bytes; at most {} are allowed",
                spec.payload.len(),
                self.limits.max_payload_bytes
            )));
        }
        let required_capabilities = normalize_capabilities(spec.required_capabilities.clone())?;
        let max_attempts = spec.max_attempts.unwrap_or(config.task_max_attempts);
        if !(1..=100).contains(&max_attempts) {
            return Err(CoreError::invalid(format!(
                "max_attempts must be between 1 and 100; got {max_attempts}"
            )));
        }
        let timeout = spec.timeout.unwrap_or(config.task_timeout);
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(7 * 24 * 3600) {
            return Err(CoreError::invalid(
                "timeout_ms must be between 100 and 604800000 (7 days)",
            ));
        }
        let backoff = spec.backoff.unwrap_or_default();
        if backoff.initial > backoff.max || backoff.max > Duration::from_secs(24 * 3600) {
            return Err(CoreError::invalid(
                "backoff.initial_ms must not exceed backoff.max_ms, which must be at most 86400000 (1 day)",
            ));
        }
        if let Some(deadline) = spec.deadline
            && deadline <= now
        {
            return Err(CoreError::invalid(format!(
                "deadline {deadline} is already past"
            )));
        }
        check_key("idempotency_key", &spec.idempotency_key)?;
        check_key("affinity_key", &spec.affinity_key)?;
        if spec.depends_on.len() > MAX_DEPENDENCIES {
            return Err(CoreError::invalid(format!(
                "a task may depend on at most {MAX_DEPENDENCIES} tasks"
            )));
        }
        if let Some(parent) = spec.parent_task_id
            && !self.tasks.contains_key(&parent)
            && !known.statuses.contains_key(&parent)
        {
            unknown.push(format!("{parent} (parent)"));
        }
        let mut deps: Vec<(Target, DependencyKind)> = Vec::new();
        for d in &spec.depends_on {
            let (target, kind) = match d {
                DependencySpec::Id(id) => (*id, DependencyKind::Completion),
                DependencySpec::Full(d) => (d.task_id, d.kind),
                DependencySpec::Ref { reference, kind } => match refs.get(reference.as_str()) {
                    Some(&j) => {
                        deps.push((Target::Batch(j), *kind));
                        continue;
                    }
                    None => {
                        unknown.push(format!("ref {reference:?}"));
                        continue;
                    }
                },
            };
            let in_swarm = match self.tasks.get(&target) {
                Some(e) => Some(e.task.swarm_id == swarm_id),
                None if known.statuses.contains_key(&target) => Some(true),
                None => None,
            };
            match in_swarm {
                None => unknown.push(target.to_string()),
                Some(false) => {
                    return Err(CoreError::invalid(format!(
                        "dependency {target} belongs to another swarm; dependencies must be in the same swarm"
                    )));
                }
                Some(true) => deps.push((Target::Existing(target), kind)),
            }
        }
        // The same dependency twice: keep one, the stricter kind.
        deps.sort_by_key(|(t, k)| (*t, *k != DependencyKind::Success));
        deps.dedup_by_key(|(t, _)| *t);
        let duplicate_of = spec.idempotency_key.as_ref().and_then(|key| {
            self.idempotency
                .get(&(swarm_id, key.clone()))
                .copied()
                .or_else(|| known.idempotency.get(key).map(|(id, _)| *id))
                .map(Target::Existing)
        });
        let task = Task {
            id,
            swarm_id,
            parent_task_id: spec.parent_task_id,
            task_type: spec.task_type.clone(),
            payload: spec.payload.clone(),
            priority: spec.priority,
            required_capabilities,
            depends_on: Vec::new(),
            affinity_key: spec.affinity_key.clone(),
            idempotency_key: spec.idempotency_key.clone(),
            attempts: 0,
            max_attempts,
            backoff,
            timeout,
            deadline: spec.deadline,
            last_error: None,
            progress: None,
            created_at: now,
            updated_at: now,
            ordered: spec.ordered,
            delegated_by: spec.delegated_by,
            delegation: None,
            queue_seq: 0,
            state: TaskState::Blocked,
        };
        Ok(Prepared {
            task,
            deps,
            duplicate_of,
        })
    }

    /// Checks that `agent` may report on `task`'s current attempt.
    pub(super) fn check_reporter(
        &self,
        agent: AgentId,
        task: TaskId,
        attempt: Option<u32>,
    ) -> Result<(), CoreError> {
        let Some(entry) = self.tasks.get(&task) else {
            return Err(CoreError::not_found(format!("task {task} not found")));
        };
        let t = &entry.task;
        match t.state {
            TaskState::Running { agent_id, .. } if agent_id == agent => match attempt {
                Some(a) if a != t.attempts => Err(CoreError::conflict(format!(
                    "task {task} is on attempt {}, not {a}: this report is stale and was not recorded",
                    t.attempts
                ))),
                _ => Ok(()),
            },
            _ => {
                let why = match (&t.state, &t.last_error) {
                    (TaskState::Queued { .. }, Some(e)) if e.agent_id == Some(agent) => format!(
                        "it was taken back from this agent ({}) and is queued again",
                        e.message
                    ),
                    (TaskState::Assigned { agent_id, .. }, _) if *agent_id == agent => {
                        "it was placed on this agent but not yet taken: take it with tasks/next first".to_owned()
                    }
                    (state, _) => match state.agent_id() {
                        Some(other) if other != agent => format!("it is {} on agent {other}", t.status()),
                        _ => format!("it is {}", t.status()),
                    },
                };
                Err(CoreError::conflict(format!(
                    "task {task} is not running on agent {agent}: {why}; this report was not recorded"
                )))
            }
        }
    }

    /// Records an agent's progress report on its running task.
    pub fn report_progress(
        &mut self,
        agent: AgentId,
        task: TaskId,
        mut progress: Progress,
        now: Timestamp,
    ) -> Result<&Task, CoreError> {
        if let Some(p) = progress.percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(CoreError::invalid("percent must be between 0 and 100"));
        }
        progress.message = progress.message.map(|m| cut(m, MAX_ERROR_BYTES));
        self.check_reporter(agent, task, None)?;
        self.touch(agent, now)?;
        progress.reported_at = Some(now);
        let entry = self.tasks.get_mut(&task).expect("checked task");
        entry.task.progress = Some(progress);
        entry.task.updated_at = now;
        self.mark_task(task);
        self.progress_seen(agent, task, now);
        Ok(&self.tasks[&task].task)
    }

    /// Records that an agent completed its running task. Repeating the same completion is
    /// answered with the completed task and changes nothing.
    pub fn complete_task(
        &mut self,
        agent: AgentId,
        task: TaskId,
        report: CompletionReport,
        now: Timestamp,
    ) -> Result<&Task, CoreError> {
        if report.result.len() > self.limits.max_payload_bytes {
            return Err(CoreError::TooLarge(format!(
                "result is {} bytes; at most {} are allowed",
                report.result.len(),
                self.limits.max_payload_bytes
            )));
        }
        let repeated = self
            .tasks
            .get(&task)
            .and_then(|e| e.task.repeated_completion(agent, &report));
        if let Some(check) = repeated {
            check?;
            return Ok(&self.tasks[&task].task);
        }
        self.check_reporter(agent, task, report.attempt)?;
        self.touch(agent, now)?;
        if let Some(a) = self.agents.get_mut(&agent) {
            a.agent.tasks_completed += 1;
        }
        let ran_for = match self.tasks[&task].task.state {
            TaskState::Running { started_at, .. } => Some(now.since(started_at)),
            _ => None,
        };
        let swarm_id = self.tasks[&task].task.swarm_id;
        let state = TaskState::Completed {
            agent_id: agent,
            result: report.result,
            completed_at: now,
        };
        self.emit(
            now,
            EventKind::TaskCompleted,
            swarm_id,
            Some(agent),
            Some(task),
            String::new(),
        );
        self.finish(task, state, now);
        self.record_outcome(agent, task, true, ran_for, now);
        if self.template_of(agent).is_some_and(|(a, p)| {
            p.checkpoints.after_each_task && a.health.recovery.rollback_to.is_none()
        }) {
            self.out
                .effects
                .push(crate::changes::Effect::CheckpointAgent(
                    agent,
                    crate::checkpoint::CheckpointTrigger::AfterTask,
                ));
        }
        // Dependents it released go to waiting agents now, not at the next tick.
        self.dispatch(now);
        Ok(&self.tasks[&task].task)
    }

    /// Records that an agent's attempt at its running task failed.
    pub fn fail_task(
        &mut self,
        agent: AgentId,
        task: TaskId,
        report: FailureReport,
        now: Timestamp,
    ) -> Result<&Task, CoreError> {
        self.check_reporter(agent, task, report.attempt)?;
        self.touch(agent, now)?;
        if let Some(a) = self.agents.get_mut(&agent) {
            a.agent.tasks_failed += 1;
        }
        let error = TaskError {
            kind: ErrorKind::AgentError,
            message: cut(report.error, MAX_ERROR_BYTES),
            retryable: report.retryable,
            agent_id: Some(agent),
            attempt: Some(self.tasks[&task].task.attempts),
        };
        let ran_for = match self.tasks[&task].task.state {
            TaskState::Running { started_at, .. } => Some(now.since(started_at)),
            _ => None,
        };
        self.fail_attempt(task, error, now);
        self.record_outcome(agent, task, false, ran_for, now);
        self.dispatch(now);
        Ok(&self.tasks[&task].task)
    }

    /// Cancels an unfinished task. An agent working on it will have its report refused.
    pub fn cancel_task(
        &mut self,
        task: TaskId,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<&Task, CoreError> {
        let Some(entry) = self.tasks.get(&task) else {
            return Err(CoreError::not_found(format!("task {task} not found")));
        };
        if entry.task.status().is_terminal() {
            return Err(CoreError::conflict(format!(
                "task {task} is already {}; only unfinished tasks can be cancelled",
                entry.task.status()
            )));
        }
        let reason = reason.map(|r| cut(r, 1024));
        let swarm_id = entry.task.swarm_id;
        let agent = entry.task.state.agent_id();
        self.emit(
            now,
            EventKind::TaskCancelled,
            swarm_id,
            agent,
            Some(task),
            reason.clone().unwrap_or_default(),
        );
        self.finish(
            task,
            TaskState::Cancelled {
                reason,
                completed_at: now,
            },
            now,
        );
        self.cancel_subtasks(task, now);
        self.dispatch(now);
        Ok(&self.tasks[&task].task)
    }

    /// Queues a failed, dead or cancelled task again with its attempts reset. `stored` is the
    /// task as read from the store when it is no longer in memory.
    pub fn retry_task(
        &mut self,
        task: TaskId,
        max_attempts: Option<u32>,
        stored: Option<Task>,
        now: Timestamp,
    ) -> Result<&Task, CoreError> {
        if let Some(m) = max_attempts
            && !(1..=100).contains(&m)
        {
            return Err(CoreError::invalid("max_attempts must be between 1 and 100"));
        }
        // Check everything before a task read from the store comes back into memory.
        let current = match self.tasks.get(&task) {
            Some(e) => &e.task,
            None => match stored.as_ref().filter(|t| t.id == task) {
                Some(t) => t,
                None => return Err(CoreError::not_found(format!("task {task} not found"))),
            },
        };
        if !matches!(
            current.status(),
            TaskStatus::Failed | TaskStatus::Dead | TaskStatus::Cancelled
        ) {
            return Err(CoreError::conflict(format!(
                "task {task} is {}; only failed, dead or cancelled tasks can be retried",
                current.status()
            )));
        }
        if !self.swarms.contains_key(&current.swarm_id) {
            return Err(CoreError::not_found(format!(
                "task {task}'s swarm no longer exists"
            )));
        }
        if let Some(t) = stored.filter(|_| !self.tasks.contains_key(&task)) {
            if let Some(key) = &t.idempotency_key {
                self.idempotency.insert((t.swarm_id, key.clone()), task);
            }
            let entry = TaskEntry {
                task: t,
                slot: None,
                local: None,
                dependents: Vec::new(),
                unmet: 0,
                dirty: false,
            };
            self.tasks.insert(task, entry);
        }
        let entry = self.tasks.get_mut(&task).expect("task in memory");
        if let Some(m) = max_attempts {
            entry.task.max_attempts = m;
        }
        entry.task.attempts = 0;
        // A delegation belongs to the attempts that made it.
        entry.task.delegation = None;
        let (ordered, swarm_id, created_at) = (
            entry.task.ordered,
            entry.task.swarm_id,
            entry.task.created_at,
        );
        if ordered {
            // Back in its place among the ordered tasks.
            self.ordered_waits(swarm_id, created_at, task);
        }
        let entry = self.tasks.get_mut(&task).expect("task in memory");
        // A deadline still ahead holds again (its timer may be gone with a restart); one
        // already past would fail the retry at once, so it is dropped.
        match entry.task.deadline {
            Some(d) if d <= now => entry.task.deadline = None,
            Some(d) => self.timers.insert(d, Timer::TaskDeadline(task)),
            None => {}
        }
        let entry = &self.tasks[&task];
        let swarm_id = entry.task.swarm_id;
        self.emit(
            now,
            EventKind::TaskRetried,
            swarm_id,
            None,
            Some(task),
            String::new(),
        );
        self.transition(
            task,
            TaskState::Queued {
                queued_at: now,
                run_after: None,
            },
            now,
        );
        self.dispatch(now);
        Ok(&self.tasks[&task].task)
    }

    // ----- rules shared by commands and timers -----

    /// Ends the current attempt with an error: retried while attempts remain and the error is
    /// retryable (after the task's backoff, or at once when its agent failed rather than the
    /// task), else `dead` (out of attempts) or `failed`.
    pub(super) fn fail_attempt(&mut self, task: TaskId, error: TaskError, now: Timestamp) {
        let t = &self.tasks[&task].task;
        let (swarm_id, attempts, max, backoff) =
            (t.swarm_id, t.attempts, t.max_attempts, t.backoff);
        let agent = t.state.agent_id();
        if !error.retryable {
            self.fail_task_for_good(task, error, now);
        } else if attempts >= max {
            self.emit(
                now,
                EventKind::TaskDead,
                swarm_id,
                agent,
                Some(task),
                format!("out of attempts ({attempts}/{max}): {}", error.message),
            );
            self.tasks.get_mut(&task).expect("task").task.last_error = Some(error.clone());
            self.finish(
                task,
                TaskState::Dead {
                    error,
                    completed_at: now,
                },
                now,
            );
        } else {
            // When the agent failed (it died, went silent, was judged unhealthy), not the
            // task, another agent may take it at once: no backoff.
            let agent_failed = matches!(
                error.kind,
                ErrorKind::AgentExited | ErrorKind::LeaseExpired | ErrorKind::AgentUnhealthy
            );
            let delay = if agent_failed {
                Duration::ZERO
            } else {
                Backoff::delay(&backoff, attempts)
            };
            let run_after = (!delay.is_zero()).then(|| now + delay);
            self.emit(
                now,
                EventKind::TaskRetrying,
                swarm_id,
                agent,
                Some(task),
                format!(
                    "attempt {attempts}/{max} failed ({}); retry in {:.1}s",
                    error.message,
                    delay.as_secs_f64()
                ),
            );
            self.tasks.get_mut(&task).expect("task").task.last_error = Some(error);
            self.transition(
                task,
                TaskState::Queued {
                    queued_at: now,
                    run_after,
                },
                now,
            );
            if let Some(at) = run_after {
                self.timers.insert(at, Timer::TaskRetry(task));
            }
        }
    }

    /// Fails a task for good (no more attempts) and settles its dependents.
    pub(super) fn fail_task_for_good(&mut self, task: TaskId, error: TaskError, now: Timestamp) {
        self.end_for_good(task, error, now);
        self.settle_dependents(vec![task], now);
    }

    /// Marks a task failed for good, with its event, leaving its dependents to the caller.
    pub(super) fn end_for_good(&mut self, task: TaskId, error: TaskError, now: Timestamp) {
        let t = &self.tasks[&task].task;
        let (swarm_id, agent) = (t.swarm_id, t.state.agent_id());
        self.emit(
            now,
            EventKind::TaskFailed,
            swarm_id,
            agent,
            Some(task),
            error.message.clone(),
        );
        self.tasks.get_mut(&task).expect("task").task.last_error = Some(error.clone());
        let state = TaskState::Failed {
            error,
            completed_at: now,
        };
        self.transition(task, state, now);
        // A delegated task that fails (its deadline, say) takes its unfinished subtasks along.
        self.cancel_subtasks(task, now);
    }

    /// Puts a placed or running task back in the queue without counting an attempt (its
    /// agent left, or never took it).
    pub(super) fn requeue(&mut self, task: TaskId, why: &str, now: Timestamp) {
        let entry = self.tasks.get_mut(&task).expect("task to requeue");
        let agent = entry.task.state.agent_id();
        if matches!(entry.task.state, TaskState::Running { .. }) {
            entry.task.attempts = entry.task.attempts.saturating_sub(1);
        }
        let swarm_id = entry.task.swarm_id;
        self.emit(
            now,
            EventKind::TaskRequeued,
            swarm_id,
            agent,
            Some(task),
            why.to_owned(),
        );
        self.transition(
            task,
            TaskState::Queued {
                queued_at: now,
                run_after: None,
            },
            now,
        );
    }

    /// A blocked task's dependencies are all done: it becomes ready.
    pub(super) fn release(&mut self, task: TaskId, now: Timestamp) {
        let swarm_id = self.tasks[&task].task.swarm_id;
        if !self.tasks[&task].task.depends_on.is_empty() {
            self.emit(
                now,
                EventKind::TaskUnblocked,
                swarm_id,
                None,
                Some(task),
                String::new(),
            );
        }
        self.transition(
            task,
            TaskState::Queued {
                queued_at: now,
                run_after: None,
            },
            now,
        );
    }

    /// Fails a blocked task because a `success` dependency did not complete.
    pub(super) fn fail_for_dependency(
        &mut self,
        task: TaskId,
        dep: TaskId,
        status: TaskStatus,
        now: Timestamp,
    ) {
        self.fail_task_for_good(task, dependency_error(dep, status), now);
    }

    /// Moves a task to a terminal state and settles every task waiting on it, transitively.
    fn finish(&mut self, task: TaskId, state: TaskState, now: Timestamp) {
        debug_assert!(state.status().is_terminal());
        self.transition(task, state, now);
        self.settle_dependents(vec![task], now);
    }

    /// Settles the tasks waiting on these finished tasks, transitively: a `success` dependent
    /// of a task that did not complete fails; any other counts down and is released at zero.
    pub(super) fn settle_dependents(&mut self, finished: Vec<TaskId>, now: Timestamp) {
        let mut done = finished;
        let mut seen = HashSet::new();
        while let Some(finished) = done.pop() {
            if !seen.insert(finished) {
                continue;
            }
            let status = self.tasks[&finished].task.status();
            let dependents =
                std::mem::take(&mut self.tasks.get_mut(&finished).expect("task").dependents);
            for d in dependents {
                let Some(entry) = self.tasks.get_mut(&d) else {
                    continue;
                };
                if !matches!(entry.task.state, TaskState::Blocked) {
                    continue;
                }
                let kind = entry
                    .task
                    .depends_on
                    .iter()
                    .find(|x| x.task_id == finished)
                    .map_or(DependencyKind::Completion, |x| x.kind);
                if kind == DependencyKind::Success && status != TaskStatus::Completed {
                    self.end_for_good(d, dependency_error(finished, status), now);
                    done.push(d);
                } else {
                    entry.unmet = entry.unmet.saturating_sub(1);
                    let concluded = entry.unmet == 0;
                    if entry.task.delegation.is_some() {
                        self.record_subtask_outcome(d, finished, now);
                        if concluded {
                            self.conclude_delegation(d, now);
                            done.push(d);
                        }
                    } else if concluded {
                        self.release(d, now);
                    }
                }
            }
        }
    }
}

/// The error of a task whose `success` dependency did not complete.
fn dependency_error(dep: TaskId, status: TaskStatus) -> TaskError {
    TaskError {
        kind: ErrorKind::DependencyFailed,
        message: format!("dependency {dep} ended {status}, and this task needs it to succeed"),
        retryable: false,
        agent_id: None,
        attempt: None,
    }
}
