//! JSON encoding into a caller buffer.
//!
//! Output is compact (no whitespace), like PHP's `json_encode`:
//! `{"payload":<payload>,"metadata":{...}}`, metadata keys in this fixed order:
//! `className`, `retryStrategy`, `retryLimit`, `retryCount`, `retryInterval`, `retryBackoff`
//! (`base`, `factor`, `max`, `jitter`), `response_queue`, `correlationId`. `retryCount` and
//! `className` are always written; the others are omitted when absent
//! ([`Strategy::Unspecified`], `None`). [`Strategy::Unknown`] is written as `"unknown"`, which
//! decodes back to `Unknown`. Durations are written in seconds: an integer when whole, else a
//! decimal with at most three fraction digits (`0.05`).

use super::error::EncodeError;
use super::text::Text;
use super::{Metadata, JSON_PAYLOAD_HEAD};
use crate::retry::Strategy;

/// Appends bytes to a caller buffer; never panics, never allocates.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(EncodeError::BufferFull)?;
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(EncodeError::BufferFull)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// The unwritten rest of the buffer.
    pub(crate) fn rest(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.len..).unwrap_or_default()
    }

    /// Marks `n` bytes of [`Writer::rest`] as written.
    pub(crate) fn advance(&mut self, n: usize) -> Result<(), EncodeError> {
        let end = self
            .len
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(EncodeError::BufferFull)?;
        self.len = end;
        Ok(())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.push(digits.get(i..).unwrap_or_default())
    }

    /// Milliseconds as seconds: `15`, `0.05`, `1.5`.
    pub(crate) fn seconds(&mut self, ms: u32) -> Result<(), EncodeError> {
        self.u32(ms / 1000)?;
        let frac = ms % 1000;
        if frac == 0 {
            return Ok(());
        }
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let mut n = digits.len();
        while n > 1 && digits.get(n - 1) == Some(&b'0') {
            n -= 1;
        }
        self.push(digits.get(..n).unwrap_or_default())
    }

    /// A quoted JSON string.
    pub(crate) fn text(&mut self, t: &Text<'_>) -> Result<(), EncodeError> {
        self.push(b"\"")?;
        t.write_json(|chunk| self.push(chunk))?;
        self.push(b"\"")
    }

    /// A quoted strategy name.
    pub(crate) fn strategy(&mut self, s: Strategy) -> Result<(), EncodeError> {
        self.push(b"\"")?;
        self.push(s.as_str().unwrap_or("unknown").as_bytes())?;
        self.push(b"\"")
    }
}

/// Writes the metadata object.
pub(crate) fn write_metadata(w: &mut Writer<'_>, m: &Metadata<'_>) -> Result<(), EncodeError> {
    w.push(b"{\"className\":")?;
    w.text(&m.class_name)?;
    let r = &m.retry;
    if r.strategy != Strategy::Unspecified {
        w.push(b",\"retryStrategy\":")?;
        w.strategy(r.strategy)?;
    }
    if let Some(limit) = r.limit {
        w.push(b",\"retryLimit\":")?;
        w.u32(limit)?;
    }
    w.push(b",\"retryCount\":")?;
    w.u32(r.count)?;
    if let Some(intervals) = &r.intervals {
        w.push(b",\"retryInterval\":[")?;
        for (i, ms) in intervals.iter().enumerate() {
            if i > 0 {
                w.push(b",")?;
            }
            w.seconds(*ms)?;
        }
        w.push(b"]")?;
    }
    if let Some(b) = &r.backoff {
        w.push(b",\"retryBackoff\":{\"base\":")?;
        w.seconds(b.base_ms)?;
        w.push(b",\"factor\":")?;
        w.u32(b.factor)?;
        w.push(b",\"max\":")?;
        w.seconds(b.max_ms)?;
        w.push(if b.jitter {
            b",\"jitter\":true}"
        } else {
            b",\"jitter\":false}"
        })?;
    }
    if let Some(q) = &m.response_queue {
        w.push(b",\"response_queue\":")?;
        w.text(q)?;
    }
    if let Some(c) = &m.correlation_id {
        w.push(b",\"correlationId\":")?;
        w.text(c)?;
    }
    w.push(b"}")
}

/// Writes a whole envelope around a payload writer.
pub(crate) fn write_envelope(
    w: &mut Writer<'_>,
    m: &Metadata<'_>,
    payload: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    w.push(JSON_PAYLOAD_HEAD)?;
    payload(w)?;
    write_tail(w, m)
}

/// Writes what follows the payload: the metadata and the envelope's end.
pub(crate) fn write_tail(w: &mut Writer<'_>, m: &Metadata<'_>) -> Result<(), EncodeError> {
    w.push(b",\"metadata\":")?;
    write_metadata(w, m)?;
    w.push(b"}")
}
