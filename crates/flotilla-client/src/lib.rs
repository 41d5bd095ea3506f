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

#![warn(missing_docs)]

mod client;
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
