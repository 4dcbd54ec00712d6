//! The headers of a dead letter, the same for every service on the runtime.

use crate::core::retry::DeadLetterReason;
use crate::delivery::Delivery;
use crate::properties::{HeaderValue, Headers, Properties};
use crate::protocol::{
    now_millis, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_FAILED_AT, HEADER_ORIGIN_EXCHANGE,
    HEADER_ORIGIN_QUEUE, HEADER_ORIGIN_ROUTING_KEY, HEADER_REASON,
};

/// Longest `x-lepus-error` value, in bytes; longer messages are cut at a char boundary.
const MAX_ERROR_HEADER: usize = 4096;

/// The delivery's properties with the `x-lepus-*` headers of a dead letter: why, the error,
/// when, how many attempts, and where it came from (the origin of its first publish, kept
/// across retries).
pub(crate) fn dead_letter_properties(
    delivery: &Delivery,
    queue: &str,
    reason: DeadLetterReason,
    error: String,
    attempts: u32,
) -> Properties {
    let mut properties = delivery.properties.clone();
    let h = &mut properties.headers;
    let exchange = origin(h, HEADER_ORIGIN_EXCHANGE, &delivery.exchange);
    let routing_key = origin(h, HEADER_ORIGIN_ROUTING_KEY, &delivery.routing_key);
    h.insert(HEADER_REASON.into(), reason.as_str().into());
    h.insert(HEADER_ERROR.into(), truncate(error).into());
    h.insert(HEADER_FAILED_AT.into(), HeaderValue::Int(now_millis()));
    h.insert(
        HEADER_ATTEMPTS.into(),
        HeaderValue::Int(i64::from(attempts)),
    );
    h.insert(HEADER_ORIGIN_QUEUE.into(), queue.to_owned().into());
    h.insert(HEADER_ORIGIN_EXCHANGE.into(), exchange.into());
    h.insert(HEADER_ORIGIN_ROUTING_KEY.into(), routing_key.into());
    properties
}

/// The origin recorded in a header by an earlier retry, else the delivery's own.
pub(crate) fn origin(headers: &Headers, key: &str, own: &str) -> String {
    headers
        .get(key)
        .and_then(HeaderValue::as_str)
        .unwrap_or(own)
        .to_owned()
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_HEADER {
        let mut end = MAX_ERROR_HEADER;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_header_is_cut_at_a_char_boundary() {
        let s = "é".repeat(MAX_ERROR_HEADER);
        let t = truncate(s);
        assert!(t.len() <= MAX_ERROR_HEADER && t.len() >= MAX_ERROR_HEADER - 1);
    }
}
