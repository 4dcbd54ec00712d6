//! Matching publisher confirms and returned (unroutable) messages to the publish they belong to.
//!
//! Three things in lapin decide how this works.
//!
//! **Numbering.** lapin gives a publish its delivery tag under one lock (its acknowledgements)
//! and queues its frames under another (its frame queue). Two publishes started at once on two
//! threads can therefore reach the broker in the other order than their tags, while the broker
//! numbers messages in the order they arrive: each publish would then get the other's
//! `basic.ack` or `basic.nack`, and a nacked message be reported as stored. So every publish on
//! a channel starts under one lock of the channel's [`ConfirmTracker`]
//! ([`ConfirmTracker::publish`]): lapin's first poll of `basic_publish` takes the tag and queues
//! the frames, both before that poll returns, so tags and wire order agree.
//!
//! **Returns.** lapin hands each `basic.return` to whichever confirmation it resolves next;
//! when the broker confirms several publishes at once (`basic.ack` with `multiple`), that is
//! not necessarily the returned message's own (lapin walks its pending tags in hash order), and
//! a later single ack can carry it too. So a returned message is matched by its `message_id`,
//! which this crate sets on every publish. RabbitMQ sends a message's `basic.return` before its
//! `basic.ack`, so the confirmation carrying it (its *carrier*) is resolved no later than the
//! message's own. A publish is settled only once every confirmation resolved before its own
//! was looked at: every publish started before its resolution was seen has handed in its
//! confirmation, and lapin's acknowledgement lock was taken once ([`sync_with_lapin`]) so that
//! a `multiple` ack being resolved on another thread has finished.
//!
//! One case stays open: a publisher that stops waiting between starting a publish and handing
//! in its confirmation (its future dropped: the send timed out or the connection was lost)
//! takes the confirmation with it, and with it any returned message that confirmation carried;
//! the publish that message belongs to is then reported confirmed. A connection loss fails
//! every confirmation of the channel anyway; a send timeout leaves this case.
//!
//! The price of that rule: a publish started and then neither polled to the end nor dropped
//! holds back the settlement of every publish resolved after it started. Within this crate a
//! publish is always driven to its hand-in, as soon as its frames are written.
//!
//! **Wakers.** Each confirmation is polled with a waker of its own, which records that one
//! publish and wakes the settling task; the task polls only the confirmations that woke, so the
//! cost per publish is a constant number of polls, whatever the number in flight. A settled
//! outcome waits in its slot until its publisher takes it ([`Settlement`]).
//!
//! **Deadlines and a lost connection.** lapin does not always fail what was pending when the
//! connection is lost, and a blocked connection (resource alarm) leaves publishes waiting; a
//! publisher must not wait forever. The settling task of the channel watches both, for every
//! publish at once instead of a timer and a watch per publish: one timer, set for the earliest
//! deadline it knows of (a publish whose deadline is earlier than the timer's wakes the task to
//! set it again; after it fires, the task finds the next one), and the session's lost flag. A
//! publish past its deadline ends with [`ErrorKind::Timeout`], every publish of a lost
//! connection with [`ErrorKind::ConnectionLost`], whether it was still writing its frames or
//! waiting for its confirmation; a confirmation given up this way is the open case above.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use lapin::{Channel, Confirmation, PublisherConfirm};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};

/// The reply code of a returned message that carried none we could read (`NO_ROUTE`).
const NO_ROUTE: u16 = 312;

/// Starts publishes on one confirm-mode channel and settles their confirmations (see the
/// module docs). Dropping it lets its settling task end once every publish is settled.
#[derive(Debug)]
pub(crate) struct ConfirmTracker {
    shared: Arc<Shared>,
}

/// What the publishers and the settling task of one channel share.
#[derive(Debug)]
struct Shared {
    /// Held while a publish starts, so that lapin numbers publishes in their wire order.
    start: Mutex<()>,
    book: Mutex<Book>,
    woken: Arc<Woken>,
}

/// Publishes whose confirmation woke, and the settling task to tell.
#[derive(Debug, Default)]
struct Woken {
    slots: Mutex<Vec<u64>>,
    task: Notify,
}

/// One publish, from its start to its settlement.
enum Slot {
    /// Numbered by lapin; its confirmation is not handed in yet. The waker is its publisher's,
    /// to end the wait at the deadline or on a lost connection.
    Started {
        deadline: Option<Instant>,
        publisher: Waker,
    },
    /// Its confirmation is handed in and polled with its own waker.
    Sent(Tracked),
    /// Its confirmation resolved; waiting to be settled.
    Resolved(Tracked, lapin::Result<Answer>),
    /// The outcome, for the publisher to take.
    Settled(Result<()>),
    /// Taken, or abandoned by a publisher that stopped waiting.
    Done,
}

/// What the broker answered to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `basic.ack`.
    Ack,
    /// `basic.nack`.
    Nack,
    /// Nothing: the channel is not in confirm mode.
    NotRequested,
}

/// A publish's message id as the tracker keeps it, to match a returned message: in place when
/// it fits, as this crate's own ids do (about 30 bytes), so that keeping it allocates nothing.
pub(crate) enum TrackedId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Heap(Box<[u8]>),
}

/// The longest message id a [`TrackedId`] keeps in place.
const INLINE_ID: usize = 48;

impl TrackedId {
    pub(crate) fn new(id: &str) -> Self {
        let mut bytes = [0; INLINE_ID];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(place), Ok(len)) => {
                place.copy_from_slice(id.as_bytes());
                TrackedId::Inline { len, bytes }
            }
            _ => TrackedId::Heap(id.as_bytes().into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            TrackedId::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(bytes),
            TrackedId::Heap(bytes) => bytes,
        }
    }
}

/// A publish whose confirmation is handed in.
struct Tracked {
    message_id: TrackedId,
    confirm: PublisherConfirm,
    waker: Waker,
    /// The waker's own, taken back for another publish once nobody else holds it.
    slot_waker: Arc<SlotWaker>,
    deadline: Option<Instant>,
    /// The publisher waiting for the outcome, once it waited.
    publisher: Option<Waker>,
    /// The publisher stopped waiting: its outcome is dropped when settled.
    abandoned: bool,
}

/// The publishes of one channel in start order, from `base` on.
#[derive(Default)]
struct Book {
    base: u64,
    slots: VecDeque<Slot>,
    /// The oldest started publish that has not handed in its confirmation; the end of `slots`
    /// when there is none. Hand-ins come nearly in start order, so moving it is cheap.
    first_unhanded: u64,
    /// Resolved publishes not yet in `batch`.
    fresh: Vec<u64>,
    /// Resolved publishes to settle once every publish below `horizon` has handed in.
    batch: Option<Batch>,
    /// Message ids of returned messages whose publish is not settled yet, with the reply code.
    returned: HashMap<Box<[u8]>, u16>,
    /// The tracker is dropped: no publish starts any more.
    closed: bool,
    /// The connection is lost: every publish fails at once.
    lost: bool,
    /// The deadline the settling task's timer is set for (none: not set). A publish with an
    /// earlier one sets it here and wakes the task.
    timer: Option<Instant>,
    /// Wakers of settled publishes, for the next ones (an allocation each saved).
    spare_wakers: Vec<Arc<SlotWaker>>,
}

/// Spare wakers kept at most.
const SPARE_WAKERS: usize = 1024;

/// A resolved confirmation: the answer, and the message id and reply code of the returned
/// message it carried.
type Resolution = (lapin::Result<Answer>, Option<(Box<[u8]>, u16)>);

/// Resolved publishes settled together.
struct Batch {
    horizon: u64,
    slots: Vec<u64>,
}

impl std::fmt::Debug for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("base", &self.base)
            .field("in_flight", &self.slots.len())
            .finish()
    }
}

/// The waker of one publish's confirmation.
struct SlotWaker {
    slot: u64,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.woken.slots).push(self.slot);
        self.woken.task.notify_one();
    }
}

/// Marks a started publish abandoned if its publisher stops before handing in.
struct Ticket<'a> {
    shared: &'a Shared,
    slot: u64,
    handed: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.handed {
            let mut book = lock(&self.shared.book);
            if let Some(slot) = book.slot_mut(self.slot) {
                *slot = Slot::Done;
            }
            book.advance_unhanded();
            drop(book);
            self.shared.woken.task.notify_one();
        }
    }
}

/// The settled outcome of one publish whose confirmation is handed in (see
/// [`ConfirmTracker::publish`]). Dropping it before the outcome stops waiting for it.
pub(crate) struct Settlement<'a> {
    shared: &'a Shared,
    slot: u64,
    taken: bool,
}

impl Future for Settlement<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut book = lock(&self.shared.book);
        let outcome = match book.slot_mut(self.slot) {
            Some(Slot::Sent(tracked) | Slot::Resolved(tracked, _)) => {
                match &tracked.publisher {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => tracked.publisher = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            Some(place @ Slot::Settled(_)) => match std::mem::replace(place, Slot::Done) {
                Slot::Settled(outcome) => outcome,
                _ => Err(tracking_stopped()),
            },
            _ => Err(tracking_stopped()),
        };
        book.forget_done();
        drop(book);
        self.taken = true;
        Poll::Ready(outcome)
    }
}

impl Drop for Settlement<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut book = lock(&self.shared.book);
        match book.slot_mut(self.slot) {
            Some(Slot::Sent(tracked) | Slot::Resolved(tracked, _)) => {
                tracked.abandoned = true;
                tracked.publisher = None;
            }
            Some(place @ Slot::Settled(_)) => {
                *place = Slot::Done;
                book.forget_done();
            }
            _ => {}
        }
    }
}

impl ConfirmTracker {
    /// Starts the settling task of `channel` (in confirm mode); `lost` turns true once the
    /// channel's connection is lost.
    pub(crate) fn start(channel: Channel, lost: watch::Receiver<bool>) -> Self {
        let shared = Arc::new(Shared {
            start: Mutex::new(()),
            book: Mutex::new(Book::default()),
            woken: Arc::new(Woken::default()),
        });
        tokio::spawn(settle_loop(channel, Arc::clone(&shared), lost));
        ConfirmTracker { shared }
    }

    /// Runs `publish` (lapin's `basic_publish` on this tracker's channel), starting it under
    /// the channel's start lock, and tracks the confirmation of the publish of `message_id`;
    /// the [`Settlement`] it yields gives the settled outcome. A publish that fails to send,
    /// passes `deadline` or loses its connection before its frames are written is the error
    /// instead.
    pub(crate) fn publish<F>(
        &self,
        message_id: TrackedId,
        deadline: Option<Instant>,
        publish: F,
    ) -> Publish<'_, F>
    where
        F: Future<Output = lapin::Result<PublisherConfirm>>,
    {
        Publish {
            publish,
            shared: &self.shared,
            message_id: Some(message_id),
            deadline,
            ticket: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A publish from its start to the hand-in of its confirmation
    /// ([`ConfirmTracker::publish`]). A future of its own, not an `async fn`: lapin's publish
    /// is polled where it lies instead of being kept twice, as an argument and pinned.
    pub(crate) struct Publish<'a, F> {
        #[pin]
        publish: F,
        shared: &'a Shared,
        message_id: Option<TrackedId>,
        deadline: Option<Instant>,
        ticket: Option<Ticket<'a>>,
    }
}

impl<'a, F> Future for Publish<'a, F>
where
    F: Future<Output = lapin::Result<PublisherConfirm>>,
{
    type Output = Result<Settlement<'a>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let shared: &'a Shared = this.shared;
        let polled = match this.ticket {
            None => {
                // The slot is in the book before lapin numbers the publish: a settlement that
                // waits for every publish started before it then waits for this one too.
                let _start = lock(&shared.start);
                let mut book = lock(&shared.book);
                if book.lost {
                    return Poll::Ready(Err(connection_lost()));
                }
                let slot = book.end();
                book.slots.push_back(Slot::Started {
                    deadline: *this.deadline,
                    publisher: cx.waker().clone(),
                });
                let earlier = book.set_timer(*this.deadline);
                drop(book);
                if earlier {
                    shared.woken.task.notify_one();
                }
                *this.ticket = Some(Ticket {
                    shared,
                    slot,
                    handed: false,
                });
                this.publish.poll(cx)
            }
            Some(ticket) => {
                // Woken by lapin, or by the settling task ending the wait.
                let mut book = lock(&shared.book);
                match book.slot_mut(ticket.slot) {
                    Some(Slot::Started { publisher, .. }) => {
                        if !publisher.will_wake(cx.waker()) {
                            *publisher = cx.waker().clone();
                        }
                    }
                    Some(place @ Slot::Settled(_)) => {
                        let ended = std::mem::replace(place, Slot::Done);
                        return Poll::Ready(Err(ended_error(ended)));
                    }
                    _ => return Poll::Ready(Err(tracking_stopped())),
                }
                drop(book);
                this.publish.poll(cx)
            }
        };
        let confirm = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::from_lapin(e))),
            Poll::Ready(Ok(confirm)) => confirm,
        };
        let (Some(ticket), Some(message_id)) = (this.ticket.as_mut(), this.message_id.take())
        else {
            // Polled again after it was ready.
            return Poll::Ready(Err(tracking_stopped()));
        };
        Poll::Ready(hand_in(shared, ticket, message_id, *this.deadline, confirm))
    }
}

/// Puts a started publish's confirmation in the book, to be settled.
fn hand_in<'a>(
    shared: &'a Shared,
    ticket: &mut Ticket<'a>,
    message_id: TrackedId,
    deadline: Option<Instant>,
    confirm: PublisherConfirm,
) -> Result<Settlement<'a>> {
    let mut book = lock(&shared.book);
    // A spare is held by nobody else (see `finish`), so it can take this slot.
    let spare = book.spare_wakers.pop().and_then(|mut spare| {
        Arc::get_mut(&mut spare)?.slot = ticket.slot;
        Some(spare)
    });
    let slot_waker = spare.unwrap_or_else(|| {
        Arc::new(SlotWaker {
            slot: ticket.slot,
            woken: Arc::clone(&shared.woken),
        })
    });
    let mut tracked = Tracked {
        message_id,
        confirm,
        waker: Waker::from(Arc::clone(&slot_waker)),
        slot_waker,
        deadline,
        publisher: None,
        abandoned: false,
    };
    match book.slot_mut(ticket.slot) {
        Some(Slot::Started { .. }) => {}
        // Ended by the settling task just as its frames were written.
        Some(place @ Slot::Settled(_)) => {
            ticket.handed = true;
            let ended = std::mem::replace(place, Slot::Done);
            book.forget_done();
            return Err(ended_error(ended));
        }
        _ => return Err(tracking_stopped()),
    }
    ticket.handed = true;
    let waiting = book.batch.as_ref().is_some_and(|b| ticket.slot < b.horizon);
    let resolved = tracked.poll();
    let resolved_now = resolved.is_some();
    book.record(ticket.slot, tracked, resolved);
    book.advance_unhanded();
    drop(book);
    if resolved_now || waiting {
        shared.woken.task.notify_one();
    }
    Ok(Settlement {
        shared,
        slot: ticket.slot,
        taken: false,
    })
}

/// The error a publish ended by the settling task before its hand-in reports.
fn ended_error(slot: Slot) -> Error {
    match slot {
        Slot::Settled(Err(e)) => e,
        _ => tracking_stopped(),
    }
}

impl Drop for ConfirmTracker {
    fn drop(&mut self) {
        lock(&self.shared.book).closed = true;
        self.shared.woken.task.notify_one();
    }
}

impl Tracked {
    /// Polls the confirmation with its own waker; on resolution, the answer and the message
    /// id and reply code of the returned message it carried, if any.
    fn poll(&mut self) -> Option<Resolution> {
        let mut cx = Context::from_waker(&self.waker);
        let Poll::Ready(outcome) = Pin::new(&mut self.confirm).poll(&mut cx) else {
            return None;
        };
        let (acked, carried) = match outcome {
            Ok(Confirmation::Ack(carried)) => (Ok(Answer::Ack), carried),
            Ok(Confirmation::Nack(carried)) => (Ok(Answer::Nack), carried),
            Ok(Confirmation::NotRequested) => (Ok(Answer::NotRequested), None),
            Err(e) => (Err(e), None),
        };
        // Without an id the return cannot be matched: blame the carrier, as lapin does.
        let carried = carried.map(|message| {
            let id = match message.delivery.properties.message_id() {
                Some(id) => id.as_str().as_bytes().into(),
                None => self.message_id.as_bytes().into(),
            };
            (id, message.reply_code)
        });
        Some((acked, carried))
    }
}

impl Book {
    fn slot_mut(&mut self, slot: u64) -> Option<&mut Slot> {
        let index = usize::try_from(slot.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(index)
    }

    /// Puts a handed-in confirmation in its slot, resolved or not.
    fn record(&mut self, slot: u64, tracked: Tracked, resolved: Option<Resolution>) {
        let entry = match resolved {
            None => Slot::Sent(tracked),
            Some((acked, carried)) => {
                if let Some((id, reply_code)) = carried {
                    self.returned.insert(id, reply_code);
                }
                self.fresh.push(slot);
                Slot::Resolved(tracked, acked)
            }
        };
        if let Some(place) = self.slot_mut(slot) {
            *place = entry;
        }
    }

    /// Polls the confirmations that woke.
    fn poll_woken(&mut self, woken: &Woken) {
        let slots = std::mem::take(&mut *lock(&woken.slots));
        for slot in slots {
            let Some(place) = self.slot_mut(slot) else {
                continue;
            };
            let Slot::Sent(tracked) = place else {
                continue;
            };
            if let Some(resolved) = tracked.poll() {
                if let Slot::Sent(tracked) = std::mem::replace(place, Slot::Done) {
                    self.record(slot, tracked, Some(resolved));
                }
            }
        }
    }

    /// True when every publish below `horizon` has handed in its confirmation.
    fn handed_in_below(&self, horizon: u64) -> bool {
        self.first_unhanded >= horizon
    }

    /// Moves `first_unhanded` past the publishes that handed in or were abandoned.
    fn advance_unhanded(&mut self) {
        let end = self.end();
        while self.first_unhanded < end {
            if let Some(Slot::Started { .. }) = self.slot_mut(self.first_unhanded) {
                return;
            }
            self.first_unhanded += 1;
        }
    }

    /// The number the next publish to start gets.
    fn end(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Settles the publishes of `batch` (their publishers' wakers go to `wake`), then forgets
    /// finished publishes at the front.
    fn settle(&mut self, batch: Batch, wake: &mut Vec<Waker>) {
        for slot in batch.slots {
            let Some(place) = self.slot_mut(slot) else {
                continue;
            };
            if !matches!(place, Slot::Resolved(..)) {
                continue;
            }
            let Slot::Resolved(tracked, acked) = std::mem::replace(place, Slot::Done) else {
                continue;
            };
            let result = match acked {
                Err(e) => Err(Error::from_lapin(e)),
                Ok(_) if self.returned.contains_key(tracked.message_id.as_bytes()) => {
                    let reply_code = self.returned.remove(tracked.message_id.as_bytes());
                    Err(Error::new(ErrorKind::Unroutable {
                        reply_code: reply_code.unwrap_or(NO_ROUTE),
                    }))
                }
                Ok(Answer::Ack) => Ok(()),
                Ok(Answer::Nack) => Err(Error::new(ErrorKind::Nacked)),
                Ok(Answer::NotRequested) => {
                    Err(Error::new(ErrorKind::Broker).context("publisher confirms are not enabled"))
                }
            };
            self.finish(slot, tracked, result, wake);
        }
        self.forget_done();
    }

    /// Leaves `result` in `slot` for its publisher (dropped if it stopped waiting), and
    /// keeps the confirmation's waker for another publish when lapin let go of it.
    fn finish(&mut self, slot: u64, tracked: Tracked, result: Result<()>, wake: &mut Vec<Waker>) {
        let Tracked {
            confirm,
            waker,
            mut slot_waker,
            publisher,
            abandoned,
            ..
        } = tracked;
        drop(confirm);
        drop(waker);
        if self.spare_wakers.len() < SPARE_WAKERS && Arc::get_mut(&mut slot_waker).is_some() {
            self.spare_wakers.push(slot_waker);
        }
        if abandoned {
            return;
        }
        if let Some(place) = self.slot_mut(slot) {
            *place = Slot::Settled(result);
        }
        wake.extend(publisher);
    }

    /// Forgets finished publishes at the front.
    fn forget_done(&mut self) {
        while matches!(self.slots.front(), Some(Slot::Done)) {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() {
            // Returns of abandoned publishes: nobody will ask for them.
            self.returned.clear();
        }
    }

    /// Sets the settling task's timer for `deadline` if it is earlier than the timer's; true
    /// when the task must be woken to set it.
    fn set_timer(&mut self, deadline: Option<Instant>) -> bool {
        match (deadline, self.timer) {
            (Some(deadline), Some(timer)) if deadline >= timer => false,
            (Some(deadline), _) => {
                self.timer = Some(deadline);
                true
            }
            (None, _) => false,
        }
    }

    /// Ends every publish not confirmed yet whose deadline has passed (all of them when
    /// `lost`) with `error`, and sets the timer for the earliest deadline left.
    fn end_waits(&mut self, now: Instant, lost: bool, error: fn() -> Error, wake: &mut Vec<Waker>) {
        let due = |deadline: Option<Instant>| lost || deadline.is_some_and(|d| d <= now);
        let mut next: Option<Instant> = None;
        for index in 0..self.slots.len() {
            let slot = self.base + index as u64;
            let place = &mut self.slots[index];
            let deadline = match place {
                Slot::Started { deadline, .. } => *deadline,
                Slot::Sent(tracked) => tracked.deadline,
                _ => continue,
            };
            if !due(deadline) {
                next = match (next, deadline) {
                    (Some(n), Some(d)) => Some(n.min(d)),
                    (n, d) => n.or(d),
                };
                continue;
            }
            match std::mem::replace(place, Slot::Done) {
                Slot::Started { publisher, .. } => {
                    *place = Slot::Settled(Err(error()));
                    wake.push(publisher);
                }
                Slot::Sent(tracked) => self.finish(slot, tracked, Err(error()), wake),
                _ => {}
            }
        }
        self.timer = next;
        self.advance_unhanded();
        self.forget_done();
    }
}

async fn settle_loop(channel: Channel, shared: Arc<Shared>, mut lost: watch::Receiver<bool>) {
    let connection_gone = async move {
        // An error: the session's watcher is gone, so is the connection.
        let _ = lost.wait_for(|lost| *lost).await;
    };
    let mut connection_gone = pin!(connection_gone);
    let mut gone = false;
    let timer = tokio::time::sleep_until(Instant::now());
    let mut timer = pin!(timer);
    let mut armed: Option<Instant> = None;
    let mut wake = Vec::new();
    loop {
        let mut fired = false;
        // Not biased: under a steady stream of confirmations the timer and the lost
        // connection are still seen.
        tokio::select! {
            () = shared.woken.task.notified() => {}
            () = &mut connection_gone, if !gone => gone = true,
            () = &mut timer, if armed.is_some() => fired = true,
        }
        let mut book = lock(&shared.book);
        if gone && !book.lost {
            book.lost = true;
            book.end_waits(Instant::now(), true, connection_lost, &mut wake);
        } else if fired {
            armed = None;
            book.end_waits(Instant::now(), false, past_deadline, &mut wake);
        }
        book.poll_woken(&shared.woken);
        loop {
            if book.batch.is_none() && !book.fresh.is_empty() {
                let horizon = book.end();
                let slots = std::mem::take(&mut book.fresh);
                book.batch = Some(Batch { horizon, slots });
            }
            let Some(horizon) = book.batch.as_ref().map(|b| b.horizon) else {
                break;
            };
            if !book.handed_in_below(horizon) {
                // A handover below the horizon wakes this task again.
                break;
            }
            // Carriers resolved in a `multiple` ack that another thread is still resolving.
            sync_with_lapin(&channel);
            book.poll_woken(&shared.woken);
            if let Some(batch) = book.batch.take() {
                book.settle(batch, &mut wake);
            }
        }
        if book.timer != armed {
            armed = book.timer;
            if let Some(deadline) = armed {
                timer.as_mut().reset(deadline);
            }
        }
        let end = book.closed && book.slots.is_empty();
        drop(book);
        for publisher in wake.drain(..) {
            publisher.wake();
        }
        if end {
            return;
        }
    }
}

fn connection_lost() -> Error {
    Error::new(ErrorKind::ConnectionLost).context("connection lost before the confirmation")
}

fn past_deadline() -> Error {
    Error::new(ErrorKind::Timeout).context("no confirmation by the send deadline")
}

fn tracking_stopped() -> Error {
    Error::new(ErrorKind::ChannelClosed).context("publisher confirm tracking stopped")
}

/// Takes lapin's acknowledgement lock once and lets it go, so that every batch of
/// confirmations that had begun resolving has finished. (`wait_for_confirms` takes that lock
/// on its first poll; the future is then dropped. It also consumes lapin's "last pending"
/// marker, which only `wait_for_confirms` uses, and nothing here calls it otherwise.)
fn sync_with_lapin(channel: &Channel) {
    let mut noop = Context::from_waker(Waker::noop());
    let mut wait = pin!(channel.wait_for_confirms());
    let _ = wait.as_mut().poll(&mut noop);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
