//! Batched acknowledgements: when a `basic.ack` with `multiple = true` up to a tag is safe.
//!
//! RabbitMQ's multiple ack up to tag `T` acknowledges **every** unacknowledged delivery of
//! the channel with a tag `<= T`. A consumer that handles deliveries concurrently may send it
//! only once every delivery up to `T` has either finished successfully (handler done,
//! follow-up publish confirmed) or was already settled on its own (nack, reject, single ack).
//! [`AckWindow`] tracks the delivery tags of one channel and answers exactly that.
//!
//! Use, per delivery: [`AckWindow::receive`] its tag; when its work is done either
//! [`AckWindow::complete`] it (it now awaits the batched ack) or, after settling it yourself
//! (nack/reject, sent before this call), [`AckWindow::settled`]. Then ask
//! [`AckWindow::flush_due`]`(now)`: `Some(t)` means "send one ack with `multiple = true` and
//! tag `t` now" (`t` is always a completed delivery of yours). Sleep until
//! [`AckWindow::next_deadline`] and ask again; on shutdown call [`AckWindow::flush`].
//!
//! Flush policy ([`AckPolicy`]): as soon as `max_pending` completed deliveries form a prefix
//! with no delivery in flight before them, when the oldest of them waited `max_delay_ms`, or
//! (with `flush_when_idle`) when nothing tracked is in flight.
//!
//! Capacity: the tags from the oldest unsettled one to the newest fit in `N` slots. A tag that
//! does not fit is refused with [`AckError::WindowFull`]: settle that delivery on its own and
//! report it with [`AckWindow::settled_untracked`]. While any refused delivery is unsettled,
//! every new tag is refused too, so that no multiple ack can cover one of them.
//!
//! Tags must increase (AMQP delivery tags do, per channel). Tags skipped between two received
//! ones are taken as not delivered to this consumer: use one window per channel, and one
//! consumer per channel. The window does no I/O and reads no clock (`now` is in caller
//! milliseconds, any epoch); it never panics and never allocates.

use core::fmt;

/// When the window asks for a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AckPolicy {
    /// Flush once this many completed deliveries await the ack (at least 1).
    pub max_pending: u32,
    /// Flush once the oldest awaiting delivery waited this long, in milliseconds.
    pub max_delay_ms: u64,
    /// Flush as soon as nothing tracked is in flight.
    pub flush_when_idle: bool,
}

impl Default for AckPolicy {
    /// 64 pending, 5 ms, flush when idle.
    fn default() -> Self {
        AckPolicy {
            max_pending: 64,
            max_delay_ms: 5,
            flush_when_idle: true,
        }
    }
}

/// Why the window refused a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AckError {
    /// The ack window is full (or a refused delivery is still unsettled): settle this
    /// delivery on its own, then call [`AckWindow::settled_untracked`].
    WindowFull,
    /// The tag is not above every tag received before (or is 0).
    TagNotIncreasing,
    /// The tag is not a tracked delivery in flight.
    UnknownTag,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckError::WindowFull => "ack window is full",
            AckError::TagNotIncreasing => "delivery tag is not increasing",
            AckError::UnknownTag => "delivery tag is not in flight in the ack window",
        })
    }
}

impl core::error::Error for AckError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Slot {
    /// Received, its work not finished.
    InFlight,
    /// Finished successfully, awaits the batched ack.
    Done,
    /// Settled on its own, or never delivered to us.
    Settled,
}

/// The delivery tags of one channel in flight, for batched acks; see the module docs.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AckWindow<const N: usize> {
    slots: [Slot; N],
    policy: AckPolicy,
    /// Every tag `<= base` is acknowledged or settled.
    base: u64,
    /// Every tag in `(base, prefix]` is done or settled.
    prefix: u64,
    /// Highest tracked tag; slots hold `(base, last]`.
    last: u64,
    /// Highest tag seen, tracked or refused.
    seen: u64,
    /// Highest done tag in `(base, prefix]`, when `pending > 0`.
    ack_through: u64,
    /// Done tags in `(base, prefix]`.
    pending: u32,
    in_flight: u32,
    untracked: u32,
    /// When the oldest pending delivery joined the prefix.
    pending_since: u64,
}

impl<const N: usize> AckWindow<N> {
    /// An empty window of `N` slots with `policy`.
    pub const fn new(policy: AckPolicy) -> Self {
        AckWindow {
            slots: [Slot::Settled; N],
            policy,
            base: 0,
            prefix: 0,
            last: 0,
            seen: 0,
            ack_through: 0,
            pending: 0,
            in_flight: 0,
            untracked: 0,
            pending_since: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> AckPolicy {
        self.policy
    }

    /// Tracked deliveries whose work is not finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Completed deliveries a flush would acknowledge now.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Refused deliveries not yet reported settled.
    pub fn untracked(&self) -> u32 {
        self.untracked
    }

    /// Nothing tracked is in flight, nothing awaits an ack, nothing refused is unsettled.
    pub fn is_idle(&self) -> bool {
        self.base == self.last && self.untracked == 0
    }

    /// Starts tracking a delivery.
    ///
    /// # Errors
    /// [`AckError::TagNotIncreasing`] (the window is unchanged); [`AckError::WindowFull`]:
    /// the delivery is counted as untracked, settle it on its own and report it with
    /// [`AckWindow::settled_untracked`].
    pub fn receive(&mut self, tag: u64) -> Result<(), AckError> {
        if tag <= self.seen {
            return Err(AckError::TagNotIncreasing);
        }
        self.seen = tag;
        if self.untracked > 0 {
            self.untracked = self.untracked.saturating_add(1);
            return Err(AckError::WindowFull);
        }
        if self.base == self.last {
            // Nothing tracked: skipped tags need no slots.
            let start = tag - 1;
            self.base = start;
            self.prefix = start;
            self.last = start;
        }
        if tag - self.base > N as u64 {
            self.untracked = self.untracked.saturating_add(1);
            return Err(AckError::WindowFull);
        }
        // Tags skipped since `last` were not delivered to us (or were refused and settled).
        let mut t = self.last + 1;
        while t < tag {
            self.set(t, Slot::Settled);
            t += 1;
        }
        self.set(tag, Slot::InFlight);
        self.last = tag;
        self.in_flight += 1;
        Ok(())
    }

    /// The delivery `tag` finished successfully (handler done, follow-up confirmed): it now
    /// awaits the batched ack. `now` starts the delay if it is the first one waiting.
    ///
    /// # Errors
    /// [`AckError::UnknownTag`] when `tag` is not tracked and in flight (window unchanged).
    pub fn complete(&mut self, tag: u64, now: u64) -> Result<(), AckError> {
        self.finish(tag, Slot::Done, now)
    }

    /// The delivery `tag` was settled on its own (nack, reject or single ack, already sent):
    /// a multiple ack will not count on it.
    ///
    /// # Errors
    /// [`AckError::UnknownTag`] when `tag` is not tracked and in flight (window unchanged).
    pub fn settled(&mut self, tag: u64, now: u64) -> Result<(), AckError> {
        self.finish(tag, Slot::Settled, now)
    }

    /// A delivery refused with [`AckError::WindowFull`] was settled on its own.
    pub fn settled_untracked(&mut self) {
        self.untracked = self.untracked.saturating_sub(1);
    }

    /// The tag to ack with `multiple = true` now, if the policy says so; the window then
    /// counts those deliveries as acknowledged.
    pub fn flush_due(&mut self, now: u64) -> Option<u64> {
        let due = self.pending >= self.policy.max_pending.max(1)
            || (self.policy.flush_when_idle && self.in_flight == 0)
            || self.next_deadline().is_some_and(|d| now >= d);
        if due {
            self.flush()
        } else {
            None
        }
    }

    /// The tag to ack with `multiple = true` now, whatever the policy (shutdown); `None` when
    /// nothing awaits an ack. The window counts those deliveries as acknowledged.
    pub fn flush(&mut self) -> Option<u64> {
        if self.pending == 0 {
            return None;
        }
        self.base = self.prefix;
        self.pending = 0;
        Some(self.ack_through)
    }

    /// When [`AckWindow::flush_due`] will flush by delay, if anything awaits an ack.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.pending > 0).then(|| self.pending_since.saturating_add(self.policy.max_delay_ms))
    }

    fn finish(&mut self, tag: u64, to: Slot, now: u64) -> Result<(), AckError> {
        if tag <= self.base || tag > self.last || self.get(tag) != Some(Slot::InFlight) {
            return Err(AckError::UnknownTag);
        }
        self.set(tag, to);
        self.in_flight -= 1;
        while self.prefix < self.last {
            match self.get(self.prefix + 1) {
                Some(Slot::Done) => {
                    if self.pending == 0 {
                        self.pending_since = now;
                    }
                    self.pending += 1;
                    self.prefix += 1;
                    self.ack_through = self.prefix;
                }
                Some(Slot::Settled) => self.prefix += 1,
                _ => break,
            }
        }
        if self.pending == 0 {
            self.base = self.prefix;
        }
        Ok(())
    }

    fn index(tag: u64) -> Option<usize> {
        tag.checked_rem(N as u64).map(|i| i as usize)
    }

    fn get(&self, tag: u64) -> Option<Slot> {
        Self::index(tag).and_then(|i| self.slots.get(i).copied())
    }

    fn set(&mut self, tag: u64, slot: Slot) {
        if let Some(s) = Self::index(tag).and_then(|i| self.slots.get_mut(i)) {
            *s = slot;
        }
    }
}

impl<const N: usize> Default for AckWindow<N> {
    fn default() -> Self {
        AckWindow::new(AckPolicy::default())
    }
}

#[cfg(test)]
mod tests;
