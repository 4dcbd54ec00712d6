//! The runtime choice between transports: [`Broker`] is RabbitMQ or the in-process broker,
//! chosen by [`connect`] from `AMQP_ADDR`, and implements [`Transport`] either way.
//!
//! ```no_run
//! # async fn demo() -> lepus::Result<()> {
//! use lepus::Transport;
//! // RabbitMQ when AMQP_ADDR is set, the in-process broker otherwise.
//! let broker = lepus::connect().await?;
//! broker.declare_exchange("shop").await?;
//! // ... publish, run workers ...
//! // Before the runtime ends (see `AmqpTransport::close`).
//! broker.close().await?;
//! # Ok(()) }
//! ```

use crate::amqp::{AmqpConfig, AmqpSubscription, AmqpTransport};
use crate::delivery::Delivery;
use crate::error::Result;
use crate::inprocess::{InProcessBroker, InProcessSubscription};
use crate::properties::Properties;
use crate::reply::{ReplyReceiver, ReplyTransport, RequestSender};
use crate::topology::QueueSpec;
use crate::transport::{Publication, Subscription, Transport};

/// A transport chosen at run time: the same program runs on either.
#[derive(Debug)]
pub enum Broker {
    /// The in-process broker.
    InProcess(InProcessBroker),
    /// RabbitMQ (boxed: it is much larger than a broker handle).
    Amqp(Box<AmqpTransport>),
}

/// Connects to RabbitMQ at `AMQP_ADDR` when it is set (and not empty), otherwise starts an
/// in-process broker.
pub async fn connect() -> Result<Broker> {
    let addr = std::env::var("AMQP_ADDR").ok();
    connect_to(addr.as_deref()).await
}

/// Connects to RabbitMQ at `addr`, or starts an in-process broker for `None` or `""`.
pub async fn connect_to(addr: Option<&str>) -> Result<Broker> {
    match addr {
        Some(addr) if !addr.trim().is_empty() => Broker::amqp(AmqpConfig::new(addr)).await,
        _ => Ok(Broker::in_process()),
    }
}

impl Broker {
    /// A new in-process broker.
    pub fn in_process() -> Self {
        Broker::InProcess(InProcessBroker::new())
    }

    /// Connects to RabbitMQ with `config`.
    pub async fn amqp(config: AmqpConfig) -> Result<Self> {
        Ok(Broker::Amqp(Box::new(
            AmqpTransport::connect(config).await?,
        )))
    }

    /// The in-process broker, if that is the choice (for its inspection helpers).
    pub fn as_in_process(&self) -> Option<&InProcessBroker> {
        match self {
            Broker::InProcess(b) => Some(b),
            Broker::Amqp(_) => None,
        }
    }

    /// The RabbitMQ transport, if that is the choice.
    pub fn as_amqp(&self) -> Option<&AmqpTransport> {
        match self {
            Broker::InProcess(_) => None,
            Broker::Amqp(t) => Some(t),
        }
    }

    /// Closes the RabbitMQ connection for good ([`AmqpTransport::close`]); nothing to do
    /// in-process. Call it when done, before the program's runtime ends.
    pub async fn close(&self) -> Result<()> {
        match self {
            Broker::InProcess(_) => Ok(()),
            Broker::Amqp(t) => t.close().await,
        }
    }

    /// `"in-process"` or `"rabbitmq"`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Broker::InProcess(_) => "in-process",
            Broker::Amqp(_) => "rabbitmq",
        }
    }
}

impl From<InProcessBroker> for Broker {
    fn from(b: InProcessBroker) -> Self {
        Broker::InProcess(b)
    }
}

impl From<AmqpTransport> for Broker {
    fn from(t: AmqpTransport) -> Self {
        Broker::Amqp(Box::new(t))
    }
}

/// The subscription of a [`Broker`].
#[derive(Debug)]
pub enum BrokerSubscription {
    /// From the in-process broker.
    InProcess(InProcessSubscription),
    /// From RabbitMQ (boxed: it is much larger).
    Amqp(Box<AmqpSubscription>),
}

impl Subscription for BrokerSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        match self {
            BrokerSubscription::InProcess(s) => s.next().await,
            BrokerSubscription::Amqp(s) => s.next().await,
        }
    }

    async fn cancel(&mut self) -> Result<()> {
        match self {
            BrokerSubscription::InProcess(s) => s.cancel().await,
            BrokerSubscription::Amqp(s) => s.cancel().await,
        }
    }
}

impl Transport for Broker {
    type Subscription = BrokerSubscription;

    async fn declare_exchange(&self, exchange: &str) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.declare_exchange(exchange).await,
            Broker::Amqp(t) => t.declare_exchange(exchange).await,
        }
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.declare_queue(spec).await,
            Broker::Amqp(t) => t.declare_queue(spec).await,
        }
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.publish(publication).await,
            Broker::Amqp(t) => t.publish(publication).await,
        }
    }

    async fn publish_batch(&self, batch: &[Publication<'_>]) -> Result<Vec<Result<()>>> {
        match self {
            Broker::InProcess(b) => b.publish_batch(batch).await,
            Broker::Amqp(t) => t.publish_batch(batch).await,
        }
    }

    async fn publish_delayed(
        &self,
        queue: &str,
        delay_ms: u32,
        body: &[u8],
        properties: &Properties,
    ) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.publish_delayed(queue, delay_ms, body, properties).await,
            Broker::Amqp(t) => t.publish_delayed(queue, delay_ms, body, properties).await,
        }
    }

    async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        properties: &Properties,
    ) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.publish_dead_letter(queue, body, properties).await,
            Broker::Amqp(t) => t.publish_dead_letter(queue, body, properties).await,
        }
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<BrokerSubscription> {
        match self {
            Broker::InProcess(b) => b
                .consume(queue, prefetch)
                .await
                .map(BrokerSubscription::InProcess),
            Broker::Amqp(t) => t
                .consume(queue, prefetch)
                .await
                .map(|s| BrokerSubscription::Amqp(Box::new(s))),
        }
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.delete_queue(queue).await,
            Broker::Amqp(t) => t.delete_queue(queue).await,
        }
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.delete_exchange(exchange).await,
            Broker::Amqp(t) => t.delete_exchange(exchange).await,
        }
    }
}

/// The RPC requester half of a [`Broker`]'s reply channel.
#[derive(Debug)]
pub enum BrokerRequestSender {
    /// On the in-process broker.
    InProcess(crate::inprocess::InProcessRequestSender),
    /// On RabbitMQ (boxed: it is much larger).
    Amqp(Box<crate::amqp::AmqpRequestSender>),
}

/// The RPC reply half of a [`Broker`]'s reply channel.
#[derive(Debug)]
pub enum BrokerReplyReceiver {
    /// On the in-process broker.
    InProcess(crate::inprocess::InProcessReplyReceiver),
    /// On RabbitMQ (boxed: it is much larger).
    Amqp(Box<crate::amqp::AmqpReplyReceiver>),
}

impl RequestSender for BrokerRequestSender {
    fn reply_to(&self) -> &str {
        match self {
            BrokerRequestSender::InProcess(s) => s.reply_to(),
            BrokerRequestSender::Amqp(s) => s.reply_to(),
        }
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        match self {
            BrokerRequestSender::InProcess(s) => s.publish(publication).await,
            BrokerRequestSender::Amqp(s) => s.publish(publication).await,
        }
    }
}

impl ReplyReceiver for BrokerReplyReceiver {
    async fn next(&mut self) -> Option<crate::reply::ReplyMessage> {
        match self {
            BrokerReplyReceiver::InProcess(r) => r.next().await,
            BrokerReplyReceiver::Amqp(r) => r.next().await,
        }
    }
}

impl ReplyTransport for Broker {
    type Sender = BrokerRequestSender;
    type Receiver = BrokerReplyReceiver;

    async fn reply_channel(
        &self,
        mode: crate::reply::ReplyMode,
    ) -> Result<(BrokerRequestSender, BrokerReplyReceiver)> {
        match self {
            Broker::InProcess(b) => {
                let (s, r) = b.reply_channel(mode).await?;
                Ok((
                    BrokerRequestSender::InProcess(s),
                    BrokerReplyReceiver::InProcess(r),
                ))
            }
            Broker::Amqp(t) => {
                let (s, r) = t.reply_channel(mode).await?;
                Ok((
                    BrokerRequestSender::Amqp(Box::new(s)),
                    BrokerReplyReceiver::Amqp(Box::new(r)),
                ))
            }
        }
    }
}
