//! The RPC reply path on RabbitMQ: direct reply-to, or an exclusive auto-delete queue.

use core::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

use crate::amqp::publisher::ConfirmPublisher;
use crate::amqp::supervisor::Session;
use crate::error::{Error, Result};
use crate::received::Received;
use crate::reply::{ReplyMessage, ReplyMode, ReplyReceiver, RequestSender, DIRECT_REPLY_TO};
use crate::transport::Publication;

/// Publishes RPC requests on the channel that consumes their replies. Bound to one
/// connection: once it is lost, publishes fail with [`crate::ErrorKind::ConnectionLost`] (or
/// [`crate::ErrorKind::ChannelClosed`] when only the channel closed) and a new reply channel is
/// needed.
#[derive(Debug)]
pub struct AmqpRequestSender {
    publisher: ConfirmPublisher,
    reply_to: String,
}

/// Replies consumed (no acks) on a [`AmqpRequestSender`]'s channel. Ends (`None`) when the
/// channel or its connection is lost.
#[derive(Debug)]
pub struct AmqpReplyReceiver {
    consumer: Consumer,
    session: Arc<Session>,
    _channel: Arc<Channel>,
}

/// Opens a channel on `session`, starts the no-ack reply consumer on it, then puts it in
/// confirm mode for the requests.
pub(crate) async fn open(
    session: Arc<Session>,
    mode: ReplyMode,
    max_payload: usize,
) -> Result<(AmqpRequestSender, AmqpReplyReceiver)> {
    let connection: &Arc<Connection> = &session.connection;
    let channel = session.open_channel("receive RPC replies").await?;
    let queue = match mode {
        ReplyMode::DirectReplyTo => DIRECT_REPLY_TO.into(),
        ReplyMode::ExclusiveQueue => {
            let q = channel
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| Error::from_lapin(e).context("declare the RPC reply queue"))?;
            q.name().clone()
        }
    };
    let reply_to = queue.to_string();
    let consumer = channel
        .basic_consume(
            queue,
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::from_lapin(e).context(format!("consume replies from {reply_to:?}")))?;
    let publisher = ConfirmPublisher::on_channel(
        Arc::clone(connection),
        Arc::clone(&session.channels),
        Arc::clone(&channel),
        session.lost(),
        max_payload,
    )
    .await?;
    tracing::debug!(reply_to, "RPC reply channel open");
    Ok((
        AmqpRequestSender {
            publisher,
            reply_to,
        },
        AmqpReplyReceiver {
            consumer,
            session,
            _channel: channel,
        },
    ))
}

impl RequestSender for AmqpRequestSender {
    fn reply_to(&self) -> &str {
        &self.reply_to
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        // No deadline: the caller's call timeout bounds it. A connection lost meanwhile ends
        // it (the confirm tracker watches the session).
        self.publisher.send(publication, None, None).await
    }
}

impl ReplyReceiver for AmqpReplyReceiver {
    async fn next(&mut self) -> Option<ReplyMessage> {
        let consumer = &mut self.consumer;
        let next = core::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx));
        let item = tokio::select! {
            item = next => item?,
            // lapin may leave the stream pending when the connection is gone.
            () = self.session.closed() => {
                if self.session.connection.status().errored() {
                    tracing::warn!("connection lost; RPC reply consumer ended");
                } else {
                    tracing::debug!("connection closed; RPC reply consumer ended");
                }
                return None;
            }
        };
        match item {
            Ok(d) => Some(ReplyMessage::received(d.data, Received::amqp(d.properties))),
            Err(e) => {
                tracing::warn!(error = %e, "RPC reply consumer ended");
                None
            }
        }
    }
}
