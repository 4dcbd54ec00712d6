//! Consuming a RabbitMQ queue.

use core::pin::Pin;

use futures_core::Stream;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::amqp::properties::{from_amqp, short_name};
use crate::delivery::{Acknowledger, Delivery};
use crate::error::{Error, NameKind, Result};
use crate::names::check_queue_name;

/// Deliveries from one queue, on a channel of their own with a prefetch limit (`basic.qos`).
/// Dropping the subscription closes the channel; unsettled deliveries are redelivered.
#[derive(Debug)]
pub struct AmqpSubscription {
    channel: Channel,
    consumer: Consumer,
    queue: String,
}

impl AmqpSubscription {
    /// Opens a channel, sets the prefetch and starts consuming `queue` (manual acks).
    pub async fn start(channel: Channel, queue: &str, prefetch: u16) -> Result<Self> {
        check_queue_name(queue)?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("set prefetch {prefetch}")))?;
        let consumer = channel
            .basic_consume(
                short_name(NameKind::Queue, queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("consume queue {queue:?}")))?;
        tracing::debug!(queue, prefetch, "consuming");
        Ok(AmqpSubscription {
            channel,
            consumer,
            queue: queue.to_owned(),
        })
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; `None` once cancelled or closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        let consumer = &mut self.consumer;
        let item = core::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx)).await?;
        Some(match item {
            Ok(d) => {
                let properties = from_amqp(&d.properties);
                tracing::trace!(
                    queue = %self.queue,
                    delivery_tag = d.delivery_tag,
                    message_id = properties.message_id.as_deref().unwrap_or(""),
                    "delivery"
                );
                Ok(Delivery::new(
                    d.data,
                    properties,
                    d.redelivered,
                    d.delivery_tag,
                    d.exchange.into(),
                    d.routing_key.into(),
                    Acknowledger::Amqp(d.acker),
                ))
            }
            Err(e) => Err(Error::from_lapin(e).context(format!("consume queue {:?}", self.queue))),
        })
    }

    /// Cancels the consumer; deliveries already received can still be settled.
    pub async fn cancel(&mut self) -> Result<()> {
        self.channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default())
            .await
            .map_err(|e| {
                Error::from_lapin(e).context(format!("cancel consumer of {:?}", self.queue))
            })
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
