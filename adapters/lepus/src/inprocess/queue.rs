//! A queue of the in-process broker: ready messages in FIFO order, its arguments (dead-letter
//! target, message TTL) and the consumers that take turns receiving from it.

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::properties::Properties;
use crate::topology::QueueKind;

/// A message held by the broker (ready in a queue, or delivered and unsettled).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) body: Vec<u8>,
    pub(crate) properties: Properties,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) redelivered: bool,
    /// When the message expires from a queue with a message TTL.
    pub(crate) expires_at: Option<Instant>,
}

/// Where a queue dead-letters rejected and expired messages (RabbitMQ's
/// `x-dead-letter-exchange` and `x-dead-letter-routing-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetterTarget {
    /// The exchange (`""`: the default exchange).
    pub(crate) exchange: String,
    /// The routing key; `None` keeps the message's own.
    pub(crate) routing_key: Option<String>,
}

/// Declaration arguments of a queue; redeclaring with other arguments is refused (406).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueArgs {
    pub(crate) kind: QueueKind,
    pub(crate) dead_letter: Option<DeadLetterTarget>,
    /// `x-message-ttl`, in milliseconds.
    pub(crate) message_ttl_ms: Option<u32>,
}

impl QueueArgs {
    /// A queue without dead-lettering or TTL.
    pub(crate) fn plain(kind: QueueKind) -> Self {
        QueueArgs {
            kind,
            dead_letter: None,
            message_ttl_ms: None,
        }
    }
}

/// One queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) name: String,
    pub(crate) args: QueueArgs,
    pub(crate) ready: VecDeque<Stored>,
    /// Consumers in round-robin order.
    pub(crate) consumers: Vec<u64>,
    /// Index into `consumers` of the next one to try.
    pub(crate) next_consumer: usize,
    /// A timer task is expiring this queue's head.
    pub(crate) expiry_armed: bool,
}

impl Queue {
    pub(crate) fn new(name: String, args: QueueArgs) -> Self {
        Queue {
            name,
            args,
            ready: VecDeque::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            expiry_armed: false,
        }
    }

    /// Appends a message, stamping its expiry if the queue has a TTL (all messages of a
    /// queue share one TTL, so expiry order is FIFO order).
    pub(crate) fn push_back(&mut self, mut message: Stored, now: Instant) {
        if let Some(ttl) = self.args.message_ttl_ms {
            message.expires_at = Some(now + std::time::Duration::from_millis(u64::from(ttl)));
        } else {
            message.expires_at = None;
        }
        self.ready.push_back(message);
    }

    /// True when a timer must be started for the head's expiry.
    pub(crate) fn needs_expiry_timer(&self) -> bool {
        self.args.message_ttl_ms.is_some() && !self.expiry_armed && !self.ready.is_empty()
    }
}
