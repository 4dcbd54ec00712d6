//! The one error type of the std side: [`Error`] wraps an [`ErrorKind`] and answers questions
//! about it ([`Error::is_retryable`], [`Error::is_invalid_input`], ...).
//!
//! The kind is a small `Copy` enum, so callers match on it cheaply; the broker client's own
//! error, when there is one, travels as [`std::error::Error::source`] (no conversion from a
//! client's error type is public: the client is an implementation detail).

use core::fmt;

/// Which kind of name or short string failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameKind {
    /// An exchange name.
    Exchange,
    /// A queue name (including derived `<queue>.wait.<ms>` and `<queue>.dead` names).
    Queue,
    /// A routing key given to a publish.
    RoutingKey,
    /// A topic pattern used in a queue binding (`mailer.ad.*`, `mailer.#`).
    BindingPattern,
    /// A key of the message headers table (at any nesting depth).
    HeaderKey,
    /// A short-string message property (`type`, `content_type`, `message_id`, ...).
    Property(&'static str),
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameKind::Exchange => f.write_str("exchange name"),
            NameKind::Queue => f.write_str("queue name"),
            NameKind::RoutingKey => f.write_str("routing key"),
            NameKind::BindingPattern => f.write_str("binding pattern"),
            NameKind::HeaderKey => f.write_str("header key"),
            NameKind::Property(name) => write!(f, "message property `{name}`"),
        }
    }
}

/// What is wrong with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty where a name is required.
    Empty,
    /// The name is longer than an AMQP short string (255 bytes).
    TooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// The name holds a character outside letters, digits, `-`, `_`, `.` and `:`.
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
    /// Names starting with `amq.` are reserved to the broker and cannot be declared.
    ReservedPrefix,
    /// A queue name with a `*` or `#` word cannot be bound to the delay levels by its name
    /// (the binding pattern would read it as a wildcard).
    WildcardWord,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("is empty"),
            NameProblem::TooLong { len } => {
                write!(f, "is {len} bytes long, over the AMQP limit of 255")
            }
            NameProblem::InvalidChar { ch, at } => write!(
                f,
                "holds {ch:?} at byte {at} (allowed: letters, digits, '-', '_', '.', ':')"
            ),
            NameProblem::ReservedPrefix => f.write_str("starts with the reserved prefix `amq.`"),
            NameProblem::WildcardWord => f.write_str("has a `*` or `#` word"),
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A name, routing key, header key or short property failed validation; nothing was sent.
    InvalidName {
        /// Which name.
        what: NameKind,
        /// Why it is invalid.
        problem: NameProblem,
    },
    /// The message body is larger than the configured limit; nothing was sent.
    PayloadTooLarge {
        /// Body size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A message could not be serialized into an envelope; nothing was sent.
    Encode,
    /// The broker returned a mandatory message: no queue is bound for its routing key.
    Unroutable {
        /// AMQP reply code of the `basic.return` (312 `NO_ROUTE`).
        reply_code: u16,
    },
    /// The broker negatively acknowledged a publish: it did not take responsibility for it.
    Nacked,
    /// An ack, nack or reject had no effect: the delivery was already settled, or its channel
    /// closed or recovered. The broker will deliver the message again (at-least-once).
    AckLost,
    /// The connection to the broker could not be opened: nothing listens at the address, the
    /// server there gave no answer in time, or it closed the connection during the handshake.
    /// Retryable: a broker that is down or still starting may be up later.
    ConnectionFailed,
    /// The server at the address answered, but not as an AMQP 0-9-1 broker: bytes that are
    /// no AMQP frame (an HTTP server, another service's port) or the header of another AMQP
    /// version. Not retryable: the address is wrong, and connecting again will not fix it.
    WrongProtocol,
    /// The TLS handshake at an `amqps://` address failed: the server's certificate is not
    /// signed by a trusted CA or not issued for the host name in the address, the server
    /// refused our client certificate, or it does not speak TLS. Not retryable: the
    /// certificates or the address need fixing.
    TlsHandshake,
    /// The connection (or its socket) was lost or closed.
    ConnectionLost,
    /// The channel used by the operation is closed (often after an earlier broker refusal).
    ChannelClosed,
    /// The broker refused the operation with an AMQP error (e.g. 404 `NOT_FOUND`,
    /// 406 `PRECONDITION_FAILED` for a declaration that differs from the existing one).
    BrokerRefused {
        /// AMQP reply code.
        reply_code: u16,
    },
    /// The operation did not finish in time.
    Timeout,
    /// The transport was closed by its owner ([`crate::AmqpTransport::close`]): it does not
    /// connect again, so nothing more is sent or received through it.
    Closed,
    /// Any other error of the AMQP client.
    Broker,
    /// A fixed-capacity table of the in-process broker is full (e.g. the bindings of an
    /// exchange); nothing was changed.
    CapacityExceeded {
        /// What is full.
        what: &'static str,
    },
    /// A configuration value is out of its range (e.g. a concurrency of 0); nothing started.
    InvalidConfig {
        /// The setting.
        setting: &'static str,
    },
    /// The operation needs a cargo feature of `lepus` that this build left out (e.g.
    /// RabbitMQ without `amqp`); nothing was attempted.
    FeatureDisabled {
        /// The feature to enable.
        feature: &'static str,
    },
}

/// The error of every fallible operation of this crate.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: Option<Box<str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// An error of the given kind, without context or source.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            kind,
            context: None,
            source: None,
        }
    }

    /// Adds a human-readable context (what was being done, on which name).
    #[must_use]
    pub fn context(mut self, context: impl Into<Box<str>>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Adds the underlying error (for example that of the client a transport implemented
    /// outside this crate uses), shown by `Display` and returned by
    /// [`std::error::Error::source`].
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True when trying again later may succeed: lost connection or channel, timeout, nack,
    /// lost ack (the broker redelivers), or a broker that was unreachable. Not for a server
    /// that is not an AMQP broker ([`ErrorKind::WrongProtocol`]): that address needs fixing.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Nacked
                | ErrorKind::AckLost
                | ErrorKind::ConnectionFailed
                | ErrorKind::ConnectionLost
                | ErrorKind::ChannelClosed
                | ErrorKind::Timeout
        )
    }

    /// True when the caller's input was rejected before anything reached the broker.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::InvalidName { .. }
                | ErrorKind::PayloadTooLarge { .. }
                | ErrorKind::Encode
                | ErrorKind::InvalidConfig { .. }
        )
    }

    /// True when the message was returned as unroutable (no queue bound).
    pub fn is_unroutable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unroutable { .. })
    }

    /// True when the connection could not be opened (including to a server that is not an
    /// AMQP broker, or after a failed TLS handshake) or was lost.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectionFailed
                | ErrorKind::WrongProtocol
                | ErrorKind::TlsHandshake
                | ErrorKind::ConnectionLost
        )
    }

    pub(crate) fn invalid_name(what: NameKind, problem: NameProblem) -> Self {
        Error::new(ErrorKind::InvalidName { what, problem })
    }

    /// Wraps an error of the AMQP client under a kind chosen by the caller.
    #[cfg(feature = "amqp")]
    pub(crate) fn with_lapin(kind: ErrorKind, source: lapin::Error) -> Self {
        Error {
            kind,
            context: None,
            source: Some(Box::new(source)),
        }
    }

    /// Wraps an error of the AMQP client, classifying it.
    #[cfg(feature = "amqp")]
    pub(crate) fn from_lapin(error: lapin::Error) -> Self {
        use lapin::ErrorKind as L;
        let kind = match error.kind() {
            L::IOError(_)
            | L::RuntimeShutdownError(_)
            | L::InvalidConnectionState(_)
            | L::MissingHeartbeatError => ErrorKind::ConnectionLost,
            L::InvalidChannel(_) | L::InvalidChannelState(..) => ErrorKind::ChannelClosed,
            // A hard error (connection exception: 320 connection-forced, 5xx) closes the whole
            // connection, whichever operation it answered: that connection is lost and the
            // transport reconnects. RabbitMQ answers so, for one, a `basic.consume` on a quorum
            // queue that has no leader for a while (541 INTERNAL_ERROR "failed consuming from
            // quorum queue", during a failover): taking that for a refusal ended the consumer
            // for good.
            L::ProtocolError(e) if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Hard(_)) => {
                ErrorKind::ConnectionLost
            }
            L::ProtocolError(e) => ErrorKind::BrokerRefused {
                reply_code: e.get_id(),
            },
            _ => ErrorKind::Broker,
        };
        Error {
            kind,
            context: None,
            source: Some(Box::new(error)),
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::InvalidName { what, problem } => write!(f, "invalid {what}: it {problem}"),
            ErrorKind::PayloadTooLarge { size, limit } => write!(
                f,
                "message body of {size} bytes exceeds the limit of {limit} bytes"
            ),
            ErrorKind::Encode => f.write_str("message could not be encoded"),
            ErrorKind::Unroutable { reply_code } => write!(
                f,
                "message returned as unroutable (reply code {reply_code}): no queue is bound for its routing key"
            ),
            ErrorKind::Nacked => f.write_str("the broker nacked the message"),
            ErrorKind::AckLost => f.write_str(
                "acknowledgement had no effect (already settled, or channel closed/recovered); the broker will redeliver",
            ),
            ErrorKind::ConnectionFailed => f.write_str("cannot connect to the broker"),
            ErrorKind::WrongProtocol => f.write_str("not an AMQP 0-9-1 broker"),
            ErrorKind::TlsHandshake => f.write_str("TLS handshake failed"),
            ErrorKind::ConnectionLost => f.write_str("connection to the broker lost"),
            ErrorKind::ChannelClosed => f.write_str("channel closed"),
            ErrorKind::BrokerRefused { reply_code } => {
                write!(f, "the broker refused the operation (reply code {reply_code})")
            }
            ErrorKind::Timeout => f.write_str("timed out"),
            ErrorKind::Closed => f.write_str("the transport was closed by its owner"),
            ErrorKind::Broker => f.write_str("AMQP client error"),
            ErrorKind::CapacityExceeded { what } => write!(f, "capacity exceeded: {what} full"),
            ErrorKind::InvalidConfig { setting } => write!(f, "invalid configuration: {setting}"),
            ErrorKind::FeatureDisabled { feature } => {
                write!(f, "this build of lepus lacks the `{feature}` feature")
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(context) = &self.context {
            write!(f, "{context}: ")?;
        }
        fmt::Display::fmt(&self.kind, f)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| &**e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "amqp")]
    #[test]
    fn hard_amqp_errors_are_lost_connections_and_soft_ones_refusals() {
        use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};
        let hard = |e| {
            Error::from_lapin(lapin::Error::from(lapin::ErrorKind::ProtocolError(
                AMQPError::new(AMQPErrorKind::Hard(e), "closed".into()),
            )))
        };
        // What RabbitMQ answers to a consume on a quorum queue without a leader.
        let internal = hard(AMQPHardError::INTERNALERROR);
        assert_eq!(internal.kind(), ErrorKind::ConnectionLost);
        assert!(internal.is_connection_error());
        assert!(hard(AMQPHardError::CONNECTIONFORCED).is_connection_error());
        let soft = Error::from_lapin(lapin::Error::from(lapin::ErrorKind::ProtocolError(
            AMQPError::new(
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND),
                "no queue".into(),
            ),
        )));
        assert_eq!(soft.kind(), ErrorKind::BrokerRefused { reply_code: 404 });
        assert!(!soft.is_connection_error());
    }

    #[test]
    fn display_names_the_problem() {
        let e = Error::invalid_name(NameKind::RoutingKey, NameProblem::TooLong { len: 300 });
        assert_eq!(
            e.to_string(),
            "invalid routing key: it is 300 bytes long, over the AMQP limit of 255"
        );
        assert!(e.is_invalid_input());
        assert!(!e.is_retryable());
        let e = Error::new(ErrorKind::PayloadTooLarge { size: 10, limit: 5 }).context("publish");
        assert_eq!(
            e.to_string(),
            "publish: message body of 10 bytes exceeds the limit of 5 bytes"
        );
    }

    #[test]
    fn with_source_keeps_the_underlying_error() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "socket gone");
        let e = Error::new(ErrorKind::ConnectionLost).with_source(io);
        assert_eq!(e.to_string(), "connection to the broker lost: socket gone");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("socket gone")
        );
    }

    #[test]
    fn stays_small() {
        // Returned on every path: keep `Result<T, Error>` cheap to move.
        assert!(core::mem::size_of::<Error>() <= 80);
    }

    #[test]
    fn predicates() {
        assert!(Error::new(ErrorKind::ConnectionLost).is_retryable());
        assert!(Error::new(ErrorKind::ConnectionLost).is_connection_error());
        assert!(Error::new(ErrorKind::Unroutable { reply_code: 312 }).is_unroutable());
        assert!(!Error::new(ErrorKind::Unroutable { reply_code: 312 }).is_retryable());
        assert!(Error::new(ErrorKind::AckLost).is_retryable());
        assert!(Error::new(ErrorKind::ConnectionFailed).is_retryable());
        let wrong = Error::new(ErrorKind::WrongProtocol);
        assert!(
            !wrong.is_retryable(),
            "the address needs fixing, not patience"
        );
        assert!(wrong.is_connection_error());
        let tls = Error::new(ErrorKind::TlsHandshake);
        assert!(
            !tls.is_retryable(),
            "an untrusted certificate stays untrusted"
        );
        assert!(tls.is_connection_error());
        let full = Error::new(ErrorKind::CapacityExceeded {
            what: "bindings of a topic exchange",
        });
        assert!(!full.is_retryable());
        assert_eq!(
            full.to_string(),
            "capacity exceeded: bindings of a topic exchange full"
        );
    }
}
