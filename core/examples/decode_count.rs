//! Decodes one envelope N times, for instruction counts with callgrind (count at 4,000 minus
//! count at 1,000, divided by 3,000, so start-up and set-up cancel out):
//!
//! ```sh
//! RUSTFLAGS="--cfg lepus_reference" cargo build --release -p lepus-core --example decode_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/decode_count lepus talk 4000
//! ```
//!
//! `decoder`: `lepus` (typed decode), `lepus_raw`, `reference` / `reference_raw` (the decoder
//! before issue 13, needs `--cfg lepus_reference`), `serde_json` (typed). `input`: `talk` (the
//! slide-40 message), `string` or `records` (1 MiB payloads).

use std::hint::black_box;

#[path = "../benches/inputs/one_mib.rs"]
mod one_mib;

use lepus_core::envelope::{decode_json, decode_json_raw};
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Ad {
    #[serde(rename = "adId")]
    ad_id: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct SjMetadata<'a> {
    class_name: &'a str,
    retry_strategy: Option<&'a str>,
    retry_limit: Option<u32>,
    retry_count: u32,
    retry_interval: Option<Vec<u32>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct SjEnvelope<'a> {
    payload: Ad,
    #[serde(borrow)]
    metadata: SjMetadata<'a>,
}

const TALK: &[u8] = br#"{"payload":{"adId":1},"metadata":{"className":"SendAdExpiredMail","retryStrategy":"repeat","retryLimit":5,"retryCount":0,"retryInterval":[15,30,60,300,86400]}}"#;

fn input(name: &str) -> Vec<u8> {
    if name == "talk" {
        return TALK.to_vec();
    }
    one_mib::payloads()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| bytes)
        .unwrap_or_else(|| panic!("unknown input {name}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (decoder, name, n) = match args.as_slice() {
        [_, d, i, n] => (d.as_str(), i.as_str(), n.parse::<u32>().expect("a count")),
        _ => panic!("usage: decode_count DECODER INPUT N"),
    };
    let bytes = input(name);
    println!("{} bytes", bytes.len());
    for _ in 0..n {
        let bytes = black_box(bytes.as_slice());
        let ok = match decoder {
            "lepus" => decode_json::<Ad>(bytes).is_ok(),
            "lepus_raw" => decode_json_raw(bytes).is_ok(),
            #[cfg(lepus_reference)]
            "reference" => {
                use lepus_core::envelope::{reference, DecodeLimits, UNESCAPE_SCRATCH};
                let mut scratch = [0u8; UNESCAPE_SCRATCH];
                reference::decode_json_with::<Ad>(bytes, &mut scratch, &DecodeLimits::DEFAULT)
                    .is_ok()
            }
            #[cfg(lepus_reference)]
            "reference_raw" => {
                use lepus_core::envelope::{reference, DecodeLimits};
                reference::decode_json_raw_with(bytes, &DecodeLimits::DEFAULT).is_ok()
            }
            "serde_json" => serde_json::from_slice::<SjEnvelope<'_>>(bytes).is_ok(),
            other => panic!("unknown decoder {other}"),
        };
        assert!(black_box(ok), "{decoder} failed on {name}");
    }
}
