//! The lowest layer of the std side: what every other module agrees on. Message ids, the
//! clock, the content type, the `x-lepus-*` header names and the size limits. It imports
//! nothing from the crate but the error type, so transports, the write model and the read
//! model can all use it without importing one another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The content type of every body this crate writes.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Default largest body published (and consumed by a worker or RPC server): 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Largest body of a follow-up publish: a retry copy, a dead letter or a message given back.
///
/// A follow-up carries a message the broker already accepted (plus a few bytes of
/// rewriting), so it is held to RabbitMQ's own default `max_message_size` (128 MiB) rather
/// than to the publisher's limit: a message just under the publisher's limit must still be
/// retried, and an oversized one dead-lettered with its reason, instead of being refused.
pub const MAX_FOLLOW_UP_BODY: usize = 128 * 1024 * 1024;

/// Header: why a message was dead-lettered (`DeadLetterReason::as_str`).
pub const HEADER_REASON: &str = "x-lepus-reason";
/// Header: the handler's (or the check's) error message.
pub const HEADER_ERROR: &str = "x-lepus-error";
/// Header: when it was dead-lettered, Unix milliseconds.
pub const HEADER_FAILED_AT: &str = "x-lepus-failed-at";
/// Header: how many times a handler saw it (`retryCount + 1`; 1 when it never ran).
pub const HEADER_ATTEMPTS: &str = "x-lepus-attempts";
/// Header: the queue it was consumed from.
pub const HEADER_ORIGIN_QUEUE: &str = "x-lepus-origin-queue";
/// Header: the exchange it was first published to (kept across retries).
pub const HEADER_ORIGIN_EXCHANGE: &str = "x-lepus-origin-exchange";
/// Header: the routing key it was first published with (kept across retries).
pub const HEADER_ORIGIN_ROUTING_KEY: &str = "x-lepus-origin-routing-key";

/// `application/json`, any case, optionally with parameters (`; charset=utf-8`).
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE_JSON))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A message id unique across processes in practice: `<pid>-<start nanos>-<counter>`, hex.
pub fn new_message_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}-{:x}-", std::process::id(), nanos)
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Written by hand: `format!` costs several times as much, on every send.
    let mut id = String::with_capacity(prefix.len() + 16);
    id.push_str(prefix);
    let digits = (u64::BITS - count.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev().map(|d| d * 4) {
        id.push(char::from(
            b"0123456789abcdef"[((count >> shift) & 0xf) as usize],
        ));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json(""));
    }

    #[test]
    fn message_ids_are_unique() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
    }

    #[test]
    fn message_ids_end_with_the_counter_in_hex() {
        let ids: Vec<String> = (0..40).map(|_| new_message_id()).collect();
        let prefix = ids[0].rsplit_once('-').unwrap().0;
        let counts: Vec<u64> = ids
            .iter()
            .map(|id| {
                let (p, count) = id.rsplit_once('-').unwrap();
                assert_eq!(p, prefix);
                assert_eq!(count, count.trim_start_matches('0').max("0"), "{id}");
                u64::from_str_radix(count, 16).unwrap()
            })
            .collect();
        // Other tests take ids at the same time: increasing, not consecutive.
        assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
        assert!(counts.iter().any(|&c| c >= 16), "{counts:?}");
    }
}
