//! Lenient decoding of the JSON envelope: splits it into the raw payload span and the
//! metadata, which is parsed as the PHP side really sends it.
//!
//! Rules (documented on [`decode_json`](super::decode_json)):
//! - envelope keys and metadata keys in any order, whitespace anywhere;
//! - integers may be numeric strings (`"retryLimit": "5"`), also in `retryInterval`;
//! - missing retry fields take defaults, `null` counts as missing; `className` is required;
//! - one UTF-8 byte-order mark before the envelope is skipped; positions stay those of the
//!   input, so a rewrite keeps the mark;
//! - unknown keys are skipped (in the envelope, the metadata and `retryBackoff`);
//! - a known key given twice is an error ([`DecodeError::Duplicate`]), so no two JSON parsers
//!   can disagree on which value we acted on.
//!
//! One pass over the input (see [`scan`](super::scan)); the metadata is written in place, and
//! the spans a rewrite needs are recorded only when a rewrite asks for them. Invalid UTF-8
//! anywhere is [`DecodeError::InvalidUtf8`], whatever else is wrong: strings are checked as
//! they are read, and before any other error is returned the whole input is.

use super::error::{DecodeError, Field};
use super::limits::DecodeLimits;
use super::scan::{Keyword, Lexer, Number, NumberError, Span};
use super::text::Text;
use super::{Metadata, RawEnvelope};
use crate::retry::{Backoff, Intervals, Strategy, MAX_INTERVALS};

/// Metadata keys that [`rewrite_json`](super::rewrite_json) can edit, in emission order.
pub(crate) const EDITABLE: [Field; 5] = [
    Field::RetryStrategy,
    Field::RetryLimit,
    Field::RetryCount,
    Field::ResponseQueue,
    Field::CorrelationId,
];

/// Index of `field` in [`EDITABLE`].
fn editable_index(field: Field) -> Option<usize> {
    match field {
        Field::RetryStrategy => Some(0),
        Field::RetryLimit => Some(1),
        Field::RetryCount => Some(2),
        Field::ResponseQueue => Some(3),
        Field::CorrelationId => Some(4),
        _ => None,
    }
}

/// Where things are in the input, for rewriting.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Spans {
    /// Offset of the metadata's closing `}`.
    pub(crate) metadata_close: usize,
    /// Whether the metadata object has no members.
    pub(crate) metadata_empty: bool,
    /// Value spans of the [`EDITABLE`] keys, when present.
    pub(crate) values: [Option<(usize, usize)>; 5],
}

const METADATA_KEYS: [Field; 8] = [
    Field::ClassName,
    Field::RetryStrategy,
    Field::RetryLimit,
    Field::RetryCount,
    Field::RetryInterval,
    Field::RetryBackoff,
    Field::ResponseQueue,
    Field::CorrelationId,
];

const BACKOFF_KEYS: [(&str, Field); 4] = [
    ("base", Field::BackoffBase),
    ("factor", Field::BackoffFactor),
    ("max", Field::BackoffMax),
    ("jitter", Field::BackoffJitter),
];

fn bit(field: Field) -> u32 {
    1 << (field as u32)
}

fn mark(seen: &mut u32, field: Field) -> Result<(), DecodeError> {
    if *seen & bit(field) != 0 {
        return Err(DecodeError::Duplicate(field));
    }
    *seen |= bit(field);
    Ok(())
}

fn number_error(field: Field) -> impl Fn(NumberError) -> DecodeError {
    move |e| match e {
        NumberError::Invalid => DecodeError::InvalidNumber(field),
        NumberError::Range => DecodeError::OutOfRange(field),
    }
}

/// Parses a whole JSON envelope without decoding its payload; records the rewrite spans
/// into `spans` when given.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
    spans: Option<&mut Spans>,
) -> Result<RawEnvelope<'a>, DecodeError> {
    let mut raw = RawEnvelope {
        payload: &[],
        metadata: Metadata::default(),
    };
    match parse_into(bytes, limits, &mut raw, spans) {
        Ok(()) => Ok(raw),
        // Invalid UTF-8 anywhere comes before any other error, as when the whole input was
        // checked first. Strings were checked as they were read; the rest of the input may
        // not have been reached.
        Err(e) if e != DecodeError::InvalidUtf8 && core::str::from_utf8(bytes).is_err() => {
            Err(DecodeError::InvalidUtf8)
        }
        Err(e) => Err(e),
    }
}

/// Which envelope key a key is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EnvelopeKey {
    Payload,
    Metadata,
    Other,
}

fn envelope_key(key: Span<'_>) -> Result<EnvelopeKey, DecodeError> {
    if !key.escaped {
        return Ok(match key.raw {
            b"payload" => EnvelopeKey::Payload,
            b"metadata" => EnvelopeKey::Metadata,
            _ => EnvelopeKey::Other,
        });
    }
    let text = key.text()?;
    Ok(if text == "payload" {
        EnvelopeKey::Payload
    } else if text == "metadata" {
        EnvelopeKey::Metadata
    } else {
        EnvelopeKey::Other
    })
}

fn parse_into<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
    raw: &mut RawEnvelope<'a>,
    mut spans: Option<&mut Spans>,
) -> Result<(), DecodeError> {
    let mut lx = Lexer::new(bytes);
    lx.skip_bom();
    lx.skip_ws();
    match lx.peek() {
        Some(b'{') => lx.pos += 1,
        None => return Err(lx.syntax()),
        Some(_) => {
            // Tell "valid JSON, wrong shape" from garbage.
            lx.skip_value(0, limits.max_payload_depth())?;
            return Err(DecodeError::NotAnObject);
        }
    }
    let mut have_payload = false;
    let mut have_metadata = false;
    if !lx.eat(b'}') {
        loop {
            let key = lx.key()?;
            match envelope_key(key)? {
                EnvelopeKey::Payload => {
                    if have_payload {
                        return Err(DecodeError::Duplicate(Field::Payload));
                    }
                    have_payload = true;
                    let (start, end) = lx.skip_value(0, limits.max_payload_depth())?;
                    raw.payload = bytes
                        .get(start..end)
                        .ok_or(DecodeError::Syntax { offset: start })?;
                }
                EnvelopeKey::Metadata => {
                    if have_metadata {
                        return Err(DecodeError::Duplicate(Field::Metadata));
                    }
                    have_metadata = true;
                    parse_metadata(&mut lx, &mut raw.metadata, spans.as_deref_mut())?;
                }
                EnvelopeKey::Other => {
                    lx.skip_value(0, DecodeLimits::METADATA_DEPTH)?;
                }
            }
            if lx.eat(b',') {
                continue;
            }
            lx.expect(b'}')?;
            break;
        }
    }
    lx.skip_ws();
    if !lx.at_end() {
        return Err(DecodeError::TrailingData { offset: lx.pos });
    }
    if !have_payload {
        return Err(DecodeError::Missing(Field::Payload));
    }
    if !have_metadata {
        return Err(DecodeError::Missing(Field::Metadata));
    }
    Ok(())
}

fn metadata_key(key: Span<'_>) -> Result<Option<Field>, DecodeError> {
    if !key.escaped {
        return Ok(match key.raw {
            b"className" => Some(Field::ClassName),
            b"retryStrategy" => Some(Field::RetryStrategy),
            b"retryLimit" => Some(Field::RetryLimit),
            b"retryCount" => Some(Field::RetryCount),
            b"retryInterval" => Some(Field::RetryInterval),
            b"retryBackoff" => Some(Field::RetryBackoff),
            b"response_queue" => Some(Field::ResponseQueue),
            b"correlationId" => Some(Field::CorrelationId),
            _ => None,
        });
    }
    let text = key.text()?;
    Ok(METADATA_KEYS
        .iter()
        .copied()
        .find(|f| text == f.wire_name()))
}

fn parse_metadata<'a>(
    lx: &mut Lexer<'a>,
    out: &mut Metadata<'a>,
    mut spans: Option<&mut Spans>,
) -> Result<(), DecodeError> {
    lx.skip_ws();
    if lx.peek() != Some(b'{') {
        return Err(match lx.peek() {
            None => lx.syntax(),
            Some(_) => DecodeError::WrongType(Field::Metadata),
        });
    }
    lx.pos += 1;
    let mut seen = 0u32;
    let empty = lx.eat(b'}');
    if !empty {
        loop {
            let key = lx.key()?;
            let start = lx.pos;
            match metadata_key(key)? {
                None => {
                    lx.skip_value(1, DecodeLimits::METADATA_DEPTH)?;
                }
                Some(field) => {
                    mark(&mut seen, field)?;
                    let retry = &mut out.retry;
                    match field {
                        Field::ClassName => {
                            out.class_name =
                                opt_string(lx, field)?.ok_or(DecodeError::WrongType(field))?;
                        }
                        Field::RetryStrategy => {
                            retry.strategy = match opt_string(lx, field)? {
                                None => Strategy::Unspecified,
                                Some(t) => strategy_from_text(&t),
                            };
                        }
                        Field::RetryLimit => retry.limit = opt_u32(lx, field)?,
                        Field::RetryCount => retry.count = opt_u32(lx, field)?.unwrap_or(0),
                        Field::RetryInterval => intervals(lx, &mut retry.intervals)?,
                        Field::RetryBackoff => backoff(lx, &mut retry.backoff)?,
                        Field::ResponseQueue => out.response_queue = opt_string(lx, field)?,
                        Field::CorrelationId => out.correlation_id = opt_string(lx, field)?,
                        _ => {
                            lx.skip_value(1, DecodeLimits::METADATA_DEPTH)?;
                        }
                    }
                    if let (Some(spans), Some(i)) = (spans.as_deref_mut(), editable_index(field)) {
                        if let Some(slot) = spans.values.get_mut(i) {
                            *slot = Some((start, lx.pos));
                        }
                    }
                }
            }
            if lx.eat(b',') {
                continue;
            }
            lx.expect(b'}')?;
            break;
        }
    }
    if let Some(spans) = spans {
        spans.metadata_empty = empty;
        spans.metadata_close = lx.pos.saturating_sub(1);
    }
    if seen & bit(Field::ClassName) == 0 {
        return Err(DecodeError::Missing(Field::ClassName));
    }
    Ok(())
}

/// The strategy named by a (possibly escaped) string.
pub(crate) fn strategy_from_text(t: &Text<'_>) -> Strategy {
    if let Some(plain) = t.as_plain() {
        return match plain {
            "ignore" => Strategy::Ignore,
            "repeat" => Strategy::Repeat,
            "backoff" => Strategy::Backoff,
            _ => Strategy::Unknown,
        };
    }
    [Strategy::Ignore, Strategy::Repeat, Strategy::Backoff]
        .into_iter()
        .find(|s| s.as_str().is_some_and(|name| *t == name))
        .unwrap_or(Strategy::Unknown)
}

/// A string, or `null` (`None`); anything else is the field's wrong type.
fn opt_string<'a>(lx: &mut Lexer<'a>, field: Field) -> Result<Option<Text<'a>>, DecodeError> {
    match lx.peek() {
        Some(b'"') => lx.string().map(Some),
        Some(b'n') => match lx.keyword()? {
            Keyword::Null => Ok(None),
            _ => Err(DecodeError::WrongType(field)),
        },
        None => Err(lx.syntax()),
        Some(_) => Err(DecodeError::WrongType(field)),
    }
}

/// A number or numeric string, or `None` for `null`.
fn opt_number(lx: &mut Lexer<'_>, field: Field) -> Result<Option<Number>, DecodeError> {
    match lx.peek() {
        Some(b'-' | b'0'..=b'9') => lx.number().map(Some),
        Some(b'"') => {
            let s = lx.string_span()?;
            if s.escaped {
                return Err(DecodeError::InvalidNumber(field));
            }
            Number::from_string(s.raw)
                .map(Some)
                .map_err(number_error(field))
        }
        Some(b'n') => match lx.keyword()? {
            Keyword::Null => Ok(None),
            _ => Err(DecodeError::WrongType(field)),
        },
        None => Err(lx.syntax()),
        Some(_) => Err(DecodeError::WrongType(field)),
    }
}

fn opt_u32(lx: &mut Lexer<'_>, field: Field) -> Result<Option<u32>, DecodeError> {
    match opt_number(lx, field)? {
        None => Ok(None),
        Some(n) => n.to_u32().map(Some).map_err(number_error(field)),
    }
}

fn opt_seconds(lx: &mut Lexer<'_>, field: Field) -> Result<Option<u32>, DecodeError> {
    match opt_number(lx, field)? {
        None => Ok(None),
        Some(n) => n.to_ms().map(Some).map_err(number_error(field)),
    }
}

fn intervals(lx: &mut Lexer<'_>, out: &mut Option<Intervals>) -> Result<(), DecodeError> {
    const FIELD: Field = Field::RetryInterval;
    match lx.peek() {
        Some(b'[') => lx.pos += 1,
        _ => {
            return match opt_string(lx, FIELD)? {
                None => {
                    *out = None;
                    Ok(())
                }
                Some(_) => Err(DecodeError::WrongType(FIELD)),
            }
        }
    }
    let out = out.insert(Intervals::new());
    if lx.eat(b']') {
        return Ok(());
    }
    loop {
        lx.skip_ws();
        let ms = opt_seconds(lx, FIELD)?.ok_or(DecodeError::WrongType(FIELD))?;
        if out.len() >= MAX_INTERVALS || out.push(ms).is_err() {
            return Err(DecodeError::TooMany(FIELD));
        }
        if lx.eat(b',') {
            continue;
        }
        lx.expect(b']')?;
        return Ok(());
    }
}

fn backoff_key(key: Span<'_>) -> Result<Option<Field>, DecodeError> {
    if !key.escaped {
        return Ok(match key.raw {
            b"base" => Some(Field::BackoffBase),
            b"factor" => Some(Field::BackoffFactor),
            b"max" => Some(Field::BackoffMax),
            b"jitter" => Some(Field::BackoffJitter),
            _ => None,
        });
    }
    let text = key.text()?;
    Ok(BACKOFF_KEYS
        .iter()
        .find(|(name, _)| text == *name)
        .map(|(_, f)| *f))
}

fn backoff(lx: &mut Lexer<'_>, out: &mut Option<Backoff>) -> Result<(), DecodeError> {
    const FIELD: Field = Field::RetryBackoff;
    match lx.peek() {
        Some(b'{') => lx.pos += 1,
        _ => {
            return match opt_string(lx, FIELD)? {
                None => {
                    *out = None;
                    Ok(())
                }
                Some(_) => Err(DecodeError::WrongType(FIELD)),
            }
        }
    }
    let b = out.insert(Backoff::default());
    let mut seen = 0u32;
    if lx.eat(b'}') {
        return Ok(());
    }
    loop {
        let key = lx.key()?;
        match backoff_key(key)? {
            None => {
                // Inside `retryBackoff`, itself inside the metadata.
                lx.skip_value(2, DecodeLimits::METADATA_DEPTH)?;
            }
            Some(field) => {
                mark(&mut seen, field)?;
                match field {
                    Field::BackoffBase => b.base_ms = opt_seconds(lx, field)?.unwrap_or(b.base_ms),
                    Field::BackoffMax => b.max_ms = opt_seconds(lx, field)?.unwrap_or(b.max_ms),
                    Field::BackoffFactor => b.factor = opt_u32(lx, field)?.unwrap_or(b.factor),
                    _ => {
                        b.jitter = match lx.peek() {
                            Some(b't' | b'f' | b'n') => match lx.keyword()? {
                                Keyword::True => true,
                                Keyword::False => false,
                                Keyword::Null => b.jitter,
                            },
                            None => return Err(lx.syntax()),
                            Some(_) => return Err(DecodeError::WrongType(field)),
                        }
                    }
                }
            }
        }
        if lx.eat(b',') {
            continue;
        }
        lx.expect(b'}')?;
        return Ok(());
    }
}
