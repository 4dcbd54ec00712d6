//! Consuming a RabbitMQ queue.

use core::pin::Pin;

use futures_core::Stream;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::amqp::properties::short_name;
use crate::amqp::supervisor::{Session, Supervisor, FIRST_BACKOFF};
use crate::delivery::{Acknowledger, Delivery};
use crate::error::{Error, ErrorKind, NameKind, Result};
use crate::names::check_queue_name;
use crate::received::Received;
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
    /// Consuming again after a loss, in a task of its own: `next` is raced in `select!`s and
    /// may be dropped at any await, and a `basic.consume` abandoned half-way leaves a consumer
    /// on a live channel whose deliveries nobody reads (held unacked until the connection
    /// ends). The task finishes whatever becomes of the `next` that started it.
    /// The sender tells the task when the subscription is dropped (by being dropped).
    resuming: Option<(
        tokio::task::JoinHandle<Result<Live>>,
        tokio::sync::oneshot::Sender<()>,
    )>,
    cancelled: bool,
    generation: u64,
}

#[derive(Debug)]
struct Live {
    channel: Arc<Channel>,
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
            resuming: None,
            cancelled: false,
            generation: 1,
        };
        let deadline = tokio::time::Instant::now() + subscription.sup.config.send_timeout;
        let live = consume(
            Arc::clone(&subscription.sup),
            subscription.queue.clone(),
            prefetch,
            Some(deadline),
            None,
        )
        .await?;
        subscription.live = Some(live);
        Ok(subscription)
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; `None` once cancelled. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let Some(live) = self.live.as_mut() else {
                if self.cancelled {
                    return None;
                }
                let (resuming, _) = self.resuming.get_or_insert_with(|| {
                    let (sup, queue) = (Arc::clone(&self.sup), self.queue.clone());
                    let (alive, dropped) = tokio::sync::oneshot::channel();
                    let task = consume(sup, queue, self.prefetch, None, Some(dropped));
                    (tokio::spawn(task), alive)
                });
                let outcome = resuming.await;
                self.resuming = None;
                match outcome {
                    Ok(Ok(live)) => {
                        self.generation += 1;
                        tracing::info!(
                            queue = %self.queue,
                            generation = self.generation,
                            "consuming again after a lost connection"
                        );
                        self.live = Some(live);
                        continue;
                    }
                    // The queue is gone, or the broker refuses: nothing to resume. (A channel
                    // closed under the consume, or a hard error that closed the connection,
                    // is not that: consuming is tried again on the next connection.)
                    Ok(Err(e))
                        if !e.is_connection_error() && e.kind() != ErrorKind::ChannelClosed =>
                    {
                        self.cancelled = true;
                        return Some(Err(e));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "consuming again failed; retrying");
                        tokio::time::sleep(FIRST_BACKOFF).await;
                        continue;
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
            // Biased: a delivery already received is taken without building the wait on
            // the session, which only matters while no delivery comes.
            let item = tokio::select! {
                biased;
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
                    let properties = Received::amqp(d.properties);
                    tracing::trace!(
                        queue = %self.queue,
                        delivery_tag = d.delivery_tag,
                        message_id = properties.message_id().unwrap_or(""),
                        "delivery"
                    );
                    let delivery = Delivery::received(
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
                Err(Error::new(ErrorKind::Timeout)
                    .context(format!("cancel consumer of {:?}: no answer", self.queue)))
            }
        }
    }
}

/// Opens a channel on an open session (reconnecting first if needed, until `deadline` or
/// without end), sets the prefetch and consumes `queue` with manual acks.
///
/// `dropped` resolves when the subscription is gone: waiting for a connection stops then,
/// but once a channel is being opened the work is finished and the result dropped, which
/// closes the channel cleanly (cutting a `basic.consume` short would leave its consumer).
async fn consume(
    sup: Arc<Supervisor>,
    queue: String,
    prefetch: u16,
    deadline: Option<tokio::time::Instant>,
    dropped: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<Live> {
    let session = match dropped {
        Some(dropped) => tokio::select! {
            session = sup.session(deadline) => session?,
            _ = dropped => {
                return Err(Error::new(ErrorKind::ChannelClosed)
                    .context(format!("subscription to {queue:?} dropped")));
            }
        },
        None => sup.session(deadline).await?,
    };
    let channel = session.open_channel("consume").await?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .map_err(|e| Error::from_lapin(e).context(format!("set prefetch {prefetch}")))?;
    let consumer = channel
        .basic_consume(
            short_name(NameKind::Queue, &queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::from_lapin(e).context(format!("consume queue {queue:?}")))?;
    tracing::debug!(queue, prefetch, "consuming");
    Ok(Live {
        channel,
        consumer,
        session,
    })
}

impl crate::transport::Subscription for AmqpSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        AmqpSubscription::next(self).await
    }

    async fn cancel(&mut self) -> Result<()> {
        AmqpSubscription::cancel(self).await
    }
}
