//! Consuming a RabbitMQ queue.

use core::pin::Pin;

use futures_core::Stream;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::amqp::properties::{from_amqp, short_name};
use crate::amqp::supervisor::{Session, Supervisor, FIRST_BACKOFF};
use crate::delivery::{Acknowledger, Delivery};
use crate::error::{Error, NameKind, Result};
use crate::names::check_queue_name;
use std::sync::Arc;

/// Deliveries from one queue, on a channel of their own with a prefetch limit (`basic.qos`).
/// Dropping the subscription closes the channel; unsettled deliveries are redelivered.
///
/// When the connection (or the channel) is lost, the subscription waits for the transport to
/// reconnect and consumes again on a new channel, restoring the prefetch: [`Delivery`]s then
/// carry the next [`Delivery::generation`], and deliveries of the lost channel can no longer
/// be settled (their acks fail with `AckLost`; the broker redelivers them, flagged
/// `redelivered`).
#[derive(Debug)]
pub struct AmqpSubscription {
    sup: Arc<Supervisor>,
    queue: String,
    prefetch: u16,
    live: Option<Live>,
    cancelled: bool,
    generation: u64,
}

#[derive(Debug)]
struct Live {
    channel: Channel,
    consumer: Consumer,
    session: Arc<Session>,
}

impl AmqpSubscription {
    /// Opens a channel, sets the prefetch and starts consuming `queue` (manual acks).
    pub(crate) async fn start(sup: Arc<Supervisor>, queue: &str, prefetch: u16) -> Result<Self> {
        check_queue_name(queue)?;
        let mut subscription = AmqpSubscription {
            sup,
            queue: queue.to_owned(),
            prefetch,
            live: None,
            cancelled: false,
            generation: 0,
        };
        let deadline = tokio::time::Instant::now() + subscription.sup.config.send_timeout;
        subscription.live = Some(subscription.resume(Some(deadline)).await?);
        Ok(subscription)
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Consumes on a channel of an open session (reconnecting first if needed).
    async fn resume(&mut self, deadline: Option<tokio::time::Instant>) -> Result<Live> {
        let session = self.sup.session(deadline).await?;
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|e| Error::from_lapin(e).context("open a channel to consume"))?;
        let prefetch = self.prefetch;
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("set prefetch {prefetch}")))?;
        let queue = &self.queue;
        let consumer = channel
            .basic_consume(
                short_name(NameKind::Queue, queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("consume queue {queue:?}")))?;
        self.generation += 1;
        tracing::debug!(queue, prefetch, generation = self.generation, "consuming");
        Ok(Live {
            channel,
            consumer,
            session,
        })
    }

    /// The next delivery; `None` once cancelled. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let Some(live) = self.live.as_mut() else {
                if self.cancelled {
                    return None;
                }
                match self.resume(None).await {
                    Ok(live) => {
                        tracing::info!(queue = %self.queue, "consuming again after a lost connection");
                        self.live = Some(live);
                        continue;
                    }
                    // The queue is gone, or the broker refuses: nothing to resume.
                    Err(e) if !e.is_connection_error() => {
                        self.cancelled = true;
                        return Some(Err(e));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consuming again failed; retrying");
                        tokio::time::sleep(FIRST_BACKOFF).await;
                        continue;
                    }
                }
            };
            let consumer = &mut live.consumer;
            let next = core::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx));
            let item = tokio::select! {
                item = next => item,
                // lapin may leave the stream pending when the connection is gone.
                () = live.session.closed(), if !self.cancelled => {
                    tracing::warn!(queue = %self.queue, "connection lost while consuming");
                    self.live = None;
                    continue;
                }
            };
            match item {
                Some(Ok(d)) => {
                    let properties = from_amqp(&d.properties);
                    tracing::trace!(
                        queue = %self.queue,
                        delivery_tag = d.delivery_tag,
                        message_id = properties.message_id.as_deref().unwrap_or(""),
                        "delivery"
                    );
                    let delivery = Delivery::new(
                        d.data,
                        properties,
                        d.redelivered,
                        d.delivery_tag,
                        d.exchange.into(),
                        d.routing_key.into(),
                        Acknowledger::Amqp(d.acker),
                    );
                    return Some(Ok(delivery.with_generation(self.generation)));
                }
                // Cancelled: the stream ended. The channel stays open (until the subscription is
                // dropped) so that deliveries already received can still be settled.
                _ if self.cancelled => return None,
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.queue, error = %e, "consumer channel lost");
                    self.live = None;
                }
                None => {
                    tracing::warn!(queue = %self.queue, "consumer stopped by the broker");
                    self.live = None;
                }
            }
        }
    }

    /// Cancels the consumer; deliveries already received can still be settled.
    pub async fn cancel(&mut self) -> Result<()> {
        self.cancelled = true;
        let Some(live) = self.live.as_ref() else {
            return Ok(());
        };
        let cancel = live
            .channel
            .basic_cancel(live.consumer.tag(), BasicCancelOptions::default());
        // Bounded: on a connection that died unnoticed the answer never comes.
        match tokio::time::timeout(std::time::Duration::from_secs(5), cancel).await {
            Ok(outcome) => outcome.map_err(|e| {
                Error::from_lapin(e).context(format!("cancel consumer of {:?}", self.queue))
            }),
            Err(_) => {
                self.live = None;
                Err(Error::new(crate::error::ErrorKind::Timeout)
                    .context(format!("cancel consumer of {:?}: no answer", self.queue)))
            }
        }
    }
}

impl crate::transport::Subscription for AmqpSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        AmqpSubscription::next(self).await
    }

    async fn cancel(&mut self) -> Result<()> {
        AmqpSubscription::cancel(self).await
    }
}
