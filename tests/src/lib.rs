//! Integration tests across the Lepus crates live in `tests/tests/`; this library holds
//! what they share.

pub mod chaos;
pub mod cluster;
pub mod delays;
pub mod proxy;
pub mod rpc_chaos;
