//! Hooks every message passes through on its way into the bus: before it is accepted (and may
//! be refused), after it is in inboxes, and when it is acknowledged.
//!
//! Two come with the coordinator: [`SizeLimit`] (a body over the limit is refused with 413) and
//! [`Audit`] (a JSON line per send and acknowledgement, who, what, when, never the body).
//! Embedders add their own with [`crate::state::AppState::add_message_middleware`].

use std::io::Write;
use std::path::{Path, PathBuf};

use flotilla_core::{AgentId, Message, MessageId, MessageSpec, SwarmId, Timestamp};
use parking_lot::Mutex;
use serde_json::json;

use crate::error::ApiError;

/// How a message was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendAction {
    /// To one agent.
    Send,
    /// To every agent the sender reaches.
    Broadcast,
    /// To a topic's subscribers.
    Publish,
}

impl SendAction {
    /// Its name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            SendAction::Send => "send",
            SendAction::Broadcast => "broadcast",
            SendAction::Publish => "publish",
        }
    }
}

/// Who sends what, where.
#[derive(Clone, Debug)]
pub struct SendContext<'a> {
    /// How.
    pub action: SendAction,
    /// The swarm.
    pub swarm: SwarmId,
    /// The sending agent; `None` for an operator.
    pub from: Option<AgentId>,
    /// The recipient of a send.
    pub to: Option<AgentId>,
    /// The topic of a publish.
    pub topic: Option<&'a str>,
    /// The id of the caller's token (never the token itself).
    pub token_id: &'a str,
    /// When.
    pub at: Timestamp,
}

/// A hook on the message path. Every method has a default that does nothing.
pub trait MessageMiddleware: Send + Sync {
    /// Its name, for logs.
    fn name(&self) -> &str;

    /// Before the message is accepted; an error refuses it (nothing is sent).
    fn before_send(&self, _ctx: &SendContext<'_>, _spec: &MessageSpec) -> Result<(), ApiError> {
        Ok(())
    }

    /// After the messages are durable in their inboxes.
    fn after_send(&self, _ctx: &SendContext<'_>, _sent: &[Message]) {}

    /// After an agent acknowledged messages.
    fn after_ack(&self, _agent: AgentId, _acked: &[MessageId], _at: Timestamp) {}
}

/// Refuses message bodies over a size (413).
pub struct SizeLimit(pub usize);

impl MessageMiddleware for SizeLimit {
    fn name(&self) -> &str {
        "size-limit"
    }

    fn before_send(&self, _ctx: &SendContext<'_>, spec: &MessageSpec) -> Result<(), ApiError> {
        if spec.body.len() > self.0 {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "message body is {} bytes; this coordinator accepts at most {} (--message-max-bytes)",
                    spec.body.len(),
                    self.0
                ),
            ));
        }
        Ok(())
    }
}

/// Appends a JSON line per message sent and per acknowledgement to a file: who (agent, token
/// id), what (id, kind, topic, priority, size), to whom, when. Bodies are never written.
pub struct Audit {
    path: PathBuf,
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Audit {
    /// Opens (appends to) the audit file, creating it with mode 0600.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Audit {
            path: path.to_path_buf(),
            file: Mutex::new(std::io::BufWriter::new(file)),
        })
    }

    /// Appends the lines together, flushed once (a broadcast's lines in one write).
    fn write(&self, lines: impl IntoIterator<Item = serde_json::Value>) {
        let mut f = self.file.lock();
        let ok = lines.into_iter().all(|line| {
            serde_json::to_writer(&mut *f, &line).is_ok() && f.write_all(b"\n").is_ok()
        }) && f.flush().is_ok();
        if !ok {
            tracing::warn!(path = %self.path.display(), "could not write the message audit log");
        }
    }
}

impl MessageMiddleware for Audit {
    fn name(&self) -> &str {
        "audit"
    }

    fn after_send(&self, ctx: &SendContext<'_>, sent: &[Message]) {
        self.write(sent.iter().map(|m| {
            json!({
                "at": ctx.at,
                "action": ctx.action.as_str(),
                "token_id": ctx.token_id,
                "id": m.id,
                "swarm_id": m.swarm_id,
                "from": m.from,
                "to": m.to,
                "kind": m.kind,
                "topic": m.topic,
                "priority": m.priority,
                "correlation_id": m.correlation_id,
                "bytes": m.body.len(),
            })
        }));
    }

    fn after_ack(&self, agent: AgentId, acked: &[MessageId], at: Timestamp) {
        if acked.is_empty() {
            return;
        }
        self.write([json!({
            "at": at,
            "action": "ack",
            "agent_id": agent,
            "ids": acked,
        })]);
    }
}
