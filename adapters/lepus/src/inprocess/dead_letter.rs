//! The `x-death` header a dead-lettered message carries, as RabbitMQ 3.10 writes it
//! ([docs](https://www.rabbitmq.com/docs/dlx#effects)): an array of tables, most recent
//! first, one per `(queue, reason)` with a `count`, plus `x-first-death-queue`,
//! `x-first-death-reason` and `x-first-death-exchange` set once.

use crate::properties::{HeaderValue, Headers};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its message TTL passed.
    Expired,
}

impl DeathReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
        }
    }
}

/// What is recorded about one dead-lettering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Death<'a> {
    pub(crate) queue: &'a str,
    pub(crate) reason: DeathReason,
    /// The exchange the message had been published to.
    pub(crate) exchange: &'a str,
    /// The routing key it had been published with.
    pub(crate) routing_key: &'a str,
    /// Seconds since the Unix epoch.
    pub(crate) time: u64,
}

/// Records `death` in `headers`: increments the count of the matching `x-death` entry and
/// moves it first, or prepends a new entry.
pub(crate) fn record(headers: &mut Headers, death: Death<'_>) {
    let reason = death.reason.as_str();
    let mut entries = match headers.remove("x-death") {
        Some(HeaderValue::List(entries)) => entries,
        _ => Vec::new(),
    };
    let same = |entry: &HeaderValue| match entry {
        HeaderValue::Table(t) => {
            t.get("queue").and_then(HeaderValue::as_str) == Some(death.queue)
                && t.get("reason").and_then(HeaderValue::as_str) == Some(reason)
        }
        _ => false,
    };
    let entry = match entries.iter().position(same) {
        Some(i) => {
            let mut entry = entries.remove(i);
            if let HeaderValue::Table(t) = &mut entry {
                let count = t.get("count").and_then(HeaderValue::as_i64).unwrap_or(0);
                t.insert("count".into(), HeaderValue::Int(count.saturating_add(1)));
                t.insert("time".into(), HeaderValue::Timestamp(death.time));
            }
            entry
        }
        None => {
            let mut t = Headers::new();
            t.insert("count".into(), HeaderValue::Int(1));
            t.insert("reason".into(), reason.into());
            t.insert("queue".into(), death.queue.into());
            t.insert("time".into(), HeaderValue::Timestamp(death.time));
            t.insert("exchange".into(), death.exchange.into());
            t.insert(
                "routing-keys".into(),
                HeaderValue::List(vec![death.routing_key.into()]),
            );
            HeaderValue::Table(t)
        }
    };
    entries.insert(0, entry);
    headers.insert("x-death".into(), HeaderValue::List(entries));
    for (key, value) in [
        ("x-first-death-queue", death.queue),
        ("x-first-death-reason", reason),
        ("x-first-death-exchange", death.exchange),
    ] {
        headers
            .entry(key.to_owned())
            .or_insert_with(|| value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(headers: &Headers, i: usize) -> Option<(String, i64)> {
        match headers.get("x-death") {
            Some(HeaderValue::List(l)) => match l.get(i) {
                Some(HeaderValue::Table(t)) => Some((
                    t.get("queue")?.as_str()?.to_owned(),
                    t.get("count")?.as_i64()?,
                )),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn counts_per_queue_and_reason_most_recent_first() {
        let mut h = Headers::new();
        h.insert("app".into(), "kept".into());
        let death = |queue| Death {
            queue,
            reason: DeathReason::Expired,
            exchange: "",
            routing_key: queue,
            time: 7,
        };
        record(&mut h, death("a.wait.10"));
        record(&mut h, death("b"));
        record(&mut h, death("a.wait.10"));
        assert_eq!(count(&h, 0), Some(("a.wait.10".into(), 2)));
        assert_eq!(count(&h, 1), Some(("b".into(), 1)));
        assert_eq!(
            h.get("x-first-death-queue").and_then(HeaderValue::as_str),
            Some("a.wait.10")
        );
        assert_eq!(h.get("app").and_then(HeaderValue::as_str), Some("kept"));
    }
}
