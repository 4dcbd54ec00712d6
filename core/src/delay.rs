//! Delays of any length on a fixed set of queues: the arithmetic of the delay levels.
//!
//! RabbitMQ has no timer per message, only a TTL per queue. A fixed set of [`LEVELS`] level
//! queues, level `k` holding its messages for `2^k` ms (its `x-message-ttl`), carries any
//! delay from 0 to [`MAX_DELAY_MS`] (2^35 - 1 ms, about 397.7 days) **exact to the
//! millisecond** ([`RESOLUTION_MS`]), with at most [`LEVELS`] waits and no queue per delay.
//! The design is NServiceBus's RabbitMQ delay infrastructure (also kombu's "native delayed
//! delivery"), at millisecond resolution, with the binary digits of the delay written as
//! one header per level instead of as routing-key words:
//!
//! - A delayed message carries, for each level `k` from its [`first_level`] down to 0, the
//!   header [`level_header`]`(k)` = 1 or 0, the digit `k` of its delay ([`level_bits`]).
//!   The headers never change on the way: the level a message is at is the exchange that
//!   routes it.
//! - Each level `k` has a **headers exchange** and a queue. The exchange binds its queue
//!   with [`wait_binding`] (digit `k` is 1) and the exchange of level `k - 1` with
//!   [`pass_binding`] (digit `k` is 0: nothing to wait here, go down at once). The queue
//!   dead-letters expired messages, headers and routing key unchanged, to the exchange of
//!   level `k - 1`.
//! - Below level 0 is the **delivery exchange**, a topic exchange: destinations are bound
//!   to it with [`delivery_pattern`], and the routing key of a delayed message is its
//!   destination, [`DestinationKey`] (`<exchange word>.<routing key>`), so a message that
//!   has waited every `1` digit arrives where its destination says, and only there.
//! - A message enters at the exchange of its first level. Its wait is the sum of `2^k` over
//!   its `1` digits: exactly its delay, whatever latency the broker adds per hop.
//!
//! Why headers and not NServiceBus's routing-key digits: a topic exchange matches a key
//! word by word, so each level a 37-word key passes costs the broker about 0.3 ms;
//! measured on RabbitMQ 3.10, a message passing 35 topic levels cost 10.3 ms of broker time,
//! 35 headers levels 0.7 ms (a plain publish: 0.3 ms). See `BENCHMARKS.md`.
//!
//! The destination is an exchange and a routing key, as for any publish. The exchange is
//! written as one word ([`exchange_word`]: `%`, `.`, `*` and `#` escaped as `%25`, `%2E`,
//! `%2A`, `%23`; the default exchange, `""`, is the word `%`, which escaping never produces),
//! so a name with dots cannot pass for another destination. The routing key follows as
//! given; a destination bound with a pattern can only be reached by keys its pattern
//! matches. Queue names used as routing keys of the default exchange must not contain a
//! `*` or `#` word ([`DelayError::WildcardWord`]): the pattern that binds them would match
//! other keys.
//!
//! Everything here is `const`-sized and allocation-free; no function panics.

#[cfg(test)]
mod tests;

use crate::headers::{FieldPair, FieldValue};
use crate::topic::MAX_LEN;

/// Number of delay levels: level `k` waits `2^k` ms, for `k` in `0..LEVELS`.
pub const LEVELS: u8 = 35;
/// The level a delayed message enters at (the highest).
pub const TOP_LEVEL: u8 = LEVELS - 1;
/// The longest delay: every level once, 2^35 - 1 ms (about 397.7 days).
pub const MAX_DELAY_MS: u64 = (1u64 << LEVELS) - 1;
/// The unit every delay is exact to.
pub const RESOLUTION_MS: u64 = 1;
/// The exchange word of the default exchange (`""`) in a delay key.
pub const DEFAULT_EXCHANGE_WORD: &str = "%";

/// The header holding the digit of each level, by level: `lepus-delay-00` to `-34`. (Not
/// `x-` names: a headers exchange ignores binding arguments that start with `x-`.)
pub const LEVEL_HEADERS: [&str; LEVELS as usize] = [
    "lepus-delay-00",
    "lepus-delay-01",
    "lepus-delay-02",
    "lepus-delay-03",
    "lepus-delay-04",
    "lepus-delay-05",
    "lepus-delay-06",
    "lepus-delay-07",
    "lepus-delay-08",
    "lepus-delay-09",
    "lepus-delay-10",
    "lepus-delay-11",
    "lepus-delay-12",
    "lepus-delay-13",
    "lepus-delay-14",
    "lepus-delay-15",
    "lepus-delay-16",
    "lepus-delay-17",
    "lepus-delay-18",
    "lepus-delay-19",
    "lepus-delay-20",
    "lepus-delay-21",
    "lepus-delay-22",
    "lepus-delay-23",
    "lepus-delay-24",
    "lepus-delay-25",
    "lepus-delay-26",
    "lepus-delay-27",
    "lepus-delay-28",
    "lepus-delay-29",
    "lepus-delay-30",
    "lepus-delay-31",
    "lepus-delay-32",
    "lepus-delay-33",
    "lepus-delay-34",
];
/// What every level header starts with.
pub const LEVEL_HEADER_PREFIX: &str = "lepus-delay-";

/// Why a delay key or pattern cannot be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DelayError {
    /// The delay is longer than [`MAX_DELAY_MS`].
    TooLong,
    /// The destination key or pattern would be longer than 255 bytes (an AMQP short
    /// string).
    KeyTooLong,
    /// A routing key of the default exchange (a queue name) has a `*` or `#` word, which the
    /// pattern binding the queue would read as a wildcard.
    WildcardWord,
    /// The routing key is not a destination key (no exchange word).
    NotADestination,
    /// An escaped exchange word is malformed, or the buffer for the exchange is too small.
    BadExchangeWord,
}

impl core::fmt::Display for DelayError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DelayError::TooLong => write!(
                f,
                "delay longer than {MAX_DELAY_MS} ms (2^{LEVELS} - 1, about 397 days)"
            ),
            DelayError::KeyTooLong => write!(
                f,
                "the exchange word and routing key take more than {MAX_LEN} bytes"
            ),
            DelayError::WildcardWord => write!(
                f,
                "a queue name with a `*` or `#` word cannot be bound to the delay levels"
            ),
            DelayError::NotADestination => write!(f, "not a delay destination key"),
            DelayError::BadExchangeWord => write!(f, "malformed exchange word in a delay key"),
        }
    }
}

impl core::error::Error for DelayError {}

/// A routing key or binding pattern of at most 255 bytes, built in place.
#[derive(Clone, Copy)]
struct ShortBuf {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl ShortBuf {
    const fn new() -> Self {
        ShortBuf {
            bytes: [0; MAX_LEN],
            len: 0,
        }
    }

    fn push(&mut self, part: &[u8]) -> Result<(), DelayError> {
        let start = usize::from(self.len);
        let end = start
            .checked_add(part.len())
            .ok_or(DelayError::KeyTooLong)?;
        let slot = self
            .bytes
            .get_mut(start..end)
            .ok_or(DelayError::KeyTooLong)?;
        slot.copy_from_slice(part);
        self.len = u8::try_from(end).map_err(|_| DelayError::KeyTooLong)?;
        Ok(())
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s and ASCII bytes are pushed: always UTF-8.
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        core::str::from_utf8(bytes).unwrap_or("")
    }

    /// The exchange word, then the routing key or pattern when it has words.
    fn push_destination(&mut self, exchange: &str, rest: &str) -> Result<(), DelayError> {
        write_exchange_word(exchange, |part| self.push(part))?;
        if !rest.is_empty() {
            self.push(b".")?;
            self.push(rest.as_bytes())?;
        }
        Ok(())
    }
}

impl core::fmt::Debug for ShortBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for ShortBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortBuf {}

/// The routing key of a delayed message: its destination's exchange word, then the routing
/// key it is routed with once its delay has passed. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationKey(ShortBuf);

impl DestinationKey {
    /// The key of a message to be routed by `exchange` (`""`: the default exchange, which
    /// routes to the queue named `routing_key`) with `routing_key`.
    pub fn new(exchange: &str, routing_key: &str) -> Result<Self, DelayError> {
        if exchange.is_empty() {
            check_queue_words(routing_key)?;
        }
        let mut key = ShortBuf::new();
        key.push_destination(exchange, routing_key)?;
        Ok(DestinationKey(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A destination key read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination<'k> {
    /// The destination exchange, as its escaped word (see [`exchange_from_word`]).
    pub exchange_word: &'k str,
    /// The destination routing key.
    pub routing_key: &'k str,
}

/// Reads a destination key. A key without an exchange word is
/// [`DelayError::NotADestination`].
pub fn parse_destination(key: &str) -> Result<Destination<'_>, DelayError> {
    let (exchange_word, routing_key) = match key.split_once('.') {
        Some((word, rest)) => (word, rest),
        None => (key, ""),
    };
    if exchange_word.is_empty() {
        return Err(DelayError::NotADestination);
    }
    Ok(Destination {
        exchange_word,
        routing_key,
    })
}

/// The header of level `level`'s digit; `None` for a level that does not exist.
pub fn level_header(level: u8) -> Option<&'static str> {
    LEVEL_HEADERS.get(usize::from(level)).copied()
}

/// The digits a message delayed by `delay_ms` carries: `(header, digit)` for each level from
/// its first level down to 0 (none for 0 ms). [`DelayError::TooLong`] past [`MAX_DELAY_MS`].
pub fn level_bits(delay_ms: u64) -> Result<impl Iterator<Item = (&'static str, bool)>, DelayError> {
    if delay_ms > MAX_DELAY_MS {
        return Err(DelayError::TooLong);
    }
    let top = first_level(delay_ms).map_or(0, |level| usize::from(level) + 1);
    Ok(LEVEL_HEADERS
        .iter()
        .take(top)
        .enumerate()
        .rev()
        .map(move |(level, &header)| (header, (delay_ms >> level) & 1 == 1)))
}

/// Reads the delay a message's level digits write (`digit(level)` for each level, `None` where
/// absent): the sum of `2^k` over the levels whose digit is 1.
pub fn delay_of(digit: impl Fn(&'static str) -> Option<bool>) -> u64 {
    LEVEL_HEADERS
        .iter()
        .enumerate()
        .filter(|&(_, &header)| digit(header) == Some(true))
        .fold(0, |delay, (level, _)| delay | 1u64 << level)
}

/// The highest level a message with `delay_ms` waits at; `None` for no wait (0 ms).
pub fn first_level(delay_ms: u64) -> Option<u8> {
    if delay_ms == 0 || delay_ms > MAX_DELAY_MS {
        return None;
    }
    u8::try_from(63 - delay_ms.leading_zeros()).ok()
}

/// The next level below `level` a message with `delay_ms` waits at; `None` when it leaves
/// for its destination.
pub fn next_level(delay_ms: u64, level: u8) -> Option<u8> {
    let below = delay_ms & 1u64.checked_shl(u32::from(level))?.wrapping_sub(1);
    first_level(below)
}

/// How long level `level` holds a message: `2^level` ms (its queue's `x-message-ttl`);
/// `None` for a level that does not exist.
pub fn level_ttl_ms(level: u8) -> Option<u64> {
    if level < LEVELS {
        Some(1u64 << level)
    } else {
        None
    }
}

/// A binding pattern of the delivery exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayPattern(ShortBuf);

impl DelayPattern {
    /// The pattern as a string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The arguments binding level `level`'s headers exchange to its queue: digit `level` is 1.
/// `None` for a level that does not exist.
pub fn wait_binding(level: u8) -> Option<[FieldPair<'static>; 2]> {
    digit_binding(level, 1)
}

/// The arguments binding level `level`'s headers exchange to the level below (or, for level
/// 0, to the delivery exchange): digit `level` is 0. `None` for a level that does not exist.
pub fn pass_binding(level: u8) -> Option<[FieldPair<'static>; 2]> {
    digit_binding(level, 0)
}

fn digit_binding(level: u8, digit: i64) -> Option<[FieldPair<'static>; 2]> {
    Some([
        ("x-match", FieldValue::Str("all")),
        (level_header(level)?, FieldValue::Int(digit)),
    ])
}

/// The pattern binding a destination to the delivery exchange: the word of `exchange`, then
/// `binding`, the pattern the destination is bound to `exchange` with (for the default
/// exchange: the queue's name, which must have no `*` or `#` word).
pub fn delivery_pattern(exchange: &str, binding: &str) -> Result<DelayPattern, DelayError> {
    if exchange.is_empty() {
        check_queue_words(binding)?;
    }
    let mut pattern = ShortBuf::new();
    pattern.push_destination(exchange, binding)?;
    Ok(DelayPattern(pattern))
}

fn check_queue_words(queue: &str) -> Result<(), DelayError> {
    if queue.split('.').any(|word| word == "*" || word == "#") {
        Err(DelayError::WildcardWord)
    } else {
        Ok(())
    }
}

/// Writes the one-word form of `exchange` in parts (see the [module documentation](self)).
fn write_exchange_word(
    exchange: &str,
    mut emit: impl FnMut(&[u8]) -> Result<(), DelayError>,
) -> Result<(), DelayError> {
    if exchange.is_empty() {
        return emit(DEFAULT_EXCHANGE_WORD.as_bytes());
    }
    let bytes = exchange.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'%' => b"%25",
            b'.' => b"%2E",
            b'*' => b"%2A",
            b'#' => b"%23",
            _ => continue,
        };
        emit(bytes.get(start..i).unwrap_or(&[]))?;
        emit(escaped)?;
        start = i + 1;
    }
    emit(bytes.get(start..).unwrap_or(&[]))
}

/// The one-word form of `exchange`, written into `out`; returns its length.
pub fn exchange_word(exchange: &str, out: &mut [u8]) -> Result<usize, DelayError> {
    let mut len = 0usize;
    write_exchange_word(exchange, |part| {
        let end = len.checked_add(part.len()).ok_or(DelayError::KeyTooLong)?;
        out.get_mut(len..end)
            .ok_or(DelayError::KeyTooLong)?
            .copy_from_slice(part);
        len = end;
        Ok(())
    })?;
    Ok(len)
}

/// The exchange name an exchange word stands for, written into `out`; returns its length
/// (0 for the default exchange).
pub fn exchange_from_word(word: &str, out: &mut [u8]) -> Result<usize, DelayError> {
    if word == DEFAULT_EXCHANGE_WORD {
        return Ok(0);
    }
    let bytes = word.as_bytes();
    let mut len = 0usize;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        let (byte, step) = if b == b'%' {
            match bytes.get(i + 1..i + 3) {
                Some(b"25") => (b'%', 3),
                Some(b"2E") => (b'.', 3),
                Some(b"2A") => (b'*', 3),
                Some(b"23") => (b'#', 3),
                _ => return Err(DelayError::BadExchangeWord),
            }
        } else if b == b'.' {
            return Err(DelayError::BadExchangeWord);
        } else {
            (b, 1)
        };
        *out.get_mut(len).ok_or(DelayError::BadExchangeWord)? = byte;
        len += 1;
        i += step;
    }
    if len == 0 {
        return Err(DelayError::BadExchangeWord);
    }
    Ok(len)
}
