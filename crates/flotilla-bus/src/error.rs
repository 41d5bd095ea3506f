//! The bus's one error type.
//!
//! Messages never contain a URL as the caller gave it: a Redis URL may carry a password, so
//! errors name the server by [`Bus::describe`](crate::Bus::describe)'s redacted form instead.

use thiserror::Error;

/// Why a bus operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The bus URL is not one the bus understands.
    #[error("invalid bus URL: {0}")]
    InvalidUrl(String),

    /// A subscription pattern uses something other than exact characters and `*`.
    #[error("invalid bus pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it and what is allowed instead.
        reason: &'static str,
    },

    /// A channel name given to `publish` cannot be a channel.
    #[error("invalid bus channel {channel:?}: {reason}")]
    InvalidChannel {
        /// The channel name as given.
        channel: String,
        /// What is wrong with it and what is allowed instead.
        reason: &'static str,
    },

    /// The backend cannot be reached now (Redis down, unreachable or too slow). The bus is
    /// fire-and-forget: callers carry on and rely on durable state; subscribers are sent a
    /// [`Delivery::Gap`](crate::Delivery::Gap) once the backend is back.
    #[error("bus backend {backend} unavailable: {reason}")]
    Unavailable {
        /// The backend, as [`Bus::describe`](crate::Bus::describe) names it.
        backend: String,
        /// What went wrong.
        reason: String,
    },

    /// The bus was shut down ([`Bus::shutdown`](crate::Bus::shutdown), or its last handle dropped).
    #[error("the bus has been shut down")]
    Closed,
}
