//! What a subscriber holds and receives.

use std::fmt;
use std::sync::Arc;

use crate::pattern::Topic;
use crate::router::{Inbox, Popped, Router};

/// One thing a subscription receives.
#[derive(Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A published message.
    Message {
        /// The channel it was published on (for a pattern subscription, the matching channel).
        /// Shared between all the subscribers that receive it.
        channel: Arc<str>,
        /// The payload, as published, shared between all the subscribers that receive it.
        payload: Arc<[u8]>,
    },
    /// Messages may have been lost here: this subscriber fell
    /// [`SUBSCRIBER_BUFFER`](crate::SUBSCRIBER_BUFFER) messages behind, or the Redis connection
    /// dropped and was re-established. Re-read durable state; what follows is live again.
    Gap,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delivery::Message { channel, payload } => f
                .debug_struct("Message")
                .field("channel", channel)
                .field("payload", &String::from_utf8_lossy(payload))
                .finish(),
            Delivery::Gap => f.write_str("Gap"),
        }
    }
}

/// A live subscription to a channel or pattern. Dropping it unsubscribes.
pub struct Subscription {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) topic: Topic,
    pub(crate) router: Arc<Router>,
}

impl Subscription {
    /// The next delivery, waiting for one if none is queued. `None` only once the bus has been
    /// shut down (and everything queued before was handed out).
    ///
    /// Cancel-safe: dropping the future (a long poll's timeout in a `select!`) loses nothing;
    /// the next call sees what arrived meanwhile.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.inbox.pop() {
                Popped::Item(delivery) => return Some(delivery),
                Popped::Closed => return None,
                Popped::Empty => self.inbox.notify.notified().await,
            }
        }
    }

    /// A delivery already queued, if any, without waiting (to drain a burst in one go).
    pub fn try_next(&mut self) -> Option<Delivery> {
        match self.inbox.pop() {
            Popped::Item(delivery) => Some(delivery),
            Popped::Empty | Popped::Closed => None,
        }
    }

    /// The channel name or pattern this subscription listens to.
    pub fn pattern(&self) -> &str {
        match &self.topic {
            Topic::Exact(name) => name,
            Topic::Pattern(pattern) => pattern,
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern())
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.router.remove(&self.topic, &self.inbox);
    }
}
