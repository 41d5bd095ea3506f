//! Time-driven rules: lease expiry, attempt timeouts, retry backoff, deadlines, and placed
//! tasks that their agent never took. [`Fleet::tick`] fires every timer that is due.
//!
//! Timers are kept in one ordered set. Entries are never updated in place: a lease renewed by
//! a heartbeat keeps its old entry, and when that entry fires the real lease is checked and the
//! entry re-armed at the new expiry. Stale entries of any kind are recognised and ignored, so a
//! heartbeat costs no timer work at all.

use std::collections::BTreeSet;

use super::Fleet;
use crate::agent::AgentStatus;
use crate::ids::{AgentId, MessageId, SwarmId, TaskId};
use crate::task::{ErrorKind, TaskError, TaskState};
use crate::time::Timestamp;

/// Something that must be looked at by a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timer {
    /// The agent's lease may have lapsed.
    AgentLease(AgentId),
    /// The task's attempt (the number) may have run past its timeout.
    TaskTimeout(TaskId, u32),
    /// The task's retry backoff has passed.
    TaskRetry(TaskId),
    /// The task's deadline has come.
    TaskDeadline(TaskId),
    /// The task was placed on the agent at that instant; it may not have been taken.
    AssignExpiry(TaskId, AgentId, Timestamp),
    /// The agent's open circuit breaker may half-open.
    BreakerHalfOpen(AgentId),
    /// A scheduled restart of the managed agent may be due.
    AgentRestart(AgentId),
    /// The attempt may be running far longer than its agent's usual time.
    SlowTask(TaskId, u32),
    /// The attempt may have reported no progress for too long.
    NoProgress(TaskId, u32),
    /// The task waited long enough in the agent's local queue for it (affinity).
    LocalExpiry(TaskId, AgentId),
    /// The ring's token (of that generation) may have waited too long for its holder.
    RingToken(SwarmId, u64),
    /// A round of the mesh's membership gossip.
    Gossip(SwarmId),
    /// The message (at that delivery) may not have been acknowledged in time.
    MessageAck(MessageId, u32),
    /// The message's wait before its next delivery is over.
    MessageRetry(MessageId),
    /// The message's time to live may have run out.
    MessageExpiry(MessageId),
    /// The request may have waited for its response long enough.
    RequestTimeout(MessageId),
}

/// The pending timers, soonest first.
#[derive(Debug, Default)]
pub(super) struct Timers(BTreeSet<(Timestamp, Timer)>);

impl Timers {
    pub(super) fn insert(&mut self, at: Timestamp, timer: Timer) {
        self.0.insert((at, timer));
    }

    /// Forgets a timer that can no longer matter.
    pub(super) fn remove(&mut self, at: Timestamp, timer: Timer) {
        self.0.remove(&(at, timer));
    }

    /// Keeps only the timers `keep` accepts (a scan of every timer: for rare, wholesale
    /// changes such as releasing a swarm).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Timer) -> bool) {
        self.0.retain(|(_, t)| keep(t));
    }

    fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, Timer)> {
        match self.0.first() {
            Some(&(at, _)) if at <= now => self.0.pop_first(),
            _ => None,
        }
    }

    /// When the next timer is due, if any.
    fn next(&self) -> Option<Timestamp> {
        self.0.first().map(|(at, _)| *at)
    }
}

impl Fleet {
    /// Fires every timer due at `now`: expires lapsed leases (their tasks go back to the queue
    /// or, out of attempts, to `dead`), times out attempts, releases retries whose backoff has
    /// passed, fails tasks past their deadline, and takes back placed tasks never taken.
    pub fn tick(&mut self, now: Timestamp) {
        self.tick_metrics(now);
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::AgentLease(id) => self.lease_timer(id, now),
                Timer::TaskTimeout(id, attempt) => self.timeout_timer(id, attempt, now),
                Timer::TaskRetry(id) => self.retry_timer(id, now),
                Timer::TaskDeadline(id) => self.deadline_timer(id, now),
                Timer::AssignExpiry(id, agent, at) => self.assign_expiry_timer(id, agent, at, now),
                Timer::BreakerHalfOpen(id) => self.breaker_timer(id, now),
                Timer::AgentRestart(id) => self.restart_timer(id, now),
                Timer::SlowTask(id, attempt) => self.slow_task_timer(id, attempt, now),
                Timer::NoProgress(id, attempt) => self.no_progress_timer(id, attempt, now),
                Timer::LocalExpiry(id, agent) => self.local_expiry_timer(id, agent),
                Timer::RingToken(swarm, generation) => self.token_timer(swarm, generation, now),
                Timer::Gossip(swarm) => self.gossip_timer(swarm, now),
                Timer::MessageAck(id, n) => self.message_ack_timer(id, n, now),
                Timer::MessageRetry(id) => self.message_retry_timer(id, now),
                Timer::MessageExpiry(id) => self.message_expiry_timer(id, now),
                Timer::RequestTimeout(id) => self.request_timeout_timer(id, now),
            }
        }
        self.evict(now);
        self.hand_out_lost_tokens(now);
        self.dispatch(now);
    }

    /// When [`Fleet::tick`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    fn lease_timer(&mut self, id: AgentId, now: Timestamp) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        // Unhealthy already, or not living by its lease (paused, exec-mode, no process): the
        // timer is disarmed, and armed again by `arm_lease` when that changes.
        if entry.agent.status == AgentStatus::Unhealthy || !super::agents::needs_lease(&entry.agent)
        {
            entry.lease_timer_armed = false;
            return;
        }
        if entry.agent.lease_until > now {
            let at = entry.agent.lease_until;
            self.timers.insert(at, Timer::AgentLease(id));
            return;
        }
        entry.lease_timer_armed = false;
        self.expire_agent(id, now);
    }

    /// Gives an agent a fresh lease from `now` and makes sure its lease timer runs.
    pub(super) fn arm_lease(&mut self, id: AgentId, now: Timestamp) {
        let Some(entry) = self.agents.get_mut(&id) else {
            return;
        };
        let lease = self.swarms[&entry.agent.swarm_id]
            .swarm
            .config
            .lease_duration();
        entry.agent.lease_until = now + lease;
        if !entry.lease_timer_armed {
            entry.lease_timer_armed = true;
            self.timers.insert(now + lease, Timer::AgentLease(id));
        }
    }

    /// An agent showed no sign of life for its whole lease: it is down (unhealthy, its tasks
    /// taken back; a managed one is killed and restarted).
    fn expire_agent(&mut self, id: AgentId, now: Timestamp) {
        let silent_for = now.since(self.agents[&id].agent.last_heartbeat_at);
        self.agent_down(
            id,
            crate::health::HealthReason::MissedHeartbeats,
            format!(
                "missed heartbeats: no sign of life for {:.1}s",
                silent_for.as_secs_f64()
            ),
            now,
        );
    }

    fn timeout_timer(&mut self, id: TaskId, attempt: u32, now: Timestamp) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let TaskState::Running {
            agent_id,
            started_at,
            timeout_at,
        } = entry.task.state
        else {
            return;
        };
        if entry.task.attempts != attempt || timeout_at > now {
            return;
        }
        let error = TaskError {
            kind: ErrorKind::Timeout,
            message: format!(
                "attempt {attempt} ran for {:.1}s, past its timeout of {:.1}s",
                now.since(started_at).as_secs_f64(),
                entry.task.timeout.as_secs_f64()
            ),
            retryable: true,
            agent_id: Some(agent_id),
            attempt: Some(attempt),
        };
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.agent.tasks_failed += 1;
        }
        let ran_for = now.since(started_at);
        self.fail_attempt(id, error, now);
        self.record_outcome(agent_id, id, false, Some(ran_for), now);
    }

    fn retry_timer(&mut self, id: TaskId, now: Timestamp) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        if let TaskState::Queued {
            run_after: Some(at),
            ..
        } = entry.task.state
            && at <= now
        {
            // It enters the ready queue now: behind the tasks that were ready before it.
            self.transition(
                id,
                TaskState::Queued {
                    queued_at: now,
                    run_after: None,
                },
                now,
            );
        }
    }

    fn deadline_timer(&mut self, id: TaskId, now: Timestamp) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let Some(deadline) = entry.task.deadline else {
            return;
        };
        if deadline > now || entry.task.status().is_terminal() {
            return;
        }
        let agent_id = entry.task.state.agent_id();
        let error = TaskError {
            kind: ErrorKind::DeadlineExceeded,
            message: format!(
                "deadline {deadline} passed while the task was {}",
                entry.task.status()
            ),
            retryable: false,
            agent_id,
            attempt: agent_id.map(|_| entry.task.attempts),
        };
        self.fail_task_for_good(id, error, now);
    }

    fn assign_expiry_timer(
        &mut self,
        id: TaskId,
        agent: AgentId,
        placed: Timestamp,
        now: Timestamp,
    ) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        // Only the placement this timer was set for: the task may have been placed again since.
        if let TaskState::Assigned {
            agent_id,
            assigned_at,
        } = entry.task.state
            && agent_id == agent
            && assigned_at == placed
        {
            self.requeue(id, "its agent did not take it within one lease", now);
        }
    }
}
