//! The runtime's counters, shared by every service on it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::{Events, Field};
use crate::metrics;

/// What the consumer runtime counted, part of [`crate::WorkerStats`] and
/// [`crate::rpc::RpcServerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries given back to the queue: requeued after a failed follow-up or a handler
    /// stopped at shutdown, or, never started at shutdown, published again as a fresh copy.
    pub requeued: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Handlers stopped by the handler timeout.
    pub timed_out: u64,
    /// Acknowledgements that had no effect (the broker redelivers).
    pub acks_lost: u64,
    /// Redelivered messages published again with their delivery count (classic queues).
    pub recounted: u64,
    /// Deliveries refused before any handler ran: over the body limit or past the delivery
    /// limit.
    pub refused: u64,
    /// Deliveries held before their handler started, because their type was at its rate or
    /// concurrency limit (see [`crate::Limits`]); a held delivery counts no retry.
    pub held: u64,
}

/// The live counters behind [`ConsumerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// The queue consumed: the `queue` label of the metrics (see [`crate::metrics`]).
    pub(crate) queue: String,
    pub(crate) received: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) acks_lost: AtomicU64,
    pub(crate) recounted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) held: AtomicU64,
    /// Where the consumer's events go, if anywhere (see [`crate::events`]).
    pub(crate) events: Option<Events>,
}

impl Counters {
    /// The same, emitting events to `events`.
    pub(crate) fn with_events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
    }

    /// Emits an event of this consumer's queue (the one hook of [`crate::events`]): `fields`
    /// is only called when events are on (an emitter that is off costs one branch), and hands
    /// its members, borrowed, to the emitter it is given.
    pub(crate) fn event(
        &self,
        kind: &'static str,
        fields: impl FnOnce(&dyn Fn(&[(&str, Field<'_>)])),
    ) {
        if let Some(events) = &self.events {
            fields(&|members| events.emit_fields(kind, &self.queue, members));
        }
    }

    /// Counters of the consumer of `queue`.
    pub(crate) fn new(queue: &str) -> Self {
        Counters {
            queue: queue.to_owned(),
            ..Counters::default()
        }
    }

    /// Adds one to `counter` and to the metric `name` (labelled with the queue): the one
    /// place both count, so the metrics follow the stats exactly.
    pub(crate) fn bump(&self, counter: &AtomicU64, name: &'static str) {
        bump(counter);
        metrics::count(name, &[("queue", &self.queue)]);
    }

    pub(crate) fn snapshot(&self) -> ConsumerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumerStats {
            received: get(&self.received),
            requeued: get(&self.requeued),
            panicked: get(&self.panicked),
            timed_out: get(&self.timed_out),
            acks_lost: get(&self.acks_lost),
            recounted: get(&self.recounted),
            refused: get(&self.refused),
            held: get(&self.held),
        }
    }
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
