//! Random 128-bit correlation ids and their text form.
//!
//! No extra crate: each id hashes a process-wide counter and the current time with std's
//! randomly keyed SipHash ([`std::hash::RandomState`], keyed from the OS at first use),
//! twice with different tags for the two 64-bit halves. Ids are unpredictable to other
//! processes and distinct within one (the counter never repeats a hash input).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new random 128-bit correlation id.
pub fn new_correlation_id() -> u128 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let hi = keys.hash_one((n, nanos, 0x5eed_u16));
    let lo = keys.hash_one((n, nanos, 0xfeed_u16));
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The id as 32 lowercase hex digits (the `correlation_id` property).
pub fn format_correlation_id(id: u128) -> String {
    format!("{id:032x}")
}

/// Parses exactly 32 hex digits; anything else (another client's ids, garbage) is `None`.
/// Never panics.
pub fn parse_correlation_id(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_distinct() {
        let a = new_correlation_id();
        let b = new_correlation_id();
        assert_ne!(a, b);
        assert_eq!(parse_correlation_id(&format_correlation_id(a)), Some(a));
        assert_eq!(parse_correlation_id(&format_correlation_id(1)), Some(1));
        assert_eq!(
            parse_correlation_id("+0000000000000000000000000000001"),
            None
        );
        assert_eq!(parse_correlation_id("xyz"), None);
        assert_eq!(parse_correlation_id(""), None);
    }
}
