//! The client's pending calls: core's [`PendingRequests`] table behind a mutex, on tokio
//! time. Every matching decision (pending, duplicate, late, unknown) is the table's.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{oneshot, Notify};
use tokio::time::{Duration, Instant};

use crate::core::correlation::{PendingRequests, RegisterError, ReplyCounters, Slot};
use crate::reply::ReplyMessage;

use super::correlation::{new_correlation_id, parse_correlation_id};
use super::error::RpcError;
use super::wire::reply_correlation_id;

/// What a caller waits for.
pub(crate) type Outcome = Result<ReplyMessage, RpcError>;

/// A pending call: its deadline (kept to move it into a bigger table) and its caller.
pub(crate) struct Waiter {
    deadline_ms: u64,
    tx: oneshot::Sender<Outcome>,
}

type Table = PendingRequests<Waiter, Vec<Slot<Waiter>>>;

/// Counts of a client's replies that matched no call, and its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RpcCounters {
    /// Replies to ids neither pending nor recently finished (includes other clients' ids).
    pub unknown: u64,
    /// Second and later replies to one call.
    pub duplicate: u64,
    /// Replies after their call's deadline.
    pub late: u64,
    /// Replies to calls whose caller gave up (dropped its [`super::PendingReply`]).
    pub cancelled: u64,
    /// Replies without a readable correlation id.
    pub malformed: u64,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Slots of the table now (it grows up to the configured maximum).
    pub capacity: usize,
}

impl RpcCounters {
    /// Every reply dropped so far.
    pub fn dropped(&self) -> u64 {
        self.unknown
            .saturating_add(self.duplicate)
            .saturating_add(self.late)
            .saturating_add(self.cancelled)
            .saturating_add(self.malformed)
    }
}

struct State {
    table: Table,
    /// Counters of tables replaced by bigger ones.
    carried: ReplyCounters,
    malformed: u64,
    closed: bool,
    /// When the reply task's expiry timer fires (ms since the epoch; `u64::MAX`: not armed).
    /// A call expiring later needs no wake-up: the task looks again when the timer fires.
    armed_ms: u64,
}

/// The pending calls of one client.
pub(crate) struct Correlator {
    state: Mutex<State>,
    /// Wakes the reply task when a call was registered that expires before its timer.
    pub(crate) wake: Notify,
    epoch: Instant,
    max_capacity: usize,
}

fn empty_table(capacity: usize) -> Table {
    let mut slots = Vec::with_capacity(capacity);
    slots.resize_with(capacity, Slot::new);
    PendingRequests::with_storage(slots)
}

fn add(a: ReplyCounters, b: ReplyCounters) -> ReplyCounters {
    ReplyCounters {
        unknown: a.unknown.saturating_add(b.unknown),
        duplicate: a.duplicate.saturating_add(b.duplicate),
        late: a.late.saturating_add(b.late),
        cancelled: a.cancelled.saturating_add(b.cancelled),
    }
}

impl Correlator {
    pub(crate) fn new(initial_capacity: usize, max_capacity: usize) -> Self {
        let max_capacity = max_capacity.max(1);
        Correlator {
            state: Mutex::new(State {
                table: empty_table(initial_capacity.clamp(1, max_capacity)),
                carried: ReplyCounters::default(),
                malformed: 0,
                closed: false,
                armed_ms: u64::MAX,
            }),
            wake: Notify::new(),
            epoch: Instant::now(),
            max_capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// Registers a call expiring at `deadline`: its fresh random id and the receiver of its
    /// outcome. The table doubles (up to the maximum) when it is 80% full.
    pub(crate) fn register(
        &self,
        deadline: Instant,
    ) -> Result<(u128, oneshot::Receiver<Outcome>), RpcError> {
        let deadline_ms = self.ms(deadline);
        let (tx, rx) = oneshot::channel();
        let mut waiter = Waiter { deadline_ms, tx };
        {
            let mut s = self.lock();
            if s.closed {
                return Err(RpcError::Closed);
            }
            let cap = s.table.capacity();
            if (s.table.len() + 1) * 10 > cap * 8 && cap < self.max_capacity {
                grow(&mut s, cap.saturating_mul(2).min(self.max_capacity));
            }
            // A duplicate of a pending random 128-bit id is practically impossible; retry.
            let mut registered = None;
            for _ in 0..4 {
                let id = new_correlation_id();
                match s.table.register(id, deadline_ms, waiter) {
                    Ok(()) => {
                        registered = Some(id);
                        break;
                    }
                    Err(RegisterError::Full(_)) => {
                        return Err(RpcError::Full {
                            capacity: s.table.capacity(),
                        })
                    }
                    Err(RegisterError::Duplicate(w)) => waiter = w,
                }
            }
            let Some(id) = registered else {
                return Err(RpcError::Full {
                    capacity: s.table.capacity(),
                });
            };
            let earlier = deadline_ms < s.armed_ms;
            drop(s);
            if earlier {
                self.wake.notify_one();
            }
            Ok((id, rx))
        }
    }

    /// The caller gave up: frees the slot.
    pub(crate) fn cancel(&self, id: u128) {
        let _ = self.lock().table.cancel(id);
    }

    /// Hands a reply to its caller, or drops and counts it.
    pub(crate) fn complete(&self, reply: ReplyMessage) {
        let id = reply_correlation_id(&reply).and_then(|s| parse_correlation_id(&s));
        let now = self.now_ms();
        let mut s = self.lock();
        let Some(id) = id else {
            s.malformed = s.malformed.saturating_add(1);
            tracing::debug!("RPC reply without a readable correlation id dropped");
            return;
        };
        match s.table.complete(id, now) {
            Ok(done) => {
                drop(s);
                // The caller may have just gone; then the reply is simply dropped.
                let _ = done.value.tx.send(Ok(reply));
            }
            Err(e) => tracing::debug!(reason = %e, "RPC reply dropped"),
        }
    }

    /// Times out every call whose deadline passed.
    pub(crate) fn expire_due(&self) {
        let now = self.now_ms();
        let mut expired = Vec::new();
        self.lock().table.expire(now, |f| expired.push(f.value.tx));
        for tx in expired {
            let _ = tx.send(Err(RpcError::Timeout));
        }
    }

    /// When the reply task's expiry timer should fire next, which arms it: the earliest
    /// deadline pending or, with none pending, the time it was armed for if still ahead (a
    /// spare expiry pass then is cheaper than waking the task at every call, as sequential
    /// calls with an empty table in between would).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let now = self.now_ms();
        let mut s = self.lock();
        let ms = match s.table.next_deadline() {
            Some(ms) => ms,
            None if s.armed_ms != u64::MAX && s.armed_ms > now => s.armed_ms,
            None => {
                s.armed_ms = u64::MAX;
                return None;
            }
        };
        s.armed_ms = ms;
        Some(self.epoch + Duration::from_millis(ms))
    }

    /// No reply can arrive any more: fails every pending call with [`RpcError::Closed`] and
    /// refuses new ones.
    pub(crate) fn close(&self) {
        let mut failed = Vec::new();
        {
            let mut s = self.lock();
            s.closed = true;
            s.table.expire(u64::MAX, |f| failed.push(f.value.tx));
        }
        for tx in failed {
            let _ = tx.send(Err(RpcError::Closed));
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn counters(&self) -> RpcCounters {
        let s = self.lock();
        let c = add(s.carried, s.table.counters());
        RpcCounters {
            unknown: c.unknown,
            duplicate: c.duplicate,
            late: c.late,
            cancelled: c.cancelled,
            malformed: s.malformed,
            in_flight: s.table.len(),
            capacity: s.table.capacity(),
        }
    }
}

/// Moves every pending call into a table of `capacity` slots. The old table's memory of
/// recently finished ids is lost: a duplicate or late reply to one of those then counts as
/// unknown (still dropped).
fn grow(s: &mut State, capacity: usize) {
    let mut bigger = empty_table(capacity);
    let old = core::mem::replace(&mut s.table, empty_table(0));
    let mut old = old;
    s.carried = add(s.carried, old.counters());
    old.expire(u64::MAX, |f| {
        let deadline = f.value.deadline_ms;
        if let Err(e) = bigger.register(f.id, deadline, f.value) {
            // Cannot happen (more room, distinct ids); the caller then sees Closed.
            drop(e.into_value());
        }
    });
    s.table = bigger;
}
