//! The in-process broker: consume, dead letters, routing, parity with RabbitMQ; the derives;
//! a transport implemented outside the crate.
//!
//! One test binary per area (each binary links lapin and tokio again); each file a module.

#[macro_use]
#[path = "../support/amqp.rs"]
mod amqp_support;

mod consume;
mod custom_transport;
mod dead_letters;
mod derive;
mod events;
mod gateway;
mod layers;
mod parity;
mod routing;
mod schedule;
