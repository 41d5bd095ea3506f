//! Hosts: machines that run managed agents for the coordinator (`flotilla host`).
//!
//! A pool whose template says `placement = "hosts"` has its agents placed on connected hosts
//! instead of the coordinator's machine. The coordinator keeps, per host, its capacity, its
//! labels, when it last polled and the orders it has not yet acknowledged; the fleet records
//! which host each agent is on ([`Fleet::place_agent`]).
//!
//! - Placement: when a host pool lacks agents, or one of its agents is (re)started, the host is
//!   chosen by [`choose_host`] under the resource manager's strategy: `best_fit` packs hosts,
//!   `priority` and `fair_share` spread agents over them. An agent no host has room for waits
//!   (a `resources_waiting` event says why) and is placed once one has.
//! - Orders: the supervisor's starts, stops, pauses and resumes of such an agent become orders
//!   queued for its host, which fetches them with a long poll; each start carries a fresh agent
//!   token (the last one is revoked, so a process left behind on a lost host can no longer act).
//! - Reports: each poll carries what happened to the host's agents (started, exited), which the
//!   fleet takes as the supervisor's reports of local agents: an exit puts the agent's work back
//!   in the queue at once. A report about an agent no longer placed on that host is ignored.
//! - Loss: a host silent for the host timeout is lost ([`sweep`]): its agents are down, their
//!   running tasks go back to the queue and recovery restarts them on other hosts. A host that
//!   registers again starts clean the same way, as does a host the coordinator finds agents
//!   placed on but that has not registered within the timeout after the coordinator started.
//!
//! Hosts are not stored: they register again when the coordinator restarts (their poll is
//! refused), which is also how a restarted coordinator learns their capacity.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_core::host::{
    AgentLaunch, HostAction, HostAgent, HostEvent, HostOrder, HostRegistration, HostReport,
    HostSession, HostStatus, HostView,
};
use flotilla_core::resources::{Capacity, HostRoom, PoolKey, add, choose_host, request_of};
use flotilla_core::{
    AgentId, AgentStatus, CoreError, Desired, EventKind, Fleet, Placement, Pool, ResourceRequest,
    Timestamp,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::auth::new_token;
use crate::error::ApiError;
use crate::state::AppState;

/// The longest a poll waits for an order.
pub const MAX_WAIT: Duration = Duration::from_secs(25);

/// The hosts a coordinator knows.
pub struct Hosts {
    reg: Mutex<Registry>,
    timeout: Duration,
    started: Instant,
}

struct Registry {
    hosts: BTreeMap<String, Entry>,
    next_session: u64,
    /// Agents of host pools that no host has room for, and why.
    waiting: BTreeMap<AgentId, String>,
    /// Host pools short of agents that no host has room for, and why (said once).
    pools_waiting: BTreeMap<PoolKey, String>,
}

struct Entry {
    session: u64,
    status: HostStatus,
    labels: Vec<String>,
    capacity: Capacity,
    version: String,
    registered_at: Timestamp,
    last_seen: Instant,
    last_seen_at: Timestamp,
    /// Orders not yet acknowledged, in sequence.
    orders: Vec<HostOrder>,
    next_seq: u64,
    wake: Arc<Notify>,
}

impl Hosts {
    /// No host yet; a host silent for `timeout` is lost.
    pub fn new(timeout: Duration) -> Hosts {
        Hosts {
            reg: Mutex::new(Registry {
                hosts: BTreeMap::new(),
                next_session: 1,
                waiting: BTreeMap::new(),
                pools_waiting: BTreeMap::new(),
            }),
            timeout,
            started: Instant::now(),
        }
    }

    /// How long a host may stay silent.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The ready hosts' room, by name, given what the fleet's agents placed on them hold.
    fn rooms(&self, f: &Fleet) -> Vec<HostRoom> {
        let mut used = allocated_by_host(&f.managed_views());
        let reg = self.reg.lock();
        reg.hosts
            .iter()
            .filter(|(_, e)| e.status == HostStatus::Ready)
            .map(|(name, e)| HostRoom {
                name: name.clone(),
                labels: e.labels.clone(),
                capacity: e.capacity.clone(),
                used: used.remove(name).unwrap_or_default(),
            })
            .collect()
    }

    /// The host one more agent of `pool` goes to, or why none has room.
    pub fn choose(
        &self,
        f: &Fleet,
        pool: &Pool,
        strategy: flotilla_core::resources::Strategy,
    ) -> Result<String, String> {
        let labels = pool
            .template
            .as_ref()
            .map(|t| t.host_labels.clone())
            .unwrap_or_default();
        let rooms = self.rooms(f);
        choose_host(&rooms, &request_of(pool), &labels, strategy).map(|i| rooms[i].name.clone())
    }

    fn is_ready(&self, host: &str) -> bool {
        self.reg
            .lock()
            .hosts
            .get(host)
            .is_some_and(|e| e.status == HostStatus::Ready)
    }

    /// Queues an order for a ready host; `false` when it is not ready.
    fn push(&self, host: &str, action: HostAction) -> bool {
        let mut reg = self.reg.lock();
        let Some(e) = reg
            .hosts
            .get_mut(host)
            .filter(|e| e.status == HostStatus::Ready)
        else {
            return false;
        };
        e.next_seq += 1;
        e.orders.push(HostOrder {
            seq: e.next_seq,
            action,
        });
        e.wake.notify_one();
        true
    }

    /// A host pool short of agents waits for a host: `true` when that is news (or a new
    /// reason), to say once.
    pub fn pool_waits(&self, pool: PoolKey, why: &str) -> bool {
        let mut reg = self.reg.lock();
        reg.pools_waiting.insert(pool, why.to_owned()).as_deref() != Some(why)
    }

    /// A host pool got an agent placed: `true` when it was waiting.
    pub fn pool_placed(&self, pool: &PoolKey) -> bool {
        self.reg.lock().pools_waiting.remove(pool).is_some()
    }

    /// Every host, with the agents placed on it.
    pub fn views(&self, f: &Fleet) -> Vec<HostView> {
        let views = f.managed_views();
        let mut allocated = allocated_by_host(&views);
        let mut agents: BTreeMap<String, Vec<HostAgent>> = BTreeMap::new();
        for v in &views {
            let Some(h) = &v.host else { continue };
            agents.entry(h.clone()).or_default().push(HostAgent {
                id: v.id,
                name: v.name.clone(),
                swarm_id: v.pool.swarm_id,
                status: v.status,
            });
        }
        let reg = self.reg.lock();
        reg.hosts
            .iter()
            .map(|(name, e)| HostView {
                name: name.clone(),
                status: e.status,
                labels: e.labels.clone(),
                capacity: e.capacity.clone(),
                allocated: allocated.remove(name).unwrap_or_default(),
                version: e.version.clone(),
                registered_at: e.registered_at,
                last_seen_at: e.last_seen_at,
                last_seen_ms_ago: e.last_seen.elapsed().as_millis() as u64,
                agents: agents.remove(name).unwrap_or_default(),
            })
            .collect()
    }
}

/// What the agents placed on each host hold (those meant to run).
fn allocated_by_host(
    views: &[flotilla_core::fleet::ManagedView],
) -> BTreeMap<String, ResourceRequest> {
    let mut used: BTreeMap<String, ResourceRequest> = BTreeMap::new();
    for v in views.iter().filter(|v| v.holds) {
        if let Some(h) = &v.host {
            let e = used.entry(h.clone()).or_default();
            *e = add(e, &v.request);
        }
    }
    used
}

/// Whether this agent's pool places its agents on hosts.
pub fn on_hosts(f: &Fleet, id: AgentId) -> bool {
    f.template_of(id).is_some_and(|(_, p)| {
        p.template
            .as_ref()
            .is_some_and(|t| t.placement == Placement::Hosts)
    })
}

fn check_registration(r: &HostRegistration) -> Result<(), CoreError> {
    flotilla_core::swarm::validate_name("host", &r.name)?;
    let c = &r.capacity;
    if !(c.cpu_cores.is_finite() && c.cpu_cores > 0.0 && c.cpu_cores <= 100_000.0) {
        return Err(CoreError::invalid(
            "capacity.cpu_cores must be a number of cores above 0",
        ));
    }
    if c.memory_mb == 0 {
        return Err(CoreError::invalid("capacity.memory_mb must be above 0"));
    }
    if r.labels.len() > 32 {
        return Err(CoreError::invalid("a host takes at most 32 labels"));
    }
    for l in &r.labels {
        flotilla_core::swarm::validate_name("host label", l)?;
    }
    if r.version.len() > 100 {
        return Err(CoreError::invalid("version takes at most 100 bytes"));
    }
    Ok(())
}

/// `POST /hosts`: a host (re)registers. The agents placed on it before are down (a host that
/// registers has no agent running), and are placed again.
pub async fn register(state: &AppState, r: HostRegistration) -> Result<HostSession, ApiError> {
    check_registration(&r)?;
    let had_agents = !state.fleet.lock().agents_on_host(&r.name).is_empty();
    if had_agents {
        // Not ready while its old agents are taken off it.
        if let Some(e) = state.hosts.reg.lock().hosts.get_mut(&r.name) {
            e.status = HostStatus::Lost;
        }
        let name = r.name.clone();
        state
            .apply(move |f, now| {
                f.host_gone(
                    &name,
                    "registered again, without the agents it ran",
                    false,
                    now,
                )
                .map(|_| ())
            })
            .await?;
    }
    let now = state.now();
    let session = {
        let mut reg = state.hosts.reg.lock();
        let session = reg.next_session;
        reg.next_session += 1;
        let wake = reg
            .hosts
            .get(&r.name)
            .map(|e| e.wake.clone())
            .unwrap_or_default();
        reg.hosts.insert(
            r.name.clone(),
            Entry {
                session,
                status: HostStatus::Ready,
                labels: r.labels.clone(),
                capacity: r.capacity.clone(),
                version: r.version.clone(),
                registered_at: now,
                last_seen: Instant::now(),
                last_seen_at: now,
                orders: Vec::new(),
                next_seq: 0,
                wake: wake.clone(),
            },
        );
        // An old session's poll still waiting returns (and is refused next time).
        wake.notify_waiters();
        session
    };
    let detail = format!(
        "host {:?} joined: {:.2} cores, {} MiB memory, {} MiB disk{}",
        r.name,
        r.capacity.cpu_cores,
        r.capacity.memory_mb,
        r.capacity.disk_mb,
        if r.labels.is_empty() {
            String::new()
        } else {
            format!(", labels {}", r.labels.join(","))
        }
    );
    state
        .apply(|f, now| f.record_resource_event(EventKind::HostJoined, None, None, detail, now))
        .await?;
    tracing::info!(host = %r.name, session, "host registered");
    // Agents waiting for a host, and pools short of agents, may fit now.
    place_waiting(state).await;
    crate::routes::reconcile_pools(state).await;
    let timeout = state.hosts.timeout;
    Ok(HostSession {
        session,
        poll_ms: (timeout / 4).as_millis() as u64,
        timeout_ms: timeout.as_millis() as u64,
    })
}

/// `POST /hosts/{name}/poll`: takes the host's report, then answers with its orders (waiting
/// up to `wait_ms` for one).
pub async fn poll(
    state: &AppState,
    name: &str,
    report: HostReport,
) -> Result<Vec<HostOrder>, ApiError> {
    let wake = {
        let mut reg = state.hosts.reg.lock();
        let e = match reg.hosts.get_mut(name) {
            Some(e) if e.session == report.session && e.status == HostStatus::Ready => e,
            Some(e) if e.session == report.session => {
                return Err(ApiError::from(CoreError::conflict(format!(
                    "host {name:?} was {} and its agents placed elsewhere: register again (POST /api/v1/hosts)",
                    e.status.as_str()
                ))));
            }
            _ => {
                return Err(ApiError::from(CoreError::conflict(format!(
                    "host {name:?} has no session {}: register again (POST /api/v1/hosts)",
                    report.session
                ))));
            }
        };
        e.last_seen = Instant::now();
        e.last_seen_at = state.now();
        e.orders.retain(|o| o.seq > report.ack);
        e.wake.clone()
    };
    if !report.events.is_empty() || !report.usage.is_empty() {
        let host = name.to_owned();
        let (events, usage) = (report.events, report.usage);
        state
            .apply(move |f, now| {
                let here = |f: &Fleet, id: AgentId| {
                    f.agent(id)
                        .and_then(|a| a.managed.as_ref())
                        .is_some_and(|m| m.host.as_deref() == Some(host.as_str()))
                };
                for ev in events {
                    let outcome = match ev {
                        HostEvent::Started {
                            agent_id,
                            pid,
                            limits,
                        } if here(f, agent_id) => f
                            .managed_started(agent_id, Some(pid), limits, now)
                            .map(|_| ()),
                        HostEvent::Exited {
                            agent_id,
                            exit,
                            expected,
                        } if here(f, agent_id) => f
                            .managed_exited(agent_id, exit, expected, now)
                            .map(|_| ()),
                        other => {
                            tracing::debug!(host = %host, event = ?other, "report about an agent not placed on this host; ignored");
                            Ok(())
                        }
                    };
                    if let Err(e) = outcome {
                        tracing::debug!(host = %host, error = %e, "host report not applied");
                    }
                }
                for (id, u) in usage {
                    if here(f, id) {
                        f.record_usage(id, u, now);
                    }
                }
                Ok(())
            })
            .await?;
    }
    // Agents it runs that are not placed on it here (removed, or of a swarm another
    // coordinator took over): stopped.
    let strays: Vec<AgentId> = {
        let f = state.fleet.lock();
        report
            .running
            .iter()
            .copied()
            .filter(|id| {
                f.agent(*id)
                    .and_then(|a| a.managed.as_ref())
                    .is_none_or(|m| m.host.as_deref() != Some(name))
            })
            .collect()
    };
    for id in strays {
        let pending = state.hosts.reg.lock().hosts.get(name).is_some_and(|e| {
            e.orders
                .iter()
                .any(|o| matches!(o.action, HostAction::Stop { agent_id, .. } if agent_id == id))
        });
        if !pending {
            tracing::info!(host = %name, agent = %id, "the host runs an agent not placed on it; stopping it");
            state.hosts.push(
                name,
                HostAction::Stop {
                    agent_id: id,
                    grace_ms: 10_000,
                },
            );
        }
    }
    let wait = Duration::from_millis(report.wait_ms).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = wake.notified();
        {
            let reg = state.hosts.reg.lock();
            match reg.hosts.get(name) {
                Some(e) if e.session == report.session && e.status == HostStatus::Ready => {
                    if !e.orders.is_empty() {
                        return Ok(e.orders.clone());
                    }
                }
                // Registered again, lost or left meanwhile: its next poll says so.
                _ => return Ok(Vec::new()),
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(Vec::new());
        }
    }
}

/// `POST /hosts/{name}/leave`: the host is shutting down; its agents are placed elsewhere at
/// once instead of after the host timeout.
pub async fn leave(state: &AppState, name: &str, session: u64) -> Result<(), ApiError> {
    {
        let mut reg = state.hosts.reg.lock();
        match reg.hosts.get_mut(name) {
            Some(e) if e.session == session => {
                e.status = HostStatus::Left;
                e.orders.clear();
                e.wake.notify_waiters();
            }
            _ => {
                return Err(ApiError::from(CoreError::conflict(format!(
                    "host {name:?} has no session {session}"
                ))));
            }
        }
    }
    gone(state, name, "left", true).await;
    Ok(())
}

/// Takes a host's agents off it, in the fleet.
async fn gone(state: &AppState, name: &str, reason: &str, left: bool) {
    tracing::warn!(host = %name, reason, "host gone; placing its agents elsewhere");
    let (host, why) = (name.to_owned(), reason.to_owned());
    if let Err(e) = state
        .apply(move |f, now| f.host_gone(&host, &why, left, now).map(|_| ()))
        .await
    {
        tracing::warn!(host = %name, error = %e.message, "could not take the agents off a lost host");
    }
}

/// Every second: hosts silent for the timeout are lost; agents placed on hosts that never
/// registered since the coordinator started are taken off them after the timeout; agents
/// waiting for a host are placed if one has room now.
pub async fn sweep(state: &AppState) {
    let hosts = &state.hosts;
    let silent: Vec<(String, u64)> = {
        let mut reg = hosts.reg.lock();
        reg.hosts
            .iter_mut()
            .filter(|(_, e)| e.status == HostStatus::Ready && e.last_seen.elapsed() > hosts.timeout)
            .map(|(name, e)| {
                e.status = HostStatus::Lost;
                e.orders.clear();
                e.wake.notify_waiters();
                (name.clone(), e.last_seen.elapsed().as_millis() as u64)
            })
            .collect()
    };
    // Hosts gone for an hour are forgotten.
    hosts.reg.lock().hosts.retain(|_, e| {
        e.status == HostStatus::Ready || e.last_seen.elapsed() < Duration::from_secs(3600)
    });
    for (name, ms) in silent {
        let why = format!("stopped answering ({} ms since its last poll)", ms);
        gone(state, &name, &why, false).await;
    }
    if hosts.started.elapsed() > hosts.timeout {
        let orphaned: BTreeSet<String> = {
            let f = state.fleet.lock();
            let reg = hosts.reg.lock();
            f.managed_views()
                .into_iter()
                .filter_map(|v| v.host)
                .filter(|h| !reg.hosts.contains_key(h))
                .collect()
        };
        for name in orphaned {
            gone(
                state,
                &name,
                "did not register after the coordinator started",
                false,
            )
            .await;
        }
    }
    place_waiting(state).await;
}

/// Starts the agents that waited for a host, where one has room now.
async fn place_waiting(state: &AppState) {
    let waiting: Vec<AgentId> = state.hosts.reg.lock().waiting.keys().copied().collect();
    for id in waiting {
        start(state, id).await;
    }
}

/// Carries out a supervisor's order for an agent of a host pool.
pub fn order(state: &AppState, order: crate::supervisor::Order) {
    use crate::supervisor::Order;
    let state = state.clone();
    tokio::spawn(async move {
        match order {
            Order::Start(id) => start(&state, id).await,
            Order::Rollback(id, checkpoint) => {
                tracing::warn!(agent = %id, %checkpoint, "the agent runs on a host: its workspace is not restored, it is restarted");
                let _ = state
                    .apply(|f, now| {
                        f.rollback_restored(
                            id,
                            checkpoint,
                            Err("its workspace is on a host; only the agent was restarted"
                                .to_owned()),
                            now,
                        )
                    })
                    .await;
                stop(&state, id, false).await;
                start(&state, id).await;
            }
            Order::Restart(id, force) => {
                stop(&state, id, force).await;
                start(&state, id).await;
            }
            Order::Stop(id, force) => stop(&state, id, force).await,
            Order::Pause(id) => {
                if let Some(h) = host_of(&state, id) {
                    state.hosts.push(&h, HostAction::Pause { agent_id: id });
                }
            }
            Order::Resume(id) => {
                if let Some(h) = host_of(&state, id) {
                    state.hosts.push(&h, HostAction::Resume { agent_id: id });
                }
            }
            Order::Checkpoint(id, trigger) => {
                if let Err(e) = crate::checkpoints::take(&state, id, None, trigger).await {
                    tracing::warn!(agent = %id, error = %e.message, "automatic checkpoint failed");
                }
            }
        }
    });
}

fn host_of(state: &AppState, id: AgentId) -> Option<String> {
    state
        .fleet
        .lock()
        .agent(id)
        .and_then(|a| a.managed.as_ref())
        .and_then(|m| m.host.clone())
}

/// Stops an agent on its host; one on no ready host runs nowhere, and is stopped at once.
async fn stop(state: &AppState, id: AgentId, force: bool) {
    state.hosts.reg.lock().waiting.remove(&id);
    let (host, grace) = {
        let f = state.fleet.lock();
        let Some((agent, pool)) = f.template_of(id) else {
            return;
        };
        let grace = pool
            .template
            .as_ref()
            .map_or(0, |t| t.stop_grace.as_millis() as u64);
        (agent.managed.as_ref().and_then(|m| m.host.clone()), grace)
    };
    let grace_ms = if force { 0 } else { grace };
    let sent = host.as_deref().is_some_and(|h| {
        state.hosts.push(
            h,
            HostAction::Stop {
                agent_id: id,
                grace_ms,
            },
        )
    });
    if !sent {
        let _ = state
            .apply(|f, now| {
                let running = f.agent(id).is_some_and(|a| {
                    !matches!(a.status, AgentStatus::Stopped | AgentStatus::Failed)
                });
                if running {
                    f.managed_exited(id, "stopped (it was on no host)".to_owned(), true, now)?;
                }
                Ok(())
            })
            .await;
    }
}

/// Starts an agent on a host: its own if that is ready, else the one [`Hosts::choose`]
/// picks; with a fresh token. With no host that has room, it waits.
async fn start(state: &AppState, id: AgentId) {
    let strategy = state.resources.strategy();
    let chosen = {
        let f = state.fleet.lock();
        let Some((agent, pool)) = f.template_of(id) else {
            state.hosts.reg.lock().waiting.remove(&id);
            return;
        };
        let m = agent.managed.as_ref().expect("managed");
        if m.desired == Desired::Stopped || agent.health.recovery.gave_up {
            state.hosts.reg.lock().waiting.remove(&id);
            return;
        }
        match m.host.clone().filter(|h| state.hosts.is_ready(h)) {
            Some(h) => Ok(h),
            None => state.hosts.choose(&f, pool, strategy),
        }
    };
    let host = match chosen {
        Ok(h) => h,
        Err(why) => {
            let news = state
                .hosts
                .reg
                .lock()
                .waiting
                .insert(id, why.clone())
                .as_deref()
                != Some(why.as_str());
            let _ = state
                .apply(|f, now| {
                    f.place_agent(id, None)?;
                    if let Some((swarm, name)) = f
                        .agent(id)
                        .filter(|_| news)
                        .map(|a| (a.swarm_id, a.name.clone()))
                    {
                        f.record_resource_event(
                            EventKind::ResourcesWaiting,
                            Some(swarm),
                            Some(id),
                            format!("{name} waits for a host: {why}"),
                            now,
                        )?;
                    }
                    Ok(())
                })
                .await;
            return;
        }
    };
    state.hosts.reg.lock().waiting.remove(&id);
    // A fresh token at every start: the last one is revoked.
    let (secret, hash) = new_token();
    let placed = host.clone();
    let launch = state
        .apply_with_tokens(|f, now| {
            f.place_agent(id, Some(placed))?;
            let (agent, pool) = f
                .template_of(id)
                .ok_or_else(|| CoreError::not_found(format!("agent {id} not found")))?;
            let t = pool.template.clone().expect("managed pool");
            let swarm = f
                .swarm_by_id(agent.swarm_id)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            let name = agent.name.clone();
            let records = crate::supervisor::fresh_agent_token(state, f, id, hash, now);
            let launch = AgentLaunch {
                agent_id: id,
                name,
                swarm,
                token: secret,
                command: t.command,
                args: t.args,
                env: t.env,
                workdir: t.workdir,
                runtime: t.runtime,
                limits: t.limits,
                stop_grace_ms: t.stop_grace.as_millis() as u64,
            };
            Ok((launch, records))
        })
        .await;
    match launch {
        Ok(launch) => {
            if !state.hosts.push(&host, HostAction::Start(Box::new(launch))) {
                // Lost in between: the sweep takes it off that host, and recovery restarts it.
                tracing::info!(agent = %id, host = %host, "host gone before the agent's start was sent");
            }
        }
        Err(e) => {
            tracing::warn!(agent = %id, error = %e.message, "could not start an agent on a host")
        }
    }
}
