//! Holding a delivery over its type's limits (rate, concurrency) until it may start.
//!
//! A delivery task owns a [`Slot`]: the consumer's handler slot it took before the delivery
//! was read, and the runtime's stop signal. A policy that finds the delivery over a
//! [`TypeLimit`] calls [`TypeLimit::admit`], which **gives the handler slot up** while it
//! waits (so deliveries of other types keep being read and handled, up to the prefetch), waits
//! for a slot of the type's concurrency and then for a token of its rate (one waiter at a time
//! per type, first come first served), and takes a handler slot again before the handler
//! starts. If the consumer stops meanwhile, the wait ends with [`Admission::Stopping`] and the
//! policy gives the delivery back like one never started.
//!
//! The decision when the next start may happen is core's [`TokenBucket`]; this module only
//! sleeps (tokio's clock, so paused-time tests take no wall time). A waiter that wakes late
//! takes its token as of the time it was due, so a backlog runs at the rate over time; two
//! starts may then be a little closer than `period / count` when the first of them was late.

use core::future::Future;
use core::task::Poll;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::counters::Counters;
use crate::core::rate::{Take, TokenBucket};
use crate::limits::Limits;

/// A delivery task's handler slot, and what it shares with the consume loop: the slots, the
/// loop's stop signal, and the call for the loop's idle slot.
#[derive(Debug)]
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    permits: Arc<Semaphore>,
    stopping: watch::Receiver<bool>,
    /// Asks the consume loop to give up the slot it holds while it waits for a delivery.
    wanted: Arc<Notify>,
}

impl Slot {
    pub(crate) fn new(
        permit: OwnedSemaphorePermit,
        permits: Arc<Semaphore>,
        stopping: watch::Receiver<bool>,
        wanted: Arc<Notify>,
    ) -> Self {
        Slot {
            permit: Some(permit),
            permits,
            stopping,
            wanted,
        }
    }

    /// Gives the handler slot up while the delivery waits.
    fn release(&mut self) {
        self.permit = None;
    }

    /// Completes once the runtime stops (or is gone).
    async fn stopped(stopping: &mut watch::Receiver<bool>) {
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// Takes a handler slot again; false when the runtime stopped first.
    ///
    /// The consume loop holds a slot while it waits for the next delivery. With every other
    /// slot busy (always so at concurrency 1), a held delivery would wait for the next
    /// delivery to arrive; so once this wait is queued (the semaphore is first come, first
    /// served), the loop is asked to give its idle slot up, and takes one again behind us.
    async fn reacquire(&mut self) -> bool {
        if self.permit.is_some() {
            return true;
        }
        let mut acquire = std::pin::pin!(Arc::clone(&self.permits).acquire_owned());
        // Poll once: either a slot is free, or this wait is now queued.
        let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
        let acquired = match first {
            Poll::Ready(acquired) => acquired,
            Poll::Pending => {
                self.wanted.notify_one();
                tokio::select! {
                    biased;
                    () = Self::stopped(&mut self.stopping) => return false,
                    acquired = &mut acquire => acquired,
                }
            }
        };
        match acquired {
            Ok(permit) => {
                self.permit = Some(permit);
                true
            }
            Err(_) => false,
        }
    }
}

/// How a wait for a type's limits ended.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Start the handler; keep this until it finished (it holds the type's slot).
    Go(Admitted),
    /// The consumer stops: give the delivery back, unstarted.
    Stopping,
}

/// A type's concurrency slot, held while its handler runs.
#[derive(Debug)]
pub(crate) struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
}

/// The live limits of one message type on one consumer.
#[derive(Debug)]
pub(crate) struct TypeLimit {
    /// Time zero of the bucket's microsecond clock.
    epoch: Instant,
    /// The rate's bucket; the lock is the queue of the type's waiters.
    bucket: Option<Mutex<TokenBucket>>,
    /// The type's concurrency.
    slots: Option<Arc<Semaphore>>,
}

impl TypeLimit {
    /// The live form of `limits`; `None` when they limit nothing or are invalid (a worker
    /// refuses to start with invalid limits, see [`crate::Registry::validate`]).
    pub(crate) fn new(limits: &Limits) -> Option<Self> {
        if limits.is_unlimited() || limits.validate().is_err() {
            return None;
        }
        let bucket = match limits.rate {
            Some(rate) => Some(Mutex::new(TokenBucket::new(rate, limits.burst, 0).ok()?)),
            None => None,
        };
        Some(TypeLimit {
            epoch: Instant::now(),
            bucket,
            slots: limits.concurrency.map(|n| Arc::new(Semaphore::new(n))),
        })
    }

    /// Microseconds since `epoch`, on tokio's clock.
    fn now_us(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
    }

    /// Waits until a delivery of this type may start (see the module docs); counts it as
    /// held when it had to wait.
    pub(crate) async fn admit(&self, slot: &mut Slot, counters: &Counters) -> Admission {
        let mut held = false;
        let type_slot = match &self.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    hold(slot, &mut held, counters);
                    tokio::select! {
                        biased;
                        () = Slot::stopped(&mut slot.stopping) => return Admission::Stopping,
                        acquired = Arc::clone(slots).acquire_owned() => match acquired {
                            Ok(permit) => Some(permit),
                            Err(_) => return Admission::Stopping,
                        },
                    }
                }
            },
        };
        if let Some(bucket) = &self.bucket {
            let mut bucket = match bucket.try_lock() {
                Ok(bucket) => bucket,
                Err(_) => {
                    hold(slot, &mut held, counters);
                    tokio::select! {
                        biased;
                        () = Slot::stopped(&mut slot.stopping) => return Admission::Stopping,
                        bucket = bucket.lock() => bucket,
                    }
                }
            };
            let mut now = self.now_us();
            while let Take::Wait { micros } = bucket.take(now) {
                hold(slot, &mut held, counters);
                let due = now.saturating_add(micros);
                let sleep = match self.epoch.checked_add(Duration::from_micros(due)) {
                    Some(at) => tokio::time::sleep_until(at),
                    None => tokio::time::sleep(Duration::from_micros(micros)),
                };
                tokio::select! {
                    biased;
                    () = Slot::stopped(&mut slot.stopping) => return Admission::Stopping,
                    () = sleep => {}
                }
                // Take the token as of when it was due: a late wake-up (tokio's timer ticks
                // in milliseconds) would otherwise lose its lateness to the bucket's cap, and
                // a queue of waiters would run slower than the rate (1-2 % at 10/s).
                now = due;
            }
        }
        if !slot.reacquire().await {
            return Admission::Stopping;
        }
        Admission::Go(Admitted { _slot: type_slot })
    }
}

/// Marks the delivery held (counted once) and gives its handler slot up.
fn hold(slot: &mut Slot, held: &mut bool, counters: &Counters) {
    if !*held {
        *held = true;
        counters.bump(&counters.held, crate::metrics::MESSAGES_HELD);
        tracing::debug!("delivery held by its type's limits");
    }
    slot.release();
}
