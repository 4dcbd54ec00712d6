//! Exit codes and the error every subcommand returns.

use std::process::ExitCode;

/// An exit code a script can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0: done.
    Ok = 0,
    /// 1: bad command line or invalid input (JSON, names, options).
    Usage = 1,
    /// 2: the broker could not be reached, or the address is not an AMQP broker's.
    Unreachable = 2,
    /// 3: a queue, exchange or message does not exist.
    NotFound = 3,
    /// 4: the broker returned a message as unroutable (no queue bound for its key).
    Unroutable = 4,
    /// 5: any other broker or operation failure.
    Failed = 5,
    /// 6: `topology` (or `tail QUEUE`) cannot reach its source: neither the management API
    /// nor `rabbitmqctl` answered.
    SourceUnavailable = 6,
    /// 7: `route`: at least one key does not match the pattern.
    NoMatch = 7,
    /// 8: `call`: no reply before the timeout.
    Timeout = 8,
    /// 9: `call`: the RPC server answered with an error.
    RemoteError = 9,
    /// 130: interrupted by Ctrl-C before finishing (nothing was lost).
    Interrupted = 130,
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}

/// A failure: a message for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Code,
    /// What went wrong, for a person.
    pub message: String,
}

impl Failure {
    /// A failure with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Invalid input.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Code::Usage, message)
    }

    /// Something does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Failure::new(Code::NotFound, message)
    }
}

impl From<lepus::Error> for Failure {
    fn from(e: lepus::Error) -> Self {
        let code = match e.kind() {
            lepus::ErrorKind::ConnectionFailed | lepus::ErrorKind::WrongProtocol => {
                Code::Unreachable
            }
            lepus::ErrorKind::Unroutable { .. } => Code::Unroutable,
            _ if lepus::amqp::is_not_found(&e) => Code::NotFound,
            _ if e.is_invalid_input() => Code::Usage,
            _ => Code::Failed,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<lepus::RpcError> for Failure {
    fn from(e: lepus::RpcError) -> Self {
        match e {
            lepus::RpcError::Transport(e) => Failure::from(e),
            lepus::RpcError::Timeout => Failure::new(Code::Timeout, e.to_string()),
            lepus::RpcError::Remote { .. } => Failure::new(Code::RemoteError, e.to_string()),
            _ => Failure::new(Code::Failed, e.to_string()),
        }
    }
}
