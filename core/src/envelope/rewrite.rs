//! Re-publishing an encoded JSON envelope with edited metadata, payload byte-identical.

use super::decode::{parse, Spans, EDITABLE};
use super::encode::Writer;
use super::error::{EncodeError, Field, RewriteError};
use super::limits::DecodeLimits;
use super::text::Text;
use crate::retry::Strategy;

/// Metadata values to set when re-publishing an envelope with [`rewrite_json`]; `None` leaves
/// a key as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MetadataEdits<'e> {
    /// New `retryStrategy` (`Ignore`, `Repeat` or `Backoff`).
    pub retry_strategy: Option<Strategy>,
    /// New `retryLimit`.
    pub retry_limit: Option<u32>,
    /// New `retryCount`.
    pub retry_count: Option<u32>,
    /// New `response_queue`.
    pub response_queue: Option<&'e str>,
    /// New `correlationId`.
    pub correlation_id: Option<&'e str>,
}

impl MetadataEdits<'_> {
    /// Only sets `retryCount` (a retry sets the next count, a replay sets 0).
    pub const fn retry_count(count: u32) -> Self {
        MetadataEdits {
            retry_strategy: None,
            retry_limit: None,
            retry_count: Some(count),
            response_queue: None,
            correlation_id: None,
        }
    }

    fn is_set(&self, field: Field) -> bool {
        match field {
            Field::RetryStrategy => self.retry_strategy.is_some(),
            Field::RetryLimit => self.retry_limit.is_some(),
            Field::RetryCount => self.retry_count.is_some(),
            Field::ResponseQueue => self.response_queue.is_some(),
            Field::CorrelationId => self.correlation_id.is_some(),
            _ => false,
        }
    }

    fn write_value(&self, field: Field, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match field {
            Field::RetryStrategy => w.strategy(self.retry_strategy.unwrap_or_default()),
            Field::RetryLimit => w.u32(self.retry_limit.unwrap_or_default()),
            Field::RetryCount => w.u32(self.retry_count.unwrap_or_default()),
            Field::ResponseQueue => w.text(&Text::plain(self.response_queue.unwrap_or_default())),
            Field::CorrelationId => w.text(&Text::plain(self.correlation_id.unwrap_or_default())),
            _ => Ok(()),
        }
    }
}

/// Copies the JSON envelope `input` into `out` byte for byte, except the values of the metadata
/// keys set in `edits`; returns the number of bytes written.
///
/// An edited key already present has its value replaced in place (a numeric string such as
/// `"retryCount": "0"` becomes a number); an absent one is appended at the end of the metadata
/// object, in the order `retryStrategy`, `retryLimit`, `retryCount`, `response_queue`,
/// `correlationId`. Everything else (payload bytes, unknown keys, whitespace, escapes, a
/// leading byte-order mark) is kept exactly. The input is fully validated first, as by [`decode_json_raw`](super::decode_json_raw)
/// (default [`DecodeLimits`]; [`rewrite_json_with`] takes others). Never panics, never
/// allocates.
///
/// # Errors
/// [`RewriteError::Decode`] if the input does not decode, [`RewriteError::InvalidEdit`] for a
/// `retryStrategy` edit that is not `Ignore`/`Repeat`/`Backoff`, [`RewriteError::BufferFull`]
/// if `out` is too small.
///
/// ```
/// use lepus_core::envelope::{rewrite_json, MetadataEdits};
/// let input = br#"{"payload":{"adId":1},"metadata":{"className":"A","retryCount":"0","x":[1]}}"#;
/// let mut out = [0u8; 128];
/// let n = rewrite_json(input, &MetadataEdits::retry_count(1), &mut out).unwrap();
/// assert_eq!(&out[..n], br#"{"payload":{"adId":1},"metadata":{"className":"A","retryCount":1,"x":[1]}}"#);
/// ```
pub fn rewrite_json(
    input: &[u8],
    edits: &MetadataEdits<'_>,
    out: &mut [u8],
) -> Result<usize, RewriteError> {
    rewrite_json_with(input, edits, &DecodeLimits::DEFAULT, out)
}

/// As [`rewrite_json`], validating the input with `limits` (as
/// [`decode_json_raw_with`](super::decode_json_raw_with)): pass the limits the envelope was
/// decoded with, so that what decodes can be rewritten. Never panics, never allocates.
///
/// # Errors
/// As [`rewrite_json`].
pub fn rewrite_json_with(
    input: &[u8],
    edits: &MetadataEdits<'_>,
    limits: &DecodeLimits,
    out: &mut [u8],
) -> Result<usize, RewriteError> {
    let mut spans = Spans::default();
    parse(input, limits, Some(&mut spans))?;
    rewrite_parsed(input, &spans, edits, out)
}

/// Re-publishes the envelope for its next retry: [`rewrite_json`] with `retryCount` set to the
/// current count plus one (default [`DecodeLimits`]).
///
/// # Errors
/// As [`rewrite_json`]; [`RewriteError::CountOverflow`] if the count is `u32::MAX`.
pub fn rewrite_json_retry(input: &[u8], out: &mut [u8]) -> Result<usize, RewriteError> {
    let mut spans = Spans::default();
    let raw = parse(input, &DecodeLimits::DEFAULT, Some(&mut spans))?;
    let next = raw
        .metadata
        .retry
        .count
        .checked_add(1)
        .ok_or(RewriteError::CountOverflow)?;
    rewrite_parsed(input, &spans, &MetadataEdits::retry_count(next), out)
}

/// Re-publishes a dead-lettered envelope for a replay: [`rewrite_json`] with `retryCount` 0
/// (default [`DecodeLimits`]).
///
/// # Errors
/// As [`rewrite_json`].
pub fn rewrite_json_replay(input: &[u8], out: &mut [u8]) -> Result<usize, RewriteError> {
    rewrite_json(input, &MetadataEdits::retry_count(0), out)
}

pub(crate) fn rewrite_parsed(
    input: &[u8],
    spans: &Spans,
    edits: &MetadataEdits<'_>,
    out: &mut [u8],
) -> Result<usize, RewriteError> {
    if let Some(Strategy::Unspecified | Strategy::Unknown) = edits.retry_strategy {
        return Err(RewriteError::InvalidEdit(Field::RetryStrategy));
    }
    // Replacements, sorted by position in the input.
    let mut ops: [(usize, usize, Field); 5] = [(0, 0, Field::Payload); 5];
    let mut n = 0;
    for (field, span) in EDITABLE.iter().zip(spans.values.iter()) {
        if let (true, Some((start, end))) = (edits.is_set(*field), span) {
            if let Some(slot) = ops.get_mut(n) {
                *slot = (*start, *end, *field);
                n += 1;
            }
        }
    }
    let ops = ops.get_mut(..n).unwrap_or_default();
    ops.sort_unstable_by_key(|op| op.0);

    let full = |_| RewriteError::BufferFull;
    let mut w = Writer::new(out);
    let mut pos = 0;
    for (start, end, field) in ops.iter() {
        w.push(input.get(pos..*start).ok_or(RewriteError::BufferFull)?)
            .map_err(full)?;
        edits.write_value(*field, &mut w).map_err(full)?;
        pos = *end;
    }
    let close = spans.metadata_close;
    w.push(input.get(pos..close).ok_or(RewriteError::BufferFull)?)
        .map_err(full)?;
    let mut empty = spans.metadata_empty;
    for (field, span) in EDITABLE.iter().zip(spans.values.iter()) {
        if edits.is_set(*field) && span.is_none() {
            if !empty {
                w.push(b",").map_err(full)?;
            }
            empty = false;
            w.push(b"\"").map_err(full)?;
            w.push(field.wire_name().as_bytes()).map_err(full)?;
            w.push(b"\":").map_err(full)?;
            edits.write_value(*field, &mut w).map_err(full)?;
        }
    }
    w.push(input.get(close..).ok_or(RewriteError::BufferFull)?)
        .map_err(full)?;
    Ok(w.len())
}
