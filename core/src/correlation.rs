//! The table of pending RPC requests: correlation ids, deadlines and scatter-gather groups.
//!
//! A requester [registers](PendingRequests::register) a random 128-bit correlation id with an
//! absolute deadline and a value of its own (the std adapter stores a oneshot sender), publishes
//! the request, and [completes](PendingRequests::complete) the id when a reply arrives, getting
//! its value back. [`PendingRequests::expire`] hands back every request whose deadline passed;
//! [`PendingRequests::next_deadline`] tells the caller when to call it. The table does no I/O
//! and reads no clock: `now_ms` is always passed in (u64 milliseconds, any epoch).
//!
//! A request is in time when `now_ms < deadline_ms`, and expired when `now_ms >= deadline_ms`.
//!
//! Replies that match no pending request are classified, never confused with another request:
//! [`ReplyError::Duplicate`] (already completed), [`ReplyError::Late`] (already expired, or past
//! its deadline and waiting for `expire`), [`ReplyError::Cancelled`], or
//! [`ReplyError::Unknown`]. To tell these apart the table remembers the last `R` finished ids
//! in a ring (default [`DEFAULT_RECENT`]); an id that finished longer ago counts as `Unknown`.
//! Each class is counted in [`ReplyCounters`].
//!
//! Scatter-gather: [`PendingRequests::open_group`] registers several requests under one
//! deadline; completion, expiry and cancellation of a member report the group's
//! [`GroupProgress`], which is `done` once every member has replied, timed out or been
//! cancelled. The expiry of a group therefore reports each member that timed out.
//!
//! Storage: the slots live in anything that is `AsRef<[Slot<T>]> + AsMut<[Slot<T>]>` (see
//! [`Storage`]): a fixed array `[Slot<T>; N]` ([`PendingArray`], no allocation, for firmware), a
//! caller's `&mut [Slot<T>]`, or on std a `Vec<Slot<T>>` / `Box<[Slot<T>]>`. Every slot can be
//! used; for O(1) expected register and complete keep the table below about 80% full.
//!
//! Implementation: open addressing with linear probing over a multiplicative hash of the id and
//! backward-shift deletion (no tombstones, so lookups stay short however many requests come
//! and go). Every probe loop is bounded by the number of slots. Nothing in this module panics
//! or allocates.

mod error;
mod group;
mod recent;
mod slot;
mod table;

pub use error::{GroupError, RegisterError, ReplyError};
pub use group::{GroupId, GroupProgress};
pub use slot::{Slot, Storage};
pub use table::{
    Finished, PendingArray, PendingRequests, ReplyCounters, DEFAULT_GROUPS, DEFAULT_RECENT,
};

#[cfg(test)]
mod tests;
