//! Delays of any length on a fixed set of queues, the one mechanism for everything that waits:
//! retries (declared intervals, backoff, jitter), delayed and scheduled sends.
//!
//! ## The layout
//!
//! Per virtual host, declared once by the first transport that needs it and shared by every
//! worker and publisher (see [`crate::core::delay`] for the arithmetic):
//!
//! - **35 levels**, `lepus.delay.00` to `lepus.delay.34`: level `k` is a headers exchange and
//!   a durable queue of the same name whose messages wait `2^k` ms (`x-message-ttl`), then
//!   are dead-lettered, headers and routing key unchanged, to the exchange of level `k - 1`.
//!   The exchange of level `k` binds its queue where the header `lepus-delay-k` is 1 and the
//!   exchange below where it is 0. A delayed message carries its delay in binary in those
//!   headers (levels 0 to its highest `1` digit) and enters at its highest level.
//! - **The delivery exchange** `lepus.delay.deliver` (topic), below level 0. A delayed
//!   message's routing key is its destination, `<exchange word>.<routing key>`. Every worker
//!   queue binds itself there for its retries (`%.<queue>`) and for each of its topic
//!   bindings (`<exchange>.<pattern>`), so a delayed send reaches exactly the queues a plain
//!   send to the same exchange and routing key would reach, at delivery time.
//! - **`lepus.delay.unrouted`**, a fanout exchange (the delivery exchange's
//!   `alternate-exchange`) and a queue: a delayed message whose destination has no queue when
//!   its time comes waits there for a person instead of being dropped.
//!
//! A delay is exact to the millisecond from 0 to 2^35 - 1 ms (about 397.7 days): a message with
//! delay `d` waits at the levels of the `1` bits of `d`, at most 35 waits, each exactly its
//! level's TTL; the broker adds its own latency per hop (measured in `BENCHMARKS.md`). The
//! message body is never touched: a delayed message arrives with its envelope byte for byte.
//! The consumer runtime shows handlers the destination's exchange and routing key, without
//! the level headers.
//!
//! **Quorum levels.** A worker on a quorum queue waits on a second set,
//! `lepus.delay.quorum.00` to `.34`: quorum queues with `x-dead-letter-strategy:
//! at-least-once` and `x-overflow: reject-publish`, so a message never drops out between two
//! levels (a classic queue dead-letters at most once: a broker crash between two levels can
//! lose it). A delayed send chooses its set with [`Delay::on`]; classic by default.
//!
//! ## Upgrading from wait queues
//!
//! Before, a retry waited in a queue per delay, `<queue>.wait.<ms>`, which dead-letters back to
//! `<queue>` through the default exchange. Nothing declares those queues any more, but they
//! keep their arguments on the broker: messages waiting there still come back to their queue
//! when their time is up. Empty ones expire by themselves (`x-expires`, if they were declared
//! with it) or can be deleted once `lepus topology` shows them empty.

use std::time::{Duration, SystemTime};

use crate::core::delay::{
    self as arithmetic, DelayError, DestinationKey, LEVELS, LEVEL_HEADER_PREFIX, MAX_DELAY_MS,
};
use crate::core::headers::FieldValue;
use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, NameKind, NameProblem, Result};
use crate::properties::{HeaderValue, Headers, Properties};
use crate::topology::{QueueKind, QueueSpec};
use crate::transport::Publication;

/// What the name of every exchange and queue of the delay levels starts with.
pub const PREFIX: &str = "lepus.delay.";
/// The exchange below level 0: delayed messages leave the levels here for their destination.
pub const DELIVERY_EXCHANGE: &str = "lepus.delay.deliver";
/// The fanout exchange and queue where delayed messages wait whose destination has no queue.
pub const UNROUTED: &str = "lepus.delay.unrouted";
/// The longest delay: 2^35 - 1 ms (about 397.7 days).
pub const MAX_DELAY: Duration = Duration::from_millis(MAX_DELAY_MS);

/// How long a publish waits before it is routed, and on which set of levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    ms: u64,
    levels: QueueKind,
}

impl Delay {
    /// A delay of `duration`, rounded up to the millisecond (never early), on the classic
    /// levels. Longer than [`MAX_DELAY`] is `InvalidConfig { setting: "delay" }`.
    pub fn new(duration: Duration) -> Result<Self> {
        let whole =
            duration.as_millis() + u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
        match u64::try_from(whole) {
            Ok(ms) => Delay::from_ms(ms),
            Err(_) => Err(too_long(u64::MAX)),
        }
    }

    /// A delay of `ms` milliseconds on the classic levels.
    pub fn from_ms(ms: u64) -> Result<Self> {
        if ms > MAX_DELAY_MS {
            return Err(too_long(ms));
        }
        Ok(Delay {
            ms,
            levels: QueueKind::Classic,
        })
    }

    /// The delay from `now` until `at`: zero when `at` has passed.
    pub fn until(at: SystemTime, now: SystemTime) -> Result<Self> {
        Delay::new(at.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// The same delay on the levels of `kind`: quorum levels replicate and dead-letter
    /// at least once (choose them when the destination is a quorum queue).
    #[must_use]
    pub fn on(mut self, kind: QueueKind) -> Self {
        self.levels = kind;
        self
    }

    /// Milliseconds to wait.
    pub fn as_ms(&self) -> u64 {
        self.ms
    }

    /// The set of levels the message waits on.
    pub fn levels(&self) -> QueueKind {
        self.levels
    }
}

fn too_long(ms: u64) -> Error {
    Error::new(ErrorKind::InvalidConfig { setting: "delay" }).context(format!(
        "a delay of {ms} ms is longer than the longest, {MAX_DELAY_MS} ms (about 397 days)"
    ))
}

/// Maps core's refusal to this crate's error, naming what was being written.
pub(crate) fn delay_error(e: DelayError, what: &str, name: &str) -> Error {
    let kind = match e {
        DelayError::TooLong => ErrorKind::InvalidConfig { setting: "delay" },
        DelayError::KeyTooLong => ErrorKind::InvalidName {
            what: NameKind::RoutingKey,
            problem: NameProblem::TooLong { len: name.len() },
        },
        DelayError::WildcardWord => ErrorKind::InvalidName {
            what: NameKind::Queue,
            problem: NameProblem::WildcardWord,
        },
        _ => ErrorKind::Encode,
    };
    Error::new(kind).context(format!("{what} {name:?} through the delay levels: {e}"))
}

/// The name of level `level`'s exchange and queue in the set of `kind`.
pub fn level_name(kind: QueueKind, level: u8) -> String {
    match kind {
        QueueKind::Classic => format!("lepus.delay.{level:02}"),
        QueueKind::Quorum => format!("lepus.delay.quorum.{level:02}"),
    }
}

/// The exchange a message delayed by `delay` is published to: its highest level's (the
/// delivery exchange for no wait).
pub fn entry_exchange(delay: Delay) -> String {
    match arithmetic::first_level(delay.ms) {
        Some(level) => level_name(delay.levels, level),
        None => DELIVERY_EXCHANGE.to_owned(),
    }
}

/// One level of a set, as both transports declare it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Level {
    /// Name of the level's exchange and queue.
    pub(crate) name: String,
    /// The queue's `x-message-ttl`.
    pub(crate) ttl_ms: u64,
    /// Where the queue dead-letters to and the exchange passes messages on to: the level
    /// below, or [`DELIVERY_EXCHANGE`].
    pub(crate) below: String,
    /// Binds the level's exchange to its queue: the level's header is 1.
    pub(crate) wait_binding: Headers,
    /// Binds the level's exchange to `below`: the level's header is 0.
    pub(crate) pass_binding: Headers,
}

/// The levels of the set `kind`, lowest first (each one's `below` is declared before it).
pub(crate) fn levels(kind: QueueKind) -> impl Iterator<Item = Level> {
    (0..LEVELS).filter_map(move |level| {
        Some(Level {
            name: level_name(kind, level),
            ttl_ms: arithmetic::level_ttl_ms(level)?,
            below: match level {
                0 => DELIVERY_EXCHANGE.to_owned(),
                _ => level_name(kind, level - 1),
            },
            wait_binding: binding_headers(&arithmetic::wait_binding(level)?),
            pass_binding: binding_headers(&arithmetic::pass_binding(level)?),
        })
    })
}

fn binding_headers(args: &[(&str, FieldValue<'_>)]) -> Headers {
    args.iter()
        .map(|(name, value)| {
            let value = match *value {
                FieldValue::Int(i) => HeaderValue::Int(i),
                FieldValue::Str(s) => HeaderValue::Str(s.to_owned()),
                _ => HeaderValue::Void,
            };
            ((*name).to_owned(), value)
        })
        .collect()
}

/// The routing key of `publication` on the delay levels: its destination.
pub(crate) fn key(publication: &Publication<'_>) -> Result<DestinationKey> {
    DestinationKey::new(publication.exchange, publication.routing_key).map_err(|e| {
        delay_error(
            e,
            "routing key",
            &format!("{}/{}", publication.exchange, publication.routing_key),
        )
    })
}

/// `properties` with the level digits of `delay` (and no digits of an earlier delay).
pub(crate) fn with_levels(properties: &Properties, delay: Delay) -> Result<Properties> {
    let mut delayed = properties.clone();
    delayed
        .headers
        .retain(|name, _| !name.starts_with(LEVEL_HEADER_PREFIX));
    let bits = arithmetic::level_bits(delay.ms).map_err(|_| too_long(delay.ms))?;
    for (header, bit) in bits {
        delayed
            .headers
            .insert(header.to_owned(), HeaderValue::Int(i64::from(bit)));
    }
    Ok(delayed)
}

/// The patterns binding the queue of `spec` to [`DELIVERY_EXCHANGE`]: its retries (through
/// the default exchange, by its name) and delayed sends matching its topic bindings.
pub(crate) fn delivery_patterns(spec: &QueueSpec) -> Result<Vec<String>> {
    let own = arithmetic::delivery_pattern("", &spec.name)
        .map_err(|e| delay_error(e, "queue", &spec.name))?;
    let mut patterns = vec![own.as_str().to_owned()];
    for binding in &spec.bindings {
        let pattern = arithmetic::delivery_pattern(&spec.exchange, binding)
            .map_err(|e| delay_error(e, "binding pattern", binding))?;
        patterns.push(pattern.as_str().to_owned());
    }
    Ok(patterns)
}

/// A delivery that came through the delay levels shows the exchange and routing key it was
/// sent to, not the delay key: handlers, retries and dead letters see what a plain send
/// would have shown. (The broker reports the exchange the last level dead-lettered to: the
/// level below it, or the delivery exchange.) Other deliveries are left as they are.
pub(crate) fn arrival(delivery: &mut Delivery) {
    if !delivery.exchange.starts_with(PREFIX) {
        return;
    }
    let Ok(destination) = arithmetic::parse_destination(&delivery.routing_key) else {
        return;
    };
    let mut name = [0u8; 255];
    let Ok(len) = arithmetic::exchange_from_word(destination.exchange_word, &mut name) else {
        return;
    };
    let Some(exchange) = name.get(..len).and_then(|n| core::str::from_utf8(n).ok()) else {
        return;
    };
    let exchange = exchange.to_owned();
    let routing_key = destination.routing_key.to_owned();
    delivery.exchange = exchange;
    delivery.routing_key = routing_key;
    delivery.edit_properties(|p| {
        p.headers
            .retain(|name, _| !name.starts_with(LEVEL_HEADER_PREFIX));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_and_stop_at_the_longest() {
        let d = Delay::new(Duration::from_micros(1_500))
            .ok()
            .map(|d| d.as_ms());
        assert_eq!(d, Some(2), "never early");
        assert_eq!(Delay::new(Duration::ZERO).ok().map(|d| d.as_ms()), Some(0));
        assert!(Delay::new(MAX_DELAY).is_ok());
        let over = Delay::new(MAX_DELAY + Duration::from_nanos(1));
        assert!(matches!(
            over.map_err(|e| e.kind()),
            Err(ErrorKind::InvalidConfig { setting: "delay" })
        ));
        assert!(Delay::new(Duration::MAX).is_err());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let past = Delay::until(SystemTime::UNIX_EPOCH, now).ok();
        assert_eq!(past.map(|d| d.as_ms()), Some(0));
        let day = Delay::until(now + Duration::from_secs(86_400), now).ok();
        assert_eq!(day.map(|d| d.as_ms()), Some(86_400_000));
    }

    #[test]
    fn level_layout() {
        let all: Vec<Level> = levels(QueueKind::Quorum).collect();
        assert_eq!(all.len(), 35);
        assert_eq!(all[0].name, "lepus.delay.quorum.00");
        assert_eq!(all[0].below, DELIVERY_EXCHANGE);
        assert_eq!(all[34].below, "lepus.delay.quorum.33");
        assert_eq!(all[34].ttl_ms, 1 << 34);
        let day = Delay::from_ms(86_400_000).ok();
        assert_eq!(day.map(entry_exchange).as_deref(), Some("lepus.delay.26"));
        let none = Delay::from_ms(0).ok();
        assert_eq!(none.map(entry_exchange).as_deref(), Some(DELIVERY_EXCHANGE));
    }

    #[test]
    fn arrival_shows_the_destination() {
        struct Nothing;
        impl crate::delivery::Acknowledge for Nothing {
            fn settle(
                &self,
                _: u64,
                _: crate::delivery::Settlement,
            ) -> crate::delivery::SettleFuture<'_> {
                Box::pin(async { Ok(true) })
            }
        }
        let key = DestinationKey::new("le.pus", "mailer.ad.x").ok();
        let key = key.as_ref().map(DestinationKey::as_str).unwrap_or_default();
        let properties = Delay::from_ms(9)
            .and_then(|d| with_levels(&Properties::new().with_header("a", 1i64), d))
            .unwrap_or_default();
        assert_eq!(
            properties.headers.len(),
            5,
            "a, and the digits of 9 = 0b1001"
        );
        let mut d = Delivery::new(Vec::new(), 1, std::sync::Arc::new(Nothing))
            .with_exchange(DELIVERY_EXCHANGE)
            .with_routing_key(key)
            .with_properties(properties);
        arrival(&mut d);
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("le.pus", "mailer.ad.x")
        );
        assert_eq!(d.properties().headers.len(), 1, "level digits removed");
        let mut plain = Delivery::new(Vec::new(), 1, std::sync::Arc::new(Nothing))
            .with_exchange("lepus")
            .with_routing_key(key);
        arrival(&mut plain);
        assert_eq!(
            plain.routing_key, key,
            "only deliveries of the delivery exchange"
        );
    }
}
