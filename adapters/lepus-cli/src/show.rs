//! Reading envelopes and dead-letter headers for display.

use lepus::core::envelope::decode_json_raw;
use lepus::{Delivery, HeaderValue, Headers};
use serde_json::{json, Value};

/// What a person wants to know about a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The envelope's `className`, or the AMQP `type` when the body is no envelope.
    pub message_type: String,
    /// `retryCount`.
    pub retry_count: u32,
    /// The payload: parsed JSON, or the body as text when it is no envelope.
    pub payload: Value,
    /// Why the body is no envelope.
    pub envelope_error: Option<String>,
}

/// Summarizes a body.
pub fn summarize(delivery: &Delivery) -> Summary {
    summarize_body(
        &delivery.body,
        delivery.properties().message_type.as_deref(),
    )
}

/// Summarizes a body whose AMQP `type` is `amqp_type`.
pub fn summarize_body(body: &[u8], amqp_type: Option<&str>) -> Summary {
    match decode_json_raw(body) {
        Ok(raw) => Summary {
            message_type: raw.metadata.class_name.to_string(),
            retry_count: raw.metadata.retry.count,
            payload: serde_json::from_slice(raw.payload)
                .unwrap_or_else(|_| Value::String(lossy(raw.payload))),
            envelope_error: None,
        },
        Err(e) => Summary {
            message_type: amqp_type.unwrap_or("?").to_owned(),
            retry_count: 0,
            payload: Value::String(lossy(body)),
            envelope_error: Some(e.to_string()),
        },
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A header as text (`""` when absent).
pub fn header_text(headers: &Headers, key: &str) -> String {
    match headers.get(key) {
        None => String::new(),
        Some(HeaderValue::Str(s)) => s.clone(),
        Some(HeaderValue::Int(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
    }
}

/// A header as JSON.
pub fn header_json(value: &HeaderValue) -> Value {
    match value {
        HeaderValue::Void => Value::Null,
        HeaderValue::Bool(b) => json!(b),
        HeaderValue::Int(i) => json!(i),
        HeaderValue::Float(f) => json!(f),
        HeaderValue::Decimal { scale, value } => {
            json!(f64::from(*value) / 10f64.powi(i32::from(*scale)))
        }
        HeaderValue::Str(s) => json!(s),
        HeaderValue::Bytes(b) => json!(lossy(b)),
        HeaderValue::Timestamp(t) => json!(t),
        HeaderValue::List(l) => Value::Array(l.iter().map(header_json).collect()),
        HeaderValue::Table(t) => headers_json(t),
    }
}

/// Every header as a JSON object.
pub fn headers_json(headers: &Headers) -> Value {
    Value::Object(
        headers
            .iter()
            .map(|(k, v)| (k.clone(), header_json(v)))
            .collect(),
    )
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn iso_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_millis(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
