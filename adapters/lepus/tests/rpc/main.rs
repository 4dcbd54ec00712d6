//! RPC: calls, gathers, replies, recovery, shutdown and load.
//!
//! One test binary per area (each binary links lapin and tokio again); each file a module.

#[macro_use]
#[path = "../support/amqp.rs"]
mod amqp_support;
#[macro_use]
#[path = "../support/rpc.rs"]
mod rpc_support;

mod call;
mod host;
mod limits;
mod load;
mod recovery;
mod replies;
mod send;
mod shutdown;
mod traces;
