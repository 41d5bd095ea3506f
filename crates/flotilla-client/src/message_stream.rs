//! [`MessageStream`]: a swarm's message traffic as it happens, from
//! `GET /swarms/{swarm}/messages/stream` (server-sent events, read by [`crate::sse`]).

use std::collections::VecDeque;
use std::time::Duration;

use flotilla_core::{Event, Message};

use crate::error::ClientError;
use crate::sse::{SseEvent, SseParser};

/// How long the stream may stay silent before it is taken for lost. The coordinator sends a
/// keep-alive comment every 15 s, so this is four missed in a row.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// One item of a [`MessageStream`].
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// A message sent in the swarm (one per recipient of a publish or broadcast).
    Message(Message),
    /// One of the swarm's fleet events (only when following with `events`).
    Event(Event),
    /// Some items may have been missed (the coordinator's bus dropped some): what matters
    /// should be read again from the API (`swarm_messages`, `list_events`).
    Gap,
}

/// The messages (and, if asked, the events) of a swarm as they happen, from
/// [`crate::Client::follow_messages`].
///
/// [`MessageStream::next`] answers the next item, or `None` once the coordinator closed the
/// stream (it is shutting down). Dropping the stream closes the connection.
pub struct MessageStream {
    response: reqwest::Response,
    base: String,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    done: bool,
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("url", &self.response.url().as_str())
            .finish_non_exhaustive()
    }
}

impl MessageStream {
    /// Reads the events of an answer whose status was a success.
    pub(crate) fn new(response: reqwest::Response, base: &str) -> MessageStream {
        MessageStream {
            response,
            base: base.to_owned(),
            parser: SseParser::default(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// The next item; `None` when the stream has ended. Fails when the connection breaks, or
    /// when nothing (not even a keep-alive) came for a minute.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, ClientError> {
        loop {
            while let Some(event) = self.ready.pop_front() {
                if let Some(item) = self.item(event)? {
                    return Ok(Some(item));
                }
            }
            if self.done {
                return Ok(None);
            }
            let chunk = match tokio::time::timeout(SILENCE_LIMIT, self.response.chunk()).await {
                Ok(chunk) => chunk.map_err(|e| ClientError::from_reqwest(&self.base, &e))?,
                Err(_) => {
                    self.done = true;
                    return Err(ClientError::lost(
                        &self.base,
                        &format!(
                            "the message stream from the coordinator at {} sent nothing for {}s \
                             (not even a keep-alive): it is lost; follow it again",
                            self.base,
                            SILENCE_LIMIT.as_secs()
                        ),
                        true,
                    ));
                }
            };
            match chunk {
                Some(bytes) => {
                    if let Err(message) = self.parser.feed(&bytes, &mut self.ready) {
                        self.done = true;
                        return Err(self.decode_error(message));
                    }
                }
                // An event cut off by the end is dropped, as the standard says.
                None => self.done = true,
            }
        }
    }

    fn item(&self, event: SseEvent) -> Result<Option<StreamItem>, ClientError> {
        parse_item(&event).map_err(|m| self.decode_error(m))
    }

    fn decode_error(&self, message: String) -> ClientError {
        ClientError::Decode {
            url: self.response.url().path().to_owned(),
            message,
        }
    }
}

/// The item an event of the stream carries; `None` for an event of a kind this client does not
/// know (a newer coordinator's), which is skipped.
pub(crate) fn parse_item(event: &SseEvent) -> Result<Option<StreamItem>, String> {
    match event.event.as_str() {
        "message" => serde_json::from_str(&event.data)
            .map(|m| Some(StreamItem::Message(m)))
            .map_err(|e| format!("a message of the stream is not a message: {e}")),
        "event" => serde_json::from_str(&event.data)
            .map(|e| Some(StreamItem::Event(e)))
            .map_err(|e| format!("an event of the stream is not an event: {e}")),
        "gap" => Ok(Some(StreamItem::Gap)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn items_are_messages_events_and_gaps() {
        let message = serde_json::json!({
            "id": "0190b6e4-0000-7000-8000-000000000001",
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
            "kind": "event", "from": null, "to": "0190b6e4-0000-7000-8000-000000000003",
            "topic": "builds.done", "priority": "high", "body": {"ok": true},
            "created_at": "2026-01-01T12:00:00.000Z", "status": "pending",
            "deliveries": 0, "max_deliveries": 5, "seq": 9
        });
        let Some(StreamItem::Message(m)) =
            parse_item(&ev("message", &message.to_string())).unwrap()
        else {
            panic!("a message");
        };
        assert_eq!(m.topic.as_deref(), Some("builds.done"));
        assert_eq!(m.body.get(), r#"{"ok":true}"#);
        let event = serde_json::json!({
            "seq": 3, "at": "2026-01-01T12:00:00.000Z", "type": "token_passed",
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002"
        });
        assert!(matches!(
            parse_item(&ev("event", &event.to_string())).unwrap(),
            Some(StreamItem::Event(e)) if e.seq == 3
        ));
        assert_eq!(parse_item(&ev("gap", "")).unwrap(), Some(StreamItem::Gap));
        assert_eq!(parse_item(&ev("something_new", "{}")).unwrap(), None);
        let err = parse_item(&ev("message", "{\"id\":")).unwrap_err();
        assert!(err.contains("not a message"), "{err}");
    }
}
