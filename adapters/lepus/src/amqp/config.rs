//! Configuration of the RabbitMQ transport.

use crate::protocol::DEFAULT_MAX_PAYLOAD;
use std::time::Duration;

/// Broker address used when `AMQP_ADDR` is not set.
pub const DEFAULT_ADDR: &str = "amqp://127.0.0.1:5672/%2f";

/// Configuration of [`crate::AmqpTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmqpConfig {
    /// Broker URI, `amqp://user:pass@host:port/vhost`.
    pub addr: String,
    /// Largest body accepted for publishing, in bytes.
    pub max_payload: usize,
    /// Give wait queues an `x-expires` so unused ones vanish (see [`crate::topology`]).
    pub expire_wait_queues: bool,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Connection name shown in the RabbitMQ management UI.
    pub connection_name: Option<String>,
    /// How long a publish may take in all: waiting for a lost connection to come back,
    /// sending again after it did, and waiting for the broker's confirmation. Past it the
    /// publish is an error (the message may or may not have been stored; it was not
    /// confirmed).
    pub send_timeout: Duration,
}

impl AmqpConfig {
    /// Configuration for `addr`, other settings at their defaults.
    pub fn new(addr: impl Into<String>) -> Self {
        AmqpConfig {
            addr: addr.into(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            expire_wait_queues: true,
            connect_timeout: Duration::from_secs(5),
            connection_name: None,
            send_timeout: Duration::from_secs(30),
        }
    }

    /// Configuration for `AMQP_ADDR`, or [`DEFAULT_ADDR`] when it is unset.
    pub fn from_env() -> Self {
        AmqpConfig::new(std::env::var("AMQP_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned()))
    }

    /// Sets the body size limit.
    #[must_use]
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Turns `x-expires` on wait queues on or off.
    #[must_use]
    pub fn expire_wait_queues(mut self, on: bool) -> Self {
        self.expire_wait_queues = on;
        self
    }

    /// Sets the send timeout (see [`AmqpConfig::send_timeout`]).
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Sets the connection name.
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig::from_env()
    }
}
