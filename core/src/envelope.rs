//! The message envelope: the talk's JSON wire format and a compact postcard form.
//!
//! A PHP producer of the original system and Lepus interoperate on this JSON (slides 19,
//! 26-27, 38-41 of the talk), plus the `retryBackoff` extension described in
//! [`retry`](crate::retry):
//!
//! ```json
//! {"payload": {"adId": 1},
//!  "metadata": {"className": "SendAdExpiredMail", "retryStrategy": "repeat",
//!               "retryLimit": 5, "retryCount": 0, "retryInterval": [15, 30, 60, 300, 86400],
//!               "response_queue": "...", "correlationId": "..."}}
//! ```
//!
//! - [`decode_json`] / [`decode_json_raw`]: lenient decoding of what PHP really sends (numeric
//!   strings, missing fields, unknown keys, any key order; see [`decode_json_raw`] for the
//!   rules). The raw form leaves the payload undecoded, so a worker reads `className` first
//!   and never decodes a type it does not know.
//! - [`DecodeLimits`]: how deep the payload may nest (128 levels unless set, at most 1024),
//!   passed to the `_with` forms ([`decode_json_raw_with`], [`decode_json_with`],
//!   [`rewrite_json_with`]). Nesting is tracked without recursion, so any input, however deep,
//!   gives a result or a [`DecodeError::TooDeep`].
//! - [`encode_json`] / [`encode_json_raw`]: compact JSON in a fixed key order.
//! - [`rewrite_json`]: re-publish an encoded envelope (retry, replay) with a few metadata keys
//!   changed, the payload and unknown keys byte-identical.
//! - [`encode_postcard`] / [`decode_postcard`] and the COBS-framed variants: the compact
//!   binary form for firmware and serial links.
//!
//! Strings are borrowed from the input as [`Text`], which may still hold JSON escapes.
//! Everything here writes into caller buffers: never panics, never allocates.

mod compact;
mod decode;
mod encode;
mod error;
mod limits;
#[cfg(any(test, fuzzing, lepus_reference))]
#[doc(hidden)]
pub mod reference;
mod rewrite;
mod scan;
mod text;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::retry::RetryMetadata;

pub use error::{DecodeError, EncodeError, Field, LimitError, RewriteError};
pub use limits::DecodeLimits;
pub use rewrite::{
    rewrite_json, rewrite_json_replay, rewrite_json_retry, rewrite_json_with, MetadataEdits,
};
pub use text::{Chars, Text};

/// An envelope's metadata: the task's class name, its retry state and RPC routing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Metadata<'a> {
    /// `className`: the task type, used to pick a handler (required on the wire).
    pub class_name: Text<'a>,
    /// `retryStrategy`, `retryLimit`, `retryCount`, `retryInterval`, `retryBackoff`.
    pub retry: RetryMetadata,
    /// `response_queue`: where an RPC reply goes.
    pub response_queue: Option<Text<'a>>,
    /// `correlationId`: matches an RPC reply to its request.
    pub correlation_id: Option<Text<'a>>,
}

impl<'a> Metadata<'a> {
    /// Metadata for a task of this class, with default retry fields and no RPC routing.
    pub fn new(class_name: &'a str) -> Self {
        Metadata {
            class_name: Text::plain(class_name),
            ..Metadata::default()
        }
    }
}

/// An envelope with a typed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Envelope<'a, P> {
    /// The task's data.
    pub payload: P,
    /// The task's metadata.
    pub metadata: Metadata<'a>,
}

/// An envelope whose payload is left encoded: JSON bytes (exactly the input's span) for
/// [`decode_json_raw`], postcard bytes for [`decode_postcard_raw`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RawEnvelope<'a> {
    /// The payload, still encoded.
    pub payload: &'a [u8],
    /// The decoded metadata.
    pub metadata: Metadata<'a>,
}

/// Decodes a JSON envelope without decoding its payload.
///
/// Accepts RFC 8259 JSON (strict syntax, UTF-8) read leniently:
/// - one UTF-8 byte-order mark (`EF BB BF`) at the very start is skipped, as RFC 8259
///   section 8.1 allows; error offsets and the payload slice stay those of `bytes`. A mark
///   anywhere else is an error (inside a string it is an ordinary character);
/// - `payload`, `metadata` and `metadata.className` are required; other envelope keys are
///   skipped;
/// - keys in any order, whitespace anywhere; unknown metadata keys are skipped;
/// - integers (`retryLimit`, `retryCount`, `retryBackoff.factor`) and durations in seconds
///   (`retryInterval` entries, `retryBackoff.base`/`max`) may be numbers or numeric strings
///   (`"5"`); integers may carry a zero fraction (`5.0`); durations may have up to
///   millisecond precision (`0.05`); exponents are refused;
/// - a missing or `null` retry field takes its default (see [`RetryMetadata`]), an unknown
///   `retryStrategy` string is [`Strategy::Unknown`](crate::retry::Strategy::Unknown);
/// - a known key appearing twice in one object is [`DecodeError::Duplicate`];
/// - the payload may nest [`DecodeLimits::DEFAULT_PAYLOAD_DEPTH`] (128) levels, the metadata
///   [`DecodeLimits::METADATA_DEPTH`]; [`decode_json_raw_with`] takes other limits.
///
/// Never panics, never allocates.
///
/// # Errors
/// A [`DecodeError`] naming the problem and, where there is one, the field.
pub fn decode_json_raw(bytes: &[u8]) -> Result<RawEnvelope<'_>, DecodeError> {
    decode_json_raw_with(bytes, &DecodeLimits::DEFAULT)
}

/// As [`decode_json_raw`], with the payload's nesting bounded by `limits` instead of the
/// defaults. Deep input costs no stack: nesting is tracked in a fixed bit stack, never by
/// recursion. Never panics, never allocates.
///
/// # Errors
/// As [`decode_json_raw`]; [`DecodeError::TooDeep`] names the limit that was exceeded.
pub fn decode_json_raw_with<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<RawEnvelope<'a>, DecodeError> {
    decode::parse(bytes, limits, None)
}

/// Size of the stack buffer [`decode_json`] unescapes payload strings into.
pub const UNESCAPE_SCRATCH: usize = 256;

/// Decodes a JSON envelope, its payload into `P` with `serde-json-core`.
///
/// String escapes in the payload are resolved: an owned string field (`heapless::String`)
/// receives the unescaped text, through a stack buffer of [`UNESCAPE_SCRATCH`] bytes (use
/// [`decode_json_with_scratch`] for longer escaped strings). A borrowed `&str` field borrows
/// from the input, so it can only hold a string without escapes; one with escapes is a
/// [`DecodeError::Payload`], never the raw escaped text.
///
/// The envelope is validated first, as by [`decode_json_raw`] (default [`DecodeLimits`]).
/// `serde-json-core` then decodes the payload by recursion, one level of its call stack per
/// level of nesting, also to skip fields that `P` does not have; it has no depth limit of its
/// own, so the payload depth limit is what bounds its stack use (a debug build on x86-64
/// needed between 0.5 and 1 KiB per level). Firmware with a small stack can lower it with
/// [`decode_json_with`].
///
/// # Errors
/// As [`decode_json_raw`], and [`DecodeError::Payload`] when the payload does not decode
/// into `P`.
///
/// ```
/// use lepus_core::envelope::decode_json;
/// #[derive(serde::Deserialize)]
/// #[allow(non_snake_case)]
/// struct Ad { adId: u32 }
/// let env = decode_json::<Ad>(
///     br#"{"payload":{"adId":1},"metadata":{"className":"SendAdExpiredMail","retryLimit":"5"}}"#,
/// ).unwrap();
/// assert_eq!(env.payload.adId, 1);
/// assert_eq!(env.metadata.class_name, "SendAdExpiredMail");
/// assert_eq!(env.metadata.retry.limit, Some(5));
/// ```
pub fn decode_json<'a, P: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<Envelope<'a, P>, DecodeError> {
    let mut scratch = [0u8; UNESCAPE_SCRATCH];
    decode_json_with_scratch(bytes, &mut scratch)
}

/// As [`decode_json`], unescaping payload strings into the caller's `scratch` buffer (each
/// escaped string must fit in it). Never panics, never allocates.
///
/// # Errors
/// As [`decode_json`].
pub fn decode_json_with_scratch<'a, P: Deserialize<'a>>(
    bytes: &'a [u8],
    scratch: &mut [u8],
) -> Result<Envelope<'a, P>, DecodeError> {
    decode_json_with(bytes, scratch, &DecodeLimits::DEFAULT)
}

/// As [`decode_json_with_scratch`], the envelope validated with `limits` (as
/// [`decode_json_raw_with`]) before `serde-json-core` decodes the payload; a lower payload
/// depth also bounds that decoder's recursion lower. Never panics, never allocates.
///
/// # Errors
/// As [`decode_json`].
pub fn decode_json_with<'a, P: Deserialize<'a>>(
    bytes: &'a [u8],
    scratch: &mut [u8],
    limits: &DecodeLimits,
) -> Result<Envelope<'a, P>, DecodeError> {
    let raw = decode_json_raw_with(bytes, limits)?;
    let (payload, _) = serde_json_core::from_slice_escaped::<P>(raw.payload, scratch)
        .map_err(|_| DecodeError::Payload)?;
    Ok(Envelope {
        payload,
        metadata: raw.metadata,
    })
}

/// Encodes an envelope as compact JSON into `out`; returns the number of bytes written.
///
/// The payload is written by `serde-json-core`; the metadata keys follow in a fixed order:
/// `className`, `retryStrategy`, `retryLimit`, `retryCount`, `retryInterval`,
/// `retryBackoff`, `response_queue`, `correlationId`. `className` and `retryCount` are always
/// written, the others only when set. Strings read from JSON keep their original escapes.
/// Never panics, never allocates.
///
/// # Errors
/// [`EncodeError::BufferFull`] if `out` is too small (its content is then unspecified).
pub fn encode_json<P: Serialize>(
    envelope: &Envelope<'_, P>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut w = encode::Writer::new(out);
    encode::write_envelope(&mut w, &envelope.metadata, |w| {
        let n = serde_json_core::to_slice(&envelope.payload, w.rest()).map_err(|e| match e {
            serde_json_core::ser::Error::BufferFull => EncodeError::BufferFull,
            #[allow(unreachable_patterns)]
            _ => EncodeError::Payload,
        })?;
        w.advance(n)
    })?;
    Ok(w.len())
}

/// Encodes an envelope whose payload is already JSON (copied verbatim) into `out`.
///
/// # Errors
/// [`EncodeError::BufferFull`] if `out` is too small.
pub fn encode_json_raw(envelope: &RawEnvelope<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = encode::Writer::new(out);
    encode::write_envelope(&mut w, &envelope.metadata, |w| w.push(envelope.payload))?;
    Ok(w.len())
}

/// What a JSON envelope starts with, before its payload.
pub const JSON_PAYLOAD_HEAD: &[u8] = b"{\"payload\":";

/// Encodes what follows the payload of a JSON envelope (`,"metadata":{…}}`) into `out`;
/// returns the number of bytes written. [`JSON_PAYLOAD_HEAD`], a payload and this tail are
/// the bytes [`encode_json_raw`] writes: for a payload serialized by another serializer
/// straight into the buffer that holds the envelope, instead of into one of its own and
/// copied. Never panics, never allocates.
///
/// # Errors
/// [`EncodeError::BufferFull`] if `out` is too small.
pub fn encode_json_tail(metadata: &Metadata<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = encode::Writer::new(out);
    encode::write_tail(&mut w, metadata)?;
    Ok(w.len())
}

/// Encodes an envelope as postcard (layout in the module `compact` docs: metadata, then
/// payload) into `out`; returns the number of bytes written. Never panics, never allocates.
///
/// # Errors
/// [`EncodeError::BufferFull`] if `out` is too small; [`EncodeError::Payload`] if the payload
/// cannot be serialized by postcard.
pub fn encode_postcard<P: Serialize>(
    envelope: &Envelope<'_, P>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    postcard::to_slice(&compact::Whole(&envelope.metadata, &envelope.payload), out)
        .map(|used| used.len())
        .map_err(compact::encode_error)
}

/// Encodes an envelope as a COBS frame of [`encode_postcard`]'s bytes, terminated by a zero
/// byte, for serial links.
///
/// # Errors
/// As [`encode_postcard`].
pub fn encode_postcard_cobs<P: Serialize>(
    envelope: &Envelope<'_, P>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    postcard::to_slice_cobs(&compact::Whole(&envelope.metadata, &envelope.payload), out)
        .map(|used| used.len())
        .map_err(compact::encode_error)
}

/// Encodes an envelope whose payload is already postcard (copied verbatim) into `out`.
///
/// # Errors
/// [`EncodeError::BufferFull`] if `out` is too small.
pub fn encode_postcard_raw(
    envelope: &RawEnvelope<'_>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let n = postcard::to_slice(&compact::MetaOut(&envelope.metadata), out)
        .map_err(compact::encode_error)?
        .len();
    let mut w = encode::Writer::new(out);
    w.advance(n)?;
    w.push(envelope.payload)?;
    Ok(w.len())
}

/// Decodes a postcard envelope without decoding its payload (the bytes after the metadata).
///
/// # Errors
/// [`DecodeError::Postcard`] for malformed bytes, [`DecodeError::TooMany`] for more than
/// `MAX_INTERVALS` intervals, [`DecodeError::WrongType`] for an unknown strategy code.
pub fn decode_postcard_raw(bytes: &[u8]) -> Result<RawEnvelope<'_>, DecodeError> {
    let (meta, payload) = postcard::take_from_bytes::<compact::MetaIn<'_>>(bytes)
        .map_err(|_| DecodeError::Postcard)?;
    Ok(RawEnvelope {
        payload,
        metadata: meta.into_metadata()?,
    })
}

/// Decodes a postcard envelope; strings borrow from `bytes`.
///
/// # Errors
/// As [`decode_postcard_raw`]; [`DecodeError::Payload`] if the payload does not decode into
/// `P`; [`DecodeError::PostcardTrailingBytes`] if bytes follow the payload.
pub fn decode_postcard<'a, P: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<Envelope<'a, P>, DecodeError> {
    let raw = decode_postcard_raw(bytes)?;
    let (payload, rest) =
        postcard::take_from_bytes::<P>(raw.payload).map_err(|_| DecodeError::Payload)?;
    if !rest.is_empty() {
        return Err(DecodeError::PostcardTrailingBytes);
    }
    Ok(Envelope {
        payload,
        metadata: raw.metadata,
    })
}

/// Decodes one COBS frame (as written by [`encode_postcard_cobs`]) in place; strings borrow
/// from `frame`, which is overwritten by the decoded bytes. Bytes after the payload inside
/// the frame are ignored (postcard's `from_bytes_cobs` does not report them).
///
/// # Errors
/// As [`decode_postcard`]; [`DecodeError::Postcard`] also for a bad COBS frame.
pub fn decode_postcard_cobs<'a, P: Deserialize<'a>>(
    frame: &'a mut [u8],
) -> Result<Envelope<'a, P>, DecodeError> {
    let (meta, payload): (compact::MetaIn<'a>, P) =
        postcard::from_bytes_cobs(frame).map_err(|_| DecodeError::Postcard)?;
    Ok(Envelope {
        payload,
        metadata: meta.into_metadata()?,
    })
}
