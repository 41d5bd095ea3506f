//! Topologies: how a swarm's agents are connected, who leads them, and who may talk to whom.
//!
//! A swarm has one [`Topology`] (star, mesh, hierarchical, ring) and keeps the settings of all
//! four in [`TopologyConfig`] (the PRD's topology configurations), so switching back and forth
//! keeps what was set. [`build`] turns the swarm's members into a [`Graph`]: each agent's role,
//! its parent and level in a tree, its neighbours, the ring's order and the leader. It is a pure
//! function of the members and the current leader, recomputed by the fleet whenever membership
//! or an agent's liveness changes, so every decision it makes can be read and tested alone.
//!
//! Stability: the leader is sticky (kept while it is alive), and agents are ordered by when they
//! registered, so an agent joining goes to the end and leaves the others' places alone.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::AgentRole;
use crate::error::CoreError;
use crate::ids::AgentId;
use crate::swarm::Topology;
use crate::time::{Timestamp, serde_ms};

impl Topology {
    /// Every topology, in the order the documentation lists them.
    pub const ALL: [Topology; 4] = [
        Topology::Star,
        Topology::Mesh,
        Topology::Hierarchical,
        Topology::Ring,
    ];

    /// Its name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Star => "star",
            Topology::Mesh => "mesh",
            Topology::Hierarchical => "hierarchical",
            Topology::Ring => "ring",
        }
    }
}

impl std::str::FromStr for Topology {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        Topology::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown topology {s:?}; expected one of: {}",
                    Topology::ALL.map(|t| t.as_str()).join(", ")
                ))
            })
    }
}

impl AgentRole {
    /// Every role, most senior first.
    pub const ALL: [AgentRole; 4] = [
        AgentRole::Leader,
        AgentRole::Coordinator,
        AgentRole::Supervisor,
        AgentRole::Worker,
    ];

    /// The role as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Leader => "leader",
            AgentRole::Coordinator => "coordinator",
            AgentRole::Supervisor => "supervisor",
            AgentRole::Worker => "worker",
        }
    }
}

/// Star: one coordinator (the leader) and workers around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StarConfig {
    /// Coordinators, the leader included; workers talk to any of them.
    pub coordinator_count: u32,
    /// Most workers the star takes; registrations beyond are refused. (The PRD's example
    /// sets 50; the default leaves the limit to the swarm's `max_agents`.)
    pub max_workers: u32,
    /// When the leading coordinator fails, another agent is elected at once. Without it the
    /// swarm stays `degraded`, leaderless, until that agent is back or leaves.
    pub failover_coordinator: bool,
}

impl Default for StarConfig {
    fn default() -> Self {
        StarConfig {
            coordinator_count: 1,
            max_workers: 10_000,
            failover_coordinator: true,
        }
    }
}

/// Which agents of a mesh are connected.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStrategy {
    /// Every agent to every other.
    #[default]
    Full,
    /// Each agent to its `neighbours` nearest in the order they joined (a ring lattice).
    Nearest,
}

/// How a mesh routes what agents send.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Messages are relayed over the mesh: any agent reaches any other, and a broadcast reaches
    /// the whole swarm.
    #[default]
    Broadcast,
    /// Messages go only between connected agents: a broadcast reaches an agent's neighbours.
    Targeted,
}

/// Mesh: peers connected to each other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Which agents are connected.
    pub connection_strategy: ConnectionStrategy,
    /// With `nearest`, how many neighbours each agent has (even numbers are symmetric).
    pub neighbours: u32,
    /// How often membership news moves one hop along the mesh's connections.
    #[serde(rename = "gossip_interval_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub gossip_interval: Duration,
    /// How messages are routed.
    pub routing: Routing,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            connection_strategy: ConnectionStrategy::Full,
            neighbours: 2,
            gossip_interval: Duration::from_secs(1),
            routing: Routing::Broadcast,
        }
    }
}

/// One level of a hierarchy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TopologyLevel)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// The role of the agents on this level.
    pub role: AgentRole,
    /// How many agents are on it. Left out on a middle level: enough for each to have
    /// `parent_child_ratio` children. The last level takes every agent left, whatever it says.
    #[serde(default)]
    pub count: Option<u32>,
}

/// Hierarchical: a tree of levels, coordinator at the top.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HierarchicalConfig {
    /// The levels, top first: the first agent of the first level leads.
    pub levels: Vec<Level>,
    /// Children per parent; beyond `parents × ratio`, children are spread round robin.
    pub parent_child_ratio: u32,
}

impl Default for HierarchicalConfig {
    fn default() -> Self {
        HierarchicalConfig {
            levels: vec![
                Level {
                    role: AgentRole::Coordinator,
                    count: Some(1),
                },
                Level {
                    role: AgentRole::Supervisor,
                    count: None,
                },
                Level {
                    role: AgentRole::Worker,
                    count: None,
                },
            ],
            parent_child_ratio: 4,
        }
    }
}

/// In which order the ring's token moves.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RingOrder {
    /// To the next agent around the ring.
    #[default]
    Sequential,
    /// To the least loaded agent (ties: the next around the ring).
    Load,
}

/// Ring: agents in a circle, a token passing around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// How the token moves.
    pub order: RingOrder,
    /// An ordered task that waits this long for the token's holder to take it moves the token
    /// on.
    #[serde(rename = "token_timeout_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub token_timeout: Duration,
    /// The token skips agents out of service (otherwise it waits for them until it times out).
    pub skip_unhealthy: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            order: RingOrder::Sequential,
            token_timeout: Duration::from_secs(5),
            skip_unhealthy: true,
        }
    }
}

/// The settings of every topology; the swarm's `topology` says which is in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Star settings.
    pub star: StarConfig,
    /// Mesh settings.
    pub mesh: MeshConfig,
    /// Hierarchical settings.
    pub hierarchical: HierarchicalConfig,
    /// Ring settings.
    pub ring: RingConfig,
}

impl TopologyConfig {
    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), CoreError> {
        let s = &self.star;
        if !(1..=100).contains(&s.coordinator_count) {
            return Err(CoreError::invalid(
                "config.topology.star.coordinator_count must be between 1 and 100",
            ));
        }
        if s.max_workers == 0 {
            return Err(CoreError::invalid(
                "config.topology.star.max_workers must be at least 1",
            ));
        }
        let m = &self.mesh;
        if !(1..=1000).contains(&m.neighbours) {
            return Err(CoreError::invalid(
                "config.topology.mesh.neighbours must be between 1 and 1000",
            ));
        }
        if m.gossip_interval < Duration::from_millis(10)
            || m.gossip_interval > Duration::from_secs(3600)
        {
            return Err(CoreError::invalid(
                "config.topology.mesh.gossip_interval_ms must be between 10 and 3600000",
            ));
        }
        let h = &self.hierarchical;
        if !(2..=8).contains(&h.levels.len()) {
            return Err(CoreError::invalid(
                "config.topology.hierarchical.levels must list 2 to 8 levels, top first",
            ));
        }
        if h.levels[0].count == Some(0) {
            return Err(CoreError::invalid(
                "config.topology.hierarchical.levels[0].count must be at least 1: someone leads",
            ));
        }
        if h.levels[0].role == AgentRole::Worker {
            return Err(CoreError::invalid(
                "config.topology.hierarchical.levels[0].role must be leader, coordinator or supervisor",
            ));
        }
        if !(1..=1000).contains(&h.parent_child_ratio) {
            return Err(CoreError::invalid(
                "config.topology.hierarchical.parent_child_ratio must be between 1 and 1000",
            ));
        }
        let r = &self.ring;
        if r.token_timeout < Duration::from_millis(10)
            || r.token_timeout > Duration::from_secs(86_400)
        {
            return Err(CoreError::invalid(
                "config.topology.ring.token_timeout_ms must be between 10 and 86400000",
            ));
        }
        Ok(())
    }
}

/// One agent of a swarm, as the topology sees it.
#[derive(Clone, Debug)]
pub struct Member {
    /// The agent.
    pub id: AgentId,
    /// When it registered: the order of rings, lattices and levels.
    pub registered_at: Timestamp,
    /// The role it asked for at registration: more senior roles are preferred for leading.
    pub requested: AgentRole,
    /// Alive and well enough to hold a role and relay messages (not down, failed, stopped,
    /// starting or recovering).
    pub alive: bool,
    /// The role it holds now: coordinators and supervisors keep their places while alive, so
    /// that roles do not reshuffle when an agent comes back.
    pub current: AgentRole,
}

/// A swarm's graph: roles, tree, neighbours, ring and leader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// The topology it was built for.
    pub kind: Topology,
    /// The leader, if one is elected.
    pub leader: Option<AgentId>,
    /// Each member's role (members not alive are workers without connections).
    pub roles: HashMap<AgentId, AgentRole>,
    /// Each member's parent, in a star (its coordinator) or a tree.
    pub parent: HashMap<AgentId, AgentId>,
    /// Each parent's children (the inverse of `parent`).
    pub children: HashMap<AgentId, Vec<AgentId>>,
    /// Each member's level in a tree (0 at the top); a star has coordinators at 0, workers at 1.
    pub level: HashMap<AgentId, u32>,
    /// Every member in ring order (the order they registered).
    pub ring: Vec<AgentId>,
    /// Connections, each once as (smaller id, larger id); empty for a full mesh (everyone is
    /// connected: see [`Graph::full`]).
    pub edges: HashSet<(AgentId, AgentId)>,
    /// Each member's connections (the same edges, by member).
    pub adjacent: HashMap<AgentId, Vec<AgentId>>,
    /// Every alive member is connected to every other.
    pub full: bool,
    /// The members alive when it was built (or patched).
    pub alive: HashSet<AgentId>,
    /// Messages are relayed across the mesh (mesh `routing = broadcast`).
    pub relayed: bool,
}

fn edge(a: AgentId, b: AgentId) -> (AgentId, AgentId) {
    if a < b { (a, b) } else { (b, a) }
}

/// Who is preferred for a role (and to lead, when the leader is gone): those who already hold
/// a senior one (a standby coordinator takes over), then the most senior requested role, then
/// the earliest to register, then the smallest id.
fn candidate_order(m: &Member) -> (u8, AgentRole, Timestamp, AgentId) {
    let holds = match m.current {
        AgentRole::Leader | AgentRole::Coordinator => 0,
        AgentRole::Supervisor => 1,
        AgentRole::Worker => 2,
    };
    // Roles are declared most senior first, so their order is seniority.
    (holds, m.requested, m.registered_at, m.id)
}

/// Builds the graph of a swarm's members (in any order) under a topology, keeping `leader`
/// while it is alive.
pub fn build(
    kind: Topology,
    config: &TopologyConfig,
    members: &[Member],
    leader: Option<AgentId>,
) -> Graph {
    let mut by_join: Vec<&Member> = members.iter().collect();
    by_join.sort_by_key(|m| (m.registered_at, m.id));
    let mut candidates: Vec<&Member> = by_join.iter().copied().filter(|m| m.alive).collect();
    candidates.sort_by_key(|m| candidate_order(m));
    let alive: HashSet<AgentId> = candidates.iter().map(|m| m.id).collect();

    let current = leader.filter(|l| alive.contains(l));
    let leader = match current {
        Some(l) => Some(l),
        // Without failover, a star waits for its coordinator while it is still a member.
        None if kind == Topology::Star
            && !config.star.failover_coordinator
            && leader.is_some_and(|l| members.iter().any(|m| m.id == l)) =>
        {
            None
        }
        None => candidates.first().map(|m| m.id),
    };
    // The leader first, then the other candidates in their order.
    let mut ranked: Vec<AgentId> = leader.into_iter().collect();
    ranked.extend(
        candidates
            .iter()
            .map(|m| m.id)
            .filter(|id| Some(*id) != leader),
    );

    let mut g = Graph {
        kind,
        leader,
        ring: by_join.iter().map(|m| m.id).collect(),
        alive: alive.clone(),
        ..Graph::default()
    };
    for m in members {
        g.roles.insert(m.id, AgentRole::Worker);
    }
    // Alive members in the order they joined: lattices, rings and worker spreading follow it.
    let joined_alive: Vec<AgentId> = by_join
        .iter()
        .filter(|m| alive.contains(&m.id))
        .map(|m| m.id)
        .collect();
    match kind {
        Topology::Star => build_star(&mut g, config, &ranked, &joined_alive),
        Topology::Mesh => build_mesh(&mut g, config, &joined_alive),
        Topology::Hierarchical => build_tree(&mut g, config, &ranked, &joined_alive),
        Topology::Ring => build_ring(&mut g, &joined_alive),
    }
    if let Some(l) = g.leader {
        g.roles.insert(l, AgentRole::Leader);
    }
    g
}

fn build_star(g: &mut Graph, config: &TopologyConfig, ranked: &[AgentId], joined: &[AgentId]) {
    if g.leader.is_none() {
        return;
    }
    let mut coordinators: Vec<AgentId> = ranked
        .iter()
        .copied()
        .take(config.star.coordinator_count as usize)
        .collect();
    // The same order as `Graph::coordinators`, so that a worker added later gets the same parent.
    coordinators.sort_by_key(|id| (Some(*id) != g.leader, *id));
    for (i, c) in coordinators.iter().enumerate() {
        g.roles.insert(*c, AgentRole::Coordinator);
        g.level.insert(*c, 0);
        for d in &coordinators[..i] {
            g.connect(*c, *d);
        }
    }
    for w in joined.iter().filter(|id| !coordinators.contains(id)) {
        g.add_star_worker(*w, &coordinators);
    }
}

fn build_mesh(g: &mut Graph, config: &TopologyConfig, joined: &[AgentId]) {
    let mesh = &config.mesh;
    g.relayed = mesh.routing == Routing::Broadcast;
    let n = joined.len();
    let k = mesh.neighbours as usize;
    if mesh.connection_strategy == ConnectionStrategy::Full || n <= k + 1 {
        g.full = true;
        return;
    }
    // A ring lattice: each agent to the k/2 after it (and so the k/2 before it); an odd k
    // adds the one after that.
    let reach = k.div_ceil(2);
    for i in 0..n {
        for d in 1..=reach {
            g.connect(joined[i], joined[(i + d) % n]);
        }
    }
}

fn build_tree(g: &mut Graph, config: &TopologyConfig, ranked: &[AgentId], joined: &[AgentId]) {
    let h = &config.hierarchical;
    let ratio = h.parent_child_ratio.max(1) as usize;
    let last = h.levels.len() - 1;
    // Upper levels are filled from the ranked candidates (the leader first); the last level
    // takes everyone left, in the order they joined.
    let mut rest: Vec<AgentId> = ranked.to_vec();
    let mut levels: Vec<Vec<AgentId>> = Vec::with_capacity(h.levels.len());
    for (depth, level) in h.levels.iter().enumerate() {
        if depth == last {
            let left: HashSet<AgentId> = rest.iter().copied().collect();
            levels.push(
                joined
                    .iter()
                    .copied()
                    .filter(|id| left.contains(id))
                    .collect(),
            );
            break;
        }
        let count = match level.count {
            Some(c) => c as usize,
            // Enough parents for the agents below: each with `ratio` children of its own.
            None => rest.len().saturating_sub(1).div_ceil(ratio + 1).max(1),
        };
        let count = count.min(rest.len());
        levels.push(rest.drain(..count).collect());
    }
    for (depth, members) in levels.iter().enumerate() {
        let role = h.levels[depth].role;
        for (i, id) in members.iter().enumerate() {
            g.roles.insert(*id, role);
            g.level.insert(*id, depth as u32);
            if depth == 0 {
                continue;
            }
            // The nearest level above that has anyone on it.
            let Some(parents) = levels[..depth].iter().rev().find(|l| !l.is_empty()) else {
                continue;
            };
            let p = if i < parents.len() * ratio {
                i / ratio
            } else {
                i % parents.len()
            };
            g.set_parent(*id, parents[p]);
            g.connect(*id, parents[p]);
        }
    }
}

fn build_ring(g: &mut Graph, joined: &[AgentId]) {
    let n = joined.len();
    if n < 2 {
        return;
    }
    for i in 0..n {
        let next = joined[(i + 1) % n];
        if next != joined[i] {
            g.connect(joined[i], next);
        }
    }
}

impl Graph {
    /// The coordinators of a star (level 0), leader first.
    pub fn coordinators(&self) -> Vec<AgentId> {
        let mut c: Vec<AgentId> = self
            .level
            .iter()
            .filter(|(_, l)| **l == 0)
            .map(|(id, _)| *id)
            .collect();
        c.sort_by_key(|id| (Some(*id) != self.leader, *id));
        c
    }

    /// Adds an alive worker to a star: connected to every coordinator, its parent one of them
    /// chosen by its id (so that it does not depend on the others).
    pub fn add_star_worker(&mut self, w: AgentId, coordinators: &[AgentId]) {
        if coordinators.is_empty() {
            return;
        }
        self.roles.insert(w, AgentRole::Worker);
        self.level.insert(w, 1);
        let pick = (w.0.as_u128() % coordinators.len() as u128) as usize;
        self.set_parent(w, coordinators[pick]);
        for c in coordinators {
            self.connect(w, *c);
        }
    }

    /// Takes a worker of a star or a full mesh out of the graph's connections (it is no longer
    /// alive, or left); `member` says whether it stays listed.
    pub fn drop_worker(&mut self, w: AgentId, member: bool) {
        self.level.remove(&w);
        if let Some(p) = self.parent.remove(&w)
            && let Some(c) = self.children.get_mut(&p)
        {
            c.retain(|x| *x != w);
        }
        for n in self.adjacent.remove(&w).unwrap_or_default() {
            self.edges.remove(&edge(w, n));
            if let Some(list) = self.adjacent.get_mut(&n) {
                list.retain(|x| *x != w);
            }
        }
        if member {
            self.roles.insert(w, AgentRole::Worker);
        } else {
            self.roles.remove(&w);
            self.ring.retain(|x| *x != w);
        }
    }

    /// Whether two members are connected.
    pub fn connected(&self, a: AgentId, b: AgentId) -> bool {
        if a == b {
            return true;
        }
        if self.full {
            return self.alive.contains(&a) && self.alive.contains(&b);
        }
        self.edges.contains(&edge(a, b))
    }

    /// Whether `from` may send to `to` directly, or why not (in words, for the sender).
    pub fn may_send(&self, from: AgentId, to: AgentId) -> Result<(), String> {
        if from == to || self.connected(from, to) {
            return Ok(());
        }
        if !self.roles.contains_key(&to) {
            return Err(format!("agent {to} is not in this swarm"));
        }
        let role = |x: AgentId| self.roles.get(&x).copied().unwrap_or(AgentRole::Worker);
        match self.kind {
            Topology::Mesh if self.relayed => Ok(()),
            Topology::Star => Err(match self.leader {
                None => "the star has no coordinator elected yet, and workers talk only to \
                         their coordinator"
                    .to_owned(),
                Some(_) => format!(
                    "in a star a worker talks only to its coordinators, and both are {}s",
                    role(from).as_str()
                ),
            }),
            Topology::Mesh => Err(
                "in this mesh (connection_strategy nearest, routing targeted) agents talk only \
                 to their neighbours"
                    .to_owned(),
            ),
            Topology::Hierarchical => {
                Err("in a hierarchy an agent talks only to its parent and its children".to_owned())
            }
            Topology::Ring => Err("in a ring an agent talks only to its two neighbours".to_owned()),
        }
    }

    /// The members `from` reaches with a broadcast: every other member it may send to.
    pub fn broadcast_reach(&self, from: AgentId) -> Vec<AgentId> {
        let mut out: Vec<AgentId> = self
            .ring
            .iter()
            .copied()
            .filter(|to| *to != from && self.may_send(from, *to).is_ok())
            .collect();
        out.sort();
        out
    }

    /// The members connected to `id` (by id in a lattice or tree; in ring order in a full mesh).
    pub fn neighbours(&self, id: AgentId) -> Vec<AgentId> {
        if self.full {
            return self
                .ring
                .iter()
                .copied()
                .filter(|x| *x != id && self.connected(id, *x))
                .collect();
        }
        let mut out = self.adjacent.get(&id).cloned().unwrap_or_default();
        out.sort();
        out
    }

    /// Connects two members (once).
    pub fn connect(&mut self, a: AgentId, b: AgentId) {
        if a != b && self.edges.insert(edge(a, b)) {
            self.adjacent.entry(a).or_default().push(b);
            self.adjacent.entry(b).or_default().push(a);
        }
    }

    /// Makes `parent` the parent of `child`.
    pub fn set_parent(&mut self, child: AgentId, parent: AgentId) {
        if let Some(old) = self.parent.insert(child, parent)
            && let Some(c) = self.children.get_mut(&old)
        {
            c.retain(|x| *x != child);
        }
        self.children.entry(parent).or_default().push(child);
    }

    /// The children of `id` in a star or a tree.
    pub fn children(&self, id: AgentId) -> impl Iterator<Item = AgentId> + '_ {
        self.children_of(id).iter().copied()
    }

    /// The children of `id` in a star or a tree, as a slice.
    pub fn children_of(&self, id: AgentId) -> &[AgentId] {
        self.children.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The next member after `from` around the ring accepted by `ok` (`from` itself last).
    pub fn next_in_ring(
        &self,
        from: Option<AgentId>,
        ok: impl Fn(AgentId) -> bool,
    ) -> Option<AgentId> {
        self.around(from).find(|id| ok(*id))
    }

    /// Every member once, around the ring from the one after `from` (from the first when
    /// `from` is `None` or not a member), `from` itself last.
    pub fn around(&self, from: Option<AgentId>) -> impl Iterator<Item = AgentId> + '_ {
        let n = self.ring.len();
        let start = from
            .and_then(|f| self.ring.iter().position(|x| *x == f))
            .map_or(0, |i| i + 1);
        (0..n).map(move |d| self.ring[(start + d) % n])
    }
}

/// A node of the topology graph, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopologyNode {
    /// The agent.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: AgentRole,
    /// Its status.
    pub status: crate::agent::AgentStatus,
    /// Its level in the tree (0 at the top), for stars and hierarchies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// Its parent, for stars and hierarchies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<AgentId>,
    /// Its place around the ring (every topology orders its members so).
    pub position: u32,
    /// It holds the ring's token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub token: bool,
    /// The membership version it has heard of (a mesh's gossip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_version: Option<u64>,
}

/// The ring's token, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    /// Who holds it.
    pub holder: Option<AgentId>,
    /// How many times it has moved.
    pub passes: u64,
    /// When it times out if its holder does not take the ordered task waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

/// A swarm's topology graph: `GET /api/v1/swarms/{swarm}/topology`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopologyView {
    /// The swarm.
    pub swarm_id: crate::ids::SwarmId,
    /// Its name.
    pub swarm: String,
    /// The topology in force.
    pub topology: Topology,
    /// The settings of the topology in force.
    pub config: serde_json::Value,
    /// The swarm's status (`degraded` while no leader is elected).
    pub status: crate::swarm::SwarmStatus,
    /// The leader.
    pub leader: Option<AgentId>,
    /// Every member.
    pub nodes: Vec<TopologyNode>,
    /// Connections between members; a full mesh is every pair, written as `full: true`.
    pub edges: Vec<[AgentId; 2]>,
    /// Every alive member is connected to every other (edges are not listed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// The ring's token, in a ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenView>,
    /// The swarm's membership version (a mesh's gossip spreads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_version: Option<u64>,
}

impl TopologyView {
    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::new();
        let _ = writeln!(out, "graph \"{}\" {{", quote(&self.swarm));
        let _ = writeln!(
            out,
            "  label=\"{} ({}, {})\";\n  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];",
            quote(&self.swarm),
            self.topology.as_str(),
            self.status.as_str()
        );
        for n in &self.nodes {
            let fill = match n.status {
                crate::agent::AgentStatus::Idle | crate::agent::AgentStatus::Busy => match n.role {
                    AgentRole::Leader => "gold",
                    AgentRole::Coordinator => "lightgoldenrod",
                    AgentRole::Supervisor => "lightblue",
                    AgentRole::Worker => "palegreen",
                },
                crate::agent::AgentStatus::Paused => "lightgrey",
                _ => "salmon",
            };
            let token = if n.token { ", penwidth=3" } else { "" };
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\\n{} · {}{}\", fillcolor={fill}{token}];",
                n.id,
                quote(&n.name),
                n.role.as_str(),
                n.status.as_str(),
                if n.token { " · token" } else { "" },
            );
        }
        if self.full {
            let alive: Vec<&TopologyNode> = self
                .nodes
                .iter()
                .filter(|n| {
                    matches!(
                        n.status,
                        crate::agent::AgentStatus::Idle
                            | crate::agent::AgentStatus::Busy
                            | crate::agent::AgentStatus::Paused
                    )
                })
                .collect();
            for (i, a) in alive.iter().enumerate() {
                for b in &alive[i + 1..] {
                    let _ = writeln!(out, "  \"{}\" -- \"{}\";", a.id, b.id);
                }
            }
        }
        for [a, b] in &self.edges {
            let _ = writeln!(out, "  \"{a}\" -- \"{b}\";");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> AgentId {
        AgentId(Uuid::from_u128(n))
    }

    fn members(n: u128) -> Vec<Member> {
        (1..=n)
            .map(|i| Member {
                id: id(i),
                registered_at: Timestamp::from_millis(i as i64 * 10),
                requested: AgentRole::Worker,
                alive: true,
                current: AgentRole::Worker,
            })
            .collect()
    }

    #[test]
    fn star_has_one_leader_and_workers_talk_only_to_it() {
        let ms = members(4);
        let g = build(Topology::Star, &TopologyConfig::default(), &ms, None);
        assert_eq!(g.leader, Some(id(1)));
        assert_eq!(g.roles[&id(1)], AgentRole::Leader);
        assert_eq!(g.roles[&id(3)], AgentRole::Worker);
        assert!(g.may_send(id(2), id(1)).is_ok());
        assert!(g.may_send(id(1), id(3)).is_ok());
        let refused = g.may_send(id(2), id(3)).unwrap_err();
        assert!(refused.contains("star"), "{refused}");
        assert_eq!(g.broadcast_reach(id(2)), vec![id(1)]);
        assert_eq!(g.broadcast_reach(id(1)), vec![id(2), id(3), id(4)]);
    }

    #[test]
    fn a_requested_coordinator_is_preferred_and_the_leader_is_sticky() {
        let mut ms = members(3);
        ms[2].requested = AgentRole::Coordinator;
        let g = build(Topology::Star, &TopologyConfig::default(), &ms, None);
        assert_eq!(g.leader, Some(id(3)));
        // An agent asking to lead joins later: the leader stays.
        ms.push(Member {
            id: id(9),
            registered_at: Timestamp::from_millis(1000),
            requested: AgentRole::Leader,
            alive: true,
            current: AgentRole::Worker,
        });
        let g = build(Topology::Star, &TopologyConfig::default(), &ms, g.leader);
        assert_eq!(g.leader, Some(id(3)));
        // The leader dies: the most senior candidate takes over.
        ms[2].alive = false;
        let g = build(Topology::Star, &TopologyConfig::default(), &ms, g.leader);
        assert_eq!(g.leader, Some(id(9)));
        assert_eq!(g.roles[&id(3)], AgentRole::Worker);
        assert!(
            g.may_send(id(1), id(3)).is_err(),
            "a dead member is not a coordinator"
        );
    }

    #[test]
    fn a_star_without_failover_waits_for_its_coordinator() {
        let mut ms = members(3);
        let mut cfg = TopologyConfig::default();
        cfg.star.failover_coordinator = false;
        let g = build(Topology::Star, &cfg, &ms, None);
        assert_eq!(g.leader, Some(id(1)));
        ms[0].alive = false;
        let g2 = build(Topology::Star, &cfg, &ms, g.leader);
        assert_eq!(g2.leader, None);
        // It comes back: it leads again. If it had left, another would be elected.
        ms[0].alive = true;
        assert_eq!(
            build(Topology::Star, &cfg, &ms, Some(id(1))).leader,
            Some(id(1))
        );
        ms.remove(0);
        assert_eq!(
            build(Topology::Star, &cfg, &ms, Some(id(1))).leader,
            Some(id(2))
        );
    }

    #[test]
    fn star_with_two_coordinators_spreads_workers() {
        let ms = members(6);
        let mut cfg = TopologyConfig::default();
        cfg.star.coordinator_count = 2;
        let g = build(Topology::Star, &cfg, &ms, None);
        assert_eq!(g.roles[&id(1)], AgentRole::Leader);
        assert_eq!(g.roles[&id(2)], AgentRole::Coordinator);
        assert_eq!(g.coordinators(), vec![id(1), id(2)]);
        for w in 3..=6 {
            assert!([id(1), id(2)].contains(&g.parent[&id(w)]));
        }
        assert_eq!(g.children(id(1)).count(), 2, "ids 4 and 6 by their parity");
        assert_eq!(g.children(id(2)).count(), 2);
        assert!(
            g.may_send(id(5), id(2)).is_ok(),
            "workers reach every coordinator"
        );
        assert!(g.may_send(id(1), id(2)).is_ok());
    }

    #[test]
    fn nearest_mesh_is_a_lattice_and_targeted_routing_keeps_to_it() {
        let ms = members(8);
        let mut cfg = TopologyConfig::default();
        cfg.mesh.connection_strategy = ConnectionStrategy::Nearest;
        cfg.mesh.routing = Routing::Targeted;
        let g = build(Topology::Mesh, &cfg, &ms, None);
        assert_eq!(g.neighbours(id(1)), vec![id(2), id(8)]);
        assert!(g.may_send(id(1), id(2)).is_ok());
        assert!(g.may_send(id(1), id(5)).is_err());
        cfg.mesh.routing = Routing::Broadcast;
        let g = build(Topology::Mesh, &cfg, &ms, None);
        assert!(g.may_send(id(1), id(5)).is_ok(), "relayed");
        assert_eq!(g.broadcast_reach(id(1)).len(), 7);
        cfg.mesh.connection_strategy = ConnectionStrategy::Full;
        let g = build(Topology::Mesh, &cfg, &ms, None);
        assert!(g.full && g.connected(id(3), id(7)));
    }

    #[test]
    fn hierarchy_fills_levels_by_ratio() {
        let ms = members(16);
        let g = build(
            Topology::Hierarchical,
            &TopologyConfig::default(),
            &ms,
            None,
        );
        let count = |r: AgentRole| g.roles.values().filter(|x| **x == r).count();
        assert_eq!(count(AgentRole::Leader), 1);
        assert_eq!(count(AgentRole::Supervisor), 3);
        assert_eq!(count(AgentRole::Worker), 12);
        let supervisors: Vec<AgentId> = vec![id(2), id(3), id(4)];
        for s in &supervisors {
            assert_eq!(g.parent[s], id(1));
            assert_eq!(g.children(*s).count(), 4);
        }
        // A worker talks to its supervisor, not to the coordinator nor another worker.
        let w = g.children(id(2)).next().unwrap();
        assert!(g.may_send(w, id(2)).is_ok());
        assert!(g.may_send(w, id(1)).is_err());
        assert!(g.may_send(w, g.children(id(3)).next().unwrap()).is_err());
    }

    #[test]
    fn ring_connects_neighbours_and_the_token_skips() {
        let mut ms = members(4);
        ms[2].alive = false;
        let g = build(Topology::Ring, &TopologyConfig::default(), &ms, None);
        assert_eq!(g.ring, vec![id(1), id(2), id(3), id(4)]);
        assert!(
            g.may_send(id(2), id(4)).is_ok(),
            "the dead member is bridged"
        );
        assert!(g.may_send(id(1), id(2)).is_ok());
        assert!(g.may_send(id(1), id(4)).is_ok(), "the ring closes");
        let alive = |x: AgentId| x != id(3);
        assert_eq!(g.next_in_ring(Some(id(2)), alive), Some(id(4)));
        assert_eq!(g.next_in_ring(Some(id(4)), alive), Some(id(1)));
        assert_eq!(g.next_in_ring(None, alive), Some(id(1)));
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut cfg = TopologyConfig::default();
        cfg.hierarchical.levels.truncate(1);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("hierarchical.levels"), "{e}");
        let cfg: TopologyConfig =
            serde_json::from_str(r#"{"ring": {"order": "load", "token_timeout_ms": 250}}"#)
                .unwrap();
        assert_eq!(cfg.ring.order, RingOrder::Load);
        assert_eq!(cfg.ring.token_timeout, Duration::from_millis(250));
        assert!(serde_json::from_str::<TopologyConfig>(r#"{"ring": {"speed": 1}}"#).is_err());
    }
}
