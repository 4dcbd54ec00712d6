//! Encoding requests and replies, and reading replies. Envelopes are core's.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::core::envelope::decode_json_raw;
use crate::core::retry::RetryMetadata;
use crate::error::Result;
use crate::properties::{HeaderValue, Properties};
use crate::protocol::{new_message_id, now_seconds, CONTENT_TYPE_JSON};
use crate::publisher::{encode_envelope, encode_raw_envelope};
use crate::reply::ReplyMessage;

use super::error::{RemoteErrorKind, RpcError};
use super::request::Request;

/// Header of an error reply: its [`RemoteErrorKind`] (`rejected`, `panicked`, ...).
pub const HEADER_RPC_ERROR: &str = "x-lepus-rpc-error";

/// `className` of an error reply's envelope.
pub const RPC_ERROR_TYPE: &str = "LepusRpcError";

/// A request's body and properties.
pub(crate) fn encode_request<R: Request>(
    request: &R,
    correlation_id: &str,
    reply_to: &str,
) -> Result<(Vec<u8>, Properties)> {
    let body = encode_envelope(
        request,
        R::retry_policy().into_metadata(),
        Some(correlation_id),
        envelope_reply_queue(reply_to),
    )?;
    Ok((body, request_properties(R::TYPE, correlation_id, reply_to)))
}

/// A request's body and properties from its type name and its payload, already JSON
/// (copied verbatim into the envelope), with no retry metadata.
pub(crate) fn encode_raw_request(
    type_name: &str,
    payload_json: &[u8],
    correlation_id: &str,
    reply_to: &str,
) -> Result<(Vec<u8>, Properties)> {
    let body = encode_raw_envelope(
        payload_json,
        type_name,
        RetryMetadata::default(),
        Some(correlation_id),
        envelope_reply_queue(reply_to),
    )?;
    Ok((
        body,
        request_properties(type_name, correlation_id, reply_to),
    ))
}

/// The envelope's `metadata.response_queue` for a `reply_to` address: none for direct
/// reply-to, whose pseudo-queue only the requesting channel can use and whose real address
/// RabbitMQ writes into the `reply_to` property alone (a server answering to the envelope's
/// name would publish into nothing).
fn envelope_reply_queue(reply_to: &str) -> Option<&str> {
    (!reply_to.starts_with(crate::reply::DIRECT_REPLY_TO)).then_some(reply_to)
}

/// Requests and replies are transient: the broker confirms them without a disk write (a
/// persistent request costs a disk write on every call), and neither outlives its reply
/// channel anyway (direct reply-to and exclusive reply queues end with the connection).
fn request_properties(type_name: &str, correlation_id: &str, reply_to: &str) -> Properties {
    Properties::new()
        .with_transient()
        .with_type(type_name)
        .with_content_type(CONTENT_TYPE_JSON)
        .with_message_id(new_message_id())
        .with_timestamp(now_seconds())
        .with_correlation_id(correlation_id)
        .with_reply_to(reply_to)
}

fn reply_properties(class_name: &str, correlation_id: Option<&str>) -> Properties {
    let mut p = Properties::new()
        .with_transient()
        .with_type(class_name)
        .with_content_type(CONTENT_TYPE_JSON)
        .with_message_id(new_message_id())
        .with_timestamp(now_seconds());
    p.correlation_id = correlation_id.map(str::to_owned);
    p
}

/// A successful reply: `payload_json` (already serialized) under `class_name`.
pub(crate) fn encode_reply(
    payload_json: &[u8],
    class_name: &str,
    correlation_id: Option<&str>,
) -> Result<(Vec<u8>, Properties)> {
    let body = encode_raw_envelope(
        payload_json,
        class_name,
        RetryMetadata::default(),
        correlation_id,
        None,
    )?;
    Ok((body, reply_properties(class_name, correlation_id)))
}

#[derive(serde::Serialize, Deserialize)]
struct ErrorPayload {
    error: String,
    #[serde(default)]
    kind: String,
}

/// An error reply.
pub(crate) fn encode_error_reply(
    kind: RemoteErrorKind,
    message: &str,
    correlation_id: Option<&str>,
) -> Result<(Vec<u8>, Properties)> {
    let payload = ErrorPayload {
        error: message.to_owned(),
        kind: kind.as_str().to_owned(),
    };
    let json = serde_json::to_vec(&payload).map_err(|e| {
        crate::Error::new(crate::ErrorKind::Encode).context(format!("serialize an RPC error: {e}"))
    })?;
    let (body, mut props) = encode_reply(&json, RPC_ERROR_TYPE, correlation_id)?;
    props.headers.insert(
        HEADER_RPC_ERROR.to_owned(),
        HeaderValue::from(kind.as_str()),
    );
    Ok((body, props))
}

/// The correlation id of a reply: the property, else the envelope's `correlationId`.
pub(crate) fn reply_correlation_id(reply: &ReplyMessage) -> Option<Cow<'_, str>> {
    if let Some(id) = reply.correlation_id() {
        return Some(Cow::Borrowed(id));
    }
    let raw = decode_json_raw(&reply.body).ok()?;
    raw.metadata
        .correlation_id
        .map(|t| Cow::Owned(t.to_string()))
}

/// Reads a reply: a remote error when the header says so, else the payload of the envelope
/// (or, for servers that send no envelope, the whole body) as `T`.
pub(crate) fn decode_reply<T: DeserializeOwned>(reply: &ReplyMessage) -> Result<T, RpcError> {
    let payload = match decode_json_raw(&reply.body) {
        Ok(raw) => raw.payload,
        Err(_) => &reply.body[..],
    };
    if reply.has_header(HEADER_RPC_ERROR) {
        let kind = RemoteErrorKind::parse(reply.header_str(HEADER_RPC_ERROR).unwrap_or(""));
        let message = match serde_json::from_slice::<ErrorPayload>(payload) {
            Ok(p) => p.error,
            Err(_) => String::from_utf8_lossy(payload).into_owned(),
        };
        return Err(RpcError::Remote { kind, message });
    }
    serde_json::from_slice(payload).map_err(|e| RpcError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_error_reply() {
        let Ok((body, props)) =
            encode_error_reply(RemoteErrorKind::Rejected, "no \"ad\"", Some("c"))
        else {
            panic!("encodes")
        };
        assert_eq!(
            core::str::from_utf8(&body).ok(),
            Some(
                r#"{"payload":{"error":"no \"ad\"","kind":"rejected"},"metadata":{"className":"LepusRpcError","retryCount":0,"correlationId":"c"}}"#
            )
        );
        let reply = ReplyMessage::new(body, props);
        match decode_reply::<u32>(&reply) {
            Err(RpcError::Remote { kind, message }) => {
                assert_eq!(kind, RemoteErrorKind::Rejected);
                assert_eq!(message, "no \"ad\"");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(reply_correlation_id(&reply).as_deref(), Some("c"));
    }

    #[test]
    fn bare_json_replies_decode() {
        let reply = ReplyMessage::new(b"42".to_vec(), Properties::new());
        assert_eq!(decode_reply::<u32>(&reply).ok(), Some(42));
        let bad = ReplyMessage::new(b"{".to_vec(), Properties::new());
        assert!(matches!(
            decode_reply::<u32>(&bad),
            Err(RpcError::Decode(_))
        ));
    }

    #[test]
    fn response_queue_only_for_a_real_queue() {
        let direct = "amq.rabbitmq.reply-to.g1hkABhyYWJiaXRA";
        let Ok((body, props)) = encode_raw_request("GetAds", b"{}", "c1", direct) else {
            panic!("encodes")
        };
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("response_queue"), "{text}");
        assert_eq!(props.reply_to.as_deref(), Some(direct));

        let Ok((body, props)) = encode_raw_request("GetAds", b"{}", "c2", "replies-7") else {
            panic!("encodes")
        };
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(r#""response_queue":"replies-7""#), "{text}");
        assert_eq!(props.reply_to.as_deref(), Some("replies-7"));
    }
}
