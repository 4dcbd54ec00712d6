//! A device as a program: writes COBS-framed postcard envelopes of sensor readings to stdout,
//! as firmware would to its UART. All encoding is in `lepus_examples::firmware` (no std, no
//! allocator); only this `main` uses std, to write the bytes.
//!
//! Run: `cargo run -p lepus-examples --bin firmware_producer -- 5 | cargo run -p
//! lepus-examples --bin gateway -- -` (see `docs/firmware.md`).

use std::io::Write;

use lepus_examples::firmware::{encode_reading, sample, FRAME_CAPACITY};

fn main() -> std::process::ExitCode {
    let count: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 5,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: firmware_producer [COUNT]");
            return std::process::ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut frame = [0u8; FRAME_CAPACITY];
    for seq in 0..count {
        let reading = sample(1 + (seq % 3) as u16, seq);
        let written = encode_reading(&reading, &mut frame)
            .ok()
            .and_then(|n| frame.get(..n))
            .map(|bytes| out.write_all(bytes));
        if !matches!(written, Some(Ok(()))) {
            eprintln!("firmware_producer: cannot write reading {seq}");
            return std::process::ExitCode::from(1);
        }
    }
    if out.flush().is_err() {
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
