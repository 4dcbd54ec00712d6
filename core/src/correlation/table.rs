//! The pending-request table itself.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

use super::error::{GroupError, RegisterError, ReplyError};
use super::group::{Finish, GroupId, GroupProgress, GroupSlot, GroupState};
use super::recent::Recent;
use super::slot::{Entry, Slot, Storage};

/// Default number of scatter-gather groups open at once.
pub const DEFAULT_GROUPS: usize = 4;

/// Default number of finished ids remembered to classify duplicate and late replies.
pub const DEFAULT_RECENT: usize = 32;

/// A request that left the table (completed, expired or cancelled), with the caller's value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Finished<T> {
    /// The correlation id.
    pub id: u128,
    /// The value given at registration.
    pub value: T,
    /// The group's progress, when the request belonged to a group.
    pub group: Option<GroupProgress>,
}

/// Counts of replies that completed nothing, by class (saturating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplyCounters {
    /// Replies to ids neither pending nor recently finished.
    pub unknown: u64,
    /// Replies to already completed requests.
    pub duplicate: u64,
    /// Replies after the request's deadline.
    pub late: u64,
    /// Replies to cancelled requests.
    pub cancelled: u64,
}

/// A table with fixed array storage of `N` slots: no allocation.
pub type PendingArray<T, const N: usize> = PendingRequests<T, [Slot<T>; N]>;

/// The table of pending RPC requests; see the [module documentation](super).
///
/// `T` is the caller's value per request, `S` the slot storage, `G` the number of groups open
/// at once and `R` the number of finished ids remembered.
pub struct PendingRequests<T, S, const G: usize = DEFAULT_GROUPS, const R: usize = DEFAULT_RECENT> {
    slots: S,
    len: usize,
    groups: [GroupSlot; G],
    recent: Recent<R>,
    counters: ReplyCounters,
    /// Cached earliest deadline; valid unless `min_stale`.
    min_deadline: Cell<Option<u64>>,
    min_stale: Cell<bool>,
    _value: PhantomData<fn() -> T>,
}

impl<T, S, const G: usize, const R: usize> fmt::Debug for PendingRequests<T, S, G, R>
where
    S: Storage<T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRequests")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<T, const N: usize, const G: usize, const R: usize> PendingRequests<T, [Slot<T>; N], G, R> {
    /// An empty table in a fixed array of `N` slots. Never allocates.
    pub fn new() -> Self {
        Self::with_storage(core::array::from_fn(|_| Slot::new()))
    }
}

impl<T, const N: usize, const G: usize, const R: usize> Default
    for PendingRequests<T, [Slot<T>; N], G, R>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Home slot of `id` in a table of `cap > 0` slots: a multiplicative hash of both halves of
/// the id, reduced by multiply-shift (so any capacity works, not only powers of two).
fn home(id: u128, cap: usize) -> usize {
    let x = (id as u64) ^ ((id >> 64) as u64);
    let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // (h * cap) >> 64 < cap, so the cast is lossless.
    ((u128::from(h) * cap as u128) >> 64) as usize
}

fn step(i: usize, cap: usize) -> usize {
    if i + 1 >= cap {
        0
    } else {
        i + 1
    }
}

impl<T, S: Storage<T>, const G: usize, const R: usize> PendingRequests<T, S, G, R> {
    /// An empty table over `storage`. Slots still holding requests (from an earlier table) are
    /// cleared, dropping their values. O(slots); never allocates.
    pub fn with_storage(mut storage: S) -> Self {
        for slot in storage.as_mut() {
            slot.0 = None;
        }
        PendingRequests {
            slots: storage,
            len: 0,
            groups: [GroupSlot::default(); G],
            recent: Recent::new(),
            counters: ReplyCounters::default(),
            min_deadline: Cell::new(None),
            min_stale: Cell::new(false),
            _value: PhantomData,
        }
    }

    /// Pending requests.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no request is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of slots: the most requests that can be pending at once.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    /// Replies that completed nothing, by class.
    pub fn counters(&self) -> ReplyCounters {
        self.counters
    }

    /// Whether a request with this id is pending (even if past its deadline).
    pub fn contains(&self, id: u128) -> bool {
        self.find(id).is_some()
    }

    /// Deadline of the pending request `id`.
    pub fn deadline(&self, id: u128) -> Option<u64> {
        let i = self.find(id)?;
        self.entry(i).map(|e| e.deadline_ms)
    }

    fn entry(&self, i: usize) -> Option<&Entry<T>> {
        self.slots.as_ref().get(i).and_then(|s| s.0.as_ref())
    }

    /// Index of the slot holding `id`. At most `capacity` probes.
    fn find(&self, id: u128) -> Option<usize> {
        let slots = self.slots.as_ref();
        let cap = slots.len();
        if cap == 0 {
            return None;
        }
        let mut i = home(id, cap);
        for _ in 0..cap {
            match &slots.get(i)?.0 {
                None => return None,
                Some(e) if e.id == id => return Some(i),
                Some(_) => i = step(i, cap),
            }
        }
        None
    }

    /// Registers a pending request `id` that expires at `deadline_ms`, storing `value`.
    ///
    /// Errors hand `value` back: [`RegisterError::Duplicate`] if `id` is already pending,
    /// [`RegisterError::Full`] if every slot is taken. O(1) expected; never panics, never
    /// allocates.
    pub fn register(
        &mut self,
        id: u128,
        deadline_ms: u64,
        value: T,
    ) -> Result<(), RegisterError<T>> {
        if self.find(id).is_some() {
            return Err(RegisterError::Duplicate(value));
        }
        self.insert(Entry {
            id,
            deadline_ms,
            group: None,
            value,
        })
        .map_err(|e| RegisterError::Full(e.value))
    }

    /// Inserts an entry whose id is known not to be pending.
    fn insert(&mut self, entry: Entry<T>) -> Result<(), Entry<T>> {
        let slots = self.slots.as_mut();
        let cap = slots.len();
        if self.len >= cap {
            return Err(entry);
        }
        let deadline = entry.deadline_ms;
        let mut i = home(entry.id, cap);
        for _ in 0..cap {
            match slots.get_mut(i) {
                Some(slot) if slot.0.is_none() => {
                    slot.0 = Some(entry);
                    self.len += 1;
                    if !self.min_stale.get() {
                        let min = self
                            .min_deadline
                            .get()
                            .map_or(deadline, |m| m.min(deadline));
                        self.min_deadline.set(Some(min));
                    }
                    return Ok(());
                }
                _ => i = step(i, cap),
            }
        }
        // Unreachable while len < cap; reported as full rather than trusted.
        Err(entry)
    }

    /// Removes the entry at `i`, shifting later entries of its cluster back so that no
    /// tombstone is left. At most `capacity - 1` steps.
    fn remove_at(&mut self, i: usize) -> Option<Entry<T>> {
        let slots = self.slots.as_mut();
        let cap = slots.len();
        let removed = slots.get_mut(i)?.0.take()?;
        let mut hole = i;
        let mut j = i;
        for _ in 1..cap {
            j = step(j, cap);
            let Some(h) = slots
                .get(j)
                .and_then(|s| s.0.as_ref())
                .map(|e| home(e.id, cap))
            else {
                break;
            };
            // The entry at j stays if its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                let moved = slots.get_mut(j).and_then(|s| s.0.take());
                if let Some(slot) = slots.get_mut(hole) {
                    slot.0 = moved;
                }
                hole = j;
            }
        }
        self.len = self.len.saturating_sub(1);
        if self.min_deadline.get() == Some(removed.deadline_ms) {
            self.min_stale.set(true);
        }
        Some(removed)
    }

    /// Books the end of a request: recent ring and group counts.
    fn finish(&mut self, entry: Entry<T>, how: Finish) -> Finished<T> {
        self.recent.push(entry.id, how);
        let group = entry.group.and_then(|index| {
            let slot = self.groups.get_mut(usize::try_from(index).ok()?)?;
            let state = slot.state.as_mut()?;
            state.count(how);
            let progress = state.progress(GroupId {
                index,
                generation: slot.generation,
            });
            if progress.done {
                slot.state = None;
            }
            Some(progress)
        });
        Finished {
            id: entry.id,
            value: entry.value,
            group,
        }
    }

    /// Completes the pending request `id` with a reply received at `now_ms`, handing its value
    /// back (with its group's progress).
    ///
    /// A reply that completes nothing is classified and counted: [`ReplyError::Late`] when the
    /// request's deadline has passed (if it is still pending it stays for
    /// [`expire`](Self::expire) to hand back), [`ReplyError::Duplicate`],
    /// [`ReplyError::Cancelled`], or [`ReplyError::Unknown`] (also for ids finished longer than
    /// `R` finishes ago). O(1) expected for pending ids, O(R) otherwise; never panics, never
    /// allocates.
    pub fn complete(&mut self, id: u128, now_ms: u64) -> Result<Finished<T>, ReplyError> {
        let found = self
            .find(id)
            .and_then(|i| Some((i, self.entry(i)?.deadline_ms)));
        let err = match found {
            Some((i, deadline)) if now_ms < deadline => {
                let entry = self.remove_at(i).ok_or(ReplyError::Unknown)?;
                return Ok(self.finish(entry, Finish::Replied));
            }
            Some(_) => ReplyError::Late,
            None => match self.recent.find(id) {
                Some(Finish::Replied) => ReplyError::Duplicate,
                Some(Finish::Expired) => ReplyError::Late,
                Some(Finish::Cancelled) => ReplyError::Cancelled,
                None => ReplyError::Unknown,
            },
        };
        let c = &mut self.counters;
        let counter = match err {
            ReplyError::Unknown => &mut c.unknown,
            ReplyError::Duplicate => &mut c.duplicate,
            ReplyError::Late => &mut c.late,
            ReplyError::Cancelled => &mut c.cancelled,
        };
        *counter = counter.saturating_add(1);
        Err(err)
    }

    /// Cancels the pending request `id` (the requester gave up), handing its value back; a
    /// later reply is [`ReplyError::Cancelled`]. `None` if `id` is not pending.
    pub fn cancel(&mut self, id: u128) -> Option<Finished<T>> {
        let i = self.find(id)?;
        let entry = self.remove_at(i)?;
        Some(self.finish(entry, Finish::Cancelled))
    }

    /// The earliest deadline among pending requests: when to call [`expire`](Self::expire)
    /// next. O(1) usually; O(slots) after the earliest request left the table.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.min_stale.get() {
            let min = self
                .slots
                .as_ref()
                .iter()
                .filter_map(|s| s.0.as_ref())
                .map(|e| e.deadline_ms)
                .min();
            self.min_deadline.set(min);
            self.min_stale.set(false);
        }
        self.min_deadline.get()
    }

    /// Removes every pending request whose deadline is at or before `now_ms`, calling
    /// `expired` with each (a group member carries its group's progress, `timed_out` counting
    /// it). Returns how many expired.
    ///
    /// O(1) when nothing is due, O(slots) otherwise; never panics, never allocates.
    pub fn expire(&mut self, now_ms: u64, expired: impl FnMut(Finished<T>)) -> usize {
        match self.next_deadline() {
            Some(d) if d <= now_ms => {
                self.drain(|e| e.deadline_ms <= now_ms, Finish::Expired, expired)
            }
            _ => 0,
        }
    }

    /// Removes every entry matching `pred`, booking it as `how`.
    ///
    /// Scanning upwards is safe with backward-shift deletion: removing at `i` only moves
    /// unvisited entries down to indexes `>= i` (re-checked), and visited entries that wrapped
    /// around, which did not match.
    fn drain(
        &mut self,
        mut pred: impl FnMut(&Entry<T>) -> bool,
        how: Finish,
        mut each: impl FnMut(Finished<T>),
    ) -> usize {
        let cap = self.capacity();
        let mut n = 0;
        for i in 0..cap {
            // Each removal shrinks the table, so this inner loop is bounded by `len`.
            while self.entry(i).is_some_and(&mut pred) {
                let Some(entry) = self.remove_at(i) else {
                    break;
                };
                n += 1;
                let done = self.finish(entry, how);
                each(done);
            }
        }
        n
    }

    /// Opens a scatter-gather group: registers one request per id in `ids`, all expiring at
    /// `deadline_ms`, with values made by `value(id)`.
    ///
    /// All or nothing: on error nothing is registered and `value` is never called. Members are
    /// completed, expired and cancelled one by one like any request, and report the group's
    /// [`GroupProgress`]. The duplicate check is O(members²): groups are meant for tens to
    /// hundreds of members. Never panics, never allocates.
    pub fn open_group(
        &mut self,
        deadline_ms: u64,
        ids: &[u128],
        mut value: impl FnMut(u128) -> T,
    ) -> Result<GroupId, GroupError> {
        if ids.is_empty() {
            return Err(GroupError::Empty);
        }
        let members = u32::try_from(ids.len()).map_err(|_| GroupError::TableFull)?;
        if ids.len() > self.capacity().saturating_sub(self.len) {
            return Err(GroupError::TableFull);
        }
        for (k, id) in ids.iter().enumerate() {
            if self.find(*id).is_some() || ids.get(..k).is_some_and(|before| before.contains(id)) {
                return Err(GroupError::Duplicate);
            }
        }
        let (index, slot) = self
            .groups
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| Some((u32::try_from(i).ok()?, s)).filter(|(_, s)| s.state.is_none()))
            .ok_or(GroupError::GroupsFull)?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = Some(GroupState {
            deadline_ms,
            members,
            replied: 0,
            timed_out: 0,
            cancelled: 0,
        });
        let group = GroupId {
            index,
            generation: slot.generation,
        };
        for id in ids {
            let entry = Entry {
                id: *id,
                deadline_ms,
                group: Some(index),
                value: value(*id),
            };
            // Cannot fail: room and uniqueness were checked above. Should it ever, the member
            // is booked as cancelled so the group still finishes.
            if let Err(lost) = self.insert(entry) {
                let _ = self.finish(lost, Finish::Cancelled);
            }
        }
        Ok(group)
    }

    /// The progress of an open group; `None` once it is done (or for a stale id).
    pub fn group_progress(&self, group: GroupId) -> Option<GroupProgress> {
        let slot = self.groups.get(usize::try_from(group.index).ok()?)?;
        if slot.generation != group.generation {
            return None;
        }
        slot.state.map(|s| s.progress(group))
    }

    /// The deadline of an open group.
    pub fn group_deadline(&self, group: GroupId) -> Option<u64> {
        let slot = self.groups.get(usize::try_from(group.index).ok()?)?;
        if slot.generation != group.generation {
            return None;
        }
        slot.state.map(|s| s.deadline_ms)
    }

    /// Cancels every pending member of `group`, calling `cancelled` with each; the last one
    /// reports the group done. Returns how many were cancelled (0 for a done or stale group).
    /// O(slots); never panics, never allocates.
    pub fn cancel_group(&mut self, group: GroupId, cancelled: impl FnMut(Finished<T>)) -> usize {
        if self.group_progress(group).is_none() {
            return 0;
        }
        self.drain(
            |e| e.group == Some(group.index),
            Finish::Cancelled,
            cancelled,
        )
    }
}
