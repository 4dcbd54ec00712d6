//! The RabbitMQ transport, over `lapin` on tokio.
//!
//! [`AmqpTransport`] implements [`crate::Transport`] and [`crate::ReplyTransport`]; it
//! publishes with confirms, consumes through [`AmqpSubscription`] (prefetch-limited, consuming
//! again after a reconnection) and carries RPC replies through [`AmqpRequestSender`] and
//! [`AmqpReplyReceiver`]. [`QueueBrowser`] and [`AmqpTransport::queue_status`] inspect queues.
//! `amqps://` addresses (the `rustls` feature) trust the CA and present the client certificate
//! of [`AmqpConfig`] ([`tls`]).
//!
//! Only with the `amqp` feature (on by default). No public item here takes or returns a
//! lapin type: lapin can move to a new major version without breaking users.

mod channels;
mod config;
mod confirms;
mod connection;
mod inspect;
mod ledger;
pub(crate) mod properties;
pub(crate) mod publisher;
mod reply;
mod subscription;
mod supervisor;
pub mod tls;
mod topology;
mod transport;

pub use config::{AmqpConfig, LOCAL_ADDR};
pub use connection::{addresses, redact};
pub use inspect::{is_not_found, QueueBrowser, QueueStatus};
pub use ledger::AmqpLease;
pub use reply::{AmqpReplyReceiver, AmqpRequestSender};
pub use subscription::AmqpSubscription;
pub use supervisor::{FIRST_BACKOFF, MAX_BACKOFF};
pub use tls::TlsIdentity;
pub use transport::AmqpTransport;
