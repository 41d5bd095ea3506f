//! The state of `flotilla top`, without I/O or a terminal: the rows derived from the last
//! snapshot (sorted and worded once per read, not once per frame), the throughput measured
//! from successive reads, whether the coordinator answers, and what the user chose (the pane
//! in focus, how far each is scrolled, the swarm in view, pause, help).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::api::{ActiveTaskCounts, AgentCounts, OrchestratorInfo};
use flotilla_core::{
    Agent, AgentId, AgentStatus, EventKind, HealthState, SwarmId, SwarmStatus, TaskId, TaskState,
    Timestamp,
};

use super::fetch::Snapshot;

/// How far back throughput is measured.
pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

/// Rows a page key scrolls.
pub const PAGE: usize = 10;

/// How many of the oldest queued tasks the queue pane lists.
pub const OLDEST_SHOWN: usize = 20;

/// The panes, in Tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    /// The swarms table.
    Swarms,
    /// The agents table.
    Agents,
    /// Queue counts and the oldest queued tasks.
    Queue,
    /// The newest events.
    Events,
}

impl Pane {
    /// Every pane, in Tab order.
    pub const ALL: [Pane; 4] = [Pane::Swarms, Pane::Agents, Pane::Queue, Pane::Events];

    fn index(self) -> usize {
        match self {
            Pane::Swarms => 0,
            Pane::Agents => 1,
            Pane::Queue => 2,
            Pane::Events => 3,
        }
    }
}

/// What the user asked for (the terminal's keys, already read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Leave.
    Quit,
    /// Focus the next pane.
    NextPane,
    /// Focus the previous pane.
    PrevPane,
    /// Scroll the focused pane up a row.
    Up,
    /// Down a row.
    Down,
    /// Up a page.
    PageUp,
    /// Down a page.
    PageDown,
    /// To the first row.
    Top,
    /// To the last row.
    Bottom,
    /// Show the next swarm alone (after the last, all of them again).
    CycleSwarm,
    /// Stop or resume reading the coordinator.
    TogglePause,
    /// Show or hide the keys.
    ToggleHelp,
    /// Read the coordinator now.
    Refresh,
}

/// What the loop does after an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Draw again.
    Redraw,
    /// Read the coordinator at once (the swarm in view changed, or a refresh was asked for),
    /// then draw.
    Fetch,
    /// Restore the terminal and end.
    Quit,
}

/// Whether the coordinator answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Link {
    /// Nothing read yet.
    Connecting,
    /// The last read succeeded, at this instant.
    Up(Instant),
    /// The last read failed.
    Down {
        /// Why, in one line.
        error: String,
        /// No answer came (refused, timed out); otherwise the coordinator answered with an
        /// error (a revoked token, a swarm that no longer exists).
        unreachable: bool,
        /// Since when reads fail.
        since: Instant,
        /// How many reads in a row failed.
        failures: u32,
    },
}

/// Why a read failed.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadError {
    /// In one line.
    pub message: String,
    /// No answer came at all.
    pub unreachable: bool,
}

/// Completions and failures per minute, measured over the last [`THROUGHPUT_WINDOW`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tasks completed per minute.
    pub done_per_min: f64,
    /// Task attempts failed per minute.
    pub failed_per_min: f64,
    /// The span it was measured over (up to the window).
    pub over: Duration,
}

/// Throughput from successive reads of the agents' counters (`tasks_completed`,
/// `tasks_failed`): each read adds what each agent seen in the previous read did since. An
/// agent seen for the first time (new, or back in view) only sets its baseline, so a change
/// of view or a restart of the coordinator makes no spike.
#[derive(Clone, Debug, Default)]
pub struct Throughput {
    last: HashMap<AgentId, (u64, u64)>,
    done: u64,
    failed: u64,
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Throughput {
    /// Takes a read of `agents` made at `at`.
    pub fn record(&mut self, at: Instant, agents: &[Agent]) {
        let mut seen = HashMap::with_capacity(agents.len());
        for a in agents {
            let now = (a.tasks_completed, a.tasks_failed);
            if let Some(&(done, failed)) = self.last.get(&a.id) {
                // Counters only grow; a smaller one is a restarted count, not negative work.
                self.done += now.0.saturating_sub(done);
                self.failed += now.1.saturating_sub(failed);
            }
            seen.insert(a.id, now);
        }
        self.last = seen;
        self.samples.push_back((at, self.done, self.failed));
        // Keep the newest sample at or before the window's start: the window's first value.
        while self.samples.len() > 2 && self.samples[1].0 + THROUGHPUT_WINDOW <= at {
            self.samples.pop_front();
        }
    }

    /// The rate over the last minute, once two reads are at least a second apart.
    pub fn rate(&self) -> Option<Rate> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let over = last.0.duration_since(first.0);
        if over < Duration::from_secs(1) {
            return None;
        }
        let per_min = |n: u64| n as f64 * 60.0 / over.as_secs_f64();
        Some(Rate {
            done_per_min: per_min(last.1 - first.1),
            failed_per_min: per_min(last.2 - first.2),
            over,
        })
    }
}

/// Fleet (or swarm) totals for the header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// How many swarms exist.
    pub swarms: u64,
    /// Agents in view, by status.
    pub agents: AgentCounts,
    /// Unfinished tasks in view, by status.
    pub tasks: ActiveTaskCounts,
    /// How long the oldest ready task in view has waited, in milliseconds.
    pub oldest_queued_ms: Option<u64>,
}

/// A row of the swarms table.
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmRow {
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: SwarmStatus,
    /// Its topology, as the API writes it.
    pub topology: &'static str,
    /// Its agents.
    pub agents: u64,
    /// Of which busy (known for swarms in view).
    pub busy: Option<u64>,
    /// Tasks waiting for an agent.
    pub queue_depth: u64,
    /// Tasks running (known for swarms in view).
    pub running: Option<u64>,
    /// How long its oldest ready task has waited (known for swarms in view).
    pub oldest_queued_ms: Option<u64>,
}

/// A row of the agents table.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRow {
    /// Its name.
    pub name: String,
    /// Its swarm's name.
    pub swarm: String,
    /// Its status.
    pub status: AgentStatus,
    /// Its health as the coordinator judges it.
    pub health: HealthState,
    /// The health in words (`degraded (error_rate)`).
    pub health_text: String,
    /// The task it works on: type and the end of the id, `+N` when it holds more; `-` for none.
    pub task: String,
    /// CPU use in percent of one core, when reported.
    pub cpu_percent: Option<f64>,
    /// Resident memory in MiB, when reported.
    pub memory_mb: Option<f64>,
    /// When it last showed a sign of life.
    pub last_heartbeat_at: Timestamp,
}

/// A row of the oldest queued tasks.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedRow {
    /// The task.
    pub id: TaskId,
    /// Its swarm's name.
    pub swarm: String,
    /// Its type.
    pub task_type: String,
    /// Its priority, 1 to 10.
    pub priority: u8,
    /// When it entered the queue.
    pub queued_at: Timestamp,
    /// Set for a retry waiting for its backoff.
    pub run_after: Option<Timestamp>,
    /// Attempts so far.
    pub attempts: u32,
}

/// A row of the events pane.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// Its place in the log.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The agent's name (its id when it is not in view), `-` for none.
    pub agent: String,
    /// Details in words; the task when there are none.
    pub detail: String,
}

/// What is shown, derived from one snapshot.
#[derive(Clone, Debug)]
pub struct View {
    /// The coordinator's status.
    pub info: OrchestratorInfo,
    /// Totals of what is in view.
    pub totals: Totals,
    /// Every swarm, by name.
    pub swarms: Vec<SwarmRow>,
    /// The agents in view, by swarm then name (`w-2` before `w-10`).
    pub agents: Vec<AgentRow>,
    /// The oldest of the queued tasks read, oldest first.
    pub oldest_queued: Vec<QueuedRow>,
    /// How many queued tasks were read.
    pub queued_read: usize,
    /// Whether those were all the queued tasks in view.
    pub queued_complete: bool,
    /// The newest events in view, newest first.
    pub events: Vec<EventRow>,
}

impl View {
    /// Derives the rows from a snapshot.
    pub fn from_snapshot(snap: &Snapshot) -> View {
        let swarm_names: HashMap<SwarmId, &str> = snap
            .swarms
            .iter()
            .map(|s| (s.swarm.id, s.swarm.name.as_str()))
            .collect();
        let swarm_name = |id: SwarmId| {
            swarm_names
                .get(&id)
                .map_or_else(|| id.to_string(), |n| (*n).to_owned())
        };
        let totals = match &snap.swarm {
            None => Totals {
                swarms: snap.info.swarms,
                agents: snap.info.agents.clone(),
                tasks: snap.info.tasks.clone(),
                oldest_queued_ms: snap
                    .health
                    .iter()
                    .filter_map(|h| h.oldest_queued_age_ms)
                    .max(),
            },
            Some(_) => match snap.health.first() {
                Some(h) => Totals {
                    swarms: snap.info.swarms,
                    agents: h.agents.clone(),
                    tasks: h.tasks.clone(),
                    oldest_queued_ms: h.oldest_queued_age_ms,
                },
                None => Totals {
                    swarms: snap.info.swarms,
                    ..Totals::default()
                },
            },
        };
        let health: HashMap<SwarmId, &flotilla_core::api::SwarmHealth> =
            snap.health.iter().map(|h| (h.swarm_id, h)).collect();
        let mut swarms: Vec<SwarmRow> = snap
            .swarms
            .iter()
            .map(|s| {
                let h = health.get(&s.swarm.id);
                SwarmRow {
                    name: s.swarm.name.clone(),
                    status: s.swarm.status,
                    topology: s.swarm.topology.as_str(),
                    agents: s.agent_count,
                    busy: h.map(|h| {
                        h.agents
                            .by_status
                            .get(&AgentStatus::Busy)
                            .copied()
                            .unwrap_or(0)
                    }),
                    queue_depth: s.queue_depth,
                    running: h.map(|h| h.tasks.running),
                    oldest_queued_ms: h.and_then(|h| h.oldest_queued_age_ms),
                }
            })
            .collect();
        swarms.sort_by(|a, b| a.name.cmp(&b.name));

        let running: HashMap<TaskId, &str> = snap
            .running
            .iter()
            .map(|t| (t.id, t.task_type.as_str()))
            .collect();
        let mut agents: Vec<AgentRow> = snap
            .agents
            .iter()
            .map(|a| AgentRow {
                name: a.name.clone(),
                swarm: swarm_name(a.swarm_id),
                status: a.status,
                health: a.health.state,
                health_text: match a.health.reason {
                    Some(r) if a.health.state != HealthState::Healthy => {
                        format!("{} ({})", a.health.state.as_str(), r.as_str())
                    }
                    _ => a.health.state.as_str().to_owned(),
                },
                task: current_task(&a.current_tasks, &running),
                cpu_percent: a.resource_usage.cpu_percent,
                memory_mb: a.resource_usage.memory_mb,
                last_heartbeat_at: a.last_heartbeat_at,
            })
            .collect();
        agents.sort_by(|a, b| {
            a.swarm
                .cmp(&b.swarm)
                .then_with(|| natural_key(&a.name).cmp(&natural_key(&b.name)))
        });

        let mut oldest_queued: Vec<QueuedRow> = snap
            .queued
            .tasks
            .iter()
            .filter_map(|t| match t.state {
                TaskState::Queued {
                    queued_at,
                    run_after,
                } => Some(QueuedRow {
                    id: t.id,
                    swarm: swarm_name(t.swarm_id),
                    task_type: t.task_type.clone(),
                    priority: t.priority,
                    queued_at,
                    run_after,
                    attempts: t.attempts,
                }),
                _ => None,
            })
            .collect();
        oldest_queued.sort_by_key(|q| (q.queued_at, q.id));
        oldest_queued.truncate(OLDEST_SHOWN);

        let names: HashMap<AgentId, &str> = snap
            .agents
            .iter()
            .map(|a| (a.id, a.name.as_str()))
            .collect();
        let events = snap
            .events
            .iter()
            .rev()
            .map(|e| EventRow {
                seq: e.seq,
                at: e.at,
                kind: e.kind,
                agent: e.agent_id.map_or_else(
                    || "-".to_owned(),
                    |id| {
                        names
                            .get(&id)
                            .map_or_else(|| short_id(id.0), |n| (*n).to_owned())
                    },
                ),
                detail: match (e.detail.is_empty(), e.task_id) {
                    (false, _) => e.detail.clone(),
                    (true, Some(t)) => format!("task {}", short_id(t.0)),
                    (true, None) => String::new(),
                },
            })
            .collect();

        View {
            info: snap.info.clone(),
            totals,
            swarms,
            agents,
            oldest_queued,
            queued_read: snap.queued.tasks.len(),
            queued_complete: snap.queued.complete,
            events,
        }
    }

    /// How many rows a pane has.
    pub fn rows(&self, pane: Pane) -> usize {
        match pane {
            Pane::Swarms => self.swarms.len(),
            Pane::Agents => self.agents.len(),
            Pane::Queue => self.oldest_queued.len(),
            Pane::Events => self.events.len(),
        }
    }
}

/// The last 8 hex digits of an id: the random end of a UUID v7, enough to tell tasks apart
/// on screen.
pub fn short_id(id: uuid::Uuid) -> String {
    let simple = id.simple().to_string();
    format!("…{}", &simple[simple.len() - 8..])
}

/// An agent's current task in words: the first one's type (when read) and short id, `+N` for
/// the others; `-` for none.
fn current_task(held: &[TaskId], running: &HashMap<TaskId, &str>) -> String {
    let Some(first) = held.first() else {
        return "-".to_owned();
    };
    let mut text = match running.get(first) {
        Some(kind) => format!("{kind} {}", short_id(first.0)),
        None => short_id(first.0),
    };
    if held.len() > 1 {
        text.push_str(&format!(" +{}", held.len() - 1));
    }
    text
}

/// Sorts names with their numbers as numbers: `w-2` before `w-10`.
fn natural_key(name: &str) -> Vec<Result<u64, &str>> {
    let mut parts = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            // Numbers too long for u64 sort as text, after every number.
            match rest[..digits].parse::<u64>() {
                Ok(n) => parts.push(Ok(n)),
                Err(_) => parts.push(Err(&rest[..digits])),
            }
            rest = &rest[digits..];
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            parts.push(Err(&rest[..text]));
            rest = &rest[text..];
        }
    }
    parts
}

/// Everything `flotilla top` knows and was asked.
#[derive(Clone, Debug)]
pub struct Model {
    /// The coordinator's URL.
    pub url: String,
    /// How often it is read.
    pub interval: Duration,
    /// The swarm in view (its name), `None` for all.
    pub swarm: Option<String>,
    /// Reads are stopped.
    pub paused: bool,
    /// The keys are shown.
    pub help: bool,
    /// The pane arrow keys scroll.
    pub pane: Pane,
    scroll: [usize; 4],
    /// Whether the coordinator answers.
    pub link: Link,
    /// What the last good read showed (kept while the coordinator does not answer).
    pub view: Option<View>,
    /// Throughput of what is in view.
    pub throughput: Throughput,
}

impl Model {
    /// The state before the first read.
    pub fn new(url: &str, interval: Duration, swarm: Option<String>) -> Model {
        Model {
            url: url.to_owned(),
            interval,
            swarm,
            paused: false,
            help: false,
            pane: Pane::Agents,
            scroll: [0; 4],
            link: Link::Connecting,
            view: None,
            throughput: Throughput::default(),
        }
    }

    /// Takes the outcome of a read that finished at `at`. A snapshot of another swarm than
    /// the one now in view (read before the user switched) is dropped.
    pub fn apply(&mut self, read: Result<Snapshot, ReadError>, at: Instant) {
        match read {
            Ok(snap) => {
                if snap.swarm != self.swarm {
                    return;
                }
                self.throughput.record(at, &snap.agents);
                let view = View::from_snapshot(&snap);
                for pane in Pane::ALL {
                    let last = view.rows(pane).saturating_sub(1);
                    let s = &mut self.scroll[pane.index()];
                    *s = (*s).min(last);
                }
                self.view = Some(view);
                self.link = Link::Up(at);
            }
            Err(e) => {
                let (since, failures) = match &self.link {
                    Link::Down {
                        since, failures, ..
                    } => (*since, failures + 1),
                    _ => (at, 1),
                };
                self.link = Link::Down {
                    error: e.message,
                    unreachable: e.unreachable,
                    since,
                    failures,
                };
            }
        }
    }

    /// How far `pane` is scrolled: the index of its first row shown.
    pub fn scroll(&self, pane: Pane) -> usize {
        self.scroll[pane.index()]
    }

    /// The swarms one can cycle through, by name.
    fn swarm_names(&self) -> Vec<&str> {
        self.view
            .as_ref()
            .map(|v| v.swarms.iter().map(|s| s.name.as_str()).collect())
            .unwrap_or_default()
    }

    /// Does what the user asked.
    pub fn input(&mut self, input: Input) -> Action {
        let rows = self.view.as_ref().map_or(0, |v| v.rows(self.pane));
        let last = rows.saturating_sub(1);
        let scroll = &mut self.scroll[self.pane.index()];
        match input {
            Input::Quit => return Action::Quit,
            Input::NextPane | Input::PrevPane => {
                let i = self.pane.index();
                let n = Pane::ALL.len();
                let next = if input == Input::NextPane {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.pane = Pane::ALL[next];
            }
            Input::Up => *scroll = scroll.saturating_sub(1),
            Input::Down => *scroll = (*scroll + 1).min(last),
            Input::PageUp => *scroll = scroll.saturating_sub(PAGE),
            Input::PageDown => *scroll = (*scroll + PAGE).min(last),
            Input::Top => *scroll = 0,
            Input::Bottom => *scroll = last,
            Input::ToggleHelp => self.help = !self.help,
            Input::TogglePause => {
                self.paused = !self.paused;
                // Resuming reads at once rather than an interval later.
                if !self.paused {
                    return Action::Fetch;
                }
            }
            Input::Refresh => return Action::Fetch,
            Input::CycleSwarm => {
                let names = self.swarm_names();
                let next = match &self.swarm {
                    None => names.first().map(|s| (*s).to_owned()),
                    Some(current) => names
                        .iter()
                        .position(|n| n == current)
                        .and_then(|i| names.get(i + 1))
                        .map(|s| (*s).to_owned()),
                };
                self.swarm = next;
                // Another view: its rows, scroll and rate start again.
                self.scroll = [0; 4];
                self.throughput = Throughput::default();
                return Action::Fetch;
            }
        }
        Action::Redraw
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::commands::top::fetch::Queued;
    use flotilla_core::api::{SwarmHealth, SwarmView};
    use flotilla_core::{Event, Swarm, SwarmConfig, Task, Topology};

    pub(crate) const NOW: i64 = 1_767_225_600_000;

    fn id<T: From<uuid::Uuid>>() -> T {
        T::from(uuid::Uuid::now_v7())
    }

    pub(crate) fn swarm(name: &str) -> SwarmView {
        SwarmView {
            swarm: Swarm {
                id: id(),
                name: name.to_owned(),
                description: String::new(),
                topology: Topology::Star,
                config: SwarmConfig::default(),
                status: SwarmStatus::Active,
                leader_agent_id: None,
                created_at: Timestamp::from_millis(NOW - 3_600_000),
                updated_at: Timestamp::from_millis(NOW - 3_600_000),
            },
            agent_count: 0,
            queue_depth: 0,
            pools: Vec::new(),
        }
    }

    pub(crate) fn agent(swarm: &SwarmView, name: &str, status: AgentStatus) -> Agent {
        let mut a: Agent = serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::now_v7(),
            "swarm_id": swarm.swarm.id,
            "name": name,
            "type": "worker",
            "capabilities": [],
            "max_concurrent_tasks": 1,
            "role": "worker",
            "status": status,
            "reported_health": "healthy",
            "metadata": {},
            "resource_usage": {"cpu_percent": 12.5, "memory_mb": 64.0},
            "current_tasks": [],
            "tasks_completed": 0,
            "tasks_failed": 0,
            "registered_at": Timestamp::from_millis(NOW - 60_000),
            "last_heartbeat_at": Timestamp::from_millis(NOW - 3_000),
            "lease_until": Timestamp::from_millis(NOW + 12_000),
            "stopped_at": null,
        }))
        .expect("an agent as the API writes it");
        a.status = status;
        a
    }

    pub(crate) fn task(swarm: &SwarmView, kind: &str, state: TaskState) -> Task {
        Task {
            id: id(),
            swarm_id: swarm.swarm.id,
            parent_task_id: None,
            task_type: kind.to_owned(),
            payload: flotilla_core::Json::null(),
            priority: 5,
            required_capabilities: Vec::new(),
            depends_on: Vec::new(),
            affinity_key: None,
            idempotency_key: None,
            attempts: 0,
            max_attempts: 3,
            backoff: flotilla_core::Backoff::default(),
            timeout: Duration::from_secs(60),
            deadline: None,
            last_error: None,
            progress: None,
            created_at: Timestamp::from_millis(NOW - 10_000),
            updated_at: Timestamp::from_millis(NOW - 10_000),
            ordered: false,
            delegated_by: None,
            delegation: None,
            queue_seq: 0,
            state,
        }
    }

    pub(crate) fn info(swarms: u64, agents: &[Agent]) -> OrchestratorInfo {
        let mut by_status = std::collections::BTreeMap::new();
        for a in agents {
            *by_status.entry(a.status).or_insert(0) += 1;
        }
        OrchestratorInfo {
            version: "0.1.0".into(),
            started_at: Timestamp::from_millis(NOW - 7_200_000),
            uptime_ms: 7_200_000,
            store: "sqlite:/tmp/flotilla.db".into(),
            bus: "in-process".into(),
            messages_in_flight: 0,
            swarms,
            agents: AgentCounts {
                total: agents.len() as u64,
                by_status,
            },
            tasks: ActiveTaskCounts {
                blocked: 1,
                queued: 7,
                delayed: 2,
                assigned: 0,
                running: 3,
            },
        }
    }

    pub(crate) fn health(swarm: &SwarmView, agents: &[Agent]) -> SwarmHealth {
        let info = info(1, agents);
        SwarmHealth {
            swarm_id: swarm.swarm.id,
            name: swarm.swarm.name.clone(),
            status: swarm.swarm.status,
            agents: info.agents,
            tasks: info.tasks,
            queue_depth: 9,
            oldest_queued_at: Some(Timestamp::from_millis(NOW - 95_000)),
            oldest_queued_age_ms: Some(95_000),
        }
    }

    /// A snapshot of two swarms: `alpha` with a busy, an idle and an unhealthy agent, `beta`
    /// with `extra` idle agents; queued tasks, a running one and a few events.
    pub(crate) fn snapshot(extra: usize) -> Snapshot {
        let mut alpha = swarm("alpha");
        alpha.agent_count = 3;
        alpha.queue_depth = 9;
        let mut beta = swarm("beta");
        beta.agent_count = extra as u64;
        let mut agents = vec![
            agent(&alpha, "coder-10", AgentStatus::Busy),
            agent(&alpha, "coder-2", AgentStatus::Idle),
            agent(&alpha, "coder-3", AgentStatus::Unhealthy),
        ];
        agents.extend((0..extra).map(|i| agent(&beta, &format!("bulk-{i}"), AgentStatus::Idle)));
        let running = task(
            &alpha,
            "compile",
            TaskState::Running {
                agent_id: agents[0].id,
                started_at: Timestamp::from_millis(NOW - 5_000),
                timeout_at: Timestamp::from_millis(NOW + 55_000),
            },
        );
        agents[0].current_tasks = vec![running.id];
        let queued: Vec<Task> = (0..3)
            .map(|i| {
                task(
                    &alpha,
                    &format!("review-{i}"),
                    TaskState::Queued {
                        queued_at: Timestamp::from_millis(NOW - 60_000 + i * 10_000),
                        run_after: None,
                    },
                )
            })
            .collect();
        let events = vec![
            Event {
                seq: 41,
                at: Timestamp::from_millis(NOW - 20_000),
                kind: EventKind::AgentJoined,
                swarm_id: alpha.swarm.id,
                agent_id: Some(agents[1].id),
                task_id: None,
                detail: String::new(),
            },
            Event {
                seq: 42,
                at: Timestamp::from_millis(NOW - 2_000),
                kind: EventKind::AgentFailed,
                swarm_id: alpha.swarm.id,
                agent_id: Some(agents[2].id),
                task_id: None,
                detail: "missed 3 heartbeats".into(),
            },
        ];
        let health = vec![health(&alpha, &agents[..3]), health(&beta, &agents[3..])];
        Snapshot {
            swarm: None,
            info: info(2, &agents),
            swarms: vec![beta, alpha],
            health,
            agents,
            running: vec![running],
            queued: Queued {
                tasks: queued,
                complete: true,
            },
            events,
        }
    }

    #[test]
    fn a_snapshot_becomes_sorted_worded_rows() {
        let view = View::from_snapshot(&snapshot(0));
        let names: Vec<&str> = view.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["coder-2", "coder-3", "coder-10"]);
        let busy = &view.agents[2];
        assert!(busy.task.starts_with("compile …"), "{}", busy.task);
        assert_eq!(view.agents[0].task, "-");
        assert_eq!(busy.swarm, "alpha");
        let swarms: Vec<&str> = view.swarms.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(swarms, ["alpha", "beta"]);
        assert_eq!(view.swarms[0].busy, Some(1));
        let kinds: Vec<&str> = view
            .oldest_queued
            .iter()
            .map(|q| q.task_type.as_str())
            .collect();
        assert_eq!(kinds, ["review-0", "review-1", "review-2"], "oldest first");
        assert_eq!(view.events[0].seq, 42, "newest first");
        assert_eq!(view.events[0].agent, "coder-3");
        assert_eq!(view.events[1].detail, "");
        assert_eq!(view.totals.agents.total, 3);
        assert_eq!(view.totals.oldest_queued_ms, Some(95_000));
    }

    #[test]
    fn names_sort_with_their_numbers() {
        let mut names = vec!["w-10", "w-2", "w-1", "a", "w-2b", "w-02"];
        names.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(names, ["a", "w-1", "w-2", "w-02", "w-2b", "w-10"]);
    }

    #[test]
    fn throughput_comes_from_successive_reads() {
        let snap = snapshot(0);
        let mut agents = snap.agents.clone();
        let t0 = Instant::now();
        let mut tp = Throughput::default();
        tp.record(t0, &agents);
        assert_eq!(tp.rate(), None, "one read tells no rate");
        // 30 s later two agents completed 20 tasks between them and one failed 3.
        agents[0].tasks_completed += 15;
        agents[1].tasks_completed += 5;
        agents[2].tasks_failed += 3;
        tp.record(t0 + Duration::from_secs(30), &agents);
        let rate = tp.rate().unwrap();
        assert_eq!(rate.done_per_min, 40.0);
        assert_eq!(rate.failed_per_min, 6.0);
        // A newcomer with a long history adds nothing; one that left takes nothing away.
        let mut newcomer = agents[1].clone();
        newcomer.id = id();
        newcomer.tasks_completed = 1_000;
        let mut after = vec![agents[0].clone(), newcomer];
        tp.record(t0 + Duration::from_secs(60), &after);
        assert_eq!(tp.rate().unwrap().done_per_min, 20.0);
        // Past the window, only the last minute counts: 30 more in the last 30 s.
        after[0].tasks_completed += 30;
        tp.record(t0 + Duration::from_secs(90), &after);
        let rate = tp.rate().unwrap();
        assert_eq!(rate.over, Duration::from_secs(60));
        assert_eq!(rate.done_per_min, 30.0);
        assert_eq!(rate.failed_per_min, 0.0);
        // A restarted counter is no negative work.
        after[0].tasks_completed = 0;
        tp.record(t0 + Duration::from_secs(120), &after);
        assert_eq!(tp.rate().unwrap().done_per_min, 30.0);
    }

    #[test]
    fn keys_move_focus_scroll_and_pick_swarms() {
        let mut m = Model::new("http://x", Duration::from_secs(1), None);
        assert_eq!(
            m.input(Input::Down),
            Action::Redraw,
            "nothing to scroll yet"
        );
        assert_eq!(m.scroll(Pane::Agents), 0);
        let t0 = Instant::now();
        m.apply(Ok(snapshot(30)), t0);
        assert_eq!(m.link, Link::Up(t0));
        assert_eq!(m.pane, Pane::Agents);
        m.input(Input::Down);
        m.input(Input::PageDown);
        assert_eq!(m.scroll(Pane::Agents), 11);
        m.input(Input::Bottom);
        assert_eq!(m.scroll(Pane::Agents), 32, "33 agents");
        m.input(Input::PageDown);
        assert_eq!(m.scroll(Pane::Agents), 32, "not past the last");
        m.input(Input::Top);
        assert_eq!(m.scroll(Pane::Agents), 0);
        m.input(Input::Up);
        assert_eq!(m.scroll(Pane::Agents), 0);
        m.input(Input::NextPane);
        assert_eq!(m.pane, Pane::Queue);
        m.input(Input::NextPane);
        m.input(Input::NextPane);
        assert_eq!(m.pane, Pane::Swarms, "Tab wraps around");
        m.input(Input::PrevPane);
        assert_eq!(m.pane, Pane::Events);

        // s: alpha, beta, all again; each a fresh read.
        assert_eq!(m.input(Input::CycleSwarm), Action::Fetch);
        assert_eq!(m.swarm.as_deref(), Some("alpha"));
        m.input(Input::CycleSwarm);
        assert_eq!(m.swarm.as_deref(), Some("beta"));
        m.input(Input::CycleSwarm);
        assert_eq!(m.swarm, None);
        m.input(Input::CycleSwarm);
        // A read begun before the switch is dropped.
        let before = m.view.as_ref().unwrap().agents.len();
        m.apply(Ok(snapshot(5)), t0 + Duration::from_secs(1));
        assert_eq!(m.view.as_ref().unwrap().agents.len(), before);

        assert_eq!(m.input(Input::TogglePause), Action::Redraw);
        assert!(m.paused);
        assert_eq!(
            m.input(Input::TogglePause),
            Action::Fetch,
            "resuming reads at once"
        );
        m.input(Input::ToggleHelp);
        assert!(m.help);
        assert_eq!(m.input(Input::Quit), Action::Quit);
    }

    #[test]
    fn an_unreachable_coordinator_keeps_the_last_view() {
        let mut m = Model::new("http://x", Duration::from_secs(1), None);
        let t0 = Instant::now();
        let refused = || ReadError {
            message: "connection refused".into(),
            unreachable: true,
        };
        m.apply(Err(refused()), t0);
        assert!(matches!(&m.link, Link::Down { failures: 1, .. }));
        m.apply(Ok(snapshot(0)), t0 + Duration::from_secs(1));
        m.apply(Err(refused()), t0 + Duration::from_secs(2));
        let revoked = ReadError {
            message: "unknown or revoked token (401 unauthorized)".into(),
            unreachable: false,
        };
        m.apply(Err(revoked), t0 + Duration::from_secs(3));
        match &m.link {
            Link::Down {
                error,
                unreachable,
                since,
                failures,
            } => {
                assert_eq!(error, "unknown or revoked token (401 unauthorized)");
                assert!(!unreachable);
                assert_eq!(*since, t0 + Duration::from_secs(2));
                assert_eq!(*failures, 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            m.view.as_ref().unwrap().agents.len(),
            3,
            "the last view stays"
        );
    }
}
