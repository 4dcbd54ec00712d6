//! Placeholder: filled in by the routing benchmark work.
fn main() {}
