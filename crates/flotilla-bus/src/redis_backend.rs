//! The Redis backend: the same channels carried between coordinator processes.
//!
//! Each [`Bus`](crate::Bus) holds two connections. Publishes go through a
//! [`ConnectionManager`] (multiplexed, reconnecting on its own), each bounded by
//! [`PUBLISH_TIMEOUT`] so that a caller is never held up by a Redis that is gone. All local
//! subscribers share ONE pub/sub connection, owned by a background task, the pump:
//!
//! - the [`Router`] reference-counts local subscribers per channel and pattern and sends the pump
//!   a change when a count leaves or reaches zero; the pump batches consecutive changes into
//!   single SUBSCRIBE / PSUBSCRIBE / UNSUBSCRIBE / PUNSUBSCRIBE commands, in order;
//! - a message from Redis names the subscription it came through (`message` for a channel,
//!   `pmessage` with the pattern), and the pump hands it to exactly that subscription's local
//!   subscribers, so overlapping channel and pattern subscriptions each get one copy;
//! - when the connection drops (or a ping or command goes unanswered), the pump reconnects with
//!   capped exponential backoff ([`BACKOFF_MIN`] → [`BACKOFF_MAX`]), subscribes to every channel
//!   and pattern that still has a local subscriber, and then owes every local subscriber a
//!   [`Delivery::Gap`](crate::Delivery::Gap): whatever was published meanwhile is lost.
//!   Subscribing while Redis is down fails at once with `Unavailable` rather than waiting.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub, PubSubSink};
use redis::{Client, ConnectionAddr, Msg};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, timeout};
use tracing::{debug, info, warn};

use crate::BusError;
use crate::pattern::Topic;
use crate::router::{Router, Source, Stats, Upstream};

/// How long a publish may take before the caller is told Redis is unavailable.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long establishing a connection may take (at start, and each reconnect attempt).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a (un)subscribe or ping on the pub/sub connection may take before the connection
/// is taken for dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `subscribe` waits for the pump's acknowledgement. Longer than anything the pump
/// itself waits for, so it is only a backstop.
pub(crate) const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(8);
/// First and longest wait between reconnect attempts of the pub/sub connection.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// An idle pub/sub connection is pinged this often, so a Redis that vanished without closing
/// the socket is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);
/// At most this many queued subscription changes are applied together.
const MAX_BATCH: usize = 1024;
/// At most this many names per SUBSCRIBE-like command.
const NAMES_PER_COMMAND: usize = 1000;

/// The Redis side of a [`Bus`](crate::Bus).
pub(crate) struct RedisBackend {
    publisher: ConnectionManager,
    /// The server as `redis://host:port`, without credentials.
    name: String,
    pump: JoinHandle<()>,
}

impl RedisBackend {
    /// Connects both connections, failing if Redis cannot be reached now.
    pub(crate) async fn connect(url: &str) -> Result<(RedisBackend, Arc<Router>), BusError> {
        if url.starts_with("rediss://") {
            // Ignored if the program installed a provider already: any will do.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(|e| {
            // The parser's message never repeats the URL, which may hold a password.
            BusError::InvalidUrl(format!("not a usable Redis URL ({e})"))
        })?;
        let name = describe(client.get_connection_info().addr());
        let unavailable = |reason: String| BusError::Unavailable {
            backend: name.clone(),
            reason,
        };

        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(PUBLISH_TIMEOUT))
            .set_response_timeout(Some(PUBLISH_TIMEOUT))
            // Reconnects are tried again by the next publish; retrying inside one would only
            // keep that publish waiting.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let publisher = timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| unavailable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
        let pubsub = timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| unavailable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(format!("cannot open the pub/sub connection: {e}")))?;

        let (upstream, commands) = mpsc::unbounded_channel();
        let router = Arc::new(Router::new(Some(upstream)));
        let pump = Pump {
            client,
            router: Arc::clone(&router),
            commands,
            name: name.clone(),
        };
        let pump = tokio::spawn(pump.run(pubsub));
        Ok((
            RedisBackend {
                publisher,
                name,
                pump,
            },
            router,
        ))
    }

    /// The server, as `redis://host:port` (never with credentials).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Publishes, failing within [`PUBLISH_TIMEOUT`] if Redis does not answer.
    pub(crate) async fn publish(
        &self,
        stats: &Stats,
        channel: &str,
        payload: &[u8],
    ) -> Result<(), BusError> {
        let mut connection = self.publisher.clone();
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload);
        let publish = command.query_async::<i64>(&mut connection);
        let reason = match timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(_receivers)) => {
                Stats::add(&stats.published, 1);
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer to PUBLISH within {PUBLISH_TIMEOUT:?}"),
        };
        Stats::add(&stats.publish_errors, 1);
        Err(BusError::Unavailable {
            backend: self.name.clone(),
            reason,
        })
    }

    /// Stops the pump; its connection closes with it.
    pub(crate) fn stop(&self) {
        self.pump.abort();
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Names a Redis server without the credentials its URL may carry.
pub(crate) fn describe(addr: &ConnectionAddr) -> String {
    let host = |host: &str| {
        if host.contains(':') {
            format!("[{host}]") // IPv6
        } else {
            host.to_owned()
        }
    };
    match addr {
        ConnectionAddr::Tcp(h, port) => format!("redis://{}:{port}", host(h)),
        ConnectionAddr::TcpTls { host: h, port, .. } => format!("rediss://{}:{port}", host(h)),
        other => format!("redis://{other}"),
    }
}

/// Why the pump left a connection.
enum Left {
    /// The connection is gone or unresponsive; reconnect.
    Lost(String),
    /// The bus is being dropped.
    Shutdown,
}

/// The task owning the pub/sub connection (see the module comment).
struct Pump {
    client: Client,
    router: Arc<Router>,
    commands: mpsc::UnboundedReceiver<Upstream>,
    name: String,
}

impl Pump {
    async fn run(mut self, first: PubSub) {
        let mut connection = Some(first);
        loop {
            let pubsub = match connection.take() {
                Some(pubsub) => pubsub,
                None => match self.reconnect().await {
                    Some(pubsub) => pubsub,
                    None => return,
                },
            };
            match self.serve(pubsub).await {
                Left::Shutdown => return,
                Left::Lost(reason) => warn!(
                    server = %self.name,
                    %reason,
                    "bus: Redis pub/sub connection lost; reconnecting"
                ),
            }
        }
    }

    /// Carries messages to local subscribers and subscription changes to Redis until the
    /// connection fails.
    async fn serve(&mut self, pubsub: PubSub) -> Left {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset(); // the first tick would otherwise fire at once
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.dispatch(&message),
                    // The connection's reader ended: the socket closed or broke.
                    None => return Left::Lost("connection closed".into()),
                },
                command = self.commands.recv() => {
                    let Some(command) = command else { return Left::Shutdown };
                    let mut batch = vec![command];
                    while batch.len() < MAX_BATCH {
                        match self.commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    if let Err(reason) = apply(&mut sink, batch).await {
                        return Left::Lost(reason);
                    }
                    ping.reset();
                }
                _ = ping.tick() => {
                    match timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Left::Lost(format!("ping failed: {e}")),
                        Err(_) => return Left::Lost(format!("no answer to ping within {COMMAND_TIMEOUT:?}")),
                    }
                }
            }
        }
    }

    fn dispatch(&self, message: &Msg) {
        // Our own publishes and subscriptions are UTF-8; anything else came from a foreign
        // client and cannot be handed out as a channel name.
        let Ok(channel) = message.get_channel::<String>() else {
            debug!("bus: message on a channel name that is not UTF-8; ignored");
            return;
        };
        let payload = message.get_payload_bytes();
        if message.from_pattern() {
            match message.get_pattern::<String>() {
                Ok(pattern) => self
                    .router
                    .deliver(Source::Pattern(&pattern), &channel, payload),
                Err(e) => debug!(%e, "bus: pmessage without a readable pattern; ignored"),
            }
        } else {
            self.router.deliver(Source::Exact, &channel, payload);
        }
    }

    /// Reconnects with backoff until it succeeds (`None`: the bus is being dropped). Subscription
    /// requests arriving meanwhile are refused at once.
    async fn reconnect(&mut self) -> Option<PubSub> {
        let mut delay = BACKOFF_MIN;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.try_connect().await {
                Ok(pubsub) => {
                    // Counted first, so that a subscriber seeing its gap sees the reconnect.
                    Stats::add(&self.router.stats.reconnects, 1);
                    // Owed before any message of the new connection is handed out, so each
                    // subscriber sees its gap ahead of what is live again.
                    self.router.mark_gap_all();
                    info!(
                        server = %self.name,
                        attempts,
                        subscribers = self.router.subscriber_count(),
                        "bus: Redis pub/sub connection re-established; subscribers told of the gap"
                    );
                    return Some(pubsub);
                }
                Err(reason) => {
                    debug!(server = %self.name, attempts, %reason, "bus: reconnect failed")
                }
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    command = self.commands.recv() => match command {
                        Some(command) => refuse(command),
                        None => return None,
                    },
                }
            }
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    /// Opens a pub/sub connection and subscribes to everything local subscribers listen to.
    async fn try_connect(&mut self) -> Result<PubSub, String> {
        // Requests queued while down are refused before trying: the subscriptions they were
        // for are in the router's snapshot below if their subscribers still want them.
        while let Ok(command) = self.commands.try_recv() {
            refuse(command);
        }
        let mut pubsub = timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        // Changes queued after this snapshot are applied after it, in order; SUBSCRIBE and
        // UNSUBSCRIBE are idempotent, so applying one the snapshot already reflects is harmless.
        let (channels, patterns) = self.router.topics();
        for names in channels.chunks(NAMES_PER_COMMAND) {
            bounded(pubsub.subscribe(names)).await?;
        }
        for names in patterns.chunks(NAMES_PER_COMMAND) {
            bounded(pubsub.psubscribe(names)).await?;
        }
        Ok(pubsub)
    }
}

/// Tells a subscriber its request cannot be served while Redis is down.
fn refuse(command: Upstream) {
    if let Upstream::Subscribe { ack, .. } = command {
        let _ = ack.send(Err("Redis is unreachable; reconnecting".into()));
    }
}

/// Bounds a pub/sub command by [`COMMAND_TIMEOUT`].
async fn bounded(command: impl Future<Output = redis::RedisResult<()>>) -> Result<(), String> {
    match timeout(COMMAND_TIMEOUT, command).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Subscribe,
    PSubscribe,
    Unsubscribe,
    PUnsubscribe,
}

/// Applies queued subscription changes in order, consecutive ones of a kind as one command, then
/// answers every subscriber waiting in the batch with the outcome.
async fn apply(sink: &mut PubSubSink, batch: Vec<Upstream>) -> Result<(), String> {
    let mut acks = Vec::new();
    let mut runs: Vec<(Op, Vec<String>)> = Vec::new();
    for command in batch {
        let change = match command {
            Upstream::Subscribe { topic, first, ack } => {
                acks.push(ack);
                // Not the first local subscriber: Redis already has it (or it is in this
                // batch); the ack still waits for the batch, i.e. for the first one's SUBSCRIBE.
                first.then_some(match topic {
                    Topic::Exact(name) => (Op::Subscribe, name),
                    Topic::Pattern(pattern) => (Op::PSubscribe, pattern),
                })
            }
            Upstream::Unsubscribe { topic } => Some(match topic {
                Topic::Exact(name) => (Op::Unsubscribe, name),
                Topic::Pattern(pattern) => (Op::PUnsubscribe, pattern),
            }),
        };
        if let Some((op, name)) = change {
            match runs.last_mut() {
                Some((last, names)) if *last == op => names.push(name),
                _ => runs.push((op, vec![name])),
            }
        }
    }
    let mut outcome = Ok(());
    'runs: for (op, names) in runs {
        for names in names.chunks(NAMES_PER_COMMAND) {
            let sent = match op {
                Op::Subscribe => bounded(sink.subscribe(names)).await,
                Op::PSubscribe => bounded(sink.psubscribe(names)).await,
                Op::Unsubscribe => bounded(sink.unsubscribe(names)).await,
                Op::PUnsubscribe => bounded(sink.punsubscribe(names)).await,
            };
            if let Err(reason) = sent {
                outcome = Err(reason);
                break 'runs;
            }
        }
    }
    for ack in acks {
        let _ = ack.send(outcome.clone());
    }
    outcome
}
