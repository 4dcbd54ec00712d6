//! # lepus
//!
//! Std adapters of Lepus: the transport layer that moves bytes between the allocation-free
//! core ([`core`]) and a broker.
//!
//! - [`Transport`]: declare topology, publish with confirms (single, pipelined, batch, into a
//!   wait queue, into a dead-letter queue), consume with a prefetch, delete. Implementable
//!   outside this crate: build [`Delivery`]s with [`Delivery::new`] and settle them through
//!   your own [`Acknowledge`].
//! - [`AmqpTransport`]: RabbitMQ through `lapin` 4 on tokio, connected from `AMQP_ADDR`
//!   (feature `amqp`, on by default).
//! - [`InProcessBroker`]: the same semantics inside the process, no network; the default.
//! - [`Broker`] and [`connect`]: the broker `AMQP_ADDR` names, RabbitMQ (`amqp://...`) or the
//!   in-process broker (`memory:`); an unset `AMQP_ADDR` is an error, never a silent choice.
//! - [`topology`]: the queue layout (worker queue, `<queue>.dead`, `<queue>.wait.<ms>`).
//! - [`names`]: validation of names and short strings before they reach the AMQP client.
//! - [`gateway`]: COBS-framed postcard envelopes from devices to RabbitMQ as JSON envelopes.
//! - [`Error`]: one error type around a small [`ErrorKind`].
//! - [`Message`], [`Registry`], [`Publisher`], [`Worker`]: typed messages, their handlers,
//!   the write model and the read model, generic over any [`Transport`].
//! - [`rpc`]: [`RpcClient`] and [`RpcServer`], request/response and scatter-gather over any
//!   [`ReplyTransport`] (direct reply-to by default).
//! - [`Scheduler`]: periodic sends (fixed interval or cron) of a [`Schedule`], run by any
//!   number of replicas while each tick is published once; the election and the record of
//!   ticks are the transports' [`ScheduleLedger`] ([`ledger`]).
//! - [`Host`]: runs workers, RPC servers, gateways, RPC clients and schedulers on one
//!   transport, stops them on one signal (drain, then close the transport), answers health
//!   probes.
//! - [`metrics`]: the metric names (feature `metrics`: emitted through the `metrics` facade).
//! - [`trace`]: W3C trace context (`traceparent`) across processes, and the span fields.
//! - [`serde`]: `deserialize_with` helpers for payload numbers that PHP sends as
//!   strings (`{"userId":"7"}`).
//!
//! Features: `amqp` (default: RabbitMQ through lapin; without it only the in-process broker
//! is built), `rustls` (`amqps://`, a private CA and client certificates: [`amqp::tls`]),
//! `testing` (the `testing` module: broker-or-skip helpers for tests), `opentelemetry`
//! (links [`trace`] with `tracing-opentelemetry`), `metrics` (emits the [`metrics`] through
//! the `metrics` facade).
//!
//! Guarantees: no `unsafe`; invalid names, oversized bodies and over-long properties are
//! errors before anything is sent (the AMQP codec would panic on them); a publish returns only
//! once the broker confirmed it; acknowledgements that had no effect are errors.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Without `amqp` the docs still name the RabbitMQ types; those links render as plain text.
#![cfg_attr(not(feature = "amqp"), allow(rustdoc::broken_intra_doc_links))]

pub use lepus_core as core;

/// The README's Rust code blocks, compiled (and run unless `no_run`) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// `docs/getting-started.md`'s Rust code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/getting-started.md")]
struct GettingStartedDoctests;

// The derives name `::lepus::...`, which must resolve inside this crate too.
extern crate self as lepus;

/// What the derives' expansions name; not an API.
#[doc(hidden)]
pub mod __derive {
    // `::serde`, the crate: `crate::serde` is this crate's helper module.
    pub use ::serde::de::DeserializeOwned;
    pub use ::serde::Serialize;
}

#[cfg(feature = "amqp")]
pub mod amqp;
mod broker;
mod catch_unwind;
pub mod consumer;
pub mod delay;
mod delivery;
mod error;
pub mod events;
pub mod gateway;
mod handlers;
pub mod host;
pub mod inprocess;
pub mod ledger;
mod limits;
mod message;
pub mod metrics;
pub mod names;
mod properties;
mod protocol;
mod publisher;
mod received;
mod registry;
mod reply;
pub mod rpc;
pub mod scheduler;
pub mod serde;
mod signal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topology;
pub mod trace;
mod transport;
mod worker;

#[cfg(feature = "amqp")]
pub use amqp::{AmqpConfig, AmqpLease, AmqpSubscription, AmqpTransport, LOCAL_ADDR};
pub use broker::{
    connect, connect_to, connect_to_within, connect_within, Broker, BrokerReplyReceiver,
    BrokerRequestSender, BrokerSubscription, IN_PROCESS_ADDR,
};
pub use consumer::{ConsumerConfig, ConsumerStats};
pub use delay::Delay;
pub use delivery::{Acknowledge, Delivery, SettleFuture, Settlement};
pub use error::{Error, ErrorKind, NameKind, NameProblem, Result};
pub use handlers::{Context, HandlerError, HandlerErrorKind, RawPayload};
pub use host::{Host, HostReport, Service};
pub use inprocess::{InProcessBroker, InProcessLease, InProcessSubscription};
pub use ledger::{BrokerLease, LedgerLease, ScheduleLedger};
/// `#[derive(Message)]`: implements the [trait](trait@Message) from
/// `#[lepus(routing_key = "...", type = "...", retry = policy_fn)]`; `type` defaults to the
/// type's name, `retry` to [`RetryPolicy::default`].
pub use lepus_derive::Message;
pub use limits::Limits;
pub use message::{Message, RetryPolicy};
pub use properties::{HeaderValue, Headers, Properties};
pub use protocol::{
    is_json, new_message_id, CONTENT_TYPE_JSON, DEFAULT_MAX_PAYLOAD, HEADER_ATTEMPTS, HEADER_ERROR,
    HEADER_FAILED_AT, HEADER_ORIGIN_EXCHANGE, HEADER_ORIGIN_QUEUE, HEADER_ORIGIN_ROUTING_KEY,
    HEADER_REASON, MAX_FOLLOW_UP_BODY,
};
pub use publisher::{encode_raw_envelope, Publisher, SendOptions};
pub use registry::Registry;
pub use reply::{
    ReplyMessage, ReplyMode, ReplyReceiver, ReplyTransport, RequestSender, DIRECT_REPLY_TO,
};
pub use rpc::{Request, RpcClient, RpcClientConfig, RpcError, RpcServer, RpcServerConfig};
pub use scheduler::{Entry, Missed, Schedule, Scheduler, SchedulerHandle, SchedulerStats};
pub use signal::shutdown_signal;
pub use topology::{QueueKind, QueueSpec};
pub use trace::TraceContext;
pub use transport::{Publication, Subscription, Transport};
pub use worker::{Worker, WorkerConfig, WorkerHandle, WorkerStats};
