//! Bounding redeliveries: what to do with a delivery the broker gives again.
//!
//! A message whose handler crashes the worker process, hangs until the connection drops, or is
//! requeued on every shutdown comes back again and again. Retries ([`crate::retry`]) cannot
//! count those deliveries: the handler never returned. This module bounds them:
//!
//! - **Quorum queues** count deliveries themselves: the broker adds `x-delivery-count` (the
//!   number of earlier failed deliveries) and, with `x-delivery-limit` on the queue,
//!   dead-letters the message itself. [`decide`] also dead-letters at the limit, so the bound
//!   holds even where the queue argument is missing (RabbitMQ 3.10 sets no default).
//! - **Classic queues** only say `redelivered`. The consumer keeps the count in the message:
//!   a redelivered message is published again into its queue with the count header
//!   ([`COUNT_HEADER`]) one higher, then the redelivered copy is acknowledged
//!   ([`Redelivery::Recount`]). The copy carries the count through any number of crashes.
//!
//! A consumer that stops (shutdown) gives back the deliveries it never started as copies
//! carrying [`earlier_deliveries`], not by requeueing them, so that restarts do not push
//! healthy messages towards the limit. On quorum queues the broker's count of a copy starts
//! again at zero, and the copy's [`COUNT_HEADER`] is added to it.
//!
//! `limit` is the number of deliveries allowed in all (first delivery included). The decision
//! does no I/O; it never panics and never allocates.
//!
//! ## Which counts are trusted
//!
//! [`COUNT_HEADER`] is an ordinary message header: anyone who can publish to the queue can set
//! it, and a third-party message may carry it for its own reasons. So [`decide`] reads it as
//! a claim of at most `limit - 1` earlier deliveries: **a header alone never dead-letters a
//! message**. A message claiming 1000 deliveries is handled once, as the last delivery
//! allowed (`redelivered` set); if that delivery does not finish, the classic redelivery
//! that follows is dead-lettered. Copies this module asks for always carry a count below the
//! limit, so the clamp never shortens the count of a message that was really redelivered.
//!
//! The broker's own `x-delivery-count` ([`QUORUM_COUNT_HEADER`]) is trusted as given. A
//! quorum queue flags every delivery it counted before as `redelivered` (RabbitMQ 3.8 to 4.x),
//! so a count on a delivery without that flag is not the broker's: the publisher wrote it, or
//! it is left from a queue the message was dead-lettered from, and classic queues never write
//! it. Such a count is ignored. With `redelivered` set it is used as given, even on a classic
//! queue, where the first delivery has then already run the handler.
//!
//! [`earlier_deliveries`] passes the header on as read (it has no limit to clamp to): its
//! result only ever becomes the header of a copy, which [`decide`] clamps when the copy
//! arrives. A message given back at a shutdown when it was already past the limit (a classic
//! redelivery or a quorum count at the limit) therefore gets one more delivery instead of
//! being dead-lettered; each give-back needs a graceful shutdown, so this cannot loop the way
//! a crash can.

/// Header in which the consumer keeps the number of deliveries of a message on classic queues.
pub const COUNT_HEADER: &str = "x-lepus-deliveries";

/// Header quorum queues set: how many times the message was delivered before and not acked.
pub const QUORUM_COUNT_HEADER: &str = "x-delivery-count";

/// Default number of deliveries allowed in all.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 10;

/// What the broker told about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeliveryInfo {
    /// The delivery's `redelivered` flag.
    pub redelivered: bool,
    /// `x-delivery-count` (quorum queues): earlier deliveries that were not acknowledged.
    /// Used only on a redelivery (see [Which counts are trusted](self#which-counts-are-trusted)).
    /// Leave it `None` on classic queues, which pass a publisher's value through unchanged:
    /// taken as the broker's count, it would replace the recount.
    pub quorum_count: Option<u64>,
    /// [`COUNT_HEADER`]: deliveries counted by the consumer before this copy was published.
    pub counted: Option<u64>,
}

/// What to do with a delivery before running its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Redelivery {
    /// Run the handler. `deliveries` is this delivery's number (1 for the first), and
    /// `redelivered` tells the handler it may have seen the message before.
    Handle {
        /// This delivery's number, 1-based.
        deliveries: u32,
        /// The message was (or may have been) delivered before.
        redelivered: bool,
    },
    /// Classic queue, redelivered: publish the message again into its queue with
    /// [`COUNT_HEADER`] set to `deliveries`, then acknowledge this delivery. The handler runs
    /// on the copy.
    Recount {
        /// The value for [`COUNT_HEADER`] on the copy.
        deliveries: u32,
    },
    /// The limit is reached: dead-letter with reason `delivery-limit`, do not run the handler.
    DeadLetter {
        /// Deliveries counted, this one included.
        deliveries: u32,
    },
}

/// Decides what to do with a delivery, given what the broker told and the `limit` of
/// deliveries in all (0 is taken as 1: a message is always delivered once).
///
/// [`COUNT_HEADER`] counts at most `limit - 1` (see [Which counts are
/// trusted](self#which-counts-are-trusted)): a fresh delivery is always handled, whatever its
/// header says.
pub fn decide(info: DeliveryInfo, limit: u32) -> Redelivery {
    let limit = u64::from(limit.max(1));
    let claimed = info.counted.unwrap_or(0);
    let (deliveries, recount) = count(info, claimed.min(limit - 1));
    if deliveries > limit {
        Redelivery::DeadLetter {
            deliveries: report(deliveries),
        }
    } else if recount {
        Redelivery::Recount {
            deliveries: report(deliveries.saturating_sub(1)),
        }
    } else {
        Redelivery::Handle {
            deliveries: report(deliveries),
            redelivered: deliveries > 1 || info.redelivered || claimed > 0,
        }
    }
}

/// The deliveries of the message before this one: the [`COUNT_HEADER`] of a copy that gives
/// this delivery back without running its handler (a consumer shutting down). Such a copy
/// arrives fresh, so the shutdown is not counted as a failed delivery, as a requeue would be
/// (it sets `redelivered`, and quorum queues count every requeue).
///
/// The [`COUNT_HEADER`] is carried over as read, unclamped: [`decide`] clamps it when the copy
/// arrives (see [Which counts are trusted](self#which-counts-are-trusted)).
pub fn earlier_deliveries(info: DeliveryInfo) -> u32 {
    report(count(info, info.counted.unwrap_or(0)).0.saturating_sub(1))
}

/// This delivery's number (1-based), and whether it is a classic-queue redelivery to recount;
/// `counted` is the [`COUNT_HEADER`] as the caller trusts it.
///
/// Counted in u64 so that no count, however corrupt, wraps or saturates below a limit.
fn count(info: DeliveryInfo, counted: u64) -> (u64, bool) {
    match (info.quorum_count, info.redelivered) {
        // The broker counts the deliveries of this copy; the copy's header those before it.
        (Some(earlier), true) => (counted.saturating_add(earlier).saturating_add(1), false),
        // A fresh delivery of the message or of a counted copy. A quorum count here is not the
        // broker's (it flags every delivery it has counted before as redelivered).
        (_, false) => (counted.saturating_add(1), false),
        // Redelivered by a classic queue: the earlier delivery of this copy never finished.
        (None, true) => (counted.saturating_add(2), true),
    }
}

fn report(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
