//! Swarm commands: create, update, delete.

use super::Fleet;
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::SwarmId;
use crate::swarm::{DEFAULT_SWARM, Swarm, SwarmSpec, SwarmStatus, SwarmUpdate, validate_name};
use crate::task::TaskState;
use crate::time::Timestamp;

impl Fleet {
    /// Creates a swarm with the given id.
    pub fn create_swarm(
        &mut self,
        id: SwarmId,
        spec: SwarmSpec,
        now: Timestamp,
    ) -> Result<&Swarm, CoreError> {
        validate_name("swarm", &spec.name)?;
        spec.config.validate()?;
        if spec.description.len() > 10_000 {
            return Err(CoreError::invalid(
                "description must be at most 10000 bytes",
            ));
        }
        if self.swarm_names.contains_key(&spec.name) {
            return Err(CoreError::conflict(format!(
                "a swarm named {:?} already exists; choose another name",
                spec.name
            )));
        }
        if self.swarms.contains_key(&id) {
            return Err(CoreError::conflict(format!("swarm id {id} is taken")));
        }
        let swarm = Swarm {
            id,
            name: spec.name,
            description: spec.description,
            topology: spec.topology,
            config: spec.config,
            status: SwarmStatus::Inactive,
            leader_agent_id: None,
            created_at: now,
            updated_at: now,
        };
        let detail = format!("created swarm {:?}", swarm.name);
        self.insert_swarm(swarm);
        self.mark_swarm(id);
        self.emit(now, EventKind::SwarmCreated, id, None, None, detail);
        Ok(&self.swarms[&id].swarm)
    }

    /// Creates the `default` swarm with the given id unless it exists. Returns whether it was
    /// created.
    pub fn ensure_default_swarm(&mut self, id: SwarmId, now: Timestamp) -> bool {
        if self.swarm_names.contains_key(DEFAULT_SWARM) {
            return false;
        }
        let spec = SwarmSpec {
            name: DEFAULT_SWARM.to_owned(),
            description: "The swarm tasks and agents go to when none is named.".to_owned(),
            ..SwarmSpec::default()
        };
        self.create_swarm(id, spec, now).is_ok()
    }

    /// Changes a swarm's name, description, topology or configuration.
    pub fn update_swarm(
        &mut self,
        reference: &str,
        update: SwarmUpdate,
        now: Timestamp,
    ) -> Result<&Swarm, CoreError> {
        let id = self.resolve_swarm(reference)?;
        let current = &self.swarms[&id].swarm;
        if let Some(name) = &update.name
            && *name != current.name
        {
            validate_name("swarm", name)?;
            if current.name == DEFAULT_SWARM {
                return Err(CoreError::invalid("the default swarm cannot be renamed"));
            }
            if self.swarm_names.contains_key(name) {
                return Err(CoreError::conflict(format!(
                    "a swarm named {name:?} already exists"
                )));
            }
        }
        if let Some(config) = &update.config {
            config.validate()?;
        }
        if update
            .description
            .as_ref()
            .is_some_and(|d| d.len() > 10_000)
        {
            return Err(CoreError::invalid(
                "description must be at most 10000 bytes",
            ));
        }
        let entry = self.swarms.get_mut(&id).expect("resolved swarm");
        let swarm = &mut entry.swarm;
        let mut changed = Vec::new();
        if let Some(name) = update.name
            && name != swarm.name
        {
            changed.push(format!("name {:?} -> {name:?}", swarm.name));
            self.swarm_names.remove(&swarm.name);
            self.swarm_names.insert(name.clone(), id);
            swarm.name = name;
        }
        if let Some(d) = update.description {
            swarm.description = d;
            changed.push("description".to_owned());
        }
        let mut topology_from = None;
        if let Some(t) = update.topology
            && t != swarm.topology
        {
            changed.push(format!(
                "topology {} -> {}",
                swarm.topology.as_str(),
                t.as_str()
            ));
            topology_from = Some(swarm.topology);
            swarm.topology = t;
        }
        let mut restructure = topology_from.is_some();
        if let Some(c) = update.config {
            restructure |= c.topology != swarm.config.topology;
            swarm.config = c;
            changed.push("config".to_owned());
        }
        swarm.updated_at = now;
        self.mark_swarm(id);
        self.emit(
            now,
            EventKind::SwarmUpdated,
            id,
            None,
            None,
            changed.join(", "),
        );
        if let Some(from) = topology_from {
            let to = self.swarms[&id].swarm.topology;
            self.emit(
                now,
                EventKind::TopologyChanged,
                id,
                None,
                None,
                format!("{} -> {}", from.as_str(), to.as_str()),
            );
        }
        if restructure {
            self.mark_topology(id);
            self.dispatch(now);
        }
        // A new min_agents may change the status.
        self.refresh_swarm_status(id, now);
        Ok(&self.swarms[&id].swarm)
    }

    /// Deletes a swarm. Without `force` it must have no agents and no unfinished tasks; with
    /// `force` its unfinished tasks are cancelled and its agents removed first.
    pub fn delete_swarm(
        &mut self,
        reference: &str,
        force: bool,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        let id = self.resolve_swarm(reference)?;
        let entry = &self.swarms[&id];
        if entry.swarm.name == DEFAULT_SWARM {
            return Err(CoreError::conflict("the default swarm cannot be deleted"));
        }
        let c = &entry.task_counts;
        let unfinished = c.blocked + c.queued + c.delayed + c.assigned + c.running;
        let agents = entry.agents.len();
        if !force && (unfinished > 0 || agents > 0) {
            return Err(CoreError::conflict(format!(
                "swarm {:?} has {agents} agent(s) and {unfinished} unfinished task(s); \
                 remove them first or delete with force (?force=true, `--force`)",
                entry.swarm.name
            )));
        }
        let agent_ids: Vec<_> = entry.agents.iter().copied().collect();
        self.swarms
            .get_mut(&id)
            .expect("resolved swarm")
            .swarm
            .status = SwarmStatus::Stopping;
        for agent in agent_ids {
            self.unregister_agent(agent, now)?;
        }
        let task_ids: Vec<_> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.task.swarm_id == id)
            .map(|(t, _)| *t)
            .collect();
        for t in &task_ids {
            if !self.tasks[t].task.status().is_terminal() {
                let state = TaskState::Cancelled {
                    reason: Some("swarm deleted".to_owned()),
                    completed_at: now,
                };
                self.transition(*t, state, now);
            }
        }
        for t in task_ids {
            if let Some(e) = self.tasks.remove(&t)
                && let Some(key) = e.task.idempotency_key
            {
                self.idempotency.remove(&(id, key));
            }
        }
        let entry = self.swarms.remove(&id).expect("resolved swarm");
        self.swarm_names.remove(&entry.swarm.name);
        self.out.swarms.retain(|s| *s != id);
        self.out.tasks.retain(|t| self.tasks.contains_key(t));
        self.out.deleted_swarms.push(id);
        self.emit(
            now,
            EventKind::SwarmDeleted,
            id,
            None,
            None,
            format!("deleted swarm {:?}", entry.swarm.name),
        );
        Ok(())
    }
}
