//! # lepus-core
//!
//! The allocation-free heart of Lepus, a toolkit for asynchronous tasks and RPC over RabbitMQ.
//! Firmware links it to produce messages; the std adapters (`lepus`) use the very same code.
//!
//! - [`envelope`]: the talk's JSON wire format (`{"payload": ..., "metadata": ...}`) and a
//!   compact postcard form, encoded into and decoded from caller buffers.
//! - [`retry`]: the retry state machine: metadata + outcome -> ack, retry after a delay, or
//!   dead-letter with a reason.
//! - [`delay`]: delays of any length on a fixed set of level queues: the routing-key
//!   arithmetic (delay <-> binary key, next level) and the binding patterns.
//! - [`topic`]: AMQP topic matching with RabbitMQ's exact semantics, and a trie router.
//! - [`exchange`]: direct, fanout, topic and headers exchange routing.
//! - [`ack`]: when a batched `basic.ack` with `multiple` is safe (at-least-once kept).
//! - [`correlation`]: the RPC correlation table: pending requests by correlation id,
//!   deadlines, scatter-gather.
//! - [`rate`]: rate limits: a token bucket that says when the next start may happen.
//! - [`schedule`]: periodic ticks: which are due at `now`, the missed-tick policy.
//! - [`traceparent`]: the W3C Trace Context `traceparent` header, parsed and written.
//!
//! Guarantees: `#![no_std]`, no `alloc`, no `unsafe`. No function panics on any input; a
//! value that does not fit a fixed capacity is an error that names what is full. The crate
//! reads no clock and no random number generator: callers pass `now` and random numbers in.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ack;
pub mod correlation;
pub mod delay;
pub mod envelope;
pub mod exchange;
pub mod headers;
pub mod rate;
pub mod redelivery;
pub mod retry;
pub mod router;
pub mod schedule;
pub mod topic;
pub mod traceparent;

pub use ack::{AckError, AckPolicy, AckWindow};
pub use correlation::{PendingArray, PendingRequests};
pub use envelope::{
    decode_json, decode_json_raw, decode_json_raw_with, decode_json_with, decode_json_with_scratch,
    decode_postcard, decode_postcard_cobs, decode_postcard_raw, encode_json, encode_json_raw,
    encode_postcard, encode_postcard_cobs, encode_postcard_raw, rewrite_json, rewrite_json_with,
    DecodeLimits, Envelope, Metadata, MetadataEdits, RawEnvelope, Text,
};
pub use exchange::{Exchange, ExchangeError, ExchangeKind, Routing};
pub use headers::{FieldValue, HeadersError, XMatch};
pub use rate::{Rate, RateError, Take, TokenBucket};
pub use redelivery::{DeliveryInfo, Redelivery};
pub use retry::{decide, DeadLetterReason, Decision, Outcome, RetryMetadata};
pub use router::{BindError, RouteError, TopicRouter};
pub use schedule::{Due, Every, Missed, Ticks};
pub use topic::TopicError;
pub use traceparent::{SpanId, TraceId, TraceParent, TraceParentError};
