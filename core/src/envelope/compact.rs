//! The compact postcard form of the envelope (<https://postcard.jamesmunns.com/wire-format>).
//!
//! An envelope is its metadata followed by its payload, both postcard, with no framing:
//!
//! | # | field            | postcard type                                   |
//! |---|------------------|-------------------------------------------------|
//! | 1 | `className`      | `str`                                           |
//! | 2 | `retryStrategy`  | `u8`: 0 unspecified, 1 ignore, 2 repeat, 3 backoff, 4 unknown |
//! | 3 | `retryLimit`     | `Option<u32>`                                   |
//! | 4 | `retryCount`     | `u32` (varint)                                  |
//! | 5 | `retryInterval`  | `Option<seq<u32>>`, milliseconds                |
//! | 6 | `retryBackoff`   | `Option<(u32 base ms, u32 factor, u32 max ms, bool jitter)>` |
//! | 7 | `response_queue` | `Option<str>`                                   |
//! | 8 | `correlationId`  | `Option<str>`                                   |
//! | 9 | payload          | `P` as postcard                                 |
//!
//! Metadata first lets a worker read `className` and stop before the payload.

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{DecodeError, EncodeError, Field};
use super::text::Text;
use super::Metadata;
use crate::retry::{Backoff, Intervals, RetryMetadata, Strategy, MAX_INTERVALS};

fn strategy_code(s: Strategy) -> u8 {
    match s {
        Strategy::Unspecified => 0,
        Strategy::Ignore => 1,
        Strategy::Repeat => 2,
        Strategy::Backoff => 3,
        Strategy::Unknown => 4,
    }
}

fn strategy_from_code(code: u8) -> Option<Strategy> {
    Some(match code {
        0 => Strategy::Unspecified,
        1 => Strategy::Ignore,
        2 => Strategy::Repeat,
        3 => Strategy::Backoff,
        4 => Strategy::Unknown,
        _ => return None,
    })
}

/// Serializes metadata in the layout above.
pub(crate) struct MetaOut<'r, 'a>(pub(crate) &'r Metadata<'a>);

impl Serialize for MetaOut<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let r = &m.retry;
        let mut t = serializer.serialize_tuple(8)?;
        t.serialize_element(&m.class_name)?;
        t.serialize_element(&strategy_code(r.strategy))?;
        t.serialize_element(&r.limit)?;
        t.serialize_element(&r.count)?;
        t.serialize_element(&r.intervals.as_deref())?;
        t.serialize_element(&r.backoff.map(|b| (b.base_ms, b.factor, b.max_ms, b.jitter)))?;
        t.serialize_element(&m.response_queue)?;
        t.serialize_element(&m.correlation_id)?;
        t.end()
    }
}

/// Intervals that note an overflow instead of failing, so the error can name the field.
struct IntervalsIn {
    list: Intervals,
    overflow: bool,
}

impl<'de> Deserialize<'de> for IntervalsIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IntervalsIn;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a sequence of u32 milliseconds")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IntervalsIn, A::Error> {
                let mut out = IntervalsIn {
                    list: Intervals::new(),
                    overflow: false,
                };
                while let Some(ms) = seq.next_element::<u32>()? {
                    if out.list.len() >= MAX_INTERVALS || out.list.push(ms).is_err() {
                        out.overflow = true;
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

/// Deserializes metadata in the layout above.
#[derive(Deserialize)]
pub(crate) struct MetaIn<'a> {
    #[serde(borrow)]
    class_name: &'a str,
    strategy: u8,
    limit: Option<u32>,
    count: u32,
    intervals: Option<IntervalsIn>,
    backoff: Option<(u32, u32, u32, bool)>,
    #[serde(borrow)]
    response_queue: Option<&'a str>,
    #[serde(borrow)]
    correlation_id: Option<&'a str>,
}

impl<'a> MetaIn<'a> {
    pub(crate) fn into_metadata(self) -> Result<Metadata<'a>, DecodeError> {
        let strategy = strategy_from_code(self.strategy)
            .ok_or(DecodeError::WrongType(Field::RetryStrategy))?;
        let intervals = match self.intervals {
            None => None,
            Some(IntervalsIn { overflow: true, .. }) => {
                return Err(DecodeError::TooMany(Field::RetryInterval))
            }
            Some(IntervalsIn { list, .. }) => Some(list),
        };
        Ok(Metadata {
            class_name: Text::plain(self.class_name),
            retry: RetryMetadata {
                strategy,
                limit: self.limit,
                count: self.count,
                intervals,
                backoff: self
                    .backoff
                    .map(|(base_ms, factor, max_ms, jitter)| Backoff {
                        base_ms,
                        factor,
                        max_ms,
                        jitter,
                    }),
            },
            response_queue: self.response_queue.map(Text::plain),
            correlation_id: self.correlation_id.map(Text::plain),
        })
    }
}

pub(crate) fn encode_error(e: postcard::Error) -> EncodeError {
    match e {
        postcard::Error::SerializeBufferFull => EncodeError::BufferFull,
        _ => EncodeError::Payload,
    }
}

/// Metadata then payload.
pub(crate) struct Whole<'r, 'a, P>(pub(crate) &'r Metadata<'a>, pub(crate) &'r P);

impl<P: Serialize> Serialize for Whole<'_, '_, P> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut t = serializer.serialize_tuple(2)?;
        t.serialize_element(&MetaOut(self.0))?;
        t.serialize_element(self.1)?;
        t.end()
    }
}
