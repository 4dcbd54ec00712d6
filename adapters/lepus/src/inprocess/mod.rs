//! The in-process broker: RabbitMQ's semantics without a network, the embedded default
//! transport and what unit tests of handlers run on.
//!
//! [`InProcessBroker`] implements [`crate::Transport`] exactly as [`crate::AmqpTransport`]
//! does (same validation, same errors, same topology: `<queue>.dead`, `<queue>.wait.<ms>`),
//! so a program switches between them by changing one line or `AMQP_ADDR`
//! (see [`crate::connect`]).
//!
//! - `state`: the broker's state machine (no I/O, no clock): exchanges, queues, consumers,
//!   unsettled deliveries, dead-lettering;
//! - `exchange`: bindings and routing, all through `lepus-core`;
//! - `queue`: ready messages, arguments (dead-letter target, TTL), round-robin consumers;
//! - `dead_letter`: the `x-death` header;
//! - `subscription`: [`InProcessSubscription`] and settling deliveries;
//! - `broker`: [`InProcessBroker`], the lock around the state and the expiry timers;
//! - `ledger`: the schedule ledgers ([`crate::ledger`]) and [`InProcessLease`].
//!
//! Capacities (per exchange): see the constants below. Differences from RabbitMQ: nothing
//! is persisted (the broker lives as long as its handles); wait queues never expire (no
//! `x-expires`); there is no dead-letter cycle detection; exchange-to-exchange bindings and
//! per-message TTLs are not supported.

mod broker;
mod dead_letter;
mod exchange;
mod ledger;
mod queue;
mod reply;
mod state;
mod subscription;

pub use broker::InProcessBroker;
pub use exchange::{
    MAX_TABLE_BINDINGS, ROUTE_CHUNK, TOPIC_BINDINGS, TOPIC_EDGES, TOPIC_NODES, TOPIC_WORD_BYTES,
};
pub use ledger::InProcessLease;
pub use lepus_core::exchange::ExchangeKind;
pub use reply::{InProcessReplyReceiver, InProcessRequestSender};
pub use subscription::InProcessSubscription;

pub(crate) use subscription::Acker;
