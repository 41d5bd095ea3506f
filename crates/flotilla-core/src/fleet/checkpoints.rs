//! Checkpoint commands: an agent's reported state, checkpoints taken and deleted (with
//! retention), and rollback to one.
//!
//! The driver makes the workspace snapshot (I/O) before [`Fleet::record_checkpoint`], and
//! discards the snapshots of the checkpoints a command evicts or deletes (returned to it) after
//! the command's changes are durable.

use super::Fleet;
use crate::agent::{AgentStatus, Desired};
use crate::changes::Effect;
use crate::checkpoint::{Checkpoint, CheckpointRef, DEFAULT_KEEP, TaskContext};
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, CheckpointId};
use crate::json::Json;
use crate::time::Timestamp;

impl Fleet {
    /// Records the state document an agent reports about itself.
    pub fn put_agent_state(
        &mut self,
        id: AgentId,
        state: Json,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        if !self.agents.contains_key(&id) {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        }
        if state.len() > self.limits.max_payload_bytes {
            return Err(CoreError::TooLarge(format!(
                "the state is {} bytes; at most {} are allowed",
                state.len(),
                self.limits.max_payload_bytes
            )));
        }
        self.out.agent_states.push((id, state, now));
        Ok(())
    }

    /// The tasks an agent holds, as a checkpoint records them.
    pub fn task_context(&self, id: AgentId) -> Result<Vec<TaskContext>, CoreError> {
        let Some(entry) = self.agents.get(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        Ok(entry
            .agent
            .current_tasks
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .map(|t| TaskContext {
                task_id: t.task.id,
                task_type: t.task.task_type.clone(),
                attempt: t.task.attempts,
                payload: t.task.payload.clone(),
                progress: t.task.progress.clone(),
            })
            .collect())
    }

    /// How many checkpoints an agent keeps: its pool's policy, else the default.
    fn checkpoints_kept(&self, id: AgentId) -> usize {
        self.template_of(id)
            .map_or(DEFAULT_KEEP, |(_, p)| p.checkpoints.keep) as usize
    }

    /// Records a checkpoint taken of its agent; the oldest beyond the retention are deleted.
    /// Returns the workspace snapshots of the deleted ones, for the driver to discard.
    pub fn record_checkpoint(
        &mut self,
        checkpoint: Checkpoint,
        now: Timestamp,
    ) -> Result<Vec<Json>, CoreError> {
        let id = checkpoint.agent_id;
        let keep = self.checkpoints_kept(id);
        let Some(entry) = self.agents.get_mut(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        let swarm_id = entry.agent.swarm_id;
        entry.agent.checkpoints.push(CheckpointRef {
            id: checkpoint.id,
            created_at: checkpoint.created_at,
            trigger: checkpoint.trigger,
            workspace: checkpoint.workspace.clone(),
        });
        let excess = entry.agent.checkpoints.len().saturating_sub(keep);
        // The checkpoint a rollback in progress restores is kept until it is restored.
        let pinned = entry.agent.health.recovery.rollback_to;
        let mut evicted = Vec::new();
        let mut kept = Vec::new();
        for c in entry.agent.checkpoints.drain(..) {
            if evicted.len() < excess && Some(c.id) != pinned {
                evicted.push(c);
            } else {
                kept.push(c);
            }
        }
        entry.agent.checkpoints = kept;
        let detail = format!(
            "checkpoint {} ({}){}",
            checkpoint.id,
            checkpoint.trigger.as_str(),
            if checkpoint.description.is_empty() {
                String::new()
            } else {
                format!(": {}", checkpoint.description)
            }
        );
        self.mark_agent(id);
        self.emit(
            now,
            EventKind::CheckpointCreated,
            swarm_id,
            Some(id),
            None,
            detail,
        );
        self.out.checkpoints.push(checkpoint);
        let mut discard = Vec::new();
        for old in evicted {
            self.out.deleted_checkpoints.push(old.id);
            self.emit(
                now,
                EventKind::CheckpointDeleted,
                swarm_id,
                Some(id),
                None,
                format!("checkpoint {} evicted (keeping the last {keep})", old.id),
            );
            discard.extend(old.workspace);
        }
        Ok(discard)
    }

    /// Deletes one of an agent's checkpoints; returns its workspace snapshot to discard.
    pub fn delete_checkpoint(
        &mut self,
        id: AgentId,
        checkpoint: CheckpointId,
        now: Timestamp,
    ) -> Result<Option<Json>, CoreError> {
        let Some(entry) = self.agents.get_mut(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        let Some(at) = entry
            .agent
            .checkpoints
            .iter()
            .position(|c| c.id == checkpoint)
        else {
            return Err(CoreError::not_found(format!(
                "agent {} has no checkpoint {checkpoint}",
                entry.agent.name
            )));
        };
        if entry.agent.health.recovery.rollback_to == Some(checkpoint) {
            return Err(CoreError::conflict(format!(
                "checkpoint {checkpoint} is being restored to agent {}; delete it once it is back",
                entry.agent.name
            )));
        }
        let gone = entry.agent.checkpoints.remove(at);
        let swarm_id = entry.agent.swarm_id;
        self.mark_agent(id);
        self.out.deleted_checkpoints.push(checkpoint);
        self.emit(
            now,
            EventKind::CheckpointDeleted,
            swarm_id,
            Some(id),
            None,
            format!("checkpoint {checkpoint} deleted"),
        );
        Ok(gone.workspace)
    }

    /// Records how the restore of a rollback went (the driver restores, then starts the agent
    /// either way): an event, and a warning alert when it failed.
    pub fn rollback_restored(
        &mut self,
        id: AgentId,
        checkpoint: CheckpointId,
        outcome: Result<String, String>,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let Some(entry) = self.agents.get(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        let (swarm_id, name) = (entry.agent.swarm_id, entry.agent.name.clone());
        match outcome {
            Ok(words) => self.emit(
                now,
                EventKind::AgentRollback,
                swarm_id,
                Some(id),
                None,
                format!("checkpoint {checkpoint}: {words}"),
            ),
            Err(why) => {
                let detail = format!(
                    "checkpoint {checkpoint} could not be restored ({why}); started as it was"
                );
                self.emit(
                    now,
                    EventKind::AgentRollback,
                    swarm_id,
                    Some(id),
                    None,
                    detail.clone(),
                );
                self.emit(
                    now,
                    EventKind::AlertWarning,
                    swarm_id,
                    Some(id),
                    None,
                    format!("agent {name}: {detail}"),
                );
            }
        }
        Ok(())
    }

    /// Managed agents in service whose pool takes a checkpoint every so often and whose last
    /// one (or start) is at least that old.
    pub fn checkpoints_due(&self, now: Timestamp) -> Vec<AgentId> {
        let mut due = Vec::new();
        for s in self.swarms.values() {
            for pool in s.pools.values() {
                let Some(every) = pool.checkpoints.every else {
                    continue;
                };
                for id in &s.agents {
                    let a = &self.agents[id].agent;
                    let Some(m) = &a.managed else { continue };
                    if a.agent_type != pool.name
                        || !matches!(a.status, AgentStatus::Idle | AgentStatus::Busy)
                        || a.health.recovery.rollback_to.is_some()
                    {
                        continue;
                    }
                    let since = a
                        .checkpoints
                        .last()
                        .map(|c| c.created_at)
                        .into_iter()
                        .chain(m.started_at)
                        .max();
                    if since.is_some_and(|t| now.since(t) >= every) {
                        due.push(*id);
                    }
                }
            }
        }
        due.sort();
        due
    }

    /// Rolls a managed agent back to a checkpoint (its latest when `None`): the driver stops
    /// it, restores the checkpoint's workspace and state, and starts it again. Its tasks go
    /// back to the queue when it stops, without costing an attempt.
    pub fn rollback(
        &mut self,
        id: AgentId,
        checkpoint: Option<CheckpointId>,
        now: Timestamp,
    ) -> Result<CheckpointId, CoreError> {
        let Some(entry) = self.agents.get(&id) else {
            return Err(CoreError::not_found(format!("agent {id} not found")));
        };
        let a = &entry.agent;
        if a.managed.is_none() {
            return Err(CoreError::conflict(format!(
                "agent {} is a connected agent, not started by Flotilla: it cannot be rolled back",
                a.name
            )));
        }
        let target = match checkpoint {
            Some(c) if a.checkpoints.iter().any(|r| r.id == c) => c,
            Some(c) => {
                return Err(CoreError::not_found(format!(
                    "agent {} has no checkpoint {c}",
                    a.name
                )));
            }
            None => match a.checkpoints.last() {
                Some(r) => r.id,
                None => {
                    return Err(CoreError::conflict(format!(
                        "agent {} has no checkpoint to roll back to; take one first",
                        a.name
                    )));
                }
            },
        };
        let (swarm_id, status) = (a.swarm_id, a.status);
        self.stop_polling(id);
        if let Some(m) = self
            .agents
            .get_mut(&id)
            .and_then(|e| e.agent.managed.as_mut())
        {
            m.desired = Desired::Running;
        }
        self.reset_recovery(id);
        // Until it is back it takes no task and no checkpoint, and the target stays.
        if let Some(e) = self.agents.get_mut(&id) {
            e.agent.health.recovery.rollback_to = Some(target);
        }
        if matches!(
            status,
            AgentStatus::Stopped | AgentStatus::Failed | AgentStatus::Recovering
        ) {
            self.set_agent_status(id, AgentStatus::Pending, now);
        }
        self.mark_agent(id);
        self.emit(
            now,
            EventKind::AgentRollback,
            swarm_id,
            Some(id),
            None,
            format!("rolling back to checkpoint {target}"),
        );
        self.out.effects.push(Effect::RollbackAgent(id, target));
        Ok(target)
    }
}
