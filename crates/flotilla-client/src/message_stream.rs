//! [`MessageStream`]: a swarm's message traffic as it happens, from
//! `GET /swarms/{swarm}/messages/stream`, or the event log from `GET /events/stream`
//! (server-sent events, read by [`crate::sse`]); opened again on the next coordinator when it
//! breaks.

use std::collections::VecDeque;
use std::time::Duration;

use flotilla_core::{Event, Message};
use reqwest::Url;

use crate::client::{Client, EventQuery};
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

/// What a [`MessageStream`] follows, to open it again elsewhere.
#[derive(Clone, Debug)]
pub(crate) enum Followed {
    /// The event log with these filters; `after` moves on with every event read, so that the
    /// stream opened again starts after the last one.
    Events(EventQuery),
    /// A swarm's messages at this URL (written against the client's first coordinator).
    Messages(Url),
}

/// The messages (and, if asked, the events) of a swarm as they happen, from
/// [`crate::Client::follow_messages`], or the event log from [`crate::Client::follow_events`].
///
/// [`MessageStream::next`] answers the next item, or `None` once the coordinator closed the
/// stream (it is shutting down). When the connection breaks or falls silent, or the
/// coordinator closes the stream while the client has others, the stream is opened again on
/// the next coordinator (each at most once in a row without anything read): events resume
/// after the last one read; messages resume with a [`StreamItem::Gap`]. Dropping the stream
/// closes the connection.
pub struct MessageStream {
    response: reqwest::Response,
    /// The client that opened it, and the coordinator it comes from.
    client: Client,
    index: usize,
    followed: Followed,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    /// Opened again on another connection: a gap to report before anything else.
    gap: bool,
    /// Times opened again without a byte read since.
    reopened: usize,
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
    /// Reads the events of an answer whose status was a success, from coordinator `index` of
    /// `client`.
    pub(crate) fn new(
        response: reqwest::Response,
        client: Client,
        index: usize,
        followed: Followed,
    ) -> MessageStream {
        MessageStream {
            response,
            client,
            index,
            followed,
            parser: SseParser::default(),
            ready: VecDeque::new(),
            gap: false,
            reopened: 0,
            done: false,
        }
    }

    /// The next item; `None` when the stream has ended. Fails when the connection breaks or
    /// falls silent for a minute (not even a keep-alive) and no coordinator lets it be opened
    /// again.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, ClientError> {
        loop {
            if std::mem::take(&mut self.gap) {
                return Ok(Some(StreamItem::Gap));
            }
            while let Some(event) = self.ready.pop_front() {
                if let Some(item) = self.item(event)? {
                    if let (StreamItem::Event(e), Followed::Events(query)) =
                        (&item, &mut self.followed)
                    {
                        query.after = Some(e.seq);
                    }
                    return Ok(Some(item));
                }
            }
            if self.done {
                return Ok(None);
            }
            let base = self.client.endpoints().base(self.index).to_owned();
            let chunk = match tokio::time::timeout(SILENCE_LIMIT, self.response.chunk()).await {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    self.reopen(ClientError::from_reqwest(&base, &e)).await?;
                    continue;
                }
                Err(_) => {
                    let silent = ClientError::lost(
                        &base,
                        &format!(
                            "the stream from the coordinator at {base} sent nothing for {}s \
                             (not even a keep-alive): it is lost; follow it again",
                            SILENCE_LIMIT.as_secs()
                        ),
                        true,
                    );
                    self.reopen(silent).await?;
                    continue;
                }
            };
            match chunk {
                Some(bytes) => {
                    self.reopened = 0;
                    if let Err(message) = self.parser.feed(&bytes, &mut self.ready) {
                        self.done = true;
                        return Err(self.decode_error(message));
                    }
                }
                // The coordinator ended it: it is shutting down. Another may carry on.
                None if self.client.endpoints().len() > 1 => {
                    let ended = ClientError::lost(
                        &base,
                        &format!("the coordinator at {base} ended the stream"),
                        false,
                    );
                    if self.reopen(ended).await.is_err() {
                        self.done = true;
                    }
                }
                // An event cut off by the end is dropped, as the standard says.
                None => self.done = true,
            }
        }
    }

    /// The stream's coordinator failed (`why`): opens the stream again on the next one, unless
    /// every one has been tried since the last byte read. Fails with the reason it cannot.
    async fn reopen(&mut self, why: ClientError) -> Result<(), ClientError> {
        let endpoints = self.client.endpoints().clone();
        endpoints.failed(self.index, &why);
        if self.reopened >= endpoints.len() {
            self.done = true;
            return Err(why);
        }
        self.reopened += 1;
        match self.client.open_followed(&self.followed).await {
            Ok((index, response)) => {
                self.index = index;
                self.response = response;
                // An event cut off by the break is dropped with the old parser's state.
                self.parser = SseParser::default();
                self.gap = matches!(self.followed, Followed::Messages(_));
                Ok(())
            }
            Err(e) => {
                self.done = true;
                Err(e)
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
