//! Typed messages: the talk's `AbstractMessage` as a trait.
//!
//! A message type is a serde type with a wire type name (the envelope's `className` and the
//! AMQP `type` property), a default routing key and a default retry policy. Derive it:
//!
//! ```
//! use lepus::{Message, RetryPolicy};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[serde(rename_all = "camelCase")]
//! #[lepus(routing_key = "mailer.ad.expired", retry = mail_policy)]
//! struct SendAdExpiredMail {
//!     ad_id: u64,
//! }
//!
//! fn mail_policy() -> RetryPolicy {
//!     RetryPolicy::repeat(5, [15_000, 30_000, 60_000, 300_000, 86_400_000])
//! }
//!
//! assert_eq!(SendAdExpiredMail::TYPE, "SendAdExpiredMail"); // the type's name by default
//! ```
//!
//! or write the impl (the derive writes exactly this):
//!
//! ```
//! # use lepus::{Message, RetryPolicy};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct SendAdExpiredMail { ad_id: u64 }
//! impl Message for SendAdExpiredMail {
//!     const TYPE: &'static str = "SendAdExpiredMail";
//!     const ROUTING_KEY: &'static str = "mailer.ad.expired";
//!     fn retry_policy() -> RetryPolicy {
//!         RetryPolicy::repeat(5, [15_000, 30_000, 60_000, 300_000, 86_400_000])
//!     }
//! }
//! ```
//!
//! The payload is JSON written by `serde_json`; the envelope around it (`className`, retry
//! metadata, RPC routing) is written and read by [`crate::core::envelope`], so the adapter
//! makes no envelope decision of its own.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::retry::{Backoff, RetryMetadata, Strategy, MAX_INTERVALS};
use crate::limits::Limits;

/// A message type: what a publisher sends and a worker's handler receives.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The wire type name: the envelope's `className` and the AMQP `type` property. Workers
    /// pick the handler by it.
    const TYPE: &'static str;

    /// The routing key used when the sender does not override it.
    const ROUTING_KEY: &'static str;

    /// The retry policy written into the envelope by publishers, and applied by workers to
    /// envelopes that name no `retryStrategy` (e.g. from other producers).
    ///
    /// Default: [`RetryPolicy::default`].
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    /// How fast and how many at once a worker starts handlers of this type (see
    /// [`Limits`]); a worker's [`crate::Registry::limit`] overrides it.
    ///
    /// Default: no limits.
    fn limits() -> Limits {
        Limits::new()
    }
}

/// How failures of a message type are retried: a thin builder around core's
/// [`RetryMetadata`] (which is what travels in the envelope).
///
/// **Units**: this builder takes **milliseconds** (`repeat(5, [15_000, 30_000])`); the wire
/// format's `retryInterval` and the CLI's `--retry-interval` are in **seconds**
/// (`[15, 30]`, fractions allowed: `0.5`); the envelope is written in seconds. A `limit` is
/// the number of *retries*: `repeat(3, ..)` allows 4 deliveries to the handler (the first
/// attempt and 3 retries), then dead-letters with the reason `retries-exhausted`.
///
/// Every wait happens on the delay levels ([`crate::delay`]), exact to the millisecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy(RetryMetadata);

impl RetryPolicy {
    /// Never retried: a failure is dead-lettered (`retryStrategy: "ignore"`).
    pub fn ignore() -> Self {
        RetryPolicy(RetryMetadata {
            strategy: Strategy::Ignore,
            ..RetryMetadata::default()
        })
    }

    /// Retried up to `limit` times, so handled at most `limit + 1` times (`repeat(3, ..)`: four
    /// attempts); retry `k` waits `intervals_ms[min(k, N-1)]` milliseconds (`retryStrategy:
    /// "repeat"`, `retryInterval`; the wire and the CLI count seconds). At most 16 intervals, checked at compile
    /// time. An empty array means "retry at once".
    pub fn repeat<const N: usize>(limit: u32, intervals_ms: [u32; N]) -> Self {
        const { assert!(N <= MAX_INTERVALS, "at most 16 retry intervals") };
        let intervals = if N == 0 {
            None
        } else {
            let mut list = crate::core::retry::Intervals::new();
            for ms in intervals_ms {
                // N <= MAX_INTERVALS (checked above), so every push fits.
                let _ = list.push(ms);
            }
            Some(list)
        };
        RetryPolicy(RetryMetadata {
            strategy: Strategy::Repeat,
            limit: Some(limit),
            count: 0,
            intervals,
            backoff: None,
        })
    }

    /// Retried up to `limit` times with exponential backoff
    /// (`retryStrategy: "backoff"`, `retryBackoff`).
    pub fn backoff(limit: u32, backoff: Backoff) -> Self {
        RetryPolicy(RetryMetadata {
            strategy: Strategy::Backoff,
            limit: Some(limit),
            count: 0,
            intervals: None,
            backoff: Some(backoff),
        })
    }

    /// The policy as core's envelope retry metadata (`retryCount` 0).
    pub fn metadata(&self) -> &RetryMetadata {
        &self.0
    }

    /// Unwraps into core's retry metadata.
    pub fn into_metadata(self) -> RetryMetadata {
        self.0
    }
}

/// Three retries after 1 s, 10 s and 60 s, then the dead-letter queue.
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::repeat(3, [1_000, 10_000, 60_000])
    }
}

impl From<RetryMetadata> for RetryPolicy {
    fn from(mut meta: RetryMetadata) -> Self {
        meta.count = 0;
        RetryPolicy(meta)
    }
}

impl From<RetryPolicy> for RetryMetadata {
    fn from(policy: RetryPolicy) -> Self {
        policy.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_builds_core_metadata() {
        let p = RetryPolicy::repeat(5, [15_000, 30_000]);
        let m = p.metadata();
        assert_eq!(m.strategy, Strategy::Repeat);
        assert_eq!(m.limit, Some(5));
        assert_eq!(m.intervals.as_deref(), Some(&[15_000, 30_000][..]));
        assert_eq!(RetryPolicy::repeat(2, []).metadata().intervals, None);
        assert_eq!(RetryPolicy::ignore().metadata().strategy, Strategy::Ignore);
    }
}
