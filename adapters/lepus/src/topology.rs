//! What a worker queue looks like, independent of the transport.
//!
//! A worker queue `<queue>` comes with:
//! - bindings from a durable topic exchange with topic patterns (`mailer.ad.*`, `mailer.#`);
//! - its dead-letter queue `<queue>.dead`, where failed messages wait for a person (the
//!   queue also dead-letters rejected messages there by itself);
//! - bindings to the delay levels' delivery exchange (see [`crate::delay`]): by its own name, so
//!   a retry that has waited its delay comes back to this queue **only**, and with each
//!   topic pattern, so a delayed send to the exchange reaches it like a plain one.
//!
//! No queue is declared per delay: every wait happens on the fixed delay levels.

use crate::error::{Error, ErrorKind, Result};
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
    /// Deliveries allowed in all before the broker dead-letters a message: declared as
    /// `x-delivery-limit` on quorum queues (RabbitMQ 3.10 sets none by default). Classic
    /// queues have no such argument; the worker counts their deliveries itself.
    pub delivery_limit: Option<u32>,
    /// `x-max-priority` of the queue (1 to 255; RabbitMQ recommends at most 10, since each
    /// level costs memory and CPU): messages with a higher `priority` property are delivered
    /// first, FIFO within a priority. Classic queues only: RabbitMQ 3.10's quorum queues have
    /// no priorities, so asking for one there is an [`ErrorKind::InvalidConfig`] error, not a
    /// silent ignore. A queue's arguments cannot change once declared: adding or changing this
    /// on an existing queue is refused by the broker (406) until the queue is deleted.
    pub max_priority: Option<u8>,
}

impl QueueSpec {
    /// A classic queue bound to `exchange`, with no bindings yet.
    pub fn new(name: impl Into<String>, exchange: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            kind: QueueKind::Classic,
            exchange: exchange.into(),
            bindings: Vec::new(),
            delivery_limit: None,
            max_priority: None,
        }
    }

    /// Sets the queue's maximum priority (see [`QueueSpec::max_priority`]).
    #[must_use]
    pub fn max_priority(mut self, max: u8) -> Self {
        self.max_priority = Some(max);
        self
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

    /// Checks every name the spec will declare, including the derived dead-letter queue name
    /// and the bindings to the delay levels, and the maximum priority. Never panics.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] for a name; [`ErrorKind::InvalidConfig`] (setting
    /// `max_priority`) for a maximum priority of 0 or one on a quorum queue.
    pub fn validate(&self) -> Result<()> {
        match (self.max_priority, self.kind) {
            (Some(0), _) => {
                return Err(Error::new(ErrorKind::InvalidConfig {
                    setting: "max_priority",
                })
                .context("a maximum priority is 1 to 255 (RabbitMQ recommends at most 10)"))
            }
            (Some(max), QueueKind::Quorum) => {
                return Err(Error::new(ErrorKind::InvalidConfig {
                    setting: "max_priority",
                })
                .context(format!(
                    "queue {:?}: quorum queues have no priorities (RabbitMQ 3.10); \
                     max_priority {max} needs a classic queue",
                    self.name
                )))
            }
            _ => {}
        }
        check_queue_name(&self.name)?;
        check_exchange_name(&self.exchange)?;
        dead_letter_queue_name(&self.name)?;
        for pattern in &self.bindings {
            check_binding_pattern(pattern)?;
        }
        crate::delay::delivery_patterns(self)?;
        Ok(())
    }
}

/// The error of declaring `queue` as `declared` where the broker holds it as the other kind
/// (406 `PRECONDITION_FAILED`): says what exists and how to migrate, instead of the broker's
/// "inequivalent arg 'x-queue-type'".
pub fn kind_mismatch(queue: &str, declared: QueueKind) -> Error {
    let (wanted, existing) = match declared {
        QueueKind::Quorum => ("quorum", "classic"),
        QueueKind::Classic => ("classic", "quorum"),
    };
    Error::new(ErrorKind::BrokerRefused { reply_code: 406 }).context(format!(
        "queue {queue:?} exists on the broker as a {existing} queue and is declared here as \
         {wanted}; a queue's type cannot change. To migrate: stop its producers, let its \
         workers empty it (and its `.dead` queue, if it has one), delete both (`rabbitmqctl \
         delete_queue`), then start the workers with the new kind; or give the {wanted} queue \
         a new name and move producers to it (PRECONDITION_FAILED)"
    ))
}

/// The dead-letter queue of `queue`: `<queue>.dead`, validated.
pub fn dead_letter_queue_name(queue: &str) -> Result<String> {
    check_queue_name(queue)?;
    let name = format!("{queue}.dead");
    check_queue_name(&name)?;
    Ok(name)
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
        assert!(dead_letter_queue_name("amq.x").is_err());
        // A 250-byte queue name leaves room for `.dead` (and for `%.` in its binding to
        // the delay levels); a 251-byte one does not: an error, not a panic.
        let longest = "q".repeat(250);
        assert!(QueueSpec::new(longest.clone(), "ex").validate().is_ok());
        assert!(QueueSpec::new(longest + "q", "ex").validate().is_err());
        // A binding pattern whose delivery binding (`ex.<pattern>`) would pass 255 bytes is
        // an error at validation, not at the first delayed send.
        let spec = QueueSpec::new("q", "ex").bind("p".repeat(253));
        let err = spec.validate().err();
        assert!(err.is_some_and(|e| e.is_invalid_input()));
    }

    #[test]
    fn max_priority_is_1_to_255_on_classic_queues_only() {
        assert!(QueueSpec::new("q", "x").max_priority(1).validate().is_ok());
        assert!(QueueSpec::new("q", "x")
            .max_priority(255)
            .validate()
            .is_ok());
        let setting = "max_priority";
        for spec in [
            QueueSpec::new("q", "x").max_priority(0),
            QueueSpec::new("q", "x")
                .kind(QueueKind::Quorum)
                .max_priority(5),
        ] {
            let err = spec.validate().expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::InvalidConfig { setting });
        }
        let quorum = QueueSpec::new("q", "x").kind(QueueKind::Quorum);
        let err = quorum.max_priority(5).validate().unwrap_err().to_string();
        assert!(err.contains("quorum"), "{err}");
    }

    #[test]
    fn spec_validation() {
        let spec = QueueSpec::new("mailer", "lepus")
            .bind("mailer.ad.*")
            .bind("mailer.#");
        assert!(spec.validate().is_ok());
        assert!(QueueSpec::new("mailer", "amq.topic").validate().is_err());
        assert!(QueueSpec::new("mailer", "lepus")
            .bind("k".repeat(256))
            .validate()
            .is_err());
    }
}
