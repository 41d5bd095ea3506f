//! Health rules: judging agents from what the coordinator sees, the circuit breaker, and the
//! recovery ladder of managed agents.
//!
//! - An agent that is *down* (missed heartbeats, its process exited, memory over its limit)
//!   becomes unhealthy and loses its tasks at once ([`Fleet::agent_down`]). A managed agent
//!   then climbs the recovery ladder: restart after an exponential backoff, and after
//!   `give_up_after` restarts in a row, stay `failed` so that its pool starts a replacement.
//! - An agent that is *struggling* (error rate, an open breaker, memory near its limit, a slow
//!   task, no progress, its own word) becomes degraded and keeps its tasks; it is judged again
//!   after every outcome ([`Fleet::judge`]).
//! - Every change of health is recorded in the agent's history and as an event, with an alert
//!   event: warning (degraded), critical (unhealthy, given up), recovery (healthy again).

use std::time::Duration;

use super::Fleet;
use super::timers::Timer;
use crate::agent::{Agent, AgentStatus, Desired, ReportedHealth};
use crate::changes::Effect;
use crate::event::EventKind;
use crate::health::{
    Breaker, HEALTH_HISTORY, HealthReason, HealthState, HealthTransition, OUTCOME_WINDOW, Outcome,
};
use crate::ids::{AgentId, TaskId};
use crate::task::{ErrorKind, TaskError, TaskState};
use crate::time::Timestamp;

/// How many tasks an agent may hold now: none while its breaker is open or it says it is
/// unhealthy, one while the breaker is half-open.
pub(super) fn capacity(a: &Agent) -> usize {
    if a.reported_health == ReportedHealth::Unhealthy || a.health.recovery.rollback_to.is_some() {
        return 0;
    }
    match a.health.breaker {
        Breaker::Open { .. } => 0,
        Breaker::HalfOpen => 1,
        Breaker::Closed => a.max_concurrent_tasks as usize,
    }
}

/// The weight of the newest duration in an agent's usual task time.
const EWMA_WEIGHT: f64 = 0.2;

/// Successful tasks needed before an agent's usual time counts.
const TIMED_TASKS_NEEDED: u32 = 3;

impl Fleet {
    /// Changes an agent's health, recording the transition, an event and an alert.
    pub(super) fn set_health(
        &mut self,
        id: AgentId,
        state: HealthState,
        reason: Option<HealthReason>,
        detail: String,
        now: Timestamp,
    ) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        let h = &mut entry.agent.health;
        if h.state == state && h.reason == reason {
            if h.detail != detail {
                h.detail = detail;
                self.mark_agent(id);
            }
            return;
        }
        let from = h.state;
        // A return to healthy names what it recovered from.
        let recorded_reason = if state == HealthState::Healthy {
            h.reason
        } else {
            reason
        };
        if h.history.len() == HEALTH_HISTORY {
            h.history.pop_front();
        }
        h.history.push_back(HealthTransition {
            at: now,
            from,
            to: state,
            reason: recorded_reason,
            detail: detail.clone(),
        });
        h.state = state;
        h.reason = reason;
        h.detail = detail.clone();
        h.since = Some(now);
        let (swarm_id, name) = (entry.agent.swarm_id, entry.agent.name.clone());
        self.mark_agent(id);
        if (from == HealthState::Unhealthy) != (state == HealthState::Unhealthy) {
            // Whether it can hold a role changed.
            self.note_member(swarm_id, id);
        }
        let why = recorded_reason.map_or(String::new(), |r| format!(" ({})", r.as_str()));
        let words = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        self.emit(
            now,
            EventKind::AgentHealthChanged,
            swarm_id,
            Some(id),
            None,
            format!("{} -> {}{why}{words}", from.as_str(), state.as_str()),
        );
        let alert = match (from, state) {
            (_, HealthState::Unhealthy) => Some(EventKind::AlertCritical),
            (HealthState::Healthy, HealthState::Degraded) => Some(EventKind::AlertWarning),
            (HealthState::Unhealthy, HealthState::Degraded) => None,
            (_, HealthState::Healthy) => Some(EventKind::AlertRecovery),
            _ => None,
        };
        if let Some(kind) = alert {
            let text = match kind {
                EventKind::AlertRecovery => format!("agent {name} is healthy again{why}"),
                _ => format!("agent {name} is {}{why}{words}", state.as_str()),
            };
            self.emit(now, kind, swarm_id, Some(id), None, text);
        }
    }

    /// Judges a live agent's health from what it has been seen doing (not for agents that are
    /// down: they come back through their own paths).
    pub(super) fn judge(&mut self, id: AgentId, now: Timestamp) {
        let Some(entry) = self.agents.get(&id) else {
            return;
        };
        let a = &entry.agent;
        if a.health.state == HealthState::Unhealthy || a.health.recovery.gave_up {
            return;
        }
        let policy = &self.swarms[&a.swarm_id].swarm.config.health;
        let h = &a.health;
        let (rate, n) = h.error_rate(now - policy.error_rate_window);
        let memory = self.memory_verdict(a);
        let stuck = h.stuck.filter(|(t, _)| a.current_tasks.contains(t));
        let verdict = if !matches!(h.breaker, Breaker::Closed) {
            Some((
                HealthReason::CircuitOpen,
                format!(
                    "circuit breaker {} after {} failed tasks in a row",
                    h.breaker.as_str().replace('_', "-"),
                    h.consecutive_failures
                ),
            ))
        } else if n >= policy.error_rate_min_tasks as usize
            && n > 0
            && rate >= policy.error_rate_threshold
        {
            Some((
                HealthReason::ErrorRate,
                format!(
                    "{} of its last {n} tasks failed (threshold {:.0}%)",
                    (rate * n as f64).round() as usize,
                    policy.error_rate_threshold * 100.0
                ),
            ))
        } else if let Some((HealthState::Degraded, detail)) = memory {
            Some((HealthReason::Memory, detail))
        } else if let Some((task, reason)) = stuck {
            Some((reason, stuck_detail(reason, task, h.typical_task_ms)))
        } else if a.reported_health != ReportedHealth::Healthy {
            Some((
                HealthReason::Reported,
                format!(
                    "it reports itself {}",
                    match a.reported_health {
                        ReportedHealth::Degraded => "degraded",
                        _ => "unhealthy",
                    }
                ),
            ))
        } else {
            None
        };
        match verdict {
            Some((reason, detail)) => {
                self.set_health(id, HealthState::Degraded, Some(reason), detail, now)
            }
            None => self.set_health(id, HealthState::Healthy, None, String::new(), now),
        }
    }

    /// Unhealthy or degraded by memory, with words, when its usage is near or over its limit.
    fn memory_verdict(&self, a: &Agent) -> Option<(HealthState, String)> {
        let used = a.resource_usage.memory_mb?;
        let policy = &self.swarms[&a.swarm_id].swarm.config.health;
        let limit = policy.memory_limit_mb.or_else(|| {
            let (_, pool) = self.template_of(a.id)?;
            let bytes = pool.template.as_ref()?.limits.memory_bytes?;
            Some(bytes as f64 / (1024.0 * 1024.0))
        })?;
        if used > limit {
            Some((
                HealthState::Unhealthy,
                format!("resident memory {used:.0} MiB is over its limit of {limit:.0} MiB"),
            ))
        } else if used >= 0.9 * limit {
            Some((
                HealthState::Degraded,
                format!("resident memory {used:.0} MiB is near its limit of {limit:.0} MiB"),
            ))
        } else {
            None
        }
    }

    /// Looks at an agent's resource usage after it changed: over its memory limit it is down.
    pub(super) fn check_usage(&mut self, id: AgentId, now: Timestamp) {
        let Some(entry) = self.agents.get(&id) else {
            return;
        };
        let a = &entry.agent;
        if a.status == AgentStatus::Unhealthy && a.health.reason == Some(HealthReason::Memory) {
            // A connected agent taken down for its memory comes back when a sample shows it
            // under its limit again (its heartbeats alone do not bring it back).
            if !matches!(self.memory_verdict(a), Some((HealthState::Unhealthy, _))) {
                let swarm_id = a.swarm_id;
                self.set_agent_status(id, AgentStatus::Idle, now);
                self.refresh_agent_status(id);
                self.arm_lease(id, now);
                self.set_health(id, HealthState::Healthy, None, String::new(), now);
                self.judge(id, now);
                self.emit(
                    now,
                    EventKind::AgentRecovered,
                    swarm_id,
                    Some(id),
                    None,
                    "memory back under its limit".to_owned(),
                );
                self.dispatch(now);
            }
            return;
        }
        if !matches!(a.status, AgentStatus::Idle | AgentStatus::Busy) {
            return;
        }
        match self.memory_verdict(a) {
            Some((HealthState::Unhealthy, detail)) => {
                self.agent_down(id, HealthReason::Memory, detail, now)
            }
            _ => self.judge(id, now),
        }
    }

    /// Records how an attempt on an agent ended: its error rate, breaker and usual time.
    pub(super) fn record_outcome(
        &mut self,
        id: AgentId,
        task: TaskId,
        ok: bool,
        ran_for: Option<Duration>,
        now: Timestamp,
    ) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        let swarm_id = entry.agent.swarm_id;
        let policy = self.swarms[&swarm_id].swarm.config.health.clone();
        let h = &mut entry.agent.health;
        if h.outcomes.len() == OUTCOME_WINDOW {
            h.outcomes.pop_front();
        }
        h.outcomes.push_back(Outcome { at: now, ok });
        if h.stuck.is_some_and(|(t, _)| t == task) {
            h.stuck = None;
        }
        let mut breaker_event = None;
        if ok {
            h.consecutive_failures = 0;
            if let Some(d) = ran_for {
                let ms = d.as_secs_f64() * 1000.0;
                h.typical_task_ms = Some(match h.typical_task_ms {
                    Some(m) => m + EWMA_WEIGHT * (ms - m),
                    None => ms,
                });
                h.timed_tasks = h.timed_tasks.saturating_add(1);
            }
            if !matches!(h.breaker, Breaker::Closed) {
                h.breaker = Breaker::Closed;
                breaker_event = Some("circuit breaker closed: the trial task succeeded".to_owned());
            }
        } else {
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            let opens = match h.breaker {
                Breaker::HalfOpen => true,
                Breaker::Closed => {
                    policy.breaker_failures > 0 && h.consecutive_failures >= policy.breaker_failures
                }
                Breaker::Open { .. } => false,
            };
            if opens {
                let until = now + policy.breaker_cooldown;
                h.breaker = Breaker::Open { until };
                self.timers.insert(until, Timer::BreakerHalfOpen(id));
                breaker_event = Some(format!(
                    "circuit breaker open after {} failed tasks in a row; one trial task in {:.1}s",
                    h.consecutive_failures,
                    policy.breaker_cooldown.as_secs_f64()
                ));
            }
        }
        self.mark_agent(id);
        if let Some(detail) = breaker_event {
            self.emit(
                now,
                EventKind::AgentBreaker,
                swarm_id,
                Some(id),
                None,
                detail,
            );
            self.rejoin_if_polling(id);
        }
        self.judge(id, now);
    }

    /// An open breaker's cooldown is over: one trial task.
    pub(super) fn breaker_timer(&mut self, id: AgentId, now: Timestamp) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        let Breaker::Open { until } = entry.agent.health.breaker else {
            return;
        };
        if until > now {
            return;
        }
        entry.agent.health.breaker = Breaker::HalfOpen;
        let swarm_id = entry.agent.swarm_id;
        self.mark_agent(id);
        self.emit(
            now,
            EventKind::AgentBreaker,
            swarm_id,
            Some(id),
            None,
            "circuit breaker half-open: one trial task".to_owned(),
        );
        self.judge(id, now);
        self.rejoin_if_polling(id);
    }

    /// Arms the slow-task and no-progress watches of an attempt that just started.
    pub(super) fn watch_attempt(
        &mut self,
        task: TaskId,
        attempt: u32,
        agent: AgentId,
        now: Timestamp,
    ) {
        let Some(a) = self.agents.get(&agent).map(|e| &e.agent) else {
            return;
        };
        let policy = &self.swarms[&a.swarm_id].swarm.config.health;
        let h = &a.health;
        if policy.slow_task_factor > 0.0
            && h.timed_tasks >= TIMED_TASKS_NEEDED
            && let Some(typical) = h.typical_task_ms
        {
            let after =
                Duration::try_from_secs_f64((typical * policy.slow_task_factor / 1000.0).max(1.0))
                    .unwrap_or(Duration::from_secs(365 * 86_400));
            self.timers
                .insert(now + after, Timer::SlowTask(task, attempt));
        }
        if let Some(p) = policy.progress_timeout {
            self.timers
                .insert(now + p, Timer::NoProgress(task, attempt));
        }
    }

    /// The running attempt `attempt` of `task`, with its agent and start, if it still runs.
    fn running_attempt(&self, task: TaskId, attempt: u32) -> Option<(AgentId, Timestamp)> {
        let t = &self.tasks.get(&task)?.task;
        match t.state {
            TaskState::Running {
                agent_id,
                started_at,
                ..
            } if t.attempts == attempt => Some((agent_id, started_at)),
            _ => None,
        }
    }

    pub(super) fn slow_task_timer(&mut self, task: TaskId, attempt: u32, now: Timestamp) {
        let Some((agent, _)) = self.running_attempt(task, attempt) else {
            return;
        };
        if let Some(e) = self.agents.get_mut(&agent)
            && !holds_stuck(&e.agent)
        {
            e.agent.health.stuck = Some((task, HealthReason::SlowTask));
            self.judge(agent, now);
        }
    }

    pub(super) fn no_progress_timer(&mut self, task: TaskId, attempt: u32, now: Timestamp) {
        let Some((agent, started_at)) = self.running_attempt(task, attempt) else {
            return;
        };
        let Some(a) = self.agents.get(&agent).map(|e| &e.agent) else {
            return;
        };
        let Some(limit) = self.swarms[&a.swarm_id]
            .swarm
            .config
            .health
            .progress_timeout
        else {
            return;
        };
        let last = self.tasks[&task]
            .task
            .progress
            .as_ref()
            .and_then(|p| p.reported_at)
            .unwrap_or(started_at);
        if now.since(last) < limit {
            self.timers
                .insert(last + limit, Timer::NoProgress(task, attempt));
            return;
        }
        let e = self.agents.get_mut(&agent).expect("agent");
        if !holds_stuck(&e.agent) {
            e.agent.health.stuck = Some((task, HealthReason::NoProgress));
            self.judge(agent, now);
        }
    }

    /// A task left its agent (finished, requeued, cancelled, taken back): if it was the one
    /// that made the agent degraded, the agent is judged again.
    pub(super) fn task_left(&mut self, agent: AgentId, task: TaskId, now: Timestamp) {
        if let Some(e) = self.agents.get_mut(&agent)
            && e.agent.health.stuck.is_some_and(|(t, _)| t == task)
        {
            e.agent.health.stuck = None;
            self.judge(agent, now);
        }
    }

    /// A task reported progress: an agent degraded for its silence is judged again.
    pub(super) fn progress_seen(&mut self, agent: AgentId, task: TaskId, now: Timestamp) {
        if let Some(e) = self.agents.get_mut(&agent)
            && e.agent.health.stuck == Some((task, HealthReason::NoProgress))
        {
            e.agent.health.stuck = None;
            self.judge(agent, now);
            if let Some(TaskState::Running { .. }) = self.tasks.get(&task).map(|t| &t.task.state) {
                let attempt = self.tasks[&task].task.attempts;
                if let Some(p) = self.swarms[&self.agents[&agent].agent.swarm_id]
                    .swarm
                    .config
                    .health
                    .progress_timeout
                {
                    self.timers
                        .insert(now + p, Timer::NoProgress(task, attempt));
                }
            }
        }
    }

    /// An agent is down: it becomes unhealthy, its tasks are taken back at once (a running
    /// attempt fails and is retried, a placed task goes back to the queue), and a managed
    /// agent starts recovering.
    pub(super) fn agent_down(
        &mut self,
        id: AgentId,
        reason: HealthReason,
        detail: String,
        now: Timestamp,
    ) {
        let Some(entry) = self.agents.get(&id) else {
            return;
        };
        let held = entry.agent.current_tasks.clone();
        let swarm_id = entry.agent.swarm_id;
        let managed = entry.agent.managed.is_some();
        self.stop_polling(id);
        let kind = match reason {
            HealthReason::MissedHeartbeats => ErrorKind::LeaseExpired,
            HealthReason::ProcessExited => ErrorKind::AgentExited,
            _ => ErrorKind::AgentUnhealthy,
        };
        self.set_health(
            id,
            HealthState::Unhealthy,
            Some(reason),
            detail.clone(),
            now,
        );
        // Out of service before its tasks move, so that none is placed straight back on it.
        let status = if managed {
            AgentStatus::Recovering
        } else {
            AgentStatus::Unhealthy
        };
        self.set_agent_status(id, status, now);
        self.emit(
            now,
            EventKind::AgentFailed,
            swarm_id,
            Some(id),
            None,
            format!("{detail}; {} task(s) taken back", held.len()),
        );
        for task in held {
            match self.tasks[&task].task.state {
                TaskState::Running { .. } => {
                    let attempt = self.tasks[&task].task.attempts;
                    let error = TaskError {
                        kind,
                        message: format!("agent {id}: {detail}"),
                        retryable: true,
                        agent_id: Some(id),
                        attempt: Some(attempt),
                    };
                    self.fail_attempt(task, error, now);
                }
                _ => self.requeue(task, "its agent is down", now),
            }
        }
        if managed {
            self.plan_recovery(id, reason != HealthReason::ProcessExited, now);
        }
        self.dispatch(now);
    }

    /// The next rung of a managed agent's recovery ladder: a restart after a backoff, or, after
    /// too many restarts in a row, giving up. `kill`: its process may still run and must be
    /// stopped first.
    fn plan_recovery(&mut self, id: AgentId, kill: bool, now: Timestamp) {
        let entry = self.agents.get_mut(&id).expect("agent");
        let swarm_id = entry.agent.swarm_id;
        let policy = self.swarms[&swarm_id].swarm.config.recovery.clone();
        let wanted = entry
            .agent
            .managed
            .as_ref()
            .is_some_and(|m| m.desired == Desired::Running);
        let r = &mut entry.agent.health.recovery;
        if r.last_restart_at
            .is_some_and(|t| now.since(t) >= policy.stable_after)
        {
            r.restarts = 0;
        }
        if kill {
            self.out.effects.push(Effect::StopAgent(id, true));
        }
        let entry = self.agents.get_mut(&id).expect("agent");
        let r = &mut entry.agent.health.recovery;
        if !wanted {
            r.next_at = None;
            self.set_agent_status(id, AgentStatus::Failed, now);
            return;
        }
        if !policy.restart || r.restarts >= policy.give_up_after {
            let restarts = r.restarts;
            r.next_at = None;
            r.gave_up = true;
            self.set_agent_status(id, AgentStatus::Failed, now);
            let detail = if policy.restart {
                format!(
                    "gave up after {restarts} restart(s) in a row; its pool starts a replacement"
                )
            } else {
                "restarts are off for this swarm; it stays failed".to_owned()
            };
            self.set_health(
                id,
                HealthState::Unhealthy,
                Some(HealthReason::GaveUp),
                detail,
                now,
            );
            self.prune_given_up(id, now);
            return;
        }
        let n = r.restarts;
        let wait = policy.backoff(n);
        let at = now + wait;
        r.next_at = Some(at);
        self.timers.insert(at, Timer::AgentRestart(id));
        self.mark_agent(id);
        self.emit(
            now,
            EventKind::AgentRecovering,
            swarm_id,
            Some(id),
            None,
            format!(
                "restart {} of at most {} in {:.1}s",
                n + 1,
                policy.give_up_after,
                wait.as_secs_f64()
            ),
        );
    }

    /// Keeps the last few agents recovery gave up on in `id`'s pool, for inspection; older
    /// ones are removed, so that a template that always fails does not pile up failed agents.
    fn prune_given_up(&mut self, id: AgentId, now: Timestamp) {
        const KEPT: usize = 3;
        let a = &self.agents[&id].agent;
        let (swarm_id, pool) = (a.swarm_id, a.agent_type.clone());
        let mut given_up: Vec<(Timestamp, AgentId)> = self.swarms[&swarm_id]
            .agents
            .iter()
            .map(|x| &self.agents[x].agent)
            .filter(|x| x.agent_type == pool && x.managed.is_some() && x.health.recovery.gave_up)
            .map(|x| (x.health.since.unwrap_or(x.registered_at), x.id))
            .collect();
        given_up.sort();
        let excess = given_up.len().saturating_sub(KEPT);
        for (_, old) in given_up.into_iter().take(excess) {
            let _ = self.unregister_agent(old, now);
        }
    }

    /// A scheduled restart is due.
    pub(super) fn restart_timer(&mut self, id: AgentId, now: Timestamp) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        let due = entry
            .agent
            .health
            .recovery
            .next_at
            .is_some_and(|at| at <= now);
        let wanted = entry
            .agent
            .managed
            .as_ref()
            .is_some_and(|m| m.desired == Desired::Running);
        if !due || entry.agent.status != AgentStatus::Recovering || !wanted {
            return;
        }
        let rollback_after = self.swarms[&entry.agent.swarm_id]
            .swarm
            .config
            .recovery
            .rollback_after;
        let latest = entry.agent.checkpoints.last().map(|c| c.id);
        let r = &mut entry.agent.health.recovery;
        r.next_at = None;
        let rung = r.restarts;
        r.restarts += 1;
        r.last_restart_at = Some(now);
        let swarm_id = entry.agent.swarm_id;
        self.set_agent_status(id, AgentStatus::Pending, now);
        self.mark_agent(id);
        match latest {
            // Restarting alone has not helped: back to the last known good state first.
            Some(checkpoint) if rollback_after > 0 && rung >= rollback_after => {
                self.emit(
                    now,
                    EventKind::AgentRollback,
                    swarm_id,
                    Some(id),
                    None,
                    format!(
                        "restart {} in a row: rolling back to checkpoint {checkpoint} first",
                        rung + 1
                    ),
                );
                self.out.effects.push(Effect::RollbackAgent(id, checkpoint));
            }
            _ => self.out.effects.push(Effect::StartAgent(id)),
        }
    }

    /// A user started or stopped a managed agent: the ladder starts over.
    pub(super) fn reset_recovery(&mut self, id: AgentId) {
        if let Some(e) = self.agents.get_mut(&id) {
            let r = &mut e.agent.health.recovery;
            r.next_at = None;
            r.restarts = 0;
            r.gave_up = false;
        }
    }
}

/// Whether the agent still holds the task that made it degraded (a stale marker is not).
fn holds_stuck(a: &Agent) -> bool {
    a.health
        .stuck
        .is_some_and(|(t, _)| a.current_tasks.contains(&t))
}

fn stuck_detail(reason: HealthReason, task: TaskId, typical_ms: Option<f64>) -> String {
    match reason {
        HealthReason::SlowTask => format!(
            "task {task} runs far longer than its usual {:.1}s",
            typical_ms.unwrap_or(0.0) / 1000.0
        ),
        _ => format!("task {task} reported no progress for too long"),
    }
}
