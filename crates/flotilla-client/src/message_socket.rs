//! [`MessageSocket`]: an agent's messages pushed to it over a WebSocket
//! (`GET /agents/{id}/messages/ws`), acknowledged on the same connection.
//!
//! The coordinator sends JSON text frames ([`ServerFrame`]): batches of messages as they
//! arrive, at most `max_in_flight` unacknowledged at a time, and the answer to each
//! acknowledgement; the agent sends [`ClientFrame`]s (`{"ack": [ids]}`, `{"nack": [ids]}`).

use std::collections::VecDeque;

use flotilla_core::api::{ClientFrame, ServerFrame};
use flotilla_core::{Message, MessageId};
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, USER_AGENT};
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::endpoints::Endpoints;
use crate::error::ClientError;

/// An agent's message WebSocket, from [`crate::Client::message_socket`].
///
/// [`MessageSocket::next`] answers the next batch of messages; each must be acknowledged
/// ([`MessageSocket::ack`]) within the swarm's ack timeout, or given back
/// ([`MessageSocket::nack`]) for redelivery. Over `https://` it is a `wss://` socket trusting
/// what the client trusts ([`crate::ClientOptions`]).
///
/// It is opened on the first coordinator that answers, starting with the one the client uses.
/// A socket that breaks is not opened again by itself (messages delivered and not acknowledged
/// are delivered again after the ack timeout); the client moves on, so opening it again goes to
/// the next coordinator.
pub struct MessageSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    base: String,
    /// Batches that came while an acknowledgement waited for its answer.
    pending: VecDeque<Vec<Message>>,
    /// The client's coordinators and which one this socket is open to (told when it breaks).
    endpoint: Option<(std::sync::Arc<Endpoints>, usize)>,
}

impl std::fmt::Debug for MessageSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSocket")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl MessageSocket {
    /// Opens the socket at `url` (the endpoint's `http` or `https` URL) with `token`, within
    /// `within`; `tls` is the client's configuration for `https`.
    pub(crate) async fn connect(
        mut url: Url,
        token: &str,
        base: &str,
        within: std::time::Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<MessageSocket, ClientError> {
        let scheme = match url.scheme() {
            "http" => "ws",
            "https" => "wss",
            _ => {
                return Err(ClientError::InvalidUrl {
                    url: base.to_owned(),
                    message: "the message socket needs an http:// or https:// coordinator"
                        .to_owned(),
                });
            }
        };
        url.set_scheme(scheme)
            .expect("http and ws are both special schemes");
        let invalid = |message: String| ClientError::InvalidUrl {
            url: base.to_owned(),
            message,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| invalid(format!("cannot open a WebSocket there: {e}")))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| invalid("the token holds characters a header cannot carry".into()))?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        request.headers_mut().insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("flotilla-client/", env!("CARGO_PKG_VERSION"))),
        );
        let connector = tls.map(tokio_tungstenite::Connector::Rustls);
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
        let (ws, _) = tokio::time::timeout(within, connecting)
            .await
            .map_err(|_| {
                ClientError::no_answer(base, "the WebSocket handshake timed out", false, true)
            })?
            .map_err(|e| handshake_error(base, e))?;
        Ok(MessageSocket {
            ws,
            base: base.to_owned(),
            pending: VecDeque::new(),
            endpoint: None,
        })
    }

    /// This socket, open to coordinator `index` of `endpoints`.
    pub(crate) fn opened_on(
        mut self,
        endpoints: std::sync::Arc<Endpoints>,
        index: usize,
    ) -> MessageSocket {
        self.endpoint = Some((endpoints, index));
        self
    }

    /// The next batch of messages, as soon as there is one; `None` once the coordinator closed
    /// the socket (it is shutting down, or the agent was removed).
    pub async fn next(&mut self) -> Result<Option<Vec<Message>>, ClientError> {
        if let Some(batch) = self.pending.pop_front() {
            return Ok(Some(batch));
        }
        loop {
            match self.frame().await? {
                None => return Ok(None),
                Some(ServerFrame::Messages { messages }) => return Ok(Some(messages)),
                // The answer to an acknowledgement whose caller stopped waiting for it.
                Some(ServerFrame::Updated { .. }) => continue,
                Some(ServerFrame::Error { message }) => {
                    return Err(ClientError::Socket { message });
                }
            }
        }
    }

    /// Acknowledges messages (they are done with); answers those it changed (others were not
    /// this agent's, or no longer delivered to it).
    pub async fn ack(&mut self, ids: &[MessageId]) -> Result<Vec<MessageId>, ClientError> {
        self.update(ClientFrame {
            ack: ids.to_vec(),
            nack: Vec::new(),
        })
        .await
    }

    /// Gives messages back, to be delivered again later; answers those it changed.
    pub async fn nack(&mut self, ids: &[MessageId]) -> Result<Vec<MessageId>, ClientError> {
        self.update(ClientFrame {
            ack: Vec::new(),
            nack: ids.to_vec(),
        })
        .await
    }

    /// Closes the socket; messages delivered and not acknowledged are delivered again after
    /// the swarm's ack timeout.
    pub async fn close(mut self) -> Result<(), ClientError> {
        match self.ws.close(None).await {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Ok(())
            }
            Err(e) => Err(self.broken(e)),
        }
    }

    async fn update(&mut self, frame: ClientFrame) -> Result<Vec<MessageId>, ClientError> {
        if frame.ack.is_empty() && frame.nack.is_empty() {
            return Ok(Vec::new());
        }
        let text = serde_json::to_string(&frame).expect("ids serialize");
        if let Err(e) = self.ws.send(Frame::text(text)).await {
            return Err(self.broken(e));
        }
        // The coordinator answers every frame in order; batches it pushed meanwhile wait for
        // `next`.
        loop {
            match self.frame().await? {
                None => {
                    return Err(ClientError::lost(
                        &self.base,
                        "the coordinator closed the message socket before answering the \
                         acknowledgement; the messages will be delivered again",
                        false,
                    ));
                }
                Some(ServerFrame::Messages { messages }) => self.pending.push_back(messages),
                Some(ServerFrame::Updated { ids }) => return Ok(ids),
                Some(ServerFrame::Error { message }) => {
                    return Err(ClientError::Socket { message });
                }
            }
        }
    }

    /// The next frame of the coordinator's; `None` once the socket is closed.
    async fn frame(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        loop {
            let frame = match self.ws.next().await {
                None => return Ok(None),
                Some(Ok(frame)) => frame,
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Ok(None),
                Some(Err(e)) => return Err(self.broken(e)),
            };
            match frame {
                Frame::Text(text) => {
                    return parse_frame(text.as_str())
                        .map(Some)
                        .map_err(|e| ClientError::Decode {
                            url: "/messages/ws".to_owned(),
                            message: format!("a frame of the message socket: {e}"),
                        });
                }
                Frame::Close(_) => return Ok(None),
                // Pings are answered by tungstenite itself.
                Frame::Binary(_) | Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => {}
            }
        }
    }

    fn broken(&self, e: tungstenite::Error) -> ClientError {
        let error = ClientError::lost(
            &self.base,
            &format!(
                "the message socket to the coordinator at {} broke: {e}",
                self.base
            ),
            false,
        );
        if let Some((endpoints, index)) = &self.endpoint {
            endpoints.failed(*index, &error);
        }
        error
    }
}

/// Reads a frame of the coordinator's.
fn parse_frame(text: &str) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_str(text)
}

/// The error for a socket that could not be opened: the coordinator's own answer when it
/// refused (401, 403, 404 with its `{"error": …}` body), else why it could not be reached.
fn handshake_error(base: &str, e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            ClientError::from_response(status, response.body().as_deref().unwrap_or_default())
        }
        tungstenite::Error::Io(io) => ClientError::no_answer(
            base,
            &io.to_string(),
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::AddrNotAvailable
            ),
            io.kind() == std::io::ErrorKind::TimedOut,
        ),
        other => {
            ClientError::no_answer(base, &format!("WebSocket handshake: {other}"), false, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_with_their_message_bodies() {
        let text = serde_json::json!({
            "type": "messages",
            "messages": [{
                "id": "0190b6e4-0000-7000-8000-00000000000a",
                "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
                "kind": "request", "from": null, "to": "0190b6e4-0000-7000-8000-000000000003",
                "priority": "normal", "body": {"q": [1, 2]},
                "created_at": "2026-01-01T12:00:00.000Z", "status": "delivered",
                "deliveries": 1, "max_deliveries": 5, "seq": 4
            }]
        })
        .to_string();
        let ServerFrame::Messages { messages } = parse_frame(&text).unwrap() else {
            panic!("messages");
        };
        assert_eq!(
            messages[0].body.to_value(),
            serde_json::json!({"q": [1, 2]})
        );
        // And back: what the coordinator writes, the client reads.
        let again = serde_json::to_string(&ServerFrame::Messages { messages }).unwrap();
        assert!(matches!(
            parse_frame(&again).unwrap(),
            ServerFrame::Messages { .. }
        ));
        let updated = r#"{"type":"updated","ids":["0190b6e4-0000-7000-8000-00000000000a"]}"#;
        assert!(matches!(
            parse_frame(updated).unwrap(),
            ServerFrame::Updated { ids } if ids.len() == 1
        ));
        assert_eq!(
            parse_frame(r#"{"type":"error","message":"no"}"#).unwrap(),
            ServerFrame::Error {
                message: "no".into()
            }
        );
        assert!(parse_frame(r#"{"type":"messages"}"#).is_err());
        assert!(parse_frame(r#"{"type":"hello"}"#).is_err());
        assert!(parse_frame("[]").is_err());
    }
}
