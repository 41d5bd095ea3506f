//! `flotilla host`: runs managed agents on this machine for a coordinator.
//!
//! It registers the machine (name, capacity, labels), then polls the coordinator: each poll
//! reports what happened to its agents (started, exited) and fetches the orders not yet
//! carried out (start, stop, pause, resume an agent). Each agent has one task here that owns
//! its process and carries out its orders in sequence. An agent's exit is reported at once (a
//! long poll waiting for orders is abandoned for it), so its work goes back to the queue
//! without waiting for the host timeout.
//!
//! The agents it starts reach the coordinator themselves (`FLOTILLA_URL`, `FLOTILLA_AGENT_ID`,
//! `FLOTILLA_TOKEN`), like daemon-mode agents on the coordinator's machine. Their process
//! groups are recorded in `<work dir>/agents.json`, so a host killed and started again kills
//! what its last run left before it registers.
//!
//! A refused poll (the coordinator restarted, or found the host silent for too long and placed
//! its agents elsewhere) makes the host stop its agents and register again. On Ctrl-C or
//! SIGTERM it tells the coordinator it leaves (its agents are placed elsewhere at once), then
//! stops its agents.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_client::{Client, ClientError};
use flotilla_core::host::{
    AgentLaunch, HostAction, HostEvent, HostOrder, HostRegistration, HostReport, HostSession,
};
use flotilla_core::resources::Capacity;
use flotilla_core::{AgentId, ResourceUsage, RuntimeKind};
use flotilla_runtime as rt;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::cli::{GlobalArgs, HostArgs};
use crate::config;

const MIB: u64 = 1024 * 1024;
/// How long a poll waits for orders.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// How often agents' usage is sampled and reported.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// What every agent task needs.
struct Ctx {
    /// This host's name.
    host: String,
    /// The coordinator URL(s) agents are given.
    url: String,
    ca_cert: Option<PathBuf>,
    work_dir: PathBuf,
    /// Agents' process groups now: sampled for usage, and kept in `agents.json`.
    groups: Mutex<BTreeMap<AgentId, Group>>,
    events: mpsc::UnboundedSender<HostEvent>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Group {
    name: String,
    pgid: u32,
    tmux: bool,
}

impl Ctx {
    fn state_file(&self) -> PathBuf {
        self.work_dir.join("agents.json")
    }

    fn record(&self, id: AgentId, group: Option<Group>) {
        let mut groups = self.groups.lock();
        match group {
            Some(g) => groups.insert(id, g),
            None => groups.remove(&id),
        };
        let text = serde_json::to_string_pretty(&*groups).expect("serializable");
        if let Err(e) = std::fs::write(self.state_file(), text) {
            tracing::warn!(error = %e, "cannot record the agents' process groups");
        }
    }

    fn send(&self, event: HostEvent) {
        let _ = self.events.send(event);
    }
}

/// Kills what a previous run of this host left running (a host killed with its agents alive).
async fn kill_leftovers(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let groups: BTreeMap<AgentId, Group> = serde_json::from_str(&text).unwrap_or_default();
    for g in groups.values() {
        if rt::kill_leftover_group(g.pgid, &g.name) {
            tracing::info!(agent = %g.name, pgid = g.pgid, "killed what a previous run left");
        }
        if g.tmux {
            let _ = rt::tmux::kill_session(&g.name).await;
        }
    }
    let _ = std::fs::remove_file(path);
}

/// One agent on this host: its orders in sequence.
struct Slot {
    orders: mpsc::UnboundedSender<HostAction>,
    join: JoinHandle<()>,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(global: &GlobalArgs, args: HostArgs) -> Result<ExitCode> {
    let url = args
        .coordinator
        .clone()
        .unwrap_or_else(|| global.url.clone());
    let token = config::token(global)?;
    let client = Client::with_options(&url, token, &config::client_options(global))
        .context("--coordinator is not usable")?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => machine_name()?,
    };
    flotilla_core::swarm::validate_name("host name", &name)
        .map_err(|e| anyhow::anyhow!("{e}; give another with --name"))?;
    let work_dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => config::data_dir(global)?.join("host"),
    };
    std::fs::create_dir_all(work_dir.join("logs"))
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let capacity = capacity(&args, &work_dir)?;
    kill_leftovers(&work_dir.join("agents.json")).await;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        host: name.clone(),
        url: url.clone(),
        ca_cert: global.ca_cert.clone(),
        work_dir,
        groups: Mutex::new(BTreeMap::new()),
        events: events_tx,
    });
    let registration = HostRegistration {
        name: name.clone(),
        capacity,
        labels: args.labels.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let shutdown = crate::commands::worker::Shutdown::listen();
    let stop = Arc::new(Notify::new());
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            stop.notify_one();
        });
    }
    let mut slots: HashMap<AgentId, Slot> = HashMap::new();
    // The session of the last registration, to leave with.
    let mut current: Option<u64> = None;
    let stopping = stop.notified();
    tokio::pin!(stopping);
    'session: loop {
        let session = tokio::select! {
            s = register(&client, &registration) => s?,
            _ = &mut stopping => break 'session,
        };
        current = Some(session.session);
        eprintln!(
            "host {name} registered with {url}: {:.2} cores, {} MiB memory, {} MiB disk{}",
            registration.capacity.cpu_cores,
            registration.capacity.memory_mb,
            registration.capacity.disk_mb,
            if registration.labels.is_empty() {
                String::new()
            } else {
                format!(", labels {}", registration.labels.join(","))
            }
        );
        let mut ack = 0u64;
        let mut outbox: Vec<HostEvent> = Vec::new();
        let mut sampler = rt::Sampler::new();
        let mut sampled_at = Instant::now();
        let mut usage = BTreeMap::new();
        let mut backoff = Duration::from_millis(200);
        loop {
            while let Ok(ev) = events_rx.try_recv() {
                outbox.push(ev);
            }
            if sampled_at.elapsed() >= SAMPLE_EVERY {
                usage = sample(&ctx, &mut sampler);
                sampled_at = Instant::now();
            }
            let report = HostReport {
                session: session.session,
                ack,
                events: outbox.clone(),
                running: ctx.groups.lock().keys().copied().collect(),
                usage: std::mem::take(&mut usage),
                // With something to report, answer at once; else wait for orders, but no
                // longer than the coordinator's poll period.
                wait_ms: if outbox.is_empty() {
                    POLL_WAIT
                        .min(Duration::from_millis(session.poll_ms))
                        .as_millis() as u64
                } else {
                    0
                },
            };
            let waiting = report.wait_ms > 0;
            let answer = tokio::select! {
                a = client.poll_host(&name, &report) => a,
                // An event while a poll waits with nothing reported: send it now. Dropping
                // the poll loses nothing: it reported nothing but what is reported again.
                Some(ev) = events_rx.recv(), if waiting => {
                    outbox.push(ev);
                    continue;
                }
                _ = &mut stopping => break 'session,
            };
            match answer {
                Ok(orders) => {
                    backoff = Duration::from_millis(200);
                    outbox.drain(..report.events.len());
                    for HostOrder { seq, action } in orders {
                        if seq <= ack {
                            continue;
                        }
                        ack = seq;
                        carry_out(&ctx, &mut slots, action);
                    }
                }
                Err(ClientError::Api {
                    status: 409,
                    message,
                    ..
                }) => {
                    eprintln!(
                        "the coordinator refused this host's session ({message}); stopping its agents and registering again"
                    );
                    stop_all(&mut slots).await;
                    // Exits of the old session's agents are the coordinator's business no more.
                    while events_rx.try_recv().is_ok() {}
                    continue 'session;
                }
                Err(e) if is_refusal(&e) => {
                    bail!("{e}; the host needs an operator or admin token (--token)")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "poll failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stopping => break 'session,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
    eprintln!("host {name} leaving: stopping its agents");
    // Tell the coordinator first, so that it places the agents elsewhere now.
    if let Some(s) = current {
        let _ = tokio::time::timeout(Duration::from_secs(5), client.leave_host(&name, s)).await;
    }
    stop_all(&mut slots).await;
    Ok(ExitCode::SUCCESS)
}

/// Registers, retrying while the coordinator cannot be reached.
async fn register(client: &Client, registration: &HostRegistration) -> Result<HostSession> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.register_host(registration).await {
            Ok(s) => return Ok(s),
            Err(e) if is_refusal(&e) => {
                bail!("{e}; the host needs an operator or admin token (--token)")
            }
            Err(ClientError::Api {
                status: 400,
                message,
                ..
            }) => bail!("the coordinator refused this host: {message}"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot register with the coordinator; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn is_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api {
            status: 401 | 403,
            ..
        }
    )
}

/// The machine's host name.
fn machine_name() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the machine's host name; give one with --name")?;
    let short = name.trim().split('.').next().unwrap_or_default().to_owned();
    if short.is_empty() {
        bail!("the machine has no host name; give one with --name");
    }
    Ok(short)
}

fn capacity(args: &HostArgs, work_dir: &Path) -> Result<Capacity> {
    if args
        .capacity
        .cpu
        .is_some_and(|c| !c.is_finite() || c <= 0.0)
    {
        bail!("--capacity-cpu must be a number of cores above 0");
    }
    let measured = rt::machine::capacity(work_dir);
    let (cpu, memory, disk) = match &measured {
        Ok(m) => (
            m.cpu_cores,
            m.memory_bytes / MIB,
            m.disk_available_bytes / MIB,
        ),
        Err(_) => (0.0, 0, 0),
    };
    let c = Capacity {
        cpu_cores: args.capacity.cpu.unwrap_or(cpu),
        memory_mb: args.capacity.memory.unwrap_or(memory),
        disk_mb: args.capacity.disk.unwrap_or(disk),
    };
    if let Err(e) = measured
        && (args.capacity.cpu.is_none() || args.capacity.memory.is_none())
    {
        bail!(
            "cannot measure this machine's capacity ({e}); give --capacity-cpu, --capacity-memory and --capacity-disk"
        );
    }
    Ok(c)
}

/// Hands an order to its agent's task (starting one for a start).
fn carry_out(ctx: &Arc<Ctx>, slots: &mut HashMap<AgentId, Slot>, action: HostAction) {
    let id = match &action {
        HostAction::Start(l) => l.agent_id,
        HostAction::Stop { agent_id, .. }
        | HostAction::Pause { agent_id }
        | HostAction::Resume { agent_id } => *agent_id,
    };
    let slot = match slots.entry(id) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        // Nothing runs for it here: only a start needs a task.
        std::collections::hash_map::Entry::Vacant(_) if !matches!(action, HostAction::Start(_)) => {
            return;
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let join = tokio::spawn(agent_task(ctx.clone(), id, rx));
            e.insert(Slot { orders: tx, join })
        }
    };
    let _ = slot.orders.send(action);
}

/// Stops every agent (each with its grace) and waits for them.
async fn stop_all(slots: &mut HashMap<AgentId, Slot>) {
    for (_, slot) in slots.drain() {
        drop(slot.orders);
        let _ = slot.join.await;
    }
}

/// A running agent's process.
struct Running {
    process: rt::Supervised,
    grace: Duration,
}

/// One agent's life on this host: its orders in sequence; its exits reported. Ends when its
/// order channel closes (the host stops: the process gets its grace) or its process ended
/// with no order pending.
async fn agent_task(ctx: Arc<Ctx>, id: AgentId, mut orders: mpsc::UnboundedReceiver<HostAction>) {
    let mut running: Option<Running> = None;
    loop {
        let order = match running.as_mut() {
            Some(r) => tokio::select! {
                exit = r.process.wait() => {
                    r.process.stop(Duration::ZERO).await;
                    running = None;
                    ctx.record(id, None);
                    ctx.send(HostEvent::Exited { agent_id: id, exit: exit.describe(), expected: false });
                    continue;
                }
                o = orders.recv() => o,
            },
            None => orders.recv().await,
        };
        match order {
            None => {
                if let Some(mut r) = running.take() {
                    r.process.stop(r.grace).await;
                    ctx.record(id, None);
                }
                return;
            }
            Some(HostAction::Start(launch)) => {
                if let Some(mut r) = running.take() {
                    let exit = r.process.stop(r.grace).await;
                    ctx.record(id, None);
                    ctx.send(HostEvent::Exited {
                        agent_id: id,
                        exit: exit.describe(),
                        expected: true,
                    });
                }
                running = start(&ctx, &launch).await;
            }
            Some(HostAction::Stop { grace_ms, .. }) => {
                if let Some(mut r) = running.take() {
                    let exit = r.process.stop(Duration::from_millis(grace_ms)).await;
                    ctx.record(id, None);
                    ctx.send(HostEvent::Exited {
                        agent_id: id,
                        exit: exit.describe(),
                        expected: true,
                    });
                }
            }
            Some(HostAction::Pause { .. }) => {
                if let Some(Err(e)) = running.as_ref().map(|r| r.process.pause()) {
                    tracing::warn!(agent = %id, error = %e, "pause failed");
                }
            }
            Some(HostAction::Resume { .. }) => {
                if let Some(Err(e)) = running.as_ref().map(|r| r.process.resume()) {
                    tracing::warn!(agent = %id, error = %e, "resume failed");
                }
            }
        }
    }
}

/// Starts an agent's process; reports how that went.
async fn start(ctx: &Ctx, l: &AgentLaunch) -> Option<Running> {
    let failed = |why: String| {
        ctx.send(HostEvent::Exited {
            agent_id: l.agent_id,
            exit: format!("could not be started on host {}: {why}", ctx.host),
            expected: false,
        });
        None
    };
    let workdir = match &l.workdir {
        Some(d) => PathBuf::from(d),
        None => ctx.work_dir.join("agents").join(&l.name),
    };
    if l.workdir.is_none()
        && let Err(e) = std::fs::create_dir_all(&workdir)
    {
        return failed(format!("cannot create {}: {e}", workdir.display()));
    }
    if !workdir.is_dir() {
        return failed(format!(
            "its working directory {} does not exist here",
            workdir.display()
        ));
    }
    let mut env = l.env.clone();
    env.extend([
        ("FLOTILLA_URL".to_owned(), ctx.url.clone()),
        ("FLOTILLA_AGENT_ID".to_owned(), l.agent_id.to_string()),
        ("FLOTILLA_AGENT_NAME".to_owned(), l.name.clone()),
        ("FLOTILLA_TOKEN".to_owned(), l.token.clone()),
        ("FLOTILLA_SWARM".to_owned(), l.swarm.clone()),
        ("FLOTILLA_HOST".to_owned(), ctx.host.clone()),
    ]);
    if let Ok(exe) = std::env::current_exe() {
        env.insert("FLOTILLA_BIN".to_owned(), exe.display().to_string());
    }
    if let Some(ca) = &ctx.ca_cert
        && !l.env.contains_key("FLOTILLA_CA_CERT")
    {
        env.insert("FLOTILLA_CA_CERT".to_owned(), ca.display().to_string());
    }
    let mut spec = rt::CommandSpec::new(l.command.clone()).args(l.args.iter().cloned());
    spec.env = env;
    spec.workdir = Some(workdir);
    spec.limits = rt::Limits {
        memory_bytes: l.limits.memory_bytes,
        cpu_cores: l.limits.cpu_cores,
        cpu_time: l.limits.cpu_time,
        open_files: None,
    };
    let (kind, tmux) = match l.runtime {
        RuntimeKind::Process => (rt::RuntimeKind::Process, false),
        RuntimeKind::Tmux => (rt::RuntimeKind::Tmux, true),
    };
    if tmux {
        let _ = rt::tmux::kill_session(&l.name).await;
    }
    let log = rt::LogSpec::new(ctx.work_dir.join("logs").join(format!("{}.log", l.name)));
    match rt::start(kind, &l.name, &spec, &log).await {
        Ok(process) => {
            let pgid = process.pgid();
            ctx.record(
                l.agent_id,
                Some(Group {
                    name: l.name.clone(),
                    pgid,
                    tmux,
                }),
            );
            ctx.send(HostEvent::Started {
                agent_id: l.agent_id,
                pid: pgid,
                limits: Some(process.applied_limits().describe()),
            });
            tracing::info!(agent = %l.name, pgid, "agent started");
            Some(Running {
                process,
                grace: Duration::from_millis(l.stop_grace_ms),
            })
        }
        Err(e) => failed(e.to_string()),
    }
}

/// The agents' usage now (CPU, memory, open files of their process groups).
fn sample(ctx: &Ctx, sampler: &mut rt::Sampler) -> BTreeMap<AgentId, ResourceUsage> {
    let groups: Vec<(AgentId, u32)> = ctx
        .groups
        .lock()
        .iter()
        .map(|(id, g)| (*id, g.pgid))
        .collect();
    let pgids: Vec<u32> = groups.iter().map(|(_, p)| *p).collect();
    if pgids.is_empty() {
        return BTreeMap::new();
    }
    let usage = sampler.sample(&pgids);
    groups
        .into_iter()
        .filter_map(|(id, pgid)| {
            let u = usage.get(&pgid)?;
            Some((
                id,
                ResourceUsage {
                    cpu_percent: Some(u.cpu_percent),
                    memory_mb: Some(u.rss_bytes as f64 / MIB as f64),
                    active_connections: None,
                    open_files: Some(u.open_files),
                },
            ))
        })
        .collect()
}
