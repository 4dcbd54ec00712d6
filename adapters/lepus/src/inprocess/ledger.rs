//! Schedule ledgers of the in-process broker ([`crate::ledger`]): a table held by the broker.
//!
//! The same observable semantics as RabbitMQ's single-active-consumer ledger queue: the
//! replica that joined first among those still there leads and holds the token; when its
//! lease is dropped or released the next one leads; a commit publishes the ticks and
//! replaces the token under the broker's locks, so among replicas on one broker every tick is
//! published once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::error::{Error, ErrorKind, Result};
use crate::inprocess::broker::{locked, InProcessBroker, Shared};
use crate::ledger::{ledger_queue_name, LedgerLease, ScheduleLedger};
use crate::transport::Publication;

/// Every ledger of one broker.
#[derive(Debug, Default)]
pub(crate) struct Ledgers {
    slots: Mutex<HashMap<String, Slot>>,
    /// Woken on every change of any slot.
    changed: Notify,
    next_id: std::sync::atomic::AtomicU64,
}

/// One schedule's ledger.
#[derive(Debug, Default)]
struct Slot {
    /// Token bodies (one, once a leader committed).
    tokens: Vec<Vec<u8>>,
    /// Replicas in the order they joined; the first one leads.
    candidates: Vec<u64>,
}

impl Ledgers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A replica's lease on an in-process schedule ledger; see [`LedgerLease`].
#[derive(Debug)]
pub struct InProcessLease {
    broker: InProcessBroker,
    queue: String,
    id: u64,
    /// Acquired since the last commit.
    holding: bool,
    left: bool,
}

impl ScheduleLedger for InProcessBroker {
    type Lease = InProcessLease;

    async fn join(&self, schedule: &str) -> Result<InProcessLease> {
        let queue = ledger_queue_name(schedule)?;
        let ledgers = &self.shared().ledgers;
        let id = ledgers
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut slots = ledgers.lock();
            let slot = slots.entry(queue.clone()).or_default();
            // Nobody holds a token and none waits: seed an empty one.
            if slot.tokens.is_empty() && slot.candidates.is_empty() {
                slot.tokens.push(Vec::new());
            }
            slot.candidates.push(id);
        }
        ledgers.changed.notify_waiters();
        tracing::debug!(queue, "joined the schedule ledger (in-process)");
        Ok(InProcessLease {
            broker: self.clone(),
            queue,
            id,
            holding: false,
            left: false,
        })
    }
}

impl InProcessLease {
    fn shared(&self) -> &Arc<Shared> {
        self.broker.shared()
    }

    /// The tokens, if this replica leads and there are any.
    fn held(&self) -> Option<Vec<Vec<u8>>> {
        let slots = self.shared().ledgers.lock();
        let slot = slots.get(&self.queue)?;
        (slot.candidates.first() == Some(&self.id) && !slot.tokens.is_empty())
            .then(|| slot.tokens.clone())
    }

    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let ledgers = &self.broker.shared().ledgers;
        if let Some(slot) = ledgers.lock().get_mut(&self.queue) {
            slot.candidates.retain(|&c| c != self.id);
        }
        ledgers.changed.notify_waiters();
    }
}

impl Drop for InProcessLease {
    fn drop(&mut self) {
        self.leave();
    }
}

impl LedgerLease for InProcessLease {
    async fn acquire(&mut self) -> Result<Vec<Vec<u8>>> {
        loop {
            let shared = Arc::clone(self.shared());
            let notified = shared.ledgers.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(tokens) = self.held() {
                self.holding = true;
                return Ok(tokens);
            }
            notified.await;
        }
    }

    fn is_leading(&self) -> bool {
        !self.left && self.held().is_some()
    }

    async fn changed(&mut self) {
        let shared = Arc::clone(self.shared());
        shared.ledgers.changed.notified().await;
    }

    async fn commit(&mut self, ticks: &[Publication<'_>], ledger: &[u8]) -> Result<()> {
        // Checked before anything happens, as a transaction channel would refuse them.
        let prepared = ticks
            .iter()
            .map(|p| self.broker.prepare(p))
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::clone(self.shared());
        let mut slots = shared.ledgers.lock();
        let slot = slots.get_mut(&self.queue);
        let Some(slot) = slot.filter(|s| {
            self.holding && s.candidates.first() == Some(&self.id) && !s.tokens.is_empty()
        }) else {
            return Err(Error::new(ErrorKind::ChannelClosed).context(format!(
                "commit to {:?}: this replica holds no token",
                self.queue
            )));
        };
        locked(&shared, |state, clock| {
            // A missing exchange fails the whole transaction before anything is published.
            for p in ticks {
                if !p.exchange.is_empty() && !state.has_exchange(p.exchange) {
                    return Err(
                        Error::new(ErrorKind::BrokerRefused { reply_code: 404 }).context(format!(
                            "no exchange {:?} (NOT_FOUND); nothing committed",
                            p.exchange
                        )),
                    );
                }
            }
            for (p, message) in ticks.iter().zip(prepared) {
                match state.publish(p.exchange, message, clock) {
                    // Ticks are not mandatory.
                    Err(e) if e.is_unroutable() => {}
                    other => other?,
                }
            }
            Ok(())
        })?;
        slot.tokens = vec![ledger.to_vec()];
        self.holding = false;
        drop(slots);
        shared.ledgers.changed.notify_waiters();
        Ok(())
    }

    async fn release(mut self) -> Result<()> {
        self.leave();
        Ok(())
    }
}
