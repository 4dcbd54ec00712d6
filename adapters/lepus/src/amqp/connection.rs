//! Opening the AMQP connection.

use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};

use crate::amqp::config::AmqpConfig;
use crate::amqp::tls::is_tls;
use crate::error::{Error, ErrorKind, Result};

/// What to check when the server at the address is there but did not act as a broker.
const PORT_HINT: &str =
    "is AMQP_ADDR pointing at the broker's AMQP port? RabbitMQ listens on 5672, 5671 for amqps";

/// The broker addresses of `addr`: one URL, or several separated by commas (kombu's failover
/// URLs, `amqp://127.0.0.1:5681/%2f,amqp://127.0.0.1:5682/%2f`), blanks around them ignored.
pub fn addresses(addr: &str) -> Vec<&str> {
    addr.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// Connects to one of the addresses of `config.addr` ([`addresses`]), trying them in turn from
/// the one at `first` (modulo their number): each gets `config.connect_timeout` for the TCP
/// connect and the whole AMQP handshake (a frozen node accepts TCP and never answers), then
/// the next is tried. Returns the connection and the index of the address it is on.
///
/// With one address, its error is returned as it is (see [`connect_one`]). With several, an
/// error names every address and why it failed; it is [`ErrorKind::WrongProtocol`] only when
/// every address answered in something other than AMQP, [`ErrorKind::TlsHandshake`] only when
/// every TLS handshake failed.
///
/// `amqps://` addresses use the TLS settings of `config`, checked before the first address is
/// tried ([`AmqpConfig::check_tls`]).
pub async fn connect(config: &AmqpConfig, first: usize) -> Result<(Connection, usize)> {
    let all = addresses(&config.addr);
    if all.is_empty() {
        return Err(Error::new(ErrorKind::InvalidConfig {
            setting: "AMQP_ADDR",
        })
        .context(
            "no broker address: set AMQP_ADDR to amqp://host:5672/%2f (or a comma-separated list)",
        ));
    }
    config.check_tls()?;
    let tls = tls_config(config);
    let n = all.len();
    let mut failures = Vec::new();
    for step in 0..n {
        let index = (first + step) % n;
        let Some(&addr) = all.get(index) else {
            continue;
        };
        match connect_one(config, &tls, addr).await {
            Ok(connection) => {
                if n > 1 {
                    tracing::info!(node = %redact(addr), index, "connected to RabbitMQ");
                }
                return Ok((connection, index));
            }
            Err(e) if n == 1 => return Err(e),
            Err(e) => {
                tracing::debug!(node = %redact(addr), error = %e, "trying the next address");
                failures.push(e);
            }
        }
    }
    let kind = match failures.first().map(Error::kind) {
        Some(kind @ (ErrorKind::WrongProtocol | ErrorKind::TlsHandshake))
            if failures.iter().all(|e| e.kind() == kind) =>
        {
            kind
        }
        _ => ErrorKind::ConnectionFailed,
    };
    let each: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Err(Error::new(kind).context(format!(
        "none of the {n} broker addresses could be used: {}",
        each.join("; ")
    )))
}

/// Connects to `addr`. Every failure names the address (password hidden) and says what
/// to check:
/// - nothing listens there, or the answer takes longer than `config.connect_timeout`:
///   [`ErrorKind::ConnectionFailed`];
/// - the server accepts, then closes before the AMQP handshake is done (a proxy with no broker
///   behind it, for one): [`ErrorKind::ConnectionFailed`];
/// - the server answers, but not in AMQP 0-9-1 (an HTTP server, another service, another AMQP
///   version): [`ErrorKind::WrongProtocol`], not retryable. The bytes it sent are not shown:
///   lapin's parser error does not keep them;
/// - at an `amqps://` address, the TLS handshake fails (a certificate of an untrusted CA or
///   for another host name, our client certificate refused, a server that does not speak
///   TLS): [`ErrorKind::TlsHandshake`], not retryable, with rustls's reason.
async fn connect_one(config: &AmqpConfig, tls: &OwnedTLSConfig, addr: &str) -> Result<Connection> {
    let mut props = ConnectionProperties::default();
    if let Some(name) = &config.connection_name {
        props = props.with_connection_name(name.as_str().into());
    }
    let shown = redact(addr);
    let runtime = lapin::runtime::default_runtime().map_err(|e| {
        Error::with_lapin(ErrorKind::ConnectionFailed, e).context("no runtime for lapin")
    })?;
    let connecting = Connection::connect_with_config(addr, props, tls.clone(), runtime);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok(connection)) => {
            tracing::debug!(addr = %shown, "connected to RabbitMQ");
            Ok(connection)
        }
        Ok(Err(e)) => Err(connect_error(&shown, is_tls(addr), e)),
        Err(_) => Err(Error::new(ErrorKind::ConnectionFailed).context(format!(
            "no answer from {shown} within {:?}: nothing there finished the AMQP handshake \
             (is the broker up, and {PORT_HINT})",
            config.connect_timeout
        ))),
    }
}

/// lapin's TLS settings: the CA and client certificate of `config` (with `rustls`; without
/// it no `amqps://` address gets this far).
fn tls_config(config: &AmqpConfig) -> OwnedTLSConfig {
    #[cfg(feature = "rustls")]
    return crate::amqp::tls::lapin_config(
        config.tls_ca_pem.as_deref(),
        config.tls_identity.as_ref(),
    );
    #[cfg(not(feature = "rustls"))]
    {
        let _ = config;
        OwnedTLSConfig::default()
    }
}

/// The error of a failed connect to `shown` (the redacted address, `tls` when it is
/// `amqps://`), in words: lapin's parser and I/O texts say nothing to a person who pointed
/// `AMQP_ADDR` at the wrong port, so they go to the debug log instead of the message. A TLS
/// failure keeps rustls's reason (it names the certificate problem).
fn connect_error(shown: &str, tls: bool, e: lapin::Error) -> Error {
    use lapin::ErrorKind as L;
    use std::io::ErrorKind as Io;
    if tls {
        if let L::IOError(io) = e.kind() {
            if io.kind() == Io::InvalidData {
                return Error::with_lapin(ErrorKind::TlsHandshake, e).context(format!(
                    "the TLS handshake with {shown} failed (check that the port speaks TLS, \
                     RabbitMQ's is 5671; that the broker's certificate is signed by a trusted \
                     CA, the system's roots or AMQP_TLS_CA / AmqpConfig::tls_ca_pem, and names \
                     the host of the address; that the broker accepts the client certificate, \
                     if it asks for one)"
                ));
            }
        }
    }
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
            // With TLS 1.3 a broker checks the client certificate after the client finished
            // its part of the handshake: its refusal (an alert, then the socket closed) often
            // reaches the client as a reset that swallowed the alert.
            let tls_hint = if tls {
                "; over amqps also a broker that refused the client certificate (or wants one \
                 and got none)"
            } else {
                ""
            };
            (
                ErrorKind::ConnectionFailed,
                format!(
                    "the server at {shown} closed the connection before the AMQP handshake \
                     finished: a proxy with no broker behind it, a broker refusing this \
                     client, or a server that is not AMQP{tls_hint} ({PORT_HINT})"
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

/// The address (or comma-separated addresses) with passwords replaced by `***`.
pub fn redact(addr: &str) -> String {
    if addr.contains(',') {
        return addresses(addr)
            .into_iter()
            .map(redact_one)
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(addr)
}

fn redact_one(addr: &str) -> String {
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
    fn address_lists() {
        assert_eq!(
            addresses(" amqp://a:5681/%2f , amqp://b:5682/%2f,, "),
            ["amqp://a:5681/%2f", "amqp://b:5682/%2f"]
        );
        assert_eq!(addresses("amqp://a/%2f"), ["amqp://a/%2f"]);
        assert!(addresses(" , ").is_empty());
        assert_eq!(
            redact("amqp://u:p@a/%2f,amqp://u:q@b/%2f"),
            "amqp://u:***@a/%2f,amqp://u:***@b/%2f"
        );
    }

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
        let e = connect_error("amqp://127.0.0.1:1/%2f", false, refused.into());
        assert_eq!(e.kind(), ErrorKind::ConnectionFailed);
        assert!(e.is_retryable());
        assert!(e.to_string().contains("connection refused"), "{e}");
    }
}
