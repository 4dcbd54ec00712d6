//! The write model: [`Publisher`] sends typed [`Message`]s through any [`Transport`].
//!
//! Every send goes to a durable topic exchange with the message's routing key, persistent and
//! mandatory, with the AMQP properties filled in (`type` = [`Message::TYPE`], `content_type`
//! `application/json`, a unique `message_id`, `timestamp`, and `correlation_id`/`reply_to`
//! when given), and returns only once the broker confirmed it. Concurrent sends pipeline
//! their confirmations (the transport's job); [`Publisher::send_batch`] sends many at once.
//!
//! Every message carries the current trace context in its `traceparent` header (see
//! [`crate::trace`]); [`Publisher::send_with`] runs in a `lepus.publish` span.
//!
//! The body is core's JSON envelope ([`crate::core::envelope::encode_json_raw`]) around the
//! payload, which `serde_json` writes straight into the envelope's buffer.
//!
//! ## Delayed and scheduled sends
//!
//! [`Publisher::send_after`] and [`Publisher::send_at`] (or [`SendOptions::delay`] and
//! [`SendOptions::deliver_at`]) publish onto the delay levels ([`crate::delay`]): the message
//! is routed by the exchange, with its routing key, once its time has come, to the queues
//! bound then, with its envelope byte for byte. Exact to the millisecond up to about 397
//! days. The send returns once the broker confirmed the message at its first level; whether
//! a queue is bound for it is known only when it arrives (a message nobody is bound for then
//! waits in `lepus.delay.unrouted`). Only queues declared by Lepus (workers) are bound to the
//! delay levels' delivery exchange.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::Instrument;

use crate::core::envelope::{encode_json_tail, EncodeError, Metadata, Text, JSON_PAYLOAD_HEAD};
use crate::core::retry::RetryMetadata;
use crate::delay::Delay;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Message, RetryPolicy};
use crate::properties::{HeaderValue, Headers, Properties};
use crate::protocol::{new_message_id, now_seconds, CONTENT_TYPE_JSON};
use crate::topology::QueueKind;
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
    /// Wait this long before the message is routed (see [`crate::delay`]).
    pub delay: Option<Duration>,
    /// Route the message at this time (the later of this and [`SendOptions::delay`]).
    pub deliver_at: Option<SystemTime>,
    /// The delay levels a delayed message waits on: quorum levels replicate and dead-letter
    /// at least once; choose them when the destination queues are quorum queues.
    pub delay_levels: QueueKind,
    /// The AMQP `priority` (see [`Properties::priority`]); `None`: none (0).
    pub priority: Option<u8>,
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

    /// Sets the priority, 0 to 255: delivered before lower priorities from a worker queue
    /// with [`crate::QueueSpec::max_priority`] (up to that maximum); retries and give-backs
    /// keep it.
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Delays the message by `delay` (rounded up to the millisecond, at most
    /// [`crate::delay::MAX_DELAY`]).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Routes the message at `at` (at once if `at` has passed).
    #[must_use]
    pub fn deliver_at(mut self, at: SystemTime) -> Self {
        self.deliver_at = Some(at);
        self
    }

    /// Chooses the delay levels (see [`SendOptions::delay_levels`]).
    #[must_use]
    pub fn delay_levels(mut self, kind: QueueKind) -> Self {
        self.delay_levels = kind;
        self
    }

    /// The delay these options ask for, from `now`; `None` for a plain send.
    fn delay_from(&self, now: SystemTime) -> Result<Option<Delay>> {
        let until_at = match self.deliver_at {
            Some(at) => Some(Delay::until(at, now)?),
            None => None,
        };
        let after = match self.delay {
            Some(d) => Some(Delay::new(d)?),
            None => None,
        };
        let longest = match (until_at, after) {
            (Some(a), Some(b)) => Some(if a.as_ms() >= b.as_ms() { a } else { b }),
            (a, b) => a.or(b),
        };
        Ok(longest.map(|d| d.on(self.delay_levels)))
    }
}

/// Sends typed messages to one topic exchange.
///
/// The exchange is declared (durable topic, idempotent) once before the first send, so a
/// producer deployed before any worker sends without a `NOT_FOUND`. Declaring makes it
/// exist, not routable: while no queue is bound, a send is still
/// [`ErrorKind::Unroutable`] (sends are mandatory), and nothing is stored.
#[derive(Debug)]
pub struct Publisher<T> {
    transport: Arc<T>,
    exchange: String,
    declared: Arc<DeclareOnce>,
}

impl<T> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        Publisher {
            transport: Arc::clone(&self.transport),
            exchange: self.exchange.clone(),
            declared: Arc::clone(&self.declared),
        }
    }
}

/// Declares the exchange a producer publishes to, once (the [`Publisher`]'s and the
/// [`crate::RpcClient`]'s): producers then do not depend on a consumer having declared it.
#[derive(Debug, Default)]
pub(crate) struct DeclareOnce {
    done: tokio::sync::OnceCell<()>,
}

impl DeclareOnce {
    /// Declares `exchange` on `transport` unless done already. The default exchange (`""`)
    /// and the broker's own (`amq.*`) are not declared. A refusal by the broker (an exchange
    /// of another type or arguments by that name, no configure permission) is logged once
    /// and not retried: the exchange exists or is someone else's to declare, and the send
    /// goes ahead. Other failures (connection) are returned and tried again next time.
    pub(crate) async fn ensure<T: Transport>(&self, transport: &T, exchange: &str) -> Result<()> {
        if exchange.is_empty() || exchange.starts_with("amq.") || self.done.initialized() {
            return Ok(());
        }
        // Boxed: declaring happens once; every send's future would otherwise carry it.
        Box::pin(self.declare(transport, exchange)).await
    }

    async fn declare<T: Transport>(&self, transport: &T, exchange: &str) -> Result<()> {
        self.done
            .get_or_try_init(|| async {
                match transport.declare_exchange(exchange).await {
                    Ok(()) => Ok(()),
                    Err(e) if matches!(e.kind(), ErrorKind::BrokerRefused { .. }) => {
                        tracing::info!(exchange, error = %e, "not declaring the exchange; publishing to it as it is");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }

    /// Marks the exchange declared.
    pub(crate) fn set(&self) {
        let _ = self.done.set(());
    }
}

/// An encoded message, ready to publish.
struct Encoded<'a> {
    /// The trace context the message carries (see [`crate::trace`]).
    trace: crate::trace::TraceContext,
    /// The options' routing key, else the message type's.
    routing_key: &'a str,
    body: Vec<u8>,
    properties: Properties,
}

impl<T: Transport> Publisher<T> {
    /// A publisher to the topic exchange `exchange` (declared before the first send).
    pub fn new(transport: Arc<T>, exchange: impl Into<String>) -> Self {
        Publisher {
            transport,
            exchange: exchange.into(),
            declared: Arc::default(),
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
        self.transport.declare_exchange(&self.exchange).await?;
        self.declared.set();
        Ok(())
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
        let delay = options.delay_from(SystemTime::now())?;
        let span = publish_span(&self.exchange);
        // Encoded inside the span: its trace context is the message's parent.
        let encoded = span.in_scope(|| encode(message, options))?;
        record_publish(&span, &encoded);
        self.declared
            .ensure(&*self.transport, &self.exchange)
            .await?;
        let publication = Publication::new(
            &self.exchange,
            encoded.routing_key,
            &encoded.body,
            &encoded.properties,
        );
        let publish = async {
            match delay {
                // Boxed: a delayed publish's future is large (it may declare the levels), and
                // every send's future would carry it.
                Some(delay) => Box::pin(self.transport.publish_delayed(publication, delay)).await,
                None => self.transport.publish(publication).await,
            }
        };
        publish.instrument(span).await?;
        published(&self.exchange, M::TYPE);
        Ok(message_id_of(encoded.properties))
    }

    /// Sends `message` to be routed once `delay` has passed (see [`crate::delay`]);
    /// returns its message id once the broker confirmed it.
    ///
    /// # Errors
    /// As [`Publisher::send`]; a delay over [`crate::delay::MAX_DELAY`] is
    /// `InvalidConfig { setting: "delay" }`.
    pub async fn send_after<M: Message>(&self, message: &M, delay: Duration) -> Result<String> {
        self.send_with(message, &SendOptions::new().delay(delay))
            .await
    }

    /// Sends `message` to be routed at `at` (at once if `at` has passed); returns its message
    /// id once the broker confirmed it.
    ///
    /// # Errors
    /// As [`Publisher::send_after`].
    pub async fn send_at<M: Message>(&self, message: &M, at: SystemTime) -> Result<String> {
        self.send_with(message, &SendOptions::new().deliver_at(at))
            .await
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
        self.declared
            .ensure(&*self.transport, &self.exchange)
            .await?;
        let publications: Vec<Publication<'_>> = encoded
            .iter()
            .map(|e| Publication::new(&self.exchange, e.routing_key, &e.body, &e.properties))
            .collect();
        let outcomes = self.transport.publish_batch(&publications).await?;
        drop(publications);
        Ok(outcomes
            .into_iter()
            .zip(encoded)
            .map(|(outcome, e)| {
                outcome.map(|()| {
                    published(&self.exchange, M::TYPE);
                    message_id_of(e.properties)
                })
            })
            .collect())
    }
}

/// Counts a confirmed publish in the metrics.
fn published(exchange: &str, type_name: &'static str) {
    let labels = [("exchange", exchange), ("type", type_name)];
    crate::metrics::count(crate::metrics::MESSAGES_PUBLISHED, &labels);
}

/// A `lepus.publish` span (OpenTelemetry messaging conventions), fields recorded later.
pub(crate) fn publish_span(exchange: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "lepus.publish",
        "otel.name" = format!("publish {exchange}"),
        "otel.kind" = "producer",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "publish",
        "messaging.destination.name" = exchange,
        "messaging.rabbitmq.destination.routing_key" = tracing::field::Empty,
        "messaging.message.id" = tracing::field::Empty,
        "messaging.message.conversation_id" = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    crate::trace::adopt_scope(&span);
    span
}

/// Records what the message carries on its `lepus.publish` span.
fn record_publish(span: &tracing::Span, encoded: &Encoded<'_>) {
    crate::trace::record(span, &encoded.trace);
    span.record(
        "messaging.rabbitmq.destination.routing_key",
        encoded.routing_key,
    );
    record_properties(span, &encoded.properties);
}

/// Records the message and correlation ids of `properties` on a `lepus.publish` span.
pub(crate) fn record_properties(span: &tracing::Span, properties: &Properties) {
    if let Some(id) = &properties.message_id {
        span.record("messaging.message.id", id.as_str());
    }
    if let Some(id) = &properties.correlation_id {
        span.record("messaging.message.conversation_id", id.as_str());
    }
}

fn message_id_of(properties: Properties) -> String {
    properties.message_id.unwrap_or_default()
}

fn encode<'a, M: Message>(message: &M, options: &'a SendOptions) -> Result<Encoded<'a>> {
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
    properties.priority = options.priority;
    let trace = crate::trace::inject_publish(&mut properties.headers);
    Ok(Encoded {
        trace,
        routing_key: options.routing_key.as_deref().unwrap_or(M::ROUTING_KEY),
        body,
        properties,
    })
}

thread_local! {
    /// The length of the last payload this thread serialized: the next envelope's buffer is
    /// allocated for about as much (capped at [`PAYLOAD_HINT_CAP`]), so that `serde_json`
    /// rarely grows it.
    static PAYLOAD_HINT: Cell<usize> = const { Cell::new(0) };
}

/// The most an envelope's buffer is allocated for ahead of its payload: a larger payload
/// grows it as it is written, and a large one now and then does not make every envelope
/// after it as large.
const PAYLOAD_HINT_CAP: usize = 16 * 1024;

/// Serializes the payload with `serde_json` straight into the envelope's buffer, between
/// core's head and tail: one allocation a message, no copy of the payload.
pub(crate) fn encode_envelope<M: Message>(
    message: &M,
    retry: RetryMetadata,
    correlation_id: Option<&str>,
    response_queue: Option<&str>,
) -> Result<Vec<u8>> {
    with_tail(M::TYPE, retry, correlation_id, response_queue, |tail| {
        let hint = PAYLOAD_HINT.with(Cell::get).min(PAYLOAD_HINT_CAP);
        let mut out = Vec::with_capacity(JSON_PAYLOAD_HEAD.len() + hint + tail.len());
        out.extend_from_slice(JSON_PAYLOAD_HEAD);
        serde_json::to_writer(&mut out, message).map_err(|e| {
            Error::new(ErrorKind::Encode).context(format!("serialize a {} payload: {e}", M::TYPE))
        })?;
        PAYLOAD_HINT.with(|h| h.set(out.len() - JSON_PAYLOAD_HEAD.len()));
        out.extend_from_slice(tail);
        Ok(out)
    })
}

/// Wraps already serialized JSON `payload` (copied verbatim) in core's JSON envelope of
/// type `class_name`: what [`Publisher`] sends, for tools that hold the payload as JSON text.
///
/// # Errors
/// [`ErrorKind::Encode`] when core refuses the envelope's metadata.
pub fn encode_raw_envelope(
    payload: &[u8],
    class_name: &str,
    retry: RetryMetadata,
    correlation_id: Option<&str>,
    response_queue: Option<&str>,
) -> Result<Vec<u8>> {
    with_tail(class_name, retry, correlation_id, response_queue, |tail| {
        let mut out = Vec::with_capacity(JSON_PAYLOAD_HEAD.len() + payload.len() + tail.len());
        out.extend_from_slice(JSON_PAYLOAD_HEAD);
        out.extend_from_slice(payload);
        out.extend_from_slice(tail);
        Ok(out)
    })
}

/// Runs `then` with the tail of an envelope (what follows its payload: core's metadata and
/// the envelope's end), written on the stack when it fits in 1 KiB, as it does unless its
/// strings are long: they may grow six-fold when escaped (`\u0001`), while 16 intervals and
/// a backoff object stay well under 1 KiB.
fn with_tail<R>(
    class_name: &str,
    retry: RetryMetadata,
    correlation_id: Option<&str>,
    response_queue: Option<&str>,
    then: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    let metadata = Metadata {
        class_name: Text::plain(class_name),
        retry,
        response_queue: response_queue.map(Text::plain),
        correlation_id: correlation_id.map(Text::plain),
    };
    let refused = |e: Option<EncodeError>| {
        let detail = e.map(|e| format!(": {e}")).unwrap_or_default();
        Error::new(ErrorKind::Encode).context(format!("encode a {class_name} envelope{detail}"))
    };
    let strings =
        class_name.len() + correlation_id.map_or(0, str::len) + response_queue.map_or(0, str::len);
    let mut stack = [0u8; 1024];
    let mut heap = Vec::new();
    let mut heap_len = 6 * strings + 2048;
    // The stack first, then the heap, doubled on each further try.
    for attempt in 0..5 {
        let out: &mut [u8] = if attempt == 0 {
            &mut stack
        } else {
            heap.resize(heap_len, 0);
            heap_len = heap_len.saturating_mul(2);
            &mut heap
        };
        match encode_json_tail(&metadata, out) {
            Ok(n) => return then(&out[..n]),
            Err(EncodeError::BufferFull) => {}
            Err(e) => return Err(refused(Some(e))),
        }
    }
    Err(refused(None))
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

    #[derive(Serialize, Deserialize)]
    struct Note {
        text: String,
    }

    impl Message for Note {
        const TYPE: &'static str = "Note";
        const ROUTING_KEY: &'static str = "notes";
    }

    #[test]
    fn payloads_of_any_size_after_one_another_make_whole_envelopes() {
        // The buffer is sized by the previous payload: smaller, larger (past the cap), and a
        // tail too long for the stack (255 control characters, six bytes each escaped).
        let corr: String = "\u{1}".repeat(255);
        for len in [10, 100_000, 3, 20_000, 0, 300] {
            let note = Note {
                text: "n".repeat(len),
            };
            let body = encode_envelope(&note, RetryMetadata::default(), Some(&corr), None);
            let Ok(body) = body else {
                panic!("encodes {len}")
            };
            let raw = decode_json_raw(&body).ok();
            let Some(raw) = raw else {
                panic!("decodes {len}")
            };
            assert_eq!(raw.payload, serde_json::to_vec(&note).unwrap_or_default());
            assert!(raw
                .metadata
                .correlation_id
                .is_some_and(|c| c.to_string() == corr));
            let raw_body = encode_raw_envelope(
                raw.payload,
                "Note",
                RetryMetadata::default(),
                Some(&corr),
                None,
            );
            assert_eq!(raw_body.ok(), Some(body));
        }
    }
}
