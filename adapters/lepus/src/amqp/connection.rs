//! Opening the AMQP connection.

use lapin::{Connection, ConnectionProperties};

use crate::amqp::config::AmqpConfig;
use crate::error::{Error, ErrorKind, Result};

/// What to check when the server at the address is there but did not act as a broker.
const PORT_HINT: &str =
    "is AMQP_ADDR pointing at the broker's AMQP port? RabbitMQ listens on 5672, 5671 for amqps";

/// Connects to `config.addr`. Every failure names the address (password hidden) and says what
/// to check:
/// - nothing listens there, or the answer takes longer than `config.connect_timeout`:
///   [`ErrorKind::ConnectionFailed`];
/// - the server accepts, then closes before the AMQP handshake is done (a proxy with no broker
///   behind it, for one): [`ErrorKind::ConnectionFailed`];
/// - the server answers, but not in AMQP 0-9-1 (an HTTP server, another service, another AMQP
///   version): [`ErrorKind::WrongProtocol`], not retryable. The bytes it sent are not shown:
///   lapin's parser error does not keep them.
pub async fn connect(config: &AmqpConfig) -> Result<Connection> {
    let mut props = ConnectionProperties::default();
    if let Some(name) = &config.connection_name {
        props = props.with_connection_name(name.as_str().into());
    }
    let shown = redact(&config.addr);
    match tokio::time::timeout(
        config.connect_timeout,
        Connection::connect(&config.addr, props),
    )
    .await
    {
        Ok(Ok(connection)) => {
            tracing::debug!(addr = %shown, "connected to RabbitMQ");
            Ok(connection)
        }
        Ok(Err(e)) => Err(connect_error(&shown, e)),
        Err(_) => Err(Error::new(ErrorKind::ConnectionFailed).context(format!(
            "no answer from {shown} within {:?}: nothing there finished the AMQP handshake \
             (is the broker up, and {PORT_HINT})",
            config.connect_timeout
        ))),
    }
}

/// The error of a failed connect to `shown` (the redacted address), in words: lapin's parser
/// and I/O texts say nothing to a person who pointed `AMQP_ADDR` at the wrong port, so they
/// go to the debug log instead of the message.
fn connect_error(shown: &str, e: lapin::Error) -> Error {
    use lapin::ErrorKind as L;
    use std::io::ErrorKind as Io;
    let (kind, context) = match e.kind() {
        L::ParsingError(_) => (
            ErrorKind::WrongProtocol,
            format!(
                "the server at {shown} did not answer as an AMQP broker: it sent bytes that \
                 are no AMQP frame, as an HTTP server or another service would ({PORT_HINT})"
            ),
        ),
        L::InvalidProtocolVersion(version) => (
            ErrorKind::WrongProtocol,
            format!(
                "the server at {shown} did not answer as an AMQP 0-9-1 broker: it speaks \
                 AMQP {version} ({PORT_HINT})"
            ),
        ),
        L::IOError(io)
            if matches!(
                io.kind(),
                Io::ConnectionAborted | Io::ConnectionReset | Io::UnexpectedEof
            ) =>
        {
            (
                ErrorKind::ConnectionFailed,
                format!(
                    "the server at {shown} closed the connection before the AMQP handshake \
                     finished: a proxy with no broker behind it, a broker refusing this \
                     client, or a server that is not AMQP ({PORT_HINT})"
                ),
            )
        }
        _ => {
            return Error::with_lapin(ErrorKind::ConnectionFailed, e).context(format!(
                "RabbitMQ at {shown} (set AMQP_ADDR to a running broker)"
            ));
        }
    };
    tracing::debug!(addr = %shown, error = %e, "connecting failed");
    Error::new(kind).context(context)
}

/// The address with its password replaced by `***`.
pub fn redact(addr: &str) -> String {
    let Some((scheme, rest)) = addr.split_once("://") else {
        return addr.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => addr.to_owned(),
        },
        None => addr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(
            redact("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn a_refused_connection_keeps_the_io_error() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = connect_error("amqp://127.0.0.1:1/%2f", refused.into());
        assert_eq!(e.kind(), ErrorKind::ConnectionFailed);
        assert!(e.is_retryable());
        assert!(e.to_string().contains("connection refused"), "{e}");
    }
}
