//! The JSON envelope decoder as it was before issue 13, kept unchanged as the reference model
//! for the one-pass decoder in `envelope/decode.rs` (differential proptest and fuzz target).
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

use super::super::decode::{Spans, EDITABLE};
use super::super::error::{DecodeError, Field};
use super::super::limits::DecodeLimits;
use super::super::text::Text;
use super::super::{Metadata, RawEnvelope};
use super::scan::{parse_seconds_ms, parse_u32, Keyword, Lexer, NumberError};
use crate::retry::{Backoff, Intervals, RetryMetadata, Strategy, MAX_INTERVALS};

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

/// Parses a whole JSON envelope without decoding its payload.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<(RawEnvelope<'a>, Spans), DecodeError> {
    let src = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    let mut lx = Lexer::new(src);
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
    let mut spans = Spans::default();
    let mut payload: Option<&[u8]> = None;
    let mut metadata: Option<Metadata<'_>> = None;
    if !lx.eat(b'}') {
        loop {
            let key = lx.key()?;
            if key == "payload" {
                if payload.is_some() {
                    return Err(DecodeError::Duplicate(Field::Payload));
                }
                let (start, end) = lx.skip_value(0, limits.max_payload_depth())?;
                payload = Some(
                    bytes
                        .get(start..end)
                        .ok_or(DecodeError::Syntax { offset: start })?,
                );
            } else if key == "metadata" {
                if metadata.is_some() {
                    return Err(DecodeError::Duplicate(Field::Metadata));
                }
                metadata = Some(parse_metadata(&mut lx, &mut spans)?);
            } else {
                lx.skip_value(0, DecodeLimits::METADATA_DEPTH)?;
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
    let payload = payload.ok_or(DecodeError::Missing(Field::Payload))?;
    let metadata = metadata.ok_or(DecodeError::Missing(Field::Metadata))?;
    Ok((RawEnvelope { payload, metadata }, spans))
}

fn metadata_key(key: &Text<'_>) -> Option<Field> {
    match key.as_plain() {
        Some("className") => Some(Field::ClassName),
        Some("retryStrategy") => Some(Field::RetryStrategy),
        Some("retryLimit") => Some(Field::RetryLimit),
        Some("retryCount") => Some(Field::RetryCount),
        Some("retryInterval") => Some(Field::RetryInterval),
        Some("retryBackoff") => Some(Field::RetryBackoff),
        Some("response_queue") => Some(Field::ResponseQueue),
        Some("correlationId") => Some(Field::CorrelationId),
        Some(_) => None,
        None => METADATA_KEYS
            .iter()
            .copied()
            .find(|f| *key == f.wire_name()),
    }
}

fn parse_metadata<'a>(lx: &mut Lexer<'a>, spans: &mut Spans) -> Result<Metadata<'a>, DecodeError> {
    lx.skip_ws();
    if lx.peek() != Some(b'{') {
        return Err(match lx.peek() {
            None => lx.syntax(),
            Some(_) => DecodeError::WrongType(Field::Metadata),
        });
    }
    lx.pos += 1;
    let mut seen = 0u32;
    let mut class_name = None;
    let mut retry = RetryMetadata::default();
    let mut response_queue = None;
    let mut correlation_id = None;
    spans.metadata_empty = lx.eat(b'}');
    if !spans.metadata_empty {
        loop {
            let key = lx.key()?;
            let start = lx.pos;
            match metadata_key(&key) {
                None => {
                    lx.skip_value(1, DecodeLimits::METADATA_DEPTH)?;
                }
                Some(field) => {
                    mark(&mut seen, field)?;
                    match field {
                        Field::ClassName => {
                            class_name =
                                Some(opt_string(lx, field)?.ok_or(DecodeError::WrongType(field))?);
                        }
                        Field::RetryStrategy => {
                            retry.strategy = match opt_string(lx, field)? {
                                None => Strategy::Unspecified,
                                Some(t) => strategy_from_text(&t),
                            };
                        }
                        Field::RetryLimit => retry.limit = opt_u32(lx, field)?,
                        Field::RetryCount => retry.count = opt_u32(lx, field)?.unwrap_or(0),
                        Field::RetryInterval => retry.intervals = intervals(lx)?,
                        Field::RetryBackoff => retry.backoff = backoff(lx)?,
                        Field::ResponseQueue => response_queue = opt_string(lx, field)?,
                        Field::CorrelationId => correlation_id = opt_string(lx, field)?,
                        _ => {
                            lx.skip_value(1, DecodeLimits::METADATA_DEPTH)?;
                        }
                    }
                    if let Some(slot) = EDITABLE
                        .iter()
                        .position(|f| *f == field)
                        .and_then(|i| spans.values.get_mut(i))
                    {
                        *slot = Some((start, lx.pos));
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
    spans.metadata_close = lx.pos.saturating_sub(1);
    Ok(Metadata {
        class_name: class_name.ok_or(DecodeError::Missing(Field::ClassName))?,
        retry,
        response_queue,
        correlation_id,
    })
}

/// The strategy named by a (possibly escaped) string.
fn strategy_from_text(t: &Text<'_>) -> Strategy {
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

/// The text of a number or numeric string, or `None` for `null`.
fn opt_number_text<'a>(lx: &mut Lexer<'a>, field: Field) -> Result<Option<&'a str>, DecodeError> {
    match lx.peek() {
        Some(b'-' | b'0'..=b'9') => lx.number().map(Some),
        Some(b'"') => {
            let t = lx.string()?;
            t.as_plain()
                .map(Some)
                .ok_or(DecodeError::InvalidNumber(field))
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
    match opt_number_text(lx, field)? {
        None => Ok(None),
        Some(text) => parse_u32(text).map(Some).map_err(number_error(field)),
    }
}

fn opt_seconds(lx: &mut Lexer<'_>, field: Field) -> Result<Option<u32>, DecodeError> {
    match opt_number_text(lx, field)? {
        None => Ok(None),
        Some(text) => parse_seconds_ms(text)
            .map(Some)
            .map_err(number_error(field)),
    }
}

fn intervals(lx: &mut Lexer<'_>) -> Result<Option<Intervals>, DecodeError> {
    const FIELD: Field = Field::RetryInterval;
    match lx.peek() {
        Some(b'[') => lx.pos += 1,
        _ => {
            return match opt_string(lx, FIELD)? {
                None => Ok(None),
                Some(_) => Err(DecodeError::WrongType(FIELD)),
            }
        }
    }
    let mut out = Intervals::new();
    if lx.eat(b']') {
        return Ok(Some(out));
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
        return Ok(Some(out));
    }
}

fn backoff(lx: &mut Lexer<'_>) -> Result<Option<Backoff>, DecodeError> {
    const FIELD: Field = Field::RetryBackoff;
    match lx.peek() {
        Some(b'{') => lx.pos += 1,
        _ => {
            return match opt_string(lx, FIELD)? {
                None => Ok(None),
                Some(_) => Err(DecodeError::WrongType(FIELD)),
            }
        }
    }
    let mut b = Backoff::default();
    let mut seen = 0u32;
    if lx.eat(b'}') {
        return Ok(Some(b));
    }
    loop {
        let key = lx.key()?;
        match BACKOFF_KEYS
            .iter()
            .find(|(name, _)| key == *name)
            .map(|(_, f)| *f)
        {
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
        return Ok(Some(b));
    }
}
