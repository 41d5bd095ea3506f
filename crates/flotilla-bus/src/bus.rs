//! The [`Bus`] handle: one API over the in-process and the Redis backend.

use std::sync::Arc;

use tokio::time::timeout;

use crate::pattern::{Topic, check_channel};
use crate::redis_backend::{RedisBackend, SUBSCRIBE_TIMEOUT};
use crate::router::{Router, Stats};
use crate::{BusError, Subscription};

/// What [`Bus::connect`] accepts, for its error message.
const ACCEPTED_URLS: &str =
    "use \"memory\" for the in-process bus, or redis://host:port or rediss://host:port for Redis";

/// A handle on the bus. Cheap to clone; all clones share the backend, its connections and the
/// local subscribers. Dropping the last clone shuts the bus down (see [`Bus::shutdown`]).
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    router: Arc<Router>,
    backend: Backend,
}

enum Backend {
    Memory,
    Redis(RedisBackend),
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The Redis backend's own Drop stops its pump.
        self.router.close();
    }
}

/// The bus's counters since it was made. All are totals except where said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages this bus published successfully.
    pub published: u64,
    /// Copies handed to local subscribers' queues (one message to three subscribers is three).
    pub delivered: u64,
    /// Copies dropped because a subscriber's queue was full (each loss ends in a `Gap`).
    pub dropped: u64,
    /// Publishes that failed because the backend was unavailable.
    pub publish_errors: u64,
    /// `Gap`s owed to subscribers: one per lagging episode of a subscriber, and one per
    /// subscriber at each Redis reconnect.
    pub gaps: u64,
    /// Times the Redis pub/sub connection was re-established.
    pub reconnects: u64,
}

impl Bus {
    /// The in-process bus: publishes reach subscribers of this process only.
    pub fn memory() -> Bus {
        Bus {
            inner: Arc::new(Inner {
                router: Arc::new(Router::new(None)),
                backend: Backend::Memory,
            }),
        }
    }

    /// A bus carried by the Redis server at `url` (`redis://[user:password@]host:port` or
    /// `rediss://…` for TLS). Fails with [`BusError::Unavailable`] if Redis cannot be reached
    /// now; once running, it rides out outages (see [`Delivery::Gap`](crate::Delivery::Gap)).
    pub async fn redis(url: &str) -> Result<Bus, BusError> {
        let (backend, router) = RedisBackend::connect(url).await?;
        Ok(Bus {
            inner: Arc::new(Inner {
                router,
                backend: Backend::Redis(backend),
            }),
        })
    }

    /// A bus from configuration: `"memory"`, or a `redis://` or `rediss://` URL.
    pub async fn connect(url: &str) -> Result<Bus, BusError> {
        let url = url.trim();
        if url == "memory" {
            return Ok(Bus::memory());
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Bus::redis(url).await;
        }
        // Only the scheme is repeated: the rest of a URL may hold a password.
        let what = match url.split_once("://") {
            Some((scheme, _)) => format!("unsupported scheme {scheme:?}"),
            None if url.is_empty() => "empty bus URL".to_owned(),
            None => "not a URL nor \"memory\"".to_owned(),
        };
        Err(BusError::InvalidUrl(format!("{what}: {ACCEPTED_URLS}")))
    }

    /// Publishes `payload` on `channel` to every current subscriber whose channel or pattern
    /// matches, here or (with Redis) in any process on the same server.
    ///
    /// Fire-and-forget: success means the backend took the message, not that anyone received
    /// it. With Redis it fails with [`BusError::Unavailable`] within about a second when Redis is
    /// down; callers carry on, since durable state is elsewhere.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        check_channel(channel)?;
        let router = &self.inner.router;
        match &self.inner.backend {
            Backend::Memory => {
                router.publish_local(channel, payload)?;
                Stats::add(&router.stats.published, 1);
                Ok(())
            }
            Backend::Redis(redis) => {
                if router.is_closed() {
                    return Err(BusError::Closed);
                }
                redis.publish(&router.stats, channel, payload).await
            }
        }
    }

    /// Subscribes to a channel name, or to a pattern where `*` matches any run of characters
    /// (`swarm:{swarm}:*`). `?`, `[`, `]` and `\` are refused.
    ///
    /// When this returns, the subscription is live: everything published afterwards reaches
    /// it, or it is told of the loss by a [`Delivery::Gap`](crate::Delivery::Gap). With Redis
    /// down it fails at once with [`BusError::Unavailable`].
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        let topic = Topic::parse(pattern)?;
        let router = &self.inner.router;
        let (inbox, ack) = router.add(&topic)?;
        // Made before waiting, so that a failure below unsubscribes through its Drop.
        let subscription = Subscription {
            inbox,
            topic,
            router: Arc::clone(router),
        };
        if let Some(ack) = ack {
            let reason = match timeout(SUBSCRIBE_TIMEOUT, ack).await {
                Ok(Ok(Ok(()))) => return Ok(subscription),
                Ok(Ok(Err(reason))) => reason,
                Ok(Err(_pump_gone)) => return Err(BusError::Closed),
                Err(_) => format!("subscription not confirmed within {SUBSCRIBE_TIMEOUT:?}"),
            };
            return Err(BusError::Unavailable {
                backend: self.describe(),
                reason,
            });
        }
        Ok(subscription)
    }

    /// The backend, for logs and status pages: `in-process`, or `redis://host:port` (never
    /// with the password the URL may have held).
    pub fn describe(&self) -> String {
        match &self.inner.backend {
            Backend::Memory => "in-process".to_owned(),
            Backend::Redis(redis) => redis.name().to_owned(),
        }
    }

    /// Whether this is the in-process bus (no other process hears its publishes).
    pub fn is_local(&self) -> bool {
        matches!(self.inner.backend, Backend::Memory)
    }

    /// The bus's counters.
    pub fn stats(&self) -> BusStats {
        self.inner.router.stats()
    }

    /// How many subscriptions of this bus are alive now.
    pub fn subscriber_count(&self) -> usize {
        self.inner.router.subscriber_count()
    }

    /// Shuts the bus down for every clone: subscribers' [`Subscription::next`] returns `None`
    /// once their queues are drained, publish and subscribe fail with [`BusError::Closed`], and
    /// the Redis connections are closed. Dropping the last clone does the same.
    pub fn shutdown(&self) {
        self.inner.router.close();
        if let Backend::Redis(redis) = &self.inner.backend {
            redis.stop();
        }
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("backend", &self.describe())
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}
