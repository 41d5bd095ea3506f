//! Each swarm's topology kept in step with its members: roles and leader elections, the ring's
//! token and ordered tasks, the mesh's membership gossip, and who may take a delegated subtask.
//!
//! Membership or liveness changes mark the swarm's topology stale ([`Fleet::mark_topology`]);
//! the next dispatch round (every command that changes anything ends with one, and so does every
//! tick) rebuilds its graph with [`topology::build`], records a `leader_election` event when the
//! leader changed, writes changed roles to the agents and moves the ring's token off an agent
//! that left service. An election therefore happens in the same command that saw the leader
//! fail (a lapsed lease, an exited process), or at the latest at the next tick.
//!
//! Ordered tasks (`ordered: true`) run one at a time per swarm, in the order they were
//! submitted: the swarm keeps its unfinished ones in that order and only the first may start
//! ([`Fleet::ordered_candidate`]). In a ring only the token's holder may take it; the token moves
//! on when the holder's attempt ends, or when the task waited `token_timeout` for it.

use std::collections::HashMap;

use super::{Fleet, Timer, dispatch::in_service};
use crate::agent::{Agent, AgentRole, AgentStatus, has_all};
use crate::error::CoreError;
use crate::event::EventKind;
use crate::health::HealthState;
use crate::ids::{AgentId, SwarmId, TaskId};
use crate::queue::Lane;
use crate::swarm::Topology;
use crate::time::Timestamp;
use crate::topology::{self, Graph, Member, RingOrder, TokenView, TopologyNode, TopologyView};

/// A swarm's topology state beside its graph.
#[derive(Debug, Default)]
pub(super) struct SwarmTopology {
    /// The graph as last built.
    pub(super) graph: Graph,
    /// A refresh is due at the next dispatch round.
    pub(super) stale: bool,
    /// The refresh must rebuild the whole graph.
    rebuild: bool,
    /// Agents that joined, left, or became alive or not since the last refresh.
    changed: Vec<AgentId>,
    /// The ring's token: who holds it.
    pub(super) token: Option<AgentId>,
    /// Bumped at every pass, so a timer armed for an earlier holder is recognised.
    token_generation: u64,
    token_passes: u64,
    /// When the token times out, if an ordered task waits for its holder.
    token_deadline: Option<Timestamp>,
    /// Unfinished ordered tasks by submission: the first is the one whose turn it is.
    pub(super) ordered: std::collections::BTreeSet<(Timestamp, TaskId)>,
    /// Bumped when the set of alive members changes.
    membership_version: u64,
    /// The membership version each member has heard of (mesh gossip).
    known: HashMap<AgentId, u64>,
    /// A gossip round is scheduled.
    gossip_armed: bool,
}

/// Whether an agent can hold a role and relay messages.
fn alive(a: &Agent) -> bool {
    matches!(
        a.status,
        AgentStatus::Idle | AgentStatus::Busy | AgentStatus::Paused
    ) && a.health.state != HealthState::Unhealthy
}

impl Fleet {
    /// The swarm's topology must be rebuilt at the next dispatch round.
    pub(super) fn mark_topology(&mut self, swarm_id: SwarmId) {
        if let Some(s) = self.swarms.get_mut(&swarm_id) {
            s.topo.rebuild = true;
            if !s.topo.stale {
                s.topo.stale = true;
                self.out.topology.push(swarm_id);
            }
        }
    }

    /// An agent of the swarm joined, left, or became alive or not: the topology is brought up
    /// to date at the next dispatch round, by a patch when only a worker changed.
    pub(super) fn note_member(&mut self, swarm_id: SwarmId, agent: AgentId) {
        if let Some(s) = self.swarms.get_mut(&swarm_id) {
            if s.topo.changed.len() < 64 {
                s.topo.changed.push(agent);
            } else {
                s.topo.rebuild = true;
            }
            if !s.topo.stale {
                s.topo.stale = true;
                self.out.topology.push(swarm_id);
            }
        }
    }

    /// Rebuilds the topologies marked stale.
    pub(super) fn refresh_topologies(&mut self, now: Timestamp) {
        while let Some(id) = self.out.topology.pop() {
            if self.swarms.contains_key(&id) {
                self.refresh_topology(id, now);
            }
        }
    }

    fn refresh_topology(&mut self, swarm_id: SwarmId, now: Timestamp) {
        let s = self.swarms.get_mut(&swarm_id).expect("swarm");
        s.topo.stale = false;
        let rebuild = std::mem::take(&mut s.topo.rebuild);
        let changed = std::mem::take(&mut s.topo.changed);
        if rebuild || !self.patch_topology(swarm_id, &changed) {
            self.rebuild_topology(swarm_id, now);
        }
        let s = self.swarms.get_mut(&swarm_id).expect("swarm");
        s.topo.membership_version += 1;
        self.spread_membership(swarm_id, now);
        self.refresh_token(swarm_id, now);
        self.refresh_swarm_status(swarm_id, now);
        // Delegated and ordered tasks may have someone new to take them.
        if !self.out.dispatch.contains(&swarm_id) {
            self.out.dispatch.push(swarm_id);
        }
    }

    /// Brings a star or a full mesh up to date when only workers changed (the common case in
    /// a big swarm: one agent failing or coming back), in time proportional to the change.
    /// Returns false when a rebuild is needed.
    fn patch_topology(&mut self, swarm_id: SwarmId, changed: &[AgentId]) -> bool {
        let s = &self.swarms[&swarm_id];
        let g = &s.topo.graph;
        let kind = s.swarm.topology;
        // A nearest mesh small enough to be full becomes a lattice as it grows: rebuilt.
        let patchable = match kind {
            Topology::Star => true,
            Topology::Mesh => {
                s.swarm.config.topology.mesh.connection_strategy
                    == topology::ConnectionStrategy::Full
            }
            _ => false,
        };
        let Some(leader) = g.leader else {
            return false;
        };
        if !patchable || g.kind != kind {
            return false;
        }
        let coordinators = if kind == Topology::Star {
            g.coordinators()
        } else {
            vec![leader]
        };
        // A star short of coordinators promotes the next agent that comes alive: rebuilt.
        let short = kind == Topology::Star
            && coordinators.len() < s.swarm.config.topology.star.coordinator_count as usize;
        let mut updates = Vec::with_capacity(changed.len());
        for id in changed {
            if coordinators.contains(id) || *id == leader {
                return false;
            }
            let e = self.agents.get(id);
            // A newcomer asking for a senior role may be due one: rebuild.
            if e.is_some_and(|e| {
                e.agent.requested_role != AgentRole::Worker && !g.roles.contains_key(id)
            }) {
                return false;
            }
            let state = e.map(|e| alive(&e.agent));
            if short && state == Some(true) {
                return false;
            }
            updates.push((*id, state));
        }
        let mut roles_changed = Vec::new();
        let s = self.swarms.get_mut(&swarm_id).expect("swarm");
        let t = &mut s.topo;
        for (id, state) in updates {
            if !t.graph.ring.contains(&id) && state.is_some() {
                // A newcomer: at the end of the ring (it registered last).
                t.graph.ring.push(id);
            }
            match state {
                Some(true) => {
                    t.graph.alive.insert(id);
                    if kind == Topology::Star {
                        t.graph.add_star_worker(id, &coordinators);
                    } else {
                        t.graph.roles.insert(id, AgentRole::Worker);
                    }
                }
                Some(false) | None => {
                    t.graph.alive.remove(&id);
                    t.graph.drop_worker(id, state.is_some());
                }
            }
            roles_changed.push(id);
        }
        for id in roles_changed {
            if let Some(e) = self.agents.get_mut(&id)
                && e.agent.role != AgentRole::Worker
            {
                e.agent.role = AgentRole::Worker;
                self.mark_agent(id);
            }
        }
        true
    }

    /// Builds the swarm's graph from scratch, writing changed roles to the agents and
    /// recording an election when the leader changed.
    fn rebuild_topology(&mut self, swarm_id: SwarmId, now: Timestamp) {
        let s = &self.swarms[&swarm_id];
        let members: Vec<Member> = s
            .agents
            .iter()
            .filter_map(|id| self.agents.get(id))
            .map(|e| Member {
                id: e.agent.id,
                registered_at: e.agent.registered_at,
                requested: e.agent.requested_role,
                alive: alive(&e.agent),
                current: e.agent.role,
            })
            .collect();
        let kind = s.swarm.topology;
        let old_leader = s.swarm.leader_agent_id;
        let graph = topology::build(kind, &s.swarm.config.topology, &members, old_leader);
        let new_leader = graph.leader;
        // Coordinators that lost the role, and agents that gained it (the leader apart).
        let mut lost: Vec<AgentId> = members
            .iter()
            .filter(|m| m.current == AgentRole::Coordinator)
            .filter(|m| graph.roles.get(&m.id) != Some(&AgentRole::Coordinator))
            .filter(|m| Some(m.id) != new_leader)
            .map(|m| m.id)
            .collect();
        // Those that left are not members any more; their roles were in the old graph.
        let old = &s.topo.graph;
        lost.extend(
            old.roles
                .iter()
                .filter(|(id, r)| **r == AgentRole::Coordinator && !graph.roles.contains_key(id))
                .map(|(id, _)| *id),
        );
        lost.sort();
        let mut promoted: Vec<AgentId> = graph
            .roles
            .iter()
            .filter(|(id, r)| {
                **r == AgentRole::Coordinator
                    && members
                        .iter()
                        .any(|m| m.id == **id && m.current != AgentRole::Coordinator)
            })
            .map(|(id, _)| *id)
            .collect();
        promoted.sort();
        let mut changed_roles = Vec::new();
        for (id, role) in &graph.roles {
            if let Some(e) = self.agents.get_mut(id)
                && e.agent.role != *role
            {
                e.agent.role = *role;
                changed_roles.push(*id);
            }
        }
        for id in changed_roles {
            self.mark_agent(id);
        }
        let entry = self.swarms.get_mut(&swarm_id).expect("swarm");
        entry.topo.graph = graph;
        // A coordinator failing (or missing) is replaced by election too.
        let mut lost = lost.into_iter();
        for p in promoted {
            let why = match lost.next() {
                Some(l) => match self.agents.get(&l) {
                    Some(e) => format!("{} is {}", e.agent.name, e.agent.status.as_str()),
                    None => format!("{l} left"),
                },
                None => "a coordinator's place was free".to_owned(),
            };
            let detail = format!("{} elected coordinator ({why})", self.name_or(Some(p), "?"));
            self.emit(
                now,
                EventKind::LeaderElection,
                swarm_id,
                Some(p),
                None,
                detail,
            );
        }
        let entry = self.swarms.get_mut(&swarm_id).expect("swarm");
        if new_leader != old_leader {
            entry.swarm.leader_agent_id = new_leader;
            entry.swarm.updated_at = now;
            self.mark_swarm(swarm_id);
            let why = match (old_leader, old_leader.and_then(|l| self.agents.get(&l))) {
                (Some(l), None) => format!("{l} left"),
                (None, _) => "the swarm had no leader".to_owned(),
                (Some(_), Some(e)) => format!("{} is {}", e.agent.name, e.agent.status.as_str()),
            };
            let detail = match new_leader {
                Some(_) => format!(
                    "{} elected leader ({why})",
                    self.name_or(new_leader, "none")
                ),
                None => format!("no agent can lead ({why}); the swarm is degraded until one can"),
            };
            self.emit(
                now,
                EventKind::LeaderElection,
                swarm_id,
                new_leader,
                None,
                detail,
            );
        }
    }

    /// An agent's name, or `none` for no agent (the id of one no longer registered).
    fn name_or(&self, id: Option<AgentId>, none: &str) -> String {
        match id {
            Some(a) => self
                .agents
                .get(&a)
                .map_or_else(|| a.to_string(), |e| e.agent.name.clone()),
            None => none.to_owned(),
        }
    }

    // ----- admission: who may take a task of a lane -----

    /// Whether `agent` may take tasks of `lane` that need `capabilities` now. Ordered tasks
    /// are not taken through their lane but one at a time (see [`Fleet::ordered_candidate`]).
    pub(super) fn admits(&self, agent: &Agent, lane: Lane, capabilities: &[String]) -> bool {
        match lane {
            Lane::Open => true,
            Lane::Ordered => false,
            Lane::Delegated(by) => {
                let s = &self.swarms[&agent.swarm_id];
                if s.topo.graph.parent.get(&agent.id) == Some(&by) {
                    return true;
                }
                // Anyone, when none of the delegator's children in service could run it: a
                // subtask is never stranded by a change of topology, capabilities or health.
                !s.topo.graph.children_of(by).iter().any(|c| {
                    self.agents.get(c).is_some_and(|e| {
                        in_service(&e.agent) && has_all(&e.agent.capabilities, capabilities)
                    })
                })
            }
        }
    }

    // ----- ordered tasks -----

    /// An unfinished ordered task waits for its turn.
    pub(super) fn ordered_waits(&mut self, swarm: SwarmId, created_at: Timestamp, task: TaskId) {
        if let Some(s) = self.swarms.get_mut(&swarm) {
            s.topo.ordered.insert((created_at, task));
        }
    }

    /// The ordered task whose turn it is, if it is ready (queued in the swarm's queue).
    fn ordered_head_ready(&self, swarm: SwarmId) -> Option<(TaskId, crate::queue::QueueSlot)> {
        let (_, head) = self.swarms.get(&swarm)?.topo.ordered.first()?;
        let e = self.tasks.get(head)?;
        e.slot.map(|slot| (*head, slot))
    }

    /// The ordered task an agent may take now: the one whose turn it is, if it is ready, the
    /// agent can run it, it is not below the priority floor, and (in a ring) the agent holds
    /// the token.
    pub(super) fn ordered_candidate(
        &self,
        agent: &Agent,
        floor: u8,
    ) -> Option<(TaskId, crate::queue::QueueSlot)> {
        let s = &self.swarms[&agent.swarm_id];
        if s.topo.ordered.is_empty() {
            return None;
        }
        if s.swarm.topology == Topology::Ring && s.topo.token != Some(agent.id) {
            return None;
        }
        let (task, slot) = self.ordered_head_ready(agent.swarm_id)?;
        let t = &self.tasks[&task].task;
        (slot.priority() >= floor && has_all(&agent.capabilities, &t.required_capabilities))
            .then_some((task, slot))
    }

    // ----- the ring's token -----

    /// Keeps the token with an agent that can use it.
    fn refresh_token(&mut self, swarm_id: SwarmId, now: Timestamp) {
        let s = &self.swarms[&swarm_id];
        if s.swarm.topology != Topology::Ring {
            if s.topo.token.is_some() {
                let t = &mut self.swarms.get_mut(&swarm_id).expect("swarm").topo;
                t.token = None;
                t.token_deadline = None;
            }
            return;
        }
        let skip = s.swarm.config.topology.ring.skip_unhealthy;
        let holder_ok = s.topo.token.is_some_and(|h| {
            self.agents
                .get(&h)
                .is_some_and(|e| !skip || in_service(&e.agent))
        });
        if !holder_ok {
            let why = match s.topo.token.and_then(|h| self.agents.get(&h)) {
                None if s.topo.token.is_some() => "its holder left".to_owned(),
                None => "the ring formed".to_owned(),
                Some(e) => format!("{} is {}", e.agent.name, e.agent.status.as_str()),
            };
            self.pass_token(swarm_id, &why, now);
        } else {
            self.arm_token_timer(swarm_id, now);
        }
    }

    /// A ring whose token went to nobody (everyone was out of service) hands it out again
    /// once an ordered task waits: agents come back into service in ways that change no
    /// status (a breaker closing, a reported health), so every tick looks.
    pub(super) fn hand_out_lost_tokens(&mut self, now: Timestamp) {
        let lost: Vec<SwarmId> = self
            .swarms
            .iter()
            .filter(|(_, s)| {
                s.swarm.topology == Topology::Ring
                    && s.topo.token.is_none()
                    && !s.topo.ordered.is_empty()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if self.ordered_head_ready(id).is_some() {
                self.pass_token(id, "an ordered task waits", now);
            }
        }
    }

    /// Moves the token to the next agent by the ring's order.
    fn pass_token(&mut self, swarm_id: SwarmId, why: &str, now: Timestamp) {
        let s = &self.swarms[&swarm_id];
        let ring = &s.swarm.config.topology.ring;
        let from = s.topo.token;
        let usable = |id: AgentId| {
            self.agents.get(&id).is_some_and(|e| {
                if ring.skip_unhealthy {
                    in_service(&e.agent)
                } else {
                    true
                }
            })
        };
        let next = match ring.order {
            RingOrder::Sequential => s.topo.graph.next_in_ring(from, usable),
            // The least loaded, ties going to the first after the holder.
            RingOrder::Load => s
                .topo
                .graph
                .around(from)
                .filter(|id| usable(*id))
                .min_by_key(|id| {
                    let e = &self.agents[id];
                    e.agent.current_tasks.len() + e.local.len()
                }),
        };
        let detail = format!(
            "token: {} -> {} ({why})",
            self.name_or(from, "nobody"),
            self.name_or(next, "nobody")
        );
        let t = &mut self.swarms.get_mut(&swarm_id).expect("swarm").topo;
        if next == from {
            // Nobody else can take it: it stays (with nobody, until someone can), and its
            // timer starts again.
            t.token_deadline = None;
            if next.is_some() {
                self.arm_token_timer(swarm_id, now);
            }
            return;
        }
        t.token = next;
        t.token_generation += 1;
        t.token_passes += 1;
        t.token_deadline = None;
        self.emit(now, EventKind::TokenPassed, swarm_id, next, None, detail);
        if next.is_some() {
            self.arm_token_timer(swarm_id, now);
        }
        if !self.out.dispatch.contains(&swarm_id) {
            self.out.dispatch.push(swarm_id);
        }
    }

    /// Starts the token's timeout when an ordered task waits for its holder.
    pub(super) fn arm_token_timer(&mut self, swarm_id: SwarmId, now: Timestamp) {
        let Some(s) = self.swarms.get_mut(&swarm_id) else {
            return;
        };
        if s.swarm.topology != Topology::Ring || s.topo.token_deadline.is_some() {
            return;
        }
        if self.ordered_head_ready(swarm_id).is_none() {
            return;
        }
        let s = self.swarms.get_mut(&swarm_id).expect("swarm");
        if s.topo.token.is_none() {
            // Everyone was out of service when it last moved: hand it out again now that
            // an ordered task waits (nothing else would).
            self.pass_token(swarm_id, "an ordered task waits", now);
            return;
        }
        let at = now + s.swarm.config.topology.ring.token_timeout;
        s.topo.token_deadline = Some(at);
        let generation = s.topo.token_generation;
        self.timers
            .insert(at, Timer::RingToken(swarm_id, generation));
    }

    /// The token's timer fired: if the ordered task still waits for the same holder, the token
    /// moves on.
    pub(super) fn token_timer(&mut self, swarm_id: SwarmId, generation: u64, now: Timestamp) {
        let Some(s) = self.swarms.get_mut(&swarm_id) else {
            return;
        };
        if s.topo.token_generation != generation {
            return;
        }
        s.topo.token_deadline = None;
        if s.swarm.topology != Topology::Ring {
            return;
        }
        if self.ordered_head_ready(swarm_id).is_none() {
            return;
        }
        let s = &self.swarms[&swarm_id];
        let timeout = s.swarm.config.topology.ring.token_timeout;
        let why = format!(
            "{} did not take the waiting ordered task within {} ms",
            self.name_or(s.topo.token, "nobody"),
            timeout.as_millis()
        );
        self.pass_token(swarm_id, &why, now);
    }

    /// An ordered task's attempt began (the holder took it: its timeout stops) or ended (the
    /// token moves on).
    pub(super) fn ordered_attempt(&mut self, task: TaskId, started: bool, now: Timestamp) {
        let swarm_id = self.tasks[&task].task.swarm_id;
        let Some(s) = self.swarms.get_mut(&swarm_id) else {
            return;
        };
        if s.swarm.topology != Topology::Ring {
            return;
        }
        if started {
            s.topo.token_deadline = None;
            s.topo.token_generation += 1;
        } else {
            let why = format!("after ordered task {task}");
            self.pass_token(swarm_id, &why, now);
        }
    }

    // ----- mesh gossip -----

    /// The membership changed: in a mesh the changed agents' neighbours hear of it at once and
    /// the news moves one hop per gossip interval; elsewhere the coordinator tells everyone.
    fn spread_membership(&mut self, swarm_id: SwarmId, now: Timestamp) {
        let s = self.swarms.get_mut(&swarm_id).expect("swarm");
        let version = s.topo.membership_version;
        if s.swarm.topology != Topology::Mesh || s.topo.graph.full {
            // The coordinator tells everyone at once: nothing to track.
            s.topo.known.clear();
            return;
        }
        let graph = &s.topo.graph;
        s.topo.known.retain(|id, _| graph.roles.contains_key(id));
        // Those whose neighbourhood changed know first: every alive member connected to a
        // member whose liveness or connections changed. A cheap, safe approximation: members
        // that had not heard of any version yet, and the neighbours of the newest arrivals.
        let fresh: Vec<AgentId> = graph
            .ring
            .iter()
            .copied()
            .filter(|id| !s.topo.known.contains_key(id))
            .collect();
        for id in &fresh {
            s.topo.known.insert(*id, version);
            for n in s.topo.graph.neighbours(*id) {
                s.topo.known.insert(n, version);
            }
        }
        if fresh.is_empty()
            && let Some(l) = s.topo.graph.leader
        {
            s.topo.known.insert(l, version);
        }
        if !s.topo.gossip_armed {
            s.topo.gossip_armed = true;
            let at = now + s.swarm.config.topology.mesh.gossip_interval;
            self.timers.insert(at, Timer::Gossip(swarm_id));
        }
    }

    /// One gossip round: every agent learns the newest version any neighbour knows.
    pub(super) fn gossip_timer(&mut self, swarm_id: SwarmId, now: Timestamp) {
        let Some(s) = self.swarms.get_mut(&swarm_id) else {
            return;
        };
        s.topo.gossip_armed = false;
        if s.swarm.topology != Topology::Mesh || s.topo.graph.full {
            // No longer a lattice: the coordinator tells everyone at once.
            return;
        }
        let version = s.topo.membership_version;
        let g = &s.topo.graph;
        let mut learnt = Vec::new();
        for id in &g.alive {
            let mine = s.topo.known.get(id).copied().unwrap_or(0);
            if mine >= version {
                continue;
            }
            let best = g
                .neighbours(*id)
                .iter()
                .filter_map(|n| s.topo.known.get(n).copied())
                .max()
                .unwrap_or(0);
            if best > mine {
                learnt.push((*id, best));
            }
        }
        for (id, v) in learnt {
            s.topo.known.insert(id, v);
        }
        let behind = s
            .topo
            .graph
            .alive
            .iter()
            .any(|id| s.topo.known.get(id).copied().unwrap_or(0) < version);
        if behind {
            s.topo.gossip_armed = true;
            let at = now + s.swarm.config.topology.mesh.gossip_interval;
            self.timers.insert(at, Timer::Gossip(swarm_id));
        }
    }

    // ----- commands and queries -----

    /// Changes a swarm's topology (and optionally its settings) live: roles are reassigned at
    /// once, the ring's token appears or goes, tasks in flight are untouched, and a
    /// `topology_changed` event records it.
    pub fn set_topology(
        &mut self,
        reference: &str,
        kind: Topology,
        config: Option<topology::TopologyConfig>,
        now: Timestamp,
    ) -> Result<TopologyView, CoreError> {
        let id = self.resolve_swarm(reference)?;
        if let Some(c) = &config {
            c.validate()?;
        }
        let entry = self.swarms.get_mut(&id).expect("resolved swarm");
        let from = entry.swarm.topology;
        let same = from == kind
            && config
                .as_ref()
                .is_none_or(|c| *c == entry.swarm.config.topology);
        if same {
            return Ok(self.topology_view(id, now).expect("swarm exists"));
        }
        entry.swarm.topology = kind;
        if let Some(c) = config {
            entry.swarm.config.topology = c;
        }
        entry.swarm.updated_at = now;
        self.mark_swarm(id);
        self.emit(
            now,
            EventKind::TopologyChanged,
            id,
            None,
            None,
            format!("{} -> {}", from.as_str(), kind.as_str()),
        );
        self.mark_topology(id);
        self.dispatch(now);
        Ok(self.topology_view(id, now).expect("swarm exists"))
    }

    /// The swarm's topology graph as the API shows it.
    pub fn topology_view(&self, id: SwarmId, _now: Timestamp) -> Option<TopologyView> {
        let s = self.swarms.get(&id)?;
        let g = &s.topo.graph;
        let mesh = s.swarm.topology == Topology::Mesh;
        let nodes = g
            .ring
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let e = self.agents.get(a)?;
                Some(TopologyNode {
                    id: *a,
                    name: e.agent.name.clone(),
                    role: e.agent.role,
                    status: e.agent.status,
                    level: g.level.get(a).copied(),
                    parent: g.parent.get(a).copied(),
                    position: i as u32,
                    token: s.topo.token == Some(*a),
                    membership_version: mesh.then(|| {
                        if g.full {
                            s.topo.membership_version
                        } else {
                            s.topo.known.get(a).copied().unwrap_or(0)
                        }
                    }),
                })
            })
            .collect();
        let mut edges: Vec<[AgentId; 2]> = g.edges.iter().map(|(a, b)| [*a, *b]).collect();
        edges.sort();
        let t = &s.swarm.config.topology;
        let config = match s.swarm.topology {
            Topology::Star => serde_json::to_value(&t.star),
            Topology::Mesh => serde_json::to_value(&t.mesh),
            Topology::Hierarchical => serde_json::to_value(&t.hierarchical),
            Topology::Ring => serde_json::to_value(&t.ring),
        }
        .unwrap_or_default();
        Some(TopologyView {
            swarm_id: id,
            swarm: s.swarm.name.clone(),
            topology: s.swarm.topology,
            config,
            status: s.swarm.status,
            leader: s.swarm.leader_agent_id,
            nodes,
            edges,
            full: g.full,
            token: (s.swarm.topology == Topology::Ring).then_some(TokenView {
                holder: s.topo.token,
                passes: s.topo.token_passes,
                deadline: s.topo.token_deadline,
            }),
            membership_version: mesh.then_some(s.topo.membership_version),
        })
    }

    /// Whether agent `from` may send to agent `to` under their swarm's topology, or why not.
    pub fn may_send(&self, from: AgentId, to: AgentId) -> Result<(), CoreError> {
        let (Some(f), Some(t)) = (self.agents.get(&from), self.agents.get(&to)) else {
            return Err(CoreError::not_found(format!(
                "agent {} not found",
                if self.agents.contains_key(&from) {
                    to
                } else {
                    from
                }
            )));
        };
        if f.agent.swarm_id != t.agent.swarm_id {
            return Err(CoreError::forbidden(format!(
                "{} and {} are in different swarms; agents message only within their swarm",
                f.agent.name, t.agent.name
            )));
        }
        let s = &self.swarms[&f.agent.swarm_id];
        s.topo.graph.may_send(from, to).map_err(|why| {
            CoreError::forbidden(format!(
                "{} ({}) may not message {} ({}): {why}",
                f.agent.name,
                f.agent.role.as_str(),
                t.agent.name,
                t.agent.role.as_str()
            ))
        })
    }

    /// The agents a broadcast from `from` reaches (every agent of the swarm for `None`, an
    /// operator's broadcast).
    pub fn broadcast_reach(&self, swarm: SwarmId, from: Option<AgentId>) -> Vec<AgentId> {
        let Some(s) = self.swarms.get(&swarm) else {
            return Vec::new();
        };
        match from {
            Some(f) => s.topo.graph.broadcast_reach(f),
            None => {
                let mut all: Vec<AgentId> = s.agents.iter().copied().collect();
                all.sort();
                all
            }
        }
    }
}
