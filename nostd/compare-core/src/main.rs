//! The envelope work with lepus-core: no std, no allocator, fixed buffers.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

#[link(name = "c")]
unsafe extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
}

fn print(bytes: &[u8]) {
    // SAFETY: the pointer and length come from a valid slice.
    unsafe {
        write(1, bytes.as_ptr(), bytes.len());
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {}
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Reading {
    sensor: u16,
    millivolts: u32,
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    use lepus_core::envelope::{decode_json, encode_json, rewrite_json_retry, Envelope, Metadata};
    use lepus_core::retry::Strategy;
    let mut metadata = Metadata::new("SensorReading");
    metadata.retry.strategy = Strategy::Repeat;
    metadata.retry.limit = Some(3);
    let envelope = Envelope {
        payload: Reading {
            sensor: 7,
            millivolts: 3300,
        },
        metadata,
    };
    let mut json = [0u8; 256];
    let Ok(n) = encode_json(&envelope, &mut json) else {
        return 1;
    };
    let Some(json) = json.get(..n) else { return 1 };
    let Ok(decoded) = decode_json::<Reading>(json) else {
        return 1;
    };
    if decoded.payload.millivolts != 3300 {
        return 1;
    }
    let mut next = [0u8; 256];
    let Ok(m) = rewrite_json_retry(json, &mut next) else {
        return 1;
    };
    print(next.get(..m).unwrap_or(&[]));
    print(b"\n");
    0
}
