//! How a consumer consumes: the settings every service on the runtime shares.

use std::time::Duration;

use crate::core::envelope::DecodeLimits;
use crate::error::{Error, ErrorKind, Result};
use crate::events::Events;
use crate::protocol::DEFAULT_MAX_PAYLOAD;

/// Settings of the consumer runtime, embedded in [`crate::WorkerConfig`] and
/// [`crate::RpcServerConfig`]. Build it with [`ConsumerConfig::default`] and the setters;
/// [`ConsumerConfig::validate`] (called when a service starts) refuses values that would give
/// a consumer that never consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Most unacknowledged deliveries at once (`basic.qos`), at least 1. Default 64.
    pub prefetch: u16,
    /// Most handlers running at once, at least 1. Default 16.
    pub concurrency: usize,
    /// Largest body handed to a handler, in bytes; larger ones are refused (dead-lettered as
    /// `oversized`, or answered with a `too-large` error by an RPC server). Default 1 MiB
    /// ([`crate::DEFAULT_MAX_PAYLOAD`]). A body may be 32 bytes longer than this: the retry
    /// copy of a message at the limit gains its `retryCount`, and must still be handled.
    pub max_body: usize,
    /// Longest a handler may run; one that takes longer counts as a transient failure.
    /// `None` (the default): no limit.
    pub handler_timeout: Option<Duration>,
    /// How long shutdown waits for running handlers before requeueing their messages.
    /// Default 30 s.
    pub shutdown_timeout: Duration,
    /// How deep a payload may nest (objects and arrays inside the payload value), 1 to
    /// [`MAX_PAYLOAD_DEPTH`]: default [`DecodeLimits::DEFAULT_PAYLOAD_DEPTH`] (128). Deeper
    /// messages are dead-lettered as `malformed` (an RPC server answers `decode`).
    pub payload_depth: u32,
    /// Where the consumer emits its events (received, handled, retried, dead-lettered, ...):
    /// `None` (the default) emits nothing. See [`crate::events`].
    pub events: Option<Events>,
}

/// Deepest payload nesting a consumer accepts: typed payloads are decoded by serde, which
/// recurses once per level on the handler task's stack.
pub const MAX_PAYLOAD_DEPTH: u32 = 512;

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            prefetch: 64,
            concurrency: 16,
            max_body: DEFAULT_MAX_PAYLOAD,
            handler_timeout: None,
            shutdown_timeout: Duration::from_secs(30),
            payload_depth: DecodeLimits::DEFAULT_PAYLOAD_DEPTH,
            events: None,
        }
    }
}

impl ConsumerConfig {
    /// Emits the consumer's events to `events` (see [`crate::events`]).
    #[must_use]
    pub fn events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// Sets the prefetch.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets the handler concurrency.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets the body size limit.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the handler timeout.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }

    /// Sets the shutdown timeout.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets how deep a payload may nest (1 to [`MAX_PAYLOAD_DEPTH`]; other values are
    /// refused when the service starts).
    #[must_use]
    pub fn payload_depth(mut self, depth: u32) -> Self {
        self.payload_depth = depth;
        self
    }

    /// The envelope decode limits these settings give.
    pub(crate) fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits::new()
            .payload_depth(self.payload_depth)
            .unwrap_or(DecodeLimits::DEFAULT)
    }

    /// Checks the ranges: a prefetch, concurrency or body limit of 0, or a handler timeout of
    /// zero, would give a consumer that never handles anything.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        let invalid = |setting: &'static str, why: &str| {
            Err(Error::new(ErrorKind::InvalidConfig { setting }).context(why.to_owned()))
        };
        if self.prefetch == 0 {
            return invalid("prefetch", "0 would let the broker send without bound");
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "0 handlers would never take a delivery");
        }
        if self.max_body == 0 {
            return invalid("max_body", "0 bytes would refuse every message");
        }
        if !(1..=MAX_PAYLOAD_DEPTH).contains(&self.payload_depth) {
            return invalid("payload_depth", "a payload nests 1 to 512 levels deep");
        }
        if self.handler_timeout == Some(Duration::ZERO) {
            return invalid("handler_timeout", "0 would time out every handler");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_are_refused() {
        assert!(ConsumerConfig::default().validate().is_ok());
        for (config, setting) in [
            (ConsumerConfig::default().concurrency(0), "concurrency"),
            (ConsumerConfig::default().prefetch(0), "prefetch"),
            (ConsumerConfig::default().max_body(0), "max_body"),
            (ConsumerConfig::default().payload_depth(0), "payload_depth"),
            (
                ConsumerConfig::default().payload_depth(513),
                "payload_depth",
            ),
            (
                ConsumerConfig::default().handler_timeout(Duration::ZERO),
                "handler_timeout",
            ),
        ] {
            let err = config.validate().expect_err(setting);
            assert_eq!(err.kind(), ErrorKind::InvalidConfig { setting });
            assert!(err.to_string().contains(setting), "{err}");
        }
    }
}
