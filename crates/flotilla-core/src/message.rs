//! Messages between agents: kinds, priorities, topics and their patterns, delivery states.
//!
//! A message goes to one agent's inbox (a send, one copy per recipient of a publish or a
//! broadcast) and waits there, ordered critical > high > normal > low and then first in, first
//! out, until the agent takes it. Taking it starts its delivery: the agent must acknowledge it
//! within the swarm's `ack_timeout`, or it is delivered again after a backoff, up to
//! `max_deliveries` times; then, or when its time to live runs out, or when its recipient is
//! removed, it goes to the dead-letter list. Delivery is therefore at least once, and every
//! message ends acknowledged or dead with a reason. The rules are in `fleet/messages.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{AgentId, MessageId, SwarmId};
use crate::json::Json;
use crate::time::{Timestamp, serde_ms};

/// What a message is for (the AgentFlow seed's message types).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A plain message to one agent.
    #[default]
    Message,
    /// A question that expects a `response` with its id as `correlation_id`.
    Request,
    /// The answer to a request.
    Response,
    /// Something that happened, published to a topic.
    Event,
    /// A copy of a broadcast to a swarm.
    Broadcast,
}

impl MessageKind {
    /// The kind as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Message => "message",
            MessageKind::Request => "request",
            MessageKind::Response => "response",
            MessageKind::Event => "event",
            MessageKind::Broadcast => "broadcast",
        }
    }
}

/// How urgent a message is: inboxes hand out critical ones first, low ones last.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MessagePriority {
    /// Handed out last.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before normal ones.
    High,
    /// Before everything else.
    Critical,
}

impl MessagePriority {
    /// Every priority, most urgent first.
    pub const ALL: [MessagePriority; 4] = [
        MessagePriority::Critical,
        MessagePriority::High,
        MessagePriority::Normal,
        MessagePriority::Low,
    ];

    /// The priority as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessagePriority::Low => "low",
            MessagePriority::Normal => "normal",
            MessagePriority::High => "high",
            MessagePriority::Critical => "critical",
        }
    }
}

impl std::str::FromStr for MessagePriority {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        MessagePriority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown message priority {s:?}; expected one of: critical, high, normal, low"
                ))
            })
    }
}

/// Where a message is in its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// In the inbox, waiting to be taken (after `deliver_after`, when retried).
    Pending,
    /// Taken by its recipient, waiting for the acknowledgement.
    Delivered,
    /// Acknowledged: done.
    Acked,
    /// Could not be delivered (expired, never acknowledged, recipient removed): in the
    /// dead-letter list, with the reason.
    Dead,
}

impl MessageStatus {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Acked => "acked",
            MessageStatus::Dead => "dead",
        }
    }

    /// Every status.
    pub const ALL: [MessageStatus; 4] = [
        MessageStatus::Pending,
        MessageStatus::Delivered,
        MessageStatus::Acked,
        MessageStatus::Dead,
    ];

    /// Whether the message is done with (acknowledged or dead).
    pub fn is_final(self) -> bool {
        matches!(self, MessageStatus::Acked | MessageStatus::Dead)
    }
}

impl std::str::FromStr for MessageStatus {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        MessageStatus::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown message status {s:?}; expected one of: pending, delivered, acked, dead"
                ))
            })
    }
}

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplyState {
    /// No response yet.
    Awaiting,
    /// A response came.
    Answered,
    /// None came within the request's timeout; the requester got a `timeout` response.
    TimedOut,
}

/// A message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The swarm it travels in.
    pub swarm_id: SwarmId,
    /// What it is for.
    pub kind: MessageKind,
    /// The agent that sent it; `null` for an operator or the coordinator.
    pub from: Option<AgentId>,
    /// The agent whose inbox it is in; `null` for a response to an operator's request.
    pub to: Option<AgentId>,
    /// The topic it was published to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// How urgent it is.
    pub priority: MessagePriority,
    /// What it says: any JSON document.
    pub body: Json,
    /// For a response, the request it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<MessageId>,
    /// For a request, when it times out without a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_by: Option<Timestamp>,
    /// For a request, what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyState>,
    /// When it was sent.
    pub created_at: Timestamp,
    /// It is dead if not acknowledged by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Where it is in its delivery.
    pub status: MessageStatus,
    /// How many times it was handed to its recipient.
    pub deliveries: u32,
    /// How many deliveries are allowed before it is dead.
    pub max_deliveries: u32,
    /// While pending after a failed delivery: not before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_after: Option<Timestamp>,
    /// While delivered: it is delivered again unless acknowledged by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_by: Option<Timestamp>,
    /// When it was acknowledged or declared dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why it is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
    /// Its place in arrival order (inboxes are first in, first out within a priority).
    pub seq: u64,
}

/// What a sender gives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageSpec {
    /// What it is for; `message` by default (`event` when published to a topic, `broadcast`
    /// when broadcast).
    #[serde(default)]
    pub kind: Option<MessageKind>,
    /// What it says.
    #[serde(default)]
    pub body: Json,
    /// How urgent it is; `normal` by default.
    #[serde(default)]
    pub priority: MessagePriority,
    /// A topic, for the receiver's information (a publish sets it).
    #[serde(default)]
    pub topic: Option<String>,
    /// For a response: the request it answers.
    #[serde(default)]
    pub correlation_id: Option<MessageId>,
    /// For a request: how long to wait for the response (the swarm's default when left out).
    #[serde(default, rename = "timeout_ms", with = "serde_ms::option")]
    #[schema(value_type = Option<u64>)]
    pub timeout: Option<Duration>,
    /// Dead if not acknowledged within this long (the swarm's default when left out).
    #[serde(default, rename = "ttl_ms", with = "serde_ms::option")]
    #[schema(value_type = Option<u64>)]
    pub ttl: Option<Duration>,
    /// Set by the coordinator on a request whose sender waits for the response on its call
    /// (`?wait=true`): the response is handed to that call, not put in the sender's inbox.
    #[serde(skip)]
    pub waited: bool,
}

/// A swarm's message settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// How long a recipient has to acknowledge a message it took.
    #[serde(rename = "ack_timeout_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub ack_timeout: Duration,
    /// Deliveries before a message nobody acknowledges is dead.
    pub max_deliveries: u32,
    /// Wait before the first redelivery; doubles with each, up to `retry_max`.
    #[serde(rename = "retry_initial_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub retry_initial: Duration,
    /// Longest wait between deliveries.
    #[serde(rename = "retry_max_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub retry_max: Duration,
    /// Time to live of a message that does not set one; `null` for none.
    #[serde(rename = "default_ttl_ms", with = "serde_ms::option")]
    #[schema(value_type = Option<u64>)]
    pub default_ttl: Option<Duration>,
    /// How long a request waits for its response when it does not say.
    #[serde(rename = "request_timeout_ms", with = "serde_ms")]
    #[schema(value_type = u64)]
    pub request_timeout: Duration,
    /// Most messages waiting in one inbox; a send to a full inbox is refused.
    pub max_inbox: u32,
}

/// How long a request waits for its response when neither it nor its swarm says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            default_ttl: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_inbox: 10_000,
        }
    }
}

impl MessagingConfig {
    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), CoreError> {
        let between = |d: Duration, lo: u64, hi: u64, name: &str| {
            if d < Duration::from_millis(lo) || d > Duration::from_millis(hi) {
                Err(CoreError::invalid(format!(
                    "config.messaging.{name} must be between {lo} and {hi}"
                )))
            } else {
                Ok(())
            }
        };
        between(self.ack_timeout, 10, 86_400_000, "ack_timeout_ms")?;
        between(self.retry_initial, 1, 86_400_000, "retry_initial_ms")?;
        between(self.retry_max, 1, 86_400_000, "retry_max_ms")?;
        between(self.request_timeout, 10, 86_400_000, "request_timeout_ms")?;
        if let Some(t) = self.default_ttl {
            between(t, 10, 30 * 86_400_000, "default_ttl_ms")?;
        }
        if self.retry_initial > self.retry_max {
            return Err(CoreError::invalid(
                "config.messaging.retry_initial_ms must not exceed retry_max_ms",
            ));
        }
        if !(1..=100).contains(&self.max_deliveries) {
            return Err(CoreError::invalid(
                "config.messaging.max_deliveries must be between 1 and 100",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_inbox) {
            return Err(CoreError::invalid(
                "config.messaging.max_inbox must be between 1 and 1000000",
            ));
        }
        Ok(())
    }

    /// The wait before delivery number `deliveries + 1`.
    pub fn retry_after(&self, deliveries: u32) -> Duration {
        let factor = 1u32 << deliveries.saturating_sub(1).min(20);
        (self.retry_initial * factor).min(self.retry_max)
    }
}

/// Checks a topic name: dot-separated segments of letters, digits, `-`, `_`, `:` and `/`.
pub fn validate_topic(topic: &str) -> Result<(), CoreError> {
    check_segments(topic, false).map_err(|why| {
        CoreError::invalid(format!(
            "topic {topic:?} {why}; a topic is dot-separated words, e.g. tasks.created"
        ))
    })
}

/// Checks a subscription pattern: a topic whose segments may be `*`. A `*` matches exactly one
/// segment, except as the last segment, where it matches one or more (`tasks.*` matches
/// `tasks.created` and `tasks.review.done`; `*` alone matches every topic).
pub fn validate_pattern(pattern: &str) -> Result<(), CoreError> {
    check_segments(pattern, true).map_err(|why| {
        CoreError::invalid(format!(
            "subscription {pattern:?} {why}; use dot-separated words and `*`, e.g. tasks.* or *"
        ))
    })
}

fn check_segments(text: &str, wildcards: bool) -> Result<(), &'static str> {
    if text.is_empty() || text.len() > 200 {
        return Err("must be 1 to 200 characters long");
    }
    for seg in text.split('.') {
        if seg == "*" && wildcards {
            continue;
        }
        if seg.is_empty() {
            return Err("has an empty segment");
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '/'))
        {
            return Err(if wildcards {
                "may hold only letters, digits, '-', '_', ':', '/', '.' and whole-segment '*'"
            } else {
                "may hold only letters, digits, '-', '_', ':', '/' and '.'"
            });
        }
    }
    Ok(())
}

/// Whether a topic matches a subscription pattern (see [`validate_pattern`]).
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.').peekable();
    let mut t = topic.split('.');
    while let Some(seg) = p.next() {
        let last = p.peek().is_none();
        match t.next() {
            None => return false,
            Some(_) if seg == "*" && last => return true,
            Some(word) if seg == "*" || seg == word => {}
            Some(_) => return false,
        }
    }
    t.next().is_none()
}

/// What a publish, broadcast or send did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sent {
    /// The messages put in inboxes (one per recipient).
    pub messages: Vec<Message>,
    /// Agents left out because the topology does not let the sender reach them.
    #[serde(default)]
    pub unreachable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_segment_or_the_rest() {
        assert!(topic_matches("*", "health"));
        assert!(topic_matches("*", "tasks.created"));
        assert!(topic_matches("tasks.*", "tasks.created"));
        assert!(topic_matches("tasks.*", "tasks.review.done"));
        assert!(!topic_matches("tasks.*", "tasks"));
        assert!(!topic_matches("tasks.*", "health"));
        assert!(topic_matches("health", "health"));
        assert!(!topic_matches("health", "health.cpu"));
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.b.d"));
        assert!(!topic_matches("a.*.c", "a.b.c.d"));
    }

    #[test]
    fn topics_and_patterns_are_checked() {
        assert!(validate_topic("tasks.created").is_ok());
        assert!(validate_topic("tasks.*").is_err());
        assert!(validate_topic("a..b").is_err());
        assert!(validate_pattern("tasks.*").is_ok());
        assert!(validate_pattern("*").is_ok());
        assert!(validate_pattern("ta*sks").is_err());
        assert!(validate_pattern("").is_err());
    }

    #[test]
    fn priorities_order_and_parse() {
        assert!(MessagePriority::Critical > MessagePriority::High);
        assert!(MessagePriority::Normal > MessagePriority::Low);
        assert_eq!(
            "high".parse::<MessagePriority>().unwrap(),
            MessagePriority::High
        );
        assert!("urgent".parse::<MessagePriority>().is_err());
    }

    #[test]
    fn redeliveries_back_off_up_to_the_cap() {
        let c = MessagingConfig::default();
        assert_eq!(c.retry_after(1), Duration::from_secs(1));
        assert_eq!(c.retry_after(2), Duration::from_secs(2));
        assert_eq!(c.retry_after(4), Duration::from_secs(8));
        assert_eq!(c.retry_after(30), Duration::from_secs(60));
    }
}
