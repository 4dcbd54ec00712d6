//! How deep a JSON envelope may nest: chosen per call, bounded by a fixed cap.

use super::error::LimitError;

/// Limits applied while decoding a JSON envelope, passed to
/// [`decode_json_raw_with`](super::decode_json_raw_with) and the other `_with` functions.
///
/// A value's *depth* is the number of objects and arrays open at its deepest point: `1` and
/// `"x"` have depth 0, `{}` and `[1]` depth 1, `{"a":[1]}` depth 2. The payload's depth is
/// its own, the envelope around it not counted.
///
/// - the payload may nest up to [`max_payload_depth`](Self::max_payload_depth) levels:
///   [`DEFAULT_PAYLOAD_DEPTH`](Self::DEFAULT_PAYLOAD_DEPTH) (128) unless set, at most
///   [`MAX_PAYLOAD_DEPTH`](Self::MAX_PAYLOAD_DEPTH) (1024);
/// - the metadata object and values under unknown envelope keys keep a fixed bound of
///   [`METADATA_DEPTH`](Self::METADATA_DEPTH) levels.
///
/// The decoder tracks nesting in a bit stack of `MAX_PAYLOAD_DEPTH` bits (128 bytes) on the
/// stack, never by recursion, so the cap costs no memory that depends on the input.
///
/// ```
/// use lepus_core::envelope::{decode_json_raw_with, DecodeLimits, LimitError};
/// const DEEP: DecodeLimits = match DecodeLimits::new().payload_depth(512) {
///     Ok(limits) => limits,
///     Err(_) => panic!("512 is within the cap"),
/// };
/// let payload = format!("{}{}", "[".repeat(300), "]".repeat(300));
/// let input = format!(r#"{{"payload":{payload},"metadata":{{"className":"C"}}}}"#);
/// assert_eq!(decode_json_raw_with(input.as_bytes(), &DEEP).unwrap().payload, payload.as_bytes());
/// assert_eq!(DecodeLimits::new().payload_depth(0), Err(LimitError::ZeroPayloadDepth));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct DecodeLimits {
    payload_depth: u32,
}

impl DecodeLimits {
    /// Payload depth allowed unless set: 128. PHP's `json_encode` and `json_decode` allow 512
    /// (the envelope included), so a payload nested deeper than 128 levels needs
    /// [`payload_depth`](Self::payload_depth).
    pub const DEFAULT_PAYLOAD_DEPTH: u32 = 128;

    /// Highest payload depth that can be set: 1024.
    pub const MAX_PAYLOAD_DEPTH: u32 = 1024;

    /// Depth allowed for the metadata object (itself counting as 1) and for the value of each
    /// unknown envelope key: 32. Not configurable; the metadata has a fixed shape.
    pub const METADATA_DEPTH: u32 = 32;

    /// The limits used by [`decode_json_raw`](super::decode_json_raw) and the other functions
    /// without `_with`: payload depth [`DEFAULT_PAYLOAD_DEPTH`](Self::DEFAULT_PAYLOAD_DEPTH).
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        payload_depth: Self::DEFAULT_PAYLOAD_DEPTH,
    };

    /// The default limits ([`DecodeLimits::DEFAULT`]).
    pub const fn new() -> Self {
        Self::DEFAULT
    }

    /// Sets the payload depth allowed, from 1 to [`MAX_PAYLOAD_DEPTH`](Self::MAX_PAYLOAD_DEPTH).
    ///
    /// # Errors
    /// [`LimitError::ZeroPayloadDepth`] for 0 (no payload object or array would decode),
    /// [`LimitError::PayloadDepthAboveMax`] above the cap.
    pub const fn payload_depth(self, depth: u32) -> Result<Self, LimitError> {
        if depth == 0 {
            Err(LimitError::ZeroPayloadDepth)
        } else if depth > Self::MAX_PAYLOAD_DEPTH {
            Err(LimitError::PayloadDepthAboveMax)
        } else {
            Ok(DecodeLimits {
                payload_depth: depth,
            })
        }
    }

    /// The payload depth allowed.
    pub const fn max_payload_depth(&self) -> u32 {
        self.payload_depth
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
