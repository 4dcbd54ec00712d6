//! Why a call failed.

use core::fmt;

use crate::error::Error;

/// What kind of failure a server reported (the [`super::HEADER_RPC_ERROR`] header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The handler returned [`crate::HandlerError::rejected`].
    Rejected,
    /// The handler returned [`crate::HandlerError::transient`]: trying again may succeed.
    Transient,
    /// The handler panicked.
    Panicked,
    /// The server could not decode the request.
    Decode,
    /// The server has no handler for the request's type.
    UnknownType,
    /// The request's body is over the server's size limit.
    TooLarge,
    /// The request was delivered to servers more often than the server's delivery limit
    /// allows (it crashed or hung them): it was dead-lettered, not run again.
    DeliveryLimit,
    /// The handler ran longer than the server's handler timeout.
    TimedOut,
    /// A kind this version does not know.
    Other,
}

impl RemoteErrorKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteErrorKind::Rejected => "rejected",
            RemoteErrorKind::Transient => "transient",
            RemoteErrorKind::Panicked => "panicked",
            RemoteErrorKind::Decode => "decode",
            RemoteErrorKind::UnknownType => "unknown-type",
            RemoteErrorKind::TooLarge => "too-large",
            RemoteErrorKind::DeliveryLimit => "delivery-limit",
            RemoteErrorKind::TimedOut => "timed-out",
            RemoteErrorKind::Other => "error",
        }
    }

    /// Reads a header value; unknown values are [`RemoteErrorKind::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "rejected" => RemoteErrorKind::Rejected,
            "transient" => RemoteErrorKind::Transient,
            "panicked" => RemoteErrorKind::Panicked,
            "decode" => RemoteErrorKind::Decode,
            "unknown-type" => RemoteErrorKind::UnknownType,
            "too-large" => RemoteErrorKind::TooLarge,
            "delivery-limit" => RemoteErrorKind::DeliveryLimit,
            "timed-out" => RemoteErrorKind::TimedOut,
            _ => RemoteErrorKind::Other,
        }
    }
}

impl fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one call produced no reply value. In a gather each request has its own.
#[derive(Debug)]
#[non_exhaustive]
pub enum RpcError {
    /// No reply before the deadline (its slot is freed; a later reply is dropped as late).
    Timeout,
    /// The server answered with an error.
    Remote {
        /// What failed.
        kind: RemoteErrorKind,
        /// The server's message.
        message: String,
    },
    /// The reply arrived but does not decode into the reply type.
    Decode(String),
    /// Too many calls in flight: the pending-request table is at its configured maximum.
    Full {
        /// The maximum number of calls in flight.
        capacity: usize,
    },
    /// The client is closed for good: it was dropped, or its transport refused to open a
    /// reply path again. A lost connection is not this: the client opens a new reply path, and
    /// calls whose replies were lost end with [`RpcError::Timeout`].
    Closed,
    /// Publishing the request failed (invalid name, unroutable, connection lost, ...).
    Transport(Error),
}

impl RpcError {
    /// True for [`RpcError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, RpcError::Timeout)
    }

    /// True for [`RpcError::Remote`].
    pub fn is_remote(&self) -> bool {
        matches!(self, RpcError::Remote { .. })
    }

    /// The remote error's kind and message, if the server reported one.
    pub fn remote(&self) -> Option<(RemoteErrorKind, &str)> {
        match self {
            RpcError::Remote { kind, message } => Some((*kind, message)),
            _ => None,
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Timeout => f.write_str("RPC call timed out"),
            RpcError::Remote { kind, message } => {
                write!(f, "RPC server reported an error ({kind}): {message}")
            }
            RpcError::Decode(e) => write!(f, "RPC reply does not decode: {e}"),
            RpcError::Full { capacity } => {
                write!(f, "too many RPC calls in flight (at most {capacity})")
            }
            RpcError::Closed => f.write_str("RPC client closed (no reply path can be opened)"),
            RpcError::Transport(e) => write!(f, "RPC request not sent: {e}"),
        }
    }
}

impl std::error::Error for RpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RpcError::Transport(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        RpcError::Transport(e)
    }
}
