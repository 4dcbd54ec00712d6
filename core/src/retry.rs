//! Retry metadata (the `retry*` keys of an envelope's metadata) and the retry state machine.
//!
//! Wire keys, as in the talk (slides 38-40), plus `retryBackoff` for exponential backoff:
//!
//! | key             | type                          | meaning                                   |
//! |-----------------|-------------------------------|-------------------------------------------|
//! | `retryStrategy` | `"ignore"`/`"repeat"`/`"backoff"` | how failures are retried              |
//! | `retryLimit`    | integer                       | retries allowed after the first delivery  |
//! | `retryCount`    | integer                       | retries done so far                       |
//! | `retryInterval` | array of seconds              | attempt k waits `interval[min(k, len-1)]` |
//! | `retryBackoff`  | `{"base": s, "factor": n, "max": s, "jitter": bool}` | exponential backoff |
//!
//! Durations travel in seconds (integers, or decimals such as `0.25`) and are held here in
//! milliseconds as `u32`, the range of RabbitMQ's `x-message-ttl`.

/// Maximum number of entries in `retryInterval`.
pub const MAX_INTERVALS: usize = 16;

/// Retry limit used when a strategy that retries carries no `retryLimit`.
pub const DEFAULT_RETRY_LIMIT: u32 = 3;

/// How failures of a message are retried (`retryStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Strategy {
    /// No `retryStrategy` key: the adapter may apply the message type's default policy;
    /// deciding on it as-is behaves like [`Strategy::Ignore`].
    #[default]
    Unspecified,
    /// `"ignore"`: never retried; a failure is dead-lettered.
    Ignore,
    /// `"repeat"`: retried up to `retryLimit` times, after `retryInterval` delays (or none).
    Repeat,
    /// `"backoff"`: retried up to `retryLimit` times with exponential backoff.
    Backoff,
    /// Any other string: corrupt metadata, dead-lettered with a reason.
    Unknown,
}

impl Strategy {
    /// The wire name (`"ignore"`, `"repeat"`, `"backoff"`); `None` for unspecified/unknown.
    pub const fn as_str(self) -> Option<&'static str> {
        match self {
            Strategy::Ignore => Some("ignore"),
            Strategy::Repeat => Some("repeat"),
            Strategy::Backoff => Some("backoff"),
            Strategy::Unspecified | Strategy::Unknown => None,
        }
    }

    /// Parses a wire name; anything else is [`Strategy::Unknown`].
    pub fn from_wire(name: &str) -> Strategy {
        match name {
            "ignore" => Strategy::Ignore,
            "repeat" => Strategy::Repeat,
            "backoff" => Strategy::Backoff,
            _ => Strategy::Unknown,
        }
    }
}

/// Exponential backoff parameters (`retryBackoff`), in milliseconds.
///
/// Retry k (0-based) waits `min(max_ms, base_ms * factor^k)`; with `jitter`, the caller's
/// random number picks a delay in the upper half of that ("equal jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Backoff {
    /// First delay, in milliseconds.
    pub base_ms: u32,
    /// Multiplier applied per retry.
    pub factor: u32,
    /// Upper bound of any delay, in milliseconds.
    pub max_ms: u32,
    /// Spread delays with the random number passed to the decision.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 1_000,
            factor: 2,
            max_ms: 300_000,
            jitter: false,
        }
    }
}

/// Declared retry delays (`retryInterval`), in milliseconds.
pub type Intervals = heapless::Vec<u32, MAX_INTERVALS>;

/// The retry part of an envelope's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RetryMetadata {
    /// `retryStrategy`.
    pub strategy: Strategy,
    /// `retryLimit`; `None` when absent.
    pub limit: Option<u32>,
    /// `retryCount`: retries already done (0 on the first delivery).
    pub count: u32,
    /// `retryInterval` in milliseconds; `None` when absent (an empty list is `Some(empty)`).
    pub intervals: Option<Intervals>,
    /// `retryBackoff`; `None` when absent.
    pub backoff: Option<Backoff>,
}

mod decide;
pub use decide::{backoff_delay, decide, DeadLetterReason, Decision, Outcome};

#[cfg(test)]
mod tests;
