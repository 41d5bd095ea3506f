//! Typed Rust client of the Flotilla HTTP API (`docs/api.md`), and a worker loop for connected
//! agents.
//!
//! - [`Client`] has one async method per endpoint and returns the core's types
//!   ([`flotilla_core::Task`], [`flotilla_core::api::SwarmView`], …).
//! - [`ClientError`] tells, in one line, why a call failed.
//! - An `https://` coordinator with a self-signed or private-CA certificate:
//!   [`Client::with_options`] with [`ClientOptions::ca_cert`].
//! - [`worker::run_worker`] registers an agent and runs a [`worker::TaskHandler`] on every task
//!   it takes, until shut down; [`worker::run_worker_registered`] does the same for an agent
//!   that exists already (a managed agent in `daemon` mode).
//! - Managed agents: [`Client::put_pool`], [`Client::spawn_agent`], [`Client::agent_lifecycle`],
//!   [`Client::agent_logs`], [`Client::follow_agent_logs`] and [`Client::apply_fleet`].
//! - Messages between agents: [`Client::send_message`], [`Client::request`] (and wait for the
//!   response), [`Client::publish`], [`Client::broadcast`], receiving by long poll
//!   ([`Client::receive_messages`], then [`Client::ack_messages`]) or WebSocket
//!   ([`Client::message_socket`]), and a swarm's traffic live ([`Client::follow_messages`]).
//! - Topologies: [`Client::topology`], [`Client::set_topology`], [`Client::delegate_task`].
//! - Several coordinators of one fleet: [`Client::with_urls`], or URLs separated by commas
//!   (see below).
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_client::ClientError> {
//! use flotilla_client::Client;
//! use flotilla_core::TaskSpec;
//!
//! let client = Client::new("http://127.0.0.1:7171", "admin-token")?;
//! let task = client.submit_task("default", &TaskSpec::default()).await?;
//! let done = client.wait_task(task.id, std::time::Duration::from_secs(30)).await?;
//! println!("{}", done.status());
//! # Ok(()) }
//! ```

//!
//! # Several coordinators
//!
//! A fleet may have several coordinators sharing its store, any of which answers any call.
//! Give the client all their URLs (`Client::new("http://a:7171,http://b:7171", token)`,
//! [`Client::with_urls`]): it uses one at a time, the same for every request, and moves to the
//! next in the list (around to the first) when one gives no answer. A request that failed
//! without an answer goes to the next coordinator when sending it again cannot do anything
//! twice:
//!
//! | what failed | sent to the next coordinator |
//! | --- | --- |
//! | the connection could not be made (refused, DNS, connect timeout, TLS handshake): nothing was sent | every request |
//! | the connection broke or the answer did not come in time, after the request went out | `GET` and `HEAD` (reads, long polls, opening a stream or WebSocket), and task submissions whose every task has an idempotency key; not other `POST`, `PUT`, `PATCH` or `DELETE` requests, whose error says they were not sent elsewhere |
//! | the coordinator answered, whatever the status (503 included) | never: that is the answer (a body cut off after the status is an error, not sent again) |
//!
//! Each URL is tried at most once per request; when none answers, the error names each one
//! and what went wrong there. The coordinator in use is shared by the client's clones and
//! [`Client::with_token`] (a [`worker`]'s heartbeats, polls and reports move together), and
//! [`Client::base_url`] names it. Event and message streams are opened again on the next
//! coordinator when they break ([`MessageStream`]); log streams and message sockets are not,
//! but opening them again goes to the next coordinator.

#![warn(missing_docs)]

mod client;
mod endpoints;
mod error;
mod message_socket;
mod message_stream;
mod sse;
mod tls;
pub mod worker;

pub use client::{
    AuditQuery, Client, EventQuery, LogStream, MessageDirection, MessageQuery, MetricsQuery,
    TaskQuery,
};
pub use error::ClientError;
pub use message_socket::MessageSocket;
pub use message_stream::{MessageStream, StreamItem};
pub use tls::ClientOptions;
