//! The consumer runtime: the one consume loop under [`crate::Worker`] and
//! [`crate::RpcServer`].
//!
//! It owns what every consumer of a queue needs, so that each service only says what a
//! delivery means (its *policy*):
//!
//! - **Concurrency and prefetch**: at most [`ConsumerConfig::concurrency`] deliveries are
//!   handled at once, each in a task of its own; a handler slot is taken before the next
//!   delivery is read, so the prefetch ([`ConsumerConfig::prefetch`]) is never outrun.
//! - **Checks before any handler**: a body over [`ConsumerConfig::max_body`] and a delivery
//!   past the queue's delivery limit (a message that crashed or hung its consumers, see
//!   [`crate::core::redelivery`]) are refused (the policy dead-letters them or answers with
//!   an error); a redelivery from a classic queue is published again with its count first.
//! - **Handler runs**: panics are caught and the handler timeout
//!   ([`ConsumerConfig::handler_timeout`]) applies, the same way for every service.
//! - **Acknowledgements**: batched through core's [`crate::core::AckWindow`] (one
//!   `basic.ack` with `multiple` per batch); a delivery is acknowledged only once its policy
//!   says its work is done.
//! - **Shutdown**: stop consuming, give back the deliveries not started (as counted copies, so
//!   that restarts do not count towards the delivery limit), let running handlers finish up to
//!   [`ConsumerConfig::shutdown_timeout`], requeue what is left, flush the acks.
//! - **Holding**: a service may hold a delivery over its type's limits (rate, concurrency,
//!   see [`crate::Limits`]) before its handler starts; the held delivery gives its handler
//!   slot up while it waits (keeping its prefetch slot) and is given back at shutdown like
//!   one never started.
//! - **Counters** ([`ConsumerStats`], and the same as [`crate::metrics`] with the `metrics`
//!   feature) and one `lepus.message` span per delivery, which continues the message's trace
//!   ([`crate::trace`]).
//!
//! One consumer per channel is assumed (a multiple ack covers the whole channel), and the
//! loop polls [`crate::Subscription::next`] alongside finished handlers and the ack timer, so
//! a transport's `next` must be cancel-safe.

mod acks;
mod config;
mod counters;
mod dead_letter;
mod hold;
mod run;
mod runtime;

pub use config::{ConsumerConfig, MAX_PAYLOAD_DEPTH};
pub use counters::ConsumerStats;

pub(crate) use acks::Verdict;
pub(crate) use counters::{bump, Counters};
pub(crate) use dead_letter::{dead_letter, origin, repeat_follow_up, DeadLetter};
pub(crate) use hold::{Admission, Slot, TypeLimit};
pub(crate) use run::{run_handler, HandlerRun};
pub(crate) use runtime::{
    give_back_held, note_settle_error, requeue, serve, Policy, Refusal, Runtime,
};
