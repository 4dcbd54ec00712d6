//! Interoperability with third-party clients (pika, php-amqplib) on RabbitMQ.
//!
//! One test binary per area (each binary links lapin and tokio again); each file a module.

#[macro_use]
#[path = "../support/amqp.rs"]
mod amqp_support;
#[macro_use]
#[path = "../support/interop.rs"]
mod interop_support;

mod php;
mod pika;
mod pika_rpc;
