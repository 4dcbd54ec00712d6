//! Looking into RabbitMQ queues without taking messages away from their consumers: queue
//! status (passive declare), browsing with `basic.get`, purging, and tapping an exchange
//! through a temporary queue. Used by the `lepus` command line.
//!
//! These are RabbitMQ operations, not [`crate::Transport`] ones: the in-process broker has no
//! operator tooling to serve.

use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::Channel;

use crate::amqp::properties::short_name;
use crate::amqp::subscription::AmqpSubscription;
use crate::amqp::transport::AmqpTransport;
use crate::delivery::{Acknowledger, Delivery};
use crate::error::{Error, ErrorKind, NameKind, NameProblem, Result};
use crate::names::{check_binding_pattern, check_queue_name, check_target_exchange};
use crate::received::Received;

/// AMQP reply code of a missing queue or exchange.
const NOT_FOUND: u16 = 404;

/// What a passive declare tells about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStatus {
    /// Messages ready for delivery (not counting unacknowledged ones).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// A channel that pulls messages one by one with `basic.get` (manual acknowledgement).
///
/// A message taken and not settled stays with this browser; when the browser is closed or
/// dropped, RabbitMQ puts every unsettled message back in its place in the queue. Browsing
/// a queue without settling anything therefore leaves it as it was.
#[derive(Debug)]
pub struct QueueBrowser {
    channel: std::sync::Arc<Channel>,
}

impl QueueBrowser {
    /// Takes the next message of `queue`, with how many messages remain ready after it;
    /// `None` when none is ready.
    ///
    /// # Errors
    /// [`ErrorKind::BrokerRefused`] with 404 when the queue does not exist (the browser's
    /// channel is then closed), connection and channel errors.
    pub async fn get(&self, queue: &str) -> Result<Option<(Delivery, u32)>> {
        check_queue_name(queue)?;
        let got = self
            .channel
            .basic_get(
                short_name(NameKind::Queue, queue)?,
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("basic.get from {queue:?}")))?;
        Ok(got.map(|m| {
            let d = m.delivery;
            let delivery = Delivery::received(
                d.data,
                Received::amqp(d.properties),
                d.redelivered,
                d.delivery_tag,
                d.exchange.into(),
                d.routing_key.into(),
                Acknowledger::Amqp(d.acker),
            );
            (delivery, m.message_count)
        }))
    }

    /// Closes the channel: every message taken and not settled goes back to its queue.
    ///
    /// # Errors
    /// Connection errors while closing.
    pub async fn close(self) -> Result<()> {
        if !self.channel.status().connected() {
            return Ok(());
        }
        self.channel
            .close(200, "done".into())
            .await
            .map_err(|e| Error::from_lapin(e).context("close browsing channel"))
    }
}

impl AmqpTransport {
    /// Ready messages and consumers of `queue` (a passive declare); `None` when it does not
    /// exist.
    ///
    /// # Errors
    /// Invalid name, connection errors, other broker refusals.
    pub async fn queue_status(&self, queue: &str) -> Result<Option<QueueStatus>> {
        check_queue_name(queue)?;
        let channel = self.open_channel("inspect a queue").await?;
        let declared = channel
            .queue_declare(
                short_name(NameKind::Queue, queue)?,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => {
                close_quietly(&channel).await;
                Ok(Some(QueueStatus {
                    messages: q.message_count(),
                    consumers: q.consumer_count(),
                }))
            }
            Err(e) => {
                let e = Error::from_lapin(e).context(format!("inspect queue {queue:?}"));
                if is_not_found(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Removes every ready message of `queue`; returns how many were removed.
    ///
    /// # Errors
    /// [`ErrorKind::BrokerRefused`] with 404 when the queue does not exist, connection errors.
    pub async fn purge_queue(&self, queue: &str) -> Result<u32> {
        check_queue_name(queue)?;
        let channel = self.open_channel("purge a queue").await?;
        let purged = channel
            .queue_purge(
                short_name(NameKind::Queue, queue)?,
                QueuePurgeOptions::default(),
            )
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("purge queue {queue:?}")))?;
        close_quietly(&channel).await;
        Ok(purged)
    }

    /// Opens a [`QueueBrowser`] on a channel of its own.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn browse(&self) -> Result<QueueBrowser> {
        Ok(QueueBrowser {
            channel: self.open_channel("browse a queue").await?,
        })
    }

    /// Taps `exchange`: declares a temporary queue (exclusive to this connection, deleted
    /// with it), binds it with each of `patterns` and consumes it. Copies of the routed
    /// messages flow to the tap; nobody else's queue loses a message. The broker's own
    /// `amq.*` exchanges may be tapped (RabbitMQ's firehose, `amq.rabbitmq.trace`, observes
    /// without adding a route to the exchange watched); the default exchange `""` cannot be
    /// bound.
    ///
    /// Mind that binding is routing: while a tap on a user exchange runs, messages whose key
    /// it matches are routed, also those no other queue takes (a mandatory send that would be
    /// `Unroutable` is not).
    ///
    /// # Errors
    /// Invalid names or patterns; 404 when the exchange does not exist; connection errors.
    pub async fn tap(&self, exchange: &str, patterns: &[String]) -> Result<AmqpSubscription> {
        if exchange.is_empty() {
            return Err(Error::invalid_name(NameKind::Exchange, NameProblem::Empty));
        }
        check_target_exchange(exchange)?;
        for pattern in patterns {
            check_binding_pattern(pattern)?;
        }
        let name = format!("lepus.tap.{}", crate::protocol::new_message_id());
        let channel = self.open_channel("tap an exchange").await?;
        channel
            .queue_declare(
                short_name(NameKind::Queue, &name)?,
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("declare tap queue {name:?}")))?;
        for pattern in patterns {
            crate::amqp::topology::bind(&channel, &name, exchange, pattern).await?;
        }
        // The queue is exclusive to this connection; the tap consumes it on a channel of its
        // own. After a lost connection the queue is gone, and the tap ends with that error.
        AmqpSubscription::start(std::sync::Arc::clone(self.supervisor()), &name, 256).await
    }

    async fn open_channel(&self, what: &str) -> Result<std::sync::Arc<Channel>> {
        self.supervisor().current().open_channel(what).await
    }
}

/// True when the broker answered 404 `NOT_FOUND` (missing queue or exchange).
pub fn is_not_found(error: &Error) -> bool {
    error.kind()
        == ErrorKind::BrokerRefused {
            reply_code: NOT_FOUND,
        }
}

async fn close_quietly(channel: &Channel) {
    if channel.status().connected() {
        if let Err(e) = channel.close(200, "done".into()).await {
            tracing::debug!(error = %e, "closing an inspection channel failed");
        }
    }
}
