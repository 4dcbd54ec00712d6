//! [`AmqpTransport`]: the [`Transport`] operations on a RabbitMQ connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lapin::Channel;

use crate::amqp::config::AmqpConfig;
use crate::amqp::subscription::AmqpSubscription;
use crate::amqp::supervisor::Supervisor;
use crate::amqp::topology;
use crate::delay::{self, Delay};
use crate::error::{Error, ErrorKind, Result};
use crate::properties::Properties;
use crate::protocol::new_message_id;
use crate::topology::{dead_letter_queue_name, kind_mismatch, QueueKind, QueueSpec};
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
    /// Whether this transport declared the classic and the quorum delay levels.
    levels_declared: [AtomicBool; 2],
}

impl AmqpTransport {
    /// Connects to `AMQP_ADDR` with default settings.
    ///
    /// # Errors
    /// `AMQP_ADDR` unset ([`AmqpConfig::from_env`]); connection errors.
    pub async fn from_env() -> Result<Self> {
        AmqpTransport::connect(AmqpConfig::from_env()?).await
    }

    /// Connects with `config` and opens the publishing channel. An unreachable broker is
    /// retried with backoff up to [`AmqpConfig::startup_timeout`] (by default not at all: an
    /// error at once); once connected, a lost connection is recovered (see above).
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        Ok(AmqpTransport {
            sup: Supervisor::open(config).await?,
            levels_declared: [AtomicBool::new(false), AtomicBool::new(false)],
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

    /// The broker address (password hidden) the current connection is on: with several
    /// addresses in [`AmqpConfig::addr`], the node it moved to after the last loss.
    pub fn node(&self) -> String {
        self.sup.node_of(&self.sup.current())
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
        // The same message id on every attempt, so that a duplicate can be recognised (given
        // beside the properties: cloning them to set it cost a copy of every header).
        let id = match publication.properties.message_id {
            Some(_) => None,
            None => Some(new_message_id()),
        };
        // The deadline and the watch on the connection are the confirm tracker's, one per
        // channel (a timer and a watch per publish cost about 3,300 instructions together).
        let deadline = self.deadline();
        loop {
            let session = self.sup.session(Some(deadline)).await?;
            match session
                .publisher
                .send(publication, id.as_deref(), Some(deadline))
                .await
            {
                Err(e) if e.kind() == ErrorKind::Timeout => {
                    return Err(self.send_timed_out());
                }
                Err(e) if !session.is_open() || e.is_connection_error() => {
                    tracing::warn!(error = %e, "publish interrupted by a lost connection; sending again");
                }
                outcome => return outcome,
            }
        }
    }

    fn send_timed_out(&self) -> Error {
        Error::new(ErrorKind::Timeout).context(format!(
            "no confirmation within {:?} (the broker may block publishing: alarm)",
            self.sup.config.send_timeout
        ))
    }

    fn levels_flag(&self, kind: QueueKind) -> &AtomicBool {
        match kind {
            QueueKind::Classic => &self.levels_declared[0],
            QueueKind::Quorum => &self.levels_declared[1],
        }
    }

    /// After a part of the delay levels was deleted through this transport, the next delayed
    /// publish declares them again.
    fn forget_levels(&self, name: &str) {
        if name.starts_with(delay::PREFIX) {
            for flag in &self.levels_declared {
                flag.store(false, Ordering::Release);
            }
        }
    }

    /// Declares the delay levels of `kind` (idempotent on the broker; once per transport).
    async fn declare_levels(&self, kind: QueueKind) -> Result<()> {
        self.on_own_channel("declare the delay levels", async |ch| {
            topology::declare_delay_levels(ch, kind).await
        })
        .await?;
        self.levels_flag(kind).store(true, Ordering::Release);
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
        let levels = !self.levels_flag(spec.kind).load(Ordering::Acquire);
        let declared = self
            .on_own_channel("declare a queue", async |ch| {
                topology::declare_queue(ch, spec, levels).await
            })
            .await;
        if let Err(e) = declared {
            // Refused for other arguments: if the queue is there as the other kind (exactly as
            // Lepus declares that kind), say so and how to migrate.
            if e.kind() == (ErrorKind::BrokerRefused { reply_code: 406 }) {
                let other = spec.clone().kind(match spec.kind {
                    QueueKind::Classic => QueueKind::Quorum,
                    QueueKind::Quorum => QueueKind::Classic,
                });
                let probe = self
                    .on_own_channel("probe a queue's kind", async |ch| {
                        topology::redeclare_queue(ch, &other).await
                    })
                    .await;
                if probe.is_ok() {
                    return Err(kind_mismatch(&spec.name, spec.kind));
                }
            }
            return Err(e);
        }
        self.levels_flag(spec.kind).store(true, Ordering::Release);
        self.sup.remember_queue(spec);
        Ok(())
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        // Boxed: the send's future is large (a lapin publish, the confirm, the session
        // watch, the timeout), and a caller that spawns a task per publish moves it whole
        // several times (measured: 3 to 4 thousand instructions a publish, against one
        // allocation).
        Box::pin(self.send(publication)).await
    }

    async fn publish_batch(&self, batch: &[Publication<'_>]) -> Result<Vec<Result<()>>> {
        let deadline = self.deadline();
        let session = self.sup.session(Some(deadline)).await?;
        let mut outcomes = session
            .publisher
            .publish_batch(batch, Some(deadline))
            .await?;
        // What a lost connection interrupted is sent again, one by one, after reconnecting.
        for (outcome, publication) in outcomes.iter_mut().zip(batch) {
            match outcome {
                Err(e) if e.kind() == ErrorKind::Timeout => *outcome = Err(self.send_timed_out()),
                Err(e) if !session.is_open() || e.is_connection_error() => {
                    *outcome = self.send(*publication).await;
                }
                _ => {}
            }
        }
        Ok(outcomes)
    }

    async fn publish_delayed(&self, publication: Publication<'_>, delay: Delay) -> Result<()> {
        if delay.as_ms() == 0 {
            return self.send(publication).await;
        }
        let key = delay::key(&publication)?;
        let properties = delay::with_levels(publication.properties, delay)?;
        let entry = delay::entry_exchange(delay);
        if !self.levels_flag(delay.levels()).load(Ordering::Acquire) {
            self.declare_levels(delay.levels()).await?;
        }
        let delayed = Publication {
            exchange: &entry,
            routing_key: key.as_str(),
            properties: &properties,
            ..publication
        };
        match self.send(delayed).await {
            // The levels vanished (deleted by hand): nothing was enqueued, so declaring them
            // again and resending is safe.
            Err(e)
                if e.is_unroutable()
                    || e.kind() == (ErrorKind::BrokerRefused { reply_code: 404 }) =>
            {
                tracing::info!(error = %e, "delay levels missing; declaring them again");
                self.declare_levels(delay.levels()).await?;
                self.send(delayed).await
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
        self.forget_levels(queue);
        self.sup.forget(queue);
        Ok(())
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        self.on_own_channel("delete an exchange", async |ch| {
            topology::delete_exchange(ch, exchange).await
        })
        .await?;
        self.forget_levels(exchange);
        self.sup.forget(exchange);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.sup.shut_down().await
    }

    fn is_connected(&self) -> bool {
        AmqpTransport::is_connected(self)
    }

    fn is_blocked(&self) -> bool {
        self.sup.is_blocked()
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
