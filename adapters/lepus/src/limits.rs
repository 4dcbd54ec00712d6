//! Per-type limits of a worker: at most N starts per period, at most M handlers at once.
//!
//! A message type declares them with `#[lepus(rate = "10/s", burst = 1, concurrency = 2)]`
//! (or [`crate::Message::limits`]), and a worker's [`crate::Registry::limit`] overrides them.
//! The worker **holds** a delivery that is over a limit: no handler runs, no retry is
//! counted, nothing is requeued or dead-lettered; the delivery waits, keeping its prefetch
//! slot, until a token and a slot are free (see [`crate::Worker`] for the head-of-line
//! behaviour). The token bucket is core's [`crate::core::rate::TokenBucket`].

use crate::core::rate::Rate;
use crate::error::{Error, ErrorKind, Result};

/// Limits of one message type on a worker: a rate with a burst, and a concurrency. Build with
/// [`Limits::new`] and the setters; [`Limits::validate`] (called by
/// [`crate::Registry::limit`] and when a worker starts) refuses a rate of 0, a burst of 0 and
/// a concurrency of 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Limits {
    /// Most handler starts per period; `None`: no rate limit.
    pub rate: Option<Rate>,
    /// Starts allowed at once after a quiet spell (the bucket's size). Default 1: starts
    /// spaced evenly, one per `period / count`, as Celery's `rate_limit`.
    pub burst: u32,
    /// Most handlers of this type running at once on this worker; `None`: only the worker's
    /// own concurrency applies.
    pub concurrency: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new()
    }
}

impl Limits {
    /// No limits (burst 1 once a rate is set).
    pub const fn new() -> Self {
        Limits {
            rate: None,
            burst: 1,
            concurrency: None,
        }
    }

    /// At most `count` starts per second.
    #[must_use]
    pub const fn per_second(self, count: u32) -> Self {
        self.rate(Rate::per_second(count))
    }

    /// At most `count` starts per minute.
    #[must_use]
    pub const fn per_minute(self, count: u32) -> Self {
        self.rate(Rate::per_minute(count))
    }

    /// At most `rate` starts.
    #[must_use]
    pub const fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets the burst (see [`Limits::burst`](Limits#structfield.burst)).
    #[must_use]
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// At most `handlers` of this type at once.
    #[must_use]
    pub const fn concurrency(mut self, handlers: usize) -> Self {
        self.concurrency = Some(handlers);
        self
    }

    /// True when neither a rate nor a concurrency is set.
    pub const fn is_unlimited(&self) -> bool {
        self.rate.is_none() && self.concurrency.is_none()
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] with setting `rate`, `burst` or `concurrency`.
    pub fn validate(&self) -> Result<()> {
        let invalid = |setting: &'static str, why: String| {
            Err(Error::new(ErrorKind::InvalidConfig { setting }).context(why))
        };
        if let Some(rate) = self.rate {
            if let Err(e) = rate.check() {
                return invalid("rate", format!("{rate}: {e}; nothing would ever start"));
            }
            if let Err(e) = crate::core::rate::TokenBucket::new(rate, self.burst, 0) {
                let setting = match e {
                    crate::core::rate::RateError::ZeroBurst => "burst",
                    _ => "rate",
                };
                return invalid(setting, format!("{rate} with burst {}: {e}", self.burst));
            }
        }
        if self.concurrency == Some(0) {
            return invalid(
                "concurrency",
                "0 handlers at once would never start one".to_owned(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_invalid_config() {
        assert!(Limits::new().validate().is_ok());
        assert!(Limits::new()
            .per_second(10)
            .concurrency(2)
            .validate()
            .is_ok());
        for (limits, setting) in [
            (Limits::new().per_second(0), "rate"),
            (Limits::new().rate(Rate::new(1, 0)), "rate"),
            (Limits::new().per_second(1).burst(0), "burst"),
            (Limits::new().concurrency(0), "concurrency"),
        ] {
            let err = limits.validate().expect_err(setting);
            assert_eq!(err.kind(), ErrorKind::InvalidConfig { setting });
        }
        // A burst without a rate limits nothing and is not checked.
        assert!(Limits::new().burst(0).validate().is_ok());
    }
}
