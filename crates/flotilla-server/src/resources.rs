//! The resource manager and the pressure detector, driven: capacity measured at start,
//! admission of managed agents' spawns, machine and fleet sampling, and the automatic
//! responses to pressure.
//!
//! The decisions are the core's (`flotilla_core::resources::plan`,
//! `flotilla_core::pressure`); this module feeds them the fleet's managed agents and the
//! machine's figures, keeps what they need between calls (who waits since when, who was
//! refused, which agents pressure paused, which responses are in force), and turns their
//! answers into fleet commands and events.
//!
//! Allocations are not stored: every managed agent meant to run holds its pool's request
//! (`Fleet::managed_views`), so a stopped or removed agent releases its share at once, and a
//! restarted coordinator knows what is allocated from the fleet it restores.
//!
//! Lock order: the fleet, then [`Resources`]'s state; never the other way round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_core::fleet::ManagedView;
use flotilla_core::pressure::{
    Level, LevelChange, PressureConfig, PressureMonitor, ResponsePolicy, Responses, Signal,
    lowest_priority,
};
use flotilla_core::resources::view::{
    AgentUsage, MachineUsage, PolicyUpdate, PressureView, ResourcesView, Total, Usage, Waiting,
};
use flotilla_core::resources::{
    Admission, Allocation, Capacity, Demand, PoolKey, Strategy, add, plan,
};
use flotilla_core::{
    AgentId, AgentStatus, CoreError, EventKind, Fleet, Operation, Placement, Pool, ResourceRequest,
    SwarmId, Timestamp,
};
use flotilla_runtime as rt;
use parking_lot::Mutex;

use crate::state::AppState;

const MIB: u64 = 1024 * 1024;

/// How the resource manager is set up (`flotilla serve --capacity-* --allocation-strategy
/// --admission --pressure-*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSettings {
    /// CPU cores to allocate instead of the machine's.
    pub cpu_cores: Option<f64>,
    /// Memory to allocate instead of the machine's, in MiB.
    pub memory_mb: Option<u64>,
    /// Disk to allocate instead of the space free in the data directory, in MiB.
    pub disk_mb: Option<u64>,
    /// How competing demands are served.
    pub strategy: Strategy,
    /// What happens to a spawn that does not fit.
    pub admission: Admission,
    /// Pressure thresholds and smoothing.
    pub pressure: PressureConfig,
    /// At which level each response starts.
    pub responses: ResponsePolicy,
}

/// The resource manager's state, shared by the admission path, the sampler and the API.
pub struct Resources {
    /// Shared with the autoscaler's veto ([`Resources::scale_veto`]).
    state: std::sync::Arc<Mutex<State>>,
    sampler: Mutex<rt::MachineSampler>,
    evaluating: AtomicBool,
}

struct State {
    capacity: Capacity,
    measured: Capacity,
    strategy: Strategy,
    admission: Admission,
    policy: ResponsePolicy,
    monitor: PressureMonitor,
    /// Pools whose agents wait or were refused.
    held: BTreeMap<PoolKey, HeldPool>,
    /// The responses in force.
    active: Responses,
    /// The level last alerted.
    alerted: Option<Level>,
    /// Agents pressure paused, to resume exactly those.
    paused: BTreeSet<AgentId>,
    /// Why the level is what it is.
    level: (Level, Option<(Signal, String)>),
    machine: Option<MachineUsage>,
}

#[derive(Clone, Debug)]
struct HeldPool {
    priority: u8,
    request: ResourceRequest,
    count: u32,
    reason: String,
    refused: bool,
    since: Timestamp,
    /// The pool's `updated_at` when refused: a refusal stands until the pool changes.
    pool_version: Timestamp,
}

/// An event to record.
type Note = (EventKind, Option<SwarmId>, Option<AgentId>, String);

impl Resources {
    /// Measures the machine (what is not overridden) and sets up.
    pub fn new(
        settings: ResourceSettings,
        data_dir: &std::path::Path,
    ) -> Result<Resources, CoreError> {
        let machine = rt::machine::capacity(data_dir).map_err(|e| {
            CoreError::invalid(format!(
                "cannot measure the machine's capacity ({e}); give --capacity-cpu, --capacity-memory and --capacity-disk"
            ))
        });
        let measured = match machine {
            Ok(m) => Capacity {
                cpu_cores: m.cpu_cores,
                memory_mb: m.memory_bytes / MIB,
                disk_mb: m.disk_available_bytes / MIB,
            },
            Err(e)
                if settings.cpu_cores.is_none()
                    || settings.memory_mb.is_none()
                    || settings.disk_mb.is_none() =>
            {
                return Err(e);
            }
            Err(_) => Capacity::default(),
        };
        if settings
            .cpu_cores
            .is_some_and(|c| !c.is_finite() || c <= 0.0)
        {
            return Err(CoreError::invalid(
                "--capacity-cpu must be a number of cores above 0",
            ));
        }
        settings.responses.validate()?;
        let capacity = Capacity {
            cpu_cores: settings.cpu_cores.unwrap_or(measured.cpu_cores),
            memory_mb: settings.memory_mb.unwrap_or(measured.memory_mb),
            disk_mb: settings.disk_mb.unwrap_or(measured.disk_mb),
        };
        Ok(Resources {
            state: std::sync::Arc::new(Mutex::new(State {
                capacity,
                measured,
                strategy: settings.strategy,
                admission: settings.admission,
                policy: settings.responses,
                monitor: PressureMonitor::new(settings.pressure)?,
                held: BTreeMap::new(),
                active: Responses::default(),
                alerted: None,
                paused: BTreeSet::new(),
                level: (Level::Normal, None),
                machine: None,
            })),
            sampler: Mutex::new(rt::MachineSampler::new()),
            evaluating: AtomicBool::new(false),
        })
    }

    /// Why scale-up is refused now (pressure at or above the policy's `stop_scale_up`
    /// level), if it is.
    pub fn scale_up_veto(&self) -> Option<String> {
        let st = self.state.lock();
        st.active.stop_scale_up.then(|| pressure_words(&st.level))
    }

    /// The autoscaler's veto ([`crate::state::ScaleVeto`]): growth is refused, with the
    /// pressure's reason, while the `stop_scale_up` response is in force.
    pub fn scale_veto(&self) -> crate::state::ScaleVeto {
        let state = self.state.clone();
        std::sync::Arc::new(move |_: &Fleet, pool: &Pool, wanted: u32| {
            let st = state.lock();
            st.active.stop_scale_up.then(|| {
                format!(
                    "pool {:?} is not grown to {wanted}: resource pressure {}",
                    pool.name,
                    pressure_words(&st.level)
                )
            })
        })
    }

    /// Under pressure at or above the `shed` level: the task priority below which new
    /// submissions are refused, and why.
    pub fn shed_below(&self) -> Option<(u8, String)> {
        let st = self.state.lock();
        st.active.shed_below.map(|p| (p, pressure_words(&st.level)))
    }

    /// Under pressure at or above the `delay` level: the task priority below which dispatch
    /// is held back.
    pub fn delay_below(&self) -> Option<u8> {
        self.state.lock().active.delay_below
    }

    /// Whether some pool waits or was refused (so admission must run even when no pool is
    /// short, to forget it once it is not).
    pub fn holds_any(&self) -> bool {
        !self.state.lock().held.is_empty()
    }

    /// Which of the pools short of agents may spawn how many now (under the fleet lock), and
    /// the events that say who waits, who is refused and who got what they waited for.
    fn admit(
        &self,
        f: &Fleet,
        short: &[(SwarmId, String, u32)],
        now: Timestamp,
    ) -> (Vec<PoolKey>, Vec<Note>) {
        let views = f.managed_views();
        let allocations = allocations(&views);
        let mut pools: BTreeMap<SwarmId, Vec<Pool>> = BTreeMap::new();
        let mut st = self.state.lock();
        let mut demands = Vec::new();
        let mut versions = BTreeMap::new();
        let mut notes = Vec::new();
        for (swarm, name, count) in short {
            let list = pools.entry(*swarm).or_insert_with(|| f.pools_of(*swarm));
            let Some(pool) = list.iter().find(|p| &p.name == name) else {
                continue;
            };
            let key = PoolKey {
                swarm_id: *swarm,
                pool: name.clone(),
            };
            versions.insert(key.clone(), pool.updated_at);
            let previous = st.held.get(&key);
            if previous.is_some_and(|h| h.refused && h.pool_version == pool.updated_at) {
                continue; // refused until the pool changes
            }
            demands.push(Demand {
                since: previous.filter(|h| !h.refused).map_or(now, |h| h.since),
                pool: key,
                priority: pool.priority,
                request: flotilla_core::resources::request_of(pool),
                count: *count,
            });
        }
        let decided = plan(
            &st.capacity,
            &allocations,
            &demands,
            st.strategy,
            st.admission,
        );
        let mut still_held = BTreeSet::new();
        for h in &decided.held {
            still_held.insert(h.pool.clone());
            let d = demands
                .iter()
                .find(|d| d.pool == h.pool)
                .expect("held demands come from the demands");
            let previous = st.held.get(&h.pool).cloned();
            let fresh = match &previous {
                None => true,
                Some(p) => p.refused != h.refused,
            };
            if fresh {
                let (kind, verb) = if h.refused {
                    (EventKind::ResourcesRefused, "refused")
                } else {
                    (EventKind::ResourcesWaiting, "waiting")
                };
                notes.push((
                    kind,
                    Some(h.pool.swarm_id),
                    None,
                    format!(
                        "pool {:?}: {} agent(s) {verb}: {}",
                        h.pool.pool, h.count, h.reason
                    ),
                ));
            }
            st.held.insert(
                h.pool.clone(),
                HeldPool {
                    priority: d.priority,
                    request: d.request.clone(),
                    count: h.count,
                    reason: h.reason.clone(),
                    refused: h.refused,
                    since: previous
                        .filter(|p| p.refused == h.refused)
                        .map_or(now, |p| p.since),
                    pool_version: versions[&h.pool],
                },
            );
        }
        // Pools no longer held: granted what they waited for, no longer short, or gone. A
        // refusal stays while its pool is short and unchanged.
        let granted: BTreeSet<&PoolKey> = decided.grants.iter().collect();
        let gone: Vec<PoolKey> = st
            .held
            .iter()
            .filter(|(k, h)| {
                let refusal_stands = h.refused && versions.get(*k) == Some(&h.pool_version);
                !(still_held.contains(*k) || refusal_stands)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            let h = st.held.remove(&k).expect("listed");
            if granted.contains(&k) && !h.refused {
                notes.push((
                    EventKind::ResourcesGranted,
                    Some(k.swarm_id),
                    None,
                    format!(
                        "pool {:?}: resources free after waiting {}s",
                        k.pool,
                        now.since(h.since).as_secs()
                    ),
                ));
            }
        }
        (decided.grants, notes)
    }

    /// Whether one more agent of `pool` fits now (for explicit spawns and starts, which
    /// cannot wait): a 409 saying what is short when it does not.
    pub fn check_fit(
        &self,
        f: &Fleet,
        pool: &Pool,
        hosts: &crate::hosts::Hosts,
    ) -> Result<(), CoreError> {
        if placed_on_hosts(pool) {
            return hosts
                .choose(f, pool, self.strategy())
                .map(|_| ())
                .map_err(|why| {
                    CoreError::conflict(format!(
                        "cannot start an agent of pool {:?}: {why} (see `flotilla status --cluster`)",
                        pool.name
                    ))
                });
        }
        let allocations = allocations(&f.managed_views());
        let st = self.state.lock();
        let key = PoolKey {
            swarm_id: pool.swarm_id,
            pool: pool.name.clone(),
        };
        let demand = Demand {
            pool: key,
            priority: pool.priority,
            request: flotilla_core::resources::request_of(pool),
            count: 1,
            since: Timestamp::EPOCH,
        };
        let decided = plan(
            &st.capacity,
            &allocations,
            &[demand],
            st.strategy,
            Admission::Refuse,
        );
        match decided.held.first() {
            None => Ok(()),
            Some(h) => Err(CoreError::conflict(format!(
                "not enough resources to start an agent of pool {:?}: {} (see `flotilla resources`)",
                pool.name, h.reason
            ))),
        }
    }

    /// How competing demands are served (and, for pools placed on hosts, which host).
    pub fn strategy(&self) -> Strategy {
        self.state.lock().strategy
    }

    /// Changes the strategy, admission policy or responses; forgets refusals when the
    /// admission policy changes.
    pub fn update_policy(&self, update: PolicyUpdate) -> Result<(), CoreError> {
        if let Some(r) = &update.responses {
            r.validate()?;
        }
        let mut st = self.state.lock();
        if let Some(s) = update.strategy {
            st.strategy = s;
        }
        if let Some(a) = update.admission
            && a != st.admission
        {
            st.admission = a;
            st.held.retain(|_, h| !h.refused);
        }
        if let Some(r) = update.responses {
            st.policy = r;
        }
        Ok(())
    }

    /// Everything, for `GET /resources` (takes the fleet lock, then its own).
    pub fn view(&self, state: &AppState) -> ResourcesView {
        let (views, swarm_names) = {
            let f = state.fleet.lock();
            let names: BTreeMap<SwarmId, String> = f
                .swarm_views(state.now())
                .into_iter()
                .map(|s| (s.swarm.id, s.swarm.name))
                .collect();
            (f.managed_views(), names)
        };
        let allocations = allocations(&views);
        let name_of = |s: &SwarmId| swarm_names.get(s).cloned().unwrap_or_default();
        let mut pools: BTreeMap<PoolKey, Total> = BTreeMap::new();
        let mut swarms: BTreeMap<SwarmId, Total> = BTreeMap::new();
        let mut allocated = ResourceRequest::default();
        for a in &allocations {
            allocated = add(&allocated, &a.request);
            let p = pools.entry(a.pool.clone()).or_insert_with(|| Total {
                swarm_id: a.pool.swarm_id,
                swarm: name_of(&a.pool.swarm_id),
                pool: Some(a.pool.pool.clone()),
                priority: Some(a.priority),
                agents: 0,
                allocated: ResourceRequest::default(),
            });
            p.agents += 1;
            p.allocated = add(&p.allocated, &a.request);
            let s = swarms.entry(a.pool.swarm_id).or_insert_with(|| Total {
                swarm_id: a.pool.swarm_id,
                swarm: name_of(&a.pool.swarm_id),
                pool: None,
                priority: None,
                agents: 0,
                allocated: ResourceRequest::default(),
            });
            s.agents += 1;
            s.allocated = add(&s.allocated, &a.request);
        }
        let (fleet_cpu_cores, fleet_memory_mb) = fleet_use(&views);
        let agents = views
            .iter()
            .filter(|v| v.running)
            .map(|v| AgentUsage {
                agent_id: v.id,
                agent: v.name.clone(),
                pool: v.pool.clone(),
                cpu_percent: v.usage.cpu_percent.unwrap_or(0.0),
                memory_mb: v.usage.memory_mb.unwrap_or(0.0),
            })
            .collect();
        let st = self.state.lock();
        ResourcesView {
            capacity: st.capacity.clone(),
            measured: st.measured.clone(),
            strategy: st.strategy,
            admission: st.admission,
            allocated,
            allocations,
            pools: pools.into_values().collect(),
            swarms: swarms.into_values().collect(),
            waiting: st
                .held
                .iter()
                .map(|(k, h)| Waiting {
                    pool: k.clone(),
                    priority: h.priority,
                    request: h.request.clone(),
                    count: h.count,
                    reason: h.reason.clone(),
                    refused: h.refused,
                    since: h.since,
                })
                .collect(),
            usage: Usage {
                machine: st.machine.clone(),
                fleet_cpu_cores,
                fleet_memory_mb,
                agents,
            },
            pressure: PressureView {
                level: st.level.0,
                signal: st.level.1.as_ref().map(|(s, _)| *s),
                reason: st
                    .level
                    .1
                    .as_ref()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default(),
                signals: st.monitor.signals().clone(),
                config: st.monitor.config().clone(),
                policy: st.policy.clone(),
                active: st.active.clone(),
                paused_agents: st.paused.iter().copied().collect(),
                scale_up_veto: st.active.stop_scale_up.then(|| pressure_words(&st.level)),
            },
        }
    }

    /// Samples the machine and the fleet, updates the pressure levels and works out what to
    /// do: events to record, agents to pause and to resume.
    fn observe(
        &self,
        views: &[ManagedView],
        now: Timestamp,
        data_dir: &std::path::Path,
    ) -> Actions {
        let machine = match self.sampler.lock().sample(data_dir) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "cannot sample the machine's usage");
                None
            }
        };
        let mut st = self.state.lock();
        let mut samples = Vec::new();
        if let Some(m) = &machine {
            if let Some(busy) = m.cpu_busy {
                samples.push((Signal::MachineCpu, busy));
            }
            samples.push((Signal::MachineMemory, m.memory_used_fraction()));
            samples.push((Signal::MachineDisk, m.disk_used_fraction()));
            st.machine = Some(MachineUsage {
                cpu_percent: m.cpu_busy.map(|b| b * 100.0),
                memory_used_mb: m
                    .memory_total_bytes
                    .saturating_sub(m.memory_available_bytes)
                    / MIB,
                memory_total_mb: m.memory_total_bytes / MIB,
                disk_used_mb: m.disk_used_bytes / MIB,
                disk_total_mb: m.disk_total_bytes / MIB,
            });
        }
        let (cpu, memory) = fleet_use(views);
        if st.capacity.cpu_cores > 0.0 {
            samples.push((Signal::FleetCpu, cpu / st.capacity.cpu_cores));
        }
        if st.capacity.memory_mb > 0 {
            samples.push((Signal::FleetMemory, memory / st.capacity.memory_mb as f64));
        }
        let changes = st.monitor.observe(now, &samples);
        let mut actions = Actions::default();
        for LevelChange {
            signal,
            from,
            to,
            reason,
        } in changes
        {
            actions.notes.push((
                EventKind::PressureChanged,
                None,
                None,
                format!("{}: {from} -> {to} ({reason})", signal.as_str()),
            ));
        }
        st.level = st.monitor.level(st.policy.cpu_responds);
        let level = st.level.0;
        let words = pressure_words(&st.level);
        let want = st.policy.active(level);
        let before = st.active.clone();
        // Alerts: raised at the policy's level, raised again when the level changes while
        // raised, and resolved when it falls below.
        let alert_level = want.alert.then_some(level);
        if alert_level != st.alerted {
            let note = match alert_level {
                Some(l) if l >= Level::Critical => (
                    EventKind::AlertCritical,
                    format!("resource pressure {words}"),
                ),
                Some(_) => (
                    EventKind::AlertWarning,
                    format!("resource pressure {words}"),
                ),
                None => (
                    EventKind::AlertRecovery,
                    format!("resource pressure back to {level}"),
                ),
            };
            actions.notes.push((note.0, None, None, note.1));
            st.alerted = alert_level;
        }
        let toggle = |on: bool, was: bool, what: &str, notes: &mut Vec<Note>| {
            if on != was {
                let detail = if on {
                    format!("{what}: pressure {words}")
                } else {
                    format!("{what} ends: pressure back to {level}")
                };
                notes.push((EventKind::PressureResponse, None, None, detail));
            }
        };
        toggle(
            want.stop_scale_up,
            before.stop_scale_up,
            "scale-up refused",
            &mut actions.notes,
        );
        if want.shed_below != before.shed_below {
            let what = match want.shed_below.or(before.shed_below) {
                Some(p) => format!("new tasks below priority {p} refused"),
                None => String::new(),
            };
            toggle(
                want.shed_below.is_some(),
                before.shed_below.is_some(),
                &what,
                &mut actions.notes,
            );
        }
        if want.delay_below != before.delay_below {
            let what = match want.delay_below.or(before.delay_below) {
                Some(p) => format!("dispatch of tasks below priority {p} delayed"),
                None => String::new(),
            };
            toggle(
                want.delay_below.is_some(),
                before.delay_below.is_some(),
                &what,
                &mut actions.notes,
            );
            actions.delay = Some(want.delay_below);
        }
        // Pausing: while in force, the lowest-priority running agents are paused (new ones
        // too); when it ends, exactly the agents it paused and that are still paused resume.
        if want.pause_low_priority {
            let candidates: Vec<(AgentId, u8)> = views
                .iter()
                .filter(|v| {
                    matches!(
                        v.status,
                        AgentStatus::Idle | AgentStatus::Busy | AgentStatus::Starting
                    ) || (v.status == AgentStatus::Paused && st.paused.contains(&v.id))
                })
                .map(|v| (v.id, v.priority))
                .collect();
            let to_pause: Vec<&ManagedView> = lowest_priority(&candidates)
                .into_iter()
                .filter(|id| !st.paused.contains(id))
                .filter_map(|id| views.iter().find(|v| v.id == id))
                .collect();
            if !to_pause.is_empty() {
                let names: Vec<&str> = to_pause.iter().map(|v| v.name.as_str()).collect();
                actions.notes.push((
                    EventKind::PressureResponse,
                    None,
                    None,
                    format!(
                        "pausing the lowest-priority agents {} (priority {}): pressure {words}",
                        names.join(", "),
                        to_pause[0].priority
                    ),
                ));
                for v in to_pause {
                    st.paused.insert(v.id);
                    actions.pause.push(v.id);
                }
            }
        } else if !st.paused.is_empty() {
            let paused = std::mem::take(&mut st.paused);
            let resume: Vec<&ManagedView> = views
                .iter()
                .filter(|v| paused.contains(&v.id) && v.status == AgentStatus::Paused)
                .collect();
            if !resume.is_empty() {
                let names: Vec<&str> = resume.iter().map(|v| v.name.as_str()).collect();
                actions.notes.push((
                    EventKind::PressureResponse,
                    None,
                    None,
                    format!(
                        "resuming {} paused by pressure: pressure back to {level}",
                        names.join(", ")
                    ),
                ));
                actions.resume = resume.iter().map(|v| v.id).collect();
            }
        }
        st.active = want;
        actions
    }
}

/// What one evaluation asks of the fleet.
#[derive(Debug, Default)]
struct Actions {
    notes: Vec<Note>,
    pause: Vec<AgentId>,
    resume: Vec<AgentId>,
    /// A new dispatch floor (`Some(None)`: lift it).
    delay: Option<Option<u8>>,
}

/// "high (fleet_memory: 88% averaged …)".
fn pressure_words(level: &(Level, Option<(Signal, String)>)) -> String {
    match &level.1 {
        Some((signal, reason)) => format!("{} ({}: {reason})", level.0, signal.as_str()),
        None => level.0.to_string(),
    }
}

/// Whether a pool's agents are placed on hosts rather than on this machine.
fn placed_on_hosts(pool: &Pool) -> bool {
    pool.template
        .as_ref()
        .is_some_and(|t| t.placement == Placement::Hosts)
}

/// One allocation per managed agent on this machine that holds its pool's request.
fn allocations(views: &[ManagedView]) -> Vec<Allocation> {
    views
        .iter()
        .filter(|v| v.holds && v.placement == Placement::Local)
        .map(|v| Allocation {
            agent_id: v.id,
            agent: v.name.clone(),
            pool: v.pool.clone(),
            priority: v.priority,
            request: v.request.clone(),
        })
        .collect()
}

/// CPU (cores) and memory (MiB) the managed agents with a process use, as last sampled.
fn fleet_use(views: &[ManagedView]) -> (f64, f64) {
    views
        .iter()
        .filter(|v| v.running && v.placement == Placement::Local)
        .fold((0.0, 0.0), |(c, m), v| {
            (
                c + v.usage.cpu_percent.unwrap_or(0.0) / 100.0,
                m + v.usage.memory_mb.unwrap_or(0.0),
            )
        })
}

/// Spawns the agents managed pools lack, as far as the resource manager admits them
/// (under the fleet lock: called from inside a command). Returns the agents spawned.
pub fn spawn_admitted(
    f: &mut Fleet,
    resources: &Resources,
    hosts: &crate::hosts::Hosts,
    ids: &[AgentId],
    now: Timestamp,
) -> Vec<(SwarmId, String)> {
    let (on_hosts, short): (Vec<_>, Vec<_>) =
        f.pools_short_of_agents()
            .into_iter()
            .partition(|(swarm, pool, _)| {
                f.pools_of(*swarm)
                    .iter()
                    .any(|p| &p.name == pool && placed_on_hosts(p))
            });
    let mut ids = ids.iter();
    let mut spawned = spawn_on_hosts(f, resources, hosts, &on_hosts, &mut ids, now);
    if short.is_empty() && !resources.holds_any() {
        return spawned;
    }
    let (grants, notes) = resources.admit(f, &short, now);
    let mut failed: BTreeSet<PoolKey> = BTreeSet::new();
    for key in grants {
        if failed.contains(&key) {
            continue;
        }
        let Some(id) = ids.next() else { break };
        // A pool that cannot take more (its swarm is full) is left short, and the others
        // still get theirs; the refusal changed nothing.
        match f.spawn_agent(&key.swarm_id.to_string(), &key.pool, *id, now) {
            Ok(a) => spawned.push((key.swarm_id, a.name.clone())),
            Err(e) => {
                tracing::warn!(swarm = %key.swarm_id, pool = %key.pool, error = %e, "cannot spawn the agents a pool lacks");
                failed.insert(key);
            }
        }
    }
    for (kind, swarm, agent, detail) in notes {
        if let Err(e) = f.record_resource_event(kind, swarm, agent, detail, now) {
            tracing::warn!(error = %e, "cannot record a resource event");
        }
    }
    spawned
}

/// Spawns the agents that pools placed on hosts lack, each placed on the host
/// [`crate::hosts::Hosts::choose`] picks, higher pool priority first; a pool no host has room
/// for waits, said once in a `resources_waiting` event.
fn spawn_on_hosts(
    f: &mut Fleet,
    resources: &Resources,
    hosts: &crate::hosts::Hosts,
    short: &[(SwarmId, String, u32)],
    ids: &mut std::slice::Iter<'_, AgentId>,
    now: Timestamp,
) -> Vec<(SwarmId, String)> {
    let mut pools: Vec<(Pool, u32)> = short
        .iter()
        .filter_map(|(swarm, name, n)| {
            let p = f.pools_of(*swarm).into_iter().find(|p| &p.name == name)?;
            Some((p, *n))
        })
        .collect();
    pools.sort_by_key(|(p, _)| std::cmp::Reverse(p.priority));
    let mut spawned = Vec::new();
    for (pool, n) in pools {
        let key = PoolKey {
            swarm_id: pool.swarm_id,
            pool: pool.name.clone(),
        };
        for _ in 0..n {
            let host = match hosts.choose(f, &pool, resources.strategy()) {
                Ok(h) => h,
                Err(why) => {
                    if hosts.pool_waits(key.clone(), &why) {
                        let detail = format!("pool {:?}: agent(s) waiting: {why}", pool.name);
                        if let Err(e) = f.record_resource_event(
                            EventKind::ResourcesWaiting,
                            Some(pool.swarm_id),
                            None,
                            detail,
                            now,
                        ) {
                            tracing::warn!(error = %e, "cannot record a resource event");
                        }
                    }
                    break;
                }
            };
            let Some(id) = ids.next() else {
                return spawned;
            };
            match f.spawn_agent(&pool.swarm_id.to_string(), &pool.name, *id, now) {
                Ok(a) => {
                    spawned.push((pool.swarm_id, a.name.clone()));
                    f.place_agent(*id, Some(host.clone()))
                        .expect("the agent just spawned");
                    if hosts.pool_placed(&key) {
                        let detail = format!("pool {:?}: host {host:?} has room", pool.name);
                        let _ = f.record_resource_event(
                            EventKind::ResourcesGranted,
                            Some(pool.swarm_id),
                            None,
                            detail,
                            now,
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(swarm = %pool.swarm_id, pool = %pool.name, error = %e, "cannot spawn the agents a pool lacks");
                    break;
                }
            }
        }
    }
    spawned
}

/// Samples, judges pressure and carries out the responses (every sampling tick). An
/// evaluation still running when the next tick comes makes that tick a no-op.
pub async fn evaluate(state: &AppState) {
    let resources = &state.resources;
    if resources.evaluating.swap(true, Ordering::AcqRel) {
        return;
    }
    let views = state.fleet.lock().managed_views();
    let actions = resources.observe(&views, state.now(), &state.data_dir);
    if !actions.notes.is_empty()
        || !actions.pause.is_empty()
        || !actions.resume.is_empty()
        || actions.delay.is_some()
    {
        for (_, _, _, detail) in &actions.notes {
            tracing::info!(%detail, "resource pressure");
        }
        let outcome = state
            .apply(move |f, now| {
                for (kind, swarm, agent, detail) in actions.notes {
                    if let Err(e) = f.record_resource_event(kind, swarm, agent, detail, now) {
                        tracing::warn!(error = %e, "cannot record a pressure event");
                    }
                }
                // An agent that changed in between (stopped, paused by a user) is left as it is.
                for id in actions.pause {
                    if let Err(e) = f.lifecycle(id, Operation::Pause, false, now) {
                        tracing::info!(agent = %id, error = %e, "pressure could not pause an agent");
                    }
                }
                if let Some(floor) = actions.delay {
                    f.set_priority_floor(floor, now);
                }
                for id in actions.resume {
                    if let Err(e) = f.lifecycle(id, Operation::Resume, false, now) {
                        tracing::info!(agent = %id, error = %e, "pressure could not resume an agent");
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = outcome {
            tracing::warn!(error = %e.message, "could not record pressure responses");
        }
    }
    resources.evaluating.store(false, Ordering::Release);
}

impl AppState {
    /// Why scale-up is refused now, if pressure is at or above the policy's `stop_scale_up`
    /// level; the autoscaler asks before growing a pool.
    pub fn scale_up_veto(&self) -> Option<String> {
        self.resources.scale_up_veto()
    }
}
