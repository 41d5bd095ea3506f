//! The resource allocator: which managed agents may start, given the machine's capacity, what
//! is already allocated and what the pools ask for.
//!
//! Pure: the driver measures the capacity, lists the allocations (one per live managed agent,
//! each its pool's [`ResourceRequest`]) and the demands (pools short of agents), and asks
//! [`plan`] which agents to start. Nothing here reads the machine or the clock.
//!
//! Strategies, on the same contended input, choose differently:
//! - [`Strategy::Priority`]: demands are served by pool priority (higher first), ties by the
//!   time the demand began waiting (older first), then by swarm id and pool name. Under
//!   [`Admission::Wait`], a demand that does not fit holds back every demand after it, so a
//!   large high-priority request is not starved by small low-priority ones.
//! - [`Strategy::FairShare`]: each pool that holds or asks for resources has an equal share
//!   (capacity / number of such pools) of each resource. The pool with the smallest dominant
//!   share (its largest fraction of any resource) is served first, and no pool grows beyond its
//!   share of a resource another waiting pool asks for.
//! - [`Strategy::BestFit`]: among the demands that fit, the one leaving the least free
//!   capacity (summed over resources, each as a fraction of its capacity) is served first: it
//!   packs the machine.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{AgentId, SwarmId};
use crate::pool::{Pool, ResourceRequest};
use crate::time::Timestamp;

/// What the machine offers managed agents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// CPU cores.
    pub cpu_cores: f64,
    /// Memory, in MiB.
    pub memory_mb: u64,
    /// Disk, in MiB (of the data directory's file system).
    pub disk_mb: u64,
}

/// How competing demands are served.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[schema(as = ResourceStrategy)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Higher pool priority first.
    #[default]
    Priority,
    /// Equal shares per pool; the least served pool first.
    FairShare,
    /// The demand that leaves the least waste first.
    BestFit,
}

impl Strategy {
    /// Its name in flags and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::FairShare => "fair_share",
            Strategy::BestFit => "best_fit",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "priority" => Ok(Strategy::Priority),
            "fair_share" | "fair-share" => Ok(Strategy::FairShare),
            "best_fit" | "best-fit" => Ok(Strategy::BestFit),
            other => Err(CoreError::invalid(format!(
                "unknown allocation strategy {other:?}; expected priority, fair_share or best_fit"
            ))),
        }
    }
}

/// What happens to a spawn that does not fit.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// It waits, in its strategy's order, until resources free.
    #[default]
    Wait,
    /// It is refused; the pool is not retried until it changes.
    Refuse,
}

impl Admission {
    /// Its name in flags and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Wait => "wait",
            Admission::Refuse => "refuse",
        }
    }
}

impl std::str::FromStr for Admission {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "wait" => Ok(Admission::Wait),
            "refuse" => Ok(Admission::Refuse),
            other => Err(CoreError::invalid(format!(
                "unknown admission policy {other:?}; expected wait or refuse"
            ))),
        }
    }
}

/// A pool, named by its swarm and name.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct PoolKey {
    /// Its swarm.
    pub swarm_id: SwarmId,
    /// Its name.
    pub pool: String,
}

/// What one agent of a pool reserves: the pool's `resources`, or, when that is empty, its
/// template's limits (memory rounded up to whole MiB, CPU cores).
pub fn request_of(pool: &Pool) -> ResourceRequest {
    if !pool.resources.is_empty() {
        return pool.resources.clone();
    }
    let Some(t) = &pool.template else {
        return ResourceRequest::default();
    };
    ResourceRequest {
        cpu_cores: t.limits.cpu_cores.unwrap_or(0.0),
        memory_mb: t.limits.memory_bytes.map_or(0, |b| b.div_ceil(1024 * 1024)),
        disk_mb: 0,
    }
}

/// The sum of two amounts.
pub fn add(a: &ResourceRequest, b: &ResourceRequest) -> ResourceRequest {
    ResourceRequest {
        cpu_cores: a.cpu_cores + b.cpu_cores,
        memory_mb: a.memory_mb + b.memory_mb,
        disk_mb: a.disk_mb + b.disk_mb,
    }
}

/// One resource, for reasons and shares.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU cores.
    Cpu,
    /// Memory.
    Memory,
    /// Disk.
    Disk,
}

const RESOURCES: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Disk];

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "CPU",
            Resource::Memory => "memory",
            Resource::Disk => "disk",
        }
    }

    fn of(self, r: &ResourceRequest) -> f64 {
        match self {
            Resource::Cpu => r.cpu_cores,
            Resource::Memory => r.memory_mb as f64,
            Resource::Disk => r.disk_mb as f64,
        }
    }

    fn cap(self, c: &Capacity) -> f64 {
        match self {
            Resource::Cpu => c.cpu_cores,
            Resource::Memory => c.memory_mb as f64,
            Resource::Disk => c.disk_mb as f64,
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Resource::Cpu => format!("{v:.2} cores"),
            Resource::Memory | Resource::Disk => format!("{v:.0} MiB"),
        }
    }
}

/// Tolerance for sums of fractional CPU cores.
const EPSILON: f64 = 1e-9;

/// An allocation held by a live managed agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allocation {
    /// The agent.
    pub agent_id: AgentId,
    /// Its name.
    pub agent: String,
    /// Its pool.
    #[serde(flatten)]
    pub pool: PoolKey,
    /// Its pool's priority.
    pub priority: u8,
    /// What it holds.
    pub request: ResourceRequest,
}

/// A pool's demand for more agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Demand {
    /// The pool.
    #[serde(flatten)]
    pub pool: PoolKey,
    /// Its priority.
    pub priority: u8,
    /// What each agent asks for.
    pub request: ResourceRequest,
    /// How many agents it lacks.
    pub count: u32,
    /// Since when it has been waiting (now for a new demand): older demands go first among
    /// equals.
    pub since: Timestamp,
}

/// A demand (or the part of it) that [`plan`] did not grant, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Held {
    /// The pool.
    #[serde(flatten)]
    pub pool: PoolKey,
    /// Agents not started.
    pub count: u32,
    /// Why, in words.
    pub reason: String,
    /// Refused (it can never fit, or the admission policy is `refuse`) rather than waiting.
    pub refused: bool,
}

/// What [`plan`] decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// One entry per agent to start, in the order granted.
    pub grants: Vec<PoolKey>,
    /// What was not granted.
    pub held: Vec<Held>,
}

/// Why a unit of `request` does not fit in `free`, if it does not.
fn shortfall(
    capacity: &Capacity,
    used: &ResourceRequest,
    request: &ResourceRequest,
) -> Option<String> {
    let short: Vec<String> = RESOURCES
        .iter()
        .filter(|r| r.of(request) > 0.0 && r.of(used) + r.of(request) > r.cap(capacity) + EPSILON)
        .map(|r| {
            format!(
                "{} needs {} but {} of {} is free",
                r.name(),
                r.show(r.of(request)),
                r.show((r.cap(capacity) - r.of(used)).max(0.0)),
                r.show(r.cap(capacity)),
            )
        })
        .collect();
    (!short.is_empty()).then(|| short.join(", "))
}

/// Decides which of `demands` to grant, one agent at a time, against `capacity` minus what
/// `allocated` holds.
pub fn plan(
    capacity: &Capacity,
    allocated: &[Allocation],
    demands: &[Demand],
    strategy: Strategy,
    admission: Admission,
) -> Plan {
    let mut used = ResourceRequest::default();
    let mut by_pool: BTreeMap<PoolKey, ResourceRequest> = BTreeMap::new();
    for a in allocated {
        used = add(&used, &a.request);
        let e = by_pool.entry(a.pool.clone()).or_default();
        *e = add(e, &a.request);
    }
    // Strategy order of ties: priority, then age, then name.
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&demands[a], &demands[b]);
        b.priority
            .cmp(&a.priority)
            .then(a.since.cmp(&b.since))
            .then(a.pool.cmp(&b.pool))
    });
    let mut left: Vec<u32> = demands.iter().map(|d| d.count).collect();
    // Why a demand stopped being served; set once.
    let mut stopped: Vec<Option<(String, bool)>> = vec![None; demands.len()];
    let empty = ResourceRequest::default();
    // A request larger than the whole machine can never be served.
    for (i, d) in demands.iter().enumerate() {
        if d.count > 0
            && let Some(why) = shortfall(capacity, &empty, &d.request)
        {
            stopped[i] = Some((format!("it can never fit on this machine: {why}"), true));
        }
    }
    let refuse = admission == Admission::Refuse;
    let fair_pools: BTreeSet<&PoolKey> = by_pool
        .keys()
        .chain(demands.iter().filter(|d| d.count > 0).map(|d| &d.pool))
        .collect();
    let pools_sharing = fair_pools.len().max(1) as f64;
    let mut grants = Vec::new();
    loop {
        let open: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| left[i] > 0 && stopped[i].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let pick = match strategy {
            Strategy::Priority => {
                let i = open[0];
                match shortfall(capacity, &used, &demands[i].request) {
                    None => Some(i),
                    Some(why) => {
                        stopped[i] = Some((format!("not enough resources: {why}"), refuse));
                        if !refuse {
                            let d = &demands[i];
                            for &j in &open[1..] {
                                stopped[j] = Some((
                                    format!(
                                        "waiting behind pool {:?} (priority {}), which is first in line and does not fit yet",
                                        d.pool.pool, d.priority
                                    ),
                                    false,
                                ));
                            }
                        }
                        None
                    }
                }
            }
            Strategy::BestFit => {
                let mut best: Option<(f64, usize)> = None;
                for &i in &open {
                    let d = &demands[i];
                    if let Some(why) = shortfall(capacity, &used, &d.request) {
                        stopped[i] = Some((format!("not enough resources: {why}"), refuse));
                        continue;
                    }
                    let waste: f64 = RESOURCES
                        .iter()
                        .filter(|r| r.cap(capacity) > 0.0)
                        .map(|r| {
                            (r.cap(capacity) - r.of(&used) - r.of(&d.request)) / r.cap(capacity)
                        })
                        .sum();
                    // `open` is in tie order, so a strict comparison keeps the first of equals.
                    if best.is_none_or(|(w, _)| waste < w - EPSILON) {
                        best = Some((waste, i));
                    }
                }
                best.map(|(_, i)| i)
            }
            Strategy::FairShare => {
                let dominant = |k: &PoolKey| {
                    let held = by_pool.get(k).cloned().unwrap_or_default();
                    RESOURCES
                        .iter()
                        .filter(|r| r.cap(capacity) > 0.0)
                        .map(|r| r.of(&held) / r.cap(capacity))
                        .fold(0.0, f64::max)
                };
                let mut best: Option<(f64, usize)> = None;
                for &i in &open {
                    let d = &demands[i];
                    if let Some(why) = shortfall(capacity, &used, &d.request) {
                        if refuse {
                            stopped[i] = Some((format!("not enough resources: {why}"), true));
                        }
                        continue;
                    }
                    let held = by_pool.get(&d.pool).cloned().unwrap_or_default();
                    let over = RESOURCES.iter().find_map(|&r| {
                        let share = r.cap(capacity) / pools_sharing;
                        if r.of(&d.request) <= 0.0
                            || r.of(&held) + r.of(&d.request) <= share + EPSILON
                        {
                            return None;
                        }
                        // Contended: another pool still waits for this resource.
                        open.iter()
                            .map(|&j| &demands[j])
                            .find(|o| o.pool != d.pool && r.of(&o.request) > 0.0)
                            .map(|o| (r, share, o.pool.pool.clone()))
                    });
                    if let Some((r, share, other)) = over {
                        stopped[i] = Some((
                            format!(
                                "held to its fair share ({} of {}, 1/{pools_sharing} of the machine) while pool {other:?} waits",
                                r.show(share),
                                r.name(),
                            ),
                            refuse,
                        ));
                        continue;
                    }
                    let ds = dominant(&d.pool);
                    if best.is_none_or(|(b, _)| ds < b - EPSILON) {
                        best = Some((ds, i));
                    }
                }
                if best.is_none() {
                    // Nothing can be granted: what is left waits, saying why.
                    for &i in &open {
                        if stopped[i].is_none() {
                            let why = shortfall(capacity, &used, &demands[i].request)
                                .unwrap_or_else(|| "no share is free".to_owned());
                            stopped[i] = Some((format!("not enough resources: {why}"), refuse));
                        }
                    }
                }
                best.map(|(_, i)| i)
            }
        };
        // Every round grants one agent or stops at least one demand, so this ends.
        let Some(i) = pick else { continue };
        let d = &demands[i];
        used = add(&used, &d.request);
        let e = by_pool.entry(d.pool.clone()).or_default();
        *e = add(e, &d.request);
        left[i] -= 1;
        grants.push(d.pool.clone());
    }
    let held = order
        .iter()
        .filter(|&&i| left[i] > 0)
        .map(|&i| {
            let (reason, refused) = stopped[i]
                .clone()
                .unwrap_or_else(|| ("not served".to_owned(), refuse));
            Held {
                pool: demands[i].pool.clone(),
                count: left[i],
                reason,
                refused,
            }
        })
        .collect();
    Plan { grants, held }
}

/// A host's room, for [`choose_host`].
#[derive(Clone, Debug, PartialEq)]
pub struct HostRoom {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// What it offers managed agents.
    pub capacity: Capacity,
    /// What the agents placed on it hold.
    pub used: ResourceRequest,
}

/// Which of `hosts` one more agent asking for `request` goes to, among those carrying every
/// one of `labels` with room for it; or why none. Under [`Strategy::BestFit`] the host left with
/// the least free capacity (packing, so whole hosts stay free for large agents); otherwise
/// the one left with the smallest dominant share used (spreading, so a lost host takes the
/// fewest agents with it). Ties go to the first host in `hosts`.
pub fn choose_host(
    hosts: &[HostRoom],
    request: &ResourceRequest,
    labels: &[String],
    strategy: Strategy,
) -> Result<usize, String> {
    if hosts.is_empty() {
        return Err(
            "no host is connected: start one with `flotilla host --coordinator URL`".to_owned(),
        );
    }
    let eligible: Vec<usize> = (0..hosts.len())
        .filter(|&i| labels.iter().all(|l| hosts[i].labels.contains(l)))
        .collect();
    if eligible.is_empty() {
        return Err(format!(
            "no connected host carries the labels {labels:?} (give them with `flotilla host --label`)"
        ));
    }
    let mut best: Option<(f64, usize)> = None;
    let mut short = Vec::new();
    for i in eligible {
        let h = &hosts[i];
        if let Some(why) = shortfall(&h.capacity, &h.used, request) {
            short.push(format!("host {}: {why}", h.name));
            continue;
        }
        let after = add(&h.used, request);
        let measured = RESOURCES.iter().filter(|r| r.cap(&h.capacity) > 0.0);
        let score = match strategy {
            Strategy::BestFit => measured
                .map(|r| (r.cap(&h.capacity) - r.of(&after)) / r.cap(&h.capacity))
                .sum::<f64>(),
            Strategy::Priority | Strategy::FairShare => measured
                .map(|r| r.of(&after) / r.cap(&h.capacity))
                .fold(0.0, f64::max),
        };
        if best.is_none_or(|(b, _)| score < b - EPSILON) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
        .ok_or_else(|| format!("no host has room: {}", short.join("; ")))
}

/// The API's shapes: `GET /api/v1/resources` and `PUT /api/v1/resources/policy`.
pub mod view {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::{Admission, Allocation, Capacity, PoolKey, Strategy};
    use crate::ids::{AgentId, SwarmId};
    use crate::pool::ResourceRequest;
    use crate::pressure::{Level, PressureConfig, ResponsePolicy, Responses, Signal, SignalState};
    use crate::time::Timestamp;

    /// Everything the resource manager knows.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    pub struct ResourcesView {
        /// What agents may be allocated.
        pub capacity: Capacity,
        /// What was measured at start (before `--capacity-*` overrides).
        pub measured: Capacity,
        /// How competing demands are served.
        pub strategy: Strategy,
        /// What happens to a spawn that does not fit.
        pub admission: Admission,
        /// Allocated in total.
        pub allocated: ResourceRequest,
        /// One per live managed agent.
        pub allocations: Vec<Allocation>,
        /// Totals per pool.
        pub pools: Vec<Total>,
        /// Totals per swarm.
        pub swarms: Vec<Total>,
        /// Pools waiting for resources, or refused.
        pub waiting: Vec<Waiting>,
        /// Measured use.
        pub usage: Usage,
        /// Pressure and the responses to it.
        pub pressure: PressureView,
    }

    /// What a pool or swarm holds.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    pub struct Total {
        /// The swarm.
        pub swarm_id: SwarmId,
        /// Its name.
        pub swarm: String,
        /// The pool (totals per pool only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pool: Option<String>,
        /// The pool's priority (totals per pool only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub priority: Option<u8>,
        /// Agents holding an allocation.
        pub agents: u32,
        /// What they hold.
        pub allocated: ResourceRequest,
    }

    /// A pool's agents that wait for resources, or were refused.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    pub struct Waiting {
        /// The pool.
        #[serde(flatten)]
        pub pool: PoolKey,
        /// Its priority.
        pub priority: u8,
        /// What each agent asks for.
        pub request: ResourceRequest,
        /// Agents not started.
        pub count: u32,
        /// Why.
        pub reason: String,
        /// Refused (not retried until the pool changes) rather than waiting.
        pub refused: bool,
        /// Since when.
        pub since: Timestamp,
    }

    /// Measured use.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    pub struct Usage {
        /// The machine's (`None` until the first sample).
        pub machine: Option<MachineUsage>,
        /// CPU used by managed agents, in cores.
        pub fleet_cpu_cores: f64,
        /// Memory (RSS) of managed agents, in MiB.
        pub fleet_memory_mb: f64,
        /// Per managed agent with a process.
        pub agents: Vec<AgentUsage>,
    }

    /// Machine-wide use.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    pub struct MachineUsage {
        /// CPU busy, in percent of all cores (`None` at the first sample).
        pub cpu_percent: Option<f64>,
        /// Memory in use (total minus available), in MiB.
        pub memory_used_mb: u64,
        /// Memory in total, in MiB.
        pub memory_total_mb: u64,
        /// Disk in use on the data directory's file system, in MiB.
        pub disk_used_mb: u64,
        /// That file system's size, in MiB.
        pub disk_total_mb: u64,
    }

    /// One managed agent's sampled use.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    pub struct AgentUsage {
        /// The agent.
        pub agent_id: AgentId,
        /// Its name.
        pub agent: String,
        /// Its pool.
        #[serde(flatten)]
        pub pool: PoolKey,
        /// CPU, in percent of one core.
        pub cpu_percent: f64,
        /// Resident memory, in MiB.
        pub memory_mb: f64,
    }

    /// Pressure and the responses to it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    pub struct PressureView {
        /// The level responses follow: the highest of the signals that drive them.
        pub level: Level,
        /// The signal at that level, if above normal.
        pub signal: Option<Signal>,
        /// Why, in words.
        pub reason: String,
        /// Every signal.
        pub signals: BTreeMap<Signal, SignalState>,
        /// Thresholds and smoothing.
        pub config: PressureConfig,
        /// At which level each response starts.
        pub policy: ResponsePolicy,
        /// The responses in force.
        pub active: Responses,
        /// Agents paused by pressure, resumed when it falls.
        pub paused_agents: Vec<AgentId>,
        /// Why scale-up is refused now, if it is.
        pub scale_up_veto: Option<String>,
    }

    /// The body of `PUT /resources/policy`: what to change (the rest stays).
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct PolicyUpdate {
        /// A new allocation strategy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub strategy: Option<Strategy>,
        /// A new admission policy (refusals are forgotten when it changes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub admission: Option<Admission>,
        /// New pressure responses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub responses: Option<ResponsePolicy>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm() -> SwarmId {
        SwarmId(uuid::Uuid::from_u128(1))
    }

    fn key(pool: &str) -> PoolKey {
        PoolKey {
            swarm_id: swarm(),
            pool: pool.to_owned(),
        }
    }

    fn mem(mb: u64) -> ResourceRequest {
        ResourceRequest {
            cpu_cores: 0.0,
            memory_mb: mb,
            disk_mb: 0,
        }
    }

    fn demand(
        pool: &str,
        priority: u8,
        request: ResourceRequest,
        count: u32,
        since: i64,
    ) -> Demand {
        Demand {
            pool: key(pool),
            priority,
            request,
            count,
            since: Timestamp::from_millis(since),
        }
    }

    fn held_by(pool: &str, n: u128) -> Allocation {
        Allocation {
            agent_id: AgentId(uuid::Uuid::from_u128(n)),
            agent: format!("{pool}-{n}"),
            pool: key(pool),
            priority: 5,
            request: mem(400),
        }
    }

    fn host(name: &str, labels: &[&str], memory_mb: u64, used_mb: u64) -> HostRoom {
        HostRoom {
            name: name.to_owned(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            capacity: Capacity {
                cpu_cores: 2.0,
                memory_mb,
                disk_mb: 0,
            },
            used: mem(used_mb),
        }
    }

    #[test]
    fn best_fit_packs_hosts_and_the_others_spread() {
        let hosts = [host("a", &[], 1000, 600), host("b", &[], 1000, 0)];
        // 300 MiB more: a would be 90% full, b 30%.
        assert_eq!(
            choose_host(&hosts, &mem(300), &[], Strategy::BestFit),
            Ok(0)
        );
        assert_eq!(
            choose_host(&hosts, &mem(300), &[], Strategy::FairShare),
            Ok(1)
        );
        assert_eq!(
            choose_host(&hosts, &mem(300), &[], Strategy::Priority),
            Ok(1)
        );
        // 500 MiB fits only on b, whatever the strategy.
        for s in [Strategy::BestFit, Strategy::FairShare, Strategy::Priority] {
            assert_eq!(choose_host(&hosts, &mem(500), &[], s), Ok(1));
        }
    }

    #[test]
    fn equal_hosts_take_the_first() {
        let hosts = [host("a", &[], 1000, 0), host("b", &[], 1000, 0)];
        assert_eq!(
            choose_host(&hosts, &mem(100), &[], Strategy::FairShare),
            Ok(0)
        );
        assert_eq!(
            choose_host(&hosts, &mem(100), &[], Strategy::BestFit),
            Ok(0)
        );
    }

    #[test]
    fn labels_narrow_the_hosts() {
        let hosts = [
            host("a", &["cpu"], 1000, 0),
            host("b", &["gpu", "big"], 1000, 900),
        ];
        let gpu = vec!["gpu".to_owned()];
        assert_eq!(
            choose_host(&hosts, &mem(100), &gpu, Strategy::FairShare),
            Ok(1)
        );
        let err = choose_host(&hosts, &mem(200), &gpu, Strategy::FairShare).unwrap_err();
        assert!(
            err.contains("host b: memory needs 200 MiB but 100 MiB of 1000 MiB is free"),
            "{err}"
        );
        let err = choose_host(&hosts, &mem(1), &["tpu".to_owned()], Strategy::BestFit).unwrap_err();
        assert!(
            err.contains("no connected host carries the labels"),
            "{err}"
        );
    }

    #[test]
    fn no_host_says_how_to_start_one() {
        let err = choose_host(&[], &mem(1), &[], Strategy::Priority).unwrap_err();
        assert!(err.contains("flotilla host --coordinator"), "{err}");
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.grants.iter().map(|k| k.pool.as_str()).collect()
    }

    fn reason<'a>(plan: &'a Plan, pool: &str) -> &'a Held {
        plan.held
            .iter()
            .find(|h| h.pool.pool == pool)
            .unwrap_or_else(|| panic!("{pool} is not held: {plan:?}"))
    }

    /// 1000 MiB; pool `a` (priority 5) holds 400 and wants 200 more; `big` (priority 9) wants
    /// 300; `small` (priority 3) wants 600, which would fill the machine exactly.
    fn contended() -> (Capacity, Vec<Allocation>, Vec<Demand>) {
        (
            Capacity {
                cpu_cores: 4.0,
                memory_mb: 1000,
                disk_mb: 10_000,
            },
            vec![held_by("a", 1)],
            vec![
                demand("a", 5, mem(200), 1, 0),
                demand("big", 9, mem(300), 1, 0),
                demand("small", 3, mem(600), 1, 0),
            ],
        )
    }

    #[test]
    fn priority_serves_the_highest_pools_first() {
        let (cap, alloc, demands) = contended();
        let plan = plan(&cap, &alloc, &demands, Strategy::Priority, Admission::Wait);
        assert_eq!(names(&plan), ["big", "a"]);
        let small = reason(&plan, "small");
        assert!(!small.refused);
        assert!(
            small.reason.contains("memory needs 600 MiB but 100 MiB"),
            "{small:?}"
        );
    }

    #[test]
    fn fair_share_holds_a_pool_over_its_share_while_another_waits() {
        let (cap, alloc, demands) = contended();
        let plan = plan(&cap, &alloc, &demands, Strategy::FairShare, Admission::Wait);
        // Three pools share: 333 MiB each. `a` already holds 400, so it gets nothing while
        // `small` waits; `big` fits within its share.
        assert_eq!(names(&plan), ["big"]);
        let a = reason(&plan, "a");
        assert!(a.reason.contains("fair share"), "{a:?}");
        assert!(
            a.reason.contains("333 MiB of memory") && a.reason.contains("waits"),
            "{a:?}"
        );
        // `small` fits on its own but would take 600 MiB, more than its share.
        let small = reason(&plan, "small");
        assert!(small.reason.contains("fair share"), "{small:?}");
    }

    #[test]
    fn best_fit_packs_the_machine() {
        let (cap, alloc, demands) = contended();
        let plan = plan(&cap, &alloc, &demands, Strategy::BestFit, Admission::Wait);
        // `small` leaves nothing free: the least waste.
        assert_eq!(names(&plan), ["small"]);
        assert_eq!(plan.held.len(), 2);
    }

    #[test]
    fn priority_ties_go_to_the_older_demand_then_the_name() {
        let cap = Capacity {
            cpu_cores: 1.0,
            memory_mb: 500,
            disk_mb: 0,
        };
        let demands = [
            demand("zeta", 5, mem(300), 1, 10),
            demand("alpha", 5, mem(300), 1, 20),
        ];
        let p = plan(&cap, &[], &demands, Strategy::Priority, Admission::Refuse);
        assert_eq!(names(&p), ["zeta"]);
        let same_age = [
            demand("zeta", 5, mem(300), 1, 10),
            demand("alpha", 5, mem(300), 1, 10),
        ];
        let p = plan(&cap, &[], &same_age, Strategy::Priority, Admission::Refuse);
        assert_eq!(names(&p), ["alpha"]);
        assert!(p.held[0].refused);
    }

    #[test]
    fn waiting_under_priority_holds_back_lower_pools_but_refusing_lets_them_pass() {
        let cap = Capacity {
            cpu_cores: 2.0,
            memory_mb: 1000,
            disk_mb: 0,
        };
        let alloc = [held_by("other", 1)];
        let demands = [
            demand("big", 9, mem(800), 1, 0),
            demand("small", 2, mem(100), 1, 0),
        ];
        let wait = plan(&cap, &alloc, &demands, Strategy::Priority, Admission::Wait);
        assert!(wait.grants.is_empty());
        assert!(
            reason(&wait, "small")
                .reason
                .contains("waiting behind pool \"big\"")
        );
        assert!(!reason(&wait, "big").refused);
        let refuse = plan(
            &cap,
            &alloc,
            &demands,
            Strategy::Priority,
            Admission::Refuse,
        );
        assert_eq!(names(&refuse), ["small"]);
        assert!(reason(&refuse, "big").refused);
    }

    #[test]
    fn a_request_larger_than_the_machine_is_refused_even_when_waiting() {
        let cap = Capacity {
            cpu_cores: 2.0,
            memory_mb: 1000,
            disk_mb: 100,
        };
        let huge = ResourceRequest {
            cpu_cores: 4.0,
            memory_mb: 10,
            disk_mb: 0,
        };
        for strategy in [Strategy::Priority, Strategy::FairShare, Strategy::BestFit] {
            let p = plan(
                &cap,
                &[],
                &[
                    demand("huge", 9, huge.clone(), 2, 0),
                    demand("ok", 1, mem(10), 1, 0),
                ],
                strategy,
                Admission::Wait,
            );
            assert_eq!(names(&p), ["ok"], "{strategy:?}");
            let h = reason(&p, "huge");
            assert!(h.refused && h.count == 2, "{h:?}");
            assert!(
                h.reason.contains("never fit") && h.reason.contains("CPU"),
                "{h:?}"
            );
        }
    }

    #[test]
    fn several_agents_of_one_pool_fill_what_is_free_and_no_more() {
        let cap = Capacity {
            cpu_cores: 1.0,
            memory_mb: 1000,
            disk_mb: 0,
        };
        let req = ResourceRequest {
            cpu_cores: 0.25,
            memory_mb: 100,
            disk_mb: 0,
        };
        for strategy in [Strategy::Priority, Strategy::FairShare, Strategy::BestFit] {
            let p = plan(
                &cap,
                &[],
                &[demand("w", 5, req.clone(), 6, 0)],
                strategy,
                Admission::Wait,
            );
            // CPU binds first: four quarter-cores.
            assert_eq!(p.grants.len(), 4, "{strategy:?}");
            let h = reason(&p, "w");
            assert_eq!(h.count, 2);
            assert!(h.reason.contains("CPU"), "{h:?}");
        }
    }

    #[test]
    fn fair_share_lets_a_pool_exceed_its_share_when_nobody_else_asks() {
        let cap = Capacity {
            cpu_cores: 1.0,
            memory_mb: 1000,
            disk_mb: 0,
        };
        let alloc = [held_by("a", 1)];
        // `b` holds nothing and asks nothing: `a` may take the rest.
        let p = plan(
            &cap,
            &alloc,
            &[demand("a", 5, mem(300), 2, 0)],
            Strategy::FairShare,
            Admission::Wait,
        );
        assert_eq!(names(&p), ["a", "a"]);
    }

    #[test]
    fn requests_come_from_the_pool_or_else_its_template_limits() {
        let mut pool: Pool = serde_json::from_value(serde_json::json!({
            "swarm_id": swarm(), "name": "p", "min_agents": 0, "max_agents": 1,
            "capabilities": [], "max_concurrent_tasks": 1,
            "template": {"command": "true", "limits": {"memory_bytes": 1_572_864, "cpu_cores": 0.5}},
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            request_of(&pool),
            ResourceRequest {
                cpu_cores: 0.5,
                memory_mb: 2,
                disk_mb: 0
            }
        );
        pool.resources = mem(64);
        assert_eq!(request_of(&pool), mem(64));
    }
}
