//! The firmware side of the firmware-to-server path: what a device links. This module uses
//! only `core` and `lepus-core` (no `std`, no allocator, fixed buffers), exactly as it would
//! compile in a `#![no_std]` firmware crate; `std` appears only in the binaries that drive it.
//!
//! A device builds an envelope per sensor reading, with the retry policy the server must
//! apply when handling it fails, and writes it as one COBS frame of postcard bytes (a zero
//! byte ends each frame, so a receiver that joins mid-stream resynchronizes at the next
//! zero). The routing key is not sent: the gateway routes by type (see `lepus::gateway`).
#![deny(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

use lepus_core::envelope::{encode_postcard_cobs, EncodeError, Envelope, Metadata};
use lepus_core::retry::{Intervals, RetryMetadata, Strategy};
use serde::{Deserialize, Serialize};

/// The wire type name of a reading (`className`).
pub const READING_TYPE: &str = "SensorReading";

/// Largest frame a reading can take; 64 bytes leave room to spare (a reading is ~35).
pub const FRAME_CAPACITY: usize = 64;

/// One sensor reading, as the device measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorReading {
    /// Which sensor.
    pub sensor: u16,
    /// The measured voltage, in millivolts.
    pub millivolts: u32,
    /// Sequence number of the reading on this device.
    pub seq: u32,
}

/// The retry policy the server applies to readings: three retries, after 1 s then 5 s.
pub fn retry_policy() -> RetryMetadata {
    let mut intervals = Intervals::new();
    // Two entries in a vector of sixteen: cannot be full.
    let _ = intervals.push(1_000);
    let _ = intervals.push(5_000);
    RetryMetadata {
        strategy: Strategy::Repeat,
        limit: Some(3),
        count: 0,
        intervals: Some(intervals),
        backoff: None,
    }
}

/// Encodes `reading` as one COBS frame (zero byte included) into `frame`; returns its length.
///
/// # Errors
/// [`EncodeError::BufferFull`] if `frame` is too small ([`FRAME_CAPACITY`] always suffices).
pub fn encode_reading(reading: &SensorReading, frame: &mut [u8]) -> Result<usize, EncodeError> {
    let envelope = Envelope {
        payload: *reading,
        metadata: Metadata {
            retry: retry_policy(),
            ..Metadata::new(READING_TYPE)
        },
    };
    encode_postcard_cobs(&envelope, frame)
}

/// A deterministic stand-in for the ADC: reading `seq` of `sensor`.
pub const fn sample(sensor: u16, seq: u32) -> SensorReading {
    SensorReading {
        sensor,
        millivolts: 3_000 + (seq % 7) * 50,
        seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus_core::envelope::decode_postcard_cobs;

    #[test]
    fn frames_round_trip() {
        let mut frame = [0u8; FRAME_CAPACITY];
        let n = encode_reading(&sample(3, 9), &mut frame).unwrap_or(0);
        assert!(n > 0 && n <= FRAME_CAPACITY);
        assert_eq!(frame[n - 1], 0, "terminated");
        assert!(!frame[..n - 1].contains(&0), "no zero inside a frame");
        let env = decode_postcard_cobs::<SensorReading>(&mut frame[..n]);
        let Ok(env) = env else { panic!("decodes") };
        assert_eq!(env.payload, sample(3, 9));
        assert_eq!(env.metadata.class_name, READING_TYPE);
        assert_eq!(env.metadata.retry, retry_policy());
    }

    #[test]
    fn footprint_of_types() {
        use core::mem::size_of;
        let sizes = [
            ("SensorReading", size_of::<SensorReading>()),
            ("RetryMetadata", size_of::<RetryMetadata>()),
            ("Metadata", size_of::<Metadata<'static>>()),
            (
                "Envelope<SensorReading>",
                size_of::<Envelope<'static, SensorReading>>(),
            ),
            ("frame buffer", FRAME_CAPACITY),
        ];
        for (name, size) in sizes {
            println!("{name}: {size} bytes");
        }
        // Reported in FOOTPRINT.md: a reading's envelope and its frame fit in 320 bytes.
        assert!(size_of::<Envelope<'static, SensorReading>>() + FRAME_CAPACITY <= 320);
    }
}
