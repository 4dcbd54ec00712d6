//! A message received from a queue, and its acknowledgement.
//!
//! The built-in transports settle their deliveries themselves; a transport implemented
//! outside this crate builds its deliveries with [`Delivery::new`] and settles them through
//! its own [`Acknowledge`].

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::properties::Properties;
use crate::received::Received;

/// Longest wait for an acknowledgement to be sent (RabbitMQ, or a custom [`Acknowledge`]).
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a delivery is settled: AMQP's `basic.ack`, `basic.nack` and `basic.reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Settlement {
    /// Acknowledge this delivery: the broker forgets the message.
    Ack,
    /// Acknowledge this delivery and every earlier unsettled delivery of the same subscription
    /// and [generation](Delivery::generation) (`basic.ack` with `multiple`).
    AckMultiple,
    /// Negative acknowledgement of this delivery: back to its queue with `requeue`, otherwise
    /// dead-lettered by the queue (or dropped when it has no dead-letter target).
    Nack {
        /// Put the message back in its queue.
        requeue: bool,
    },
    /// Rejection of this delivery: as [`Settlement::Nack`] of a single message.
    Reject {
        /// Put the message back in its queue.
        requeue: bool,
    },
}

/// The future an [`Acknowledge`] returns.
pub type SettleFuture<'a> = Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>;

/// Settles the deliveries of a transport implemented outside this crate (see
/// [`Delivery::new`]); the built-in transports settle their own.
///
/// An implementation must:
/// - apply `settlement` to the delivery with `delivery_tag` (and, for
///   [`Settlement::AckMultiple`], to every earlier unsettled delivery of the same subscription
///   and generation, and to no other);
/// - answer `Ok(true)` when the broker took the settlement, `Ok(false)` when it had no effect
///   (already settled, channel closed or recovered: the broker will deliver the message
///   again), and `Err` for anything else (the error reaches the caller of
///   [`Delivery::ack`] and the others);
/// - end in bounded time: a settlement still pending after 5 s counts as `Ok(false)`.
///
/// ```
/// use lepus::{Acknowledge, Delivery, Settlement, SettleFuture};
/// use std::sync::{Arc, Mutex};
///
/// /// Remembers settlements instead of sending them.
/// #[derive(Default)]
/// struct Recorder(Mutex<Vec<(u64, Settlement)>>);
///
/// impl Acknowledge for Recorder {
///     fn settle(&self, delivery_tag: u64, settlement: Settlement) -> SettleFuture<'_> {
///         self.0.lock().unwrap().push((delivery_tag, settlement));
///         Box::pin(async { Ok(true) })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> lepus::Result<()> {
/// let recorder = Arc::new(Recorder::default());
/// let delivery = Delivery::new(b"{}".to_vec(), 1, recorder.clone()).with_routing_key("jobs.a");
/// delivery.ack().await?;
/// assert_eq!(*recorder.0.lock().unwrap(), [(1, Settlement::Ack)]);
/// # Ok(()) }
/// ```
pub trait Acknowledge: Send + Sync + 'static {
    /// Sends `settlement` for the delivery `delivery_tag`; see the trait's contract.
    fn settle(&self, delivery_tag: u64, settlement: Settlement) -> SettleFuture<'_>;
}

/// A message delivered to a consumer. Settle it exactly once with [`Delivery::ack`],
/// [`Delivery::nack`] or [`Delivery::reject`]; an unsettled delivery is redelivered when its
/// subscription closes (at-least-once).
#[derive(Debug)]
pub struct Delivery {
    /// The body bytes, as published.
    pub body: Vec<u8>,
    /// Properties and headers, as they arrived (see [`Delivery::properties`]).
    properties: Received,
    /// True when the broker delivered this message before (to this or another consumer).
    pub redelivered: bool,
    /// The delivery tag, increasing per subscription.
    pub delivery_tag: u64,
    /// The exchange the message was published to (`""` for the default exchange).
    pub exchange: String,
    /// The routing key the message was published with.
    pub routing_key: String,
    acker: Acknowledger,
    generation: u64,
}

/// Settles a delivery on the transport it came from.
pub(crate) enum Acknowledger {
    /// RabbitMQ, through lapin.
    #[cfg(feature = "amqp")]
    Amqp(lapin::Acker),
    /// The in-process broker.
    InProcess(crate::inprocess::Acker),
    /// A transport implemented outside this crate.
    Custom(Arc<dyn Acknowledge>),
}

impl fmt::Debug for Acknowledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "amqp")]
            Acknowledger::Amqp(acker) => f.debug_tuple("Amqp").field(acker).finish(),
            Acknowledger::InProcess(acker) => f.debug_tuple("InProcess").field(acker).finish(),
            Acknowledger::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Delivery {
    /// A delivery of a transport implemented outside this crate, settled through
    /// `acknowledger` (one per delivery, or one per subscription: it is told the tag). The
    /// exchange and routing key start empty, the properties default, `redelivered` false
    /// and the generation 0; set them with the `with_*` methods.
    ///
    /// `delivery_tag` must increase with each delivery of a subscription (the worker batches
    /// acks with [`Settlement::AckMultiple`] through the newest of a run of done deliveries).
    pub fn new(body: Vec<u8>, delivery_tag: u64, acknowledger: Arc<dyn Acknowledge>) -> Self {
        Delivery::received(
            body,
            Received::Whole(Properties::default()),
            false,
            delivery_tag,
            String::new(),
            String::new(),
            Acknowledger::Custom(acknowledger),
        )
    }

    /// A delivery of a built-in transport.
    pub(crate) fn received(
        body: Vec<u8>,
        properties: Received,
        redelivered: bool,
        delivery_tag: u64,
        exchange: String,
        routing_key: String,
        acker: Acknowledger,
    ) -> Self {
        Delivery {
            body,
            properties,
            redelivered,
            delivery_tag,
            exchange,
            routing_key,
            acker,
            generation: 0,
        }
    }

    /// The same delivery with `properties`.
    #[must_use]
    pub fn with_properties(mut self, properties: Properties) -> Self {
        self.properties = Received::Whole(properties);
        self
    }

    /// The same delivery, marked as delivered before (or not).
    #[must_use]
    pub fn with_redelivered(mut self, redelivered: bool) -> Self {
        self.redelivered = redelivered;
        self
    }

    /// The same delivery, published to `exchange`.
    #[must_use]
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The same delivery, published with `routing_key`.
    #[must_use]
    pub fn with_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = routing_key.into();
        self
    }

    /// The same delivery, from the `generation`-th channel of its subscription (see
    /// [`Delivery::generation`]).
    #[must_use]
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Which channel of its subscription delivered it: a subscription that recovers from a
    /// lost connection consumes on a new channel, whose delivery tags start again at 1 and on
    /// which the deliveries of earlier channels can no longer be settled (the broker
    /// redelivers them). 0 for transports that never change channels.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Properties and headers. A delivery from RabbitMQ keeps them as they arrived and makes
    /// these on the first call; the accessors below ([`Delivery::message_id`] and the others)
    /// read them in place, without that conversion.
    pub fn properties(&self) -> &Properties {
        self.properties.whole()
    }

    /// The message id property, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id()
    }

    /// The `type` property (the wire type name), if any.
    pub fn message_type(&self) -> Option<&str> {
        self.properties.message_type()
    }

    /// The content type property, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.properties.content_type()
    }

    /// The correlation id property, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.properties.correlation_id()
    }

    /// The `reply_to` property, if any.
    pub fn reply_to(&self) -> Option<&str> {
        self.properties.reply_to()
    }

    /// The header `key`, if it is there and a string ([`HeaderValue::Str`]; a byte string
    /// that is not UTF-8 is [`HeaderValue::Bytes`] and not one).
    ///
    /// [`HeaderValue::Str`]: crate::HeaderValue::Str
    /// [`HeaderValue::Bytes`]: crate::HeaderValue::Bytes
    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.properties.header_str(key)
    }

    /// The header `key`, if it is there and an integer (of any width on the wire).
    pub(crate) fn header_i64(&self, key: &str) -> Option<i64> {
        self.properties.header_i64(key)
    }

    /// The header `key`'s bytes, if it is a string or a byte array (what
    /// [`crate::TraceContext::from_headers`] reads a `traceparent` from).
    pub(crate) fn header_bytes(&self, key: &str) -> Option<&[u8]> {
        self.properties.header_bytes(key)
    }

    /// Its body and properties, the rest dropped.
    pub(crate) fn into_message(self) -> (Vec<u8>, Properties) {
        (self.body, self.properties.into_whole())
    }

    /// Changes the properties (RabbitMQ's are converted first).
    pub(crate) fn edit_properties(&mut self, edit: impl FnOnce(&mut Properties)) {
        let received = core::mem::replace(&mut self.properties, Received::Whole(Properties::new()));
        let mut whole = received.into_whole();
        edit(&mut whole);
        self.properties = Received::Whole(whole);
    }

    /// Acknowledges this delivery: the broker forgets the message.
    ///
    /// [`ErrorKind::AckLost`] when the ack had no effect (channel closed or recovered,
    /// delivery already settled): the broker will deliver the message again.
    pub async fn ack(&self) -> Result<()> {
        self.settle(Settlement::Ack).await
    }

    /// Acknowledges this delivery **and every earlier unsettled delivery** of the same
    /// subscription, in one frame. Use it only when all those earlier deliveries are done.
    pub async fn ack_multiple(&self) -> Result<()> {
        self.settle(Settlement::AckMultiple).await
    }

    /// Negatively acknowledges: with `requeue` the message goes back to its queue, without it
    /// the queue dead-letters it (to `<queue>.dead` for queues declared by this crate).
    pub async fn nack(&self, requeue: bool) -> Result<()> {
        self.settle(Settlement::Nack { requeue }).await
    }

    /// Rejects: like [`Delivery::nack`] of a single message.
    pub async fn reject(&self, requeue: bool) -> Result<()> {
        self.settle(Settlement::Reject { requeue }).await
    }

    /// Settles this delivery as `settlement` says ([`Delivery::ack`] and the others are
    /// shorthands). [`ErrorKind::AckLost`] when it had no effect.
    pub async fn settle(&self, settlement: Settlement) -> Result<()> {
        let settled = match &self.acker {
            #[cfg(feature = "amqp")]
            Acknowledger::Amqp(acker) => {
                use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
                let frame = async {
                    match settlement {
                        Settlement::Ack => acker.ack(BasicAckOptions { multiple: false }).await,
                        Settlement::AckMultiple => {
                            acker.ack(BasicAckOptions { multiple: true }).await
                        }
                        Settlement::Nack { requeue } => {
                            let options = BasicNackOptions {
                                multiple: false,
                                requeue,
                            };
                            acker.nack(options).await
                        }
                        Settlement::Reject { requeue } => {
                            acker.reject(BasicRejectOptions { requeue }).await
                        }
                    }
                };
                // On a connection that died without lapin noticing, the frame may never be
                // sent: give up after a while; the broker redelivers what was not settled.
                match tokio::time::timeout(SETTLE_TIMEOUT, frame).await {
                    Ok(outcome) => outcome.map_err(Error::from_lapin)?,
                    Err(_) => false,
                }
            }
            Acknowledger::InProcess(acker) => acker.settle(settlement),
            Acknowledger::Custom(acker) => {
                let sent = acker.settle(self.delivery_tag, settlement);
                tokio::time::timeout(SETTLE_TIMEOUT, sent)
                    .await
                    .unwrap_or(Ok(false))?
            }
        };
        if settled {
            Ok(())
        } else {
            tracing::warn!(
                delivery_tag = self.delivery_tag,
                message_id = self.message_id().unwrap_or(""),
                "acknowledgement lost; the broker will redeliver"
            );
            Err(Error::new(ErrorKind::AckLost))
        }
    }
}
