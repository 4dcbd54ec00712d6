//! # lepus
//!
//! Std adapters of Lepus. The publisher, workers, RPC and the in-process broker land here;
//! today the crate re-exports the allocation-free core.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use lepus_core as core;
