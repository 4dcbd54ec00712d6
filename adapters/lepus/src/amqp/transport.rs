//! [`AmqpTransport`]: the [`Transport`] operations on a RabbitMQ connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::Channel;

use crate::amqp::config::AmqpConfig;
use crate::amqp::subscription::AmqpSubscription;
use crate::amqp::supervisor::Supervisor;
use crate::amqp::topology;
use crate::error::{Error, ErrorKind, Result};
use crate::properties::Properties;
use crate::protocol::new_message_id;
use crate::topology::{dead_letter_queue_name, wait_queue_lease_ms, wait_queue_name, QueueSpec};
use crate::transport::{Publication, Transport};

/// A RabbitMQ connection with a confirm-mode publisher, kept open by a supervisor: after the
/// connection is lost (broker restart, `rabbitmqctl close_all_connections`, network cut) the
/// next operation reconnects with backoff, declares the topology again, and carries on;
/// subscriptions consume again by themselves. Declarations run on short-lived channels of
/// their own, each subscription on its own channel.
///
/// Publishing is at-least-once across a reconnection: a publish whose confirmation was lost
/// with the connection is sent again (same message id, so consumers can drop duplicates),
/// until [`AmqpConfig::send_timeout`]; past it the publish is an error, never reported as sent.
#[derive(Debug)]
pub struct AmqpTransport {
    sup: Arc<Supervisor>,
    /// When each wait queue was last declared by us (see [`crate::topology`]).
    wait_leases: Mutex<HashMap<String, Instant>>,
}

impl AmqpTransport {
    /// Connects to `AMQP_ADDR` (or [`crate::DEFAULT_ADDR`]) with default settings.
    pub async fn from_env() -> Result<Self> {
        AmqpTransport::connect(AmqpConfig::from_env()).await
    }

    /// Connects with `config` and opens the publishing channel. An unreachable broker is an
    /// error at once (reconnecting is for connections that were up).
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        Ok(AmqpTransport {
            sup: Supervisor::open(config).await?,
            wait_leases: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn supervisor(&self) -> &Arc<Supervisor> {
        &self.sup
    }

    /// The configuration in use.
    pub fn config(&self) -> &AmqpConfig {
        &self.sup.config
    }

    /// True while the current connection to the broker is open: false once it is lost
    /// (until the next operation reconnects) and after [`AmqpTransport::close`].
    pub fn is_connected(&self) -> bool {
        self.sup.current().connection.status().connected()
    }

    /// True while the broker blocks publishing (memory or disk alarm): publishes wait.
    pub fn is_blocked(&self) -> bool {
        self.sup.is_blocked()
    }

    /// How many times the connection was rebuilt since [`AmqpTransport::connect`].
    pub fn reconnections(&self) -> u64 {
        self.sup.reconnections()
    }

    /// Closes the connection cleanly (code 200), for good: the transport does not connect
    /// again, and whatever still uses it (subscriptions, RPC clients, sends) gets
    /// [`ErrorKind::Closed`]. A reconnection under way is finished and closed first. Closing
    /// twice, or a connection already lost, is not an error.
    ///
    /// Close the transport before the tokio runtime ends: lapin runs each connection on a
    /// thread that panics if the runtime disappears while it is connecting.
    pub async fn close(&self) -> Result<()> {
        self.sup.shut_down().await
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.sup.config.send_timeout
    }

    async fn channel(&self, what: &str) -> Result<Arc<Channel>> {
        let session = self.sup.session(Some(self.deadline())).await?;
        session.open_channel(what).await
    }

    /// Runs a declaration on a fresh channel, closing it afterwards.
    async fn on_own_channel<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(&Channel) -> Result<T>,
    ) -> Result<T> {
        let channel = self.channel(what).await?;
        let out = f(&channel).await;
        if channel.status().connected() {
            // Best effort: the broker forgets the channel with the connection anyway.
            if let Err(e) = channel.close(200, "done".into()).await {
                tracing::debug!(error = %e, "closing a declaration channel failed");
            }
        }
        out
    }

    /// Publishes once per session until confirmed, refused, or past the send timeout; a
    /// publish interrupted by a lost connection is sent again after reconnecting.
    async fn send(&self, publication: Publication<'_>) -> Result<()> {
        // The same message id on every attempt, so that a duplicate can be recognised.
        let with_id;
        let publication = if publication.properties.message_id.is_none() {
            with_id = publication
                .properties
                .clone()
                .with_message_id(new_message_id());
            Publication {
                properties: &with_id,
                ..publication
            }
        } else {
            publication
        };
        let deadline = self.deadline();
        loop {
            let session = self.sup.session(Some(deadline)).await?;
            let attempt = async {
                tokio::select! {
                    outcome = session.publisher.send(publication) => Some(outcome),
                    () = session.closed() => None,
                }
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(None) => {
                    tracing::warn!("connection lost before the confirmation; sending again");
                }
                Err(_) => {
                    return Err(Error::new(ErrorKind::Timeout).context(format!(
                        "no confirmation within {:?} (the broker may block publishing: alarm)",
                        self.sup.config.send_timeout
                    )))
                }
                Ok(Some(Err(e))) if !session.is_open() || e.is_connection_error() => {
                    tracing::warn!(error = %e, "publish interrupted by a lost connection; sending again");
                }
                Ok(Some(outcome)) => return outcome,
            }
        }
    }

    fn lease_valid(&self, wait_queue: &str, delay_ms: u32) -> bool {
        if !self.sup.config.expire_wait_queues {
            return self.leases().contains_key(wait_queue);
        }
        let lease = Duration::from_millis(wait_queue_lease_ms(delay_ms));
        self.leases()
            .get(wait_queue)
            .is_some_and(|declared| declared.elapsed() < lease)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        match self.wait_leases.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    async fn renew_wait_queue(&self, queue: &str, delay_ms: u32, wait_queue: &str) -> Result<()> {
        let declared_at = Instant::now();
        let expire = self.sup.config.expire_wait_queues;
        self.on_own_channel("declare a wait queue", async |ch| {
            topology::declare_wait_queue(ch, queue, delay_ms, expire).await
        })
        .await?;
        self.leases().insert(wait_queue.to_owned(), declared_at);
        Ok(())
    }
}

impl Transport for AmqpTransport {
    type Subscription = AmqpSubscription;

    async fn declare_exchange(&self, exchange: &str) -> Result<()> {
        self.on_own_channel("declare an exchange", async |ch| {
            topology::declare_exchange(ch, exchange).await
        })
        .await?;
        self.sup.remember_exchange(exchange);
        Ok(())
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        spec.validate()?;
        let expire = self.sup.config.expire_wait_queues;
        let declared_at = Instant::now();
        self.on_own_channel("declare a queue", async |ch| {
            topology::declare_queue(ch, spec, expire).await
        })
        .await?;
        self.sup.remember_queue(spec);
        let mut leases = self.leases();
        for &delay in &spec.retry_delays_ms {
            leases.insert(wait_queue_name(&spec.name, delay)?, declared_at);
        }
        Ok(())
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        self.send(publication).await
    }

    async fn publish_batch(&self, batch: &[Publication<'_>]) -> Result<Vec<Result<()>>> {
        let session = self.sup.session(Some(self.deadline())).await?;
        let mut outcomes = session.publisher.publish_batch(batch).await?;
        // What a lost connection interrupted is sent again, one by one, after reconnecting.
        for (outcome, publication) in outcomes.iter_mut().zip(batch) {
            if matches!(outcome, Err(e) if !session.is_open() || e.is_connection_error()) {
                *outcome = self.send(*publication).await;
            }
        }
        Ok(outcomes)
    }

    async fn publish_delayed(
        &self,
        queue: &str,
        delay_ms: u32,
        body: &[u8],
        properties: &Properties,
    ) -> Result<()> {
        let wait_queue = wait_queue_name(queue, delay_ms)?;
        if !self.lease_valid(&wait_queue, delay_ms) {
            self.renew_wait_queue(queue, delay_ms, &wait_queue).await?;
        }
        let publication = Publication::new("", &wait_queue, body, properties).follow_up();
        match self.send(publication).await {
            // The wait queue vanished (deleted by hand, or expired under another lease
            // holder): nothing was enqueued, so declaring it again and resending is safe.
            Err(e) if e.is_unroutable() => {
                tracing::info!(wait_queue, "wait queue missing; declaring it again");
                self.renew_wait_queue(queue, delay_ms, &wait_queue).await?;
                self.send(publication).await
            }
            outcome => outcome,
        }
    }

    async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        properties: &Properties,
    ) -> Result<()> {
        let dead = dead_letter_queue_name(queue)?;
        // Kept for a person to inspect: on disk, whatever the original was.
        let properties = if properties.transient {
            &Properties {
                transient: false,
                ..properties.clone()
            }
        } else {
            properties
        };
        self.send(Publication::new("", &dead, body, properties).follow_up())
            .await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<AmqpSubscription> {
        AmqpSubscription::start(Arc::clone(&self.sup), queue, prefetch).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.on_own_channel("delete a queue", async |ch| {
            topology::delete_queue(ch, queue).await
        })
        .await?;
        self.leases().remove(queue);
        self.sup.forget(queue);
        Ok(())
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        self.on_own_channel("delete an exchange", async |ch| {
            topology::delete_exchange(ch, exchange).await
        })
        .await?;
        self.sup.forget(exchange);
        Ok(())
    }
}

impl crate::reply::ReplyTransport for AmqpTransport {
    type Sender = crate::amqp::reply::AmqpRequestSender;
    type Receiver = crate::amqp::reply::AmqpReplyReceiver;

    async fn reply_channel(
        &self,
        mode: crate::reply::ReplyMode,
    ) -> Result<(Self::Sender, Self::Receiver)> {
        // On an open connection: reconnects first if needed (up to the send timeout).
        let deadline = self.deadline();
        let session = self.sup.session(Some(deadline)).await?;
        let closed = Arc::clone(&session);
        let open = crate::amqp::reply::open(session, mode, self.config().max_payload);
        // lapin may leave opening a channel or consuming pending forever when the connection
        // dies meanwhile: then the caller (the client's reply task) must try again.
        tokio::select! {
            opened = tokio::time::timeout_at(deadline, open) => opened.unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::Timeout).context("open the RPC reply channel: no answer"))
            }),
            () = closed.closed() => Err(Error::new(ErrorKind::ConnectionLost)
                .context("connection lost while opening the RPC reply channel")),
        }
    }
}
