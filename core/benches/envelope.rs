//! Placeholder: filled in by the envelope benchmark work.
fn main() {}
