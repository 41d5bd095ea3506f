//! The coordinator's side of the bus: what it publishes once a batch is durable, and how
//! handlers wait on it.
//!
//! After every commit the coordinator publishes, on the fleet seed's channels:
//! - each event, grouped per channel into one JSON array per batch (`swarm:{s}:registry` for
//!   agents joining and leaving, `:health` for health and alerts, `:allocation` for placement,
//!   `:scaling` for pools, `:tasks` for task lifecycle, `:results` for finished tasks, `:fleet`
//!   for the rest: swarms, topology, elections, the ring's token, resources);
//! - each new inter-agent message, as a JSON array per batch on `swarm:{s}:messages` (what
//!   `flotilla msg tail` follows);
//! - `inbox` on `swarm:{s}:agent:{a}` when that agent's inbox has messages ready: its long
//!   poll or WebSocket, subscribed there, takes them.
//!
//! Publishing never blocks a request: payloads go through a bounded queue to one publishing
//! task, which keeps their order; when the queue is full (the bus is down or slow) they are
//! dropped, with a warning now and then. Nothing is lost by that: the bus is notification, the store is truth,
//! and a waiter re-reads state whenever it wakes, times out or is told of a gap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_bus::{Bus, Channel};
use flotilla_core::{AgentId, Changes, Event, EventKind, Message, MessageStatus, SwarmId};
use tokio::sync::mpsc;

/// Payloads waiting to be published before new ones are dropped.
const QUEUE: usize = 16_384;

/// The bus, and the queue to its publishing task.
pub struct BusLink {
    bus: Bus,
    queue: mpsc::Sender<(String, Vec<u8>)>,
    /// Payloads dropped because the queue was full (to warn now and then).
    dropped: AtomicU64,
}

impl BusLink {
    /// Connects to the bus (`memory`, `redis://…`) and starts the publishing task.
    pub async fn connect(url: &str) -> Result<BusLink, flotilla_bus::BusError> {
        let bus = Bus::connect(url).await?;
        let (queue, mut rx) = mpsc::channel::<(String, Vec<u8>)>(QUEUE);
        let publisher = bus.clone();
        tokio::spawn(async move {
            let mut failed: u64 = 0;
            while let Some((channel, payload)) = rx.recv().await {
                if let Err(e) = publisher.publish(&channel, &payload).await {
                    if failed.is_multiple_of(1000) {
                        tracing::warn!(error = %e, "bus publish failed (waiters fall back to polling)");
                    }
                    failed += 1;
                }
            }
        });
        Ok(BusLink {
            bus,
            queue,
            dropped: AtomicU64::new(0),
        })
    }

    /// The bus itself, to subscribe.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Where the bus is, for `GET /orchestrator`.
    pub fn describe(&self) -> String {
        self.bus.describe()
    }

    fn send(&self, channel: String, payload: Vec<u8>) {
        if self.queue.try_send((channel, payload)).is_err()
            && self
                .dropped
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1000)
        {
            tracing::warn!(
                "the bus publishing queue is full; dropping (waiters fall back to polling)"
            );
        }
    }

    /// Whether a batch's events and messages are worth publishing: always on a shared bus
    /// (other coordinators may listen), on the in-process bus only while someone subscribes.
    pub fn wants(&self, changes: &Changes) -> bool {
        (!changes.events.is_empty() || !changes.messages.is_empty())
            && (!self.bus.is_local() || self.bus.subscriber_count() > 0)
    }

    /// Publishes what a durable batch holds: its events and its new messages.
    pub fn committed(&self, published: Published) {
        for (channel, events) in published.events {
            if let Ok(json) = serde_json::to_vec(&events) {
                self.send(channel, json);
            }
        }
        for (swarm, messages) in published.messages {
            if let Ok(json) = serde_json::to_vec(&messages) {
                self.send(Channel::Messages(swarm.to_string()).name(), json);
            }
        }
    }

    /// Tells an agent's waiting receive that its inbox has messages.
    pub fn wake_inbox(&self, swarm: SwarmId, agent: AgentId) {
        self.send(inbox_channel(swarm, agent), b"inbox".to_vec());
    }
}

/// The channel an agent's receive waits on.
pub fn inbox_channel(swarm: SwarmId, agent: AgentId) -> String {
    Channel::Agent(swarm.to_string(), agent.to_string()).name()
}

/// What to publish once a batch is durable, taken from its changes under the fleet lock.
#[derive(Default)]
pub struct Published {
    events: BTreeMap<String, Vec<Event>>,
    messages: BTreeMap<SwarmId, Vec<Message>>,
}

impl Published {
    /// Picks from `changes` what goes on the bus.
    pub fn of(changes: &Changes) -> Published {
        let mut out = Published::default();
        for e in &changes.events {
            out.events
                .entry(event_channel(e).name())
                .or_default()
                .push(e.clone());
        }
        for m in &changes.messages {
            // New messages only: pending, never delivered, not a redelivery.
            let new = m.status == MessageStatus::Pending
                && m.deliveries == 0
                && m.deliver_after.is_none();
            // An operator's answered request ends as an acknowledged response at once.
            let answer = m.to.is_none() && m.status == MessageStatus::Acked;
            if new || answer {
                out.messages.entry(m.swarm_id).or_default().push(m.clone());
            }
        }
        out
    }
}

/// The channel an event goes on.
pub fn event_channel(e: &Event) -> Channel {
    use EventKind as K;
    let s = e.swarm_id.to_string();
    match e.kind {
        K::AgentJoined | K::AgentLeft | K::AgentStarted | K::AgentStopped => Channel::Registry(s),
        K::AgentFailed
        | K::AgentRecovered
        | K::AgentHealthChanged
        | K::AgentBreaker
        | K::AgentRecovering
        | K::AlertWarning
        | K::AlertCritical
        | K::AlertRecovery
        | K::AgentPaused
        | K::AgentResumed
        | K::AgentRollback
        | K::CheckpointCreated
        | K::CheckpointDeleted => Channel::Health(s),
        K::TaskAssigned
        | K::ResourcesWaiting
        | K::ResourcesRefused
        | K::ResourcesGranted
        | K::HostJoined
        | K::HostLost
        | K::HostLeft => Channel::Allocation(s),
        K::PoolUpdated
        | K::PoolDeleted
        | K::PoolScaled
        | K::PoolScaleRefused
        | K::AgentDraining => Channel::Scaling(s),
        K::TaskCompleted | K::TaskFailed | K::TaskDead => Channel::Results(s),
        K::TaskSubmitted
        | K::TaskUnblocked
        | K::TaskStarted
        | K::TaskRetrying
        | K::TaskCancelled
        | K::TaskRequeued
        | K::TaskRetried
        | K::TaskDelegated
        | K::MessageDeadLettered => Channel::Tasks(s),
        K::SwarmCreated
        | K::SwarmUpdated
        | K::SwarmStatusChanged
        | K::SwarmDeleted
        | K::PressureChanged
        | K::PressureResponse
        | K::TopologyChanged
        | K::LeaderElection
        | K::TokenPassed => Channel::Fleet(s),
    }
}
