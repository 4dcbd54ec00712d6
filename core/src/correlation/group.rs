//! Scatter-gather groups of requests sharing one deadline.

/// Names an open group; stale ids (of a finished group whose slot was reused) match nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GroupId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Where a group stands after one of its members finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GroupProgress {
    /// The group.
    pub group: GroupId,
    /// Members still pending.
    pub remaining: u32,
    /// Members that replied in time.
    pub replied: u32,
    /// Members whose deadline (the group's) passed without a reply.
    pub timed_out: u32,
    /// Members cancelled by the requester.
    pub cancelled: u32,
    /// No member is pending any more; the group is closed and its slot free.
    pub done: bool,
}

/// How a member left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Replied,
    Expired,
    Cancelled,
}

/// An open group's counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupState {
    pub(crate) deadline_ms: u64,
    pub(crate) members: u32,
    pub(crate) replied: u32,
    pub(crate) timed_out: u32,
    pub(crate) cancelled: u32,
}

impl GroupState {
    pub(crate) fn progress(&self, group: GroupId) -> GroupProgress {
        let finished = self
            .replied
            .saturating_add(self.timed_out)
            .saturating_add(self.cancelled);
        let remaining = self.members.saturating_sub(finished);
        GroupProgress {
            group,
            remaining,
            replied: self.replied,
            timed_out: self.timed_out,
            cancelled: self.cancelled,
            done: remaining == 0,
        }
    }

    pub(crate) fn count(&mut self, how: Finish) {
        let c = match how {
            Finish::Replied => &mut self.replied,
            Finish::Expired => &mut self.timed_out,
            Finish::Cancelled => &mut self.cancelled,
        };
        *c = c.saturating_add(1);
    }
}

/// One group slot: a generation counter and the open group, if any.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GroupSlot {
    pub(crate) generation: u32,
    pub(crate) state: Option<GroupState>,
}
