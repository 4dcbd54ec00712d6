//! Message properties and headers, independent of the transport.
//!
//! These are the AMQP 0-9-1 `basic` properties this crate uses; the AMQP adapter converts
//! them to and from `lapin`'s types, the in-process broker keeps them as they are.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::names::{check_header_key, check_property};

/// The headers table (`application_headers`), keys sorted.
pub type Headers = BTreeMap<String, HeaderValue>;

/// A value of the headers table.
///
/// Integer field types of every width are read as [`HeaderValue::Int`]; strings that are not
/// valid UTF-8 are read as [`HeaderValue::Bytes`].
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    /// No value (`V`).
    Void,
    /// A boolean.
    Bool(bool),
    /// A signed integer (sent as a 64-bit `l`).
    Int(i64),
    /// A floating point number (sent as a `d` double).
    Float(f64),
    /// A decimal: `value / 10^scale`.
    Decimal {
        /// Number of decimal digits.
        scale: u8,
        /// Unscaled value.
        value: u32,
    },
    /// A UTF-8 string (sent as a long string `S`).
    Str(String),
    /// Raw bytes (sent as a byte array `x`).
    Bytes(Vec<u8>),
    /// Seconds since the Unix epoch (`T`).
    Timestamp(u64),
    /// An array (`A`).
    List(Vec<HeaderValue>),
    /// A nested table (`F`), as RabbitMQ's `x-death` entries.
    Table(Headers),
}

impl HeaderValue {
    /// The string, if this is a [`HeaderValue::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is a [`HeaderValue::Int`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            HeaderValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl From<&str> for HeaderValue {
    fn from(s: &str) -> Self {
        HeaderValue::Str(s.to_owned())
    }
}

impl From<String> for HeaderValue {
    fn from(s: String) -> Self {
        HeaderValue::Str(s)
    }
}

impl From<i64> for HeaderValue {
    fn from(i: i64) -> Self {
        HeaderValue::Int(i)
    }
}

impl From<bool> for HeaderValue {
    fn from(b: bool) -> Self {
        HeaderValue::Bool(b)
    }
}

/// Properties of a message. Messages are persistent (`delivery_mode` 2) unless marked
/// [`Properties::transient`]; dead letters always are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// The AMQP `type` property: the wire type name of the message.
    pub message_type: Option<String>,
    /// MIME type of the body, e.g. `application/json`.
    pub content_type: Option<String>,
    /// Unique id of the message; the publisher fills one in when absent.
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch; the publisher fills in "now" when absent.
    pub timestamp: Option<u64>,
    /// Correlation id of an RPC request or reply.
    pub correlation_id: Option<String>,
    /// Queue an RPC reply goes to.
    pub reply_to: Option<String>,
    /// Application headers.
    pub headers: Headers,
    /// `delivery_mode` 1 instead of 2: the broker keeps the message in memory only, so it
    /// confirms it without waiting for a disk write, and loses it if it restarts. For RPC
    /// requests and replies, which cannot outlive their reply channel anyway; never for
    /// tasks that must survive a restart.
    pub transient: bool,
    /// The AMQP `priority` property, 0 to 255: on a queue declared with a maximum priority
    /// ([`crate::QueueSpec::max_priority`]), higher priorities are delivered first (above the
    /// queue's maximum counts as the maximum, none as 0); other queues ignore it.
    pub priority: Option<u8>,
}

impl Properties {
    /// Empty properties.
    pub fn new() -> Self {
        Properties::default()
    }

    /// Sets the `type` property.
    #[must_use]
    pub fn with_type(mut self, message_type: impl Into<String>) -> Self {
        self.message_type = Some(message_type.into());
        self
    }

    /// Sets the content type.
    #[must_use]
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the message id.
    #[must_use]
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the reply-to queue.
    #[must_use]
    pub fn with_reply_to(mut self, queue: impl Into<String>) -> Self {
        self.reply_to = Some(queue.into());
        self
    }

    /// Sets the timestamp (seconds since the Unix epoch).
    #[must_use]
    pub fn with_timestamp(mut self, seconds: u64) -> Self {
        self.timestamp = Some(seconds);
        self
    }

    /// Marks the message transient (see [`Properties::transient`]).
    #[must_use]
    pub fn with_transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// Sets the priority (see [`Properties::priority`]).
    #[must_use]
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Checks every short string (properties and header keys, at any depth) against the
    /// AMQP limits. Never panics.
    pub fn validate(&self) -> Result<()> {
        let shorts = [
            ("type", &self.message_type),
            ("content_type", &self.content_type),
            ("message_id", &self.message_id),
            ("correlation_id", &self.correlation_id),
            ("reply_to", &self.reply_to),
        ];
        for (name, value) in shorts {
            if let Some(value) = value {
                check_property(name, value)?;
            }
        }
        validate_headers(&self.headers)
    }
}

fn validate_headers(headers: &Headers) -> Result<()> {
    for (key, value) in headers {
        check_header_key(key)?;
        validate_value(value)?;
    }
    Ok(())
}

fn validate_value(value: &HeaderValue) -> Result<()> {
    match value {
        HeaderValue::Table(t) => validate_headers(t),
        HeaderValue::List(l) => l.iter().try_for_each(validate_value),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorKind, NameKind};

    #[test]
    fn nested_header_keys_are_checked() {
        let mut inner = Headers::new();
        inner.insert("k".repeat(256), HeaderValue::Void);
        let props = Properties::new().with_header(
            "x-death",
            HeaderValue::List(vec![HeaderValue::Table(inner)]),
        );
        assert!(matches!(
            props.validate().err().map(|e| e.kind()),
            Some(ErrorKind::InvalidName {
                what: NameKind::HeaderKey,
                ..
            })
        ));
    }

    #[test]
    fn long_properties_are_refused() {
        let props = Properties::new().with_correlation_id("c".repeat(256));
        assert!(props.validate().is_err());
        assert!(Properties::new().with_type("t").validate().is_ok());
    }
}
