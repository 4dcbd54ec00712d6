//! Rate limits: a token bucket that says when the next delivery of a message type may start.
//!
//! A [`Rate`] is "`count` per period" (`10/s`, `100/m`, `5/h`); a [`TokenBucket`] holds up to
//! `burst` tokens, gains `count` tokens per period continuously, and each start takes one.
//! [`TokenBucket::take`] either grants a token or says how long to wait for the next one
//! ([`Take::Wait`]): the caller sleeps that long and asks again. A bucket starts full, so
//! `burst` starts may happen at once after a quiet spell; with `burst` 1 the starts are
//! spaced evenly, one per `period / count`.
//!
//! Time is passed in as a monotonic count of microseconds (`now_us`, any epoch); the bucket
//! reads no clock. A `now_us` below an earlier one (a clock that went backwards) adds no
//! tokens and is otherwise ignored: a wait is then counted from the latest time seen, not from
//! that `now_us` (so a clock set back by an hour does not stall the bucket for an hour).
//! Credit is counted exactly in integers (one token is `period` microsecond-counts), so no
//! rounding drifts the rate over any span.
//!
//! Never panics (every sum saturates, every size is checked when the bucket is made), never
//! allocates.

use core::fmt;

/// The smaller of two counts (`Ord::min` is not `const`).
const fn min(a: u64, b: u64) -> u64 {
    if a < b {
        a
    } else {
        b
    }
}

/// Microseconds in a second.
const SECOND_US: u64 = 1_000_000;

/// A rate: `count` per `period_us` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rate {
    count: u32,
    period_us: u64,
}

/// Why a rate or a bucket is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RateError {
    /// The count is 0: nothing would ever start.
    ZeroCount,
    /// The period is 0 microseconds.
    ZeroPeriod,
    /// The burst is 0: no token would ever fit in the bucket.
    ZeroBurst,
    /// `burst` tokens of this rate's period do not fit in a `u64` of microsecond-counts
    /// (a period of thousands of years).
    BucketTooLarge,
    /// The text is not `<count>`, `<count>/s`, `<count>/m` or `<count>/h`.
    Malformed,
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateError::ZeroCount => "rate count is 0",
            RateError::ZeroPeriod => "rate period is 0",
            RateError::ZeroBurst => "burst is 0",
            RateError::BucketTooLarge => "burst times period overflows the token bucket",
            RateError::Malformed => "rate is not <count>, <count>/s, <count>/m or <count>/h",
        })
    }
}

impl core::error::Error for RateError {}

impl Rate {
    /// `count` per `period_us` microseconds (checked when a bucket is made).
    pub const fn new(count: u32, period_us: u64) -> Self {
        Rate { count, period_us }
    }

    /// `count` per second.
    pub const fn per_second(count: u32) -> Self {
        Rate::new(count, SECOND_US)
    }

    /// `count` per minute.
    pub const fn per_minute(count: u32) -> Self {
        Rate::new(count, 60 * SECOND_US)
    }

    /// `count` per hour.
    pub const fn per_hour(count: u32) -> Self {
        Rate::new(count, 3_600 * SECOND_US)
    }

    /// Reads Celery's notation: `"10/s"`, `"100/m"`, `"5/h"`, or a bare count (per second).
    /// Surrounding ASCII spaces are allowed; the count is decimal digits only.
    ///
    /// # Errors
    /// [`RateError::Malformed`] for other text (including a count over `u32::MAX`),
    /// [`RateError::ZeroCount`] for a count of 0.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let text = text.trim_matches(' ');
        let (digits, period_us) = match text.split_once('/') {
            None => (text, SECOND_US),
            Some((digits, unit)) => {
                let period = match unit.trim_matches(' ') {
                    "s" => SECOND_US,
                    "m" => 60 * SECOND_US,
                    "h" => 3_600 * SECOND_US,
                    _ => return Err(RateError::Malformed),
                };
                (digits.trim_matches(' '), period)
            }
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RateError::Malformed);
        }
        let count: u32 = digits.parse().map_err(|_| RateError::Malformed)?;
        let rate = Rate::new(count, period_us);
        rate.check()?;
        Ok(rate)
    }

    /// Starts allowed per period.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period, in microseconds.
    pub const fn period_us(&self) -> u64 {
        self.period_us
    }

    /// Checks that the rate lets something start.
    ///
    /// # Errors
    /// [`RateError::ZeroCount`] or [`RateError::ZeroPeriod`].
    pub const fn check(&self) -> Result<(), RateError> {
        if self.count == 0 {
            Err(RateError::ZeroCount)
        } else if self.period_us == 0 {
            Err(RateError::ZeroPeriod)
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for Rate {
    /// `10/s`, `100/m`, `5/h`, or `3/1500000us` for other periods.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period_us {
            SECOND_US => write!(f, "{}/s", self.count),
            p if p == 60 * SECOND_US => write!(f, "{}/m", self.count),
            p if p == 3_600 * SECOND_US => write!(f, "{}/h", self.count),
            p => write!(f, "{}/{}us", self.count, p),
        }
    }
}

/// The answer of [`TokenBucket::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Take {
    /// A token was taken: start now.
    Granted,
    /// No token yet: the next one is there in `micros` microseconds (at least 1). Nothing
    /// was taken; ask again then.
    Wait {
        /// Microseconds until the next token.
        micros: u64,
    },
}

/// A token bucket of one rate; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TokenBucket {
    rate: Rate,
    burst: u32,
    /// Credit in microsecond-counts: one token is `rate.period_us` of them.
    credit: u64,
    /// Credit when full: `burst * rate.period_us`, plus less than one token (see `new`).
    capacity: u64,
    /// The latest `now_us` seen.
    last_us: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate`, as of `now_us`.
    ///
    /// # Errors
    /// [`RateError::ZeroCount`], [`RateError::ZeroPeriod`], [`RateError::ZeroBurst`], or
    /// [`RateError::BucketTooLarge`] when `burst * period_us` does not fit a `u64`.
    pub const fn new(rate: Rate, burst: u32, now_us: u64) -> Result<Self, RateError> {
        if let Err(e) = rate.check() {
            return Err(e);
        }
        if burst == 0 {
            return Err(RateError::ZeroBurst);
        }
        // The fraction of a token earned within the last microsecond is kept beyond the
        // burst (less than one token, so never an extra start): a caller that sleeps exactly
        // the waits it is told gets exactly the rate, with no rounding loss per token.
        let slack = min(rate.count as u64 - 1, rate.period_us - 1);
        let Some(capacity) = (burst as u64).checked_mul(rate.period_us) else {
            return Err(RateError::BucketTooLarge);
        };
        let Some(capacity) = capacity.checked_add(slack) else {
            return Err(RateError::BucketTooLarge);
        };
        Ok(TokenBucket {
            rate,
            burst,
            credit: capacity,
            capacity,
            last_us: now_us,
        })
    }

    /// The rate.
    pub const fn rate(&self) -> Rate {
        self.rate
    }

    /// The most tokens the bucket holds.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// Takes a token if there is one at `now_us`, else says how long until the next.
    pub fn take(&mut self, now_us: u64) -> Take {
        self.refill(now_us);
        let cost = self.rate.period_us;
        if self.credit >= cost {
            self.credit -= cost;
            Take::Granted
        } else {
            Take::Wait {
                micros: self.wait_us(),
            }
        }
    }

    /// Whole tokens in the bucket at `now_us` (at most [`TokenBucket::burst`]).
    pub fn available(&mut self, now_us: u64) -> u32 {
        self.refill(now_us);
        let tokens = self.credit / self.rate.period_us.max(1);
        u32::try_from(tokens).unwrap_or(u32::MAX)
    }

    /// Microseconds from `now_us` until a token is there (0 when one is there now).
    pub fn next_token_us(&mut self, now_us: u64) -> u64 {
        self.refill(now_us);
        if self.credit >= self.rate.period_us {
            0
        } else {
            self.wait_us()
        }
    }

    /// Microseconds until the credit reaches one token; the credit is below one token.
    fn wait_us(&self) -> u64 {
        let missing = self.rate.period_us.saturating_sub(self.credit);
        missing.div_ceil(u64::from(self.rate.count.max(1))).max(1)
    }

    /// Adds the credit earned since the latest `now_us` seen.
    fn refill(&mut self, now_us: u64) {
        if now_us <= self.last_us {
            return;
        }
        let earned = (now_us - self.last_us).saturating_mul(u64::from(self.rate.count));
        self.credit = self.credit.saturating_add(earned).min(self.capacity);
        self.last_us = now_us;
    }
}

#[cfg(any(test, fuzzing, lepus_reference))]
#[doc(hidden)]
pub mod reference;
#[cfg(test)]
mod tests;
