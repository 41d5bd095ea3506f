//! The supervisor: runs managed agents' processes with `flotilla-runtime`, as the core asks.
//!
//! The core decides (spawn, start, stop, pause, resume, restart) and emits effects; once they
//! are durable, [`crate::state::AppState`] hands them to the supervisor as [`Order`]s. Each
//! managed agent gets one tokio task that owns its processes and reports back to the core:
//! `managed_started` when its process (daemon) or task loop (exec) runs, `managed_exited` the
//! moment it ends, so a crash puts the agent's work back in the queue at once.
//!
//! - daemon mode: one long process per agent, given `FLOTILLA_URL`, `FLOTILLA_AGENT_ID`,
//!   `FLOTILLA_TOKEN` (a fresh agent token at every start) and `FLOTILLA_SWARM` (and
//!   `FLOTILLA_CA_CERT` when the coordinator serves TLS).
//! - exec mode: the agent's task loop runs in the coordinator, taking tasks straight from the
//!   core (no HTTP), and runs the command once per task with `run_once`; the task's payload may
//!   set the environment variables its template lists in `payload_env`, and no others.
//!
//! Every start resolves the template against the [`LaunchPolicy`] (work roots, run-as user):
//! an agent whose working directory has left the roots, or whose user is gone, fails to start
//! with the reason.
//!
//! Every few seconds the supervisor samples the agents' process groups from /proc (CPU, RSS,
//! open files) and spawns the agents that managed pools lack; every 100 ms it runs a round of
//! autoscaling ([`crate::routes::autoscale`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::{
    AgentId, AgentMode, AgentTemplate, CompletionReport, FailureReport, Json, ResourceUsage,
    RuntimeKind, Task, TaskState,
};
use flotilla_runtime as rt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::auth::{new_token, record};
use crate::launch::{Launch, LaunchPolicy};
use crate::state::AppState;

/// What the supervisor is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Start the agent's process (or task loop).
    Start(AgentId),
    /// Stop it; `true`: at once.
    Stop(AgentId, bool),
    /// Freeze it.
    Pause(AgentId),
    /// Thaw it.
    Resume(AgentId),
    /// Stop, then start; `true`: stop at once.
    Restart(AgentId, bool),
    /// Stop, restore the checkpoint, start.
    Rollback(AgentId, flotilla_core::CheckpointId),
    /// Take a checkpoint.
    Checkpoint(AgentId, flotilla_core::CheckpointTrigger),
}

/// The supervisor's mailbox, and the policy its agents are started under.
#[derive(Clone)]
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Order>,
    launch: Arc<LaunchPolicy>,
}

impl Supervisor {
    /// A mailbox and its receiving end, for [`run`], starting agents under `launch`.
    pub fn channel(launch: LaunchPolicy) -> (Supervisor, mpsc::UnboundedReceiver<Order>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Supervisor {
                tx,
                launch: Arc::new(launch),
            },
            rx,
        )
    }

    /// Where and as whom managed agents may run (checked when a pool is applied, and at
    /// every start).
    pub fn launch(&self) -> &LaunchPolicy {
        &self.launch
    }

    /// Sends an order (dropped silently once the supervisor has stopped).
    pub fn send(&self, order: Order) {
        let _ = self.tx.send(order);
    }
}

/// What an agent's task is told after it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Stop { force: bool },
    Pause,
    Resume,
}

struct Handle {
    control: mpsc::UnboundedSender<Control>,
    join: JoinHandle<()>,
    /// The process groups running for it now, for sampling and signals.
    groups: Groups,
}

/// A process group running for an agent: its daemon, or one of its exec-mode tasks (with the
/// handle that signals it only while the task runs, so a reused group number is never hit).
struct Member {
    pgid: u32,
    task: Option<rt::TaskGroup>,
}

type Groups = Arc<Mutex<Vec<Member>>>;

/// How daemon-mode agents reach the coordinator.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// Their `FLOTILLA_URL`.
    pub url: String,
    /// Their `FLOTILLA_CA_CERT`: the certificates they trust for an https URL.
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Runs until the server shuts down; then stops every agent it runs (gracefully).
pub async fn run(state: AppState, mut orders: mpsc::UnboundedReceiver<Order>, endpoint: Endpoint) {
    let mut agents: HashMap<AgentId, Handle> = HashMap::new();
    let mut sampler = rt::Sampler::new();
    let mut sample_every = tokio::time::interval(Duration::from_secs(2));
    let mut reconcile_every = tokio::time::interval(Duration::from_secs(1));
    // The shortest evaluation period a scaling policy may have.
    let mut autoscale_every = tokio::time::interval(Duration::from_millis(100));
    autoscale_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut shutdown = state.shutdown.clone();
    // Interval checkpoints asked for and not yet recorded, with when they were asked for.
    let mut checkpointing: HashMap<AgentId, std::time::Instant> = HashMap::new();
    // Its own future, so the watch guard `wait_for` returns never lives across an await.
    let stopping = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                None => break,
                Some(order) => handle(&state, &endpoint, &mut agents, order),
            },
            _ = sample_every.tick() => sample(&state, &agents, &mut sampler),
            _ = autoscale_every.tick() => crate::routes::autoscale(&state).await,
            _ = reconcile_every.tick() => {
                agents.retain(|_, h| !h.join.is_finished());
                crate::hosts::sweep(&state).await;
                crate::routes::reconcile_pools(&state).await;
                let due = state.fleet.lock().checkpoints_due(state.now());
                checkpointing.retain(|id, at| due.contains(id) && at.elapsed() < Duration::from_secs(60));
                for id in due {
                    if let std::collections::hash_map::Entry::Vacant(e) = checkpointing.entry(id) {
                        e.insert(std::time::Instant::now());
                        handle(&state, &endpoint, &mut agents, Order::Checkpoint(id, flotilla_core::CheckpointTrigger::Interval));
                    }
                }
            }
            _ = &mut stopping => break,
        }
    }
    // Stop everything it runs, and wait for it.
    for h in agents.values() {
        let _ = h.control.send(Control::Stop { force: false });
    }
    for (_, h) in agents.drain() {
        let _ = h.join.await;
    }
}

fn handle(
    state: &AppState,
    endpoint: &Endpoint,
    agents: &mut HashMap<AgentId, Handle>,
    order: Order,
) {
    // An agent of a pool placed on hosts runs there: its host carries the order out.
    let agent = match order {
        Order::Start(id)
        | Order::Stop(id, _)
        | Order::Pause(id)
        | Order::Resume(id)
        | Order::Restart(id, _)
        | Order::Rollback(id, _) => Some(id),
        Order::Checkpoint(..) => None,
    };
    if agent.is_some_and(|id| crate::hosts::on_hosts(&state.fleet.lock(), id)) {
        crate::hosts::order(state, order);
        return;
    }
    match order {
        Order::Start(id) => start_after_current(state, endpoint, agents, id, None),
        Order::Stop(id, force) => send(agents, id, Control::Stop { force }),
        Order::Pause(id) => send(agents, id, Control::Pause),
        Order::Resume(id) => send(agents, id, Control::Resume),
        Order::Rollback(id, checkpoint) => {
            start_after_current(state, endpoint, agents, id, Some(checkpoint))
        }
        Order::Checkpoint(id, trigger) => {
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::checkpoints::take(&state, id, None, trigger).await {
                    tracing::warn!(agent = %id, error = %e.message, "automatic checkpoint failed");
                }
            });
        }
        Order::Restart(id, force) => {
            // Stop the current run (if it is not already stopping), then start once it ended:
            // a restart asked while recovery kills the process is not lost.
            send(agents, id, Control::Stop { force });
            start_after_current(state, endpoint, agents, id, None);
        }
    }
}

/// Starts an agent's run once its current one (if any) has ended, restoring a checkpoint in
/// between when asked (rollback). Dropping the current run's control channel stops it
/// gracefully if it was not already stopping (a stop, or a kill by recovery, in progress).
fn start_after_current(
    state: &AppState,
    endpoint: &Endpoint,
    agents: &mut HashMap<AgentId, Handle>,
    id: AgentId,
    restore: Option<flotilla_core::CheckpointId>,
) {
    let previous = agents
        .remove(&id)
        .filter(|h| !h.join.is_finished())
        .map(|h| h.join);
    let (control, rx) = mpsc::unbounded_channel();
    let groups: Groups = Arc::new(Mutex::new(Vec::new()));
    let run = run_agent(state.clone(), endpoint.clone(), id, rx, groups.clone());
    let state = state.clone();
    let join = tokio::spawn(async move {
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        if let Some(checkpoint) = restore {
            let outcome = crate::checkpoints::restore(&state, id, checkpoint).await;
            if let Err(e) = &outcome {
                tracing::warn!(agent = %id, %checkpoint, error = %e, "rollback failed; starting it as it is");
            }
            let _ = state
                .apply(|f, now| f.rollback_restored(id, checkpoint, outcome, now))
                .await;
        }
        run.await
    });
    agents.insert(
        id,
        Handle {
            control,
            join,
            groups,
        },
    );
}

fn send(agents: &HashMap<AgentId, Handle>, id: AgentId, control: Control) {
    if let Some(h) = agents.get(&id) {
        let _ = h.control.send(control);
    }
}

/// Samples every agent's process groups and records the usage on the agents.
fn sample(state: &AppState, agents: &HashMap<AgentId, Handle>, sampler: &mut rt::Sampler) {
    let groups: Vec<(AgentId, Vec<u32>)> = agents
        .iter()
        .map(|(id, h)| {
            (
                *id,
                h.groups.lock().iter().map(|m| m.pgid).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, g)| !g.is_empty())
        .collect();
    let all: Vec<u32> = groups.iter().flat_map(|(_, g)| g.iter().copied()).collect();
    if all.is_empty() {
        // Pressure is judged on every tick, with or without agents running.
        let state = state.clone();
        tokio::spawn(async move { crate::resources::evaluate(&state).await });
        return;
    }
    let usage = sampler.sample(&all);
    let mut sampled = Vec::with_capacity(groups.len());
    for (id, gs) in groups {
        let mut total = ResourceUsage {
            cpu_percent: Some(0.0),
            memory_mb: Some(0.0),
            active_connections: None,
            open_files: Some(0),
        };
        for g in gs {
            if let Some(u) = usage.get(&g) {
                *total.cpu_percent.as_mut().expect("set") += u.cpu_percent;
                *total.memory_mb.as_mut().expect("set") += u.rss_bytes as f64 / (1024.0 * 1024.0);
                *total.open_files.as_mut().expect("set") += u.open_files;
            }
        }
        sampled.push((id, total));
    }
    // Usage can change an agent's health (memory over its limit takes it down): a command
    // like any other, persisted, off the supervisor's loop.
    let state = state.clone();
    tokio::spawn(async move {
        let _ = state
            .apply(|f, now| {
                for (id, usage) in sampled {
                    f.record_usage(id, usage, now);
                }
                Ok(())
            })
            .await;
        // Then pressure, on the usage just recorded.
        crate::resources::evaluate(&state).await;
    });
}

/// The runtime's command for a template started as `launch` says, with extra environment.
fn command_spec(
    t: &AgentTemplate,
    launch: &Launch,
    env: BTreeMap<String, String>,
) -> rt::CommandSpec {
    let mut spec = rt::CommandSpec::new(t.command.clone()).args(t.args.iter().cloned());
    spec.env = t.env.clone();
    spec.env.extend(env);
    spec.workdir = launch.workdir.clone();
    spec.user = launch.user.clone();
    spec.limits = rt::Limits {
        memory_bytes: t.limits.memory_bytes,
        cpu_cores: t.limits.cpu_cores,
        cpu_time: t.limits.cpu_time,
        open_files: None,
    };
    spec
}

fn runtime_kind(k: RuntimeKind) -> rt::RuntimeKind {
    match k {
        RuntimeKind::Process => rt::RuntimeKind::Process,
        RuntimeKind::Tmux => rt::RuntimeKind::Tmux,
    }
}

/// Issues managed agent `id` the token of hash `hash` and revokes its earlier ones (under the
/// fleet lock, in a command): the records to store with the command's changes.
pub(crate) fn fresh_agent_token(
    state: &AppState,
    f: &flotilla_core::Fleet,
    id: AgentId,
    hash: String,
    now: flotilla_core::Timestamp,
) -> Vec<flotilla_store::TokenRecord> {
    let name = f.agent(id).map(|a| a.name.clone()).unwrap_or_default();
    let mut tokens = state.tokens.write();
    let mut records: Vec<_> = tokens.revoke_agent(id, now).into_iter().collect();
    let new = record(
        hash,
        flotilla_store::TokenRole::Agent,
        Some(id),
        &format!("managed agent {name}"),
        now,
    );
    tokens.insert(new.clone());
    records.push(new);
    records
}

/// Reports an exit to the core (logging, not failing, if the agent is gone).
async fn exited(state: &AppState, id: AgentId, how: String, expected: bool) {
    if let Err(e) = state
        .apply(|f, now| f.managed_exited(id, how, expected, now).map(|_| ()))
        .await
    {
        tracing::debug!(agent = %id, error = %e.message, "exit not recorded");
    }
}

/// One managed agent's life: start it, watch it, obey controls, report exits.
async fn run_agent(
    state: AppState,
    endpoint: Endpoint,
    id: AgentId,
    mut control: mpsc::UnboundedReceiver<Control>,
    groups: Groups,
) {
    let Some((agent, template)) = ({
        let fleet = state.fleet.lock();
        fleet
            .template_of(id)
            .map(|(a, p)| (a.clone(), p.template.clone().expect("managed pool")))
    }) else {
        return;
    };
    // Stopped before this run began (a stop while a restore or an earlier run was ending).
    if agent
        .managed
        .as_ref()
        .is_some_and(|m| m.desired == flotilla_core::Desired::Stopped)
    {
        return;
    }
    // A process group left by a coordinator that died must not run beside the new one.
    if let Some(pid) = agent.managed.as_ref().and_then(|m| m.pid) {
        rt::kill_leftover_group(pid, &agent.name);
    }
    if template.runtime == RuntimeKind::Tmux {
        let _ = rt::tmux::kill_session(&agent.name).await;
    }
    let log = rt::LogSpec::new(state.log_path(&agent.name));
    // Where and as whom, checked again now: links, users and roots may have changed since the
    // pool was applied.
    let launch = match state.supervisor.launch().resolve(&template) {
        Ok(launch) => launch,
        Err(e) => {
            tracing::warn!(agent = %agent.name, error = %e, "managed agent not started");
            exited(
                &state,
                agent.id,
                format!("could not be started: {e}"),
                false,
            )
            .await;
            return;
        }
    };
    let run = Run {
        agent: &agent,
        template: &template,
        launch: &launch,
        log: &log,
    };
    match template.mode {
        AgentMode::Daemon => run_daemon(&state, &endpoint, &run, &mut control, &groups).await,
        AgentMode::Exec => run_exec(&state, &run, &mut control, &groups).await,
    }
    groups.lock().clear();
    // An exec-mode agent's session holds its log pane between tasks: close it too.
    if template.runtime == RuntimeKind::Tmux {
        let _ = rt::tmux::kill_session(&agent.name).await;
    }
}

/// What one run of a managed agent starts from.
struct Run<'a> {
    agent: &'a flotilla_core::Agent,
    template: &'a AgentTemplate,
    launch: &'a Launch,
    log: &'a rt::LogSpec,
}

async fn run_daemon(
    state: &AppState,
    endpoint: &Endpoint,
    run: &Run<'_>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    groups: &Groups,
) {
    let Run {
        agent,
        template,
        launch,
        log,
    } = *run;
    let id = agent.id;
    // A fresh token at every start: the secret of the last one is not kept.
    let (secret, hash) = new_token();
    let issued = state
        .apply_with_tokens(|f, now| Ok(((), fresh_agent_token(state, f, id, hash, now))))
        .await;
    if let Err(e) = issued {
        exited(
            state,
            id,
            format!("could not be started: {}", e.message),
            false,
        )
        .await;
        return;
    }
    let swarm = state
        .fleet
        .lock()
        .swarm_by_id(agent.swarm_id)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let env = BTreeMap::from([
        ("FLOTILLA_URL".to_owned(), endpoint.url.clone()),
        ("FLOTILLA_AGENT_ID".to_owned(), id.to_string()),
        ("FLOTILLA_AGENT_NAME".to_owned(), agent.name.clone()),
        ("FLOTILLA_TOKEN".to_owned(), secret),
        ("FLOTILLA_SWARM".to_owned(), swarm),
    ]);
    let mut env = env;
    if let Some(exe) = &state.flotilla_bin {
        env.insert("FLOTILLA_BIN".to_owned(), exe.display().to_string());
    }
    // A template may name its own (a private CA's file, say).
    if let Some(ca) = &endpoint.ca_cert
        && !template.env.contains_key("FLOTILLA_CA_CERT")
    {
        env.insert("FLOTILLA_CA_CERT".to_owned(), ca.display().to_string());
    }
    let spec = command_spec(template, launch, env);
    let mut process = match rt::start(runtime_kind(template.runtime), &agent.name, &spec, log).await
    {
        Ok(p) => p,
        Err(e) => {
            exited(state, id, format!("could not be started: {e}"), false).await;
            return;
        }
    };
    groups.lock().push(Member {
        pgid: process.pgid(),
        task: None,
    });
    let note = process.applied_limits().describe();
    let pgid = process.pgid();
    if state
        .apply(|f, now| {
            f.managed_started(id, Some(pgid), Some(note), now)
                .map(|_| ())
        })
        .await
        .is_err()
    {
        // Removed meanwhile.
        process.stop(Duration::ZERO).await;
        return;
    }
    loop {
        tokio::select! {
            exit = process.wait() => {
                // Reap it, and clear what is left of it (cgroup, tmux session).
                process.stop(Duration::ZERO).await;
                exited(state, id, exit.describe(), false).await;
                return;
            }
            c = control.recv() => match c {
                None | Some(Control::Stop { force: false }) => {
                    let exit = process.stop(template.stop_grace).await;
                    exited(state, id, exit.describe(), true).await;
                    return;
                }
                Some(Control::Stop { force: true }) => {
                    let exit = process.stop(Duration::ZERO).await;
                    exited(state, id, exit.describe(), true).await;
                    return;
                }
                Some(Control::Pause) => {
                    if let Err(e) = process.pause() {
                        tracing::warn!(agent = %agent.name, error = %e, "pause failed");
                    }
                }
                Some(Control::Resume) => {
                    if let Err(e) = process.resume() {
                        tracing::warn!(agent = %agent.name, error = %e, "resume failed");
                    }
                }
            }
        }
    }
}

/// The exec-mode agent: `max_concurrent_tasks` runners take tasks from the core and run the
/// command once per task; the agent's own loop obeys controls.
async fn run_exec(
    state: &AppState,
    run: &Run<'_>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    groups: &Groups,
) {
    let Run {
        agent,
        template,
        launch,
        log,
    } = *run;
    let id = agent.id;
    if state
        .apply(|f, now| {
            f.managed_started(
                id,
                None,
                Some(rt::Limits::describe_plan(
                    &command_spec(template, launch, BTreeMap::new()).limits,
                )),
                now,
            )
            .map(|_| ())
        })
        .await
        .is_err()
    {
        return;
    }
    // `paused` freezes the runners between tasks; `stop` ends them.
    let (paused_tx, paused_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut runners = tokio::task::JoinSet::new();
    for _ in 0..agent.max_concurrent_tasks.max(1) {
        runners.spawn(exec_runner(
            state.clone(),
            id,
            template.clone(),
            launch.clone(),
            log.clone(),
            paused_rx.clone(),
            stop_rx.clone(),
            groups.clone(),
        ));
    }
    let signal_all = |sig: rt::Signal| {
        for task in groups.lock().iter().filter_map(|m| m.task.as_ref()) {
            let _ = task.signal(sig);
        }
    };
    let grace = loop {
        match control.recv().await {
            None => break template.stop_grace,
            Some(Control::Stop { force }) => {
                break if force {
                    Duration::ZERO
                } else {
                    template.stop_grace
                };
            }
            Some(Control::Pause) => {
                let _ = paused_tx.send(true);
                signal_all(rt::Signal::Stop);
            }
            Some(Control::Resume) => {
                let _ = paused_tx.send(false);
                signal_all(rt::Signal::Cont);
            }
        }
    };
    // Stop: no new tasks; running ones get their grace, then their process groups are killed.
    let _ = stop_tx.send(true);
    let _ = paused_tx.send(false);
    signal_all(rt::Signal::Cont);
    if !grace.is_zero() {
        signal_all(rt::Signal::Term);
    }
    let drained = tokio::time::timeout(grace, async {
        while runners.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() || grace.is_zero() {
        signal_all(rt::Signal::Kill);
        runners.shutdown().await;
    }
    exited(state, id, "stopped".to_owned(), true).await;
}

/// One task at a time: take, run, report, until stopped.
#[allow(clippy::too_many_arguments)]
async fn exec_runner(
    state: AppState,
    id: AgentId,
    template: AgentTemplate,
    launch: Launch,
    log: rt::LogSpec,
    mut paused: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    groups: Groups,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        if *paused.borrow() {
            tokio::select! {
                _ = paused.wait_for(|p| !*p) => continue,
                _ = stop.changed() => return,
            }
        }
        let task = {
            let poll = state.waiters.enter_agent(&state, id);
            let notified = poll.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match state.apply(|f, now| f.take_task(id, now)).await {
                Ok(Some(task)) => task,
                Ok(None) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = stop.changed() => return,
                        _ = paused.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                    continue;
                }
                // The agent is gone (removed): nothing more to do.
                Err(_) => return,
            }
        };
        run_task(&state, id, &template, &launch, &log, task, &groups, &stop).await;
    }
}

/// Runs one task's command and reports the outcome.
#[allow(clippy::too_many_arguments)]
async fn run_task(
    state: &AppState,
    id: AgentId,
    template: &AgentTemplate,
    launch: &Launch,
    log: &rt::LogSpec,
    task: Task,
    groups: &Groups,
    stopping: &watch::Receiver<bool>,
) {
    let payload = task.payload.to_value();
    let vars = rt::TaskVars {
        id: task.id.to_string(),
        type_: task.task_type.clone(),
        attempt: task.attempts,
    };
    let args = match rt::render_args(&template.args, &payload, &vars) {
        Ok(a) => a,
        Err(e) => {
            report_failure(
                state,
                id,
                &task,
                format!("the agent template cannot be filled in: {e}"),
                false,
            )
            .await;
            return;
        }
    };
    // The variables the payload sets, only those the template lists: anything else fails the
    // task before anything runs (retrying would not change the payload).
    let mut env = match rt::render_env(&template.payload_env, &payload) {
        Ok(env) => env,
        Err(e) => {
            report_failure(state, id, &task, format!("refused: {e}"), false).await;
            return;
        }
    };
    let mut spec = command_spec(template, launch, BTreeMap::new());
    spec.args = args;
    env.extend([
        ("FLOTILLA_TASK_ID".to_owned(), task.id.to_string()),
        ("FLOTILLA_TASK_TYPE".to_owned(), task.task_type.clone()),
        (
            "FLOTILLA_TASK_ATTEMPT".to_owned(),
            task.attempts.to_string(),
        ),
    ]);
    if task.payload.len() <= 64 * 1024 {
        env.insert(
            "FLOTILLA_TASK_PAYLOAD".to_owned(),
            task.payload.get().to_owned(),
        );
    }
    let deadline = match task.state {
        TaskState::Running { timeout_at, .. } => {
            let left = timeout_at.since(state.now());
            Some(tokio::time::Instant::now() + left)
        }
        _ => None,
    };
    let request = rt::ExecRequest {
        spec,
        stdin: task.payload.get().as_bytes().to_vec(),
        env,
        deadline,
        stdout_limit: state.fleet.lock().limits().max_payload_bytes,
        stderr_tail: 4 * 1024,
        log: Some(log.clone()),
    };
    let group_slot = groups.clone();
    let on_spawn = move |group: rt::TaskGroup| {
        group_slot.lock().push(Member {
            pgid: group.pgid(),
            task: Some(group),
        })
    };
    let outcome = if template.runtime == RuntimeKind::Tmux {
        let name = state
            .fleet
            .lock()
            .agent(id)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        rt::tmux::run_once_in_tmux_with(&name, request, on_spawn).await
    } else {
        rt::exec::run_once_with(request, on_spawn).await
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            report_failure(
                state,
                id,
                &task,
                format!("the command could not be run: {e}"),
                true,
            )
            .await;
            return;
        }
    };
    groups.lock().retain(|m| m.pgid != outcome.pgid);
    if *stopping.borrow() && !outcome.exit.success() {
        // Killed by a stop of its agent: the task goes back to the queue without costing an
        // attempt (`managed_exited`), not failed by the signal.
        return;
    }
    if outcome.timed_out {
        // The core's own timer fails the attempt (kind `timeout`) at the same instant.
        return;
    }
    if outcome.exit.success() {
        let text = String::from_utf8_lossy(&outcome.stdout);
        let trimmed = text.trim_end_matches('\n');
        let result = Json::parse(trimmed).unwrap_or_else(|_| Json::from_value(&trimmed));
        let report = CompletionReport {
            result,
            attempt: Some(task.attempts),
        };
        let _ = state
            .apply(|f, now| f.complete_task(id, task.id, report, now).map(|_| ()))
            .await;
    } else {
        let tail = outcome.stderr_tail.trim();
        let message = if tail.is_empty() {
            outcome.exit.describe()
        } else {
            format!("{}: {tail}", outcome.exit.describe())
        };
        report_failure(state, id, &task, message, true).await;
    }
}

async fn report_failure(
    state: &AppState,
    id: AgentId,
    task: &Task,
    error: String,
    retryable: bool,
) {
    let report = FailureReport {
        error,
        retryable,
        attempt: Some(task.attempts),
    };
    let _ = state
        .apply(|f, now| f.fail_task(id, task.id, report, now).map(|_| ()))
        .await;
}
