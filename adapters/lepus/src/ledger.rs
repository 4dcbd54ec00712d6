//! The schedule ledger: how replicas of a [`crate::Scheduler`] elect the one that publishes,
//! and how that one publishes a tick and records it in a single atomic step.
//!
//! A schedule named `billing` has a ledger queue `lepus.schedule.billing` holding a **token**:
//! a message whose body records the last tick of each entry (the body is the scheduler's; the
//! transport only moves bytes). Every replica [joins](ScheduleLedger::join) the ledger; the
//! broker hands the token to one of them, the **leader**, which holds it unsettled for as long
//! as it leads. A leader that dies (its connection closes) loses the token, and the broker
//! hands it to the next replica. To publish due ticks, the leader
//! [commits](LedgerLease::commit): the tick messages and a new token go out, and the tokens it
//! held are settled, all or nothing.
//!
//! - RabbitMQ ([`crate::AmqpTransport`]): a durable quorum queue with
//!   `x-single-active-consumer`, consumed on a channel of its own in transaction mode
//!   (`tx.select`); a commit is `basic.publish` of the ticks and of the new token,
//!   `basic.ack` of the held tokens, `tx.commit`.
//! - In-process ([`crate::InProcessBroker`]): a table of ledgers held by the broker; the
//!   first replica waiting gets the token when the leader's lease is dropped or released.
//! - [`crate::Broker`]: whichever of the two it is.
//!
//! Not part of [`crate::Transport`] on purpose: a transaction channel cannot use publisher
//! confirms, so the ledger needs a channel (and a trait) of its own.

use core::future::Future;

use crate::error::{Error, ErrorKind, Result};
use crate::names::check_queue_name;
use crate::transport::Publication;

/// The prefix of every ledger queue: `lepus.schedule.<schedule name>`.
pub const LEDGER_QUEUE_PREFIX: &str = "lepus.schedule.";

/// The most tokens a leader holds at once (its prefetch on RabbitMQ). Replicas that start
/// together may each seed a token; the leader merges what it holds at every commit, so more
/// than this many are merged over several commits, never lost.
pub const MAX_HELD_TOKENS: u16 = 64;

/// The ledger queue of the schedule `schedule`: `lepus.schedule.<schedule>`.
///
/// # Errors
/// [`ErrorKind::InvalidName`] when the result is no valid queue name (empty schedule name,
/// a character outside `A-Za-z0-9-_.:`, over 255 bytes).
pub fn ledger_queue_name(schedule: &str) -> Result<String> {
    if schedule.is_empty() {
        return Err(Error::new(ErrorKind::InvalidConfig {
            setting: "schedule name",
        })
        .context("a schedule needs a name (its ledger queue is lepus.schedule.<name>)"));
    }
    let name = format!("{LEDGER_QUEUE_PREFIX}{schedule}");
    check_queue_name(&name)?;
    Ok(name)
}

/// A transport that keeps schedule ledgers: [`crate::AmqpTransport`],
/// [`crate::InProcessBroker`], [`crate::Broker`].
pub trait ScheduleLedger: Send + Sync {
    /// What [`ScheduleLedger::join`] returns.
    type Lease: LedgerLease;

    /// Joins the election of the schedule `schedule` (see [`ledger_queue_name`]): declares
    /// its ledger (idempotent), seeds an empty token when nobody holds one and none waits,
    /// and stands as a candidate. The returned lease is not yet leading:
    /// [`LedgerLease::acquire`] waits for that.
    fn join(&self, schedule: &str) -> impl Future<Output = Result<Self::Lease>> + Send;
}

/// One replica's place in a schedule's election.
///
/// Dropping the lease gives every held token back (as a closed channel does on RabbitMQ),
/// so the next replica leads; [`LedgerLease::release`] does the same and waits for it.
pub trait LedgerLease: Send {
    /// Waits until this replica leads, then returns the bodies of every token it holds
    /// (at least one; several only when replicas seeded more than one, to be merged).
    /// Returns at once while leading. After a lost connection it joins again by itself.
    /// Cancel-safe.
    fn acquire(&mut self) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;

    /// True while this replica leads, as far as it knows: from the first token it received
    /// until the lease is lost (a closed channel or connection) or released.
    fn is_leading(&self) -> bool;

    /// Resolves when what [`LedgerLease::acquire`] would return has changed: another token
    /// arrived, or the lease was lost. Pending otherwise. Cancel-safe.
    fn changed(&mut self) -> impl Future<Output = ()> + Send;

    /// Publishes `ticks` and replaces every held token by one whose body is `ledger`, as one
    /// transaction: all of it happens or none of it does. Ticks are not mandatory (a tick no
    /// queue is bound for is dropped by the broker, as any unroutable message that is not
    /// mandatory). Afterwards the lease holds no token until `acquire` returns the new one.
    ///
    /// # Errors
    /// Invalid names, sizes or properties (nothing sent); [`ErrorKind::ChannelClosed`] or a
    /// connection error when the lease was lost (nothing committed, unless the broker
    /// committed and the answer was lost: the next token tells, as it records what was
    /// committed); [`ErrorKind::Timeout`].
    fn commit(
        &mut self,
        ticks: &[Publication<'_>],
        ledger: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Leaves the election, giving every held token back.
    fn release(self) -> impl Future<Output = Result<()>> + Send;
}

/// The lease of a [`crate::Broker`]'s ledger.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerLease {
    /// On the in-process broker.
    InProcess(crate::inprocess::InProcessLease),
    /// On RabbitMQ (boxed: it is much larger).
    #[cfg(feature = "amqp")]
    Amqp(Box<crate::amqp::AmqpLease>),
}

impl ScheduleLedger for crate::broker::Broker {
    type Lease = BrokerLease;

    async fn join(&self, schedule: &str) -> Result<BrokerLease> {
        match self {
            crate::broker::Broker::InProcess(b) => {
                b.join(schedule).await.map(BrokerLease::InProcess)
            }
            #[cfg(feature = "amqp")]
            crate::broker::Broker::Amqp(t) => t
                .join(schedule)
                .await
                .map(|l| BrokerLease::Amqp(Box::new(l))),
        }
    }
}

impl LedgerLease for BrokerLease {
    async fn acquire(&mut self) -> Result<Vec<Vec<u8>>> {
        match self {
            BrokerLease::InProcess(l) => l.acquire().await,
            #[cfg(feature = "amqp")]
            BrokerLease::Amqp(l) => l.acquire().await,
        }
    }

    fn is_leading(&self) -> bool {
        match self {
            BrokerLease::InProcess(l) => l.is_leading(),
            #[cfg(feature = "amqp")]
            BrokerLease::Amqp(l) => l.is_leading(),
        }
    }

    async fn changed(&mut self) {
        match self {
            BrokerLease::InProcess(l) => l.changed().await,
            #[cfg(feature = "amqp")]
            BrokerLease::Amqp(l) => l.changed().await,
        }
    }

    async fn commit(&mut self, ticks: &[Publication<'_>], ledger: &[u8]) -> Result<()> {
        match self {
            BrokerLease::InProcess(l) => l.commit(ticks, ledger).await,
            #[cfg(feature = "amqp")]
            BrokerLease::Amqp(l) => l.commit(ticks, ledger).await,
        }
    }

    async fn release(self) -> Result<()> {
        match self {
            BrokerLease::InProcess(l) => l.release().await,
            #[cfg(feature = "amqp")]
            BrokerLease::Amqp(l) => l.release().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_queue_names() {
        assert_eq!(
            ledger_queue_name("billing").ok().as_deref(),
            Some("lepus.schedule.billing")
        );
        assert!(ledger_queue_name("").is_err());
        assert!(ledger_queue_name("a b").is_err());
        assert!(ledger_queue_name(&"x".repeat(250)).is_err());
    }
}
