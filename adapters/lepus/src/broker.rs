//! The runtime choice between transports: [`Broker`] is RabbitMQ or the in-process broker,
//! chosen by [`connect`] from `AMQP_ADDR`, and implements [`Transport`] either way.
//!
//! The in-process broker is chosen by name, never by absence: `AMQP_ADDR=memory:` (or
//! [`Broker::in_process`] in code). An unset or empty `AMQP_ADDR` is an error: in production a
//! missing variable would otherwise mean tasks published into the memory of one process and
//! lost with it.
//!
//! Without the `amqp` feature only the in-process broker is compiled in: code that does not
//! name RabbitMQ's types builds the same, and asking for RabbitMQ (`AMQP_ADDR` set) is an
//! [`crate::ErrorKind::FeatureDisabled`] error at run time.
//!
//! ```no_run
//! # async fn demo() -> lepus::Result<()> {
//! use lepus::Transport;
//! // AMQP_ADDR=amqp://host:5672/%2f for RabbitMQ, AMQP_ADDR=memory: for the in-process broker.
//! let broker = lepus::connect().await?;
//! broker.declare_exchange("shop").await?;
//! // ... publish, run workers ...
//! // Before the runtime ends (see `AmqpTransport::close`).
//! broker.close().await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "amqp")]
use crate::amqp::{AmqpConfig, AmqpSubscription, AmqpTransport};
use crate::delay::Delay;
use crate::delivery::Delivery;
use crate::error::Result;
#[cfg(not(feature = "amqp"))]
use crate::error::{Error, ErrorKind};
use crate::inprocess::{InProcessBroker, InProcessSubscription};
use crate::properties::Properties;
use crate::reply::{ReplyReceiver, ReplyTransport, RequestSender};
use crate::topology::QueueSpec;
use crate::transport::{Publication, Subscription, Transport};

/// A transport chosen at run time: the same program runs on either. More transports may
/// come, hence `#[non_exhaustive]`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Broker {
    /// The in-process broker.
    InProcess(InProcessBroker),
    /// RabbitMQ (boxed: it is much larger than a broker handle). With the `amqp` feature.
    #[cfg(feature = "amqp")]
    Amqp(Box<AmqpTransport>),
}

/// The address that chooses the in-process broker (`AMQP_ADDR=memory:`).
pub const IN_PROCESS_ADDR: &str = "memory:";

/// Connects to the broker named by `AMQP_ADDR`: RabbitMQ at an `amqp://` or `amqps://`
/// address, the in-process broker for [`IN_PROCESS_ADDR`] (`memory:`). An `amqps://` address
/// (the `rustls` feature) trusts the CA of `AMQP_TLS_CA` and presents the client certificate
/// of `AMQP_TLS_CERT` and `AMQP_TLS_KEY`, when they are set ([`AmqpConfig::tls_from_env`]).
///
/// # Errors
/// [`crate::ErrorKind::InvalidConfig`] when `AMQP_ADDR` is unset or empty (the message names
/// both ways to choose); the errors of [`connect_to`].
pub async fn connect() -> Result<Broker> {
    connect_within(std::time::Duration::ZERO).await
}

/// As [`connect`], retrying the first connection to RabbitMQ with backoff for up to
/// `startup_timeout` while it fails in a way that may pass (the broker is starting, or not
/// deployed yet): see [`AmqpConfig::startup_timeout`]. A missing `AMQP_ADDR` is an error at
/// once.
///
/// # Errors
/// As [`connect`]; the last connection error once `startup_timeout` passed.
pub async fn connect_within(startup_timeout: std::time::Duration) -> Result<Broker> {
    let addr = std::env::var("AMQP_ADDR").ok();
    connect_to_within(addr.as_deref(), startup_timeout).await
}

/// Connects to RabbitMQ at `addr`, or starts an in-process broker for [`IN_PROCESS_ADDR`].
/// The TLS settings come from the environment, as for [`connect`].
///
/// # Errors
/// [`crate::ErrorKind::InvalidConfig`] for `None` or an empty address, or for unusable TLS
/// settings; without the `amqp` feature a RabbitMQ address is
/// [`crate::ErrorKind::FeatureDisabled`] (without `rustls`, an `amqps://` one); connection
/// errors.
pub async fn connect_to(addr: Option<&str>) -> Result<Broker> {
    connect_to_within(addr, std::time::Duration::ZERO).await
}

/// As [`connect_to`], retrying the first connection for up to `startup_timeout` (see
/// [`connect_within`]).
///
/// # Errors
/// As [`connect_to`].
#[cfg_attr(not(feature = "amqp"), allow(unused_variables))]
pub async fn connect_to_within(
    addr: Option<&str>,
    startup_timeout: std::time::Duration,
) -> Result<Broker> {
    let addr = addr.map(str::trim).filter(|a| !a.is_empty());
    match addr {
        None => {
            let error = crate::error::Error::new(crate::error::ErrorKind::InvalidConfig {
                setting: "AMQP_ADDR",
            });
            Err(error.context(format!(
                "no broker chosen: set AMQP_ADDR=amqp://host:5672/%2f for RabbitMQ, or \
                 AMQP_ADDR={IN_PROCESS_ADDR} (in code: Broker::in_process()) for the \
                 in-process broker, whose messages live only as long as this process"
            )))
        }
        Some(IN_PROCESS_ADDR) => Ok(Broker::in_process()),
        #[cfg(feature = "amqp")]
        Some(addr) => {
            let config = AmqpConfig::new(addr)
                .startup_timeout(startup_timeout)
                .tls_from_env()?;
            Broker::amqp(config).await
        }
        #[cfg(not(feature = "amqp"))]
        Some(_) => {
            let error = Error::new(ErrorKind::FeatureDisabled { feature: "amqp" });
            Err(error.context(format!(
                "a RabbitMQ address was given (AMQP_ADDR), but RabbitMQ support is not built \
                 in: enable lepus's `amqp` feature, or set AMQP_ADDR={IN_PROCESS_ADDR} for the \
                 in-process broker"
            )))
        }
    }
}

impl Broker {
    /// A new in-process broker.
    pub fn in_process() -> Self {
        Broker::InProcess(InProcessBroker::new())
    }

    /// Connects to RabbitMQ with `config`.
    #[cfg(feature = "amqp")]
    pub async fn amqp(config: AmqpConfig) -> Result<Self> {
        Ok(Broker::Amqp(Box::new(
            AmqpTransport::connect(config).await?,
        )))
    }

    /// The in-process broker, if that is the choice (for its inspection helpers).
    pub fn as_in_process(&self) -> Option<&InProcessBroker> {
        match self {
            Broker::InProcess(b) => Some(b),
            #[cfg(feature = "amqp")]
            Broker::Amqp(_) => None,
        }
    }

    /// The RabbitMQ transport, if that is the choice.
    #[cfg(feature = "amqp")]
    pub fn as_amqp(&self) -> Option<&AmqpTransport> {
        match self {
            Broker::InProcess(_) => None,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => Some(t),
        }
    }

    /// Closes the RabbitMQ connection for good ([`AmqpTransport::close`]); nothing to do
    /// in-process. Call it when done, before the program's runtime ends.
    pub async fn close(&self) -> Result<()> {
        match self {
            Broker::InProcess(_) => Ok(()),
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.close().await,
        }
    }

    /// `"in-process"` or `"rabbitmq"`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Broker::InProcess(_) => "in-process",
            #[cfg(feature = "amqp")]
            Broker::Amqp(_) => "rabbitmq",
        }
    }
}

impl From<InProcessBroker> for Broker {
    fn from(b: InProcessBroker) -> Self {
        Broker::InProcess(b)
    }
}

#[cfg(feature = "amqp")]
impl From<AmqpTransport> for Broker {
    fn from(t: AmqpTransport) -> Self {
        Broker::Amqp(Box::new(t))
    }
}

/// The subscription of a [`Broker`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerSubscription {
    /// From the in-process broker.
    InProcess(InProcessSubscription),
    /// From RabbitMQ (boxed: it is much larger).
    #[cfg(feature = "amqp")]
    Amqp(Box<AmqpSubscription>),
}

impl Subscription for BrokerSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        match self {
            BrokerSubscription::InProcess(s) => s.next().await,
            #[cfg(feature = "amqp")]
            BrokerSubscription::Amqp(s) => s.next().await,
        }
    }

    async fn cancel(&mut self) -> Result<()> {
        match self {
            BrokerSubscription::InProcess(s) => s.cancel().await,
            #[cfg(feature = "amqp")]
            BrokerSubscription::Amqp(s) => s.cancel().await,
        }
    }
}

impl Transport for Broker {
    type Subscription = BrokerSubscription;

    async fn declare_exchange(&self, exchange: &str) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.declare_exchange(exchange).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.declare_exchange(exchange).await,
        }
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.declare_queue(spec).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.declare_queue(spec).await,
        }
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.publish(publication).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.publish(publication).await,
        }
    }

    async fn publish_batch(&self, batch: &[Publication<'_>]) -> Result<Vec<Result<()>>> {
        match self {
            Broker::InProcess(b) => b.publish_batch(batch).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.publish_batch(batch).await,
        }
    }

    async fn publish_delayed(&self, publication: Publication<'_>, delay: Delay) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.publish_delayed(publication, delay).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.publish_delayed(publication, delay).await,
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
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.publish_dead_letter(queue, body, properties).await,
        }
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<BrokerSubscription> {
        match self {
            Broker::InProcess(b) => b
                .consume(queue, prefetch)
                .await
                .map(BrokerSubscription::InProcess),
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t
                .consume(queue, prefetch)
                .await
                .map(|s| BrokerSubscription::Amqp(Box::new(s))),
        }
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.delete_queue(queue).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.delete_queue(queue).await,
        }
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        match self {
            Broker::InProcess(b) => b.delete_exchange(exchange).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.delete_exchange(exchange).await,
        }
    }

    async fn close(&self) -> Result<()> {
        Broker::close(self).await
    }

    fn is_connected(&self) -> bool {
        match self {
            Broker::InProcess(b) => b.is_connected(),
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => t.is_connected(),
        }
    }

    fn is_blocked(&self) -> bool {
        match self {
            Broker::InProcess(b) => b.is_blocked(),
            #[cfg(feature = "amqp")]
            Broker::Amqp(t) => Transport::is_blocked(t.as_ref()),
        }
    }
}

/// The RPC requester half of a [`Broker`]'s reply channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerRequestSender {
    /// On the in-process broker.
    InProcess(crate::inprocess::InProcessRequestSender),
    /// On RabbitMQ (boxed: it is much larger).
    #[cfg(feature = "amqp")]
    Amqp(Box<crate::amqp::AmqpRequestSender>),
}

/// The RPC reply half of a [`Broker`]'s reply channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerReplyReceiver {
    /// On the in-process broker.
    InProcess(crate::inprocess::InProcessReplyReceiver),
    /// On RabbitMQ (boxed: it is much larger).
    #[cfg(feature = "amqp")]
    Amqp(Box<crate::amqp::AmqpReplyReceiver>),
}

impl RequestSender for BrokerRequestSender {
    fn reply_to(&self) -> &str {
        match self {
            BrokerRequestSender::InProcess(s) => s.reply_to(),
            #[cfg(feature = "amqp")]
            BrokerRequestSender::Amqp(s) => s.reply_to(),
        }
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        match self {
            BrokerRequestSender::InProcess(s) => s.publish(publication).await,
            #[cfg(feature = "amqp")]
            BrokerRequestSender::Amqp(s) => s.publish(publication).await,
        }
    }
}

impl ReplyReceiver for BrokerReplyReceiver {
    async fn next(&mut self) -> Option<crate::reply::ReplyMessage> {
        match self {
            BrokerReplyReceiver::InProcess(r) => r.next().await,
            #[cfg(feature = "amqp")]
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
            #[cfg(feature = "amqp")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing address chooses nothing: it is an error naming both ways to choose.
    #[tokio::test]
    async fn no_address_is_an_error_naming_both_choices() {
        for addr in [None, Some(""), Some("  ")] {
            let err = connect_to(addr).await.expect_err("no broker by absence");
            assert_eq!(
                err.kind(),
                crate::error::ErrorKind::InvalidConfig {
                    setting: "AMQP_ADDR"
                }
            );
            let text = err.to_string();
            assert!(text.contains("amqp://"), "{text}");
            assert!(text.contains("memory:"), "{text}");
            assert!(text.contains("Broker::in_process()"), "{text}");
        }
    }

    #[tokio::test]
    async fn memory_is_the_in_process_broker() {
        for addr in ["memory:", " memory: "] {
            let broker = connect_to(Some(addr)).await.unwrap();
            assert_eq!(broker.name(), "in-process");
            assert!(broker.as_in_process().is_some());
        }
    }

    /// Without the `amqp` feature, asking for RabbitMQ is an error that says what to do.
    #[cfg(not(feature = "amqp"))]
    #[tokio::test]
    async fn an_address_without_amqp_is_feature_disabled() {
        let err = connect_to(Some("amqp://guest:guest@127.0.0.1:5672/%2f"))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::FeatureDisabled { feature: "amqp" });
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("`amqp` feature"), "{text}");
        assert!(text.contains("AMQP_ADDR"), "{text}");
        assert!(
            !text.contains("guest"),
            "no credentials in the message: {text}"
        );
    }
}
