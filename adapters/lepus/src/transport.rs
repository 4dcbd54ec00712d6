//! The operations every transport offers: RabbitMQ ([`crate::AmqpTransport`]), the
//! in-process broker ([`crate::InProcessBroker`]) and the run-time choice between them
//! ([`crate::Broker`]). Bytes in, bytes out, plus AMQP properties; no envelope or retry
//! decision is made here.

use core::future::Future;

use crate::delivery::Delivery;
use crate::error::Result;
use crate::properties::Properties;
use crate::topology::QueueSpec;

/// One message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Publication<'a> {
    /// Target exchange (`""` is the default exchange, which routes by queue name).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Body bytes.
    pub body: &'a [u8],
    /// Properties and headers.
    pub properties: &'a Properties,
    /// An unroutable publish is an error ([`crate::ErrorKind::Unroutable`]): true, the
    /// default. Off only where the broker's answer means nothing (replies to a direct
    /// reply-to address, which RabbitMQ returns as unroutable even when it delivers them).
    pub mandatory: bool,
    /// A follow-up of a delivered message (retry copy, dead letter, message given back): held
    /// to [`crate::MAX_FOLLOW_UP_BODY`] instead of the transport's payload limit.
    pub(crate) follow_up: bool,
}

impl<'a> Publication<'a> {
    /// A publication of `body` to `exchange` with `routing_key`.
    pub fn new(
        exchange: &'a str,
        routing_key: &'a str,
        body: &'a [u8],
        properties: &'a Properties,
    ) -> Self {
        Publication {
            exchange,
            routing_key,
            body,
            properties,
            mandatory: true,
            follow_up: false,
        }
    }

    /// The same publication, as a follow-up of a delivered message: see
    /// [`crate::MAX_FOLLOW_UP_BODY`].
    #[must_use]
    pub(crate) fn follow_up(mut self) -> Self {
        self.follow_up = true;
        self
    }

    /// The largest body this publication may carry on a transport whose payload limit is
    /// `max_payload`.
    pub(crate) fn body_limit(&self, max_payload: usize) -> usize {
        if self.follow_up {
            max_payload.max(crate::protocol::MAX_FOLLOW_UP_BODY)
        } else {
            max_payload
        }
    }

    /// The same publication, not mandatory: nobody learns whether it was routed.
    #[must_use]
    pub fn not_mandatory(mut self) -> Self {
        self.mandatory = false;
        self
    }
}

/// A broker connection: declares topology, publishes with confirmation, consumes.
///
/// Every publish is persistent (unless [`Properties::transient`]) and mandatory (unless
/// [`Publication::not_mandatory`]), and returns only once the broker took
/// responsibility for the message: an unroutable message is
/// [`crate::ErrorKind::Unroutable`], a refused one [`crate::ErrorKind::Nacked`]. Names, sizes
/// and properties are validated first; invalid input is an error and nothing is sent.
pub trait Transport: Send + Sync {
    /// What [`Transport::consume`] returns.
    type Subscription: Subscription;

    /// Declares a durable topic exchange (idempotent).
    fn declare_exchange(&self, exchange: &str) -> impl Future<Output = Result<()>> + Send;

    /// Declares a worker queue, its bindings, its dead-letter queue and the wait queues of
    /// its retry delays (idempotent). See [`crate::topology`].
    fn declare_queue(&self, spec: &QueueSpec) -> impl Future<Output = Result<()>> + Send;

    /// Publishes one message and waits for the broker's confirmation. Many publishes may be
    /// in flight at once; their confirmations pipeline.
    fn publish(&self, publication: Publication<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Publishes a batch: validates all (an invalid one fails the call and nothing is sent),
    /// sends all, then waits for all confirmations. The inner results are per message, in
    /// order.
    fn publish_batch(
        &self,
        batch: &[Publication<'_>],
    ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send;

    /// Publishes into the wait queue of `queue` for `delay_ms`; the message comes back to
    /// `queue` (only) once the delay has passed.
    fn publish_delayed(
        &self,
        queue: &str,
        delay_ms: u32,
        body: &[u8],
        properties: &Properties,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Publishes into the dead-letter queue of `queue` (`<queue>.dead`).
    fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        properties: &Properties,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Starts consuming `queue` with at most `prefetch` unacknowledged deliveries.
    fn consume(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> impl Future<Output = Result<Self::Subscription>> + Send;

    /// Deletes a queue (and its messages). Deleting a missing queue succeeds.
    fn delete_queue(&self, queue: &str) -> impl Future<Output = Result<()>> + Send;

    /// Deletes an exchange. Deleting a missing exchange succeeds.
    fn delete_exchange(&self, exchange: &str) -> impl Future<Output = Result<()>> + Send;
}

/// A stream of deliveries from one queue.
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription was cancelled or its channel closed.
    ///
    /// Must be cancel-safe: the worker polls it in a `select!`, and a dropped `next` future
    /// must not lose a delivery.
    fn next(&mut self) -> impl Future<Output = Option<Result<Delivery>>> + Send;

    /// Stops the flow of deliveries. Unsettled deliveries are redelivered by the broker
    /// when the subscription is dropped.
    fn cancel(&mut self) -> impl Future<Output = Result<()>> + Send;
}
