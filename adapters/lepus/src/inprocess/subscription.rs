//! Consuming from the in-process broker, and settling its deliveries.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::delivery::{Acknowledger, Delivery, Settlement};
use crate::error::Result;
use crate::inprocess::broker::{locked, Shared};
use crate::inprocess::queue::Stored;
use crate::inprocess::state::{ConsumerId, Outgoing};
use crate::received::Received;

/// Deliveries from one queue of an [`crate::InProcessBroker`], at most `prefetch` unsettled
/// at a time. Dropping it gives its unsettled deliveries back to the head of the queue,
/// marked redelivered.
#[derive(Debug)]
pub struct InProcessSubscription {
    shared: Arc<Shared>,
    consumer: ConsumerId,
    queue: String,
    rx: UnboundedReceiver<Outgoing>,
}

impl InProcessSubscription {
    pub(crate) fn new(
        shared: Arc<Shared>,
        consumer: ConsumerId,
        queue: String,
        rx: UnboundedReceiver<Outgoing>,
    ) -> Self {
        InProcessSubscription {
            shared,
            consumer,
            queue,
            rx,
        }
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; `None` once cancelled (after the deliveries already sent) or when
    /// the queue was deleted.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        let Outgoing { tag, message } = self.rx.recv().await?;
        let acker = Acker {
            shared: Some(Arc::clone(&self.shared)),
            consumer: self.consumer,
            tag,
        };
        Some(Ok(delivery(message, tag, acker)))
    }

    /// Stops the flow of deliveries; deliveries received can still be settled.
    pub async fn cancel(&mut self) -> Result<()> {
        let consumer = self.consumer;
        locked(&self.shared, |state, _| state.cancel(consumer));
        Ok(())
    }
}

impl Drop for InProcessSubscription {
    fn drop(&mut self) {
        let consumer = self.consumer;
        locked(&self.shared, |state, _| state.remove_consumer(consumer));
    }
}

impl crate::transport::Subscription for InProcessSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        InProcessSubscription::next(self).await
    }

    async fn cancel(&mut self) -> Result<()> {
        InProcessSubscription::cancel(self).await
    }
}

pub(crate) fn delivery(message: Stored, tag: u64, acker: Acker) -> Delivery {
    Delivery::received(
        message.body,
        Received::Whole(message.properties),
        message.redelivered,
        tag,
        message.exchange,
        message.routing_key,
        Acknowledger::InProcess(acker),
    )
}

/// Settles an in-process delivery.
#[derive(Clone)]
pub(crate) struct Acker {
    /// `None` for a message taken with automatic acknowledgement (`get`).
    pub(crate) shared: Option<Arc<Shared>>,
    pub(crate) consumer: ConsumerId,
    pub(crate) tag: u64,
}

impl core::fmt::Debug for Acker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Acker")
            .field("consumer", &self.consumer)
            .field("tag", &self.tag)
            .field("auto_ack", &self.shared.is_none())
            .finish()
    }
}

impl Acker {
    /// Whether the settlement took effect; settling an automatically acknowledged message
    /// is a no-op that succeeds.
    pub(crate) fn settle(&self, how: Settlement) -> bool {
        match &self.shared {
            Some(shared) => locked(shared, |state, clock| {
                state.settle(self.consumer, self.tag, how, clock)
            }),
            None => true,
        }
    }
}
