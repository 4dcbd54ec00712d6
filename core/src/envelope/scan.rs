//! A small allocation-free JSON lexer and value skipper, one pass over the bytes.
//!
//! Strict RFC 8259 syntax (<https://www.rfc-editor.org/rfc/rfc8259>): no trailing commas, no
//! comments, strings without raw control characters and with valid escapes (no lone
//! surrogates). Nesting is tracked with a fixed-size bit stack, never recursion, and is bounded
//! by the caller up to [`DecodeLimits::MAX_PAYLOAD_DEPTH`]. Never panics, never allocates.
//!
//! The lexer reads bytes, not a `&str`: strings are scanned eight bytes at a time (SWAR on a
//! `u64`, safe code) for `"`, `\` and control bytes, and UTF-8 is validated only inside
//! strings that hold a byte above 0x7f; every byte outside a string is ASCII by the grammar,
//! so an input that lexes has been validated whole. Numbers are read once, their value
//! accumulated while their syntax is checked.

use super::error::DecodeError;
use super::limits::DecodeLimits;
use super::text::{decode_escape, Text};

/// Words of the bit stack: one bit per open container, up to the cap.
const STACK_WORDS: usize = DecodeLimits::MAX_PAYLOAD_DEPTH.div_ceil(64) as usize;

/// The containers open inside one value: bit `i` is set when level `i + 1` is an object.
struct Open {
    bits: [u64; STACK_WORDS],
    depth: u32,
}

impl Open {
    const fn new() -> Self {
        Open {
            bits: [0; STACK_WORDS],
            depth: 0,
        }
    }

    /// Opens a container; false if that would exceed `max` levels (or the stack).
    fn push(&mut self, is_obj: bool, max: u32) -> bool {
        if self.depth >= max {
            return false;
        }
        let (word, bit) = Self::at(self.depth);
        let Some(w) = self.bits.get_mut(word) else {
            return false;
        };
        *w = (*w & !(1 << bit)) | (u64::from(is_obj) << bit);
        self.depth += 1;
        true
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Whether the innermost open container is an object.
    fn in_object(&self) -> bool {
        let (word, bit) = Self::at(self.depth.saturating_sub(1));
        self.bits.get(word).is_some_and(|w| (w >> bit) & 1 == 1)
    }

    fn at(level: u32) -> (usize, u32) {
        ((level / 64) as usize, level % 64)
    }
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGH: u64 = u64::from_le_bytes([0x80; 8]);

/// Bit 7 of each byte of `w` that is `"`, `\` or below 0x20. Exact up to and including the
/// lowest such byte (borrows only run upwards from a hit), which is all the scan uses.
#[inline]
fn stops(w: u64) -> u64 {
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = has_zero(w ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    quote | backslash | control
}

/// How many bytes at the start of `rest` are plain string content (not `"`, `\` or a control
/// byte); ORs the bytes looked at into `high` (bytes past the stop may be counted too: that
/// only costs a UTF-8 check).
#[inline]
fn plain_run(rest: &[u8], high: &mut u64) -> usize {
    let mut n = 0;
    // The first word alone (most keys and values end in it), the rest out of line.
    if let Some(first) = rest.first_chunk::<8>() {
        let w = u64::from_le_bytes(*first);
        *high |= w;
        let s = stops(w);
        if s != 0 {
            return (s.trailing_zeros() / 8) as usize;
        }
        n = 8;
    }
    n + plain_run_long(rest.get(n..).unwrap_or_default(), high)
}

/// Bytes per block of [`plain_run_long`]'s block loop.
const BLOCK: usize = 64;
/// Bytes [`plain_run_long`] looks at word by word before its blocks.
const HEAD: usize = 32;

/// [`plain_run`] past the first word: 32 bytes in words, then 64-byte blocks while a block
/// is plain ASCII (a byte-wise loop without branches, which the compiler turns into vector
/// compares on x86-64's baseline SSE2), then [`plain_words`] from the block that is not.
#[inline(never)]
fn plain_run_long(rest: &[u8], high: &mut u64) -> usize {
    // Most strings that get here end within 32 more bytes: words first, so that a block is
    // not scanned twice for them.
    let head = rest.get(..HEAD).unwrap_or(rest);
    let mut n = plain_words(head, high);
    if n < HEAD {
        return n;
    }
    for block in rest.get(n..).unwrap_or_default().chunks_exact(BLOCK) {
        // A stop, or a byte above 0x7f (then the words take over, and tell `high`): the
        // blocks passed are ASCII and leave `high` as it is.
        let mut stop = 0u8;
        for &b in block {
            stop |=
                u8::from(b == b'"') | u8::from(b == b'\\') | u8::from(b.wrapping_sub(0x20) > 0x5f);
        }
        if stop != 0 {
            break;
        }
        n += BLOCK;
    }
    n + plain_words(rest.get(n..).unwrap_or_default(), high)
}

/// [`plain_run`] two words per round.
#[inline]
fn plain_words(rest: &[u8], high: &mut u64) -> usize {
    let mut n = 0;
    let mut pairs = rest.chunks_exact(16);
    for pair in &mut pairs {
        let (a, b) = pair.split_at(8);
        let a = u64::from_le_bytes(<[u8; 8]>::try_from(a).unwrap_or([b'"'; 8]));
        let b = u64::from_le_bytes(<[u8; 8]>::try_from(b).unwrap_or([b'"'; 8]));
        *high |= a | b;
        let (sa, sb) = (stops(a), stops(b));
        if sa | sb != 0 {
            return n + if sa != 0 {
                (sa.trailing_zeros() / 8) as usize
            } else {
                8 + (sb.trailing_zeros() / 8) as usize
            };
        }
        n += 16;
    }
    let mut chunks = pairs.remainder().chunks_exact(8);
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or([b'"'; 8]));
        *high |= w;
        let s = stops(w);
        if s != 0 {
            return n + (s.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    for &b in chunks.remainder() {
        if matches!(b, b'"' | b'\\' | 0x00..=0x1f) {
            return n;
        }
        *high |= u64::from(b);
        n += 1;
    }
    n
}

/// How many ASCII digits start `bytes[pos..]`.
#[inline]
fn digits(bytes: &[u8], pos: usize) -> usize {
    let rest = bytes.get(pos..).unwrap_or_default();
    rest.iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len())
}

/// The end of the number token at `bytes[pos..]`, or the offset of its syntax error.
fn number_end(bytes: &[u8], mut pos: usize) -> Result<usize, usize> {
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match bytes.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => pos += digits(bytes, pos),
        _ => return Err(pos),
    }
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        let n = digits(bytes, pos);
        if n == 0 {
            return Err(pos);
        }
        pos += n;
    }
    if let Some(b'e' | b'E') = bytes.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = bytes.get(pos) {
            pos += 1;
        }
        let n = digits(bytes, pos);
        if n == 0 {
            return Err(pos);
        }
        pos += n;
    }
    Ok(pos)
}

/// A string's content (between the quotes), as found by [`Lexer::string_span`].
#[derive(Clone, Copy)]
pub(crate) struct Span<'a> {
    /// The raw content, valid UTF-8.
    pub(crate) raw: &'a [u8],
    /// Whether it holds escapes.
    pub(crate) escaped: bool,
}

impl<'a> Span<'a> {
    /// The content as [`Text`]; it was validated when it was read.
    pub(crate) fn text(self) -> Result<Text<'a>, DecodeError> {
        let raw = core::str::from_utf8(self.raw).map_err(|_| DecodeError::InvalidUtf8)?;
        Ok(Text::validated_json(raw, self.escaped))
    }
}

/// A cursor over JSON bytes.
pub(crate) struct Lexer<'a> {
    bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Lexer { bytes, pos: 0 }
    }

    /// Skips one UTF-8 byte-order mark (U+FEFF, bytes `EF BB BF`) at the very start of the
    /// input, which RFC 8259 section 8.1 lets a parser ignore. Positions stay those of the input.
    pub(crate) fn skip_bom(&mut self) {
        if self.pos == 0 && self.bytes.starts_with(b"\xEF\xBB\xBF") {
            self.pos = 3;
        }
    }

    pub(crate) fn syntax(&self) -> DecodeError {
        DecodeError::Syntax { offset: self.pos }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    #[inline]
    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then consumes `b` or fails.
    #[inline]
    pub(crate) fn expect(&mut self, b: u8) -> Result<(), DecodeError> {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// Skips whitespace; consumes `b` and returns true if it is next.
    #[inline]
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Reads a string starting at the current `"`: its content, checked for escapes, control
    /// bytes and (when it holds a byte above 0x7f) UTF-8.
    #[inline]
    pub(crate) fn string_span(&mut self) -> Result<Span<'a>, DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax());
        }
        let bytes = self.bytes;
        let start = self.pos + 1;
        let mut pos = start;
        let mut escaped = false;
        let mut high = 0u64;
        loop {
            pos += plain_run(bytes.get(pos..).unwrap_or_default(), &mut high);
            match bytes.get(pos) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match decode_escape(bytes, pos) {
                        Some((_, next)) => pos = next,
                        None => {
                            self.pos = pos;
                            return Err(self.syntax());
                        }
                    }
                }
                _ => {
                    // A control byte, or the end of the input.
                    self.pos = pos;
                    return Err(self.syntax());
                }
            }
        }
        let raw = bytes.get(start..pos).unwrap_or_default();
        self.pos = pos + 1;
        if high & HIGH != 0 && core::str::from_utf8(raw).is_err() {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(Span { raw, escaped })
    }

    /// Reads a string starting at the current `"` as [`Text`].
    pub(crate) fn string(&mut self) -> Result<Text<'a>, DecodeError> {
        self.string_span()?.text()
    }

    /// Skips a number token.
    #[inline]
    fn skip_number(&mut self) -> Result<(), DecodeError> {
        match number_end(self.bytes, self.pos) {
            Ok(end) => {
                self.pos = end;
                Ok(())
            }
            Err(at) => {
                self.pos = at;
                Err(self.syntax())
            }
        }
    }

    /// Reads a number token and its value in one pass.
    pub(crate) fn number(&mut self) -> Result<Number, DecodeError> {
        match Number::lex(self.bytes, self.pos) {
            Ok((n, end)) => {
                self.pos = end;
                Ok(n)
            }
            Err(at) => {
                self.pos = at;
                Err(self.syntax())
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), DecodeError> {
        let end = self.pos.saturating_add(word.len());
        if self.bytes.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// Reads `true`, `false` or `null` at the current position.
    pub(crate) fn keyword(&mut self) -> Result<Keyword, DecodeError> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| Keyword::True),
            Some(b'f') => self.literal(b"false").map(|()| Keyword::False),
            Some(b'n') => self.literal(b"null").map(|()| Keyword::Null),
            _ => Err(self.syntax()),
        }
    }

    /// Reads an object key and its `:`, after the `{` or `,`.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<Span<'a>, DecodeError> {
        self.skip_ws();
        let key = self.string_span()?;
        self.expect(b':')?;
        self.skip_ws();
        Ok(key)
    }

    /// Skips one complete value (after whitespace) found inside `level` open containers, where
    /// at most `limit` may be open (see [`DecodeLimits`]; the value itself can open at most
    /// [`DecodeLimits::MAX_PAYLOAD_DEPTH`]). Returns the value's span `(start, end)`.
    pub(crate) fn skip_value(
        &mut self,
        level: u32,
        limit: u32,
    ) -> Result<(usize, usize), DecodeError> {
        let max = limit.saturating_sub(level);
        self.skip_ws();
        let start = self.pos;
        // Scalars need no bit stack.
        match self.peek() {
            Some(b'"') => {
                self.string_span()?;
                return Ok((start, self.pos));
            }
            Some(b'-' | b'0'..=b'9') => {
                self.skip_number()?;
                return Ok((start, self.pos));
            }
            Some(b'{' | b'[') => {}
            Some(_) => {
                self.keyword()?;
                return Ok((start, self.pos));
            }
            None => return Err(self.syntax()),
        }
        let mut open = Open::new();
        'value: loop {
            self.skip_ws();
            match self.peek() {
                Some(b @ (b'{' | b'[')) => {
                    let is_obj = b == b'{';
                    if !open.push(is_obj, max) {
                        return Err(DecodeError::TooDeep {
                            offset: self.pos,
                            limit,
                        });
                    }
                    self.pos += 1;
                    let close = if is_obj { b'}' } else { b']' };
                    if self.eat(close) {
                        open.pop();
                    } else {
                        if is_obj {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string_span()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.skip_number()?;
                }
                Some(_) => {
                    self.keyword()?;
                }
                None => return Err(self.syntax()),
            }
            // After a complete value: close containers or move to the next element.
            loop {
                if open.depth == 0 {
                    return Ok((start, self.pos));
                }
                let in_obj = open.in_object();
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_obj {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if in_obj => {}
                    Some(b']') if !in_obj => {}
                    _ => return Err(self.syntax()),
                }
                self.pos += 1;
                open.pop();
            }
        }
    }
}

/// A JSON keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    True,
    False,
    Null,
}

/// A number token's value, read in the same pass that checks its syntax.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Number {
    negative: bool,
    /// The integer part, when it fits a `u64` (else `int_overflow`).
    int: u64,
    int_overflow: bool,
    /// The first three fraction digits as milliseconds (`.05` is 50).
    ms: u32,
    /// Whether every fraction digit is zero.
    frac_zero: bool,
    /// Whether every fraction digit after the third is zero.
    sub_ms_zero: bool,
    has_exp: bool,
}

impl Number {
    /// Lexes the number at `bytes[pos..]`: its value and the position after it, or the
    /// offset of the syntax error.
    fn lex(bytes: &[u8], mut pos: usize) -> Result<(Number, usize), usize> {
        let mut n = Number {
            frac_zero: true,
            sub_ms_zero: true,
            ..Number::default()
        };
        if bytes.get(pos) == Some(&b'-') {
            n.negative = true;
            pos += 1;
        }
        match bytes.get(pos) {
            Some(b'0') => pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = bytes.get(pos) {
                    match n
                        .int
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(d - b'0')))
                    {
                        Some(v) => n.int = v,
                        None => n.int_overflow = true,
                    }
                    pos += 1;
                }
            }
            _ => return Err(pos),
        }
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            let mut count = 0u32;
            while let Some(&d @ b'0'..=b'9') = bytes.get(pos) {
                let d = d - b'0';
                if count < 3 {
                    n.ms = n.ms * 10 + u32::from(d);
                } else if d != 0 {
                    n.sub_ms_zero = false;
                }
                if d != 0 {
                    n.frac_zero = false;
                }
                count = count.saturating_add(1);
                pos += 1;
            }
            if count == 0 {
                return Err(pos);
            }
            for _ in count..3 {
                n.ms *= 10;
            }
        }
        if let Some(b'e' | b'E') = bytes.get(pos) {
            pos += 1;
            if let Some(b'+' | b'-') = bytes.get(pos) {
                pos += 1;
            }
            let start = pos;
            while let Some(b'0'..=b'9') = bytes.get(pos) {
                pos += 1;
            }
            if pos == start {
                return Err(pos);
            }
            n.has_exp = true;
        }
        Ok((n, pos))
    }

    /// The content of a numeric string (`"5"`), which must be one whole number token.
    pub(crate) fn from_string(raw: &[u8]) -> Result<Number, NumberError> {
        match Number::lex(raw, 0) {
            Ok((n, end)) if end == raw.len() => Ok(n),
            _ => Err(NumberError::Invalid),
        }
    }

    /// Whether the integer part is zero (`0`, `-0`).
    fn int_zero(&self) -> bool {
        self.int == 0 && !self.int_overflow
    }

    /// A non-negative integer (`5`, also `5.0`).
    pub(crate) fn to_u32(self) -> Result<u32, NumberError> {
        if self.has_exp || !self.frac_zero {
            return Err(NumberError::Invalid);
        }
        if (self.negative && !self.int_zero()) || self.int_overflow {
            return Err(NumberError::Range);
        }
        u32::try_from(self.int).map_err(|_| NumberError::Range)
    }

    /// Seconds (`15`, `0.05`) as milliseconds.
    pub(crate) fn to_ms(self) -> Result<u32, NumberError> {
        if self.has_exp || !self.sub_ms_zero {
            return Err(NumberError::Invalid);
        }
        if (self.negative && !(self.int_zero() && self.ms == 0)) || self.int_overflow {
            return Err(NumberError::Range);
        }
        let ms = self
            .int
            .checked_mul(1000)
            .and_then(|v| v.checked_add(u64::from(self.ms)))
            .ok_or(NumberError::Range)?;
        u32::try_from(ms).map_err(|_| NumberError::Range)
    }
}

/// Why a number does not fit a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberError {
    /// Not a number, or not representable (exponent, fraction, sub-millisecond).
    Invalid,
    /// Negative or too large.
    Range,
}

#[cfg(test)]
mod tests {
    use super::plain_run;

    /// The word-at-a-time scan stops where a byte-at-a-time scan does, for every length and
    /// stop position across the word and pair boundaries, after ASCII and non-ASCII bytes;
    /// and for lengths around the head and the 64-byte blocks (8 + 32 + 64 k, give or take).
    #[test]
    fn plain_run_stops_where_a_byte_scan_does() {
        let block_edges = [
            71, 72, 73, 103, 104, 105, 135, 136, 137, 167, 168, 169, 199, 200, 201, 250,
        ];
        for len in (0..48).chain(block_edges) {
            for fill in [b'a', 0x7f, 0xc3, 0xff, b' ', b'/'] {
                for stop in [
                    None,
                    Some(b'"'),
                    Some(b'\\'),
                    Some(0x00),
                    Some(0x1f),
                    Some(b'\n'),
                ] {
                    for at in 0..=len {
                        let mut v = vec![fill; len];
                        if let (Some(b), Some(slot)) = (stop, v.get_mut(at)) {
                            *slot = b;
                        }
                        let want = v
                            .iter()
                            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                            .unwrap_or(len);
                        let mut high = 0;
                        assert_eq!(plain_run(&v, &mut high), want, "{v:?}");
                        // A byte above 0x7f before the stop is never missed (ones past it may
                        // be counted too).
                        if fill >= 0x80 && want > 0 {
                            assert_ne!(high & 0x8080_8080_8080_8080, 0, "{v:?}");
                        }
                    }
                }
            }
        }
    }
}
