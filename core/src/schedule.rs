//! Periodic ticks: which ticks of a schedule entry are due at `now`, and what the missed-tick
//! policy makes of those that fell due long ago.
//!
//! Times are Unix milliseconds (`u64`), passed in by the caller: nothing here reads a clock.
//! An entry's tick times come from a [`Ticks`] implementation: [`Every`] here (multiples of an
//! interval since the Unix epoch, so every replica agrees on them), a cron expression on the
//! std side. The record of an entry is `settled`: every tick at or before it was published
//! or skipped.
//!
//! [`due`] writes the due ticks into a caller's buffer and returns the new `settled` time; a
//! full buffer is not an error, the rest is due at the next call ([`Due::next`] is then at or
//! before `now`). It never panics and never allocates, whatever the times (overflow at the end
//! of `u64` means "no further tick").

/// The tick times of an entry.
pub trait Ticks {
    /// The first tick strictly after `ms`, if any.
    fn next_after(&self, ms: u64) -> Option<u64>;
    /// The latest tick at or before `ms`, if any.
    fn latest_at_or_before(&self, ms: u64) -> Option<u64>;
}

/// Ticks every `interval` milliseconds, at the multiples of the interval since the Unix
/// epoch: 1 s ticks on each whole second, 1 h on each whole hour (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Every {
    interval: core::num::NonZeroU64,
}

impl Every {
    /// Every `interval_ms` milliseconds; `None` for 0.
    pub const fn new(interval_ms: u64) -> Option<Every> {
        match core::num::NonZeroU64::new(interval_ms) {
            Some(interval) => Some(Every { interval }),
            None => None,
        }
    }

    /// The interval in milliseconds.
    pub const fn interval_ms(&self) -> u64 {
        self.interval.get()
    }
}

impl Ticks for Every {
    fn next_after(&self, ms: u64) -> Option<u64> {
        let every = self.interval.get();
        (ms / every).checked_add(1)?.checked_mul(every)
    }

    fn latest_at_or_before(&self, ms: u64) -> Option<u64> {
        let every = self.interval.get();
        Some(ms / every * every)
    }
}

/// What to do with ticks that fell due more than the allowed lateness ago (while no replica
/// ran).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Missed {
    /// Drop them; resume at the next tick. The default.
    #[default]
    Skip,
    /// Publish one catch-up tick (the latest one missed), then resume.
    RunOnce,
}

/// The outcome of [`due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Due {
    /// How many ticks were written to the buffer, in time order.
    pub count: usize,
    /// The entry's new record: every tick at or before it is published (once the caller
    /// published the written ones) or skipped.
    pub settled: u64,
    /// Whether ticks were missed (more than `missed_after_ms` late) and handled by the policy.
    pub missed: bool,
    /// The next tick after `settled`: at or before `now` when the buffer was full.
    pub next: Option<u64>,
}

/// The ticks of `ticks` due at `now` for an entry whose record is `settled`, written into
/// `out`. A tick more than `missed_after_ms` late is missed: [`Missed::Skip`] drops it,
/// [`Missed::RunOnce`] publishes the latest missed one. Later ticks (up to `now`) are all due.
/// A `settled` after `now` (a clock behind the one that wrote the record) makes nothing due.
///
/// Never panics, never allocates.
pub fn due<T: Ticks + ?Sized>(
    ticks: &T,
    policy: Missed,
    missed_after_ms: u64,
    settled: u64,
    now: u64,
    out: &mut [u64],
) -> Due {
    let mut count = 0;
    let mut at = settled;
    let mut missed = false;
    let cutoff = now.saturating_sub(missed_after_ms);
    if settled < cutoff {
        missed = ticks.next_after(settled).is_some_and(|t| t <= cutoff);
        if missed && policy == Missed::RunOnce {
            if let Some(t) = ticks.latest_at_or_before(cutoff).filter(|&t| t > settled) {
                if let Some(slot) = out.get_mut(count) {
                    *slot = t;
                    count += 1;
                    at = t;
                }
            }
        }
        // With the buffer full before the catch-up tick, the record stays: it comes next time.
        if !(missed && policy == Missed::RunOnce && count == 0) {
            at = at.max(cutoff);
        }
    }
    while let Some(slot) = out.get_mut(count) {
        match ticks.next_after(at) {
            Some(t) if t <= now => {
                *slot = t;
                count += 1;
                at = t;
            }
            _ => break,
        }
    }
    Due {
        count,
        settled: at.max(settled),
        missed,
        next: ticks.next_after(at.max(settled)),
    }
}

#[cfg(test)]
mod tests;
