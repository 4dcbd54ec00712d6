//! Publishing to RabbitMQ with publisher confirms.
//!
//! One channel in confirm mode carries every publish. A publish sends its frames, then awaits
//! the broker's confirmation of that message alone, so many publishes in flight (from
//! concurrent tasks, or [`ConfirmPublisher::publish_batch`]) share the round trips: confirmations
//! pipeline. Every message is mandatory and persistent. When the broker closes the channel
//! (for example after a publish to a missing exchange), the next publish opens a new one.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::amqp::channels::OpenChannels;
use crate::amqp::confirms::{ConfirmTracker, Settlement, TrackedId};
use crate::amqp::properties::{short_name, to_amqp};
use crate::error::{Error, ErrorKind, NameKind, Result};
use crate::names::{check_payload, check_routing_key, check_target_exchange};
use crate::protocol::{new_message_id, now_seconds};
use crate::transport::Publication;

/// Publishes with confirms on one channel of a connection (crate-private: it is built on
/// lapin's connection; [`crate::AmqpTransport`] is the public way to publish).
#[derive(Debug)]
pub(crate) struct ConfirmPublisher {
    connection: Arc<Connection>,
    channels: Arc<OpenChannels>,
    channel: Mutex<Arc<ConfirmChannel>>,
    reopen: tokio::sync::Mutex<()>,
    /// Turns true once the connection is lost (the session's).
    lost: watch::Receiver<bool>,
    max_payload: usize,
    /// Bound to one channel that must not be replaced (a direct reply-to channel): when it
    /// closes, publishes fail instead of reopening.
    fixed: bool,
}

/// A channel in confirm mode and the task that settles its confirmations.
#[derive(Debug)]
struct ConfirmChannel {
    channel: Arc<Channel>,
    confirms: ConfirmTracker,
}

impl ConfirmChannel {
    async fn open(
        connection: &Connection,
        channels: &OpenChannels,
        lost: watch::Receiver<bool>,
    ) -> Result<Self> {
        let channel = confirm_channel(connection, channels).await?;
        let confirms = ConfirmTracker::start(Channel::clone(&channel), lost);
        Ok(ConfirmChannel { channel, confirms })
    }

    /// Sends one prepared publication; the settlement yields its outcome (by `deadline` at
    /// the latest). Not an `async fn`: each layer of futures would move lapin's publish
    /// (properties and all) once more.
    fn send<'a>(
        &'a self,
        frames: Frames,
        message_id: TrackedId,
        body: &'a [u8],
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Settlement<'a>>> + 'a {
        let publish = self.channel.basic_publish(
            frames.exchange,
            frames.routing_key,
            BasicPublishOptions {
                mandatory: frames.mandatory,
                immediate: false,
            },
            body,
            frames.properties,
        );
        self.confirms.publish(message_id, deadline, publish)
    }
}

/// A publication checked and converted, ready to send.
struct Prepared {
    frames: Frames,
    /// The message id made for it, when neither its properties nor the caller gave one.
    made: Option<String>,
}

/// The message id a publication is sent with: its properties', else the one `given` by the
/// caller, else the one `made` for it.
fn sent_id<'a>(p: &Publication<'a>, given: Option<&'a str>, made: Option<&'a str>) -> &'a str {
    p.properties
        .message_id
        .as_deref()
        .or(given)
        .or(made)
        .unwrap_or_default()
}

/// What lapin's `basic_publish` takes, moved into it (not cloned: the names and the
/// properties are allocations of their own).
struct Frames {
    exchange: ShortString,
    routing_key: ShortString,
    properties: BasicProperties,
    mandatory: bool,
}

impl ConfirmPublisher {
    /// Opens a confirm-mode channel on `connection`, kept in `channels` (those of a
    /// session). Bodies over `max_payload` bytes are refused before sending.
    pub(crate) async fn open_in(
        connection: Arc<Connection>,
        channels: Arc<OpenChannels>,
        lost: watch::Receiver<bool>,
        max_payload: usize,
    ) -> Result<Self> {
        let channel = ConfirmChannel::open(&connection, &channels, lost.clone()).await?;
        Ok(ConfirmPublisher {
            connection,
            channels,
            channel: Mutex::new(Arc::new(channel)),
            reopen: tokio::sync::Mutex::new(()),
            lost,
            max_payload,
            fixed: false,
        })
    }

    /// A publisher on `channel` (put in confirm mode here) that never reopens it: once it is
    /// closed, publishes are [`ErrorKind::ChannelClosed`]. For the RPC reply channel, whose
    /// consumer lives on the same channel.
    pub(crate) async fn on_channel(
        connection: Arc<Connection>,
        channels: Arc<OpenChannels>,
        channel: Arc<Channel>,
        lost: watch::Receiver<bool>,
        max_payload: usize,
    ) -> Result<Self> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| Error::from_lapin(e).context("enable publisher confirms"))?;
        let confirms = ConfirmTracker::start(Channel::clone(&channel), lost.clone());
        Ok(ConfirmPublisher {
            connection,
            channels,
            channel: Mutex::new(Arc::new(ConfirmChannel { channel, confirms })),
            reopen: tokio::sync::Mutex::new(()),
            lost,
            max_payload,
            fixed: true,
        })
    }

    /// Publishes one [`Publication`] and waits for its confirmation, until `deadline` at the
    /// latest ([`ErrorKind::Timeout`]) or the loss of the connection
    /// ([`ErrorKind::ConnectionLost`]). `message_id` is the id sent when the properties have
    /// none (a new one when it is `None` too).
    pub async fn send(
        &self,
        publication: Publication<'_>,
        message_id: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let Prepared { frames, made } = self.prepare(&publication, message_id)?;
        let id = sent_id(&publication, message_id, made.as_deref());
        let span = tracing::debug_span!(
            "publish",
            message_id = id,
            exchange = publication.exchange,
            routing_key = publication.routing_key,
        );
        // Wrapped only when the span is recorded: the wrapper moves the whole publish into
        // it. Each branch builds its own future, so that they share their place in this one.
        if span.is_disabled() {
            self.send_prepared(&publication, frames, id, deadline).await
        } else {
            self.send_prepared(&publication, frames, id, deadline)
                .instrument(span)
                .await
        }
    }

    /// [`Self::send`] of a prepared publication sent with the message id `id`.
    async fn send_prepared(
        &self,
        publication: &Publication<'_>,
        frames: Frames,
        id: &str,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let channel = match self.channel(deadline).await {
            Ok(channel) => channel,
            Err(e) => return Err(e.context(describe(publication, id))),
        };
        let tracked = TrackedId::new(id);
        let outcome = match channel
            .send(frames, tracked, publication.body, deadline)
            .await
        {
            Ok(settlement) => settlement.await,
            Err(e) => Err(e),
        };
        outcome.map_err(|e| e.context(describe(publication, id)))
    }

    /// Validates every publication (an invalid one fails the call before anything is sent),
    /// sends them all, then awaits all confirmations. Per-message outcomes, in order; each
    /// ends by `deadline` at the latest, as in [`Self::send`].
    pub async fn publish_batch(
        &self,
        batch: &[Publication<'_>],
        deadline: Option<Instant>,
    ) -> Result<Vec<Result<()>>> {
        let prepared = batch
            .iter()
            .map(|p| self.prepare(p, None))
            .collect::<Result<Vec<_>>>()?;
        let channel = self.channel(deadline).await?;
        // Every publish starts (lapin numbers it and queues its frames) before any write is
        // awaited, so the batch goes out in one stream instead of one I/O round per message.
        let mut made = Vec::with_capacity(prepared.len());
        let mut all_frames = Vec::with_capacity(prepared.len());
        for Prepared { frames, made: id } in prepared {
            made.push(id);
            all_frames.push(frames);
        }
        let ids: Vec<&str> = batch
            .iter()
            .zip(&made)
            .map(|(p, made)| sent_id(p, None, made.as_deref()))
            .collect();
        let mut sends: Vec<_> = batch
            .iter()
            .zip(all_frames)
            .zip(&ids)
            .map(|((publication, frames), id)| {
                Box::pin(channel.send(frames, TrackedId::new(id), publication.body, deadline))
            })
            .collect();
        let mut started = Vec::with_capacity(sends.len());
        for send in &mut sends {
            started.push(std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await);
        }
        // Then every confirmation is handed in (the writes finish in order) before any outcome
        // is awaited: a publish is settled only once those started before it handed in.
        let mut pending = Vec::with_capacity(sends.len());
        for (send, first) in sends.into_iter().zip(started) {
            pending.push(match first {
                Poll::Ready(sent) => sent,
                Poll::Pending => send.await,
            });
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for ((sent, publication), id) in pending.into_iter().zip(batch).zip(&ids) {
            let outcome = match sent {
                Ok(settlement) => settlement.await,
                Err(e) => Err(e),
            };
            outcomes.push(outcome.map_err(|e| e.context(describe(publication, id))));
        }
        Ok(outcomes)
    }

    fn prepare(&self, p: &Publication<'_>, message_id: Option<&str>) -> Result<Prepared> {
        check_target_exchange(p.exchange)?;
        check_routing_key(p.routing_key)?;
        check_payload(p.body.len(), p.body_limit(self.max_payload))?;
        p.properties.validate()?;
        let made = match (&p.properties.message_id, message_id) {
            (None, None) => Some(new_message_id()),
            _ => None,
        };
        let timestamp = p.properties.timestamp.unwrap_or_else(now_seconds);
        let id = sent_id(p, message_id, made.as_deref());
        let frames = Frames {
            exchange: short_name(NameKind::Exchange, p.exchange)?,
            routing_key: short_name(NameKind::RoutingKey, p.routing_key)?,
            properties: to_amqp(p.properties, id, timestamp)?,
            mandatory: p.mandatory,
        };
        Ok(Prepared { frames, made })
    }

    fn current(&self) -> Arc<ConfirmChannel> {
        match self.channel.lock() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The publishing channel, reopened if the broker closed it (by `deadline` at the latest,
    /// and not on a lost connection).
    async fn channel(&self, deadline: Option<Instant>) -> Result<Arc<ConfirmChannel>> {
        let current = self.current();
        if current.channel.status().connected() {
            return Ok(current);
        }
        // Boxed: reopening is rare and its future large; every publish's future (moved
        // whole when a caller spawns it) would carry it.
        Box::pin(self.reopen_within(deadline)).await
    }

    /// [`Self::reopen`], ended by `deadline` or the loss of the connection: lapin may leave
    /// opening a channel pending on a connection that is gone.
    async fn reopen_within(&self, deadline: Option<Instant>) -> Result<Arc<ConfirmChannel>> {
        let mut lost = self.lost.clone();
        let reopen = async {
            tokio::select! {
                reopened = self.reopen() => reopened,
                _ = lost.wait_for(|lost| *lost) => Err(Error::new(ErrorKind::ConnectionLost)
                    .context("connection lost while reopening the publishing channel")),
            }
        };
        match deadline {
            None => reopen.await,
            Some(deadline) => tokio::time::timeout_at(deadline, reopen)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(ErrorKind::Timeout)
                        .context("no publishing channel by the send deadline"))
                }),
        }
    }

    async fn reopen(&self) -> Result<Arc<ConfirmChannel>> {
        if self.fixed {
            return Err(Error::new(ErrorKind::ChannelClosed).context("the reply channel is closed"));
        }
        let _reopening = self.reopen.lock().await;
        let current = self.current();
        if current.channel.status().connected() {
            return Ok(current);
        }
        tracing::info!("publishing channel closed; opening a new one");
        let fresh = Arc::new(
            ConfirmChannel::open(&self.connection, &self.channels, self.lost.clone()).await?,
        );
        match self.channel.lock() {
            Ok(mut guard) => *guard = Arc::clone(&fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&fresh),
        }
        Ok(fresh)
    }
}

async fn confirm_channel(connection: &Connection, channels: &OpenChannels) -> Result<Arc<Channel>> {
    let channel = channels.open(connection, "publish").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| Error::from_lapin(e).context("enable publisher confirms"))?;
    Ok(channel)
}

fn describe(p: &Publication<'_>, message_id: &str) -> String {
    format!(
        "publish of message {message_id} to exchange {:?} with routing key {:?}",
        p.exchange, p.routing_key
    )
}
