//! AMQP 0-9-1 topic matching with RabbitMQ's exact semantics.
//!
//! A routing key and a binding pattern are lists of *words* separated by `.`
//! ([RabbitMQ tutorial 5](https://www.rabbitmq.com/tutorials/tutorial-five-python),
//! [exchange types](https://www.rabbitmq.com/docs/exchanges#topic),
//! [`rabbit_exchange_type_topic`](https://github.com/rabbitmq/rabbitmq-server/blob/main/deps/rabbit/src/rabbit_exchange_type_topic.erl)):
//!
//! - words are split on **every** `.`, so `"a..b"` has three words, the middle one empty,
//!   and `"a."` has two words, the last one empty;
//! - the empty string has **zero** words (unlike `"".split('.')`, which yields one);
//! - in a pattern, the word `*` matches exactly one word (which may be empty) and the word
//!   `#` matches zero or more words; `*` and `#` are wildcards only as whole words, so
//!   `a*b` or `#a` are literal words;
//! - words are compared byte by byte, case-sensitively.
//!
//! Keys and patterns are AMQP short strings: at most [`MAX_LEN`] (255) bytes.
//! [`matches()`] does not check the limit; [`try_matches`] does.
//!
//! The matcher is a greedy wildcard matcher over words (the classic "remember the last `#`
//! and retry from one word further" algorithm): no recursion, no allocation, and
//! O(pattern words x key words) word comparisons in the worst case, where RabbitMQ's own
//! backtracking takes seconds on patterns such as `#.#.#.#.#.#.b`.

mod explain;
#[cfg(test)]
mod tests;

pub use explain::{explain, ExplainError, WordKind, WordMatch, MAX_WORDS};

/// Maximum length in bytes of a routing key or a binding pattern (an AMQP short string).
pub const MAX_LEN: usize = 255;

/// Why a routing key or a pattern is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TopicError {
    /// The routing key is longer than [`MAX_LEN`] (255) bytes, the AMQP short string limit.
    RoutingKeyTooLong,
    /// The binding pattern is longer than [`MAX_LEN`] (255) bytes, the AMQP short string limit.
    PatternTooLong,
}

impl core::fmt::Display for TopicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TopicError::RoutingKeyTooLong => {
                write!(
                    f,
                    "routing key longer than {MAX_LEN} bytes (AMQP short string)"
                )
            }
            TopicError::PatternTooLong => {
                write!(
                    f,
                    "binding pattern longer than {MAX_LEN} bytes (AMQP short string)"
                )
            }
        }
    }
}

impl core::error::Error for TopicError {}

/// Checks that `routing_key` fits an AMQP short string (at most 255 bytes).
///
/// Any bytes are allowed, including empty words and `*`/`#` (which are literal in a key).
pub const fn validate_routing_key(routing_key: &str) -> Result<(), TopicError> {
    if routing_key.len() > MAX_LEN {
        Err(TopicError::RoutingKeyTooLong)
    } else {
        Ok(())
    }
}

/// Checks that `pattern` fits an AMQP short string (at most 255 bytes).
pub const fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    if pattern.len() > MAX_LEN {
        Err(TopicError::PatternTooLong)
    } else {
        Ok(())
    }
}

/// Whether `routing_key` matches the binding `pattern`, with RabbitMQ's semantics (see the
/// [module documentation](self)).
///
/// ```
/// use lepus_core::topic::matches;
/// assert!(matches("mailer.ad.*", "mailer.ad.expired"));
/// assert!(matches("mailer.#", "mailer"));
/// assert!(matches("#.b", "a.a.b"));
/// assert!(matches("*", ""  ) == false);   // the empty key has zero words
/// assert!(matches("a.*", "a."));          // `*` matches the empty last word
/// ```
///
/// Never panics, never allocates, never recurses. Inputs longer than 255 bytes (which a
/// broker would refuse) are matched with the same rules and the same O(pattern words x key
/// words) bound; use [`try_matches`] to refuse them instead.
pub fn matches(pattern: &str, routing_key: &str) -> bool {
    matches_bytes(pattern.as_bytes(), routing_key.as_bytes())
}

/// [`matches()`] after checking both strings with [`validate_pattern`] and
/// [`validate_routing_key`].
pub fn try_matches(pattern: &str, routing_key: &str) -> Result<bool, TopicError> {
    validate_pattern(pattern)?;
    validate_routing_key(routing_key)?;
    Ok(matches(pattern, routing_key))
}

/// Position just past the last word of `s`: the empty string has no words, so its end is 0;
/// otherwise it is `len + 1` (one past the implicit terminating separator).
#[inline]
pub(crate) fn words_end(s: &[u8]) -> usize {
    if s.is_empty() {
        0
    } else {
        s.len().saturating_add(1)
    }
}

/// The word starting at byte `start` of `s` and the start of the next word.
#[inline]
pub(crate) fn word_at(s: &[u8], start: usize) -> (&[u8], usize) {
    let rest = s.get(start..).unwrap_or(&[]);
    let len = rest.iter().position(|&b| b == b'.').unwrap_or(rest.len());
    (
        rest.get(..len).unwrap_or(&[]),
        start.saturating_add(len).saturating_add(1),
    )
}

/// [`matches()`] over raw bytes.
fn matches_bytes(pattern: &[u8], key: &[u8]) -> bool {
    let p_end = words_end(pattern);
    let k_end = words_end(key);
    let mut p = 0usize;
    let mut k = 0usize;
    // After the last `#` seen: (pattern position just past it, key position it resumes at).
    let mut star: Option<(usize, usize)> = None;
    while k < k_end {
        if p < p_end {
            let (pw, p_next) = word_at(pattern, p);
            if pw == b"#" {
                star = Some((p_next, k));
                p = p_next;
                continue;
            }
            let (kw, k_next) = word_at(key, k);
            if pw == b"*" || pw == kw {
                p = p_next;
                k = k_next;
                continue;
            }
        }
        // Mismatch (or pattern exhausted): let the last `#` swallow one more key word.
        match star {
            Some((sp, sk)) => {
                let (_, sk_next) = word_at(key, sk);
                star = Some((sp, sk_next));
                p = sp;
                k = sk_next;
            }
            None => return false,
        }
    }
    // Key exhausted: what is left of the pattern must all be `#` (each matching zero words).
    while p < p_end {
        let (pw, p_next) = word_at(pattern, p);
        if pw != b"#" {
            return false;
        }
        p = p_next;
    }
    true
}
