//! Conversion between [`Properties`] and lapin's `BasicProperties`.

use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, ShortString};
use lapin::BasicProperties;

use crate::error::{Error, NameKind, NameProblem, Result};
use crate::properties::{HeaderValue, Headers, Properties};

/// `delivery_mode` of a persistent message.
const PERSISTENT: u8 = 2;
/// `delivery_mode` of a transient message.
const TRANSIENT: u8 = 1;

fn short(what: NameKind, s: &str) -> Result<ShortString> {
    ShortString::try_new(s)
        .map_err(|_| Error::invalid_name(what, NameProblem::TooLong { len: s.len() }))
}

/// A short string for a name checked before (never fails on validated input; still no panic).
pub(crate) fn short_name(what: NameKind, s: &str) -> Result<ShortString> {
    short(what, s)
}

/// Builds AMQP properties (persistent unless [`Properties::transient`]). `message_id` and `timestamp` are the values the
/// publisher settled on (given or filled in).
pub(crate) fn to_amqp(
    props: &Properties,
    message_id: &str,
    timestamp: u64,
) -> Result<BasicProperties> {
    let mut out = BasicProperties::default()
        .with_delivery_mode(if props.transient {
            TRANSIENT
        } else {
            PERSISTENT
        })
        .with_message_id(short(NameKind::Property("message_id"), message_id)?)
        .with_timestamp(timestamp);
    if let Some(t) = &props.message_type {
        out = out.with_type(short(NameKind::Property("type"), t)?);
    }
    if let Some(c) = &props.content_type {
        out = out.with_content_type(short(NameKind::Property("content_type"), c)?);
    }
    if let Some(c) = &props.correlation_id {
        out = out.with_correlation_id(short(NameKind::Property("correlation_id"), c)?);
    }
    if let Some(p) = props.priority {
        out = out.with_priority(p);
    }
    if let Some(r) = &props.reply_to {
        out = out.with_reply_to(short(NameKind::Property("reply_to"), r)?);
    }
    if !props.headers.is_empty() {
        out = out.with_headers(table(&props.headers)?);
    }
    Ok(out)
}

pub(crate) fn table(headers: &Headers) -> Result<FieldTable> {
    let mut out = FieldTable::default();
    for (key, value) in headers {
        out.insert(short(NameKind::HeaderKey, key)?, value_to_amqp(value)?);
    }
    Ok(out)
}

fn value_to_amqp(value: &HeaderValue) -> Result<AMQPValue> {
    Ok(match value {
        HeaderValue::Void => AMQPValue::Void,
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
        HeaderValue::Float(f) => AMQPValue::Double(*f),
        HeaderValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        HeaderValue::Str(s) => AMQPValue::LongString(s.as_bytes().into()),
        HeaderValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.as_slice())),
        HeaderValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        HeaderValue::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(value_to_amqp)
                .collect::<Result<Vec<_>>>()?,
        )),
        HeaderValue::Table(t) => AMQPValue::FieldTable(table(t)?),
    })
}

/// Reads AMQP properties. Never fails: unknown shapes are kept as close as possible.
pub(crate) fn from_amqp(props: &BasicProperties) -> Properties {
    let s = |v: &Option<ShortString>| v.as_ref().map(|v| v.as_str().to_owned());
    Properties {
        message_type: s(props.kind()),
        content_type: s(props.content_type()),
        message_id: s(props.message_id()),
        timestamp: *props.timestamp(),
        correlation_id: s(props.correlation_id()),
        reply_to: s(props.reply_to()),
        headers: props
            .headers()
            .as_ref()
            .map(headers_from)
            .unwrap_or_default(),
        transient: *props.delivery_mode() == Some(TRANSIENT),
        priority: *props.priority(),
    }
}

/// The header `key` of `props` when it is a string, read in place: what
/// [`HeaderValue::as_str`] gives for it after [`from_amqp`].
pub(crate) fn header_str<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a str> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::ShortString(s) => Some(s.as_str()),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

/// The bytes of the header `key` of `props` when it is a string or a byte array.
pub(crate) fn header_bytes<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a [u8]> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        _ => None,
    }
}

/// The header `key` of `props` when it is an integer, read in place: what
/// [`HeaderValue::as_i64`] gives for it after [`from_amqp`].
pub(crate) fn header_i64(props: &BasicProperties, key: &str) -> Option<i64> {
    int_from_amqp(props.headers().as_ref()?.inner().get(key)?)
}

fn headers_from(table: &FieldTable) -> Headers {
    // Inserted one by one: `collect` into a map gathers the entries in a vector of its own
    // first and sorts them, an allocation more for the one or two headers a message carries.
    let mut headers = Headers::new();
    for (k, v) in table.inner() {
        headers.insert(k.as_str().to_owned(), value_from_amqp(v));
    }
    headers
}

fn bytes_or_str(bytes: &[u8]) -> HeaderValue {
    match std::str::from_utf8(bytes) {
        Ok(s) => HeaderValue::Str(s.to_owned()),
        Err(_) => HeaderValue::Bytes(bytes.to_vec()),
    }
}

/// An integer of any width.
fn int_from_amqp(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(i) => i64::from(*i),
        AMQPValue::ShortShortUInt(i) => i64::from(*i),
        AMQPValue::ShortInt(i) => i64::from(*i),
        AMQPValue::ShortUInt(i) => i64::from(*i),
        AMQPValue::LongInt(i) => i64::from(*i),
        AMQPValue::LongUInt(i) => i64::from(*i),
        AMQPValue::LongLongInt(i) => *i,
        _ => return None,
    })
}

fn value_from_amqp(value: &AMQPValue) -> HeaderValue {
    match value {
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::Float(f) => HeaderValue::Float(f64::from(*f)),
        AMQPValue::Double(f) => HeaderValue::Float(*f),
        AMQPValue::DecimalValue(d) => HeaderValue::Decimal {
            scale: d.scale,
            value: d.value,
        },
        AMQPValue::ShortString(s) => HeaderValue::Str(s.as_str().to_owned()),
        AMQPValue::LongString(s) => bytes_or_str(s.as_bytes()),
        AMQPValue::ByteArray(b) => HeaderValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::Timestamp(t) => HeaderValue::Timestamp(*t),
        AMQPValue::FieldArray(a) => {
            HeaderValue::List(a.as_slice().iter().map(value_from_amqp).collect())
        }
        AMQPValue::FieldTable(t) => HeaderValue::Table(headers_from(t)),
        // The integers of every width; `Void` is the one other value.
        other => int_from_amqp(other).map_or(HeaderValue::Void, HeaderValue::Int),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut nested = Headers::new();
        nested.insert("count".into(), HeaderValue::Int(2));
        let props = Properties::new()
            .with_type("SendAdExpiredMail")
            .with_content_type("application/json")
            .with_correlation_id("c-1")
            .with_reply_to("replies")
            .with_priority(7)
            .with_header("retryCount", 3i64)
            .with_header("reason", "boom")
            .with_header("ok", true)
            .with_header("bin", HeaderValue::Bytes(vec![0xff, 0]))
            .with_header(
                "x-death",
                HeaderValue::List(vec![HeaderValue::Table(nested)]),
            );
        let amqp = to_amqp(&props, "id-1", 42);
        assert!(amqp.is_ok());
        let amqp = amqp.unwrap_or_default();
        assert_eq!(*amqp.delivery_mode(), Some(2));
        assert_eq!(*amqp.priority(), Some(7));
        let back = from_amqp(&amqp);
        let expected = Properties {
            message_id: Some("id-1".into()),
            timestamp: Some(42),
            ..props
        };
        assert_eq!(back, expected);
    }

    #[test]
    fn transient_round_trips_as_delivery_mode_1() {
        let props = Properties::new().with_transient();
        let amqp = to_amqp(&props, "id-2", 7).unwrap_or_default();
        assert_eq!(*amqp.delivery_mode(), Some(1));
        assert!(from_amqp(&amqp).transient);
        let persistent = to_amqp(&Properties::new(), "id-3", 7).unwrap_or_default();
        assert!(!from_amqp(&persistent).transient);
    }

    #[test]
    fn long_strings_are_errors_not_panics() {
        let props = Properties::new().with_header("k".repeat(300), 1i64);
        assert!(to_amqp(&props, "id", 0).is_err());
        assert!(to_amqp(&Properties::new(), &"i".repeat(256), 0).is_err());
    }

    /// A delivery's properties read in place (what the consume path does) give what their
    /// conversion gives, for headers of every AMQP field type, the missing ones included.
    #[test]
    fn reading_in_place_agrees_with_the_conversion() {
        let mut table = FieldTable::default();
        let mut put = |k: &str, v: AMQPValue| {
            table.insert(ShortString::try_new(k).unwrap_or_default(), v);
        };
        put("void", AMQPValue::Void);
        put("bool", AMQPValue::Boolean(true));
        put("i8", AMQPValue::ShortShortInt(-8));
        put("u8", AMQPValue::ShortShortUInt(8));
        put("i16", AMQPValue::ShortInt(-16));
        put("u16", AMQPValue::ShortUInt(16));
        put("i32", AMQPValue::LongInt(-32));
        put("u32", AMQPValue::LongUInt(u32::MAX));
        put("i64", AMQPValue::LongLongInt(i64::MIN));
        put("f32", AMQPValue::Float(1.5));
        put("f64", AMQPValue::Double(2.5));
        put(
            "decimal",
            AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 }),
        );
        put("short", AMQPValue::ShortString("s".into()));
        put("long", AMQPValue::LongString("traceparent text".into()));
        put("long-bytes", AMQPValue::LongString(vec![0xff, 0xfe].into()));
        put(
            "byte-array",
            AMQPValue::ByteArray(ByteArray::from(&b"ab"[..])),
        );
        put("timestamp", AMQPValue::Timestamp(9));
        put(
            "array",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void])),
        );
        put("table", AMQPValue::FieldTable(FieldTable::default()));
        let keys: Vec<String> = table
            .inner()
            .keys()
            .map(|k| k.as_str().to_owned())
            .chain(["missing".to_owned()])
            .collect();
        let raw = BasicProperties::default()
            .with_type("Order".into())
            .with_content_type("application/json".into())
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_headers(table);
        let whole = from_amqp(&raw);
        for key in &keys {
            let converted = whole.headers.get(key.as_str());
            assert_eq!(
                header_str(&raw, key),
                converted.and_then(HeaderValue::as_str),
                "{key}"
            );
            assert_eq!(
                header_i64(&raw, key),
                converted.and_then(HeaderValue::as_i64),
                "{key}"
            );
            let bytes = match converted {
                Some(HeaderValue::Str(s)) => Some(s.as_bytes()),
                Some(HeaderValue::Bytes(b)) => Some(b.as_slice()),
                _ => None,
            };
            assert_eq!(header_bytes(&raw, key), bytes, "{key}");
        }
        assert_eq!(header_i64(&raw, "u32"), Some(i64::from(u32::MAX)));
        assert_eq!(header_str(&raw, "long"), Some("traceparent text"));
        assert_eq!(header_bytes(&raw, "byte-array"), Some(&b"ab"[..]));

        let received = crate::received::Received::amqp(raw.clone());
        for key in &keys {
            assert_eq!(
                received.has_header(key),
                whole.headers.contains_key(key.as_str()),
                "{key}"
            );
        }
        assert_eq!(received.message_id(), whole.message_id.as_deref());
        assert_eq!(received.message_type(), whole.message_type.as_deref());
        assert_eq!(received.content_type(), whole.content_type.as_deref());
        assert_eq!(received.correlation_id(), whole.correlation_id.as_deref());
        assert_eq!(received.reply_to(), whole.reply_to.as_deref());
        assert_eq!(received.whole(), &whole);
        assert_eq!(received.into_whole(), whole);
        let empty = crate::received::Received::amqp(BasicProperties::default());
        assert_eq!(empty.header_str("x"), None);
        assert_eq!(empty.into_whole(), from_amqp(&BasicProperties::default()));
    }
}
