//! Decodes arbitrary bytes as a JSON envelope. Invariants checked when it decodes:
//! - the raw payload is a sub-slice of the input;
//! - re-encoding gives an envelope that decodes to the same metadata and payload bytes, and
//!   re-encoding that gives the same bytes again (fixpoint);
//! - `rewrite_json` with no edits returns the input byte for byte;
//! - `rewrite_json_retry` keeps the payload span identical and only bumps `retryCount`;
//! - the metadata survives a postcard round trip.
//!
//! When it does not decode, `rewrite_json` must fail with the same error.
//!
//! Each input is also checked with a leading byte-order mark (same result, offsets 3 higher;
//! a second mark is an error), and wrapped as the payload of an envelope under up to 1100
//! levels of arrays and objects. For both, the payload depth check is compared with a
//! reference model (count the brackets outside strings) at limits around the payload's depth,
//! and the typed decoder (`serde-json-core`) must agree with the raw one.
//!
//! Every input (plain, with a BOM, wrapped) is also decoded by the reference model, the
//! decoder as it was before the one-pass rewrite (`envelope::reference`, built under
//! `--cfg fuzzing`): same envelope or same error, at several payload limits, and the same
//! rewrite output.
#![no_main]

use lepus_core::envelope::{
    decode_json_raw, decode_json_raw_with, decode_json_with, decode_postcard_raw,
    encode_json_raw, encode_postcard_raw, rewrite_json, rewrite_json_retry, rewrite_json_with,
    reference, DecodeError, DecodeLimits, MetadataEdits, RewriteError,
};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

const BOM: &[u8] = b"\xEF\xBB\xBF";

fuzz_target!(|data: &[u8]| {
    same_as_reference(data);
    check(data);
    depth_model(data);

    let with_bom = [BOM, data].concat();
    bom_model(data, &with_bom);
    depth_model(&with_bom);

    let deep = wrap(data);
    depth_model(&deep);
    same_as_reference(&with_bom);
    same_as_reference(&deep);
});

/// The one-pass decoder answers as the reference model does, at several payload limits, and
/// rewrites to the same bytes.
fn same_as_reference(input: &[u8]) {
    for depth in [1, 2, DecodeLimits::DEFAULT_PAYLOAD_DEPTH, DecodeLimits::MAX_PAYLOAD_DEPTH] {
        let l = limits(depth);
        assert_eq!(
            decode_json_raw_with(input, &l),
            reference::decode_json_raw_with(input, &l),
            "payload depth {depth}"
        );
    }
    let edits = MetadataEdits::retry_count(7);
    let mut got = vec![0u8; input.len() + 64];
    let mut want = vec![0u8; input.len() + 64];
    let l = DecodeLimits::DEFAULT;
    let a = rewrite_json_with(input, &edits, &l, &mut got);
    let b = reference::rewrite_json_with(input, &edits, &l, &mut want);
    assert_eq!(a, b);
    if let Ok(n) = a {
        assert_eq!(got[..n], want[..n]);
    }
}

/// The original invariants, at the default limits.
fn check(data: &[u8]) {
    let mut out = [0u8; 8192];
    let raw = match decode_json_raw(data) {
        Ok(raw) => raw,
        Err(e) => {
            assert_eq!(
                rewrite_json(data, &MetadataEdits::retry_count(1), &mut out),
                Err(RewriteError::Decode(e))
            );
            return;
        }
    };
    let start = raw.payload.as_ptr() as usize - data.as_ptr() as usize;
    assert_eq!(data.get(start..start + raw.payload.len()), Some(raw.payload));

    // Re-encode and decode again.
    let Ok(n) = encode_json_raw(&raw, &mut out) else { return };
    let again = decode_json_raw(&out[..n]).expect("re-encoded envelope decodes");
    assert_eq!(again, raw);
    let mut out2 = [0u8; 8192];
    let n2 = encode_json_raw(&again, &mut out2).expect("same size fits");
    assert_eq!(&out[..n], &out2[..n2]);

    // Rewrite without edits is the identity.
    let n = rewrite_json(data, &MetadataEdits::default(), &mut out).expect("identity rewrite");
    assert_eq!(&out[..n], data);

    // Retry rewrite: payload span identical, count + 1, everything else unchanged.
    match rewrite_json_retry(data, &mut out) {
        Ok(n) => {
            let after = decode_json_raw(&out[..n]).expect("rewritten envelope decodes");
            assert_eq!(after.payload, raw.payload);
            assert_eq!(after.metadata.retry.count, raw.metadata.retry.count + 1);
            let mut expected = raw.metadata.clone();
            expected.retry.count += 1;
            assert_eq!(after.metadata, expected);
        }
        Err(RewriteError::CountOverflow) => assert_eq!(raw.metadata.retry.count, u32::MAX),
        Err(RewriteError::BufferFull) => assert!(data.len() + 32 > out.len()),
        Err(e) => panic!("retry rewrite of a valid envelope failed: {e}"),
    }

    // The metadata survives postcard (strings unescaped on the way).
    let Ok(n) = encode_postcard_raw(&raw, &mut out) else { return };
    let pc = decode_postcard_raw(&out[..n]).expect("postcard metadata decodes");
    assert_eq!(pc.metadata, raw.metadata);
    assert_eq!(pc.payload, raw.payload);
}

/// A leading BOM changes nothing but the offsets; a second one is an error.
fn bom_model(data: &[u8], with_bom: &[u8]) {
    let got = decode_json_raw(with_bom);
    if data.starts_with(BOM) {
        let want = match core::str::from_utf8(data) {
            Ok(_) => DecodeError::Syntax { offset: 3 },
            Err(_) => DecodeError::InvalidUtf8,
        };
        assert_eq!(got, Err(want), "a second BOM is an error");
        return;
    }
    match decode_json_raw(data) {
        Ok(raw) => {
            let got = got.expect("a leading BOM is accepted");
            assert_eq!(got, raw);
            let mut out = vec![0u8; with_bom.len()];
            let n = rewrite_json(with_bom, &MetadataEdits::default(), &mut out)
                .expect("identity rewrite");
            assert_eq!(&out[..n], with_bom, "the rewrite keeps the BOM");
        }
        Err(e) => assert_eq!(got, Err(shifted(e, BOM.len()))),
    }
}

fn shifted(e: DecodeError, by: usize) -> DecodeError {
    match e {
        DecodeError::Syntax { offset } => DecodeError::Syntax { offset: offset + by },
        DecodeError::TooDeep { offset, limit } => DecodeError::TooDeep {
            offset: offset + by,
            limit,
        },
        DecodeError::TrailingData { offset } => DecodeError::TrailingData { offset: offset + by },
        other => other,
    }
}

/// `data` as the payload of an envelope, under as many levels of arrays and objects as its
/// first two bytes say (up to 1100), their kinds taken from its bytes.
fn wrap(data: &[u8]) -> Vec<u8> {
    let levels = match data {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])) % 1101,
        _ => 0,
    };
    let inner = data.get(2..).unwrap_or_default();
    let inner: &[u8] = if inner.is_empty() { b"1" } else { inner };
    let object = |i: usize| data.get(i % data.len().max(1)).is_some_and(|b| b & 1 == 1);
    let mut out = br#"{"payload":"#.to_vec();
    for i in 0..levels {
        out.extend_from_slice(if object(i) { br#"{"k":"# } else { b"[" });
    }
    out.extend_from_slice(inner);
    for i in (0..levels).rev() {
        out.push(if object(i) { b'}' } else { b']' });
    }
    out.extend_from_slice(br#","metadata":{"className":"C"}}"#);
    out
}

/// The reference model: the deepest nesting of brackets outside strings, in valid JSON.
fn reference_depth(json: &[u8]) -> u32 {
    let (mut depth, mut max, mut in_string, mut escaped) = (0u32, 0u32, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    max
}

fn limits(depth: u32) -> DecodeLimits {
    DecodeLimits::new().payload_depth(depth).expect("within the cap")
}

/// Decoding at a payload limit succeeds exactly when the reference depth fits it; rewriting
/// and typed decoding agree with it.
fn depth_model(input: &[u8]) {
    let max = limits(DecodeLimits::MAX_PAYLOAD_DEPTH);
    let at_max = decode_json_raw_with(input, &max);
    let at_default = decode_json_raw(input);
    let Ok(raw) = at_max else {
        assert!(at_default.is_err(), "a lower limit accepts nothing more");
        return;
    };
    let depth = reference_depth(raw.payload);
    assert!(depth <= DecodeLimits::MAX_PAYLOAD_DEPTH);
    assert_eq!(at_default.is_ok(), depth <= DecodeLimits::DEFAULT_PAYLOAD_DEPTH);
    let mut out = vec![0u8; input.len() + 64];
    let mut scratch = [0u8; 64];
    for limit in [depth.saturating_sub(1), depth, depth + 1, 1] {
        let Ok(l) = DecodeLimits::new().payload_depth(limit) else { continue };
        let got = decode_json_raw_with(input, &l);
        if depth <= limit {
            assert_eq!(got.as_ref(), Ok(&raw), "limit {limit}");
        } else {
            assert!(
                matches!(got, Err(DecodeError::TooDeep { limit: l, .. }) if l == limit),
                "depth {depth}, limit {limit}: {got:?}"
            );
        }
        let rewritten = rewrite_json_with(input, &MetadataEdits::default(), &l, &mut out);
        assert_eq!(rewritten.is_ok(), depth <= limit);
        let typed = decode_json_with::<IgnoredAny>(input, &mut scratch, &l);
        match got {
            Ok(_) => assert!(matches!(typed, Ok(_) | Err(DecodeError::Payload))),
            Err(e) => assert_eq!(typed.err(), Some(e)),
        }
    }
}
