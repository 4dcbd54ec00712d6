//! The runtime's counters, shared by every service on it.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

/// The live counters behind [`ConsumerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) acks_lost: AtomicU64,
    pub(crate) recounted: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl Counters {
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
        }
    }
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
