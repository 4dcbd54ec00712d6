//! Worker: handling, acks, poison messages, redelivery, shutdown and load, on RabbitMQ and the in-process broker.
//!
//! One test binary per area (each binary links lapin and tokio again); each file a module.

#[macro_use]
#[path = "../support/amqp.rs"]
mod amqp_support;
#[macro_use]
#[path = "../support/worker.rs"]
mod worker_support;

mod acks;
mod edges;
mod follow_ups;
mod handling;
mod limits;
mod load;
mod poison;
mod priority;
mod redelivery;
mod shutdown;
