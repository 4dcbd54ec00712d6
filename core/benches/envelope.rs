//! Envelope encode/decode: ours (JSON via serde-json-core + hand-written metadata, postcard)
//! against `serde_json` (std, allocating) as the baseline, on the talk's slide-40 message.
//!
//! `cargo bench -p lepus-core --bench envelope -- --warm-up-time 1 --measurement-time 2`
//!
//! With `RUSTFLAGS="--cfg lepus_reference"` the decoder as it was before issue 13
//! (`envelope::reference`) runs beside the current one in the same process (`/reference` rows).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use lepus_core::envelope::{
    decode_json, decode_json_raw, decode_postcard, encode_json, encode_postcard,
    rewrite_json_retry, Envelope, Metadata, Text,
};
use lepus_core::retry::{Intervals, RetryMetadata, Strategy};
use serde::{Deserialize, Serialize};

#[path = "inputs/one_mib.rs"]
mod one_mib;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ad {
    #[serde(rename = "adId")]
    ad_id: u32,
}

/// The same envelope as plain serde types for `serde_json`.
#[derive(Debug, Serialize, Deserialize)]
struct SjEnvelope<'a> {
    payload: Ad,
    #[serde(borrow)]
    metadata: SjMetadata<'a>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SjMetadata<'a> {
    class_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_strategy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_limit: Option<u32>,
    retry_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_interval: Option<Vec<u32>>,
}

fn talk_message() -> Envelope<'static, Ad> {
    let mut intervals = Intervals::new();
    for s in [15u32, 30, 60, 300, 86400] {
        intervals.push(s * 1000).unwrap();
    }
    Envelope {
        payload: Ad { ad_id: 1 },
        metadata: Metadata {
            class_name: Text::plain("SendAdExpiredMail"),
            retry: RetryMetadata {
                strategy: Strategy::Repeat,
                limit: Some(5),
                count: 0,
                intervals: Some(intervals),
                backoff: None,
            },
            response_queue: None,
            correlation_id: None,
        },
    }
}

fn envelope(c: &mut Criterion) {
    let env = talk_message();
    let mut json = [0u8; 512];
    let json_len = encode_json(&env, &mut json).unwrap();
    let json = &json[..json_len];
    let mut pc = [0u8; 128];
    let pc_len = encode_postcard(&env, &mut pc).unwrap();
    let pc = &pc[..pc_len];
    println!("talk message: JSON {json_len} bytes, postcard {pc_len} bytes");
    let sj: SjEnvelope<'_> = serde_json::from_slice(json).unwrap();
    assert_eq!(serde_json::to_vec(&sj).unwrap(), json);

    let mut g = c.benchmark_group("envelope");
    g.bench_function("json_encode/lepus", |b| {
        let mut buf = [0u8; 512];
        b.iter(|| encode_json(black_box(&env), &mut buf).unwrap())
    });
    g.bench_function("json_encode/serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&sj)).unwrap())
    });
    g.bench_function("json_decode/lepus", |b| {
        b.iter(|| decode_json::<Ad>(black_box(json)).unwrap())
    });
    g.bench_function("json_decode_raw/lepus", |b| {
        b.iter(|| decode_json_raw(black_box(json)).unwrap())
    });
    #[cfg(lepus_reference)]
    {
        use lepus_core::envelope::{reference, DecodeLimits, UNESCAPE_SCRATCH};
        g.bench_function("json_decode/reference", |b| {
            let mut scratch = [0u8; UNESCAPE_SCRATCH];
            b.iter(|| {
                reference::decode_json_with::<Ad>(
                    black_box(json),
                    &mut scratch,
                    &DecodeLimits::DEFAULT,
                )
                .unwrap()
            })
        });
        g.bench_function("json_decode_raw/reference", |b| {
            b.iter(|| {
                reference::decode_json_raw_with(black_box(json), &DecodeLimits::DEFAULT).unwrap()
            })
        });
    }
    g.bench_function("json_decode/serde_json", |b| {
        b.iter(|| serde_json::from_slice::<SjEnvelope<'_>>(black_box(json)).unwrap())
    });
    g.bench_function("postcard_encode/lepus", |b| {
        let mut buf = [0u8; 128];
        b.iter(|| encode_postcard(black_box(&env), &mut buf).unwrap())
    });
    g.bench_function("postcard_decode/lepus", |b| {
        b.iter(|| decode_postcard::<Ad>(black_box(pc)).unwrap())
    });
    g.bench_function("rewrite_json_retry/lepus", |b| {
        let mut buf = [0u8; 512];
        b.iter(|| rewrite_json_retry(black_box(json), &mut buf).unwrap())
    });
    g.finish();
}

fn one_mib(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope_1mib");
    for (name, input) in one_mib::payloads() {
        g.throughput(criterion::Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("json_decode_raw_{name}/lepus"), |b| {
            b.iter(|| decode_json_raw(black_box(&input)).unwrap())
        });
        #[cfg(lepus_reference)]
        g.bench_function(format!("json_decode_raw_{name}/reference"), |b| {
            use lepus_core::envelope::{reference, DecodeLimits};
            b.iter(|| {
                reference::decode_json_raw_with(black_box(&input), &DecodeLimits::DEFAULT).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, envelope, one_mib);
criterion_main!(benches);
