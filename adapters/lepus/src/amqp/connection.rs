//! Opening the AMQP connection.

use lapin::{Connection, ConnectionProperties};

use crate::amqp::config::AmqpConfig;
use crate::error::{Error, ErrorKind, Result};

/// Connects to `config.addr`. An unreachable broker is [`ErrorKind::ConnectionFailed`] whose
/// message names the address (password hidden) and says how to point elsewhere.
pub async fn connect(config: &AmqpConfig) -> Result<Connection> {
    let mut props = ConnectionProperties::default();
    if let Some(name) = &config.connection_name {
        props = props.with_connection_name(name.as_str().into());
    }
    let shown = redact(&config.addr);
    let hint = "set AMQP_ADDR to a running broker";
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
        Ok(Err(e)) => Err(Error::with_lapin(ErrorKind::ConnectionFailed, e)
            .context(format!("RabbitMQ at {shown} ({hint})"))),
        Err(_) => Err(Error::new(ErrorKind::ConnectionFailed).context(format!(
            "no answer from RabbitMQ at {shown} within {:?} ({hint})",
            config.connect_timeout
        ))),
    }
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
}
