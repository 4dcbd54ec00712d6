//! The JSON lexer as it was before issue 13 (reference model only).
//!
//! Strict RFC 8259 syntax (<https://www.rfc-editor.org/rfc/rfc8259>): no trailing commas, no
//! comments, strings without raw control characters and with valid escapes (no lone
//! surrogates). Nesting is tracked with a fixed-size bit stack, never recursion, and is bounded
//! by the caller up to [`DecodeLimits::MAX_PAYLOAD_DEPTH`]. Never panics, never allocates.

use super::super::error::DecodeError;
use super::super::limits::DecodeLimits;
use super::super::text::{decode_escape, Text};

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

/// A cursor over JSON text.
pub(crate) struct Lexer<'a> {
    src: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// Skips one UTF-8 byte-order mark (U+FEFF, bytes `EF BB BF`) at the very start of the
    /// text, which RFC 8259 section 8.1 lets a parser ignore. Positions stay those of `src`.
    pub(crate) fn skip_bom(&mut self) {
        const BOM: char = '\u{feff}';
        if self.pos == 0 && self.src.starts_with(BOM) {
            self.pos = BOM.len_utf8();
        }
    }

    pub(crate) fn syntax(&self) -> DecodeError {
        DecodeError::Syntax { offset: self.pos }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub(crate) fn skip_ws(&mut self) {
        let rest = self.src.as_bytes().get(self.pos..).unwrap_or_default();
        self.pos += rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
    }

    /// Skips whitespace, then consumes `b` or fails.
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
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end).unwrap_or_default()
    }

    /// Reads a string starting at the current `"`.
    pub(crate) fn string(&mut self) -> Result<Text<'a>, DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax());
        }
        self.pos += 1;
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut escaped = false;
        loop {
            // Fast path: skip plain bytes in one pass.
            let rest = bytes.get(self.pos..).unwrap_or_default();
            self.pos += rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            match bytes.get(self.pos) {
                None => return Err(self.syntax()),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match decode_escape(bytes, self.pos) {
                        Some((_, next)) => self.pos = next,
                        None => return Err(self.syntax()),
                    }
                }
                Some(0x00..=0x1f) => return Err(self.syntax()),
                Some(_) => self.pos += 1,
            }
        }
        let raw = self.slice(start, self.pos);
        self.pos += 1;
        Ok(if escaped {
            Text::from_json(raw).ok_or(DecodeError::Syntax { offset: start })?
        } else {
            Text::plain(raw)
        })
    }

    fn digits(&mut self) -> usize {
        let rest = self.src.as_bytes().get(self.pos..).unwrap_or_default();
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        self.pos += n;
        n
    }

    /// Reads a number token; returns its text.
    pub(crate) fn number(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.syntax()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.syntax());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.syntax());
            }
        }
        Ok(self.slice(start, self.pos))
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), DecodeError> {
        let end = self.pos.saturating_add(word.len());
        if self.src.as_bytes().get(self.pos..end) == Some(word) {
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
    pub(crate) fn key(&mut self) -> Result<Text<'a>, DecodeError> {
        self.skip_ws();
        let key = self.string()?;
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
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
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

/// A number token split into its parts (digits only, validated by [`Lexer::number`]).
struct NumberParts<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    has_exp: bool,
}

fn split_number(text: &str) -> Option<NumberParts<'_>> {
    // Validate the full grammar with the lexer: the whole text must be one number.
    let mut lx = Lexer::new(text);
    lx.number().ok()?;
    if !lx.at_end() {
        return None;
    }
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = rest.split_at_checked(int_len)?;
    let (frac, rest) = match rest.split_first() {
        Some((b'.', after)) => {
            let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
            after.split_at_checked(n)?
        }
        _ => (&[][..], rest),
    };
    Some(NumberParts {
        negative,
        int,
        frac,
        has_exp: !rest.is_empty(),
    })
}

fn accumulate(digits: &[u8], mut acc: u64) -> Option<u64> {
    for &d in digits {
        acc = acc
            .checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))?;
    }
    Some(acc)
}

fn is_zero(digits: &[u8]) -> bool {
    digits.iter().all(|&d| d == b'0')
}

/// Why a number does not fit a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberError {
    /// Not a number, or not representable (exponent, fraction, sub-millisecond).
    Invalid,
    /// Negative or too large.
    Range,
}

/// Parses a non-negative integer (`5`, also `5.0`); `text` is a number token or the content of
/// a numeric string.
pub(crate) fn parse_u32(text: &str) -> Result<u32, NumberError> {
    let n = split_number(text).ok_or(NumberError::Invalid)?;
    if n.has_exp || !is_zero(n.frac) {
        return Err(NumberError::Invalid);
    }
    if n.negative && !is_zero(n.int) {
        return Err(NumberError::Range);
    }
    let v = accumulate(n.int, 0).ok_or(NumberError::Range)?;
    u32::try_from(v).map_err(|_| NumberError::Range)
}

/// Parses seconds (`15`, `0.05`) into milliseconds.
pub(crate) fn parse_seconds_ms(text: &str) -> Result<u32, NumberError> {
    let n = split_number(text).ok_or(NumberError::Invalid)?;
    if n.has_exp {
        return Err(NumberError::Invalid);
    }
    let (ms_digits, rest) = n.frac.split_at_checked(3).unwrap_or((n.frac, &[]));
    if !is_zero(rest) {
        return Err(NumberError::Invalid);
    }
    if n.negative && !(is_zero(n.int) && is_zero(ms_digits)) {
        return Err(NumberError::Range);
    }
    let secs = accumulate(n.int, 0).ok_or(NumberError::Range)?;
    let mut frac = accumulate(ms_digits, 0).ok_or(NumberError::Range)?;
    for _ in ms_digits.len()..3 {
        frac *= 10;
    }
    let ms = secs
        .checked_mul(1000)
        .and_then(|v| v.checked_add(frac))
        .ok_or(NumberError::Range)?;
    u32::try_from(ms).map_err(|_| NumberError::Range)
}
