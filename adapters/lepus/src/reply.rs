//! The reply path of RPC as a transport capability: a channel that publishes requests and
//! yields the replies sent to its own address.
//!
//! [`ReplyTransport::reply_channel`] opens one, in a [`ReplyMode`]:
//! - [`ReplyMode::DirectReplyTo`] (default): RabbitMQ's
//!   [direct reply-to](https://www.rabbitmq.com/docs/direct-reply-to). The pseudo queue
//!   [`DIRECT_REPLY_TO`] is consumed without acknowledgements **on the same channel** that
//!   publishes the requests (RabbitMQ requires it); the broker rewrites `reply_to` to a name
//!   that routes straight back to that channel. No queue is declared. Delivery is
//!   at-most-once: a reply to a requester that is gone is dropped (or returned unroutable).
//!   The in-process broker offers the same: replies published to the requester's
//!   `amq.rabbitmq.reply-to.<token>` name go straight to its channel.
//! - [`ReplyMode::ExclusiveQueue`]: a server-named, exclusive, auto-delete queue consumed
//!   without acknowledgements, deleted with the channel.
//!
//! The requester half ([`RequestSender`]) is shared by callers; the reply half
//! ([`ReplyReceiver`]) is read by one task. When the receiver yields `None` (channel or
//! connection lost, broker gone) no further reply can arrive on that channel:
//! [`crate::RpcClient`] then opens a new one.

use core::future::Future;

use crate::error::Result;
use crate::properties::Properties;
use crate::received::Received;
use crate::transport::{Publication, Transport};

/// RabbitMQ's direct reply-to pseudo queue.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Where replies come back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ReplyMode {
    /// Direct reply-to (no queue, at-most-once). The default.
    #[default]
    DirectReplyTo,
    /// An exclusive, auto-delete, server-named queue.
    ExclusiveQueue,
}

/// A reply as received: body and properties (already settled: reply consumers do not ack).
/// Built with [`ReplyMessage::new`] (fields may be added).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplyMessage {
    /// The body bytes.
    pub body: Vec<u8>,
    /// Properties and headers, as they arrived (see [`ReplyMessage::properties`]).
    properties: Received,
}

impl ReplyMessage {
    /// A reply of `body` with `properties`, for a [`ReplyReceiver`] implemented outside this
    /// crate.
    pub fn new(body: Vec<u8>, properties: Properties) -> Self {
        ReplyMessage::received(body, Received::Whole(properties))
    }

    /// A reply of a built-in transport.
    pub(crate) fn received(body: Vec<u8>, properties: Received) -> Self {
        ReplyMessage { body, properties }
    }

    /// Properties and headers. A reply from RabbitMQ keeps them as they arrived and makes
    /// these on the first call; [`ReplyMessage::correlation_id`] and
    /// [`ReplyMessage::header_str`] read them in place.
    pub fn properties(&self) -> &Properties {
        self.properties.whole()
    }

    /// The correlation id property (which names the request), if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.properties.correlation_id()
    }

    /// The header `key`, if it is there and a string (as [`crate::Delivery::header_str`]).
    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.properties.header_str(key)
    }

    /// Whether the header `key` is there, whatever its type.
    pub(crate) fn has_header(&self, key: &str) -> bool {
        self.properties.has_header(key)
    }
}

/// Publishes requests whose replies come back to the paired [`ReplyReceiver`].
pub trait RequestSender: Send + Sync + 'static {
    /// The address to put in a request's `reply_to` property.
    fn reply_to(&self) -> &str;

    /// Publishes one request and waits for the broker's confirmation (as
    /// [`Transport::publish`]), on the channel the replies arrive on.
    fn publish(&self, publication: Publication<'_>) -> impl Future<Output = Result<()>> + Send;
}

/// The replies sent to a [`RequestSender`]'s address.
pub trait ReplyReceiver: Send + 'static {
    /// The next reply; `None` once the reply consumer is gone (channel or connection closed):
    /// no further reply will arrive.
    fn next(&mut self) -> impl Future<Output = Option<ReplyMessage>> + Send;
}

/// A transport that can carry RPC replies back to a requester.
///
/// An implementation must:
/// - start consuming before [`ReplyTransport::reply_channel`] returns, so that no reply to a
///   request published through the sender is missed;
/// - route a reply published (through [`Transport::publish`], on the default exchange `""`)
///   with the routing key [`RequestSender::reply_to`] to that sender's receiver, whether or
///   not it is mandatory: servers send replies to direct reply-to addresses
///   ([`DIRECT_REPLY_TO`]`.*`) [not mandatory](Publication::not_mandatory), and to other
///   addresses mandatory, where [`crate::ErrorKind::Unroutable`] tells them the requester is
///   gone;
/// - publish requests as [`Transport::publish`] does (confirmed, mandatory: a request no
///   server queue receives is [`crate::ErrorKind::Unroutable`], which the client reports at
///   once instead of waiting for its timeout);
/// - end the receiver (`None`) once no further reply can arrive; [`crate::RpcClient`] then
///   opens a new reply channel. Replies are not acknowledged; a reply may be lost with its
///   channel (at-most-once).
pub trait ReplyTransport: Transport {
    /// The requester half.
    type Sender: RequestSender;
    /// The reply half.
    type Receiver: ReplyReceiver;

    /// Opens a reply channel in `mode`: consuming starts before this returns, so replies to
    /// requests published through the sender cannot be missed.
    fn reply_channel(
        &self,
        mode: ReplyMode,
    ) -> impl Future<Output = Result<(Self::Sender, Self::Receiver)>> + Send;
}
