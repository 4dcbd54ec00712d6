//! The RabbitMQ transport, over `lapin` on tokio.
//!
//! [`AmqpTransport`] implements [`crate::Transport`]; its parts can also be used alone:
//! [`Publisher`] (confirm-mode publishing), [`AmqpSubscription`] (prefetch-limited
//! consuming), [`topology`] (idempotent declarations) and [`connect`].

mod channels;
mod config;
mod confirms;
mod connection;
mod inspect;
mod properties;
pub(crate) mod publisher;
mod reply;
mod subscription;
mod supervisor;
pub mod topology;
mod transport;

pub use config::{AmqpConfig, DEFAULT_ADDR};
pub use connection::{connect, redact};
pub use inspect::{is_not_found, QueueBrowser, QueueStatus};
pub use publisher::Publisher;
pub use reply::{AmqpReplyReceiver, AmqpRequestSender};
pub use subscription::AmqpSubscription;
pub use supervisor::{FIRST_BACKOFF, MAX_BACKOFF};
pub use transport::AmqpTransport;
