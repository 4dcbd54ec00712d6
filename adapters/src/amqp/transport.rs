//! [`AmqpTransport`]: the [`Transport`] operations on a RabbitMQ connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::{Channel, Connection};

use crate::amqp::config::AmqpConfig;
use crate::amqp::connection::connect;
use crate::amqp::publisher::Publisher;
use crate::amqp::subscription::AmqpSubscription;
use crate::amqp::topology;
use crate::error::{Error, Result};
use crate::properties::Properties;
use crate::topology::{dead_letter_queue_name, wait_queue_lease_ms, wait_queue_name, QueueSpec};
use crate::transport::{Publication, Transport};

/// A RabbitMQ connection with a confirm-mode publisher. Declarations run on short-lived
/// channels of their own, each subscription on its own channel.
#[derive(Debug)]
pub struct AmqpTransport {
    connection: Arc<Connection>,
    publisher: Publisher,
    config: AmqpConfig,
    /// When each wait queue was last declared by us (see [`crate::topology`]).
    wait_leases: Mutex<HashMap<String, Instant>>,
}

impl AmqpTransport {
    /// Connects to `AMQP_ADDR` (or [`crate::DEFAULT_ADDR`]) with default settings.
    pub async fn from_env() -> Result<Self> {
        AmqpTransport::connect(AmqpConfig::from_env()).await
    }

    /// Connects with `config` and opens the publishing channel.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        let connection = Arc::new(connect(&config).await?);
        let publisher = Publisher::open(Arc::clone(&connection), config.max_payload).await?;
        Ok(AmqpTransport {
            connection,
            publisher,
            config,
            wait_leases: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// The publisher (for direct use, e.g. [`Publisher::publish`]).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The underlying lapin connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Closes the connection cleanly (code 200).
    pub async fn close(&self) -> Result<()> {
        self.connection
            .close(200, "bye".into())
            .await
            .map_err(|e| Error::from_lapin(e).context("close connection"))
    }

    async fn channel(&self, what: &str) -> Result<Channel> {
        self.connection
            .create_channel()
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("open channel to {what}")))
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

    fn lease_valid(&self, wait_queue: &str, delay_ms: u32) -> bool {
        if !self.config.expire_wait_queues {
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
        let expire = self.config.expire_wait_queues;
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
        .await
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        spec.validate()?;
        let expire = self.config.expire_wait_queues;
        let declared_at = Instant::now();
        self.on_own_channel("declare a queue", async |ch| {
            topology::declare_queue(ch, spec, expire).await
        })
        .await?;
        let mut leases = self.leases();
        for &delay in &spec.retry_delays_ms {
            leases.insert(wait_queue_name(&spec.name, delay)?, declared_at);
        }
        Ok(())
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        self.publisher.send(publication).await
    }

    async fn publish_batch(&self, batch: &[Publication<'_>]) -> Result<Vec<Result<()>>> {
        self.publisher.publish_batch(batch).await
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
        let publication = Publication::new("", &wait_queue, body, properties);
        match self.publisher.send(publication).await {
            // The wait queue vanished (deleted by hand, or expired under another lease
            // holder): nothing was enqueued, so declaring it again and resending is safe.
            Err(e) if e.is_unroutable() => {
                tracing::info!(wait_queue, "wait queue missing; declaring it again");
                self.renew_wait_queue(queue, delay_ms, &wait_queue).await?;
                self.publisher.send(publication).await
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
        self.publisher
            .send(Publication::new("", &dead, body, properties))
            .await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<AmqpSubscription> {
        let channel = self.channel("consume").await?;
        AmqpSubscription::start(channel, queue, prefetch).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.on_own_channel("delete a queue", async |ch| {
            topology::delete_queue(ch, queue).await
        })
        .await?;
        self.leases().remove(queue);
        Ok(())
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        self.on_own_channel("delete an exchange", async |ch| {
            topology::delete_exchange(ch, exchange).await
        })
        .await
    }
}

impl crate::reply::ReplyTransport for AmqpTransport {
    type Sender = crate::amqp::reply::AmqpRequestSender;
    type Receiver = crate::amqp::reply::AmqpReplyReceiver;

    async fn reply_channel(
        &self,
        mode: crate::reply::ReplyMode,
    ) -> Result<(Self::Sender, Self::Receiver)> {
        crate::amqp::reply::open(&self.connection, mode, self.config.max_payload).await
    }
}
