//! Decodes arbitrary bytes as a JSON envelope. Invariants checked when it decodes:
//! - the raw payload is a sub-slice of the input;
//! - re-encoding gives an envelope that decodes to the same metadata and payload bytes, and
//!   re-encoding that gives the same bytes again (fixpoint);
//! - `rewrite_json` with no edits returns the input byte for byte;
//! - `rewrite_json_retry` keeps the payload span identical and only bumps `retryCount`;
//! - the metadata survives a postcard round trip.
//!
//! When it does not decode, `rewrite_json` must fail with the same error.
#![no_main]

use lepus_core::envelope::{
    decode_json_raw, decode_postcard_raw, encode_json_raw, encode_postcard_raw, rewrite_json,
    rewrite_json_retry, MetadataEdits, RewriteError,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
