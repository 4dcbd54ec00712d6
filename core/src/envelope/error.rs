//! Errors of the envelope codecs: one small `Copy` enum per operation.

use core::fmt;

/// A field of the envelope, named in errors by its wire key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Field {
    /// The envelope's `payload`.
    Payload,
    /// The envelope's `metadata` object.
    Metadata,
    /// `metadata.className`.
    ClassName,
    /// `metadata.retryStrategy`.
    RetryStrategy,
    /// `metadata.retryLimit`.
    RetryLimit,
    /// `metadata.retryCount`.
    RetryCount,
    /// `metadata.retryInterval`.
    RetryInterval,
    /// `metadata.retryBackoff`.
    RetryBackoff,
    /// `metadata.retryBackoff.base`.
    BackoffBase,
    /// `metadata.retryBackoff.factor`.
    BackoffFactor,
    /// `metadata.retryBackoff.max`.
    BackoffMax,
    /// `metadata.retryBackoff.jitter`.
    BackoffJitter,
    /// `metadata.response_queue`.
    ResponseQueue,
    /// `metadata.correlationId`.
    CorrelationId,
}

impl Field {
    /// The key as written on the wire (`"retryInterval"`, `"retryBackoff.base"`, ...).
    pub const fn wire_name(self) -> &'static str {
        match self {
            Field::Payload => "payload",
            Field::Metadata => "metadata",
            Field::ClassName => "className",
            Field::RetryStrategy => "retryStrategy",
            Field::RetryLimit => "retryLimit",
            Field::RetryCount => "retryCount",
            Field::RetryInterval => "retryInterval",
            Field::RetryBackoff => "retryBackoff",
            Field::BackoffBase => "retryBackoff.base",
            Field::BackoffFactor => "retryBackoff.factor",
            Field::BackoffMax => "retryBackoff.max",
            Field::BackoffJitter => "retryBackoff.jitter",
            Field::ResponseQueue => "response_queue",
            Field::CorrelationId => "correlationId",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

/// Why an envelope could not be decoded (JSON or postcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The JSON input is not valid UTF-8.
    InvalidUtf8,
    /// Malformed JSON at this byte offset (including truncated input).
    Syntax {
        /// Byte offset of the offending byte (the input length when truncated).
        offset: usize,
    },
    /// Objects/arrays nest deeper than allowed (see [`DecodeLimits`](super::DecodeLimits)):
    /// in the payload, deeper than the call's payload depth; elsewhere, deeper than
    /// [`METADATA_DEPTH`](super::DecodeLimits::METADATA_DEPTH).
    TooDeep {
        /// Byte offset of the bracket that went too deep.
        offset: usize,
        /// The depth that was exceeded.
        limit: u32,
    },
    /// Bytes after the end of the envelope, starting at this offset.
    TrailingData {
        /// Byte offset of the first byte after the envelope.
        offset: usize,
    },
    /// The envelope is not a JSON object.
    NotAnObject,
    /// A required field is absent (`payload`, `metadata`, `className`).
    Missing(Field),
    /// A known key appears twice in the same object.
    Duplicate(Field),
    /// The field's value has the wrong JSON type.
    WrongType(Field),
    /// A number the field cannot hold: an exponent, a fraction in an integer field, or a
    /// duration finer than a millisecond.
    InvalidNumber(Field),
    /// A number out of the field's range: negative, above `u32::MAX`, or a duration above
    /// `u32::MAX` milliseconds.
    OutOfRange(Field),
    /// More entries than the field can hold (`retryInterval` above `MAX_INTERVALS`).
    TooMany(Field),
    /// The payload could not be decoded into the requested type.
    Payload,
    /// The postcard bytes are malformed or truncated.
    Postcard,
    /// Bytes after the end of a postcard envelope.
    PostcardTrailingBytes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidUtf8 => f.write_str("envelope is not valid UTF-8"),
            DecodeError::Syntax { offset } => write!(f, "malformed JSON at byte {offset}"),
            DecodeError::TooDeep { offset, limit } => {
                write!(f, "JSON nested deeper than {limit} levels at byte {offset}")
            }
            DecodeError::TrailingData { offset } => {
                write!(f, "trailing data after the envelope at byte {offset}")
            }
            DecodeError::NotAnObject => f.write_str("envelope is not a JSON object"),
            DecodeError::Missing(field) => write!(f, "missing field `{field}`"),
            DecodeError::Duplicate(field) => write!(f, "duplicate field `{field}`"),
            DecodeError::WrongType(field) => write!(f, "wrong type for field `{field}`"),
            DecodeError::InvalidNumber(field) => write!(f, "invalid number in field `{field}`"),
            DecodeError::OutOfRange(field) => write!(f, "number out of range in field `{field}`"),
            DecodeError::TooMany(field) => write!(f, "too many entries in field `{field}`"),
            DecodeError::Payload => f.write_str("payload does not decode into the requested type"),
            DecodeError::Postcard => f.write_str("malformed postcard envelope"),
            DecodeError::PostcardTrailingBytes => {
                f.write_str("trailing bytes after the postcard envelope")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why an envelope could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small; nothing usable was written.
    BufferFull,
    /// The payload's `Serialize` implementation failed for a reason other than space.
    Payload,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferFull => f.write_str("output buffer full"),
            EncodeError::Payload => f.write_str("payload failed to serialize"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Why [`DecodeLimits`](super::DecodeLimits) could not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LimitError {
    /// A payload depth of 0: no payload object or array could decode.
    ZeroPayloadDepth,
    /// A payload depth above [`MAX_PAYLOAD_DEPTH`](super::DecodeLimits::MAX_PAYLOAD_DEPTH).
    PayloadDepthAboveMax,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::ZeroPayloadDepth => f.write_str("payload depth must be at least 1"),
            LimitError::PayloadDepthAboveMax => write!(
                f,
                "payload depth above the cap of {}",
                super::DecodeLimits::MAX_PAYLOAD_DEPTH
            ),
        }
    }
}

impl core::error::Error for LimitError {}

/// Why an encoded JSON envelope could not be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RewriteError {
    /// The input envelope does not decode.
    Decode(DecodeError),
    /// The output buffer is too small; nothing usable was written.
    BufferFull,
    /// An edit cannot be written (a `retryStrategy` edit to `Unspecified`/`Unknown`).
    InvalidEdit(Field),
    /// `retryCount` is already `u32::MAX` and cannot be incremented.
    CountOverflow,
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteError::Decode(e) => write!(f, "cannot rewrite: {e}"),
            RewriteError::BufferFull => f.write_str("output buffer full"),
            RewriteError::InvalidEdit(field) => write!(f, "invalid edit of field `{field}`"),
            RewriteError::CountOverflow => f.write_str("retryCount cannot be incremented"),
        }
    }
}

impl core::error::Error for RewriteError {}

impl From<DecodeError> for RewriteError {
    fn from(e: DecodeError) -> Self {
        RewriteError::Decode(e)
    }
}
