//! Validation of names and short strings before they reach the AMQP client.
//!
//! `amq-protocol` panics when a short string (exchange, queue, routing key, header key,
//! short property) is over 255 bytes; these checks turn that into an [`Error`] first.
//! Rules, from [AMQP 0-9-1](https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf) §4.2.5.3
//! and the RabbitMQ [queue](https://www.rabbitmq.com/docs/queues#names) docs:
//!
//! | what                         | length       | characters                              |
//! |------------------------------|--------------|-----------------------------------------|
//! | declared exchange / queue    | 1..=255 bytes | letters, digits, `-` `_` `.` `:`; no `amq.` prefix |
//! | exchange published to        | 0..=255 bytes | same set; `""` (default) and `amq.*` allowed |
//! | routing key, binding pattern | 0..=255 bytes | any UTF-8                               |
//! | header key, short property   | 1..=255 / 0..=255 bytes | any UTF-8                     |
//!
//! Every check here never panics and never allocates on success.

use crate::error::{Error, NameKind, NameProblem, Result};

/// Longest AMQP short string, in bytes.
pub const MAX_SHORT_STRING: usize = 255;

fn check_len(what: NameKind, s: &str) -> Result<()> {
    if s.len() > MAX_SHORT_STRING {
        return Err(Error::invalid_name(
            what,
            NameProblem::TooLong { len: s.len() },
        ));
    }
    Ok(())
}

/// The bytes a declared name may hold: ASCII letters, digits, '-', '_', '.', ':'.
const NAME_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        allowed[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':');
        b += 1;
    }
    allowed
};

/// A byte scan (every allowed character is ASCII, so the first byte refused starts the
/// character refused): run on every publish's exchange.
fn check_charset(what: NameKind, s: &str) -> Result<()> {
    match s.bytes().position(|b| !NAME_BYTES[usize::from(b)]) {
        Some(at) => {
            let ch = s.get(at..).and_then(|rest| rest.chars().next());
            Err(Error::invalid_name(
                what,
                NameProblem::InvalidChar {
                    ch: ch.unwrap_or(char::REPLACEMENT_CHARACTER),
                    at,
                },
            ))
        }
        None => Ok(()),
    }
}

fn check_declared(what: NameKind, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_name(what, NameProblem::Empty));
    }
    check_len(what, name)?;
    check_charset(what, name)?;
    if name.starts_with("amq.") {
        return Err(Error::invalid_name(what, NameProblem::ReservedPrefix));
    }
    Ok(())
}

/// Checks the name of an exchange this crate declares.
pub fn check_exchange_name(name: &str) -> Result<()> {
    check_declared(NameKind::Exchange, name)
}

/// Checks the name of a queue this crate declares (or consumes, binds, deletes).
pub fn check_queue_name(name: &str) -> Result<()> {
    check_declared(NameKind::Queue, name)
}

/// Checks the exchange a message is published to: `""` (the default exchange) and the
/// broker's predeclared `amq.*` exchanges are allowed.
pub fn check_target_exchange(name: &str) -> Result<()> {
    check_len(NameKind::Exchange, name)?;
    check_charset(NameKind::Exchange, name)
}

/// Checks a routing key given to a publish.
pub fn check_routing_key(key: &str) -> Result<()> {
    check_len(NameKind::RoutingKey, key)
}

/// Checks a topic pattern used in a binding.
pub fn check_binding_pattern(pattern: &str) -> Result<()> {
    check_len(NameKind::BindingPattern, pattern)
}

/// Checks a header key (non-empty, at most 255 bytes).
pub fn check_header_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_name(NameKind::HeaderKey, NameProblem::Empty));
    }
    check_len(NameKind::HeaderKey, key)
}

/// Checks a short-string property (`type`, `message_id`, `correlation_id`, ...).
pub fn check_property(name: &'static str, value: &str) -> Result<()> {
    check_len(NameKind::Property(name), value)
}

/// Checks a body size against a limit.
pub fn check_payload(size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(Error::new(crate::ErrorKind::PayloadTooLarge {
            size,
            limit,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn problem(r: Result<()>) -> Option<NameProblem> {
        match r.err().map(|e| e.kind()) {
            Some(ErrorKind::InvalidName { problem, .. }) => Some(problem),
            _ => None,
        }
    }

    #[test]
    fn declared_names() {
        let long = "q".repeat(256);
        let table: &[(&str, Option<NameProblem>)] = &[
            ("mailer", None),
            ("mailer.ad-expired_v2:eu", None),
            (&long[..255], None),
            (&long, Some(NameProblem::TooLong { len: 256 })),
            ("", Some(NameProblem::Empty)),
            ("amq.mine", Some(NameProblem::ReservedPrefix)),
            ("amqp.ok", None),
            (
                "with space",
                Some(NameProblem::InvalidChar { ch: ' ', at: 4 }),
            ),
            ("é", Some(NameProblem::InvalidChar { ch: 'é', at: 0 })),
            ("a/b", Some(NameProblem::InvalidChar { ch: '/', at: 1 })),
        ];
        for (name, expected) in table {
            assert_eq!(problem(check_queue_name(name)), *expected, "{name:?}");
            assert_eq!(problem(check_exchange_name(name)), *expected, "{name:?}");
        }
    }

    #[test]
    fn target_exchange_allows_default_and_amq() {
        assert!(check_target_exchange("").is_ok());
        assert!(check_target_exchange("amq.topic").is_ok());
        assert!(check_target_exchange(&"x".repeat(256)).is_err());
    }

    #[test]
    fn routing_keys_and_headers() {
        assert!(check_routing_key("").is_ok());
        assert!(check_routing_key("mailer.ad.é").is_ok());
        assert!(check_routing_key(&"k".repeat(255)).is_ok());
        assert_eq!(
            problem(check_routing_key(&"k".repeat(300))),
            Some(NameProblem::TooLong { len: 300 })
        );
        assert!(check_binding_pattern(&"#".repeat(256)).is_err());
        assert_eq!(problem(check_header_key("")), Some(NameProblem::Empty));
        assert!(check_header_key(&"h".repeat(256)).is_err());
        assert!(check_property("message_id", &"i".repeat(256)).is_err());
    }

    #[test]
    fn payload_limit() {
        assert!(check_payload(10, 10).is_ok());
        assert_eq!(
            check_payload(11, 10).err().map(|e| e.kind()),
            Some(ErrorKind::PayloadTooLarge {
                size: 11,
                limit: 10
            })
        );
    }
}
