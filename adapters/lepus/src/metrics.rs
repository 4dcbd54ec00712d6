//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): the
//! counters of [`crate::WorkerStats`], [`crate::rpc::RpcServerStats`] and
//! [`crate::ConsumerStats`], emitted at the very points where those count (nothing counts
//! twice), plus handler durations, RPC latency, messages in flight and reconnections.
//! Install any `metrics` recorder (for Prometheus, `metrics-exporter-prometheus`; see
//! `examples/src/bin/metrics.rs`); without the feature, or without a recorder, nothing is
//! recorded.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `lepus_messages_received_total` | counter | `queue` | deliveries received by a worker, RPC server or gateway |
//! | `lepus_messages_in_flight` | gauge | `queue` | deliveries received and not yet settled |
//! | `lepus_messages_handled_total` | counter | `queue`, `type`, `outcome` | handler runs; `outcome` is `ok`, `error`, `panic` or `timeout` |
//! | `lepus_handler_duration_seconds` | histogram | `queue`, `type`, `outcome` | how long a handler ran |
//! | `lepus_messages_retried_total` | counter | `queue`, `type` | retry copies published (worker) |
//! | `lepus_messages_dead_lettered_total` | counter | `queue`, `reason` | messages moved to `<queue>.dead` (`reason` as in `x-lepus-reason`) |
//! | `lepus_messages_requeued_total` | counter | `queue` | deliveries given back to the queue |
//! | `lepus_messages_refused_total` | counter | `queue`, `reason` | refused before any handler: `oversized`, `delivery-limit` |
//! | `lepus_messages_held_total` | counter | `queue` | deliveries held by their type's rate or concurrency limit |
//! | `lepus_messages_recounted_total` | counter | `queue` | redeliveries published again with their count |
//! | `lepus_acks_lost_total` | counter | `queue` | acknowledgements that had no effect |
//! | `lepus_follow_ups_repeated_total` | counter | `queue` | retry copies and dead letters published again after a passing failure |
//! | `lepus_rpc_replies_total` | counter | `queue`, `outcome` | RPC server replies: `reply`, `error` (a remote error), `unroutable`, `failed` |
//! | `lepus_rpc_client_duration_seconds` | histogram | `type`, `outcome` | RPC call latency at the client (`call`, `call_until`, each request of a `gather`): `ok`, `remote_error`, `timeout`, `error` |
//! | `lepus_messages_published_total` | counter | `exchange`, `type` | messages a `Publisher` sent (confirmed) |
//! | `lepus_reconnections_total` | counter | | RabbitMQ connections opened again after a loss |
//!
//! `type` is the wire type name of a registered handler (or of the message a `Publisher` or an
//! `RpcClient` sends), never a name read from an unknown message: outside input cannot grow
//! the number of series. Metrics without a `type` count messages of every type.

/// Name: deliveries received.
pub const MESSAGES_RECEIVED: &str = "lepus_messages_received_total";
/// Name: deliveries received and not yet settled (gauge).
pub const MESSAGES_IN_FLIGHT: &str = "lepus_messages_in_flight";
/// Name: handler runs by outcome.
pub const MESSAGES_HANDLED: &str = "lepus_messages_handled_total";
/// Name: handler durations in seconds (histogram).
pub const HANDLER_DURATION: &str = "lepus_handler_duration_seconds";
/// Name: retry copies published.
pub const MESSAGES_RETRIED: &str = "lepus_messages_retried_total";
/// Name: dead letters published.
pub const MESSAGES_DEAD_LETTERED: &str = "lepus_messages_dead_lettered_total";
/// Name: deliveries given back to the queue.
pub const MESSAGES_REQUEUED: &str = "lepus_messages_requeued_total";
/// Name: deliveries refused before any handler ran.
pub const MESSAGES_REFUSED: &str = "lepus_messages_refused_total";
/// Name: deliveries held by their type's limits.
pub const MESSAGES_HELD: &str = "lepus_messages_held_total";
/// Name: redeliveries published again with their count.
pub const MESSAGES_RECOUNTED: &str = "lepus_messages_recounted_total";
/// Name: acknowledgements that had no effect.
pub const ACKS_LOST: &str = "lepus_acks_lost_total";
/// Name: follow-ups published again after a passing failure.
pub const FOLLOW_UPS_REPEATED: &str = "lepus_follow_ups_repeated_total";
/// Name: RPC server replies by outcome.
pub const RPC_REPLIES: &str = "lepus_rpc_replies_total";
/// Name: RPC call latency at the client in seconds (histogram).
pub const RPC_CLIENT_DURATION: &str = "lepus_rpc_client_duration_seconds";
/// Name: messages a publisher sent.
pub const MESSAGES_PUBLISHED: &str = "lepus_messages_published_total";
/// Name: RabbitMQ reconnections.
pub const RECONNECTIONS: &str = "lepus_reconnections_total";

/// Every metric name above, for exporters and tests.
pub const NAMES: [&str; 16] = [
    MESSAGES_RECEIVED,
    MESSAGES_IN_FLIGHT,
    MESSAGES_HANDLED,
    HANDLER_DURATION,
    MESSAGES_RETRIED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_REQUEUED,
    MESSAGES_REFUSED,
    MESSAGES_HELD,
    MESSAGES_RECOUNTED,
    ACKS_LOST,
    FOLLOW_UPS_REPEATED,
    RPC_REPLIES,
    RPC_CLIENT_DURATION,
    MESSAGES_PUBLISHED,
    RECONNECTIONS,
];

/// Labels of one sample: `(name, value)` pairs.
pub(crate) type Labels<'a> = &'a [(&'static str, &'a str)];

#[cfg(feature = "metrics")]
fn labels(labels: Labels<'_>) -> Vec<::metrics::Label> {
    labels
        .iter()
        .map(|&(k, v)| ::metrics::Label::new(k, v.to_owned()))
        .collect()
}

/// Adds one to the counter `name`.
#[inline]
pub(crate) fn count(name: &'static str, l: Labels<'_>) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(name, labels(l)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, l);
}

/// Adds `delta` to the gauge `name`.
#[inline]
pub(crate) fn gauge_add(name: &'static str, l: Labels<'_>, delta: f64) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(name, labels(l)).increment(delta);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, l, delta);
}

/// Records `seconds` in the histogram `name`.
#[inline]
pub(crate) fn seconds(name: &'static str, l: Labels<'_>, seconds: f64) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(name, labels(l)).record(seconds);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, l, seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_names_and_documented() {
        let docs = include_str!("metrics.rs");
        for name in NAMES {
            assert!(name.starts_with("lepus_"));
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "{name} in the table"
            );
        }
    }
}
