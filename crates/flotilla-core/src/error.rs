//! Errors the core returns when a command cannot be applied.
//!
//! Each kind maps to one HTTP status in the server; the message is written for the person who
//! sent the command and says what to do.

use thiserror::Error;

/// Why a command was refused. Refused commands change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    /// The input is malformed or out of range (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A named swarm, agent or task does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The command does not fit the current state, e.g. completing a task that is not running
    /// on this agent (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this to this entity (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// A payload, result or batch is over its size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// The fleet holds as many unfinished tasks as it may; nothing was accepted (HTTP 429).
    #[error("{0}")]
    Full(String),
}

impl CoreError {
    /// An [`CoreError::Invalid`] with this message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        CoreError::Invalid(msg.into())
    }

    /// A [`CoreError::NotFound`] with this message.
    pub fn not_found(msg: impl Into<String>) -> Self {
        CoreError::NotFound(msg.into())
    }

    /// A [`CoreError::Conflict`] with this message.
    pub fn conflict(msg: impl Into<String>) -> Self {
        CoreError::Conflict(msg.into())
    }

    /// A [`CoreError::Forbidden`] with this message.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        CoreError::Forbidden(msg.into())
    }

    /// A short machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Invalid(_) => "invalid_request",
            CoreError::NotFound(_) => "not_found",
            CoreError::Conflict(_) => "conflict",
            CoreError::Forbidden(_) => "forbidden",
            CoreError::TooLarge(_) => "payload_too_large",
            CoreError::Full(_) => "queue_full",
        }
    }
}
