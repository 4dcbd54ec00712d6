//! Asynchronous RPC: request/response and scatter-gather over any [`ReplyTransport`](crate::reply::ReplyTransport)
//! (RabbitMQ or the in-process broker).
//!
//! - [`Request`]: a typed [`Message`](crate::Message) with a typed reply.
//! - [`RpcClient`]: [`call`](RpcClient::call) one request;
//!   [`gather`](RpcClient::gather) several of different types under one deadline (each reply
//!   or its own error); [`start`](RpcClient::start) requests, do other work, await the
//!   [`PendingReply`] futures later (the talk's `sendMultiple` ... `getAsyncResponses`);
//!   [`call_json`](RpcClient::call_json) a request known only by name, its payload and
//!   reply as JSON (`lepus call`).
//! - [`RpcServer`]: typed handlers per request type; replies go to `reply_to` (or the
//!   envelope's `response_queue`) with the request's `correlation_id`.
//!
//! Wire format (standard AMQP RPC): requests carry `reply_to` and `correlation_id` (also
//! written into the envelope's `metadata.response_queue` and `metadata.correlationId`);
//! replies are JSON envelopes whose `className` is [`Request::REPLY_TYPE`]. A failed call
//! carries the header [`HEADER_RPC_ERROR`] (its [`RemoteErrorKind`]) and the envelope
//! `{"payload":{"error":"...","kind":"..."},"metadata":{"className":"LepusRpcError"}}`.
//!
//! Correlation is core's [`PendingRequests`](crate::core::correlation::PendingRequests) table: ids
//! are random 128-bit numbers ([`new_correlation_id`]), written as 32 lowercase hex digits.
//! Unknown, duplicate, late and malformed replies are dropped and counted
//! ([`RpcCounters`]), never handed to another caller.

mod client;
mod correlation;
mod correlator;
mod error;
mod gather;
mod pending;
mod raw;
mod replies;
mod reply_path;
mod request;
mod server;
mod wire;

pub use client::{RpcClient, RpcClientConfig};
pub use correlation::{format_correlation_id, new_correlation_id, parse_correlation_id};
pub use correlator::RpcCounters;
pub use error::{RemoteErrorKind, RpcError};
pub(crate) use gather::join_all;
pub use gather::GatherSet;
/// `#[derive(Request)]`: implements the [trait](trait@Request) from
/// `#[lepus(reply = ReplyType, reply_type = "...")]`; `reply_type` defaults to the last segment
/// of `reply`. Derive [`Message`](trait@crate::Message) as well.
pub use lepus_derive::Request;
pub use pending::PendingReply;
pub use raw::PendingJsonReply;
pub use request::Request;
pub use server::{NoReplyPolicy, RpcServer, RpcServerConfig, RpcServerHandle, RpcServerStats};
pub use wire::{HEADER_RPC_ERROR, RPC_ERROR_TYPE};
