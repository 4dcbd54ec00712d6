//! The write model: [`Publisher`] sends typed [`Message`]s through any [`Transport`].
//!
//! Every send goes to a durable topic exchange with the message's routing key, persistent and
//! mandatory, with the AMQP properties filled in (`type` = [`Message::TYPE`], `content_type`
//! `application/json`, a unique `message_id`, `timestamp`, and `correlation_id`/`reply_to`
//! when given), and returns only once the broker confirmed it. Concurrent sends pipeline
//! their confirmations (the transport's job); [`Publisher::send_batch`] sends many at once.
//!
//! The body is core's JSON envelope ([`encode_json_raw`]) around the payload written by
//! `serde_json`.

use std::sync::Arc;

use crate::core::envelope::{encode_json_raw, EncodeError, Metadata, RawEnvelope, Text};
use crate::core::retry::RetryMetadata;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Message, RetryPolicy};
use crate::properties::{HeaderValue, Headers, Properties};
use crate::protocol::{new_message_id, now_seconds, CONTENT_TYPE_JSON};
use crate::transport::{Publication, Transport};

/// Per-send overrides for [`Publisher::send_with`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SendOptions {
    /// Routing key instead of [`Message::ROUTING_KEY`].
    pub routing_key: Option<String>,
    /// Retry policy instead of [`Message::retry_policy`].
    pub retry_policy: Option<RetryPolicy>,
    /// Correlation id (AMQP property and the envelope's `correlationId`).
    pub correlation_id: Option<String>,
    /// Reply queue (AMQP `reply_to` and the envelope's `response_queue`).
    pub reply_to: Option<String>,
    /// Message id instead of a fresh unique one.
    pub message_id: Option<String>,
    /// Extra headers.
    pub headers: Headers,
}

impl SendOptions {
    /// No overrides.
    pub fn new() -> Self {
        SendOptions::default()
    }

    /// Overrides the routing key.
    #[must_use]
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// Overrides the retry policy.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the reply queue.
    #[must_use]
    pub fn reply_to(mut self, queue: impl Into<String>) -> Self {
        self.reply_to = Some(queue.into());
        self
    }

    /// Sets the message id.
    #[must_use]
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

/// Sends typed messages to one topic exchange.
#[derive(Debug)]
pub struct Publisher<T> {
    transport: Arc<T>,
    exchange: String,
}

impl<T> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        Publisher {
            transport: Arc::clone(&self.transport),
            exchange: self.exchange.clone(),
        }
    }
}

/// An encoded message, ready to publish.
struct Encoded {
    routing_key: String,
    body: Vec<u8>,
    properties: Properties,
}

impl<T: Transport> Publisher<T> {
    /// A publisher to the topic exchange `exchange` (declare it with
    /// [`Publisher::declare`], or let a worker declare it).
    pub fn new(transport: Arc<T>, exchange: impl Into<String>) -> Self {
        Publisher {
            transport,
            exchange: exchange.into(),
        }
    }

    /// The exchange messages go to.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<T> {
        &self.transport
    }

    /// Declares the exchange (durable topic; idempotent).
    pub async fn declare(&self) -> Result<()> {
        self.transport.declare_exchange(&self.exchange).await
    }

    /// Sends `message` with its default routing key and retry policy; returns its message id
    /// once the broker confirmed it.
    ///
    /// # Errors
    /// [`ErrorKind::Encode`] if it does not serialize, the transport's errors otherwise
    /// (invalid names, oversized body, unroutable, nacked, connection lost).
    pub async fn send<M: Message>(&self, message: &M) -> Result<String> {
        self.send_with(message, &SendOptions::default()).await
    }

    /// Sends `message` with `options`; returns its message id once the broker confirmed it.
    ///
    /// # Errors
    /// As [`Publisher::send`].
    pub async fn send_with<M: Message>(
        &self,
        message: &M,
        options: &SendOptions,
    ) -> Result<String> {
        let encoded = encode(message, options)?;
        let publication = Publication::new(
            &self.exchange,
            &encoded.routing_key,
            &encoded.body,
            &encoded.properties,
        );
        self.transport.publish(publication).await?;
        Ok(message_id_of(encoded.properties))
    }

    /// Sends every message (default routing key and policy) with pipelined confirmations.
    /// Returns one outcome per message, in order: its message id, or why it failed.
    ///
    /// # Errors
    /// The whole call fails, and nothing is sent, when any message does not serialize or
    /// fails validation.
    pub async fn send_batch<M: Message>(&self, messages: &[M]) -> Result<Vec<Result<String>>> {
        let options = SendOptions::default();
        let encoded = messages
            .iter()
            .map(|m| encode(m, &options))
            .collect::<Result<Vec<_>>>()?;
        let publications: Vec<Publication<'_>> = encoded
            .iter()
            .map(|e| Publication::new(&self.exchange, &e.routing_key, &e.body, &e.properties))
            .collect();
        let outcomes = self.transport.publish_batch(&publications).await?;
        drop(publications);
        Ok(outcomes
            .into_iter()
            .zip(encoded)
            .map(|(outcome, e)| outcome.map(|()| message_id_of(e.properties)))
            .collect())
    }
}

fn message_id_of(properties: Properties) -> String {
    properties.message_id.unwrap_or_default()
}

fn encode<M: Message>(message: &M, options: &SendOptions) -> Result<Encoded> {
    let policy: RetryMetadata = match &options.retry_policy {
        Some(p) => p.metadata().clone(),
        None => M::retry_policy().into_metadata(),
    };
    let body = encode_envelope(
        message,
        policy,
        options.correlation_id.as_deref(),
        options.reply_to.as_deref(),
    )?;
    let mut properties = Properties::new()
        .with_type(M::TYPE)
        .with_content_type(CONTENT_TYPE_JSON)
        .with_message_id(options.message_id.clone().unwrap_or_else(new_message_id))
        .with_timestamp(now_seconds());
    properties.correlation_id = options.correlation_id.clone();
    properties.reply_to = options.reply_to.clone();
    properties.headers = options.headers.clone();
    Ok(Encoded {
        routing_key: options
            .routing_key
            .clone()
            .unwrap_or_else(|| M::ROUTING_KEY.to_owned()),
        body,
        properties,
    })
}

/// Serializes the payload with `serde_json` and wraps it in core's JSON envelope.
pub(crate) fn encode_envelope<M: Message>(
    message: &M,
    retry: RetryMetadata,
    correlation_id: Option<&str>,
    response_queue: Option<&str>,
) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(message).map_err(|e| {
        Error::new(ErrorKind::Encode).context(format!("serialize a {} payload: {e}", M::TYPE))
    })?;
    encode_raw_envelope(&payload, M::TYPE, retry, correlation_id, response_queue)
}

/// Wraps already serialized JSON `payload` (copied verbatim) in core's JSON envelope of
/// type `class_name`: what [`Publisher`] sends, for tools that hold the payload as JSON text.
///
/// # Errors
/// [`ErrorKind::Encode`] when core refuses the envelope (e.g. a payload that is not JSON).
pub fn encode_raw_envelope(
    payload: &[u8],
    class_name: &str,
    retry: RetryMetadata,
    correlation_id: Option<&str>,
    response_queue: Option<&str>,
) -> Result<Vec<u8>> {
    let envelope = RawEnvelope {
        payload,
        metadata: Metadata {
            class_name: Text::plain(class_name),
            retry,
            response_queue: response_queue.map(Text::plain),
            correlation_id: correlation_id.map(Text::plain),
        },
    };
    // Metadata strings may grow six-fold when escaped (`\u0001`); 16 intervals and a backoff
    // object stay well under 1 KiB.
    let strings =
        class_name.len() + correlation_id.map_or(0, str::len) + response_queue.map_or(0, str::len);
    let mut out = vec![0; payload.len() + 6 * strings + 1024];
    for _ in 0..4 {
        match encode_json_raw(&envelope, &mut out) {
            Ok(n) => {
                out.truncate(n);
                return Ok(out);
            }
            Err(EncodeError::BufferFull) => {
                let grown = out.len().saturating_mul(2);
                out.resize(grown, 0);
            }
            Err(e) => {
                return Err(Error::new(ErrorKind::Encode)
                    .context(format!("encode a {class_name} envelope: {e}")))
            }
        }
    }
    Err(Error::new(ErrorKind::Encode).context(format!("encode a {class_name} envelope")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_and_short() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        assert!(a.len() < 64, "{a}");
    }
    use crate::core::envelope::decode_json_raw;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SendAdExpiredMail {
        ad_id: u64,
    }

    impl Message for SendAdExpiredMail {
        const TYPE: &'static str = "SendAdExpiredMail";
        const ROUTING_KEY: &'static str = "mailer.ad.expired";
        fn retry_policy() -> RetryPolicy {
            RetryPolicy::repeat(5, [15_000, 30_000, 60_000, 300_000, 86_400_000])
        }
    }

    #[test]
    fn golden_envelope() {
        let body = encode_envelope(
            &SendAdExpiredMail { ad_id: 1 },
            SendAdExpiredMail::retry_policy().into_metadata(),
            None,
            None,
        )
        .ok();
        assert_eq!(
            body.as_deref(),
            Some(
                &br#"{"payload":{"adId":1},"metadata":{"className":"SendAdExpiredMail","retryStrategy":"repeat","retryLimit":5,"retryCount":0,"retryInterval":[15,30,60,300,86400]}}"#[..]
            )
        );
    }

    #[test]
    fn properties_and_rpc_fields() {
        let options = SendOptions::new()
            .routing_key("mailer.other")
            .correlation_id("c-1")
            .reply_to("replies")
            .header("tenant", "eu");
        let e = encode(&SendAdExpiredMail { ad_id: 2 }, &options).ok();
        let Some(e) = e else { panic!("encodes") };
        assert_eq!(e.routing_key, "mailer.other");
        assert_eq!(
            e.properties.message_type.as_deref(),
            Some("SendAdExpiredMail")
        );
        assert_eq!(
            e.properties.content_type.as_deref(),
            Some(CONTENT_TYPE_JSON)
        );
        assert_eq!(e.properties.correlation_id.as_deref(), Some("c-1"));
        assert!(e.properties.message_id.is_some() && e.properties.timestamp.is_some());
        let raw = decode_json_raw(&e.body).ok();
        let Some(raw) = raw else { panic!("decodes") };
        assert_eq!(raw.payload, br#"{"adId":2}"#);
        assert!(raw.metadata.correlation_id.is_some_and(|c| c == "c-1"));
        assert!(raw.metadata.response_queue.is_some_and(|c| c == "replies"));
    }
}
