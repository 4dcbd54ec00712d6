//! Errors of the pending-request table, one enum per operation.

use core::fmt;

/// Why [`register`](super::PendingRequests::register) refused a request; the caller's value is
/// handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RegisterError<T> {
    /// Every slot of the table holds a pending request.
    Full(T),
    /// A request with this correlation id is already pending.
    Duplicate(T),
}

impl<T> RegisterError<T> {
    /// The value that was not stored.
    pub fn into_value(self) -> T {
        match self {
            RegisterError::Full(v) | RegisterError::Duplicate(v) => v,
        }
    }
}

impl<T> fmt::Display for RegisterError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegisterError::Full(_) => "pending request table is full",
            RegisterError::Duplicate(_) => "correlation id is already pending",
        })
    }
}

impl<T: fmt::Debug> core::error::Error for RegisterError<T> {}

/// Why a reply completed no request. The table is left unchanged apart from its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReplyError {
    /// No pending or recently finished request has this correlation id.
    Unknown,
    /// The request was already completed by an earlier reply.
    Duplicate,
    /// The request's deadline has passed (it expired, or awaits `expire`).
    Late,
    /// The request was cancelled by the requester.
    Cancelled,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyError::Unknown => "reply to an unknown correlation id",
            ReplyError::Duplicate => "duplicate reply to an already completed request",
            ReplyError::Late => "late reply to an expired request",
            ReplyError::Cancelled => "reply to a cancelled request",
        })
    }
}

impl core::error::Error for ReplyError {}

/// Why [`open_group`](super::PendingRequests::open_group) refused a group. Nothing was
/// registered and the value factory was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum GroupError {
    /// The group has no member ids.
    Empty,
    /// Every group slot of the table is in use.
    GroupsFull,
    /// The table has fewer free slots than the group has members.
    TableFull,
    /// A member id is already pending, or listed twice.
    Duplicate,
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupError::Empty => "request group has no members",
            GroupError::GroupsFull => "request group slots are full",
            GroupError::TableFull => "pending request table has no room for the group",
            GroupError::Duplicate => "request group member id is duplicated or already pending",
        })
    }
}

impl core::error::Error for GroupError {}
