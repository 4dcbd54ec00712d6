//! Property tests: encode -> decode round trips; rewrite keeps payload bytes and unknown keys.

use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as Gen;

use super::*;

fn strategy() -> impl Gen<Value = Strategy> {
    prop_oneof![
        Just(Strategy::Unspecified),
        Just(Strategy::Ignore),
        Just(Strategy::Repeat),
        Just(Strategy::Backoff),
        Just(Strategy::Unknown),
    ]
}

fn retry() -> impl Gen<Value = RetryMetadata> {
    (
        strategy(),
        proptest::option::of(any::<u32>()),
        any::<u32>(),
        proptest::option::of(proptest::collection::vec(any::<u32>(), 0..=16)),
        proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>())),
    )
        .prop_map(
            |(strategy, limit, count, intervals, backoff)| RetryMetadata {
                strategy,
                limit,
                count,
                intervals: intervals.map(|v| Intervals::from_slice(v.as_slice()).unwrap()),
                backoff: backoff.map(|(base_ms, factor, max_ms, jitter)| Backoff {
                    base_ms,
                    factor,
                    max_ms,
                    jitter,
                }),
            },
        )
}

/// An owned description of an envelope; strings are borrowed from it by `envelope()`.
#[derive(Debug, Clone)]
struct Owned {
    class: String,
    retry: RetryMetadata,
    queue: Option<String>,
    corr: Option<String>,
    payload: (u32, String, Vec<i16>),
}

impl Owned {
    fn envelope(&self) -> Envelope<'_, (u32, &str, Vec<i16>)> {
        Envelope {
            payload: (
                self.payload.0,
                self.payload.1.as_str(),
                self.payload.2.clone(),
            ),
            metadata: Metadata {
                class_name: Text::plain(&self.class),
                retry: self.retry.clone(),
                response_queue: self.queue.as_deref().map(Text::plain),
                correlation_id: self.corr.as_deref().map(Text::plain),
            },
        }
    }
}

fn owned() -> impl Gen<Value = Owned> {
    (
        "\\PC{0,20}",
        retry(),
        proptest::option::of("\\PC{0,12}"),
        proptest::option::of(".{0,12}"),
        (
            any::<u32>(),
            "[a-zA-Z0-9 _.-]{0,10}",
            proptest::collection::vec(any::<i16>(), 0..5),
        ),
    )
        .prop_map(|(class, retry, queue, corr, payload)| Owned {
            class,
            retry,
            queue,
            corr,
            payload,
        })
}

proptest! {
    #[test]
    fn json_round_trip(o in owned()) {
        let env = o.envelope();
        let mut buf = [0u8; 1024];
        let n = encode_json(&env, &mut buf).unwrap();
        let back = decode_json::<(u32, &str, Vec<i16>)>(&buf[..n]).unwrap();
        prop_assert_eq!(&back, &env);
        // Agrees with a reference JSON parser.
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        prop_assert_eq!(v["metadata"]["className"].as_str().unwrap(), o.class.as_str());
        prop_assert_eq!(v["metadata"]["retryCount"].as_u64().unwrap(), u64::from(o.retry.count));
    }

    #[test]
    fn head_payload_and_tail_are_the_whole_envelope(o in owned()) {
        let env = o.envelope();
        let mut payload = [0u8; 256];
        let p = serde_json_core::to_slice(&env.payload, &mut payload).unwrap();
        let raw = RawEnvelope { payload: &payload[..p], metadata: env.metadata.clone() };
        let mut whole = [0u8; 1024];
        let n = encode_json_raw(&raw, &mut whole).unwrap();
        let mut tail = [0u8; 1024];
        let t = encode_json_tail(&env.metadata, &mut tail).unwrap();
        let mut parts = JSON_PAYLOAD_HEAD.to_vec();
        parts.extend_from_slice(&payload[..p]);
        parts.extend_from_slice(&tail[..t]);
        prop_assert_eq!(&parts[..], &whole[..n]);
        // A tail that does not fit is an error, not a panic or a cut.
        prop_assert_eq!(encode_json_tail(&env.metadata, &mut tail[..t - 1]), Err(EncodeError::BufferFull));
    }

    #[test]
    fn postcard_round_trip(o in owned()) {
        let env = o.envelope();
        let mut buf = [0u8; 1024];
        let n = encode_postcard(&env, &mut buf).unwrap();
        prop_assert_eq!(&decode_postcard::<(u32, &str, Vec<i16>)>(&buf[..n]).unwrap(), &env);
        let n = encode_postcard_cobs(&env, &mut buf).unwrap();
        prop_assert_eq!(&decode_postcard_cobs::<(u32, &str, Vec<i16>)>(&mut buf[..n]).unwrap(), &env);
    }

    #[test]
    fn rewrite_keeps_payload_and_unknown_keys(
        o in owned(),
        unknown in "[a-z]{1,8}",
        unknown_value in prop_oneof![Just("[1,{\"a\":null}]"), Just("\"x\\/y\""), Just("-1.5e3"), Just("true")],
        count in any::<u32>(),
        limit in proptest::option::of(any::<u32>()),
        corr in proptest::option::of("[a-z0-9-]{0,10}"),
    ) {
        let env = o.envelope();
        let mut buf = [0u8; 1024];
        let n = encode_json(&env, &mut buf).unwrap();
        // Splice an unknown key into the metadata, as PHP extensions would.
        let s = core::str::from_utf8(&buf[..n]).unwrap();
        let extra = format!("\"x-{unknown}\": {unknown_value}");
        let input = format!("{},{extra}}}}}", &s[..s.len() - 2]);
        let before = decode_json_raw(input.as_bytes()).unwrap();

        let edits = MetadataEdits { retry_count: Some(count), retry_limit: limit, correlation_id: corr.as_deref(), ..MetadataEdits::default() };
        let mut out = [0u8; 1200];
        let m = rewrite_json(input.as_bytes(), &edits, &mut out).unwrap();
        let after = decode_json_raw(&out[..m]).unwrap();
        prop_assert_eq!(after.payload, before.payload);
        let out_str = core::str::from_utf8(&out[..m]).unwrap();
        prop_assert!(out_str.contains(&extra));
        prop_assert_eq!(after.metadata.retry.count, count);
        prop_assert_eq!(after.metadata.retry.limit, limit.or(before.metadata.retry.limit));
        prop_assert_eq!(after.metadata.correlation_id.map(|t| t.to_string()), corr.or(o.corr.clone()));
        prop_assert_eq!(&after.metadata.class_name, &before.metadata.class_name);
        prop_assert_eq!(&after.metadata.retry.intervals, &before.metadata.retry.intervals);
        prop_assert_eq!(&after.metadata.retry.backoff, &before.metadata.retry.backoff);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(raw) = decode_json_raw(&bytes) {
            let mut buf = [0u8; 1024];
            let n = encode_json_raw(&raw, &mut buf).unwrap();
            prop_assert_eq!(decode_json_raw(&buf[..n]).unwrap(), raw);
        }
        let _ = decode_postcard::<(u32, &str)>(&bytes);
        let _ = decode_postcard_raw(&bytes);
    }
}
