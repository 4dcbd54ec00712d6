//! W3C Trace Context: the `traceparent` header, parsed and written without allocating.
//!
//! Spec: <https://www.w3.org/TR/trace-context/#traceparent-header>. A `traceparent` is
//! `version-traceid-parentid-flags`: `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`,
//! all lowercase hex. The rules [`TraceParent::parse`] applies:
//!
//! - version: two lowercase hex digits, never `ff`. Version `00` is exactly 55 characters.
//!   A higher version is read as version `00` from its first 55 characters, which must be
//!   followed by the end or a `-` (the spec's forward compatibility); the version is kept.
//! - trace id: 32 lowercase hex digits, not all zero; parent (span) id: 16 lowercase hex
//!   digits, not all zero; flags: 2 lowercase hex digits (bit 0 is "sampled").
//! - uppercase hex, other lengths, missing dashes and surrounding text are refused: the
//!   caller ignores such a header and starts a trace of its own, as the spec asks.
//!
//! [`TraceParent::write`] writes the version-`00` form into a caller's 55 bytes; a parse of
//! that text gives the same value back. Never panics, never allocates.

use core::fmt;

/// Length of a version-`00` `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// A 16-byte trace id, never all zero when it comes from [`TraceParent::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span (parent) id, never all zero when it comes from [`TraceParent::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SpanId(pub [u8; 8]);

/// A parsed `traceparent`: which trace, which span is the parent, and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TraceParent {
    /// The version read (`0` for what this crate writes).
    pub version: u8,
    /// The trace the message belongs to.
    pub trace_id: TraceId,
    /// The span that sent the message: the parent of the receiver's span.
    pub parent_id: SpanId,
    /// Trace flags; bit 0 (`0x01`) is "sampled".
    pub flags: u8,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TraceParentError {
    /// Shorter than 55 characters, or a version-`00` header longer than 55.
    WrongLength,
    /// A dash is missing where the format puts one (or a higher version's 56th character is
    /// neither the end nor a dash).
    MissingDash,
    /// A field holds something other than lowercase hex digits.
    NotLowercaseHex,
    /// The version is `ff`, which the spec forbids.
    ForbiddenVersion,
    /// The trace id is all zero.
    ZeroTraceId,
    /// The parent id is all zero.
    ZeroParentId,
}

impl fmt::Display for TraceParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceParentError::WrongLength => "traceparent has the wrong length",
            TraceParentError::MissingDash => "traceparent lacks a dash between its fields",
            TraceParentError::NotLowercaseHex => "traceparent field is not lowercase hex",
            TraceParentError::ForbiddenVersion => "traceparent version ff is forbidden",
            TraceParentError::ZeroTraceId => "traceparent trace id is all zero",
            TraceParentError::ZeroParentId => "traceparent parent id is all zero",
        })
    }
}

impl core::error::Error for TraceParentError {}

/// The value of a lowercase hex digit.
const fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of each byte as a lowercase hex digit; `0xff` for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut c = 0;
    while c < 256 {
        if let Some(v) = hex_value(c as u8) {
            table[c] = v;
        }
        c += 1;
    }
    table
};

/// Reads `2 * N` lowercase hex digits into `N` bytes: a table lookup per digit, one check at
/// the end (a non-digit's `0xff` sets bits that no digit's value has).
fn read_hex<const N: usize>(text: &[u8]) -> Result<[u8; N], TraceParentError> {
    let mut out = [0u8; N];
    if text.len() != 2 * N {
        return Err(TraceParentError::WrongLength);
    }
    let mut seen = 0u8;
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        seen |= hi | lo;
        *byte = hi << 4 | lo;
    }
    if seen > 0x0f {
        return Err(TraceParentError::NotLowercaseHex);
    }
    Ok(out)
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

impl TraceId {
    /// True when every byte is zero (an invalid trace id).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The 32 lowercase hex digits, written into `out`.
    pub fn write_hex<'a>(&self, out: &'a mut [u8; 32]) -> &'a str {
        write_hex(&self.0, out);
        core::str::from_utf8(out).unwrap_or("")
    }
}

impl SpanId {
    /// True when every byte is zero (an invalid span id).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// The 16 lowercase hex digits, written into `out`.
    pub fn write_hex<'a>(&self, out: &'a mut [u8; 16]) -> &'a str {
        write_hex(&self.0, out);
        core::str::from_utf8(out).unwrap_or("")
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write_hex(&mut [0; 32]))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write_hex(&mut [0; 16]))
    }
}

impl TraceParent {
    /// Flag bit: the caller recorded (sampled) its span.
    pub const SAMPLED: u8 = 0x01;

    /// A version-`00` `traceparent` of `trace_id`, `parent_id` and `flags`.
    pub const fn new(trace_id: TraceId, parent_id: SpanId, flags: u8) -> Self {
        TraceParent {
            version: 0,
            trace_id,
            parent_id,
            flags,
        }
    }

    /// True when the sampled flag is set.
    pub const fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// Parses a `traceparent` header value (see the [module docs](self) for the rules).
    ///
    /// ```
    /// use lepus_core::traceparent::{TraceParent, TraceParentError};
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert!(tp.is_ok_and(|tp| tp.sampled() && tp.parent_id.0[7] == 0xb7));
    /// assert_eq!(
    ///     TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
    ///     Err(TraceParentError::NotLowercaseHex)
    /// );
    /// ```
    ///
    /// # Errors
    /// [`TraceParentError`] names the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, TraceParentError> {
        let b = text.as_bytes();
        if b.len() < TRACEPARENT_LEN {
            return Err(TraceParentError::WrongLength);
        }
        let [version] = read_hex::<1>(&b[0..2])?;
        if version == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        if version == 0 && b.len() != TRACEPARENT_LEN {
            return Err(TraceParentError::WrongLength);
        }
        if version != 0 && b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' {
            return Err(TraceParentError::MissingDash);
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceParentError::MissingDash);
        }
        let trace_id = TraceId(read_hex::<16>(&b[3..35])?);
        let parent_id = SpanId(read_hex::<8>(&b[36..52])?);
        let [flags] = read_hex::<1>(&b[53..55])?;
        if trace_id.is_zero() {
            return Err(TraceParentError::ZeroTraceId);
        }
        if parent_id.is_zero() {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(TraceParent {
            version,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Writes the version-`00` form into `out` and returns it as text (whatever version was
    /// parsed: this crate speaks version `00`).
    ///
    /// ```
    /// use lepus_core::traceparent::{SpanId, TraceId, TraceParent};
    /// let tp = TraceParent::new(TraceId([0xab; 16]), SpanId([1; 8]), TraceParent::SAMPLED);
    /// let mut out = [0u8; 55];
    /// assert_eq!(
    ///     tp.write(&mut out),
    ///     "00-abababababababababababababababab-0101010101010101-01"
    /// );
    /// ```
    pub fn write<'a>(&self, out: &'a mut [u8; TRACEPARENT_LEN]) -> &'a str {
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        write_hex(&self.trace_id.0, &mut out[3..35]);
        out[35] = b'-';
        write_hex(&self.parent_id.0, &mut out[36..52]);
        out[52] = b'-';
        write_hex(&[self.flags], &mut out[53..55]);
        core::str::from_utf8(out).unwrap_or("")
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write(&mut [0; TRACEPARENT_LEN]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example_and_writes_it_back() {
        let tp = TraceParent::parse(GOOD).expect("valid");
        assert_eq!(tp.version, 0);
        assert_eq!(tp.trace_id.0[0], 0x4b);
        assert_eq!(tp.trace_id.0[15], 0x36);
        assert_eq!(
            tp.parent_id.0,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(tp.sampled());
        let mut out = [0u8; TRACEPARENT_LEN];
        assert_eq!(tp.write(&mut out), GOOD);
        let mut id = [0u8; 32];
        assert_eq!(tp.trace_id.write_hex(&mut id), &GOOD[3..35]);
    }

    /// Every byte in every position of a span id: read as its digit's value when it is a
    /// lowercase hex digit, refused otherwise (the lookup table against `hex_value`).
    #[test]
    fn every_byte_in_every_position_of_a_hex_field() {
        for position in 0..16 {
            for b in 0..=255u8 {
                let mut text = *b"00f067aa0ba902b7";
                text[position] = b;
                let read = read_hex::<8>(&text);
                match hex_value(b) {
                    Some(v) => {
                        let byte = read.expect("valid digits")[position / 2];
                        let digit = if position % 2 == 0 {
                            byte >> 4
                        } else {
                            byte & 0x0f
                        };
                        assert_eq!(digit, v, "byte {b:#04x} at {position}");
                    }
                    None => assert_eq!(
                        read,
                        Err(TraceParentError::NotLowercaseHex),
                        "byte {b:#04x} at {position}"
                    ),
                }
            }
        }
    }

    #[test]
    fn table_of_refusals() {
        use TraceParentError::*;
        let cases: &[(&str, TraceParentError)] = &[
            ("", WrongLength),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                WrongLength,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                WrongLength,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
                WrongLength,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                NotLowercaseHex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                NotLowercaseHex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
                NotLowercaseHex,
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                NotLowercaseHex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                NotLowercaseHex,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ForbiddenVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroParentId,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                MissingDash,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                MissingDash,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
                MissingDash,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                MissingDash,
            ),
            // Multi-byte UTF-8 where the digits belong: refused, never sliced mid-character.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
                NotLowercaseHex,
            ),
        ];
        for (text, error) in cases {
            assert_eq!(TraceParent::parse(text), Err(*error), "{text:?}");
        }
    }

    #[test]
    fn higher_versions_are_read_forwards_compatibly() {
        let tp = TraceParent::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )
        .expect("a future version with more fields");
        assert_eq!(tp.version, 0xcc);
        let exact = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(exact.is_ok_and(|tp| !tp.sampled()));
        // Written back as version 00.
        let mut out = [0u8; TRACEPARENT_LEN];
        assert_eq!(tp.write(&mut out), GOOD);
    }

    #[test]
    fn every_byte_value_at_every_position_never_panics() {
        for at in 0..=TRACEPARENT_LEN {
            for byte in 0..=0x7fu8 {
                let mut text = [0u8; TRACEPARENT_LEN + 1];
                text[..TRACEPARENT_LEN].copy_from_slice(GOOD.as_bytes());
                text[at] = byte;
                for len in [at, TRACEPARENT_LEN, TRACEPARENT_LEN + 1] {
                    if let Ok(s) = core::str::from_utf8(&text[..len]) {
                        if let Ok(tp) = TraceParent::parse(s) {
                            let mut out = [0u8; TRACEPARENT_LEN];
                            assert_eq!(
                                TraceParent::parse(tp.write(&mut out)),
                                Ok(TraceParent { version: 0, ..tp })
                            );
                        }
                    }
                }
            }
        }
    }
}
