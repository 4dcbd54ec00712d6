//! The raw lapin RPC baseline, written as one would without lepus: a server that consumes a
//! queue, publishes each body back to `reply_to` with the request's `correlation_id` and
//! acks; a client on direct reply-to (`amq.rabbitmq.reply-to` consumed without acks on the
//! publishing channel, before the first publish), no publisher confirms.
//!
//! Requests carry the same properties and body as lepus's (persistent, type, content type,
//! message id, timestamp; a JSON envelope of the same size), to the same exchange and the
//! same kind of queue, so the broker does the same work for both, and each side's client
//! can call the other side's server.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_core::Stream;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use lepus::DIRECT_REPLY_TO;
use tokio::task::JoinHandle;

use super::BoxError;

/// The next delivery of a raw consumer.
pub async fn next(consumer: &mut Consumer) -> Result<Delivery, BoxError> {
    let next = std::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx)).await;
    Ok(next.ok_or("consumer ended")??)
}

/// A raw lapin consumer of `queue` (manual acks) on a channel of its own with `prefetch`.
pub async fn consume(
    raw: &Connection,
    queue: &str,
    prefetch: u16,
) -> Result<(Channel, Consumer), BoxError> {
    let ch = raw.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, consumer))
}

/// Starts the echo server on `queue` (its own channel, prefetch `prefetch`); abort the
/// handle to stop it.
pub async fn start_server(
    raw: &Connection,
    queue: &str,
    prefetch: u16,
) -> Result<JoinHandle<Result<(), BoxError>>, BoxError> {
    let (ch, mut consumer) = consume(raw, queue, prefetch).await?;
    Ok(tokio::spawn(async move {
        loop {
            let d = next(&mut consumer).await?;
            let Some(reply_to) = d.properties.reply_to().clone() else {
                d.acker.ack(BasicAckOptions::default()).await?;
                continue;
            };
            let mut props = BasicProperties::default()
                .with_type("BenchEchoed".into())
                .with_content_type("application/json".into());
            if let Some(cid) = d.properties.correlation_id() {
                props = props.with_correlation_id(cid.clone());
            }
            ch.basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                &d.data,
                props,
            )
            .await?;
            d.acker.ack(BasicAckOptions::default()).await?;
        }
    }))
}

/// A direct reply-to client on a channel of its own.
pub struct RawClient {
    channel: Channel,
    replies: Consumer,
    exchange: ShortString,
    routing_key: ShortString,
    body: Vec<u8>,
    sent: u64,
    confirms: bool,
}

impl RawClient {
    /// Opens the channel and starts consuming direct reply-to on it. With `confirms`, the
    /// channel is put in confirm mode and each call waits for its request's confirmation
    /// before the reply (as lepus's client does).
    pub async fn open(
        raw: &Connection,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        confirms: bool,
    ) -> Result<Self, BoxError> {
        let channel = raw.create_channel().await?;
        let replies = channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        if confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        Ok(RawClient {
            channel,
            replies,
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body,
            sent: 0,
            confirms,
        })
    }

    /// Publishes one request (no confirm awaited); returns its correlation id.
    async fn send(&mut self) -> Result<ShortString, BoxError> {
        self.sent += 1;
        let cid: ShortString = format!("{:032x}", self.sent).into();
        let props = BasicProperties::default()
            .with_delivery_mode(1) // transient, as tutorial 6 and our client
            .with_type("BenchEcho".into())
            .with_content_type("application/json".into())
            .with_message_id(format!("raw-rpc-{}", self.sent).into())
            .with_timestamp(1_700_000_000)
            .with_correlation_id(cid.clone())
            .with_reply_to(DIRECT_REPLY_TO.into());
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.clone(),
                self.routing_key.clone(),
                BasicPublishOptions::default(),
                &self.body,
                props,
            )
            .await?;
        if self.confirms && !confirm.await?.is_ack() {
            return Err("raw request nacked".into());
        }
        Ok(cid)
    }

    /// One call: publish, then wait for the reply with the same correlation id.
    pub async fn call(&mut self) -> Result<(), BoxError> {
        let cid = self.send().await?;
        loop {
            let reply = next(&mut self.replies).await?;
            if reply.properties.correlation_id().as_ref() == Some(&cid) {
                return Ok(());
            }
        }
    }

    /// `n` calls with `window` in flight at once on this one channel; returns the time taken.
    pub async fn windowed(&mut self, n: usize, window: usize) -> Result<Duration, BoxError> {
        let started = Instant::now();
        let mut sent = 0;
        while sent < n.min(window) {
            self.send().await?;
            sent += 1;
        }
        for _ in 0..n {
            next(&mut self.replies).await?;
            if sent < n {
                self.send().await?;
                sent += 1;
            }
        }
        Ok(started.elapsed())
    }

    /// Closes the channel.
    pub async fn close(self) -> Result<(), BoxError> {
        self.channel.close(200, "ok".into()).await?;
        Ok(())
    }
}
