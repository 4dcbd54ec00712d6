//! The JSON envelope decoder as it was before issue 13 (four passes over each number, a
//! byte-at-a-time key scan, `from_utf8` over the whole input), kept as the reference model
//! for the one-pass decoder: the differential proptest in `tests/reference.rs` and the fuzz
//! target `json_envelope` compare the two on arbitrary bytes. Built only for tests, fuzzing
//! (`--cfg fuzzing`) and the old-against-new bench (`--cfg lepus_reference`).

mod decode;
mod scan;

use super::decode::Spans;
use super::{DecodeError, DecodeLimits, RawEnvelope};

/// [`decode_json_raw_with`](super::decode_json_raw_with) as the reference model decodes it.
///
/// # Errors
/// As `decode_json_raw_with`.
pub fn decode_json_raw_with<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<RawEnvelope<'a>, DecodeError> {
    decode::parse(bytes, limits).map(|(raw, _)| raw)
}

/// The reference model's envelope and rewrite spans.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<(RawEnvelope<'a>, Spans), DecodeError> {
    decode::parse(bytes, limits)
}

/// [`rewrite_json_with`](super::rewrite_json_with) on the reference model's spans.
///
/// # Errors
/// As `rewrite_json_with`.
pub fn rewrite_json_with(
    input: &[u8],
    edits: &super::MetadataEdits<'_>,
    limits: &DecodeLimits,
    out: &mut [u8],
) -> Result<usize, super::RewriteError> {
    let (_, spans) = parse(input, limits)?;
    super::rewrite::rewrite_parsed(input, &spans, edits, out)
}

/// [`decode_json_with`](super::decode_json_with) on the reference model.
///
/// # Errors
/// As `decode_json_with`.
pub fn decode_json_with<'a, P: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    scratch: &mut [u8],
    limits: &DecodeLimits,
) -> Result<super::Envelope<'a, P>, DecodeError> {
    let raw = decode_json_raw_with(bytes, limits)?;
    let (payload, _) = serde_json_core::from_slice_escaped::<P>(raw.payload, scratch)
        .map_err(|_| DecodeError::Payload)?;
    Ok(super::Envelope {
        payload,
        metadata: raw.metadata,
    })
}
