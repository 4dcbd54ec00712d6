//! A queue of the in-process broker: ready messages in FIFO order (by priority first on a queue
//! with `x-max-priority`, as RabbitMQ's priority queues), its arguments (dead-letter target,
//! message TTL, maximum priority) and the consumers that take turns receiving from it.

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
    pub(crate) message_ttl_ms: Option<u64>,
    /// `x-max-priority`: ready messages are kept highest priority first, FIFO within one.
    pub(crate) max_priority: Option<u8>,
}

impl QueueArgs {
    /// A queue without dead-lettering or TTL.
    pub(crate) fn plain(kind: QueueKind) -> Self {
        QueueArgs {
            kind,
            dead_letter: None,
            message_ttl_ms: None,
            max_priority: None,
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

    /// Appends a message (behind every message of its priority or a higher one), stamping its
    /// expiry if the queue has a TTL (all messages of a queue share one TTL, so expiry order
    /// is FIFO order; the broker declares no queue with both a TTL and priorities).
    pub(crate) fn push_back(&mut self, mut message: Stored, now: Instant) {
        message.expires_at = self
            .args
            .message_ttl_ms
            .and_then(|ttl| now.checked_add(std::time::Duration::from_millis(ttl)));
        if self.args.max_priority.is_none() {
            self.ready.push_back(message);
            return;
        }
        let rank = self.rank(&message);
        let at = self.ready.partition_point(|m| self.rank(m) >= rank);
        self.ready.insert(at, message);
    }

    /// Puts a message back at the head of the queue (of its priority, on a queue with
    /// priorities): a requeue, or the unsettled deliveries of a consumer that went away.
    pub(crate) fn push_front(&mut self, message: Stored) {
        if self.args.max_priority.is_none() {
            self.ready.push_front(message);
            return;
        }
        let rank = self.rank(&message);
        let at = self.ready.partition_point(|m| self.rank(m) > rank);
        self.ready.insert(at, message);
    }

    /// The priority the queue orders `message` by, as RabbitMQ: none counts as 0, above the
    /// queue's maximum as the maximum; 0 for all on a queue without priorities.
    fn rank(&self, message: &Stored) -> u8 {
        match self.args.max_priority {
            Some(max) => message.properties.priority.unwrap_or(0).min(max),
            None => 0,
        }
    }

    /// True when a timer must be started for the head's expiry.
    pub(crate) fn needs_expiry_timer(&self) -> bool {
        self.args.message_ttl_ms.is_some() && !self.expiry_armed && !self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, priority: Option<u8>) -> Stored {
        let mut properties = Properties::new().with_message_id(id);
        properties.priority = priority;
        Stored {
            body: Vec::new(),
            properties,
            exchange: String::new(),
            routing_key: String::new(),
            redelivered: false,
            expires_at: None,
        }
    }

    fn ids(queue: &Queue) -> Vec<&str> {
        queue
            .ready
            .iter()
            .map(|m| m.properties.message_id.as_deref().unwrap_or(""))
            .collect()
    }

    #[test]
    fn priority_first_fifo_within_and_requeued_at_the_head_of_its_priority() {
        let mut args = QueueArgs::plain(QueueKind::Classic);
        args.max_priority = Some(5);
        let mut queue = Queue::new("q".into(), args);
        let now = Instant::now();
        for (id, priority) in [("a", Some(1)), ("b", None), ("c", Some(5)), ("d", Some(1))] {
            queue.push_back(message(id, priority), now);
        }
        queue.push_back(message("e", Some(9)), now); // above the maximum: as 5
        assert_eq!(ids(&queue), ["c", "e", "a", "d", "b"]);
        queue.push_front(message("r", Some(1)));
        assert_eq!(ids(&queue), ["c", "e", "r", "a", "d", "b"]);
        // Without a maximum: plain FIFO, priorities ignored.
        let mut plain = Queue::new("p".into(), QueueArgs::plain(QueueKind::Classic));
        plain.push_back(message("a", Some(1)), now);
        plain.push_back(message("b", Some(9)), now);
        plain.push_front(message("r", Some(0)));
        assert_eq!(ids(&plain), ["r", "a", "b"]);
    }
}
