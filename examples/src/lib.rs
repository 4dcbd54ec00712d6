//! Runnable programs a new Lepus user starts from: see `src/bin/`.

pub mod checkout;
pub mod dashboard;
pub mod firmware;
pub mod observe;
pub mod sensor;
