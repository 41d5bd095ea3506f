//! Local fan-out: who in this process listens to what, and each listener's bounded inbox.
//!
//! Both backends share it. The in-process backend hands every publish to
//! [`Router::publish_local`]; the Redis backend hands it what arrives on its one pub/sub
//! connection ([`Router::deliver`]), already attributed by Redis to a channel or a pattern
//! subscription.
//!
//! Exact channels are looked up in a hash map, so 1,000 agents long-polling their own channels
//! cost one lookup per publish; patterns are kept apart and are the only thing a publish is
//! matched against. The number of local subscribers per channel or pattern is the reference
//! count of the Redis subscription: the router tells the Redis pump (through `upstream`) when a
//! count goes from 0 to 1 or back, and does so while holding its lock, so the pump sees
//! SUBSCRIBE and UNSUBSCRIBE of one name in the order the counts changed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::pattern::{Topic, pattern_matches};
use crate::{BusError, BusStats, Delivery};

/// How many messages a subscriber may have waiting before newer ones are dropped and it is sent
/// a [`Delivery::Gap`]. A subscriber this far behind is better off re-reading durable state than
/// working through a backlog of stale notifications.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// The Redis pump's answer to a subscriber waiting for its subscription to be live: `Err` says
/// why it is not (Redis unreachable).
pub(crate) type Ack = Result<(), String>;

/// A change of the Redis subscriptions, sent to the Redis backend's pump.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// A local subscriber was added. `first` says whether Redis must be told (the count went from
    /// 0 to 1); either way `ack` is answered once every earlier change has reached Redis, so that
    /// `subscribe` returns only when the subscription is live.
    Subscribe {
        topic: Topic,
        first: bool,
        ack: oneshot::Sender<Ack>,
    },
    /// The last local subscriber of `topic` went away.
    Unsubscribe { topic: Topic },
}

/// The counters behind [`BusStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

impl Stats {
    // SeqCst, so that counters updated one after the other are seen in that order (a reader
    // who sees a copy counted as delivered also sees the gap counted before it).
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::SeqCst);
        }
    }

    fn snapshot(&self) -> BusStats {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        BusStats {
            published: get(&self.published),
            delivered: get(&self.delivered),
            dropped: get(&self.dropped),
            publish_errors: get(&self.publish_errors),
            gaps: get(&self.gaps),
            reconnects: get(&self.reconnects),
        }
    }
}

/// What one push into an inbox came to, for the counters.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    dropped: u64,
    gaps: u64,
}

impl Tally {
    fn record(&mut self, outcome: Pushed) {
        match outcome {
            Pushed::Queued => self.delivered += 1,
            Pushed::Dropped { new_gap } => {
                self.dropped += 1;
                self.gaps += u64::from(new_gap);
            }
            Pushed::Closed => {}
        }
    }

    /// Gaps first and deliveries last: whoever sees the copies counted sees the rest too.
    fn add_to(&self, stats: &Stats) {
        Stats::add(&stats.gaps, self.gaps);
        Stats::add(&stats.dropped, self.dropped);
        Stats::add(&stats.delivered, self.delivered);
    }
}

enum Pushed {
    Queued,
    /// The inbox was full; `new_gap` if this loss starts a gap the subscriber was not yet owed.
    Dropped {
        new_gap: bool,
    },
    Closed,
}

/// What [`Inbox::pop`] found.
pub(crate) enum Popped {
    Item(Delivery),
    Empty,
    Closed,
}

/// One subscriber's queue. Gaps are kept in order: a loss is remembered (`lost`) and becomes a
/// `Gap` item in front of the next message that fits, or is handed out as soon as the queue is
/// empty, so the subscriber always learns of a loss after the messages that came before it.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    /// Wakes the one task awaiting [`Subscription::next`](crate::Subscription::next). A
    /// notification with nobody waiting is stored, so a push between the subscriber finding the
    /// queue empty and it starting to wait is not missed.
    pub(crate) notify: Notify,
}

#[derive(Debug, Default)]
struct InboxState {
    queue: VecDeque<Delivery>,
    lost: bool,
    closed: bool,
}

impl Inbox {
    fn push(&self, channel: &Arc<str>, payload: &Arc<[u8]>) -> Pushed {
        let mut state = self.state.lock();
        if state.closed {
            return Pushed::Closed;
        }
        if state.queue.len() >= SUBSCRIBER_BUFFER {
            // The subscriber has plenty queued already; it needs no wake-up.
            let new_gap = !state.lost;
            state.lost = true;
            return Pushed::Dropped { new_gap };
        }
        if state.lost {
            state.lost = false;
            state.queue.push_back(Delivery::Gap);
        }
        state.queue.push_back(Delivery::Message {
            channel: Arc::clone(channel),
            payload: Arc::clone(payload),
        });
        drop(state);
        self.notify.notify_one();
        Pushed::Queued
    }

    /// Owes the subscriber a gap (the Redis connection was lost), unless it is owed one
    /// already. Counted before the subscriber can see it.
    fn mark_gap(&self, stats: &Stats) {
        let mut state = self.state.lock();
        if state.closed || state.lost {
            return;
        }
        state.lost = true;
        Stats::add(&stats.gaps, 1);
        drop(state);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_one();
    }

    pub(crate) fn pop(&self) -> Popped {
        let mut state = self.state.lock();
        if let Some(item) = state.queue.pop_front() {
            return Popped::Item(item);
        }
        if state.lost {
            state.lost = false;
            return Popped::Item(Delivery::Gap);
        }
        if state.closed {
            return Popped::Closed;
        }
        Popped::Empty
    }
}

/// Which of Redis's subscriptions a message arrived through.
pub(crate) enum Source<'a> {
    /// A SUBSCRIBE to the message's own channel.
    Exact,
    /// A PSUBSCRIBE to this pattern.
    Pattern(&'a str),
}

#[derive(Default)]
struct Routes {
    exact: HashMap<Arc<str>, Vec<Arc<Inbox>>>,
    patterns: HashMap<Arc<str>, Vec<Arc<Inbox>>>,
    subscribers: usize,
    closed: bool,
}

impl Routes {
    fn table<'t>(
        &mut self,
        topic: &'t Topic,
    ) -> (&mut HashMap<Arc<str>, Vec<Arc<Inbox>>>, &'t str) {
        match topic {
            Topic::Exact(name) => (&mut self.exact, name),
            Topic::Pattern(pattern) => (&mut self.patterns, pattern),
        }
    }

    fn every_inbox(&self) -> impl Iterator<Item = &Arc<Inbox>> {
        self.exact.values().chain(self.patterns.values()).flatten()
    }
}

/// The local subscribers of one [`Bus`](crate::Bus), and its counters.
pub(crate) struct Router {
    routes: RwLock<Routes>,
    pub(crate) stats: Stats,
    /// Set for the Redis backend: where subscription changes go.
    upstream: Option<mpsc::UnboundedSender<Upstream>>,
}

impl Router {
    pub(crate) fn new(upstream: Option<mpsc::UnboundedSender<Upstream>>) -> Router {
        Router {
            routes: RwLock::default(),
            stats: Stats::default(),
            upstream,
        }
    }

    /// Adds a subscriber. With an upstream, also returns the acknowledgement to await before
    /// the subscription may be called live.
    pub(crate) fn add(
        &self,
        topic: &Topic,
    ) -> Result<(Arc<Inbox>, Option<oneshot::Receiver<Ack>>), BusError> {
        let inbox = Arc::new(Inbox::default());
        let mut routes = self.routes.write();
        if routes.closed {
            return Err(BusError::Closed);
        }
        let (table, key) = routes.table(topic);
        let list = table.entry(Arc::from(key)).or_default();
        let first = list.is_empty();
        list.push(Arc::clone(&inbox));
        routes.subscribers += 1;
        let ack = self.upstream.as_ref().map(|upstream| {
            let (ack, acked) = oneshot::channel();
            // If the pump is gone the bus is shutting down; the dropped `ack` then reads as a
            // failure to the subscriber.
            let _ = upstream.send(Upstream::Subscribe {
                topic: topic.clone(),
                first,
                ack,
            });
            acked
        });
        Ok((inbox, ack))
    }

    /// Removes a subscriber (its `Subscription` was dropped).
    pub(crate) fn remove(&self, topic: &Topic, inbox: &Arc<Inbox>) {
        let mut routes = self.routes.write();
        let (table, key) = routes.table(topic);
        let Some(list) = table.get_mut(key) else {
            return; // closed: the tables were emptied
        };
        let Some(at) = list.iter().position(|i| Arc::ptr_eq(i, inbox)) else {
            return;
        };
        list.swap_remove(at);
        let last = list.is_empty();
        if last {
            table.remove(key);
        }
        routes.subscribers -= 1;
        if let (true, Some(upstream)) = (last, &self.upstream) {
            let _ = upstream.send(Upstream::Unsubscribe {
                topic: topic.clone(),
            });
        }
    }

    /// Fans a publish out to this process's subscribers (the in-process backend).
    pub(crate) fn publish_local(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let routes = self.routes.read();
        if routes.closed {
            return Err(BusError::Closed);
        }
        let exact = routes.exact.get(channel);
        let patterns = routes
            .patterns
            .iter()
            .filter(|(pattern, _)| pattern_matches(pattern, channel));
        let mut shared: Option<(Arc<str>, Arc<[u8]>)> = None;
        let mut tally = Tally::default();
        for inbox in exact.into_iter().chain(patterns.map(|(_, l)| l)).flatten() {
            // One copy of the name and payload per publish, made only if anyone listens; each
            // subscriber gets reference-counted clones.
            let (name, bytes) =
                shared.get_or_insert_with(|| (Arc::from(channel), Arc::from(payload)));
            tally.record(inbox.push(name, bytes));
        }
        drop(routes);
        tally.add_to(&self.stats);
        Ok(())
    }

    /// Hands a message that arrived from Redis to the subscribers of the subscription it came
    /// through. A message matching both a channel and a pattern subscription arrives from Redis
    /// once for each, so each local subscription gets it exactly once.
    pub(crate) fn deliver(&self, source: Source<'_>, channel: &str, payload: &[u8]) {
        let routes = self.routes.read();
        let list = match source {
            Source::Exact => routes.exact.get(channel),
            Source::Pattern(pattern) => routes.patterns.get(pattern),
        };
        let Some(list) = list.filter(|l| !l.is_empty()) else {
            return; // an UNSUBSCRIBE in flight
        };
        let (name, bytes): (Arc<str>, Arc<[u8]>) = (Arc::from(channel), Arc::from(payload));
        let mut tally = Tally::default();
        for inbox in list {
            tally.record(inbox.push(&name, &bytes));
        }
        drop(routes);
        tally.add_to(&self.stats);
    }

    /// Every channel and pattern with a local subscriber, to subscribe again after a reconnect.
    pub(crate) fn topics(&self) -> (Vec<String>, Vec<String>) {
        let routes = self.routes.read();
        let names = |t: &HashMap<Arc<str>, _>| t.keys().map(|k| k.to_string()).collect();
        (names(&routes.exact), names(&routes.patterns))
    }

    /// Owes every subscriber a gap.
    pub(crate) fn mark_gap_all(&self) {
        let routes = self.routes.read();
        for inbox in routes.every_inbox() {
            inbox.mark_gap(&self.stats);
        }
    }

    /// Shuts the router: every subscriber's `next` returns `None` once its queue is drained,
    /// and no one may subscribe or publish any more.
    pub(crate) fn close(&self) {
        let mut routes = self.routes.write();
        if routes.closed {
            return;
        }
        routes.closed = true;
        for inbox in routes.every_inbox() {
            inbox.close();
        }
        routes.exact.clear();
        routes.patterns.clear();
        routes.subscribers = 0;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.routes.read().closed
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.routes.read().subscribers
    }

    pub(crate) fn stats(&self) -> BusStats {
        self.stats.snapshot()
    }
}
