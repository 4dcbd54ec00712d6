//! The retry decision: metadata + outcome of one delivery -> ack, retry after a delay, or
//! dead-letter with a reason.
//!
//! [`decide`] is total: every combination of metadata (including corrupt metadata) and outcome
//! maps to exactly one documented [`Decision`]. It never panics, never allocates, reads no clock
//! and no random number generator (the caller passes a random `u32` for jitter).

use core::fmt;

use super::{Backoff, RetryMetadata, Strategy, DEFAULT_RETRY_LIMIT};

/// What happened to one delivery of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// The handler succeeded.
    Success,
    /// The handler failed in a way that may succeed later (timeout, unavailable dependency).
    Transient,
    /// The handler rejected the message permanently; it is never retried.
    Rejected,
}

/// Why a message goes to the dead-letter queue; travels in the `x-lepus-reason` header.
///
/// [`DeadLetterReason::as_str`] is the stable wire string; [`DeadLetterReason::from_wire`]
/// parses it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// `"retries-exhausted"`: a transient failure after `retryCount` reached `retryLimit`.
    RetriesExhausted,
    /// `"rejected"`: the handler rejected the message permanently.
    Rejected,
    /// `"retry-ignored"`: a failure under `ignore` (or no strategy at all).
    RetryIgnored,
    /// `"unknown-strategy"`: `retryStrategy` holds a name this crate does not know.
    UnknownStrategy,
    /// `"empty-retry-interval"`: `repeat` with a `retryInterval` list that is present but empty.
    EmptyRetryInterval,
    /// `"unknown-type"`: no handler for the message's `className` (set by adapters).
    UnknownType,
    /// `"malformed"`: the body could not be decoded as an envelope (set by adapters).
    Malformed,
    /// `"wrong-content-type"`: the content type is not one Lepus decodes (set by adapters).
    WrongContentType,
    /// `"oversized"`: the message does not fit the receiver's buffer (set by adapters).
    Oversized,
    /// `"delivery-limit"`: the broker's delivery limit was reached (set by adapters).
    DeliveryLimit,
    /// `"follow-up-refused"`: the retry copy of a failed message was refused as invalid by
    /// the transport or the broker, so it cannot wait for its retry (set by adapters).
    FollowUpRefused,
    /// `"no-reply-to"`: an RPC request without a reply address, on a server that
    /// dead-letters those (set by adapters).
    NoReplyTo,
}

impl DeadLetterReason {
    /// Every reason, in declaration order.
    pub const ALL: [DeadLetterReason; 12] = [
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::Rejected,
        DeadLetterReason::RetryIgnored,
        DeadLetterReason::UnknownStrategy,
        DeadLetterReason::EmptyRetryInterval,
        DeadLetterReason::UnknownType,
        DeadLetterReason::Malformed,
        DeadLetterReason::WrongContentType,
        DeadLetterReason::Oversized,
        DeadLetterReason::DeliveryLimit,
        DeadLetterReason::FollowUpRefused,
        DeadLetterReason::NoReplyTo,
    ];

    /// The stable wire string, as put in the `x-lepus-reason` header.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries-exhausted",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::RetryIgnored => "retry-ignored",
            DeadLetterReason::UnknownStrategy => "unknown-strategy",
            DeadLetterReason::EmptyRetryInterval => "empty-retry-interval",
            DeadLetterReason::UnknownType => "unknown-type",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::WrongContentType => "wrong-content-type",
            DeadLetterReason::Oversized => "oversized",
            DeadLetterReason::DeliveryLimit => "delivery-limit",
            DeadLetterReason::FollowUpRefused => "follow-up-refused",
            DeadLetterReason::NoReplyTo => "no-reply-to",
        }
    }

    /// Parses a wire string produced by [`DeadLetterReason::as_str`]; `None` for anything else.
    pub fn from_wire(s: &str) -> Option<DeadLetterReason> {
        DeadLetterReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for DeadLetterReason {}

/// What to do with a message after one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Decision {
    /// Acknowledge: the message is done.
    Ack,
    /// Re-publish the message after `delay_ms` with `next` as its retry metadata.
    Retry {
        /// Delay before the next delivery, in milliseconds (0: retry immediately).
        delay_ms: u32,
        /// The metadata to publish: the input with `count` incremented by exactly one.
        next: RetryMetadata,
    },
    /// Publish the message to the dead-letter queue with this reason.
    DeadLetter {
        /// Why; goes into the `x-lepus-reason` header.
        reason: DeadLetterReason,
    },
}

impl Decision {
    /// The dead-letter reason, if this decision dead-letters.
    pub fn dead_letter_reason(&self) -> Option<DeadLetterReason> {
        match self {
            Decision::DeadLetter { reason } => Some(*reason),
            Decision::Ack | Decision::Retry { .. } => None,
        }
    }
}

/// Decides what to do with a message whose delivery ended with `outcome`.
///
/// `random` is any random number from the caller; it is used only for backoff jitter.
///
/// | outcome     | metadata                                         | decision                              |
/// |-------------|--------------------------------------------------|---------------------------------------|
/// | `Success`   | anything (even corrupt)                          | `Ack`                                 |
/// | `Rejected`  | anything                                         | dead-letter `rejected`                |
/// | `Transient` | `Unspecified` or `Ignore`                        | dead-letter `retry-ignored`           |
/// | `Transient` | `Unknown` strategy                               | dead-letter `unknown-strategy`        |
/// | `Transient` | `Repeat` with `retryInterval` present but empty  | dead-letter `empty-retry-interval`    |
/// | `Transient` | `count >= limit` (also count *above* limit)      | dead-letter `retries-exhausted`       |
/// | `Transient` | `Repeat`, no `retryInterval`                     | retry after 0 ms                      |
/// | `Transient` | `Repeat`, intervals `i`                          | retry after `i[min(count, len-1)]`    |
/// | `Transient` | `Backoff`                                        | retry after [`backoff_delay`]         |
///
/// A missing `retryLimit` means [`DEFAULT_RETRY_LIMIT`]; a missing `retryBackoff` under
/// `backoff` means [`Backoff::default`]. The `next` metadata of a retry is the input with
/// `count + 1` and nothing else changed (a missing limit stays missing). Apply a message type's
/// default policy first with [`RetryMetadata::with_default`].
///
/// Never panics, never allocates.
pub fn decide(meta: &RetryMetadata, outcome: Outcome, random: u32) -> Decision {
    match outcome {
        Outcome::Success => return Decision::Ack,
        Outcome::Rejected => return dead(DeadLetterReason::Rejected),
        Outcome::Transient => {}
    }
    match meta.strategy {
        Strategy::Unspecified | Strategy::Ignore => return dead(DeadLetterReason::RetryIgnored),
        Strategy::Unknown => return dead(DeadLetterReason::UnknownStrategy),
        Strategy::Repeat | Strategy::Backoff => {}
    }
    if meta.strategy == Strategy::Repeat && meta.intervals.as_ref().is_some_and(|i| i.is_empty()) {
        return dead(DeadLetterReason::EmptyRetryInterval);
    }
    if meta.count >= meta.effective_limit() {
        return dead(DeadLetterReason::RetriesExhausted);
    }
    let delay_ms = match meta.strategy {
        Strategy::Backoff => backoff_delay(&meta.backoff.unwrap_or_default(), meta.count, random),
        _ => repeat_delay(meta),
    };
    let mut next = meta.clone();
    // count < limit <= u32::MAX, so this never saturates; saturating keeps it obviously total.
    next.count = meta.count.saturating_add(1);
    Decision::Retry { delay_ms, next }
}

fn dead(reason: DeadLetterReason) -> Decision {
    Decision::DeadLetter { reason }
}

/// Delay of retry `count` under `repeat`: `interval[min(count, len-1)]`, or 0 without intervals.
fn repeat_delay(meta: &RetryMetadata) -> u32 {
    match &meta.intervals {
        None => 0,
        Some(intervals) => {
            let last = intervals.len().saturating_sub(1);
            let k = usize::try_from(meta.count).unwrap_or(usize::MAX).min(last);
            intervals.get(k).copied().unwrap_or(0)
        }
    }
}

/// The delay of retry `k` (0-based) under exponential backoff, in milliseconds.
///
/// Without jitter: `min(max_ms, base_ms * factor^k)`, computed with saturating arithmetic, so
/// delays never decrease as `k` grows. Corner cases are defined: `factor` 0 is treated as 1
/// (constant delay `base_ms`); `base_ms` 0 gives 0 (immediate retries); `max_ms` below
/// `base_ms` caps every delay at `max_ms`.
///
/// With jitter ("equal jitter"): for the computed delay `d`, the result lies in
/// `[d - d/2, d]`, picked by `random`.
///
/// Never panics, never allocates; O(log k).
pub fn backoff_delay(backoff: &Backoff, k: u32, random: u32) -> u32 {
    let factor = backoff.factor.max(1);
    let d = backoff
        .base_ms
        .saturating_mul(factor.saturating_pow(k))
        .min(backoff.max_ms);
    if !backoff.jitter {
        return d;
    }
    let half = d / 2;
    let low = d - half;
    // half <= u32::MAX / 2, so half + 1 never overflows and the sum stays <= d.
    low + random % (half + 1)
}

impl RetryMetadata {
    /// The retry limit in force: `retryLimit`, or [`DEFAULT_RETRY_LIMIT`] when absent.
    pub fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_RETRY_LIMIT)
    }

    /// Fills in a message type's default policy when this metadata names no strategy.
    ///
    /// If `self.strategy` is [`Strategy::Unspecified`], takes `policy`'s strategy and fills
    /// each of limit, intervals and backoff that `self` lacks from `policy`; `self.count` is
    /// always kept. Otherwise returns `self` unchanged (an explicit strategy, even `Unknown`,
    /// always wins). Never panics, never allocates.
    pub fn with_default(&self, policy: &RetryMetadata) -> RetryMetadata {
        if self.strategy != Strategy::Unspecified {
            return self.clone();
        }
        RetryMetadata {
            strategy: policy.strategy,
            limit: self.limit.or(policy.limit),
            count: self.count,
            intervals: self.intervals.clone().or_else(|| policy.intervals.clone()),
            backoff: self.backoff.or(policy.backoff),
        }
    }

    /// Shorthand for [`decide`]`(self, outcome, random)`.
    pub fn decide(&self, outcome: Outcome, random: u32) -> Decision {
        decide(self, outcome, random)
    }
}
