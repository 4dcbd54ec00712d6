//! The firmware-to-server gateway: reads a stream of COBS-framed postcard envelopes (as a
//! device writes them to a UART, see [`crate::core::encode_postcard_cobs`]) and publishes
//! each one to RabbitMQ as the JSON envelope, with confirms.
//!
//! - Framing: frames end with a zero byte; [`FrameSplitter`] cuts the stream. A frame longer
//!   than the configured maximum is skipped up to its terminator and counted as corrupt.
//! - Decoding: COBS, then core's [`decode_postcard_raw`] for the metadata; the payload is
//!   decoded with postcard into the registered [`Message`] type of its `className` and
//!   written out as JSON the way [`crate::Publisher`] writes it. Postcard is not
//!   self-describing, so only registered types can be converted: any other `className` is
//!   counted (`unknown_type`) and skipped.
//! - Metadata: `className`, the retry fields (`retryStrategy`, `retryLimit`, `retryCount`,
//!   `retryInterval`, `retryBackoff`), `response_queue` and `correlationId` are kept as the
//!   device set them.
//! - Routing: the device does not send a routing key (it saves bytes on the wire, and a
//!   device cannot route messages where the server does not want them). The gateway routes
//!   by type: [`Message::ROUTING_KEY`] of the registered type, or the key given to
//!   [`Gateway::register_with_key`].
//! - Failures: a corrupt frame (bad COBS, bad envelope, payload that does not decode into
//!   the type, trailing bytes) is counted and skipped and never stops the gateway. An
//!   unroutable message is counted and skipped. Connection errors stop [`Gateway::run`].
//! - From a queue ([`Gateway::start`]): frames that arrive as AMQP messages (one frame a
//!   message, from a bridge the devices publish through) are consumed on the consumer
//!   runtime ([`crate::consumer`]), with its body limit, delivery limit, batched acks and
//!   graceful shutdown. A message is acked once its JSON envelope is confirmed; an envelope
//!   the broker does not confirm (a nack, a failover) is published again with backoff while
//!   the frame stays unacked, never given back to count against a quorum queue's delivery
//!   limit. A corrupt frame is dead-lettered as `malformed`, an unregistered type as
//!   `unknown-type`, an unroutable one as `follow-up-refused`, each with the frame's bytes
//!   unchanged.
//!
//! The registered types live in the crate's one handler table: each entry decodes its
//! postcard payload and writes it out as JSON.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};

use tokio::sync::oneshot;

use crate::consumer::{
    bump, repeat_follow_up, requeue, serve, ConsumerConfig, Counters, DeadLetter, Policy, Refusal,
    Runtime, Slot, Verdict,
};
use crate::core::envelope::{decode_postcard_raw, DecodeError};
use crate::core::retry::DeadLetterReason;
use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::handlers::{Context, HandlerFuture, HandlerTable};
use crate::message::Message;
use crate::properties::Properties;
use crate::protocol::{new_message_id, now_seconds, CONTENT_TYPE_JSON};
use crate::publisher::encode_raw_envelope;
use crate::topology::QueueSpec;
use crate::transport::{Publication, Transport};

/// Default longest frame, in bytes (terminator excluded).
pub const DEFAULT_MAX_FRAME: usize = 4096;

/// Why a frame was skipped as corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is longer than the maximum frame size.
    Oversized {
        /// Its length in bytes, as far as it was read.
        len: usize,
    },
    /// The stream ended inside a frame (no terminating zero byte).
    Truncated,
    /// The bytes are not a valid COBS frame.
    Cobs,
    /// The envelope's metadata does not decode.
    Envelope(DecodeError),
    /// The payload does not decode into the registered type, or bytes follow it.
    Payload,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Oversized { len } => write!(f, "frame of {len} bytes over the limit"),
            FrameError::Truncated => f.write_str("stream ended inside a frame"),
            FrameError::Cobs => f.write_str("invalid COBS frame"),
            FrameError::Envelope(e) => write!(f, "invalid postcard envelope: {e}"),
            FrameError::Payload => f.write_str("payload does not decode into its type"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Cuts a byte stream into zero-terminated frames.
#[derive(Debug)]
pub struct FrameSplitter {
    buf: Vec<u8>,
    max_frame: usize,
    /// Bytes dropped from the current oversized frame (0 when not skipping).
    skipped: usize,
}

impl FrameSplitter {
    /// A splitter that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameSplitter {
            buf: Vec::new(),
            max_frame,
            skipped: 0,
        }
    }

    /// Feeds `bytes`; returns the frames they completed (terminator removed), in order. An
    /// empty frame (two zero bytes in a row) is not a frame and is ignored.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<core::result::Result<Vec<u8>, FrameError>> {
        let mut frames = Vec::new();
        for &b in bytes {
            if b == 0 {
                if self.skipped > 0 {
                    frames.push(Err(FrameError::Oversized {
                        len: self.skipped + self.buf.len(),
                    }));
                    self.skipped = 0;
                    self.buf.clear();
                } else if !self.buf.is_empty() {
                    frames.push(Ok(core::mem::take(&mut self.buf)));
                }
            } else if self.skipped > 0 {
                self.skipped += 1;
            } else if self.buf.len() >= self.max_frame {
                self.skipped = self.buf.len() + 1;
                self.buf.clear();
            } else {
                self.buf.push(b);
            }
        }
        frames
    }

    /// Ends the stream: bytes of an unterminated frame are a [`FrameError::Truncated`].
    pub fn finish(&mut self) -> Option<FrameError> {
        let partial = self.skipped > 0 || !self.buf.is_empty();
        self.skipped = 0;
        self.buf.clear();
        partial.then_some(FrameError::Truncated)
    }
}

/// Counters of a [`Gateway`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GatewayStats {
    /// Frames read (valid or not).
    pub frames: u64,
    /// Messages published and confirmed.
    pub published: u64,
    /// Frames skipped as corrupt.
    pub corrupt: u64,
    /// Frames skipped because their `className` is not registered.
    pub unknown_type: u64,
    /// Messages the broker returned as unroutable (no queue bound).
    pub unroutable: u64,
    /// Frames consumed from a queue and dead-lettered (corrupt, unknown type, unroutable).
    pub dead_lettered: u64,
}

/// What happened to one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameOutcome {
    /// Published and confirmed, with this message id.
    Published(String),
    /// Skipped: corrupt.
    Corrupt(FrameError),
    /// Skipped: this `className` is not registered.
    UnknownType(String),
    /// Skipped: the broker returned it as unroutable.
    Unroutable,
}

/// The registered types: postcard payload in, JSON payload out, with the routing key.
type Routes = HandlerTable<Vec<u8>, String>;

/// The handler-table entry of `M`: decodes its postcard payload (no bytes may follow) and
/// writes it as JSON.
fn transcode<M: Message>(
    payload: &[u8],
    _ctx: Context,
) -> core::result::Result<HandlerFuture<Vec<u8>>, String> {
    let (message, rest) = postcard::take_from_bytes::<M>(payload).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes follow the payload", rest.len()));
    }
    let json = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
    Ok(Box::pin(std::future::ready(Ok(json))))
}

/// Publishes the envelopes of a framed postcard stream as JSON envelopes (see the module
/// documentation).
pub struct Gateway<T> {
    transport: Arc<T>,
    exchange: String,
    routes: Routes,
    max_frame: usize,
    stats: GatewayStats,
}

impl<T> core::fmt::Debug for Gateway<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gateway")
            .field("exchange", &self.exchange)
            .field("types", &self.routes.types().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T: Transport> Gateway<T> {
    /// A gateway publishing to the topic exchange `exchange`, with no type registered.
    pub fn new(transport: Arc<T>, exchange: impl Into<String>) -> Self {
        Gateway {
            transport,
            exchange: exchange.into(),
            routes: HandlerTable::default(),
            max_frame: DEFAULT_MAX_FRAME,
            stats: GatewayStats::default(),
        }
    }

    /// Accepts messages of type `M`, routed with [`Message::ROUTING_KEY`].
    pub fn register<M: Message>(&mut self) -> &mut Self {
        self.register_with_key::<M>(M::ROUTING_KEY)
    }

    /// Accepts messages of type `M`, routed with `routing_key`.
    pub fn register_with_key<M: Message>(&mut self, routing_key: impl Into<String>) -> &mut Self {
        self.routes
            .insert_start(M::TYPE, routing_key.into(), transcode::<M>);
        self
    }

    /// Sets the longest frame accepted (default [`DEFAULT_MAX_FRAME`]).
    pub fn max_frame(&mut self, bytes: usize) -> &mut Self {
        self.max_frame = bytes;
        self
    }

    /// The counters so far.
    pub fn stats(&self) -> GatewayStats {
        self.stats
    }

    /// Decodes one frame (COBS bytes, terminator removed) and publishes it.
    ///
    /// # Errors
    /// Only errors that stop the gateway: connection and channel errors, a refused exchange.
    /// Frame problems are [`FrameOutcome`]s.
    pub async fn handle_frame(&mut self, frame: &mut [u8]) -> Result<FrameOutcome> {
        self.stats.frames += 1;
        let outcome = self.publish_frame(frame).await?;
        match &outcome {
            FrameOutcome::Published(_) => self.stats.published += 1,
            FrameOutcome::Corrupt(e) => {
                self.stats.corrupt += 1;
                tracing::warn!(error = %e, "corrupt frame skipped");
            }
            FrameOutcome::UnknownType(t) => {
                self.stats.unknown_type += 1;
                tracing::warn!(class_name = %t, "frame of an unregistered type skipped");
            }
            FrameOutcome::Unroutable => self.stats.unroutable += 1,
        }
        Ok(outcome)
    }

    async fn publish_frame(&self, frame: &mut [u8]) -> Result<FrameOutcome> {
        publish_frame(&*self.transport, &self.exchange, &self.routes, frame).await
    }

    /// Reads `reader` to its end, publishing every frame; returns the counters.
    ///
    /// # Errors
    /// Read errors of the stream, and the errors of [`Gateway::handle_frame`].
    pub async fn run<R: AsyncRead + Unpin>(&mut self, mut reader: R) -> Result<GatewayStats> {
        let mut splitter = FrameSplitter::new(self.max_frame);
        let mut chunk = vec![0u8; 4096];
        loop {
            let n = reader.read(&mut chunk).await.map_err(|e| {
                crate::error::Error::new(crate::error::ErrorKind::ConnectionLost)
                    .context(format!("read the frame stream: {e}"))
            })?;
            if n == 0 {
                break;
            }
            for frame in splitter.push(chunk.get(..n).unwrap_or(&[])) {
                match frame {
                    Ok(mut frame) => {
                        self.handle_frame(&mut frame).await?;
                    }
                    Err(e) => self.count_corrupt(e),
                }
            }
        }
        if let Some(e) = splitter.finish() {
            self.count_corrupt(e);
        }
        Ok(self.stats)
    }

    fn count_corrupt(&mut self, e: FrameError) {
        self.stats.frames += 1;
        self.stats.corrupt += 1;
        tracing::warn!(error = %e, "corrupt frame skipped");
    }
}

/// A frame decoded and written out as its JSON envelope, ready to publish (once, or again
/// while the broker does not confirm it).
struct Outgoing<'r> {
    routing_key: &'r str,
    body: Vec<u8>,
    properties: Properties,
    message_id: String,
    /// The publish span; every attempt runs in it.
    span: tracing::Span,
}

/// Decodes one frame (COBS bytes, terminator removed) into its JSON envelope, or says why it
/// is skipped.
async fn decode_frame<'r>(
    exchange: &str,
    routes: &'r Routes,
    frame: &mut [u8],
) -> core::result::Result<Outgoing<'r>, FrameOutcome> {
    let Ok(len) = cobs::decode_in_place(frame) else {
        return Err(FrameOutcome::Corrupt(FrameError::Cobs));
    };
    let bytes = frame.get(..len).unwrap_or(&[]);
    let raw = match decode_postcard_raw(bytes) {
        Ok(raw) => raw,
        Err(e) => return Err(FrameOutcome::Corrupt(FrameError::Envelope(e))),
    };
    let class_name = raw.metadata.class_name.to_string();
    let Some(route) = routes.get(class_name.as_str()) else {
        return Err(FrameOutcome::UnknownType(class_name));
    };
    let correlation_id = raw.metadata.correlation_id.map(|t| t.to_string());
    let response_queue = raw.metadata.response_queue.map(|t| t.to_string());
    let ctx = Context {
        message_id: None,
        message_type: route.type_name,
        attempt: 1,
        redelivered: false,
        routing_key: route.meta.clone(),
        queue: String::new(),
        correlation_id: correlation_id.clone(),
        reply_to: response_queue.clone(),
    };
    let json = match route.start(raw.payload, None, ctx) {
        Ok(transcoded) => match transcoded.await {
            Ok(json) => json,
            Err(_) => return Err(FrameOutcome::Corrupt(FrameError::Payload)),
        },
        Err(_) => return Err(FrameOutcome::Corrupt(FrameError::Payload)),
    };
    let body = match encode_raw_envelope(
        &json,
        route.type_name,
        raw.metadata.retry.clone(),
        correlation_id.as_deref(),
        response_queue.as_deref(),
    ) {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(error = %e, "the JSON envelope cannot be written; frame skipped");
            return Err(FrameOutcome::Corrupt(FrameError::Payload));
        }
    };
    let message_id = new_message_id();
    let mut properties = Properties::new()
        .with_type(class_name)
        .with_content_type(CONTENT_TYPE_JSON)
        .with_message_id(message_id.clone())
        .with_timestamp(now_seconds());
    properties.correlation_id = correlation_id;
    properties.reply_to = response_queue;
    // The trace of the frame's delivery (or a new one, for frames from a reader).
    let span = crate::publisher::publish_span(exchange);
    let trace = span.in_scope(|| crate::trace::inject_publish(&mut properties.headers));
    crate::trace::record(&span, &trace);
    span.record(
        "messaging.rabbitmq.destination.routing_key",
        route.meta.as_str(),
    );
    crate::publisher::record_properties(&span, &properties);
    Ok(Outgoing {
        routing_key: &route.meta,
        body,
        properties,
        message_id,
        span,
    })
}

/// Publishes `out` once, in its span.
async fn send_frame<T: Transport>(transport: &T, exchange: &str, out: &Outgoing<'_>) -> Result<()> {
    let publication = Publication::new(exchange, out.routing_key, &out.body, &out.properties);
    tracing::Instrument::instrument(transport.publish(publication), out.span.clone()).await
}

/// The outcome of publishing `out`: the errors that are the frame's (unroutable, refused as
/// invalid) become outcomes; the rest are the broker's.
fn frame_sent(sent: Result<()>, out: Outgoing<'_>) -> Result<FrameOutcome> {
    match sent {
        Ok(()) => Ok(FrameOutcome::Published(out.message_id)),
        Err(e) if e.is_unroutable() => {
            tracing::warn!(routing_key = %out.routing_key, "unroutable message skipped");
            Ok(FrameOutcome::Unroutable)
        }
        Err(e) if e.is_invalid_input() => {
            tracing::warn!(error = %e, "message refused before sending; skipped");
            Ok(FrameOutcome::Corrupt(FrameError::Payload))
        }
        Err(e) => Err(e),
    }
}

/// Decodes one frame (COBS bytes, terminator removed) and publishes its JSON envelope once.
async fn publish_frame<T: Transport>(
    transport: &T,
    exchange: &str,
    routes: &Routes,
    frame: &mut [u8],
) -> Result<FrameOutcome> {
    match decode_frame(exchange, routes, frame).await {
        Ok(out) => frame_sent(send_frame(transport, exchange, &out).await, out),
        Err(skipped) => Ok(skipped),
    }
}

/// Decodes one frame consumed from a queue and publishes its JSON envelope until the broker
/// confirms it, again with backoff while it fails for a passing reason (a nack, a lost
/// connection during a failover), as the worker does with its follow-ups
/// ([`repeat_follow_up`]). The frame is not given back meanwhile: on a quorum queue every
/// return counts against the delivery limit, so a failover of a few seconds used to
/// dead-letter good frames as `delivery-limit`. `Err` only when the transport is closed.
async fn publish_frame_repeated<T: Transport>(
    rt: &Runtime<T, FramePolicy>,
    frame: &mut [u8],
) -> Result<FrameOutcome> {
    let p = &rt.policy;
    let out = match decode_frame(&p.exchange, &p.routes, frame).await {
        Ok(out) => out,
        Err(skipped) => return Ok(skipped),
    };
    let unroutable = AtomicBool::new(false);
    let publish = || async {
        match send_frame(&*rt.transport, &p.exchange, &out).await {
            // The frame's fault, not the broker's: not published again.
            Err(e) if e.is_unroutable() => {
                unroutable.store(true, Ordering::Relaxed);
                Ok(())
            }
            sent => sent,
        }
    };
    let sent = repeat_follow_up(&rt.counters, None, "frame's JSON envelope", publish).await;
    if sent.is_ok() && unroutable.load(Ordering::Relaxed) {
        tracing::warn!(routing_key = %out.routing_key, "unroutable message skipped");
        return Ok(FrameOutcome::Unroutable);
    }
    frame_sent(sent, out)
}

/// A gateway consuming frames from a queue, started by [`Gateway::start`].
#[derive(Debug)]
pub struct GatewayHandle {
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<()>>,
    counters: (Arc<Counters>, Arc<FrameCounters>),
}

impl GatewayHandle {
    /// The counters so far.
    pub fn stats(&self) -> GatewayStats {
        frame_stats(&self.counters.0, &self.counters.1)
    }

    /// Aborts the gateway's task (what a [`crate::Host`] does past its drain deadline).
    pub(crate) fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.join.abort_handle()
    }

    /// Stops consuming gracefully (see [`crate::consumer`]) and returns the counters.
    ///
    /// # Errors
    /// The error that ended consumption, if it ended before the shutdown.
    pub async fn shutdown(mut self) -> Result<GatewayStats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.join).await {
            Ok(outcome) => outcome?,
            Err(e) => {
                return Err(
                    Error::new(ErrorKind::Broker).context(format!("gateway task failed: {e}"))
                )
            }
        }
        Ok(self.stats())
    }
}

#[derive(Debug, Default)]
struct FrameCounters {
    published: AtomicU64,
    corrupt: AtomicU64,
    unknown_type: AtomicU64,
    unroutable: AtomicU64,
    dead_lettered: AtomicU64,
}

fn frame_stats(c: &Counters, f: &FrameCounters) -> GatewayStats {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    GatewayStats {
        frames: c.snapshot().received,
        published: g(&f.published),
        corrupt: g(&f.corrupt),
        unknown_type: g(&f.unknown_type),
        unroutable: g(&f.unroutable),
        dead_lettered: g(&f.dead_lettered),
    }
}

/// The gateway's policy on the runtime: frames in, JSON envelopes out.
struct FramePolicy {
    exchange: String,
    routes: Routes,
    counters: Arc<FrameCounters>,
}

impl<T> Gateway<T>
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    /// Consumes frames from `queue` (one frame a message, the zero terminator optional),
    /// declared with its dead-letter queue, and publishes each as its JSON envelope; runs in
    /// a task of its own until [`GatewayHandle::shutdown`]. See the module docs.
    ///
    /// # Errors
    /// An invalid configuration, declaration or consume errors.
    pub async fn start(self, queue: QueueSpec, consumer: ConsumerConfig) -> Result<GatewayHandle> {
        consumer.validate()?;
        queue.validate()?;
        self.transport.declare_exchange(&queue.exchange).await?;
        self.transport.declare_queue(&queue).await?;
        let subscription = self
            .transport
            .consume(&queue.name, consumer.prefetch)
            .await?;
        let counters = Arc::new(FrameCounters::default());
        let policy = FramePolicy {
            exchange: self.exchange,
            routes: self.routes,
            counters: Arc::clone(&counters),
        };
        let rt = Arc::new(Runtime::new(self.transport, &queue, consumer, policy));
        let handle_counters = (Arc::clone(&rt.counters), counters);
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(serve(rt, subscription, async move {
            let _ = stopped.await;
        }));
        Ok(GatewayHandle {
            stop: Some(stop),
            join,
            counters: handle_counters,
        })
    }
}

impl<T: Transport + 'static> Policy<T> for FramePolicy {
    async fn handle(
        rt: Arc<Runtime<T, Self>>,
        delivery: Arc<Delivery>,
        _redelivered: bool,
        // Held for the whole call: the handler slot.
        _slot: Slot,
    ) -> Verdict {
        let p = &rt.policy;
        let mut frame = delivery.body.clone();
        if frame.last() == Some(&0) {
            frame.pop();
        }
        let outcome = publish_frame_repeated(&rt, &mut frame).await;
        let (reason, error) = match outcome {
            Ok(FrameOutcome::Published(_)) => {
                bump(&p.counters.published);
                return Verdict::Ack;
            }
            Ok(FrameOutcome::Corrupt(e)) => {
                bump(&p.counters.corrupt);
                (DeadLetterReason::Malformed, format!("corrupt frame: {e}"))
            }
            Ok(FrameOutcome::UnknownType(t)) => {
                bump(&p.counters.unknown_type);
                (
                    DeadLetterReason::UnknownType,
                    format!("no type `{t}` registered"),
                )
            }
            Ok(FrameOutcome::Unroutable) => {
                bump(&p.counters.unroutable);
                (
                    DeadLetterReason::FollowUpRefused,
                    "the JSON envelope was unroutable (no queue bound)".to_owned(),
                )
            }
            // The transport is closed: the frame goes back for the next consumer.
            Err(e) => {
                tracing::debug!(error = %e, "transport closed before the frame was published");
                return requeue(&rt.counters, &delivery).await;
            }
        };
        dead_letter_frame(&rt, &delivery, reason, error).await
    }

    async fn refuse(
        rt: Arc<Runtime<T, Self>>,
        delivery: Arc<Delivery>,
        refusal: Refusal,
    ) -> Verdict {
        let reason = match refusal {
            Refusal::Oversized { .. } => DeadLetterReason::Oversized,
            Refusal::DeliveryLimit { .. } => DeadLetterReason::DeliveryLimit,
        };
        dead_letter_frame(&rt, &delivery, reason, refusal.to_string()).await
    }
}

async fn dead_letter_frame<T: Transport>(
    rt: &Runtime<T, FramePolicy>,
    delivery: &Delivery,
    reason: DeadLetterReason,
    error: String,
) -> Verdict {
    let dead = DeadLetter {
        reason,
        error,
        attempts: 1,
    };
    crate::consumer::dead_letter(rt, delivery, dead, &rt.policy.counters.dead_lettered, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_skips_oversized_ones() {
        let mut s = FrameSplitter::new(4);
        let out = s.push(&[1, 2, 0, 0, 9, 9, 9, 9, 9, 9, 0, 3]);
        assert_eq!(
            out,
            vec![Ok(vec![1, 2]), Err(FrameError::Oversized { len: 6 })]
        );
        assert_eq!(s.push(&[4, 0]), vec![Ok(vec![3, 4])]);
        assert_eq!(s.push(&[5]), vec![]);
        assert_eq!(s.finish(), Some(FrameError::Truncated));
        assert_eq!(s.finish(), None);
    }
}
