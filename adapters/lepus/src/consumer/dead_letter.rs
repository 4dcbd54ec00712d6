//! Dead letters, the same for every service on the runtime: their headers, and moving a
//! delivery to `<queue>.dead`, publishing again with backoff while the broker does not confirm.

use core::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::{note_settle_error, requeue, Counters, Runtime, Verdict};
use crate::core::retry::DeadLetterReason;
use crate::delivery::Delivery;
use crate::error::{ErrorKind, Result};
use crate::events::Field;
use crate::metrics;
use crate::properties::{HeaderValue, Properties};
use crate::protocol::{
    now_millis, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_FAILED_AT, HEADER_ORIGIN_EXCHANGE,
    HEADER_ORIGIN_QUEUE, HEADER_ORIGIN_ROUTING_KEY, HEADER_REASON,
};

/// Longest `x-lepus-error` value, in bytes; longer messages are cut at a char boundary.
const MAX_ERROR_HEADER: usize = 4096;

/// First wait before a follow-up (a retry copy, a dead letter) that failed for a passing
/// reason is published again.
pub(crate) const FOLLOW_UP_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts of a follow-up.
pub(crate) const FOLLOW_UP_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a message is dead-lettered, and what to put in the headers.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub(crate) reason: DeadLetterReason,
    pub(crate) error: String,
    pub(crate) attempts: u32,
}

/// Moves `delivery` to the dead-letter queue of `rt`'s queue with the `x-lepus-*` headers
/// ([`dead_letter_properties`]), publishing again with backoff while the broker does not
/// confirm ([`repeat_follow_up`]: the handler never runs again for it); the delivery is then
/// acked, and `dead_lettered` and the metrics count it. When the transport refuses the dead
/// letter as invalid, the delivery is rejected instead (the queue's own dead-lettering moves it
/// to `<queue>.dead`, without the headers); when the transport is closed, it is requeued.
/// `repeated` counts the repeated publishes, where the service keeps such a counter.
pub(crate) async fn dead_letter<T: crate::transport::Transport, P>(
    rt: &Runtime<T, P>,
    delivery: &Delivery,
    dead: DeadLetter,
    dead_lettered: &AtomicU64,
    repeated: Option<&AtomicU64>,
) -> Verdict {
    let properties =
        dead_letter_properties(delivery, &rt.queue, dead.reason, dead.error, dead.attempts);
    let publish = || {
        rt.transport
            .publish_dead_letter(&rt.queue, &delivery.body, &properties)
    };
    match repeat_follow_up(&rt.counters, repeated, "dead letter", publish).await {
        Ok(()) => {
            super::bump(dead_lettered);
            count_dead_letter(&rt.counters, dead.reason, delivery);
            Verdict::Ack
        }
        Err(e) if e.kind() == ErrorKind::Closed => requeue(&rt.counters, delivery).await,
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter publish refused; rejecting instead");
            match delivery.reject(false).await {
                Ok(()) => {
                    super::bump(dead_lettered);
                    count_dead_letter(&rt.counters, dead.reason, delivery);
                }
                Err(e) => note_settle_error(&rt.counters, &e, "reject"),
            }
            Verdict::Settled
        }
    }
}

/// Publishes a follow-up until it is confirmed, again and again with backoff while it fails
/// for a passing reason (the handler is not run again meanwhile; the runtime aborts this at
/// the end of the shutdown timeout and requeues). Returns the error when the follow-up is
/// refused as invalid (it will never be accepted) or the transport is closed.
pub(crate) async fn repeat_follow_up<F, Fut>(
    counters: &Counters,
    repeated: Option<&AtomicU64>,
    what: &str,
    publish: F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut backoff = FOLLOW_UP_FIRST_BACKOFF;
    loop {
        match publish().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_invalid_input() => return Err(e),
            Err(e) if e.kind() == ErrorKind::Closed => return Err(e),
            Err(e) => {
                match repeated {
                    Some(counter) => counters.bump(counter, metrics::FOLLOW_UPS_REPEATED),
                    None => metrics::count(
                        metrics::FOLLOW_UPS_REPEATED,
                        &[("queue", counters.queue.as_str())],
                    ),
                }
                tracing::warn!(error = %e, ?backoff, "{what} not confirmed; publishing it again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(FOLLOW_UP_MAX_BACKOFF);
            }
        }
    }
}

/// The delivery's properties with the `x-lepus-*` headers of a dead letter: why, the error,
/// when, how many attempts, and where it came from (the origin of its first publish, kept
/// across retries), and the trace context of the handling span (see [`crate::trace`]).
fn dead_letter_properties(
    delivery: &Delivery,
    queue: &str,
    reason: DeadLetterReason,
    error: String,
    attempts: u32,
) -> Properties {
    let exchange = origin(delivery, HEADER_ORIGIN_EXCHANGE, &delivery.exchange);
    let routing_key = origin(delivery, HEADER_ORIGIN_ROUTING_KEY, &delivery.routing_key);
    let mut properties = delivery.properties().clone();
    let h = &mut properties.headers;
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
    // Same trace, the handling span as the parent.
    crate::trace::inject_follow_up(h);
    properties
}

/// Counts a dead letter of the consumer's queue in the metrics, by reason.
fn count_dead_letter(
    counters: &super::Counters,
    reason: DeadLetterReason,
    delivery: &crate::delivery::Delivery,
) {
    counters.event("dead-lettered", |emit| {
        // A producer that sets no `type` property (the talk's PHP one): the envelope's
        // className, when the body is an envelope at all.
        let message_type = delivery.message_type().map(str::to_owned).or_else(|| {
            crate::core::envelope::decode_json_raw(&delivery.body)
                .ok()
                .map(|raw| raw.metadata.class_name.to_string())
        });
        emit(&[
            ("type", Field::Str(message_type.as_deref())),
            ("id", Field::Str(delivery.message_id())),
            ("reason", Field::Str(Some(reason.as_str()))),
        ]);
    });
    let labels = [
        ("queue", counters.queue.as_str()),
        ("reason", reason.as_str()),
    ];
    crate::metrics::count(crate::metrics::MESSAGES_DEAD_LETTERED, &labels);
}

/// The origin recorded in a header by an earlier retry, else the delivery's own.
pub(crate) fn origin(delivery: &Delivery, key: &str, own: &str) -> String {
    delivery.header_str(key).unwrap_or(own).to_owned()
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
