//! What a worker queue looks like, independent of the transport.
//!
//! A worker queue `<queue>` comes with:
//! - bindings from a durable topic exchange with topic patterns (`mailer.ad.*`, `mailer.#`);
//! - its dead-letter queue `<queue>.dead`, where failed messages wait for a person (the
//!   queue also dead-letters rejected messages there by itself);
//! - one wait queue per retry delay, `<queue>.wait.<ms>`: a message published there sits for
//!   `<ms>` milliseconds (`x-message-ttl`), then the broker dead-letters it through the
//!   default exchange with routing key `<queue>` (`x-dead-letter-exchange = ""`,
//!   `x-dead-letter-routing-key = <queue>`), so it returns to the origin queue **only**, not
//!   to every queue bound to the topic exchange. One queue per delay means a short delay
//!   never waits behind a long one (no head-of-line blocking).
//!
//! ## Wait queues expire when unused
//!
//! A wait queue carries `x-expires` = [`wait_queue_expiry_ms`] (twice the delay plus a
//! minute), so queues for delays nobody uses any more vanish. RabbitMQ deletes an expired
//! queue *with its messages*, and publishing does not renew the lease, only a redeclaration
//! does; so a publisher redeclares a wait queue before publishing into it whenever its last
//! declaration is older than [`wait_queue_lease_ms`] (the delay plus 30 s). A message
//! published within the lease leaves the queue (after its delay) at least 30 s before the
//! queue can expire. Turn this off in the transport's configuration to keep wait queues
//! forever.

use crate::error::Result;
use crate::names::{check_binding_pattern, check_exchange_name, check_queue_name};

/// Queue type, chosen in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum QueueKind {
    /// A classic durable queue.
    #[default]
    Classic,
    /// A replicated quorum queue (`x-queue-type = quorum`).
    Quorum,
}

/// A worker queue, its bindings and its retry delays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// Classic or quorum.
    pub kind: QueueKind,
    /// The topic exchange the bindings are made on.
    pub exchange: String,
    /// Topic patterns bound from `exchange` to the queue.
    pub bindings: Vec<String>,
    /// Retry delays, in milliseconds, whose wait queues are declared up front.
    /// Other delays get their wait queue on first use.
    pub retry_delays_ms: Vec<u32>,
    /// Deliveries allowed in all before the broker dead-letters a message: declared as
    /// `x-delivery-limit` on quorum queues (RabbitMQ 3.10 sets none by default). Classic
    /// queues have no such argument; the worker counts their deliveries itself.
    pub delivery_limit: Option<u32>,
}

impl QueueSpec {
    /// A classic queue bound to `exchange`, with no bindings and no retry delays yet.
    pub fn new(name: impl Into<String>, exchange: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            kind: QueueKind::Classic,
            exchange: exchange.into(),
            bindings: Vec::new(),
            retry_delays_ms: Vec::new(),
            delivery_limit: None,
        }
    }

    /// Sets the delivery limit (see [`QueueSpec::delivery_limit`]).
    #[must_use]
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = Some(limit);
        self
    }

    /// Chooses classic or quorum.
    #[must_use]
    pub fn kind(mut self, kind: QueueKind) -> Self {
        self.kind = kind;
        self
    }

    /// Adds a topic binding pattern.
    #[must_use]
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.bindings.push(pattern.into());
        self
    }

    /// Declares wait queues for these delays (milliseconds) up front.
    #[must_use]
    pub fn retry_delays_ms(mut self, delays: impl IntoIterator<Item = u32>) -> Self {
        self.retry_delays_ms.extend(delays);
        self
    }

    /// Checks every name the spec will declare, including the derived dead-letter and wait
    /// queue names. Never panics.
    pub fn validate(&self) -> Result<()> {
        check_queue_name(&self.name)?;
        check_exchange_name(&self.exchange)?;
        dead_letter_queue_name(&self.name)?;
        for pattern in &self.bindings {
            check_binding_pattern(pattern)?;
        }
        for &delay in &self.retry_delays_ms {
            wait_queue_name(&self.name, delay)?;
        }
        Ok(())
    }
}

/// The dead-letter queue of `queue`: `<queue>.dead`, validated.
pub fn dead_letter_queue_name(queue: &str) -> Result<String> {
    check_queue_name(queue)?;
    let name = format!("{queue}.dead");
    check_queue_name(&name)?;
    Ok(name)
}

/// The wait queue of `queue` for a delay: `<queue>.wait.<ms>`, validated.
pub fn wait_queue_name(queue: &str, delay_ms: u32) -> Result<String> {
    check_queue_name(queue)?;
    let name = format!("{queue}.wait.{delay_ms}");
    check_queue_name(&name)?;
    Ok(name)
}

/// `x-expires` of a wait queue: twice the delay plus one minute, in milliseconds.
pub fn wait_queue_expiry_ms(delay_ms: u32) -> u64 {
    2 * u64::from(delay_ms) + 60_000
}

/// How long a declaration of a wait queue covers publishes into it: the delay plus 30 s.
/// Past that, publishers redeclare it first (see the module docs).
pub fn wait_queue_lease_ms(delay_ms: u32) -> u64 {
    u64::from(delay_ms) + 30_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        assert_eq!(
            dead_letter_queue_name("mailer").ok().as_deref(),
            Some("mailer.dead")
        );
        assert_eq!(
            wait_queue_name("mailer", 15_000).ok().as_deref(),
            Some("mailer.wait.15000")
        );
        // A 250-byte queue name leaves no room for the suffix: an error, not a panic.
        let long = "q".repeat(250);
        assert!(wait_queue_name(&long, 86_400_000).is_err());
        assert!(wait_queue_name("", 200).is_err(), "not `.wait.200`");
        assert!(dead_letter_queue_name("amq.x").is_err());
        assert!(QueueSpec::new(long.clone(), "ex").validate().is_ok());
        assert!(
            QueueSpec::new(long + "q", "ex").validate().is_err(),
            "no room for .dead"
        );
    }

    #[test]
    fn lease_ends_well_before_expiry() {
        for delay in [0, 200, 15_000, 86_400_000, u32::MAX] {
            // Last publish at the end of the lease, then the message waits `delay`.
            let leaves_at = wait_queue_lease_ms(delay) + u64::from(delay);
            assert!(leaves_at + 30_000 <= wait_queue_expiry_ms(delay));
        }
    }

    #[test]
    fn spec_validation() {
        let spec = QueueSpec::new("mailer", "lepus")
            .bind("mailer.ad.*")
            .bind("mailer.#")
            .retry_delays_ms([15_000, 30_000]);
        assert!(spec.validate().is_ok());
        assert!(QueueSpec::new("mailer", "amq.topic").validate().is_err());
        assert!(QueueSpec::new("mailer", "lepus")
            .bind("k".repeat(256))
            .validate()
            .is_err());
    }
}
