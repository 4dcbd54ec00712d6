//! A message received from a queue, and its acknowledgement.

use crate::error::{Error, ErrorKind, Result};
use crate::properties::Properties;

/// Longest wait for an acknowledgement frame to be sent on RabbitMQ.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A message delivered to a consumer. Settle it exactly once with [`Delivery::ack`],
/// [`Delivery::nack`] or [`Delivery::reject`]; an unsettled delivery is redelivered when its
/// subscription closes (at-least-once).
#[derive(Debug)]
pub struct Delivery {
    /// The body bytes, as published.
    pub body: Vec<u8>,
    /// Properties and headers.
    pub properties: Properties,
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
#[derive(Debug)]
pub(crate) enum Acknowledger {
    /// RabbitMQ, through lapin.
    Amqp(lapin::Acker),
    /// The in-process broker.
    InProcess(crate::inprocess::Acker),
}

impl Delivery {
    pub(crate) fn new(
        body: Vec<u8>,
        properties: Properties,
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

    /// Marks the delivery as coming from the `generation`-th channel of its subscription.
    pub(crate) fn with_generation(mut self, generation: u64) -> Self {
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

    /// The message id property, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id.as_deref()
    }

    /// Acknowledges this delivery: the broker forgets the message.
    ///
    /// [`ErrorKind::AckLost`] when the ack had no effect (channel closed or recovered,
    /// delivery already settled): the broker will deliver the message again.
    pub async fn ack(&self) -> Result<()> {
        self.settle(Settle::Ack { multiple: false }).await
    }

    /// Acknowledges this delivery **and every earlier unsettled delivery** of the same
    /// subscription, in one frame. Use it only when all those earlier deliveries are done.
    pub async fn ack_multiple(&self) -> Result<()> {
        self.settle(Settle::Ack { multiple: true }).await
    }

    /// Negatively acknowledges: with `requeue` the message goes back to its queue, without it
    /// the queue dead-letters it (to `<queue>.dead` for queues declared by this crate).
    pub async fn nack(&self, requeue: bool) -> Result<()> {
        self.settle(Settle::Nack { requeue }).await
    }

    /// Rejects: like [`Delivery::nack`] of a single message.
    pub async fn reject(&self, requeue: bool) -> Result<()> {
        self.settle(Settle::Reject { requeue }).await
    }

    async fn settle(&self, how: Settle) -> Result<()> {
        let settled = match &self.acker {
            Acknowledger::Amqp(acker) => {
                use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
                let frame = async {
                    match how {
                        Settle::Ack { multiple } => acker.ack(BasicAckOptions { multiple }).await,
                        Settle::Nack { requeue } => {
                            let options = BasicNackOptions {
                                multiple: false,
                                requeue,
                            };
                            acker.nack(options).await
                        }
                        Settle::Reject { requeue } => {
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
            Acknowledger::InProcess(acker) => acker.settle(how),
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

/// How a delivery is settled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle {
    Ack { multiple: bool },
    Nack { requeue: bool },
    Reject { requeue: bool },
}
