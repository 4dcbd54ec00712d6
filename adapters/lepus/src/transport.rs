//! The operations every transport offers: RabbitMQ ([`crate::AmqpTransport`]), the
//! in-process broker ([`crate::InProcessBroker`]) and the run-time choice between them
//! ([`crate::Broker`]). Bytes in, bytes out, plus AMQP properties; no envelope or retry
//! decision is made here.

use core::future::Future;
use core::time::Duration;

use crate::delay::Delay;
use crate::delivery::Delivery;
use crate::error::Result;
use crate::properties::Properties;
use crate::topology::QueueSpec;

/// First wait between two attempts to reach the broker again (a connection, an RPC reply
/// channel); the wait doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reach the broker again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One message to publish: built with [`Publication::new`] (fields may be added).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
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
///
/// # Implementing it
///
/// [`crate::AmqpTransport`], [`crate::InProcessBroker`] and [`crate::Broker`] implement it;
/// so can a type outside this crate (a wrapper that injects faults or counts, another broker
/// client). [`crate::Worker`], [`crate::Publisher`], [`crate::RpcServer`] and the gateway
/// rely on the following; an implementation must keep all of it:
///
/// - **Confirms.** `Ok` from a publish means the broker stored (or delivered) the message:
///   the worker acknowledges a delivery only after its follow-up publish (retry, dead
///   letter) returned `Ok`, so an early `Ok` loses messages. A message that may not have
///   been stored is an error, ideally a retryable one ([`crate::Error::is_retryable`]:
///   [`crate::ErrorKind::Nacked`], [`crate::ErrorKind::ConnectionLost`], ...).
/// - **Mandatory.** A [`Publication::mandatory`] message that no queue receives is
///   [`crate::ErrorKind::Unroutable`] (`reply_code` 312), not `Ok`; a message that is not
///   mandatory is `Ok` once the broker took it, routed or not.
/// - **Invalid input.** A name, size or property the transport cannot carry is an error for
///   which [`crate::Error::is_invalid_input`] is true, and nothing is sent (the worker then
///   lets the queue dead-letter the message instead of retrying forever).
/// - **Topology.** [`Transport::declare_queue`] builds the layout of [`crate::topology`]:
///   the queue dead-letters rejected messages to `<queue>.dead`, and is bound to the delay
///   levels ([`crate::delay`]) so that its delayed messages and retries reach it.
///   Declarations and deletions are idempotent.
/// - **Concurrency and cancellation.** Every method takes `&self` and may run concurrently
///   with the others (publishes pipeline). Their futures may be dropped before they finish
///   (the worker bounds its shutdown with a timeout): a dropped publish may or may not have
///   been sent, and must leave the transport usable.
pub trait Transport: Send + Sync {
    /// What [`Transport::consume`] returns.
    type Subscription: Subscription;

    /// Declares a durable topic exchange (idempotent).
    fn declare_exchange(&self, exchange: &str) -> impl Future<Output = Result<()>> + Send;

    /// Declares a worker queue, its bindings, its dead-letter queue, the delay levels of its
    /// kind and its bindings to them (idempotent). See [`crate::topology`].
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

    /// Publishes `publication` through the delay levels ([`crate::delay`], declared on first
    /// use): it is routed by its exchange and routing key once `delay` has passed, exactly as
    /// a plain publish would be then. A retry goes back to its queue only: the default
    /// exchange (`""`) with the queue's name as routing key. `Ok` once the broker confirmed
    /// the message at its first level.
    fn publish_delayed(
        &self,
        publication: Publication<'_>,
        delay: Delay,
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

    /// Closes the connection for good (what [`crate::Host`] does last): afterwards nothing
    /// reconnects and operations fail with [`crate::ErrorKind::Closed`]. Closing twice is
    /// not an error. Must not hang (bound every wait on the broker) and must not fail because
    /// a channel is still closing. The default does nothing (an in-process transport has no
    /// connection).
    fn close(&self) -> impl Future<Output = Result<()>> + Send {
        core::future::ready(Ok(()))
    }

    /// True while the transport is connected to its broker (for readiness probes,
    /// [`crate::Host::is_ready`]). A transport that recovers its connection reports false
    /// from a loss until it is back. The default: always true.
    fn is_connected(&self) -> bool {
        true
    }

    /// True while the broker refuses publishes for now (a RabbitMQ memory or disk alarm,
    /// `connection.blocked`). The default: never.
    fn is_blocked(&self) -> bool {
        false
    }
}

/// A stream of deliveries from one queue.
///
/// An implementation must:
/// - hold at most `prefetch` (the argument of [`Transport::consume`]) deliveries unsettled
///   at a time;
/// - give each delivery a [`Delivery::delivery_tag`] greater than the previous one of the
///   same [`Delivery::generation`] (a new generation when tags start again, e.g. on a new
///   channel), and settle [`crate::Settlement::AckMultiple`] on a tag as an ack of that
///   delivery and every earlier unsettled one of its generation (the worker batches acks
///   that way);
/// - set [`Delivery::redelivered`] when the message was delivered before;
/// - give every unsettled delivery back to the queue when the subscription ends or is
///   dropped (at-least-once), marked redelivered.
///
/// Deliveries of a transport outside this crate are built with [`Delivery::new`] and
/// settled through its own [`crate::Acknowledge`].
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription was cancelled or its channel closed.
    /// `Some(Err(..))` is final too: consumers stop reading (recover inside `next` from what
    /// can be recovered, as [`crate::AmqpSubscription`] does after a lost connection).
    ///
    /// Must be cancel-safe: the worker polls it in a `select!`, and a dropped `next` future
    /// must not lose a delivery.
    fn next(&mut self) -> impl Future<Output = Option<Result<Delivery>>> + Send;

    /// Stops the flow of deliveries; deliveries already received can still be settled.
    /// Unsettled deliveries are redelivered by the broker when the subscription is dropped.
    fn cancel(&mut self) -> impl Future<Output = Result<()>> + Send;
}
