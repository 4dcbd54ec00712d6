//! The token bucket's reference model, for its proptest and its fuzz target: credit advanced
//! one microsecond at a time and capped at every step, waits counted by stepping. Slow on
//! purpose; built for tests and fuzzing only.

use super::Take;

/// A token bucket that steps through time one microsecond at a time.
#[derive(Debug, Clone)]
pub struct SteppedBucket {
    count: u64,
    period: u64,
    capacity: u64,
    credit: u64,
    last: u64,
}

impl SteppedBucket {
    /// `count` tokens per `period` microseconds, `burst` tokens at most, full at time 0 (as
    /// `TokenBucket::new(Rate::new(count, period), burst, 0)`). `count` and `period` must
    /// not be 0.
    pub fn new(count: u32, period: u64, burst: u32) -> Self {
        let slack = (u64::from(count) - 1).min(period - 1);
        let capacity = u64::from(burst) * period + slack;
        SteppedBucket {
            count: u64::from(count),
            period,
            capacity,
            credit: capacity,
            last: 0,
        }
    }

    /// Moves time forwards to `now`, one microsecond at a time (never backwards).
    pub fn advance(&mut self, now: u64) {
        while self.last < now {
            self.last += 1;
            self.credit = (self.credit + self.count).min(self.capacity);
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: u64) -> u64 {
        self.advance(now);
        self.credit / self.period
    }

    /// Takes a token at `now`, or says how many microseconds until there is one.
    pub fn take(&mut self, now: u64) -> Take {
        self.advance(now);
        if self.credit >= self.period {
            self.credit -= self.period;
            return Take::Granted;
        }
        // Count the microseconds until the credit reaches a token.
        let (mut credit, mut micros) = (self.credit, 0);
        while credit < self.period {
            credit = (credit + self.count).min(self.capacity);
            micros += 1;
        }
        Take::Wait { micros }
    }
}
