//! [`Text`]: a string borrowed from an encoded envelope, possibly still JSON-escaped.
//!
//! PHP's `json_encode` writes `/` as `\/` and namespaced class names as
//! `"App\\Message\\SendAdExpiredMail"`, so a string read from JSON may hold escapes. [`Text`]
//! keeps the raw slice and unescapes on the fly: comparing, displaying, copying into a caller
//! buffer and re-encoding never allocate. A string read from postcard is plain.

use core::fmt;

use super::error::EncodeError;

/// A string borrowed from an input buffer: either plain UTF-8, or the raw content of a JSON
/// string (between the quotes) that contains escapes, validated when it was read.
///
/// Two `Text`s, or a `Text` and a `&str`, compare by their unescaped characters. Never panics,
/// never allocates.
#[derive(Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Text<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> Text<'a> {
    /// A plain (unescaped) string.
    pub const fn plain(s: &'a str) -> Text<'a> {
        Text {
            raw: s,
            escaped: false,
        }
    }

    /// The raw content of a JSON string (without the quotes). `None` if it holds an invalid
    /// escape, a lone surrogate, an unescaped `"` or a control character.
    pub fn from_json(raw: &'a str) -> Option<Text<'a>> {
        let mut pos = 0;
        let bytes = raw.as_bytes();
        let mut escaped = false;
        while let Some(&b) = bytes.get(pos) {
            match b {
                b'"' | 0x00..=0x1f => return None,
                b'\\' => {
                    escaped = true;
                    pos = decode_escape(bytes, pos)?.1;
                }
                _ => pos += 1,
            }
        }
        Some(Text { raw, escaped })
    }

    /// The raw content of a JSON string already checked by the lexer (escapes valid, no `"`
    /// or control character unescaped), holding escapes when `escaped`.
    pub(crate) const fn validated_json(raw: &'a str, escaped: bool) -> Text<'a> {
        Text { raw, escaped }
    }

    /// The string itself when it holds no escapes (the usual case); `None` otherwise.
    pub fn as_plain(&self) -> Option<&'a str> {
        if self.escaped {
            None
        } else {
            Some(self.raw)
        }
    }

    /// The raw slice: plain text, or the JSON-escaped content when [`Text::is_escaped`].
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the raw slice holds JSON escapes.
    pub fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// The unescaped characters.
    pub fn chars(&self) -> Chars<'a> {
        Chars {
            raw: self.raw.as_bytes(),
            pos: 0,
            escaped: self.escaped,
        }
    }

    /// Length of the unescaped text in UTF-8 bytes.
    pub fn len(&self) -> usize {
        if self.escaped {
            self.chars().map(char::len_utf8).sum()
        } else {
            self.raw.len()
        }
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Copies the unescaped text into `buf` and returns it as a `&str`.
    ///
    /// # Errors
    /// [`EncodeError::BufferFull`] if `buf` is shorter than [`Text::len`].
    pub fn unescape_into<'b>(&self, buf: &'b mut [u8]) -> Result<&'b str, EncodeError> {
        let mut len = 0usize;
        for c in self.chars() {
            let end = len
                .checked_add(c.len_utf8())
                .ok_or(EncodeError::BufferFull)?;
            let slot = buf.get_mut(len..end).ok_or(EncodeError::BufferFull)?;
            c.encode_utf8(slot);
            len = end;
        }
        let written = buf.get(..len).ok_or(EncodeError::BufferFull)?;
        core::str::from_utf8(written).map_err(|_| EncodeError::BufferFull)
    }

    /// Calls `write` with JSON-escaped chunks of this text (without the quotes): the raw slice
    /// as-is when it came from JSON, else the plain text with `"`, `\` and control characters
    /// escaped.
    pub(crate) fn write_json<E>(
        &self,
        mut write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.escaped {
            return write(self.raw.as_bytes());
        }
        let bytes = self.raw.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x00..=0x1f => &[],
                _ => continue,
            };
            write(bytes.get(start..i).unwrap_or_default())?;
            if esc.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
                write(&[b'\\', b'u', b'0', b'0', hi, lo])?;
            } else {
                write(esc)?;
            }
            start = i + 1;
        }
        write(bytes.get(start..).unwrap_or_default())
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.chars() {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.escaped {
            return f.write_str(self.raw);
        }
        let bytes = self.raw.as_bytes();
        let mut pos = 0;
        let mut run = 0;
        while let Some(&b) = bytes.get(pos) {
            if b == b'\\' {
                f.write_str(self.raw.get(run..pos).unwrap_or_default())?;
                let (c, next) =
                    decode_escape(bytes, pos).unwrap_or((char::REPLACEMENT_CHARACTER, bytes.len()));
                let mut tmp = [0u8; 4];
                f.write_str(c.encode_utf8(&mut tmp))?;
                pos = next;
                run = next;
            } else {
                pos += 1;
            }
        }
        f.write_str(self.raw.get(run..).unwrap_or_default())
    }
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Text<'_>) -> bool {
        if !self.escaped && !other.escaped {
            return self.raw == other.raw;
        }
        self.chars().eq(other.chars())
    }
}

impl Eq for Text<'_> {}

impl PartialEq<str> for Text<'_> {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        if self.escaped {
            self.chars().eq(other.chars())
        } else {
            self.raw == other
        }
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl Default for Text<'_> {
    fn default() -> Self {
        Text::plain("")
    }
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.escaped {
            serializer.collect_str(self)
        } else {
            serializer.serialize_str(self.raw)
        }
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de str as serde::Deserialize<'de>>::deserialize(deserializer).map(Text::plain)
    }
}

/// Iterator over the unescaped characters of a [`Text`]. Never panics, never allocates.
#[derive(Debug, Clone)]
pub struct Chars<'a> {
    raw: &'a [u8],
    pos: usize,
    escaped: bool,
}

impl Iterator for Chars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let rest = self.raw.get(self.pos..)?;
        let first = *rest.first()?;
        if self.escaped && first == b'\\' {
            match decode_escape(self.raw, self.pos) {
                Some((c, next)) => {
                    self.pos = next;
                    Some(c)
                }
                None => {
                    self.pos = self.raw.len();
                    Some(char::REPLACEMENT_CHARACTER)
                }
            }
        } else {
            // `raw` comes from a `&str`, so this is a char boundary; decode one char.
            let width = utf8_width(first);
            let chunk = rest.get(..width).unwrap_or(rest);
            let c = core::str::from_utf8(chunk)
                .ok()
                .and_then(|s| s.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            self.pos = self.pos.saturating_add(width.max(1));
            Some(c)
        }
    }
}

fn utf8_width(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at.checked_add(4)?)?;
    let mut v = 0u32;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u32::from(n);
    }
    Some(v)
}

/// Decodes the escape starting at `bytes[pos] == b'\\'`; returns the character and the
/// position after the escape, or `None` if it is invalid (including lone surrogates).
pub(crate) fn decode_escape(bytes: &[u8], pos: usize) -> Option<(char, usize)> {
    let kind = *bytes.get(pos.checked_add(1)?)?;
    let simple = match kind {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(bytes, pos + 2)?;
            let after = pos + 6;
            if (0xd800..0xdc00).contains(&hi) {
                if bytes.get(after) != Some(&b'\\') || bytes.get(after + 1) != Some(&b'u') {
                    return None;
                }
                let lo = hex4(bytes, after + 2)?;
                if !(0xdc00..0xe000).contains(&lo) {
                    return None;
                }
                let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                return Some((char::from_u32(c)?, after + 6));
            }
            return Some((char::from_u32(hi)?, after));
        }
        _ => return None,
    };
    Some((simple, pos + 2))
}
