//! One snapshot of the fleet for `flotilla top`, read from the coordinator with the typed
//! client: what the orchestrator counts, the swarms, and for the swarms in view their health,
//! agents, running and queued tasks and newest events. The reads after the swarm list run at
//! once, so a snapshot costs two round trips however many swarms there are.

use flotilla_client::{Client, ClientError, EventQuery, TaskQuery};
use flotilla_core::api::{OrchestratorInfo, SwarmHealth, SwarmView};
use flotilla_core::{Agent, Event, Task, TaskStatus};
use futures_util::future::try_join_all;

/// How many of the newest events a snapshot holds.
pub const EVENTS: u32 = 100;
/// How many queued tasks a snapshot reads (the newest; see [`Queued::complete`]).
pub const QUEUED: u32 = 200;
/// How many running tasks a snapshot reads, to name agents' current tasks.
pub const RUNNING: u32 = 1000;

/// What `flotilla top` shows, as read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The swarm in view (its name), or `None` for all.
    pub swarm: Option<String>,
    /// The coordinator's own status and fleet-wide counts.
    pub info: OrchestratorInfo,
    /// Every swarm, whatever is in view (the swarm filter cycles through them).
    pub swarms: Vec<SwarmView>,
    /// The health (agent and task counts, oldest queued) of each swarm in view.
    pub health: Vec<SwarmHealth>,
    /// The agents of the swarms in view.
    pub agents: Vec<Agent>,
    /// The tasks running in view (at most [`RUNNING`], newest first).
    pub running: Vec<Task>,
    /// Queued tasks in view.
    pub queued: Queued,
    /// The newest events in view, oldest first.
    pub events: Vec<Event>,
}

/// The queued tasks a snapshot read.
#[derive(Clone, Debug, Default)]
pub struct Queued {
    /// The newest queued tasks, at most [`QUEUED`].
    pub tasks: Vec<Task>,
    /// Whether those are all of them; when not, the oldest among them are not the queue's
    /// oldest (the swarms' health still tells how long the oldest has waited).
    pub complete: bool,
}

/// Reads one snapshot of the swarm named `swarm`, or of all swarms.
pub async fn snapshot(client: &Client, swarm: Option<&str>) -> Result<Snapshot, ClientError> {
    let (info, swarms) = tokio::try_join!(client.orchestrator(), client.list_swarms())?;
    // In view: the swarm asked for (by the name the coordinator gives it, should it have been
    // asked by id), or every swarm.
    let in_view: Vec<String> = match swarm {
        Some(wanted) => match swarms
            .iter()
            .find(|s| s.swarm.name == wanted || s.swarm.id.to_string() == wanted)
        {
            Some(s) => vec![s.swarm.name.clone()],
            // Deleted since it was chosen, or a typo: the reads below say which.
            None => vec![wanted.to_owned()],
        },
        None => swarms.iter().map(|s| s.swarm.name.clone()).collect(),
    };
    let scope = swarm.map(|_| in_view[0].clone());
    let health = try_join_all(in_view.iter().map(|s| client.swarm_health(s)));
    let agents = try_join_all(in_view.iter().map(|s| client.list_agents(s, None, None)));
    let running_query = TaskQuery {
        swarm: scope.clone(),
        status: Some(TaskStatus::Running),
        limit: Some(RUNNING),
        ..TaskQuery::default()
    };
    let queued_query = TaskQuery {
        status: Some(TaskStatus::Queued),
        limit: Some(QUEUED),
        ..running_query.clone()
    };
    let events_query = EventQuery {
        swarm: scope.clone(),
        limit: Some(EVENTS),
        latest: Some(true),
        ..EventQuery::default()
    };
    let (health, agents, running, queued, events) = tokio::try_join!(
        health,
        agents,
        client.list_tasks(&running_query),
        client.list_tasks(&queued_query),
        client.list_events(&events_query),
    )?;
    Ok(Snapshot {
        swarm: scope,
        info,
        swarms,
        health,
        agents: agents.into_iter().flatten().collect(),
        running: running.items,
        queued: Queued {
            complete: queued.next_cursor.is_none(),
            tasks: queued.items,
        },
        events: events.items,
    })
}
