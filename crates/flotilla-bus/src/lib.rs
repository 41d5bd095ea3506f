//! Flotilla's bus: named pub/sub channels between the coordinator's parts, and between
//! coordinators.
//!
//! The coordinator publishes notifications here (an agent's inbox got a message, an event was
//! committed) and handlers — long polls, WebSockets, `flotilla msg tail` — subscribe to them.
//! The bus is transport only, and fire-and-forget: durable state lives in the store, a publish
//! that nobody hears is simply gone, and a subscriber that may have missed something is told
//! so by a [`Delivery::Gap`], after which it re-reads state instead of trusting the stream. A
//! gap comes when a subscriber falls [`SUBSCRIBER_BUFFER`] messages behind (newer ones are
//! dropped rather than let one slow reader grow memory without bound) and, with Redis, after
//! the connection dropped and was re-established.
//!
//! Two backends, one behaviour (the same test suite runs against both):
//! - in-process ([`Bus::memory`]), the default on one machine;
//! - Redis ([`Bus::redis`]), carrying the same channels between coordinator processes; one
//!   publishing connection and one shared pub/sub connection per [`Bus`] (see `redis_backend.rs`).
//!
//! Channels follow one scheme, `swarm:{swarm}:{kind}` ([`Channel`]), so that
//! [`swarm_pattern`] follows a whole swarm. Subscriptions take a channel name or a pattern
//! where `*` matches any run of characters ([`pattern_matches`]); exact names are routed by hash
//! lookup, and only patterns are matched against a published channel.
//!
//! Start reading at [`Bus`]; the local fan-out both backends share is in `router.rs`.
//!
//! This crate depends on no other Flotilla crate: ids come in as strings.

pub mod bench;
mod bus;
mod channel;
mod error;
mod pattern;
mod redis_backend;
mod router;
mod subscription;

pub use bus::{Bus, BusStats};
pub use channel::{Channel, swarm_pattern};
pub use error::BusError;
pub use pattern::pattern_matches;
pub use router::SUBSCRIBER_BUFFER;
pub use subscription::{Delivery, Subscription};
