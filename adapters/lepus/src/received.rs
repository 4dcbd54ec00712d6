//! A delivery's properties as they arrived.
//!
//! RabbitMQ's are kept as lapin decoded them and read in place: the consume path reads a few
//! strings (type, message id, content type, `traceparent`) and needs no copy of them. They
//! become [`Properties`] once, when someone asks for them whole (a retry or a dead letter
//! republishes them, a user reads [`crate::Delivery::properties`]). Converting every
//! delivery's properties (owned strings, a headers map) and dropping them again cost about
//! 2,000 instructions a delivery (issue 13's profile of the worker).

#[cfg(feature = "amqp")]
use std::sync::OnceLock;

use crate::properties::{HeaderValue, Properties};

/// Where a delivery's properties are.
// Not boxed: boxing lapin's properties (336 bytes) costs more than copying them the few times
// a delivery moves on its way to the handler (worker row, callgrind: 41,952 instructions a
// delivery boxed against 41,598 not).
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Received {
    /// Already [`Properties`]: the in-process broker's or a custom transport's.
    Whole(Properties),
    /// RabbitMQ's, as lapin decoded them, and their conversion once made.
    #[cfg(feature = "amqp")]
    Amqp {
        raw: lapin::BasicProperties,
        whole: OnceLock<Properties>,
    },
}

impl Received {
    #[cfg(feature = "amqp")]
    pub(crate) fn amqp(raw: lapin::BasicProperties) -> Self {
        Received::Amqp {
            raw,
            whole: OnceLock::new(),
        }
    }

    /// All of them, converted on the first call.
    pub(crate) fn whole(&self) -> &Properties {
        match self {
            Received::Whole(p) => p,
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, whole } => {
                whole.get_or_init(|| crate::amqp::properties::from_amqp(raw))
            }
        }
    }

    /// All of them, by value (the conversion made once, if it was).
    pub(crate) fn into_whole(self) -> Properties {
        match self {
            Received::Whole(p) => p,
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, whole } => whole
                .into_inner()
                .unwrap_or_else(|| crate::amqp::properties::from_amqp(&raw)),
        }
    }

    pub(crate) fn message_id(&self) -> Option<&str> {
        match self {
            Received::Whole(p) => p.message_id.as_deref(),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => raw.message_id().as_ref().map(|s| s.as_str()),
        }
    }

    pub(crate) fn message_type(&self) -> Option<&str> {
        match self {
            Received::Whole(p) => p.message_type.as_deref(),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => raw.kind().as_ref().map(|s| s.as_str()),
        }
    }

    pub(crate) fn content_type(&self) -> Option<&str> {
        match self {
            Received::Whole(p) => p.content_type.as_deref(),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => raw.content_type().as_ref().map(|s| s.as_str()),
        }
    }

    pub(crate) fn correlation_id(&self) -> Option<&str> {
        match self {
            Received::Whole(p) => p.correlation_id.as_deref(),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => raw.correlation_id().as_ref().map(|s| s.as_str()),
        }
    }

    pub(crate) fn reply_to(&self) -> Option<&str> {
        match self {
            Received::Whole(p) => p.reply_to.as_deref(),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => raw.reply_to().as_ref().map(|s| s.as_str()),
        }
    }

    /// The header `key` when it is a string (as [`HeaderValue::as_str`] of the converted
    /// headers: a byte string that is not UTF-8 is not one).
    pub(crate) fn header_str(&self, key: &str) -> Option<&str> {
        match self {
            Received::Whole(p) => p.headers.get(key).and_then(HeaderValue::as_str),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => crate::amqp::properties::header_str(raw, key),
        }
    }

    /// Whether the header `key` is there, whatever its type.
    pub(crate) fn has_header(&self, key: &str) -> bool {
        match self {
            Received::Whole(p) => p.headers.contains_key(key),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => raw
                .headers()
                .as_ref()
                .is_some_and(|table| table.contains_key(key)),
        }
    }

    /// The bytes of the header `key` when it is a string or a byte array.
    pub(crate) fn header_bytes(&self, key: &str) -> Option<&[u8]> {
        match self {
            Received::Whole(p) => match p.headers.get(key)? {
                HeaderValue::Str(s) => Some(s.as_bytes()),
                HeaderValue::Bytes(b) => Some(b),
                _ => None,
            },
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => crate::amqp::properties::header_bytes(raw, key),
        }
    }

    /// The header `key` when it is an integer of any width (as [`HeaderValue::as_i64`] of
    /// the converted headers).
    pub(crate) fn header_i64(&self, key: &str) -> Option<i64> {
        match self {
            Received::Whole(p) => p.headers.get(key).and_then(HeaderValue::as_i64),
            #[cfg(feature = "amqp")]
            Received::Amqp { raw, .. } => crate::amqp::properties::header_i64(raw, key),
        }
    }
}

/// Equal when their properties are, wherever they are kept.
impl PartialEq for Received {
    fn eq(&self, other: &Self) -> bool {
        self.whole() == other.whole()
    }
}

impl core::fmt::Debug for Received {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.whole().fmt(f)
    }
}
