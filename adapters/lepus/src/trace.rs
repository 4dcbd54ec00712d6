//! Traces across processes: W3C Trace Context (`traceparent`, `tracestate`) in the AMQP
//! headers of every message, so one trace shows a web request, its tasks, their retries, the
//! follow-up tasks and the RPC calls, whichever process handles them.
//!
//! - **Publish** ([`crate::Publisher`]'s sends, delayed ones included, [`crate::RpcClient`]'s
//!   requests, the gateway's messages, the scheduler's ticks): the message carries the *current* context as its
//!   parent (see [`TraceContext::current`]), or a new trace (random ids) when there is none.
//!   A `traceparent` set explicitly in [`crate::SendOptions::header`] is kept as it is.
//! - **Receive** (the consumer runtime under the worker, the RPC server and the gateway): the
//!   `lepus.message` span continues the message's trace: a child of its `traceparent` (new
//!   span id, same trace id, same flags and `tracestate`), recorded as the span fields
//!   `trace_id`, `span_id` and `parent_span_id`. The handler runs inside that context, so
//!   whatever it publishes continues the same trace. A missing or malformed `traceparent`
//!   (wrong length, uppercase, all-zero ids; see [`crate::core::traceparent`]) is ignored:
//!   the delivery starts a new trace and is handled as usual, never refused.
//! - **Kept**: a retry copy and a dead letter carry the handling span as their parent (same
//!   trace id); a delayed message keeps its headers through the delay levels; a message
//!   given back at shutdown keeps its own.
//!
//! With only `tracing`, the context lives in a task-local scope set by the runtime around a
//! delivery's processing: [`TraceContext::scope`] sets one around your own futures (a web
//! request that publishes tasks), and a task you spawn from a handler needs
//! `TraceContext::current()` carried into it the same way. With the `opentelemetry` feature
//! (and a `tracing-opentelemetry` layer installed), the OpenTelemetry context of the current
//! `tracing` span comes first: publishes inject it, and the `lepus.message` span gets the
//! message's parent set on it (`OpenTelemetrySpanExt::set_parent`).
//!
//! Span fields follow OpenTelemetry's messaging semantic conventions: `messaging.system`
//! (`rabbitmq`), `messaging.operation.type` (`publish`, `receive`, `process`),
//! `messaging.destination.name` (the exchange), `messaging.rabbitmq.destination.routing_key`,
//! `messaging.message.id`, `messaging.message.conversation_id` (the correlation id), and
//! `otel.name` / `otel.kind` for OpenTelemetry exporters.

use core::future::Future;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::core::traceparent::{SpanId, TraceId, TraceParent, TRACEPARENT_LEN};
use crate::properties::{HeaderValue, Headers};

/// Header: the W3C `traceparent` (`00-<trace id>-<parent span id>-<flags>`).
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header: the W3C `tracestate`, vendor data carried along unchanged.
pub const HEADER_TRACESTATE: &str = "tracestate";
/// Longest `tracestate` carried along, in bytes (the spec's 32 members of at most 256
/// characters are more; it lets a vendor cut to 512). A longer or non-text one is dropped.
pub const MAX_TRACESTATE: usize = 512;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// One span's place in a trace: its trace id, its own span id, the span id of its parent
/// (when it has one), the trace flags and the vendors' `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    flags: u8,
    state: Option<Arc<str>>,
}

impl TraceContext {
    /// The root of a new trace: random trace and span ids, sampled, no parent.
    pub fn new_root() -> Self {
        let a = random_u64().to_be_bytes();
        let b = random_u64().to_be_bytes();
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&a);
        trace[8..].copy_from_slice(&b);
        TraceContext {
            trace_id: TraceId(trace),
            span_id: new_span_id(),
            parent_id: None,
            flags: TraceParent::SAMPLED,
            state: None,
        }
    }

    /// A span in this trace whose parent is this span: a new span id, the same trace id,
    /// flags and `tracestate`.
    #[must_use]
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id,
            span_id: new_span_id(),
            parent_id: Some(self.span_id),
            flags: self.flags,
            state: self.state.clone(),
        }
    }

    /// The sender's context read from a message's headers: the span of its `traceparent`
    /// (and its `tracestate`), or `None` when the header is missing or malformed (then the
    /// receiver starts a trace of its own). Never panics.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        let parent = match headers.get(HEADER_TRACEPARENT)? {
            HeaderValue::Str(s) => s.as_bytes(),
            HeaderValue::Bytes(b) => b,
            _ => return None,
        };
        let state = headers.get(HEADER_TRACESTATE).and_then(HeaderValue::as_str);
        Self::from_header_values(parent, state)
    }

    /// A context from the two headers' values: `traceparent` as a string or bytes (what
    /// [`TraceContext::from_headers`] accepts), `tracestate` when it is a string.
    pub(crate) fn from_header_values(traceparent: &[u8], tracestate: Option<&str>) -> Option<Self> {
        let parent = TraceParent::parse(core::str::from_utf8(traceparent).ok()?).ok()?;
        Some(TraceContext::from_traceparent(parent, tracestate))
    }

    /// A context from a parsed `traceparent` and an optional `tracestate`: the span the
    /// header names.
    pub fn from_traceparent(parent: TraceParent, tracestate: Option<&str>) -> Self {
        TraceContext {
            trace_id: parent.trace_id,
            span_id: parent.parent_id,
            parent_id: None,
            flags: parent.flags,
            state: tracestate.filter(|s| is_tracestate(s)).map(Arc::from),
        }
    }

    /// Writes `traceparent` (this span as the parent) and `tracestate` into `headers`,
    /// replacing what was there.
    pub fn inject(&self, headers: &mut Headers) {
        let mut out = [0u8; TRACEPARENT_LEN];
        let text = self.traceparent().write(&mut out).to_owned();
        headers.insert(HEADER_TRACEPARENT.to_owned(), HeaderValue::Str(text));
        match &self.state {
            Some(state) => {
                headers.insert(
                    HEADER_TRACESTATE.to_owned(),
                    HeaderValue::Str(state.to_string()),
                );
            }
            None => {
                headers.remove(HEADER_TRACESTATE);
            }
        }
    }

    /// The `traceparent` that names this span as the parent.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent::new(self.trace_id, self.span_id, self.flags)
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The parent span's id, if this span has a parent.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The vendors' `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The context publishes continue: the OpenTelemetry context of the current `tracing`
    /// span (feature `opentelemetry`, when it is valid), else the one set by
    /// [`TraceContext::scope`] (as the runtime does around every delivery), else `None`.
    pub fn current() -> Option<Self> {
        #[cfg(feature = "opentelemetry")]
        if let Some(cx) = otel::current() {
            return Some(cx);
        }
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `future` with this context as the current one (see [`TraceContext::current`]):
    /// what it publishes carries this span as the parent.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// Runs `f` with this context as the current one.
    pub fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

/// A `tracestate` worth carrying: text of at most [`MAX_TRACESTATE`] bytes, printable ASCII.
fn is_tracestate(s: &str) -> bool {
    s.len() <= MAX_TRACESTATE && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A random, non-zero span id.
fn new_span_id() -> SpanId {
    SpanId(random_u64().to_be_bytes())
}

/// A random non-zero `u64`: SplitMix64 of a counter from a seed drawn once per process
/// (SipHash under the process's random keys of the time and the process id). Ids need
/// spread and no repeats, not secrecy: SplitMix64's output function is a bijection, so no
/// two calls in a process return the same value before 2^64 of them; no random number crate
/// in the tree. One SipHash per call cost about 350 instructions a delivery.
fn random_u64() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let seed = *SEED.get_or_init(|| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    splitmix64(seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))).max(1)
}

/// SplitMix64's output function (Steele, Lea, Flood 2014).
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The context a publish carries as its parent: a child of the current one (the publish
/// span), or the root of a new trace.
pub(crate) fn for_publish() -> TraceContext {
    // An OpenTelemetry span is the publish span itself: its ids are the parent.
    #[cfg(feature = "opentelemetry")]
    if let Some(cx) = otel::current() {
        return cx;
    }
    CURRENT
        .try_with(TraceContext::child)
        .unwrap_or_else(|_| TraceContext::new_root())
}

/// Writes the publish context into `headers`, replacing what was there: a follow-up (retry
/// copy, dead letter) of the delivery being handled has the handling span as its parent.
pub(crate) fn inject_follow_up(headers: &mut Headers) {
    for_publish().inject(headers);
}

/// Writes the publish context into `headers` unless they carry a valid `traceparent`
/// already (set by the caller); returns the context written or kept.
pub(crate) fn inject_publish(headers: &mut Headers) -> TraceContext {
    if let Some(given) = TraceContext::from_headers(headers) {
        return given;
    }
    let cx = for_publish();
    cx.inject(headers);
    cx
}

/// The context of a delivery's processing, from its `traceparent` and `tracestate` headers
/// (read in place: a delivery from RabbitMQ does not convert its headers for them): a child
/// of the message's `traceparent`, or a new root when it has none (or a malformed one). With
/// `opentelemetry`, the parent is set on `span` and the context is the OpenTelemetry span's
/// own when it has one.
pub(crate) fn for_delivery(
    traceparent: Option<&[u8]>,
    tracestate: Option<&str>,
    span: &tracing::Span,
) -> TraceContext {
    let remote =
        traceparent.and_then(|parent| TraceContext::from_header_values(parent, tracestate));
    #[cfg(feature = "opentelemetry")]
    if let Some(cx) = otel::set_parent(span, remote.as_ref()) {
        return cx;
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = span;
    remote.map_or_else(TraceContext::new_root, |r| r.child())
}

/// Links a new `lepus.publish` span with the scope's context (feature `opentelemetry`: a
/// publish inside [`TraceContext::scope`] but outside any OpenTelemetry span).
pub(crate) fn adopt_scope(span: &tracing::Span) {
    #[cfg(feature = "opentelemetry")]
    otel::adopt_scope(span);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = span;
}

/// Records `trace_id`, `span_id` and `parent_span_id` of `cx` on `span` (fields declared
/// empty).
pub(crate) fn record(span: &tracing::Span, cx: &TraceContext) {
    span.record("trace_id", tracing::field::display(cx.trace_id));
    span.record("span_id", tracing::field::display(cx.span_id));
    if let Some(parent) = cx.parent_id {
        span.record("parent_span_id", tracing::field::display(parent));
    }
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
        TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{SpanId, TraceContext, TraceId};

    fn from_span_context(sc: &SpanContext, parent: Option<SpanId>) -> Option<TraceContext> {
        if !sc.is_valid() {
            return None;
        }
        let header = sc.trace_state().header();
        Some(TraceContext {
            trace_id: TraceId(sc.trace_id().to_bytes()),
            span_id: SpanId(sc.span_id().to_bytes()),
            parent_id: parent,
            flags: sc.trace_flags().to_u8(),
            state: Some(header)
                .filter(|h| !h.is_empty() && super::is_tracestate(h))
                .map(std::sync::Arc::from),
        })
    }

    /// The OpenTelemetry context of the current `tracing` span, when valid.
    pub(super) fn current() -> Option<TraceContext> {
        let cx = tracing::Span::current().context();
        from_span_context(cx.span().span_context(), None)
    }

    /// A publish span with no OpenTelemetry parent continues the scope's context
    /// ([`TraceContext::scope`]) instead of starting a trace of its own.
    pub(super) fn adopt_scope(span: &tracing::Span) {
        if current().is_some() {
            return;
        }
        if let Ok(cx) = super::CURRENT.try_with(Clone::clone) {
            set_parent(span, Some(&cx));
        }
    }

    /// Sets the message's context as the parent of `span`; the span's own context after.
    pub(super) fn set_parent(
        span: &tracing::Span,
        remote: Option<&TraceContext>,
    ) -> Option<TraceContext> {
        if let Some(remote) = remote {
            let state = remote
                .tracestate()
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default();
            let sc = SpanContext::new(
                OtelTraceId::from_bytes(remote.trace_id.0),
                OtelSpanId::from_bytes(remote.span_id.0),
                TraceFlags::new(remote.flags),
                true,
                state,
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
        }
        let own = span.context();
        from_span_context(own.span().span_context(), remote.map(|r| r.span_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn read_and_continue_a_traceparent() {
        let mut headers = Headers::new();
        headers.insert(HEADER_TRACEPARENT.into(), GOOD.into());
        headers.insert(HEADER_TRACESTATE.into(), "congo=t61rcWkgMzE".into());
        let remote = TraceContext::from_headers(&headers).expect("valid");
        assert_eq!(remote.trace_id().to_string(), &GOOD[3..35]);
        let child = remote.child();
        assert_eq!(child.trace_id(), remote.trace_id());
        assert_eq!(child.parent_id(), Some(remote.span_id()));
        assert_ne!(child.span_id(), remote.span_id());
        let mut out = Headers::new();
        child.inject(&mut out);
        let again = TraceContext::from_headers(&out).expect("written back");
        assert_eq!(again.trace_id(), remote.trace_id());
        assert_eq!(again.span_id(), child.span_id());
        assert_eq!(again.tracestate(), Some("congo=t61rcWkgMzE"));
    }

    struct NoAcks;

    impl crate::Acknowledge for NoAcks {
        fn settle(&self, _: u64, _: crate::Settlement) -> crate::SettleFuture<'_> {
            Box::pin(async { Ok(true) })
        }
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            HeaderValue::Str(GOOD.to_uppercase()),
            HeaderValue::Str(String::new()),
            HeaderValue::Str("00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()),
            HeaderValue::Int(7),
            HeaderValue::Bytes(vec![0xff; 55]),
        ] {
            let mut headers = Headers::new();
            headers.insert(HEADER_TRACEPARENT.into(), bad.clone());
            assert!(TraceContext::from_headers(&headers).is_none(), "{bad:?}");
            let delivery = crate::Delivery::new(Vec::new(), 1, std::sync::Arc::new(NoAcks))
                .with_properties(crate::Properties {
                    headers,
                    ..crate::Properties::default()
                });
            let cx = for_delivery(
                delivery.header_bytes(HEADER_TRACEPARENT),
                delivery.header_str(HEADER_TRACESTATE),
                &tracing::Span::none(),
            );
            assert!(!cx.trace_id().is_zero() && cx.parent_id().is_none());
        }
    }

    #[test]
    fn roots_are_random_and_valid() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id(), b.trace_id());
        assert!(!a.trace_id().is_zero() && !a.span_id().is_zero());
    }

    #[tokio::test]
    async fn publishes_continue_the_scope() {
        let root = TraceContext::new_root();
        let inside = root
            .clone()
            .scope(async {
                let mut headers = Headers::new();
                inject_publish(&mut headers)
            })
            .await;
        assert_eq!(inside.trace_id(), root.trace_id());
        assert_eq!(inside.parent_id(), Some(root.span_id()));
        assert!(TraceContext::current().is_none());
    }
}
