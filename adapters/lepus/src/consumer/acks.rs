//! Batched acknowledgements for the consumer runtime: core's [`AckWindow`] decides, this moves frames.
//!
//! A delivery whose work succeeded (handler done, follow-up confirmed) waits here until core
//! says a `basic.ack` with `multiple = true` may cover it; nacks and rejects are sent by the
//! delivery task at once and only reported here. A delivery the window cannot track (full) is
//! acked on its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::counters::Counters;
use super::runtime::note_settle_error;
use crate::core::ack::{AckPolicy, AckWindow};
use crate::delivery::Delivery;

/// Tags from the oldest unsettled delivery to the newest that can be tracked; deliveries
/// beyond it (a prefetch above this, or many nacks behind one slow handler) are acked singly.
const WINDOW: usize = 8192;

/// Flush once this many acks are ready.
pub(super) const ACK_BATCH: u32 = 64;
/// Or once the oldest ready one waited this long.
pub(super) const ACK_DELAY: Duration = Duration::from_millis(5);

/// How a delivery task left its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Done and its follow-up confirmed: acknowledge it.
    Ack,
    /// Already settled on its own (nack or reject sent).
    Settled,
}

/// The pending acks of one subscription.
pub(super) struct Acks {
    /// The channel generation the window tracks (see [`Delivery::generation`]).
    generation: u64,
    window: Box<AckWindow<WINDOW>>,
    /// Tracked deliveries done and not yet acked, by tag (the flush acks through one of them).
    ready: BTreeMap<u64, Arc<Delivery>>,
    epoch: Instant,
}

impl Acks {
    pub(super) fn new() -> Self {
        let policy = AckPolicy {
            max_pending: ACK_BATCH,
            max_delay_ms: u64::try_from(ACK_DELAY.as_millis()).unwrap_or(u64::MAX),
            flush_when_idle: true,
        };
        Acks {
            generation: 0,
            window: Box::new(AckWindow::new(policy)),
            ready: BTreeMap::new(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts tracking a delivery; false when it must be settled on its own.
    pub(super) fn receive(&mut self, counters: &Counters, delivery: &Delivery) -> bool {
        if delivery.generation() != self.generation {
            // A new channel after a lost connection: its tags start again, and what was
            // waiting for an ack on the old channel can no longer be acked (the broker
            // redelivers it).
            for _ in 0..self.ready.len() {
                counters.bump(&counters.acks_lost, crate::metrics::ACKS_LOST);
            }
            let policy = self.window.policy();
            *self.window = AckWindow::new(policy);
            self.ready.clear();
            self.generation = delivery.generation();
        }
        match self.window.receive(delivery.delivery_tag) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(delivery_tag = delivery.delivery_tag, error = %e, "acking singly");
                false
            }
        }
    }

    /// Records how a delivery ended and sends an ack if one is due.
    pub(super) async fn finish(
        &mut self,
        counters: &Counters,
        delivery: Arc<Delivery>,
        tracked: bool,
        verdict: Verdict,
    ) {
        let tag = delivery.delivery_tag;
        let mut now = self.now();
        if delivery.generation() != self.generation {
            // Delivered on a channel that is gone: settling it can only fail.
            if verdict == Verdict::Ack {
                counters.bump(&counters.acks_lost, crate::metrics::ACKS_LOST);
            }
            return;
        }
        match (tracked, verdict) {
            (true, Verdict::Ack) => match self.window.complete(tag, now) {
                Ok(()) => {
                    self.ready.insert(tag, delivery);
                }
                Err(e) => {
                    tracing::warn!(delivery_tag = tag, error = %e, "ack window; acking singly");
                    single_ack(counters, &delivery).await;
                    now = self.now();
                }
            },
            (true, Verdict::Settled) => {
                if let Err(e) = self.window.settled(tag, now) {
                    tracing::warn!(delivery_tag = tag, error = %e, "ack window");
                }
            }
            (false, Verdict::Ack) => {
                single_ack(counters, &delivery).await;
                self.window.settled_untracked();
                now = self.now();
            }
            (false, Verdict::Settled) => self.window.settled_untracked(),
        }
        // The clock is read again only after an await: it is read once per delivery.
        if let Some(through) = self.window.flush_due(now) {
            self.ack_through(counters, through).await;
        }
    }

    /// When a delayed flush is due, if any.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.window
            .next_deadline()
            .map(|ms| self.epoch + Duration::from_millis(ms))
    }

    /// Sends the ack the delay asks for, if due.
    pub(super) async fn flush_due(&mut self, counters: &Counters) {
        let now = self.now();
        if let Some(through) = self.window.flush_due(now) {
            self.ack_through(counters, through).await;
        }
    }

    /// Acks every ready delivery that may be acked (shutdown).
    pub(super) async fn flush(&mut self, counters: &Counters) {
        if let Some(through) = self.window.flush() {
            self.ack_through(counters, through).await;
        }
    }

    async fn ack_through(&mut self, counters: &Counters, through: u64) {
        let rest = self.ready.split_off(&through.saturating_add(1));
        let covered = std::mem::replace(&mut self.ready, rest);
        let Some(last) = covered.get(&through) else {
            // Core only names a tag it was told was done; never reached.
            tracing::error!(
                delivery_tag = through,
                "ack window named an unknown delivery"
            );
            return;
        };
        if let Err(e) = last.ack_multiple().await {
            for _ in 1..covered.len() {
                if e.kind() == crate::error::ErrorKind::AckLost {
                    counters.bump(&counters.acks_lost, crate::metrics::ACKS_LOST);
                }
            }
            note_settle_error(counters, &e, "ack multiple");
        }
    }
}

async fn single_ack(counters: &Counters, delivery: &Delivery) {
    if let Err(e) = delivery.ack().await {
        note_settle_error(counters, &e, "ack");
    }
}
