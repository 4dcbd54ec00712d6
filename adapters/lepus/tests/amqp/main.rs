//! The RabbitMQ transport: connection, publish, consume, topology, routing conformance.
//!
//! One test binary per area (each binary links lapin and tokio again); each file a module.

#[macro_use]
#[path = "../support/amqp.rs"]
mod amqp_support;

mod confirms;
mod connection;
mod consume;
mod publish;
mod routing_conformance;
mod schedule;
#[cfg(feature = "rustls")]
mod tls;
mod topology;
