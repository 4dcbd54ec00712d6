//! Integration tests across the Lepus crates live in `tests/tests/`; this library holds
//! what they share.

pub mod chaos;
pub mod proxy;
pub mod rpc_chaos;
