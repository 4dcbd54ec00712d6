//! The one handler table: wire type names to type-erased handlers.
//!
//! A handler is stored as a function that decodes a payload into its message type and starts
//! the handler's future. The table is generic over what a handler produces (`()` for a
//! worker's handlers, the reply's JSON for an RPC server's) and over what each entry carries
//! beside it (a worker's default retry policy, an RPC reply's type name).
//!
//! Only a registered type's payload is ever decoded, and only into that type. A payload's
//! nesting was bounded by core when the envelope was read, so the typed decode runs without
//! serde_json's own recursion limit (128, which would otherwise cut core's default payload
//! depth short).

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::catch_unwind::panic_message;
use crate::core::envelope::Text;
use crate::core::retry::Outcome;
use crate::delivery::Delivery;

/// Why a handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerErrorKind {
    /// May succeed later (timeout, unavailable dependency): retried per the retry policy.
    Transient,
    /// Will never succeed: dead-lettered at once with the reason `rejected`.
    Rejected,
}

/// The error a handler returns: transient (retried) or rejected (dead-lettered), with a
/// message that ends up in the `x-lepus-error` header when the message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    kind: HandlerErrorKind,
    message: String,
}

impl HandlerError {
    /// A failure that may succeed later: the message is retried per its policy.
    pub fn transient(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Transient,
            message: message.to_string(),
        }
    }

    /// A permanent failure: the message is dead-lettered at once.
    pub fn rejected(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Rejected,
            message: message.to_string(),
        }
    }

    /// Transient or rejected.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }

    /// The handler's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The retry outcome this error stands for.
    pub fn outcome(&self) -> Outcome {
        match self.kind {
            HandlerErrorKind::Transient => Outcome::Transient,
            HandlerErrorKind::Rejected => Outcome::Rejected,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            HandlerErrorKind::Transient => write!(f, "transient failure: {}", self.message),
            HandlerErrorKind::Rejected => write!(f, "rejected: {}", self.message),
        }
    }
}

impl std::error::Error for HandlerError {}

/// What a handler knows about the delivery it handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The message id property (stays the same across retries).
    pub message_id: Option<String>,
    /// The wire type name (`className`).
    pub message_type: &'static str,
    /// Which attempt this is: `retryCount + 1` (1 on the first delivery).
    pub attempt: u32,
    /// True when the broker delivered this very message before (e.g. after a consumer died
    /// without acknowledging it): the handler may have run on it already.
    pub redelivered: bool,
    /// The routing key the message was first published with (kept across retries).
    pub routing_key: String,
    /// The queue the message was consumed from.
    pub queue: String,
    /// Correlation id of an RPC request, if any.
    pub correlation_id: Option<String>,
    /// Where an RPC reply goes (`reply_to`, else the envelope's `response_queue`), if any.
    pub reply_to: Option<String>,
}

/// A message's payload as the JSON text it arrived in, undecoded: what a handler registered
/// with [`crate::Registry::register_raw`] is given. The envelope around it was read and
/// checked as for any handler (type, retry fields, nesting depth); the payload's bytes are
/// exactly the envelope's `payload` value, not copied: they stay in the delivery's body,
/// which the payload keeps alive.
#[derive(Clone)]
pub struct RawPayload {
    bytes: PayloadBytes,
}

/// Where a [`RawPayload`]'s bytes are.
#[derive(Clone)]
enum PayloadBytes {
    /// A span of a delivery's body.
    InDelivery {
        delivery: Arc<Delivery>,
        span: core::ops::Range<usize>,
    },
    /// A copy (a payload from elsewhere than a delivery's body).
    Owned(Vec<u8>),
}

impl RawPayload {
    /// The payload `bytes`, kept in `delivery`'s body when they are a span of it, else copied.
    fn new(bytes: &[u8], delivery: Option<&Arc<Delivery>>) -> Self {
        let bytes = match delivery.and_then(|d| span_in(&d.body, bytes).map(|s| (d, s))) {
            Some((delivery, span)) => PayloadBytes::InDelivery {
                delivery: Arc::clone(delivery),
                span,
            },
            None => PayloadBytes::Owned(bytes.to_vec()),
        };
        RawPayload { bytes }
    }

    /// The payload's JSON text, as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.bytes {
            PayloadBytes::InDelivery { delivery, span } => {
                delivery.body.get(span.clone()).unwrap_or_default()
            }
            PayloadBytes::Owned(bytes) => bytes,
        }
    }

    /// The payload's JSON text, as bytes, owned (a copy, unless the payload was one already).
    pub fn into_bytes(self) -> Vec<u8> {
        match self.bytes {
            PayloadBytes::Owned(bytes) => bytes,
            in_delivery => RawPayload { bytes: in_delivery }.as_bytes().to_vec(),
        }
    }

    /// The payload's JSON text.
    ///
    /// # Errors
    /// The bytes are not UTF-8 (they are not checked before this call).
    pub fn as_str(&self) -> Result<&str, core::str::Utf8Error> {
        core::str::from_utf8(self.as_bytes())
    }

    /// Decodes the payload into `P` with serde_json, as a typed handler's payload is decoded.
    ///
    /// # Errors
    /// A [rejected](HandlerErrorKind::Rejected) error when it does not decode (the message is
    /// then dead-lettered if the handler returns it).
    pub fn decode<P: DeserializeOwned>(&self) -> Result<P, HandlerError> {
        decode_payload(self.as_bytes())
            .map_err(|e| HandlerError::rejected(format!("payload does not decode: {e}")))
    }
}

impl fmt::Debug for RawPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawPayload")
            .field(&String::from_utf8_lossy(self.as_bytes()))
            .finish()
    }
}

impl PartialEq for RawPayload {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for RawPayload {}

/// Where `part` lies in `whole`, when it is a span of it (the same bytes, not equal ones).
fn span_in(whole: &[u8], part: &[u8]) -> Option<core::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    let span = whole.get(start..end)?;
    core::ptr::eq(span.as_ptr(), part.as_ptr()).then_some(start..end)
}

/// The future a handler returns, boxed.
pub(crate) type HandlerFuture<O> = Pin<Box<dyn Future<Output = Result<O, HandlerError>> + Send>>;

/// Decodes a payload and starts the handler; a payload that does not decode is the decode
/// error's text.
type Start<O> = dyn Fn(&[u8], Context) -> Result<HandlerFuture<O>, String> + Send + Sync;

/// Starts a handler that takes its payload undecoded.
type RawStart<O> = dyn Fn(RawPayload, Context) -> HandlerFuture<O> + Send + Sync;

/// How an entry starts its handler.
enum Starter<O> {
    /// From the payload's bytes (decoding them, or not).
    Bytes(Arc<Start<O>>),
    /// From a [`RawPayload`], kept in the delivery when there is one.
    Raw(Arc<RawStart<O>>),
}

/// One registered type.
pub(crate) struct Entry<O, M> {
    /// The wire type name.
    pub(crate) type_name: &'static str,
    /// What the service keeps beside the handler.
    pub(crate) meta: M,
    start: Starter<O>,
}

impl<O, M> Entry<O, M> {
    /// Decodes `payload` (exactly the envelope's payload bytes, a span of `delivery`'s body
    /// when there is a delivery) and starts the handler. A panic while decoding or starting (a
    /// user `Deserialize` impl) is an error, not a crash.
    pub(crate) fn start(
        &self,
        payload: &[u8],
        delivery: Option<&Arc<Delivery>>,
        ctx: Context,
    ) -> Result<HandlerFuture<O>, String> {
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| match &self.start {
            Starter::Bytes(start) => start(payload, ctx),
            Starter::Raw(start) => Ok(start(RawPayload::new(payload, delivery), ctx)),
        }));
        match started {
            Ok(started) => started,
            Err(panic) => Err(format!(
                "decoding panicked: {}",
                panic_message(panic.as_ref())
            )),
        }
    }
}

/// Wire type names to handlers.
pub(crate) struct HandlerTable<O, M> {
    entries: HashMap<&'static str, Entry<O, M>>,
}

impl<O, M> Default for HandlerTable<O, M> {
    fn default() -> Self {
        HandlerTable {
            entries: HashMap::new(),
        }
    }
}

impl<O: 'static, M> HandlerTable<O, M> {
    /// Registers `handler` for messages of type `P` under `type_name`, replacing an earlier
    /// one; `finish` turns the handler's output into `O`.
    pub(crate) fn insert<P, F, Fut, R>(
        &mut self,
        type_name: &'static str,
        meta: M,
        handler: F,
        finish: fn(R) -> Result<O, HandlerError>,
    ) where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Send + 'static,
    {
        let handler = Arc::new(handler);
        let start = move |payload: &[u8], ctx: Context| -> Result<HandlerFuture<O>, String> {
            let message: P = decode_payload(payload)?;
            let handler = Arc::clone(&handler);
            Ok(Box::pin(
                async move { finish(handler(message, ctx).await?) },
            ))
        };
        self.entries.insert(
            type_name,
            Entry {
                type_name,
                meta,
                start: Starter::Bytes(Arc::new(start)),
            },
        );
    }

    /// Registers `handler` under `type_name`, given the payload undecoded ([`RawPayload`]).
    pub(crate) fn insert_raw<F, Fut>(&mut self, type_name: &'static str, meta: M, handler: F)
    where
        F: Fn(RawPayload, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    {
        let start = move |payload: RawPayload, ctx: Context| -> HandlerFuture<O> {
            Box::pin(handler(payload, ctx))
        };
        self.entries.insert(
            type_name,
            Entry {
                type_name,
                meta,
                start: Starter::Raw(Arc::new(start)),
            },
        );
    }

    /// Registers a handler that decodes its payload itself (`start`), under `type_name`.
    pub(crate) fn insert_start(
        &mut self,
        type_name: &'static str,
        meta: M,
        start: impl Fn(&[u8], Context) -> Result<HandlerFuture<O>, String> + Send + Sync + 'static,
    ) {
        self.entries.insert(
            type_name,
            Entry {
                type_name,
                meta,
                start: Starter::Bytes(Arc::new(start)),
            },
        );
    }

    /// Looks up a `className` as read from an envelope (possibly still JSON-escaped, as PHP
    /// writes namespaced class names).
    pub(crate) fn lookup(&self, class_name: &Text<'_>) -> Option<&Entry<O, M>> {
        match class_name.as_plain() {
            Some(name) => self.entries.get(name),
            None => self.entries.get(class_name.to_string().as_str()),
        }
    }

    /// The entry of `type_name`.
    pub(crate) fn get(&self, type_name: &str) -> Option<&Entry<O, M>> {
        self.entries.get(type_name)
    }

    /// The registered type names, in no particular order.
    pub(crate) fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.keys().copied()
    }

    /// Number of registered types.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Decodes a payload span with serde_json, without its recursion limit (core bounded the
/// nesting already, see the module docs).
pub(crate) fn decode_payload<P: DeserializeOwned>(payload: &[u8]) -> Result<P, String> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    de.disable_recursion_limit();
    let value = P::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Acknowledge, SettleFuture, Settlement};

    struct NoAcks;

    impl Acknowledge for NoAcks {
        fn settle(&self, _tag: u64, _settlement: Settlement) -> SettleFuture<'_> {
            Box::pin(std::future::ready(Ok(true)))
        }
    }

    /// A raw payload that is a span of the delivery's body keeps the body (no copy); equal
    /// bytes from elsewhere, or no delivery, are copied.
    #[test]
    fn a_raw_payload_stays_in_its_delivery() {
        let body = br#"{"payload":{"n":1},"metadata":{"className":"T"}}"#.to_vec();
        let delivery = Arc::new(Delivery::new(body, 1, Arc::new(NoAcks)));
        let payload = delivery.body.get(11..18).unwrap();
        assert_eq!(payload, br#"{"n":1}"#);

        let shared = RawPayload::new(payload, Some(&delivery));
        assert!(
            matches!(&shared.bytes, PayloadBytes::InDelivery { span, .. } if *span == (11..18))
        );
        assert_eq!(shared.as_bytes(), payload);
        assert_eq!(
            Arc::strong_count(&delivery),
            2,
            "the payload holds the delivery"
        );

        let elsewhere = payload.to_vec();
        let copied = RawPayload::new(&elsewhere, Some(&delivery));
        assert!(matches!(copied.bytes, PayloadBytes::Owned(_)));
        assert_eq!(copied, shared, "equal bytes");
        assert!(matches!(
            RawPayload::new(payload, None).bytes,
            PayloadBytes::Owned(_)
        ));
        assert_eq!(shared.into_bytes(), br#"{"n":1}"#);
        assert_eq!(Arc::strong_count(&delivery), 1);
    }
}
